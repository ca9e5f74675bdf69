/*
 * e2e_latency.c — end-to-end latency of the real-time path, for `make bench`:
 * a signed generic webhook to `idstream ingest http` → hr.events → processor
 * → identity.desired → ldap sink → the entry in slapd.
 *
 *   e2e_latency URL --secret-file FILE --ldap-url URL --bind-dn DN
 *               --password-file FILE --people-dn DN
 *               [--brokers HOST:PORT --desired-topic TOPIC]
 *               [--changes N] [--concurrency C] [--warmup W]
 *               [--poll-us US] [--timeout-ms MS] [--fetch-wait-ms MS]
 *               [--interval-ms MS]
 *
 * The employees are the entries already under --people-dn (employeeNumber
 * = HR employee id), sorted by id; every change goes to a different one
 * while there are enough (then they are reused in turn).
 * Each change is an UPDATE of title to a value no entry has
 * ("E2E-<run>-<seq>"), sent as a signed generic webhook (docs/WEBHOOKS.md);
 * once the server answers 2xx (the event is durable in Kafka), the worker
 * polls the entry — a base-object search of its DN for title, every
 * --poll-us microseconds (default 1000) — until the new value is there, or
 * --timeout-ms (default 10000) passes (a miss).  So the measured time is from
 * the 2xx to a search that sees the value: it over-states the true time by
 * at most one poll interval plus one search round trip.
 *
 * With --brokers, a read_committed consumer (no group; all partitions of
 * --desired-topic assigned from their current ends, fetch.wait.max.ms =
 * --fetch-wait-ms, default 5) notes when each change's desired identity
 * becomes readable (its payload holds the new title), which splits the time:
 *   http       send → 2xx (parse, verify, produce, Kafka acks=all)
 *   processor  2xx → desired identity committed and readable, itself split
 *              at the record's CreateTime (when the processor produced it;
 *              wall clock, 1 ms steps) into consume + fold and the
 *              transaction's commit
 *   sink       desired readable → value seen in slapd
 *
 * W warm-up changes (default 20) go first, one at a time with a 60 s bound
 * (consumer groups may still be joining), and are not counted.  Then the N
 * measured changes (default 1000) run on C worker threads (default 1), each
 * with its own keep-alive HTTP connection and LDAP connection, one change at
 * a time per worker (closed loop: at most C changes in flight).  With
 * --interval-ms, change k is not sent before k * MS after the start (open
 * loop at a fixed rate, as independent HR changes arrive, still at most C
 * in flight).
 *
 * Output: the settings, then percentile lines per stage, then one line
 * "summary: key=value ..." for scripts.  Exit 0 when every measured change
 * was accepted and seen, 1 otherwise (figures are printed either way), 2 on
 * a setup error.  Secrets come from files (or IDSTREAM_WEBHOOK_GENERIC_SECRET
 * for the webhook secret), never from argv.
 *
 * Threading: C workers (libcurl easy handle and LDAP handle each), one
 * consumer thread that alone writes t_desired[], w_desired[] and
 * w_created[], the main thread that reads them after joining everything.  The next change
 * number is an atomic counter.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <ldap.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest/webhook.h"

#define WARMUP_TIMEOUT_MS 60000

typedef struct emp {
	char *id;
	char *dn;
} emp_t;

typedef struct e2e_opts {
	const char *url, *secret_file, *ldap_url, *bind_dn, *password_file, *people_dn;
	const char *brokers, *desired_topic;
	long changes, conc, warmup, poll_us, timeout_ms, fetch_wait_ms, interval_ms;
} e2e_opts_t;

/* Timeline of one change, milliseconds on CLOCK_MONOTONIC (0: not reached). */
typedef struct change {
	double t_send, t_2xx, t_ldap;
	double w_2xx; /* wall clock of t_2xx, ms since the epoch */
	long status;
} change_t;

typedef struct shared {
	const e2e_opts_t *o;
	char *secret;
	char *password;
	emp_t *emps;
	size_t nemps;
	char run[32];
	change_t *ch;       /* warmup + changes entries */
	double *t_desired;  /* written by the consumer thread only */
	double *w_desired;  /* the same instant on the wall clock */
	double *w_created;  /* the desired record's CreateTime (wall, ms) */
	atomic_long next;   /* next change number */
	long end;           /* one past the last change number of the phase */
	atomic_bool stop;   /* consumer stop */
	atomic_long seen;   /* changes whose desired identity was seen */
	atomic_bool broken; /* a setup failure in a worker */
	double t_start;     /* start of the measured phase (monotonic ms) */
} shared_t;

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static double wall_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int cmp_emp(const void *a, const void *b)
{
	return strcmp(((const emp_t *)a)->id, ((const emp_t *)b)->id);
}

static size_t discard(char *p, size_t size, size_t n, void *opaque)
{
	(void)p;
	(void)opaque;
	return size * n;
}

/* First line of file (malloc'd), or NULL. */
static char *file_line(const char *file)
{
	char line[1024];
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

static void secret_free(char *s)
{
	if (s == NULL)
		return;
	memset(s, 0, strlen(s));
	free(s);
}

static void title_of(const shared_t *sh, long seq, char *buf, size_t cap)
{
	snprintf(buf, cap, "E2E-%s-%ld", sh->run, seq);
}

/* ---- LDAP ----------------------------------------------------------------------- */

static LDAP *ldap_open(const shared_t *sh)
{
	LDAP *ld = NULL;
	int v3 = LDAP_VERSION3;
	struct berval cred = {strlen(sh->password), sh->password};
	if (ldap_initialize(&ld, sh->o->ldap_url) != LDAP_SUCCESS)
		return NULL;
	ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
	int rc = ldap_sasl_bind_s(ld, sh->o->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL,
	                          NULL);
	if (rc != LDAP_SUCCESS) {
		fprintf(stderr, "e2e_latency: bind to %s as %s: %s\n", sh->o->ldap_url,
		        sh->o->bind_dn, ldap_err2string(rc));
		ldap_unbind_ext_s(ld, NULL, NULL);
		return NULL;
	}
	return ld;
}

/* The entries under people_dn that carry an employeeNumber, sorted by it. */
static int emps_load(shared_t *sh, LDAP *ld)
{
	char *attrs[] = {"employeeNumber", NULL};
	LDAPMessage *res = NULL;
	struct timeval tv = {60, 0};
	int rc = ldap_search_ext_s(ld, sh->o->people_dn, LDAP_SCOPE_SUBTREE,
	                           "(employeeNumber=*)", attrs, 0, NULL, NULL, &tv,
	                           LDAP_NO_LIMIT, &res);
	if (rc != LDAP_SUCCESS) {
		fprintf(stderr, "e2e_latency: search under %s: %s\n", sh->o->people_dn,
		        ldap_err2string(rc));
		ldap_msgfree(res);
		return -1;
	}
	int n = ldap_count_entries(ld, res);
	sh->emps = calloc((size_t)(n > 0 ? n : 1), sizeof(*sh->emps));
	if (sh->emps == NULL) {
		ldap_msgfree(res);
		return -1;
	}
	for (LDAPMessage *e = ldap_first_entry(ld, res); e != NULL;
	     e = ldap_next_entry(ld, e)) {
		struct berval **v = ldap_get_values_len(ld, e, "employeeNumber");
		char *dn = ldap_get_dn(ld, e);
		if (v != NULL && v[0] != NULL && dn != NULL) {
			emp_t *x = &sh->emps[sh->nemps++];
			x->id = strndup(v[0]->bv_val, v[0]->bv_len);
			x->dn = strdup(dn);
		}
		ldap_value_free_len(v);
		ldap_memfree(dn);
	}
	ldap_msgfree(res);
	qsort(sh->emps, sh->nemps, sizeof(*sh->emps), cmp_emp);
	return 0;
}

/* 1 when the entry's title is want, 0 when not (yet), -1 on an error. */
static int ldap_has_title(LDAP *ld, const char *dn, const char *want)
{
	char *attrs[] = {"title", NULL};
	LDAPMessage *res = NULL;
	struct timeval tv = {10, 0};
	int rc = ldap_search_ext_s(ld, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
	                           NULL, NULL, &tv, 1, &res);
	if (rc != LDAP_SUCCESS) {
		ldap_msgfree(res);
		return rc == LDAP_NO_SUCH_OBJECT ? 0 : -1;
	}
	int found = 0;
	LDAPMessage *e = ldap_first_entry(ld, res);
	struct berval **v = e != NULL ? ldap_get_values_len(ld, e, "title") : NULL;
	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		if (v[i]->bv_len == strlen(want) &&
		    memcmp(v[i]->bv_val, want, v[i]->bv_len) == 0)
			found = 1;
	ldap_value_free_len(v);
	ldap_msgfree(res);
	return found;
}

/* ---- one change ----------------------------------------------------------------- */

/* Sends change seq and waits for it in slapd; fills sh->ch[seq]. */
static void change_run(shared_t *sh, CURL *h, LDAP *ld, long seq, long timeout_ms)
{
	change_t *c = &sh->ch[seq];
	const emp_t *e = &sh->emps[(size_t)seq % sh->nemps];
	char title[96], ts[32], hdr[512], *sig = NULL, *body = NULL;
	struct curl_slist *hdrs = NULL;
	title_of(sh, seq, title, sizeof(title));
	json_t *j = json_pack("{s:s, s:s, s:{s:s}}", "employee_id", e->id, "type",
	                      "UPDATE", "attributes", "title", title);
	body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	if (body == NULL || webhook_sign(WEBHOOK_GENERIC, sh->secret, ts, body,
	                                 strlen(body), &sig) != 0) {
		atomic_store(&sh->broken, true);
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	snprintf(hdr, sizeof(hdr), "X-Idstream-Timestamp: %s", ts);
	hdrs = curl_slist_append(hdrs, hdr);
	snprintf(hdr, sizeof(hdr), "X-Idstream-Delivery: e2e-%s-%ld", sh->run, seq);
	hdrs = curl_slist_append(hdrs, hdr);
	snprintf(hdr, sizeof(hdr), "X-Idstream-Signature: %s", sig);
	hdrs = curl_slist_append(hdrs, hdr);
	curl_easy_setopt(h, CURLOPT_URL, sh->o->url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	c->t_send = now_ms();
	CURLcode cc = curl_easy_perform(h);
	double t = now_ms();
	c->w_2xx = wall_ms();
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
	if (cc != CURLE_OK || c->status < 200 || c->status > 299) {
		if (cc != CURLE_OK)
			c->status = -1;
		goto out;
	}
	c->t_2xx = t;
	struct timespec pause = {sh->o->poll_us / 1000000,
	                         (sh->o->poll_us % 1000000) * 1000};
	for (;;) {
		int r = ldap_has_title(ld, e->dn, title);
		t = now_ms();
		if (r == 1) {
			c->t_ldap = t;
			break;
		}
		if (r < 0 || t - c->t_2xx > (double)timeout_ms)
			break;
		nanosleep(&pause, NULL);
	}
out:
	curl_slist_free_all(hdrs);
	free(sig);
	free(body);
}

typedef struct worker {
	shared_t *sh;
	pthread_t th;
} worker_t;

static void *worker_main(void *arg)
{
	worker_t *w = arg;
	shared_t *sh = w->sh;
	CURL *h = curl_easy_init();
	LDAP *ld = ldap_open(sh);
	if (h == NULL || ld == NULL) {
		atomic_store(&sh->broken, true);
		goto out;
	}
	for (;;) {
		long seq = atomic_fetch_add(&sh->next, 1);
		if (seq >= sh->end || atomic_load(&sh->broken))
			break;
		/* Paced: change k of the phase is due interval * k after its start,
		 * whether or not the earlier ones are through (open loop). */
		double due = sh->t_start +
		             (double)((seq - sh->o->warmup) * sh->o->interval_ms),
		       wait = due - now_ms();
		if (wait > 0) {
			struct timespec ts = {
			    (time_t)(wait / 1e3),
			    (long)((wait - (double)(long)(wait / 1e3) * 1e3) * 1e6)};
			nanosleep(&ts, NULL);
		}
		change_run(sh, h, ld, seq, sh->o->timeout_ms);
	}
out:
	if (ld != NULL)
		ldap_unbind_ext_s(ld, NULL, NULL);
	curl_easy_cleanup(h);
	return NULL;
}

/* ---- the desired-identity watcher ----------------------------------------------- */

typedef struct watcher {
	shared_t *sh;
	rd_kafka_t *rk;
	pthread_t th;
	bool started;
} watcher_t;

/* Notes every change number whose title appears in the payload: when it
 * became readable (t, monotonic; w, wall) and when the processor produced
 * it (created, the record's CreateTime, wall ms; <= 0 when unknown). */
static void watch_payload(shared_t *sh, const unsigned char *p, size_t len, double t,
                          double w, double created)
{
	char marker[64];
	long total = sh->o->warmup + sh->o->changes;
	int ml = snprintf(marker, sizeof(marker), "E2E-%s-", sh->run);
	for (size_t i = 0; ml > 0 && i + (size_t)ml < len; i++) {
		if (p[i] != 'E' || memcmp(p + i, marker, (size_t)ml) != 0)
			continue;
		long seq = 0;
		size_t k = i + (size_t)ml;
		while (k < len && p[k] >= '0' && p[k] <= '9')
			seq = seq * 10 + (p[k++] - '0');
		if (k > i + (size_t)ml && seq < total && sh->t_desired[seq] == 0) {
			sh->t_desired[seq] = t;
			sh->w_desired[seq] = w;
			sh->w_created[seq] = created;
			atomic_fetch_add(&sh->seen, 1);
		}
		i = k - 1;
	}
}

static void *watcher_main(void *arg)
{
	watcher_t *w = arg;
	while (!atomic_load(&w->sh->stop)) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(w->rk, 100);
		if (m == NULL)
			continue;
		double t = now_ms(), wall = wall_ms();
		if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->payload != NULL) {
			rd_kafka_timestamp_type_t tt;
			int64_t ts = rd_kafka_message_timestamp(m, &tt);
			watch_payload(w->sh, m->payload, m->len, t, wall,
			              tt == RD_KAFKA_TIMESTAMP_CREATE_TIME ? (double)ts
			                                                   : 0.0);
		} else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
			fprintf(stderr, "e2e_latency: consumer: %s\n",
			        rd_kafka_message_errstr(m));
		rd_kafka_message_destroy(m);
	}
	return NULL;
}

/* Assigns every partition of the desired topic from its current end (as
 * explicit offsets, so nothing produced after this returns is missed). */
static int watcher_start(watcher_t *w, shared_t *sh)
{
	const e2e_opts_t *o = sh->o;
	char errstr[512], fw[32];
	snprintf(fw, sizeof(fw), "%ld", o->fetch_wait_ms);
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	const char *kv[][2] = {
	    {"bootstrap.servers", o->brokers},     {"group.id", "e2e-latency-unused"},
	    {"isolation.level", "read_committed"}, {"enable.auto.commit", "false"},
	    {"enable.auto.offset.store", "false"}, {"fetch.wait.max.ms", fw}};
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)) !=
		    RD_KAFKA_CONF_OK) {
			fprintf(stderr, "e2e_latency: %s: %s\n", kv[i][0], errstr);
			rd_kafka_conf_destroy(conf);
			return -1;
		}
	w->sh = sh;
	w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (w->rk == NULL) {
		fprintf(stderr, "e2e_latency: consumer: %s\n", errstr);
		rd_kafka_conf_destroy(conf);
		return -1;
	}
	rd_kafka_poll_set_consumer(w->rk);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *t = rd_kafka_topic_new(w->rk, o->desired_topic, NULL);
	rd_kafka_resp_err_t e = t != NULL ? rd_kafka_metadata(w->rk, 0, t, &md, 10000)
	                                  : rd_kafka_last_error();
	if (t != NULL)
		rd_kafka_topic_destroy(t);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 ||
	    md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "e2e_latency: metadata of %s: %s\n", o->desired_topic,
		        rd_kafka_err2str(
		            e != RD_KAFKA_RESP_ERR_NO_ERROR ? e : md->topics[0].err));
		if (md != NULL)
			rd_kafka_metadata_destroy(md);
		return -1;
	}
	int np = md->topics[0].partition_cnt;
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
	for (int32_t p = 0; p < np; p++) {
		int64_t lo = 0, hi = 0;
		e = rd_kafka_query_watermark_offsets(w->rk, o->desired_topic, p, &lo, &hi,
		                                     10000);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			fprintf(stderr, "e2e_latency: end of %s [%d]: %s\n",
			        o->desired_topic, p, rd_kafka_err2str(e));
			rd_kafka_topic_partition_list_destroy(l);
			return -1;
		}
		rd_kafka_topic_partition_list_add(l, o->desired_topic, p)->offset = hi;
	}
	e = rd_kafka_assign(w->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "e2e_latency: assign: %s\n", rd_kafka_err2str(e));
		return -1;
	}
	if (pthread_create(&w->th, NULL, watcher_main, w) != 0)
		return -1;
	w->started = true;
	return 0;
}

static void watcher_stop(watcher_t *w)
{
	if (w->started) {
		atomic_store(&w->sh->stop, true);
		pthread_join(w->th, NULL);
	}
	if (w->rk != NULL) {
		rd_kafka_consumer_close(w->rk);
		rd_kafka_destroy(w->rk);
	}
}

/* ---- report --------------------------------------------------------------------- */

typedef struct pct {
	long n;
	double p50, p90, p99, max;
} pct_t;

static pct_t pct_of(double *v, long n)
{
	pct_t p = {n, 0, 0, 0, 0};
	if (n == 0)
		return p;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	p.p50 = v[n / 2];
	p.p90 = v[n * 90 / 100];
	p.p99 = v[n * 99 / 100];
	p.max = v[n - 1];
	return p;
}

static void pct_print(const char *what, pct_t p)
{
	if (p.n == 0)
		printf("  %-40s n=0\n", what);
	else
		printf("  %-40s n=%-4ld p50 %6.1f  p90 %6.1f  p99 %6.1f  max %6.1f ms\n",
		       what, p.n, p.p50, p.p90, p.p99, p.max);
}

/* The stages of one change's timeline that are reported. */
typedef enum {
	ST_E2E,  /* 2xx -> seen in slapd */
	ST_FULL, /* send -> seen in slapd */
	ST_HTTP, /* send -> 2xx */
	ST_PROC, /* 2xx -> desired readable */
	ST_FOLD, /* 2xx -> desired produced (CreateTime, wall clock) */
	ST_TXN,  /* desired produced -> readable (wall clock) */
	ST_SINK, /* desired readable -> seen in slapd */
	STAGE_COUNT
} stage_t;

/* The duration of stage k of change q, when the change got that far. */
static bool stage_value(const shared_t *sh, long q, stage_t k, double *out)
{
	const change_t *c = &sh->ch[q];
	double td = sh->t_desired[q], wc = sh->w_created[q];
	bool seen = c->t_ldap > 0, des = seen && td > 0, cr = des && wc > 0;
	switch (k) {
	case ST_E2E:
		*out = c->t_ldap - c->t_2xx;
		return seen;
	case ST_FULL:
		*out = c->t_ldap - c->t_send;
		return seen;
	case ST_HTTP:
		*out = c->t_2xx - c->t_send;
		return c->t_2xx > 0;
	case ST_PROC:
		*out = td - c->t_2xx;
		return des;
	case ST_FOLD:
		*out = wc - c->w_2xx;
		return cr;
	case ST_TXN:
		*out = sh->w_desired[q] - wc;
		return cr;
	case ST_SINK:
		*out = c->t_ldap - td;
		return des;
	default:
		return false;
	}
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: e2e_latency URL --secret-file FILE --ldap-url URL --bind-dn DN\n"
	        "                   --password-file FILE --people-dn DN\n"
	        "                   [--brokers HOST:PORT --desired-topic TOPIC]\n"
	        "                   [--changes N] [--concurrency C] [--warmup W]\n"
	        "                   [--poll-us US] [--timeout-ms MS] [--fetch-wait-ms "
	        "MS]\n"
	        "                   [--interval-ms MS]\n");
}

static int opts_parse(int argc, char **argv, e2e_opts_t *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-') {
			if (o->url != NULL)
				return -1;
			o->url = a;
			continue;
		}
		if (v == NULL)
			return -1;
		i++;
		const char **s = NULL;
		long *n = NULL;
		if (strcmp(a, "--secret-file") == 0)
			s = &o->secret_file;
		else if (strcmp(a, "--ldap-url") == 0)
			s = &o->ldap_url;
		else if (strcmp(a, "--bind-dn") == 0)
			s = &o->bind_dn;
		else if (strcmp(a, "--password-file") == 0)
			s = &o->password_file;
		else if (strcmp(a, "--people-dn") == 0)
			s = &o->people_dn;
		else if (strcmp(a, "--brokers") == 0)
			s = &o->brokers;
		else if (strcmp(a, "--desired-topic") == 0)
			s = &o->desired_topic;
		else if (strcmp(a, "--changes") == 0)
			n = &o->changes;
		else if (strcmp(a, "--concurrency") == 0)
			n = &o->conc;
		else if (strcmp(a, "--warmup") == 0)
			n = &o->warmup;
		else if (strcmp(a, "--poll-us") == 0)
			n = &o->poll_us;
		else if (strcmp(a, "--timeout-ms") == 0)
			n = &o->timeout_ms;
		else if (strcmp(a, "--fetch-wait-ms") == 0)
			n = &o->fetch_wait_ms;
		else if (strcmp(a, "--interval-ms") == 0)
			n = &o->interval_ms;
		else
			return -1;
		if (s != NULL) {
			*s = v;
		} else {
			char *end;
			errno = 0;
			*n = strtol(v, &end, 10);
			if (errno != 0 || *end != '\0' || *n < 0)
				return -1;
		}
	}
	if (o->url == NULL || o->ldap_url == NULL || o->bind_dn == NULL ||
	    o->password_file == NULL || o->people_dn == NULL ||
	    (o->brokers == NULL) != (o->desired_topic == NULL) || o->changes < 1 ||
	    o->conc < 1 || o->timeout_ms < 1)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	e2e_opts_t o = {.changes = 1000,
	                .conc = 1,
	                .warmup = 20,
	                .poll_us = 1000,
	                .timeout_ms = 10000,
	                .fetch_wait_ms = 5};
	if (opts_parse(argc, argv, &o) != 0) {
		usage();
		return 2;
	}
	int rc = 2;
	long total = o.warmup + o.changes;
	shared_t sh;
	memset(&sh, 0, sizeof(sh));
	sh.o = &o;
	watcher_t wt;
	memset(&wt, 0, sizeof(wt));
	worker_t *ws = NULL;
	LDAP *ld = NULL;
	double *v = NULL;
	snprintf(sh.run, sizeof(sh.run), "%lld%05ld", (long long)time(NULL) % 1000000,
	         (long)getpid() % 100000);
	sh.secret = o.secret_file != NULL ? file_line(o.secret_file) : NULL;
	if (sh.secret == NULL && o.secret_file == NULL &&
	    getenv("IDSTREAM_WEBHOOK_GENERIC_SECRET") != NULL)
		sh.secret = strdup(getenv("IDSTREAM_WEBHOOK_GENERIC_SECRET"));
	sh.password = file_line(o.password_file);
	if (sh.secret == NULL || sh.password == NULL) {
		fprintf(stderr, "e2e_latency: %s\n",
		        sh.secret == NULL ? "no webhook secret (--secret-file)"
		                          : "no LDAP password (--password-file)");
		goto out;
	}
	sh.ch = calloc((size_t)total, sizeof(*sh.ch));
	sh.t_desired = calloc((size_t)total, sizeof(*sh.t_desired));
	sh.w_desired = calloc((size_t)total, sizeof(*sh.w_desired));
	sh.w_created = calloc((size_t)total, sizeof(*sh.w_created));
	ws = calloc((size_t)o.conc, sizeof(*ws));
	v = calloc((size_t)total, sizeof(*v));
	if (sh.ch == NULL || sh.t_desired == NULL || sh.w_desired == NULL ||
	    sh.w_created == NULL || ws == NULL || v == NULL)
		goto out;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if ((ld = ldap_open(&sh)) == NULL || emps_load(&sh, ld) != 0)
		goto out;
	/* One employee per change when there are enough; otherwise they are
	 * reused in turn, never two of the changes in flight at once. */
	if (sh.nemps < (size_t)(2 * o.conc)) {
		fprintf(stderr,
		        "e2e_latency: %zu entries with an employeeNumber under %s; at "
		        "least %ld needed\n",
		        sh.nemps, o.people_dn, 2 * o.conc);
		goto out;
	}
	if (o.brokers != NULL && watcher_start(&wt, &sh) != 0)
		goto out;

	/* Warm-up: one at a time, counted nowhere. */
	CURL *h = curl_easy_init();
	for (long s = 0; s < o.warmup; s++) {
		change_run(&sh, h, ld, s, WARMUP_TIMEOUT_MS);
		if (sh.ch[s].t_ldap == 0) {
			fprintf(
			    stderr,
			    "e2e_latency: warm-up change %ld (%s) %s; is the pipeline "
			    "running?\n",
			    s, sh.emps[(size_t)s % sh.nemps].id,
			    sh.ch[s].t_2xx == 0 ? "was not accepted"
			                        : "never reached slapd");
			fprintf(stderr, "e2e_latency: HTTP status %ld\n",
			        sh.ch[s].status);
			curl_easy_cleanup(h);
			goto out;
		}
	}
	curl_easy_cleanup(h);

	double t0 = now_ms();
	sh.t_start = t0;
	atomic_store(&sh.next, o.warmup);
	sh.end = total;
	for (long i = 0; i < o.conc; i++) {
		ws[i].sh = &sh;
		if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
			atomic_store(&sh.broken, true);
			for (long k = 0; k < i; k++)
				pthread_join(ws[k].th, NULL);
			goto out;
		}
	}
	for (long i = 0; i < o.conc; i++)
		pthread_join(ws[i].th, NULL);
	double wall = now_ms() - t0;
	if (atomic_load(&sh.broken)) {
		fprintf(stderr, "e2e_latency: a worker could not connect\n");
		goto out;
	}
	/* The consumer may trail slapd by a fetch: give it a moment. */
	for (double until = now_ms() + 2000;
	     o.brokers != NULL && atomic_load(&sh.seen) < total && now_ms() < until;)
		usleep(10000);
	watcher_stop(&wt);
	memset(&wt, 0, sizeof(wt));

	long ok = 0, refused = 0, missed = 0, first_status = 0;
	for (long s = o.warmup; s < total; s++) {
		if (sh.ch[s].t_2xx == 0) {
			if (refused++ == 0)
				first_status = sh.ch[s].status;
		} else if (sh.ch[s].t_ldap == 0) {
			missed++;
		} else {
			ok++;
		}
	}
	printf("e2e_latency: %ld changes (title UPDATEs as signed generic webhooks, one "
	       "employee each), %ld at a time, after %ld warm-up changes; %.1f s\n",
	       o.changes, o.conc, o.warmup, wall / 1e3);
	printf("  visibility: base-object search of the entry's title every %ld us "
	       "(polling; no persistent search in this slapd)\n",
	       o.poll_us);
	printf("  accepted %ld, refused %ld (first status %ld), not in slapd within "
	       "%ld ms %ld\n",
	       o.changes - refused, refused, first_status, o.timeout_ms, missed);
	pct_t st[STAGE_COUNT];
	for (int k = 0; k < STAGE_COUNT; k++) {
		long n = 0;
		for (long q = o.warmup; q < total; q++)
			if (stage_value(&sh, q, (stage_t)k, &v[n]))
				n++;
		st[k] = pct_of(v, n);
	}
	pct_print("END TO END: 2xx -> title seen in slapd", st[ST_E2E]);
	pct_print("send -> seen in slapd (sender's view)", st[ST_FULL]);
	pct_print("  http: send -> 2xx (Kafka acks=all)", st[ST_HTTP]);
	if (o.brokers != NULL) {
		pct_print("  processor: 2xx -> desired readable", st[ST_PROC]);
		pct_print("    2xx -> desired produced (CreateTime)", st[ST_FOLD]);
		pct_print("    produced -> committed, readable", st[ST_TXN]);
		pct_print("  sink: desired readable -> in slapd", st[ST_SINK]);
	}
	printf("summary: changes=%ld ok=%ld refused=%ld missed=%ld concurrency=%ld "
	       "poll_us=%ld e2e_p50_ms=%.1f e2e_p90_ms=%.1f e2e_p99_ms=%.1f "
	       "e2e_max_ms=%.1f http_p50_ms=%.1f http_p99_ms=%.1f proc_p50_ms=%.1f "
	       "proc_p99_ms=%.1f sink_p50_ms=%.1f sink_p99_ms=%.1f "
	       "produced_p50_ms=%.1f txn_p50_ms=%.1f wall_s=%.1f\n",
	       o.changes, ok, refused, missed, o.conc, o.poll_us, st[ST_E2E].p50,
	       st[ST_E2E].p90, st[ST_E2E].p99, st[ST_E2E].max, st[ST_HTTP].p50,
	       st[ST_HTTP].p99, st[ST_PROC].p50, st[ST_PROC].p99, st[ST_SINK].p50,
	       st[ST_SINK].p99, st[ST_FOLD].p50, st[ST_TXN].p50, wall / 1e3);
	rc = ok == o.changes ? 0 : 1;
out:
	watcher_stop(&wt);
	if (ld != NULL)
		ldap_unbind_ext_s(ld, NULL, NULL);
	for (size_t i = 0; i < sh.nemps; i++) {
		free(sh.emps[i].id);
		free(sh.emps[i].dn);
	}
	free(sh.emps);
	free(sh.ch);
	free(sh.t_desired);
	free(sh.w_desired);
	free(sh.w_created);
	free(ws);
	free(v);
	secret_free(sh.secret);
	secret_free(sh.password);
	curl_global_cleanup();
	return rc;
}
