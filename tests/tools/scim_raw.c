/*
 * scim_raw.c — the raw rate of a SCIM 2.0 server for `make bench`: the
 * Users and group memberships the scim sink created, written again with a
 * minimal HTTP loop (libcurl, keep-alive), so the sink's rate can be put
 * next to what the server takes for the same requests.
 *
 *   scim_raw --url BASE --token-file FILE [--concurrency C] [--prefix P]
 *
 * Untimed first: every User of the server (GET /Users, paged) and every
 * Group with its members (GET /Groups) are read; each User becomes a POST
 * /Users body — the resource as the server returned it, without id, meta
 * and groups, with userName and externalId prefixed by P (default "raw-")
 * so the server's uniqueness rules accept the copy — and each membership a
 * PATCH of the Group "P<displayName>" adding the copy's id.
 *
 * Timed: the Groups "P<displayName>" are created (POST /Groups, one at a
 * time), then C threads, each with its own keep-alive connection, take the
 * Users in turn: POST /Users, then one PATCH /Groups/<id> (op add, path
 * members) per membership — the requests the sink sends for a new
 * employee, without its reads.  One line is printed (key=value): users,
 * groups, requests, failed (non-2xx or transport errors), elapsed_ms, rate
 * (Users per second).  Exit 0 when every request succeeded, else 1.
 *
 * The bearer token is read from FILE (first line), never from argv.
 * Threading: C worker threads; each owns its curl handle; the work index is
 * taken under a mutex; results are counted under the same mutex.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCIM_CT      "application/scim+json"
#define PATCH_SCHEMA "urn:ietf:params:scim:api:messages:2.0:PatchOp"

typedef struct buf {
	char *p;
	size_t n;
} buf_t;

typedef struct user {
	char *body;    /* POST /Users body */
	char **groups; /* ids of the copies' Groups it joins */
	size_t ngroups;
} user_t;

typedef struct run {
	const char *base;
	char auth[4096];
	user_t *users;
	size_t nusers;
	size_t next;
	long requests, failed;
	pthread_mutex_t mu;
} run_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	buf_t *b = ud;
	size_t len = size * n;
	char *q = realloc(b->p, b->n + len + 1);
	if (q == NULL)
		return 0;
	memcpy(q + b->n, p, len);
	b->n += len;
	q[b->n] = '\0';
	b->p = q;
	return len;
}

/* One request on h (kept alive between calls).  The HTTP status, or -1. */
static long http(CURL *h, const run_t *r, const char *method, const char *path,
                 const char *body, buf_t *out)
{
	char url[2048];
	struct curl_slist *hdrs = NULL;
	long status = -1;
	snprintf(url, sizeof(url), "%s%s", r->base, path);
	hdrs = curl_slist_append(hdrs, r->auth);
	hdrs = curl_slist_append(hdrs, "Accept: " SCIM_CT);
	if (body != NULL)
		hdrs = curl_slist_append(hdrs, "Content-Type: " SCIM_CT);
	out->n = 0;
	if (out->p != NULL)
		out->p[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_HTTPGET, body == NULL ? 1L : 0L);
	if (body == NULL)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	return status;
}

static CURL *handle(void)
{
	CURL *h = curl_easy_init();
	if (h != NULL) {
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	}
	return h;
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

static json_t *get_list(CURL *h, const run_t *r, const char *what)
{
	json_t *all = json_array();
	buf_t b = {0};
	for (long start = 1;;) {
		char path[256];
		snprintf(path, sizeof(path), "/%s?startIndex=%ld&count=500", what, start);
		long st = http(h, r, "GET", path, NULL, &b);
		json_t *j = st == 200 ? json_loads(b.p, 0, NULL) : NULL;
		json_t *res = json_object_get(j, "Resources");
		size_t n = json_array_size(res);
		if (j == NULL) {
			fprintf(stderr, "scim_raw: GET %s: status %ld\n", path, st);
			json_decref(all);
			all = NULL;
			break;
		}
		json_array_extend(all, res);
		long total = (long)json_integer_value(json_object_get(j, "totalResults"));
		json_decref(j);
		start += (long)n;
		if (n == 0 || start > total)
			break;
	}
	free(b.p);
	return all;
}

static void *worker(void *arg)
{
	run_t *r = arg;
	CURL *h = handle();
	buf_t b = {0};
	for (;;) {
		pthread_mutex_lock(&r->mu);
		size_t i = r->next < r->nusers ? r->next++ : r->nusers;
		pthread_mutex_unlock(&r->mu);
		if (i == r->nusers || h == NULL)
			break;
		const user_t *u = &r->users[i];
		long req = 1, bad = 0;
		long st = http(h, r, "POST", "/Users", u->body, &b);
		json_t *j = st == 201 ? json_loads(b.p, 0, NULL) : NULL;
		const char *id = json_string_value(json_object_get(j, "id"));
		if (id == NULL) {
			bad++;
			if (bad == 1 && b.p != NULL)
				fprintf(stderr, "scim_raw: POST /Users: %ld %.200s\n", st,
				        b.p);
		}
		for (size_t g = 0; id != NULL && g < u->ngroups; g++) {
			char path[512], *body;
			json_t *p =
			    json_pack("{s:[s],s:[{s:s,s:s,s:[{s:s}]}]}", "schemas",
			              PATCH_SCHEMA, "Operations", "op", "add", "path",
			              "members", "value", "value", id);
			body = json_dumps(p, JSON_COMPACT);
			json_decref(p);
			snprintf(path, sizeof(path), "/Groups/%s", u->groups[g]);
			st = http(h, r, "PATCH", path, body, &b);
			free(body);
			req++;
			if (st < 200 || st > 299)
				bad++;
		}
		json_decref(j);
		pthread_mutex_lock(&r->mu);
		r->requests += req;
		r->failed += bad;
		pthread_mutex_unlock(&r->mu);
	}
	free(b.p);
	curl_easy_cleanup(h);
	return NULL;
}

int main(int argc, char **argv)
{
	run_t r = {.base = NULL};
	const char *token_file = NULL, *prefix = "raw-";
	long conc = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
			r.base = argv[++i];
		else if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc)
			token_file = argv[++i];
		else if (strcmp(argv[i], "--concurrency") == 0 && i + 1 < argc)
			conc = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc)
			prefix = argv[++i];
		else {
			fprintf(stderr, "usage: scim_raw --url BASE --token-file FILE "
			                "[--concurrency C] [--prefix P]\n");
			return 2;
		}
	}
	if (r.base == NULL || token_file == NULL || conc < 1 || conc > 256) {
		fprintf(stderr, "scim_raw: --url and --token-file are required\n");
		return 2;
	}
	char tok[2048] = "";
	FILE *f = fopen(token_file, "r");
	if (f == NULL || fgets(tok, sizeof(tok), f) == NULL) {
		fprintf(stderr, "scim_raw: cannot read %s\n", token_file);
		if (f != NULL)
			fclose(f);
		return 2;
	}
	fclose(f);
	tok[strcspn(tok, "\r\n")] = '\0';
	snprintf(r.auth, sizeof(r.auth), "Authorization: Bearer %s", tok);
	memset(tok, 0, sizeof(tok));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	pthread_mutex_init(&r.mu, NULL);
	CURL *h = handle();
	buf_t b = {0};
	int rc = 1;

	/* Untimed: what the sink made. */
	json_t *users = get_list(h, &r, "Users");
	json_t *groups = get_list(h, &r, "Groups");
	if (users == NULL || groups == NULL)
		goto out;
	size_t ng = json_array_size(groups);
	char **gid = calloc(ng + 1, sizeof(*gid));
	r.users = calloc(json_array_size(users) + 1, sizeof(*r.users));
	double t0 = now_ms();
	/* Timed from here: the copies' Groups, then the Users. */
	for (size_t k = 0; k < ng; k++) {
		json_t *g = json_array_get(groups, k);
		const char *dn = json_string_value(json_object_get(g, "displayName"));
		char name[512];
		snprintf(name, sizeof(name), "%s%s", prefix, dn ? dn : "");
		json_t *p = json_pack("{s:[s],s:s}", "schemas",
		                      "urn:ietf:params:scim:schemas:core:2.0:Group",
		                      "displayName", name);
		char *body = json_dumps(p, JSON_COMPACT);
		json_decref(p);
		long st = http(h, &r, "POST", "/Groups", body, &b);
		free(body);
		r.requests++;
		json_t *j = st == 201 ? json_loads(b.p, 0, NULL) : NULL;
		const char *id = json_string_value(json_object_get(j, "id"));
		if (id == NULL) {
			fprintf(stderr, "scim_raw: POST /Groups %s: %ld\n", name, st);
			r.failed++;
		} else {
			gid[k] = strdup(id);
		}
		json_decref(j);
	}
	double t_groups = now_ms() - t0;
	/* Untimed: the bodies (the JSON is built before the clock runs on). */
	for (size_t i = 0; i < json_array_size(users); i++) {
		json_t *u = json_deep_copy(json_array_get(users, i));
		const char *uid = json_string_value(json_object_get(u, "id"));
		user_t *x = &r.users[r.nusers++];
		x->groups = calloc(ng + 1, sizeof(*x->groups));
		for (size_t k = 0; uid != NULL && k < ng; k++) {
			json_t *m,
			    *mem = json_object_get(json_array_get(groups, k), "members");
			size_t mi;
			json_array_foreach(mem, mi, m)
			{
				const char *v =
				    json_string_value(json_object_get(m, "value"));
				if (v != NULL && strcmp(v, uid) == 0 && gid[k] != NULL) {
					x->groups[x->ngroups++] = gid[k];
					break;
				}
			}
		}
		json_object_del(u, "id");
		json_object_del(u, "meta");
		json_object_del(u, "groups");
		const char *keys[] = {"userName", "externalId"};
		for (int k = 0; k < 2; k++) {
			const char *v = json_string_value(json_object_get(u, keys[k]));
			if (v != NULL) {
				char nv[1024];
				snprintf(nv, sizeof(nv), "%s%s", prefix, v);
				json_object_set_new(u, keys[k], json_string(nv));
			}
		}
		x->body = json_dumps(u, JSON_COMPACT);
		json_decref(u);
	}
	pthread_t *th = calloc((size_t)conc, sizeof(*th));
	double t1 = now_ms();
	for (long i = 0; i < conc; i++)
		pthread_create(&th[i], NULL, worker, &r);
	for (long i = 0; i < conc; i++)
		pthread_join(th[i], NULL);
	double ms = t_groups + (now_ms() - t1);
	printf("users=%zu groups=%zu requests=%ld failed=%ld elapsed_ms=%.0f rate=%.0f\n",
	       r.nusers, ng, r.requests, r.failed, ms,
	       ms > 0 ? (double)r.nusers * 1000.0 / ms : 0.0);
	rc = r.failed == 0 ? 0 : 1;
	free(th);
	for (size_t i = 0; i < r.nusers; i++) {
		free(r.users[i].body);
		free(r.users[i].groups);
	}
	for (size_t k = 0; k < ng; k++)
		free(gid[k]);
	free(gid);
out:
	free(r.users);
	json_decref(users);
	json_decref(groups);
	free(b.p);
	curl_easy_cleanup(h);
	curl_global_cleanup();
	memset(r.auth, 0, sizeof(r.auth));
	return rc;
}
