/*
 * test_ldap_diff.c — the pure LDAP diff: which operations, in which order,
 * on which DNs, for each joiner/mover/leaver change; DN escaping and
 * comparison; and the fixpoint property (apply a plan to a model entry,
 * diff again: nothing left to do).  With posixAccount on: the attributes a
 * new entry gets, a uidNumber that is never changed, homeDirectory across a
 * rename, posixAccount added to an older entry, and posix off leaving
 * today's plans exactly as they were.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sinks/ldap_diff.h"

#define PEOPLE "ou=people,dc=example,dc=com"
#define GROUPS "ou=groups,dc=example,dc=com"

static const ldap_diff_layout_t layout = {PEOPLE, GROUPS, NULL};

/* A desired identity as the default mapping would produce it. */
static void mk_desired(desired_identity_t *d, const char *id, const char *uid,
                       const char *first, const char *last, const char *dept,
                       lifecycle_state_t state)
{
	char buf[256];
	desired_identity_init(d);
	d->employee_id = strdup(id);
	d->version = 1;
	d->state = state;
	id_attrs_set(&d->attributes, "uid", uid);
	snprintf(buf, sizeof(buf), "%s %s", first, last);
	id_attrs_set(&d->attributes, "cn", buf);
	id_attrs_set(&d->attributes, "displayName", buf);
	id_attrs_set(&d->attributes, "sn", last);
	id_attrs_set(&d->attributes, "givenName", first);
	snprintf(buf, sizeof(buf), "%s@example.com", uid);
	id_attrs_set(&d->attributes, "mail", buf);
	id_attrs_set(&d->attributes, "employeeNumber", id);
	id_attrs_set(&d->attributes, "employeeType", "full_time");
	id_attrs_set(&d->attributes, "title", "Engineer");
	id_attrs_set(&d->attributes, "l", "Berlin");
	id_attrs_set(&d->attributes, "departmentNumber", dept);
	snprintf(buf, sizeof(buf), "ou=%s", dept);
	d->container = strdup(buf);
	if (state == LC_ACTIVE) {
		desired_identity_add_group(d, "staff");
		char slug[128];
		size_t j = 0;
		for (const char *p = dept; *p && j + 1 < sizeof(slug); p++)
			if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
				slug[j++] = *p;
			else if (*p >= 'A' && *p <= 'Z')
				slug[j++] = (char)(*p - 'A' + 'a');
		slug[j] = '\0';
		snprintf(buf, sizeof(buf), "dept-%s", slug);
		desired_identity_add_group(d, buf);
	}
}

static void set_container(desired_identity_t *d, const char *c)
{
	free(d->container);
	d->container = c ? strdup(c) : NULL;
}

/* Applies a plan to a model of the directory entry, the way slapd would. */
static void model_apply(const ldap_diff_plan_t *p, ldap_diff_entry_t *e, bool *exists)
{
	for (size_t i = 0; i < p->nops; i++) {
		const ldap_diff_op_t *op = &p->ops[i];
		switch (op->kind) {
		case LDAP_DIFF_OP_ENSURE_OU:
			break;
		case LDAP_DIFF_OP_ADD:
			assert_false(*exists);
			ldap_diff_entry_fini(e);
			ldap_diff_entry_set_dn(e, op->dn);
			for (size_t j = 0; j < op->attrs.len; j++) {
				if (strcmp(op->attrs.items[j].key, "objectClass") == 0)
					e->posix = strcmp(op->attrs.items[j].value,
					                  LDAP_DIFF_POSIX_CLASS) == 0;
				else if (strcmp(op->attrs.items[j].key,
				                LDAP_DIFF_LOCK_ATTR) == 0)
					ldap_diff_entry_set_lock(
					    e, op->attrs.items[j].value);
				else
					id_attrs_set(&e->attrs, op->attrs.items[j].key,
					             op->attrs.items[j].value);
			}
			*exists = true;
			break;
		case LDAP_DIFF_OP_DISABLE:
		case LDAP_DIFF_OP_ENABLE:
			assert_true(*exists);
			assert_true(ldap_diff_dn_equal(op->dn, e->dn));
			if (op->new_superior != NULL) { /* disable by move */
				ldap_diff_entry_set_dn(e, op->new_value);
				/* refint rewrites member values: memberOf stays. */
				if (strncmp(op->new_rdn, "uid=", 4) == 0)
					id_attrs_set(&e->attrs, "uid", op->new_rdn + 4);
			} else {
				ldap_diff_entry_set_lock(e, op->new_value);
			}
			break;
		case LDAP_DIFF_OP_MODRDN:
			assert_true(ldap_diff_dn_equal(op->dn, e->dn));
			ldap_diff_entry_set_dn(e, op->new_value);
			if (strncmp(op->new_rdn, "uid=", 4) == 0)
				id_attrs_set(&e->attrs, "uid", op->new_rdn + 4);
			break;
		case LDAP_DIFF_OP_MODIFY:
			assert_true(ldap_diff_dn_equal(op->dn, e->dn));
			if (strcmp(op->attribute, "objectClass") == 0) {
				/* A class added, never replaced. */
				assert_string_equal(op->new_value, LDAP_DIFF_POSIX_CLASS);
				assert_false(e->posix);
				e->posix = true;
			} else if (op->new_value)
				id_attrs_set(&e->attrs, op->attribute, op->new_value);
			else
				assert_true(id_attrs_remove(&e->attrs, op->attribute));
			break;
		case LDAP_DIFF_OP_GROUP_ADD:
			assert_true(ldap_diff_dn_equal(op->new_value, e->dn));
			ldap_diff_entry_add_member_of(e, op->dn);
			break;
		case LDAP_DIFF_OP_GROUP_REMOVE: {
			assert_true(ldap_diff_dn_equal(op->old_value, e->dn));
			size_t k = 0;
			for (size_t j = 0; j < e->nmember_of; j++) {
				if (ldap_diff_dn_equal(e->member_of[j], op->dn))
					free(e->member_of[j]);
				else
					e->member_of[k++] = e->member_of[j];
			}
			assert_true(k < e->nmember_of);
			e->nmember_of = k;
			break;
		}
		case LDAP_DIFF_OP_DELETE:
			ldap_diff_entry_fini(e);
			*exists = false;
			break;
		default:
			fail();
		}
	}
}

/* Diff, apply to the model, diff again: the second plan must be empty. */
static void converge(const desired_identity_t *d, ldap_diff_entry_t *e, bool *exists,
                     const char *mgr)
{
	ldap_diff_plan_t p, again;
	ldap_diff_plan_init(&p);
	ldap_diff_plan_init(&again);
	assert_int_equal(ldap_diff_compute(&layout, d, *exists ? e : NULL, mgr, &p, NULL),
	                 0);
	model_apply(&p, e, exists);
	assert_int_equal(
	    ldap_diff_compute(&layout, d, *exists ? e : NULL, mgr, &again, NULL), 0);
	assert_int_equal(again.nops, 0);
	ldap_diff_plan_fini(&p);
	ldap_diff_plan_fini(&again);
}

static const ldap_diff_op_t *find_op(const ldap_diff_plan_t *p, ldap_diff_op_kind_t k,
                                     const char *attribute)
{
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].kind == k &&
		    (attribute == NULL || (p->ops[i].attribute &&
		                           strcmp(p->ops[i].attribute, attribute) == 0)))
			return &p->ops[i];
	return NULL;
}

/* Fixture: Ann Smith in Sales, created and converged in the model. */
typedef struct fx {
	desired_identity_t d;
	ldap_diff_entry_t e;
	bool exists;
	ldap_diff_plan_t p;
} fx_t;

static int fx_setup(void **state)
{
	fx_t *f = calloc(1, sizeof(*f));
	mk_desired(&f->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	ldap_diff_entry_init(&f->e);
	ldap_diff_plan_init(&f->p);
	converge(&f->d, &f->e, &f->exists, NULL);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	fx_t *f = *state;
	desired_identity_fini(&f->d);
	ldap_diff_entry_fini(&f->e);
	ldap_diff_plan_fini(&f->p);
	free(f);
	return 0;
}

static void plan(fx_t *f)
{
	assert_int_equal(ldap_diff_compute(&layout, &f->d, f->exists ? &f->e : NULL, NULL,
	                                   &f->p, NULL),
	                 0);
}

static void test_create(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_plan_t p;
	mk_desired(&d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	ldap_diff_plan_init(&p);
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);

	assert_int_equal(p.nops, 4);
	assert_int_equal(p.ops[0].kind, LDAP_DIFF_OP_ENSURE_OU);
	assert_string_equal(p.ops[0].dn, "ou=Sales," PEOPLE);
	assert_string_equal(p.ops[0].new_value, "Sales");
	assert_int_equal(p.ops[1].kind, LDAP_DIFF_OP_ADD);
	assert_string_equal(p.ops[1].dn, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(p.dn, "uid=asmith,ou=Sales," PEOPLE);
	const id_attrs_t *a = &p.ops[1].attrs;
	assert_string_equal(id_attrs_get(a, "uid"), "asmith");
	assert_string_equal(id_attrs_get(a, "cn"), "Ann Smith");
	assert_string_equal(id_attrs_get(a, "sn"), "Smith");
	assert_string_equal(id_attrs_get(a, "mail"), "asmith@example.com");
	assert_string_equal(id_attrs_get(a, "employeeNumber"), "E1001");
	assert_string_equal(id_attrs_get(a, "departmentNumber"), "Sales");
	assert_false(id_attrs_has(a, LDAP_DIFF_LOCK_ATTR)); /* ACTIVE: unlocked */
	assert_false(id_attrs_has(a, "manager"));
	assert_int_equal(a->len, 11);
	/* Groups in desired (sorted) order, each naming the new entry. */
	assert_int_equal(p.ops[2].kind, LDAP_DIFF_OP_GROUP_ADD);
	assert_string_equal(p.ops[2].dn, "cn=dept-sales," GROUPS);
	assert_string_equal(p.ops[2].attribute, "dept-sales");
	assert_string_equal(p.ops[2].new_value, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(p.ops[3].dn, "cn=staff," GROUPS);
	assert_string_equal(ldap_diff_op_kind_name(p.ops[3].kind), "group_add");
	assert_string_equal(ldap_diff_op_kind_name(p.ops[1].kind), "add");
	assert_string_equal(ldap_diff_op_kind_name(p.ops[0].kind), "create_ou");

	ldap_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

static void test_create_prestart_is_locked_in_the_add(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_plan_t p;
	mk_desired(&d, "E1", "bb", "B", "B", "Ops", LC_PRESTART);
	ldap_diff_plan_init(&p);
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	const ldap_diff_op_t *add = find_op(&p, LDAP_DIFF_OP_ADD, NULL);
	assert_non_null(add);
	assert_string_equal(id_attrs_get(&add->attrs, LDAP_DIFF_LOCK_ATTR),
	                    LDAP_DIFF_LOCK_VALUE);
	assert_null(find_op(&p, LDAP_DIFF_OP_GROUP_ADD, NULL)); /* no groups yet */
	ldap_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

static void test_pending_creates_nothing(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_plan_t p;
	mk_desired(&d, "E1", "bb", "B", "B", "Ops", LC_PENDING);
	ldap_diff_plan_init(&p);
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	assert_null(p.dn);
	ldap_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

/* PENDING over an existing entry (a rehire before the pre-start window):
 * the entry is locked and otherwise left exactly as it is. */
static void test_pending_existing_is_only_locked(void **state)
{
	fx_t *f = *state;
	f->d.state = LC_PENDING;
	for (size_t i = 0; i < f->d.ngroups; i++)
		free(f->d.groups[i]);
	f->d.ngroups = 0;
	id_attrs_set(&f->d.attributes, "title", "Future Title");
	set_container(&f->d, "ou=Elsewhere");
	plan(f);
	assert_int_equal(f->p.nops, 1);
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_DISABLE);
	assert_string_equal(f->p.ops[0].dn, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(f->p.ops[0].new_value, LDAP_DIFF_LOCK_VALUE);
	assert_string_equal(f->p.dn, "uid=asmith,ou=Sales," PEOPLE);
	model_apply(&f->p, &f->e, &f->exists);
	plan(f);
	assert_int_equal(f->p.nops, 0); /* locked: nothing more to do */
	assert_int_equal(f->e.nmember_of, 2);
	assert_string_equal(id_attrs_get(&f->e.attrs, "title"), "Engineer");
}

/* SUSPENDED: locked, and the desired groups stay authoritative — the
 * memberships it lists are kept, the others go. */
static void test_suspended_keeps_desired_groups(void **state)
{
	fx_t *f = *state;
	f->d.state = LC_SUSPENDED;
	plan(f);
	assert_int_equal(f->p.nops, 1);
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_DISABLE);
	converge(&f->d, &f->e, &f->exists, NULL);
	assert_int_equal(f->e.nmember_of, 2);
	/* The leave policy drops the department group: only that one goes. */
	for (size_t i = 0; i < f->d.ngroups; i++)
		free(f->d.groups[i]);
	f->d.ngroups = 0;
	desired_identity_add_group(&f->d, "staff");
	plan(f);
	assert_int_equal(f->p.nops, 1);
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_GROUP_REMOVE);
	assert_string_equal(f->p.ops[0].attribute, "dept-sales");
	converge(&f->d, &f->e, &f->exists, NULL);
	assert_int_equal(f->e.nmember_of, 1);
	assert_string_equal(f->e.lock_time, LDAP_DIFF_LOCK_VALUE);
}

#define DISABLED "ou=disabled,dc=example,dc=com"

/* Disable by move: the entry goes below the disabled OU and comes back. */
static void test_disable_by_move(void **state)
{
	fx_t *f = *state;
	const ldap_diff_layout_t mv = {PEOPLE, GROUPS, DISABLED};
	ldap_diff_plan_t p;
	ldap_diff_plan_init(&p);
	f->d.state = LC_SUSPENDED;
	assert_int_equal(ldap_diff_compute(&mv, &f->d, &f->e, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 2);
	assert_int_equal(p.ops[0].kind, LDAP_DIFF_OP_ENSURE_OU);
	assert_string_equal(p.ops[0].dn, DISABLED);
	assert_string_equal(p.ops[0].new_value, "disabled");
	const ldap_diff_op_t *dis = &p.ops[1];
	assert_int_equal(dis->kind, LDAP_DIFF_OP_DISABLE);
	assert_string_equal(dis->dn, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(dis->attribute, "dn");
	assert_string_equal(dis->new_value, "uid=asmith," DISABLED);
	assert_string_equal(dis->new_rdn, "uid=asmith");
	assert_string_equal(dis->new_superior, DISABLED);
	assert_string_equal(p.dn, "uid=asmith," DISABLED);
	assert_null(find_op(&p, LDAP_DIFF_OP_MODRDN, NULL));
	model_apply(&p, &f->e, &f->exists);
	assert_null(f->e.lock_time); /* no lock: the placement is the disable */
	assert_int_equal(ldap_diff_compute(&mv, &f->d, &f->e, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);

	/* Back from leave with a new title: the title is written in the
	 * disabled OU, the move back comes last. */
	f->d.state = LC_ACTIVE;
	id_attrs_set(&f->d.attributes, "title", "Lead");
	assert_int_equal(ldap_diff_compute(&mv, &f->d, &f->e, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 3);
	assert_int_equal(p.ops[0].kind, LDAP_DIFF_OP_ENSURE_OU);
	assert_string_equal(p.ops[0].dn, "ou=Sales," PEOPLE);
	assert_int_equal(p.ops[1].kind, LDAP_DIFF_OP_MODIFY);
	assert_string_equal(p.ops[1].dn, "uid=asmith," DISABLED);
	const ldap_diff_op_t *en = &p.ops[2];
	assert_int_equal(en->kind, LDAP_DIFF_OP_ENABLE);
	assert_string_equal(en->dn, "uid=asmith," DISABLED);
	assert_string_equal(en->new_value, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(en->new_superior, "ou=Sales," PEOPLE);
	model_apply(&p, &f->e, &f->exists);
	assert_int_equal(ldap_diff_compute(&mv, &f->d, &f->e, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	assert_string_equal(f->e.dn, "uid=asmith,ou=Sales," PEOPLE);

	/* PENDING over the entry: moved, nothing else. */
	f->d.state = LC_PENDING;
	id_attrs_set(&f->d.attributes, "title", "Other");
	assert_int_equal(ldap_diff_compute(&mv, &f->d, &f->e, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 2);
	assert_int_equal(p.ops[1].kind, LDAP_DIFF_OP_DISABLE);
	assert_string_equal(p.ops[1].new_value, "uid=asmith," DISABLED);
	model_apply(&p, &f->e, &f->exists);
	assert_int_equal(ldap_diff_compute(&mv, &f->d, &f->e, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);

	/* A PRESTART hire is created in the disabled OU, unlocked. */
	desired_identity_t d;
	mk_desired(&d, "E2", "bb", "B", "B", "Ops", LC_PRESTART);
	assert_int_equal(ldap_diff_compute(&mv, &d, NULL, NULL, &p, NULL), 0);
	const ldap_diff_op_t *add = find_op(&p, LDAP_DIFF_OP_ADD, NULL);
	assert_non_null(add);
	assert_string_equal(add->dn, "uid=bb," DISABLED);
	assert_false(id_attrs_has(&add->attrs, LDAP_DIFF_LOCK_ATTR));
	assert_string_equal(p.ops[0].dn, DISABLED);
	desired_identity_fini(&d);
	ldap_diff_plan_fini(&p);
}

static void test_noop_with_server_spelling(void **state)
{
	fx_t *f = *state;
	/* What slapd returns: other case, hex escapes, unmanaged memberships. */
	ldap_diff_entry_fini(&f->e);
	ldap_diff_entry_set_dn(&f->e, "UID=asmith, OU=sales,ou=People,DC=example,dc=com");
	const char *keys[] = {"uid",       "cn",   "displayName",     "sn",
	                      "givenName", "mail", "employeeNumber",  "employeeType",
	                      "title",     "l",    "departmentNumber"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		id_attrs_set(&f->e.attrs, keys[i],
		             id_attrs_get(&f->d.attributes, keys[i]));
	ldap_diff_entry_add_member_of(&f->e, "cn=staff,ou=groups,dc=example,dc=com");
	ldap_diff_entry_add_member_of(&f->e, "CN=Dept-Sales,OU=Groups,DC=Example,DC=Com");
	ldap_diff_entry_add_member_of(&f->e, "cn=vpn,ou=other,dc=example,dc=com");
	ldap_diff_entry_add_member_of(&f->e, "cn=x,cn=staff,ou=groups,dc=example,dc=com");
	plan(f);
	assert_int_equal(f->p.nops, 0);
}

static void test_attribute_update(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "title", "Staff Engineer");
	plan(f);
	assert_int_equal(f->p.nops, 1);
	const ldap_diff_op_t *op = &f->p.ops[0];
	assert_int_equal(op->kind, LDAP_DIFF_OP_MODIFY);
	assert_string_equal(op->dn, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(op->attribute, "title");
	assert_string_equal(op->old_value, "Engineer");
	assert_string_equal(op->new_value, "Staff Engineer");
}

static void test_clear_attribute(void **state)
{
	fx_t *f = *state;
	id_attrs_remove(&f->d.attributes, "title");
	id_attrs_set(&f->d.attributes, "l", ""); /* empty = absent */
	plan(f);
	assert_int_equal(f->p.nops, 2);
	const ldap_diff_op_t *t = find_op(&f->p, LDAP_DIFF_OP_MODIFY, "title");
	const ldap_diff_op_t *l = find_op(&f->p, LDAP_DIFF_OP_MODIFY, "l");
	assert_non_null(t);
	assert_non_null(l);
	assert_string_equal(t->old_value, "Engineer");
	assert_null(t->new_value);
	assert_string_equal(l->old_value, "Berlin");
	assert_null(l->new_value);
	converge(&f->d, &f->e, &f->exists, NULL);
}

static void test_unmanaged_untouched(void **state)
{
	fx_t *f = *state;
	/* Attributes the mapping does not produce are neither written nor removed. */
	id_attrs_set(&f->e.attrs, "telephoneNumber", "+49 30 1234");
	id_attrs_set(&f->e.attrs, "description", "set by the help desk");
	id_attrs_set(&f->d.attributes, "costCenter", "4711");
	id_attrs_set(&f->d.attributes, "start_date", "2026-01-01");
	plan(f);
	assert_int_equal(f->p.nops, 0);

	ldap_diff_plan_t p;
	ldap_diff_plan_init(&p);
	assert_int_equal(ldap_diff_compute(&layout, &f->d, NULL, NULL, &p, NULL), 0);
	const ldap_diff_op_t *add = find_op(&p, LDAP_DIFF_OP_ADD, NULL);
	assert_false(id_attrs_has(&add->attrs, "costCenter"));
	assert_false(id_attrs_has(&add->attrs, "start_date"));
	ldap_diff_plan_fini(&p);
}

static void test_employee_number_is_the_id(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "employeeNumber", "something else");
	plan(f);
	assert_int_equal(f->p.nops, 0);
}

static void test_rename_uid(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "uid", "ajones");
	id_attrs_set(&f->d.attributes, "mail", "ajones@example.com");
	plan(f);
	assert_int_equal(f->p.nops, 2);
	const ldap_diff_op_t *r = &f->p.ops[0];
	assert_int_equal(r->kind, LDAP_DIFF_OP_MODRDN);
	assert_string_equal(r->dn, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(r->new_rdn, "uid=ajones");
	assert_null(r->new_superior);
	assert_string_equal(r->new_value, "uid=ajones,ou=Sales," PEOPLE);
	/* uid itself is never a MODIFY: the RDN change carries it. */
	assert_null(find_op(&f->p, LDAP_DIFF_OP_MODIFY, "uid"));
	const ldap_diff_op_t *m = &f->p.ops[1];
	assert_int_equal(m->kind, LDAP_DIFF_OP_MODIFY);
	assert_string_equal(m->attribute, "mail");
	assert_string_equal(m->dn, "uid=ajones,ou=Sales," PEOPLE); /* after the rename */
	assert_null(find_op(&f->p, LDAP_DIFF_OP_GROUP_ADD, NULL));
	converge(&f->d, &f->e, &f->exists, NULL);
}

static void test_ou_move(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "departmentNumber", "Engineering");
	set_container(&f->d, "ou=Engineering");
	free(f->d.groups[0]);
	f->d.groups[0] = strdup("dept-engineering");
	plan(f);
	assert_int_equal(f->p.nops, 5);
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_ENSURE_OU);
	assert_string_equal(f->p.ops[0].dn, "ou=Engineering," PEOPLE);
	const ldap_diff_op_t *r = &f->p.ops[1];
	assert_int_equal(r->kind, LDAP_DIFF_OP_MODRDN);
	assert_string_equal(r->new_rdn, "uid=asmith");
	assert_string_equal(r->new_superior, "ou=Engineering," PEOPLE);
	assert_int_equal(f->p.ops[2].kind, LDAP_DIFF_OP_MODIFY);
	assert_int_equal(f->p.ops[3].kind, LDAP_DIFF_OP_GROUP_ADD);
	assert_string_equal(f->p.ops[3].dn, "cn=dept-engineering," GROUPS);
	assert_string_equal(f->p.ops[3].new_value, "uid=asmith,ou=Engineering," PEOPLE);
	assert_int_equal(f->p.ops[4].kind, LDAP_DIFF_OP_GROUP_REMOVE);
	assert_string_equal(f->p.ops[4].dn, "cn=dept-sales," GROUPS);
	/* refint has rewritten the member value by the time this runs. */
	assert_string_equal(f->p.ops[4].old_value, "uid=asmith,ou=Engineering," PEOPLE);
	converge(&f->d, &f->e, &f->exists, NULL);
}

static void test_rename_and_move(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->d.attributes, "uid", "annsmith");
	set_container(&f->d, "ou=Berlin,ou=Sales"); /* two levels */
	plan(f);
	assert_int_equal(f->p.nops, 3);
	assert_string_equal(f->p.ops[0].dn, "ou=Sales," PEOPLE);
	assert_string_equal(f->p.ops[1].dn, "ou=Berlin,ou=Sales," PEOPLE);
	const ldap_diff_op_t *r = &f->p.ops[2];
	assert_int_equal(r->kind, LDAP_DIFF_OP_MODRDN);
	assert_string_equal(r->new_rdn, "uid=annsmith");
	assert_string_equal(r->new_superior, "ou=Berlin,ou=Sales," PEOPLE);
	assert_string_equal(r->new_value, "uid=annsmith,ou=Berlin,ou=Sales," PEOPLE);
	converge(&f->d, &f->e, &f->exists, NULL);
}

static void test_group_add_remove(void **state)
{
	fx_t *f = *state;
	ldap_diff_entry_add_member_of(&f->e, "cn=vpn,ou=other,dc=example,dc=com");
	/* groups: dept-sales, staff → dept-sales, wiki-editors (still sorted). */
	free(f->d.groups[1]);
	f->d.groups[1] = strdup("wiki-editors");
	plan(f);
	assert_int_equal(f->p.nops, 2);
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_GROUP_ADD);
	assert_string_equal(f->p.ops[0].attribute, "wiki-editors");
	assert_string_equal(f->p.ops[0].dn, "cn=wiki-editors," GROUPS);
	assert_int_equal(f->p.ops[1].kind, LDAP_DIFF_OP_GROUP_REMOVE);
	assert_string_equal(f->p.ops[1].attribute, "staff");
	converge(&f->d, &f->e, &f->exists, NULL);
	/* The membership outside groups_dn survived. */
	bool vpn = false;
	for (size_t i = 0; i < f->e.nmember_of; i++)
		vpn |=
		    strcmp(f->e.member_of[i], "cn=vpn,ou=other,dc=example,dc=com") == 0;
	assert_true(vpn);
}

static void test_disable(void **state)
{
	fx_t *f = *state;
	f->d.state = LC_DISABLED;
	for (size_t i = 0; i < f->d.ngroups; i++)
		free(f->d.groups[i]);
	f->d.ngroups = 0;
	id_attrs_set(&f->d.attributes, "uid", "asmith.old");
	plan(f);
	/* Lock first, on the DN the entry has before the rename. */
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_DISABLE);
	assert_string_equal(f->p.ops[0].dn, "uid=asmith,ou=Sales," PEOPLE);
	assert_string_equal(f->p.ops[0].attribute, "pwdAccountLockedTime");
	assert_string_equal(f->p.ops[0].new_value, "000001010000Z");
	assert_null(f->p.ops[0].old_value);
	assert_int_equal(f->p.ops[1].kind, LDAP_DIFF_OP_MODRDN);
	assert_int_equal(f->p.nops, 4);
	assert_int_equal(f->p.ops[2].kind, LDAP_DIFF_OP_GROUP_REMOVE);
	assert_int_equal(f->p.ops[3].kind, LDAP_DIFF_OP_GROUP_REMOVE);
	assert_null(find_op(&f->p, LDAP_DIFF_OP_ENABLE, NULL));
	converge(&f->d, &f->e, &f->exists, NULL);
	assert_string_equal(f->e.lock_time, LDAP_DIFF_LOCK_VALUE);
	assert_int_equal(f->e.nmember_of, 0);
}

static void test_enable(void **state)
{
	fx_t *f = *state;
	ldap_diff_entry_set_lock(&f->e, LDAP_DIFF_LOCK_VALUE);
	id_attrs_set(&f->d.attributes, "title", "Returning Engineer");
	plan(f);
	assert_int_equal(f->p.nops, 2);
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_MODIFY);
	/* Unlock last, once groups and attributes are right. */
	const ldap_diff_op_t *en = &f->p.ops[1];
	assert_int_equal(en->kind, LDAP_DIFF_OP_ENABLE);
	assert_string_equal(en->old_value, LDAP_DIFF_LOCK_VALUE);
	assert_null(en->new_value);
	converge(&f->d, &f->e, &f->exists, NULL);
	assert_null(f->e.lock_time);
}

static void test_failed_bind_lockout_left_to_ppolicy(void **state)
{
	fx_t *f = *state;
	/* A temporary lockout after failed binds is not ours to lift... */
	ldap_diff_entry_set_lock(&f->e, "20261125120000Z");
	plan(f);
	assert_int_equal(f->p.nops, 0);
	/* ...but a disable turns it into the permanent lock. */
	f->d.state = LC_SUSPENDED;
	plan(f);
	const ldap_diff_op_t *dis = find_op(&f->p, LDAP_DIFF_OP_DISABLE, NULL);
	assert_non_null(dis);
	assert_string_equal(dis->old_value, "20261125120000Z");
	assert_string_equal(dis->new_value, LDAP_DIFF_LOCK_VALUE);
}

static void test_disabled_without_entry_creates_nothing(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_plan_t p;
	mk_desired(&d, "E9", "zz", "Z", "Z", "Ops", LC_DISABLED);
	ldap_diff_plan_init(&p);
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	d.state = LC_DELETED;
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);
	ldap_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

static void test_deleted(void **state)
{
	fx_t *f = *state;
	f->d.state = LC_DELETED;
	plan(f);
	assert_int_equal(f->p.nops, 3);
	assert_int_equal(f->p.ops[0].kind, LDAP_DIFF_OP_GROUP_REMOVE);
	assert_int_equal(f->p.ops[1].kind, LDAP_DIFF_OP_GROUP_REMOVE);
	assert_int_equal(f->p.ops[2].kind, LDAP_DIFF_OP_DELETE);
	assert_string_equal(f->p.ops[2].dn, "uid=asmith,ou=Sales," PEOPLE);
	converge(&f->d, &f->e, &f->exists, NULL);
	assert_false(f->exists);
}

static void test_manager(void **state)
{
	fx_t *f = *state;
	const char *mdn = "uid=boss,ou=Sales," PEOPLE;
	f->d.manager_id = strdup("E1");
	/* Manager not in the directory yet: nothing to do about it now. */
	plan(f);
	assert_int_equal(f->p.nops, 0);
	/* Resolved: set it. */
	assert_int_equal(ldap_diff_compute(&layout, &f->d, &f->e, mdn, &f->p, NULL), 0);
	assert_int_equal(f->p.nops, 1);
	assert_string_equal(f->p.ops[0].attribute, "manager");
	assert_string_equal(f->p.ops[0].new_value, mdn);
	converge(&f->d, &f->e, &f->exists, mdn);
	/* The server's spelling of the same DN is no change. */
	id_attrs_set(&f->e.attrs, "manager",
	             "UID=boss, ou=sales,ou=people,dc=example,dc=com");
	assert_int_equal(ldap_diff_compute(&layout, &f->d, &f->e, mdn, &f->p, NULL), 0);
	assert_int_equal(f->p.nops, 0);
	/* Unresolvable again (manager left): the old value stays. */
	plan(f);
	assert_int_equal(f->p.nops, 0);
	/* No manager any more in HR: removed. */
	free(f->d.manager_id);
	f->d.manager_id = NULL;
	plan(f);
	assert_int_equal(f->p.nops, 1);
	assert_string_equal(f->p.ops[0].attribute, "manager");
	assert_null(f->p.ops[0].new_value);
}

static void test_multi_valued_actual_replaced(void **state)
{
	fx_t *f = *state;
	id_attrs_set(&f->e.attrs, "cn", "Ann Smith\nAnnie Smith");
	plan(f);
	assert_int_equal(f->p.nops, 1);
	assert_string_equal(f->p.ops[0].attribute, "cn");
	assert_string_equal(f->p.ops[0].new_value, "Ann Smith");
}

static void test_escaping(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_plan_t p;
	ldap_diff_entry_t e;
	mk_desired(&d, "E7", "sobrien", "Seán", "O'Brien", "R&D, Europe", LC_ACTIVE);
	desired_identity_add_group(&d, "a,b+c");
	ldap_diff_plan_init(&p);
	ldap_diff_entry_init(&e);
	/* The container as built from the raw department name. */
	assert_string_equal(d.container, "ou=R&D, Europe");
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_string_equal(p.ops[0].dn, "ou=R&D\\, Europe," PEOPLE);
	assert_string_equal(p.ops[0].new_value, "R&D, Europe");
	assert_string_equal(p.ops[1].dn, "uid=sobrien,ou=R&D\\, Europe," PEOPLE);
	assert_string_equal(id_attrs_get(&p.ops[1].attrs, "cn"), "Seán O'Brien");
	assert_string_equal(id_attrs_get(&p.ops[1].attrs, "sn"), "O'Brien");
	const ldap_diff_op_t *g = find_op(&p, LDAP_DIFF_OP_GROUP_ADD, "a,b+c");
	assert_non_null(g);
	assert_string_equal(g->dn, "cn=a\\,b\\+c," GROUPS);

	/* The same container already escaped gives the same DN. */
	set_container(&d, "ou=R&D\\2C Europe");
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, NULL), 0);
	assert_string_equal(p.ops[1].dn, "uid=sobrien,ou=R&D\\, Europe," PEOPLE);

	/* slapd hands the DN back with hex escapes: still the same entry. */
	bool exists = false;
	converge(&d, &e, &exists, NULL);
	ldap_diff_entry_set_dn(&e, "uid=sobrien,ou=R&D\\2C Europe," PEOPLE);
	for (size_t i = 0; i < e.nmember_of; i++)
		if (strstr(e.member_of[i], "a\\,b")) {
			free(e.member_of[i]);
			e.member_of[i] = strdup("cn=a\\2Cb\\2Bc," GROUPS);
		}
	assert_int_equal(ldap_diff_compute(&layout, &d, &e, NULL, &p, NULL), 0);
	assert_int_equal(p.nops, 0);

	ldap_diff_plan_fini(&p);
	ldap_diff_entry_fini(&e);
	desired_identity_fini(&d);
}

static void test_dn_helpers(void **state)
{
	(void)state;
	id_buf_t b = ID_BUF_INIT;
	struct {
		const char *in, *out;
	} cases[] = {
	    {"plain", "plain"},
	    {"R&D, Europe", "R&D\\, Europe"},
	    {" lead", "\\ lead"},
	    {"trail ", "trail\\ "},
	    {"#1 team", "\\#1 team"},
	    {"mid # ok", "mid # ok"},
	    {"a\"b<c>d;e\\f+g=h", "a\\\"b\\<c\\>d\\;e\\\\f\\+g=h"},
	    {"O'Brien", "O'Brien"},
	    {"Zoë", "Zoë"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		id_buf_reset(&b);
		assert_int_equal(ldap_diff_dn_escape(&b, cases[i].in), 0);
		id_buf_append_u8(&b, 0);
		assert_string_equal((char *)b.data, cases[i].out);
		/* Round trip: parsing the escaped form gives the value back. */
		char dn[256];
		snprintf(dn, sizeof(dn), "cn=%s," GROUPS, (char *)b.data);
		char *back = ldap_diff_group_name(&layout, dn);
		assert_non_null(back);
		assert_string_equal(back, cases[i].in);
		free(back);
	}
	id_buf_fini(&b);

	assert_true(ldap_diff_dn_equal("cn=a\\,b,dc=x", "CN=A\\2cB , DC=X"));
	assert_true(ldap_diff_dn_equal("cn=Zo\\C3\\AB,dc=x", "cn=Zoë,dc=x"));
	assert_true(ldap_diff_dn_equal("", ""));
	assert_false(ldap_diff_dn_equal("cn=a,dc=x", "cn=a,dc=y"));
	assert_false(ldap_diff_dn_equal("cn=a,dc=x", "cn=a,ou=b,dc=x"));
	assert_false(ldap_diff_dn_equal("cn=a\\,b,dc=x", "cn=a,cn=b,dc=x"));
	assert_false(ldap_diff_dn_equal("cn=a,dc=x", NULL));

	char *n =
	    ldap_diff_group_name(&layout, "cn=R\\26D\\2C x,OU=groups, dc=example,dc=com");
	assert_string_equal(n, "R&D, x");
	free(n);
	assert_null(ldap_diff_group_name(&layout, "cn=a,ou=other,dc=example,dc=com"));
	assert_null(ldap_diff_group_name(&layout, "uid=a,ou=groups,dc=example,dc=com"));
	assert_null(ldap_diff_group_name(&layout, "not a dn"));
}

static void test_invalid_input(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_plan_t p;
	id_err_t err = {0};
	mk_desired(&d, "E5", "eve", "Eve", "E", "Ops", LC_ACTIVE);
	ldap_diff_plan_init(&p);

	id_attrs_remove(&d.attributes, "uid");
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, &err),
	                 ID_EINVALID);
	assert_non_null(strstr(err.msg, "E5"));
	assert_non_null(strstr(err.msg, "no uid"));
	assert_int_equal(p.nops, 0);

	id_attrs_set(&d.attributes, "uid", "eve");
	set_container(&d, "cn=Ops");
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, &err),
	                 ID_EINVALID);
	assert_non_null(strstr(err.msg, "cn=Ops"));

	set_container(&d, "ou=A,l=Berlin");
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, &err),
	                 ID_EINVALID);

	/* No container: directly below people_dn. */
	set_container(&d, NULL);
	assert_int_equal(ldap_diff_compute(&layout, &d, NULL, NULL, &p, &err), 0);
	assert_int_equal(p.ops[0].kind, LDAP_DIFF_OP_ADD);
	assert_string_equal(p.ops[0].dn, "uid=eve," PEOPLE);

	ldap_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

/* A joiner–mover–leaver story: every step converges in one plan. */
static void test_lifecycle_converges(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_entry_t e;
	bool exists = false;
	ldap_diff_entry_init(&e);
	mk_desired(&d, "E42", "jdoe", "Jane", "Doe", "Sales", LC_PENDING);
	converge(&d, &e, &exists, NULL);
	assert_false(exists);
	desired_identity_fini(&d);

	mk_desired(&d, "E42", "jdoe", "Jane", "Doe", "Sales", LC_PRESTART);
	converge(&d, &e, &exists, NULL);
	assert_true(exists);
	assert_string_equal(e.lock_time, LDAP_DIFF_LOCK_VALUE);
	desired_identity_fini(&d);

	mk_desired(&d, "E42", "jdoe", "Jane", "Doe", "Sales", LC_ACTIVE);
	converge(&d, &e, &exists, "uid=boss," PEOPLE);
	assert_null(e.lock_time);
	assert_int_equal(e.nmember_of, 2);
	desired_identity_fini(&d);

	mk_desired(&d, "E42", "jsmith", "Jane", "Smith", "R&D, Europe", LC_ACTIVE);
	converge(&d, &e, &exists, "uid=boss," PEOPLE);
	assert_true(ldap_diff_dn_equal(e.dn, "uid=jsmith,ou=R&D\\2C Europe," PEOPLE));
	desired_identity_fini(&d);

	mk_desired(&d, "E42", "jsmith", "Jane", "Smith", "R&D, Europe", LC_ACTIVE);
	d.state = LC_SUSPENDED; /* on leave: groups as desired, locked */
	converge(&d, &e, &exists, "uid=boss," PEOPLE);
	assert_string_equal(e.lock_time, LDAP_DIFF_LOCK_VALUE);
	assert_int_equal(e.nmember_of, 2);
	d.state = LC_ACTIVE;
	converge(&d, &e, &exists, "uid=boss," PEOPLE);
	assert_null(e.lock_time);
	desired_identity_fini(&d);

	mk_desired(&d, "E42", "jsmith", "Jane", "Smith", "R&D, Europe", LC_DISABLED);
	converge(&d, &e, &exists, NULL);
	assert_int_equal(e.nmember_of, 0);
	assert_string_equal(e.lock_time, LDAP_DIFF_LOCK_VALUE);
	desired_identity_fini(&d);

	mk_desired(&d, "E42", "jsmith", "Jane", "Smith", "R&D, Europe", LC_DELETED);
	converge(&d, &e, &exists, NULL);
	assert_false(exists);
	desired_identity_fini(&d);
	ldap_diff_entry_fini(&e);
}

/* ---------------------------------------------------------------- posix */

static const ldap_diff_posix_t posix_cfg = {10000, "/home/%u", "/bin/bash", 10001};

/* ldap_diff_compute_posix with posix_cfg, next number next. */
static void plan_posix(const desired_identity_t *d, const ldap_diff_entry_t *e,
                       long long next, ldap_diff_plan_t *p)
{
	ldap_diff_posix_t px = posix_cfg;
	px.next_uid_number = next;
	assert_int_equal(ldap_diff_compute_posix(&layout, &px, d, e, NULL, p, NULL), 0);
}

/* Diff with posix, apply to the model, diff again: nothing left. */
static void converge_posix(const desired_identity_t *d, ldap_diff_entry_t *e,
                           bool *exists, long long next)
{
	ldap_diff_plan_t p, again;
	ldap_diff_plan_init(&p);
	ldap_diff_plan_init(&again);
	plan_posix(d, *exists ? e : NULL, next, &p);
	model_apply(&p, e, exists);
	/* A different next number: a converged entry must not take it. */
	plan_posix(d, *exists ? e : NULL, next + 100, &again);
	assert_int_equal(again.nops, 0);
	assert_int_equal(again.uid_number, 0);
	ldap_diff_plan_fini(&p);
	ldap_diff_plan_fini(&again);
}

static void test_posix_create(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_plan_t p;
	mk_desired(&d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	ldap_diff_plan_init(&p);
	plan_posix(&d, NULL, 10001, &p);
	assert_int_equal(p.uid_number, 10001);
	const ldap_diff_op_t *add = find_op(&p, LDAP_DIFF_OP_ADD, NULL);
	assert_non_null(add);
	const id_attrs_t *a = &add->attrs;
	assert_string_equal(id_attrs_get(a, "objectClass"), "posixAccount");
	assert_string_equal(id_attrs_get(a, "uidNumber"), "10001");
	assert_string_equal(id_attrs_get(a, "gidNumber"), "10000");
	assert_string_equal(id_attrs_get(a, "homeDirectory"), "/home/asmith");
	assert_string_equal(id_attrs_get(a, "loginShell"), "/bin/bash");
	/* posixAccount's MUST cn and uid come with the inetOrgPerson ones. */
	assert_string_equal(id_attrs_get(a, "uid"), "asmith");
	assert_string_equal(id_attrs_get(a, "cn"), "Ann Smith");
	assert_int_equal(a->len, 11 + 5);
	/* Same ops as without posix otherwise. */
	assert_int_equal(p.nops, 4);
	/* PRESTART is created as a posixAccount too (locked). */
	d.state = LC_PRESTART;
	plan_posix(&d, NULL, 10002, &p);
	add = find_op(&p, LDAP_DIFF_OP_ADD, NULL);
	assert_string_equal(id_attrs_get(&add->attrs, "uidNumber"), "10002");
	assert_string_equal(id_attrs_get(&add->attrs, LDAP_DIFF_LOCK_ATTR),
	                    LDAP_DIFF_LOCK_VALUE);
	/* No number to give: refused, nothing planned. */
	ldap_diff_posix_t none = posix_cfg;
	none.next_uid_number = 0;
	id_err_t err = {0};
	assert_int_equal(
	    ldap_diff_compute_posix(&layout, &none, &d, NULL, NULL, &p, &err),
	    ID_EINVALID);
	assert_non_null(strstr(err.msg, "uidNumber"));
	assert_int_equal(p.nops, 0);
	assert_int_equal(p.uid_number, 0);
	/* An empty shell means no loginShell. */
	ldap_diff_posix_t noshell = posix_cfg;
	noshell.login_shell = "";
	assert_int_equal(
	    ldap_diff_compute_posix(&layout, &noshell, &d, NULL, NULL, &p, NULL), 0);
	add = find_op(&p, LDAP_DIFF_OP_ADD, NULL);
	assert_false(id_attrs_has(&add->attrs, "loginShell"));
	ldap_diff_plan_fini(&p);
	desired_identity_fini(&d);
}

/* An entry keeps its uidNumber: hand-set, or from before a state rebuild. */
static void test_posix_existing_uid_number_kept(void **state)
{
	fx_t *f = *state;
	converge_posix(&f->d, &f->e, &f->exists, 10001);
	assert_true(f->e.posix);
	assert_string_equal(id_attrs_get(&f->e.attrs, "uidNumber"), "10001");
	/* Someone set another number by hand: it is the entry's now. */
	id_attrs_set(&f->e.attrs, "uidNumber", "4242");
	ldap_diff_plan_t p;
	ldap_diff_plan_init(&p);
	plan_posix(&f->d, &f->e, 20000, &p);
	assert_int_equal(p.nops, 0);
	assert_int_equal(p.uid_number, 0);
	/* The other posix attributes are managed: drift is repaired. */
	id_attrs_set(&f->e.attrs, "loginShell", "/bin/sh");
	id_attrs_set(&f->e.attrs, "gidNumber", "500");
	id_attrs_remove(&f->e.attrs, "homeDirectory");
	plan_posix(&f->d, &f->e, 20000, &p);
	assert_int_equal(p.nops, 3);
	const ldap_diff_op_t *m = find_op(&p, LDAP_DIFF_OP_MODIFY, "loginShell");
	assert_string_equal(m->old_value, "/bin/sh");
	assert_string_equal(m->new_value, "/bin/bash");
	m = find_op(&p, LDAP_DIFF_OP_MODIFY, "gidNumber");
	assert_string_equal(m->old_value, "500");
	assert_string_equal(m->new_value, "10000");
	m = find_op(&p, LDAP_DIFF_OP_MODIFY, "homeDirectory");
	assert_null(m->old_value);
	assert_string_equal(m->new_value, "/home/asmith");
	assert_null(find_op(&p, LDAP_DIFF_OP_MODIFY, "uidNumber"));
	assert_int_equal(p.uid_number, 0);
	model_apply(&p, &f->e, &f->exists);
	assert_string_equal(id_attrs_get(&f->e.attrs, "uidNumber"), "4242");
	ldap_diff_plan_fini(&p);
	converge_posix(&f->d, &f->e, &f->exists, 20000);
}

/* A rename moves homeDirectory with the uid; uidNumber stays. */
static void test_posix_rename_updates_home(void **state)
{
	fx_t *f = *state;
	converge_posix(&f->d, &f->e, &f->exists, 10007);
	id_attrs_set(&f->d.attributes, "uid", "ajones");
	id_attrs_set(&f->d.attributes, "mail", "ajones@example.com");
	ldap_diff_plan_t p;
	ldap_diff_plan_init(&p);
	plan_posix(&f->d, &f->e, 10050, &p);
	assert_int_equal(p.nops, 3);
	assert_int_equal(p.ops[0].kind, LDAP_DIFF_OP_MODRDN);
	assert_string_equal(p.ops[0].new_rdn, "uid=ajones");
	/* One modify request on the new DN: mail, then homeDirectory. */
	assert_int_equal(p.ops[1].kind, LDAP_DIFF_OP_MODIFY);
	assert_string_equal(p.ops[1].attribute, "mail");
	assert_int_equal(p.ops[2].kind, LDAP_DIFF_OP_MODIFY);
	assert_string_equal(p.ops[2].attribute, "homeDirectory");
	assert_string_equal(p.ops[2].dn, "uid=ajones,ou=Sales," PEOPLE);
	assert_string_equal(p.ops[2].old_value, "/home/asmith");
	assert_string_equal(p.ops[2].new_value, "/home/ajones");
	assert_int_equal(p.uid_number, 0);
	model_apply(&p, &f->e, &f->exists);
	assert_string_equal(id_attrs_get(&f->e.attrs, "uidNumber"), "10007");
	ldap_diff_plan_fini(&p);
	converge_posix(&f->d, &f->e, &f->exists, 10050);
}

/* An entry made before posix was turned on gets posixAccount and a new
 * number in one modify request, together with any other change. */
static void test_posix_added_to_existing(void **state)
{
	fx_t *f = *state;
	assert_false(f->e.posix);
	id_attrs_set(&f->d.attributes, "title", "Lead");
	ldap_diff_plan_t p;
	ldap_diff_plan_init(&p);
	plan_posix(&f->d, &f->e, 10003, &p);
	assert_int_equal(p.uid_number, 10003);
	assert_int_equal(p.nops, 6);
	for (size_t i = 0; i < p.nops; i++) {
		assert_int_equal(p.ops[i].kind, LDAP_DIFF_OP_MODIFY);
		assert_string_equal(p.ops[i].dn, "uid=asmith,ou=Sales," PEOPLE);
	}
	assert_string_equal(p.ops[0].attribute, "title");
	assert_string_equal(p.ops[1].attribute, "objectClass");
	assert_null(p.ops[1].old_value);
	assert_string_equal(p.ops[1].new_value, "posixAccount");
	const ldap_diff_op_t *m = find_op(&p, LDAP_DIFF_OP_MODIFY, "uidNumber");
	assert_null(m->old_value);
	assert_string_equal(m->new_value, "10003");
	assert_non_null(find_op(&p, LDAP_DIFF_OP_MODIFY, "gidNumber"));
	assert_non_null(find_op(&p, LDAP_DIFF_OP_MODIFY, "homeDirectory"));
	assert_non_null(find_op(&p, LDAP_DIFF_OP_MODIFY, "loginShell"));
	ldap_diff_plan_fini(&p);
	converge_posix(&f->d, &f->e, &f->exists, 10003);
	assert_string_equal(id_attrs_get(&f->e.attrs, "uidNumber"), "10003");
	/* A uidNumber set by hand without the class is kept, the class added. */
	f->e.posix = false;
	id_attrs_set(&f->e.attrs, "uidNumber", "777");
	ldap_diff_plan_init(&p);
	plan_posix(&f->d, &f->e, 10004, &p);
	assert_int_equal(p.nops, 1);
	assert_string_equal(p.ops[0].attribute, "objectClass");
	assert_int_equal(p.uid_number, 0);
	ldap_diff_plan_fini(&p);
}

/* PENDING leaves an existing entry as it is (only locked), posix too;
 * DISABLED and SUSPENDED entries are converged like the rest. */
static void test_posix_states(void **state)
{
	fx_t *f = *state;
	ldap_diff_plan_t p;
	ldap_diff_plan_init(&p);
	f->d.state = LC_PENDING;
	plan_posix(&f->d, &f->e, 10001, &p);
	assert_int_equal(p.nops, 1);
	assert_int_equal(p.ops[0].kind, LDAP_DIFF_OP_DISABLE);
	assert_int_equal(p.uid_number, 0);
	f->d.state = LC_DISABLED;
	plan_posix(&f->d, &f->e, 10001, &p);
	assert_non_null(find_op(&p, LDAP_DIFF_OP_MODIFY, "objectClass"));
	assert_int_equal(p.uid_number, 10001);
	f->d.state = LC_DELETED;
	plan_posix(&f->d, &f->e, 10001, &p);
	assert_null(find_op(&p, LDAP_DIFF_OP_MODIFY, NULL));
	assert_int_equal(p.uid_number, 0);
	ldap_diff_plan_fini(&p);
}

/* posix off: plans are exactly today's, and posix attributes an entry
 * already has (posix turned off again) are left alone. */
static void test_posix_off_unchanged(void **state)
{
	fx_t *f = *state;
	ldap_diff_plan_t a, b;
	ldap_diff_plan_init(&a);
	ldap_diff_plan_init(&b);
	id_attrs_set(&f->d.attributes, "uid", "ajones");
	assert_int_equal(ldap_diff_compute(&layout, &f->d, &f->e, NULL, &a, NULL), 0);
	assert_int_equal(
	    ldap_diff_compute_posix(&layout, NULL, &f->d, &f->e, NULL, &b, NULL), 0);
	assert_int_equal(a.nops, b.nops);
	for (size_t i = 0; i < a.nops; i++) {
		assert_int_equal(a.ops[i].kind, b.ops[i].kind);
		assert_string_equal(a.ops[i].dn, b.ops[i].dn);
	}
	assert_int_equal(b.uid_number, 0);
	id_attrs_set(&f->d.attributes, "uid", "asmith");
	converge_posix(&f->d, &f->e, &f->exists, 10001);
	assert_int_equal(ldap_diff_compute(&layout, &f->d, &f->e, NULL, &a, NULL), 0);
	assert_int_equal(a.nops, 0);
	/* A new entry without posix has no posix attribute at all. */
	assert_int_equal(ldap_diff_compute(&layout, &f->d, NULL, NULL, &a, NULL), 0);
	const ldap_diff_op_t *add = find_op(&a, LDAP_DIFF_OP_ADD, NULL);
	assert_false(id_attrs_has(&add->attrs, "objectClass"));
	for (const char *const *n = ldap_diff_posix_attrs; *n != NULL; n++)
		assert_false(id_attrs_has(&add->attrs, *n));
	ldap_diff_plan_fini(&a);
	ldap_diff_plan_fini(&b);
}

static void test_posix_home_template(void **state)
{
	(void)state;
	id_buf_t b = ID_BUF_INIT;
	id_err_t err = {0};
	assert_int_equal(ldap_diff_posix_home("/home/%u", "jdoe", &b), 0);
	assert_string_equal((const char *)b.data, "/home/jdoe");
	assert_int_equal(ldap_diff_posix_home("/srv/%u/100%%/%u", "x", &b), 0);
	assert_string_equal((const char *)b.data, "/srv/x/100%/x");
	assert_int_equal(ldap_diff_posix_home("/home/%d", "x", &b), ID_EINVALID);
	assert_int_equal(ldap_diff_posix_check("/home/%u", NULL), 0);
	assert_int_equal(ldap_diff_posix_check("/home/%x", &err), ID_ECONFIG);
	assert_non_null(strstr(err.msg, "/home/%x"));
	assert_int_equal(ldap_diff_posix_check("/home/%", NULL), ID_ECONFIG);
	assert_int_equal(ldap_diff_posix_check("", NULL), ID_ECONFIG);
	id_buf_fini(&b);
}

/* The lifecycle story with posix on: the number given at creation stays
 * through rename, move, leave and disable. */
static void test_posix_lifecycle_converges(void **state)
{
	(void)state;
	desired_identity_t d;
	ldap_diff_entry_t e;
	bool exists = false;
	ldap_diff_entry_init(&e);
	mk_desired(&d, "E42", "jdoe", "Jane", "Doe", "Sales", LC_PRESTART);
	converge_posix(&d, &e, &exists, 10010);
	assert_string_equal(id_attrs_get(&e.attrs, "uidNumber"), "10010");
	desired_identity_fini(&d);
	mk_desired(&d, "E42", "jsmith", "Jane", "Smith", "R&D, Europe", LC_ACTIVE);
	converge_posix(&d, &e, &exists, 10011);
	assert_string_equal(id_attrs_get(&e.attrs, "homeDirectory"), "/home/jsmith");
	d.state = LC_SUSPENDED;
	converge_posix(&d, &e, &exists, 10012);
	desired_identity_fini(&d);
	mk_desired(&d, "E42", "jsmith", "Jane", "Smith", "R&D, Europe", LC_DISABLED);
	converge_posix(&d, &e, &exists, 10013);
	assert_string_equal(id_attrs_get(&e.attrs, "uidNumber"), "10010");
	desired_identity_fini(&d);
	ldap_diff_entry_fini(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create),
	    cmocka_unit_test(test_create_prestart_is_locked_in_the_add),
	    cmocka_unit_test(test_pending_creates_nothing),
	    cmocka_unit_test_setup_teardown(test_pending_existing_is_only_locked,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_suspended_keeps_desired_groups, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_disable_by_move, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_noop_with_server_spelling, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_attribute_update, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_clear_attribute, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_unmanaged_untouched, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_employee_number_is_the_id, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rename_uid, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_ou_move, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rename_and_move, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_group_add_remove, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_disable, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_enable, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_failed_bind_lockout_left_to_ppolicy,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test(test_disabled_without_entry_creates_nothing),
	    cmocka_unit_test_setup_teardown(test_deleted, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_manager, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_multi_valued_actual_replaced, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_dn_helpers),
	    cmocka_unit_test(test_invalid_input),
	    cmocka_unit_test(test_lifecycle_converges),
	    cmocka_unit_test(test_posix_create),
	    cmocka_unit_test_setup_teardown(test_posix_existing_uid_number_kept, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_posix_rename_updates_home, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_posix_added_to_existing, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_posix_states, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_posix_off_unchanged, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test(test_posix_home_template),
	    cmocka_unit_test(test_posix_lifecycle_converges),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
