/*
 * sink.c — `idstream sink KIND`: the I/O shell that feeds desired identities
 * to a sink core (sinks/sink_*.c, behind cmd/sink_targets.h) and publishes
 * what it did.  One loop for every target kind.
 *
 * Consumes <prefix>.identity.desired in group <prefix>.sink.<target>
 * (read_committed).  For each desired version newer than the version
 * recorded as applied, the sink core reads the object, diffs and applies the
 * minimal operations; the applied version is then recorded and a SinkResult
 * is published to <prefix>.sink.results.  Offsets are committed after the
 * results are acknowledged, so a crash re-delivers at most the last batch —
 * which the version check and the diff turn into zero writes.
 *
 * Catch-up: at assignment the sink notes the end offset of each partition.
 * Until it has read that far it only remembers the latest version per
 * employee; then it applies those, and only those.  So a new target, or a
 * sink whose state was lost, never replays a hire-then-terminate pair as two
 * operations, and re-delivering the whole topic writes nothing.  While it
 * applies them it records the applied versions every 50 employees or every
 * second (the input offsets only once all are done), so a crash in a long
 * catch-up leaves a restart only the last few to read again.
 *
 * Mass-change guard.  A version that takes access away — it locks an account
 * whose last applied state is ACTIVE, or deletes one — is not applied at
 * once: it waits, persisted as pending, until no desired version has arrived
 * for sink.guard.settle_ms (at most ten times that), or until catch-up has
 * read its whole batch, or the sink is idle with --until-idle.  Then the
 * pending ones plus those applied within the last sink.guard.window_s are
 * compared with the limit: sink.guard.max_fraction of the active managed
 * accounts (accounts whose last applied state is ACTIVE, plus those disabled
 * within the window), the fraction being taken of at least
 * sink.guard.min_managed accounts, and at most sink.guard.max_count when that
 * is set.  The floor (default 50, so at least 5 per window) is there because
 * 10% of a handful of accounts is less than one: a 3-person deployment would
 * be held by every leaver, while a broken export that terminates a 40-person
 * company is still held.  (A floor rather than "no guard below the minimum",
 * so small deployments keep a guard by default.)
 * Within the limit they are applied; above it the target is HELD:
 * none of them is applied, each gets a HELD SinkResult (visible in `idstream
 * history` and `idstream held TARGET`), and every later take-away version of
 * that target joins the held set until an operator decides.  Updates, hires,
 * re-enables and other targets keep flowing.  A held or pending version
 * is dropped when a newer version of the employee arrives (the newer one is
 * judged on its own).  Only employees with an applied state count: with no
 * state there is no account known to lose (a new or rebuilt target).
 *
 * Operator decisions are events: `idstream approve|reject TARGET`, `idstream
 * sink retry TARGET` and `idstream reconcile TARGET` publish a JSON command
 * on <prefix>.sink.control (key = target name); every sink of that target
 * reads the whole topic without a consumer group from the position it keeps
 * in its state (first start: the beginning, before applying anything, so a
 * rebuilt state relearns which versions were rejected), carries the command
 * out and answers with a "done" message on the same topic.  approve applies
 * the listed held versions that are still held (and so still each
 * employee's latest); they do not count in the guard window.  reject
 * records them as decided without applying them (a NOOP SinkResult with
 * the note op "rejected" and an error saying the operator rejected it): they
 * are never retried, and a later version of the employee is applied
 * normally.  HELD results carry the note op "held" (attribute "state", old =
 * the account's state, new = the desired one) and the reason as error.
 *
 * Unreachable target: the same version is retried with exponential backoff
 * (sink.retry.initial_ms doubling up to sink.retry.max_ms, each delay drawn
 * between half and all of that — jitter, so restarted sinks do not probe in
 * step), never skipped; a Retry-After hint of the core (SCIM 429/503) is
 * waited out when longer.  After sink.circuit.failures consecutive failures
 * the circuit opens: one warning and one DEFERRED SinkResult for the waiting
 * employee, then quiet probes at the backoff pace; the first success closes
 * it (logged with the outage's length).  The loop does not poll Kafka while
 * it waits, so an outage longer than max.poll.interval.ms (librdkafka: 5
 * min) costs a rejoin of the consumer group afterwards — re-delivered
 * versions are then skipped by the version check.
 *
 * Concurrency: with sink.concurrency > 1 the loop gathers live messages
 * (and the catch-up batch) into batches of distinct employees — a second
 * message of an employee already in the batch applies the batch first —
 * and the target calls of a batch run in parallel (cmd/sink_pool.h, one
 * core handle per thread).  A core with batch hooks (sink_targets.h:
 * ldap) may finish some writes of the batch's applies once they are all
 * done (the ldap core: each group's new members in one modify), before
 * any result of the batch is used.  Everything else (version checks, the
 * guard, recording, parking, results, offsets) happens in this thread, in
 * input order, so the bookkeeping is exactly the serial one.  Reports whose
 * manager is created in the same batch are applied again after it.
 *
 * Rate limit: with sink.rate_limit > 0, the target writes of each apply are
 * paid for at that many per second before the next apply starts (an
 * identity's writes are never split, so bursts are at most one apply).
 *
 * Parked failures: a FAILED apply (the target refused this version, e.g. a
 * uid conflict) is parked with its error and payload and published as
 * FAILED.  The next version of the employee unparks it; `idstream sink retry
 * TARGET` applies the parked versions again (after the cause is fixed).
 *
 * Drift: `idstream reconcile TARGET` plans (or with --repair applies) every
 * managed employee's last applied desired identity against the live
 * object, so changes made by hand are reported or undone.  Without a list
 * of employees it also lists the accounts of the target's subtree that
 * carry no employee id this sink has decided a version for (unmanaged);
 * with reconcile.delete_unmanaged and --repair they are deleted, within
 * the guard's limit.  Commands wait while a catch-up batch is read, so the
 * sink knows every employee it manages before it judges an account.
 *
 * State key layout (state.dir/sink-<target>):
 *
 *   | key                   | value                                          |
 *   |-----------------------|------------------------------------------------|
 *   | 'V' employee_id       | be64 last decided version, u8 lifecycle state  |
 *   |                       | the account has (older stores: be64 only)      |
 *   | 'D' employee_id       | the last applied desired identity (encoded)    |
 *   | 'P' employee_id       | guard entry: be64 version, be64 since (ms),    |
 *   |                       | u8 from-state, u8 to-state, encoded desired    |
 *   | 'H' employee_id       | guard entry of a held version (same layout)    |
 *   | 'F' employee_id       | parked failure: be64 version, be64 at, be32    |
 *   |                       | error length, error, encoded desired           |
 *   | 'T' be64 at, emp_id   | empty: a take-away applied at `at` (window)    |
 *   | 'W' mgr NUL emp_id    | encoded desired waiting for its manager        |
 *   | 'C' be32 partition    | be64 next offset of <prefix>.sink.control      |
 *
 * 'V', 'D' and the removal of decided 'P'/'H'/'F' entries are written in one
 * batch once the versions' results are acknowledged; 'P', 'H' and 'F' are
 * written when they arise, before their input offset can be committed.
 *
 * Threading: one thread runs the loop; the control consumer is polled from it;
 * the pool's threads only call the core (sink_job_run) during a batch.
 */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "cmd/sink_pool.h"
#include "cmd/sink_targets.h"
#include "common/buf.h"
#include "common/failpoint.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "schemas/codec.h"
#include "state/store.h"

#define SINK_MAX_PARTITIONS STAGE_MAX_PARTITIONS
#define SINK_COMMIT_EVERY   500
/* While applying a catch-up batch, applied versions are recorded every this
 * many employees or milliseconds, whichever comes first. */
#define SINK_FLUSH_PERSIST_EVERY 50
#define SINK_FLUSH_PERSIST_MS    1000
#define SINK_CTL_MAX_PARTS       64
/* Lifecycle "state" of an account whose record predates stored states. */
#define SINK_STATE_UNKNOWN 0xFF
/* A Retry-After longer than this is not waited out in one piece. */
#define SINK_RETRY_AFTER_CAP_MS 600000
/* Drifted employees listed in a reconcile answer (the rest are counted). */
#define SINK_DRIFT_LIST_MAX 200

/* The newest desired version of an employee seen while catching up. */
typedef struct sink_pending {
	unsigned char *payload;
	size_t len;
	int32_t partition;
	int64_t offset;
} sink_pending_t;

/* A desired version read from identity.desired, waiting in a batch. */
typedef struct sink_msg {
	unsigned char *payload; /* owned by the batch (streaming) or borrowed */
	size_t len;
	int32_t partition;
	int64_t offset;
	char *key; /* employee id (the message key), owned like payload */
} sink_msg_t;

/* One target call of a batch, run on a pool thread (see sink_pool.h). */
typedef struct sink_job {
	desired_identity_t d;
	const void *payload;
	size_t len;
	int from; /* the account's state before, as sink_info() says */
	sink_result_t r;
	id_err_t err;
	int rc; /* the core's apply: 0 final, else unreachable */
} sink_job_t;

/* A take-away version kept back by the guard.  version 0 marks an entry
 * that has been decided (the map has no single-key delete). */
typedef struct guard_entry {
	int64_t version;
	int64_t since; /* wall clock ms when it was kept back */
	uint8_t from;  /* state of the account (last applied) */
	uint8_t to;    /* desired state */
	unsigned char *payload;
	size_t len;
} guard_entry_t;

typedef struct guard_set {
	id_hmap_t map; /* employee id → guard_entry_t* */
	size_t live;
	char tag; /* state key prefix: 'P' or 'H' */
} guard_set_t;

/* A decided version whose state records wait for its result's ack. */
typedef struct sink_rec {
	int64_t version;
	uint8_t state;          /* what the account is now */
	unsigned char *payload; /* applied desired; NULL: 'D' unchanged */
	size_t len;
	int64_t taken_at; /* ms: a take-away counted in the guard window; 0 */
} sink_rec_t;

typedef struct sink_run {
	const id_config_t *cfg;
	char target[128];
	char in_topic[256];
	char out_topic[256];
	char ctl_topic[256];
	rd_kafka_t *consumer;
	rd_kafka_t *producer;
	rd_kafka_t *ctl; /* control consumer; NULL when the topic is missing */
	state_store_t *db;
	codec_t *codec;
	const sink_target_ops_t *ops;
	void *target_h; /* the core's handle */
	sink_stats_t *stats;
	id_kafka_delivery_t delivery;
	int assigned[SINK_MAX_PARTITIONS];
	int64_t eof_at[SINK_MAX_PARTITIONS];      /* offset of the last EOF, -1 none */
	int64_t next[SINK_MAX_PARTITIONS];        /* next offset to commit, -1 none */
	int64_t catchup_end[SINK_MAX_PARTITIONS]; /* end offset at assignment, -1 done */
	int64_t
	    catchup_next[SINK_MAX_PARTITIONS]; /* next offset read while catching up */
	int32_t ctl_nparts;
	int64_t ctl_next[SINK_CTL_MAX_PARTS]; /* next control offset, -1 none */
	bool ctl_eof[SINK_CTL_MAX_PARTS];
	bool ctl_dirty;   /* ctl_next not yet written to the state */
	id_hmap_t latest; /* employee id → sink_pending_t*, during catch-up */
	id_hmap_t recs;   /* employee id → sink_rec_t*, awaiting sink_commit */
	long uncommitted;
	id_buf_t buf;

	/* Mass-change guard. */
	bool guard_on;
	double max_fraction;
	long max_count, min_managed;
	int64_t window_ms, settle_ms;
	guard_set_t pending, held;
	int64_t pending_first; /* monotonic ms when the first pending arrived */
	int64_t last_msg;      /* monotonic ms of the last desired version read */
	long active;           /* managed accounts whose state is ACTIVE */
	int64_t *window;       /* wall ms of take-aways applied, ascending */
	size_t nwindow, capwindow;
	char reason[1024]; /* why the target is held, for HELD results */

	/* Parked failures: employee id → int64_t* version (0: unparked). */
	id_hmap_t parked;
	size_t nparked;

	/* Retries and circuit breaker. */
	long retry_initial_ms, retry_max_ms;
	long circuit_failures;
	long failures; /* consecutive unreachable errors */
	bool circuit_open;
	int64_t circuit_since; /* monotonic ms */
	uint64_t rng;

	/* Rate limit: target writes per second (0: none).  rate_next is the
	 * monotonic ms (as a double, so slow rates keep their fractions) before
	 * which no further apply starts. */
	double rate;
	double rate_next;

	bool delete_unmanaged; /* reconcile.delete_unmanaged */

	/* sink.concurrency: handles[0] is target_h; the pool calls the core
	 * through all of them at once for a batch of distinct employees. */
	void **handles;
	size_t nhandles;
	sink_pool_t *pool;
	sink_msg_t *batch; /* live messages read, not yet applied */
	size_t nbatch, capbatch;
} sink_run_t;

#define APPLY_RELINK    1u /* again, now that the manager exists */
#define APPLY_APPROVED  2u /* released by an operator: not in the window */
#define APPLY_RECONCILE 4u /* drift repair of an applied version */

static void sink_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                           rd_kafka_topic_partition_list_t *parts, void *opaque);
static int sink_commit(sink_run_t *s, id_err_t *err);
static void sink_batch_drop(sink_run_t *s);

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

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static uint64_t sink_random(sink_run_t *s)
{
	/* xorshift64*: jitter only needs to differ between processes. */
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 0x2545F4914F6CDD1DULL;
}

static int key_emp(id_buf_t *b, char tag, const char *employee_id)
{
	id_buf_reset(b);
	if (id_buf_append_u8(b, (uint8_t)tag) || id_buf_append_str(b, employee_id))
		return ID_ENOMEM;
	return 0;
}

static const char *state_name(int st)
{
	if (st >= 0 && st < LC_STATE_COUNT)
		return lifecycle_state_name((lifecycle_state_t)st);
	return st == SINK_STATE_UNKNOWN ? "ACTIVE" : "NONE";
}

/* An account that can still lose access: ACTIVE, or recorded before states
 * were kept (counted as active, which errs on the side of holding). */
static bool state_live(int st)
{
	return st == LC_ACTIVE || st == SINK_STATE_UNKNOWN;
}

/* True when going from the account's state `from` (-1: no applied version,
 * no account known) to desired `to` takes access away: a lock of an active
 * account, or a delete. */
static bool takes_away(int from, lifecycle_state_t to)
{
	if (from < 0 || from == LC_DELETED)
		return false;
	if (to == LC_DELETED)
		return true;
	return state_live(from) && to != LC_ACTIVE;
}

/* ---------------------------------------------------------------- state */

/* The last decided version of employee_id (0: none) and, in *state, the
 * lifecycle state its account has (-1 when there is no version). */
static int64_t sink_info(sink_run_t *s, const char *employee_id, int *state)
{
	sink_rec_t *r = id_hmap_get(&s->recs, employee_id);
	if (r != NULL) {
		if (state != NULL)
			*state = r->state;
		return r->version;
	}
	int64_t ver = 0;
	int st = -1;
	if (key_emp(&s->buf, 'V', employee_id) == 0) {
		void *v = NULL;
		size_t vl = 0;
		if (state_store_get(s->db, s->buf.data, s->buf.len, &v, &vl, NULL) == 0 &&
		    vl >= 8) {
			ver = (int64_t)state_be64_get(v);
			st = vl >= 9 ? ((unsigned char *)v)[8] : SINK_STATE_UNKNOWN;
		}
		free(v);
	}
	if (state != NULL)
		*state = st;
	return ver;
}

static guard_entry_t *guard_get(const guard_set_t *g, const char *employee_id)
{
	guard_entry_t *e = id_hmap_get(&g->map, employee_id);
	return e != NULL && e->version > 0 ? e : NULL;
}

static void guard_set_clear(guard_set_t *g)
{
	for (size_t i = 0; i < g->map.cap; i++) {
		guard_entry_t *e = g->map.slots[i].value;
		if (g->map.slots[i].key != NULL && e != NULL) {
			free(e->payload);
			free(e);
		}
	}
	id_hmap_clear(&g->map);
	g->live = 0;
}

/* Marks e decided (in memory only; the caller takes care of the state). */
static void guard_kill(guard_set_t *g, guard_entry_t *e)
{
	free(e->payload);
	e->payload = NULL;
	e->len = 0;
	e->version = 0;
	if (--g->live == 0)
		guard_set_clear(g);
}

/* Adds or replaces the entry of employee_id (taking e). */
static int guard_put_mem(guard_set_t *g, const char *employee_id, guard_entry_t *e)
{
	guard_entry_t *old = id_hmap_get(&g->map, employee_id);
	if (old != NULL) {
		if (old->version == 0)
			g->live++;
		free(old->payload);
		*old = *e;
		free(e);
		return 0;
	}
	if (id_hmap_put(&g->map, employee_id, e) != 0)
		return ID_ENOMEM;
	g->live++;
	return 0;
}

static int guard_encode(id_buf_t *b, const guard_entry_t *e)
{
	unsigned char h[18];
	state_be64_put(h, (uint64_t)e->version);
	state_be64_put(h + 8, (uint64_t)e->since);
	h[16] = e->from;
	h[17] = e->to;
	id_buf_reset(b);
	if (id_buf_append(b, h, sizeof(h)) || id_buf_append(b, e->payload, e->len))
		return ID_ENOMEM;
	return 0;
}

static guard_entry_t *guard_decode(const void *v, size_t vl)
{
	const unsigned char *p = v;
	if (vl < 18)
		return NULL;
	guard_entry_t *e = calloc(1, sizeof(*e));
	if (e == NULL || (e->payload = malloc(vl - 18 ? vl - 18 : 1)) == NULL) {
		free(e);
		return NULL;
	}
	e->version = (int64_t)state_be64_get(p);
	e->since = (int64_t)state_be64_get(p + 8);
	e->from = p[16];
	e->to = p[17];
	e->len = vl - 18;
	memcpy(e->payload, p + 18, e->len);
	return e;
}

static int64_t *parked_get(const sink_run_t *s, const char *employee_id)
{
	int64_t *v = id_hmap_get(&s->parked, employee_id);
	return v != NULL && *v > 0 ? v : NULL;
}

static void parked_clear(sink_run_t *s)
{
	for (size_t i = 0; i < s->parked.cap; i++)
		if (s->parked.slots[i].key != NULL)
			free(s->parked.slots[i].value);
	id_hmap_clear(&s->parked);
	s->nparked = 0;
}

static void parked_kill(sink_run_t *s, int64_t *v)
{
	*v = 0;
	if (--s->nparked == 0)
		parked_clear(s);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void keys_free(char **keys, size_t n)
{
	for (size_t i = 0; keys != NULL && i < n; i++)
		free(keys[i]);
	free(keys);
}

/* Sorted copies of the keys whose value is live (live(value) true).
 * Ownership: free with keys_free().  NULL with *n == 0 when empty. */
static char **map_keys(const id_hmap_t *m, bool (*live)(const void *), size_t *n)
{
	char **keys = NULL;
	*n = 0;
	if (m->len == 0)
		return NULL;
	if ((keys = calloc(m->len, sizeof(*keys))) == NULL)
		return NULL;
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].key == NULL || !live(m->slots[i].value))
			continue;
		if ((keys[*n] = strdup(m->slots[i].key)) == NULL) {
			keys_free(keys, *n);
			*n = 0;
			return NULL;
		}
		(*n)++;
	}
	qsort(keys, *n, sizeof(*keys), cmp_str);
	return keys;
}

static bool guard_live(const void *v)
{
	return v != NULL && ((const guard_entry_t *)v)->version > 0;
}

static bool parked_live(const void *v)
{
	return v != NULL && *(const int64_t *)v > 0;
}

/*
 * Notes a decided version: applied (payload = the desired applied, state =
 * its lifecycle state) or rejected (payload NULL, state = the account's
 * unchanged state).  It is written to the state only once its SinkResult is
 * acknowledged (sink_commit), so a crash in between re-applies it — a no-op
 * by the diff — and publishes a result again instead of leaving a decided
 * version without any result.  Kept-back and parked versions it supersedes
 * are dropped now; their state entries go in the same batch.
 */
static int sink_record(sink_run_t *s, const char *employee_id, int64_t version, int state,
                       const void *payload, size_t len, int64_t taken_at, id_err_t *err)
{
	int prev = -1;
	sink_info(s, employee_id, &prev);
	sink_rec_t *r = id_hmap_get(&s->recs, employee_id);
	if (r == NULL) {
		if ((r = calloc(1, sizeof(*r))) == NULL ||
		    id_hmap_put(&s->recs, employee_id, r) != 0) {
			free(r);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
	}
	if (payload != NULL) {
		unsigned char *copy = malloc(len ? len : 1);
		if (copy == NULL)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		memcpy(copy, payload, len);
		free(r->payload);
		r->payload = copy;
		r->len = len;
	}
	r->version = version;
	r->state = (uint8_t)state;
	if (taken_at != 0)
		r->taken_at = taken_at;
	if (state_live(prev) && !state_live(state))
		s->active--;
	else if (!state_live(prev) && state_live(state))
		s->active++;
	guard_entry_t *g;
	if ((g = guard_get(&s->pending, employee_id)) != NULL && g->version <= version)
		guard_kill(&s->pending, g);
	if ((g = guard_get(&s->held, employee_id)) != NULL && g->version <= version)
		guard_kill(&s->held, g);
	int64_t *pk = parked_get(s, employee_id);
	if (pk != NULL && *pk <= version)
		parked_kill(s, pk);
	return 0;
}

static void sink_recs_drop(sink_run_t *s)
{
	for (size_t i = 0; i < s->recs.cap; i++) {
		sink_rec_t *r = s->recs.slots[i].value;
		if (s->recs.slots[i].key != NULL && r != NULL) {
			free(r->payload);
			free(r);
		}
	}
	id_hmap_clear(&s->recs);
}

/* Writes the noted versions and the control position in one batch. */
static int sink_persist(sink_run_t *s, id_err_t *err)
{
	if (s->recs.len == 0 && !s->ctl_dirty)
		return 0;
	state_batch_t *b = state_batch_create();
	if (b == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	int rc = 0;
	for (size_t i = 0; i < s->recs.cap && rc == 0; i++) {
		const char *emp = s->recs.slots[i].key;
		const sink_rec_t *r = s->recs.slots[i].value;
		if (emp == NULL || r == NULL)
			continue;
		unsigned char v[9];
		state_be64_put(v, (uint64_t)r->version);
		v[8] = r->state;
		rc = key_emp(&s->buf, 'V', emp);
		state_batch_put(b, s->buf.data, s->buf.len, v, sizeof(v));
		if (r->payload != NULL && (rc = key_emp(&s->buf, 'D', emp)) == 0)
			state_batch_put(b, s->buf.data, s->buf.len, r->payload, r->len);
		if (r->taken_at != 0) {
			unsigned char at[8];
			state_be64_put(at, (uint64_t)r->taken_at);
			id_buf_reset(&s->buf);
			if (id_buf_append_u8(&s->buf, 'T') ||
			    id_buf_append(&s->buf, at, 8) ||
			    id_buf_append_str(&s->buf, emp))
				rc = ID_ENOMEM;
			state_batch_put(b, s->buf.data, s->buf.len, "", 0);
		}
		/* Entries a newer kept-back or parked version wrote stay. */
		if (guard_get(&s->pending, emp) == NULL &&
		    key_emp(&s->buf, 'P', emp) == 0)
			state_batch_delete(b, s->buf.data, s->buf.len);
		if (guard_get(&s->held, emp) == NULL && key_emp(&s->buf, 'H', emp) == 0)
			state_batch_delete(b, s->buf.data, s->buf.len);
		if (parked_get(s, emp) == NULL && key_emp(&s->buf, 'F', emp) == 0)
			state_batch_delete(b, s->buf.data, s->buf.len);
	}
	if (s->ctl_dirty) {
		for (int32_t p = 0; p < s->ctl_nparts; p++) {
			if (s->ctl_next[p] < 0)
				continue;
			unsigned char k[5], v[8];
			k[0] = 'C';
			state_be32_put(k + 1, (uint32_t)p);
			state_be64_put(v, (uint64_t)s->ctl_next[p]);
			state_batch_put(b, k, sizeof(k), v, sizeof(v));
		}
	}
	if (rc != 0)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	else
		rc = state_batch_write(s->db, b, false, err);
	state_batch_destroy(b);
	if (rc == 0) {
		sink_recs_drop(s);
		s->ctl_dirty = false;
	}
	return rc;
}

/* Waits for every published result, writes the state, then commits the
 * consumed offsets. */
static int sink_commit(sink_run_t *s, id_err_t *err)
{
	while (s->delivery.pending > 0)
		rd_kafka_poll(s->producer, 100);
	if (s->delivery.first_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		int rc =
		    id_kafka_err(err, s->delivery.first_err, "publishing sink results");
		s->delivery.first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
		return rc;
	}
	int prc = sink_persist(s, err);
	if (prc != 0)
		return prc;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	for (int32_t i = 0; i < SINK_MAX_PARTITIONS; i++) {
		/* A partition whose catch-up versions are still only
		 * remembered (not applied) keeps its committed offset: moving
		 * it past them would lose them in a crash. */
		if (s->assigned[i] && s->next[i] >= 0 && s->catchup_next[i] < 0)
			rd_kafka_topic_partition_list_add(l, s->in_topic, i)->offset =
			    s->next[i];
	}
	int rc = 0;
	if (l->cnt > 0) {
		rd_kafka_resp_err_t e = rd_kafka_commit(s->consumer, l, 0);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
			rc = id_kafka_err(err, e, "committing sink offsets");
	}
	rd_kafka_topic_partition_list_destroy(l);
	if (rc == 0) {
		for (int32_t i = 0; i < SINK_MAX_PARTITIONS; i++)
			s->next[i] = -1;
		s->uncommitted = 0;
	}
	return rc;
}

static void sink_latest_drop(sink_run_t *s)
{
	for (size_t i = 0; i < s->latest.cap; i++) {
		sink_pending_t *pe = s->latest.slots[i].value;
		if (s->latest.slots[i].key != NULL && pe != NULL) {
			free(pe->payload);
			free(pe);
		}
	}
	id_hmap_clear(&s->latest);
}

static void sink_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                           rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	sink_run_t *s = opaque;
	id_log_info("sink", "%s %d partitions",
	            e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assigned" : "revoked",
	            parts->cnt);
	if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		rd_kafka_topic_partition_list_t *ends =
		    rd_kafka_topic_partition_list_copy(parts);
		for (int i = 0; i < ends->cnt; i++)
			ends->elems[i].offset = RD_KAFKA_OFFSET_END;
		rd_kafka_resp_err_t oe = rd_kafka_offsets_for_times(rk, ends, 10000);
		for (int i = 0; i < parts->cnt; i++) {
			int32_t p = parts->elems[i].partition;
			if (p >= 0 && p < SINK_MAX_PARTITIONS) {
				s->assigned[p] = 1;
				s->eof_at[p] = -1;
				s->next[p] = -1;
				s->catchup_next[p] = -1;
				/* Without the end offset, catch up until the first EOF.
				 */
				s->catchup_end[p] = oe == RD_KAFKA_RESP_ERR_NO_ERROR
				                        ? ends->elems[i].offset
				                        : INT64_MAX;
			}
		}
		rd_kafka_topic_partition_list_destroy(ends);
		rd_kafka_assign(rk, parts);
	} else {
		id_err_t err = {0};
		if (sink_commit(s, &err) != 0)
			id_log_warn("sink", "commit before rebalance: %s", err.msg);
		for (int i = 0; i < parts->cnt; i++) {
			int32_t p = parts->elems[i].partition;
			if (p >= 0 && p < SINK_MAX_PARTITIONS)
				s->assigned[p] = 0;
		}
		/* Versions remembered but not applied are read again by whoever
		 * gets the partitions: their offsets were never committed. */
		sink_latest_drop(s);
		sink_batch_drop(s);
		rd_kafka_assign(rk, NULL);
	}
}

static void sink_count(sink_run_t *s, const sink_result_t *r)
{
	sink_stats_t *st = s->stats;
	if (r->outcome == SINK_FAILED) {
		st->failed++;
		return;
	}
	if (r->outcome == SINK_NOOP || r->nops == 0) {
		st->noop++;
		return;
	}
	bool created = false, disabled = false, enabled = false;
	for (size_t i = 0; i < r->nops; i++) {
		const char *op = r->ops[i].op;
		if (strcmp(op, "add") == 0 || strcmp(op, "create") == 0)
			created = true;
		else if (strcmp(op, "disable") == 0)
			disabled = true;
		else if (strcmp(op, "enable") == 0)
			enabled = true;
	}
	if (created)
		st->created++;
	else if (disabled)
		st->disabled++;
	else if (enabled)
		st->enabled++;
	else
		st->updated++;
}

static int sink_produce(sink_run_t *s, const char *topic, const char *key,
                        const void *val, size_t len, id_err_t *err)
{
	int rc = 0;
	s->delivery.pending++;
	for (;;) {
		rd_kafka_resp_err_t e = rd_kafka_producev(
		    s->producer, RD_KAFKA_V_TOPIC(topic),
		    RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)val, len),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		    RD_KAFKA_V_OPAQUE(&s->delivery), RD_KAFKA_V_END);
		if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			rd_kafka_poll(s->producer, 100);
			continue;
		}
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			char what[300];
			snprintf(what, sizeof(what), "publishing to %s", topic);
			s->delivery.pending--;
			rc = id_kafka_err(err, e, what);
		}
		break;
	}
	rd_kafka_poll(s->producer, 0);
	return rc;
}

static int sink_publish(sink_run_t *s, const sink_result_t *r, id_err_t *err)
{
	id_buf_t out = ID_BUF_INIT;
	int rc = codec_encode_result(s->codec, r, &out, err);
	if (rc == 0)
		rc =
		    sink_produce(s, s->out_topic, r->employee_id, out.data, out.len, err);
	id_buf_fini(&out);
	return rc;
}

/* Publishes a result that is not an apply: HELD, DEFERRED, or a rejection
 * (NOOP).  note, when given, is a single op "note" on "state" from → to. */
static int sink_publish_note(sink_run_t *s, const char *employee_id, int64_t version,
                             sink_outcome_t outcome, const char *note, int from, int to,
                             const char *error, id_err_t *err)
{
	sink_result_t r;
	sink_result_init(&r);
	r.target = strdup(s->target);
	r.employee_id = strdup(employee_id);
	r.error = error != NULL ? strdup(error) : NULL;
	r.desired_version = version;
	r.outcome = outcome;
	r.at = wall_ms();
	int rc = 0;
	if (r.target == NULL || r.employee_id == NULL || (error != NULL && !r.error) ||
	    (note != NULL &&
	     sink_result_add_op(&r, note, "state", state_name(from), state_name(to))))
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	else
		rc = sink_publish(s, &r, err);
	sink_result_fini(&r);
	return rc;
}

/* ---------------------------------------------------------------- decoding */

/*
 * Decodes a desired identity and narrows it to this target's view
 * (desired_identity_target_view(): the policy's section named like the
 * target).  ID_ENOTFOUND when the policy declares no section of that name;
 * d then holds the whole identity, for the FAILED result.
 */
static int sink_decode(sink_run_t *s, const void *payload, size_t len,
                       desired_identity_t *d, id_err_t *err)
{
	int rc = codec_decode_desired(s->codec, payload, len, d, err);
	if (rc != 0)
		return rc;
	return desired_identity_target_view(d, s->target, err);
}

/* ---------------------------------------------------------------- parking */

/* Parks a version the target refused (FAILED): its error and payload are
 * kept until the next version of the employee or `idstream sink retry`.
 * Older kept-back versions of the employee go with it, in one batch. */
static int sink_park(sink_run_t *s, const desired_identity_t *d, const void *payload,
                     size_t len, const char *error, id_err_t *err)
{
	const char *emp = d->employee_id;
	const char *msg = error != NULL ? error : "failed";
	size_t ml = strlen(msg);
	unsigned char h[20];
	state_be64_put(h, (uint64_t)d->version);
	state_be64_put(h + 8, (uint64_t)wall_ms());
	state_be32_put(h + 16, (uint32_t)ml);
	id_buf_t v = ID_BUF_INIT;
	state_batch_t *b = state_batch_create();
	int rc = 0;
	if (b == NULL || id_buf_append(&v, h, sizeof(h)) || id_buf_append(&v, msg, ml) ||
	    id_buf_append(&v, payload, len) || key_emp(&s->buf, 'F', emp)) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	state_batch_put(b, s->buf.data, s->buf.len, v.data, v.len);
	guard_set_t *sets[2] = {&s->pending, &s->held};
	for (int i = 0; i < 2; i++) {
		guard_entry_t *g = guard_get(sets[i], emp);
		if (g != NULL && g->version <= d->version) {
			guard_kill(sets[i], g);
			if (key_emp(&s->buf, sets[i]->tag, emp) == 0)
				state_batch_delete(b, s->buf.data, s->buf.len);
		}
	}
	if ((rc = state_batch_write(s->db, b, false, err)) != 0)
		goto out;
	int64_t *pv = id_hmap_get(&s->parked, emp);
	if (pv == NULL) {
		if ((pv = calloc(1, sizeof(*pv))) == NULL ||
		    id_hmap_put(&s->parked, emp, pv) != 0) {
			free(pv);
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
	}
	if (*pv == 0)
		s->nparked++;
	*pv = d->version;
out:
	state_batch_destroy(b);
	id_buf_fini(&v);
	return rc;
}

/* ---------------------------------------------------------------- reaching */

/* Sleeps ms in slices, serving the producer, until stopped. */
static void sink_wait(sink_run_t *s, long ms)
{
	int64_t until = mono_ms() + ms;
	while (!cli_stop_requested) {
		int64_t left = until - mono_ms();
		if (left <= 0)
			break;
		rd_kafka_poll(s->producer, 0);
		sleep_ms(left < 100 ? (long)left : 100);
	}
}

/*
 * sink.rate_limit: the writes of one apply are paid for after it, by
 * pushing rate_next forward 1/rate s per write; the next apply waits for it.
 * An apply is never split, so a burst is at most one identity's writes
 * (a handful) above the rate, and the average stays at the rate.
 */
static void sink_rate_wait(sink_run_t *s)
{
	if (s->rate <= 0)
		return;
	double now = (double)mono_ms();
	if (s->rate_next > now)
		sink_wait(s, (long)(s->rate_next - now + 0.999));
}

static void sink_rate_charge(sink_run_t *s, uint64_t writes)
{
	if (s->rate <= 0 || writes == 0)
		return;
	double now = (double)mono_ms();
	if (s->rate_next < now)
		s->rate_next = now;
	s->rate_next += (double)writes * 1000.0 / s->rate;
}

/* The delay before retry number `attempt` (1-based): exponential, capped,
 * drawn between half and all of it. */
static long sink_backoff(sink_run_t *s, long attempt)
{
	long base = s->retry_initial_ms;
	for (long i = 1; i < attempt && base < s->retry_max_ms; i++)
		base *= 2;
	if (base > s->retry_max_ms)
		base = s->retry_max_ms;
	long half = base / 2;
	return half + (long)(sink_random(s) % (uint64_t)(base - half + 1));
}

/* The target answered: a failure streak ends, an open circuit closes. */
static void sink_reached(sink_run_t *s)
{
	if (s->circuit_open)
		id_log_info("sink",
		            "target %s: circuit closed: reachable again after %.1f s "
		            "and %ld failed attempts",
		            s->target, (double)(mono_ms() - s->circuit_since) / 1000.0,
		            s->failures);
	s->circuit_open = false;
	s->failures = 0;
}

/*
 * Calls the core until it gives the final outcome of d, however long the
 * target stays away (see "Unreachable target" above).  Returns non-zero only
 * when stopped or when a result cannot be published.
 */
static int sink_reach(sink_run_t *s, const desired_identity_t *d, sink_result_t *r,
                      int (*call)(void *, const desired_identity_t *, sink_result_t *,
                                  id_err_t *),
                      id_err_t *err)
{
	long attempt = 0;
	for (;;) {
		id_err_t aerr = {0};
		sink_result_fini(r);
		sink_result_init(r);
		sink_rate_wait(s);
		uint64_t w0 = s->ops->writes(s->target_h);
		int rc = call(s->target_h, d, r, &aerr);
		sink_rate_charge(s, s->ops->writes(s->target_h) - w0);
		if (rc == 0) {
			sink_reached(s);
			return 0;
		}
		if (cli_stop_requested)
			return id_err_set(err, ID_EINTERRUPTED,
			                  "stopped while %s was unreachable", s->target);
		s->failures++;
		attempt++;
		long delay = sink_backoff(s, attempt);
		int64_t ra = s->ops->retry_after_ms != NULL
		                 ? s->ops->retry_after_ms(s->target_h)
		                 : 0;
		if (ra > SINK_RETRY_AFTER_CAP_MS)
			ra = SINK_RETRY_AFTER_CAP_MS;
		if (ra > delay)
			delay = (long)ra;
		if (!s->circuit_open && s->failures >= s->circuit_failures) {
			s->circuit_open = true;
			s->circuit_since = mono_ms();
			id_log_warn(
			    "sink",
			    "target %s: circuit open after %ld consecutive failures "
			    "(%s); probing every %ld ms at most until it answers, "
			    "nothing is skipped",
			    s->target, s->failures, aerr.msg, s->retry_max_ms);
			char why[ID_ERR_MSG_MAX + 64];
			snprintf(why, sizeof(why), "target unreachable, circuit open: %s",
			         aerr.msg);
			rc = sink_publish_note(s, d->employee_id, d->version,
			                       SINK_DEFERRED, NULL, 0, 0, why, err);
			if (rc != 0)
				return rc;
		} else if (!s->circuit_open) {
			id_log_warn(
			    "sink",
			    "target %s unavailable (attempt %ld), retrying in %ld ms%s: "
			    "%s",
			    s->target, attempt, delay, ra > 0 ? " (Retry-After)" : "",
			    aerr.msg);
		} else {
			id_log_debug("sink",
			             "target %s: probe failed, next in %ld ms: %s",
			             s->target, delay, aerr.msg);
		}
		sink_wait(s, delay);
	}
}

/* ---------------------------------------------------------------- apply */

static int sink_resolve_waiting(sink_run_t *s, const char *manager_id, id_err_t *err);
static int window_push(sink_run_t *s, int64_t at, id_err_t *err);

/* The key of a report waiting for its manager's entry:
 * 'W' manager_id NUL employee_id. */
static int key_waiting(id_buf_t *b, const char *manager_id, const char *employee_id)
{
	id_buf_reset(b);
	if (id_buf_append_u8(b, 'W') || id_buf_append_str(b, manager_id) ||
	    id_buf_append_u8(b, 0) ||
	    (employee_id != NULL && id_buf_append_str(b, employee_id)))
		return ID_ENOMEM;
	return 0;
}

/*
 * Applies one desired identity (already decoded; payload is its encoding),
 * waiting while the target is unreachable, records the version (or parks
 * it when FAILED), and publishes the result; *outcome (optional) says how it
 * went.  A report whose manager has no entry yet is remembered under the
 * manager's id and applied again once the manager's entry is created, so
 * the manager attribute is set as soon as it can be.
 */
/*
 * What follows the core's final answer r for d (see sink_apply): records
 * the version or parks it, publishes the result, remembers a report whose
 * manager is missing.  *created says whether the account was created (the
 * caller then applies the reports waiting for it).  from is the account's
 * state before, as sink_info() said.
 */
static int sink_apply_done(sink_run_t *s, const desired_identity_t *d,
                           const void *payload, size_t len, unsigned flags, int from,
                           sink_result_t *r, sink_outcome_t *outcome, bool *created,
                           id_err_t *err)
{
	int rc = 0;
	*created = false;
	if (r->target == NULL)
		r->target = strdup(s->target);
	if (r->employee_id == NULL)
		r->employee_id = strdup(d->employee_id);
	r->desired_version = d->version;
	if (outcome != NULL)
		*outcome = r->outcome;
	/* A reconcile that finds nothing to repair leaves no trace. */
	if ((flags & APPLY_RECONCILE) && r->outcome == SINK_NOOP)
		return 0;
	if (r->nops > 0)
		id_failpoint_crash("sink.after_apply");
	if (r->outcome != SINK_FAILED) {
		int64_t at = 0;
		if (!(flags & (APPLY_APPROVED | APPLY_RECONCILE)) &&
		    takes_away(from, d->state)) {
			at = wall_ms();
			if ((rc = window_push(s, at, err)) != 0)
				return rc;
		}
		if ((rc = sink_record(s, d->employee_id, d->version, (int)d->state,
		                      payload, len, at, err)) != 0)
			return rc;
	} else {
		id_log_kv(ID_LOG_ERROR, "sink",
		          "apply failed; parked until the next version "
		          "or `idstream sink retry`",
		          "target", s->target, "employee", d->employee_id, "error",
		          r->error ? r->error : "", NULL);
		if ((rc = sink_park(s, d, payload, len, r->error, err)) != 0)
			return rc;
	}
	if ((flags & APPLY_RELINK) && r->outcome == SINK_APPLIED)
		s->stats->relinked++;
	else
		sink_count(s, r);
	if ((rc = sink_publish(s, r, err)) != 0)
		return rc;
	for (size_t i = 0; i < r->nops; i++) {
		if (strcmp(r->ops[i].op, "add") == 0 ||
		    strcmp(r->ops[i].op, "create") == 0) {
			*created = true;
		} else if (strcmp(r->ops[i].op, "manager_pending") == 0 &&
		           r->ops[i].new_value != NULL) {
			id_buf_t k = ID_BUF_INIT;
			rc = key_waiting(&k, r->ops[i].new_value, d->employee_id);
			if (rc == 0)
				rc = state_store_put(s->db, k.data, k.len, payload, len,
				                     err);
			id_buf_fini(&k);
			if (rc != 0)
				return rc;
		}
	}
	return 0;
}

static int sink_apply(sink_run_t *s, const desired_identity_t *d, const void *payload,
                      size_t len, unsigned flags, sink_outcome_t *outcome, id_err_t *err)
{
	sink_result_t r;
	int from = -1;
	bool created = false;
	sink_result_init(&r);
	sink_info(s, d->employee_id, &from);
	int rc = sink_reach(s, d, &r, s->ops->apply, err);
	if (rc == 0)
		rc = sink_apply_done(s, d, payload, len, flags, from, &r, outcome,
		                     &created, err);
	if (rc == 0 && created)
		rc = sink_resolve_waiting(s, d->employee_id, err);
	sink_result_fini(&r);
	return rc;
}

/* Applies again the reports that waited for manager_id's entry. */
static int sink_resolve_waiting(sink_run_t *s, const char *manager_id, id_err_t *err)
{
	id_buf_t prefix = ID_BUF_INIT;
	state_iter_t *it = NULL;
	state_batch_t *done = state_batch_create();
	desired_identity_t d;
	int rc = key_waiting(&prefix, manager_id, NULL);
	desired_identity_init(&d);
	if (rc != 0 || done == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = state_iter_create(s->db, prefix.data, prefix.len, &it, err)) != 0)
		goto out;
	const void *k, *v;
	size_t kl, vl;
	while ((rc = state_iter_next(it, &k, &kl, &v, &vl, err)) == 1) {
		state_batch_delete(done, k, kl);
		id_err_t derr = {0};
		if (sink_decode(s, v, vl, &d, &derr) != 0) {
			id_log_warn("sink", "dropping unreadable waiting report: %s",
			            derr.msg);
			continue;
		}
		/* A newer version applied since then carries its own wait. */
		if (d.version < sink_info(s, d.employee_id, NULL))
			continue;
		id_log_info("sink", "manager %s now exists: applying %s again",
		            manager_id, d.employee_id);
		if ((rc = sink_apply(s, &d, v, vl, APPLY_RELINK, NULL, err)) != 0)
			goto out;
	}
	if (rc < 0)
		goto out;
	rc = state_batch_write(s->db, done, false, err);
out:
	desired_identity_fini(&d);
	state_iter_destroy(it);
	state_batch_destroy(done);
	id_buf_fini(&prefix);
	return rc;
}

/* ---------------------------------------------------------------- guard */

/* Take-aways applied within the window (older ones are forgotten). */
static long guard_window_count(sink_run_t *s)
{
	int64_t from = wall_ms() - s->window_ms;
	size_t drop = 0;
	while (drop < s->nwindow && s->window[drop] < from)
		drop++;
	if (drop > 0) {
		memmove(s->window, s->window + drop,
		        (s->nwindow - drop) * sizeof(*s->window));
		s->nwindow -= drop;
	}
	return (long)s->nwindow;
}

/* The most take-aways the window may hold without an operator. */
static long guard_limit(const sink_run_t *s, long in_window, long *base_out)
{
	long base = s->active + in_window; /* accounts active at the window start */
	if (base < s->min_managed)
		base = s->min_managed;
	long lim = (long)floor(s->max_fraction * (double)base + 1e-9);
	if (s->max_count > 0 && s->max_count < lim)
		lim = s->max_count;
	if (base_out != NULL)
		*base_out = base;
	return lim;
}

/* Notes a take-away applied at wall ms `at` in the guard window. */
static int window_push(sink_run_t *s, int64_t at, id_err_t *err)
{
	if (s->nwindow == s->capwindow) {
		size_t nc = s->capwindow ? s->capwindow * 2 : 64;
		int64_t *nw = realloc(s->window, nc * sizeof(*nw));
		if (nw == NULL)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		s->window = nw;
		s->capwindow = nc;
	}
	s->window[s->nwindow++] = at;
	return 0;
}

/* Moves every pending entry to the held set (one batch), then publishes a
 * HELD result for each. */
static int guard_hold_pending(sink_run_t *s, long in_window, long limit, long base,
                              id_err_t *err)
{
	size_t n = 0;
	char **keys = map_keys(&s->pending.map, guard_live, &n);
	state_batch_t *b = state_batch_create();
	id_buf_t v = ID_BUF_INIT;
	int rc = 0;
	if ((keys == NULL && s->pending.live > 0) || b == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	snprintf(s->reason, sizeof(s->reason),
	         "held by the mass-change guard: the disables/deletes for target %s "
	         "within %lld s exceed the limit of %ld (%g%% of %ld active accounts%s); "
	         "`idstream approve %s` applies them, `idstream reject %s` drops them",
	         s->target, (long long)(s->window_ms / 1000), limit,
	         s->max_fraction * 100.0, base,
	         s->max_count > 0 ? ", capped by sink.guard.max_count" : "", s->target,
	         s->target);
	id_log_warn("sink",
	            "target %s HELD (%zu pending, %ld applied within the window): %s",
	            s->target, n, in_window, s->reason);
	for (size_t i = 0; i < n; i++) {
		guard_entry_t *g = guard_get(&s->pending, keys[i]);
		if (guard_encode(&v, g) || key_emp(&s->buf, 'H', keys[i])) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		state_batch_put(b, s->buf.data, s->buf.len, v.data, v.len);
		if (key_emp(&s->buf, 'P', keys[i]) == 0)
			state_batch_delete(b, s->buf.data, s->buf.len);
	}
	if ((rc = state_batch_write(s->db, b, false, err)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		guard_entry_t *g = guard_get(&s->pending, keys[i]);
		guard_entry_t *h = malloc(sizeof(*h));
		if (h == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		*h = *g;
		g->payload = NULL; /* moved */
		int64_t version = h->version;
		int from = h->from, to = h->to;
		guard_kill(&s->pending, g);
		if (guard_put_mem(&s->held, keys[i], h) != 0) {
			free(h->payload);
			free(h);
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		s->stats->held++;
		if ((rc = sink_publish_note(s, keys[i], version, SINK_HELD, "held", from,
		                            to, s->reason, err)) != 0)
			goto out;
	}
out:
	keys_free(keys, n);
	state_batch_destroy(b);
	id_buf_fini(&v);
	return rc;
}

/*
 * A take-away version d of an employee whose account is in state `from`:
 * held at once when the target is held, else pending until its batch is
 * complete — or held at once with the other pending ones as soon as they
 * are too many.
 */
static int guard_admit(sink_run_t *s, const desired_identity_t *d, const void *payload,
                       size_t len, int from, id_err_t *err)
{
	bool hold = s->held.live > 0;
	guard_set_t *set = hold ? &s->held : &s->pending;
	guard_entry_t *e = calloc(1, sizeof(*e));
	id_buf_t v = ID_BUF_INIT;
	int rc = 0;
	if (e == NULL || (e->payload = malloc(len ? len : 1)) == NULL) {
		free(e);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	memcpy(e->payload, payload, len);
	e->len = len;
	e->version = d->version;
	e->since = wall_ms();
	e->from = (uint8_t)from;
	e->to = (uint8_t)d->state;
	/* An older kept-back version of the employee is superseded. */
	state_batch_t *b = state_batch_create();
	if (b == NULL || guard_encode(&v, e) ||
	    key_emp(&s->buf, set->tag, d->employee_id)) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		free(e->payload);
		free(e);
		goto out;
	}
	state_batch_put(b, s->buf.data, s->buf.len, v.data, v.len);
	guard_set_t *other = hold ? &s->pending : &s->held;
	guard_entry_t *old = guard_get(other, d->employee_id);
	if (old != NULL) {
		guard_kill(other, old);
		if (key_emp(&s->buf, other->tag, d->employee_id) == 0)
			state_batch_delete(b, s->buf.data, s->buf.len);
	}
	if ((rc = state_batch_write(s->db, b, false, err)) != 0) {
		free(e->payload);
		free(e);
		goto out;
	}
	if (guard_put_mem(set, d->employee_id, e) != 0) {
		free(e->payload);
		free(e);
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if (hold) {
		s->stats->held++;
		rc = sink_publish_note(s, d->employee_id, d->version, SINK_HELD, "held",
		                       from, (int)d->state, s->reason, err);
		goto out;
	}
	if (s->pending.live == 1)
		s->pending_first = mono_ms();
	id_log_debug("sink", "target %s: %s v%lld (%s → %s) waits for its batch",
	             s->target, d->employee_id, (long long)d->version, state_name(from),
	             state_name((int)d->state));
	long in_window = guard_window_count(s), base = 0;
	long limit = guard_limit(s, in_window, &base);
	if (in_window + (long)s->pending.live > limit)
		rc = guard_hold_pending(s, in_window, limit, base, err);
out:
	state_batch_destroy(b);
	id_buf_fini(&v);
	return rc;
}

/*
 * Decides the pending take-aways once their batch is complete (force: now):
 * applied when they fit the limit with those of the window, else held.
 */
static int guard_decide(sink_run_t *s, bool force, id_err_t *err)
{
	if (s->pending.live == 0)
		return 0;
	if (!force) {
		int64_t now = mono_ms();
		if (now - s->last_msg < s->settle_ms &&
		    now - s->pending_first < 10 * s->settle_ms)
			return 0;
	}
	long in_window = guard_window_count(s), base = 0;
	long limit = guard_limit(s, in_window, &base);
	if (in_window + (long)s->pending.live > limit)
		return guard_hold_pending(s, in_window, limit, base, err);
	size_t n = 0;
	char **keys = map_keys(&s->pending.map, guard_live, &n);
	if (keys == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	id_log_info("sink",
	            "target %s: applying %zu disables/deletes (%ld in the last %lld s, "
	            "limit %ld)",
	            s->target, n, in_window, (long long)(s->window_ms / 1000), limit);
	int rc = 0;
	desired_identity_t d;
	desired_identity_init(&d);
	for (size_t i = 0; i < n && rc == 0; i++) {
		guard_entry_t *g = guard_get(&s->pending, keys[i]);
		if (g == NULL)
			continue;
		size_t len = g->len;
		unsigned char *p = malloc(len ? len : 1);
		if (p == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			break;
		}
		memcpy(p, g->payload, len);
		id_err_t derr = {0};
		if (sink_decode(s, p, len, &d, &derr) != 0) {
			id_log_error("sink",
			             "dropping unreadable pending version of %s: %s",
			             keys[i], derr.msg);
			guard_kill(&s->pending, g);
			if (key_emp(&s->buf, 'P', keys[i]) == 0)
				state_store_delete(s->db, s->buf.data, s->buf.len, NULL);
		} else {
			rc = sink_apply(s, &d, p, len, 0, NULL, err);
		}
		free(p);
	}
	desired_identity_fini(&d);
	keys_free(keys, n);
	return rc;
}

/* ---------------------------------------------------------------- input */

/*
 * Everything about a desired version before the target is called: decode
 * (into d, init'd by the caller), skip what is applied or superseded,
 * answer for a held one, let the guard keep back a take-away.  *apply is
 * set when d is to be applied now; *from is then the account's state.
 */
static int sink_admit(sink_run_t *s, const void *payload, size_t len, int32_t partition,
                      int64_t offset, desired_identity_t *d, int *from, bool *apply,
                      id_err_t *err)
{
	id_err_t derr = {0};
	*apply = false;
	*from = -1;
	int rc = sink_decode(s, payload, len, d, &derr);
	if (rc == ID_ENOTFOUND) {
		/* Readable, but the policy has nothing for this target: a
		 * FAILED result, parked for `idstream sink retry` once the
		 * target's name or the policy is fixed. */
		id_log_error("sink", "%s partition %d offset %lld: %s", s->in_topic,
		             partition, (long long)offset, derr.msg);
		s->stats->failed++;
		if ((rc = sink_publish_note(s, d->employee_id, d->version, SINK_FAILED,
		                            NULL, -1, -1, derr.msg, err)) == 0)
			rc = sink_park(s, d, payload, len, derr.msg, err);
		return rc;
	}
	if (rc != 0) {
		id_log_error("sink", "%s partition %d offset %lld: refused: %s",
		             s->in_topic, partition, (long long)offset, derr.msg);
		s->stats->failed++;
		return 0;
	}
	s->stats->seen++;
	if (d->version <= sink_info(s, d->employee_id, from)) {
		s->stats->skipped++;
		return 0;
	}
	guard_entry_t *p = guard_get(&s->pending, d->employee_id);
	guard_entry_t *h = guard_get(&s->held, d->employee_id);
	if ((p != NULL && p->version >= d->version) ||
	    (h != NULL && h->version > d->version)) {
		s->stats->skipped++;
		return 0;
	}
	if (h != NULL && h->version == d->version) {
		/* Read again after a restart: its HELD result may not have made
		 * it out before the crash; a duplicate is harmless. */
		return sink_publish_note(s, d->employee_id, d->version, SINK_HELD, "held",
		                         h->from, h->to, s->reason[0] ? s->reason : NULL,
		                         err);
	}
	if (s->guard_on && takes_away(*from, d->state))
		return guard_admit(s, d, payload, len, *from, err);
	*apply = true;
	return 0;
}

static int sink_handle(sink_run_t *s, const void *payload, size_t len, int32_t partition,
                       int64_t offset, id_err_t *err)
{
	desired_identity_t d;
	int from = -1;
	bool apply = false;
	desired_identity_init(&d);
	int rc = sink_admit(s, payload, len, partition, offset, &d, &from, &apply, err);
	if (rc == 0 && apply)
		rc = sink_apply(s, &d, payload, len, 0, NULL, err);
	desired_identity_fini(&d);
	return rc;
}

/* A pool job: one call of the core through handle h (a pool thread). */
static void sink_job_run(void *h, void *job, void *ctx)
{
	sink_job_t *j = job;
	const sink_target_ops_t *ops = ctx;
	j->rc = ops->apply(h, &j->d, &j->r, &j->err);
}

/*
 * Handles msgs[0..n) — each of another employee — as sink_handle() would
 * one after the other, with the target calls made in parallel by the pool.
 * Decisions before the calls, and everything after them (versions,
 * results, parking, reports waiting for a manager created in the batch),
 * are made here, in input order; an employee whose call found the target
 * unreachable is applied again through sink_apply(), with its backoff and
 * circuit breaker.
 */
static int sink_handle_batch(sink_run_t *s, const sink_msg_t *msgs, size_t n,
                             id_err_t *err)
{
	sink_job_t *jobs = calloc(n ? n : 1, sizeof(*jobs));
	const char **created = calloc(n ? n : 1, sizeof(*created));
	size_t nj = 0, nc = 0;
	int rc = 0;
	if (jobs == NULL || created == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		sink_job_t *j = &jobs[nj];
		bool apply = false;
		desired_identity_init(&j->d);
		sink_result_init(&j->r);
		rc = sink_admit(s, msgs[i].payload, msgs[i].len, msgs[i].partition,
		                msgs[i].offset, &j->d, &j->from, &apply, err);
		if (rc == 0 && apply) {
			j->payload = msgs[i].payload;
			j->len = msgs[i].len;
			nj++;
		} else {
			desired_identity_fini(&j->d);
			sink_result_fini(&j->r);
		}
	}
	if (rc != 0)
		goto out;
	/* The core may leave writes of the batch's applies to batch_end (see
	 * sink_targets.h), which completes their results. */
	if (s->ops->batch_begin != NULL)
		s->ops->batch_begin(s->target_h);
	sink_pool_run(s->pool, jobs, nj, sizeof(*jobs), sink_job_run, (void *)s->ops);
	if (s->ops->batch_end != NULL && (rc = s->ops->batch_end(s->target_h, err)) != 0)
		goto out;
	for (size_t i = 0; i < nj && rc == 0; i++) {
		sink_job_t *j = &jobs[i];
		if (j->rc != 0 || j->r.outcome == SINK_DEFERRED) {
			/* Unreachable: the serial path waits it out. */
			rc = sink_apply(s, &j->d, j->payload, j->len, 0, NULL, err);
			continue;
		}
		bool made = false;
		sink_reached(s);
		rc = sink_apply_done(s, &j->d, j->payload, j->len, 0, j->from, &j->r,
		                     NULL, &made, err);
		if (rc == 0 && made)
			created[nc++] = j->d.employee_id;
	}
	/* After the whole batch: a report applied next to its new manager has
	 * written its wait by now. */
	for (size_t i = 0; i < nc && rc == 0; i++)
		rc = sink_resolve_waiting(s, created[i], err);
out:
	for (size_t i = 0; jobs != NULL && i < nj; i++) {
		desired_identity_fini(&jobs[i].d);
		sink_result_fini(&jobs[i].r);
	}
	free(created);
	free(jobs);
	return rc;
}

/* Drops the live messages of the batch (after they were applied, or when
 * their partitions are revoked: the new owner reads them again). */
static void sink_batch_drop(sink_run_t *s)
{
	for (size_t i = 0; i < s->nbatch; i++) {
		free(s->batch[i].payload);
		free(s->batch[i].key);
	}
	s->nbatch = 0;
}

/* Applies the live messages of the batch, then marks their offsets done. */
static int sink_batch_flush(sink_run_t *s, id_err_t *err)
{
	if (s->nbatch == 0)
		return 0;
	int rc = sink_handle_batch(s, s->batch, s->nbatch, err);
	if (rc == 0) {
		for (size_t i = 0; i < s->nbatch; i++) {
			int32_t p = s->batch[i].partition;
			if (s->batch[i].offset + 1 > s->next[p])
				s->next[p] = s->batch[i].offset + 1;
			s->uncommitted++;
		}
	}
	sink_batch_drop(s);
	return rc;
}

/* Most live messages in one batch. */
static size_t sink_batch_max(const sink_run_t *s)
{
	size_t n = sink_pool_width(s->pool) * 8;
	return n > 256 ? 256 : n;
}

/* Adds a live message to the batch, applying the batch first when it holds
 * the same employee already (their order matters) or is full. */
static int sink_batch_add(sink_run_t *s, const rd_kafka_message_t *m, id_err_t *err)
{
	int rc = 0;
	bool same = false;
	for (size_t i = 0; i < s->nbatch && !same; i++)
		same = s->batch[i].key != NULL && m->key != NULL &&
		       strlen(s->batch[i].key) == m->key_len &&
		       memcmp(s->batch[i].key, m->key, m->key_len) == 0;
	if (same || s->nbatch >= sink_batch_max(s))
		if ((rc = sink_batch_flush(s, err)) != 0)
			return rc;
	if (s->nbatch == s->capbatch) {
		size_t nc = s->capbatch ? s->capbatch * 2 : 16;
		sink_msg_t *nb = realloc(s->batch, nc * sizeof(*nb));
		if (nb == NULL)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		s->batch = nb;
		s->capbatch = nc;
	}
	sink_msg_t *b = &s->batch[s->nbatch];
	b->payload = malloc(m->len ? m->len : 1);
	b->key = m->key != NULL ? strndup(m->key, m->key_len) : NULL;
	if (b->payload == NULL || (m->key != NULL && b->key == NULL)) {
		free(b->payload);
		free(b->key);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	memcpy(b->payload, m->payload, m->len);
	b->len = m->len;
	b->partition = m->partition;
	b->offset = m->offset;
	s->nbatch++;
	return 0;
}

/* Remembers the newest version of the message's employee while catching up. */
static int sink_remember(sink_run_t *s, const rd_kafka_message_t *m, id_err_t *err)
{
	char key[512];
	if (m->key == NULL || m->key_len == 0 || m->key_len >= sizeof(key)) {
		/* Not one of ours; the decode in sink_handle names the problem. */
		return sink_handle(s, m->payload, m->len, m->partition, m->offset, err);
	}
	memcpy(key, m->key, m->key_len);
	key[m->key_len] = '\0';
	sink_pending_t *pe = id_hmap_get(&s->latest, key);
	if (pe == NULL) {
		if ((pe = calloc(1, sizeof(*pe))) == NULL ||
		    id_hmap_put(&s->latest, key, pe) != 0) {
			free(pe);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
	}
	unsigned char *copy = malloc(m->len ? m->len : 1);
	if (copy == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	memcpy(copy, m->payload, m->len);
	free(pe->payload);
	pe->payload = copy;
	pe->len = m->len;
	pe->partition = m->partition;
	pe->offset = m->offset;
	return 0;
}

/* Applies the remembered newest versions (in employee id order), then
 * marks everything read while catching up as done.  Take-aways among them
 * are all counted by the guard before any of them is applied. */
static int sink_flush_latest(sink_run_t *s, id_err_t *err)
{
	int rc = 0;
	const char **keys = NULL;
	size_t n = 0;
	if (s->latest.len > 0) {
		keys = malloc(s->latest.len * sizeof(*keys));
		if (keys == NULL)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		for (size_t i = 0; i < s->latest.cap; i++)
			if (s->latest.slots[i].key != NULL)
				keys[n++] = s->latest.slots[i].key;
		qsort(keys, n, sizeof(*keys), cmp_str);
		id_log_info("sink",
		            "target %s: caught up; applying the latest version of %zu "
		            "employees",
		            s->target, n);
	}
	int64_t persisted = mono_ms();
	size_t step = sink_pool_width(s->pool) > 1 ? sink_batch_max(s) : 1;
	sink_msg_t *chunk = step > 1 ? calloc(step, sizeof(*chunk)) : NULL;
	if (step > 1 && chunk == NULL)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	for (size_t i = 0; i < n && rc == 0; i += step) {
		if (step == 1) {
			sink_pending_t *pe = id_hmap_get(&s->latest, keys[i]);
			rc = sink_handle(s, pe->payload, pe->len, pe->partition,
			                 pe->offset, err);
		} else {
			/* Distinct employees by construction: one batch. */
			size_t k = 0;
			for (; k < step && i + k < n; k++) {
				sink_pending_t *pe = id_hmap_get(&s->latest, keys[i + k]);
				chunk[k] = (sink_msg_t){pe->payload, pe->len,
				                        pe->partition, pe->offset, NULL};
			}
			rc = sink_handle_batch(s, chunk, k, err);
		}
		/* A catch-up can take minutes (a new target, thousands of
		 * accounts): record what is done as it goes, so a crash costs
		 * a restart at most the last few applies read again (and their
		 * results published again as NOOP), not all of them.  The
		 * input offsets stay where they are until the whole batch is
		 * done. */
		if (rc == 0 && s->recs.len > 0 &&
		    (s->recs.len >= SINK_FLUSH_PERSIST_EVERY ||
		     mono_ms() - persisted >= SINK_FLUSH_PERSIST_MS)) {
			/* Recording waits for the results' acks (a few
			 * milliseconds): waiting for a moment when none is in
			 * flight would rarely come while applies go on, and a
			 * crash would then read everything again. */
			rc = sink_commit(s, err);
			persisted = mono_ms();
		}
	}
	free(chunk);
	free(keys);
	if (rc == 0)
		rc = guard_decide(s, true, err);
	if (rc != 0)
		return rc;
	sink_latest_drop(s);
	for (int32_t p = 0; p < SINK_MAX_PARTITIONS; p++) {
		if (s->assigned[p] && s->catchup_next[p] >= 0) {
			if (s->catchup_next[p] > s->next[p])
				s->next[p] = s->catchup_next[p];
			s->catchup_next[p] = -1;
			s->uncommitted++;
		}
	}
	return 0;
}

/* True when offsets read while catching up still wait to be committed. */
static bool sink_pending_catchup(const sink_run_t *s)
{
	for (int32_t i = 0; i < SINK_MAX_PARTITIONS; i++)
		if (s->assigned[i] && s->catchup_next[i] >= 0)
			return true;
	return false;
}

static bool sink_catching_up(const sink_run_t *s)
{
	for (int32_t i = 0; i < SINK_MAX_PARTITIONS; i++)
		if (s->assigned[i] && s->catchup_end[i] >= 0)
			return true;
	return false;
}

/* True when every assigned partition is at its end and, when ends is given,
 * that end is at or past ends[partition] (what the processor produced). */
static bool sink_caught_up(sink_run_t *s, const int64_t *ends)
{
	int n = 0;
	if (s->latest.len > 0 || s->nbatch > 0 || sink_catching_up(s))
		return false;
	for (int32_t i = 0; i < SINK_MAX_PARTITIONS; i++) {
		if (!s->assigned[i])
			continue;
		if (s->eof_at[i] < 0 || (ends != NULL && s->eof_at[i] < ends[i]))
			return false;
		n++;
	}
	return n > 0;
}

/* ---------------------------------------------------------------- control */

/* The employee ids of a command ("employees": [...]); NULL: all. */
static bool ctl_wants(const json_t *employees, const char *employee_id)
{
	if (!json_is_array(employees) || json_array_size(employees) == 0)
		return true;
	size_t i;
	const json_t *e;
	json_array_foreach(employees, i, e)
	{
		if (json_is_string(e) && strcmp(json_string_value(e), employee_id) == 0)
			return true;
	}
	return false;
}

static void ctl_count(json_t *counts, const char *what)
{
	json_t *c = json_object_get(counts, what);
	json_object_set_new(counts, what,
	                    json_integer(c ? json_integer_value(c) + 1 : 1));
}

static void ctl_count_outcome(json_t *counts, sink_outcome_t o)
{
	ctl_count(counts, o == SINK_FAILED ? "failed"
	                  : o == SINK_NOOP ? "unchanged"
	                                   : "applied");
}

/* approve: applies the listed versions that are still held. */
static int ctl_approve(sink_run_t *s, const json_t *items, json_t *counts, id_err_t *err)
{
	desired_identity_t d;
	desired_identity_init(&d);
	int rc = 0;
	size_t i;
	const json_t *it;
	json_array_foreach(items, i, it)
	{
		const char *emp = json_string_value(json_object_get(it, "employee_id"));
		int64_t ver = json_integer_value(json_object_get(it, "version"));
		guard_entry_t *g = emp != NULL ? guard_get(&s->held, emp) : NULL;
		if (g == NULL || g->version != ver) {
			ctl_count(counts, "not_held");
			continue;
		}
		size_t len = g->len;
		unsigned char *p = malloc(len ? len : 1);
		if (p == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			break;
		}
		memcpy(p, g->payload, len);
		id_err_t derr = {0};
		sink_outcome_t o = SINK_FAILED;
		if (sink_decode(s, p, len, &d, &derr) != 0) {
			id_log_error("sink", "held version of %s unreadable: %s", emp,
			             derr.msg);
			ctl_count(counts, "failed");
		} else if (d.version <= sink_info(s, emp, NULL)) {
			guard_kill(&s->held, g);
			if (key_emp(&s->buf, 'H', emp) == 0)
				state_store_delete(s->db, s->buf.data, s->buf.len, NULL);
			ctl_count(counts, "not_held");
		} else if ((rc = sink_apply(s, &d, p, len, APPLY_APPROVED, &o, err)) ==
		           0) {
			ctl_count_outcome(counts, o);
		}
		free(p);
		if (rc != 0)
			break;
	}
	desired_identity_fini(&d);
	return rc;
}

/* reject: records the listed held versions as decided, unapplied. */
static int ctl_reject(sink_run_t *s, const json_t *items, const char *actor,
                      json_t *counts, id_err_t *err)
{
	char why[1024];
	snprintf(why, sizeof(why),
	         "rejected by the operator (%s, `idstream reject %s`): not applied; a "
	         "later version of the employee is applied normally",
	         actor, s->target);
	int rc = 0;
	size_t i;
	const json_t *it;
	json_array_foreach(items, i, it)
	{
		const char *emp = json_string_value(json_object_get(it, "employee_id"));
		int64_t ver = json_integer_value(json_object_get(it, "version"));
		if (emp == NULL || ver <= 0) {
			ctl_count(counts, "not_held");
			continue;
		}
		guard_entry_t *g = guard_get(&s->held, emp);
		guard_entry_t *p = guard_get(&s->pending, emp);
		int from = -1;
		int64_t applied = sink_info(s, emp, &from);
		if (g != NULL && g->version == ver) {
			int to = g->to;
			from = g->from;
			rc = sink_record(s, emp, ver, from, NULL, 0, 0, err);
			if (rc == 0)
				rc = sink_publish_note(s, emp, ver, SINK_NOOP, "rejected",
				                       from, to, why, err);
			if (rc != 0)
				break;
			ctl_count(counts, "rejected");
		} else if (g == NULL && (p == NULL || p->version < ver) &&
		           ver > applied) {
			/* Not seen yet: this state was rebuilt and the command is
			 * read again.  Record the decision before the version
			 * arrives, so it is not applied after all. */
			if ((rc = sink_record(s, emp, ver,
			                      from < 0 ? SINK_STATE_UNKNOWN : from, NULL,
			                      0, 0, err)) != 0)
				break;
			ctl_count(counts, "recorded");
		} else {
			ctl_count(counts, "not_held");
		}
	}
	return rc;
}

/* sink retry: applies the parked versions again. */
static int ctl_retry(sink_run_t *s, const json_t *employees, json_t *counts,
                     id_err_t *err)
{
	size_t n = 0;
	char **keys = map_keys(&s->parked, parked_live, &n);
	if (keys == NULL && s->nparked > 0)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	desired_identity_t d;
	desired_identity_init(&d);
	id_buf_t v = ID_BUF_INIT;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (!ctl_wants(employees, keys[i]))
			continue;
		if (key_emp(&s->buf, 'F', keys[i]) != 0 ||
		    state_store_get_buf(s->db, s->buf.data, s->buf.len, &v, NULL) != 0 ||
		    v.len < 20) {
			ctl_count(counts, "failed");
			continue;
		}
		size_t ml = state_be32_get(v.data + 16);
		if (20 + ml > v.len) {
			ctl_count(counts, "failed");
			continue;
		}
		const unsigned char *payload = v.data + 20 + ml;
		size_t len = v.len - 20 - ml;
		id_err_t derr = {0};
		sink_outcome_t o = SINK_FAILED;
		if (sink_decode(s, payload, len, &d, &derr) != 0) {
			id_log_error("sink", "parked version of %s unreadable: %s",
			             keys[i], derr.msg);
			ctl_count(counts, "failed");
			continue;
		}
		if (d.version <= sink_info(s, keys[i], NULL)) {
			int64_t *pk = parked_get(s, keys[i]);
			if (pk != NULL)
				parked_kill(s, pk);
			state_store_delete(s->db, s->buf.data, s->buf.len, NULL);
			ctl_count(counts, "superseded");
			continue;
		}
		/* The payload lives in v, which sink_apply does not touch. */
		unsigned char *copy = malloc(len ? len : 1);
		if (copy == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			break;
		}
		memcpy(copy, payload, len);
		rc = sink_apply(s, &d, copy, len, 0, &o, err);
		free(copy);
		if (rc == 0)
			ctl_count_outcome(counts, o);
	}
	desired_identity_fini(&d);
	id_buf_fini(&v);
	keys_free(keys, n);
	return rc;
}

static json_t *ctl_ops_json(const sink_result_t *r)
{
	json_t *ops = json_array();
	for (size_t i = 0; i < r->nops; i++) {
		const sink_op_t *o = &r->ops[i];
		json_array_append_new(ops,
		                      json_pack("{s:s, s:s?, s:s?, s:s?}", "op", o->op,
		                                "attribute", o->attribute, "old",
		                                o->old_value, "new", o->new_value));
	}
	return ops;
}

/* True when the sink knows every employee it manages: partitions are
 * assigned and their catch-up batch is applied.  Before that, an account
 * whose employee's first version is still unread would look unmanaged. */
static bool sink_settled(const sink_run_t *s)
{
	bool any = false;
	for (int32_t i = 0; i < SINK_MAX_PARTITIONS; i++)
		if (s->assigned[i])
			any = true;
	return any && !sink_catching_up(s) && s->latest.len == 0;
}

/* An account is managed when it carries the id of an employee this sink
 * has decided a version for (or keeps one back, or parked one). */
static bool sink_manages(sink_run_t *s, const char *employee_id)
{
	return employee_id != NULL && (sink_info(s, employee_id, NULL) > 0 ||
	                               guard_get(&s->pending, employee_id) != NULL ||
	                               guard_get(&s->held, employee_id) != NULL ||
	                               parked_get(s, employee_id) != NULL);
}

/*
 * The accounts of the target's managed subtree that no employee of this
 * sink owns: listed in `unmanaged`, counted as "unmanaged"; with repair and
 * reconcile.delete_unmanaged they are deleted — unless their number, with
 * the disables and deletes of the guard window and those pending, is over
 * the mass-change limit (then none is, "unmanaged_held").  Each deletion is
 * published as an APPLIED SinkResult (op delete_unmanaged) keyed by the
 * account's employee id, or "unmanaged:<name>" when it carries none.
 */
static int ctl_unmanaged(sink_run_t *s, bool repair, json_t *counts, json_t *unmanaged,
                         id_err_t *err)
{
	if (!sink_settled(s)) {
		json_object_set_new(counts, "unmanaged_not_ready", json_integer(1));
		return 0;
	}
	sink_account_list_t all;
	sink_account_list_init(&all);
	id_err_t lerr = {0};
	size_t *idx = NULL, n = 0;
	int rc = 0;
	if (s->ops->accounts(s->target_h, &all, &lerr) != 0) {
		id_log_warn("sink", "target %s: listing its accounts failed: %s",
		            s->target, lerr.msg);
		json_object_set_new(counts, "unmanaged_list_failed", json_integer(1));
		goto out;
	}
	if (all.n > 0 && (idx = malloc(all.n * sizeof(*idx))) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < all.n; i++) {
		if (sink_manages(s, all.v[i].employee_id))
			continue;
		idx[n++] = i;
		ctl_count(counts, "unmanaged");
		if (json_array_size(unmanaged) < SINK_DRIFT_LIST_MAX)
			json_array_append_new(
			    unmanaged, json_pack("{s:s, s:s?, s:s?}", "ref", all.v[i].ref,
			                         "name", all.v[i].name, "employee_id",
			                         all.v[i].employee_id));
	}
	if (n == 0 || !repair || !s->delete_unmanaged)
		goto out;
	if (s->guard_on) {
		long in_window = guard_window_count(s), base = 0;
		long limit = guard_limit(s, in_window, &base);
		if (in_window + (long)s->pending.live + (long)n > limit) {
			id_log_warn(
			    "sink",
			    "target %s: not deleting %zu unmanaged accounts: with "
			    "%ld disables/deletes in the last %lld s and %zu "
			    "pending that is over the mass-change limit of %ld",
			    s->target, n, in_window, (long long)(s->window_ms / 1000),
			    s->pending.live, limit);
			json_object_set_new(counts, "unmanaged_held",
			                    json_integer((json_int_t)n));
			json_object_set_new(counts, "unmanaged_limit",
			                    json_integer(limit));
			goto out;
		}
	}
	for (size_t k = 0; k < n && rc == 0; k++) {
		const sink_account_t *a = &all.v[idx[k]];
		id_err_t rerr = {0};
		if (s->ops->remove(s->target_h, a->ref, &rerr) != 0) {
			id_log_warn("sink", "target %s: deleting unmanaged %s failed: %s",
			            s->target, a->ref, rerr.msg);
			ctl_count(counts, "unmanaged_failed");
			continue;
		}
		int64_t at = wall_ms();
		if ((rc = window_push(s, at, err)) != 0)
			break;
		ctl_count(counts, "unmanaged_deleted");
		id_log_kv(ID_LOG_INFO, "sink", "deleted an unmanaged account", "target",
		          s->target, "account", a->ref, NULL);
		char key[600];
		snprintf(key, sizeof(key), "%s%s", a->employee_id ? "" : "unmanaged:",
		         a->employee_id ? a->employee_id
		         : a->name      ? a->name
		                        : a->ref);
		sink_result_t r;
		sink_result_init(&r);
		r.target = strdup(s->target);
		r.employee_id = strdup(key);
		r.outcome = SINK_APPLIED;
		r.at = at;
		if (r.target == NULL || r.employee_id == NULL ||
		    sink_result_add_op(&r, "delete_unmanaged", "dn", a->ref, NULL) != 0)
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
		else
			rc = sink_publish(s, &r, err);
		sink_result_fini(&r);
	}
out:
	free(idx);
	sink_account_list_fini(&all);
	return rc;
}

/* reconcile: plans (or, with repair, applies) every managed employee's last
 * applied desired identity against the live object, then lists (with
 * reconcile.delete_unmanaged and repair: deletes) the accounts nobody owns. */
static int ctl_reconcile(sink_run_t *s, const json_t *employees, bool repair,
                         json_t *counts, json_t *drift, json_t *unmanaged, id_err_t *err)
{
	if (!repair && s->ops->plan == NULL) {
		json_object_set_new(counts, "unsupported", json_integer(1));
		return 0;
	}
	state_iter_t *it = NULL;
	desired_identity_t d;
	sink_result_t r;
	desired_identity_init(&d);
	sink_result_init(&r);
	unsigned char tag = 'D';
	int rc = state_iter_create(s->db, &tag, 1, &it, err);
	const void *k, *v;
	size_t kl, vl;
	while (rc == 0 && (rc = state_iter_next(it, &k, &kl, &v, &vl, err)) == 1) {
		rc = 0;
		id_err_t derr = {0};
		if (sink_decode(s, v, vl, &d, &derr) != 0 ||
		    !ctl_wants(employees, d.employee_id))
			continue;
		ctl_count(counts, "checked");
		sink_outcome_t o = SINK_NOOP;
		if (repair) {
			rc = sink_apply(s, &d, v, vl, APPLY_RECONCILE, &o, err);
			if (rc == 0 && o == SINK_APPLIED)
				ctl_count(counts, "repaired");
			else if (rc == 0 && o == SINK_FAILED)
				ctl_count(counts, "failed");
			continue;
		}
		if ((rc = sink_reach(s, &d, &r, s->ops->plan, err)) != 0)
			break;
		if (r.outcome == SINK_FAILED) {
			ctl_count(counts, "failed");
		} else if (r.outcome == SINK_APPLIED) {
			ctl_count(counts, "drifted");
			if (json_array_size(drift) < SINK_DRIFT_LIST_MAX)
				json_array_append_new(
				    drift, json_pack("{s:s, s:I, s:o}", "employee_id",
				                     d.employee_id, "version",
				                     (json_int_t)d.version, "ops",
				                     ctl_ops_json(&r)));
		}
	}
	if (rc == 1)
		rc = 0;
	sink_result_fini(&r);
	desired_identity_fini(&d);
	state_iter_destroy(it);
	if (rc == 0 && json_array_size(employees) == 0 && s->ops->accounts != NULL)
		rc = ctl_unmanaged(s, repair, counts, unmanaged, err);
	return rc;
}

/* Carries out one control message (a JSON command for this target) and
 * publishes its answer. */
static int ctl_handle(sink_run_t *s, const rd_kafka_message_t *m, id_err_t *err)
{
	if (m->key_len != strlen(s->target) || memcmp(m->key, s->target, m->key_len) != 0)
		return 0;
	json_error_t jerr;
	json_t *cmd = json_loadb(m->payload, m->len, 0, &jerr);
	const char *type = json_string_value(json_object_get(cmd, "type"));
	if (cmd == NULL || type == NULL || strcmp(type, "command") != 0) {
		if (cmd == NULL)
			id_log_warn("sink", "%s offset %lld: not a command: %s",
			            s->ctl_topic, (long long)m->offset, jerr.text);
		json_decref(cmd);
		return 0;
	}
	const char *what = json_string_value(json_object_get(cmd, "command"));
	const char *id = json_string_value(json_object_get(cmd, "id"));
	const char *actor = json_string_value(json_object_get(cmd, "actor"));
	if (what == NULL)
		what = "";
	if (actor == NULL)
		actor = "unknown";
	json_t *counts = json_object(), *drift = json_array(), *unmanaged = json_array();
	int rc = 0;
	/* Decisions act on state: write what is pending first. */
	if ((rc = sink_commit(s, err)) != 0)
		goto out;
	id_log_info("sink", "target %s: %s requested by %s (command %s)", s->target, what,
	            actor, id ? id : "-");
	if (strcmp(what, "approve") == 0)
		rc = ctl_approve(s, json_object_get(cmd, "items"), counts, err);
	else if (strcmp(what, "reject") == 0)
		rc = ctl_reject(s, json_object_get(cmd, "items"), actor, counts, err);
	else if (strcmp(what, "retry") == 0)
		rc = ctl_retry(s, json_object_get(cmd, "employees"), counts, err);
	else if (strcmp(what, "reconcile") == 0)
		rc = ctl_reconcile(s, json_object_get(cmd, "employees"),
		                   json_is_true(json_object_get(cmd, "repair")), counts,
		                   drift, unmanaged, err);
	else
		json_object_set_new(counts, "unknown_command", json_integer(1));
	/* The answer comes after the results: whoever reads it finds them. */
	if (rc == 0)
		rc = sink_commit(s, err);
	if (rc != 0)
		goto out;
	json_t *ans =
	    json_pack("{s:s, s:s?, s:s, s:s, s:I, s:O, s:I, s:I, s:b, s:s}", "type",
	              "done", "id", id, "command", what, "target", s->target, "at",
	              (json_int_t)wall_ms(), "counts", counts, "held",
	              (json_int_t)s->held.live, "parked", (json_int_t)s->nparked,
	              "can_plan", s->ops->plan != NULL, "kind", s->ops->kind);
	if (ans != NULL && json_array_size(drift) > 0)
		json_object_set(ans, "drift", drift);
	if (ans != NULL && json_array_size(unmanaged) > 0)
		json_object_set(ans, "unmanaged", unmanaged);
	if (ans != NULL && strcmp(what, "reconcile") == 0)
		json_object_set_new(ans, "delete_unmanaged",
		                    json_boolean(s->delete_unmanaged));
	char *text = ans != NULL ? json_dumps(ans, JSON_COMPACT) : NULL;
	char *ctext = json_dumps(counts, JSON_COMPACT);
	id_log_info("sink", "target %s: %s done: %s; %zu held, %zu parked", s->target,
	            what, ctext ? ctext : "", s->held.live, s->nparked);
	free(ctext);
	if (text == NULL)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	else
		rc = sink_produce(s, s->ctl_topic, s->target, text, strlen(text), err);
	free(text);
	json_decref(ans);
	if (rc == 0 && s->held.live == 0 && strcmp(what, "approve") == 0)
		id_log_info("sink", "target %s: nothing held any more", s->target);
out:
	json_decref(counts);
	json_decref(drift);
	json_decref(unmanaged);
	json_decref(cmd);
	return rc;
}

/* Polls the control topic once; commands are carried out as they come. */
static int ctl_poll(sink_run_t *s, int timeout_ms, id_err_t *err)
{
	if (s->ctl == NULL)
		return 0;
	rd_kafka_message_t *m = rd_kafka_consumer_poll(s->ctl, timeout_ms);
	if (m == NULL)
		return 0;
	int rc = 0;
	int32_t p = m->partition;
	bool ok = p >= 0 && p < s->ctl_nparts;
	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
		if (ok)
			s->ctl_eof[p] = true;
	} else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		id_log_warn("sink", "control consumer: %s", rd_kafka_message_errstr(m));
	} else if (ok) {
		s->ctl_eof[p] = false;
		if ((rc = ctl_handle(s, m, err)) == 0) {
			s->ctl_next[p] = m->offset + 1;
			s->ctl_dirty = true;
			rc = sink_commit(s, err);
		}
	}
	rd_kafka_message_destroy(m);
	return rc;
}

static bool ctl_at_end(const sink_run_t *s)
{
	for (int32_t p = 0; p < s->ctl_nparts; p++)
		if (!s->ctl_eof[p])
			return false;
	return true;
}

/*
 * A configuration with cfg's kafka.* settings and fetch.wait.max.ms =
 * wait_ms unless cfg sets it: the end of a partition is only known after a
 * fetch that waited that long (librdkafka: 500 ms), and the sink waits for
 * the ends of the control topic and, when it starts, of its input.
 * Ownership: caller frees with id_config_destroy(); NULL with err set.
 */
static id_config_t *sink_kafka_config(const id_config_t *cfg, const char *wait_ms,
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
	if (!id_attrs_has(user, "fetch.wait.max.ms") &&
	    id_config_set(c, "kafka.fetch.wait.max.ms", wait_ms, err) != 0)
		goto fail;
	return c;
fail:
	id_config_destroy(c);
	return NULL;
}

/* Assigns every partition of the control topic from the stored position
 * (or its beginning) and carries out what is there, before anything else. */
static int ctl_open(sink_run_t *s, id_err_t *err)
{
	int32_t n = 0;
	id_err_t merr = {0};
	/* A consumer, not the producer, asks for the metadata: a producer's
	 * request may make the broker auto-create the topic with its defaults. */
	id_config_t *kc = sink_kafka_config(s->cfg, "10", err);
	if (kc == NULL)
		return err && err->code ? err->code : ID_ENOMEM;
	s->ctl =
	    id_kafka_consumer_create(kc, "idstream-sink-control", NULL, NULL, NULL, err);
	id_config_destroy(kc);
	if (s->ctl == NULL)
		return err && err->code ? err->code : ID_EKAFKA;
	if (id_kafka_partition_count(s->ctl, s->ctl_topic, &n, &merr) != 0) {
		id_log_warn(
		    "sink",
		    "target %s: no control topic (%s): approve, reject, sink retry "
		    "and reconcile cannot reach this sink; run `idstream topics "
		    "create` and restart it",
		    s->target, merr.msg);
		id_kafka_destroy(s->ctl);
		s->ctl = NULL;
		return 0;
	}
	if (n > SINK_CTL_MAX_PARTS)
		n = SINK_CTL_MAX_PARTS;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
	for (int32_t p = 0; p < n; p++) {
		unsigned char k[5];
		void *v = NULL;
		size_t vl = 0;
		k[0] = 'C';
		state_be32_put(k + 1, (uint32_t)p);
		int64_t off = RD_KAFKA_OFFSET_BEGINNING;
		if (state_store_get(s->db, k, sizeof(k), &v, &vl, NULL) == 0 && vl == 8)
			off = (int64_t)state_be64_get(v);
		free(v);
		s->ctl_next[p] = -1;
		s->ctl_eof[p] = false;
		rd_kafka_topic_partition_list_add(l, s->ctl_topic, p)->offset = off;
	}
	s->ctl_nparts = n;
	rd_kafka_resp_err_t e = rd_kafka_assign(s->ctl, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		return id_kafka_err(err, e, "assigning the control topic");
	int64_t deadline = mono_ms() + 30000;
	while (!ctl_at_end(s) && !cli_stop_requested && mono_ms() < deadline) {
		int rc = ctl_poll(s, 100, err);
		if (rc != 0)
			return rc;
	}
	if (!ctl_at_end(s))
		id_log_warn("sink",
		            "target %s: control topic not read to its end at start",
		            s->target);
	return 0;
}

/* ---------------------------------------------------------------- start */

/* Loads what the state says about the guard, parked failures and counts. */
static int sink_load(sink_run_t *s, id_err_t *err)
{
	state_iter_t *it = NULL;
	state_batch_t *stale = state_batch_create();
	int rc = stale != NULL ? state_iter_create(s->db, NULL, 0, &it, err)
	                       : id_err_set(err, ID_ENOMEM, "out of memory");
	int64_t from = wall_ms() - s->window_ms;
	const void *kv, *vv;
	size_t kl, vl;
	while (rc == 0 && (rc = state_iter_next(it, &kv, &kl, &vv, &vl, err)) == 1) {
		rc = 0;
		const unsigned char *k = kv, *v = vv;
		if (kl < 1)
			continue;
		if (k[0] == 'V' && vl >= 8) {
			int st = vl >= 9 ? v[8] : SINK_STATE_UNKNOWN;
			if (state_live(st))
				s->active++;
		} else if (k[0] == 'T' && kl >= 9) {
			int64_t at = (int64_t)state_be64_get(k + 1);
			if (at < from) {
				state_batch_delete(stale, k, kl);
			} else {
				if (s->nwindow == s->capwindow) {
					size_t nc = s->capwindow ? s->capwindow * 2 : 64;
					int64_t *nw =
					    realloc(s->window, nc * sizeof(*nw));
					if (nw == NULL) {
						rc = id_err_set(err, ID_ENOMEM,
						                "out of memory");
						break;
					}
					s->window = nw;
					s->capwindow = nc;
				}
				s->window[s->nwindow++] = at;
			}
		} else if ((k[0] == 'P' || k[0] == 'H' || k[0] == 'F') && kl > 1) {
			char emp[512];
			if (kl - 1 >= sizeof(emp))
				continue;
			memcpy(emp, k + 1, kl - 1);
			emp[kl - 1] = '\0';
			if (k[0] == 'F') {
				int64_t *pv = malloc(sizeof(*pv));
				if (pv == NULL || vl < 8 ||
				    id_hmap_put(&s->parked, emp, pv)) {
					free(pv);
					continue;
				}
				*pv = (int64_t)state_be64_get(v);
				s->nparked++;
				continue;
			}
			guard_entry_t *e = guard_decode(v, vl);
			if (e == NULL) {
				state_batch_delete(stale, k, kl);
				continue;
			}
			guard_set_t *set = k[0] == 'P' ? &s->pending : &s->held;
			if (guard_put_mem(set, emp, e) != 0)
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
		}
	}
	if (rc == 1)
		rc = 0;
	state_iter_destroy(it);
	/* Entries decided before a crash (version already recorded). */
	for (int pass = 0; rc == 0 && pass < 2; pass++) {
		guard_set_t *set = pass ? &s->held : &s->pending;
		size_t n = 0;
		char **keys = map_keys(&set->map, guard_live, &n);
		for (size_t i = 0; i < n; i++) {
			guard_entry_t *e = guard_get(set, keys[i]);
			guard_entry_t *o = pass ? NULL : guard_get(&s->held, keys[i]);
			if (e == NULL)
				continue;
			if (e->version <= sink_info(s, keys[i], NULL) ||
			    (o != NULL && o->version >= e->version)) {
				guard_kill(set, e);
				if (key_emp(&s->buf, set->tag, keys[i]) == 0)
					state_batch_delete(stale, s->buf.data,
					                   s->buf.len);
			}
		}
		keys_free(keys, n);
	}
	if (rc == 0 && stale != NULL && state_batch_count(stale) > 0)
		rc = state_batch_write(s->db, stale, false, err);
	state_batch_destroy(stale);
	if (rc == 0 && s->held.live > 0)
		snprintf(s->reason, sizeof(s->reason),
		         "held by the mass-change guard until `idstream approve %s` or "
		         "`idstream reject %s`",
		         s->target, s->target);
	if (rc == 0)
		id_log_info(
		    "sink",
		    "target %s: %ld active accounts managed; %zu disables/deletes "
		    "held, %zu pending, %zu in the guard window; %zu parked failures",
		    s->target, s->active, s->held.live, s->pending.live, s->nwindow,
		    s->nparked);
	if (rc == 0 && s->pending.live > 0)
		s->pending_first = s->last_msg = mono_ms();
	return rc;
}

static void sink_config(sink_run_t *s, const id_config_t *cfg)
{
	s->guard_on = id_config_bool(cfg, "sink.guard.enabled");
	s->max_fraction = id_config_double(cfg, "sink.guard.max_fraction");
	s->max_count = (long)id_config_int(cfg, "sink.guard.max_count");
	s->min_managed = (long)id_config_int(cfg, "sink.guard.min_managed");
	s->window_ms = id_config_int(cfg, "sink.guard.window_s") * 1000;
	s->settle_ms = id_config_int(cfg, "sink.guard.settle_ms");
	s->retry_initial_ms = (long)id_config_int(cfg, "sink.retry.initial_ms");
	s->retry_max_ms = (long)id_config_int(cfg, "sink.retry.max_ms");
	if (s->retry_max_ms < s->retry_initial_ms)
		s->retry_max_ms = s->retry_initial_ms;
	s->circuit_failures = (long)id_config_int(cfg, "sink.circuit.failures");
	s->rate = id_config_double(cfg, "sink.rate_limit");
	s->delete_unmanaged = id_config_bool(cfg, "reconcile.delete_unmanaged");
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	s->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
	         ((uint64_t)getpid() << 40) ^ 0x9E3779B97F4A7C15ULL;
	if (s->rng == 0)
		s->rng = 1;
}

/*
 * sink.concurrency: opens the extra handles and starts the pool.  One
 * handle (no pool) with sink.rate_limit, whose accounting is per apply, and
 * with ldap.posix, whose uidNumber counter lives in one handle (and when
 * the sink.after_apply failpoint of the recovery tests is armed).
 */
static int sink_pool_open(sink_run_t *s, const id_config_t *cfg, id_err_t *err)
{
	size_t width = (size_t)id_config_int(cfg, "sink.concurrency");
	const char *why = NULL;
	const char *fp = getenv("IDSTREAM_FAILPOINTS");
	if (width > 1 && s->rate > 0)
		why = "sink.rate_limit is set";
	else if (width > 1 && fp != NULL && strstr(fp, "sink.after_apply") != NULL)
		/* The failpoint means "one employee written, nothing recorded":
		 * a parallel batch would have written several by then. */
		why = "the sink.after_apply failpoint is armed";
	else if (width > 1 && strcmp(s->ops->kind, "ldap") == 0 &&
	         id_config_bool(cfg, "ldap.posix"))
		why = "ldap.posix allocates uidNumbers in one connection";
	if (why != NULL) {
		id_log_info("sink", "target %s: applying one employee at a time: %s",
		            s->target, why);
		width = 1;
	}
	if (width <= 1)
		return 0;
	if ((s->handles = calloc(width, sizeof(*s->handles))) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	s->handles[0] = s->target_h;
	s->nhandles = 1;
	for (; s->nhandles < width; s->nhandles++) {
		if ((s->handles[s->nhandles] = s->ops->open(cfg, err)) == NULL)
			return err && err->code ? err->code : ID_EIO;
		if (s->ops->share != NULL)
			s->ops->share(s->handles[s->nhandles], s->target_h);
	}
	if ((s->pool = sink_pool_create(width, s->handles, err)) == NULL)
		return err && err->code ? err->code : ID_ENOMEM;
	id_log_info("sink", "target %s: applying up to %zu employees at a time",
	            s->target, width);
	return 0;
}

int sink_loop(const id_config_t *cfg, const char *kind, bool until_idle,
              sink_stats_t *stats, stage_sync_t *sync, id_err_t *err)
{
	sink_run_t *s = calloc(1, sizeof(*s));
	char path[1024], group[300];
	int rc = 0;
	if (s == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	s->cfg = cfg;
	s->stats = stats;
	id_buf_init(&s->buf);
	id_hmap_init(&s->latest);
	id_hmap_init(&s->recs);
	id_hmap_init(&s->pending.map);
	id_hmap_init(&s->held.map);
	id_hmap_init(&s->parked);
	s->pending.tag = 'P';
	s->held.tag = 'H';
	sink_config(s, cfg);
	id_config_topic(cfg, "identity.desired", s->in_topic, sizeof(s->in_topic));
	id_config_topic(cfg, "sink.results", s->out_topic, sizeof(s->out_topic));
	id_config_topic(cfg, "sink.control", s->ctl_topic, sizeof(s->ctl_topic));
	s->ops = sink_target_find(kind);
	if (s->ops == NULL) {
		rc =
		    id_err_set(err, ID_EINVALID, "unknown target kind \"%s\" (known: %s)",
		               kind, sink_target_kinds());
		goto out;
	}
	snprintf(s->target, sizeof(s->target), "%s",
	         id_config_str(cfg, s->ops->target_key));
	snprintf(path, sizeof(path), "%s/sink-%s", id_config_str(cfg, "state.dir"),
	         s->target);
	snprintf(group, sizeof(group), "%s.sink.%s", id_config_str(cfg, "topic.prefix"),
	         s->target);
	if ((s->target_h = s->ops->open(cfg, err)) == NULL) {
		rc = err && err->code ? err->code : ID_EIO;
		goto out;
	}
	if ((rc = sink_pool_open(s, cfg, err)) != 0)
		goto out;
	if ((rc = state_store_open(path, NULL, &s->db, err)) != 0)
		goto out;
	if ((rc = sink_load(s, err)) != 0)
		goto out;
	if ((s->codec = codec_create(err)) == NULL) {
		rc = err ? err->code : ID_ENOMEM;
		goto out;
	}
	if ((s->producer = id_kafka_producer_create(cfg, "idstream-sink", NULL, err)) ==
	    NULL) {
		rc = err ? err->code : ID_EKAFKA;
		goto out;
	}
	if ((rc = ctl_open(s, err)) != 0)
		goto out;
	id_config_t *kc = sink_kafka_config(cfg, "100", err);
	if (kc == NULL) {
		rc = err && err->code ? err->code : ID_ENOMEM;
		goto out;
	}
	s->consumer =
	    id_kafka_consumer_create(kc, "idstream-sink", group, sink_rebalance, s, err);
	id_config_destroy(kc);
	if (s->consumer == NULL) {
		rc = err ? err->code : ID_EKAFKA;
		goto out;
	}
	rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(sub, s->in_topic, RD_KAFKA_PARTITION_UA);
	rd_kafka_resp_err_t se = rd_kafka_subscribe(s->consumer, sub);
	rd_kafka_topic_partition_list_destroy(sub);
	if (se != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, se, "subscribing to identity.desired");
		goto out;
	}
	id_log_info("sink", "target %s (%s): consuming %s as %s", s->target, s->ops->kind,
	            s->in_topic, group);
	s->last_msg = mono_ms();

	while (!cli_stop_requested) {
		rd_kafka_message_t *m =
		    rd_kafka_consumer_poll(s->consumer, s->nbatch > 0 ? 0 : 50);
		if (m != NULL) {
			int32_t p = m->partition;
			bool ok = p >= 0 && p < SINK_MAX_PARTITIONS && s->assigned[p];
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				if (ok) {
					s->eof_at[p] = m->offset;
					s->catchup_end[p] = -1;
				}
			} else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
				id_log_warn("sink", "consumer: %s",
				            rd_kafka_message_errstr(m));
			} else if (ok && s->catchup_end[p] >= 0) {
				s->eof_at[p] = -1;
				s->last_msg = mono_ms();
				rc = sink_remember(s, m, err);
				s->catchup_next[p] = m->offset + 1;
				if (m->offset + 1 >= s->catchup_end[p])
					s->catchup_end[p] = -1;
			} else if (ok && s->pool != NULL) {
				s->eof_at[p] = -1;
				s->last_msg = mono_ms();
				rc = sink_batch_add(s, m, err);
			} else if (ok) {
				s->eof_at[p] = -1;
				s->last_msg = mono_ms();
				rc = sink_handle(s, m->payload, m->len, m->partition,
				                 m->offset, err);
				if (rc == 0) {
					s->next[p] = m->offset + 1;
					s->uncommitted++;
				}
			}
			rd_kafka_message_destroy(m);
			if (rc != 0)
				goto out;
		}
		/* A batch is applied once the input pauses or it is full. */
		if ((m == NULL || s->nbatch >= sink_batch_max(s)) &&
		    (rc = sink_batch_flush(s, err)) != 0)
			goto out;
		if (s->nbatch > 0)
			continue;
		if (!sink_catching_up(s) &&
		    (s->latest.len > 0 || sink_pending_catchup(s))) {
			if ((rc = sink_flush_latest(s, err)) != 0)
				goto out;
		}
		/* Commands wait for the catch-up batch: a reconcile must know
		 * every employee the sink manages. */
		if (!sink_catching_up(s) && s->latest.len == 0 &&
		    (rc = ctl_poll(s, 0, err)) != 0)
			goto out;
		if ((rc = guard_decide(s, false, err)) != 0)
			goto out;
		if (s->uncommitted >= SINK_COMMIT_EVERY ||
		    (m == NULL && (s->uncommitted > 0 || s->recs.len > 0))) {
			if ((rc = sink_commit(s, err)) != 0)
				goto out;
		}
		if (!until_idle)
			continue;
		/* With sync, the processor has committed everything once it is
		 * idle: read past the last offset it produced on each partition. */
		bool idle = sync == NULL ? sink_caught_up(s, NULL)
		                         : sync->processor_idle &&
		                               sink_caught_up(s, sync->desired_next);
		if (idle && s->pending.live > 0) {
			if ((rc = guard_decide(s, true, err)) != 0)
				goto out;
		} else if (idle) {
			break;
		}
	}
	rc = sink_commit(s, err);
out:
	if (s->held.live > 0)
		id_log_warn(
		    "sink",
		    "target %s holds %zu disables/deletes: `idstream held %s` lists "
		    "them; `idstream approve %s` or `idstream reject %s` decides "
		    "(a sink of the target must be running)",
		    s->target, s->held.live, s->target, s->target, s->target);
	if (s->target_h != NULL) {
		stats->ldap_ops = (long)s->ops->writes(s->target_h);
		for (size_t i = 1; i < s->nhandles; i++)
			stats->ldap_ops += (long)s->ops->writes(s->handles[i]);
	}
	id_kafka_destroy(s->consumer);
	id_kafka_destroy(s->ctl);
	id_kafka_destroy(s->producer);
	sink_pool_destroy(s->pool);
	for (size_t i = 1; i < s->nhandles; i++)
		s->ops->close(s->handles[i]);
	free(s->handles);
	sink_batch_drop(s);
	free(s->batch);
	if (s->target_h != NULL)
		s->ops->close(s->target_h);
	codec_destroy(s->codec);
	state_store_close(s->db);
	sink_latest_drop(s);
	id_hmap_fini(&s->latest);
	sink_recs_drop(s);
	id_hmap_fini(&s->recs);
	guard_set_clear(&s->pending);
	id_hmap_fini(&s->pending.map);
	guard_set_clear(&s->held);
	id_hmap_fini(&s->held.map);
	parked_clear(s);
	id_hmap_fini(&s->parked);
	free(s->window);
	id_buf_fini(&s->buf);
	free(s);
	return rc;
}

static void sink_usage(const sink_target_ops_t *ops)
{
	printf(
	    "usage: idstream sink KIND [--until-idle]     KIND: %s\n"
	    "       idstream sink retry TARGET [EMPLOYEE_ID...] [--wait SECONDS]\n"
	    "\n"
	    "Applies <prefix>.identity.desired to a target and publishes what it did to\n"
	    "<prefix>.sink.results. Versions already applied are skipped; every apply\n"
	    "reads the target's object first and writes only the differences. A sink\n"
	    "starting with empty state applies only each employee's latest version.\n"
	    "\n"
	    "Disables and deletes beyond sink.guard.* are held until `idstream approve`\n"
	    "or `idstream reject`; an unreachable target is retried with backoff and a\n"
	    "circuit breaker (sink.retry.*, sink.circuit.*); a version the target\n"
	    "refuses is parked until `idstream sink retry TARGET` applies it again.\n"
	    "Up to sink.concurrency employees are applied at once, each employee's\n"
	    "versions in order.\n"
	    "\n"
	    "  --until-idle   stop once every assigned partition is caught up\n",
	    sink_target_kinds());
	if (ops != NULL)
		printf("\n%s: %s\n", ops->kind, ops->help);
}

void sink_stats_print(const char *target, const char *kind, const sink_stats_t *st)
{
	char label[16];
	size_t i = 0;
	for (; kind[i] != '\0' && i < sizeof(label) - 1; i++)
		label[i] = (char)toupper((unsigned char)kind[i]);
	label[i] = '\0';
	printf("sink %s: %ld created, %ld updated, %ld disabled, %ld enabled, %ld "
	       "unchanged, %ld failed, %ld already applied, %ld manager links completed, "
	       "%ld held for approval; %ld %s writes\n",
	       target, st->created, st->updated, st->disabled, st->enabled, st->noop,
	       st->failed, st->skipped, st->relinked, st->held, st->ldap_ops, label);
}

int cmd_sink(cli_t *cli, int argc, char **argv)
{
	bool until_idle = false;
	if (argc >= 2 && cli_is_help(argv[1])) {
		sink_usage(NULL);
		return CLI_EXIT_OK;
	}
	if (argc >= 2 && strcmp(argv[1], "retry") == 0)
		return sink_control_retry(cli, argc - 1, argv + 1);
	const sink_target_ops_t *ops = argc >= 2 ? sink_target_find(argv[1]) : NULL;
	if (ops == NULL)
		return cli_usage_error("sink", "expected a target kind (%s) or retry",
		                       sink_target_kinds());
	for (int i = 2; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			sink_usage(ops);
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--until-idle") == 0) {
			until_idle = true;
		} else {
			return cli_usage_error("sink", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	sink_stats_t st = {0};
	id_err_t err = {0};
	int rc = sink_loop(cli->cfg, ops->kind, until_idle, &st, NULL, &err);
	sink_stats_print(id_config_str(cli->cfg, ops->target_key), ops->kind, &st);
	if (rc != 0) {
		char what[64];
		snprintf(what, sizeof(what), "sink %s", ops->kind);
		return cli_fail(what, &err);
	}
	return CLI_EXIT_OK;
}
