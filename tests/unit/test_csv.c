/*
 * test_csv.c — the HR export reader: what an admin's export turns into
 * (employee rows with their attributes and line numbers), and the exact error
 * an admin sees for each way an export can be broken.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/csv_reader.h"

static csv_export_t *parse_ok(const char *text)
{
	csv_export_t *x = NULL;
	id_err_t err = {0};
	int rc = csv_reader_parse("hr.csv", text, strlen(text), &x, &err);
	if (rc != 0)
		fail_msg("unexpected error: %s", err.msg);
	assert_non_null(x);
	return x;
}

/* Parses text (length n, so NULs can be embedded) and checks the error. */
static void parse_fails_n(const char *text, size_t n, const char *want)
{
	csv_export_t *x = NULL;
	id_err_t err = {0};
	int rc = csv_reader_parse("hr.csv", text, n, &x, &err);
	assert_int_equal(rc, ID_EPARSE);
	assert_int_equal(err.code, ID_EPARSE);
	assert_null(x);
	assert_string_equal(err.msg, want);
}

static void parse_fails(const char *text, const char *want)
{
	parse_fails_n(text, strlen(text), want);
}

static void test_plain_rows_and_attributes(void **state)
{
	(void)state;
	csv_export_t *x = parse_ok("employee_id,first_name,last_name,title,department\n"
	                           "E1002,Grace,Hopper,Rear Admiral,Navy\n"
	                           "E1001,Ada,Lovelace,,Engineering\n");
	size_t n = 0;
	const csv_row_t *rows = csv_export_rows(x, &n);
	assert_int_equal(n, 2);
	/* File order, line numbers of the file. */
	assert_string_equal(rows[0].employee_id, "E1002");
	assert_int_equal(rows[0].line, 2);
	assert_string_equal(id_attrs_get(&rows[0].attrs, "first_name"), "Grace");
	assert_string_equal(id_attrs_get(&rows[0].attrs, "title"), "Rear Admiral");
	assert_string_equal(id_attrs_get(&rows[0].attrs, "department"), "Navy");
	/* employee_id is the key, not an attribute. */
	assert_false(id_attrs_has(&rows[0].attrs, "employee_id"));
	assert_int_equal(rows[0].attrs.len, 4);
	/* An empty optional field is simply absent. */
	assert_string_equal(rows[1].employee_id, "E1001");
	assert_int_equal(rows[1].line, 3);
	assert_false(id_attrs_has(&rows[1].attrs, "title"));
	assert_int_equal(rows[1].attrs.len, 3);
	csv_export_destroy(x);
	csv_export_destroy(NULL);
}

static void test_bom_crlf_quotes_newlines_blank_lines(void **state)
{
	(void)state;
	const char *text = "\xef\xbb\xbf"
	                   " Employee_ID , First_Name ,LAST_NAME,Title,Cost Center\r\n"
	                   "E1,Jos\xc3\xa9,\"Garc\xc3\xad"
	                   "a, Jr.\",\"Head of \"\"Fun\"\"\r\nand Games\",  CC-9  \r\n"
	                   "\r\n"
	                   "E2,\xc3\x85sa,Stra\xc3\x9f"
	                   "e,\"  Engineer  \",\r\n"
	                   "\r\n"
	                   "   \r\n"
	                   ",,,,\r\n"
	                   "\r\n";
	csv_export_t *x = parse_ok(text);
	size_t nc = 0;
	const char *const *cols = csv_export_columns(x, &nc);
	assert_int_equal(nc, 5);
	/* Header names: trimmed and lower-cased; BOM not part of the first one. */
	assert_string_equal(cols[0], "employee_id");
	assert_string_equal(cols[1], "first_name");
	assert_string_equal(cols[2], "last_name");
	assert_string_equal(cols[4], "cost center");
	size_t n = 0;
	const csv_row_t *rows = csv_export_rows(x, &n);
	assert_int_equal(n, 2);
	assert_int_equal(rows[0].line, 2);
	assert_string_equal(id_attrs_get(&rows[0].attrs, "first_name"), "Jos\xc3\xa9");
	assert_string_equal(id_attrs_get(&rows[0].attrs, "last_name"), "Garc\xc3\xad"
	                                                               "a, Jr.");
	/* Doubled quotes and an embedded CRLF survive inside a quoted field. */
	assert_string_equal(id_attrs_get(&rows[0].attrs, "title"),
	                    "Head of \"Fun\"\r\nand Games");
	assert_string_equal(id_attrs_get(&rows[0].attrs, "cost center"), "CC-9");
	/* The quoted field spanned a line: the next row starts on line 5. */
	assert_int_equal(rows[1].line, 5);
	assert_string_equal(id_attrs_get(&rows[1].attrs, "title"), "Engineer");
	assert_false(id_attrs_has(&rows[1].attrs, "cost center"));
	csv_export_destroy(x);
}

static void test_no_trailing_newline_and_leading_blank_lines(void **state)
{
	(void)state;
	csv_export_t *x =
	    parse_ok("\n\nemployee_id,first_name,last_name\nE1,Ada,Lovelace");
	size_t n = 0;
	const csv_row_t *rows = csv_export_rows(x, &n);
	assert_int_equal(n, 1);
	assert_int_equal(rows[0].line, 4);
	assert_string_equal(id_attrs_get(&rows[0].attrs, "last_name"), "Lovelace");
	csv_export_destroy(x);
}

static void test_header_only_is_an_empty_export(void **state)
{
	(void)state;
	csv_export_t *x = parse_ok("employee_id,first_name,last_name\n");
	size_t n = 99;
	csv_export_rows(x, &n);
	assert_int_equal(n, 0);
	csv_export_destroy(x);
}

static void test_missing_header(void **state)
{
	(void)state;
	parse_fails("", "hr.csv: missing header row (the file is empty)");
	parse_fails("\xef\xbb\xbf\r\n\r\n",
	            "hr.csv: missing header row (the file is empty)");
	parse_fails("E1,Ada,Lovelace\nE2,Grace,Hopper\n",
	            "hr.csv line 1: missing header row: the first row names none of the "
	            "required columns employee_id, first_name, last_name");
}

static void test_missing_required_column(void **state)
{
	(void)state;
	parse_fails("\nemployee_id,first_name,surname\nE1,Ada,Lovelace\n",
	            "hr.csv line 2: missing required column last_name in header");
	parse_fails("first_name,last_name\nAda,Lovelace\n",
	            "hr.csv line 1: missing required column employee_id in header");
}

static void test_header_names(void **state)
{
	(void)state;
	parse_fails("employee_id,First_Name,last_name, first_name \n",
	            "hr.csv line 1 column 4: duplicate column name first_name in header "
	            "(also column 2)");
	parse_fails("employee_id,first_name,,last_name\n",
	            "hr.csv line 1 column 3: empty column name in header");
}

static void test_empty_required_field(void **state)
{
	(void)state;
	parse_fails("employee_id,first_name,last_name\n"
	            "E1,Ada,Lovelace\n"
	            "E2,  ,Hopper\n",
	            "hr.csv line 3 column 2 (first_name): required field is empty");
	parse_fails("first_name,last_name,employee_id\n"
	            "Ada,Lovelace,\"\"\n",
	            "hr.csv line 2 column 3 (employee_id): required field is empty");
}

static void test_duplicate_employee_id(void **state)
{
	(void)state;
	parse_fails(
	    "employee_id,first_name,last_name\n"
	    "E1,Ada,Lovelace\n"
	    "E2,Grace,Hopper\n"
	    "\n"
	    " E1 ,Alan,Turing\n",
	    "hr.csv line 5 column 1 (employee_id): duplicate employee_id E1 (first "
	    "on line 2)");
}

static void test_many_rows_with_unique_ids(void **state)
{
	(void)state;
	/* Enough rows to grow the id set several times. */
	size_t cap = 64 + 5000 * 32;
	char *text = malloc(cap);
	assert_non_null(text);
	size_t len = (size_t)snprintf(text, cap, "employee_id,first_name,last_name\n");
	for (int i = 0; i < 5000; i++)
		len += (size_t)snprintf(text + len, cap - len, "E%d,F%d,L%d\n", i, i, i);
	csv_export_t *x = NULL;
	id_err_t err = {0};
	assert_int_equal(csv_reader_parse("big.csv", text, len, &x, &err), 0);
	size_t n = 0;
	const csv_row_t *rows = csv_export_rows(x, &n);
	assert_int_equal(n, 5000);
	assert_string_equal(rows[4999].employee_id, "E4999");
	assert_int_equal(rows[4999].line, 5001);
	csv_export_destroy(x);
	/* And a duplicate far down is still found. */
	len += (size_t)snprintf(text + len, cap - len, "E17,X,Y\n");
	assert_int_equal(csv_reader_parse("big.csv", text, len, &x, &err), ID_EPARSE);
	assert_string_equal(err.msg,
	                    "big.csv line 5002 column 1 (employee_id): duplicate "
	                    "employee_id E17 (first on line 19)");
	free(text);
}

static void test_wrong_field_count(void **state)
{
	(void)state;
	parse_fails("employee_id,first_name,last_name,title\n"
	            "E1,Ada,Lovelace,Countess\n"
	            "E2,Grace,Hopper\n",
	            "hr.csv line 3 column 4 (title): row has 3 fields, the header has 4");
	parse_fails("employee_id,first_name,last_name\n"
	            "E1,Ada,Lovelace,Countess\n",
	            "hr.csv line 2 column 4: row has 4 fields, the header has 3");
}

static void test_invalid_utf8(void **state)
{
	(void)state;
	/* Latin-1 "é" (0xe9) in what must be UTF-8. */
	parse_fails("employee_id,first_name,last_name\n"
	            "E1,Jos\xe9,Garcia\n",
	            "hr.csv line 2 column 2 (first_name): invalid UTF-8 at byte 4 of the "
	            "field");
	/* Overlong encoding of '/'. */
	parse_fails("employee_id,first_name,last_name\n"
	            "E1,Ada,\xc0\xaf\n",
	            "hr.csv line 2 column 3 (last_name): invalid UTF-8 at byte 1 of the "
	            "field");
	/* UTF-16 surrogate encoded in UTF-8. */
	parse_fails("employee_id,first_name,last_name\n"
	            "E1,Ada,x\xed\xa0\x80\n",
	            "hr.csv line 2 column 3 (last_name): invalid UTF-8 at byte 2 of the "
	            "field");
	/* Truncated sequence in the header. */
	parse_fails("employee_id,first_name,last_name\xe2\x82\n",
	            "hr.csv line 1 column 3: invalid UTF-8 at byte 10 of the field");
	const char nul[] = "employee_id,first_name,last_name\nE1,A\0da,Lovelace\n";
	parse_fails_n(nul, sizeof(nul) - 1,
	              "hr.csv line 2 column 2 (first_name): field contains a NUL byte");
}

static void test_unterminated_quote(void **state)
{
	(void)state;
	parse_fails(
	    "employee_id,first_name,last_name,title\n"
	    "E1,Ada,Lovelace,Countess\n"
	    "E2,Grace,Hopper,\"Rear Admiral\n"
	    "E3,Alan,Turing,Mathematician\n",
	    "hr.csv line 3 column 4 (title): unterminated quote: the quoted field "
	    "runs to the end of the file");
	/* The quoted field opens on the second line of a row. */
	parse_fails("employee_id,first_name,last_name,title\n"
	            "E1,\"Ada\nAugusta\",\"Love\nlace",
	            "hr.csv line 3 column 3 (last_name): unterminated quote: the quoted "
	            "field runs to the end of the file");
}

static void test_stray_quote(void **state)
{
	(void)state;
	parse_fails("employee_id,first_name,last_name,title\n"
	            "E1,Ada,Lovelace,Countess\n"
	            "E2,Grace,Hop\"per,Admiral\n",
	            "hr.csv line 3 column 3 (last_name): malformed quoted field: a quote "
	            "inside an unquoted field, or text after a closing quote");
	parse_fails("employee_id,first_name,last_name,title\n"
	            "E1,Ada,\"Love\"lace,Countess\n",
	            "hr.csv line 2 column 3 (last_name): malformed quoted field: a quote "
	            "inside an unquoted field, or text after a closing quote");
}

static void test_start_date(void **state)
{
	(void)state;
	csv_export_t *x = parse_ok("employee_id,first_name,last_name,start_date\n"
	                           "E1,Ada,Lovelace,2024-02-29\n"
	                           "E2,Grace,Hopper,\n");
	size_t n = 0;
	const csv_row_t *rows = csv_export_rows(x, &n);
	assert_string_equal(id_attrs_get(&rows[0].attrs, "start_date"), "2024-02-29");
	assert_false(id_attrs_has(&rows[1].attrs, "start_date"));
	csv_export_destroy(x);

	parse_fails(
	    "employee_id,first_name,start_date,last_name\n"
	    "E1,Ada,03/04/2021,Lovelace\n",
	    "hr.csv line 2 column 3 (start_date): \"03/04/2021\" is not a date in "
	    "YYYY-MM-DD form");
	parse_fails(
	    "employee_id,first_name,last_name,start_date\n"
	    "E1,Ada,Lovelace,2023-02-29\n",
	    "hr.csv line 2 column 4 (start_date): \"2023-02-29\" is not a date in "
	    "YYYY-MM-DD form");
	parse_fails(
	    "employee_id,first_name,last_name,start_date\n"
	    "E1,Ada,Lovelace,2023-13-01\n",
	    "hr.csv line 2 column 4 (start_date): \"2023-13-01\" is not a date in "
	    "YYYY-MM-DD form");
	parse_fails("employee_id,first_name,last_name,start_date\n"
	            "E1,Ada,Lovelace,2023-1-01\n",
	            "hr.csv line 2 column 4 (start_date): \"2023-1-01\" is not a date in "
	            "YYYY-MM-DD form");
}

static void test_first_error_in_file_order(void **state)
{
	(void)state;
	/* Line 3's problem is reported, not line 4's. */
	parse_fails("employee_id,first_name,last_name\n"
	            "E1,Ada,Lovelace\n"
	            "E2,,Hopper\n"
	            "E1,Alan,Turing\n",
	            "hr.csv line 3 column 2 (first_name): required field is empty");
}

static void test_read_file(void **state)
{
	(void)state;
	char path[] = "/tmp/idstream-csv-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "employee_id,first_name,last_name\nE1,Ada,Lovelace\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);

	csv_export_t *x = NULL;
	id_err_t err = {0};
	assert_int_equal(csv_reader_read_file(path, &x, &err), 0);
	assert_string_equal(csv_export_name(x), path);
	/* sha256sum of the same bytes. */
	assert_string_equal(
	    csv_export_sha256(x),
	    "2b832aa66b200553caeca1309904ac6eecccca1dbc1601967da0a5b1ed4c5799");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(csv_export_mtime_ms(x) / 1000, st.st_mtime);
	csv_export_destroy(x);

	/* Errors name the path. */
	assert_int_equal(truncate(path, strlen(text) - 9), 0); /* ends "E1,Ada," */
	assert_int_equal(csv_reader_read_file(path, &x, &err), ID_EPARSE);
	char want[256];
	snprintf(want, sizeof(want),
	         "%s line 2 column 3 (last_name): required field is empty", path);
	assert_string_equal(err.msg, want);
	unlink(path);

	assert_int_equal(csv_reader_read_file(path, &x, &err), ID_EIO);
	assert_null(x);
	snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", path);
	assert_string_equal(err.msg, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_rows_and_attributes),
	    cmocka_unit_test(test_bom_crlf_quotes_newlines_blank_lines),
	    cmocka_unit_test(test_no_trailing_newline_and_leading_blank_lines),
	    cmocka_unit_test(test_header_only_is_an_empty_export),
	    cmocka_unit_test(test_missing_header),
	    cmocka_unit_test(test_missing_required_column),
	    cmocka_unit_test(test_header_names),
	    cmocka_unit_test(test_empty_required_field),
	    cmocka_unit_test(test_duplicate_employee_id),
	    cmocka_unit_test(test_many_rows_with_unique_ids),
	    cmocka_unit_test(test_wrong_field_count),
	    cmocka_unit_test(test_invalid_utf8),
	    cmocka_unit_test(test_unterminated_quote),
	    cmocka_unit_test(test_stray_quote),
	    cmocka_unit_test(test_start_date),
	    cmocka_unit_test(test_first_error_in_file_order),
	    cmocka_unit_test(test_read_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
