/*
 * csv_reader.h — reads and validates a whole HR export CSV file.
 *
 * Format: RFC 4180 CSV (quotes, embedded commas, quotes and newlines), with
 * or without a UTF-8 byte order mark, LF or CRLF line ends, blank lines
 * ignored.  The first row is the header; column names are trimmed and
 * lower-cased.  Required columns: employee_id, first_name, last_name.
 * start_date, when present and non-empty, must be a real YYYY-MM-DD date.
 * Every other column passes through as an attribute.
 *
 * The entire file is validated before anything is returned: on any error the
 * caller gets no rows, so it publishes nothing.  Errors are ID_EPARSE (ID_EIO
 * for a file that cannot be read) with a message naming the file, the line,
 * and the column number and name, e.g.
 *   "hr.csv line 12 column 3 (last_name): required field is empty".
 * Lines are physical lines of the file (1-based, a CRLF counts once); a row
 * is reported at the line where it starts.
 *
 * Thread safety: a csv_export_t is immutable once returned and may be read
 * from several threads.
 */
#ifndef IDSTREAM_INGEST_CSV_READER_H
#define IDSTREAM_INGEST_CSV_READER_H

#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/err.h"

/* One employee row. */
typedef struct csv_row {
	size_t line;       /* line of the file where the row starts */
	char *employee_id; /* trimmed, non-empty, unique in the file */
	/*
	 * Every other column: lower-cased column name → trimmed value.  Empty
	 * values are left out, so "absent" and "empty" are the same thing to
	 * the diff (an attribute that becomes empty is cleared).  employee_id
	 * is not in here: it is the key, not an attribute.
	 */
	id_attrs_t attrs;
} csv_row_t;

typedef struct csv_export csv_export_t;

/*
 * Reads and validates the file at path.  Error messages name the file as
 * path.  Ownership: *out (NULL on error) is freed with csv_export_destroy().
 */
int csv_reader_read_file(const char *path, csv_export_t **out, id_err_t *err);

/*
 * The same on an in-memory file; name is what error messages call it.
 * The export's mtime is 0.
 */
int csv_reader_parse(const char *name, const void *data, size_t len, csv_export_t **out,
                     id_err_t *err);

void csv_export_destroy(csv_export_t *x);

/* Rows in file order (borrowed, valid until destroy); *n receives the count. */
const csv_row_t *csv_export_rows(const csv_export_t *x, size_t *n);
/* Lower-case hex SHA-256 of the file's bytes (64 characters; borrowed). */
const char *csv_export_sha256(const csv_export_t *x);
/* The name or path given when reading (borrowed). */
const char *csv_export_name(const csv_export_t *x);
/* Modification time of the file read, ms since the epoch (0 for parse()). */
int64_t csv_export_mtime_ms(const csv_export_t *x);
/* Normalised column names in header order (borrowed); *n receives the count. */
const char *const *csv_export_columns(const csv_export_t *x, size_t *n);

#endif
