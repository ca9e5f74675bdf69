/*
 * plan.c — `idstream plan [--policy NEW.lua [--at TIME] [--out PLAN.json]]
 * [--json]`: what a mapping change would do, before doing it; and
 * `idstream apply PLAN.json`: deploy the planned policy when the plan still
 * holds, then check that what happened is what was planned.
 *
 * plan replays <prefix>.hr.events from offset 0 into isolated, in-memory
 * scratch state and compares each employee's resulting desired identity
 * with the newest one in <prefix>.identity.desired.  Without --policy the
 * replay follows the log's own POLICY_ACTIVATED markers like the processor
 * (processors/policy_registry.h), so an unchanged history plans no
 * changes.  With --policy NEW, NEW is active on every partition from the
 * start, the log's markers superseded; with --at TIME as well, the log's
 * markers are followed up to TIME and NEW takes over at TIME on every
 * partition (before its first event effective after TIME), re-evaluating
 * the partition's employees with now = TIME, as a deployment at TIME
 * would.  Production state is never touched: no consumer group is joined
 * and nothing is written.
 *
 * Unique names: the replay folds the names arbiter's answers where the log
 * has them.  A claim the log never answered (a policy not deployed yet
 * claims other names) is assumed granted at the end of the replay, unless
 * the log already denied that name to the employee (a denied name is never
 * claimed again): the plan shows the first candidate not denied.  Conflicts
 * between two employees' new claims are not decided — the arbiter does
 * that once the policy is deployed.
 *
 * The summary counts employees per kind of change (creates, attribute
 * updates, renames, moves, group adds/removes per group, disables,
 * deletes); --json gives every employee's diff; --out writes the --json
 * document, plus the policy's path and hash and the end offsets of
 * hr.events, as a plan file for `apply`; --html renders the same document
 * as a page for people (cmd/report.h).  Exit status like
 * `terraform plan -detailed-exitcode`: 0 no changes, 2 changes, 1 error.
 *
 * apply re-plans with the plan file's policy (the file at its recorded path
 * must still have the recorded version) and refuses unless every
 * employee's planned change is still exactly the same: history that moved
 * on in a way that matters makes a stale plan.  Then it deploys the policy
 * (`idstream policy deploy --expect-version`), waits until the processor's
 * consumer group has committed past the activation markers, and compares
 * each employee's newest desired identity with the one before the
 * deployment: the actual changes must equal the planned ones.  Sinks apply
 * them as usual, under their mass-change guard.
 */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/asof.h"
#include "cmd/cli.h"
#include "cmd/report.h"
#include "cmd/scan.h"
#include "cmd/timeline.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "processors/employee_record.h"
#include "processors/fold.h"
#include "processors/mapping.h"
#include "processors/name_arbiter.h"
#include "processors/policy.h"
#include "processors/policy_registry.h"
#include "schemas/codec.h"

#define PLAN_FORMAT "idstream-plan/1"
/* The policy target the processor publishes (cmd/process.c), and so the one
 * whose identities are replayed and compared; the summary is this target's. */
#define PLAN_TARGET "ldap"

typedef struct plan_emp {
	/* The scratch fold state, employee_record_encode()d (NULL: nothing
	 * folded yet): decoded into plan_t.scratch for one event at a time and
	 * encoded again right after, which takes half the memory of a decoded
	 * record and keeps the fold on memory still in the cache.  Its last
	 * identity is the replay's newest output (has_planned). */
	unsigned char *state;
	size_t nstate, capstate;
	desired_identity_t current; /* newest in identity.desired */
	bool has_planned, has_current;
	int32_t partition; /* input partition of the employee's events; -1: none */
} plan_emp_t;

typedef struct plan {
	codec_t *codec;
	policy_registry_t *registry; /* the log's own policies */
	const mapping_t *candidate;  /* NEW, or NULL: follow the log */
	bool has_at;                 /* candidate takes over at `at` */
	int64_t at;
	bool *switched; /* per input partition: the candidate is active */
	int32_t nparts;
	employee_event_t switch_ev; /* cause of the switch at `at` */
	id_hmap_t emps;
	fold_claims_t claims;      /* reported by each fold; only pending ones matter */
	employee_record_t scratch; /* the record being folded (plan_rec_load) */
	id_buf_t enc;              /* its encoding (plan_rec_keep) */
	long events, refused, activations, assumed;
	long current_read;    /* identity.desired records read for `current` */
	bool current_indexed; /* ... through the index */
	bool progress;
	long total_hint;
	double started, drawn; /* monotonic seconds */
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
	desired_identity_init(&e->current);
	e->partition = -1;
	return e;
}

/* Decodes e's record into p->scratch (empty when nothing was folded). */
static int plan_rec_load(plan_t *p, const plan_emp_t *e, id_err_t *err)
{
	if (e->state == NULL) {
		employee_record_fini(&p->scratch);
		return 0;
	}
	return employee_record_decode(&p->scratch, e->state, e->nstate, err);
}

/* Stores p->scratch as e's record and frees the decoded form. */
static int plan_rec_keep(plan_t *p, plan_emp_t *e, id_err_t *err)
{
	id_buf_reset(&p->enc);
	int rc = employee_record_encode(&p->scratch, &p->enc, err);
	employee_record_fini(&p->scratch);
	if (rc != 0)
		return rc;
	if (e->capstate < p->enc.len) {
		/* With room to spare: a record grows by a few bytes with most
		 * events, and reallocating a large block at every one of them
		 * costs more than the fold. */
		size_t cap = (p->enc.len + p->enc.len / 8 + 255) & ~(size_t)255;
		unsigned char *n = realloc(e->state, cap);
		if (n == NULL)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		e->state = n;
		e->capstate = cap;
	}
	memcpy(e->state, p->enc.data, p->enc.len);
	e->nstate = p->enc.len;
	return 0;
}

static double plan_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The progress bar (a terminal only): redrawn at most every 200 ms; the
 * total counts the partitions' offsets, transaction markers included, so
 * the last line says what was replayed instead. */
static void plan_progress(plan_t *p, bool done)
{
	if (!p->progress || (!done && p->events % 1000 != 0))
		return;
	double now = plan_now_s(), secs = now - p->started;
	if (!done && now - p->drawn < 0.2)
		return;
	p->drawn = now;
	double rate = secs > 0 ? (double)p->events / secs : 0;
	if (done) {
		fprintf(stderr, "\rreplayed %ld events in %.1f s, %.0f events/s%20s\n",
		        p->events, secs, rate, "");
	} else if (p->total_hint > 0) {
		double left = rate > 0 ? (double)(p->total_hint - p->events) / rate : 0;
		int pct = (int)(100.0 * (double)p->events / (double)p->total_hint);
		char bar[21];
		for (int i = 0; i < 20; i++)
			bar[i] = i < pct / 5 ? '#' : '.';
		bar[20] = 0;
		fprintf(stderr,
		        "\rreplaying [%s] %ld/%ld events (%d%%), %.0f events/s, %.0f s "
		        "left   ",
		        bar, p->events, p->total_hint, pct, rate, left > 0 ? left : 0);
	} else {
		fprintf(stderr, "\rreplaying: %ld events, %.0f events/s   ", p->events,
		        rate);
	}
}

static int cmp_key(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* Re-evaluates the employees of partition part with m (cause: ev), in
 * employee id order like the processor; new versions become planned. */
static int plan_reevaluate(plan_t *p, int32_t part, const mapping_t *m,
                           const employee_event_t *ev, id_err_t *err)
{
	const char **ids = malloc((p->emps.len ? p->emps.len : 1) * sizeof(*ids));
	size_t n = 0;
	int rc = 0;
	if (ids == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	for (size_t i = 0; i < p->emps.cap; i++) {
		plan_emp_t *e = p->emps.slots[i].value;
		if (p->emps.slots[i].key != NULL && e != NULL && e->partition == part)
			ids[n++] = p->emps.slots[i].key;
	}
	qsort(ids, n, sizeof(*ids), cmp_key);
	for (size_t i = 0; i < n && rc == 0; i++) {
		plan_emp_t *e = id_hmap_get(&p->emps, ids[i]);
		bool emitted = false;
		if ((rc = plan_rec_load(p, e, err)) != 0)
			break;
		fold_claims_clear(&p->claims);
		int frc = fold_reevaluate_claims(&p->scratch, ev, m, NULL, &emitted,
		                                 &p->claims, NULL);
		if (frc == ID_ENOMEM) {
			employee_record_fini(&p->scratch);
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			break;
		}
		if (frc != 0)
			p->refused++;
		else if (emitted)
			e->has_planned = true;
		rc = plan_rec_keep(p, e, err);
	}
	free(ids);
	return rc;
}

/* The candidate takes over partition part at `at`. */
static int plan_switch(plan_t *p, int32_t part, id_err_t *err)
{
	p->switched[part] = true;
	return plan_reevaluate(p, part, p->candidate, &p->switch_ev, err);
}

static int plan_fold(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	plan_t *p = opaque;
	employee_event_t ev;
	bool emitted = false;
	int rc = 0;
	int32_t part = m->partition;
	employee_event_init(&ev);
	p->events++;
	plan_progress(p, false);
	if (part < 0 || part >= p->nparts ||
	    codec_decode_event(p->codec, m->payload, m->len, &ev, NULL) != 0) {
		p->refused++;
		goto out;
	}
	if (p->candidate != NULL && p->has_at && !p->switched[part] &&
	    ev.effective_at > p->at && (rc = plan_switch(p, part, err)) != 0)
		goto out;
	bool candidate = p->candidate != NULL && (!p->has_at || p->switched[part]);
	if (ev.type == EV_POLICY_ACTIVATED) {
		if (candidate)
			goto out; /* the candidate supersedes the log's policies */
		int arc = policy_registry_activate(p->registry, part, &ev, NULL);
		if (arc == ID_ENOMEM) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
		} else if (arc == 0) {
			p->activations++;
			rc = plan_reevaluate(p, part,
			                     policy_registry_mapping(p->registry, part),
			                     &ev, err);
		}
		goto out;
	}
	plan_emp_t *e = plan_emp(p, ev.employee_id, err);
	if (e == NULL) {
		rc = ID_ENOMEM;
		goto out;
	}
	if (e->partition < 0)
		e->partition = part;
	const mapping_t *map =
	    candidate ? p->candidate : policy_registry_mapping(p->registry, part);
	if ((rc = plan_rec_load(p, e, err)) != 0)
		goto out;
	fold_claims_clear(&p->claims);
	int frc =
	    fold_apply_claims(&p->scratch, &ev, map, NULL, &emitted, &p->claims, NULL);
	if (frc == ID_ENOMEM) {
		employee_record_fini(&p->scratch);
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if (frc != 0)
		p->refused++;
	else if (emitted)
		e->has_planned = true;
	/* Kept whatever came out, as the processor keeps it. */
	rc = plan_rec_keep(p, e, err);
out:
	employee_event_fini(&ev);
	return rc;
}

/*
 * The end of the replay: each claim the log left unanswered is assumed
 * granted (see the header), employee by employee in id order; a grant may
 * make the policy claim more (an e-mail built from the username), so this
 * repeats while names are pending, a few rounds at most.
 */
static int plan_assume_grants(plan_t *p, id_err_t *err)
{
	employee_event_t ev;
	const char **ids = malloc((p->emps.len ? p->emps.len : 1) * sizeof(*ids));
	size_t n = 0;
	int rc = 0;
	if (ids == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	for (size_t i = 0; i < p->emps.cap; i++)
		if (p->emps.slots[i].key != NULL && p->emps.slots[i].value != NULL)
			ids[n++] = p->emps.slots[i].key;
	qsort(ids, n, sizeof(*ids), cmp_key);
	employee_event_init(&ev);
	for (size_t i = 0; i < n && rc == 0; i++) {
		plan_emp_t *e = id_hmap_get(&p->emps, ids[i]);
		int32_t part = e->partition;
		if (part < 0 || part >= p->nparts)
			continue;
		const mapping_t *map =
		    p->candidate != NULL && (!p->has_at || p->switched[part])
		        ? p->candidate
		        : policy_registry_mapping(p->registry, part);
		employee_record_t *r = &p->scratch;
		bool folded = false;
		if ((rc = plan_rec_load(p, e, err)) != 0)
			break;
		for (int round = 0; round < 8 && rc == 0; round++) {
			const employee_name_t *nm = NULL;
			for (size_t k = 0; k < r->nnames && nm == NULL; k++)
				if (r->names[k].pending != NULL)
					nm = &r->names[k];
			if (nm == NULL)
				break;
			char eid[600];
			snprintf(eid, sizeof(eid), "plan:assumed:%s:%s", nm->ns,
			         nm->pending);
			employee_event_fini(&ev);
			ev.type = EV_NAME_GRANTED;
			ev.occurred_at = ev.effective_at = r->now;
			if ((ev.event_id = strdup(eid)) == NULL ||
			    (ev.employee_id = strdup(ids[i])) == NULL ||
			    id_attrs_set(&ev.attributes, NAME_ATTR_NAMESPACE, nm->ns) !=
			        0 ||
			    id_attrs_set(&ev.attributes, NAME_ATTR_VALUE, nm->pending) !=
			        0 ||
			    id_attrs_set(&ev.attributes, NAME_ATTR_CLAIM_ID, "assumed") !=
			        0) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
				break;
			}
			bool emitted = false;
			fold_claims_clear(&p->claims);
			int frc = fold_apply_claims(r, &ev, map, NULL, &emitted,
			                            &p->claims, NULL);
			p->assumed++;
			if (frc == ID_ENOMEM) {
				rc = id_err_set(err, ID_ENOMEM, "out of memory");
			} else if (frc != 0) {
				p->refused++;
				folded = true;
				break;
			} else if (emitted) {
				e->has_planned = true;
			}
			folded = true;
		}
		/* Kept only when something was folded into it. */
		if (rc == 0 && folded)
			rc = plan_rec_keep(p, e, err);
		else
			employee_record_fini(&p->scratch);
	}
	employee_event_fini(&ev);
	free(ids);
	return rc;
}

/*
 * Takes the current desired identities (the newest version of each
 * employee in identity.desired, read through the index when it is there:
 * cmd/asof.h) as the employees' `current`.  *n counts them.
 */
static int plan_currents(const id_config_t *cfg, plan_t *p, long *n, id_err_t *err)
{
	id_hmap_t latest;
	asof_stats_t st;
	int rc = 0;
	id_hmap_init(&latest);
	if ((rc = asof_collect(cfg, ASOF_NEWEST, &latest, &st, err)) != 0)
		goto out;
	for (size_t i = 0; i < latest.cap && rc == 0; i++) {
		desired_identity_t *d = latest.slots[i].value;
		if (latest.slots[i].key == NULL || d == NULL)
			continue;
		plan_emp_t *e = plan_emp(p, latest.slots[i].key, err);
		if (e == NULL) {
			rc = ID_ENOMEM;
			break;
		}
		desired_identity_fini(&e->current);
		e->current = *d; /* moved */
		desired_identity_init(d);
		e->has_current = true;
		(*n)++;
	}
	p->current_read = st.read;
	p->current_indexed = st.used_index;
out:
	asof_latest_free(&latest);
	return rc;
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

/* Diffs one employee's current identity a with the planned b (either may
 * be NULL: none); returns a JSON object of the changes or NULL. */
static json_t *plan_diff(const char *id, const desired_identity_t *a,
                         const desired_identity_t *b, plan_sum_t *s)
{
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

/* The summary of each target a plan compares, in first-seen order. */
typedef struct plan_sums {
	struct {
		char *name;
		plan_sum_t s;
	} * items;
	size_t len;
} plan_sums_t;

static plan_sum_t *sums_get(plan_sums_t *ss, const char *name)
{
	for (size_t i = 0; i < ss->len; i++)
		if (strcmp(ss->items[i].name, name) == 0)
			return &ss->items[i].s;
	void *n = realloc(ss->items, (ss->len + 1) * sizeof(*ss->items));
	if (n == NULL)
		return NULL;
	ss->items = n;
	plan_sum_t *s = &ss->items[ss->len].s;
	memset(s, 0, sizeof(*s));
	id_hmap_init(&s->attr_updates);
	id_hmap_init(&s->group_adds);
	id_hmap_init(&s->group_removes);
	if ((ss->items[ss->len].name = strdup(name)) == NULL)
		return NULL;
	ss->len++;
	return s;
}

static void sums_free(plan_sums_t *ss)
{
	for (size_t i = 0; i < ss->len; i++) {
		free(ss->items[i].name);
		sum_free(&ss->items[i].s.attr_updates);
		sum_free(&ss->items[i].s.group_adds);
		sum_free(&ss->items[i].s.group_removes);
	}
	free(ss->items);
	ss->items = NULL;
	ss->len = 0;
}

/* Adds the section names of d to names (unique). */
static void target_names(const desired_identity_t *d, const char **names, size_t *n,
                         size_t cap)
{
	for (size_t i = 0; d != NULL && i < d->ntargets; i++) {
		bool seen = false;
		for (size_t k = 0; k < *n && !seen; k++)
			seen = strcmp(names[k], d->targets[i].name) == 0;
		if (!seen && *n < cap)
			names[(*n)++] = d->targets[i].name;
	}
}

/* d's view for target name (desired_identity_target_view()) in *out; false
 * when d is NULL or its policy has no such target. */
static bool target_copy(const desired_identity_t *d, const char *name,
                        desired_identity_t *out)
{
	if (d == NULL || desired_identity_copy(out, d) != 0)
		return false;
	return desired_identity_target_view(out, name, NULL) == 0;
}

/*
 * One employee's changes in every target: each target the two identities'
 * policies declare (PLAN_TARGET when neither has sections), compared as
 * that target's sink will see them; every change names its target.  NULL
 * when nothing changes anywhere.  Counts go to each target's summary.
 */
static json_t *plan_diff_targets(const char *id, const desired_identity_t *a,
                                 const desired_identity_t *b, plan_sums_t *ss)
{
	const char *names[64];
	size_t n = 0;
	target_names(b, names, &n, 64);
	target_names(a, names, &n, 64);
	if (n == 0)
		names[n++] = PLAN_TARGET;
	json_t *all = NULL;
	for (size_t t = 0; t < n; t++) {
		plan_sum_t *s = sums_get(ss, names[t]);
		if (s == NULL)
			continue;
		desired_identity_t va, vb;
		desired_identity_init(&va);
		desired_identity_init(&vb);
		bool has_a = target_copy(a, names[t], &va);
		bool has_b = target_copy(b, names[t], &vb);
		json_t *d = plan_diff(id, has_a ? &va : NULL, has_b ? &vb : NULL, s);
		desired_identity_fini(&va);
		desired_identity_fini(&vb);
		if (d == NULL)
			continue;
		json_t *ch = json_object_get(d, "changes");
		for (size_t k = 0; k < json_array_size(ch); k++)
			json_object_set_new(json_array_get(ch, k), "target",
			                    json_string(names[t]));
		if (all == NULL) {
			all = d;
		} else {
			json_array_extend(json_object_get(all, "changes"), ch);
			json_decref(d);
		}
	}
	return all;
}

static void plan_fini(plan_t *p)
{
	for (size_t i = 0; i < p->emps.cap; i++) {
		plan_emp_t *e = p->emps.slots[i].value;
		if (p->emps.slots[i].key != NULL && e != NULL) {
			free(e->state);
			desired_identity_fini(&e->current);
			free(e);
		}
	}
	id_hmap_fini(&p->emps);
	employee_record_fini(&p->scratch);
	id_buf_fini(&p->enc);
	policy_registry_destroy(p->registry);
	codec_destroy(p->codec);
	employee_event_fini(&p->switch_ev);
	fold_claims_fini(&p->claims);
	free(p->switched);
	memset(p, 0, sizeof(*p));
}

/* The employee ids of p, sorted.  Ownership: caller frees the array (the
 * strings belong to p). */
static const char **plan_sorted_ids(const plan_t *p, size_t *n)
{
	const char **keys = malloc((p->emps.len ? p->emps.len : 1) * sizeof(*keys));
	*n = 0;
	for (size_t i = 0; keys != NULL && i < p->emps.cap; i++)
		if (p->emps.slots[i].key != NULL)
			keys[(*n)++] = p->emps.slots[i].key;
	if (keys != NULL)
		qsort(keys, *n, sizeof(*keys), cmp_key);
	return keys;
}

/* Summary counters and the per-employee diffs as the plan document's parts. */
static json_t *plan_summary_json(const plan_sum_t *s)
{
	return json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "creates",
	    (json_int_t)s->creates, "attribute_updates", (json_int_t)s->updates,
	    "renames", (json_int_t)s->renames, "moves", (json_int_t)s->moves, "disables",
	    (json_int_t)s->disables, "enables", (json_int_t)s->enables, "deletes",
	    (json_int_t)s->deletes, "unchanged", (json_int_t)s->unchanged, "attributes",
	    sum_json((id_hmap_t *)&s->attr_updates), "group_adds",
	    sum_json((id_hmap_t *)&s->group_adds), "group_removes",
	    sum_json((id_hmap_t *)&s->group_removes));
}

/* Each target's summary, by name. */
static json_t *plan_targets_json(const plan_sums_t *ss)
{
	json_t *o = json_object();
	for (size_t i = 0; i < ss->len; i++)
		json_object_set_new(o, ss->items[i].name,
		                    plan_summary_json(&ss->items[i].s));
	return o;
}

/*
 * Replays the history under the candidate (NULL: the log's own policies)
 * into p (zeroed by the caller, plan_fini() after) and returns the plan
 * document in *doc (caller json_decref()s).  policy may be NULL.
 */
static int plan_run(const id_config_t *cfg, policy_t *policy, bool has_at, int64_t at,
                    bool progress, plan_t *p, json_t **doc, id_err_t *err)
{
	char in_topic[256], out_topic[256];
	int32_t nin = 0, nout = 0;
	long ncur = 0, scanned = 0;
	rd_kafka_t *rk = NULL;
	mapping_t *builtin = NULL, *candidate = NULL;
	json_t *diffs = json_array(), *ends = json_array();
	const char **keys = NULL;
	plan_sums_t ss = {NULL, 0};
	int rc = 0;

	id_hmap_init(&p->emps);
	employee_record_init(&p->scratch);
	id_buf_init(&p->enc);
	fold_claims_init(&p->claims);
	employee_event_init(&p->switch_ev);
	p->has_at = has_at;
	p->at = at;
	id_config_topic(cfg, "hr.events", in_topic, sizeof(in_topic));
	id_config_topic(cfg, "identity.desired", out_topic, sizeof(out_topic));
	if ((builtin = processor_builtin_mapping(cfg, err)) == NULL ||
	    (p->registry = policy_registry_create(builtin, PLAN_TARGET, NULL, err)) ==
	        NULL ||
	    (policy != NULL &&
	     (candidate = policy_mapping_create(policy, PLAN_TARGET, err)) == NULL) ||
	    (p->codec = codec_create(err)) == NULL ||
	    (rk = id_kafka_consumer_create(cfg, "idstream-plan", NULL, NULL, NULL,
	                                   err)) == NULL ||
	    id_kafka_partition_count(rk, in_topic, &nin, err) != 0 ||
	    id_kafka_partition_count(rk, out_topic, &nout, err) != 0) {
		rc = err->code ? err->code : ID_EINVALID;
		goto out;
	}
	p->candidate = candidate;
	p->nparts = nin;
	if ((p->switched = calloc((size_t)nin, sizeof(*p->switched))) == NULL ||
	    (p->switch_ev.event_id = strdup("plan")) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	p->switch_ev.effective_at = at;
	for (int32_t q = 0; q < nin; q++) {
		int64_t lo = 0, hi = 0;
		if (rd_kafka_query_watermark_offsets(rk, in_topic, q, &lo, &hi, 10000) !=
		    RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_err_set(err, ID_EKAFKA, "%s: cannot read the end offsets",
			                in_topic);
			goto out;
		}
		p->total_hint += (long)(hi - lo);
		json_array_append_new(ends, json_integer(hi));
	}
	p->progress = progress;
	p->started = plan_now_s();
	if ((rc = scan_topic(rk, in_topic, nin, plan_fold, p, &scanned, err)) != 0)
		goto out;
	/* Partitions without an event after --at switch at the end. */
	for (int32_t q = 0; candidate != NULL && has_at && q < nin; q++)
		if (!p->switched[q] && (rc = plan_switch(p, q, err)) != 0)
			goto out;
	if ((rc = plan_assume_grants(p, err)) != 0)
		goto out;
	plan_progress(p, true);
	if ((rc = plan_currents(cfg, p, &ncur, err)) != 0)
		goto out;

	size_t n = 0;
	if ((keys = plan_sorted_ids(p, &n)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const plan_emp_t *e = id_hmap_get(&p->emps, keys[i]);
		/* The planned identity is the record's last one, decoded for
		 * this employee only. */
		if (e->has_planned && (rc = plan_rec_load(p, e, err)) != 0)
			goto out;
		json_t *d =
		    plan_diff_targets(keys[i], e->has_current ? &e->current : NULL,
		                      e->has_planned ? &p->scratch.last : NULL, &ss);
		employee_record_fini(&p->scratch);
		if (d != NULL)
			json_array_append_new(diffs, d);
	}
	/* The primary target's summary is the document's "summary"; every
	 * target's is under "targets". */
	plan_sum_t *primary = sums_get(&ss, PLAN_TARGET);
	if (primary == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	*doc = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:o, s:o}", "format",
	                 PLAN_FORMAT, "policy_version",
	                 policy ? policy_version(policy) : "as deployed", "at",
	                 has_at ? json_integer(at) : json_null(), "events_replayed",
	                 (json_int_t)p->events, "policy_activations_followed",
	                 (json_int_t)p->activations, "employees", (json_int_t)n,
	                 "current_versions", (json_int_t)ncur, "hr_end_offsets", ends,
	                 "summary", plan_summary_json(primary));
	ends = NULL;
	if (*doc == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	json_object_set_new(*doc, "target", json_string(PLAN_TARGET));
	json_object_set_new(*doc, "targets", plan_targets_json(&ss));
	json_object_set_new(*doc, "employees_changed", diffs);
	diffs = NULL;
out:
	free(keys);
	json_decref(diffs);
	json_decref(ends);
	sums_free(&ss);
	p->candidate = NULL;
	mapping_destroy(candidate);
	id_kafka_destroy(rk);
	return rc;
}

static void print_counts(json_t *o, const char *verb, const char *what)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		printf("  %6lld users %s %s %s\n", (long long)json_integer_value(v), verb,
		       what, k);
	}
}

static long jint(json_t *o, const char *k)
{
	return (long)json_integer_value(json_object_get(o, k));
}

/* The human form of a plan document. */
static void plan_print(json_t *doc)
{
	json_t *diffs = json_object_get(doc, "employees_changed");
	size_t changed = json_array_size(diffs);
	printf("plan for %s: replayed %ld events of %ld employees against %ld current "
	       "desired versions\n",
	       json_string_value(json_object_get(doc, "policy_version")),
	       jint(doc, "events_replayed"), jint(doc, "employees"),
	       jint(doc, "current_versions"));
	if (jint(doc, "policy_activations_followed") > 0)
		printf("followed %ld policy activations of the log\n",
		       jint(doc, "policy_activations_followed"));
	if (changed == 0) {
		printf("no changes\n");
		return;
	}
	/* The targets with changes, in the order the summaries list them. */
	json_t *targets = json_object_get(doc, "targets");
	const char *names[64];
	size_t nn = 0;
	const char *tk;
	json_t *tv;
	json_object_foreach(targets, tk, tv)
	{
		bool any = false;
		for (size_t i = 0; i < changed && !any; i++) {
			json_t *ch = json_object_get(json_array_get(diffs, i), "changes");
			for (size_t k = 0; k < json_array_size(ch) && !any; k++)
				any = strcmp(json_string_value(json_object_get(
				                 json_array_get(ch, k), "target")),
				             tk) == 0;
		}
		if (any && nn < 64)
			names[nn++] = tk;
	}
	if (targets == NULL) /* a plan written before per-target summaries */
		names[nn++] = json_string_value(json_object_get(doc, "target"));
	printf("%zu employees change in target%s ", changed, nn > 1 ? "s" : "");
	for (size_t i = 0; i < nn; i++)
		printf("%s%s", i ? ", " : "", names[i]);
	printf(":\n");
	for (size_t t = 0; t < nn; t++) {
		json_t *sum = targets != NULL ? json_object_get(targets, names[t])
		                              : json_object_get(doc, "summary");
		if (nn > 1)
			printf(" target %s:\n", names[t]);
		printf("  %6ld creates\n  %6ld with attribute updates\n  %6ld renames\n"
		       "  %6ld moves\n  %6ld disables\n  %6ld enables\n  %6ld deletes\n",
		       jint(sum, "creates"), jint(sum, "attribute_updates"),
		       jint(sum, "renames"), jint(sum, "moves"), jint(sum, "disables"),
		       jint(sum, "enables"), jint(sum, "deletes"));
		print_counts(json_object_get(sum, "attributes"), "change", "attribute");
		print_counts(json_object_get(sum, "group_adds"), "join", "group");
		print_counts(json_object_get(sum, "group_removes"), "leave", "group");
	}
	printf("per employee:\n");
	for (size_t i = 0; i < changed; i++) {
		json_t *d = json_array_get(diffs, i);
		json_t *ch = json_object_get(d, "changes");
		printf("  %s:", json_string_value(json_object_get(d, "employee_id")));
		for (size_t k = 0; k < json_array_size(ch); k++) {
			json_t *c = json_array_get(ch, k);
			const char *kind = json_string_value(json_object_get(c, "kind"));
			const char *what =
			    json_string_value(json_object_get(c, "attribute"));
			if (what == NULL)
				what = json_string_value(json_object_get(c, "group"));
			const char *nv = json_string_value(json_object_get(c, "new"));
			const char *tg = json_string_value(json_object_get(c, "target"));
			printf(" %s", k ? "; " : "");
			if (nn > 1 && tg != NULL)
				printf("[%s] ", tg);
			printf("%s%s%s", kind, what ? " " : "", what ? what : "");
			if (nv != NULL)
				printf(" → %s", nv);
		}
		printf("\n");
	}
}

static void plan_usage(void)
{
	printf(
	    "usage: idstream plan [--policy NEW.lua [--at TIME] [--out PLAN.json]] "
	    "[--json]\n"
	    "                     [--html FILE]\n"
	    "\n"
	    "Replays hr.events from the start into scratch state (in memory: no "
	    "consumer\n"
	    "group, no state folder, nothing written) and lists what would change\n"
	    "against the current desired identities, per target (each section of\n"
	    "the policies, or " PLAN_TARGET
	    " with the built-in mapping): a summary per kind\n"
	    "of change (creates, attribute updates, renames, moves, group joins and\n"
	    "leaves per group, disables, enables, deletes) and each employee's diff.\n"
	    "Without --policy the replay follows the policies deployed in the log (so "
	    "an\n"
	    "unchanged history has no changes); with --policy, NEW is active from the\n"
	    "start instead. On a terminal a progress bar shows the events replayed, the\n"
	    "rate and the time left.\n"
	    "\n"
	    "  --policy FILE  the candidate Lua policy (it must declare " PLAN_TARGET
	    "; every\n"
	    "                 target it declares is compared)\n"
	    "  --at TIME      the log's policies up to TIME, NEW from TIME on, as if\n"
	    "                 deployed then (YYYY-MM-DD or ISO-8601)\n"
	    "  --out FILE     also write the plan (JSON) for `idstream apply FILE`\n"
	    "  --json         the whole plan as JSON\n"
	    "  --html FILE    also write the plan as a self-contained HTML page\n"
	    "\n"
	    "Exit status: 0 no changes, 2 changes, 1 error.\n");
}

int cmd_plan(cli_t *cli, int argc, char **argv)
{
	const char *policy_path = NULL, *at_text = NULL, *out_path = NULL,
	           *html_path = NULL;
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
			at_text = argv[++i];
		} else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
			out_path = argv[++i];
		} else if (strcmp(argv[i], "--html") == 0 && i + 1 < argc) {
			html_path = argv[++i];
		} else {
			return cli_usage_error("plan", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	int64_t at = 0;
	if (at_text != NULL && timeline_parse_time(at_text, &at) != 0)
		return cli_usage_error("plan", "cannot read TIME \"%s\"", at_text);
	if ((at_text != NULL || out_path != NULL) && policy_path == NULL)
		return cli_usage_error("plan", "--at and --out need --policy");

	id_err_t err = {0};
	int rc = CLI_EXIT_FAIL;
	policy_t *policy = NULL;
	plan_t p;
	json_t *doc = NULL;
	char *abs = NULL;
	memset(&p, 0, sizeof(p));
	if (policy_path != NULL &&
	    (policy = policy_load_file(policy_path, NULL, &err)) == NULL) {
		cli_fail("plan", &err);
		goto out;
	}
	if (plan_run(cli->cfg, policy, at_text != NULL, at, isatty(STDERR_FILENO) != 0,
	             &p, &doc, &err) != 0) {
		cli_fail("plan", &err);
		goto out;
	}
	if (out_path != NULL) {
		if ((abs = realpath(policy_path, NULL)) == NULL) {
			id_err_set(&err, ID_EIO, "%s: cannot resolve its path",
			           policy_path);
			cli_fail("plan --out", &err);
			goto out;
		}
		json_object_set_new(doc, "policy_path", json_string(abs));
		json_object_set_new(doc, "policy_sha256",
		                    json_string(policy_sha256(policy)));
		if (json_dump_file(doc, out_path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) !=
		    0) {
			id_err_set(&err, ID_EIO, "cannot write %s", out_path);
			cli_fail("plan --out", &err);
			goto out;
		}
	}
	if (html_path != NULL && report_plan_html_file(html_path, doc, &err) != 0) {
		cli_fail("plan --html", &err);
		goto out;
	}
	if (as_json) {
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
	} else {
		plan_print(doc);
		if (out_path != NULL)
			printf("plan written to %s; apply it with `idstream apply %s`\n",
			       out_path, out_path);
	}
	rc = json_array_size(json_object_get(doc, "employees_changed")) == 0 ? CLI_EXIT_OK
	                                                                     : 2;
out:
	free(abs);
	json_decref(doc);
	plan_fini(&p);
	policy_destroy(policy);
	return rc;
}

/* ------------------------------------------------------------------ apply */

/* Newest desired version per employee, after the deployment. */
typedef struct apply_after {
	id_hmap_t latest; /* employee id → desired_identity_t* (cmd/asof.h) */
} apply_after_t;

/*
 * The offset the processor's group must have committed on each partition
 * of topic to have processed everything in it now: the end offset, or one
 * less when the last record is a transaction's commit marker (a consumer
 * never commits past a control record it cannot see).  Reads the last
 * offset of each partition with read_committed: a message there is data,
 * end-of-partition without one is a control record.
 * Ownership: *out is freed by the caller.
 */
static int apply_targets(rd_kafka_t *rk, const char *topic, int32_t n, int64_t **out,
                         id_err_t *err)
{
	int64_t *need = calloc((size_t)(n > 0 ? n : 1), sizeof(*need));
	char *known = calloc((size_t)(n > 0 ? n : 1), 1);
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
	int rc = 0, pending = 0;
	if (need == NULL || known == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (int32_t q = 0; q < n; q++) {
		int64_t lo = 0, hi = 0;
		if (rd_kafka_query_watermark_offsets(rk, topic, q, &lo, &hi, 10000) !=
		    RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_err_set(err, ID_EKAFKA, "%s: cannot read the end offsets",
			                topic);
			goto out;
		}
		need[q] = hi;
		if (hi > lo) {
			rd_kafka_topic_partition_list_add(l, topic, q)->offset = hi - 1;
			pending++;
		} else {
			known[q] = 1;
		}
	}
	if (pending > 0 && rd_kafka_assign(rk, l) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc =
		    id_err_set(err, ID_EKAFKA, "%s: cannot read the last records", topic);
		goto out;
	}
	for (int idle = 0; pending > 0 && idle < 300 && !cli_stop_requested;) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL) {
			idle++;
			continue;
		}
		int32_t q = m->partition;
		if (q >= 0 && q < n && !known[q]) {
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				/* Nothing visible at hi - 1 (or later data only):
				 * the last record is a control record. */
				if (m->offset >= need[q])
					need[q] -= 1;
				known[q] = 1;
				pending--;
			} else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
				if (m->offset < need[q] - 1)
					need[q] -= 1; /* skipped over: control record */
				known[q] = 1;
				pending--;
			}
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_assign(rk, NULL);
	if (pending > 0)
		rc = id_err_set(err, ID_ETIMEOUT, "%s: the last records did not arrive",
		                topic);
out:
	rd_kafka_topic_partition_list_destroy(l);
	free(known);
	if (rc == 0)
		*out = need;
	else
		free(need);
	return rc;
}

/*
 * Waits until the processor's group has committed need[q] on every
 * partition q of topic (see apply_targets()), i.e. has processed (and
 * produced the output of) everything up to then.
 */
static int apply_wait(const id_config_t *cfg, const char *topic, const int64_t *need,
                      int32_t n, int timeout_s, id_err_t *err)
{
	char group[300];
	int rc = ID_ETIMEOUT;
	snprintf(group, sizeof(group), "%s.processor",
	         id_config_str(cfg, "topic.prefix"));
	rd_kafka_t *rk =
	    id_kafka_consumer_create(cfg, "idstream-apply", group, NULL, NULL, err);
	if (rk == NULL)
		return err->code ? err->code : ID_EKAFKA;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
	for (int32_t q = 0; q < n; q++)
		rd_kafka_topic_partition_list_add(l, topic, q);
	time_t deadline = time(NULL) + timeout_s;
	while (!cli_stop_requested) {
		rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
		bool done = e == RD_KAFKA_RESP_ERR_NO_ERROR;
		for (int q = 0; done && q < l->cnt; q++)
			done = need[q] == 0 || l->elems[q].offset >= need[q];
		if (done) {
			rc = 0;
			break;
		}
		if (time(NULL) >= deadline)
			break;
		struct timespec ts = {0, 200 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (rc != 0)
		id_err_set(
		    err, cli_stop_requested ? ID_EINTERRUPTED : ID_ETIMEOUT,
		    "the processor (group %s) did not catch up with %s within %d s; "
		    "is `idstream process` running?",
		    group, topic, timeout_s);
	rd_kafka_topic_partition_list_destroy(l);
	id_kafka_destroy(rk);
	return rc;
}

/* Waits for the processor to have processed all of topic as of now. */
static int apply_catch_up(const id_config_t *cfg, rd_kafka_t *rk, const char *topic,
                          int timeout_s, id_err_t *err)
{
	int32_t n = 0;
	int64_t *need = NULL;
	int rc = id_kafka_partition_count(rk, topic, &n, err);
	if (rc == 0)
		rc = apply_targets(rk, topic, n, &need, err);
	if (rc == 0)
		rc = apply_wait(cfg, topic, need, n, timeout_s, err);
	free(need);
	return rc;
}

/* The employees whose entry differs between two employees_changed arrays,
 * each named with the side (a_name or b_name) its entry is on. */
static void print_differences(const char *a_name, json_t *a, const char *b_name,
                              json_t *b)
{
	size_t shown = 0;
	for (int pass = 0; pass < 2; pass++) {
		json_t *x = pass ? b : a, *y = pass ? a : b;
		for (size_t i = 0; i < json_array_size(x); i++) {
			json_t *d = json_array_get(x, i);
			bool found = false;
			for (size_t k = 0; k < json_array_size(y) && !found; k++)
				found = json_equal(d, json_array_get(y, k));
			if (found)
				continue;
			if (shown++ < 20) {
				char *text = json_dumps(json_object_get(d, "changes"),
				                        JSON_COMPACT);
				printf(
				    "  employee %s %s: %s\n",
				    json_string_value(json_object_get(d, "employee_id")),
				    pass ? b_name : a_name, text ? text : "?");
				free(text);
			}
		}
	}
	if (shown > 20)
		printf("  ... and %zu more\n", shown - 20);
}

static void apply_usage(void)
{
	printf(
	    "usage: idstream apply PLAN.json [--reason TEXT] [--timeout SECONDS]\n"
	    "\n"
	    "Deploys the policy of a plan written by `idstream plan --policy NEW --out "
	    "PLAN.json`,\n"
	    "only if the plan still holds: the history is re-planned first, and any\n"
	    "employee whose planned change differs now makes apply refuse (re-plan).\n"
	    "Then it waits for the processor to handle the activation and compares "
	    "what\n"
	    "changed with the plan. Sinks apply the changes under their mass-change\n"
	    "guard.\n"
	    "\n"
	    "  --reason TEXT      recorded in the activation events\n"
	    "  --timeout SECONDS  how long to wait for the processor (default 120)\n"
	    "\n"
	    "Exit status: 0 applied and identical to the plan, 1 refused, failed or "
	    "different.\n");
}

int cmd_apply(cli_t *cli, int argc, char **argv)
{
	const char *file = NULL, *reason = NULL;
	int timeout_s = 120;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			apply_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc) {
			reason = argv[++i];
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			timeout_s = atoi(argv[++i]);
			if (timeout_s <= 0)
				return cli_usage_error("apply",
				                       "--timeout needs seconds > 0");
		} else if (argv[i][0] != '-' && file == NULL) {
			file = argv[i];
		} else {
			return cli_usage_error("apply", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	if (file == NULL)
		return cli_usage_error("apply", "missing PLAN.json");

	id_err_t err = {0};
	int rc = CLI_EXIT_FAIL;
	json_error_t jerr;
	json_t *planned = NULL, *now = NULL, *actual = json_array();
	policy_t *policy = NULL;
	plan_t p;
	apply_after_t after = {{0}};
	rd_kafka_t *rk = NULL;
	char topic[256], out_topic[256], reason_buf[512];
	plan_sums_t ss = {NULL, 0};
	memset(&p, 0, sizeof(p));
	id_hmap_init(&after.latest);
	id_config_topic(cli->cfg, "hr.events", topic, sizeof(topic));
	id_config_topic(cli->cfg, "identity.desired", out_topic, sizeof(out_topic));

	/* The plan and its policy, unchanged since. */
	if ((planned = json_load_file(file, 0, &jerr)) == NULL) {
		fprintf(stderr, "idstream: apply: %s: %s (line %d)\n", file, jerr.text,
		        jerr.line);
		goto out;
	}
	const char *format = json_string_value(json_object_get(planned, "format"));
	const char *path = json_string_value(json_object_get(planned, "policy_path"));
	const char *version =
	    json_string_value(json_object_get(planned, "policy_version"));
	json_t *jat = json_object_get(planned, "at");
	if (format == NULL || strcmp(format, PLAN_FORMAT) != 0 || path == NULL ||
	    version == NULL ||
	    !json_is_array(json_object_get(planned, "employees_changed"))) {
		fprintf(
		    stderr,
		    "idstream: apply: %s is not a plan file of `idstream plan --policy "
		    "FILE --out %s`\n",
		    file, file);
		goto out;
	}
	if ((policy = policy_load_file(path, NULL, &err)) == NULL) {
		cli_fail("apply: the planned policy", &err);
		goto out;
	}
	if (strcmp(policy_version(policy), version) != 0) {
		fprintf(
		    stderr,
		    "idstream: apply: refused: %s is now %s, the plan was made for %s; "
		    "plan again\n",
		    path, policy_version(policy), version);
		goto out;
	}

	/* Re-plan against the processor's output of everything logged so
	 * far: the history may have moved since the plan. */
	if ((rk = id_kafka_consumer_create(cli->cfg, "idstream-apply", NULL, NULL, NULL,
	                                   &err)) == NULL) {
		cli_fail("apply", &err);
		goto out;
	}
	printf("waiting for the processor to catch up with %s...\n", topic);
	fflush(stdout);
	if (apply_catch_up(cli->cfg, rk, topic, timeout_s, &err) != 0) {
		cli_fail("apply: nothing deployed", &err);
		goto out;
	}
	if (plan_run(cli->cfg, policy, json_is_integer(jat), json_integer_value(jat),
	             isatty(STDERR_FILENO) != 0, &p, &now, &err) != 0) {
		cli_fail("apply: re-planning", &err);
		goto out;
	}
	json_t *was = json_object_get(planned, "employees_changed");
	json_t *is = json_object_get(now, "employees_changed");
	if (!json_equal(was, is)) {
		printf("refused: the history moved since the plan in a way that changes "
		       "it (%zu employees planned, %zu now):\n",
		       json_array_size(was), json_array_size(is));
		print_differences("as planned", was, "now", is);
		fprintf(stderr,
		        "idstream: apply: refused: the plan is stale; run `idstream plan "
		        "--policy %s --out %s` again\n",
		        path, file);
		goto out;
	}
	printf("plan still holds: %zu employees change under %s\n", json_array_size(is),
	       version);

	/* Deploy, through `policy deploy`, pinned to the planned version. */
	snprintf(reason_buf, sizeof(reason_buf), "%s",
	         reason ? reason : "idstream apply");
	char *dargv[] = {"policy",        "deploy",   (char *)path, "--expect-version",
	                 (char *)version, "--reason", reason_buf,   NULL};
	if (cmd_policy(cli, 7, dargv) != CLI_EXIT_OK) {
		fprintf(stderr,
		        "idstream: apply: the deployment failed; nothing applied\n");
		goto out;
	}
	printf("waiting for the processor to handle the activation...\n");
	fflush(stdout);
	if (apply_catch_up(cli->cfg, rk, topic, timeout_s, &err) != 0) {
		cli_fail("apply: deployed, but not verified", &err);
		goto out;
	}

	/* Actual: each employee's newest version now against the one before. */
	asof_stats_t ast;
	if (asof_collect(cli->cfg, ASOF_NEWEST, &after.latest, &ast, &err) != 0) {
		cli_fail("apply: reading the result", &err);
		goto out;
	}
	size_t n = 0;
	const char **keys = plan_sorted_ids(&p, &n);
	for (size_t i = 0; keys != NULL && i < n; i++) {
		plan_emp_t *e = id_hmap_get(&p.emps, keys[i]);
		desired_identity_t *a = id_hmap_get(&after.latest, keys[i]);
		json_t *d = plan_diff_targets(
		    keys[i], e->has_current ? &e->current : NULL, a, &ss);
		if (d != NULL)
			json_array_append_new(actual, d);
	}
	free(keys);
	if (json_equal(is, actual)) {
		printf("applied %s: plan vs actual identical (%zu employees changed)\n",
		       version, json_array_size(actual));
		rc = CLI_EXIT_OK;
	} else {
		printf("applied %s, but the actual changes differ from the plan (%zu "
		       "planned, %zu actual):\n",
		       version, json_array_size(is), json_array_size(actual));
		print_differences("planned", is, "actual", actual);
	}
out:
	asof_latest_free(&after.latest);
	sums_free(&ss);
	id_kafka_destroy(rk);
	json_decref(actual);
	json_decref(now);
	json_decref(planned);
	plan_fini(&p);
	policy_destroy(policy);
	return rc;
}
