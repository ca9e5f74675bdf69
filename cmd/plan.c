/*
 * plan.c — `idstream plan [--policy NEW.lua] [--at TIME] [--json]`: what a
 * mapping change would do, before doing it.
 *
 * Replays <prefix>.hr.events from offset 0 into isolated, in-memory scratch
 * state with the candidate mapping (a Lua policy, or the built-in mapping
 * when --policy is not given) and compares each employee's resulting
 * desired identity with the newest one in <prefix>.identity.desired.
 * Production state is never touched: no consumer group is joined and
 * nothing is written.  With --at, only events effective at or before TIME
 * are replayed and compared with the versions current at TIME.
 *
 * The summary counts employees per kind of change (creates, attribute
 * updates, renames, moves, group adds/removes per group, disables,
 * deletes); --json gives every employee's diff.  Exit status like
 * `terraform plan -detailed-exitcode`: 0 no changes, 2 changes, 1 error.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "cmd/scan.h"
#include "cmd/timeline.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "processors/employee_record.h"
#include "processors/fold.h"
#include "processors/mapping.h"
#include "processors/policy.h"
#include "schemas/codec.h"

typedef struct plan_emp {
	employee_record_t rec;      /* scratch fold state */
	desired_identity_t planned; /* the new mapping's newest output */
	desired_identity_t current; /* newest in identity.desired */
	bool has_planned, has_current;
} plan_emp_t;

typedef struct plan {
	codec_t *codec;
	mapping_t *mapping;
	int64_t at; /* INT64_MAX: no --at */
	id_hmap_t emps;
	long events, refused;
	bool progress;
	long total_hint;
	time_t started;
} plan_t;

static plan_emp_t *plan_emp(plan_t *p, const char *id, id_err_t *err)
{
	plan_emp_t *e = id_hmap_get(&p->emps, id);
	if (e != NULL)
		return e;
	if ((e = calloc(1, sizeof(*e))) == NULL || id_hmap_put(&p->emps, id, e) != 0) {
		free(e);
		id_err_set(err, ID_ENOMEM, "out of memory");
		return NULL;
	}
	employee_record_init(&e->rec);
	desired_identity_init(&e->planned);
	desired_identity_init(&e->current);
	return e;
}

static void plan_progress(plan_t *p, bool done)
{
	if (!p->progress || (!done && p->events % 5000 != 0))
		return;
	double secs = difftime(time(NULL), p->started);
	double rate = secs > 0 ? (double)p->events / secs : 0;
	if (p->total_hint > 0) {
		double left = rate > 0 ? (double)(p->total_hint - p->events) / rate : 0;
		fprintf(
		    stderr,
		    "\rreplaying: %ld/%ld events (%.0f%%), %.0f events/s, %.0f s left   ",
		    p->events, p->total_hint,
		    100.0 * (double)p->events / (double)p->total_hint, rate,
		    left > 0 ? left : 0);
	} else {
		fprintf(stderr, "\rreplaying: %ld events, %.0f events/s   ", p->events,
		        rate);
	}
	if (done)
		fputc('\n', stderr);
}

static int plan_fold(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	plan_t *p = opaque;
	employee_event_t ev;
	desired_identity_t d;
	bool emitted = false;
	int rc = 0;
	employee_event_init(&ev);
	desired_identity_init(&d);
	p->events++;
	plan_progress(p, false);
	if (codec_decode_event(p->codec, m->payload, m->len, &ev, NULL) != 0) {
		p->refused++;
		goto out;
	}
	if (ev.effective_at > p->at)
		goto out;
	plan_emp_t *e = plan_emp(p, ev.employee_id, err);
	if (e == NULL) {
		rc = ID_ENOMEM;
		goto out;
	}
	int frc = fold_apply(&e->rec, &ev, p->mapping, &d, &emitted, NULL);
	if (frc == ID_ENOMEM) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if (frc != 0) {
		p->refused++;
		goto out;
	}
	if (emitted) {
		desired_identity_fini(&e->planned);
		e->planned = d;
		desired_identity_init(&d);
		e->has_planned = true;
	}
out:
	desired_identity_fini(&d);
	employee_event_fini(&ev);
	return rc;
}

static int plan_current(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	plan_t *p = opaque;
	desired_identity_t d;
	desired_identity_init(&d);
	if (codec_decode_desired(p->codec, m->payload, m->len, &d, NULL) != 0 ||
	    d.effective_at > p->at) {
		desired_identity_fini(&d);
		return 0;
	}
	plan_emp_t *e = plan_emp(p, d.employee_id, err);
	if (e == NULL) {
		desired_identity_fini(&d);
		return ID_ENOMEM;
	}
	if (!e->has_current || d.version > e->current.version) {
		desired_identity_fini(&e->current);
		e->current = d;
		e->has_current = true;
	} else {
		desired_identity_fini(&d);
	}
	return 0;
}

/* Counters of the summary.  Group changes are counted per group. */
typedef struct plan_sum {
	long creates, updates, renames, moves, disables, enables, deletes, unchanged;
	id_hmap_t attr_updates; /* attribute → long* */
	id_hmap_t group_adds;   /* group → long* */
	id_hmap_t group_removes;
} plan_sum_t;

static void sum_bump(id_hmap_t *m, const char *key)
{
	long *n = id_hmap_get(m, key);
	if (n == NULL) {
		if ((n = calloc(1, sizeof(*n))) == NULL || id_hmap_put(m, key, n) != 0) {
			free(n);
			return;
		}
	}
	(*n)++;
}

static bool is_off(const desired_identity_t *d)
{
	return d->state == LC_DISABLED || d->state == LC_DELETED;
}

static bool str_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool has_group(const desired_identity_t *d, const char *g)
{
	for (size_t i = 0; i < d->ngroups; i++)
		if (strcmp(d->groups[i], g) == 0)
			return true;
	return false;
}

/* Diffs one employee; returns a JSON object of the changes or NULL. */
static json_t *plan_diff(const char *id, const plan_emp_t *e, plan_sum_t *s)
{
	const desired_identity_t *a = e->has_current ? &e->current : NULL;
	const desired_identity_t *b = e->has_planned ? &e->planned : NULL;
	if (a != NULL && b != NULL && desired_identity_same_target_state(a, b)) {
		s->unchanged++;
		return NULL;
	}
	if (a != NULL && b != NULL && !str_same(a->policy_version, b->policy_version) &&
	    a->state == b->state && str_same(a->container, b->container) &&
	    str_same(a->manager_id, b->manager_id) &&
	    id_attrs_equal(&a->attributes, &b->attributes) && a->ngroups == b->ngroups) {
		bool same_groups = true;
		for (size_t i = 0; i < a->ngroups; i++)
			same_groups =
			    same_groups && strcmp(a->groups[i], b->groups[i]) == 0;
		if (same_groups) {
			s->unchanged++; /* only the policy version differs */
			return NULL;
		}
	}
	json_t *o = json_pack("{s:s}", "employee_id", id);
	json_t *changes = json_array();
	if (a == NULL ||
	    (is_off(a) && b != NULL && !is_off(b) && a->state == LC_DELETED)) {
		s->creates++;
		json_array_append_new(changes, json_pack("{s:s}", "kind", "create"));
	}
	if (b == NULL) {
		s->deletes++;
		json_array_append_new(changes, json_pack("{s:s}", "kind", "delete"));
	}
	if (a != NULL && b != NULL) {
		if (!is_off(a) && is_off(b)) {
			if (b->state == LC_DELETED)
				s->deletes++;
			else
				s->disables++;
			json_array_append_new(
			    changes,
			    json_pack("{s:s, s:s}", "kind",
			              b->state == LC_DELETED ? "delete" : "disable",
			              "state", lifecycle_state_name(b->state)));
		} else if (is_off(a) && !is_off(b)) {
			s->enables++;
			json_array_append_new(changes,
			                      json_pack("{s:s}", "kind", "enable"));
		}
		const char *ua = id_attrs_get(&a->attributes, "uid");
		const char *ub = id_attrs_get(&b->attributes, "uid");
		if (!str_same(ua, ub)) {
			s->renames++;
			json_array_append_new(changes,
			                      json_pack("{s:s, s:s?, s:s?}", "kind",
			                                "rename", "old", ua, "new", ub));
		}
		if (!str_same(a->container, b->container)) {
			s->moves++;
			json_array_append_new(
			    changes, json_pack("{s:s, s:s?, s:s?}", "kind", "move", "old",
			                       a->container, "new", b->container));
		}
		bool counted = false;
		/* Attributes: union of both maps, both sorted. */
		size_t i = 0, k = 0;
		while (i < a->attributes.len || k < b->attributes.len) {
			const id_kv_t *x =
			    i < a->attributes.len ? &a->attributes.items[i] : NULL;
			const id_kv_t *y =
			    k < b->attributes.len ? &b->attributes.items[k] : NULL;
			int c = x == NULL ? 1 : y == NULL ? -1 : strcmp(x->key, y->key);
			const char *key = c <= 0 ? x->key : y->key;
			const char *ov = c <= 0 ? x->value : NULL,
			           *nv = c >= 0 ? y->value : NULL;
			if (c <= 0)
				i++;
			if (c >= 0)
				k++;
			if (str_same(ov, nv) || strcmp(key, "uid") == 0)
				continue;
			sum_bump(&s->attr_updates, key);
			if (!counted) {
				s->updates++;
				counted = true;
			}
			json_array_append_new(changes,
			                      json_pack("{s:s, s:s, s:s?, s:s?}", "kind",
			                                "attribute", "attribute", key,
			                                "old", ov, "new", nv));
		}
		for (size_t g = 0; g < b->ngroups; g++)
			if (!has_group(a, b->groups[g])) {
				sum_bump(&s->group_adds, b->groups[g]);
				json_array_append_new(
				    changes, json_pack("{s:s, s:s}", "kind", "group_add",
				                       "group", b->groups[g]));
			}
		for (size_t g = 0; g < a->ngroups; g++)
			if (!has_group(b, a->groups[g])) {
				sum_bump(&s->group_removes, a->groups[g]);
				json_array_append_new(changes,
				                      json_pack("{s:s, s:s}", "kind",
				                                "group_remove", "group",
				                                a->groups[g]));
			}
	}
	if (json_array_size(changes) == 0) {
		json_decref(changes);
		json_decref(o);
		s->unchanged++;
		return NULL;
	}
	json_object_set_new(o, "changes", changes);
	return o;
}

static void sum_print(const char *title, id_hmap_t *m, const char *verb)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key != NULL)
			printf("  %6ld users %s %s %s\n", *(long *)m->slots[i].value,
			       verb, title, m->slots[i].key);
}

static json_t *sum_json(id_hmap_t *m)
{
	json_t *o = json_object();
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key != NULL)
			json_object_set_new(o, m->slots[i].key,
			                    json_integer(*(long *)m->slots[i].value));
	return o;
}

static void sum_free(id_hmap_t *m)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key != NULL)
			free(m->slots[i].value);
	id_hmap_fini(m);
}

static int cmp_key(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static void plan_usage(void)
{
	printf(
	    "usage: idstream plan [--policy NEW.lua] [--at TIME] [--json]\n"
	    "\n"
	    "Replays hr.events from the start into scratch state with the candidate\n"
	    "mapping (a Lua policy; without --policy, the built-in mapping) and lists\n"
	    "what would change against the current desired identities: a summary per\n"
	    "kind of change and each employee's diff. Reads production topics only;\n"
	    "writes nothing. Exit status: 0 no changes, 2 changes, 1 error.\n"
	    "\n"
	    "  --policy FILE  the candidate Lua policy (its ldap target is compared)\n"
	    "  --at TIME      only events effective up to TIME (YYYY-MM-DD or ISO-8601)\n"
	    "  --json         the whole plan as JSON\n");
}

int cmd_plan(cli_t *cli, int argc, char **argv)
{
	const char *policy_path = NULL, *at = NULL;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			plan_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc) {
			policy_path = argv[++i];
		} else if (strcmp(argv[i], "--at") == 0 && i + 1 < argc) {
			at = argv[++i];
		} else {
			return cli_usage_error("plan", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	plan_t p = {.at = INT64_MAX};
	if (at != NULL && timeline_parse_time(at, &p.at) != 0)
		return cli_usage_error("plan", "cannot read TIME \"%s\"", at);
	id_err_t err = {0};
	int rc = CLI_EXIT_FAIL;
	policy_t *policy = NULL;
	rd_kafka_t *rk = NULL;
	plan_sum_t s = {0};
	const char **keys = NULL;
	json_t *diffs = json_array();
	char in_topic[256], out_topic[256];
	int32_t nin = 0, nout = 0;
	long ncur = 0;
	id_hmap_init(&p.emps);
	id_hmap_init(&s.attr_updates);
	id_hmap_init(&s.group_adds);
	id_hmap_init(&s.group_removes);
	id_config_topic(cli->cfg, "hr.events", in_topic, sizeof(in_topic));
	id_config_topic(cli->cfg, "identity.desired", out_topic, sizeof(out_topic));
	if (policy_path != NULL) {
		if ((policy = policy_load_file(policy_path, NULL, &err)) == NULL ||
		    (p.mapping = policy_mapping_create(policy, "ldap", &err)) == NULL) {
			cli_fail("plan", &err);
			goto out;
		}
	} else if ((p.mapping = mapping_create_default(
	                id_config_str(cli->cfg, "mapping.mail_domain"), &err)) == NULL) {
		cli_fail("plan", &err);
		goto out;
	}
	if ((p.codec = codec_create(&err)) == NULL ||
	    (rk = id_kafka_consumer_create(cli->cfg, "idstream-plan", NULL, NULL, NULL,
	                                   &err)) == NULL ||
	    id_kafka_partition_count(rk, in_topic, &nin, &err) != 0 ||
	    id_kafka_partition_count(rk, out_topic, &nout, &err) != 0) {
		cli_fail("plan", &err);
		goto out;
	}
	for (int32_t q = 0; q < nin; q++) {
		int64_t lo = 0, hi = 0;
		if (rd_kafka_query_watermark_offsets(rk, in_topic, q, &lo, &hi, 10000) ==
		    0)
			p.total_hint += (long)(hi - lo);
	}
	p.progress = isatty(STDERR_FILENO);
	p.started = time(NULL);
	long scanned = 0;
	if (scan_topic(rk, in_topic, nin, plan_fold, &p, &scanned, &err) != 0 ||
	    scan_topic(rk, out_topic, nout, plan_current, &p, &ncur, &err) != 0) {
		cli_fail("plan", &err);
		goto out;
	}
	plan_progress(&p, true);
	keys = malloc((p.emps.len ? p.emps.len : 1) * sizeof(*keys));
	size_t n = 0;
	for (size_t i = 0; keys != NULL && i < p.emps.cap; i++)
		if (p.emps.slots[i].key != NULL)
			keys[n++] = p.emps.slots[i].key;
	if (keys == NULL) {
		cli_fail("out of memory", NULL);
		goto out;
	}
	qsort(keys, n, sizeof(*keys), cmp_key);
	for (size_t i = 0; i < n; i++) {
		json_t *d = plan_diff(keys[i], id_hmap_get(&p.emps, keys[i]), &s);
		if (d != NULL)
			json_array_append_new(diffs, d);
	}
	size_t changed = json_array_size(diffs);
	const char *version =
	    policy ? policy_version(policy) : mapping_version(p.mapping);
	if (as_json) {
		json_t *o = json_pack(
		    "{s:s, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, "
		    "s:o, s:o}, "
		    "s:O}",
		    "policy_version", version, "events_replayed", (json_int_t)p.events,
		    "employees", (json_int_t)n, "summary", "creates",
		    (json_int_t)s.creates, "attribute_updates", (json_int_t)s.updates,
		    "renames", (json_int_t)s.renames, "moves", (json_int_t)s.moves,
		    "disables", (json_int_t)s.disables, "enables", (json_int_t)s.enables,
		    "deletes", (json_int_t)s.deletes, "unchanged",
		    (json_int_t)s.unchanged, "attributes", sum_json(&s.attr_updates),
		    "group_adds", sum_json(&s.group_adds), "group_removes",
		    sum_json(&s.group_removes), "employees_changed", diffs);
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(o);
	} else {
		printf("plan for %s: replayed %ld events of %ld employees against %ld "
		       "current "
		       "desired versions\n",
		       version, p.events, (long)n, ncur);
		if (changed == 0) {
			printf("no changes\n");
		} else {
			printf("%zu employees change:\n", changed);
			printf("  %6ld creates\n  %6ld with attribute updates\n  %6ld "
			       "renames\n"
			       "  %6ld moves\n  %6ld disables\n  %6ld enables\n  %6ld "
			       "deletes\n",
			       s.creates, s.updates, s.renames, s.moves, s.disables,
			       s.enables, s.deletes);
			sum_print("attribute", &s.attr_updates, "change");
			sum_print("group", &s.group_adds, "join");
			sum_print("group", &s.group_removes, "leave");
			printf("per employee:\n");
			for (size_t i = 0; i < changed; i++) {
				json_t *d = json_array_get(diffs, i);
				json_t *ch = json_object_get(d, "changes");
				printf("  %s:", json_string_value(
				                    json_object_get(d, "employee_id")));
				for (size_t k = 0; k < json_array_size(ch); k++) {
					json_t *c = json_array_get(ch, k);
					const char *kind =
					    json_string_value(json_object_get(c, "kind"));
					const char *what = json_string_value(
					    json_object_get(c, "attribute"));
					if (what == NULL)
						what = json_string_value(
						    json_object_get(c, "group"));
					const char *nv =
					    json_string_value(json_object_get(c, "new"));
					printf(" %s%s%s%s%s", k ? "; " : "", kind,
					       what ? " " : "", what ? what : "",
					       nv ? "" : "");
					if (nv != NULL)
						printf(" → %s", nv);
				}
				printf("\n");
			}
		}
	}
	rc = changed == 0 ? CLI_EXIT_OK : 2;
out:
	free(keys);
	json_decref(diffs);
	for (size_t i = 0; i < p.emps.cap; i++) {
		plan_emp_t *e = p.emps.slots[i].value;
		if (p.emps.slots[i].key != NULL && e != NULL) {
			employee_record_fini(&e->rec);
			desired_identity_fini(&e->planned);
			desired_identity_fini(&e->current);
			free(e);
		}
	}
	id_hmap_fini(&p.emps);
	sum_free(&s.attr_updates);
	sum_free(&s.group_adds);
	sum_free(&s.group_removes);
	mapping_destroy(p.mapping);
	policy_destroy(policy);
	codec_destroy(p.codec);
	id_kafka_destroy(rk);
	return rc;
}
