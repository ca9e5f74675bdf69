/*
 * scim_diff.c — desired identity → SCIM User fields, field diff, request
 * bodies (see scim_diff.h for the contract and the mapping table).
 *
 * Everything here is deterministic: the same inputs give the same plan and
 * byte-identical bodies (jansson keeps object keys in insertion order).
 * Threading: reentrant, no globals beyond constant tables.
 */
#include "sinks/scim_diff.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const field_paths[SCIM_F_COUNT] = {
#define SCIM_FIELD_PATH_(n, p) [SCIM_F_##n] = p,
    SCIM_FIELD_MAP(SCIM_FIELD_PATH_)
#undef SCIM_FIELD_PATH_
};

static const char *const op_names[SCIM_DIFF_OP_COUNT] = {
#define SCIM_DIFF_OP_NAME_(n, s) [SCIM_DIFF_OP_##n] = s,
    SCIM_DIFF_OP_MAP(SCIM_DIFF_OP_NAME_)
#undef SCIM_DIFF_OP_NAME_
};

/* Where each field lives in a resource: a top-level attribute, a
 * sub-attribute of "name", of the enterprise extension, or special. */
enum { LOC_TOP, LOC_NAME, LOC_ENT, LOC_EMAIL, LOC_MANAGER, LOC_ACTIVE };

static const struct {
	int loc;
	const char *key;
} field_loc[SCIM_F_COUNT] = {
    [SCIM_F_USER_NAME] = {LOC_TOP, "userName"},
    [SCIM_F_EXTERNAL_ID] = {LOC_TOP, "externalId"},
    [SCIM_F_GIVEN_NAME] = {LOC_NAME, "givenName"},
    [SCIM_F_FAMILY_NAME] = {LOC_NAME, "familyName"},
    [SCIM_F_FORMATTED] = {LOC_NAME, "formatted"},
    [SCIM_F_DISPLAY_NAME] = {LOC_TOP, "displayName"},
    [SCIM_F_EMAIL] = {LOC_EMAIL, "emails"},
    [SCIM_F_TITLE] = {LOC_TOP, "title"},
    [SCIM_F_USER_TYPE] = {LOC_TOP, "userType"},
    [SCIM_F_EMPLOYEE_NUMBER] = {LOC_ENT, "employeeNumber"},
    [SCIM_F_DEPARTMENT] = {LOC_ENT, "department"},
    [SCIM_F_MANAGER] = {LOC_MANAGER, "manager"},
    [SCIM_F_ACTIVE] = {LOC_ACTIVE, "active"},
};

const char *scim_diff_field_path(scim_field_t f)
{
	return f < SCIM_F_COUNT ? field_paths[f] : "?";
}

bool scim_diff_field_is_enterprise(scim_field_t f)
{
	return f == SCIM_F_EMPLOYEE_NUMBER || f == SCIM_F_DEPARTMENT ||
	       f == SCIM_F_MANAGER;
}

const char *scim_diff_op_kind_name(scim_diff_op_kind_t k)
{
	return k < SCIM_DIFF_OP_COUNT ? op_names[k] : "?";
}

static bool str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static int dup_opt(char **dst, const char *src)
{
	free(*dst);
	*dst = NULL;
	if (src == NULL)
		return 0;
	return (*dst = strdup(src)) == NULL ? ID_ENOMEM : 0;
}

/* ---- groups ---- */

void scim_diff_group_fini(scim_diff_group_t *g)
{
	if (g == NULL)
		return;
	free(g->id);
	free(g->display_name);
	free(g->external_id);
	memset(g, 0, sizeof(*g));
}

bool scim_diff_group_managed(const scim_diff_group_t *g)
{
	return g != NULL && g->external_id != NULL &&
	       strncmp(g->external_id, SCIM_DIFF_GROUP_MARK,
	               strlen(SCIM_DIFF_GROUP_MARK)) == 0;
}

/* A string member of obj, or NULL (absent, null, or not a string). */
static const char *jget_str(const json_t *obj, const char *key)
{
	const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int group_copy(scim_diff_group_t *dst, const scim_diff_group_t *src)
{
	memset(dst, 0, sizeof(*dst));
	if (dup_opt(&dst->id, src->id) != 0 ||
	    dup_opt(&dst->display_name, src->display_name) != 0 ||
	    dup_opt(&dst->external_id, src->external_id) != 0) {
		scim_diff_group_fini(dst);
		return ID_ENOMEM;
	}
	return 0;
}

int scim_diff_group_from_json(const json_t *res, scim_diff_group_t *g, id_err_t *err)
{
	scim_diff_group_fini(g);
	const char *id = jget_str(res, "id");
	if (id == NULL)
		return id_err_set(err, ID_EPARSE,
		                  "SCIM Group resource without a string id");
	scim_diff_group_t tmp = {(char *)id, (char *)jget_str(res, "displayName"),
	                         (char *)jget_str(res, "externalId")};
	if (group_copy(g, &tmp) != 0)
		return id_err_set(err, ID_ENOMEM, "SCIM Group: out of memory");
	return 0;
}

/* ---- users ---- */

void scim_diff_user_init(scim_diff_user_t *u)
{
	memset(u, 0, sizeof(*u));
}

void scim_diff_user_fini(scim_diff_user_t *u)
{
	if (u == NULL)
		return;
	free(u->id);
	free(u->version);
	for (int f = 0; f < SCIM_F_COUNT; f++)
		free(u->fields[f]);
	for (size_t i = 0; i < u->ngroups; i++)
		scim_diff_group_fini(&u->groups[i]);
	free(u->groups);
	json_decref(u->resource);
	memset(u, 0, sizeof(*u));
}

int scim_diff_user_add_group(scim_diff_user_t *u, const scim_diff_group_t *g)
{
	scim_diff_group_t *n = realloc(u->groups, (u->ngroups + 1) * sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	u->groups = n;
	if (group_copy(&u->groups[u->ngroups], g) != 0)
		return ID_ENOMEM;
	u->ngroups++;
	return 0;
}

/* The first emails element whose type is "work" (index), or -1. */
static long work_email_index(const json_t *emails)
{
	if (!json_is_array(emails))
		return -1;
	for (size_t i = 0; i < json_array_size(emails); i++) {
		const char *type = jget_str(json_array_get(emails, i), "type");
		if (type != NULL && strcasecmp(type, "work") == 0)
			return (long)i;
	}
	return -1;
}

int scim_diff_user_from_json(const json_t *res, scim_diff_user_t *u, id_err_t *err)
{
	const char *v[SCIM_F_COUNT] = {0};
	scim_diff_user_fini(u);
	const char *id = jget_str(res, "id");
	if (id == NULL)
		return id_err_set(err, ID_EPARSE,
		                  "SCIM User resource without a string id");
	const json_t *name = json_object_get(res, "name");
	const json_t *ent = json_object_get(res, SCIM_SCHEMA_ENTERPRISE);
	const json_t *emails = json_object_get(res, "emails");
	for (int f = 0; f < SCIM_F_COUNT; f++) {
		switch (field_loc[f].loc) {
		case LOC_TOP:
			v[f] = jget_str(res, field_loc[f].key);
			break;
		case LOC_NAME:
			v[f] = jget_str(name, field_loc[f].key);
			break;
		case LOC_ENT:
			v[f] = jget_str(ent, field_loc[f].key);
			break;
		case LOC_MANAGER:
			v[f] = jget_str(json_object_get(ent, "manager"), "value");
			break;
		case LOC_EMAIL: {
			long i = work_email_index(emails);
			u->has_work_email = i >= 0;
			v[f] = i >= 0
			           ? jget_str(json_array_get(emails, (size_t)i), "value")
			           : NULL;
			break;
		}
		case LOC_ACTIVE: {
			const json_t *a = json_object_get(res, "active");
			v[f] = json_is_boolean(a) ? (json_is_true(a) ? "true" : "false")
			                          : NULL;
			break;
		}
		}
	}
	for (size_t i = 0; json_is_array(emails) && i < json_array_size(emails); i++)
		if (json_is_true(json_object_get(json_array_get(emails, i), "primary")))
			u->has_primary_email = true;
	if ((u->id = strdup(id)) == NULL ||
	    dup_opt(&u->version, jget_str(json_object_get(res, "meta"), "version")) != 0)
		goto nomem;
	for (int f = 0; f < SCIM_F_COUNT; f++)
		if (dup_opt(&u->fields[f], v[f]) != 0)
			goto nomem;
	if ((u->resource = json_deep_copy(res)) == NULL)
		goto nomem;
	return 0;
nomem:
	scim_diff_user_fini(u);
	return id_err_set(err, ID_ENOMEM, "SCIM User: out of memory");
}

/* ---- desired fields ---- */

static const char *attr_or_null(const desired_identity_t *d, const char *key)
{
	const char *v = id_attrs_get(&d->attributes, key);
	return v != NULL && v[0] != '\0' ? v : NULL;
}

/* The value under a SCIM attribute path (a policy's scim section), else
 * under the LDAP name the built-in mapping uses. */
static const char *attr_either(const desired_identity_t *d, const char *scim,
                               const char *ldap)
{
	const char *v = attr_or_null(d, scim);
	return v != NULL || ldap == NULL ? v : attr_or_null(d, ldap);
}

#define SCIM_ENTERPRISE_ATTR "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:"

void scim_diff_desired_fields(const scim_diff_opts_t *opts, const desired_identity_t *d,
                              const char *manager_scim_id, const char *out[SCIM_F_COUNT])
{
	const char *cn = attr_either(d, "name.formatted", "cn");
	const char *dn = attr_either(d, "displayName", NULL);
	const char *mail = attr_either(d, "emails[type eq \"work\"].value", "mail");
	out[SCIM_F_USER_NAME] = attr_either(d, "userName", "uid");
	out[SCIM_F_EXTERNAL_ID] =
	    d->employee_id != NULL && d->employee_id[0] != '\0' ? d->employee_id : NULL;
	out[SCIM_F_GIVEN_NAME] = attr_either(d, "name.givenName", "givenName");
	out[SCIM_F_FAMILY_NAME] = attr_either(d, "name.familyName", "sn");
	out[SCIM_F_FORMATTED] = cn;
	out[SCIM_F_DISPLAY_NAME] = dn != NULL ? dn : cn;
	out[SCIM_F_EMAIL] = mail != NULL ? mail : attr_or_null(d, "emails");
	out[SCIM_F_TITLE] = attr_either(d, "title", NULL);
	out[SCIM_F_USER_TYPE] = attr_either(d, "userType", "employeeType");
	out[SCIM_F_EMPLOYEE_NUMBER] = NULL;
	out[SCIM_F_DEPARTMENT] = NULL;
	out[SCIM_F_MANAGER] = NULL;
	if (opts != NULL && opts->enterprise) {
		const char *no = attr_either(d, SCIM_ENTERPRISE_ATTR "employeeNumber",
		                             "employeeNumber");
		out[SCIM_F_EMPLOYEE_NUMBER] = no != NULL ? no : out[SCIM_F_EXTERNAL_ID];
		out[SCIM_F_DEPARTMENT] =
		    attr_either(d, SCIM_ENTERPRISE_ATTR "department", "departmentNumber");
		out[SCIM_F_MANAGER] =
		    manager_scim_id != NULL && manager_scim_id[0] != '\0'
		        ? manager_scim_id
		        : NULL;
	}
	out[SCIM_F_ACTIVE] = d->state == LC_ACTIVE ? "true" : "false";
}

/* ---- plan ---- */

void scim_diff_plan_init(scim_diff_plan_t *p)
{
	memset(p, 0, sizeof(*p));
}

static void op_fini(scim_diff_op_t *op)
{
	free(op->group);
	free(op->group_id);
	free(op->old_value);
	free(op->new_value);
}

void scim_diff_plan_fini(scim_diff_plan_t *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->nops; i++)
		op_fini(&p->ops[i]);
	free(p->ops);
	for (int f = 0; f < SCIM_F_COUNT; f++)
		free(p->want[f]);
	free(p->user_id);
	memset(p, 0, sizeof(*p));
}

static int plan_push(scim_diff_plan_t *p, scim_diff_op_kind_t kind, scim_field_t field,
                     const char *group, const char *group_id, bool claim,
                     const char *old_value, const char *new_value)
{
	if (p->nops == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		scim_diff_op_t *n = realloc(p->ops, cap * sizeof(*n));
		if (n == NULL)
			return ID_ENOMEM;
		p->ops = n;
		p->cap = cap;
	}
	scim_diff_op_t *op = &p->ops[p->nops];
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->field = field;
	op->claim = claim;
	if (dup_opt(&op->group, group) != 0 || dup_opt(&op->group_id, group_id) != 0 ||
	    dup_opt(&op->old_value, old_value) != 0 ||
	    dup_opt(&op->new_value, new_value) != 0) {
		op_fini(op);
		return ID_ENOMEM;
	}
	p->nops++;
	return 0;
}

static bool desired_has_group(const desired_identity_t *d, const char *name)
{
	for (size_t i = 0; name != NULL && i < d->ngroups; i++)
		if (strcasecmp(d->groups[i], name) == 0)
			return true;
	return false;
}

static bool member_of(const scim_diff_user_t *u, const char *name)
{
	for (size_t i = 0; u != NULL && i < u->ngroups; i++)
		if (u->groups[i].display_name != NULL &&
		    strcasecmp(u->groups[i].display_name, name) == 0)
			return true;
	return false;
}

/*
 * The group to use for name among the known ones: a managed one first (the
 * lowest id, so concurrent workers agree on it), else one without an
 * externalId (to be claimed), else the first one carrying another client's
 * externalId (a conflict).  NULL when none is known.
 */
static const scim_diff_group_t *pick_group(const scim_diff_group_t *known, size_t n,
                                           const char *name)
{
	const scim_diff_group_t *best = NULL;
	int best_rank = 3;
	for (size_t i = 0; i < n; i++) {
		const scim_diff_group_t *g = &known[i];
		if (g->id == NULL || g->display_name == NULL ||
		    strcasecmp(g->display_name, name) != 0)
			continue;
		int rank = scim_diff_group_managed(g) ? 0
		           : g->external_id == NULL   ? 1
		                                      : 2;
		if (rank < best_rank ||
		    (rank == best_rank && strcmp(g->id, best->id) < 0)) {
			best = g;
			best_rank = rank;
		}
	}
	return best;
}

static int plan_group_adds(const desired_identity_t *d, const scim_diff_user_t *actual,
                           const scim_diff_group_t *known, size_t nknown,
                           scim_diff_plan_t *p, id_err_t *err)
{
	for (size_t i = 0; i < d->ngroups; i++) {
		const char *name = d->groups[i];
		if (name == NULL || name[0] == '\0' || member_of(actual, name))
			continue;
		const scim_diff_group_t *g = pick_group(known, nknown, name);
		int rc;
		if (g == NULL)
			rc = plan_push(p, SCIM_DIFF_OP_CREATE_GROUP, 0, name, NULL, false,
			               NULL, NULL);
		else if (g->external_id != NULL && !scim_diff_group_managed(g))
			return id_err_set(
			    err, ID_ECONFLICT,
			    "SCIM Group \"%s\" (id %s) belongs to another client "
			    "(externalId \"%s\"); not adding employee %s",
			    name, g->id, g->external_id, d->employee_id);
		else
			rc = plan_push(p, SCIM_DIFF_OP_GROUP_ADD, 0, name, g->id,
			               g->external_id == NULL, NULL, NULL);
		if (rc != 0)
			return id_err_set(err, rc, "scim diff: out of memory");
	}
	return 0;
}

static int plan_group_removes(const desired_identity_t *d, const scim_diff_user_t *actual,
                              bool all, scim_diff_plan_t *p, id_err_t *err)
{
	for (size_t i = 0; i < actual->ngroups; i++) {
		const scim_diff_group_t *g = &actual->groups[i];
		if (!all && (!scim_diff_group_managed(g) ||
		             desired_has_group(d, g->display_name)))
			continue;
		if (plan_push(p, SCIM_DIFF_OP_GROUP_REMOVE, 0, g->display_name, g->id,
		              false, g->id, NULL) != 0)
			return id_err_set(err, ID_ENOMEM, "scim diff: out of memory");
	}
	return 0;
}

/* The UPDATE ops and the DISABLE/ENABLE op, in field order. */
static int plan_user_update(const scim_diff_opts_t *opts, const desired_identity_t *d,
                            const scim_diff_user_t *actual, const char *const want[],
                            const char *manager_scim_id, scim_diff_plan_t *p,
                            id_err_t *err)
{
	for (int f = 0; f < SCIM_F_COUNT; f++) {
		if (scim_diff_field_is_enterprise(f) &&
		    !(opts != NULL && opts->enterprise))
			continue;
		/* Manager not provisioned yet: leave the field for a later apply. */
		if (f == SCIM_F_MANAGER && d->manager_id != NULL &&
		    d->manager_id[0] != '\0' && manager_scim_id == NULL)
			continue;
		if (str_eq(actual->fields[f], want[f]))
			continue;
		scim_diff_op_kind_t k = SCIM_DIFF_OP_UPDATE;
		if (f == SCIM_F_ACTIVE)
			k = strcmp(want[f], "true") == 0 ? SCIM_DIFF_OP_ENABLE
			                                 : SCIM_DIFF_OP_DISABLE;
		if (plan_push(p, k, f, NULL, NULL, false, actual->fields[f], want[f]) !=
		    0)
			return id_err_set(err, ID_ENOMEM, "scim diff: out of memory");
	}
	return 0;
}

int scim_diff_compute(const scim_diff_opts_t *opts, const desired_identity_t *desired,
                      const scim_diff_user_t *actual, const char *manager_scim_id,
                      const scim_diff_group_t *known, size_t nknown,
                      scim_diff_plan_t *plan, id_err_t *err)
{
	const char *want[SCIM_F_COUNT];
	int rc = 0;
	scim_diff_plan_fini(plan);
	if (desired == NULL || desired->employee_id == NULL ||
	    desired->employee_id[0] == '\0')
		return id_err_set(err, ID_EINVALID,
		                  "scim diff: desired identity without "
		                  "employee id");
	scim_diff_desired_fields(opts, desired, manager_scim_id, want);
	for (int f = 0; f < SCIM_F_COUNT; f++) {
		json_t *probe = want[f] != NULL ? json_string(want[f]) : NULL;
		if (want[f] != NULL && probe == NULL)
			return id_err_set(err, ID_EINVALID,
			                  "employee %s: value of SCIM %s is not UTF-8",
			                  desired->employee_id, field_paths[f]);
		json_decref(probe);
		if (dup_opt(&plan->want[f], want[f]) != 0)
			goto nomem;
	}
	lifecycle_state_t st = desired->state;
	bool gone = st == LC_DELETED;
	if (actual == NULL) {
		/* Never create an account only to shut it, nor before pre-start. */
		if (gone || st == LC_DISABLED || st == LC_PENDING)
			return 0;
		if (want[SCIM_F_USER_NAME] == NULL)
			return id_err_set(
			    err, ID_EINVALID,
			    "employee %s: no uid, so no SCIM userName to create",
			    desired->employee_id);
		if (plan_push(plan, SCIM_DIFF_OP_CREATE, 0, NULL, NULL, false, NULL,
		              NULL) != 0)
			goto nomem;
		return plan_group_adds(desired, NULL, known, nknown, plan, err);
	}
	if (dup_opt(&plan->user_id, actual->id) != 0)
		goto nomem;
	if (gone) {
		/* Leave every group: the server keeps members of deleted Users. */
		if ((rc = plan_group_removes(desired, actual, true, plan, err)) != 0)
			return rc;
		if (plan_push(plan, SCIM_DIFF_OP_DELETE, 0, NULL, NULL, false, actual->id,
		              NULL) != 0)
			goto nomem;
		return 0;
	}
	if (st == LC_PENDING) {
		/* Before the pre-start window an existing User is left as it is,
		 * only kept inactive. */
		if (!str_eq(actual->fields[SCIM_F_ACTIVE], "false") &&
		    plan_push(plan, SCIM_DIFF_OP_DISABLE, SCIM_F_ACTIVE, NULL, NULL,
		              false, actual->fields[SCIM_F_ACTIVE], "false") != 0)
			goto nomem;
		return 0;
	}
	if (want[SCIM_F_USER_NAME] == NULL)
		return id_err_set(
		    err, ID_EINVALID,
		    "employee %s: no uid, and SCIM userName cannot be removed",
		    desired->employee_id);
	bool enabling = !str_eq(actual->fields[SCIM_F_ACTIVE], want[SCIM_F_ACTIVE]) &&
	                strcmp(want[SCIM_F_ACTIVE], "true") == 0;
	if (!enabling && (rc = plan_user_update(opts, desired, actual, want,
	                                        manager_scim_id, plan, err)) != 0)
		return rc;
	if ((rc = plan_group_adds(desired, actual, known, nknown, plan, err)) != 0 ||
	    (rc = plan_group_removes(desired, actual, false, plan, err)) != 0)
		return rc;
	if (enabling && (rc = plan_user_update(opts, desired, actual, want,
	                                       manager_scim_id, plan, err)) != 0)
		return rc;
	return 0;
nomem:
	return id_err_set(err, ID_ENOMEM, "scim diff: out of memory");
}

static bool is_user_change(scim_diff_op_kind_t k)
{
	return k == SCIM_DIFF_OP_UPDATE || k == SCIM_DIFF_OP_DISABLE ||
	       k == SCIM_DIFF_OP_ENABLE;
}

size_t scim_diff_plan_requests(const scim_diff_plan_t *plan)
{
	size_t n = 0;
	for (size_t i = 0; i < plan->nops; i++)
		if (!(is_user_change(plan->ops[i].kind) && i > 0 &&
		      is_user_change(plan->ops[i - 1].kind)))
			n++;
	return n;
}

/* ---- bodies ---- */

/* json_object_set_new that reports failure (NULL value or ENOMEM). */
static bool jset(json_t *obj, const char *key, json_t *v)
{
	return v != NULL && json_object_set_new(obj, key, v) == 0;
}

static bool jpush(json_t *arr, json_t *v)
{
	return v != NULL && json_array_append_new(arr, v) == 0;
}

static json_t *field_value(scim_field_t f, const char *v)
{
	if (f == SCIM_F_ACTIVE)
		return json_boolean(strcmp(v, "true") == 0);
	if (f == SCIM_F_MANAGER)
		return json_pack("{s:s}", "value", v);
	return json_string(v);
}

static json_t *work_email(const char *value, bool primary)
{
	json_t *e = json_pack("{s:s,s:s}", "value", value, "type", "work");
	if (e != NULL && primary && !jset(e, "primary", json_true())) {
		json_decref(e);
		return NULL;
	}
	return e;
}

json_t *scim_diff_user_body(const char *const fields[SCIM_F_COUNT], bool enterprise)
{
	json_t *b = json_object(), *schemas = json_array(), *name = json_object(),
	       *ent = json_object();
	bool ok = b != NULL && schemas != NULL && name != NULL && ent != NULL &&
	          jpush(schemas, json_string(SCIM_SCHEMA_USER));
	for (int f = 0; ok && f < SCIM_F_COUNT; f++) {
		const char *v = fields[f];
		if (v == NULL || (scim_diff_field_is_enterprise(f) && !enterprise))
			continue;
		switch (field_loc[f].loc) {
		case LOC_TOP:
			ok = jset(b, field_loc[f].key, json_string(v));
			break;
		case LOC_NAME:
			ok = jset(name, field_loc[f].key, json_string(v));
			break;
		case LOC_ENT:
		case LOC_MANAGER:
			ok = jset(ent, field_loc[f].key, field_value(f, v));
			break;
		case LOC_EMAIL: {
			json_t *arr = json_array();
			if (arr == NULL || !jpush(arr, work_email(v, true))) {
				json_decref(arr);
				ok = false;
			} else {
				ok = jset(b, "emails", arr); /* steals arr either way */
			}
			break;
		}
		case LOC_ACTIVE:
			ok = jset(b, "active", field_value(f, v));
			break;
		}
	}
	if (ok && json_object_size(name) > 0) {
		ok = jset(b, "name", name);
		name = NULL;
	}
	if (ok && json_object_size(ent) > 0) {
		ok = jpush(schemas, json_string(SCIM_SCHEMA_ENTERPRISE)) &&
		     jset(b, SCIM_SCHEMA_ENTERPRISE, ent);
		ent = NULL;
	}
	if (ok) {
		/* "schemas" first, as RFC examples show it (keys keep insertion order).
		 */
		json_t *out = json_pack("{s:o}", "schemas", schemas);
		schemas = NULL;
		ok = out != NULL && json_object_update(out, b) == 0;
		json_decref(b);
		b = out;
	}
	json_decref(schemas);
	json_decref(name);
	json_decref(ent);
	if (!ok) {
		json_decref(b);
		return NULL;
	}
	return b;
}

static json_t *patch_envelope(json_t **ops_out)
{
	json_t *ops = json_array();
	json_t *b =
	    ops ? json_pack("{s:[s],s:o}", "schemas", SCIM_MSG_PATCH, "Operations", ops)
	        : NULL;
	*ops_out = b != NULL ? ops : NULL;
	return b;
}

json_t *scim_diff_patch_body(const scim_diff_user_t *actual, const scim_diff_op_t *ops,
                             size_t n)
{
	json_t *arr;
	json_t *b = patch_envelope(&arr);
	bool ok = b != NULL;
	for (size_t i = 0; ok && i < n; i++) {
		const scim_diff_op_t *op = &ops[i];
		scim_field_t f = op->field;
		json_t *o;
		if (f == SCIM_F_EMAIL && op->new_value == NULL)
			o = json_pack("{s:s,s:s}", "op", "remove", "path",
			              "emails[type eq \"work\"]");
		else if (f == SCIM_F_EMAIL && !actual->has_work_email)
			o = json_pack(
			    "{s:s,s:s,s:[o]}", "op", "add", "path", "emails", "value",
			    work_email(op->new_value, !actual->has_primary_email));
		else if (op->new_value == NULL)
			o = json_pack("{s:s,s:s}", "op", "remove", "path",
			              field_paths[f]);
		else
			o = json_pack("{s:s,s:s,s:o}", "op", "replace", "path",
			              field_paths[f], "value",
			              field_value(f, op->new_value));
		ok = jpush(arr, o);
	}
	if (!ok) {
		json_decref(b);
		return NULL;
	}
	return b;
}

/* obj[key] as an object, created when absent (NULL on ENOMEM). */
static json_t *sub_object(json_t *obj, const char *key)
{
	json_t *o = json_object_get(obj, key);
	if (json_is_object(o))
		return o;
	o = json_object();
	return jset(obj, key, o) ? o : NULL;
}

/* Sets or deletes obj[key]; deletes obj[parent] when that leaves it empty. */
static bool put_in(json_t *root, const char *parent, const char *key, json_t *v)
{
	json_t *obj = parent != NULL ? sub_object(root, parent) : root;
	if (obj == NULL) {
		json_decref(v);
		return false;
	}
	if (v != NULL)
		return jset(obj, key, v);
	json_object_del(obj, key);
	if (parent != NULL && json_object_size(obj) == 0)
		json_object_del(root, parent);
	return true;
}

static bool put_email(json_t *r, const char *value, bool has_primary)
{
	json_t *emails = json_object_get(r, "emails");
	long i = work_email_index(emails);
	if (value == NULL) {
		if (i >= 0)
			json_array_remove(emails, (size_t)i);
		if (json_is_array(emails) && json_array_size(emails) == 0)
			json_object_del(r, "emails");
		return true;
	}
	if (i >= 0)
		return jset(json_array_get(emails, (size_t)i), "value",
		            json_string(value));
	if (!json_is_array(emails)) {
		emails = json_array();
		if (!jset(r, "emails", emails))
			return false;
	}
	return jpush(emails, work_email(value, !has_primary));
}

static bool schemas_sync(json_t *r)
{
	json_t *schemas = json_object_get(r, "schemas");
	if (!json_is_array(schemas)) {
		schemas = json_pack("[s]", SCIM_SCHEMA_USER);
		if (!jset(r, "schemas", schemas))
			return false;
	}
	bool want = json_object_get(r, SCIM_SCHEMA_ENTERPRISE) != NULL;
	for (size_t i = 0; i < json_array_size(schemas); i++) {
		const char *s = json_string_value(json_array_get(schemas, i));
		if (s != NULL && strcmp(s, SCIM_SCHEMA_ENTERPRISE) == 0) {
			if (!want)
				json_array_remove(schemas, i);
			return true;
		}
	}
	return !want || jpush(schemas, json_string(SCIM_SCHEMA_ENTERPRISE));
}

json_t *scim_diff_put_body(const scim_diff_user_t *actual, const scim_diff_op_t *ops,
                           size_t n)
{
	json_t *r = actual->resource != NULL ? json_deep_copy(actual->resource)
	                                     : json_pack("{s:s}", "id", actual->id);
	bool ok = r != NULL;
	if (ok) {
		json_object_del(r, "meta");
		json_object_del(r, "groups"); /* read-only (RFC 7643 §4.1.2) */
	}
	for (size_t i = 0; ok && i < n; i++) {
		scim_field_t f = ops[i].field;
		const char *v = ops[i].new_value;
		json_t *jv = v != NULL ? field_value(f, v) : NULL;
		if (v != NULL && jv == NULL) {
			ok = false;
			break;
		}
		switch (field_loc[f].loc) {
		case LOC_TOP:
		case LOC_ACTIVE:
			ok = put_in(r, NULL, field_loc[f].key, jv);
			break;
		case LOC_NAME:
			ok = put_in(r, "name", field_loc[f].key, jv);
			break;
		case LOC_ENT:
		case LOC_MANAGER:
			ok = put_in(r, SCIM_SCHEMA_ENTERPRISE, field_loc[f].key, jv);
			break;
		case LOC_EMAIL:
			json_decref(jv);
			ok = put_email(r, v, actual->has_primary_email);
			break;
		}
	}
	if (ok)
		ok = schemas_sync(r);
	if (!ok) {
		json_decref(r);
		return NULL;
	}
	return r;
}

static char *group_mark(const char *name)
{
	size_t n = strlen(SCIM_DIFF_GROUP_MARK) + strlen(name) + 1;
	char *m = malloc(n);
	if (m != NULL)
		snprintf(m, n, "%s%s", SCIM_DIFF_GROUP_MARK, name);
	return m;
}

json_t *scim_diff_group_body(const char *name, const char *member_id)
{
	char *mark = group_mark(name);
	json_t *b = mark == NULL
	                ? NULL
	                : json_pack("{s:[s],s:s,s:s,s:[{s:s}]}", "schemas",
	                            SCIM_SCHEMA_GROUP, "displayName", name, "externalId",
	                            mark, "members", "value", member_id);
	free(mark);
	return b;
}

json_t *scim_diff_member_add_body(const char *name, const char *member_id, bool claim)
{
	json_t *arr;
	json_t *b = patch_envelope(&arr);
	bool ok =
	    b != NULL && jpush(arr, json_pack("{s:s,s:s,s:[{s:s}]}", "op", "add", "path",
	                                      "members", "value", "value", member_id));
	if (ok && claim) {
		char *mark = group_mark(name);
		ok = mark != NULL &&
		     jpush(arr, json_pack("{s:s,s:s,s:s}", "op", "replace", "path",
		                          "externalId", "value", mark));
		free(mark);
	}
	if (!ok) {
		json_decref(b);
		return NULL;
	}
	return b;
}

json_t *scim_diff_member_remove_body(const char *member_id)
{
	id_buf_t path = ID_BUF_INIT;
	json_t *arr, *b = NULL;
	if (id_buf_append_str(&path, "members[") != 0 ||
	    scim_diff_filter_eq(&path, "value", member_id) != 0 ||
	    id_buf_append(&path, "]", 2) != 0)
		goto out;
	b = patch_envelope(&arr);
	if (b != NULL && !jpush(arr, json_pack("{s:s,s:s}", "op", "remove", "path",
	                                       (const char *)path.data))) {
		json_decref(b);
		b = NULL;
	}
out:
	id_buf_fini(&path);
	return b;
}

int scim_diff_filter_eq(id_buf_t *out, const char *attr, const char *value)
{
	json_t *s = json_string(value);
	if (s == NULL)
		return ID_EINVALID;
	char *lit = json_dumps(s, JSON_ENCODE_ANY);
	json_decref(s);
	if (lit == NULL)
		return ID_ENOMEM;
	int rc = id_buf_printf(out, "%s eq %s", attr, lit);
	free(lit);
	return rc != 0 ? ID_ENOMEM : 0;
}
