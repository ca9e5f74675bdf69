/*
 * test_export_diff.c — what events an HR export turns into, given what the
 * previous exports said: hires, updates with only the changed (or cleared)
 * attributes, terminations, rehires, nothing for unchanged people, stable ids.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/csv_reader.h"
#include "ingest/export_diff.h"

#define SHA_A "aaaaaaaaaaaaaaaa1111111111111111aaaaaaaaaaaaaaaa1111111111111111"
#define SHA_B "bbbbbbbbbbbbbbbb2222222222222222bbbbbbbbbbbbbbbb2222222222222222"
#define AT    1764097200000LL

static csv_export_t *parse(const char *text)
{
	csv_export_t *x = NULL;
	id_err_t err = {0};
	if (csv_reader_parse("hr.csv", text, strlen(text), &x, &err) != 0)
		fail_msg("parse: %s", err.msg);
	return x;
}

static void diff(export_snapshot_t *prev, const char *text, const char *sha,
                 export_diff_t *d)
{
	csv_export_t *x = parse(text);
	size_t n = 0;
	const csv_row_t *rows = csv_export_rows(x, &n);
	export_diff_params_t p = {"csv", sha, "csv:hr.csv", AT};
	id_err_t err = {0};
	*d = (export_diff_t)EXPORT_DIFF_INIT;
	if (export_diff_compute(prev, rows, n, &p, d, &err) != 0)
		fail_msg("diff: %s", err.msg);
	csv_export_destroy(x);
}

/* The snapshot after publishing d on top of prev, as ingest would store it. */
static export_snapshot_t *apply(export_snapshot_t *prev, const export_diff_t *d)
{
	export_snapshot_t *next = export_snapshot_create();
	size_t n = 0;
	const export_entry_t *old = export_snapshot_entries(prev, &n);
	for (size_t i = 0; i < n; i++) {
		const export_entry_t *e = &old[i];
		for (size_t c = 0; c < d->nchanges; c++)
			if (strcmp(d->changes[c].entry.employee_id, e->employee_id) == 0)
				e = &d->changes[c].entry;
		assert_int_equal(export_snapshot_add(next, e->employee_id, e->terminated,
		                                     e->seq, &e->attrs),
		                 0);
	}
	for (size_t c = 0; c < d->nchanges; c++) {
		const export_entry_t *e = &d->changes[c].entry;
		if (export_snapshot_find(prev, e->employee_id) == NULL)
			assert_int_equal(export_snapshot_add(next, e->employee_id,
			                                     e->terminated, e->seq,
			                                     &e->attrs),
			                 0);
	}
	return next;
}

static void assert_attr(const id_attrs_t *a, const char *k, const char *v)
{
	assert_true(id_attrs_has(a, k));
	if (v == NULL)
		assert_null(id_attrs_get(a, k));
	else
		assert_string_equal(id_attrs_get(a, k), v);
}

static void expected_event_id(const char *sha, const char *emp, const char *type,
                              const char *seq, char out[33])
{
	unsigned char h[32];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, "csv", 4);
	EVP_DigestUpdate(md, sha, strlen(sha) + 1);
	EVP_DigestUpdate(md, emp, strlen(emp) + 1);
	EVP_DigestUpdate(md, type, strlen(type) + 1);
	EVP_DigestUpdate(md, seq, strlen(seq));
	EVP_DigestFinal_ex(md, h, NULL);
	EVP_MD_CTX_free(md);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static const char *FILE1 = "employee_id,first_name,last_name,title,department\n"
                           "E2,Grace,Hopper,Admiral,Navy\n"
                           "E10,Ada,Lovelace,,Engineering\n";

static void test_first_export_hires_everyone(void **state)
{
	(void)state;
	export_snapshot_t *snap = export_snapshot_create();
	export_diff_t d;
	diff(snap, FILE1, SHA_A, &d);
	assert_int_equal(d.nchanges, 2);
	assert_int_equal(d.hires, 2);
	assert_int_equal(d.updates + d.terminations + d.rehires + d.unchanged, 0);
	assert_int_equal(d.known_active, 0);

	/* Ordered by employee id as strings: "E10" before "E2". */
	const employee_event_t *ev = &d.changes[0].event;
	assert_string_equal(ev->employee_id, "E10");
	assert_int_equal(ev->type, EV_HIRE);
	assert_string_equal(ev->source, "csv");
	assert_string_equal(ev->source_event_id, "aaaaaaaaaaaaaaaa:E10:0");
	assert_string_equal(ev->actor, "csv:hr.csv");
	assert_string_equal(ev->reason, "new in the HR export");
	assert_int_equal(ev->occurred_at, AT);
	assert_int_equal(ev->effective_at, AT);
	char want[33];
	expected_event_id(SHA_A, "E10", "HIRE", "0", want);
	assert_string_equal(ev->event_id, want);
	/* All attributes (the empty title is not one). */
	assert_int_equal(ev->attributes.len, 3);
	assert_attr(&ev->attributes, "first_name", "Ada");
	assert_attr(&ev->attributes, "last_name", "Lovelace");
	assert_attr(&ev->attributes, "department", "Engineering");

	ev = &d.changes[1].event;
	assert_string_equal(ev->employee_id, "E2");
	assert_int_equal(ev->attributes.len, 4);
	assert_attr(&ev->attributes, "title", "Admiral");

	/* The snapshot-to-be: active, one event published. */
	const export_entry_t *en = &d.changes[1].entry;
	assert_string_equal(en->employee_id, "E2");
	assert_false(en->terminated);
	assert_int_equal(en->seq, 1);
	assert_true(id_attrs_equal(&en->attrs, &ev->attributes));

	export_diff_fini(&d);
	export_diff_fini(&d); /* twice is harmless */
	export_snapshot_destroy(snap);
}

static void test_update_unchanged_and_cleared(void **state)
{
	(void)state;
	export_snapshot_t *s0 = export_snapshot_create();
	export_diff_t d;
	diff(s0, FILE1, SHA_A, &d);
	export_snapshot_t *s1 = apply(s0, &d);
	export_diff_fini(&d);

	/* E2: title changed, department emptied, location added; E10 the same
	 * (columns may move around: same values, same person). */
	diff(s1,
	     "department,employee_id,last_name,first_name,title,location\n"
	     "Engineering,E10,Lovelace,Ada,,\n"
	     ",E2,Hopper,Grace,Rear Admiral,Arlington\n",
	     SHA_B, &d);
	assert_int_equal(d.nchanges, 1);
	assert_int_equal(d.updates, 1);
	assert_int_equal(d.unchanged, 1);
	assert_int_equal(d.hires + d.terminations + d.rehires, 0);
	assert_int_equal(d.known_active, 2);
	const employee_event_t *ev = &d.changes[0].event;
	assert_string_equal(ev->employee_id, "E2");
	assert_int_equal(ev->type, EV_UPDATE);
	assert_string_equal(ev->reason, "changed in the HR export");
	assert_string_equal(ev->source_event_id, "bbbbbbbbbbbbbbbb:E2:1");
	/* Only what changed: no first_name/last_name. */
	assert_int_equal(ev->attributes.len, 3);
	assert_attr(&ev->attributes, "title", "Rear Admiral");
	assert_attr(&ev->attributes, "location", "Arlington");
	assert_attr(&ev->attributes, "department", NULL); /* cleared */
	const export_entry_t *en = &d.changes[0].entry;
	assert_int_equal(en->seq, 2);
	assert_false(id_attrs_has(&en->attrs, "department"));
	assert_attr(&en->attrs, "first_name", "Grace");
	export_diff_fini(&d);

	/* A column removed from the export clears it for everyone who had it. */
	diff(s1,
	     "employee_id,first_name,last_name,title\n"
	     "E2,Grace,Hopper,Admiral\n"
	     "E10,Ada,Lovelace,\n",
	     SHA_B, &d);
	assert_int_equal(d.updates, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(d.changes[i].event.attributes.len, 1);
		assert_attr(&d.changes[i].event.attributes, "department", NULL);
	}
	export_diff_fini(&d);
	export_snapshot_destroy(s1);
	export_snapshot_destroy(s0);
}

static void test_terminate_once_then_rehire(void **state)
{
	(void)state;
	export_snapshot_t *s0 = export_snapshot_create();
	export_diff_t d;
	diff(s0, FILE1, SHA_A, &d);
	export_snapshot_t *s1 = apply(s0, &d);
	export_diff_fini(&d);

	/* E2 left. */
	const char *only_e10 = "employee_id,first_name,last_name,title,department\n"
	                       "E10,Ada,Lovelace,,Engineering\n";
	diff(s1, only_e10, SHA_B, &d);
	assert_int_equal(d.nchanges, 1);
	assert_int_equal(d.terminations, 1);
	assert_int_equal(d.unchanged, 1);
	const employee_event_t *ev = &d.changes[0].event;
	assert_string_equal(ev->employee_id, "E2");
	assert_int_equal(ev->type, EV_TERMINATE);
	assert_int_equal(ev->attributes.len, 0);
	assert_string_equal(ev->reason, "missing from the HR export");
	const export_entry_t *en = &d.changes[0].entry;
	assert_true(en->terminated);
	assert_attr(&en->attrs, "title", "Admiral"); /* kept for a rehire */
	export_snapshot_t *s2 = apply(s1, &d);
	export_diff_fini(&d);
	assert_int_equal(export_snapshot_active_count(s2), 1);

	/* Still missing: not terminated twice. */
	diff(s2, only_e10, SHA_B, &d);
	assert_int_equal(d.nchanges, 0);
	assert_int_equal(d.still_terminated, 1);
	assert_int_equal(d.unchanged, 1);
	assert_int_equal(d.known_active, 1);
	export_diff_fini(&d);

	/* Back, without a department and with a new title: a rehire with the
	 * whole record and the department cleared. */
	diff(s2,
	     "employee_id,first_name,last_name,title,department\n"
	     "E10,Ada,Lovelace,,Engineering\n"
	     "E2,Grace,Hopper,Commodore,\n",
	     SHA_A, &d);
	assert_int_equal(d.nchanges, 1);
	assert_int_equal(d.rehires, 1);
	ev = &d.changes[0].event;
	assert_int_equal(ev->type, EV_REHIRE);
	assert_string_equal(ev->reason, "back in the HR export after a termination");
	assert_int_equal(ev->attributes.len, 4);
	assert_attr(&ev->attributes, "first_name", "Grace");
	assert_attr(&ev->attributes, "last_name", "Hopper");
	assert_attr(&ev->attributes, "title", "Commodore");
	assert_attr(&ev->attributes, "department", NULL);
	assert_false(d.changes[0].entry.terminated);
	assert_int_equal(d.changes[0].entry.seq, 3);
	export_diff_fini(&d);

	export_snapshot_destroy(s2);
	export_snapshot_destroy(s1);
	export_snapshot_destroy(s0);
}

static void test_ids_are_stable_and_distinct(void **state)
{
	(void)state;
	const char *file_b = "employee_id,first_name,last_name\nE10,Ada,Lovelace\n";
	export_snapshot_t *snap[5];
	char ids[4][33];
	snap[0] = export_snapshot_create();
	/* A, B, A, B: hire, terminate, rehire, terminate E2. */
	const char *files[4] = {FILE1, file_b, FILE1, file_b};
	const char *shas[4] = {SHA_A, SHA_B, SHA_A, SHA_B};
	for (int i = 0; i < 4; i++) {
		export_diff_t d, again;
		diff(snap[i], files[i], shas[i], &d);
		/* The same inputs give the same events (a re-publish after a
		 * crash carries the same ids). */
		diff(snap[i], files[i], shas[i], &again);
		assert_int_equal(d.nchanges, again.nchanges);
		for (size_t c = 0; c < d.nchanges; c++) {
			assert_string_equal(d.changes[c].event.event_id,
			                    again.changes[c].event.event_id);
			assert_string_equal(d.changes[c].event.source_event_id,
			                    again.changes[c].event.source_event_id);
		}
		const employee_event_t *e2 = NULL;
		for (size_t c = 0; c < d.nchanges; c++)
			if (strcmp(d.changes[c].event.employee_id, "E2") == 0)
				e2 = &d.changes[c].event;
		assert_non_null(e2);
		assert_int_equal(strlen(e2->event_id), 32);
		strcpy(ids[i], e2->event_id);
		snap[i + 1] = apply(snap[i], &d);
		export_diff_fini(&d);
		export_diff_fini(&again);
	}
	/* The second B's termination is a new event, not a duplicate. */
	for (int i = 0; i < 4; i++)
		for (int j = i + 1; j < 4; j++)
			assert_string_not_equal(ids[i], ids[j]);
	char want[33];
	expected_event_id(SHA_B, "E2", "TERMINATE", "3", want);
	assert_string_equal(ids[3], want);
	for (int i = 0; i < 5; i++)
		export_snapshot_destroy(snap[i]);
}

static void test_snapshot_order_and_conflicts(void **state)
{
	(void)state;
	export_snapshot_t *s = export_snapshot_create();
	id_attrs_t a = ID_ATTRS_INIT;
	id_attrs_set(&a, "first_name", "X");
	assert_int_equal(export_snapshot_add(s, "E3", false, 1, &a), 0);
	assert_int_equal(export_snapshot_add(s, "E1", true, 2, &a), 0);
	assert_int_equal(export_snapshot_add(s, "E2", false, 1, NULL), 0);
	assert_int_equal(export_snapshot_add(s, "E1", false, 1, &a), ID_ECONFLICT);
	assert_int_equal(export_snapshot_add(s, "E3", false, 1, &a), ID_ECONFLICT);
	assert_int_equal(export_snapshot_active_count(s), 2);
	size_t n = 0;
	const export_entry_t *e = export_snapshot_entries(s, &n);
	assert_int_equal(n, 3);
	assert_string_equal(e[0].employee_id, "E1");
	assert_true(e[0].terminated);
	assert_int_equal(e[0].seq, 2);
	assert_string_equal(e[2].employee_id, "E3");
	assert_string_equal(
	    id_attrs_get(&export_snapshot_find(s, "E3")->attrs, "first_name"), "X");
	assert_null(export_snapshot_find(s, "E4"));
	id_attrs_fini(&a);
	export_snapshot_destroy(s);
	export_snapshot_destroy(NULL);
}

static void test_empty_export_terminates_all_active(void **state)
{
	(void)state;
	export_snapshot_t *s0 = export_snapshot_create();
	export_diff_t d;
	diff(s0, FILE1, SHA_A, &d);
	export_snapshot_t *s1 = apply(s0, &d);
	export_diff_fini(&d);
	diff(s1, "employee_id,first_name,last_name\n", SHA_B, &d);
	assert_int_equal(d.terminations, 2);
	assert_int_equal(d.known_active, 2);
	assert_string_equal(d.changes[0].event.employee_id, "E10");
	assert_string_equal(d.changes[1].event.employee_id, "E2");
	export_diff_fini(&d);
	export_snapshot_destroy(s1);
	export_snapshot_destroy(s0);
}

static void test_missing_params(void **state)
{
	(void)state;
	export_snapshot_t *s = export_snapshot_create();
	export_diff_t d = EXPORT_DIFF_INIT;
	export_diff_params_t p = {"csv", "abc", "csv:x", 0};
	id_err_t err = {0};
	assert_int_equal(export_diff_compute(s, NULL, 0, &p, &d, &err), ID_EINVALID);
	assert_null(d.changes);
	export_snapshot_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_export_hires_everyone),
	    cmocka_unit_test(test_update_unchanged_and_cleared),
	    cmocka_unit_test(test_terminate_once_then_rehire),
	    cmocka_unit_test(test_ids_are_stable_and_distinct),
	    cmocka_unit_test(test_snapshot_order_and_conflicts),
	    cmocka_unit_test(test_empty_export_terminates_all_active),
	    cmocka_unit_test(test_missing_params),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
