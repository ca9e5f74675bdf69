/*
 * name_arbiter.h — the pure decisions behind unique names (usernames,
 * e-mails, ...) across all employees, whatever the partitioning.
 *
 * Claims travel on <prefix>.names.claims keyed by name_key() =
 * "<namespace>:<value with A-Z folded to a-z>", so every claim on one name
 * lands on one partition and is decided there, in log order, by
 * name_arbiter_decide() against the name's entry.  The answer to a CLAIM is
 * an EmployeeEvent (NAME_GRANTED / NAME_DENIED) for the claimant's stream,
 * built by name_arbiter_answer().  Decisions read nothing but the entry and
 * the claim (claimed_at, never a clock), so replaying names.claims from
 * offset 0 into empty entries gives the same answers, byte for byte.
 *
 * Rules (entry state → what a claim gets):
 *   FREE      CLAIM granted (the claimant owns it); RESERVE → RESERVED
 *   GRANTED   CLAIM by the owner granted again (sticky), else denied "taken"
 *   RESERVED  CLAIM by the owner granted (→ GRANTED), else denied "reserved"
 *   RELEASED  CLAIM by the old owner granted; by anyone else denied
 *             "quarantined" while claimed_at < quarantine_until, granted
 *             from then on.  RESERVE → RESERVED (the name exists again).
 *   RELEASE by the owner of a GRANTED/RESERVED/RELEASED name → RELEASED
 *   with the release's quarantine_until; by anyone else it is ignored.
 *   RESERVE of a name GRANTED/RESERVED by another owner is ignored.
 * A claim that is malformed (empty or over-long fields, ':' or control
 * characters in the namespace, a message key that is not its name_key) is
 * denied "invalid" without touching the entry.
 *
 * No I/O, no clock, no globals: safe from any thread on distinct objects.
 */
#ifndef IDSTREAM_NAME_ARBITER_H
#define IDSTREAM_NAME_ARBITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "schemas/model.h"

/* Limits a valid claim respects (bytes). */
#define NAME_NAMESPACE_MAX 64
#define NAME_VALUE_MAX     256
#define NAME_OWNER_MAX     1024

/* Event attribute keys of NAME_GRANTED / NAME_DENIED. */
#define NAME_ATTR_NAMESPACE        "namespace"
#define NAME_ATTR_VALUE            "value"
#define NAME_ATTR_CLAIM_ID         "claim_id"
#define NAME_ATTR_REASON           "reason"           /* denials only */
#define NAME_ATTR_QUARANTINE_UNTIL "quarantine_until" /* reason "quarantined" */

/* Source of the answer events. */
#define NAME_EVENT_SOURCE "idstream"

typedef enum {
	NAME_STATE_FREE,     /* no entry: nobody holds the name */
	NAME_STATE_GRANTED,  /* an employee holds it */
	NAME_STATE_RESERVED, /* imported: exists outside idstream */
	NAME_STATE_RELEASED  /* given up; the old owner's until quarantine_until */
} name_state_t;

/* "FREE", "GRANTED", "RESERVED", "RELEASED"; "UNKNOWN" otherwise. */
const char *name_state_name(name_state_t s);

/* The arbiter's record of one name (the state store's value). */
typedef struct name_entry {
	name_state_t state;
	char *owner;              /* NULL when FREE */
	char *value;              /* the name as its owner claimed it (case kept) */
	char *claim_id;           /* the claim that set the current state */
	int64_t since;            /* claimed_at of that claim */
	int64_t quarantine_until; /* RELEASED: the old owner's until then */
} name_entry_t;

void name_entry_init(name_entry_t *e);
void name_entry_fini(name_entry_t *e); /* back to FREE; twice is safe */

/*
 * Entry bytes (state value), all integers big-endian:
 *
 *   | offset | size  | content                                  |
 *   |--------|-------|------------------------------------------|
 *   | 0      | 1     | format = 0x01                            |
 *   | 1      | 1     | state (name_state_t, never FREE)         |
 *   | 2      | 8     | since                                    |
 *   | 10     | 8     | quarantine_until                         |
 *   | 18     | 4 + n | owner: be32 n, n bytes                   |
 *   | ...    | 4 + n | value                                    |
 *   | ...    | 4 + n | claim_id                                 |
 *
 * encode: out is reset first; ID_EINVALID for a FREE entry, ID_ENOMEM.
 * decode: *e is fini'd and refilled; ID_EPARSE (with a message) for bytes
 * that are not a whole entry.
 */
int name_entry_encode(const name_entry_t *e, id_buf_t *out);
int name_entry_decode(name_entry_t *e, const void *data, size_t len, id_err_t *err);

/*
 * The message key of a name: "<ns>:<value>" with ASCII A-Z folded to a-z
 * (other bytes as they are: the policy's candidates are ASCII-folded
 * already, and e-mail domains compare without case).  out is reset first;
 * no NUL is appended.  0 or ID_ENOMEM.
 */
int name_key(const char *ns, const char *value, id_buf_t *out);

/*
 * Sets c->claim_id (replacing any) from the other fields: the first 16
 * bytes, as 32 lower-case hex digits, of SHA-256 over
 *   kind NUL employee_id NUL namespace NUL value NUL claimed_at (decimal)
 * so the same claim made again (a replayed fold) has the same id.
 * 0, ID_EINVALID (a NULL field) or ID_ENOMEM.
 */
int name_claim_make_id(name_claim_t *c);

/*
 * Checks the claim's fields and, when key != NULL, that key (klen bytes,
 * the Kafka message key) is name_key(c).  0, or ID_EINVALID with a
 * message naming the field; ID_ENOMEM.
 */
int name_claim_check(const name_claim_t *c, const void *key, size_t klen, id_err_t *err);

typedef enum {
	NAME_OUTCOME_NONE,    /* RELEASE / RESERVE: nobody is answered */
	NAME_OUTCOME_GRANTED, /* CLAIM granted: answer NAME_GRANTED */
	NAME_OUTCOME_DENIED   /* CLAIM denied: answer NAME_DENIED */
} name_outcome_t;

typedef enum {
	NAME_REASON_NONE,
	NAME_REASON_TAKEN,       /* granted to another employee */
	NAME_REASON_RESERVED,    /* exists outside idstream (imported) */
	NAME_REASON_QUARANTINED, /* released, still the old owner's */
	NAME_REASON_INVALID,     /* the claim is malformed */
	NAME_REASON_NOT_OWNER    /* RELEASE by someone who does not hold it */
} name_reason_t;

/* "taken", "reserved", "quarantined", "invalid", "not_owner"; "" for NONE. */
const char *name_reason_name(name_reason_t r);

typedef struct name_decision {
	name_outcome_t outcome;
	name_reason_t reason;     /* why denied, or why a RELEASE/RESERVE did nothing */
	bool changed;             /* the entry changed: persist it */
	int64_t quarantine_until; /* reason QUARANTINED: when the hold ends */
	char detail[256];         /* one line for logs (no other owner named) */
} name_decision_t;

/*
 * Decides claim c against the name's entry e (FREE when the name has none),
 * updating e.  key/klen: the Kafka message key to verify (NULL: not
 * checked).  Returns 0 (the decision is in *d, invalid claims included) or
 * ID_ENOMEM (e is then unchanged).
 */
int name_arbiter_decide(name_entry_t *e, const name_claim_t *c, const void *key,
                        size_t klen, name_decision_t *d);

/*
 * The answer to a CLAIM for the claimant's stream: type NAME_GRANTED or
 * NAME_DENIED, employee_id = the claimant, source "idstream",
 * source_event_id = claim_id, event_id = 32 hex digits of SHA-256(type NUL
 * claim_id), occurred_at = effective_at = claimed_at, attributes
 * {namespace, value, claim_id} plus {reason} for a denial and
 * {quarantine_until} (decimal ms) for a quarantined one, and a readable
 * reason sentence.  The current owner is never named.
 * *out is fini'd and refilled.  0, ID_EINVALID (outcome NONE) or ID_ENOMEM.
 */
int name_arbiter_answer(const name_claim_t *c, const name_decision_t *d,
                        employee_event_t *out);

#endif
