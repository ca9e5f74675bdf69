/*
 * policy.c (cmd) — `idstream policy check POLICY [--records FILE] [--json]
 * [--now TIME] [--state STATE]`, `idstream policy version POLICY` and
 * `idstream policy deploy (POLICY | --default) [--reason TEXT]`.
 *
 * check loads the policy, evaluates built-in synthetic employees (a full
 * record, a minimal one, a disabled one) twice each and requires identical
 * results, then prints the identity every record of an HR export would get
 * per target: the mapping tests an admin runs before deploying a policy.
 * Unique values are granted as a fresh deployment would, in file order:
 * each namespace gets its first candidate not taken by an earlier record,
 * and the record is evaluated again with ctx.granted until it is stable.
 *
 * deploy runs the same checks, then writes one POLICY_ACTIVATED marker
 * carrying the policy's source and version to EVERY partition of
 * <prefix>.hr.events, all in one Kafka transaction (transactional.id
 * "<prefix>.policy.deploy", so two concurrent deployments fence each other
 * instead of interleaving): either every partition switches, each at a
 * defined offset of its log, or none does.  The marker layout is in
 * processors/policy_registry.h.  A policy that fails a check, is larger
 * than POLICY_SOURCE_MAX, lacks the "ldap" target or is not UTF-8 text
 * writes nothing.
 *
 * check and version touch neither Kafka nor a directory.  The clock is read
 * for the default of --now and for the markers' occurred/effective time.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/attrs.h"
#include "common/buf.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ingest/csv_reader.h"
#include "processors/mapping.h"
#include "processors/policy.h"
#include "processors/policy_registry.h"
#include "schemas/codec.h"

#define GRANT_ROUNDS 8

static void policy_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: idstream policy check POLICY [--records FILE.csv] [--json]\n"
	    "                             [--now TIME] [--state STATE]\n"
	    "       idstream policy version POLICY\n"
	    "       idstream policy deploy (POLICY | --default) [--reason TEXT]\n"
	    "                              [--expect-version VERSION]\n"
	    "\n"
	    "check    load the Lua policy, run it on built-in synthetic employees "
	    "(twice,\n"
	    "         to prove it deterministic), print its version and, with "
	    "--records,\n"
	    "         the identity each employee of an HR export would get per target.\n"
	    "         Unique values (usernames, e-mails, ...) are granted in file order\n"
	    "         as if no name were taken yet.\n"
	    "version  print the policy version (sha256:<16 hex digits of the file's "
	    "hash>)\n"
	    "deploy   check the policy as `check` does (without records), then "
	    "write one\n"
	    "         POLICY_ACTIVATED event carrying it to every partition of "
	    "hr.events, in\n"
	    "         one Kafka transaction. Each partition switches at that point "
	    "of its log;\n"
	    "         the processor re-evaluates the partition's employees with the "
	    "new policy.\n"
	    "         --default deploys the built-in mapping back.\n"
	    "\n"
	    "  --records FILE  HR export CSV (the format `idstream ingest csv` reads)\n"
	    "  --json          one JSON document instead of the table\n"
	    "  --now TIME      ctx.now, YYYY-MM-DD or ISO-8601 (default: the current "
	    "time)\n"
	    "  --state STATE   ctx.state of the records: ACTIVE (default), PENDING,\n"
	    "                  SUSPENDED, DISABLED, DELETED\n"
	    "  --reason TEXT   deploy: why, recorded in the events (with the user as "
	    "actor)\n"
	    "  --expect-version VERSION\n"
	    "                  deploy: refuse unless the file has this version (used "
	    "by apply)\n"
	    "\n"
	    "Exit status: 0 when the policy and every record evaluate, 1 otherwise,\n"
	    "64 for a usage error.  Errors name the policy file and line.\n"
	    "The contract and the helpers are documented in examples/policy.lua and\n"
	    "processors/README.md.\n");
}

typedef struct check_opts {
	const char *policy;
	const char *records;
	bool json;
	int64_t now;
	lifecycle_state_t state;
} check_opts_t;

/* ---- synthetic employees ------------------------------------------------- */

typedef struct synthetic {
	const char *label;
	const char *employee_id;
	lifecycle_state_t state;
	const char *const *kv; /* key, value, ..., NULL */
} synthetic_t;

static const char *const synth_full[] = {"first_name",
                                         "Zoë",
                                         "last_name",
                                         "Ødegård-Smith",
                                         "preferred_name",
                                         "Zo",
                                         "title",
                                         "Senior Engineering Manager",
                                         "department",
                                         "R&D, Platform",
                                         "location",
                                         "Oslo",
                                         "manager_id",
                                         "SYNTH-0",
                                         "employment_type",
                                         "Full-Time",
                                         "start_date",
                                         "2026-03-02",
                                         NULL};
static const char *const synth_minimal[] = {"first_name", "Ann", "last_name", "Lee",
                                            NULL};

static const synthetic_t synthetics[] = {
    {"full record", "SYNTH-1", LC_ACTIVE, synth_full},
    {"only the required fields", "SYNTH-2", LC_ACTIVE, synth_minimal},
    {"disabled employee", "SYNTH-1", LC_DISABLED, synth_full},
};

#define SYNTH_NOW 1772323200000LL /* 2026-03-01T00:00:00Z */

static int attrs_from_kv(id_attrs_t *a, const char *const *kv)
{
	for (; kv[0] != NULL; kv += 2)
		if (id_attrs_set(a, kv[0], kv[1]) != 0)
			return ID_ENOMEM;
	return 0;
}

/* Runs the synthetic employees; prints warnings; returns 0 or an exit code. */
static int check_synthetics(policy_t *p, policy_output_t *shown, bool *warned)
{
	int rc = CLI_EXIT_OK;
	policy_output_t a, b;
	policy_output_init(&a);
	policy_output_init(&b);
	for (size_t i = 0; i < sizeof(synthetics) / sizeof(*synthetics); i++) {
		const synthetic_t *s = &synthetics[i];
		id_attrs_t hr = ID_ATTRS_INIT;
		id_err_t err = {0};
		policy_input_t in = {s->employee_id, &hr,  s->state, SYNTH_NOW,
		                     "HIRE",         NULL, NULL};
		if (attrs_from_kv(&hr, s->kv) != 0) {
			id_attrs_fini(&hr);
			rc = cli_fail("out of memory", NULL);
			break;
		}
		int e = policy_evaluate(p, &in, &a, &err);
		if (e == 0)
			e = policy_evaluate(p, &in, &b, &err);
		id_attrs_fini(&hr);
		if (e != 0) {
			fprintf(stderr,
			        "idstream policy check: synthetic employee (%s): %s\n",
			        s->label, err.msg);
			if (policy_last_traceback(p)[0] != '\0')
				fprintf(stderr, "%s\n", policy_last_traceback(p));
			rc = CLI_EXIT_FAIL;
			continue;
		}
		if (!policy_output_equal(&a, &b)) {
			fprintf(
			    stderr,
			    "idstream policy check: %s: the same employee (%s) evaluated "
			    "twice gave different identities; identity() must depend on "
			    "emp and ctx only (no state kept between calls)\n",
			    policy_name(p), s->label);
			rc = CLI_EXIT_FAIL;
		}
		if (s->state != LC_ACTIVE)
			for (size_t t = 0; t < a.ntargets; t++)
				if (a.targets[t].in_scope && a.targets[t].ngroups > 0) {
					fprintf(
					    stderr,
					    "warning: %s: a %s employee keeps %zu "
					    "group(s) "
					    "in target %s (first: %s); birthright groups "
					    "are usually removed when access ends\n",
					    policy_name(p),
					    lifecycle_state_name(s->state),
					    a.targets[t].ngroups, a.targets[t].name,
					    a.targets[t].groups[0]);
					*warned = true;
				}
		if (i == 0 && shown != NULL) {
			policy_output_fini(shown);
			*shown = a;
			policy_output_init(&a);
		}
	}
	policy_output_fini(&a);
	policy_output_fini(&b);
	return rc;
}

/* ---- unique values ------------------------------------------------------- */

/* Namespace + lower-case value: names are claimed ignoring ASCII case. */
static void claim_key(char *buf, size_t n, const char *ns, const char *v)
{
	snprintf(buf, n, "%s\x1f%s", ns, v);
	for (char *c = buf; *c != '\0'; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
}

/*
 * Evaluates one record, granting each namespace its first candidate that
 * is free (or already this employee's), and re-evaluating with the grants
 * until nothing changes.  taken maps claim keys to owner ids (borrowed).
 */
static int eval_with_grants(policy_t *p, const policy_input_t *base, id_hmap_t *taken,
                            id_attrs_t *granted, policy_output_t *out, id_err_t *err)
{
	policy_input_t in = *base;
	char key[1024];
	in.granted = granted;
	for (int round = 0; round < GRANT_ROUNDS; round++) {
		bool changed = false;
		int rc = policy_evaluate(p, &in, out, err);
		if (rc != 0)
			return rc;
		for (size_t u = 0; u < out->nunique; u++) {
			const policy_unique_t *un = &out->unique[u];
			const char *pickv = NULL;
			for (size_t k = 0; k < un->nvalues && pickv == NULL; k++) {
				claim_key(key, sizeof(key), un->name, un->values[k]);
				const char *owner = id_hmap_get(taken, key);
				if (owner == NULL ||
				    strcmp(owner, base->employee_id) == 0)
					pickv = un->values[k];
			}
			if (pickv == NULL)
				return id_err_set(
				    err, ID_ECONFLICT,
				    "employee %s: every candidate of unique.%s is "
				    "taken (%zu candidates); add more",
				    base->employee_id, un->name, un->nvalues);
			const char *cur = id_attrs_get(granted, un->name);
			if (cur != NULL && strcmp(cur, pickv) == 0)
				continue;
			if (cur != NULL) { /* release the previous grant */
				claim_key(key, sizeof(key), un->name, cur);
				id_hmap_put(taken, key, NULL);
			}
			claim_key(key, sizeof(key), un->name, pickv);
			if (id_hmap_put(taken, key, (void *)base->employee_id) != 0 ||
			    id_attrs_set(granted, un->name, pickv) != 0)
				return id_err_set(err, ID_ENOMEM, "out of memory");
			changed = true;
		}
		if (!changed)
			return 0;
	}
	return id_err_set(err, ID_EINVALID,
	                  "employee %s: the unique values did not settle after %d "
	                  "evaluations; do the candidates depend on each other in a "
	                  "cycle?",
	                  base->employee_id, GRANT_ROUNDS);
}

/* ---- output -------------------------------------------------------------- */

static const char *timing_text(const policy_timing_t *t, char *buf, size_t n)
{
	char del[48];
	if (t->delete_after_days == POLICY_NEVER)
		snprintf(del, sizeof(del), "never deleted");
	else
		snprintf(del, sizeof(del), "deleted %d days after disable",
		         (int)t->delete_after_days);
	snprintf(buf, n,
	         "created %d days before start, enabled at %s, disabled %s, %s, "
	         "%s on leave, names quarantined %d days%s, time zone %s",
	         (int)t->create_days_before_start,
	         t->enable == POLICY_ENABLE_AT_START ? "start" : "creation",
	         t->disable == POLICY_DISABLE_IMMEDIATELY ? "immediately"
	                                                  : "at the effective time",
	         del, t->suspend_on_leave ? "suspended" : "not suspended",
	         (int)t->name_quarantine_days,
	         t->reuse_name_after_delete ? " (reusable after delete)" : "",
	         t->timezone ? t->timezone : "UTC");
	return buf;
}

static void print_identity(const policy_output_t *o, const id_attrs_t *granted)
{
	char tbuf[512];
	printf("  manager    %s\n", o->manager_id ? o->manager_id : "-");
	printf("  timing     %s\n", timing_text(&o->timing, tbuf, sizeof(tbuf)));
	for (size_t u = 0; u < o->nunique; u++) {
		const policy_unique_t *un = &o->unique[u];
		const char *g = granted ? id_attrs_get(granted, un->name) : NULL;
		printf("  unique     %s = %s   (candidates:", un->name,
		       g ? g : un->values[0]);
		for (size_t k = 0; k < un->nvalues; k++)
			printf(" %s", un->values[k]);
		printf(")\n");
	}
	for (size_t t = 0; t < o->ntargets; t++) {
		const policy_target_t *tg = &o->targets[t];
		if (!tg->in_scope) {
			printf("  %-10s not in scope\n", tg->name);
			continue;
		}
		/* Align values on the longest name, within reason. */
		int w = (int)strlen("container");
		for (size_t a = 0; a < tg->attributes.len; a++) {
			int l = (int)strlen(tg->attributes.items[a].key);
			if (l > w && l <= 32)
				w = l;
		}
		printf("  %-10s %-*s  %s\n", tg->name, w, "container",
		       tg->container ? tg->container : "-");
		printf("  %-10s %-*s  ", "", w, "groups");
		for (size_t g = 0; g < tg->ngroups; g++)
			printf("%s%s", g ? ", " : "", tg->groups[g]);
		printf("%s\n", tg->ngroups ? "" : "-");
		for (size_t a = 0; a < tg->attributes.len; a++)
			printf("  %-10s %-*s  %s\n", "", w, tg->attributes.items[a].key,
			       tg->attributes.items[a].value);
	}
}

static json_t *identity_json(const policy_output_t *o, const id_attrs_t *granted)
{
	const policy_timing_t *t = &o->timing;
	json_t *targets = json_object(), *unique = json_object();
	for (size_t i = 0; i < o->ntargets; i++) {
		const policy_target_t *tg = &o->targets[i];
		json_t *j = json_object();
		json_object_set_new(j, "in_scope", json_boolean(tg->in_scope));
		if (tg->in_scope) {
			json_t *attrs = json_object(), *groups = json_array();
			for (size_t a = 0; a < tg->attributes.len; a++)
				json_object_set_new(
				    attrs, tg->attributes.items[a].key,
				    json_string(tg->attributes.items[a].value));
			for (size_t g = 0; g < tg->ngroups; g++)
				json_array_append_new(groups, json_string(tg->groups[g]));
			json_object_set_new(j, "attributes", attrs);
			json_object_set_new(j, "groups", groups);
			json_object_set_new(j, "container",
			                    tg->container ? json_string(tg->container)
			                                  : json_null());
		}
		json_object_set_new(targets, tg->name, j);
	}
	for (size_t u = 0; u < o->nunique; u++) {
		const policy_unique_t *un = &o->unique[u];
		const char *g = granted ? id_attrs_get(granted, un->name) : NULL;
		json_t *c = json_array();
		for (size_t k = 0; k < un->nvalues; k++)
			json_array_append_new(c, json_string(un->values[k]));
		json_object_set_new(unique, un->name,
		                    json_pack("{s:o, s:o}", "granted",
		                              g ? json_string(g) : json_null(),
		                              "candidates", c));
	}
	json_t *timing = json_pack(
	    "{s:i, s:s, s:s, s:o, s:b, s:i, s:b, s:s}", "create_days_before_start",
	    (json_int_t)t->create_days_before_start, "enable",
	    t->enable == POLICY_ENABLE_AT_START ? "start" : "create", "disable",
	    t->disable == POLICY_DISABLE_IMMEDIATELY ? "immediate" : "effective",
	    "delete_after_days",
	    t->delete_after_days == POLICY_NEVER ? json_null()
	                                         : json_integer(t->delete_after_days),
	    "suspend_on_leave", (int)t->suspend_on_leave, "name_quarantine_days",
	    (json_int_t)t->name_quarantine_days, "reuse_name_after_delete",
	    (int)t->reuse_name_after_delete, "timezone",
	    t->timezone ? t->timezone : "UTC");
	return json_pack(
	    "{s:o, s:o, s:o, s:o}", "targets", targets, "unique", unique, "manager_id",
	    o->manager_id ? json_string(o->manager_id) : json_null(), "timing", timing);
}

static void fmt_time(int64_t ms, char *out, size_t n)
{
	time_t s = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void print_line(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "print: %s\n", line);
}

/* ---- check --------------------------------------------------------------- */

static int policy_check(const check_opts_t *o)
{
	int rc = CLI_EXIT_OK;
	id_err_t err = {0};
	policy_t *p = NULL;
	csv_export_t *x = NULL;
	json_t *doc = NULL, *records = NULL;
	id_hmap_t taken;
	policy_output_t synth, out;
	bool warned = false;
	size_t nrows = 0, failed = 0;
	char now_text[64];

	id_hmap_init(&taken);
	policy_output_init(&synth);
	policy_output_init(&out);
	if ((p = policy_load_file(o->policy, NULL, &err)) == NULL) {
		rc = cli_fail("policy check", &err);
		goto out;
	}
	if (!o->json)
		policy_set_print(p, print_line, NULL);
	if (check_synthetics(p, o->records ? NULL : &synth, &warned) != CLI_EXIT_OK) {
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	if (o->records != NULL && csv_reader_read_file(o->records, &x, &err) != 0) {
		rc = cli_fail("policy check --records", &err);
		goto out;
	}
	size_t ntargets;
	const char *const *targets = policy_targets(p, &ntargets);
	fmt_time(o->now, now_text, sizeof(now_text));
	if (o->json) {
		json_t *tl = json_array();
		for (size_t i = 0; i < ntargets; i++)
			json_array_append_new(tl, json_string(targets[i]));
		records = json_array();
		doc = json_pack("{s:s, s:s, s:s, s:o, s:s, s:I, s:s}", "policy",
		                policy_name(p), "version", policy_version(p), "sha256",
		                policy_sha256(p), "targets", tl, "now", now_text,
		                "now_ms", (json_int_t)o->now, "state",
		                lifecycle_state_name(o->state));
	} else {
		printf("policy   %s\nversion  %s\ntargets  ", policy_name(p),
		       policy_version(p));
		for (size_t i = 0; i < ntargets; i++)
			printf("%s%s", i ? ", " : "", targets[i]);
		printf("\ncheck    ok: synthetic employees evaluate, twice alike%s\n",
		       warned ? " (see warnings)" : "");
		if (o->records == NULL) {
			printf(
			    "\nSYNTH-1 (synthetic, ACTIVE, now 2026-03-01T00:00:00Z)\n");
			print_identity(&synth, NULL);
		} else {
			printf("records  %s (now %s, state %s)\n", o->records, now_text,
			       lifecycle_state_name(o->state));
		}
	}

	const csv_row_t *rows = x ? csv_export_rows(x, &nrows) : NULL;
	for (size_t r = 0; r < nrows; r++) {
		const csv_row_t *row = &rows[r];
		id_attrs_t granted = ID_ATTRS_INIT;
		policy_input_t in = {
		    row->employee_id, &row->attrs, o->state, o->now, NULL, NULL, NULL};
		id_err_clear(&err);
		int e = eval_with_grants(p, &in, &taken, &granted, &out, &err);
		if (e == ID_ENOMEM) {
			id_attrs_fini(&granted);
			rc = cli_fail("out of memory", NULL);
			goto out;
		}
		if (e != 0)
			failed++;
		if (o->json) {
			json_t *j =
			    e == 0 ? json_pack("{s:s, s:I, s:o}", "employee_id",
			                       row->employee_id, "line",
			                       (json_int_t)row->line, "identity",
			                       identity_json(&out, &granted))
			           : json_pack("{s:s, s:I, s:s}", "employee_id",
			                       row->employee_id, "line",
			                       (json_int_t)row->line, "error", err.msg);
			json_array_append_new(records, j);
		} else {
			printf("\n%s (%s line %zu)\n", row->employee_id, o->records,
			       row->line);
			if (e == 0)
				print_identity(&out, &granted);
			else
				printf("  error      %s\n", err.msg);
		}
		id_attrs_fini(&granted);
	}
	if (o->json) {
		json_object_set_new(doc, "records", records);
		records = NULL;
		json_object_set_new(doc, "failed", json_integer((json_int_t)failed));
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
	} else if (x != NULL) {
		printf("\n%zu records, %zu failed\n", nrows, failed);
	}
	if (failed > 0) {
		fprintf(stderr, "idstream policy check: %zu of %zu records failed\n",
		        failed, nrows);
		rc = CLI_EXIT_FAIL;
	}
out:
	json_decref(records);
	json_decref(doc);
	policy_output_fini(&out);
	policy_output_fini(&synth);
	id_hmap_fini(&taken);
	csv_export_destroy(x);
	policy_destroy(p);
	return rc;
}

/* ---- deploy -------------------------------------------------------------- */

typedef struct deploy_opts {
	const char *policy;         /* the file, or NULL with builtin */
	bool builtin;               /* --default */
	const char *reason;         /* optional */
	const char *expect_version; /* optional */
} deploy_opts_t;

#define DEPLOY_TIMEOUT_MS 60000

/* Reads path whole (at most POLICY_SOURCE_MAX bytes) into a NUL-terminated
 * buffer.  Ownership: caller frees *out. */
static int read_policy_file(const char *path, char **out, size_t *len, id_err_t *err)
{
	struct stat st;
	FILE *f = NULL;
	char *buf = NULL;
	int rc = 0;
	if (stat(path, &st) != 0 || (f = fopen(path, "rb")) == NULL)
		return id_err_set(err, ID_EIO, "policy %s: cannot open: %s", path,
		                  strerror(errno));
	if (st.st_size < 0 || (size_t)st.st_size > POLICY_SOURCE_MAX) {
		rc = id_err_set(err, ID_EINVALID,
		                "policy %s: %lld bytes; a deployed policy travels in the "
		                "event log and may have at most %zu",
		                path, (long long)st.st_size, POLICY_SOURCE_MAX);
		goto out;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	*len = fread(buf, 1, (size_t)st.st_size + 1, f);
	if (ferror(f) || *len != (size_t)st.st_size) {
		rc = id_err_set(err, ID_EIO,
		                "policy %s: read error (changed while read?)", path);
		goto out;
	}
	buf[*len] = '\0';
	*out = buf;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return rc;
}

/* "<32 hex>" = SHA-256(text), truncated: the marker's event id. */
static void hex_id(const char *text, size_t len, char out[33])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_Digest(text, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/*
 * Loads and checks the policy to deploy: it loads, declares the target the
 * processor maps ("ldap"), evaluates the synthetic employees twice alike,
 * is UTF-8 text without NUL bytes, and has the expected version.
 * Ownership: *policy is freed by the caller with policy_destroy().
 */
static int deploy_check(const deploy_opts_t *o, const char *src, size_t len,
                        policy_t **policy, id_err_t *err)
{
	bool warned = false;
	mapping_t *m = NULL;
	policy_t *p = NULL;
	if (memchr(src, '\0', len) != NULL)
		return id_err_set(err, ID_EINVALID,
		                  "policy %s: contains a NUL byte; a policy is text",
		                  o->policy);
	if ((p = policy_create(o->policy, src, len, NULL, err)) == NULL)
		return err->code ? err->code : ID_EINVALID;
	if ((m = policy_mapping_create(p, "ldap", err)) == NULL) {
		id_err_wrap(err, "the processor maps target \"ldap\"");
		policy_destroy(p);
		return ID_EINVALID;
	}
	mapping_destroy(m);
	if (check_synthetics(p, NULL, &warned) != CLI_EXIT_OK) {
		policy_destroy(p);
		return id_err_set(err, ID_EINVALID, "policy %s: the checks above failed",
		                  o->policy);
	}
	if (o->expect_version != NULL &&
	    strcmp(o->expect_version, policy_version(p)) != 0) {
		int rc =
		    id_err_set(err, ID_ECONFLICT,
		               "policy %s: version %s, but %s was expected (the file "
		               "changed)",
		               o->policy, policy_version(p), o->expect_version);
		policy_destroy(p);
		return rc;
	}
	*policy = p;
	return 0;
}

/* Fills the marker of partition q of one deployment. */
static int deploy_marker(employee_event_t *ev, const char *deployment, int32_t q,
                         int64_t now, const char *const *attrs, const char *actor,
                         const char *reason)
{
	char sid[64], eid[33], seed[128];
	snprintf(sid, sizeof(sid), "%s:%d", deployment, (int)q);
	int n = snprintf(seed, sizeof(seed), "%s%c%s", POLICY_EVENT_SOURCE, 0, sid);
	hex_id(seed, (size_t)n, eid);
	employee_event_fini(ev);
	ev->type = EV_POLICY_ACTIVATED;
	ev->occurred_at = ev->effective_at = now;
	if ((ev->event_id = strdup(eid)) == NULL ||
	    (ev->source = strdup(POLICY_EVENT_SOURCE)) == NULL ||
	    (ev->source_event_id = strdup(sid)) == NULL ||
	    (ev->employee_id = strdup(POLICY_EVENT_KEY)) == NULL ||
	    (actor != NULL && (ev->actor = strdup(actor)) == NULL) ||
	    (reason != NULL && (ev->reason = strdup(reason)) == NULL))
		return ID_ENOMEM;
	for (; attrs[0] != NULL; attrs += 2)
		if (attrs[1] != NULL &&
		    id_attrs_set(&ev->attributes, attrs[0], attrs[1]) != 0)
			return ID_ENOMEM;
	return 0;
}

/* Writes the markers (one per partition) in one transaction. */
static int deploy_publish(const id_config_t *cfg, const char *topic,
                          const char *const *attrs, const char *reason, char *deployment,
                          size_t dlen, int32_t *nparts, id_err_t *err)
{
	rd_kafka_t *rk = NULL;
	codec_t *codec = NULL;
	employee_event_t ev;
	id_buf_t *vals = NULL;
	id_kafka_delivery_t dr = {0, RD_KAFKA_RESP_ERR_NO_ERROR, NULL, 0};
	bool in_txn = false;
	int rc = 0;
	char txid[300], actor[300];
	unsigned char rnd[8];
	struct timespec ts;

	employee_event_init(&ev);
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return id_err_set(err, ID_EIO, "no random bytes for the deployment id");
	for (size_t i = 0; i < sizeof(rnd) && 2 * i + 2 < dlen; i++)
		snprintf(deployment + 2 * i, 3, "%02x", rnd[i]);
	const char *user = getenv("USER");
	snprintf(actor, sizeof(actor), "idstream policy deploy (%s)",
	         user && user[0] ? user : "unknown user");
	snprintf(txid, sizeof(txid), "%s.policy.deploy",
	         id_config_str(cfg, "topic.prefix"));

	if ((codec = codec_create(err)) == NULL ||
	    (rk = id_kafka_producer_create(cfg, "idstream-policy-deploy", txid, err)) ==
	        NULL) {
		rc = err->code ? err->code : ID_EKAFKA;
		goto out;
	}
	if ((rc = id_kafka_partition_count(rk, topic, nparts, err)) != 0)
		goto out;
	/* Encode every marker first: one the codec refuses (e.g. a source that
	 * is not UTF-8) must stop the deployment before anything is sent. */
	if ((vals = calloc((size_t)*nparts, sizeof(*vals))) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (int32_t q = 0; q < *nparts; q++) {
		id_buf_init(&vals[q]);
		if (deploy_marker(&ev, deployment, q, now, attrs, actor, reason) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		if ((rc = policy_registry_check_marker(&ev, err)) != 0 ||
		    (rc = codec_encode_event(codec, &ev, &vals[q], err)) != 0)
			goto out;
	}
	rd_kafka_error_t *e = rd_kafka_begin_transaction(rk);
	if (e != NULL) {
		rc = id_kafka_error(err, e, "starting a Kafka transaction");
		rd_kafka_error_destroy(e);
		goto out;
	}
	in_txn = true;
	for (int32_t q = 0; q < *nparts; q++) {
		dr.pending++;
		rd_kafka_resp_err_t pe = rd_kafka_producev(
		    rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(q),
		    RD_KAFKA_V_KEY(POLICY_EVENT_KEY, strlen(POLICY_EVENT_KEY)),
		    RD_KAFKA_V_VALUE(vals[q].data, vals[q].len),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&dr),
		    RD_KAFKA_V_END);
		if (pe != RD_KAFKA_RESP_ERR_NO_ERROR) {
			dr.pending--;
			rc = id_kafka_err(err, pe, "producing a policy activation");
			goto out;
		}
	}
	/* The commit flushes and fails when a marker was not delivered. */
	for (int attempt = 0;; attempt++) {
		e = rd_kafka_commit_transaction(rk, DEPLOY_TIMEOUT_MS);
		if (e == NULL)
			break;
		if (rd_kafka_error_is_retriable(e) && attempt < 3) {
			rd_kafka_error_destroy(e);
			continue;
		}
		rc = id_kafka_error(err, e, "committing the deployment");
		rd_kafka_error_destroy(e);
		goto out;
	}
	in_txn = false;
out:
	if (in_txn) {
		e = rd_kafka_abort_transaction(rk, DEPLOY_TIMEOUT_MS);
		if (e != NULL) {
			id_log_warn("policy", "aborting the deployment: %s",
			            rd_kafka_error_string(e));
			rd_kafka_error_destroy(e);
		}
	}
	for (int32_t q = 0; vals != NULL && q < *nparts; q++)
		id_buf_fini(&vals[q]);
	free(vals);
	employee_event_fini(&ev);
	id_kafka_destroy(rk);
	codec_destroy(codec);
	return rc;
}

static int policy_deploy(cli_t *cli, const deploy_opts_t *o)
{
	id_err_t err = {0};
	char *src = NULL;
	size_t len = 0;
	policy_t *p = NULL;
	char topic[256], deployment[17] = "";
	int32_t nparts = 0;
	int rc = CLI_EXIT_FAIL;
	const char *version = MAPPING_DEFAULT_VERSION;
	const char *name = NULL;

	if (!o->builtin) {
		if (read_policy_file(o->policy, &src, &len, &err) != 0 ||
		    deploy_check(o, src, len, &p, &err) != 0) {
			cli_fail("policy deploy: nothing deployed", &err);
			goto out;
		}
		version = policy_version(p);
		name = strrchr(o->policy, '/') ? strrchr(o->policy, '/') + 1 : o->policy;
	}
	const char *attrs[] = {POLICY_ATTR_VERSION,
	                       version,
	                       POLICY_ATTR_SHA256,
	                       p ? policy_sha256(p) : NULL,
	                       POLICY_ATTR_NAME,
	                       name,
	                       POLICY_ATTR_SOURCE,
	                       src,
	                       POLICY_ATTR_BUILTIN,
	                       o->builtin ? POLICY_BUILTIN_DEFAULT : NULL,
	                       POLICY_ATTR_DEPLOYMENT,
	                       deployment,
	                       NULL};
	id_config_topic(cli->cfg, "hr.events", topic, sizeof(topic));
	if (deploy_publish(cli->cfg, topic, attrs, o->reason, deployment,
	                   sizeof(deployment), &nparts, &err) != 0) {
		cli_fail("policy deploy: nothing deployed", &err);
		goto out;
	}
	printf("deployed %s%s%s%s to %d partitions of %s (deployment %s)\n", version,
	       name ? " (" : "", name ? name : "", name ? ")" : " (built-in mapping)",
	       (int)nparts, topic, deployment);
	rc = CLI_EXIT_OK;
out:
	policy_destroy(p);
	free(src);
	return rc;
}

int cmd_policy(cli_t *cli, int argc, char **argv)
{
	check_opts_t o = {NULL, NULL, false, 0, LC_ACTIVE};
	deploy_opts_t d = {NULL, false, NULL, NULL};
	bool now_set = false;
	for (int i = 1; i < argc; i++)
		if (cli_is_help(argv[i])) {
			policy_usage(stdout);
			return CLI_EXIT_OK;
		}
	if (argc < 2) {
		policy_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	const char *sub = argv[1];
	if (strcmp(sub, "check") != 0 && strcmp(sub, "version") != 0 &&
	    strcmp(sub, "deploy") != 0)
		return cli_usage_error("policy", "unknown subcommand \"%s\"", sub);
	bool deploy = strcmp(sub, "deploy") == 0;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		if (strcmp(sub, "check") == 0 && strcmp(a, "--json") == 0) {
			o.json = true;
		} else if (strcmp(sub, "check") == 0 && strcmp(a, "--records") == 0) {
			if (!has_value)
				return cli_usage_error("policy",
				                       "--records needs a file");
			o.records = argv[++i];
		} else if (strcmp(sub, "check") == 0 && strcmp(a, "--now") == 0) {
			if (!has_value || policy_time_parse(argv[i + 1], &o.now) != 0)
				return cli_usage_error(
				    "policy",
				    "--now needs YYYY-MM-DD or an ISO-8601 time");
			i++;
			now_set = true;
		} else if (strcmp(sub, "check") == 0 && strcmp(a, "--state") == 0) {
			if (!has_value ||
			    lifecycle_state_parse(argv[i + 1], &o.state) != 0)
				return cli_usage_error(
				    "policy", "--state needs ACTIVE, PENDING, SUSPENDED, "
				              "DISABLED or DELETED");
			i++;
		} else if (deploy && strcmp(a, "--default") == 0) {
			d.builtin = true;
		} else if (deploy && strcmp(a, "--reason") == 0) {
			if (!has_value)
				return cli_usage_error("policy", "--reason needs a text");
			d.reason = argv[++i];
		} else if (deploy && strcmp(a, "--expect-version") == 0) {
			if (!has_value)
				return cli_usage_error(
				    "policy", "--expect-version needs a version");
			d.expect_version = argv[++i];
		} else if (a[0] == '-' && a[1] != '\0') {
			return cli_usage_error("policy", "unknown option %s", a);
		} else if (o.policy == NULL) {
			o.policy = a;
		} else {
			return cli_usage_error("policy", "unexpected argument \"%s\"", a);
		}
	}
	if (deploy) {
		d.policy = o.policy;
		if (d.builtin == (d.policy != NULL))
			return cli_usage_error("policy",
			                       "deploy needs either the policy file or "
			                       "--default");
		if (d.builtin && d.expect_version != NULL)
			return cli_usage_error(
			    "policy", "--expect-version applies to a policy file");
		return policy_deploy(cli, &d);
	}
	if (o.policy == NULL)
		return cli_usage_error("policy", "%s needs the policy file", sub);
	if (strcmp(sub, "version") == 0) {
		id_err_t err = {0};
		policy_t *p = policy_load_file(o.policy, NULL, &err);
		if (p == NULL)
			return cli_fail("policy version", &err);
		printf("%s\n", policy_version(p));
		policy_destroy(p);
		return CLI_EXIT_OK;
	}
	if (!now_set) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		o.now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	}
	return policy_check(&o);
}
