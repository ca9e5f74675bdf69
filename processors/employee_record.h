/*
 * employee_record.h — the processor's state for one employee: merged HR
 * attributes, which event last changed each of them (for causes), the
 * employment status, and the last desired identity emitted.
 *
 * Invariants: hr holds no NULL values (a cleared attribute is removed);
 * changes are sorted by key and unique; seq counts the events absorbed and
 * orders the changes; last.version == 0 means nothing was emitted yet.
 *
 * The byte form (employee_record_encode/_decode) is internal to the
 * processor's state store, not a wire contract.  It is deterministic — the
 * same record always encodes to the same bytes — and starts with a format
 * byte so a later layout can be told apart.  Layout of format 1 (integers
 * big-endian; str = u32 length + bytes, length 0xFFFFFFFF meaning NULL):
 *
 *   size        field
 *   1           format = 0x01
 *   str         employee_id (nullable)
 *   1           status (employee_status_t)
 *   8           seq
 *   4 + n×      hr: count, then (str key, str value) sorted by key
 *   4 + n×      changes: count, then (str key, str event_id, 8 seq) sorted
 *   1           has_last (0 or 1); when 1, the desired identity:
 *     str         employee_id
 *     8           version (signed)
 *     1           state (lifecycle_state_t)
 *     4 + n×      attributes: (str name, str value nullable) sorted
 *     4 + n×      groups: str, sorted and unique
 *     str ×4      container, manager_id, policy_version, cause_event_id
 *     8           effective_at (signed)
 *     4 + n×      causes: (str attribute, str event_id, str rule) sorted
 *
 * Format 2 appends the lifecycle facts; format 1 records
 * still decode, with no lifecycle facts (as if hired at time 0):
 *
 *   8           now: the latest fold time (the record's clock never goes back)
 *   8 + str     employment_at, employment_event (last HIRE/REHIRE)
 *   8 + 8       term_at, term_known_at
 *   str × 2     term_event, term_reason (nullable)
 *   1 + str     on_leave, leave_event (nullable)
 *   8           timer_at (0: no timer)
 *   1           has_timing; when 1: 4 create_days_before_start,
 *               1 flags (1 enable_at_create, 2 disable_immediately,
 *               4 suspend_on_leave, 8 reuse_name_after_delete),
 *               4 delete_after_days, 4 name_quarantine_days, str timezone
 *   4 + n×      pending: (8 effective_at, 8 seq, 1 type, str event_id,
 *               str reason nullable, attributes with nullable values),
 *               sorted by (effective_at, seq)
 *
 * Format 3 appends the unique names (format 1 and 2 records still
 * decode, with none):
 *
 *   4 + n×      names: (str namespace, str granted nullable, 1 released,
 *               str pending nullable, 4 + m× str denied sorted and unique)
 *               sorted by namespace
 *
 * Format 4 appends the last desired identity's target sections (older
 * records decode with none):
 *
 *   4 + n×      targets: (str name, 1 in_scope, 4 + m× (str key, str value)
 *               sorted, 4 + k× str groups sorted and unique, str container
 *               nullable) sorted by name; written as 0 when there is no last
 *
 * Format 5 (written today) has the fields of format 4 in the same order,
 * in fewer bytes: integers are LEB128 varints (the signed times zigzagged:
 * now, employment_at, term_at, term_known_at, timer_at, pending
 * effective_at; the others as unsigned, negatives cast), and every string
 * is a varint tag: 0 NULL, 2(n+1) a literal of n bytes that gets the next
 * index of the record's string table (first 1024 literals), 2i+1 the
 * literal of index i.  A record repeats event ids, attribute names, rules
 * and values many times, so it is about a third of format 4's size.
 *
 * Decoding checks every length, count, enum, sort order and that nothing
 * follows the record; it carries no checksum because the state store
 * (RocksDB) already checksums its blocks.
 *
 * Ownership: the record owns all its strings (those decoded, in one
 * block: see employee_record_t.strs).  Thread safety: none; a
 * record belongs to the thread processing its partition.
 */
#ifndef IDSTREAM_EMPLOYEE_RECORD_H
#define IDSTREAM_EMPLOYEE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "processors/mapping.h"
#include "schemas/model.h"

#define EMPLOYEE_RECORD_FORMAT 0x05 /* written; 0x01 to 0x04 are still read */

#define EMPLOYEE_STATUS_MAP(X) X(NONE) X(ACTIVE) X(TERMINATED)

typedef enum {
#define ES_ENUM_(n) EMPLOYEE_STATUS_##n,
	EMPLOYEE_STATUS_MAP(ES_ENUM_)
#undef ES_ENUM_
	    EMPLOYEE_STATUS_COUNT
} employee_status_t;

const char *employee_status_name(employee_status_t s); /* "ACTIVE" */

/* The event that last changed one HR attribute (or a MAPPING_SRC_* fact). */
typedef struct employee_change {
	char *key;
	char *event_id;
	uint64_t seq; /* the record's seq when the change was absorbed */
} employee_change_t;

/* An HR change known now that takes effect later (a future-dated
 * transfer, leave or title change), applied when the fold's time reaches
 * effective_at. */
typedef struct employee_pending {
	int64_t effective_at;
	uint64_t seq; /* the record's seq when it was learnt: orders equal times */
	employee_event_type_t type;
	char *event_id;
	char *reason;          /* nullable */
	id_attrs_t attributes; /* NULL values clear */
} employee_pending_t;

/*
 * The employee's unique names in one claim namespace (processors/fold.h
 * decides them; the names arbiter, cmd/names.c, answers the claims).
 * Values compare without ASCII case, like the arbiter's name keys.
 */
typedef struct employee_name {
	char *ns;
	char *granted; /* the value granted to the employee, or NULL */
	bool released; /* granted was given up when the account was deleted:
	                  shown to the policy while DELETED, claimed anew after */
	char *pending; /* the value claimed and not answered yet, or NULL */
	char **denied; /* values denied to the employee (or given up for good),
	                  sorted by strcmp, unique */
	size_t ndenied;
} employee_name_t;

typedef struct employee_record {
	char *employee_id; /* NULL until the first event is absorbed */
	employee_status_t status;
	uint64_t seq;
	id_attrs_t hr;
	employee_change_t *changes;
	size_t nchanges;
	size_t capchanges;
	desired_identity_t last;
	/* Lifecycle facts (processors/lifecycle.h decides the state). */
	int64_t now;            /* latest fold time */
	int64_t employment_at;  /* effective time of the last HIRE/REHIRE */
	char *employment_event; /* that event's id */
	int64_t term_at;        /* TERMINATED: when it takes effect */
	int64_t term_known_at;  /* TERMINATED: the fold time it was learnt */
	char *term_event;       /* TERMINATED: the termination's event id */
	char *term_reason;      /* TERMINATED: its reason, nullable */
	bool on_leave;
	char *leave_event; /* the LEAVE_START/LEAVE_END that set on_leave */
	int64_t timer_at;  /* next instant to re-evaluate at; 0: none */
	bool has_timing;   /* timing below is the last evaluation's */
	mapping_timing_t timing;
	employee_pending_t *pending; /* sorted by (effective_at, seq) */
	size_t npending;
	employee_name_t *names; /* sorted by ns, unique */
	size_t nnames;
	/* employee_record_decode() puts the strings of employee_id, hr,
	 * changes, the lifecycle facts and pending in this one block (a
	 * string the bytes repeat is shared); a field pointing into it is
	 * never freed on its own: employee_record_set(), the maps (their keep
	 * range) and employee_record_note_change() know.  NULL when nothing
	 * was decoded.  Names and the last identity are not in it. */
	char *strs;
	size_t strs_len;
} employee_record_t;

void employee_record_init(employee_record_t *rec);
/* Frees everything; the record is empty (as after init) and reusable. */
void employee_record_fini(employee_record_t *rec);

/* Records that key was last changed by event_id at seq.  0 or ID_ENOMEM. */
int employee_record_note_change(employee_record_t *rec, const char *key,
                                const char *event_id, uint64_t seq);
/* The change entry of key, or NULL.  Borrowed. */
const employee_change_t *employee_record_change_find(const employee_record_t *rec,
                                                     const char *key);

/* Queues a copy of ev's change, effective at ev->effective_at, learnt at
 * seq.  0 or ID_ENOMEM. */
int employee_record_pending_add(employee_record_t *rec, const employee_event_t *ev,
                                uint64_t seq);
/* Removes the first pending change (the caller applied it). */
void employee_record_pending_pop(employee_record_t *rec);
/* Replaces *field with a copy of value (NULL allowed).  0 or ID_ENOMEM.
 * For strings the record never decodes into its block (names); use
 * employee_record_set() for the record's own fields. */
int employee_record_set_str(char **field, const char *value);
/* Replaces rec's string *field (employee_id, a lifecycle event id or
 * reason) with a copy of value (NULL allowed); the old one is freed unless
 * it is in rec->strs.  0 or ID_ENOMEM. */
int employee_record_set(employee_record_t *rec, char **field, const char *value);

/* The names of namespace ns, or NULL.  Borrowed. */
employee_name_t *employee_record_name(const employee_record_t *rec, const char *ns);
/* The names of namespace ns, added (empty) when missing.  Borrowed; NULL
 * when out of memory. */
employee_name_t *employee_record_name_add(employee_record_t *rec, const char *ns);
/* True when value is in n's denied list (ASCII case ignored). */
bool employee_name_is_denied(const employee_name_t *n, const char *value);
/* Adds value to n's denied list (kept sorted; a value already there, in any
 * case, is not added again).  0 or ID_ENOMEM. */
int employee_name_deny(employee_name_t *n, const char *value);

/* Appends the bytes of rec (format EMPLOYEE_RECORD_FORMAT) to out.  0 or
 * ID_ENOMEM. */
int employee_record_encode(const employee_record_t *rec, id_buf_t *out, id_err_t *err);
/* Appends the format-4 bytes of rec (the layout stores written before
 * format 5 hold), so tests can check that they still decode.  0 or
 * ID_ENOMEM. */
int employee_record_encode_format4(const employee_record_t *rec, id_buf_t *out,
                                   id_err_t *err);

/*
 * Replaces rec (fini'd first) by the record in data[0..len).  Errors:
 * ID_ESCHEMA (unknown format byte), ID_EPARSE (malformed or truncated,
 * err names the field and byte offset), ID_ENOMEM.  On error rec is empty.
 */
int employee_record_decode(employee_record_t *rec, const void *data, size_t len,
                           id_err_t *err);

#endif
