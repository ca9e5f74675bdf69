/*
 * sink_scim.c — executes scim_diff plans against a SCIM 2.0 service
 * provider with libcurl (HTTP) and jansson (JSON).
 *
 * Flow of one apply: the User is found through the directory (see struct
 * scim_dir): one paged listing of every User, taken by the first apply of
 * the process and kept up to date by the sink's own writes, says which
 * employee has which User id.  A User listed is read by id (GET
 * /Users/{id}); an employee without one is created without any read (the
 * POST's 409 on a taken userName sends the apply to the filtered lookups);
 * an employee the directory is unsure of (a create whose answer was lost,
 * a User gone or changed behind the sink's back, several Users with its
 * externalId) is looked up with filtered GETs (single `eq` comparisons):
 * by externalId = employee id, else by userName = uid, for an account made
 * before the sink knew it.  The manager's id comes from the directory too.
 * Then the Groups the User is a member of are read; desired Groups not yet
 * known are looked up by displayName (and cached); then the plan goes out
 * either request by request or as one /Bulk request.  Every request
 * tolerates what a half-finished earlier apply left behind (a member
 * already gone, a User already deleted), so re-running converges.
 *
 * Retry rule: a 412 (the User changed between read and write, If-Match),
 * a 404 on a cached Group, or a 409 on the create (the userName is taken:
 * look it up, adopt or report) redoes the whole read–diff–apply, at most
 * APPLY_TRIES times.  Transport failures, 429 and 5xx are not retried here:
 * apply returns ID_EIO/ID_ETIMEOUT with the Retry-After hint and the caller
 * backs off.  curl and HTTP errors become id_err_t messages here and
 * nowhere else; the bearer token is never part of one.
 * Threading: one thread per handle (see sink_scim.h).
 */
#include "sinks/sink_scim.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "sinks/sink_password.h"

#define LOG_COMP "sink.scim"

/* Read–diff–apply rounds when the User or a cached Group changed under us. */
#define APPLY_TRIES 3
/* Group cache bound: cleared, not evicted, when full (groups are few). */
#define GROUP_CACHE_MAX 4096
/* A response body larger than this is refused (a ListResponse of Users
 * with a few hundred members is far below it). */
#define BODY_MAX ((size_t)64 << 20)

/*
 * The directory: employee id → SCIM id of its User, for every User of the
 * service provider, shared by the handles of one sink.
 *
 * Filled by one paged listing (GET /Users?startIndex&count&attributes=
 * externalId,userName) taken by the first apply or plan of the process,
 * then kept current by the sink's own writes: a create records the new id,
 * a delete removes it.  So an employee absent from ids has no User unless
 * someone else made one since the listing; the POST that creates it then
 * meets a 409 when that User holds its userName, and the apply looks it up
 * by filter (a User made by hand for a managed employee with another
 * userName is seen at the next start of the sink, or by reconcile).
 *
 * An entry holding JSON null is "unsure": a create was sent whose outcome
 * is unknown, the User read by id was gone or no longer carries the
 * employee id, or several Users carry it.  Unsure entries and every entry
 * of a directory that is not usable (the listing failed, or exceeded
 * IDS_MAX, or the service provider changed during it) are looked up with
 * the filters; their result replaces the entry.
 *
 * names holds the userNames seen (lowercased), a hint only: a name absent
 * from it may still be taken (the POST's 409 says so).
 * Threading: every field under mu; the listing is made with mu held, so
 * the other handles wait for it instead of each making its own.
 */
typedef enum { DIR_UNLISTED, DIR_LISTED, DIR_OFF } dir_state_t;

typedef struct scim_dir {
	pthread_mutex_t mu;
	int refs;
	dir_state_t state;
	json_t *ids;   /* employee id → id string, or null (unsure) */
	json_t *names; /* lowercased userName → true */
} scim_dir_t;

/* What the directory says of an employee. */
typedef enum { DIR_ABSENT, DIR_PRESENT, DIR_UNSURE } dir_answer_t;

struct sink_scim {
	CURL *curl;
	char *base; /* without trailing '/' */
	char *token;
	size_t token_len;
	long timeout_ms;
	bool tls_insecure;
	char *ca_file;
	char *users_ep; /* "/Users" */
	char *groups_ep;
	sink_scim_features_t feat;
	scim_diff_opts_t dopts;
	uint64_t writes;
	uint64_t requests;
	int64_t retry_after_ms;
	scim_diff_group_t *gcache; /* known Groups, by display name */
	size_t ngcache;
	scim_dir_t *dir;     /* shared by the handles of one sink (sink_scim_share) */
	int page_size;       /* count of a listing page (filter.maxResults, <= 1000) */
	char *password_file; /* NULL: Users are created without a password */
	sink_password_policy_t policy;
};

static scim_dir_t *dir_create(void);
static void dir_release(scim_dir_t *d);

/* Wipes a request payload: it may carry an initial password. */
static void payload_free(char *payload)
{
	if (payload != NULL)
		explicit_bzero(payload, strlen(payload));
	free(payload);
}

/* Wipes the "password" of a POST /Users body in place (jansson's copy). */
static void body_wipe_password(json_t *body)
{
	json_t *pw = json_object_get(body, "password");
	const char *v = json_string_value(pw);
	if (v != NULL)
		explicit_bzero((char *)v, strlen(v));
}

/* ---- HTTP ---- */

typedef struct http_resp {
	long status;
	id_buf_t body;
	char *etag;
	json_t *json; /* the body parsed, NULL when empty or not JSON */
	long retry_after_s;
} http_resp_t;

static void resp_fini(http_resp_t *r)
{
	id_buf_fini(&r->body);
	free(r->etag);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	http_resp_t *r = ud;
	size_t len = size * n;
	if (r->body.len + len > BODY_MAX || id_buf_append(&r->body, p, len) != 0)
		return 0; /* makes curl fail with CURLE_WRITE_ERROR */
	return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	http_resp_t *r = ud;
	size_t len = size * n;
	if (len > 5 && strncasecmp(p, "ETag:", 5) == 0) {
		size_t a = 5, b = len;
		while (a < b && (p[a] == ' ' || p[a] == '\t'))
			a++;
		while (b > a && (p[b - 1] == '\r' || p[b - 1] == '\n' || p[b - 1] == ' '))
			b--;
		free(r->etag);
		r->etag = strndup(p + a, b - a);
	}
	return len;
}

/*
 * Sends one request (body: NULL or a JSON value, sent compact) and fills
 * resp with whatever HTTP answer came back, any status.  Returns 0 when an
 * answer came, ID_ETIMEOUT / ID_EIO when none did, ID_ECONFIG when the TLS
 * peer could not be verified, ID_ENOMEM.
 */
static int http_do(sink_scim_t *s, const char *method, const char *url,
                   const char *if_match, const json_t *body, http_resp_t *resp,
                   id_err_t *err)
{
	struct curl_slist *h = NULL;
	char *payload = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	int rc = 0;
	CURL *c = s->curl;

	resp_fini(resp);
	if (body != NULL && (payload = json_dumps(body, JSON_COMPACT)) == NULL)
		return id_err_set(err, ID_ENOMEM, "SCIM %s %s: cannot encode the body",
		                  method, url);
	char im[512];
	struct curl_slist *t;
	if ((t = curl_slist_append(h, "Accept: application/scim+json")) == NULL)
		goto nomem;
	h = t;
	if (payload != NULL) {
		if ((t = curl_slist_append(h, "Content-Type: application/scim+json")) ==
		    NULL)
			goto nomem;
		h = t;
	}
	if (if_match != NULL) {
		snprintf(im, sizeof(im), "If-Match: %s", if_match);
		if ((t = curl_slist_append(h, im)) == NULL)
			goto nomem;
		h = t;
	}
	/* Reset keeps the connection cache; every option is set again below. */
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->timeout_ms);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, s->tls_insecure ? 0L : 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, s->tls_insecure ? 0L : 2L);
	if (s->ca_file != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
	if (s->token != NULL) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, s->token);
	}
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POST, 1L);
	else if (strcmp(method, "GET") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (payload != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
	}
	s->requests++;
	CURLcode cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		bool tls = cc == CURLE_PEER_FAILED_VERIFICATION ||
		           cc == CURLE_SSL_CACERT_BADFILE || cc == CURLE_SSL_CERTPROBLEM;
		rc = cc == CURLE_OPERATION_TIMEDOUT ? ID_ETIMEOUT
		     : tls                          ? ID_ECONFIG
		                                    : ID_EIO;
		id_err_set(err, rc, "SCIM %s %s: %s%s%s%s", method, url,
		           curl_easy_strerror(cc), errbuf[0] ? " (" : "", errbuf,
		           errbuf[0] ? ")" : "");
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	curl_off_t ra = 0;
	if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
		resp->retry_after_s = (long)ra;
	if (resp->body.len > 0)
		resp->json =
		    json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "SCIM %s %s: out of memory", method, url);
out:
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(h);
	payload_free(payload);
	return rc;
}

/* "status 409 uniqueness: <detail>" from a SCIM Error body (RFC 7644 §3.12). */
static void error_text(const json_t *e, long status, char *out, size_t n)
{
	const char *type = json_string_value(json_object_get(e, "scimType"));
	const char *detail = json_string_value(json_object_get(e, "detail"));
	snprintf(out, n, "HTTP %ld%s%s%s%s", status, type ? " " : "", type ? type : "",
	         detail ? ": " : "", detail ? detail : "");
}

/*
 * Maps a non-2xx answer to an error code: 401/403 and 3xx → ID_ECONFIG
 * (token, base URL), 429 and 5xx → ID_EIO (with the Retry-After hint),
 * 404 → ID_ENOTFOUND,
 * 409/412 → ID_ECONFLICT, other 4xx → ID_EINVALID.  0 for 2xx.
 */
static int status_check(sink_scim_t *s, long status, const json_t *body,
                        long retry_after_s, id_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static int status_check(sink_scim_t *s, long status, const json_t *body,
                        long retry_after_s, id_err_t *err, const char *fmt, ...)
{
	if (status >= 200 && status < 300)
		return 0;
	char what[768], text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	error_text(body, status, text, sizeof(text));
	if (status == 401 || status == 403)
		return id_err_set(err, ID_ECONFIG,
		                  "SCIM %s: %s (the bearer token was refused)", what,
		                  text);
	if (status >= 300 && status < 400)
		return id_err_set(err, ID_ECONFIG,
		                  "SCIM %s: %s (a redirect: check the base URL)", what,
		                  text);
	if (status == 429 || status >= 500) {
		s->retry_after_ms = (int64_t)retry_after_s * 1000;
		if (retry_after_s > 0)
			return id_err_set(err, ID_EIO, "SCIM %s: %s; Retry-After %ld s",
			                  what, text, retry_after_s);
		return id_err_set(err, ID_EIO, "SCIM %s: %s", what, text);
	}
	int code = status == 404                    ? ID_ENOTFOUND
	           : status == 409 || status == 412 ? ID_ECONFLICT
	                                            : ID_EINVALID;
	return id_err_set(err, code, "SCIM %s: %s", what, text);
}

/* GET base + path_query; the answer must be 2xx with a JSON object. */
static int get_json(sink_scim_t *s, const char *path_query, http_resp_t *resp,
                    id_err_t *err)
{
	id_buf_t url = ID_BUF_INIT;
	int rc;
	if (id_buf_printf(&url, "%s%s", s->base, path_query) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM GET: out of memory");
		goto out;
	}
	const char *u = (const char *)url.data;
	if ((rc = http_do(s, "GET", u, NULL, NULL, resp, err)) != 0)
		goto out;
	if ((rc = status_check(s, resp->status, resp->json, resp->retry_after_s, err,
	                       "GET %s", u)) != 0)
		goto out;
	if (!json_is_object(resp->json) && !json_is_array(resp->json))
		rc = id_err_set(err, ID_EPARSE,
		                "SCIM GET %s: HTTP %ld without a JSON body", u,
		                resp->status);
out:
	id_buf_fini(&url);
	return rc;
}

/* Appends "?filter=<escaped>[&attributes=<attrs>]" to q. */
static int query_append(sink_scim_t *s, id_buf_t *q, const char *filter,
                        const char *attrs)
{
	char *f = curl_easy_escape(s->curl, filter, 0);
	int rc = f == NULL || id_buf_printf(q, "?filter=%s", f) != 0 ||
	                 (attrs != NULL && id_buf_printf(q, "&attributes=%s", attrs) != 0)
	             ? ID_ENOMEM
	             : 0;
	curl_free(f);
	return rc;
}

/* The Resources of a ListResponse (or a bare array), never NULL-safe-free. */
static json_t *list_resources(json_t *j)
{
	if (json_is_array(j))
		return j;
	json_t *r = json_object_get(j, "Resources");
	return json_is_array(r) ? r : NULL;
}

/* ---- open/close ---- */

static bool json_flag(const json_t *cfg, const char *feature)
{
	return json_is_true(json_object_get(json_object_get(cfg, feature), "supported"));
}

/* Turns err into an ID_ECONFIG error, prefixed with context. */
static int config_error(id_err_t *err, const char *fmt, const char *arg)
    __attribute__((format(printf, 2, 0)));

static int config_error(id_err_t *err, const char *fmt, const char *arg)
{
	char ctx[512], prev[ID_ERR_MSG_MAX];
	snprintf(ctx, sizeof(ctx), fmt, arg);
	snprintf(prev, sizeof(prev), "%s", err != NULL ? err->msg : "");
	return id_err_set(err, ID_ECONFIG, "%s: %s", ctx, prev);
}

static int discover(sink_scim_t *s, const sink_scim_opts_t *o, id_err_t *err)
{
	http_resp_t r = {0};
	int rc;
	/* RFC 7644 §4: no authentication needed here, so this tells "wrong URL"
	 * apart from "wrong token" (the next request). */
	if ((rc = get_json(s, "/ServiceProviderConfig", &r, err)) != 0) {
		if (rc == ID_ENOTFOUND || rc == ID_EINVALID || rc == ID_EPARSE ||
		    rc == ID_ECONFLICT)
			rc = config_error(err, "not a SCIM 2.0 service provider at %s",
			                  s->base);
		goto out;
	}
	if (!json_flag(r.json, "filter")) {
		rc = id_err_set(
		    err, ID_ECONFIG,
		    "SCIM %s: the service provider does not support filters, which "
		    "the sink needs to find Users by externalId",
		    s->base);
		goto out;
	}
	/* Listing pages as large as the server allows, within reason. */
	json_int_t max_results = json_integer_value(
	    json_object_get(json_object_get(r.json, "filter"), "maxResults"));
	s->page_size = max_results > 0 && max_results < 1000 ? (int)max_results : 1000;
	const json_t *bulk = json_object_get(r.json, "bulk");
	s->feat.patch = json_flag(r.json, "patch") && !o->no_patch;
	s->feat.etag = json_flag(r.json, "etag") && !o->no_etag;
	s->feat.bulk_max_ops =
	    (int)json_integer_value(json_object_get(bulk, "maxOperations"));
	s->feat.bulk_max_bytes =
	    (long)json_integer_value(json_object_get(bulk, "maxPayloadSize"));
	/* Bulk carries PATCH operations only: a PUT of a Group needs a read first. */
	s->feat.bulk = json_flag(r.json, "bulk") && !o->no_bulk && s->feat.patch &&
	               s->feat.bulk_max_ops > 1;

	if ((rc = get_json(s, "/ResourceTypes", &r, err)) != 0) {
		if (rc != ID_ECONFIG && rc != ID_EIO && rc != ID_ETIMEOUT &&
		    rc != ID_ENOMEM)
			rc = config_error(err, "SCIM %s: cannot read the resource types",
			                  s->base);
		goto out;
	}
	json_t *types = list_resources(r.json);
	for (size_t i = 0; i < json_array_size(types); i++) {
		json_t *t = json_array_get(types, i);
		const char *schema = json_string_value(json_object_get(t, "schema"));
		const char *ep = json_string_value(json_object_get(t, "endpoint"));
		if (schema == NULL || ep == NULL || ep[0] == '\0')
			continue;
		char **slot = strcmp(schema, SCIM_SCHEMA_USER) == 0    ? &s->users_ep
		              : strcmp(schema, SCIM_SCHEMA_GROUP) == 0 ? &s->groups_ep
		                                                       : NULL;
		if (slot == NULL || *slot != NULL)
			continue;
		size_t n = strlen(ep) + 2;
		if ((*slot = malloc(n)) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "SCIM discovery: out of memory");
			goto out;
		}
		snprintf(*slot, n, "%s%s", ep[0] == '/' ? "" : "/", ep);
		if (slot == &s->users_ep) {
			json_t *ext = json_object_get(t, "schemaExtensions");
			for (size_t k = 0; k < json_array_size(ext); k++) {
				const char *u = json_string_value(
				    json_object_get(json_array_get(ext, k), "schema"));
				if (u != NULL && strcmp(u, SCIM_SCHEMA_ENTERPRISE) == 0)
					s->feat.enterprise = true;
			}
		}
	}
	if (s->users_ep == NULL || s->groups_ep == NULL) {
		rc = id_err_set(
		    err, ID_ECONFIG,
		    "SCIM %s/ResourceTypes lists no %s resource type (schema %s)",
		    s->base, s->users_ep == NULL ? "User" : "Group",
		    s->users_ep == NULL ? SCIM_SCHEMA_USER : SCIM_SCHEMA_GROUP);
		goto out;
	}
	s->dopts.enterprise = s->feat.enterprise;
	id_log_info(
	    LOG_COMP,
	    "%s: Users at %s, Groups at %s; patch=%s bulk=%s etag=%s enterprise=%s",
	    s->base, s->users_ep, s->groups_ep, s->feat.patch ? "yes" : "no (PUT)",
	    s->feat.bulk ? "yes" : "no", s->feat.etag ? "yes" : "no",
	    s->feat.enterprise ? "yes" : "no");
out:
	resp_fini(&r);
	return rc;
}

sink_scim_t *sink_scim_open(const sink_scim_opts_t *opts, id_err_t *err)
{
	sink_scim_t *s = NULL;
	if (opts == NULL || opts->base_url == NULL ||
	    (strncmp(opts->base_url, "http://", 7) != 0 &&
	     strncmp(opts->base_url, "https://", 8) != 0)) {
		id_err_set(err, ID_EINVALID,
		           "sink_scim_open: base_url must be an http:// or https:// URL");
		return NULL;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		id_err_set(err, ID_EIO, "sink_scim_open: libcurl initialisation failed");
		return NULL;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		curl_global_cleanup();
		goto nomem;
	}
	size_t n = strlen(opts->base_url);
	while (n > 0 && opts->base_url[n - 1] == '/')
		n--;
	if ((s->base = strndup(opts->base_url, n)) == NULL ||
	    (s->dir = dir_create()) == NULL || (s->curl = curl_easy_init()) == NULL)
		goto nomem;
	if (opts->bearer_token != NULL && opts->bearer_token[0] != '\0') {
		s->token_len = strlen(opts->bearer_token);
		if ((s->token = strdup(opts->bearer_token)) == NULL)
			goto nomem;
	}
	if (opts->ca_file != NULL && opts->ca_file[0] != '\0' &&
	    (s->ca_file = strdup(opts->ca_file)) == NULL)
		goto nomem;
	if (opts->password_file != NULL && opts->password_file[0] != '\0') {
		if ((s->password_file = strdup(opts->password_file)) == NULL)
			goto nomem;
		s->policy = opts->password_policy;
		/* Refuse an impossible policy now, not at the first hire. */
		char probe[SINK_PASSWORD_MAX_LEN + 1];
		int prc = sink_password_generate(&s->policy, NULL, NULL, probe, err);
		explicit_bzero(probe, sizeof(probe));
		if (prc != 0) {
			id_err_wrap(err, "scim.password_*");
			sink_scim_close(s);
			return NULL;
		}
	}
	s->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
	s->tls_insecure = opts->tls_insecure;
	if (s->tls_insecure && strncmp(s->base, "https://", 8) == 0)
		id_log_warn(LOG_COMP, "%s: TLS certificate verification is OFF", s->base);
	if (discover(s, opts, err) != 0) {
		sink_scim_close(s);
		return NULL;
	}
	return s;
nomem:
	id_err_set(err, ID_ENOMEM, "sink_scim_open: out of memory");
	sink_scim_close(s);
	return NULL;
}

static void gcache_clear(sink_scim_t *s)
{
	for (size_t i = 0; i < s->ngcache; i++)
		scim_diff_group_fini(&s->gcache[i]);
	free(s->gcache);
	s->gcache = NULL;
	s->ngcache = 0;
}

void sink_scim_close(sink_scim_t *s)
{
	if (s == NULL)
		return;
	if (s->curl != NULL)
		curl_easy_cleanup(s->curl);
	if (s->token != NULL)
		explicit_bzero(s->token, s->token_len);
	free(s->token);
	free(s->base);
	free(s->ca_file);
	free(s->password_file);
	free(s->users_ep);
	free(s->groups_ep);
	gcache_clear(s);
	dir_release(s->dir);
	free(s);
	curl_global_cleanup(); /* pairs with the init in open */
}

uint64_t sink_scim_writes(const sink_scim_t *s)
{
	return s != NULL ? s->writes : 0;
}

uint64_t sink_scim_requests(const sink_scim_t *s)
{
	return s != NULL ? s->requests : 0;
}

int64_t sink_scim_retry_after_ms(const sink_scim_t *s)
{
	return s != NULL ? s->retry_after_ms : 0;
}

void sink_scim_features(const sink_scim_t *s, sink_scim_features_t *out)
{
	if (s != NULL && out != NULL)
		*out = s->feat;
}

/* ---- directory (see struct scim_dir) ---- */

/* Most employee → User ids kept (about 100 bytes each); a bigger service
 * provider is looked up by filter, as if there were no directory. */
#define IDS_MAX 200000

static scim_dir_t *dir_create(void)
{
	scim_dir_t *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	if (pthread_mutex_init(&d->mu, NULL) != 0) {
		free(d);
		return NULL;
	}
	d->refs = 1;
	if ((d->ids = json_object()) == NULL || (d->names = json_object()) == NULL) {
		json_decref(d->ids);
		pthread_mutex_destroy(&d->mu);
		free(d);
		return NULL;
	}
	return d;
}

static void dir_release(scim_dir_t *d)
{
	if (d == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	int left = --d->refs;
	pthread_mutex_unlock(&d->mu);
	if (left > 0)
		return;
	json_decref(d->ids);
	json_decref(d->names);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

/* Stops using the directory (mu held): every employee is looked up. */
static void dir_off(scim_dir_t *d, const char *why)
{
	if (d->state != DIR_OFF)
		id_log_info(LOG_COMP, "Users are looked up by filter: %s", why);
	d->state = DIR_OFF;
	(void)json_object_clear(d->ids);
	(void)json_object_clear(d->names);
}

/* Adds userName v to names (mu held); a hint, so out of memory is ignored. */
static void dir_name_add(scim_dir_t *d, const char *v)
{
	char low[512];
	size_t n = v != NULL ? strlen(v) : 0;
	if (n == 0 || n >= sizeof(low) || json_object_size(d->names) >= IDS_MAX)
		return;
	for (size_t i = 0; i <= n; i++)
		low[i] = (char)((v[i] >= 'A' && v[i] <= 'Z') ? v[i] - 'A' + 'a' : v[i]);
	(void)json_object_set_new(d->names, low, json_true());
}

/*
 * Lists every User into d (mu held; d->state is DIR_UNLISTED).  Pages by
 * index (RFC 7644 §3.4.2.4).  The listing is kept only when it is whole:
 * the same totalResults on every page and that many distinct ids (a User
 * deleted meanwhile shifts the pages and hides another).  Returns 0 (the
 * directory is then LISTED or OFF), or a transport / server error
 * (ID_EIO, ID_ETIMEOUT, ID_ECONFIG, ID_ENOMEM) for the apply to report.
 */
static int dir_list(sink_scim_t *s, scim_dir_t *d, id_err_t *err)
{
	json_t *ids = json_object(), *seen = json_object();
	http_resp_t r = {0};
	json_int_t total = -1;
	size_t nusers = 0;
	int rc = 0;
	const char *why = NULL;
	char refused[ID_ERR_MSG_MAX];
	if (ids == NULL || seen == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM listing: out of memory");
		goto out;
	}
	for (long start = 1;;) {
		char q[512];
		snprintf(q, sizeof(q),
		         "%s?startIndex=%ld&count=%d&attributes=externalId,userName",
		         s->users_ep, start, s->page_size);
		if ((rc = get_json(s, q, &r, err)) != 0) {
			if (rc == ID_EIO || rc == ID_ETIMEOUT || rc == ID_ECONFIG ||
			    rc == ID_ENOMEM)
				goto out;
			snprintf(refused, sizeof(refused), "%s",
			         err != NULL ? err->msg : "the listing was refused");
			why = refused;
			if (err != NULL)
				id_err_clear(err);
			rc = 0;
			break;
		}
		json_t *list = list_resources(r.json);
		json_t *tr = json_object_get(r.json, "totalResults");
		size_t n = json_array_size(list);
		if (json_is_integer(tr)) {
			if (total >= 0 && json_integer_value(tr) != total) {
				why = "the Users changed during the listing";
				break;
			}
			total = json_integer_value(tr);
		}
		for (size_t i = 0; i < n; i++) {
			const json_t *u = json_array_get(list, i);
			const char *id = json_string_value(json_object_get(u, "id"));
			const char *ext =
			    json_string_value(json_object_get(u, "externalId"));
			if (id == NULL || json_object_get(seen, id) != NULL)
				continue;
			if (json_object_set_new(seen, id, json_true()) != 0) {
				rc = id_err_set(err, ID_ENOMEM,
				                "SCIM listing: out of memory");
				goto out;
			}
			nusers++;
			dir_name_add(d,
			             json_string_value(json_object_get(u, "userName")));
			if (ext == NULL || ext[0] == '\0')
				continue;
			/* Several Users with one externalId: unsure (the filter
			 * lookup reports the conflict). */
			json_t *v = json_object_get(ids, ext) != NULL ? json_null()
			                                              : json_string(id);
			if (json_object_set_new(ids, ext, v) != 0) {
				rc = id_err_set(err, ID_ENOMEM,
				                "SCIM listing: out of memory");
				goto out;
			}
		}
		start += (long)n;
		if (nusers > IDS_MAX) {
			why = "more Users than the directory keeps";
			break;
		}
		if (n == 0 || (total >= 0 && (json_int_t)(start - 1) >= total) ||
		    (total < 0 && n < (size_t)s->page_size))
			break;
	}
	if (why == NULL && total < 0)
		why = "the listing of the Users gives no totalResults";
	if (why == NULL && (json_int_t)nusers != total)
		why = "the Users changed during the listing";
	if (why != NULL) {
		dir_off(d, why);
		goto out;
	}
	/* Creates sent before the listing whose outcome is unknown stay so. */
	const char *k;
	json_t *v;
	json_object_foreach(d->ids, k, v)
	{
		if (json_is_null(v) && json_object_set_new(ids, k, json_null()) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "SCIM listing: out of memory");
			goto out;
		}
	}
	json_decref(d->ids);
	d->ids = ids;
	ids = NULL;
	d->state = DIR_LISTED;
	id_log_info(LOG_COMP, "%s: %zu Users listed (%zu with an externalId)", s->base,
	            nusers, json_object_size(d->ids));
out:
	resp_fini(&r);
	json_decref(ids);
	json_decref(seen);
	return rc;
}

/*
 * What the directory says of employee eid: PRESENT with a copy of the id
 * in *id (caller frees), ABSENT, or UNSURE.  Lists the Users first when
 * nobody has yet.  Returns 0 or the error of the listing.
 */
static int dir_get(sink_scim_t *s, const char *eid, dir_answer_t *ans, char **id,
                   id_err_t *err)
{
	scim_dir_t *d = s->dir;
	int rc = 0;
	*ans = DIR_UNSURE;
	*id = NULL;
	pthread_mutex_lock(&d->mu);
	if (d->state == DIR_UNLISTED && (rc = dir_list(s, d, err)) != 0)
		goto out;
	if (d->state != DIR_LISTED)
		goto out;
	json_t *v = json_object_get(d->ids, eid);
	if (v == NULL) {
		*ans = DIR_ABSENT;
	} else if (json_is_string(v)) {
		if ((*id = strdup(json_string_value(v))) == NULL)
			rc = id_err_set(err, ID_ENOMEM, "SCIM directory: out of memory");
		else
			*ans = DIR_PRESENT;
	}
out:
	pthread_mutex_unlock(&d->mu);
	return rc;
}

/* Whether userName v was seen (a hint: see struct scim_dir). */
static bool dir_name_seen(sink_scim_t *s, const char *v)
{
	scim_dir_t *d = s->dir;
	char low[512];
	size_t n = v != NULL ? strlen(v) : 0;
	if (n == 0 || n >= sizeof(low))
		return true;
	for (size_t i = 0; i <= n; i++)
		low[i] = (char)((v[i] >= 'A' && v[i] <= 'Z') ? v[i] - 'A' + 'a' : v[i]);
	pthread_mutex_lock(&d->mu);
	bool seen = d->state != DIR_LISTED || json_object_get(d->names, low) != NULL;
	pthread_mutex_unlock(&d->mu);
	return seen;
}

/*
 * Records what is now known of eid: its User id (ans PRESENT; userName
 * v joins the names), that it has none (ABSENT), or nothing sure (UNSURE).
 * Out of memory turns the directory off: a wrong ABSENT must never stay.
 */
static void dir_set(sink_scim_t *s, const char *eid, dir_answer_t ans, const char *id,
                    const char *v)
{
	scim_dir_t *d = s->dir;
	if (eid == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	if (d->state == DIR_LISTED) {
		int bad = 0;
		if (ans == DIR_ABSENT)
			bad = json_object_del(d->ids, eid) != 0 &&
			      json_object_get(d->ids, eid) != NULL;
		else if (json_object_size(d->ids) >= IDS_MAX &&
		         json_object_get(d->ids, eid) == NULL)
			bad = 1;
		else
			bad = json_object_set_new(d->ids, eid,
			                          ans == DIR_PRESENT && id != NULL
			                              ? json_string(id)
			                              : json_null()) != 0;
		if (ans == DIR_PRESENT)
			dir_name_add(d, v);
		if (bad)
			dir_off(d, "out of directory memory");
	}
	pthread_mutex_unlock(&d->mu);
}

void sink_scim_share(sink_scim_t *s, sink_scim_t *s0)
{
	if (s == NULL || s0 == NULL || s == s0 || s->dir == s0->dir)
		return;
	pthread_mutex_lock(&s0->dir->mu);
	s0->dir->refs++;
	pthread_mutex_unlock(&s0->dir->mu);
	dir_release(s->dir);
	s->dir = s0->dir;
}

/* ---- group cache ---- */

static scim_diff_group_t *gcache_find_id(sink_scim_t *s, const char *id)
{
	for (size_t i = 0; i < s->ngcache; i++)
		if (strcmp(s->gcache[i].id, id) == 0)
			return &s->gcache[i];
	return NULL;
}

static bool gcache_has_name(const sink_scim_t *s, const char *name)
{
	for (size_t i = 0; i < s->ngcache; i++)
		if (s->gcache[i].display_name != NULL &&
		    strcasecmp(s->gcache[i].display_name, name) == 0)
			return true;
	return false;
}

/* Adds or refreshes g (by id).  0 or ID_ENOMEM. */
static int gcache_put(sink_scim_t *s, const scim_diff_group_t *g)
{
	if (g->id == NULL || g->display_name == NULL)
		return 0;
	scim_diff_group_t *old = gcache_find_id(s, g->id);
	scim_diff_group_t copy = {0};
	if ((copy.id = strdup(g->id)) == NULL ||
	    (copy.display_name = strdup(g->display_name)) == NULL ||
	    (g->external_id != NULL &&
	     (copy.external_id = strdup(g->external_id)) == NULL)) {
		scim_diff_group_fini(&copy);
		return ID_ENOMEM;
	}
	if (old != NULL) {
		scim_diff_group_fini(old);
		*old = copy;
		return 0;
	}
	if (s->ngcache >= GROUP_CACHE_MAX)
		gcache_clear(s);
	scim_diff_group_t *n = realloc(s->gcache, (s->ngcache + 1) * sizeof(*n));
	if (n == NULL) {
		scim_diff_group_fini(&copy);
		return ID_ENOMEM;
	}
	s->gcache = n;
	s->gcache[s->ngcache++] = copy;
	return 0;
}

static void gcache_drop(sink_scim_t *s, const char *id)
{
	scim_diff_group_t *g = id != NULL ? gcache_find_id(s, id) : NULL;
	if (g == NULL)
		return;
	scim_diff_group_fini(g);
	*g = s->gcache[--s->ngcache];
}

/* ---- reads ---- */

/* Appends "<endpoint>/<id>" to out, the id percent-encoded (ids are the
 * server's and may hold any character). */
static int res_path(sink_scim_t *s, id_buf_t *out, const char *endpoint, const char *id)
{
	char *e = curl_easy_escape(s->curl, id, 0);
	int rc =
	    e == NULL || id_buf_printf(out, "%s/%s", endpoint, e) != 0 ? ID_ENOMEM : 0;
	curl_free(e);
	return rc;
}

typedef struct state {
	scim_diff_user_t user;
	bool found;
	char *manager_id; /* the manager's SCIM id */
	char *conflict;   /* message when the userName belongs to someone else */
} state_t;

static void state_fini(state_t *st)
{
	scim_diff_user_fini(&st->user);
	free(st->manager_id);
	free(st->conflict);
	memset(st, 0, sizeof(*st));
}

static const char *res_str(const json_t *r, const char *k)
{
	return json_string_value(json_object_get(r, k));
}

/*
 * GET <endpoint>?filter=<attr eq "value">[&attributes=...] into r.  Only
 * single `eq` comparisons are sent: they are what every service provider
 * implements (many refuse `or`), and scim2-server evaluates an `or` of two
 * terms slower than the two queries.
 */
static int query_eq(sink_scim_t *s, const char *endpoint, const char *attr,
                    const char *value, const char *attrs, http_resp_t *r, id_err_t *err)
{
	id_buf_t f = ID_BUF_INIT, q = ID_BUF_INIT;
	int rc = scim_diff_filter_eq(&f, attr, value);
	if (rc == 0 &&
	    (id_buf_append_u8(&f, 0) != 0 || id_buf_append_str(&q, endpoint) != 0 ||
	     query_append(s, &q, (const char *)f.data, attrs) != 0 ||
	     id_buf_append_u8(&q, 0) != 0))
		rc = ID_ENOMEM;
	if (rc != 0)
		rc = id_err_set(err, rc, "SCIM filter %s eq \"%s\": %s", attr, value,
		                rc == ID_EINVALID ? "value is not UTF-8"
		                                  : "out of memory");
	else
		rc = get_json(s, (const char *)q.data, r, err);
	id_buf_fini(&f);
	id_buf_fini(&q);
	return rc;
}

/* The Users of a list whose string attribute attr equals v (exactly, or
 * ignoring ASCII case); the one with the lowest id in *first. */
static size_t match_users(json_t *list, const char *attr, const char *v, bool nocase,
                          const json_t **first, id_buf_t *ids)
{
	size_t n = 0;
	*first = NULL;
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *u = json_array_get(list, i);
		const char *x = res_str(u, attr), *id = res_str(u, "id");
		if (id == NULL || x == NULL ||
		    (nocase ? strcasecmp(x, v) : strcmp(x, v)) != 0)
			continue;
		if (ids != NULL)
			(void)(id_buf_printf(ids, "%s%s", n > 0 ? ", " : "", id));
		if (*first == NULL || strcmp(id, res_str(*first, "id")) < 0)
			*first = u;
		n++;
	}
	return n;
}

/*
 * Finds the User, notes a userName held by someone else, and resolves the
 * manager.  The User: read by id when the directory knows it (and still
 * carries the employee id), none when the directory knows there is none,
 * else (or by_name_first: a create met a 409) looked up by externalId and,
 * when it has no externalId yet, by userName.  Several Users with the
 * employee's externalId is ID_ECONFLICT (final).
 *
 * When no User carries the externalId and one is about to be created, the
 * userName is not looked up: RFC 7643 §4.1.1 makes userName unique, so the
 * POST itself answers 409 when it is taken, and only then (by_name) does
 * the next round look it up, to adopt the account or report whose it is.
 * That saves a query on every create, the bulk of an initial load.
 */
static int read_users(sink_scim_t *s, const desired_identity_t *d, bool by_name_first,
                      state_t *st, id_err_t *err)
{
	const char *eid = d->employee_id;
	const char *uid = id_attrs_get(&d->attributes, "uid");
	const char *mid = s->dopts.enterprise ? d->manager_id : NULL;
	id_buf_t ids = ID_BUF_INIT, path = ID_BUF_INIT;
	http_resp_t r1 = {0}, r2 = {0}, r3 = {0};
	const json_t *self = NULL, *by_name = NULL, *mgr = NULL;
	dir_answer_t ans = DIR_UNSURE, mans = DIR_UNSURE;
	char *known = NULL;
	int rc;
	if (uid != NULL && uid[0] == '\0')
		uid = NULL;
	if (mid != NULL && mid[0] == '\0')
		mid = NULL;
	if ((rc = dir_get(s, eid, &ans, &known, err)) != 0)
		goto out;
	if (by_name_first)
		ans = DIR_UNSURE; /* the directory missed a User: ask the server */
	if (ans == DIR_PRESENT) {
		if (res_path(s, &path, s->users_ep, known) != 0)
			goto nomem;
		rc = get_json(s, (const char *)path.data, &r1, err);
		if (rc == ID_ENOTFOUND) {
			if (err != NULL)
				id_err_clear(err);
			rc = 0;
			ans = DIR_UNSURE; /* deleted behind the sink's back */
		} else if (rc != 0) {
			goto out;
		} else if (res_str(r1.json, "id") == NULL ||
		           res_str(r1.json, "externalId") == NULL ||
		           strcmp(res_str(r1.json, "externalId"), eid) != 0) {
			ans = DIR_UNSURE; /* changed behind the sink's back */
		} else {
			self = r1.json;
		}
	}
	if (ans == DIR_UNSURE) {
		if ((rc = query_eq(s, s->users_ep, "externalId", eid, NULL, &r1, err)) !=
		    0)
			goto out;
		if (match_users(list_resources(r1.json), "externalId", eid, false, &self,
		                &ids) > 1) {
			(void)id_buf_append_u8(&ids, 0);
			rc = id_err_set(err, ID_ECONFLICT,
			                "several SCIM Users carry externalId %s: %s", eid,
			                ids.data ? (const char *)ids.data : "?");
			goto out;
		}
	}
	/* userName is caseExact=false (RFC 7643 §4.1.1).  A disabled employee
	 * without a User adopts an account of its userName rather than make a
	 * disabled one next to it. */
	const char *own = self != NULL ? res_str(self, "userName") : NULL;
	bool look = self != NULL
	                ? own == NULL || strcasecmp(own, uid ? uid : "") != 0
	                : by_name_first || (d->state == LC_DISABLED &&
	                                    (ans != DIR_ABSENT || dir_name_seen(s, uid)));
	if (uid != NULL && look) {
		if ((rc = query_eq(s, s->users_ep, "userName", uid, NULL, &r2, err)) != 0)
			goto out;
		match_users(list_resources(r2.json), "userName", uid, true, &by_name,
		            NULL);
	}
	const char *holder = by_name ? res_str(by_name, "externalId") : NULL;
	if (self == NULL && by_name != NULL && (holder == NULL || holder[0] == '\0') &&
	    d->state != LC_DELETED) {
		self = by_name; /* made before the sink knew it: adopt it */
	} else if (by_name != NULL) {
		char msg[512];
		if (holder != NULL && holder[0] != '\0')
			snprintf(msg, sizeof(msg),
			         "userName %s already used by employee %s", uid, holder);
		else
			snprintf(
			    msg, sizeof(msg),
			    "userName %s already used by SCIM User %s (no externalId)",
			    uid, res_str(by_name, "id"));
		if ((st->conflict = strdup(msg)) == NULL)
			goto nomem;
	}
	if (self != NULL) {
		if ((rc = scim_diff_user_from_json(self, &st->user, err)) != 0)
			goto out;
		st->found = true;
	}
	/* Only the User that carries the externalId is this employee's; one
	 * adopted now carries it once this apply is through (unsure till
	 * then). */
	const char *sx = self != NULL ? res_str(self, "externalId") : NULL;
	if (self != NULL && sx != NULL && strcmp(sx, eid) == 0)
		dir_set(s, eid, DIR_PRESENT, res_str(self, "id"), own);
	else if (self != NULL)
		dir_set(s, eid, DIR_UNSURE, NULL, NULL);
	else if (ans == DIR_UNSURE)
		dir_set(s, eid, DIR_ABSENT, NULL, NULL);
	if (mid != NULL && strcmp(mid, eid) == 0) {
		mgr = self;
	} else if (mid != NULL) {
		char *mk = NULL;
		if ((rc = dir_get(s, mid, &mans, &mk, err)) != 0)
			goto out;
		if (mans == DIR_PRESENT) {
			st->manager_id = mk; /* ids never change: not read again */
		} else if (mans == DIR_UNSURE) {
			if ((rc = query_eq(s, s->users_ep, "externalId", mid,
			                   "externalId", &r3, err)) != 0)
				goto out;
			size_t nm = match_users(list_resources(r3.json), "externalId",
			                        mid, false, &mgr, NULL);
			if (nm == 1)
				dir_set(s, mid, DIR_PRESENT, res_str(mgr, "id"), NULL);
			else if (nm == 0)
				dir_set(s, mid, DIR_ABSENT, NULL, NULL);
		}
		/* DIR_ABSENT: no User yet; set once the sink creates it. */
	}
	if (mgr != NULL && (st->manager_id = strdup(res_str(mgr, "id"))) == NULL)
		goto nomem;
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "SCIM read of employee %s: out of memory", eid);
out:
	free(known);
	resp_fini(&r1);
	resp_fini(&r2);
	resp_fini(&r3);
	id_buf_fini(&ids);
	id_buf_fini(&path);
	return rc;
}

/* GET Groups?filter=<attr eq "value">&attributes=displayName,externalId →
 * each Group to the cache and, when u is set, to u's memberships. */
static int read_groups(sink_scim_t *s, const char *attr, const char *value,
                       scim_diff_user_t *u, id_err_t *err)
{
	http_resp_t r = {0};
	scim_diff_group_t g = {0};
	int rc =
	    query_eq(s, s->groups_ep, attr, value, "displayName,externalId", &r, err);
	json_t *list = rc == 0 ? list_resources(r.json) : NULL;
	for (size_t i = 0; i < json_array_size(list); i++) {
		if (scim_diff_group_from_json(json_array_get(list, i), &g, NULL) != 0)
			continue;
		if ((u != NULL && scim_diff_user_add_group(u, &g) != 0) ||
		    gcache_put(s, &g) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "SCIM group read: out of memory");
			break;
		}
	}
	scim_diff_group_fini(&g);
	resp_fini(&r);
	return rc;
}

static int read_state(sink_scim_t *s, const desired_identity_t *d, bool by_name_first,
                      state_t *st, id_err_t *err)
{
	int rc;
	if ((rc = read_users(s, d, by_name_first, st, err)) != 0)
		return rc;
	if (st->found &&
	    (rc = read_groups(s, "members.value", st->user.id, &st->user, err)) != 0)
		return rc;
	if (d->state == LC_DELETED)
		return 0;
	/* Desired groups neither joined nor cached are looked up by name. */
	for (size_t i = 0; i < d->ngroups; i++) {
		const char *g = d->groups[i];
		bool member = false;
		for (size_t k = 0; k < st->user.ngroups; k++)
			if (st->user.groups[k].display_name != NULL &&
			    strcasecmp(st->user.groups[k].display_name, g) == 0)
				member = true;
		if (!member && !gcache_has_name(s, g) &&
		    (rc = read_groups(s, "displayName", g, NULL, err)) != 0)
			return rc;
	}
	return 0;
}

/* The cached groups named in d (shallow copies: valid until the cache changes). */
static scim_diff_group_t *known_groups(sink_scim_t *s, const desired_identity_t *d,
                                       size_t *n)
{
	*n = 0;
	scim_diff_group_t *k = calloc(s->ngcache + 1, sizeof(*k));
	if (k == NULL)
		return NULL;
	for (size_t i = 0; i < s->ngcache; i++)
		for (size_t j = 0; j < d->ngroups; j++)
			if (s->gcache[i].display_name != NULL &&
			    strcasecmp(s->gcache[i].display_name, d->groups[j]) == 0) {
				k[(*n)++] = s->gcache[i];
				break;
			}
	return k;
}

/* ---- apply ---- */

typedef struct apply_ctx {
	sink_scim_t *s;
	const desired_identity_t *d;
	sink_result_t *r;
	size_t changes;
	state_t st;
	char *user_id; /* the User's id once known (created or read) */
	char *version; /* its current ETag */
	bool again;    /* redo read–diff–apply (412, stale cache, 409 on create) */
	bool by_name;  /* a create hit 409: look the userName up first */
} apply_ctx_t;

static int record(apply_ctx_t *c, const char *op, const char *attr, const char *old_value,
                  const char *new_value, id_err_t *err)
{
	if (sink_result_add_op(c->r, op, attr, old_value, new_value) != 0)
		return id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
	if (strcmp(op, "manager_pending") != 0)
		c->changes++;
	return 0;
}

static bool is_user_change(scim_diff_op_kind_t k)
{
	return k == SCIM_DIFF_OP_UPDATE || k == SCIM_DIFF_OP_DISABLE ||
	       k == SCIM_DIFF_OP_ENABLE;
}

/* One request of a plan: ops[first .. first+n). */
typedef struct unit {
	size_t first;
	size_t n;
} unit_t;

static size_t plan_units(const scim_diff_plan_t *p, unit_t *u)
{
	size_t k = 0;
	for (size_t i = 0; i < p->nops;) {
		size_t j = i + 1;
		if (is_user_change(p->ops[i].kind))
			while (j < p->nops && is_user_change(p->ops[j].kind))
				j++;
		u[k].first = i;
		u[k].n = j - i;
		k++;
		i = j;
	}
	return k;
}

static int set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = v != NULL ? strdup(v) : NULL;
	return v != NULL && *dst == NULL ? ID_ENOMEM : 0;
}

/* The last path segment of a Location URL (the new resource's id). */
static char *id_from_location(const char *loc)
{
	if (loc == NULL)
		return NULL;
	size_t n = strlen(loc);
	while (n > 0 && loc[n - 1] == '/')
		n--;
	size_t a = n;
	while (a > 0 && loc[a - 1] != '/')
		a--;
	return a < n ? strndup(loc + a, n - a) : NULL;
}

/* Records the ops of a unit that the server carried out. */
static int unit_done(apply_ctx_t *c, const scim_diff_plan_t *p, const unit_t *u,
                     const char *new_id, const char *new_version, id_err_t *err)
{
	sink_scim_t *s = c->s;
	const scim_diff_op_t *op = &p->ops[u->first];
	int rc = 0;
	switch (op->kind) {
	case SCIM_DIFF_OP_CREATE:
		if (set_str(&c->user_id, new_id) != 0 ||
		    set_str(&c->version, new_version) != 0)
			return id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
		if (new_id != NULL)
			dir_set(s, c->d->employee_id, DIR_PRESENT, new_id,
			        p->want[SCIM_F_USER_NAME]);
		rc = record(c, "create", "id", NULL, new_id, err);
		for (int f = 0; rc == 0 && f < SCIM_F_COUNT; f++)
			if (p->want[f] != NULL &&
			    !(scim_diff_field_is_enterprise(f) && !s->dopts.enterprise))
				rc = record(c, "create", scim_diff_field_path(f), NULL,
				            p->want[f], err);
		if (rc == 0 && s->password_file != NULL)
			rc = record(c, "create", "password", NULL,
			            "(initial password delivered)", err);
		return rc;
	case SCIM_DIFF_OP_UPDATE:
	case SCIM_DIFF_OP_DISABLE:
	case SCIM_DIFF_OP_ENABLE:
		if (new_version != NULL && set_str(&c->version, new_version) != 0)
			return id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
		for (size_t i = 0; rc == 0 && i < u->n; i++) {
			const scim_diff_op_t *o = &p->ops[u->first + i];
			const char *name = o->kind == SCIM_DIFF_OP_UPDATE
			                       ? (s->feat.patch ? "patch" : "put")
			                       : scim_diff_op_kind_name(o->kind);
			rc = record(c, name, scim_diff_field_path(o->field), o->old_value,
			            o->new_value, err);
		}
		return rc;
	case SCIM_DIFF_OP_CREATE_GROUP: {
		scim_diff_group_t g = {(char *)new_id, op->group, NULL};
		char mark[1024];
		snprintf(mark, sizeof(mark), "%s%s", SCIM_DIFF_GROUP_MARK, op->group);
		g.external_id = mark;
		if (new_id != NULL && gcache_put(s, &g) != 0)
			return id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
		if ((rc = record(c, "create_group", op->group, NULL, new_id, err)) == 0)
			rc = record(c, "group_add", op->group, NULL, new_id, err);
		return rc;
	}
	case SCIM_DIFF_OP_GROUP_ADD:
		if ((rc = record(c, "group_add", op->group, NULL, op->group_id, err)) !=
		        0 ||
		    !op->claim)
			return rc;
		{
			char mark[1024];
			snprintf(mark, sizeof(mark), "%s%s", SCIM_DIFF_GROUP_MARK,
			         op->group);
			scim_diff_group_t g = {op->group_id, op->group, mark};
			if (gcache_put(s, &g) != 0)
				return id_err_set(err, ID_ENOMEM,
				                  "SCIM sink: out of memory");
			return record(c, "claim_group", op->group, NULL, mark, err);
		}
	case SCIM_DIFF_OP_GROUP_REMOVE:
		return record(c, "group_remove", op->group, op->group_id, NULL, err);
	case SCIM_DIFF_OP_DELETE:
		dir_set(s, c->d->employee_id, DIR_ABSENT, NULL, NULL);
		return record(c, "delete", "id", op->old_value, NULL, err);
	default:
		return id_err_set(err, ID_EINVALID, "SCIM sink: unknown plan op %d",
		                  (int)op->kind);
	}
}

/* A request to send: method, path (relative to base), If-Match, body. */
typedef struct req {
	const char *method;
	id_buf_t path;
	const char *if_match;
	json_t *body;
} req_t;

static void req_fini(req_t *q)
{
	id_buf_fini(&q->path);
	json_decref(q->body);
	memset(q, 0, sizeof(*q));
}

/*
 * Gives a new User its initial password: generated, delivered to the file
 * (on disk before the POST is sent), then set as "password" in body.
 */
static int user_password(apply_ctx_t *c, const scim_diff_plan_t *p, json_t *body,
                         id_err_t *err)
{
	sink_scim_t *s = c->s;
	char pw[SINK_PASSWORD_MAX_LEN + 1] = {0};
	const char *login = p->want[SCIM_F_USER_NAME];
	int rc;
	if ((rc = sink_password_generate(&s->policy, login, p->want[SCIM_F_DISPLAY_NAME],
	                                 pw, err)) == 0 &&
	    (rc = sink_password_deliver(s->password_file, c->d->employee_id,
	                                login ? login : "", pw, err)) == 0 &&
	    json_object_set_new(body, "password", json_string(pw)) != 0)
		rc = id_err_set(err, ID_ENOMEM, "SCIM create: out of memory");
	explicit_bzero(pw, sizeof(pw));
	return rc;
}

/*
 * Builds the request of a unit (PATCH mode).  member is the User's id, or
 * "bulkId:user" inside a /Bulk request that creates it.
 */
static int unit_request(apply_ctx_t *c, const scim_diff_plan_t *p, const unit_t *u,
                        const char *member, req_t *q, id_err_t *err)
{
	sink_scim_t *s = c->s;
	const scim_diff_op_t *op = &p->ops[u->first];
	const char *etag = s->feat.etag ? c->version : NULL;
	int rc = 0;
	memset(q, 0, sizeof(*q));
	switch (op->kind) {
	case SCIM_DIFF_OP_CREATE:
		/* Unsure until the answer comes: a lost one may hide a User. */
		dir_set(s, c->d->employee_id, DIR_UNSURE, NULL, NULL);
		q->method = "POST";
		rc = id_buf_printf(&q->path, "%s", s->users_ep);
		q->body = scim_diff_user_body((const char *const *)p->want,
		                              s->dopts.enterprise);
		if (rc == 0 && q->body != NULL && s->password_file != NULL &&
		    (rc = user_password(c, p, q->body, err)) != 0) {
			req_fini(q);
			return rc;
		}
		break;
	case SCIM_DIFF_OP_UPDATE:
	case SCIM_DIFF_OP_DISABLE:
	case SCIM_DIFF_OP_ENABLE:
		q->method = s->feat.patch ? "PATCH" : "PUT";
		q->if_match = etag;
		rc = res_path(s, &q->path, s->users_ep, c->user_id);
		q->body = s->feat.patch ? scim_diff_patch_body(&c->st.user, op, u->n)
		                        : scim_diff_put_body(&c->st.user, op, u->n);
		break;
	case SCIM_DIFF_OP_CREATE_GROUP:
		q->method = "POST";
		rc = id_buf_printf(&q->path, "%s", s->groups_ep);
		q->body = scim_diff_group_body(op->group, member);
		break;
	case SCIM_DIFF_OP_GROUP_ADD:
		q->method = "PATCH";
		rc = res_path(s, &q->path, s->groups_ep, op->group_id);
		q->body = scim_diff_member_add_body(op->group, member, op->claim);
		break;
	case SCIM_DIFF_OP_GROUP_REMOVE:
		q->method = "PATCH";
		rc = res_path(s, &q->path, s->groups_ep, op->group_id);
		q->body = scim_diff_member_remove_body(member);
		break;
	case SCIM_DIFF_OP_DELETE:
		q->method = "DELETE";
		q->if_match = etag;
		rc = res_path(s, &q->path, s->users_ep, c->user_id);
		break;
	default:
		return id_err_set(err, ID_EINVALID, "SCIM sink: unknown plan op %d",
		                  (int)op->kind);
	}
	if (rc != 0 || (q->body == NULL && op->kind != SCIM_DIFF_OP_DELETE)) {
		req_fini(q);
		return id_err_set(err, ID_ENOMEM,
		                  "SCIM %s: cannot build the request body",
		                  scim_diff_op_kind_name(op->kind));
	}
	return 0;
}

/*
 * What a failed write means for the apply: a 412 or a 404 on the User or a
 * Group we planned from means the read is stale (again); a 409 on the
 * create means the userName is taken (again, looking it up); a 404 on a
 * removal means it is already done.  Returns 0 when the failure is harmless.
 */
static int write_failed(apply_ctx_t *c, const scim_diff_op_t *op, long status, int rc)
{
	if (status == 409 && op->kind == SCIM_DIFF_OP_CREATE && !c->by_name) {
		c->by_name = true; /* the userName is taken: whose is it? */
		c->again = true;
		return rc;
	}
	if (status == 404 &&
	    (op->kind == SCIM_DIFF_OP_GROUP_REMOVE || op->kind == SCIM_DIFF_OP_DELETE))
		return 0;
	if (status == 412 || status == 404) {
		if (op->group_id != NULL)
			gcache_drop(c->s, op->group_id);
		c->again = true;
	}
	return rc;
}

/* PUT mode: read the Group, change its members, write it back. */
static int group_put(apply_ctx_t *c, const scim_diff_op_t *op, id_err_t *err)
{
	sink_scim_t *s = c->s;
	id_buf_t path = ID_BUF_INIT, url = ID_BUF_INIT;
	http_resp_t r = {0};
	json_t *g = NULL;
	int rc;
	if (res_path(s, &path, s->groups_ep, op->group_id) != 0 ||
	    id_buf_printf(&url, "%s%s", s->base, (const char *)path.data) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM group update: out of memory");
		goto out;
	}
	if ((rc = get_json(s, (const char *)path.data, &r, err)) != 0) {
		rc = write_failed(c, op, r.status, rc);
		goto out;
	}
	if ((g = json_deep_copy(r.json)) == NULL || !json_is_object(g)) {
		rc = id_err_set(err, ID_EPARSE, "SCIM GET %s: not a Group resource",
		                (const char *)url.data);
		goto out;
	}
	const char *version = res_str(json_object_get(g, "meta"), "version");
	char *etag = s->feat.etag && version ? strdup(version) : NULL;
	json_object_del(g, "meta");
	json_t *members = json_object_get(g, "members");
	if (!json_is_array(members)) {
		members = json_array();
		json_object_set_new(g, "members", members);
	}
	bool present = false;
	for (size_t i = 0; i < json_array_size(members);) {
		const char *v = res_str(json_array_get(members, i), "value");
		if (v != NULL && strcmp(v, c->user_id) == 0) {
			present = true;
			if (op->kind == SCIM_DIFF_OP_GROUP_REMOVE) {
				json_array_remove(members, i);
				continue;
			}
		}
		i++;
	}
	if (op->kind == SCIM_DIFF_OP_GROUP_ADD && !present)
		json_array_append_new(members, json_pack("{s:s}", "value", c->user_id));
	if (op->kind == SCIM_DIFF_OP_GROUP_ADD && op->claim) {
		char mark[1024];
		snprintf(mark, sizeof(mark), "%s%s", SCIM_DIFF_GROUP_MARK, op->group);
		json_object_set_new(g, "externalId", json_string(mark));
	}
	if ((op->kind == SCIM_DIFF_OP_GROUP_ADD) == present && !op->claim) {
		free(etag);
		goto out; /* already as wanted */
	}
	s->writes++;
	rc = http_do(s, "PUT", (const char *)url.data, etag, g, &r, err);
	free(etag);
	if (rc == 0)
		rc = status_check(s, r.status, r.json, r.retry_after_s, err, "PUT %s",
		                  (const char *)url.data);
	if (rc != 0)
		rc = write_failed(c, op, r.status, rc);
out:
	json_decref(g);
	resp_fini(&r);
	id_buf_fini(&path);
	id_buf_fini(&url);
	return rc;
}

static const char *resp_version(const http_resp_t *r)
{
	const char *v = res_str(json_object_get(r->json, "meta"), "version");
	return v != NULL ? v : r->etag;
}

static int exec_sequential(apply_ctx_t *c, const scim_diff_plan_t *p, const unit_t *units,
                           size_t nunits, id_err_t *err)
{
	sink_scim_t *s = c->s;
	http_resp_t r = {0};
	id_buf_t url = ID_BUF_INIT;
	req_t q = {0};
	int rc = 0;
	for (size_t k = 0; rc == 0 && k < nunits; k++) {
		const unit_t *u = &units[k];
		const scim_diff_op_t *op = &p->ops[u->first];
		bool group_op = op->kind == SCIM_DIFF_OP_GROUP_ADD ||
		                op->kind == SCIM_DIFF_OP_GROUP_REMOVE;
		if (group_op && !s->feat.patch) {
			size_t before = s->writes;
			if ((rc = group_put(c, op, err)) == 0 && s->writes > before)
				rc = unit_done(c, p, u, NULL, NULL, err);
			continue;
		}
		if ((rc = unit_request(c, p, u, c->user_id, &q, err)) != 0)
			break;
		id_buf_reset(&url);
		if (id_buf_printf(&url, "%s%s", s->base, (const char *)q.path.data) !=
		    0) {
			rc = id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
			break;
		}
		s->writes++;
		rc = http_do(s, q.method, (const char *)url.data, q.if_match, q.body, &r,
		             err);
		if (op->kind == SCIM_DIFF_OP_CREATE)
			body_wipe_password(q.body);
		if (rc == 0)
			rc = status_check(s, r.status, r.json, r.retry_after_s, err,
			                  "%s %s", q.method, (const char *)url.data);
		if (rc != 0) {
			if (r.status != 0)
				rc = write_failed(c, op, r.status, rc);
			req_fini(&q);
			continue;
		}
		char *new_id = NULL;
		if (op->kind == SCIM_DIFF_OP_CREATE ||
		    op->kind == SCIM_DIFF_OP_CREATE_GROUP) {
			const char *id = res_str(r.json, "id");
			if ((new_id = id ? strdup(id) : NULL) == NULL) {
				rc = id_err_set(
				    err, ID_EPARSE,
				    "SCIM POST %s: HTTP %ld without the new id",
				    (const char *)url.data, r.status);
				req_fini(&q);
				break;
			}
		}
		rc = unit_done(c, p, u, new_id, resp_version(&r), err);
		free(new_id);
		req_fini(&q);
	}
	req_fini(&q);
	resp_fini(&r);
	id_buf_fini(&url);
	return rc;
}

/* A bulk operation's status, given as a string (RFC 7644 §3.7.3) or a number. */
static long bulk_status(const json_t *o)
{
	const json_t *st = json_object_get(o, "status");
	if (json_is_integer(st))
		return (long)json_integer_value(st);
	const char *v = json_string_value(st);
	return v != NULL ? strtol(v, NULL, 10) : 0;
}

/*
 * Sends the whole plan as one /Bulk request (failOnErrors 1: the first
 * failure stops it).  *fallback is set when the server refused the request
 * as a whole for its size, so the caller sends the plan one by one.
 */
static int exec_bulk(apply_ctx_t *c, const scim_diff_plan_t *p, const unit_t *units,
                     size_t nunits, bool *fallback, id_err_t *err)
{
	sink_scim_t *s = c->s;
	json_t *ops = json_array(), *body = NULL;
	http_resp_t r = {0};
	id_buf_t url = ID_BUF_INIT;
	char *payload = NULL, *gid = NULL;
	int rc = 0;
	*fallback = false;
	const char *member = c->user_id != NULL ? c->user_id : "bulkId:user";
	const char **methods = calloc(nunits, sizeof(*methods));
	if (methods == NULL) {
		json_decref(ops);
		ops = NULL; /* reported as ENOMEM below */
	}
	for (size_t k = 0; ops != NULL && k < nunits; k++) {
		req_t q;
		if ((rc = unit_request(c, p, &units[k], member, &q, err)) != 0)
			goto out;
		methods[k] = q.method; /* static strings */
		json_t *o = json_pack("{s:s,s:s}", "method", q.method, "path",
		                      (const char *)q.path.data);
		char bid[32];
		snprintf(bid, sizeof(bid), "g%zu", k);
		bool ok = o != NULL;
		if (ok && strcmp(q.method, "POST") == 0)
			ok =
			    json_object_set_new(o, "bulkId",
			                        json_string(p->ops[units[k].first].kind ==
			                                            SCIM_DIFF_OP_CREATE
			                                        ? "user"
			                                        : bid)) == 0;
		if (ok && q.if_match != NULL)
			ok = json_object_set_new(o, "version", json_string(q.if_match)) ==
			     0;
		if (ok && q.body != NULL) {
			ok = json_object_set(o, "data", q.body) == 0;
		}
		req_fini(&q);
		if (!ok || json_array_append_new(ops, o) != 0) {
			if (!ok)
				json_decref(o);
			rc = id_err_set(err, ID_ENOMEM, "SCIM bulk: out of memory");
			goto out;
		}
	}
	body = ops ? json_pack("{s:[s],s:i,s:O}", "schemas", SCIM_MSG_BULK_REQUEST,
	                       "failOnErrors", 1, "Operations", ops)
	           : NULL;
	if (body == NULL || (payload = json_dumps(body, JSON_COMPACT)) == NULL ||
	    id_buf_printf(&url, "%s/Bulk", s->base) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM bulk: out of memory");
		goto out;
	}
	if (s->feat.bulk_max_bytes > 0 &&
	    (long)strlen(payload) > s->feat.bulk_max_bytes) {
		*fallback = true;
		goto out;
	}
	s->writes += nunits;
	if ((rc = http_do(s, "POST", (const char *)url.data, NULL, body, &r, err)) != 0)
		goto out;
	if (r.status == 413) {
		s->writes -= nunits; /* nothing was carried out */
		*fallback = true;
		goto out;
	}
	if ((rc = status_check(s, r.status, r.json, r.retry_after_s, err, "POST %s",
	                       (const char *)url.data)) != 0)
		goto out;
	json_t *res = json_object_get(r.json, "Operations");
	for (size_t k = 0; rc == 0 && k < nunits; k++) {
		const scim_diff_op_t *op = &p->ops[units[k].first];
		json_t *o = json_array_get(res, k);
		if (o == NULL) {
			/* Not carried out (an earlier one failed): the next round does
			 * it. */
			c->again = true;
			break;
		}
		long st = bulk_status(o);
		const char *loc = res_str(o, "location");
		const char *m = res_str(o, "method");
		if (m == NULL || strcasecmp(m, methods[k]) != 0) {
			/* Answers are matched to operations by position (RFC 7644
			 * §3.7.3 lists them in order); a server that reorders them
			 * gets a re-read instead of misattributed ops. */
			c->again = true;
			break;
		}
		if (st < 200 || st >= 300) {
			rc = status_check(
			    s, st, json_object_get(o, "response"), 0, err, "bulk %s %s",
			    res_str(o, "method") ? res_str(o, "method") : "?",
			    loc ? loc : "");
			rc = write_failed(c, op, st, rc);
			if (rc == 0 && k + 1 < nunits)
				c->again = true; /* the rest did not run */
			break;
		}
		free(gid);
		gid = NULL;
		if ((op->kind == SCIM_DIFF_OP_CREATE ||
		     op->kind == SCIM_DIFF_OP_CREATE_GROUP) &&
		    (gid = id_from_location(loc)) == NULL) {
			rc = id_err_set(
			    err, ID_EPARSE,
			    "SCIM bulk: the %s operation succeeded without a location",
			    scim_diff_op_kind_name(op->kind));
			break;
		}
		rc = unit_done(c, p, &units[k], gid, res_str(o, "version"), err);
	}
out:
	for (size_t k = 0; ops != NULL && k < json_array_size(ops); k++)
		body_wipe_password(json_object_get(json_array_get(ops, k), "data"));
	free(methods);
	free(gid);
	payload_free(payload);
	json_decref(body);
	json_decref(ops);
	resp_fini(&r);
	id_buf_fini(&url);
	return rc;
}

/* Reads and diffs; fills plan and *manager_pending. */
static int plan_once(apply_ctx_t *c, scim_diff_plan_t *plan, bool *manager_pending,
                     id_err_t *err)
{
	sink_scim_t *s = c->s;
	const desired_identity_t *d = c->d;
	scim_diff_group_t *known = NULL;
	size_t nknown = 0;
	int rc;
	state_fini(&c->st);
	if ((rc = read_state(s, d, c->by_name, &c->st, err)) != 0)
		goto out;
	*manager_pending = s->dopts.enterprise && d->manager_id != NULL &&
	                   d->manager_id[0] != '\0' && c->st.manager_id == NULL &&
	                   d->state != LC_DELETED;
	if ((known = known_groups(s, d, &nknown)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
		goto out;
	}
	if ((rc = scim_diff_compute(&s->dopts, d, c->st.found ? &c->st.user : NULL,
	                            c->st.manager_id, known, nknown, plan, err)) != 0)
		goto out;
	/* The userName belongs to someone else: refuse before any write. */
	if (c->st.conflict != NULL) {
		bool names = false;
		for (size_t i = 0; i < plan->nops; i++)
			if (plan->ops[i].kind == SCIM_DIFF_OP_CREATE ||
			    (plan->ops[i].kind == SCIM_DIFF_OP_UPDATE &&
			     plan->ops[i].field == SCIM_F_USER_NAME))
				names = true;
		if (names)
			rc = id_err_set(err, ID_ECONFLICT, "%s", c->st.conflict);
	}
out:
	free(known);
	return rc;
}

static int apply_once(apply_ctx_t *c, bool *manager_pending, id_err_t *err)
{
	sink_scim_t *s = c->s;
	scim_diff_plan_t plan;
	unit_t *units = NULL;
	int rc;
	scim_diff_plan_init(&plan);
	c->again = false;
	if ((rc = plan_once(c, &plan, manager_pending, err)) != 0)
		goto out;
	if (plan.nops == 0)
		goto out;
	if ((units = calloc(plan.nops, sizeof(*units))) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
		goto out;
	}
	size_t nunits = plan_units(&plan, units);
	if (set_str(&c->user_id, c->st.found ? c->st.user.id : NULL) != 0 ||
	    set_str(&c->version, c->st.found ? c->st.user.version : NULL) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM sink: out of memory");
		goto out;
	}
	bool fallback = true;
	if (s->feat.bulk && nunits > 1 && nunits <= (size_t)s->feat.bulk_max_ops)
		rc = exec_bulk(c, &plan, units, nunits, &fallback, err);
	if (rc == 0 && fallback)
		rc = exec_sequential(c, &plan, units, nunits, err);
out:
	free(units);
	scim_diff_plan_fini(&plan);
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ctx_fini(apply_ctx_t *c)
{
	state_fini(&c->st);
	free(c->user_id);
	free(c->version);
}

int sink_scim_plan(sink_scim_t *s, const desired_identity_t *d, scim_diff_plan_t *plan,
                   bool *manager_pending, id_err_t *err)
{
	if (s == NULL || d == NULL || plan == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_scim_plan: NULL argument");
	/* A dry run looks the userName up at once: it cannot learn it from a 409. */
	apply_ctx_t c = {.s = s, .d = d, .by_name = true};
	bool pending = false;
	int rc = plan_once(&c, plan, &pending, err);
	if (manager_pending != NULL)
		*manager_pending = pending;
	ctx_fini(&c);
	return rc;
}

/* Failures where the desired is fine but the server is not (retry later). */
static bool not_final(int rc)
{
	return rc == ID_EIO || rc == ID_ETIMEOUT || rc == ID_ECONFIG;
}

int sink_scim_apply(sink_scim_t *s, const desired_identity_t *d, sink_result_t *result,
                    id_err_t *err)
{
	if (s == NULL || d == NULL || result == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_scim_apply: NULL argument");
	id_err_t local;
	id_err_t *e = err != NULL ? err : &local;
	id_err_clear(e);
	sink_result_fini(result);
	result->desired_version = d->version;
	if ((result->target = strdup("scim")) == NULL ||
	    (result->employee_id = strdup(d->employee_id)) == NULL)
		return id_err_set(err, ID_ENOMEM, "sink_scim_apply: out of memory");

	apply_ctx_t c = {.s = s, .d = d, .r = result};
	bool manager_pending = false;
	int rc = 0;
	s->retry_after_ms = 0;
	for (int attempt = 0; attempt < APPLY_TRIES; attempt++) {
		id_err_clear(e);
		rc = apply_once(&c, &manager_pending, e);
		if (!c.again || not_final(rc) || rc == ID_ENOMEM)
			break;
		if (attempt + 1 == APPLY_TRIES) {
			/* Another writer keeps changing it: final, the retry command
			 * re-drives it later. */
			char last[ID_ERR_MSG_MAX];
			snprintf(last, sizeof(last), "%s",
			         e->msg[0] ? e->msg : "partial bulk");
			rc = id_err_set(
			    e, ID_ECONFLICT,
			    "SCIM resources of employee %s kept changing during the "
			    "apply (%d rounds); last: %s",
			    d->employee_id, APPLY_TRIES, last);
		} else if (rc != 0) {
			id_log_info(LOG_COMP, "employee %s: %s; reading again",
			            d->employee_id, e->msg);
		}
	}
	if (manager_pending && rc == 0 &&
	    sink_result_add_op(result, "manager_pending", "manager", NULL,
	                       d->manager_id) != 0)
		rc = id_err_set(e, ID_ENOMEM, "sink_scim_apply: out of memory");
	ctx_fini(&c);
	result->at = now_ms();
	if (rc == 0) {
		result->outcome = c.changes > 0 ? SINK_APPLIED : SINK_NOOP;
		return 0;
	}
	result->outcome = SINK_FAILED;
	if ((result->error = strdup(e->msg[0] ? e->msg : id_err_str(rc))) == NULL)
		return id_err_set(err, ID_ENOMEM, "sink_scim_apply: out of memory");
	/* Unreachable, overloaded or refusing our token: retry this desired later. */
	if (not_final(rc))
		return rc;
	return rc == ID_ENOMEM ? rc : 0;
}

/* ---- the Users of the service provider (reconcile) ---- */

int sink_scim_accounts(sink_scim_t *s, sink_account_list_t *out, id_err_t *err)
{
	if (s == NULL || out == NULL)
		return id_err_set(err, ID_EINVALID, "sink_scim_accounts: NULL argument");
	int rc = 0;
	/* RFC 7644 §3.4.2.4 pagination: 1-based startIndex, count per page. */
	for (long start = 1;;) {
		char q[256];
		http_resp_t r = {0};
		snprintf(q, sizeof(q),
		         "%s?startIndex=%ld&count=200&attributes=userName,externalId",
		         s->users_ep, start);
		if ((rc = get_json(s, q, &r, err)) != 0) {
			resp_fini(&r);
			break;
		}
		json_t *list = list_resources(r.json);
		size_t n = json_array_size(list);
		for (size_t i = 0; rc == 0 && i < n; i++) {
			const json_t *u = json_array_get(list, i);
			const char *id = res_str(u, "id");
			if (id != NULL &&
			    sink_account_list_add(out, id, res_str(u, "userName"),
			                          res_str(u, "externalId")) != 0)
				rc = id_err_set(err, ID_ENOMEM,
				                "SCIM Users: out of memory");
		}
		json_int_t total =
		    json_integer_value(json_object_get(r.json, "totalResults"));
		resp_fini(&r);
		start += (long)n;
		if (rc != 0 || n == 0 || (json_int_t)(start - 1) >= total)
			break;
	}
	return rc;
}

int sink_scim_remove(sink_scim_t *s, const char *id, id_err_t *err)
{
	if (s == NULL || id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_scim_remove: NULL argument");
	id_buf_t path = ID_BUF_INIT, url = ID_BUF_INIT;
	http_resp_t r = {0}, g = {0};
	json_t *body = NULL;
	int rc = 0;
	/* Service providers that keep the ids of deleted Users as members
	 * (scim2-server does) are cleaned first, when PATCH is there. */
	if (s->feat.patch) {
		if ((rc = query_eq(s, s->groups_ep, "members.value", id, "displayName",
		                   &g, err)) != 0)
			goto out;
		json_t *list = list_resources(g.json);
		for (size_t i = 0; i < json_array_size(list); i++) {
			const char *gid = res_str(json_array_get(list, i), "id");
			id_buf_reset(&path);
			id_buf_reset(&url);
			json_decref(body);
			if (gid == NULL)
				continue;
			if ((body = scim_diff_member_remove_body(id)) == NULL ||
			    res_path(s, &path, s->groups_ep, gid) != 0 ||
			    id_buf_printf(&url, "%s%s", s->base,
			                  (const char *)path.data) != 0) {
				body = NULL;
				rc = id_err_set(err, ID_ENOMEM,
				                "SCIM remove: out of memory");
				goto out;
			}
			s->writes++;
			if ((rc = http_do(s, "PATCH", (const char *)url.data, NULL, body,
			                  &r, err)) != 0 ||
			    (r.status != 404 &&
			     (rc = status_check(s, r.status, r.json, r.retry_after_s, err,
			                        "PATCH %s", (const char *)url.data)) !=
			         0))
				goto out;
		}
	}
	id_buf_reset(&path);
	id_buf_reset(&url);
	if (res_path(s, &path, s->users_ep, id) != 0 ||
	    id_buf_printf(&url, "%s%s", s->base, (const char *)path.data) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "SCIM remove: out of memory");
		goto out;
	}
	s->writes++;
	if ((rc = http_do(s, "DELETE", (const char *)url.data, NULL, NULL, &r, err)) ==
	        0 &&
	    r.status != 404)
		rc = status_check(s, r.status, r.json, r.retry_after_s, err, "DELETE %s",
		                  (const char *)url.data);
out:
	json_decref(body);
	resp_fini(&r);
	resp_fini(&g);
	id_buf_fini(&path);
	id_buf_fini(&url);
	return rc;
}
