/*
 * test_name_arbiter.c — the unique-name decisions (processors/name_arbiter.h)
 * and the NameClaim wire format (schemas/codec.h): who gets a name, what the
 * answer event says, and that replaying the same claims gives the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "processors/name_arbiter.h"
#include "schemas/codec.h"

/* A claim with a computed id; caller fini's. */
static void mk(name_claim_t *c, name_claim_kind_t kind, const char *ns, const char *value,
               const char *emp, int64_t at, int64_t quarantine_until)
{
	name_claim_init(c);
	c->kind = kind;
	c->ns = strdup(ns);
	c->value = strdup(value);
	c->employee_id = strdup(emp);
	c->claimed_at = at;
	c->quarantine_until = quarantine_until;
	c->source_event_id = strdup("ev-1");
	assert_int_equal(name_claim_make_id(c), 0);
}

/* Decides one claim (its proper key) and returns the decision. */
static name_decision_t decide(name_entry_t *e, name_claim_kind_t kind, const char *ns,
                              const char *value, const char *emp, int64_t at, int64_t q)
{
	name_claim_t c;
	name_decision_t d;
	id_buf_t key = ID_BUF_INIT;
	mk(&c, kind, ns, value, emp, at, q);
	assert_int_equal(name_key(ns, value, &key), 0);
	assert_int_equal(name_arbiter_decide(e, &c, key.data, key.len, &d), 0);
	id_buf_fini(&key);
	name_claim_fini(&c);
	return d;
}

static void test_key_folds_ascii_case_only(void **state)
{
	(void)state;
	id_buf_t k = ID_BUF_INIT;
	assert_int_equal(name_key("email", "Anna.Smith@Example.COM", &k), 0);
	assert_int_equal(k.len, strlen("email:anna.smith@example.com"));
	assert_memory_equal(k.data, "email:anna.smith@example.com", k.len);
	assert_int_equal(name_key("username", "Ærø", &k), 0);
	assert_memory_equal(k.data, "username:Ærø", k.len);
	id_buf_fini(&k);
}

static void test_claim_id_is_deterministic(void **state)
{
	(void)state;
	name_claim_t a, b, c;
	mk(&a, NAME_CLAIM, "username", "asmith", "E1", 1000, 0);
	mk(&b, NAME_CLAIM, "username", "asmith", "E1", 1000, 0);
	mk(&c, NAME_CLAIM, "username", "asmith", "E1", 1001, 0);
	assert_int_equal(strlen(a.claim_id), 32);
	assert_string_equal(a.claim_id, b.claim_id);
	assert_string_not_equal(a.claim_id, c.claim_id);
	/* Field boundaries matter: ("E1","username") vs ("E1u","sername"). */
	name_claim_fini(&b);
	mk(&b, NAME_CLAIM, "sername", "asmith", "E1u", 1000, 0);
	assert_string_not_equal(a.claim_id, b.claim_id);
	name_claim_fini(&a);
	name_claim_fini(&b);
	name_claim_fini(&c);
}

static void test_first_claim_wins_second_is_denied(void **state)
{
	(void)state;
	name_entry_t e;
	name_entry_init(&e);
	name_decision_t d = decide(&e, NAME_CLAIM, "username", "asmith", "E1", 1000, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_GRANTED);
	assert_true(d.changed);
	assert_int_equal(e.state, NAME_STATE_GRANTED);
	assert_string_equal(e.owner, "E1");
	/* Same second, other employee, other case: the same name. */
	d = decide(&e, NAME_CLAIM, "username", "ASmith", "E2", 1000, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_DENIED);
	assert_int_equal(d.reason, NAME_REASON_TAKEN);
	assert_false(d.changed);
	assert_null(strstr(d.detail, "E1")); /* the owner is not named */
	/* The owner again: granted, sticky, nothing to persist. */
	d = decide(&e, NAME_CLAIM, "username", "asmith", "E1", 5000, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_GRANTED);
	assert_false(d.changed);
	assert_int_equal(e.since, 1000);
	/* Namespaces are separate. */
	name_entry_t m;
	name_entry_init(&m);
	d = decide(&m, NAME_CLAIM, "email", "asmith", "E2", 1000, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_GRANTED);
	name_entry_fini(&m);
	name_entry_fini(&e);
}

static void test_reserved_names(void **state)
{
	(void)state;
	name_entry_t e;
	name_entry_init(&e);
	name_decision_t d =
	    decide(&e, NAME_RESERVE, "username", "root", "external:uid=root", 10, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_NONE);
	assert_true(d.changed);
	assert_int_equal(e.state, NAME_STATE_RESERVED);
	d = decide(&e, NAME_CLAIM, "username", "root", "E1", 20, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_DENIED);
	assert_int_equal(d.reason, NAME_REASON_RESERVED);
	/* Reserved for an employee (import of an account it already has). */
	name_entry_t f;
	name_entry_init(&f);
	decide(&f, NAME_RESERVE, "username", "bjones", "E7", 10, 0);
	d = decide(&f, NAME_CLAIM, "username", "bjones", "E7", 20, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_GRANTED);
	assert_int_equal(f.state, NAME_STATE_GRANTED);
	/* A later import does not take a granted name away. */
	d = decide(&f, NAME_RESERVE, "username", "bjones", "external:uid=bjones", 30, 0);
	assert_false(d.changed);
	assert_int_equal(d.reason, NAME_REASON_TAKEN);
	assert_string_equal(f.owner, "E7");
	name_entry_fini(&f);
	name_entry_fini(&e);
}

static void test_release_and_quarantine(void **state)
{
	(void)state;
	name_entry_t e;
	name_entry_init(&e);
	decide(&e, NAME_CLAIM, "username", "asmith", "E1", 1000, 0);
	/* Only the owner can release. */
	name_decision_t d = decide(&e, NAME_RELEASE, "username", "asmith", "E2", 2000, 0);
	assert_int_equal(d.reason, NAME_REASON_NOT_OWNER);
	assert_false(d.changed);
	assert_int_equal(e.state, NAME_STATE_GRANTED);
	d = decide(&e, NAME_RELEASE, "username", "asmith", "E1", 2000, 9000);
	assert_true(d.changed);
	assert_int_equal(e.state, NAME_STATE_RELEASED);
	assert_int_equal(e.quarantine_until, 9000);
	/* Judged by claimed_at: 8999 is inside, 9000 is out. */
	d = decide(&e, NAME_CLAIM, "username", "asmith", "E2", 8999, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_DENIED);
	assert_int_equal(d.reason, NAME_REASON_QUARANTINED);
	assert_int_equal(d.quarantine_until, 9000);
	/* The old owner gets it back at any time (a rehire). */
	name_entry_t back;
	name_entry_init(&back);
	decide(&back, NAME_CLAIM, "username", "asmith", "E1", 1000, 0);
	decide(&back, NAME_RELEASE, "username", "asmith", "E1", 2000, 9000);
	d = decide(&back, NAME_CLAIM, "username", "asmith", "E1", 3000, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_GRANTED);
	assert_int_equal(back.state, NAME_STATE_GRANTED);
	name_entry_fini(&back);
	/* After the quarantine, someone else may have it. */
	d = decide(&e, NAME_CLAIM, "username", "asmith", "E2", 9000, 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_GRANTED);
	assert_string_equal(e.owner, "E2");
	/* Release of a free name: ignored. */
	name_entry_t f;
	name_entry_init(&f);
	d = decide(&f, NAME_RELEASE, "username", "nobody", "E1", 1, 2);
	assert_false(d.changed);
	assert_int_equal(f.state, NAME_STATE_FREE);
	name_entry_fini(&f);
	name_entry_fini(&e);
}

static void test_invalid_claims_are_denied_without_change(void **state)
{
	(void)state;
	name_entry_t e;
	name_claim_t c;
	name_decision_t d;
	name_entry_init(&e);
	decide(&e, NAME_CLAIM, "username", "asmith", "E1", 1000, 0);
	/* Wrong message key: the claim may be on another partition. */
	mk(&c, NAME_CLAIM, "username", "asmith", "E2", 1000, 0);
	assert_int_equal(name_arbiter_decide(&e, &c, "username:bsmith", 15, &d), 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_DENIED);
	assert_int_equal(d.reason, NAME_REASON_INVALID);
	assert_non_null(strstr(d.detail, "message key"));
	assert_string_equal(e.owner, "E1");
	name_claim_fini(&c);
	/* ':' in the namespace would make keys ambiguous. */
	mk(&c, NAME_CLAIM, "user:name", "x", "E2", 1000, 0);
	assert_int_equal(name_arbiter_decide(&e, &c, NULL, 0, &d), 0);
	assert_int_equal(d.reason, NAME_REASON_INVALID);
	name_claim_fini(&c);
	/* An empty claimant cannot be answered. */
	mk(&c, NAME_CLAIM, "username", "x", "E2", 1000, 0);
	c.employee_id[0] = '\0';
	assert_int_equal(name_arbiter_decide(&e, &c, NULL, 0, &d), 0);
	assert_int_equal(d.outcome, NAME_OUTCOME_NONE);
	assert_int_equal(d.reason, NAME_REASON_INVALID);
	name_claim_fini(&c);
	name_entry_fini(&e);
}

static void test_answer_event(void **state)
{
	(void)state;
	name_entry_t e;
	name_claim_t c;
	name_decision_t d;
	employee_event_t ev, again;
	name_entry_init(&e);
	employee_event_init(&ev);
	employee_event_init(&again);
	decide(&e, NAME_CLAIM, "username", "asmith", "E1", 1000, 0);
	mk(&c, NAME_CLAIM, "username", "asmith", "E2", 1234, 0);
	assert_int_equal(name_arbiter_decide(&e, &c, NULL, 0, &d), 0);
	assert_int_equal(name_arbiter_answer(&c, &d, &ev), 0);
	assert_int_equal(ev.type, EV_NAME_DENIED);
	assert_string_equal(ev.employee_id, "E2");
	assert_string_equal(ev.source, "idstream");
	assert_string_equal(ev.source_event_id, c.claim_id);
	assert_int_equal(ev.occurred_at, 1234);
	assert_int_equal(ev.effective_at, 1234);
	assert_string_equal(id_attrs_get(&ev.attributes, "namespace"), "username");
	assert_string_equal(id_attrs_get(&ev.attributes, "value"), "asmith");
	assert_string_equal(id_attrs_get(&ev.attributes, "claim_id"), c.claim_id);
	assert_string_equal(id_attrs_get(&ev.attributes, "reason"), "taken");
	assert_false(id_attrs_has(&ev.attributes, "owner"));
	assert_int_equal(ev.attributes.len, 4);
	assert_int_equal(strlen(ev.event_id), 32);
	/* Same claim, same decision: same event id. */
	assert_int_equal(name_arbiter_answer(&c, &d, &again), 0);
	assert_string_equal(ev.event_id, again.event_id);
	/* A grant of the same claim would be another event. */
	d.outcome = NAME_OUTCOME_GRANTED;
	assert_int_equal(name_arbiter_answer(&c, &d, &again), 0);
	assert_int_equal(again.type, EV_NAME_GRANTED);
	assert_string_not_equal(ev.event_id, again.event_id);
	assert_false(id_attrs_has(&again.attributes, "reason"));
	d.outcome = NAME_OUTCOME_NONE;
	assert_int_equal(name_arbiter_answer(&c, &d, &again), ID_EINVALID);
	employee_event_fini(&ev);
	employee_event_fini(&again);
	name_claim_fini(&c);
	name_entry_fini(&e);
}

static void test_entry_bytes_round_trip(void **state)
{
	(void)state;
	name_entry_t e, back;
	id_buf_t b = ID_BUF_INIT;
	id_err_t err = {0};
	name_entry_init(&e);
	name_entry_init(&back);
	assert_int_equal(name_entry_encode(&e, &b), ID_EINVALID); /* FREE */
	decide(&e, NAME_CLAIM, "username", "ASmith", "E1", 1000, 0);
	decide(&e, NAME_RELEASE, "username", "asmith", "E1", 2000, 9000);
	assert_int_equal(name_entry_encode(&e, &b), 0);
	assert_int_equal(name_entry_decode(&back, b.data, b.len, &err), 0);
	assert_int_equal(back.state, NAME_STATE_RELEASED);
	assert_string_equal(back.owner, "E1");
	assert_string_equal(back.value, "ASmith"); /* the owner's spelling kept */
	assert_string_equal(back.claim_id, e.claim_id);
	assert_int_equal(back.since, 2000);
	assert_int_equal(back.quarantine_until, 9000);
	/* Every truncation and a trailing byte are refused. */
	for (size_t n = 0; n < b.len; n++)
		assert_int_equal(name_entry_decode(&back, b.data, n, &err), ID_EPARSE);
	assert_int_equal(id_buf_append_u8(&b, 0), 0);
	assert_int_equal(name_entry_decode(&back, b.data, b.len, &err), ID_EPARSE);
	assert_int_equal(back.state, NAME_STATE_FREE);
	id_buf_fini(&b);
	name_entry_fini(&e);
	name_entry_fini(&back);
}

static void test_name_claim_codec(void **state)
{
	(void)state;
	id_err_t err = {0};
	codec_t *codec = codec_create(&err);
	assert_non_null(codec);
	name_claim_t c, back;
	id_buf_t b = ID_BUF_INIT, b2 = ID_BUF_INIT;
	mk(&c, NAME_RELEASE, "email", "Anna.Smith@example.com", "E1", 1700000000000,
	   1731536000000);
	name_claim_init(&back);
	assert_int_equal(codec_encode_name_claim(codec, &c, &b, &err), 0);
	assert_int_equal(b.data[0], 0xC3);
	assert_int_equal(b.data[1], 0x01);
	codec_kind_t kind;
	assert_int_equal(codec_peek_kind(codec, b.data, b.len, &kind, NULL, &err), 0);
	assert_int_equal(kind, CODEC_NAME_CLAIM);
	assert_int_equal(codec_decode_name_claim(codec, b.data, b.len, &back, &err), 0);
	assert_string_equal(back.claim_id, c.claim_id);
	assert_int_equal(back.kind, NAME_RELEASE);
	assert_string_equal(back.ns, "email");
	assert_string_equal(back.value, "Anna.Smith@example.com");
	assert_string_equal(back.employee_id, "E1");
	assert_int_equal(back.claimed_at, 1700000000000);
	assert_int_equal(back.quarantine_until, 1731536000000);
	assert_string_equal(back.source_event_id, "ev-1");
	assert_int_equal(codec_encode_name_claim(codec, &back, &b2, &err), 0);
	assert_int_equal(b.len, b2.len);
	assert_memory_equal(b.data, b2.data, b.len);
	/* An EmployeeEvent is not a NameClaim. */
	employee_event_t ev;
	employee_event_init(&ev);
	name_entry_t e;
	name_decision_t d;
	name_entry_init(&e);
	assert_int_equal(name_arbiter_decide(&e, &c, NULL, 0, &d), 0);
	free(c.ns);
	c.ns = NULL;
	assert_int_equal(codec_encode_name_claim(codec, &c, &b2, &err), ID_EINVALID);
	assert_int_equal(b2.len, 0);
	name_claim_fini(&c);
	mk(&c, NAME_CLAIM, "username", "asmith", "E1", 5, 0);
	assert_int_equal(name_arbiter_decide(&e, &c, NULL, 0, &d), 0);
	assert_int_equal(name_arbiter_answer(&c, &d, &ev), 0);
	assert_int_equal(codec_encode_event(codec, &ev, &b2, &err), 0);
	assert_int_equal(codec_decode_name_claim(codec, b2.data, b2.len, &back, &err),
	                 ID_ESCHEMA);
	assert_null(back.claim_id);
	for (size_t n = 0; n < b.len; n++)
		assert_int_not_equal(
		    codec_decode_name_claim(codec, b.data, n, &back, &err), 0);
	employee_event_fini(&ev);
	name_entry_fini(&e);
	name_claim_fini(&c);
	name_claim_fini(&back);
	id_buf_fini(&b);
	id_buf_fini(&b2);
	codec_destroy(codec);
}

/*
 * Two employees hired in the same second with the same candidates: each
 * walks its list on denial.  Replaying the same claim log into empty
 * entries gives the same answers, byte for byte.
 */
static void run_log(codec_t *codec, id_buf_t *answers, char *outcomes)
{
	static const struct {
		name_claim_kind_t kind;
		const char *value, *emp;
		int64_t at, q;
	} log[] = {
	    {NAME_RESERVE, "asmith", "external:uid=asmith", 1, 0},
	    {NAME_CLAIM, "asmith", "E1", 100, 0},
	    {NAME_CLAIM, "asmith", "E2", 100, 0},
	    {NAME_CLAIM, "annasmith", "E1", 101, 0},
	    {NAME_CLAIM, "annasmith", "E2", 101, 0},
	    {NAME_CLAIM, "asmith2", "E2", 102, 0},
	    {NAME_RELEASE, "annasmith", "E1", 200, 300},
	    {NAME_CLAIM, "annasmith", "E3", 250, 0},
	    {NAME_CLAIM, "annasmith", "E3", 300, 0},
	};
	/* One entry per distinct name, looked up by value. */
	const char *names[8] = {0};
	name_entry_t entries[8];
	size_t n = 0;
	id_buf_t b = ID_BUF_INIT;
	id_err_t err = {0};
	for (size_t i = 0; i < sizeof(log) / sizeof(*log); i++) {
		size_t k = 0;
		while (k < n && strcmp(names[k], log[i].value) != 0)
			k++;
		if (k == n) {
			names[n] = log[i].value;
			name_entry_init(&entries[n++]);
		}
		name_claim_t c;
		name_decision_t d;
		employee_event_t ev;
		employee_event_init(&ev);
		mk(&c, log[i].kind, "username", log[i].value, log[i].emp, log[i].at,
		   log[i].q);
		assert_int_equal(name_arbiter_decide(&entries[k], &c, NULL, 0, &d), 0);
		if (d.outcome != NAME_OUTCOME_NONE) {
			assert_int_equal(name_arbiter_answer(&c, &d, &ev), 0);
			assert_int_equal(codec_encode_event(codec, &ev, &b, &err), 0);
			assert_int_equal(id_buf_append(answers, b.data, b.len), 0);
			strcat(outcomes, d.outcome == NAME_OUTCOME_GRANTED ? "G" : "D");
		}
		employee_event_fini(&ev);
		name_claim_fini(&c);
	}
	for (size_t k = 0; k < n; k++)
		name_entry_fini(&entries[k]);
	id_buf_fini(&b);
}

static void test_replay_gives_the_same_answers(void **state)
{
	(void)state;
	id_err_t err = {0};
	codec_t *codec = codec_create(&err);
	id_buf_t a = ID_BUF_INIT, b = ID_BUF_INIT;
	char oa[32] = "", ob[32] = "";
	assert_non_null(codec);
	run_log(codec, &a, oa);
	run_log(codec, &b, ob);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	/* asmith is reserved → D, D; annasmith → G (E1), D (E2); asmith2 → G
	 * (E2); E3 inside the quarantine → D, at its end → G. */
	assert_string_equal(oa, "DDGDGDG");
	assert_string_equal(ob, oa);
	id_buf_fini(&a);
	id_buf_fini(&b);
	codec_destroy(codec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key_folds_ascii_case_only),
	    cmocka_unit_test(test_claim_id_is_deterministic),
	    cmocka_unit_test(test_first_claim_wins_second_is_denied),
	    cmocka_unit_test(test_reserved_names),
	    cmocka_unit_test(test_release_and_quarantine),
	    cmocka_unit_test(test_invalid_claims_are_denied_without_change),
	    cmocka_unit_test(test_answer_event),
	    cmocka_unit_test(test_entry_bytes_round_trip),
	    cmocka_unit_test(test_name_claim_codec),
	    cmocka_unit_test(test_replay_gives_the_same_answers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
