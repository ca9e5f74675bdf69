/*
 * dedupe.h — the delivery ids the webhook server has already published, with
 * a time to live, so that a replayed or retried delivery publishes nothing.
 *
 * Protocol per delivery:  claim → publish → commit (or release on failure).
 *   - claim refuses an id that is recorded (and not expired) or that another
 *     request is publishing right now (in flight), so two concurrent copies of
 *     one delivery cannot both publish;
 *   - commit records the id only after Kafka acknowledged the events, so a
 *     delivery whose publish failed is accepted when the sender retries;
 *   - a crash between publish and commit lets the retry publish again, with
 *     the same deterministic event ids (consumers drop those duplicates).
 *
 * Records live in a state store shared with the rest of the server (ingest
 * state, see ingest/http_server.h), under these keys:
 *
 *   key                         offset  size  content
 *   "d/" source NUL id          0       2     ASCII "d/"
 *                               2       s     source name, then a NUL byte
 *                               s+3     n     delivery id, no terminator
 *     value                     0       8     expiry, ms since the epoch, BE
 *                               8       8     recorded at, ms, BE
 *   "x/" expiry source NUL id   0       2     ASCII "x/"
 *                               2       8     expiry, ms, big-endian (sorts
 *                                             in time order, for the sweep)
 *                               10      ...   source NUL delivery id
 *     value                     (empty)
 *
 * Both keys of a record are written and deleted in one batch.  Expired
 * records are ignored by claim and removed by dedupe_sweep().
 *
 * Thread safety: all functions may be called from any thread (the in-flight
 * set is guarded by a mutex; the store is thread-safe).
 */
#ifndef IDSTREAM_INGEST_DEDUPE_H
#define IDSTREAM_INGEST_DEDUPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "state/store.h"

typedef struct dedupe dedupe_t;

/*
 * Creates a dedupe set over store (borrowed: it must outlive the set).
 * ttl_ms > 0 is how long a recorded id is remembered; it should exceed the
 * senders' retry horizon (Personio retries for 3 days).  sync: commits wait
 * for the write-ahead log to reach the disk.
 * Ownership: caller frees with dedupe_destroy(); NULL on ENOMEM.
 */
dedupe_t *dedupe_create(state_store_t *store, int64_t ttl_ms, bool sync);
void dedupe_destroy(dedupe_t *d); /* NULL is a no-op */

/*
 * Claims (source, id) for one delivery.  0: claimed (the caller must later
 * commit or release).  ID_ECONFLICT: already recorded (*in_flight false) or
 * being published by another request (*in_flight true); err says which and
 * when it was recorded.  ID_ESTATE on a read error.
 */
int dedupe_claim(dedupe_t *d, const char *source, const char *id, int64_t now_ms,
                 bool *in_flight, id_err_t *err);

/* Records a claimed id (expiry now + ttl) and ends the claim. */
int dedupe_commit(dedupe_t *d, const char *source, const char *id, int64_t now_ms,
                  id_err_t *err);

/*
 * Adds the record of a claimed id to the caller's batch b, to be written
 * atomically with other state (the outbox); after writing b the caller ends
 * the claim with dedupe_release().
 */
int dedupe_record(dedupe_t *d, state_batch_t *b, const char *source, const char *id,
                  int64_t now_ms, id_err_t *err);

/* Ends a claim without recording the id (the publish failed). */
void dedupe_release(dedupe_t *d, const char *source, const char *id);

/*
 * Deletes up to max records that expired before now_ms; *removed (may be
 * NULL) says how many.  Cheap when nothing expired: the "x/" index is read
 * from its start only until the first unexpired entry.
 */
int dedupe_sweep(dedupe_t *d, int64_t now_ms, size_t max, size_t *removed, id_err_t *err);

/* Number of claims currently in flight. */
size_t dedupe_in_flight(dedupe_t *d);

#endif
