/*
 * ingest_csv.h — the CSV ingest stage: one HR export file in, the employee
 * events it implies out on <topic.prefix>.hr.events (key = employee id).
 *
 * Steps: read and validate the whole file (csv_reader), load the previous
 * snapshot from <state.dir>/ingest-<ingest.source>, diff (export_diff), apply
 * the mass-termination guard, publish every event in ONE Kafka transaction
 * (transactional.id "<topic.prefix>.ingest.<ingest.source>"), and only after
 * the commit write the new snapshot in one synced batch.  Consequences:
 *   - an invalid file, a tripped guard or a failed publish publishes nothing
 *     and leaves the snapshot as it was;
 *   - the same file again publishes nothing;
 *   - a crash between the commit and the snapshot write makes the next run
 *     publish the same events again with the same event ids (consumers drop
 *     them as duplicates).
 * Every event's occurred_at and effective_at is the file's modification time.
 *
 * Thread safety: one run at a time per source (the snapshot store is locked
 * by RocksDB and the transactional id fences a second producer).
 */
#ifndef IDSTREAM_INGEST_CSV_H
#define IDSTREAM_INGEST_CSV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "schemas/model.h"

typedef struct ingest_csv_opts {
	const char *file; /* the export to ingest */
	bool force;       /* publish even when the mass-termination guard trips */
	bool dry_run;     /* compute and report; publish and store nothing */
	/* Optional: called for every event (published or, with dry_run, that
	 * would be), in employee id order, before publishing.  Borrowed. */
	void (*on_event)(const employee_event_t *ev, void *opaque);
	void *opaque;
} ingest_csv_opts_t;

typedef struct ingest_csv_report {
	size_t rows; /* employee rows in the file */
	size_t hires;
	size_t updates;
	size_t terminations;
	size_t rehires;
	size_t unchanged;        /* in the file, nothing changed */
	size_t still_terminated; /* terminated earlier, still absent */
	size_t known_active;     /* active employees before this file */
	size_t published;        /* events committed to Kafka (0 on dry run) */
	/* terminations > ingest.termination_threshold × known_active: with
	 * dry_run it is only reported, with force it was overridden. */
	bool threshold_exceeded;
	char file_sha256[65];
	int64_t at_ms; /* occurred_at/effective_at given to the events */
} ingest_csv_report_t;

/*
 * Runs the stage once for opts->file.  report (may be NULL) is filled as far
 * as the run got, also on error.  Errors:
 *   ID_EPARSE / ID_EIO  the file is invalid or unreadable (nothing published)
 *   ID_ETHRESHOLD       too many terminations without force (nothing published)
 *   ID_ENOTFOUND        the hr.events topic does not exist
 *   ID_EKAFKA/EFENCED   publishing failed; the transaction was aborted
 *   ID_ESTATE           the snapshot could not be read or written
 *   ID_ECONFIG          ingest.source is not a usable name
 */
int ingest_csv_run(const id_config_t *cfg, const ingest_csv_opts_t *opts,
                   ingest_csv_report_t *report, id_err_t *err);

#endif
