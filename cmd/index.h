/*
 * index.h — the per-employee index of Kafka positions (see cmd/index.c for
 * the key layout): the stage loop that builds it and the lookups that
 * cmd/timeline.c uses to read exactly one employee's records.
 *
 * Threading: index_loop() owns its store and consumer; run it on one thread.
 * The lookup functions take a store opened by the caller.
 */
#ifndef IDSTREAM_CMD_INDEX_H
#define IDSTREAM_CMD_INDEX_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "state/store.h"

/* Kinds, in the order of timeline's tl_kind_t: hr.events, identity.desired,
 * sink.results. */
#define INDEX_KINDS 3

typedef struct index_stats {
	long records; /* records indexed (re-deliveries included) */
	long batches; /* batches written and committed */
} index_stats_t;

/*
 * Consumes the three topics in group "<prefix>.index" and writes the index
 * at <state.dir>/index.  Runs until cli_stop_requested; with until_idle it
 * stops once it has indexed every partition up to its end as of the moment
 * *upstream_done (NULL: the start) became non-zero, so `run` can let the
 * processor and the sink finish first.  0 or an ID_E* error.
 */
int index_loop(const id_config_t *cfg, bool until_idle,
               volatile sig_atomic_t *upstream_done, index_stats_t *stats, id_err_t *err);

/* "<state.dir>/index" into buf. */
void index_path(const id_config_t *cfg, char *buf, size_t n);

/* One indexed record of an employee. */
typedef struct index_pos {
	int kind; /* 0 hr.events, 1 identity.desired, 2 sink.results */
	int32_t partition;
	int64_t offset;
	int64_t ts;
	char *event_id; /* hr.events: the event's id (owned); NULL when the
	                   store predates it (format < 3) or it was unreadable */
} index_pos_t;

/*
 * All indexed positions of employee, in key order (kind, partition,
 * offset).  Ownership: free *out with index_pos_free().  0 or ID_ESTATE /
 * ID_ENOMEM.
 */
int index_lookup(state_store_t *s, const char *employee, index_pos_t **out, size_t *n,
                 id_err_t *err);
void index_pos_free(index_pos_t *pos, size_t n); /* NULL is a no-op */

/* True when the hr.events entries below the positions carry event ids. */
bool index_has_event_ids(state_store_t *s);

/* Layout version of the store (0x00 "fmt"): 2 has the 'v' entries, 3 the
 * event ids of hr.events entries, 4 the groups of each 'v' entry. */
#define INDEX_FORMAT 4

/* True when the store has the 'v' entries (desired versions by effective
 * time) for everything below the identity.desired positions. */
bool index_has_versions(state_store_t *s);

/* An employee's desired version as the index knows it. */
typedef struct index_version {
	char *employee; /* owned */
	int32_t partition;
	int64_t offset;
	int64_t version;
	int64_t effective_at;
	char *groups; /* index_versions_of(): the version's groups, each ending
	                 in a NUL, groups_len bytes in all (owned); else NULL */
	size_t groups_len;
} index_version_t;

/*
 * For every employee with an indexed desired version effective at or
 * before `at`, the newest such version (ties: the higher offset), in
 * employee id order (the store's key order).  Ownership: free *out with
 * index_versions_free().  0 or ID_ESTATE / ID_ENOMEM.
 */
int index_versions_at(state_store_t *s, int64_t at, index_version_t **out, size_t *n,
                      id_err_t *err);
void index_versions_free(index_version_t *v, size_t n); /* NULL is a no-op */

/* True when the 'v' entries carry the versions' groups (format 4). */
bool index_has_version_groups(state_store_t *s);

/*
 * Every indexed desired version of employee with its groups, in effective
 * time order (employee set on none of them).  Ownership: free *out with
 * index_versions_free().  0 or ID_ESTATE / ID_ENOMEM.
 */
int index_versions_of(state_store_t *s, const char *employee, index_version_t **out,
                      size_t *n, id_err_t *err);

/* The offset up to which (kind, partition) is indexed: every record below it
 * is in the index.  0 when nothing is indexed. */
int64_t index_indexed_until(state_store_t *s, int kind, int32_t partition);

#endif
