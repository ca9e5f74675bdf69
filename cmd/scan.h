/*
 * scan.h — whole-topic reads for the audit commands (replay, as-of).
 *
 * scan_topic() assigns every non-empty partition of topic (nparts of them)
 * from its start and calls fn for each message until every partition has
 * reached its end (PARTITION_EOF), counting messages in *total.  rk must be
 * a consumer made by id_kafka_consumer_create() with no group; it is left
 * unassigned.  fn returning non-zero stops the scan with that code.
 */
#ifndef IDSTREAM_SCAN_H
#define IDSTREAM_SCAN_H

#include "common/kafka.h"

int scan_topic(rd_kafka_t *rk, const char *topic, int32_t nparts,
               int (*fn)(void *, const rd_kafka_message_t *, id_err_t *), void *opaque,
               long *total, id_err_t *err);

#endif
