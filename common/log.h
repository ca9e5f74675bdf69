/*
 * log.h — structured logging: one JSON object per line on stderr, e.g.
 *   {"ts":"2026-11-25T19:20:01.123Z","level":"info","component":"ingest",
 *    "msg":"published 212 events","file":"a.csv"}
 *
 * Never pass secrets to these functions.  The level threshold is the one
 * documented global of this module (set once at start-up from the config or
 * IDSTREAM_LOG_LEVEL); writes are serialised with a mutex so lines from
 * several threads never interleave.
 */
#ifndef IDSTREAM_LOG_H
#define IDSTREAM_LOG_H

typedef enum { ID_LOG_DEBUG, ID_LOG_INFO, ID_LOG_WARN, ID_LOG_ERROR } id_log_level_t;

void id_log_set_level(id_log_level_t level);
/* Parses "debug|info|warn|error"; returns 0 or ID_EINVALID. */
int id_log_level_parse(const char *s, id_log_level_t *out);

/*
 * Logs msg (printf-style) with extra string fields given as a NULL-terminated
 * list of key, value pairs: id_log_kv(ID_LOG_INFO, "sink", "applied",
 * "employee", "E1001", NULL);  -- the formatted message comes after fields
 * so the variadic list stays simple: use id_log() for formatted messages.
 */
void id_log_kv(id_log_level_t level, const char *component, const char *msg, ...);
void id_log(id_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define id_log_debug(comp, ...) id_log(ID_LOG_DEBUG, comp, __VA_ARGS__)
#define id_log_info(comp, ...)  id_log(ID_LOG_INFO, comp, __VA_ARGS__)
#define id_log_warn(comp, ...)  id_log(ID_LOG_WARN, comp, __VA_ARGS__)
#define id_log_error(comp, ...) id_log(ID_LOG_ERROR, comp, __VA_ARGS__)

#endif
