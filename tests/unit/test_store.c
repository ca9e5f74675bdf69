/*
 * test_store.c — the state store: what was put is what is read, batches apply
 * all-or-nothing, prefix iteration stays inside its prefix, and data survives
 * a close and reopen.  Readers open a store another handle holds for
 * writing: read-only sees the store as of its open, a secondary instance
 * catches up with later writes (logged, or unlogged once flushed), neither
 * writes or leaves files.  Each test works in its own temporary directory.
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
#include <sys/stat.h>
#include <unistd.h>

#include "state/store.h"

typedef struct fixture {
	char dir[64];
	char path[128];
	state_store_t *s;
} fixture_t;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	fixture_t *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	strcpy(fx->dir, "/tmp/idstream-store-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	/* A nested path: open must create the missing parents. */
	snprintf(fx->path, sizeof(fx->path), "%s/state/ingest-csv", fx->dir);
	id_err_t err = {0};
	assert_int_equal(state_store_open(fx->path, NULL, &fx->s, &err), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture_t *fx = *state;
	state_store_close(fx->s);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static void assert_value(state_store_t *s, const char *key, const char *want)
{
	void *v = NULL;
	size_t n = 0;
	id_err_t err = {0};
	int rc = state_store_get(s, key, strlen(key), &v, &n, &err);
	if (want == NULL) {
		assert_int_equal(rc, ID_ENOTFOUND);
		assert_null(v);
		return;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(v, want, n);
	free(v);
}

static void test_put_get_delete(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	assert_value(fx->s, "e/E1001", NULL);
	assert_int_equal(state_store_put(fx->s, "e/E1001", 7, "Ada", 3, &err), 0);
	assert_value(fx->s, "e/E1001", "Ada");
	assert_int_equal(state_store_put(fx->s, "e/E1001", 7, "Grace", 5, &err), 0);
	assert_value(fx->s, "e/E1001", "Grace");
	assert_int_equal(state_store_delete(fx->s, "e/E1001", 7, &err), 0);
	assert_value(fx->s, "e/E1001", NULL);
	/* Deleting what is not there is not an error. */
	assert_int_equal(state_store_delete(fx->s, "e/E1001", 7, &err), 0);
}

static void test_binary_keys_and_empty_value(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	unsigned char key[9] = {'o'};
	state_be64_put(key + 1, 0x0102030405060708ULL);
	assert_int_equal(state_be64_get(key + 1), 0x0102030405060708ULL);
	assert_int_equal(state_store_put(fx->s, key, sizeof(key), "", 0, &err), 0);
	void *v = NULL;
	size_t n = 99;
	assert_int_equal(state_store_get(fx->s, key, sizeof(key), &v, &n, &err), 0);
	assert_non_null(v);
	assert_int_equal(n, 0);
	free(v);
	/* A key that differs in the last byte is another key. */
	key[8] ^= 1;
	assert_int_equal(state_store_get(fx->s, key, sizeof(key), &v, &n, &err),
	                 ID_ENOTFOUND);
}

static void test_batch_is_all_or_nothing(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	assert_int_equal(state_store_put(fx->s, "e/old", 5, "x", 1, &err), 0);

	state_batch_t *b = state_batch_create();
	assert_non_null(b);
	state_batch_put(b, "e/a", 3, "1", 1);
	state_batch_put(b, "e/b", 3, "2", 1);
	state_batch_delete(b, "e/old", 5);
	state_batch_put(b, "e/a", 3, "3", 1); /* later operation wins */
	assert_int_equal(state_batch_count(b), 4);
	/* Nothing is visible before the write... */
	assert_value(fx->s, "e/a", NULL);
	assert_value(fx->s, "e/b", NULL);
	assert_value(fx->s, "e/old", "x");
	assert_int_equal(state_batch_write(fx->s, b, true, &err), 0);
	/* ...and everything after it. */
	assert_value(fx->s, "e/a", "3");
	assert_value(fx->s, "e/b", "2");
	assert_value(fx->s, "e/old", NULL);

	/* A discarded batch changes nothing. */
	state_batch_clear(b);
	assert_int_equal(state_batch_count(b), 0);
	state_batch_put(b, "e/c", 3, "4", 1);
	state_batch_destroy(b);
	assert_value(fx->s, "e/c", NULL);
	state_batch_destroy(NULL);
}

/* Collects the keys the iterator yields as "k=v;" pairs. */
static void iterate(state_store_t *s, const void *prefix, size_t plen, char *out,
                    size_t outlen)
{
	state_iter_t *it = NULL;
	id_err_t err = {0};
	assert_int_equal(state_iter_create(s, prefix, plen, &it, &err), 0);
	out[0] = '\0';
	const void *k, *v;
	size_t kl, vl;
	int rc;
	while ((rc = state_iter_next(it, &k, &kl, &v, &vl, &err)) == 1) {
		size_t used = strlen(out);
		snprintf(out + used, outlen - used, "%.*s=%.*s;", (int)kl,
		         (const char *)k, (int)vl, (const char *)v);
	}
	assert_int_equal(rc, 0);
	/* Past the end it stays at the end. */
	assert_int_equal(state_iter_next(it, &k, &kl, &v, &vl, &err), 0);
	state_iter_destroy(it);
}

static void test_iterator_prefix_bounds(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	const char *keys[] = {"d",    "e",  "e/",   "e/E2",  "e/E10",
	                      "e/E1", "e0", "f/E1", "e/\xff"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		assert_int_equal(
		    state_store_put(fx->s, keys[i], strlen(keys[i]), "v", 1, &err), 0);
	char got[512];
	iterate(fx->s, "e/", 2, got, sizeof(got));
	/* Bytewise order, exactly the keys starting with "e/". */
	assert_string_equal(got, "e/=v;e/E1=v;e/E10=v;e/E2=v;e/\xff=v;");
	iterate(fx->s, "e/E1", 4, got, sizeof(got));
	assert_string_equal(got, "e/E1=v;e/E10=v;");
	iterate(fx->s, "x", 1, got, sizeof(got));
	assert_string_equal(got, "");
	iterate(fx->s, "", 0, got, sizeof(got));
	assert_string_equal(got,
	                    "d=v;e=v;e/=v;e/E1=v;e/E10=v;e/E2=v;e/\xff=v;e0=v;f/E1=v;");
}

static void test_iterator_prefix_of_ff_bytes(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	/* A prefix ending in 0xff has no simple successor; the bound must still
	 * hold. */
	const char *keys[] = {"a\xff", "a\xff\x01", "b", "\xff\xff", "\xff\xff\x00z"};
	size_t lens[] = {2, 3, 1, 2, 4};
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(state_store_put(fx->s, keys[i], lens[i], "v", 1, &err),
		                 0);
	char got[256];
	iterate(fx->s, "a\xff", 2, got, sizeof(got));
	assert_string_equal(got, "a\xff=v;a\xff\x01=v;");
	state_iter_t *it = NULL;
	assert_int_equal(state_iter_create(fx->s, "\xff\xff", 2, &it, &err), 0);
	const void *k, *v;
	size_t kl, vl, n = 0;
	while (state_iter_next(it, &k, &kl, &v, &vl, &err) == 1) {
		assert_true(kl >= 2 && memcmp(k, "\xff\xff", 2) == 0);
		n++;
	}
	assert_int_equal(n, 2);
	state_iter_destroy(it);
}

static void test_iterator_sees_a_snapshot(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	assert_int_equal(state_store_put(fx->s, "e/1", 3, "a", 1, &err), 0);
	state_iter_t *it = NULL;
	assert_int_equal(state_iter_create(fx->s, "e/", 2, &it, &err), 0);
	/* Written after the iterator was created: not seen by it. */
	assert_int_equal(state_store_put(fx->s, "e/2", 3, "b", 1, &err), 0);
	const void *k, *v;
	size_t kl, vl;
	assert_int_equal(state_iter_next(it, &k, &kl, &v, &vl, &err), 1);
	assert_memory_equal(k, "e/1", 3);
	assert_int_equal(state_iter_next(it, &k, &kl, &v, &vl, &err), 0);
	state_iter_destroy(it);
}

static void test_reopen_keeps_data(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	state_batch_t *b = state_batch_create();
	state_batch_put(b, "e/E1", 4, "synced", 6);
	assert_int_equal(state_batch_write(fx->s, b, true, &err), 0);
	state_batch_destroy(b);
	assert_int_equal(state_store_put(fx->s, "e/E2", 4, "plain", 5, &err), 0);
	state_store_close(fx->s);
	fx->s = NULL;

	state_cache_t *cache = state_cache_create(1 << 20);
	assert_non_null(cache);
	state_store_opts_t opts = {.cache = cache, .write_buffer_bytes = 4 << 20};
	assert_int_equal(state_store_open(fx->path, &opts, &fx->s, &err), 0);
	/* The store keeps its own reference to the shared cache. */
	state_cache_destroy(cache);
	assert_value(fx->s, "e/E1", "synced");
	assert_value(fx->s, "e/E2", "plain");
	assert_string_equal(state_store_path(fx->s), fx->path);
}

static void test_second_open_fails_with_path(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	state_store_t *other = NULL;
	int rc = state_store_open(fx->path, NULL, &other, &err);
	assert_int_equal(rc, ID_ESTATE);
	assert_null(other);
	assert_int_equal(err.code, ID_ESTATE);
	char want[200];
	snprintf(want, sizeof(want), "state store %s: open: ", fx->path);
	assert_memory_equal(err.msg, want, strlen(want));
	assert_non_null(strstr(err.msg, "lock"));
}

static void test_open_under_a_file_fails(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	char file[160], path[200];
	snprintf(file, sizeof(file), "%s/plainfile", fx->dir);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/sub/db", file);
	state_store_t *s = NULL;
	int rc = state_store_open(path, NULL, &s, &err);
	assert_int_equal(rc, ID_EIO);
	assert_null(s);
	assert_non_null(strstr(err.msg, path));
	state_store_close(NULL);
}

static void put(state_store_t *s, const char *key, const char *val)
{
	id_err_t err = {0};
	assert_int_equal(state_store_put(s, key, strlen(key), val, strlen(val), &err), 0);
}

/* Entries of dir (a readers' scratch folder must be gone after close). */
static int count_entries(const char *dir, const char *prefix)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "ls -A %s | grep -c '^%s' || true", dir, prefix);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	int n = -1;
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static void test_reader_of_missing_store(void **state)
{
	fixture_t *fx = *state;
	char path[200];
	id_err_t err = {0};
	state_store_t *r = NULL;
	snprintf(path, sizeof(path), "%s/nothing-here", fx->dir);
	assert_false(state_store_exists(path));
	assert_true(state_store_exists(fx->path));
	assert_int_equal(
	    state_store_open_reader(path, NULL, STATE_STORE_READ_ONLY, &r, &err),
	    ID_ENOTFOUND);
	assert_int_equal(
	    state_store_open_reader(path, NULL, STATE_STORE_SECONDARY, &r, &err),
	    ID_ENOTFOUND);
	assert_null(r);
	assert_int_equal(err.code, 0);
	/* Nothing was created. */
	assert_int_not_equal(access(path, F_OK), 0);
}

static void test_read_only_while_held(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	state_store_t *r = NULL;
	put(fx->s, "logged", "1"); /* in the write-ahead log only */
	assert_int_equal(
	    state_store_open_reader(fx->path, NULL, STATE_STORE_READ_ONLY, &r, &err), 0);
	assert_value(r, "logged", "1");
	/* A snapshot: later writes stay invisible, catch-up is a no-op. */
	put(fx->s, "later", "2");
	assert_int_equal(state_store_catch_up(r, &err), 0);
	assert_value(r, "later", NULL);
	/* Writes through a reader fail and name the store. */
	int rc = state_store_put(r, "x", 1, "y", 1, &err);
	assert_int_equal(rc, ID_ESTATE);
	assert_non_null(strstr(err.msg, fx->path));
	state_store_close(r);
	assert_value(fx->s, "later", "2");
}

static void test_secondary_catches_up(void **state)
{
	fixture_t *fx = *state;
	id_err_t err = {0};
	state_store_t *r = NULL;
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s/tmp", fx->dir);
	assert_int_equal(mkdir(tmp, 0700), 0);
	setenv("TMPDIR", tmp, 1);
	put(fx->s, "a", "1");
	assert_int_equal(
	    state_store_open_reader(fx->path, NULL, STATE_STORE_SECONDARY, &r, &err), 0);
	assert_int_equal(count_entries(tmp, "idstream-secondary-"), 1);
	assert_value(r, "a", "1");
	/* A logged write: visible after a catch-up. */
	put(fx->s, "b", "2");
	assert_int_equal(state_store_catch_up(r, &err), 0);
	assert_value(r, "b", "2");
	/* An unlogged batch: visible once flushed. */
	state_batch_t *b = state_batch_create();
	assert_non_null(b);
	state_batch_put(b, "c", 1, "3", 1);
	assert_int_equal(state_batch_write_unlogged(fx->s, b, &err), 0);
	state_batch_destroy(b);
	assert_int_equal(state_store_flush(fx->s, true, &err), 0);
	assert_int_equal(state_store_catch_up(r, &err), 0);
	assert_value(r, "c", "3");
	assert_value(r, "a", "1");
	/* The writer's compactions do not take files away from the reader. */
	for (int i = 0; i < 4; i++) {
		char k[16];
		snprintf(k, sizeof(k), "k%d", i);
		put(fx->s, k, "v");
		assert_int_equal(state_store_flush(fx->s, true, &err), 0);
	}
	assert_int_equal(state_store_catch_up(r, &err), 0);
	assert_value(r, "k3", "v");
	assert_value(r, "b", "2");
	state_store_close(r);
	/* The scratch folder is gone. */
	assert_int_equal(count_entries(tmp, "idstream-secondary-"), 0);
	unsetenv("TMPDIR");
}

static void test_be32_order(void **state)
{
	(void)state;
	unsigned char a[4], b[4];
	state_be32_put(a, 255);
	state_be32_put(b, 256);
	assert_true(memcmp(a, b, 4) < 0);
	assert_int_equal(state_be32_get(b), 256);
	state_be32_put(a, 0xdeadbeef);
	assert_int_equal(state_be32_get(a), 0xdeadbeef);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_put_get_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_binary_keys_and_empty_value, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_batch_is_all_or_nothing, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_iterator_prefix_bounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_iterator_prefix_of_ff_bytes, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_iterator_sees_a_snapshot, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_open_fails_with_path, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_open_under_a_file_fails, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_reader_of_missing_store, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_read_only_while_held, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_secondary_catches_up, setup, teardown),
	    cmocka_unit_test(test_be32_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
