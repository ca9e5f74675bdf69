/*
 * config.h — idstream configuration: one table of options (name, type,
 * default, doc) that is the single source of truth for parsing, validation,
 * `idstream config docs` (which generates CONFIGURATION.md) and --help.
 *
 * Sources, later wins: built-in defaults < config file (`key = value` lines,
 * '#' comments) < environment (IDSTREAM_<KEY>, dots and dashes as '_', e.g.
 * IDSTREAM_TOPIC_PREFIX) < command-line --set key=value.
 *
 * Keys starting with "kafka." are passed unchanged (without the prefix) to
 * librdkafka, e.g. kafka.bootstrap.servers.  Secrets are never values in the
 * file: options ending in "_file" name a file to read the secret from, and
 * the secret itself may come from the environment (see each option's doc).
 *
 * Ownership: id_config_t owns all strings.  Thread safety: read-only after
 * loading, so it may be shared by the threads of `idstream run`.
 */
#ifndef IDSTREAM_CONFIG_H
#define IDSTREAM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/attrs.h"
#include "common/err.h"

typedef struct id_config id_config_t;

/* Creates a config holding the defaults.  Caller frees with id_config_destroy(). */
id_config_t *id_config_create(void);
void id_config_destroy(id_config_t *c);

/* Loads path (errors name file and line), then the environment. */
int id_config_load_file(id_config_t *c, const char *path, id_err_t *err);
int id_config_load_env(id_config_t *c, id_err_t *err);
/* Sets one option from "key=value" (for --set); validates type and range. */
int id_config_set(id_config_t *c, const char *key, const char *value, id_err_t *err);

/* Typed getters of known options; abort() on a name not in the table
 * (a programming error, caught by the tests). Borrowed strings. */
const char *id_config_str(const id_config_t *c, const char *name);
int64_t id_config_int(const id_config_t *c, const char *name);
double id_config_double(const id_config_t *c, const char *name);
bool id_config_bool(const id_config_t *c, const char *name);

/* The kafka.* pass-through settings, prefix stripped.  Borrowed. */
const id_attrs_t *id_config_kafka(const id_config_t *c);

/*
 * Reads a secret: first the environment variable env_name (if non-NULL and
 * set), else the file named by option file_option (trailing newline
 * stripped).  *out is a malloc'd string the caller frees (and should wipe).
 * ID_ENOTFOUND when neither is set.  The secret is never logged.
 */
int id_config_secret(const id_config_t *c, const char *file_option, const char *env_name,
                     char **out, id_err_t *err);

/* Writes the effective configuration as `key = value` lines (every option of
 * the table, then the kafka.* pass-through keys).  Holds no secrets: those
 * are never option values. */
void id_config_write(const id_config_t *c, FILE *out);

/* Writes CONFIGURATION.md (markdown) describing every option. */
void id_config_write_docs(FILE *out);

/* Topic name helpers: "<topic.prefix>.<suffix>" into buf. */
const char *id_config_topic(const id_config_t *c, const char *suffix, char *buf,
                            size_t buflen);

#endif
