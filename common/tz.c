/*
 * tz.c — TZif reader and local→UTC conversion (see tz.h).
 *
 * Only the parts needed for "which instant is this local time" are read:
 * the transition times and the UTC offset of each local time type, from the
 * 64-bit (version 2+) data block when present, else the 32-bit one.  Leap
 * second records are skipped: zone files under zoneinfo/ (not right/) have
 * none, and POSIX time ignores them anyway.
 */
#include "common/tz.h"

#include <errno.h>
#include <pthread.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TZ_MAX_FILE  (256 * 1024)
#define TZ_MAX_TYPES 256

/* One end of daylight time in a footer rule: Jn, n or Mm.w.d, and the
 * local time of day it happens at (seconds, may be negative or > 24 h). */
typedef struct tz_rule_date {
	char kind; /* 'J' (1..365, no Feb 29), 'D' (0..365), 'M' */
	int n, m, w, d;
	int32_t secs;
} tz_rule_date_t;

/* The TZif footer (RFC 8536 section 3.3, a POSIX TZ string): the rule for
 * instants after the last transition of the file. */
typedef struct tz_footer {
	bool present;
	bool has_dst;
	int32_t std_off, dst_off; /* seconds east of UTC */
	tz_rule_date_t start, end;
} tz_footer_t;

typedef struct tz_zone {
	char name[65];
	tz_footer_t footer;
	int64_t *trans;   /* transition instants, seconds, ascending */
	uint8_t *idx;     /* type index in force from trans[i] */
	int32_t *offsets; /* UTC offset of each type, seconds east */
	uint8_t *isdst;
	size_t ntrans, ntypes;
	struct tz_zone *next;
} tz_zone_t;

static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;
static tz_zone_t *tz_cache;

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static bool name_ok(const char *zone)
{
	size_t n = strlen(zone);
	if (n == 0 || n > 64 || zone[0] == '/' || strstr(zone, "..") != NULL)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345678"
		           "9_+-/",
		           zone[i]) == NULL)
			return false;
	return true;
}

static void zone_free(tz_zone_t *z)
{
	if (z == NULL)
		return;
	free(z->trans);
	free(z->idx);
	free(z->offsets);
	free(z->isdst);
	free(z);
}

/* ---- the footer's POSIX TZ string ---- */

/* A zone abbreviation: 3+ letters, or <...> with letters, digits, + and -. */
static bool posix_name(const char **sp)
{
	const char *s = *sp;
	size_t n = 0;
	if (*s == '<') {
		for (s++; *s != '>' && *s != '\0'; s++, n++)
			if (!(isalnum((unsigned char)*s) || *s == '+' || *s == '-'))
				return false;
		if (*s != '>' || n < 3)
			return false;
		*sp = s + 1;
		return true;
	}
	for (; isalpha((unsigned char)*s); s++)
		n++;
	*sp = s;
	return n >= 3;
}

/* [+-]hh[:mm[:ss]] with hh ≤ max, as seconds. */
static bool posix_time(const char **sp, int max_hours, int32_t *out)
{
	const char *s = *sp;
	int sign = 1, part[3] = {0, 0, 0};
	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	for (int i = 0; i < 3; i++) {
		if (i > 0 && *s != ':')
			break;
		if (i > 0)
			s++;
		if (!isdigit((unsigned char)*s))
			return false;
		int v = 0;
		for (int k = 0; k < 3 && isdigit((unsigned char)*s); k++)
			v = v * 10 + (*s++ - '0');
		part[i] = v;
	}
	if (part[0] > max_hours || part[1] > 59 || part[2] > 59)
		return false;
	*out = sign * (part[0] * 3600 + part[1] * 60 + part[2]);
	*sp = s;
	return true;
}

static bool posix_num(const char **sp, int lo, int hi, int *out)
{
	const char *s = *sp;
	int v = 0, k = 0;
	for (; isdigit((unsigned char)*s) && k < 4; s++, k++)
		v = v * 10 + (*s - '0');
	if (k == 0 || v < lo || v > hi)
		return false;
	*out = v;
	*sp = s;
	return true;
}

/* ,Jn | ,n | ,Mm.w.d then [/time] (default 02:00). */
static bool posix_rule_date(const char **sp, tz_rule_date_t *r)
{
	const char *s = *sp;
	if (*s++ != ',')
		return false;
	if (*s == 'J') {
		s++;
		r->kind = 'J';
		if (!posix_num(&s, 1, 365, &r->n))
			return false;
	} else if (*s == 'M') {
		s++;
		r->kind = 'M';
		if (!posix_num(&s, 1, 12, &r->m) || *s++ != '.' ||
		    !posix_num(&s, 1, 5, &r->w) || *s++ != '.' ||
		    !posix_num(&s, 0, 6, &r->d))
			return false;
	} else {
		r->kind = 'D';
		if (!posix_num(&s, 0, 365, &r->n))
			return false;
	}
	r->secs = 7200;
	if (*s == '/') {
		s++;
		if (!posix_time(&s, 167, &r->secs))
			return false;
	}
	*sp = s;
	return true;
}

/* Parses "std offset [dst [offset] [,start[/time],end[/time]]]".  An empty
 * string (no rule) leaves f absent. */
static bool footer_parse(const char *s, tz_footer_t *f)
{
	int32_t off;
	memset(f, 0, sizeof(*f));
	if (*s == '\0')
		return true;
	if (!posix_name(&s) || !posix_time(&s, 24, &off))
		return false;
	f->std_off = -off; /* POSIX offsets are west of UTC */
	f->present = true;
	if (*s == '\0')
		return true;
	if (!posix_name(&s))
		return false;
	f->has_dst = true;
	f->dst_off = f->std_off + 3600;
	if (*s != ',' && *s != '\0') {
		if (!posix_time(&s, 24, &off))
			return false;
		f->dst_off = -off;
	}
	if (*s == '\0') { /* no rule: POSIX's default, the US rule */
		f->start = (tz_rule_date_t){'M', 0, 3, 2, 0, 7200};
		f->end = (tz_rule_date_t){'M', 0, 11, 1, 0, 7200};
		return true;
	}
	return posix_rule_date(&s, &f->start) && posix_rule_date(&s, &f->end) &&
	       *s == '\0';
}

static int64_t days_from_civil(int64_t y, int m, int d);

static bool leap_year(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Local seconds since the epoch at which rule date r happens in year y. */
static int64_t rule_local(const tz_rule_date_t *r, int64_t y)
{
	int64_t day;
	if (r->kind == 'J') {
		day = days_from_civil(y, 1, 1) + r->n - 1;
		if (leap_year(y) && r->n >= 60)
			day++; /* Jn never counts Feb 29 */
	} else if (r->kind == 'D') {
		day = days_from_civil(y, 1, 1) + r->n;
	} else {
		static const int mdays[] = {31, 28, 31, 30, 31, 30,
		                            31, 31, 30, 31, 30, 31};
		int64_t first = days_from_civil(y, r->m, 1);
		int wd = (int)(((first % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
		int64_t d = first + ((r->d - wd) + 7) % 7 + 7 * (r->w - 1);
		int len = mdays[r->m - 1] + (r->m == 2 && leap_year(y));
		while (d >= first + len)
			d -= 7; /* week 5: the last such weekday */
		day = d;
	}
	return day * 86400 + r->secs;
}

/* The UTC instants daylight time starts and ends in year y. */
static void footer_year(const tz_footer_t *f, int64_t y, int64_t *start, int64_t *end)
{
	*start = rule_local(&f->start, y) - f->std_off;
	*end = rule_local(&f->end, y) - f->dst_off;
}

static int64_t year_of(int64_t t)
{
	int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
	return 1970 + (days * 400) / 146097; /* within a year; callers check ±1 */
}

static int32_t footer_offset(const tz_footer_t *f, int64_t t)
{
	if (!f->has_dst)
		return f->std_off;
	int64_t y = year_of(t);
	/* The latest change at or before t among the years around it. */
	int64_t best = INT64_MIN;
	int32_t off = f->std_off;
	for (int64_t yy = y - 1; yy <= y + 1; yy++) {
		int64_t a, b;
		footer_year(f, yy, &a, &b);
		if (a <= t && a > best) {
			best = a;
			off = f->dst_off;
		}
		if (b <= t && b > best) {
			best = b;
			off = f->std_off;
		}
	}
	return off;
}

/* The latest change of offset by the footer at or before t, or INT64_MIN. */
static int64_t footer_prev_change(const tz_footer_t *f, int64_t t)
{
	int64_t best = INT64_MIN;
	if (!f->has_dst)
		return best;
	for (int64_t yy = year_of(t) - 1; yy <= year_of(t) + 1; yy++) {
		int64_t a, b;
		footer_year(f, yy, &a, &b);
		if (a <= t && a > best)
			best = a;
		if (b <= t && b > best)
			best = b;
	}
	return best;
}

/* Parses one TZif file's bytes into z.  0 or ID_EPARSE / ID_ENOMEM. */
static int zone_parse(tz_zone_t *z, const unsigned char *b, size_t len, id_err_t *err)
{
	size_t at = 0;
	int wide = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (len - at < 44 || memcmp(b + at, "TZif", 4) != 0)
			return id_err_set(err, ID_EPARSE, "time zone %s: not a TZif file",
			                  z->name);
		char version = (char)b[at + 4];
		uint32_t isut = be32(b + at + 20), isstd = be32(b + at + 24),
		         leap = be32(b + at + 28), timecnt = be32(b + at + 32),
		         typecnt = be32(b + at + 36), charcnt = be32(b + at + 40);
		size_t tsz = wide ? 8 : 4;
		if (typecnt == 0 || typecnt > TZ_MAX_TYPES || timecnt > 100000 ||
		    leap > 100000 || charcnt > 100000 || isut > TZ_MAX_TYPES ||
		    isstd > TZ_MAX_TYPES)
			return id_err_set(err, ID_EPARSE,
			                  "time zone %s: implausible TZif counts",
			                  z->name);
		size_t body = timecnt * tsz + timecnt + typecnt * 6 + charcnt +
		              leap * (tsz + 4) + isstd + isut;
		at += 44;
		if (len - at < body)
			return id_err_set(err, ID_EPARSE,
			                  "time zone %s: truncated TZif file", z->name);
		if (pass == 0 && version >= '2') {
			at += body; /* skip the 32-bit block: the 64-bit one follows */
			wide = 1;
			continue;
		}
		const unsigned char *p = b + at;
		z->ntrans = timecnt;
		z->ntypes = typecnt;
		z->trans = calloc(timecnt + 1, sizeof(*z->trans));
		z->idx = calloc(timecnt + 1, 1);
		z->offsets = calloc(typecnt, sizeof(*z->offsets));
		z->isdst = calloc(typecnt, 1);
		if (z->trans == NULL || z->idx == NULL || z->offsets == NULL ||
		    z->isdst == NULL)
			return ID_ENOMEM;
		for (uint32_t i = 0; i < timecnt; i++, p += tsz) {
			z->trans[i] = wide ? be64(p) : (int64_t)(int32_t)be32(p);
			if (i > 0 && z->trans[i] <= z->trans[i - 1])
				return id_err_set(
				    err, ID_EPARSE,
				    "time zone %s: transitions out of order", z->name);
		}
		for (uint32_t i = 0; i < timecnt; i++, p++) {
			if (*p >= typecnt)
				return id_err_set(err, ID_EPARSE,
				                  "time zone %s: bad local time type",
				                  z->name);
			z->idx[i] = *p;
		}
		for (uint32_t i = 0; i < typecnt; i++, p += 6) {
			z->offsets[i] = (int32_t)be32(p);
			z->isdst[i] = p[4];
			if (z->offsets[i] < -25 * 3600 || z->offsets[i] > 26 * 3600)
				return id_err_set(err, ID_EPARSE,
				                  "time zone %s: implausible UTC offset",
				                  z->name);
		}
		/* Version 2+: the footer, "\n<POSIX TZ string>\n". */
		const unsigned char *fe = b + at + body, *end = b + len;
		if (wide && fe < end && *fe == '\n') {
			const unsigned char *nl =
			    memchr(fe + 1, '\n', (size_t)(end - fe - 1));
			char tzs[128];
			size_t n = nl != NULL ? (size_t)(nl - fe - 1) : 0;
			if (nl == NULL || n >= sizeof(tzs))
				return id_err_set(err, ID_EPARSE,
				                  "time zone %s: bad TZif footer",
				                  z->name);
			memcpy(tzs, fe + 1, n);
			tzs[n] = '\0';
			if (!footer_parse(tzs, &z->footer))
				return id_err_set(
				    err, ID_EPARSE,
				    "time zone %s: TZif footer \"%s\" is not a "
				    "POSIX TZ string",
				    z->name, tzs);
		}
		return 0;
	}
	return id_err_set(err, ID_EPARSE, "time zone %s: not a TZif file", z->name);
}

static int zone_load(const char *zone, tz_zone_t **out, id_err_t *err)
{
	const char *dir = getenv("TZDIR");
	char path[512];
	unsigned char *b = NULL;
	int rc = 0;
	tz_zone_t *z = calloc(1, sizeof(*z));
	if (z == NULL)
		return id_err_set(err, ID_ENOMEM, "time zone %s: out of memory", zone);
	snprintf(z->name, sizeof(z->name), "%s", zone);
	snprintf(path, sizeof(path), "%s/%s",
	         dir != NULL && dir[0] != '\0' ? dir : "/usr/share/zoneinfo", zone);
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		rc = id_err_set(err, errno == ENOENT ? ID_ENOTFOUND : ID_EIO,
		                "time zone %s: no zone file %s (%s)", zone, path,
		                strerror(errno));
		goto out;
	}
	if ((b = malloc(TZ_MAX_FILE)) == NULL) {
		rc = ID_ENOMEM;
		goto out;
	}
	size_t len = fread(b, 1, TZ_MAX_FILE, f);
	rc = zone_parse(z, b, len, err);
out:
	if (f != NULL)
		fclose(f);
	free(b);
	if (rc != 0) {
		if (rc == ID_ENOMEM)
			id_err_set(err, rc, "time zone %s: out of memory", zone);
		zone_free(z);
		return rc;
	}
	*out = z;
	return 0;
}

/* The cached zone, loading it on first use.  Zones are never freed. */
static int zone_get(const char *zone, const tz_zone_t **out, id_err_t *err)
{
	if (!name_ok(zone))
		return id_err_set(err, ID_EINVALID,
		                  "time zone \"%s\": not an IANA zone name", zone);
	pthread_mutex_lock(&tz_lock);
	int rc = 0;
	tz_zone_t *z;
	for (z = tz_cache; z != NULL; z = z->next)
		if (strcmp(z->name, zone) == 0)
			break;
	if (z == NULL && (rc = zone_load(zone, &z, err)) == 0) {
		z->next = tz_cache;
		tz_cache = z;
	}
	pthread_mutex_unlock(&tz_lock);
	if (rc == 0)
		*out = z;
	return rc;
}

static bool is_utc(const char *zone)
{
	return strcmp(zone, "UTC") == 0 || strcmp(zone, "Etc/UTC") == 0 ||
	       strcmp(zone, "Z") == 0;
}

/* The UTC offset in force at t (seconds). */
static int32_t zone_offset(const tz_zone_t *z, int64_t t)
{
	/* After the last transition (or with none), the footer's rule. */
	if (z->footer.present && (z->ntrans == 0 || t >= z->trans[z->ntrans - 1]))
		return footer_offset(&z->footer, t);
	if (z->ntrans == 0 || t < z->trans[0]) {
		/* Before the first transition: the first standard-time type. */
		for (size_t i = 0; i < z->ntypes; i++)
			if (!z->isdst[i])
				return z->offsets[i];
		return z->offsets[0];
	}
	size_t lo = 0, hi = z->ntrans; /* last trans[i] <= t */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (z->trans[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return z->offsets[z->idx[lo]];
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static bool date_ok(int y, int m, int d, int hh, int mm)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (y < 1 || y > 9999 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] || hh < 0 ||
	    hh > 23 || mm < 0 || mm > 59)
		return false;
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return !(m == 2 && d == 29 && !leap);
}

int tz_local_to_utc(const char *zone, int year, int month, int day, int hour, int minute,
                    int64_t *ms, id_err_t *err)
{
	if (!date_ok(year, month, day, hour, minute))
		return id_err_set(
		    err, ID_EINVALID,
		    "time zone %s: invalid local time %04d-%02d-%02d %02d:%02d", zone,
		    year, month, day, hour, minute);
	int64_t local =
	    days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60;
	if (is_utc(zone)) {
		*ms = local * 1000;
		return 0;
	}
	const tz_zone_t *z;
	int rc = zone_get(zone, &z, err);
	if (rc != 0)
		return rc;
	/* Each offset the zone uses gives one candidate instant; it is a
	 * real occurrence of the local time when that offset is in force
	 * then.  The earliest wins (the first of a repeated hour). */
	bool found = false;
	int64_t best = 0;
	for (size_t i = 0; i < z->ntypes; i++) {
		int64_t u = local - z->offsets[i];
		if (zone_offset(z, u) == z->offsets[i] && (!found || u < best)) {
			best = u;
			found = true;
		}
	}
	if (!found) {
		/* Skipped by a change of offset: the gap ends at the last
		 * transition before local read with the offset before it. */
		int64_t u = local - zone_offset(z, local - 86400);
		size_t lo = 0;
		for (size_t i = 0; i < z->ntrans && z->trans[i] <= u; i++)
			lo = i;
		best = z->ntrans > 0 ? z->trans[lo] : u;
		int64_t fc =
		    z->footer.present ? footer_prev_change(&z->footer, u) : INT64_MIN;
		if (fc != INT64_MIN && (z->ntrans == 0 || fc > z->trans[z->ntrans - 1]) &&
		    fc > best)
			best = fc;
	}
	*ms = best * 1000;
	return 0;
}

int tz_offset_at(const char *zone, int64_t ms, int32_t *offset, id_err_t *err)
{
	if (is_utc(zone)) {
		*offset = 0;
		return 0;
	}
	const tz_zone_t *z;
	int rc = zone_get(zone, &z, err);
	if (rc != 0)
		return rc;
	int64_t s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
	*offset = zone_offset(z, s);
	return 0;
}
