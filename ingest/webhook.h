/*
 * webhook.h — the pure part of the webhook ingest: signature and timestamp
 * checks and one parser per HR source, turning a signed HTTP body into the
 * employee events it means (docs/WEBHOOKS.md is the contract).
 *
 *   source     signature header (HMAC)                          timestamp header
 *   generic    X-Idstream-Signature  v1=hex SHA-256("<ts>.<body>")  X-Idstream-Timestamp
 *   bamboohr   X-BambooHR-Signature  hex SHA-256(body || ts)       X-BambooHR-Timestamp
 *   hibob      Bob-Signature         base64 (or hex) SHA-512(body)  -
 *   gusto      X-Gusto-Signature     hex SHA-256(body)             -
 *   personio   X-Personio-Signature  hex SHA-256(body)             -
 *
 * Only sources that sign a send time get the timestamp window; for the
 * others the timestamps in the body are event times that legitimately lie
 * hours back when the sender retries, and replays are stopped by the
 * delivery-id dedupe store (ingest/dedupe.h) instead.
 *
 * Identity of what arrives:
 *   delivery id      the dedupe key of one HTTP delivery: X-Idstream-Delivery
 *                    (generic), the body's "uuid" (gusto), otherwise the
 *                    first 32 hex digits of SHA-256 of the raw body (a
 *                    retry resends the same bytes; the bodies carry event
 *                    times, so different events differ).
 *   source_event_id  the delivery id, or "<delivery id>:<index>" for the
 *                    events of a multi-employee delivery (BambooHR
 *                    field-based webhooks).
 *   event_id         first 32 hex digits of SHA-256(source NUL
 *                    source_event_id): a retried delivery yields the same ids.
 *
 * Thin events: several sources send only ids for creations and updates.
 * Those events come back with thin = true and no attributes; they must be
 * completed (enriched) from the HR API before they are published, because a
 * HIRE replaces all HR attributes of the employee.
 *
 * Nothing here does I/O or reads a clock: `now` is passed in.
 * Thread safety: all functions are reentrant; outputs are caller-owned.
 */
#ifndef IDSTREAM_INGEST_WEBHOOK_H
#define IDSTREAM_INGEST_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "schemas/model.h"

#define WEBHOOK_SOURCE_MAP(X)                                                            \
	X(GENERIC, "generic")                                                            \
	X(BAMBOOHR, "bamboohr")                                                          \
	X(HIBOB, "hibob") X(GUSTO, "gusto") X(PERSONIO, "personio")

typedef enum {
#define WH_SRC_ENUM_(n, s) WEBHOOK_##n,
	WEBHOOK_SOURCE_MAP(WH_SRC_ENUM_)
#undef WH_SRC_ENUM_
	    WEBHOOK_SOURCE_COUNT
} webhook_source_t;

/* "generic", "bamboohr", ...: the URL path segment and the events' source. */
const char *webhook_source_name(webhook_source_t s);
/* 0 and *out, or ID_ENOTFOUND for a name that is not a source. */
int webhook_source_parse(const char *name, webhook_source_t *out);

/* The HTTP headers a source's deliveries carry (NULL: none). */
typedef struct webhook_header_names {
	const char *signature;
	const char *timestamp; /* a signed send time: the window applies */
	const char *delivery;  /* a delivery id header */
} webhook_header_names_t;
const webhook_header_names_t *webhook_source_headers(webhook_source_t s);

/*
 * Why a delivery is refused: X(NAME, "error code in the JSON body", HTTP status).
 * The HTTP layer adds its own (size, media type, Kafka) to the same list so
 * that every refusal has one name in the metrics and the docs.
 */
#define WEBHOOK_REFUSAL_MAP(X)                                                           \
	X(NONE, "ok", 200)                                                               \
	X(UNKNOWN_SOURCE, "unknown_source", 404)                                         \
	X(NOT_FOUND, "not_found", 404)                                                   \
	X(METHOD, "method_not_allowed", 405)                                             \
	X(MEDIA_TYPE, "unsupported_media_type", 415)                                     \
	X(TOO_LARGE, "body_too_large", 413)                                              \
	X(MISSING_SIGNATURE, "missing_signature", 401)                                   \
	X(BAD_SIGNATURE, "bad_signature", 401)                                           \
	X(BAD_TIMESTAMP, "bad_timestamp", 401)                                           \
	X(STALE_TIMESTAMP, "timestamp_out_of_window", 401)                               \
	X(MISSING_DELIVERY, "missing_delivery_id", 400)                                  \
	X(MALFORMED_JSON, "malformed_json", 400)                                         \
	X(INVALID_PAYLOAD, "invalid_payload", 422)                                       \
	X(DUPLICATE, "duplicate_delivery", 409)                                          \
	X(ENRICHMENT, "enrichment_unavailable", 422)                                     \
	X(UNAVAILABLE, "unavailable", 503)                                               \
	X(INTERNAL, "internal_error", 500)

typedef enum {
#define WH_REF_ENUM_(n, s, st) WEBHOOK_REFUSE_##n,
	WEBHOOK_REFUSAL_MAP(WH_REF_ENUM_)
#undef WH_REF_ENUM_
	    WEBHOOK_REFUSAL_COUNT
} webhook_refusal_t;

const char *webhook_refusal_name(webhook_refusal_t r); /* "bad_signature" */
int webhook_refusal_status(webhook_refusal_t r);       /* 401 */

/* The secrets of one source: any of them may have signed (key rotation). */
typedef struct webhook_keys {
	const char *const *keys; /* borrowed, each NUL-terminated */
	size_t nkeys;
} webhook_keys_t;

/* Header values of one delivery (NULL when absent); borrowed. */
typedef struct webhook_headers {
	const char *signature;
	const char *timestamp;
	const char *delivery;
} webhook_headers_t;

/*
 * Checks the signature (constant-time over the MAC bytes) and, for sources
 * with a timestamp header, that |now_s - timestamp| <= window_s (window_s <= 0
 * disables the window).  Returns 0, or ID_EINVALID with *why set to
 * MISSING_SIGNATURE, BAD_SIGNATURE, BAD_TIMESTAMP or STALE_TIMESTAMP and err
 * naming the header.  Also ID_EINVALID/MISSING_SIGNATURE when no key is
 * configured.  The signature is checked before anything in the body is read.
 */
int webhook_verify(webhook_source_t src, const webhook_headers_t *h, const void *body,
                   size_t len, const webhook_keys_t *keys, int64_t now_s,
                   int64_t window_s, webhook_refusal_t *why, id_err_t *err);

/* One event of a delivery. */
typedef struct webhook_event {
	employee_event_t ev;
	bool thin; /* ids only: must be enriched before publishing */
} webhook_event_t;

/* What one delivery means. */
typedef struct webhook_delivery {
	char *delivery_id; /* dedupe key (see the header comment) */
	char *kind;        /* the source's event name, e.g. "employee.updated" */
	webhook_event_t *events;
	size_t nevents; /* 0 for a valid delivery of an event type idstream ignores */
} webhook_delivery_t;

void webhook_delivery_init(webhook_delivery_t *d);
void webhook_delivery_fini(webhook_delivery_t *d); /* frees; safe twice */

/*
 * Parses a (verified) body.  delivery_hdr is the delivery header's value for
 * sources that have one.  now_ms stands in for event times the body lacks.
 * On success *out (initialised by the caller) holds the events.  Errors:
 * ID_EPARSE with *why = MALFORMED_JSON (not a JSON object), ID_EINVALID with
 * INVALID_PAYLOAD (missing field, wrong type, unknown event type where the
 * format is ours) or MISSING_DELIVERY; ID_ENOMEM.  err names the field.  On
 * error *out is left empty.
 */
int webhook_parse(webhook_source_t src, const void *body, size_t len,
                  const char *delivery_hdr, int64_t now_ms, webhook_delivery_t *out,
                  webhook_refusal_t *why, id_err_t *err);

/*
 * Fills a thin event's attributes from an HR record (the source's own field
 * names, e.g. BambooHR's {"firstName": ...} or HiBob's nested
 * {"work": {"title": ...}}), mapped as the source's webhook fields are, and
 * clears thin.  A HIRE still without first_name and last_name is
 * ID_EINVALID.  record_json is the raw JSON text of the record.
 */
int webhook_event_enrich(webhook_source_t src, webhook_event_t *we,
                         const void *record_json, size_t len, id_err_t *err);

/*
 * "<32 hex>" = SHA-256(source NUL source_event_id), truncated; malloc'd into
 * *out.  0 or ID_ENOMEM.
 */
int webhook_event_id(const char *source, const char *source_event_id, char **out);

/*
 * Parses a time: integer seconds since the epoch (values above 10^11 are
 * taken as milliseconds), or ISO 8601 "YYYY-MM-DD[(T| )hh:mm[:ss[.frac]]]"
 * with an optional "Z", "±hh:mm" or "±hhmm" (none = UTC).  0 and *ms, or
 * ID_EPARSE.
 */
int webhook_time_parse(const char *s, int64_t *ms);

/*
 * Computes the signature header value a sender would put on body (for
 * tests, tools and docs): e.g. "v1=<hex>" for generic, base64 for hibob.
 * timestamp is used by the sources that sign one.  Malloc'd into *out.
 */
int webhook_sign(webhook_source_t src, const char *key, const char *timestamp,
                 const void *body, size_t len, char **out);

#endif
