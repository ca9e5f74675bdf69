/*
 * poll_bamboohr.c — the BambooHR changed-since poller (see poll_bamboohr.h).
 *
 * Invariant: the watermark and the handled (employee, lastChanged) pairs are
 * written only after the pass's Kafka transaction committed, so they never
 * claim more than the log holds; what the log holds is re-learnt from the
 * log itself (the catch-up), so repeating a pass publishes nothing twice.
 * Threading: single-threaded; one curl handle per API call.
 */
#include "ingest/poll_bamboohr.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/failpoint.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ingest/dedupe.h"
#include "ingest/webhook.h"
#include "schemas/codec.h"

#define LOG_COMP        "ingest-poll"
#define MAX_BODY_BYTES  ((size_t)64 << 20)
#define MAX_ID_LEN      256
#define DEDUPE_SOURCE   "bamboohr-poll"
#define DEDUPE_TTL_MS   (7LL * 24 * 3600 * 1000)
#define RECORD_FORMAT   1
#define FLAG_TERMINATED 1

/* What the webhook enrichment asks for (ingest/enrich.c), so that both paths
 * see the same attributes of an employee. */
static const char bamboohr_fields[] =
    "firstName,lastName,preferredName,middleName,jobTitle,department,division,"
    "location,supervisorEId,employmentHistoryStatus,hireDate,workEmail,"
    "employeeNumber,status";

struct poll_bamboohr {
	char *base; /* api_url without trailing '/' */
	char *key;
	long timeout_ms;
	int64_t initial_since_ms;
	char *topic;
	rd_kafka_t *producer;
	rd_kafka_t *consumer;
	state_store_t *store;
	int64_t kafka_timeout_ms;
	codec_t *codec;
	dedupe_t *dedupe;
};

/* ---- employee records ------------------------------------------------------------ */

void poll_employee_init(poll_employee_t *e)
{
	memset(e, 0, sizeof(*e));
	id_attrs_init(&e->attrs);
}

void poll_employee_fini(poll_employee_t *e)
{
	id_attrs_fini(&e->attrs);
	e->known = e->terminated = false;
}

static bool is_hr_event(employee_event_type_t t)
{
	switch (t) {
	case EV_HIRE:
	case EV_UPDATE:
	case EV_TERMINATE:
	case EV_REHIRE:
	case EV_LEAVE_START:
	case EV_LEAVE_END:
	case EV_CONVERSION:
		return true;
	default:
		return false;
	}
}

int poll_employee_apply(poll_employee_t *e, const employee_event_t *ev)
{
	if (!is_hr_event(ev->type))
		return 0;
	if (ev->type == EV_HIRE)
		id_attrs_fini(&e->attrs);
	for (size_t i = 0; i < ev->attributes.len; i++) {
		const id_kv_t *kv = &ev->attributes.items[i];
		/* Cleared and absent are the same to the comparison. */
		if (kv->value == NULL)
			id_attrs_remove(&e->attrs, kv->key);
		else if (id_attrs_set(&e->attrs, kv->key, kv->value) != 0)
			return ID_ENOMEM;
	}
	e->known = true;
	if (ev->type == EV_TERMINATE)
		e->terminated = true;
	else if (ev->type == EV_HIRE || ev->type == EV_REHIRE)
		e->terminated = false;
	return 0;
}

int poll_employee_encode(const poll_employee_t *e, id_buf_t *out)
{
	id_buf_reset(out);
	int rc = id_buf_append_u8(out, RECORD_FORMAT);
	rc |= id_buf_append_u8(out, e->terminated ? FLAG_TERMINATED : 0);
	rc |= id_buf_append_be32(out, (uint32_t)e->attrs.len);
	for (size_t i = 0; i < e->attrs.len; i++) {
		const id_kv_t *kv = &e->attrs.items[i];
		rc |= id_buf_append_be32(out, (uint32_t)strlen(kv->key));
		rc |= id_buf_append_str(out, kv->key);
		rc |= id_buf_append_u8(out, kv->value != NULL);
		if (kv->value != NULL) {
			rc |= id_buf_append_be32(out, (uint32_t)strlen(kv->value));
			rc |= id_buf_append_str(out, kv->value);
		}
	}
	return rc != 0 ? ID_ENOMEM : 0;
}

/* Reads a length-prefixed string at *pos into a malloc'd copy. */
static int take_str(const unsigned char *p, size_t len, size_t *pos, char **out)
{
	if (len - *pos < 4)
		return ID_EPARSE;
	uint32_t n = state_be32_get(p + *pos);
	*pos += 4;
	if (len - *pos < n)
		return ID_EPARSE;
	if ((*out = strndup((const char *)p + *pos, n)) == NULL)
		return ID_ENOMEM;
	*pos += n;
	return 0;
}

int poll_employee_decode(const void *data, size_t len, poll_employee_t *out)
{
	const unsigned char *p = data;
	size_t pos = 6;
	int rc = 0;
	char *k = NULL, *v = NULL;
	poll_employee_fini(out);
	if (len < 6 || p[0] != RECORD_FORMAT)
		return ID_EPARSE;
	out->known = true;
	out->terminated = (p[1] & FLAG_TERMINATED) != 0;
	uint32_t n = state_be32_get(p + 2);
	for (uint32_t i = 0; i < n; i++) {
		if ((rc = take_str(p, len, &pos, &k)) != 0)
			goto out;
		if (pos >= len) {
			rc = ID_EPARSE;
			goto out;
		}
		bool has = p[pos++] != 0;
		if (has && (rc = take_str(p, len, &pos, &v)) != 0)
			goto out;
		if (id_attrs_set(&out->attrs, k, v) != 0) {
			rc = ID_ENOMEM;
			goto out;
		}
		free(k);
		free(v);
		k = v = NULL;
	}
	if (pos != len)
		rc = ID_EPARSE;
out:
	free(k);
	free(v);
	if (rc != 0)
		poll_employee_fini(out);
	return rc;
}

/* ---- the changed-since answer ----------------------------------------------------- */

void poll_changes_free(poll_change_t *c, size_t n)
{
	for (size_t i = 0; i < n && c != NULL; i++)
		free(c[i].employee_id);
	free(c);
}

static int change_cmp(const void *a, const void *b)
{
	const poll_change_t *x = a, *y = b;
	if (x->last_changed != y->last_changed)
		return x->last_changed < y->last_changed ? -1 : 1;
	return strcmp(x->employee_id, y->employee_id);
}

static bool id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MAX_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

int poll_bamboohr_parse_changed(const void *body, size_t len, poll_change_t **out,
                                size_t *n, int64_t *latest, id_err_t *err)
{
	int rc = 0;
	json_error_t jerr;
	poll_change_t *v = NULL;
	size_t nv = 0;
	*out = NULL;
	*n = 0;
	*latest = INT64_MIN;
	json_t *root = json_loadb(body, len, 0, &jerr);
	if (!json_is_object(root)) {
		rc = id_err_set(err, ID_EPARSE,
		                "BambooHR changed-since answer: not a JSON object (%s)",
		                root == NULL ? jerr.text : "wrong type");
		goto out;
	}
	json_t *lt = json_object_get(root, "latest");
	if (json_is_string(lt) &&
	    webhook_time_parse(json_string_value(lt), latest) != 0) {
		rc = id_err_set(err, ID_EPARSE,
		                "BambooHR changed-since answer: latest \"%s\" is not a "
		                "time",
		                json_string_value(lt));
		goto out;
	}
	json_t *emps = json_object_get(root, "employees");
	/* PHP encodes an empty map as []. */
	if (emps == NULL || json_is_null(emps) ||
	    (json_is_array(emps) && json_array_size(emps) == 0))
		goto out;
	if (!json_is_object(emps)) {
		rc = id_err_set(err, ID_EPARSE,
		                "BambooHR changed-since answer: employees must be an "
		                "object");
		goto out;
	}
	if ((v = calloc(json_object_size(emps) + 1, sizeof(*v))) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	const char *k;
	json_t *e;
	json_object_foreach(emps, k, e)
	{
		char idbuf[64];
		const char *id = k;
		if (!json_is_object(e)) {
			rc =
			    id_err_set(err, ID_EPARSE,
			               "BambooHR changed-since answer: employees.%s must "
			               "be an object",
			               k);
			goto out;
		}
		json_t *jid = json_object_get(e, "id");
		if (json_is_string(jid)) {
			id = json_string_value(jid);
		} else if (json_is_integer(jid)) {
			snprintf(idbuf, sizeof(idbuf), "%lld",
			         (long long)json_integer_value(jid));
			id = idbuf;
		}
		if (!id_ok(id)) {
			rc = id_err_set(
			    err, ID_EPARSE,
			    "BambooHR changed-since answer: employees.%s.id is "
			    "not a usable id",
			    k);
			goto out;
		}
		json_t *act = json_object_get(e, "action");
		json_t *lc = json_object_get(e, "lastChanged");
		int64_t ms;
		if (!json_is_string(act) || !json_is_string(lc) ||
		    webhook_time_parse(json_string_value(lc), &ms) != 0) {
			rc = id_err_set(
			    err, ID_EPARSE,
			    "BambooHR changed-since answer: employees.%s needs "
			    "an action and a lastChanged time",
			    k);
			goto out;
		}
		const char *a = json_string_value(act);
		if (strcasecmp(a, "Inserted") != 0 && strcasecmp(a, "Updated") != 0 &&
		    strcasecmp(a, "Deleted") != 0) {
			rc = id_err_set(
			    err, ID_EPARSE,
			    "BambooHR changed-since answer: employees.%s.action "
			    "\"%s\" is not Inserted, Updated or Deleted",
			    k, a);
			goto out;
		}
		if ((v[nv].employee_id = strdup(id)) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		v[nv].deleted = strcasecmp(a, "Deleted") == 0;
		v[nv].last_changed = ms;
		if (ms > *latest && !json_is_string(lt))
			*latest = ms;
		nv++;
	}
	qsort(v, nv, sizeof(*v), change_cmp);
out:
	json_decref(root);
	if (rc != 0) {
		poll_changes_free(v, nv);
		return rc;
	}
	if (nv == 0) {
		free(v);
		v = NULL;
	}
	*out = v;
	*n = nv;
	return 0;
}

/* ---- the decision ---------------------------------------------------------------- */

static bool has_names(const id_attrs_t *a)
{
	const char *f = id_attrs_get(a, "first_name"), *l = id_attrs_get(a, "last_name");
	return f != NULL && *f != '\0' && l != NULL && *l != '\0';
}

static bool status_is(const id_attrs_t *a, const char *s)
{
	const char *v = id_attrs_get(a, "status");
	return v != NULL && strcasecmp(v, s) == 0;
}

int poll_bamboohr_decide(const poll_employee_t *known, bool deleted,
                         const id_attrs_t *fetched, poll_decision_t *decision,
                         employee_event_type_t *type, id_attrs_t *changed)
{
	*decision = POLL_NOTHING;
	id_attrs_fini(changed);
	if (!known->known) {
		/* Someone who left before idstream heard of them has no account
		 * to disable and must not get one. */
		if (deleted || fetched == NULL || status_is(fetched, "Inactive")) {
			*decision = POLL_IGNORED;
			return 0;
		}
		if (!has_names(fetched)) {
			*decision = POLL_UNUSABLE;
			return 0;
		}
		*decision = POLL_PUBLISH;
		*type = EV_HIRE;
		return id_attrs_copy(changed, fetched) != 0 ? ID_ENOMEM : 0;
	}
	if (deleted || fetched == NULL) {
		if (!known->terminated) {
			*decision = POLL_PUBLISH;
			*type = EV_TERMINATE;
		}
		return 0;
	}
	for (size_t i = 0; i < fetched->len; i++) {
		const id_kv_t *kv = &fetched->items[i];
		const char *old = id_attrs_get(&known->attrs, kv->key);
		bool same = kv->value == NULL
		                ? old == NULL
		                : old != NULL && strcmp(old, kv->value) == 0;
		if (!same && id_attrs_set(changed, kv->key, kv->value) != 0)
			return ID_ENOMEM;
	}
	if (!known->terminated && status_is(fetched, "Inactive")) {
		*type = EV_TERMINATE;
	} else if (known->terminated && status_is(fetched, "Active")) {
		*type = EV_REHIRE;
	} else if (changed->len > 0) {
		*type = EV_UPDATE;
	} else {
		return 0;
	}
	*decision = POLL_PUBLISH;
	return 0;
}

/* ---- create / destroy -------------------------------------------------------------- */

int poll_bamboohr_create(const poll_bamboohr_opts_t *o, poll_bamboohr_t **out,
                         id_err_t *err)
{
	*out = NULL;
	if (o == NULL || o->api_url == NULL || o->api_url[0] == '\0' ||
	    o->api_key == NULL || o->topic == NULL || o->producer == NULL ||
	    o->consumer == NULL || o->store == NULL)
		return id_err_set(err, ID_EINVALID,
		                  "poll bamboohr: the API URL, key, topic, Kafka handles "
		                  "and state store are required");
	poll_bamboohr_t *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	size_t n = strlen(o->api_url);
	while (n > 0 && o->api_url[n - 1] == '/')
		n--;
	p->timeout_ms = o->api_timeout_ms > 0 ? o->api_timeout_ms : 10000;
	p->initial_since_ms = o->initial_since_ms;
	p->producer = o->producer;
	p->consumer = o->consumer;
	p->store = o->store;
	p->kafka_timeout_ms = o->kafka_timeout_ms > 0 ? o->kafka_timeout_ms : 30000;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if ((p->base = strndup(o->api_url, n)) == NULL ||
	    (p->key = strdup(o->api_key)) == NULL ||
	    (p->topic = strdup(o->topic)) == NULL ||
	    (p->dedupe = dedupe_create(o->store, DEDUPE_TTL_MS, true)) == NULL) {
		poll_bamboohr_destroy(p);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	if ((p->codec = codec_create(err)) == NULL) {
		poll_bamboohr_destroy(p);
		return err != NULL && err->code != 0 ? err->code : ID_ESCHEMA;
	}
	*out = p;
	return 0;
}

void poll_bamboohr_destroy(poll_bamboohr_t *p)
{
	if (p == NULL)
		return;
	if (p->key != NULL)
		memset(p->key, 0, strlen(p->key));
	free(p->key);
	free(p->base);
	free(p->topic);
	codec_destroy(p->codec);
	dedupe_destroy(p->dedupe);
	free(p);
	curl_global_cleanup();
}

/* ---- time ------------------------------------------------------------------------ */

void poll_bamboohr_fmt_time(int64_t ms, char *buf, size_t buflen)
{
	time_t s = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	strftime(buf, buflen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the HR API -------------------------------------------------------------------- */

static size_t on_data(char *d, size_t size, size_t nmemb, void *opaque)
{
	id_buf_t *b = opaque;
	size_t len = size * nmemb;
	if (b->len + len > MAX_BODY_BYTES || id_buf_append(b, d, len) != 0)
		return 0; /* aborts the transfer */
	return len;
}

/*
 * GET url with BambooHR's documented contract: Basic auth with the API key
 * as user name and "x" as password, JSON asked for (the API answers XML
 * otherwise).  0 with *status and body; ID_EIO when no answer came.  The URL
 * holds no secret, so it may be named in errors.
 */
static int api_get(poll_bamboohr_t *p, const char *url, long *status, id_buf_t *body,
                   id_err_t *err)
{
	int rc = 0;
	struct curl_slist *hdrs = NULL;
	CURL *h = curl_easy_init();
	id_buf_reset(body);
	if (h == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(h, CURLOPT_USERNAME, p->key);
	curl_easy_setopt(h, CURLOPT_PASSWORD, "x");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, p->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, p->timeout_ms);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	CURLcode cc = curl_easy_perform(h);
	*status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	if (cc != CURLE_OK)
		rc = id_err_set(err, ID_EIO, "BambooHR API %s: %s", url,
		                curl_easy_strerror(cc));
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return rc;
}

static int api_status_error(long status, const char *url, id_err_t *err)
{
	return id_err_set(err, ID_EIO, "BambooHR API %s answered %ld%s", url, status,
	                  status == 401 || status == 403 ? " (check the API key)"
	                  : status == 429 || status == 503
	                      ? " (rate limited or unavailable; retried next pass)"
	                      : "");
}

/* The changed-since list. */
static int api_changed(poll_bamboohr_t *p, int64_t since_ms, poll_change_t **out,
                       size_t *n, int64_t *latest, id_err_t *err)
{
	int rc;
	char since[40];
	long status;
	id_buf_t url = ID_BUF_INIT, body = ID_BUF_INIT;
	poll_bamboohr_fmt_time(since_ms, since, sizeof(since));
	/* "Z" form: no '+' that would need %2B in the query. */
	if (id_buf_printf(&url, "%s/v1/employees/changed?since=%s", p->base, since) !=
	        0 ||
	    id_buf_append_u8(&url, 0) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = api_get(p, (const char *)url.data, &status, &body, err)) != 0)
		goto out;
	if (status != 200) {
		rc = api_status_error(status, (const char *)url.data, err);
		goto out;
	}
	rc = poll_bamboohr_parse_changed(body.data != NULL ? (const char *)body.data : "",
	                                 body.len, out, n, latest, err);
out:
	id_buf_fini(&url);
	id_buf_fini(&body);
	return rc;
}

/*
 * One employee's fields, mapped as the webhook enrichment maps them.  0 with
 * *gone = false and fetched filled, 0 with *gone = true when the API says the
 * employee does not exist (404/410), or an error.
 */
static int api_employee(poll_bamboohr_t *p, const char *employee_id, id_attrs_t *fetched,
                        bool *gone, id_err_t *err)
{
	int rc = 0;
	long status;
	char *esc = NULL;
	id_buf_t url = ID_BUF_INIT, body = ID_BUF_INIT;
	webhook_event_t we;
	memset(&we, 0, sizeof(we));
	employee_event_init(&we.ev);
	*gone = false;
	CURL *h = curl_easy_init();
	if (h == NULL || (esc = curl_easy_escape(h, employee_id, 0)) == NULL ||
	    id_buf_printf(&url, "%s/v1/employees/%s?fields=%s", p->base, esc,
	                  bamboohr_fields) != 0 ||
	    id_buf_append_u8(&url, 0) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = api_get(p, (const char *)url.data, &status, &body, err)) != 0)
		goto out;
	if (status == 404 || status == 410) {
		*gone = true;
		goto out;
	}
	if (status != 200) {
		rc = api_status_error(status, (const char *)url.data, err);
		goto out;
	}
	we.ev.type = EV_UPDATE;
	if ((we.ev.employee_id = strdup(employee_id)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	we.thin = true;
	if ((rc = webhook_event_enrich(WEBHOOK_BAMBOOHR, &we,
	                               body.data != NULL ? (const char *)body.data : "",
	                               body.len, err)) != 0) {
		id_err_wrap(err, "employee %s", employee_id);
		goto out;
	}
	if (id_attrs_copy(fetched, &we.ev.attributes) != 0)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
out:
	curl_free(esc);
	curl_easy_cleanup(h);
	employee_event_fini(&we.ev);
	id_buf_fini(&url);
	id_buf_fini(&body);
	return rc;
}

/* ---- state ----------------------------------------------------------------------- */

static int record_key(id_buf_t *k, const char *employee_id)
{
	id_buf_reset(k);
	return id_buf_append(k, "e/", 2) | id_buf_append_str(k, employee_id) ? ID_ENOMEM
	                                                                     : 0;
}

static int record_load(poll_bamboohr_t *p, const char *employee_id, poll_employee_t *e,
                       id_err_t *err)
{
	int rc;
	id_buf_t k = ID_BUF_INIT, v = ID_BUF_INIT;
	poll_employee_fini(e);
	if ((rc = record_key(&k, employee_id)) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	rc = state_store_get_buf(p->store, k.data, k.len, &v, err);
	if (rc == ID_ENOTFOUND) {
		rc = 0;
		goto out;
	}
	if (rc != 0)
		goto out;
	if ((rc = poll_employee_decode(v.data, v.len, e)) != 0)
		rc = id_err_set(err, rc == ID_ENOMEM ? ID_ENOMEM : ID_ESTATE,
		                "%s: the record of employee %s is corrupt",
		                state_store_path(p->store), employee_id);
out:
	id_buf_fini(&k);
	id_buf_fini(&v);
	return rc;
}

int poll_bamboohr_watermark(poll_bamboohr_t *p, int64_t *ms, id_err_t *err)
{
	void *v = NULL;
	size_t vlen = 0;
	int rc = state_store_get(p->store, "w", 1, &v, &vlen, err);
	if (rc == 0) {
		if (vlen == 8)
			*ms = (int64_t)state_be64_get(v);
		else
			rc = id_err_set(err, ID_ESTATE, "%s: the watermark is corrupt",
			                state_store_path(p->store));
	}
	free(v);
	return rc;
}

/* ---- catching up with the log -------------------------------------------------------
 */

static void cache_free(id_hmap_t *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].key != NULL) {
			poll_employee_fini(m->slots[i].value);
			free(m->slots[i].value);
		}
	}
	id_hmap_fini(m);
}

/*
 * Reads hr.events from the stored offsets to its current end (every
 * partition reported EOF), folds the HR events into the records and stores
 * records and offsets in one batch.
 */
static int catch_up(poll_bamboohr_t *p, size_t *nread, id_err_t *err)
{
	int rc = 0;
	int32_t nparts = 0;
	int64_t *next = NULL;
	bool *eof = NULL;
	rd_kafka_topic_partition_list_t *tp = NULL;
	state_batch_t *b = NULL;
	employee_event_t ev;
	id_hmap_t cache;
	id_buf_t k = ID_BUF_INIT, v = ID_BUF_INIT;
	bool assigned = false;
	employee_event_init(&ev);
	id_hmap_init(&cache);
	*nread = 0;

	if ((rc = id_kafka_partition_count(p->consumer, p->topic, &nparts, err)) != 0)
		goto out;
	if ((next = calloc((size_t)nparts, sizeof(*next))) == NULL ||
	    (eof = calloc((size_t)nparts, sizeof(*eof))) == NULL ||
	    (tp = rd_kafka_topic_partition_list_new(nparts)) == NULL ||
	    (b = state_batch_create()) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (int32_t i = 0; i < nparts; i++) {
		unsigned char key[6] = {'o', '/'};
		void *val = NULL;
		size_t vlen = 0;
		state_be32_put(key + 2, (uint32_t)i);
		rc = state_store_get(p->store, key, sizeof(key), &val, &vlen, err);
		next[i] = -1;
		if (rc == 0 && vlen == 8)
			next[i] = (int64_t)state_be64_get(val);
		free(val);
		if (rc != 0 && rc != ID_ENOTFOUND)
			goto out;
		rc = 0;
		rd_kafka_topic_partition_list_add(tp, p->topic, i)->offset =
		    next[i] >= 0 ? next[i] : RD_KAFKA_OFFSET_BEGINNING;
	}
	rd_kafka_resp_err_t ke = rd_kafka_assign(p->consumer, tp);
	if (ke != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, ke, "assigning hr.events partitions");
		goto out;
	}
	assigned = true;
	int32_t waiting = nparts;
	int64_t deadline = mono_ms() + p->kafka_timeout_ms;
	while (waiting > 0) {
		if (mono_ms() > deadline) {
			rc = id_err_set(err, ID_ETIMEOUT,
			                "reading %s to its end took longer than %lld ms",
			                p->topic, (long long)p->kafka_timeout_ms);
			goto out;
		}
		rd_kafka_message_t *m = rd_kafka_consumer_poll(p->consumer, 200);
		if (m == NULL)
			continue;
		int32_t part = m->partition;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if (part >= 0 && part < nparts) {
				if (!eof[part])
					waiting--;
				eof[part] = true;
				next[part] = m->offset;
			}
			rd_kafka_message_destroy(m);
			continue;
		}
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rd_kafka_resp_err_t e = m->err;
			rd_kafka_message_destroy(m);
			if (e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
			    e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
			    e == RD_KAFKA_RESP_ERR__FATAL) {
				rc = id_kafka_err(err, e, "reading hr.events");
				goto out;
			}
			continue; /* transient: librdkafka retries */
		}
		if (part >= 0 && part < nparts)
			next[part] = m->offset + 1;
		(*nread)++;
		id_err_t derr = {0};
		if (codec_decode_event(p->codec, m->payload, m->len, &ev, &derr) != 0) {
			id_log_warn(LOG_COMP, "%s partition %d offset %lld: skipped: %s",
			            p->topic, (int)part, (long long)m->offset, derr.msg);
			rd_kafka_message_destroy(m);
			continue;
		}
		rd_kafka_message_destroy(m);
		if (!is_hr_event(ev.type))
			continue;
		poll_employee_t *e = id_hmap_get(&cache, ev.employee_id);
		if (e == NULL) {
			if ((e = malloc(sizeof(*e))) == NULL) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				goto out;
			}
			poll_employee_init(e);
			if (id_hmap_put(&cache, ev.employee_id, e) != 0) {
				free(e);
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				goto out;
			}
			if ((rc = record_load(p, ev.employee_id, e, err)) != 0)
				goto out;
		}
		if ((rc = poll_employee_apply(e, &ev)) != 0) {
			id_err_set(err, rc, "out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < cache.cap; i++) {
		if (cache.slots[i].key == NULL)
			continue;
		if (record_key(&k, cache.slots[i].key) != 0 ||
		    poll_employee_encode(cache.slots[i].value, &v) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		state_batch_put(b, k.data, k.len, v.data, v.len);
	}
	for (int32_t i = 0; i < nparts; i++) {
		unsigned char key[6] = {'o', '/'}, val[8];
		if (next[i] < 0)
			continue;
		state_be32_put(key + 2, (uint32_t)i);
		state_be64_put(val, (uint64_t)next[i]);
		state_batch_put(b, key, sizeof(key), val, sizeof(val));
	}
	rc = state_batch_write(p->store, b, false, err);
out:
	if (assigned)
		rd_kafka_assign(p->consumer, NULL);
	if (tp != NULL)
		rd_kafka_topic_partition_list_destroy(tp);
	state_batch_destroy(b);
	cache_free(&cache);
	employee_event_fini(&ev);
	id_buf_fini(&k);
	id_buf_fini(&v);
	free(next);
	free(eof);
	return rc;
}

/* ---- publishing ------------------------------------------------------------------- */

static void txn_abort(poll_bamboohr_t *p)
{
	rd_kafka_error_t *e =
	    rd_kafka_abort_transaction(p->producer, (int)p->kafka_timeout_ms);
	if (e != NULL) {
		id_log_warn(LOG_COMP, "aborting the Kafka transaction: %s",
		            rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	}
}

static int txn_commit(poll_bamboohr_t *p, id_err_t *err)
{
	for (int attempt = 0;; attempt++) {
		rd_kafka_error_t *e =
		    rd_kafka_commit_transaction(p->producer, (int)p->kafka_timeout_ms);
		if (e == NULL)
			return 0;
		bool retry = rd_kafka_error_is_retriable(e) && attempt < 3;
		bool abortable = rd_kafka_error_txn_requires_abort(e);
		if (!retry) {
			int rc =
			    id_kafka_error(err, e, "committing the Kafka transaction");
			rd_kafka_error_destroy(e);
			if (abortable)
				txn_abort(p);
			return rc;
		}
		rd_kafka_error_destroy(e);
	}
}

/* All events of the pass in one transaction. */
static int publish(poll_bamboohr_t *p, const employee_event_t *evs, size_t n,
                   id_err_t *err)
{
	int rc = 0;
	bool in_txn = false;
	id_buf_t val = ID_BUF_INIT;
	/* Failures surface as the commit's error; must outlive the messages. */
	id_kafka_delivery_t dr = {0, RD_KAFKA_RESP_ERR_NO_ERROR, NULL, 0};
	/* Encode everything first: a record the codec refuses stops the pass
	 * before anything is sent. */
	for (size_t i = 0; i < n; i++)
		if ((rc = codec_encode_event(p->codec, &evs[i], &val, err)) != 0)
			goto out;
	rd_kafka_error_t *e = rd_kafka_begin_transaction(p->producer);
	if (e != NULL) {
		rc = id_kafka_error(err, e, "starting a Kafka transaction");
		rd_kafka_error_destroy(e);
		goto out;
	}
	in_txn = true;
	for (size_t i = 0; i < n; i++) {
		if ((rc = codec_encode_event(p->codec, &evs[i], &val, err)) != 0)
			goto out;
		rd_kafka_resp_err_t pe;
		for (;;) {
			dr.pending++;
			pe = rd_kafka_producev(p->producer, RD_KAFKA_V_TOPIC(p->topic),
			                       RD_KAFKA_V_KEY(evs[i].employee_id,
			                                      strlen(evs[i].employee_id)),
			                       RD_KAFKA_V_VALUE(val.data, val.len),
			                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			                       RD_KAFKA_V_OPAQUE(&dr), RD_KAFKA_V_END);
			if (pe != RD_KAFKA_RESP_ERR_NO_ERROR)
				dr.pending--; /* not queued: no delivery report */
			if (pe != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			rd_kafka_poll(p->producer, 100);
		}
		if (pe != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_kafka_err(err, pe, "producing an event");
			goto out;
		}
		rd_kafka_poll(p->producer, 0);
	}
	in_txn = false;
	rc = txn_commit(p, err);
out:
	if (in_txn)
		txn_abort(p);
	/* Delivery reports reference dr: serve them all before it goes. */
	while (dr.pending > 0 && rd_kafka_outq_len(p->producer) > 0)
		rd_kafka_poll(p->producer, 100);
	rd_kafka_poll(p->producer, 0);
	id_buf_fini(&val);
	return rc;
}

/* ---- one pass --------------------------------------------------------------------- */

static int make_event(const char *employee_id, employee_event_type_t type,
                      int64_t last_changed, const char *reason, id_attrs_t *attrs,
                      employee_event_t *ev)
{
	char sei[MAX_ID_LEN + 64];
	snprintf(sei, sizeof(sei), "poll:%s:%lld", employee_id, (long long)last_changed);
	ev->type = type;
	ev->occurred_at = ev->effective_at = last_changed;
	if ((ev->source = strdup("bamboohr")) == NULL ||
	    (ev->source_event_id = strdup(sei)) == NULL ||
	    (ev->employee_id = strdup(employee_id)) == NULL ||
	    (ev->actor = strdup("poll:bamboohr")) == NULL ||
	    (reason != NULL && (ev->reason = strdup(reason)) == NULL) ||
	    webhook_event_id(ev->source, ev->source_event_id, &ev->event_id) != 0)
		return ID_ENOMEM;
	/* The attributes move into the event. */
	id_attrs_fini(&ev->attributes);
	ev->attributes = *attrs;
	id_attrs_init(attrs);
	return 0;
}

/* "changed: a, b" over the attribute keys. */
static void changed_reason(const id_attrs_t *a, char *buf, size_t buflen)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < a->len; i++) {
		int n = snprintf(buf + o, buflen - o, "%s%s", o == 0 ? "changed: " : ", ",
		                 a->items[i].key);
		if (n < 0 || (size_t)n >= buflen - o) {
			buf[o] = '\0';
			return;
		}
		o += (size_t)n;
	}
}

static void dedupe_id(const poll_change_t *c, char *buf, size_t buflen)
{
	snprintf(buf, buflen, "%s@%lld", c->employee_id, (long long)c->last_changed);
}

int poll_bamboohr_run(poll_bamboohr_t *p, poll_bamboohr_report_t *rep, id_err_t *err)
{
	int rc = 0;
	poll_bamboohr_report_t local;
	poll_change_t *ch = NULL;
	size_t nch = 0, nev = 0;
	bool *claimed = NULL;
	employee_event_t *evs = NULL;
	state_batch_t *b = NULL;
	poll_employee_t known;
	id_attrs_t fetched = ID_ATTRS_INIT, changed = ID_ATTRS_INIT;
	int64_t latest = INT64_MIN, since;
	int64_t now = wall_ms();
	poll_employee_init(&known);
	if (rep == NULL)
		rep = &local;
	memset(rep, 0, sizeof(*rep));

	/* 1. What the log already says. */
	if ((rc = catch_up(p, &rep->log_events, err)) != 0) {
		id_err_wrap(err, "catching up with the log");
		goto out;
	}
	/* 2. What changed in BambooHR. */
	rc = poll_bamboohr_watermark(p, &since, err);
	if (rc == ID_ENOTFOUND)
		since = p->initial_since_ms;
	else if (rc != 0)
		goto out;
	rc = 0;
	rep->since_ms = rep->next_since_ms = since;
	if ((rc = api_changed(p, since, &ch, &nch, &latest, err)) != 0)
		goto out;
	rep->changed = nch;
	if (nch > 0 && ((claimed = calloc(nch, sizeof(*claimed))) == NULL ||
	                (evs = calloc(nch, sizeof(*evs))) == NULL)) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	/* 3-4. Each employee, compared with the log. */
	for (size_t i = 0; i < nch; i++) {
		const poll_change_t *c = &ch[i];
		char did[MAX_ID_LEN + 32];
		bool in_flight = false, gone = c->deleted;
		dedupe_id(c, did, sizeof(did));
		id_err_t cerr = {0};
		rc = dedupe_claim(p->dedupe, DEDUPE_SOURCE, did, now, &in_flight, &cerr);
		if (rc == ID_ECONFLICT) {
			rep->already++;
			rc = 0;
			continue;
		}
		if (rc != 0) {
			id_err_set(err, rc, "%s", cerr.msg);
			goto out;
		}
		claimed[i] = true;
		id_attrs_fini(&fetched);
		if (!gone &&
		    (rc = api_employee(p, c->employee_id, &fetched, &gone, err)) != 0)
			goto out;
		if ((rc = record_load(p, c->employee_id, &known, err)) != 0)
			goto out;
		poll_decision_t d;
		employee_event_type_t type = EV_UPDATE;
		if ((rc = poll_bamboohr_decide(&known, gone, gone ? NULL : &fetched, &d,
		                               &type, &changed)) != 0) {
			id_err_set(err, rc, "out of memory");
			goto out;
		}
		if (d == POLL_NOTHING) {
			rep->unchanged++;
			continue;
		}
		if (d == POLL_IGNORED) {
			rep->ignored++;
			id_log_info(LOG_COMP,
			            "employee %s: %s and never published; nothing to do",
			            c->employee_id, gone ? "deleted" : "inactive");
			continue;
		}
		if (d == POLL_UNUSABLE) {
			rep->unusable++;
			id_log_error(LOG_COMP,
			             "employee %s: a new employee without first and last "
			             "name in BambooHR; skipped until the record changes",
			             c->employee_id);
			continue;
		}
		char reason[512];
		if (type == EV_TERMINATE && gone)
			snprintf(reason, sizeof(reason), "deleted in BambooHR");
		else if (type == EV_HIRE)
			snprintf(reason, sizeof(reason), "new in BambooHR");
		else
			changed_reason(&changed, reason, sizeof(reason));
		employee_event_init(&evs[nev]);
		if ((rc = make_event(c->employee_id, type, c->last_changed,
		                     reason[0] ? reason : NULL, &changed, &evs[nev])) !=
		    0) {
			nev++;
			id_err_set(err, rc, "out of memory");
			goto out;
		}
		nev++;
		switch (type) {
		case EV_HIRE:
			rep->hires++;
			break;
		case EV_TERMINATE:
			rep->terminations++;
			break;
		case EV_REHIRE:
			rep->rehires++;
			break;
		default:
			rep->updates++;
			break;
		}
	}
	/* 5. Publish, then remember. */
	if (nev > 0) {
		if ((rc = publish(p, evs, nev, err)) != 0) {
			id_err_wrap(err, "nothing of this pass was published");
			goto out;
		}
		rep->published = nev;
		id_failpoint_crash("poll.after_commit");
	}
	if ((b = state_batch_create()) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	int64_t next = since;
	if (latest != INT64_MIN && latest > next)
		next = latest;
	unsigned char wv[8];
	state_be64_put(wv, (uint64_t)next);
	state_batch_put(b, "w", 1, wv, sizeof(wv));
	for (size_t i = 0; i < nch; i++) {
		char did[MAX_ID_LEN + 32];
		if (!claimed[i])
			continue;
		dedupe_id(&ch[i], did, sizeof(did));
		if ((rc = dedupe_record(p->dedupe, b, DEDUPE_SOURCE, did, now, err)) != 0)
			goto out;
	}
	if ((rc = state_batch_write(p->store, b, true, err)) != 0) {
		id_err_wrap(err, "the events were published, the watermark not (the next "
		                 "pass publishes nothing twice)");
		goto out;
	}
	rep->next_since_ms = next;
	size_t swept = 0;
	id_err_t serr = {0};
	if (dedupe_sweep(p->dedupe, now, 1000, &swept, &serr) != 0)
		id_log_warn(LOG_COMP, "sweeping handled changes: %s", serr.msg);
out:
	for (size_t i = 0; i < nch && claimed != NULL; i++) {
		char did[MAX_ID_LEN + 32];
		if (!claimed[i])
			continue;
		dedupe_id(&ch[i], did, sizeof(did));
		dedupe_release(p->dedupe, DEDUPE_SOURCE, did);
	}
	for (size_t i = 0; i < nev; i++)
		employee_event_fini(&evs[i]);
	free(evs);
	free(claimed);
	state_batch_destroy(b);
	poll_changes_free(ch, nch);
	poll_employee_fini(&known);
	id_attrs_fini(&fetched);
	id_attrs_fini(&changed);
	return rc;
}
