/*
 * policy_lib.h — internal to processors/policy*.c: the sandboxed global
 * environment of a policy (the whitelisted parts of the Lua standard library,
 * made deterministic) and the helper functions policies call (lower, fold,
 * slug, mid, join, switch, date_parse, candidates, ...).  The list with
 * semantics is in processors/README.md ("Policy helpers").
 *
 * The interpreter's extra space (lua_getextraspace) holds a pointer to the
 * policy_sandbox_t below; the owner (policy.c) sets it before opening the
 * library.  Thread safety: that of the lua_State.
 */
#ifndef IDSTREAM_POLICY_LIB_H
#define IDSTREAM_POLICY_LIB_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

typedef struct policy_sandbox {
	/* Set when an instruction or memory budget tripped during the
	 * current evaluation; pcall/xpcall then re-raise instead of catching,
	 * so a policy cannot swallow its own budget error. */
	int budget_exceeded;
	/* Optional destination of print(); NULL discards. */
	void (*print)(void *ctx, const char *line);
	void *print_ctx;
	/* Scratch buffer for the folding helpers (malloc'ed, reused). */
	id_buf_t scratch;
} policy_sandbox_t;

static inline policy_sandbox_t *policy_sandbox_of(lua_State *L)
{
	return *(policy_sandbox_t **)lua_getextraspace(L);
}

/*
 * Opens the needed standard libraries and pushes a new environment table
 * holding the sandboxed globals and the helpers.  Raises Lua errors (call it
 * protected).  The string metatable is protected too.
 */
int policy_lib_push_env(lua_State *L);

/*
 * Makes the table at idx read-only: its fields move to a hidden table that
 * it reads through, writes raise "<what> is read-only ...", pairs() still
 * works and getmetatable() returns false.  what names the table in errors
 * ("global", "string", ...).  Raises Lua errors (call it protected).
 */
void policy_lib_freeze(lua_State *L, int idx, const char *what);

/*
 * Pushes tostring(v) for the value at idx without ever showing an address
 * (tables and functions without __tostring become their type name).
 */
const char *policy_lib_tostring(lua_State *L, int idx);

/*
 * Deterministic pairs(): pushes the iterator triple for the table at idx,
 * visiting numbers (ascending) then strings (byte order); other key types
 * raise an error.  Honors __pairs.  Returns 3.
 */
int policy_lib_pairs(lua_State *L);

/* Writes the UTC date of ms since the epoch as "YYYY-MM-DD" (out >= 24). */
void policy_lib_format_day(int64_t ms, char *out, size_t n);

#endif
