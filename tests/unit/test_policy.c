/*
 * test_policy.c — the Lua policy engine: examples/policy.lua on sample
 * employees (attributes, groups, containers, candidates, scoping, timing),
 * every helper, the sandbox (escapes refused, budgets, determinism), error
 * positions, the mapping adapter against the default mapping, and a fold
 * driven by a policy.
 *
 * Run from the repository root (or set IDSTREAM_REPO): it reads
 * examples/policy.lua and examples/hr-export-1.csv.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/attrs.h"
#include "common/err.h"
#include "ingest/csv_reader.h"
#include "processors/employee_record.h"
#include "processors/fold.h"
#include "processors/mapping.h"
#include "processors/policy.h"
#include "schemas/model.h"

#define NOW_2026_03_01 1772323200000LL

static char example_path[1024];
static char export_path[1024];

static const char *repo_file(char *buf, size_t n, const char *rel)
{
	const char *repo = getenv("IDSTREAM_REPO");
	snprintf(buf, n, "%s%s%s", repo ? repo : "", repo ? "/" : "", rel);
	return buf;
}

static policy_t *load_example(void)
{
	id_err_t err = {0};
	policy_t *p = policy_load_file(example_path, NULL, &err);
	if (p == NULL)
		fail_msg("%s", err.msg);
	return p;
}

static policy_t *load_src(const char *name, const char *src, const policy_limits_t *lim)
{
	id_err_t err = {0};
	policy_t *p = policy_create(name, src, strlen(src), lim, &err);
	if (p == NULL)
		fail_msg("%s", err.msg);
	return p;
}

/* HR attributes from "key", "value", ..., NULL. */
static void hr_set(id_attrs_t *a, const char *const *kv)
{
	id_attrs_init(a);
	for (; kv[0] != NULL; kv += 2)
		assert_int_equal(id_attrs_set(a, kv[0], kv[1]), 0);
}

static const char *const asa[] = {"first_name",
                                  "Åsa",
                                  "last_name",
                                  "Nagy",
                                  "title",
                                  "Chief Executive Officer",
                                  "department",
                                  "Operations",
                                  "location",
                                  "Zürich",
                                  "employment_type",
                                  "Full-Time",
                                  "start_date",
                                  "2012-01-02",
                                  NULL};

static const char *attr(const policy_output_t *o, const char *target, const char *a)
{
	const policy_target_t *t = policy_output_target(o, target);
	assert_non_null(t);
	return id_attrs_get(&t->attributes, a);
}

static void assert_groups(const policy_target_t *t, const char *const *want)
{
	size_t n = 0;
	for (; want[n] != NULL; n++)
		;
	if (t->ngroups != n) {
		for (size_t i = 0; i < t->ngroups; i++)
			print_message("group %s\n", t->groups[i]);
		fail_msg("%s: %zu groups, want %zu", t->name, t->ngroups, n);
	}
	for (size_t i = 0; i < n; i++)
		assert_string_equal(t->groups[i], want[i]);
}

static void assert_candidates(const policy_output_t *o, const char *ns,
                              const char *const *want)
{
	const policy_unique_t *u = policy_output_unique(o, ns);
	size_t n = 0;
	assert_non_null(u);
	for (; want[n] != NULL; n++)
		assert_string_equal(u->values[n], want[n]);
	assert_int_equal(u->nvalues, n);
}

static int eval(policy_t *p, const char *id, const id_attrs_t *hr, lifecycle_state_t st,
                const char *reason, policy_output_t *out, id_err_t *err)
{
	policy_input_t in = {id, hr, st, NOW_2026_03_01, NULL, reason, NULL};
	return policy_evaluate(p, &in, out, err);
}

/* ---- examples/policy.lua ------------------------------------------------- */

static void test_example_full_employee(void **state)
{
	(void)state;
	policy_t *p = load_example();
	policy_output_t o;
	id_attrs_t hr;
	id_err_t err = {0};
	policy_output_init(&o);
	hr_set(&hr, asa);

	assert_int_equal(eval(p, "E10001", &hr, LC_ACTIVE, NULL, &o, &err), 0);
	/* LDAP: the default mapping's attributes. */
	assert_string_equal(attr(&o, "ldap", "uid"), "anagy");
	assert_string_equal(attr(&o, "ldap", "mail"), "anagy@example.com");
	assert_string_equal(attr(&o, "ldap", "cn"), "Åsa Nagy");
	assert_string_equal(attr(&o, "ldap", "givenName"), "Åsa");
	assert_string_equal(attr(&o, "ldap", "employeeNumber"), "E10001");
	assert_string_equal(attr(&o, "ldap", "l"), "Zürich");
	assert_null(attr(&o, "ldap", "manager"));
	const policy_target_t *ldap = policy_output_target(&o, "ldap");
	assert_true(ldap->in_scope);
	assert_string_equal(ldap->container, "ou=Operations");
	static const char *const lg[] = {"dept-operations", "loc-zurich", "managers",
	                                 "staff", NULL};
	assert_groups(ldap, lg);
	/* AD: ASCII names, ≤ 20 character account name, its own OU tree. */
	assert_string_equal(attr(&o, "ad", "sAMAccountName"), "anagy");
	assert_string_equal(attr(&o, "ad", "userPrincipalName"),
	                    "anagy@corp.example.com");
	assert_string_equal(attr(&o, "ad", "givenName"), "Asa");
	assert_string_equal(attr(&o, "ad", "initials"), "AN");
	assert_string_equal(attr(&o, "ad", "employeeType"), "FTE");
	assert_string_equal(attr(&o, "ad", "info"), "Started 2012-01-02");
	assert_null(attr(&o, "ad", "accountExpires"));
	const policy_target_t *ad = policy_output_target(&o, "ad");
	assert_string_equal(ad->container, "OU=Operations,OU=Staff");
	static const char *const ag[] = {"GG-All-Staff", "GG-Dept-Operations",
	                                 "GG-Managers", "GG-Tenure-5y", NULL};
	assert_groups(ad, ag);
	/* SCIM: an employee is in scope. */
	const policy_target_t *scim = policy_output_target(&o, "scim");
	assert_true(scim->in_scope);
	assert_null(scim->container);
	assert_string_equal(attr(&o, "scim", "userName"), "anagy@example.com");
	assert_string_equal(attr(&o, "scim", "emails[type eq \"work\"].value"),
	                    "anagy@example.com");
	/* Candidates, in order. */
	static const char *const users[] = {"anagy",  "asanagy", "anagy2", "anagy3",
	                                    "anagy4", "anagy5",  "anagy6", "anagy7",
	                                    "anagy8", "anagy9",  NULL};
	assert_candidates(&o, "username", users);
	static const char *const mails[] = {"anagy@example.com", "asa.nagy@example.com",
	                                    NULL};
	assert_candidates(&o, "email", mails);
	assert_int_equal(o.nunique, 3);
	assert_string_equal(o.unique[0].name, "ad_sam"); /* sorted by name */
	/* Timing. */
	assert_int_equal(o.timing.create_days_before_start, 7);
	assert_int_equal(o.timing.enable, POLICY_ENABLE_AT_START);
	assert_int_equal(o.timing.disable, POLICY_DISABLE_AT_EFFECTIVE);
	assert_int_equal(o.timing.delete_after_days, 90);
	assert_true(o.timing.suspend_on_leave);
	assert_int_equal(o.timing.name_quarantine_days, 365);
	assert_false(o.timing.reuse_name_after_delete);
	assert_string_equal(o.timing.timezone, "Europe/Zurich");
	assert_null(o.manager_id);

	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
}

static void test_example_contractor(void **state)
{
	(void)state;
	static const char *const kv[] = {"first_name",
	                                 "Christopher",
	                                 "last_name",
	                                 "Schröder-Montgomery",
	                                 "title",
	                                 "Data Engineer",
	                                 "department",
	                                 "Engineering",
	                                 "location",
	                                 "Atlantis",
	                                 "manager_id",
	                                 "E10002",
	                                 "employment_type",
	                                 "Contractor",
	                                 "contract_end_date",
	                                 "2026-06-30",
	                                 NULL};
	policy_t *p = load_example();
	policy_output_t o;
	id_attrs_t hr;
	id_err_t err = {0};
	policy_output_init(&o);
	hr_set(&hr, kv);

	assert_int_equal(eval(p, "E20001", &hr, LC_ACTIVE, NULL, &o, &err), 0);
	/* Scoping: no SCIM account for contractors. */
	assert_false(policy_output_target(&o, "scim")->in_scope);
	assert_true(policy_output_target(&o, "ldap")->in_scope);
	assert_string_equal(policy_output_target(&o, "ad")->container, "OU=Contractors");
	/* sAMAccountName candidates stay within 20 characters with suffixes. */
	const policy_unique_t *u = policy_output_unique(&o, "ad_sam");
	assert_non_null(u);
	for (size_t i = 0; i < u->nvalues; i++)
		assert_true(strlen(u->values[i]) <= 20);
	assert_string_equal(u->values[0], "cschrodermontgomery");
	assert_string_equal(u->values[1], "cschrodermontgomery2");
	assert_int_equal(u->nvalues, 9);
	/* The account expires the day after the contract ends (AD FILETIME). */
	assert_string_equal(attr(&o, "ad", "accountExpires"), "134273376000000000");
	static const char *const lg[] = {"contractors", "dept-engineering",
	                                 "loc-atlantis", "staff", NULL};
	assert_groups(policy_output_target(&o, "ldap"), lg);
	/* Contractors: created one day early, deleted sooner; unknown place → UTC. */
	assert_int_equal(o.timing.create_days_before_start, 1);
	assert_int_equal(o.timing.delete_after_days, 30);
	assert_string_equal(o.timing.timezone, "UTC");
	assert_string_equal(o.manager_id, "E10002");

	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
}

static void test_example_disabled_and_reason(void **state)
{
	(void)state;
	policy_t *p = load_example();
	policy_output_t o;
	id_attrs_t hr;
	id_err_t err = {0};
	policy_output_init(&o);
	hr_set(&hr, asa);

	assert_int_equal(eval(p, "E10001", &hr, LC_DISABLED, " Involuntary ", &o, &err),
	                 0);
	for (size_t i = 0; i < o.ntargets; i++)
		assert_int_equal(o.targets[i].ngroups, 0); /* access ends: no groups */
	assert_string_equal(attr(&o, "ldap", "uid"), "anagy");
	assert_int_equal(o.timing.disable, POLICY_DISABLE_IMMEDIATELY);

	assert_int_equal(eval(p, "E10001", &hr, LC_DISABLED, "resignation", &o, &err), 0);
	assert_int_equal(o.timing.disable, POLICY_DISABLE_AT_EFFECTIVE);
	/* An HR column can say it too. */
	assert_int_equal(id_attrs_set(&hr, "termination_reason", "For Cause"), 0);
	assert_int_equal(eval(p, "E10001", &hr, LC_DISABLED, NULL, &o, &err), 0);
	assert_int_equal(o.timing.disable, POLICY_DISABLE_IMMEDIATELY);

	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
}

static void test_example_granted_names(void **state)
{
	(void)state;
	policy_t *p = load_example();
	policy_output_t o;
	id_attrs_t hr, granted = ID_ATTRS_INIT;
	id_err_t err = {0};
	policy_output_init(&o);
	hr_set(&hr, asa);
	assert_int_equal(id_attrs_set(&granted, "username", "anagy2"), 0);
	assert_int_equal(id_attrs_set(&granted, "ad_sam", "ANAGY3"), 0);
	policy_input_t in = {"E10001", &hr,  LC_ACTIVE, NOW_2026_03_01,
	                     NULL,     NULL, &granted};

	assert_int_equal(policy_evaluate(p, &in, &o, &err), 0);
	assert_string_equal(attr(&o, "ldap", "uid"), "anagy2");
	/* The e-mail follows the granted username until it is granted itself. */
	assert_string_equal(attr(&o, "ldap", "mail"), "anagy2@example.com");
	static const char *const mails[] = {"anagy2@example.com", "asa.nagy@example.com",
	                                    NULL};
	assert_candidates(&o, "email", mails);
	/* Granted values compare ignoring case; the candidate's spelling wins. */
	assert_string_equal(attr(&o, "ad", "sAMAccountName"), "anagy3");
	/* A grant that is no longer a candidate (a rename) is not used. */
	assert_int_equal(id_attrs_set(&granted, "username", "someoneelse"), 0);
	assert_int_equal(policy_evaluate(p, &in, &o, &err), 0);
	assert_string_equal(attr(&o, "ldap", "uid"), "anagy");

	policy_output_fini(&o);
	id_attrs_fini(&hr);
	id_attrs_fini(&granted);
	policy_destroy(p);
}

/* ---- the adapter against the default mapping ------------------------------ */

static bool groups_subset(const desired_identity_t *a, const desired_identity_t *b)
{
	for (size_t i = 0; i < a->ngroups; i++) {
		bool found = false;
		for (size_t k = 0; k < b->ngroups && !found; k++)
			found = strcmp(a->groups[i], b->groups[k]) == 0;
		if (!found)
			return false;
	}
	return true;
}

static const char *cause_rule(const desired_identity_t *d, const char *a)
{
	for (size_t i = 0; i < d->ncauses; i++)
		if (strcmp(d->causes[i].attribute, a) == 0)
			return d->causes[i].rule;
	return NULL;
}

static void test_adapter_matches_default_mapping(void **state)
{
	(void)state;
	policy_t *p = load_example();
	id_err_t err = {0};
	csv_export_t *x = NULL;
	mapping_t *def = mapping_create_default("example.com", &err);
	mapping_t *pm = policy_mapping_create(p, "ldap", &err);
	assert_non_null(def);
	assert_non_null(pm);
	assert_string_equal(mapping_version(pm), policy_version(p));
	assert_int_equal(csv_reader_read_file(export_path, &x, &err), 0);
	size_t n;
	const csv_row_t *rows = csv_export_rows(x, &n);
	assert_true(n >= 200);
	for (size_t i = 0; i < n; i++) {
		for (int s = 0; s < 2; s++) {
			lifecycle_state_t st = s == 0 ? LC_ACTIVE : LC_DISABLED;
			desired_identity_t a, b;
			desired_identity_init(&a);
			desired_identity_init(&b);
			a.employee_id = strdup(rows[i].employee_id);
			b.employee_id = strdup(rows[i].employee_id);
			a.effective_at = b.effective_at = NOW_2026_03_01;
			assert_int_equal(mapping_apply(def, &rows[i].attrs, st, &a, &err),
			                 0);
			if (mapping_apply(pm, &rows[i].attrs, st, &b, &err) != 0)
				fail_msg("%s", err.msg);
			if (!id_attrs_equal(&a.attributes, &b.attributes))
				fail_msg(
				    "%s: LDAP attributes differ from the default mapping",
				    rows[i].employee_id);
			assert_string_equal(a.container, b.container);
			if (a.manager_id == NULL)
				assert_null(b.manager_id);
			else
				assert_string_equal(a.manager_id, b.manager_id);
			assert_true(groups_subset(&a, &b));
			if (st == LC_DISABLED)
				assert_int_equal(b.ngroups, 0);
			assert_int_equal(b.state, st);
			assert_string_equal(b.policy_version, policy_version(p));
			assert_string_equal(cause_rule(&b, "uid"), "policy:ldap.uid");
			assert_string_equal(cause_rule(&b, "@groups"),
			                    "policy:ldap.groups");
			assert_string_equal(cause_rule(&b, "@container"),
			                    "policy:ldap.container");
			assert_string_equal(cause_rule(&b, "@state"), "policy:state");
			desired_identity_fini(&a);
			desired_identity_fini(&b);
		}
	}
	/* The same refusal as the default mapping for a name that folds to
	 * nothing, with the policy line. */
	static const char *const cjk[] = {"first_name", "小龙", "last_name", "李", NULL};
	id_attrs_t hr;
	desired_identity_t d;
	hr_set(&hr, cjk);
	desired_identity_init(&d);
	d.employee_id = strdup("E9");
	assert_int_equal(mapping_apply(def, &hr, LC_ACTIVE, &d, &err), ID_EINVALID);
	assert_int_equal(mapping_apply(pm, &hr, LC_ACTIVE, &d, &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "employee E9: policy "));
	assert_non_null(strstr(err.msg, "policy.lua:"));
	assert_non_null(strstr(err.msg, "first_name \"小龙\" has no letter or digit"));
	desired_identity_fini(&d);
	id_attrs_fini(&hr);

	csv_export_destroy(x);
	mapping_destroy(pm);
	mapping_destroy(def);
	policy_destroy(p);
}

static void test_adapter_scope_trace_and_targets(void **state)
{
	(void)state;
	static const char *src =
	    "return { targets = { 'ldap', 'scim' },\n"
	    "  identity = function(emp, ctx)\n"
	    "    local g = ctx.state == 'ACTIVE' and { 'staff' } or {}\n"
	    "    return { targets = {\n"
	    "      ldap = { attributes = { uid = lower(emp.first_name), x = emp.nope },\n"
	    "               groups = g },\n"
	    "      scim = emp.department == 'Sales' and { attributes = { a = 'b' } } } "
	    "}\n"
	    "  end }\n";
	policy_t *p = load_src("t.lua", src, NULL);
	id_err_t err = {0};
	mapping_trace_t tr = MAPPING_TRACE_INIT;
	desired_identity_t d;
	id_attrs_t hr;
	static const char *const kv[] = {"first_name", "Ann", "department", "Legal",
	                                 NULL};
	hr_set(&hr, kv);
	desired_identity_init(&d);
	d.employee_id = strdup("E1");

	assert_null(policy_mapping_create(p, "ad", &err));
	assert_int_equal(err.code, ID_EINVALID);
	assert_non_null(strstr(err.msg, "\"ad\" is not declared"));

	mapping_t *ldap = policy_mapping_create(p, "ldap", &err);
	mapping_t *scim = policy_mapping_create(p, "scim", &err);
	assert_int_equal(mapping_apply_traced(ldap, &hr, LC_ACTIVE, &d, &tr, &err), 0);
	assert_string_equal(id_attrs_get(&d.attributes, "uid"), "ann");
	/* Without declared sources, an output depends on every key read: the
	 * absent "nope" and the lifecycle included. */
	const char *const *src_uid = mapping_trace_find(&tr, "uid");
	assert_non_null(src_uid);
	assert_string_equal(src_uid[0], "@lifecycle");
	assert_string_equal(src_uid[1], "department");
	assert_string_equal(src_uid[2], "first_name");
	assert_string_equal(src_uid[3], "nope");
	assert_null(src_uid[4]);
	assert_string_equal(mapping_trace_find(&tr, "@state")[0], "@lifecycle");

	/* Every declared target has its section; the ldap one in scope. */
	assert_int_equal(d.ntargets, 2);
	const target_identity_t *sl = desired_identity_target(&d, "ldap");
	const target_identity_t *ss = desired_identity_target(&d, "scim");
	assert_non_null(sl);
	assert_non_null(ss);
	assert_true(sl->in_scope);
	assert_string_equal(id_attrs_get(&sl->attributes, "uid"), "ann");
	assert_false(ss->in_scope);
	assert_int_equal(ss->attributes.len, 0);
	assert_non_null(mapping_trace_find(&tr, "ldap.uid"));

	/* Out of scope for scim, the primary target of this mapping: no
	 * error, nothing at the top level, the ldap section still there. */
	assert_int_equal(mapping_apply(scim, &hr, LC_ACTIVE, &d, &err), 0);
	assert_int_equal(d.attributes.len, 0);
	assert_int_equal(d.ngroups, 0);
	assert_false(desired_identity_target(&d, "scim")->in_scope);
	assert_string_equal(
	    id_attrs_get(&desired_identity_target(&d, "ldap")->attributes, "uid"), "ann");
	assert_int_equal(id_attrs_set(&hr, "department", "Sales"), 0);
	assert_int_equal(mapping_apply(scim, &hr, LC_ACTIVE, &d, &err), 0);
	assert_string_equal(id_attrs_get(&d.attributes, "a"), "b");
	assert_true(desired_identity_target(&d, "scim")->in_scope);

	mapping_trace_fini(&tr);
	desired_identity_fini(&d);
	id_attrs_fini(&hr);
	mapping_destroy(ldap);
	mapping_destroy(scim);
	policy_destroy(p);
}

/* A HIRE then a title change, folded with the example policy: each
 * attribute's cause is the event that changed its declared sources. */
static void test_fold_with_policy(void **state)
{
	(void)state;
	policy_t *p = load_example();
	id_err_t err = {0};
	mapping_t *m = policy_mapping_create(p, "ldap", &err);
	employee_record_t rec;
	employee_event_t ev;
	desired_identity_t out;
	bool emitted = false;
	employee_record_init(&rec);
	desired_identity_init(&out);
	employee_event_init(&ev);

	ev.event_id = strdup("ev-hire");
	ev.employee_id = strdup("E10001");
	ev.type = EV_HIRE;
	ev.effective_at = NOW_2026_03_01;
	hr_set(&ev.attributes, asa);
	assert_int_equal(fold_apply(&rec, &ev, m, &out, &emitted, &err), 0);
	assert_true(emitted);
	assert_int_equal(out.version, 1);
	assert_string_equal(out.policy_version, policy_version(p));
	assert_string_equal(id_attrs_get(&out.attributes, "uid"), "anagy");
	employee_event_fini(&ev);

	employee_event_init(&ev);
	ev.event_id = strdup("ev-title");
	ev.employee_id = strdup("E10001");
	ev.type = EV_UPDATE;
	ev.effective_at = NOW_2026_03_01 + 1000;
	assert_int_equal(id_attrs_set(&ev.attributes, "title", "Chair"), 0);
	assert_int_equal(fold_apply(&rec, &ev, m, &out, &emitted, &err), 0);
	assert_true(emitted);
	assert_int_equal(out.version, 2);
	assert_string_equal(id_attrs_get(&out.attributes, "title"), "Chair");
	for (size_t i = 0; i < out.ncauses; i++) {
		const attr_cause_t *c = &out.causes[i];
		/* The top level (the ldap section) and the sections' outputs
		 * with declared sources: the title and the groups ("Chair" is no
		 * manager title) come from the title change, the rest from the
		 * hire.  An output without declared sources depends on every key
		 * read, so the title change is its newest cause. */
		static const char *const declared[] = {"ldap.uid",
		                                       "ldap.title",
		                                       "ldap.@groups",
		                                       "ad.sAMAccountName",
		                                       "ad.userPrincipalName",
		                                       "ad.title",
		                                       "ad.department",
		                                       NULL};
		bool check = strchr(c->attribute, '.') == NULL;
		for (size_t k = 0; declared[k] != NULL; k++)
			check = check || strcmp(c->attribute, declared[k]) == 0;
		if (!check)
			continue;
		const char *dot = strrchr(c->attribute, '.');
		const char *name = dot != NULL ? dot + 1 : c->attribute;
		const char *want =
		    strcmp(name, "title") == 0 || strcmp(name, "@groups") == 0
		        ? "ev-title"
		        : "ev-hire";
		if (strcmp(c->event_id, want) != 0)
			fail_msg("cause of %s is %s, want %s", c->attribute, c->event_id,
			         want);
	}
	employee_event_fini(&ev);
	desired_identity_fini(&out);
	employee_record_fini(&rec);
	mapping_destroy(m);
	policy_destroy(p);
}

/* ---- helpers ------------------------------------------------------------- */

/*
 * Each case is evaluated as tostring(<expr>) into an attribute; C compares
 * with the expected text ("nil" for nil, lists joined with "|").
 */
typedef struct helper_case {
	const char *expr;
	const char *want;
} helper_case_t;

static const helper_case_t helper_cases[] = {
    {"lower('ÅSA ØDEGÅRD Ŀ ΣΩ Ж')", "åsa ødegård ŀ σω ж"},
    {"upper('straße ÿ ł')", "STRAßE Ÿ Ł"},
    {"proper(\"o'BRIEN-smith jr.\")", "O'Brien-Smith Jr."},
    {"lower(nil)", "nil"},
    {"lower(42)", "42"},
    {"trim('  \\t a b \\194\\160')", "a b"},
    {"trim('   ')", ""},
    {"fold('Straße Åsa Øyvind Ødegård')", "Strasse Asa Oyvind Odegard"},
    {"normalize_diacritics('Łódź')", "Lodz"},
    {"alnum(\"O'Brien-Ødegård\")", "obrienodegard"},
    {"alnum('李')", "nil"},
    {"slug('R&D / Øst')", "r-d-ost"},
    {"slug('---')", "nil"},
    {"initial('Æsa')", "ae"},
    {"initial(\"'Ilse\")", "i"},
    {"initial('李')", "nil"},
    {"mid('Ødegård', 2, 3)", "deg"},
    {"substring('Ødegård', 5)", "ård"},
    {"mid('abc', 0, 2)", "ab"},
    {"mid(nil, 1, 2)", "nil"},
    {"left('Åsa', 1)", "Å"},
    {"left('Åsa', 10)", "Åsa"},
    {"right('Ødegård', 3)", "ård"},
    {"right('ab', 0)", ""},
    {"join(', ', 'a', nil, '', 'b', 3)", "a, b, 3"},
    {"join('.', {'x', 'y'}, 'z')", "x.y.z"},
    {"join('-')", ""},
    {"table.concat(split('a,b,,c'), '|')", "a|b||c"},
    {"table.concat(split('a::b', '::'), '|')", "a|b"},
    {"#split(nil)", "0"},
    {"replace('a.b.c', '.', '')", "abc"},
    {"replace('aaa', 'a', 'bb')", "bbbbbb"},
    {"starts_with('Senior Engineer', 'Senior')", "true"},
    {"ends_with('Senior Engineer', 'Engineer')", "true"},
    {"contains('Senior Engineer', 'nior E')", "true"},
    {"contains(nil, 'x')", "false"},
    {"dn_escape('Smith, John #1 ')", "Smith\\, John #1\\ "},
    {"dn_escape('#R+D')", "\\#R\\+D"},
    {"sam_account_name('Christopher.Schröder-Montgomery')", "christopher.schroder"},
    {"sam_account_name('.A:B[C]')", "abc"},
    {"sam_account_name('a.b.', 3)", "a.b"},
    {"sam_account_name('李')", "nil"},
    {"table.concat(candidates('a', nil, '', {'B', 'b', 'c'}, 'a'), '|')", "a|B|c"},
    {"table.concat(with_suffixes('jsmith', 3), '|')", "jsmith|jsmith2|jsmith3"},
    {"table.concat(with_suffixes('abcdef', 3, 6), '|')", "abcdef|abcde2|abcde3"},
    {"#with_suffixes(nil, 5)", "0"},
    {"pick(ctx, 'username', {'a', 'b'})", "a"},
    {"pick(ctx, 'username', {})", "nil"},
    {"iif(true, 'y', 'n')", "y"},
    {"iif(nil, 'y', 'n')", "n"},
    {"coalesce(nil, '', '  ', false, 'x', 'y')", "x"},
    {"coalesce(nil)", "nil"},
    {"switch('b', {a = 1, b = 2}, 0)", "2"},
    {"switch('z', {a = 1}, 'default')", "default"},
    {"switch(nil, {a = 1}, 'default')", "default"},
    {"lookup(' engineering ', {Engineering = 'eng'}, 'x')", "eng"},
    {"lookup('ENG', {eng = 1, Eng = 2}, 'x')", "2"},
    {"lookup(nil, {a = 1}, 'x')", "x"},
    {"in_list('Intern', {'Contractor', 'Intern'})", "true"},
    {"in_list(nil, {'x'})", "false"},
    {"get({a = {b = {c = 'deep'}}}, 'a.b.c')", "deep"},
    {"get({a = {b = 1}}, 'a.x.c', 'dflt')", "dflt"},
    {"get({list = {'one', 'two'}}, 'list.2')", "two"},
    {"get(emp, 'first_name')", "Ann"},
    {"get(nil, 'a', 'd')", "d"},
    {"is_empty(nil)", "true"},
    {"is_empty('  ')", "true"},
    {"is_empty({})", "true"},
    {"is_empty({1})", "false"},
    {"is_empty('x')", "false"},
    {"date_parse('2026-03-01')", "1772323200000"},
    {"date_parse('2026-03-01T10:30:00Z')", "1772361000000"},
    {"date_parse('2026-03-01T10:30:00.250+02:00')", "1772353800250"},
    {"date_parse('2026-03-01 10:30')", "1772361000000"},
    {"date_parse('1969-12-31')", "-86400000"},
    {"date_parse('2024-02-29')", "1709164800000"},
    {"date_parse('2023-02-29')", "nil"},
    {"select(2, date_parse('03/01/2026'))",
     "\"03/01/2026\" is not a date (YYYY-MM-DD or ISO-8601)"},
    {"date_parse('')", "nil"},
    {"date_format(1772361000250, '%Y-%m-%dT%H:%M:%S.%LZ')", "2026-03-01T10:30:00.250Z"},
    {"date_format('2026-03-01')", "2026-03-01"},
    {"date_format(-1, '%F %T')", "1969-12-31 23:59:59"},
    {"date_format(date_add_days('2024-02-28', 1))", "2024-02-29"},
    {"date_format(date_add_days('2026-03-01', -1))", "2026-02-28"},
    {"date_diff_days('2026-03-01', '2026-12-25')", "299"},
    {"date_diff_days('2026-03-02', '2026-03-01T12:00:00Z')", "-1"},
    {"date_diff_days(nil, '2026-01-01')", "nil"},
    {"ctx.now", "1772323200000"},
    {"ctx.today", "2026-03-01"},
    {"ctx.state", "ACTIVE"},
    {"ctx.event", "nil"},
    {"ctx.reason", "nil"},
    {"ctx.employee_id", "E7"},
    {"emp.employee_id", "E7"},
    {"emp.blank", "nil"},
    {"emp.missing", "nil"},
    {"tostring({})", "table"},
    {"tostring(print)", "function"},
    {"string.format('%s/%5.1f', {}, 2.25)", "table/  2.2"},
    {"('x'):upper()", "X"},
    {"(function() local k = {} for key in pairs({b = 1, a = 2, c = 3, [2] = 0, [1] = 0}) "
     "do k[#k + 1] = key end return table.concat(k, '|') end)()",
     "1|2|a|b|c"},
    {"(function() local k = {} for key, v in pairs(emp) do k[#k + 1] = key .. '=' .. v "
     "end return table.concat(k, '|') end)()",
     "first_name=Ann|last_name=Lee"},
    {"select('#', pcall(error, 'x'))", "2"},
    {"math.random", "nil"},
    {"math.floor(7 / 2)", "3"},
    {"utf8.len('Åsa')", "3"},
    {"load('return 1 + 1')()", "2"},
    {"collectgarbage()", "0"},
};

static void test_helpers(void **state)
{
	(void)state;
	size_t n = sizeof(helper_cases) / sizeof(*helper_cases);
	id_buf_t src = ID_BUF_INIT;
	id_err_t err = {0};
	assert_int_equal(id_buf_append_str(&src, "return { targets = { 'ldap' },\n"
	                                         "identity = function(emp, ctx)\n"
	                                         "  local a = {}\n"),
	                 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(id_buf_printf(&src, "  a.c%03zu = tostring(%s)\n", i,
		                               helper_cases[i].expr),
		                 0);
	assert_int_equal(id_buf_append_str(&src, "  return { targets = { ldap = { "
	                                         "attributes = a } } }\nend }\n"),
	                 0);
	assert_int_equal(id_buf_append_u8(&src, 0), 0);
	policy_t *p = load_src("helpers.lua", (char *)src.data, NULL);
	static const char *const kv[] = {"first_name", "Ann", "last_name", "Lee",
	                                 "blank",      "  ",  NULL};
	id_attrs_t hr;
	policy_output_t o;
	hr_set(&hr, kv);
	policy_output_init(&o);
	if (eval(p, "E7", &hr, LC_ACTIVE, NULL, &o, &err) != 0)
		fail_msg("%s", err.msg);
	for (size_t i = 0; i < n; i++) {
		char key[16];
		snprintf(key, sizeof(key), "c%03zu", i);
		const char *got = attr(&o, "ldap", key);
		const char *want = helper_cases[i].want;
		if (want[0] == '\0' ? got != NULL : got == NULL || strcmp(got, want) != 0)
			fail_msg("%s = %s, want %s", helper_cases[i].expr,
			         got ? got : "(absent)", want[0] ? want : "(absent)");
	}
	policy_output_fini(&o);
	id_attrs_fini(&hr);
	id_buf_fini(&src);
	policy_destroy(p);
}

/* Evaluates `body` inside identity(); returns its error (or passes). */
static int eval_snippet(const char *body, const policy_limits_t *lim, id_err_t *err)
{
	char src[4096];
	snprintf(src, sizeof(src),
	         "return { targets = { 'ldap' },\n"
	         "identity = function(emp, ctx)\n"
	         "%s\n"
	         "return { targets = { ldap = {} } }\n"
	         "end }\n",
	         body);
	policy_t *p = load_src("snippet.lua", src, lim);
	static const char *const kv[] = {"first_name", "Ann",      "last_name", "Lee",
	                                 "bad",        "\xff\xfe", NULL};
	id_attrs_t hr;
	policy_output_t o;
	hr_set(&hr, kv);
	policy_output_init(&o);
	int rc = eval(p, "E7", &hr, LC_ACTIVE, NULL, &o, err);
	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
	return rc;
}

typedef struct refusal {
	const char *body;
	const char *msg; /* part of the error message */
} refusal_t;

static const refusal_t helper_errors[] = {
    {"lower({})", "snippet.lua:3: lower: argument 1: expected a string, got table"},
    {"fold('\\255')", "snippet.lua:3: fold: invalid UTF-8 at byte 0"},
    {"mid('a\\0b', 1)", "mid: argument 1 contains a NUL byte"},
    {"with_suffixes('a', 0)", "with_suffixes: count 0 is not in 1..1000"},
    {"split('a', '')", "split: the separator is empty"},
    {"date_add_days('tomorrow', 1)",
     "date_add_days: argument 1 \"tomorrow\" is not a date"},
    {"date_format(0, '%q')", "date_format: unknown conversion '%q'"},
    {"local x = emp.bad", "snippet.lua:3: employee E7: HR field bad: invalid UTF-8"},
    {"local x = ctx.stat", "ctx has no field 'stat'"},
    {"emp.first_name = 'x'", "emp is read-only"},
    {"for k in pairs({[{}] = 1}) do end", "pairs: a table key has no stable order"},
};

static void test_helper_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(helper_errors) / sizeof(*helper_errors); i++) {
		id_err_t err = {0};
		int rc = eval_snippet(helper_errors[i].body, NULL, &err);
		if (rc != ID_EINVALID || strstr(err.msg, helper_errors[i].msg) == NULL)
			fail_msg("%s: rc %d, \"%s\"; want \"%s\"", helper_errors[i].body,
			         rc, err.msg, helper_errors[i].msg);
		assert_non_null(strstr(err.msg, "employee E7: policy snippet.lua:"));
	}
}

/* ---- the sandbox --------------------------------------------------------- */

static const refusal_t escapes[] = {
    {"io.open('/etc/passwd')", "attempt to index a nil value (global 'io')"},
    {"os.execute('true')", "attempt to index a nil value (global 'os')"},
    {"local t = os.time()", "global 'os'"},
    {"require('os')", "attempt to call a nil value (global 'require')"},
    {"local x = package.loaded", "global 'package'"},
    {"debug.traceback()", "global 'debug'"},
    {"dofile('/etc/passwd')", "global 'dofile'"},
    {"loadfile('/etc/passwd')", "global 'loadfile'"},
    {"string.dump(print)", "attempt to call a nil value (field 'dump')"},
    {"assert(load('\\27LuaT\\0\\25\\147\\13\\n\\26\\n'))",
     "attempt to load a binary chunk"},
    {"load('return 1', 'x', 'b')", "binary chunks are not allowed"},
    {"load(function() return nil end)", "only source text"},
    {"coroutine.wrap(print)", "global 'coroutine'"},
    {"next({})", "global 'next'"},
    {"rawset(_G, 'x', 1)", "global 'rawset'"},
    {"collectgarbage('count')", "collectgarbage(\"count\") is not available"},
    {"collectgarbage('stop')", "collectgarbage(\"stop\") is not available"},
    {"setmetatable({}, {__gc = print})", "__gc is not available"},
    {"setmetatable({}, {__mode = 'k'})", "__mode is not available"},
    {"local s = string.format('%p', {})", "'%p' is not available"},
    {"local mt = getmetatable('').__index", "attempt to index a boolean value"},
    {"string.upper = nil", "string.upper is read-only"},
    {"math.pi = 3", "math.pi is read-only"},
    {"setmetatable(string, {})", "cannot change a protected metatable"},
    {"x = 1", "global 'x' is read-only once the policy has loaded"},
    {"_G.lower = nil", "global 'lower' is read-only"},
    {"local r = math.random(1, 6)", "field 'random'"},
    {"math.randomseed(1)", "field 'randomseed'"},
    {"print = nil", "global 'print' is read-only"},
    {"local f = load('x = 1'); f()", "global 'x' is read-only"},
};

static void test_sandbox_escapes_refused(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(escapes) / sizeof(*escapes); i++) {
		id_err_t err = {0};
		int rc = eval_snippet(escapes[i].body, NULL, &err);
		if (rc != ID_EINVALID || strstr(err.msg, escapes[i].msg) == NULL)
			fail_msg("%s: rc %d, \"%s\"; want \"%s\"", escapes[i].body, rc,
			         err.msg, escapes[i].msg);
	}
}

static void test_budget_instructions(void **state)
{
	(void)state;
	policy_limits_t lim = {100000, 0};
	static const char *src =
	    "return { targets = { 'ldap' },\n"
	    "identity = function(emp, ctx)\n"
	    "  if emp.mode == 'loop' then\n"
	    "    while true do end\n"
	    "  elseif emp.mode == 'pcall' then\n"
	    "    while true do pcall(function() while true do end end) end\n"
	    "  end\n"
	    "  return { targets = { ldap = { attributes = { uid = 'ok' } } } }\n"
	    "end }\n";
	policy_t *p = load_src("loop.lua", src, &lim);
	id_attrs_t hr = ID_ATTRS_INIT;
	policy_output_t o;
	id_err_t err = {0};
	policy_output_init(&o);

	assert_int_equal(id_attrs_set(&hr, "mode", "loop"), 0);
	assert_int_equal(eval(p, "E42", &hr, LC_ACTIVE, NULL, &o, &err), ID_EINVALID);
	assert_string_equal(err.msg,
	                    "employee E42: policy loop.lua:4: instruction budget "
	                    "of 100000 exceeded");
	/* pcall cannot swallow the budget error. */
	assert_int_equal(id_attrs_set(&hr, "mode", "pcall"), 0);
	assert_int_equal(eval(p, "E43", &hr, LC_ACTIVE, NULL, &o, &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "employee E43: policy loop.lua:6: instruction "
	                                "budget of 100000 exceeded"));
	/* The interpreter is fine afterwards, and the budget is per evaluation. */
	assert_int_equal(id_attrs_set(&hr, "mode", "normal"), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(eval(p, "E44", &hr, LC_ACTIVE, NULL, &o, &err), 0);
	assert_string_equal(attr(&o, "ldap", "uid"), "ok");

	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
}

static void test_budget_memory(void **state)
{
	(void)state;
	policy_limits_t lim = {0, 1024 * 1024};
	static const char *src =
	    "return { targets = { 'ldap' },\n"
	    "identity = function(emp, ctx)\n"
	    "  if emp.mode == 'bomb' then\n"
	    "    local t = {}\n"
	    "    for i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end\n"
	    "  elseif emp.mode == 'rep' then\n"
	    "    local s = ('x'):rep(1e9)\n"
	    "  elseif emp.mode == 'pcall' then\n"
	    "    pcall(string.rep, 'x', 1e8)\n"
	    "  end\n"
	    "  return { targets = { ldap = { attributes = { uid = 'ok' } } } }\n"
	    "end }\n";
	policy_t *p = load_src("bomb.lua", src, &lim);
	id_attrs_t hr = ID_ATTRS_INIT;
	policy_output_t o;
	id_err_t err = {0};
	policy_output_init(&o);

	assert_int_equal(id_attrs_set(&hr, "mode", "bomb"), 0);
	assert_int_equal(eval(p, "E50", &hr, LC_ACTIVE, NULL, &o, &err), ID_EINVALID);
	assert_string_equal(err.msg, "employee E50: policy bomb.lua:5: memory budget of "
	                             "1048576 bytes exceeded");
	assert_int_equal(id_attrs_set(&hr, "mode", "rep"), 0);
	assert_int_equal(eval(p, "E51", &hr, LC_ACTIVE, NULL, &o, &err), ID_EINVALID);
	assert_non_null(strstr(err.msg, "memory budget of 1048576 bytes exceeded"));
	assert_int_equal(id_attrs_set(&hr, "mode", "pcall"), 0);
	assert_int_equal(eval(p, "E52", &hr, LC_ACTIVE, NULL, &o, &err), ID_EINVALID);
	assert_non_null(
	    strstr(err.msg, "employee E52: policy bomb.lua:9: memory budget"));
	/* Usable afterwards: the runaway's garbage was collected. */
	assert_int_equal(id_attrs_set(&hr, "mode", "normal"), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(eval(p, "E53", &hr, LC_ACTIVE, NULL, &o, &err), 0);

	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
}

static void test_budget_at_load(void **state)
{
	(void)state;
	policy_limits_t lim = {50000, 0};
	id_err_t err = {0};
	static const char *src = "local n = 0\nwhile true do n = n + 1 end\n";
	assert_null(policy_create("top.lua", src, strlen(src), &lim, &err));
	assert_int_equal(err.code, ID_EINVALID);
	assert_string_equal(err.msg, "policy top.lua:2: instruction budget of 50000 "
	                             "exceeded while loading");
}

/* ---- errors name the file and the line ------------------------------------ */

static void test_errors_name_file_and_line(void **state)
{
	(void)state;
	id_err_t err = {0};
	static const char *src = "return { targets = { 'ldap' },\n"
	                         "identity = function(emp, ctx)\n"
	                         "  local n = 1\n"
	                         "  local x = emp.department .. '-x'\n"
	                         "  return { targets = { ldap = {} } }\n"
	                         "end }\n";
	policy_t *p = load_src("conf/policy.lua", src, NULL);
	id_attrs_t hr = ID_ATTRS_INIT;
	policy_output_t o;
	policy_output_init(&o);
	assert_int_equal(eval(p, "E1", &hr, LC_ACTIVE, NULL, &o, &err), ID_EINVALID);
	assert_string_equal(err.msg, "employee E1: policy conf/policy.lua:4: attempt to "
	                             "concatenate a nil value (field 'department')");
	assert_non_null(strstr(policy_last_traceback(p), "conf/policy.lua:4:"));
	policy_destroy(p);

	/* error() with a table, and error(msg, 0) without a position. */
	assert_int_equal(eval_snippet("error({})", NULL, &err), ID_EINVALID);
	assert_string_equal(err.msg,
	                    "employee E7: policy snippet.lua:3: error object is a "
	                    "table value");
	assert_int_equal(eval_snippet("error('no position', 0)", NULL, &err),
	                 ID_EINVALID);
	assert_string_equal(err.msg, "employee E7: policy snippet.lua:3: no position");

	/* Syntax errors: ID_EPARSE with the line. */
	static const char *bad = "return {\n targets = { 'ldap' }\n identity = 1 }\n";
	assert_null(policy_create("bad.lua", bad, strlen(bad), NULL, &err));
	assert_int_equal(err.code, ID_EPARSE);
	assert_non_null(strstr(err.msg, "policy bad.lua:3: '}' expected"));

	/* A whole binary chunk as the file is refused. */
	static const char bin[] = "\x1bLuaT\x00";
	assert_null(policy_create("bin.lua", bin, sizeof(bin) - 1, NULL, &err));
	assert_int_equal(err.code, ID_EPARSE);
	assert_non_null(strstr(err.msg, "binary chunk"));

	/* Module shape errors. */
	static const struct {
		const char *src, *msg;
	} shapes[] = {
	    {"return 42", "m.lua: the file returns a number"},
	    {"return { identity = function() end }", "m.lua: targets is a nil"},
	    {"return { targets = {'LDAP'}, identity = function() end }",
	     "targets[1] \"LDAP\": target names are 1-32 of [a-z0-9_-]"},
	    {"return { targets = {'ldap', 'ldap'}, identity = function() end }",
	     "target \"ldap\" is declared twice"},
	    {"return { targets = {'ldap'} }", "m.lua: identity is a nil"},
	    {"return { targets = {'ldap'}, identity = print, sorces = {} }",
	     "the returned table has an unknown field \"sorces\""},
	    {"return { targets = {'ldap'}, identity = print, sources = { uid = {'@x'} } "
	     "}",
	     "sources[\"uid\"][1] \"@x\": expected an HR key"},
	    {"error('boom')", "policy m.lua:1: boom"},
	};
	for (size_t i = 0; i < sizeof(shapes) / sizeof(*shapes); i++) {
		assert_null(policy_create("m.lua", shapes[i].src, strlen(shapes[i].src),
		                          NULL, &err));
		if (strstr(err.msg, shapes[i].msg) == NULL)
			fail_msg("%s: \"%s\"; want \"%s\"", shapes[i].src, err.msg,
			         shapes[i].msg);
	}
	/* The global form works too. */
	static const char *glob = "targets = { 'ldap' }\n"
	                          "function identity(emp, ctx)\n"
	                          "  return { targets = { ldap = { attributes = { "
	                          "uid = 'g' } } } }\nend\n";
	p = load_src("g.lua", glob, NULL);
	assert_int_equal(eval(p, "E1", &hr, LC_ACTIVE, NULL, &o, &err), 0);
	assert_string_equal(attr(&o, "ldap", "uid"), "g");
	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
}

static void test_result_shape_errors(void **state)
{
	(void)state;
	static const struct {
		const char *ret, *msg;
	} cases[] = {
	    {"nil", "identity() returned a nil; expected a table with targets"},
	    {"{}", "has no targets table"},
	    {"{ targets = { ldap = { atributes = {} } } }",
	     "targets.ldap has an unknown field \"atributes\"; expected attributes, "
	     "groups, container"},
	    {"{ targets = { ad = {} } }", "targets.ad: not a target of this policy"},
	    {"{ targets = { ldap = true } }", "targets.ldap is a boolean"},
	    {"{ targets = { ldap = { attributes = { uid = {} } } } }",
	     "targets.ldap.attributes.uid is a table; expected a string or an integer"},
	    {"{ targets = { ldap = { attributes = { uid = 1.5 } } } }",
	     "targets.ldap.attributes.uid is the fraction 1.5"},
	    {"{ targets = { ldap = { attributes = { uid = true } } } }",
	     "targets.ldap.attributes.uid is true"},
	    {"{ targets = { ldap = { attributes = { uid = 'a', UID = 'b' } } } }",
	     "attributes \"UID\" and \"uid\" differ only in case"},
	    {"{ targets = { ldap = { attributes = { ['@x'] = 'a' } } } }",
	     "do not start with '@'"},
	    {"{ targets = { ldap = { attributes = { sAMAccountName = "
	     "'abcdefghijklmnopqrstu' } } } }",
	     "has 21 characters; a sAMAccountName has at most 20"},
	    {"{ targets = { ldap = { attributes = { sAMAccountName = 'a/b' } } } }",
	     "character '/' is not allowed in a sAMAccountName"},
	    {"{ targets = { ldap = { attributes = { cn = '\\255' } } } }",
	     "targets.ldap.attributes.cn: invalid UTF-8 at byte 0"},
	    {"{ targets = { ldap = { groups = 'staff' } } }",
	     "targets.ldap.groups is a string; expected a list of strings"},
	    {"{ targets = { ldap = { groups = { x = 'a' } } } }",
	     "targets.ldap.groups is not a list (it has the key x)"},
	    {"{ targets = { ldap = { groups = { 'a', '' } } } }",
	     "targets.ldap.groups[2] is empty"},
	    {"{ targets = { ldap = { container = 7 } } }", "container is a number"},
	    {"{ targets = { ldap = {} }, unique = { username = {} } }",
	     "unique.username has no candidates"},
	    {"{ targets = { ldap = {} }, unique = { ['user name'] = {'a'} } }",
	     "namespace names are 1-64"},
	    {"{ targets = { ldap = {} }, timing = { enable = 'later' } }",
	     "timing.enable must be \"start\" or \"create\""},
	    {"{ targets = { ldap = {} }, timing = { create_days_before_start = -1 } }",
	     "timing.create_days_before_start must be a whole number of days"},
	    {"{ targets = { ldap = {} }, timing = { timezone = 'Mars Base' } }",
	     "timing.timezone must be an IANA zone name"},
	    {"{ targets = { ldap = {} }, timing = { delet_after_days = 1 } }",
	     "timing has an unknown field \"delet_after_days\""},
	    {"{ targets = { ldap = {} }, manager = 'E1' }",
	     "the table has an unknown field \"manager\""},
	    {"setmetatable({}, { __index = function() return {} end })",
	     "the returned table has a metatable"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		char src[1024];
		id_err_t err = {0};
		snprintf(src, sizeof(src),
		         "return { targets = { 'ldap', 'scim' },\n"
		         "identity = function(emp, ctx)\n"
		         "  return %s\n"
		         "end }\n",
		         cases[i].ret);
		policy_t *p = load_src("shape.lua", src, NULL);
		id_attrs_t hr = ID_ATTRS_INIT;
		policy_output_t o;
		policy_output_init(&o);
		int rc = eval(p, "E3", &hr, LC_ACTIVE, NULL, &o, &err);
		if (rc != ID_EINVALID || strstr(err.msg, cases[i].msg) == NULL)
			fail_msg("%s: rc %d \"%s\"; want \"%s\"", cases[i].ret, rc,
			         err.msg, cases[i].msg);
		/* Shape errors point at identity()'s definition. */
		assert_non_null(strstr(err.msg, "employee E3: policy shape.lua:2: "
		                                "identity() result: "));
		assert_int_equal(o.ntargets, 0); /* nothing half-filled */
		policy_destroy(p);
	}
}

/* ---- determinism and version --------------------------------------------- */

static void test_determinism_and_version(void **state)
{
	(void)state;
	policy_t *p1 = load_example(), *p2 = load_example();
	policy_output_t a, b;
	id_attrs_t hr;
	id_err_t err = {0};
	policy_output_init(&a);
	policy_output_init(&b);
	hr_set(&hr, asa);

	/* Same input twice, and in two interpreters (different hash seeds). */
	assert_int_equal(eval(p1, "E10001", &hr, LC_ACTIVE, NULL, &a, &err), 0);
	assert_int_equal(eval(p1, "E10001", &hr, LC_ACTIVE, NULL, &b, &err), 0);
	assert_true(policy_output_equal(&a, &b));
	assert_int_equal(eval(p2, "E10001", &hr, LC_ACTIVE, NULL, &b, &err), 0);
	assert_true(policy_output_equal(&a, &b));
	/* Something different is different. */
	assert_int_equal(eval(p2, "E10001", &hr, LC_DISABLED, NULL, &b, &err), 0);
	assert_false(policy_output_equal(&a, &b));

	/* Version: "sha256:" + 16 hex digits of the file's SHA-256. */
	FILE *f = fopen(example_path, "rb");
	assert_non_null(f);
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	unsigned char md[32];
	unsigned int mdlen = 0;
	char hex[65], want[32];
	assert_int_equal(EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	snprintf(want, sizeof(want), "sha256:%.16s", hex);
	assert_string_equal(policy_version(p1), want);
	assert_string_equal(policy_version(p2), want);
	assert_string_equal(policy_sha256(p1), hex);
	/* One byte more is another version. */
	buf[n] = '\n';
	policy_t *p3 = policy_create("x", buf, n + 1, NULL, &err);
	assert_non_null(p3);
	assert_string_not_equal(policy_version(p3), want);

	policy_destroy(p3);
	policy_output_fini(&a);
	policy_output_fini(&b);
	id_attrs_fini(&hr);
	policy_destroy(p1);
	policy_destroy(p2);
}

static void collect_print(void *ctx, const char *line)
{
	id_buf_t *b = ctx;
	id_buf_printf(b, "%s\n", line);
}

static void test_print_goes_to_the_sink(void **state)
{
	(void)state;
	static const char *src = "return { targets = { 'ldap' },\n"
	                         "identity = function(emp, ctx)\n"
	                         "  print('hello', emp.first_name, 1, nil, {})\n"
	                         "  return { targets = { ldap = {} } }\n"
	                         "end }\n";
	policy_t *p = load_src("print.lua", src, NULL);
	id_buf_t out = ID_BUF_INIT;
	id_attrs_t hr;
	policy_output_t o;
	id_err_t err = {0};
	static const char *const kv[] = {"first_name", "Ann", NULL};
	hr_set(&hr, kv);
	policy_output_init(&o);
	assert_int_equal(eval(p, "E1", &hr, LC_ACTIVE, NULL, &o, &err),
	                 0); /* discarded */
	policy_set_print(p, collect_print, &out);
	assert_int_equal(eval(p, "E1", &hr, LC_ACTIVE, NULL, &o, &err), 0);
	assert_int_equal(id_buf_append_u8(&out, 0), 0);
	assert_string_equal((char *)out.data, "hello\tAnn\t1\tnil\ttable\n");
	id_buf_fini(&out);
	policy_output_fini(&o);
	id_attrs_fini(&hr);
	policy_destroy(p);
}

static void test_time_parse(void **state)
{
	(void)state;
	int64_t ms = 0;
	assert_int_equal(policy_time_parse("2026-03-01", &ms), 0);
	assert_int_equal(ms, NOW_2026_03_01);
	assert_int_equal(policy_time_parse("2026-03-01T01:00:00+01:00", &ms), 0);
	assert_int_equal(ms, NOW_2026_03_01);
	assert_int_equal(policy_time_parse("2026-13-01", &ms), ID_EPARSE);
	assert_int_equal(policy_time_parse("yesterday", &ms), ID_EPARSE);
	assert_int_equal(policy_time_parse(NULL, &ms), ID_EPARSE);
}

int main(void)
{
	repo_file(example_path, sizeof(example_path), "examples/policy.lua");
	repo_file(export_path, sizeof(export_path), "examples/hr-export-1.csv");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_example_full_employee),
	    cmocka_unit_test(test_example_contractor),
	    cmocka_unit_test(test_example_disabled_and_reason),
	    cmocka_unit_test(test_example_granted_names),
	    cmocka_unit_test(test_adapter_matches_default_mapping),
	    cmocka_unit_test(test_adapter_scope_trace_and_targets),
	    cmocka_unit_test(test_fold_with_policy),
	    cmocka_unit_test(test_helpers),
	    cmocka_unit_test(test_helper_errors),
	    cmocka_unit_test(test_sandbox_escapes_refused),
	    cmocka_unit_test(test_budget_instructions),
	    cmocka_unit_test(test_budget_memory),
	    cmocka_unit_test(test_budget_at_load),
	    cmocka_unit_test(test_errors_name_file_and_line),
	    cmocka_unit_test(test_result_shape_errors),
	    cmocka_unit_test(test_determinism_and_version),
	    cmocka_unit_test(test_print_goes_to_the_sink),
	    cmocka_unit_test(test_time_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
