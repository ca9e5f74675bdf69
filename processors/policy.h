/*
 * policy.h — the identity policy: a Lua 5.4 file that maps an employee's HR
 * record to the identity each target (ldap, ad, scim, ...) should hold.
 *
 * The contract the file implements is documented in examples/policy.lua and
 * processors/README.md ("Policy").  In short, the file returns
 *   { targets = {"ldap", ...}, identity = function(emp, ctx) ... end,
 *     sources = {...} (optional) }
 * (or defines the global `targets` and `identity`), and identity() returns
 *   { targets = { ldap = {attributes, groups, container} | false, ... },
 *     unique = { username = {candidates...}, ... }, manager_id, timing }.
 *
 * Sandbox: the file runs without io, os, require, package, debug, dofile,
 * loadfile, string.dump, math.random, coroutine and collectgarbage modes
 * other than "collect"; load() takes text only.  Things that could make two
 * runs differ are removed or made deterministic: pairs() visits keys in
 * sorted order, tostring() and string.format("%s") never show addresses,
 * "%p" is refused, weak tables and finalizers are refused, globals are
 * read-only once the file has loaded.  `now` is the event's time (ctx.now),
 * never the clock.  Every evaluation (and the load itself) runs under an
 * instruction budget and a memory budget; exceeding either is an error that
 * names the employee and the budget.  Errors name the policy file and line.
 *
 * Version: "sha256:" + the first 16 hex digits of the SHA-256 of the file's
 * bytes (policy_version()); the full digest is policy_sha256().
 *
 * Purity and threads: evaluation does no I/O and reads no clock;
 * policy_load_file() reads the file once.  A policy_t owns one Lua
 * interpreter that is reused by every evaluation, so it is NOT thread-safe:
 * load one policy_t per thread.  Mappings made by policy_mapping_create()
 * share that interpreter and the same rule applies to them.
 */
#ifndef IDSTREAM_POLICY_H
#define IDSTREAM_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/err.h"
#include "processors/mapping.h"
#include "schemas/model.h"

/* Budgets used when policy_limits_t fields are 0. */
#define POLICY_DEFAULT_MAX_INSTRUCTIONS 1000000u
#define POLICY_DEFAULT_MAX_MEMORY       (8u * 1024u * 1024u)

/* Prefix of policy versions; the version is this + 16 hex digits. */
#define POLICY_VERSION_PREFIX "sha256:"

typedef struct policy_limits {
	/* Lua VM instructions per evaluation (checked every 1000). */
	uint64_t max_instructions;
	/* Bytes the Lua heap may grow by during one evaluation (garbage is
	 * collected before the budget is declared exceeded). */
	size_t max_memory;
} policy_limits_t;

/* Lifecycle timing decided by the policy (see README "Policy"). */
typedef enum {
	POLICY_ENABLE_AT_START, /* "start": enabled on the start date */
	POLICY_ENABLE_AT_CREATE /* "create": enabled as soon as created */
} policy_enable_t;

typedef enum {
	POLICY_DISABLE_AT_EFFECTIVE, /* "effective": at the termination's effective time
	                              */
	POLICY_DISABLE_IMMEDIATELY /* "immediate": as soon as the termination is known */
} policy_disable_t;

#define POLICY_NEVER (-1) /* delete_after_days: the account is never deleted */

typedef struct policy_timing {
	int32_t create_days_before_start; /* 0..3650, default 0 */
	policy_enable_t enable;           /* default POLICY_ENABLE_AT_START */
	policy_disable_t disable;         /* default POLICY_DISABLE_AT_EFFECTIVE */
	int32_t delete_after_days;        /* 0..36500 or POLICY_NEVER (default) */
	bool suspend_on_leave;            /* default true */
	int32_t name_quarantine_days;     /* 0..36500, default 0 */
	bool reuse_name_after_delete;     /* default false */
	char *timezone; /* IANA zone of the employee's location; "UTC" by default */
} policy_timing_t;

/* An ordered candidate list for one unique value (a claim namespace). */
typedef struct policy_unique {
	char *name;    /* namespace, e.g. "username", "email", "ad_sam" */
	char **values; /* non-empty, distinct (ignoring ASCII case), in order */
	size_t nvalues;
} policy_unique_t;

/* What one target should hold for the employee. */
typedef struct policy_target {
	char *name;            /* a target declared by the policy */
	bool in_scope;         /* false: the employee has no account there */
	id_attrs_t attributes; /* attribute → value (never NULL values) */
	char **groups;         /* sorted, unique */
	size_t ngroups;
	char *container; /* e.g. "ou=Sales"; NULL when the policy gives none */
} policy_target_t;

typedef struct policy_output {
	policy_target_t *targets; /* every declared target, in declaration order */
	size_t ntargets;
	policy_unique_t *unique; /* sorted by name */
	size_t nunique;
	char *manager_id; /* NULL when none */
	policy_timing_t timing;
} policy_output_t;

void policy_output_init(policy_output_t *o);
/* Frees everything; the output is empty (init state) afterwards. */
void policy_output_fini(policy_output_t *o);
/* The target called name, or NULL.  Borrowed. */
const policy_target_t *policy_output_target(const policy_output_t *o, const char *name);
/* The candidate list called name, or NULL.  Borrowed. */
const policy_unique_t *policy_output_unique(const policy_output_t *o, const char *name);

/* True when a and b hold the same identity (every field compared). */
bool policy_output_equal(const policy_output_t *a, const policy_output_t *b);

/*
 * Parses a time the way the date helpers do: "YYYY-MM-DD" (midnight UTC) or
 * ISO-8601 "YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM]" (UTC without an offset)
 * into ms since the epoch.  0, or ID_EPARSE for anything else.
 */
int policy_time_parse(const char *s, int64_t *ms);

/* What one evaluation sees.  Everything is borrowed for the call. */
typedef struct policy_input {
	const char *employee_id;   /* required; emp.employee_id and ctx.employee_id */
	const id_attrs_t *hr;      /* merged HR attributes (may be NULL: none) */
	lifecycle_state_t state;   /* ctx.state, e.g. "ACTIVE" */
	int64_t now;               /* ctx.now: ms since the epoch, the event's time */
	const char *event;         /* optional ctx.event, e.g. "TERMINATE" */
	const char *reason;        /* optional ctx.reason: the event's reason */
	const id_attrs_t *granted; /* optional ctx.granted: namespace → granted value */
} policy_input_t;

typedef struct policy policy_t;

/*
 * Loads a policy from its source text.  name is what errors call the file
 * (usually its path).  Runs the file's top level under the budgets, checks
 * the module shape (targets, identity, sources) and freezes the globals.
 * limits may be NULL (defaults).  Errors: ID_EPARSE (syntax), ID_EINVALID
 * (runtime error, bad shape, budget), ID_ENOMEM; err names file and line.
 * Ownership: caller frees with policy_destroy().
 */
policy_t *policy_create(const char *name, const char *src, size_t len,
                        const policy_limits_t *limits, id_err_t *err);

/* Reads the file at path (ID_EIO when it cannot) and calls policy_create(). */
policy_t *policy_load_file(const char *path, const policy_limits_t *limits,
                           id_err_t *err);

void policy_destroy(policy_t *p);

/* "sha256:" + 16 hex digits.  Borrowed, valid until destroy. */
const char *policy_version(const policy_t *p);
/* The 64 hex digits of the SHA-256 of the file.  Borrowed. */
const char *policy_sha256(const policy_t *p);
/* The name given at creation.  Borrowed. */
const char *policy_name(const policy_t *p);
/* Declared target names in order; *n receives the count.  Borrowed. */
const char *const *policy_targets(const policy_t *p, size_t *n);

/*
 * Optional sink for print() calls in the policy (debugging with
 * `idstream policy check`).  Without one, print() does nothing.  fn gets
 * one line without the newline.
 */
void policy_set_print(policy_t *p, void (*fn)(void *ctx, const char *line), void *ctx);

/*
 * Evaluates identity(emp, ctx) for in and fills out (which must be
 * initialised; its old content is freed first).  Returns 0, or:
 *   ID_EINVALID  the policy raised an error, returned a malformed result,
 *                read invalid UTF-8, or exceeded a budget; err reads
 *                "employee E1: policy <file>:<line>: <what>" (for budgets
 *                "... instruction budget of N exceeded" / "memory budget of
 *                N bytes exceeded").  out is left empty.
 *   ID_ENOMEM    the process is out of memory (not the budget).
 * The interpreter stays usable after any error.
 */
int policy_evaluate(policy_t *p, const policy_input_t *in, policy_output_t *out,
                    id_err_t *err);

/*
 * The Lua traceback of the last failed evaluation or load ("" when none).
 * Borrowed; valid until the next call on p.
 */
const char *policy_last_traceback(const policy_t *p);

/*
 * Adapter to the fold: a mapping that evaluates p and fills a desired
 * identity with one section per declared target (desired_identity_t.targets:
 * attributes, groups, container, in_scope; causes "<target>.<output>") and,
 * at the top level, the section of the primary `target` when it is in
 * scope (attributes, groups, container; nothing when out of scope), plus
 * manager_id.  Causes have rules "policy:<target>.<attribute>",
 * "policy:<target>.groups", "policy:<target>.container", "policy:manager_id",
 * "policy:state"; trace sources come from the policy's `sources` table, else
 * every HR key the evaluation read.  Its version is policy_version(p).
 * target must be declared by the policy (ID_EINVALID otherwise).
 * p is borrowed and must outlive the mapping; same thread rules as p.
 * Ownership: caller frees with mapping_destroy().
 */
mapping_t *policy_mapping_create(policy_t *p, const char *target, id_err_t *err);

#endif
