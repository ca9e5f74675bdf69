/*
 * test_mapping.c — ASCII folding, slugs, DN escaping and the default
 * mapping: every attribute, container, group and cause of a full record,
 * absent values, disabled state and the errors for unmappable names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "processors/ascii_fold.h"
#include "processors/mapping.h"
#include "schemas/model.h"

typedef struct fold_case {
	const char *in;
	const char *plain;
	const char *alnum;
	const char *slug;
} fold_case_t;

static const fold_case_t fold_cases[] = {
    {"Øyvind", "Oyvind", "oyvind", "oyvind"},
    {"Åsa", "Asa", "asa", "asa"},
    {"Straße", "Strasse", "strasse", "strasse"},
    {"Æsir æble", "AEsir aeble", "aesiraeble", "aesir-aeble"},
    {"Ødegård ø", "Odegard o", "odegardo", "odegard-o"},
    {"Élodie Müller-Lüdenscheidt", "Elodie Muller-Ludenscheidt",
     "elodiemullerludenscheidt", "elodie-muller-ludenscheidt"},
    {"Łódź Wałęsa", "Lodz Walesa", "lodzwalesa", "lodz-walesa"},
    {"Đorđe", "Dorde", "dorde", "dorde"},
    {"Þórr", "THorr", "thorr", "thorr"},
    {"Œuvre sœur", "OEuvre soeur", "oeuvresoeur", "oeuvre-soeur"},
    {"Peña Françoise", "Pena Francoise", "penafrancoise", "pena-francoise"},
    {"Ştefan Țiriac", "Stefan Tiriac", "stefantiriac", "stefan-tiriac"},
    {"Nguyễn Thị", "Nguyen Thi", "nguyenthi", "nguyen-thi"},
    {"ẞ", "SS", "ss", "ss"},
    {"O'Brien", "O'Brien", "obrien", "o-brien"},
    {"O\xe2\x80\x99"
     "Brien",
     "O'Brien", "obrien", "o-brien"}, /* ’ U+2019 */
    {"Smith-Jones", "Smith-Jones", "smithjones", "smith-jones"},
    {"Smith\xe2\x80\x93Jones", "Smith-Jones", "smithjones", "smith-jones"}, /* – */
    {"Jose\xcc\x81", "Jose", "jose", "jose"},                               /* NFD é */
    {"R&D / Øst 2", "R&D / Ost 2", "rdost2", "r-d-ost-2"},
    {"  --Sales--  ", "  --Sales--  ", "sales", "sales"},
    {"李小龙", "", "", ""},
    {"Ivan Иванов", "Ivan ", "ivan", "ivan"},
    {"", "", "", ""},
};

static void test_fold_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(fold_cases) / sizeof(fold_cases[0]); i++) {
		const fold_case_t *c = &fold_cases[i];
		id_buf_t b = ID_BUF_INIT;
		id_err_t err = {0};

		assert_int_equal(ascii_fold_append(&b, c->in, &err), 0);
		assert_string_equal((char *)b.data, c->plain);
		id_buf_reset(&b);
		assert_int_equal(ascii_fold_alnum_append(&b, c->in, &err), 0);
		assert_string_equal((char *)b.data, c->alnum);
		id_buf_reset(&b);
		assert_int_equal(ascii_fold_slug_append(&b, c->in, &err), 0);
		assert_string_equal((char *)b.data, c->slug);
		id_buf_fini(&b);

		char *d = ascii_fold_dup(c->in, &err);
		assert_non_null(d);
		assert_string_equal(d, c->plain);
		free(d);
	}
}

static void test_fold_latin_blocks_are_ascii(void **state)
{
	(void)state;
	/* Every letter of Latin-1 Supplement and Latin Extended-A (the
	 * guaranteed coverage) folds to ASCII letters only, and none of the
	 * letters is dropped. */
	for (uint32_t cp = 0xC0; cp <= 0x17F; cp++) {
		const char *f = ascii_fold_codepoint(cp);
		if (cp == 0xD7 || cp == 0xF7) { /* × ÷ are not letters */
			assert_string_equal(f, "");
			continue;
		}
		assert_true(strlen(f) >= 1 && strlen(f) <= 2);
		for (const char *p = f; *p; p++)
			assert_true((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'));
	}
	assert_string_equal(ascii_fold_codepoint(0xDF), "ss");
	assert_string_equal(ascii_fold_codepoint(0xC6), "AE");
	assert_string_equal(ascii_fold_codepoint(0xE6), "ae");
	assert_string_equal(ascii_fold_codepoint(0xD8), "O");
	assert_string_equal(ascii_fold_codepoint(0xF8), "o");
	assert_string_equal(ascii_fold_codepoint(0xC5), "A");
	assert_string_equal(ascii_fold_codepoint(0xE9), "e");
	assert_string_equal(ascii_fold_codepoint(0x142), "l");
	assert_string_equal(ascii_fold_codepoint(0x111), "d");
	assert_string_equal(ascii_fold_codepoint(0xFE), "th");
	assert_string_equal(ascii_fold_codepoint(0x153), "oe");
	assert_string_equal(ascii_fold_codepoint(0xF1), "n");
	assert_string_equal(ascii_fold_codepoint(0xE7), "c");
	assert_string_equal(ascii_fold_codepoint(0x131), "i");
}

static void test_fold_invalid_utf8(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		size_t at;
	} bad[] = {
	    {"ab\xff", 2}, /* never valid */
	    {"\x80"
	     "abc",
	     0},                     /* stray continuation */
	    {"caf\xc3", 3},          /* truncated 2-byte */
	    {"x\xe2\x82", 1},        /* truncated 3-byte */
	    {"\xc0\xaf", 0},         /* overlong '/' */
	    {"\xe0\x80\xaf", 0},     /* overlong 3-byte */
	    {"a\xed\xa0\x80", 1},    /* UTF-16 surrogate */
	    {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
	    {"\xc3\x28", 0},         /* bad continuation */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		id_buf_t b = ID_BUF_INIT;
		id_err_t err = {0};
		char expect[64];
		assert_int_equal(id_buf_append_str(&b, "keep"), 0);
		assert_int_equal(ascii_fold_append(&b, bad[i].in, &err), ID_EPARSE);
		snprintf(expect, sizeof(expect), "invalid UTF-8 at byte %zu", bad[i].at);
		assert_string_equal(err.msg, expect);
		/* Nothing half-appended. */
		assert_int_equal(b.len, 4);
		assert_memory_equal(b.data, "keep", 5);
		assert_int_equal(ascii_fold_slug_append(&b, bad[i].in, NULL), ID_EPARSE);
		assert_int_equal(ascii_fold_utf8_check(bad[i].in, NULL), ID_EPARSE);
		assert_null(ascii_fold_dup(bad[i].in, NULL));
		id_buf_fini(&b);
	}
	assert_int_equal(ascii_fold_utf8_check("\xf0\x9f\x98\x80 ok \xc3\xa9", NULL), 0);
}

static void test_fold_lower(void **state)
{
	(void)state;
	char s[] = "MiXeD Æ 42";
	ascii_fold_lower(s);
	assert_string_equal(s, "mixed Æ 42");
}

static void test_dn_escape(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
	    {"Sales", "Sales"},
	    {"Sales, EMEA", "Sales\\, EMEA"},
	    {"R&D \"Labs\"", "R&D \\\"Labs\\\""},
	    {"a+b;c<d>e\\f", "a\\+b\\;c\\<d\\>e\\\\f"},
	    {"#1 team", "\\#1 team"},
	    {" padded ", "\\ padded\\ "},
	    {"x#y = z", "x#y = z"},
	    {"Økonomi", "Økonomi"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		id_buf_t b = ID_BUF_INIT;
		assert_int_equal(mapping_dn_escape_append(&b, cases[i][0]), 0);
		assert_string_equal((char *)b.data, cases[i][1]);
		id_buf_fini(&b);
	}
}

/* ---- the default mapping ------------------------------------------------ */

static void set_hr(id_attrs_t *hr, const char *const *kv)
{
	for (; kv[0] != NULL; kv += 2)
		assert_int_equal(id_attrs_set(hr, kv[0], kv[1]), 0);
}

static mapping_t *default_mapping(void)
{
	id_err_t err = {0};
	mapping_t *m = mapping_create_default("example.com", &err);
	assert_non_null(m);
	return m;
}

static const char *cause_rule(const desired_identity_t *d, const char *attr)
{
	for (size_t i = 0; i < d->ncauses; i++)
		if (strcmp(d->causes[i].attribute, attr) == 0)
			return d->causes[i].rule;
	return NULL;
}

static int map(const mapping_t *m, const char *const *kv, lifecycle_state_t st,
               desired_identity_t *d, id_err_t *err)
{
	id_attrs_t hr = ID_ATTRS_INIT;
	set_hr(&hr, kv);
	desired_identity_init(d);
	d->employee_id = strdup("E1001");
	d->effective_at = 1700000000000;
	int rc = mapping_apply(m, &hr, st, d, err);
	id_attrs_fini(&hr);
	return rc;
}

static void test_mapping_full_record(void **state)
{
	(void)state;
	mapping_t *m = default_mapping();
	desired_identity_t d;
	id_err_t err = {0};
	static const char *const kv[] = {"first_name",
	                                 "Øyvind",
	                                 "last_name",
	                                 "Ødegård-Smith",
	                                 "preferred_name",
	                                 "Vind",
	                                 "title",
	                                 "Staff Engineer",
	                                 "department",
	                                 "Sales, EMEA",
	                                 "location",
	                                 "Oslo",
	                                 "manager_id",
	                                 "E0042",
	                                 "employment_type",
	                                 "Full-Time",
	                                 "start_date",
	                                 "2024-01-15",
	                                 "shoe_size",
	                                 "44",
	                                 NULL};

	assert_int_equal(map(m, kv, LC_ACTIVE, &d, &err), 0);
	assert_string_equal(d.employee_id, "E1001");
	assert_int_equal(d.state, LC_ACTIVE);
	assert_int_equal(d.effective_at, 1700000000000);
	assert_int_equal(d.version, 0);
	assert_null(d.cause_event_id);

	static const char *const want[][2] = {
	    {"cn", "Vind Ødegård-Smith"},
	    {"departmentNumber", "Sales, EMEA"},
	    {"displayName", "Vind Ødegård-Smith"},
	    {"employeeNumber", "E1001"},
	    {"employeeType", "Full-Time"},
	    {"givenName", "Vind"},
	    {"l", "Oslo"},
	    {"mail", "oodegardsmith@example.com"},
	    {"sn", "Ødegård-Smith"},
	    {"title", "Staff Engineer"},
	    {"uid", "oodegardsmith"},
	};
	size_t nwant = sizeof(want) / sizeof(want[0]);
	assert_int_equal(d.attributes.len, nwant);
	for (size_t i = 0; i < nwant; i++) {
		assert_string_equal(d.attributes.items[i].key, want[i][0]);
		assert_string_equal(d.attributes.items[i].value, want[i][1]);
	}
	assert_string_equal(d.container, "ou=Sales\\, EMEA");
	assert_int_equal(d.ngroups, 2);
	assert_string_equal(d.groups[0], "dept-sales-emea");
	assert_string_equal(d.groups[1], "staff");
	assert_string_equal(d.manager_id, "E0042");
	assert_string_equal(d.policy_version, "default-1");
	assert_string_equal(mapping_version(m), MAPPING_DEFAULT_VERSION);

	/* One cause per attribute plus the four non-attribute parts, each
	 * with its rule and no event yet (the fold fills those). */
	assert_int_equal(d.ncauses, nwant + 4);
	for (size_t i = 0; i < nwant; i++) {
		char rule[64];
		snprintf(rule, sizeof(rule), "default.%s", want[i][0]);
		assert_string_equal(cause_rule(&d, want[i][0]), rule);
	}
	assert_string_equal(cause_rule(&d, MAPPING_CAUSE_CONTAINER), "default.container");
	assert_string_equal(cause_rule(&d, MAPPING_CAUSE_GROUPS), "default.groups");
	assert_string_equal(cause_rule(&d, MAPPING_CAUSE_STATE), "default.state");
	assert_string_equal(cause_rule(&d, MAPPING_CAUSE_MANAGER), "default.manager");
	for (size_t i = 0; i < d.ncauses; i++)
		assert_null(d.causes[i].event_id);

	desired_identity_fini(&d);
	mapping_destroy(m);
}

static void test_mapping_minimal_and_blank(void **state)
{
	(void)state;
	mapping_t *m = default_mapping();
	desired_identity_t d;
	/* Blank optional values count as absent. */
	static const char *const kv[] = {"first_name", "Åsa",   "last_name",
	                                 "Berg",       "title", "   ",
	                                 "department", "",      NULL};

	assert_int_equal(map(m, kv, LC_ACTIVE, &d, NULL), 0);
	assert_int_equal(d.attributes.len, 7);
	assert_string_equal(id_attrs_get(&d.attributes, "uid"), "aberg");
	assert_string_equal(id_attrs_get(&d.attributes, "mail"), "aberg@example.com");
	assert_string_equal(id_attrs_get(&d.attributes, "givenName"), "Åsa");
	assert_string_equal(id_attrs_get(&d.attributes, "cn"), "Åsa Berg");
	assert_string_equal(id_attrs_get(&d.attributes, "displayName"), "Åsa Berg");
	assert_string_equal(id_attrs_get(&d.attributes, "sn"), "Berg");
	assert_string_equal(id_attrs_get(&d.attributes, "employeeNumber"), "E1001");
	assert_true(id_attrs_has(&d.attributes, "cn"));
	assert_false(id_attrs_has(&d.attributes, "title"));
	assert_false(id_attrs_has(&d.attributes, "departmentNumber"));
	assert_false(id_attrs_has(&d.attributes, "l"));
	assert_false(id_attrs_has(&d.attributes, "employeeType"));
	assert_string_equal(d.container, "ou=Unassigned");
	assert_int_equal(d.ngroups, 1);
	assert_string_equal(d.groups[0], "staff");
	assert_null(d.manager_id);
	assert_null(cause_rule(&d, MAPPING_CAUSE_MANAGER));
	assert_null(cause_rule(&d, "title"));
	desired_identity_fini(&d);
	mapping_destroy(m);
}

static void test_mapping_disabled_has_no_groups(void **state)
{
	(void)state;
	mapping_t *m = default_mapping();
	desired_identity_t d;
	static const char *const kv[] = {"first_name", "Ann",   "last_name", "Lee",
	                                 "department", "Sales", NULL};
	assert_int_equal(map(m, kv, LC_DISABLED, &d, NULL), 0);
	assert_int_equal(d.state, LC_DISABLED);
	assert_int_equal(d.ngroups, 0);
	assert_string_equal(d.container, "ou=Sales");
	assert_string_equal(id_attrs_get(&d.attributes, "uid"), "alee");
	assert_string_equal(cause_rule(&d, MAPPING_CAUSE_GROUPS), "default.groups");
	desired_identity_fini(&d);
	mapping_destroy(m);
}

static void test_mapping_uid_shapes(void **state)
{
	(void)state;
	static const char *const cases[][3] = {
	    {"Mary", "O'Brien", "mobrien"},    {"Anna", "Smith-Jones", "asmithjones"},
	    {"Jean-Luc", "Picard", "jpicard"}, {"Æsa", "Berg", "aeberg"},
	    {"Øyvind", "Åsen", "oasen"},       {"'Ilse", "van der Berg", "ivanderberg"},
	    {"Günther", "Weiß", "gweiss"},     {"Zoë", "D'Angelo 3rd", "zdangelo3rd"},
	};
	mapping_t *m = default_mapping();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		desired_identity_t d;
		const char *kv[] = {"first_name", cases[i][0], "last_name", cases[i][1],
		                    NULL};
		char mail[64];
		assert_int_equal(map(m, kv, LC_ACTIVE, &d, NULL), 0);
		assert_string_equal(id_attrs_get(&d.attributes, "uid"), cases[i][2]);
		snprintf(mail, sizeof(mail), "%s@example.com", cases[i][2]);
		assert_string_equal(id_attrs_get(&d.attributes, "mail"), mail);
		desired_identity_fini(&d);
	}
	mapping_destroy(m);
}

static void test_mapping_long_values(void **state)
{
	(void)state;
	/* Long enough that every internal buffer has to grow. */
	char last[601], want_uid[400], want_mail[420];
	for (int i = 0; i < 300; i++)
		memcpy(last + 2 * i, "\xc3\xa9", 2); /* é */
	last[600] = '\0';
	want_uid[0] = 'z';
	memset(want_uid + 1, 'e', 300);
	want_uid[301] = '\0';
	snprintf(want_mail, sizeof(want_mail), "%s@example.com", want_uid);

	mapping_t *m = default_mapping();
	desired_identity_t d;
	const char *kv[] = {"first_name", "Zoë", "last_name", last,
	                    "department", last,  NULL};
	assert_int_equal(map(m, kv, LC_ACTIVE, &d, NULL), 0);
	assert_string_equal(id_attrs_get(&d.attributes, "uid"), want_uid);
	assert_string_equal(id_attrs_get(&d.attributes, "mail"), want_mail);
	assert_int_equal(strlen(d.container), 3 + 600);
	assert_int_equal(d.ngroups, 2);
	assert_int_equal(strlen(d.groups[0]), 5 + 300);
	desired_identity_fini(&d);
	mapping_destroy(m);
}

static void test_mapping_errors_name_employee_and_field(void **state)
{
	(void)state;
	static const struct {
		const char *kv[7];
		int code;
		const char *field;
	} cases[] = {
	    {{"first_name", "Bruce", "last_name", "李", NULL}, ID_EINVALID, "last_name"},
	    {{"first_name", "小龍", "last_name", "Lee", NULL}, ID_EINVALID, "first_name"},
	    {{"first_name", "Bruce", NULL}, ID_EINVALID, "last_name"},
	    {{"first_name", "Bruce", "last_name", "---", NULL}, ID_EINVALID, "last_name"},
	    {{"first_name", "Bruce", "last_name", "L\xc3", NULL}, ID_EPARSE, "last_name"},
	    {{"first_name", "Bruce", "last_name", "Lee", "title", "\xff", NULL},
	     ID_EPARSE,
	     "title"},
	};
	mapping_t *m = default_mapping();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		desired_identity_t d;
		id_err_t err = {0};
		char field[64];
		assert_int_equal(map(m, cases[i].kv, LC_ACTIVE, &d, &err), cases[i].code);
		assert_non_null(strstr(err.msg, "employee E1001"));
		snprintf(field, sizeof(field), "field %s", cases[i].field);
		assert_non_null(strstr(err.msg, field));
		desired_identity_fini(&d);
	}
	mapping_destroy(m);
}

static void test_mapping_trace_sources(void **state)
{
	(void)state;
	mapping_t *m = default_mapping();
	mapping_trace_t t = MAPPING_TRACE_INIT;
	id_attrs_t hr = ID_ATTRS_INIT;
	desired_identity_t d;
	static const char *const kv[] = {"first_name", "Ann", "last_name", "Lee",
	                                 "department", "Ops", NULL};
	set_hr(&hr, kv);
	desired_identity_init(&d);
	d.employee_id = strdup("E7");
	assert_int_equal(mapping_apply_traced(m, &hr, LC_ACTIVE, &d, &t, NULL), 0);

	const char *const *s = mapping_trace_find(&t, "mail");
	assert_non_null(s);
	assert_string_equal(s[0], "first_name");
	assert_string_equal(s[1], "last_name");
	assert_null(s[2]);
	s = mapping_trace_find(&t, MAPPING_CAUSE_GROUPS);
	assert_string_equal(s[0], MAPPING_SRC_LIFECYCLE);
	assert_string_equal(s[1], "department");
	s = mapping_trace_find(&t, "employeeNumber");
	assert_string_equal(s[0], MAPPING_SRC_EMPLOYEE_ID);
	/* Every cause has its sources. */
	for (size_t i = 0; i < d.ncauses; i++)
		assert_non_null(mapping_trace_find(&t, d.causes[i].attribute));

	/* A second apply replaces the whole result, not only what it sets. */
	assert_int_equal(id_attrs_set(&hr, "title", "Boss"), 0);
	id_attrs_remove(&hr, "department");
	assert_int_equal(mapping_apply_traced(m, &hr, LC_DISABLED, &d, &t, NULL), 0);
	assert_string_equal(d.employee_id, "E7");
	assert_string_equal(id_attrs_get(&d.attributes, "title"), "Boss");
	assert_false(id_attrs_has(&d.attributes, "departmentNumber"));
	assert_int_equal(d.ngroups, 0);
	assert_string_equal(d.container, "ou=Unassigned");

	mapping_trace_fini(&t);
	id_attrs_fini(&hr);
	desired_identity_fini(&d);
	mapping_destroy(m);
}

static void test_mapping_bad_mail_domain(void **state)
{
	(void)state;
	id_err_t err = {0};
	assert_null(mapping_create_default("", &err));
	assert_int_equal(err.code, ID_EINVALID);
	assert_null(mapping_create_default("exa mple.com", &err));
	assert_non_null(strstr(err.msg, "mapping.mail_domain"));
	assert_null(mapping_create_default("a@b.com", NULL));
}

/* A stand-in policy: proves another implementation plugs in through ops. */
static int fixed_apply(void *impl, const id_attrs_t *hr, lifecycle_state_t st,
                       const mapping_context_t *ctx, desired_identity_t *out,
                       mapping_trace_t *trace, id_err_t *err)
{
	(void)ctx;
	static const char *const src[] = {"first_name", NULL};
	(void)hr;
	(void)st;
	(void)err;
	if (id_attrs_set(&out->attributes, "uid", (const char *)impl) != 0 ||
	    desired_identity_set_cause(out, "uid", NULL, "fixed.uid") != 0)
		return ID_ENOMEM;
	return trace ? mapping_trace_add(trace, "uid", src) : 0;
}

static void fixed_destroy(void *impl)
{
	free(impl);
}

static void test_mapping_custom_impl(void **state)
{
	(void)state;
	static const mapping_ops_t ops = {fixed_apply, fixed_destroy};
	mapping_t *m = mapping_create("lua-7", &ops, strdup("root"), NULL);
	desired_identity_t d;
	static const char *const kv[] = {"first_name", "X", NULL};
	assert_non_null(m);
	assert_int_equal(map(m, kv, LC_ACTIVE, &d, NULL), 0);
	assert_string_equal(d.policy_version, "lua-7");
	assert_string_equal(id_attrs_get(&d.attributes, "uid"), "root");
	assert_string_equal(cause_rule(&d, "uid"), "fixed.uid");
	desired_identity_fini(&d);
	mapping_destroy(m);
	mapping_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fold_table),
	    cmocka_unit_test(test_fold_latin_blocks_are_ascii),
	    cmocka_unit_test(test_fold_invalid_utf8),
	    cmocka_unit_test(test_fold_lower),
	    cmocka_unit_test(test_dn_escape),
	    cmocka_unit_test(test_mapping_full_record),
	    cmocka_unit_test(test_mapping_minimal_and_blank),
	    cmocka_unit_test(test_mapping_disabled_has_no_groups),
	    cmocka_unit_test(test_mapping_uid_shapes),
	    cmocka_unit_test(test_mapping_long_values),
	    cmocka_unit_test(test_mapping_errors_name_employee_and_field),
	    cmocka_unit_test(test_mapping_trace_sources),
	    cmocka_unit_test(test_mapping_bad_mail_domain),
	    cmocka_unit_test(test_mapping_custom_impl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
