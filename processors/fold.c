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

#include <stdlib.h>
#include <string.h>

static int note(employee_record_t *rec, const char *key, const employee_event_t *ev,
                uint64_t seq)
{
	return employee_record_note_change(rec, key, ev->event_id, seq);
}

/* Sets key to value (non-NULL) when it differs; notes the change. */
static int merge_value(employee_record_t *rec, const char *key, const char *value,
                       const employee_event_t *ev, uint64_t seq)
{
	const char *cur = id_attrs_get(&rec->hr, key);
	if (cur != NULL && strcmp(cur, value) == 0)
		return 0;
	if (id_attrs_set(&rec->hr, key, value) != 0 || note(rec, key, ev, seq) != 0)
		return ID_ENOMEM;
	return 0;
}

/* UPDATE/TERMINATE/REHIRE: the event lists only what changed. */
static int merge_attrs(employee_record_t *rec, const employee_event_t *ev, uint64_t seq)
{
	const id_attrs_t *a = &ev->attributes;
	for (size_t i = 0; i < a->len; i++) {
		const char *key = a->items[i].key;
		if (a->items[i].value != NULL) {
			if (merge_value(rec, key, a->items[i].value, ev, seq) != 0)
				return ID_ENOMEM;
		} else if (id_attrs_has(&rec->hr, key)) {
			if (note(rec, key, ev, seq) != 0)
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
		if (note(rec, key, ev, seq) != 0)
			return ID_ENOMEM;
		id_attrs_remove(&rec->hr, key);
	}
	const id_attrs_t *a = &ev->attributes;
	for (size_t i = 0; i < a->len; i++)
		if (a->items[i].value != NULL &&
		    merge_value(rec, a->items[i].key, a->items[i].value, ev, seq) != 0)
			return ID_ENOMEM;
	return 0;
}

static attr_cause_t *cause_find(desired_identity_t *d, const char *attribute)
{
	size_t lo = 0, hi = d->ncauses;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(d->causes[mid].attribute, attribute);
		if (c == 0)
			return &d->causes[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int set_cause_event(attr_cause_t *c, const char *event_id)
{
	char *e = strdup(event_id);
	if (e == NULL)
		return ID_ENOMEM;
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
                          const employee_event_t *ev, desired_identity_t *d)
{
	for (size_t i = 0; i < trace->len; i++) {
		attr_cause_t *c = cause_find(d, trace->items[i].attribute);
		const employee_change_t *best = NULL;
		if (c == NULL)
			continue;
		for (const char *const *src = trace->items[i].hr_keys; *src != NULL;
		     src++) {
			const employee_change_t *ch =
			    employee_record_change_find(rec, *src);
			if (ch != NULL && (best == NULL || ch->seq > best->seq))
				best = ch;
		}
		if (best != NULL && set_cause_event(c, best->event_id) != 0)
			return ID_ENOMEM;
	}
	/* An output without recorded sources is attributed to the event being
	 * folded: it is the one that produced this version. */
	for (size_t i = 0; i < d->ncauses; i++)
		if (d->causes[i].event_id == NULL &&
		    set_cause_event(&d->causes[i], ev->event_id) != 0)
			return ID_ENOMEM;
	return 0;
}

/* True when output `name` (an attribute or a MAPPING_CAUSE_* name) has a
 * different value in a than in b. */
static bool output_differs(const desired_identity_t *a, const desired_identity_t *b,
                           const char *name)
{
	const char *x, *y;
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

/*
 * Maps rec as it stands with now = ev->effective_at and, when a target
 * would see a difference from rec->last, makes it the next version (see
 * fold_apply()).  With by_cause (a re-evaluation), every output whose value
 * differs from rec->last is attributed to ev itself: the HR facts did not
 * change, the mapping did.  Returns 0, the mapping's error (rec unchanged),
 * or ID_ENOMEM (err not set; the caller names the event).
 */
static int fold_emit(employee_record_t *rec, const employee_event_t *ev,
                     const mapping_t *m, bool by_cause, desired_identity_t *out,
                     bool *emitted, id_err_t *err)
{
	desired_identity_t d;
	mapping_trace_t trace = MAPPING_TRACE_INIT;
	int rc;

	desired_identity_init(&d);
	if ((d.employee_id = strdup(rec->employee_id)) == NULL)
		goto nomem;
	d.effective_at = ev->effective_at;
	lifecycle_state_t state =
	    rec->status == EMPLOYEE_STATUS_ACTIVE ? LC_ACTIVE : LC_DISABLED;
	if ((rc = mapping_apply_traced(m, &rec->hr, state, &d, &trace, err)) != 0) {
		if (rc != ID_ENOMEM)
			id_err_wrap(err, "event %s (%s)", ev->event_id,
			            employee_event_type_name(ev->type));
		goto out;
	}
	if (rec->last.version > 0 && same_for_targets(&d, &rec->last))
		goto out; /* nothing a target would see changed */

	d.version = rec->last.version + 1;
	if ((d.cause_event_id = strdup(ev->event_id)) == NULL ||
	    resolve_causes(rec, &trace, ev, &d) != 0)
		goto nomem;
	for (size_t i = 0; by_cause && i < d.ncauses; i++)
		if ((rec->last.version == 0 ||
		     output_differs(&d, &rec->last, d.causes[i].attribute)) &&
		    set_cause_event(&d.causes[i], ev->event_id) != 0)
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

int fold_apply(employee_record_t *rec, const employee_event_t *ev, const mapping_t *m,
               desired_identity_t *out, bool *emitted, id_err_t *err)
{
	employee_status_t status;
	int rc;

	*emitted = false;
	if ((rc = check_event(rec, ev, err)) != 0)
		return rc;

	switch (ev->type) {
	case EV_HIRE:
	case EV_REHIRE:
		status = EMPLOYEE_STATUS_ACTIVE;
		break;
	case EV_TERMINATE:
		status = EMPLOYEE_STATUS_TERMINATED;
		break;
	case EV_UPDATE:
		status = rec->status;
		break;
	default:
		/* Leave, conversion, re-evaluation, name and policy events get
		 * their meaning in later changes; until then they are no-ops. */
		return 0;
	}
	if (rec->status == EMPLOYEE_STATUS_NONE &&
	    (ev->type == EV_UPDATE || ev->type == EV_TERMINATE))
		return id_err_set(err, ID_ENOTFOUND,
		                  "event %s: %s for employee %s, who was never hired",
		                  ev->event_id, employee_event_type_name(ev->type),
		                  ev->employee_id);

	/* Absorb the HR facts. */
	uint64_t seq = rec->seq + 1;
	if (rec->employee_id == NULL) {
		if ((rec->employee_id = strdup(ev->employee_id)) == NULL ||
		    note(rec, MAPPING_SRC_EMPLOYEE_ID, ev, seq) != 0)
			goto nomem;
	}
	if (ev->type == EV_HIRE)
		rc = replace_attrs(rec, ev, seq);
	else
		rc = merge_attrs(rec, ev, seq);
	if (rc != 0)
		goto nomem;
	if (status != rec->status) {
		if (note(rec, MAPPING_SRC_LIFECYCLE, ev, seq) != 0)
			goto nomem;
		rec->status = status;
	}
	rec->seq = seq;

	/* Compute the identity with now = the event's effective time. */
	rc = fold_emit(rec, ev, m, false, out, emitted, err);
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
	*emitted = false;
	if (cause->event_id == NULL || cause->event_id[0] == '\0')
		return id_err_set(err, ID_EINVALID,
		                  "re-evaluation without a cause event id");
	/* Nobody was ever hired here (only refused events): nothing to map. */
	if (rec->status == EMPLOYEE_STATUS_NONE || rec->employee_id == NULL)
		return 0;
	int rc = fold_emit(rec, cause, m, true, out, emitted, err);
	if (rc == ID_ENOMEM)
		return id_err_set(err, ID_ENOMEM,
		                  "re-evaluating employee %s for event %s: out of memory",
		                  rec->employee_id, cause->event_id);
	return rc;
}
