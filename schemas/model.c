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

static const char *const name_claim_kind_names[] = {
#define NC_NAME_(n) #n,
    NAME_CLAIM_KIND_MAP(NC_NAME_)
#undef NC_NAME_
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

/* Deep copy of a sorted attribute map: one array of exactly src->len
 * entries, appended in order (no search, no shifting). */
static int copy_attrs(id_attrs_t *dst, const id_attrs_t *src)
{
	if (src->len == 0)
		return 0;
	if ((dst->items = malloc(src->len * sizeof(*dst->items))) == NULL)
		return ID_ENOMEM;
	dst->cap = src->len;
	for (size_t i = 0; i < src->len; i++) {
		id_kv_t *kv = &dst->items[i];
		kv->key = strdup(src->items[i].key);
		kv->value = NULL;
		if (kv->key == NULL)
			return ID_ENOMEM;
		dst->len++;
		if (dup_opt(&kv->value, src->items[i].value) != 0)
			return ID_ENOMEM;
	}
	return 0;
}

static bool attrs_sorted(const id_attrs_t *a)
{
	for (size_t i = 1; i < a->len; i++)
		if (strcmp(a->items[i - 1].key, a->items[i].key) >= 0)
			return false;
	return true;
}

/* True when the groups are strictly ascending, as model.h promises. */
static bool groups_sorted(const desired_identity_t *d)
{
	for (size_t i = 1; i < d->ngroups; i++)
		if (strcmp(d->groups[i - 1], d->groups[i]) >= 0)
			return false;
	return true;
}

static bool causes_sorted(const desired_identity_t *d)
{
	for (size_t i = 1; i < d->ncauses; i++)
		if (strcmp(d->causes[i - 1].attribute, d->causes[i].attribute) >= 0)
			return false;
	return true;
}

/*
 * The copy runs once per emitted version, so it allocates each array once,
 * at its final size, and appends in order.  A source whose arrays break the
 * sort invariant (a struct filled by hand) goes through the inserting
 * helpers instead, which sort and deduplicate it.
 */
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
	    dup_opt(&dst->cause_event_id, src->cause_event_id))
		goto nomem;
	if (attrs_sorted(&src->attributes)) {
		if (copy_attrs(&dst->attributes, &src->attributes) != 0)
			goto nomem;
	} else if (id_attrs_copy(&dst->attributes, &src->attributes) != 0) {
		goto nomem;
	}
	if (src->ngroups > 0 && groups_sorted(src)) {
		if ((dst->groups = malloc(src->ngroups * sizeof(*dst->groups))) == NULL)
			goto nomem;
		for (size_t i = 0; i < src->ngroups; i++) {
			if ((dst->groups[i] = strdup(src->groups[i])) == NULL)
				goto nomem;
			dst->ngroups++;
		}
	} else {
		for (size_t i = 0; i < src->ngroups; i++)
			if (desired_identity_add_group(dst, src->groups[i]) != 0)
				goto nomem;
	}
	if (src->ncauses > 0 && causes_sorted(src)) {
		if ((dst->causes = malloc(src->ncauses * sizeof(*dst->causes))) == NULL)
			goto nomem;
		for (size_t i = 0; i < src->ncauses; i++) {
			attr_cause_t *c = &dst->causes[i];
			const attr_cause_t *sc = &src->causes[i];
			memset(c, 0, sizeof(*c));
			dst->ncauses++;
			if ((c->attribute = strdup(sc->attribute)) == NULL ||
			    dup_opt(&c->event_id, sc->event_id) != 0 ||
			    dup_opt(&c->rule, sc->rule) != 0)
				goto nomem;
		}
	} else {
		for (size_t i = 0; i < src->ncauses; i++)
			if (desired_identity_set_cause(dst, src->causes[i].attribute,
			                               src->causes[i].event_id,
			                               src->causes[i].rule) != 0)
				goto nomem;
	}
	return 0;
nomem:
	desired_identity_fini(dst);
	return ID_ENOMEM;
}

int desired_identity_add_group(desired_identity_t *d, const char *group)
{
	size_t lo = 0, hi = d->ngroups;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(d->groups[mid], group);
		if (c == 0)
			return 0;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	char **n = realloc(d->groups, (d->ngroups + 1) * sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	d->groups = n;
	char *g = strdup(group);
	if (g == NULL)
		return ID_ENOMEM;
	memmove(&d->groups[lo + 1], &d->groups[lo], (d->ngroups - lo) * sizeof(*n));
	d->groups[lo] = g;
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
	size_t lo = 0, hi = d->ncauses;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(d->causes[mid].attribute, attribute);
		if (c == 0) {
			free(d->causes[mid].event_id);
			free(d->causes[mid].rule);
			d->causes[mid].event_id = e;
			d->causes[mid].rule = r;
			return 0;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
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
	memmove(&d->causes[lo + 1], &d->causes[lo], (d->ncauses - lo) * sizeof(*n));
	d->causes[lo].attribute = a;
	d->causes[lo].event_id = e;
	d->causes[lo].rule = r;
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

const char *name_claim_kind_name(name_claim_kind_t k)
{
	return (unsigned)k < NAME_CLAIM_KIND_COUNT ? name_claim_kind_names[k] : "UNKNOWN";
}

int name_claim_kind_parse(const char *name, name_claim_kind_t *out)
{
	int v;
	if (parse_name(name_claim_kind_names, NAME_CLAIM_KIND_COUNT, name, &v) != 0)
		return ID_EINVALID;
	*out = (name_claim_kind_t)v;
	return 0;
}

void name_claim_init(name_claim_t *c)
{
	memset(c, 0, sizeof(*c));
}

void name_claim_fini(name_claim_t *c)
{
	if (c == NULL)
		return;
	free(c->claim_id);
	free(c->ns);
	free(c->value);
	free(c->employee_id);
	free(c->source_event_id);
	name_claim_init(c);
}
