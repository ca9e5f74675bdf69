/*
 * policy_lib.c — the sandboxed globals of a policy and its helper library
 * (see policy_lib.h; semantics in processors/README.md, "Policy helpers").
 *
 * Every helper is written in C: it is faster than Lua, its errors point at
 * the policy line that called it (luaL_error reports the caller), and it
 * cannot be redefined by the policy.  String helpers are nil-safe: nil in
 * gives nil out, so `lower(emp.title)` works for an employee without a
 * title.  Strings must be valid UTF-8 without NUL bytes wherever characters
 * matter; anything else is an error naming the helper.
 *
 * Dates are integers: milliseconds since the Unix epoch, UTC, like ctx.now.
 * Helpers that take a date also accept a "YYYY-MM-DD" / ISO-8601 string.
 *
 * Invariant: nothing here reads a clock, the environment or a file, and no
 * result depends on memory addresses or hash order.
 */
#include "processors/policy_lib.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "processors/ascii_fold.h"
#include "processors/mapping.h"
#include "processors/policy.h"

#define DAY_MS        86400000LL
#define SAM_MAX       20 /* sAMAccountName: at most 20 characters */
#define MAX_SUFFIXES  1000
#define LIB_QUOTE_MAX 48 /* how much of a bad value errors quote */

/* ---- argument helpers ---------------------------------------------------- */

/*
 * The string at idx, or NULL for nil/none.  Numbers are converted (in the
 * stack slot, which is an argument, never a table field).  Other types and
 * strings with NUL bytes are errors naming fn.
 */
static const char *opt_str(lua_State *L, int idx, size_t *len, const char *fn)
{
	size_t n = 0;
	const char *s;
	switch (lua_type(L, idx)) {
	case LUA_TNONE:
	case LUA_TNIL:
		if (len != NULL)
			*len = 0;
		return NULL;
	case LUA_TSTRING:
	case LUA_TNUMBER:
		s = lua_tolstring(L, idx, &n);
		break;
	default:
		luaL_error(L, "%s: argument %d: expected a string, got %s", fn, idx,
		           luaL_typename(L, idx));
		return NULL;
	}
	if (strlen(s) != n)
		luaL_error(L, "%s: argument %d contains a NUL byte", fn, idx);
	if (len != NULL)
		*len = n;
	return s;
}

static const char *check_str(lua_State *L, int idx, size_t *len, const char *fn)
{
	const char *s = opt_str(L, idx, len, fn);
	if (s == NULL)
		luaL_error(L, "%s: argument %d: expected a string, got nil", fn, idx);
	return s;
}

static lua_Integer check_int(lua_State *L, int idx, const char *fn)
{
	int ok = 0;
	lua_Integer v = lua_tointegerx(L, idx, &ok);
	if (!ok)
		luaL_error(L, "%s: argument %d: expected an integer, got %s", fn, idx,
		           lua_type(L, idx) == LUA_TNUMBER ? "a fraction"
		                                           : luaL_typename(L, idx));
	return v;
}

static lua_Integer opt_int(lua_State *L, int idx, lua_Integer def, const char *fn)
{
	if (lua_isnoneornil(L, idx))
		return def;
	return check_int(L, idx, fn);
}

/* Decodes the next code point or raises an error naming fn. */
static uint32_t next_cp(lua_State *L, const char *s, size_t len, size_t *pos,
                        const char *fn)
{
	uint32_t cp = 0;
	if (ascii_fold_utf8_next(s, len, pos, &cp) != 0)
		luaL_error(L, "%s: invalid UTF-8 at byte %d", fn, (int)*pos);
	return cp;
}

/* ---- case mapping ---------------------------------------------------------
 * Simple one-to-one case mapping for ASCII, Latin-1, Latin Extended-A,
 * Latin Extended Additional, basic Greek and Cyrillic: the scripts names in
 * an HR system are written in.  Letters without a one-to-one mapping (ß)
 * stay as they are. */

static uint32_t cp_lower(uint32_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c + 32;
	if (c < 0xC0)
		return c;
	if (c <= 0xDE)
		return c == 0xD7 ? c : c + 32;
	if (c >= 0x100 && c <= 0x137)
		return c == 0x130 ? 'i' : (c | 1);
	if (c >= 0x139 && c <= 0x148)
		return (c & 1) ? c + 1 : c;
	if (c >= 0x14A && c <= 0x177)
		return c | 1;
	if (c == 0x178)
		return 0xFF;
	if (c >= 0x179 && c <= 0x17E)
		return (c & 1) ? c + 1 : c;
	if (c == 0x386)
		return 0x3AC;
	if (c >= 0x388 && c <= 0x38A)
		return c + 37;
	if (c == 0x38C)
		return 0x3CC;
	if (c == 0x38E || c == 0x38F)
		return c + 63;
	if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2)
		return c + 32;
	if (c >= 0x400 && c <= 0x40F)
		return c + 80;
	if (c >= 0x410 && c <= 0x42F)
		return c + 32;
	if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF))
		return c | 1;
	return c;
}

static uint32_t cp_upper(uint32_t c)
{
	if (c >= 'a' && c <= 'z')
		return c - 32;
	if (c < 0xE0)
		return c;
	if (c <= 0xFE)
		return c == 0xF7 ? c : c - 32;
	if (c == 0xFF)
		return 0x178;
	if (c >= 0x100 && c <= 0x137)
		return c == 0x131 ? 'I' : (c & ~1u);
	if (c >= 0x139 && c <= 0x148)
		return (c & 1) ? c : c - 1;
	if (c >= 0x14A && c <= 0x177)
		return c & ~1u;
	if (c >= 0x179 && c <= 0x17E)
		return (c & 1) ? c : c - 1;
	if (c == 0x3AC)
		return 0x386;
	if (c >= 0x3AD && c <= 0x3AF)
		return c - 37;
	if (c == 0x3CC)
		return 0x38C;
	if (c == 0x3CD || c == 0x3CE)
		return c - 63;
	if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2)
		return c - 32;
	if (c >= 0x430 && c <= 0x44F)
		return c - 32;
	if (c >= 0x450 && c <= 0x45F)
		return c - 80;
	if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF))
		return c & ~1u;
	return c;
}

static bool cp_is_letter(uint32_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= 0xC0 && c != 0xD7 && c != 0xF7 && c <= 0x24F) ||
	       (c >= 0x370 && c <= 0x52F) || (c >= 0x1E00 && c <= 0x1EFF);
}

typedef enum { CASE_LOWER, CASE_UPPER, CASE_PROPER } case_mode_t;

static int scratch_put_cp(id_buf_t *b, uint32_t cp)
{
	uint8_t u[4];
	size_t n;
	if (cp < 0x80) {
		return id_buf_append_u8(b, (uint8_t)cp);
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xC0 | (cp >> 6));
		u[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (uint8_t)(0xE0 | (cp >> 12));
		u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (uint8_t)(0xF0 | (cp >> 18));
		u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return id_buf_append(b, u, n);
}

static int case_map(lua_State *L, case_mode_t mode, const char *fn)
{
	policy_sandbox_t *sb = policy_sandbox_of(L);
	size_t len, pos = 0;
	const char *s = opt_str(L, 1, &len, fn);
	bool word_start = true;
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	id_buf_reset(&sb->scratch);
	if (id_buf_reserve(&sb->scratch, len + 1) != 0)
		return luaL_error(L, "%s: out of memory", fn);
	while (pos < len) {
		uint32_t cp;
		if ((unsigned char)s[pos] < 0x80) /* the common case, no decoding */
			cp = (unsigned char)s[pos++];
		else
			cp = next_cp(L, s, len, &pos, fn);
		bool letter = cp_is_letter(cp);
		if (mode == CASE_LOWER || (mode == CASE_PROPER && !word_start))
			cp = cp_lower(cp);
		else
			cp = cp_upper(cp);
		/* A word starts after anything that is not a letter or digit,
		 * so "o'brien-smith" becomes "O'Brien-Smith". */
		word_start = !(letter || (cp >= '0' && cp <= '9'));
		if (scratch_put_cp(&sb->scratch, cp) != 0)
			return luaL_error(L, "%s: out of memory", fn);
	}
	lua_pushlstring(L, len ? (char *)sb->scratch.data : "", sb->scratch.len);
	return 1;
}

static int lib_lower(lua_State *L)
{
	return case_map(L, CASE_LOWER, "lower");
}

static int lib_upper(lua_State *L)
{
	return case_map(L, CASE_UPPER, "upper");
}

static int lib_proper(lua_State *L)
{
	return case_map(L, CASE_PROPER, "proper");
}

/* ---- trim, fold, alnum, slug, initial ------------------------------------ */

static bool is_space_at(const char *s, size_t i, size_t len, size_t *w)
{
	unsigned char c = (unsigned char)s[i];
	if (c == ' ' || (c >= '\t' && c <= '\r')) {
		*w = 1;
		return true;
	}
	if (c == 0xC2 && i + 1 < len && (unsigned char)s[i + 1] == 0xA0) { /* NBSP */
		*w = 2;
		return true;
	}
	return false;
}

static int lib_trim(lua_State *L)
{
	size_t len, a = 0, w;
	const char *s = opt_str(L, 1, &len, "trim");
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	while (a < len && is_space_at(s, a, len, &w))
		a += w;
	size_t e = len;
	while (e > a) {
		if ((unsigned char)s[e - 1] <= ' ' && is_space_at(s, e - 1, len, &w))
			e--;
		else if (e - a >= 2 && is_space_at(s, e - 2, len, &w) && w == 2)
			e -= 2;
		else
			break;
	}
	lua_pushlstring(L, s + a, e - a);
	return 1;
}

typedef int (*fold_fn_t)(id_buf_t *, const char *, id_err_t *);

static int fold_with(lua_State *L, fold_fn_t f, const char *fn, bool nil_if_empty)
{
	policy_sandbox_t *sb = policy_sandbox_of(L);
	const char *s = opt_str(L, 1, NULL, fn);
	id_err_t err = {0};
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	id_buf_reset(&sb->scratch);
	int rc = f(&sb->scratch, s, &err);
	if (rc == ID_ENOMEM)
		return luaL_error(L, "%s: out of memory", fn);
	if (rc != 0)
		return luaL_error(L, "%s: %s", fn, err.msg);
	if (nil_if_empty && sb->scratch.len == 0)
		lua_pushnil(L);
	else
		lua_pushlstring(L, sb->scratch.len ? (char *)sb->scratch.data : "",
		                sb->scratch.len);
	return 1;
}

static int lib_fold(lua_State *L)
{
	return fold_with(L, ascii_fold_append, "fold", false);
}

static int lib_alnum(lua_State *L)
{
	return fold_with(L, ascii_fold_alnum_append, "alnum", true);
}

static int lib_slug(lua_State *L)
{
	return fold_with(L, ascii_fold_slug_append, "slug", true);
}

/*
 * initial(s): the first code point of s that folds to a letter or digit,
 * folded and lower-cased, all of it ("Æsa" → "ae").  nil when none.  This
 * is the "first letter" of the default mapping's uid.
 */
static int lib_initial(lua_State *L)
{
	size_t len, pos = 0;
	const char *s = opt_str(L, 1, &len, "initial");
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	while (pos < len) {
		uint32_t cp = next_cp(L, s, len, &pos, "initial");
		char out[4];
		size_t n = 0;
		for (const char *f = ascii_fold_codepoint(cp); *f != '\0' && n < 3; f++) {
			char c = *f;
			if (c >= 'A' && c <= 'Z')
				c = (char)(c - 'A' + 'a');
			if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
				out[n++] = c;
		}
		if (n > 0) {
			lua_pushlstring(L, out, n);
			return 1;
		}
	}
	lua_pushnil(L);
	return 1;
}

/* ---- substrings ---------------------------------------------------------- */

/* Byte offset of code point number idx (0-based) of s, or len. */
static size_t cp_offset(lua_State *L, const char *s, size_t len, lua_Integer idx,
                        const char *fn)
{
	size_t pos = 0;
	for (lua_Integer i = 0; i < idx && pos < len; i++)
		next_cp(L, s, len, &pos, fn);
	return pos;
}

static size_t cp_count(lua_State *L, const char *s, size_t len, const char *fn)
{
	size_t pos = 0, n = 0;
	while (pos < len) {
		next_cp(L, s, len, &pos, fn);
		n++;
	}
	return n;
}

/* mid(s, start, length): characters start.. (1-based), length optional. */
static int lib_mid(lua_State *L)
{
	size_t len;
	const char *s = opt_str(L, 1, &len, "mid");
	lua_Integer start = check_int(L, 2, "mid");
	lua_Integer count = opt_int(L, 3, LUA_MAXINTEGER, "mid");
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	if (start < 1)
		start = 1;
	if (count < 0)
		return luaL_error(L, "mid: length %d is negative", (int)count);
	size_t a = cp_offset(L, s, len, start - 1, "mid");
	size_t e = a;
	for (lua_Integer i = 0; i < count && e < len; i++)
		next_cp(L, s, len, &e, "mid");
	lua_pushlstring(L, s + a, e - a);
	return 1;
}

static int lib_left(lua_State *L)
{
	size_t len;
	const char *s = opt_str(L, 1, &len, "left");
	lua_Integer n = check_int(L, 2, "left");
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	if (n < 0)
		n = 0;
	lua_pushlstring(L, s, cp_offset(L, s, len, n, "left"));
	return 1;
}

static int lib_right(lua_State *L)
{
	size_t len;
	const char *s = opt_str(L, 1, &len, "right");
	lua_Integer n = check_int(L, 2, "right");
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	size_t total = cp_count(L, s, len, "right");
	if (n < 0)
		n = 0;
	if ((size_t)n >= total) {
		lua_pushlstring(L, s, len);
		return 1;
	}
	size_t a = cp_offset(L, s, len, (lua_Integer)(total - (size_t)n), "right");
	lua_pushlstring(L, s + a, len - a);
	return 1;
}

/* ---- join, split, replace, predicates ------------------------------------ */

static void join_part(lua_State *L, id_buf_t *b, int idx, const char *sep, size_t seplen,
                      bool *first, int argn)
{
	int t = lua_type(L, idx);
	size_t n;
	if (t == LUA_TNIL)
		return;
	if (t != LUA_TSTRING && t != LUA_TNUMBER)
		luaL_error(L, "join: value %d is a %s, not a string", argn,
		           luaL_typename(L, idx));
	const char *s = lua_tolstring(L, idx, &n); /* a stack copy: safe */
	if (n == 0)
		return;
	if ((!*first && id_buf_append(b, sep, seplen) != 0) ||
	    id_buf_append(b, s, n) != 0)
		luaL_error(L, "join: out of memory");
	*first = false;
}

/*
 * join(sep, ...): the non-nil, non-empty values joined by sep; a table
 * argument contributes its elements (1..n).  Built in the scratch buffer,
 * so joining allocates only the result.
 */
static int lib_join(lua_State *L)
{
	policy_sandbox_t *sb = policy_sandbox_of(L);
	size_t seplen;
	const char *sep = check_str(L, 1, &seplen, "join");
	int top = lua_gettop(L);
	bool first = true;
	id_buf_reset(&sb->scratch);
	for (int i = 2; i <= top; i++) {
		if (lua_type(L, i) != LUA_TTABLE) {
			join_part(L, &sb->scratch, i, sep, seplen, &first, i);
			continue;
		}
		lua_Integer len = (lua_Integer)lua_rawlen(L, i);
		for (lua_Integer k = 1; k <= len; k++) {
			lua_rawgeti(L, i, k);
			join_part(L, &sb->scratch, -1, sep, seplen, &first, i);
			lua_pop(L, 1);
		}
	}
	lua_pushlstring(L, sb->scratch.len ? (char *)sb->scratch.data : "",
	                sb->scratch.len);
	return 1;
}

/* split(s, sep): the parts of s between occurrences of the plain text sep
 * (default ","), empty parts kept.  nil or "" gives an empty table. */
static int lib_split(lua_State *L)
{
	size_t len, seplen;
	const char *s = opt_str(L, 1, &len, "split");
	const char *sep = opt_str(L, 2, &seplen, "split");
	lua_Integer n = 0;
	if (sep == NULL) {
		sep = ",";
		seplen = 1;
	}
	if (seplen == 0)
		return luaL_error(L, "split: the separator is empty");
	lua_newtable(L);
	if (s == NULL || len == 0)
		return 1;
	const char *p = s, *end = s + len;
	for (;;) {
		const char *hit = NULL;
		for (const char *q = p; q + seplen <= end; q++)
			if (memcmp(q, sep, seplen) == 0) {
				hit = q;
				break;
			}
		if (hit == NULL) {
			lua_pushlstring(L, p, (size_t)(end - p));
			lua_rawseti(L, -2, ++n);
			return 1;
		}
		lua_pushlstring(L, p, (size_t)(hit - p));
		lua_rawseti(L, -2, ++n);
		p = hit + seplen;
	}
}

/* replace(s, old, new): every occurrence of the plain text old replaced. */
static int lib_replace(lua_State *L)
{
	size_t len, olen, nlen;
	const char *s = opt_str(L, 1, &len, "replace");
	const char *old = check_str(L, 2, &olen, "replace");
	const char *rep = opt_str(L, 3, &nlen, "replace");
	luaL_Buffer b;
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	if (olen == 0)
		return luaL_error(L, "replace: the text to replace is empty");
	if (rep == NULL)
		rep = "";
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < len;) {
		if (i + olen <= len && memcmp(s + i, old, olen) == 0) {
			luaL_addlstring(&b, rep, nlen);
			i += olen;
		} else {
			luaL_addchar(&b, s[i++]);
		}
	}
	luaL_pushresult(&b);
	return 1;
}

static int str_pred(lua_State *L, const char *fn, int mode)
{
	size_t len, plen;
	const char *s = opt_str(L, 1, &len, fn);
	const char *p = check_str(L, 2, &plen, fn);
	bool r = false;
	if (s != NULL && plen <= len) {
		if (mode == 0)
			r = memcmp(s, p, plen) == 0;
		else if (mode == 1)
			r = memcmp(s + len - plen, p, plen) == 0;
		else
			for (size_t i = 0; i + plen <= len && !r; i++)
				r = memcmp(s + i, p, plen) == 0;
	}
	lua_pushboolean(L, r);
	return 1;
}

static int lib_starts_with(lua_State *L)
{
	return str_pred(L, "starts_with", 0);
}

static int lib_ends_with(lua_State *L)
{
	return str_pred(L, "ends_with", 1);
}

static int lib_contains(lua_State *L)
{
	return str_pred(L, "contains", 2);
}

static int lib_dn_escape(lua_State *L)
{
	policy_sandbox_t *sb = policy_sandbox_of(L);
	const char *s = opt_str(L, 1, NULL, "dn_escape");
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	id_buf_reset(&sb->scratch);
	if (mapping_dn_escape_append(&sb->scratch, s) != 0)
		return luaL_error(L, "dn_escape: out of memory");
	lua_pushlstring(L, (char *)sb->scratch.data, sb->scratch.len);
	return 1;
}

/* ---- unique-value candidates --------------------------------------------- */

static bool ascii_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x = (unsigned char)(x + 32);
		if (y >= 'A' && y <= 'Z')
			y = (unsigned char)(y + 32);
		if (x != y)
			return false;
	}
	return true;
}

/*
 * A list being built: the Lua table at `list` and, for de-duplication, the
 * strings already in it (anchored by the table, so the pointers stay valid).
 */
#define CAND_MAX 256

typedef struct cand_list {
	int list;
	lua_Integer n;
	const char *s[CAND_MAX];
	size_t len[CAND_MAX];
} cand_list_t;

/* Appends the string at the top (popped) unless it is empty or equal to an
 * earlier one ignoring ASCII case (names are claimed that way). */
static void cand_add(lua_State *L, cand_list_t *c, const char *fn)
{
	size_t len;
	const char *s = lua_tolstring(L, -1, &len);
	if (len == 0) {
		lua_pop(L, 1);
		return;
	}
	for (lua_Integer k = 0; k < c->n; k++)
		if (ascii_ieq(s, len, c->s[k], c->len[k])) {
			lua_pop(L, 1);
			return;
		}
	if (c->n == CAND_MAX)
		luaL_error(L, "%s: more than %d candidates", fn, CAND_MAX);
	c->s[c->n] = s;
	c->len[c->n] = len;
	lua_rawseti(L, c->list, ++c->n);
}

/*
 * candidates(...): an ordered list of distinct candidates from strings and
 * lists of strings; nil and "" are skipped, and a value equal to an earlier
 * one ignoring ASCII case is dropped.
 */
static int lib_candidates(lua_State *L)
{
	int top = lua_gettop(L);
	cand_list_t cl, *c = &cl; /* on the C stack: a Lua error leaks nothing */
	lua_createtable(L, top + 8, 0);
	c->list = lua_gettop(L);
	c->n = 0;
	for (int i = 1; i <= top; i++) {
		int t = lua_type(L, i);
		if (t == LUA_TNIL)
			continue;
		if (t == LUA_TTABLE) {
			lua_Integer len = (lua_Integer)lua_rawlen(L, i);
			for (lua_Integer k = 1; k <= len; k++) {
				int et = lua_rawgeti(L, i, k);
				if (et == LUA_TNIL) {
					lua_pop(L, 1);
					continue;
				}
				if (et != LUA_TSTRING)
					return luaL_error(
					    L,
					    "candidates: argument %d[%d] is a %s, "
					    "not a string",
					    i, (int)k, luaL_typename(L, -1));
				cand_add(L, c, "candidates");
			}
			continue;
		}
		opt_str(L, i, NULL, "candidates");
		lua_pushvalue(L, i);
		cand_add(L, c, "candidates");
	}
	return 1;
}

/*
 * with_suffixes(base, count [, max_len]): base, base2, base3 ... up to count
 * candidates in all; with max_len (in characters) base is shortened so that
 * base + suffix fits.  nil base gives an empty list.  The suffixes make
 * every candidate distinct, so no de-duplication is needed.
 */
static int lib_with_suffixes(lua_State *L)
{
	policy_sandbox_t *sb = policy_sandbox_of(L);
	size_t len;
	const char *base = opt_str(L, 1, &len, "with_suffixes");
	lua_Integer count = check_int(L, 2, "with_suffixes");
	lua_Integer max = opt_int(L, 3, 0, "with_suffixes");
	if (count < 1 || count > MAX_SUFFIXES)
		return luaL_error(L, "with_suffixes: count %d is not in 1..%d",
		                  (int)count, MAX_SUFFIXES);
	if (max < 0 || (max > 0 && max < 2))
		return luaL_error(L, "with_suffixes: max_len %d is too small", (int)max);
	lua_createtable(L, (int)count, 0);
	if (base == NULL || len == 0)
		return 1;
	bool ascii = true; /* then characters are bytes: no decoding */
	for (size_t i = 0; i < len && ascii; i++)
		ascii = (unsigned char)base[i] < 0x80;
	for (lua_Integer k = 1; k <= count; k++) {
		char suffix[24] = "";
		size_t slen = 0, keep = len;
		if (k > 1) /* k <= MAX_SUFFIXES: at most 4 digits */
			for (lua_Integer d = k; d > 0; d /= 10) {
				memmove(suffix + 1, suffix, slen);
				suffix[0] = (char)('0' + d % 10);
				slen++;
			}
		if (max > 0) {
			if ((lua_Integer)slen >= max)
				break;
			lua_Integer chars = max - (lua_Integer)slen;
			keep = ascii ? ((size_t)chars < len ? (size_t)chars : len)
			             : cp_offset(L, base, len, chars, "with_suffixes");
		}
		id_buf_reset(&sb->scratch);
		if (id_buf_append(&sb->scratch, base, keep) != 0 ||
		    id_buf_append(&sb->scratch, suffix, slen) != 0)
			return luaL_error(L, "with_suffixes: out of memory");
		lua_pushlstring(L, (char *)sb->scratch.data, sb->scratch.len);
		lua_rawseti(L, -2, k);
	}
	return 1;
}

/*
 * sam_account_name(s [, max_len]): a valid sAMAccountName from any text:
 * ASCII-folded, lower-cased, only [a-z0-9._-] kept, no leading or trailing
 * '.', at most max_len (default and maximum 20) characters.  nil when
 * nothing is left.
 */
static int lib_sam_account_name(lua_State *L)
{
	policy_sandbox_t *sb = policy_sandbox_of(L);
	const char *s = opt_str(L, 1, NULL, "sam_account_name");
	lua_Integer max = opt_int(L, 2, SAM_MAX, "sam_account_name");
	id_err_t err = {0};
	char out[SAM_MAX + 1];
	size_t n = 0;
	if (max < 1 || max > SAM_MAX)
		return luaL_error(L, "sam_account_name: max_len %d is not in 1..%d",
		                  (int)max, SAM_MAX);
	if (s == NULL) {
		lua_pushnil(L);
		return 1;
	}
	id_buf_reset(&sb->scratch);
	int rc = ascii_fold_append(&sb->scratch, s, &err);
	if (rc != 0)
		return luaL_error(L, "sam_account_name: %s",
		                  rc == ID_ENOMEM ? "out of memory" : err.msg);
	for (size_t i = 0; i < sb->scratch.len && n < (size_t)max; i++) {
		char c = (char)sb->scratch.data[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		    c == '_' || (c == '.' && n > 0))
			out[n++] = c;
	}
	while (n > 0 && out[n - 1] == '.')
		n--;
	if (n == 0)
		lua_pushnil(L);
	else
		lua_pushlstring(L, out, n);
	return 1;
}

/*
 * pick(ctx, namespace, list): the value granted in that namespace
 * (ctx.granted[namespace]) when it is one of the candidates, else the first
 * candidate (what will be claimed first); nil for an empty list.
 */
static int lib_pick(lua_State *L)
{
	const char *ns = check_str(L, 2, NULL, "pick");
	luaL_checktype(L, 3, LUA_TTABLE);
	lua_Integer n = (lua_Integer)lua_rawlen(L, 3);
	if (lua_type(L, 1) != LUA_TNIL) {
		lua_getfield(L, 1, "granted");
		if (lua_type(L, -1) != LUA_TNIL) {
			lua_getfield(L, -1, ns);
			if (lua_type(L, -1) == LUA_TSTRING) {
				size_t glen;
				const char *g = lua_tolstring(L, -1, &glen);
				for (lua_Integer k = 1; k <= n; k++) {
					size_t clen;
					lua_rawgeti(L, 3, k);
					const char *c = lua_tolstring(L, -1, &clen);
					if (c != NULL && ascii_ieq(g, glen, c, clen))
						return 1; /* granted, spelt as the policy
						             does */
					lua_pop(L, 1);
				}
			}
		}
	}
	lua_rawgeti(L, 3, 1);
	return 1;
}

/* ---- logic and lookup ---------------------------------------------------- */

static int lib_iif(lua_State *L)
{
	lua_settop(L, 3);
	lua_pushvalue(L, lua_toboolean(L, 1) ? 2 : 3);
	return 1;
}

static bool is_blank(lua_State *L, int idx)
{
	size_t len, w;
	if (lua_isnoneornil(L, idx))
		return true;
	if (lua_type(L, idx) != LUA_TSTRING)
		return false;
	const char *s = lua_tolstring(L, idx, &len);
	for (size_t i = 0; i < len; i += w)
		if (!is_space_at(s, i, len, &w))
			return false;
	return true;
}

/* coalesce(...): the first argument that is not nil, false or blank. */
static int lib_coalesce(lua_State *L)
{
	int top = lua_gettop(L);
	for (int i = 1; i <= top; i++) {
		if (lua_type(L, i) == LUA_TBOOLEAN && !lua_toboolean(L, i))
			continue;
		if (!is_blank(L, i)) {
			lua_pushvalue(L, i);
			return 1;
		}
	}
	lua_pushnil(L);
	return 1;
}

/* switch(value, cases, default): cases[value] when present, else default. */
static int lib_switch(lua_State *L)
{
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 3);
	if (!lua_isnil(L, 1)) {
		lua_pushvalue(L, 1);
		if (lua_rawget(L, 2) != LUA_TNIL)
			return 1;
	}
	lua_pushvalue(L, 3);
	return 1;
}

/* Compares a and b ignoring ASCII case and surrounding blanks. */
static bool loose_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t w;
	while (alen > 0 && is_space_at(a, 0, alen, &w))
		a += w, alen -= w;
	while (alen > 0 && (unsigned char)a[alen - 1] <= ' ')
		alen--;
	while (blen > 0 && is_space_at(b, 0, blen, &w))
		b += w, blen -= w;
	while (blen > 0 && (unsigned char)b[blen - 1] <= ' ')
		blen--;
	return ascii_ieq(a, alen, b, blen);
}

/*
 * lookup(value, cases, default): like switch, but string keys match
 * ignoring ASCII case and surrounding blanks ("engineering " finds
 * "Engineering").  When several keys match, the one first in byte order
 * wins, so the result never depends on table order.
 */
static int lib_lookup(lua_State *L)
{
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 3);
	if (lua_isnil(L, 1)) {
		lua_pushvalue(L, 3);
		return 1;
	}
	lua_pushvalue(L, 1);
	if (lua_rawget(L, 2) != LUA_TNIL)
		return 1;
	lua_pop(L, 1);
	if (lua_type(L, 1) != LUA_TSTRING) {
		lua_pushvalue(L, 3);
		return 1;
	}
	size_t vlen;
	const char *v = lua_tolstring(L, 1, &vlen);
	/* Scan all keys, keep the matching one first in byte order. */
	const char *best = NULL;
	size_t bestlen = 0;
	lua_pushnil(L);
	while (lua_next(L, 2) != 0) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			continue;
		size_t klen;
		const char *key = lua_tolstring(L, -1, &klen);
		if (!loose_eq(v, vlen, key, klen))
			continue;
		size_t m = klen < bestlen ? klen : bestlen;
		int c = best == NULL ? -1 : memcmp(key, best, m);
		if (best == NULL || c < 0 || (c == 0 && klen < bestlen)) {
			best = key; /* anchored by the table */
			bestlen = klen;
		}
	}
	if (best == NULL) {
		lua_pushvalue(L, 3);
		return 1;
	}
	lua_pushlstring(L, best, bestlen);
	lua_rawget(L, 2);
	return 1;
}

/* in_list(value, list): true when value equals one of list's elements. */
static int lib_in_list(lua_State *L)
{
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
	bool r = false;
	if (!lua_isnoneornil(L, 1))
		for (lua_Integer k = 1; k <= n && !r; k++) {
			lua_rawgeti(L, 2, k);
			r = lua_rawequal(L, 1, -1);
			lua_pop(L, 1);
		}
	lua_pushboolean(L, r);
	return 1;
}

/*
 * get(t, "a.b.c" [, default]): t.a.b.c, or default when any step is nil or
 * not indexable.  A step of digits also tries the integer key ("list.1").
 */
static int lib_get(lua_State *L)
{
	size_t plen;
	const char *path = check_str(L, 2, &plen, "get");
	lua_settop(L, 3);
	lua_pushvalue(L, 1);
	const char *p = path, *end = path + plen;
	while (p <= end) {
		const char *dot = memchr(p, '.', (size_t)(end - p));
		size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
		int t = lua_type(L, -1);
		if (t != LUA_TTABLE) {
			lua_settop(L, 3);
			return 1; /* the default */
		}
		lua_pushlstring(L, p, n);
		lua_gettable(L, -2);
		if (lua_isnil(L, -1) && n > 0 && strspn(p, "0123456789") >= n) {
			lua_pop(L, 1);
			lua_pushinteger(L, (lua_Integer)strtoll(p, NULL, 10));
			lua_gettable(L, -2);
		}
		lua_remove(L, -2);
		if (dot == NULL)
			break;
		p = dot + 1;
	}
	if (lua_isnil(L, -1)) {
		lua_pushvalue(L, 3);
		return 1;
	}
	return 1;
}

/* is_empty(v): nil, false, a blank string or a table without entries. */
static int lib_is_empty(lua_State *L)
{
	bool r;
	if (lua_type(L, 1) == LUA_TTABLE) {
		lua_pushnil(L);
		r = lua_next(L, 1) == 0;
		if (!r)
			lua_pop(L, 2);
	} else if (lua_type(L, 1) == LUA_TBOOLEAN) {
		r = !lua_toboolean(L, 1);
	} else {
		r = is_blank(L, 1);
	}
	lua_pushboolean(L, r);
	return 1;
}

/* ---- dates --------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static bool digits(const char *s, size_t len, size_t at, size_t n, int *out)
{
	int v = 0;
	if (at + n > len)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[at + i];
		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*out = v;
	return true;
}

/*
 * Parses YYYY-MM-DD, optionally followed by 'T' or ' ' and HH:MM[:SS[.f+]]
 * and an offset (Z, +HH, +HHMM, +HH:MM).  Without an offset the time is UTC.
 * Returns false for anything else, including impossible dates.
 */
static bool parse_date(const char *s, size_t len, int64_t *ms)
{
	int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, oh = 0, om = 0, sign = 0;
	size_t i = 10;
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (!digits(s, len, 0, 4, &y) || len < 10 || s[4] != '-' ||
	    !digits(s, len, 5, 2, &mo) || s[7] != '-' || !digits(s, len, 8, 2, &d))
		return false;
	if (mo < 1 || mo > 12 || d < 1)
		return false;
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (d > mdays[mo - 1] + (mo == 2 && leap))
		return false;
	if (i < len) {
		if (s[i] != 'T' && s[i] != 't' && s[i] != ' ')
			return false;
		if (!digits(s, len, i + 1, 2, &h) || i + 3 >= len || s[i + 3] != ':' ||
		    !digits(s, len, i + 4, 2, &mi))
			return false;
		i += 6;
		if (i < len && s[i] == ':') {
			if (!digits(s, len, i + 1, 2, &sec))
				return false;
			i += 3;
			if (i < len && (s[i] == '.' || s[i] == ',')) {
				size_t nd = 0;
				i++;
				while (i < len && s[i] >= '0' && s[i] <= '9') {
					if (nd < 3)
						frac = frac * 10 + (s[i] - '0');
					nd++;
					i++;
				}
				if (nd == 0)
					return false;
				for (; nd < 3; nd++)
					frac *= 10;
			}
		}
		if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
			i++;
		} else if (i < len && (s[i] == '+' || s[i] == '-')) {
			sign = s[i] == '-' ? -1 : 1;
			if (!digits(s, len, i + 1, 2, &oh))
				return false;
			i += 3;
			if (i < len && s[i] == ':')
				i++;
			if (i < len) {
				if (!digits(s, len, i, 2, &om))
					return false;
				i += 2;
			}
		}
		if (i != len || h > 23 || mi > 59 || sec > 59 || oh > 23 || om > 59)
			return false;
	}
	int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
	int64_t t = ((days * 24 + h) * 60 + mi) * 60 + sec;
	t -= (int64_t)sign * (oh * 3600 + om * 60);
	*ms = t * 1000 + frac;
	return true;
}

void policy_lib_format_day(int64_t ms, char *out, size_t n)
{
	int64_t y;
	unsigned m, d;
	civil_from_days(floor_div(ms, DAY_MS), &y, &m, &d);
	snprintf(out, n, "%04lld-%02u-%02u", (long long)y, m, d);
}

int policy_time_parse(const char *s, int64_t *ms)
{
	if (s == NULL || !parse_date(s, strlen(s), ms))
		return ID_EPARSE;
	return 0;
}

/* The date at idx as ms (integer, or a string parsed strictly). */
static int64_t check_date(lua_State *L, int idx, const char *fn)
{
	if (lua_type(L, idx) == LUA_TSTRING) {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		int64_t ms;
		if (!parse_date(s, len, &ms)) {
			/* lua_pushfstring has no precision: format here. */
			char msg[160];
			snprintf(msg, sizeof(msg),
			         "%s: argument %d \"%.*s\" is not a date (YYYY-MM-DD or "
			         "ISO-8601)",
			         fn, idx, len > LIB_QUOTE_MAX ? LIB_QUOTE_MAX : (int)len,
			         s);
			luaL_error(L, "%s", msg);
		}
		return ms;
	}
	return (int64_t)check_int(L, idx, fn);
}

/* date_parse(s): ms since the epoch; nil plus a message when s is not a
 * date (so a policy can fall back); nil for nil. */
static int lib_date_parse(lua_State *L)
{
	size_t len;
	int64_t ms;
	if (lua_type(L, 1) == LUA_TNUMBER) {
		lua_pushinteger(L, check_int(L, 1, "date_parse"));
		return 1;
	}
	const char *s = opt_str(L, 1, &len, "date_parse");
	if (s == NULL || len == 0) {
		lua_pushnil(L);
		return 1;
	}
	if (!parse_date(s, len, &ms)) {
		lua_pushnil(L);
		lua_pushfstring(L, "\"%s\" is not a date (YYYY-MM-DD or ISO-8601)", s);
		return 2;
	}
	lua_pushinteger(L, (lua_Integer)ms);
	return 1;
}

/* Appends v (0 <= v, fits width) with leading zeros to width digits. */
static void add_digits(luaL_Buffer *b, int64_t v, int width)
{
	char d[8];
	if (v < 0)
		v = 0;
	for (int i = width - 1; i >= 0; i--, v /= 10)
		d[i] = (char)('0' + v % 10);
	luaL_addlstring(b, d, (size_t)width);
}

/* date_format(t [, fmt]): %Y %m %d %H %M %S %L (ms) %F (%Y-%m-%d)
 * %T (%H:%M:%S) %%; default "%Y-%m-%d".  UTC. */
static int lib_date_format(lua_State *L)
{
	if (lua_isnoneornil(L, 1)) {
		lua_pushnil(L);
		return 1;
	}
	int64_t ms = check_date(L, 1, "date_format");
	size_t flen;
	const char *f = luaL_optlstring(L, 2, "%Y-%m-%d", &flen);
	int64_t days = floor_div(ms, DAY_MS), rem = ms - days * DAY_MS, y;
	unsigned mo, d;
	civil_from_days(days, &y, &mo, &d);
	int h = (int)(rem / 3600000), mi = (int)(rem / 60000 % 60),
	    sec = (int)(rem / 1000 % 60), milli = (int)(rem % 1000);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < flen; i++) {
		if (f[i] != '%' || i + 1 == flen) {
			luaL_addchar(&b, f[i]);
			continue;
		}
		switch (f[++i]) {
		case 'Y':
			if (y >= 0 && y <= 9999) {
				add_digits(&b, y, 4);
			} else {
				char tmp[32];
				snprintf(tmp, sizeof(tmp), "%04lld", (long long)y);
				luaL_addstring(&b, tmp);
			}
			break;
		case 'm':
			add_digits(&b, mo, 2);
			break;
		case 'd':
			add_digits(&b, d, 2);
			break;
		case 'H':
			add_digits(&b, h, 2);
			break;
		case 'M':
			add_digits(&b, mi, 2);
			break;
		case 'S':
			add_digits(&b, sec, 2);
			break;
		case 'L':
			add_digits(&b, milli, 3);
			break;
		case 'F':
			add_digits(&b, y, 4);
			luaL_addchar(&b, '-');
			add_digits(&b, mo, 2);
			luaL_addchar(&b, '-');
			add_digits(&b, d, 2);
			break;
		case 'T':
			add_digits(&b, h, 2);
			luaL_addchar(&b, ':');
			add_digits(&b, mi, 2);
			luaL_addchar(&b, ':');
			add_digits(&b, sec, 2);
			break;
		case '%':
			luaL_addchar(&b, '%');
			break;
		default:
			return luaL_error(L, "date_format: unknown conversion '%%%c'",
			                  f[i]);
		}
	}
	luaL_pushresult(&b);
	return 1;
}

static int lib_date_add_days(lua_State *L)
{
	if (lua_isnoneornil(L, 1)) {
		lua_pushnil(L);
		return 1;
	}
	int64_t ms = check_date(L, 1, "date_add_days");
	lua_Integer n = check_int(L, 2, "date_add_days");
	if (n > 3650000 || n < -3650000)
		return luaL_error(L, "date_add_days: %d days is out of range", (int)n);
	lua_pushinteger(L, (lua_Integer)(ms + n * DAY_MS));
	return 1;
}

/* date_diff_days(from, to): whole days from → to (rounded down). */
static int lib_date_diff_days(lua_State *L)
{
	if (lua_isnoneornil(L, 1) || lua_isnoneornil(L, 2)) {
		lua_pushnil(L);
		return 1;
	}
	int64_t a = check_date(L, 1, "date_diff_days");
	int64_t b = check_date(L, 2, "date_diff_days");
	lua_pushinteger(L, (lua_Integer)floor_div(b - a, DAY_MS));
	return 1;
}

/* ---- deterministic tostring / pairs / format ----------------------------- */

const char *policy_lib_tostring(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
	case LUA_TBOOLEAN:
	case LUA_TNUMBER:
	case LUA_TSTRING:
		return luaL_tolstring(L, idx, NULL);
	default:
		if (luaL_callmeta(L, idx, "__tostring")) {
			if (!lua_isstring(L, -1))
				luaL_error(L, "'__tostring' must return a string");
			return lua_tostring(L, -1);
		}
		/* Never "table: 0x55..": addresses differ between runs. */
		lua_pushstring(L, luaL_typename(L, idx));
		return lua_tostring(L, -1);
	}
}

static int lib_tostring(lua_State *L)
{
	luaL_checkany(L, 1);
	policy_lib_tostring(L, 1);
	return 1;
}

typedef struct sort_key {
	int type; /* 0 number, 1 string */
	lua_Integer i;
	lua_Number d;
	int is_int;
	const char *s;
	size_t len;
	lua_Integer idx; /* position in the collected key list */
} sort_key_t;

static int sort_key_cmp(const void *pa, const void *pb)
{
	const sort_key_t *a = pa, *b = pb;
	if (a->type != b->type)
		return a->type - b->type;
	if (a->type == 1) {
		size_t n = a->len < b->len ? a->len : b->len;
		int c = memcmp(a->s, b->s, n);
		if (c != 0)
			return c;
		return a->len < b->len ? -1 : a->len > b->len;
	}
	if (a->is_int && b->is_int)
		return a->i < b->i ? -1 : a->i > b->i;
	lua_Number x = a->is_int ? (lua_Number)a->i : a->d;
	lua_Number y = b->is_int ? (lua_Number)b->i : b->d;
	return x < y ? -1 : x > y;
}

/* Iterator: upvalues (table, sorted keys, position). */
static int pairs_iter(lua_State *L)
{
	lua_Integer i = lua_tointeger(L, lua_upvalueindex(3));
	for (;;) {
		i++;
		if (lua_rawgeti(L, lua_upvalueindex(2), i) == LUA_TNIL) {
			lua_pushinteger(L, i - 1);
			lua_replace(L, lua_upvalueindex(3));
			return 0;
		}
		lua_pushvalue(L, -1);
		if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
			break;
		lua_pop(L, 2);
	}
	lua_pushinteger(L, i);
	lua_replace(L, lua_upvalueindex(3));
	return 2;
}

/*
 * Pushes the sorted key list of the table at idx.  Keys must be numbers or
 * strings: other keys have no order that is stable across runs.
 */
static void push_sorted_keys(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_newtable(L);
	int keys = lua_gettop(L);
	lua_Integer n = 0;
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pop(L, 1);
		int t = lua_type(L, -1);
		if (t != LUA_TNUMBER && t != LUA_TSTRING)
			luaL_error(L,
			           "pairs: a %s key has no stable order; use strings or "
			           "numbers as keys",
			           luaL_typename(L, -1));
		lua_pushvalue(L, -1);
		lua_rawseti(L, keys, ++n);
	}
	if (n < 2)
		return;
	sort_key_t *sk = lua_newuserdatauv(L, (size_t)n * sizeof(*sk), 0);
	for (lua_Integer k = 1; k <= n; k++) {
		sort_key_t *e = &sk[k - 1];
		lua_rawgeti(L, keys, k);
		e->idx = k;
		if (lua_type(L, -1) == LUA_TSTRING) {
			e->type = 1;
			e->s = lua_tolstring(L, -1, &e->len); /* anchored in keys */
		} else {
			e->type = 0;
			e->is_int = lua_isinteger(L, -1);
			e->i = lua_tointeger(L, -1);
			e->d = lua_tonumber(L, -1);
		}
		lua_pop(L, 1);
	}
	qsort(sk, (size_t)n, sizeof(*sk), sort_key_cmp);
	lua_createtable(L, (int)n, 0);
	for (lua_Integer k = 1; k <= n; k++) {
		lua_rawgeti(L, keys, sk[k - 1].idx);
		lua_rawseti(L, -2, k);
	}
	lua_replace(L, keys); /* sorted list replaces the collected one */
	lua_pop(L, 1);        /* the scratch userdata */
}

int policy_lib_pairs(lua_State *L)
{
	if (luaL_getmetafield(L, 1, "__pairs") != LUA_TNIL) {
		lua_pushvalue(L, 1);
		lua_call(L, 1, 3);
		return 3;
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_pushvalue(L, 1);
	push_sorted_keys(L, 1);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, pairs_iter, 3);
	lua_pushnil(L);
	lua_pushnil(L);
	return 3;
}

static int lib_format(lua_State *L)
{
	size_t flen;
	const char *f = luaL_checklstring(L, 1, &flen);
	int top = lua_gettop(L), arg = 1;
	for (size_t i = 0; i < flen; i++) {
		if (f[i] != '%')
			continue;
		if (++i < flen && f[i] == '%')
			continue;
		arg++;
		while (i < flen && strchr("-+ #0", f[i]) != NULL)
			i++;
		while (i < flen && ((f[i] >= '0' && f[i] <= '9') || f[i] == '.'))
			i++;
		if (i >= flen)
			break;
		if (f[i] == 'p')
			return luaL_error(L, "string.format: '%%p' is not available in a "
			                     "policy (addresses differ between runs)");
		if (f[i] == 's' && arg <= top && lua_type(L, arg) != LUA_TSTRING &&
		    lua_type(L, arg) != LUA_TNUMBER) {
			policy_lib_tostring(L, arg);
			lua_replace(L, arg);
		}
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, top, 1);
	return 1;
}

/* ---- sandboxed base functions -------------------------------------------- */

static int lib_print(lua_State *L)
{
	policy_sandbox_t *sb = policy_sandbox_of(L);
	int n = lua_gettop(L);
	luaL_Buffer b;
	if (sb->print == NULL)
		return 0;
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		policy_lib_tostring(L, i);
		if (i > 1)
			luaL_addchar(&b, '\t'); /* the string is below the buffer box */
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	sb->print(sb->print_ctx, lua_tostring(L, -1));
	return 0;
}

/* A budget error must reach the host: re-raise it instead of catching. */
static void rethrow_budget(lua_State *L)
{
	if (policy_sandbox_of(L)->budget_exceeded)
		lua_error(L);
}

static int lib_pcall(lua_State *L)
{
	luaL_checkany(L, 1);
	int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
	if (status != LUA_OK) {
		rethrow_budget(L);
		lua_pushboolean(L, 0);
		lua_insert(L, -2);
		return 2;
	}
	lua_pushboolean(L, 1);
	lua_insert(L, 1);
	return lua_gettop(L);
}

static int lib_xpcall(lua_State *L)
{
	int n = lua_gettop(L);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);
	lua_copy(L, 1, 2);
	lua_replace(L, 1); /* [handler, f, args...] */
	int status = lua_pcall(L, n - 2, LUA_MULTRET, 1);
	if (status != LUA_OK) {
		rethrow_budget(L);
		lua_pushboolean(L, 0);
		lua_insert(L, -2);
		return 2;
	}
	lua_pushboolean(L, 1);
	lua_replace(L, 1);
	return lua_gettop(L);
}

static int lib_setmetatable(lua_State *L)
{
	int t = lua_type(L, 2);
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
	if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
		return luaL_error(L, "cannot change a protected metatable");
	if (t == LUA_TTABLE) {
		/* Finalizers and weak tables act when the collector runs, which
		 * depends on memory use: results would differ between runs. */
		static const char *const banned[] = {"__gc", "__mode"};
		for (size_t i = 0; i < 2; i++) {
			lua_pushstring(L, banned[i]);
			if (lua_rawget(L, 2) != LUA_TNIL)
				return luaL_error(
				    L,
				    "setmetatable: %s is not available in a "
				    "policy (it depends on garbage collection)",
				    banned[i]);
			lua_pop(L, 1);
		}
	}
	lua_settop(L, 2);
	lua_setmetatable(L, 1);
	return 1;
}

static int lib_collectgarbage(lua_State *L)
{
	const char *opt = luaL_optstring(L, 1, "collect");
	if (strcmp(opt, "collect") != 0)
		return luaL_error(L,
		                  "collectgarbage(\"%s\") is not available in a policy; "
		                  "only \"collect\" is",
		                  opt);
	lua_gc(L, LUA_GCCOLLECT);
	lua_pushinteger(L, 0);
	return 1;
}

/* load(text [, name [, mode [, env]]]): source text only; env defaults to
 * the policy's globals (upvalue 1). */
static int lib_load(lua_State *L)
{
	size_t len;
	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "load: only source text (a string) is accepted in "
		                     "a policy");
	const char *s = lua_tolstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, "=(load)");
	const char *mode = luaL_optstring(L, 3, "t");
	if (strchr(mode, 't') == NULL)
		return luaL_error(L, "load: binary chunks are not allowed in a policy");
	int status = luaL_loadbufferx(L, s, len, name, "t");
	if (status != LUA_OK) {
		lua_pushnil(L);
		lua_insert(L, -2);
		return 2;
	}
	if (!lua_isnone(L, 4))
		lua_pushvalue(L, 4);
	else
		lua_pushvalue(L, lua_upvalueindex(1));
	if (lua_setupvalue(L, -2, 1) == NULL)
		lua_pop(L, 1);
	return 1;
}

/* ---- freezing ------------------------------------------------------------ */

static int frozen_newindex(lua_State *L)
{
	const char *what = lua_tostring(L, lua_upvalueindex(1));
	const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
	if (strcmp(what, "global") == 0)
		return luaL_error(L,
		                  "global '%s' is read-only once the policy has loaded "
		                  "(declare it local)",
		                  key);
	return luaL_error(L, "%s.%s is read-only in a policy", what, key);
}

static int frozen_pairs(lua_State *L)
{
	lua_settop(L, 0);
	lua_pushvalue(L, lua_upvalueindex(1));
	return policy_lib_pairs(L);
}

void policy_lib_freeze(lua_State *L, int idx, const char *what)
{
	idx = lua_absindex(L, idx);
	lua_newtable(L);
	int hidden = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, hidden);
	}
	/* Clear the visible table; assigning nil to existing fields during a
	 * traversal is allowed. */
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pop(L, 1);
		lua_pushvalue(L, -1);
		lua_pushnil(L);
		lua_rawset(L, idx);
	}
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, hidden);
	lua_setfield(L, -2, "__index");
	lua_pushstring(L, what);
	lua_pushcclosure(L, frozen_newindex, 1);
	lua_setfield(L, -2, "__newindex");
	lua_pushvalue(L, hidden);
	lua_pushcclosure(L, frozen_pairs, 1);
	lua_setfield(L, -2, "__pairs");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, idx);
	lua_pop(L, 1); /* hidden */
}

/* ---- the environment ----------------------------------------------------- */

static const luaL_Reg helpers[] = {
    {"lower", lib_lower},
    {"upper", lib_upper},
    {"proper", lib_proper},
    {"trim", lib_trim},
    {"fold", lib_fold},
    {"normalize_diacritics", lib_fold},
    {"alnum", lib_alnum},
    {"slug", lib_slug},
    {"initial", lib_initial},
    {"mid", lib_mid},
    {"substring", lib_mid},
    {"left", lib_left},
    {"right", lib_right},
    {"join", lib_join},
    {"split", lib_split},
    {"replace", lib_replace},
    {"starts_with", lib_starts_with},
    {"ends_with", lib_ends_with},
    {"contains", lib_contains},
    {"dn_escape", lib_dn_escape},
    {"candidates", lib_candidates},
    {"with_suffixes", lib_with_suffixes},
    {"sam_account_name", lib_sam_account_name},
    {"pick", lib_pick},
    {"iif", lib_iif},
    {"coalesce", lib_coalesce},
    {"switch", lib_switch},
    {"lookup", lib_lookup},
    {"in_list", lib_in_list},
    {"get", lib_get},
    {"is_empty", lib_is_empty},
    {"date_parse", lib_date_parse},
    {"date_format", lib_date_format},
    {"date_add_days", lib_date_add_days},
    {"date_diff_days", lib_date_diff_days},
    {NULL, NULL},
};

/* Base functions that are safe as they are. */
static const char *const base_kept[] = {
    "assert",   "error",  "ipairs", "select",       "tonumber", "type",
    "rawequal", "rawlen", "rawget", "getmetatable", "_VERSION", NULL,
};

static const luaL_Reg base_sandboxed[] = {
    {"pairs", policy_lib_pairs},
    {"tostring", lib_tostring},
    {"print", lib_print},
    {"pcall", lib_pcall},
    {"xpcall", lib_xpcall},
    {"setmetatable", lib_setmetatable},
    {"collectgarbage", lib_collectgarbage},
    {NULL, NULL},
};

/* Removes the named fields of the table at the top of the stack. */
static void drop_fields(lua_State *L, const char *const *names)
{
	for (; *names != NULL; names++) {
		lua_pushnil(L);
		lua_setfield(L, -2, *names);
	}
}

int policy_lib_push_env(lua_State *L)
{
	static const char *const string_dropped[] = {"dump", NULL};
	/* A policy is a function of its inputs: no randomness. */
	static const char *const math_dropped[] = {"random", "randomseed", NULL};

	luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
	int base = lua_gettop(L);
	luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
	luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 0);
	luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 0);
	luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 0);
	int str = base + 1, tab = base + 2, math = base + 3, utf8 = base + 4;

	lua_newtable(L);
	int env = lua_gettop(L);
	for (const char *const *k = base_kept; *k != NULL; k++) {
		lua_getfield(L, base, *k);
		lua_setfield(L, env, *k);
	}
	lua_pushvalue(L, env);
	luaL_setfuncs(L, base_sandboxed, 0);
	lua_pop(L, 1);
	lua_pushvalue(L, env);
	lua_pushcclosure(L, lib_load, 1);
	lua_setfield(L, env, "load");
	lua_pushvalue(L, env);
	lua_setfield(L, env, "_G");

	/* string: no dump; format never prints addresses. */
	lua_pushvalue(L, str);
	drop_fields(L, string_dropped);
	lua_getfield(L, -1, "format");
	lua_pushcclosure(L, lib_format, 1);
	lua_setfield(L, -2, "format");
	lua_pop(L, 1);
	lua_pushvalue(L, math);
	drop_fields(L, math_dropped);
	lua_pop(L, 1);

	lua_pushvalue(L, str);
	lua_setfield(L, env, "string");
	lua_pushvalue(L, tab);
	lua_setfield(L, env, "table");
	lua_pushvalue(L, math);
	lua_setfield(L, env, "math");
	lua_pushvalue(L, utf8);
	lua_setfield(L, env, "utf8");

	lua_pushvalue(L, env);
	luaL_setfuncs(L, helpers, 0);
	lua_pop(L, 1);

	/* Library tables are shared by every evaluation: a policy must not be
	 * able to change them.  String methods ("x"):upper() read the frozen
	 * string table through the string metatable, which is protected so
	 * getmetatable("") cannot reach it. */
	static const char *const libnames[] = {"string", "table", "math", "utf8"};
	int libidx[] = {str, tab, math, utf8};
	for (size_t i = 0; i < 4; i++)
		policy_lib_freeze(L, libidx[i], libnames[i]);
	lua_pushliteral(L, "");
	if (lua_getmetatable(L, -1)) {
		lua_getmetatable(L, str); /* the frozen table's metatable */
		lua_getfield(L, -1, "__index");
		lua_setfield(L, -3, "__index"); /* methods read the hidden table */
		lua_pop(L, 1);
		lua_pushboolean(L, 0);
		lua_setfield(L, -2, "__metatable");
		lua_pop(L, 1);
	}
	lua_pop(L, 1);

	lua_replace(L, base); /* env where _G was */
	lua_settop(L, base);
	return 1;
}
