/*
 * mapping.h — the policy that turns an employee's merged HR attributes and
 * lifecycle state into a desired identity.
 *
 * A mapping_t is a version string plus an implementation behind a small
 * vtable (mapping_ops_t), so the built-in default mapping and the Lua policy
 * that replaces it later are interchangeable for the fold.  The default
 * mapping implements the rules of the brief (see processors/README.md for
 * the table): uid, cn, sn, givenName, displayName, mail, title,
 * departmentNumber, employeeNumber, employeeType, l; container "ou=<dept>";
 * groups "staff" and "dept-<slug>" while ACTIVE.
 *
 * Besides attributes, a mapping records for every output the rule that made
 * it (desired_identity_t.causes[].rule) and, through an optional trace, the
 * HR keys it read, from which the fold derives the cause event ids.  Outputs
 * that are not target attributes have causes under reserved names starting
 * with '@' (MAPPING_CAUSE_*), which no LDAP attribute name can collide with.
 *
 * Purity: apply() does no I/O and reads no clock; `now` is out->effective_at,
 * set by the caller from the event.  Thread safety: a mapping is immutable
 * after creation; the default mapping may be applied from several threads at
 * once.  Implementations with mutable state (a Lua interpreter) must say so.
 */
#ifndef IDSTREAM_MAPPING_H
#define IDSTREAM_MAPPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "schemas/model.h"

/* Version recorded in policy_version by mapping_create_default(). */
#define MAPPING_DEFAULT_VERSION "default-1"

/* Cause names of the desired-identity parts that are not attributes. */
#define MAPPING_CAUSE_CONTAINER "@container"
#define MAPPING_CAUSE_GROUPS    "@groups"
#define MAPPING_CAUSE_MANAGER   "@manager_id"
#define MAPPING_CAUSE_STATE     "@state"

/* Trace sources that are not HR attribute keys: the employee id itself
 * (changed by the event that created the record) and the employment status
 * (changed by HIRE/TERMINATE/REHIRE). */
#define MAPPING_SRC_EMPLOYEE_ID "@employee_id"
#define MAPPING_SRC_LIFECYCLE   "@lifecycle"

/* The HR keys (NULL-terminated) an output was derived from. */
typedef struct mapping_source {
	const char *attribute;      /* cause name; borrowed */
	const char *const *hr_keys; /* NULL-terminated; borrowed */
} mapping_source_t;

/*
 * Caller-owned list of sources filled by mapping_apply_traced().  The
 * strings it points to belong to the mapping and stay valid until the
 * mapping is destroyed.  Reuse one trace across calls to avoid allocating.
 */
typedef struct mapping_trace {
	mapping_source_t *items;
	size_t len;
	size_t cap;
} mapping_trace_t;

#define MAPPING_TRACE_INIT                                                               \
	{                                                                                \
		NULL, 0, 0                                                               \
	}

void mapping_trace_init(mapping_trace_t *t);
void mapping_trace_fini(mapping_trace_t *t);
/* Records that attribute was derived from hr_keys.  0 or ID_ENOMEM. */
int mapping_trace_add(mapping_trace_t *t, const char *attribute,
                      const char *const *hr_keys);
/* The sources of attribute, or NULL when the trace has none. */
const char *const *mapping_trace_find(const mapping_trace_t *t, const char *attribute);

/* delete_after_days / name_quarantine_days: never. */
#define MAPPING_NEVER (-1)

/*
 * Lifecycle timing a mapping decides per employee (the policy's `timing`
 * table; the built-in mapping gives mapping_timing_default()).  The
 * lifecycle (processors/lifecycle.h) turns it and the HR facts into a state
 * and the next instant at which that state changes.
 */
typedef struct mapping_timing {
	int32_t create_days_before_start; /* 0..3650 */
	bool enable_at_create;            /* false: enabled on the start date */
	bool disable_immediately;         /* false: at the termination's time */
	int32_t delete_after_days;        /* 0..36500 or MAPPING_NEVER */
	bool suspend_on_leave;
	int32_t name_quarantine_days; /* 0..36500 */
	bool reuse_name_after_delete;
	char timezone[65]; /* IANA zone of the start date, "UTC" by default */
} mapping_timing_t;

/* Create on the start date, enabled then; disable at the termination's
 * effective time; never delete; suspend on leave; UTC. */
void mapping_timing_default(mapping_timing_t *t);
bool mapping_timing_equal(const mapping_timing_t *a, const mapping_timing_t *b);

/*
 * One ordered candidate list for a unique value (the policy's `unique`
 * table): the claim namespace ("username", "email", ...) and its candidates
 * in order of preference (distinct ignoring ASCII case, at least one).
 */
typedef struct mapping_unique {
	char *ns;
	char **values;
	size_t nvalues;
} mapping_unique_t;

/* The candidate lists of one evaluation, sorted by namespace (unique).
 * Owns its strings. */
typedef struct mapping_uniques {
	mapping_unique_t *items;
	size_t len;
} mapping_uniques_t;

#define MAPPING_UNIQUES_INIT                                                             \
	{                                                                                \
		NULL, 0                                                                  \
	}

void mapping_uniques_init(mapping_uniques_t *u);
/* Frees every list; u is empty (as after init) afterwards. */
void mapping_uniques_fini(mapping_uniques_t *u);
/* The list of namespace ns, or NULL.  Borrowed. */
const mapping_unique_t *mapping_uniques_find(const mapping_uniques_t *u, const char *ns);

/* What an evaluation sees besides the HR record, and what it returns
 * besides the identity.  Everything is borrowed for the call. */
typedef struct mapping_context {
	const char *event;         /* ctx.event: the event type, e.g. "TERMINATE" */
	const char *reason;        /* ctx.reason: the termination/leave reason */
	const id_attrs_t *granted; /* ctx.granted: namespace → granted value */
	mapping_timing_t *timing;  /* out (may be NULL): the employee's timing */
	/* out (may be NULL): the policy's unique candidate lists, emptied
	 * before the evaluation; the built-in mapping gives none. */
	mapping_uniques_t *unique;
	/* The caller takes an identity whose parts live in one arena
	 * (desired_identity_t.arena): the built-in mapping then builds it
	 * with a few allocations instead of one per string.  An
	 * implementation may ignore it. */
	bool arena;
} mapping_context_t;

/*
 * What an implementation provides.  apply() receives out already reset
 * (only employee_id and effective_at set, state = state) and fills
 * attributes, groups, container, manager_id and causes (rule names; event
 * ids left NULL), ctx->timing when ctx and ctx->timing are not NULL, and
 * ctx->unique (found empty) when ctx and ctx->unique are not NULL.
 * trace and ctx may be NULL.  It returns 0 or a negative ID_E* code
 * with err naming the employee and the field.  destroy() frees impl.
 */
typedef struct mapping_ops {
	int (*apply)(void *impl, const id_attrs_t *hr, lifecycle_state_t state,
	             const mapping_context_t *ctx, desired_identity_t *out,
	             mapping_trace_t *trace, id_err_t *err);
	void (*destroy)(void *impl);
} mapping_ops_t;

typedef struct mapping mapping_t;

/*
 * Wraps an implementation.  ops must outlive the mapping; impl is owned by
 * the mapping from the call on (destroyed with ops->destroy even when
 * creation fails).  Ownership: caller frees with mapping_destroy().
 */
mapping_t *mapping_create(const char *version, const mapping_ops_t *ops, void *impl,
                          id_err_t *err);

/*
 * The built-in mapping, version MAPPING_DEFAULT_VERSION; mail is
 * uid@mail_domain.  Returns NULL with err set when mail_domain is empty or
 * not a plain domain name.  Ownership: caller frees with mapping_destroy().
 */
mapping_t *mapping_create_default(const char *mail_domain, id_err_t *err);

/* The same with the lifecycle timing it gives every employee (NULL:
 * mapping_timing_default()). */
mapping_t *mapping_create_default_timed(const char *mail_domain,
                                        const mapping_timing_t *timing, id_err_t *err);

void mapping_destroy(mapping_t *m);

/* The policy version recorded in policy_version.  Borrowed. */
const char *mapping_version(const mapping_t *m);

/*
 * Computes the desired identity of hr in state.  The caller sets
 * out->employee_id (and out->effective_at, the `now` of this evaluation);
 * everything else in out is replaced: state, attributes, groups, container,
 * manager_id, policy_version (= mapping_version(m)), causes (rule names,
 * event ids NULL); version = 0 and cause_event_id = NULL, for the fold to
 * set.  On error out holds a partial result the caller should not use.
 * Absent or blank HR values give absent attributes.
 */
int mapping_apply(const mapping_t *m, const id_attrs_t *hr, lifecycle_state_t state,
                  desired_identity_t *out, id_err_t *err);

/* Same, also filling trace (reset first) with the HR keys behind each cause. */
int mapping_apply_traced(const mapping_t *m, const id_attrs_t *hr,
                         lifecycle_state_t state, desired_identity_t *out,
                         mapping_trace_t *trace, id_err_t *err);

/* Same, with the evaluation context (may be NULL; its timing is filled
 * when not NULL — with the defaults when the mapping decides none — and
 * its unique lists are emptied first, then filled by the mapping). */
int mapping_apply_ctx(const mapping_t *m, const id_attrs_t *hr, lifecycle_state_t state,
                      const mapping_context_t *ctx, desired_identity_t *out,
                      mapping_trace_t *trace, id_err_t *err);

/*
 * Appends value escaped for use as an attribute value in a DN (RFC 4514
 * section 2.4: `"+,;<>\` anywhere, '#' or space first, space last) and keeps
 * out NUL-terminated.  0 or ID_ENOMEM.
 */
int mapping_dn_escape_append(id_buf_t *out, const char *value);

#endif
