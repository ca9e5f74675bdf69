/*
 * scim_diff.h — the pure half of the SCIM 2.0 sink (RFC 7643/7644): maps a
 * desired identity to SCIM User fields, compares them with the User the
 * service provider holds, and plans the requests that make it match; also
 * reads resources from, and writes request bodies to, JSON (jansson).
 * No I/O, no clock, no libcurl: plans and bodies are plain data, so they are
 * unit-tested without a server.
 *
 * Invariants:
 *  - Only the fields of scim_field_t are ever compared or written.  Anything
 *    else on a User (phoneNumbers, addresses, password, other extensions)
 *    belongs to someone else: a PATCH never names it and a PUT carries it
 *    over from the resource as read.
 *  - Group memberships are managed only in groups whose externalId starts
 *    with SCIM_DIFF_GROUP_MARK (the groups this sink created or adopted);
 *    memberships elsewhere are left alone, except that a User about to be
 *    deleted leaves every group (see scim_diff_compute()).
 *  - An identical desired/actual pair yields an empty plan, and applying a
 *    plan then diffing again yields an empty plan.
 *  - Group names compare ignoring ASCII case (Group.displayName has
 *    caseExact=false in RFC 7643 §4.2); every other value compares exactly.
 *
 * Thread safety: all functions are reentrant; objects are caller-owned.
 */
#ifndef IDSTREAM_SCIM_DIFF_H
#define IDSTREAM_SCIM_DIFF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/err.h"
#include "schemas/model.h"

#define SCIM_SCHEMA_USER  "urn:ietf:params:scim:schemas:core:2.0:User"
#define SCIM_SCHEMA_GROUP "urn:ietf:params:scim:schemas:core:2.0:Group"
#define SCIM_SCHEMA_ENTERPRISE                                                           \
	"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
#define SCIM_MSG_PATCH        "urn:ietf:params:scim:api:messages:2.0:PatchOp"
#define SCIM_MSG_BULK_REQUEST "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
#define SCIM_MSG_LIST         "urn:ietf:params:scim:api:messages:2.0:ListResponse"

/* externalId prefix of the Groups whose memberships the sink owns:
 * "idstream-group:<name>" (externalId is "the client's identifier of the
 * resource", RFC 7643 §3.1). */
#define SCIM_DIFF_GROUP_MARK "idstream-group:"

/*
 * The managed User fields.  The path of each (scim_diff_field_path()) is
 * the attribute path used in PATCH operations and in SinkResult ops:
 *
 *   field            path                                     desired source
 *   USER_NAME        userName                                 uid
 *   EXTERNAL_ID      externalId                               employee id
 *   GIVEN_NAME       name.givenName                           givenName
 *   FAMILY_NAME      name.familyName                          sn
 *   FORMATTED        name.formatted                           cn
 *   DISPLAY_NAME     displayName                              displayName, else cn
 *   EMAIL            emails[type eq "work"].value             mail
 *   TITLE            title                                    title
 *   USER_TYPE        userType                                 employeeType
 *   EMPLOYEE_NUMBER  <enterprise>:employeeNumber              employeeNumber, else id
 *   DEPARTMENT       <enterprise>:department                  departmentNumber
 *   MANAGER          <enterprise>:manager                     manager's SCIM id
 *   ACTIVE           active                                   state == ACTIVE
 *
 * ACTIVE is "true" or "false".  MANAGER holds manager.value.  The three
 * enterprise fields are managed only when the service provider offers the
 * enterprise extension on its User resource type.
 */
#define SCIM_FIELD_MAP(X)                                                                \
	X(USER_NAME, "userName")                                                         \
	X(EXTERNAL_ID, "externalId")                                                     \
	X(GIVEN_NAME, "name.givenName")                                                  \
	X(FAMILY_NAME, "name.familyName")                                                \
	X(FORMATTED, "name.formatted")                                                   \
	X(DISPLAY_NAME, "displayName")                                                   \
	X(EMAIL, "emails[type eq \"work\"].value")                                       \
	X(TITLE, "title")                                                                \
	X(USER_TYPE, "userType")                                                         \
	X(EMPLOYEE_NUMBER, SCIM_SCHEMA_ENTERPRISE ":employeeNumber")                     \
	X(DEPARTMENT, SCIM_SCHEMA_ENTERPRISE ":department")                              \
	X(MANAGER, SCIM_SCHEMA_ENTERPRISE ":manager")                                    \
	X(ACTIVE, "active")

typedef enum {
#define SCIM_FIELD_ENUM_(n, p) SCIM_F_##n,
	SCIM_FIELD_MAP(SCIM_FIELD_ENUM_)
#undef SCIM_FIELD_ENUM_
	    SCIM_F_COUNT
} scim_field_t;

/* The attribute path of a field (static string). */
const char *scim_diff_field_path(scim_field_t f);
/* True for EMPLOYEE_NUMBER, DEPARTMENT and MANAGER. */
bool scim_diff_field_is_enterprise(scim_field_t f);

/* A Group as the sink sees it.  Owns its strings. */
typedef struct scim_diff_group {
	char *id;
	char *display_name;
	char *external_id; /* NULL when the group has none */
} scim_diff_group_t;

void scim_diff_group_fini(scim_diff_group_t *g);
/* True when the group carries SCIM_DIFF_GROUP_MARK (its memberships are ours). */
bool scim_diff_group_managed(const scim_diff_group_t *g);
/*
 * Fills g from a Group resource (id, displayName, externalId).  g is
 * fini'd first.  0, ID_EPARSE (not an object or no id), ID_ENOMEM.
 */
int scim_diff_group_from_json(const json_t *res, scim_diff_group_t *g, id_err_t *err);

/*
 * A User as the service provider holds it.  fields[] as in the table above
 * (NULL = absent).  groups lists the Groups it is a member of (the caller
 * fills them from a members.value filter: the User's own read-only "groups"
 * attribute is not relied on).  resource is the resource as read, kept for
 * PUT, which must carry every attribute the sink does not manage.
 * Ownership: the struct owns every string, the groups, and one reference
 * to resource; scim_diff_user_fini() releases them.
 */
typedef struct scim_diff_user {
	char *id;
	char *version; /* meta.version (the ETag), NULL when absent */
	char *fields[SCIM_F_COUNT];
	bool has_work_email;    /* an emails element of type "work" exists */
	bool has_primary_email; /* some emails element is primary */
	scim_diff_group_t *groups;
	size_t ngroups;
	json_t *resource;
} scim_diff_user_t;

void scim_diff_user_init(scim_diff_user_t *u);
void scim_diff_user_fini(scim_diff_user_t *u);
/*
 * Fills u from a User resource (u is fini'd first; groups stay empty).
 * Values that are not strings where strings belong are read as absent.
 * 0, ID_EPARSE (not an object, or no id), ID_ENOMEM.
 */
int scim_diff_user_from_json(const json_t *res, scim_diff_user_t *u, id_err_t *err);
/* Appends a copy of g to u->groups.  0 or ID_ENOMEM. */
int scim_diff_user_add_group(scim_diff_user_t *u, const scim_diff_group_t *g);

/* What the caller knows about the service provider. */
typedef struct scim_diff_opts {
	bool enterprise; /* the User resource type offers the enterprise extension */
} scim_diff_opts_t;

/*
 * The desired value of every field, as borrowed pointers into d (and
 * manager_scim_id), NULL when absent; "" counts as absent.  ACTIVE points
 * to a static "true"/"false".  MANAGER is manager_scim_id.  Enterprise
 * fields are NULL unless opts->enterprise.  Each field is read under its
 * SCIM attribute path (a policy's scim section: userName, name.givenName,
 * name.familyName, name.formatted, displayName, emails[type eq "work"].value
 * or emails, title, userType, urn:...:enterprise:2.0:User:employeeNumber and
 * :department), else under the LDAP name of the built-in mapping (uid,
 * givenName, sn, cn, mail, employeeType, employeeNumber, departmentNumber).
 */
void scim_diff_desired_fields(const scim_diff_opts_t *opts, const desired_identity_t *d,
                              const char *manager_scim_id, const char *out[SCIM_F_COUNT]);

/*
 * Operation kinds, in the order a plan lists them:
 *
 *   CREATE        POST the User (plan->want); no id yet
 *   UPDATE        one field changes (field, old_value, new_value NULL =
 *                 remove); consecutive UPDATE/DISABLE/ENABLE ops form one
 *                 PATCH or PUT of the User
 *   DISABLE       active true → false (field = ACTIVE), in the same request
 *   CREATE_GROUP  POST a Group named group, with the User as first member
 *   GROUP_ADD     add the User to group (group_id); claim: the group has no
 *                 externalId yet, so the same PATCH sets SCIM_DIFF_GROUP_MARK
 *   GROUP_REMOVE  remove the User from group (group_id)
 *   ENABLE        active false → true
 *   DELETE        DELETE the User
 *
 * The User request comes before the group changes, except when it enables
 * the account: then it comes last, so a half-done apply never leaves an
 * enabled account with stale memberships.  Removals come after additions,
 * and DELETE comes after the User has left its groups.
 */
#define SCIM_DIFF_OP_MAP(X)                                                              \
	X(CREATE, "create")                                                              \
	X(UPDATE, "update")                                                              \
	X(DISABLE, "disable")                                                            \
	X(CREATE_GROUP, "create_group")                                                  \
	X(GROUP_ADD, "group_add")                                                        \
	X(GROUP_REMOVE, "group_remove")                                                  \
	X(ENABLE, "enable")                                                              \
	X(DELETE, "delete")

typedef enum {
#define SCIM_DIFF_OP_ENUM_(n, s) SCIM_DIFF_OP_##n,
	SCIM_DIFF_OP_MAP(SCIM_DIFF_OP_ENUM_)
#undef SCIM_DIFF_OP_ENUM_
	    SCIM_DIFF_OP_COUNT
} scim_diff_op_kind_t;

/* "create", "update", ...  (UPDATE is reported as "patch" or "put"). */
const char *scim_diff_op_kind_name(scim_diff_op_kind_t k);

typedef struct scim_diff_op {
	scim_diff_op_kind_t kind;
	scim_field_t field; /* UPDATE, DISABLE, ENABLE */
	char *group;        /* group ops: the group name */
	char *group_id;     /* GROUP_ADD, GROUP_REMOVE */
	bool claim;         /* GROUP_ADD */
	char *old_value;
	char *new_value;
} scim_diff_op_t;

typedef struct scim_diff_plan {
	scim_diff_op_t *ops;
	size_t nops;
	size_t cap;
	char *want[SCIM_F_COUNT]; /* desired fields (copies), for CREATE and PUT */
	char *user_id;            /* the User's id, NULL until created */
} scim_diff_plan_t;

void scim_diff_plan_init(scim_diff_plan_t *p);
void scim_diff_plan_fini(scim_diff_plan_t *p);

/*
 * Computes the plan turning actual (NULL: no User carries this employee)
 * into desired.  plan must be initialised; it is reset first.
 *
 * manager_scim_id: the id of desired->manager_id's User as resolved by the
 * caller.  When desired->manager_id is NULL the manager is removed; when it
 * is set but manager_scim_id is NULL (no such User yet) the field is left
 * as it is, for a later apply.
 *
 * known/nknown: the existing Groups the caller found for desired group names
 * (any it did not find are created).  A known group that carries another
 * client's externalId makes the plan fail with ID_ECONFLICT; one without
 * externalId is claimed by the GROUP_ADD.
 *
 * Lifecycle:
 *   PENDING    no User is created; an existing one is only set inactive
 *              (nothing else about it changes before pre-start)
 *   PRESTART   the User exists, active=false (created inactive)
 *   ACTIVE     the User exists, active=true
 *   SUSPENDED  the User exists, active=false
 *   DISABLED   active=false; no User is created for it
 *   DELETED    the User leaves every group it is in (the server does not
 *              drop members of deleted Users) and is deleted
 * Memberships follow desired->groups in every state but PENDING and DELETED.
 *
 * Errors: ID_EINVALID (no employee id, or no uid when a User must exist),
 * ID_ECONFLICT (see known), ID_ENOMEM.
 */
int scim_diff_compute(const scim_diff_opts_t *opts, const desired_identity_t *desired,
                      const scim_diff_user_t *actual, const char *manager_scim_id,
                      const scim_diff_group_t *known, size_t nknown,
                      scim_diff_plan_t *plan, id_err_t *err);

/* Number of write requests a plan needs when sent one by one. */
size_t scim_diff_plan_requests(const scim_diff_plan_t *plan);

/* ---- request bodies (new references; caller json_decref()s; NULL on ENOMEM) ---- */

/* POST /Users body from fields (NULL = omitted). */
json_t *scim_diff_user_body(const char *const fields[SCIM_F_COUNT], bool enterprise);

/*
 * PatchOp for ops[0..n) (UPDATE/DISABLE/ENABLE of one User): only the
 * changed paths, "replace" to set, "remove" to clear; a work e-mail the
 * User lacks is added to "emails" (primary when it has no primary one).
 */
json_t *scim_diff_patch_body(const scim_diff_user_t *actual, const scim_diff_op_t *ops,
                             size_t n);

/*
 * PUT body: actual->resource with ops[0..n) applied, "meta" and the
 * read-only "groups" dropped, and the enterprise schema URN listed in
 * "schemas" when an enterprise attribute is present.
 */
json_t *scim_diff_put_body(const scim_diff_user_t *actual, const scim_diff_op_t *ops,
                           size_t n);

/* POST /Groups body: displayName, externalId = mark + name, first member. */
json_t *scim_diff_group_body(const char *name, const char *member_id);

/* PatchOp adding member_id to a group (and setting its externalId if claim). */
json_t *scim_diff_member_add_body(const char *name, const char *member_id, bool claim);
/* PatchOp removing member_id from a group. */
json_t *scim_diff_member_remove_body(const char *member_id);

/*
 * Appends a filter comparison `attr eq "value"` to out (no terminator),
 * value written as a JSON string literal (RFC 7644 §3.4.2.2), so quotes and
 * backslashes in it cannot end the literal.  0, ID_EINVALID (value is not
 * UTF-8) or ID_ENOMEM.
 */
int scim_diff_filter_eq(id_buf_t *out, const char *attr, const char *value);

#endif
