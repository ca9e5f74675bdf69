/*
 * test_sink_ldap.c — the OpenLDAP sink against a real slapd
 * (IDSTREAM_TEST_LDAP_URL, default ldap://127.0.0.1:13890/, admin
 * cn=admin,dc=example,dc=com / adminpw).  No slapd there is a failure, not
 * a skip.
 *
 * Every assertion about the directory is made with this file's own admin
 * connection (searches and compares), never through the sink's read path.
 * Each test works in its own subtree ou=sinktest-<pid>-<n>,dc=example,dc=com
 * (people and groups below it), deleted afterwards, so runs never see each
 * other's entries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ldap.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/unit/support/tcp_relay.h"
#include "sinks/sink_ldap.h"

#define ADMIN_DN "cn=admin,dc=example,dc=com"
#define ADMIN_PW "adminpw"
#define SUFFIX   "dc=example,dc=com"

static const char *url;
static LDAP *adm; /* the test's own connection, for assertions */
static int test_no;

typedef struct t {
	char base[128];
	char people[160];
	char groups[160];
	sink_ldap_t *sink;
	sink_result_t r;
	desired_identity_t d, d2;
} t_t;

/* ---- the test's own LDAP helpers ---- */

static LDAP *connect_as(const char *u, const char *dn, const char *pw, int *rc_out)
{
	LDAP *ld = NULL;
	int v3 = LDAP_VERSION3;
	struct timeval tv = {5, 0};
	if (ldap_initialize(&ld, u) != LDAP_SUCCESS)
		return NULL;
	ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
	ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
	struct berval cred = {strlen(pw), (char *)pw};
	int rc = ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (rc_out)
		*rc_out = rc;
	if (rc != LDAP_SUCCESS) {
		ldap_unbind_ext_s(ld, NULL, NULL);
		return NULL;
	}
	return ld;
}

/* First value of attr on dn (operational attributes included), or NULL. */
static char *get1(const char *dn, const char *attr)
{
	char *attrs[] = {(char *)attr, NULL};
	LDAPMessage *res = NULL;
	char *out = NULL;
	if (ldap_search_ext_s(adm, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL,
	                      NULL, NULL, 0, &res) == LDAP_SUCCESS) {
		LDAPMessage *e = ldap_first_entry(adm, res);
		struct berval **v = e ? ldap_get_values_len(adm, e, attr) : NULL;
		if (ldap_count_values_len(v) > 0)
			out = strndup(v[0]->bv_val, v[0]->bv_len);
		ldap_value_free_len(v);
	}
	ldap_msgfree(res);
	return out;
}

static int count_values(const char *dn, const char *attr)
{
	char *attrs[] = {(char *)attr, NULL};
	LDAPMessage *res = NULL;
	int n = -1;
	if (ldap_search_ext_s(adm, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL,
	                      NULL, NULL, 0, &res) == LDAP_SUCCESS) {
		LDAPMessage *e = ldap_first_entry(adm, res);
		struct berval **v = e ? ldap_get_values_len(adm, e, attr) : NULL;
		n = ldap_count_values_len(v);
		ldap_value_free_len(v);
	}
	ldap_msgfree(res);
	return n;
}

static bool exists(const char *dn)
{
	char *attrs[] = {LDAP_NO_ATTRS, NULL};
	LDAPMessage *res = NULL;
	int rc = ldap_search_ext_s(adm, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
	                           NULL, NULL, NULL, 0, &res);
	ldap_msgfree(res);
	return rc == LDAP_SUCCESS;
}

/* Server-side comparison, so DN-valued attributes match however spelled. */
static bool has_value(const char *dn, const char *attr, const char *value)
{
	struct berval bv = {strlen(value), (char *)value};
	return ldap_compare_ext_s(adm, dn, attr, &bv, NULL, NULL) == LDAP_COMPARE_TRUE;
}

/* Number of entries with filter in the subtree below base. */
static int count_entries(const char *base, const char *filter)
{
	char *attrs[] = {LDAP_NO_ATTRS, NULL};
	LDAPMessage *res = NULL;
	int n = -1;
	if (ldap_search_ext_s(adm, base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL,
	                      NULL, 0, &res) == LDAP_SUCCESS)
		n = ldap_count_entries(adm, res);
	ldap_msgfree(res);
	return n;
}

static void admin_modify(const char *dn, int op, const char *attr, const char *value)
{
	char *vals[] = {(char *)value, NULL};
	LDAPMod m = {
	    .mod_op = op, .mod_type = (char *)attr, .mod_values = value ? vals : NULL};
	LDAPMod *mods[] = {&m, NULL};
	assert_int_equal(ldap_modify_ext_s(adm, dn, mods, NULL, NULL), LDAP_SUCCESS);
}

static void admin_add(const char *dn, const char *const *pairs)
{
	LDAPMod m[16], *mp[17];
	char *v[16][2];
	size_t n = 0;
	for (; pairs[2 * n]; n++) {
		v[n][0] = (char *)pairs[2 * n + 1];
		v[n][1] = NULL;
		m[n] = (LDAPMod){.mod_op = LDAP_MOD_ADD,
		                 .mod_type = (char *)pairs[2 * n],
		                 .mod_values = v[n]};
		mp[n] = &m[n];
	}
	mp[n] = NULL;
	int rc = ldap_add_ext_s(adm, dn, mp, NULL, NULL);
	if (rc != LDAP_SUCCESS)
		fail_msg("admin add %s: %s", dn, ldap_err2string(rc));
}

/* Deletes base and everything below it, deepest first. */
static void delete_tree(const char *base)
{
	char *attrs[] = {LDAP_NO_ATTRS, NULL};
	LDAPMessage *res = NULL;
	if (ldap_search_ext_s(adm, base, LDAP_SCOPE_SUBTREE, "(objectClass=*)", attrs, 0,
	                      NULL, NULL, NULL, 0, &res) != LDAP_SUCCESS) {
		ldap_msgfree(res);
		return;
	}
	int n = ldap_count_entries(adm, res);
	char **dns = calloc((size_t)n + 1, sizeof(*dns));
	int k = 0;
	for (LDAPMessage *e = ldap_first_entry(adm, res); e; e = ldap_next_entry(adm, e))
		dns[k++] = ldap_get_dn(adm, e);
	ldap_msgfree(res);
	/* Longest DN first is a valid leaves-first order within one subtree. */
	for (int pass = 0; pass < k; pass++) {
		int best = -1;
		for (int i = 0; i < k; i++)
			if (dns[i] && (best < 0 || strlen(dns[i]) > strlen(dns[best])))
				best = i;
		ldap_delete_ext_s(adm, dns[best], NULL, NULL);
		ldap_memfree(dns[best]);
		dns[best] = NULL;
	}
	free(dns);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	url = getenv("IDSTREAM_TEST_LDAP_URL");
	if (url == NULL || url[0] == '\0')
		url = "ldap://127.0.0.1:13890/";
	int rc = 0;
	adm = connect_as(url, ADMIN_DN, ADMIN_PW, &rc);
	if (adm == NULL) {
		fprintf(stderr,
		        "FAIL: no slapd answers at %s (bind as %s: %s). Start one with "
		        "`sh scripts/services.sh start slapd` or run `make test`; set "
		        "IDSTREAM_TEST_LDAP_URL for another address.\n",
		        url, ADMIN_DN, ldap_err2string(rc));
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (adm)
		ldap_unbind_ext_s(adm, NULL, NULL);
	adm = NULL;
	return 0;
}

static sink_ldap_t *open_sink(const t_t *t, const char *u)
{
	sink_ldap_opts_t o = {.url = u,
	                      .bind_dn = ADMIN_DN,
	                      .bind_password = ADMIN_PW,
	                      .people_dn = t->people,
	                      .groups_dn = t->groups,
	                      .timeout_ms = 5000};
	id_err_t err = {0};
	sink_ldap_t *s = sink_ldap_open(&o, &err);
	if (s == NULL)
		fail_msg("sink_ldap_open(%s): %s", u, err.msg);
	return s;
}

static int setup(void **state)
{
	t_t *t = calloc(1, sizeof(*t));
	snprintf(t->base, sizeof(t->base), "ou=sinktest-%d-%d," SUFFIX, (int)getpid(),
	         ++test_no);
	snprintf(t->people, sizeof(t->people), "ou=people,%s", t->base);
	snprintf(t->groups, sizeof(t->groups), "ou=groups,%s", t->base);
	delete_tree(t->base);
	char ouval[64];
	snprintf(ouval, sizeof(ouval), "sinktest-%d-%d", (int)getpid(), test_no);
	const char *b[] = {"objectClass", "organizationalUnit", "ou", ouval, NULL};
	admin_add(t->base, b);
	const char *p[] = {"objectClass", "organizationalUnit", "ou", "people", NULL};
	admin_add(t->people, p);
	const char *g[] = {"objectClass", "organizationalUnit", "ou", "groups", NULL};
	admin_add(t->groups, g);
	t->sink = open_sink(t, url);
	sink_result_init(&t->r);
	desired_identity_init(&t->d);
	desired_identity_init(&t->d2);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	t_t *t = *state;
	sink_ldap_close(t->sink);
	sink_result_fini(&t->r);
	desired_identity_fini(&t->d);
	desired_identity_fini(&t->d2);
	delete_tree(t->base);
	free(t);
	return 0;
}

/* A desired identity as the default mapping would produce it. */
static void mk(desired_identity_t *d, const char *id, const char *uid, const char *first,
               const char *last, const char *dept, lifecycle_state_t state)
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

static void set_state(desired_identity_t *d, lifecycle_state_t st)
{
	d->state = st;
	for (size_t i = 0; i < d->ngroups; i++)
		free(d->groups[i]);
	free(d->groups);
	d->groups = NULL;
	d->ngroups = 0;
	if (st == LC_ACTIVE) {
		desired_identity_add_group(d, "staff");
		char buf[160] = "dept-";
		const char *dept = id_attrs_get(&d->attributes, "departmentNumber");
		size_t j = 5;
		for (const char *p = dept; *p && j + 1 < sizeof(buf); p++)
			if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
				buf[j++] = *p;
			else if (*p >= 'A' && *p <= 'Z')
				buf[j++] = (char)(*p - 'A' + 'a');
		buf[j] = '\0';
		desired_identity_add_group(d, buf);
	}
}

/* Applies and insists the call itself succeeded. */
static sink_outcome_t apply(t_t *t, const desired_identity_t *d)
{
	id_err_t err = {0};
	int rc = sink_ldap_apply(t->sink, d, &t->r, &err);
	if (rc != 0)
		fail_msg("apply %s: rc %d: %s", d->employee_id, rc, err.msg);
	assert_string_equal(t->r.target, "ldap");
	assert_string_equal(t->r.employee_id, d->employee_id);
	assert_int_equal(t->r.desired_version, d->version);
	assert_true(t->r.at > 0);
	if (t->r.outcome == SINK_FAILED)
		assert_non_null(t->r.error);
	return t->r.outcome;
}

static size_t count_ops(const sink_result_t *r, const char *op)
{
	size_t n = 0;
	for (size_t i = 0; i < r->nops; i++)
		n += strcmp(r->ops[i].op, op) == 0;
	return n;
}

static const sink_op_t *find_op(const sink_result_t *r, const char *op,
                                const char *attribute)
{
	for (size_t i = 0; i < r->nops; i++)
		if (strcmp(r->ops[i].op, op) == 0 &&
		    (!attribute || (r->ops[i].attribute &&
		                    strcmp(r->ops[i].attribute, attribute) == 0)))
			return &r->ops[i];
	return NULL;
}

static void dn_of(char *buf, size_t len, const char *rdn, const char *ou, const t_t *t)
{
	if (ou)
		snprintf(buf, len, "%s,%s,%s", rdn, ou, t->people);
	else
		snprintf(buf, len, "%s,%s", rdn, t->people);
}

static void group_dn(char *buf, size_t len, const char *name, const t_t *t)
{
	snprintf(buf, len, "cn=%s,%s", name, t->groups);
}

static void assert_attr(const char *dn, const char *attr, const char *want)
{
	char *v = get1(dn, attr);
	if (want == NULL) {
		if (v != NULL)
			fail_msg("%s: %s is \"%s\", expected absent", dn, attr, v);
	} else {
		if (v == NULL || strcmp(v, want) != 0)
			fail_msg("%s: %s is \"%s\", expected \"%s\"", dn, attr,
			         v ? v : "(absent)", want);
	}
	free(v);
}

/* ---- tests ---- */

static void test_create(void **state)
{
	t_t *t = *state;
	char dn[512], staff[256], sales[256];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);

	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	assert_true(exists(dn));
	assert_true(has_value(dn, "objectClass", "inetOrgPerson"));
	assert_attr(dn, "uid", "asmith");
	assert_attr(dn, "cn", "Ann Smith");
	assert_attr(dn, "sn", "Smith");
	assert_attr(dn, "givenName", "Ann");
	assert_attr(dn, "displayName", "Ann Smith");
	assert_attr(dn, "mail", "asmith@example.com");
	assert_attr(dn, "title", "Engineer");
	assert_attr(dn, "departmentNumber", "Sales");
	assert_attr(dn, "employeeNumber", "E1001");
	assert_attr(dn, "employeeType", "full_time");
	assert_attr(dn, "l", "Berlin");
	assert_attr(dn, "pwdAccountLockedTime", NULL);
	assert_attr(dn, "manager", NULL);

	group_dn(staff, sizeof(staff), "staff", t);
	group_dn(sales, sizeof(sales), "dept-sales", t);
	assert_int_equal(count_values(dn, "memberOf"), 2);
	assert_true(has_value(dn, "memberOf", staff));
	assert_true(has_value(dn, "memberOf", sales));
	assert_true(has_value(staff, "objectClass", "groupOfNames"));
	assert_true(has_value(staff, "member", dn));
	assert_int_equal(count_values(staff, "member"), 1);
	assert_true(has_value(sales, "member", dn));

	/* The result tells the story. */
	assert_int_equal(count_ops(&t->r, "create_ou"), 1);
	assert_int_equal(count_ops(&t->r, "create_group"), 2);
	assert_int_equal(count_ops(&t->r, "group_add"), 2);
	const sink_op_t *add = find_op(&t->r, "add", "dn");
	assert_non_null(add);
	assert_true(strcasecmp(add->new_value, dn) == 0);
	const sink_op_t *mail = find_op(&t->r, "add", "mail");
	assert_non_null(mail);
	assert_string_equal(mail->new_value, "asmith@example.com");
	assert_null(t->r.error);

	/* A second employee joins the existing groups without recreating them. */
	mk(&t->d2, "E1002", "bjones", "Bob", "Jones", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	assert_int_equal(count_ops(&t->r, "create_group"), 0);
	assert_int_equal(count_ops(&t->r, "create_ou"), 0);
	assert_int_equal(count_values(staff, "member"), 2);
}

static void test_update_keeps_unmanaged(void **state)
{
	t_t *t = *state;
	char dn[512];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	/* Someone else's attributes on the entry. */
	admin_modify(dn, LDAP_MOD_ADD, "telephoneNumber", "+49 30 1234");
	admin_modify(dn, LDAP_MOD_ADD, "description", "desk 4.12");

	id_attrs_set(&t->d.attributes, "title", "Staff Engineer");
	id_attrs_remove(&t->d.attributes, "l");
	t->d.version = 2;
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_attr(dn, "title", "Staff Engineer");
	assert_attr(dn, "l", NULL);
	assert_attr(dn, "telephoneNumber", "+49 30 1234");
	assert_attr(dn, "description", "desk 4.12");
	assert_attr(dn, "cn", "Ann Smith");
	assert_int_equal(t->r.nops, 2);
	const sink_op_t *title = find_op(&t->r, "modify", "title");
	assert_non_null(title);
	assert_string_equal(title->old_value, "Engineer");
	assert_string_equal(title->new_value, "Staff Engineer");
	const sink_op_t *l = find_op(&t->r, "modify", "l");
	assert_non_null(l);
	assert_string_equal(l->old_value, "Berlin");
	assert_null(l->new_value);
}

static void test_rename_uid(void **state)
{
	t_t *t = *state;
	char old[512], dn[512], staff[256];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(old, sizeof(old), "uid=asmith", "ou=Sales", t);
	dn_of(dn, sizeof(dn), "uid=ajones", "ou=Sales", t);
	group_dn(staff, sizeof(staff), "staff", t);

	id_attrs_set(&t->d.attributes, "uid", "ajones");
	id_attrs_set(&t->d.attributes, "sn", "Jones");
	id_attrs_set(&t->d.attributes, "mail", "ajones@example.com");
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);

	assert_false(exists(old));
	assert_true(exists(dn));
	assert_attr(dn, "uid", "ajones");
	assert_int_equal(count_values(dn, "uid"), 1); /* deleteoldrdn */
	assert_attr(dn, "sn", "Jones");
	assert_attr(dn, "mail", "ajones@example.com");
	/* refint moved the membership with the entry. */
	assert_true(has_value(staff, "member", dn));
	assert_false(has_value(staff, "member", old));
	assert_true(has_value(dn, "memberOf", staff));
	const sink_op_t *r = find_op(&t->r, "modrdn", "dn");
	assert_non_null(r);
	assert_true(strcasecmp(r->old_value, old) == 0);
	assert_true(strcasecmp(r->new_value, dn) == 0);
	assert_int_equal(count_ops(&t->r, "group_add") + count_ops(&t->r, "group_remove"),
	                 0);
}

static void test_ou_move(void **state)
{
	t_t *t = *state;
	char old[512], dn[512], staff[256], sales[256], eng[256], ou[512];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Engineering", LC_ACTIVE);
	t->d.version = 2;
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);

	dn_of(old, sizeof(old), "uid=asmith", "ou=Sales", t);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Engineering", t);
	snprintf(ou, sizeof(ou), "ou=Engineering,%s", t->people);
	group_dn(staff, sizeof(staff), "staff", t);
	group_dn(sales, sizeof(sales), "dept-sales", t);
	group_dn(eng, sizeof(eng), "dept-engineering", t);
	assert_true(has_value(ou, "objectClass", "organizationalUnit"));
	assert_false(exists(old));
	assert_true(exists(dn));
	assert_attr(dn, "departmentNumber", "Engineering");
	assert_true(has_value(dn, "memberOf", staff));
	assert_true(has_value(dn, "memberOf", eng));
	assert_false(has_value(dn, "memberOf", sales));
	assert_int_equal(count_values(dn, "memberOf"), 2);
	/* She was dept-sales' only member: groupOfNames cannot be empty. */
	assert_false(exists(sales));
	assert_int_equal(count_ops(&t->r, "delete_group"), 1);
	assert_int_equal(count_ops(&t->r, "create_ou"), 1);
	assert_true(has_value(staff, "member", dn));
}

static bool user_can_bind(const char *dn, const char *pw)
{
	int rc = 0;
	LDAP *ld = connect_as(url, dn, pw, &rc);
	if (ld)
		ldap_unbind_ext_s(ld, NULL, NULL);
	return ld != NULL;
}

static void test_disable_enable(void **state)
{
	t_t *t = *state;
	char dn[512], dn2[512], staff[256], sales[256];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	mk(&t->d2, "E1002", "bjones", "Bob", "Jones", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	dn_of(dn2, sizeof(dn2), "uid=bjones", "ou=Sales", t);
	group_dn(staff, sizeof(staff), "staff", t);
	group_dn(sales, sizeof(sales), "dept-sales", t);
	admin_modify(dn, LDAP_MOD_ADD, "userPassword", "correct horse 1");
	assert_true(user_can_bind(dn, "correct horse 1"));

	set_state(&t->d, LC_DISABLED);
	t->d.version = 2;
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_attr(dn, "pwdAccountLockedTime", "000001010000Z");
	assert_false(user_can_bind(dn, "correct horse 1"));
	assert_int_equal(count_values(dn, "memberOf"), 0);
	assert_false(has_value(staff, "member", dn));
	assert_true(has_value(staff, "member", dn2)); /* Bob's groups survive */
	assert_int_equal(count_values(staff, "member"), 1);
	assert_int_equal(count_ops(&t->r, "disable"), 1);
	assert_int_equal(count_ops(&t->r, "group_remove"), 2);
	assert_int_equal(count_ops(&t->r, "delete_group"), 0);
	const sink_op_t *dis = find_op(&t->r, "disable", NULL);
	assert_string_equal(dis->attribute, "pwdAccountLockedTime");
	assert_string_equal(dis->new_value, "000001010000Z");

	/* Bob leaves too: now the groups lose their last member and go. */
	set_state(&t->d2, LC_DISABLED);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	assert_false(exists(staff));
	assert_false(exists(sales));
	assert_int_equal(count_ops(&t->r, "delete_group"), 2);

	/* Rehire: unlocked, groups back (recreated). */
	set_state(&t->d, LC_ACTIVE);
	t->d.version = 3;
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_attr(dn, "pwdAccountLockedTime", NULL);
	assert_true(user_can_bind(dn, "correct horse 1"));
	assert_true(has_value(dn, "memberOf", staff));
	assert_true(has_value(dn, "memberOf", sales));
	assert_int_equal(count_ops(&t->r, "enable"), 1);
	assert_int_equal(count_ops(&t->r, "create_group"), 2);
	/* Unlock comes last, after the groups. */
	assert_string_equal(t->r.ops[t->r.nops - 1].op, "enable");
}

static void test_reapply_makes_no_writes(void **state)
{
	t_t *t = *state;
	char dn[512], staff[256];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "R&D, Europe", LC_ACTIVE);
	id_attrs_set(&t->d.attributes, "sn", "O'Brien");
	id_attrs_set(&t->d.attributes, "cn", "Ann O'Brien");
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=R&D\\, Europe", t);
	group_dn(staff, sizeof(staff), "staff", t);
	assert_true(exists(dn));
	char ou[512];
	snprintf(ou, sizeof(ou), "ou=R&D\\2C Europe,%s", t->people);
	assert_attr(ou, "ou", "R&D, Europe");
	assert_attr(dn, "sn", "O'Brien");

	char *csn = get1(dn, "entryCSN"), *ts = get1(dn, "modifyTimestamp");
	char *gcsn = get1(staff, "entryCSN");
	uint64_t w = sink_ldap_writes(t->sink);
	t->d.version = 2; /* a re-delivery or an unrelated new version */
	assert_int_equal(apply(t, &t->d), SINK_NOOP);
	assert_int_equal(t->r.nops, 0);
	assert_null(t->r.error);
	assert_int_equal(sink_ldap_writes(t->sink), w);
	assert_attr(dn, "entryCSN", csn);
	assert_attr(dn, "modifyTimestamp", ts);
	assert_attr(staff, "entryCSN", gcsn);
	free(csn);
	free(ts);
	free(gcsn);

	/* Same after a change and a disable: the second apply is always free. */
	id_attrs_set(&t->d.attributes, "title", "Lead");
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_int_equal(apply(t, &t->d), SINK_NOOP);
	set_state(&t->d, LC_DISABLED);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	w = sink_ldap_writes(t->sink);
	csn = get1(dn, "entryCSN");
	assert_int_equal(apply(t, &t->d), SINK_NOOP);
	assert_int_equal(sink_ldap_writes(t->sink), w);
	assert_attr(dn, "entryCSN", csn);
	free(csn);
}

static void test_uid_conflict(void **state)
{
	t_t *t = *state;
	char dn[512];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	char *csn = get1(dn, "entryCSN");

	/* Another employee mapped to the same uid, in another department. */
	mk(&t->d2, "E2002", "asmith", "Adam", "Smith", "Legal", LC_ACTIVE);
	uint64_t w = sink_ldap_writes(t->sink);
	assert_int_equal(apply(t, &t->d2), SINK_FAILED);
	assert_string_equal(t->r.error, "uid asmith already used by employee E1001");
	assert_int_equal(t->r.nops, 0);
	assert_int_equal(sink_ldap_writes(t->sink), w);
	assert_int_equal(count_entries(t->people, "(employeeNumber=E2002)"), 0);
	char ou[512];
	snprintf(ou, sizeof(ou), "ou=Legal,%s", t->people);
	assert_false(exists(ou));
	assert_attr(dn, "entryCSN", csn);
	assert_attr(dn, "cn", "Ann Smith");
	free(csn);

	/* An existing employee renamed onto a taken uid: nothing changes for him. */
	mk(&t->d2, "E2002", "adsmith", "Adam", "Smith", "Legal", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	char dn2[512];
	dn_of(dn2, sizeof(dn2), "uid=adsmith", "ou=Legal", t);
	id_attrs_set(&t->d2.attributes, "uid", "asmith");
	id_attrs_set(&t->d2.attributes, "title", "Counsel");
	assert_int_equal(apply(t, &t->d2), SINK_FAILED);
	assert_string_equal(t->r.error, "uid asmith already used by employee E1001");
	assert_true(exists(dn2));
	assert_attr(dn2, "title", "Engineer");
}

static void test_manager(void **state)
{
	t_t *t = *state;
	char dn[512], boss[512];
	mk(&t->d, "E2", "bjones", "Bob", "Jones", "Sales", LC_ACTIVE);
	t->d.manager_id = strdup("E1");
	/* The manager has no entry yet: created without, noted in the result. */
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=bjones", "ou=Sales", t);
	assert_attr(dn, "manager", NULL);
	const sink_op_t *note = find_op(&t->r, "manager_pending", "manager");
	assert_non_null(note);
	assert_string_equal(note->new_value, "E1");

	mk(&t->d2, "E1", "aboss", "Alice", "Boss", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	dn_of(boss, sizeof(boss), "uid=aboss", "ou=Sales", t);

	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_true(has_value(dn, "manager", boss));
	assert_null(find_op(&t->r, "manager_pending", NULL));
	assert_int_equal(apply(t, &t->d), SINK_NOOP);

	/* The manager is renamed.  slapd's refint overlay (configured for
	 * `manager`) moves the reference too, but in the background: the
	 * report's next apply either finds it moved already or moves it. */
	id_attrs_set(&t->d2.attributes, "uid", "alice");
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	dn_of(boss, sizeof(boss), "uid=alice", "ou=Sales", t);
	sink_outcome_t o = apply(t, &t->d);
	assert_true(o == SINK_APPLIED || o == SINK_NOOP);
	assert_true(has_value(dn, "manager", boss));
}

static void test_converges_after_partial_apply(void **state)
{
	t_t *t = *state;
	char dn[512], staff[256], ou[512];
	/* What a crash right after the add would leave: entry, no groups, stale attrs. */
	snprintf(ou, sizeof(ou), "ou=Sales,%s", t->people);
	const char *o[] = {"objectClass", "organizationalUnit", "ou", "Sales", NULL};
	admin_add(ou, o);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	const char *e[] = {
	    "objectClass", "inetOrgPerson",  "uid",   "asmith", "cn", "Ann S", "sn",
	    "Smith",       "employeeNumber", "E1001", NULL};
	admin_add(dn, e);
	group_dn(staff, sizeof(staff), "staff", t);
	const char *g[] = {"objectClass", "groupOfNames", "cn", "staff", "member", dn,
	                   NULL};
	admin_add(staff, g);

	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_int_equal(count_ops(&t->r, "add"), 0);
	assert_int_equal(count_ops(&t->r, "group_add"), 1); /* dept-sales only */
	assert_attr(dn, "cn", "Ann Smith");
	assert_attr(dn, "mail", "asmith@example.com");
	assert_int_equal(count_values(dn, "memberOf"), 2);
	assert_int_equal(count_values(staff, "member"), 1);
	assert_int_equal(apply(t, &t->d), SINK_NOOP);

	/* A crash between the rename and the attribute update. */
	char moved[512];
	dn_of(moved, sizeof(moved), "uid=ajones", "ou=Sales", t);
	assert_int_equal(ldap_rename_s(adm, dn, "uid=ajones", NULL, 1, NULL, NULL),
	                 LDAP_SUCCESS);
	id_attrs_set(&t->d.attributes, "uid", "ajones");
	id_attrs_set(&t->d.attributes, "mail", "ajones@example.com");
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_null(find_op(&t->r, "modrdn", NULL));
	assert_attr(moved, "mail", "ajones@example.com");
	assert_int_equal(apply(t, &t->d), SINK_NOOP);
}

static void test_delete(void **state)
{
	t_t *t = *state;
	char dn[512], staff[256];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	mk(&t->d2, "E1002", "bjones", "Bob", "Jones", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	group_dn(staff, sizeof(staff), "staff", t);
	t->d.state = LC_DELETED;
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_false(exists(dn));
	assert_false(has_value(staff, "member", dn));
	assert_int_equal(count_values(staff, "member"), 1);
	assert_int_equal(count_ops(&t->r, "delete"), 1);
	assert_int_equal(apply(t, &t->d), SINK_NOOP);
}

static void test_odd_ids_and_duplicate_entries(void **state)
{
	t_t *t = *state;
	char dn[512];
	/* Filter metacharacters in an employee id match only that id. */
	mk(&t->d, "E*1(x)", "oddone", "Odd", "One", "Sales", LC_ACTIVE);
	mk(&t->d2, "E71(x)", "oddtwo", "Odd", "Two", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_non_null(find_op(&t->r, "add", "dn"));
	dn_of(dn, sizeof(dn), "uid=oddone", "ou=Sales", t);
	assert_attr(dn, "employeeNumber", "E*1(x)");
	assert_int_equal(apply(t, &t->d), SINK_NOOP);

	/* Two entries claim one employee: refuse, name both, touch neither. */
	char dup[512];
	dn_of(dup, sizeof(dup), "uid=oddcopy", "ou=Sales", t);
	const char *e[] = {
	    "objectClass", "inetOrgPerson",  "uid",    "oddcopy", "cn", "Copy", "sn",
	    "Copy",        "employeeNumber", "E*1(x)", NULL};
	admin_add(dup, e);
	id_attrs_set(&t->d.attributes, "title", "Changed");
	assert_int_equal(apply(t, &t->d), SINK_FAILED);
	assert_non_null(strstr(t->r.error, "has 2 entries"));
	assert_non_null(strstr(t->r.error, "uid=oddcopy"));
	assert_attr(dn, "title", "Engineer");
}

static void test_recreates_ou_deleted_behind_its_back(void **state)
{
	t_t *t = *state;
	char dn[512], ou[512];
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	/* Someone removes her and the OU while the sink remembers the OU. */
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	snprintf(ou, sizeof(ou), "ou=Sales,%s", t->people);
	assert_int_equal(ldap_delete_ext_s(adm, dn, NULL, NULL), LDAP_SUCCESS);
	assert_int_equal(ldap_delete_ext_s(adm, ou, NULL, NULL), LDAP_SUCCESS);
	mk(&t->d2, "E1002", "bjones", "Bob", "Jones", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	assert_int_equal(count_ops(&t->r, "create_ou"), 1);
	dn_of(dn, sizeof(dn), "uid=bjones", "ou=Sales", t);
	assert_true(exists(dn));
}

static void test_open_errors(void **state)
{
	t_t *t = *state;
	id_err_t err = {0};
	sink_ldap_opts_t o = {.url = "ldap://127.0.0.1:1/",
	                      .bind_dn = ADMIN_DN,
	                      .bind_password = ADMIN_PW,
	                      .people_dn = t->people,
	                      .groups_dn = t->groups,
	                      .timeout_ms = 2000};
	assert_null(sink_ldap_open(&o, &err));
	assert_int_equal(err.code, ID_ELDAP);
	assert_non_null(strstr(err.msg, "ldap://127.0.0.1:1/"));

	o.url = url;
	o.bind_password = "wrong-secret-xyz";
	assert_null(sink_ldap_open(&o, &err));
	assert_non_null(strstr(err.msg, "Invalid credentials"));
	assert_null(strstr(err.msg, "wrong-secret-xyz"));
}

/* ---- reconnect: through a relay whose connections the test can cut ---- */

static void test_reconnects_after_connection_loss(void **state)
{
	t_t *t = *state;
	tcp_relay_t r;
	char rurl[64], dn[512];
	assert_int_equal(tcp_relay_start(&r, url, 389), 0);
	snprintf(rurl, sizeof(rurl), "ldap://127.0.0.1:%d/", r.port);
	sink_ldap_close(t->sink);
	t->sink = open_sink(t, rurl);

	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_int_equal(tcp_relay_cut(&r),
	                 0); /* the server side "went away" while we were idle */
	id_attrs_set(&t->d.attributes, "title", "Manager");
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	assert_attr(dn, "title", "Manager");

	/* Unreachable for good: a transient error, and the result says FAILED. */
	assert_int_equal(tcp_relay_stop(&r), 0);
	id_attrs_set(&t->d.attributes, "title", "Director");
	id_err_t err = {0};
	int rc = sink_ldap_apply(t->sink, &t->d, &t->r, &err);
	assert_true(rc == ID_ELDAP || rc == ID_ETIMEOUT);
	assert_int_equal(t->r.outcome, SINK_FAILED);
	assert_non_null(t->r.error);
	assert_attr(dn, "title", "Manager");
}

/* A hand-made posixAccount (two object classes: admin_add takes one value
 * per attribute). */
static void add_hand_posix(const char *dn, const char *uid, const char *number)
{
	char *oc[] = {"inetOrgPerson", "posixAccount", NULL};
	char *u[] = {(char *)uid, NULL}, *cn[] = {"Hand", NULL};
	char *n[] = {(char *)number, NULL}, *g[] = {"1", NULL}, *h[] = {"/h", NULL};
	LDAPMod m[] = {
	    {.mod_op = LDAP_MOD_ADD, .mod_type = "objectClass", .mod_values = oc},
	    {.mod_op = LDAP_MOD_ADD, .mod_type = "uid", .mod_values = u},
	    {.mod_op = LDAP_MOD_ADD, .mod_type = "cn", .mod_values = cn},
	    {.mod_op = LDAP_MOD_ADD, .mod_type = "sn", .mod_values = cn},
	    {.mod_op = LDAP_MOD_ADD, .mod_type = "uidNumber", .mod_values = n},
	    {.mod_op = LDAP_MOD_ADD, .mod_type = "gidNumber", .mod_values = g},
	    {.mod_op = LDAP_MOD_ADD, .mod_type = "homeDirectory", .mod_values = h}};
	LDAPMod *mp[] = {&m[0], &m[1], &m[2], &m[3], &m[4], &m[5], &m[6], NULL};
	int rc = ldap_add_ext_s(adm, dn, mp, NULL, NULL);
	if (rc != LDAP_SUCCESS)
		fail_msg("admin add %s: %s", dn, ldap_err2string(rc));
}

/* posixAccount: numbers after the highest below base_dn, a number taken by
 * hand meanwhile skipped, nothing rewritten on a re-apply, posixAccount
 * added to an entry made without it in one modify, a bad template refused. */
static void test_posix(void **state)
{
	t_t *t = *state;
	char dn[512], dn2[512], dn3[512], hand[512];
	snprintf(hand, sizeof(hand), "uid=hand,%s", t->people);
	add_hand_posix(hand, "hand", "50000");
	sink_ldap_opts_t o = {.url = url,
	                      .bind_dn = ADMIN_DN,
	                      .bind_password = ADMIN_PW,
	                      .people_dn = t->people,
	                      .groups_dn = t->groups,
	                      .timeout_ms = 5000,
	                      .posix = true,
	                      .base_dn = t->base,
	                      .posix_uid_min = 49000,
	                      .posix_gid = 500,
	                      .posix_home = "/u/%u",
	                      .posix_shell = "/bin/sh"};
	id_err_t err = {0};
	sink_ldap_t *plain = t->sink;
	t->sink = sink_ldap_open(&o, &err);
	if (t->sink == NULL)
		fail_msg("open with posix: %s", err.msg);
	assert_int_equal(sink_ldap_next_uid_number(t->sink), 50001);
	assert_int_equal(sink_ldap_next_uid_number(plain), 0);

	mk(&t->d, "E1", "pone", "P", "One", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=pone", "ou=Sales", t);
	assert_true(has_value(dn, "objectClass", "posixAccount"));
	assert_true(has_value(dn, "objectClass", "inetOrgPerson"));
	assert_attr(dn, "uidNumber", "50001");
	assert_attr(dn, "gidNumber", "500");
	assert_attr(dn, "homeDirectory", "/u/pone");
	assert_attr(dn, "loginShell", "/bin/sh");
	assert_non_null(find_op(&t->r, "add", "uidNumber"));

	/* Someone takes 50002 by hand: the next hire skips it. */
	snprintf(hand, sizeof(hand), "uid=hand2,%s", t->base);
	add_hand_posix(hand, "hand2", "50002");
	mk(&t->d2, "E2", "ptwo", "P", "Two", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	dn_of(dn2, sizeof(dn2), "uid=ptwo", "ou=Sales", t);
	assert_attr(dn2, "uidNumber", "50003");
	assert_int_equal(count_entries(t->base, "(uidNumber=50002)"), 1);

	/* Converged: nothing is written again. */
	uint64_t w = sink_ldap_writes(t->sink);
	assert_int_equal(apply(t, &t->d), SINK_NOOP);
	assert_int_equal(sink_ldap_writes(t->sink), w);

	/* Made without posix, then converged with it: one modify request. */
	mk(&t->d2, "E3", "pthree", "P", "Three", "Sales", LC_ACTIVE);
	sink_ldap_t *px = t->sink;
	t->sink = plain;
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	dn_of(dn3, sizeof(dn3), "uid=pthree", "ou=Sales", t);
	assert_false(has_value(dn3, "objectClass", "posixAccount"));
	assert_attr(dn3, "uidNumber", NULL);
	t->sink = px;
	w = sink_ldap_writes(t->sink);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	assert_int_equal(sink_ldap_writes(t->sink), w + 1);
	assert_true(has_value(dn3, "objectClass", "posixAccount"));
	assert_attr(dn3, "uidNumber", "50004");
	assert_attr(dn3, "homeDirectory", "/u/pthree");
	const sink_op_t *op = find_op(&t->r, "modify", "objectClass");
	assert_non_null(op);
	assert_string_equal(op->new_value, "posixAccount");
	assert_int_equal(count_entries(t->base, "(uidNumber=*)"), 5);
	sink_ldap_close(t->sink);
	t->sink = plain;

	/* A template with an unknown % is refused at open. */
	o.posix_home = "/home/%n";
	assert_null(sink_ldap_open(&o, &err));
	assert_int_equal(err.code, ID_ECONFIG);
	assert_non_null(strstr(err.msg, "ldap.posix_home"));
}

/*
 * A batch (sink_ldap_batch_begin/end) over two shared handles: the applies
 * create the entries and leave the memberships to the batch's end, which
 * adds each group's new members in one request (creating the group with
 * them) and completes the results; a later batch adds to existing groups.
 */
static void test_batch_members(void **state)
{
	t_t *t = *state;
	sink_ldap_t *s2 = open_sink(t, url);
	sink_result_t r2;
	desired_identity_t d3;
	id_err_t err = {0};
	char dn1[512], dn2[512], dn3[512], staff[256], sales[256];
	sink_result_init(&r2);
	desired_identity_init(&d3);
	sink_ldap_share(s2, t->sink);
	group_dn(staff, sizeof(staff), "staff", t);
	group_dn(sales, sizeof(sales), "dept-sales", t);
	dn_of(dn1, sizeof(dn1), "uid=asmith", "ou=Sales", t);
	dn_of(dn2, sizeof(dn2), "uid=bjones", "ou=Sales", t);
	dn_of(dn3, sizeof(dn3), "uid=cdoe", "ou=Sales", t);
	mk(&t->d, "E1001", "asmith", "Alice", "Smith", "Sales", LC_ACTIVE);
	mk(&t->d2, "E1002", "bjones", "Bob", "Jones", "Sales", LC_ACTIVE);

	sink_ldap_batch_begin(t->sink);
	assert_int_equal(sink_ldap_apply(t->sink, &t->d, &t->r, &err), 0);
	assert_int_equal(sink_ldap_apply(s2, &t->d2, &r2, &err), 0);
	/* The entries are there, the memberships not yet. */
	assert_true(exists(dn1));
	assert_true(exists(dn2));
	assert_false(exists(staff));
	assert_int_equal(count_ops(&t->r, "group_add"), 0);
	uint64_t w0 = sink_ldap_writes(t->sink) + sink_ldap_writes(s2);
	assert_int_equal(sink_ldap_batch_end(t->sink, &err), 0);
	/* Per group: a modify (no such group yet), then one add with both
	 * members; not one request per member. */
	assert_int_equal(sink_ldap_writes(t->sink) + sink_ldap_writes(s2) - w0, 4);

	for (int i = 0; i < 2; i++) {
		const char *dn = i == 0 ? dn1 : dn2;
		const sink_result_t *r = i == 0 ? &t->r : &r2;
		assert_int_equal(r->outcome, SINK_APPLIED);
		assert_null(r->error);
		assert_int_equal(count_ops(r, "group_add"), 2);
		assert_int_equal(count_values(dn, "memberOf"), 2);
		assert_true(has_value(dn, "memberOf", staff));
		assert_true(has_value(dn, "memberOf", sales));
		assert_true(has_value(staff, "member", dn));
		assert_true(has_value(sales, "member", dn));
	}
	/* Each group created once, with both members. */
	assert_int_equal(
	    count_ops(&t->r, "create_group") + count_ops(&r2, "create_group"), 2);
	assert_int_equal(count_values(staff, "member"), 2);

	/* Existing groups: one modify each for the batch's new member. */
	mk(&d3, "E1003", "cdoe", "Carol", "Doe", "Sales", LC_ACTIVE);
	sink_ldap_batch_begin(s2);
	assert_int_equal(sink_ldap_apply(s2, &d3, &r2, &err), 0);
	/* Applying again inside the batch finds nothing else to do. */
	assert_int_equal(sink_ldap_apply(t->sink, &t->d, &t->r, &err), 0);
	assert_int_equal(t->r.outcome, SINK_NOOP);
	w0 = sink_ldap_writes(s2);
	assert_int_equal(sink_ldap_batch_end(s2, &err), 0);
	assert_int_equal(sink_ldap_writes(s2) - w0, 2);
	assert_int_equal(r2.outcome, SINK_APPLIED);
	assert_int_equal(count_ops(&r2, "group_add"), 2);
	assert_int_equal(count_ops(&r2, "create_group"), 0);
	assert_true(has_value(dn3, "memberOf", staff));
	assert_int_equal(count_values(staff, "member"), 3);
	assert_int_equal(count_values(sales, "member"), 3);

	/* Outside a batch, an apply writes its memberships itself again. */
	admin_modify(staff, LDAP_MOD_DELETE, "member", dn3);
	assert_int_equal(apply(t, &d3), SINK_APPLIED);
	assert_int_equal(count_ops(&t->r, "group_add"), 1);
	assert_true(has_value(dn3, "memberOf", staff));

	desired_identity_fini(&d3);
	sink_result_fini(&r2);
	sink_ldap_close(s2);
}

/*
 * The directory goes away between a batch's applies and its end: the
 * result whose memberships could not be made says DEFERRED (the loop
 * applies that version again), and the next apply makes them.
 */
static void test_batch_unreachable(void **state)
{
	t_t *t = *state;
	tcp_relay_t rl;
	char rurl[64], dn[512], staff[256];
	id_err_t err = {0};
	assert_int_equal(tcp_relay_start(&rl, url, 389), 0);
	snprintf(rurl, sizeof(rurl), "ldap://127.0.0.1:%d/", rl.port);
	sink_ldap_t *s = open_sink(t, rurl);
	dn_of(dn, sizeof(dn), "uid=asmith", "ou=Sales", t);
	group_dn(staff, sizeof(staff), "staff", t);
	mk(&t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);

	sink_ldap_batch_begin(s);
	assert_int_equal(sink_ldap_apply(s, &t->d, &t->r, &err), 0);
	assert_int_equal(t->r.outcome, SINK_APPLIED); /* the entry, so far */
	assert_true(exists(dn));
	assert_int_equal(tcp_relay_stop(&rl), 0);
	assert_int_equal(sink_ldap_batch_end(s, &err), 0);
	assert_int_equal(t->r.outcome, SINK_DEFERRED);
	assert_non_null(t->r.error);
	assert_int_equal(count_ops(&t->r, "group_add"), 0);
	assert_false(exists(staff));

	/* Applied again (here through a handle that reaches the directory). */
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	assert_int_equal(count_ops(&t->r, "add"), 0);
	assert_int_equal(count_ops(&t->r, "group_add"), 2);
	assert_true(has_value(dn, "memberOf", staff));
	sink_ldap_close(s);
}

/*
 * A create reads its manager in the same search as its own entry and the
 * holders of its uid: the manager's entry is the manager, not a holder of
 * the uid — unless it really holds it.
 */
static void test_create_reads_manager(void **state)
{
	t_t *t = *state;
	char dn[512], boss[512];
	mk(&t->d2, "E1", "aboss", "Alice", "Boss", "Sales", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_APPLIED);
	dn_of(boss, sizeof(boss), "uid=aboss", "ou=Sales", t);

	mk(&t->d, "E2", "bjones", "Bob", "Jones", "Sales", LC_ACTIVE);
	t->d.manager_id = strdup("E1");
	assert_int_equal(apply(t, &t->d), SINK_APPLIED);
	dn_of(dn, sizeof(dn), "uid=bjones", "ou=Sales", t);
	assert_true(has_value(dn, "manager", boss));
	assert_null(find_op(&t->r, "manager_pending", NULL));

	/* A third one whose uid is the manager's: refused, naming him. */
	desired_identity_t d3;
	desired_identity_init(&d3);
	mk(&d3, "E3", "aboss", "Al", "Boss", "Sales", LC_ACTIVE);
	d3.manager_id = strdup("E1");
	assert_int_equal(apply(t, &d3), SINK_FAILED);
	assert_non_null(strstr(t->r.error, "uid aboss already used by employee E1"));
	assert_int_equal(count_entries(t->people, "(employeeNumber=E3)"), 0);
	desired_identity_fini(&d3);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_create),
	    T(test_update_keeps_unmanaged),
	    T(test_rename_uid),
	    T(test_ou_move),
	    T(test_disable_enable),
	    T(test_reapply_makes_no_writes),
	    T(test_uid_conflict),
	    T(test_manager),
	    T(test_converges_after_partial_apply),
	    T(test_delete),
	    T(test_odd_ids_and_duplicate_entries),
	    T(test_recreates_ou_deleted_behind_its_back),
	    T(test_open_errors),
	    T(test_reconnects_after_connection_loss),
	    T(test_posix),
	    T(test_batch_members),
	    T(test_batch_unreachable),
	    T(test_create_reads_manager),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
