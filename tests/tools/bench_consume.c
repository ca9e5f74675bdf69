/*
 * bench_consume.c — the raw librdkafka consume rate that `make bench` puts
 * next to the processor's: reads one topic from the beginning to its end,
 * decodes nothing, and prints what it read and how long it took.
 *
 *   bench_consume --brokers HOST:PORT --topic TOPIC
 *
 * prints one line:
 *
 *   messages=N bytes=B wall_ms=W first_to_last_ms=F
 *
 * wall_ms runs from the client's creation to the end-of-partition event of
 * the last partition (metadata, first fetch and end detection included);
 * first_to_last_ms from the first message received to the last one (the
 * steady-state rate, without start-up).  The client uses librdkafka's
 * defaults plus what the processor also sets: read_committed and
 * partition EOF events.  It assigns every partition at the beginning, so it
 * joins no consumer group and commits nothing.
 *
 * It is a measuring tool, not part of idstream: it configures librdkafka
 * itself on purpose, to measure the library without idstream's wrapper.
 *
 * Threading: one thread.  Exit status 0, or 1 with a message on stderr.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

/* Gives up when the topic has not been read to its end by then. */
#define BENCH_TIMEOUT_MS 120000

static double bench_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void bench_usage(void)
{
	fprintf(stderr, "usage: bench_consume --brokers HOST:PORT --topic TOPIC\n");
	exit(2);
}

static int bench_set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char errstr[512];
	if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "bench_consume: %s=%s: %s\n", k, v, errstr);
		return -1;
	}
	return 0;
}

/* Number of partitions of topic, or -1 with a message on stderr. */
static int bench_partitions(rd_kafka_t *rk, const char *topic)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
	int n = -1;
	if (t == NULL) {
		fprintf(stderr, "bench_consume: topic %s: %s\n", topic,
		        rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		fprintf(stderr, "bench_consume: metadata of %s: %s\n", topic,
		        rd_kafka_err2str(e));
	else if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
		fprintf(stderr, "bench_consume: topic %s: %s\n", topic,
		        md->topic_cnt ? rd_kafka_err2str(md->topics[0].err)
		                      : "not found");
	else
		n = md->topics[0].partition_cnt;
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(t);
	return n;
}

int main(int argc, char **argv)
{
	const char *brokers = NULL, *topic = NULL;
	rd_kafka_t *rk = NULL;
	rd_kafka_topic_partition_list_t *parts = NULL;
	char *eof = NULL;
	char errstr[512];
	int rc = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc)
			brokers = argv[++i];
		else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc)
			topic = argv[++i];
		else
			bench_usage();
	}
	if (brokers == NULL || topic == NULL)
		bench_usage();

	double t0 = bench_now_ms();
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	/* group.id only because the consumer queue needs one; nothing joins. */
	if (bench_set(conf, "bootstrap.servers", brokers) ||
	    bench_set(conf, "group.id", "idstream-bench-raw") ||
	    bench_set(conf, "enable.auto.commit", "false") ||
	    bench_set(conf, "isolation.level", "read_committed") ||
	    bench_set(conf, "enable.partition.eof", "true")) {
		rd_kafka_conf_destroy(conf);
		goto out;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL) {
		rd_kafka_conf_destroy(conf);
		fprintf(stderr, "bench_consume: %s\n", errstr);
		goto out;
	}
	rd_kafka_poll_set_consumer(rk);
	int nparts = bench_partitions(rk, topic);
	if (nparts <= 0)
		goto out;
	if ((eof = calloc((size_t)nparts, 1)) == NULL) {
		fprintf(stderr, "bench_consume: out of memory\n");
		goto out;
	}
	parts = rd_kafka_topic_partition_list_new(nparts);
	for (int i = 0; i < nparts; i++)
		rd_kafka_topic_partition_list_add(parts, topic, i)->offset =
		    RD_KAFKA_OFFSET_BEGINNING;
	rd_kafka_resp_err_t ae = rd_kafka_assign(rk, parts);
	if (ae != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "bench_consume: assign: %s\n", rd_kafka_err2str(ae));
		goto out;
	}

	long long messages = 0, bytes = 0;
	double first = 0, last = 0;
	int at_end = 0;
	while (at_end < nparts) {
		if (bench_now_ms() - t0 > BENCH_TIMEOUT_MS) {
			fprintf(stderr,
			        "bench_consume: %s not read to its end after %d s\n",
			        topic, BENCH_TIMEOUT_MS / 1000);
			goto out;
		}
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL)
			continue;
		int32_t p = m->partition;
		bool known = p >= 0 && p < nparts;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if (known && !eof[p]) {
				eof[p] = 1;
				at_end++;
			}
		} else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			fprintf(stderr, "bench_consume: %s\n",
			        rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			goto out;
		} else {
			last = bench_now_ms();
			if (messages == 0)
				first = last;
			messages++;
			bytes += (long long)m->len;
			/* More data after an EOF: that partition is not done. */
			if (known && eof[p]) {
				eof[p] = 0;
				at_end--;
			}
		}
		rd_kafka_message_destroy(m);
	}
	double wall = bench_now_ms() - t0;
	printf("messages=%lld bytes=%lld wall_ms=%.0f first_to_last_ms=%.1f\n", messages,
	       bytes, wall, last - first);
	rc = 0;
out:
	if (parts != NULL)
		rd_kafka_topic_partition_list_destroy(parts);
	free(eof);
	if (rk != NULL) {
		rd_kafka_consumer_close(rk);
		rd_kafka_destroy(rk);
	}
	return rc;
}
