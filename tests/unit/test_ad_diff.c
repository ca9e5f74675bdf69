/*
 * test_ad_diff.c — the pure half of the Active Directory sink: plans for
 * joiners, movers and leavers, the CN fallback, the ACCOUNTDISABLE bit,
 * accountExpires conversion, sAMAccountName/CN shaping, and the initial
 * password helpers.  Every scenario also checks convergence: applying the
 * plan to a model object and diffing again leaves nothing to do.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sinks/ad_diff.h"
#include "sinks/ldap_diff.h"

#define BASE   "DC=example,DC=test"
#define PEOPLE "OU=people," BASE
#define GROUPS "OU=groups," BASE
#define NEVER  AD_DIFF_NEVER_EXPIRES

static const ad_diff_layout_t layout = {PEOPLE, GROUPS, "example.test"};

typedef struct fx {
	desired_identity_t d;
	ad_diff_entry_t e; /* the model object */
	bool exists;
	ad_diff_plan_t p;
} fx_t;

static void mk_desired(desired_identity_t *d, const char *id, const char *uid,
                       const char *first, const char *last, const char *dept,
                       lifecycle_state_t state)
{
	char buf[256];
	desired_identity_fini(d);
	d->employee_id = strdup(id);
	d->version = 1;
	d->state = state;
	id_attrs_set(&d->attributes, "uid", uid);
	snprintf(buf, sizeof(buf), "%s %s", first, last);
	id_attrs_set(&d->attributes, "cn", buf);
	id_attrs_set(&d->attributes, "displayName", buf);
	id_attrs_set(&d->attributes, "givenName", first);
	id_attrs_set(&d->attributes, "sn", last);
	snprintf(buf, sizeof(buf), "%s@example.com", uid);
	id_attrs_set(&d->attributes, "mail", buf);
	id_attrs_set(&d->attributes, "title", "Engineer");
	id_attrs_set(&d->attributes, "departmentNumber", dept);
	id_attrs_set(&d->attributes, "employeeNumber", id);
	id_attrs_set(&d->attributes, "employeeType", "full_time");
	id_attrs_set(&d->attributes, "l", "Berlin");
	snprintf(buf, sizeof(buf), "ou=%s", dept);
	d->container = strdup(buf);
	if (state == LC_ACTIVE) {
		desired_identity_add_group(d, "staff");
		desired_identity_add_group(d, "dept-sales");
	}
}

static void clear_groups(desired_identity_t *d)
{
	for (size_t i = 0; i < d->ngroups; i++)
		free(d->groups[i]);
	free(d->groups);
	d->groups = NULL;
	d->ngroups = 0;
}

static const char *attr(const ad_diff_entry_t *e, const char *name)
{
	for (size_t i = 0; i < e->attrs.len; i++)
		if (strcasecmp(e->attrs.items[i].key, name) == 0)
			return e->attrs.items[i].value;
	return NULL;
}

static const ad_diff_op_t *find_op(const ad_diff_plan_t *p, ad_diff_op_kind_t k,
                                   const char *attribute)
{
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].kind == k &&
		    (attribute == NULL || (p->ops[i].attribute &&
		                           strcmp(p->ops[i].attribute, attribute) == 0)))
			return &p->ops[i];
	return NULL;
}

static void member_remove(ad_diff_entry_t *e, const char *dn)
{
	for (size_t i = 0; i < e->nmember_of; i++)
		if (ldap_diff_dn_equal(e->member_of[i], dn)) {
			free(e->member_of[i]);
			e->member_of[i] = e->member_of[--e->nmember_of];
			return;
		}
}

/*
 * Plays plan onto the model the way AD would (the executor's CN fallback is
 * taken when use_alt is set).  Ops are checked to come in plan order.
 */
static void model_apply(ad_diff_entry_t *e, bool *exists, const ad_diff_plan_t *p,
                        bool use_alt)
{
	int last = -1;
	for (size_t i = 0; i < p->nops; i++) {
		const ad_diff_op_t *op = &p->ops[i];
		assert_true((int)op->kind >= last);
		last = (int)op->kind;
		switch (op->kind) {
		case AD_DIFF_OP_ENSURE_OU:
			break;
		case AD_DIFF_OP_ADD:
			assert_false(*exists);
			ad_diff_entry_fini(e);
			ad_diff_entry_set_dn(e,
			                     use_alt && op->alt_dn ? op->alt_dn : op->dn);
			for (size_t j = 0; j < op->attrs.len; j++) {
				const char *k = op->attrs.items[j].key;
				const char *v = op->attrs.items[j].value;
				if (strcmp(k, "userAccountControl") == 0) {
					e->uac = (uint32_t)strtoul(v, NULL, 10);
					e->has_uac = true;
				} else {
					id_attrs_set(&e->attrs, k, v);
				}
			}
			*exists = true;
			break;
		case AD_DIFF_OP_DISABLE:
		case AD_DIFF_OP_ENABLE:
			assert_string_equal(op->attribute, "userAccountControl");
			e->uac = (uint32_t)strtoul(op->new_value, NULL, 10);
			break;
		case AD_DIFF_OP_MODRDN:
			assert_true(ldap_diff_dn_equal(op->dn, e->dn));
			ad_diff_entry_set_dn(e, use_alt && op->alt_dn ? op->alt_dn
			                                              : op->new_value);
			break;
		case AD_DIFF_OP_MODIFY:
			if (op->new_value)
				id_attrs_set(&e->attrs, op->attribute, op->new_value);
			else
				assert_true(id_attrs_remove(&e->attrs, op->attribute));
			break;
		case AD_DIFF_OP_GROUP_ADD:
			ad_diff_entry_add_member_of(e, op->dn);
			break;
		case AD_DIFF_OP_GROUP_REMOVE:
			member_remove(e, op->dn);
			break;
		case AD_DIFF_OP_DELETE:
			ad_diff_entry_fini(e);
			*exists = false;
			break;
		default:
			fail_msg("unknown op %d", (int)op->kind);
		}
	}
}

/* Plans, applies to the model, and insists a second diff is empty. */
static void converge(fx_t *f, const char *manager_dn, bool use_alt)
{
	id_err_t err = {0};
	if (ad_diff_compute(&layout, &f->d, f->exists ? &f->e : NULL, manager_dn, &f->p,
	                    &err) != 0)
		fail_msg("compute: %s", err.msg);
	model_apply(&f->e, &f->exists, &f->p, use_alt);
	if (ad_diff_compute(&layout, &f->d, f->exists ? &f->e : NULL, manager_dn, &f->p,
	                    &err) != 0)
		fail_msg("compute again: %s", err.msg);
	for (size_t i = 0; i < f->p.nops; i++)
		print_message("left over: %s %s %s\n",
		              ad_diff_op_kind_name(f->p.ops[i].kind), f->p.ops[i].dn,
		              f->p.ops[i].attribute);
	assert_int_equal(f->p.nops, 0);
}

static void plan(fx_t *f, const char *manager_dn)
{
	id_err_t err = {0};
	if (ad_diff_compute(&layout, &f->d, f->exists ? &f->e : NULL, manager_dn, &f->p,
	                    &err) != 0)
		fail_msg("compute: %s", err.msg);
}

static int fx_setup(void **state)
{
	fx_t *f = calloc(1, sizeof(*f));
	desired_identity_init(&f->d);
	ad_diff_entry_init(&f->e);
	ad_diff_plan_init(&f->p);
	mk_desired(&f->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	/* Start from the object the desired identity creates. */
	converge(f, NULL, false);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	fx_t *f = *state;
	desired_identity_fini(&f->d);
	ad_diff_entry_fini(&f->e);
	ad_diff_plan_fini(&f->p);
	free(f);
	return 0;
}

/* ---- joiners ---- */

static void test_create(void **state)
{
	(void)state;
	desired_identity_t d;
	ad_diff_plan_t p;
	desired_identity_init(&d);
	ad_diff_plan_init(&p);
	mk_desired(&d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 4);
	assert_int_equal(p.ops[0].kind, AD_DIFF_OP_ENSURE_OU);
	assert_string_equal(p.ops[0].dn, "OU=Sales," PEOPLE);
	assert_string_equal(p.ops[0].new_value, "Sales");
	const ad_diff_op_t *add = &p.ops[1];
	assert_int_equal(add->kind, AD_DIFF_OP_ADD);
	assert_string_equal(add->dn, "CN=Ann Smith,OU=Sales," PEOPLE);
	assert_string_equal(add->alt_dn, "CN=Ann Smith (asmith),OU=Sales," PEOPLE);
	assert_string_equal(p.dn, add->dn);
	assert_string_equal(p.sam, "asmith");
	const id_attrs_t *a = &add->attrs;
	assert_string_equal(id_attrs_get(a, "sAMAccountName"), "asmith");
	assert_string_equal(id_attrs_get(a, "userPrincipalName"), "asmith@example.test");
	assert_string_equal(id_attrs_get(a, "givenName"), "Ann");
	assert_string_equal(id_attrs_get(a, "sn"), "Smith");
	assert_string_equal(id_attrs_get(a, "displayName"), "Ann Smith");
	assert_string_equal(id_attrs_get(a, "mail"), "asmith@example.com");
	assert_string_equal(id_attrs_get(a, "title"), "Engineer");
	assert_string_equal(id_attrs_get(a, "department"), "Sales");
	assert_string_equal(id_attrs_get(a, "employeeID"), "E1001");
	assert_string_equal(id_attrs_get(a, "employeeNumber"), "E1001");
	assert_string_equal(id_attrs_get(a, "employeeType"), "full_time");
	assert_string_equal(id_attrs_get(a, "l"), "Berlin");
	assert_string_equal(id_attrs_get(a, "accountExpires"), NEVER);
	assert_string_equal(id_attrs_get(a, "userAccountControl"), "512");
	/* LDAP names that AD does not have are never sent. */
	assert_null(id_attrs_get(a, "uid"));
	assert_null(id_attrs_get(a, "cn"));
	assert_null(id_attrs_get(a, "departmentNumber"));
	assert_null(id_attrs_get(a, "manager"));
	assert_int_equal(p.ops[2].kind, AD_DIFF_OP_GROUP_ADD);
	assert_true(ldap_diff_dn_equal(p.ops[2].dn, "CN=dept-sales," GROUPS));
	assert_string_equal(p.ops[2].new_value, add->dn);
	assert_true(ldap_diff_dn_equal(p.ops[3].dn, "CN=staff," GROUPS));

	/* Pre-start hires are created disabled, in the same add. */
	d.state = LC_PRESTART;
	clear_groups(&d);
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 2);
	assert_string_equal(id_attrs_get(&p.ops[1].attrs, "userAccountControl"), "514");
	assert_string_equal(id_attrs_get(&p.ops[1].attrs, "accountExpires"), NEVER);

	/* Pending, disabled or deleted employees without an object: nothing. */
	d.state = LC_PENDING;
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	d.state = LC_DISABLED;
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	d.state = LC_DELETED;
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	desired_identity_fini(&d);
	ad_diff_plan_fini(&p);
}

static void test_create_nested_and_raw_containers(void **state)
{
	(void)state;
	desired_identity_t d;
	ad_diff_plan_t p;
	desired_identity_init(&d);
	ad_diff_plan_init(&p);
	mk_desired(&d, "E7", "bo", "Bo", "Li", "Sales", LC_ACTIVE);
	free(d.container);
	d.container = strdup("ou=Berlin,ou=Sales");
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	/* Outermost first. */
	assert_string_equal(p.ops[0].dn, "OU=Sales," PEOPLE);
	assert_string_equal(p.ops[1].dn, "OU=Berlin,OU=Sales," PEOPLE);
	assert_string_equal(p.ops[2].dn, "CN=Bo Li,OU=Berlin,OU=Sales," PEOPLE);

	/* A raw department name is one OU, escaped. */
	free(d.container);
	d.container = strdup("ou=R&D, Europe");
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_string_equal(p.ops[0].dn, "OU=R&D\\, Europe," PEOPLE);
	assert_string_equal(p.ops[0].new_value, "R&D, Europe");
	assert_string_equal(p.ops[1].dn, "CN=Bo Li,OU=R&D\\, Europe," PEOPLE);

	/* No container: directly below people. */
	free(d.container);
	d.container = NULL;
	id_attrs_set(&d.attributes, "cn", "Li, Bo");
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.ops[0].kind, AD_DIFF_OP_ADD);
	assert_string_equal(p.ops[0].dn, "CN=Li\\, Bo," PEOPLE);

	free(d.container);
	d.container = strdup("cn=Sales");
	id_err_t err = {0};
	assert_int_equal(ad_diff_compute(&layout, &d, NULL, NULL, &p, &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "cn=Sales"));
	assert_int_equal(p.nops, 0);
	desired_identity_fini(&d);
	ad_diff_plan_fini(&p);
}

/* ---- steady state and movers ---- */

static void test_noop(void **state)
{
	fx_t *f = *state;
	assert_true(f->exists);
	assert_string_equal(f->e.dn, "CN=Ann Smith,OU=Sales," PEOPLE);
	plan(f, NULL);
	assert_int_equal(f->p.nops, 0);
	/* AD's own spelling of DNs and the other "never" do not matter. */
	ad_diff_entry_set_dn(&f->e, "cn=ann smith,ou=sales,ou=People,dc=EXAMPLE,dc=test");
	id_attrs_set(&f->e.attrs, "accountExpires", "0");
	for (size_t i = 0; i < f->e.nmember_of; i++) {
		free(f->e.member_of[i]);
		f->e.member_of[i] =
		    strdup(i ? "CN=STAFF,OU=Groups,DC=example,DC=test"
		             : "CN=Dept-Sales,OU=groups,DC=Example,DC=test");
	}
	plan(f, NULL);
	assert_int_equal(f->p.nops, 0);
}

static void test_update_attributes(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "title", "Lead Engineer");
	id_attrs_set(&f->d.attributes, "l", "");
	id_attrs_set(&f->d.attributes, "department", "Sales EMEA");
	/* Somebody else's attribute on the object is not ours. */
	id_attrs_set(&f->e.attrs, "telephoneNumber", "+49 30 1");
	plan(f, NULL);
	assert_int_equal(f->p.nops, 3);
	const ad_diff_op_t *t = find_op(&f->p, AD_DIFF_OP_MODIFY, "title");
	assert_non_null(t);
	assert_string_equal(t->old_value, "Engineer");
	assert_string_equal(t->new_value, "Lead Engineer");
	const ad_diff_op_t *l = find_op(&f->p, AD_DIFF_OP_MODIFY, "l");
	assert_string_equal(l->old_value, "Berlin");
	assert_null(l->new_value);
	const ad_diff_op_t *dep = find_op(&f->p, AD_DIFF_OP_MODIFY, "department");
	assert_string_equal(dep->new_value, "Sales EMEA");
	converge(f, NULL, false);
	assert_string_equal(attr(&f->e, "telephoneNumber"), "+49 30 1");
}

static void test_rename(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "cn", "Ann Jones");
	id_attrs_set(&f->d.attributes, "sn", "Jones");
	id_attrs_set(&f->d.attributes, "uid", "ajones");
	plan(f, NULL);
	const ad_diff_op_t *r = &f->p.ops[0];
	assert_int_equal(r->kind, AD_DIFF_OP_MODRDN);
	assert_string_equal(r->dn, "CN=Ann Smith,OU=Sales," PEOPLE);
	assert_string_equal(r->new_rdn, "CN=Ann Jones");
	assert_null(r->new_superior);
	assert_string_equal(r->new_value, "CN=Ann Jones,OU=Sales," PEOPLE);
	assert_string_equal(r->alt_rdn, "CN=Ann Jones (ajones)");
	assert_string_equal(r->alt_dn, "CN=Ann Jones (ajones),OU=Sales," PEOPLE);
	const ad_diff_op_t *sam = find_op(&f->p, AD_DIFF_OP_MODIFY, "sAMAccountName");
	assert_string_equal(sam->old_value, "asmith");
	assert_string_equal(sam->new_value, "ajones");
	const ad_diff_op_t *upn = find_op(&f->p, AD_DIFF_OP_MODIFY, "userPrincipalName");
	assert_string_equal(upn->new_value, "ajones@example.test");
	/* Attribute changes name the object by its new DN. */
	assert_string_equal(sam->dn, r->new_value);
	assert_null(find_op(&f->p, AD_DIFF_OP_ENSURE_OU, NULL));
	converge(f, NULL, false);
	assert_string_equal(f->e.dn, "CN=Ann Jones,OU=Sales," PEOPLE);
}

static void test_move_keeps_cn(void **state)
{
	fx_t *f = *state;
	free(f->d.container);
	f->d.container = strdup("ou=Marketing");
	id_attrs_set(&f->d.attributes, "departmentNumber", "Marketing");
	plan(f, NULL);
	assert_int_equal(f->p.ops[0].kind, AD_DIFF_OP_ENSURE_OU);
	assert_string_equal(f->p.ops[0].dn, "OU=Marketing," PEOPLE);
	const ad_diff_op_t *r = &f->p.ops[1];
	assert_int_equal(r->kind, AD_DIFF_OP_MODRDN);
	assert_string_equal(r->new_rdn, "CN=Ann Smith");
	assert_string_equal(r->new_superior, "OU=Marketing," PEOPLE);
	assert_string_equal(r->alt_dn, "CN=Ann Smith (asmith),OU=Marketing," PEOPLE);
	assert_non_null(find_op(&f->p, AD_DIFF_OP_MODIFY, "department"));
	converge(f, NULL, false);
	assert_string_equal(f->e.dn, "CN=Ann Smith,OU=Marketing," PEOPLE);
}

static void test_cn_fallback_is_stable(void **state)
{
	fx_t *f = *state;
	/* The object got "<cn> (<sam>)" because another Ann Smith was there. */
	ad_diff_entry_set_dn(&f->e, "CN=Ann Smith (asmith),OU=Sales," PEOPLE);
	plan(f, NULL);
	assert_int_equal(f->p.nops, 0);
	assert_string_equal(f->p.dn, "CN=Ann Smith (asmith),OU=Sales," PEOPLE);
	/* Moving it keeps that CN, with no further fallback. */
	free(f->d.container);
	f->d.container = strdup("ou=Ops");
	plan(f, NULL);
	const ad_diff_op_t *r = find_op(&f->p, AD_DIFF_OP_MODRDN, NULL);
	assert_string_equal(r->new_rdn, "CN=Ann Smith (asmith)");
	assert_null(r->alt_rdn);
	assert_null(r->alt_dn);
	converge(f, NULL, false);
	/* A real rename goes to the plain CN again (or its fallback). */
	id_attrs_set(&f->d.attributes, "cn", "Ann Berg");
	plan(f, NULL);
	r = find_op(&f->p, AD_DIFF_OP_MODRDN, NULL);
	assert_string_equal(r->new_rdn, "CN=Ann Berg");
	assert_string_equal(r->alt_rdn, "CN=Ann Berg (asmith)");
	converge(f, NULL, true);
	assert_string_equal(f->e.dn, "CN=Ann Berg (asmith),OU=Ops," PEOPLE);
}

static void test_create_with_fallback_converges(void **state)
{
	(void)state;
	fx_t f;
	memset(&f, 0, sizeof(f));
	desired_identity_init(&f.d);
	ad_diff_entry_init(&f.e);
	ad_diff_plan_init(&f.p);
	mk_desired(&f.d, "E2", "asmith2", "Ann", "Smith", "Sales", LC_ACTIVE);
	converge(&f, NULL, true);
	assert_string_equal(f.e.dn, "CN=Ann Smith (asmith2),OU=Sales," PEOPLE);
	desired_identity_fini(&f.d);
	ad_diff_entry_fini(&f.e);
	ad_diff_plan_fini(&f.p);
}

/* ---- groups ---- */

static void test_groups(void **state)
{
	fx_t *f = *state;
	clear_groups(&f->d);
	desired_identity_add_group(&f->d, "staff");
	desired_identity_add_group(&f->d, "vpn-users");
	/* A membership outside groups_dn is someone else's. */
	ad_diff_entry_add_member_of(&f->e, "CN=Domain Admins,CN=Users," BASE);
	ad_diff_entry_add_member_of(&f->e, "CN=old,OU=nested,OU=groups," BASE);
	plan(f, NULL);
	assert_int_equal(f->p.nops, 2);
	assert_int_equal(f->p.ops[0].kind, AD_DIFF_OP_GROUP_ADD);
	assert_string_equal(f->p.ops[0].attribute, "vpn-users");
	assert_int_equal(f->p.ops[1].kind, AD_DIFF_OP_GROUP_REMOVE);
	assert_string_equal(f->p.ops[1].attribute, "dept-sales");
	assert_string_equal(f->p.ops[1].old_value, f->e.dn);
	converge(f, NULL, false);
	assert_int_equal(f->e.nmember_of, 4);
}

/* ---- lifecycle ---- */

static void test_disable_enable_keep_other_bits(void **state)
{
	fx_t *f = *state;
	f->e.uac = 0x10200; /* NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD */
	f->d.state = LC_SUSPENDED;
	clear_groups(&f->d);
	id_attrs_set(&f->d.attributes, "cn", "Ann Smith-Berg");
	plan(f, NULL);
	/* Disable first, on the DN before the rename. */
	const ad_diff_op_t *dis = &f->p.ops[0];
	assert_int_equal(dis->kind, AD_DIFF_OP_DISABLE);
	assert_string_equal(dis->dn, "CN=Ann Smith,OU=Sales," PEOPLE);
	assert_string_equal(dis->attribute, "userAccountControl");
	assert_string_equal(dis->old_value, "66048");
	assert_string_equal(dis->new_value, "66050");
	assert_int_equal(f->p.ops[1].kind, AD_DIFF_OP_MODRDN);
	assert_non_null(find_op(&f->p, AD_DIFF_OP_GROUP_REMOVE, "staff"));
	assert_null(find_op(&f->p, AD_DIFF_OP_ENABLE, NULL));
	converge(f, NULL, false);
	assert_int_equal(f->e.uac, 0x10202);

	/* Enabling comes last. */
	f->d.state = LC_ACTIVE;
	desired_identity_add_group(&f->d, "staff");
	id_attrs_set(&f->d.attributes, "title", "Returning Engineer");
	plan(f, NULL);
	assert_int_equal(f->p.nops, 3);
	const ad_diff_op_t *en = &f->p.ops[2];
	assert_int_equal(en->kind, AD_DIFF_OP_ENABLE);
	assert_string_equal(en->old_value, "66050");
	assert_string_equal(en->new_value, "66048");
	converge(f, NULL, false);
	assert_int_equal(f->e.uac, 0x10200);

	/* DISABLED and PRESTART shut the account too. */
	f->d.state = LC_DISABLED;
	plan(f, NULL);
	assert_non_null(find_op(&f->p, AD_DIFF_OP_DISABLE, NULL));
	f->d.state = LC_PRESTART;
	plan(f, NULL);
	assert_non_null(find_op(&f->p, AD_DIFF_OP_DISABLE, NULL));
	/* PENDING only disables: the rename, title and groups wait for the
	 * pre-start window. */
	f->d.state = LC_PENDING;
	plan(f, NULL);
	assert_int_equal(f->p.nops, 1);
	assert_int_equal(f->p.ops[0].kind, AD_DIFF_OP_DISABLE);
	assert_string_equal(f->p.ops[0].new_value, "66050");
	assert_string_equal(f->p.dn, f->e.dn);
	converge(f, NULL, false);
	assert_int_equal(f->e.uac, 0x10202);
	assert_string_equal(attr(&f->e, "title"), "Returning Engineer");
	assert_int_equal(f->e.nmember_of, 1);
}

/* A termination without a date: accountExpires is the moment the DISABLED
 * version took effect, and it stays put across later versions. */
static void test_disabled_expires_from_termination(void **state)
{
	fx_t *f = *state;
	f->d.state = LC_DISABLED;
	clear_groups(&f->d);
	f->d.effective_at = INT64_C(1743422400000); /* 2025-03-31T12:00:00Z */
	plan(f, NULL);
	const ad_diff_op_t *ex = find_op(&f->p, AD_DIFF_OP_MODIFY, "accountExpires");
	assert_non_null(ex);
	assert_string_equal(ex->old_value, NEVER);
	assert_string_equal(ex->new_value, "133878960000000000");
	/* Disabled before anything else is written. */
	assert_int_equal(f->p.ops[0].kind, AD_DIFF_OP_DISABLE);
	converge(f, NULL, false);
	assert_string_equal(attr(&f->e, "accountExpires"), "133878960000000000");
	/* A later version of the leaver (new title, later effective time). */
	f->d.effective_at += 86400000;
	id_attrs_set(&f->d.attributes, "title", "Former Engineer");
	plan(f, NULL);
	assert_int_equal(f->p.nops, 1);
	assert_string_equal(f->p.ops[0].attribute, "title");
	converge(f, NULL, false);
	/* Rehired: the expiry is lifted along with the disable. */
	f->d.state = LC_ACTIVE;
	plan(f, NULL);
	ex = find_op(&f->p, AD_DIFF_OP_MODIFY, "accountExpires");
	assert_non_null(ex);
	assert_string_equal(ex->new_value, NEVER);
	assert_non_null(find_op(&f->p, AD_DIFF_OP_ENABLE, NULL));
	converge(f, NULL, false);
	assert_int_equal(f->e.uac, 512);
}

static void test_delete(void **state)
{
	fx_t *f = *state;
	f->d.state = LC_DELETED;
	plan(f, NULL);
	/* AD drops the group links of a deleted object itself. */
	assert_int_equal(f->p.nops, 1);
	assert_int_equal(f->p.ops[0].kind, AD_DIFF_OP_DELETE);
	assert_string_equal(f->p.ops[0].dn, f->e.dn);
	assert_string_equal(f->p.ops[0].old_value, f->e.dn);
	converge(f, NULL, false);
	assert_false(f->exists);
}

static void test_manager(void **state)
{
	fx_t *f = *state;
	const char *boss = "CN=Bob Boss,OU=Sales," PEOPLE;
	f->d.manager_id = strdup("E0001");
	/* Manager without an object yet: left for a later apply. */
	plan(f, NULL);
	assert_int_equal(f->p.nops, 0);
	plan(f, boss);
	assert_int_equal(f->p.nops, 1);
	assert_string_equal(f->p.ops[0].attribute, "manager");
	assert_null(f->p.ops[0].old_value);
	assert_string_equal(f->p.ops[0].new_value, boss);
	converge(f, boss, false);
	/* AD's spelling of the same DN is the same manager. */
	plan(f, "cn=bob boss,ou=sales,ou=people,dc=example,dc=test");
	assert_int_equal(f->p.nops, 0);
	/* Pending again (manager's object went away): left alone, not removed. */
	plan(f, NULL);
	assert_int_equal(f->p.nops, 0);
	/* No manager in HR any more: removed. */
	free(f->d.manager_id);
	f->d.manager_id = NULL;
	plan(f, NULL);
	assert_int_equal(f->p.nops, 1);
	assert_null(f->p.ops[0].new_value);
	converge(f, NULL, false);
}

static void test_account_expires(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "terminationDate", "2025-03-31");
	plan(f, NULL);
	assert_int_equal(f->p.nops, 1);
	assert_string_equal(f->p.ops[0].attribute, "accountExpires");
	assert_string_equal(f->p.ops[0].old_value, NEVER);
	/* Usable through the last day: expires 2025-04-01 00:00 UTC. */
	assert_string_equal(f->p.ops[0].new_value, "133879392000000000");
	converge(f, NULL, false);
	/* An explicit accountExpires wins over the termination date. */
	id_attrs_set(&f->d.attributes, "accountExpires", "never");
	plan(f, NULL);
	assert_string_equal(f->p.ops[0].new_value, NEVER);
	converge(f, NULL, false);
	/* Rehire: the date is gone, so the expiry is lifted. */
	id_attrs_set(&f->d.attributes, "accountExpires", "2024-02-29");
	converge(f, NULL, false);
	assert_string_equal(attr(&f->e, "accountExpires"), "133537248000000000");
	id_attrs_remove(&f->d.attributes, "accountExpires");
	id_attrs_remove(&f->d.attributes, "terminationDate");
	plan(f, NULL);
	assert_string_equal(f->p.ops[0].new_value, NEVER);

	char out[24];
	id_err_t err = {0};
	assert_int_equal(ad_diff_account_expires("1999-12-31", out, NULL), 0);
	assert_string_equal(out, "125911584000000000");
	assert_int_equal(ad_diff_account_expires("0", out, NULL), 0);
	assert_string_equal(out, NEVER);
	assert_int_equal(ad_diff_account_expires("133879392000000000", out, NULL), 0);
	assert_string_equal(out, "133879392000000000");
	assert_int_equal(ad_diff_account_expires(NULL, out, NULL), 0);
	assert_string_equal(out, NEVER);
	const char *bad[] = {"2025-02-29",   "2025-13-01",           "2025-1-01",
	                     "+025-01-01",   "99999999999999999999", "tomorrow",
	                     "2025-04-01T00"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		assert_int_equal(ad_diff_account_expires(bad[i], out, &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "2025-04-01T00"));

	/* A bad value is refused before anything is planned. */
	id_attrs_set(&f->d.attributes, "accountExpires", "soon");
	assert_int_equal(ad_diff_compute(&layout, &f->d, &f->e, NULL, &f->p, &err),
	                 ID_EINVALID);
	assert_non_null(strstr(err.msg, "E1001"));
	assert_int_equal(f->p.nops, 0);
}

static void test_lifecycle_converges(void **state)
{
	(void)state;
	fx_t f;
	memset(&f, 0, sizeof(f));
	desired_identity_init(&f.d);
	ad_diff_entry_init(&f.e);
	ad_diff_plan_init(&f.p);
	mk_desired(&f.d, "E5", "cdoe", "Cy", "Doe", "Sales", LC_PENDING);
	converge(&f, NULL, false);
	assert_false(f.exists);
	f.d.state = LC_PRESTART;
	converge(&f, NULL, false);
	assert_int_equal(f.e.uac, 514);
	f.d.state = LC_ACTIVE;
	desired_identity_add_group(&f.d, "staff");
	converge(&f, "CN=Boss,OU=Sales," PEOPLE, false);
	assert_int_equal(f.e.uac, 512);
	free(f.d.container);
	f.d.container = strdup("ou=Berlin,ou=Ops");
	id_attrs_set(&f.d.attributes, "cn", "Cy Doe-Roe");
	converge(&f, "CN=Boss,OU=Sales," PEOPLE, false);
	assert_string_equal(f.e.dn, "CN=Cy Doe-Roe,OU=Berlin,OU=Ops," PEOPLE);
	f.d.state = LC_SUSPENDED; /* on leave: disabled, groups as desired */
	converge(&f, "CN=Boss,OU=Sales," PEOPLE, false);
	assert_int_equal(f.e.uac, 514);
	assert_int_equal(f.e.nmember_of, 1);
	assert_string_equal(attr(&f.e, "accountExpires"), NEVER);
	f.d.state = LC_ACTIVE;
	converge(&f, "CN=Boss,OU=Sales," PEOPLE, false);
	assert_int_equal(f.e.uac, 512);
	f.d.state = LC_DISABLED;
	f.d.effective_at = INT64_C(1743422400000);
	clear_groups(&f.d);
	converge(&f, NULL, false);
	assert_int_equal(f.e.uac, 514);
	assert_int_equal(f.e.nmember_of, 0);
	assert_string_equal(attr(&f.e, "accountExpires"), "133878960000000000");
	f.d.state = LC_DELETED;
	converge(&f, NULL, false);
	assert_false(f.exists);
	desired_identity_fini(&f.d);
	ad_diff_entry_fini(&f.e);
	ad_diff_plan_fini(&f.p);
}

/* ---- shaping helpers ---- */

static void test_sam_and_cn(void **state)
{
	(void)state;
	desired_identity_t d;
	desired_identity_init(&d);
	d.employee_id = strdup("E1");
	id_attrs_set(&d.attributes, "uid", "abcdefghijklmnopqrstuvwxyz");
	char *s = ad_diff_sam_account_name(&d);
	assert_string_equal(s, "abcdefghijklmnopqrst");
	free(s);
	/* An explicit sAMAccountName wins; forbidden characters go. */
	id_attrs_set(&d.attributes, "sAMAccountName", " j.doe@corp/x ");
	s = ad_diff_sam_account_name(&d);
	assert_string_equal(s, "j.doecorpx");
	free(s);
	/* Cut on characters, never inside one. */
	id_attrs_set(&d.attributes, "sAMAccountName",
	             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	             "\xc3\xa9\xc3\xa9");
	s = ad_diff_sam_account_name(&d);
	assert_int_equal(strlen(s), 40);
	free(s);
	id_attrs_set(&d.attributes, "sAMAccountName", "@@@");
	id_attrs_remove(&d.attributes, "uid");
	assert_null(ad_diff_sam_account_name(&d));

	/* CN: cn, else displayName, else uid; 64 characters at most. */
	assert_null(ad_diff_cn(&d));
	id_attrs_set(&d.attributes, "uid", "zed");
	s = ad_diff_cn(&d);
	assert_string_equal(s, "zed");
	free(s);
	id_attrs_set(&d.attributes, "displayName", "Zed Zee");
	s = ad_diff_cn(&d);
	assert_string_equal(s, "Zed Zee");
	free(s);
	char longname[100];
	memset(longname, 'x', 99);
	longname[99] = '\0';
	id_attrs_set(&d.attributes, "cn", longname);
	s = ad_diff_cn(&d);
	assert_int_equal(strlen(s), AD_DIFF_CN_MAX);
	char *alt = ad_diff_cn_alt(s, "abcdefghijklmnopqrst");
	assert_int_equal(strlen(alt), AD_DIFF_CN_MAX);
	assert_string_equal(alt + AD_DIFF_CN_MAX - 23, " (abcdefghijklmnopqrst)");
	free(alt);
	free(s);
	alt = ad_diff_cn_alt("Ann Smith", "asmith");
	assert_string_equal(alt, "Ann Smith (asmith)");
	free(alt);

	/* Nothing to name an object with: refused when one must exist. */
	desired_identity_t e;
	ad_diff_plan_t p;
	desired_identity_init(&e);
	ad_diff_plan_init(&p);
	e.employee_id = strdup("E2");
	e.state = LC_ACTIVE;
	id_err_t err = {0};
	assert_int_equal(ad_diff_compute(&layout, &e, NULL, NULL, &p, &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "E2"));
	free(e.employee_id);
	e.employee_id = NULL;
	assert_int_equal(ad_diff_compute(&layout, &e, NULL, NULL, &p, &err), ID_EINVALID);
	desired_identity_fini(&e);
	desired_identity_fini(&d);
	ad_diff_plan_fini(&p);
}

static void test_upn(void **state)
{
	fx_t *f = *state;
	/* An explicit userPrincipalName wins over uid@suffix. */
	id_attrs_set(&f->d.attributes, "userPrincipalName", "ann.smith@corp.example");
	plan(f, NULL);
	assert_int_equal(f->p.nops, 1);
	assert_string_equal(f->p.ops[0].new_value, "ann.smith@corp.example");
	/* Without a suffix nor an explicit value, the UPN is left alone. */
	id_attrs_remove(&f->d.attributes, "userPrincipalName");
	ad_diff_layout_t nosuffix = {PEOPLE, GROUPS, NULL};
	assert_int_equal(ad_diff_compute(&nosuffix, &f->d, &f->e, NULL, &f->p, NULL), 0);
	assert_int_equal(f->p.nops, 0);
}

static void test_passwords(void **state)
{
	(void)state;
	unsigned char rnd[AD_DIFF_PASSWORD_LEN];
	char pw[AD_DIFF_PASSWORD_LEN + 1];
	for (size_t i = 0; i < sizeof(rnd); i++)
		rnd[i] = (unsigned char)(i * 13 + 64 * i);
	ad_diff_password_from_bytes(rnd, pw);
	assert_int_equal(strlen(pw), AD_DIFF_PASSWORD_LEN);
	assert_string_equal(pw, "ANan0BObo1CPcp2DQdq3");
	/* Every byte value maps onto the 64 symbols (no bias, no gaps). */
	int seen[256] = {0};
	for (int b = 0; b < 256; b++) {
		memset(rnd, b, sizeof(rnd));
		ad_diff_password_from_bytes(rnd, pw);
		seen[(unsigned char)pw[0]]++;
	}
	int distinct = 0;
	for (int i = 0; i < 256; i++)
		if (seen[i]) {
			assert_int_equal(seen[i], 4);
			distinct++;
		}
	assert_int_equal(distinct, 64);

	assert_true(ad_diff_password_complex("Abcdef1234", NULL, NULL));
	assert_true(ad_diff_password_complex("abc-def.12", NULL, NULL));
	assert_false(ad_diff_password_complex("abcdefghij12", NULL, NULL));
	assert_false(ad_diff_password_complex("ABCDEFGHIJ", NULL, NULL));
	assert_false(ad_diff_password_complex(NULL, NULL, NULL));
	/* The account name or a part of the display name inside: refused. */
	assert_false(ad_diff_password_complex("xxASMITH7y", "asmith", "Ann Smith"));
	assert_false(ad_diff_password_complex("Q9smiTHq", "zz", "Ann Smith"));
	assert_true(ad_diff_password_complex("Q9annxq", "zz", "An Li"));
	assert_false(ad_diff_password_complex("Q9-Berg-x", "zz", "Anna-Berg, Jo"));
	assert_true(ad_diff_password_complex("Q9-Bxrg-x", "ab", "Anna-Berg, Jo"));
}

static void test_unicode_pwd(void **state)
{
	(void)state;
	id_buf_t b = ID_BUF_INIT;
	assert_int_equal(ad_diff_unicode_pwd("aB1", &b), 0);
	const unsigned char want[] = {'"', 0, 'a', 0, 'B', 0, '1', 0, '"', 0};
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	/* é (U+00E9), € (U+20AC), 😀 (U+1F600: a surrogate pair). */
	assert_int_equal(ad_diff_unicode_pwd("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", &b),
	                 0);
	const unsigned char want2[] = {'"',  0,    0xe9, 0,    0xac, 0x20,
	                               0x3d, 0xd8, 0x00, 0xde, '"',  0};
	assert_int_equal(b.len, sizeof(want2));
	assert_memory_equal(b.data, want2, sizeof(want2));
	assert_int_equal(ad_diff_unicode_pwd("\xc3", &b), ID_EINVALID);
	assert_int_equal(ad_diff_unicode_pwd("\xc0\xaf", &b), ID_EINVALID); /* overlong */
	assert_int_equal(ad_diff_unicode_pwd("\xed\xa0\x80", &b),
	                 ID_EINVALID); /* surrogate */
	assert_int_equal(ad_diff_unicode_pwd("", &b), 0);
	assert_int_equal(b.len, 4);
	id_buf_fini(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create),
	    cmocka_unit_test(test_create_nested_and_raw_containers),
	    cmocka_unit_test_setup_teardown(test_noop, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_update_attributes, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rename, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_move_keeps_cn, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cn_fallback_is_stable, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test(test_create_with_fallback_converges),
	    cmocka_unit_test_setup_teardown(test_groups, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_disable_enable_keep_other_bits, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_disabled_expires_from_termination,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_delete, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_manager, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_account_expires, fx_setup, fx_teardown),
	    cmocka_unit_test(test_lifecycle_converges),
	    cmocka_unit_test(test_sam_and_cn),
	    cmocka_unit_test_setup_teardown(test_upn, fx_setup, fx_teardown),
	    cmocka_unit_test(test_passwords),
	    cmocka_unit_test(test_unicode_pwd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
