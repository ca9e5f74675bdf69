/*
 * test_poll_bamboohr.c — the pure part of the BambooHR poller: the
 * changed-since answer is parsed into sorted changes (and malformed ones are
 * refused naming the field), the log fold keeps what the events say, records
 * survive their byte form, and the decision publishes exactly what differs
 * from the log, mapped as the BambooHR webhooks map it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/poll_bamboohr.h"

static void parse_ok(const char *body, poll_change_t **c, size_t *n, int64_t *latest)
{
	id_err_t err = {0};
	if (poll_bamboohr_parse_changed(body, strlen(body), c, n, latest, &err) != 0)
		fail_msg("parse: %s", err.msg);
}

static void test_parse_changed_sorted(void **state)
{
	(void)state;
	poll_change_t *c;
	size_t n;
	int64_t latest;
	parse_ok("{\"latest\": \"2011-06-02T19:26:23+00:00\", \"employees\": {"
	         "\"4\": {\"id\": \"4\", \"action\": \"Updated\", "
	         "\"lastChanged\": \"2011-06-02T19:26:23+00:00\"},"
	         "\"10\": {\"id\": \"10\", \"action\": \"Inserted\", "
	         "\"lastChanged\": \"2011-05-31T22:57:10+00:00\"},"
	         "\"5\": {\"id\": 5, \"action\": \"Deleted\", "
	         "\"lastChanged\": \"2011-06-02T19:26:23Z\"}}}",
	         &c, &n, &latest);
	assert_int_equal(3, n);
	assert_string_equal("10", c[0].employee_id);
	assert_false(c[0].deleted);
	assert_int_equal(1306882630000LL, c[0].last_changed);
	assert_string_equal("4", c[1].employee_id);
	assert_string_equal("5", c[2].employee_id);
	assert_true(c[2].deleted);
	assert_int_equal(1307042783000LL, latest);
	poll_changes_free(c, n);

	/* Nothing changed: PHP's empty map is [], and latest may be null. */
	parse_ok("{\"latest\": null, \"employees\": []}", &c, &n, &latest);
	assert_int_equal(0, n);
	assert_null(c);
	assert_true(latest == INT64_MIN);
}

static void test_parse_changed_refuses(void **state)
{
	(void)state;
	static const struct {
		const char *body, *needle;
	} cases[] = {
	    {"<employees/>", "not a JSON object"},
	    {"{\"employees\": 3}", "employees must be an object"},
	    {"{\"employees\": {\"1\": {\"id\": \"1\", \"action\": \"Moved\", "
	     "\"lastChanged\": \"2026-01-01T00:00:00Z\"}}}",
	     "\"Moved\""},
	    {"{\"employees\": {\"1\": {\"id\": \"1\", \"action\": \"Updated\"}}}",
	     "employees.1 needs"},
	    {"{\"latest\": \"yesterday\", \"employees\": []}", "latest"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		poll_change_t *c = NULL;
		size_t n = 0;
		int64_t latest;
		id_err_t err = {0};
		assert_int_equal(ID_EPARSE, poll_bamboohr_parse_changed(
		                                cases[i].body, strlen(cases[i].body), &c,
		                                &n, &latest, &err));
		assert_null(c);
		assert_non_null(strstr(err.msg, cases[i].needle));
	}
}

static void event(employee_event_t *ev, employee_event_type_t type, const char *k1,
                  const char *v1, const char *k2, const char *v2)
{
	employee_event_fini(ev);
	employee_event_init(ev);
	ev->type = type;
	if (k1 != NULL)
		assert_int_equal(0, id_attrs_set(&ev->attributes, k1, v1));
	if (k2 != NULL)
		assert_int_equal(0, id_attrs_set(&ev->attributes, k2, v2));
}

static void test_fold_and_bytes(void **state)
{
	(void)state;
	poll_employee_t e, back;
	employee_event_t ev;
	id_buf_t b = ID_BUF_INIT;
	poll_employee_init(&e);
	poll_employee_init(&back);
	employee_event_init(&ev);

	event(&ev, EV_HIRE, "first_name", "Ada", "title", "Engineer");
	assert_int_equal(0, poll_employee_apply(&e, &ev));
	event(&ev, EV_UPDATE, "title", NULL, "department", "R&D"); /* title cleared */
	assert_int_equal(0, poll_employee_apply(&e, &ev));
	event(&ev, EV_NAME_GRANTED, "uid", "alovelace", NULL, NULL); /* not HR */
	assert_int_equal(0, poll_employee_apply(&e, &ev));
	assert_true(e.known);
	assert_false(e.terminated);
	assert_null(id_attrs_get(&e.attrs, "title"));
	assert_false(id_attrs_has(&e.attrs, "uid"));
	assert_string_equal("R&D", id_attrs_get(&e.attrs, "department"));
	event(&ev, EV_TERMINATE, NULL, NULL, NULL, NULL);
	assert_int_equal(0, poll_employee_apply(&e, &ev));
	assert_true(e.terminated);

	assert_int_equal(0, poll_employee_encode(&e, &b));
	assert_int_equal(0, poll_employee_decode(b.data, b.len, &back));
	assert_true(back.known);
	assert_true(back.terminated);
	assert_true(id_attrs_equal(&e.attrs, &back.attrs));
	/* A truncated record is refused, not half-read. */
	assert_int_equal(ID_EPARSE, poll_employee_decode(b.data, b.len - 1, &back));
	assert_false(back.known);

	/* A HIRE replaces everything; REHIRE reactivates. */
	event(&ev, EV_REHIRE, NULL, NULL, NULL, NULL);
	assert_int_equal(0, poll_employee_apply(&e, &ev));
	assert_false(e.terminated);
	event(&ev, EV_HIRE, "first_name", "Ada", NULL, NULL);
	assert_int_equal(0, poll_employee_apply(&e, &ev));
	assert_int_equal(1, e.attrs.len);

	id_buf_fini(&b);
	employee_event_fini(&ev);
	poll_employee_fini(&e);
	poll_employee_fini(&back);
}

/* decide() on a fetched record given as key/value pairs (NULL value = null). */
static poll_decision_t decide(const poll_employee_t *known, bool deleted,
                              const char *const *kv, employee_event_type_t *type,
                              id_attrs_t *changed)
{
	id_attrs_t f = ID_ATTRS_INIT;
	poll_decision_t d;
	for (size_t i = 0; kv != NULL && kv[i] != NULL; i += 2)
		assert_int_equal(0, id_attrs_set(&f, kv[i], kv[i + 1]));
	assert_int_equal(
	    0, poll_bamboohr_decide(known, deleted, kv ? &f : NULL, &d, type, changed));
	id_attrs_fini(&f);
	return d;
}

static void test_decide(void **state)
{
	(void)state;
	poll_employee_t k;
	id_attrs_t ch = ID_ATTRS_INIT;
	employee_event_type_t t = EV_TYPE_COUNT;
	poll_employee_init(&k);
	static const char *const ada[] = {
	    "first_name", "Ada",    "last_name",   "Lovelace", "title", "Engineer",
	    "status",     "Active", "middle_name", NULL,       NULL};

	/* Unknown: a hire with everything fetched; unless gone, inactive or
	 * nameless. */
	assert_int_equal(POLL_PUBLISH, decide(&k, false, ada, &t, &ch));
	assert_int_equal(EV_HIRE, t);
	assert_int_equal(5, ch.len);
	static const char *const gone_before[] = {
	    "first_name", "Old", "last_name", "Timer", "status", "Inactive", NULL};
	assert_int_equal(POLL_IGNORED, decide(&k, false, gone_before, &t, &ch));
	assert_int_equal(POLL_IGNORED, decide(&k, true, NULL, &t, &ch));
	static const char *const nameless[] = {"title", "Engineer", NULL};
	assert_int_equal(POLL_UNUSABLE, decide(&k, false, nameless, &t, &ch));

	/* Known and active with the same values (say, a webhook published the
	 * change): nothing; a fetched null equals an absent attribute. */
	k.known = true;
	assert_int_equal(0, id_attrs_set(&k.attrs, "first_name", "Ada"));
	assert_int_equal(0, id_attrs_set(&k.attrs, "last_name", "Lovelace"));
	assert_int_equal(0, id_attrs_set(&k.attrs, "title", "Engineer"));
	assert_int_equal(0, id_attrs_set(&k.attrs, "status", "Active"));
	assert_int_equal(0, id_attrs_set(&k.attrs, "department", "R&D"));
	assert_int_equal(POLL_NOTHING, decide(&k, false, ada, &t, &ch));
	assert_int_equal(0, ch.len);

	/* One attribute differs: an UPDATE with just that one. */
	static const char *const promoted[] = {"first_name", "Ada",    "last_name",
	                                       "Lovelace",   "title",  "CTO",
	                                       "status",     "Active", NULL};
	assert_int_equal(POLL_PUBLISH, decide(&k, false, promoted, &t, &ch));
	assert_int_equal(EV_UPDATE, t);
	assert_int_equal(1, ch.len);
	assert_string_equal("CTO", id_attrs_get(&ch, "title"));

	/* Status Inactive or a deleted record: TERMINATE. */
	static const char *const left[] = {"first_name", "Ada",      "last_name",
	                                   "Lovelace",   "title",    "Engineer",
	                                   "status",     "Inactive", NULL};
	assert_int_equal(POLL_PUBLISH, decide(&k, false, left, &t, &ch));
	assert_int_equal(EV_TERMINATE, t);
	assert_string_equal("Inactive", id_attrs_get(&ch, "status"));
	assert_int_equal(POLL_PUBLISH, decide(&k, true, NULL, &t, &ch));
	assert_int_equal(EV_TERMINATE, t);
	assert_int_equal(0, ch.len);

	/* Terminated: deleted again is nothing, Active again a REHIRE. */
	k.terminated = true;
	assert_int_equal(0, id_attrs_set(&k.attrs, "status", "Inactive"));
	assert_int_equal(POLL_NOTHING, decide(&k, true, NULL, &t, &ch));
	assert_int_equal(POLL_NOTHING, decide(&k, false, left, &t, &ch));
	assert_int_equal(POLL_PUBLISH, decide(&k, false, ada, &t, &ch));
	assert_int_equal(EV_REHIRE, t);
	assert_string_equal("Active", id_attrs_get(&ch, "status"));

	id_attrs_fini(&ch);
	poll_employee_fini(&k);
}

static void test_fmt_time(void **state)
{
	(void)state;
	char buf[40];
	poll_bamboohr_fmt_time(1307042783999LL, buf, sizeof(buf));
	assert_string_equal("2011-06-02T19:26:23Z", buf);
	poll_bamboohr_fmt_time(0, buf, sizeof(buf));
	assert_string_equal("1970-01-01T00:00:00Z", buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_changed_sorted),
	    cmocka_unit_test(test_parse_changed_refuses),
	    cmocka_unit_test(test_fold_and_bytes),
	    cmocka_unit_test(test_decide),
	    cmocka_unit_test(test_fmt_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
