/*
 * attrs.c — sorted string map (see attrs.h).  Lookups are binary searches;
 * inserts shift the tail, which is fine for the tens of attributes a person
 * has.
 */
#include "common/attrs.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

void id_attrs_init(id_attrs_t *a)
{
	a->items = NULL;
	a->len = 0;
	a->cap = 0;
	a->keep_lo = a->keep_hi = 0;
}

/* Frees p unless it is in the block the map's owner keeps. */
static void attrs_free(const id_attrs_t *a, char *p)
{
	uintptr_t u = (uintptr_t)p;
	if (u < a->keep_lo || u >= a->keep_hi)
		free(p);
}

void id_attrs_fini(id_attrs_t *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->len; i++) {
		attrs_free(a, a->items[i].key);
		attrs_free(a, a->items[i].value);
	}
	free(a->items);
	id_attrs_init(a);
}

/* strcmp() that settles on the first byte without a call, which is where
 * most keys already differ. */
static inline int key_cmp(const char *a, const char *b)
{
	if (*a != *b)
		return (unsigned char)*a - (unsigned char)*b;
	return strcmp(a, b);
}

/* Index of key, or -(insertion point) - 1 when absent. */
static long attrs_find(const id_attrs_t *a, const char *key)
{
	size_t lo = 0, hi = a->len;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(a->items[mid].key, key);
		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

/* Sets key to a copy of value; with keep_same, not when it has that value
 * already.  *changed tells whether the map changed. */
static int attrs_put(id_attrs_t *a, const char *key, const char *value, bool keep_same,
                     bool *changed)
{
	long at = attrs_find(a, key);
	*changed = false;
	if (keep_same && at >= 0 && value != NULL && a->items[at].value != NULL &&
	    strcmp(a->items[at].value, value) == 0)
		return 0;
	char *v = NULL;
	if (value != NULL && (v = strdup(value)) == NULL)
		return ID_ENOMEM;
	if (at >= 0) {
		attrs_free(a, a->items[at].value);
		a->items[at].value = v;
		*changed = true;
		return 0;
	}
	size_t pos = (size_t)(-at - 1);
	if (a->len == a->cap) {
		size_t ncap = a->cap ? a->cap * 2 : 8;
		id_kv_t *n = realloc(a->items, ncap * sizeof(*n));
		if (n == NULL) {
			free(v);
			return ID_ENOMEM;
		}
		a->items = n;
		a->cap = ncap;
	}
	char *k = strdup(key);
	if (k == NULL) {
		free(v);
		return ID_ENOMEM;
	}
	memmove(&a->items[pos + 1], &a->items[pos], (a->len - pos) * sizeof(*a->items));
	a->items[pos].key = k;
	a->items[pos].value = v;
	a->len++;
	*changed = true;
	return 0;
}

int id_attrs_set(id_attrs_t *a, const char *key, const char *value)
{
	bool changed;
	return attrs_put(a, key, value, false, &changed);
}

int id_attrs_update(id_attrs_t *a, const char *key, const char *value, bool *changed)
{
	return attrs_put(a, key, value, true, changed);
}

int id_attrs_set_owned(id_attrs_t *a, char *key, char *value)
{
	/* Keys usually come in order (a decoded map): append without a
	 * search. */
	long at = a->len == 0 || key_cmp(a->items[a->len - 1].key, key) < 0
	              ? -(long)a->len - 1
	              : attrs_find(a, key);
	if (at >= 0) {
		attrs_free(a, key);
		attrs_free(a, a->items[at].value);
		a->items[at].value = value;
		return 0;
	}
	size_t pos = (size_t)(-at - 1);
	if (a->len == a->cap) {
		size_t ncap = a->cap ? a->cap * 2 : 8;
		id_kv_t *n = realloc(a->items, ncap * sizeof(*n));
		if (n == NULL) {
			attrs_free(a, key);
			attrs_free(a, value);
			return ID_ENOMEM;
		}
		a->items = n;
		a->cap = ncap;
	}
	memmove(&a->items[pos + 1], &a->items[pos], (a->len - pos) * sizeof(*a->items));
	a->items[pos].key = key;
	a->items[pos].value = value;
	a->len++;
	return 0;
}

bool id_attrs_remove(id_attrs_t *a, const char *key)
{
	long at = attrs_find(a, key);
	if (at < 0)
		return false;
	attrs_free(a, a->items[at].key);
	attrs_free(a, a->items[at].value);
	memmove(&a->items[at], &a->items[at + 1],
	        (a->len - (size_t)at - 1) * sizeof(*a->items));
	a->len--;
	return true;
}

const char *id_attrs_get(const id_attrs_t *a, const char *key)
{
	long at = attrs_find(a, key);
	return at >= 0 ? a->items[at].value : NULL;
}

bool id_attrs_has(const id_attrs_t *a, const char *key)
{
	return attrs_find(a, key) >= 0;
}

int id_attrs_copy(id_attrs_t *dst, const id_attrs_t *src)
{
	if (dst == src)
		return 0;
	id_attrs_fini(dst);
	for (size_t i = 0; i < src->len; i++) {
		/* Appending in order keeps dst sorted without searching. */
		int rc = id_attrs_set(dst, src->items[i].key, src->items[i].value);
		if (rc != 0) {
			id_attrs_fini(dst);
			return rc;
		}
	}
	return 0;
}

static bool str_eq_null(const char *x, const char *y)
{
	if (x == NULL || y == NULL)
		return x == y;
	return strcmp(x, y) == 0;
}

bool id_attrs_equal(const id_attrs_t *a, const id_attrs_t *b)
{
	if (a->len != b->len)
		return false;
	for (size_t i = 0; i < a->len; i++) {
		if (strcmp(a->items[i].key, b->items[i].key) != 0 ||
		    !str_eq_null(a->items[i].value, b->items[i].value))
			return false;
	}
	return true;
}
