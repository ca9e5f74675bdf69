/*
 * timeline.c — reads one employee's records from the three topics (see
 * timeline.h).  When <state.dir>/index exists (cmd/index.c) and this process
 * can open it, only the offsets it lists for the employee are fetched (runs
 * of near offsets in one pass), and only the part of each partition past
 * what the index covers is scanned; otherwise the whole partition is.  The
 * debug log says which was used and how many records were read.  A record that cannot be
 * decoded is kept as "unreadable" with the codec's reason, never dropped silently.
 */
#define _XOPEN_SOURCE 700 /* strptime */
#include "cmd/timeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "cmd/index.h"
#include "common/log.h"
#include "common/kafka.h"
#include "schemas/codec.h"

static const char *const suffixes[] = {"hr.events", "identity.desired", "sink.results"};

const char *timeline_topic_suffix(tl_kind_t kind)
{
	return suffixes[kind];
}

void timeline_fmt_time(int64_t ms, char *out, size_t n)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(ms % 1000));
}

int timeline_parse_time(const char *s, int64_t *ms)
{
	char *end = NULL;
	long long v = strtoll(s, &end, 10);
	if (end != s && *end == '\0' && strlen(s) > 8) {
		*ms = v;
		return 0;
	}
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	int frac = 0;
	const char *rest = strptime(s, "%Y-%m-%d", &tm);
	if (rest == NULL)
		return ID_EINVALID;
	if (*rest == 'T' || *rest == ' ') {
		rest = strptime(rest + 1, "%H:%M:%S", &tm);
		if (rest == NULL)
			return ID_EINVALID;
		if (*rest == '.') {
			int digits = 0;
			for (rest++; *rest >= '0' && *rest <= '9'; rest++, digits++)
				if (digits < 3)
					frac = frac * 10 + (*rest - '0');
			for (; digits < 3; digits++)
				frac *= 10;
		}
		if (*rest == 'Z')
			rest++;
	}
	if (*rest != '\0')
		return ID_EINVALID;
	*ms = (int64_t)timegm(&tm) * 1000 + frac;
	return 0;
}

static int tl_push(timeline_t *t, tl_entry_t **out)
{
	if (t->len == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 32;
		tl_entry_t *n = realloc(t->items, ncap * sizeof(*n));
		if (n == NULL)
			return ID_ENOMEM;
		t->items = n;
		t->cap = ncap;
	}
	*out = &t->items[t->len];
	memset(*out, 0, sizeof(**out));
	employee_event_init(&(*out)->ev);
	desired_identity_init(&(*out)->d);
	sink_result_init(&(*out)->r);
	t->len++;
	return 0;
}

/* Decodes one message of the employee into a new timeline entry. */
static int tl_take(codec_t *codec, tl_kind_t kind, const rd_kafka_message_t *m,
                   timeline_t *t, id_err_t *err)
{
	tl_entry_t *te = NULL;
	if (tl_push(t, &te) != 0)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	te->ts = rd_kafka_message_timestamp(m, NULL);
	te->kind = kind;
	te->partition = m->partition;
	te->offset = m->offset;
	id_err_t derr = {0};
	int ok = kind == TL_EVENT
	             ? codec_decode_event(codec, m->payload, m->len, &te->ev, &derr)
	         : kind == TL_DESIRED
	             ? codec_decode_desired(codec, m->payload, m->len, &te->d, &derr)
	             : codec_decode_result(codec, m->payload, m->len, &te->r, &derr);
	if (ok != 0) {
		te->unreadable = true;
		te->error = strdup(derr.msg);
	}
	return 0;
}

/*
 * Reads partition part of topic from offset from until offset `to`
 * (exclusive) or its end.  With want (sorted offsets, all in [from, to)),
 * only those offsets are taken; otherwise every record keyed by employee.
 * *fetched counts the messages received from Kafka.
 */
static int tl_read_range(rd_kafka_t *rk, codec_t *codec, tl_kind_t kind,
                         const char *topic, int32_t part, int64_t from, int64_t to,
                         const int64_t *want, size_t nwant, const char *employee,
                         timeline_t *t, long *fetched, id_err_t *err)
{
	int rc = 0;
	size_t wi = 0;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, topic, part)->offset = from;
	rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		return id_kafka_err(err, e, "assigning partition");
	size_t klen = strlen(employee);
	for (int idle = 0; idle < 200 && !cli_stop_requested && rc == 0;) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL) {
			idle++;
			continue;
		}
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		bool last = m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->offset + 1 >= to;
		if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
			(*fetched)++;
		if (want != NULL)
			while (wi < nwant && want[wi] < m->offset)
				wi++;
		bool take = m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->key_len == klen &&
		            memcmp(m->key, employee, klen) == 0 &&
		            (want == NULL || (wi < nwant && want[wi] == m->offset));
		if (take)
			rc = tl_take(codec, kind, m, t, err);
		rd_kafka_message_destroy(m);
		if (last)
			break;
	}
	rd_kafka_assign(rk, NULL);
	return rc;
}

/* Indexed offsets closer than this are read in one pass rather than by a
 * new fetch: a fetch round-trip costs more than a few small records. */
#define TL_GAP_MAX 64

static int tl_read(rd_kafka_t *rk, codec_t *codec, tl_kind_t kind, const char *topic,
                   const char *employee, state_store_t *idx, const index_pos_t *pos,
                   size_t npos, timeline_t *t, long *fetched, bool *used_index,
                   id_err_t *err)
{
	int32_t nparts = 0;
	int rc = id_kafka_partition_count(rk, topic, &nparts, err);
	if (rc != 0)
		return rc;
	int32_t part = id_kafka_partition_for_key(employee, strlen(employee), nparts);
	int64_t lo = 0, hi = 0;
	rd_kafka_resp_err_t e =
	    rd_kafka_query_watermark_offsets(rk, topic, part, &lo, &hi, 10000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		return id_kafka_err(err, e, "reading topic end offsets");
	if (hi <= lo)
		return 0;
	int64_t scan_from = lo;
	if (idx != NULL) {
		int64_t until = index_indexed_until(idx, (int)kind, part);
		if (until > lo) {
			*used_index = true;
			scan_from = until;
			int64_t *want = malloc((npos ? npos : 1) * sizeof(*want));
			size_t nw = 0;
			if (want == NULL)
				return id_err_set(err, ID_ENOMEM, "out of memory");
			for (size_t i = 0; i < npos; i++)
				if (pos[i].kind == (int)kind &&
				    pos[i].partition == part && pos[i].offset >= lo &&
				    pos[i].offset < until)
					want[nw++] = pos[i].offset;
			/* Key order is offset order; runs of near offsets share a
			 * fetch. */
			for (size_t a = 0; a < nw && rc == 0;) {
				size_t b = a + 1;
				while (b < nw && want[b] - want[b - 1] <= TL_GAP_MAX)
					b++;
				rc = tl_read_range(rk, codec, kind, topic, part, want[a],
				                   want[b - 1] + 1, want + a, b - a,
				                   employee, t, fetched, err);
				a = b;
			}
			free(want);
		}
	}
	/* Without an index, or past what it covers: scan for the key. */
	if (rc == 0 && scan_from < hi)
		rc = tl_read_range(rk, codec, kind, topic, part, scan_from, hi, NULL, 0,
		                   employee, t, fetched, err);
	return rc;
}

static int tl_cmp(const void *a, const void *b)
{
	const tl_entry_t *x = a, *y = b;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->kind != y->kind)
		return (int)x->kind - (int)y->kind;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Opens the index read-write only when it exists (opening creates a store)
 * and no other process holds it; NULL otherwise, and the caller scans. */
static state_store_t *tl_index_open(const id_config_t *cfg)
{
	char path[1024], current[1100];
	index_path(cfg, path, sizeof(path));
	snprintf(current, sizeof(current), "%s/CURRENT", path);
	if (access(current, F_OK) != 0) {
		id_log_debug("timeline", "no index at %s", path);
		return NULL;
	}
	state_store_t *s = NULL;
	id_err_t err = {0};
	if (state_store_open(path, NULL, &s, &err) != 0) {
		id_log_debug("timeline", "index not usable: %s", err.msg);
		return NULL;
	}
	return s;
}

int timeline_load(const id_config_t *cfg, const char *employee, timeline_t *out,
                  id_err_t *err)
{
	int rc = 0;
	long fetched = 0;
	bool used_index = false;
	index_pos_t *pos = NULL;
	size_t npos = 0;
	memset(out, 0, sizeof(*out));
	state_store_t *idx = tl_index_open(cfg);
	id_err_t ierr = {0};
	if (idx != NULL && index_lookup(idx, employee, &pos, &npos, &ierr) != 0) {
		id_log_debug("timeline", "index lookup failed: %s", ierr.msg);
		state_store_close(idx);
		idx = NULL;
	}
	codec_t *codec = codec_create(err);
	rd_kafka_t *rk = codec ? id_kafka_consumer_create(cfg, "idstream-history", NULL,
	                                                  NULL, NULL, err)
	                       : NULL;
	if (rk == NULL) {
		rc = err && err->code ? err->code : ID_EKAFKA;
		goto out;
	}
	for (int k = 0; k < 3 && rc == 0; k++) {
		char topic[256];
		id_config_topic(cfg, suffixes[k], topic, sizeof(topic));
		rc = tl_read(rk, codec, (tl_kind_t)k, topic, employee, idx, pos, npos,
		             out, &fetched, &used_index, err);
	}
	if (rc == 0) {
		if (out->len > 1) /* qsort(NULL, 0) is undefined behaviour */
			qsort(out->items, out->len, sizeof(*out->items), tl_cmp);
		id_log_debug(
		    "timeline",
		    "employee %s: %s, %ld records read, %zu entries, %zu indexed",
		    employee, used_index ? "index used" : "partition scan", fetched,
		    out->len, npos);
	}
out:
	free(pos);
	state_store_close(idx);
	id_kafka_destroy(rk);
	codec_destroy(codec);
	return rc;
}

void timeline_fini(timeline_t *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->len; i++) {
		employee_event_fini(&t->items[i].ev);
		desired_identity_fini(&t->items[i].d);
		sink_result_fini(&t->items[i].r);
		free(t->items[i].error);
	}
	free(t->items);
	memset(t, 0, sizeof(*t));
}

const employee_event_t *timeline_find_event(const timeline_t *t, const char *event_id)
{
	if (event_id == NULL)
		return NULL;
	for (size_t i = 0; i < t->len; i++)
		if (t->items[i].kind == TL_EVENT && !t->items[i].unreadable &&
		    t->items[i].ev.event_id != NULL &&
		    strcmp(t->items[i].ev.event_id, event_id) == 0)
			return &t->items[i].ev;
	return NULL;
}
