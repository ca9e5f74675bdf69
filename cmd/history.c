/*
 * history.c — `idstream history EMPLOYEE_ID [--json]`: the employee's HR
 * events, desired identity versions and sink results in time order.
 *
 * All three topics are keyed by employee id with Kafka's murmur2
 * partitioner, so only the one partition of each topic that can hold the
 * employee is read (from its start to its current end).  Entries are ordered
 * by their Kafka timestamps (append time of the log), which is the order in
 * which the pipeline saw them.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cli.h"
#include "common/buf.h"
#include "common/kafka.h"
#include "common/log.h"
#include "schemas/codec.h"

typedef struct hist_entry {
	int64_t ts; /* Kafka timestamp, ms */
	int topic;  /* 0 hr.events, 1 identity.desired, 2 sink.results */
	int32_t partition;
	int64_t offset;
	json_t *json; /* the decoded record, for --json and the table */
	char *line;   /* human summary */
} hist_entry_t;

typedef struct hist {
	hist_entry_t *items;
	size_t len, cap;
} hist_t;

static void fmt_time(int64_t ms, char *out, size_t n)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(ms % 1000));
}

static json_t *json_str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *attrs_json(const id_attrs_t *a)
{
	json_t *o = json_object();
	for (size_t i = 0; i < a->len; i++)
		json_object_set_new(o, a->items[i].key,
		                    json_str_or_null(a->items[i].value));
	return o;
}

static void attrs_line(id_buf_t *b, const id_attrs_t *a, size_t max)
{
	for (size_t i = 0; i < a->len && i < max; i++)
		id_buf_printf(b, "%s%s=%s", i ? " " : "", a->items[i].key,
		              a->items[i].value ? a->items[i].value : "(cleared)");
	if (a->len > max)
		id_buf_printf(b, " …(+%zu)", a->len - max);
}

static int hist_add_event(hist_entry_t *e, const employee_event_t *ev)
{
	id_buf_t b = ID_BUF_INIT;
	char eff[64];
	fmt_time(ev->effective_at, eff, sizeof(eff));
	id_buf_printf(
	    &b, "%-10s via %s (%s) effective %s: ", employee_event_type_name(ev->type),
	    ev->source, ev->actor ? ev->actor : "-", eff);
	attrs_line(&b, &ev->attributes, 8);
	id_buf_append_u8(&b, 0);
	e->line = (char *)b.data;
	e->json = json_pack(
	    "{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:o, s:o, s:o}", "kind", "hr_event",
	    "event_id", ev->event_id, "type", employee_event_type_name(ev->type),
	    "source", ev->source, "source_event_id", ev->source_event_id, "occurred_at",
	    (json_int_t)ev->occurred_at, "effective_at", (json_int_t)ev->effective_at,
	    "attributes", attrs_json(&ev->attributes), "actor",
	    json_str_or_null(ev->actor), "reason", json_str_or_null(ev->reason));
	return 0;
}

static int hist_add_desired(hist_entry_t *e, const desired_identity_t *d)
{
	id_buf_t b = ID_BUF_INIT;
	id_buf_printf(&b, "v%-9lld %s, policy %s, cause %.12s: %s uid=%s groups=[",
	              (long long)d->version, lifecycle_state_name(d->state),
	              d->policy_version ? d->policy_version : "-",
	              d->cause_event_id ? d->cause_event_id : "-",
	              d->container ? d->container : "-",
	              id_attrs_get(&d->attributes, "uid")
	                  ? id_attrs_get(&d->attributes, "uid")
	                  : "-");
	json_t *groups = json_array();
	for (size_t i = 0; i < d->ngroups; i++) {
		id_buf_printf(&b, "%s%s", i ? "," : "", d->groups[i]);
		json_array_append_new(groups, json_string(d->groups[i]));
	}
	id_buf_append_str(&b, "]");
	id_buf_append_u8(&b, 0);
	e->line = (char *)b.data;
	json_t *causes = json_object();
	for (size_t i = 0; i < d->ncauses; i++)
		json_object_set_new(causes, d->causes[i].attribute,
		                    json_pack("{s:o, s:o}", "event_id",
		                              json_str_or_null(d->causes[i].event_id),
		                              "rule",
		                              json_str_or_null(d->causes[i].rule)));
	e->json = json_pack(
	    "{s:s, s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o}", "kind", "desired",
	    "version", (json_int_t)d->version, "state", lifecycle_state_name(d->state),
	    "attributes", attrs_json(&d->attributes), "groups", groups, "container",
	    json_str_or_null(d->container), "manager_id", json_str_or_null(d->manager_id),
	    "policy_version", json_str_or_null(d->policy_version), "cause_event_id",
	    json_str_or_null(d->cause_event_id), "effective_at",
	    (json_int_t)d->effective_at, "causes", causes);
	return 0;
}

static int hist_add_result(hist_entry_t *e, const sink_result_t *r)
{
	id_buf_t b = ID_BUF_INIT;
	id_buf_printf(&b, "%-10s %s v%lld", sink_outcome_name(r->outcome), r->target,
	              (long long)r->desired_version);
	json_t *ops = json_array();
	for (size_t i = 0; i < r->nops; i++) {
		const sink_op_t *o = &r->ops[i];
		id_buf_printf(&b, "%s %s %s", i ? ";" : ":", o->op,
		              o->attribute ? o->attribute : "");
		if (o->old_value || o->new_value)
			id_buf_printf(&b, " %s→%s", o->old_value ? o->old_value : "∅",
			              o->new_value ? o->new_value : "∅");
		json_array_append_new(
		    ops, json_pack("{s:s, s:o, s:o, s:o}", "op", o->op, "attribute",
		                   json_str_or_null(o->attribute), "old",
		                   json_str_or_null(o->old_value), "new",
		                   json_str_or_null(o->new_value)));
	}
	if (r->error)
		id_buf_printf(&b, " error: %s", r->error);
	id_buf_append_u8(&b, 0);
	e->line = (char *)b.data;
	e->json = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o, s:I}", "kind", "sink_result",
	                    "target", r->target, "desired_version",
	                    (json_int_t)r->desired_version, "outcome",
	                    sink_outcome_name(r->outcome), "operations", ops, "error",
	                    json_str_or_null(r->error), "at", (json_int_t)r->at);
	return 0;
}

/* Reads one partition of topic from start to end, keeping employee's records. */
static int hist_read(const id_config_t *cfg, rd_kafka_t *rk, codec_t *codec,
                     int topic_kind, const char *topic, const char *employee, hist_t *h,
                     id_err_t *err)
{
	int32_t nparts = 0;
	int rc = id_kafka_partition_count(rk, topic, &nparts, err);
	if (rc != 0)
		return rc;
	(void)cfg;
	int32_t part = id_kafka_partition_for_key(employee, strlen(employee), nparts);
	int64_t lo = 0, hi = 0;
	rd_kafka_resp_err_t e =
	    rd_kafka_query_watermark_offsets(rk, topic, part, &lo, &hi, 10000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		return id_kafka_err(err, e, "reading topic end offsets");
	if (hi <= lo)
		return 0;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, topic, part)->offset = lo;
	e = rd_kafka_assign(rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		return id_kafka_err(err, e, "assigning partition");
	size_t klen = strlen(employee);
	for (int idle = 0; idle < 200 && !cli_stop_requested;) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL) {
			idle++;
			continue;
		}
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR || m->key_len != klen ||
		    memcmp(m->key, employee, klen) != 0) {
			rd_kafka_message_destroy(m);
			continue;
		}
		if (h->len == h->cap) {
			h->cap = h->cap ? h->cap * 2 : 32;
			h->items = realloc(h->items, h->cap * sizeof(*h->items));
		}
		hist_entry_t *he = &h->items[h->len];
		memset(he, 0, sizeof(*he));
		he->ts = rd_kafka_message_timestamp(m, NULL);
		he->topic = topic_kind;
		he->partition = m->partition;
		he->offset = m->offset;
		id_err_t derr = {0};
		int ok = -1;
		if (topic_kind == 0) {
			employee_event_t ev;
			employee_event_init(&ev);
			if ((ok = codec_decode_event(codec, m->payload, m->len, &ev,
			                             &derr)) == 0)
				hist_add_event(he, &ev);
			employee_event_fini(&ev);
		} else if (topic_kind == 1) {
			desired_identity_t d;
			desired_identity_init(&d);
			if ((ok = codec_decode_desired(codec, m->payload, m->len, &d,
			                               &derr)) == 0)
				hist_add_desired(he, &d);
			desired_identity_fini(&d);
		} else {
			sink_result_t r;
			sink_result_init(&r);
			if ((ok = codec_decode_result(codec, m->payload, m->len, &r,
			                              &derr)) == 0)
				hist_add_result(he, &r);
			sink_result_fini(&r);
		}
		if (ok != 0) {
			he->line = strdup(derr.msg);
			he->json = json_pack("{s:s, s:s}", "kind", "unreadable", "error",
			                     derr.msg);
		}
		h->len++;
		rd_kafka_message_destroy(m);
	}
	rd_kafka_assign(rk, NULL);
	return 0;
}

static int hist_cmp(const void *a, const void *b)
{
	const hist_entry_t *x = a, *y = b;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->topic != y->topic)
		return x->topic - y->topic;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void history_usage(void)
{
	printf("usage: idstream history EMPLOYEE_ID [--json]\n"
	       "\n"
	       "Shows the employee's HR events, desired identity versions and sink "
	       "results in\n"
	       "the order the pipeline saw them. Reads only the partition of each topic "
	       "that\n"
	       "holds the employee.\n"
	       "\n"
	       "  --json   one JSON array of records instead of the table\n");
}

int cmd_history(cli_t *cli, int argc, char **argv)
{
	const char *employee = NULL;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			history_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else if (argv[i][0] != '-' && employee == NULL) {
			employee = argv[i];
		} else {
			return cli_usage_error("history", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	if (employee == NULL)
		return cli_usage_error("history", "missing EMPLOYEE_ID");

	static const char *const suffixes[] = {"hr.events", "identity.desired",
	                                       "sink.results"};
	static const char *const labels[] = {"hr", "desired", "sink"};
	id_err_t err = {0};
	hist_t h = {0};
	int rc = CLI_EXIT_OK;
	codec_t *codec = codec_create(&err);
	rd_kafka_t *rk = codec ? id_kafka_consumer_create(cli->cfg, "idstream-history",
	                                                  NULL, NULL, NULL, &err)
	                       : NULL;
	if (rk == NULL) {
		rc = cli_fail("history", &err);
		goto out;
	}
	for (int t = 0; t < 3; t++) {
		char topic[256];
		id_config_topic(cli->cfg, suffixes[t], topic, sizeof(topic));
		if (hist_read(cli->cfg, rk, codec, t, topic, employee, &h, &err) != 0) {
			rc = cli_fail("history", &err);
			goto out;
		}
	}
	qsort(h.items, h.len, sizeof(*h.items), hist_cmp);
	if (as_json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < h.len; i++) {
			json_t *o = h.items[i].json;
			json_object_set_new(o, "timestamp", json_integer(h.items[i].ts));
			json_object_set_new(o, "topic",
			                    json_string(suffixes[h.items[i].topic]));
			json_object_set_new(o, "partition",
			                    json_integer(h.items[i].partition));
			json_object_set_new(o, "offset", json_integer(h.items[i].offset));
			json_array_append(arr, o);
		}
		json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(arr);
	} else if (h.len == 0) {
		printf("no history for employee %s\n", employee);
	} else {
		printf("%-24s  %-7s  %s\n", "TIME", "STREAM", "WHAT");
		for (size_t i = 0; i < h.len; i++) {
			char when[64];
			fmt_time(h.items[i].ts, when, sizeof(when));
			printf("%-24s  %-7s  %s\n", when, labels[h.items[i].topic],
			       h.items[i].line);
		}
	}
out:
	for (size_t i = 0; i < h.len; i++) {
		json_decref(h.items[i].json);
		free(h.items[i].line);
	}
	free(h.items);
	id_kafka_destroy(rk);
	codec_destroy(codec);
	return rc;
}
