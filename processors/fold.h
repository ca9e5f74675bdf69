/*
 * fold.h — the pure fold of the processor:
 *   (employee record, HR event, mapping) → record', desired identity or none.
 *
 * The fold's `now` is the time the event became known (occurred_at; its
 * effective_at when occurred_at is 0), never earlier than the record's
 * clock (rec->now): nothing here reads a clock or does I/O besides reading
 * time zone files, so folding the same events from an empty record with
 * the same mapping always yields byte-identical records and identities.
 *
 * Event semantics (per employee):
 *   HIRE       the event's attributes become the HR attributes (a full
 *              replacement; NULL values are absent); a new employment
 *              starting at max(start_date in the policy's zone, the event's
 *              effective time).  A HIRE of an employee already employed
 *              restates the attributes and keeps the employment.
 *   REHIRE     attributes merged as for UPDATE; a new employment as HIRE.
 *   TERMINATE  attributes merged; the employment ends at the event's
 *              effective time (a later TERMINATE corrects the time).
 *   UPDATE, CONVERSION, LEAVE_START, LEAVE_END
 *              attributes merged (NULL value removes); LEAVE_* also start
 *              or end a leave of absence.  When the effective time is after
 *              `now` the change is kept pending and applied when the fold's
 *              time reaches it (a future-dated transfer).
 *   REEVALUATE nothing is absorbed: the fold's time moves to the event's
 *              (a timer fired), due pending changes apply, and the state is
 *              recomputed.
 *   NAME_GRANTED, NAME_DENIED
 *              the names arbiter's answer to a claim (attributes namespace,
 *              value, claim_id): see "Unique names" below.  Nothing HR
 *              is absorbed and the fold's time does not move.
 *   POLICY_ACTIVATED: ignored by fold_apply() (record unchanged, nothing
 *              emitted).  A POLICY_ACTIVATED
 *              marker is not an employee's event: the processor switches the
 *              partition's mapping (processors/policy_registry.h) and calls
 *              fold_reevaluate() for every employee of the partition.
 * The lifecycle state is processors/lifecycle.h's function of these facts,
 * the mapping's timing and `now`; rec->timer_at is the next instant it (or
 * a pending change) takes effect, 0 when none — the processor schedules a
 * REEVALUATE event for it.  The @state cause is the event of the deciding
 * fact (the TERMINATE whose time came, the HIRE whose start came), not the
 * REEVALUATE that noticed.
 * An event other than HIRE/REHIRE for an employee with no hire yet is
 * refused with ID_ENOTFOUND (record unchanged): creating an account from a
 * partial update would guess at data HR never sent.  A REEVALUATE for such
 * a record is ignored.
 *
 * A new desired version is emitted only when the computed identity differs
 * in target-visible content from the last one emitted
 * (desired_identity_same_target_state, ignoring policy_version: a policy
 * that maps an employee to the same identity is not a change), so
 * re-ingesting the same data, or a second TERMINATE, emits nothing.
 *
 * Unique names.  A mapping may return ordered candidate lists (the
 * policy's `unique` table: namespace → candidates, mapping_context_t.unique);
 * the built-in mapping returns none, and then nothing below happens.  The
 * record keeps, per namespace, the granted value, the value claimed and not
 * answered yet (pending) and the values denied (employee_name_t).  The
 * mapping sees the grants as ctx.granted.  After each evaluation, for each
 * namespace of the lists:
 *   - the granted value is still a candidate: nothing to do (a pending
 *     claim is dropped; should its grant come, the value is released);
 *   - else the first candidate not denied is the one wanted; when it is not
 *     the pending claim, it is claimed (a CLAIM in *claims, pending = it);
 *   - no candidate left: ID_ECONFLICT "no free <ns> among N candidates"
 *     (record unchanged: the identity is held with that error).
 * While any namespace lacks a grant that is still a candidate, the new
 * identity is held back: nothing is emitted (an account keeps its old name,
 * a new hire gets no account yet) and claims->held is set.
 *   NAME_GRANTED for the pending value records the grant (the previous
 *   grant of the namespace, a rename's old name, is released: RELEASE with
 *   quarantine_until = now + timing.name_quarantine_days) and re-evaluates.
 *   A grant of the value already granted changes nothing; a grant of a value
 *   no longer wanted is released at once (quarantine_until = now: it was
 *   never used).
 *   NAME_DENIED adds the value to the denied list and re-evaluates, which
 *   claims the next candidate.
 * When the lifecycle reaches DELETED, every grant is released (RELEASE with
 * the quarantine above), pending claims are dropped and nothing is claimed;
 * the released values stay visible to the mapping while the record is
 * terminated (the deleted identity keeps its names).  Without
 * timing.reuse_name_after_delete they are also denied, so a later rehire
 * gets other names.  Claims are outputs: the fold does no I/O; each has
 * claimed_at = the fold's now, source_event_id = the event folded and
 * claim_id = name_claim_make_id(), so a replay makes the same claims.
 *
 * Thread safety: none beyond the arguments'; a record belongs to one thread.
 */
#ifndef IDSTREAM_FOLD_H
#define IDSTREAM_FOLD_H

#include <stdbool.h>

#include "common/err.h"
#include "processors/employee_record.h"
#include "processors/mapping.h"
#include "schemas/model.h"

/* The HR attribute holding the first day of work, "YYYY-MM-DD". */
#define FOLD_HR_START_DATE "start_date"

/*
 * The claims one fold asks the processor to publish on
 * <prefix>.names.claims (CLAIM and RELEASE name_claim_t, every field set,
 * in the order made), and whether the identity is held back waiting for a
 * grant.  Caller-owned; reuse one across calls (each fold appends: call
 * fold_claims_clear() between events).
 */
typedef struct fold_claims {
	name_claim_t *items;
	size_t len;
	size_t cap;
	bool held;    /* a namespace lacks a grant: no version was emitted */
	bool changed; /* the record's names changed (persist the record) */
} fold_claims_t;

void fold_claims_init(fold_claims_t *c);
/* Empties the list and the flags, keeping the allocation. */
void fold_claims_clear(fold_claims_t *c);
void fold_claims_fini(fold_claims_t *c);

/*
 * Folds ev into rec and computes the desired identity with m.
 *
 * When a new version results, *out (which must be initialised; its old
 * content is freed) receives a copy of it — version = last + 1 (from 1),
 * cause_event_id = ev->event_id, effective_at = the fold's now, causes with
 * the id of the event that last changed an HR attribute each output derives
 * from — rec->last holds the same, and *emitted is true.  Otherwise *emitted
 * is false and *out is left as it was.  out may be NULL: no copy is made and
 * the new version is read from rec->last (the processor's hot path).
 *
 * Errors, and what they leave in rec (persist rec after every return except
 * ID_ENOMEM):
 *   ID_EINVALID  the event is unusable (no event id, another employee's id,
 *                unknown type, attribute key starting with the reserved
 *                '@'): rec unchanged.
 *   ID_ENOTFOUND UPDATE/TERMINATE for an employee never hired: rec unchanged.
 *   ID_EINVALID / ID_EPARSE / ID_ENOTFOUND from the mapping or the
 *                lifecycle (e.g. a name that folds to nothing, invalid
 *                UTF-8, a start_date that is not a date, an unknown time
 *                zone, a policy error): the event's HR facts are absorbed
 *                into rec, nothing is emitted; a later event that fixes the
 *                data emits normally.
 *   ID_ENOMEM    rec may be half-updated: discard it and reload from state.
 * err names the employee, the event and the field.
 */
int fold_apply(employee_record_t *rec, const employee_event_t *ev, const mapping_t *m,
               desired_identity_t *out, bool *emitted, id_err_t *err);

/*
 * fold_apply() with unique names: the claims to publish are appended to
 * *claims (see "Unique names" above).  With claims NULL — what fold_apply()
 * passes — names are not arbitrated: the unique lists are ignored and the
 * identity is emitted as the mapping computes it (ctx.granted still shows
 * the record's grants), which is how a policy is looked at on its own
 * (tests, `policy check`); every stage that folds the log (process, replay,
 * plan) passes a list.  A NAME_GRANTED / NAME_DENIED without namespace or
 * value is refused with ID_EINVALID (record unchanged).
 */
int fold_apply_claims(employee_record_t *rec, const employee_event_t *ev,
                      const mapping_t *m, desired_identity_t *out, bool *emitted,
                      fold_claims_t *claims, id_err_t *err);

/*
 * Re-evaluates rec under m without absorbing anything: the identity of
 * rec's HR facts at now = the cause's time (pending changes that are due
 * by then apply).  Used
 * after a policy activation (cause is the marker), so that a new mapping
 * reaches every employee, not only those with a later HR event.
 *
 * A new version is emitted exactly as fold_apply() would (only when a
 * target would see a difference; *out, rec->last and *emitted likewise),
 * with cause_event_id = cause->event_id.  Each output whose value differs
 * from rec->last (every output when nothing was emitted before) has
 * cause->event_id as its cause; unchanged outputs keep their HR causes.
 * rec->seq and the HR facts are untouched.  A record never hired (status
 * NONE) emits nothing.
 *
 * Errors: ID_EINVALID (cause has no event id), the mapping's errors
 * (rec unchanged, nothing emitted: the employee keeps the previous
 * version), ID_ENOMEM (discard rec and reload it).
 */
int fold_reevaluate(employee_record_t *rec, const employee_event_t *cause,
                    const mapping_t *m, desired_identity_t *out, bool *emitted,
                    id_err_t *err);

/* fold_reevaluate() reporting claims like fold_apply_claims(). */
int fold_reevaluate_claims(employee_record_t *rec, const employee_event_t *cause,
                           const mapping_t *m, desired_identity_t *out, bool *emitted,
                           fold_claims_t *claims, id_err_t *err);

#endif
