/*
 * hmap.h — open-addressing hash map from NUL-terminated string keys to
 * pointers.  Used for per-transaction overlays (employee id → record).
 *
 * Ownership: the map copies keys and owns the copies; values are borrowed
 * (the caller frees them, e.g. while iterating before id_hmap_clear()).
 * Thread safety: none.
 */
#ifndef IDSTREAM_HMAP_H
#define IDSTREAM_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct id_hmap_entry {
	char *key; /* NULL = empty slot */
	void *value;
	uint64_t hash; /* of key: probes compare it before the strings */
} id_hmap_entry_t;

typedef struct id_hmap {
	id_hmap_entry_t *slots;
	size_t cap; /* power of two */
	size_t len;
} id_hmap_t;

void id_hmap_init(id_hmap_t *m);
/* Frees the keys and the table (not the values). */
void id_hmap_fini(id_hmap_t *m);
/* Empties the map, keeping the table. */
void id_hmap_clear(id_hmap_t *m);
void *id_hmap_get(const id_hmap_t *m, const char *key);
/* Inserts or replaces.  0 or ID_ENOMEM. */
int id_hmap_put(id_hmap_t *m, const char *key, void *value);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].key) ... */

#endif
