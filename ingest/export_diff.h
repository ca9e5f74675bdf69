/*
 * export_diff.h — turns a full HR export into the employee events it implies,
 * given what the previous exports said (the snapshot).
 *
 *   in the file, unknown to the snapshot        → HIRE      (all attributes)
 *   in the file, active, attributes changed     → UPDATE    (changed ones only;
 *                                                 a value gone from the file is
 *                                                 sent as NULL = cleared)
 *   in the file, active, attributes the same    → nothing   (unchanged)
 *   in the file, terminated in the snapshot     → REHIRE    (all attributes, plus
 *                                                 NULL for ones gone since)
 *   missing from the file, active               → TERMINATE (no attributes)
 *   missing from the file, already terminated   → nothing   (still terminated)
 *
 * The diff is pure: no I/O, no clock (the caller passes the time), and the
 * output is ordered by employee id (strcmp, which is also RocksDB's bytewise
 * key order).  Identical inputs give byte-identical events, so re-publishing
 * after a crash between the Kafka commit and the snapshot write carries the
 * same event ids and consumers can drop the duplicates.
 *
 * event_id = first 32 hex digits of SHA-256(source NUL file_sha256 NUL
 * employee_id NUL type NUL seq), where seq is the number of events this
 * source had already published for the employee (kept in the snapshot).  seq
 * makes ids differ when the same file is ingested again later (A, B, A, B:
 * the second B's TERMINATE is a new event, not a duplicate of the first).
 * source_event_id = "<first 16 hex digits of file_sha256>:<employee_id>:<seq>"
 * — the seq for the same reason: (source, source_event_id) is the dedupe key
 * of EmployeeEvent, and a re-ingested file must not look like a duplicate.
 *
 * Thread safety: none needed; all objects are caller-owned.
 */
#ifndef IDSTREAM_INGEST_EXPORT_DIFF_H
#define IDSTREAM_INGEST_EXPORT_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/err.h"
#include "ingest/csv_reader.h"
#include "schemas/model.h"

/* What the source last said about one employee. */
typedef struct export_entry {
	char *employee_id;
	bool terminated;  /* missing from the last export(s), TERMINATE published */
	uint64_t seq;     /* events published for this employee by this source */
	id_attrs_t attrs; /* attributes of the last export that had the employee */
} export_entry_t;

void export_entry_init(export_entry_t *e);
void export_entry_fini(export_entry_t *e);

/* A set of entries keyed by employee id. */
typedef struct export_snapshot export_snapshot_t;

/* Ownership: caller frees with export_snapshot_destroy(); NULL on ENOMEM. */
export_snapshot_t *export_snapshot_create(void);
void export_snapshot_destroy(export_snapshot_t *s);
/*
 * Adds a copy of an entry (any order; appending in id order is cheapest).
 * ID_ECONFLICT when the id is already present, ID_ENOMEM.
 */
int export_snapshot_add(export_snapshot_t *s, const char *employee_id, bool terminated,
                        uint64_t seq, const id_attrs_t *attrs);
/* Borrowed entry or NULL; valid until the next add or destroy. */
const export_entry_t *export_snapshot_find(export_snapshot_t *s, const char *employee_id);
/* Entries sorted by employee id (borrowed, valid until the next add). */
const export_entry_t *export_snapshot_entries(export_snapshot_t *s, size_t *n);
/* Number of entries not terminated. */
size_t export_snapshot_active_count(const export_snapshot_t *s);

typedef struct export_diff_params {
	const char *source;      /* ingest.source, e.g. "csv" */
	const char *file_sha256; /* hex SHA-256 of the export (>= 16 digits) */
	const char *actor;       /* e.g. "csv:hr-export-2.csv" */
	int64_t at_ms;           /* occurred_at and effective_at of every event */
} export_diff_params_t;

/* One event and the snapshot entry the employee has once it is published. */
typedef struct export_change {
	employee_event_t event;
	export_entry_t entry;
} export_change_t;

typedef struct export_diff {
	export_change_t *changes; /* sorted by employee id */
	size_t nchanges;
	size_t hires;
	size_t updates;
	size_t terminations;
	size_t rehires;
	size_t unchanged;        /* in the file, nothing changed */
	size_t still_terminated; /* terminated before, still missing */
	size_t known_active;     /* active entries of the previous snapshot */
} export_diff_t;

#define EXPORT_DIFF_INIT                                                                 \
	{                                                                                \
		NULL, 0, 0, 0, 0, 0, 0, 0, 0                                             \
	}

/*
 * Computes the changes from prev (may be empty, not NULL) to rows (as read by
 * csv_reader: unique ids).  out must be zeroed (EXPORT_DIFF_INIT); on
 * success the caller frees it with export_diff_fini().  On error out is left
 * empty.  Errors: ID_ENOMEM, ID_EINVALID (missing params).
 */
int export_diff_compute(export_snapshot_t *prev, const csv_row_t *rows, size_t nrows,
                        const export_diff_params_t *params, export_diff_t *out,
                        id_err_t *err);
void export_diff_fini(export_diff_t *d);

#endif
