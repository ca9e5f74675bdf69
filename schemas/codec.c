/*
 * codec.c — single-object Avro encoding of the model records (see codec.h).
 *
 * Decoding is two passes over the body.  First our own validator walks the
 * bytes against the *writer* schema and proves they are a complete,
 * well-formed record: every length fits in what is left, every union and
 * enum index is in range, strings are UTF-8 without NUL, nothing trails.
 * Only then does avro-c read them.  avro-c trusts its input (it mallocs
 * whatever length a string claims and has no notion of trailing bytes), so
 * the validator is what makes decoding safe on arbitrary bytes; it is also
 * what names the field in an error.
 *
 * The avro-c values are created once per codec and reset for every record,
 * and a record kind's fields are looked up by name once, in codec_create(),
 * where the schema is also checked against model.h.
 *
 * Thread safety: a codec_t belongs to one thread; the tables are constant.
 */
#include "schemas/codec.h"

#include <avro.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- Known writer schemas ------------------------------------------------ */

typedef struct codec_writer_def {
	codec_kind_t kind;
	int version;
	const char *file; /* embedded schema name: file name without ".avsc" */
} codec_writer_def_t;

/*
 * Every schema that has written payloads we may still have to read.  Rows are
 * never removed: hr.events keeps its payloads forever.  The highest version
 * of a kind is what we write and the reader schema older writers are
 * resolved into (avro-c's resolved writer, matched by short record name —
 * keep the names; avro-c ignores aliases).
 *
 * To introduce v2 of a record: copy the v1 text to schemas/<file>_v1.avsc and
 * point its row here at "<file>_v1", edit schemas/<file>.avsc, add a row
 * {kind, 2, "<file>"}.  avro-c's resolved writer does NOT apply the reader
 * schema's defaults: a field an older writer lacks is left in its reset state
 * (empty string, 0, union without a branch).  The dec_* helpers below map an
 * unset union to NULL, which is the default of every optional field; any
 * other default a v2 field gets must be filled in codec_decode_*() when the
 * writer's version is older.
 */
static const codec_writer_def_t codec_writer_defs[] = {
    {CODEC_EMPLOYEE_EVENT, 1, "employee_event"},
    {CODEC_DESIRED_IDENTITY, 1, "desired_identity_v1"},
    {CODEC_DESIRED_IDENTITY, 2, "desired_identity_v2"}, /* + PRESTART */
    {CODEC_DESIRED_IDENTITY, 3, "desired_identity"},    /* + targets */
    {CODEC_SINK_RESULT, 1, "sink_result"},
    {CODEC_NAME_CLAIM, 1, "name_claim"},
};
#define CODEC_NWRITERS (sizeof(codec_writer_defs) / sizeof(*codec_writer_defs))

static const char *const codec_kind_names[CODEC_KIND_COUNT] = {
    "EmployeeEvent", "DesiredIdentity", "SinkResult", "NameClaim"};

const char *codec_kind_name(codec_kind_t kind)
{
	return (unsigned)kind < CODEC_KIND_COUNT ? codec_kind_names[kind] : "UNKNOWN";
}

/* --- What model.h expects of each schema --------------------------------- */

typedef enum {
	FT_STRING,
	FT_OPT_STRING, /* ["null","string"] */
	FT_LONG,
	FT_ENUM,
	FT_MAP_STRING,
	FT_MAP_OPT_STRING,
	FT_ARRAY_STRING,
	FT_ARRAY_RECORD,
	FT_BOOLEAN,
	FT_ARRAY_RECORD2, /* an array of records bound on its own (targets) */
} codec_ftype_t;

typedef struct codec_field {
	const char *name;
	codec_ftype_t type;
	const char *(*symbol)(int i); /* FT_ENUM: the model's names, in order */
	int nsymbols;
} codec_field_t;

static const char *ev_type_sym(int i)
{
	return employee_event_type_name((employee_event_type_t)i);
}
static const char *lc_state_sym(int i)
{
	return lifecycle_state_name((lifecycle_state_t)i);
}
static const char *outcome_sym(int i)
{
	return sink_outcome_name((sink_outcome_t)i);
}
static const char *claim_kind_sym(int i)
{
	return name_claim_kind_name((name_claim_kind_t)i);
}

enum {
	EVF_EVENT_ID,
	EVF_SOURCE,
	EVF_SOURCE_EVENT_ID,
	EVF_EMPLOYEE_ID,
	EVF_TYPE,
	EVF_OCCURRED_AT,
	EVF_EFFECTIVE_AT,
	EVF_ATTRIBUTES,
	EVF_ACTOR,
	EVF_REASON,
	EVF_COUNT
};
static const codec_field_t ev_fields[EVF_COUNT] = {
    {"event_id", FT_STRING, NULL, 0},
    {"source", FT_STRING, NULL, 0},
    {"source_event_id", FT_STRING, NULL, 0},
    {"employee_id", FT_STRING, NULL, 0},
    {"type", FT_ENUM, ev_type_sym, EV_TYPE_COUNT},
    {"occurred_at", FT_LONG, NULL, 0},
    {"effective_at", FT_LONG, NULL, 0},
    {"attributes", FT_MAP_OPT_STRING, NULL, 0},
    {"actor", FT_OPT_STRING, NULL, 0},
    {"reason", FT_OPT_STRING, NULL, 0},
};

enum {
	DIF_EMPLOYEE_ID,
	DIF_VERSION,
	DIF_STATE,
	DIF_ATTRIBUTES,
	DIF_GROUPS,
	DIF_CONTAINER,
	DIF_MANAGER_ID,
	DIF_POLICY_VERSION,
	DIF_CAUSE_EVENT_ID,
	DIF_EFFECTIVE_AT,
	DIF_CAUSES,
	DIF_TARGETS,
	DIF_COUNT
};
static const codec_field_t di_fields[DIF_COUNT] = {
    {"employee_id", FT_STRING, NULL, 0},
    {"version", FT_LONG, NULL, 0},
    {"state", FT_ENUM, lc_state_sym, LC_STATE_COUNT},
    {"attributes", FT_MAP_STRING, NULL, 0},
    {"groups", FT_ARRAY_STRING, NULL, 0},
    {"container", FT_STRING, NULL, 0},
    {"manager_id", FT_OPT_STRING, NULL, 0},
    {"policy_version", FT_STRING, NULL, 0},
    {"cause_event_id", FT_STRING, NULL, 0},
    {"effective_at", FT_LONG, NULL, 0},
    {"causes", FT_ARRAY_RECORD, NULL, 0},
    {"targets", FT_ARRAY_RECORD2, NULL, 0},
};

enum { TSF_NAME, TSF_IN_SCOPE, TSF_ATTRIBUTES, TSF_GROUPS, TSF_CONTAINER, TSF_COUNT };
static const codec_field_t ts_fields[TSF_COUNT] = {
    {"name", FT_STRING, NULL, 0},           {"in_scope", FT_BOOLEAN, NULL, 0},
    {"attributes", FT_MAP_STRING, NULL, 0}, {"groups", FT_ARRAY_STRING, NULL, 0},
    {"container", FT_STRING, NULL, 0},
};

enum { ACF_ATTRIBUTE, ACF_EVENT_ID, ACF_RULE, ACF_COUNT };
static const codec_field_t ac_fields[ACF_COUNT] = {
    {"attribute", FT_STRING, NULL, 0},
    {"event_id", FT_STRING, NULL, 0},
    {"rule", FT_STRING, NULL, 0},
};

enum {
	SRF_TARGET,
	SRF_EMPLOYEE_ID,
	SRF_DESIRED_VERSION,
	SRF_OUTCOME,
	SRF_OPERATIONS,
	SRF_ERROR,
	SRF_AT,
	SRF_COUNT
};
static const codec_field_t sr_fields[SRF_COUNT] = {
    {"target", FT_STRING, NULL, 0},
    {"employee_id", FT_STRING, NULL, 0},
    {"desired_version", FT_LONG, NULL, 0},
    {"outcome", FT_ENUM, outcome_sym, SINK_OUTCOME_COUNT},
    {"operations", FT_ARRAY_RECORD, NULL, 0},
    {"error", FT_OPT_STRING, NULL, 0},
    {"at", FT_LONG, NULL, 0},
};

enum { SOF_OP, SOF_ATTRIBUTE, SOF_OLD_VALUE, SOF_NEW_VALUE, SOF_COUNT };
static const codec_field_t so_fields[SOF_COUNT] = {
    {"op", FT_STRING, NULL, 0},
    {"attribute", FT_STRING, NULL, 0},
    {"old_value", FT_OPT_STRING, NULL, 0},
    {"new_value", FT_OPT_STRING, NULL, 0},
};

enum {
	NCF_CLAIM_ID,
	NCF_KIND,
	NCF_NAMESPACE,
	NCF_VALUE,
	NCF_EMPLOYEE_ID,
	NCF_CLAIMED_AT,
	NCF_QUARANTINE_UNTIL,
	NCF_SOURCE_EVENT_ID,
	NCF_COUNT
};
static const codec_field_t nc_fields[NCF_COUNT] = {
    {"claim_id", FT_STRING, NULL, 0},
    {"kind", FT_ENUM, claim_kind_sym, NAME_CLAIM_KIND_COUNT},
    {"namespace", FT_STRING, NULL, 0},
    {"value", FT_STRING, NULL, 0},
    {"employee_id", FT_STRING, NULL, 0},
    {"claimed_at", FT_LONG, NULL, 0},
    {"quarantine_until", FT_LONG, NULL, 0},
    {"source_event_id", FT_STRING, NULL, 0},
};

#define CODEC_MAX_FIELDS 16
_Static_assert(EVF_COUNT <= CODEC_MAX_FIELDS && DIF_COUNT <= CODEC_MAX_FIELDS &&
                   SRF_COUNT <= CODEC_MAX_FIELDS && ACF_COUNT <= CODEC_MAX_FIELDS &&
                   SOF_COUNT <= CODEC_MAX_FIELDS && NCF_COUNT <= CODEC_MAX_FIELDS,
               "raise CODEC_MAX_FIELDS");
/* Branch numbers of ["null","string"], checked in codec_create(). */
#define BRANCH_NULL   0
#define BRANCH_STRING 1

/* --- The codec ------------------------------------------------------------ */

typedef struct codec_writer {
	const codec_writer_def_t *def;
	avro_schema_t schema;
	char *canonical; /* PCF of the schema text */
	uint64_t fp;
	/* Only for writers older than the reader of their kind. */
	avro_value_iface_t *resolved_iface;
	avro_value_t resolved;
	bool has_resolved;
	/* Or decoded with its own schema (see codec_reader_init()). */
	avro_value_iface_t *own_iface;
	avro_value_t own;
	bool has_own;
} codec_writer_t;

typedef struct codec_reader {
	codec_writer_t *current; /* newest writer of the kind: what we write */
	avro_value_iface_t *iface;
	avro_value_t value; /* reused for every record of the kind */
	bool has_value;
	int idx[CODEC_MAX_FIELDS]; /* model field → index in the schema */
	int sub[CODEC_MAX_FIELDS]; /* same, for AttrCause / SinkOp */
	/* Schema position → model field, for the direct fast paths; fast is
	 * false when the schema has fields model.h does not know. */
	int order[CODEC_MAX_FIELDS];
	int suborder[CODEC_MAX_FIELDS];
	/* DesiredIdentity's TargetIdentity items (v3): index and schema order. */
	int tsub[CODEC_MAX_FIELDS];
	int tsorder[CODEC_MAX_FIELDS];
	int nfields, nsub;
	bool fast;
} codec_reader_t;

struct codec {
	codec_writer_t writers[CODEC_NWRITERS];
	codec_reader_t readers[CODEC_KIND_COUNT];
	avro_reader_t in;
	avro_writer_t out;
};

static const struct id_avsc_file *codec_avsc_find(const char *name)
{
	for (size_t i = 0; i < id_avsc_count; i++)
		if (strcmp(id_avsc_files[i].name, name) == 0)
			return &id_avsc_files[i];
	return NULL;
}

static int codec_check_opt_string(avro_schema_t s)
{
	return avro_typeof(s) == AVRO_UNION && avro_schema_union_size(s) == 2 &&
	       is_avro_null(avro_schema_union_branch(s, BRANCH_NULL)) &&
	       is_avro_string(avro_schema_union_branch(s, BRANCH_STRING));
}

/*
 * Finds each expected field of record schema rec by name, stores its index
 * in idx[], and checks its type — so a .avsc edit that the structs do not
 * follow fails here, at start-up.
 */
static int codec_bind(avro_schema_t rec, const char *where, const codec_field_t *spec,
                      int n, int *idx, const codec_field_t *sub, int nsub, int *subidx,
                      id_err_t *err)
{
	if (!is_avro_record(rec))
		return id_err_set(err, ID_ESCHEMA, "schema %s: not a record", where);
	for (int i = 0; i < n; i++) {
		const codec_field_t *f = &spec[i];
		int at = avro_schema_record_field_get_index(rec, f->name);
		if (at < 0)
			return id_err_set(err, ID_ESCHEMA, "schema %s: no field %s",
			                  where, f->name);
		idx[i] = at;
		avro_schema_t t = avro_schema_record_field_get_by_index(rec, at);
		bool ok = false;
		switch (f->type) {
		case FT_STRING:
			ok = is_avro_string(t);
			break;
		case FT_OPT_STRING:
			ok = codec_check_opt_string(t);
			break;
		case FT_LONG:
			ok = is_avro_int64(t);
			break;
		case FT_ENUM:
			ok = is_avro_enum(t) &&
			     avro_schema_enum_number_of_symbols(t) == f->nsymbols;
			for (int k = 0; ok && k < f->nsymbols; k++)
				ok =
				    strcmp(avro_schema_enum_get(t, k), f->symbol(k)) == 0;
			break;
		case FT_MAP_STRING:
			ok = is_avro_map(t) && is_avro_string(avro_schema_map_values(t));
			break;
		case FT_MAP_OPT_STRING:
			ok = is_avro_map(t) &&
			     codec_check_opt_string(avro_schema_map_values(t));
			break;
		case FT_ARRAY_STRING:
			ok = is_avro_array(t) &&
			     is_avro_string(avro_schema_array_items(t));
			break;
		case FT_BOOLEAN:
			ok = is_avro_boolean(t);
			break;
		case FT_ARRAY_RECORD2:
			ok = is_avro_array(t) &&
			     is_avro_record(avro_schema_array_items(t));
			break;
		case FT_ARRAY_RECORD:
			ok = is_avro_array(t) && sub != NULL;
			if (ok) {
				char w[128];
				snprintf(w, sizeof(w), "%s.%s[]", where, f->name);
				int rc = codec_bind(avro_schema_array_items(t), w, sub,
				                    nsub, subidx, NULL, 0, NULL, err);
				if (rc != 0)
					return rc;
			}
			break;
		}
		if (!ok)
			return id_err_set(
			    err, ID_ESCHEMA,
			    "schema %s: field %s does not have the type model.h "
			    "expects (for enums: the same symbols in the same order)",
			    where, f->name);
	}
	return 0;
}

static int codec_writer_init(codec_writer_t *w, const codec_writer_def_t *def,
                             id_err_t *err)
{
	const struct id_avsc_file *f = codec_avsc_find(def->file);
	w->def = def;
	if (f == NULL)
		return id_err_set(err, ID_ESCHEMA, "schema %s.avsc is not compiled in",
		                  def->file);
	size_t len = strlen(f->text);
	if (avro_schema_from_json_length(f->text, len, &w->schema) != 0) {
		w->schema = NULL;
		return id_err_set(err, ID_ESCHEMA, "schema %s.avsc: %s", def->file,
		                  avro_strerror());
	}
	int rc = codec_canonical_form(f->text, len, &w->canonical, err);
	if (rc != 0) {
		id_err_wrap(err, "schema %s.avsc", def->file);
		return rc;
	}
	w->fp = codec_fingerprint(w->canonical, strlen(w->canonical));
	if (!is_avro_record(w->schema) ||
	    strcmp(avro_schema_name(w->schema), codec_kind_names[def->kind]) != 0)
		return id_err_set(err, ID_ESCHEMA, "schema %s.avsc: expected record %s",
		                  def->file, codec_kind_names[def->kind]);
	return 0;
}

/*
 * Inverts idx[] (and sub[]) into schema order for the fast paths.  They are
 * enabled only when the record has exactly the fields model.h binds, so
 * walking the fields in schema order visits every byte the schema defines.
 */
static void codec_reader_order(codec_reader_t *r, codec_kind_t kind, avro_schema_t s)
{
	static const int nfields[CODEC_KIND_COUNT] = {EVF_COUNT, DIF_COUNT, SRF_COUNT,
	                                              NCF_COUNT};
	static const int nsub[CODEC_KIND_COUNT] = {0, ACF_COUNT, SOF_COUNT, 0};
	static const int subfield[CODEC_KIND_COUNT] = {-1, DIF_CAUSES, SRF_OPERATIONS,
	                                               -1};
	r->nfields = nfields[kind];
	r->nsub = nsub[kind];
	r->fast = avro_schema_record_size(s) == (size_t)r->nfields;
	for (int i = 0; r->fast && i < r->nfields; i++)
		r->order[r->idx[i]] = i;
	if (r->fast && subfield[kind] >= 0) {
		avro_schema_t a =
		    avro_schema_record_field_get_by_index(s, r->idx[subfield[kind]]);
		avro_schema_t item = avro_schema_array_items(a);
		r->fast = avro_schema_record_size(item) == (size_t)r->nsub;
		for (int i = 0; r->fast && i < r->nsub; i++)
			r->suborder[r->sub[i]] = i;
	}
	if (r->fast && kind == CODEC_DESIRED_IDENTITY) {
		avro_schema_t a =
		    avro_schema_record_field_get_by_index(s, r->idx[DIF_TARGETS]);
		avro_schema_t item = avro_schema_array_items(a);
		r->fast = avro_schema_record_size(item) == (size_t)TSF_COUNT;
		for (int i = 0; r->fast && i < TSF_COUNT; i++)
			r->tsorder[r->tsub[i]] = i;
	}
}

static int codec_reader_init(codec_t *c, codec_kind_t kind, id_err_t *err)
{
	codec_reader_t *r = &c->readers[kind];
	for (size_t i = 0; i < CODEC_NWRITERS; i++) {
		codec_writer_t *w = &c->writers[i];
		if (w->def->kind == kind &&
		    (r->current == NULL || w->def->version > r->current->def->version))
			r->current = w;
	}
	if (r->current == NULL)
		return id_err_set(err, ID_ESCHEMA, "no schema for %s",
		                  codec_kind_names[kind]);
	avro_schema_t s = r->current->schema;
	const char *where = r->current->def->file;
	int rc;
	switch (kind) {
	case CODEC_EMPLOYEE_EVENT:
		rc = codec_bind(s, where, ev_fields, EVF_COUNT, r->idx, NULL, 0, NULL,
		                err);
		break;
	case CODEC_DESIRED_IDENTITY:
		rc = codec_bind(s, where, di_fields, DIF_COUNT, r->idx, ac_fields,
		                ACF_COUNT, r->sub, err);
		if (rc == 0) {
			char w[128];
			snprintf(w, sizeof(w), "%s.targets[]", where);
			rc = codec_bind(
			    avro_schema_array_items(avro_schema_record_field_get_by_index(
			        s, r->idx[DIF_TARGETS])),
			    w, ts_fields, TSF_COUNT, r->tsub, NULL, 0, NULL, err);
		}
		break;
	case CODEC_NAME_CLAIM:
		rc = codec_bind(s, where, nc_fields, NCF_COUNT, r->idx, NULL, 0, NULL,
		                err);
		break;
	default:
		rc = codec_bind(s, where, sr_fields, SRF_COUNT, r->idx, so_fields,
		                SOF_COUNT, r->sub, err);
		break;
	}
	if (rc != 0)
		return rc;
	codec_reader_order(r, kind, s);
	r->iface = avro_generic_class_from_schema(s);
	if (r->iface == NULL || avro_generic_value_new(r->iface, &r->value) != 0)
		return id_err_set(err, ID_ENOMEM, "schema %s: %s", where,
		                  avro_strerror());
	r->has_value = true;
	/* Older writers of this kind decode through a resolver into r->value.
	 * Except DesiredIdentity v1/v2: avro-c 1.11's resolver double-frees
	 * when the reader has an array of records the writer lacks (v3's
	 * targets).  Their fields are v3's first fields, at the same
	 * positions, with v1's enum a prefix of v3's, so they decode with their
	 * own schema and the same field indexes; the absent targets read as
	 * empty (dec_targets()). */
	for (size_t i = 0; i < CODEC_NWRITERS; i++) {
		codec_writer_t *w = &c->writers[i];
		if (w->def->kind != kind || w == r->current)
			continue;
		if (kind == CODEC_DESIRED_IDENTITY) {
			w->own_iface = avro_generic_class_from_schema(w->schema);
			if (w->own_iface == NULL ||
			    avro_generic_value_new(w->own_iface, &w->own) != 0)
				return id_err_set(err, ID_ENOMEM, "schema %s: %s",
				                  w->def->file, avro_strerror());
			w->has_own = true;
			continue;
		}
		w->resolved_iface = avro_resolved_writer_new(w->schema, s);
		if (w->resolved_iface == NULL)
			return id_err_set(err, ID_ESCHEMA,
			                  "schema %s cannot be read as %s: %s",
			                  w->def->file, where, avro_strerror());
		if (avro_resolved_writer_new_value(w->resolved_iface, &w->resolved) != 0)
			return id_err_set(err, ID_ENOMEM, "schema %s: %s", w->def->file,
			                  avro_strerror());
		w->has_resolved = true;
	}
	return 0;
}

codec_t *codec_create(id_err_t *err)
{
	codec_t *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		id_err_set(err, ID_ENOMEM, "codec: out of memory");
		return NULL;
	}
	for (size_t i = 0; i < CODEC_NWRITERS; i++)
		if (codec_writer_init(&c->writers[i], &codec_writer_defs[i], err) != 0)
			goto fail;
	for (size_t i = 0; i < CODEC_NWRITERS; i++)
		for (size_t j = 0; j < i; j++)
			if (c->writers[i].fp == c->writers[j].fp) {
				id_err_set(err, ID_ESCHEMA,
				           "schemas %s and %s have the same fingerprint",
				           codec_writer_defs[j].file,
				           codec_writer_defs[i].file);
				goto fail;
			}
	for (int k = 0; k < CODEC_KIND_COUNT; k++)
		if (codec_reader_init(c, (codec_kind_t)k, err) != 0)
			goto fail;
	c->in = avro_reader_memory(NULL, 0);
	c->out = avro_writer_memory(NULL, 0);
	if (c->in == NULL || c->out == NULL) {
		id_err_set(err, ID_ENOMEM, "codec: out of memory");
		goto fail;
	}
	return c;
fail:
	codec_destroy(c);
	return NULL;
}

void codec_destroy(codec_t *c)
{
	if (c == NULL)
		return;
	for (int k = 0; k < CODEC_KIND_COUNT; k++) {
		codec_reader_t *r = &c->readers[k];
		if (r->has_value)
			avro_value_decref(&r->value);
		if (r->iface != NULL)
			avro_value_iface_decref(r->iface);
	}
	for (size_t i = 0; i < CODEC_NWRITERS; i++) {
		codec_writer_t *w = &c->writers[i];
		if (w->has_resolved)
			avro_value_decref(&w->resolved);
		if (w->has_own)
			avro_value_decref(&w->own);
		if (w->own_iface != NULL)
			avro_value_iface_decref(w->own_iface);
		if (w->resolved_iface != NULL)
			avro_value_iface_decref(w->resolved_iface);
		if (w->schema != NULL)
			avro_schema_decref(w->schema);
		free(w->canonical);
	}
	if (c->in != NULL)
		avro_reader_free(c->in);
	if (c->out != NULL)
		avro_writer_free(c->out);
	free(c);
}

static codec_reader_t *codec_reader_by_name(codec_t *c, const char *name)
{
	for (int k = 0; k < CODEC_KIND_COUNT; k++) {
		codec_reader_t *r = &c->readers[k];
		const char *ns = avro_schema_namespace(r->current->schema);
		size_t nslen = ns ? strlen(ns) : 0;
		if (strcmp(name, codec_kind_names[k]) == 0 ||
		    strcmp(name, r->current->def->file) == 0 ||
		    (nslen && strncmp(name, ns, nslen) == 0 && name[nslen] == '.' &&
		     strcmp(name + nslen + 1, codec_kind_names[k]) == 0))
			return r;
	}
	return NULL;
}

uint64_t codec_schema_fingerprint(codec_t *c, const char *name)
{
	codec_reader_t *r = codec_reader_by_name(c, name);
	return r ? r->current->fp : 0;
}

const char *codec_schema_canonical(codec_t *c, const char *name)
{
	codec_reader_t *r = codec_reader_by_name(c, name);
	return r ? r->current->canonical : NULL;
}

/* --- Header ------------------------------------------------------------- */

static codec_writer_t *codec_writer_by_fp(codec_t *c, uint64_t fp)
{
	for (size_t i = 0; i < CODEC_NWRITERS; i++)
		if (c->writers[i].fp == fp)
			return &c->writers[i];
	return NULL;
}

static int codec_header(codec_t *c, const unsigned char *p, size_t len, uint64_t *fp,
                        codec_writer_t **w, id_err_t *err)
{
	*w = NULL;
	*fp = 0;
	if (len < 2 || p[0] != CODEC_MAGIC_0 || p[1] != CODEC_MAGIC_1) {
		if (len == 0)
			return id_err_set(
			    err, ID_EPARSE,
			    "empty payload: no Avro single-object magic C3 01");
		if (len == 1)
			return id_err_set(
			    err, ID_EPARSE,
			    "payload of 1 byte (%02X): no Avro single-object "
			    "magic C3 01",
			    p[0]);
		return id_err_set(
		    err, ID_EPARSE,
		    "payload does not start with the Avro single-object magic "
		    "C3 01 (got %02X %02X)",
		    p[0], p[1]);
	}
	if (len < CODEC_HEADER_LEN)
		return id_err_set(err, ID_ETRUNCATED,
		                  "truncated single-object header: %zu of %d bytes", len,
		                  CODEC_HEADER_LEN);
	for (int i = 7; i >= 0; i--)
		*fp = (*fp << 8) | p[2 + i];
	*w = codec_writer_by_fp(c, *fp);
	return 0;
}

int codec_peek_kind(codec_t *c, const void *data, size_t len, codec_kind_t *kind,
                    uint64_t *fingerprint, id_err_t *err)
{
	codec_writer_t *w;
	uint64_t fp;
	int rc = codec_header(c, data, len, &fp, &w, err);
	if (fingerprint != NULL)
		*fingerprint = fp;
	if (rc != 0)
		return rc;
	if (w == NULL)
		return id_err_set(err, ID_ESCHEMA,
		                  "unknown writer schema fingerprint 0x%016" PRIx64, fp);
	if (kind != NULL)
		*kind = w->def->kind;
	return 0;
}

/* "v1 0x1da82f532cffe6c4, v2 0x..." — the writers of a kind, for errors. */
static void codec_known_list(const codec_t *c, codec_kind_t kind, char *buf, size_t cap)
{
	size_t n = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < CODEC_NWRITERS && n < cap; i++) {
		const codec_writer_t *w = &c->writers[i];
		if (w->def->kind != kind)
			continue;
		int k = snprintf(buf + n, cap - n, "%sv%d 0x%016" PRIx64, n ? ", " : "",
		                 w->def->version, w->fp);
		if (k < 0)
			break;
		n += (size_t)k;
	}
}

static int codec_expect(codec_t *c, codec_kind_t kind, const unsigned char *p, size_t len,
                        codec_writer_t **w, id_err_t *err)
{
	uint64_t fp;
	int rc = codec_header(c, p, len, &fp, w, err);
	if (rc != 0) {
		id_err_wrap(err, "decode %s", codec_kind_names[kind]);
		return rc;
	}
	if (*w != NULL && (*w)->def->kind == kind)
		return 0;
	char known[256];
	codec_known_list(c, kind, known, sizeof(known));
	if (*w == NULL)
		return id_err_set(
		    err, ID_ESCHEMA,
		    "decode %s: unknown writer schema fingerprint 0x%016" PRIx64
		    "; expected %s %s",
		    codec_kind_names[kind], fp, codec_kind_names[kind], known);
	return id_err_set(err, ID_ESCHEMA,
	                  "decode %s: payload is a %s (v%d, fingerprint 0x%016" PRIx64
	                  "); expected %s %s",
	                  codec_kind_names[kind], codec_kind_names[(*w)->def->kind],
	                  (*w)->def->version, fp, codec_kind_names[kind], known);
}

/* --- Body validator --------------------------------------------------------- */

/* Where in the record the validator is, for messages: a chain on the stack. */
typedef struct vpath {
	const struct vpath *up;
	avro_schema_t record;     /* field number index of this record, or NULL */
	const unsigned char *key; /* map key (not NUL-terminated), or NULL */
	size_t keylen;
	int64_t index; /* field number, or array/map item number */
} vpath_t;

typedef struct vstate {
	const unsigned char *start, *p, *end; /* start = first byte of the payload */
	const codec_writer_t *w;
	size_t items; /* array/map items seen, bounded by the body length */
	int depth;
	id_err_t *err;
} vstate_t;

#define VALIDATE_MAX_DEPTH 32

/* Renders the path root-first into buf[0..cap); returns the length. */
static size_t vpath_render(const vpath_t *at, char *buf, size_t cap)
{
	if (at == NULL)
		return 0;
	size_t n = vpath_render(at->up, buf, cap);
	int k;
	if (n >= cap - 1)
		return n;
	if (at->record != NULL) {
		/* Field names are looked up only here, off the hot path. */
		k = snprintf(buf + n, cap - n, "%s%s", n ? "." : "",
		             avro_schema_record_field_name(at->record, (int)at->index));
	} else if (at->key != NULL) {
		/* Keys come from the payload: show them printable and short. */
		char kb[200];
		size_t m = 0;
		for (size_t i = 0; i < at->keylen && i < 40; i++) {
			unsigned char ch = at->key[i];
			if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
				kb[m++] = (char)ch;
			else
				m += (size_t)snprintf(kb + m, sizeof(kb) - m, "\\x%02x",
				                      ch);
		}
		kb[m] = '\0';
		k = snprintf(buf + n, cap - n, "[\"%s%s\"]", kb,
		             at->keylen > 40 ? "..." : "");
	} else {
		k = snprintf(buf + n, cap - n, "[%" PRId64 "]", at->index);
	}
	if (k < 0)
		return n;
	return n + (size_t)k < cap ? n + (size_t)k : cap - 1;
}

static void vpath_str(const vpath_t *at, char *buf, size_t cap)
{
	buf[vpath_render(at, buf, cap)] = '\0';
}

static int v_fail(vstate_t *v, int code, const vpath_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int v_fail(vstate_t *v, int code, const vpath_t *at, const char *fmt, ...)
{
	char path[256], detail[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	vpath_str(at, path, sizeof(path));
	return id_err_set(v->err, code, "decode %s v%d: %s%s%s (byte %zu of %zu): %s",
	                  codec_kind_names[v->w->def->kind], v->w->def->version,
	                  code == ID_ETRUNCATED ? "truncated" : "malformed",
	                  at ? " at field " : "", at ? path : "",
	                  (size_t)(v->p - v->start), (size_t)(v->end - v->start), detail);
}

static size_t v_left(const vstate_t *v)
{
	return (size_t)(v->end - v->p);
}

/* Zig-zag varint of at most maxbytes bytes (5 for int, 10 for long). */
static int v_varint(vstate_t *v, const vpath_t *at, const char *what, const char *what2,
                    int maxbytes, int64_t *out)
{
	uint64_t u = 0;
	for (int i = 0;; i++) {
		if (v->p == v->end)
			return v_fail(v, ID_ETRUNCATED, at, "%s%s ends early", what,
			              what2);
		unsigned b = *v->p;
		if (i == maxbytes - 1 && (b & 0x80 || (maxbytes == 10 && b > 1)))
			return v_fail(v, ID_EPARSE, at, "%s%s is not a valid varint",
			              what, what2);
		v->p++;
		u |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80))
			break;
	}
	*out = (int64_t)((u >> 1) ^ (0 - (u & 1)));
	return 0;
}

/* Offset of the first byte that breaks UTF-8 (or is NUL), n when all is fine. */
static size_t utf8_bad(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (n - i >= 8) {
			/* Fast path: 8 bytes at once when none has its top bit
			 * set and none is zero (the classic has-zero-byte test). */
			uint64_t w8;
			memcpy(&w8, s + i, 8);
			if (((w8 | ((w8 - UINT64_C(0x0101010101010101)) & ~w8)) &
			     UINT64_C(0x8080808080808080)) == 0) {
				i += 8;
				continue;
			}
		}
		unsigned ch = s[i];
		if (ch >= 0x01 && ch < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint32_t cp;
		if (ch >= 0xC2 && ch <= 0xDF) {
			len = 2;
			cp = ch & 0x1F;
		} else if (ch >= 0xE0 && ch <= 0xEF) {
			len = 3;
			cp = ch & 0x0F;
		} else if (ch >= 0xF0 && ch <= 0xF4) {
			len = 4;
			cp = ch & 0x07;
		} else {
			return i; /* NUL, continuation byte, or never valid */
		}
		if (n - i < len)
			return i;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return i;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
			return i; /* overlong, surrogate or beyond Unicode */
		i += len;
	}
	return n;
}

static int v_string(vstate_t *v, const vpath_t *at, const char *what, bool text,
                    const unsigned char **s, size_t *n)
{
	int64_t len;
	int rc = v_varint(v, at, what, " length", 10, &len);
	if (rc != 0)
		return rc;
	if (len < 0)
		return v_fail(v, ID_EPARSE, at, "negative %s length %" PRId64, what, len);
	if ((uint64_t)len > v_left(v))
		return v_fail(v, ID_ETRUNCATED, at, "%s of %" PRId64 " bytes, %zu left",
		              what, len, v_left(v));
	if (text) {
		size_t bad = utf8_bad(v->p, (size_t)len);
		if (bad < (size_t)len)
			return v_fail(v, ID_EPARSE, at, "%s %s at its byte %zu", what,
			              v->p[bad] ? "is not valid UTF-8"
			                        : "contains a NUL byte",
			              bad);
	}
	if (s != NULL) {
		*s = v->p;
		*n = (size_t)len;
	}
	v->p += len;
	return 0;
}

static int v_value(vstate_t *v, avro_schema_t s, const vpath_t *at);

/* Arrays and maps: blocks of items, a zero count ends them. */
static int v_blocks(vstate_t *v, avro_schema_t s, bool map, const vpath_t *at)
{
	avro_schema_t item = map ? avro_schema_map_values(s) : avro_schema_array_items(s);
	const char *what = map ? "map block count" : "array block count";
	int64_t index = 0;
	for (;;) {
		int64_t count, size;
		int rc = v_varint(v, at, what, "", 10, &count);
		if (rc != 0)
			return rc;
		if (count == 0)
			return 0;
		if (count < 0) {
			/* A negative count is followed by the block's byte size. */
			if (count == INT64_MIN)
				return v_fail(v, ID_EPARSE, at, "invalid %s", what);
			count = -count;
			if ((rc = v_varint(v, at, "block byte size", "", 10, &size)) != 0)
				return rc;
			if (size < 0)
				return v_fail(v, ID_EPARSE, at,
				              "negative block byte size");
		}
		/*
		 * Every item of our schemas takes at least one byte; this bound
		 * keeps a forged count from making avro-c loop or allocate
		 * without end.
		 */
		if ((uint64_t)count > v_left(v) ||
		    v->items + (size_t)count > (size_t)(v->end - v->start))
			return v_fail(v, ID_ETRUNCATED, at,
			              "block of %" PRId64 " items, %zu bytes left", count,
			              v_left(v));
		v->items += (size_t)count;
		for (int64_t i = 0; i < count; i++, index++) {
			vpath_t here = {at, NULL, NULL, 0, index};
			if (map) {
				const unsigned char *key;
				size_t keylen;
				if ((rc = v_string(v, &here, "map key", true, &key,
				                   &keylen)) != 0)
					return rc;
				here.key = key;
				here.keylen = keylen;
			}
			if ((rc = v_value(v, item, &here)) != 0)
				return rc;
		}
	}
}

static int v_value(vstate_t *v, avro_schema_t s, const vpath_t *at)
{
	int rc = 0;
	int64_t n;
	if (++v->depth > VALIDATE_MAX_DEPTH) {
		rc =
		    v_fail(v, ID_EPARSE, at, "nested deeper than %d", VALIDATE_MAX_DEPTH);
		goto out;
	}
	switch (avro_typeof(s)) {
	case AVRO_NULL:
		break;
	case AVRO_BOOLEAN:
		if (v_left(v) < 1)
			rc = v_fail(v, ID_ETRUNCATED, at, "boolean missing");
		else if (*v->p > 1)
			rc = v_fail(v, ID_EPARSE, at, "boolean byte %u", *v->p);
		else
			v->p++;
		break;
	case AVRO_INT32:
		rc = v_varint(v, at, "int", "", 5, &n);
		if (rc == 0 && (n < INT32_MIN || n > INT32_MAX))
			rc = v_fail(v, ID_EPARSE, at, "int out of range");
		break;
	case AVRO_INT64:
		rc = v_varint(v, at, "long", "", 10, &n);
		break;
	case AVRO_FLOAT:
	case AVRO_DOUBLE: {
		size_t need = avro_typeof(s) == AVRO_FLOAT ? 4 : 8;
		if (v_left(v) < need)
			rc = v_fail(v, ID_ETRUNCATED, at, "%zu-byte number, %zu left",
			            need, v_left(v));
		else
			v->p += need;
		break;
	}
	case AVRO_STRING:
		rc = v_string(v, at, "string", true, NULL, NULL);
		break;
	case AVRO_BYTES:
		rc = v_string(v, at, "bytes", false, NULL, NULL);
		break;
	case AVRO_FIXED: {
		int64_t need = avro_schema_fixed_size(s);
		if (need < 0 || (uint64_t)need > v_left(v))
			rc = v_fail(v, ID_ETRUNCATED, at,
			            "fixed of %" PRId64 " bytes, %zu left", need,
			            v_left(v));
		else
			v->p += need;
		break;
	}
	case AVRO_ENUM:
		rc = v_varint(v, at, "enum index", "", 10, &n);
		if (rc == 0 && (n < 0 || n >= avro_schema_enum_number_of_symbols(s)))
			rc = v_fail(v, ID_EPARSE, at,
			            "enum index %" PRId64 " not in [0, %d)", n,
			            avro_schema_enum_number_of_symbols(s));
		break;
	case AVRO_UNION:
		rc = v_varint(v, at, "union branch", "", 10, &n);
		if (rc == 0 && (n < 0 || (uint64_t)n >= avro_schema_union_size(s)))
			rc = v_fail(v, ID_EPARSE, at,
			            "union branch %" PRId64 " not in [0, %zu)", n,
			            avro_schema_union_size(s));
		if (rc == 0)
			rc = v_value(v, avro_schema_union_branch(s, (int)n), at);
		break;
	case AVRO_RECORD:
		for (size_t i = 0; rc == 0 && i < avro_schema_record_size(s); i++) {
			vpath_t here = {at, s, NULL, 0, (int64_t)i};
			rc = v_value(v, avro_schema_record_field_get_by_index(s, (int)i),
			             &here);
		}
		break;
	case AVRO_ARRAY:
	case AVRO_MAP:
		rc = v_blocks(v, s, avro_typeof(s) == AVRO_MAP, at);
		break;
	case AVRO_LINK:
		rc = v_value(v, avro_schema_link_target(s), at);
		break;
	default:
		rc = v_fail(v, ID_ESCHEMA, at, "unsupported schema type %d",
		            (int)avro_typeof(s));
		break;
	}
out:
	v->depth--;
	return rc;
}

/*
 * Checks the header, then the body against the writer schema, then reads the
 * body into the kind's reader value (through the resolver for an older
 * writer).  *rec is the filled value.
 */
static int codec_read(codec_t *c, codec_kind_t kind, const void *data, size_t len,
                      avro_value_t **rec, id_err_t *err)
{
	const unsigned char *p = data;
	codec_writer_t *w;
	codec_reader_t *r = &c->readers[kind];
	int rc = codec_expect(c, kind, p, len, &w, err);
	if (rc != 0)
		return rc;
	vstate_t v = {p, p + CODEC_HEADER_LEN, p + len, w, 0, 0, err};
	if ((rc = v_value(&v, w->schema, NULL)) != 0)
		return rc;
	if (v.p != v.end)
		return v_fail(&v, ID_EPARSE, NULL, "%zu trailing bytes after the record",
		              v_left(&v));
	avro_reader_memory_set_source(c->in, (const char *)p + CODEC_HEADER_LEN,
	                              (int64_t)(len - CODEC_HEADER_LEN));
	avro_value_t *into = &r->value;
	if (w->has_resolved) {
		avro_resolved_writer_set_dest(&w->resolved, &r->value);
		rc = avro_value_read(c->in, &w->resolved);
		avro_resolved_writer_clear_dest(&w->resolved);
	} else if (w->has_own) {
		into = &w->own;
		rc = avro_value_reset(into);
		if (rc == 0)
			rc = avro_value_read(c->in, into);
	} else {
		rc = avro_value_read(c->in, &r->value);
	}
	if (rc != 0)
		return id_err_set(err, rc == ENOMEM ? ID_ENOMEM : ID_EPARSE,
		                  "decode %s v%d: %s", codec_kind_names[kind],
		                  w->def->version, avro_strerror());
	*rec = into;
	return 0;
}

/* --- From avro values to the model ---------------------------------------- */

static int dec_nomem(id_err_t *err, codec_kind_t kind)
{
	return id_err_set(err, ID_ENOMEM, "decode %s: out of memory",
	                  codec_kind_names[kind]);
}

static int dec_field(avro_value_t *rec, int idx, avro_value_t *f)
{
	return avro_value_get_by_index(rec, (size_t)idx, f, NULL);
}

/* Copies a string value; avro-c sizes include the NUL terminator. */
static int dec_string_value(avro_value_t *f, char **out)
{
	const char *s = NULL;
	size_t size = 0;
	*out = NULL;
	if (avro_value_get_string(f, &s, &size) != 0)
		return ID_EPARSE;
	size_t n = (s == NULL || size == 0) ? 0 : size - 1;
	char *d = malloc(n + 1);
	if (d == NULL)
		return ID_ENOMEM;
	if (n)
		memcpy(d, s, n);
	d[n] = '\0';
	*out = d;
	return 0;
}

static int dec_str(avro_value_t *rec, int idx, char **out)
{
	avro_value_t f;
	*out = NULL;
	if (dec_field(rec, idx, &f) != 0)
		return ID_EPARSE;
	return dec_string_value(&f, out);
}

/* ["null","string"]; a union without a branch (a field an older writer did
 * not have) is NULL, the default of every optional field. */
static int dec_opt_value(avro_value_t *f, char **out)
{
	int disc = -1;
	avro_value_t b;
	*out = NULL;
	if (avro_value_get_discriminant(f, &disc) != 0 || disc != BRANCH_STRING)
		return 0;
	if (avro_value_get_current_branch(f, &b) != 0)
		return ID_EPARSE;
	return dec_string_value(&b, out);
}

static int dec_opt_str(avro_value_t *rec, int idx, char **out)
{
	avro_value_t f;
	*out = NULL;
	if (dec_field(rec, idx, &f) != 0)
		return ID_EPARSE;
	return dec_opt_value(&f, out);
}

static int dec_long(avro_value_t *rec, int idx, int64_t *out)
{
	avro_value_t f;
	if (dec_field(rec, idx, &f) != 0 || avro_value_get_long(&f, out) != 0)
		return ID_EPARSE;
	return 0;
}

static int dec_enum(avro_value_t *rec, int idx, int count, int *out)
{
	avro_value_t f;
	if (dec_field(rec, idx, &f) != 0 || avro_value_get_enum(&f, out) != 0 ||
	    *out < 0 || *out >= count)
		return ID_EPARSE;
	return 0;
}

/* map<string> or map<["null","string"]> into a sorted id_attrs_t. */
static int dec_map(avro_value_t *rec, int idx, bool nullable, id_attrs_t *a)
{
	avro_value_t m;
	size_t n;
	if (dec_field(rec, idx, &m) != 0 || avro_value_get_size(&m, &n) != 0)
		return ID_EPARSE;
	for (size_t i = 0; i < n; i++) {
		avro_value_t e;
		const char *key;
		char *val = NULL;
		if (avro_value_get_by_index(&m, i, &e, &key) != 0)
			return ID_EPARSE;
		int rc = nullable ? dec_opt_value(&e, &val) : dec_string_value(&e, &val);
		if (rc == 0)
			rc = id_attrs_set(a, key, val);
		free(val);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int dec_rc(int rc, codec_kind_t kind, id_err_t *err)
{
	if (rc == ID_ENOMEM)
		return dec_nomem(err, kind);
	return id_err_set(err, rc, "decode %s: cannot read value: %s",
	                  codec_kind_names[kind], avro_strerror());
}

/* --- Direct fast paths ---------------------------------------------------------
 *
 * The processor decodes an EmployeeEvent and encodes a DesiredIdentity per
 * event.  Going through avro-c's generic values costs more than the rest of
 * the codec work (every string is copied into the value, then out of it), so
 * the newest writer schema of these two kinds is also read and written
 * directly, in schema order.  A fast path is at least as strict as the
 * general one: it accepts only what the validator would accept, and on
 * anything else — an error, an unusual encoding, even ENOMEM — it gives up
 * and the general path runs, so errors keep their precise messages.  The
 * bytes written are those avro-c writes (a non-empty map or array is one
 * block with a positive count followed by the 0 terminator), which the
 * determinism tests and the exact-bytes test check.
 */

typedef struct fast_in {
	const unsigned char *p, *end;
	/* Where decoded strings go (employee_event_t.strs), NULL: malloc. */
	char *blk;
	size_t used, cap;
} fast_in_t;

/* Zig-zag varint of at most maxbytes bytes, with the validator's rules. */
static bool fast_varint(fast_in_t *in, int maxbytes, int64_t *out)
{
	uint64_t u = 0;
	for (int i = 0;; i++) {
		if (in->p == in->end)
			return false;
		unsigned b = *in->p++;
		if (i == maxbytes - 1 && (b & 0x80 || (maxbytes == 10 && b > 1)))
			return false;
		u |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80))
			break;
	}
	*out = (int64_t)((u >> 1) ^ (0 - (u & 1)));
	return true;
}

/* A UTF-8 string without NUL, copied into the block (sized for every
 * string of the payload: each takes its length plus a length byte there),
 * else into a fresh allocation. */
static bool fast_str(fast_in_t *in, char **out)
{
	int64_t n;
	if (!fast_varint(in, 10, &n) || n < 0 ||
	    (uint64_t)n > (size_t)(in->end - in->p) ||
	    utf8_bad(in->p, (size_t)n) != (size_t)n)
		return false;
	char *s;
	if (in->blk != NULL && in->cap - in->used > (size_t)n) {
		s = in->blk + in->used;
		in->used += (size_t)n + 1;
	} else if ((s = malloc((size_t)n + 1)) == NULL) {
		return false;
	}
	memcpy(s, in->p, (size_t)n);
	s[n] = '\0';
	in->p += n;
	*out = s;
	return true;
}

/* Frees a string fast_str() made, unless it is in the block. */
static void fast_free(const fast_in_t *in, char *s)
{
	uintptr_t u = (uintptr_t)s, lo = (uintptr_t)in->blk;
	if (in->blk == NULL || u < lo || u >= lo + in->cap)
		free(s);
}

/* ["null","string"]: *out stays NULL for null. */
static bool fast_opt_str(fast_in_t *in, char **out)
{
	int64_t b;
	if (!fast_varint(in, 10, &b))
		return false;
	if (b == BRANCH_NULL)
		return true;
	return b == BRANCH_STRING && fast_str(in, out);
}

/* map<["null","string"]> into a: one block per positive count, 0 ends. */
static bool fast_opt_map(fast_in_t *in, id_attrs_t *a)
{
	for (;;) {
		int64_t count;
		if (!fast_varint(in, 10, &count) || count < 0 ||
		    (uint64_t)count > (size_t)(in->end - in->p))
			return false;
		if (count == 0)
			return true;
		for (int64_t i = 0; i < count; i++) {
			char *k = NULL, *v = NULL;
			if (!fast_str(in, &k) || !fast_opt_str(in, &v)) {
				fast_free(in, k);
				fast_free(in, v);
				return false;
			}
			/* Later duplicates win, as in avro-c. */
			if (id_attrs_set_owned(a, k, v) != 0)
				return false;
		}
	}
}

/* 1 when the payload was decoded, 0 when the general path must run. */
static int fast_decode_event(codec_t *c, const unsigned char *p, size_t len,
                             employee_event_t *out)
{
	const codec_reader_t *r = &c->readers[CODEC_EMPLOYEE_EVENT];
	if (!r->fast || len < CODEC_HEADER_LEN || p[0] != CODEC_MAGIC_0 ||
	    p[1] != CODEC_MAGIC_1)
		return 0;
	uint64_t fp = 0;
	for (int i = 7; i >= 0; i--)
		fp = (fp << 8) | p[2 + i];
	if (fp != r->current->fp)
		return 0;
	/* One block for every string of the event (see employee_event_t). */
	fast_in_t in = {p + CODEC_HEADER_LEN, p + len, malloc(len), 0, len};
	if (in.blk != NULL) {
		out->strs = in.blk;
		out->strs_len = len;
		out->attributes.keep_lo = (uintptr_t)in.blk;
		out->attributes.keep_hi = (uintptr_t)in.blk + len;
	}
	bool ok = true;
	for (int i = 0; ok && i < r->nfields; i++) {
		int64_t v;
		switch (r->order[i]) {
		case EVF_EVENT_ID:
			ok = fast_str(&in, &out->event_id);
			break;
		case EVF_SOURCE:
			ok = fast_str(&in, &out->source);
			break;
		case EVF_SOURCE_EVENT_ID:
			ok = fast_str(&in, &out->source_event_id);
			break;
		case EVF_EMPLOYEE_ID:
			ok = fast_str(&in, &out->employee_id);
			break;
		case EVF_TYPE:
			ok = fast_varint(&in, 5, &v) && v >= 0 && v < EV_TYPE_COUNT;
			out->type = (employee_event_type_t)v;
			break;
		case EVF_OCCURRED_AT:
			ok = fast_varint(&in, 10, &out->occurred_at);
			break;
		case EVF_EFFECTIVE_AT:
			ok = fast_varint(&in, 10, &out->effective_at);
			break;
		case EVF_ATTRIBUTES:
			ok = fast_opt_map(&in, &out->attributes);
			break;
		case EVF_ACTOR:
			ok = fast_opt_str(&in, &out->actor);
			break;
		case EVF_REASON:
			ok = fast_opt_str(&in, &out->reason);
			break;
		default:
			ok = false;
			break;
		}
	}
	if (ok && in.p == in.end)
		return 1;
	employee_event_fini(out);
	return 0;
}

int codec_decode_event(codec_t *c, const void *data, size_t len, employee_event_t *out,
                       id_err_t *err)
{
	const codec_kind_t K = CODEC_EMPLOYEE_EVENT;
	const int *ix = c->readers[K].idx;
	avro_value_t *rec;
	int type = 0;
	employee_event_fini(out);
	if (fast_decode_event(c, data, len, out))
		return 0;
	int rc = codec_read(c, K, data, len, &rec, err);
	if (rc != 0)
		goto out;
	if ((rc = dec_str(rec, ix[EVF_EVENT_ID], &out->event_id)) != 0 ||
	    (rc = dec_str(rec, ix[EVF_SOURCE], &out->source)) != 0 ||
	    (rc = dec_str(rec, ix[EVF_SOURCE_EVENT_ID], &out->source_event_id)) != 0 ||
	    (rc = dec_str(rec, ix[EVF_EMPLOYEE_ID], &out->employee_id)) != 0 ||
	    (rc = dec_enum(rec, ix[EVF_TYPE], EV_TYPE_COUNT, &type)) != 0 ||
	    (rc = dec_long(rec, ix[EVF_OCCURRED_AT], &out->occurred_at)) != 0 ||
	    (rc = dec_long(rec, ix[EVF_EFFECTIVE_AT], &out->effective_at)) != 0 ||
	    (rc = dec_map(rec, ix[EVF_ATTRIBUTES], true, &out->attributes)) != 0 ||
	    (rc = dec_opt_str(rec, ix[EVF_ACTOR], &out->actor)) != 0 ||
	    (rc = dec_opt_str(rec, ix[EVF_REASON], &out->reason)) != 0) {
		rc = dec_rc(rc, K, err);
		goto out;
	}
	out->type = (employee_event_type_t)type;
out:
	if (rc != 0)
		employee_event_fini(out);
	return rc;
}

static int cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_cause(const void *a, const void *b)
{
	return strcmp(((const attr_cause_t *)a)->attribute,
	              ((const attr_cause_t *)b)->attribute);
}

/*
 * model.h promises sorted unique groups and causes sorted by attribute; our
 * writers keep that, but a payload from elsewhere might not.
 */
static void dec_normalise_desired(desired_identity_t *d)
{
	size_t i, j;
	for (i = 1; i < d->ngroups && strcmp(d->groups[i - 1], d->groups[i]) < 0; i++)
		;
	if (d->ngroups > 1 && i < d->ngroups) {
		qsort(d->groups, d->ngroups, sizeof(*d->groups), cmp_str_ptr);
		for (i = 1, j = 1; i < d->ngroups; i++) {
			if (strcmp(d->groups[j - 1], d->groups[i]) == 0)
				free(d->groups[i]);
			else
				d->groups[j++] = d->groups[i];
		}
		d->ngroups = j;
	}
	for (i = 1; i < d->ncauses &&
	            strcmp(d->causes[i - 1].attribute, d->causes[i].attribute) < 0;
	     i++)
		;
	if (d->ncauses > 1 && i < d->ncauses) {
		qsort(d->causes, d->ncauses, sizeof(*d->causes), cmp_cause);
		for (i = 1, j = 1; i < d->ncauses; i++) {
			if (strcmp(d->causes[j - 1].attribute, d->causes[i].attribute) ==
			    0) {
				free(d->causes[i].attribute);
				free(d->causes[i].event_id);
				free(d->causes[i].rule);
			} else {
				d->causes[j++] = d->causes[i];
			}
		}
		d->ncauses = j;
	}
}

static int dec_groups(avro_value_t *rec, int idx, desired_identity_t *d)
{
	avro_value_t a;
	size_t n;
	if (dec_field(rec, idx, &a) != 0 || avro_value_get_size(&a, &n) != 0)
		return ID_EPARSE;
	if (n == 0)
		return 0;
	if ((d->groups = calloc(n, sizeof(*d->groups))) == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		avro_value_t e;
		if (avro_value_get_by_index(&a, i, &e, NULL) != 0)
			return ID_EPARSE;
		int rc = dec_string_value(&e, &d->groups[i]);
		if (rc != 0)
			return rc;
		d->ngroups = i + 1;
	}
	return 0;
}

static int dec_causes(avro_value_t *rec, int idx, const int *sub, desired_identity_t *d)
{
	avro_value_t a;
	size_t n;
	if (dec_field(rec, idx, &a) != 0 || avro_value_get_size(&a, &n) != 0)
		return ID_EPARSE;
	if (n == 0)
		return 0;
	if ((d->causes = calloc(n, sizeof(*d->causes))) == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		avro_value_t e;
		attr_cause_t *ac = &d->causes[i];
		int rc;
		if (avro_value_get_by_index(&a, i, &e, NULL) != 0)
			return ID_EPARSE;
		d->ncauses = i + 1; /* so that fini frees a partly filled cause */
		if ((rc = dec_str(&e, sub[ACF_ATTRIBUTE], &ac->attribute)) != 0 ||
		    (rc = dec_str(&e, sub[ACF_EVENT_ID], &ac->event_id)) != 0 ||
		    (rc = dec_str(&e, sub[ACF_RULE], &ac->rule)) != 0)
			return rc;
	}
	return 0;
}

/* The sections of a v3 payload, sorted by name (a later duplicate wins). */
static int dec_targets(avro_value_t *rec, int idx, const int *ts, desired_identity_t *d)
{
	avro_value_t a;
	size_t n, nf = 0;
	if (avro_value_get_size(rec, &nf) != 0)
		return ID_EPARSE;
	if ((size_t)idx >= nf)
		return 0; /* a v1/v2 payload: no sections */
	if (dec_field(rec, idx, &a) != 0 || avro_value_get_size(&a, &n) != 0)
		return ID_EPARSE;
	for (size_t i = 0; i < n; i++) {
		avro_value_t e, f, g;
		target_identity_t t;
		size_t ng = 0;
		int b = 0, rc;
		target_identity_init(&t);
		if (avro_value_get_by_index(&a, i, &e, NULL) != 0) {
			rc = ID_EPARSE;
			goto item_out;
		}
		if ((rc = dec_str(&e, ts[TSF_NAME], &t.name)) != 0 ||
		    (rc = dec_str(&e, ts[TSF_CONTAINER], &t.container)) != 0 ||
		    (rc = dec_map(&e, ts[TSF_ATTRIBUTES], false, &t.attributes)) != 0)
			goto item_out;
		if (dec_field(&e, ts[TSF_IN_SCOPE], &f) != 0 ||
		    avro_value_get_boolean(&f, &b) != 0 ||
		    dec_field(&e, ts[TSF_GROUPS], &g) != 0 ||
		    avro_value_get_size(&g, &ng) != 0) {
			rc = ID_EPARSE;
			goto item_out;
		}
		t.in_scope = b != 0;
		if (ng > 0 && (t.groups = calloc(ng, sizeof(*t.groups))) == NULL) {
			rc = ID_ENOMEM;
			goto item_out;
		}
		for (size_t k = 0; k < ng; k++) {
			avro_value_t gv;
			if (avro_value_get_by_index(&g, k, &gv, NULL) != 0) {
				rc = ID_EPARSE;
				goto item_out;
			}
			if ((rc = dec_string_value(&gv, &t.groups[k])) != 0)
				goto item_out;
			t.ngroups = k + 1;
		}
		if (t.ngroups > 1) {
			size_t j = 1;
			qsort(t.groups, t.ngroups, sizeof(*t.groups), cmp_str_ptr);
			for (size_t k = 1; k < t.ngroups; k++) {
				if (strcmp(t.groups[j - 1], t.groups[k]) == 0)
					free(t.groups[k]);
				else
					t.groups[j++] = t.groups[k];
			}
			t.ngroups = j;
		}
		target_identity_t *slot = desired_identity_add_target(d, t.name);
		if (slot == NULL) {
			rc = ID_ENOMEM;
			goto item_out;
		}
		char *nm = slot->name;
		slot->name = NULL;
		target_identity_fini(slot);
		free(t.name);
		t.name = nm;
		*slot = t;
		continue;
	item_out:
		target_identity_fini(&t);
		return rc;
	}
	return 0;
}

int codec_decode_desired(codec_t *c, const void *data, size_t len,
                         desired_identity_t *out, id_err_t *err)
{
	const codec_kind_t K = CODEC_DESIRED_IDENTITY;
	const int *ix = c->readers[K].idx;
	avro_value_t *rec;
	int state = 0;
	desired_identity_fini(out);
	int rc = codec_read(c, K, data, len, &rec, err);
	if (rc != 0)
		goto out;
	if ((rc = dec_str(rec, ix[DIF_EMPLOYEE_ID], &out->employee_id)) != 0 ||
	    (rc = dec_long(rec, ix[DIF_VERSION], &out->version)) != 0 ||
	    (rc = dec_enum(rec, ix[DIF_STATE], LC_STATE_COUNT, &state)) != 0 ||
	    (rc = dec_map(rec, ix[DIF_ATTRIBUTES], false, &out->attributes)) != 0 ||
	    (rc = dec_groups(rec, ix[DIF_GROUPS], out)) != 0 ||
	    (rc = dec_str(rec, ix[DIF_CONTAINER], &out->container)) != 0 ||
	    (rc = dec_opt_str(rec, ix[DIF_MANAGER_ID], &out->manager_id)) != 0 ||
	    (rc = dec_str(rec, ix[DIF_POLICY_VERSION], &out->policy_version)) != 0 ||
	    (rc = dec_str(rec, ix[DIF_CAUSE_EVENT_ID], &out->cause_event_id)) != 0 ||
	    (rc = dec_long(rec, ix[DIF_EFFECTIVE_AT], &out->effective_at)) != 0 ||
	    (rc = dec_causes(rec, ix[DIF_CAUSES], c->readers[K].sub, out)) != 0 ||
	    (rc = dec_targets(rec, ix[DIF_TARGETS], c->readers[K].tsub, out)) != 0) {
		rc = dec_rc(rc, K, err);
		goto out;
	}
	out->state = (lifecycle_state_t)state;
	dec_normalise_desired(out);
out:
	if (rc != 0)
		desired_identity_fini(out);
	return rc;
}

static int dec_ops(avro_value_t *rec, int idx, const int *sub, sink_result_t *r)
{
	avro_value_t a;
	size_t n;
	if (dec_field(rec, idx, &a) != 0 || avro_value_get_size(&a, &n) != 0)
		return ID_EPARSE;
	if (n == 0)
		return 0;
	if ((r->ops = calloc(n, sizeof(*r->ops))) == NULL)
		return ID_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		avro_value_t e;
		sink_op_t *op = &r->ops[i];
		int rc;
		if (avro_value_get_by_index(&a, i, &e, NULL) != 0)
			return ID_EPARSE;
		r->nops = i + 1;
		if ((rc = dec_str(&e, sub[SOF_OP], &op->op)) != 0 ||
		    (rc = dec_str(&e, sub[SOF_ATTRIBUTE], &op->attribute)) != 0 ||
		    (rc = dec_opt_str(&e, sub[SOF_OLD_VALUE], &op->old_value)) != 0 ||
		    (rc = dec_opt_str(&e, sub[SOF_NEW_VALUE], &op->new_value)) != 0)
			return rc;
	}
	return 0;
}

int codec_decode_result(codec_t *c, const void *data, size_t len, sink_result_t *out,
                        id_err_t *err)
{
	const codec_kind_t K = CODEC_SINK_RESULT;
	const int *ix = c->readers[K].idx;
	avro_value_t *rec;
	int outcome = 0;
	sink_result_fini(out);
	int rc = codec_read(c, K, data, len, &rec, err);
	if (rc != 0)
		goto out;
	if ((rc = dec_str(rec, ix[SRF_TARGET], &out->target)) != 0 ||
	    (rc = dec_str(rec, ix[SRF_EMPLOYEE_ID], &out->employee_id)) != 0 ||
	    (rc = dec_long(rec, ix[SRF_DESIRED_VERSION], &out->desired_version)) != 0 ||
	    (rc = dec_enum(rec, ix[SRF_OUTCOME], SINK_OUTCOME_COUNT, &outcome)) != 0 ||
	    (rc = dec_ops(rec, ix[SRF_OPERATIONS], c->readers[K].sub, out)) != 0 ||
	    (rc = dec_opt_str(rec, ix[SRF_ERROR], &out->error)) != 0 ||
	    (rc = dec_long(rec, ix[SRF_AT], &out->at)) != 0) {
		rc = dec_rc(rc, K, err);
		goto out;
	}
	out->outcome = (sink_outcome_t)outcome;
out:
	if (rc != 0)
		sink_result_fini(out);
	return rc;
}

int codec_decode_name_claim(codec_t *c, const void *data, size_t len, name_claim_t *out,
                            id_err_t *err)
{
	const codec_kind_t K = CODEC_NAME_CLAIM;
	const int *ix = c->readers[K].idx;
	avro_value_t *rec;
	int kind = 0;
	name_claim_fini(out);
	int rc = codec_read(c, K, data, len, &rec, err);
	if (rc != 0)
		goto out;
	if ((rc = dec_str(rec, ix[NCF_CLAIM_ID], &out->claim_id)) != 0 ||
	    (rc = dec_enum(rec, ix[NCF_KIND], NAME_CLAIM_KIND_COUNT, &kind)) != 0 ||
	    (rc = dec_str(rec, ix[NCF_NAMESPACE], &out->ns)) != 0 ||
	    (rc = dec_str(rec, ix[NCF_VALUE], &out->value)) != 0 ||
	    (rc = dec_str(rec, ix[NCF_EMPLOYEE_ID], &out->employee_id)) != 0 ||
	    (rc = dec_long(rec, ix[NCF_CLAIMED_AT], &out->claimed_at)) != 0 ||
	    (rc = dec_long(rec, ix[NCF_QUARANTINE_UNTIL], &out->quarantine_until)) != 0 ||
	    (rc = dec_str(rec, ix[NCF_SOURCE_EVENT_ID], &out->source_event_id)) != 0) {
		rc = dec_rc(rc, K, err);
		goto out;
	}
	out->kind = (name_claim_kind_t)kind;
out:
	if (rc != 0)
		name_claim_fini(out);
	return rc;
}

/* --- From the model to avro values ------------------------------------------ */

/* Encoding context, for messages: "employee E1001: causes[2].rule is NULL". */
typedef struct enc {
	codec_kind_t kind;
	const char *employee;
	const char *array; /* set while inside an array element */
	size_t index;
	const char *key; /* set while inside a map entry */
	id_err_t *err;
} enc_t;

static int enc_fail(enc_t *e, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int enc_fail(enc_t *e, int code, const char *field, const char *fmt, ...)
{
	char detail[256], where[128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (e->array != NULL)
		snprintf(where, sizeof(where), "%s[%zu].%s", e->array, e->index, field);
	else if (e->key != NULL)
		snprintf(where, sizeof(where), "%s[\"%.60s\"]", field, e->key);
	else
		snprintf(where, sizeof(where), "%s", field);
	if (code == ID_ENOMEM || code == ID_EIO)
		return id_err_set(e->err, code, "encode %s: %s: %s",
		                  codec_kind_names[e->kind], where, detail);
	return id_err_set(e->err, code, "encode %s for employee %s: %s %s",
	                  codec_kind_names[e->kind], e->employee ? e->employee : "(none)",
	                  where, detail);
}

static int enc_avro_fail(enc_t *e, const char *field, int rc)
{
	return enc_fail(e, rc == ENOMEM ? ID_ENOMEM : ID_EIO, field, "%s",
	                avro_strerror());
}

static int enc_text(enc_t *e, const char *field, const char *s, size_t *len)
{
	*len = strlen(s);
	size_t bad = utf8_bad((const unsigned char *)s, *len);
	if (bad < *len)
		return enc_fail(e, ID_EINVALID, field, "is not valid UTF-8 (byte %zu)",
		                bad);
	return 0;
}

static int enc_string_value(enc_t *e, avro_value_t *f, const char *field, const char *s)
{
	size_t n;
	int rc = enc_text(e, field, s, &n);
	if (rc != 0)
		return rc;
	if ((rc = avro_value_set_string_len(f, s, n + 1)) != 0)
		return enc_avro_fail(e, field, rc);
	return 0;
}

static int enc_str(enc_t *e, avro_value_t *rec, int idx, const char *field, const char *s)
{
	avro_value_t f;
	int rc;
	if (s == NULL)
		return enc_fail(e, ID_EINVALID, field, "is NULL but required");
	if ((rc = avro_value_get_by_index(rec, (size_t)idx, &f, NULL)) != 0)
		return enc_avro_fail(e, field, rc);
	return enc_string_value(e, &f, field, s);
}

static int enc_opt_value(enc_t *e, avro_value_t *f, const char *field, const char *s)
{
	avro_value_t b;
	int rc = avro_value_set_branch(f, s ? BRANCH_STRING : BRANCH_NULL, &b);
	if (rc == 0 && s == NULL)
		rc = avro_value_set_null(&b);
	if (rc != 0)
		return enc_avro_fail(e, field, rc);
	return s ? enc_string_value(e, &b, field, s) : 0;
}

static int enc_opt_str(enc_t *e, avro_value_t *rec, int idx, const char *field,
                       const char *s)
{
	avro_value_t f;
	int rc = avro_value_get_by_index(rec, (size_t)idx, &f, NULL);
	if (rc != 0)
		return enc_avro_fail(e, field, rc);
	return enc_opt_value(e, &f, field, s);
}

static int enc_long(enc_t *e, avro_value_t *rec, int idx, const char *field, int64_t v)
{
	avro_value_t f;
	int rc = avro_value_get_by_index(rec, (size_t)idx, &f, NULL);
	if (rc == 0)
		rc = avro_value_set_long(&f, v);
	return rc ? enc_avro_fail(e, field, rc) : 0;
}

static int enc_enum(enc_t *e, avro_value_t *rec, int idx, const char *field, int v,
                    int count)
{
	avro_value_t f;
	if (v < 0 || v >= count)
		return enc_fail(e, ID_EINVALID, field, "has no symbol for value %d", v);
	int rc = avro_value_get_by_index(rec, (size_t)idx, &f, NULL);
	if (rc == 0)
		rc = avro_value_set_enum(&f, v);
	return rc ? enc_avro_fail(e, field, rc) : 0;
}

/* Keys are written in id_attrs_t order (sorted): the map's bytes are stable. */
static int enc_map(enc_t *e, avro_value_t *rec, int idx, const char *field, bool nullable,
                   const id_attrs_t *a)
{
	avro_value_t m;
	int rc = avro_value_get_by_index(rec, (size_t)idx, &m, NULL);
	if (rc != 0)
		return enc_avro_fail(e, field, rc);
	for (size_t i = 0; i < a->len; i++) {
		const id_kv_t *kv = &a->items[i];
		avro_value_t v;
		size_t n;
		e->key = kv->key; /* names the entry in messages */
		if ((rc = enc_text(e, field, kv->key, &n)) != 0)
			return rc;
		if ((rc = avro_value_add(&m, kv->key, &v, NULL, NULL)) != 0)
			return enc_avro_fail(e, field, rc);
		if (nullable)
			rc = enc_opt_value(e, &v, field, kv->value);
		else if (kv->value == NULL)
			rc = enc_fail(e, ID_EINVALID, field,
			              "is NULL; this map has no nulls");
		else
			rc = enc_string_value(e, &v, field, kv->value);
		if (rc != 0)
			return rc;
	}
	e->key = NULL;
	return 0;
}

/* Writes header and body of rec into out (replacing its content). */
static int codec_frame(codec_t *c, codec_kind_t kind, avro_value_t *rec, id_buf_t *out,
                       id_err_t *err)
{
	const codec_writer_t *w = c->readers[kind].current;
	size_t size;
	int rc = avro_value_sizeof(rec, &size);
	if (rc != 0)
		return id_err_set(err, ID_EIO, "encode %s: %s", codec_kind_names[kind],
		                  avro_strerror());
	if (id_buf_reserve(out, CODEC_HEADER_LEN + size) != 0)
		return id_err_set(err, ID_ENOMEM, "encode %s: out of memory",
		                  codec_kind_names[kind]);
	unsigned char *p = out->data;
	p[0] = CODEC_MAGIC_0;
	p[1] = CODEC_MAGIC_1;
	for (int i = 0; i < 8; i++)
		p[2 + i] = (unsigned char)(w->fp >> (8 * i));
	avro_writer_memory_set_dest(c->out, (const char *)p + CODEC_HEADER_LEN,
	                            (int64_t)size);
	if ((rc = avro_value_write(c->out, rec)) != 0)
		return id_err_set(err, ID_EIO, "encode %s: %s", codec_kind_names[kind],
		                  avro_strerror());
	out->len = CODEC_HEADER_LEN + size;
	return 0;
}

/* Resets the kind's value for a new record. */
static int enc_begin(codec_t *c, codec_kind_t kind, id_buf_t *out, avro_value_t **rec,
                     id_err_t *err)
{
	id_buf_reset(out);
	*rec = &c->readers[kind].value;
	if (avro_value_reset(*rec) != 0)
		return id_err_set(err, ID_EIO, "encode %s: %s", codec_kind_names[kind],
		                  avro_strerror());
	return 0;
}

int codec_encode_event(codec_t *c, const employee_event_t *ev, id_buf_t *out,
                       id_err_t *err)
{
	const codec_kind_t K = CODEC_EMPLOYEE_EVENT;
	const int *ix = c->readers[K].idx;
	enc_t e = {K, ev->employee_id, NULL, 0, NULL, err};
	avro_value_t *rec;
	int rc = enc_begin(c, K, out, &rec, err);
	if (rc != 0)
		return rc;
	if ((rc = enc_str(&e, rec, ix[EVF_EVENT_ID], "event_id", ev->event_id)) != 0 ||
	    (rc = enc_str(&e, rec, ix[EVF_SOURCE], "source", ev->source)) != 0 ||
	    (rc = enc_str(&e, rec, ix[EVF_SOURCE_EVENT_ID], "source_event_id",
	                  ev->source_event_id)) != 0 ||
	    (rc = enc_str(&e, rec, ix[EVF_EMPLOYEE_ID], "employee_id",
	                  ev->employee_id)) != 0 ||
	    (rc = enc_enum(&e, rec, ix[EVF_TYPE], "type", (int)ev->type,
	                   EV_TYPE_COUNT)) != 0 ||
	    (rc = enc_long(&e, rec, ix[EVF_OCCURRED_AT], "occurred_at",
	                   ev->occurred_at)) != 0 ||
	    (rc = enc_long(&e, rec, ix[EVF_EFFECTIVE_AT], "effective_at",
	                   ev->effective_at)) != 0 ||
	    (rc = enc_map(&e, rec, ix[EVF_ATTRIBUTES], "attributes", true,
	                  &ev->attributes)) != 0 ||
	    (rc = enc_opt_str(&e, rec, ix[EVF_ACTOR], "actor", ev->actor)) != 0 ||
	    (rc = enc_opt_str(&e, rec, ix[EVF_REASON], "reason", ev->reason)) != 0)
		return rc;
	return codec_frame(c, K, rec, out, err);
}

static int enc_array_item(enc_t *e, avro_value_t *rec, int idx, size_t i,
                          avro_value_t *item)
{
	avro_value_t a;
	int rc = avro_value_get_by_index(rec, (size_t)idx, &a, NULL);
	if (rc == 0)
		rc = avro_value_append(&a, item, NULL);
	e->index = i;
	if (rc != 0)
		return enc_avro_fail(e, "", rc);
	return 0;
}

/* Appends v zig-zag varint encoded; out has room (checked by the caller). */
static void fast_put_long(id_buf_t *out, int64_t v)
{
	uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
	while (u >= 0x80) {
		out->data[out->len++] = (unsigned char)(u | 0x80);
		u >>= 7;
	}
	out->data[out->len++] = (unsigned char)u;
}

/* A long (also an int, an enum index, a union branch or a block count). */
static bool fast_put_varlong(id_buf_t *out, int64_t v)
{
	if (id_buf_reserve(out, 10) != 0)
		return false;
	fast_put_long(out, v);
	return true;
}

/* A required string: false for NULL or invalid UTF-8 (the general path
 * then reports it).  Copies and looks for non-ASCII bytes in one pass;
 * only a string that has some is checked byte by byte (strlen() already
 * rules out a NUL). */
static bool fast_put_str(id_buf_t *out, const char *s)
{
	if (s == NULL)
		return false;
	size_t n = strlen(s);
	if (id_buf_reserve(out, n + 10) != 0)
		return false;
	fast_put_long(out, (int64_t)n);
	unsigned char *dst = out->data + out->len;
	uint64_t high = 0;
	size_t i = 0;
	if (n >= 8) {
		uint64_t w;
		for (; i + 8 <= n; i += 8) {
			memcpy(&w, s + i, 8);
			memcpy(dst + i, &w, 8);
			high |= w;
		}
		if (i < n) { /* the last 8 bytes, overlapping */
			memcpy(&w, s + n - 8, 8);
			memcpy(dst + n - 8, &w, 8);
			high |= w;
		}
	} else if (n >= 4) {
		uint32_t a, b;
		memcpy(&a, s, 4);
		memcpy(&b, s + n - 4, 4);
		memcpy(dst, &a, 4);
		memcpy(dst + n - 4, &b, 4);
		high = a | b;
	} else {
		for (; i < n; i++) {
			dst[i] = (unsigned char)s[i];
			high |= (unsigned char)s[i];
		}
	}
	if ((high & UINT64_C(0x8080808080808080)) != 0 &&
	    utf8_bad((const unsigned char *)s, n) != n)
		return false;
	out->len += n;
	return true;
}

/* One TargetIdentity, its fields in schema order. */
static bool fast_put_target(id_buf_t *out, const codec_reader_t *r,
                            const target_identity_t *t)
{
	bool ok = true;
	for (int f = 0; ok && f < TSF_COUNT; f++) {
		switch (r->tsorder[f]) {
		case TSF_NAME:
			ok = fast_put_str(out, t->name);
			break;
		case TSF_IN_SCOPE:
			ok = id_buf_reserve(out, 1) == 0;
			if (ok)
				out->data[out->len++] = t->in_scope ? 1 : 0;
			break;
		case TSF_ATTRIBUTES:
			if (t->attributes.len > 0) {
				ok = fast_put_varlong(out, (int64_t)t->attributes.len);
				for (size_t k = 0; ok && k < t->attributes.len; k++)
					ok = fast_put_str(out,
					                  t->attributes.items[k].key) &&
					     fast_put_str(out,
					                  t->attributes.items[k].value);
			}
			ok = ok && fast_put_varlong(out, 0);
			break;
		case TSF_GROUPS:
			if (t->ngroups > 0) {
				ok = fast_put_varlong(out, (int64_t)t->ngroups);
				for (size_t k = 0; ok && k < t->ngroups; k++)
					ok = fast_put_str(out, t->groups[k]);
			}
			ok = ok && fast_put_varlong(out, 0);
			break;
		case TSF_CONTAINER:
			ok = fast_put_str(out, t->container != NULL ? t->container : "");
			break;
		default:
			ok = false;
			break;
		}
	}
	return ok;
}

/* 1 when d was encoded into out, 0 when the general path must run. */
static int fast_encode_desired(codec_t *c, const desired_identity_t *d, id_buf_t *out)
{
	const codec_reader_t *r = &c->readers[CODEC_DESIRED_IDENTITY];
	if (!r->fast || id_buf_reserve(out, CODEC_HEADER_LEN) != 0)
		return 0;
	unsigned char *h = out->data;
	h[0] = CODEC_MAGIC_0;
	h[1] = CODEC_MAGIC_1;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char)(r->current->fp >> (8 * i));
	out->len = CODEC_HEADER_LEN;
	bool ok = true;
	for (int i = 0; ok && i < r->nfields; i++) {
		switch (r->order[i]) {
		case DIF_EMPLOYEE_ID:
			ok = fast_put_str(out, d->employee_id);
			break;
		case DIF_VERSION:
			ok = fast_put_varlong(out, d->version);
			break;
		case DIF_STATE:
			ok = (unsigned)d->state < LC_STATE_COUNT &&
			     fast_put_varlong(out, (int64_t)d->state);
			break;
		case DIF_ATTRIBUTES:
			if (d->attributes.len > 0) {
				ok = fast_put_varlong(out, (int64_t)d->attributes.len);
				for (size_t k = 0; ok && k < d->attributes.len; k++)
					ok = fast_put_str(out,
					                  d->attributes.items[k].key) &&
					     fast_put_str(out,
					                  d->attributes.items[k].value);
			}
			ok = ok && fast_put_varlong(out, 0);
			break;
		case DIF_GROUPS:
			if (d->ngroups > 0) {
				ok = fast_put_varlong(out, (int64_t)d->ngroups);
				for (size_t k = 0; ok && k < d->ngroups; k++)
					ok = fast_put_str(out, d->groups[k]);
			}
			ok = ok && fast_put_varlong(out, 0);
			break;
		case DIF_CONTAINER:
			ok = fast_put_str(out, d->container);
			break;
		case DIF_MANAGER_ID:
			if (d->manager_id == NULL)
				ok = fast_put_varlong(out, BRANCH_NULL);
			else
				ok = fast_put_varlong(out, BRANCH_STRING) &&
				     fast_put_str(out, d->manager_id);
			break;
		case DIF_POLICY_VERSION:
			ok = fast_put_str(out, d->policy_version);
			break;
		case DIF_CAUSE_EVENT_ID:
			ok = fast_put_str(out, d->cause_event_id);
			break;
		case DIF_EFFECTIVE_AT:
			ok = fast_put_varlong(out, d->effective_at);
			break;
		case DIF_CAUSES:
			if (d->ncauses > 0) {
				ok = fast_put_varlong(out, (int64_t)d->ncauses);
				for (size_t k = 0; ok && k < d->ncauses; k++) {
					const attr_cause_t *ac = &d->causes[k];
					for (int f = 0; ok && f < r->nsub; f++) {
						int m = r->suborder[f];
						ok = fast_put_str(out, m == ACF_ATTRIBUTE
						                           ? ac->attribute
						                       : m == ACF_EVENT_ID
						                           ? ac->event_id
						                           : ac->rule);
					}
				}
			}
			ok = ok && fast_put_varlong(out, 0);
			break;
		case DIF_TARGETS:
			if (d->ntargets > 0) {
				ok = fast_put_varlong(out, (int64_t)d->ntargets);
				for (size_t k = 0; ok && k < d->ntargets; k++)
					ok = fast_put_target(out, r, &d->targets[k]);
			}
			ok = ok && fast_put_varlong(out, 0);
			break;
		default:
			ok = false;
			break;
		}
	}
	if (ok)
		return 1;
	out->len = 0;
	return 0;
}

int codec_encode_desired(codec_t *c, const desired_identity_t *d, id_buf_t *out,
                         id_err_t *err)
{
	const codec_kind_t K = CODEC_DESIRED_IDENTITY;
	const int *ix = c->readers[K].idx;
	const int *sub = c->readers[K].sub;
	enc_t e = {K, d->employee_id, NULL, 0, NULL, err};
	avro_value_t *rec;
	id_buf_reset(out);
	if (fast_encode_desired(c, d, out))
		return 0;
	int rc = enc_begin(c, K, out, &rec, err);
	if (rc != 0)
		return rc;
	if ((rc = enc_str(&e, rec, ix[DIF_EMPLOYEE_ID], "employee_id", d->employee_id)) !=
	        0 ||
	    (rc = enc_long(&e, rec, ix[DIF_VERSION], "version", d->version)) != 0 ||
	    (rc = enc_enum(&e, rec, ix[DIF_STATE], "state", (int)d->state,
	                   LC_STATE_COUNT)) != 0 ||
	    (rc = enc_map(&e, rec, ix[DIF_ATTRIBUTES], "attributes", false,
	                  &d->attributes)) != 0 ||
	    (rc = enc_str(&e, rec, ix[DIF_CONTAINER], "container", d->container)) != 0 ||
	    (rc = enc_opt_str(&e, rec, ix[DIF_MANAGER_ID], "manager_id",
	                      d->manager_id)) != 0 ||
	    (rc = enc_str(&e, rec, ix[DIF_POLICY_VERSION], "policy_version",
	                  d->policy_version)) != 0 ||
	    (rc = enc_str(&e, rec, ix[DIF_CAUSE_EVENT_ID], "cause_event_id",
	                  d->cause_event_id)) != 0 ||
	    (rc = enc_long(&e, rec, ix[DIF_EFFECTIVE_AT], "effective_at",
	                   d->effective_at)) != 0)
		return rc;
	for (size_t i = 0; i < d->ngroups; i++) {
		avro_value_t g;
		char what[32];
		snprintf(what, sizeof(what), "groups[%zu]", i);
		if (d->groups[i] == NULL)
			return enc_fail(&e, ID_EINVALID, what, "is NULL");
		if ((rc = enc_array_item(&e, rec, ix[DIF_GROUPS], i, &g)) != 0 ||
		    (rc = enc_string_value(&e, &g, what, d->groups[i])) != 0)
			return rc;
	}
	e.array = "causes";
	for (size_t i = 0; i < d->ncauses; i++) {
		avro_value_t ac;
		const attr_cause_t *cause = &d->causes[i];
		if ((rc = enc_array_item(&e, rec, ix[DIF_CAUSES], i, &ac)) != 0 ||
		    (rc = enc_str(&e, &ac, sub[ACF_ATTRIBUTE], "attribute",
		                  cause->attribute)) != 0 ||
		    (rc = enc_str(&e, &ac, sub[ACF_EVENT_ID], "event_id",
		                  cause->event_id)) != 0 ||
		    (rc = enc_str(&e, &ac, sub[ACF_RULE], "rule", cause->rule)) != 0)
			return rc;
	}
	e.array = "targets";
	const int *ts = c->readers[K].tsub;
	for (size_t i = 0; i < d->ntargets; i++) {
		avro_value_t ti, f;
		const target_identity_t *t = &d->targets[i];
		if ((rc = enc_array_item(&e, rec, ix[DIF_TARGETS], i, &ti)) != 0 ||
		    (rc = enc_str(&e, &ti, ts[TSF_NAME], "name", t->name)) != 0 ||
		    (rc = enc_str(&e, &ti, ts[TSF_CONTAINER], "container",
		                  t->container != NULL ? t->container : "")) != 0 ||
		    (rc = enc_map(&e, &ti, ts[TSF_ATTRIBUTES], "attributes", false,
		                  &t->attributes)) != 0)
			return rc;
		if ((rc = avro_value_get_by_index(&ti, (size_t)ts[TSF_IN_SCOPE], &f,
		                                  NULL)) != 0 ||
		    (rc = avro_value_set_boolean(&f, t->in_scope ? 1 : 0)) != 0)
			return enc_avro_fail(&e, "in_scope", rc);
		for (size_t k = 0; k < t->ngroups; k++) {
			avro_value_t ga, gv;
			if (t->groups[k] == NULL)
				return enc_fail(&e, ID_EINVALID, "groups", "is NULL");
			if ((rc = avro_value_get_by_index(&ti, (size_t)ts[TSF_GROUPS],
			                                  &ga, NULL)) != 0 ||
			    (rc = avro_value_append(&ga, &gv, NULL)) != 0)
				return enc_avro_fail(&e, "groups", rc);
			if ((rc = enc_string_value(&e, &gv, "groups", t->groups[k])) != 0)
				return rc;
		}
	}
	return codec_frame(c, K, rec, out, err);
}

int codec_encode_result(codec_t *c, const sink_result_t *r, id_buf_t *out, id_err_t *err)
{
	const codec_kind_t K = CODEC_SINK_RESULT;
	const int *ix = c->readers[K].idx;
	const int *sub = c->readers[K].sub;
	enc_t e = {K, r->employee_id, NULL, 0, NULL, err};
	avro_value_t *rec;
	int rc = enc_begin(c, K, out, &rec, err);
	if (rc != 0)
		return rc;
	if ((rc = enc_str(&e, rec, ix[SRF_TARGET], "target", r->target)) != 0 ||
	    (rc = enc_str(&e, rec, ix[SRF_EMPLOYEE_ID], "employee_id", r->employee_id)) !=
	        0 ||
	    (rc = enc_long(&e, rec, ix[SRF_DESIRED_VERSION], "desired_version",
	                   r->desired_version)) != 0 ||
	    (rc = enc_enum(&e, rec, ix[SRF_OUTCOME], "outcome", (int)r->outcome,
	                   SINK_OUTCOME_COUNT)) != 0 ||
	    (rc = enc_opt_str(&e, rec, ix[SRF_ERROR], "error", r->error)) != 0 ||
	    (rc = enc_long(&e, rec, ix[SRF_AT], "at", r->at)) != 0)
		return rc;
	e.array = "operations";
	for (size_t i = 0; i < r->nops; i++) {
		avro_value_t so;
		const sink_op_t *op = &r->ops[i];
		if ((rc = enc_array_item(&e, rec, ix[SRF_OPERATIONS], i, &so)) != 0 ||
		    (rc = enc_str(&e, &so, sub[SOF_OP], "op", op->op)) != 0 ||
		    (rc = enc_str(&e, &so, sub[SOF_ATTRIBUTE], "attribute",
		                  op->attribute)) != 0 ||
		    (rc = enc_opt_str(&e, &so, sub[SOF_OLD_VALUE], "old_value",
		                      op->old_value)) != 0 ||
		    (rc = enc_opt_str(&e, &so, sub[SOF_NEW_VALUE], "new_value",
		                      op->new_value)) != 0)
			return rc;
	}
	return codec_frame(c, K, rec, out, err);
}

int codec_encode_name_claim(codec_t *c, const name_claim_t *nc, id_buf_t *out,
                            id_err_t *err)
{
	const codec_kind_t K = CODEC_NAME_CLAIM;
	const int *ix = c->readers[K].idx;
	enc_t e = {K, nc->employee_id, NULL, 0, NULL, err};
	avro_value_t *rec;
	int rc = enc_begin(c, K, out, &rec, err);
	if (rc != 0)
		return rc;
	if ((rc = enc_str(&e, rec, ix[NCF_CLAIM_ID], "claim_id", nc->claim_id)) != 0 ||
	    (rc = enc_enum(&e, rec, ix[NCF_KIND], "kind", (int)nc->kind,
	                   NAME_CLAIM_KIND_COUNT)) != 0 ||
	    (rc = enc_str(&e, rec, ix[NCF_NAMESPACE], "namespace", nc->ns)) != 0 ||
	    (rc = enc_str(&e, rec, ix[NCF_VALUE], "value", nc->value)) != 0 ||
	    (rc = enc_str(&e, rec, ix[NCF_EMPLOYEE_ID], "employee_id",
	                  nc->employee_id)) != 0 ||
	    (rc = enc_long(&e, rec, ix[NCF_CLAIMED_AT], "claimed_at", nc->claimed_at)) !=
	        0 ||
	    (rc = enc_long(&e, rec, ix[NCF_QUARANTINE_UNTIL], "quarantine_until",
	                   nc->quarantine_until)) != 0 ||
	    (rc = enc_str(&e, rec, ix[NCF_SOURCE_EVENT_ID], "source_event_id",
	                  nc->source_event_id)) != 0)
		return rc;
	return codec_frame(c, K, rec, out, err);
}
