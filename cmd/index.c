/*
 * index.c — `idstream index [--until-idle]`: indexes, per employee, where
 * each of its records sits in Kafka, so `history`, `why` and `as-of` read
 * exactly those records instead of scanning a partition of every topic.
 *
 * The stage consumes hr.events, identity.desired and sink.results in its own
 * consumer group "<prefix>.index" (read_committed, so aborted records are
 * never indexed) and writes one RocksDB store at <state.dir>/index:
 *
 *   key                                                 value
 *   --------------------------------------------------  -----------------------
 *   'e' employee_id 0x00 kind:u8 partition:be32         Kafka timestamp, ms
 *       offset:be64                                     (be64); hr.events:
 *                                                       then the event id
 *   'v' employee_id 0x00 effective_at:be64              version (be64), then
 *       partition:be32 offset:be64                      its groups, each
 *                                                       ending in a NUL
 *   0x00 "pos" kind:u8 partition:be32                   next offset not yet
 *                                                       indexed (be64)
 *   0x00 "fmt"                                          INDEX_FORMAT (be32)
 *
 *   kind: 0 hr.events, 1 identity.desired, 2 sink.results (timeline's order).
 *
 * The 'v' entries are the desired versions again, ordered by their
 * effective time (the fold's `now`) within an employee: `as-of TIME` for
 * everyone walks them once and picks, per employee, the newest version not
 * effective after TIME, then reads exactly those records.  The effective
 * time is read from the record's Avro body by skipping the fields before
 * it (a few varints, no allocation); a record of a writer schema whose
 * fields before effective_at differ is decoded in full instead.
 *
 * Invariants:
 * - Every record of (kind, partition) below its "pos" value is in the index,
 *   so a reader can trust the index up to there and scan only the rest.
 *   "pos" only grows and is written in the same atomic batch as the entries.
 * - Entries are keyed by their position, so a re-delivered record rewrites
 *   the same key: indexing is idempotent.
 * - Batches are written without the write-ahead log and the memtables are
 *   flushed to table files every INDEX_FLUSH_MS (and on close).  Readers
 *   (`history`, `why`, `as-of`) open the store as a secondary instance while
 *   this stage writes it; with a log they would replay it on every open,
 *   megabytes of it under load.  A crash loses the batches since the last
 *   flush, whole and in order, so the stored "pos" values still describe
 *   the stored entries, and the lost records are indexed again.
 * - On assignment a partition starts at the store's "pos", not at the
 *   group's committed offset, so a lost store (or a lost tail of it) is
 *   rebuilt from the log.  The committed offsets (after each batch) only
 *   show the group's progress to Kafka tools.
 * - Employee keys start with 'e' or 'v' and meta keys with 0x00, so they
 *   never mix.
 * - A store of an older format has the positions of the topics whose
 *   entries changed since reset on open (below 4: identity.desired, for the
 *   'v' entries and their groups; below 3: hr.events, for the event ids), so those are
 *   indexed again, their entries rewritten in place.  "fmt" is written in
 *   the same batch as the reset positions.
 * - The event ids let `why` read only the events that caused what it shows
 *   (cmd/timeline.h: timeline_load_events()).
 *
 * Threading: index_loop() runs on one thread (its consumer's poll loop).
 */
#include "cmd/index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cmd/cli.h"
#include "common/kafka.h"
#include "common/log.h"
#include "schemas/codec.h"

#define INDEX_MAX_PARTITIONS 4096
#define INDEX_BATCH_MAX      5000
/* Longest time an indexed record stays only in memory, invisible to
 * readers (which scan the partitions past the flushed positions). */
#define INDEX_FLUSH_MS 1000

static const char *const index_suffixes[INDEX_KINDS] = {"hr.events", "identity.desired",
                                                        "sink.results"};

void index_path(const id_config_t *cfg, char *buf, size_t n)
{
	snprintf(buf, n, "%s/index", id_config_str(cfg, "state.dir"));
}

static size_t index_fmt_key(unsigned char out[4])
{
	out[0] = 0;
	memcpy(out + 1, "fmt", 3);
	return 4;
}

static size_t index_pos_key(unsigned char out[9], int kind, int32_t partition)
{
	out[0] = 0;
	memcpy(out + 1, "pos", 3);
	out[4] = (unsigned char)kind;
	state_be32_put(out + 5, (uint32_t)partition);
	return 9;
}

int64_t index_indexed_until(state_store_t *s, int kind, int32_t partition)
{
	unsigned char k[9];
	void *v = NULL;
	size_t vlen = 0;
	int64_t r = 0;
	if (state_store_get(s, k, index_pos_key(k, kind, partition), &v, &vlen, NULL) ==
	        0 &&
	    vlen == 8)
		r = (int64_t)state_be64_get(v);
	free(v);
	return r;
}

int index_lookup(state_store_t *s, const char *employee, index_pos_t **out, size_t *n,
                 id_err_t *err)
{
	size_t elen = strlen(employee), cap = 0;
	unsigned char *prefix = malloc(elen + 2);
	state_iter_t *it = NULL;
	int rc = 0;
	*out = NULL;
	*n = 0;
	if (prefix == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	prefix[0] = 'e';
	memcpy(prefix + 1, employee, elen);
	prefix[elen + 1] = 0;
	if ((rc = state_iter_create(s, prefix, elen + 2, &it, err)) != 0)
		goto out;
	const void *k, *v;
	size_t klen, vlen;
	int more;
	while ((more = state_iter_next(it, &k, &klen, &v, &vlen, err)) == 1) {
		if (klen != elen + 2 + 13 || vlen < 8)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			index_pos_t *nv = realloc(*out, cap * sizeof(**out));
			if (nv == NULL) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				goto out;
			}
			*out = nv;
		}
		const unsigned char *p = (const unsigned char *)k + elen + 2;
		index_pos_t *e = &(*out)[(*n)++];
		e->kind = p[0];
		e->partition = (int32_t)state_be32_get(p + 1);
		e->offset = (int64_t)state_be64_get(p + 5);
		e->ts = (int64_t)state_be64_get(v);
		e->event_id = NULL;
		if (vlen > 8 &&
		    (e->event_id = strndup((const char *)v + 8, vlen - 8)) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
	}
	if (more < 0)
		rc = more;
out:
	if (rc != 0) {
		index_pos_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	state_iter_destroy(it);
	free(prefix);
	return rc;
}

void index_pos_free(index_pos_t *pos, size_t n)
{
	for (size_t i = 0; pos != NULL && i < n; i++)
		free(pos[i].event_id);
	free(pos);
}

/* The store's format ("fmt"), 0 when it has none. */
static uint32_t index_format(state_store_t *s)
{
	unsigned char k[4];
	void *v = NULL;
	size_t vlen = 0;
	uint32_t r = 0;
	if (state_store_get(s, k, index_fmt_key(k), &v, &vlen, NULL) == 0 && vlen == 4)
		r = state_be32_get(v);
	free(v);
	return r;
}

bool index_has_event_ids(state_store_t *s)
{
	return index_format(s) >= 3;
}

bool index_has_versions(state_store_t *s)
{
	return index_format(s) >= 2;
}

void index_versions_free(index_version_t *v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++) {
		free(v[i].employee);
		free(v[i].groups);
	}
	free(v);
}

bool index_has_version_groups(state_store_t *s)
{
	return index_format(s) >= 4;
}

int index_versions_of(state_store_t *s, const char *employee, index_version_t **out,
                      size_t *n, id_err_t *err)
{
	size_t elen = strlen(employee), cap = 0;
	unsigned char *prefix = malloc(elen + 2);
	state_iter_t *it = NULL;
	int rc = 0, more;
	*out = NULL;
	*n = 0;
	if (prefix == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	prefix[0] = 'v';
	memcpy(prefix + 1, employee, elen);
	prefix[elen + 1] = 0;
	if ((rc = state_iter_create(s, prefix, elen + 2, &it, err)) != 0)
		goto out;
	const void *kv, *vv;
	size_t klen, vlen;
	while ((more = state_iter_next(it, &kv, &klen, &vv, &vlen, err)) == 1) {
		if (klen != elen + 2 + 20 || vlen < 8)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 32;
			index_version_t *nv = realloc(*out, cap * sizeof(**out));
			if (nv == NULL) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				goto out;
			}
			*out = nv;
		}
		const unsigned char *t = (const unsigned char *)kv + elen + 2;
		index_version_t *e = &(*out)[(*n)++];
		memset(e, 0, sizeof(*e));
		e->effective_at = (int64_t)state_be64_get(t);
		e->partition = (int32_t)state_be32_get(t + 8);
		e->offset = (int64_t)state_be64_get(t + 12);
		e->version = (int64_t)state_be64_get(vv);
		e->groups_len = vlen - 8;
		if ((e->groups = malloc(e->groups_len + 1)) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		memcpy(e->groups, (const char *)vv + 8, e->groups_len);
		e->groups[e->groups_len] = 0;
	}
	if (more < 0)
		rc = more;
out:
	if (rc != 0) {
		index_versions_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	state_iter_destroy(it);
	free(prefix);
	return rc;
}

int index_versions_at(state_store_t *s, int64_t at, index_version_t **out, size_t *n,
                      id_err_t *err)
{
	const unsigned char prefix[1] = {'v'};
	state_iter_t *it = NULL;
	size_t cap = 0;
	int rc = 0, more;
	/* The employee of the keys being walked and its best entry so far. */
	index_version_t best = {.employee = NULL, .groups = NULL};
	size_t best_len = 0;
	bool have = false;
	*out = NULL;
	*n = 0;
	if ((rc = state_iter_create(s, prefix, sizeof(prefix), &it, err)) != 0)
		goto out;
	const void *kv, *vv;
	size_t klen, vlen;
	for (;;) {
		more = state_iter_next(it, &kv, &klen, &vv, &vlen, err);
		if (more < 0) {
			rc = more;
			goto out;
		}
		const unsigned char *k = kv;
		size_t elen = 0;
		if (more == 1) {
			/* 'v' employee 0x00 then 20 bytes. */
			if (klen < 1 + 1 + 20 || vlen < 8)
				continue;
			elen = klen - 1 - 1 - 20;
			if (k[1 + elen] != 0)
				continue;
		}
		bool same = more == 1 && best.employee != NULL && elen == best_len &&
		            memcmp(k + 1, best.employee, elen) == 0;
		if (!same && have) {
			/* The previous employee is complete. */
			if (*n == cap) {
				cap = cap ? cap * 2 : 1024;
				index_version_t *nv = realloc(*out, cap * sizeof(**out));
				if (nv == NULL) {
					rc = id_err_set(err, ID_ENOMEM, "out of memory");
					goto out;
				}
				*out = nv;
			}
			(*out)[(*n)++] = best;
			best.employee = NULL;
			have = false;
		}
		if (more == 0)
			break;
		if (!same) {
			free(best.employee);
			if ((best.employee = malloc(elen + 1)) == NULL) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				goto out;
			}
			memcpy(best.employee, k + 1, elen);
			best.employee[elen] = 0;
			best_len = elen;
		}
		const unsigned char *t = k + 1 + elen + 1;
		int64_t eff = (int64_t)state_be64_get(t);
		int64_t version = (int64_t)state_be64_get(vv);
		int64_t offset = (int64_t)state_be64_get(t + 12);
		/* Keys ascend by effective time: past `at` nothing more counts,
		 * but the walk goes on to the next employee. */
		if (eff > at)
			continue;
		if (!have || version > best.version ||
		    (version == best.version && offset > best.offset)) {
			best.partition = (int32_t)state_be32_get(t + 8);
			best.offset = offset;
			best.version = version;
			best.effective_at = eff;
			have = true;
		}
	}
out:
	free(best.employee); /* not yet in *out */
	if (rc != 0) {
		index_versions_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	state_iter_destroy(it);
	return rc;
}

/* ------------------------------------------------ desired versions' times */

typedef struct index_rd {
	const unsigned char *p, *end;
} index_rd_t;

/* An Avro long (zig-zag varint). */
static bool index_rd_long(index_rd_t *r, int64_t *v)
{
	uint64_t u = 0;
	for (int shift = 0; r->p < r->end && shift < 64; shift += 7) {
		unsigned char b = *r->p++;
		u |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0) {
			*v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
			return true;
		}
	}
	return false;
}

/* Skips an Avro string (or bytes). */
static bool index_rd_skip_string(index_rd_t *r)
{
	int64_t n;
	if (!index_rd_long(r, &n) || n < 0 || n > r->end - r->p)
		return false;
	r->p += n;
	return true;
}

/* Skips an Avro map of strings (per_item 2) or array of strings (1). */
static bool index_rd_skip_blocks(index_rd_t *r, int per_item)
{
	for (;;) {
		int64_t n, bytes;
		if (!index_rd_long(r, &n))
			return false;
		if (n == 0)
			return true;
		if (n < 0) {
			if (!index_rd_long(r, &bytes))
				return false;
			n = -n;
		}
		for (int64_t i = 0; i < n * per_item; i++)
			if (!index_rd_skip_string(r))
				return false;
	}
}

/*
 * Version and effective time of a desired identity written with the
 * schema whose fingerprint is fast_fp, without decoding it: the fields
 * before effective_at are employee_id, version, state, attributes, groups,
 * container, manager_id, policy_version, cause_event_id (checked by
 * index_fast_fingerprint()); the groups are appended to *groups, each
 * followed by a NUL.  False when the payload is of another writer or
 * malformed.
 */
/* Reads an Avro array of strings into out, each followed by a NUL. */
static bool index_rd_strings(index_rd_t *r, id_buf_t *out)
{
	for (;;) {
		int64_t n, bytes, slen;
		if (!index_rd_long(r, &n))
			return false;
		if (n == 0)
			return true;
		if (n < 0) {
			if (!index_rd_long(r, &bytes))
				return false;
			n = -n;
		}
		for (int64_t i = 0; i < n; i++) {
			if (!index_rd_long(r, &slen) || slen < 0 ||
			    slen > r->end - r->p ||
			    id_buf_append(out, r->p, (size_t)slen) != 0 ||
			    id_buf_append_u8(out, 0) != 0)
				return false;
			r->p += slen;
		}
	}
}

static bool index_peek_desired(uint64_t fast_fp, const void *data, size_t len,
                               int64_t *version, int64_t *eff, id_buf_t *groups)
{
	const unsigned char *p = data;
	uint64_t fp = 0;
	int64_t x;
	if (fast_fp == 0 || len < 10 || p[0] != 0xC3 || p[1] != 0x01)
		return false;
	for (int i = 7; i >= 0; i--)
		fp = (fp << 8) | p[2 + i];
	if (fp != fast_fp)
		return false;
	index_rd_t r = {p + 10, p + len};
	if (!index_rd_skip_string(&r) || !index_rd_long(&r, version) ||
	    !index_rd_long(&r, &x) || !index_rd_skip_blocks(&r, 2) ||
	    !index_rd_strings(&r, groups) || !index_rd_skip_string(&r) ||
	    !index_rd_long(&r, &x) || (x != 0 && x != 1) ||
	    (x == 1 && !index_rd_skip_string(&r)) || !index_rd_skip_string(&r) ||
	    !index_rd_skip_string(&r) || !index_rd_long(&r, eff))
		return false;
	return true;
}

/* Is field i of fields named name with type t (a JSON value)? */
static bool index_field_is(json_t *fields, size_t i, const char *name, const char *type)
{
	json_t *f = json_array_get(fields, i),
	       *want = json_loads(type, JSON_DECODE_ANY, NULL);
	json_t *got = json_object_get(f, "type");
	const char *n = json_string_value(json_object_get(f, "name"));
	bool ok = n != NULL && strcmp(n, name) == 0 && want != NULL && got != NULL;
	if (ok && json_is_object(want) && json_is_string(json_object_get(want, "type")) &&
	    json_object_size(want) == 1)
		/* Only the kind matters ("enum": its symbols do not change the
		 * encoding of the index). */
		ok = json_is_object(got) && json_equal(json_object_get(got, "type"),
		                                       json_object_get(want, "type"));
	else if (ok)
		ok = json_equal(got, want);
	json_decref(want);
	return ok;
}

/* The fingerprint of the current EmployeeEvent writer schema when its
 * first field is the event id (a string); 0 (decode in full) otherwise. */
static uint64_t index_fast_event_fingerprint(codec_t *c)
{
	const char *canon = codec_schema_canonical(c, "EmployeeEvent");
	json_t *root = canon ? json_loads(canon, 0, NULL) : NULL;
	bool ok =
	    index_field_is(json_object_get(root, "fields"), 0, "event_id", "\"string\"");
	json_decref(root);
	return ok ? codec_schema_fingerprint(c, "EmployeeEvent") : 0;
}

/* The event id of an HR event written with the schema fast_fp, without
 * decoding it: a pointer into data and its length.  False when the
 * payload is of another writer or malformed. */
static bool index_peek_event_id(uint64_t fast_fp, const void *data, size_t len,
                                const char **id, size_t *idlen)
{
	const unsigned char *p = data;
	uint64_t fp = 0;
	int64_t n;
	if (fast_fp == 0 || len < 10 || p[0] != 0xC3 || p[1] != 0x01)
		return false;
	for (int i = 7; i >= 0; i--)
		fp = (fp << 8) | p[2 + i];
	if (fp != fast_fp)
		return false;
	index_rd_t r = {p + 10, p + len};
	if (!index_rd_long(&r, &n) || n <= 0 || n > r.end - r.p)
		return false;
	*id = (const char *)r.p;
	*idlen = (size_t)n;
	return true;
}

/*
 * The fingerprint of the current DesiredIdentity writer schema when its
 * fields before effective_at are the ones index_peek_desired() skips; 0
 * (always decode in full) otherwise.
 */
static uint64_t index_fast_fingerprint(codec_t *c)
{
	const char *canon = codec_schema_canonical(c, "DesiredIdentity");
	json_t *root = canon ? json_loads(canon, 0, NULL) : NULL;
	json_t *f = json_object_get(root, "fields");
	bool ok =
	    json_array_size(f) > 9 && index_field_is(f, 0, "employee_id", "\"string\"") &&
	    index_field_is(f, 1, "version", "\"long\"") &&
	    index_field_is(f, 2, "state", "{\"type\":\"enum\"}") &&
	    index_field_is(f, 3, "attributes",
	                   "{\"type\":\"map\",\"values\":\"string\"}") &&
	    index_field_is(f, 4, "groups", "{\"type\":\"array\",\"items\":\"string\"}") &&
	    index_field_is(f, 5, "container", "\"string\"") &&
	    index_field_is(f, 6, "manager_id", "[\"null\",\"string\"]") &&
	    index_field_is(f, 7, "policy_version", "\"string\"") &&
	    index_field_is(f, 8, "cause_event_id", "\"string\"") &&
	    (index_field_is(f, 9, "effective_at", "\"long\"") ||
	     index_field_is(f, 9, "effective_at", "{\"type\":\"long\"}"));
	json_decref(root);
	return ok ? codec_schema_fingerprint(c, "DesiredIdentity") : 0;
}

typedef struct index_run {
	const id_config_t *cfg;
	state_store_t *db;
	state_batch_t *batch;
	rd_kafka_t *consumer;
	char topics[INDEX_KINDS][256];
	int64_t pos[INDEX_KINDS][INDEX_MAX_PARTITIONS];  /* indexed up to */
	int64_t ends[INDEX_KINDS][INDEX_MAX_PARTITIONS]; /* until-idle targets */
	bool dirty[INDEX_KINDS][INDEX_MAX_PARTITIONS];   /* pos changed in batch */
	codec_t *codec;         /* desired versions of other writers */
	uint64_t fast_fp;       /* see index_fast_fingerprint() */
	uint64_t fast_event_fp; /* see index_fast_event_fingerprint() */
	desired_identity_t d;
	employee_event_t ev;
	long slow_decodes;  /* records decoded in full */
	bool unflushed;     /* batches written since the last flush */
	int64_t flushed_at; /* monotonic ms of the last flush */
	id_buf_t key, val;
} index_run_t;

static int index_kind_of(const index_run_t *r, const char *topic)
{
	for (int k = 0; k < INDEX_KINDS; k++)
		if (strcmp(r->topics[k], topic) == 0)
			return k;
	return -1;
}

static void index_advance(index_run_t *r, int kind, int32_t p, int64_t next)
{
	if (next > r->pos[kind][p]) {
		r->pos[kind][p] = next;
		r->dirty[kind][p] = true;
	}
}

static void index_add(index_run_t *r, int kind, const rd_kafka_message_t *m)
{
	unsigned char tail[13], ts[8];
	tail[0] = (unsigned char)kind;
	state_be32_put(tail + 1, (uint32_t)m->partition);
	state_be64_put(tail + 5, (uint64_t)m->offset);
	state_be64_put(ts, (uint64_t)rd_kafka_message_timestamp(m, NULL));
	r->key.len = 0;
	id_buf_append_u8(&r->key, 'e');
	id_buf_append(&r->key, m->key, m->key_len);
	id_buf_append_u8(&r->key, 0);
	id_buf_append(&r->key, tail, sizeof(tail));
	if (kind == 0) {
		/* The event id after the time, for `why`. */
		const char *id = NULL;
		size_t idlen = 0;
		if (!index_peek_event_id(r->fast_event_fp, m->payload, m->len, &id,
		                         &idlen)) {
			if (codec_decode_event(r->codec, m->payload, m->len, &r->ev,
			                       NULL) == 0 &&
			    r->ev.event_id != NULL) {
				id = r->ev.event_id;
				idlen = strlen(id);
			}
			r->slow_decodes++;
		}
		r->val.len = 0;
		id_buf_append(&r->val, ts, sizeof(ts));
		if (id != NULL)
			id_buf_append(&r->val, id, idlen);
		state_batch_put(r->batch, r->key.data, r->key.len, r->val.data,
		                r->val.len);
		return;
	}
	state_batch_put(r->batch, r->key.data, r->key.len, ts, sizeof(ts));
	if (kind != 1)
		return;
	/* The desired version by effective time, for as-of. */
	int64_t version = 0, eff = 0;
	r->val.len = 0;
	id_buf_append(&r->val, "\0\0\0\0\0\0\0\0", 8); /* the version, below */
	if (!index_peek_desired(r->fast_fp, m->payload, m->len, &version, &eff,
	                        &r->val)) {
		if (codec_decode_desired(r->codec, m->payload, m->len, &r->d, NULL) != 0)
			return; /* unreadable: as-of skips it, like history */
		version = r->d.version;
		eff = r->d.effective_at;
		r->val.len = 8;
		for (size_t g = 0; g < r->d.ngroups; g++)
			id_buf_append(&r->val, r->d.groups[g],
			              strlen(r->d.groups[g]) + 1);
		r->slow_decodes++;
	}
	unsigned char vtail[20];
	state_be64_put(vtail, (uint64_t)eff);
	state_be32_put(vtail + 8, (uint32_t)m->partition);
	state_be64_put(vtail + 12, (uint64_t)m->offset);
	state_be64_put((unsigned char *)r->val.data, (uint64_t)version);
	r->key.len = 0;
	id_buf_append_u8(&r->key, 'v');
	id_buf_append(&r->key, m->key, m->key_len);
	id_buf_append_u8(&r->key, 0);
	id_buf_append(&r->key, vtail, sizeof(vtail));
	state_batch_put(r->batch, r->key.data, r->key.len, r->val.data, r->val.len);
}

/* Writes the batch (entries and the advanced positions together), then
 * commits the consumer's offsets: re-delivery after a crash is harmless. */
static int index_write_batch(index_run_t *r, index_stats_t *stats, id_err_t *err)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
	int rc = 0;
	for (int k = 0; k < INDEX_KINDS; k++) {
		for (int32_t p = 0; p < INDEX_MAX_PARTITIONS; p++) {
			if (!r->dirty[k][p])
				continue;
			unsigned char key[9], val[8];
			state_be64_put(val, (uint64_t)r->pos[k][p]);
			state_batch_put(r->batch, key, index_pos_key(key, k, p), val,
			                sizeof(val));
			rd_kafka_topic_partition_list_add(l, r->topics[k], p)->offset =
			    r->pos[k][p];
		}
	}
	if (state_batch_count(r->batch) == 0)
		goto out;
	if ((rc = state_batch_write_unlogged(r->db, r->batch, err)) != 0)
		goto out;
	state_batch_clear(r->batch);
	r->unflushed = true;
	memset(r->dirty, 0, sizeof(r->dirty));
	stats->batches++;
	rd_kafka_resp_err_t e = rd_kafka_commit(r->consumer, l, 0);
	/* A partition revoked meanwhile is re-indexed by its next owner. */
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
		id_log_warn("index", "committing offsets: %s", rd_kafka_err2str(e));
out:
	rd_kafka_topic_partition_list_destroy(l);
	return rc;
}

/* The end offsets until-idle must reach: the end of every partition of the
 * three topics now (the last stable offset: with the upstream stages done,
 * no transaction is open and it is the log end).  *unstable is set when one
 * is below the high watermark last fetched — a transaction there is open or
 * its markers are not written yet (common/kafka.h) — or when a partition has
 * not been fetched yet (its high watermark is not known).  One ListOffsets request
 * for all partitions: one query per partition would each wait behind the
 * consumer's long-polling fetch on the same connection. */
static int index_snapshot_ends(index_run_t *r, bool *unstable, id_err_t *err)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(64);
	int rc = 0;
	for (int k = 0; k < INDEX_KINDS && rc == 0; k++) {
		int32_t n = 0;
		rc = id_kafka_partition_count(r->consumer, r->topics[k], &n, err);
		for (int32_t p = 0; rc == 0 && p < n && p < INDEX_MAX_PARTITIONS; p++)
			rd_kafka_topic_partition_list_add(l, r->topics[k], p)->offset =
			    RD_KAFKA_OFFSET_END;
	}
	if (rc == 0) {
		rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(r->consumer, l, 10000);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			rc = id_kafka_err(err, e, "reading topic end offsets");
	}
	for (int i = 0; rc == 0 && i < l->cnt; i++) {
		int k = index_kind_of(r, l->elems[i].topic);
		int32_t p = l->elems[i].partition;
		if (k < 0 || p < 0 || p >= INDEX_MAX_PARTITIONS)
			continue;
		r->ends[k][p] = l->elems[i].offset > 0 ? l->elems[i].offset : 0;
		if (id_kafka_end_unstable(r->consumer, r->topics[k], p, r->ends[k][p]))
			*unstable = true;
	}
	rd_kafka_topic_partition_list_destroy(l);
	return rc;
}

/* Partitions start where the store says they are indexed, not at the
 * group's committed offsets: a lost or older store is rebuilt from there. */
static void index_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                            rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	index_run_t *r = opaque;
	if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		for (int i = 0; i < parts->cnt; i++) {
			int k = index_kind_of(r, parts->elems[i].topic);
			int32_t p = parts->elems[i].partition;
			if (k >= 0 && p >= 0 && p < INDEX_MAX_PARTITIONS)
				parts->elems[i].offset = r->pos[k][p];
		}
		rd_kafka_assign(rk, parts);
	} else {
		rd_kafka_assign(rk, NULL);
	}
}

static int64_t index_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Makes the written batches visible to readers once INDEX_FLUSH_MS have
 * passed since the last flush.  The flush runs in RocksDB's background. */
static int index_maybe_flush(index_run_t *r, id_err_t *err)
{
	int64_t now = index_now_ms();
	if (!r->unflushed || now - r->flushed_at < INDEX_FLUSH_MS)
		return 0;
	r->unflushed = false;
	r->flushed_at = now;
	return state_store_flush(r->db, false, err);
}

static bool index_caught_up(const index_run_t *r)
{
	for (int k = 0; k < INDEX_KINDS; k++)
		for (int32_t p = 0; p < INDEX_MAX_PARTITIONS; p++)
			if (r->pos[k][p] < r->ends[k][p])
				return false;
	return true;
}

int index_loop(const id_config_t *cfg, bool until_idle,
               volatile sig_atomic_t *upstream_done, index_stats_t *stats, id_err_t *err)
{
	index_run_t *r = calloc(1, sizeof(*r));
	char path[1024], group[300];
	bool have_ends = false;
	int64_t ends_first_ms = 0; /* when the ends were first unstable */
	long inbatch = 0;
	int rc = 0;
	if (r == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	r->cfg = cfg;
	r->flushed_at = index_now_ms();
	id_buf_init(&r->key);
	id_buf_init(&r->val);
	for (int k = 0; k < INDEX_KINDS; k++)
		id_config_topic(cfg, index_suffixes[k], r->topics[k],
		                sizeof(r->topics[k]));
	index_path(cfg, path, sizeof(path));
	snprintf(group, sizeof(group), "%s.index", id_config_str(cfg, "topic.prefix"));
	if ((rc = state_store_open(path, NULL, &r->db, err)) != 0)
		goto out;
	if ((r->batch = state_batch_create()) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (int k = 0; k < INDEX_KINDS; k++)
		for (int32_t p = 0; p < INDEX_MAX_PARTITIONS; p++)
			r->pos[k][p] = 0;
	{
		/* Positions already indexed (meta keys). */
		unsigned char pre[4] = {0, 'p', 'o', 's'};
		state_iter_t *it = NULL;
		if ((rc = state_iter_create(r->db, pre, sizeof(pre), &it, err)) != 0)
			goto out;
		const void *k, *v;
		size_t klen, vlen;
		int more;
		while ((more = state_iter_next(it, &k, &klen, &v, &vlen, err)) == 1) {
			const unsigned char *kb = k;
			if (klen != 9 || vlen != 8 || kb[4] >= INDEX_KINDS)
				continue;
			uint32_t p = state_be32_get(kb + 5);
			if (p < INDEX_MAX_PARTITIONS)
				r->pos[kb[4]][p] = (int64_t)state_be64_get(v);
		}
		state_iter_destroy(it);
		if (more < 0) {
			rc = more;
			goto out;
		}
	}
	desired_identity_init(&r->d);
	employee_event_init(&r->ev);
	if ((r->codec = codec_create(err)) == NULL) {
		rc = err && err->code ? err->code : ID_ENOMEM;
		goto out;
	}
	r->fast_fp = index_fast_fingerprint(r->codec);
	r->fast_event_fp = index_fast_event_fingerprint(r->codec);
	if (r->fast_fp == 0)
		id_log_warn("index", "the desired identity schema has new fields before "
		                     "effective_at: every version is decoded in full");
	uint32_t fmt = index_format(r->db);
	if (fmt < INDEX_FORMAT) {
		/* A store of an older format: the topics whose entries changed
		 * since are indexed again.  The format is recorded with the
		 * reset positions. */
		unsigned char fk[4], fv[4];
		bool reset = false;
		for (int k = 0; k < 2; k++) {
			if ((k == 0 && fmt >= 3) || (k == 1 && fmt >= 4))
				continue;
			for (int32_t p = 0; p < INDEX_MAX_PARTITIONS; p++) {
				if (r->pos[k][p] > 0) {
					r->pos[k][p] = 0;
					r->dirty[k][p] = true;
					reset = true;
				}
			}
		}
		if (reset)
			id_log_info("index", "re-indexing to format %d (it was %u)",
			            INDEX_FORMAT, (unsigned)fmt);
		state_be32_put(fv, INDEX_FORMAT);
		state_batch_put(r->batch, fk, index_fmt_key(fk), fv, sizeof(fv));
	}
	r->consumer = id_kafka_consumer_create(cfg, "idstream-index", group,
	                                       index_rebalance, r, err);
	if (r->consumer == NULL) {
		rc = err && err->code ? err->code : ID_EKAFKA;
		goto out;
	}
	rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(3);
	for (int k = 0; k < INDEX_KINDS; k++)
		rd_kafka_topic_partition_list_add(sub, r->topics[k],
		                                  RD_KAFKA_PARTITION_UA);
	rd_kafka_resp_err_t se = rd_kafka_subscribe(r->consumer, sub);
	rd_kafka_topic_partition_list_destroy(sub);
	if (se != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, se, "subscribing to the topics to index");
		goto out;
	}
	id_log_info("index", "indexing %s, %s, %s as %s into %s", r->topics[0],
	            r->topics[1], r->topics[2], group, path);

	while (!cli_stop_requested) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 50);
		bool got = m != NULL, eof = false;
		if (m != NULL) {
			int kind = index_kind_of(r, rd_kafka_topic_name(m->rkt));
			int32_t p = m->partition;
			bool ok = kind >= 0 && p >= 0 && p < INDEX_MAX_PARTITIONS;
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				/* Past the end: transaction markers included. */
				eof = true;
				if (ok)
					index_advance(r, kind, p, m->offset);
			} else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
				id_log_warn("index", "consumer: %s",
				            rd_kafka_message_errstr(m));
			} else if (ok) {
				if (m->key != NULL && m->key_len > 0) {
					index_add(r, kind, m);
					stats->records++;
				}
				index_advance(r, kind, p, m->offset + 1);
				inbatch++;
			}
			rd_kafka_message_destroy(m);
		}
		if (inbatch >= INDEX_BATCH_MAX || !got || eof) {
			if ((rc = index_write_batch(r, stats, err)) != 0)
				goto out;
			inbatch = 0;
		}
		if ((rc = index_maybe_flush(r, err)) != 0)
			goto out;
		if (!until_idle || (upstream_done != NULL && !*upstream_done))
			continue;
		if (!have_ends) {
			/* Taken when input is idle, and again while an end is
			 * below its high watermark (or that is not known yet),
			 * for up to ID_KAFKA_END_SETTLE_MS: a transaction
			 * committed just before is indexed; one still open after
			 * that is not part of what was there at start. */
			bool unstable = false;
			if (got && !eof)
				continue;
			if ((rc = index_snapshot_ends(r, &unstable, err)) != 0)
				goto out;
			if (unstable) {
				if (ends_first_ms == 0) {
					ends_first_ms = index_now_ms();
					id_log_debug(
					    "index",
					    "an end is below its high watermark (a "
					    "transaction open or being committed) or "
					    "not fetched yet: looking again for up "
					    "to %d ms",
					    ID_KAFKA_END_SETTLE_MS);
				}
				if (index_now_ms() - ends_first_ms <
				    ID_KAFKA_END_SETTLE_MS)
					continue;
			}
			have_ends = true;
		}
		if (index_caught_up(r))
			break;
	}
	rc = index_write_batch(r, stats, err);
	/* Closing flushes too, but an error would go unnoticed there. */
	if (rc == 0 && r->unflushed)
		rc = state_store_flush(r->db, true, err);
out:
	if (r->slow_decodes > 0)
		id_log_info("index",
		            "%ld desired versions decoded in full (older writer schemas)",
		            r->slow_decodes);
	id_kafka_destroy(r->consumer);
	codec_destroy(r->codec);
	desired_identity_fini(&r->d);
	employee_event_fini(&r->ev);
	state_batch_destroy(r->batch);
	state_store_close(r->db);
	id_buf_fini(&r->key);
	id_buf_fini(&r->val);
	free(r);
	return rc;
}

static void index_usage(void)
{
	printf("usage: idstream index [--until-idle]\n"
	       "\n"
	       "Indexes where each employee's HR events, desired identity versions and "
	       "sink\n"
	       "results sit in Kafka (store <state.dir>/index, consumer group "
	       "<prefix>.index),\n"
	       "so history, why and as-of read only that employee's records (also "
	       "while this\n"
	       "runs: they open the store as a secondary instance). `idstream run` "
	       "runs it too.\n"
	       "\n"
	       "  --until-idle   stop once every record present at start is indexed\n");
}

int cmd_index(cli_t *cli, int argc, char **argv)
{
	bool until_idle = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			index_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--until-idle") == 0) {
			until_idle = true;
		} else {
			return cli_usage_error("index", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	index_stats_t st = {0};
	id_err_t err = {0};
	int rc = index_loop(cli->cfg, until_idle, NULL, &st, &err);
	printf("index: %ld records indexed in %ld batches\n", st.records, st.batches);
	return rc == 0 ? CLI_EXIT_OK : cli_fail("index", &err);
}
