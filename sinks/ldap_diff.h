/*
 * ldap_diff.h — the pure half of the OpenLDAP sink: given a desired identity
 * and the directory entry that exists for it (or none), compute the ordered
 * list of LDAP operations that makes the entry match.  No I/O, no clock, no
 * libldap: the plan is plain data, so it can be unit-tested, printed by
 * `plan`, and logged op by op into a SinkResult.
 *
 * Invariants:
 *  - Only managed attributes are ever compared or written (the list is
 *    ldap_diff_managed_attrs, plus ldap_diff_posix_attrs with posixAccount
 *    on; `manager` holds a DN the caller resolved).
 *    Anything else on the entry belongs to someone else and is left alone.
 *  - Only memberships of groups directly below layout->groups_dn are managed;
 *    memberOf values elsewhere are ignored.
 *  - Applying the plan and diffing again yields an empty plan, and an
 *    identical desired/actual pair yields an empty plan.
 *  - Every DN the plan contains is built here with RFC 4514 escaping; DNs
 *    read from the server are compared with ldap_diff_dn_equal(), never with
 *    strcmp(), because slapd rewrites escapes ("\," becomes "\2C").
 *
 *  - With posixAccount on (ldap_diff_compute_posix), an entry's uidNumber
 *    is never changed once it has one; a new number is only ever taken from
 *    the caller (the allocation is I/O and lives in the sink core).
 *
 * Thread safety: all functions are reentrant; objects are caller-owned.
 */
#ifndef IDSTREAM_LDAP_DIFF_H
#define IDSTREAM_LDAP_DIFF_H

#include <stdbool.h>
#include <stddef.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "schemas/model.h"

/* The permanent ppolicy lock value (RFC draft-behera: "locked until an
 * administrator unlocks"); any other pwdAccountLockedTime is a temporary
 * lockout after failed binds and is ppolicy's business, not ours. */
#define LDAP_DIFF_LOCK_VALUE "000001010000Z"
#define LDAP_DIFF_LOCK_ATTR  "pwdAccountLockedTime"

/* Managed attribute names, NULL-terminated, in the case used on the wire. */
extern const char *const ldap_diff_managed_attrs[];

/* Where entries live.  Both DNs are used verbatim as suffixes. */
typedef struct ldap_diff_layout {
	const char *people_dn; /* e.g. "ou=people,dc=example,dc=com" */
	const char *groups_dn; /* e.g. "ou=groups,dc=example,dc=com" */
	/*
	 * NULL: an account is disabled by the ppolicy lock.  Else disabling is
	 * a move: a disabled entry lives directly below this DN (created when
	 * it is an ou= entry and missing), and enabling moves it back into its
	 * container.  Entries locked before a switch to moving are still
	 * unlocked when enabled.
	 */
	const char *disabled_dn;
} ldap_diff_layout_t;

/*
 * The entry as it is in the directory.  attrs holds managed attributes only,
 * keyed by the names in ldap_diff_managed_attrs (lookups are
 * case-insensitive anyway); an attribute with several values is stored as
 * the values joined by '\n', so it never equals a single desired value and
 * gets replaced.  member_of holds every memberOf DN as returned.
 * lock_time is the pwdAccountLockedTime value, NULL when absent.
 * Ownership: the struct owns every string; ldap_diff_entry_fini() frees.
 */
typedef struct ldap_diff_entry {
	char *dn;
	id_attrs_t attrs;
	char **member_of;
	size_t nmember_of;
	char *lock_time;
	/*
	 * objectClass includes posixAccount.  Only read when posixAccount is
	 * on; attrs then also holds the ldap_diff_posix_attrs the entry has.
	 */
	bool posix;
} ldap_diff_entry_t;

void ldap_diff_entry_init(ldap_diff_entry_t *e);
void ldap_diff_entry_fini(ldap_diff_entry_t *e);
/* Setters copy their argument.  0 or ID_ENOMEM. */
int ldap_diff_entry_set_dn(ldap_diff_entry_t *e, const char *dn);
int ldap_diff_entry_set_lock(ldap_diff_entry_t *e, const char *lock_time);
int ldap_diff_entry_add_member_of(ldap_diff_entry_t *e, const char *group_dn);

/*
 * posixAccount (RFC 2307) on every managed entry.  The attributes it adds
 * to the managed ones, NULL-terminated: uidNumber (allocated once, never
 * changed), gidNumber, homeDirectory, loginShell.
 */
extern const char *const ldap_diff_posix_attrs[];
#define LDAP_DIFF_POSIX_CLASS "posixAccount"

typedef struct ldap_diff_posix {
	long long gid_number;      /* gidNumber of every account */
	const char *home_template; /* homeDirectory: "%u" = uid, "%%" = '%' */
	const char *login_shell;   /* loginShell */
	/*
	 * The uidNumber an entry gets when it has none yet (a new entry, or
	 * one made before posixAccount was turned on): allocated by the caller,
	 * which learns from plan->uid_number whether the plan took it.
	 * <= 0: none available (the plan then fails with ID_EINVALID if it
	 * needs one).
	 */
	long long next_uid_number;
} ldap_diff_posix_t;

/*
 * Checks a homeDirectory template: only "%u" and "%%" may follow a '%'.
 * 0 or ID_ECONFIG naming the template.
 */
int ldap_diff_posix_check(const char *home_template, id_err_t *err);

/* The template with "%u" replaced by uid, into out (reset first,
 * NUL-terminated).  0, ID_EINVALID (a bad template) or ID_ENOMEM. */
int ldap_diff_posix_home(const char *home_template, const char *uid, id_buf_t *out);

/*
 * Operation kinds, in the order a plan lists them.  The executor applies
 * them in plan order; each op names the DN it acts on at that moment (a
 * disable before a rename targets the old DN, everything after it the new).
 */
#define LDAP_DIFF_OP_MAP(X)                                                              \
	X(ENSURE_OU, "create_ou")                                                        \
	X(ADD, "add")                                                                    \
	X(DISABLE, "disable")                                                            \
	X(MODRDN, "modrdn")                                                              \
	X(MODIFY, "modify")                                                              \
	X(GROUP_ADD, "group_add")                                                        \
	X(GROUP_REMOVE, "group_remove")                                                  \
	X(ENABLE, "enable")                                                              \
	X(DELETE, "delete")

typedef enum {
#define LDAP_DIFF_OP_ENUM_(n, s) LDAP_DIFF_OP_##n,
	LDAP_DIFF_OP_MAP(LDAP_DIFF_OP_ENUM_)
#undef LDAP_DIFF_OP_ENUM_
	    LDAP_DIFF_OP_COUNT
} ldap_diff_op_kind_t;

/* The SinkResult op name of a kind: "create_ou", "add", ... */
const char *ldap_diff_op_kind_name(ldap_diff_op_kind_t k);

/*
 * One operation.  Field use per kind:
 *   ENSURE_OU     dn = the OU entry; attribute = "ou"; new_value = its ou value
 *   ADD           dn = new entry; attrs = every attribute to create it with
 *                 (the executor adds objectClass inetOrgPerson; attrs lists
 *                 objectClass only as "posixAccount", for a posix entry)
 *   DISABLE       lock: dn; attribute = pwdAccountLockedTime; old (may be
 *                 NULL), new.  Move: dn = old DN; attribute = "dn"; old_value
 *                 = old DN; new_value = new DN; new_rdn; new_superior =
 *                 disabled_dn (ENABLE alike, new_superior = the container)
 *   MODRDN        dn = old DN; old_value = old DN; new_value = new DN;
 *                 new_rdn ("uid=..."); new_superior (NULL: parent unchanged)
 *   MODIFY        dn; attribute; old_value (NULL: absent); new_value
 *                 (NULL: delete the attribute, else replace with this value).
 *                 Attribute "objectClass" is the exception: new_value
 *                 ("posixAccount") is added to the classes, old_value NULL
 *   GROUP_ADD     dn = group DN; attribute = group name; new_value = member DN
 *   GROUP_REMOVE  dn = group DN; attribute = group name; old_value = member DN
 *   ENABLE        lock: dn; attribute = pwdAccountLockedTime; old_value = the
 *                 lock.  Move: see DISABLE; it comes last, and the ops before
 *                 it name the entry by its DN in the disabled OU
 *   DELETE        dn = the entry; old_value = its DN
 */
typedef struct ldap_diff_op {
	ldap_diff_op_kind_t kind;
	char *dn;
	char *attribute;
	char *old_value;
	char *new_value;
	char *new_rdn;
	char *new_superior;
	id_attrs_t attrs;
} ldap_diff_op_t;

typedef struct ldap_diff_plan {
	ldap_diff_op_t *ops;
	size_t nops;
	size_t cap;
	char *dn; /* the entry's DN once the plan is applied; NULL when none */
	/* The posix->next_uid_number the plan writes; 0 when it takes none. */
	long long uid_number;
} ldap_diff_plan_t;

void ldap_diff_plan_init(ldap_diff_plan_t *p);
void ldap_diff_plan_fini(ldap_diff_plan_t *p);

/*
 * Computes the plan turning actual (NULL: no entry carries this employee
 * number) into desired.  plan must be initialised; it is reset first.
 *
 * manager_dn: the DN of desired->manager_id's entry as resolved by the
 * caller.  When desired->manager_id is NULL the manager attribute is
 * removed; when it is set but manager_dn is NULL (the manager has no entry
 * yet) the attribute is left as it is, to be filled by a later apply.
 *
 * Lifecycle:
 *   PENDING    no entry is created; an existing one is only locked (nothing
 *              else about it changes until the pre-start window opens)
 *   PRESTART   the entry exists, locked (created locked, in the same add)
 *   ACTIVE     the entry exists, unlocked
 *   SUSPENDED  the entry exists, locked
 *   DISABLED   locked; no entry is created for it
 *   DELETED    memberships removed and the entry deleted
 * Locked means LDAP_DIFF_LOCK_VALUE in pwdAccountLockedTime.  Group
 * memberships follow desired->groups in every state but PENDING.
 * employeeNumber is always the employee id (it is the join key).  An empty
 * desired value means "absent" (LDAP has no empty strings).
 *
 * Errors: ID_EINVALID (no employee id, no uid when an entry must exist, or
 * an unusable container or layout DN), ID_ENOMEM.
 */
int ldap_diff_compute(const ldap_diff_layout_t *layout, const desired_identity_t *desired,
                      const ldap_diff_entry_t *actual, const char *manager_dn,
                      ldap_diff_plan_t *plan, id_err_t *err);

/*
 * ldap_diff_compute(), and when posix is not NULL every entry that exists
 * once the plan is applied (all states but PENDING and DELETED) is also a
 * posixAccount: objectClass posixAccount, uidNumber (kept when the entry
 * has one, else posix->next_uid_number, reported in plan->uid_number),
 * gidNumber, homeDirectory from the template and the uid the entry ends up
 * with (so it follows renames), loginShell.  A new entry gets them in its
 * add; an existing one in the same modify as the other attributes.  PENDING
 * leaves an existing entry's posix attributes alone, like the rest.
 * posix NULL is exactly ldap_diff_compute(), and nothing posix is ever
 * removed.  Errors: as ldap_diff_compute(), plus ID_EINVALID when a number
 * is needed and next_uid_number <= 0, or the template is bad.
 */
int ldap_diff_compute_posix(const ldap_diff_layout_t *layout,
                            const ldap_diff_posix_t *posix,
                            const desired_identity_t *desired,
                            const ldap_diff_entry_t *actual, const char *manager_dn,
                            ldap_diff_plan_t *plan, id_err_t *err);

/* ---- DN helpers (RFC 4514), exposed for the executor and tests ---- */

/* Appends value escaped as an RDN attribute value.  0 or ID_ENOMEM. */
int ldap_diff_dn_escape(id_buf_t *out, const char *value);

/*
 * True when a and b name the same entry: same number of RDNs, attribute
 * types equal ignoring case, values equal after unescaping, ignoring ASCII
 * case (every naming attribute used here — uid, cn, ou, dc — matches
 * case-insensitively).  Falls back to strcasecmp() if either fails to parse.
 */
bool ldap_diff_dn_equal(const char *a, const char *b);

/*
 * When dn is "cn=<name>,<groups_dn>" returns a malloc'd copy of the
 * unescaped name (caller frees), else NULL (not a managed group, or ENOMEM).
 */
char *ldap_diff_group_name(const ldap_diff_layout_t *layout, const char *dn);

/* The DN of group name: "cn=<escaped name>,<groups_dn>".  0 or ID_ENOMEM. */
int ldap_diff_group_dn(const ldap_diff_layout_t *layout, const char *name, id_buf_t *out);

#endif
