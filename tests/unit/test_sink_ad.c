/*
 * test_sink_ad.c — the Active Directory sink against a real Samba AD DC.
 *
 * Environment (`sh scripts/samba.sh env` prints it):
 *   IDSTREAM_TEST_AD_URL            default ldaps://127.0.0.1:636
 *   IDSTREAM_TEST_AD_PASSWORD_FILE  the Administrator password (required)
 *   IDSTREAM_TEST_AD_BIND           default Administrator@EXAMPLE.TEST
 * The domain's base DN is read from the RootDSE.  No DC there is a failure,
 * not a skip.
 *
 * Every assertion about the directory is made with this file's own
 * Administrator connection, never through the sink's read path.  Each test
 * works in its own subtree OU=adtest-<pid>-<n>,<domain> (people and groups
 * below it), deleted afterwards.  sAMAccountName is unique in the whole
 * domain, so every uid gets a per-test suffix.
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
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/support/tcp_relay.h"
#include "sinks/sink_ad.h"

static const char *url;
static const char *bind_name;
static char *admin_pw;
static char base_dn[256];
static char upn_suffix[128];
static LDAP *adm; /* the test's own connection, for assertions */
static int test_no;

typedef struct t {
	char base[320];
	char people[400];
	char groups[400];
	char tag[8];      /* per-test suffix of every uid */
	char pwfile[512]; /* the sink's password delivery file */
	sink_ad_t *sink;
	sink_result_t r;
	desired_identity_t d, d2;
} t_t;

/* ---- the test's own LDAP helpers ---- */

static LDAP *connect_as(const char *u, const char *who, const char *pw, int *rc_out)
{
	LDAP *ld = NULL;
	int v3 = LDAP_VERSION3, never = LDAP_OPT_X_TLS_NEVER, zero = 0;
	struct timeval tv = {10, 0};
	if (ldap_initialize(&ld, u) != LDAP_SUCCESS)
		return NULL;
	ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
	ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
	ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &never);
	ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero);
	struct berval cred = {strlen(pw), (char *)pw};
	int rc = ldap_sasl_bind_s(ld, who, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (rc_out)
		*rc_out = rc;
	if (rc != LDAP_SUCCESS) {
		ldap_unbind_ext_s(ld, NULL, NULL);
		return NULL;
	}
	return ld;
}

/* First value of attr on dn, or NULL. */
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

/* Server-side comparison, so DN values match however they are spelled. */
static bool has_value(const char *dn, const char *attr, const char *value)
{
	struct berval bv = {strlen(value), (char *)value};
	return ldap_compare_ext_s(adm, dn, attr, &bv, NULL, NULL) == LDAP_COMPARE_TRUE;
}

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

static void admin_modify(const char *dn, int op, const char *attr, const char *value)
{
	char *vals[] = {(char *)value, NULL};
	LDAPMod m = {
	    .mod_op = op, .mod_type = (char *)attr, .mod_values = value ? vals : NULL};
	LDAPMod *mods[] = {&m, NULL};
	int rc = ldap_modify_ext_s(adm, dn, mods, NULL, NULL);
	if (rc != LDAP_SUCCESS)
		fail_msg("admin modify %s %s: %s", dn, attr, ldap_err2string(rc));
}

/* Deletes base and everything below it (AD's tree delete). */
static void delete_tree(const char *base)
{
	LDAPControl tree = {.ldctl_oid = "1.2.840.113556.1.4.805",
	                    .ldctl_value = {0, NULL},
	                    .ldctl_iscritical = 1};
	LDAPControl *ctrls[] = {&tree, NULL};
	ldap_delete_ext_s(adm, base, ctrls, NULL);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return strdup(buf);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	url = getenv("IDSTREAM_TEST_AD_URL");
	if (url == NULL || url[0] == '\0')
		url = "ldaps://127.0.0.1:636";
	bind_name = getenv("IDSTREAM_TEST_AD_BIND");
	if (bind_name == NULL || bind_name[0] == '\0')
		bind_name = "Administrator@EXAMPLE.TEST";
	const char *pwf = getenv("IDSTREAM_TEST_AD_PASSWORD_FILE");
	if (pwf == NULL || pwf[0] == '\0' || (admin_pw = read_file(pwf)) == NULL) {
		fprintf(stderr,
		        "FAIL: IDSTREAM_TEST_AD_PASSWORD_FILE is %s. Start a Samba AD DC "
		        "with `sh scripts/samba.sh start` and export what `sh "
		        "scripts/samba.sh env` prints.\n",
		        pwf && *pwf ? "unreadable" : "not set");
		return -1;
	}
	int rc = 0;
	adm = connect_as(url, bind_name, admin_pw, &rc);
	if (adm == NULL) {
		fprintf(stderr,
		        "FAIL: no AD DC answers at %s (bind as %s: %s). Start one with "
		        "`sh scripts/samba.sh start`; set IDSTREAM_TEST_AD_URL for "
		        "another address.\n",
		        url, bind_name, ldap_err2string(rc));
		return -1;
	}
	char *nc = get1("", "defaultNamingContext");
	if (nc == NULL) {
		fprintf(stderr, "FAIL: %s has no defaultNamingContext\n", url);
		return -1;
	}
	snprintf(base_dn, sizeof(base_dn), "%s", nc);
	free(nc);
	/* DC=example,DC=test → example.test */
	size_t k = 0;
	for (const char *p = base_dn; *p && k + 1 < sizeof(upn_suffix);) {
		if (strncasecmp(p, "DC=", 3) == 0) {
			if (k > 0)
				upn_suffix[k++] = '.';
			p += 3;
			while (*p && *p != ',' && k + 1 < sizeof(upn_suffix))
				upn_suffix[k++] = *p++;
		}
		while (*p && *p != ',')
			p++;
		if (*p == ',')
			p++;
	}
	upn_suffix[k] = '\0';
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (adm)
		ldap_unbind_ext_s(adm, NULL, NULL);
	adm = NULL;
	if (admin_pw) {
		explicit_bzero(admin_pw, strlen(admin_pw));
		free(admin_pw);
	}
	admin_pw = NULL;
	return 0;
}

static sink_ad_opts_t sink_opts(const t_t *t, const char *u)
{
	sink_ad_opts_t o = {.url = u,
	                    .bind_dn = bind_name,
	                    .bind_password = admin_pw,
	                    .base_dn = base_dn,
	                    .people_dn = t->people,
	                    .groups_dn = t->groups,
	                    .upn_suffix = upn_suffix,
	                    .tls_check =
	                        SINK_AD_TLS_NEVER, /* the DC's cert is self-signed */
	                    .password_file = t->pwfile,
	                    .timeout_ms = 10000};
	return o;
}

static sink_ad_t *open_sink(const t_t *t, const char *u)
{
	sink_ad_opts_t o = sink_opts(t, u);
	id_err_t err = {0};
	sink_ad_t *s = sink_ad_open(&o, &err);
	if (s == NULL)
		fail_msg("sink_ad_open(%s): %s", u, err.msg);
	return s;
}

static int setup(void **state)
{
	t_t *t = calloc(1, sizeof(*t));
	int n = ++test_no;
	snprintf(t->base, sizeof(t->base), "OU=adtest-%d-%d,%s", (int)getpid(), n,
	         base_dn);
	snprintf(t->people, sizeof(t->people), "OU=people,%s", t->base);
	snprintf(t->groups, sizeof(t->groups), "OU=groups,%s", t->base);
	snprintf(t->tag, sizeof(t->tag), "%x", (unsigned)((getpid() & 0xffff) << 4 | n));
	const char *dir = getenv("IDSTREAM_TEST_DIR");
	snprintf(t->pwfile, sizeof(t->pwfile), "%s/ad-passwords-%d-%d",
	         dir && *dir ? dir : "/tmp", (int)getpid(), n);
	unlink(t->pwfile);
	delete_tree(t->base);
	const char *ou[] = {"objectClass", "organizationalUnit", NULL};
	admin_add(t->base, ou);
	admin_add(t->people, ou);
	admin_add(t->groups, ou);
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
	sink_ad_close(t->sink);
	sink_result_fini(&t->r);
	desired_identity_fini(&t->d);
	desired_identity_fini(&t->d2);
	delete_tree(t->base);
	unlink(t->pwfile);
	free(t);
	return 0;
}

/* uid with the test's suffix: "asmith" → "asmith1a2b". */
static const char *U(const t_t *t, const char *uid, char buf[32])
{
	snprintf(buf, 32, "%s%s", uid, t->tag);
	return buf;
}

static void set_groups(desired_identity_t *d, const char *dept, bool active)
{
	for (size_t i = 0; i < d->ngroups; i++)
		free(d->groups[i]);
	free(d->groups);
	d->groups = NULL;
	d->ngroups = 0;
	if (!active)
		return;
	char buf[160] = "dept-";
	size_t j = 5;
	for (const char *p = dept; *p && j + 1 < sizeof(buf); p++)
		if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
			buf[j++] = *p;
		else if (*p >= 'A' && *p <= 'Z')
			buf[j++] = (char)(*p - 'A' + 'a');
	buf[j] = '\0';
	desired_identity_add_group(d, "staff");
	desired_identity_add_group(d, buf);
}

/* A desired identity as the default mapping would produce it. */
static void mk(const t_t *t, desired_identity_t *d, const char *id, const char *uid,
               const char *first, const char *last, const char *dept,
               lifecycle_state_t state)
{
	char buf[256], u[32];
	desired_identity_fini(d);
	d->employee_id = strdup(id);
	d->version = 1;
	d->state = state;
	id_attrs_set(&d->attributes, "uid", U(t, uid, u));
	snprintf(buf, sizeof(buf), "%s %s", first, last);
	id_attrs_set(&d->attributes, "cn", buf);
	id_attrs_set(&d->attributes, "displayName", buf);
	id_attrs_set(&d->attributes, "sn", last);
	id_attrs_set(&d->attributes, "givenName", first);
	snprintf(buf, sizeof(buf), "%s@example.com", u);
	id_attrs_set(&d->attributes, "mail", buf);
	id_attrs_set(&d->attributes, "employeeNumber", id);
	id_attrs_set(&d->attributes, "employeeType", "full_time");
	id_attrs_set(&d->attributes, "title", "Engineer");
	id_attrs_set(&d->attributes, "l", "Berlin");
	id_attrs_set(&d->attributes, "departmentNumber", dept);
	snprintf(buf, sizeof(buf), "ou=%s", dept);
	d->container = strdup(buf);
	set_groups(d, dept, state == LC_ACTIVE);
}

static sink_outcome_t apply(t_t *t, const desired_identity_t *d)
{
	id_err_t err = {0};
	int rc = sink_ad_apply(t->sink, d, &t->r, &err);
	if (rc != 0)
		fail_msg("apply %s: rc %d: %s", d->employee_id, rc, err.msg);
	assert_string_equal(t->r.target, "ad");
	assert_string_equal(t->r.employee_id, d->employee_id);
	assert_int_equal(t->r.desired_version, d->version);
	assert_true(t->r.at > 0);
	if (t->r.outcome == SINK_FAILED)
		assert_non_null(t->r.error);
	return t->r.outcome;
}

static sink_outcome_t apply_ok(t_t *t, const desired_identity_t *d)
{
	sink_outcome_t o = apply(t, d);
	if (o == SINK_FAILED)
		fail_msg("apply %s failed: %s", d->employee_id, t->r.error);
	return o;
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

static void user_dn(char *buf, size_t len, const char *cn, const char *ou, const t_t *t)
{
	if (ou)
		snprintf(buf, len, "CN=%s,OU=%s,%s", cn, ou, t->people);
	else
		snprintf(buf, len, "CN=%s,%s", cn, t->people);
}

static void group_dn(char *buf, size_t len, const char *name, const t_t *t)
{
	snprintf(buf, len, "CN=%s,%s", name, t->groups);
}

static void assert_attr(const char *dn, const char *attr, const char *want)
{
	char *v = get1(dn, attr);
	if (want == NULL) {
		if (v != NULL)
			fail_msg("%s: %s is \"%s\", expected absent", dn, attr, v);
	} else if (v == NULL || strcmp(v, want) != 0) {
		fail_msg("%s: %s is \"%s\", expected \"%s\"", dn, attr,
		         v ? v : "(absent)", want);
	}
	free(v);
}

static bool is_member(const char *group, const char *user)
{
	return has_value(group, "member", user);
}

/* The password delivered last for employee id; checks the line's shape. */
static char *delivered_password(const t_t *t, const char *id, const char *sam)
{
	struct stat st;
	assert_int_equal(stat(t->pwfile, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	FILE *f = fopen(t->pwfile, "r");
	assert_non_null(f);
	char line[512], *pw = NULL;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *a = strtok(line, "\t"), *b = strtok(NULL, "\t"),
		     *c = strtok(NULL, "\t");
		assert_non_null(c);
		if (strcmp(a, id) == 0) {
			assert_string_equal(b, sam);
			free(pw);
			pw = strdup(c);
		}
	}
	fclose(f);
	assert_non_null(pw);
	return pw;
}

static int bind_rc(const char *who, const char *pw)
{
	int rc = 0;
	LDAP *ld = connect_as(url, who, pw, &rc);
	if (ld)
		ldap_unbind_ext_s(ld, NULL, NULL);
	return rc;
}

/* ---- tests ---- */

static void test_lifecycle(void **state)
{
	t_t *t = *state;
	char dn[512], dn2[512], dn3[512], staff[512], sales[512], mkt[512], u[32],
	    upn[192];
	U(t, "asmith", u);
	snprintf(upn, sizeof(upn), "%s@%s", u, upn_suffix);
	group_dn(staff, sizeof(staff), "staff", t);
	group_dn(sales, sizeof(sales), "dept-sales", t);
	group_dn(mkt, sizeof(mkt), "dept-marketing", t);

	/* Create. */
	mk(t, &t->d, "E1001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	user_dn(dn, sizeof(dn), "Ann Smith", "Sales", t);
	assert_true(exists(dn));
	assert_true(has_value(dn, "objectClass", "user"));
	assert_attr(dn, "sAMAccountName", u);
	assert_attr(dn, "userPrincipalName", upn);
	assert_attr(dn, "givenName", "Ann");
	assert_attr(dn, "sn", "Smith");
	assert_attr(dn, "displayName", "Ann Smith");
	char mail[96];
	snprintf(mail, sizeof(mail), "%s@example.com", u);
	assert_attr(dn, "mail", mail);
	assert_attr(dn, "title", "Engineer");
	assert_attr(dn, "department", "Sales");
	assert_attr(dn, "employeeID", "E1001");
	assert_attr(dn, "employeeNumber", "E1001");
	assert_attr(dn, "employeeType", "full_time");
	assert_attr(dn, "l", "Berlin");
	assert_attr(dn, "userAccountControl", "512");
	assert_attr(dn, "accountExpires", "9223372036854775807");
	assert_true(is_member(staff, dn));
	assert_true(is_member(sales, dn));
	assert_attr(staff, "sAMAccountName", "staff");
	assert_int_equal(count_ops(&t->r, "create_ou"), 1);
	assert_int_equal(count_ops(&t->r, "create_group"), 2);
	assert_int_equal(count_ops(&t->r, "group_add"), 2);
	assert_non_null(find_op(&t->r, "add", "unicodePwd"));
	/* The delivered password works, and appears in no op. */
	char *pw = delivered_password(t, "E1001", u);
	assert_int_equal(strlen(pw), 20);
	for (size_t i = 0; i < t->r.nops; i++)
		assert_true(t->r.ops[i].new_value == NULL ||
		            strstr(t->r.ops[i].new_value, pw) == NULL);
	assert_int_equal(bind_rc(upn, pw), LDAP_SUCCESS);
	assert_int_equal(bind_rc(dn, pw), LDAP_SUCCESS);

	/* Idempotence: nothing written, nothing changed on the server. */
	char *usn = get1(dn, "uSNChanged"), *when = get1(dn, "whenChanged");
	char *gusn = get1(staff, "uSNChanged");
	uint64_t w = sink_ad_writes(t->sink);
	assert_int_equal(apply_ok(t, &t->d), SINK_NOOP);
	assert_int_equal(t->r.nops, 0);
	assert_int_equal(sink_ad_writes(t->sink), w);
	assert_attr(dn, "uSNChanged", usn);
	assert_attr(dn, "whenChanged", when);
	assert_attr(staff, "uSNChanged", gusn);
	free(usn);
	free(when);
	free(gusn);

	/* Update. */
	id_attrs_set(&t->d.attributes, "title", "Lead Engineer");
	t->d.version = 2;
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_attr(dn, "title", "Lead Engineer");
	const sink_op_t *op = find_op(&t->r, "modify", "title");
	assert_non_null(op);
	assert_string_equal(op->old_value, "Engineer");
	assert_int_equal(t->r.nops, 1);

	/* Rename (marriage): CN, sAMAccountName and UPN change; groups follow. */
	char u2[32], upn2[192];
	U(t, "ajones", u2);
	snprintf(upn2, sizeof(upn2), "%s@%s", u2, upn_suffix);
	id_attrs_set(&t->d.attributes, "cn", "Ann Jones");
	id_attrs_set(&t->d.attributes, "displayName", "Ann Jones");
	id_attrs_set(&t->d.attributes, "sn", "Jones");
	id_attrs_set(&t->d.attributes, "uid", u2);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	user_dn(dn2, sizeof(dn2), "Ann Jones", "Sales", t);
	assert_false(exists(dn));
	assert_true(exists(dn2));
	assert_non_null(find_op(&t->r, "modrdn", "dn"));
	assert_attr(dn2, "sAMAccountName", u2);
	assert_attr(dn2, "userPrincipalName", upn2);
	assert_attr(dn2, "sn", "Jones");
	assert_true(is_member(staff, dn2));
	assert_true(is_member(sales, dn2));
	assert_int_equal(bind_rc(upn2, pw), LDAP_SUCCESS);

	/* Move to another department: OU, department and groups change. */
	id_attrs_set(&t->d.attributes, "departmentNumber", "Marketing");
	free(t->d.container);
	t->d.container = strdup("ou=Marketing");
	set_groups(&t->d, "Marketing", true);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	user_dn(dn3, sizeof(dn3), "Ann Jones", "Marketing", t);
	assert_false(exists(dn2));
	assert_true(exists(dn3));
	assert_attr(dn3, "department", "Marketing");
	assert_true(is_member(staff, dn3));
	assert_true(is_member(mkt, dn3));
	assert_false(is_member(sales, dn3));
	/* The emptied group stays: AD groups may be referenced by ACLs. */
	assert_true(exists(sales));
	assert_int_equal(count_values(sales, "member"), 0);
	assert_non_null(find_op(&t->r, "group_remove", "dept-sales"));
	assert_non_null(find_op(&t->r, "create_ou", NULL));

	/* Disable (termination): uAC 514, groups gone, the password stops working. */
	t->d.state = LC_DISABLED;
	set_groups(&t->d, "Marketing", false);
	id_attrs_set(&t->d.attributes, "terminationDate", "2030-06-30");
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_string_equal(t->r.ops[0].op, "disable");
	assert_attr(dn3, "userAccountControl", "514");
	assert_attr(dn3, "accountExpires", "135535680000000000"); /* 2030-07-01Z */
	assert_false(is_member(staff, dn3));
	assert_false(is_member(mkt, dn3));
	assert_int_equal(bind_rc(upn2, pw), LDAP_INVALID_CREDENTIALS);

	/* Enable (rehire): uAC 512, groups back, expiry lifted. */
	t->d.state = LC_ACTIVE;
	set_groups(&t->d, "Marketing", true);
	id_attrs_remove(&t->d.attributes, "terminationDate");
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_string_equal(t->r.ops[t->r.nops - 1].op, "enable");
	assert_attr(dn3, "userAccountControl", "512");
	assert_attr(dn3, "accountExpires", "9223372036854775807");
	assert_true(is_member(staff, dn3));
	assert_int_equal(bind_rc(upn2, pw), LDAP_SUCCESS);
	assert_int_equal(apply_ok(t, &t->d), SINK_NOOP);

	/* Delete. */
	t->d.state = LC_DELETED;
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_int_equal(t->r.nops, 1);
	assert_string_equal(t->r.ops[0].op, "delete");
	assert_false(exists(dn3));
	assert_int_equal(count_values(staff, "member"), 0);
	assert_int_equal(count_entries(t->people, "(employeeID=E1001)"), 0);
	assert_int_equal(apply_ok(t, &t->d), SINK_NOOP);
	explicit_bzero(pw, strlen(pw));
	free(pw);
}

static void test_manager(void **state)
{
	t_t *t = *state;
	char dn[512], mdn[512], mdn2[512];
	mk(t, &t->d, "E2001", "bjoe", "Bo", "Joe", "Sales", LC_ACTIVE);
	t->d.manager_id = strdup("E2000");
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	const sink_op_t *p = find_op(&t->r, "manager_pending", "manager");
	assert_non_null(p);
	assert_string_equal(p->new_value, "E2000");
	user_dn(dn, sizeof(dn), "Bo Joe", "Sales", t);
	assert_attr(dn, "manager", NULL);

	mk(t, &t->d2, "E2000", "mboss", "Mia", "Boss", "Sales", LC_ACTIVE);
	assert_int_equal(apply_ok(t, &t->d2), SINK_APPLIED);
	user_dn(mdn, sizeof(mdn), "Mia Boss", "Sales", t);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_null(find_op(&t->r, "manager_pending", NULL));
	assert_true(has_value(dn, "manager", mdn));
	assert_int_equal(apply_ok(t, &t->d), SINK_NOOP);

	/* The manager's rename: AD keeps the link, nothing to do for the report. */
	id_attrs_set(&t->d2.attributes, "cn", "Mia Boss-Ray");
	assert_int_equal(apply_ok(t, &t->d2), SINK_APPLIED);
	user_dn(mdn2, sizeof(mdn2), "Mia Boss-Ray", "Sales", t);
	assert_true(has_value(dn, "manager", mdn2));
	assert_int_equal(apply_ok(t, &t->d), SINK_NOOP);

	/* No manager in HR any more: the attribute goes. */
	free(t->d.manager_id);
	t->d.manager_id = NULL;
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_attr(dn, "manager", NULL);
}

static void test_prestart_hire_created_disabled(void **state)
{
	t_t *t = *state;
	char dn[512], u[32];
	/* PENDING: known hire, no user yet. */
	mk(t, &t->d, "E3001", "cnew", "Cy", "New", "Ops", LC_PENDING);
	id_attrs_set(&t->d.attributes, "accountExpires", "2031-01-31");
	uint64_t w = sink_ad_writes(t->sink);
	assert_int_equal(apply_ok(t, &t->d), SINK_NOOP);
	assert_int_equal(sink_ad_writes(t->sink), w);
	/* PRESTART: created disabled, with its password. */
	t->d.state = LC_PRESTART;
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	user_dn(dn, sizeof(dn), "Cy New", "Ops", t);
	assert_attr(dn, "userAccountControl", "514");
	assert_attr(dn, "accountExpires", "135721440000000000"); /* 2031-02-01Z */
	assert_null(find_op(&t->r, "disable", NULL)); /* disabled in the add itself */
	char *pw = delivered_password(t, "E3001", U(t, "cnew", u));
	assert_int_equal(bind_rc(dn, pw), LDAP_INVALID_CREDENTIALS);
	/* Start date reached: enabled with the password delivered at creation. */
	t->d.state = LC_ACTIVE;
	set_groups(&t->d, "Ops", true);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_attr(dn, "userAccountControl", "512");
	assert_int_equal(bind_rc(dn, pw), LDAP_SUCCESS);
	free(pw);
}

static void test_sam_conflict(void **state)
{
	t_t *t = *state;
	char u[32];
	mk(t, &t->d, "E4001", "dup", "Dee", "Up", "Sales", LC_ACTIVE);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	mk(t, &t->d2, "E4002", "dup", "Dan", "Up", "Sales", LC_ACTIVE);
	uint64_t w = sink_ad_writes(t->sink);
	assert_int_equal(apply(t, &t->d2), SINK_FAILED);
	char want[96];
	snprintf(want, sizeof(want), "sAMAccountName %s already used by employee E4001",
	         U(t, "dup", u));
	assert_non_null(strstr(t->r.error, want));
	assert_int_equal(sink_ad_writes(t->sink), w);
	assert_int_equal(count_entries(t->people, "(employeeID=E4002)"), 0);
}

static void test_cn_taken_uses_fallback(void **state)
{
	t_t *t = *state;
	char dn[512], alt[512], cn[96], u[32];
	mk(t, &t->d, "E5001", "asmith", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	mk(t, &t->d2, "E5002", "asmith2x", "Ann", "Smith", "Sales", LC_ACTIVE);
	assert_int_equal(apply_ok(t, &t->d2), SINK_APPLIED);
	user_dn(dn, sizeof(dn), "Ann Smith", "Sales", t);
	snprintf(cn, sizeof(cn), "Ann Smith (%s)", U(t, "asmith2x", u));
	user_dn(alt, sizeof(alt), cn, "Sales", t);
	assert_attr(dn, "employeeID", "E5001");
	assert_attr(alt, "employeeID", "E5002");
	assert_string_equal(find_op(&t->r, "add", "dn")->new_value, alt);
	/* Stable: the fallback CN is accepted as it is. */
	assert_int_equal(apply_ok(t, &t->d2), SINK_NOOP);
}

static void test_converges_after_partial_apply(void **state)
{
	t_t *t = *state;
	char dn[512], dn2[512], mkt[512];
	mk(t, &t->d, "E6001", "pj", "Pat", "Jo", "Sales", LC_ACTIVE);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	user_dn(dn, sizeof(dn), "Pat Jo", "Sales", t);
	/* The next version moves, retitles and regroups; the sink "crashed" right
	 * after its first two writes (the OU and the move). */
	desired_identity_copy(&t->d2, &t->d);
	t->d2.version = 2;
	free(t->d2.container);
	t->d2.container = strdup("ou=Marketing");
	id_attrs_set(&t->d2.attributes, "departmentNumber", "Marketing");
	id_attrs_set(&t->d2.attributes, "title", "Manager");
	set_groups(&t->d2, "Marketing", true);
	char ou[512];
	snprintf(ou, sizeof(ou), "OU=Marketing,%s", t->people);
	const char *oc[] = {"objectClass", "organizationalUnit", NULL};
	admin_add(ou, oc);
	assert_int_equal(ldap_rename_s(adm, dn, "CN=Pat Jo", ou, 1, NULL, NULL),
	                 LDAP_SUCCESS);
	/* The restart finishes the job without redoing what was done. */
	assert_int_equal(apply_ok(t, &t->d2), SINK_APPLIED);
	assert_null(find_op(&t->r, "modrdn", NULL));
	assert_null(find_op(&t->r, "create_ou", NULL));
	user_dn(dn2, sizeof(dn2), "Pat Jo", "Marketing", t);
	assert_attr(dn2, "title", "Manager");
	assert_attr(dn2, "department", "Marketing");
	group_dn(mkt, sizeof(mkt), "dept-marketing", t);
	assert_true(is_member(mkt, dn2));
	assert_int_equal(apply_ok(t, &t->d2), SINK_NOOP);

	/* A hand edit (drift) is repaired by the next apply, others' attributes stay. */
	admin_modify(dn2, LDAP_MOD_REPLACE, "title", "CEO");
	admin_modify(dn2, LDAP_MOD_REPLACE, "telephoneNumber", "+49 30 1");
	assert_int_equal(apply_ok(t, &t->d2), SINK_APPLIED);
	assert_attr(dn2, "title", "Manager");
	assert_attr(dn2, "telephoneNumber", "+49 30 1");
}

static void test_password_must_change_and_file_rules(void **state)
{
	t_t *t = *state;
	char dn[512];
	/* A delivery file others could read is refused before anything is made. */
	FILE *f = fopen(t->pwfile, "w");
	fclose(f);
	chmod(t->pwfile, 0644);
	mk(t, &t->d, "E7001", "mc", "Max", "Change", "Ops", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d), SINK_FAILED);
	assert_non_null(strstr(t->r.error, "0600"));
	assert_int_equal(count_entries(t->people, "(employeeID=E7001)"), 0);
	unlink(t->pwfile);

	/* pwdLastSet=0: the initial password only allows a change. */
	sink_ad_close(t->sink);
	sink_ad_opts_t o = sink_opts(t, url);
	o.password_must_change = true;
	id_err_t err = {0};
	t->sink = sink_ad_open(&o, &err);
	assert_non_null(t->sink);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	user_dn(dn, sizeof(dn), "Max Change", "Ops", t);
	assert_attr(dn, "pwdLastSet", "0");
	char u[32];
	char *pw = delivered_password(t, "E7001", U(t, "mc", u));
	assert_int_equal(bind_rc(dn, pw), LDAP_INVALID_CREDENTIALS);
	free(pw);

	/* No delivery file at all: no user is created. */
	sink_ad_close(t->sink);
	o.password_file = NULL;
	t->sink = sink_ad_open(&o, &err);
	assert_non_null(t->sink);
	mk(t, &t->d2, "E7002", "nf", "No", "File", "Ops", LC_ACTIVE);
	assert_int_equal(apply(t, &t->d2), SINK_FAILED);
	assert_non_null(strstr(t->r.error, "no password delivery file"));
	assert_int_equal(count_entries(t->people, "(employeeID=E7002)"), 0);
}

static void test_open_errors(void **state)
{
	t_t *t = *state;
	id_err_t err = {0};
	sink_ad_opts_t o = sink_opts(t, url);
	/* Default TLS checking refuses the DC's self-signed certificate. */
	o.tls_check = SINK_AD_TLS_DEMAND;
	assert_null(sink_ad_open(&o, &err));
	assert_int_equal(err.code, ID_ELDAP);
	assert_non_null(strstr(err.msg, url));
	o.tls_check = SINK_AD_TLS_NEVER;
	o.bind_password = "wrong-secret-xyz";
	assert_null(sink_ad_open(&o, &err));
	assert_non_null(strstr(err.msg, "Invalid credentials"));
	assert_null(strstr(err.msg, "wrong-secret-xyz"));
	o.bind_password = admin_pw;
	o.url = "ldaps://127.0.0.1:1";
	assert_null(sink_ad_open(&o, &err));
	assert_non_null(strstr(err.msg, "ldaps://127.0.0.1:1"));
}

/* ---- reconnect: through a relay whose connections the test can cut ---- */

static void test_reconnects_after_connection_loss(void **state)
{
	t_t *t = *state;
	tcp_relay_t r;
	char rurl[64], dn[512];
	assert_int_equal(tcp_relay_start(&r, url, 636), 0);
	snprintf(rurl, sizeof(rurl), "ldaps://127.0.0.1:%d", r.port);
	sink_ad_close(t->sink);
	t->sink = open_sink(t, rurl);

	mk(t, &t->d, "E8001", "rc", "Rae", "Cut", "Sales", LC_ACTIVE);
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	assert_int_equal(tcp_relay_cut(&r),
	                 0); /* the server side "went away" while we were idle */
	id_attrs_set(&t->d.attributes, "title", "Manager");
	assert_int_equal(apply_ok(t, &t->d), SINK_APPLIED);
	user_dn(dn, sizeof(dn), "Rae Cut", "Sales", t);
	assert_attr(dn, "title", "Manager");

	/* Unreachable for good: a transient error, and the result says FAILED. */
	assert_int_equal(tcp_relay_stop(&r), 0);
	id_attrs_set(&t->d.attributes, "title", "Director");
	id_err_t err = {0};
	int rc = sink_ad_apply(t->sink, &t->d, &t->r, &err);
	assert_true(rc == ID_ELDAP || rc == ID_ETIMEOUT);
	assert_int_equal(t->r.outcome, SINK_FAILED);
	assert_non_null(t->r.error);
	assert_attr(dn, "title", "Manager");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_lifecycle),
	    T(test_manager),
	    T(test_prestart_hire_created_disabled),
	    T(test_sam_conflict),
	    T(test_cn_taken_uses_fallback),
	    T(test_converges_after_partial_apply),
	    T(test_password_must_change_and_file_rules),
	    T(test_open_errors),
	    T(test_reconnects_after_connection_loss),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
