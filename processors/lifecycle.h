/*
 * lifecycle.h — the joiner/mover/leaver state of an employee's accounts at
 * an instant, and the next instant at which it changes.
 *
 * A pure function of the employment facts kept in the employee record, the
 * timing the policy decided (mapping_timing_t) and `now` (the fold's time,
 * taken from an event; never the clock):
 *
 *   start       = max(local midnight of HR start_date in timing.timezone,
 *                     effective time of the last HIRE/REHIRE)
 *   create_at   = start - create_days_before_start days
 *
 *   hired, now <  create_at                     PENDING     (no account)
 *   hired, now in [create_at, start)            PRESTART    (created disabled;
 *                                               ACTIVE when enable = "create")
 *   hired, now >= start                         ACTIVE, or SUSPENDED while on
 *                                               leave and suspend_on_leave
 *   terminated, learnt before start             DELETED     (hire rescinded)
 *   terminated, now < disable_at                as hired, until disable_at
 *   terminated, now >= disable_at               DISABLED
 *   terminated, now >= delete_at                DELETED
 *
 * where disable_at is the termination's effective time, or the time it was
 * learnt when timing.disable_immediately, and delete_at is
 * max(disable_at, effective time) + delete_after_days (never when
 * MAPPING_NEVER).  next_at is the smallest of these instants after now (0
 * when no later change is scheduled); the processor keeps it as a timer.
 *
 * Thread safety: reentrant (time zone files are read through common/tz.h).
 */
#ifndef IDSTREAM_LIFECYCLE_H
#define IDSTREAM_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "processors/mapping.h"
#include "schemas/model.h"

#define LIFECYCLE_DAY_MS INT64_C(86400000)

/* Which employment fact decided the state (for causes). */
typedef enum {
	LIFECYCLE_BY_EMPLOYMENT,  /* the HIRE/REHIRE (and its start date) */
	LIFECYCLE_BY_TERMINATION, /* the TERMINATE */
	LIFECYCLE_BY_LEAVE        /* the LEAVE_START / LEAVE_END */
} lifecycle_by_t;

typedef struct lifecycle_facts {
	bool hired;             /* a HIRE/REHIRE was absorbed */
	bool terminated;        /* and a TERMINATE after it */
	const char *start_date; /* HR start_date "YYYY-MM-DD…", or NULL */
	int64_t employment_at;  /* effective time of the last HIRE/REHIRE */
	int64_t term_at;        /* the termination's effective time */
	int64_t term_known_at;  /* the fold time it was learnt */
	bool on_leave;
} lifecycle_facts_t;

typedef struct lifecycle_result {
	lifecycle_state_t state;
	lifecycle_by_t by;
	int64_t start_at; /* the computed start instant */
	int64_t next_at;  /* next instant the state changes; 0: none */
} lifecycle_result_t;

/*
 * Computes the state at now.  Errors (ID_EINVALID, ID_ENOTFOUND for an
 * unknown time zone) name the employee, the field and the value: a
 * start_date that is not a date, a zone with no zone file.  employee_id is
 * only used in messages.
 */
int lifecycle_evaluate(const char *employee_id, const lifecycle_facts_t *f,
                       const mapping_timing_t *t, int64_t now, lifecycle_result_t *r,
                       id_err_t *err);

/* "pending (no account ...)", "created disabled (...)", ... for people. */
const char *lifecycle_state_describe(lifecycle_state_t s);

#endif
