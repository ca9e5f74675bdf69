/*
 * webhook_load.c — load generator for `idstream ingest http`, and the raw
 * Kafka produce rate of the same events, for `make bench`.
 *
 *   webhook_load URL [--secret-file FILE] [--requests N] [--concurrency C]
 *                [--employees M]
 *   webhook_load --raw-kafka BROKERS --topic TOPIC [--requests N]
 *                [--concurrency C] [--employees M]
 *
 * HTTP mode sends signed generic webhooks (each with its own delivery id)
 * over keep-alive connections with libcurl's multi interface, C requests in
 * flight, and prints one line (key=value): other statuses, the generator's
 * own CPU time (user + system, ms), sent, ok (2xx), elapsed seconds, rate (2xx per
 * second), p50/p90/p99/max response time in milliseconds.  A 2xx from the server means
 * Kafka acknowledged the event (acks=all), so the rate is the durable rate.  The secret
 * comes from FILE (first line) or from IDSTREAM_WEBHOOK_GENERIC_SECRET, never from argv.
 *
 * Raw mode encodes the very events the server would publish for the same
 * deliveries (webhook_parse + codec_encode_event, before the clock starts)
 * and produces them to TOPIC, keyed by employee id, with plain librdkafka:
 * idempotent producer, acks=all, linger.ms=1 (what the server uses).  Two
 * runs, one line each:
 *   raw_unbounded  every message produced at once, then flush: the ceiling
 *   raw_window     at most C messages unacknowledged, the next one produced
 *                  when one is acknowledged — the shape of the HTTP run (C
 *                  requests each waiting for its acknowledgement); with
 *                  produce → acknowledgement percentiles.
 *
 * Deliveries alternate between HIRE and UPDATE events for M employees.
 * Threading: single-threaded; concurrency comes from the multi handle (HTTP)
 * or librdkafka's own threads (raw).  Exit 0 when every request got a 2xx
 * (every message was acknowledged), else 1.
 */
#include <curl/curl.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "ingest/webhook.h"
#include "schemas/codec.h"

typedef struct slot {
	CURL *h;
	struct curl_slist *hdrs;
	char body[512];
	struct timespec t0;
} slot_t;

typedef struct load_opts {
	const char *url;
	const char *secret_file;
	const char *brokers;
	const char *topic;
	long requests, conc, employees;
} load_opts_t;

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static size_t discard(char *p, size_t size, size_t n, void *opaque)
{
	(void)p;
	(void)opaque;
	return size * n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The body of delivery number seq (the same in both modes). */
static void body_make(char *buf, size_t cap, long seq, long employees)
{
	long e = seq % employees;
	if (seq / employees % 2 == 0)
		snprintf(
		    buf, cap,
		    "{\"employee_id\":\"L%ld\",\"type\":\"HIRE\",\"attributes\":{"
		    "\"first_name\":\"Load\",\"last_name\":\"Test%ld\",\"department\":"
		    "\"Bench\",\"title\":\"T%ld\"}}",
		    e, e, seq);
	else
		snprintf(buf, cap,
		         "{\"employee_id\":\"L%ld\",\"type\":\"UPDATE\",\"attributes\":{"
		         "\"title\":\"T%ld\"}}",
		         e, seq);
}

/* The secret: first line of file, else the environment.  Malloc'd. */
static char *secret_load(const char *file)
{
	char line[1024];
	if (file == NULL) {
		const char *v = getenv("IDSTREAM_WEBHOOK_GENERIC_SECRET");
		return v != NULL && *v ? strdup(v) : NULL;
	}
	FILE *f = fopen(file, "r");
	if (f == NULL)
		return NULL;
	if (fgets(line, sizeof(line), f) == NULL)
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	char *s = line[0] ? strdup(line) : NULL;
	memset(line, 0, sizeof(line));
	return s;
}

/* Prepares slot for delivery number seq. */
static int slot_arm(slot_t *s, const char *url, const char *secret, long seq,
                    long employees, long run)
{
	body_make(s->body, sizeof(s->body), seq, employees);
	char ts[32], hdr[256], *sig = NULL;
	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	if (webhook_sign(WEBHOOK_GENERIC, secret, ts, s->body, strlen(s->body), &sig) !=
	    0)
		return -1;
	curl_slist_free_all(s->hdrs);
	s->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	snprintf(hdr, sizeof(hdr), "X-Idstream-Timestamp: %s", ts);
	s->hdrs = curl_slist_append(s->hdrs, hdr);
	snprintf(hdr, sizeof(hdr), "X-Idstream-Delivery: load-%ld-%ld", run, seq);
	s->hdrs = curl_slist_append(s->hdrs, hdr);
	snprintf(hdr, sizeof(hdr), "X-Idstream-Signature: %s", sig);
	s->hdrs = curl_slist_append(s->hdrs, hdr);
	free(sig);
	curl_easy_setopt(s->h, CURLOPT_URL, url);
	curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, s->hdrs);
	curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->body);
	curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE, (long)strlen(s->body));
	curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
	curl_easy_setopt(s->h, CURLOPT_TCP_NODELAY, 1L);
	clock_gettime(CLOCK_MONOTONIC, &s->t0);
	return 0;
}

static void print_lat(const char *tag, long n, long ok, double elapsed_ms, double *lat,
                      long nlat)
{
	printf("%ssent=%ld ok=%ld elapsed_s=%.2f rate_per_s=%.0f", tag, n, ok,
	       elapsed_ms / 1e3, elapsed_ms > 0 ? (double)ok * 1e3 / elapsed_ms : 0.0);
	if (nlat > 0) {
		qsort(lat, (size_t)nlat, sizeof(*lat), cmp_double);
		printf(" p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f", lat[nlat / 2],
		       lat[nlat * 90 / 100], lat[nlat * 99 / 100], lat[nlat - 1]);
	}
	printf("\n");
}

static int http_main(const load_opts_t *o, const char *secret)
{
	long requests = o->requests, conc = o->conc;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURLM *m = curl_multi_init();
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, conc);
	slot_t *slots = calloc((size_t)conc, sizeof(*slots));
	double *lat = calloc((size_t)requests, sizeof(*lat));
	/* Delivery ids must be unique across runs, also two in one second. */
	long run = (long)time(NULL) * 100000 + (long)getpid() % 100000, sent = 0,
	     done = 0, ok = 0, other = 0, first_bad = 0;
	if (slots == NULL || lat == NULL)
		return 1;
	double t0 = now_ms();
	for (long i = 0; i < conc; i++) {
		slots[i].h = curl_easy_init();
		if (slot_arm(&slots[i], o->url, secret, sent++, o->employees, run) != 0)
			return 1;
		curl_multi_add_handle(m, slots[i].h);
	}
	while (done < requests) {
		int running = 0;
		curl_multi_perform(m, &running);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			slot_t *s = NULL;
			long code = 0;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
			                  (char **)&s);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE,
			                  &code);
			struct timespec t;
			clock_gettime(CLOCK_MONOTONIC, &t);
			lat[done++] = (double)(t.tv_sec - s->t0.tv_sec) * 1e3 +
			              (double)(t.tv_nsec - s->t0.tv_nsec) / 1e6;
			if (code >= 200 && code < 300)
				ok++;
			else if (other++ == 0)
				first_bad = code;
			curl_multi_remove_handle(m, s->h);
			if (sent < requests) {
				slot_arm(s, o->url, secret, sent++, o->employees, run);
				curl_multi_add_handle(m, s->h);
			}
		}
		if (done < requests)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	double elapsed = now_ms() - t0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("other=%ld first_other_status=%ld cpu_ms=%.0f ", other, first_bad,
	       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3);
	print_lat("", done, ok, elapsed, lat, done);
	for (long i = 0; i < conc; i++) {
		curl_easy_cleanup(slots[i].h);
		curl_slist_free_all(slots[i].hdrs);
	}
	free(slots);
	free(lat);
	curl_multi_cleanup(m);
	curl_global_cleanup();
	return other == 0 ? 0 : 1;
}

/* ---- raw Kafka ------------------------------------------------------------------ */

typedef struct raw_msg {
	char key[32];
	id_buf_t val;
} raw_msg_t;

typedef struct raw_run {
	double *t_sent; /* produce time of message i */
	double *lat;    /* acknowledgement latencies, in order of arrival */
	long acked, failed, inflight;
} raw_run_t;

static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	raw_run_t *r = opaque;
	long i = (long)(intptr_t)m->_private;
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		if (r->failed++ == 0)
			fprintf(stderr, "webhook_load: delivery failed: %s\n",
			        rd_kafka_err2str(m->err));
	} else {
		r->lat[r->acked++] = now_ms() - r->t_sent[i];
	}
	r->inflight--;
}

static rd_kafka_t *raw_producer(const char *brokers, raw_run_t *r)
{
	char errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	const char *kv[][2] = {{"bootstrap.servers", brokers},
	                       {"enable.idempotence", "true"},
	                       {"acks", "all"},
	                       {"linger.ms", "1"},
	                       {"partitioner", "murmur2_random"},
	                       {"queue.buffering.max.messages", "1000000"}};
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)) !=
		    RD_KAFKA_CONF_OK) {
			fprintf(stderr, "webhook_load: %s: %s\n", kv[i][0], errstr);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
	rd_kafka_conf_set_dr_msg_cb(conf, raw_dr);
	rd_kafka_conf_set_opaque(conf, r);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL) {
		fprintf(stderr, "webhook_load: producer: %s\n", errstr);
		rd_kafka_conf_destroy(conf);
	}
	return rk;
}

static int raw_produce(rd_kafka_t *rk, const char *topic, raw_msg_t *msg, long i,
                       raw_run_t *r)
{
	for (;;) {
		r->t_sent[i] = now_ms();
		rd_kafka_resp_err_t e = rd_kafka_producev(
		    rk, RD_KAFKA_V_TOPIC(topic),
		    RD_KAFKA_V_KEY(msg->key, strlen(msg->key)),
		    RD_KAFKA_V_VALUE(msg->val.data, msg->val.len),
		    RD_KAFKA_V_OPAQUE((void *)(intptr_t)i), RD_KAFKA_V_END);
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
			r->inflight++;
			return 0;
		}
		if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			fprintf(stderr, "webhook_load: produce: %s\n",
			        rd_kafka_err2str(e));
			return -1;
		}
		rd_kafka_poll(rk, 10);
	}
}

/* One run: window <= 0 produces everything at once, then flushes. */
static int raw_run(const load_opts_t *o, raw_msg_t *msgs, long window, const char *tag)
{
	long n = o->requests;
	raw_run_t r = {0};
	r.t_sent = calloc((size_t)n, sizeof(double));
	r.lat = calloc((size_t)n, sizeof(double));
	rd_kafka_t *rk = r.t_sent && r.lat ? raw_producer(o->brokers, &r) : NULL;
	int rc = 1;
	if (rk == NULL)
		goto out;
	/* Metadata and the producer id first, so the clock measures sending:
	 * one acknowledged message (not counted). */
	if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(o->topic),
	                      RD_KAFKA_V_KEY(msgs[0].key, strlen(msgs[0].key)),
	                      RD_KAFKA_V_VALUE(msgs[0].val.data, msgs[0].val.len),
	                      RD_KAFKA_V_OPAQUE((void *)(intptr_t)0),
	                      RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR)
		goto out;
	r.inflight++;
	rd_kafka_flush(rk, 30000);
	if (r.acked != 1)
		goto out;
	r.acked = 0;
	double t0 = now_ms();
	long sent = 0;
	if (window <= 0) {
		for (; sent < n; sent++)
			if (raw_produce(rk, o->topic, &msgs[sent], sent, &r) != 0)
				goto out;
		rd_kafka_flush(rk, 60000);
	} else {
		while (r.acked + r.failed < n) {
			while (sent < n && r.inflight < window) {
				if (raw_produce(rk, o->topic, &msgs[sent], sent, &r) != 0)
					goto out;
				sent++;
			}
			rd_kafka_poll(rk, 1);
		}
	}
	double elapsed = now_ms() - t0;
	print_lat(tag, n, r.acked, elapsed, r.lat, window > 0 ? r.acked : 0);
	rc = r.acked == n ? 0 : 1;
out:
	if (rk != NULL) {
		rd_kafka_flush(rk, 10000);
		rd_kafka_destroy(rk);
	}
	free(r.t_sent);
	free(r.lat);
	return rc;
}

static int raw_main(const load_opts_t *o)
{
	long n = o->requests;
	raw_msg_t *msgs = calloc((size_t)n, sizeof(*msgs));
	codec_t *codec = codec_create(NULL);
	int rc = 1;
	if (msgs == NULL || codec == NULL)
		goto out;
	/* The server's path for each delivery, done up front. */
	int64_t now = (int64_t)time(NULL) * 1000;
	for (long i = 0; i < n; i++) {
		char body[512], delivery[64];
		webhook_delivery_t dl;
		webhook_refusal_t why;
		id_err_t err = {0};
		body_make(body, sizeof(body), i, o->employees);
		snprintf(delivery, sizeof(delivery), "raw-%ld-%ld", (long)getpid(), i);
		webhook_delivery_init(&dl);
		if (webhook_parse(WEBHOOK_GENERIC, body, strlen(body), delivery, now, &dl,
		                  &why, &err) != 0 ||
		    dl.nevents != 1 ||
		    codec_encode_event(codec, &dl.events[0].ev, &msgs[i].val, &err) !=
		        0) {
			fprintf(stderr, "webhook_load: event %ld: %s\n", i, err.msg);
			webhook_delivery_fini(&dl);
			goto out;
		}
		snprintf(msgs[i].key, sizeof(msgs[i].key), "%s",
		         dl.events[0].ev.employee_id);
		webhook_delivery_fini(&dl);
	}
	rc = raw_run(o, msgs, 0, "raw_unbounded: ") |
	     raw_run(o, msgs, o->conc, "raw_window: ");
out:
	if (msgs != NULL)
		for (long i = 0; i < n; i++)
			id_buf_fini(&msgs[i].val);
	free(msgs);
	codec_destroy(codec);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: webhook_load URL [--secret-file FILE] [--requests N] "
	        "[--concurrency C] [--employees M]\n"
	        "       webhook_load --raw-kafka BROKERS --topic TOPIC [--requests N] "
	        "[--concurrency C] [--employees M]\n");
}

int main(int argc, char **argv)
{
	load_opts_t o = {.requests = 20000, .conc = 64, .employees = 1000};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-') {
			if (o.url != NULL) {
				usage();
				return 64;
			}
			o.url = a;
			continue;
		}
		if (v == NULL) {
			usage();
			return 64;
		}
		i++;
		if (strcmp(a, "--requests") == 0)
			o.requests = strtol(v, NULL, 10);
		else if (strcmp(a, "--concurrency") == 0)
			o.conc = strtol(v, NULL, 10);
		else if (strcmp(a, "--employees") == 0)
			o.employees = strtol(v, NULL, 10);
		else if (strcmp(a, "--secret-file") == 0)
			o.secret_file = v;
		else if (strcmp(a, "--raw-kafka") == 0)
			o.brokers = v;
		else if (strcmp(a, "--topic") == 0)
			o.topic = v;
		else {
			usage();
			return 64;
		}
	}
	if (o.requests < 1 || o.conc < 1 || o.employees < 1 ||
	    (o.url == NULL) == (o.brokers == NULL) ||
	    (o.brokers != NULL && o.topic == NULL)) {
		usage();
		return 64;
	}
	if (o.conc > o.requests)
		o.conc = o.requests;
	if (o.brokers != NULL)
		return raw_main(&o);
	char *secret = secret_load(o.secret_file);
	if (secret == NULL) {
		fprintf(stderr, "webhook_load: no secret: give --secret-file FILE or set "
		                "IDSTREAM_WEBHOOK_GENERIC_SECRET\n");
		return 64;
	}
	int rc = http_main(&o, secret);
	memset(secret, 0, strlen(secret));
	free(secret);
	return rc;
}
