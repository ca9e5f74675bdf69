/*
 * ascii_fold.c — UTF-8 decoding and Latin → ASCII folding (see ascii_fold.h).
 *
 * The two tables below give the folding of every code point in
 * U+00A0..U+024F and U+1E00..U+1EFF.  They were derived from the Unicode 14
 * NFKD decompositions (base letter kept, marks dropped) and, for letters
 * without a decomposition, from the character names ("LATIN SMALL LETTER D
 * WITH STROKE" → d), with the customary transliterations for ß, Æ, Œ, Þ, Ð,
 * Ø, Ł, ı and ĸ.  Entries are at most two characters; "" drops the code point.
 * Symbols, fractions and superscripts fold to "" on purpose: a name never
 * needs them and they would only leak digits into identifiers.
 *
 * Pure and reentrant: no state besides the constant tables.
 */
#include "processors/ascii_fold.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define FOLD_LATIN_FIRST 0x00A0u
#define FOLD_LATIN_END   0x0250u
#define FOLD_EXT_FIRST   0x1E00u
#define FOLD_EXT_END     0x1F00u

/* U+00A0..U+024F: Latin-1 Supplement, Latin Extended-A and -B. */
static const char fold_latin[FOLD_LATIN_END - FOLD_LATIN_FIRST][3] = {
    " ",  "",   "",   "",   "",   "",   "",   "",   /* 00A0 */
    "",   "",   "a",  "",   "",   "",   "",   "",   /* 00A8 */
    "",   "",   "",   "",   "",   "",   "",   "",   /* 00B0 */
    "",   "",   "o",  "",   "",   "",   "",   "",   /* 00B8 */
    "A",  "A",  "A",  "A",  "A",  "A",  "AE", "C",  /* 00C0 */
    "E",  "E",  "E",  "E",  "I",  "I",  "I",  "I",  /* 00C8 */
    "D",  "N",  "O",  "O",  "O",  "O",  "O",  "",   /* 00D0 */
    "O",  "U",  "U",  "U",  "U",  "Y",  "TH", "ss", /* 00D8 */
    "a",  "a",  "a",  "a",  "a",  "a",  "ae", "c",  /* 00E0 */
    "e",  "e",  "e",  "e",  "i",  "i",  "i",  "i",  /* 00E8 */
    "d",  "n",  "o",  "o",  "o",  "o",  "o",  "",   /* 00F0 */
    "o",  "u",  "u",  "u",  "u",  "y",  "th", "y",  /* 00F8 */
    "A",  "a",  "A",  "a",  "A",  "a",  "C",  "c",  /* 0100 */
    "C",  "c",  "C",  "c",  "C",  "c",  "D",  "d",  /* 0108 */
    "D",  "d",  "E",  "e",  "E",  "e",  "E",  "e",  /* 0110 */
    "E",  "e",  "E",  "e",  "G",  "g",  "G",  "g",  /* 0118 */
    "G",  "g",  "G",  "g",  "H",  "h",  "H",  "h",  /* 0120 */
    "I",  "i",  "I",  "i",  "I",  "i",  "I",  "i",  /* 0128 */
    "I",  "i",  "IJ", "ij", "J",  "j",  "K",  "k",  /* 0130 */
    "k",  "L",  "l",  "L",  "l",  "L",  "l",  "L",  /* 0138 */
    "l",  "L",  "l",  "N",  "n",  "N",  "n",  "N",  /* 0140 */
    "n",  "n",  "N",  "n",  "O",  "o",  "O",  "o",  /* 0148 */
    "O",  "o",  "OE", "oe", "R",  "r",  "R",  "r",  /* 0150 */
    "R",  "r",  "S",  "s",  "S",  "s",  "S",  "s",  /* 0158 */
    "S",  "s",  "T",  "t",  "T",  "t",  "T",  "t",  /* 0160 */
    "U",  "u",  "U",  "u",  "U",  "u",  "U",  "u",  /* 0168 */
    "U",  "u",  "U",  "u",  "W",  "w",  "Y",  "y",  /* 0170 */
    "Y",  "Z",  "z",  "Z",  "z",  "Z",  "z",  "s",  /* 0178 */
    "b",  "B",  "B",  "b",  "",   "",   "O",  "C",  /* 0180 */
    "c",  "D",  "D",  "D",  "d",  "d",  "E",  "E",  /* 0188 */
    "E",  "F",  "f",  "G",  "G",  "hv", "I",  "I",  /* 0190 */
    "K",  "k",  "l",  "l",  "M",  "N",  "n",  "O",  /* 0198 */
    "O",  "o",  "OI", "oi", "P",  "p",  "R",  "",   /* 01A0 */
    "",   "S",  "",   "t",  "T",  "t",  "T",  "U",  /* 01A8 */
    "u",  "U",  "V",  "Y",  "y",  "Z",  "z",  "Z",  /* 01B0 */
    "",   "",   "",   "",   "",   "",   "",   "w",  /* 01B8 */
    "",   "",   "",   "",   "DZ", "Dz", "dz", "LJ", /* 01C0 */
    "Lj", "lj", "NJ", "Nj", "nj", "A",  "a",  "I",  /* 01C8 */
    "i",  "O",  "o",  "U",  "u",  "U",  "u",  "U",  /* 01D0 */
    "u",  "U",  "u",  "U",  "u",  "e",  "A",  "a",  /* 01D8 */
    "A",  "a",  "AE", "ae", "G",  "g",  "G",  "g",  /* 01E0 */
    "K",  "k",  "O",  "o",  "O",  "o",  "Z",  "z",  /* 01E8 */
    "j",  "DZ", "Dz", "dz", "G",  "g",  "Hv", "W",  /* 01F0 */
    "N",  "n",  "A",  "a",  "AE", "ae", "O",  "o",  /* 01F8 */
    "A",  "a",  "A",  "a",  "E",  "e",  "E",  "e",  /* 0200 */
    "I",  "i",  "I",  "i",  "O",  "o",  "O",  "o",  /* 0208 */
    "R",  "r",  "R",  "r",  "U",  "u",  "U",  "u",  /* 0210 */
    "S",  "s",  "T",  "t",  "Y",  "y",  "H",  "h",  /* 0218 */
    "N",  "d",  "OU", "ou", "Z",  "z",  "A",  "a",  /* 0220 */
    "E",  "e",  "O",  "o",  "O",  "o",  "O",  "o",  /* 0228 */
    "O",  "o",  "Y",  "y",  "l",  "n",  "t",  "j",  /* 0230 */
    "db", "qp", "A",  "C",  "c",  "L",  "T",  "s",  /* 0238 */
    "z",  "",   "",   "B",  "U",  "V",  "E",  "e",  /* 0240 */
    "J",  "j",  "Q",  "q",  "R",  "r",  "Y",  "y",  /* 0248 */
};

/* U+1E00..U+1EFF: Latin Extended Additional (Vietnamese, Welsh, ...). */
static const char fold_ext[FOLD_EXT_END - FOLD_EXT_FIRST][3] = {
    "A", "a", "B",  "b",  "B", "b", "B",  "b", /* 1E00 */
    "C", "c", "D",  "d",  "D", "d", "D",  "d", /* 1E08 */
    "D", "d", "D",  "d",  "E", "e", "E",  "e", /* 1E10 */
    "E", "e", "E",  "e",  "E", "e", "F",  "f", /* 1E18 */
    "G", "g", "H",  "h",  "H", "h", "H",  "h", /* 1E20 */
    "H", "h", "H",  "h",  "I", "i", "I",  "i", /* 1E28 */
    "K", "k", "K",  "k",  "K", "k", "L",  "l", /* 1E30 */
    "L", "l", "L",  "l",  "L", "l", "M",  "m", /* 1E38 */
    "M", "m", "M",  "m",  "N", "n", "N",  "n", /* 1E40 */
    "N", "n", "N",  "n",  "O", "o", "O",  "o", /* 1E48 */
    "O", "o", "O",  "o",  "P", "p", "P",  "p", /* 1E50 */
    "R", "r", "R",  "r",  "R", "r", "R",  "r", /* 1E58 */
    "S", "s", "S",  "s",  "S", "s", "S",  "s", /* 1E60 */
    "S", "s", "T",  "t",  "T", "t", "T",  "t", /* 1E68 */
    "T", "t", "U",  "u",  "U", "u", "U",  "u", /* 1E70 */
    "U", "u", "U",  "u",  "V", "v", "V",  "v", /* 1E78 */
    "W", "w", "W",  "w",  "W", "w", "W",  "w", /* 1E80 */
    "W", "w", "X",  "x",  "X", "x", "Y",  "y", /* 1E88 */
    "Z", "z", "Z",  "z",  "Z", "z", "h",  "t", /* 1E90 */
    "w", "y", "a",  "s",  "s", "s", "SS", "d", /* 1E98 */
    "A", "a", "A",  "a",  "A", "a", "A",  "a", /* 1EA0 */
    "A", "a", "A",  "a",  "A", "a", "A",  "a", /* 1EA8 */
    "A", "a", "A",  "a",  "A", "a", "A",  "a", /* 1EB0 */
    "E", "e", "E",  "e",  "E", "e", "E",  "e", /* 1EB8 */
    "E", "e", "E",  "e",  "E", "e", "E",  "e", /* 1EC0 */
    "I", "i", "I",  "i",  "O", "o", "O",  "o", /* 1EC8 */
    "O", "o", "O",  "o",  "O", "o", "O",  "o", /* 1ED0 */
    "O", "o", "O",  "o",  "O", "o", "O",  "o", /* 1ED8 */
    "O", "o", "O",  "o",  "U", "u", "U",  "u", /* 1EE0 */
    "U", "u", "U",  "u",  "U", "u", "U",  "u", /* 1EE8 */
    "U", "u", "Y",  "y",  "Y", "y", "Y",  "y", /* 1EF0 */
    "Y", "y", "LL", "ll", "V", "v", "Y",  "y", /* 1EF8 */
};

int ascii_fold_utf8_next(const char *s, size_t len, size_t *pos, uint32_t *cp)
{
	const unsigned char *p = (const unsigned char *)s + *pos;
	size_t avail = len - *pos;
	uint32_t c = p[0];
	size_t n;
	uint32_t min;

	if (c < 0x80) {
		*cp = c;
		*pos += 1;
		return 0;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		min = 0x80;
		c &= 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		min = 0x800;
		c &= 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		min = 0x10000;
		c &= 0x07;
	} else {
		/* Continuation byte, C0/C1 (always overlong) or F5..FF. */
		return ID_EPARSE;
	}
	if (avail < n)
		return ID_EPARSE;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return ID_EPARSE;
		c = (c << 6) | (p[i] & 0x3F);
	}
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return ID_EPARSE;
	*cp = c;
	*pos += n;
	return 0;
}

int ascii_fold_utf8_check(const char *s, id_err_t *err)
{
	size_t len = strlen(s), pos = 0;
	uint32_t cp;
	while (pos < len) {
		if (ascii_fold_utf8_next(s, len, &pos, &cp) != 0)
			return id_err_set(err, ID_EPARSE, "invalid UTF-8 at byte %zu",
			                  pos);
	}
	return 0;
}

const char *ascii_fold_codepoint(uint32_t cp)
{
	/* One static "x\0" per ASCII byte, so ASCII needs no branch per caller. */
	static const char ascii[128][2] = {
#define A1_(n) {(char)(n), 0}
#define A8_(n)                                                                           \
	A1_(n), A1_(n + 1), A1_(n + 2), A1_(n + 3), A1_(n + 4), A1_(n + 5), A1_(n + 6),  \
	    A1_(n + 7)
	    A8_(0),  A8_(8),  A8_(16), A8_(24), A8_(32), A8_(40),  A8_(48),  A8_(56),
	    A8_(64), A8_(72), A8_(80), A8_(88), A8_(96), A8_(104), A8_(112), A8_(120),
#undef A8_
#undef A1_
	};

	if (cp < 0x80)
		return ascii[cp];
	if (cp >= FOLD_LATIN_FIRST && cp < FOLD_LATIN_END)
		return fold_latin[cp - FOLD_LATIN_FIRST];
	if (cp >= FOLD_EXT_FIRST && cp < FOLD_EXT_END)
		return fold_ext[cp - FOLD_EXT_FIRST];
	switch (cp) {
	case 0x02BB: /* ʻ okina, as in Hawaiʻi */
	case 0x02BC: /* ʼ modifier letter apostrophe */
	case 0x2018:
	case 0x2019:
	case 0x201B:
	case 0x2032:
		return "'";
	case 0x201C:
	case 0x201D:
	case 0x201F:
	case 0x2033:
		return "\"";
	case 0x2010:
	case 0x2011:
	case 0x2012:
	case 0x2013:
	case 0x2014:
	case 0x2015:
	case 0x2212:
		return "-";
	case 0x2000:
	case 0x2001:
	case 0x2002:
	case 0x2003:
	case 0x2004:
	case 0x2005:
	case 0x2006:
	case 0x2007:
	case 0x2008:
	case 0x2009:
	case 0x200A:
	case 0x202F:
	case 0x205F:
	case 0x3000:
		return " ";
	default:
		/* Combining marks (U+0300..U+036F), zero-width characters and every
		 * non-Latin script are dropped. */
		return "";
	}
}

typedef enum { FOLD_PLAIN, FOLD_ALNUM, FOLD_SLUG } fold_mode_t;

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Appends c keeping room for the terminating NUL. */
static int put(id_buf_t *out, char c)
{
	if (out->len + 2 > out->cap && id_buf_reserve(out, 2) != 0)
		return ID_ENOMEM;
	out->data[out->len++] = (unsigned char)c;
	return 0;
}

static int fold_append(id_buf_t *out, const char *s, fold_mode_t mode, id_err_t *err)
{
	size_t len = strlen(s), pos = 0, start = out->len;
	bool pending_sep = false;
	int rc;

	/* Folding rarely grows a string (ASCII stays one byte, a 2-byte letter
	 * becomes at most two), so one reservation usually covers it; put()
	 * still checks, because the tables are not bound to that rule. */
	if ((rc = id_buf_reserve(out, len + 1)) != 0)
		return id_err_set(err, rc, "out of memory folding %zu bytes", len);
	while (pos < len) {
		uint32_t cp;
		if (ascii_fold_utf8_next(s, len, &pos, &cp) != 0) {
			rc = id_err_set(err, ID_EPARSE, "invalid UTF-8 at byte %zu", pos);
			goto fail;
		}
		for (const char *f = ascii_fold_codepoint(cp); *f != '\0'; f++) {
			char c = *f;
			if (mode == FOLD_PLAIN) {
				if ((rc = put(out, c)) != 0)
					goto fail;
				continue;
			}
			c = lower(c);
			if (!is_lower_alnum(c)) {
				pending_sep = true;
				continue;
			}
			if (mode == FOLD_SLUG && pending_sep && out->len > start &&
			    (rc = put(out, '-')) != 0)
				goto fail;
			pending_sep = false;
			if ((rc = put(out, c)) != 0)
				goto fail;
		}
	}
	out->data[out->len] = '\0';
	return 0;
fail:
	out->len = start;
	out->data[out->len] = '\0';
	if (rc == ID_ENOMEM)
		id_err_set(err, rc, "out of memory folding %zu bytes", len);
	return rc;
}

int ascii_fold_append(id_buf_t *out, const char *s, id_err_t *err)
{
	return fold_append(out, s, FOLD_PLAIN, err);
}

int ascii_fold_alnum_append(id_buf_t *out, const char *s, id_err_t *err)
{
	return fold_append(out, s, FOLD_ALNUM, err);
}

int ascii_fold_slug_append(id_buf_t *out, const char *s, id_err_t *err)
{
	return fold_append(out, s, FOLD_SLUG, err);
}

char *ascii_fold_dup(const char *s, id_err_t *err)
{
	id_buf_t b = ID_BUF_INIT;
	if (fold_append(&b, s, FOLD_PLAIN, err) != 0) {
		id_buf_fini(&b);
		return NULL;
	}
	return (char *)b.data; /* NUL-terminated; ownership passes to the caller */
}

void ascii_fold_lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = lower(*s);
}
