/*
 * watch.h — `idstream ingest csv --watch DIR`: HR exports dropped into a
 * folder (an SFTP drop) are each processed once, in the order they arrived,
 * and moved aside: DIR/done/<name> when processed, DIR/failed/<name> plus
 * DIR/failed/<name>.error (the reason, one line) when refused.
 *
 * Which files: regular files in DIR itself whose name matches the pattern
 * and is not a dot-file or a partial upload (*.tmp, *.part, *.partial,
 * *.filepart, *.crdownload, *~), and whose size and modification time have
 * not changed for settle_ms (a writer that is still uploading changes them).
 * Ready files are processed oldest modification time first, then by name.
 *
 * Exactly once across crashes: after a file is processed, one synced batch
 * records it ("f/" its SHA-256, for the history, and "m/" its name → its
 * SHA-256: "processed, not moved yet"); then it is renamed, then "m/" is
 * deleted.  A file found with an "m/" entry of the same content is moved
 * without being processed again, so a crash between publishing and moving
 * publishes nothing twice.  (A crash inside the processing itself is the
 * processor's business: `ingest csv` publishes a file in one transaction.)
 * Failpoint (common/failpoint.h) "watch.after_record": recorded, not moved.
 *
 * State store (borrowed):
 *   key                  offset  size  content
 *   "f/" sha256 (hex)    0       2+64  ASCII
 *     value              0       8     processed at, ms since the epoch, BE
 *                        8       n     file name as dropped
 *   "m/" name            0       2+n   ASCII "m/", file name
 *     value              0       64    SHA-256 (hex) of the processed content
 *
 * Outcomes of the process callback: 0 → done/; a refusal of the file itself
 * (watch_error_refuses_file: malformed, unreadable, invalid, over the
 * termination threshold) → failed/ with the message; anything else (Kafka,
 * state) → the file stays where it is and is tried again after interval_ms,
 * and no later file is processed before it (exports are full snapshots:
 * their order matters).
 *
 * Thread safety: one watcher per folder and store; single-threaded.
 */
#ifndef IDSTREAM_INGEST_WATCH_H
#define IDSTREAM_INGEST_WATCH_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "state/store.h"

/*
 * Processes one ready file (path: DIR/name).  summary (may stay "") gets a
 * one-line description for the log.  0, or an ID_E* code with err set.
 */
typedef int (*watch_process_fn)(void *opaque, const char *path, char *summary,
                                size_t summary_len, id_err_t *err);

typedef struct watch_opts {
	const char *dir;
	const char *pattern; /* fnmatch(3) on the name; NULL or "" = every name */
	int64_t settle_ms;   /* unchanged this long = complete; 0 = 2000 */
	int64_t interval_ms; /* between scans; 0 = 1000 */
	/* Process what is there (waiting for files to settle, up to
	 * 10 × settle_ms more), then return. */
	bool once;
	state_store_t *store; /* borrowed */
	watch_process_fn process;
	void *opaque;
	/* Returns after the current file once *stop is non-zero (may be NULL). */
	volatile sig_atomic_t *stop;
} watch_opts_t;

typedef struct watch_report {
	size_t processed; /* moved to done/ after processing */
	size_t failed;    /* moved to failed/ */
	size_t recovered; /* processed before a crash, moved now */
	size_t waiting;   /* with once: left behind, still changing or retried */
} watch_report_t;

/* True for the codes that mean "this file is refused" (→ failed/). */
bool watch_error_refuses_file(int code);

/* True when name is a candidate by name (before the pattern). */
bool watch_name_eligible(const char *name);

/*
 * Watches until *stop (or, with once, until the folder is handled).  done/
 * and failed/ are created when missing.  rep (may be NULL) counts what was
 * done.  Errors: ID_EIO (DIR unreadable, a rename failed), ID_ESTATE; with
 * once also the error of a file that must be retried (it stays in DIR).
 */
int watch_run(const watch_opts_t *o, watch_report_t *rep, id_err_t *err);

#endif
