/*
 * attrs.h — a small sorted string→string map used for HR attributes, desired
 * identity attributes and LDAP entries.
 *
 * Invariants: keys are unique and kept in strcmp() order, so two maps with
 * the same content iterate (and therefore encode) identically — this is what
 * makes desired identities byte-identical across replays.  A value may be
 * NULL, meaning "present but null" (in an UPDATE event: the attribute was
 * cleared).
 *
 * Ownership: the map owns copies of every key and value (but for those in
 * its keep range, see id_attrs_t).
 * Thread safety: none; one map belongs to one thread at a time.
 */
#ifndef IDSTREAM_ATTRS_H
#define IDSTREAM_ATTRS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct id_kv {
	char *key;
	char *value; /* may be NULL */
} id_kv_t;

typedef struct id_attrs {
	id_kv_t *items; /* sorted by key */
	size_t len;
	size_t cap;
	/* Keys and values at addresses in [keep_lo, keep_hi) belong to a
	 * block the map's owner frees (an employee record's decoded strings):
	 * the map never frees them.  0, 0 (the usual): it owns every one. */
	uintptr_t keep_lo, keep_hi;
} id_attrs_t;

#define ID_ATTRS_INIT                                                                    \
	{                                                                                \
		NULL, 0, 0, 0, 0                                                         \
	}

void id_attrs_init(id_attrs_t *a);
/* Frees all keys and values; the map is empty and reusable afterwards. */
void id_attrs_fini(id_attrs_t *a);
/* Sets key to a copy of value (NULL allowed).  Returns 0 or ID_ENOMEM. */
int id_attrs_set(id_attrs_t *a, const char *key, const char *value);
/* Like id_attrs_set() with key and value (NULL allowed) taken, not copied:
 * they are the map's (or freed, unless in its keep range) whatever the
 * outcome.  0 or ID_ENOMEM. */
int id_attrs_set_owned(id_attrs_t *a, char *key, char *value);
/* Sets key to a copy of value (not NULL) unless key already has that
 * value: one search.  *changed tells whether the map changed.  0 or
 * ID_ENOMEM (map unchanged). */
int id_attrs_update(id_attrs_t *a, const char *key, const char *value, bool *changed);
/* Removes key if present; returns true when it was present. */
bool id_attrs_remove(id_attrs_t *a, const char *key);
/* Borrowed pointer to the value (NULL when absent *or* null). */
const char *id_attrs_get(const id_attrs_t *a, const char *key);
bool id_attrs_has(const id_attrs_t *a, const char *key);
/* Replaces dst's content by a deep copy of src.  Returns 0 or ID_ENOMEM. */
int id_attrs_copy(id_attrs_t *dst, const id_attrs_t *src);
/* True when both maps hold the same keys with the same values. */
bool id_attrs_equal(const id_attrs_t *a, const id_attrs_t *b);

#endif
