/*
 * topics.c — `idstream topics create`: makes the deployment's topics with
 * the configured partitions, or reports that they exist.  Idempotent.
 *
 *   <prefix>.hr.events         the event log: retention.ms=-1, cleanup delete
 *   <prefix>.identity.desired  full desired state per employee, versioned
 *   <prefix>.sink.results      what each sink did, and why
 *   <prefix>.sink.control      operator decisions for the sinks (approve,
 *                              reject, retry, reconcile) and their answers:
 *                              one partition (a trickle, read whole by every
 *                              sink), kept forever (a rebuilt sink relearns
 *                              its rejections from it)
 *   <prefix>.names.claims      unique-name claims, keyed by the name (one
 *                              partition decides each name); kept forever:
 *                              the names arbiter's state is a fold of it
 */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/kafka.h"
#include "common/log.h"

static void topics_usage(void)
{
	printf("usage: idstream topics create\n"
	       "\n"
	       "Creates <topic.prefix>.hr.events (infinite retention), .identity.desired "
	       "and\n"
	       ".sink.results with topic.partitions partitions and "
	       "topic.replication_factor\n"
	       "replicas, and .sink.control (operator decisions for the sinks: one "
	       "partition,\n"
	       "infinite retention), and .names.claims (unique-name claims for the "
	       "names\n"
	       "arbiter: topic.partitions partitions, infinite retention). Topics that "
	       "already\n"
	       "exist are reported and left as they are.\n");
}

int cmd_topics(cli_t *cli, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			topics_usage();
			return CLI_EXIT_OK;
		}
	}
	if (argc != 2 || strcmp(argv[1], "create") != 0)
		return cli_usage_error("topics", "expected \"create\"");

	static const char *const suffixes[] = {"hr.events", "identity.desired",
	                                       "sink.results", "sink.control",
	                                       "names.claims"};
	enum { NT = 5, CONTROL = 3, CLAIMS = 4 };
	char names[NT][256];
	id_err_t err = {0};
	int rc = CLI_EXIT_FAIL;
	rd_kafka_NewTopic_t *nt[NT] = {0};
	rd_kafka_AdminOptions_t *opts = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	int32_t partitions = (int32_t)id_config_int(cli->cfg, "topic.partitions");
	int replication = (int)id_config_int(cli->cfg, "topic.replication_factor");

	rd_kafka_t *rk =
	    id_kafka_producer_create(cli->cfg, "idstream-topics", NULL, &err);
	if (rk == NULL)
		return cli_fail("connecting to Kafka", &err);

	for (int i = 0; i < NT; i++) {
		char errstr[256];
		id_config_topic(cli->cfg, suffixes[i], names[i], sizeof(names[i]));
		nt[i] = rd_kafka_NewTopic_new(names[i], i == CONTROL ? 1 : partitions,
		                              replication, errstr, sizeof(errstr));
		if (nt[i] == NULL) {
			id_err_set(&err, ID_EINVALID, "%s: %s", names[i], errstr);
			rc = cli_fail("topics create", &err);
			goto out;
		}
		if (i == 0 || i == CONTROL || i == CLAIMS) {
			/* The HR log is the source of truth, and operator decisions
			 * and name claims are part of it: keep them forever. */
			rd_kafka_NewTopic_set_config(nt[i], "retention.ms", "-1");
			rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "delete");
		}
		if (replication > 1)
			rd_kafka_NewTopic_set_config(nt[i], "min.insync.replicas", "2");
	}
	q = rd_kafka_queue_new(rk);
	opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	rd_kafka_AdminOptions_set_operation_timeout(opts, 30000, NULL, 0);
	rd_kafka_AdminOptions_set_request_timeout(opts, 30000, NULL, 0);
	rd_kafka_CreateTopics(rk, nt, NT, opts, q);
	ev = rd_kafka_queue_poll(q, 60000);
	if (ev == NULL || rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		id_err_set(&err, ID_EKAFKA, "%s",
		           ev ? rd_kafka_event_error_string(ev)
		              : "no answer from Kafka in 60 s");
		rc = cli_fail("topics create", &err);
		goto out;
	}
	size_t n = 0;
	const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(
	    rd_kafka_event_CreateTopics_result(ev), &n);
	rc = CLI_EXIT_OK;
	for (size_t i = 0; i < n; i++) {
		const char *name = rd_kafka_topic_result_name(res[i]);
		rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
		int32_t have = 0;
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
			printf("created %s (%d partitions)\n", name,
			       strcmp(name, names[CONTROL]) == 0 ? 1 : partitions);
		} else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
			if (id_kafka_partition_count(rk, name, &have, &err) == 0)
				printf("exists  %s (%d partitions)\n", name, have);
			else
				printf("exists  %s\n", name);
		} else {
			fprintf(stderr, "idstream: topics create: %s: %s\n", name,
			        rd_kafka_topic_result_error_string(res[i]));
			rc = CLI_EXIT_FAIL;
		}
	}
out:
	if (ev != NULL)
		rd_kafka_event_destroy(ev);
	if (opts != NULL)
		rd_kafka_AdminOptions_destroy(opts);
	if (q != NULL)
		rd_kafka_queue_destroy(q);
	for (int i = 0; i < NT; i++)
		if (nt[i] != NULL)
			rd_kafka_NewTopic_destroy(nt[i]);
	id_kafka_destroy(rk);
	return rc;
}
