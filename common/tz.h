/*
 * tz.h — local civil time in an IANA time zone, from the system's compiled
 * zone files (TZif, RFC 8536; /usr/share/zoneinfo, or $TZDIR).
 *
 * Used by the lifecycle to turn a start date ("2027-01-04") into the instant
 * it begins in the employee's zone.  The C library's mktime() cannot do that
 * for an arbitrary zone without changing the process-wide TZ variable, which
 * is not safe while other threads run; this reader needs no global state
 * beyond a cache of parsed zones.
 *
 * Determinism: results depend only on the arguments and the zone files, so
 * two machines with the same tzdata give the same instants.  Instants after
 * the last transition in the file follow the file's footer (the POSIX TZ
 * rule, RFC 8536 section 3.3), so "slim" zone files (transitions only until
 * the rule last changed) and instants after 2037 get daylight time right.
 *
 * Threads: every function may be called from several threads at once; the
 * zone cache is guarded by a mutex and zones are never freed before exit.
 */
#ifndef IDSTREAM_TZ_H
#define IDSTREAM_TZ_H

#include <stdint.h>

#include "common/err.h"

/*
 * The UTC instant (ms since the epoch) at which local time
 * year-month-day hh:mm:00 occurs in zone.  A local time that does not exist
 * (skipped by a DST change) maps to the instant the gap ends; one that
 * occurs twice maps to the first.  "UTC" and "Etc/UTC" need no file.
 * Errors: ID_EINVALID (bad date or zone name: only [A-Za-z0-9_+-/], no
 * "..", at most 64 bytes), ID_ENOTFOUND (no such zone file), ID_EPARSE (the
 * file is not TZif), ID_ENOMEM.  err names the zone.
 */
int tz_local_to_utc(const char *zone, int year, int month, int day, int hour, int minute,
                    int64_t *ms, id_err_t *err);

/* The offset from UTC (seconds east) in force in zone at instant ms. */
int tz_offset_at(const char *zone, int64_t ms, int32_t *offset, id_err_t *err);

#endif
