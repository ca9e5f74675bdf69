/*
 * sink.c — `idstream sink ldap`: the I/O shell that feeds desired identities
 * to the LDAP sink core (sinks/sink_ldap.c) and publishes what it did.
 *
 * Consumes <prefix>.identity.desired in group <prefix>.sink.<target>
 * (read_committed).  For each desired version newer than the version
 * recorded as applied, the sink core reads the entry, diffs and applies the
 * minimal operations; the applied version is then recorded and a SinkResult
 * is published to <prefix>.sink.results.  Offsets are committed after the
 * results are acknowledged, so a crash re-delivers at most the last batch —
 * which the version check and the diff turn into zero LDAP writes.
 *
 * Catch-up: at assignment the sink notes the end offset of each partition.
 * Until it has read that far it only remembers the latest version per
 * employee; then it applies those, and only those.  So a new target, or a
 * sink whose state was lost, never replays a hire-then-terminate pair as two
 * operations, and re-delivering the whole topic writes nothing.
 *
 * When the directory cannot be reached the message is retried with
 * exponential backoff (capped) instead of being skipped: nothing is lost.
 *
 * State key layout (state.dir/sink-<target>):
 *
 *   | key                  | value                              |
 *   |----------------------|------------------------------------|
 *   | 'V' employee_id      | be64(last applied desired version) |
 *
 * Threading: one thread runs the loop.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cli.h"
#include "common/buf.h"
#include "common/failpoint.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "schemas/codec.h"
#include "cmd/sink_targets.h"
#include "state/store.h"

#define SINK_MAX_PARTITIONS STAGE_MAX_PARTITIONS
#define SINK_COMMIT_EVERY   500

/* The newest desired version of an employee seen while catching up. */
typedef struct sink_pending {
	unsigned char *payload;
	size_t len;
	int32_t partition;
	int64_t offset;
} sink_pending_t;

typedef struct sink_run {
	const id_config_t *cfg;
	char target[128];
	char in_topic[256];
	char out_topic[256];
	rd_kafka_t *consumer;
	rd_kafka_t *producer;
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
	id_hmap_t latest;  /* employee id → sink_pending_t*, during catch-up */
	id_hmap_t applied; /* employee id → int64_t* version, awaiting sink_commit */
	long uncommitted;
	id_buf_t buf;
} sink_run_t;

static void sink_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                           rd_kafka_topic_partition_list_t *parts, void *opaque);

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t sink_applied_version(sink_run_t *s, const char *employee_id)
{
	int64_t *pending = id_hmap_get(&s->applied, employee_id);
	if (pending != NULL)
		return *pending;
	void *v = NULL;
	size_t vl = 0;
	int64_t ver = 0;
	id_buf_reset(&s->buf);
	id_buf_append_u8(&s->buf, 'V');
	id_buf_append_str(&s->buf, employee_id);
	if (state_store_get(s->db, s->buf.data, s->buf.len, &v, &vl, NULL) == 0 &&
	    vl == 8)
		ver = (int64_t)state_be64_get(v);
	free(v);
	return ver;
}

/* Notes a version as applied.  It is written to the state only once its
 * SinkResult is acknowledged (sink_commit), so a crash in between
 * re-applies it — a no-op by the diff — and publishes a result again
 * instead of leaving an applied version without any result. */
static int sink_record_version(sink_run_t *s, const char *employee_id, int64_t version,
                               id_err_t *err)
{
	int64_t *v = id_hmap_get(&s->applied, employee_id);
	if (v == NULL) {
		if ((v = malloc(sizeof(*v))) == NULL ||
		    id_hmap_put(&s->applied, employee_id, v) != 0) {
			free(v);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
	}
	*v = version;
	return 0;
}

static void sink_applied_drop(sink_run_t *s)
{
	for (size_t i = 0; i < s->applied.cap; i++)
		if (s->applied.slots[i].key != NULL)
			free(s->applied.slots[i].value);
	id_hmap_clear(&s->applied);
}

/* Writes the noted versions in one batch. */
static int sink_persist_applied(sink_run_t *s, id_err_t *err)
{
	if (s->applied.len == 0)
		return 0;
	state_batch_t *b = state_batch_create();
	if (b == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	for (size_t i = 0; i < s->applied.cap; i++) {
		if (s->applied.slots[i].key == NULL)
			continue;
		unsigned char v[8];
		state_be64_put(v, (uint64_t) * (int64_t *)s->applied.slots[i].value);
		id_buf_reset(&s->buf);
		id_buf_append_u8(&s->buf, 'V');
		id_buf_append_str(&s->buf, s->applied.slots[i].key);
		state_batch_put(b, s->buf.data, s->buf.len, v, 8);
	}
	int rc = state_batch_write(s->db, b, false, err);
	state_batch_destroy(b);
	if (rc == 0)
		sink_applied_drop(s);
	return rc;
}

/* Waits for every published result, then commits the consumed offsets. */
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
	int prc = sink_persist_applied(s, err);
	if (prc != 0)
		return prc;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	for (int32_t i = 0; i < SINK_MAX_PARTITIONS; i++) {
		if (s->assigned[i] && s->next[i] >= 0)
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

static int sink_publish(sink_run_t *s, const sink_result_t *r, id_err_t *err)
{
	id_buf_t out = ID_BUF_INIT;
	int rc = codec_encode_result(s->codec, r, &out, err);
	if (rc != 0)
		goto done;
	s->delivery.pending++;
	for (;;) {
		rd_kafka_resp_err_t e = rd_kafka_producev(
		    s->producer, RD_KAFKA_V_TOPIC(s->out_topic),
		    RD_KAFKA_V_KEY(r->employee_id, strlen(r->employee_id)),
		    RD_KAFKA_V_VALUE(out.data, out.len),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		    RD_KAFKA_V_OPAQUE(&s->delivery), RD_KAFKA_V_END);
		if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			rd_kafka_poll(s->producer, 100);
			continue;
		}
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			s->delivery.pending--;
			rc = id_kafka_err(err, e, "publishing sink result");
		}
		break;
	}
	rd_kafka_poll(s->producer, 0);
done:
	id_buf_fini(&out);
	return rc;
}

/* Applies one desired version.  Returns non-zero only for errors that must
 * stop the loop; an unreachable directory is retried here. */
static int sink_resolve_waiting(sink_run_t *s, const char *manager_id, id_err_t *err);

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
 * retrying while the directory is unreachable, records the version, and
 * publishes the result.  A report whose manager has no entry yet is
 * remembered under the manager's id and applied again once the manager's
 * entry is created, so the manager attribute is set as soon as it can be.
 */
static int sink_apply(sink_run_t *s, const desired_identity_t *d, const void *payload,
                      size_t len, bool relink, id_err_t *err)
{
	sink_result_t r;
	int rc = 0;
	sink_result_init(&r);
	long backoff = 200;
	for (;;) {
		id_err_t aerr = {0};
		sink_result_fini(&r);
		sink_result_init(&r);
		rc = s->ops->apply(s->target_h, d, &r, &aerr);
		if (rc == 0)
			break;
		if (cli_stop_requested) {
			rc = id_err_set(err, ID_EINTERRUPTED,
			                "stopped while %s was unreachable", s->target);
			goto out;
		}
		/* The directory is unreachable: keep the message and retry. */
		id_log_warn("sink", "target %s unavailable, retrying in %ld ms: %s",
		            s->target, backoff, aerr.msg);
		sleep_ms(backoff);
		backoff = backoff * 2 > 30000 ? 30000 : backoff * 2;
		rc = 0;
	}
	if (r.target == NULL)
		r.target = strdup(s->target);
	if (r.employee_id == NULL)
		r.employee_id = strdup(d->employee_id);
	r.desired_version = d->version;
	if (r.nops > 0)
		id_failpoint_crash("sink.after_apply");
	if (r.outcome != SINK_FAILED &&
	    (rc = sink_record_version(s, d->employee_id, d->version, err)) != 0)
		goto out;
	if (r.outcome == SINK_FAILED)
		id_log_kv(ID_LOG_ERROR, "sink", "apply failed", "target", s->target,
		          "employee", d->employee_id, "error", r.error ? r.error : "",
		          NULL);
	if (relink && r.outcome == SINK_APPLIED)
		s->stats->relinked++;
	else
		sink_count(s, &r);
	if ((rc = sink_publish(s, &r, err)) != 0)
		goto out;
	bool created = false;
	for (size_t i = 0; i < r.nops; i++) {
		if (strcmp(r.ops[i].op, "add") == 0 ||
		    strcmp(r.ops[i].op, "create") == 0) {
			created = true;
		} else if (strcmp(r.ops[i].op, "manager_pending") == 0 &&
		           r.ops[i].new_value != NULL) {
			id_buf_t k = ID_BUF_INIT;
			rc = key_waiting(&k, r.ops[i].new_value, d->employee_id);
			if (rc == 0)
				rc = state_store_put(s->db, k.data, k.len, payload, len,
				                     err);
			id_buf_fini(&k);
			if (rc != 0)
				goto out;
		}
	}
	if (created)
		rc = sink_resolve_waiting(s, d->employee_id, err);
out:
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
		if (codec_decode_desired(s->codec, v, vl, &d, &derr) != 0) {
			id_log_warn("sink", "dropping unreadable waiting report: %s",
			            derr.msg);
			continue;
		}
		/* A newer version applied since then carries its own wait. */
		if (d.version < sink_applied_version(s, d.employee_id))
			continue;
		id_log_info("sink", "manager %s now exists: applying %s again",
		            manager_id, d.employee_id);
		if ((rc = sink_apply(s, &d, v, vl, true, err)) != 0)
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

static int sink_handle(sink_run_t *s, const void *payload, size_t len, int32_t partition,
                       int64_t offset, id_err_t *err)
{
	desired_identity_t d;
	int rc = 0;
	desired_identity_init(&d);
	id_err_t derr = {0};
	if (codec_decode_desired(s->codec, payload, len, &d, &derr) != 0) {
		id_log_error("sink", "%s partition %d offset %lld: refused: %s",
		             s->in_topic, partition, (long long)offset, derr.msg);
		s->stats->failed++;
		goto out;
	}
	s->stats->seen++;
	if (d.version <= sink_applied_version(s, d.employee_id)) {
		s->stats->skipped++;
		goto out;
	}
	rc = sink_apply(s, &d, payload, len, false, err);
out:
	desired_identity_fini(&d);
	return rc;
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

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Applies the remembered newest versions (in employee id order), then
 * marks everything read while catching up as done. */
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
	for (size_t i = 0; i < n && rc == 0; i++) {
		sink_pending_t *pe = id_hmap_get(&s->latest, keys[i]);
		rc = sink_handle(s, pe->payload, pe->len, pe->partition, pe->offset, err);
	}
	free(keys);
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
	if (s->latest.len > 0 || sink_catching_up(s))
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
	id_hmap_init(&s->applied);
	id_config_topic(cfg, "identity.desired", s->in_topic, sizeof(s->in_topic));
	id_config_topic(cfg, "sink.results", s->out_topic, sizeof(s->out_topic));
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
	if ((rc = state_store_open(path, NULL, &s->db, err)) != 0)
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
	s->consumer =
	    id_kafka_consumer_create(cfg, "idstream-sink", group, sink_rebalance, s, err);
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

	while (!cli_stop_requested) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(s->consumer, 50);
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
				rc = sink_remember(s, m, err);
				s->catchup_next[p] = m->offset + 1;
				if (m->offset + 1 >= s->catchup_end[p])
					s->catchup_end[p] = -1;
			} else if (ok) {
				s->eof_at[p] = -1;
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
		if (!sink_catching_up(s) &&
		    (s->latest.len > 0 || sink_pending_catchup(s))) {
			if ((rc = sink_flush_latest(s, err)) != 0)
				goto out;
		}
		if (s->uncommitted >= SINK_COMMIT_EVERY ||
		    (m == NULL && s->uncommitted > 0)) {
			if ((rc = sink_commit(s, err)) != 0)
				goto out;
		}
		if (!until_idle)
			continue;
		if (sync == NULL) {
			if (sink_caught_up(s, NULL))
				break;
		} else if (sync->processor_idle) {
			/* The processor has committed everything; read past the last
			 * offset it produced on each partition, then stop. */
			if (sink_caught_up(s, sync->desired_next))
				break;
		}
	}
	rc = sink_commit(s, err);
out:
	if (s->target_h != NULL)
		stats->ldap_ops = (long)s->ops->writes(s->target_h);
	id_kafka_destroy(s->consumer);
	id_kafka_destroy(s->producer);
	if (s->target_h != NULL)
		s->ops->close(s->target_h);
	codec_destroy(s->codec);
	state_store_close(s->db);
	sink_latest_drop(s);
	id_hmap_fini(&s->latest);
	sink_applied_drop(s);
	id_hmap_fini(&s->applied);
	id_buf_fini(&s->buf);
	free(s);
	return rc;
}

static void sink_usage(const sink_target_ops_t *ops)
{
	printf(
	    "usage: idstream sink KIND [--until-idle]     KIND: %s\n"
	    "\n"
	    "Applies <prefix>.identity.desired to a target and publishes what it did to\n"
	    "<prefix>.sink.results. Versions already applied are skipped; every apply\n"
	    "reads the target's object first and writes only the differences. A sink\n"
	    "starting with empty state applies only each employee's latest version.\n"
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
	       "unchanged, %ld failed, %ld already applied, %ld manager links completed; "
	       "%ld %s writes\n",
	       target, st->created, st->updated, st->disabled, st->enabled, st->noop,
	       st->failed, st->skipped, st->relinked, st->ldap_ops, label);
}

int cmd_sink(cli_t *cli, int argc, char **argv)
{
	bool until_idle = false;
	if (argc >= 2 && cli_is_help(argv[1])) {
		sink_usage(NULL);
		return CLI_EXIT_OK;
	}
	const sink_target_ops_t *ops = argc >= 2 ? sink_target_find(argv[1]) : NULL;
	if (ops == NULL)
		return cli_usage_error("sink", "expected a target kind: %s",
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
