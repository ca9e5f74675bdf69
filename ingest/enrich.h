/*
 * enrich.h — completes thin webhook events (ids only) with the employee's
 * record from the HR system's API, over HTTP(S) with libcurl.
 *
 *   source    request (base = the configured API URL)                auth
 *   bamboohr  GET  base/v1/employees/<id>?fields=firstName,...       Basic <token>:x
 *   hibob     POST base/v1/people/<id>  {"fields": ["root.firstName", ...]}
 *                                                                    Basic <token>
 *   gusto     GET  base/v1/employees/<id>                            Bearer <token>
 *   personio  GET  base/v1/company/employees/<id>                    Bearer <token>
 *
 * The answer's fields are mapped by webhook_event_enrich() (webhook.h).
 * Outcomes: 0; ID_EINVALID when the API answered but the record is unusable
 * (404, no name for a hire): the delivery can never succeed; ID_ENOTFOUND
 * when the source has no API configured; ID_EIO for everything that may pass
 * on a retry (connection refused, timeout, 5xx, 429, 401/403 while the token
 * is being fixed).
 *
 * Thread safety: enrich_event() may be called from many threads at once;
 * each call uses its own curl handle.  Tokens are never logged.
 */
#ifndef IDSTREAM_INGEST_ENRICH_H
#define IDSTREAM_INGEST_ENRICH_H

#include <stdbool.h>

#include "common/err.h"
#include "ingest/webhook.h"

typedef struct enrich enrich_t;

typedef struct enrich_api {
	const char *base_url; /* NULL: this source has no API (thin events refused) */
	const char *token;    /* API key / token; copied */
} enrich_api_t;

/*
 * apis[s] configures source s.  timeout_ms bounds one API call (connect and
 * transfer).  Ownership: caller frees with enrich_destroy(); NULL on ENOMEM.
 */
enrich_t *enrich_create(const enrich_api_t apis[WEBHOOK_SOURCE_COUNT], long timeout_ms);
void enrich_destroy(enrich_t *e); /* NULL is a no-op; wipes the tokens */

bool enrich_configured(const enrich_t *e, webhook_source_t src);

/* Completes we from the API of src; an http_enrich_fn (opaque = enrich_t). */
int enrich_event(void *opaque, webhook_source_t src, webhook_event_t *we, id_err_t *err);

#endif
