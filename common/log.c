/*
 * log.c — JSON-lines logger (see log.h).  Strings are escaped with jansson so
 * any byte sequence yields a valid JSON line.
 */
#define _POSIX_C_SOURCE 200809L
#include "common/log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/err.h"

/* The module's one global: threshold, written once at start-up. */
static id_log_level_t log_threshold = ID_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void id_log_set_level(id_log_level_t level)
{
	log_threshold = level;
}

int id_log_level_parse(const char *s, id_log_level_t *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (id_log_level_t)i;
			return 0;
		}
	}
	return ID_EINVALID;
}

static void log_emit(id_log_level_t level, const char *component, const char *msg,
                     json_t *fields)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[80];
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	         tm.tm_sec, ts.tv_nsec / 1000000);
	json_t *o = json_object();
	if (o == NULL)
		return;
	json_object_set_new(o, "ts", json_string(when));
	json_object_set_new(o, "level", json_string(level_names[level]));
	json_object_set_new(o, "component", json_string(component));
	json_object_set_new(o, "msg", json_stringn(msg, strlen(msg)));
	if (fields != NULL)
		json_object_update(o, fields);
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (line == NULL)
		return;
	pthread_mutex_lock(&log_lock);
	fputs(line, stderr);
	fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&log_lock);
	free(line);
}

void id_log_kv(id_log_level_t level, const char *component, const char *msg, ...)
{
	if (level < log_threshold)
		return;
	json_t *fields = json_object();
	va_list ap;
	va_start(ap, msg);
	for (;;) {
		const char *k = va_arg(ap, const char *);
		if (k == NULL)
			break;
		const char *v = va_arg(ap, const char *);
		if (fields != NULL && v != NULL)
			json_object_set_new(fields, k, json_string(v));
	}
	va_end(ap);
	log_emit(level, component, msg, fields);
	json_decref(fields);
}

void id_log(id_log_level_t level, const char *component, const char *fmt, ...)
{
	if (level < log_threshold)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(level, component, msg, NULL);
}
