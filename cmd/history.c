/*
 * history.c — `idstream history EMPLOYEE_ID [--json] [--verbose]`: the
 * employee's HR events, desired identity versions, sink results and the
 * policy activations that changed the employee, in time order.
 *
 * The records come from timeline_load() (the index, or the one partition of
 * each topic that can hold the employee).  Entries are ordered by their
 * Kafka timestamps (append time of the log), which is the order in which the
 * pipeline saw them.  A policy activation's line names the policy and its
 * version; its Lua source is shown by --verbose and --json only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cli.h"
#include "cmd/timeline.h"
#include "common/buf.h"
#include "common/kafka.h"
#include "common/log.h"
#include "processors/policy_registry.h"
#include "schemas/codec.h"

/* The printable forms of one timeline entry. */
typedef struct hist_line {
	json_t *json; /* the decoded record, for --json */
	char *line;   /* human summary */
} hist_line_t;

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

/* Up to max attributes as "key=value", leaving out a policy activation's
 * details unless verbose; its source goes on the lines below. */
static void attrs_line(id_buf_t *b, const employee_event_t *ev, size_t max, bool verbose)
{
	const id_attrs_t *a = &ev->attributes;
	const char *source = NULL;
	size_t shown = 0, more = 0;
	for (size_t i = 0; i < a->len; i++) {
		const char *k = a->items[i].key;
		if (timeline_attr_is_detail(ev, k) && !verbose)
			continue;
		if (ev->type == EV_POLICY_ACTIVATED &&
		    strcmp(k, POLICY_ATTR_SOURCE) == 0) {
			source = a->items[i].value;
			continue;
		}
		if (shown == max && !verbose) {
			more++;
			continue;
		}
		id_buf_printf(b, "%s%s=%s", shown ? " " : "", k,
		              a->items[i].value ? a->items[i].value : "(cleared)");
		shown++;
	}
	if (more > 0)
		id_buf_printf(b, " …(+%zu)", more);
	if (source == NULL)
		return;
	id_buf_printf(b, "\n%35s%s:", "", POLICY_ATTR_SOURCE);
	while (*source != '\0') {
		size_t n = strcspn(source, "\n");
		id_buf_printf(b, "\n%37s%.*s", "", (int)n, source);
		source += n + (source[n] == '\n');
	}
}

static int hist_add_event(hist_line_t *e, const employee_event_t *ev, bool verbose)
{
	id_buf_t b = ID_BUF_INIT;
	char eff[64];
	timeline_fmt_time(ev->effective_at, eff, sizeof(eff));
	id_buf_printf(
	    &b, "%-10s via %s (%s) effective %s: ", employee_event_type_name(ev->type),
	    ev->source, ev->actor ? ev->actor : "-", eff);
	attrs_line(&b, ev, 8, verbose);
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

static int hist_add_desired(hist_line_t *e, const desired_identity_t *d)
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
	/* The targets out of the policy's scope, by name. */
	for (size_t i = 0, n = 0; i < d->ntargets; i++)
		if (!d->targets[i].in_scope)
			id_buf_printf(&b, "%s%s",
			              n++ ? "," : " out of scope: ", d->targets[i].name);
	id_buf_append_u8(&b, 0);
	e->line = (char *)b.data;
	json_t *targets = json_object();
	for (size_t i = 0; i < d->ntargets; i++) {
		const target_identity_t *t = &d->targets[i];
		json_t *tg = json_array();
		for (size_t k = 0; k < t->ngroups; k++)
			json_array_append_new(tg, json_string(t->groups[k]));
		json_object_set_new(
		    targets, t->name,
		    json_pack("{s:b, s:o, s:o, s:o}", "in_scope", t->in_scope,
		              "attributes", attrs_json(&t->attributes), "groups", tg,
		              "container", json_str_or_null(t->container)));
	}
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
	/* Per-target sections of a policy (empty for the built-in mapping). */
	json_object_set_new(e->json, "targets", targets);
	return 0;
}

static int hist_add_result(hist_line_t *e, const sink_result_t *r)
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

static void history_usage(void)
{
	printf("usage: idstream history EMPLOYEE_ID [--json] [--verbose]\n"
	       "\n"
	       "Shows the employee's HR events, desired identity versions and sink "
	       "results in\n"
	       "the order the pipeline saw them, and the policy activations that "
	       "changed the\n"
	       "employee. With the index (`idstream index`, run by `idstream run`) "
	       "only the\n"
	       "employee's own records are read, else the partition of each topic "
	       "that holds\n"
	       "the employee.\n"
	       "\n"
	       "  --json      one JSON array of records instead of the table (every "
	       "attribute,\n"
	       "              a policy activation's Lua source included)\n"
	       "  --verbose   the table with a policy activation's Lua source under "
	       "its line\n"
	       "              (without it: the policy's name and version)\n");
}

int cmd_history(cli_t *cli, int argc, char **argv)
{
	const char *employee = NULL;
	bool as_json = false, verbose = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			history_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else if (strcmp(argv[i], "--verbose") == 0 ||
		           strcmp(argv[i], "-v") == 0) {
			verbose = true;
		} else if (argv[i][0] != '-' && employee == NULL) {
			employee = argv[i];
		} else {
			return cli_usage_error("history", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	if (employee == NULL)
		return cli_usage_error("history", "missing EMPLOYEE_ID");

	static const char *const labels[] = {"hr", "desired", "sink"};
	id_err_t err = {0};
	timeline_t t;
	hist_line_t *lines = NULL;
	int rc = CLI_EXIT_OK;
	if (timeline_load(cli->cfg, employee, &t, &err) != 0) {
		rc = cli_fail("history", &err);
		goto out;
	}
	lines = calloc(t.len ? t.len : 1, sizeof(*lines));
	for (size_t i = 0; lines != NULL && i < t.len; i++) {
		const tl_entry_t *te = &t.items[i];
		if (te->unreadable) {
			lines[i].line = strdup(te->error);
			lines[i].json = json_pack("{s:s, s:s}", "kind", "unreadable",
			                          "error", te->error);
		} else if (te->kind == TL_EVENT) {
			hist_add_event(&lines[i], &te->ev, verbose);
		} else if (te->kind == TL_DESIRED) {
			hist_add_desired(&lines[i], &te->d);
		} else {
			hist_add_result(&lines[i], &te->r);
		}
	}
	if (lines == NULL) {
		rc = cli_fail("out of memory", NULL);
		goto out;
	}
	if (as_json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < t.len; i++) {
			json_t *o = lines[i].json;
			json_object_set_new(o, "timestamp", json_integer(t.items[i].ts));
			json_object_set_new(
			    o, "topic",
			    json_string(timeline_topic_suffix(t.items[i].kind)));
			json_object_set_new(o, "partition",
			                    json_integer(t.items[i].partition));
			json_object_set_new(o, "offset", json_integer(t.items[i].offset));
			json_array_append(arr, o);
		}
		json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(arr);
	} else if (t.len == 0) {
		printf("no history for employee %s\n", employee);
	} else {
		printf("%-24s  %-7s  %s\n", "TIME", "STREAM", "WHAT");
		for (size_t i = 0; i < t.len; i++) {
			char when[64];
			timeline_fmt_time(t.items[i].ts, when, sizeof(when));
			printf("%-24s  %-7s  %s\n", when, labels[t.items[i].kind],
			       lines[i].line);
		}
	}
out:
	for (size_t i = 0; lines != NULL && i < t.len; i++) {
		json_decref(lines[i].json);
		free(lines[i].line);
	}
	free(lines);
	timeline_fini(&t);
	return rc;
}
