/*
 * approve.c — operator decisions for running sinks, carried as events:
 *
 *   idstream held TARGET [--json]                      what the guard holds
 *   idstream approve TARGET [EMPLOYEE_ID...]           apply held disables/deletes
 *   idstream reject TARGET [EMPLOYEE_ID...]            drop them for good
 *   idstream sink retry TARGET [EMPLOYEE_ID...]        re-drive parked failures
 *   idstream reconcile TARGET [--repair] [EMPLOYEE_ID...]   drift report / repair
 *
 * The held list is read from <prefix>.sink.results: an employee is held for
 * TARGET when its latest result there is HELD.  approve and reject send
 * exactly the (employee, version) pairs listed, so an operator decides what
 * was shown, never a version that was held after the listing.
 *
 * Commands go to <prefix>.sink.control, key = target name, JSON:
 *
 *   {"type": "command", "id": HEX, "command": "approve" | "reject" | "retry" |
 *    "reconcile", "target": T, "actor": USER, "at": MS,
 *    "items": [{"employee_id": E, "version": N}, ...],   approve, reject
 *    "employees": [E, ...],                   retry, reconcile (absent: all)
 *    "repair": BOOL}                          reconcile
 *
 * Every sink of the target carries it out (cmd/sink.c) and answers on the
 * same topic with {"type": "done", "id": HEX, "command": ..., "target": T,
 * "at": MS, "counts": {...}, "held": N, "parked": N, "kind": K, "can_plan":
 * BOOL, "drift": [...]}.  The command waits for the first answer (--wait
 * SECONDS, 0: do not wait); a command no sink answered in time stays in the
 * topic and is carried out when a sink of the target starts.
 */
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "cmd/scan.h"
#include "cmd/sink_targets.h"
#include "cmd/timeline.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "schemas/codec.h"

#define CTL_ITEMS_PER_COMMAND 5000

/* The latest result of one employee for the target. */
typedef struct held_row {
	char *employee_id;
	int64_t version;
	sink_outcome_t outcome;
	int64_t at;
	char *from, *to; /* the "held" note: account state → desired state */
	char *error;
} held_row_t;

typedef struct held_scan {
	const char *target;
	codec_t *codec;
	id_hmap_t latest; /* employee id → held_row_t* */
} held_scan_t;

static void held_row_free(held_row_t *h)
{
	if (h == NULL)
		return;
	free(h->employee_id);
	free(h->from);
	free(h->to);
	free(h->error);
	free(h);
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static int held_scan_one(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	held_scan_t *hs = opaque;
	sink_result_t r;
	id_err_t derr = {0};
	sink_result_init(&r);
	if (codec_decode_result(hs->codec, m->payload, m->len, &r, &derr) != 0 ||
	    r.target == NULL || strcmp(r.target, hs->target) != 0 ||
	    r.employee_id == NULL)
		goto out;
	held_row_t *h = id_hmap_get(&hs->latest, r.employee_id);
	if (h == NULL) {
		if ((h = calloc(1, sizeof(*h))) == NULL ||
		    (h->employee_id = strdup(r.employee_id)) == NULL ||
		    id_hmap_put(&hs->latest, r.employee_id, h) != 0) {
			held_row_free(h);
			sink_result_fini(&r);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
	}
	/* A DEFERRED result says "still trying", not "decided". */
	if (r.outcome == SINK_DEFERRED)
		goto out;
	free(h->from);
	free(h->to);
	free(h->error);
	h->from = h->to = h->error = NULL;
	h->version = r.desired_version;
	h->outcome = r.outcome;
	h->at = r.at;
	h->error = dup_or_null(r.error);
	for (size_t i = 0; i < r.nops; i++) {
		if (strcmp(r.ops[i].op, "held") == 0) {
			h->from = dup_or_null(r.ops[i].old_value);
			h->to = dup_or_null(r.ops[i].new_value);
		}
	}
out:
	sink_result_fini(&r);
	return 0;
}

static int cmp_row(const void *a, const void *b)
{
	return strcmp((*(held_row_t *const *)a)->employee_id,
	              (*(held_row_t *const *)b)->employee_id);
}

static bool listed(int nids, char **ids, const char *employee_id)
{
	if (nids == 0)
		return true;
	for (int i = 0; i < nids; i++)
		if (strcmp(ids[i], employee_id) == 0)
			return true;
	return false;
}

/*
 * The employees whose latest result for target is HELD (restricted to ids
 * when nids > 0), sorted by employee id.  Ownership: *rows and each row
 * belong to *scan; free with held_scan_fini().
 */
static int held_load(const id_config_t *cfg, const char *target, int nids, char **ids,
                     held_scan_t *hs, held_row_t ***rows, size_t *nrows, id_err_t *err)
{
	char topic[256];
	int32_t nparts = 0;
	long total = 0;
	int rc = 0;
	rd_kafka_t *rk = NULL;
	*rows = NULL;
	*nrows = 0;
	hs->target = target;
	id_hmap_init(&hs->latest);
	if ((hs->codec = codec_create(err)) == NULL)
		return err && err->code ? err->code : ID_ENOMEM;
	id_config_topic(cfg, "sink.results", topic, sizeof(topic));
	rk = id_kafka_consumer_create(cfg, "idstream-held", NULL, NULL, NULL, err);
	if (rk == NULL)
		return err && err->code ? err->code : ID_EKAFKA;
	if ((rc = id_kafka_partition_count(rk, topic, &nparts, err)) != 0 ||
	    (rc = scan_topic(rk, topic, nparts, held_scan_one, hs, &total, err)) != 0)
		goto out;
	if (hs->latest.len > 0 &&
	    (*rows = calloc(hs->latest.len, sizeof(**rows))) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < hs->latest.cap; i++) {
		held_row_t *h = hs->latest.slots[i].value;
		if (hs->latest.slots[i].key != NULL && h != NULL &&
		    h->outcome == SINK_HELD && listed(nids, ids, h->employee_id))
			(*rows)[(*nrows)++] = h;
	}
	if (*nrows > 1)
		qsort(*rows, *nrows, sizeof(**rows), cmp_row);
out:
	id_kafka_destroy(rk);
	return rc;
}

static void held_scan_fini(held_scan_t *hs, held_row_t **rows)
{
	for (size_t i = 0; i < hs->latest.cap; i++)
		if (hs->latest.slots[i].key != NULL)
			held_row_free(hs->latest.slots[i].value);
	id_hmap_fini(&hs->latest);
	codec_destroy(hs->codec);
	free(rows);
}

/* ---------------------------------------------------------------- sending */

static void new_id(char out[33])
{
	unsigned char b[16];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)((ts.tv_nsec >> (i % 4 * 8)) ^
			                       (ts.tv_sec >> i));
	}
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/*
 * Publishes cmd (its type, id, target, actor and at are filled in here) on
 * the control topic and, when wait_s > 0, waits that long for a sink's
 * answer.  *answer: the answer (caller json_decref()s), or NULL when none
 * came in time.
 */
static int ctl_send(const id_config_t *cfg, const char *target, json_t *cmd, int wait_s,
                    json_t **answer, id_err_t *err)
{
	char topic[256], id[33];
	int32_t nparts = 0;
	int rc = 0;
	rd_kafka_t *prod = NULL, *cons = NULL;
	char *text = NULL;
	*answer = NULL;
	id_config_topic(cfg, "sink.control", topic, sizeof(topic));
	new_id(id);
	const char *user = getenv("USER");
	if (user == NULL || *user == '\0') {
		const struct passwd *pw = getpwuid(geteuid());
		user = pw != NULL ? pw->pw_name : NULL;
	}
	json_object_set_new(cmd, "type", json_string("command"));
	json_object_set_new(cmd, "id", json_string(id));
	json_object_set_new(cmd, "target", json_string(target));
	json_object_set_new(cmd, "actor", json_string(user && *user ? user : "unknown"));
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	json_object_set_new(
	    cmd, "at", json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
	if ((text = json_dumps(cmd, JSON_COMPACT)) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	if ((prod = id_kafka_producer_create(cfg, "idstream-control", NULL, err)) ==
	    NULL) {
		rc = err && err->code ? err->code : ID_EKAFKA;
		goto out;
	}
	/* The consumer asks for the metadata: a producer's request may make the
	 * broker auto-create the topic with its defaults. */
	cons = id_kafka_consumer_create(cfg, "idstream-control", NULL, NULL, NULL, err);
	if (cons == NULL) {
		rc = err && err->code ? err->code : ID_EKAFKA;
		goto out;
	}
	if ((rc = id_kafka_partition_count(cons, topic, &nparts, err)) != 0)
		goto out;
	if (wait_s > 0) {
		/* Listen from the current end, so only answers to this come. */
		rd_kafka_topic_partition_list_t *l =
		    rd_kafka_topic_partition_list_new(nparts);
		for (int32_t p = 0; p < nparts && rc == 0; p++) {
			int64_t lo = 0, hi = 0;
			rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
			    cons, topic, p, &lo, &hi, 10000);
			if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
				rc =
				    id_kafka_err(err, e, "reading control topic offsets");
			rd_kafka_topic_partition_list_add(l, topic, p)->offset = hi;
		}
		if (rc == 0) {
			rd_kafka_resp_err_t e = rd_kafka_assign(cons, l);
			if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
				rc = id_kafka_err(err, e, "assigning the control topic");
		}
		rd_kafka_topic_partition_list_destroy(l);
		if (rc != 0)
			goto out;
	}
	if ((rc = id_kafka_produce_sync(prod, topic, target, strlen(target), text,
	                                strlen(text), err)) != 0)
		goto out;
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (wait_s > 0 && !cli_stop_requested) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec >= wait_s)
			break;
		rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 200);
		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
			json_t *a = json_loadb(m->payload, m->len, 0, NULL);
			const char *type = json_string_value(json_object_get(a, "type"));
			const char *aid = json_string_value(json_object_get(a, "id"));
			if (type != NULL && strcmp(type, "done") == 0 && aid != NULL &&
			    strcmp(aid, id) == 0) {
				*answer = a;
				rd_kafka_message_destroy(m);
				break;
			}
			json_decref(a);
		}
		rd_kafka_message_destroy(m);
	}
out:
	free(text);
	id_kafka_destroy(cons);
	id_kafka_destroy(prod);
	return rc;
}

static long count_of(const json_t *answer, const char *what)
{
	return (long)json_integer_value(
	    json_object_get(json_object_get(answer, "counts"), what));
}

static void print_no_answer(const char *target, const char *what, int wait_s)
{
	if (wait_s > 0)
		printf(
		    "%s %s: no answer from a sink of %s within %d s; the command is kept "
		    "in the control topic and is carried out when one runs\n",
		    what, target, target, wait_s);
	else
		printf("%s %s: sent; a sink of %s carries it out when it reads it\n",
		       what, target, target);
}

/* Parses [--wait S] [--json] [--repair] and the positional arguments. */
typedef struct ctl_args {
	const char *target;
	char **ids;
	int nids;
	int wait_s;
	bool json, repair;
} ctl_args_t;

static int ctl_parse(const char *cmd, int argc, char **argv, bool allow_json,
                     bool allow_repair, int default_wait, ctl_args_t *a)
{
	memset(a, 0, sizeof(*a));
	a->wait_s = default_wait;
	a->ids = calloc((size_t)argc + 1, sizeof(*a->ids));
	if (a->ids == NULL)
		return cli_fail("out of memory", NULL);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc) {
			char *end = NULL;
			long w = strtol(argv[++i], &end, 10);
			if (end == argv[i] || *end != '\0' || w < 0 || w > 86400)
				return cli_usage_error(
				    cmd, "--wait expects seconds, got \"%s\"", argv[i]);
			a->wait_s = (int)w;
		} else if (allow_json && strcmp(argv[i], "--json") == 0) {
			a->json = true;
		} else if (allow_repair && strcmp(argv[i], "--repair") == 0) {
			a->repair = true;
		} else if (argv[i][0] == '-') {
			return cli_usage_error(cmd, "unknown argument \"%s\"", argv[i]);
		} else if (a->target == NULL) {
			a->target = argv[i];
		} else {
			a->ids[a->nids++] = argv[i];
		}
	}
	if (a->target == NULL)
		return cli_usage_error(
		    cmd, "missing TARGET (a sink's target name, e.g. ldap)");
	return CLI_EXIT_OK;
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (cli_is_help(argv[i]))
			return true;
	return false;
}

/* ---------------------------------------------------------------- held */

int cmd_held(cli_t *cli, int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf("usage: idstream held TARGET [EMPLOYEE_ID...] [--json]\n"
		       "\n"
		       "Lists the disables and deletes the mass-change guard holds for "
		       "TARGET\n"
		       "(employees whose latest result in <prefix>.sink.results is "
		       "HELD): the\n"
		       "version, the change, and since when. `idstream approve TARGET` "
		       "applies\n"
		       "them, `idstream reject TARGET` drops them.\n");
		return CLI_EXIT_OK;
	}
	ctl_args_t a;
	int rc = ctl_parse("held", argc, argv, true, false, 0, &a);
	if (rc != CLI_EXIT_OK) {
		free(a.ids);
		return rc;
	}
	held_scan_t hs = {0};
	held_row_t **rows = NULL;
	size_t n = 0;
	id_err_t err = {0};
	if (held_load(cli->cfg, a.target, a.nids, a.ids, &hs, &rows, &n, &err) != 0) {
		rc = cli_fail("held", &err);
		goto out;
	}
	if (a.json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(
			    arr,
			    json_pack("{s:s, s:I, s:s?, s:s?, s:I, s:s?}", "employee_id",
			              rows[i]->employee_id, "version",
			              (json_int_t)rows[i]->version, "from", rows[i]->from,
			              "to", rows[i]->to, "since", (json_int_t)rows[i]->at,
			              "reason", rows[i]->error));
		json_dumpf(arr, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(arr);
		goto out;
	}
	if (n == 0) {
		printf("nothing held for %s\n", a.target);
		goto out;
	}
	printf("%-16s %-8s %-22s %s\n", "EMPLOYEE", "VERSION", "CHANGE", "HELD SINCE");
	for (size_t i = 0; i < n; i++) {
		char when[64], change[64];
		timeline_fmt_time(rows[i]->at, when, sizeof(when));
		snprintf(change, sizeof(change), "%s -> %s",
		         rows[i]->from ? rows[i]->from : "?",
		         rows[i]->to ? rows[i]->to : "?");
		printf("%-16s %-8lld %-22s %s\n", rows[i]->employee_id,
		       (long long)rows[i]->version, change, when);
	}
	printf("%zu changes held for %s: `idstream approve %s` applies them, `idstream "
	       "reject %s` drops them\n",
	       n, a.target, a.target, a.target);
out:
	held_scan_fini(&hs, rows);
	free(a.ids);
	return rc;
}

/* ---------------------------------------------------------------- approve, reject */

static int decide(cli_t *cli, const char *what, int argc, char **argv)
{
	bool approve = strcmp(what, "approve") == 0;
	if (wants_help(argc, argv)) {
		printf(
		    "usage: idstream %s TARGET [EMPLOYEE_ID...] [--wait SECONDS]\n"
		    "\n"
		    "%s the disables and deletes the mass-change guard holds for TARGET\n"
		    "(all of them, or those of the employees named), as listed by\n"
		    "`idstream held TARGET`. The decision is published to\n"
		    "<prefix>.sink.control; the running sink of TARGET carries it out "
		    "and\n"
		    "answers (waited for up to --wait seconds, default 60; 0: do not "
		    "wait).\n"
		    "%s\n",
		    what, approve ? "Applies" : "Drops",
		    approve ? "Only versions still held are applied: an employee whose "
		              "newer version\narrived since is judged on that one."
		            : "Rejected versions are recorded as decided and never "
		              "applied; a later\nversion of the employee is applied "
		              "normally.");
		return CLI_EXIT_OK;
	}
	ctl_args_t a;
	int rc = ctl_parse(what, argc, argv, false, false, 60, &a);
	if (rc != CLI_EXIT_OK) {
		free(a.ids);
		return rc;
	}
	held_scan_t hs = {0};
	held_row_t **rows = NULL;
	size_t n = 0;
	id_err_t err = {0};
	if (held_load(cli->cfg, a.target, a.nids, a.ids, &hs, &rows, &n, &err) != 0) {
		rc = cli_fail(what, &err);
		goto out;
	}
	for (int i = 0; i < a.nids; i++) {
		bool found = false;
		for (size_t j = 0; j < n && !found; j++)
			found = strcmp(rows[j]->employee_id, a.ids[i]) == 0;
		if (!found)
			printf("%s %s: %s is not held\n", what, a.target, a.ids[i]);
	}
	if (n == 0) {
		printf("nothing held for %s\n", a.target);
		goto out;
	}
	printf("%s %s: %zu held changes (%s v%lld%s)\n", what, a.target, n,
	       rows[0]->employee_id, (long long)rows[0]->version, n > 1 ? ", ..." : "");
	long done = 0, failed = 0, gone = 0;
	bool answered = true;
	for (size_t first = 0; first < n; first += CTL_ITEMS_PER_COMMAND) {
		json_t *cmd = json_object(), *items = json_array(), *answer = NULL;
		for (size_t i = first; i < n && i < first + CTL_ITEMS_PER_COMMAND; i++)
			json_array_append_new(items,
			                      json_pack("{s:s, s:I}", "employee_id",
			                                rows[i]->employee_id, "version",
			                                (json_int_t)rows[i]->version));
		json_object_set_new(cmd, "command", json_string(what));
		json_object_set_new(cmd, "items", items);
		int src = ctl_send(cli->cfg, a.target, cmd, a.wait_s, &answer, &err);
		json_decref(cmd);
		if (src != 0) {
			rc = cli_fail(what, &err);
			goto out;
		}
		if (answer == NULL) {
			answered = false;
			continue;
		}
		done += approve
		            ? count_of(answer, "applied") + count_of(answer, "unchanged")
		            : count_of(answer, "rejected");
		failed += count_of(answer, "failed");
		gone += count_of(answer, "not_held");
		json_decref(answer);
	}
	if (!answered) {
		print_no_answer(a.target, what, a.wait_s);
	} else {
		printf("%s %s: %ld %s, %ld failed, %ld no longer held\n", what, a.target,
		       done, approve ? "applied" : "rejected", failed, gone);
		if (failed > 0) {
			printf("failed applies are parked: `idstream history "
			       "EMPLOYEE_ID` shows "
			       "why, `idstream sink retry %s` re-drives them\n",
			       a.target);
			rc = CLI_EXIT_FAIL;
		}
	}
out:
	held_scan_fini(&hs, rows);
	free(a.ids);
	return rc;
}

int cmd_approve(cli_t *cli, int argc, char **argv)
{
	return decide(cli, "approve", argc, argv);
}

int cmd_reject(cli_t *cli, int argc, char **argv)
{
	return decide(cli, "reject", argc, argv);
}

/* ---------------------------------------------------------------- retry */

int sink_control_retry(cli_t *cli, int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf("usage: idstream sink retry TARGET [EMPLOYEE_ID...] [--wait "
		       "SECONDS]\n"
		       "\n"
		       "Applies again the versions the running sink of TARGET parked "
		       "because\n"
		       "the target refused them (FAILED results, e.g. a uid conflict), "
		       "once the\n"
		       "cause is fixed: all of them, or those of the employees named. "
		       "Waits\n"
		       "for the sink's answer up to --wait seconds (default 60; 0: do "
		       "not wait).\n");
		return CLI_EXIT_OK;
	}
	ctl_args_t a;
	int rc = ctl_parse("sink retry", argc, argv, false, false, 60, &a);
	if (rc != CLI_EXIT_OK) {
		free(a.ids);
		return rc;
	}
	json_t *cmd = json_object(), *emps = json_array(), *answer = NULL;
	for (int i = 0; i < a.nids; i++)
		json_array_append_new(emps, json_string(a.ids[i]));
	json_object_set_new(cmd, "command", json_string("retry"));
	json_object_set_new(cmd, "employees", emps);
	id_err_t err = {0};
	if (ctl_send(cli->cfg, a.target, cmd, a.wait_s, &answer, &err) != 0) {
		rc = cli_fail("sink retry", &err);
	} else if (answer == NULL) {
		print_no_answer(a.target, "sink retry", a.wait_s);
	} else {
		long ok = count_of(answer, "applied") + count_of(answer, "unchanged");
		long failed = count_of(answer, "failed");
		printf(
		    "sink retry %s: %ld applied, %ld failed again, %ld superseded; %lld "
		    "still parked\n",
		    a.target, ok, failed, count_of(answer, "superseded"),
		    (long long)json_integer_value(json_object_get(answer, "parked")));
		if (failed > 0)
			rc = CLI_EXIT_FAIL;
	}
	json_decref(answer);
	json_decref(cmd);
	free(a.ids);
	return rc;
}

/* ---------------------------------------------------------------- reconcile */

int cmd_reconcile(cli_t *cli, int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf(
		    "usage: idstream reconcile TARGET [--repair] [EMPLOYEE_ID...] "
		    "[--wait "
		    "SECONDS] [--json]\n"
		    "\n"
		    "Has the running sink of TARGET compare every account it manages "
		    "(or\n"
		    "those of the employees named) with the last desired identity it\n"
		    "applied, and report the drift made by hand; with --repair it "
		    "writes\n"
		    "the differences back (published as APPLIED results). Exit status 1\n"
		    "when drift remains.\n"
		    "\n"
		    "Without EMPLOYEE_IDs it also lists the accounts of the target's\n"
		    "managed subtree (people OU, SCIM Users) that no employee of the "
		    "sink\n"
		    "owns: a hand-made account, or one whose employee id idstream never\n"
		    "applied. They are left alone, unless the sink runs with\n"
		    "reconcile.delete_unmanaged = true: then --repair deletes them, as\n"
		    "long as their number stays within the mass-change guard's limit\n"
		    "(sink.guard.*; over it, none is deleted). Waits up to --wait\n"
		    "seconds (default 600) for the answer.\n");
		return CLI_EXIT_OK;
	}
	ctl_args_t a;
	int rc = ctl_parse("reconcile", argc, argv, true, true, 600, &a);
	if (rc != CLI_EXIT_OK) {
		free(a.ids);
		return rc;
	}
	json_t *cmd = json_object(), *emps = json_array(), *answer = NULL;
	for (int i = 0; i < a.nids; i++)
		json_array_append_new(emps, json_string(a.ids[i]));
	json_object_set_new(cmd, "command", json_string("reconcile"));
	json_object_set_new(cmd, "employees", emps);
	json_object_set_new(cmd, "repair", json_boolean(a.repair));
	id_err_t err = {0};
	if (ctl_send(cli->cfg, a.target, cmd, a.wait_s, &answer, &err) != 0) {
		rc = cli_fail("reconcile", &err);
		goto out;
	}
	if (answer == NULL) {
		print_no_answer(a.target, "reconcile", a.wait_s);
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	if (a.json) {
		json_dumpf(answer, stdout, JSON_INDENT(2));
		putchar('\n');
	}
	if (count_of(answer, "unsupported") > 0) {
		fprintf(
		    stderr,
		    "idstream reconcile: the %s sink cannot plan without writing; use "
		    "--repair\n",
		    json_string_value(json_object_get(answer, "kind")));
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	long drifted = count_of(answer, "drifted"), failed = count_of(answer, "failed");
	if (!a.json) {
		size_t i;
		const json_t *d;
		json_array_foreach(json_object_get(answer, "drift"), i, d)
		{
			printf(
			    "%s v%lld:",
			    json_string_value(json_object_get(d, "employee_id")),
			    (long long)json_integer_value(json_object_get(d, "version")));
			size_t j;
			const json_t *o;
			json_array_foreach(json_object_get(d, "ops"), j, o)
			{
				const char *old =
				    json_string_value(json_object_get(o, "old"));
				const char *nw =
				    json_string_value(json_object_get(o, "new"));
				printf("%s %s %s %s -> %s", j ? ";" : "",
				       json_string_value(json_object_get(o, "op")),
				       json_string_value(json_object_get(o, "attribute")),
				       old ? old : "(none)", nw ? nw : "(none)");
			}
			putchar('\n');
		}
		json_array_foreach(json_object_get(answer, "unmanaged"), i, d)
		{
			const char *emp =
			    json_string_value(json_object_get(d, "employee_id"));
			const char *name = json_string_value(json_object_get(d, "name"));
			printf("unmanaged %s: %s (%s%s)\n", name ? name : "-",
			       json_string_value(json_object_get(d, "ref")),
			       emp ? "employee id " : "no employee id", emp ? emp : "");
		}
		long unmanaged = count_of(answer, "unmanaged");
		long deleted = count_of(answer, "unmanaged_deleted");
		if (count_of(answer, "unmanaged_not_ready") > 0)
			printf("reconcile %s: unmanaged accounts not listed: the sink is "
			       "still catching up\n",
			       a.target);
		else if (count_of(answer, "unmanaged_list_failed") > 0)
			printf("reconcile %s: unmanaged accounts not listed: listing the "
			       "target failed (see the sink's log)\n",
			       a.target);
		else if (count_of(answer, "unmanaged_held") > 0)
			printf("reconcile %s: %ld unmanaged accounts, none deleted: more "
			       "than the mass-change limit of %ld allows\n",
			       a.target, unmanaged, count_of(answer, "unmanaged_limit"));
		else if (a.repair && deleted > 0)
			printf("reconcile %s: %ld unmanaged accounts, %ld deleted, %ld "
			       "failed\n",
			       a.target, unmanaged, deleted,
			       count_of(answer, "unmanaged_failed"));
		else if (unmanaged > 0)
			printf("reconcile %s: %ld unmanaged accounts, left alone%s\n",
			       a.target, unmanaged,
			       json_is_true(json_object_get(answer, "delete_unmanaged"))
			           ? " (`--repair` deletes them)"
			           : " (reconcile.delete_unmanaged is off)");
		if (a.repair)
			printf("reconcile %s: %ld accounts checked, %ld repaired, %ld "
			       "failed\n",
			       a.target, count_of(answer, "checked"),
			       count_of(answer, "repaired"), failed);
		else
			printf("reconcile %s: %ld accounts checked, %ld drifted, %ld "
			       "failed%s\n",
			       a.target, count_of(answer, "checked"), drifted, failed,
			       drifted > 0 ? "; `--repair` writes the desired values back"
			                   : "");
	}
	if (failed > 0 || (!a.repair && drifted > 0) ||
	    count_of(answer, "unmanaged_failed") > 0)
		rc = CLI_EXIT_FAIL;
out:
	json_decref(answer);
	json_decref(cmd);
	free(a.ids);
	return rc;
}
