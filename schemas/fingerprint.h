/*
 * fingerprint.h — Avro schema identity: the Parsing Canonical Form (PCF) of a
 * schema and its CRC-64-AVRO (Rabin) fingerprint, as the Avro specification
 * defines them.  avro-c has neither, and single-object encoding (codec.h)
 * needs both: the 8 bytes after the C3 01 magic are the fingerprint of the
 * writer schema's PCF, so they must match what Java/Python writers compute.
 *
 * Thread safety: pure functions, no state.
 */
#ifndef IDSTREAM_FINGERPRINT_H
#define IDSTREAM_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* The fingerprint of zero bytes (the Rabin "empty" value and the seed). */
#define CODEC_FP_EMPTY UINT64_C(0xc15d213aa4d7a795)

/*
 * CRC-64-AVRO of len bytes at data — normally a PCF string, e.g.
 * codec_fingerprint("\"null\"", 6) == 0x63dd24e7cc258f8a.  On the wire the
 * value is written little-endian.
 */
uint64_t codec_fingerprint(const char *data, size_t len);

/*
 * Computes the Parsing Canonical Form of the Avro schema JSON text (len
 * bytes, need not be NUL-terminated): primitives in simple form, full names,
 * only name/type/fields/symbols/items/values/size kept (doc, aliases,
 * default, order, logicalType, namespace ... dropped), in that order, no
 * whitespace; a named type defined earlier is written as its full name.
 *
 * Returns 0 and *out, a NUL-terminated string the caller frees with free();
 * or ID_EPARSE (bad JSON, with line/column), ID_ESCHEMA (not a valid schema:
 * the message names the offending name or attribute), ID_ENOMEM.
 */
int codec_canonical_form(const char *json, size_t len, char **out, id_err_t *err);

#endif
