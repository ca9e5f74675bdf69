/*
 * test_webhook.c — the pure webhook layer: every source's signature scheme
 * against values computed independently (openssl dgst), the timestamp window,
 * and what each source's payloads turn into (type, employee, attributes,
 * ids), plus the refusals of malformed or mistyped bodies.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/webhook.h"

#define TS     "1700000000"
#define TS_S   1700000000LL
#define NOW_MS 1700000000123LL

static const char *const k1[] = {"k1"};
static const webhook_keys_t keys1 = {k1, 1};

/* Signatures of BODY_T with key "k1", from the openssl command line:
 *   printf '%s.%s' 1700000000 "$b" | openssl dgst -sha256 -hmac k1   (generic)
 *   printf '%s%s' "$b" 1700000000 | openssl dgst -sha256 -hmac k1    (bamboohr)
 *   printf '%s' "$b" | openssl dgst -sha512 -hmac k1 -binary | base64 (hibob)
 *   printf '%s' "$b" | openssl dgst -sha256 -hmac k1                  (gusto) */
#define BODY_T      "{\"employee_id\":\"E1\",\"type\":\"TERMINATE\"}"
#define SIG_GENERIC "ed08330f45931926ca58bfca656c25b9271e6a2638ef441ae767f612a74c8e03"
#define SIG_BAMBOO  "066f03900965a106549fbd506ebf3cbe3e24e665ceae1e8233d726bd6c40b1d4"
#define SIG_HIBOB_64                                                                     \
	"12CBYkRusyY/5bdpv7spgdrDqIybAB/"                                                \
	"ItKosLdJ+uFQLjOqWEwbWfPagqhF6Hp63yrm0x0Pv3alCkuVJdBt+cQ=="
#define SIG_PLAIN "60fa51eef5a25f302038113cd8564b9dbe3f104c5eed5ff051388ac14e24ffee"

static int verify(webhook_source_t src, const char *sig, const char *ts, const char *body,
                  const webhook_keys_t *keys, int64_t now_s, webhook_refusal_t *why)
{
	webhook_headers_t h = {sig, ts, NULL};
	id_err_t err = {0};
	int rc = webhook_verify(src, &h, body, strlen(body), keys, now_s, 300, why, &err);
	if (rc != 0)
		assert_true(err.msg[0] != '\0');
	return rc;
}

static void test_signatures_match_independent_values(void **state)
{
	(void)state;
	webhook_refusal_t why;
	assert_int_equal(
	    verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, TS, BODY_T, &keys1, TS_S, &why),
	    0);
	assert_int_equal(why, WEBHOOK_REFUSE_NONE);
	assert_int_equal(
	    verify(WEBHOOK_BAMBOOHR, SIG_BAMBOO, TS, BODY_T, &keys1, TS_S, &why), 0);
	assert_int_equal(
	    verify(WEBHOOK_HIBOB, SIG_HIBOB_64, NULL, BODY_T, &keys1, TS_S, &why), 0);
	assert_int_equal(
	    verify(WEBHOOK_GUSTO, SIG_PLAIN, NULL, BODY_T, &keys1, TS_S, &why), 0);
	assert_int_equal(verify(WEBHOOK_PERSONIO, "sha256=" SIG_PLAIN, NULL, BODY_T,
	                        &keys1, TS_S, &why),
	                 0);

	/* Our own signer agrees with the reference values. */
	char *s = NULL;
	assert_int_equal(
	    webhook_sign(WEBHOOK_GENERIC, "k1", TS, BODY_T, strlen(BODY_T), &s), 0);
	assert_string_equal(s, "v1=" SIG_GENERIC);
	free(s);
	assert_int_equal(
	    webhook_sign(WEBHOOK_HIBOB, "k1", NULL, BODY_T, strlen(BODY_T), &s), 0);
	assert_string_equal(s, SIG_HIBOB_64);
	free(s);
	assert_int_equal(
	    webhook_sign(WEBHOOK_BAMBOOHR, "k1", TS, BODY_T, strlen(BODY_T), &s), 0);
	assert_string_equal(s, SIG_BAMBOO);
	free(s);
}

static void test_signature_refusals(void **state)
{
	(void)state;
	webhook_refusal_t why;
	static const char *const other[] = {"k2"};
	webhook_keys_t keys2 = {other, 1};

	/* wrong key */
	assert_int_equal(
	    verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, TS, BODY_T, &keys2, TS_S, &why),
	    ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_SIGNATURE);
	/* body changed by one byte */
	const char *tampered = "{\"employee_id\":\"E2\",\"type\":\"TERMINATE\"}";
	assert_int_equal(
	    verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, TS, tampered, &keys1, TS_S, &why),
	    ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_SIGNATURE);
	/* timestamp changed: it is signed too */
	assert_int_equal(verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, "1700000001", BODY_T,
	                        &keys1, TS_S, &why),
	                 ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_SIGNATURE);
	/* BambooHR signs body then timestamp; the generic order must not pass */
	assert_int_equal(
	    verify(WEBHOOK_BAMBOOHR, SIG_GENERIC, TS, BODY_T, &keys1, TS_S, &why),
	    ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_SIGNATURE);
	/* missing or empty header */
	assert_int_equal(verify(WEBHOOK_GUSTO, NULL, NULL, BODY_T, &keys1, TS_S, &why),
	                 ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_MISSING_SIGNATURE);
	assert_int_equal(verify(WEBHOOK_GUSTO, "", NULL, BODY_T, &keys1, TS_S, &why),
	                 ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_MISSING_SIGNATURE);
	/* no v1= scheme, truncated digest, non-hex */
	assert_int_equal(
	    verify(WEBHOOK_GENERIC, SIG_GENERIC, TS, BODY_T, &keys1, TS_S, &why),
	    ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_SIGNATURE);
	assert_int_equal(
	    verify(WEBHOOK_GUSTO, "60fa51ee", NULL, BODY_T, &keys1, TS_S, &why),
	    ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_SIGNATURE);
	/* no key configured: nothing can be verified */
	webhook_keys_t none = {NULL, 0};
	assert_int_equal(
	    verify(WEBHOOK_GUSTO, SIG_PLAIN, NULL, BODY_T, &none, TS_S, &why),
	    ID_EINVALID);
	/* a HiBob signature of the right length but another body */
	assert_int_equal(
	    verify(WEBHOOK_HIBOB, SIG_HIBOB_64, NULL, tampered, &keys1, TS_S, &why),
	    ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_SIGNATURE);
}

static void test_key_rotation_and_multiple_signatures(void **state)
{
	(void)state;
	webhook_refusal_t why;
	static const char *const rotated[] = {"new-key", "k1"};
	webhook_keys_t keys = {rotated, 2};
	/* the old key is still accepted while both are configured */
	assert_int_equal(
	    verify(WEBHOOK_GUSTO, SIG_PLAIN, NULL, BODY_T, &keys, TS_S, &why), 0);
	/* a sender signing with two keys: either one may match */
	assert_int_equal(verify(WEBHOOK_GENERIC,
	                        "v1=0000000000000000000000000000000000000000000000000000"
	                        "000000000000, v1=" SIG_GENERIC,
	                        TS, BODY_T, &keys1, TS_S, &why),
	                 0);
	/* hex is accepted for HiBob too */
	char *hex = NULL;
	assert_int_equal(
	    webhook_sign(WEBHOOK_GUSTO, "k1", NULL, BODY_T, strlen(BODY_T), &hex), 0);
	assert_int_equal(verify(WEBHOOK_GUSTO, hex, NULL, BODY_T, &keys1, TS_S, &why), 0);
	free(hex);
}

static void test_timestamp_window(void **state)
{
	(void)state;
	webhook_refusal_t why;
	/* 300 s either way is inside, 301 outside */
	assert_int_equal(verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, TS, BODY_T, &keys1,
	                        TS_S + 300, &why),
	                 0);
	assert_int_equal(verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, TS, BODY_T, &keys1,
	                        TS_S - 300, &why),
	                 0);
	assert_int_equal(verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, TS, BODY_T, &keys1,
	                        TS_S + 301, &why),
	                 ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_STALE_TIMESTAMP);
	assert_int_equal(verify(WEBHOOK_GENERIC, "v1=" SIG_GENERIC, TS, BODY_T, &keys1,
	                        TS_S - 3600, &why),
	                 ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_STALE_TIMESTAMP);
	/* missing timestamp on a source that signs one */
	assert_int_equal(
	    verify(WEBHOOK_BAMBOOHR, SIG_BAMBOO, NULL, BODY_T, &keys1, TS_S, &why),
	    ID_EINVALID);
	assert_int_equal(why, WEBHOOK_REFUSE_BAD_TIMESTAMP);
	/* sources without a signed send time have no window */
	assert_int_equal(verify(WEBHOOK_GUSTO, SIG_PLAIN, NULL, BODY_T, &keys1,
	                        TS_S + 86400 * 3, &why),
	                 0);
}

static void test_time_parse(void **state)
{
	(void)state;
	int64_t ms = 0;
	assert_int_equal(webhook_time_parse("1700000000", &ms), 0);
	assert_int_equal(ms, 1700000000000LL);
	assert_int_equal(webhook_time_parse("1700000000123", &ms), 0);
	assert_int_equal(ms, 1700000000123LL);
	assert_int_equal(webhook_time_parse("2026-01-31T18:42:00+0000", &ms), 0);
	assert_int_equal(ms, 1769884920000LL);
	assert_int_equal(webhook_time_parse("2026-01-31T19:42:00+01:00", &ms), 0);
	assert_int_equal(ms, 1769884920000LL);
	assert_int_equal(webhook_time_parse("2026-01-31T18:42:00Z", &ms), 0);
	assert_int_equal(ms, 1769884920000LL);
	assert_int_equal(webhook_time_parse("2025-01-08T13:06:26.915906", &ms), 0);
	assert_int_equal(ms, 1736341586915LL);
	assert_int_equal(webhook_time_parse("2026-02-01", &ms), 0);
	assert_int_equal(ms, 1769904000000LL);
	assert_int_equal(webhook_time_parse("2026-13-01", &ms), ID_EPARSE);
	assert_int_equal(webhook_time_parse("yesterday", &ms), ID_EPARSE);
	assert_int_equal(webhook_time_parse("2026-01-31T18:42:00 garbage", &ms),
	                 ID_EPARSE);
	assert_int_equal(webhook_time_parse("", &ms), ID_EPARSE);
}

/* Parses and expects success. */
static void parse_ok(webhook_source_t src, const char *body, const char *delivery,
                     webhook_delivery_t *d)
{
	webhook_refusal_t why;
	id_err_t err = {0};
	webhook_delivery_init(d);
	if (webhook_parse(src, body, strlen(body), delivery, NOW_MS, d, &why, &err) != 0)
		fail_msg("parse: %s", err.msg);
}

static webhook_refusal_t parse_refused(webhook_source_t src, const char *body,
                                       const char *delivery, const char *needle)
{
	webhook_refusal_t why = WEBHOOK_REFUSE_NONE;
	id_err_t err = {0};
	webhook_delivery_t d;
	webhook_delivery_init(&d);
	int rc = webhook_parse(src, body, strlen(body), delivery, NOW_MS, &d, &why, &err);
	assert_true(rc < 0);
	assert_int_equal(d.nevents, 0);
	if (needle != NULL && strstr(err.msg, needle) == NULL)
		fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
	webhook_delivery_fini(&d);
	return why;
}

static void test_generic_payload(void **state)
{
	(void)state;
	webhook_delivery_t d;
	parse_ok(WEBHOOK_GENERIC,
	         "{\"employee_id\":\"E100\",\"type\":\"hire\",\"effective_at\":"
	         "\"2026-02-01\",\"attributes\":{\"First_Name\":\"Ada\",\"last_name\":"
	         "\"Lovelace\",\"department\":\"Eng\",\"title\":null},\"actor\":"
	         "\"hr-script\",\"reason\":\"new starter\"}",
	         "d-1", &d);
	assert_int_equal(d.nevents, 1);
	const employee_event_t *ev = &d.events[0].ev;
	assert_false(d.events[0].thin);
	assert_string_equal(d.delivery_id, "d-1");
	assert_string_equal(ev->source, "generic");
	assert_string_equal(ev->source_event_id, "d-1");
	/* printf 'generic\0d-1' | sha256sum | cut -c1-32 */
	assert_string_equal(ev->event_id, "c3646b62ba50e111706845cb0f492639");
	assert_string_equal(ev->employee_id, "E100");
	assert_int_equal(ev->type, EV_HIRE);
	assert_int_equal(ev->occurred_at, NOW_MS);
	assert_int_equal(ev->effective_at, 1769904000000LL);
	assert_string_equal(id_attrs_get(&ev->attributes, "first_name"), "Ada");
	assert_string_equal(id_attrs_get(&ev->attributes, "department"), "Eng");
	assert_true(id_attrs_has(&ev->attributes, "title"));
	assert_null(id_attrs_get(&ev->attributes, "title")); /* cleared */
	assert_int_equal(ev->attributes.len, 4);
	assert_string_equal(ev->actor, "hr-script");
	assert_string_equal(ev->reason, "new starter");
	webhook_delivery_fini(&d);
}

static void test_generic_refusals(void **state)
{
	(void)state;
	assert_int_equal(parse_refused(WEBHOOK_GENERIC, "{\"employee_id\":", "d", "JSON"),
	                 WEBHOOK_REFUSE_MALFORMED_JSON);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC, "[1,2]", "d", "object"),
	                 WEBHOOK_REFUSE_MALFORMED_JSON);
	assert_int_equal(
	    parse_refused(WEBHOOK_GENERIC, BODY_T, NULL, "X-Idstream-Delivery"),
	    WEBHOOK_REFUSE_MISSING_DELIVERY);
	assert_int_equal(
	    parse_refused(WEBHOOK_GENERIC, "{\"type\":\"UPDATE\"}", "d", "employee_id"),
	    WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":[1],\"type\":\"UPDATE\"}", "d",
	                               "employee_id"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":\"E1\",\"type\":\"FIRE\"}", "d",
	                               "FIRE"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":\"E1\",\"type\":\"UPDATE\","
	                               "\"attributes\":{\"title\":42}}",
	                               "d", "attributes.title"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":\"E1\",\"type\":\"UPDATE\","
	                               "\"attributes\":\"x\"}",
	                               "d", "attributes"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":\"E1\",\"type\":\"UPDATE\","
	                               "\"effective_at\":\"soon\"}",
	                               "d", "effective_at"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":\"E1\",\"type\":\"UPDATE\","
	                               "\"emplyee\":1}",
	                               "d", "emplyee"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":\"E1\",\"type\":\"HIRE\","
	                               "\"attributes\":{\"first_name\":\"A\"}}",
	                               "d", "last_name"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	/* duplicate keys are ambiguous */
	assert_int_equal(parse_refused(WEBHOOK_GENERIC,
	                               "{\"employee_id\":\"E1\",\"employee_id\":\"E2\","
	                               "\"type\":\"UPDATE\"}",
	                               "d", NULL),
	                 WEBHOOK_REFUSE_MALFORMED_JSON);
}

static void test_bamboohr_field_based(void **state)
{
	(void)state;
	webhook_delivery_t d;
	const char *body =
	    "{\"employees\":["
	    "{\"action\":\"Updated\",\"changedFields\":[\"Job Title\"],\"fields\":{"
	    "\"First Name\":\"Bryony\",\"Last Name\":\"Hale\",\"Job Title\":\"CTO\","
	    "\"supervisorEId\":\"77\",\"Pay Rate\":\"1 EUR\"},\"id\":\"12345\","
	    "\"timestamp\":\"2026-01-31T18:42:00+0000\"},"
	    "{\"action\":\"Updated\",\"changedFields\":[\"Status\"],\"fields\":{"
	    "\"Status\":\"Inactive\"},\"id\":\"222\"},"
	    "{\"action\":\"Created\",\"changedFields\":[],\"fields\":{},\"id\":333},"
	    "{\"action\":\"Deleted\",\"id\":\"444\"}]}";
	parse_ok(WEBHOOK_BAMBOOHR, body, NULL, &d);
	assert_int_equal(d.nevents, 4);
	assert_int_equal(strlen(d.delivery_id), 32);

	const employee_event_t *e0 = &d.events[0].ev;
	assert_int_equal(e0->type, EV_UPDATE);
	assert_false(d.events[0].thin);
	assert_string_equal(e0->employee_id, "12345");
	assert_string_equal(id_attrs_get(&e0->attributes, "first_name"), "Bryony");
	assert_string_equal(id_attrs_get(&e0->attributes, "title"), "CTO");
	assert_string_equal(id_attrs_get(&e0->attributes, "manager_id"), "77");
	assert_string_equal(id_attrs_get(&e0->attributes, "pay_rate"), "1 EUR");
	assert_int_equal(e0->occurred_at, 1769884920000LL);
	assert_string_equal(e0->reason, "changed: Job Title");
	char want[64];
	snprintf(want, sizeof(want), "%s:0", d.delivery_id);
	assert_string_equal(e0->source_event_id, want);

	assert_int_equal(d.events[1].ev.type, EV_TERMINATE); /* Status → Inactive */
	assert_int_equal(d.events[2].ev.type, EV_HIRE);
	assert_string_equal(d.events[2].ev.employee_id, "333");
	assert_true(d.events[2].thin); /* creations carry no fields */
	assert_int_equal(d.events[3].ev.type, EV_TERMINATE);
	assert_false(d.events[3].thin);
	assert_string_not_equal(d.events[0].ev.event_id, d.events[1].ev.event_id);

	/* The same bytes again (a retry) give the same ids. */
	webhook_delivery_t again;
	parse_ok(WEBHOOK_BAMBOOHR, body, NULL, &again);
	assert_string_equal(again.delivery_id, d.delivery_id);
	for (size_t i = 0; i < d.nevents; i++)
		assert_string_equal(again.events[i].ev.event_id, d.events[i].ev.event_id);
	webhook_delivery_fini(&again);
	webhook_delivery_fini(&d);

	assert_int_equal(
	    parse_refused(WEBHOOK_BAMBOOHR, "{\"employees\":{}}", NULL, "employees"),
	    WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_BAMBOOHR,
	                               "{\"employees\":[{\"action\":\"Updated\"}]}", NULL,
	                               "employees[0].id"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_BAMBOOHR, "{\"hello\":1}", NULL, NULL),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
}

static void test_bamboohr_event_based(void **state)
{
	(void)state;
	webhook_delivery_t d;
	parse_ok(
	    WEBHOOK_BAMBOOHR,
	    "{\"type\":\"employee.deleted\",\"timestamp\":\"2026-01-31T18:42:00+0000\","
	    "\"data\":{\"companyId\":\"1\",\"employeeId\":\"67890\"}}",
	    NULL, &d);
	assert_int_equal(d.nevents, 1);
	assert_int_equal(d.events[0].ev.type, EV_TERMINATE);
	assert_false(d.events[0].thin);
	assert_string_equal(d.events[0].ev.employee_id, "67890");
	assert_string_equal(d.kind, "employee.deleted");
	webhook_delivery_fini(&d);

	parse_ok(
	    WEBHOOK_BAMBOOHR,
	    "{\"type\":\"employee.updated\",\"timestamp\":\"2026-01-31T18:42:00+0000\","
	    "\"data\":{\"companyId\":\"1\",\"employeeId\":\"67890\",\"changedFields\":"
	    "[\"firstName\",\"jobTitle\"]}}",
	    NULL, &d);
	assert_int_equal(d.events[0].ev.type, EV_UPDATE);
	assert_true(d.events[0].thin);
	assert_string_equal(d.events[0].ev.reason, "changed: firstName, jobTitle");
	webhook_delivery_fini(&d);

	parse_ok(WEBHOOK_BAMBOOHR, "{\"type\":\"benefit.changed\",\"data\":{}}", NULL,
	         &d);
	assert_int_equal(d.nevents, 0); /* valid, not ours */
	webhook_delivery_fini(&d);
}

static void test_hibob(void **state)
{
	(void)state;
	webhook_delivery_t d;
	parse_ok(WEBHOOK_HIBOB,
	         "{\"companyId\":636192,\"type\":\"employee.left\",\"triggeredBy\":"
	         "\"333\",\"triggeredAt\":\"2025-01-08T13:06:26.915906\",\"version\":"
	         "\"v2\",\"data\":{\"employeeId\":\"3332883854254932743\","
	         "\"effectiveDate\":\"2025-01-10\"}}",
	         NULL, &d);
	assert_int_equal(d.nevents, 1);
	const employee_event_t *ev = &d.events[0].ev;
	assert_int_equal(ev->type, EV_TERMINATE);
	assert_string_equal(ev->employee_id, "3332883854254932743");
	assert_int_equal(ev->occurred_at, 1736341586915LL);
	assert_int_equal(ev->effective_at, 1736467200000LL);
	assert_string_equal(ev->actor, "hibob:333");
	webhook_delivery_fini(&d);

	parse_ok(WEBHOOK_HIBOB,
	         "{\"companyId\":1,\"type\":\"employee.joined\",\"triggeredAt\":"
	         "\"2025-01-08T13:06:26\",\"data\":{\"employeeId\":\"9\"}}",
	         NULL, &d);
	assert_int_equal(d.events[0].ev.type, EV_HIRE);
	assert_true(d.events[0].thin);
	webhook_delivery_fini(&d);

	parse_ok(WEBHOOK_HIBOB,
	         "{\"companyId\":1,\"type\":\"employee.inactivated\",\"data\":{"
	         "\"employeeId\":\"9\"}}",
	         NULL, &d);
	assert_int_equal(d.events[0].ev.type, EV_LEAVE_START);
	webhook_delivery_fini(&d);

	parse_ok(WEBHOOK_HIBOB,
	         "{\"companyId\":1,\"type\":\"table.entry.created\",\"data\":{"
	         "\"employeeId\":\"9\",\"tableId\":\"lifecycle\"}}",
	         NULL, &d);
	assert_int_equal(d.nevents, 0);
	webhook_delivery_fini(&d);

	assert_int_equal(parse_refused(WEBHOOK_HIBOB,
	                               "{\"type\":\"employee.left\",\"data\":{}}", NULL,
	                               "data.employeeId"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(parse_refused(WEBHOOK_HIBOB,
	                               "{\"type\":\"employee.left\",\"triggeredAt\":true,"
	                               "\"data\":{\"employeeId\":\"1\"}}",
	                               NULL, "triggeredAt"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
}

static void test_gusto(void **state)
{
	(void)state;
	webhook_delivery_t d;
	parse_ok(WEBHOOK_GUSTO,
	         "{\"uuid\":\"03ffbf0c-48a9\",\"event_type\":"
	         "\"employee.terminated_effective\",\"resource_type\":\"Company\","
	         "\"resource_uuid\":\"c1\",\"entity_type\":\"Employee\",\"entity_uuid\":"
	         "\"bcfc9744\",\"timestamp\":1671058841}",
	         NULL, &d);
	assert_int_equal(d.nevents, 1);
	assert_string_equal(d.delivery_id, "03ffbf0c-48a9");
	assert_string_equal(d.events[0].ev.source_event_id, "03ffbf0c-48a9");
	assert_string_equal(d.events[0].ev.employee_id, "bcfc9744");
	assert_int_equal(d.events[0].ev.type, EV_TERMINATE);
	assert_int_equal(d.events[0].ev.occurred_at, 1671058841000LL);
	webhook_delivery_fini(&d);

	/* announced, not yet effective: nothing to do now */
	parse_ok(
	    WEBHOOK_GUSTO,
	    "{\"uuid\":\"u2\",\"event_type\":\"employee.terminated\",\"entity_type\":"
	    "\"Employee\",\"entity_uuid\":\"b\",\"timestamp\":1671058841}",
	    NULL, &d);
	assert_int_equal(d.nevents, 0);
	webhook_delivery_fini(&d);

	assert_int_equal(parse_refused(WEBHOOK_GUSTO,
	                               "{\"event_type\":\"employee.created\"}", NULL,
	                               "uuid"),
	                 WEBHOOK_REFUSE_MISSING_DELIVERY);
}

static void test_personio(void **state)
{
	(void)state;
	webhook_delivery_t d;
	parse_ok(
	    WEBHOOK_PERSONIO,
	    "{\"company_id\":\"42\",\"event_name\":\"person.updated\",\"occurred_at\":"
	    "\"2026-03-01T09:00:00Z\",\"payload\":{\"id\":\"p-7\",\"attributes\":{"
	    "\"position\":{\"label\":\"Position\",\"value\":\"Engineer\"},"
	    "\"office\":\"Berlin\"}},\"meta\":{}}",
	    NULL, &d);
	assert_int_equal(d.nevents, 1);
	const employee_event_t *ev = &d.events[0].ev;
	assert_int_equal(ev->type, EV_UPDATE);
	assert_false(d.events[0].thin);
	assert_string_equal(ev->employee_id, "p-7");
	assert_string_equal(id_attrs_get(&ev->attributes, "title"), "Engineer");
	assert_string_equal(id_attrs_get(&ev->attributes, "location"), "Berlin");
	webhook_delivery_fini(&d);

	parse_ok(WEBHOOK_PERSONIO,
	         "{\"company_id\":\"42\",\"event_name\":\"employment.terminated\","
	         "\"occurred_at\":\"2026-03-01T09:00:00Z\",\"payload\":{\"id\":\"emp-1\","
	         "\"person_id\":\"p-7\"}}",
	         NULL, &d);
	assert_int_equal(d.events[0].ev.type, EV_TERMINATE);
	assert_string_equal(d.events[0].ev.employee_id, "p-7");
	webhook_delivery_fini(&d);

	assert_int_equal(parse_refused(WEBHOOK_PERSONIO,
	                               "{\"company_id\":\"42\",\"event_name\":"
	                               "\"person.updated\",\"payload\":{\"id\":\"p\"}}",
	                               NULL, "occurred_at"),
	                 WEBHOOK_REFUSE_INVALID_PAYLOAD);
	assert_int_equal(
	    parse_refused(WEBHOOK_PERSONIO,
	                  "{\"company_id\":\"42\",\"event_name\":"
	                  "\"person.updated\",\"occurred_at\":\"2026-03-01\","
	                  "\"payload\":[]}",
	                  NULL, "payload"),
	    WEBHOOK_REFUSE_INVALID_PAYLOAD);
}

static void test_enrich_thin_event(void **state)
{
	(void)state;
	webhook_delivery_t d;
	parse_ok(
	    WEBHOOK_HIBOB,
	    "{\"companyId\":1,\"type\":\"employee.created\",\"data\":{\"employeeId\":"
	    "\"9\"}}",
	    NULL, &d);
	assert_true(d.events[0].thin);
	id_err_t err = {0};
	const char *incomplete = "{\"id\":\"9\",\"firstName\":\"Ada\"}";
	assert_int_equal(webhook_event_enrich(WEBHOOK_HIBOB, &d.events[0], incomplete,
	                                      strlen(incomplete), &err),
	                 ID_EINVALID);
	assert_true(d.events[0].thin);
	const char *rec = "{\"id\":\"9\",\"firstName\":\"Ada\",\"surname\":\"Lovelace\","
	                  "\"work\":{\"title\":\"Analyst\",\"department\":\"R&D\","
	                  "\"reportsTo\":{\"id\":\"5\",\"displayName\":\"Boss\"},"
	                  "\"startDate\":\"2026-02-01\"}}";
	assert_int_equal(
	    webhook_event_enrich(WEBHOOK_HIBOB, &d.events[0], rec, strlen(rec), &err), 0);
	const id_attrs_t *a = &d.events[0].ev.attributes;
	assert_false(d.events[0].thin);
	assert_string_equal(id_attrs_get(a, "first_name"), "Ada");
	assert_string_equal(id_attrs_get(a, "last_name"), "Lovelace");
	assert_string_equal(id_attrs_get(a, "title"), "Analyst");
	assert_string_equal(id_attrs_get(a, "department"), "R&D");
	assert_string_equal(id_attrs_get(a, "manager_id"), "5");
	assert_string_equal(id_attrs_get(a, "start_date"), "2026-02-01");
	assert_false(id_attrs_has(a, "id"));
	webhook_delivery_fini(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_signatures_match_independent_values),
	    cmocka_unit_test(test_signature_refusals),
	    cmocka_unit_test(test_key_rotation_and_multiple_signatures),
	    cmocka_unit_test(test_timestamp_window),
	    cmocka_unit_test(test_time_parse),
	    cmocka_unit_test(test_generic_payload),
	    cmocka_unit_test(test_generic_refusals),
	    cmocka_unit_test(test_bamboohr_field_based),
	    cmocka_unit_test(test_bamboohr_event_based),
	    cmocka_unit_test(test_hibob),
	    cmocka_unit_test(test_gusto),
	    cmocka_unit_test(test_personio),
	    cmocka_unit_test(test_enrich_thin_event),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
