/*
 * mapping.c — the mapping vtable wrapper and the built-in default mapping
 * (see mapping.h).
 *
 * The default mapping is a fixed table of rules; each output's HR sources
 * are static arrays, so tracing costs no allocation.  Invariant: apply()
 * leaves every field of out owned by out, so desired_identity_fini() always
 * cleans up, also after an error.
 */
#include "processors/mapping.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "processors/ascii_fold.h"

struct mapping {
	char *version;
	const mapping_ops_t *ops;
	void *impl;
};

void mapping_trace_init(mapping_trace_t *t)
{
	t->items = NULL;
	t->len = 0;
	t->cap = 0;
}

void mapping_trace_fini(mapping_trace_t *t)
{
	if (t == NULL)
		return;
	free(t->items);
	mapping_trace_init(t);
}

int mapping_trace_add(mapping_trace_t *t, const char *attribute,
                      const char *const *hr_keys)
{
	if (t->len == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 16;
		mapping_source_t *n = realloc(t->items, ncap * sizeof(*n));
		if (n == NULL)
			return ID_ENOMEM;
		t->items = n;
		t->cap = ncap;
	}
	t->items[t->len].attribute = attribute;
	t->items[t->len].hr_keys = hr_keys;
	t->len++;
	return 0;
}

const char *const *mapping_trace_find(const mapping_trace_t *t, const char *attribute)
{
	/* Later entries win, so an implementation may overwrite a source. */
	for (size_t i = t->len; i > 0; i--)
		if (strcmp(t->items[i - 1].attribute, attribute) == 0)
			return t->items[i - 1].hr_keys;
	return NULL;
}

mapping_t *mapping_create(const char *version, const mapping_ops_t *ops, void *impl,
                          id_err_t *err)
{
	mapping_t *m = NULL;
	if (version == NULL || version[0] == '\0' || ops == NULL || ops->apply == NULL ||
	    ops->destroy == NULL) {
		id_err_set(err, ID_EINVALID, "mapping: version and ops are required");
		goto fail;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->version = strdup(version)) == NULL) {
		id_err_set(err, ID_ENOMEM, "mapping %s: out of memory", version);
		goto fail;
	}
	m->ops = ops;
	m->impl = impl;
	return m;
fail:
	if (m != NULL)
		free(m->version);
	free(m);
	if (ops != NULL && ops->destroy != NULL)
		ops->destroy(impl);
	return NULL;
}

void mapping_destroy(mapping_t *m)
{
	if (m == NULL)
		return;
	m->ops->destroy(m->impl);
	free(m->version);
	free(m);
}

const char *mapping_version(const mapping_t *m)
{
	return m->version;
}

int mapping_apply(const mapping_t *m, const id_attrs_t *hr, lifecycle_state_t state,
                  desired_identity_t *out, id_err_t *err)
{
	return mapping_apply_traced(m, hr, state, out, NULL, err);
}

void mapping_timing_default(mapping_timing_t *t)
{
	memset(t, 0, sizeof(*t));
	t->delete_after_days = MAPPING_NEVER;
	t->suspend_on_leave = true;
	memcpy(t->timezone, "UTC", 4);
}

bool mapping_timing_equal(const mapping_timing_t *a, const mapping_timing_t *b)
{
	return a->create_days_before_start == b->create_days_before_start &&
	       a->enable_at_create == b->enable_at_create &&
	       a->disable_immediately == b->disable_immediately &&
	       a->delete_after_days == b->delete_after_days &&
	       a->suspend_on_leave == b->suspend_on_leave &&
	       a->name_quarantine_days == b->name_quarantine_days &&
	       a->reuse_name_after_delete == b->reuse_name_after_delete &&
	       strcmp(a->timezone, b->timezone) == 0;
}

void mapping_uniques_init(mapping_uniques_t *u)
{
	u->items = NULL;
	u->len = 0;
}

void mapping_uniques_fini(mapping_uniques_t *u)
{
	if (u == NULL)
		return;
	for (size_t i = 0; i < u->len; i++) {
		for (size_t k = 0; k < u->items[i].nvalues; k++)
			free(u->items[i].values[k]);
		free(u->items[i].values);
		free(u->items[i].ns);
	}
	free(u->items);
	mapping_uniques_init(u);
}

const mapping_unique_t *mapping_uniques_find(const mapping_uniques_t *u, const char *ns)
{
	for (size_t i = 0; u != NULL && i < u->len; i++)
		if (strcmp(u->items[i].ns, ns) == 0)
			return &u->items[i];
	return NULL;
}

int mapping_apply_traced(const mapping_t *m, const id_attrs_t *hr,
                         lifecycle_state_t state, desired_identity_t *out,
                         mapping_trace_t *trace, id_err_t *err)
{
	return mapping_apply_ctx(m, hr, state, NULL, out, trace, err);
}

int mapping_apply_ctx(const mapping_t *m, const id_attrs_t *hr, lifecycle_state_t state,
                      const mapping_context_t *ctx, desired_identity_t *out,
                      mapping_trace_t *trace, id_err_t *err)
{
	if (out->employee_id == NULL || out->employee_id[0] == '\0')
		return id_err_set(err, ID_EINVALID, "mapping %s: no employee id",
		                  m->version);
	if ((unsigned)state >= LC_STATE_COUNT)
		return id_err_set(err, ID_EINVALID,
		                  "employee %s: lifecycle state %d unknown",
		                  out->employee_id, (int)state);

	/* Reset everything but the two inputs, so no field of a previous
	 * result can leak into this one. */
	char *employee_id = out->employee_id;
	if (out->arena != NULL && (employee_id = strdup(employee_id)) == NULL)
		return id_err_set(err, ID_ENOMEM, "employee %s: out of memory",
		                  out->employee_id);
	int64_t now = out->effective_at;
	out->employee_id = NULL;
	desired_identity_fini(out);
	out->employee_id = employee_id;
	out->effective_at = now;
	out->state = state;
	if (trace != NULL)
		trace->len = 0;

	if (ctx != NULL && ctx->timing != NULL)
		mapping_timing_default(ctx->timing);
	if (ctx != NULL && ctx->unique != NULL)
		mapping_uniques_fini(ctx->unique);
	int rc = m->ops->apply(m->impl, hr, state, ctx, out, trace, err);
	if (rc != 0)
		return rc;
	if ((out->policy_version = out->arena != NULL
	                               ? desired_arena_strdup(&out->arena, m->version)
	                               : strdup(m->version)) == NULL)
		return id_err_set(err, ID_ENOMEM, "employee %s: out of memory",
		                  out->employee_id);
	return 0;
}

int mapping_dn_escape_append(id_buf_t *out, const char *value)
{
	size_t len = strlen(value);
	/* Worst case every byte escaped, plus the NUL. */
	if (id_buf_reserve(out, 2 * len + 1) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < len; i++) {
		char c = value[i];
		bool esc = strchr("\"+,;<>\\", c) != NULL ||
		           (i == 0 && (c == ' ' || c == '#')) ||
		           (i == len - 1 && c == ' ');
		if (esc)
			out->data[out->len++] = '\\';
		out->data[out->len++] = (unsigned char)c;
	}
	out->data[out->len] = '\0';
	return 0;
}

/* ---- the default mapping ------------------------------------------------ */

typedef struct default_mapping {
	char *mail_domain;
	mapping_timing_t timing;
} default_mapping_t;

static const char *const src_uid[] = {"first_name", "last_name", NULL};
static const char *const src_given[] = {"preferred_name", "first_name", NULL};
static const char *const src_full[] = {"preferred_name", "first_name", "last_name", NULL};
static const char *const src_sn[] = {"last_name", NULL};
static const char *const src_title[] = {"title", NULL};
static const char *const src_dept[] = {"department", NULL};
static const char *const src_empno[] = {MAPPING_SRC_EMPLOYEE_ID, NULL};
static const char *const src_type[] = {"employment_type", NULL};
static const char *const src_loc[] = {"location", NULL};
static const char *const src_manager[] = {"manager_id", NULL};
static const char *const src_groups[] = {MAPPING_SRC_LIFECYCLE, "department", NULL};
static const char *const src_state[] = {MAPPING_SRC_LIFECYCLE, NULL};

/*
 * The rules, one per output.  Listed in descending strcmp() order of the
 * output name on purpose: the sorted arrays of a desired identity then take
 * every insertion at the front, instead of scanning the whole array each
 * time (this runs once per event).
 */
enum {
	R_UID,
	R_TITLE,
	R_SN,
	R_MAIL,
	R_L,
	R_GIVEN,
	R_EMPTYPE,
	R_EMPNO,
	R_DISPLAY,
	R_DEPTNO,
	R_CN,
	R_STATE,
	R_MANAGER,
	R_GROUPS,
	R_CONTAINER,
	R_COUNT
};

static const struct default_rule {
	const char *output; /* attribute, or MAPPING_CAUSE_* */
	const char *rule;
	const char *const *src;
} rules[R_COUNT] = {
    [R_UID] = {"uid", "default.uid", src_uid},
    [R_TITLE] = {"title", "default.title", src_title},
    [R_SN] = {"sn", "default.sn", src_sn},
    [R_MAIL] = {"mail", "default.mail", src_uid},
    [R_L] = {"l", "default.l", src_loc},
    [R_GIVEN] = {"givenName", "default.givenName", src_given},
    [R_EMPTYPE] = {"employeeType", "default.employeeType", src_type},
    [R_EMPNO] = {"employeeNumber", "default.employeeNumber", src_empno},
    [R_DISPLAY] = {"displayName", "default.displayName", src_full},
    [R_DEPTNO] = {"departmentNumber", "default.departmentNumber", src_dept},
    [R_CN] = {"cn", "default.cn", src_full},
    [R_STATE] = {MAPPING_CAUSE_STATE, "default.state", src_state},
    [R_MANAGER] = {MAPPING_CAUSE_MANAGER, "default.manager", src_manager},
    [R_GROUPS] = {MAPPING_CAUSE_GROUPS, "default.groups", src_groups},
    [R_CONTAINER] = {MAPPING_CAUSE_CONTAINER, "default.container", src_dept},
};

/* The birthright group of every active employee. */
static const char STAFF_GROUP[] = "staff";

/* The HR keys the default mapping reads, in the order their UTF-8 is
 * checked (and errors are reported). */
enum {
	K_FIRST,
	K_LAST,
	K_PREFERRED,
	K_TITLE,
	K_DEPT,
	K_MANAGER,
	K_EMPTYPE,
	K_LOCATION,
	K_COUNT
};
static const char *const used_keys[K_COUNT] = {
    [K_FIRST] = "first_name",         [K_LAST] = "last_name",
    [K_PREFERRED] = "preferred_name", [K_TITLE] = "title",
    [K_DEPT] = "department",          [K_MANAGER] = "manager_id",
    [K_EMPTYPE] = "employment_type",  [K_LOCATION] = "location",
};
/* The same keys in strcmp() order, so one walk over the sorted HR map
 * finds them all (checked at creation). */
static const unsigned char used_sorted[K_COUNT] = {
    K_DEPT, K_EMPTYPE, K_FIRST, K_LAST, K_LOCATION, K_MANAGER, K_PREFERRED, K_TITLE,
};

/* raw[k] = the HR value of used_keys[k] (NULL when absent or null): one
 * merge of two sorted lists instead of a binary search per key. */
static void hr_lookup(const id_attrs_t *hr, const char *raw[K_COUNT])
{
	size_t i = 0;
	for (size_t k = 0; k < K_COUNT; k++) {
		const char *key = used_keys[used_sorted[k]];
		int c = -1;
		while (i < hr->len && (c = strcmp(hr->items[i].key, key)) < 0)
			i++;
		raw[used_sorted[k]] = i < hr->len && c == 0 ? hr->items[i].value : NULL;
	}
}

/* v, or NULL when v is NULL, empty or only whitespace. */
static const char *hr_value(const char *v)
{
	if (v == NULL)
		return NULL;
	for (const char *p = v; *p != '\0'; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			return v;
	return NULL;
}

/* ascii_fold_utf8_check() with a quicker answer for plain ASCII, which
 * is valid UTF-8 (most HR values are). */
static int utf8_check(const char *s, id_err_t *err)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p != 0 && *p < 0x80)
		p++;
	return *p == 0 ? 0 : ascii_fold_utf8_check(s, err);
}

/*
 * Appends uid = first letter of first_name + last_name, folded, lower-case,
 * [a-z0-9].  The "first letter" is the first code point that folds to a
 * letter or digit, taken whole: "Æsa" gives "ae", "'Ilse" gives "i".
 */
static int build_uid(const char *employee_id, const char *first, const char *last,
                     id_buf_t *b, id_err_t *err)
{
	size_t start = b->len;
	int rc;

	if (first == NULL)
		return id_err_set(err, ID_EINVALID,
		                  "employee %s: field first_name is absent; uid needs it",
		                  employee_id);
	if (last == NULL)
		return id_err_set(err, ID_EINVALID,
		                  "employee %s: field last_name is absent; uid needs it",
		                  employee_id);
	/* Values are valid UTF-8 here: the caller checked them. */
	size_t len = strlen(first), pos = 0;
	while (pos < len && b->len == start) {
		uint32_t cp;
		if (ascii_fold_utf8_next(first, len, &pos, &cp) != 0)
			break;
		for (const char *f = ascii_fold_codepoint(cp); *f != '\0'; f++) {
			char c = *f;
			if (c >= 'A' && c <= 'Z')
				c = (char)(c - 'A' + 'a');
			if (((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) &&
			    (rc = id_buf_append_u8(b, (uint8_t)c)) != 0)
				return id_err_set(err, rc, "employee %s: out of memory",
				                  employee_id);
		}
	}
	if (b->len == start)
		return id_err_set(
		    err, ID_EINVALID,
		    "employee %s: field first_name \"%s\" has no letter or digit "
		    "that folds to ASCII; cannot build uid",
		    employee_id, first);
	size_t initial = b->len;
	if ((rc = ascii_fold_alnum_append(b, last, err)) != 0) {
		id_err_wrap(err, "employee %s: field last_name", employee_id);
		return rc;
	}
	if (b->len == initial)
		return id_err_set(
		    err, ID_EINVALID,
		    "employee %s: field last_name \"%s\" has no letter or digit "
		    "that folds to ASCII; cannot build uid",
		    employee_id, last);
	return 0;
}

/* Ends the string being built in b; returns its offset for later. */
static int end_str(id_buf_t *b, size_t *start, size_t *off)
{
	*off = *start;
	if (id_buf_append_u8(b, 0) != 0)
		return ID_ENOMEM;
	*start = b->len;
	return 0;
}

/*
 * Fills out's attributes and causes (rule names, event ids NULL) from the
 * values of the rules that apply (val[i] != NULL).  Each array is allocated
 * once at its final size and filled in ascending name order by walking the
 * rules backwards (they are in descending order, checked at creation), so
 * nothing is searched or shifted: this runs once per event.  out's arrays
 * are empty on entry (mapping_apply_traced() reset it).
 */
static int default_fill(desired_identity_t *out, const char *const *val)
{
	size_t nattrs = 0, ncauses = 0;
	for (size_t i = 0; i < R_COUNT; i++) {
		if (val[i] == NULL)
			continue;
		ncauses++;
		if (rules[i].output[0] != '@')
			nattrs++;
	}
	/* In an arena every part comes from it (or is one of the rule
	 * table's constants), and the rule's output name serves as both the
	 * attribute's key and its cause's name. */
	desired_arena_t **ar = out->arena != NULL ? &out->arena : NULL;
	id_attrs_t *a = &out->attributes;
	if (nattrs > 0 &&
	    (a->items = ar != NULL ? desired_arena_alloc(ar, nattrs * sizeof(*a->items))
	                           : malloc(nattrs * sizeof(*a->items))) == NULL)
		return ID_ENOMEM;
	a->cap = nattrs;
	if (ncauses > 0 &&
	    (out->causes = ar != NULL
	                       ? desired_arena_alloc(ar, ncauses * sizeof(*out->causes))
	                       : malloc(ncauses * sizeof(*out->causes))) == NULL)
		return ID_ENOMEM;
	for (size_t i = R_COUNT; i-- > 0;) {
		const struct default_rule *r = &rules[i];
		if (val[i] == NULL)
			continue;
		attr_cause_t *c = &out->causes[out->ncauses];
		memset(c, 0, sizeof(*c));
		if (ar != NULL) {
			out->ncauses++;
			/* The rule table's strings are static: they outlive
			 * any identity, and an arena's parts are never freed
			 * one by one. */
			c->attribute = (char *)r->output;
			c->rule = (char *)r->rule;
			if (r->output[0] != '@') {
				id_kv_t *kv = &a->items[a->len++];
				kv->key = c->attribute;
				if ((kv->value = desired_arena_strdup(ar, val[i])) ==
				    NULL)
					return ID_ENOMEM;
			}
			continue;
		}
		if (r->output[0] != '@') {
			id_kv_t *kv = &a->items[a->len];
			kv->value = NULL;
			if ((kv->key = strdup(r->output)) == NULL)
				return ID_ENOMEM;
			a->len++;
			if ((kv->value = strdup(val[i])) == NULL)
				return ID_ENOMEM;
		}
		out->ncauses++;
		if ((c->attribute = strdup(r->output)) == NULL ||
		    (c->rule = strdup(r->rule)) == NULL)
			return ID_ENOMEM;
	}
	return 0;
}

static int default_apply(void *impl, const id_attrs_t *hr, lifecycle_state_t state,
                         const mapping_context_t *ctx, desired_identity_t *out,
                         mapping_trace_t *trace, id_err_t *err)
{
	if (ctx != NULL && ctx->timing != NULL)
		*ctx->timing = ((const default_mapping_t *)impl)->timing;
	const default_mapping_t *dm = impl;
	const char *eid = out->employee_id;
	const char *val[R_COUNT] = {0};
	/* Built strings live in one buffer, NUL-separated, and are addressed
	 * by offset until the buffer stops growing. */
	id_buf_t b = ID_BUF_INIT;
	size_t start = 0, off_uid, off_mail, off_cn = 0, off_ou, off_dept = 0;
	bool has_cn = false, has_dept_group = false;
	int rc;

	/* Every value that reaches a target must be valid UTF-8: a directory
	 * refuses anything else, and a refusal there is far from its cause. */
	const char *raw[K_COUNT];
	hr_lookup(hr, raw);
	for (size_t i = 0; i < K_COUNT; i++) {
		if (raw[i] != NULL && (rc = utf8_check(raw[i], err)) != 0) {
			id_err_wrap(err, "employee %s: field %s", eid, used_keys[i]);
			goto out;
		}
	}

	const char *first = hr_value(raw[K_FIRST]);
	const char *last = hr_value(raw[K_LAST]);
	const char *preferred = hr_value(raw[K_PREFERRED]);
	const char *dept = hr_value(raw[K_DEPT]);
	const char *given = preferred != NULL ? preferred : first;

	if ((rc = build_uid(eid, first, last, &b, err)) != 0)
		goto out;
	if (end_str(&b, &start, &off_uid) != 0)
		goto nomem;
	/* mail = uid@domain; reserve first, since the copy reads from b itself. */
	size_t uid_len = b.len - 1 - off_uid;
	if (id_buf_reserve(&b, uid_len + strlen(dm->mail_domain) + 2) != 0)
		goto nomem;
	memcpy(b.data + b.len, b.data + off_uid, uid_len);
	b.len += uid_len;
	if (id_buf_append_u8(&b, '@') != 0 ||
	    id_buf_append_str(&b, dm->mail_domain) != 0 || end_str(&b, &start, &off_mail))
		goto nomem;
	if (given != NULL) { /* last is non-NULL: build_uid needs it */
		if (id_buf_append_str(&b, given) != 0 || id_buf_append_u8(&b, ' ') != 0 ||
		    id_buf_append_str(&b, last) != 0 || end_str(&b, &start, &off_cn) != 0)
			goto nomem;
		has_cn = true;
	}
	/* Container: the department as an escaped RDN value. */
	if (id_buf_append_str(&b, "ou=") != 0 ||
	    mapping_dn_escape_append(&b, dept != NULL ? dept : "Unassigned") != 0 ||
	    end_str(&b, &start, &off_ou) != 0)
		goto nomem;
	/* Birthright groups only while active; a disabled account keeps none.
	 * A department with no Latin letters or digits has no slug, so no
	 * department group; the employee still gets "staff". */
	if (state == LC_ACTIVE && dept != NULL) {
		if (id_buf_append_str(&b, "dept-") != 0 ||
		    ascii_fold_slug_append(&b, dept, NULL) != 0)
			goto nomem; /* UTF-8 was checked above */
		has_dept_group = b.len > start + strlen("dept-");
		if (end_str(&b, &start, &off_dept) != 0)
			goto nomem;
	}

	const char *s = (const char *)b.data;
	val[R_UID] = s + off_uid;
	val[R_MAIL] = s + off_mail;
	val[R_GIVEN] = given;
	val[R_SN] = last;
	val[R_CN] = has_cn ? s + off_cn : NULL;
	val[R_DISPLAY] = val[R_CN];
	val[R_TITLE] = hr_value(raw[K_TITLE]);
	val[R_DEPTNO] = dept;
	val[R_EMPNO] = eid;
	val[R_EMPTYPE] = hr_value(raw[K_EMPTYPE]);
	val[R_L] = hr_value(raw[K_LOCATION]);
	/* Parts that are not attributes: non-NULL marks them present. */
	val[R_MANAGER] = hr_value(raw[K_MANAGER]);
	val[R_CONTAINER] = s + off_ou;
	val[R_GROUPS] = "";
	val[R_STATE] = "";

	if (ctx != NULL && ctx->arena) {
		/* The employee id moves in too: the arena's parts are all
		 * freed together. */
		char *e = desired_arena_strdup(&out->arena, eid);
		if (e == NULL)
			goto nomem;
		free(out->employee_id);
		out->employee_id = e;
		eid = e;
		val[R_EMPNO] = e;
	}
	if ((rc = default_fill(out, val)) != 0)
		goto nomem;
	for (size_t i = 0; trace != NULL && i < R_COUNT; i++)
		if (val[i] != NULL &&
		    mapping_trace_add(trace, rules[i].output, rules[i].src) != 0)
			goto nomem;
	if (out->arena != NULL) {
		desired_arena_t **ar = &out->arena;
		if ((out->container = desired_arena_strdup(ar, s + off_ou)) == NULL ||
		    (val[R_MANAGER] != NULL && (out->manager_id = desired_arena_strdup(
		                                    ar, val[R_MANAGER])) == NULL))
			goto nomem;
		if (state == LC_ACTIVE) {
			if ((out->groups = desired_arena_alloc(
			         ar, 2 * sizeof(*out->groups))) == NULL ||
			    (has_dept_group &&
			     (out->groups[out->ngroups++] =
			          desired_arena_strdup(ar, s + off_dept)) == NULL) ||
			    (out->groups[out->ngroups++] = (char *)STAFF_GROUP) == NULL)
				goto nomem;
		}
		rc = 0;
		goto out;
	}
	if ((out->container = strdup(s + off_ou)) == NULL ||
	    (val[R_MANAGER] != NULL &&
	     (out->manager_id = strdup(val[R_MANAGER])) == NULL))
		goto nomem;
	/* "dept-…" sorts before "staff": both appended in order. */
	if (state == LC_ACTIVE) {
		if ((out->groups = malloc(2 * sizeof(*out->groups))) == NULL ||
		    (has_dept_group &&
		     (out->groups[out->ngroups++] = strdup(s + off_dept)) == NULL) ||
		    (out->groups[out->ngroups++] = strdup(STAFF_GROUP)) == NULL)
			goto nomem;
	}
	rc = 0;
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "employee %s: out of memory in mapping", eid);
out:
	id_buf_fini(&b);
	return rc;
}

static void default_destroy(void *impl)
{
	default_mapping_t *dm = impl;
	if (dm == NULL)
		return;
	free(dm->mail_domain);
	free(dm);
}

static const mapping_ops_t default_ops = {default_apply, default_destroy};

mapping_t *mapping_create_default(const char *mail_domain, id_err_t *err)
{
	return mapping_create_default_timed(mail_domain, NULL, err);
}

mapping_t *mapping_create_default_timed(const char *mail_domain,
                                        const mapping_timing_t *timing, id_err_t *err)
{
	if (mail_domain == NULL || mail_domain[0] == '\0') {
		id_err_set(err, ID_EINVALID, "mapping.mail_domain is empty");
		return NULL;
	}
	/* A plain domain: letters, digits, '-', '.'; anything else would make
	 * every mail attribute invalid. */
	for (const char *p = mail_domain; *p != '\0'; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '.')) {
			id_err_set(
			    err, ID_EINVALID,
			    "mapping.mail_domain \"%s\": character '%c' not allowed in a "
			    "domain name",
			    mail_domain, c);
			return NULL;
		}
	}
	/* default_fill() relies on the rule order. */
	for (size_t i = 1; i < R_COUNT; i++) {
		if (strcmp(rules[i - 1].output, rules[i].output) <= 0) {
			id_err_set(err, ID_EINVALID,
			           "mapping: default rules not in descending order at %s",
			           rules[i].output);
			return NULL;
		}
	}
	/* hr_lookup() relies on this order. */
	for (size_t i = 1; i < K_COUNT; i++) {
		if (strcmp(used_keys[used_sorted[i - 1]], used_keys[used_sorted[i]]) >=
		    0) {
			id_err_set(
			    err, ID_EINVALID,
			    "mapping: default HR keys not in ascending order at %s",
			    used_keys[used_sorted[i]]);
			return NULL;
		}
	}
	default_mapping_t *dm = calloc(1, sizeof(*dm));
	if (dm == NULL || (dm->mail_domain = strdup(mail_domain)) == NULL) {
		free(dm);
		id_err_set(err, ID_ENOMEM, "mapping: out of memory");
		return NULL;
	}
	if (timing != NULL)
		dm->timing = *timing;
	else
		mapping_timing_default(&dm->timing);
	return mapping_create(MAPPING_DEFAULT_VERSION, &default_ops, dm, err);
}
