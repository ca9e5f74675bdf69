/*
 * lifecycle.c — see lifecycle.h for the rules.
 */
#include "processors/lifecycle.h"

#include <stdio.h>
#include <string.h>

#include "common/tz.h"

/* "YYYY-MM-DD", optionally followed by a time part that is ignored (HR
 * systems send both "2027-01-04" and "2027-01-04T00:00:00Z"). */
static bool parse_date(const char *s, int *y, int *m, int *d)
{
	for (int i = 0; i < 10; i++) {
		char c = s[i];
		if (i == 4 || i == 7 ? c != '-' : (c < '0' || c > '9'))
			return false;
	}
	if (s[10] != '\0' && s[10] != 'T' && s[10] != ' ')
		return false;
	*y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
	*m = (s[5] - '0') * 10 + (s[6] - '0');
	*d = (s[8] - '0') * 10 + (s[9] - '0');
	return true;
}

/* Keeps the earliest instant after now as the next change. */
static void next(lifecycle_result_t *r, int64_t now, int64_t at)
{
	if (at > now && (r->next_at == 0 || at < r->next_at))
		r->next_at = at;
}

static int64_t add_days(int64_t at, int32_t days)
{
	return at + (int64_t)days * LIFECYCLE_DAY_MS;
}

int lifecycle_evaluate(const char *employee_id, const lifecycle_facts_t *f,
                       const mapping_timing_t *t, int64_t now, lifecycle_result_t *r,
                       id_err_t *err)
{
	memset(r, 0, sizeof(*r));
	r->state = LC_PENDING;
	if (!f->hired)
		return id_err_set(err, ID_EINVALID, "employee %s: never hired",
		                  employee_id);

	int64_t start = f->employment_at;
	if (f->start_date != NULL && f->start_date[0] != '\0') {
		int y, m, d, rc;
		int64_t local;
		if (strlen(f->start_date) < 10 || !parse_date(f->start_date, &y, &m, &d))
			return id_err_set(
			    err, ID_EINVALID,
			    "employee %s: start_date \"%.40s\" is not a date "
			    "(YYYY-MM-DD)",
			    employee_id, f->start_date);
		if ((rc = tz_local_to_utc(t->timezone, y, m, d, 0, 0, &local, err)) !=
		    0) {
			id_err_wrap(err, "employee %s: start_date %s", employee_id,
			            f->start_date);
			return rc;
		}
		if (local > start)
			start = local;
	}
	r->start_at = start;
	int64_t create_at = add_days(start, -t->create_days_before_start);

	if (f->terminated) {
		r->by = LIFECYCLE_BY_TERMINATION;
		if (f->term_known_at < start && f->term_at <= start) {
			/* Ended before the first day, known before it: the hire
			 * is rescinded.  (A fixed-term contract's end, known
			 * before the start but after it, is an ordinary leave.) */
			r->state = LC_DELETED;
			return 0;
		}
		int64_t disable_at =
		    t->disable_immediately && f->term_known_at < f->term_at
		        ? f->term_known_at
		        : f->term_at;
		if (now >= disable_at) {
			r->state = LC_DISABLED;
			if (t->delete_after_days != MAPPING_NEVER) {
				int64_t base =
				    disable_at > f->term_at ? disable_at : f->term_at;
				int64_t delete_at = add_days(base, t->delete_after_days);
				if (now >= delete_at)
					r->state = LC_DELETED;
				else
					next(r, now, delete_at);
			}
			return 0;
		}
		next(r, now, disable_at);
	}

	r->by = LIFECYCLE_BY_EMPLOYMENT;
	if (now < create_at) {
		r->state = LC_PENDING;
		next(r, now, create_at);
	} else if (now < start && !t->enable_at_create) {
		r->state = LC_PRESTART;
		next(r, now, start);
	} else if (f->on_leave && t->suspend_on_leave) {
		r->state = LC_SUSPENDED;
		r->by = LIFECYCLE_BY_LEAVE;
	} else {
		r->state = LC_ACTIVE; /* enabled on creation: nothing changes at start */
	}
	return 0;
}

const char *lifecycle_state_describe(lifecycle_state_t s)
{
	switch (s) {
	case LC_PENDING:
		return "pending (no account before the pre-start window)";
	case LC_PRESTART:
		return "created disabled (pre-start window)";
	case LC_ACTIVE:
		return "active";
	case LC_SUSPENDED:
		return "suspended (leave of absence)";
	case LC_DISABLED:
		return "disabled (terminated)";
	case LC_DELETED:
		return "deleted";
	default:
		return "unknown";
	}
}
