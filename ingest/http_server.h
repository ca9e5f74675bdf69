/*
 * http_server.h — `idstream ingest http`: the HTTP server that receives HR
 * webhooks and publishes the employee events they mean to
 * <topic.prefix>.hr.events (key = employee id).
 *
 * Endpoints:
 *   POST /webhooks/<source>   generic, bamboohr, hibob, gusto, personio
 *                             (a source is enabled when it has a secret)
 *   GET  /healthz             {"status": "ok", ...}
 *   GET  /metrics             Prometheus text format
 *
 * A delivery is answered 200 only after Kafka acknowledged every event of it
 * (idempotent producer, acks=all).  It is refused with a 4xx and a JSON body
 * {"error": "<code>", "detail": "<why>"} — publishing nothing — when it is
 * unsigned or forged, outside the timestamp window, already seen (dedupe),
 * malformed, of the wrong shape, too large, or for an unknown source.  When
 * Kafka does not acknowledge within the publish bound the answer is 503 with
 * Retry-After and the delivery id is not recorded, so the sender's retry is
 * accepted.  The codes are listed in ingest/webhook.h (WEBHOOK_REFUSAL_MAP)
 * and docs/WEBHOOKS.md.
 *
 * Threading: libmicrohttpd runs a pool of `threads` threads (epoll, HTTP/1.1
 * keep-alive).  A request that publishes suspends its connection; one poller
 * thread serves the producer's delivery reports and resumes the connections
 * whose events are all acknowledged, so a pool thread never blocks on Kafka.
 * The producer given to the server is polled only by that thread.
 */
#ifndef IDSTREAM_INGEST_HTTP_SERVER_H
#define IDSTREAM_INGEST_HTTP_SERVER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "ingest/dedupe.h"
#include "ingest/outbox.h"
#include "ingest/webhook.h"
#include "state/store.h"

typedef struct http_server http_server_t;

/*
 * Completes a thin event (webhook.h) from the HR API (ingest/enrich.h).
 * Returns 0 (we is complete), ID_EINVALID (the HR API answered but the
 * record is unusable: the delivery is refused with 422), ID_ENOTFOUND (no
 * API for this source: 422 enrichment_unavailable), or any other error (the
 * HR API could not be reached: the delivery goes to the outbox and is
 * answered 202, or without an outbox 503 so the sender retries).  Called
 * from the server's pool threads and its outbox worker, concurrently.
 */
typedef int (*http_enrich_fn)(void *opaque, webhook_source_t src, webhook_event_t *we,
                              id_err_t *err);

typedef struct http_server_opts {
	const char *bind_addr;      /* IPv4 address to listen on; NULL = 127.0.0.1 */
	uint16_t port;              /* 0 = any free port (see http_server_port) */
	unsigned threads;           /* libmicrohttpd pool size; 0 = 4 */
	size_t max_body_bytes;      /* 0 = 1 MiB */
	int64_t timestamp_window_s; /* signed send-time window; 0 = 300 */
	int64_t publish_timeout_ms; /* wait for Kafka at most this; 0 = 2500 */
	unsigned retry_after_s;     /* Retry-After of a 503; 0 = 5 */
	const char *tls_cert_file;  /* PEM; with tls_key_file: serve HTTPS */
	const char *tls_key_file;
	webhook_keys_t keys[WEBHOOK_SOURCE_COUNT]; /* borrowed; no keys = disabled */
	const char *topic;                         /* the hr.events topic (borrowed) */
	rd_kafka_t *producer;  /* borrowed, idempotent (id_kafka_producer_create) */
	dedupe_t *dedupe;      /* borrowed */
	http_enrich_fn enrich; /* NULL: thin events are refused (422) */
	void *enrich_opaque;
	/* Optional durable outbox (all three or none).  Deliveries whose HR
	 * API is unreachable are stored and answered 202; a worker thread
	 * publishes them in order once the API answers, through its own
	 * producer.  Later deliveries for an employee with a waiting entry
	 * queue behind it, so an employee's events keep their order. */
	outbox_t *outbox;            /* borrowed */
	state_store_t *store;        /* borrowed: holds the outbox and the dedupe ids */
	rd_kafka_t *outbox_producer; /* borrowed, used only by the worker */
} http_server_opts_t;

/*
 * Starts listening.  The borrowed handles must outlive the server.  Errors:
 * ID_EINVALID (options), ID_EIO (a TLS file is unreadable, the address cannot
 * be bound).  Ownership: *out is stopped and freed with http_server_stop().
 */
int http_server_start(const http_server_opts_t *opts, http_server_t **out, id_err_t *err);

/* The TCP port the server listens on. */
uint16_t http_server_port(const http_server_t *s);

/*
 * Stops accepting connections, waits until every delivery being published
 * has its answer (bounded by the publish timeout), then stops the threads
 * and frees the server.  NULL is a no-op.
 */
void http_server_stop(http_server_t *s);

/* Counters for the command's summary line. */
typedef struct http_server_stats {
	long accepted;  /* deliveries answered 200 with events published */
	long ignored;   /* valid deliveries of event types idstream does not use */
	long refused;   /* 4xx */
	long failed;    /* 5xx */
	long published; /* events acknowledged by Kafka */
	long queued;    /* deliveries stored in the outbox (202) */
} http_server_stats_t;

void http_server_get_stats(const http_server_t *s, http_server_stats_t *out);

#endif
