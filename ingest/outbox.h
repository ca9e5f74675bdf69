/*
 * outbox.h — verified webhook deliveries that were acknowledged (202) but
 * could not be published yet because the HR API needed to complete them was
 * unreachable.  They are kept in the state store until the server's retry
 * worker has published their events, so an acknowledged delivery is never
 * lost, also across restarts.
 *
 * Key layout (same store as ingest/dedupe.h):
 *
 *   key                     offset  size  content
 *   "o/" seq                0       2     ASCII "o/"
 *                           2       8     sequence number, big-endian (FIFO)
 *   "z/" seq                        (same) deliveries that can never succeed
 *                                         (the HR API refused the record),
 *                                         kept for an operator
 *     value (format 1)      0       1     format version = 1
 *                           1       1     source (webhook_source_t)
 *                           2       8     received at, ms since the epoch, BE
 *                           10      4     delivery header length, BE
 *                                         (0xffffffff = no header)
 *                           14      h     delivery header value
 *                           14+h    4     body length, BE
 *                           18+h    n     raw body as received (signature
 *                                         already verified)
 *
 * An entry is added in the same write batch as its delivery id's dedupe
 * record (dedupe_record), synced, so "acknowledged" and "stored" are one
 * atomic fact.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef IDSTREAM_INGEST_OUTBOX_H
#define IDSTREAM_INGEST_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "ingest/webhook.h"
#include "state/store.h"

typedef struct outbox outbox_t;

typedef struct outbox_entry {
	uint64_t seq;
	webhook_source_t src;
	int64_t received_ms;
	char *delivery_hdr;  /* NULL when the delivery had none */
	unsigned char *body; /* len bytes, NUL-terminated for convenience */
	size_t len;
} outbox_entry_t;

void outbox_entry_fini(outbox_entry_t *e); /* frees; safe twice */

/*
 * Opens the outbox kept in store (borrowed; must outlive it): counts the
 * waiting entries and finds the next sequence number.  Ownership: caller
 * frees with outbox_close(); NULL with err set on failure.
 */
outbox_t *outbox_open(state_store_t *store, id_err_t *err);
void outbox_close(outbox_t *o); /* NULL is a no-op */

/*
 * Adds an entry to batch b (written by the caller, who then calls
 * outbox_added() once the write succeeded).  *seq receives its number.
 */
int outbox_add(outbox_t *o, state_batch_t *b, webhook_source_t src, int64_t received_ms,
               const char *delivery_hdr, const void *body, size_t len, uint64_t *seq,
               id_err_t *err);
void outbox_added(outbox_t *o);

/* The first waiting entry with seq > after: 1 and *out, 0 when none. */
int outbox_next(outbox_t *o, uint64_t after, outbox_entry_t *out, id_err_t *err);

/* Removes a published entry (synced). */
int outbox_remove(outbox_t *o, uint64_t seq, id_err_t *err);

/* Moves an entry that can never be published to the "z/" keys (synced). */
int outbox_park(outbox_t *o, const outbox_entry_t *e, id_err_t *err);

/* Entries waiting. */
size_t outbox_depth(outbox_t *o);

#endif
