/*
 * report.h — self-contained HTML pages (inline CSS, no scripts, no external
 * resources) for people: an employee's timeline (`idstream report`) and a
 * plan (`idstream plan --html`).  Every value taken from records is
 * HTML-escaped, so names such as `O'Brien <script>` show as text.
 *
 * Threading: none; each call writes one page to one stream.
 */
#ifndef IDSTREAM_REPORT_H
#define IDSTREAM_REPORT_H

#include <jansson.h>
#include <stdio.h>

#include "common/err.h"

/* Writes s to f with & < > " ' escaped; NULL writes nothing. */
void report_html_escape(FILE *f, const char *s);

/*
 * Writes a whole HTML page for plan, the document `idstream plan --json`
 * prints (summary counts, employees_changed diffs).  Returns 0, or -1 when
 * writing to f failed (ferror).  plan is borrowed.
 */
int report_plan_html(FILE *f, const json_t *plan);

/* report_plan_html() into the file at path (created or truncated).
 * 0, or ID_EIO with err naming the file. */
int report_plan_html_file(const char *path, const json_t *plan, id_err_t *err);

#endif
