/*
 * test_fold_names.c — unique names in the fold: the claims it reports (every
 * field the arbiter relies on), holding a new hire and a rename until the
 * grant, the next candidate after a denial, the error when all are denied,
 * releases on deletion, determinism of a replay, the record's format-3
 * bytes (and format 2 still read), and that the built-in mapping and
 * fold_apply() without a claims list behave as before.
 *
 * The mapping here is a small C mapping (no Lua) whose `uid` candidates are
 * the lower-case last name, then the same with 2 and 3 appended; the Lua
 * side (pick(), ctx.granted) is covered by the scenarios in
 * tests/cases/lifecycle/names_*.case.
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
#include "processors/lifecycle.h"
#include "processors/mapping.h"
#include "processors/name_arbiter.h"
#include "schemas/model.h"

#define T0 INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */

/* ---- a mapping with a unique list ------------------------------------------- */

static int names_apply(void *impl, const id_attrs_t *hr, lifecycle_state_t state,
                       const mapping_context_t *ctx, desired_identity_t *out,
                       mapping_trace_t *trace, id_err_t *err)
{
	(void)impl;
	(void)trace;
	(void)state;
	const char *last = id_attrs_get(hr, "last_name");
	if (last == NULL)
		return id_err_set(err, ID_EINVALID, "no last_name");
	char base[64], c[3][72];
	size_t n = 0;
	for (; last[n] != '\0' && n < sizeof(base) - 1; n++)
		base[n] = (char)(last[n] >= 'A' && last[n] <= 'Z' ? last[n] - 'A' + 'a'
		                                                  : last[n]);
	base[n] = '\0';
	snprintf(c[0], sizeof(c[0]), "%s", base);
	snprintf(c[1], sizeof(c[1]), "%s2", base);
	snprintf(c[2], sizeof(c[2]), "%s3", base);
	/* uid: the granted value while it is a candidate, else the first. */
	const char *uid = c[0];
	const char *g =
	    ctx && ctx->granted ? id_attrs_get(ctx->granted, "username") : NULL;
	for (int i = 0; g != NULL && i < 3; i++)
		if (strcmp(g, c[i]) == 0)
			uid = g;
	if (id_attrs_set(&out->attributes, "uid", uid) != 0 ||
	    id_attrs_set(&out->attributes, "sn", last) != 0 ||
	    desired_identity_set_cause(out, "uid", NULL, "test:uid") != 0 ||
	    desired_identity_set_cause(out, "sn", NULL, "test:sn") != 0)
		return ID_ENOMEM;
	if (ctx != NULL && ctx->timing != NULL) {
		ctx->timing->delete_after_days = 10;
		ctx->timing->name_quarantine_days = 30;
	}
	if (ctx != NULL && ctx->unique != NULL) {
		mapping_unique_t *u = calloc(1, sizeof(*u));
		assert_non_null(u);
		u->ns = strdup("username");
		u->values = calloc(3, sizeof(char *));
		for (int i = 0; i < 3; i++)
			u->values[i] = strdup(c[i]);
		u->nvalues = 3;
		ctx->unique->items = u;
		ctx->unique->len = 1;
	}
	return 0;
}

static void names_destroy(void *impl)
{
	(void)impl;
}

static const mapping_ops_t names_ops = {names_apply, names_destroy};

/* ---- fixture ---------------------------------------------------------------- */

typedef struct fx {
	mapping_t *m;
	employee_record_t rec;
	fold_claims_t claims;
	bool emitted;
	id_err_t err;
} fx_t;

static int fx_setup(void **state)
{
	fx_t *f = calloc(1, sizeof(*f));
	id_err_t err = {0};
	f->m = mapping_create("names-test-1", &names_ops, NULL, &err);
	assert_non_null(f->m);
	employee_record_init(&f->rec);
	fold_claims_init(&f->claims);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	fx_t *f = *state;
	mapping_destroy(f->m);
	employee_record_fini(&f->rec);
	fold_claims_fini(&f->claims);
	free(f);
	return 0;
}

/* Folds one event (type, time, attributes k=v,...) of employee E1. */
static int fold_ev(fx_t *f, employee_record_t *rec, const char *id,
                   employee_event_type_t type, int64_t at, const char *k1, const char *v1,
                   const char *k2, const char *v2)
{
	employee_event_t ev;
	employee_event_init(&ev);
	ev.event_id = strdup(id);
	ev.employee_id = strdup("E1");
	ev.source = strdup("test");
	ev.type = type;
	ev.occurred_at = ev.effective_at = at;
	if (k1 != NULL)
		assert_int_equal(id_attrs_set(&ev.attributes, k1, v1), 0);
	if (k2 != NULL)
		assert_int_equal(id_attrs_set(&ev.attributes, k2, v2), 0);
	fold_claims_clear(&f->claims);
	id_err_clear(&f->err);
	int rc =
	    fold_apply_claims(rec, &ev, f->m, NULL, &f->emitted, &f->claims, &f->err);
	employee_event_fini(&ev);
	return rc;
}

static int hire(fx_t *f, employee_record_t *rec, const char *last)
{
	return fold_ev(f, rec, "h1", EV_HIRE, T0, "last_name", last, "start_date",
	               "2026-01-01");
}

/* The arbiter's answer to rec's claim of value (at the record's time). */
static int answer(fx_t *f, employee_record_t *rec, bool grant, const char *value)
{
	char id[64];
	snprintf(id, sizeof(id), "%s-%s", grant ? "g" : "d", value);
	return fold_ev(f, rec, id, grant ? EV_NAME_GRANTED : EV_NAME_DENIED, rec->now,
	               NAME_ATTR_NAMESPACE, "username", NAME_ATTR_VALUE, value);
}

static void assert_claim(const fold_claims_t *c, size_t i, name_claim_kind_t kind,
                         const char *value)
{
	assert_true(i < c->len);
	assert_int_equal(c->items[i].kind, kind);
	assert_string_equal(c->items[i].ns, "username");
	assert_string_equal(c->items[i].value, value);
}

/* ---- tests ------------------------------------------------------------------ */

/* A hire claims the first candidate and is held; the grant emits version 1
 * with it.  The claim carries what the arbiter decides by. */
static void test_hire_claims_and_waits_for_grant(void **state)
{
	fx_t *f = *state;
	assert_int_equal(hire(f, &f->rec, "Smith"), 0);
	assert_false(f->emitted);
	assert_true(f->claims.held);
	assert_true(f->claims.changed);
	assert_int_equal(f->claims.len, 1);
	assert_claim(&f->claims, 0, NAME_CLAIM, "smith");
	const name_claim_t *c = &f->claims.items[0];
	assert_string_equal(c->employee_id, "E1");
	assert_string_equal(c->source_event_id, "h1");
	assert_int_equal(c->claimed_at, T0);
	assert_int_equal(c->quarantine_until, 0);
	/* The id is the arbiter's function of the other fields. */
	name_claim_t again;
	name_claim_init(&again);
	again.kind = c->kind;
	again.ns = strdup(c->ns);
	again.value = strdup(c->value);
	again.employee_id = strdup(c->employee_id);
	again.claimed_at = c->claimed_at;
	assert_int_equal(name_claim_make_id(&again), 0);
	assert_string_equal(again.claim_id, c->claim_id);
	name_claim_fini(&again);
	assert_int_equal(f->rec.last.version, 0);

	assert_int_equal(answer(f, &f->rec, true, "smith"), 0);
	assert_true(f->emitted);
	assert_false(f->claims.held);
	assert_int_equal(f->claims.len, 0);
	assert_int_equal(f->rec.last.version, 1);
	assert_string_equal(id_attrs_get(&f->rec.last.attributes, "uid"), "smith");
	assert_string_equal(f->rec.last.cause_event_id, "g-smith");
	const employee_name_t *n = employee_record_name(&f->rec, "username");
	assert_non_null(n);
	assert_string_equal(n->granted, "smith");
	assert_null(n->pending);
}

/* Denied: the next candidate; all denied: an error that names the
 * namespace and the count, and the record keeps its last version. */
static void test_denied_next_then_all_denied(void **state)
{
	fx_t *f = *state;
	assert_int_equal(hire(f, &f->rec, "Smith"), 0);
	assert_int_equal(answer(f, &f->rec, false, "smith"), 0);
	assert_false(f->emitted);
	assert_int_equal(f->claims.len, 1);
	assert_claim(&f->claims, 0, NAME_CLAIM, "smith2");
	/* A late duplicate denial claims nothing new. */
	assert_int_equal(answer(f, &f->rec, false, "smith"), 0);
	assert_int_equal(f->claims.len, 0);
	assert_int_equal(answer(f, &f->rec, false, "smith2"), 0);
	assert_claim(&f->claims, 0, NAME_CLAIM, "smith3");
	assert_int_equal(answer(f, &f->rec, false, "smith3"), ID_ECONFLICT);
	assert_non_null(strstr(f->err.msg, "no free username among 3 candidates"));
	assert_non_null(strstr(f->err.msg, "E1"));
	assert_false(f->emitted);
	assert_int_equal(f->claims.len, 0);
	assert_int_equal(f->rec.last.version, 0);
	const employee_name_t *n = employee_record_name(&f->rec, "username");
	assert_int_equal(n->ndenied, 3);
	assert_null(n->pending);
}

/* A rename keeps the old name (no version) until the new one is granted;
 * then the old one is released with the quarantine. */
static void test_rename_keeps_old_name_until_granted(void **state)
{
	fx_t *f = *state;
	assert_int_equal(hire(f, &f->rec, "Smith"), 0);
	assert_int_equal(answer(f, &f->rec, true, "smith"), 0);
	int64_t at = T0 + 40 * LIFECYCLE_DAY_MS;
	assert_int_equal(
	    fold_ev(f, &f->rec, "u1", EV_UPDATE, at, "last_name", "Jones", NULL, NULL),
	    0);
	assert_false(f->emitted);
	assert_true(f->claims.held);
	assert_claim(&f->claims, 0, NAME_CLAIM, "jones");
	assert_int_equal(f->rec.last.version, 1);
	assert_string_equal(id_attrs_get(&f->rec.last.attributes, "uid"), "smith");
	/* Another HR change meanwhile: still held, nothing claimed twice. */
	assert_int_equal(
	    fold_ev(f, &f->rec, "u2", EV_UPDATE, at + 1000, "title", "Boss", NULL, NULL),
	    0);
	assert_false(f->emitted);
	assert_int_equal(f->claims.len, 0);

	assert_int_equal(answer(f, &f->rec, true, "jones"), 0);
	assert_true(f->emitted);
	assert_int_equal(f->rec.last.version, 2);
	assert_string_equal(id_attrs_get(&f->rec.last.attributes, "uid"), "jones");
	assert_int_equal(f->claims.len, 1);
	assert_claim(&f->claims, 0, NAME_RELEASE, "smith");
	assert_int_equal(f->claims.items[0].quarantine_until,
	                 at + 1000 + 30 * LIFECYCLE_DAY_MS);
	/* A grant nobody wants any more is given back at once. */
	assert_int_equal(answer(f, &f->rec, true, "smith3"), 0);
	assert_false(f->emitted);
	assert_claim(&f->claims, 0, NAME_RELEASE, "smith3");
	assert_int_equal(f->claims.items[0].quarantine_until, f->rec.now);
	/* Also in a namespace the employee never claimed in. */
	assert_int_equal(fold_ev(f, &f->rec, "g-x", EV_NAME_GRANTED, f->rec.now,
	                         NAME_ATTR_NAMESPACE, "ad_sam", NAME_ATTR_VALUE, "x"),
	                 0);
	assert_int_equal(f->claims.len, 1);
	assert_int_equal(f->claims.items[0].kind, NAME_RELEASE);
	assert_string_equal(f->claims.items[0].ns, "ad_sam");
	assert_null(employee_record_name(&f->rec, "ad_sam"));
}

/* Deletion releases the grant; the deleted version keeps the name; a
 * rehire (no reuse) claims the next candidate. */
static void test_delete_releases(void **state)
{
	fx_t *f = *state;
	assert_int_equal(hire(f, &f->rec, "Smith"), 0);
	assert_int_equal(answer(f, &f->rec, true, "smith"), 0);
	int64_t term = T0 + 50 * LIFECYCLE_DAY_MS;
	assert_int_equal(
	    fold_ev(f, &f->rec, "t1", EV_TERMINATE, term, NULL, NULL, NULL, NULL), 0);
	assert_int_equal(f->rec.last.state, LC_DISABLED);
	assert_int_equal(f->claims.len, 0);
	int64_t del = f->rec.timer_at;
	assert_int_equal(del, term + 10 * LIFECYCLE_DAY_MS);
	assert_int_equal(
	    fold_ev(f, &f->rec, "timer", EV_REEVALUATE, del, NULL, NULL, NULL, NULL), 0);
	assert_true(f->emitted);
	assert_int_equal(f->rec.last.state, LC_DELETED);
	assert_string_equal(id_attrs_get(&f->rec.last.attributes, "uid"), "smith");
	assert_int_equal(f->claims.len, 1);
	assert_claim(&f->claims, 0, NAME_RELEASE, "smith");
	assert_int_equal(f->claims.items[0].quarantine_until,
	                 del + 30 * LIFECYCLE_DAY_MS);
	assert_int_equal(f->claims.items[0].claimed_at, del);
	/* Re-evaluating the deleted record changes nothing. */
	assert_int_equal(fold_ev(f, &f->rec, "timer2", EV_REEVALUATE, del + 1000, NULL,
	                         NULL, NULL, NULL),
	                 0);
	assert_false(f->emitted);
	assert_int_equal(f->claims.len, 0);

	assert_int_equal(
	    fold_ev(f, &f->rec, "r1", EV_REHIRE, del + 2000, NULL, NULL, NULL, NULL), 0);
	assert_false(f->emitted);
	assert_claim(&f->claims, 0, NAME_CLAIM, "smith2");
}

/* The same events give the same claims and record bytes; the record's
 * names survive its byte form; format-2 bytes (before names) still decode. */
static void test_deterministic_and_record_bytes(void **state)
{
	fx_t *f = *state;
	employee_record_t a, b, back;
	id_buf_t ba = ID_BUF_INIT, bb = ID_BUF_INIT, bc = ID_BUF_INIT;
	char ids[2][33];
	employee_record_init(&a);
	employee_record_init(&b);
	employee_record_init(&back);
	employee_record_t *recs[2] = {&a, &b};
	for (int i = 0; i < 2; i++) {
		assert_int_equal(hire(f, recs[i], "Smith"), 0);
		snprintf(ids[i], sizeof(ids[i]), "%s", f->claims.items[0].claim_id);
		assert_int_equal(answer(f, recs[i], false, "smith"), 0);
		assert_int_equal(answer(f, recs[i], true, "smith2"), 0);
	}
	assert_string_equal(ids[0], ids[1]);
	assert_int_equal(employee_record_encode(&a, &ba, NULL), 0);
	assert_int_equal(employee_record_encode(&b, &bb, NULL), 0);
	assert_int_equal(ba.len, bb.len);
	assert_memory_equal(ba.data, bb.data, ba.len);
	assert_int_equal(ba.data[0], EMPLOYEE_RECORD_FORMAT);

	id_err_t err = {0};
	assert_int_equal(employee_record_decode(&back, ba.data, ba.len, &err), 0);
	const employee_name_t *n = employee_record_name(&back, "username");
	assert_non_null(n);
	assert_string_equal(n->granted, "smith2");
	assert_int_equal(n->ndenied, 1);
	assert_string_equal(n->denied[0], "smith");
	assert_int_equal(employee_record_encode(&back, &bc, NULL), 0);
	assert_int_equal(bc.len, ba.len);
	assert_memory_equal(bc.data, ba.data, ba.len);

	/* Format 2: the same bytes without the names trailer. */
	employee_record_t old;
	employee_record_init(&old);
	employee_record_t *r = &back;
	for (size_t i = 0; i < r->nnames; i++) {
		free(r->names[i].ns);
		free(r->names[i].granted);
		free(r->names[i].pending);
		for (size_t k = 0; k < r->names[i].ndenied; k++)
			free(r->names[i].denied[k]);
		free(r->names[i].denied);
	}
	free(r->names);
	r->names = NULL;
	r->nnames = 0;
	id_buf_reset(&bc);
	assert_int_equal(employee_record_encode_format4(r, &bc, NULL), 0);
	bc.len -= 8; /* the empty names count, the empty targets count */
	bc.data[0] = 0x02;
	assert_int_equal(employee_record_decode(&old, bc.data, bc.len, &err), 0);
	assert_int_equal(old.nnames, 0);
	assert_int_equal(old.last.version, a.last.version);
	/* Format 4 (fixed-width, no string table) decodes to the same record. */
	id_buf_t b4 = ID_BUF_INIT;
	assert_int_equal(employee_record_encode_format4(&a, &b4, NULL), 0);
	assert_int_equal(b4.data[0], 0x04);
	assert_true(b4.len > ba.len);
	assert_int_equal(employee_record_decode(&old, b4.data, b4.len, &err), 0);
	id_buf_reset(&bc);
	assert_int_equal(employee_record_encode(&old, &bc, NULL), 0);
	assert_int_equal(bc.len, ba.len);
	assert_memory_equal(bc.data, ba.data, ba.len);
	/* Format 3: with names, without the targets trailer. */
	id_buf_reset(&bc);
	assert_int_equal(id_buf_append(&bc, b4.data, b4.len - 4), 0);
	bc.data[0] = 0x03;
	assert_int_equal(employee_record_decode(&old, bc.data, bc.len, &err), 0);
	assert_string_equal(employee_record_name(&old, "username")->granted, "smith2");
	assert_int_equal(old.last.ntargets, 0);
	/* A format-2 record is not allowed a names trailer. */
	assert_int_equal(employee_record_decode(&old, b4.data, b4.len, &err), 0);
	b4.data[0] = 0x02;
	assert_int_equal(employee_record_decode(&old, b4.data, b4.len, &err), ID_EPARSE);
	assert_non_null(strstr(err.msg, "trailing"));
	id_buf_fini(&b4);

	employee_record_fini(&old);
	employee_record_fini(&a);
	employee_record_fini(&b);
	employee_record_fini(&back);
	id_buf_fini(&ba);
	id_buf_fini(&bb);
	id_buf_fini(&bc);
}

/* Without a claims list (fold_apply()), or with the built-in mapping,
 * nothing is claimed or held. */
static void test_no_claims_without_lists(void **state)
{
	fx_t *f = *state;
	employee_event_t ev;
	desired_identity_t out;
	bool emitted = false;
	employee_event_init(&ev);
	desired_identity_init(&out);
	ev.event_id = strdup("h1");
	ev.employee_id = strdup("E1");
	ev.type = EV_HIRE;
	ev.occurred_at = ev.effective_at = T0;
	assert_int_equal(id_attrs_set(&ev.attributes, "last_name", "Smith"), 0);
	assert_int_equal(id_attrs_set(&ev.attributes, "first_name", "Anna"), 0);
	assert_int_equal(fold_apply(&f->rec, &ev, f->m, &out, &emitted, NULL), 0);
	assert_true(emitted);
	assert_string_equal(id_attrs_get(&out.attributes, "uid"), "smith");
	assert_int_equal(f->rec.nnames, 0);

	id_err_t err = {0};
	mapping_t *dm = mapping_create_default("example.com", &err);
	employee_record_t rec;
	employee_record_init(&rec);
	fold_claims_clear(&f->claims);
	assert_int_equal(
	    fold_apply_claims(&rec, &ev, dm, &out, &emitted, &f->claims, &f->err), 0);
	assert_true(emitted);
	assert_string_equal(id_attrs_get(&out.attributes, "uid"), "asmith");
	assert_int_equal(f->claims.len, 0);
	assert_false(f->claims.held);
	assert_false(f->claims.changed);
	employee_record_fini(&rec);
	mapping_destroy(dm);
	desired_identity_fini(&out);
	employee_event_fini(&ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_hire_claims_and_waits_for_grant,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_denied_next_then_all_denied, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rename_keeps_old_name_until_granted,
	                                    fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_delete_releases, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_deterministic_and_record_bytes, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_no_claims_without_lists, fx_setup,
	                                    fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
