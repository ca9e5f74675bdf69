/*
 * model.c — constructors, destructors and small helpers of the v1 records
 * (see model.h).  Pure memory management; no I/O.
 */
#include "schemas/model.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

static const char *const event_type_names[] = {
#define EV_NAME_(n) #n,
    EMPLOYEE_EVENT_TYPE_MAP(EV_NAME_)
#undef EV_NAME_
};

static const char *const lifecycle_names[] = {
#define LC_NAME_(n) #n,
    LIFECYCLE_STATE_MAP(LC_NAME_)
#undef LC_NAME_
};

static const char *const outcome_names[] = {
#define SO_NAME_(n) #n,
    SINK_OUTCOME_MAP(SO_NAME_)
#undef SO_NAME_
};

static int parse_name(const char *const *names, int count, const char *name, int *out)
{
	for (int i = 0; i < count; i++) {
		if (strcmp(names[i], name) == 0) {
			*out = i;
			return 0;
		}
	}
	return ID_EINVALID;
}

const char *employee_event_type_name(employee_event_type_t t)
{
	return (unsigned)t < EV_TYPE_COUNT ? event_type_names[t] : "UNKNOWN";
}

int employee_event_type_parse(const char *name, employee_event_type_t *out)
{
	int v;
	if (parse_name(event_type_names, EV_TYPE_COUNT, name, &v) != 0)
		return ID_EINVALID;
	*out = (employee_event_type_t)v;
	return 0;
}

const char *lifecycle_state_name(lifecycle_state_t s)
{
	return (unsigned)s < LC_STATE_COUNT ? lifecycle_names[s] : "UNKNOWN";
}

int lifecycle_state_parse(const char *name, lifecycle_state_t *out)
{
	int v;
	if (parse_name(lifecycle_names, LC_STATE_COUNT, name, &v) != 0)
		return ID_EINVALID;
	*out = (lifecycle_state_t)v;
	return 0;
}

const char *sink_outcome_name(sink_outcome_t o)
{
	return (unsigned)o < SINK_OUTCOME_COUNT ? outcome_names[o] : "UNKNOWN";
}

int sink_outcome_parse(const char *name, sink_outcome_t *out)
{
	int v;
	if (parse_name(outcome_names, SINK_OUTCOME_COUNT, name, &v) != 0)
		return ID_EINVALID;
	*out = (sink_outcome_t)v;
	return 0;
}

void employee_event_init(employee_event_t *ev)
{
	memset(ev, 0, sizeof(*ev));
	id_attrs_init(&ev->attributes);
}

void employee_event_fini(employee_event_t *ev)
{
	if (ev == NULL)
		return;
	free(ev->event_id);
	free(ev->source);
	free(ev->source_event_id);
	free(ev->employee_id);
	id_attrs_fini(&ev->attributes);
	free(ev->actor);
	free(ev->reason);
	employee_event_init(ev);
}

void desired_identity_init(desired_identity_t *d)
{
	memset(d, 0, sizeof(*d));
	id_attrs_init(&d->attributes);
}

void desired_identity_fini(desired_identity_t *d)
{
	if (d == NULL)
		return;
	free(d->employee_id);
	id_attrs_fini(&d->attributes);
	for (size_t i = 0; i < d->ngroups; i++)
		free(d->groups[i]);
	free(d->groups);
	free(d->container);
	free(d->manager_id);
	free(d->policy_version);
	free(d->cause_event_id);
	for (size_t i = 0; i < d->ncauses; i++) {
		free(d->causes[i].attribute);
		free(d->causes[i].event_id);
		free(d->causes[i].rule);
	}
	free(d->causes);
	desired_identity_init(d);
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : ID_ENOMEM;
}

int desired_identity_copy(desired_identity_t *dst, const desired_identity_t *src)
{
	if (dst == src)
		return 0;
	desired_identity_fini(dst);
	dst->version = src->version;
	dst->state = src->state;
	dst->effective_at = src->effective_at;
	if (dup_opt(&dst->employee_id, src->employee_id) ||
	    dup_opt(&dst->container, src->container) ||
	    dup_opt(&dst->manager_id, src->manager_id) ||
	    dup_opt(&dst->policy_version, src->policy_version) ||
	    dup_opt(&dst->cause_event_id, src->cause_event_id) ||
	    id_attrs_copy(&dst->attributes, &src->attributes))
		goto nomem;
	for (size_t i = 0; i < src->ngroups; i++)
		if (desired_identity_add_group(dst, src->groups[i]) != 0)
			goto nomem;
	for (size_t i = 0; i < src->ncauses; i++)
		if (desired_identity_set_cause(dst, src->causes[i].attribute,
		                               src->causes[i].event_id,
		                               src->causes[i].rule) != 0)
			goto nomem;
	return 0;
nomem:
	desired_identity_fini(dst);
	return ID_ENOMEM;
}

int desired_identity_add_group(desired_identity_t *d, const char *group)
{
	size_t pos = 0;
	while (pos < d->ngroups) {
		int c = strcmp(d->groups[pos], group);
		if (c == 0)
			return 0;
		if (c > 0)
			break;
		pos++;
	}
	char **n = realloc(d->groups, (d->ngroups + 1) * sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	d->groups = n;
	char *g = strdup(group);
	if (g == NULL)
		return ID_ENOMEM;
	memmove(&d->groups[pos + 1], &d->groups[pos], (d->ngroups - pos) * sizeof(*n));
	d->groups[pos] = g;
	d->ngroups++;
	return 0;
}

int desired_identity_set_cause(desired_identity_t *d, const char *attribute,
                               const char *event_id, const char *rule)
{
	char *e = NULL, *r = NULL;
	if (dup_opt(&e, event_id) || dup_opt(&r, rule)) {
		free(e);
		free(r);
		return ID_ENOMEM;
	}
	size_t pos = 0;
	while (pos < d->ncauses) {
		int c = strcmp(d->causes[pos].attribute, attribute);
		if (c == 0) {
			free(d->causes[pos].event_id);
			free(d->causes[pos].rule);
			d->causes[pos].event_id = e;
			d->causes[pos].rule = r;
			return 0;
		}
		if (c > 0)
			break;
		pos++;
	}
	attr_cause_t *n = realloc(d->causes, (d->ncauses + 1) * sizeof(*n));
	char *a = strdup(attribute);
	if (n == NULL || a == NULL) {
		if (n != NULL)
			d->causes = n;
		free(a);
		free(e);
		free(r);
		return ID_ENOMEM;
	}
	d->causes = n;
	memmove(&d->causes[pos + 1], &d->causes[pos], (d->ncauses - pos) * sizeof(*n));
	d->causes[pos].attribute = a;
	d->causes[pos].event_id = e;
	d->causes[pos].rule = r;
	d->ncauses++;
	return 0;
}

static bool str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

bool desired_identity_same_target_state(const desired_identity_t *a,
                                        const desired_identity_t *b)
{
	if (a->state != b->state || !str_eq(a->employee_id, b->employee_id) ||
	    !str_eq(a->container, b->container) ||
	    !str_eq(a->manager_id, b->manager_id) ||
	    !str_eq(a->policy_version, b->policy_version) ||
	    !id_attrs_equal(&a->attributes, &b->attributes) || a->ngroups != b->ngroups)
		return false;
	for (size_t i = 0; i < a->ngroups; i++)
		if (strcmp(a->groups[i], b->groups[i]) != 0)
			return false;
	return true;
}

void sink_result_init(sink_result_t *r)
{
	memset(r, 0, sizeof(*r));
}

void sink_result_fini(sink_result_t *r)
{
	if (r == NULL)
		return;
	free(r->target);
	free(r->employee_id);
	for (size_t i = 0; i < r->nops; i++) {
		free(r->ops[i].op);
		free(r->ops[i].attribute);
		free(r->ops[i].old_value);
		free(r->ops[i].new_value);
	}
	free(r->ops);
	free(r->error);
	sink_result_init(r);
}

int sink_result_add_op(sink_result_t *r, const char *op, const char *attribute,
                       const char *old_value, const char *new_value)
{
	sink_op_t *n = realloc(r->ops, (r->nops + 1) * sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	r->ops = n;
	sink_op_t *o = &r->ops[r->nops];
	memset(o, 0, sizeof(*o));
	if (dup_opt(&o->op, op) || dup_opt(&o->attribute, attribute) ||
	    dup_opt(&o->old_value, old_value) || dup_opt(&o->new_value, new_value)) {
		free(o->op);
		free(o->attribute);
		free(o->old_value);
		free(o->new_value);
		return ID_ENOMEM;
	}
	r->nops++;
	return 0;
}
