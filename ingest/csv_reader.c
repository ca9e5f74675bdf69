/*
 * csv_reader.c — HR export CSV reading and validation on top of libcsv (see
 * csv_reader.h).
 *
 * libcsv knows nothing of lines, so the input is fed one physical line at a
 * time: whatever callback fires while a line is being fed happens on that
 * line.  A row starts on the first line after the previous row's end that
 * holds something other than spaces, tabs and line ends (the bytes libcsv
 * skips between rows); a field starts on the line of the delimiter before it.
 *
 * Invariant: once ctx->rc is set the callbacks do nothing, so the first
 * error in file order is the one reported.  Threading: no shared state.
 */
#include "ingest/csv_reader.h"

#include <csv.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Files larger than this are refused rather than read into memory. */
#define CSV_READER_MAX_BYTES ((size_t)1 << 30)

static const char *const required_columns[] = {"employee_id", "first_name", "last_name"};
#define N_REQUIRED (sizeof(required_columns) / sizeof(required_columns[0]))

struct csv_export {
	char *name;
	char sha256[65];
	int64_t mtime_ms;
	char **columns;
	size_t ncolumns;
	csv_row_t *rows;
	size_t nrows;
	size_t rows_cap;
};

typedef struct field {
	char *data; /* NUL-terminated copy, untrimmed */
	size_t len;
	char *val;   /* trimmed view into data */
	size_t line; /* line where the field starts */
} field_t;

typedef struct parse_ctx {
	csv_export_t *x;
	id_err_t *err;
	int rc;

	size_t line;       /* line being fed */
	size_t row_line;   /* line where the current row started */
	size_t field_line; /* line where the next field starts */
	bool awaiting_row; /* between rows: the next non-blank line starts one */
	bool header_done;

	field_t *fields; /* fields of the current row */
	size_t nfields;
	size_t fields_cap;

	size_t id_col;   /* index of employee_id in the header */
	size_t date_col; /* index of start_date, or SIZE_MAX */
	size_t required_col[N_REQUIRED];

	/* Open-addressing set of row indexes keyed by employee id. */
	size_t *idx;
	size_t idx_cap; /* power of two; SIZE_MAX marks an empty slot */
} parse_ctx_t;

static void row_fini(csv_row_t *r)
{
	free(r->employee_id);
	id_attrs_fini(&r->attrs);
}

void csv_export_destroy(csv_export_t *x)
{
	if (x == NULL)
		return;
	for (size_t i = 0; i < x->nrows; i++)
		row_fini(&x->rows[i]);
	free(x->rows);
	for (size_t i = 0; i < x->ncolumns; i++)
		free(x->columns[i]);
	free(x->columns);
	free(x->name);
	free(x);
}

const csv_row_t *csv_export_rows(const csv_export_t *x, size_t *n)
{
	*n = x->nrows;
	return x->rows;
}

const char *csv_export_sha256(const csv_export_t *x)
{
	return x->sha256;
}

const char *csv_export_name(const csv_export_t *x)
{
	return x->name;
}

int64_t csv_export_mtime_ms(const csv_export_t *x)
{
	return x->mtime_ms;
}

const char *const *csv_export_columns(const csv_export_t *x, size_t *n)
{
	*n = x->ncolumns;
	return (const char *const *)x->columns;
}

/* ---- error helpers ------------------------------------------------------ */

/* "<file> line L column C (name)" into buf, omitting what is unknown (0). */
static void where(const parse_ctx_t *c, size_t line, size_t col, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s line %zu", c->x->name, line);
	if (col == 0 || n < 0 || (size_t)n >= len)
		return;
	if (c->header_done && col <= c->x->ncolumns)
		snprintf(buf + n, len - (size_t)n, " column %zu (%s)", col,
		         c->x->columns[col - 1]);
	else
		snprintf(buf + n, len - (size_t)n, " column %zu", col);
}

static int fail(parse_ctx_t *c, size_t line, size_t col, const char *problem)
{
	char w[512];
	where(c, line, col, w, sizeof(w));
	c->rc = id_err_set(c->err, ID_EPARSE, "%s: %s", w, problem);
	return c->rc;
}

static int fail_nomem(parse_ctx_t *c)
{
	c->rc = id_err_set(c->err, ID_ENOMEM, "%s: out of memory", c->x->name);
	return c->rc;
}

/* ---- value checks -------------------------------------------------------- */

/* Byte offset (0-based) of the first invalid UTF-8 sequence, or -1. */
static long utf8_invalid_at(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char b = s[i];
		size_t len;
		uint32_t cp;
		if (b < 0x80) {
			i++;
			continue;
		} else if (b >= 0xc2 && b <= 0xdf) {
			len = 2;
			cp = b & 0x1f;
		} else if (b >= 0xe0 && b <= 0xef) {
			len = 3;
			cp = b & 0x0f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			len = 4;
			cp = b & 0x07;
		} else {
			return (long)i;
		}
		if (i + len > n)
			return (long)i;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return (long)i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		/* Overlong forms, UTF-16 surrogates and values past U+10FFFF. */
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return (long)i;
		i += len;
	}
	return -1;
}

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* True for a real Gregorian calendar date written YYYY-MM-DD. */
static bool valid_date(const char *s)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return false;
	for (int i = 0; i < 10; i++)
		if (i != 4 && i != 7 && !is_digit(s[i]))
			return false;
	int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
	if (y < 1 || m < 1 || m > 12 || d < 1)
		return false;
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	int dim = mdays[m - 1] + (m == 2 && leap ? 1 : 0);
	return d <= dim;
}

/* Trims ASCII blanks in place; returns the start of the trimmed string. */
static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
	                 s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

/* Checks encoding of every field of the current row; col numbers 1-based. */
static int check_fields_encoding(parse_ctx_t *c)
{
	for (size_t i = 0; i < c->nfields; i++) {
		field_t *f = &c->fields[i];
		if (memchr(f->data, '\0', f->len) != NULL)
			return fail(c, f->line, i + 1, "field contains a NUL byte");
		long bad = utf8_invalid_at((const unsigned char *)f->data, f->len);
		if (bad >= 0) {
			char msg[96];
			snprintf(msg, sizeof(msg),
			         "invalid UTF-8 at byte %ld of the field", bad + 1);
			return fail(c, f->line, i + 1, msg);
		}
	}
	return 0;
}

/* ---- employee id set ---------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static size_t *idx_slot(parse_ctx_t *c, const char *id)
{
	size_t mask = c->idx_cap - 1;
	for (size_t i = (size_t)hash_str(id) & mask;; i = (i + 1) & mask) {
		if (c->idx[i] == SIZE_MAX ||
		    strcmp(c->x->rows[c->idx[i]].employee_id, id) == 0)
			return &c->idx[i];
	}
}

static int idx_grow(parse_ctx_t *c)
{
	size_t ncap = c->idx_cap ? c->idx_cap * 2 : 256;
	size_t *old = c->idx, oldcap = c->idx_cap;
	c->idx = malloc(ncap * sizeof(*c->idx));
	if (c->idx == NULL) {
		c->idx = old;
		return ID_ENOMEM;
	}
	c->idx_cap = ncap;
	for (size_t i = 0; i < ncap; i++)
		c->idx[i] = SIZE_MAX;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i] != SIZE_MAX)
			*idx_slot(c, c->x->rows[old[i]].employee_id) = old[i];
	free(old);
	return 0;
}

/* ---- rows ---------------------------------------------------------------- */

static void fields_clear(parse_ctx_t *c)
{
	for (size_t i = 0; i < c->nfields; i++)
		free(c->fields[i].data);
	c->nfields = 0;
}

static int handle_header(parse_ctx_t *c)
{
	csv_export_t *x = c->x;
	if (check_fields_encoding(c) != 0)
		return c->rc;
	x->columns = calloc(c->nfields, sizeof(*x->columns));
	if (x->columns == NULL)
		return fail_nomem(c);
	for (size_t i = 0; i < c->nfields; i++) {
		char *name = trim(c->fields[i].data);
		for (char *p = name; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		if (name[0] == '\0')
			return fail(c, c->fields[i].line, i + 1,
			            "empty column name in header");
		for (size_t j = 0; j < i; j++) {
			if (strcmp(x->columns[j], name) == 0) {
				char msg[160];
				snprintf(msg, sizeof(msg),
				         "duplicate column name %s in header (also "
				         "column %zu)",
				         name, j + 1);
				return fail(c, c->fields[i].line, i + 1, msg);
			}
		}
		if ((x->columns[i] = strdup(name)) == NULL)
			return fail_nomem(c);
		x->ncolumns++;
	}
	c->header_done = true;

	size_t found = 0;
	c->date_col = SIZE_MAX;
	for (size_t r = 0; r < N_REQUIRED; r++)
		c->required_col[r] = SIZE_MAX;
	for (size_t i = 0; i < x->ncolumns; i++) {
		for (size_t r = 0; r < N_REQUIRED; r++) {
			if (strcmp(x->columns[i], required_columns[r]) == 0) {
				c->required_col[r] = i;
				found++;
			}
		}
		if (strcmp(x->columns[i], "start_date") == 0)
			c->date_col = i;
	}
	if (found == 0)
		return fail(
		    c, c->row_line, 0,
		    "missing header row: the first row names none of the required "
		    "columns employee_id, first_name, last_name");
	for (size_t r = 0; r < N_REQUIRED; r++) {
		if (c->required_col[r] == SIZE_MAX) {
			char msg[128];
			snprintf(msg, sizeof(msg), "missing required column %s in header",
			         required_columns[r]);
			return fail(c, c->row_line, 0, msg);
		}
	}
	c->id_col = c->required_col[0];
	return 0;
}

static int handle_data_row(parse_ctx_t *c)
{
	csv_export_t *x = c->x;
	/* Before trimming: trimming writes NULs the check would trip on. */
	if (check_fields_encoding(c) != 0)
		return c->rc;
	bool all_empty = true;
	for (size_t i = 0; i < c->nfields; i++) {
		c->fields[i].val = trim(c->fields[i].data);
		all_empty = all_empty && c->fields[i].val[0] == '\0';
	}
	/* Spreadsheets save rows of bare commas after the data: blank lines. */
	if (all_empty)
		return 0;
	if (c->nfields != x->ncolumns) {
		char msg[128];
		snprintf(msg, sizeof(msg), "row has %zu fields, the header has %zu",
		         c->nfields, x->ncolumns);
		size_t col = c->nfields < x->ncolumns ? c->nfields + 1 : x->ncolumns + 1;
		/* A missing field would have started on the row's last line. */
		size_t line = c->nfields < x->ncolumns ? c->fields[c->nfields - 1].line
		                                       : c->fields[x->ncolumns].line;
		return fail(c, line, col, msg);
	}
	for (size_t r = 0; r < N_REQUIRED; r++) {
		size_t col = c->required_col[r];
		if (c->fields[col].val[0] == '\0')
			return fail(c, c->fields[col].line, col + 1,
			            "required field is empty");
	}
	if (c->date_col != SIZE_MAX && c->fields[c->date_col].val[0] != '\0' &&
	    !valid_date(c->fields[c->date_col].val)) {
		char msg[160];
		snprintf(msg, sizeof(msg), "\"%.40s\" is not a date in YYYY-MM-DD form",
		         c->fields[c->date_col].val);
		return fail(c, c->fields[c->date_col].line, c->date_col + 1, msg);
	}

	if ((x->nrows + 1) * 2 > c->idx_cap && idx_grow(c) != 0)
		return fail_nomem(c);
	const char *id = c->fields[c->id_col].val;
	/* The slot lookup reads rows[], so look before appending. */
	if (x->nrows == x->rows_cap) {
		size_t ncap = x->rows_cap ? x->rows_cap * 2 : 64;
		csv_row_t *n = realloc(x->rows, ncap * sizeof(*n));
		if (n == NULL)
			return fail_nomem(c);
		x->rows = n;
		x->rows_cap = ncap;
	}
	size_t *slot = idx_slot(c, id);
	if (*slot != SIZE_MAX) {
		char msg[160];
		snprintf(msg, sizeof(msg),
		         "duplicate employee_id %.60s (first on line %zu)", id,
		         x->rows[*slot].line);
		return fail(c, c->fields[c->id_col].line, c->id_col + 1, msg);
	}

	csv_row_t *row = &x->rows[x->nrows];
	memset(row, 0, sizeof(*row));
	row->line = c->row_line;
	if ((row->employee_id = strdup(id)) == NULL)
		return fail_nomem(c);
	for (size_t i = 0; i < c->nfields; i++) {
		if (i == c->id_col || c->fields[i].val[0] == '\0')
			continue;
		if (id_attrs_set(&row->attrs, x->columns[i], c->fields[i].val) != 0) {
			row_fini(row);
			return fail_nomem(c);
		}
	}
	*slot = x->nrows++;
	return 0;
}

/* libcsv field callback. */
static void on_field(void *data, size_t len, void *opaque)
{
	parse_ctx_t *c = opaque;
	if (c->rc != 0)
		return;
	if (c->nfields == c->fields_cap) {
		size_t ncap = c->fields_cap ? c->fields_cap * 2 : 16;
		field_t *n = realloc(c->fields, ncap * sizeof(*n));
		if (n == NULL) {
			fail_nomem(c);
			return;
		}
		c->fields = n;
		c->fields_cap = ncap;
	}
	field_t *f = &c->fields[c->nfields];
	f->data = malloc(len + 1);
	if (f->data == NULL) {
		fail_nomem(c);
		return;
	}
	if (len > 0)
		memcpy(f->data, data, len);
	f->data[len] = '\0';
	f->len = len;
	f->line = c->field_line;
	c->nfields++;
	/* The delimiter that ended this field is on the line being fed. */
	c->field_line = c->line;
}

/* libcsv end-of-row callback. */
static void on_row(int term, void *opaque)
{
	parse_ctx_t *c = opaque;
	(void)term;
	if (c->rc == 0) {
		if (!c->header_done)
			handle_header(c);
		else
			handle_data_row(c);
	}
	fields_clear(c);
	c->awaiting_row = true;
}

/* Whether libcsv would start a row on this line (see the file comment). */
static bool line_starts_row(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
			return true;
	return false;
}

static int parse_buffer(parse_ctx_t *c, const unsigned char *data, size_t len)
{
	struct csv_parser p;
	int rc = 0;
	if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0)
		return fail_nomem(c);

	size_t pos = 0;
	/* A byte order mark is an encoding signature, not part of the header. */
	if (len >= 3 && data[0] == 0xef && data[1] == 0xbb && data[2] == 0xbf)
		pos = 3;
	c->line = 1;
	c->awaiting_row = true;
	while (pos < len && c->rc == 0) {
		/* One physical line: up to and including LF, CRLF or a lone CR. */
		size_t end = pos;
		while (end < len && data[end] != '\n' && data[end] != '\r')
			end++;
		if (end < len) {
			if (data[end] == '\r' && end + 1 < len && data[end + 1] == '\n')
				end++;
			end++;
		}
		if (c->awaiting_row && line_starts_row(data + pos, end - pos)) {
			c->awaiting_row = false;
			c->row_line = c->line;
			c->field_line = c->line;
		}
		size_t done = csv_parse(&p, data + pos, end - pos, on_field, on_row, c);
		if (c->rc != 0)
			break;
		if (done != end - pos) {
			if (csv_error(&p) == CSV_EPARSE)
				fail(c, c->line, c->nfields + 1,
				     "malformed quoted field: a quote inside an unquoted "
				     "field, "
				     "or text after a closing quote");
			else
				fail_nomem(c);
			break;
		}
		pos = end;
		c->line++;
	}
	if (c->rc == 0 && csv_fini(&p, on_field, on_row, c) != 0 && c->rc == 0) {
		if (csv_error(&p) == CSV_EPARSE)
			fail(c, c->field_line, c->nfields + 1,
			     "unterminated quote: the quoted field runs to the end of "
			     "the file");
		else
			fail_nomem(c);
	}
	csv_free(&p);
	rc = c->rc;
	if (rc == 0 && !c->header_done)
		rc = id_err_set(c->err, ID_EPARSE,
		                "%s: missing header row (the file is empty)", c->x->name);
	return rc;
}

static int sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return ID_ENOMEM;
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int csv_reader_parse(const char *name, const void *data, size_t len, csv_export_t **out,
                     id_err_t *err)
{
	int rc = 0;
	parse_ctx_t c;
	memset(&c, 0, sizeof(c));
	c.err = err;
	*out = NULL;

	c.x = calloc(1, sizeof(*c.x));
	if (c.x == NULL || (c.x->name = strdup(name)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "%s: out of memory", name);
		goto out;
	}
	if (sha256_hex(data, len, c.x->sha256) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "%s: cannot compute SHA-256", name);
		goto out;
	}
	if ((rc = parse_buffer(&c, data, len)) != 0)
		goto out;
	*out = c.x;
	c.x = NULL;
out:
	fields_clear(&c);
	free(c.fields);
	free(c.idx);
	csv_export_destroy(c.x);
	return rc;
}

int csv_reader_read_file(const char *path, csv_export_t **out, id_err_t *err)
{
	int rc = 0;
	int fd = -1;
	unsigned char *data = NULL;
	struct stat st;
	*out = NULL;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		rc =
		    id_err_set(err, ID_EIO, "%s: cannot read: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = id_err_set(err, ID_EIO, "%s: cannot read: not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > CSV_READER_MAX_BYTES) {
		rc = id_err_set(err, ID_EINVALID, "%s: file is larger than %zu bytes",
		                path, CSV_READER_MAX_BYTES);
		goto out;
	}
	size_t size = (size_t)st.st_size;
	data = malloc(size ? size : 1);
	if (data == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	size_t got = 0;
	while (got < size) {
		ssize_t n = read(fd, data + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = id_err_set(err, ID_EIO, "%s: cannot read: %s", path,
			                strerror(errno));
			goto out;
		}
		if (n == 0)
			break; /* truncated while reading: parse what is there */
		got += (size_t)n;
	}
	if ((rc = csv_reader_parse(path, data, got, out, err)) != 0)
		goto out;
	(*out)->mtime_ms =
	    (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
out:
	free(data);
	if (fd >= 0)
		close(fd);
	return rc;
}
