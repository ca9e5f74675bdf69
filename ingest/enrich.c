/*
 * enrich.c — HR API calls that complete thin webhook events (see enrich.h).
 *
 * Invariant: a call either fills the event completely (webhook_event_enrich)
 * or leaves it untouched.  Threading: no shared mutable state after create;
 * one curl easy handle per call (libcurl is initialised once by the caller's
 * process through curl_global_init in enrich_create).
 */
#include "ingest/enrich.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

#define MAX_RECORD_BYTES ((size_t)4 << 20)

struct enrich {
	char *base[WEBHOOK_SOURCE_COUNT];
	char *token[WEBHOOK_SOURCE_COUNT];
	long timeout_ms;
};

/* The fields asked for: what the webhook mapping knows (webhook.c). */
static const char bamboohr_fields[] =
    "firstName,lastName,preferredName,middleName,jobTitle,department,division,"
    "location,supervisorEId,employmentHistoryStatus,hireDate,workEmail,"
    "employeeNumber,status";
static const char hibob_body[] =
    "{\"fields\":[\"root.firstName\",\"root.surname\",\"root.displayName\","
    "\"root.email\",\"work.title\",\"work.department\",\"work.site\","
    "\"work.reportsTo\",\"work.startDate\",\"work.employeeIdInCompany\"]}";

enrich_t *enrich_create(const enrich_api_t apis[WEBHOOK_SOURCE_COUNT], long timeout_ms)
{
	enrich_t *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return NULL;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	e->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++) {
		if (apis[s].base_url == NULL)
			continue;
		size_t n = strlen(apis[s].base_url);
		while (n > 0 && apis[s].base_url[n - 1] == '/')
			n--; /* "https://x/" and "https://x" mean the same */
		if ((e->base[s] = strndup(apis[s].base_url, n)) == NULL ||
		    (e->token[s] = strdup(apis[s].token ? apis[s].token : "")) == NULL) {
			enrich_destroy(e);
			return NULL;
		}
	}
	return e;
}

void enrich_destroy(enrich_t *e)
{
	if (e == NULL)
		return;
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++) {
		free(e->base[s]);
		if (e->token[s] != NULL)
			memset(e->token[s], 0, strlen(e->token[s]));
		free(e->token[s]);
	}
	free(e);
	curl_global_cleanup();
}

bool enrich_configured(const enrich_t *e, webhook_source_t src)
{
	return e != NULL && (unsigned)src < WEBHOOK_SOURCE_COUNT && e->base[src] != NULL;
}

static size_t on_data(char *p, size_t size, size_t n, void *opaque)
{
	id_buf_t *b = opaque;
	size_t len = size * n;
	if (b->len + len > MAX_RECORD_BYTES || id_buf_append(b, p, len) != 0)
		return 0; /* aborts the transfer */
	return len;
}

int enrich_event(void *opaque, webhook_source_t src, webhook_event_t *we, id_err_t *err)
{
	enrich_t *e = opaque;
	int rc = 0;
	CURL *h = NULL;
	char *id = NULL;
	struct curl_slist *hdrs = NULL;
	id_buf_t url = ID_BUF_INIT, auth = ID_BUF_INIT, body = ID_BUF_INIT;
	const char *name = webhook_source_name(src);

	if (!enrich_configured(e, src))
		return id_err_set(err, ID_ENOTFOUND, "no %s API is configured", name);
	if ((h = curl_easy_init()) == NULL ||
	    (id = curl_easy_escape(h, we->ev.employee_id, 0)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	switch (src) {
	case WEBHOOK_BAMBOOHR:
		id_buf_printf(&url, "%s/v1/employees/%s?fields=%s", e->base[src], id,
		              bamboohr_fields);
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, e->token[src]);
		curl_easy_setopt(h, CURLOPT_PASSWORD, "x");
		break;
	case WEBHOOK_HIBOB: {
		/* The token is "<service user id>:<token>". */
		const char *colon = strchr(e->token[src], ':');
		id_buf_printf(&url, "%s/v1/people/%s", e->base[src], id);
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		if (colon != NULL) {
			char *user =
			    strndup(e->token[src], (size_t)(colon - e->token[src]));
			if (user == NULL) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				goto out;
			}
			curl_easy_setopt(h, CURLOPT_USERNAME, user);
			curl_easy_setopt(h, CURLOPT_PASSWORD, colon + 1);
			memset(user, 0, strlen(user));
			free(user);
		} else {
			curl_easy_setopt(h, CURLOPT_USERNAME, e->token[src]);
		}
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, hibob_body);
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		break;
	}
	case WEBHOOK_GUSTO:
	case WEBHOOK_PERSONIO:
		id_buf_printf(&url, "%s/v1/%s/%s", e->base[src],
		              src == WEBHOOK_GUSTO ? "employees" : "company/employees",
		              id);
		id_buf_printf(&auth, "Authorization: Bearer %s", e->token[src]);
		id_buf_append_u8(&auth, 0);
		hdrs = curl_slist_append(hdrs, (const char *)auth.data);
		break;
	default:
		rc = id_err_set(err, ID_ENOTFOUND, "no %s API is configured", name);
		goto out;
	}
	id_buf_append_u8(&url, 0);
	if (url.data == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	curl_easy_setopt(h, CURLOPT_URL, (const char *)url.data);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, e->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, e->timeout_ms);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);

	CURLcode cc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	/* The URL names no secret (ids only), so it may appear in errors. */
	if (cc != CURLE_OK) {
		rc = id_err_set(err, ID_EIO, "%s API %s: %s", name,
		                (const char *)url.data, curl_easy_strerror(cc));
		goto out;
	}
	if (status == 404 || status == 410) {
		rc = id_err_set(err, ID_EINVALID,
		                "%s API: employee %s does not exist (%ld)", name,
		                we->ev.employee_id, status);
		goto out;
	}
	if (status < 200 || status > 299) {
		rc = id_err_set(err, ID_EIO, "%s API %s answered %ld", name,
		                (const char *)url.data, status);
		goto out;
	}
	id_err_t perr = {0};
	if (webhook_event_enrich(src, we,
	                         body.data != NULL ? (const char *)body.data : "",
	                         body.len, &perr) != 0)
		rc = id_err_set(err, perr.code == ID_ENOMEM ? ID_ENOMEM : ID_EINVALID,
		                "%s", perr.msg);
out:
	curl_free(id);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	if (auth.data != NULL)
		memset(auth.data, 0, auth.len);
	id_buf_fini(&auth);
	id_buf_fini(&url);
	id_buf_fini(&body);
	return rc;
}
