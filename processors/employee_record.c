/*
 * employee_record.c — per-employee processor state and its byte form (see
 * employee_record.h for the layout).
 *
 * Decoding takes ownership of freshly allocated strings and appends them to
 * the sorted arrays directly, after checking the order, so a record costs
 * one allocation per string and no re-sorting.
 */
#include "processors/employee_record.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define STR_NULL 0xFFFFFFFFu

static const char *const status_names[] = {
#define ES_NAME_(n) #n,
    EMPLOYEE_STATUS_MAP(ES_NAME_)
#undef ES_NAME_
};

const char *employee_status_name(employee_status_t s)
{
	return (unsigned)s < EMPLOYEE_STATUS_COUNT ? status_names[s] : "UNKNOWN";
}

static void name_fini(employee_name_t *n)
{
	free(n->ns);
	free(n->granted);
	free(n->pending);
	for (size_t i = 0; i < n->ndenied; i++)
		free(n->denied[i]);
	free(n->denied);
	memset(n, 0, sizeof(*n));
}

void employee_record_init(employee_record_t *rec)
{
	memset(rec, 0, sizeof(*rec));
	id_attrs_init(&rec->hr);
	desired_identity_init(&rec->last);
}

/* True when p is in rec's block of decoded strings. */
static bool in_strs(const employee_record_t *rec, const char *p)
{
	uintptr_t u = (uintptr_t)p, lo = (uintptr_t)rec->strs;
	return rec->strs != NULL && u >= lo && u < lo + rec->strs_len;
}

/* Frees one of rec's strings, unless it lives in the block. */
static void rec_free(const employee_record_t *rec, char *p)
{
	if (!in_strs(rec, p))
		free(p);
}

static void pending_fini(const employee_record_t *rec, employee_pending_t *pc)
{
	rec_free(rec, pc->event_id);
	rec_free(rec, pc->reason);
	id_attrs_fini(&pc->attributes);
}

void employee_record_fini(employee_record_t *rec)
{
	if (rec == NULL)
		return;
	rec_free(rec, rec->employee_id);
	id_attrs_fini(&rec->hr);
	for (size_t i = 0; i < rec->nchanges; i++) {
		rec_free(rec, rec->changes[i].key);
		rec_free(rec, rec->changes[i].event_id);
	}
	free(rec->changes);
	desired_identity_fini(&rec->last);
	rec_free(rec, rec->employment_event);
	rec_free(rec, rec->term_event);
	rec_free(rec, rec->term_reason);
	rec_free(rec, rec->leave_event);
	for (size_t i = 0; i < rec->npending; i++)
		pending_fini(rec, &rec->pending[i]);
	free(rec->pending);
	for (size_t i = 0; i < rec->nnames; i++)
		name_fini(&rec->names[i]);
	free(rec->names);
	free(rec->strs);
	employee_record_init(rec);
}

int employee_record_set_str(char **field, const char *value)
{
	char *v = NULL;
	if (value != NULL && (v = strdup(value)) == NULL)
		return ID_ENOMEM;
	free(*field);
	*field = v;
	return 0;
}

int employee_record_set(employee_record_t *rec, char **field, const char *value)
{
	char *v = NULL;
	if (value != NULL && (v = strdup(value)) == NULL)
		return ID_ENOMEM;
	rec_free(rec, *field);
	*field = v;
	return 0;
}

void employee_record_pending_pop(employee_record_t *rec)
{
	if (rec->npending == 0)
		return;
	pending_fini(rec, &rec->pending[0]);
	memmove(rec->pending, rec->pending + 1,
	        (rec->npending - 1) * sizeof(*rec->pending));
	rec->npending--;
}

static bool pending_before(const employee_pending_t *a, const employee_pending_t *b)
{
	return a->effective_at < b->effective_at ||
	       (a->effective_at == b->effective_at && a->seq < b->seq);
}

int employee_record_pending_add(employee_record_t *rec, const employee_event_t *ev,
                                uint64_t seq)
{
	employee_pending_t pc = {ev->effective_at, seq, ev->type, NULL, NULL,
	                         ID_ATTRS_INIT};
	if ((pc.event_id = strdup(ev->event_id)) == NULL ||
	    (ev->reason != NULL && (pc.reason = strdup(ev->reason)) == NULL))
		goto nomem;
	for (size_t i = 0; i < ev->attributes.len; i++)
		if (id_attrs_set(&pc.attributes, ev->attributes.items[i].key,
		                 ev->attributes.items[i].value) != 0)
			goto nomem;
	employee_pending_t *n = realloc(rec->pending, (rec->npending + 1) * sizeof(*n));
	if (n == NULL)
		goto nomem;
	rec->pending = n;
	size_t at = rec->npending;
	while (at > 0 && pending_before(&pc, &rec->pending[at - 1]))
		at--;
	memmove(rec->pending + at + 1, rec->pending + at,
	        (rec->npending - at) * sizeof(*rec->pending));
	rec->pending[at] = pc;
	rec->npending++;
	return 0;
nomem:
	pending_fini(rec, &pc);
	return ID_ENOMEM;
}

/* strcmp() that settles on the first byte without a call, which is where
 * most keys already differ. */
static inline int key_cmp(const char *a, const char *b)
{
	if (*a != *b)
		return (unsigned char)*a - (unsigned char)*b;
	return strcmp(a, b);
}

/* Index of key in changes, or -(insertion point) - 1. */
static long change_find(const employee_record_t *rec, const char *key)
{
	size_t lo = 0, hi = rec->nchanges;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(rec->changes[mid].key, key);
		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

const employee_change_t *employee_record_change_find(const employee_record_t *rec,
                                                     const char *key)
{
	long at = change_find(rec, key);
	return at >= 0 ? &rec->changes[at] : NULL;
}

static int changes_grow(employee_record_t *rec)
{
	if (rec->nchanges < rec->capchanges)
		return 0;
	size_t ncap = rec->capchanges ? rec->capchanges * 2 : 16;
	employee_change_t *n = realloc(rec->changes, ncap * sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	rec->changes = n;
	rec->capchanges = ncap;
	return 0;
}

int employee_record_note_change(employee_record_t *rec, const char *key,
                                const char *event_id, uint64_t seq)
{
	long at = change_find(rec, key);
	if (at >= 0) {
		employee_change_t *c = &rec->changes[at];
		/* The same event often changes several keys; skip the copy when
		 * the id is already there. */
		if (strcmp(c->event_id, event_id) != 0) {
			char *e = strdup(event_id);
			if (e == NULL)
				return ID_ENOMEM;
			rec_free(rec, c->event_id);
			c->event_id = e;
		}
		c->seq = seq;
		return 0;
	}
	size_t pos = (size_t)(-at - 1);
	char *k = strdup(key), *e = strdup(event_id);
	if (k == NULL || e == NULL || changes_grow(rec) != 0) {
		free(k);
		free(e);
		return ID_ENOMEM;
	}
	memmove(&rec->changes[pos + 1], &rec->changes[pos],
	        (rec->nchanges - pos) * sizeof(*rec->changes));
	rec->changes[pos].key = k;
	rec->changes[pos].event_id = e;
	rec->changes[pos].seq = seq;
	rec->nchanges++;
	return 0;
}

/* ---- unique names -------------------------------------------------------- */

static bool ascii_ieq(const char *a, const char *b)
{
	for (; *a != '\0' && *b != '\0'; a++, b++) {
		char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
		char y = *b >= 'A' && *b <= 'Z' ? (char)(*b - 'A' + 'a') : *b;
		if (x != y)
			return false;
	}
	return *a == *b;
}

employee_name_t *employee_record_name(const employee_record_t *rec, const char *ns)
{
	for (size_t i = 0; i < rec->nnames; i++)
		if (strcmp(rec->names[i].ns, ns) == 0)
			return &rec->names[i];
	return NULL;
}

employee_name_t *employee_record_name_add(employee_record_t *rec, const char *ns)
{
	employee_name_t *n = employee_record_name(rec, ns);
	if (n != NULL)
		return n;
	char *k = strdup(ns);
	employee_name_t *grown =
	    k != NULL ? realloc(rec->names, (rec->nnames + 1) * sizeof(*grown)) : NULL;
	if (grown == NULL) {
		free(k);
		return NULL;
	}
	rec->names = grown;
	size_t at = rec->nnames;
	while (at > 0 && strcmp(rec->names[at - 1].ns, ns) > 0)
		at--;
	memmove(rec->names + at + 1, rec->names + at,
	        (rec->nnames - at) * sizeof(*rec->names));
	memset(&rec->names[at], 0, sizeof(rec->names[at]));
	rec->names[at].ns = k;
	rec->nnames++;
	return &rec->names[at];
}

bool employee_name_is_denied(const employee_name_t *n, const char *value)
{
	for (size_t i = 0; i < n->ndenied; i++)
		if (ascii_ieq(n->denied[i], value))
			return true;
	return false;
}

int employee_name_deny(employee_name_t *n, const char *value)
{
	if (employee_name_is_denied(n, value))
		return 0;
	char *v = strdup(value);
	char **grown =
	    v != NULL ? realloc(n->denied, (n->ndenied + 1) * sizeof(*grown)) : NULL;
	if (grown == NULL) {
		free(v);
		return ID_ENOMEM;
	}
	n->denied = grown;
	size_t at = n->ndenied;
	while (at > 0 && strcmp(n->denied[at - 1], value) > 0)
		at--;
	memmove(n->denied + at + 1, n->denied + at, (n->ndenied - at) * sizeof(char *));
	n->denied[at] = v;
	n->ndenied++;
	return 0;
}

/* ---- encoding ----------------------------------------------------------- */

/*
 * Format 5 writes integers as LEB128 varints (signed ones zigzagged) and
 * every string once: a string equal to one already written in the record
 * is a reference to it.  A string is a varint tag:
 *
 *   | tag          | meaning                                         |
 *   |--------------|-------------------------------------------------|
 *   | 0            | NULL                                            |
 *   | 2 × (n + 1)  | a literal of n bytes follows; it gets the next  |
 *   |              | table index (up to STR_TABLE_MAX literals)      |
 *   | 2 × i + 1    | the literal of table index i                    |
 *
 * Event ids, attribute names, rules and values recur many times in one
 * record (HR facts, their changes, the last identity, its causes and its
 * target sections), so a record is about a third of format 4: more fit in
 * the block cache, and memtables and compactions move less.
 */
#define STR_TABLE_MAX  1024
#define STR_HASH_SLOTS 2048 /* power of two, twice the table */
#define STR_SEEN_SLOTS 256  /* 2^8: put_str() takes 8 bits of a hash */

typedef struct writer {
	id_buf_t *b;
	bool fixed; /* format 4: fixed-width integers, no string table */
	size_t ntable;
	uint32_t off[STR_TABLE_MAX]; /* literal bytes, as offsets into b */
	uint32_t len[STR_TABLE_MAX];
	uint16_t slots[STR_HASH_SLOTS]; /* table index + 1; 0: empty */
	/* The table index each recently written pointer has: a record's
	 * parts often share strings (an identity in an arena), and the same
	 * pointer needs neither strlen() nor hashing again. */
	const char *seen[STR_SEEN_SLOTS];
	uint16_t seen_ix[STR_SEEN_SLOTS];
} writer_t;

static int put_u8(writer_t *w, uint8_t v)
{
	return id_buf_append_u8(w->b, v);
}

/* A varint into b, which has room for 10 more bytes. */
static inline void varint_at(id_buf_t *b, uint64_t v)
{
	unsigned char *p = b->data + b->len;
	while (v >= 0x80) {
		*p++ = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	*p++ = (unsigned char)v;
	b->len = (size_t)(p - b->data);
}

static inline int put_u64(writer_t *w, uint64_t v)
{
	if (w->fixed)
		return id_buf_append_be64(w->b, v);
	if (id_buf_reserve(w->b, 10) != 0)
		return ID_ENOMEM;
	varint_at(w->b, v);
	return 0;
}

static int put_u32(writer_t *w, uint32_t v)
{
	if (w->fixed)
		return id_buf_append_be32(w->b, v);
	return put_u64(w, v);
}

static int put_i64(writer_t *w, int64_t v)
{
	if (w->fixed)
		return id_buf_append_be64(w->b, (uint64_t)v);
	return put_u64(w, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* A cheap hash: length and the first and last 8 bytes (ids that share a
 * prefix differ at the end).  A collision costs a memcmp, never a wrong
 * reference. */
static uint32_t str_hash(const char *s, size_t n)
{
	uint64_t a = 0, b = 0;
	if (n >= 8) {
		memcpy(&a, s, 8);
		memcpy(&b, s + n - 8, 8);
	} else {
		memcpy(&a, s, n);
	}
	uint64_t h = (a * 0x9E3779B97F4A7C15u) ^ (b + n) * 0xC2B2AE3D27D4EB4Fu;
	return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

static int put_str(writer_t *w, const char *s)
{
	if (w->fixed) {
		if (s == NULL)
			return id_buf_append_be32(w->b, STR_NULL);
		size_t n = strlen(s);
		if (id_buf_append_be32(w->b, (uint32_t)n) != 0)
			return ID_ENOMEM;
		return id_buf_append(w->b, s, n);
	}
	if (s == NULL)
		return put_u64(w, 0);
	size_t p = (size_t)(((uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15u) >> 56);
	if (w->seen[p] == s)
		return put_u64(w, (uint64_t)w->seen_ix[p] << 1 | 1);
	size_t n = strlen(s);
	size_t j = str_hash(s, n) & (STR_HASH_SLOTS - 1);
	for (; w->slots[j] != 0; j = (j + 1) & (STR_HASH_SLOTS - 1)) {
		size_t i = w->slots[j] - 1u;
		if (w->len[i] == n && memcmp(w->b->data + w->off[i], s, n) == 0) {
			w->seen[p] = s;
			w->seen_ix[p] = (uint16_t)i;
			return put_u64(w, (uint64_t)i << 1 | 1);
		}
	}
	if (id_buf_reserve(w->b, n + 10) != 0)
		return ID_ENOMEM;
	varint_at(w->b, ((uint64_t)n + 1) << 1);
	if (w->ntable < STR_TABLE_MAX) {
		w->seen[p] = s;
		w->seen_ix[p] = (uint16_t)w->ntable;
		w->off[w->ntable] = (uint32_t)w->b->len;
		w->len[w->ntable] = (uint32_t)n;
		w->slots[j] = (uint16_t)++w->ntable;
	}
	memcpy(w->b->data + w->b->len, s, n);
	w->b->len += n;
	return 0;
}

static int put_attrs(writer_t *w, const id_attrs_t *a)
{
	if (put_u32(w, (uint32_t)a->len) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < a->len; i++)
		if (put_str(w, a->items[i].key) != 0 ||
		    put_str(w, a->items[i].value) != 0)
			return ID_ENOMEM;
	return 0;
}

static int put_desired(writer_t *w, const desired_identity_t *d)
{
	if (put_str(w, d->employee_id) != 0 || put_u64(w, (uint64_t)d->version) ||
	    put_u8(w, (uint8_t)d->state) != 0 || put_attrs(w, &d->attributes) != 0 ||
	    put_u32(w, (uint32_t)d->ngroups) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < d->ngroups; i++)
		if (put_str(w, d->groups[i]) != 0)
			return ID_ENOMEM;
	if (put_str(w, d->container) != 0 || put_str(w, d->manager_id) != 0 ||
	    put_str(w, d->policy_version) != 0 || put_str(w, d->cause_event_id) != 0 ||
	    put_u64(w, (uint64_t)d->effective_at) != 0 ||
	    put_u32(w, (uint32_t)d->ncauses) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < d->ncauses; i++)
		if (put_str(w, d->causes[i].attribute) != 0 ||
		    put_str(w, d->causes[i].event_id) != 0 ||
		    put_str(w, d->causes[i].rule) != 0)
			return ID_ENOMEM;
	return 0;
}

/* The format-2 trailer (see employee_record.h). */
static int put_lifecycle(writer_t *w, const employee_record_t *rec)
{
	const mapping_timing_t *t = &rec->timing;
	if (put_i64(w, rec->now) != 0 || put_i64(w, rec->employment_at) != 0 ||
	    put_str(w, rec->employment_event) != 0 || put_i64(w, rec->term_at) != 0 ||
	    put_i64(w, rec->term_known_at) != 0 || put_str(w, rec->term_event) != 0 ||
	    put_str(w, rec->term_reason) != 0 || put_u8(w, rec->on_leave) != 0 ||
	    put_str(w, rec->leave_event) != 0 || put_i64(w, rec->timer_at) != 0 ||
	    put_u8(w, rec->has_timing) != 0)
		return ID_ENOMEM;
	if (rec->has_timing) {
		uint8_t flags = (uint8_t)((t->enable_at_create ? 1 : 0) |
		                          (t->disable_immediately ? 2 : 0) |
		                          (t->suspend_on_leave ? 4 : 0) |
		                          (t->reuse_name_after_delete ? 8 : 0));
		if (put_u32(w, (uint32_t)t->create_days_before_start) != 0 ||
		    put_u8(w, flags) != 0 ||
		    put_u32(w, (uint32_t)t->delete_after_days) != 0 ||
		    put_u32(w, (uint32_t)t->name_quarantine_days) != 0 ||
		    put_str(w, t->timezone) != 0)
			return ID_ENOMEM;
	}
	if (put_u32(w, (uint32_t)rec->npending) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < rec->npending; i++) {
		const employee_pending_t *pc = &rec->pending[i];
		if (put_i64(w, pc->effective_at) != 0 || put_u64(w, pc->seq) != 0 ||
		    put_u8(w, (uint8_t)pc->type) != 0 || put_str(w, pc->event_id) != 0 ||
		    put_str(w, pc->reason) != 0 || put_attrs(w, &pc->attributes) != 0)
			return ID_ENOMEM;
	}
	return 0;
}

/* The format-3 trailer: the unique names (see employee_record.h). */
static int put_names(writer_t *w, const employee_record_t *rec)
{
	if (put_u32(w, (uint32_t)rec->nnames) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < rec->nnames; i++) {
		const employee_name_t *n = &rec->names[i];
		if (put_str(w, n->ns) != 0 || put_str(w, n->granted) != 0 ||
		    put_u8(w, n->released) != 0 || put_str(w, n->pending) != 0 ||
		    put_u32(w, (uint32_t)n->ndenied) != 0)
			return ID_ENOMEM;
		for (size_t k = 0; k < n->ndenied; k++)
			if (put_str(w, n->denied[k]) != 0)
				return ID_ENOMEM;
	}
	return 0;
}

/* The format-4 trailer: the last desired identity's target sections. */
static int put_targets(writer_t *w, const desired_identity_t *d)
{
	if (put_u32(w, (uint32_t)d->ntargets) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < d->ntargets; i++) {
		const target_identity_t *t = &d->targets[i];
		if (put_str(w, t->name) != 0 || put_u8(w, t->in_scope) != 0 ||
		    put_attrs(w, &t->attributes) != 0 ||
		    put_u32(w, (uint32_t)t->ngroups) != 0)
			return ID_ENOMEM;
		for (size_t k = 0; k < t->ngroups; k++)
			if (put_str(w, t->groups[k]) != 0)
				return ID_ENOMEM;
		if (put_str(w, t->container) != 0)
			return ID_ENOMEM;
	}
	return 0;
}

static int record_encode(const employee_record_t *rec, bool fixed, id_buf_t *out,
                         id_err_t *err)
{
	size_t start = out->len;
	writer_t wr; /* an empty string table; off and len need no zeroing */
	writer_t *w = &wr;
	wr.b = out;
	wr.fixed = fixed;
	wr.ntable = 0;
	memset(wr.slots, 0, sizeof(wr.slots));
	memset(wr.seen, 0, sizeof(wr.seen));
	if (put_u8(w, fixed ? 0x04 : EMPLOYEE_RECORD_FORMAT) != 0 ||
	    put_str(w, rec->employee_id) != 0 || put_u8(w, (uint8_t)rec->status) ||
	    put_u64(w, rec->seq) != 0 || put_attrs(w, &rec->hr) != 0 ||
	    put_u32(w, (uint32_t)rec->nchanges) != 0)
		goto nomem;
	for (size_t i = 0; i < rec->nchanges; i++)
		if (put_str(w, rec->changes[i].key) != 0 ||
		    put_str(w, rec->changes[i].event_id) != 0 ||
		    put_u64(w, rec->changes[i].seq) != 0)
			goto nomem;
	if (put_u8(w, rec->last.version > 0) != 0)
		goto nomem;
	if (rec->last.version > 0 && put_desired(w, &rec->last) != 0)
		goto nomem;
	if (put_lifecycle(w, rec) != 0 || put_names(w, rec) != 0 ||
	    put_targets(w, &rec->last) != 0)
		goto nomem;
	return 0;
nomem:
	out->len = start;
	return id_err_set(err, ID_ENOMEM, "employee %s: out of memory encoding record",
	                  rec->employee_id ? rec->employee_id : "(none)");
}

int employee_record_encode(const employee_record_t *rec, id_buf_t *out, id_err_t *err)
{
	return record_encode(rec, false, out, err);
}

int employee_record_encode_format4(const employee_record_t *rec, id_buf_t *out,
                                   id_err_t *err)
{
	return record_encode(rec, true, out, err);
}

/* ---- decoding ----------------------------------------------------------- */

typedef struct reader {
	const unsigned char *p;
	size_t len;
	size_t pos;
	id_err_t *err;
	bool compact; /* format 5: varints and a string table */
	/* Non-NULL while decoding the last identity: its parts come from
	 * this arena (desired_identity_t.arena), freed whole. */
	desired_arena_t **arena;
	size_t ntable;
	uint32_t off[STR_TABLE_MAX]; /* format 5: literals, offsets into p */
	uint32_t slen[STR_TABLE_MAX];
	/* The arena's copy of each literal decoded into the arena (NULL for
	 * one decoded otherwise): the arena's references share it. */
	char *shared[STR_TABLE_MAX];
	/* The block of the record's other strings (employee_record_t.strs):
	 * literals are copied there, references share the block's copy. */
	char *blk;
	size_t blk_used, blk_cap;
	bool heap; /* strings malloc'd one by one (the names) */
	char *shared_blk[STR_TABLE_MAX];
} reader_t;

static int bad(reader_t *r, const char *field, const char *what)
{
	return id_err_set(r->err, ID_EPARSE, "employee record: %s at byte %zu: %s", field,
	                  r->pos, what);
}

static int get_u8(reader_t *r, const char *field, uint8_t *v)
{
	if (r->len - r->pos < 1)
		return bad(r, field, "truncated");
	*v = r->p[r->pos++];
	return 0;
}

/* Memory for a decoded string or array: from the arena when one is set. */
static void *r_alloc(reader_t *r, size_t n)
{
	return r->arena != NULL ? desired_arena_alloc(r->arena, n) : malloc(n);
}

static void r_free(reader_t *r, void *p)
{
	uintptr_t u = (uintptr_t)p, lo = (uintptr_t)r->blk;
	if (r->arena == NULL && (r->blk == NULL || u < lo || u >= lo + r->blk_cap))
		free(p);
}

/* A decoded string outside the arena: into the block while it has room
 * (it is sized for every literal of the record), else malloc'd. */
static char *r_str(reader_t *r, const unsigned char *at, size_t n)
{
	char *s;
	if (!r->heap && r->blk != NULL && r->blk_cap - r->blk_used > n) {
		s = r->blk + r->blk_used;
		r->blk_used += n + 1;
	} else if ((s = malloc(n + 1)) == NULL) {
		return NULL;
	}
	memcpy(s, at, n);
	s[n] = '\0';
	return s;
}

static int get_varint_long(reader_t *r, const char *field, uint64_t *v);

/* A LEB128 varint of at most 64 bits (format 5).  Most are one byte. */
static inline int get_varint(reader_t *r, const char *field, uint64_t *v)
{
	if (r->pos < r->len && r->p[r->pos] < 0x80) {
		*v = r->p[r->pos++];
		return 0;
	}
	return get_varint_long(r, field, v);
}

static int get_varint_long(reader_t *r, const char *field, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0;; shift += 7) {
		if (r->pos >= r->len)
			return bad(r, field, "truncated");
		unsigned char c = r->p[r->pos++];
		if (shift == 63 && c > 1)
			return bad(r, field, "integer too large");
		x |= (uint64_t)(c & 0x7f) << shift;
		if ((c & 0x80) == 0)
			break;
		if (shift == 63)
			return bad(r, field, "integer too large");
	}
	*v = x;
	return 0;
}

static int get_u32(reader_t *r, const char *field, uint32_t *v)
{
	if (r->compact) {
		uint64_t x = 0;
		int rc = get_varint(r, field, &x);
		if (rc == 0 && x > UINT32_MAX)
			return bad(r, field, "integer too large");
		*v = (uint32_t)x;
		return rc;
	}
	if (r->len - r->pos < 4)
		return bad(r, field, "truncated");
	const unsigned char *p = r->p + r->pos;
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	r->pos += 4;
	return 0;
}

static int get_u64(reader_t *r, const char *field, uint64_t *v)
{
	if (r->compact)
		return get_varint(r, field, v);
	if (r->len - r->pos < 8)
		return bad(r, field, "truncated");
	uint64_t x = 0;
	for (int i = 0; i < 8; i++)
		x = x << 8 | r->p[r->pos + (size_t)i];
	*v = x;
	r->pos += 8;
	return 0;
}

/* A count of items each at least min_size bytes long (1 in format 5),
 * bounded by what is left, so a corrupt count cannot make us allocate
 * gigabytes. */
static int get_count(reader_t *r, const char *field, size_t min_size, size_t *n)
{
	uint32_t v = 0;
	int rc = get_u32(r, field, &v);
	if (rc != 0)
		return rc;
	if (r->compact)
		min_size = 1;
	if ((size_t)v > (r->len - r->pos) / min_size)
		return bad(r, field, "count larger than the record");
	*n = v;
	return 0;
}

/* A format-5 string tag and what it designates (see put_str()). */
static int get_str_compact(reader_t *r, const char *field, bool nullable, char **out)
{
	uint64_t tag = 0;
	const unsigned char *at;
	size_t n;
	int rc;
	if ((rc = get_varint(r, field, &tag)) != 0)
		return rc;
	if (tag == 0) {
		if (!nullable)
			return bad(r, field, "null where a string is required");
		return 0;
	}
	size_t ix = STR_TABLE_MAX; /* the table entry, when one */
	if (tag & 1) {
		ix = (size_t)(tag >> 1);
		if (ix >= r->ntable)
			return bad(r, field, "reference to an unknown string");
		if (r->arena != NULL && r->shared[ix] != NULL) {
			/* Read-only in the arena: one copy serves every field. */
			*out = r->shared[ix];
			return 0;
		}
		if (r->arena == NULL && !r->heap && r->shared_blk[ix] != NULL) {
			/* Never freed on its own: one copy serves too. */
			*out = r->shared_blk[ix];
			return 0;
		}
		at = r->p + r->off[ix];
		n = r->slen[ix];
	} else {
		if ((tag >> 1) - 1 > r->len - r->pos)
			return bad(r, field, "string longer than the record");
		n = (size_t)(tag >> 1) - 1;
		at = r->p + r->pos;
		if (memchr(at, '\0', n) != NULL)
			return bad(r, field, "NUL byte inside a string");
		if (r->ntable < STR_TABLE_MAX) {
			ix = r->ntable++;
			r->off[ix] = (uint32_t)r->pos;
			r->slen[ix] = (uint32_t)n;
			r->shared[ix] = NULL;
			r->shared_blk[ix] = NULL;
		}
		r->pos += n;
	}
	if (r->arena != NULL) {
		if ((*out = desired_arena_strndup(r->arena, (const char *)at, n)) == NULL)
			return id_err_set(r->err, ID_ENOMEM,
			                  "employee record: out of memory");
		if (ix < STR_TABLE_MAX)
			r->shared[ix] = *out;
		return 0;
	}
	if ((*out = r_str(r, at, n)) == NULL)
		return id_err_set(r->err, ID_ENOMEM, "employee record: out of memory");
	if (ix < STR_TABLE_MAX && !r->heap)
		r->shared_blk[ix] = *out;
	return 0;
}

/* A string; *out is malloc'd (or NULL when nullable and null). */
static int get_str(reader_t *r, const char *field, bool nullable, char **out)
{
	uint32_t n = 0;
	int rc;
	*out = NULL;
	if (r->compact)
		return get_str_compact(r, field, nullable, out);
	if ((rc = get_u32(r, field, &n)) != 0)
		return rc;
	if (n == STR_NULL) {
		if (!nullable) {
			r->pos -= 4;
			return bad(r, field, "null where a string is required");
		}
		return 0;
	}
	if ((size_t)n > r->len - r->pos)
		return bad(r, field, "string longer than the record");
	if (memchr(r->p + r->pos, '\0', n) != NULL)
		return bad(r, field, "NUL byte inside a string");
	*out = r->arena != NULL
	           ? desired_arena_strndup(r->arena, (const char *)r->p + r->pos, n)
	           : r_str(r, r->p + r->pos, n);
	if (*out == NULL)
		return id_err_set(r->err, ID_ENOMEM, "employee record: out of memory");
	r->pos += n;
	return 0;
}

/* Appends key/value (ownership taken) to a map whose last key must sort
 * before key. */
static int attrs_push(reader_t *r, const char *field, id_attrs_t *a, char *key,
                      char *value)
{
	if (a->len > 0 && key_cmp(a->items[a->len - 1].key, key) >= 0) {
		r_free(r, key);
		r_free(r, value);
		return bad(r, field, "keys not in strictly ascending order");
	}
	if (a->len == a->cap) {
		/* Not in an arena: get_attrs() sized the array for the count. */
		size_t ncap = a->cap ? a->cap * 2 : 8;
		id_kv_t *n = realloc(a->items, ncap * sizeof(*n));
		if (n == NULL) {
			r_free(r, key);
			r_free(r, value);
			return id_err_set(r->err, ID_ENOMEM,
			                  "employee record: out of memory");
		}
		a->items = n;
		a->cap = ncap;
	}
	a->items[a->len].key = key;
	a->items[a->len].value = value;
	a->len++;
	return 0;
}

static int get_attrs(reader_t *r, const char *field, bool null_values, id_attrs_t *a)
{
	size_t n = 0;
	int rc = get_count(r, field, 8, &n);
	if (rc == 0 && n > 0 && a->cap == 0) {
		if ((a->items = r_alloc(r, n * sizeof(*a->items))) == NULL)
			return id_err_set(r->err, ID_ENOMEM,
			                  "employee record: out of memory");
		a->cap = n;
	}
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char *k = NULL, *v = NULL;
		if ((rc = get_str(r, field, false, &k)) != 0 ||
		    (rc = get_str(r, field, null_values, &v)) != 0) {
			r_free(r, k);
			break;
		}
		rc = attrs_push(r, field, a, k, v);
	}
	return rc;
}

static int get_desired(reader_t *r, desired_identity_t *d)
{
	uint64_t u = 0;
	uint8_t state = 0;
	size_t n = 0;
	int rc;

	if ((rc = get_str(r, "last.employee_id", false, &d->employee_id)) != 0 ||
	    (rc = get_u64(r, "last.version", &u)) != 0)
		return rc;
	d->version = (int64_t)u;
	if (d->version <= 0)
		return bad(r, "last.version", "not positive");
	if ((rc = get_u8(r, "last.state", &state)) != 0)
		return rc;
	if (state >= LC_STATE_COUNT)
		return bad(r, "last.state", "unknown lifecycle state");
	d->state = (lifecycle_state_t)state;
	if ((rc = get_attrs(r, "last.attributes", true, &d->attributes)) != 0 ||
	    (rc = get_count(r, "last.groups", 4, &n)) != 0)
		return rc;
	if (n > 0 && (d->groups = r_alloc(r, n * sizeof(*d->groups))) == NULL)
		return id_err_set(r->err, ID_ENOMEM, "employee record: out of memory");
	for (size_t i = 0; i < n; i++) {
		char *g;
		if ((rc = get_str(r, "last.groups", false, &g)) != 0)
			return rc;
		if (i > 0 && key_cmp(d->groups[i - 1], g) >= 0) {
			r_free(r, g);
			return bad(r, "last.groups", "groups not sorted and unique");
		}
		d->groups[d->ngroups++] = g;
	}
	if ((rc = get_str(r, "last.container", true, &d->container)) != 0 ||
	    (rc = get_str(r, "last.manager_id", true, &d->manager_id)) != 0 ||
	    (rc = get_str(r, "last.policy_version", true, &d->policy_version)) != 0 ||
	    (rc = get_str(r, "last.cause_event_id", true, &d->cause_event_id)) != 0 ||
	    (rc = get_u64(r, "last.effective_at", &u)) != 0)
		return rc;
	d->effective_at = (int64_t)u;
	if ((rc = get_count(r, "last.causes", 12, &n)) != 0)
		return rc;
	if (n > 0 && (d->causes = r_alloc(r, n * sizeof(*d->causes))) == NULL)
		return id_err_set(r->err, ID_ENOMEM, "employee record: out of memory");
	if (n > 0)
		memset(d->causes, 0, n * sizeof(*d->causes));
	for (size_t i = 0; i < n; i++) {
		attr_cause_t *c = &d->causes[i];
		/* Count first, so desired_identity_fini() frees a partial entry. */
		d->ncauses++;
		if ((rc = get_str(r, "last.causes", false, &c->attribute)) != 0 ||
		    (rc = get_str(r, "last.causes", true, &c->event_id)) != 0 ||
		    (rc = get_str(r, "last.causes", true, &c->rule)) != 0)
			return rc;
		if (i > 0 && key_cmp(d->causes[i - 1].attribute, c->attribute) >= 0)
			return bad(r, "last.causes", "causes not sorted and unique");
	}
	return 0;
}

static int get_i64(reader_t *r, const char *field, int64_t *v)
{
	uint64_t u = 0;
	int rc = get_u64(r, field, &u);
	/* Format 5 zigzags signed integers (put_i64()). */
	*v = r->compact ? (int64_t)(u >> 1) ^ -(int64_t)(u & 1) : (int64_t)u;
	return rc;
}

static int get_i32(reader_t *r, const char *field, int32_t *v)
{
	uint32_t u = 0;
	int rc = get_u32(r, field, &u);
	*v = (int32_t)u;
	return rc;
}

static int get_lifecycle(reader_t *r, employee_record_t *rec)
{
	uint8_t u8 = 0;
	size_t n = 0;
	int rc;
	if ((rc = get_i64(r, "now", &rec->now)) != 0 ||
	    (rc = get_i64(r, "employment_at", &rec->employment_at)) != 0 ||
	    (rc = get_str(r, "employment_event", true, &rec->employment_event)) != 0 ||
	    (rc = get_i64(r, "term_at", &rec->term_at)) != 0 ||
	    (rc = get_i64(r, "term_known_at", &rec->term_known_at)) != 0 ||
	    (rc = get_str(r, "term_event", true, &rec->term_event)) != 0 ||
	    (rc = get_str(r, "term_reason", true, &rec->term_reason)) != 0 ||
	    (rc = get_u8(r, "on_leave", &u8)) != 0)
		return rc;
	if (u8 > 1)
		return bad(r, "on_leave", "not 0 or 1");
	rec->on_leave = u8 == 1;
	if ((rc = get_str(r, "leave_event", true, &rec->leave_event)) != 0 ||
	    (rc = get_i64(r, "timer_at", &rec->timer_at)) != 0 ||
	    (rc = get_u8(r, "has_timing", &u8)) != 0)
		return rc;
	if (u8 > 1)
		return bad(r, "has_timing", "not 0 or 1");
	rec->has_timing = u8 == 1;
	if (rec->has_timing) {
		mapping_timing_t *t = &rec->timing;
		char *tz = NULL;
		if ((rc = get_i32(r, "timing", &t->create_days_before_start)) != 0 ||
		    (rc = get_u8(r, "timing", &u8)) != 0 ||
		    (rc = get_i32(r, "timing", &t->delete_after_days)) != 0 ||
		    (rc = get_i32(r, "timing", &t->name_quarantine_days)) != 0 ||
		    (rc = get_str(r, "timing.timezone", false, &tz)) != 0)
			return rc;
		t->enable_at_create = u8 & 1;
		t->disable_immediately = u8 & 2;
		t->suspend_on_leave = u8 & 4;
		t->reuse_name_after_delete = u8 & 8;
		size_t tl = strlen(tz);
		if (tl >= sizeof(t->timezone)) {
			r_free(r, tz);
			return bad(r, "timing.timezone", "too long");
		}
		memcpy(t->timezone, tz, tl + 1);
		r_free(r, tz);
	}
	if ((rc = get_count(r, "pending", 29, &n)) != 0)
		return rc;
	if (n > 0 && (rec->pending = calloc(n, sizeof(*rec->pending))) == NULL)
		return id_err_set(r->err, ID_ENOMEM, "employee record: out of memory");
	for (size_t i = 0; i < n; i++) {
		employee_pending_t *pc = &rec->pending[i];
		id_attrs_init(&pc->attributes);
		pc->attributes.keep_lo = rec->hr.keep_lo;
		pc->attributes.keep_hi = rec->hr.keep_hi;
		rec->npending++;
		if ((rc = get_i64(r, "pending", &pc->effective_at)) != 0 ||
		    (rc = get_u64(r, "pending", &pc->seq)) != 0 ||
		    (rc = get_u8(r, "pending", &u8)) != 0)
			return rc;
		if (u8 >= EV_TYPE_COUNT)
			return bad(r, "pending", "unknown event type");
		pc->type = (employee_event_type_t)u8;
		if ((rc = get_str(r, "pending", false, &pc->event_id)) != 0 ||
		    (rc = get_str(r, "pending", true, &pc->reason)) != 0 ||
		    (rc = get_attrs(r, "pending", true, &pc->attributes)) != 0)
			return rc;
		if (i > 0 && !pending_before(&rec->pending[i - 1], pc))
			return bad(r, "pending", "not sorted by effective time");
	}
	return 0;
}

static int get_names(reader_t *r, employee_record_t *rec)
{
	size_t n = 0, m = 0;
	uint8_t u8 = 0;
	int rc;
	if ((rc = get_count(r, "names", 17, &n)) != 0)
		return rc;
	if (n > 0 && (rec->names = calloc(n, sizeof(*rec->names))) == NULL)
		return id_err_set(r->err, ID_ENOMEM, "employee record: out of memory");
	for (size_t i = 0; i < n; i++) {
		employee_name_t *nm = &rec->names[i];
		rec->nnames++; /* counted first, so fini frees a partial entry */
		if ((rc = get_str(r, "names", false, &nm->ns)) != 0 ||
		    (rc = get_str(r, "names.granted", true, &nm->granted)) != 0 ||
		    (rc = get_u8(r, "names.released", &u8)) != 0)
			return rc;
		if (u8 > 1)
			return bad(r, "names.released", "not 0 or 1");
		nm->released = u8 == 1;
		if (nm->released && nm->granted == NULL)
			return bad(r, "names.released",
			           "released without a granted value");
		if (i > 0 && strcmp(rec->names[i - 1].ns, nm->ns) >= 0)
			return bad(r, "names",
			           "namespaces not in strictly ascending order");
		if ((rc = get_str(r, "names.pending", true, &nm->pending)) != 0 ||
		    (rc = get_count(r, "names.denied", 4, &m)) != 0)
			return rc;
		if (m > 0 && (nm->denied = calloc(m, sizeof(char *))) == NULL)
			return id_err_set(r->err, ID_ENOMEM,
			                  "employee record: out of memory");
		for (size_t k = 0; k < m; k++) {
			char *v = NULL;
			if ((rc = get_str(r, "names.denied", false, &v)) != 0)
				return rc;
			nm->denied[nm->ndenied++] = v;
			if (k > 0 && strcmp(nm->denied[k - 1], v) >= 0)
				return bad(r, "names.denied",
				           "values not sorted and unique");
		}
	}
	return 0;
}

static int get_targets(reader_t *r, desired_identity_t *d)
{
	size_t n = 0;
	int rc;
	if ((rc = get_count(r, "last.targets", 14, &n)) != 0)
		return rc;
	if (n > 0 && (d->targets = r_alloc(r, n * sizeof(*d->targets))) == NULL)
		return id_err_set(r->err, ID_ENOMEM, "employee record: out of memory");
	for (size_t i = 0; i < n; i++) {
		/* Counted first, so desired_identity_fini() frees a partial one. */
		target_identity_t *t = &d->targets[i];
		size_t ng = 0;
		uint8_t sc = 0;
		target_identity_init(t);
		d->ntargets++;
		if ((rc = get_str(r, "last.targets", false, &t->name)) != 0 ||
		    (rc = get_u8(r, "last.targets", &sc)) != 0 ||
		    (rc = get_attrs(r, "last.targets", false, &t->attributes)) != 0 ||
		    (rc = get_count(r, "last.targets", 4, &ng)) != 0)
			return rc;
		if (sc > 1)
			return bad(r, "last.targets", "in_scope not 0 or 1");
		t->in_scope = sc == 1;
		if (ng > 0 && (t->groups = r_alloc(r, ng * sizeof(*t->groups))) == NULL)
			return id_err_set(r->err, ID_ENOMEM,
			                  "employee record: out of memory");
		for (size_t k = 0; k < ng; k++) {
			if ((rc = get_str(r, "last.targets", false, &t->groups[k])) != 0)
				return rc;
			t->ngroups = k + 1;
			if (k > 0 && strcmp(t->groups[k - 1], t->groups[k]) >= 0)
				return bad(r, "last.targets",
				           "groups not sorted and unique");
		}
		if ((rc = get_str(r, "last.targets", true, &t->container)) != 0)
			return rc;
		if (i > 0 && strcmp(d->targets[i - 1].name, t->name) >= 0)
			return bad(r, "last.targets", "targets not sorted and unique");
	}
	return 0;
}

int employee_record_decode(employee_record_t *rec, const void *data, size_t len,
                           id_err_t *err)
{
	reader_t r; /* not zeroed whole: its string table is 8 KB */
	uint8_t u8 = 0;
	size_t n = 0;
	int rc;

	r.p = data;
	r.len = len;
	r.pos = 0;
	r.err = err;
	r.compact = false;
	r.arena = NULL;
	r.ntable = 0;
	r.heap = false;
	r.blk = NULL;
	r.blk_used = r.blk_cap = 0;
	employee_record_fini(rec);
	/* Every literal of the record takes at least its length plus one byte
	 * (its tag or length) of data: len bytes hold them all with their
	 * NULs. */
	if (len > 0 && (r.blk = malloc(len)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "employee record: out of memory");
		goto out;
	}
	r.blk_cap = len;
	rec->strs = r.blk;
	rec->strs_len = len;
	rec->hr.keep_lo = (uintptr_t)r.blk;
	rec->hr.keep_hi = (uintptr_t)r.blk + len;
	if (len == 0 || r.p[0] < 0x01 || r.p[0] > EMPLOYEE_RECORD_FORMAT) {
		rc = id_err_set(err, ID_ESCHEMA,
		                "employee record: unknown format byte 0x%02x",
		                len ? r.p[0] : 0u);
		goto out;
	}
	r.pos = 1;
	r.compact = r.p[0] >= 0x05;
	if ((rc = get_str(&r, "employee_id", true, &rec->employee_id)) != 0 ||
	    (rc = get_u8(&r, "status", &u8)) != 0)
		goto out;
	if (u8 >= EMPLOYEE_STATUS_COUNT) {
		rc = bad(&r, "status", "unknown employment status");
		goto out;
	}
	rec->status = (employee_status_t)u8;
	if ((rc = get_u64(&r, "seq", &rec->seq)) != 0 ||
	    (rc = get_attrs(&r, "hr", false, &rec->hr)) != 0 ||
	    (rc = get_count(&r, "changes", 16, &n)) != 0)
		goto out;
	if (n > 0 && (rec->changes = calloc(n, sizeof(*rec->changes))) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "employee record: out of memory");
		goto out;
	}
	rec->capchanges = n;
	for (size_t i = 0; i < n; i++) {
		employee_change_t *c = &rec->changes[i];
		rec->nchanges++;
		if ((rc = get_str(&r, "changes", false, &c->key)) != 0 ||
		    (rc = get_str(&r, "changes", false, &c->event_id)) != 0 ||
		    (rc = get_u64(&r, "changes", &c->seq)) != 0)
			goto out;
		if (i > 0 && key_cmp(rec->changes[i - 1].key, c->key) >= 0) {
			rc = bad(&r, "changes", "keys not in strictly ascending order");
			goto out;
		}
		if (c->seq > rec->seq) {
			rc = bad(&r, "changes", "change newer than the record");
			goto out;
		}
	}
	if ((rc = get_u8(&r, "has_last", &u8)) != 0)
		goto out;
	if (u8 > 1) {
		rc = bad(&r, "has_last", "not 0 or 1");
		goto out;
	}
	/* The last identity is read-only until the fold replaces it whole:
	 * one arena holds it (see desired_identity_t.arena). */
	r.arena = &rec->last.arena;
	if (u8 == 1 && (rc = get_desired(&r, &rec->last)) != 0)
		goto out;
	r.arena = NULL;
	if (r.p[0] == 0x01)
		rec->now = rec->last.effective_at; /* format 1: no lifecycle facts */
	else if ((rc = get_lifecycle(&r, rec)) != 0)
		goto out;
	/* Names are edited string by string (fold.c): malloc'd each. */
	r.heap = true;
	if (r.p[0] >= 0x03 && (rc = get_names(&r, rec)) != 0)
		goto out;
	r.heap = false;
	r.arena = &rec->last.arena;
	if (r.p[0] >= 0x04 && (rc = get_targets(&r, &rec->last)) != 0)
		goto out;
	r.arena = NULL;
	if (r.pos != len)
		rc = bad(&r, "end", "trailing bytes after the record");
out:
	if (rc != 0)
		employee_record_fini(rec);
	return rc;
}
