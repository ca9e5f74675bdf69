/*
 * hmap.c — linear-probing hash map with FNV-1a, grown at 1/2 load (see
 * hmap.h).  Each slot keeps its key's hash, so a probe compares strings
 * only when the hashes match, and growing rehashes nothing.  No deletion of single keys:
 * overlays are cleared as a whole.
 */
#include "common/hmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

static uint64_t hmap_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

void id_hmap_init(id_hmap_t *m)
{
	m->slots = NULL;
	m->cap = 0;
	m->len = 0;
}

void id_hmap_clear(id_hmap_t *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		free(m->slots[i].key);
		m->slots[i].key = NULL;
		m->slots[i].value = NULL;
	}
	m->len = 0;
}

void id_hmap_fini(id_hmap_t *m)
{
	if (m == NULL)
		return;
	id_hmap_clear(m);
	free(m->slots);
	id_hmap_init(m);
}

static id_hmap_entry_t *hmap_slot(id_hmap_entry_t *slots, size_t cap, const char *key,
                                  uint64_t h)
{
	size_t i = (size_t)h & (cap - 1);
	while (slots[i].key != NULL &&
	       (slots[i].hash != h || strcmp(slots[i].key, key) != 0))
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

void *id_hmap_get(const id_hmap_t *m, const char *key)
{
	if (m->cap == 0)
		return NULL;
	id_hmap_entry_t *e = hmap_slot(m->slots, m->cap, key, hmap_hash(key));
	return e->key ? e->value : NULL;
}

static int hmap_grow(id_hmap_t *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 64;
	id_hmap_entry_t *n = calloc(ncap, sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		/* Keys are unique: the first free slot from its hash. */
		if (m->slots[i].key == NULL)
			continue;
		size_t j = (size_t)m->slots[i].hash & (ncap - 1);
		while (n[j].key != NULL)
			j = (j + 1) & (ncap - 1);
		n[j] = m->slots[i];
	}
	free(m->slots);
	m->slots = n;
	m->cap = ncap;
	return 0;
}

int id_hmap_put(id_hmap_t *m, const char *key, void *value)
{
	if ((m->len + 1) * 2 > m->cap && hmap_grow(m) != 0)
		return ID_ENOMEM;
	uint64_t h = hmap_hash(key);
	id_hmap_entry_t *e = hmap_slot(m->slots, m->cap, key, h);
	if (e->key == NULL) {
		if ((e->key = strdup(key)) == NULL)
			return ID_ENOMEM;
		e->hash = h;
		m->len++;
	}
	e->value = value;
	return 0;
}
