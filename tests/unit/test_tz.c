/*
 * test_tz.c — common/tz.c: offsets and local times from the system's zone
 * files, including instants after the file's last transition, which follow
 * the file's footer (a POSIX TZ rule), and "slim" files that have only the
 * footer.
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

#include "common/tz.h"

/* ms since the epoch of a UTC date and time (days_from_civil, as in tz.c). */
static int64_t utc_ms(int y, int m, int d, int hh, int mm)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
	return (days * 86400 + hh * 3600 + mm * 60) * 1000;
}

static int32_t offset_at(const char *zone, int64_t ms)
{
	int32_t off = -1;
	id_err_t err = {0};
	if (tz_offset_at(zone, ms, &off, &err) != 0)
		fail_msg("tz_offset_at %s: %s", zone, err.msg);
	return off;
}

/* Within the file's transitions (Debian's files run until 2037). */
static void test_transitions(void **state)
{
	(void)state;
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2026, 1, 15, 12, 0)), 3600);
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2026, 7, 15, 12, 0)), 7200);
	int64_t ms = 0;
	assert_int_equal(tz_local_to_utc("Europe/Oslo", 2027, 1, 4, 0, 0, &ms, NULL), 0);
	assert_true(ms == utc_ms(2027, 1, 3, 23, 0));
}

/* After the last transition the footer decides: 2045 in Oslo has summer
 * time from the last Sunday of March (26th) 01:00 UTC to the last Sunday
 * of October (29th) 01:00 UTC. */
static void test_footer_after_2037(void **state)
{
	(void)state;
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2045, 1, 15, 12, 0)), 3600);
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2045, 7, 1, 12, 0)), 7200);
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2045, 3, 26, 0, 59)), 3600);
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2045, 3, 26, 1, 0)), 7200);
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2045, 10, 29, 0, 59)), 7200);
	assert_int_equal(offset_at("Europe/Oslo", utc_ms(2045, 10, 29, 1, 0)), 3600);
	/* Southern hemisphere: summer time spans the new year. */
	assert_int_equal(offset_at("Australia/Sydney", utc_ms(2045, 1, 15, 0, 0)), 39600);
	assert_int_equal(offset_at("Australia/Sydney", utc_ms(2045, 7, 15, 0, 0)), 36000);
	/* Local midnight of a summer start date, and a local time skipped by
	 * the change (02:30 on 2045-03-26 does not exist: the gap's end). */
	int64_t ms = 0;
	assert_int_equal(tz_local_to_utc("Europe/Oslo", 2045, 8, 1, 0, 0, &ms, NULL), 0);
	assert_true(ms == utc_ms(2045, 7, 31, 22, 0));
	assert_int_equal(tz_local_to_utc("Europe/Oslo", 2045, 3, 26, 2, 30, &ms, NULL),
	                 0);
	assert_true(ms == utc_ms(2045, 3, 26, 1, 0));
	/* The repeated hour maps to its first occurrence (summer time). */
	assert_int_equal(tz_local_to_utc("Europe/Oslo", 2045, 10, 29, 2, 30, &ms, NULL),
	                 0);
	assert_true(ms == utc_ms(2045, 10, 29, 0, 30));
}

static char tzdir[64];

static void be32(FILE *f, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 8), (unsigned char)v};
	fwrite(b, 1, 4, f);
}

/* A TZif v2 file with no transitions, one standard type and the footer
 * given: what a "slim" zone file is for a zone like this. */
static void write_slim(const char *name, int32_t std_off, const char *footer)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", tzdir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	for (int block = 0; block < 2; block++) {
		static const unsigned char zeros[15] = {0};
		fwrite("TZif2", 1, 5, f);
		fwrite(zeros, 1, 15, f);
		be32(f, 0); /* isut */
		be32(f, 0); /* isstd */
		be32(f, 0); /* leap */
		be32(f, 0); /* timecnt */
		be32(f, 1); /* typecnt */
		be32(f, 4); /* charcnt */
		be32(f, (uint32_t)std_off);
		fputc(0, f); /* isdst */
		fputc(0, f); /* abbreviation index */
		fwrite("XST", 1, 4, f);
	}
	fprintf(f, "\n%s\n", footer);
	fclose(f);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tzdir, sizeof(tzdir), "/tmp/idstream-tz-%ld", (long)getpid());
	mkdir(tzdir, 0700);
	write_slim("SlimCET", 3600, "CET-1CEST,M3.5.0,M10.5.0/3");
	write_slim("SlimChile", -14400, "<-04>4<-03>,M9.1.6/24,M4.1.6/24");
	write_slim("SlimFixed", 10800, "<+03>-3");
	write_slim("SlimBad", 3600, "CET-1CEST,M13.5.0,M10.5.0/3");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	const char *names[] = {"SlimCET", "SlimChile", "SlimFixed", "SlimBad"};
	char path[128];
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s", tzdir, names[i]);
		unlink(path);
	}
	rmdir(tzdir);
	return 0;
}

/* Slim files: today's summer time comes from the footer alone. */
static void test_slim_files(void **state)
{
	(void)state;
	setenv("TZDIR", tzdir, 1); /* zones load once: these names are new */
	assert_int_equal(offset_at("SlimCET", utc_ms(2026, 1, 15, 12, 0)), 3600);
	assert_int_equal(offset_at("SlimCET", utc_ms(2026, 7, 15, 12, 0)), 7200);
	assert_int_equal(offset_at("SlimCET", utc_ms(2026, 3, 29, 0, 59)), 3600);
	assert_int_equal(offset_at("SlimCET", utc_ms(2026, 3, 29, 1, 0)), 7200);
	/* Rules at 24:00 of a Saturday, south of the equator (Chile). */
	assert_int_equal(offset_at("SlimChile", utc_ms(2026, 1, 15, 12, 0)), -10800);
	assert_int_equal(offset_at("SlimChile", utc_ms(2026, 6, 15, 12, 0)), -14400);
	assert_int_equal(offset_at("SlimFixed", utc_ms(2026, 6, 15, 12, 0)), 10800);
	int64_t ms = 0;
	assert_int_equal(tz_local_to_utc("SlimCET", 2026, 8, 3, 0, 0, &ms, NULL), 0);
	assert_true(ms == utc_ms(2026, 8, 2, 22, 0));
	/* A footer that is not a POSIX TZ rule is refused, naming the zone. */
	id_err_t err = {0};
	int32_t off;
	assert_int_equal(tz_offset_at("SlimBad", 0, &off, &err), ID_EPARSE);
	assert_non_null(strstr(err.msg, "SlimBad"));
	assert_non_null(strstr(err.msg, "POSIX TZ"));
	unsetenv("TZDIR");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_transitions),
	    cmocka_unit_test(test_footer_after_2037),
	    cmocka_unit_test(test_slim_files),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
