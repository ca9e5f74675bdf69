/*
 * http_server.c — the webhook HTTP server (see http_server.h).
 *
 * Life of a delivery:  headers (route, size and media-type checks) → body
 * (buffered up to the limit) → verify → parse → enrich thin events → claim
 * the delivery id → encode → suspend the connection → produce → the poller
 * sees every delivery report → resume → commit the delivery id → 200.
 *
 * Invariants:
 *   - a 2xx with events is only sent after every event's delivery report
 *     came back without error;
 *   - a delivery id is recorded (dedupe_commit) only after that, and
 *     released on any failure, so a retry after a 5xx is accepted;
 *   - the per-request delivery tracker (tracker_t) is only touched under
 *     `mu`: the producer's callbacks run inside rd_kafka_poll(), which only
 *     the poller calls, holding `mu`.
 * Threading: libmicrohttpd's pool threads run on_request(); the poller thread
 * serves the producer and resumes connections; counters are C11 atomics.
 */
#include "ingest/http_server.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "schemas/codec.h"

#define COMPONENT           "ingest-http"
#define DEFAULT_THREADS     4
#define DEFAULT_MAX_BODY    ((size_t)1 << 20)
#define DEFAULT_WINDOW_S    300
#define DEFAULT_PUBLISH_MS  2500
#define DEFAULT_RETRY_AFTER 5
/* Past its deadline a request waits this much longer for the reports of
 * messages already sent; then it is answered 503 and its tracker left to
 * the poller until librdkafka is done with it. */
#define ABANDON_GRACE_MS  10000
#define SWEEP_INTERVAL_MS 60000
#define SWEEP_BATCH       10000
#define MAX_IN_FLIGHT     20000
/* A body is drained past the limit so the client can read its 413; beyond
 * this much more the connection is simply closed. */
#define MAX_DISCARD ((size_t)16 << 20)

/* Outcomes counted per source: the refusal codes, then these. */
enum {
	OUT_ACCEPTED = WEBHOOK_REFUSE_NONE,
	OUT_IGNORED = WEBHOOK_REFUSAL_COUNT,
	OUT_QUEUED,
	OUT_COUNT
};
#define SRC_UNKNOWN WEBHOOK_SOURCE_COUNT /* metrics row for unknown sources */

/* Publish latency buckets, seconds (upper bounds; +Inf implied). */
static const double latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,   0.25,   0.5,   1,    2.5,   5};
#define NBUCKETS (sizeof(latency_buckets) / sizeof(*latency_buckets))

typedef struct request request_t;

/* Delivery tracking of one request.  `d` must stay first: librdkafka hands
 * &d back as the message opaque (common/kafka.h). */
typedef struct tracker {
	id_kafka_delivery_t d;
	struct tracker *prev, *next;
	request_t *rq; /* NULL once abandoned */
	struct MHD_Connection *conn;
	bool armed;                      /* all messages handed to the producer */
	rd_kafka_resp_err_t produce_err; /* a message the producer refused */
	int64_t deadline_ms;
} tracker_t;

/* RQ_ANSWERED: a refusal was queued before the body was read; the rest of
 * the body is drained unread. */
typedef enum { RQ_BODY, RQ_ANSWERED, RQ_PUBLISHING, RQ_DONE } rq_state_t;

struct request {
	int src; /* webhook_source_t */
	rq_state_t state;
	id_buf_t body;
	bool too_large;
	size_t discarded; /* body bytes dropped after the limit */
	webhook_delivery_t dl;
	bool claimed;
	tracker_t *tr;
	/* Results, written by the poller under mu. */
	rd_kafka_resp_err_t kafka_err;
	bool timed_out;
	struct timespec t0; /* publish start */
};

struct http_server {
	http_server_opts_t o;
	struct MHD_Daemon *mhd;
	uint16_t port;
	char *tls_cert, *tls_key; /* PEM contents */
	char *topic;

	pthread_mutex_t mu;
	tracker_t *trackers; /* in flight (and abandoned), guarded by mu */
	size_t ntrackers;
	pthread_t poller;
	bool poller_started;
	atomic_bool poller_stop;
	atomic_bool stopping;
	int wake[2]; /* producer main-queue io events */
	rd_kafka_queue_t *mainq;
	atomic_long suspended;

	pthread_mutex_t codec_mu;
	codec_t **codecs; /* free codecs (one per concurrent encoder) */
	size_t ncodecs, codec_cap;

	/* metrics */
	atomic_long requests[WEBHOOK_SOURCE_COUNT + 1][OUT_COUNT];
	atomic_long published[WEBHOOK_SOURCE_COUNT];
	atomic_long lat_buckets[NBUCKETS + 1];
	atomic_long lat_count;
	atomic_llong lat_sum_us;
	atomic_bool kafka_ok;
	int64_t started_ms;

	/* outbox (optional) */
	pthread_mutex_t ob_mu;
	pthread_cond_t ob_cond;
	bool ob_kick;      /* a new entry: retry now */
	id_hmap_t ob_emps; /* employee id → waiting entries (as uintptr_t), ob_mu */
	pthread_t ob_thread;
	bool ob_started;
	atomic_bool ob_stop;
};

/* ---- small helpers ----------------------------------------------------------- */

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

static double since_s(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void count(http_server_t *s, int src, int outcome)
{
	if (src < 0 || src > SRC_UNKNOWN)
		src = SRC_UNKNOWN;
	atomic_fetch_add(&s->requests[src][outcome], 1);
}

static void observe_latency(http_server_t *s, double secs)
{
	size_t b = 0;
	while (b < NBUCKETS && secs > latency_buckets[b])
		b++;
	atomic_fetch_add(&s->lat_buckets[b], 1);
	atomic_fetch_add(&s->lat_count, 1);
	atomic_fetch_add(&s->lat_sum_us, (long long)(secs * 1e6));
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status,
                               const char *content_type, const char *body, size_t len,
                               unsigned retry_after)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	if (retry_after > 0) {
		char ra[16];
		snprintf(ra, sizeof(ra), "%u", retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* {"error": code, "detail": detail} with the refusal's status. */
static enum MHD_Result refuse_http(http_server_t *s, struct MHD_Connection *conn, int src,
                                   webhook_refusal_t why, const char *detail)
{
	count(s, src, (int)why);
	json_t *o = json_pack("{s:s, s:s}", "error", webhook_refusal_name(why), "detail",
	                      detail != NULL ? detail : "");
	char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	unsigned retry = why == WEBHOOK_REFUSE_UNAVAILABLE ? s->o.retry_after_s : 0;
	enum MHD_Result ret = text != NULL
	                          ? respond(conn, (unsigned)webhook_refusal_status(why),
	                                    "application/json", text, strlen(text), retry)
	                          : MHD_NO;
	int status = webhook_refusal_status(why);
	id_log(status >= 500 ? ID_LOG_WARN : ID_LOG_INFO, COMPONENT, "%s: %d %s: %s",
	       src >= 0 && src < WEBHOOK_SOURCE_COUNT ? webhook_source_name(src)
	                                              : "(unknown source)",
	       status, webhook_refusal_name(why), detail != NULL ? detail : "");
	free(text);
	json_decref(o);
	return ret;
}

/* ---- codecs ------------------------------------------------------------------- */

static codec_t *codec_take(http_server_t *s, id_err_t *err)
{
	pthread_mutex_lock(&s->codec_mu);
	codec_t *c = s->ncodecs > 0 ? s->codecs[--s->ncodecs] : NULL;
	pthread_mutex_unlock(&s->codec_mu);
	return c != NULL ? c : codec_create(err);
}

static void codec_give(http_server_t *s, codec_t *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&s->codec_mu);
	if (s->ncodecs == s->codec_cap) {
		size_t cap = s->codec_cap ? 2 * s->codec_cap : 8;
		codec_t **n = realloc(s->codecs, cap * sizeof(*n));
		if (n == NULL) {
			pthread_mutex_unlock(&s->codec_mu);
			codec_destroy(c);
			return;
		}
		s->codecs = n;
		s->codec_cap = cap;
	}
	s->codecs[s->ncodecs++] = c;
	pthread_mutex_unlock(&s->codec_mu);
}

/* ---- the poller ---------------------------------------------------------------- */

static void tracker_unlink(http_server_t *s, tracker_t *t)
{
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		s->trackers = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	s->ntrackers--;
}

static void tracker_link(http_server_t *s, tracker_t *t)
{
	t->prev = NULL;
	t->next = s->trackers;
	if (s->trackers != NULL)
		s->trackers->prev = t;
	s->trackers = t;
	s->ntrackers++;
}

/*
 * One pass, under mu: serve delivery reports, then finish the requests whose
 * messages are all reported (or that waited far past their deadline).  The
 * connections to resume are returned in *conns; resuming happens outside mu.
 * *purge is set when a request is past its deadline: Kafka is not taking
 * messages, and the ones still queued must fail now (see poller_main).
 */
static size_t poll_pass(http_server_t *s, struct MHD_Connection ***conns, size_t *cap,
                        bool *purge)
{
	size_t n = 0;
	int64_t now = mono_ms();
	pthread_mutex_lock(&s->mu);
	while (rd_kafka_poll(s->o.producer, 0) > 0)
		;
	tracker_t *t = s->trackers;
	while (t != NULL) {
		tracker_t *next = t->next;
		bool finished = t->armed && t->d.pending <= 0;
		if (t->armed && !finished && now > t->deadline_ms)
			*purge = true;
		bool overdue = t->armed && !finished && t->rq != NULL &&
		               now > t->deadline_ms + ABANDON_GRACE_MS;
		if (finished || overdue) {
			request_t *rq = t->rq;
			struct MHD_Connection *conn = t->conn;
			if (rq != NULL) {
				rq->kafka_err =
				    t->produce_err != RD_KAFKA_RESP_ERR_NO_ERROR
				        ? t->produce_err
				        : t->d.first_err;
				rq->timed_out = overdue;
				rq->state = RQ_DONE;
				rq->tr = NULL;
			}
			if (finished) {
				tracker_unlink(s, t);
				free(t);
			} else {
				/* Librdkafka still owns &t->d: keep the tracker
				 * until its last report, but answer now. */
				t->rq = NULL;
				id_log_error(COMPONENT,
				             "Kafka gave no delivery report within the "
				             "publish timeout + %d s; answering 503",
				             ABANDON_GRACE_MS / 1000);
			}
			if (rq != NULL) {
				if (n == *cap) {
					size_t nc = *cap ? 2 * *cap : 64;
					struct MHD_Connection **a =
					    realloc(*conns, nc * sizeof(*a));
					if (a == NULL) {
						/* Leave it for the next pass. */
						rq->state = RQ_PUBLISHING;
						break;
					}
					*conns = a;
					*cap = nc;
				}
				(*conns)[n++] = conn;
			}
		}
		t = next;
	}
	pthread_mutex_unlock(&s->mu);
	return n;
}

static void *poller_main(void *arg)
{
	http_server_t *s = arg;
	struct MHD_Connection **conns = NULL;
	size_t cap = 0;
	int64_t next_sweep = mono_ms() + SWEEP_INTERVAL_MS, next_purge = 0;
	while (!atomic_load(&s->poller_stop)) {
		struct pollfd pfd = {s->wake[0], POLLIN, 0};
		poll(&pfd, 1, 50);
		char buf[256];
		while (read(s->wake[0], buf, sizeof(buf)) > 0)
			;
		bool purge = false;
		size_t n = poll_pass(s, &conns, &cap, &purge);
		for (size_t i = 0; i < n; i++)
			MHD_resume_connection(conns[i]);
		/* Librdkafka's own message timeout fires seconds late when no
		 * broker is up.  Messages still in the local queue were never
		 * sent, so failing them is safe: their requests get 503 and the
		 * senders' retries cannot meet a late copy in the log.  Messages
		 * already sent stay until acknowledged or timed out. */
		if (purge && mono_ms() >= next_purge) {
			rd_kafka_purge(s->o.producer, RD_KAFKA_PURGE_F_QUEUE |
			                                  RD_KAFKA_PURGE_F_NON_BLOCKING);
			next_purge = mono_ms() + 100;
		}
		if (mono_ms() >= next_sweep) {
			size_t removed = 0;
			id_err_t err = {0};
			if (dedupe_sweep(s->o.dedupe, wall_ms(), SWEEP_BATCH, &removed,
			                 &err) != 0)
				id_log_warn(COMPONENT, "dedupe sweep: %s", err.msg);
			else if (removed > 0)
				id_log_debug(COMPONENT,
				             "dedupe sweep removed %zu expired ids",
				             removed);
			next_sweep = mono_ms() + SWEEP_INTERVAL_MS;
		}
	}
	free(conns);
	return NULL;
}

/* Wakes the poller (a request finished producing with nothing pending). */
static void poller_wake(http_server_t *s)
{
	ssize_t w = write(s->wake[1], "w", 1);
	(void)w; /* a full pipe already means "wake up" */
}

/* ---- /healthz and /metrics ----------------------------------------------------- */

static enum MHD_Result serve_healthz(http_server_t *s, struct MHD_Connection *conn)
{
	char body[256];
	pthread_mutex_lock(&s->mu);
	size_t inflight = s->ntrackers;
	pthread_mutex_unlock(&s->mu);
	bool stopping = atomic_load(&s->stopping);
	int n = snprintf(body, sizeof(body),
	                 "{\"status\":\"%s\",\"kafka\":\"%s\",\"in_flight\":%zu,"
	                 "\"uptime_s\":%lld}\n",
	                 stopping ? "stopping" : "ok",
	                 atomic_load(&s->kafka_ok) ? "ok" : "failing", inflight,
	                 (long long)((wall_ms() - s->started_ms) / 1000));
	return respond(conn, stopping ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK,
	               "application/json", body, (size_t)n, 0);
}

static enum MHD_Result serve_metrics(http_server_t *s, struct MHD_Connection *conn)
{
	id_buf_t b = ID_BUF_INIT;
	id_buf_printf(&b, "# HELP idstream_webhook_requests_total Webhook deliveries by "
	                  "source and outcome.\n"
	                  "# TYPE idstream_webhook_requests_total counter\n");
	for (int src = 0; src <= SRC_UNKNOWN; src++) {
		for (int o = 0; o < OUT_COUNT; o++) {
			long v = atomic_load(&s->requests[src][o]);
			if (v == 0 && o != OUT_ACCEPTED)
				continue;
			const char *oname = o == OUT_ACCEPTED  ? "accepted"
			                    : o == OUT_IGNORED ? "ignored"
			                    : o == OUT_QUEUED  ? "queued"
			                                       : webhook_refusal_name(o);
			id_buf_printf(&b,
			              "idstream_webhook_requests_total{source=\"%s\","
			              "outcome=\"%s\"} %ld\n",
			              src == SRC_UNKNOWN ? "unknown"
			                                 : webhook_source_name(src),
			              oname, v);
		}
	}
	id_buf_printf(&b, "# HELP idstream_webhook_events_published_total Employee "
	                  "events acknowledged by Kafka.\n"
	                  "# TYPE idstream_webhook_events_published_total counter\n");
	for (int src = 0; src < WEBHOOK_SOURCE_COUNT; src++)
		id_buf_printf(
		    &b, "idstream_webhook_events_published_total{source=\"%s\"} %ld\n",
		    webhook_source_name(src), atomic_load(&s->published[src]));
	id_buf_printf(&b, "# HELP idstream_webhook_publish_seconds Time from the first "
	                  "produce of a delivery to its last acknowledgement.\n"
	                  "# TYPE idstream_webhook_publish_seconds histogram\n");
	long cum = 0;
	for (size_t i = 0; i <= NBUCKETS; i++) {
		cum += atomic_load(&s->lat_buckets[i]);
		if (i < NBUCKETS)
			id_buf_printf(
			    &b,
			    "idstream_webhook_publish_seconds_bucket{le=\"%g\"} %ld\n",
			    latency_buckets[i], cum);
		else
			id_buf_printf(
			    &b,
			    "idstream_webhook_publish_seconds_bucket{le=\"+Inf\"} %ld\n",
			    cum);
	}
	id_buf_printf(&b, "idstream_webhook_publish_seconds_sum %.6f\n",
	              (double)atomic_load(&s->lat_sum_us) / 1e6);
	id_buf_printf(&b, "idstream_webhook_publish_seconds_count %ld\n",
	              atomic_load(&s->lat_count));
	pthread_mutex_lock(&s->mu);
	size_t inflight = s->ntrackers;
	pthread_mutex_unlock(&s->mu);
	id_buf_printf(&b,
	              "# HELP idstream_webhook_in_flight Deliveries waiting for Kafka.\n"
	              "# TYPE idstream_webhook_in_flight gauge\n"
	              "idstream_webhook_in_flight %zu\n",
	              inflight);
	id_buf_printf(&b,
	              "# HELP idstream_webhook_outbox_depth Acknowledged deliveries "
	              "waiting for the HR API.\n"
	              "# TYPE idstream_webhook_outbox_depth gauge\n"
	              "idstream_webhook_outbox_depth %zu\n",
	              s->o.outbox != NULL ? outbox_depth(s->o.outbox) : (size_t)0);
	id_buf_printf(&b,
	              "# HELP idstream_webhook_kafka_up 1 when the last publish "
	              "succeeded.\n"
	              "# TYPE idstream_webhook_kafka_up gauge\n"
	              "idstream_webhook_kafka_up %d\n",
	              atomic_load(&s->kafka_ok) ? 1 : 0);
	enum MHD_Result r =
	    b.data != NULL
	        ? respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
	                  (const char *)b.data, b.len, 0)
	        : MHD_NO;
	id_buf_fini(&b);
	return r;
}

/* ---- outbox ------------------------------------------------------------------- */

/* Counts the waiting entries per employee (delta +1 / -1); ob_mu held. */
static void emps_adjust_locked(http_server_t *s, const webhook_delivery_t *dl, int delta)
{
	for (size_t i = 0; i < dl->nevents; i++) {
		const char *id = dl->events[i].ev.employee_id;
		uintptr_t n = (uintptr_t)id_hmap_get(&s->ob_emps, id);
		n = delta > 0 ? n + 1 : (n > 0 ? n - 1 : 0);
		/* A count of 0 is stored as NULL, which reads as absent. */
		if (id_hmap_put(&s->ob_emps, id, (void *)n) != 0)
			id_log_warn(COMPONENT, "out of memory tracking outbox employees");
	}
}

static void emps_adjust(http_server_t *s, const webhook_delivery_t *dl, int delta)
{
	pthread_mutex_lock(&s->ob_mu);
	emps_adjust_locked(s, dl, delta);
	pthread_mutex_unlock(&s->ob_mu);
}

/* True when an event of dl concerns an employee with a waiting entry. */
static bool emps_waiting(http_server_t *s, const webhook_delivery_t *dl)
{
	bool waiting = false;
	pthread_mutex_lock(&s->ob_mu);
	for (size_t i = 0; i < dl->nevents && !waiting; i++)
		waiting = id_hmap_get(&s->ob_emps, dl->events[i].ev.employee_id) != NULL;
	pthread_mutex_unlock(&s->ob_mu);
	return waiting;
}

/*
 * Rebuilds the employee counts from the stored entries (start, after a
 * park).  ob_mu is held throughout: queue_delivery() stores an entry and
 * counts it under the same lock, so no entry is counted twice or missed.
 */
static void emps_rebuild(http_server_t *s)
{
	outbox_entry_t e;
	memset(&e, 0, sizeof(e));
	id_err_t err = {0};
	webhook_refusal_t why;
	webhook_delivery_t dl;
	webhook_delivery_init(&dl);
	pthread_mutex_lock(&s->ob_mu);
	id_hmap_clear(&s->ob_emps);
	uint64_t after = 0;
	while (outbox_next(s->o.outbox, after, &e, &err) == 1) {
		after = e.seq;
		if (webhook_parse(e.src, e.body, e.len, e.delivery_hdr, e.received_ms,
		                  &dl, &why, &err) == 0)
			emps_adjust_locked(s, &dl, +1);
		webhook_delivery_fini(&dl);
	}
	pthread_mutex_unlock(&s->ob_mu);
	outbox_entry_fini(&e);
}

/*
 * Stores a verified delivery in the outbox together with its delivery id's
 * dedupe record (one synced batch), then answers 202: from here on the
 * delivery is the server's responsibility.
 */
static enum MHD_Result queue_delivery(http_server_t *s, struct MHD_Connection *conn,
                                      request_t *rq, const char *delivery_hdr,
                                      const char *why_detail)
{
	id_err_t err = {0};
	uint64_t seq = 0;
	const char *name = webhook_source_name(rq->src);
	state_batch_t *b = state_batch_create();
	int rc = b == NULL ? id_err_set(&err, ID_ENOMEM, "out of memory") : 0;
	if (rc == 0)
		rc = outbox_add(s->o.outbox, b, (webhook_source_t)rq->src, wall_ms(),
		                delivery_hdr,
		                rq->body.data != NULL ? (void *)rq->body.data : "",
		                rq->body.len, &seq, &err);
	if (rc == 0)
		rc = dedupe_record(s->o.dedupe, b, name, rq->dl.delivery_id, wall_ms(),
		                   &err);
	/* Stored and counted under ob_mu, atomically for emps_rebuild(). */
	pthread_mutex_lock(&s->ob_mu);
	if (rc == 0)
		rc = state_batch_write(s->o.store, b, true, &err);
	if (rc == 0) {
		outbox_added(s->o.outbox);
		emps_adjust_locked(s, &rq->dl, +1);
		s->ob_kick = true;
		pthread_cond_signal(&s->ob_cond);
	}
	pthread_mutex_unlock(&s->ob_mu);
	state_batch_destroy(b);
	dedupe_release(s->o.dedupe, name, rq->dl.delivery_id);
	rq->claimed = false;
	if (rc != 0)
		return refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_UNAVAILABLE, err.msg);

	count(s, rq->src, OUT_QUEUED);
	id_log_warn(COMPONENT, "%s delivery %s queued in the outbox as entry %llu: %s",
	            name, rq->dl.delivery_id, (unsigned long long)seq, why_detail);
	json_t *o = json_pack("{s:s, s:s, s:s}", "status", "queued", "delivery_id",
	                      rq->dl.delivery_id, "detail", why_detail);
	char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	enum MHD_Result r = text != NULL
	                        ? respond(conn, MHD_HTTP_ACCEPTED, "application/json",
	                                  text, strlen(text), 0)
	                        : MHD_NO;
	free(text);
	json_decref(o);
	return r;
}

/*
 * Publishes one outbox entry: parse, complete thin events, encode, produce
 * each event and wait for its acknowledgement.  0, ID_EINVALID (can never
 * succeed), or another error (try again later).  *dl keeps the parse.
 */
static int outbox_publish(http_server_t *s, const outbox_entry_t *e,
                          webhook_delivery_t *dl, id_err_t *err)
{
	int rc = 0;
	webhook_refusal_t why;
	id_buf_t val = ID_BUF_INIT;
	codec_t *codec = NULL;
	if ((rc = webhook_parse(e->src, e->body, e->len, e->delivery_hdr, e->received_ms,
	                        dl, &why, err)) != 0)
		return rc == ID_ENOMEM ? rc : ID_EINVALID;
	for (size_t i = 0; i < dl->nevents; i++) {
		if (!dl->events[i].thin)
			continue;
		rc = s->o.enrich != NULL
		         ? s->o.enrich(s->o.enrich_opaque, e->src, &dl->events[i], err)
		         : id_err_set(err, ID_ENOTFOUND, "no HR API is configured");
		if (rc != 0)
			return rc == ID_EINVALID ? rc : ID_EIO;
	}
	if ((codec = codec_take(s, err)) == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < dl->nevents && rc == 0; i++) {
		const employee_event_t *ev = &dl->events[i].ev;
		if ((rc = codec_encode_event(codec, ev, &val, err)) != 0) {
			rc = ID_EINVALID;
			break;
		}
		rc = id_kafka_produce_sync(s->o.outbox_producer, s->topic,
		                           ev->employee_id, strlen(ev->employee_id),
		                           val.data, val.len, err);
		if (rc == 0)
			atomic_fetch_add(&s->published[e->src], 1);
	}
	codec_give(s, codec);
	id_buf_fini(&val);
	return rc;
}

/* The outbox worker: retries the waiting entries in order, with backoff. */
static void *outbox_main(void *arg)
{
	http_server_t *s = arg;
	int64_t backoff = 500;
	outbox_entry_t e;
	memset(&e, 0, sizeof(e));
	webhook_delivery_t dl;
	webhook_delivery_init(&dl);
	while (!atomic_load(&s->ob_stop)) {
		/* Sleep until kicked or the backoff ran out; with an empty
		 * outbox only a kick matters (the 5 s wake is a safety net). */
		int64_t wait_ms = outbox_depth(s->o.outbox) > 0 ? backoff : 5000;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += wait_ms / 1000;
		until.tv_nsec += (wait_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&s->ob_mu);
		while (!s->ob_kick && !atomic_load(&s->ob_stop) &&
		       pthread_cond_timedwait(&s->ob_cond, &s->ob_mu, &until) == 0)
			;
		s->ob_kick = false;
		pthread_mutex_unlock(&s->ob_mu);

		bool failed = false, parked = false;
		uint64_t after = 0;
		id_err_t err = {0};
		while (!atomic_load(&s->ob_stop) &&
		       outbox_next(s->o.outbox, after, &e, &err) == 1) {
			after = e.seq;
			const char *name = webhook_source_name(e.src);
			id_err_clear(&err);
			int rc = outbox_publish(s, &e, &dl, &err);
			if (rc == 0) {
				if (outbox_remove(s->o.outbox, e.seq, &err) != 0)
					/* Published but still stored: the next pass
					 * publishes it again, with the same ids. */
					id_log_warn(COMPONENT, "outbox entry %llu: %s",
					            (unsigned long long)e.seq, err.msg);
				emps_adjust(s, &dl, -1);
				id_log_info(
				    COMPONENT,
				    "outbox entry %llu (%s delivery %s): %zu events "
				    "published",
				    (unsigned long long)e.seq, name,
				    dl.delivery_id ? dl.delivery_id : "-", dl.nevents);
			} else if (rc == ID_EINVALID) {
				id_log_error(
				    COMPONENT,
				    "outbox entry %llu (%s) can never be published and "
				    "is parked under \"z/\" in the state store: %s",
				    (unsigned long long)e.seq, name, err.msg);
				if (outbox_park(s->o.outbox, &e, &err) != 0)
					id_log_error(COMPONENT,
					             "parking outbox entry: %s", err.msg);
				parked = true;
			} else {
				/* Later entries wait too: an employee's events keep
				 * their order. */
				if (backoff >= 4000 || backoff == 500)
					id_log_warn(COMPONENT,
					            "outbox entry %llu (%s): %s; "
					            "retrying in %lld ms",
					            (unsigned long long)e.seq, name,
					            err.msg, (long long)backoff);
				failed = true;
			}
			webhook_delivery_fini(&dl);
			if (failed)
				break;
		}
		outbox_entry_fini(&e);
		if (parked)
			emps_rebuild(s);
		backoff = failed ? (backoff * 2 > 30000 ? 30000 : backoff * 2) : 500;
	}
	return NULL;
}

/* ---- webhook requests ----------------------------------------------------------- */

static void request_free(request_t *rq)
{
	if (rq == NULL)
		return;
	id_buf_fini(&rq->body);
	webhook_delivery_fini(&rq->dl);
	free(rq);
}

/* The final answer of a published delivery (after the resume). */
static enum MHD_Result finish_publish(http_server_t *s, struct MHD_Connection *conn,
                                      request_t *rq)
{
	pthread_mutex_lock(&s->mu);
	rd_kafka_resp_err_t kerr = rq->kafka_err;
	bool timed_out = rq->timed_out;
	pthread_mutex_unlock(&s->mu);
	atomic_fetch_sub(&s->suspended, 1);
	const char *src = webhook_source_name(rq->src);
	double secs = since_s(&rq->t0);

	if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR || timed_out) {
		dedupe_release(s->o.dedupe, src, rq->dl.delivery_id);
		rq->claimed = false;
		atomic_store(&s->kafka_ok, false);
		char detail[512];
		snprintf(detail, sizeof(detail),
		         "Kafka did not acknowledge the events within %lld ms (%s); the "
		         "delivery was not recorded, retry it",
		         (long long)s->o.publish_timeout_ms,
		         timed_out ? "no delivery report" : rd_kafka_err2str(kerr));
		return refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_UNAVAILABLE, detail);
	}
	atomic_store(&s->kafka_ok, true);
	observe_latency(s, secs);
	atomic_fetch_add(&s->published[rq->src], (long)rq->dl.nevents);
	id_err_t err = {0};
	if (dedupe_commit(s->o.dedupe, src, rq->dl.delivery_id, wall_ms(), &err) != 0)
		/* The events are in Kafka; a retry would publish them again with
		 * the same event ids, which consumers drop. */
		id_log_warn(COMPONENT, "%s delivery %s published but not recorded: %s",
		            src, rq->dl.delivery_id, err.msg);
	rq->claimed = false;

	json_t *evs = json_array();
	for (size_t i = 0; i < rq->dl.nevents; i++) {
		const employee_event_t *ev = &rq->dl.events[i].ev;
		json_array_append_new(evs, json_pack("{s:s, s:s, s:s}", "event_id",
		                                     ev->event_id, "employee_id",
		                                     ev->employee_id, "type",
		                                     employee_event_type_name(ev->type)));
	}
	json_t *o = json_pack("{s:s, s:s, s:o}", "status", "accepted", "delivery_id",
	                      rq->dl.delivery_id, "events", evs);
	char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	enum MHD_Result r = text != NULL ? respond(conn, MHD_HTTP_OK, "application/json",
	                                           text, strlen(text), 0)
	                                 : MHD_NO;
	count(s, rq->src, OUT_ACCEPTED);
	id_log_debug(COMPONENT, "%s delivery %s (%s): %zu events published in %.1f ms",
	             src, rq->dl.delivery_id, rq->dl.kind ? rq->dl.kind : "-",
	             rq->dl.nevents, secs * 1000);
	free(text);
	json_decref(o);
	return r;
}

/* Verify, parse, enrich, claim, encode, then hand the events to Kafka. */
static enum MHD_Result process_delivery(http_server_t *s, struct MHD_Connection *conn,
                                        request_t *rq)
{
	enum MHD_Result ret = MHD_YES;
	webhook_source_t src = (webhook_source_t)rq->src;
	const webhook_header_names_t *hn = webhook_source_headers(src);
	webhook_refusal_t why = WEBHOOK_REFUSE_NONE;
	id_err_t err = {0};
	id_buf_t *vals = NULL;
	codec_t *codec = NULL;
	tracker_t *tr = NULL;
	const char *name = webhook_source_name(src);

	webhook_headers_t h = {
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, hn->signature),
	    hn->timestamp
	        ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, hn->timestamp)
	        : NULL,
	    hn->delivery
	        ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, hn->delivery)
	        : NULL,
	};
	const void *body = rq->body.data != NULL ? (const void *)rq->body.data : "";
	int64_t now = wall_ms();
	if (webhook_verify(src, &h, body, rq->body.len, &s->o.keys[src], now / 1000,
	                   s->o.timestamp_window_s, &why, &err) != 0)
		return refuse_http(s, conn, rq->src, why, err.msg);
	if (webhook_parse(src, body, rq->body.len, h.delivery, now, &rq->dl, &why,
	                  &err) != 0)
		return refuse_http(s, conn, rq->src, why, err.msg);
	if (rq->dl.nevents == 0) {
		char text[512];
		json_t *o =
		    json_pack("{s:s, s:s, s:s}", "status", "ignored", "delivery_id",
		              rq->dl.delivery_id ? rq->dl.delivery_id : "", "detail",
		              "valid delivery of an event type idstream does not use");
		char *t = json_dumps(o, JSON_COMPACT);
		snprintf(text, sizeof(text), "%s", t != NULL ? t : "{}");
		free(t);
		json_decref(o);
		count(s, rq->src, OUT_IGNORED);
		id_log_debug(COMPONENT, "%s delivery %s (%s) ignored", name,
		             rq->dl.delivery_id ? rq->dl.delivery_id : "-",
		             rq->dl.kind ? rq->dl.kind : "-");
		return respond(conn, MHD_HTTP_OK, "application/json", text, strlen(text),
		               0);
	}

	/* Deliveries already published are refused before any HR API call. */
	bool in_flight = false;
	int rc =
	    dedupe_claim(s->o.dedupe, name, rq->dl.delivery_id, now, &in_flight, &err);
	/* A copy still being published may yet fail: the sender must retry it
	 * later rather than take a 409 as final. */
	if (rc == ID_ECONFLICT)
		return refuse_http(s, conn, rq->src,
		                   in_flight ? WEBHOOK_REFUSE_UNAVAILABLE
		                             : WEBHOOK_REFUSE_DUPLICATE,
		                   err.msg);
	if (rc != 0)
		return refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_UNAVAILABLE, err.msg);
	rq->claimed = true;

	/* An earlier change of one of these employees waits in the outbox:
	 * this one must not overtake it. */
	if (s->o.outbox != NULL && emps_waiting(s, &rq->dl))
		return queue_delivery(
		    s, conn, rq, h.delivery,
		    "an earlier delivery for the same employee is waiting "
		    "for the HR API; this one is published after it");

	for (size_t i = 0; i < rq->dl.nevents; i++) {
		webhook_event_t *we = &rq->dl.events[i];
		if (!we->thin)
			continue;
		if (s->o.enrich == NULL) {
			char detail[512];
			snprintf(
			    detail, sizeof(detail),
			    "%s %s for employee %s carries ids only; completing it needs "
			    "the %s API, which is not configured",
			    name, rq->dl.kind ? rq->dl.kind : "event", we->ev.employee_id,
			    name);
			ret = refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_ENRICHMENT,
			                  detail);
			goto fail;
		}
		id_err_clear(&err);
		rc = s->o.enrich(s->o.enrich_opaque, src, we, &err);
		if (rc == ID_EINVALID) {
			ret = refuse_http(s, conn, rq->src,
			                  WEBHOOK_REFUSE_INVALID_PAYLOAD, err.msg);
			goto fail;
		}
		if (rc == ID_ENOTFOUND) {
			ret = refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_ENRICHMENT,
			                  err.msg);
			goto fail;
		}
		if (rc != 0 && s->o.outbox != NULL) {
			char detail[1200];
			snprintf(detail, sizeof(detail),
			         "the HR API could not be reached (%s); the delivery is "
			         "stored "
			         "and will be published when it answers",
			         err.msg);
			return queue_delivery(s, conn, rq, h.delivery, detail);
		}
		if (rc != 0) {
			ret = refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_UNAVAILABLE,
			                  err.msg);
			goto fail;
		}
	}

	/* Encode everything before producing anything: a record the codec
	 * refuses must not leave half a delivery in Kafka. */
	if ((codec = codec_take(s, &err)) == NULL ||
	    (vals = calloc(rq->dl.nevents, sizeof(*vals))) == NULL) {
		ret = refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_INTERNAL,
		                  err.msg[0] ? err.msg : "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < rq->dl.nevents; i++) {
		if (codec_encode_event(codec, &rq->dl.events[i].ev, &vals[i], &err) !=
		    0) {
			ret = refuse_http(s, conn, rq->src,
			                  WEBHOOK_REFUSE_INVALID_PAYLOAD, err.msg);
			goto fail;
		}
	}
	if (atomic_load(&s->stopping)) {
		ret = refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_UNAVAILABLE,
		                  "the server is shutting down");
		goto fail;
	}
	if ((tr = calloc(1, sizeof(*tr))) == NULL) {
		ret = refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_INTERNAL,
		                  "out of memory");
		goto fail;
	}
	pthread_mutex_lock(&s->mu);
	if (s->ntrackers >= MAX_IN_FLIGHT) {
		pthread_mutex_unlock(&s->mu);
		free(tr);
		tr = NULL;
		ret = refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_UNAVAILABLE,
		                  "too many deliveries are waiting for Kafka");
		goto fail;
	}
	tr->rq = rq;
	tr->conn = conn;
	tr->deadline_ms = mono_ms() + s->o.publish_timeout_ms;
	rq->tr = tr;
	rq->state = RQ_PUBLISHING;
	tracker_link(s, tr);
	pthread_mutex_unlock(&s->mu);

	/* Suspended before producing, so the poller's resume can never come
	 * before the suspend. */
	MHD_suspend_connection(conn);
	atomic_fetch_add(&s->suspended, 1);
	clock_gettime(CLOCK_MONOTONIC, &rq->t0);
	for (size_t i = 0; i < rq->dl.nevents; i++) {
		const employee_event_t *ev = &rq->dl.events[i].ev;
		pthread_mutex_lock(&s->mu);
		tr->d.pending++;
		pthread_mutex_unlock(&s->mu);
		rd_kafka_resp_err_t pe = rd_kafka_producev(
		    s->o.producer, RD_KAFKA_V_TOPIC(s->topic),
		    RD_KAFKA_V_KEY(ev->employee_id, strlen(ev->employee_id)),
		    RD_KAFKA_V_VALUE(vals[i].data, vals[i].len),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&tr->d),
		    RD_KAFKA_V_END);
		if (pe != RD_KAFKA_RESP_ERR_NO_ERROR) {
			pthread_mutex_lock(&s->mu);
			tr->d.pending--;
			tr->produce_err = pe;
			pthread_mutex_unlock(&s->mu);
			break; /* the rest would be refused too; no partial retry */
		}
	}
	pthread_mutex_lock(&s->mu);
	tr->armed = true;
	bool nothing_pending = tr->d.pending <= 0;
	pthread_mutex_unlock(&s->mu);
	if (nothing_pending)
		poller_wake(s);
	goto out;
fail:
	if (rq->claimed) {
		dedupe_release(s->o.dedupe, name, rq->dl.delivery_id);
		rq->claimed = false;
	}
out:
	if (vals != NULL)
		for (size_t i = 0; i < rq->dl.nevents; i++)
			id_buf_fini(&vals[i]);
	free(vals);
	codec_give(s, codec);
	return ret;
}

static bool media_type_ok(struct MHD_Connection *conn)
{
	const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	                                             MHD_HTTP_HEADER_CONTENT_TYPE);
	if (ct == NULL)
		return true; /* some senders omit it; the body must still be JSON */
	/* application/json, application/<x>+json, text/json; parameters allowed */
	const char *semi = strchr(ct, ';');
	size_t n = semi != NULL ? (size_t)(semi - ct) : strlen(ct);
	while (n > 0 && ct[n - 1] == ' ')
		n--;
	return (n >= 4 && strncasecmp(ct + n - 4, "json", 4) == 0);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	(void)version;
	http_server_t *s = cls;
	request_t *rq = *con_cls;

	if (rq == NULL) {
		if ((rq = calloc(1, sizeof(*rq))) == NULL)
			return MHD_NO;
		rq->src = -1;
		rq->state = RQ_ANSWERED;
		webhook_delivery_init(&rq->dl);
		*con_cls = rq;
		bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
		if (get && strcmp(url, "/healthz") == 0)
			return serve_healthz(s, conn);
		if (get && strcmp(url, "/metrics") == 0)
			return serve_metrics(s, conn);
		if (strncmp(url, "/webhooks/", 10) != 0)
			return refuse_http(
			    s, conn, -1, WEBHOOK_REFUSE_NOT_FOUND,
			    "endpoints: POST /webhooks/<source>, GET /healthz, "
			    "GET /metrics");
		webhook_source_t src;
		if (webhook_source_parse(url + 10, &src) != 0 ||
		    s->o.keys[src].nkeys == 0) {
			char detail[256];
			snprintf(
			    detail, sizeof(detail),
			    "no enabled source \"%.64s\" (sources: generic, bamboohr, "
			    "hibob, gusto, personio; a source is enabled by its secret)",
			    url + 10);
			return refuse_http(s, conn, -1, WEBHOOK_REFUSE_UNKNOWN_SOURCE,
			                   detail);
		}
		if (strcmp(method, "POST") != 0)
			return refuse_http(s, conn, (int)src, WEBHOOK_REFUSE_METHOD,
			                   "webhooks are delivered with POST");
		if (!media_type_ok(conn))
			return refuse_http(s, conn, (int)src, WEBHOOK_REFUSE_MEDIA_TYPE,
			                   "the body must be JSON (Content-Type: "
			                   "application/json)");
		/* Refuse before reading a byte of a body announced as too big. */
		const char *cl = MHD_lookup_connection_value(
		    conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL && strtoull(cl, NULL, 10) > s->o.max_body_bytes) {
			char detail[128];
			snprintf(detail, sizeof(detail),
			         "Content-Length %s exceeds the limit of %zu bytes", cl,
			         s->o.max_body_bytes);
			return refuse_http(s, conn, (int)src, WEBHOOK_REFUSE_TOO_LARGE,
			                   detail);
		}
		rq->src = (int)src;
		rq->state = RQ_BODY;
		return MHD_YES;
	}

	if (rq->state == RQ_ANSWERED) {
		/* Drain what the client still sends after the early answer. */
		rq->discarded += *upload_data_size;
		*upload_data_size = 0;
		return rq->discarded > MAX_DISCARD ? MHD_NO : MHD_YES;
	}

	if (rq->state == RQ_DONE)
		return finish_publish(s, conn, rq);
	if (rq->state == RQ_PUBLISHING)
		return MHD_YES; /* spurious call while suspended */

	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (!rq->too_large && rq->body.len + n > s->o.max_body_bytes) {
			/* A body without Content-Length grew past the limit: stop
			 * buffering; libmicrohttpd only lets us answer once the
			 * upload is over, so the rest is drained unread. */
			rq->too_large = true;
			id_buf_fini(&rq->body);
		}
		if (rq->too_large) {
			rq->discarded += n;
			return rq->discarded > MAX_DISCARD ? MHD_NO : MHD_YES;
		}
		return id_buf_append(&rq->body, upload_data, n) == 0 ? MHD_YES : MHD_NO;
	}
	if (rq->too_large) {
		char detail[128];
		snprintf(detail, sizeof(detail),
		         "the body exceeds the limit of %zu bytes", s->o.max_body_bytes);
		rq->state = RQ_ANSWERED;
		return refuse_http(s, conn, rq->src, WEBHOOK_REFUSE_TOO_LARGE, detail);
	}
	rq->state = RQ_ANSWERED; /* unless process_delivery suspends it */
	return process_delivery(s, conn, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)conn;
	(void)toe;
	http_server_t *s = cls;
	request_t *rq = *con_cls;
	if (rq == NULL)
		return;
	/* A connection dropped before the answer still ends its claim. */
	if (rq->claimed)
		dedupe_release(s->o.dedupe, webhook_source_name(rq->src),
		               rq->dl.delivery_id);
	request_free(rq);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	id_log_warn(COMPONENT, "libmicrohttpd: %s", msg);
}

/* ---- start / stop ---------------------------------------------------------------- */

static int read_file(const char *path, char **out, id_err_t *err)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return id_err_set(err, ID_EIO, "%s: %s", path, strerror(errno));
	id_buf_t b = ID_BUF_INIT;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (id_buf_append(&b, chunk, n) != 0)
			break;
	int bad = ferror(f);
	fclose(f);
	if (bad || id_buf_append_u8(&b, 0) != 0) {
		id_buf_fini(&b);
		return id_err_set(err, ID_EIO, "%s: could not read", path);
	}
	*out = (char *)b.data;
	return 0;
}

static void server_free(http_server_t *s)
{
	if (s == NULL)
		return;
	if (s->mainq != NULL) {
		rd_kafka_queue_io_event_enable(s->mainq, -1, NULL, 0);
		rd_kafka_queue_destroy(s->mainq);
	}
	for (int i = 0; i < 2; i++)
		if (s->wake[i] >= 0)
			close(s->wake[i]);
	/* Trackers still here were abandoned.  One whose messages are still
	 * unreported is referenced by the producer (destroyed after this):
	 * it is leaked rather than freed under librdkafka's feet. */
	size_t leaked = 0;
	while (s->trackers != NULL) {
		tracker_t *t = s->trackers;
		tracker_unlink(s, t);
		if (t->d.pending <= 0)
			free(t);
		else
			leaked++;
	}
	if (leaked > 0)
		id_log_warn(COMPONENT,
		            "%zu deliveries still unreported by Kafka at shutdown",
		            leaked);
	for (size_t i = 0; i < s->ncodecs; i++)
		codec_destroy(s->codecs[i]);
	free(s->codecs);
	if (s->tls_key != NULL)
		memset(s->tls_key, 0, strlen(s->tls_key));
	free(s->tls_key);
	free(s->tls_cert);
	free(s->topic);
	id_hmap_fini(&s->ob_emps);
	pthread_cond_destroy(&s->ob_cond);
	pthread_mutex_destroy(&s->ob_mu);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->codec_mu);
	free(s);
}

int http_server_start(const http_server_opts_t *opts, http_server_t **out, id_err_t *err)
{
	int rc = 0;
	http_server_t *s = NULL;
	*out = NULL;
	if (opts == NULL || opts->producer == NULL || opts->dedupe == NULL ||
	    opts->topic == NULL)
		return id_err_set(
		    err, ID_EINVALID,
		    "ingest http: producer, dedupe store and topic are required");
	if ((opts->tls_cert_file == NULL) != (opts->tls_key_file == NULL))
		return id_err_set(
		    err, ID_EINVALID,
		    "ingest http: TLS needs both a certificate and a key file");
	if (opts->outbox != NULL &&
	    (opts->store == NULL || opts->outbox_producer == NULL))
		return id_err_set(err, ID_EINVALID,
		                  "ingest http: the outbox needs its store and producer");
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	s->o = *opts;
	s->wake[0] = s->wake[1] = -1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->codec_mu, NULL);
	pthread_mutex_init(&s->ob_mu, NULL);
	pthread_cond_init(&s->ob_cond, NULL);
	id_hmap_init(&s->ob_emps);
	atomic_store(&s->kafka_ok, true);
	s->started_ms = wall_ms();
	if (s->o.threads == 0)
		s->o.threads = DEFAULT_THREADS;
	if (s->o.max_body_bytes == 0)
		s->o.max_body_bytes = DEFAULT_MAX_BODY;
	if (s->o.timestamp_window_s == 0)
		s->o.timestamp_window_s = DEFAULT_WINDOW_S;
	if (s->o.publish_timeout_ms <= 0)
		s->o.publish_timeout_ms = DEFAULT_PUBLISH_MS;
	if (s->o.retry_after_s == 0)
		s->o.retry_after_s = DEFAULT_RETRY_AFTER;
	if ((s->topic = strdup(opts->topic)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto fail;
	}
	/* The poller sleeps on this pipe; the producer's main queue writes to
	 * it whenever a delivery report arrives. */
	if (pipe(s->wake) != 0 || fcntl(s->wake[0], F_SETFL, O_NONBLOCK) != 0 ||
	    fcntl(s->wake[1], F_SETFL, O_NONBLOCK) != 0) {
		rc = id_err_set(err, ID_EIO, "ingest http: pipe: %s", strerror(errno));
		goto fail;
	}
	s->mainq = rd_kafka_queue_get_main(s->o.producer);
	rd_kafka_queue_io_event_enable(s->mainq, s->wake[1], "k", 1);

	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	                 MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (opts->tls_cert_file != NULL) {
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
			rc = id_err_set(
			    err, ID_ECONFIG,
			    "ingest http: this libmicrohttpd has no TLS support");
			goto fail;
		}
		if ((rc = read_file(opts->tls_cert_file, &s->tls_cert, err)) != 0 ||
		    (rc = read_file(opts->tls_key_file, &s->tls_key, err)) != 0)
			goto fail;
		flags |= MHD_USE_TLS;
	}
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(opts->port);
	const char *addr = opts->bind_addr != NULL ? opts->bind_addr : "127.0.0.1";
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		rc = id_err_set(
		    err, ID_EINVALID,
		    "ingest http: listen address \"%s\" is not an IPv4 address", addr);
		goto fail;
	}
	struct MHD_OptionItem tls_opts[] = {
	    {MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert},
	    {MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key},
	    {MHD_OPTION_END, 0, NULL},
	};
	s->mhd = MHD_start_daemon(
	    flags, opts->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
	    MHD_OPTION_THREAD_POOL_SIZE, s->o.threads, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_EXTERNAL_LOGGER,
	    mhd_log, s, MHD_OPTION_ARRAY, s->tls_cert != NULL ? tls_opts : tls_opts + 2,
	    MHD_OPTION_END);
	if (s->mhd == NULL) {
		rc = id_err_set(
		    err, ID_EIO,
		    "ingest http: cannot listen on %s:%u (address in use, or a "
		    "bad TLS certificate/key)",
		    addr, opts->port);
		goto fail;
	}
	const union MHD_DaemonInfo *di =
	    MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
	s->port = di != NULL ? di->port : opts->port;
	if (pthread_create(&s->poller, NULL, poller_main, s) != 0) {
		rc = id_err_set(err, ID_EIO,
		                "ingest http: cannot start the poller thread");
		goto fail;
	}
	s->poller_started = true;
	if (s->o.outbox != NULL) {
		emps_rebuild(s);
		if (pthread_create(&s->ob_thread, NULL, outbox_main, s) != 0) {
			rc = id_err_set(err, ID_EIO,
			                "ingest http: cannot start the outbox worker");
			goto fail;
		}
		s->ob_started = true;
		if (outbox_depth(s->o.outbox) > 0)
			id_log_info(COMPONENT, "%zu deliveries wait in the outbox",
			            outbox_depth(s->o.outbox));
	}
	id_log_info(COMPONENT, "listening on %s://%s:%u with %u threads",
	            s->tls_cert != NULL ? "https" : "http", addr, s->port, s->o.threads);
	*out = s;
	return 0;
fail:
	if (s->poller_started) {
		atomic_store(&s->poller_stop, true);
		pthread_join(s->poller, NULL);
	}
	if (s->mhd != NULL)
		MHD_stop_daemon(s->mhd);
	server_free(s);
	return rc;
}

uint16_t http_server_port(const http_server_t *s)
{
	return s->port;
}

void http_server_get_stats(const http_server_t *s, http_server_stats_t *out)
{
	memset(out, 0, sizeof(*out));
	http_server_t *m = (http_server_t *)s; /* atomics are read-only here */
	for (int src = 0; src <= SRC_UNKNOWN; src++) {
		for (int o = 0; o < OUT_COUNT; o++) {
			long v = atomic_load(&m->requests[src][o]);
			if (o == OUT_ACCEPTED)
				out->accepted += v;
			else if (o == OUT_IGNORED)
				out->ignored += v;
			else if (o == OUT_QUEUED)
				out->queued += v;
			else if (webhook_refusal_status(o) >= 500)
				out->failed += v;
			else
				out->refused += v;
		}
		if (src < WEBHOOK_SOURCE_COUNT)
			out->published += atomic_load(&m->published[src]);
	}
}

void http_server_stop(http_server_t *s)
{
	if (s == NULL)
		return;
	atomic_store(&s->stopping, true);
	/* Stop accepting; requests on open connections get 503 from now on. */
	MHD_socket lfd = MHD_quiesce_daemon(s->mhd);
	if (lfd != MHD_INVALID_SOCKET)
		close(lfd);
	/* Let every published delivery get its answer. */
	int64_t until = mono_ms() + s->o.publish_timeout_ms + ABANDON_GRACE_MS + 1000;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		bool busy = false;
		for (tracker_t *t = s->trackers; t != NULL; t = t->next)
			busy |= t->rq != NULL;
		pthread_mutex_unlock(&s->mu);
		busy |= atomic_load(&s->suspended) > 0;
		if (!busy || mono_ms() > until)
			break;
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	atomic_store(&s->poller_stop, true);
	if (s->poller_started)
		pthread_join(s->poller, NULL);
	if (s->ob_started) {
		pthread_mutex_lock(&s->ob_mu);
		atomic_store(&s->ob_stop, true);
		pthread_cond_signal(&s->ob_cond);
		pthread_mutex_unlock(&s->ob_mu);
		pthread_join(s->ob_thread, NULL);
	}
	MHD_stop_daemon(s->mhd);
	/* Serve the last reports so no tracker is referenced by librdkafka. */
	rd_kafka_flush(s->o.producer, (int)s->o.publish_timeout_ms);
	pthread_mutex_lock(&s->mu);
	rd_kafka_poll(s->o.producer, 0);
	pthread_mutex_unlock(&s->mu);
	server_free(s);
}
