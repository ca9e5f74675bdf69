/*
 * test_dedupe.c — the webhook server's durable state in a real RocksDB
 * store: delivery ids are refused while remembered (and while in flight),
 * accepted again after a failed publish or after their TTL, swept when
 * expired, and survive a reopen; outbox entries come back byte-exact and in
 * order, and parked ones leave the queue.
 */
#define _XOPEN_SOURCE 700 /* nftw() */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/dedupe.h"
#include "ingest/outbox.h"

#define T0  1700000000000LL
#define TTL 60000LL

typedef struct fixture {
	char dir[64];
	char path[128];
	state_store_t *store;
} fixture_t;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static void reopen(fixture_t *fx)
{
	id_err_t err = {0};
	state_store_close(fx->store);
	fx->store = NULL;
	if (state_store_open(fx->path, NULL, &fx->store, &err) != 0)
		fail_msg("open: %s", err.msg);
}

static int setup(void **state)
{
	fixture_t *fx = calloc(1, sizeof(*fx));
	strcpy(fx->dir, "/tmp/idstream-dedupe-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/ingest-http", fx->dir);
	reopen(fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture_t *fx = *state;
	state_store_close(fx->store);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static int claim(dedupe_t *d, const char *src, const char *id, int64_t now,
                 bool *in_flight)
{
	id_err_t err = {0};
	int rc = dedupe_claim(d, src, id, now, in_flight, &err);
	if (rc == ID_ECONFLICT)
		assert_true(strstr(err.msg, id) != NULL);
	return rc;
}

static void test_claim_commit_release(void **state)
{
	fixture_t *fx = *state;
	dedupe_t *d = dedupe_create(fx->store, TTL, false);
	bool in_flight;
	id_err_t err = {0};

	assert_int_equal(claim(d, "generic", "d-1", T0, &in_flight), 0);
	/* a concurrent copy of the same delivery */
	assert_int_equal(claim(d, "generic", "d-1", T0, &in_flight), ID_ECONFLICT);
	assert_true(in_flight);
	/* the same id of another source is another delivery */
	assert_int_equal(claim(d, "gusto", "d-1", T0, &in_flight), 0);
	dedupe_release(d, "gusto", "d-1");
	assert_int_equal(dedupe_in_flight(d), 1);

	/* a failed publish: released, the retry is accepted */
	dedupe_release(d, "generic", "d-1");
	assert_int_equal(dedupe_in_flight(d), 0);
	assert_int_equal(claim(d, "generic", "d-1", T0 + 1, &in_flight), 0);
	assert_int_equal(dedupe_commit(d, "generic", "d-1", T0 + 1, &err), 0);
	assert_int_equal(dedupe_in_flight(d), 0);

	/* published: refused until the TTL ran out */
	assert_int_equal(claim(d, "generic", "d-1", T0 + 2, &in_flight), ID_ECONFLICT);
	assert_false(in_flight);
	assert_int_equal(claim(d, "generic", "d-1", T0 + TTL, &in_flight), ID_ECONFLICT);
	assert_int_equal(claim(d, "generic", "d-1", T0 + 1 + TTL + 1, &in_flight), 0);
	dedupe_release(d, "generic", "d-1");
	dedupe_destroy(d);

	/* remembered across a restart */
	reopen(fx);
	d = dedupe_create(fx->store, TTL, true);
	assert_int_equal(claim(d, "generic", "d-1", T0 + 5, &in_flight), ID_ECONFLICT);
	dedupe_destroy(d);
}

static void test_many_claims_stay_consistent(void **state)
{
	fixture_t *fx = *state;
	dedupe_t *d = dedupe_create(fx->store, TTL, false);
	bool in_flight;
	char id[32];
	/* enough releases to make the in-flight table compact itself */
	for (int i = 0; i < 5000; i++) {
		snprintf(id, sizeof(id), "x-%d", i);
		assert_int_equal(claim(d, "hibob", id, T0, &in_flight), 0);
		if (i % 1000 == 0)
			continue; /* keep a few in flight */
		dedupe_release(d, "hibob", id);
	}
	assert_int_equal(dedupe_in_flight(d), 5);
	assert_int_equal(claim(d, "hibob", "x-3000", T0, &in_flight), ID_ECONFLICT);
	assert_true(in_flight);
	assert_int_equal(claim(d, "hibob", "x-3001", T0, &in_flight), 0);
	dedupe_destroy(d);
}

static void test_sweep_removes_only_expired(void **state)
{
	fixture_t *fx = *state;
	dedupe_t *d = dedupe_create(fx->store, TTL, false);
	id_err_t err = {0};
	bool in_flight;
	size_t removed = 99;
	const char *ids[] = {"old-1", "old-2", "new-1"};
	int64_t at[] = {T0, T0 + 10, T0 + 2 * TTL};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(claim(d, "generic", ids[i], at[i], &in_flight), 0);
		assert_int_equal(dedupe_commit(d, "generic", ids[i], at[i], &err), 0);
	}
	assert_int_equal(dedupe_sweep(d, T0 + 5, 100, &removed, &err), 0);
	assert_int_equal(removed, 0);
	assert_int_equal(dedupe_sweep(d, T0 + TTL + 20, 100, &removed, &err), 0);
	assert_int_equal(removed, 2);
	/* the swept records are gone from the store, the young one stays */
	void *v = NULL;
	size_t vl = 0;
	const char key_old[] = "d/generic\0old-1";
	assert_int_equal(
	    state_store_get(fx->store, key_old, sizeof(key_old) - 1, &v, &vl, NULL),
	    ID_ENOTFOUND);
	assert_int_equal(claim(d, "generic", "new-1", T0 + 2 * TTL + 1, &in_flight),
	                 ID_ECONFLICT);
	dedupe_destroy(d);
}

static void test_outbox_order_and_park(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	outbox_t *o = outbox_open(fx->store, &err);
	assert_non_null(o);
	dedupe_t *d = dedupe_create(fx->store, TTL, false);
	bool in_flight;
	uint64_t seq[3];
	const char *bodies[] = {"{\"a\":1}", "{\"b\":2}", "{\"c\":\"\\u00e9\"}"};
	for (int i = 0; i < 3; i++) {
		state_batch_t *b = state_batch_create();
		char id[16];
		snprintf(id, sizeof(id), "q-%d", i);
		assert_int_equal(claim(d, "hibob", id, T0, &in_flight), 0);
		assert_int_equal(outbox_add(o, b, WEBHOOK_HIBOB, T0 + i,
		                            i == 1 ? "hdr" : NULL, bodies[i],
		                            strlen(bodies[i]), &seq[i], &err),
		                 0);
		assert_int_equal(dedupe_record(d, b, "hibob", id, T0, &err), 0);
		assert_int_equal(state_batch_write(fx->store, b, true, &err), 0);
		state_batch_destroy(b);
		dedupe_release(d, "hibob", id);
		outbox_added(o);
	}
	assert_int_equal(outbox_depth(o), 3);
	/* the delivery id was recorded in the same batch */
	assert_int_equal(claim(d, "hibob", "q-1", T0 + 1, &in_flight), ID_ECONFLICT);
	assert_false(in_flight);

	/* after a restart: the same entries, in order, byte-exact */
	outbox_close(o);
	reopen(fx);
	dedupe_destroy(d);
	o = outbox_open(fx->store, &err);
	assert_int_equal(outbox_depth(o), 3);
	outbox_entry_t e;
	memset(&e, 0, sizeof(e));
	assert_int_equal(outbox_next(o, 0, &e, &err), 1);
	assert_int_equal(e.seq, seq[0]);
	assert_int_equal(e.src, WEBHOOK_HIBOB);
	assert_int_equal(e.received_ms, T0);
	assert_null(e.delivery_hdr);
	assert_memory_equal(e.body, bodies[0], strlen(bodies[0]));
	assert_int_equal(e.len, strlen(bodies[0]));
	assert_int_equal(outbox_next(o, e.seq, &e, &err), 1);
	assert_int_equal(e.seq, seq[1]);
	assert_string_equal(e.delivery_hdr, "hdr");

	/* park the second, publish (remove) the first */
	assert_int_equal(outbox_park(o, &e, &err), 0);
	assert_int_equal(outbox_remove(o, seq[0], &err), 0);
	assert_int_equal(outbox_depth(o), 1);
	assert_int_equal(outbox_next(o, 0, &e, &err), 1);
	assert_int_equal(e.seq, seq[2]);
	assert_string_equal((const char *)e.body, bodies[2]);
	assert_int_equal(outbox_next(o, e.seq, &e, &err), 0);
	outbox_entry_fini(&e);

	/* new entries never reuse a parked entry's number */
	state_batch_t *b = state_batch_create();
	uint64_t next = 0;
	assert_int_equal(outbox_add(o, b, WEBHOOK_GUSTO, T0, NULL, "{}", 2, &next, &err),
	                 0);
	assert_true(next > seq[2]);
	state_batch_destroy(b);
	outbox_close(o);
	reopen(fx);
	o = outbox_open(fx->store, &err);
	assert_int_equal(outbox_depth(o), 1);
	outbox_close(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_claim_commit_release, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_claims_stay_consistent, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_removes_only_expired, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_outbox_order_and_park, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
