/*
 * ingest_csv.c — the CSV ingest stage (see ingest_csv.h): file → diff against
 * the snapshot → one Kafka transaction → snapshot batch.
 *
 * Invariant: the snapshot is written only after the Kafka transaction has
 * committed, so the snapshot never claims more than the log holds.
 * Threading: single-threaded; everything is created and destroyed per run.
 *
 * Snapshot store <state.dir>/ingest-<ingest.source>, one key per employee:
 *
 *   key                    offset  size  content
 *   "e/" employee_id       0       2     ASCII "e/"
 *                          2       n     employee id, UTF-8, no terminator
 *
 *   value (format 1)       offset  size  content
 *                          0       1     format version = 1
 *                          1       1     flags: bit 0 = terminated
 *                          2       8     seq, big-endian: events this source
 *                                        has published for the employee
 *                          10      4     attribute count, big-endian
 *                          14      ...   per attribute, in key order:
 *                                          4  key length, big-endian
 *                                          k  key bytes
 *                                          1  1 = value present, 0 = null
 *                                          4  value length (present only)
 *                                          v  value bytes (present only)
 */
#include "ingest/ingest_csv.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/buf.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ingest/csv_reader.h"
#include "ingest/export_diff.h"
#include "schemas/codec.h"
#include "state/store.h"

#define SNAPSHOT_PREFIX     "e/"
#define SNAPSHOT_FORMAT     1
#define SNAPSHOT_TERMINATED 0x01
#define KAFKA_TIMEOUT_MS    60000

/* ---- snapshot encoding --------------------------------------------------- */

static int snapshot_encode(const export_entry_t *e, id_buf_t *b)
{
	id_buf_reset(b);
	if (id_buf_append_u8(b, SNAPSHOT_FORMAT) != 0 ||
	    id_buf_append_u8(b, e->terminated ? SNAPSHOT_TERMINATED : 0) != 0 ||
	    id_buf_append_be64(b, e->seq) != 0 ||
	    id_buf_append_be32(b, (uint32_t)e->attrs.len) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < e->attrs.len; i++) {
		const id_kv_t *kv = &e->attrs.items[i];
		if (id_buf_append_be32(b, (uint32_t)strlen(kv->key)) != 0 ||
		    id_buf_append_str(b, kv->key) != 0 ||
		    id_buf_append_u8(b, kv->value != NULL) != 0)
			return ID_ENOMEM;
		if (kv->value != NULL &&
		    (id_buf_append_be32(b, (uint32_t)strlen(kv->value)) != 0 ||
		     id_buf_append_str(b, kv->value) != 0))
			return ID_ENOMEM;
	}
	return 0;
}

typedef struct reader {
	const unsigned char *p;
	size_t left;
} reader_t;

static bool rd_take(reader_t *r, size_t n, const unsigned char **out)
{
	if (r->left < n)
		return false;
	*out = r->p;
	r->p += n;
	r->left -= n;
	return true;
}

/* A length-prefixed string as a malloc'd C string; NULL on error. */
static char *rd_str(reader_t *r, bool *nomem)
{
	const unsigned char *p;
	if (!rd_take(r, 4, &p))
		return NULL;
	uint32_t n = state_be32_get(p);
	if (!rd_take(r, n, &p) || memchr(p, '\0', n) != NULL)
		return NULL;
	char *s = malloc((size_t)n + 1);
	if (s == NULL) {
		*nomem = true;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/* Decodes one value into snap under employee_id; ID_ESTATE when corrupt. */
static int snapshot_decode_add(export_snapshot_t *snap, const state_store_t *store,
                               const char *employee_id, const void *val, size_t vlen,
                               id_err_t *err)
{
	int rc = 0;
	bool nomem = false;
	const char *why = NULL;
	char *k = NULL, *v = NULL;
	id_attrs_t attrs = ID_ATTRS_INIT;
	reader_t r = {val, vlen};
	const unsigned char *p;

	if (!rd_take(&r, 14, &p)) {
		why = "too short";
		goto out;
	}
	if (p[0] != SNAPSHOT_FORMAT) {
		why = "unknown format version";
		goto out;
	}
	bool terminated = (p[1] & SNAPSHOT_TERMINATED) != 0;
	uint64_t seq = state_be64_get(p + 2);
	uint32_t n = state_be32_get(p + 10);
	for (uint32_t i = 0; i < n; i++) {
		const unsigned char *has;
		if ((k = rd_str(&r, &nomem)) == NULL || !rd_take(&r, 1, &has) ||
		    (*has == 1 && (v = rd_str(&r, &nomem)) == NULL) || *has > 1) {
			why = "truncated attribute";
			goto out;
		}
		if (id_attrs_set(&attrs, k, v) != 0) {
			nomem = true;
			goto out;
		}
		free(k);
		free(v);
		k = v = NULL;
	}
	if (r.left != 0) {
		why = "trailing bytes";
		goto out;
	}
	rc = export_snapshot_add(snap, employee_id, terminated, seq, &attrs);
	if (rc == ID_ENOMEM)
		nomem = true;
out:
	if (nomem)
		rc = id_err_set(err, ID_ENOMEM, "state store %s: out of memory",
		                state_store_path(store));
	else if (why != NULL)
		rc = id_err_set(
		    err, ID_ESTATE,
		    "state store %s: snapshot entry of employee %s is corrupt (%s); "
		    "move the store away to start from an empty snapshot",
		    state_store_path(store), employee_id, why);
	free(k);
	free(v);
	id_attrs_fini(&attrs);
	return rc;
}

static int snapshot_load(state_store_t *store, export_snapshot_t *snap, id_err_t *err)
{
	int rc = 0;
	state_iter_t *it = NULL;
	char *id = NULL;
	const size_t plen = strlen(SNAPSHOT_PREFIX);

	if ((rc = state_iter_create(store, SNAPSHOT_PREFIX, plen, &it, err)) != 0)
		goto out;
	const void *k, *v;
	size_t kl, vl;
	while ((rc = state_iter_next(it, &k, &kl, &v, &vl, err)) == 1) {
		if ((id = strndup((const char *)k + plen, kl - plen)) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		if ((rc = snapshot_decode_add(snap, store, id, v, vl, err)) != 0)
			goto out;
		free(id);
		id = NULL;
	}
out:
	free(id);
	state_iter_destroy(it);
	return rc < 0 ? rc : 0;
}

static int snapshot_save(state_store_t *store, const export_diff_t *d, id_err_t *err)
{
	int rc = 0;
	id_buf_t key = ID_BUF_INIT, val = ID_BUF_INIT;
	state_batch_t *b = state_batch_create();
	if (b == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < d->nchanges; i++) {
		const export_entry_t *e = &d->changes[i].entry;
		id_buf_reset(&key);
		if (id_buf_append_str(&key, SNAPSHOT_PREFIX) != 0 ||
		    id_buf_append_str(&key, e->employee_id) != 0 ||
		    snapshot_encode(e, &val) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		state_batch_put(b, key.data, key.len, val.data, val.len);
	}
	/* Synced: a snapshot lost after a commit would re-publish the file. */
	rc = state_batch_write(store, b, true, err);
out:
	state_batch_destroy(b);
	id_buf_fini(&key);
	id_buf_fini(&val);
	return rc;
}

/* ---- publishing ----------------------------------------------------------- */

/* Aborts the open transaction; the caller's error stays the one reported. */
static void txn_abort(rd_kafka_t *rk)
{
	rd_kafka_error_t *e = rd_kafka_abort_transaction(rk, KAFKA_TIMEOUT_MS);
	if (e != NULL) {
		id_log_warn("ingest", "aborting the Kafka transaction: %s",
		            rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	}
}

static int txn_commit(rd_kafka_t *rk, id_err_t *err)
{
	for (int attempt = 0;; attempt++) {
		rd_kafka_error_t *e = rd_kafka_commit_transaction(rk, KAFKA_TIMEOUT_MS);
		if (e == NULL)
			return 0;
		bool retry = rd_kafka_error_is_retriable(e) && attempt < 3;
		bool abortable = rd_kafka_error_txn_requires_abort(e);
		if (!retry) {
			int rc =
			    id_kafka_error(err, e, "committing the Kafka transaction");
			rd_kafka_error_destroy(e);
			if (abortable)
				txn_abort(rk);
			return rc;
		}
		rd_kafka_error_destroy(e);
	}
}

static int publish(const id_config_t *cfg, const export_diff_t *d, const char *topic,
                   size_t *published, id_err_t *err)
{
	int rc = 0;
	bool in_txn = false;
	rd_kafka_t *rk = NULL;
	codec_t *codec = NULL;
	id_buf_t val = ID_BUF_INIT;
	/* Tracked deliveries are not logged one by one by common/kafka.c; a
	 * failure surfaces once, as the commit's error.  Must outlive rk. */
	id_kafka_delivery_t dr = {0, RD_KAFKA_RESP_ERR_NO_ERROR, NULL, 0};
	char client_id[256], txn_id[512];
	const char *source = id_config_str(cfg, "ingest.source");

	snprintf(client_id, sizeof(client_id), "idstream-ingest-%s", source);
	snprintf(txn_id, sizeof(txn_id), "%s.ingest.%s",
	         id_config_str(cfg, "topic.prefix"), source);
	if ((codec = codec_create(err)) == NULL) {
		rc = err != NULL && err->code != 0 ? err->code : ID_ESCHEMA;
		goto out;
	}
	/* Encode everything first: a record the codec refuses must stop the run
	 * before anything is sent. */
	for (size_t i = 0; i < d->nchanges; i++) {
		if ((rc = codec_encode_event(codec, &d->changes[i].event, &val, err)) !=
		    0)
			goto out;
	}
	if ((rk = id_kafka_producer_create(cfg, client_id, txn_id, err)) == NULL) {
		rc = err != NULL && err->code != 0 ? err->code : ID_EKAFKA;
		goto out;
	}
	int32_t partitions = 0;
	if ((rc = id_kafka_partition_count(rk, topic, &partitions, err)) != 0)
		goto out;

	rd_kafka_error_t *e = rd_kafka_begin_transaction(rk);
	if (e != NULL) {
		rc = id_kafka_error(err, e, "starting a Kafka transaction");
		rd_kafka_error_destroy(e);
		goto out;
	}
	in_txn = true;
	for (size_t i = 0; i < d->nchanges; i++) {
		const employee_event_t *ev = &d->changes[i].event;
		if ((rc = codec_encode_event(codec, ev, &val, err)) != 0)
			goto out;
		rd_kafka_resp_err_t pe;
		for (;;) {
			dr.pending++;
			pe = rd_kafka_producev(
			    rk, RD_KAFKA_V_TOPIC(topic),
			    RD_KAFKA_V_KEY(ev->employee_id, strlen(ev->employee_id)),
			    RD_KAFKA_V_VALUE(val.data, val.len),
			    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			    RD_KAFKA_V_OPAQUE(&dr), RD_KAFKA_V_END);
			if (pe != RD_KAFKA_RESP_ERR_NO_ERROR)
				dr.pending--; /* not queued: no delivery report */
			if (pe != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			/* Let deliveries drain, then try again. */
			rd_kafka_poll(rk, 100);
		}
		if (pe != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_kafka_err(err, pe, "producing an event");
			goto out;
		}
		rd_kafka_poll(rk, 0);
	}
	/* Commit flushes and fails if any message was not delivered. */
	in_txn = false;
	if ((rc = txn_commit(rk, err)) != 0)
		goto out;
	*published = d->nchanges;
out:
	if (in_txn)
		txn_abort(rk);
	id_kafka_destroy(rk);
	codec_destroy(codec);
	id_buf_fini(&val);
	return rc;
}

/* ---- the stage ------------------------------------------------------------- */

/* Source names become a directory and part of the transactional id. */
static bool source_name_ok(const char *s)
{
	if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ingest_csv_run(const id_config_t *cfg, const ingest_csv_opts_t *opts,
                   ingest_csv_report_t *report, id_err_t *err)
{
	int rc = 0;
	csv_export_t *x = NULL;
	state_store_t *store = NULL;
	export_snapshot_t *snap = NULL;
	export_diff_t d = EXPORT_DIFF_INIT;
	ingest_csv_report_t local;
	ingest_csv_report_t *rep = report != NULL ? report : &local;
	char path[4096], actor[512], topic[512];
	const char *source = id_config_str(cfg, "ingest.source");
	double threshold = id_config_double(cfg, "ingest.termination_threshold");

	memset(rep, 0, sizeof(*rep));
	if (opts == NULL || opts->file == NULL)
		return id_err_set(err, ID_EINVALID, "ingest: no export file given");
	if (!source_name_ok(source))
		return id_err_set(
		    err, ID_ECONFIG,
		    "ingest.source \"%s\": use letters, digits, '.', '-' and '_'",
		    source);
	id_config_topic(cfg, "hr.events", topic, sizeof(topic));

	/* 1. The whole file is valid, or nothing happens. */
	if ((rc = csv_reader_read_file(opts->file, &x, err)) != 0)
		goto out;
	size_t nrows = 0;
	const csv_row_t *rows = csv_export_rows(x, &nrows);
	rep->rows = nrows;
	memcpy(rep->file_sha256, csv_export_sha256(x), sizeof(rep->file_sha256));
	rep->at_ms = csv_export_mtime_ms(x) > 0 ? csv_export_mtime_ms(x) : now_ms();

	/* 2. What the previous exports said. */
	snprintf(path, sizeof(path), "%s/ingest-%s", id_config_str(cfg, "state.dir"),
	         source);
	if ((snap = export_snapshot_create()) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	/* A dry run leaves no trace, not even an empty store. */
	struct stat st;
	bool fresh = stat(path, &st) != 0 && errno == ENOENT;
	if (!(opts->dry_run && fresh)) {
		if ((rc = state_store_open(path, NULL, &store, err)) != 0 ||
		    (rc = snapshot_load(store, snap, err)) != 0)
			goto out;
	}

	/* 3. The events this file implies. */
	const char *base = strrchr(opts->file, '/');
	base = base != NULL ? base + 1 : opts->file;
	snprintf(actor, sizeof(actor), "csv:%s", base);
	export_diff_params_t params = {source, rep->file_sha256, actor, rep->at_ms};
	if ((rc = export_diff_compute(snap, rows, nrows, &params, &d, err)) != 0)
		goto out;
	rep->hires = d.hires;
	rep->updates = d.updates;
	rep->terminations = d.terminations;
	rep->rehires = d.rehires;
	rep->unchanged = d.unchanged;
	rep->still_terminated = d.still_terminated;
	rep->known_active = d.known_active;

	/* 4. A file that silently drops a large part of the company is far more
	 * likely a broken export than a mass layoff. */
	if ((double)d.terminations > threshold * (double)d.known_active) {
		rep->threshold_exceeded = true;
		if (!opts->force && !opts->dry_run) {
			rc = id_err_set(
			    err, ID_ETHRESHOLD,
			    "%s would terminate %zu of %zu active employees (%.1f%%), "
			    "more "
			    "than ingest.termination_threshold (%.1f%%); nothing was "
			    "published. Check the export; if the terminations are real, "
			    "run again with --force",
			    opts->file, d.terminations, d.known_active,
			    100.0 * (double)d.terminations / (double)d.known_active,
			    100.0 * threshold);
			goto out;
		}
		if (opts->force && !opts->dry_run)
			id_log_warn(
			    "ingest",
			    "%s terminates %zu of %zu active employees, above "
			    "ingest.termination_threshold; publishing because of --force",
			    opts->file, d.terminations, d.known_active);
	}

	if (opts->on_event != NULL)
		for (size_t i = 0; i < d.nchanges; i++)
			opts->on_event(&d.changes[i].event, opts->opaque);
	if (opts->dry_run || d.nchanges == 0)
		goto out;

	/* 5. All events or none. */
	if ((rc = publish(cfg, &d, topic, &rep->published, err)) != 0) {
		id_err_wrap(err,
		            "%s: nothing was published and the snapshot is unchanged",
		            opts->file);
		goto out;
	}

	/* 6. Only now remember what was published. */
	if ((rc = snapshot_save(store, &d, err)) != 0) {
		id_err_wrap(
		    err,
		    "%s: %zu events were published but the snapshot was not saved; "
		    "the next run publishes them again with the same event ids",
		    opts->file, rep->published);
		goto out;
	}
	id_log_info("ingest",
	            "%s: published %zu events to %s (%zu hires, %zu updates, %zu "
	            "terminations, %zu rehires, %zu unchanged)",
	            opts->file, rep->published, topic, d.hires, d.updates, d.terminations,
	            d.rehires, d.unchanged);
out:
	export_diff_fini(&d);
	export_snapshot_destroy(snap);
	state_store_close(store);
	csv_export_destroy(x);
	return rc;
}
