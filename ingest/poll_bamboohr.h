/*
 * poll_bamboohr.h — `idstream ingest poll bamboohr`: the BambooHR "changed
 * since" API, polled on a schedule, turned into the same employee events the
 * BambooHR webhooks give (ingest/webhook.h), on <topic.prefix>.hr.events.
 *
 * One pass:
 *   1. catch up: read hr.events from where the last pass stopped to its end
 *      and fold every HR event into a per-employee record (what the log
 *      already says, whoever published it: webhooks, earlier passes, CSV);
 *   2. GET <api>/v1/employees/changed?since=<watermark>  (Basic <key>:x,
 *      Accept: application/json) → {"latest", "employees": {id: {"id",
 *      "action": Inserted|Updated|Deleted, "lastChanged"}}};
 *   3. for each changed employee not already handled at the same lastChanged,
 *      GET <api>/v1/employees/<id>?fields=... (the fields the webhook
 *      enrichment asks for, mapped by webhook_event_enrich());
 *   4. compare with the record (poll_bamboohr_decide): only what differs
 *      from the log is published, so a change the webhook path already
 *      published is not published again;
 *   5. publish all events of the pass in ONE Kafka transaction, then write
 *      the new watermark and the handled (employee, lastChanged) pairs in one
 *      synced batch.
 * Consequences: the HR API or Kafka down → an error naming it, nothing
 * published, the watermark unchanged (the next pass asks again); a crash
 * between the commit and the watermark write makes the next pass see its
 * own events in step 1 and publish nothing twice (failpoint
 * "poll.after_commit", common/failpoint.h, stops a pass right there).
 *
 * Events: source "bamboohr" (as the webhooks), actor "poll:bamboohr",
 * source_event_id "poll:<employee>:<lastChanged ms>", event_id as
 * webhook_event_id(); occurred_at = effective_at = lastChanged.
 *
 * State store (borrowed, e.g. <state.dir>/ingest-poll-bamboohr):
 *
 *   key                      offset  size  content
 *   "w"                      0       1     the watermark
 *     value                  0       8     ms since the epoch, big-endian
 *   "o/" partition           0       2     ASCII "o/"
 *                            2       4     hr.events partition, big-endian
 *     value                  0       8     next offset to read, big-endian
 *   "e/" employee_id         0       2     ASCII "e/", then the id (UTF-8)
 *     value (format 1)       0       1     format version = 1
 *                            1       1     flags: bit 0 = terminated
 *                            2       4     attribute count, big-endian
 *                            6       ...   per attribute, in key order:
 *                                            4 key length, key bytes,
 *                                            1 (1 = value, 0 = null),
 *                                            [4 value length, value bytes]
 *   the "d/" and "x/" keys of ingest/dedupe.h, source "bamboohr-poll", id
 *   "<employee>@<lastChanged ms>": changes already handled.
 * Records and offsets are written in one batch; they are a cache of the log.
 *
 * Thread safety: one pass at a time per poller; the handles it borrows are
 * used only inside poll_bamboohr_run().  The API key is never logged.
 */
#ifndef IDSTREAM_INGEST_POLL_BAMBOOHR_H
#define IDSTREAM_INGEST_POLL_BAMBOOHR_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "schemas/model.h"
#include "state/store.h"

/* ---- the pure part ------------------------------------------------------------ */

/* What the log says about one employee. */
typedef struct poll_employee {
	bool known;       /* an HR event of the employee is in the log */
	bool terminated;  /* the last lifecycle event was a TERMINATE */
	id_attrs_t attrs; /* HR attributes as the events left them */
} poll_employee_t;

void poll_employee_init(poll_employee_t *e);
void poll_employee_fini(poll_employee_t *e);

/*
 * Folds one hr.events record into e: HIRE replaces the attributes, the
 * other HR types merge theirs (a null value clears); TERMINATE/HIRE/REHIRE
 * set the lifecycle; internal events (REEVALUATE, NAME_*, POLICY_*) are
 * ignored.  0 or ID_ENOMEM.
 */
int poll_employee_apply(poll_employee_t *e, const employee_event_t *ev);

/* Record ⇄ bytes (the "e/" value above).  Decode: 0, ID_EPARSE, ID_ENOMEM. */
int poll_employee_encode(const poll_employee_t *e, id_buf_t *out);
int poll_employee_decode(const void *data, size_t len, poll_employee_t *out);

/* One entry of the changed-since answer. */
typedef struct poll_change {
	char *employee_id;
	bool deleted;         /* action "Deleted" */
	int64_t last_changed; /* ms since the epoch */
} poll_change_t;

/*
 * Parses the changed-since answer body.  *out (malloc'd array, free with
 * poll_changes_free(); NULL when empty) is sorted by lastChanged then
 * employee id; *latest is the answer's "latest" or the largest lastChanged
 * (INT64_MIN when neither).  ID_EPARSE naming the field on a malformed body.
 */
int poll_bamboohr_parse_changed(const void *body, size_t len, poll_change_t **out,
                                size_t *n, int64_t *latest, id_err_t *err);
void poll_changes_free(poll_change_t *c, size_t n);

/* What to do about one changed employee. */
typedef enum {
	POLL_NOTHING,  /* the log already says this */
	POLL_IGNORED,  /* inactive and never in the log: nothing to provision */
	POLL_PUBLISH,  /* publish *type with *changed */
	POLL_UNUSABLE, /* a hire without first and last name */
} poll_decision_t;

/*
 * Decides the event for an employee the API reported: deleted (the action
 * was Deleted or the record is gone) or fetched (its mapped attributes,
 * status = "Active"/"Inactive" as BambooHR gives it).  Mapped as the
 * BambooHR webhooks are: unknown → HIRE with every fetched attribute;
 * deleted or status Inactive of an active employee → TERMINATE; status
 * Active of a terminated one → REHIRE; otherwise UPDATE with the attributes
 * that differ from known (a fetched null equals an absent one).  changed
 * (initialised by the caller) receives the attributes.  0 or ID_ENOMEM.
 */
int poll_bamboohr_decide(const poll_employee_t *known, bool deleted,
                         const id_attrs_t *fetched, poll_decision_t *decision,
                         employee_event_type_t *type, id_attrs_t *changed);

/* ---- the poller ---------------------------------------------------------------- */

typedef struct poll_bamboohr poll_bamboohr_t;

typedef struct poll_bamboohr_opts {
	/* https://api.bamboohr.com/api/gateway.php/<company>; copied */
	const char *api_url;
	const char *api_key;      /* copied; wiped on destroy, never logged */
	long api_timeout_ms;      /* bound of one API call; 0 = 10000 */
	int64_t initial_since_ms; /* watermark of the very first pass */
	const char *topic;        /* hr.events; copied */
	rd_kafka_t *producer;     /* borrowed: transactional (its own txn id) */
	rd_kafka_t *consumer;     /* borrowed: no group (assign only) */
	state_store_t *store;     /* borrowed */
	int64_t kafka_timeout_ms; /* catch-up and commit bound; 0 = 30000 */
} poll_bamboohr_opts_t;

typedef struct poll_bamboohr_report {
	int64_t since_ms;      /* the watermark asked with */
	int64_t next_since_ms; /* the watermark after the pass */
	size_t log_events;     /* hr.events records read to catch up */
	size_t changed;        /* employees the API listed */
	size_t already;        /* same lastChanged handled by an earlier pass */
	size_t unchanged;      /* the log already says it (e.g. by webhook) */
	size_t ignored;        /* inactive and never known */
	size_t unusable;       /* hires without names (logged) */
	size_t hires, updates, terminations, rehires;
	size_t published; /* events committed */
} poll_bamboohr_report_t;

/*
 * Ownership: *out is freed with poll_bamboohr_destroy().  ID_EINVALID for
 * missing options, ID_ENOMEM.
 */
int poll_bamboohr_create(const poll_bamboohr_opts_t *o, poll_bamboohr_t **out,
                         id_err_t *err);
void poll_bamboohr_destroy(poll_bamboohr_t *p); /* NULL is a no-op */

/*
 * One pass (see the header comment); rep (may be NULL) is filled as far as
 * it got.  Errors: ID_EIO (the HR API: unreachable, timeout, non-2xx; the
 * message names the URL without secrets), ID_EPARSE (its answer), ID_EKAFKA
 * / ID_ETIMEOUT (catching up or publishing; the transaction was aborted),
 * ID_EFENCED (another poller took over: stop), ID_ESTATE, ID_ENOMEM.  On any
 * error nothing of the pass is published and the watermark is unchanged.
 */
int poll_bamboohr_run(poll_bamboohr_t *p, poll_bamboohr_report_t *rep, id_err_t *err);

/* The stored watermark: 0 and *ms, or ID_ENOTFOUND before the first pass. */
int poll_bamboohr_watermark(poll_bamboohr_t *p, int64_t *ms, id_err_t *err);

/* Formats ms as "YYYY-MM-DDThh:mm:ssZ" (seconds, rounded down). */
void poll_bamboohr_fmt_time(int64_t ms, char *buf, size_t buflen);

#endif
