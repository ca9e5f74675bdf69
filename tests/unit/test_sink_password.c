/*
 * test_sink_password.c — initial passwords: what a policy accepts, that
 * generated passwords meet it (length, classes, no names inside), and the
 * delivery file's rules (0600, appended lines, refusals).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sinks/sink_password.h"

static void test_meets(void **state)
{
	(void)state;
	sink_password_policy_t p = {20, 3, true};
	assert_true(sink_password_meets(&p, "Abcdefgh12", NULL, NULL));
	assert_false(sink_password_meets(&p, "abcdefgh12", NULL, NULL)); /* 2 classes */
	assert_true(sink_password_meets(&p, "abcdefgh1.", NULL, NULL));
	/* The login (longer than 2) and display-name parts of 3+ characters. */
	assert_false(sink_password_meets(&p, "xxGHopper9x", "ghopper", NULL));
	assert_true(sink_password_meets(&p, "xxAb9.x", "ab", NULL));
	assert_false(sink_password_meets(&p, "Q1-hopPERz", NULL, "Grace Hopper"));
	assert_true(
	    sink_password_meets(&p, "Q1-GrHopz", NULL, "Gr Ho-e")); /* parts < 3 */
	p.avoid_names = false;
	assert_true(sink_password_meets(&p, "xxGHopper9x", "ghopper", NULL));
	p.min_classes = 4;
	assert_false(sink_password_meets(&p, "Abcdefgh12", NULL, NULL));
	assert_true(sink_password_meets(&p, "Abcdefgh1.", NULL, NULL));
}

static void test_generate(void **state)
{
	(void)state;
	sink_password_policy_t p = {24, 4, true};
	char a[SINK_PASSWORD_MAX_LEN + 1], b[SINK_PASSWORD_MAX_LEN + 1];
	for (int i = 0; i < 200; i++) {
		assert_int_equal(
		    sink_password_generate(&p, "ghopper", "Grace Hopper", a, NULL), 0);
		assert_int_equal(strlen(a), 24);
		assert_true(sink_password_meets(&p, a, "ghopper", "Grace Hopper"));
		for (const char *c = a; *c; c++)
			assert_non_null(
			    strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			           "0123456789-.",
			           *c));
	}
	assert_int_equal(sink_password_generate(&p, NULL, NULL, b, NULL), 0);
	assert_string_not_equal(a, b);
	/* Impossible policies are refused, not looped on. */
	id_err_t err = {0};
	sink_password_policy_t bad = {4, 3, false};
	assert_int_equal(sink_password_generate(&bad, NULL, NULL, a, &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "length 4"));
	bad.length = 16;
	bad.min_classes = 5;
	assert_int_equal(sink_password_generate(&bad, NULL, NULL, a, &err), ID_EINVALID);
}

static void test_deliver(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_sink_password.XXXXXX", file[256];
	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/passwords", dir);
	id_err_t err = {0};
	assert_int_equal(sink_password_deliver(file, "E1", "ghopper", "Pw-1", &err), 0);
	assert_int_equal(sink_password_deliver(file, "E2", "aturing", "Pw-2", &err), 0);
	struct stat st;
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	FILE *f = fopen(file, "r");
	char buf[256] = {0};
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	assert_string_equal(buf, "E1\tghopper\tPw-1\nE2\taturing\tPw-2\n");

	/* A file others could read is refused, and not written. */
	assert_int_equal(chmod(file, 0644), 0);
	assert_int_equal(sink_password_deliver(file, "E3", "x", "Pw-3", &err),
	                 ID_ECONFIG);
	assert_non_null(strstr(err.msg, "0600"));
	assert_null(strstr(err.msg, "Pw-3"));
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_size, (off_t)n);
	/* No file configured; control characters in the line's fields. */
	assert_int_equal(sink_password_deliver(NULL, "E4", "x", "Pw", &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "no password delivery file"));
	assert_int_equal(chmod(file, 0600), 0);
	assert_int_equal(sink_password_deliver(file, "E5\nX", "x", "Pw", &err),
	                 ID_EINVALID);
	assert_int_equal(unlink(file), 0);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_meets),
	    cmocka_unit_test(test_generate),
	    cmocka_unit_test(test_deliver),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
