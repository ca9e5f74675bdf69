/*
 * fuzz_csv.c — libFuzzer target: the HR export reader (ingest/csv_reader.h)
 * on arbitrary bytes.  It must accept or refuse with an error naming the
 * place, never crash or leak; an accepted export has an id in every row.
 * Built and run by `make fuzz`.
 */
#include <stdint.h>
#include <stdlib.h>

#include "ingest/csv_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	csv_export_t *x = NULL;
	id_err_t err = {0};
	if (csv_reader_parse("fuzz.csv", data, size, &x, &err) == 0) {
		size_t n = 0;
		const csv_row_t *rows = csv_export_rows(x, &n);
		for (size_t i = 0; i < n; i++)
			if (rows[i].employee_id == NULL || rows[i].employee_id[0] == '\0')
				abort();
	} else if (x != NULL || err.msg[0] == '\0') {
		abort(); /* refused without a message, or with a half export */
	}
	csv_export_destroy(x);
	return 0;
}
