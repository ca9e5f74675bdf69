/*
 * kafka.h — the one place librdkafka clients are configured.
 *
 * Every producer is idempotent with acks=all and the murmur2_random
 * partitioner (keys land on the partitions Java clients would pick).  Every
 * consumer has auto-commit off, the eager "range" assignor (librdkafka 2.0.2
 * has cooperative-sticky bugs), read_committed isolation and
 * auto.offset.reset=earliest.  The user's kafka.* options are applied on top,
 * except the few that the guarantees above depend on (those are refused with
 * an error naming the key).
 *
 * Thread safety: the returned handles follow librdkafka's rules (thread-safe
 * except the consumer poll loop, which belongs to one thread).
 */
#ifndef IDSTREAM_KAFKA_H
#define IDSTREAM_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

/*
 * Creates a producer.  transactional_id may be NULL (idempotent producer) or
 * a stable id (transactional; init_transactions is already done when this
 * returns).  Ownership: caller destroys with id_kafka_destroy().
 */
rd_kafka_t *id_kafka_producer_create(const id_config_t *c, const char *client_id,
                                     const char *transactional_id, id_err_t *err);

/*
 * Creates a consumer in group_id (NULL: no group, assign() only).  The
 * rebalance callback, when non-NULL, is installed with opaque.
 * enable.partition.eof is on so callers can tell when they are caught up.
 * Ownership: caller closes and destroys with id_kafka_destroy().
 */
rd_kafka_t *
id_kafka_consumer_create(const id_config_t *c, const char *client_id,
                         const char *group_id,
                         void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                              rd_kafka_topic_partition_list_t *, void *),
                         void *opaque, id_err_t *err);

/*
 * Checks one kafka.* option (key without the prefix) the way client
 * creation will: reserved keys are refused, unknown keys and bad values are
 * reported by librdkafka.  Lets the config loader name file:line.
 */
int id_kafka_check_option(const char *key, const char *value, id_err_t *err);

/* Flushes (producers) / closes (consumers) and destroys; NULL is a no-op. */
void id_kafka_destroy(rd_kafka_t *rk);

/* Translates a librdkafka error into ID_EKAFKA (or ID_EFENCED) with "what: ...". */
int id_kafka_err(id_err_t *err, rd_kafka_resp_err_t e, const char *what);
/* Same for an rd_kafka_error_t (not destroyed). */
int id_kafka_error(id_err_t *err, const rd_kafka_error_t *e, const char *what);

/* Number of partitions of topic, from broker metadata. */
int id_kafka_partition_count(rd_kafka_t *rk, const char *topic, int32_t *out,
                             id_err_t *err);

/*
 * The partition Kafka's default (murmur2) partitioner picks for key — the
 * same one the producers here use — so a reader can go straight to the
 * partition holding an employee.
 */
int32_t id_kafka_partition_for_key(const void *key, size_t len, int32_t partition_cnt);

/*
 * Where a read_committed consumer stands at the end of a partition.  It
 * reports the end (RD_KAFKA_RESP_ERR__PARTITION_EOF) at the last stable
 * offset.  Below the partition's high watermark a transaction is still
 * open, or committed with its markers not written yet (they follow the
 * producer's commit by a moment): such an end counts only once it has
 * lasted ID_KAFKA_END_SETTLE_MS, so that a command stopping when caught up
 * (`--until-idle`) does not stop short of a transaction committed just
 * before it looked.  An end at the high watermark counts at once.
 */
#define ID_KAFKA_END_SETTLE_MS 2000

typedef struct id_kafka_end {
	int state;        /* 0: not at the end; 1: at the log's end; 2: at the
	                     end of what is stable */
	int64_t since_ms; /* CLOCK_MONOTONIC ms when state became 2 */
} id_kafka_end_t;

/* Notes the end of partition that m (a PARTITION_EOF from consumer) reports. */
void id_kafka_end_seen(id_kafka_end_t *e, rd_kafka_t *consumer,
                       const rd_kafka_message_t *m);
/* Whether the end last seen counts (false when not at the end). */
bool id_kafka_end_counts(const id_kafka_end_t *e);
/* Input arrived, or the position moved: not at the end. */
static inline void id_kafka_end_clear(id_kafka_end_t *e)
{
	e->state = 0;
}

/*
 * Whether offset, an end read with read_committed isolation (a last stable
 * offset), is below the high watermark consumer last fetched for the
 * partition — a transaction there is open or its markers are not written
 * yet — or that watermark is not known (the partition not fetched yet).
 */
bool id_kafka_end_unstable(rd_kafka_t *consumer, const char *topic, int32_t partition,
                           int64_t offset);

/*
 * Delivery tracking.  Every producer made here has a delivery-report callback
 * that treats a non-NULL per-message opaque as an id_kafka_delivery_t: it
 * decrements pending and keeps the first error.  Produce with
 * RD_KAFKA_V_OPAQUE(&d) after d.pending++, then poll/flush until
 * d.pending == 0 and check d.first_err.  Messages with a NULL opaque are
 * not tracked (their failures are logged).
 */
typedef struct id_kafka_delivery {
	long pending;
	rd_kafka_resp_err_t first_err;
	/* Optional: when non-NULL, next_offsets[partition] is raised to the
	 * offset after each acknowledged message (partitions < nparts). */
	int64_t *next_offsets;
	int32_t nparts;
} id_kafka_delivery_t;

/*
 * Produces one message and waits until it is acknowledged (acks=all) or fails.
 * For low-volume paths and tests; bulk paths produce asynchronously and flush.
 */
int id_kafka_produce_sync(rd_kafka_t *rk, const char *topic, const void *key, size_t klen,
                          const void *val, size_t vlen, id_err_t *err);

#endif
