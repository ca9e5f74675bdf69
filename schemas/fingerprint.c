/*
 * fingerprint.c — Parsing Canonical Form and CRC-64-AVRO (see fingerprint.h).
 *
 * The PCF is built by walking the schema JSON (parsed with jansson, which
 * already turns \uXXXX escapes into UTF-8 as the [STRINGS] rule wants) and
 * appending to a buffer.  Names, field names and symbols are checked against
 * the Avro name grammar, so they can be written without JSON escaping — the
 * same shortcut the Java reference implementation takes.  Output must match
 * Java's SchemaNormalization byte for byte, since other languages' writers
 * put that fingerprint on the wire: in particular a logical type on a
 * primitive collapses to the bare primitive ("long").
 *
 * Thread safety: no shared state.
 */
#include "schemas/fingerprint.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

uint64_t codec_fingerprint(const char *data, size_t len)
{
	/*
	 * Bitwise form of the table-driven Rabin fingerprint of the Avro spec:
	 * only schema texts are fingerprinted (a few per process), so a
	 * 256-entry table would buy nothing.
	 */
	uint64_t fp = CODEC_FP_EMPTY;
	for (size_t i = 0; i < len; i++) {
		fp ^= (unsigned char)data[i];
		for (int j = 0; j < 8; j++)
			fp = (fp >> 1) ^ (CODEC_FP_EMPTY & (0 - (fp & 1)));
	}
	return fp;
}

typedef struct pcf {
	id_buf_t out;
	char **names; /* full names of the named types defined so far */
	size_t nnames;
	int rc; /* first error, sticky */
	id_err_t *err;
} pcf_t;

static const char *const pcf_primitives[] = {"null",  "boolean", "int",   "long",
                                             "float", "double",  "bytes", "string"};

static bool pcf_is_primitive(const char *s)
{
	for (size_t i = 0; i < sizeof(pcf_primitives) / sizeof(*pcf_primitives); i++)
		if (strcmp(s, pcf_primitives[i]) == 0)
			return true;
	return false;
}

/* [A-Za-z_][A-Za-z0-9_]*, and with dotted, several of them joined by '.'. */
static bool pcf_name_ok(const char *s, bool dotted)
{
	bool at_start = true;
	for (; *s; s++) {
		char ch = *s;
		bool alpha =
		    (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
		bool digit = ch >= '0' && ch <= '9';
		if (ch == '.' && dotted && !at_start) {
			at_start = true;
			continue;
		}
		if (!(alpha || (digit && !at_start)))
			return false;
		at_start = false;
	}
	return !at_start;
}

static void pcf_put(pcf_t *st, const char *s)
{
	if (st->rc == 0 && id_buf_append_str(&st->out, s) != 0)
		st->rc = id_err_set(st->err, ID_ENOMEM, "canonical form: out of memory");
}

/* Appends "s" — s is a checked Avro name or a primitive, so needs no escaping. */
static void pcf_put_quoted(pcf_t *st, const char *s)
{
	pcf_put(st, "\"");
	pcf_put(st, s);
	pcf_put(st, "\"");
}

static int pcf_fail(pcf_t *st, const char *what, const char *name)
{
	if (st->rc == 0)
		st->rc = id_err_set(st->err, ID_ESCHEMA, "schema: %s%s%s%s", what,
		                    name ? " '" : "", name ? name : "", name ? "'" : "");
	return st->rc;
}

static bool pcf_defined(const pcf_t *st, const char *fullname)
{
	for (size_t i = 0; i < st->nnames; i++)
		if (strcmp(st->names[i], fullname) == 0)
			return true;
	return false;
}

/* Writes a reference to an already defined named type. */
static int pcf_reference(pcf_t *st, const char *name, const char *ns)
{
	char *full = NULL;
	if (strchr(name, '.') == NULL && ns[0] != '\0') {
		size_t n = strlen(ns) + 1 + strlen(name) + 1;
		if ((full = malloc(n)) == NULL)
			return st->rc = id_err_set(st->err, ID_ENOMEM,
			                           "canonical form: out of memory");
		snprintf(full, n, "%s.%s", ns, name);
		if (pcf_defined(st, full)) {
			pcf_put_quoted(st, full);
			free(full);
			return st->rc;
		}
		free(full);
	}
	/* A dotted name, or a name in the null namespace. */
	if (!pcf_defined(st, name))
		return pcf_fail(st, "unknown type name", name);
	pcf_put_quoted(st, name);
	return st->rc;
}

static int pcf_schema(pcf_t *st, const json_t *s, const char *ns);

static int pcf_fields(pcf_t *st, const json_t *fields, const char *ns, const char *owner)
{
	if (!json_is_array(fields))
		return pcf_fail(st, "no fields array in record", owner);
	pcf_put(st, ",\"fields\":[");
	for (size_t i = 0; i < json_array_size(fields) && st->rc == 0; i++) {
		const json_t *f = json_array_get(fields, i);
		const char *fname = json_string_value(json_object_get(f, "name"));
		if (!json_is_object(f) || fname == NULL || !pcf_name_ok(fname, false))
			return pcf_fail(st, "field without a valid name in record",
			                owner);
		const json_t *ft = json_object_get(f, "type");
		if (ft == NULL)
			return pcf_fail(st, "no type for field", fname);
		pcf_put(st, i ? ",{\"name\":" : "{\"name\":");
		pcf_put_quoted(st, fname);
		pcf_put(st, ",\"type\":");
		if (pcf_schema(st, ft, ns) != 0)
			return st->rc;
		pcf_put(st, "}");
	}
	pcf_put(st, "]");
	return st->rc;
}

static int pcf_symbols(pcf_t *st, const json_t *symbols, const char *owner)
{
	if (!json_is_array(symbols))
		return pcf_fail(st, "no symbols array in enum", owner);
	pcf_put(st, ",\"symbols\":[");
	for (size_t i = 0; i < json_array_size(symbols); i++) {
		const char *sym = json_string_value(json_array_get(symbols, i));
		if (sym == NULL || !pcf_name_ok(sym, false))
			return pcf_fail(st, "invalid symbol in enum", owner);
		if (i)
			pcf_put(st, ",");
		pcf_put_quoted(st, sym);
	}
	pcf_put(st, "]");
	return st->rc;
}

/*
 * A record, enum or fixed: resolves its full name (a dotted name wins over
 * "namespace", which wins over the enclosing namespace), records it as
 * defined before its body so recursive references resolve, and writes it.
 */
static int pcf_named(pcf_t *st, const json_t *s, const char *type, const char *ns)
{
	const char *name = json_string_value(json_object_get(s, "name"));
	const json_t *nsj = json_object_get(s, "namespace");
	char *full = NULL, *space = NULL;
	if (name == NULL)
		return pcf_fail(st, "a named type has no name, type", type);
	if (nsj != NULL && !json_is_null(nsj) && !json_is_string(nsj))
		return pcf_fail(st, "namespace is not a string in type", name);
	const char *dot = strrchr(name, '.');
	if (dot != NULL) {
		full = strdup(name);
		space = strndup(name, (size_t)(dot - name));
	} else {
		const char *base = json_is_string(nsj) ? json_string_value(nsj) : ns;
		size_t n = strlen(base) + 1 + strlen(name) + 1;
		full = malloc(n);
		space = strdup(base);
		if (full != NULL)
			snprintf(full, n, "%s%s%s", base, base[0] ? "." : "", name);
	}
	if (full == NULL || space == NULL) {
		st->rc = id_err_set(st->err, ID_ENOMEM, "canonical form: out of memory");
		goto out;
	}
	if (!pcf_name_ok(full, true) || pcf_is_primitive(full)) {
		pcf_fail(st, "invalid name", full);
		goto out;
	}
	if (pcf_defined(st, full)) {
		pcf_fail(st, "defined twice: type", full);
		goto out;
	}
	char **n = realloc(st->names, (st->nnames + 1) * sizeof(*n));
	if (n == NULL) {
		st->rc = id_err_set(st->err, ID_ENOMEM, "canonical form: out of memory");
		goto out;
	}
	st->names = n;
	st->names[st->nnames++] = full;
	pcf_put(st, "{\"name\":");
	pcf_put_quoted(st, full);
	full = NULL; /* owned by st->names now */
	pcf_put(st, ",\"type\":");
	pcf_put_quoted(st, type);
	if (strcmp(type, "enum") == 0) {
		pcf_symbols(st, json_object_get(s, "symbols"), name);
	} else if (strcmp(type, "fixed") == 0) {
		const json_t *size = json_object_get(s, "size");
		char num[32];
		if (!json_is_integer(size) || json_integer_value(size) < 0) {
			pcf_fail(st, "no valid size in fixed", name);
			goto out;
		}
		snprintf(num, sizeof(num), ",\"size\":%" JSON_INTEGER_FORMAT,
		         json_integer_value(size));
		pcf_put(st, num);
	} else {
		pcf_fields(st, json_object_get(s, "fields"), space, name);
	}
	pcf_put(st, "}");
out:
	free(full);
	free(space);
	return st->rc;
}

static int pcf_schema(pcf_t *st, const json_t *s, const char *ns)
{
	if (st->rc != 0)
		return st->rc;
	if (json_is_string(s)) {
		const char *name = json_string_value(s);
		if (pcf_is_primitive(name)) {
			pcf_put_quoted(st, name);
			return st->rc;
		}
		return pcf_reference(st, name, ns);
	}
	if (json_is_array(s)) {
		pcf_put(st, "[");
		for (size_t i = 0; i < json_array_size(s) && st->rc == 0; i++) {
			if (i)
				pcf_put(st, ",");
			pcf_schema(st, json_array_get(s, i), ns);
		}
		pcf_put(st, "]");
		return st->rc;
	}
	if (!json_is_object(s))
		return pcf_fail(st, "a schema must be a string, array or object", NULL);
	const char *type = json_string_value(json_object_get(s, "type"));
	if (type == NULL)
		return pcf_fail(st, "object without a string \"type\"", NULL);
	/* [PRIMITIVES]+[STRIP]: {"type":"long","logicalType":...} is "long". */
	if (pcf_is_primitive(type)) {
		pcf_put_quoted(st, type);
		return st->rc;
	}
	if (strcmp(type, "record") == 0 || strcmp(type, "error") == 0 ||
	    strcmp(type, "enum") == 0 || strcmp(type, "fixed") == 0)
		return pcf_named(st, s, type, ns);
	if (strcmp(type, "array") == 0 || strcmp(type, "map") == 0) {
		bool array = type[0] == 'a';
		pcf_put(st, array ? "{\"type\":\"array\",\"items\":"
		                  : "{\"type\":\"map\",\"values\":");
		const json_t *sub = json_object_get(s, array ? "items" : "values");
		if (sub == NULL)
			return pcf_fail(
			    st, array ? "array without items" : "map without values",
			    NULL);
		if (pcf_schema(st, sub, ns) != 0)
			return st->rc;
		pcf_put(st, "}");
		return st->rc;
	}
	/* {"type":"Name"} refers to a named type like the bare string does. */
	return pcf_reference(st, type, ns);
}

int codec_canonical_form(const char *json, size_t len, char **out, id_err_t *err)
{
	pcf_t st = {ID_BUF_INIT, NULL, 0, 0, err};
	json_error_t jerr;
	*out = NULL;
	/* Duplicate keys would make "which type/name counts" ambiguous. */
	json_t *root =
	    json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (root == NULL) {
		st.rc = id_err_set(err, ID_EPARSE, "schema JSON line %d column %d: %s",
		                   jerr.line, jerr.column, jerr.text);
		goto out;
	}
	if (pcf_schema(&st, root, "") != 0)
		goto out;
	if (id_buf_append_u8(&st.out, 0) != 0) {
		st.rc = id_err_set(err, ID_ENOMEM, "canonical form: out of memory");
		goto out;
	}
	*out = (char *)st.out.data;
	st.out.data = NULL;
out:
	for (size_t i = 0; i < st.nnames; i++)
		free(st.names[i]);
	free(st.names);
	id_buf_fini(&st.out);
	json_decref(root);
	return st.rc;
}
