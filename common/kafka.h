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
