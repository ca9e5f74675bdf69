/*
 * webhook_load.c — load generator for `idstream ingest http`: sends signed
 * generic webhooks (each with its own delivery id) over keep-alive
 * connections with libcurl's multi interface and prints the accepted rate
 * and response-time percentiles.
 *
 *   webhook_load URL SECRET [--requests N] [--concurrency C] [--employees M]
 *
 * Deliveries alternate between HIRE and UPDATE events for M employees.
 * Output (one line, key=value): sent, ok (2xx), other statuses, elapsed
 * seconds, rate (2xx per second), p50/p90/p99/max milliseconds.
 * Threading: single-threaded; concurrency comes from the multi handle.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest/webhook.h"

typedef struct slot {
	CURL *h;
	struct curl_slist *hdrs;
	char body[512];
	struct timespec t0;
} slot_t;

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
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

/* Prepares slot for delivery number seq. */
static int slot_arm(slot_t *s, const char *url, const char *secret, long seq,
                    long employees, long run)
{
	long e = seq % employees;
	if (seq / employees % 2 == 0)
		snprintf(
		    s->body, sizeof(s->body),
		    "{\"employee_id\":\"L%ld\",\"type\":\"HIRE\",\"attributes\":{"
		    "\"first_name\":\"Load\",\"last_name\":\"Test%ld\",\"department\":"
		    "\"Bench\",\"title\":\"T%ld\"}}",
		    e, e, seq);
	else
		snprintf(s->body, sizeof(s->body),
		         "{\"employee_id\":\"L%ld\",\"type\":\"UPDATE\",\"attributes\":{"
		         "\"title\":\"T%ld\"}}",
		         e, seq);
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

int main(int argc, char **argv)
{
	long requests = 20000, conc = 64, employees = 1000;
	if (argc < 3) {
		fprintf(stderr, "usage: webhook_load URL SECRET [--requests N] "
		                "[--concurrency C] [--employees M]\n");
		return 64;
	}
	const char *url = argv[1], *secret = argv[2];
	for (int i = 3; i + 1 < argc; i += 2) {
		long v = strtol(argv[i + 1], NULL, 10);
		if (strcmp(argv[i], "--requests") == 0)
			requests = v;
		else if (strcmp(argv[i], "--concurrency") == 0)
			conc = v;
		else if (strcmp(argv[i], "--employees") == 0)
			employees = v;
	}
	if (requests < 1 || conc < 1 || employees < 1)
		return 64;
	if (conc > requests)
		conc = requests;
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
	double t0 = now_s();
	for (long i = 0; i < conc; i++) {
		slots[i].h = curl_easy_init();
		if (slot_arm(&slots[i], url, secret, sent++, employees, run) != 0)
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
				slot_arm(s, url, secret, sent++, employees, run);
				curl_multi_add_handle(m, s->h);
			}
		}
		if (done < requests)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	double elapsed = now_s() - t0;
	qsort(lat, (size_t)done, sizeof(*lat), cmp_double);
	printf("sent=%ld ok=%ld other=%ld first_other_status=%ld elapsed_s=%.2f "
	       "rate_per_s=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
	       done, ok, other, first_bad, elapsed, (double)ok / elapsed, lat[done / 2],
	       lat[done * 90 / 100], lat[done * 99 / 100], lat[done - 1]);
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
