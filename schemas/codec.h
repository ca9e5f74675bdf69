/*
 * codec.h — the wire form of the three records (schemas/model.h ⇄ bytes).
 *
 * Every Kafka value idstream writes is Avro single-object encoded:
 *
 *   offset size  content
 *   0      2     magic C3 01
 *   2      8     CRC-64-AVRO fingerprint of the writer schema's Parsing
 *                Canonical Form, little-endian
 *   10     n     Avro binary body of the record
 *
 * so a payload names the schema that wrote it without a registry.  The
 * schemas are the .avsc files in schemas/, compiled into the binary.
 * Decoding looks the fingerprint up in a table of known writer schemas per
 * record kind (only v1 today) and refuses anything it cannot fully account
 * for: bad magic, unknown fingerprint, truncation, trailing bytes, invalid
 * UTF-8 — never crashing, whatever the bytes.
 *
 * Encoding is deterministic: the same struct always gives the same bytes
 * (maps are written in id_attrs_t order, which is sorted), which is what makes
 * replayed desired identities byte-identical.
 *
 * Thread safety: a codec_t holds reusable avro-c values and buffers and
 * belongs to one thread at a time; create one per thread.
 */
#ifndef IDSTREAM_CODEC_H
#define IDSTREAM_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "schemas/fingerprint.h"
#include "schemas/model.h"

#define CODEC_MAGIC_0    0xC3
#define CODEC_MAGIC_1    0x01
#define CODEC_HEADER_LEN 10 /* magic + fingerprint */

typedef enum {
	CODEC_EMPLOYEE_EVENT,   /* io.idstream.v1.EmployeeEvent, employee_event_t */
	CODEC_DESIRED_IDENTITY, /* io.idstream.v1.DesiredIdentity, desired_identity_t */
	CODEC_SINK_RESULT,      /* io.idstream.v1.SinkResult, sink_result_t */
	CODEC_NAME_CLAIM,       /* io.idstream.v1.NameClaim, name_claim_t */
	CODEC_KIND_COUNT
} codec_kind_t;

/* "EmployeeEvent", "DesiredIdentity", "SinkResult", "NameClaim"; "UNKNOWN"
 * otherwise. */
const char *codec_kind_name(codec_kind_t kind);

typedef struct codec codec_t;

/*
 * Parses the embedded schemas and prepares the reusable values.  Fails
 * (ID_ESCHEMA) when a schema does not match model.h — a missing field, an enum
 * whose symbols differ from the model's names — so a drift between the .avsc
 * files and the structs is caught at start-up, not on the wire.
 * Ownership: caller frees with codec_destroy().  NULL on failure.
 */
codec_t *codec_create(id_err_t *err);
void codec_destroy(codec_t *c); /* NULL is a no-op */

/*
 * Encoders: out's content is replaced by the framed record (out is reset
 * first; on failure out->len == 0).  ID_EINVALID when the struct cannot be
 * represented: a required string is NULL, a string is not valid UTF-8, an
 * enum is out of range, a DesiredIdentity attribute value is NULL (that map
 * has no nulls).  The message names the field and the employee.
 */
int codec_encode_event(codec_t *c, const employee_event_t *ev, id_buf_t *out,
                       id_err_t *err);
int codec_encode_desired(codec_t *c, const desired_identity_t *d, id_buf_t *out,
                         id_err_t *err);
int codec_encode_result(codec_t *c, const sink_result_t *r, id_buf_t *out, id_err_t *err);
/* Messages name the claim's employee_id (the claimant or owner). */
int codec_encode_name_claim(codec_t *c, const name_claim_t *nc, id_buf_t *out,
                            id_err_t *err);

/*
 * Decoders: *out must be initialised (its *_init(), zeroed, or an earlier
 * decode's result); it is fini'd, then filled with strings it owns.  On
 * failure *out is left empty (as after *_init()).
 *   ID_EPARSE      no single-object magic, a malformed body (bad union or
 *                  enum index, invalid UTF-8, NUL in a string) or trailing
 *                  bytes after the record
 *   ID_ESCHEMA     the fingerprint is not a known writer of this kind (the
 *                  message gives it in hex and what was expected)
 *   ID_ETRUNCATED  the body ends early (the message names the field)
 * Groups are returned sorted and unique, causes sorted by attribute, even if
 * a writer did not sort them.
 */
int codec_decode_event(codec_t *c, const void *data, size_t len, employee_event_t *out,
                       id_err_t *err);
int codec_decode_desired(codec_t *c, const void *data, size_t len,
                         desired_identity_t *out, id_err_t *err);
int codec_decode_result(codec_t *c, const void *data, size_t len, sink_result_t *out,
                        id_err_t *err);
int codec_decode_name_claim(codec_t *c, const void *data, size_t len, name_claim_t *out,
                            id_err_t *err);

/*
 * Reads only the header of a payload: the record kind (if kind != NULL) and
 * the writer fingerprint (if fingerprint != NULL).  0 for a known writer
 * schema; ID_EPARSE without the magic; ID_ESCHEMA for an unknown fingerprint
 * (*fingerprint is still set).  Does not look at the body.
 */
int codec_peek_kind(codec_t *c, const void *data, size_t len, codec_kind_t *kind,
                    uint64_t *fingerprint, id_err_t *err);

/*
 * The fingerprint this codec writes for a record, named by full name
 * ("io.idstream.v1.EmployeeEvent"), short name ("EmployeeEvent") or schema
 * file name ("employee_event").  0 for an unknown name.
 */
uint64_t codec_schema_fingerprint(codec_t *c, const char *name);

/*
 * The Parsing Canonical Form this codec writes for a record (names as for
 * codec_schema_fingerprint), e.g. for registering it elsewhere.  Borrowed,
 * valid until codec_destroy(); NULL for an unknown name.
 */
const char *codec_schema_canonical(codec_t *c, const char *name);

/* The schema files compiled in (build/gen/avsc_embed.c, from
 * scripts/embed-avsc.sh): name is the file name without ".avsc". */
struct id_avsc_file {
	const char *name;
	const char *text;
};
extern const struct id_avsc_file id_avsc_files[];
extern const size_t id_avsc_count;

#endif
