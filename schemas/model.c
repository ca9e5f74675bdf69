/*
 * model.c — constructors, destructors and small helpers of the v1 records
 * (see model.h).  Pure memory management; no I/O.
 */
#include "schemas/model.h"

#include <stdio.h>
#include <stdint.h>
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

/* Frees one of ev's strings, unless it lives in ev's block. */
static void event_free(const employee_event_t *ev, char *p)
{
	uintptr_t u = (uintptr_t)p, lo = (uintptr_t)ev->strs;
	if (ev->strs == NULL || u < lo || u >= lo + ev->strs_len)
		free(p);
}

void employee_event_fini(employee_event_t *ev)
{
	if (ev == NULL)
		return;
	event_free(ev, ev->event_id);
	event_free(ev, ev->source);
	event_free(ev, ev->source_event_id);
	event_free(ev, ev->employee_id);
	id_attrs_fini(&ev->attributes);
	event_free(ev, ev->actor);
	event_free(ev, ev->reason);
	free(ev->strs);
	employee_event_init(ev);
}

void desired_identity_init(desired_identity_t *d)
{
	memset(d, 0, sizeof(*d));
	id_attrs_init(&d->attributes);
}

/* Group lists (sorted, unique strings), shared by identities and their
 * target sections. */
static void groups_free(char ***groups, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*groups)[i]);
	free(*groups);
	*groups = NULL;
	*n = 0;
}

/* Copies n sorted groups into *dst (found empty).  0 or ID_ENOMEM; on
 * failure *dst holds what was copied, for the caller's fini. */
static int groups_copy(char ***dst, size_t *ndst, char *const *src, size_t n)
{
	if (n == 0)
		return 0;
	if ((*dst = malloc(n * sizeof(**dst))) == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (((*dst)[i] = strdup(src[i])) == NULL)
			return ID_ENOMEM;
		(*ndst)++;
	}
	return 0;
}

static bool groups_equal(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

struct desired_arena {
	desired_arena_t *next;
	size_t used, cap;
	max_align_t data[];
};

#define DESIRED_ARENA_BLOCK 4096

/* n bytes aligned to align (a power of two) from *a. */
static void *arena_take(desired_arena_t **a, size_t n, size_t align)
{
	desired_arena_t *b = *a;
	size_t at = b != NULL ? (b->used + align - 1) & ~(align - 1) : 0;
	if (b == NULL || at > b->cap || b->cap - at < n) {
		size_t cap = n > DESIRED_ARENA_BLOCK ? n : DESIRED_ARENA_BLOCK;
		if ((b = malloc(sizeof(*b) + cap)) == NULL)
			return NULL;
		b->next = *a;
		b->cap = cap;
		*a = b;
		at = 0;
	}
	b->used = at + n;
	return (char *)b->data + at;
}

void *desired_arena_alloc(desired_arena_t **a, size_t n)
{
	return arena_take(a, n, sizeof(max_align_t));
}

/* Strings need no alignment: packed, an identity fits in fewer blocks. */
char *desired_arena_strndup(desired_arena_t **a, const char *s, size_t n)
{
	char *p = arena_take(a, n + 1, 1);
	if (p != NULL) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

char *desired_arena_strdup(desired_arena_t **a, const char *s)
{
	return s != NULL ? desired_arena_strndup(a, s, strlen(s)) : NULL;
}

void desired_arena_free(desired_arena_t *a)
{
	while (a != NULL) {
		desired_arena_t *next = a->next;
		free(a);
		a = next;
	}
}

void desired_identity_fini(desired_identity_t *d)
{
	if (d == NULL)
		return;
	if (d->arena != NULL) {
		desired_arena_free(d->arena);
		desired_identity_init(d);
		return;
	}
	free(d->employee_id);
	id_attrs_fini(&d->attributes);
	groups_free(&d->groups, &d->ngroups);
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
	for (size_t i = 0; i < d->ntargets; i++)
		target_identity_fini(&d->targets[i]);
	free(d->targets);
	desired_identity_init(d);
}

void target_identity_init(target_identity_t *t)
{
	memset(t, 0, sizeof(*t));
	id_attrs_init(&t->attributes);
}

void target_identity_fini(target_identity_t *t)
{
	if (t == NULL)
		return;
	free(t->name);
	id_attrs_fini(&t->attributes);
	groups_free(&t->groups, &t->ngroups);
	free(t->container);
	target_identity_init(t);
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
	if (groups_sorted(src)) {
		if (groups_copy(&dst->groups, &dst->ngroups, src->groups, src->ngroups) !=
		    0)
			goto nomem;
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
	if (src->ntargets > 0) {
		if ((dst->targets = calloc(src->ntargets, sizeof(*dst->targets))) == NULL)
			goto nomem;
		for (size_t i = 0; i < src->ntargets; i++) {
			target_identity_init(&dst->targets[i]);
			dst->ntargets++;
			if (target_identity_copy(&dst->targets[i], &src->targets[i]) != 0)
				goto nomem;
		}
	}
	return 0;
nomem:
	desired_identity_fini(dst);
	return ID_ENOMEM;
}

int target_identity_copy(target_identity_t *dst, const target_identity_t *src)
{
	if (dst == src)
		return 0;
	target_identity_fini(dst);
	dst->in_scope = src->in_scope;
	if (dup_opt(&dst->name, src->name) || dup_opt(&dst->container, src->container) ||
	    copy_attrs(&dst->attributes, &src->attributes) != 0 ||
	    groups_copy(&dst->groups, &dst->ngroups, src->groups, src->ngroups) != 0)
		goto nomem;
	return 0;
nomem:
	target_identity_fini(dst);
	return ID_ENOMEM;
}

const target_identity_t *desired_identity_target(const desired_identity_t *d,
                                                 const char *name)
{
	size_t lo = 0, hi = d->ntargets;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(d->targets[mid].name, name);
		if (c == 0)
			return &d->targets[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

target_identity_t *desired_identity_add_target(desired_identity_t *d, const char *name)
{
	size_t lo = 0, hi = d->ntargets;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(d->targets[mid].name, name);
		if (c == 0)
			return &d->targets[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	target_identity_t *n = realloc(d->targets, (d->ntargets + 1) * sizeof(*n));
	if (n == NULL)
		return NULL;
	d->targets = n;
	char *nm = strdup(name);
	if (nm == NULL)
		return NULL;
	memmove(&d->targets[lo + 1], &d->targets[lo], (d->ntargets - lo) * sizeof(*n));
	target_identity_init(&d->targets[lo]);
	d->targets[lo].name = nm;
	d->ntargets++;
	return &d->targets[lo];
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

/*
 * True when every target of a gets the same from b: a's sections equal b's
 * of the same name, or b's top level when b has no sections (a version
 * without sections gives every target its top level).
 */
static bool same_sections(const desired_identity_t *a, const desired_identity_t *b)
{
	for (size_t i = 0; i < a->ntargets; i++) {
		const target_identity_t *x = &a->targets[i];
		if (b->ntargets > 0) {
			const target_identity_t *y = desired_identity_target(b, x->name);
			if (y == NULL || !target_identity_equal(x, y))
				return false;
			continue;
		}
		target_identity_t top = {x->name,   true,       b->attributes,
		                         b->groups, b->ngroups, b->container};
		if (!target_identity_equal(x, &top))
			return false;
	}
	return true;
}

bool desired_identity_same_target_state(const desired_identity_t *a,
                                        const desired_identity_t *b)
{
	if (a->state != b->state || !str_eq(a->employee_id, b->employee_id) ||
	    !str_eq(a->container, b->container) ||
	    !str_eq(a->manager_id, b->manager_id) ||
	    !str_eq(a->policy_version, b->policy_version) ||
	    !id_attrs_equal(&a->attributes, &b->attributes) ||
	    !groups_equal(a->groups, a->ngroups, b->groups, b->ngroups))
		return false;
	return same_sections(a, b) && same_sections(b, a);
}

bool target_identity_equal(const target_identity_t *a, const target_identity_t *b)
{
	if (a->in_scope != b->in_scope || !str_eq(a->name, b->name) ||
	    !str_eq(a->container, b->container) ||
	    !id_attrs_equal(&a->attributes, &b->attributes))
		return false;
	return groups_equal(a->groups, a->ngroups, b->groups, b->ngroups);
}

static int cmp_cause_attr(const void *a, const void *b)
{
	return strcmp(((const attr_cause_t *)a)->attribute,
	              ((const attr_cause_t *)b)->attribute);
}

/* Keeps the causes named "<prefix>.<x>" as "<x>" and the shared ones
 * ("@state", "@manager_id"); drops the rest, which described the primary
 * target's section at the top level. */
static void view_causes(desired_identity_t *d, const char *prefix)
{
	size_t pl = strlen(prefix), j = 0;
	for (size_t i = 0; i < d->ncauses; i++) {
		attr_cause_t *c = &d->causes[i];
		bool mine = strncmp(c->attribute, prefix, pl) == 0 &&
		            c->attribute[pl] == '.' && c->attribute[pl + 1] != '\0';
		bool shared = c->attribute[0] == '@' &&
		              strcmp(c->attribute, "@groups") != 0 &&
		              strcmp(c->attribute, "@container") != 0;
		if (mine)
			memmove(c->attribute, c->attribute + pl + 1,
			        strlen(c->attribute + pl + 1) + 1);
		if (mine || shared) {
			d->causes[j++] = *c;
		} else {
			free(c->attribute);
			free(c->event_id);
			free(c->rule);
		}
	}
	d->ncauses = j;
	if (j > 1)
		qsort(d->causes, j, sizeof(*d->causes), cmp_cause_attr);
}

int desired_identity_target_view(desired_identity_t *d, const char *name, id_err_t *err)
{
	if (d->ntargets == 0)
		return 0;
	size_t idx = d->ntargets;
	for (size_t i = 0; i < d->ntargets; i++)
		if (strcmp(d->targets[i].name, name) == 0)
			idx = i;
	if (idx == d->ntargets) {
		char list[256];
		size_t off = 0;
		list[0] = '\0';
		for (size_t i = 0; i < d->ntargets && off < sizeof(list); i++) {
			int n = snprintf(list + off, sizeof(list) - off, "%s%s",
			                 i > 0 ? ", " : "", d->targets[i].name);
			if (n < 0)
				break;
			off += (size_t)n;
		}
		return id_err_set(
		    err, ID_ENOTFOUND,
		    "employee %s: policy %s has no target \"%s\" (it declares "
		    "%s); set the sink's target name to one of them",
		    d->employee_id != NULL ? d->employee_id : "?",
		    d->policy_version != NULL ? d->policy_version : "?", name, list);
	}
	target_identity_t *t = &d->targets[idx];
	id_attrs_fini(&d->attributes);
	d->attributes = t->attributes;
	id_attrs_init(&t->attributes);
	groups_free(&d->groups, &d->ngroups);
	d->groups = t->groups;
	d->ngroups = t->ngroups;
	t->groups = NULL;
	t->ngroups = 0;
	free(d->container);
	d->container = t->container != NULL ? t->container : strdup("");
	t->container = NULL;
	if (d->container == NULL)
		return ID_ENOMEM;
	if (!t->in_scope) {
		groups_free(&d->groups, &d->ngroups);
		if (d->attributes.len == 0)
			d->state = LC_PENDING;
		else if (d->state != LC_PENDING && d->state != LC_DELETED)
			d->state = LC_DISABLED;
	}
	view_causes(d, name);
	for (size_t i = 0; i < d->ntargets; i++)
		target_identity_fini(&d->targets[i]);
	free(d->targets);
	d->targets = NULL;
	d->ntargets = 0;
	return 0;
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
