/*
 * test_scim_diff.c — the pure SCIM diff: the attribute mapping, which
 * requests a plan holds and in which order for each joiner/mover/leaver
 * change, the exact PATCH/PUT/POST bodies, filter escaping, and the
 * fixpoint property (apply a plan to a model User with the PUT body
 * builder, read it back, diff again: nothing left to do).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sinks/scim_diff.h"

#define ENT SCIM_SCHEMA_ENTERPRISE

static const scim_diff_opts_t ent_on = {.enterprise = true};
static const scim_diff_opts_t ent_off = {.enterprise = false};

static void mk_desired(desired_identity_t *d, const char *id, const char *uid,
                       lifecycle_state_t state, const char *dept)
{
	desired_identity_init(d);
	d->employee_id = strdup(id);
	d->version = 1;
	d->state = state;
	id_attrs_set(&d->attributes, "uid", uid);
	id_attrs_set(&d->attributes, "givenName", "Ada");
	id_attrs_set(&d->attributes, "sn", "Lovelace");
	id_attrs_set(&d->attributes, "cn", "Ada Lovelace");
	id_attrs_set(&d->attributes, "displayName", "Ada L.");
	id_attrs_set(&d->attributes, "mail", "alovelace@example.com");
	id_attrs_set(&d->attributes, "title", "Engineer");
	id_attrs_set(&d->attributes, "employeeNumber", id);
	id_attrs_set(&d->attributes, "employeeType", "full_time");
	id_attrs_set(&d->attributes, "departmentNumber", dept);
	id_attrs_set(&d->attributes, "l", "Berlin");
	if (state == LC_ACTIVE) {
		char g[64];
		desired_identity_add_group(d, "staff");
		snprintf(g, sizeof(g), "dept-%s", dept);
		desired_identity_add_group(d, g);
	}
}

static void mk_group(scim_diff_group_t *g, const char *id, const char *name,
                     const char *ext)
{
	g->id = strdup(id);
	g->display_name = strdup(name);
	g->external_id = ext ? strdup(ext) : NULL;
}

/* Compact JSON text of j (caller frees), consuming the reference to j. */
static char *dumps(json_t *j)
{
	assert_non_null(j);
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	assert_non_null(s);
	return s;
}

/* A User resource as the server would hold it after creating d. */
static void user_as_created(const desired_identity_t *d, const char *id, const char *mgr,
                            scim_diff_user_t *u)
{
	const char *want[SCIM_F_COUNT];
	scim_diff_desired_fields(&ent_on, d, mgr, want);
	json_t *b = scim_diff_user_body(want, true);
	assert_non_null(b);
	json_object_set_new(b, "id", json_string(id));
	json_object_set_new(b, "meta", json_pack("{s:s}", "version", "W/\"1\""));
	scim_diff_user_init(u);
	assert_int_equal(scim_diff_user_from_json(b, u, NULL), 0);
	json_decref(b);
}

static const scim_diff_op_t *find_op(const scim_diff_plan_t *p, scim_diff_op_kind_t k,
                                     int field)
{
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].kind == k && (field < 0 || (int)p->ops[i].field == field))
			return &p->ops[i];
	return NULL;
}

static size_t op_index(const scim_diff_plan_t *p, const scim_diff_op_t *op)
{
	return (size_t)(op - p->ops);
}

/* ---- mapping ---- */

static void test_desired_fields(void **state)
{
	(void)state;
	desired_identity_t d;
	const char *f[SCIM_F_COUNT];
	mk_desired(&d, "E100", "alovelace", LC_ACTIVE, "eng");
	scim_diff_desired_fields(&ent_on, &d, "mgr-id", f);
	assert_string_equal(f[SCIM_F_USER_NAME], "alovelace");
	assert_string_equal(f[SCIM_F_EXTERNAL_ID], "E100");
	assert_string_equal(f[SCIM_F_GIVEN_NAME], "Ada");
	assert_string_equal(f[SCIM_F_FAMILY_NAME], "Lovelace");
	assert_string_equal(f[SCIM_F_FORMATTED], "Ada Lovelace");
	assert_string_equal(f[SCIM_F_DISPLAY_NAME], "Ada L.");
	assert_string_equal(f[SCIM_F_EMAIL], "alovelace@example.com");
	assert_string_equal(f[SCIM_F_TITLE], "Engineer");
	assert_string_equal(f[SCIM_F_USER_TYPE], "full_time");
	assert_string_equal(f[SCIM_F_EMPLOYEE_NUMBER], "E100");
	assert_string_equal(f[SCIM_F_DEPARTMENT], "eng");
	assert_string_equal(f[SCIM_F_MANAGER], "mgr-id");
	assert_string_equal(f[SCIM_F_ACTIVE], "true");

	/* displayName falls back to cn, employeeNumber to the id; "" is absent. */
	id_attrs_remove(&d.attributes, "displayName");
	id_attrs_remove(&d.attributes, "employeeNumber");
	id_attrs_set(&d.attributes, "title", "");
	d.state = LC_SUSPENDED;
	scim_diff_desired_fields(&ent_on, &d, NULL, f);
	assert_string_equal(f[SCIM_F_DISPLAY_NAME], "Ada Lovelace");
	assert_string_equal(f[SCIM_F_EMPLOYEE_NUMBER], "E100");
	assert_null(f[SCIM_F_TITLE]);
	assert_null(f[SCIM_F_MANAGER]);
	assert_string_equal(f[SCIM_F_ACTIVE], "false");

	/* Without the enterprise extension those fields are not managed. */
	scim_diff_desired_fields(&ent_off, &d, "mgr-id", f);
	assert_null(f[SCIM_F_EMPLOYEE_NUMBER]);
	assert_null(f[SCIM_F_DEPARTMENT]);
	assert_null(f[SCIM_F_MANAGER]);
	desired_identity_fini(&d);
}

static void test_field_paths(void **state)
{
	(void)state;
	assert_string_equal(scim_diff_field_path(SCIM_F_EMAIL),
	                    "emails[type eq \"work\"].value");
	assert_string_equal(scim_diff_field_path(SCIM_F_MANAGER), ENT ":manager");
	assert_string_equal(scim_diff_field_path(SCIM_F_GIVEN_NAME), "name.givenName");
	assert_string_equal(scim_diff_op_kind_name(SCIM_DIFF_OP_GROUP_REMOVE),
	                    "group_remove");
}

/* ---- plans ---- */

static void test_create_with_groups(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_plan_t p;
	scim_diff_group_t known[2] = {0};
	mk_desired(&d, "E1", "alovelace", LC_ACTIVE, "eng");
	mk_group(&known[0], "g-staff", "Staff",
	         SCIM_DIFF_GROUP_MARK "staff"); /* case differs */
	scim_diff_plan_init(&p);
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, known, 1, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 3);
	assert_int_equal(p.ops[0].kind, SCIM_DIFF_OP_CREATE);
	/* d.groups is sorted: dept-eng, staff. */
	assert_int_equal(p.ops[1].kind, SCIM_DIFF_OP_CREATE_GROUP);
	assert_string_equal(p.ops[1].group, "dept-eng");
	assert_int_equal(p.ops[2].kind, SCIM_DIFF_OP_GROUP_ADD);
	assert_string_equal(p.ops[2].group_id, "g-staff");
	assert_false(p.ops[2].claim);
	assert_null(p.user_id);
	assert_string_equal(p.want[SCIM_F_ACTIVE], "true");
	assert_int_equal(scim_diff_plan_requests(&p), 3);

	/* An unclaimed group (no externalId) is claimed by the add. */
	free(known[0].external_id);
	known[0].external_id = NULL;
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, known, 1, &p, NULL),
	                 0);
	assert_true(p.ops[2].claim);

	/* Another client's group of that name is not touched: conflict. */
	known[0].external_id = strdup("okta:123");
	id_err_t err = {0};
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, known, 1, &p, &err),
	                 ID_ECONFLICT);
	assert_non_null(strstr(err.msg, "g-staff"));
	assert_non_null(strstr(err.msg, "okta:123"));

	/* Two managed candidates: the lowest id wins, whatever the order. */
	mk_group(&known[1], "g-aaa", "staff", SCIM_DIFF_GROUP_MARK "staff");
	free(known[0].external_id);
	known[0].external_id = strdup(SCIM_DIFF_GROUP_MARK "staff");
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, known, 2, &p, NULL),
	                 0);
	assert_string_equal(find_op(&p, SCIM_DIFF_OP_GROUP_ADD, -1)->group_id, "g-aaa");

	scim_diff_group_fini(&known[0]);
	scim_diff_group_fini(&known[1]);
	scim_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

static void test_prestart_created_inactive(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_plan_t p;
	mk_desired(&d, "E1", "alovelace", LC_PENDING, "eng");
	scim_diff_plan_init(&p);
	/* PENDING: the hire is known, the account is not made yet. */
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, NULL, 0, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 0);
	d.state = LC_PRESTART;
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, NULL, 0, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 1);
	assert_int_equal(p.ops[0].kind, SCIM_DIFF_OP_CREATE);
	json_t *b = scim_diff_user_body((const char *const *)p.want, true);
	assert_true(json_is_false(json_object_get(b, "active")));
	json_decref(b);
	scim_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

static void test_no_create_when_disabled_or_deleted(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_plan_t p;
	scim_diff_plan_init(&p);
	mk_desired(&d, "E1", "alovelace", LC_DISABLED, "eng");
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, NULL, 0, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 0);
	d.state = LC_DELETED;
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, NULL, 0, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 0);
	scim_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

static void test_identical_is_empty(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_user_t u;
	scim_diff_plan_t p;
	scim_diff_group_t g1 = {0}, g2 = {0};
	mk_desired(&d, "E1", "alovelace", LC_ACTIVE, "eng");
	user_as_created(&d, "u1", "m1", &u);
	mk_group(&g1, "g1", "staff", SCIM_DIFF_GROUP_MARK "staff");
	mk_group(&g2, "g2", "DEPT-ENG", SCIM_DIFF_GROUP_MARK "dept-eng");
	scim_diff_user_add_group(&u, &g1);
	scim_diff_user_add_group(&u, &g2);
	scim_diff_plan_init(&p);
	d.manager_id = strdup("M1");
	assert_int_equal(scim_diff_compute(&ent_on, &d, &u, "m1", NULL, 0, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	assert_string_equal(p.user_id, "u1");
	assert_int_equal(scim_diff_plan_requests(&p), 0);
	scim_diff_group_fini(&g1);
	scim_diff_group_fini(&g2);
	scim_diff_plan_fini(&p);
	scim_diff_user_fini(&u);
	desired_identity_fini(&d);
}

static void test_update_only_changed_fields(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_user_t u;
	scim_diff_plan_t p;
	mk_desired(&d, "E1", "alovelace", LC_ACTIVE, "eng");
	for (size_t i = 0; i < d.ngroups; i++) /* memberships: another test's business */
		free(d.groups[i]);
	d.ngroups = 0;
	user_as_created(&d, "u1", NULL, &u);
	id_attrs_set(&d.attributes, "title", "Staff Engineer");
	id_attrs_remove(&d.attributes, "mail");
	id_attrs_set(&d.attributes, "uid", "alovelace2");
	scim_diff_plan_init(&p);
	assert_int_equal(scim_diff_compute(&ent_on, &d, &u, NULL, NULL, 0, &p, NULL), 0);
	assert_int_equal(p.nops, 3);
	const scim_diff_op_t *t = find_op(&p, SCIM_DIFF_OP_UPDATE, SCIM_F_TITLE);
	assert_non_null(t);
	assert_string_equal(t->old_value, "Engineer");
	assert_string_equal(t->new_value, "Staff Engineer");
	const scim_diff_op_t *m = find_op(&p, SCIM_DIFF_OP_UPDATE, SCIM_F_EMAIL);
	assert_non_null(m);
	assert_string_equal(m->old_value, "alovelace@example.com");
	assert_null(m->new_value);
	const scim_diff_op_t *n = find_op(&p, SCIM_DIFF_OP_UPDATE, SCIM_F_USER_NAME);
	assert_string_equal(n->new_value, "alovelace2");
	assert_int_equal(scim_diff_plan_requests(&p), 1); /* one PATCH */

	char *s = dumps(scim_diff_patch_body(&u, p.ops, p.nops));
	/* Field order, only changed paths, remove for the cleared mail. */
	assert_string_equal(
	    s, "{\"schemas\":[\"" SCIM_MSG_PATCH "\"],\"Operations\":["
	       "{\"op\":\"replace\",\"path\":\"userName\",\"value\":\"alovelace2\"},"
	       "{\"op\":\"remove\",\"path\":\"emails[type eq \\\"work\\\"]\"},"
	       "{\"op\":\"replace\",\"path\":\"title\",\"value\":\"Staff Engineer\"}]}");
	free(s);
	scim_diff_plan_fini(&p);
	scim_diff_user_fini(&u);
	desired_identity_fini(&d);
}

static void test_manager(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_user_t u;
	scim_diff_plan_t p;
	mk_desired(&d, "E1", "alovelace", LC_SUSPENDED, "eng");
	user_as_created(&d, "u1", "m-old", &u);
	scim_diff_plan_init(&p);
	d.manager_id = strdup("M2");
	/* Manager not provisioned: the field is left as it is. */
	assert_int_equal(scim_diff_compute(&ent_on, &d, &u, NULL, NULL, 0, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	/* Resolved: replaced with {value: id}. */
	assert_int_equal(scim_diff_compute(&ent_on, &d, &u, "m-new", NULL, 0, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 1);
	assert_int_equal(p.ops[0].field, SCIM_F_MANAGER);
	assert_string_equal(p.ops[0].old_value, "m-old");
	char *s = dumps(scim_diff_patch_body(&u, p.ops, p.nops));
	assert_non_null(strstr(s, "{\"op\":\"replace\",\"path\":\"" ENT
	                          ":manager\",\"value\":{\"value\":\"m-new\"}}"));
	free(s);
	/* No manager in HR any more: removed. */
	free(d.manager_id);
	d.manager_id = NULL;
	assert_int_equal(scim_diff_compute(&ent_on, &d, &u, NULL, NULL, 0, &p, NULL), 0);
	assert_int_equal(p.nops, 1);
	assert_null(p.ops[0].new_value);
	s = dumps(scim_diff_patch_body(&u, p.ops, p.nops));
	assert_non_null(strstr(s, "{\"op\":\"remove\",\"path\":\"" ENT ":manager\"}"));
	free(s);
	/* Without the extension nothing of it is compared. */
	assert_int_equal(scim_diff_compute(&ent_off, &d, &u, NULL, NULL, 0, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	scim_diff_plan_fini(&p);
	scim_diff_user_fini(&u);
	desired_identity_fini(&d);
}

static void test_disable_first_enable_last(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_user_t u;
	scim_diff_plan_t p;
	scim_diff_group_t g1 = {0}, g2 = {0}, other = {0};
	mk_desired(&d, "E1", "alovelace", LC_ACTIVE, "eng");
	user_as_created(&d, "u1", NULL, &u);
	mk_group(&g1, "g1", "staff", SCIM_DIFF_GROUP_MARK "staff");
	mk_group(&g2, "g2", "dept-eng", SCIM_DIFF_GROUP_MARK "dept-eng");
	mk_group(&other, "g9", "vpn-users", "ad:9");
	scim_diff_user_add_group(&u, &g1);
	scim_diff_user_add_group(&u, &g2);
	scim_diff_user_add_group(&u, &other);
	scim_diff_plan_init(&p);

	/* Leaver: active=false in the first request, then the managed groups
	 * are left; the unmanaged membership stays. */
	desired_identity_t dis;
	mk_desired(&dis, "E1", "alovelace", LC_DISABLED, "eng");
	assert_int_equal(scim_diff_compute(&ent_on, &dis, &u, NULL, NULL, 0, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 3);
	assert_int_equal(p.ops[0].kind, SCIM_DIFF_OP_DISABLE);
	assert_string_equal(p.ops[0].old_value, "true");
	assert_string_equal(p.ops[0].new_value, "false");
	assert_int_equal(p.ops[1].kind, SCIM_DIFF_OP_GROUP_REMOVE);
	assert_int_equal(p.ops[2].kind, SCIM_DIFF_OP_GROUP_REMOVE);
	assert_string_equal(p.ops[1].group_id, "g1");
	assert_string_equal(p.ops[2].group_id, "g2");
	char *s = dumps(scim_diff_patch_body(&u, p.ops, 1));
	assert_non_null(
	    strstr(s, "{\"op\":\"replace\",\"path\":\"active\",\"value\":false}"));
	free(s);

	/* Rehire with a title change: groups first, the User (title + enable)
	 * last, in one request. */
	scim_diff_user_t off;
	user_as_created(&dis, "u1", NULL, &off);
	id_attrs_set(&d.attributes, "title", "Lead");
	scim_diff_group_t known[2];
	known[0] = g1;
	known[1] = g2;
	assert_int_equal(scim_diff_compute(&ent_on, &d, &off, NULL, known, 2, &p, NULL),
	                 0);
	assert_int_equal(p.nops, 4);
	assert_int_equal(p.ops[0].kind, SCIM_DIFF_OP_GROUP_ADD);
	assert_int_equal(p.ops[1].kind, SCIM_DIFF_OP_GROUP_ADD);
	assert_int_equal(p.ops[2].kind, SCIM_DIFF_OP_UPDATE);
	assert_int_equal(p.ops[2].field, SCIM_F_TITLE);
	const scim_diff_op_t *en = find_op(&p, SCIM_DIFF_OP_ENABLE, SCIM_F_ACTIVE);
	assert_non_null(en);
	assert_int_equal(op_index(&p, en), 3);
	assert_int_equal(scim_diff_plan_requests(&p), 3);

	scim_diff_user_fini(&off);
	desired_identity_fini(&dis);
	scim_diff_group_fini(&g1);
	scim_diff_group_fini(&g2);
	scim_diff_group_fini(&other);
	scim_diff_plan_fini(&p);
	scim_diff_user_fini(&u);
	desired_identity_fini(&d);
}

static void test_mover_groups(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_user_t u;
	scim_diff_plan_t p;
	scim_diff_group_t g1 = {0}, g2 = {0}, other = {0};
	mk_desired(&d, "E1", "alovelace", LC_ACTIVE, "sales");
	user_as_created(&d, "u1", NULL, &u);
	mk_group(&g1, "g1", "staff", SCIM_DIFF_GROUP_MARK "staff");
	mk_group(&g2, "g2", "dept-eng", SCIM_DIFF_GROUP_MARK "dept-eng");
	mk_group(&other, "g9", "dept-eng-readers", NULL);
	scim_diff_user_add_group(&u, &g1);
	scim_diff_user_add_group(&u, &g2);
	scim_diff_user_add_group(&u, &other);
	scim_diff_plan_init(&p);
	assert_int_equal(scim_diff_compute(&ent_on, &d, &u, NULL, NULL, 0, &p, NULL), 0);
	assert_int_equal(p.nops, 2);
	assert_int_equal(p.ops[0].kind, SCIM_DIFF_OP_CREATE_GROUP);
	assert_string_equal(p.ops[0].group, "dept-sales");
	assert_int_equal(p.ops[1].kind, SCIM_DIFF_OP_GROUP_REMOVE);
	assert_string_equal(p.ops[1].group, "dept-eng");
	assert_string_equal(p.ops[1].old_value, "g2");
	scim_diff_group_fini(&g1);
	scim_diff_group_fini(&g2);
	scim_diff_group_fini(&other);
	scim_diff_plan_fini(&p);
	scim_diff_user_fini(&u);
	desired_identity_fini(&d);
}

static void test_deleted_leaves_every_group(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_user_t u;
	scim_diff_plan_t p;
	scim_diff_group_t g1 = {0}, other = {0};
	mk_desired(&d, "E1", "alovelace", LC_DISABLED, "eng");
	user_as_created(&d, "u1", NULL, &u);
	mk_group(&g1, "g1", "staff", SCIM_DIFF_GROUP_MARK "staff");
	mk_group(&other, "g9", "vpn", "ad:9");
	scim_diff_user_add_group(&u, &g1);
	scim_diff_user_add_group(&u, &other);
	d.state = LC_DELETED;
	scim_diff_plan_init(&p);
	assert_int_equal(scim_diff_compute(&ent_on, &d, &u, NULL, NULL, 0, &p, NULL), 0);
	assert_int_equal(p.nops, 3);
	assert_int_equal(p.ops[0].kind, SCIM_DIFF_OP_GROUP_REMOVE);
	assert_int_equal(p.ops[1].kind, SCIM_DIFF_OP_GROUP_REMOVE);
	assert_string_equal(p.ops[1].group_id, "g9");
	assert_int_equal(p.ops[2].kind, SCIM_DIFF_OP_DELETE);
	assert_string_equal(p.ops[2].old_value, "u1");
	scim_diff_group_fini(&g1);
	scim_diff_group_fini(&other);
	scim_diff_plan_fini(&p);
	scim_diff_user_fini(&u);
	desired_identity_fini(&d);
}

static void test_invalid_input(void **state)
{
	(void)state;
	desired_identity_t d;
	scim_diff_plan_t p;
	id_err_t err = {0};
	scim_diff_plan_init(&p);
	mk_desired(&d, "E1", "alovelace", LC_ACTIVE, "eng");
	id_attrs_remove(&d.attributes, "uid");
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, NULL, 0, &p, &err),
	                 ID_EINVALID);
	assert_non_null(strstr(err.msg, "E1"));
	id_attrs_set(&d.attributes, "uid", "a");
	id_attrs_set(&d.attributes, "title", "\xff\xfe");
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, NULL, 0, &p, &err),
	                 ID_EINVALID);
	assert_non_null(strstr(err.msg, "title"));
	free(d.employee_id);
	d.employee_id = NULL;
	assert_int_equal(scim_diff_compute(&ent_on, &d, NULL, NULL, NULL, 0, &p, NULL),
	                 ID_EINVALID);
	scim_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

/* ---- bodies and parsing ---- */

static void test_user_body(void **state)
{
	(void)state;
	desired_identity_t d;
	const char *f[SCIM_F_COUNT];
	mk_desired(&d, "E1", "alovelace", LC_ACTIVE, "eng");
	scim_diff_desired_fields(&ent_on, &d, "m1", f);
	char *s = dumps(scim_diff_user_body(f, true));
	assert_string_equal(
	    s,
	    "{\"schemas\":[\"" SCIM_SCHEMA_USER "\",\"" ENT "\"],"
	    "\"userName\":\"alovelace\",\"externalId\":\"E1\",\"displayName\":\"Ada L.\","
	    "\"emails\":[{\"value\":\"alovelace@example.com\",\"type\":\"work\","
	    "\"primary\":true}],\"title\":\"Engineer\",\"userType\":\"full_time\","
	    "\"active\":true,\"name\":{\"givenName\":\"Ada\",\"familyName\":\"Lovelace\","
	    "\"formatted\":\"Ada Lovelace\"},\"" ENT "\":{\"employeeNumber\":\"E1\","
	    "\"department\":\"eng\",\"manager\":{\"value\":\"m1\"}}}");
	free(s);
	scim_diff_desired_fields(&ent_off, &d, "m1", f);
	s = dumps(scim_diff_user_body(f, false));
	assert_null(strstr(s, ENT));
	free(s);
	desired_identity_fini(&d);
}

static void test_user_from_json(void **state)
{
	(void)state;
	scim_diff_user_t u;
	id_err_t err = {0};
	json_t *r = json_loads(
	    "{\"id\":\"u7\",\"meta\":{\"version\":\"W/\\\"9\\\"\"},\"userName\":\"x\","
	    "\"title\":42,\"emails\":[{\"value\":\"h@x\",\"type\":\"home\",\"primary\":"
	    "true},"
	    "{\"value\":\"w@x\",\"type\":\"Work\"}],\"" ENT
	    "\":{\"manager\":{\"value\":\"m9\"}}}",
	    0, NULL);
	assert_non_null(r);
	scim_diff_user_init(&u);
	assert_int_equal(scim_diff_user_from_json(r, &u, NULL), 0);
	assert_string_equal(u.id, "u7");
	assert_string_equal(u.version, "W/\"9\"");
	assert_null(u.fields[SCIM_F_TITLE]); /* not a string: absent */
	assert_null(u.fields[SCIM_F_ACTIVE]);
	assert_string_equal(u.fields[SCIM_F_EMAIL], "w@x");
	assert_true(u.has_work_email);
	assert_true(u.has_primary_email);
	assert_string_equal(u.fields[SCIM_F_MANAGER], "m9");
	json_decref(r);
	r = json_pack("{s:s}", "userName", "noid");
	assert_int_equal(scim_diff_user_from_json(r, &u, &err), ID_EPARSE);
	json_decref(r);
	scim_diff_user_fini(&u);
}

static void test_email_add_when_no_work_email(void **state)
{
	(void)state;
	scim_diff_user_t u;
	json_t *r =
	    json_loads("{\"id\":\"u1\",\"emails\":[{\"value\":\"h@x\",\"type\":\"home\","
	               "\"primary\":true}]}",
	               0, NULL);
	scim_diff_user_init(&u);
	assert_int_equal(scim_diff_user_from_json(r, &u, NULL), 0);
	scim_diff_op_t op = {
	    .kind = SCIM_DIFF_OP_UPDATE, .field = SCIM_F_EMAIL, .new_value = "w@x"};
	char *s = dumps(scim_diff_patch_body(&u, &op, 1));
	/* Added as a new element, not primary: the home address already is. */
	assert_non_null(
	    strstr(s, "{\"op\":\"add\",\"path\":\"emails\",\"value\":[{\"value\":"
	              "\"w@x\",\"type\":\"work\"}]}"));
	free(s);
	s = dumps(scim_diff_put_body(&u, &op, 1));
	assert_non_null(
	    strstr(s, "\"emails\":[{\"value\":\"h@x\",\"type\":\"home\",\"primary\":"
	              "true},{\"value\":\"w@x\",\"type\":\"work\"}]"));
	free(s);
	json_decref(r);
	scim_diff_user_fini(&u);
}

static void test_put_body_keeps_unmanaged(void **state)
{
	(void)state;
	scim_diff_user_t u;
	json_t *r =
	    json_loads("{\"schemas\":[\"" SCIM_SCHEMA_USER
	               "\"],\"id\":\"u1\",\"meta\":{\"version\":\"v\"},"
	               "\"userName\":\"a\",\"name\":{\"givenName\":\"A\"},"
	               "\"phoneNumbers\":[{\"value\":"
	               "\"555\"}],\"groups\":[{\"value\":\"g\"}],\"active\":true}",
	               0, NULL);
	scim_diff_user_init(&u);
	assert_int_equal(scim_diff_user_from_json(r, &u, NULL), 0);
	scim_diff_op_t ops[3] = {
	    {.kind = SCIM_DIFF_OP_UPDATE, .field = SCIM_F_GIVEN_NAME, .old_value = "A"},
	    {.kind = SCIM_DIFF_OP_UPDATE, .field = SCIM_F_DEPARTMENT, .new_value = "eng"},
	    {.kind = SCIM_DIFF_OP_DISABLE, .field = SCIM_F_ACTIVE, .new_value = "false"},
	};
	char *s = dumps(scim_diff_put_body(&u, ops, 3));
	assert_string_equal(
	    s, "{\"schemas\":[\"" SCIM_SCHEMA_USER "\",\"" ENT "\"],"
	       "\"id\":\"u1\",\"userName\":\"a\",\"phoneNumbers\":[{\"value\":"
	       "\"555\"}],\"active\":false,\"" ENT "\":{\"department\":\"eng\"}}");
	free(s);
	json_decref(r);
	scim_diff_user_fini(&u);
}

static void test_group_bodies_and_filters(void **state)
{
	(void)state;
	char *s = dumps(scim_diff_group_body("staff", "bulkId:user"));
	assert_string_equal(s,
	                    "{\"schemas\":[\"" SCIM_SCHEMA_GROUP "\"],\"displayName\":"
	                    "\"staff\",\"externalId\":\"" SCIM_DIFF_GROUP_MARK "staff\","
	                    "\"members\":[{\"value\":\"bulkId:user\"}]}");
	free(s);
	s = dumps(scim_diff_member_add_body("staff", "u1", true));
	assert_string_equal(s,
	                    "{\"schemas\":[\"" SCIM_MSG_PATCH "\"],\"Operations\":["
	                    "{\"op\":\"add\",\"path\":\"members\",\"value\":[{\"value\":"
	                    "\"u1\"}]},{\"op\":\"replace\",\"path\":\"externalId\","
	                    "\"value\":\"" SCIM_DIFF_GROUP_MARK "staff\"}]}");
	free(s);
	s = dumps(scim_diff_member_remove_body("u\"1"));
	assert_string_equal(
	    s, "{\"schemas\":[\"" SCIM_MSG_PATCH "\"],\"Operations\":["
	       "{\"op\":\"remove\",\"path\":\"members[value eq \\\"u\\\\\\\"1"
	       "\\\"]\"}]}");
	free(s);

	id_buf_t b = ID_BUF_INIT;
	assert_int_equal(scim_diff_filter_eq(&b, "userName", "a\"b\\c"), 0);
	id_buf_append_u8(&b, 0);
	assert_string_equal((const char *)b.data, "userName eq \"a\\\"b\\\\c\"");
	id_buf_reset(&b);
	assert_int_equal(scim_diff_filter_eq(&b, "userName", "\xc3\xa9"), 0);
	id_buf_append_u8(&b, 0);
	assert_string_equal((const char *)b.data, "userName eq \"\xc3\xa9\"");
	id_buf_reset(&b);
	assert_int_equal(scim_diff_filter_eq(&b, "userName", "\xff"), ID_EINVALID);
	id_buf_fini(&b);
}

/*
 * Fixpoint: walk a lifecycle, applying each plan to a model of the User with
 * the PUT body builder (what a server ends up with) and of its memberships;
 * every second diff must be empty.
 */
static void model_apply(const scim_diff_plan_t *p, scim_diff_user_t *u, bool *exists,
                        const desired_identity_t *d)
{
	for (size_t i = 0; i < p->nops; i++) {
		const scim_diff_op_t *op = &p->ops[i];
		if (op->kind == SCIM_DIFF_OP_CREATE) {
			json_t *b =
			    scim_diff_user_body((const char *const *)p->want, true);
			json_object_set_new(b, "id", json_string("u1"));
			scim_diff_user_fini(u);
			assert_int_equal(scim_diff_user_from_json(b, u, NULL), 0);
			json_decref(b);
			*exists = true;
		} else if (op->kind == SCIM_DIFF_OP_UPDATE ||
		           op->kind == SCIM_DIFF_OP_DISABLE ||
		           op->kind == SCIM_DIFF_OP_ENABLE) {
			size_t j = i;
			while (j < p->nops && (p->ops[j].kind == SCIM_DIFF_OP_UPDATE ||
			                       p->ops[j].kind == SCIM_DIFF_OP_DISABLE ||
			                       p->ops[j].kind == SCIM_DIFF_OP_ENABLE))
				j++;
			json_t *b = scim_diff_put_body(u, &p->ops[i], j - i);
			assert_non_null(b);
			scim_diff_group_t *gs = u->groups;
			size_t ng = u->ngroups;
			u->groups = NULL;
			u->ngroups = 0;
			assert_int_equal(scim_diff_user_from_json(b, u, NULL), 0);
			u->groups = gs;
			u->ngroups = ng;
			json_decref(b);
			i = j - 1;
		} else if (op->kind == SCIM_DIFF_OP_CREATE_GROUP ||
		           op->kind == SCIM_DIFF_OP_GROUP_ADD) {
			char mark[128];
			snprintf(mark, sizeof(mark), "%s%s", SCIM_DIFF_GROUP_MARK,
			         op->group);
			scim_diff_group_t g = {op->group, op->group, mark};
			assert_int_equal(scim_diff_user_add_group(u, &g), 0);
		} else if (op->kind == SCIM_DIFF_OP_GROUP_REMOVE) {
			for (size_t k = 0; k < u->ngroups; k++)
				if (strcmp(u->groups[k].id, op->group_id) == 0) {
					scim_diff_group_fini(&u->groups[k]);
					u->groups[k] = u->groups[--u->ngroups];
					break;
				}
		} else if (op->kind == SCIM_DIFF_OP_DELETE) {
			scim_diff_user_fini(u);
			*exists = false;
		}
	}
	(void)d;
}

static void test_lifecycle_converges(void **state)
{
	(void)state;
	scim_diff_user_t u;
	scim_diff_plan_t p;
	bool exists = false;
	scim_diff_user_init(&u);
	scim_diff_plan_init(&p);
	/* nops: the exact plan length, or -1 for "some". */
	struct {
		lifecycle_state_t st;
		const char *uid, *dept, *title, *mgr;
		int nops;
	} steps[] = {
	    {LC_PENDING, "alovelace", "eng", "Engineer", NULL, 0},
	    {LC_PRESTART, "alovelace", "eng", "Engineer", NULL, -1},
	    {LC_ACTIVE, "alovelace", "eng", "Engineer", "m1", -1},
	    {LC_ACTIVE, "aking", "sales", "Lead", "m2", -1},
	    /* Start date moved out: only active=false, the rest waits. */
	    {LC_PENDING, "bking", "ops", "Other", NULL, 1},
	    {LC_SUSPENDED, "aking", "sales", "Lead", NULL, -1},
	    /* SUSPENDED → DISABLED is no change at all in SCIM. */
	    {LC_DISABLED, "aking", "sales", "Lead", NULL, 0},
	    {LC_ACTIVE, "aking", "ops", NULL, "m1", -1},
	    {LC_DELETED, "aking", "ops", NULL, NULL, -1},
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		desired_identity_t d;
		mk_desired(&d, "E1", steps[i].uid, steps[i].st, steps[i].dept);
		if (steps[i].title)
			id_attrs_set(&d.attributes, "title", steps[i].title);
		else
			id_attrs_remove(&d.attributes, "title");
		if (steps[i].mgr)
			d.manager_id = strdup("M");
		/* The model server knows every group the plan created or joined. */
		scim_diff_group_t *known = u.groups;
		size_t nknown = u.ngroups;
		assert_int_equal(scim_diff_compute(&ent_on, &d, exists ? &u : NULL,
		                                   steps[i].mgr, known, nknown, &p, NULL),
		                 0);
		if (steps[i].nops >= 0 ? p.nops != (size_t)steps[i].nops : p.nops == 0)
			fail_msg("step %zu: %zu ops", i, p.nops);
		if (steps[i].st == LC_PENDING && p.nops == 1) {
			assert_int_equal(p.ops[0].kind, SCIM_DIFF_OP_DISABLE);
			assert_string_equal(p.ops[0].new_value, "false");
		}
		model_apply(&p, &u, &exists, &d);
		if (steps[i].st == LC_PENDING && exists) {
			assert_string_equal(u.fields[SCIM_F_USER_NAME], "aking");
			assert_string_equal(u.fields[SCIM_F_TITLE], "Lead");
			assert_string_equal(u.fields[SCIM_F_ACTIVE], "false");
		}
		assert_int_equal(scim_diff_compute(&ent_on, &d, exists ? &u : NULL,
		                                   steps[i].mgr, u.groups, u.ngroups, &p,
		                                   NULL),
		                 0);
		if (p.nops != 0)
			fail_msg("step %zu: %zu ops left, first %s %s", i, p.nops,
			         scim_diff_op_kind_name(p.ops[0].kind),
			         scim_diff_field_path(p.ops[0].field));
		desired_identity_fini(&d);
	}
	assert_false(exists);
	scim_diff_plan_fini(&p);
	scim_diff_user_fini(&u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_desired_fields),
	    cmocka_unit_test(test_field_paths),
	    cmocka_unit_test(test_create_with_groups),
	    cmocka_unit_test(test_prestart_created_inactive),
	    cmocka_unit_test(test_no_create_when_disabled_or_deleted),
	    cmocka_unit_test(test_identical_is_empty),
	    cmocka_unit_test(test_update_only_changed_fields),
	    cmocka_unit_test(test_manager),
	    cmocka_unit_test(test_disable_first_enable_last),
	    cmocka_unit_test(test_mover_groups),
	    cmocka_unit_test(test_deleted_leaves_every_group),
	    cmocka_unit_test(test_invalid_input),
	    cmocka_unit_test(test_user_body),
	    cmocka_unit_test(test_user_from_json),
	    cmocka_unit_test(test_email_add_when_no_work_email),
	    cmocka_unit_test(test_put_body_keeps_unmanaged),
	    cmocka_unit_test(test_group_bodies_and_filters),
	    cmocka_unit_test(test_lifecycle_converges),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
