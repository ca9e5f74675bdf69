/*
 * test_fold.c — the processor fold: a joiner/mover/leaver sequence with the
 * versions, states, groups and causes it must emit; refusals that leave the
 * record untouched; the record's byte form (round trip, corrupt input);
 * determinism of replays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "processors/employee_record.h"
#include "processors/fold.h"
#include "processors/mapping.h"
#include "schemas/model.h"

#define T0  1767225600000 /* 2026-01-01T00:00:00Z */
#define DAY INT64_C(86400000)

/* KV("k", "v", "k2", NULL): key/value pairs, a NULL value clears. */
#define KV(...)                                                                          \
	(const char *const[]){__VA_ARGS__},                                              \
	    sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
#define NO_KV NULL, 0

static void ev_make(employee_event_t *ev, const char *event_id, const char *employee,
                    employee_event_type_t type, int64_t effective_at,
                    const char *const *kv, size_t nkv)
{
	employee_event_init(ev);
	ev->event_id = strdup(event_id);
	ev->source = strdup("csv");
	ev->employee_id = strdup(employee);
	ev->type = type;
	ev->occurred_at = effective_at;
	ev->effective_at = effective_at;
	for (size_t i = 0; i + 1 < nkv; i += 2)
		assert_int_equal(id_attrs_set(&ev->attributes, kv[i], kv[i + 1]), 0);
}

typedef struct fx {
	mapping_t *m;
	employee_record_t rec;
	desired_identity_t out;
	id_err_t err;
	bool emitted;
} fx_t;

static int fx_setup(void **state)
{
	fx_t *f = calloc(1, sizeof(*f));
	f->m = mapping_create_default("example.com", NULL);
	employee_record_init(&f->rec);
	desired_identity_init(&f->out);
	*state = f;
	return f->m != NULL ? 0 : -1;
}

static int fx_teardown(void **state)
{
	fx_t *f = *state;
	mapping_destroy(f->m);
	employee_record_fini(&f->rec);
	desired_identity_fini(&f->out);
	free(f);
	return 0;
}

/* Folds one event into f; returns fold_apply's code. */
static int fold(fx_t *f, const char *event_id, employee_event_type_t type, int64_t at,
                const char *const *kv, size_t nkv)
{
	employee_event_t ev;
	ev_make(&ev, event_id, "E1001", type, at, kv, nkv);
	id_err_clear(&f->err);
	f->emitted = true; /* must be reset by the fold */
	int rc = fold_apply(&f->rec, &ev, f->m, &f->out, &f->emitted, &f->err);
	employee_event_fini(&ev);
	return rc;
}

static const char *cause_event(const desired_identity_t *d, const char *attr)
{
	for (size_t i = 0; i < d->ncauses; i++)
		if (strcmp(d->causes[i].attribute, attr) == 0)
			return d->causes[i].event_id;
	return NULL;
}

static const char *attr(const desired_identity_t *d, const char *name)
{
	return id_attrs_get(&d->attributes, name);
}

static void encode(const employee_record_t *rec, id_buf_t *b)
{
	id_buf_reset(b);
	assert_int_equal(employee_record_encode(rec, b, NULL), 0);
}

static const char *const *hire_kv(size_t *n)
{
	static const char *const kv[] = {
	    "first_name",      "Ann",       "last_name",  "Lee",
	    "title",           "Engineer",  "department", "Sales",
	    "location",        "Oslo",      "manager_id", "E0042",
	    "employment_type", "Full-Time", "start_date", "2025-09-01"};
	*n = sizeof(kv) / sizeof(kv[0]);
	return kv;
}

static void test_fold_lifecycle_sequence(void **state)
{
	fx_t *f = *state;
	desired_identity_t *o = &f->out;
	size_t n;
	const char *const *kv = hire_kv(&n);

	/* Joiner. */
	assert_int_equal(fold(f, "h1", EV_HIRE, T0, kv, n), 0);
	assert_true(f->emitted);
	assert_int_equal(o->version, 1);
	assert_int_equal(o->state, LC_ACTIVE);
	assert_string_equal(o->employee_id, "E1001");
	assert_string_equal(o->cause_event_id, "h1");
	assert_int_equal(o->effective_at, T0);
	assert_string_equal(o->policy_version, "default-1");
	assert_string_equal(attr(o, "uid"), "alee");
	assert_string_equal(attr(o, "mail"), "alee@example.com");
	assert_string_equal(attr(o, "title"), "Engineer");
	assert_string_equal(o->container, "ou=Sales");
	assert_int_equal(o->ngroups, 2);
	assert_string_equal(o->groups[0], "dept-sales");
	assert_string_equal(o->groups[1], "staff");
	assert_string_equal(o->manager_id, "E0042");
	assert_true(o->ncauses > 0);
	for (size_t i = 0; i < o->ncauses; i++)
		assert_string_equal(o->causes[i].event_id, "h1");
	assert_int_equal(f->rec.status, EMPLOYEE_STATUS_ACTIVE);
	assert_int_equal(f->rec.last.version, 1);

	/* Mover: title. */
	assert_int_equal(
	    fold(f, "u1", EV_UPDATE, T0 + DAY, KV("title", "Senior Engineer")), 0);
	assert_true(f->emitted);
	assert_int_equal(o->version, 2);
	assert_string_equal(attr(o, "title"), "Senior Engineer");
	assert_string_equal(cause_event(o, "title"), "u1");
	assert_string_equal(cause_event(o, "uid"), "h1");
	assert_string_equal(o->cause_event_id, "u1");
	assert_int_equal(o->effective_at, T0 + DAY);

	/* Mover: department → container and groups follow. */
	assert_int_equal(fold(f, "u2", EV_UPDATE, T0 + 2 * DAY,
	                      KV("department", "Research & Development")),
	                 0);
	assert_true(f->emitted);
	assert_int_equal(o->version, 3);
	assert_string_equal(attr(o, "departmentNumber"), "Research & Development");
	assert_string_equal(o->container, "ou=Research & Development");
	assert_int_equal(o->ngroups, 2);
	assert_string_equal(o->groups[0], "dept-research-development");
	assert_string_equal(o->groups[1], "staff");
	assert_string_equal(o->cause_event_id, "u2");
	assert_string_equal(cause_event(o, "departmentNumber"), "u2");
	assert_string_equal(cause_event(o, MAPPING_CAUSE_CONTAINER), "u2");
	assert_string_equal(cause_event(o, MAPPING_CAUSE_GROUPS), "u2");
	assert_string_equal(cause_event(o, "title"), "u1");
	assert_string_equal(cause_event(o, "uid"), "h1");

	/* The same update again: nothing new, and the causes do not move. */
	assert_int_equal(fold(f, "u3", EV_UPDATE, T0 + 3 * DAY,
	                      KV("department", "Research & Development")),
	                 0);
	assert_false(f->emitted);
	assert_int_equal(o->version, 3); /* out untouched */
	assert_int_equal(f->rec.last.version, 3);
	assert_string_equal(employee_record_change_find(&f->rec, "department")->event_id,
	                    "u2");

	/* Name change: uid, mail, cn, displayName, sn follow. */
	assert_int_equal(
	    fold(f, "u4", EV_UPDATE, T0 + 4 * DAY, KV("last_name", "Lee-Park")), 0);
	assert_true(f->emitted);
	assert_int_equal(o->version, 4);
	assert_string_equal(attr(o, "uid"), "aleepark");
	assert_string_equal(attr(o, "mail"), "aleepark@example.com");
	assert_string_equal(attr(o, "cn"), "Ann Lee-Park");
	assert_string_equal(attr(o, "displayName"), "Ann Lee-Park");
	assert_string_equal(attr(o, "sn"), "Lee-Park");
	assert_string_equal(attr(o, "givenName"), "Ann");
	assert_string_equal(cause_event(o, "uid"), "u4");
	assert_string_equal(cause_event(o, "mail"), "u4");
	assert_string_equal(cause_event(o, "cn"), "u4");
	assert_string_equal(cause_event(o, "givenName"), "h1");
	assert_string_equal(cause_event(o, "employeeNumber"), "h1");

	/* Leaver. */
	assert_int_equal(fold(f, "t1", EV_TERMINATE, T0 + 5 * DAY, NO_KV), 0);
	assert_true(f->emitted);
	assert_int_equal(o->version, 5);
	assert_int_equal(o->state, LC_DISABLED);
	assert_int_equal(o->ngroups, 0);
	assert_string_equal(attr(o, "uid"), "aleepark"); /* the account keeps its data */
	assert_string_equal(o->container, "ou=Research & Development");
	assert_string_equal(cause_event(o, MAPPING_CAUSE_STATE), "t1");
	assert_string_equal(cause_event(o, MAPPING_CAUSE_GROUPS), "t1");
	assert_string_equal(cause_event(o, "title"), "u1");
	assert_int_equal(f->rec.status, EMPLOYEE_STATUS_TERMINATED);

	/* A second termination changes nothing. */
	assert_int_equal(fold(f, "t2", EV_TERMINATE, T0 + 6 * DAY, NO_KV), 0);
	assert_false(f->emitted);
	assert_int_equal(f->rec.last.version, 5);
	assert_string_equal(
	    employee_record_change_find(&f->rec, MAPPING_SRC_LIFECYCLE)->event_id, "t1");

	/* Rehire reactivates the same identity with what changed. */
	assert_int_equal(
	    fold(f, "r1", EV_REHIRE, T0 + 30 * DAY, KV("title", "Consultant")), 0);
	assert_true(f->emitted);
	assert_int_equal(o->version, 6);
	assert_int_equal(o->state, LC_ACTIVE);
	assert_string_equal(attr(o, "uid"), "aleepark");
	assert_string_equal(attr(o, "title"), "Consultant");
	assert_int_equal(o->ngroups, 2);
	assert_string_equal(o->groups[0], "dept-research-development");
	assert_string_equal(cause_event(o, MAPPING_CAUSE_STATE), "r1");
	assert_string_equal(cause_event(o, "title"), "r1");
	assert_int_equal(o->effective_at, T0 + 30 * DAY);
	assert_int_equal(f->rec.status, EMPLOYEE_STATUS_ACTIVE);

	/* What was emitted is what the record remembers. */
	assert_true(desired_identity_same_target_state(o, &f->rec.last));
	assert_int_equal(f->rec.last.version, 6);
	assert_string_equal(f->rec.last.cause_event_id, "r1");
}

static void test_fold_hire_replaces_and_update_clears(void **state)
{
	fx_t *f = *state;
	size_t n;
	const char *const *kv = hire_kv(&n);

	assert_int_equal(fold(f, "h1", EV_HIRE, T0, kv, n), 0);
	assert_true(f->emitted);
	/* A re-imported identical hire emits nothing. */
	assert_int_equal(fold(f, "h2", EV_HIRE, T0, kv, n), 0);
	assert_false(f->emitted);

	/* A hire is the whole record: what it lacks is gone. */
	assert_int_equal(fold(f, "h3", EV_HIRE, T0 + DAY,
	                      KV("first_name", "Ann", "last_name", "Lee", "department",
	                         "Sales", "location", NULL)),
	                 0);
	assert_true(f->emitted);
	assert_int_equal(f->out.version, 2);
	assert_null(attr(&f->out, "title"));
	assert_null(attr(&f->out, "l"));
	assert_null(f->out.manager_id);
	assert_false(id_attrs_has(&f->rec.hr, "start_date"));
	assert_false(id_attrs_has(&f->rec.hr, "location"));
	assert_string_equal(employee_record_change_find(&f->rec, "title")->event_id,
	                    "h3");
	assert_string_equal(employee_record_change_find(&f->rec, "first_name")->event_id,
	                    "h1");

	/* An UPDATE with a null value clears one attribute. */
	assert_int_equal(fold(f, "u1", EV_UPDATE, T0 + 2 * DAY, KV("department", NULL)),
	                 0);
	assert_true(f->emitted);
	assert_int_equal(f->out.version, 3);
	assert_null(attr(&f->out, "departmentNumber"));
	assert_string_equal(f->out.container, "ou=Unassigned");
	assert_int_equal(f->out.ngroups, 1);
	assert_string_equal(f->out.groups[0], "staff");
	assert_string_equal(cause_event(&f->out, MAPPING_CAUSE_CONTAINER), "u1");

	/* Clearing what is not there changes nothing. */
	assert_int_equal(fold(f, "u2", EV_UPDATE, T0 + 3 * DAY, KV("department", NULL)),
	                 0);
	assert_false(f->emitted);

	/* A new manager is a new version. */
	assert_int_equal(
	    fold(f, "u3", EV_UPDATE, T0 + 4 * DAY, KV("manager_id", "E0007")), 0);
	assert_true(f->emitted);
	assert_string_equal(f->out.manager_id, "E0007");
	assert_string_equal(cause_event(&f->out, MAPPING_CAUSE_MANAGER), "u3");

	/* An HR attribute no rule reads is kept but emits nothing. */
	assert_int_equal(fold(f, "u4", EV_UPDATE, T0 + 5 * DAY, KV("shoe_size", "44")),
	                 0);
	assert_false(f->emitted);
	assert_string_equal(id_attrs_get(&f->rec.hr, "shoe_size"), "44");
}

static void test_fold_refusals_leave_record_unchanged(void **state)
{
	fx_t *f = *state;
	id_buf_t before = ID_BUF_INIT, after = ID_BUF_INIT;

	/* Never hired: update and terminate are refused. */
	encode(&f->rec, &before);
	assert_int_equal(fold(f, "u1", EV_UPDATE, T0, KV("title", "X")), ID_ENOTFOUND);
	assert_false(f->emitted);
	assert_non_null(strstr(f->err.msg, "E1001"));
	assert_non_null(strstr(f->err.msg, "u1"));
	assert_int_equal(fold(f, "t1", EV_TERMINATE, T0, NO_KV), ID_ENOTFOUND);
	assert_int_equal(fold(f, "l1", EV_LEAVE_START, T0, NO_KV), ID_ENOTFOUND);
	/* A timer of a record never hired is accepted and ignored. */
	assert_int_equal(fold(f, "r1", EV_REEVALUATE, T0, NO_KV), 0);
	assert_false(f->emitted);
	encode(&f->rec, &after);
	assert_int_equal(after.len, before.len);
	assert_memory_equal(after.data, before.data, before.len);
	assert_null(f->rec.employee_id);

	size_t n;
	const char *const *kv = hire_kv(&n);
	assert_int_equal(fold(f, "h1", EV_HIRE, T0, kv, n), 0);
	encode(&f->rec, &before);

	/* Handled outside the employee fold (policy markers). */
	assert_int_equal(
	    fold(f, "x", EV_POLICY_ACTIVATED, T0 + DAY, KV("title", "Ignored")), 0);
	assert_false(f->emitted);
	/* A name answer without its namespace and value is refused. */
	static const employee_event_type_t answers[] = {EV_NAME_GRANTED, EV_NAME_DENIED};
	for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
		assert_int_equal(
		    fold(f, "x", answers[i], T0 + DAY, KV("title", "Ignored")),
		    ID_EINVALID);
		assert_non_null(strstr(f->err.msg, "namespace"));
		assert_false(f->emitted);
	}
	assert_int_equal(fold(f, "bad", (employee_event_type_t)99, T0, NO_KV),
	                 ID_EINVALID);
	assert_non_null(strstr(f->err.msg, "unknown event type"));
	assert_int_equal(fold(f, "bad", EV_UPDATE, T0, KV("@lifecycle", "x")),
	                 ID_EINVALID);
	assert_non_null(strstr(f->err.msg, "reserved"));

	employee_event_t ev;
	ev_make(&ev, "o1", "E2002", EV_UPDATE, T0, KV("title", "Other"));
	assert_int_equal(fold_apply(&f->rec, &ev, f->m, &f->out, &f->emitted, &f->err),
	                 ID_EINVALID);
	assert_non_null(strstr(f->err.msg, "E2002"));
	employee_event_fini(&ev);
	ev_make(&ev, "", "E1001", EV_UPDATE, T0, KV("title", "Other"));
	assert_int_equal(fold_apply(&f->rec, &ev, f->m, &f->out, &f->emitted, NULL),
	                 ID_EINVALID);
	employee_event_fini(&ev);

	encode(&f->rec, &after);
	assert_int_equal(after.len, before.len);
	assert_memory_equal(after.data, before.data, before.len);
	id_buf_fini(&before);
	id_buf_fini(&after);
}

static void test_fold_rehire_of_unknown_is_a_hire(void **state)
{
	fx_t *f = *state;
	assert_int_equal(
	    fold(f, "r1", EV_REHIRE, T0, KV("first_name", "Bo", "last_name", "Ek")), 0);
	assert_true(f->emitted);
	assert_int_equal(f->out.version, 1);
	assert_int_equal(f->out.state, LC_ACTIVE);
	assert_string_equal(attr(&f->out, "uid"), "bek");
	assert_string_equal(cause_event(&f->out, "employeeNumber"), "r1");
}

static void test_fold_unmappable_name_is_absorbed(void **state)
{
	fx_t *f = *state;
	/* The HR facts are kept; only the identity cannot be computed. */
	assert_int_equal(
	    fold(f, "h1", EV_HIRE, T0, KV("first_name", "Bruce", "last_name", "李")),
	    ID_EINVALID);
	assert_false(f->emitted);
	assert_non_null(strstr(f->err.msg, "event h1"));
	assert_non_null(strstr(f->err.msg, "employee E1001"));
	assert_non_null(strstr(f->err.msg, "last_name"));
	assert_int_equal(f->rec.status, EMPLOYEE_STATUS_ACTIVE);
	assert_string_equal(id_attrs_get(&f->rec.hr, "last_name"), "李");
	assert_int_equal(f->rec.last.version, 0);

	/* HR fixes the name: the first version appears. */
	assert_int_equal(fold(f, "u1", EV_UPDATE, T0 + DAY, KV("last_name", "Li")), 0);
	assert_true(f->emitted);
	assert_int_equal(f->out.version, 1);
	assert_string_equal(attr(&f->out, "uid"), "bli");
	assert_string_equal(cause_event(&f->out, "uid"), "u1");
	assert_string_equal(cause_event(&f->out, "givenName"), "h1");
}

/* ---- record bytes ------------------------------------------------------- */

/* The lifecycle sequence as data, for the record and determinism tests. */
typedef struct step {
	const char *id;
	employee_event_type_t type;
	const char *kv[8];
} step_t;

static const step_t steps[] = {
    {"h1",
     EV_HIRE,
     {"first_name", "Øyvind", "last_name", "Åsen", "department", "Sales, EMEA", NULL}},
    {"u1", EV_UPDATE, {"title", "Engineer", "location", "Bergen", NULL}},
    {"u2", EV_UPDATE, {"department", "R&D", "manager_id", "E7", NULL}},
    {"u3", EV_UPDATE, {"department", "R&D", NULL}},
    {"u4", EV_UPDATE, {"location", NULL, "preferred_name", "Vind", NULL}},
    {"t1", EV_TERMINATE, {NULL}},
    {"t2", EV_TERMINATE, {NULL}},
    {"r1", EV_REHIRE, {"title", "Advisor", NULL}},
};
#define NSTEPS (sizeof(steps) / sizeof(steps[0]))

/* kv holds pairs up to the first NULL key; a NULL value clears. */
static size_t step_kv_len(const step_t *s)
{
	size_t n = 0;
	while (n < 8 && s->kv[n] != NULL)
		n += 2;
	return n;
}

/* a and b hold the same bytes. */
static void assert_buf_equal(const id_buf_t *a, const id_buf_t *b)
{
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->data, b->data, a->len);
}

/* Appends d to log through the record codec's desired-identity part: same
 * bytes ⇔ same identity. */
static void log_identity(id_buf_t *log, const desired_identity_t *d)
{
	employee_record_t tmp;
	employee_record_init(&tmp);
	assert_int_equal(desired_identity_copy(&tmp.last, d), 0);
	assert_int_equal(employee_record_encode(&tmp, log, NULL), 0);
	employee_record_fini(&tmp);
}

/* Encodes rec and decodes it again, as a restart does: state is a cache, so
 * nothing downstream may change. */
static void reload_record(employee_record_t *rec)
{
	id_buf_t b = ID_BUF_INIT;
	assert_int_equal(employee_record_encode(rec, &b, NULL), 0);
	assert_int_equal(employee_record_decode(rec, b.data, b.len, NULL), 0);
	id_buf_fini(&b);
}

/* Folds steps[from..to) into rec; emitted versions are appended to log. */
static void run_steps(const mapping_t *m, employee_record_t *rec, size_t from, size_t to,
                      id_buf_t *log, bool reload_each)
{
	for (size_t i = from; i < to; i++) {
		employee_event_t ev;
		desired_identity_t out;
		bool emitted;
		ev_make(&ev, steps[i].id, "E1001", steps[i].type, T0 + (int64_t)i * DAY,
		        steps[i].kv, step_kv_len(&steps[i]));
		desired_identity_init(&out);
		assert_int_equal(fold_apply(rec, &ev, m, &out, &emitted, NULL), 0);
		if (emitted)
			log_identity(log, &out);
		if (reload_each)
			reload_record(rec);
		desired_identity_fini(&out);
		employee_event_fini(&ev);
	}
}

static void test_record_round_trip(void **state)
{
	fx_t *f = *state;
	id_buf_t a = ID_BUF_INIT, b = ID_BUF_INIT, log = ID_BUF_INIT;
	employee_record_t copy;
	id_err_t err = {0};

	/* An empty record round-trips too. */
	encode(&f->rec, &a);
	employee_record_init(&copy);
	assert_int_equal(employee_record_decode(&copy, a.data, a.len, &err), 0);
	assert_null(copy.employee_id);
	assert_int_equal(copy.last.version, 0);

	run_steps(f->m, &f->rec, 0, NSTEPS, &log, false);
	encode(&f->rec, &a);
	assert_int_equal(a.data[0], EMPLOYEE_RECORD_FORMAT);
	assert_int_equal(employee_record_decode(&copy, a.data, a.len, &err), 0);
	encode(&copy, &b);
	assert_buf_equal(&a, &b);

	assert_string_equal(copy.employee_id, "E1001");
	assert_int_equal(copy.status, EMPLOYEE_STATUS_ACTIVE);
	assert_int_equal(copy.seq, f->rec.seq);
	assert_true(id_attrs_equal(&copy.hr, &f->rec.hr));
	assert_string_equal(id_attrs_get(&copy.hr, "preferred_name"), "Vind");
	assert_false(id_attrs_has(&copy.hr, "location"));
	assert_int_equal(copy.nchanges, f->rec.nchanges);
	assert_string_equal(employee_record_change_find(&copy, "location")->event_id,
	                    "u4");
	assert_int_equal(copy.last.version, f->rec.last.version);
	assert_true(desired_identity_same_target_state(&copy.last, &f->rec.last));
	assert_string_equal(copy.last.cause_event_id, "r1");
	assert_int_equal(copy.last.effective_at, f->rec.last.effective_at);
	assert_int_equal(copy.last.ncauses, f->rec.last.ncauses);
	for (size_t i = 0; i < copy.last.ncauses; i++) {
		assert_string_equal(copy.last.causes[i].attribute,
		                    f->rec.last.causes[i].attribute);
		assert_string_equal(copy.last.causes[i].event_id,
		                    f->rec.last.causes[i].event_id);
		assert_string_equal(copy.last.causes[i].rule, f->rec.last.causes[i].rule);
	}
	/* The decoded record folds on like the original. */
	assert_int_equal(fold(f, "u9", EV_UPDATE, T0 + 99 * DAY, KV("title", "Chief")),
	                 0);
	assert_true(f->emitted);
	assert_int_equal(f->out.version, copy.last.version + 1);

	employee_record_fini(&copy);
	id_buf_fini(&a);
	id_buf_fini(&b);
	id_buf_fini(&log);
}

static void test_record_corrupt_bytes_refused(void **state)
{
	fx_t *f = *state;
	id_buf_t a = ID_BUF_INIT, b = ID_BUF_INIT, log = ID_BUF_INIT;
	employee_record_t r;
	id_err_t err = {0};

	run_steps(f->m, &f->rec, 0, NSTEPS, &log, false);
	encode(&f->rec, &a);
	employee_record_init(&r);

	/* Every proper prefix is refused, and leaves r empty. */
	for (size_t len = 0; len < a.len; len++) {
		int rc = employee_record_decode(&r, a.data, len, &err);
		assert_true(rc == ID_EPARSE || (len == 0 && rc == ID_ESCHEMA));
		assert_null(r.employee_id);
		assert_int_equal(r.hr.len, 0);
	}
	/* Trailing bytes. */
	assert_int_equal(id_buf_append(&b, a.data, a.len), 0);
	assert_int_equal(id_buf_append_u8(&b, 0), 0);
	assert_int_equal(employee_record_decode(&r, b.data, b.len, &err), ID_EPARSE);
	assert_non_null(strstr(err.msg, "trailing"));
	/* Unknown format. */
	a.data[0] = EMPLOYEE_RECORD_FORMAT + 1;
	assert_int_equal(employee_record_decode(&r, a.data, a.len, &err), ID_ESCHEMA);
	a.data[0] = EMPLOYEE_RECORD_FORMAT;
	/* Status out of range: byte after format + tag(1) + "E1001". */
	assert_int_equal(a.data[1], (5 + 1) << 1); /* a literal of 5 bytes */
	a.data[1 + 1 + 5] = 7;
	assert_int_equal(employee_record_decode(&r, a.data, a.len, &err), ID_EPARSE);
	assert_non_null(strstr(err.msg, "status"));
	a.data[1 + 1 + 5] = EMPLOYEE_STATUS_ACTIVE;
	/* A reference to a string not written before it. */
	a.data[1] = 0x7f;
	assert_int_equal(employee_record_decode(&r, a.data, a.len, &err), ID_EPARSE);
	assert_non_null(strstr(err.msg, "unknown string"));
	/* A string length past the end (two-byte tag). */
	a.data[1] = 0xfe;
	assert_int_equal(employee_record_decode(&r, a.data, a.len, &err), ID_EPARSE);
	a.data[1] = (5 + 1) << 1;
	assert_int_equal(employee_record_decode(&r, a.data, a.len, &err), 0);

	/* Hand-made: keys out of order, a NUL inside a string, a huge count. */
	static const unsigned char unsorted[] = {
	    1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,   0,
	    0, 0,    0,    0, /* id, status, seq */
	    0, 0,    0,    2,    0,    0, 0, 1, 'b', 0,
	    0, 0,    1,    '1',                           /* hr: b=1 */
	    0, 0,    0,    1,    'a',  0, 0, 0, 1,   '2', /* a=2 */
	    0, 0,    0,    0,    0};                      /* changes, has_last */
	assert_int_equal(employee_record_decode(&r, unsorted, sizeof(unsorted), &err),
	                 ID_EPARSE);
	assert_non_null(strstr(err.msg, "ascending"));
	static const unsigned char nul[] = {1, 0, 0, 0, 2, 'E', 0, 0, 0, 0, 0, 0,
	                                    0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0};
	assert_int_equal(employee_record_decode(&r, nul, sizeof(nul), &err), ID_EPARSE);
	assert_non_null(strstr(err.msg, "NUL"));
	static const unsigned char huge[] = {
	    1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff};
	assert_int_equal(employee_record_decode(&r, huge, sizeof(huge), &err), ID_EPARSE);
	assert_non_null(strstr(err.msg, "count"));
	/* And the well-formed empty record it was built from decodes. */
	static const unsigned char empty[] = {1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0,
	                                      0, 0,    0,    0,    0,    0, 0, 0,
	                                      0, 0,    0,    0,    0,    0, 0};
	assert_int_equal(employee_record_decode(&r, empty, sizeof(empty), &err), 0);

	employee_record_fini(&r);
	id_buf_fini(&a);
	id_buf_fini(&b);
	id_buf_fini(&log);
}

static void test_fold_deterministic(void **state)
{
	fx_t *f = *state;
	employee_record_t r1, r2, r3;
	id_buf_t b1 = ID_BUF_INIT, b2 = ID_BUF_INIT, b3 = ID_BUF_INIT;
	id_buf_t l1 = ID_BUF_INIT, l2 = ID_BUF_INIT, l3 = ID_BUF_INIT;

	employee_record_init(&r1);
	employee_record_init(&r2);
	employee_record_init(&r3);
	run_steps(f->m, &r1, 0, NSTEPS, &l1, false);
	run_steps(f->m, &r2, 0, NSTEPS, &l2, false);
	run_steps(f->m, &r3, 0, NSTEPS, &l3, true); /* restarted after every event */
	encode(&r1, &b1);
	encode(&r2, &b2);
	encode(&r3, &b3);
	assert_buf_equal(&b1, &b2);
	assert_buf_equal(&b1, &b3);
	/* The emitted identities are byte-identical too (6 versions). */
	assert_int_equal(r1.last.version, 6);
	assert_buf_equal(&l1, &l2);
	assert_buf_equal(&l1, &l3);

	employee_record_fini(&r1);
	employee_record_fini(&r2);
	employee_record_fini(&r3);
	id_buf_fini(&b1);
	id_buf_fini(&b2);
	id_buf_fini(&b3);
	id_buf_fini(&l1);
	id_buf_fini(&l2);
	id_buf_fini(&l3);
}

/*
 * A decoded record keeps its strings in one block (employee_record_t.strs),
 * shared where the bytes repeat one.  Folding on from a decoded record
 * replaces or drops every kind of them — HR values and keys, change event
 * ids, the lifecycle's event ids and reason, pending changes — and must
 * give what folding without a reload gives (under ASan: no string of the
 * block freed on its own, none leaked).
 */
typedef struct timed_step {
	const char *id;
	employee_event_type_t type;
	int64_t occurred_at, effective_at;
	const char *reason;
	const char *kv[8];
} timed_step_t;

static const timed_step_t timed[] = {
    {"h1",
     EV_HIRE,
     T0,
     T0,
     NULL,
     {"first_name", "Ada", "last_name", "Byron", "title", "Analyst", "location", "Oslo"}},
    {"u1", EV_UPDATE, T0 + DAY, T0 + 10 * DAY, NULL, {"department", "Sales", NULL}},
    {"l1", EV_LEAVE_START, T0 + 2 * DAY, T0 + 2 * DAY, "parental", {NULL}},
    {"u2",
     EV_UPDATE,
     T0 + 3 * DAY,
     T0 + 3 * DAY,
     NULL,
     {"title", "Lead", "location", NULL}},
    {"l2", EV_LEAVE_END, T0 + 4 * DAY, T0 + 4 * DAY, NULL, {NULL}},
    {"e1", EV_REEVALUATE, T0 + 10 * DAY, T0 + 10 * DAY, NULL, {NULL}},
    {"h2",
     EV_HIRE,
     T0 + 11 * DAY,
     T0 + 11 * DAY,
     NULL,
     {"first_name", "Ada", "last_name", "King", "department", "Sales", NULL}},
    {"t1", EV_TERMINATE, T0 + 12 * DAY, T0 + 20 * DAY, "moved", {NULL}},
    {"t2", EV_TERMINATE, T0 + 13 * DAY, T0 + 15 * DAY, "resigned", {"title", "Ex", NULL}},
};
#define NTIMED (sizeof(timed) / sizeof(timed[0]))

static void run_timed(const mapping_t *m, employee_record_t *rec, id_buf_t *log,
                      bool reload_each)
{
	for (size_t i = 0; i < NTIMED; i++) {
		const timed_step_t *t = &timed[i];
		employee_event_t ev;
		bool emitted = false;
		size_t nkv = 0;
		while (nkv < 8 && t->kv[nkv] != NULL)
			nkv += 2;
		ev_make(&ev, t->id, "E1001", t->type, t->effective_at, t->kv, nkv);
		ev.occurred_at = t->occurred_at;
		if (t->reason != NULL)
			ev.reason = strdup(t->reason);
		assert_int_equal(fold_apply(rec, &ev, m, NULL, &emitted, NULL), 0);
		if (emitted)
			log_identity(log, &rec->last);
		if (reload_each) {
			reload_record(rec);
			assert_non_null(rec->strs);
		}
		employee_event_fini(&ev);
	}
}

static void test_record_decoded_strings_replaced(void **state)
{
	fx_t *f = *state;
	employee_record_t a, b;
	id_buf_t ba = ID_BUF_INIT, bb = ID_BUF_INIT, la = ID_BUF_INIT, lb = ID_BUF_INIT;

	employee_record_init(&a);
	employee_record_init(&b);
	run_timed(f->m, &a, &la, false);
	run_timed(f->m, &b, &lb, true);
	encode(&a, &ba);
	encode(&b, &bb);
	assert_buf_equal(&ba, &bb);
	assert_buf_equal(&la, &lb);
	/* The sequence went where it should: the pending transfer applied,
	 * the second termination's date and reason stand. */
	assert_int_equal(b.npending, 0);
	assert_string_equal(id_attrs_get(&b.hr, "department"), "Sales");
	assert_string_equal(id_attrs_get(&b.hr, "title"), "Ex");
	assert_false(id_attrs_has(&b.hr, "location"));
	assert_string_equal(b.term_event, "t2");
	assert_string_equal(b.term_reason, "resigned");
	assert_string_equal(b.leave_event, "l2");
	assert_string_equal(employee_record_change_find(&b, "last_name")->event_id, "h2");

	employee_record_fini(&a);
	employee_record_fini(&b);
	id_buf_fini(&ba);
	id_buf_fini(&bb);
	id_buf_fini(&la);
	id_buf_fini(&lb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fold_lifecycle_sequence, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_fold_hire_replaces_and_update_clears,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_fold_refusals_leave_record_unchanged,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_fold_rehire_of_unknown_is_a_hire,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_fold_unmappable_name_is_absorbed,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_record_round_trip, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_record_corrupt_bytes_refused, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_record_decoded_strings_replaced,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_fold_deterministic, fx_setup,
	                                    fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
