/*
 * model.h — the in-memory form of the three v1 records that travel between
 * stages (see the .avsc files in schemas/ for the wire contract; codec.h converts).
 *
 *   employee_event_t   ingest/     → hr.events          (key = employee id)
 *   desired_identity_t processors/ → identity.desired   (key = employee id)
 *   sink_result_t      sinks/      → sink.results       (key = employee id)
 *
 * Times are milliseconds since the Unix epoch, UTC.  Strings are UTF-8 and
 * owned by the struct; *_fini() frees them and leaves the struct zeroed, so
 * fini twice is safe.  Optional strings are NULL when absent.
 */
#ifndef IDSTREAM_MODEL_H
#define IDSTREAM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/err.h"

/* Order matters: it is the Avro enum symbol order of EventType v1. */
/* clang-format off */
#define EMPLOYEE_EVENT_TYPE_MAP(X)                                             \
	X(HIRE) X(UPDATE) X(TERMINATE) X(REHIRE) X(LEAVE_START) X(LEAVE_END)   \
	X(CONVERSION) X(REEVALUATE) X(NAME_GRANTED) X(NAME_DENIED)             \
	X(POLICY_ACTIVATED)
/* clang-format on */

typedef enum {
#define EV_ENUM_(n) EV_##n,
	EMPLOYEE_EVENT_TYPE_MAP(EV_ENUM_)
#undef EV_ENUM_
	    EV_TYPE_COUNT
} employee_event_type_t;

const char *employee_event_type_name(employee_event_type_t t); /* "HIRE" */
/* Returns 0 and sets *out, or ID_EINVALID for an unknown name. */
int employee_event_type_parse(const char *name, employee_event_type_t *out);

typedef struct employee_event {
	char *event_id;        /* unique id of this event (hex) */
	char *source;          /* "csv", "bamboohr", ... */
	char *source_event_id; /* the source's own id, for dedupe */
	char *employee_id;
	employee_event_type_t type;
	int64_t occurred_at;   /* when the source saw the change */
	int64_t effective_at;  /* when it takes effect */
	id_attrs_t attributes; /* changed attributes; NULL value = cleared */
	char *actor;           /* optional */
	char *reason;          /* optional */
	/* codec_decode_event() may put the strings above (attributes too:
	 * their keep range) in this one block, freed by
	 * employee_event_fini(); a field pointing into it is never freed on
	 * its own.  Whoever replaces such a field calls employee_event_fini()
	 * first, or leaves the old string to the block.  NULL: every string
	 * is owned one by one. */
	char *strs;
	size_t strs_len;
} employee_event_t;

void employee_event_init(employee_event_t *ev);
void employee_event_fini(employee_event_t *ev);

/*
 * Order = Avro enum symbol order of LifecycleState (v2 appended PRESTART).
 *   PENDING   hire known, before the pre-start window: no account
 *   ACTIVE    the account exists and is enabled
 *   SUSPENDED leave of absence: exists, disabled
 *   DISABLED  terminated: exists, disabled
 *   DELETED   removed (retention over, or a hire rescinded before start)
 *   PRESTART  pre-start window ("created disabled"): exists, disabled
 */
#define LIFECYCLE_STATE_MAP(X)                                                           \
	X(PENDING) X(ACTIVE) X(SUSPENDED) X(DISABLED) X(DELETED) X(PRESTART)

typedef enum {
#define LC_ENUM_(n) LC_##n,
	LIFECYCLE_STATE_MAP(LC_ENUM_)
#undef LC_ENUM_
	    LC_STATE_COUNT
} lifecycle_state_t;

const char *lifecycle_state_name(lifecycle_state_t s); /* "ACTIVE" */
int lifecycle_state_parse(const char *name, lifecycle_state_t *out);

/* Why an attribute has its value: the event and the mapping rule. */
typedef struct attr_cause {
	char *attribute;
	char *event_id;
	char *rule;
} attr_cause_t;

/*
 * One target's part of a desired identity, as the policy gave it for that
 * target (schema v3).  An out-of-scope section (the policy said false/nil
 * for the target) keeps the attributes and container it last had in scope,
 * so the target can still find the account to disable it; it has no groups.
 * Causes of a section's outputs are in desired_identity_t.causes under
 * "<target>.<attribute>" ("<target>.@groups", "<target>.@container").
 */
typedef struct target_identity {
	char *name;            /* the policy's target name, e.g. "ad" */
	bool in_scope;         /* false: the employee has no account there */
	id_attrs_t attributes; /* attribute → value, sorted, no NULL values */
	char **groups;         /* sorted, unique */
	size_t ngroups;
	char *container; /* "" when the policy gives none */
} target_identity_t;

void target_identity_init(target_identity_t *t);
void target_identity_fini(target_identity_t *t);

/*
 * A bump allocator for a desired identity decoded in one go (the last
 * identity of an employee record): its strings and arrays are carved from
 * a few blocks and freed together, instead of one malloc and free each.
 */
typedef struct desired_arena desired_arena_t;
/* n bytes (max_align_t aligned) from *a, a new block when it is full.
 * NULL when out of memory. */
void *desired_arena_alloc(desired_arena_t **a, size_t n);
/* A copy of s (NULL for NULL) from *a.  NULL when out of memory (or s is
 * NULL). */
char *desired_arena_strdup(desired_arena_t **a, const char *s);
/* The n bytes at s (no NUL among them) and a NUL, from *a.  NULL when out
 * of memory. */
char *desired_arena_strndup(desired_arena_t **a, const char *s, size_t n);
/* Frees every block; NULL is a no-op. */
void desired_arena_free(desired_arena_t *a);

typedef struct desired_identity {
	char *employee_id;
	int64_t version; /* monotonic per employee, starts at 1 */
	lifecycle_state_t state;
	id_attrs_t attributes; /* target attribute name → value */
	char **groups;         /* sorted, unique group names */
	size_t ngroups;
	char *container;  /* OU path relative to the people base, e.g. "ou=Sales" */
	char *manager_id; /* optional: the manager's employee id */
	char *policy_version;
	char *cause_event_id; /* the event that produced this version */
	int64_t effective_at; /* `now` of the fold that produced it */
	attr_cause_t *causes; /* sorted by attribute */
	size_t ncauses;
	/* Per-target sections, sorted by name, unique (schema v3).  Empty for
	 * the built-in mapping and for v1/v2 payloads: then every target uses
	 * the top-level attributes, groups and container.  A policy fills one
	 * section per declared target; the top level then repeats the section
	 * of the processor's primary target (processor.target). */
	target_identity_t *targets;
	size_t ntargets;
	/* When non-NULL, every string and array above lives in this arena
	 * (or is a constant of the program, such as a mapping's rule name),
	 * and strings may be shared between parts: nothing may free, realloc
	 * or write into a part.  Whoever builds the identity may still point
	 * a field at a new string from the same arena (the old one is simply
	 * left there); everyone else treats it as read-only.
	 * desired_identity_fini() frees the arena whole;
	 * desired_identity_copy() of it makes an ordinary, malloc'd copy. */
	desired_arena_t *arena;
} desired_identity_t;

void desired_identity_init(desired_identity_t *d);
void desired_identity_fini(desired_identity_t *d);
/* Deep copy; dst is fini'd first.  Returns 0 or ID_ENOMEM. */
int desired_identity_copy(desired_identity_t *dst, const desired_identity_t *src);
/* Adds a group keeping the list sorted and unique.  0 or ID_ENOMEM. */
int desired_identity_add_group(desired_identity_t *d, const char *group);
/* Sets the cause of an attribute (replacing any).  0 or ID_ENOMEM. */
int desired_identity_set_cause(desired_identity_t *d, const char *attribute,
                               const char *event_id, const char *rule);
/*
 * True when a and b describe the same identity, ignoring version,
 * cause_event_id, effective_at and causes — i.e. a new version would not
 * change anything in a target.  Sections compare by what each target gets:
 * a version without sections gives every target its top level.
 */
bool desired_identity_same_target_state(const desired_identity_t *a,
                                        const desired_identity_t *b);

/* The section named name, or NULL.  Borrowed. */
const target_identity_t *desired_identity_target(const desired_identity_t *d,
                                                 const char *name);
/* Adds an empty section named name (keeping the list sorted) and returns
 * it, or the existing one; NULL when out of memory.  Borrowed. */
target_identity_t *desired_identity_add_target(desired_identity_t *d, const char *name);
/* Deep copy of a section into dst (fini'd first).  0 or ID_ENOMEM. */
int target_identity_copy(target_identity_t *dst, const target_identity_t *src);
bool target_identity_equal(const target_identity_t *a, const target_identity_t *b);

/*
 * Rewrites d in place into what target `name` must converge to:
 *  - no sections (built-in mapping, v1/v2 payloads): d is left as it is;
 *  - the section in scope: its attributes, groups and container replace the
 *    top level's (causes named "<name>.<x>" become "<x>");
 *  - the section out of scope: no account there — state PENDING when the
 *    section has no attributes (never had an account), else DISABLED (unless
 *    PENDING or DELETED already) with the section's last attributes and no
 *    groups;
 *  - no such section: ID_ENOTFOUND, err naming the target, the policy
 *    version and the targets it declares (the sink parks the employee).
 * The sections are dropped from d afterwards.  0, ID_ENOTFOUND or ID_ENOMEM.
 */
int desired_identity_target_view(desired_identity_t *d, const char *name, id_err_t *err);

#define SINK_OUTCOME_MAP(X) X(APPLIED) X(NOOP) X(FAILED) X(DEFERRED) X(HELD)

typedef enum {
#define SO_ENUM_(n) SINK_##n,
	SINK_OUTCOME_MAP(SO_ENUM_)
#undef SO_ENUM_
	    SINK_OUTCOME_COUNT
} sink_outcome_t;

const char *sink_outcome_name(sink_outcome_t o);
int sink_outcome_parse(const char *name, sink_outcome_t *out);

/* One operation done on a target.  op is e.g. "add", "modify", "modrdn",
 * "group_add", "group_remove", "disable", "enable", "delete". */
typedef struct sink_op {
	char *op;
	char *attribute; /* attribute, group or DN concerned */
	char *old_value; /* optional */
	char *new_value; /* optional */
} sink_op_t;

typedef struct sink_result {
	char *target; /* e.g. "ldap" */
	char *employee_id;
	int64_t desired_version;
	sink_outcome_t outcome;
	sink_op_t *ops;
	size_t nops;
	char *error; /* optional */
	int64_t at;  /* when the sink finished, wall clock */
} sink_result_t;

void sink_result_init(sink_result_t *r);
void sink_result_fini(sink_result_t *r);
/* Appends a copy of the op fields (old/new may be NULL).  0 or ID_ENOMEM. */
int sink_result_add_op(sink_result_t *r, const char *op, const char *attribute,
                       const char *old_value, const char *new_value);

/*
 * NameClaim (schemas/name_claim.avsc): a request about one unique name on
 * <prefix>.names.claims, keyed by "<namespace>:<value folded to lower case>"
 * (processors/name_arbiter.h makes keys and ids).  Order = Avro enum symbol
 * order of NameClaimKind.
 *   CLAIM    an employee asks for the name
 *   RELEASE  its owner gives it up; reserved for the owner until quarantine_until
 *   RESERVE  the name exists outside idstream (imported); kept for employee_id
 */
#define NAME_CLAIM_KIND_MAP(X) X(CLAIM) X(RELEASE) X(RESERVE)

typedef enum {
#define NC_ENUM_(n) NAME_##n,
	NAME_CLAIM_KIND_MAP(NC_ENUM_)
#undef NC_ENUM_
	    NAME_CLAIM_KIND_COUNT
} name_claim_kind_t;

const char *name_claim_kind_name(name_claim_kind_t k); /* "CLAIM" */
int name_claim_kind_parse(const char *name, name_claim_kind_t *out);

typedef struct name_claim {
	char *claim_id; /* deterministic, lower-case hex */
	name_claim_kind_t kind;
	char *ns;                 /* the namespace field: "username", "email", ... */
	char *value;              /* case preserved */
	char *employee_id;        /* the claimant / owner ("external:<dn>" for imports) */
	int64_t claimed_at;       /* the fold's now that made the claim */
	int64_t quarantine_until; /* RELEASE: reserved for the owner until then; else 0 */
	char *source_event_id;    /* the event that caused the claim */
} name_claim_t;

void name_claim_init(name_claim_t *c);
void name_claim_fini(name_claim_t *c);

#endif
