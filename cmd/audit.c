/*
 * audit.c — the question people ask about an account (`as-of` is in
 * cmd/asof.c):
 *
 *   idstream why EMPLOYEE_ID [--target T] [--attr A] [--json]
 *     For each attribute of the account in target T (and its container,
 *     groups and lifecycle state): the value, the sink operation that wrote
 *     it and when, the desired version, the rule and policy version that
 *     produced it, and the HR event that caused it (a policy activation
 *     marker, with the policy's name and version, when a deployment changed
 *     the value).  A group membership's cause is that of the version that
 *     added the group, not of the newest change to the group set.
 *
 * It reads the log itself (see timeline.h); nothing is written.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/timeline.h"
#include "processors/policy_registry.h"
#include "schemas/codec.h"

/* Aspects of an account that are not attributes; names as in the causes. */
#define WHY_STATE     "@state"
#define WHY_CONTAINER "@container"
#define WHY_GROUPS    "@groups"
#define WHY_MANAGER   "@manager_id"

typedef struct why_row {
	const char *aspect; /* attribute name or an @-aspect */
	const char *value;
	const char *group;   /* for @groups rows: the group */
	const sink_op_t *op; /* the last operation that wrote it (borrowed) */
	int64_t op_ts;
	int64_t op_version;
	const attr_cause_t *cause;
	const employee_event_t *event;
} why_row_t;

static const attr_cause_t *why_cause(const desired_identity_t *d, const char *aspect)
{
	for (size_t i = 0; i < d->ncauses; i++)
		if (strcmp(d->causes[i].attribute, aspect) == 0)
			return &d->causes[i];
	return NULL;
}

/* Does op write this aspect of the account? */
static bool why_op_matches(const sink_op_t *op, const char *aspect, const char *group)
{
	const char *a = op->attribute ? op->attribute : "";
	if (strcmp(aspect, WHY_STATE) == 0)
		return strcmp(op->op, "disable") == 0 || strcmp(op->op, "enable") == 0 ||
		       strcmp(op->op, "delete") == 0;
	if (strcmp(aspect, WHY_GROUPS) == 0)
		return (strcmp(op->op, "group_add") == 0 ||
		        strcmp(op->op, "group_remove") == 0) &&
		       group != NULL && strcmp(a, group) == 0;
	if (strcmp(aspect, WHY_CONTAINER) == 0)
		return strcmp(op->op, "modrdn") == 0 || strcmp(op->op, "move") == 0 ||
		       ((strcmp(op->op, "add") == 0 || strcmp(op->op, "create") == 0) &&
		        strcmp(a, "dn") == 0);
	if (strcmp(op->op, "group_add") == 0 || strcmp(op->op, "group_remove") == 0 ||
	    strncmp(op->op, "create_", 7) == 0 || strcmp(op->op, "delete_group") == 0)
		return false;
	return strcmp(a, aspect) == 0;
}

static bool why_has_group(const desired_identity_t *d, const char *group)
{
	for (size_t i = 0; i < d->ngroups; i++)
		if (strcmp(d->groups[i], group) == 0)
			return true;
	return false;
}

/*
 * The version, up to d, since which d's group membership has held without a
 * break: its "@groups" cause is the membership's.  d's own cause names the
 * newest change of the group set, which may be another group's.
 */
static const desired_identity_t *
why_member_since(const timeline_t *t, const desired_identity_t *d, const char *group)
{
	const desired_identity_t *since = NULL, *prev = NULL;
	for (;;) {
		/* The next version after prev, up to d (entries are in time
		 * order, but versions decide). */
		const desired_identity_t *next = NULL;
		for (size_t i = 0; i < t->len; i++) {
			const desired_identity_t *c = &t->items[i].d;
			if (t->items[i].kind != TL_DESIRED || t->items[i].unreadable ||
			    c->version > d->version ||
			    (prev != NULL && c->version <= prev->version))
				continue;
			if (next == NULL || c->version < next->version)
				next = c;
		}
		if (next == NULL)
			return since != NULL ? since : d;
		if (!why_has_group(next, group))
			since = NULL;
		else if (since == NULL)
			since = next;
		prev = next;
	}
}

static void why_fill(const timeline_t *t, const char *target, why_row_t *row,
                     const desired_identity_t *d)
{
	const desired_identity_t *cd = d;
	if (row->group != NULL)
		cd = why_member_since(t, d, row->group);
	row->cause = why_cause(cd, row->aspect);
	row->event = row->cause ? timeline_find_event(t, row->cause->event_id) : NULL;
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind != TL_RESULT || te->unreadable || te->r.target == NULL ||
		    strcmp(te->r.target, target) != 0)
			continue;
		for (size_t k = 0; k < te->r.nops; k++) {
			if (why_op_matches(&te->r.ops[k], row->aspect, row->group)) {
				row->op = &te->r.ops[k];
				row->op_ts = te->ts;
				row->op_version = te->r.desired_version;
			}
		}
	}
}

static json_t *jstr(const char *s)
{
	return s ? json_string(s) : json_null();
}

static const char *why_attr(const employee_event_t *ev, const char *key)
{
	const char *v = id_attrs_get(&ev->attributes, key);
	return v != NULL ? v : "-";
}

/* A policy activation's policy: its file name, or the built-in mapping. */
static const char *why_policy_name(const employee_event_t *ev)
{
	if (id_attrs_get(&ev->attributes, POLICY_ATTR_BUILTIN) != NULL)
		return "(built-in mapping)";
	return why_attr(ev, POLICY_ATTR_NAME);
}

/* The event behind a value; a policy activation with its policy's name,
 * version and deployment (not its source). */
static json_t *why_event_json(const employee_event_t *ev)
{
	json_t *o =
	    json_pack("{s:o, s:s, s:o, s:I, s:o, s:o}", "event_id", jstr(ev->event_id),
	              "type", employee_event_type_name(ev->type), "source",
	              jstr(ev->source), "effective_at", (json_int_t)ev->effective_at,
	              "actor", jstr(ev->actor), "reason", jstr(ev->reason));
	if (ev->type == EV_POLICY_ACTIVATED) {
		json_object_set_new(
		    o, "policy_name",
		    jstr(id_attrs_get(&ev->attributes, POLICY_ATTR_NAME)));
		json_object_set_new(
		    o, "policy_version",
		    jstr(id_attrs_get(&ev->attributes, POLICY_ATTR_VERSION)));
		json_object_set_new(
		    o, "policy_builtin",
		    jstr(id_attrs_get(&ev->attributes, POLICY_ATTR_BUILTIN)));
		json_object_set_new(
		    o, "deployment_id",
		    jstr(id_attrs_get(&ev->attributes, POLICY_ATTR_DEPLOYMENT)));
	}
	return o;
}

/* The version the target has: the newest one its sink applied or found
 * already right (*applied); without any, the newest desired version
 * (*applied = -1).  NULL when there is no version. */
static const desired_identity_t *why_pick(const timeline_t *t, const char *target,
                                          int64_t *applied)
{
	const desired_identity_t *d = NULL;
	*applied = -1;
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind == TL_RESULT && !te->unreadable && te->r.target != NULL &&
		    strcmp(te->r.target, target) == 0 &&
		    (te->r.outcome == SINK_APPLIED || te->r.outcome == SINK_NOOP) &&
		    te->r.desired_version > *applied)
			*applied = te->r.desired_version;
	}
	for (size_t i = 0; i < t->len; i++) {
		const tl_entry_t *te = &t->items[i];
		if (te->kind != TL_DESIRED || te->unreadable)
			continue;
		if (*applied >= 0 ? te->d.version == *applied
		                  : (d == NULL || te->d.version > d->version))
			d = &te->d;
	}
	return d;
}

/*
 * What an answer needs (timeline_need_fn; opaque: the target): the version
 * the target has, and the HR events it names: that version's causes, and
 * for each of its groups the cause of the version since which it is a
 * member.
 */
static int why_need_events(const timeline_t *t, void *opaque, const char ***ids,
                           size_t *n, int64_t *explains)
{
	int64_t applied;
	const desired_identity_t *d = why_pick(t, opaque, &applied);
	*ids = NULL;
	*n = 0;
	*explains = d != NULL ? d->version : -1;
	if (d == NULL)
		return 0;
	const char **v = malloc((d->ncauses + d->ngroups + 2) * sizeof(*v));
	if (v == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < d->ncauses; i++)
		if (d->causes[i].event_id != NULL)
			v[(*n)++] = d->causes[i].event_id;
	if (d->cause_event_id != NULL)
		v[(*n)++] = d->cause_event_id;
	for (size_t g = 0; g < d->ngroups; g++) {
		const attr_cause_t *c =
		    why_cause(why_member_since(t, d, d->groups[g]), WHY_GROUPS);
		if (c != NULL && c->event_id != NULL)
			v[(*n)++] = c->event_id;
	}
	*ids = v;
	return 0;
}

static void why_usage(void)
{
	printf(
	    "usage: idstream why EMPLOYEE_ID [--target T] [--attr A] [--json]\n"
	    "\n"
	    "Explains the employee's account in target T (default: the ldap sink's\n"
	    "target): for every attribute, its container, groups and lifecycle state,\n"
	    "the sink operation that wrote it and when, the desired version, the rule\n"
	    "and policy version that produced it, and the HR event that caused it (for\n"
	    "a value a policy deployment changed: the activation, with the policy's\n"
	    "name and version).\n"
	    "\n"
	    "With the index (`idstream index`, run by `idstream run`) it reads only the\n"
	    "records behind the answer; without it, the employee's partitions.\n"
	    "\n"
	    "  --target T  a sink target name (sink.<kind>.target)\n"
	    "  --attr A    one attribute; also @state, @container, @groups, @manager_id\n"
	    "  --json      machine-readable output\n");
}

int cmd_why(cli_t *cli, int argc, char **argv)
{
	const char *employee = NULL, *target = NULL, *attr = NULL;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			why_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else if (strcmp(argv[i], "--target") == 0 && i + 1 < argc) {
			target = argv[++i];
		} else if (strcmp(argv[i], "--attr") == 0 && i + 1 < argc) {
			attr = argv[++i];
		} else if (argv[i][0] != '-' && employee == NULL) {
			employee = argv[i];
		} else {
			return cli_usage_error("why", "unknown argument \"%s\"", argv[i]);
		}
	}
	if (employee == NULL)
		return cli_usage_error("why", "missing EMPLOYEE_ID");
	if (target == NULL)
		target = id_config_str(cli->cfg, "sink.ldap.target");

	id_err_t err = {0};
	timeline_t t;
	why_row_t *rows = NULL;
	size_t nrows = 0;
	int rc = CLI_EXIT_OK;
	if (timeline_load_events(cli->cfg, employee, why_need_events, (void *)target, &t,
	                         &err) != 0) {
		rc = cli_fail("why", &err);
		goto out;
	}
	/* What the target was given: a policy's section for it (a version
	 * without one is shown as it is). */
	for (size_t i = 0; i < t.len; i++)
		if (t.items[i].kind == TL_DESIRED && !t.items[i].unreadable)
			(void)desired_identity_target_view(&t.items[i].d, target, NULL);
	int64_t applied = -1;
	const desired_identity_t *d = why_pick(&t, target, &applied);
	if (d == NULL) {
		fprintf(stderr, "idstream: why: employee %s has no desired identity\n",
		        employee);
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	rows = calloc(d->attributes.len + d->ngroups + 4, sizeof(*rows));
	if (rows == NULL) {
		rc = cli_fail("out of memory", NULL);
		goto out;
	}
	rows[nrows++] =
	    (why_row_t){.aspect = WHY_STATE, .value = lifecycle_state_name(d->state)};
	rows[nrows++] = (why_row_t){.aspect = WHY_CONTAINER, .value = d->container};
	if (d->manager_id != NULL)
		rows[nrows++] =
		    (why_row_t){.aspect = WHY_MANAGER, .value = d->manager_id};
	for (size_t i = 0; i < d->attributes.len; i++)
		rows[nrows++] = (why_row_t){.aspect = d->attributes.items[i].key,
		                            .value = d->attributes.items[i].value};
	for (size_t i = 0; i < d->ngroups; i++)
		rows[nrows++] = (why_row_t){
		    .aspect = WHY_GROUPS, .value = d->groups[i], .group = d->groups[i]};
	size_t shown = 0;
	for (size_t i = 0; i < nrows; i++) {
		if (attr != NULL && strcmp(rows[i].aspect, attr) != 0)
			continue;
		why_fill(&t, target, &rows[i], d);
		shown++;
	}
	if (attr != NULL && shown == 0) {
		fprintf(stderr,
		        "idstream: why: employee %s has no attribute \"%s\" in desired "
		        "v%lld\n",
		        employee, attr, (long long)d->version);
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	if (as_json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < nrows; i++) {
			why_row_t *w = &rows[i];
			if (attr != NULL && strcmp(w->aspect, attr) != 0)
				continue;
			json_t *o = json_pack("{s:s, s:o, s:I, s:o}", "attribute",
			                      w->aspect, "value", jstr(w->value),
			                      "desired_version", (json_int_t)d->version,
			                      "policy_version", jstr(d->policy_version));
			if (w->op != NULL)
				json_object_set_new(
				    o, "written",
				    json_pack("{s:s, s:o, s:o, s:I, s:I}", "op",
				              w->op->op, "old", jstr(w->op->old_value),
				              "new", jstr(w->op->new_value), "at",
				              (json_int_t)w->op_ts, "desired_version",
				              (json_int_t)w->op_version));
			if (w->cause != NULL)
				json_object_set_new(o, "rule", jstr(w->cause->rule));
			if (w->event != NULL)
				json_object_set_new(o, "hr_event",
				                    why_event_json(w->event));
			json_array_append_new(arr, o);
		}
		json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(arr);
		goto out;
	}
	printf("employee %s in %s: desired v%lld (%s), policy %s%s\n", employee, target,
	       (long long)d->version, lifecycle_state_name(d->state),
	       d->policy_version ? d->policy_version : "-",
	       applied >= 0 ? "" : " — not applied to this target yet");
	printf("%-18s %-32s %-44s %-20s %s\n", "ATTRIBUTE", "VALUE", "WRITTEN", "RULE",
	       "HR EVENT");
	for (size_t i = 0; i < nrows; i++) {
		why_row_t *w = &rows[i];
		if (attr != NULL && strcmp(w->aspect, attr) != 0)
			continue;
		char written[128] = "-", ev[256] = "-", when[64];
		if (w->op != NULL) {
			timeline_fmt_time(w->op_ts, when, sizeof(when));
			snprintf(written, sizeof(written), "%s v%lld %s", w->op->op,
			         (long long)w->op_version, when);
		}
		if (w->event != NULL && w->event->type == EV_POLICY_ACTIVATED) {
			timeline_fmt_time(w->event->effective_at, when, sizeof(when));
			snprintf(ev, sizeof(ev),
			         "POLICY_ACTIVATED %s %s effective %s by %s %.12s",
			         why_policy_name(w->event),
			         why_attr(w->event, POLICY_ATTR_VERSION), when,
			         w->event->actor ? w->event->actor : "-",
			         w->event->event_id);
		} else if (w->event != NULL) {
			timeline_fmt_time(w->event->effective_at, when, sizeof(when));
			snprintf(ev, sizeof(ev), "%s effective %s via %s (%s) %.12s",
			         employee_event_type_name(w->event->type), when,
			         w->event->source,
			         w->event->actor ? w->event->actor : "-",
			         w->event->event_id);
		} else if (w->cause != NULL && w->cause->event_id != NULL) {
			snprintf(ev, sizeof(ev), "event %.12s (not in hr.events)",
			         w->cause->event_id);
		}
		printf("%-18s %-32.32s %-44s %-20s %s\n",
		       strcmp(w->aspect, WHY_GROUPS) == 0 ? "@group" : w->aspect,
		       w->value ? w->value : "-", written,
		       w->cause && w->cause->rule ? w->cause->rule : "-", ev);
	}
out:
	free(rows);
	timeline_fini(&t);
	return rc;
}
