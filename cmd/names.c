/*
 * names.c — `idstream names`: the names arbiter that makes usernames and
 * e-mails unique across all employees, and the commands around it.
 *
 *   names arbiter   consumes <prefix>.names.claims in consumer group
 *                   <prefix>.names (read_committed), decides every claim with
 *                   processors/name_arbiter.h against the name's entry, and
 *                   produces the answer (NAME_GRANTED / NAME_DENIED, keyed by
 *                   the claimant's employee id) to <prefix>.hr.events in a
 *                   Kafka transaction that also carries the consumed offsets
 *                   (EOS v2, transactional.id <prefix>.names.<names.instance_id>).
 *                   Only after the commit are the changed entries and the next
 *                   offset of each partition written to RocksDB in one batch.
 *   names import    publishes RESERVE claims for names that already exist in a
 *                   directory (LDAP: uid → username, mail → email) or a file.
 *   names show      what the log says about one name: owner, state, history.
 *
 * Names are keyed by name_key() on names.claims, so one partition owns each
 * name and every decision about it is taken in that partition's log order:
 * whatever the partitioning of hr.events, two claims on one name are decided
 * one after the other.  Decisions read only the entry and the claim, so the
 * log decides, not the timing of this process.
 *
 * Crash recovery is the processor's (cmd/process.c): the stored offset S is
 * never ahead of the committed offset C; on assignment a partition is read
 * from S and claims in [S, C) — decided and answered by a committed
 * transaction — are re-decided into state without producing anything.  An
 * aborted transaction drops the open entries and rewinds to S.  Losing the
 * state folder means S = 0: the whole partition is re-decided first.
 * IDSTREAM_FAILPOINTS=names.after_commit kills the arbiter between commit and
 * WriteBatch (common/failpoint.h).
 *
 * State key layout (state.dir/names):
 *
 *   | key                                 | value                          |
 *   |-------------------------------------|--------------------------------|
 *   | 'N' be32(partition) name_key bytes  | name entry (name_arbiter.h)    |
 *   | 'O' be32(partition)                 | be64(next input offset)        |
 *
 * The LDAP import reads the directory with libldap directly: it is a
 * read-only search, outside the sink cores (see ARCHITECTURE.md).
 *
 * Inside `idstream run` the arbiter is a thread next to the processor and
 * publishes its progress (decided offsets, answer offsets, caught up) to a
 * names_sync_t, so that `run --until-idle` stops only once every claim is
 * answered and folded (cmd/names_sync.h).
 *
 * Threading: names_arbiter_loop() runs on one thread (the rebalance callback
 * runs inside rd_kafka_consumer_poll() on it); it may be a thread of `run`.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <ldap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cli.h"
#include "cmd/names_sync.h"
#include "common/buf.h"
#include "common/failpoint.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "processors/name_arbiter.h"
#include "processors/policy.h"
#include "schemas/codec.h"
#include "state/store.h"

#define NAMES_MAX_PARTITIONS STAGE_MAX_PARTITIONS
#define NAMES_LOG            "names"

/* --- the arbiter ----------------------------------------------------------- */

typedef struct names_partition {
	int assigned;
	id_kafka_end_t end;   /* at the end of the partition? (common/kafka.h) */
	int64_t replay_until; /* offsets below it are re-decided without output */
	int64_t next_offset;  /* next offset to decide (in the open txn) */
	int64_t stored;       /* next offset as of the last WriteBatch */
} names_partition_t;

/* A name touched by the open transaction. */
typedef struct names_open {
	name_entry_t entry;
	int32_t partition;
	bool dirty; /* changed: written with the next WriteBatch */
} names_open_t;

typedef struct arbiter {
	rd_kafka_t *consumer;
	rd_kafka_t *producer;
	state_store_t *db;
	codec_t *codec;
	char in_topic[256];
	char out_topic[256];
	names_partition_t parts[NAMES_MAX_PARTITIONS];
	id_hmap_t open; /* name key → names_open_t*, the entries of the open txn */
	bool txn_open;
	long txn_claims;
	struct timespec txn_started;
	id_kafka_delivery_t delivery;
	names_stats_t *stats;
	name_claim_t claim;
	employee_event_t answer;
	id_buf_t key; /* scratch: state keys */
	id_buf_t val; /* scratch: values */
	state_batch_t *batch;
	int fatal;
	id_err_t fatal_err;
	names_sync_t *sync;                         /* NULL: not inside `run` */
	int64_t answers_next[NAMES_MAX_PARTITIONS]; /* raised by delivery reports */
} arbiter_t;

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

static int key_name(id_buf_t *b, int32_t partition, const char *name_key_str)
{
	unsigned char p[5];
	p[0] = 'N';
	state_be32_put(p + 1, (uint32_t)partition);
	id_buf_reset(b);
	if (id_buf_append(b, p, 5) != 0 || id_buf_append_str(b, name_key_str) != 0)
		return ID_ENOMEM;
	return 0;
}

static int64_t arbiter_stored_offset(arbiter_t *a, int32_t partition)
{
	unsigned char k[5];
	void *v = NULL;
	size_t vl = 0;
	int64_t off = -1;
	key_offset(k, partition);
	if (state_store_get(a->db, k, 5, &v, &vl, NULL) == 0 && vl == 8)
		off = (int64_t)state_be64_get(v);
	free(v);
	return off;
}

static void arbiter_open_drop(arbiter_t *a)
{
	for (size_t i = 0; i < a->open.cap; i++) {
		names_open_t *o = a->open.slots[i].value;
		if (a->open.slots[i].key != NULL && o != NULL) {
			name_entry_fini(&o->entry);
			free(o);
		}
	}
	id_hmap_clear(&a->open);
}

/* The entry of name k (NUL-terminated key) as of the open transaction:
 * from the open set, else from the store, else FREE.  Borrowed from the
 * open set, which it is added to. */
static int arbiter_entry(arbiter_t *a, int32_t partition, const char *k,
                         names_open_t **out, id_err_t *err)
{
	names_open_t *o = id_hmap_get(&a->open, k);
	if (o != NULL) {
		*out = o;
		return 0;
	}
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	name_entry_init(&o->entry);
	o->partition = partition;
	int rc = key_name(&a->key, partition, k);
	if (rc == 0) {
		rc = state_store_get_buf(a->db, a->key.data, a->key.len, &a->val, err);
		if (rc == 0)
			rc = name_entry_decode(&o->entry, a->val.data, a->val.len, err);
		else if (rc == ID_ENOTFOUND)
			rc = 0;
	} else {
		id_err_set(err, rc, "out of memory");
	}
	if (rc == 0 && id_hmap_put(&a->open, k, o) != 0)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	if (rc != 0) {
		id_err_wrap(err, "state of name %s (partition %d)", k, (int)partition);
		name_entry_fini(&o->entry);
		free(o);
		return rc;
	}
	*out = o;
	return 0;
}

/* Writes the changed entries and every partition's next offset in one
 * atomic batch, then empties the open set. */
static int arbiter_persist(arbiter_t *a, id_err_t *err)
{
	int rc = 0;
	for (size_t i = 0; i < a->open.cap; i++) {
		names_open_t *o = a->open.slots[i].value;
		if (a->open.slots[i].key == NULL || o == NULL || !o->dirty)
			continue;
		if (key_name(&a->key, o->partition, a->open.slots[i].key) != 0 ||
		    name_entry_encode(&o->entry, &a->val) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		state_batch_put(a->batch, a->key.data, a->key.len, a->val.data,
		                a->val.len);
	}
	for (int32_t i = 0; i < NAMES_MAX_PARTITIONS; i++) {
		names_partition_t *pp = &a->parts[i];
		if (!pp->assigned || pp->next_offset == pp->stored)
			continue;
		unsigned char k[5], v[8];
		key_offset(k, i);
		state_be64_put(v, (uint64_t)pp->next_offset);
		state_batch_put(a->batch, k, 5, v, 8);
	}
	/* Unlogged like the processor's: a crash leaves the store as of an
	 * earlier whole batch, and the claims since are re-decided. */
	if ((rc = state_batch_write_unlogged(a->db, a->batch, err)) != 0)
		goto out;
	for (int32_t i = 0; i < NAMES_MAX_PARTITIONS; i++)
		if (a->parts[i].assigned)
			a->parts[i].stored = a->parts[i].next_offset;
	arbiter_open_drop(a);
out:
	state_batch_clear(a->batch);
	return rc;
}

static void arbiter_rewind(arbiter_t *a)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	for (int32_t i = 0; i < NAMES_MAX_PARTITIONS; i++) {
		names_partition_t *pp = &a->parts[i];
		if (!pp->assigned)
			continue;
		rd_kafka_topic_partition_list_add(l, a->in_topic, i)->offset = pp->stored;
		pp->next_offset = pp->stored;
		id_kafka_end_clear(&pp->end);
	}
	rd_kafka_error_t *e = rd_kafka_seek_partitions(a->consumer, l, 10000);
	if (e != NULL) {
		id_log_error(NAMES_LOG, "rewinding after abort: %s",
		             rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	}
	rd_kafka_topic_partition_list_destroy(l);
}

/* Commits the open transaction with the consumed offsets, then persists.
 * An abortable error aborts, drops the open entries and rewinds. */
static int arbiter_commit(arbiter_t *a, id_err_t *err)
{
	if (!a->txn_open)
		return 0;
	rd_kafka_error_t *e = NULL;
	rd_kafka_consumer_group_metadata_t *cgmd = NULL;
	rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(16);
	int rc = 0;
	for (int32_t i = 0; i < NAMES_MAX_PARTITIONS; i++) {
		names_partition_t *pp = &a->parts[i];
		/* Never below Kafka's committed offset (a partition still being
		 * re-decided): the next restart would answer those twice. */
		if (pp->assigned && pp->next_offset > pp->stored &&
		    pp->next_offset > pp->replay_until)
			rd_kafka_topic_partition_list_add(offs, a->in_topic, i)->offset =
			    pp->next_offset;
	}
	if (offs->cnt > 0) {
		cgmd = rd_kafka_consumer_group_metadata(a->consumer);
		e = rd_kafka_send_offsets_to_transaction(a->producer, offs, cgmd, 30000);
		if (e != NULL)
			goto txn_error;
	}
	if ((e = rd_kafka_commit_transaction(a->producer, 60000)) != NULL)
		goto txn_error;
	a->txn_open = false;
	for (int i = 0; i < 3000 && a->delivery.pending > 0; i++)
		rd_kafka_poll(a->producer, 10);
	if (a->delivery.first_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, a->delivery.first_err,
		                  "delivery in committed transaction");
		goto out;
	}
	a->stats->txns++;
	id_failpoint_crash("names.after_commit");
	rc = arbiter_persist(a, err);
	goto out;

txn_error:
	if (rd_kafka_error_txn_requires_abort(e)) {
		id_log_warn(NAMES_LOG,
		            "transaction aborted, deciding its claims again: %s",
		            rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
		e = rd_kafka_abort_transaction(a->producer, 60000);
		a->txn_open = false;
		arbiter_open_drop(a);
		if (e != NULL) {
			rc = id_kafka_error(err, e, "aborting transaction");
			goto out;
		}
		arbiter_rewind(a);
	} else if (rd_kafka_error_is_retriable(e)) {
		rd_kafka_error_destroy(e);
		e = NULL;
		rc = arbiter_commit(a, err);
	} else {
		rc = id_kafka_error(err, e, "committing transaction");
	}
out:
	if (e != NULL)
		rd_kafka_error_destroy(e);
	if (cgmd != NULL)
		rd_kafka_consumer_group_metadata_destroy(cgmd);
	rd_kafka_topic_partition_list_destroy(offs);
	a->delivery.first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
	return rc;
}

static void arbiter_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                              rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	arbiter_t *a = opaque;
	id_log_info(NAMES_LOG, "%s %d partitions",
	            e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assigned" : "revoked",
	            parts->cnt);
	if (e != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		id_err_t err = {0};
		if (arbiter_commit(a, &err) != 0) {
			id_log_error(NAMES_LOG, "committing before rebalance: %s",
			             err.msg);
			a->fatal = 1;
			a->fatal_err = err;
		}
		arbiter_open_drop(a);
		for (int i = 0; i < parts->cnt; i++) {
			int32_t part = parts->elems[i].partition;
			if (part >= 0 && part < NAMES_MAX_PARTITIONS)
				a->parts[part].assigned = 0;
		}
		rd_kafka_assign(rk, NULL);
		return;
	}
	for (int i = 0; i < parts->cnt; i++) {
		int32_t part = parts->elems[i].partition;
		if (part < 0 || part >= NAMES_MAX_PARTITIONS)
			continue;
		names_partition_t *pp = &a->parts[part];
		memset(pp, 0, sizeof(*pp));
		pp->assigned = 1;
		int64_t stored = arbiter_stored_offset(a, part);
		pp->stored = stored < 0 ? 0 : stored;
		pp->next_offset = pp->stored;
		pp->replay_until = -1;
	}
	/* Kafka's committed offsets tell where answers stop being known. */
	rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
	rd_kafka_resp_err_t ce = rd_kafka_committed(rk, c, 30000);
	if (ce != RD_KAFKA_RESP_ERR_NO_ERROR) {
		/* Without it re-decided claims cannot be told from new ones,
		 * and answering twice would break exactly-once. */
		a->fatal = 1;
		id_kafka_err(&a->fatal_err, ce, "reading committed offsets");
	}
	for (int i = 0; i < parts->cnt; i++) {
		int32_t part = parts->elems[i].partition;
		if (part < 0 || part >= NAMES_MAX_PARTITIONS)
			continue;
		names_partition_t *pp = &a->parts[part];
		int64_t committed =
		    ce == RD_KAFKA_RESP_ERR_NO_ERROR ? c->elems[i].offset : -1;
		if (committed > pp->stored) {
			pp->replay_until = committed;
			id_log_info(
			    NAMES_LOG,
			    "partition %d: re-deciding claims from offset %lld to "
			    "%lld without output",
			    (int)part, (long long)pp->stored, (long long)committed);
		}
		parts->elems[i].offset = pp->stored;
	}
	rd_kafka_topic_partition_list_destroy(c);
	rd_kafka_assign(rk, parts);
}

static int arbiter_produce(arbiter_t *a, const employee_event_t *ev, id_err_t *err)
{
	int rc = codec_encode_event(a->codec, ev, &a->val, err);
	if (rc != 0)
		return rc;
	for (int tries = 0;; tries++) {
		a->delivery.pending++;
		rd_kafka_resp_err_t e = rd_kafka_producev(
		    a->producer, RD_KAFKA_V_TOPIC(a->out_topic),
		    RD_KAFKA_V_KEY(ev->employee_id, strlen(ev->employee_id)),
		    RD_KAFKA_V_VALUE(a->val.data, a->val.len),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		    RD_KAFKA_V_OPAQUE(&a->delivery), RD_KAFKA_V_END);
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
			return 0;
		a->delivery.pending--;
		if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries >= 600)
			return id_kafka_err(err, e, "producing name answer");
		rd_kafka_poll(a->producer, 100);
	}
}

/* Decides one claim; answers it unless replaying. */
static int arbiter_handle(arbiter_t *a, const rd_kafka_message_t *m, bool replay,
                          id_err_t *err)
{
	name_claim_t *c = &a->claim;
	id_err_t derr = {0};
	names_open_t *o = NULL;
	name_decision_t d;
	char off[32];
	int rc;
	snprintf(off, sizeof(off), "%d/%lld", (int)m->partition, (long long)m->offset);
	if (codec_decode_name_claim(a->codec, m->payload, m->len, c, &derr) != 0) {
		/* Refused loudly; the offset moves on so one bad record cannot
		 * stop every name of the partition. */
		id_log_kv(ID_LOG_ERROR, NAMES_LOG, "refused undecodable claim", "offset",
		          off, "error", derr.msg, NULL);
		a->stats->rejected++;
		return 0;
	}
	/* The state key is the name key the claim computes; a message key
	 * that differs is refused by the decision itself. */
	if ((rc = name_key(c->ns ? c->ns : "", c->value ? c->value : "", &a->key)) != 0 ||
	    (rc = id_buf_append_u8(&a->key, 0)) != 0)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	char *k = strdup((const char *)a->key.data);
	if (k == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	rc = arbiter_entry(a, m->partition, k, &o, err);
	free(k);
	if (rc != 0)
		return rc;
	if ((rc = name_arbiter_decide(&o->entry, c, m->key, m->key_len, &d)) != 0)
		return id_err_set(err, rc, "deciding claim at %s: out of memory", off);
	o->dirty = o->dirty || d.changed;
	if (replay)
		a->stats->replayed++;
	else if (d.outcome == NAME_OUTCOME_GRANTED)
		a->stats->granted++;
	else if (d.outcome == NAME_OUTCOME_DENIED)
		a->stats->denied++;
	else if (d.changed && c->kind == NAME_RESERVE)
		a->stats->reserved++;
	else if (d.changed && c->kind == NAME_RELEASE)
		a->stats->released++;
	else
		a->stats->ignored++;
	if (d.reason == NAME_REASON_INVALID && !replay)
		a->stats->rejected++;
	id_log_kv(replay                                         ? ID_LOG_DEBUG
	          : d.reason == NAME_REASON_INVALID              ? ID_LOG_ERROR
	          : d.outcome == NAME_OUTCOME_NONE && !d.changed ? ID_LOG_WARN
	                                                         : ID_LOG_INFO,
	          NAMES_LOG, d.detail, "kind", name_claim_kind_name(c->kind), "claim_id",
	          c->claim_id, "offset", off, "replay", replay ? "true" : "false", NULL);
	if (d.outcome == NAME_OUTCOME_NONE || replay)
		return 0;
	if ((rc = name_arbiter_answer(c, &d, &a->answer)) != 0)
		return id_err_set(err, rc, "answering claim %s: out of memory",
		                  c->claim_id);
	return arbiter_produce(a, &a->answer, err);
}

static int arbiter_on_message(arbiter_t *a, const rd_kafka_message_t *m, id_err_t *err)
{
	int32_t part = m->partition;
	names_partition_t *pp =
	    (part >= 0 && part < NAMES_MAX_PARTITIONS) ? &a->parts[part] : NULL;
	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
		/* An end below the high watermark (a processor's claims
		 * committed a moment ago) counts only after a moment. */
		if (pp != NULL)
			id_kafka_end_seen(&pp->end, a->consumer, m);
		return 0;
	}
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		id_log_warn(NAMES_LOG, "consumer: %s", rd_kafka_message_errstr(m));
		return 0;
	}
	if (pp == NULL || !pp->assigned)
		return 0;
	id_kafka_end_clear(&pp->end);
	if (!a->txn_open) {
		rd_kafka_error_t *e = rd_kafka_begin_transaction(a->producer);
		if (e != NULL) {
			int rc = id_kafka_error(err, e, "beginning transaction");
			rd_kafka_error_destroy(e);
			return rc;
		}
		a->txn_open = true;
		a->txn_claims = 0;
		clock_gettime(CLOCK_MONOTONIC, &a->txn_started);
	}
	int rc = arbiter_handle(a, m, m->offset < pp->replay_until, err);
	if (rc != 0)
		return rc;
	pp->next_offset = m->offset + 1;
	a->txn_claims++;
	return 0;
}

static bool arbiter_caught_up(const arbiter_t *a)
{
	int n = 0;
	for (int32_t i = 0; i < NAMES_MAX_PARTITIONS; i++) {
		if (!a->parts[i].assigned)
			continue;
		if (!id_kafka_end_counts(&a->parts[i].end))
			return false;
		n++;
	}
	return n > 0;
}

int names_sync_init(names_sync_t *s)
{
	memset(s, 0, sizeof(*s));
	for (int32_t i = 0; i < STAGE_MAX_PARTITIONS; i++)
		s->decided_next[i] = -1;
	return pthread_mutex_init(&s->mu, NULL) == 0 ? 0 : ID_ENOMEM;
}

void names_sync_fini(names_sync_t *s)
{
	if (s != NULL)
		pthread_mutex_destroy(&s->mu);
}

/* Tells the processor of `run` how far this arbiter is (see names_sync.h).
 * With a transaction open only "not caught up" is news: its answers are not
 * committed yet. */
static void arbiter_publish(arbiter_t *a)
{
	names_sync_t *s = a->sync;
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	s->arbiter_caught_up = !a->txn_open && arbiter_caught_up(a);
	if (!a->txn_open) {
		for (int32_t i = 0; i < NAMES_MAX_PARTITIONS; i++) {
			if (a->parts[i].assigned)
				s->decided_next[i] = a->parts[i].next_offset;
			if (a->answers_next[i] > s->answers_next[i])
				s->answers_next[i] = a->answers_next[i];
		}
	}
	pthread_mutex_unlock(&s->mu);
}

int names_arbiter_loop(const id_config_t *cfg, bool until_idle, names_stats_t *stats,
                       id_err_t *err)
{
	return names_arbiter_loop_synced(cfg, until_idle, stats, NULL, err);
}

int names_arbiter_loop_synced(const id_config_t *cfg, bool until_idle,
                              names_stats_t *stats, names_sync_t *sync, id_err_t *err)
{
	arbiter_t *a = calloc(1, sizeof(*a));
	char path[1024], group[300], txid[300];
	int rc = 0;
	if (a == NULL) {
		if (sync != NULL)
			sync->arbiter_stopped = true;
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	a->stats = stats;
	a->sync = sync;
	a->delivery.next_offsets = a->answers_next;
	a->delivery.nparts = NAMES_MAX_PARTITIONS;
	id_hmap_init(&a->open);
	id_buf_init(&a->key);
	id_buf_init(&a->val);
	name_claim_init(&a->claim);
	employee_event_init(&a->answer);
	if ((a->batch = state_batch_create()) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	id_config_topic(cfg, "names.claims", a->in_topic, sizeof(a->in_topic));
	id_config_topic(cfg, "hr.events", a->out_topic, sizeof(a->out_topic));
	snprintf(path, sizeof(path), "%s/names", id_config_str(cfg, "state.dir"));
	snprintf(group, sizeof(group), "%s.names", id_config_str(cfg, "topic.prefix"));
	snprintf(txid, sizeof(txid), "%s.names.%s", id_config_str(cfg, "topic.prefix"),
	         id_config_str(cfg, "names.instance_id"));
	long batch_max = (long)id_config_int(cfg, "names.batch_max");
	double batch_ms = (double)id_config_int(cfg, "names.batch_ms");
	/* A small store: one entry per name, a few hundred bytes each. */
	state_store_opts_t store_opts = {NULL, (size_t)8 << 20, (size_t)8 << 20};
	if ((rc = state_store_open(path, &store_opts, &a->db, err)) != 0)
		goto out;
	if ((a->codec = codec_create(err)) == NULL) {
		rc = err ? err->code : ID_ENOMEM;
		goto out;
	}
	if ((a->producer = id_kafka_producer_create(cfg, "idstream-names", txid, err)) ==
	    NULL) {
		rc = err ? err->code : ID_EKAFKA;
		goto out;
	}
	a->consumer = id_kafka_consumer_create(cfg, "idstream-names", group,
	                                       arbiter_rebalance, a, err);
	if (a->consumer == NULL) {
		rc = err ? err->code : ID_EKAFKA;
		goto out;
	}
	int32_t nparts = 0;
	if ((rc = id_kafka_partition_count(a->consumer, a->in_topic, &nparts, err)) !=
	    0) {
		id_err_wrap(err, "%s (made by `idstream topics create`)", a->in_topic);
		goto out;
	}
	rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(sub, a->in_topic, RD_KAFKA_PARTITION_UA);
	rd_kafka_resp_err_t se = rd_kafka_subscribe(a->consumer, sub);
	rd_kafka_topic_partition_list_destroy(sub);
	if (se != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, se, "subscribing to names.claims");
		goto out;
	}
	id_log_info(NAMES_LOG, "consuming %s (%d partitions) as %s, transactional.id %s",
	            a->in_topic, nparts, group, txid);

	while (!cli_stop_requested && !a->fatal) {
		int timeout = 50;
		if (a->txn_open) {
			double left = batch_ms - elapsed_ms(&a->txn_started);
			timeout = left <= 0 ? 0 : left < 50 ? (int)left + 1 : 50;
		}
		rd_kafka_message_t *m = rd_kafka_consumer_poll(a->consumer, timeout);
		bool idle = m == NULL || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
		if (m != NULL) {
			rc = arbiter_on_message(a, m, err);
			rd_kafka_message_destroy(m);
			if (rc != 0)
				goto out;
		}
		if (a->txn_open && (a->txn_claims >= batch_max ||
		                    elapsed_ms(&a->txn_started) >= batch_ms ||
		                    (idle && arbiter_caught_up(a)))) {
			if ((rc = arbiter_commit(a, err)) != 0)
				goto out;
		}
		arbiter_publish(a);
		/* Inside `run`, the processor says when: answers to its last
		 * claims may still be due. */
		if (until_idle && !a->txn_open &&
		    (sync != NULL ? sync->processor_done != 0 : arbiter_caught_up(a)))
			break;
	}
	if (a->fatal) {
		if (err)
			*err = a->fatal_err;
		rc = a->fatal_err.code ? a->fatal_err.code : ID_EKAFKA;
		goto out;
	}
	rc = arbiter_commit(a, err);
out:
	if (a->txn_open) {
		rd_kafka_error_t *e = rd_kafka_abort_transaction(a->producer, 30000);
		if (e != NULL)
			rd_kafka_error_destroy(e);
	}
	id_kafka_destroy(a->consumer);
	id_kafka_destroy(a->producer);
	codec_destroy(a->codec);
	arbiter_open_drop(a);
	id_hmap_fini(&a->open);
	state_batch_destroy(a->batch);
	state_store_close(a->db);
	name_claim_fini(&a->claim);
	employee_event_fini(&a->answer);
	id_buf_fini(&a->key);
	id_buf_fini(&a->val);
	free(a);
	if (sync != NULL) {
		pthread_mutex_lock(&sync->mu);
		sync->arbiter_stopped = true;
		pthread_mutex_unlock(&sync->mu);
	}
	return rc;
}

void names_stats_print(const names_stats_t *st)
{
	printf("names: %ld granted, %ld denied, %ld reserved, %ld released, %ld ignored, "
	       "%ld re-decided after restart, %ld refused, %ld transactions\n",
	       st->granted, st->denied, st->reserved, st->released, st->ignored,
	       st->replayed, st->rejected, st->txns);
}

/* --- import ------------------------------------------------------------------ */

typedef struct import {
	rd_kafka_t *producer;
	codec_t *codec;
	char topic[256];
	char source_event_id[300];
	int64_t now;
	bool dry_run;
	long count, usernames, emails, others;
	id_buf_t key, val;
} import_t;

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Publishes (in the open transaction) one RESERVE, or prints it (dry run). */
static int import_reserve(import_t *im, const char *ns, const char *value,
                          const char *owner, const char *where, id_err_t *err)
{
	name_claim_t c;
	int rc;
	name_claim_init(&c);
	c.kind = NAME_RESERVE;
	c.claimed_at = im->now;
	if ((c.ns = strdup(ns)) == NULL || (c.value = strdup(value)) == NULL ||
	    (c.employee_id = strdup(owner)) == NULL ||
	    (c.source_event_id = strdup(im->source_event_id)) == NULL ||
	    name_claim_make_id(&c) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = name_claim_check(&c, NULL, 0, err)) != 0) {
		id_err_wrap(err, "%s", where);
		goto out;
	}
	if (im->dry_run) {
		printf("would reserve %s %s for %s\n", ns, value, owner);
	} else {
		if ((rc = name_key(ns, value, &im->key)) != 0 ||
		    (rc = codec_encode_name_claim(im->codec, &c, &im->val, err)) != 0)
			goto out;
		rd_kafka_resp_err_t e;
		for (int tries = 0;; tries++) {
			e = rd_kafka_producev(im->producer, RD_KAFKA_V_TOPIC(im->topic),
			                      RD_KAFKA_V_KEY(im->key.data, im->key.len),
			                      RD_KAFKA_V_VALUE(im->val.data, im->val.len),
			                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			                      RD_KAFKA_V_END);
			if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries >= 600)
				break;
			rd_kafka_poll(im->producer, 100);
		}
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_kafka_err(err, e, "producing reservation");
			goto out;
		}
	}
	im->count++;
	if (strcmp(ns, "username") == 0)
		im->usernames++;
	else if (strcmp(ns, "email") == 0)
		im->emails++;
	else
		im->others++;
out:
	name_claim_fini(&c);
	return rc;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
	                 s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

/*
 * A file of names: "namespace,value[,owner]" per line, or one value per line
 * (namespace default_ns).  Blank lines and '#' comments are skipped, and so is
 * a header line starting with "namespace,".  Without an owner the name is
 * reserved for "external:<file name>".
 */
static int import_file(import_t *im, const char *path, const char *default_ns,
                       id_err_t *err)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, where[1100], owner_default[1100];
	size_t cap = 0;
	long lineno = 0;
	int rc = 0;
	if (f == NULL)
		return id_err_set(err, ID_EIO, "%s: %s", path, strerror(errno));
	const char *base = strrchr(path, '/');
	snprintf(owner_default, sizeof(owner_default), "external:%s",
	         base ? base + 1 : path);
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		char *s = trim(line);
		if (lineno == 1 && (unsigned char)s[0] == 0xEF &&
		    (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF)
			s = trim(s + 3);
		if (*s == '\0' || *s == '#' || strncmp(s, "namespace,", 10) == 0)
			continue;
		char *fields[3] = {NULL, NULL, NULL};
		int n = 0;
		for (char *p = s; n < 3;) {
			fields[n++] = p;
			char *comma = strchr(p, ',');
			if (comma == NULL)
				break;
			*comma = '\0';
			p = comma + 1;
		}
		for (int i = 0; i < n; i++)
			fields[i] = trim(fields[i]);
		const char *ns = n == 1 ? default_ns : fields[0];
		const char *value = n == 1 ? fields[0] : fields[1];
		const char *owner = n == 3 && fields[2][0] ? fields[2] : owner_default;
		snprintf(where, sizeof(where), "%s:%ld", path, lineno);
		if ((rc = import_reserve(im, ns, value, owner, where, err)) != 0)
			break;
	}
	free(line);
	fclose(f);
	return rc;
}

static void secret_wipe(char *s)
{
	if (s == NULL)
		return;
	memset(s, 0, strlen(s));
	free(s);
}

/*
 * The names of an LDAP directory: every entry under ldap.people_dn with a
 * uid (→ username) or mail (→ email).  An entry with an employeeNumber is
 * reserved for that employee (its account already exists, so its own claim
 * is granted); any other entry for "external:<dn>".
 */
static int import_ldap(import_t *im, const id_config_t *cfg, id_err_t *err)
{
	LDAP *ld = NULL;
	LDAPMessage *res = NULL;
	char *password = NULL;
	const char *url = id_config_str(cfg, "ldap.url");
	const char *base = id_config_str(cfg, "ldap.people_dn");
	int timeout_ms = (int)id_config_int(cfg, "ldap.timeout_ms");
	int rc = 0, lrc;
	int version = LDAP_VERSION3;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	char *attrs[] = {"uid", "mail", "employeeNumber", NULL};

	rc = id_config_secret(cfg, "ldap.bind_password_file",
	                      "IDSTREAM_LDAP_BIND_PASSWORD", &password, err);
	if (rc != 0 && rc != ID_ENOTFOUND)
		goto out;
	rc = 0;
	if ((lrc = ldap_initialize(&ld, url)) != LDAP_SUCCESS) {
		rc = id_err_set(err, ID_ELDAP, "%s: %s", url, ldap_err2string(lrc));
		goto out;
	}
	ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version);
	ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
	ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
	/* Without a password the search is anonymous. */
	struct berval cred = {password ? strlen(password) : 0, password};
	lrc = ldap_sasl_bind_s(ld, password ? id_config_str(cfg, "ldap.bind_dn") : "",
	                       LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (lrc != LDAP_SUCCESS) {
		rc = id_err_set(err, ID_ELDAP, "%s: bind as %s: %s", url,
		                password ? id_config_str(cfg, "ldap.bind_dn")
		                         : "anonymous",
		                ldap_err2string(lrc));
		goto out;
	}
	lrc = ldap_search_ext_s(ld, base, LDAP_SCOPE_SUBTREE, "(|(uid=*)(mail=*))", attrs,
	                        0, NULL, NULL, &tv, 0, &res);
	if (lrc != LDAP_SUCCESS) {
		rc = id_err_set(err, ID_ELDAP, "%s: search %s: %s", url, base,
		                ldap_err2string(lrc));
		goto out;
	}
	for (LDAPMessage *e = ldap_first_entry(ld, res); e != NULL && rc == 0;
	     e = ldap_next_entry(ld, e)) {
		char *dn = ldap_get_dn(ld, e);
		struct berval **emp = ldap_get_values_len(ld, e, "employeeNumber");
		char owner[1100];
		if (emp != NULL && emp[0] != NULL && emp[0]->bv_len > 0 &&
		    emp[0]->bv_len < 256)
			snprintf(owner, sizeof(owner), "%.*s", (int)emp[0]->bv_len,
			         emp[0]->bv_val);
		else
			snprintf(owner, sizeof(owner), "external:%.1000s", dn ? dn : "?");
		static const char *const map[][2] = {{"uid", "username"},
		                                     {"mail", "email"}};
		for (int m = 0; m < 2 && rc == 0; m++) {
			struct berval **v = ldap_get_values_len(ld, e, map[m][0]);
			for (int i = 0; v != NULL && v[i] != NULL && rc == 0; i++) {
				char *value = strndup(v[i]->bv_val, v[i]->bv_len);
				char where[1100];
				snprintf(where, sizeof(where), "%.1000s %s",
				         dn ? dn : "?", map[m][0]);
				rc = value ? import_reserve(im, map[m][1], value, owner,
				                            where, err)
				           : id_err_set(err, ID_ENOMEM, "out of memory");
				free(value);
			}
			ldap_value_free_len(v);
		}
		ldap_value_free_len(emp);
		ldap_memfree(dn);
	}
out:
	if (res != NULL)
		ldap_msgfree(res);
	if (ld != NULL)
		ldap_unbind_ext_s(ld, NULL, NULL);
	secret_wipe(password);
	return rc;
}

static void import_usage(void)
{
	printf("usage: idstream names import ldap [--dry-run]\n"
	       "       idstream names import --file FILE [--namespace NS] [--dry-run]\n"
	       "\n"
	       "Reserves names that already exist, so no employee is granted them: "
	       "publishes one\n"
	       "RESERVE claim per name to <prefix>.names.claims, in one transaction, "
	       "and prints\n"
	       "how many. The arbiter records them in log order: a name already "
	       "granted stays\n"
	       "with its employee.\n"
	       "\n"
	       "  ldap           every entry under ldap.people_dn (ldap.url, "
	       "ldap.bind_dn, password\n"
	       "                 from IDSTREAM_LDAP_BIND_PASSWORD or "
	       "ldap.bind_password_file;\n"
	       "                 anonymous without one): uid → username, mail → "
	       "email. An entry\n"
	       "                 with an employeeNumber is reserved for that employee "
	       "(its own\n"
	       "                 claim is granted), others for \"external:<dn>\".\n"
	       "  --file FILE    lines \"namespace,value[,owner]\", or one value per "
	       "line; '#'\n"
	       "                 comments; owner defaults to \"external:<file name>\"\n"
	       "  --namespace NS namespace of one-value lines (default username)\n"
	       "  --dry-run      print what would be reserved, publish nothing\n");
}

static int names_import(cli_t *cli, int argc, char **argv)
{
	const char *file = NULL, *target = NULL, *ns = "username";
	bool dry_run = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			import_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc) {
			file = argv[++i];
		} else if (strcmp(argv[i], "--namespace") == 0 && i + 1 < argc) {
			ns = argv[++i];
		} else if (strcmp(argv[i], "--dry-run") == 0) {
			dry_run = true;
		} else if (argv[i][0] != '-' && target == NULL) {
			target = argv[i];
		} else {
			return cli_usage_error("names import",
			                       "unexpected argument \"%s\"", argv[i]);
		}
	}
	if ((file == NULL) == (target == NULL))
		return cli_usage_error("names import",
		                       "give a TARGET (ldap) or --file FILE");
	if (target != NULL && strcmp(target, "ldap") != 0)
		return cli_usage_error("names import",
		                       "unknown target \"%s\" (supported: ldap)", target);

	import_t im;
	id_err_t err = {0};
	int rc = 0;
	char txid[300];
	memset(&im, 0, sizeof(im));
	id_buf_init(&im.key);
	id_buf_init(&im.val);
	im.dry_run = dry_run;
	im.now = wall_ms();
	id_config_topic(cli->cfg, "names.claims", im.topic, sizeof(im.topic));
	snprintf(im.source_event_id, sizeof(im.source_event_id), "import:%s:%" PRId64,
	         file ? "file" : target, im.now);
	snprintf(txid, sizeof(txid), "%s.names.import",
	         id_config_str(cli->cfg, "topic.prefix"));
	if ((im.codec = codec_create(&err)) == NULL) {
		rc = err.code;
		goto out;
	}
	if (!dry_run) {
		if ((im.producer = id_kafka_producer_create(
		         cli->cfg, "idstream-names-import", txid, &err)) == NULL) {
			rc = err.code;
			goto out;
		}
		rd_kafka_error_t *e = rd_kafka_begin_transaction(im.producer);
		if (e != NULL) {
			rc = id_kafka_error(&err, e, "beginning transaction");
			rd_kafka_error_destroy(e);
			goto out;
		}
	}
	rc = file ? import_file(&im, file, ns, &err) : import_ldap(&im, cli->cfg, &err);
	if (!dry_run) {
		rd_kafka_error_t *e =
		    rc == 0 ? rd_kafka_commit_transaction(im.producer, 60000)
		            : rd_kafka_abort_transaction(im.producer, 60000);
		if (e != NULL) {
			if (rc == 0)
				rc = id_kafka_error(&err, e,
				                    "committing the reservations");
			rd_kafka_error_destroy(e);
		}
	}
	if (rc == 0)
		printf("%s %ld names (%ld usernames, %ld e-mails, %ld other) %s %s\n",
		       dry_run ? "would reserve" : "reserved", im.count, im.usernames,
		       im.emails, im.others, dry_run ? "from" : "published from",
		       file ? file : id_config_str(cli->cfg, "ldap.url"));
out:
	id_kafka_destroy(im.producer);
	codec_destroy(im.codec);
	id_buf_fini(&im.key);
	id_buf_fini(&im.val);
	return rc == 0 ? CLI_EXIT_OK : cli_fail("names import", &err);
}

/* --- claim / release by hand ------------------------------------------------- */

static void publish_usage(void)
{
	printf("usage: idstream names claim NAMESPACE VALUE EMPLOYEE_ID [--at TIME]\n"
	       "       idstream names release NAMESPACE VALUE EMPLOYEE_ID [--at TIME]\n"
	       "                              [--quarantine-days N | --until TIME]\n"
	       "\n"
	       "Publishes one claim to <prefix>.names.claims by hand, as the processor "
	       "does:\n"
	       "claim asks for the name for the employee (the arbiter answers on the "
	       "employee's\n"
	       "stream in hr.events); release gives up a name the employee holds, "
	       "keeping it\n"
	       "reserved for them until the quarantine ends. Prints the claim id.\n"
	       "\n"
	       "  --at TIME            the claim's time (ms since 1970 or ISO 8601; "
	       "default now)\n"
	       "  --quarantine-days N  release: reserved for N days after --at "
	       "(default 0)\n"
	       "  --until TIME         release: reserved until TIME\n");
}

/* ms since 1970, or a time policy_time_parse() reads (ISO 8601, UTC). */
static int parse_time_arg(const char *s, int64_t *out)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno == 0 && end != s && *end == '\0') {
		*out = v;
		return 0;
	}
	return policy_time_parse(s, out);
}

static int names_publish(cli_t *cli, name_claim_kind_t kind, int argc, char **argv)
{
	const char *cmd = kind == NAME_CLAIM ? "names claim" : "names release";
	const char *pos[3] = {NULL, NULL, NULL};
	int npos = 0;
	int64_t at = wall_ms(), until = -1, days = 0;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			publish_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--at") == 0 && i + 1 < argc) {
			if (parse_time_arg(argv[++i], &at) != 0)
				return cli_usage_error(cmd, "--at: not a time: \"%s\"",
				                       argv[i]);
		} else if (kind == NAME_RELEASE && strcmp(argv[i], "--until") == 0 &&
		           i + 1 < argc) {
			if (parse_time_arg(argv[++i], &until) != 0)
				return cli_usage_error(cmd, "--until: not a time: \"%s\"",
				                       argv[i]);
		} else if (kind == NAME_RELEASE &&
		           strcmp(argv[i], "--quarantine-days") == 0 && i + 1 < argc) {
			char *end = NULL;
			days = strtoll(argv[++i], &end, 10);
			if (*end != '\0' || days < 0 || days > 36500)
				return cli_usage_error(cmd,
				                       "--quarantine-days: 0..36500");
		} else if (argv[i][0] != '-' && npos < 3) {
			pos[npos++] = argv[i];
		} else {
			return cli_usage_error(cmd, "unexpected argument \"%s\"",
			                       argv[i]);
		}
	}
	if (npos != 3)
		return cli_usage_error(cmd, "expected NAMESPACE VALUE EMPLOYEE_ID");
	name_claim_t c;
	id_err_t err = {0};
	id_buf_t key = ID_BUF_INIT, val = ID_BUF_INIT;
	codec_t *codec = NULL;
	rd_kafka_t *rk = NULL;
	char topic[256];
	int rc = 0;
	name_claim_init(&c);
	c.kind = kind;
	c.claimed_at = at;
	if (kind == NAME_RELEASE)
		c.quarantine_until = until >= 0 ? until : at + days * 86400000;
	if ((c.ns = strdup(pos[0])) == NULL || (c.value = strdup(pos[1])) == NULL ||
	    (c.employee_id = strdup(pos[2])) == NULL ||
	    (c.source_event_id = strdup(kind == NAME_CLAIM ? "manual:claim"
	                                                   : "manual:release")) == NULL ||
	    name_claim_make_id(&c) != 0 || name_key(c.ns, c.value, &key) != 0) {
		rc = id_err_set(&err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = name_claim_check(&c, NULL, 0, &err)) != 0)
		goto out;
	id_config_topic(cli->cfg, "names.claims", topic, sizeof(topic));
	if ((codec = codec_create(&err)) == NULL ||
	    (rk = id_kafka_producer_create(cli->cfg, "idstream-names", NULL, &err)) ==
	        NULL) {
		rc = err.code ? err.code : ID_ENOMEM;
		goto out;
	}
	if ((rc = codec_encode_name_claim(codec, &c, &val, &err)) != 0 ||
	    (rc = id_kafka_produce_sync(rk, topic, key.data, key.len, val.data, val.len,
	                                &err)) != 0)
		goto out;
	printf("%s\n", c.claim_id);
out:
	id_kafka_destroy(rk);
	codec_destroy(codec);
	name_claim_fini(&c);
	id_buf_fini(&key);
	id_buf_fini(&val);
	return rc == 0 ? CLI_EXIT_OK : cli_fail(cmd, &err);
}

/* --- show -------------------------------------------------------------------- */

static void fmt_ms(int64_t ms, char *out, size_t n)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (ms <= 0 || gmtime_r(&s, &tm) == NULL) {
		snprintf(out, n, "-");
		return;
	}
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void show_usage(void)
{
	printf("usage: idstream names show NAME [--namespace NS] [--json]\n"
	       "\n"
	       "Who holds NAME and how it got there, read from <prefix>.names.claims "
	       "(committed\n"
	       "claims only): the partition that owns the name is read and its claims "
	       "are decided\n"
	       "again exactly as the arbiter decides them, so the answer holds "
	       "whether or not\n"
	       "an arbiter runs here. Exit status 0 when the name is held, 3 when it "
	       "is free.\n"
	       "\n"
	       "  --namespace NS  the claim namespace (default username; NAME may "
	       "also be NS:VALUE)\n"
	       "  --json          one JSON object: state, owner, since, "
	       "quarantine_until, history\n");
}

static int names_show(cli_t *cli, int argc, char **argv)
{
	const char *name = NULL, *ns = NULL;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			show_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--namespace") == 0 && i + 1 < argc) {
			ns = argv[++i];
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (argv[i][0] != '-' && name == NULL) {
			name = argv[i];
		} else {
			return cli_usage_error("names show", "unexpected argument \"%s\"",
			                       argv[i]);
		}
	}
	if (name == NULL)
		return cli_usage_error("names show", "expected NAME");
	char nsbuf[NAME_NAMESPACE_MAX + 1];
	const char *colon = strchr(name, ':');
	if (ns == NULL && colon != NULL && (size_t)(colon - name) <= NAME_NAMESPACE_MAX) {
		snprintf(nsbuf, sizeof(nsbuf), "%.*s", (int)(colon - name), name);
		ns = nsbuf;
		name = colon + 1;
	}
	if (ns == NULL)
		ns = "username";

	id_err_t err = {0};
	int rc = 0;
	char topic[256];
	id_buf_t key = ID_BUF_INIT;
	name_entry_t entry;
	name_claim_t c;
	codec_t *codec = NULL;
	rd_kafka_t *rk = NULL;
	json_t *history = json_array();
	name_entry_init(&entry);
	name_claim_init(&c);
	id_config_topic(cli->cfg, "names.claims", topic, sizeof(topic));
	if (name_key(ns, name, &key) != 0 || history == NULL) {
		rc = id_err_set(&err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((codec = codec_create(&err)) == NULL ||
	    (rk = id_kafka_consumer_create(cli->cfg, "idstream-names-show", NULL, NULL,
	                                   NULL, &err)) == NULL) {
		rc = err.code ? err.code : ID_ENOMEM;
		goto out;
	}
	int32_t nparts = 0;
	if ((rc = id_kafka_partition_count(rk, topic, &nparts, &err)) != 0)
		goto out;
	int32_t part = id_kafka_partition_for_key(key.data, key.len, nparts);
	int64_t lo = 0, hi = 0;
	rd_kafka_resp_err_t qe =
	    rd_kafka_query_watermark_offsets(rk, topic, part, &lo, &hi, 10000);
	if (qe != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(&err, qe, "reading the claims partition's offsets");
		goto out;
	}
	if (hi > lo) {
		rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
		rd_kafka_topic_partition_list_add(l, topic, part)->offset =
		    RD_KAFKA_OFFSET_BEGINNING;
		rd_kafka_assign(rk, l);
		rd_kafka_topic_partition_list_destroy(l);
		for (int idle = 0; idle < 600 && !cli_stop_requested;) {
			rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
			if (m == NULL) {
				idle++;
				continue;
			}
			idle = 0;
			bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
			if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
			    m->key_len == key.len &&
			    memcmp(m->key, key.data, key.len) == 0 &&
			    codec_decode_name_claim(codec, m->payload, m->len, &c,
			                            NULL) == 0) {
				name_decision_t d;
				if (name_arbiter_decide(&entry, &c, m->key, m->key_len,
				                        &d) != 0) {
					rd_kafka_message_destroy(m);
					rc = id_err_set(&err, ID_ENOMEM, "out of memory");
					goto out;
				}
				const char *what =
				    d.outcome == NAME_OUTCOME_GRANTED  ? "granted"
				    : d.outcome == NAME_OUTCOME_DENIED ? "denied"
				    : d.changed ? (c.kind == NAME_RESERVE ? "reserved"
				                                          : "released")
				                : "ignored";
				json_array_append_new(
				    history,
				    json_pack(
				        "{s:I, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}",
				        "offset", (json_int_t)m->offset, "kind",
				        name_claim_kind_name(c.kind), "employee_id",
				        c.employee_id, "value", c.value, "claimed_at",
				        (json_int_t)c.claimed_at, "quarantine_until",
				        (json_int_t)c.quarantine_until, "outcome", what,
				        "reason", name_reason_name(d.reason), "claim_id",
				        c.claim_id));
			}
			rd_kafka_message_destroy(m);
			if (eof)
				break;
		}
	}
	char since[40], until[40];
	fmt_ms(entry.since, since, sizeof(since));
	fmt_ms(entry.quarantine_until, until, sizeof(until));
	if (json) {
		json_t *o = json_pack(
		    "{s:s, s:s, s:s%, s:i, s:s, s:s?, s:s?, s:I, s:I, s:s?, s:O}",
		    "namespace", ns, "value", entry.value ? entry.value : name, "key",
		    key.data, key.len, "partition", (int)part, "state",
		    name_state_name(entry.state), "owner", entry.owner, "claim_id",
		    entry.claim_id, "since", (json_int_t)entry.since, "quarantine_until",
		    (json_int_t)entry.quarantine_until, "topic", topic, "history",
		    history);
		if (o != NULL)
			json_dumpf(o, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(o);
	} else {
		printf("%s %s: %s", ns, entry.value ? entry.value : name,
		       name_state_name(entry.state));
		if (entry.state != NAME_STATE_FREE)
			printf(" — owner %s since %s", entry.owner, since);
		if (entry.state == NAME_STATE_RELEASED)
			printf(", quarantined until %s", until);
		printf("\n");
		for (size_t i = 0; i < json_array_size(history); i++) {
			json_t *h = json_array_get(history, i);
			char at[40];
			fmt_ms(json_integer_value(json_object_get(h, "claimed_at")), at,
			       sizeof(at));
			const char *reason =
			    json_string_value(json_object_get(h, "reason"));
			printf("  %s  %-7s %-24s %s%s%s%s\n", at,
			       json_string_value(json_object_get(h, "kind")),
			       json_string_value(json_object_get(h, "employee_id")),
			       json_string_value(json_object_get(h, "outcome")),
			       reason && reason[0] ? " (" : "", reason ? reason : "",
			       reason && reason[0] ? ")" : "");
		}
	}
	if (entry.state == NAME_STATE_FREE)
		rc = 3;
out:
	json_decref(history);
	name_entry_fini(&entry);
	name_claim_fini(&c);
	codec_destroy(codec);
	id_kafka_destroy(rk);
	id_buf_fini(&key);
	if (rc == 3)
		return 3;
	return rc == 0 ? CLI_EXIT_OK : cli_fail("names show", &err);
}

/* --- dispatch ----------------------------------------------------------------- */

static void names_usage(void)
{
	printf("usage: idstream names arbiter [--until-idle]\n"
	       "       idstream names import ldap | --file FILE [--namespace NS] "
	       "[--dry-run]\n"
	       "       idstream names show NAME [--namespace NS] [--json]\n"
	       "       idstream names claim|release NAMESPACE VALUE EMPLOYEE_ID ...\n"
	       "\n"
	       "Usernames and e-mails are unique across all employees: candidates are "
	       "claimed on\n"
	       "<prefix>.names.claims (keyed by the name, so one partition decides "
	       "each name) and\n"
	       "the arbiter answers each claim with NAME_GRANTED or NAME_DENIED on the "
	       "claimant's\n"
	       "stream in <prefix>.hr.events, exactly once.\n"
	       "\n"
	       "  arbiter   decide claims (consumer group <prefix>.names, state in "
	       "<state.dir>/names;\n"
	       "            run several with different names.instance_id to share "
	       "partitions)\n"
	       "  import    reserve names that already exist in a directory or a file\n"
	       "  show      who holds a name, and its history\n"
	       "  claim     claim a name for an employee by hand\n"
	       "  release   release an employee's name by hand (with a quarantine)\n"
	       "\n"
	       "`idstream names COMMAND --help` for each.\n");
}

static void arbiter_usage(void)
{
	printf("usage: idstream names arbiter [--until-idle]\n"
	       "\n"
	       "Decides the claims on <prefix>.names.claims and answers each CLAIM "
	       "with a\n"
	       "NAME_GRANTED or NAME_DENIED event (reason taken, reserved, quarantined "
	       "or\n"
	       "invalid) on <prefix>.hr.events, keyed by the claimant, exactly once "
	       "(Kafka\n"
	       "transactions, transactional.id <prefix>.names.<names.instance_id>). A "
	       "name\n"
	       "granted to an employee stays theirs; a released one is the old owner's "
	       "until its\n"
	       "quarantine ends, judged by the claim's time. State: "
	       "<state.dir>/names.\n"
	       "\n"
	       "  --until-idle   stop once every assigned partition is caught up\n");
}

int cmd_names(cli_t *cli, int argc, char **argv)
{
	if (argc < 2 || cli_is_help(argv[1])) {
		names_usage();
		return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "import") == 0)
		return names_import(cli, argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return names_show(cli, argc - 1, argv + 1);
	if (strcmp(argv[1], "claim") == 0)
		return names_publish(cli, NAME_CLAIM, argc - 1, argv + 1);
	if (strcmp(argv[1], "release") == 0)
		return names_publish(cli, NAME_RELEASE, argc - 1, argv + 1);
	if (strcmp(argv[1], "arbiter") != 0)
		return cli_usage_error("names", "unknown command \"%s\"", argv[1]);
	bool until_idle = false;
	for (int i = 2; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			arbiter_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--until-idle") == 0) {
			until_idle = true;
		} else {
			return cli_usage_error("names arbiter", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	names_stats_t stats = {0};
	id_err_t err = {0};
	int rc = names_arbiter_loop(cli->cfg, until_idle, &stats, &err);
	names_stats_print(&stats);
	return rc == 0 ? CLI_EXIT_OK : cli_fail("names arbiter", &err);
}
