/*
 * err.h — the one list of idstream error codes, and the optional error
 * detail struct every fallible function takes as its last argument.
 *
 * Convention: functions return 0 on success and a negative ID_E* code on
 * failure.  When the caller passes a non-NULL id_err_t, the function fills
 * it with the code and a human message naming what and where ("file x.csv
 * line 12 column 3: unterminated quote").  Library error strings (librdkafka,
 * RocksDB, libldap, avro-c) are translated into this form at the boundary of
 * the module that wraps the library.
 *
 * Thread safety: all functions are reentrant; id_err_t is caller-owned.
 */
#ifndef IDSTREAM_ERR_H
#define IDSTREAM_ERR_H

#include <stddef.h>

/* X(NAME, "message") — the code is the negated position in this list. */
#define ID_ERR_MAP(X)                                                                    \
	X(OK, "success")                                                                 \
	X(NOMEM, "out of memory")                                                        \
	X(INVALID, "invalid argument")                                                   \
	X(IO, "input/output error")                                                      \
	X(PARSE, "malformed input")                                                      \
	X(SCHEMA, "unknown or incompatible schema")                                      \
	X(TRUNCATED, "truncated record")                                                 \
	X(KAFKA, "Kafka error")                                                          \
	X(STATE, "state store error")                                                    \
	X(LDAP, "LDAP error")                                                            \
	X(CONFIG, "configuration error")                                                 \
	X(THRESHOLD, "safety threshold exceeded")                                        \
	X(NOTFOUND, "not found")                                                         \
	X(CONFLICT, "conflict")                                                          \
	X(FENCED, "fenced by a newer instance")                                          \
	X(TIMEOUT, "timed out")                                                          \
	X(INTERRUPTED, "interrupted")

enum {
#define ID_ERR_ENUM_(name, msg) ID_E##name##_POS_,
	ID_ERR_MAP(ID_ERR_ENUM_)
#undef ID_ERR_ENUM_
	    ID_ERR_COUNT_
};

/* Negative codes: ID_ENOMEM == -1, ID_EINVALID == -2, ... ID_OK == 0. */
#define ID_OK           0
#define ID_ENOMEM       (-ID_ENOMEM_POS_)
#define ID_EINVALID     (-ID_EINVALID_POS_)
#define ID_EIO          (-ID_EIO_POS_)
#define ID_EPARSE       (-ID_EPARSE_POS_)
#define ID_ESCHEMA      (-ID_ESCHEMA_POS_)
#define ID_ETRUNCATED   (-ID_ETRUNCATED_POS_)
#define ID_EKAFKA       (-ID_EKAFKA_POS_)
#define ID_ESTATE       (-ID_ESTATE_POS_)
#define ID_ELDAP        (-ID_ELDAP_POS_)
#define ID_ECONFIG      (-ID_ECONFIG_POS_)
#define ID_ETHRESHOLD   (-ID_ETHRESHOLD_POS_)
#define ID_ENOTFOUND    (-ID_ENOTFOUND_POS_)
#define ID_ECONFLICT    (-ID_ECONFLICT_POS_)
#define ID_EFENCED      (-ID_EFENCED_POS_)
#define ID_ETIMEOUT     (-ID_ETIMEOUT_POS_)
#define ID_EINTERRUPTED (-ID_EINTERRUPTED_POS_)

#define ID_ERR_MSG_MAX 1024

/* Caller-owned error detail.  Zero-initialise or id_err_clear() it. */
typedef struct id_err {
	int code;                 /* 0 or a negative ID_E* code */
	char msg[ID_ERR_MSG_MAX]; /* human message, "" when code == 0 */
} id_err_t;

/* "EPARSE" style name of a code; "UNKNOWN" for codes not in the list. */
const char *id_err_name(int code);
/* Generic message of a code ("malformed input"). */
const char *id_err_str(int code);

/*
 * Records code and a printf-style message in err (if non-NULL) and returns
 * code, so callers can write `return id_err_set(err, ID_EPARSE, "...")`.
 */
int id_err_set(id_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with more context: "ctx: old message". */
int id_err_wrap(id_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void id_err_clear(id_err_t *err);

#endif
