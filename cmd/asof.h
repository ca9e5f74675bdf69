/*
 * asof.h — every employee's desired identity at an instant, read through
 * the index when it has the as-of entries (see cmd/asof.c).  Used by
 * `as-of TIME` and by `plan` (the current identities to diff against).
 *
 * Threading: one thread per call; nothing shared.
 */
#ifndef IDSTREAM_CMD_ASOF_H
#define IDSTREAM_CMD_ASOF_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/hmap.h"

typedef struct asof_stats {
	bool used_index; /* false: identity.desired was scanned */
	size_t indexed;  /* versions the index pointed at */
	long read;       /* records of identity.desired read */
	long decoded;    /* of those, decoded */
	long unreadable; /* of those, not decodable (left out) */
} asof_stats_t;

/* "The newest version", whatever its effective time. */
#define ASOF_NEWEST INT64_MAX

/*
 * Puts into latest (initialised by the caller) each employee's newest
 * desired version effective at or before `at` (ASOF_NEWEST: the newest of
 * all), keyed by employee id; employees without one are not there.
 * Ownership: the values are malloc'd desired_identity_t the caller frees
 * with asof_latest_free() (also after an error).  0 or an ID_E* error.
 */
int asof_collect(const id_config_t *cfg, int64_t at, id_hmap_t *latest, asof_stats_t *st,
                 id_err_t *err);

/* Frees the values and the map (id_hmap_fini). */
void asof_latest_free(id_hmap_t *latest);

#endif
