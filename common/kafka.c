/*
 * kafka.c — librdkafka client setup (see kafka.h).  The settings that the
 * delivery guarantees rest on are applied last and cannot be overridden by
 * the user's kafka.* options; such a key is refused with an error.
 */
#include "common/kafka.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

/* Keys idstream owns; a user value for them would silently weaken
 * exactly-once or at-least-once delivery. */
static const char *const reserved_keys[] = {
    "enable.idempotence", "acks",     "enable.auto.commit",       "isolation.level",
    "transactional.id",   "group.id", "enable.auto.offset.store",
};

static int kafka_set(rd_kafka_conf_t *conf, const char *k, const char *v, id_err_t *err)
{
	char errstr[512];
	if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		return id_err_set(err, ID_ECONFIG, "kafka.%s: %s", k, errstr);
	return 0;
}

int id_kafka_check_option(const char *key, const char *value, id_err_t *err)
{
	for (size_t r = 0; r < sizeof(reserved_keys) / sizeof(*reserved_keys); r++)
		if (strcmp(key, reserved_keys[r]) == 0)
			return id_err_set(
			    err, ID_ECONFIG,
			    "kafka.%s is set by idstream and cannot be configured", key);
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	int rc = kafka_set(conf, key, value, err);
	rd_kafka_conf_destroy(conf);
	return rc;
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf)
{
	(void)rk;
	id_log_level_t l = level <= 3   ? ID_LOG_ERROR
	                   : level <= 4 ? ID_LOG_WARN
	                   : level <= 6 ? ID_LOG_INFO
	                                : ID_LOG_DEBUG;
	id_log_kv(l, "kafka", buf, "facility", fac, NULL);
}

static void kafka_error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque)
{
	(void)rk;
	(void)opaque;
	/* Transport errors are retried by librdkafka; log them once as warnings. */
	id_log_kv(e == RD_KAFKA_RESP_ERR__FATAL ? ID_LOG_ERROR : ID_LOG_WARN, "kafka",
	          reason, "error", rd_kafka_err2name((rd_kafka_resp_err_t)e), NULL);
}

static void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	id_kafka_delivery_t *d = m->_private;
	if (d == NULL) {
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			id_log_error("kafka", "delivery failed: %s",
			             rd_kafka_err2str(m->err));
		return;
	}
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR &&
	    d->first_err == RD_KAFKA_RESP_ERR_NO_ERROR)
		d->first_err = m->err;
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && d->next_offsets != NULL &&
	    m->partition >= 0 && m->partition < d->nparts &&
	    d->next_offsets[m->partition] < m->offset + 1)
		d->next_offsets[m->partition] = m->offset + 1;
	d->pending--;
}

static rd_kafka_conf_t *kafka_conf_base(const id_config_t *c, const char *client_id,
                                        id_err_t *err)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	const id_attrs_t *user = id_config_kafka(c);
	for (size_t i = 0; i < user->len; i++) {
		for (size_t r = 0; r < sizeof(reserved_keys) / sizeof(*reserved_keys);
		     r++) {
			if (strcmp(user->items[i].key, reserved_keys[r]) == 0) {
				id_err_set(err, ID_ECONFIG,
				           "kafka.%s is set by idstream and cannot be "
				           "configured",
				           user->items[i].key);
				goto fail;
			}
		}
		if (kafka_set(conf, user->items[i].key,
		              user->items[i].value ? user->items[i].value : "", err) != 0)
			goto fail;
	}
	if (kafka_set(conf, "client.id", client_id, err) != 0)
		goto fail;
	rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
	rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
	return conf;
fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

rd_kafka_t *id_kafka_producer_create(const id_config_t *c, const char *client_id,
                                     const char *transactional_id, id_err_t *err)
{
	char errstr[512];
	rd_kafka_t *rk = NULL;
	rd_kafka_conf_t *conf = kafka_conf_base(c, client_id, err);
	if (conf == NULL)
		return NULL;
	if (kafka_set(conf, "enable.idempotence", "true", err) ||
	    kafka_set(conf, "acks", "all", err) ||
	    kafka_set(conf, "partitioner", "murmur2_random", err))
		goto fail;
	rd_kafka_conf_set_dr_msg_cb(conf, kafka_dr_cb);
	if (!id_attrs_has(id_config_kafka(c), "linger.ms") &&
	    kafka_set(conf, "linger.ms", "5", err))
		goto fail;
	if (transactional_id != NULL &&
	    (kafka_set(conf, "transactional.id", transactional_id, err) ||
	     kafka_set(conf, "transaction.timeout.ms", "60000", err)))
		goto fail;
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL) {
		id_err_set(err, ID_EKAFKA, "creating Kafka producer: %s", errstr);
		goto fail;
	}
	conf = NULL; /* owned by rk now */
	if (transactional_id != NULL) {
		rd_kafka_error_t *e = rd_kafka_init_transactions(rk, 60000);
		if (e != NULL) {
			id_kafka_error(err, e, "initialising Kafka transactions");
			rd_kafka_error_destroy(e);
			goto fail;
		}
	}
	return rk;
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	if (rk != NULL)
		rd_kafka_destroy(rk);
	return NULL;
}

rd_kafka_t *
id_kafka_consumer_create(const id_config_t *c, const char *client_id,
                         const char *group_id,
                         void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                              rd_kafka_topic_partition_list_t *, void *),
                         void *opaque, id_err_t *err)
{
	char errstr[512];
	rd_kafka_conf_t *conf = kafka_conf_base(c, client_id, err);
	if (conf == NULL)
		return NULL;
	/* A consumer without a group still needs a group.id in librdkafka to
	 * store nothing; use a throwaway one and never commit. */
	char group[512];
	snprintf(group, sizeof(group), "%s", group_id ? group_id : "idstream.reader");
	if (kafka_set(conf, "group.id", group, err) ||
	    kafka_set(conf, "enable.auto.commit", "false", err) ||
	    kafka_set(conf, "enable.auto.offset.store", "false", err) ||
	    kafka_set(conf, "isolation.level", "read_committed", err) ||
	    kafka_set(conf, "enable.partition.eof", "true", err))
		goto fail;
	const id_attrs_t *user = id_config_kafka(c);
	if (!id_attrs_has(user, "auto.offset.reset") &&
	    kafka_set(conf, "auto.offset.reset", "earliest", err))
		goto fail;
	if (!id_attrs_has(user, "partition.assignment.strategy") &&
	    kafka_set(conf, "partition.assignment.strategy", "range", err))
		goto fail;
	if (rebalance_cb != NULL)
		rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_opaque(conf, opaque);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL) {
		id_err_set(err, ID_EKAFKA, "creating Kafka consumer: %s", errstr);
		goto fail;
	}
	rd_kafka_poll_set_consumer(rk);
	return rk;
fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

void id_kafka_destroy(rd_kafka_t *rk)
{
	if (rk == NULL)
		return;
	if (rd_kafka_type(rk) == RD_KAFKA_PRODUCER) {
		rd_kafka_resp_err_t e = rd_kafka_flush(rk, 30000);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			id_log_warn("kafka", "producer flush on close: %s",
			            rd_kafka_err2str(e));
	} else {
		rd_kafka_consumer_close(rk);
	}
	rd_kafka_destroy(rk);
}

int id_kafka_err(id_err_t *err, rd_kafka_resp_err_t e, const char *what)
{
	int code =
	    (e == RD_KAFKA_RESP_ERR__FENCED || e == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
	     e == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH)
	        ? ID_EFENCED
	        : ID_EKAFKA;
	return id_err_set(err, code, "%s: %s (%s)", what, rd_kafka_err2str(e),
	                  rd_kafka_err2name(e));
}

int id_kafka_error(id_err_t *err, const rd_kafka_error_t *e, const char *what)
{
	rd_kafka_resp_err_t code = rd_kafka_error_code(e);
	int rc = id_kafka_err(err, code, what);
	if (err != NULL)
		snprintf(err->msg, sizeof(err->msg), "%s: %s (%s)", what,
		         rd_kafka_error_string(e), rd_kafka_error_name(e));
	return rc;
}

static int64_t kafka_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool id_kafka_end_unstable(rd_kafka_t *consumer, const char *topic, int32_t partition,
                           int64_t offset)
{
	int64_t lo = 0, hi = -1;
	/* The cached watermarks come with every fetch response. */
	if (rd_kafka_get_watermark_offsets(consumer, topic, partition, &lo, &hi) !=
	        RD_KAFKA_RESP_ERR_NO_ERROR ||
	    hi < 0)
		return true;
	return offset < hi;
}

void id_kafka_end_seen(id_kafka_end_t *e, rd_kafka_t *consumer,
                       const rd_kafka_message_t *m)
{
	if (m->rkt != NULL && id_kafka_end_unstable(consumer, rd_kafka_topic_name(m->rkt),
	                                            m->partition, m->offset)) {
		if (e->state != 2) {
			e->since_ms = kafka_mono_ms();
			id_log_debug(
			    "kafka",
			    "%s [%d]: the end of what is stable, offset %lld, is "
			    "below the high watermark (or that is not known yet): a "
			    "transaction is open or being committed (counted as the "
			    "end after %d ms)",
			    rd_kafka_topic_name(m->rkt), (int)m->partition,
			    (long long)m->offset, ID_KAFKA_END_SETTLE_MS);
		}
		e->state = 2;
	} else {
		e->state = 1;
	}
}

bool id_kafka_end_counts(const id_kafka_end_t *e)
{
	return e->state == 1 ||
	       (e->state == 2 && kafka_mono_ms() - e->since_ms >= ID_KAFKA_END_SETTLE_MS);
}

int id_kafka_partition_count(rd_kafka_t *rk, const char *topic, int32_t *out,
                             id_err_t *err)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	int rc = 0;
	rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, e, "reading topic metadata");
		goto out;
	}
	if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
	    md->topics[0].partition_cnt == 0) {
		rc = id_err_set(err, ID_ENOTFOUND,
		                "topic %s does not exist (run `idstream topics create`)",
		                topic);
		goto out;
	}
	*out = md->topics[0].partition_cnt;
out:
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return rc;
}

/* Kafka's murmur2 as in the Java client's Utils.murmur2, and toPositive(). */
int32_t id_kafka_partition_for_key(const void *key, size_t len, int32_t partition_cnt)
{
	const uint32_t seed = 0x9747b28c, m = 0x5bd1e995;
	const int r = 24;
	const unsigned char *data = key;
	uint32_t h = seed ^ (uint32_t)len;
	size_t len4 = len / 4;
	for (size_t i = 0; i < len4; i++) {
		size_t i4 = i * 4;
		uint32_t k = (uint32_t)data[i4] | ((uint32_t)data[i4 + 1] << 8) |
		             ((uint32_t)data[i4 + 2] << 16) |
		             ((uint32_t)data[i4 + 3] << 24);
		k *= m;
		k ^= k >> r;
		k *= m;
		h *= m;
		h ^= k;
	}
	size_t tail = len & ~(size_t)3;
	switch (len % 4) {
	case 3:
		h ^= (uint32_t)data[tail + 2] << 16;
		/* fall through */
	case 2:
		h ^= (uint32_t)data[tail + 1] << 8;
		/* fall through */
	case 1:
		h ^= (uint32_t)data[tail];
		h *= m;
	}
	h ^= h >> 13;
	h *= m;
	h ^= h >> 15;
	return (int32_t)((h & 0x7fffffff) % (uint32_t)partition_cnt);
}

int id_kafka_produce_sync(rd_kafka_t *rk, const char *topic, const void *key, size_t klen,
                          const void *val, size_t vlen, id_err_t *err)
{
	id_kafka_delivery_t d = {1, RD_KAFKA_RESP_ERR_NO_ERROR, NULL, 0};
	rd_kafka_resp_err_t e = rd_kafka_producev(
	    rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, klen),
	    RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
	    RD_KAFKA_V_OPAQUE(&d), RD_KAFKA_V_END);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		return id_kafka_err(err, e, "producing message");
	/* flush() serves delivery reports; loop because it may return early. */
	for (int i = 0; i < 60 && d.pending > 0; i++)
		rd_kafka_flush(rk, 1000);
	if (d.pending > 0)
		return id_err_set(err, ID_ETIMEOUT,
		                  "Kafka did not acknowledge within 60 s");
	if (d.first_err != RD_KAFKA_RESP_ERR_NO_ERROR)
		return id_kafka_err(err, d.first_err, "Kafka refused the message");
	return 0;
}
