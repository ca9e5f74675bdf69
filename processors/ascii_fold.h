/*
 * ascii_fold.h — UTF-8 → ASCII folding of Latin letters, and the string
 * helpers the mapping builds identifiers from (lower-case, [a-z0-9] only,
 * slug).
 *
 * Folding maps every Latin letter of Latin-1 Supplement, Latin Extended-A,
 * Latin Extended-B and Latin Extended Additional to its ASCII base letters
 * (é→e, Å→A, ø→o, ł→l, đ→d, ß→ss, æ→ae, Æ→AE, œ→oe, þ→th, ẞ→SS), drops
 * combining marks (so decomposed "e\u0301" folds like "é"), maps typographic
 * apostrophes/quotes/dashes and no-break spaces to their ASCII forms, and
 * drops every other non-ASCII code point (Greek, Cyrillic, CJK, symbols).
 * ASCII passes through unchanged.
 *
 * Invalid UTF-8 (stray continuation bytes, truncated or overlong sequences,
 * surrogates, code points above U+10FFFF) is refused with ID_EPARSE naming
 * the byte offset — never guessed at — because an identifier silently built
 * from garbage would be worse than a loud error.  On error nothing is
 * appended.
 *
 * All functions are pure and reentrant; the tables are constant.
 */
#ifndef IDSTREAM_ASCII_FOLD_H
#define IDSTREAM_ASCII_FOLD_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/*
 * Decodes the code point starting at s[*pos] (s is len bytes) into *cp and
 * advances *pos.  Returns 0, or ID_EPARSE for an invalid sequence (*pos is
 * left at its start).  The caller stops when *pos == len.
 */
int ascii_fold_utf8_next(const char *s, size_t len, size_t *pos, uint32_t *cp);

/* Returns 0 when s is valid UTF-8, else ID_EPARSE naming the byte offset. */
int ascii_fold_utf8_check(const char *s, id_err_t *err);

/*
 * The ASCII folding of one code point: a borrowed constant string of 0–2
 * characters ("" when the code point is dropped).
 */
const char *ascii_fold_codepoint(uint32_t cp);

/*
 * Each *_append function appends to out and leaves out->data NUL-terminated
 * (out->len does not count the NUL), even when nothing was appended.
 * Errors: ID_EPARSE (invalid UTF-8; out unchanged) or ID_ENOMEM.
 */

/* Plain folding: "Øyvind Ås-Ødegård" → "Oyvind As-Odegard". */
int ascii_fold_append(id_buf_t *out, const char *s, id_err_t *err);
/* Folding, lower-cased, keeping only [a-z0-9]: "O'Brien-Ødegård" → "obrienodegard". */
int ascii_fold_alnum_append(id_buf_t *out, const char *s, id_err_t *err);
/*
 * Slug: folding, lower-cased, every run of characters outside [a-z0-9]
 * becomes one '-', none leading or trailing: "R&D / Øst" → "r-d-ost".
 * May append nothing (a value with no Latin letters or digits).
 */
int ascii_fold_slug_append(id_buf_t *out, const char *s, id_err_t *err);

/*
 * Plain folding into a new string.  Ownership: caller frees the result with
 * free().  Returns NULL on error (err says which).
 */
char *ascii_fold_dup(const char *s, id_err_t *err);

/* Lower-cases ASCII A–Z in place; other bytes (including UTF-8) unchanged. */
void ascii_fold_lower(char *s);

#endif
