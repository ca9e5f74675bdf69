/*
 * test_sink_scim.c — the SCIM sink against the real scim2-server
 * (IDSTREAM_TEST_SCIM_URL, e.g. http://127.0.0.1:18080/v2, bearer token in
 * the file IDSTREAM_TEST_SCIM_TOKEN_FILE; tests/run.sh starts one).  No
 * server there is a failure, not a skip.
 *
 * Every assertion about the server's state is made with this file's own
 * HTTP requests (libcurl + jansson here), never through the sink's read
 * path.  The server is shared, so every test names its employees, userNames
 * and groups with its own prefix "t<pid>n<k>".  Fault cases use two
 * in-process peers: a TCP relay to the real server that can be stopped or
 * given a connection budget (server down, crash mid-apply), and a canned
 * HTTP(S) server for answers scim2-server never gives (429, 503, 401, a
 * hang, a self-signed certificate).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sinks/sink_scim.h"

#define ENT SCIM_SCHEMA_ENTERPRISE

static const char *url; /* base URL of the real server, ".../v2" */
static char token[256]; /* its bearer token */
static int upstream_port;
static int test_no;

/* ---- the test's own HTTP client ---- */

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
	id_buf_t *b = ud;
	return id_buf_append(b, p, sz * n) == 0 ? sz * n : 0;
}

/* method base+path [body]; *out = parsed JSON (may be NULL).  HTTP status. */
static long http(const char *method, const char *path, const char *body, json_t **out)
{
	CURL *c = curl_easy_init();
	id_buf_t b = ID_BUF_INIT;
	char full[2048], auth[300];
	struct curl_slist *h = NULL;
	long status = 0;
	snprintf(full, sizeof(full), "%s%s", url, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	h = curl_slist_append(h, auth);
	h = curl_slist_append(h, "Content-Type: application/scim+json");
	curl_easy_setopt(c, CURLOPT_URL, full);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	if (body != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (out != NULL)
		*out = b.len ? json_loadb((const char *)b.data, b.len, 0, NULL) : NULL;
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	id_buf_fini(&b);
	return status;
}

/* GET <endpoint>?filter=<attr eq "v"> → the only match (new ref) or NULL. */
static json_t *find_one(const char *endpoint, const char *attr, const char *v)
{
	char f[512], path[1024];
	json_t *j = NULL, *one = NULL;
	snprintf(f, sizeof(f), "%s eq \"%s\"", attr, v);
	char *e = curl_easy_escape(NULL, f, 0);
	snprintf(path, sizeof(path), "%s?filter=%s", endpoint, e);
	curl_free(e);
	long st = http("GET", path, NULL, &j);
	if (st != 200)
		fail_msg("GET %s: HTTP %ld", path, st);
	json_t *res = json_object_get(j, "Resources");
	if (json_array_size(res) > 1)
		fail_msg("%s %s eq %s: %zu resources, expected at most one", endpoint,
		         attr, v, json_array_size(res));
	if (json_array_size(res) == 1)
		one = json_incref(json_array_get(res, 0));
	json_decref(j);
	return one;
}

static json_t *user_by_ext(const char *eid)
{
	return find_one("/Users", "externalId", eid);
}

static json_t *group_by_name(const char *name)
{
	return find_one("/Groups", "displayName", name);
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static const char *ent_str(const json_t *u, const char *k)
{
	return jstr(json_object_get(u, ENT), k);
}

static bool has_member(const json_t *group, const char *user_id)
{
	json_t *m = json_object_get(group, "members");
	for (size_t i = 0; i < json_array_size(m); i++)
		if (strcmp(jstr(json_array_get(m, i), "value"), user_id) == 0)
			return true;
	return false;
}

/* Whether group name exists and has user_id as a member. */
static bool in_group(const char *name, const char *user_id)
{
	json_t *g = group_by_name(name);
	bool in = g != NULL && has_member(g, user_id);
	json_decref(g);
	return in;
}

/* Number of Groups, anywhere, listing user_id as a member. */
static size_t groups_of(const char *user_id)
{
	char f[256], path[512];
	json_t *j = NULL;
	snprintf(f, sizeof(f), "members.value eq \"%s\"", user_id);
	char *e = curl_easy_escape(NULL, f, 0);
	snprintf(path, sizeof(path), "/Groups?filter=%s", e);
	curl_free(e);
	assert_int_equal(http("GET", path, NULL, &j), 200);
	size_t n = json_array_size(json_object_get(j, "Resources"));
	json_decref(j);
	return n;
}

/* POST body to endpoint; returns the new id (caller frees). */
static char *raw_create(const char *endpoint, const char *body)
{
	json_t *j = NULL;
	long st = http("POST", endpoint, body, &j);
	if (st != 201)
		fail_msg("POST %s: HTTP %ld", endpoint, st);
	char *id = strdup(jstr(j, "id"));
	json_decref(j);
	return id;
}

/* ---- fixtures ---- */

typedef struct t {
	char p[32]; /* name prefix of this test */
	sink_scim_t *sink;
	sink_result_t r;
	desired_identity_t d;
} t_t;

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	url = getenv("IDSTREAM_TEST_SCIM_URL");
	const char *tf = getenv("IDSTREAM_TEST_SCIM_TOKEN_FILE");
	if (url == NULL || url[0] == '\0' || tf == NULL || tf[0] == '\0') {
		fprintf(
		    stderr,
		    "FAIL: set IDSTREAM_TEST_SCIM_URL and IDSTREAM_TEST_SCIM_TOKEN_FILE "
		    "(tests/run.sh does, after `sh scripts/services.sh start scim`).\n");
		return -1;
	}
	FILE *f = fopen(tf, "r");
	size_t n = f ? fread(token, 1, sizeof(token) - 1, f) : 0;
	if (f)
		fclose(f);
	while (n > 0 &&
	       (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' '))
		n--;
	token[n] = '\0';
	if (n == 0) {
		fprintf(stderr, "FAIL: no bearer token in %s\n", tf);
		return -1;
	}
	json_t *j = NULL;
	long st = http("GET", "/ResourceTypes", NULL, &j);
	json_decref(j);
	if (st != 200) {
		fprintf(stderr,
		        "FAIL: no SCIM server answers at %s (GET /ResourceTypes: %ld). "
		        "Start one "
		        "with `sh scripts/services.sh start scim` or run `make test`.\n",
		        url, st);
		return -1;
	}
	const char *colon = strrchr(url, ':');
	upstream_port = colon ? atoi(colon + 1) : 0;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	curl_global_cleanup();
	return 0;
}

static int setup(void **state)
{
	t_t *t = calloc(1, sizeof(*t));
	snprintf(t->p, sizeof(t->p), "t%dn%d", (int)getpid(), ++test_no);
	sink_result_init(&t->r);
	desired_identity_init(&t->d);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	t_t *t = *state;
	sink_scim_close(t->sink);
	sink_result_fini(&t->r);
	desired_identity_fini(&t->d);
	free(t);
	return 0;
}

static sink_scim_t *open_at(const char *base, const sink_scim_opts_t *extra)
{
	sink_scim_opts_t o = extra ? *extra : (sink_scim_opts_t){0};
	o.base_url = base;
	o.bearer_token = token;
	if (o.timeout_ms == 0)
		o.timeout_ms = 5000;
	id_err_t err = {0};
	sink_scim_t *s = sink_scim_open(&o, &err);
	if (s == NULL)
		fail_msg("sink_scim_open(%s): %s", base, err.msg);
	return s;
}

/* A desired identity as the default mapping would produce it. */
static void mk(desired_identity_t *d, const char *eid, const char *uid,
               lifecycle_state_t st, const char *title, const char *dept, const char *g1,
               const char *g2)
{
	char buf[256];
	desired_identity_fini(d);
	desired_identity_init(d);
	d->employee_id = strdup(eid);
	d->version = 1;
	d->state = st;
	id_attrs_set(&d->attributes, "uid", uid);
	id_attrs_set(&d->attributes, "givenName", "Ada");
	id_attrs_set(&d->attributes, "sn", "Lovelace");
	id_attrs_set(&d->attributes, "cn", "Ada Lovelace");
	id_attrs_set(&d->attributes, "displayName", "Ada Lovelace");
	snprintf(buf, sizeof(buf), "%s@example.com", uid);
	id_attrs_set(&d->attributes, "mail", buf);
	id_attrs_set(&d->attributes, "employeeNumber", eid);
	id_attrs_set(&d->attributes, "employeeType", "full_time");
	if (title)
		id_attrs_set(&d->attributes, "title", title);
	id_attrs_set(&d->attributes, "departmentNumber", dept);
	if (g1)
		desired_identity_add_group(d, g1);
	if (g2)
		desired_identity_add_group(d, g2);
}

/* Applies d; fails the test unless rc is 0 and the outcome is want. */
static void apply_ok(t_t *t, const desired_identity_t *d, sink_outcome_t want)
{
	id_err_t err = {0};
	int rc = sink_scim_apply(t->sink, d, &t->r, &err);
	if (rc != 0)
		fail_msg("apply %s: rc %d: %s", d->employee_id, rc, err.msg);
	if (t->r.outcome != want)
		fail_msg("apply %s: outcome %s (%s), expected %s", d->employee_id,
		         sink_outcome_name(t->r.outcome), t->r.error ? t->r.error : "",
		         sink_outcome_name(want));
	assert_string_equal(t->r.target, "scim");
	assert_string_equal(t->r.employee_id, d->employee_id);
}

static const sink_op_t *find_op(const sink_result_t *r, const char *op, const char *attr)
{
	for (size_t i = 0; i < r->nops; i++)
		if (strcmp(r->ops[i].op, op) == 0 &&
		    (attr == NULL ||
		     (r->ops[i].attribute && strcmp(r->ops[i].attribute, attr) == 0)))
			return &r->ops[i];
	return NULL;
}

static void expect_op(const sink_result_t *r, const char *op, const char *attr,
                      const char *old_value, const char *new_value)
{
	const sink_op_t *o = find_op(r, op, attr);
	if (o == NULL)
		fail_msg("no op %s %s among %zu ops", op, attr ? attr : "", r->nops);
	if (old_value != NULL)
		assert_string_equal(o->old_value ? o->old_value : "(null)", old_value);
	if (new_value != NULL)
		assert_string_equal(o->new_value ? o->new_value : "(null)", new_value);
}

/* Re-applies d: no write at all, and the User's version is unchanged. */
static void expect_idempotent(t_t *t, const desired_identity_t *d)
{
	json_t *before = user_by_ext(d->employee_id);
	uint64_t w = sink_scim_writes(t->sink);
	apply_ok(t, d, SINK_NOOP);
	assert_int_equal(t->r.nops, 0);
	assert_int_equal(sink_scim_writes(t->sink), w);
	json_t *after = user_by_ext(d->employee_id);
	if (before != NULL) {
		json_t *m0 = json_object_get(before, "meta"),
		       *m1 = json_object_get(after, "meta");
		assert_string_equal(jstr(m0, "version"), jstr(m1, "version"));
		assert_string_equal(jstr(m0, "lastModified"), jstr(m1, "lastModified"));
	} else {
		assert_null(after);
	}
	json_decref(before);
	json_decref(after);
}

/* ---- the whole lifecycle, in each request mode ---- */

static void lifecycle(t_t *t, const sink_scim_opts_t *o, bool put_mode)
{
	char eid[64], uid1[64], uid2[64], staff[64], deng[64], dsales[64], mark[96];
	snprintf(eid, sizeof(eid), "%s-E1", t->p);
	snprintf(uid1, sizeof(uid1), "%sada", t->p);
	snprintf(uid2, sizeof(uid2), "%sadak", t->p);
	snprintf(staff, sizeof(staff), "%s-staff", t->p);
	snprintf(deng, sizeof(deng), "%s-dept-eng", t->p);
	snprintf(dsales, sizeof(dsales), "%s-dept-sales", t->p);
	t->sink = open_at(url, o);
	sink_scim_features_t f;
	sink_scim_features(t->sink, &f);
	assert_true(f.enterprise);
	assert_int_equal(f.patch, !put_mode);

	/* Hire. */
	mk(&t->d, eid, uid1, LC_ACTIVE, "Engineer", "eng", staff, deng);
	apply_ok(t, &t->d, SINK_APPLIED);
	json_t *u = user_by_ext(eid);
	assert_non_null(u);
	char *id = strdup(jstr(u, "id"));
	assert_string_equal(jstr(u, "userName"), uid1);
	assert_string_equal(jstr(json_object_get(u, "name"), "givenName"), "Ada");
	assert_string_equal(jstr(json_object_get(u, "name"), "familyName"), "Lovelace");
	assert_string_equal(jstr(u, "displayName"), "Ada Lovelace");
	assert_string_equal(jstr(u, "title"), "Engineer");
	assert_string_equal(jstr(u, "userType"), "full_time");
	assert_true(json_is_true(json_object_get(u, "active")));
	json_t *em = json_array_get(json_object_get(u, "emails"), 0);
	assert_string_equal(jstr(em, "type"), "work");
	assert_true(json_is_true(json_object_get(em, "primary")));
	assert_non_null(strstr(jstr(em, "value"), "@example.com"));
	assert_string_equal(ent_str(u, "employeeNumber"), eid);
	assert_string_equal(ent_str(u, "department"), "eng");
	json_decref(u);
	expect_op(&t->r, "create", "id", "(null)", id);
	expect_op(&t->r, "create", "userName", NULL, uid1);
	expect_op(&t->r, "create_group", staff, NULL, NULL);
	expect_op(&t->r, "group_add", deng, NULL, NULL);
	json_t *g = group_by_name(staff);
	assert_non_null(g);
	snprintf(mark, sizeof(mark), "%s%s", SCIM_DIFF_GROUP_MARK, staff);
	assert_string_equal(jstr(g, "externalId"), mark);
	assert_true(has_member(g, id));
	json_decref(g);
	assert_true(in_group(deng, id));
	expect_idempotent(t, &t->d);

	/* Mover with a new title; an attribute the sink does not manage,
	 * set by hand, must survive (PUT carries it over). */
	char path[256];
	snprintf(path, sizeof(path), "/Users/%s", id);
	assert_int_equal(
	    http("PATCH", path,
	         "{\"schemas\":[\"" SCIM_MSG_PATCH "\"],\"Operations\":[{\"op\":"
	         "\"add\",\"path\":\"phoneNumbers\",\"value\":[{\"value\":\"555\","
	         "\"type\":\"work\"}]}]}",
	         NULL),
	    204);
	mk(&t->d, eid, uid1, LC_ACTIVE, "Staff Engineer", "sales", staff, dsales);
	apply_ok(t, &t->d, SINK_APPLIED);
	const char *upd = put_mode ? "put" : "patch";
	expect_op(&t->r, upd, "title", "Engineer", "Staff Engineer");
	expect_op(&t->r, upd, ENT ":department", "eng", "sales");
	expect_op(&t->r, "create_group", dsales, NULL, NULL);
	expect_op(&t->r, "group_remove", deng, NULL, NULL);
	u = user_by_ext(eid);
	assert_string_equal(jstr(u, "title"), "Staff Engineer");
	assert_string_equal(ent_str(u, "department"), "sales");
	assert_string_equal(
	    jstr(json_array_get(json_object_get(u, "phoneNumbers"), 0), "value"), "555");
	json_decref(u);
	assert_false(in_group(deng, id));
	assert_true(in_group(dsales, id));
	assert_true(in_group(staff, id));
	expect_idempotent(t, &t->d);

	/* Rename: same User, new userName, memberships kept. */
	mk(&t->d, eid, uid2, LC_ACTIVE, "Staff Engineer", "sales", staff, dsales);
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, upd, "userName", uid1, uid2);
	u = user_by_ext(eid);
	assert_string_equal(jstr(u, "id"), id);
	assert_string_equal(jstr(u, "userName"), uid2);
	json_decref(u);
	assert_true(in_group(staff, id));
	expect_idempotent(t, &t->d);

	/* Leaver: disabled first, then out of every managed group. */
	mk(&t->d, eid, uid2, LC_DISABLED, "Staff Engineer", "sales", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	assert_string_equal(t->r.ops[0].op, "disable");
	expect_op(&t->r, "disable", "active", "true", "false");
	expect_op(&t->r, "group_remove", staff, NULL, NULL);
	u = user_by_ext(eid);
	assert_true(json_is_false(json_object_get(u, "active")));
	json_decref(u);
	assert_int_equal(groups_of(id), 0);
	expect_idempotent(t, &t->d);

	/* Rehire: groups back first, enabled last. */
	mk(&t->d, eid, uid2, LC_ACTIVE, "Staff Engineer", "sales", staff, dsales);
	apply_ok(t, &t->d, SINK_APPLIED);
	assert_string_equal(t->r.ops[t->r.nops - 1].op, "enable");
	expect_op(&t->r, "group_add", staff, NULL, NULL);
	u = user_by_ext(eid);
	assert_true(json_is_true(json_object_get(u, "active")));
	json_decref(u);
	assert_true(in_group(staff, id));
	assert_true(in_group(dsales, id));
	expect_idempotent(t, &t->d);

	/* Delete: out of the groups (the server would keep a dangling member),
	 * then gone. */
	mk(&t->d, eid, uid2, LC_DELETED, "Staff Engineer", "sales", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, "delete", "id", id, NULL);
	assert_string_equal(t->r.ops[t->r.nops - 1].op, "delete");
	assert_int_equal(http("GET", path, NULL, NULL), 404);
	assert_null(user_by_ext(eid));
	assert_int_equal(groups_of(id), 0);
	expect_idempotent(t, &t->d);
	free(id);
}

static void test_lifecycle_bulk(void **state)
{
	t_t *t = *state;
	lifecycle(t, NULL, false);
	sink_scim_features_t f;
	sink_scim_features(t->sink, &f);
	assert_true(f.bulk);
	assert_true(f.etag);
}

static void test_lifecycle_one_request_at_a_time(void **state)
{
	sink_scim_opts_t o = {.no_bulk = true};
	lifecycle(*state, &o, false);
}

static void test_lifecycle_put_with_if_match(void **state)
{
	sink_scim_opts_t o = {.no_patch = true};
	lifecycle(*state, &o, true);
}

/* Bulk sends a hire with its groups as one request. */
static void test_bulk_request_count(void **state)
{
	t_t *t = *state;
	char eid[64], uid[64], g1[64], g2[64];
	snprintf(eid, sizeof(eid), "%s-E1", t->p);
	snprintf(uid, sizeof(uid), "%sbulk", t->p);
	snprintf(g1, sizeof(g1), "%s-a", t->p);
	snprintf(g2, sizeof(g2), "%s-b", t->p);
	t->sink = open_at(url, NULL);
	/* The first apply lists the Users (pages: however many the server
	 * holds by now). */
	char e0[64], u0[64];
	snprintf(e0, sizeof(e0), "%s-E0", t->p);
	snprintf(u0, sizeof(u0), "%sfirst", t->p);
	mk(&t->d, e0, u0, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	mk(&t->d, eid, uid, LC_ACTIVE, "Engineer", "eng", g1, g2);
	uint64_t w0 = sink_scim_writes(t->sink), q0 = sink_scim_requests(t->sink);
	apply_ok(t, &t->d, SINK_APPLIED);
	/* User + 2 groups (each created with the member) = 3 writes, sent as
	 * 1 /Bulk; plus 2 reads: each group by name.  The User is not looked
	 * up: the listing says there is none. */
	assert_int_equal(sink_scim_writes(t->sink) - w0, 3);
	assert_int_equal(sink_scim_requests(t->sink) - q0, 3);
	json_t *u = user_by_ext(eid);
	assert_true(in_group(g1, jstr(u, "id")));
	assert_true(in_group(g2, jstr(u, "id")));
	json_decref(u);
	/* A re-apply reads twice (User by id, its memberships) and writes
	 * nothing. */
	q0 = sink_scim_requests(t->sink);
	expect_idempotent(t, &t->d);
	assert_int_equal(sink_scim_requests(t->sink) - q0, 2);
}

/* ---- manager ---- */

static void test_manager(void **state)
{
	t_t *t = *state;
	char rep[64], mgr[64], ru[64], mu[64];
	snprintf(rep, sizeof(rep), "%s-R", t->p);
	snprintf(mgr, sizeof(mgr), "%s-M", t->p);
	snprintf(ru, sizeof(ru), "%srep", t->p);
	snprintf(mu, sizeof(mu), "%smgr", t->p);
	t->sink = open_at(url, NULL);

	/* The report comes first: created without manager, noted as pending. */
	mk(&t->d, rep, ru, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	t->d.manager_id = strdup(mgr);
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, "manager_pending", "manager", NULL, mgr);
	json_t *u = user_by_ext(rep);
	assert_null(json_object_get(json_object_get(u, ENT), "manager"));
	json_decref(u);

	desired_identity_t m;
	desired_identity_init(&m);
	mk(&m, mgr, mu, LC_ACTIVE, "Manager", "eng", NULL, NULL);
	apply_ok(t, &m, SINK_APPLIED);
	json_t *mu_res = user_by_ext(mgr);
	char *mid = strdup(jstr(mu_res, "id"));
	json_decref(mu_res);

	/* Re-applied once the manager exists: manager.value = the manager's id. */
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, "patch", ENT ":manager", "(null)", mid);
	assert_null(find_op(&t->r, "manager_pending", NULL));
	u = user_by_ext(rep);
	assert_string_equal(
	    jstr(json_object_get(json_object_get(u, ENT), "manager"), "value"), mid);
	json_decref(u);
	expect_idempotent(t, &t->d);

	/* No manager in HR any more: removed. */
	free(t->d.manager_id);
	t->d.manager_id = NULL;
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, "patch", ENT ":manager", mid, "(null)");
	u = user_by_ext(rep);
	assert_null(json_object_get(json_object_get(u, ENT), "manager"));
	json_decref(u);
	free(mid);
	desired_identity_fini(&m);
}

/* ---- linking and conflicts ---- */

static void test_adopt_by_username_and_conflicts(void **state)
{
	t_t *t = *state;
	char body[1024], eb[64], ub[64], ec[64], uc[64], ed[64], ud[64], other[64];
	char gb[64], gc[64];
	snprintf(eb, sizeof(eb), "%s-B", t->p);
	snprintf(ub, sizeof(ub), "%sbob", t->p);
	snprintf(ec, sizeof(ec), "%s-C", t->p);
	snprintf(uc, sizeof(uc), "%scarl", t->p);
	snprintf(ed, sizeof(ed), "%s-D", t->p);
	snprintf(ud, sizeof(ud), "%sdan", t->p);
	snprintf(other, sizeof(other), "%s-OTHER", t->p);
	snprintf(gb, sizeof(gb), "%s-staff", t->p);
	snprintf(gc, sizeof(gc), "%s-carls", t->p);
	t->sink = open_at(url, NULL);

	/* An account made by hand before the sink knew the employee. */
	snprintf(body, sizeof(body),
	         "{\"schemas\":[\"" SCIM_SCHEMA_USER "\"],\"userName\":\"%s\"}", ub);
	char *bid = raw_create("/Users", body);
	/* With a group, so the create goes as a /Bulk whose POST gets the 409. */
	mk(&t->d, eb, ub, LC_ACTIVE, "Engineer", "eng", gb, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	assert_true(in_group(gb, bid));
	expect_op(&t->r, "patch", "externalId", "(null)", eb);
	assert_null(find_op(&t->r, "create", NULL));
	json_t *u = user_by_ext(eb);
	assert_string_equal(jstr(u, "id"), bid);
	assert_string_equal(jstr(u, "title"), "Engineer");
	json_decref(u);
	expect_idempotent(t, &t->d);

	/* The userName belongs to another employee: the create is refused (the
	 * server's 409 tells), and the result says whose it is. */
	snprintf(body, sizeof(body),
	         "{\"schemas\":[\"" SCIM_SCHEMA_USER "\"],\"userName\":\"%s\","
	         "\"externalId\":\"%s\"}",
	         uc, other);
	char *cid = raw_create("/Users", body);
	mk(&t->d, ec, uc, LC_ACTIVE, "Engineer", "eng", gc, NULL);
	apply_ok(t, &t->d, SINK_FAILED);
	assert_null(group_by_name(gc)); /* the bulk stopped at the refused POST */
	assert_non_null(t->r.error);
	char want[256];
	snprintf(want, sizeof(want), "userName %s already used by employee %s", uc,
	         other);
	assert_string_equal(t->r.error, want);
	assert_int_equal(t->r.nops, 0);
	assert_null(user_by_ext(ec));
	u = user_by_ext(other);
	assert_string_equal(jstr(u, "id"), cid);
	assert_null(json_object_get(u, "title"));
	json_decref(u);

	/* Same for a rename onto it, found before any write. */
	mk(&t->d, ed, ud, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	mk(&t->d, ed, uc, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	uint64_t w = sink_scim_writes(t->sink);
	apply_ok(t, &t->d, SINK_FAILED);
	assert_string_equal(t->r.error, want);
	assert_int_equal(sink_scim_writes(t->sink), w);
	u = user_by_ext(ed);
	assert_string_equal(jstr(u, "userName"), ud);
	json_decref(u);
	free(bid);
	free(cid);
}

/*
 * The listing the sink took at its first apply is stale: Users made or
 * deleted by hand after it.  None is ever created twice: the POST of an
 * employee the listing did not have meets the server's 409 (userName is
 * unique) and the apply adopts the User; a User gone behind its back is
 * looked up again and re-created once.
 */
static void test_stale_listing_never_creates_twice(void **state)
{
	t_t *t = *state;
	char body[1024], e0[64], u0[64], eh[64], uh[64], ex[64], ux[64];
	snprintf(e0, sizeof(e0), "%s-E0", t->p);
	snprintf(u0, sizeof(u0), "%sfirst", t->p);
	snprintf(eh, sizeof(eh), "%s-H", t->p);
	snprintf(uh, sizeof(uh), "%shand", t->p);
	snprintf(ex, sizeof(ex), "%s-X", t->p);
	snprintf(ux, sizeof(ux), "%sext", t->p);
	t->sink = open_at(url, NULL);
	mk(&t->d, e0, u0, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED); /* the Users are listed now */
	json_t *u = user_by_ext(e0);
	char *id0 = strdup(jstr(u, "id"));
	json_decref(u);

	/* Made by hand after the listing, without externalId: adopted. */
	snprintf(body, sizeof(body),
	         "{\"schemas\":[\"" SCIM_SCHEMA_USER "\"],\"userName\":\"%s\"}", uh);
	char *hid = raw_create("/Users", body);
	mk(&t->d, eh, uh, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	assert_null(find_op(&t->r, "create", NULL));
	expect_op(&t->r, "patch", "externalId", "(null)", eh);
	u = find_one("/Users", "userName", uh); /* fails on a second one */
	assert_string_equal(jstr(u, "id"), hid);
	assert_string_equal(jstr(u, "externalId"), eh);
	assert_string_equal(jstr(u, "title"), "Engineer");
	json_decref(u);
	expect_idempotent(t, &t->d);

	/* Made by hand after the listing with the employee's externalId (as
	 * a sink that ran elsewhere would): taken as it is. */
	snprintf(body, sizeof(body),
	         "{\"schemas\":[\"" SCIM_SCHEMA_USER "\"],\"userName\":\"%s\","
	         "\"externalId\":\"%s\",\"title\":\"Engineer\"}",
	         ux, ex);
	char *xid = raw_create("/Users", body);
	mk(&t->d, ex, ux, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	assert_null(find_op(&t->r, "create", NULL));
	u = find_one("/Users", "userName", ux);
	assert_string_equal(jstr(u, "id"), xid);
	json_decref(u);
	u = user_by_ext(ex); /* fails on a second one */
	assert_string_equal(jstr(u, "id"), xid);
	json_decref(u);

	/* Deleted by hand after the sink made it: made again, once. */
	char path[256];
	snprintf(path, sizeof(path), "/Users/%s", id0);
	assert_int_equal(http("DELETE", path, NULL, NULL), 204);
	mk(&t->d, e0, u0, LC_ACTIVE, "Lead", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	assert_non_null(find_op(&t->r, "create", "id"));
	u = user_by_ext(e0);
	assert_non_null(u);
	assert_string_not_equal(jstr(u, "id"), id0);
	assert_string_equal(jstr(u, "title"), "Lead");
	json_decref(u);
	expect_idempotent(t, &t->d);
	free(id0);
	free(hid);
	free(xid);
}

static void test_unmanaged_groups(void **state)
{
	t_t *t = *state;
	char eid[64], uid[64], staff[64], vpn[64], wiki[64], body[512], path[256];
	snprintf(eid, sizeof(eid), "%s-E", t->p);
	snprintf(uid, sizeof(uid), "%sgus", t->p);
	snprintf(staff, sizeof(staff), "%s-staff", t->p);
	snprintf(vpn, sizeof(vpn), "%s-vpn", t->p);
	snprintf(wiki, sizeof(wiki), "%s-wiki", t->p);
	t->sink = open_at(url, NULL);
	mk(&t->d, eid, uid, LC_ACTIVE, "Engineer", "eng", staff, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	json_t *u = user_by_ext(eid);
	char *id = strdup(jstr(u, "id"));
	json_decref(u);

	/* Another client's group with our User in it, and an unclaimed one. */
	snprintf(body, sizeof(body),
	         "{\"schemas\":[\"" SCIM_SCHEMA_GROUP "\"],\"displayName\":\"%s\","
	         "\"externalId\":\"ad:42\",\"members\":[{\"value\":\"%s\"}]}",
	         vpn, id);
	char *vid = raw_create("/Groups", body);
	snprintf(body, sizeof(body),
	         "{\"schemas\":[\"" SCIM_SCHEMA_GROUP "\"],\"displayName\":\"%s\"}",
	         wiki);
	char *wid = raw_create("/Groups", body);

	/* Memberships outside our groups are left alone. */
	expect_idempotent(t, &t->d);
	assert_true(in_group(vpn, id));

	/* A desired group that exists without externalId is adopted. */
	mk(&t->d, eid, uid, LC_ACTIVE, "Engineer", "eng", staff, wiki);
	apply_ok(t, &t->d, SINK_APPLIED);
	char mark[96];
	snprintf(mark, sizeof(mark), "%s%s", SCIM_DIFF_GROUP_MARK, wiki);
	expect_op(&t->r, "group_add", wiki, NULL, wid);
	expect_op(&t->r, "claim_group", wiki, NULL, mark);
	json_t *g = group_by_name(wiki);
	assert_string_equal(jstr(g, "externalId"), mark);
	assert_true(has_member(g, id));
	json_decref(g);
	expect_idempotent(t, &t->d);

	/* One that belongs to another client is refused, nothing written. */
	mk(&t->d, eid, uid, LC_ACTIVE, "Engineer", "eng", staff, vpn);
	http("PATCH", (snprintf(path, sizeof(path), "/Groups/%s", vid), path),
	     "{\"schemas\":[\"" SCIM_MSG_PATCH "\"],\"Operations\":[{\"op\":\"remove\","
	     "\"path\":\"members\"}]}",
	     NULL);
	uint64_t w = sink_scim_writes(t->sink);
	apply_ok(t, &t->d, SINK_FAILED);
	assert_non_null(strstr(t->r.error, "belongs to another client"));
	assert_int_equal(sink_scim_writes(t->sink), w);
	assert_false(in_group(vpn, id));

	/* Deleting leaves every group, ours or not, so no member dangles. */
	assert_int_equal(
	    http("PATCH", path,
	         (snprintf(body, sizeof(body),
	                   "{\"schemas\":[\"" SCIM_MSG_PATCH "\"],\"Operations\":[{"
	                   "\"op\":\"add\",\"path\":\"members\",\"value\":[{"
	                   "\"value\":\"%s\"}]}]}",
	                   id),
	          body),
	         NULL),
	    204);
	mk(&t->d, eid, uid, LC_DELETED, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, "group_remove", vpn, vid, NULL);
	assert_int_equal(groups_of(id), 0);
	free(id);
	free(vid);
	free(wid);
}

/* A group deleted by hand after the sink cached it is created again. */
static void test_group_deleted_behind_its_back(void **state)
{
	t_t *t = *state;
	char e1[64], u1[64], e2[64], u2[64], grp[64], path[256];
	snprintf(e1, sizeof(e1), "%s-1", t->p);
	snprintf(u1, sizeof(u1), "%sone", t->p);
	snprintf(e2, sizeof(e2), "%s-2", t->p);
	snprintf(u2, sizeof(u2), "%stwo", t->p);
	snprintf(grp, sizeof(grp), "%s-staff", t->p);
	t->sink = open_at(url, NULL);
	mk(&t->d, e1, u1, LC_ACTIVE, "Engineer", "eng", grp, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	json_t *g = group_by_name(grp);
	snprintf(path, sizeof(path), "/Groups/%s", jstr(g, "id"));
	json_decref(g);
	assert_int_equal(http("DELETE", path, NULL, NULL), 204);

	mk(&t->d, e2, u2, LC_ACTIVE, "Engineer", "eng", grp, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, "create_group", grp, NULL, NULL);
	json_t *u = user_by_ext(e2);
	assert_true(in_group(grp, jstr(u, "id")));
	json_decref(u);
	expect_idempotent(t, &t->d);
}

/* ---- a TCP relay to the real server: stop it, or let it die mid-apply ---- */

typedef struct relay {
	int lfd;
	int port;
	int budget; /* connections still relayed; < 0: unlimited */
	int wake[2];
	pthread_t th;
	bool running;
} relay_t;

static int connect_port(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void pump(int a, int b)
{
	char buf[16384];
	struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
	for (;;) {
		if (poll(p, 2, 10000) <= 0)
			return;
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof(buf));
			if (n <= 0)
				return;
			if (write(p[1 - i].fd, buf, (size_t)n) != n)
				return;
		}
	}
}

static void *relay_main(void *arg)
{
	relay_t *r = arg;
	for (;;) {
		struct pollfd p[2] = {{r->lfd, POLLIN, 0}, {r->wake[0], POLLIN, 0}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int c = accept(r->lfd, NULL, NULL);
		if (c < 0)
			continue;
		if (r->budget == 0) {
			/* Over budget: the "server" dies on this request. */
			struct linger l = {1, 0};
			setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
			close(c);
			continue;
		}
		if (r->budget > 0)
			r->budget--;
		int u = connect_port(upstream_port);
		if (u >= 0) {
			pump(c, u);
			close(u);
		}
		close(c);
	}
	return NULL;
}

/* Listens on 127.0.0.1:port (0: any) and relays to the real server. */
static void relay_start(relay_t *r, int port, int budget)
{
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(r->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(r->lfd, 16), 0);
	socklen_t len = sizeof(a);
	getsockname(r->lfd, (struct sockaddr *)&a, &len);
	r->port = ntohs(a.sin_port);
	r->budget = budget;
	assert_int_equal(pipe(r->wake), 0);
	assert_int_equal(pthread_create(&r->th, NULL, relay_main, r), 0);
	r->running = true;
}

/* Stops listening: connections to the port are refused afterwards. */
static void relay_stop(relay_t *r)
{
	if (!r->running)
		return;
	assert_int_equal(write(r->wake[1], "x", 1), 1);
	pthread_join(r->th, NULL);
	close(r->lfd);
	close(r->wake[0]);
	close(r->wake[1]);
	r->running = false;
}

static void base_of(char *out, size_t n, int port)
{
	const char *path = strstr(url + 8, "/"); /* after "http://h" */
	snprintf(out, n, "http://127.0.0.1:%d%s", port, path ? path : "");
}

static void test_server_down(void **state)
{
	t_t *t = *state;
	relay_t r = {0};
	char base[256], eid[64], uid[64];
	snprintf(eid, sizeof(eid), "%s-E", t->p);
	snprintf(uid, sizeof(uid), "%sdown", t->p);
	relay_start(&r, 0, -1);
	int port = r.port;
	base_of(base, sizeof(base), port);
	t->sink = open_at(base, NULL);
	mk(&t->d, eid, uid, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);

	/* Down: apply says so (not final), the result carries the reason. */
	relay_stop(&r);
	mk(&t->d, eid, uid, LC_ACTIVE, "Lead", "eng", NULL, NULL);
	id_err_t err = {0};
	assert_int_equal(sink_scim_apply(t->sink, &t->d, &t->r, &err), ID_EIO);
	assert_int_equal(t->r.outcome, SINK_FAILED);
	assert_non_null(strstr(t->r.error, base));
	assert_non_null(strstr(err.msg, "Couldn't connect"));
	json_t *u = user_by_ext(eid);
	assert_string_equal(jstr(u, "title"), "Engineer");
	json_decref(u);

	/* Opening against it fails the same way. */
	sink_scim_opts_t o = {
	    .base_url = base, .bearer_token = token, .timeout_ms = 2000};
	assert_null(sink_scim_open(&o, &err));
	assert_int_equal(err.code, ID_EIO);

	/* Back: the same desired goes through. */
	relay_start(&r, port, -1);
	apply_ok(t, &t->d, SINK_APPLIED);
	expect_op(&t->r, "patch", "title", "Engineer", "Lead");
	relay_stop(&r);
}

/* The server dies in the middle of a sequential apply; the next apply
 * finishes the job without doing anything twice. */
static void test_crash_mid_apply_converges(void **state)
{
	t_t *t = *state;
	relay_t r = {0};
	char base[256], eid[64], uid[64], g1[64], g2[64];
	snprintf(eid, sizeof(eid), "%s-E", t->p);
	snprintf(uid, sizeof(uid), "%scrash", t->p);
	snprintf(g1, sizeof(g1), "%s-a", t->p);
	snprintf(g2, sizeof(g2), "%s-b", t->p);
	relay_start(&r, 0, -1);
	base_of(base, sizeof(base), r.port);
	sink_scim_opts_t o = {.no_bulk = true};
	t->sink = open_at(base, &o);
	/* A first apply lists the Users; then the two group lookups, POST
	 * User, POST group a: the POST of group b dies. */
	char e0[64], u0[64];
	snprintf(e0, sizeof(e0), "%s-E0", t->p);
	snprintf(u0, sizeof(u0), "%scrash0", t->p);
	mk(&t->d, e0, u0, LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	apply_ok(t, &t->d, SINK_APPLIED);
	r.budget = 4;
	mk(&t->d, eid, uid, LC_ACTIVE, "Engineer", "eng", g1, g2);
	id_err_t err = {0};
	assert_int_equal(sink_scim_apply(t->sink, &t->d, &t->r, &err), ID_EIO);
	/* What was done before the failure is reported. */
	assert_non_null(find_op(&t->r, "create", "id"));
	expect_op(&t->r, "create_group", g1, NULL, NULL);
	assert_null(find_op(&t->r, "create_group", g2));
	json_t *u = user_by_ext(eid);
	assert_non_null(u);
	char *id = strdup(jstr(u, "id"));
	json_decref(u);
	assert_true(in_group(g1, id));
	assert_null(group_by_name(g2));

	r.budget = -1;
	apply_ok(t, &t->d, SINK_APPLIED);
	assert_null(find_op(&t->r, "create", NULL));
	assert_null(find_op(&t->r, "create_group", g1));
	expect_op(&t->r, "create_group", g2, NULL, NULL);
	assert_int_equal(t->r.nops, 2); /* create_group + group_add of b */
	assert_true(in_group(g1, id));
	assert_true(in_group(g2, id)); /* group_by_name asserts there is one of each */
	expect_idempotent(t, &t->d);
	relay_stop(&r);
	free(id);
}

/* ---- canned HTTP(S) server for answers scim2-server never gives ---- */

typedef struct fake {
	int lfd;
	int port;
	int wake[2];
	pthread_t th;
	SSL_CTX *tls; /* non-NULL: serve HTTPS */
	/* The answer to any other request: status line (NULL: hang), extra
	 * header lines, body. */
	const char *status;
	const char *headers;
	const char *body;
	/* When set, GETs of /v2/Users answer this ListResponse and GETs of
	 * /v2/Groups an empty one; only other requests get the answer above. */
	const char *users_list;
	const char *user_one; /* when set, the answer to GETs of /v2/Users/<id> */
	int writes;           /* requests other than GET seen */
	char if_match[128];   /* If-Match of the last of them */
} fake_t;

static void fake_send(fake_t *f, SSL *ssl, int c, const char *s)
{
	size_t n = strlen(s);
	if (ssl != NULL)
		(void)!SSL_write(ssl, s, (int)n);
	else
		(void)!write(c, s, n);
	(void)f;
}

static void fake_answer(fake_t *f, SSL *ssl, int c, const char *status,
                        const char *headers, const char *body)
{
	char buf[4096];
	snprintf(buf, sizeof(buf),
	         "HTTP/1.1 %s\r\n%sContent-Type: "
	         "application/scim+json\r\nContent-Length: %zu\r\n"
	         "Connection: close\r\n\r\n%s",
	         status, headers ? headers : "", strlen(body), body);
	fake_send(f, ssl, c, buf);
}

static void *fake_main(void *arg)
{
	fake_t *f = arg;
	for (;;) {
		struct pollfd p[2] = {{f->lfd, POLLIN, 0}, {f->wake[0], POLLIN, 0}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		int c = accept(f->lfd, NULL, NULL);
		if (c < 0)
			continue;
		SSL *ssl = NULL;
		if (f->tls != NULL) {
			ssl = SSL_new(f->tls);
			SSL_set_fd(ssl, c);
			if (SSL_accept(ssl) <= 0) {
				SSL_free(ssl);
				close(c);
				continue;
			}
		}
		char req[8192] = "";
		size_t n = 0;
		while (n + 1 < sizeof(req) && strstr(req, "\r\n\r\n") == NULL) {
			int k = ssl ? SSL_read(ssl, req + n, (int)(sizeof(req) - 1 - n))
			            : (int)read(c, req + n, sizeof(req) - 1 - n);
			if (k <= 0)
				break;
			n += (size_t)k;
			req[n] = '\0';
		}
		req[n] = '\0';
		bool get = strncmp(req, "GET ", 4) == 0;
		if (!get) {
			const char *im = strstr(req, "\r\nIf-Match: ");
			f->writes++;
			f->if_match[0] = '\0';
			if (im != NULL)
				sscanf(im + 12, "%127[^\r]", f->if_match);
		}
		if (strstr(req, " /v2/ServiceProviderConfig ") != NULL)
			fake_answer(f, ssl, c, "200 OK", NULL,
			            "{\"patch\":{\"supported\":true},\"bulk\":{"
			            "\"supported\":false},"
			            "\"filter\":{\"supported\":true},\"etag\":{"
			            "\"supported\":true}}");
		else if (strstr(req, " /v2/ResourceTypes ") != NULL)
			fake_answer(
			    f, ssl, c, "200 OK", NULL,
			    "{\"Resources\":[{\"name\":\"User\",\"endpoint\":\"/Users\","
			    "\"schema\":\"" SCIM_SCHEMA_USER "\"},{\"name\":\"Group\","
			    "\"endpoint\":\"/Groups\",\"schema\":\"" SCIM_SCHEMA_GROUP
			    "\"}]}");
		else if (get && f->users_list != NULL &&
		         strstr(req, " /v2/Users?") != NULL)
			fake_answer(f, ssl, c, "200 OK", NULL, f->users_list);
		else if (get && f->user_one != NULL && strstr(req, " /v2/Users/") != NULL)
			fake_answer(f, ssl, c, "200 OK", NULL, f->user_one);
		else if (get && f->users_list != NULL &&
		         strstr(req, " /v2/Groups?") != NULL)
			fake_answer(f, ssl, c, "200 OK", NULL, "{\"Resources\":[]}");
		else if (f->status != NULL)
			fake_answer(f, ssl, c, f->status, f->headers,
			            f->body ? f->body : "");
		else
			sleep(2); /* a hang: answer nothing */
		if (ssl != NULL) {
			SSL_shutdown(ssl);
			SSL_free(ssl);
		}
		close(c);
	}
	return NULL;
}

static void fake_start(fake_t *f)
{
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->lfd, 16), 0);
	socklen_t len = sizeof(a);
	getsockname(f->lfd, (struct sockaddr *)&a, &len);
	f->port = ntohs(a.sin_port);
	assert_int_equal(pipe(f->wake), 0);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(fake_t *f)
{
	assert_int_equal(write(f->wake[1], "x", 1), 1);
	pthread_join(f->th, NULL);
	close(f->lfd);
	close(f->wake[0]);
	close(f->wake[1]);
}

static sink_scim_t *open_fake(const fake_t *f, const sink_scim_opts_t *extra)
{
	char base[128];
	snprintf(base, sizeof(base), "%s://127.0.0.1:%d/v2", f->tls ? "https" : "http",
	         f->port);
	return open_at(base, extra);
}

static void test_throttled_and_failing_server(void **state)
{
	t_t *t = *state;
	fake_t f = {0};
	id_err_t err = {0};
	f.status = "429 Too Many Requests";
	f.headers = "Retry-After: 7\r\n";
	f.body =
	    "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:Error\"],\"status\":"
	    "\"429\",\"detail\":\"slow down\"}";
	fake_start(&f);
	t->sink = open_fake(&f, NULL);
	mk(&t->d, "E1", "ada", LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	assert_int_equal(sink_scim_apply(t->sink, &t->d, &t->r, &err), ID_EIO);
	assert_non_null(strstr(err.msg, "HTTP 429: slow down"));
	assert_non_null(strstr(err.msg, "Retry-After 7 s"));
	assert_int_equal(sink_scim_retry_after_ms(t->sink), 7000);
	assert_int_equal(t->r.outcome, SINK_FAILED);
	assert_non_null(strstr(t->r.error, "Retry-After 7 s"));

	f.status = "503 Service Unavailable";
	f.headers = NULL;
	f.body = NULL;
	assert_int_equal(sink_scim_apply(t->sink, &t->d, &t->r, &err), ID_EIO);
	assert_non_null(strstr(err.msg, "HTTP 503"));
	assert_int_equal(sink_scim_retry_after_ms(t->sink), 0);

	/* A token revoked while running: not final either. */
	f.status = "401 Unauthorized";
	assert_int_equal(sink_scim_apply(t->sink, &t->d, &t->r, &err), ID_ECONFIG);
	assert_non_null(strstr(err.msg, "bearer token was refused"));

	/* No answer within the timeout. */
	sink_scim_close(t->sink);
	sink_scim_opts_t o = {.timeout_ms = 300};
	f.status = NULL;
	t->sink = open_fake(&f, &o);
	assert_int_equal(sink_scim_apply(t->sink, &t->d, &t->r, &err), ID_ETIMEOUT);
	assert_int_equal(t->r.outcome, SINK_FAILED);
	fake_stop(&f);
}

/* Writes carry the ETag read (If-Match); a User that keeps changing between
 * read and write (412 each time) ends in a final FAILED after a few rounds. */
static void test_if_match_and_412(void **state)
{
	t_t *t = *state;
	fake_t f = {0};
	id_err_t err = {0};
	f.users_list =
	    "{\"totalResults\":1,\"Resources\":[{\"id\":\"u1\",\"externalId\":"
	    "\"E1\",\"userName\":\"ada\",\"meta\":{\"version\":\"W/\\\"5\\\"\"},"
	    "\"active\":true}]}";
	/* Listed, so read by id. */
	f.user_one = "{\"id\":\"u1\",\"externalId\":\"E1\",\"userName\":\"ada\","
	             "\"meta\":{\"version\":\"W/\\\"5\\\"\"},\"active\":true}";
	f.status = "412 Precondition Failed";
	f.body = "{\"status\":\"412\",\"detail\":\"Resource has changed\"}";
	fake_start(&f);
	t->sink = open_fake(&f, NULL);
	mk(&t->d, "E1", "ada", LC_ACTIVE, "Engineer", "eng", NULL, NULL);
	assert_int_equal(sink_scim_apply(t->sink, &t->d, &t->r, &err), 0);
	assert_int_equal(t->r.outcome, SINK_FAILED);
	assert_non_null(strstr(t->r.error, "kept changing"));
	assert_non_null(strstr(t->r.error, "HTTP 412"));
	assert_int_equal(f.writes, 3); /* one PATCH per round */
	assert_string_equal(f.if_match, "W/\"5\"");
	assert_int_equal(t->r.nops, 0);

	/* Without ETag use, no If-Match is sent. */
	sink_scim_close(t->sink);
	sink_scim_opts_t o = {.no_etag = true};
	t->sink = open_fake(&f, &o);
	sink_scim_apply(t->sink, &t->d, &t->r, &err);
	assert_string_equal(f.if_match, "");
	fake_stop(&f);
}

static void test_open_errors(void **state)
{
	(void)state;
	id_err_t err = {0};
	/* Wrong token: refused at open, and the token is not in the message. */
	sink_scim_opts_t o = {
	    .base_url = url, .bearer_token = "not-the-token-XYZ", .timeout_ms = 5000};
	assert_null(sink_scim_open(&o, &err));
	assert_int_equal(err.code, ID_ECONFIG);
	assert_non_null(strstr(err.msg, "HTTP 401"));
	assert_non_null(strstr(err.msg, "bearer token was refused"));
	assert_null(strstr(err.msg, "not-the-token-XYZ"));
	/* No token at all. */
	o.bearer_token = NULL;
	assert_null(sink_scim_open(&o, &err));
	assert_int_equal(err.code, ID_ECONFIG);
	/* Not a SCIM endpoint. */
	char base[512];
	snprintf(base, sizeof(base), "%s/nowhere", url);
	o.base_url = base;
	o.bearer_token = token;
	assert_null(sink_scim_open(&o, &err));
	assert_int_equal(err.code, ID_ECONFIG);
	assert_non_null(strstr(err.msg, "not a SCIM 2.0 service provider"));
	o.base_url = "ftp://127.0.0.1/";
	assert_null(sink_scim_open(&o, &err));
	assert_int_equal(err.code, ID_EINVALID);
}

/* ---- TLS: verified by default, CA file, explicit opt-out ---- */

/* A self-signed certificate for 127.0.0.1 (key and cert PEM files). */
static void make_cert(const char *key_path, const char *cert_path)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert_non_null(k);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	                           (const unsigned char *)"127.0.0.1", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *e =
	    X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	FILE *f = fopen(key_path, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	f = fopen(cert_path, "w");
	PEM_write_X509(f, x);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void test_tls(void **state)
{
	(void)state;
	char dir[256], key[300], cert[300];
	const char *td = getenv("IDSTREAM_TEST_DIR");
	snprintf(dir, sizeof(dir), "%s", td && td[0] ? td : "/tmp");
	snprintf(key, sizeof(key), "%s/scim-test-%d.key", dir, (int)getpid());
	snprintf(cert, sizeof(cert), "%s/scim-test-%d.crt", dir, (int)getpid());
	make_cert(key, cert);
	fake_t f = {0};
	f.tls = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate_file(f.tls, cert, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(f.tls, key, SSL_FILETYPE_PEM), 1);
	fake_start(&f);
	char base[128];
	snprintf(base, sizeof(base), "https://127.0.0.1:%d/v2", f.port);

	/* Default: the self-signed certificate is refused. */
	id_err_t err = {0};
	sink_scim_opts_t o = {
	    .base_url = base, .bearer_token = token, .timeout_ms = 5000};
	assert_null(sink_scim_open(&o, &err));
	assert_int_equal(err.code, ID_ECONFIG);
	assert_non_null(strstr(err.msg, "certificate"));
	/* Trusted through the CA file: discovery completes. */
	o.ca_file = cert;
	sink_scim_t *s = sink_scim_open(&o, &err);
	if (s == NULL)
		fail_msg("open with ca_file: %s", err.msg);
	sink_scim_close(s);
	/* Explicit opt-out. */
	o.ca_file = NULL;
	o.tls_insecure = true;
	s = sink_scim_open(&o, &err);
	if (s == NULL)
		fail_msg("open with tls_insecure: %s", err.msg);
	sink_scim_close(s);
	fake_stop(&f);
	SSL_CTX_free(f.tls);
	unlink(key);
	unlink(cert);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_lifecycle_bulk),
	    T(test_lifecycle_one_request_at_a_time),
	    T(test_lifecycle_put_with_if_match),
	    T(test_bulk_request_count),
	    T(test_manager),
	    T(test_adopt_by_username_and_conflicts),
	    T(test_stale_listing_never_creates_twice),
	    T(test_unmanaged_groups),
	    T(test_group_deleted_behind_its_back),
	    T(test_server_down),
	    T(test_crash_mid_apply_converges),
	    T(test_throttled_and_failing_server),
	    T(test_if_match_and_412),
	    T(test_open_errors),
	    T(test_tls),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
