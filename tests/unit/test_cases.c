/*
 * test_cases.c — runs the lifecycle scenarios in tests/cases/lifecycle/
 * (one cmocka test per *.case file) through the real fold, lifecycle and
 * Lua policy, with timers fired the way the processor fires them: a
 * REEVALUATE event at each due instant.
 *
 * Case file lines (# starts a comment; times are ISO-8601 UTC or dates):
 *
 *   policy PATH                       the policy (default: built-in mapping)
 *   employee ID                       the employee (default E1)
 *   event LABEL TIME TYPE [effective=TIME] [reason=WORD] [key=value]...
 *                                     folds an HR event known at TIME
 *                                     (effective defaults to TIME); "_" in a
 *                                     value stands for a space
 *   advance TIME                      fires every timer due up to TIME, in
 *                                     order, as the scheduler would
 *   grant NS VALUE                    folds the names arbiter's NAME_GRANTED
 *   deny NS VALUE [REASON]            or NAME_DENIED for the employee's claim
 *                                     of VALUE in namespace NS, at the
 *                                     record's time (labelled grant:NS:VALUE,
 *                                     deny:NS:VALUE)
 *   expect [emitted=yes|no] [state=S] [version=N] [timer=TIME|none]
 *          [attr.NAME=V|-] [groups=a,b|-] [container=V] [cause.NAME=LABEL]
 *          [held=yes|no] [claims=KIND:NS:VALUE,...|-] [quarantine=TIME]
 *          [name.NS=V|-] [pending.NS=V|-] [denied.NS=a,b|-]
 *          [error=WORD]               checks the last step's outcome and
 *                                     the current identity; claims are those
 *                                     the last step reported, quarantine the
 *                                     quarantine_until of its last RELEASE;
 *                                     name.NS is the value granted ("V
 *                                     (released)" once given up); on a line
 *                                     with error=, the other checks look at
 *                                     the record the failed step left
 *
 * LABEL names the event (its event id); a REEVALUATE fired by `advance` is
 * labelled "timer@TIME".  Every check failure names the file and line.
 * The fold runs as the processor runs it, with unique names arbitrated
 * (fold_apply_claims()).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "processors/employee_record.h"
#include "processors/fold.h"
#include "processors/mapping.h"
#include "processors/name_arbiter.h"
#include "processors/policy.h"
#include "schemas/model.h"

#define CASES_DIR "tests/cases/lifecycle"

typedef struct run {
	const char *file;
	int line;
	mapping_t *m;
	policy_t *policy;
	employee_record_t rec;
	char employee[64];
	bool emitted;
	bool held;
	int rc;
	id_err_t err;
	fold_claims_t claims;     /* this step's claims */
	fold_claims_t step;       /* the last fold's */
	char label_of[64][2][64]; /* event id → label, for cause checks */
	int nlabels;
} run_t;

static void die(run_t *r, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fail_msg("%s:%d: %s", r->file, r->line, msg);
}

static int64_t parse_time(run_t *r, const char *s)
{
	int64_t ms;
	if (policy_time_parse(s, &ms) != 0)
		die(r, "bad time \"%s\"", s);
	return ms;
}

static void format_time(int64_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void unspace(char *v)
{
	for (; *v; v++)
		if (*v == '_')
			*v = ' ';
}

/* Moves the last fold's claims to the end of the step's. */
static void keep_claims(run_t *r)
{
	for (size_t i = 0; i < r->step.len; i++) {
		fold_claims_t *c = &r->claims;
		if (c->len == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 8;
			c->items = realloc(c->items, c->cap * sizeof(*c->items));
			assert_non_null(c->items);
		}
		c->items[c->len++] = r->step.items[i];
	}
	r->step.len = 0; /* moved */
	r->held = r->step.held;
}

static void fold_one(run_t *r, employee_event_t *ev)
{
	id_err_clear(&r->err);
	r->emitted = false;
	fold_claims_clear(&r->step);
	r->rc =
	    fold_apply_claims(&r->rec, ev, r->m, NULL, &r->emitted, &r->step, &r->err);
	if (r->rc == ID_ENOMEM)
		die(r, "out of memory");
	keep_claims(r);
}

/* grant/deny NS VALUE [REASON]: the arbiter's answer to the claim. */
static void do_answer(run_t *r, char **tok, int ntok)
{
	employee_event_t ev;
	char label[300];
	bool grant = strcmp(tok[0], "grant") == 0;
	if (ntok < 3 || (grant && ntok != 3))
		die(r, "%s NS VALUE%s", tok[0], grant ? "" : " [REASON]");
	snprintf(label, sizeof(label), "%s:%s:%s", tok[0], tok[1], tok[2]);
	const char *claim_id = "unknown";
	for (size_t i = 0; i < r->claims.len; i++)
		if (r->claims.items[i].kind == NAME_CLAIM &&
		    strcmp(r->claims.items[i].ns, tok[1]) == 0 &&
		    strcmp(r->claims.items[i].value, tok[2]) == 0)
			claim_id = r->claims.items[i].claim_id;
	employee_event_init(&ev);
	ev.event_id = strdup(label);
	ev.source = strdup(NAME_EVENT_SOURCE);
	ev.source_event_id = strdup(claim_id);
	ev.employee_id = strdup(r->employee);
	ev.type = grant ? EV_NAME_GRANTED : EV_NAME_DENIED;
	ev.occurred_at = ev.effective_at = r->rec.now;
	assert_int_equal(id_attrs_set(&ev.attributes, NAME_ATTR_NAMESPACE, tok[1]), 0);
	assert_int_equal(id_attrs_set(&ev.attributes, NAME_ATTR_VALUE, tok[2]), 0);
	assert_int_equal(id_attrs_set(&ev.attributes, NAME_ATTR_CLAIM_ID, claim_id), 0);
	if (!grant)
		assert_int_equal(id_attrs_set(&ev.attributes, NAME_ATTR_REASON,
		                              ntok > 3 ? tok[3] : "taken"),
		                 0);
	fold_claims_clear(&r->claims);
	fold_one(r, &ev);
	employee_event_fini(&ev);
}

static void do_event(run_t *r, char **tok, int ntok)
{
	employee_event_t ev;
	if (ntok < 4)
		die(r, "event LABEL TIME TYPE ...");
	employee_event_init(&ev);
	ev.event_id = strdup(tok[1]);
	ev.source = strdup("case");
	ev.source_event_id = strdup(tok[1]);
	ev.employee_id = strdup(r->employee);
	ev.occurred_at = ev.effective_at = parse_time(r, tok[2]);
	if (employee_event_type_parse(tok[3], &ev.type) != 0)
		die(r, "unknown event type %s", tok[3]);
	for (int i = 4; i < ntok; i++) {
		char *eq = strchr(tok[i], '=');
		if (eq == NULL)
			die(r, "expected key=value, got %s", tok[i]);
		*eq = '\0';
		char *v = eq + 1;
		unspace(v);
		if (strcmp(tok[i], "effective") == 0)
			ev.effective_at = parse_time(r, v);
		else if (strcmp(tok[i], "reason") == 0)
			ev.reason = strdup(v);
		else
			assert_int_equal(id_attrs_set(&ev.attributes, tok[i],
			                              strcmp(v, "-") == 0 ? NULL : v),
			                 0);
	}
	if (r->nlabels < 64) {
		snprintf(r->label_of[r->nlabels][0], 64, "%s", tok[1]);
		snprintf(r->label_of[r->nlabels][1], 64, "%s", tok[1]);
		r->nlabels++;
	}
	fold_claims_clear(&r->claims);
	fold_one(r, &ev);
	employee_event_fini(&ev);
}

/* Fires the timers due by `until` one by one (each may set the next). */
static void do_advance(run_t *r, const char *until_s)
{
	int64_t until = parse_time(r, until_s);
	bool any = false;
	fold_claims_clear(&r->claims);
	for (int guard = 0; r->rec.timer_at > 0 && r->rec.timer_at <= until; guard++) {
		if (guard > 100)
			die(r, "timers do not settle");
		employee_event_t ev;
		char label[64], at[32];
		format_time(r->rec.timer_at, at, sizeof(at));
		snprintf(label, sizeof(label), "timer@%s", at);
		employee_event_init(&ev);
		ev.event_id = strdup(label);
		ev.source = strdup("idstream-timer");
		ev.source_event_id = strdup(label);
		ev.employee_id = strdup(r->employee);
		ev.type = EV_REEVALUATE;
		ev.occurred_at = ev.effective_at = r->rec.timer_at;
		bool was = any;
		fold_one(r, &ev);
		employee_event_fini(&ev);
		if (r->rc != 0)
			die(r, "timer at %s: %s", at, r->err.msg);
		any = was || r->emitted;
	}
	r->emitted = any;
	r->rc = 0;
}

static void check(run_t *r, const char *what, const char *got, const char *want)
{
	if (got == NULL)
		got = "-";
	if (strcmp(got, want) != 0)
		die(r, "%s: got \"%s\", want \"%s\"", what, got, want);
}

static void do_expect(run_t *r, char **tok, int ntok)
{
	const desired_identity_t *d = &r->rec.last;
	char buf[1024];
	/* A line that expects an error checks the record it left. */
	bool expects_error = false;
	for (int i = 1; i < ntok; i++)
		expects_error = expects_error || strncmp(tok[i], "error=", 6) == 0;
	for (int i = 1; i < ntok; i++) {
		char *eq = strchr(tok[i], '=');
		if (eq == NULL)
			die(r, "expected key=value, got %s", tok[i]);
		*eq = '\0';
		const char *k = tok[i];
		char *v = eq + 1;
		unspace(v);
		if (strcmp(k, "error") == 0) {
			if (r->rc == 0 || strstr(r->err.msg, v) == NULL)
				die(r,
				    "error: got rc %d \"%s\", want one containing \"%s\"",
				    r->rc, r->err.msg, v);
			continue;
		}
		if (r->rc != 0 && !expects_error)
			die(r, "the event failed: %s", r->err.msg);
		if (strcmp(k, "emitted") == 0)
			check(r, k, r->emitted ? "yes" : "no", v);
		else if (strcmp(k, "state") == 0)
			check(r, k, d->version > 0 ? lifecycle_state_name(d->state) : "-",
			      v);
		else if (strcmp(k, "version") == 0) {
			snprintf(buf, sizeof(buf), "%lld", (long long)d->version);
			check(r, k, buf, v);
		} else if (strcmp(k, "timer") == 0) {
			if (r->rec.timer_at == 0)
				snprintf(buf, sizeof(buf), "none");
			else
				format_time(r->rec.timer_at, buf, sizeof(buf));
			check(r, k, buf, strcmp(v, "none") == 0 ? "none" : v);
		} else if (strncmp(k, "attr.", 5) == 0) {
			check(r, k, id_attrs_get(&d->attributes, k + 5), v);
		} else if (strcmp(k, "groups") == 0) {
			buf[0] = '\0';
			for (size_t g = 0; g < d->ngroups; g++)
				snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf),
				         "%s%s", g ? "," : "", d->groups[g]);
			check(r, k, buf[0] ? buf : "-", v);
		} else if (strcmp(k, "container") == 0) {
			check(r, k, d->container, v);
		} else if (strcmp(k, "held") == 0) {
			check(r, k, r->held ? "yes" : "no", v);
		} else if (strcmp(k, "claims") == 0) {
			buf[0] = '\0';
			for (size_t c = 0; c < r->claims.len; c++) {
				const name_claim_t *nc = &r->claims.items[c];
				snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf),
				         "%s%s:%s:%s", c ? "," : "",
				         name_claim_kind_name(nc->kind), nc->ns,
				         nc->value);
			}
			check(r, k, buf[0] ? buf : "-", v);
		} else if (strcmp(k, "quarantine") == 0) {
			buf[0] = '\0';
			for (size_t c = 0; c < r->claims.len; c++)
				if (r->claims.items[c].kind == NAME_RELEASE)
					format_time(r->claims.items[c].quarantine_until,
					            buf, sizeof(buf));
			check(r, k, buf[0] ? buf : "-", v);
		} else if (strncmp(k, "name.", 5) == 0 ||
		           strncmp(k, "pending.", 8) == 0 ||
		           strncmp(k, "denied.", 7) == 0) {
			const char *ns = strchr(k, '.') + 1;
			const employee_name_t *n = employee_record_name(&r->rec, ns);
			buf[0] = '\0';
			if (n != NULL && k[0] == 'n' && n->granted != NULL)
				snprintf(buf, sizeof(buf), "%s%s", n->granted,
				         n->released ? " (released)" : "");
			else if (n != NULL && k[0] == 'p' && n->pending != NULL)
				snprintf(buf, sizeof(buf), "%s", n->pending);
			for (size_t c = 0; n != NULL && k[0] == 'd' && c < n->ndenied;
			     c++)
				snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf),
				         "%s%s", c ? "," : "", n->denied[c]);
			check(r, k, buf[0] ? buf : "-", v);
		} else if (strncmp(k, "cause.", 6) == 0) {
			const char *ev = NULL;
			for (size_t c = 0; c < d->ncauses; c++)
				if (strcmp(d->causes[c].attribute, k + 6) == 0)
					ev = d->causes[c].event_id;
			check(r, k, ev, v);
		} else {
			die(r, "unknown expectation %s", k);
		}
	}
}

static void run_case(void **state)
{
	const char *path = *state;
	run_t r;
	memset(&r, 0, sizeof(r));
	r.file = path;
	snprintf(r.employee, sizeof(r.employee), "E1");
	employee_record_init(&r.rec);
	id_err_t err = {0};
	r.m = mapping_create_default("example.com", &err);
	assert_non_null(r.m);

	FILE *f = fopen(path, "r");
	if (f == NULL)
		fail_msg("%s: cannot open", path);
	char line[2048];
	while (fgets(line, sizeof(line), f) != NULL) {
		r.line++;
		char *tok[64];
		int ntok = 0;
		char *save = NULL;
		char *hash = strchr(line, '#');
		if (hash != NULL)
			*hash = '\0';
		for (char *t = strtok_r(line, " \t\r\n", &save); t != NULL && ntok < 64;
		     t = strtok_r(NULL, " \t\r\n", &save))
			tok[ntok++] = t;
		if (ntok == 0)
			continue;
		if (strcmp(tok[0], "policy") == 0 && ntok == 2) {
			mapping_destroy(r.m);
			policy_destroy(r.policy);
			r.policy = policy_load_file(tok[1], NULL, &err);
			if (r.policy == NULL)
				die(&r, "policy %s: %s", tok[1], err.msg);
			r.m = policy_mapping_create(r.policy, "ldap", &err);
			if (r.m == NULL)
				die(&r, "policy %s: %s", tok[1], err.msg);
		} else if (strcmp(tok[0], "employee") == 0 && ntok == 2) {
			snprintf(r.employee, sizeof(r.employee), "%s", tok[1]);
		} else if (strcmp(tok[0], "event") == 0) {
			do_event(&r, tok, ntok);
		} else if (strcmp(tok[0], "advance") == 0 && ntok == 2) {
			do_advance(&r, tok[1]);
		} else if (strcmp(tok[0], "grant") == 0 || strcmp(tok[0], "deny") == 0) {
			do_answer(&r, tok, ntok);
		} else if (strcmp(tok[0], "expect") == 0) {
			do_expect(&r, tok, ntok);
		} else {
			die(&r, "unknown line \"%s\"", tok[0]);
		}
	}
	fclose(f);
	/* The record survives its byte form at the end of every case. */
	id_buf_t a = ID_BUF_INIT, b = ID_BUF_INIT;
	employee_record_t back;
	employee_record_init(&back);
	assert_int_equal(employee_record_encode(&r.rec, &a, NULL), 0);
	assert_int_equal(employee_record_decode(&back, a.data, a.len, &err), 0);
	assert_int_equal(employee_record_encode(&back, &b, NULL), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	employee_record_fini(&back);
	id_buf_fini(&a);
	id_buf_fini(&b);
	employee_record_fini(&r.rec);
	mapping_destroy(r.m);
	policy_destroy(r.policy);
	fold_claims_fini(&r.claims);
	fold_claims_fini(&r.step);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
	DIR *d = opendir(CASES_DIR);
	if (d == NULL) {
		fprintf(stderr,
		        "test_cases: cannot open %s (run from the repository root)\n",
		        CASES_DIR);
		return 1;
	}
	char *paths[256];
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && n < 256) {
		size_t l = strlen(e->d_name);
		if (l > 5 && strcmp(e->d_name + l - 5, ".case") == 0) {
			paths[n] = malloc(strlen(CASES_DIR) + l + 2);
			sprintf(paths[n], "%s/%s", CASES_DIR, e->d_name);
			n++;
		}
	}
	closedir(d);
	qsort(paths, n, sizeof(*paths), cmp_str);
	struct CMUnitTest *tests = calloc(n ? n : 1, sizeof(*tests));
	for (size_t i = 0; i < n; i++) {
		tests[i].name = paths[i] + strlen(CASES_DIR) + 1;
		tests[i].test_func = run_case;
		tests[i].initial_state = paths[i];
	}
	int rc = _cmocka_run_group_tests("lifecycle cases", tests, n, NULL, NULL);
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(tests);
	return n == 0 ? 1 : rc;
}
