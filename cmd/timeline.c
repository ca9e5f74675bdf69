/*
 * timeline.c — reads one employee's records from the three topics (see
 * timeline.h).
 *
 * With the index (<state.dir>/index, cmd/index.c) only the offsets it lists
 * for the employee are fetched, plus whatever each partition holds past the
 * indexed position; without it the employee's partition of each topic is
 * scanned.  The index is opened as a RocksDB secondary instance, so it is
 * read even while `idstream run` or `idstream index` holds it for writing.
 * The debug log says which way was used and how many records were read.
 *
 * Reading exactly the indexed records: one consumer is assigned the three
 * partitions at once (the fetches for them share round trips) and each
 * partition jumps from one wanted offset to the next with a seek, reading
 * on when the next one is near.  Its fetches are small
 * (max.partition.fetch.bytes), because Kafka returns a whole fetch's worth
 * of records after each wanted one and every jump discards them; and it
 * waits little at the end of a partition (fetch.wait.max.ms) because the
 * broker otherwise holds an empty fetch for half a second.  A partition
 * whose unindexed tail is long is scanned by a second consumer with
 * ordinary fetch sizes.  Options the user set under kafka.* win.
 *
 * For `why` (timeline_load_events()) the read has rounds: the sink results
 * and, of the desired versions, only those the index's groups per version
 * show to matter; then the HR events the caller names (the index knows each
 * event's id).  The index is opened on a thread of its own while the
 * consumer asks for metadata and watermarks.
 *
 * Policy activation markers (key "@policy", one per partition of hr.events
 * per deployment) are not keyed by the employee, but the versions they
 * caused name them as causes: those markers are read from the employee's
 * hr.events partition and added to the timeline as HR events.
 *
 * A record that cannot be decoded is kept as "unreadable" with the codec's
 * reason, never dropped silently.
 */
#define _XOPEN_SOURCE 700 /* strptime */
#include "cmd/timeline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cli.h"
#include "cmd/index.h"
#include "common/kafka.h"
#include "common/log.h"
#include "processors/policy_registry.h"
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

/* Indexed offsets closer than this are read on rather than jumped to: the
 * records in between are usually in the fetch already. */
#define TL_GAP_MAX 64
/* Fetch size per partition when reading indexed offsets: a few record
 * batches, so a jump discards little. */
#define TL_FETCH_BYTES_INDEXED "65536"
/* librdkafka's own default, for scans. */
#define TL_FETCH_BYTES_DEFAULT "1048576"
/* How long the broker may hold a fetch that finds nothing new. */
#define TL_FETCH_WAIT_MS "10"
/* Unindexed records past which a partition's tail is scanned by a consumer
 * with ordinary (large) fetches instead of the small-fetch one. */
#define TL_TAIL_SMALL 20000
/* Polls of 100 ms without any message before a read gives up. */
#define TL_IDLE_POLLS 100
/* Consumers reading indexed offsets at once, and the fewest offsets worth
 * a lane of their own. */
#define TL_LANES          2
#define TL_LANE_MIN_WANTS 12
/* Markers read at most to find the causes a timeline names. */
#define TL_MARKERS_MAX 64

/* Seeks made by the reads of this process (the debug log reports them:
 * each is a round trip to the broker). */
static atomic_long tl_seeks;

/* A position of a record in one partition and its Kafka timestamp. */
typedef struct tl_off {
	int64_t offset;
	int64_t ts;
} tl_off_t;

/* What to read from one topic partition. */
typedef struct tl_src {
	tl_kind_t kind;
	char topic[256];
	int32_t part;
	int64_t lo, hi;    /* watermarks when the read started */
	int64_t until;     /* everything below is indexed (0: nothing) */
	int64_t *want;     /* indexed offsets to read, ascending */
	size_t nwant, wi;  /* wi: the next one not yet passed */
	int64_t scan_from; /* scan [scan_from, hi) for key; hi: no scan */
	int64_t expect;    /* offsets below were handled (or skipped by a seek) */
	const char *key;   /* the record key taken (borrowed) */
	size_t klen;
	bool scanning, done;
	/* hr.events while scanning: where the policy markers are. */
	tl_off_t *markers;
	size_t nmarkers, capmarkers;
} tl_src_t;

static void tl_src_fini(tl_src_t *s)
{
	free(s->want);
	free(s->markers);
	memset(s, 0, sizeof(*s));
}

static int tl_off_push(tl_off_t **v, size_t *n, size_t *cap, int64_t offset, int64_t ts)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		tl_off_t *nv = realloc(*v, ncap * sizeof(**v));
		if (nv == NULL)
			return ID_ENOMEM;
		*v = nv;
		*cap = ncap;
	}
	(*v)[(*n)++] = (tl_off_t){offset, ts};
	return 0;
}

/*
 * The next offset to read at or after pos, switching from the indexed
 * offsets to the scan of the tail when they are exhausted; -1 when the
 * source is finished.
 */
static int64_t tl_src_next(tl_src_t *s, int64_t pos)
{
	if (!s->scanning) {
		while (s->wi < s->nwant && s->want[s->wi] < pos)
			s->wi++;
		if (s->wi < s->nwant)
			return s->want[s->wi];
		if (s->scan_from >= s->hi)
			return -1;
		s->scanning = true;
	}
	int64_t next = pos > s->scan_from ? pos : s->scan_from;
	return next < s->hi ? next : -1;
}

static bool tl_key_is(const rd_kafka_message_t *m, const char *key, size_t klen)
{
	return m->key_len == klen && (klen == 0 || memcmp(m->key, key, klen) == 0);
}

/* One message of s: taken when it is a wanted offset or, while scanning,
 * keyed by s->key; a marker's position is noted while scanning hr.events. */
static int tl_src_message(tl_src_t *s, codec_t *codec, const rd_kafka_message_t *m,
                          timeline_t *t, id_err_t *err)
{
	bool mine = tl_key_is(m, s->key, s->klen);
	if (!s->scanning) {
		if (s->wi < s->nwant && s->want[s->wi] == m->offset && mine)
			return tl_take(codec, s->kind, m, t, err);
		return 0;
	}
	if (m->offset < s->scan_from)
		return 0;
	if (mine)
		return tl_take(codec, s->kind, m, t, err);
	if (s->kind == TL_EVENT &&
	    tl_key_is(m, POLICY_EVENT_KEY, strlen(POLICY_EVENT_KEY)) &&
	    tl_off_push(&s->markers, &s->nmarkers, &s->capmarkers, m->offset,
	                rd_kafka_message_timestamp(m, NULL)) != 0)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	return 0;
}

static tl_src_t *tl_src_find(tl_src_t *srcs, size_t n, const rd_kafka_message_t *m)
{
	const char *topic = rd_kafka_topic_name(m->rkt);
	for (size_t i = 0; i < n; i++)
		if (srcs[i].part == m->partition && strcmp(srcs[i].topic, topic) == 0)
			return &srcs[i];
	return NULL;
}

/* Stops fetching a finished partition: what the consumer would prefetch
 * for it is of no use. */
static void tl_pause(rd_kafka_t *rk, const tl_src_t *s)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, s->topic, s->part);
	rd_kafka_pause_partitions(rk, l);
	rd_kafka_topic_partition_list_destroy(l);
}

/*
 * Reads the sources of srcs (those with selected[i], or all when selected
 * is NULL) together with rk: each from its first offset, jumping between
 * far-apart wanted offsets, until each is finished.  *fetched counts the
 * messages received.
 */
static int tl_fetch(rd_kafka_t *rk, codec_t *codec, tl_src_t *srcs, size_t n,
                    const bool *selected, timeline_t *t, long *fetched, id_err_t *err)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
	int rc = 0, idle = 0;
	size_t active = 0;
	for (size_t i = 0; i < n; i++) {
		tl_src_t *s = &srcs[i];
		if (s->done || (selected != NULL && !selected[i]))
			continue;
		int64_t first = tl_src_next(s, s->lo);
		if (first < 0) {
			s->done = true;
			continue;
		}
		rd_kafka_topic_partition_list_add(l, s->topic, s->part)->offset = first;
		s->expect = first;
		active++;
	}
	if (active == 0)
		goto out;
	rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, e, "assigning partitions");
		goto out;
	}
	/* A partition paused by an earlier read stays paused across assigns. */
	rd_kafka_resume_partitions(rk, l);
	while (active > 0 && rc == 0 && !cli_stop_requested) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL) {
			if (++idle < TL_IDLE_POLLS)
				continue;
			rc = id_err_set(err, ID_ETIMEOUT,
			                "no record from Kafka for %d s while reading the "
			                "employee's records",
			                TL_IDLE_POLLS / 10);
			break;
		}
		idle = 0;
		tl_src_t *s = tl_src_find(srcs, n, m);
		/* Below expect: a record already handled, or one a seek skipped
		 * that was fetched before it. */
		if (s == NULL || s->done || m->offset < s->expect) {
			rd_kafka_message_destroy(m);
			continue;
		}
		int64_t next = -1;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			/* Nothing more is readable (read_committed stops at the
			 * last stable offset): whatever is still wanted is not
			 * there. */
			if (!s->scanning && s->wi < s->nwant)
				id_log_debug("timeline",
				             "%s [%d]: indexed offset %lld not found "
				             "(end at %lld)",
				             s->topic, (int)s->part,
				             (long long)s->want[s->wi],
				             (long long)m->offset);
		} else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_err_set(err, ID_EKAFKA, "reading %s [%d]: %s", s->topic,
			                (int)s->part, rd_kafka_message_errstr(m));
		} else {
			(*fetched)++;
			rc = tl_src_message(s, codec, m, t, err);
			next = tl_src_next(s, m->offset + 1);
			s->expect = m->offset + 1;
			/* A far offset: jump (the fetches in flight are dropped). */
			if (next > m->offset + 1 + TL_GAP_MAX) {
				atomic_fetch_add(&tl_seeks, 1);
				e = rd_kafka_seek(m->rkt, s->part, next, 0);
				if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
					rc = id_kafka_err(err, e, "seeking");
				s->expect = next;
			}
		}
		if (next < 0) {
			s->done = true;
			active--;
			tl_pause(rk, s);
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_assign(rk, NULL);
out:
	rd_kafka_topic_partition_list_destroy(l);
	return rc;
}

/* Watermarks of the sources: two ListOffsets requests for all of them
 * rather than two per partition. */
static int tl_watermarks(rd_kafka_t *rk, tl_src_t *srcs, size_t n, id_err_t *err)
{
	int rc = 0;
	for (int end = 0; end < 2 && rc == 0; end++) {
		rd_kafka_topic_partition_list_t *l =
		    rd_kafka_topic_partition_list_new((int)n);
		for (size_t i = 0; i < n; i++)
			rd_kafka_topic_partition_list_add(l, srcs[i].topic, srcs[i].part)
			    ->offset =
			    end ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
		rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, 10000);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			rc = id_kafka_err(err, e, "reading topic offsets");
		for (int i = 0; rc == 0 && i < l->cnt; i++) {
			if (l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
				rc = id_kafka_err(err, l->elems[i].err,
				                  "reading topic offsets");
				break;
			}
			int64_t o = l->elems[i].offset > 0 ? l->elems[i].offset : 0;
			if (end)
				srcs[i].hi = o;
			else
				srcs[i].lo = o;
		}
		rd_kafka_topic_partition_list_destroy(l);
	}
	return rc;
}

/* The indexed offsets of key in source s below s->until and not below
 * s->lo (older ones were deleted by retention), ascending. */
static int tl_src_want(tl_src_t *s, const index_pos_t *pos, size_t npos, id_err_t *err)
{
	s->want = malloc((npos ? npos : 1) * sizeof(*s->want));
	if (s->want == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	/* Key order is (kind, partition, offset): already ascending. */
	for (size_t i = 0; i < npos; i++)
		if (pos[i].kind == (int)s->kind && pos[i].partition == s->part &&
		    pos[i].offset >= s->lo && pos[i].offset < s->until)
			s->want[s->nwant++] = pos[i].offset;
	return 0;
}

/* Sets kafka.<key> = value in cfg unless the user configured the key. */
static void tl_kafka_default(id_config_t *cfg, const char *key, const char *value)
{
	char full[128];
	if (id_attrs_has(id_config_kafka(cfg), key))
		return;
	snprintf(full, sizeof(full), "kafka.%s", key);
	id_err_t ignored = {0};
	if (id_config_set(cfg, full, value, &ignored) != 0)
		id_log_debug("timeline", "%s", ignored.msg);
}

/*
 * A consumer for reading records by offset: small fetches when
 * small_fetches, short waits at the end of a partition always.  user_fetch:
 * the user configured kafka.max.partition.fetch.bytes, which then stays.
 */
static rd_kafka_t *tl_consumer(id_config_t *cfg, bool small_fetches, bool user_fetch,
                               id_err_t *err)
{
	tl_kafka_default(cfg, "fetch.wait.max.ms", TL_FETCH_WAIT_MS);
	tl_kafka_default(cfg, "fetch.error.backoff.ms", TL_FETCH_WAIT_MS);
	if (!user_fetch) {
		id_err_t ignored = {0};
		id_config_set(cfg, "kafka.max.partition.fetch.bytes",
		              small_fetches ? TL_FETCH_BYTES_INDEXED
		                            : TL_FETCH_BYTES_DEFAULT,
		              &ignored);
	}
	return id_kafka_consumer_create(cfg, "idstream-history", NULL, NULL, NULL, err);
}

/*
 * Partition counts of the three topics with one metadata request: the
 * topics are made known to rk first, then their metadata is asked for
 * together (three requests would wait one after the other).  Topic
 * handles stay referenced by rk's cache.
 */
static int tl_partition_counts(rd_kafka_t *rk, tl_src_t *srcs, int32_t *counts,
                               id_err_t *err)
{
	rd_kafka_topic_t *rkt[TL_KINDS] = {NULL};
	const struct rd_kafka_metadata *md = NULL;
	int rc = 0;
	for (int k = 0; k < TL_KINDS; k++) {
		counts[k] = 0;
		if ((rkt[k] = rd_kafka_topic_new(rk, srcs[k].topic, NULL)) == NULL) {
			rc = id_err_set(err, ID_EKAFKA, "%s: %s", srcs[k].topic,
			                rd_kafka_err2str(rd_kafka_last_error()));
			goto out;
		}
	}
	rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, 10000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, e, "reading topic metadata");
		goto out;
	}
	for (int i = 0; i < md->topic_cnt; i++)
		for (int k = 0; k < TL_KINDS; k++)
			if (strcmp(md->topics[i].topic, srcs[k].topic) == 0 &&
			    md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
				counts[k] = md->topics[i].partition_cnt;
	for (int k = 0; k < TL_KINDS && rc == 0; k++)
		if (counts[k] <= 0)
			rc = id_err_set(err, ID_ENOTFOUND,
			                "topic %s does not exist (run `idstream topics "
			                "create`)",
			                srcs[k].topic);
out:
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	for (int k = 0; k < TL_KINDS; k++)
		if (rkt[k] != NULL)
			rd_kafka_topic_destroy(rkt[k]);
	return rc;
}

/* Opens the index for reading (a secondary instance: `run` may hold it);
 * NULL when there is none or it cannot be read, and the caller scans. */
static state_store_t *tl_index_open(const char *path)
{
	state_store_t *s = NULL;
	id_err_t err = {0};
	state_store_opts_t opts = {.cache_bytes = (size_t)8 << 20};
	int rc = state_store_open_reader(path, &opts, STATE_STORE_SECONDARY, &s, &err);
	if (rc == ID_ENOTFOUND)
		id_log_debug("timeline", "no index at %s", path);
	else if (rc != 0)
		id_log_debug("timeline", "index not usable: %s", err.msg);
	return rc == 0 ? s : NULL;
}

static int64_t tl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The index part of a load, run beside the Kafka requests. */
typedef struct tl_index_job {
	const char *path, *employee;
	int64_t t0, ms; /* start; how long the open took */
	state_store_t *idx;
	index_pos_t *pos;
	size_t npos;
	pthread_t thread;
} tl_index_job_t;

static void *tl_index_run(void *arg)
{
	tl_index_job_t *j = arg;
	id_err_t ierr = {0};
	j->idx = tl_index_open(j->path);
	j->ms = tl_now_ms() - j->t0;
	if (j->idx != NULL &&
	    index_lookup(j->idx, j->employee, &j->pos, &j->npos, &ierr) != 0) {
		id_log_debug("timeline", "index lookup failed: %s", ierr.msg);
		state_store_close(j->idx);
		j->idx = NULL;
	}
	return NULL;
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

static bool tl_has_event(const timeline_t *t, const char *event_id)
{
	return timeline_find_event(t, event_id) != NULL;
}

/* The newest Kafka time of a desired version naming a cause that is not an
 * event of the timeline; -1 when every cause is there. */
static int64_t tl_missing_causes_until(const timeline_t *t)
{
	int64_t until = -1;
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind != TL_DESIRED || te->unreadable || te->ts <= until)
			continue;
		bool missing = te->d.cause_event_id != NULL &&
		               !tl_has_event(t, te->d.cause_event_id);
		for (size_t k = 0; !missing && k < te->d.ncauses; k++)
			missing = te->d.causes[k].event_id != NULL &&
			          !tl_has_event(t, te->d.causes[k].event_id);
		if (missing)
			until = te->ts;
	}
	return until;
}

static bool tl_marker_referenced(const timeline_t *t, const char *event_id)
{
	if (event_id == NULL)
		return false;
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind != TL_DESIRED || te->unreadable)
			continue;
		if (te->d.cause_event_id != NULL &&
		    strcmp(te->d.cause_event_id, event_id) == 0)
			return true;
		for (size_t k = 0; k < te->d.ncauses; k++)
			if (te->d.causes[k].event_id != NULL &&
			    strcmp(te->d.causes[k].event_id, event_id) == 0)
				return true;
	}
	return false;
}

static int tl_off_cmp(const void *a, const void *b)
{
	const tl_off_t *x = a, *y = b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/*
 * Adds the policy activation markers that versions of the timeline name as
 * causes: of the markers of the employee's hr.events partition (ev), those
 * recorded before the newest version naming a missing cause, newest first,
 * at most TL_MARKERS_MAX.  Markers nobody names are dropped again.
 */
static int tl_add_markers(rd_kafka_t *rk, codec_t *codec, tl_src_t *ev,
                          state_store_t *idx, timeline_t *t, long *fetched, id_err_t *err)
{
	int64_t until = tl_missing_causes_until(t);
	index_pos_t *pos = NULL;
	size_t npos = 0, first = t->len;
	int rc = 0;
	if (until < 0)
		return 0;
	/* Positions: the index's below its covered offset, plus what the
	 * scan of the tail (or of the whole partition) noted. */
	if (idx != NULL) {
		id_err_t ierr = {0};
		if (index_lookup(idx, POLICY_EVENT_KEY, &pos, &npos, &ierr) != 0)
			id_log_debug("timeline", "index lookup of markers: %s", ierr.msg);
		/* A marker whose id the index has and nobody names is not
		 * read. */
		for (size_t i = 0; i < npos && rc == 0; i++)
			if (pos[i].kind == TL_EVENT && pos[i].partition == ev->part &&
			    pos[i].offset >= ev->lo && pos[i].offset < ev->until &&
			    (pos[i].event_id == NULL ||
			     tl_marker_referenced(t, pos[i].event_id)) &&
			    tl_off_push(&ev->markers, &ev->nmarkers, &ev->capmarkers,
			                pos[i].offset, pos[i].ts) != 0)
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
		index_pos_free(pos, npos);
	}
	if (rc != 0 || ev->nmarkers == 0)
		return rc;
	/* Newest candidates first. */
	qsort(ev->markers, ev->nmarkers, sizeof(*ev->markers), tl_off_cmp);
	tl_src_t m = {.kind = TL_EVENT,
	              .part = ev->part,
	              .lo = ev->lo,
	              .hi = ev->hi,
	              .key = POLICY_EVENT_KEY,
	              .klen = strlen(POLICY_EVENT_KEY)};
	memcpy(m.topic, ev->topic, sizeof(m.topic));
	m.scan_from = m.hi;
	if ((m.want = malloc(TL_MARKERS_MAX * sizeof(*m.want))) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	for (size_t i = ev->nmarkers; i > 0 && m.nwant < TL_MARKERS_MAX; i--)
		if (ev->markers[i - 1].ts <= until)
			m.want[m.nwant++] = ev->markers[i - 1].offset;
	for (size_t a = 0, b = m.nwant; a + 1 < b; a++, b--) {
		int64_t x = m.want[a];
		m.want[a] = m.want[b - 1];
		m.want[b - 1] = x;
	}
	m.until = m.hi;
	rc = tl_fetch(rk, codec, &m, 1, NULL, t, fetched, err);
	tl_src_fini(&m);
	/* Keep only the markers that are named. */
	size_t w = first;
	for (size_t i = first; i < t->len; i++) {
		tl_entry_t *te = &t->items[i];
		if (rc == 0 && !te->unreadable &&
		    tl_marker_referenced(t, te->ev.event_id)) {
			t->items[w++] = *te;
			continue;
		}
		employee_event_fini(&te->ev);
		desired_identity_fini(&te->d);
		sink_result_fini(&te->r);
		free(te->error);
	}
	t->len = w;
	return rc;
}

/*
 * A lane: one consumer (with its own decoder and entries) reading a share
 * of the indexed offsets on its own thread.  A consumer has one fetch in
 * flight per broker, so the jumps between far offsets, a round trip each,
 * are what a read waits for; lanes wait for theirs at the same time.
 */
typedef struct tl_lane {
	rd_kafka_t *rk;
	codec_t *codec;
	tl_src_t srcs[TL_KINDS]; /* want borrowed from the timeline's sources */
	timeline_t t;
	long fetched;
	int rc;
	id_err_t err;
	pthread_t thread;
	bool started;
	bool need_metadata; /* rk has not read the topics' metadata yet */
} tl_lane_t;

static void *tl_lane_run(void *arg)
{
	tl_lane_t *l = arg;
	int32_t nparts[TL_KINDS];
	/* The partitions' leaders first: a consumer assigned partitions of
	 * topics it has no metadata for yet often starts fetching only after
	 * its next metadata refresh, a second later. */
	if (l->rk != NULL && l->need_metadata)
		(void)tl_partition_counts(l->rk, l->srcs, nparts, NULL);
	l->need_metadata = false;
	l->rc = tl_fetch(l->rk, l->codec, l->srcs, TL_KINDS, NULL, &l->t, &l->fetched,
	                 &l->err);
	return NULL;
}

/* Moves every entry of from to the end of to. */
static int tl_move_entries(timeline_t *to, timeline_t *from)
{
	for (size_t i = 0; i < from->len; i++) {
		tl_entry_t *te = NULL;
		if (tl_push(to, &te) != 0)
			return ID_ENOMEM;
		*te = from->items[i];
	}
	free(from->items);
	memset(from, 0, sizeof(*from));
	return 0;
}

/*
 * Reads the selected sources with the nlanes lanes (lanes[0] may run on
 * this thread): lane j gets the j-th contiguous share of each source's
 * indexed offsets, the last lane the scan of the tail too.  The entries go
 * to t; the tail's marker positions back to the sources.
 */
static int tl_fetch_lanes(tl_lane_t *lanes, size_t nlanes, tl_src_t *srcs,
                          const bool *selected, timeline_t *t, long *fetched,
                          id_err_t *err)
{
	int rc = 0;
	for (size_t j = 0; j < nlanes; j++) {
		for (int k = 0; k < TL_KINDS; k++) {
			tl_src_t *p = &srcs[k], *c = &lanes[j].srcs[k];
			size_t a = p->nwant * j / nlanes, b = p->nwant * (j + 1) / nlanes;
			*c = *p;
			c->want = p->want + a;
			c->nwant = b - a;
			c->markers = NULL;
			c->nmarkers = c->capmarkers = 0;
			if (j + 1 < nlanes)
				c->scan_from = c->hi; /* the tail is the last lane's */
			c->done = p->done || !selected[k] ||
			          (c->nwant == 0 && c->scan_from >= c->hi);
		}
	}
	for (size_t j = 1; j < nlanes; j++)
		lanes[j].started =
		    pthread_create(&lanes[j].thread, NULL, tl_lane_run, &lanes[j]) == 0;
	tl_lane_run(&lanes[0]);
	for (size_t j = 1; j < nlanes; j++) {
		if (lanes[j].started)
			pthread_join(lanes[j].thread, NULL);
		else
			tl_lane_run(&lanes[j]); /* no thread: read it here */
		lanes[j].started = false;
	}
	for (size_t j = 0; j < nlanes; j++) {
		tl_lane_t *l = &lanes[j];
		*fetched += l->fetched;
		if (rc == 0 && l->rc != 0) {
			rc = l->rc;
			if (err != NULL)
				*err = l->err;
		}
		if (tl_move_entries(t, &l->t) != 0 && rc == 0)
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
		for (int k = 0; k < TL_KINDS; k++) {
			tl_src_t *c = &l->srcs[k];
			if (c->nmarkers > 0 && srcs[k].markers == NULL) {
				srcs[k].markers = c->markers;
				srcs[k].nmarkers = c->nmarkers;
				srcs[k].capmarkers = c->capmarkers;
			} else {
				free(c->markers);
			}
			memset(c, 0, sizeof(*c));
		}
	}
	return rc;
}

static int tl_load(id_config_t *cfg, const char *employee, unsigned kinds,
                   timeline_need_fn need, void *need_opaque, timeline_t *out,
                   id_err_t *err);

int timeline_load(id_config_t *cfg, const char *employee, timeline_t *out, id_err_t *err)
{
	return tl_load(cfg, employee, TL_ALL_KINDS, NULL, NULL, out, err);
}

int timeline_load_kinds(id_config_t *cfg, const char *employee, unsigned kinds,
                        timeline_t *out, id_err_t *err)
{
	return tl_load(cfg, employee, kinds, NULL, NULL, out, err);
}

int timeline_load_events(id_config_t *cfg, const char *employee, timeline_need_fn need,
                         void *opaque, timeline_t *out, id_err_t *err)
{
	return tl_load(cfg, employee,
	               need ? TL_KIND_BIT(TL_DESIRED) | TL_KIND_BIT(TL_RESULT)
	                    : TL_ALL_KINDS,
	               need, opaque, out, err);
}

/* Keeps of ev's wanted offsets those of the events named in ids, and those
 * whose id the index does not know.  pos: the employee's positions. */
static void tl_keep_named(tl_src_t *ev, const index_pos_t *pos, size_t npos,
                          const char *const *ids, size_t nids)
{
	size_t w = 0, i = 0;
	for (size_t k = 0; k < ev->nwant; k++) {
		/* Both ascend: pos by (kind, partition, offset). */
		while (i < npos &&
		       (pos[i].kind < TL_EVENT ||
		        (pos[i].kind == TL_EVENT &&
		         (pos[i].partition < ev->part || (pos[i].partition == ev->part &&
		                                          pos[i].offset < ev->want[k])))))
			i++;
		bool keep = true;
		if (i < npos && pos[i].kind == TL_EVENT && pos[i].partition == ev->part &&
		    pos[i].offset == ev->want[k] && pos[i].event_id != NULL) {
			keep = false;
			for (size_t j = 0; j < nids && !keep; j++)
				keep = ids[j] != NULL &&
				       strcmp(ids[j], pos[i].event_id) == 0;
		}
		if (keep)
			ev->want[w++] = ev->want[k];
	}
	ev->nwant = w;
}

/* True when the NUL-separated list (len bytes) has g. */
static bool tl_groups_have(const char *list, size_t len, const char *g)
{
	for (size_t i = 0; i < len;) {
		size_t l = strlen(list + i);
		if (strcmp(list + i, g) == 0)
			return true;
		i += l + 1;
	}
	return false;
}

static int tl_version_cmp(const void *a, const void *b)
{
	const index_version_t *x = a, *y = b;
	if (x->version != y->version)
		return x->version < y->version ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int tl_i64_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * Narrows the desired source d to the versions that explain the newest
 * indexed one (see timeline_load_events()), from the index's versions with
 * their groups: the newest, and per group the start of its membership and
 * the version before.  The versions past the indexed position are all read
 * (d's tail), so a version among them is explained too: a membership that
 * began before them runs through the newest indexed version.  *full
 * receives the wanted offsets before (caller frees), *newest the newest
 * indexed version.  False (d unchanged) when the index cannot tell.
 */
static bool tl_narrow_desired(state_store_t *idx, const char *employee, tl_src_t *d,
                              int64_t **full, size_t *nfull, int64_t *newest)
{
	index_version_t *v = NULL;
	size_t n = 0, m = 0;
	int64_t *keep = NULL;
	bool ok = false;
	id_err_t ierr = {0};
	if (!index_has_version_groups(idx) || d->nwant == 0 ||
	    index_versions_of(idx, employee, &v, &n, &ierr) != 0)
		goto out;
	/* Only what the source would read: this partition, not deleted. */
	for (size_t i = 0; i < n; i++)
		if (v[i].partition == d->part && v[i].offset >= d->lo &&
		    v[i].offset < d->until)
			v[m++] = v[i];
		else
			free(v[i].groups);
	n = m;
	if (n == 0 || (keep = malloc((2 * n + 1) * sizeof(*keep))) == NULL)
		goto out;
	qsort(v, n, sizeof(*v), tl_version_cmp);
	const index_version_t *top = &v[n - 1];
	size_t nkeep = 0;
	keep[nkeep++] = top->offset;
	for (size_t i = 0; i < top->groups_len;) {
		const char *g = top->groups + i;
		size_t since = n - 1;
		while (since > 0 &&
		       tl_groups_have(v[since - 1].groups, v[since - 1].groups_len, g))
			since--;
		keep[nkeep++] = v[since].offset;
		if (since > 0)
			keep[nkeep++] = v[since - 1].offset;
		i += strlen(g) + 1;
	}
	qsort(keep, nkeep, sizeof(*keep), tl_i64_cmp);
	size_t u = 0;
	for (size_t i = 0; i < nkeep; i++)
		if (u == 0 || keep[u - 1] != keep[i])
			keep[u++] = keep[i];
	*full = d->want;
	*nfull = d->nwant;
	*newest = top->version;
	d->want = keep;
	d->nwant = u;
	keep = NULL;
	ok = true;
out:
	free(keep);
	index_versions_free(v, n);
	return ok;
}
static int tl_load(id_config_t *cfg, const char *employee, unsigned kinds,
                   timeline_need_fn need, void *need_opaque, timeline_t *out,
                   id_err_t *err)
{
	int rc = 0;
	long fetched = 0;
	bool used_index = false, need_big = false;
	bool user_fetch = id_attrs_has(id_config_kafka(cfg), "max.partition.fetch.bytes");
	bool small[TL_KINDS] = {false}, big[TL_KINDS] = {false};
	index_pos_t *pos = NULL;
	size_t npos = 0;
	tl_src_t srcs[TL_KINDS];
	tl_lane_t lanes[TL_LANES];
	size_t nlanes = 1;
	state_store_t *idx = NULL;
	rd_kafka_t *rk = NULL, *rk_big = NULL;
	codec_t *codec = NULL;
	int64_t *full = NULL, newest = -1; /* why: see tl_narrow_desired() */
	size_t nfull = 0, ev_nwant = 0;    /* why: indexed events, 2nd round */
	memset(out, 0, sizeof(*out));
	memset(srcs, 0, sizeof(srcs));
	memset(lanes, 0, sizeof(lanes));
	int64_t t0 = tl_now_ms();
	char ipath[1024];
	index_path(cfg, ipath, sizeof(ipath));
	/* The consumer first: it connects in its own threads while the index
	 * is opened.  Whether the index will be used is not known yet; a
	 * store that is there almost always is. */
	bool have_index = state_store_exists(ipath);
	if ((codec = codec_create(err)) == NULL ||
	    (rk = tl_consumer(cfg, have_index, user_fetch, err)) == NULL) {
		rc = err && err->code ? err->code : ID_EKAFKA;
		goto out;
	}
	/* The lanes' consumers too: they connect while the index is read. */
	lanes[0].rk = rk;
	lanes[0].codec = codec;
	for (size_t j = 1; have_index && j < TL_LANES; j++) {
		if ((lanes[j].codec = codec_create(err)) == NULL ||
		    (lanes[j].rk = tl_consumer(cfg, true, user_fetch, err)) == NULL) {
			rc = err && err->code ? err->code : ID_EKAFKA;
			goto out;
		}
		lanes[j].need_metadata = true;
		nlanes = j + 1;
	}
	int64_t t_consumers = tl_now_ms() - t0;
	/* The index is opened and looked up on a thread of its own while this
	 * one asks Kafka for the metadata and the watermarks: both wait. */
	tl_index_job_t job = {.path = ipath, .employee = employee, .t0 = tl_now_ms()};
	bool job_thread =
	    have_index && pthread_create(&job.thread, NULL, tl_index_run, &job) == 0;
	if (have_index && !job_thread)
		tl_index_run(&job);
	int32_t nparts[TL_KINDS];
	for (int k = 0; k < TL_KINDS; k++) {
		tl_src_t *s = &srcs[k];
		s->kind = (tl_kind_t)k;
		s->key = employee;
		s->klen = strlen(employee);
		id_config_topic(cfg, suffixes[k], s->topic, sizeof(s->topic));
	}
	rc = tl_partition_counts(rk, srcs, nparts, err);
	for (int k = 0; k < TL_KINDS && rc == 0; k++)
		srcs[k].part =
		    id_kafka_partition_for_key(employee, srcs[k].klen, nparts[k]);
	int64_t t_meta = tl_now_ms() - t0;
	if (rc == 0)
		rc = tl_watermarks(rk, srcs, TL_KINDS, err);
	if (job_thread)
		pthread_join(job.thread, NULL);
	idx = job.idx;
	pos = job.pos;
	npos = job.npos;
	int64_t t_index = job.ms;
	if (rc != 0)
		goto out;
	int64_t t_wm = tl_now_ms() - t0;
	for (int k = 0; k < TL_KINDS && rc == 0; k++) {
		tl_src_t *s = &srcs[k];
		s->scan_from = s->lo;
		if (idx != NULL) {
			s->until = index_indexed_until(idx, k, s->part);
			if (s->until > s->lo) {
				used_index = true;
				s->scan_from = s->until < s->hi ? s->until : s->hi;
				rc = tl_src_want(s, pos, npos, err);
			}
		}
		/* A long scan goes to a consumer with ordinary fetches (rk has
		 * them when there is no index at all). */
		if (need != NULL && k == TL_EVENT) {
			/* why: the events' tail now, the indexed ones it
			 * names in the second round. */
			ev_nwant = s->nwant;
			s->nwant = 0;
		} else if ((kinds & TL_KIND_BIT(k)) == 0) {
			continue; /* not asked for: not read */
		}
		if (have_index && s->hi - s->scan_from > TL_TAIL_SMALL)
			big[k] = need_big = true;
		else
			small[k] = true;
	}
	/* why: only the versions that explain the newest, if the index can
	 * tell which. */
	bool narrowed =
	    need != NULL && idx != NULL && rc == 0 &&
	    tl_narrow_desired(idx, employee, &srcs[TL_DESIRED], &full, &nfull, &newest);
	/* A few offsets are not worth a lane each. */
	size_t nwant = 0;
	for (int k = 0; k < TL_KINDS; k++)
		nwant += small[k] ? srcs[k].nwant : 0;
	size_t use = nwant / TL_LANE_MIN_WANTS;
	use = use < 1 ? 1 : use > nlanes ? nlanes : use;
	if (rc == 0)
		rc = tl_fetch_lanes(lanes, use, srcs, small, out, &fetched, err);
	int64_t t_lanes = tl_now_ms() - t0;
	if (rc == 0 && need_big) {
		if ((rk_big = tl_consumer(cfg, false, user_fetch, err)) == NULL)
			rc = err && err->code ? err->code : ID_EKAFKA;
		else
			rc = tl_fetch(rk_big, codec, srcs, TL_KINDS, big, out, &fetched,
			              err);
	}
	if (rc == 0 && need != NULL) {
		/* Second round: the indexed HR events the caller needs, now that
		 * it has seen the versions and results (all of them when the
		 * index does not know the events' ids). */
		const char **ids = NULL;
		size_t nids = 0;
		tl_src_t *ev = &srcs[TL_EVENT];
		bool sel[TL_KINDS] = {true, false, false};
		int64_t explains = -1;
		rc = need(out, need_opaque, &ids, &nids, &explains);
		if (rc == 0 && narrowed && explains < newest) {
			/* Another version is explained (the target's sink is
			 * behind): the other versions too, then ask again. */
			tl_src_t *d = &srcs[TL_DESIRED];
			size_t w = 0;
			for (size_t i = 0, j = 0; i < nfull; i++) {
				while (j < d->nwant && d->want[j] < full[i])
					j++;
				if (j >= d->nwant || d->want[j] != full[i])
					full[w++] = full[i];
			}
			free(d->want);
			d->want = full;
			d->nwant = w;
			d->wi = 0;
			d->scan_from = d->hi; /* the tail was read */
			full = NULL;
			bool dsel[TL_KINDS] = {false, true, false};
			size_t use_d = w / TL_LANE_MIN_WANTS;
			use_d = use_d < 1 ? 1 : use_d > nlanes ? nlanes : use_d;
			free(ids);
			ids = NULL;
			nids = 0;
			rc = tl_fetch_lanes(lanes, use_d, srcs, dsel, out, &fetched, err);
			if (rc == 0)
				rc = need(out, need_opaque, &ids, &nids, &explains);
		}
		/* The tail was read in the first round. */
		ev->nwant = ev_nwant;
		ev->wi = 0;
		ev->scan_from = ev->hi;
		if (rc == 0 && idx != NULL)
			tl_keep_named(ev, pos, npos, ids, nids);
		free(ids);
		if (rc == 0 && ev->nwant > 0) {
			size_t use_ev = ev->nwant / TL_LANE_MIN_WANTS;
			use_ev = use_ev < 1 ? 1 : use_ev > nlanes ? nlanes : use_ev;
			rc = tl_fetch_lanes(lanes, use_ev, srcs, sel, out, &fetched, err);
		}
		kinds |= TL_KIND_BIT(TL_EVENT);
	}
	if (rc == 0 && (kinds & TL_KIND_BIT(TL_EVENT)) != 0)
		rc = tl_add_markers(rk, codec, &srcs[TL_EVENT], idx, out, &fetched, err);
	if (rc == 0) {
		if (out->len > 1) /* qsort(NULL, 0) is undefined behaviour */
			qsort(out->items, out->len, sizeof(*out->items), tl_cmp);
		id_log_debug("timeline",
		             "employee %s: %s, %ld records read, %zu entries, %zu "
		             "indexed (%ld seeks; index open %lld ms, total %lld ms; at "
		             "%lld ms consumers, %lld metadata, %lld watermarks, %lld "
		             "%zu lanes)",
		             employee, used_index ? "index used" : "partition scan",
		             fetched, out->len, npos, atomic_load(&tl_seeks),
		             (long long)t_index, (long long)(tl_now_ms() - t0),
		             (long long)t_consumers, (long long)t_meta, (long long)t_wm,
		             (long long)t_lanes, use);
	}
out:
	free(full);
	for (int k = 0; k < TL_KINDS; k++)
		tl_src_fini(&srcs[k]);
	index_pos_free(pos, npos);
	state_store_close(idx);
	id_kafka_destroy(rk_big);
	id_kafka_destroy(rk);
	codec_destroy(codec);
	for (size_t j = 1; j < TL_LANES; j++) {
		id_kafka_destroy(lanes[j].rk);
		codec_destroy(lanes[j].codec);
	}
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

bool timeline_attr_is_detail(const employee_event_t *ev, const char *key)
{
	return ev->type == EV_POLICY_ACTIVATED &&
	       (strcmp(key, POLICY_ATTR_SOURCE) == 0 ||
	        strcmp(key, POLICY_ATTR_SHA256) == 0 ||
	        strcmp(key, POLICY_ATTR_DEPLOYMENT) == 0);
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
