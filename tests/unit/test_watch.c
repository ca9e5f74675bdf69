/*
 * test_watch.c — the drop folder with a stand-in processor and a real
 * RocksDB store: complete files are processed once, oldest first, and moved
 * to done/; refused ones go to failed/ with their reason; partial uploads and
 * dot-files are left alone; a file that must be retried stays and holds back
 * the later ones; a file recorded as processed before a crash is moved
 * without being processed again; a file still growing is not taken.
 */
#define _XOPEN_SOURCE 700 /* nftw() */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ingest/watch.h"

typedef struct fixture {
	char dir[64];
	char drop[128];
	char statep[128];
	state_store_t *store;
	char order[512]; /* names processed, space-separated */
	int calls;
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
	id_err_t err = {0};
	strcpy(fx->dir, "/tmp/idstream-watch-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->drop, sizeof(fx->drop), "%s/drop", fx->dir);
	snprintf(fx->statep, sizeof(fx->statep), "%s/state", fx->dir);
	assert_int_equal(0, mkdir(fx->drop, 0700));
	if (state_store_open(fx->statep, NULL, &fx->store, &err) != 0)
		fail_msg("open: %s", err.msg);
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

/* Writes DIR/drop/name with content and modification time t (seconds). */
static void drop(fixture_t *fx, const char *name, const char *content, time_t t)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", fx->drop, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
	struct timespec ts[2] = {{t, 0}, {t, 0}};
	assert_int_equal(0, utimensat(AT_FDCWD, p, ts, 0));
}

static bool exists(fixture_t *fx, const char *rel)
{
	char p[256];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s", fx->drop, rel);
	return stat(p, &st) == 0;
}

static char *slurp(fixture_t *fx, const char *rel)
{
	static char buf[1024];
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", fx->drop, rel);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* The stand-in processor: the content says what happens. */
static int fake_process(void *opaque, const char *path, char *summary, size_t slen,
                        id_err_t *err)
{
	fixture_t *fx = opaque;
	const char *base = strrchr(path, '/') + 1;
	char content[64] = "";
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(content, 1, sizeof(content) - 1, f);
	content[n] = '\0';
	fclose(f);
	fx->calls++;
	strcat(fx->order, base);
	strcat(fx->order, " ");
	if (strncmp(content, "bad", 3) == 0)
		return id_err_set(err, ID_EPARSE, "%s line 2: missing last_name", path);
	if (strncmp(content, "kafka", 5) == 0)
		return id_err_set(err, ID_EKAFKA, "broker down");
	snprintf(summary, slen, "fine");
	return 0;
}

static int run_once(fixture_t *fx, watch_report_t *rep, id_err_t *err)
{
	watch_opts_t o = {
	    .dir = fx->drop,
	    .settle_ms = 50,
	    .interval_ms = 20,
	    .once = true,
	    .store = fx->store,
	    .process = fake_process,
	    .opaque = fx,
	};
	return watch_run(&o, rep, err);
}

static void test_order_done_failed_ignored(void **state)
{
	fixture_t *fx = *state;
	watch_report_t rep;
	id_err_t err = {0};
	drop(fx, "z-first.csv", "ok 1", 1000);
	drop(fx, "a-second.csv", "ok 2", 2000);
	drop(fx, "m-broken.csv", "bad", 3000);
	drop(fx, "upload.csv.part", "ok", 500);
	drop(fx, "upload.csv.tmp", "ok", 500);
	drop(fx, ".hidden.csv", "ok", 500);

	assert_int_equal(0, run_once(fx, &rep, &err));
	assert_string_equal("z-first.csv a-second.csv m-broken.csv ", fx->order);
	assert_int_equal(2, rep.processed);
	assert_int_equal(1, rep.failed);
	assert_true(exists(fx, "done/z-first.csv"));
	assert_true(exists(fx, "done/a-second.csv"));
	assert_true(exists(fx, "failed/m-broken.csv"));
	assert_false(exists(fx, "m-broken.csv"));
	assert_non_null(strstr(slurp(fx, "failed/m-broken.csv.error"), "EPARSE: "));
	assert_non_null(
	    strstr(slurp(fx, "failed/m-broken.csv.error"), "missing last_name"));
	assert_true(exists(fx, "upload.csv.part"));
	assert_true(exists(fx, "upload.csv.tmp"));
	assert_true(exists(fx, ".hidden.csv"));

	/* Nothing new: nothing processed.  The same name again is kept apart. */
	fx->order[0] = '\0';
	assert_int_equal(0, run_once(fx, &rep, &err));
	assert_string_equal("", fx->order);
	drop(fx, "z-first.csv", "ok 3", 4000);
	assert_int_equal(0, run_once(fx, &rep, &err));
	assert_string_equal("z-first.csv ", fx->order);
	assert_true(exists(fx, "done/z-first.csv.1"));
	assert_string_equal("ok 1", slurp(fx, "done/z-first.csv"));
}

static void test_retry_holds_back_later_files(void **state)
{
	fixture_t *fx = *state;
	watch_report_t rep;
	id_err_t err = {0};
	drop(fx, "1.csv", "kafka", 1000);
	drop(fx, "2.csv", "ok", 2000);
	assert_int_equal(ID_EKAFKA, run_once(fx, &rep, &err));
	assert_non_null(strstr(err.msg, "broker down"));
	assert_non_null(strstr(err.msg, "1.csv stays"));
	assert_string_equal("1.csv ", fx->order);
	assert_true(exists(fx, "1.csv"));
	assert_true(exists(fx, "2.csv"));
	assert_false(exists(fx, "failed/1.csv"));
	assert_int_equal(2, rep.waiting);

	/* Kafka is back. */
	drop(fx, "1.csv", "ok again", 1000);
	fx->order[0] = '\0';
	assert_int_equal(0, run_once(fx, &rep, &err));
	assert_string_equal("1.csv 2.csv ", fx->order);
}

static void test_recorded_before_crash_is_not_processed_again(void **state)
{
	fixture_t *fx = *state;
	watch_report_t rep;
	id_err_t err = {0};
	drop(fx, "x.csv", "ok x", 1000);
	assert_int_equal(0, run_once(fx, &rep, &err));
	assert_int_equal(1, fx->calls);
	/* As if the process had died between recording and moving: the same
	 * content under the same name, with its "processed" mark still there. */
	char p[256], q[256];
	snprintf(p, sizeof(p), "%s/done/x.csv", fx->drop);
	snprintf(q, sizeof(q), "%s/x.csv", fx->drop);
	assert_int_equal(0, rename(p, q));
	/* The mark is removed after the move; put back what a crash between
	 * recording and moving leaves: "m/<name>" → SHA-256 of the content. */
	FILE *f = popen("printf 'ok x' | sha256sum | cut -c1-64", "r");
	char sum[80] = "";
	assert_non_null(f);
	assert_non_null(fgets(sum, sizeof(sum), f));
	pclose(f);
	sum[64] = '\0';
	assert_int_equal(0, state_store_put(fx->store, "m/x.csv", 7, sum, 64, &err));
	assert_int_equal(0, run_once(fx, &rep, &err));
	assert_int_equal(1, fx->calls);
	assert_int_equal(1, rep.recovered);
	assert_true(exists(fx, "done/x.csv"));
	assert_false(exists(fx, "x.csv"));

	/* Different content under that name is a new export: processed. */
	drop(fx, "x.csv", "ok changed", 5000);
	assert_int_equal(0, state_store_put(fx->store, "m/x.csv", 7, sum, 64, &err));
	assert_int_equal(0, run_once(fx, &rep, &err));
	assert_int_equal(2, fx->calls);
}

static void test_growing_file_waits(void **state)
{
	fixture_t *fx = *state;
	watch_report_t rep;
	id_err_t err = {0};
	char p[256];
	snprintf(p, sizeof(p), "%s/grow.csv", fx->drop);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	/* Keep writing for longer than the settle time: --once gives up and
	 * reports it waiting, without processing a half file. */
	watch_opts_t o = {
	    .dir = fx->drop,
	    .settle_ms = 200,
	    .interval_ms = 20,
	    .once = true,
	    .store = fx->store,
	    .process = fake_process,
	    .opaque = fx,
	};
	pid_t pid = fork();
	if (pid == 0) {
		for (int i = 0; i < 60; i++) {
			fprintf(f, "ok line %d\n", i);
			fflush(f);
			usleep(50 * 1000);
		}
		_exit(0);
	}
	fclose(f);
	assert_int_equal(0, watch_run(&o, &rep, &err));
	assert_int_equal(0, fx->calls);
	assert_int_equal(1, rep.waiting);
	int st;
	waitpid(pid, &st, 0);
	/* Complete now: taken. */
	assert_int_equal(0, watch_run(&o, &rep, &err));
	assert_int_equal(1, fx->calls);
	assert_true(exists(fx, "done/grow.csv"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_order_done_failed_ignored, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_retry_holds_back_later_files, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        test_recorded_before_crash_is_not_processed_again, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_growing_file_waits, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
