/*
 * sink_scim.h — applies desired identities to a SCIM 2.0 service provider
 * (RFC 7643 resources, RFC 7644 protocol).
 *
 * One call per desired identity: find the User (by id from a listing of
 * the Users taken once per process and kept current by the sink's own
 * writes; by externalId (= employee id; fallback userName = uid) with `eq`
 * filters when that listing is unsure) and its manager, read its
 * group memberships, resolve the desired Groups by displayName, diff
 * (sinks/scim_diff.h) and send the plan — one PATCH (or PUT with If-Match)
 * for the User, one request per group change, or all of them in a single
 * /Bulk request when the server offers bulk.  Converging by diff is what
 * makes it idempotent: applying the same desired twice makes no write the
 * second time, and an apply cut short is finished by the next one.
 *
 * Discovery at open (GET /ServiceProviderConfig, /ResourceTypes) decides
 * PATCH vs PUT, bulk, If-Match and whether the User resource type carries
 * the enterprise extension; the options can only turn features off.
 *
 * This is the only code that includes <curl/curl.h>; the handle is opaque.
 * Thread safety: a sink_scim_t belongs to one thread at a time; open one
 * per worker thread.  open and close call curl_global_init/cleanup, which
 * are thread-safe with libcurl >= 7.84 (Debian 12 ships 7.88).  The bearer
 * token is kept in memory only, wiped at close, and never logged.
 */
#ifndef IDSTREAM_SINK_SCIM_H
#define IDSTREAM_SINK_SCIM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "schemas/model.h"
#include "sinks/sink_accounts.h"
#include "sinks/scim_diff.h"
#include "sinks/sink_password.h"

typedef struct sink_scim sink_scim_t;

typedef struct sink_scim_opts {
	const char *base_url; /* "https://scim.example.com/v2" (no trailing '/' needed) */
	const char
	    *bearer_token; /* copied, wiped at close, never logged; NULL/"": none */
	int timeout_ms;    /* per request, connect included; <= 0 means 10000 */
	/* TLS: the peer certificate and host name are verified unless
	 * tls_insecure is set (tests against self-signed servers only). */
	bool tls_insecure;
	const char *ca_file; /* PEM bundle to verify against; NULL: system store */
	/* Restrict what discovery allows (e.g. to exercise the PUT path). */
	bool no_patch;
	bool no_bulk;
	bool no_etag;
	/*
	 * Initial passwords: when set, every User is created with a random
	 * "password" meeting password_policy (RFC 7643 §4.1.1: write-only);
	 * the clear text goes only to this file (one line "employee_id TAB
	 * userName TAB password", flushed before the POST; see
	 * sinks/sink_password.h).  NULL or "": Users get no password.
	 */
	const char *password_file;
	sink_password_policy_t password_policy;
} sink_scim_opts_t;

/*
 * Reads the service provider's configuration and resource types, so a wrong
 * URL, a refused token or an unusable server is reported at start-up:
 * ID_EIO/ID_ETIMEOUT (nothing answers), ID_ECONFIG (token refused, TLS
 * verification failed, no filter support, no User or Group resource type,
 * not a SCIM server), ID_EINVALID (bad options), ID_ENOMEM.
 * Ownership: caller closes with sink_scim_close().  NULL on error (err says
 * which URL and why; the token never appears).
 */
sink_scim_t *sink_scim_open(const sink_scim_opts_t *opts, id_err_t *err);

/* Wipes the token copy and frees.  NULL is a no-op. */
void sink_scim_close(sink_scim_t *s);

/*
 * Makes s use the directory of s0 (employee id → User id, see sink_scim.c),
 * so the handles of one sink list the Users once and see each other's
 * creates and deletes.  Call before either is used by another thread; each
 * is still closed on its own (the directory goes with the last).
 */
void sink_scim_share(sink_scim_t *s, sink_scim_t *s0);

/*
 * Makes the service provider match d and describes what was done in result
 * (fini'd and refilled: target "scim", employee id, version, outcome, ops,
 * error, at).
 *
 * Outcomes: APPLIED (at least one write), NOOP (nothing to change), FAILED
 * (the server refused a request for this identity — 400, 409 — or the input
 * cannot be applied, e.g. "userName x already used by employee Y", in which
 * case nothing was written).  Op names (attribute, old_value, new_value):
 *   create        "id" (new id), then one op per field set (path, value)
 *   patch | put   one per changed field (path, old, new; new absent = removed)
 *   disable, enable   "active", old, new
 *   create_group  group name, -, group id;  group_add  name, -, group id
 *   claim_group   name, old externalId, new externalId
 *   group_remove  name, group id, -;  delete  "id", user id, -
 *   manager_pending  (a note) "manager", -, manager's employee id
 *
 * Returns 0 when result holds the final outcome for this desired version,
 * FAILED included (err is filled too when FAILED).  Returns ID_EIO or
 * ID_ETIMEOUT when the server could not be reached or answered 429/5xx
 * (err carries the Retry-After hint, also in sink_scim_retry_after_ms()),
 * and ID_ECONFIG when it refused the token (401/403): result then says
 * FAILED and the caller should retry the same desired later rather than
 * move on.  ID_EINVALID for NULL arguments.
 */
int sink_scim_apply(sink_scim_t *s, const desired_identity_t *d, sink_result_t *result,
                    id_err_t *err);

/*
 * Computes what sink_scim_apply() would do, without writing.
 * *manager_pending is set when the manager has no User (may be NULL).
 * Returns 0, or the error apply would have returned (nothing is written).
 */
int sink_scim_plan(sink_scim_t *s, const desired_identity_t *d, scim_diff_plan_t *plan,
                   bool *manager_pending, id_err_t *err);

/* Write operations sent so far (each POST, PATCH, PUT, DELETE; inside a
 * /Bulk request each operation counts). */
uint64_t sink_scim_writes(const sink_scim_t *s);
/* HTTP requests sent so far (reads, writes and /Bulk requests). */
uint64_t sink_scim_requests(const sink_scim_t *s);
/* The Retry-After of the last 429/503 answer in ms (0 when none). */
int64_t sink_scim_retry_after_ms(const sink_scim_t *s);

/* What discovery decided (for logs and tests). */
typedef struct sink_scim_features {
	bool patch;      /* PATCH for Users and Groups, else PUT */
	bool bulk;       /* /Bulk for multi-request plans */
	bool etag;       /* If-Match on User writes */
	bool enterprise; /* enterprise extension on User */
	int bulk_max_ops;
	long bulk_max_bytes;
} sink_scim_features_t;

void sink_scim_features(const sink_scim_t *s, sink_scim_features_t *out);

/*
 * Lists every User of the service provider into out (pages of 200, RFC
 * 7644 §3.4.2.4): ref = id, name = userName, employee_id = externalId.
 * 0, or as sink_scim_apply() for a retry later (ID_EIO, ID_ETIMEOUT,
 * ID_ECONFIG).
 */
int sink_scim_accounts(sink_scim_t *s, sink_account_list_t *out, id_err_t *err);

/*
 * Deletes the User id (one no employee owns), after removing it from the
 * Groups that list it as a member when PATCH is supported.  A User already
 * gone is not an error.  0 or as sink_scim_accounts().
 */
int sink_scim_remove(sink_scim_t *s, const char *id, id_err_t *err);

#endif
