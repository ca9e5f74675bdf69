/*
 * fold.c — merges one HR event into an employee record and emits a new
 * desired identity version when the target-visible result changes (see
 * fold.h for the event semantics and error contract).
 *
 * Invariant: rec->changes[key].seq is the seq of the last event that
 * actually changed key (a repeated value is not a change), so the cause of
 * an output is the newest change among the keys the mapping read for it —
 * except after a re-evaluation under a new mapping, where an output whose
 * value the new mapping changed is caused by the activation event.
 */
#include "processors/fold.h"

#include "processors/lifecycle.h"
#include "processors/name_arbiter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int note(employee_record_t *rec, const char *key, const char *event_id,
                uint64_t seq)
{
	return employee_record_note_change(rec, key, event_id, seq);
}

/* ---- unique names -------------------------------------------------------- */

void fold_claims_init(fold_claims_t *c)
{
	memset(c, 0, sizeof(*c));
}

void fold_claims_clear(fold_claims_t *c)
{
	for (size_t i = 0; i < c->len; i++)
		name_claim_fini(&c->items[i]);
	c->len = 0;
	c->held = false;
	c->changed = false;
}

void fold_claims_fini(fold_claims_t *c)
{
	if (c == NULL)
		return;
	fold_claims_clear(c);
	free(c->items);
	fold_claims_init(c);
}

static bool ascii_ieq(const char *a, const char *b)
{
	for (; *a != '\0' && *b != '\0'; a++, b++) {
		char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
		char y = *b >= 'A' && *b <= 'Z' ? (char)(*b - 'A' + 'a') : *b;
		if (x != y)
			return false;
	}
	return *a == *b;
}

/* Appends a claim (CLAIM or RELEASE) of rec's employee to c (NULL: not
 * reported).  0 or ID_ENOMEM. */
static int claim_add(fold_claims_t *c, name_claim_kind_t kind,
                     const employee_record_t *rec, const char *ns, const char *value,
                     int64_t now, int64_t quarantine_until, const employee_event_t *ev)
{
	if (c == NULL)
		return 0;
	if (c->len == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 4;
		name_claim_t *n = realloc(c->items, ncap * sizeof(*n));
		if (n == NULL)
			return ID_ENOMEM;
		c->items = n;
		c->cap = ncap;
	}
	name_claim_t *nc = &c->items[c->len];
	name_claim_init(nc);
	nc->kind = kind;
	nc->claimed_at = now;
	nc->quarantine_until = quarantine_until;
	if ((nc->ns = strdup(ns)) == NULL || (nc->value = strdup(value)) == NULL ||
	    (nc->employee_id = strdup(rec->employee_id)) == NULL ||
	    (nc->source_event_id = strdup(ev->event_id)) == NULL ||
	    name_claim_make_id(nc) != 0) {
		name_claim_fini(nc);
		return ID_ENOMEM;
	}
	c->len++;
	return 0;
}

/* A grant the employee holds now (not given up at deletion). */
static bool name_held(const employee_name_t *n)
{
	return n != NULL && n->granted != NULL && !n->released;
}

static bool in_list(const mapping_unique_t *u, const char *value)
{
	for (size_t i = 0; i < u->nvalues; i++)
		if (ascii_ieq(u->values[i], value))
			return true;
	return false;
}

/* The first candidate of u not denied to the employee, or NULL. */
static const char *first_free(const mapping_unique_t *u, const employee_name_t *n)
{
	for (size_t i = 0; i < u->nvalues; i++)
		if (n == NULL || !employee_name_is_denied(n, u->values[i]))
			return u->values[i];
	return NULL;
}

static int64_t quarantine_end(const employee_record_t *rec, int64_t now)
{
	int32_t days = rec->has_timing ? rec->timing.name_quarantine_days : 0;
	return days > 0 ? now + (int64_t)days * LIFECYCLE_DAY_MS : now;
}

static void pending_drop(employee_name_t *n, fold_claims_t *c)
{
	if (n->pending == NULL)
		return;
	free(n->pending);
	n->pending = NULL;
	if (c != NULL)
		c->changed = true;
}

/* What ctx.granted shows: the grants held, and while the employee is
 * terminated those given up at deletion (the deleted identity keeps its
 * names).  0 or ID_ENOMEM. */
static int granted_attrs(const employee_record_t *rec, id_attrs_t *out)
{
	for (size_t i = 0; i < rec->nnames; i++) {
		const employee_name_t *n = &rec->names[i];
		if (n->granted == NULL ||
		    (n->released && rec->status != EMPLOYEE_STATUS_TERMINATED))
			continue;
		if (id_attrs_set(out, n->ns, n->granted) != 0)
			return ID_ENOMEM;
	}
	return 0;
}

/* DELETED: every grant is released (and denied for good unless the policy
 * lets a rehire have it back); nothing stays claimed. */
static int names_release_all(employee_record_t *rec, int64_t now,
                             const employee_event_t *ev, fold_claims_t *c)
{
	for (size_t i = 0; i < rec->nnames; i++) {
		employee_name_t *n = &rec->names[i];
		pending_drop(n, c);
		if (!name_held(n))
			continue;
		if (claim_add(c, NAME_RELEASE, rec, n->ns, n->granted, now,
		              quarantine_end(rec, now), ev) != 0)
			return ID_ENOMEM;
		n->released = true;
		if (!(rec->has_timing && rec->timing.reuse_name_after_delete) &&
		    employee_name_deny(n, n->granted) != 0)
			return ID_ENOMEM;
		if (c != NULL)
			c->changed = true;
	}
	return 0;
}

/*
 * After an evaluation in state: decides, for each candidate list of u,
 * whether the employee holds a name that is still a candidate, else claims
 * the first one not denied (see fold.h).  *held is set when some namespace
 * lacks such a grant.  Checks every list before changing anything, so an
 * exhausted list (ID_ECONFLICT) leaves the record as it was.
 */
static int names_decide(employee_record_t *rec, const mapping_uniques_t *u,
                        lifecycle_state_t state, int64_t now, const employee_event_t *ev,
                        fold_claims_t *c, bool *held, id_err_t *err)
{
	*held = false;
	if (state == LC_DELETED)
		return names_release_all(rec, now, ev, c);
	/* A list with every candidate denied is final only when no other
	 * list can still move: its candidates may depend on another list's
	 * answer (an e-mail built from the username), and the policy shows
	 * the first username until one is granted. */
	const mapping_unique_t *exhausted = NULL;
	bool progress = false;
	for (size_t i = 0; i < u->len; i++) {
		const mapping_unique_t *l = &u->items[i];
		const employee_name_t *n = employee_record_name(rec, l->ns);
		if (name_held(n) && in_list(l, n->granted))
			continue;
		if (first_free(l, n) == NULL) {
			if (exhausted == NULL)
				exhausted = l;
		} else {
			progress = true;
		}
	}
	if (exhausted != NULL && !progress)
		return id_err_set(err, ID_ECONFLICT,
		                  "employee %s: no free %s among %zu candidates "
		                  "(every one was denied)",
		                  rec->employee_id, exhausted->ns, exhausted->nvalues);
	for (size_t i = 0; i < u->len; i++) {
		const mapping_unique_t *l = &u->items[i];
		employee_name_t *n = employee_record_name_add(rec, l->ns);
		if (n == NULL)
			return ID_ENOMEM;
		if (name_held(n) && in_list(l, n->granted)) {
			pending_drop(n, c);
			continue;
		}
		*held = true;
		const char *want = first_free(l, n);
		if (want == NULL)
			continue; /* waits for the other lists (above) */
		if (n->pending != NULL && ascii_ieq(n->pending, want))
			continue; /* claimed already, the answer is on its way */
		if (employee_record_set_str(&n->pending, want) != 0 ||
		    claim_add(c, NAME_CLAIM, rec, l->ns, want, now, 0, ev) != 0)
			return ID_ENOMEM;
		if (c != NULL)
			c->changed = true;
	}
	/* A namespace the mapping no longer lists: nothing is wanted there. */
	for (size_t i = 0; i < rec->nnames; i++)
		if (mapping_uniques_find(u, rec->names[i].ns) == NULL)
			pending_drop(&rec->names[i], c);
	return 0;
}

/* Sets key to value (non-NULL) when it differs; notes the change. */
static int merge_value(employee_record_t *rec, const char *key, const char *value,
                       const char *event_id, uint64_t seq)
{
	bool changed;
	if (id_attrs_update(&rec->hr, key, value, &changed) != 0 ||
	    (changed && note(rec, key, event_id, seq) != 0))
		return ID_ENOMEM;
	return 0;
}

/* UPDATE/TERMINATE/REHIRE/...: the event lists only what changed. */
static int merge_attrs(employee_record_t *rec, const id_attrs_t *a, const char *event_id,
                       uint64_t seq)
{
	for (size_t i = 0; i < a->len; i++) {
		const char *key = a->items[i].key;
		if (a->items[i].value != NULL) {
			if (merge_value(rec, key, a->items[i].value, event_id, seq) != 0)
				return ID_ENOMEM;
		} else if (id_attrs_has(&rec->hr, key)) {
			if (note(rec, key, event_id, seq) != 0)
				return ID_ENOMEM;
			id_attrs_remove(&rec->hr, key);
		}
	}
	return 0;
}

/* HIRE: the event is the whole HR record; what it lacks is gone. */
static int replace_attrs(employee_record_t *rec, const employee_event_t *ev, uint64_t seq)
{
	/* Backwards, so removing entry i leaves the unvisited ones in place. */
	for (size_t i = rec->hr.len; i > 0; i--) {
		const char *key = rec->hr.items[i - 1].key;
		if (id_attrs_get(&ev->attributes, key) != NULL)
			continue;
		if (note(rec, key, ev->event_id, seq) != 0)
			return ID_ENOMEM;
		id_attrs_remove(&rec->hr, key);
	}
	const id_attrs_t *a = &ev->attributes;
	for (size_t i = 0; i < a->len; i++)
		if (a->items[i].value != NULL &&
		    merge_value(rec, a->items[i].key, a->items[i].value, ev->event_id,
		                seq) != 0)
			return ID_ENOMEM;
	return 0;
}

/* strcmp() that settles on the first byte without a call, which is where
 * most keys already differ. */
static inline int key_cmp(const char *a, const char *b)
{
	if (*a != *b)
		return (unsigned char)*a - (unsigned char)*b;
	return strcmp(a, b);
}

/* The cause of attribute, or NULL.  *hint is where the previous lookup
 * found one: a mapping traces its outputs in an order, so the next is
 * usually a neighbour (the built-in mapping's, the one before). */
static attr_cause_t *cause_find(desired_identity_t *d, const char *attribute,
                                size_t *hint)
{
	size_t h = *hint;
	/* The built-in mapping names a cause with the very string it traces
	 * it under: a pointer compare settles most. */
	if (h > 0 && h - 1 < d->ncauses &&
	    (d->causes[h - 1].attribute == attribute ||
	     strcmp(d->causes[h - 1].attribute, attribute) == 0)) {
		*hint = h - 1;
		return &d->causes[h - 1];
	}
	if (h + 1 < d->ncauses && strcmp(d->causes[h + 1].attribute, attribute) == 0) {
		*hint = h + 1;
		return &d->causes[h + 1];
	}
	size_t lo = 0, hi = d->ncauses;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(d->causes[mid].attribute, attribute);
		if (c == 0) {
			*hint = mid;
			return &d->causes[mid];
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The event ids already copied into a new identity's arena, by the
 * pointer they were copied from: causes mostly name the same few events,
 * and arena strings may be shared. */
typedef struct id_copies {
	const char *from[8];
	char *copy[8];
	size_t n;
} id_copies_t;

/* A copy of event_id owned by d: from d's arena when it has one (shared
 * with the other parts that name the same string), else malloc'd.  NULL
 * when out of memory. */
static char *event_copy(desired_identity_t *d, id_copies_t *ids, const char *event_id)
{
	if (d->arena == NULL)
		return strdup(event_id);
	for (size_t k = 0; k < ids->n; k++)
		if (ids->from[k] == event_id)
			return ids->copy[k];
	char *e = desired_arena_strdup(&d->arena, event_id);
	if (e != NULL && ids->n < sizeof(ids->from) / sizeof(ids->from[0])) {
		ids->from[ids->n] = event_id;
		ids->copy[ids->n++] = e;
	}
	return e;
}

static int set_cause_event(desired_identity_t *d, id_copies_t *ids, attr_cause_t *c,
                           const char *event_id)
{
	char *e = event_copy(d, ids, event_id);
	if (e == NULL)
		return ID_ENOMEM;
	if (d->arena == NULL)
		free(c->event_id);
	c->event_id = e;
	return 0;
}

/*
 * Fills each cause's event id: the newest change among the sources the
 * mapping traced for it.  Walks the trace (later entries win) and looks
 * causes up by binary search, since causes are sorted.
 */
static int resolve_causes(const employee_record_t *rec, const mapping_trace_t *trace,
                          const employee_event_t *ev, desired_identity_t *d,
                          id_copies_t *ids)
{
	/* Outputs share sources (uid, mail and cn all read last_name), and
	 * a mapping names them with its own strings: look each pointer up
	 * in the record once. */
	struct {
		const char *key;
		const employee_change_t *ch;
	} seen[32];
	size_t nseen = 0, hint = d->ncauses;
	for (size_t i = 0; i < trace->len; i++) {
		attr_cause_t *c = cause_find(d, trace->items[i].attribute, &hint);
		const employee_change_t *best = NULL;
		if (c == NULL)
			continue;
		for (const char *const *src = trace->items[i].hr_keys; *src != NULL;
		     src++) {
			const employee_change_t *ch = NULL;
			size_t k = 0;
			while (k < nseen && seen[k].key != *src)
				k++;
			if (k < nseen) {
				ch = seen[k].ch;
			} else {
				ch = employee_record_change_find(rec, *src);
				if (nseen < sizeof(seen) / sizeof(seen[0])) {
					seen[nseen].key = *src;
					seen[nseen++].ch = ch;
				}
			}
			if (ch != NULL && (best == NULL || ch->seq > best->seq))
				best = ch;
		}
		if (best != NULL && set_cause_event(d, ids, c, best->event_id) != 0)
			return ID_ENOMEM;
	}
	/* An output without recorded sources is attributed to the event being
	 * folded: it is the one that produced this version. */
	for (size_t i = 0; i < d->ncauses; i++)
		if (d->causes[i].event_id == NULL &&
		    set_cause_event(d, ids, &d->causes[i], ev->event_id) != 0)
			return ID_ENOMEM;
	return 0;
}

/* True when output `name` (an attribute or a MAPPING_CAUSE_* name) has a
 * different value in a than in b. */
static bool section_output_differs(const desired_identity_t *a,
                                   const desired_identity_t *b, const char *name);

static bool output_differs(const desired_identity_t *a, const desired_identity_t *b,
                           const char *name)
{
	const char *x, *y;
	if (name[0] != '@' && strchr(name, '.') != NULL && a->ntargets > 0)
		return section_output_differs(a, b, name);
	if (strcmp(name, MAPPING_CAUSE_GROUPS) == 0) {
		if (a->ngroups != b->ngroups)
			return true;
		for (size_t i = 0; i < a->ngroups; i++)
			if (strcmp(a->groups[i], b->groups[i]) != 0)
				return true;
		return false;
	}
	if (strcmp(name, MAPPING_CAUSE_STATE) == 0)
		return a->state != b->state;
	if (strcmp(name, MAPPING_CAUSE_CONTAINER) == 0) {
		x = a->container;
		y = b->container;
	} else if (strcmp(name, MAPPING_CAUSE_MANAGER) == 0) {
		x = a->manager_id;
		y = b->manager_id;
	} else {
		x = id_attrs_get(&a->attributes, name);
		y = id_attrs_get(&b->attributes, name);
	}
	if (x == NULL || y == NULL)
		return x != y;
	return strcmp(x, y) != 0;
}

/* output_differs() for a section's output "<target>.<output>". */
static bool section_output_differs(const desired_identity_t *a,
                                   const desired_identity_t *b, const char *name)
{
	const char *dot = strchr(name, '.');
	char tn[64];
	size_t n = (size_t)(dot - name);
	if (n >= sizeof(tn))
		return true;
	memcpy(tn, name, n);
	tn[n] = '\0';
	const char *out = dot + 1;
	const target_identity_t *x = desired_identity_target(a, tn);
	const target_identity_t *y = desired_identity_target(b, tn);
	/* A version without sections gave every target its top level. */
	target_identity_t top = {NULL,      true,       b->attributes,
	                         b->groups, b->ngroups, b->container};
	if (y == NULL && b->ntargets == 0)
		y = &top;
	if (x == NULL || y == NULL)
		return x != y;
	if (x->in_scope != y->in_scope)
		return true;
	if (strcmp(out, MAPPING_CAUSE_GROUPS) == 0) {
		if (x->ngroups != y->ngroups)
			return true;
		for (size_t i = 0; i < x->ngroups; i++)
			if (strcmp(x->groups[i], y->groups[i]) != 0)
				return true;
		return false;
	}
	const char *u, *v;
	if (strcmp(out, MAPPING_CAUSE_CONTAINER) == 0) {
		u = x->container;
		v = y->container;
	} else {
		u = id_attrs_get(&x->attributes, out);
		v = id_attrs_get(&y->attributes, out);
	}
	if (u == NULL || v == NULL)
		return u != v;
	return strcmp(u, v) != 0;
}

/*
 * A section the policy put out of scope keeps what the target last had
 * in scope (attributes, container, and their causes), so the target can
 * still find the account to disable it; it has no groups.
 */
static int carry_out_of_scope(desired_identity_t *d, const desired_identity_t *last)
{
	char pre[80];
	for (size_t i = 0; i < d->ntargets; i++) {
		target_identity_t *t = &d->targets[i];
		const target_identity_t *o = desired_identity_target(last, t->name);
		if (t->in_scope || o == NULL || o->attributes.len == 0)
			continue;
		id_attrs_fini(&t->attributes);
		free(t->container);
		t->container = NULL;
		if (id_attrs_copy(&t->attributes, &o->attributes) != 0 ||
		    (t->container = strdup(o->container != NULL ? o->container : "")) ==
		        NULL)
			return ID_ENOMEM;
		int pl = snprintf(pre, sizeof(pre), "%s.", t->name);
		for (size_t k = 0;
		     pl > 0 && (size_t)pl < sizeof(pre) && k < last->ncauses; k++) {
			const attr_cause_t *c = &last->causes[k];
			if (strncmp(c->attribute, pre, (size_t)pl) == 0 &&
			    strcmp(c->attribute + pl, MAPPING_CAUSE_GROUPS) != 0 &&
			    desired_identity_set_cause(d, c->attribute, c->event_id,
			                               c->rule) != 0)
				return ID_ENOMEM;
		}
	}
	return 0;
}

/*
 * desired_identity_same_target_state() without policy_version: which policy
 * computed a value is provenance, not content.  A new policy that maps an
 * employee to the same identity gives no new version (the old one, with the
 * old policy_version, stays current); before any deployment every version
 * has the same policy_version, so this decides exactly as the model does.
 */
static bool same_for_targets(desired_identity_t *d, const desired_identity_t *last)
{
	char *version = d->policy_version;
	d->policy_version = last->policy_version;
	bool same = desired_identity_same_target_state(d, last);
	d->policy_version = version;
	return same;
}

/* The fold's time for ev: when the change became known (an event without
 * that uses its effective time), never earlier than the record's clock. */
static int64_t fold_now(const employee_record_t *rec, const employee_event_t *ev)
{
	int64_t t = ev->occurred_at > 0 ? ev->occurred_at : ev->effective_at;
	return t > rec->now ? t : rec->now;
}

static void facts_of(const employee_record_t *rec, lifecycle_facts_t *f)
{
	f->hired = rec->status != EMPLOYEE_STATUS_NONE;
	f->terminated = rec->status == EMPLOYEE_STATUS_TERMINATED;
	f->start_date = id_attrs_get(&rec->hr, FOLD_HR_START_DATE);
	f->employment_at = rec->employment_at;
	f->term_at = rec->term_at;
	f->term_known_at = rec->term_known_at;
	f->on_leave = rec->on_leave;
}

/* The event id of the fact that decided a lifecycle state. */
static const char *by_event(const employee_record_t *rec, lifecycle_by_t by)
{
	const char *e = by == LIFECYCLE_BY_TERMINATION ? rec->term_event
	                : by == LIFECYCLE_BY_LEAVE     ? rec->leave_event
	                                               : rec->employment_event;
	return e;
}

/*
 * Lifecycle state and identity of rec at now.  The state depends on the
 * timing the mapping returns, and the mapping sees the state (ctx.state),
 * so: evaluate under the state the last timing gives; when the timing
 * returned gives another state, evaluate once more under that one.  The
 * second result stands (a policy whose timing flips with ctx.state would
 * otherwise never settle).  On success d holds the identity, *lc the state.
 */
static int fold_evaluate(employee_record_t *rec, const employee_event_t *ev, int64_t now,
                         const mapping_t *m, const id_attrs_t *granted,
                         mapping_uniques_t *uniq, desired_identity_t *d,
                         mapping_trace_t *trace, lifecycle_result_t *lc, id_err_t *err)
{
	lifecycle_facts_t f;
	mapping_timing_t t0, t1;
	int rc;

	facts_of(rec, &f);
	if (rec->has_timing)
		t0 = rec->timing;
	else
		mapping_timing_default(&t0);
	if ((rc = lifecycle_evaluate(rec->employee_id, &f, &t0, now, lc, err)) != 0)
		return rc;
	/* An arbiter's answer carries a sentence about the name, not an HR
	 * reason the policy could act on. */
	const char *reason =
	    ev->type == EV_NAME_GRANTED || ev->type == EV_NAME_DENIED ? NULL : ev->reason;
	if (reason == NULL && rec->status == EMPLOYEE_STATUS_TERMINATED)
		reason = rec->term_reason;
	/* The new identity is built once and then read: an arena suits it. */
	mapping_context_t ctx = {
	    employee_event_type_name(ev->type), reason, granted, &t1, uniq, true};
	for (int round = 0;; round++) {
		d->effective_at = now;
		if ((rc = mapping_apply_ctx(m, &rec->hr, lc->state, &ctx, d, trace,
		                            err)) != 0)
			return rc;
		if (round == 1 || mapping_timing_equal(&t0, &t1))
			break;
		lifecycle_result_t again;
		if ((rc = lifecycle_evaluate(rec->employee_id, &f, &t1, now, &again,
		                             err)) != 0)
			return rc;
		lifecycle_state_t before = lc->state;
		*lc = again;
		t0 = t1;
		if (again.state == before)
			break;
	}
	rec->timing = t1;
	rec->has_timing = true;
	return 0;
}

/* The next instant rec must be re-evaluated at: its next lifecycle change
 * or its first pending change, whichever comes first (0: none). */
static int64_t next_timer(const employee_record_t *rec, const lifecycle_result_t *lc)
{
	int64_t at = lc->next_at;
	if (rec->npending > 0 && (at == 0 || rec->pending[0].effective_at < at))
		at = rec->pending[0].effective_at;
	return at;
}

/*
 * Maps rec as it stands at now and, when a target would see a difference
 * from rec->last, makes it the next version (see fold_apply()).  With
 * by_cause (a re-evaluation), every output whose value differs from
 * rec->last is attributed to ev itself: the HR facts did not change, the
 * mapping did.  Returns 0, the mapping's or the lifecycle's error (rec's
 * identity unchanged), or ID_ENOMEM (err not set; the caller names the
 * event).
 */
/* States in which the account is not used: names need not be settled. */
static bool leaving_state(lifecycle_state_t s)
{
	return s == LC_SUSPENDED || s == LC_DISABLED;
}

static int fold_emit(employee_record_t *rec, const employee_event_t *ev, int64_t now,
                     const mapping_t *m, bool by_cause, desired_identity_t *out,
                     bool *emitted, fold_claims_t *claims, id_err_t *err)
{
	desired_identity_t d;
	mapping_trace_t trace = MAPPING_TRACE_INIT;
	mapping_uniques_t uniq = MAPPING_UNIQUES_INIT;
	id_attrs_t granted = ID_ATTRS_INIT;
	lifecycle_result_t lc;
	bool held = false;
	int rc;

	desired_identity_init(&d);
	if ((d.employee_id = strdup(rec->employee_id)) == NULL ||
	    granted_attrs(rec, &granted) != 0)
		goto nomem;
	if ((rc = fold_evaluate(rec, ev, now, m, &granted, &uniq, &d, &trace, &lc,
	                        err)) == 0 &&
	    claims != NULL) {
		rc = names_decide(rec, &uniq, lc.state, now, ev, claims, &held, err);
		/* A leaver's account is disabled whatever its names: no free
		 * candidate for a rename must not keep it enabled. */
		if (rc == ID_ECONFLICT && leaving_state(lc.state) &&
		    rec->last.version > 0) {
			id_err_clear(err);
			rc = 0;
			held = true;
		}
	}
	if (rc != 0) {
		if (rc != ID_ENOMEM)
			id_err_wrap(err, "event %s (%s)", ev->event_id,
			            employee_event_type_name(ev->type));
		/* No state could be computed, so no lifecycle instant either;
		 * a timer already due would only be fired, and refused, again.
		 * What is still pending keeps its date; the event that fixes
		 * the error computes the rest. */
		rec->timer_at = rec->npending > 0 ? rec->pending[0].effective_at : 0;
		if (rec->timer_at != 0 && rec->timer_at <= now)
			rec->timer_at = 0;
		goto out;
	}
	if (d.arena != NULL && d.ntargets > 0) {
		/* Sections are edited below: an ordinary copy (no mapping
		 * builds sections in an arena today). */
		desired_identity_t own;
		desired_identity_init(&own);
		if (desired_identity_copy(&own, &d) != 0)
			goto nomem;
		desired_identity_fini(&d);
		d = own;
	}
	if (rec->last.version > 0 && carry_out_of_scope(&d, &rec->last) != 0)
		goto nomem;
	rec->timer_at = next_timer(rec, &lc);
	/* A change of state is caused by the fact that decided it (the
	 * termination whose time came, the hire whose start date came), not
	 * by the timer that noticed. */
	if (rec->last.version == 0 || rec->last.state != lc.state) {
		const char *by = by_event(rec, lc.by);
		if (by != NULL && note(rec, MAPPING_SRC_LIFECYCLE, by, rec->seq) != 0)
			goto nomem;
	}
	if (held && leaving_state(lc.state) && rec->last.version > 0) {
		/* Suspending or disabling does not wait for a name: the last
		 * version with the new state and groups, its names kept. */
		desired_identity_t keep;
		desired_identity_init(&keep);
		if (desired_identity_copy(&keep, &rec->last) != 0)
			goto nomem;
		keep.state = d.state;
		keep.effective_at = d.effective_at;
		for (size_t i = 0; i < keep.ngroups; i++)
			free(keep.groups[i]);
		free(keep.groups);
		keep.groups = NULL;
		keep.ngroups = 0;
		for (size_t i = 0; i < d.ngroups; i++)
			if (desired_identity_add_group(&keep, d.groups[i]) != 0) {
				desired_identity_fini(&keep);
				goto nomem;
			}
		/* Each target's section too: its scope and groups from now,
		 * its names kept. */
		for (size_t i = 0; i < keep.ntargets; i++) {
			target_identity_t *kt = &keep.targets[i];
			const target_identity_t *nt =
			    desired_identity_target(&d, kt->name);
			for (size_t g = 0; g < kt->ngroups; g++)
				free(kt->groups[g]);
			free(kt->groups);
			kt->groups = NULL;
			kt->ngroups = 0;
			if (nt == NULL)
				continue;
			kt->in_scope = nt->in_scope;
			if (nt->ngroups > 0 &&
			    (kt->groups = calloc(nt->ngroups, sizeof(char *))) == NULL) {
				desired_identity_fini(&keep);
				goto nomem;
			}
			for (size_t g = 0; g < nt->ngroups; g++) {
				if ((kt->groups[g] = strdup(nt->groups[g])) == NULL) {
					desired_identity_fini(&keep);
					goto nomem;
				}
				kt->ngroups = g + 1;
			}
		}
		free(keep.cause_event_id);
		keep.cause_event_id = NULL;
		desired_identity_fini(&d);
		d = keep;
		held = false;
	}
	if (held) {
		/* The new identity waits for its names: the account keeps the
		 * version it has (a new hire gets none yet). */
		if (claims != NULL)
			claims->held = true;
		goto out;
	}
	if (rec->last.version > 0 && same_for_targets(&d, &rec->last))
		goto out; /* nothing a target would see changed */

	d.version = rec->last.version + 1;
	id_copies_t ids = {.n = 0};
	if ((d.cause_event_id = event_copy(&d, &ids, ev->event_id)) == NULL ||
	    resolve_causes(rec, &trace, ev, &d, &ids) != 0)
		goto nomem;
	for (size_t i = 0; by_cause && i < d.ncauses; i++)
		if ((rec->last.version == 0 ||
		     output_differs(&d, &rec->last, d.causes[i].attribute)) &&
		    set_cause_event(&d, &ids, &d.causes[i], ev->event_id) != 0)
			goto nomem;
	if (out != NULL && desired_identity_copy(out, &d) != 0)
		goto nomem;
	/* Move d into the record: no second copy. */
	desired_identity_fini(&rec->last);
	rec->last = d;
	desired_identity_init(&d);
	*emitted = true;
	rc = 0;
	goto out;
nomem:
	rc = ID_ENOMEM;
out:
	desired_identity_fini(&d);
	mapping_trace_fini(&trace);
	mapping_uniques_fini(&uniq);
	id_attrs_fini(&granted);
	return rc;
}

static int check_event(const employee_record_t *rec, const employee_event_t *ev,
                       id_err_t *err)
{
	const char *eid = ev->employee_id ? ev->employee_id : "(none)";
	if (ev->employee_id == NULL || ev->employee_id[0] == '\0')
		return id_err_set(err, ID_EINVALID, "event %s: no employee id",
		                  ev->event_id ? ev->event_id : "(none)");
	if (ev->event_id == NULL || ev->event_id[0] == '\0')
		return id_err_set(err, ID_EINVALID,
		                  "employee %s: event without an event id", eid);
	if (rec->employee_id != NULL && strcmp(rec->employee_id, ev->employee_id) != 0)
		return id_err_set(
		    err, ID_EINVALID,
		    "event %s: employee %s folded into the record of employee %s",
		    ev->event_id, eid, rec->employee_id);
	if ((unsigned)ev->type >= EV_TYPE_COUNT)
		return id_err_set(err, ID_EINVALID,
		                  "event %s: employee %s: unknown event type %d",
		                  ev->event_id, eid, (int)ev->type);
	for (size_t i = 0; i < ev->attributes.len; i++)
		if (ev->attributes.items[i].key[0] == '@')
			return id_err_set(err, ID_EINVALID,
			                  "event %s: employee %s: attribute \"%s\": keys "
			                  "starting with '@' are reserved",
			                  ev->event_id, eid, ev->attributes.items[i].key);
	return 0;
}

/* Applies a dated change (now or from the pending queue). */
static int absorb_change(employee_record_t *rec, employee_event_type_t type,
                         const id_attrs_t *attrs, const char *event_id, uint64_t seq)
{
	if (merge_attrs(rec, attrs, event_id, seq) != 0)
		return ID_ENOMEM;
	if (type == EV_LEAVE_START || type == EV_LEAVE_END) {
		bool leave = type == EV_LEAVE_START;
		if (leave != rec->on_leave || rec->leave_event == NULL)
			if (employee_record_set(rec, &rec->leave_event, event_id) != 0)
				return ID_ENOMEM;
		rec->on_leave = leave;
	}
	return 0;
}

/* Applies the pending changes whose time has come, oldest first. */
static int apply_due(employee_record_t *rec, int64_t now)
{
	while (rec->npending > 0 && rec->pending[0].effective_at <= now) {
		employee_pending_t *pc = &rec->pending[0];
		uint64_t seq = ++rec->seq;
		if (absorb_change(rec, pc->type, &pc->attributes, pc->event_id, seq) != 0)
			return ID_ENOMEM;
		employee_record_pending_pop(rec);
	}
	return 0;
}

/* HIRE / REHIRE: a new employment starts (or a hire is restated). */
static int absorb_employment(employee_record_t *rec, const employee_event_t *ev,
                             uint64_t seq)
{
	if (ev->type == EV_HIRE && replace_attrs(rec, ev, seq) != 0)
		return ID_ENOMEM;
	if (ev->type == EV_REHIRE &&
	    merge_attrs(rec, &ev->attributes, ev->event_id, seq) != 0)
		return ID_ENOMEM;
	if (rec->status == EMPLOYEE_STATUS_ACTIVE && rec->employment_event != NULL)
		return 0; /* restated: the employment and its start are unchanged */
	rec->status = EMPLOYEE_STATUS_ACTIVE;
	rec->employment_at = ev->effective_at;
	rec->term_at = rec->term_known_at = 0;
	rec->on_leave = false;
	if (employee_record_set(rec, &rec->employment_event, ev->event_id) != 0 ||
	    employee_record_set(rec, &rec->term_event, NULL) != 0 ||
	    employee_record_set(rec, &rec->term_reason, NULL) != 0)
		return ID_ENOMEM;
	return 0;
}

static int absorb_termination(employee_record_t *rec, const employee_event_t *ev,
                              int64_t now, uint64_t seq)
{
	if (merge_attrs(rec, &ev->attributes, ev->event_id, seq) != 0)
		return ID_ENOMEM;
	if (rec->status != EMPLOYEE_STATUS_TERMINATED) {
		rec->status = EMPLOYEE_STATUS_TERMINATED;
		rec->term_known_at = now;
	} else if (rec->term_at == ev->effective_at) {
		return 0; /* the same termination again */
	}
	/* A later TERMINATE corrects the date (and reason) of the first. */
	rec->term_at = ev->effective_at;
	if (employee_record_set(rec, &rec->term_event, ev->event_id) != 0 ||
	    employee_record_set(rec, &rec->term_reason, ev->reason) != 0)
		return ID_ENOMEM;
	return 0;
}

/*
 * NAME_GRANTED / NAME_DENIED: the arbiter's answer to one of rec's claims
 * (see fold.h).  Re-evaluates when the answer changes what rec holds.
 */
static int fold_answer(employee_record_t *rec, const employee_event_t *ev,
                       const mapping_t *m, desired_identity_t *out, bool *emitted,
                       fold_claims_t *claims, id_err_t *err)
{
	const char *ns = id_attrs_get(&ev->attributes, NAME_ATTR_NAMESPACE);
	const char *value = id_attrs_get(&ev->attributes, NAME_ATTR_VALUE);
	bool granted = ev->type == EV_NAME_GRANTED;
	if (ns == NULL || ns[0] == '\0' || value == NULL || value[0] == '\0')
		return id_err_set(
		    err, ID_EINVALID,
		    "event %s: employee %s: %s without a namespace and value",
		    ev->event_id, ev->employee_id, employee_event_type_name(ev->type));
	/* An answer for someone never hired (a claim made by hand): nothing
	 * here wants a name. */
	if (rec->status == EMPLOYEE_STATUS_NONE)
		return 0;
	int64_t now = fold_now(rec, ev);
	employee_name_t *n =
	    granted ? employee_record_name(rec, ns) : employee_record_name_add(rec, ns);
	if (n == NULL && !granted)
		return ID_ENOMEM;
	if (name_held(n) && ascii_ieq(n->granted, value))
		return 0; /* ours already (a repeated claim's answer) */
	if (granted &&
	    (n == NULL || n->pending == NULL || !ascii_ieq(n->pending, value))) {
		/* No longer wanted (the candidates moved on): give it back at
		 * once, it was never used. */
		return claim_add(claims, NAME_RELEASE, rec, ns, value, now, now, ev);
	}
	if (granted) {
		/* The old name (a rename's) stays its owner's for the
		 * quarantine. */
		if (name_held(n) && claim_add(claims, NAME_RELEASE, rec, ns, n->granted,
		                              now, quarantine_end(rec, now), ev) != 0)
			return ID_ENOMEM;
		free(n->granted);
		n->granted = n->pending; /* as claimed */
		n->pending = NULL;
		n->released = false;
	} else {
		if (employee_name_deny(n, value) != 0)
			return ID_ENOMEM;
		if (n->pending != NULL && ascii_ieq(n->pending, value))
			pending_drop(n, NULL);
	}
	if (claims != NULL)
		claims->changed = true;
	rec->now = now;
	return fold_emit(rec, ev, now, m, false, out, emitted, claims, err);
}

int fold_apply(employee_record_t *rec, const employee_event_t *ev, const mapping_t *m,
               desired_identity_t *out, bool *emitted, id_err_t *err)
{
	return fold_apply_claims(rec, ev, m, out, emitted, NULL, err);
}

int fold_apply_claims(employee_record_t *rec, const employee_event_t *ev,
                      const mapping_t *m, desired_identity_t *out, bool *emitted,
                      fold_claims_t *claims, id_err_t *err)
{
	int rc;

	*emitted = false;
	if ((rc = check_event(rec, ev, err)) != 0)
		return rc;

	switch (ev->type) {
	case EV_HIRE:
	case EV_REHIRE:
	case EV_UPDATE:
	case EV_TERMINATE:
	case EV_LEAVE_START:
	case EV_LEAVE_END:
	case EV_CONVERSION:
	case EV_REEVALUATE:
		break;
	case EV_NAME_GRANTED:
	case EV_NAME_DENIED:
		rc = fold_answer(rec, ev, m, out, emitted, claims, err);
		if (rc == ID_ENOMEM)
			goto nomem;
		return rc;
	default:
		/* Policy markers are handled outside the employee fold (see
		 * fold.h). */
		return 0;
	}
	if (rec->status == EMPLOYEE_STATUS_NONE && ev->type != EV_HIRE &&
	    ev->type != EV_REHIRE) {
		if (ev->type == EV_REEVALUATE)
			return 0; /* a timer of a record that never got a hire */
		return id_err_set(err, ID_ENOTFOUND,
		                  "event %s: %s for employee %s, who was never hired",
		                  ev->event_id, employee_event_type_name(ev->type),
		                  ev->employee_id);
	}

	/* Absorb the HR facts. */
	int64_t now = fold_now(rec, ev);
	uint64_t seq = rec->seq + 1;
	if (rec->employee_id == NULL) {
		if ((rec->employee_id = strdup(ev->employee_id)) == NULL ||
		    note(rec, MAPPING_SRC_EMPLOYEE_ID, ev->event_id, seq) != 0)
			goto nomem;
	}
	switch (ev->type) {
	case EV_HIRE:
	case EV_REHIRE:
		rc = absorb_employment(rec, ev, seq);
		break;
	case EV_TERMINATE:
		rc = absorb_termination(rec, ev, now, seq);
		break;
	case EV_REEVALUATE:
		rc = 0;
		break;
	default: /* UPDATE, CONVERSION, LEAVE_*: dated changes */
		if (ev->effective_at > now)
			rc = employee_record_pending_add(rec, ev, seq);
		else
			rc = absorb_change(rec, ev->type, &ev->attributes, ev->event_id,
			                   seq);
		break;
	}
	if (rc != 0)
		goto nomem;
	rec->seq = seq;
	rec->now = now;
	if (apply_due(rec, now) != 0)
		goto nomem;

	/* Compute the identity at the fold's time. */
	rc = fold_emit(rec, ev, now, m, false, out, emitted, claims, err);
	if (rc == ID_ENOMEM)
		goto nomem;
	return rc;
nomem:
	return id_err_set(err, ID_ENOMEM, "event %s: employee %s: out of memory",
	                  ev->event_id, ev->employee_id);
}

int fold_reevaluate(employee_record_t *rec, const employee_event_t *cause,
                    const mapping_t *m, desired_identity_t *out, bool *emitted,
                    id_err_t *err)
{
	return fold_reevaluate_claims(rec, cause, m, out, emitted, NULL, err);
}

int fold_reevaluate_claims(employee_record_t *rec, const employee_event_t *cause,
                           const mapping_t *m, desired_identity_t *out, bool *emitted,
                           fold_claims_t *claims, id_err_t *err)
{
	*emitted = false;
	if (cause->event_id == NULL || cause->event_id[0] == '\0')
		return id_err_set(err, ID_EINVALID,
		                  "re-evaluation without a cause event id");
	/* Nobody was ever hired here (only refused events): nothing to map. */
	if (rec->status == EMPLOYEE_STATUS_NONE || rec->employee_id == NULL)
		return 0;
	int64_t now = fold_now(rec, cause);
	rec->now = now;
	int rc = apply_due(rec, now);
	if (rc == 0)
		rc = fold_emit(rec, cause, now, m, true, out, emitted, claims, err);
	if (rc == ID_ENOMEM)
		return id_err_set(err, ID_ENOMEM,
		                  "re-evaluating employee %s for event %s: out of memory",
		                  rec->employee_id, cause->event_id);
	return rc;
}
