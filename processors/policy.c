/*
 * policy.c — loading, sandboxing, budgets and evaluation of a Lua policy,
 * and its adapter to mapping_t (see policy.h; the contract is in
 * processors/README.md, "Policy").
 *
 * One lua_State per policy, created once and reused: `emp` and `ctx` are
 * long-lived proxy tables whose __index reads the current policy_input_t,
 * so an evaluation pushes no HR data it does not read, and every read is
 * recorded (the HR keys behind the outputs, for causes).  All Lua work,
 * including the walk over the returned table, runs inside one lua_pcall;
 * the walk uses raw access only, so no policy code runs outside the
 * budgets.  C memory made during the walk is owned by the output (or by
 * the policy's reusable scratch arrays) at every moment, so a Lua error
 * longjmp-ing out of the walk leaks nothing.
 *
 * Budgets: a count hook every HOOK_STEP instructions, and an allocator that
 * refuses to let the heap grow more than max_memory above its size at the
 * start of the evaluation (Lua then runs an emergency full collection and,
 * if that is not enough, raises a memory error).  A tripped budget sets
 * sb.budget_exceeded, which makes the sandbox's pcall re-raise.
 *
 * Thread safety: none; a policy_t belongs to one thread (see policy.h).
 */
#include "processors/policy.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/hmap.h"
#include "processors/ascii_fold.h"
#include "processors/policy_lib.h"

#define HOOK_STEP      1000
#define MAX_TARGETS    16
#define MAX_CANDIDATES 100
#define MAX_INTERNED   4096 /* distinct HR keys / source sets remembered */
#define MAX_FILE_BYTES (4u * 1024u * 1024u)
#define VERSION_HEX    16
#define TRACEBACK_MAX  2048
#define WHERE_MAX      (LUA_IDSIZE + 32)
#define PATH_MAX_CHARS 320

enum { BUDGET_NONE, BUDGET_INSTRUCTIONS, BUDGET_MEMORY };

typedef struct str_ref {
	const char *s;
	size_t len;
} str_ref_t;

struct policy {
	policy_sandbox_t sb; /* first: the interpreter's extra space points here */
	lua_State *L;
	char *name;
	char *chunkname; /* "@" + name */
	char short_src[LUA_IDSIZE];
	char sha256[65];
	char version[sizeof(POLICY_VERSION_PREFIX) + VERSION_HEX];
	policy_limits_t limits;

	/* Memory accounting (the allocator's view). */
	size_t mem_used;
	size_t mem_limit; /* SIZE_MAX outside evaluations */
	bool budget_on;
	uint64_t instructions;
	int exceeded;
	char where[WHERE_MAX]; /* policy position where a budget tripped */
	bool oom;              /* a C allocation failed inside the protected call */
	bool loading;          /* reading the module, not a result */

	/* The module. */
	char **targets;
	size_t ntargets;
	int identity_line;
	int env_ref, identity_ref, emp_ref, ctx_ref, intern_ref, granted_ref, empty_ref;
	int cache_ref; /* emp values read in this evaluation (false: absent) */
	bool cache_used;

	/* Interned strings: HR keys and attribute names → stable char *, and
	 * source lists (joined with '\x1f') → NULL-terminated arrays.  They
	 * live until destroy, as mapping_trace_t requires. */
	id_hmap_t keys;
	id_hmap_t lists;
	id_hmap_t sources; /* declared: "uid" / "ldap.uid" → list */

	/* The evaluation in progress. */
	const policy_input_t *in;
	policy_output_t *out;
	int want;                  /* target index for the adapter, -1 = all */
	policy_target_t *want_out; /* where the adapter's target goes */
	bool granted_built;
	const char **reads;
	size_t nreads, capreads;
	const char *const *reads_list; /* interned form of reads, lazily */

	/* Scratch reused by the result walk. */
	str_ref_t *keybuf;
	size_t capkeys;
	char path[PATH_MAX_CHARS];

	char traceback[TRACEBACK_MAX];
};

static const char *const src_state[] = {MAPPING_SRC_LIFECYCLE, NULL};

/* ---- memory and budgets -------------------------------------------------- */

static bool find_policy_frame(lua_State *L, const policy_t *p, char *buf, size_t n)
{
	lua_Debug ar;
	for (int level = 0; level < 64 && lua_getstack(L, level, &ar); level++) {
		if (!lua_getinfo(L, "Sl", &ar))
			continue;
		if (ar.currentline > 0 && strcmp(ar.source, p->chunkname) == 0) {
			snprintf(buf, n, "%s:%d", ar.short_src, ar.currentline);
			return true;
		}
	}
	return false;
}

static void *policy_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	policy_t *p = ud;
	if (ptr == NULL)
		osize = 0; /* osize is a type tag for new blocks */
	if (nsize == 0) {
		free(ptr);
		p->mem_used -= osize;
		return NULL;
	}
	if (nsize > osize && p->mem_used - osize + nsize > p->mem_limit) {
		if (p->exceeded == BUDGET_NONE) {
			p->exceeded = BUDGET_MEMORY;
			p->sb.budget_exceeded = 1;
			if (!find_policy_frame(p->L, p, p->where, sizeof(p->where)))
				snprintf(p->where, sizeof(p->where), "%s", p->short_src);
		}
		return NULL;
	}
	void *n = realloc(ptr, nsize);
	if (n == NULL)
		return nsize <= osize ? ptr : NULL; /* Lua assumes shrinking works */
	p->mem_used = p->mem_used - osize + nsize;
	return n;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	policy_t *p = (policy_t *)policy_sandbox_of(L);
	(void)ar;
	p->instructions += HOOK_STEP;
	if (p->instructions <= p->limits.max_instructions)
		return;
	if (p->exceeded == BUDGET_NONE) {
		p->exceeded = BUDGET_INSTRUCTIONS;
		p->sb.budget_exceeded = 1;
		if (!find_policy_frame(L, p, p->where, sizeof(p->where)))
			snprintf(p->where, sizeof(p->where), "%s", p->short_src);
	}
	luaL_error(L, "instruction budget exceeded");
}

static void budget_begin(policy_t *p)
{
	p->sb.budget_exceeded = 0;
	p->exceeded = BUDGET_NONE;
	p->instructions = 0;
	p->oom = false;
	p->traceback[0] = '\0';
	p->mem_limit = p->mem_used + p->limits.max_memory < p->mem_used
	                   ? SIZE_MAX
	                   : p->mem_used + p->limits.max_memory;
	p->budget_on = true;
	/* Installing the hook also restarts its count, so every evaluation
	 * is charged the same for the same work. */
	lua_sethook(p->L, count_hook, LUA_MASKCOUNT, HOOK_STEP);
}

static void budget_end(policy_t *p)
{
	lua_sethook(p->L, NULL, 0, 0);
	p->mem_limit = SIZE_MAX;
	p->budget_on = false;
	/* After a budget error the heap may hold the remains of a runaway
	 * evaluation: give it back now rather than at some later one. */
	if (p->exceeded != BUDGET_NONE)
		lua_gc(p->L, LUA_GCCOLLECT);
}

/* Message handler: makes sure the message names the policy file and line,
 * and keeps a traceback for `policy check`. */
static int msgh(lua_State *L)
{
	policy_t *p = (policy_t *)policy_sandbox_of(L);
	const char *msg = lua_tostring(L, 1);
	char where[WHERE_MAX];
	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			msg = lua_tostring(L, -1);
		else
			msg = lua_pushfstring(L, "error object is a %s value",
			                      luaL_typename(L, 1));
	}
	size_t sl = strlen(p->short_src);
	if (!(strncmp(msg, p->short_src, sl) == 0 && msg[sl] == ':')) {
		if (!find_policy_frame(L, p, where, sizeof(where)))
			snprintf(where, sizeof(where), "%s", p->short_src);
		msg = lua_pushfstring(L, "%s: %s", where, msg);
	}
	luaL_traceback(L, L, NULL, 1);
	snprintf(p->traceback, sizeof(p->traceback), "%s", lua_tostring(L, -1));
	lua_pop(L, 1);
	lua_pushstring(L, msg);
	return 1;
}

/* ---- interning ----------------------------------------------------------- */

/* Stable copy of s, or NULL when out of memory or the table is full. */
static const char *intern_key(policy_t *p, const char *s)
{
	char *v = id_hmap_get(&p->keys, s);
	if (v != NULL)
		return v;
	if (p->keys.len >= MAX_INTERNED || (v = strdup(s)) == NULL)
		return NULL;
	if (id_hmap_put(&p->keys, s, v) != 0) {
		free(v);
		return NULL;
	}
	return v;
}

static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Interned NULL-terminated copy of the n strings at items (each already
 * interned), sorted and without duplicates.  NULL when out of memory or
 * full.  items is sorted in place.
 */
static const char *const *intern_list(policy_t *p, const char **items, size_t n)
{
	char stack[1024]; /* the usual key fits: no allocation */
	id_buf_t b = ID_BUF_INIT;
	const char **list = NULL;
	const char *key;
	size_t m = 0, total = 1;
	if (n > 1)
		qsort(items, n, sizeof(*items), cmp_cstr);
	for (size_t i = 0; i < n; i++)
		if (m == 0 || strcmp(items[m - 1], items[i]) != 0)
			items[m++] = items[i];
	for (size_t i = 0; i < m; i++)
		total += strlen(items[i]) + 1;
	if (total <= sizeof(stack)) {
		size_t at = 0;
		for (size_t i = 0; i < m; i++) {
			size_t l = strlen(items[i]);
			memcpy(stack + at, items[i], l);
			stack[at + l] = 0x1f;
			at += l + 1;
		}
		stack[at] = '\0';
		key = stack;
	} else {
		for (size_t i = 0; i < m; i++)
			if (id_buf_append_str(&b, items[i]) != 0 ||
			    id_buf_append_u8(&b, 0x1f) != 0)
				goto out;
		if (id_buf_append_u8(&b, 0) != 0)
			goto out;
		key = (char *)b.data;
	}
	list = id_hmap_get(&p->lists, key);
	if (list != NULL || p->lists.len >= MAX_INTERNED)
		goto out;
	if ((list = calloc(m + 1, sizeof(*list))) == NULL)
		goto out;
	if (m > 0)
		memcpy(list, items, m * sizeof(*list));
	if (id_hmap_put(&p->lists, key, list) != 0) {
		free(list);
		list = NULL;
	}
out:
	id_buf_fini(&b);
	return (const char *const *)list;
}

/* Adds the interned key k to the keys read by this evaluation. */
static void add_read(lua_State *L, policy_t *p, const char *k)
{
	for (size_t i = 0; i < p->nreads; i++)
		if (p->reads[i] == k)
			return;
	if (p->nreads == p->capreads) {
		size_t ncap = p->capreads ? p->capreads * 2 : 32;
		const char **n = realloc(p->reads, ncap * sizeof(*n));
		if (n == NULL) {
			p->oom = true;
			luaL_error(L, "out of memory");
		}
		p->reads = n;
		p->capreads = ncap;
	}
	p->reads[p->nreads++] = k;
	p->reads_list = NULL;
}

/* Records that the evaluation read the HR key at stack index idx.  The
 * Lua string → interned pointer map makes a repeated read one table
 * lookup. */
static void record_read(lua_State *L, policy_t *p, int idx)
{
	const char *k;
	idx = lua_absindex(L, idx);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->intern_ref);
	lua_pushvalue(L, idx);
	if (lua_rawget(L, -2) == LUA_TLIGHTUSERDATA) {
		k = lua_touserdata(L, -1);
	} else {
		k = intern_key(p, lua_tostring(L, idx));
		if (k == NULL) { /* table full: the read goes untraced */
			lua_pop(L, 2);
			return;
		}
		lua_pushvalue(L, idx);
		lua_pushlightuserdata(L, (void *)k);
		lua_rawset(L, -4);
	}
	lua_pop(L, 2);
	add_read(L, p, k);
}

static void record_token(lua_State *L, policy_t *p, const char *token)
{
	const char *k = intern_key(p, token);
	if (k != NULL)
		add_read(L, p, k);
}

/* ---- emp and ctx --------------------------------------------------------- */

static bool blank(const char *v)
{
	for (; *v != '\0'; v++)
		if (*v != ' ' && *v != '\t' && *v != '\r' && *v != '\n')
			return false;
	return true;
}

static policy_t *in_eval(lua_State *L, const char *what)
{
	policy_t *p = lua_touserdata(L, lua_upvalueindex(1));
	if (p->in == NULL)
		luaL_error(L, "%s is only available while identity() runs", what);
	return p;
}

/* Pushes HR value v of key (nil when absent or blank); checks UTF-8. */
static void push_hr_value(lua_State *L, policy_t *p, const char *key, const char *v)
{
	id_err_t err = {0};
	if (v == NULL || blank(v)) {
		lua_pushnil(L);
		return;
	}
	if (ascii_fold_utf8_check(v, &err) != 0)
		luaL_error(L, "employee %s: HR field %s: %s", p->in->employee_id, key,
		           err.msg);
	lua_pushstring(L, v);
}

/*
 * emp.key.  A policy reads the same fields many times, so the first read of
 * a key in an evaluation (lookup, UTF-8 check, recording the read) leaves
 * its value in a cache table that later reads take it from; the cache is
 * emptied when the evaluation ends.
 */
static int emp_index(lua_State *L)
{
	policy_t *p = in_eval(L, "emp");
	if (lua_type(L, 2) != LUA_TSTRING)
		return 0;
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->cache_ref);
	lua_pushvalue(L, 2);
	int t = lua_rawget(L, 3);
	if (t == LUA_TSTRING)
		return 1;
	if (t == LUA_TBOOLEAN) {
		lua_pushnil(L);
		return 1;
	}
	lua_pop(L, 1);
	const char *key = lua_tostring(L, 2);
	if (strcmp(key, "employee_id") == 0) {
		record_token(L, p, MAPPING_SRC_EMPLOYEE_ID);
		lua_pushstring(L, p->in->employee_id);
	} else {
		record_read(L, p, 2);
		push_hr_value(L, p, key, p->in->hr ? id_attrs_get(p->in->hr, key) : NULL);
	}
	lua_pushvalue(L, 2);
	if (lua_isnil(L, -2))
		lua_pushboolean(L, 0);
	else
		lua_pushvalue(L, -2);
	lua_rawset(L, 3);
	p->cache_used = true;
	return 1;
}

/* Empties the emp cache; the table keeps its size for the next one. */
static void cache_clear(lua_State *L, policy_t *p)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->cache_ref);
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		lua_pop(L, 1);
		lua_pushvalue(L, -1);
		lua_pushnil(L);
		lua_rawset(L, -4);
	}
	lua_pop(L, 1);
	p->cache_used = false;
}

static int emp_pairs(lua_State *L)
{
	policy_t *p = in_eval(L, "emp");
	const id_attrs_t *hr = p->in->hr;
	lua_newtable(L);
	int t = lua_gettop(L);
	for (size_t i = 0; hr != NULL && i < hr->len; i++) {
		lua_pushstring(L, hr->items[i].key);
		record_read(L, p, -1);
		push_hr_value(L, p, hr->items[i].key, hr->items[i].value);
		lua_rawset(L, t);
	}
	lua_replace(L, 1);
	lua_settop(L, 1);
	return policy_lib_pairs(L);
}

static int readonly_newindex(lua_State *L)
{
	return luaL_error(L, "%s is read-only", lua_tostring(L, lua_upvalueindex(1)));
}

static void push_granted(lua_State *L, policy_t *p)
{
	const id_attrs_t *g = p->in->granted;
	if (p->granted_built) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, p->granted_ref);
		return;
	}
	if (g == NULL || g->len == 0) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, p->empty_ref);
	} else {
		lua_createtable(L, 0, (int)g->len);
		for (size_t i = 0; i < g->len; i++) {
			if (g->items[i].value == NULL)
				continue;
			lua_pushstring(L, g->items[i].value);
			lua_setfield(L, -2, g->items[i].key);
		}
	}
	lua_pushvalue(L, -1);
	lua_rawseti(L, LUA_REGISTRYINDEX, p->granted_ref);
	p->granted_built = true;
}

static int ctx_index(lua_State *L)
{
	policy_t *p = in_eval(L, "ctx");
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
	char day[24];
	if (strcmp(k, "now") == 0) {
		lua_pushinteger(L, (lua_Integer)p->in->now);
	} else if (strcmp(k, "today") == 0) {
		policy_lib_format_day(p->in->now, day, sizeof(day));
		lua_pushstring(L, day);
	} else if (strcmp(k, "employee_id") == 0) {
		record_token(L, p, MAPPING_SRC_EMPLOYEE_ID);
		lua_pushstring(L, p->in->employee_id);
	} else if (strcmp(k, "state") == 0) {
		record_token(L, p, MAPPING_SRC_LIFECYCLE);
		lua_pushstring(L, lifecycle_state_name(p->in->state));
	} else if (strcmp(k, "event") == 0) {
		lua_pushstring(L, p->in->event); /* NULL pushes nil */
	} else if (strcmp(k, "reason") == 0) {
		lua_pushstring(L, p->in->reason);
	} else if (strcmp(k, "granted") == 0) {
		push_granted(L, p);
	} else {
		return luaL_error(
		    L,
		    "ctx has no field '%s' (it has now, today, employee_id, "
		    "state, event, reason, granted)",
		    k);
	}
	return 1;
}

/* Creates a proxy table whose __index is fn and pushes nothing; returns a
 * registry reference. */
static int make_proxy(lua_State *L, policy_t *p, lua_CFunction index, lua_CFunction pairs,
                      const char *what)
{
	lua_newtable(L);
	lua_createtable(L, 0, 4);
	lua_pushlightuserdata(L, p);
	lua_pushcclosure(L, index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushstring(L, what);
	lua_pushcclosure(L, readonly_newindex, 1);
	lua_setfield(L, -2, "__newindex");
	if (pairs != NULL) {
		lua_pushlightuserdata(L, p);
		lua_pushcclosure(L, pairs, 1);
		lua_setfield(L, -2, "__pairs");
	}
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
	return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---- output -------------------------------------------------------------- */

static void target_fini(policy_target_t *t)
{
	free(t->name);
	id_attrs_fini(&t->attributes);
	for (size_t i = 0; i < t->ngroups; i++)
		free(t->groups[i]);
	free(t->groups);
	free(t->container);
	memset(t, 0, sizeof(*t));
}

static void timing_default(policy_timing_t *t)
{
	t->create_days_before_start = 0;
	t->enable = POLICY_ENABLE_AT_START;
	t->disable = POLICY_DISABLE_AT_EFFECTIVE;
	t->delete_after_days = POLICY_NEVER;
	t->suspend_on_leave = true;
	t->name_quarantine_days = 0;
	t->reuse_name_after_delete = false;
	t->timezone = NULL;
}

void policy_output_init(policy_output_t *o)
{
	memset(o, 0, sizeof(*o));
	timing_default(&o->timing);
}

void policy_output_fini(policy_output_t *o)
{
	if (o == NULL)
		return;
	for (size_t i = 0; i < o->ntargets; i++)
		target_fini(&o->targets[i]);
	free(o->targets);
	for (size_t i = 0; i < o->nunique; i++) {
		for (size_t k = 0; k < o->unique[i].nvalues; k++)
			free(o->unique[i].values[k]);
		free(o->unique[i].values);
		free(o->unique[i].name);
	}
	free(o->unique);
	free(o->manager_id);
	free(o->timing.timezone);
	policy_output_init(o);
}

const policy_target_t *policy_output_target(const policy_output_t *o, const char *name)
{
	for (size_t i = 0; i < o->ntargets; i++)
		if (o->targets[i].name != NULL && strcmp(o->targets[i].name, name) == 0)
			return &o->targets[i];
	return NULL;
}

const policy_unique_t *policy_output_unique(const policy_output_t *o, const char *name)
{
	for (size_t i = 0; i < o->nunique; i++)
		if (strcmp(o->unique[i].name, name) == 0)
			return &o->unique[i];
	return NULL;
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool policy_output_equal(const policy_output_t *a, const policy_output_t *b)
{
	const policy_timing_t *x = &a->timing, *y = &b->timing;
	if (a->ntargets != b->ntargets || a->nunique != b->nunique ||
	    !str_eq(a->manager_id, b->manager_id) ||
	    x->create_days_before_start != y->create_days_before_start ||
	    x->enable != y->enable || x->disable != y->disable ||
	    x->delete_after_days != y->delete_after_days ||
	    x->suspend_on_leave != y->suspend_on_leave ||
	    x->name_quarantine_days != y->name_quarantine_days ||
	    x->reuse_name_after_delete != y->reuse_name_after_delete ||
	    !str_eq(x->timezone, y->timezone))
		return false;
	for (size_t i = 0; i < a->ntargets; i++) {
		const policy_target_t *s = &a->targets[i], *t = &b->targets[i];
		if (!str_eq(s->name, t->name) || s->in_scope != t->in_scope ||
		    !str_eq(s->container, t->container) || s->ngroups != t->ngroups ||
		    !id_attrs_equal(&s->attributes, &t->attributes))
			return false;
		for (size_t g = 0; g < s->ngroups; g++)
			if (strcmp(s->groups[g], t->groups[g]) != 0)
				return false;
	}
	for (size_t i = 0; i < a->nunique; i++) {
		const policy_unique_t *u = &a->unique[i], *v = &b->unique[i];
		if (strcmp(u->name, v->name) != 0 || u->nvalues != v->nvalues)
			return false;
		for (size_t k = 0; k < u->nvalues; k++)
			if (strcmp(u->values[k], v->values[k]) != 0)
				return false;
	}
	return true;
}

/* ---- the walk over identity()'s result ----------------------------------- */

/* t[k] without metamethods: reading the result must not run policy code. */
static int rawfield(lua_State *L, int idx, const char *k)
{
	idx = lua_absindex(L, idx);
	lua_pushstring(L, k);
	return lua_rawget(L, idx);
}

/*
 * Where in the result a value is, e.g. targets . ldap . attributes . uid or
 * targets.ldap.groups[2].  Kept as parts and formatted only for an error
 * message: the walk runs for every event.
 */
typedef struct where {
	const char *a, *b, *c, *d; /* joined with '.'; trailing ones NULL */
	lua_Integer index;         /* > 0: "[index]" appended */
} where_t;

static const char *where_fmt(const where_t *w, char *buf, size_t n)
{
	const char *parts[4] = {w->a, w->b, w->c, w->d};
	size_t len = 0;
	buf[0] = '\0';
	for (int i = 0; i < 4 && parts[i] != NULL && len < n; i++)
		len +=
		    (size_t)snprintf(buf + len, n - len, "%s%s", i ? "." : "", parts[i]);
	if (w->index > 0 && len < n)
		snprintf(buf + len, n - len, "[%lld]", (long long)w->index);
	return buf;
}

static void fail(lua_State *L, policy_t *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

/* Raises "<file>:<line of identity>: identity() result: <msg>". */
static void fail(lua_State *L, policy_t *p, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->loading)
		lua_pushfstring(L, "%s: %s", p->short_src, msg);
	else
		lua_pushfstring(L, "%s:%d: identity() result: %s", p->short_src,
		                p->identity_line, msg);
	lua_error(L);
	abort(); /* not reached: lua_error does not return */
}

static void nomem(lua_State *L, policy_t *p) __attribute__((noreturn));

static void nomem(lua_State *L, policy_t *p)
{
	p->oom = true;
	luaL_error(L, "out of memory");
	abort(); /* not reached */
}

static char *dup_or_fail(lua_State *L, policy_t *p, const char *s)
{
	char *d = strdup(s);
	if (d == NULL)
		nomem(L, p);
	return d;
}

static int keycmp(const void *pa, const void *pb)
{
	const str_ref_t *a = pa, *b = pb;
	int c = strcasecmp(a->s, b->s);
	return c != 0 ? c : strcmp(a->s, b->s);
}

/*
 * Collects the string keys of the table at idx into p->keybuf, sorted
 * (ignoring case first, so "uid" and "UID" end up side by side), so that
 * errors and outputs never depend on hash order.  Returns the count.
 */
static size_t collect_keys(lua_State *L, policy_t *p, int idx, const where_t *w)
{
	char wb[PATH_MAX_CHARS];
	size_t n = 0;
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			fail(L, p, "%s has a %s key; expected names (strings)",
			     where_fmt(w, wb, sizeof(wb)), luaL_typename(L, -1));
		if (n == p->capkeys) {
			size_t ncap = p->capkeys ? p->capkeys * 2 : 32;
			str_ref_t *k = realloc(p->keybuf, ncap * sizeof(*k));
			if (k == NULL)
				nomem(L, p);
			p->keybuf = k;
			p->capkeys = ncap;
		}
		p->keybuf[n].s = lua_tolstring(L, -1, &p->keybuf[n].len);
		if (strlen(p->keybuf[n].s) != p->keybuf[n].len)
			fail(L, p, "%s has a key with a NUL byte",
			     where_fmt(w, wb, sizeof(wb)));
		n++;
	}
	if (n > 1)
		qsort(p->keybuf, n, sizeof(*p->keybuf), keycmp);
	return n;
}

/* Fails when the table at idx has a key outside known (the first one in
 * byte order is named). */
static void check_known_keys(lua_State *L, policy_t *p, int idx, const char *const *known,
                             const where_t *w, const char *hint)
{
	char wb[PATH_MAX_CHARS];
	const char *bad = NULL;
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			fail(L, p, "%s has a %s key; expected one of %s",
			     where_fmt(w, wb, sizeof(wb)), luaL_typename(L, -1), hint);
		const char *k = lua_tostring(L, -1);
		bool ok = false;
		for (const char *const *q = known; *q != NULL && !ok; q++)
			ok = strcmp(*q, k) == 0;
		if (!ok && (bad == NULL || strcmp(k, bad) < 0))
			bad = k; /* still referenced by the table */
	}
	if (bad != NULL)
		fail(L, p, "%s has an unknown field \"%s\"; expected %s",
		     where_fmt(w, wb, sizeof(wb)), bad, hint);
}

static void check_text(lua_State *L, policy_t *p, const char *s, size_t len,
                       const where_t *w)
{
	char wb[PATH_MAX_CHARS];
	id_err_t err = {0};
	unsigned char any = 0;
	if (memchr(s, '\0', len) != NULL)
		fail(L, p, "%s contains a NUL byte", where_fmt(w, wb, sizeof(wb)));
	for (size_t i = 0; i < len; i++)
		any |= (unsigned char)s[i];
	/* Plain ASCII (most values) needs no decoding. */
	if ((any & 0x80) != 0 && ascii_fold_utf8_check(s, &err) != 0)
		fail(L, p, "%s: %s", where_fmt(w, wb, sizeof(wb)), err.msg);
}

/*
 * The value at idx as text: a string, or an integer in decimal.  nil,
 * false and "" mean "absent" (NULL), so `cond and value` works.  numbuf
 * must hold 32 bytes.
 */
static const char *scalar(lua_State *L, policy_t *p, int idx, char *numbuf,
                          const where_t *w)
{
	char wb[PATH_MAX_CHARS];
	size_t len;
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return NULL;
	case LUA_TBOOLEAN:
		if (!lua_toboolean(L, idx))
			return NULL;
		fail(L, p, "%s is true; expected a string or an integer",
		     where_fmt(w, wb, sizeof(wb)));
	case LUA_TSTRING: {
		const char *s = lua_tolstring(L, idx, &len);
		check_text(L, p, s, len, w);
		return len == 0 ? NULL : s;
	}
	case LUA_TNUMBER:
		if (!lua_isinteger(L, idx)) {
			lua_Number d = lua_tonumber(L, idx);
			lua_Integer i;
			if (!lua_numbertointeger(d, &i) || (lua_Number)i != d)
				fail(L, p,
				     "%s is the fraction %g; expected a string or an "
				     "integer",
				     where_fmt(w, wb, sizeof(wb)), (double)d);
			snprintf(numbuf, 32, "%lld", (long long)i);
			return numbuf;
		}
		snprintf(numbuf, 32, "%lld", (long long)lua_tointeger(L, idx));
		return numbuf;
	default:
		fail(L, p, "%s is a %s; expected a string or an integer",
		     where_fmt(w, wb, sizeof(wb)), luaL_typename(L, idx));
	}
}

static bool ascii_ieq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* AD refuses these in a sAMAccountName; catching it here names the policy
 * line instead of an LDAP error far away. */
static void check_sam(lua_State *L, policy_t *p, const char *v, const where_t *w)
{
	char wb[PATH_MAX_CHARS];
	size_t n = 0;
	for (const char *c = v; *c != '\0'; c++) {
		if ((*c & 0xC0) != 0x80)
			n++;
		if (strchr("\"/\\[]:;|=,+*?<>@", *c) != NULL || (unsigned char)*c < 0x20)
			fail(L, p,
			     "%s \"%s\": character '%c' is not allowed in a "
			     "sAMAccountName (use sam_account_name())",
			     where_fmt(w, wb, sizeof(wb)), v, *c);
	}
	if (n > 20)
		fail(L, p,
		     "%s \"%s\" has %zu characters; a sAMAccountName has at most 20 "
		     "(use sam_account_name())",
		     where_fmt(w, wb, sizeof(wb)), v, n);
	if (v[strlen(v) - 1] == '.')
		fail(L, p, "%s \"%s\" ends with '.', which AD refuses",
		     where_fmt(w, wb, sizeof(wb)), v);
}

static void parse_attributes(lua_State *L, policy_t *p, int idx, policy_target_t *t,
                             const where_t *w)
{
	char wb[PATH_MAX_CHARS], num[32];
	int ty = lua_type(L, idx);
	if (ty == LUA_TNIL)
		return;
	if (ty != LUA_TTABLE)
		fail(L, p, "%s is a %s; expected a table of attribute = value",
		     where_fmt(w, wb, sizeof(wb)), luaL_typename(L, idx));
	size_t n = collect_keys(L, p, idx, w);
	for (size_t i = 0; i < n; i++) {
		const char *k = p->keybuf[i].s;
		where_t wk = {w->a, w->b, w->c, k, 0};
		bool ok = k[0] != '\0' && k[0] != '@' && p->keybuf[i].len <= 256;
		for (const char *c = k; *c != '\0' && ok; c++)
			ok = (unsigned char)*c >= 0x20 && (unsigned char)*c <= 0x7E;
		if (!ok)
			fail(L, p,
			     "%s: attribute names are 1-256 printable ASCII characters "
			     "and do not start with '@'",
			     where_fmt(&wk, wb, sizeof(wb)));
		if (i > 0 && ascii_ieq(p->keybuf[i - 1].s, k))
			fail(L, p,
			     "%s: attributes \"%s\" and \"%s\" differ only in case; "
			     "targets treat them as one",
			     where_fmt(w, wb, sizeof(wb)), p->keybuf[i - 1].s, k);
		lua_pushlstring(L, k, p->keybuf[i].len);
		lua_rawget(L, idx);
		const char *v = scalar(L, p, -1, num, &wk);
		if (v != NULL && (k[0] == 's' || k[0] == 'S') &&
		    ascii_ieq(k, "sAMAccountName"))
			check_sam(L, p, v, &wk);
		if (v != NULL && t != NULL && id_attrs_set(&t->attributes, k, v) != 0)
			nomem(L, p);
		lua_pop(L, 1);
	}
}

/*
 * A list of names at idx (nil: none).  Entries are strings; false entries
 * are skipped, so `{ "staff", is_manager and "managers" }` works.  Calls
 * add(ctx, name) for each kept name.
 */
typedef void (*name_add_fn)(lua_State *L, policy_t *p, void *ctx, const char *name);

static void parse_name_list(lua_State *L, policy_t *p, int idx, const where_t *w,
                            name_add_fn add, void *ctx)
{
	char wb[PATH_MAX_CHARS];
	int ty = lua_type(L, idx);
	idx = lua_absindex(L, idx);
	if (ty == LUA_TNIL || (ty == LUA_TBOOLEAN && !lua_toboolean(L, idx)))
		return;
	if (ty != LUA_TTABLE)
		fail(L, p, "%s is a %s; expected a list of strings",
		     where_fmt(w, wb, sizeof(wb)), luaL_typename(L, idx));
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pop(L, 1);
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
		    lua_tointeger(L, -1) > n)
			fail(L, p,
			     "%s is not a list (it has the key %s); expected "
			     "{ \"a\", \"b\", ... }",
			     where_fmt(w, wb, sizeof(wb)),
			     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
			                                    : luaL_typename(L, -1));
	}
	for (lua_Integer k = 1; k <= n; k++) {
		where_t wi = *w;
		wi.index = k;
		int et = lua_rawgeti(L, idx, k);
		if (et == LUA_TNIL || (et == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
			lua_pop(L, 1);
			continue;
		}
		if (et != LUA_TSTRING)
			fail(L, p, "%s is a %s; expected a string",
			     where_fmt(&wi, wb, sizeof(wb)), luaL_typename(L, -1));
		size_t len;
		const char *s = lua_tolstring(L, -1, &len);
		check_text(L, p, s, len, &wi);
		if (len == 0)
			fail(L, p, "%s is empty", where_fmt(&wi, wb, sizeof(wb)));
		for (const char *c = s; *c != '\0'; c++)
			if ((unsigned char)*c < 0x20)
				fail(L, p, "%s contains a control character",
				     where_fmt(&wi, wb, sizeof(wb)));
		if (add != NULL)
			add(L, p, ctx, s);
		lua_pop(L, 1);
	}
}

static void add_group(lua_State *L, policy_t *p, void *ctx, const char *name)
{
	policy_target_t *t = ctx; /* groups was sized for the whole list */
	t->groups[t->ngroups] = dup_or_fail(L, p, name);
	t->ngroups++;
}

static void sort_groups(policy_target_t *t)
{
	size_t m = 0;
	if (t->ngroups < 2)
		return;
	qsort(t->groups, t->ngroups, sizeof(*t->groups), cmp_cstr);
	for (size_t i = 0; i < t->ngroups; i++) {
		if (m > 0 && strcmp(t->groups[m - 1], t->groups[i]) == 0)
			free(t->groups[i]);
		else
			t->groups[m++] = t->groups[i];
	}
	t->ngroups = m;
}

static void parse_target(lua_State *L, policy_t *p, int idx, size_t ti,
                         policy_target_t *t)
{
	static const char *const known[] = {"attributes", "groups", "container", NULL};
	char wb[PATH_MAX_CHARS], num[32];
	const char *tn = p->targets[ti];
	idx = lua_absindex(L, idx);
	where_t w = {"targets", tn, NULL, NULL, 0};
	check_known_keys(L, p, idx, known, &w, "attributes, groups, container");
	if (t != NULL)
		t->in_scope = true;

	where_t wa = {"targets", tn, "attributes", NULL, 0};
	rawfield(L, idx, "attributes");
	parse_attributes(L, p, lua_gettop(L), t, &wa);
	lua_pop(L, 1);

	where_t wg = {"targets", tn, "groups", NULL, 0};
	if (rawfield(L, idx, "groups") == LUA_TTABLE && t != NULL) {
		size_t n = lua_rawlen(L, -1);
		if (n > 0 && (t->groups = malloc(n * sizeof(*t->groups))) == NULL)
			nomem(L, p);
	}
	parse_name_list(L, p, -1, &wg, t != NULL ? add_group : NULL, t);
	if (t != NULL)
		sort_groups(t);
	lua_pop(L, 1);

	where_t wc = {"targets", tn, "container", NULL, 0};
	rawfield(L, idx, "container");
	const char *c = scalar(L, p, -1, num, &wc);
	if (c != NULL && lua_type(L, -1) != LUA_TSTRING)
		fail(L, p, "%s is a number; expected a string such as \"ou=Sales\"",
		     where_fmt(&wc, wb, sizeof(wb)));
	if (c != NULL && t != NULL)
		t->container = dup_or_fail(L, p, c);
	lua_pop(L, 1);
}

static void parse_targets(lua_State *L, policy_t *p, int idx)
{
	int ty = lua_type(L, idx);
	idx = lua_absindex(L, idx);
	if (ty == LUA_TNIL)
		fail(L, p, "has no targets table; expected targets = { %s = {...}, ... }",
		     p->targets[0]);
	if (ty != LUA_TTABLE)
		fail(L, p, "targets is a %s; expected a table", luaL_typename(L, idx));
	/* Unknown target names first, in byte order. */
	const char *bad = NULL;
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			fail(L, p, "targets has a %s key; expected target names",
			     luaL_typename(L, -1));
		const char *k = lua_tostring(L, -1);
		bool ok = false;
		for (size_t i = 0; i < p->ntargets && !ok; i++)
			ok = strcmp(p->targets[i], k) == 0;
		if (!ok && (bad == NULL || strcmp(k, bad) < 0))
			bad = k;
	}
	if (bad != NULL)
		fail(L, p,
		     "targets.%s: not a target of this policy (its targets list "
		     "declares the names)",
		     bad);
	for (size_t i = 0; i < p->ntargets; i++) {
		policy_target_t *t = NULL;
		if (p->want < 0)
			t = &p->out->targets[i];
		else if ((size_t)p->want == i)
			t = p->want_out;
		lua_pushstring(L, p->targets[i]);
		int et = lua_rawget(L, idx);
		if (et == LUA_TTABLE)
			parse_target(L, p, -1, i, t);
		else if (!(et == LUA_TNIL ||
		           (et == LUA_TBOOLEAN && !lua_toboolean(L, -1))))
			fail(L, p,
			     "targets.%s is a %s; expected a table, or false/nil for "
			     "\"not in scope\"",
			     p->targets[i], luaL_typename(L, -1));
		lua_pop(L, 1);
	}
}

typedef struct unique_acc {
	policy_unique_t *u; /* NULL: validate only */
	const where_t *w;
	size_t count;
} unique_acc_t;

static void add_candidate(lua_State *L, policy_t *p, void *ctx, const char *name)
{
	char wb[PATH_MAX_CHARS];
	unique_acc_t *a = ctx;
	if (a->count >= MAX_CANDIDATES)
		fail(L, p, "%s has more than %d candidates",
		     where_fmt(a->w, wb, sizeof(wb)), MAX_CANDIDATES);
	a->count++;
	if (a->u == NULL)
		return;
	for (size_t i = 0; i < a->u->nvalues; i++)
		if (ascii_ieq(a->u->values[i], name))
			return; /* the earlier one stays first */
	/* values was sized for the whole list (at most MAX_CANDIDATES). */
	a->u->values[a->u->nvalues] = dup_or_fail(L, p, name);
	a->u->nvalues++;
}

static void parse_unique(lua_State *L, policy_t *p, int idx, bool keep)
{
	char wb[PATH_MAX_CHARS];
	int ty = lua_type(L, idx);
	where_t w = {"unique", NULL, NULL, NULL, 0};
	idx = lua_absindex(L, idx);
	if (ty == LUA_TNIL)
		return;
	if (ty != LUA_TTABLE)
		fail(L, p, "unique is a %s; expected { namespace = { candidates... } }",
		     luaL_typename(L, idx));
	size_t n = collect_keys(L, p, idx, &w);
	if (keep && n > 0) {
		p->out->unique = calloc(n, sizeof(*p->out->unique));
		if (p->out->unique == NULL)
			nomem(L, p);
	}
	/* keybuf stays as collected: nothing below collects keys again. */
	for (size_t i = 0; i < n; i++) {
		const char *k = p->keybuf[i].s;
		where_t wk = {"unique", k, NULL, NULL, 0};
		bool ok = (k[0] >= 'a' && k[0] <= 'z') || (k[0] >= 'A' && k[0] <= 'Z');
		for (const char *c = k; *c != '\0' && ok; c++)
			ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			     (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' ||
			     *c == '.';
		if (!ok || p->keybuf[i].len > 64)
			fail(L, p,
			     "%s: namespace names are 1-64 of [A-Za-z0-9_.-] starting "
			     "with a letter",
			     where_fmt(&wk, wb, sizeof(wb)));
		if (i > 0 && ascii_ieq(p->keybuf[i - 1].s, k))
			fail(L, p, "unique.%s and %s differ only in case",
			     p->keybuf[i - 1].s, where_fmt(&wk, wb, sizeof(wb)));
		unique_acc_t acc = {NULL, &wk, 0};
		if (keep) {
			acc.u = &p->out->unique[p->out->nunique++];
			acc.u->name = dup_or_fail(L, p, k);
		}
		lua_pushlstring(L, k, p->keybuf[i].len);
		if (lua_rawget(L, idx) == LUA_TTABLE && keep) {
			size_t m = lua_rawlen(L, -1);
			if (m > MAX_CANDIDATES)
				fail(L, p, "%s has more than %d candidates",
				     where_fmt(&wk, wb, sizeof(wb)), MAX_CANDIDATES);
			if (m > 0 && (acc.u->values = malloc(m * sizeof(char *))) == NULL)
				nomem(L, p);
		}
		parse_name_list(L, p, -1, &wk, add_candidate, &acc);
		if (acc.count == 0)
			fail(L, p, "%s has no candidates",
			     where_fmt(&wk, wb, sizeof(wb)));
		lua_pop(L, 1);
	}
	if (keep && p->out->nunique > 1)
		qsort(p->out->unique, p->out->nunique, sizeof(*p->out->unique),
		      cmp_cstr); /* name is the first member */
}

static int32_t timing_days(lua_State *L, policy_t *p, int idx, const char *field,
                           int32_t max, int32_t def)
{
	rawfield(L, idx, field);
	int32_t v = def;
	if (!lua_isnil(L, -1)) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 ||
		    lua_tointeger(L, -1) > max)
			fail(L, p, "timing.%s must be a whole number of days in 0..%d",
			     field, (int)max);
		v = (int32_t)lua_tointeger(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

static bool timing_bool(lua_State *L, policy_t *p, int idx, const char *field, bool def)
{
	rawfield(L, idx, field);
	bool v = def;
	if (!lua_isnil(L, -1)) {
		if (!lua_isboolean(L, -1))
			fail(L, p, "timing.%s is a %s; expected true or false", field,
			     luaL_typename(L, -1));
		v = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

/* Which of the choices (NULL-terminated) timing.field is; def when nil. */
static int timing_choice(lua_State *L, policy_t *p, int idx, const char *field,
                         const char *const *choices, int def)
{
	rawfield(L, idx, field);
	int v = def;
	if (!lua_isnil(L, -1)) {
		const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
		v = -1;
		for (int i = 0; choices[i] != NULL; i++)
			if (strcmp(s, choices[i]) == 0)
				v = i;
		if (v < 0)
			fail(L, p, "timing.%s must be \"%s\" or \"%s\"", field,
			     choices[0], choices[1]);
	}
	lua_pop(L, 1);
	return v;
}

static void parse_timing(lua_State *L, policy_t *p, int idx, bool keep)
{
	static const char *const known[] = {
	    "create_days_before_start", "enable",           "disable",
	    "delete_after_days",        "suspend_on_leave", "name_quarantine_days",
	    "reuse_name_after_delete",  "timezone",         NULL};
	static const char *const enable[] = {"start", "create", NULL};
	static const char *const disable[] = {"effective", "immediate", NULL};
	policy_timing_t t;
	int ty = lua_type(L, idx);
	idx = lua_absindex(L, idx);
	timing_default(&t);
	if (ty != LUA_TNIL) {
		if (ty != LUA_TTABLE)
			fail(L, p, "timing is a %s; expected a table",
			     luaL_typename(L, idx));
		where_t wt = {"timing", NULL, NULL, NULL, 0};
		check_known_keys(
		    L, p, idx, known, &wt,
		    "create_days_before_start, enable, disable, "
		    "delete_after_days, suspend_on_leave, "
		    "name_quarantine_days, reuse_name_after_delete, timezone");
		t.create_days_before_start =
		    timing_days(L, p, idx, "create_days_before_start", 3650, 0);
		t.enable = (policy_enable_t)timing_choice(L, p, idx, "enable", enable, 0);
		t.disable =
		    (policy_disable_t)timing_choice(L, p, idx, "disable", disable, 0);
		rawfield(L, idx, "delete_after_days");
		bool never =
		    lua_isnil(L, -1) || (lua_isboolean(L, -1) && !lua_toboolean(L, -1));
		lua_pop(L, 1);
		t.delete_after_days =
		    never ? POLICY_NEVER
		          : timing_days(L, p, idx, "delete_after_days", 36500, 0);
		t.suspend_on_leave = timing_bool(L, p, idx, "suspend_on_leave", true);
		t.name_quarantine_days =
		    timing_days(L, p, idx, "name_quarantine_days", 36500, 0);
		t.reuse_name_after_delete =
		    timing_bool(L, p, idx, "reuse_name_after_delete", false);
		rawfield(L, idx, "timezone");
		if (!lua_isnil(L, -1)) {
			size_t len;
			const char *z = lua_type(L, -1) == LUA_TSTRING
			                    ? lua_tolstring(L, -1, &len)
			                    : NULL;
			bool ok = z != NULL && len > 0 && len <= 64;
			for (size_t i = 0; ok && i < len; i++)
				ok = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR"
				            "STUVWXYZ"
				            "0123456789_+-/",
				            z[i]) != NULL;
			if (!ok)
				fail(L, p,
				     "timing.timezone must be an IANA zone name such as "
				     "\"Europe/Oslo\"");
			t.timezone = (char *)z; /* copied below */
		}
		lua_pop(L, 1); /* z stays valid: it is in the table */
	}
	if (!keep)
		return;
	const char *zone = t.timezone != NULL ? t.timezone : "UTC";
	t.timezone = NULL;
	p->out->timing = t;
	p->out->timing.timezone = dup_or_fail(L, p, zone);
}

static void parse_result(lua_State *L, policy_t *p, int idx)
{
	static const char *const known[] = {"targets", "unique", "manager_id", "timing",
	                                    NULL};
	char num[32];
	bool keep_all = p->want < 0;
	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		fail(L, p, "identity() returned a %s; expected a table with targets",
		     luaL_typename(L, idx));
	where_t wr = {"the table", NULL, NULL, NULL, 0};
	check_known_keys(L, p, idx, known, &wr, "targets, unique, manager_id, timing");
	if (keep_all) {
		p->out->targets = calloc(p->ntargets, sizeof(*p->out->targets));
		if (p->out->targets == NULL)
			nomem(L, p);
		p->out->ntargets = p->ntargets;
		for (size_t i = 0; i < p->ntargets; i++)
			p->out->targets[i].name = dup_or_fail(L, p, p->targets[i]);
	}
	rawfield(L, idx, "targets");
	parse_targets(L, p, -1);
	lua_pop(L, 1);

	/* Unique lists are kept for one target too: the fold claims them. */
	rawfield(L, idx, "unique");
	parse_unique(L, p, -1, true);
	lua_pop(L, 1);

	rawfield(L, idx, "manager_id");
	where_t wm = {"manager_id", NULL, NULL, NULL, 0};
	const char *m = scalar(L, p, -1, num, &wm);
	if (m != NULL)
		p->out->manager_id = dup_or_fail(L, p, m);
	lua_pop(L, 1);

	/* Timing is kept for one target too: the lifecycle needs it. */
	rawfield(L, idx, "timing");
	parse_timing(L, p, -1, true);
	lua_pop(L, 1);
}

/* ---- evaluation ---------------------------------------------------------- */

static int eval_body(lua_State *L)
{
	policy_t *p = lua_touserdata(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->identity_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->emp_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->ctx_ref);
	lua_call(L, 2, 1);
	/* The result is read raw; a metatable on it would make what the
	 * policy sees (through __index) differ from what we read. */
	if (lua_type(L, -1) == LUA_TTABLE && lua_getmetatable(L, -1))
		fail(L, p, "the returned table has a metatable; return plain tables");
	parse_result(L, p, -1);
	return 0;
}

/* Builds err after a failed protected call (message at the top). */
static int call_error(policy_t *p, int status, const char *employee_id, const char *what,
                      id_err_t *err)
{
	lua_State *L = p->L;
	const char *who = employee_id != NULL ? "employee " : "";
	const char *id = employee_id != NULL ? employee_id : "";
	const char *sep = employee_id != NULL ? ": " : "";
	if (p->exceeded == BUDGET_INSTRUCTIONS)
		return id_err_set(
		    err, ID_EINVALID,
		    "%s%s%spolicy %s: instruction budget of %llu exceeded%s", who, id,
		    sep, p->where, (unsigned long long)p->limits.max_instructions, what);
	if (p->exceeded == BUDGET_MEMORY)
		return id_err_set(
		    err, ID_EINVALID,
		    "%s%s%spolicy %s: memory budget of %zu bytes exceeded%s", who, id,
		    sep, p->where, p->limits.max_memory, what);
	if (p->oom || status == LUA_ERRMEM)
		return id_err_set(err, ID_ENOMEM, "%s%s%spolicy %s: out of memory", who,
		                  id, sep, p->name);
	const char *msg = lua_tostring(L, -1);
	return id_err_set(err, ID_EINVALID, "%s%s%spolicy %s", who, id, sep,
	                  msg != NULL ? msg : "error without a message");
}

/* Runs identity() for in; want < 0 fills out completely, else only the
 * target want goes to want_out (and out->manager_id). */
static int run_eval(policy_t *p, const policy_input_t *in, policy_output_t *out, int want,
                    policy_target_t *want_out, id_err_t *err)
{
	lua_State *L = p->L;
	if (in == NULL || in->employee_id == NULL || in->employee_id[0] == '\0')
		return id_err_set(err, ID_EINVALID, "policy %s: no employee id", p->name);
	if ((unsigned)in->state >= LC_STATE_COUNT)
		return id_err_set(err, ID_EINVALID,
		                  "employee %s: lifecycle state %d unknown",
		                  in->employee_id, (int)in->state);
	policy_output_fini(out);
	p->in = in;
	p->out = out;
	p->want = want;
	p->want_out = want_out;
	p->nreads = 0;
	p->reads_list = NULL;
	p->granted_built = false;

	int top = lua_gettop(L);
	lua_pushcfunction(L, msgh);
	lua_pushcfunction(L, eval_body);
	lua_pushlightuserdata(L, p);
	budget_begin(p);
	int status = lua_pcall(L, 1, 0, top + 1);
	budget_end(p);
	int rc = 0;
	if (status != LUA_OK)
		rc = call_error(p, status, in->employee_id, "", err);
	lua_settop(L, top);
	if (p->cache_used)
		cache_clear(L, p);
	if (p->granted_built) {
		lua_pushboolean(L, 0);
		lua_rawseti(L, LUA_REGISTRYINDEX, p->granted_ref);
	}
	p->in = NULL;
	p->out = NULL;
	p->want_out = NULL;
	if (rc != 0)
		policy_output_fini(out);
	return rc;
}

int policy_evaluate(policy_t *p, const policy_input_t *in, policy_output_t *out,
                    id_err_t *err)
{
	return run_eval(p, in, out, -1, NULL, err);
}

/* ---- loading ------------------------------------------------------------- */

static int setup_body(lua_State *L)
{
	policy_t *p = lua_touserdata(L, 1);
	policy_lib_push_env(L);
	p->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	p->emp_ref = make_proxy(L, p, emp_index, emp_pairs, "emp");
	p->ctx_ref = make_proxy(L, p, ctx_index, NULL, "ctx");
	lua_newtable(L);
	p->intern_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_newtable(L);
	p->cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushboolean(L, 0);
	p->granted_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_newtable(L);
	policy_lib_freeze(L, -1, "ctx.granted");
	p->empty_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

static void module_fail(lua_State *L, policy_t *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

static void module_fail(lua_State *L, policy_t *p, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lua_pushfstring(L, "%s: %s", p->short_src, msg);
	lua_error(L);
	abort(); /* not reached */
}

static void read_targets(lua_State *L, policy_t *p, int idx)
{
	if (lua_type(L, idx) != LUA_TTABLE)
		module_fail(L, p,
		            "targets is a %s; declare the targets as a list, e.g. "
		            "targets = { \"ldap\", \"ad\", \"scim\" }",
		            luaL_typename(L, idx));
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
	if (n < 1 || n > MAX_TARGETS)
		module_fail(L, p, "targets must list 1 to %d target names", MAX_TARGETS);
	for (lua_Integer i = 1; i <= n; i++) {
		if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
			module_fail(L, p, "targets[%d] is not a string", (int)i);
		const char *s = lua_tostring(L, -1);
		bool ok = s[0] >= 'a' && s[0] <= 'z' && strlen(s) <= 32;
		for (const char *c = s; *c != '\0' && ok; c++)
			ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
			     *c == '_' || *c == '-';
		if (!ok)
			module_fail(L, p,
			            "targets[%d] \"%s\": target names are 1-32 of "
			            "[a-z0-9_-] starting with a letter",
			            (int)i, s);
		for (size_t k = 0; k < p->ntargets; k++)
			if (strcmp(p->targets[k], s) == 0)
				module_fail(L, p, "target \"%s\" is declared twice", s);
		p->targets[p->ntargets] = dup_or_fail(L, p, s);
		p->ntargets++;
		lua_pop(L, 1);
	}
}

static void read_sources(lua_State *L, policy_t *p, int idx)
{
	char path[PATH_MAX_CHARS];
	if (lua_isnil(L, idx))
		return;
	if (lua_type(L, idx) != LUA_TTABLE)
		module_fail(L, p,
		            "sources is a %s; expected { output = { \"hr_key\", ... } }",
		            luaL_typename(L, idx));
	idx = lua_absindex(L, idx);
	where_t w = {"sources", NULL, NULL, NULL, 0};
	size_t n = collect_keys(L, p, idx, &w);
	for (size_t i = 0; i < n; i++) {
		const char *k = p->keybuf[i].s;
		snprintf(path, sizeof(path), "sources[\"%s\"]", k);
		lua_pushlstring(L, k, p->keybuf[i].len);
		if (lua_rawget(L, idx) != LUA_TTABLE)
			module_fail(L, p, "%s is a %s; expected a list of HR keys", path,
			            luaL_typename(L, -1));
		lua_Integer m = (lua_Integer)lua_rawlen(L, -1);
		const char **items =
		    lua_newuserdatauv(L, (size_t)(m + 1) * sizeof(*items), 0);
		for (lua_Integer j = 1; j <= m; j++) {
			if (lua_rawgeti(L, -2, j) != LUA_TSTRING)
				module_fail(L, p, "%s[%d] is not a string", path, (int)j);
			const char *s = lua_tostring(L, -1);
			if (s[0] == '\0' ||
			    (s[0] == '@' && strcmp(s, MAPPING_SRC_EMPLOYEE_ID) != 0 &&
			     strcmp(s, MAPPING_SRC_LIFECYCLE) != 0))
				module_fail(
				    L, p,
				    "%s[%d] \"%s\": expected an HR key, \"%s\" or \"%s\"",
				    path, (int)j, s, MAPPING_SRC_EMPLOYEE_ID,
				    MAPPING_SRC_LIFECYCLE);
			if ((items[j - 1] = intern_key(p, s)) == NULL)
				nomem(L, p);
			lua_pop(L, 1);
		}
		const char *const *list = intern_list(p, items, (size_t)m);
		if (list == NULL || id_hmap_put(&p->sources, k, (void *)list) != 0)
			nomem(L, p);
		lua_pop(L, 2);
	}
}

/* Reads the module (the chunk's result at 2, or the globals) and freezes
 * the globals. */
static int module_body(lua_State *L)
{
	static const char *const known[] = {"targets", "identity", "sources", NULL};
	policy_t *p = lua_touserdata(L, 1);
	int mod = 2;
	p->loading = true; /* reset by policy_create */
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->env_ref);
	int env = lua_gettop(L);
	if (lua_type(L, 2) == LUA_TTABLE) {
		where_t w = {"the returned table", NULL, NULL, NULL, 0};
		check_known_keys(L, p, 2, known, &w, "targets, identity, sources");
	} else if (lua_isnil(L, 2)) {
		mod = env; /* the global form: targets and identity are globals */
	} else {
		module_fail(L, p,
		            "the file returns a %s; return a table { targets = ..., "
		            "identity = function(emp, ctx) ... end }",
		            luaL_typename(L, 2));
	}
	rawfield(L, mod, "targets");
	read_targets(L, p, -1);
	lua_pop(L, 1);
	rawfield(L, mod, "identity");
	if (lua_type(L, -1) != LUA_TFUNCTION)
		module_fail(L, p,
		            "identity is a %s; define identity = function(emp, ctx) "
		            "... end",
		            luaL_typename(L, -1));
	lua_Debug ar;
	lua_pushvalue(L, -1);
	lua_getinfo(L, ">S", &ar);
	p->identity_line = ar.linedefined;
	p->identity_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	rawfield(L, mod, "sources");
	read_sources(L, p, -1);
	lua_pop(L, 1);

	/* From here on, nothing an evaluation does can change what the next
	 * one sees through a global or the module table. */
	policy_lib_freeze(L, env, "global");
	if (mod != env)
		policy_lib_freeze(L, mod, "policy");
	return 0;
}

policy_t *policy_create(const char *name, const char *src, size_t len,
                        const policy_limits_t *limits, id_err_t *err)
{
	policy_t *p = NULL;
	lua_State *L;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int status;

	if (name == NULL || name[0] == '\0' || src == NULL) {
		id_err_set(err, ID_EINVALID,
		           "policy: a name and the source are required");
		return NULL;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL)
		goto nomem;
	p->identity_ref = p->emp_ref = p->ctx_ref = LUA_NOREF;
	p->mem_limit = SIZE_MAX;
	id_hmap_init(&p->keys);
	id_hmap_init(&p->lists);
	id_hmap_init(&p->sources);
	id_buf_init(&p->sb.scratch);
	p->limits.max_instructions = limits && limits->max_instructions
	                                 ? limits->max_instructions
	                                 : POLICY_DEFAULT_MAX_INSTRUCTIONS;
	p->limits.max_memory =
	    limits && limits->max_memory ? limits->max_memory : POLICY_DEFAULT_MAX_MEMORY;
	if ((p->name = strdup(name)) == NULL ||
	    (p->chunkname = malloc(strlen(name) + 2)) == NULL ||
	    (p->targets = calloc(MAX_TARGETS, sizeof(*p->targets))) == NULL)
		goto nomem;
	sprintf(p->chunkname, "@%s", name);
	snprintf(p->short_src, sizeof(p->short_src), "%s", name);

	if (EVP_Digest(src, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		id_err_set(err, ID_EINVALID, "policy %s: SHA-256 failed", name);
		goto fail;
	}
	for (unsigned i = 0; i < 32; i++)
		snprintf(p->sha256 + 2 * i, 3, "%02x", md[i]);
	snprintf(p->version, sizeof(p->version), "%s%.*s", POLICY_VERSION_PREFIX,
	         VERSION_HEX, p->sha256);

	if ((L = p->L = lua_newstate(policy_alloc, p)) == NULL)
		goto nomem;
	*(policy_sandbox_t **)lua_getextraspace(L) = &p->sb;
	lua_pushcfunction(L, setup_body);
	lua_pushlightuserdata(L, p);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK)
		goto nomem; /* only allocations can fail there */

	status = luaL_loadbufferx(L, src, len, p->chunkname, "t");
	if (status != LUA_OK) {
		const char *msg = lua_tostring(L, -1);
		size_t sl = strlen(p->short_src);
		if (status == LUA_ERRMEM)
			goto nomem;
		if (msg != NULL && strncmp(msg, p->short_src, sl) == 0 && msg[sl] == ':')
			id_err_set(err, ID_EPARSE, "policy %s", msg);
		else
			id_err_set(err, ID_EPARSE, "policy %s: %s", p->short_src,
			           msg ? msg : "cannot load");
		goto fail;
	}
	lua_Debug ar;
	lua_pushvalue(L, -1);
	lua_getinfo(L, ">S", &ar);
	snprintf(p->short_src, sizeof(p->short_src), "%s", ar.short_src);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->env_ref);
	lua_setupvalue(L, -2, 1); /* _ENV of the main chunk */

	/* The top level runs under the same budgets as an evaluation. */
	lua_pushcfunction(L, msgh);
	lua_insert(L, -2);
	budget_begin(p);
	status = lua_pcall(L, 0, 1, -2);
	budget_end(p);
	if (status != LUA_OK) {
		call_error(p, status, NULL, " while loading", err);
		goto fail;
	}
	lua_pushcfunction(L, module_body);
	lua_insert(L, -2);
	lua_pushlightuserdata(L, p);
	lua_insert(L, -2);
	status = lua_pcall(L, 2, 0, -4);
	p->loading = false;
	if (status != LUA_OK) {
		call_error(p, status, NULL, "", err);
		goto fail;
	}
	lua_settop(L, 0);
	/* Every evaluation leaves only short-lived garbage (the result tables
	 * and strings): the generational collector handles that far more
	 * cheaply than incremental sweeps over the whole heap. */
	lua_gc(L, LUA_GCGEN, 0, 0);
	return p;
nomem:
	id_err_set(err, ID_ENOMEM, "policy %s: out of memory", name ? name : "");
fail:
	policy_destroy(p);
	return NULL;
}

policy_t *policy_load_file(const char *path, const policy_limits_t *limits, id_err_t *err)
{
	FILE *f = NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	policy_t *p = NULL;
	if ((f = fopen(path, "rb")) == NULL) {
		id_err_set(err, ID_EIO, "policy %s: cannot open: %s", path,
		           strerror(errno));
		goto out;
	}
	for (;;) {
		if (len == cap) {
			if (cap >= MAX_FILE_BYTES) {
				id_err_set(
				    err, ID_EINVALID,
				    "policy %s: larger than %u bytes; a policy is code, "
				    "not data",
				    path, MAX_FILE_BYTES);
				goto out;
			}
			cap = cap ? cap * 2 : 16384;
			char *n = realloc(buf, cap);
			if (n == NULL) {
				id_err_set(err, ID_ENOMEM, "policy %s: out of memory",
				           path);
				goto out;
			}
			buf = n;
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
	}
	if (ferror(f)) {
		id_err_set(err, ID_EIO, "policy %s: read error", path);
		goto out;
	}
	p = policy_create(path, buf ? buf : "", len, limits, err);
out:
	if (f != NULL)
		fclose(f);
	free(buf);
	return p;
}

void policy_destroy(policy_t *p)
{
	if (p == NULL)
		return;
	if (p->L != NULL)
		lua_close(p->L);
	for (size_t i = 0; i < p->keys.cap; i++)
		if (p->keys.slots[i].key != NULL)
			free(p->keys.slots[i].value);
	for (size_t i = 0; i < p->lists.cap; i++)
		if (p->lists.slots[i].key != NULL)
			free(p->lists.slots[i].value);
	id_hmap_fini(&p->keys);
	id_hmap_fini(&p->lists);
	id_hmap_fini(&p->sources); /* values are lists owned by p->lists */
	id_buf_fini(&p->sb.scratch);
	if (p->targets != NULL)
		for (size_t i = 0; i < p->ntargets; i++)
			free(p->targets[i]);
	free(p->targets);
	free(p->reads);
	free(p->keybuf);
	free(p->name);
	free(p->chunkname);
	free(p);
}

const char *policy_version(const policy_t *p)
{
	return p->version;
}

const char *policy_sha256(const policy_t *p)
{
	return p->sha256;
}

const char *policy_name(const policy_t *p)
{
	return p->name;
}

const char *const *policy_targets(const policy_t *p, size_t *n)
{
	*n = p->ntargets;
	return (const char *const *)p->targets;
}

void policy_set_print(policy_t *p, void (*fn)(void *ctx, const char *line), void *ctx)
{
	p->sb.print = fn;
	p->sb.print_ctx = ctx;
}

const char *policy_last_traceback(const policy_t *p)
{
	return p->traceback;
}

/* ---- the mapping adapter ------------------------------------------------- */

typedef struct policy_mapping {
	policy_t *p;
	int target;
	policy_output_t out;
} policy_mapping_t;

/* The HR keys behind output in target: declared, else all keys read. */
static const char *const *sources_for(policy_t *p, const char *target, const char *output)
{
	char key[PATH_MAX_CHARS];
	const char *const *list = NULL;
	size_t tl = strlen(target), ol = strlen(output);
	if (tl + 1 + ol < sizeof(key)) { /* names are short; else no specific entry */
		memcpy(key, target, tl);
		key[tl] = '.';
		memcpy(key + tl + 1, output, ol + 1);
		list = id_hmap_get(&p->sources, key);
	}
	if (list != NULL || (list = id_hmap_get(&p->sources, output)) != NULL)
		return list;
	if (p->reads_list == NULL)
		p->reads_list = intern_list(p, p->reads, p->nreads);
	return p->reads_list;
}

/* Sets the cause of output with rule, and its trace entry. */
static int cause(policy_t *p, const char *target, desired_identity_t *out,
                 mapping_trace_t *trace, const char *output, const char *rule,
                 const char *const *src)
{
	if (desired_identity_set_cause(out, output, NULL, rule) != 0)
		return ID_ENOMEM;
	if (trace == NULL)
		return 0;
	if (src == NULL)
		src = sources_for(p, target, output);
	const char *name = output[0] == '@' ? output : intern_key(p, output);
	if (src == NULL || name == NULL)
		return 0; /* untraced: the fold attributes it to the event */
	return mapping_trace_add(trace, name, src);
}

/* The policy's timing in the mapping's form. */
static void timing_export(const policy_timing_t *t, mapping_timing_t *m)
{
	m->create_days_before_start = t->create_days_before_start;
	m->enable_at_create = t->enable == POLICY_ENABLE_AT_CREATE;
	m->disable_immediately = t->disable == POLICY_DISABLE_IMMEDIATELY;
	m->delete_after_days =
	    t->delete_after_days == POLICY_NEVER ? MAPPING_NEVER : t->delete_after_days;
	m->suspend_on_leave = t->suspend_on_leave;
	m->name_quarantine_days = t->name_quarantine_days;
	m->reuse_name_after_delete = t->reuse_name_after_delete;
	snprintf(m->timezone, sizeof(m->timezone), "%s",
	         t->timezone != NULL ? t->timezone : "UTC");
}

/* Moves the candidate lists of o (sorted by name) into u (found empty):
 * the two structs hold the same fields.  0 or ID_ENOMEM. */
static int unique_export(policy_output_t *o, mapping_uniques_t *u)
{
	size_t n = o->nunique;
	if (n == 0)
		return 0;
	mapping_unique_t *items = calloc(n, sizeof(*items));
	if (items == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		items[i].ns = o->unique[i].name;
		items[i].values = o->unique[i].values;
		items[i].nvalues = o->unique[i].nvalues;
	}
	free(o->unique);
	o->unique = NULL;
	o->nunique = 0;
	u->items = items;
	u->len = n;
	return 0;
}

/* Moves a parsed target section into a section of out (container ""
 * when the policy gives none) and records its causes under
 * "<target>.<output>".  0 or ID_ENOMEM. */
static int section_export(policy_t *p, policy_target_t *pt, desired_identity_t *out,
                          mapping_trace_t *trace)
{
	char name[PATH_MAX_CHARS + 40], rule[PATH_MAX_CHARS + 40];
	target_identity_t *t = desired_identity_add_target(out, pt->name);
	if (t == NULL)
		return ID_ENOMEM;
	t->in_scope = pt->in_scope;
	id_attrs_fini(&t->attributes);
	t->attributes = pt->attributes;
	id_attrs_init(&pt->attributes);
	t->groups = pt->groups;
	t->ngroups = pt->ngroups;
	pt->groups = NULL;
	pt->ngroups = 0;
	t->container = pt->container != NULL ? pt->container : strdup("");
	pt->container = NULL;
	if (t->container == NULL)
		return ID_ENOMEM;
	if (!t->in_scope)
		return 0;
	const char *tn = t->name;
	for (size_t i = 0; i < t->attributes.len; i++) {
		const char *a = t->attributes.items[i].key;
		snprintf(name, sizeof(name), "%s.%s", tn, a);
		snprintf(rule, sizeof(rule), "policy:%s.%s", tn, a);
		if (cause(p, tn, out, trace, name, rule, sources_for(p, tn, a)) != 0)
			return ID_ENOMEM;
	}
	snprintf(name, sizeof(name), "%s.%s", tn, MAPPING_CAUSE_GROUPS);
	snprintf(rule, sizeof(rule), "policy:%s.groups", tn);
	if (cause(p, tn, out, trace, name, rule,
	          sources_for(p, tn, MAPPING_CAUSE_GROUPS)) != 0)
		return ID_ENOMEM;
	snprintf(name, sizeof(name), "%s.%s", tn, MAPPING_CAUSE_CONTAINER);
	snprintf(rule, sizeof(rule), "policy:%s.container", tn);
	if (t->container[0] != '\0' &&
	    cause(p, tn, out, trace, name, rule,
	          sources_for(p, tn, MAPPING_CAUSE_CONTAINER)) != 0)
		return ID_ENOMEM;
	return 0;
}

static int pm_apply(void *impl, const id_attrs_t *hr, lifecycle_state_t state,
                    const mapping_context_t *ctx, desired_identity_t *out,
                    mapping_trace_t *trace, id_err_t *err)
{
	policy_mapping_t *pm = impl;
	policy_t *p = pm->p;
	const char *tn = p->targets[pm->target];
	policy_input_t in = {out->employee_id,
	                     hr,
	                     state,
	                     out->effective_at,
	                     ctx != NULL ? ctx->event : NULL,
	                     ctx != NULL ? ctx->reason : NULL,
	                     ctx != NULL ? ctx->granted : NULL};
	char rule[PATH_MAX_CHARS + 32];
	int rc;

	if ((rc = run_eval(p, &in, &pm->out, -1, NULL, err)) != 0)
		goto out;
	if (ctx != NULL && ctx->timing != NULL)
		timing_export(&pm->out.timing, ctx->timing);
	if (ctx != NULL && ctx->unique != NULL &&
	    unique_export(&pm->out, ctx->unique) != 0)
		goto nomem;
	/* The top level repeats the primary target's section (in scope). */
	const policy_target_t *pt = &pm->out.targets[pm->target];
	if (pt->in_scope) {
		if (id_attrs_copy(&out->attributes, &pt->attributes) != 0 ||
		    (pt->container != NULL &&
		     (out->container = strdup(pt->container)) == NULL))
			goto nomem;
		for (size_t i = 0; i < pt->ngroups; i++)
			if (desired_identity_add_group(out, pt->groups[i]) != 0)
				goto nomem;
	}
	out->manager_id = pm->out.manager_id;
	pm->out.manager_id = NULL;

	/* "policy:<target>." once, then each attribute name after it
	 * (names are at most 256 characters, so it always fits). */
	size_t pre = (size_t)snprintf(rule, sizeof(rule), "policy:%s.", tn);
	for (size_t i = 0; i < out->attributes.len; i++) {
		const char *a = out->attributes.items[i].key;
		memcpy(rule + pre, a, strlen(a) + 1);
		if ((rc = cause(p, tn, out, trace, a, rule, NULL)) != 0)
			goto nomem;
	}
	snprintf(rule, sizeof(rule), "policy:%s.groups", tn);
	if (pt->in_scope &&
	    (rc = cause(p, tn, out, trace, MAPPING_CAUSE_GROUPS, rule, NULL)) != 0)
		goto nomem;
	snprintf(rule, sizeof(rule), "policy:%s.container", tn);
	if (out->container != NULL &&
	    (rc = cause(p, tn, out, trace, MAPPING_CAUSE_CONTAINER, rule, NULL)) != 0)
		goto nomem;
	if (out->container == NULL && (out->container = strdup("")) == NULL)
		goto nomem;
	if (out->manager_id != NULL &&
	    (rc = cause(p, tn, out, trace, MAPPING_CAUSE_MANAGER, "policy:manager_id",
	                NULL)) != 0)
		goto nomem;
	if ((rc = cause(p, tn, out, trace, MAPPING_CAUSE_STATE, "policy:state",
	                src_state)) != 0)
		goto nomem;
	/* Then every declared target's own section. */
	for (size_t i = 0; i < pm->out.ntargets; i++)
		if (section_export(p, &pm->out.targets[i], out, trace) != 0)
			goto nomem;
	rc = 0;
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "employee %s: out of memory", out->employee_id);
out:
	policy_output_fini(&pm->out);
	return rc;
}

static void pm_destroy(void *impl)
{
	policy_mapping_t *pm = impl;
	if (pm == NULL)
		return;
	policy_output_fini(&pm->out);
	free(pm);
}

static const mapping_ops_t policy_mapping_ops = {pm_apply, pm_destroy};

mapping_t *policy_mapping_create(policy_t *p, const char *target, id_err_t *err)
{
	int found = -1;
	if (p == NULL || target == NULL) {
		id_err_set(err, ID_EINVALID,
		           "policy mapping: a policy and a target are required");
		return NULL;
	}
	for (size_t i = 0; i < p->ntargets; i++)
		if (strcmp(p->targets[i], target) == 0)
			found = (int)i;
	if (found < 0) {
		id_err_set(err, ID_EINVALID, "policy %s: target \"%s\" is not declared",
		           p->name, target);
		return NULL;
	}
	policy_mapping_t *pm = calloc(1, sizeof(*pm));
	if (pm == NULL) {
		id_err_set(err, ID_ENOMEM, "policy mapping: out of memory");
		return NULL;
	}
	pm->p = p;
	pm->target = found;
	policy_output_init(&pm->out);
	return mapping_create(p->version, &policy_mapping_ops, pm, err);
}
