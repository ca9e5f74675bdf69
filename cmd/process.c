/*
 * process.c — `idstream process`: the I/O shell around the pure fold.
 *
 * Consumes <prefix>.hr.events in consumer group <prefix>.processor
 * (read_committed), folds each event into the employee's record, and
 * produces changed desired identities to <prefix>.identity.desired inside a
 * Kafka transaction that also carries the consumed offsets (EOS v2).  Only
 * after the commit are the touched records and the next offset of each
 * partition written to RocksDB in one WriteBatch.
 *
 * Policies: each partition runs the mapping its own log selects.  A
 * POLICY_ACTIVATED marker (written to every partition by `idstream policy
 * deploy`, carrying the Lua source) switches the partition's mapping
 * (processors/policy_registry.h) and re-evaluates every employee of the
 * partition with it, now = the marker's effective time, in employee id
 * order; those whose target-visible identity changes get a new version in
 * the same transaction as the marker's offset.  A marker that cannot be
 * used is refused and logged; the partition keeps its mapping.  The active
 * policy is state: it is written ('P' key) in the WriteBatch that moves
 * the partition's offset past the marker, and restored on assignment
 * before any event of the partition is folded, so a restart or a rebalance
 * resumes under the policy of the stored offset.  Replaying a partition
 * from offset 0 meets the same markers at the same offsets and so
 * reproduces every switch.
 *
 * Crash recovery: the stored offset S (RocksDB) is never ahead of the offset
 * C committed in Kafka.  On assignment the partition is read from S; events
 * in [S, C) were already folded and produced by a committed transaction, so
 * they are re-derived into state without producing anything ("replay"),
 * markers included.  From C on, processing is normal.  A lost state folder
 * means S = 0: the whole partition is replayed, then processing resumes at
 * C.  An aborted transaction rewinds the partitions to S and restores the
 * policy stored with S.
 *
 * State key layout (state.dir/processor):
 *
 *   | key                                      | value                    |
 *   |------------------------------------------|--------------------------|
 *   | 'R' be32(partition) employee_id          | employee_record bytes    |
 *   | 'O' be32(partition)                      | be64(next input offset)  |
 *   | 'P' be32(partition)                      | the partition's policy   |
 *   | 'T' be32(partition) be64(due) employee_id| empty: a timer            |
 *
 * 'P' is absent while the partition runs the built-in mapping.  Its value:
 *
 *   | offset  | size | content                        |
 *   |---------|------|--------------------------------|
 *   | 0       | 1    | format = 0x01                  |
 *   | 1       | 4    | be32 n: length of the name     |
 *   | 5       | n    | policy name (for errors)       |
 *   | 5+n     | 4    | be32 s: length of the source   |
 *   | 9+n     | s    | the policy's Lua source        |
 *
 * Records are keyed by partition so one partition's state can be dropped and
 * rebuilt on its own when partitions move between processes.
 *
 * Timers: the fold never reads the clock; a record whose state changes at
 * a later instant (a start date, a termination's effective time, the end of
 * retention, a future-dated change) carries timer_at, and the 'T' index
 * below lists every record's timer of the partition in due order (updated
 * in the same WriteBatch as the record).  Every processor.timer_check_ms the
 * loop reads the wall clock — the only place the processor does — and, for
 * each due timer of an assigned partition, produces a REEVALUATE event
 * (occurred_at = effective_at = the due instant, deterministic event id) to
 * the employee's own partition of hr.events, inside the open transaction.
 * The fold handles it with now = the due instant, so a replay of the log
 * reproduces every timed decision.  A REEVALUATE produced twice (after a
 * restart, before the first was folded) changes nothing the second time.
 *
 * Unique names: when the policy gives candidate lists, the fold reports
 * the claims to make (processors/fold.h); each is produced, keyed by
 * name_key(), to <prefix>.names.claims inside the open transaction, like a
 * desired version — and, like one, not when replaying: a claim in [S, C)
 * was produced by a committed transaction already.  The names arbiter's
 * answers come back as events on the employee's partition.  With
 * `run --until-idle`, the processor stops only once its claims are answered
 * and the answers folded (cmd/names_sync.h).
 *
 * Refused input: an event the fold refuses (never hired, an unknown type, a
 * policy or lifecycle error for this employee) or one that cannot be
 * decoded is logged, counted, and published as a SinkResult of target
 * "processor" on <prefix>.sink.results — outcome HELD when the employee's
 * identity is held back by a policy/lifecycle error, FAILED when the event
 * itself is refused — in the same transaction, so `idstream history` shows
 * it.  The employee keeps the version it had; other employees go on.
 *
 * Commits overlap folding: when a batch is full, its WriteBatch is built
 * and a commit thread runs the Kafka commit and then writes it, while the
 * loop goes on folding the next batch.  That batch's output waits in a
 * queue (copied) until the commit is done and the next transaction begins
 * — librdkafka has one transaction at a time — so nothing of it can land
 * in the transaction being committed.  Records folded meanwhile stay in
 * the record cache, which is not trimmed until the commit is settled, so
 * no stale copy is read from RocksDB.  Should the commit need an abort,
 * the batch folded behind it is dropped with it and every partition
 * rewinds to its stored offset.  Rebalances, timer checks and stopping
 * first wait for the commit in flight.
 *
 * Threading: one thread runs the loop; the rebalance callback runs inside
 * rd_kafka_consumer_poll() on that same thread.  The commit thread touches
 * only the producer, the WriteBatch and the delivery counters, which the
 * loop leaves alone until it has joined it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "cmd/cli.h"
#include "cmd/names_sync.h"
#include "common/buf.h"
#include "common/failpoint.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/tz.h"
#include "processors/employee_record.h"
#include "processors/fold.h"
#include "processors/mapping.h"
#include "processors/name_arbiter.h"
#include "processors/policy_registry.h"
#include "schemas/codec.h"
#include "state/store.h"

#define PROC_MAX_PARTITIONS STAGE_MAX_PARTITIONS

/* The fetch waker (proc_waker()) looks every PROC_WAKE_MS and wakes the
 * fetcher when the prefetch has halved since its peak (of at least
 * PROC_WAKE_MIN messages: an idle consumer is left alone). */
#define PROC_WAKE_MS  10
#define PROC_WAKE_MIN 64
/* Partitions the waker cycles through (one request each time). */
#define PROC_WAKE_PARTS 64

/* The policy target whose output is the desired identity. */
#define PROC_POLICY_TARGET "ldap"

/* SinkResult.target of refused events and held identities. */
#define PROC_RESULT_TARGET "processor"

/* Source of the REEVALUATE events the timers produce. */
#define PROC_TIMER_SOURCE "idstream-timer"

/* Most REEVALUATE events published per timer check. */
#define PROC_TIMERS_PER_CHECK 10000

/* How long `run --until-idle` waits, idle, for answers to name claims. */
#define PROC_NAMES_WAIT_MS 120000

/* Format byte of the 'P' value (see the key layout above). */
#define PROC_POLICY_FORMAT 0x01

typedef struct proc_partition {
	int assigned;
	id_kafka_end_t end;   /* at the end of the partition? (common/kafka.h) */
	int64_t replay_until; /* offsets below it are replayed without output */
	int64_t next_offset;  /* next offset to process (in the open txn) */
	int64_t stored;       /* next offset as of the last WriteBatch */
	bool policy_dirty;    /* the policy changed in the open transaction */
} proc_partition_t;

/*
 * An employee's record, encoded, in the record cache (the overlay): right
 * after each fold, while the record is still in the CPU cache, so that
 * the decoded form (hundreds of small allocations) lives for one event
 * only and a commit writes bytes that are ready.  A dirty entry is the
 * open transaction's copy, newer than the state store; a clean one holds
 * the store's bytes, kept after the commit that wrote them so that the
 * next event of the employee reads no RocksDB (see proc_cache_trim()).
 */
typedef struct proc_overlay_rec {
	id_buf_t bytes; /* employee_record_encode() of the record */
	char *employee_id;
	int32_t partition;
	int64_t stored_timer; /* timer_at in the state store (0: none) */
	int64_t timer_at;     /* timer_at of bytes */
	bool dirty;           /* changed in the open transaction */
	bool used;            /* read since the last trim */
} proc_overlay_rec_t;

/* Overlay entries kept for reuse, with their buffers, after a commit. */
#define PROC_OVERLAY_POOL_MAX 4096

/*
 * The overlay keeps processor.cache_mb of clean records between
 * transactions (64 MB by default: ~50,000 employees of the default
 * mapping, format-5 records being ~0.8 KB); the state store's own block
 * cache is small in exchange (PROC_BLOCK_CACHE_BYTES): it holds index and
 * filter blocks and the records of employees the overlay does not.
 */
#define PROC_BLOCK_CACHE_BYTES ((size_t)8 << 20)
/* Two memtables of 8 MB: a transaction's records (5,000 of about a KB at
 * processor.batch_max = 5000) fit in one, so writing them does not wait
 * for the flush of the last. */
#define PROC_WRITE_BUFFER_BYTES ((size_t)16 << 20)
/* Accounted per entry beside its bytes: the entry, its key, its slot. */
#define PROC_CACHE_ENTRY_COST 96

/* Size of the chunks desired identities are produced from. */
#define PROC_CHUNK_BYTES ((size_t)1 << 20)

/*
 * Memory the open transaction's desired identities are produced from
 * without a copy (librdkafka reads it until each message's delivery
 * report): chunks filled in turn, reused once every report is in.
 */
typedef struct proc_chunk {
	char *data;
	size_t len, cap;
} proc_chunk_t;

/*
 * A message produced while the previous batch's commit is in flight, kept
 * until the next transaction begins: key and value in one allocation
 * (value first), handed to librdkafka with RD_KAFKA_MSG_F_FREE.
 */
typedef struct proc_queued {
	const char *topic; /* one of proc_t's topic names */
	int32_t partition; /* RD_KAFKA_PARTITION_UA: by key */
	char *data;
	size_t vlen, klen;
	id_kafka_delivery_t *dr; /* NULL: not tracked */
	const char *what;        /* for errors */
} proc_queued_t;

/* Messages queued behind a commit before the loop waits for the commit. */
#define PROC_QUEUE_MAX 200000

/*
 * The fold threads of one `idstream process` (processor.threads): with
 * --until-idle a thread that has caught up waits until every thread has,
 * so that none leaves the group — moving its partitions to the others —
 * while they still work.
 */
typedef struct proc_group {
	int n;
	atomic_int idle;  /* threads caught up */
	atomic_int owned; /* partitions assigned to the threads */
	atomic_int done;  /* all caught up at once: every thread stops */
	/* CLOCK_MONOTONIC ms of the last assignment or revocation */
	atomic_llong changed_ms;
	atomic_int nparts; /* partitions of hr.events */
	double wait_ms;    /* how long stopping waits for the rest of them */
} proc_group_t;

static long long proc_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counts the threads' partitions as the group assigns or revokes them. */
static void proc_group_owned(proc_group_t *g, int delta)
{
	if (g == NULL)
		return;
	atomic_fetch_add(&g->owned, delta);
	atomic_store(&g->changed_ms, proc_mono_ms());
}

typedef struct proc {
	const id_config_t *cfg;
	rd_kafka_t *consumer;
	rd_kafka_t *producer;
	state_store_t *db;
	codec_t *codec;
	policy_registry_t *registry; /* the mapping of each partition */
	char in_topic[256];
	char out_topic[256];
	char results_topic[256];
	char claims_topic[256];
	/* The claims of the event being folded, and delivery tracking of the
	 * claims produced (offsets for `run --until-idle`). */
	fold_claims_t claims;
	id_kafka_delivery_t claims_delivery;
	int64_t claims_next[PROC_MAX_PARTITIONS];
	names_sync_t *names; /* NULL unless run by `run` next to the arbiter */
	long claims_made;
	/* REEVALUATE events produced and not yet folded (event id → 1), so a
	 * due timer is published once per process; cleared on abort. */
	id_hmap_t inflight;
	struct timespec timers_checked;
	double timer_check_ms;
	proc_partition_t parts[PROC_MAX_PARTITIONS];
	/* employee id → proc_overlay_rec_t*: the record cache, with the open
	 * transaction's records (dirty) */
	id_hmap_t overlay;
	size_t cache_bytes;         /* accounted size of the overlay's entries */
	proc_overlay_rec_t **dirty; /* the overlay's dirty entries */
	size_t ndirty, capdirty;
	bool txn_open; /* a batch of input is open (see begun) */
	bool begun;    /* its Kafka transaction is begun */
	long txn_events;
	struct timespec txn_started;
	/* The commit in flight: a thread commits the last batch while the loop
	 * folds the next one, whose output waits in the queue below until the
	 * commit is done and its own transaction begins. */
	pthread_t cthread;   /* the committer, started on first use */
	bool cstarted;       /* cthread runs */
	pthread_mutex_t cmu; /* guards cgo, cquit; with ccond */
	pthread_cond_t ccond;
	bool cgo;               /* a commit for cthread */
	bool cquit;             /* cthread must end */
	bool committing;        /* a commit is in flight (not settled yet) */
	bool cthreaded;         /* ... on cthread */
	atomic_int cdone;       /* the commit is done */
	rd_kafka_error_t *cerr; /* what the commit returned */
	int cwrite_rc;          /* then the WriteBatch */
	id_err_t cwrite_err;
	rd_kafka_topic_partition_list_t *coffs; /* the batch's input offsets */
	rd_kafka_consumer_group_metadata_t *ccgmd;
	int64_t cnext[PROC_MAX_PARTITIONS]; /* next offsets it stores (-1: none) */
	bool cpolicy[PROC_MAX_PARTITIONS];  /* it stores the partition's policy */
	proc_queued_t *queue;               /* output of the next batch */
	size_t nqueue, capqueue;
	/* The fetch waker (proc_waker()): its thread, the consumer queue it
	 * measures, and up to PROC_WAKE_PARTS assigned partitions it asks
	 * about (written by the loop's rebalance callback). */
	pthread_t wthread;
	bool wstarted;
	atomic_int wquit;
	rd_kafka_queue_t *wqueue;
	atomic_int wparts[PROC_WAKE_PARTS];
	atomic_int wnparts;
	double commit_wait_ms; /* the loop waited this long for commits */
	double input_wait_ms;  /* and this long for input */
	id_kafka_delivery_t delivery;
	processor_stats_t *stats;
	/* Reused for every event / commit, so the hot path allocates none of
	 * them: the decoded event, the stored record's bytes, the records
	 * encoded for the WriteBatch, and the WriteBatch itself. */
	employee_event_t ev;
	id_buf_t stored;
	id_buf_t val;
	state_batch_t *batch;
	id_buf_t buf;
	employee_record_t scratch; /* the record being folded or re-evaluated */
	proc_overlay_rec_t **pool; /* free overlay entries */
	size_t npool;
	proc_chunk_t *chunks; /* payloads of desired identities in flight */
	size_t nchunks, chunk;
	int fatal; /* set when the loop must stop with an error */
	id_err_t fatal_err;
	bool shared_db;      /* db belongs to cmd_process (processor.threads) */
	proc_group_t *group; /* NULL: the only fold thread */
	bool idle_counted;   /* counted in group->idle */
	bool has_assignment; /* assigned (maybe no partitions), not revoked */
	size_t cache_budget; /* processor.cache_mb, in bytes */
} proc_t;

static double ms_between(const struct timespec *since, const struct timespec *now)
{
	return (double)(now->tv_sec - since->tv_sec) * 1e3 +
	       (double)(now->tv_nsec - since->tv_nsec) / 1e6;
}

static double elapsed_ms(const struct timespec *since)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - since->tv_sec) * 1e3 +
	       (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

static void key_offset(unsigned char k[5], int32_t partition)
{
	k[0] = 'O';
	state_be32_put(k + 1, (uint32_t)partition);
}

static void key_policy(unsigned char k[5], int32_t partition)
{
	k[0] = 'P';
	state_be32_put(k + 1, (uint32_t)partition);
}

/*
 * librdkafka settings the processor's throughput and memory bound rest on,
 * used unless the deployment sets the key itself (kafka.<key>).
 *
 * Consumer: prefetch is bounded to 8 MB, fetched in requests of up to 4 MB
 * (librdkafka's defaults, a 64 MB queue and 50 MB fetches, would keep up to
 * ~100 MB of fetched messages resident; the fold, not the fetch, is what
 * limits the rate).
 * Producer: desired identities are batched per partition for up to 20 ms or
 * 10,000 messages and compressed with LZ4 (Avro records of mostly repeated
 * names and rules shrink several times, which the broker writes and every
 * sink reads).  A transaction is bounded by processor.batch_max, so the
 * producer queue is too.
 */
/* 4 MB.  Once the prefetch is over its bounds (this one or
 * queued.min.messages), librdkafka 2.0.2's fetcher decides again only when
 * its broker thread wakes up, which with nothing to do is a second later
 * (fetch.error.backoff.ms does not change it: debug=fetch shows "not
 * fetchable: ... exceeded", then the next fetch 1.0 s later).  Without help
 * the prefetch must hold a second of input (16 MB here; 4 MB halved the
 * rate), and each accounted byte costs about four of RSS (message headers).
 * The fetch waker (proc_waker()) wakes it instead once the prefetch runs
 * low. */
#define PROC_PREFETCH_KBYTES 4096
static const char *const proc_consumer_kafka[][2] = {
    {"queued.max.messages.kbytes", "4096"}, /* PROC_PREFETCH_KBYTES */
    {"fetch.max.bytes", "4194304"},
    {"fetch.wait.max.ms", "100"},
};
static const char *const proc_producer_kafka[][2] = {
    {"linger.ms", "20"},
    {"batch.num.messages", "10000"},
    {"batch.size", "4194304"},
    {"compression.type", "lz4"},
    /* Back-to-back transactions meet CONCURRENT_TRANSACTIONS from the
     * coordinator; librdkafka's 100 ms default retry would add that much
     * latency to the next commit. */
    {"retry.backoff.ms", "10"},
};

/*
 * A configuration holding cfg's kafka.* settings plus the processor's
 * defaults above for keys cfg leaves unset, so each client gets its own
 * settings (a consumer property on a producer only makes librdkafka warn).
 * Only kafka.* is copied: that is all id_kafka_*_create() read.
 * Ownership: caller frees with id_config_destroy(); NULL with err set.
 */
static id_config_t *proc_kafka_config(const id_config_t *cfg,
                                      const char *const (*defs)[2], size_t ndefs,
                                      id_err_t *err)
{
	id_config_t *c = id_config_create();
	const id_attrs_t *user = id_config_kafka(cfg);
	char key[300];
	if (c == NULL) {
		id_err_set(err, ID_ENOMEM, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < user->len; i++) {
		snprintf(key, sizeof(key), "kafka.%s", user->items[i].key);
		if (id_config_set(c, key,
		                  user->items[i].value ? user->items[i].value : "",
		                  err) != 0)
			goto fail;
	}
	for (size_t i = 0; i < ndefs; i++) {
		if (id_attrs_has(user, defs[i][0]))
			continue;
		snprintf(key, sizeof(key), "kafka.%s", defs[i][0]);
		if (id_config_set(c, key, defs[i][1], err) != 0)
			goto fail;
	}
	return c;
fail:
	id_config_destroy(c);
	return NULL;
}

static int key_record(id_buf_t *b, int32_t partition, const char *employee_id)
{
	unsigned char p[5];
	p[0] = 'R';
	state_be32_put(p + 1, (uint32_t)partition);
	id_buf_reset(b);
	if (id_buf_append(b, p, 5) != 0 || id_buf_append_str(b, employee_id) != 0)
		return ID_ENOMEM;
	return 0;
}

static int key_timer(id_buf_t *b, int32_t partition, int64_t due, const char *employee_id)
{
	unsigned char p[13];
	p[0] = 'T';
	state_be32_put(p + 1, (uint32_t)partition);
	state_be64_put(p + 5, (uint64_t)due);
	id_buf_reset(b);
	if (id_buf_append(b, p, 13) != 0 || id_buf_append_str(b, employee_id) != 0)
		return ID_ENOMEM;
	return 0;
}

/* Stored next offset of a partition, or -1 when the state has none. */
static int64_t proc_stored_offset(proc_t *p, int32_t partition)
{
	unsigned char k[5];
	void *v = NULL;
	size_t vl = 0;
	key_offset(k, partition);
	int64_t off = -1;
	if (state_store_get(p->db, k, 5, &v, &vl, NULL) == 0 && vl == 8)
		off = (int64_t)state_be64_get(v);
	free(v);
	return off;
}

/* The 'P' value of the policy partition runs (see the key layout). */
static int proc_policy_encode(const char *name, const char *src, size_t len,
                              id_buf_t *out)
{
	size_t nl = name ? strlen(name) : 0;
	id_buf_reset(out);
	if (id_buf_append_u8(out, PROC_POLICY_FORMAT) != 0 ||
	    id_buf_append_be32(out, (uint32_t)nl) != 0 ||
	    id_buf_append(out, name ? name : "", nl) != 0 ||
	    id_buf_append_be32(out, (uint32_t)len) != 0 ||
	    id_buf_append(out, src, len) != 0)
		return ID_ENOMEM;
	return 0;
}

/*
 * Makes the registry run, for partition, the policy the state store holds
 * for it (the built-in mapping when none): the policy as of the stored
 * offset, so that processing resumes under the mapping that was active
 * there.  A stored policy that no longer loads is an error: going on with
 * another mapping would silently produce different identities.
 */
static int proc_policy_restore(proc_t *p, int32_t partition, id_err_t *err)
{
	unsigned char k[5];
	void *v = NULL;
	size_t vl = 0;
	key_policy(k, partition);
	int rc = state_store_get(p->db, k, 5, &v, &vl, err);
	if (rc == ID_ENOTFOUND) {
		policy_registry_reset(p->registry, partition);
		return 0;
	}
	if (rc != 0)
		return rc;
	const unsigned char *b = v;
	uint32_t nl = 0, sl = 0;
	if (vl < 9 || b[0] != PROC_POLICY_FORMAT ||
	    (nl = state_be32_get(b + 1)) > vl - 9 ||
	    (sl = state_be32_get(b + 5 + nl)) != vl - 9 - nl) {
		free(v);
		return id_err_set(
		    err, ID_EPARSE,
		    "state %s: partition %d: the stored policy is malformed "
		    "(%zu bytes)",
		    state_store_path(p->db), (int)partition, vl);
	}
	char *name = strndup((const char *)b + 5, nl);
	if (name == NULL) {
		free(v);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	rc = policy_registry_set(p->registry, partition, name, (const char *)b + 9 + nl,
	                         sl, err);
	if (rc != 0)
		id_err_wrap(err, "partition %d: restoring its stored policy",
		            (int)partition);
	else
		id_log_info("processor", "partition %d: policy %s restored from state",
		            (int)partition,
		            policy_registry_version(p->registry, partition));
	free(name);
	free(v);
	return rc;
}

/* Loads the employee's record into rec: the open transaction's copy first
 * (*entry is then its overlay entry, else NULL), then RocksDB, else a new
 * empty record. */
static int proc_load(proc_t *p, int32_t partition, const char *employee_id,
                     employee_record_t *rec, proc_overlay_rec_t **entry, id_err_t *err)
{
	proc_overlay_rec_t *o = id_hmap_get(&p->overlay, employee_id);
	const id_buf_t *src = &p->stored;
	int rc;
	*entry = o;
	if (o != NULL) {
		src = &o->bytes;
		o->used = true;
	} else {
		if (key_record(&p->buf, partition, employee_id) != 0)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		rc = state_store_get_buf(p->db, p->buf.data, p->buf.len, &p->stored, err);
		if (rc == ID_ENOTFOUND) {
			employee_record_fini(rec);
			return 0;
		}
		if (rc != 0)
			return rc;
	}
	rc = employee_record_decode(rec, src->data, src->len, err);
	if (rc != 0)
		id_err_wrap(err, "state of employee %s (partition %d)", employee_id,
		            partition);
	return rc;
}

/* Keeps rec as the open transaction's copy of the employee: into entry
 * when the overlay has one, else into a new entry whose stored timer is
 * stored_timer. */
static int proc_overlay_keep(proc_t *p, int32_t partition, const employee_record_t *rec,
                             proc_overlay_rec_t *entry, const char *employee_id,
                             int64_t stored_timer, id_err_t *err)
{
	proc_overlay_rec_t *o = entry;
	if (o == NULL) {
		if (p->npool > 0) {
			o = p->pool[--p->npool];
		} else if ((o = malloc(sizeof(*o))) != NULL) {
			id_buf_init(&o->bytes);
		} else {
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
		o->partition = partition;
		o->stored_timer = stored_timer;
		o->used = true;
		o->dirty = false;
		id_buf_reset(&o->bytes);
		if ((o->employee_id = strdup(employee_id)) == NULL ||
		    id_hmap_put(&p->overlay, employee_id, o) != 0) {
			free(o->employee_id);
			id_buf_fini(&o->bytes);
			free(o);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
		p->cache_bytes += PROC_CACHE_ENTRY_COST + 2 * strlen(employee_id);
	} else {
		p->cache_bytes -= o->bytes.cap;
	}
	if (!o->dirty) {
		if (p->ndirty == p->capdirty) {
			size_t ncap = p->capdirty ? 2 * p->capdirty : 1024;
			proc_overlay_rec_t **n = realloc(p->dirty, ncap * sizeof(*n));
			if (n == NULL)
				return id_err_set(err, ID_ENOMEM, "out of memory");
			p->dirty = n;
			p->capdirty = ncap;
		}
		p->dirty[p->ndirty++] = o;
		o->dirty = true;
	}
	id_buf_reset(&o->bytes);
	o->timer_at = rec->timer_at;
	int rc = employee_record_encode(rec, &o->bytes, err);
	p->cache_bytes += o->bytes.cap;
	return rc;
}

static void proc_entry_release(proc_t *p, proc_overlay_rec_t *o)
{
	free(o->employee_id);
	o->employee_id = NULL;
	if (p->pool != NULL && p->npool < PROC_OVERLAY_POOL_MAX) {
		p->pool[p->npool++] = o;
	} else {
		id_buf_fini(&o->bytes);
		free(o);
	}
}

/*
 * Keeps the record cache within processor.cache_mb, after a commit (the
 * entries of the batch folded behind it, dirty, always stay): when it is over, the
 * entries not read since the last trim go, then others until a quarter is free (a clock:
 * employees read again soon stay).  The map is rebuilt from the survivors.
 */
static void proc_cache_trim(proc_t *p)
{
	/* Fold threads split the budget as they split the employees. */
	size_t budget = p->cache_budget / (size_t)(p->group != NULL ? p->group->n : 1);
	if (p->cache_bytes <= budget)
		return;
	id_hmap_t keep;
	size_t kept = 0, limit = budget / 4 * 3;
	id_hmap_init(&keep);
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < p->overlay.cap; i++) {
			proc_overlay_rec_t *o = p->overlay.slots[i].value;
			const char *key = p->overlay.slots[i].key;
			if (key == NULL || o == NULL ||
			    (pass == 0 && !o->used && !o->dirty))
				continue;
			size_t cost =
			    PROC_CACHE_ENTRY_COST + 2 * strlen(key) + o->bytes.cap;
			p->overlay.slots[i].value = NULL;
			/* Records of the batch folded behind a commit are dirty:
			 * kept whatever their cost (p->dirty points at them). */
			if ((o->dirty || kept + cost <= limit) &&
			    id_hmap_put(&keep, key, o) == 0) {
				o->used = false;
				kept += cost;
			} else if (o->dirty) {
				/* Out of memory: the loop stops with the error; the
				 * entry is left to the process's end. */
				if (!p->fatal) {
					p->fatal = 1;
					id_err_set(
					    &p->fatal_err, ID_ENOMEM,
					    "out of memory trimming the record cache");
				}
			} else {
				proc_entry_release(p, o);
			}
		}
	id_hmap_fini(&p->overlay);
	p->overlay = keep;
	p->cache_bytes = kept;
}

/* Empties the record cache, the open transaction's records included. */
static void proc_overlay_drop(proc_t *p)
{
	for (size_t i = 0; i < p->overlay.cap; i++) {
		proc_overlay_rec_t *o = p->overlay.slots[i].value;
		if (p->overlay.slots[i].key == NULL || o == NULL)
			continue;
		proc_entry_release(p, o);
	}
	id_hmap_clear(&p->overlay);
	p->cache_bytes = 0;
	p->ndirty = 0;
}

/* State key order: partition, then employee id bytewise. */
static int cmp_dirty(const void *a, const void *b)
{
	const proc_overlay_rec_t *x = *(const proc_overlay_rec_t *const *)a;
	const proc_overlay_rec_t *y = *(const proc_overlay_rec_t *const *)b;
	if (x->partition != y->partition)
		return x->partition < y->partition ? -1 : 1;
	return strcmp(x->employee_id, y->employee_id);
}

/*
 * Puts the overlay's dirty records and every partition's next offset into
 * the WriteBatch of the commit about to start (p->batch, written by
 * proc_commit_run() once Kafka has the transaction), and remembers what it
 * stores (p->cnext, p->cpolicy).  The records count as clean from here on:
 * should the commit fail, the whole overlay is dropped.
 */
static int proc_persist_prepare(proc_t *p, id_err_t *err)
{
	int rc = 0;
	state_batch_t *b = p->batch;
	id_buf_t *val = &p->val;
	state_batch_clear(b);
	/* In key order: the memtable's skip list inserts sorted keys fastest
	 * (each insert starts from where the last one ended). */
	qsort(p->dirty, p->ndirty, sizeof(*p->dirty), cmp_dirty);
	for (size_t i = 0; i < p->ndirty; i++) {
		proc_overlay_rec_t *o = p->dirty[i];
		const char *eid = o->employee_id;
		if ((rc = key_record(&p->buf, o->partition, eid)) != 0)
			goto fail;
		state_batch_put(b, p->buf.data, p->buf.len, o->bytes.data, o->bytes.len);
		if (o->timer_at == o->stored_timer)
			continue;
		if (o->stored_timer > 0) {
			if ((rc = key_timer(&p->buf, o->partition, o->stored_timer,
			                    eid)) != 0)
				goto fail;
			state_batch_delete(b, p->buf.data, p->buf.len);
		}
		if (o->timer_at > 0) {
			if ((rc = key_timer(&p->buf, o->partition, o->timer_at, eid)) !=
			    0)
				goto fail;
			state_batch_put(b, p->buf.data, p->buf.len, "", 0);
		}
	}
	for (int32_t i = 0; i < PROC_MAX_PARTITIONS; i++) {
		proc_partition_t *pp = &p->parts[i];
		p->cnext[i] = -1;
		p->cpolicy[i] = false;
		if (!pp->assigned || pp->next_offset == pp->stored || pp->next_offset < 0)
			continue;
		unsigned char k[5], v[8];
		key_offset(k, i);
		state_be64_put(v, (uint64_t)pp->next_offset);
		state_batch_put(b, k, 5, v, 8);
		p->cnext[i] = pp->next_offset;
		if (!pp->policy_dirty)
			continue;
		/* The partition's policy, in the batch that moves its offset
		 * past the activation marker. */
		const char *name, *src;
		size_t len;
		policy_registry_active(p->registry, i, &name, &src, &len);
		key_policy(k, i);
		if (src == NULL) {
			state_batch_delete(b, k, 5);
		} else {
			if ((rc = proc_policy_encode(name, src, len, val)) != 0)
				goto fail;
			state_batch_put(b, k, 5, val->data, val->len);
		}
		p->cpolicy[i] = true;
		pp->policy_dirty = false;
	}
	for (size_t i = 0; i < p->ndirty; i++) {
		p->dirty[i]->dirty = false;
		p->dirty[i]->stored_timer = p->dirty[i]->timer_at;
	}
	p->ndirty = 0;
	return 0;
fail:
	/* Nothing has changed hands yet: the records are still dirty. */
	for (int32_t i = 0; i < PROC_MAX_PARTITIONS; i++)
		if (p->cpolicy[i]) {
			p->parts[i].policy_dirty = true;
			p->cpolicy[i] = false;
		}
	state_batch_clear(b);
	return id_err_set(err, rc, "out of memory");
}

/* Rewinds every assigned partition to its stored offset after an aborted
 * transaction, so the aborted events are processed again. */
static void proc_rewind(proc_t *p)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	for (int32_t i = 0; i < PROC_MAX_PARTITIONS; i++) {
		proc_partition_t *pp = &p->parts[i];
		bool policy_changed = pp->policy_dirty || p->cpolicy[i];
		p->cpolicy[i] = false;
		if (!pp->assigned || pp->stored < 0)
			continue;
		rd_kafka_topic_partition_list_add(l, p->in_topic, i)->offset = pp->stored;
		pp->next_offset = pp->stored;
		id_kafka_end_clear(&pp->end);
		if (policy_changed) {
			/* The aborted events included an activation: back to the
			 * policy of the stored offset. */
			id_err_t perr = {0};
			pp->policy_dirty = false;
			if (proc_policy_restore(p, i, &perr) != 0 && !p->fatal) {
				p->fatal = 1;
				p->fatal_err = perr;
			}
		}
	}
	rd_kafka_error_t *e = rd_kafka_seek_partitions(p->consumer, l, 10000);
	if (e != NULL) {
		id_log_error("processor", "rewinding after abort: %s",
		             rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	}
	rd_kafka_topic_partition_list_destroy(l);
}

static void proc_payload_reset(proc_t *p);

/* Drops the messages queued behind a commit. */
static void proc_queue_drop(proc_t *p)
{
	for (size_t i = 0; i < p->nqueue; i++)
		free(p->queue[i].data);
	p->nqueue = 0;
}

/*
 * Produces one message in the open transaction, waiting for room when
 * librdkafka's queue is full.  flags: 0 (value stays valid until its
 * delivery report), RD_KAFKA_MSG_F_COPY or RD_KAFKA_MSG_F_FREE.  dr, when
 * not NULL, tracks its delivery.
 */
static int proc_produce_now(proc_t *p, const char *topic, int32_t partition,
                            const void *key, size_t klen, void *value, size_t vlen,
                            int flags, id_kafka_delivery_t *dr, const char *what,
                            id_err_t *err)
{
	for (int tries = 0;; tries++) {
		if (dr != NULL)
			dr->pending++;
		rd_kafka_resp_err_t e = rd_kafka_producev(
		    p->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
		    RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_VALUE(value, vlen),
		    RD_KAFKA_V_MSGFLAGS(flags), RD_KAFKA_V_OPAQUE(dr), RD_KAFKA_V_END);
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
			return 0;
		if (dr != NULL)
			dr->pending--;
		/* A full queue drains as the broker acknowledges; a policy
		 * activation can produce a whole partition's worth at once. */
		if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries >= 600)
			return id_kafka_err(err, e, what);
		rd_kafka_poll(p->producer, 100);
	}
}

/* Begins the open batch's Kafka transaction and produces what waited for
 * it (in order). */
static int proc_kafka_begin(proc_t *p, id_err_t *err)
{
	int rc = 0;
	if (p->begun)
		return 0;
	rd_kafka_error_t *e = rd_kafka_begin_transaction(p->producer);
	if (e != NULL) {
		rc = id_kafka_error(err, e, "beginning transaction");
		rd_kafka_error_destroy(e);
		return rc;
	}
	p->begun = true;
	proc_payload_reset(p);
	size_t i;
	for (i = 0; i < p->nqueue && rc == 0; i++) {
		proc_queued_t *q = &p->queue[i];
		rc = proc_produce_now(p, q->topic, q->partition, q->data + q->vlen,
		                      q->klen, q->data, q->vlen, RD_KAFKA_MSG_F_FREE,
		                      q->dr, q->what, err);
		if (rc == 0)
			q->data = NULL; /* librdkafka's now */
	}
	proc_queue_drop(p);
	return rc;
}

/* Produces one message in the open batch: now when its transaction is
 * begun, else (a commit in flight) into the queue, copied. */
static int proc_emit(proc_t *p, const char *topic, int32_t partition, const void *key,
                     size_t klen, void *value, size_t vlen, bool stable,
                     id_kafka_delivery_t *dr, const char *what, id_err_t *err)
{
	if (p->begun)
		return proc_produce_now(p, topic, partition, key, klen, value, vlen,
		                        stable ? 0 : RD_KAFKA_MSG_F_COPY, dr, what, err);
	if (p->nqueue == p->capqueue) {
		size_t ncap = p->capqueue ? 2 * p->capqueue : 1024;
		proc_queued_t *n = realloc(p->queue, ncap * sizeof(*n));
		if (n == NULL)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		p->queue = n;
		p->capqueue = ncap;
	}
	proc_queued_t *q = &p->queue[p->nqueue];
	if ((q->data = malloc(vlen + klen + 1)) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	memcpy(q->data, value, vlen);
	memcpy(q->data + vlen, key, klen);
	q->topic = topic;
	q->partition = partition;
	q->vlen = vlen;
	q->klen = klen;
	q->dr = dr;
	q->what = what;
	p->nqueue++;
	return 0;
}

/*
 * The commit itself, on the commit thread (or inline): the batch's input
 * offsets into the transaction, the commit, the delivery reports, then
 * the batch's records and offsets into RocksDB.  The loop does not touch
 * the producer, p->batch or the delivery counters meanwhile.
 */
static void *proc_commit_run(void *arg)
{
	proc_t *p = arg;
	rd_kafka_error_t *e = NULL;
	p->cwrite_rc = 0;
	if (p->coffs->cnt > 0) {
		if (p->ccgmd == NULL)
			p->ccgmd = rd_kafka_consumer_group_metadata(p->consumer);
		e = rd_kafka_send_offsets_to_transaction(p->producer, p->coffs, p->ccgmd,
		                                         30000);
	}
	if (e == NULL)
		e = rd_kafka_commit_transaction(p->producer, 60000);
	p->cerr = e;
	if (e == NULL) {
		/* The commit waited for every message; serve their delivery
		 * reports (they carry the output offsets `run` hands to the
		 * sink). */
		for (int i = 0; i < 3000 && (p->delivery.pending > 0 ||
		                             p->claims_delivery.pending > 0);
		     i++)
			rd_kafka_poll(p->producer, 10);
		rd_kafka_resp_err_t de = p->delivery.first_err;
		if (de == RD_KAFKA_RESP_ERR_NO_ERROR)
			de = p->claims_delivery.first_err;
		if (de != RD_KAFKA_RESP_ERR_NO_ERROR) {
			/* Cannot happen after a successful commit; kept as an
			 * invariant. */
			p->cwrite_rc = id_kafka_err(&p->cwrite_err, de,
			                            "delivery in committed transaction");
		} else {
			id_failpoint_crash("processor.after_commit");
			/* No write-ahead log: after a crash the store is as of an
			 * earlier batch — records and offsets together — and the
			 * events since are replayed without output, like any state
			 * behind Kafka's offsets. */
			p->cwrite_rc =
			    state_batch_write_unlogged(p->db, p->batch, &p->cwrite_err);
		}
	}
	atomic_store(&p->cdone, 1);
	return NULL;
}

/* The committer thread: runs each commit proc_commit_go() hands it. */
static void *proc_committer(void *arg)
{
	proc_t *p = arg;
	pthread_mutex_lock(&p->cmu);
	for (;;) {
		while (!p->cgo && !p->cquit)
			pthread_cond_wait(&p->ccond, &p->cmu);
		if (!p->cgo)
			break;
		p->cgo = false;
		pthread_mutex_unlock(&p->cmu);
		proc_commit_run(p);
		pthread_mutex_lock(&p->cmu);
		pthread_cond_broadcast(&p->ccond);
	}
	pthread_mutex_unlock(&p->cmu);
	return NULL;
}

/* Hands the prepared commit to the committer thread (started on first
 * use); false when it cannot be started. */
static bool proc_committer_go(proc_t *p)
{
	if (!p->cstarted) {
		if (pthread_create(&p->cthread, NULL, proc_committer, p) != 0)
			return false;
		p->cstarted = true;
	}
	pthread_mutex_lock(&p->cmu);
	p->cgo = true;
	pthread_cond_signal(&p->ccond);
	pthread_mutex_unlock(&p->cmu);
	return true;
}

/* Ends the committer thread (no commit in flight). */
static void proc_committer_stop(proc_t *p)
{
	if (!p->cstarted)
		return;
	pthread_mutex_lock(&p->cmu);
	p->cquit = true;
	pthread_cond_signal(&p->ccond);
	pthread_mutex_unlock(&p->cmu);
	pthread_join(p->cthread, NULL);
	p->cstarted = false;
}

/*
 * Waits for the commit in flight, if any, and settles it: on success the
 * stored offsets move and the record cache is trimmed; on an abortable
 * error the transaction is aborted and input rewound to the stored
 * offsets, the batch folded meanwhile included; a retriable one is
 * committed again.
 */
static int proc_commit_finish(proc_t *p, id_err_t *err)
{
	int rc = 0;
	if (!p->committing)
		return 0;
	if (p->cthreaded) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		pthread_mutex_lock(&p->cmu);
		while (!atomic_load(&p->cdone))
			pthread_cond_wait(&p->ccond, &p->cmu);
		pthread_mutex_unlock(&p->cmu);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		p->commit_wait_ms += ms_between(&t0, &t1);
		p->cthreaded = false;
	}
	for (;;) {
		rd_kafka_error_t *e = p->cerr;
		p->cerr = NULL;
		if (e == NULL)
			break;
		if (rd_kafka_error_txn_requires_abort(e)) {
			id_log_warn(
			    "processor", "transaction aborted, retrying its events%s: %s",
			    p->txn_open ? " and those folded behind its commit" : "",
			    rd_kafka_error_string(e));
			rd_kafka_error_destroy(e);
			/* The batch folded meanwhile goes too: it was folded on
			 * top of the aborted one. */
			proc_queue_drop(p);
			p->txn_open = false;
			p->begun = false;
			p->committing = false;
			e = rd_kafka_abort_transaction(p->producer, 60000);
			proc_overlay_drop(p);
			/* The aborted REEVALUATEs were never written: publish
			 * again. */
			id_hmap_clear(&p->inflight);
			state_batch_clear(p->batch);
			if (e != NULL) {
				rc = id_kafka_error(err, e, "aborting transaction");
				rd_kafka_error_destroy(e);
				goto out;
			}
			proc_rewind(p);
			goto out;
		}
		if (!rd_kafka_error_is_retriable(e)) {
			rc = id_kafka_error(err, e, "committing transaction");
			rd_kafka_error_destroy(e);
			goto out;
		}
		rd_kafka_error_destroy(e);
		/* Commit again: the transaction is still open. */
		proc_commit_run(p);
	}
	if ((rc = p->cwrite_rc) != 0) {
		if (err != NULL)
			*err = p->cwrite_err;
		goto out;
	}
	p->stats->txns++;
	for (int32_t i = 0; i < PROC_MAX_PARTITIONS; i++) {
		if (p->cnext[i] >= 0 && p->parts[i].assigned)
			p->parts[i].stored = p->cnext[i];
		p->cpolicy[i] = false;
	}
	if (p->names != NULL) {
		/* Committed claims: the arbiter must decide up to here. */
		pthread_mutex_lock(&p->names->mu);
		for (int32_t i = 0; i < PROC_MAX_PARTITIONS; i++)
			if (p->claims_next[i] > p->names->claims_next[i])
				p->names->claims_next[i] = p->claims_next[i];
		pthread_mutex_unlock(&p->names->mu);
	}
	proc_cache_trim(p);
out:
	p->committing = false;
	atomic_store(&p->cdone, 0);
	state_batch_clear(p->batch);
	if (p->ccgmd != NULL)
		rd_kafka_consumer_group_metadata_destroy(p->ccgmd);
	p->ccgmd = NULL;
	if (p->coffs != NULL)
		rd_kafka_topic_partition_list_destroy(p->coffs);
	p->coffs = NULL;
	p->delivery.first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	p->claims_delivery.first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	/* The next batch's transaction, now that this one is done. */
	if (rc == 0 && p->txn_open && !p->begun)
		rc = proc_kafka_begin(p, err);
	return rc;
}

/*
 * Commits the open batch (offsets included), then persists its state.
 * Waits for the commit in flight first.  With wait, returns once the batch
 * is committed and stored; without, the commit runs on its own thread and
 * the loop goes on folding (proc_commit_finish() settles it).
 */
static int proc_commit_go(proc_t *p, bool wait, id_err_t *err)
{
	int rc;
	if ((rc = proc_commit_finish(p, err)) != 0)
		return rc;
	if (!p->txn_open)
		return 0;
	if (!p->begun && (rc = proc_kafka_begin(p, err)) != 0)
		return rc;
	rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(16);
	for (int32_t i = 0; i < PROC_MAX_PARTITIONS; i++) {
		proc_partition_t *pp = &p->parts[i];
		/* Never send an offset below Kafka's committed one (a partition
		 * still replaying): that would move the group backwards and make
		 * the next restart produce those events' output twice. */
		if (pp->assigned && pp->next_offset > pp->stored &&
		    pp->next_offset > pp->replay_until)
			rd_kafka_topic_partition_list_add(offs, p->in_topic, i)->offset =
			    pp->next_offset;
	}
	if ((rc = proc_persist_prepare(p, err)) != 0) {
		rd_kafka_topic_partition_list_destroy(offs);
		return rc;
	}
	p->coffs = offs;
	p->ccgmd = offs->cnt > 0 ? rd_kafka_consumer_group_metadata(p->consumer) : NULL;
	p->txn_open = false;
	p->begun = false;
	p->committing = true;
	atomic_store(&p->cdone, 0);
	p->cthreaded = !wait && proc_committer_go(p);
	if (!p->cthreaded) {
		proc_commit_run(p);
		return proc_commit_finish(p, err);
	}
	return 0;
}

/*
 * The fetch waker's thread.  librdkafka 2.0.2's fetcher, paused because
 * the prefetch is full, looks again only when its broker thread wakes up
 * (a second later when idle; see PROC_PREFETCH_KBYTES).  Any request for
 * that broker wakes it: when the prefetch runs low this thread asks for
 * one assigned partition's watermarks (the next partition each time, so
 * that every partition leader is asked in turn), and the fetcher then
 * fetches again at once.  The answer is not needed; it may wait behind
 * the fetcher's long poll on the same connection, hence a thread.
 */
static void *proc_waker(void *arg)
{
	proc_t *p = arg;
	unsigned next = 0;
	size_t peak = 0; /* most messages prefetched since the last wake-up */
	struct timespec tick = {0, PROC_WAKE_MS * 1000000L};
	while (!atomic_load(&p->wquit)) {
		nanosleep(&tick, NULL);
		int n = atomic_load(&p->wnparts);
		size_t len = rd_kafka_queue_length(p->wqueue);
		if (len > peak)
			peak = len;
		/* Half used up: the fetcher may be paused at its bound (in
		 * bytes: the message count at it depends on their size). */
		if (n <= 0 || peak < PROC_WAKE_MIN || len > peak / 2)
			continue;
		peak = len;
		int32_t part = (int32_t)atomic_load(&p->wparts[next++ % (unsigned)n]);
		int64_t lo, hi;
		(void)rd_kafka_query_watermark_offsets(p->consumer, p->in_topic, part,
		                                       &lo, &hi, 1000);
	}
	return NULL;
}

/* Starts the fetch waker (a processor without it only fetches more
 * slowly). */
static void proc_waker_start(proc_t *p)
{
	if ((p->wqueue = rd_kafka_queue_get_consumer(p->consumer)) == NULL)
		return;
	atomic_store(&p->wquit, 0);
	if (pthread_create(&p->wthread, NULL, proc_waker, p) == 0) {
		p->wstarted = true;
	} else {
		id_log_warn("processor", "no fetch waker thread: input comes slower");
		rd_kafka_queue_destroy(p->wqueue);
		p->wqueue = NULL;
	}
}

static void proc_waker_stop(proc_t *p)
{
	if (p->wstarted) {
		atomic_store(&p->wquit, 1);
		pthread_join(p->wthread, NULL);
		p->wstarted = false;
	}
	if (p->wqueue != NULL)
		rd_kafka_queue_destroy(p->wqueue);
	p->wqueue = NULL;
}

/* Tells the waker which partitions are assigned (the first
 * PROC_WAKE_PARTS of them). */
static void proc_waker_parts(proc_t *p)
{
	int n = 0;
	atomic_store(&p->wnparts, 0);
	for (int32_t i = 0; i < PROC_MAX_PARTITIONS && n < PROC_WAKE_PARTS; i++)
		if (p->parts[i].assigned)
			atomic_store(&p->wparts[n++], i);
	atomic_store(&p->wnparts, n);
}

static void proc_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                           rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	proc_t *p = opaque;
	id_log_info("processor", "%s %d partitions",
	            e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assigned" : "revoked",
	            parts->cnt);
	if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		id_err_t cerr = {0};
		if (proc_commit_finish(p, &cerr) != 0 && !p->fatal) {
			p->fatal = 1;
			p->fatal_err = cerr;
		}
		p->has_assignment = true;
		proc_group_owned(p->group, parts->cnt);
		for (int i = 0; i < parts->cnt; i++) {
			int32_t part = parts->elems[i].partition;
			if (part < 0 || part >= PROC_MAX_PARTITIONS)
				continue;
			proc_partition_t *pp = &p->parts[part];
			memset(pp, 0, sizeof(*pp));
			pp->assigned = 1;
			int64_t stored = proc_stored_offset(p, part);
			pp->stored = stored < 0 ? 0 : stored;
			pp->next_offset = pp->stored;
			pp->replay_until = -1;
			/* The partition's policy as of the stored offset, before
			 * any of its events is folded. */
			id_err_t perr = {0};
			if (proc_policy_restore(p, part, &perr) != 0 && !p->fatal) {
				p->fatal = 1;
				p->fatal_err = perr;
			}
		}
		/* Kafka's committed offsets tell where output stops being known. */
		rd_kafka_topic_partition_list_t *c =
		    rd_kafka_topic_partition_list_copy(parts);
		rd_kafka_resp_err_t ce = rd_kafka_committed(rk, c, 30000);
		for (int i = 0; i < parts->cnt; i++) {
			int32_t part = parts->elems[i].partition;
			if (part < 0 || part >= PROC_MAX_PARTITIONS)
				continue;
			proc_partition_t *pp = &p->parts[part];
			int64_t committed =
			    ce == RD_KAFKA_RESP_ERR_NO_ERROR ? c->elems[i].offset : -1;
			if (ce != RD_KAFKA_RESP_ERR_NO_ERROR) {
				/* Without the committed offset we cannot tell replayed
				 * from new events; producing twice would break
				 * exactly-once. */
				p->fatal = 1;
				id_kafka_err(&p->fatal_err, ce,
				             "reading committed offsets");
			}
			if (committed > pp->stored) {
				pp->replay_until = committed;
				id_log_info("processor",
				            "partition %d: re-deriving state from offset "
				            "%lld to %lld "
				            "without output",
				            part, (long long)pp->stored,
				            (long long)committed);
			}
			parts->elems[i].offset = pp->stored;
		}
		rd_kafka_topic_partition_list_destroy(c);
		rd_kafka_assign(rk, parts);
		proc_waker_parts(p);
	} else {
		id_err_t err = {0};
		p->has_assignment = false;
		proc_group_owned(p->group, -parts->cnt);
		if (proc_commit_go(p, true, &err) != 0) {
			id_log_error("processor", "committing before rebalance: %s",
			             err.msg);
			p->fatal = 1;
			p->fatal_err = err;
		}
		proc_overlay_drop(p);
		for (int i = 0; i < parts->cnt; i++) {
			int32_t part = parts->elems[i].partition;
			if (part >= 0 && part < PROC_MAX_PARTITIONS)
				p->parts[part].assigned = 0;
		}
		proc_waker_parts(p);
		rd_kafka_assign(rk, NULL);
	}
}

/* A copy of data[0..len) in the payload chunks, or NULL (out of memory). */
static void *proc_payload(proc_t *p, const void *data, size_t len)
{
	while (p->chunk < p->nchunks &&
	       p->chunks[p->chunk].cap - p->chunks[p->chunk].len < len)
		p->chunk++;
	if (p->chunk == p->nchunks) {
		size_t cap = len > PROC_CHUNK_BYTES ? len : PROC_CHUNK_BYTES;
		proc_chunk_t *n = realloc(p->chunks, (p->nchunks + 1) * sizeof(*n));
		if (n == NULL)
			return NULL;
		p->chunks = n;
		if ((n[p->nchunks].data = malloc(cap)) == NULL)
			return NULL;
		n[p->nchunks].len = 0;
		n[p->nchunks].cap = cap;
		p->nchunks++;
	}
	proc_chunk_t *c = &p->chunks[p->chunk];
	void *at = c->data + c->len;
	memcpy(at, data, len);
	c->len += len;
	return at;
}

/* Makes the payload chunks free for reuse once librdkafka is done with
 * every message produced from them (all delivery reports served). */
static void proc_payload_reset(proc_t *p)
{
	if (p->delivery.pending > 0)
		return;
	for (size_t i = 0; i < p->nchunks; i++)
		p->chunks[i].len = 0;
	p->chunk = 0;
}

/* Produces d (a new desired version) to identity.desired in the open
 * transaction, keyed by its employee id. */
static int proc_produce(proc_t *p, const desired_identity_t *d, id_err_t *err)
{
	int rc;
	id_buf_reset(&p->buf);
	if ((rc = codec_encode_desired(p->codec, d, &p->buf, err)) != 0)
		return rc;
	/* No copy by librdkafka: the bytes stay in the chunks until their
	 * delivery report (see proc_payload_reset()).  Behind a commit in
	 * flight they are queued, copied. */
	void *value = p->buf.data;
	if (p->begun && (value = proc_payload(p, p->buf.data, p->buf.len)) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	return proc_emit(p, p->out_topic, RD_KAFKA_PARTITION_UA, d->employee_id,
	                 strlen(d->employee_id), value, p->buf.len, true, &p->delivery,
	                 "producing desired identity", err);
}

/* Produces value to topic (partition < 0: by key) in the open transaction,
 * waiting for room when the queue is full. */
static int proc_send(proc_t *p, const char *topic, int32_t partition, const char *key,
                     const id_buf_t *value, const char *what, id_err_t *err)
{
	/* No delivery tracking: a failed delivery fails the commit. */
	return proc_emit(p, topic, partition < 0 ? RD_KAFKA_PARTITION_UA : partition, key,
	                 strlen(key), value->data, value->len, false, NULL, what, err);
}

/*
 * Produces the claims the last fold reported (p->claims) to names.claims in
 * the open transaction, each keyed by its name_key() so that one partition
 * decides each name.  Delivery is tracked so that `run --until-idle` knows
 * how far the arbiter must read.
 */
static int proc_produce_claims(proc_t *p, id_err_t *err)
{
	int rc = 0;
	for (size_t i = 0; i < p->claims.len && rc == 0; i++) {
		const name_claim_t *c = &p->claims.items[i];
		if (name_key(c->ns, c->value, &p->buf) != 0 ||
		    id_buf_append_u8(&p->buf, 0) != 0)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		id_buf_reset(&p->val);
		if ((rc = codec_encode_name_claim(p->codec, c, &p->val, err)) != 0)
			return rc;
		if ((rc = proc_emit(p, p->claims_topic, RD_KAFKA_PARTITION_UA,
		                    p->buf.data, p->buf.len - 1, p->val.data, p->val.len,
		                    false, &p->claims_delivery, "producing a name claim",
		                    err)) != 0)
			return rc;
		p->claims_made++;
		id_log_kv(ID_LOG_INFO, "processor",
		          c->kind == NAME_CLAIM ? "name claimed" : "name released",
		          "employee", c->employee_id, "namespace", c->ns, "value",
		          c->value, "claim_id", c->claim_id, NULL);
	}
	return rc;
}

/*
 * Publishes, in the open transaction, that an event of employee_id was
 * refused (outcome FAILED) or that the employee's identity is held back by
 * a policy/lifecycle error (HELD): a SinkResult of target "processor" with
 * the error, the event as its one operation, and the version the employee
 * keeps.  rec may be NULL (undecodable input).
 */
static int proc_refused(proc_t *p, const char *employee_id, const employee_record_t *rec,
                        const employee_event_t *ev, sink_outcome_t outcome,
                        const char *error, id_err_t *err)
{
	sink_result_t r;
	id_buf_t b = ID_BUF_INIT;
	struct timespec now;
	int rc;
	sink_result_init(&r);
	clock_gettime(CLOCK_REALTIME, &now);
	r.outcome = outcome;
	r.desired_version = rec != NULL ? rec->last.version : 0;
	r.at = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	if ((r.target = strdup(PROC_RESULT_TARGET)) == NULL ||
	    (r.employee_id = strdup(employee_id)) == NULL ||
	    (r.error = strdup(error != NULL && error[0] ? error : "refused")) == NULL ||
	    sink_result_add_op(
	        &r, outcome == SINK_HELD ? "hold" : "refuse",
	        ev != NULL && ev->event_id != NULL ? ev->event_id : "(undecodable)", NULL,
	        ev != NULL ? employee_event_type_name(ev->type) : NULL) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = codec_encode_result(p->codec, &r, &b, err)) != 0)
		goto out;
	rc = proc_send(p, p->results_topic, -1, employee_id, &b, "producing a refusal",
	               err);
out:
	sink_result_fini(&r);
	id_buf_fini(&b);
	return rc;
}

static int cmp_cstr_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Re-evaluates one employee after an activation; produces a new version
 * unless replaying.  rec (p->scratch) was loaded from entry, the overlay's
 * copy, or from the state store when entry is NULL. */
static int proc_reevaluate_one(proc_t *p, int32_t partition, const char *employee_id,
                               employee_record_t *rec, proc_overlay_rec_t *entry,
                               bool replay, long *emitted_n, id_err_t *err)
{
	bool emitted = false;
	id_err_t ferr = {0};
	int64_t timer_before = rec->timer_at;
	fold_claims_clear(&p->claims);
	int frc = fold_reevaluate_claims(rec, &p->ev,
	                                 policy_registry_mapping(p->registry, partition),
	                                 NULL, &emitted, &p->claims, &ferr);
	if (frc == ID_ENOMEM) {
		if (err != NULL)
			*err = ferr;
		return frc;
	}
	/* The claims are made whatever else the evaluation did. */
	if (!replay && p->claims.len > 0) {
		int crc = proc_produce_claims(p, err);
		if (crc != 0)
			return crc;
	}
	if (frc != 0) {
		/* The employee keeps the version it has; the new policy cannot
		 * map them (a policy error for this one record). */
		id_log_kv(ID_LOG_ERROR, "processor",
		          "re-evaluation refused by the policy", "employee", employee_id,
		          "event_id", p->ev.event_id, "error", ferr.msg, NULL);
		p->stats->rejected++;
	}
	/* The record is kept whatever came out: the fold moved its clock to
	 * the marker's time (and may have applied due changes), exactly as a
	 * replay of this partition does in memory — dropping it would let
	 * the two decide later events at different times. */
	int krc =
	    proc_overlay_keep(p, partition, rec, entry, employee_id, timer_before, err);
	if (krc != 0)
		return krc;
	if (frc != 0)
		return replay ? 0
		              : proc_refused(p, employee_id, rec, &p->ev, SINK_HELD,
		                             ferr.msg, err);
	if (!emitted)
		return 0;
	(*emitted_n)++;
	if (replay)
		return 0;
	int rc = proc_produce(p, &rec->last, err);
	if (rc == 0)
		p->stats->emitted++;
	return rc;
}

/*
 * A POLICY_ACTIVATED marker (p->ev) at partition: switches the partition's
 * mapping and re-evaluates every employee of the partition with it, in
 * employee id order (the order `replay --check` uses, so the output
 * sequence of the partition is reproducible).  The employees are those in
 * the state store plus those only in the open transaction's overlay; the
 * overlay's copy is the newer one.  A marker that is refused leaves the
 * partition's mapping as it was and re-evaluates nothing.
 */
static int proc_activate(proc_t *p, const rd_kafka_message_t *m, bool replay,
                         id_err_t *err)
{
	int32_t part = m->partition;
	id_err_t aerr = {0};
	const char **ids = NULL;
	size_t nids = 0;
	state_iter_t *it = NULL;
	id_buf_t sid = ID_BUF_INIT; /* the stored record's employee id */
	const void *k = NULL, *v = NULL;
	size_t kl = 0, vl = 0, oi = 0;
	int more = 0;
	long seen = 0, emitted_n = 0;
	int rc = policy_registry_activate(p->registry, part, &p->ev, &aerr);
	if (rc == ID_ENOMEM) {
		if (err != NULL)
			*err = aerr;
		return rc;
	}
	if (rc != 0) {
		char off[32];
		snprintf(off, sizeof(off), "%lld", (long long)m->offset);
		id_log_kv(ID_LOG_ERROR, "processor", "policy activation refused",
		          "event_id", p->ev.event_id, "offset", off, "error", aerr.msg,
		          NULL);
		p->stats->rejected++;
		return 0;
	}
	p->parts[part].policy_dirty = true;

	/* The overlay's employees of this partition, sorted. */
	if ((ids = malloc((p->overlay.len ? p->overlay.len : 1) * sizeof(*ids))) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	for (size_t i = 0; i < p->overlay.cap; i++) {
		proc_overlay_rec_t *o = p->overlay.slots[i].value;
		if (p->overlay.slots[i].key == NULL || o == NULL || o->partition != part)
			continue;
		/* Copies, independent of the overlay, which grows below. */
		if ((ids[nids] = strdup(p->overlay.slots[i].key)) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		nids++;
	}
	qsort(ids, nids, sizeof(*ids), cmp_cstr_ptr);

	/* Merge them with the stored records (keys sorted by employee id). */
	unsigned char prefix[5];
	prefix[0] = 'R';
	state_be32_put(prefix + 1, (uint32_t)part);
	if ((rc = state_iter_create(p->db, prefix, 5, &it, err)) != 0)
		goto out;
	more = state_iter_next(it, &k, &kl, &v, &vl, err);
	while (more > 0 || oi < nids) {
		const char *stored_id = NULL;
		if (more > 0) {
			id_buf_reset(&sid);
			if (id_buf_append(&sid, (const char *)k + 5, kl - 5) != 0 ||
			    id_buf_append_u8(&sid, 0) != 0) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				break;
			}
			stored_id = (const char *)sid.data;
		}
		int c = stored_id == NULL ? 1
		        : oi == nids      ? -1
		                          : strcmp(stored_id, ids[oi]);
		seen++;
		if (c >= 0) {
			/* In the overlay (c == 0: also stored, the overlay is newer). */
			proc_overlay_rec_t *o = id_hmap_get(&p->overlay, ids[oi]);
			rc = employee_record_decode(&p->scratch, o->bytes.data,
			                            o->bytes.len, err);
			if (rc != 0)
				id_err_wrap(err, "state of employee %s (partition %d)",
				            ids[oi], (int)part);
			else
				rc = proc_reevaluate_one(p, part, ids[oi], &p->scratch, o,
				                         replay, &emitted_n, err);
			oi++;
		} else {
			rc = employee_record_decode(&p->scratch, v, vl, err);
			if (rc != 0)
				id_err_wrap(err, "state of employee %s (partition %d)",
				            stored_id, (int)part);
			else
				rc = proc_reevaluate_one(p, part, stored_id, &p->scratch,
				                         NULL, replay, &emitted_n, err);
		}
		/* Freed while still in the cache. */
		employee_record_fini(&p->scratch);
		if (rc != 0)
			break;
		if (c <= 0)
			more = state_iter_next(it, &k, &kl, &v, &vl, err);
	}
	if (rc == 0 && more < 0)
		rc = more;
	if (rc == 0)
		id_log_info(
		    "processor",
		    "partition %d: policy %s active from offset %lld (event %s): %ld "
		    "employees re-evaluated, %ld new versions%s",
		    (int)part, policy_registry_version(p->registry, part),
		    (long long)m->offset, p->ev.event_id, seen, emitted_n,
		    replay ? " (re-derived, not produced)" : "");
out:
	id_buf_fini(&sid);
	employee_record_fini(&p->scratch);
	state_iter_destroy(it);
	for (size_t i = 0; i < nids; i++)
		free((void *)ids[i]);
	free(ids);
	return rc;
}

/* Folds one event; produces the new desired version unless replaying. */
static int proc_handle(proc_t *p, const rd_kafka_message_t *m, bool replay, id_err_t *err)
{
	employee_event_t *ev = &p->ev;
	employee_record_t *rec = &p->scratch;
	proc_overlay_rec_t *entry = NULL;
	bool emitted = false;
	int rc = 0;

	id_err_t derr = {0};
	if (codec_decode_event(p->codec, m->payload, m->len, ev, &derr) != 0) {
		/* A record that cannot be read is refused loudly; it produces no
		 * identity, and the offset moves on so one bad record cannot stop
		 * every employee of the partition. */
		id_log_kv(ID_LOG_ERROR, "processor", "refused undecodable event", "topic",
		          p->in_topic, "error", derr.msg, NULL);
		id_log_error("processor", "partition %d offset %lld: %s", m->partition,
		             (long long)m->offset, derr.msg);
		p->stats->rejected++;
		if (!replay) {
			char key[256], msg[ID_ERR_MSG_MAX + 64];
			size_t kl =
			    m->key_len < sizeof(key) - 1 ? m->key_len : sizeof(key) - 1;
			memcpy(key, m->key != NULL ? m->key : "",
			       m->key != NULL ? kl : 0);
			key[m->key != NULL ? kl : 0] = '\0';
			snprintf(msg, sizeof(msg), "partition %d offset %lld: %s",
			         (int)m->partition, (long long)m->offset, derr.msg);
			rc = proc_refused(p, key[0] ? key : "(no key)", NULL, NULL,
			                  SINK_FAILED, msg, err);
		}
		goto out;
	}
	if (ev->type == EV_POLICY_ACTIVATED) {
		/* Not an employee's event: the partition's policy changes. */
		if (replay)
			p->stats->replayed++;
		else
			p->stats->events++;
		rc = proc_activate(p, m, replay, err);
		goto out;
	}
	if ((rc = proc_load(p, m->partition, ev->employee_id, rec, &entry, err)) != 0)
		goto out;
	id_err_t ferr = {0};
	int64_t stored_timer = rec->timer_at;
	/* No copy of the new version: it is encoded from rec->last. */
	fold_claims_clear(&p->claims);
	int frc =
	    fold_apply_claims(rec, ev, policy_registry_mapping(p->registry, m->partition),
	                      NULL, &emitted, &p->claims, &ferr);
	if (frc == ID_ENOMEM) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory folding %s",
		                ev->employee_id);
		goto out;
	}
	/* On other fold errors the record holds whatever facts the fold could
	 * absorb (see fold.h); it is kept, and the event is reported. */
	if ((rc = proc_overlay_keep(p, m->partition, rec, entry, ev->employee_id,
	                            stored_timer, err)) != 0)
		goto out;
	/* Claims are outputs like desired versions: made once, by the
	 * transaction that folds their cause (an answer folded before an error
	 * may have released a name). */
	if (!replay && p->claims.len > 0 && (rc = proc_produce_claims(p, err)) != 0)
		goto out;
	if (frc != 0) {
		id_log_kv(ID_LOG_ERROR, "processor", "event refused by the fold",
		          "employee", ev->employee_id, "event_id", ev->event_id, "error",
		          ferr.msg, NULL);
		p->stats->rejected++;
		/* Refused outright (never hired, unusable event) vs absorbed but
		 * not mappable (policy, lifecycle): the identity is held. */
		if (!replay)
			rc = proc_refused(
			    p, ev->employee_id, rec, ev,
			    frc == ID_ENOTFOUND && rec->status == EMPLOYEE_STATUS_NONE
			        ? SINK_FAILED
			    : frc == ID_EINVALID && ferr.msg[0] != '\0' &&
			            strstr(ferr.msg, "unknown event type") != NULL
			        ? SINK_FAILED
			        : SINK_HELD,
			    ferr.msg, err);
		goto out;
	}
	/* A timer event folded: its timer has moved on, a later one may be
	 * published.  (A refused one stays marked, so a policy error does not
	 * make the scheduler publish it again and again.) */
	if (ev->type == EV_REEVALUATE &&
	    id_hmap_get(&p->inflight, ev->event_id) != NULL &&
	    id_hmap_put(&p->inflight, ev->event_id, NULL) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if (replay) {
		p->stats->replayed++;
		goto out;
	}
	p->stats->events++;
	if (emitted) {
		if ((rc = proc_produce(p, &rec->last, err)) != 0)
			goto out;
		p->stats->emitted++;
	}
out:
	/* Freed while still in the cache; the overlay has its bytes. */
	employee_record_fini(rec);
	return rc;
}

static int proc_txn_begin(proc_t *p, id_err_t *err)
{
	if (p->txn_open)
		return 0;
	/* Behind a commit in flight the transaction begins when it is done
	 * (proc_commit_finish()); output waits in the queue until then. */
	if (!p->committing) {
		int rc = proc_kafka_begin(p, err);
		if (rc != 0)
			return rc;
	}
	p->txn_open = true;
	p->txn_events = 0;
	clock_gettime(CLOCK_MONOTONIC, &p->txn_started);
	return 0;
}

/* The REEVALUATE event of employee_id's timer due at `due`, in p->ev. */
static int proc_timer_event(proc_t *p, const char *employee_id, int64_t due)
{
	char eid[33], at[24];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	id_buf_t seed = ID_BUF_INIT;
	int n = snprintf(at, sizeof(at), "%lld", (long long)due);
	/* NUL separators keep ("a", "bc") and ("ab", "c") apart. */
	if (id_buf_append(&seed, PROC_TIMER_SOURCE, sizeof(PROC_TIMER_SOURCE)) != 0 ||
	    id_buf_append(&seed, employee_id, strlen(employee_id) + 1) != 0 ||
	    id_buf_append(&seed, at, (size_t)n) != 0) {
		id_buf_fini(&seed);
		return ID_ENOMEM;
	}
	EVP_Digest(seed.data, seed.len, md, &mdlen, EVP_sha256(), NULL);
	id_buf_fini(&seed);
	for (unsigned i = 0; i < 16; i++)
		snprintf(eid + 2 * i, 3, "%02x", md[i]);
	employee_event_t *ev = &p->ev;
	employee_event_fini(ev);
	ev->type = EV_REEVALUATE;
	ev->occurred_at = ev->effective_at = due;
	size_t sl = strlen(employee_id) + sizeof(at) + 2;
	if ((ev->event_id = strdup(eid)) == NULL ||
	    (ev->source = strdup(PROC_TIMER_SOURCE)) == NULL ||
	    (ev->source_event_id = malloc(sl)) == NULL ||
	    (ev->employee_id = strdup(employee_id)) == NULL ||
	    (ev->reason = strdup("a lifecycle timer is due")) == NULL)
		return ID_ENOMEM;
	snprintf(ev->source_event_id, sl, "%s@%s", employee_id, at);
	return 0;
}

/*
 * Publishes a REEVALUATE for every timer of an assigned, caught-up
 * partition that is due by the wall clock, oldest first, at most
 * PROC_TIMERS_PER_CHECK per call, inside the (opened if needed)
 * transaction.  A partition still re-deriving state is skipped: its timer
 * index is behind the log.
 */
static int proc_timers(proc_t *p, id_err_t *err)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	long sent = 0;
	/* The timer index is exact once the commit in flight is stored. */
	int rc = proc_commit_finish(p, err);
	if (rc != 0)
		return rc;
	if (p->inflight.len > 65536)
		id_hmap_clear(&p->inflight); /* worst case: a harmless repeat */
	for (int32_t part = 0; part < PROC_MAX_PARTITIONS && rc == 0; part++) {
		proc_partition_t *pp = &p->parts[part];
		if (!pp->assigned || pp->next_offset < pp->replay_until)
			continue;
		unsigned char prefix[5];
		prefix[0] = 'T';
		state_be32_put(prefix + 1, (uint32_t)part);
		state_iter_t *it = NULL;
		const void *k, *v;
		size_t kl, vl;
		if ((rc = state_iter_create(p->db, prefix, 5, &it, err)) != 0)
			break;
		int more;
		while ((more = state_iter_next(it, &k, &kl, &v, &vl, err)) > 0) {
			if (kl <= 13)
				continue;
			int64_t due =
			    (int64_t)state_be64_get((const unsigned char *)k + 5);
			if (due > now || sent >= PROC_TIMERS_PER_CHECK)
				break;
			/* The whole id, however long (it is the record's key). */
			id_buf_reset(&p->buf);
			if (id_buf_append(&p->buf, (const char *)k + 13, kl - 13) != 0 ||
			    id_buf_append_u8(&p->buf, 0) != 0 ||
			    (rc = proc_timer_event(p, (const char *)p->buf.data, due)) !=
			        0) {
				rc = id_err_set(err, ID_ENOMEM, "timer: out of memory");
				break;
			}
			const char *emp = p->ev.employee_id;
			/* Published and not folded yet; or folded in the open
			 * transaction, whose new timer the index shows only
			 * after the commit. */
			proc_overlay_rec_t *o = id_hmap_get(&p->overlay, emp);
			if (id_hmap_get(&p->inflight, p->ev.event_id) != NULL ||
			    (o != NULL && o->dirty))
				continue;
			if ((rc = proc_txn_begin(p, err)) != 0 ||
			    (rc = codec_encode_event(p->codec, &p->ev, &p->val, err)) !=
			        0 ||
			    (rc = proc_send(p, p->in_topic, part, emp, &p->val,
			                    "producing a timer event", err)) != 0)
				break;
			if (id_hmap_put(&p->inflight, p->ev.event_id, (void *)1) != 0) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				break;
			}
			id_kafka_end_clear(&pp->end); /* input is coming: not caught up */
			sent++;
		}
		if (rc == 0 && more < 0)
			rc = more;
		state_iter_destroy(it);
	}
	if (sent > 0) {
		p->stats->timers += sent;
		id_log_info("processor",
		            "%ld lifecycle timers due: REEVALUATE events published",
		            sent);
	}
	employee_event_fini(&p->ev);
	return rc;
}

/*
 * Handles one consumed message.  Replayed events (below the partition's
 * replay_until) run through the same transaction cycle as new ones but
 * produce nothing; their state is persisted with the next commit.
 */
static int proc_on_message(proc_t *p, const rd_kafka_message_t *m, id_err_t *err)
{
	int32_t part = m->partition;
	proc_partition_t *pp =
	    (part >= 0 && part < PROC_MAX_PARTITIONS) ? &p->parts[part] : NULL;
	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
		if (pp == NULL)
			return 0;
		/* An end below the high watermark counts only after a
		 * moment, so `--until-idle` right after an ingest does not
		 * stop short of its transaction (common/kafka.h). */
		id_kafka_end_seen(&pp->end, p->consumer, m);
		return 0;
	}
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		id_log_warn("processor", "consumer: %s", rd_kafka_message_errstr(m));
		return 0;
	}
	if (pp == NULL || !pp->assigned)
		return 0;
	id_kafka_end_clear(&pp->end);
	int rc = proc_txn_begin(p, err);
	if (rc != 0)
		return rc;
	rc = proc_handle(p, m, m->offset < pp->replay_until, err);
	if (rc != 0)
		return rc;
	pp->next_offset = m->offset + 1;
	p->txn_events++;
	return 0;
}

static bool proc_caught_up(proc_t *p)
{
	int n = 0;
	for (int32_t i = 0; i < PROC_MAX_PARTITIONS; i++) {
		if (!p->parts[i].assigned)
			continue;
		if (!id_kafka_end_counts(&p->parts[i].end))
			return false;
		n++;
	}
	/* A fold thread the group gave no partition has nothing to catch up
	 * with; before its first assignment it cannot tell. */
	return n > 0 || (p->group != NULL && p->has_assignment);
}

/*
 * With `run --until-idle`: true when every claim this processor committed
 * is decided by the arbiter and every answer the arbiter committed to a
 * partition of ours has been read (see cmd/names_sync.h).  Also true when
 * the arbiter has stopped: nothing more will come.
 */
static bool proc_names_settled(proc_t *p)
{
	names_sync_t *ns = p->names;
	bool ok;
	pthread_mutex_lock(&ns->mu);
	ok = ns->arbiter_stopped;
	if (!ok) {
		ok = ns->arbiter_caught_up;
		for (int32_t i = 0; ok && i < PROC_MAX_PARTITIONS; i++) {
			if (ns->claims_next[i] > 0 &&
			    ns->decided_next[i] < ns->claims_next[i])
				ok = false;
			if (p->parts[i].assigned &&
			    ns->answers_next[i] > p->parts[i].next_offset)
				ok = false;
		}
	}
	pthread_mutex_unlock(&ns->mu);
	return ok;
}

int processor_loop(const id_config_t *cfg, bool until_idle, processor_stats_t *stats,
                   stage_sync_t *sync, id_err_t *err)
{
	return processor_loop_names(cfg, until_idle, stats, sync, NULL, err);
}

/* Opens the processor's state store (<state.dir>/processor); a small block
 * cache, the record cache being in front of it. */
static int proc_store_open(const id_config_t *cfg, state_store_t **db, id_err_t *err)
{
	char path[1024];
	state_store_opts_t opts = {NULL, PROC_BLOCK_CACHE_BYTES, PROC_WRITE_BUFFER_BYTES};
	snprintf(path, sizeof(path), "%s/processor", id_config_str(cfg, "state.dir"));
	return state_store_open(path, &opts, db, err);
}

/*
 * One fold thread.  db: the state store shared by the threads of
 * processor.threads (NULL: opened here); pgroup: those threads (NULL: one
 * thread); thread: its index, which names its transactional.id.
 */
static int proc_run(const id_config_t *cfg, bool until_idle, processor_stats_t *stats,
                    stage_sync_t *sync, names_sync_t *names, state_store_t *db,
                    proc_group_t *pgroup, int thread, id_err_t *err)
{
	proc_t *p = calloc(1, sizeof(*p));
	id_config_t *pcfg = NULL, *ccfg = NULL;
	int rc = 0;
	char group[300], txid[300];
	if (p == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	p->cfg = cfg;
	p->stats = stats;
	p->group = pgroup;
	p->cache_budget =
	    (size_t)(id_config_double(cfg, "processor.cache_mb") * 1048576.0);
	pthread_mutex_init(&p->cmu, NULL);
	pthread_cond_init(&p->ccond, NULL);
	if (db != NULL) {
		p->db = db;
		p->shared_db = true;
	}
	id_hmap_init(&p->overlay);
	id_hmap_init(&p->inflight);
	id_buf_init(&p->buf);
	id_buf_init(&p->stored);
	id_buf_init(&p->val);
	employee_event_init(&p->ev);
	employee_record_init(&p->scratch);
	fold_claims_init(&p->claims);
	if ((p->pool = malloc(PROC_OVERLAY_POOL_MAX * sizeof(*p->pool))) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((p->batch = state_batch_create()) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if (sync != NULL) {
		/* Delivery reports tell `run` how far the sink must read. */
		p->delivery.next_offsets = sync->desired_next;
		p->delivery.nparts = STAGE_MAX_PARTITIONS;
	}
	id_config_topic(cfg, "hr.events", p->in_topic, sizeof(p->in_topic));
	id_config_topic(cfg, "identity.desired", p->out_topic, sizeof(p->out_topic));
	id_config_topic(cfg, "sink.results", p->results_topic, sizeof(p->results_topic));
	id_config_topic(cfg, "names.claims", p->claims_topic, sizeof(p->claims_topic));
	p->names = names;
	p->claims_delivery.next_offsets = p->claims_next;
	p->claims_delivery.nparts = PROC_MAX_PARTITIONS;
	p->timer_check_ms = (double)id_config_int(cfg, "processor.timer_check_ms");
	clock_gettime(CLOCK_MONOTONIC, &p->timers_checked);
	snprintf(group, sizeof(group), "%s.processor",
	         id_config_str(cfg, "topic.prefix"));
	snprintf(txid, sizeof(txid), "%s.processor.%s",
	         id_config_str(cfg, "topic.prefix"),
	         id_config_str(cfg, "processor.instance_id"));
	if (thread > 0) {
		size_t l = strlen(txid);
		snprintf(txid + l, sizeof(txid) - l, "#%d", thread);
	}
	long batch_max = (long)id_config_int(cfg, "processor.batch_max");
	double batch_ms = (double)id_config_int(cfg, "processor.batch_ms");
	if (!p->shared_db && (rc = proc_store_open(cfg, &p->db, err)) != 0)
		goto out;
	if ((p->codec = codec_create(err)) == NULL) {
		rc = err ? err->code : ID_ENOMEM;
		goto out;
	}
	mapping_t *builtin = processor_builtin_mapping(cfg, err);
	if (builtin == NULL || (p->registry = policy_registry_create(
	                            builtin, PROC_POLICY_TARGET, NULL, err)) == NULL) {
		rc = err ? err->code : ID_ENOMEM;
		goto out;
	}
	if ((pcfg = proc_kafka_config(
	         cfg, proc_producer_kafka,
	         sizeof(proc_producer_kafka) / sizeof(proc_producer_kafka[0]), err)) ==
	        NULL ||
	    (ccfg = proc_kafka_config(
	         cfg, proc_consumer_kafka,
	         sizeof(proc_consumer_kafka) / sizeof(proc_consumer_kafka[0]), err)) ==
	        NULL) {
		rc = err ? err->code : ID_ENOMEM;
		goto out;
	}
	if (p->group != NULL && p->group->n > 1 &&
	    !id_attrs_has(id_config_kafka(cfg), "queued.max.messages.kbytes")) {
		/* Fold threads split the prefetch budget as they split the
		 * partitions (it is per consumer). */
		char kb[32];
		snprintf(kb, sizeof(kb), "%d", PROC_PREFETCH_KBYTES / p->group->n);
		if ((rc = id_config_set(ccfg, "kafka.queued.max.messages.kbytes", kb,
		                        err)) != 0)
			goto out;
	}
	if ((p->producer = id_kafka_producer_create(pcfg, "idstream-processor", txid,
	                                            err)) == NULL) {
		rc = err ? err->code : ID_EKAFKA;
		goto out;
	}
	p->consumer = id_kafka_consumer_create(ccfg, "idstream-processor", group,
	                                       proc_rebalance, p, err);
	if (p->consumer == NULL) {
		rc = err ? err->code : ID_EKAFKA;
		goto out;
	}
	int32_t nparts = 0;
	if ((rc = id_kafka_partition_count(p->consumer, p->in_topic, &nparts, err)) != 0)
		goto out;
	if (p->group != NULL)
		atomic_store(&p->group->nparts, nparts);
	rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(sub, p->in_topic, RD_KAFKA_PARTITION_UA);
	rd_kafka_resp_err_t se = rd_kafka_subscribe(p->consumer, sub);
	rd_kafka_topic_partition_list_destroy(sub);
	if (se != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, se, "subscribing to hr.events");
		goto out;
	}
	id_log_info("processor",
	            "consuming %s (%d partitions) as %s, transactional.id %s",
	            p->in_topic, nparts, group, txid);
	proc_waker_start(p);
	/* Since when the processor has been idle waiting for name answers. */
	struct timespec names_wait;
	clock_gettime(CLOCK_MONOTONIC, &names_wait);
	struct timespec now = names_wait; /* read at the top of each iteration */

	while (!cli_stop_requested && !p->fatal &&
	       !(p->group != NULL && atomic_load(&p->group->done))) {
		/* The clock, read once per iteration (one event takes
		 * microseconds, so it is never stale by more). */
		clock_gettime(CLOCK_MONOTONIC, &now);
		/* With a transaction open, wait no longer than what is left of
		 * batch_ms: a trickle of events must not keep it open. */
		int timeout = 50;
		if (p->txn_open) {
			double left = batch_ms - ms_between(&p->txn_started, &now);
			timeout = left <= 0 ? 0 : left < 50 ? (int)left + 1 : 50;
		}
		if (p->committing && timeout > 5)
			timeout = 5; /* to settle the commit soon after it is done */
		rd_kafka_message_t *m = rd_kafka_consumer_poll(p->consumer, timeout);
		if (m == NULL) {
			struct timespec polled;
			clock_gettime(CLOCK_MONOTONIC, &polled);
			p->input_wait_ms += ms_between(&now, &polled);
		}
		/* Reaching the end of a partition counts as input being idle. */
		bool idle = m == NULL || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
		if (m != NULL && p->idle_counted &&
		    m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
			/* Input again (a partition moved here): not done. */
			atomic_fetch_sub(&p->group->idle, 1);
			p->idle_counted = false;
		}
		if (m != NULL) {
			rc = proc_on_message(p, m, err);
			rd_kafka_message_destroy(m);
			if (rc != 0)
				goto out;
		}
		/* The commit in flight, settled once done (or once the output
		 * queued behind it grows large). */
		if (p->committing &&
		    (atomic_load(&p->cdone) || p->nqueue >= PROC_QUEUE_MAX) &&
		    (rc = proc_commit_finish(p, err)) != 0)
			goto out;
		/* Commit when the batch is full, old enough, or input is idle.
		 * The clock is read every 64 events (well under a millisecond
		 * apart) and whenever input was idle. */
		if (p->txn_open && (p->txn_events >= batch_max ||
		                    ((idle || (p->txn_events & 63) == 0) &&
		                     elapsed_ms(&p->txn_started) >= batch_ms) ||
		                    (idle && proc_caught_up(p)))) {
			if ((rc = proc_commit_go(p, false, err)) != 0)
				goto out;
		}
		if (until_idle && !p->txn_open && proc_caught_up(p)) {
			if ((rc = proc_commit_finish(p, err)) != 0)
				goto out;
			if (p->txn_open || !proc_caught_up(p))
				continue; /* rewound by an abort */
			/* Before stopping, publish the timers that are due by now
			 * and fold them (and those they make due in turn). */
			long before = p->stats->timers;
			clock_gettime(CLOCK_MONOTONIC, &p->timers_checked);
			if ((rc = proc_timers(p, err)) != 0)
				goto out;
			if (p->stats->timers != before)
				continue;
			/* Answers to our claims are input still to come. */
			if (p->names != NULL && !proc_names_settled(p)) {
				if (elapsed_ms(&names_wait) < PROC_NAMES_WAIT_MS)
					continue;
				id_log_warn("processor",
				            "stopping with name claims unanswered after "
				            "%d s (is the names arbiter running?)",
				            PROC_NAMES_WAIT_MS / 1000);
			}
			if (p->group != NULL) {
				/* Stay in the group until every thread is done. */
				if (!p->idle_counted) {
					atomic_fetch_add(&p->group->idle, 1);
					p->idle_counted = true;
				}
				if (atomic_load(&p->group->idle) < p->group->n)
					continue;
				/* Partitions the group gave to members gone by a
				 * kill -9 come to the threads once those members'
				 * sessions time out: wait for them that long. */
				if (atomic_load(&p->group->owned) < p->group->nparts &&
				    proc_mono_ms() - atomic_load(&p->group->changed_ms) <
				        p->group->wait_ms)
					continue;
				/* The others stop too, without waiting for the
				 * rebalance this thread's leaving starts. */
				atomic_store(&p->group->done, 1);
			}
			break;
		}
		names_wait = now;
		/* Not behind a commit in flight: the check waits for it (the
		 * timer index is written with it); it comes a moment later. */
		if (!p->committing &&
		    ms_between(&p->timers_checked, &now) >= p->timer_check_ms) {
			p->timers_checked = now;
			if ((rc = proc_timers(p, err)) != 0)
				goto out;
		}
	}
	if (p->fatal) {
		if (err)
			*err = p->fatal_err;
		rc = p->fatal_err.code ? p->fatal_err.code : ID_EKAFKA;
		goto out;
	}
	if ((rc = proc_commit_go(p, true, err)) != 0)
		goto out;
out:
	if (p->committing) {
		/* Stopping on an error: the commit in flight is settled (and
		 * stored) if it can be; the error is the one reported. */
		id_err_t ferr = {0};
		p->txn_open = false;
		proc_queue_drop(p);
		(void)proc_commit_finish(p, &ferr);
	}
	proc_committer_stop(p);
	proc_waker_stop(p);
	if (p->begun) {
		rd_kafka_error_t *e = rd_kafka_abort_transaction(p->producer, 30000);
		if (e != NULL)
			rd_kafka_error_destroy(e);
		p->begun = false;
	}
	if (p->txn_open)
		proc_overlay_drop(p);
	proc_queue_drop(p);
	free(p->queue);
	struct timespec cpu = {0};
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
	id_log_info("processor",
	            "%ld transactions; %.0f ms waiting for commits, %.0f ms for input, "
	            "%.0f ms of CPU on the fold thread",
	            p->stats->txns, p->commit_wait_ms, p->input_wait_ms,
	            (double)cpu.tv_sec * 1000 + (double)cpu.tv_nsec / 1e6);
	if (sync != NULL)
		sync->processor_idle = 1;
	if (names != NULL)
		names->processor_done = 1;
	if (p->claims_made > 0)
		id_log_info("processor", "%ld name claims and releases produced",
		            p->claims_made);
	fold_claims_fini(&p->claims);
	id_kafka_destroy(p->consumer);
	id_kafka_destroy(p->producer);
	/* After the producer: its messages pointed into the chunks. */
	for (size_t i = 0; i < p->nchunks; i++)
		free(p->chunks[i].data);
	free(p->chunks);
	policy_registry_destroy(p->registry);
	employee_record_fini(&p->scratch);
	codec_destroy(p->codec);
	proc_overlay_drop(p);
	id_hmap_fini(&p->overlay);
	for (size_t i = 0; i < p->npool; i++) {
		id_buf_fini(&p->pool[i]->bytes);
		free(p->pool[i]);
	}
	free(p->pool);
	free(p->dirty);
	id_hmap_fini(&p->inflight);
	state_batch_destroy(p->batch);
	if (!p->shared_db)
		state_store_close(p->db);
	id_config_destroy(pcfg);
	id_config_destroy(ccfg);
	employee_event_fini(&p->ev);
	id_buf_fini(&p->stored);
	id_buf_fini(&p->val);
	id_buf_fini(&p->buf);
	pthread_cond_destroy(&p->ccond);
	pthread_mutex_destroy(&p->cmu);
	free(p);
	return rc;
}

int processor_loop_names(const id_config_t *cfg, bool until_idle,
                         processor_stats_t *stats, stage_sync_t *sync,
                         names_sync_t *names, id_err_t *err)
{
	return proc_run(cfg, until_idle, stats, sync, names, NULL, NULL, 0, err);
}

/* A fold thread of processor.threads. */
typedef struct proc_thread {
	pthread_t tid;
	const id_config_t *cfg;
	bool until_idle;
	state_store_t *db;
	proc_group_t *group;
	int index;
	processor_stats_t stats;
	id_err_t err;
	int rc;
} proc_thread_t;

static void *proc_thread_main(void *arg)
{
	proc_thread_t *t = arg;
	t->rc = proc_run(t->cfg, t->until_idle, &t->stats, NULL, NULL, t->db, t->group,
	                 t->index, &t->err);
	if (t->rc != 0) {
		/* One thread's error stops the others: the process reports it. */
		id_log_error("processor", "fold thread %d: %s", t->index, t->err.msg);
		cli_stop_requested = 1;
	}
	return NULL;
}

/*
 * processor.threads fold threads, sharing one state store: records and
 * offsets are keyed by partition, each partition has one owner at a time,
 * and an owner that loses a partition commits and stores it before the
 * group hands it on (eager rebalancing), so the next owner reads exactly
 * what was committed.
 */
static int processor_threads(const id_config_t *cfg, bool until_idle, int n,
                             processor_stats_t *stats, id_err_t *err)
{
	state_store_t *db = NULL;
	int rc = proc_store_open(cfg, &db, err);
	if (rc != 0)
		return rc;
	proc_thread_t *ts = calloc((size_t)n, sizeof(*ts));
	proc_group_t group = {.n = n};
	const char *st = id_attrs_get(id_config_kafka(cfg), "session.timeout.ms");
	group.wait_ms = 2.0 * (st != NULL ? atof(st) : 45000.0) + 1000.0;
	atomic_store(&group.changed_ms, proc_mono_ms());
	int started = 0;
	if (ts == NULL) {
		state_store_close(db);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	for (int i = 0; i < n; i++) {
		ts[i].cfg = cfg;
		ts[i].until_idle = until_idle;
		ts[i].db = db;
		ts[i].group = &group;
		ts[i].index = i;
		if (pthread_create(&ts[i].tid, NULL, proc_thread_main, &ts[i]) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "cannot start fold thread %d", i);
			cli_stop_requested = 1;
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(ts[i].tid, NULL);
		stats->events += ts[i].stats.events;
		stats->replayed += ts[i].stats.replayed;
		stats->emitted += ts[i].stats.emitted;
		stats->rejected += ts[i].stats.rejected;
		stats->txns += ts[i].stats.txns;
		stats->timers += ts[i].stats.timers;
		if (rc == 0 && ts[i].rc != 0) {
			rc = ts[i].rc;
			if (err != NULL)
				*err = ts[i].err;
		}
	}
	free(ts);
	state_store_close(db);
	return rc;
}

mapping_t *processor_builtin_mapping(const id_config_t *cfg, id_err_t *err)
{
	mapping_timing_t t;
	const char *enable = id_config_str(cfg, "mapping.enable");
	const char *zone = id_config_str(cfg, "mapping.timezone");
	int64_t probe;
	mapping_timing_default(&t);
	t.create_days_before_start =
	    (int32_t)id_config_int(cfg, "mapping.create_days_before_start");
	t.delete_after_days = (int32_t)id_config_int(cfg, "mapping.delete_after_days");
	if (t.delete_after_days < 0)
		t.delete_after_days = MAPPING_NEVER;
	if (strcmp(enable, "start") != 0 && strcmp(enable, "create") != 0) {
		id_err_set(err, ID_EINVALID,
		           "mapping.enable \"%s\": expected start or create", enable);
		return NULL;
	}
	t.enable_at_create = strcmp(enable, "create") == 0;
	if (strlen(zone) >= sizeof(t.timezone) ||
	    tz_local_to_utc(zone, 2000, 1, 1, 0, 0, &probe, err) != 0) {
		id_err_wrap(err, "mapping.timezone");
		if (err != NULL && err->code == 0)
			id_err_set(err, ID_EINVALID, "mapping.timezone \"%s\": too long",
			           zone);
		return NULL;
	}
	memcpy(t.timezone, zone, strlen(zone) + 1);
	return mapping_create_default_timed(id_config_str(cfg, "mapping.mail_domain"), &t,
	                                    err);
}

static void process_usage(void)
{
	printf("usage: idstream process [--until-idle]\n"
	       "\n"
	       "Folds <prefix>.hr.events into desired identities on "
	       "<prefix>.identity.desired,\n"
	       "exactly once, with per-employee state in <state.dir>/processor. Run "
	       "several\n"
	       "processes with different processor.instance_id to share the partitions,\n"
	       "or set processor.threads to fold on several threads of one process.\n"
	       "\n"
	       "  --until-idle   stop once every assigned partition is caught up (with\n"
	       "                 processor.threads: once every thread is, and they hold\n"
	       "                 every partition or have waited twice the Kafka session\n"
	       "                 timeout for the rest)\n");
}

void processor_stats_print(const processor_stats_t *st)
{
	printf(
	    "processor: %ld events folded, %ld desired versions produced, %ld re-derived "
	    "after restart, %ld refused, %ld transactions\n",
	    st->events, st->emitted, st->replayed, st->rejected, st->txns);
}

int cmd_process(cli_t *cli, int argc, char **argv)
{
	bool until_idle = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			process_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--until-idle") == 0) {
			until_idle = true;
		} else {
			return cli_usage_error("process", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	processor_stats_t stats = {0};
	id_err_t err = {0};
	int threads = (int)id_config_int(cli->cfg, "processor.threads");
	int rc = threads > 1
	             ? processor_threads(cli->cfg, until_idle, threads, &stats, &err)
	             : processor_loop(cli->cfg, until_idle, &stats, NULL, &err);
	processor_stats_print(&stats);
	return rc == 0 ? CLI_EXIT_OK : cli_fail("process", &err);
}
