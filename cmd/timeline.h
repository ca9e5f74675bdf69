/*
 * timeline.h — everything the pipeline recorded about one employee, decoded
 * and in order: HR events, desired identity versions and sink results.
 * Shared by `history`, `why` and `as-of`.
 *
 * All three topics are keyed by employee id with Kafka's murmur2
 * partitioner, so only the one partition of each topic that can hold the
 * employee is read: with the index (cmd/index.c, read even while another
 * process writes it) only the employee's indexed offsets plus whatever lies
 * past the indexed position, without it the partition from its start to its
 * current end.  Both give the same entries.  Entries are ordered by their
 * Kafka timestamps (log append time), ties by topic then offset.
 *
 * Ownership: timeline_fini() frees every entry.
 */
#ifndef IDSTREAM_TIMELINE_H
#define IDSTREAM_TIMELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "schemas/model.h"

typedef enum { TL_EVENT = 0, TL_DESIRED = 1, TL_RESULT = 2 } tl_kind_t;
#define TL_KINDS 3

typedef struct tl_entry {
	int64_t ts; /* Kafka timestamp, ms */
	tl_kind_t kind;
	int32_t partition;
	int64_t offset;
	bool unreadable; /* error holds why; the structs are empty */
	char *error;
	employee_event_t ev;  /* kind TL_EVENT */
	desired_identity_t d; /* kind TL_DESIRED */
	sink_result_t r;      /* kind TL_RESULT */
} tl_entry_t;

typedef struct timeline {
	tl_entry_t *items;
	size_t len, cap;
} timeline_t;

/* Topic suffix of a kind: "hr.events", "identity.desired", "sink.results". */
const char *timeline_topic_suffix(tl_kind_t kind);

/*
 * Loads employee's timeline.  0, or an ID_E* error (e.g. a missing topic).
 * The policy activation markers that the employee's versions name as causes
 * are entries too (kind TL_EVENT, type EV_POLICY_ACTIVATED, employee id
 * "@policy").  cfg: the consumer options of timeline.c (fetch.wait.max.ms,
 * fetch.error.backoff.ms, max.partition.fetch.bytes) are set in its kafka.*
 * options, except those the user configured; meant for one-shot commands.
 */
int timeline_load(id_config_t *cfg, const char *employee, timeline_t *out, id_err_t *err);

/* Kinds for timeline_load_kinds(). */
#define TL_KIND_BIT(k) (1u << (k))
#define TL_ALL_KINDS                                                                     \
	(TL_KIND_BIT(TL_EVENT) | TL_KIND_BIT(TL_DESIRED) | TL_KIND_BIT(TL_RESULT))

/* timeline_load() reading only the kinds in the mask (e.g. as-of needs
 * only the desired versions); policy markers come with TL_EVENT only. */
int timeline_load_kinds(id_config_t *cfg, const char *employee, unsigned kinds,
                        timeline_t *out, id_err_t *err);

/*
 * What a reader explaining one desired version needs, given the timeline's
 * sink results and desired versions: *explains, the version it explains
 * (-1: none), and the HR events it names, *ids (malloc'd array, freed by
 * the loader; the strings are borrowed from t) and *n.  0 or ID_ENOMEM.
 */
typedef int (*timeline_need_fn)(const timeline_t *t, void *opaque, const char ***ids,
                                size_t *n, int64_t *explains);

/*
 * timeline_load() for `why`, which explains one version: the sink results;
 * of the desired versions the newest and, for each of its groups, the
 * version that started its membership and the one before (the index's
 * groups per version tell which), and every version past the indexed
 * position; all of them when need() explains an older version or the index
 * lacks the groups; then of the HR events only those need() names (all when the
 * index lacks the event ids), plus any past the indexed position and the
 * policy markers the versions name.  With the membership starts and the
 * versions before them loaded, a walk over the loaded versions finds each
 * membership's start as it would over all of them.
 */
int timeline_load_events(id_config_t *cfg, const char *employee, timeline_need_fn need,
                         void *opaque, timeline_t *out, id_err_t *err);
void timeline_fini(timeline_t *t);

/*
 * True for an attribute of ev that one-line summaries leave out: of a policy
 * activation, everything but the policy's name and version (its Lua source,
 * SHA-256 and deployment id; `history --verbose` and --json show them).
 */
bool timeline_attr_is_detail(const employee_event_t *ev, const char *key);

/* The HR event with this event id, or NULL. */
const employee_event_t *timeline_find_event(const timeline_t *t, const char *event_id);

/* "2026-11-25T19:26:34.016Z" */
void timeline_fmt_time(int64_t ms, char *out, size_t n);
/* Parses "2026-11-25", "2026-11-25T10:00:00Z" (UTC; fractions allowed) or
 * milliseconds since the epoch.  0 or ID_EINVALID. */
int timeline_parse_time(const char *s, int64_t *ms);

#endif
