/*
 * scan.c — reads every partition of a topic from its start to its current
 * end (see scan.h).  No consumer group, nothing committed.
 */
#include "cmd/scan.h"

#include <stdlib.h>

#include "cmd/cli.h"
#include "common/log.h"

/* Reads every partition of topic from its start to its end, calling fn. */
int scan_topic(rd_kafka_t *rk, const char *topic, int32_t nparts,
               int (*fn)(void *, const rd_kafka_message_t *, id_err_t *), void *opaque,
               long *total, id_err_t *err)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
	int rc = 0, remaining = 0;
	char *done = calloc((size_t)nparts, 1);
	if (done == NULL) {
		rd_kafka_topic_partition_list_destroy(l);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	for (int32_t p = 0; p < nparts; p++) {
		int64_t lo = 0, hi = 0;
		rd_kafka_resp_err_t e =
		    rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_kafka_err(err, e, "reading end offsets");
			goto out;
		}
		if (hi > lo) {
			rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo;
			remaining++;
		}
	}
	if (remaining == 0)
		goto out;
	rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, e, "assigning partitions");
		goto out;
	}
	int idle = 0;
	while (remaining > 0 && !cli_stop_requested && idle < 300) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL) {
			idle++;
			continue;
		}
		idle = 0;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if (m->partition >= 0 && m->partition < nparts &&
			    !done[m->partition]) {
				done[m->partition] = 1;
				remaining--;
			}
		} else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			id_log_warn("scan", "%s: %s", topic, rd_kafka_message_errstr(m));
		} else {
			(*total)++;
			rc = fn(opaque, m, err);
		}
		rd_kafka_message_destroy(m);
		if (rc != 0)
			break;
	}
	if (rc == 0 && remaining > 0)
		rc = id_err_set(err, ID_ETIMEOUT,
		                "%s: %d partitions did not reach their end", topic,
		                remaining);
	rd_kafka_assign(rk, NULL);
out:
	free(done);
	rd_kafka_topic_partition_list_destroy(l);
	return rc;
}
