/*
 * test_ingest_csv.c — the CSV ingest stage end to end against librdkafka's
 * built-in mock cluster: the events a run leaves in <prefix>.hr.events (read
 * back read_committed and decoded), and what the snapshot it stores does to
 * the next run.  Broker failures are injected with the mock's request-error
 * stacks.  Each test has its own mock cluster and temporary state directory.
 *
 * The mock cluster of librdkafka 2.0.2 accepts transactions but writes no
 * commit/abort markers and reports the log end as the last stable offset, so
 * a read_committed consumer also sees records of an aborted transaction.
 * "Nothing visible" is therefore only asserted for failures that stop the
 * records before they are appended (Produce, AddPartitionsToTxn); the EndTxn
 * failure test checks the stage's own promises (error, snapshot untouched)
 * and documents what the mock shows.
 */
#define _XOPEN_SOURCE 700 /* nftw() */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ingest/ingest_csv.h"
#include "schemas/codec.h"

#define PREFIX     "test"
#define TOPIC      PREFIX ".hr.events"
#define NPART      3
#define FILE_MTIME 1764097200 /* s; every event's occurred_at/effective_at */
#define MAX_EVENTS 64

/* Kafka protocol request types (not exported by rdkafka_mock.h). */
#define API_PRODUCE               0
#define API_ADD_PARTITIONS_TO_TXN 24
#define API_END_TXN               26

static const char HEADER[] = "employee_id,first_name,last_name,preferred_name,title,"
                             "department,location,manager_id,employment_type,start_date";

/* ROWS[i] is employee E(i+1), formatted E001 … E021. */
static const char *const ROWS[] = {
    "E001,Zoë,Çelik,,Chief Executive Officer,Operations,São Paulo,,Full-Time,2012-01-02",
    "E002,Kofi,Carter,,VP Engineering,Engineering,Madrid,E001,Full-Time,2012-09-19",
    "E003,Mei,Tanaka,,VP Sales,Sales,Tokyo,E001,Full-Time,2013-02-11",
    "E004,Lars,Østergaard,,Engineer,Engineering,Oslo,E002,Full-Time,2014-05-05",
    "E005,Amara,Okafor,,Engineer,Engineering,Lagos,E002,Full-Time,2015-06-01",
    "E006,Diego,Ramírez,,Account Executive,Sales,Bogotá,E003,Full-Time,2016-03-14",
    "E007,Grace,O'Neil,Gracie,\"Engineer, \"\"Platform\"\"\",Engineering,\"Dublin, "
    "Ireland\",E002,Contractor,2019-03-04",
    "E008,Hannah,Schmidt,,Recruiter,People,Berlin,E001,Full-Time,2017-08-21",
    "E009,Ivan,Petrov,,Engineer,Engineering,Sofia,E002,Part-Time,2018-01-15",
    "E010,Julia,Rossi,,Controller,Finance,Milan,E001,Full-Time,2018-04-30",
    "E011,Kwame,Mensah,,Engineer,Engineering,Accra,E002,Full-Time,2019-07-01",
    "E012,Laila,Haddad,,Account Executive,Sales,Beirut,E003,Full-Time,2019-09-09",
    "E013,Mateo,Silva,,Support Engineer,Support,Lisbon,E002,Full-Time,2020-02-03",
    "E014,Nora,Lindqvist,,Designer,Design,Stockholm,E002,Full-Time,2020-05-18",
    "E015,Omar,Farouk,,Engineer,Engineering,Cairo,E002,Full-Time,2020-11-02",
    "E016,Priya,Nair,,Data Analyst,Finance,Bengaluru,E010,Full-Time,2021-01-11",
    "E017,Quentin,Dubois,,Engineer,Engineering,Lyon,E002,Full-Time,2021-06-07",
    "E018,Rosa,Jiménez,,Recruiter,People,Seville,E008,Part-Time,2022-03-21",
    "E019,Sven,Berg,,Engineer,Engineering,Bergen,E002,Full-Time,2022-10-10",
    "E020,Tamar,Cohen,,Account Executive,Sales,Haifa,E003,Full-Time,2023-01-16",
    "E021,Uma,Desai,,Engineer,Engineering,Pune,E002,Full-Time,2024-02-05",
};
/* E005 after a promotion: only the title differs. */
static const char ROW_E005_PROMOTED[] =
    "E005,Amara,Okafor,,Senior Engineer,Engineering,Lagos,E002,Full-Time,2015-06-01";

typedef struct fixture {
	char dir[64];
	rd_kafka_t *host; /* owns the mock cluster */
	rd_kafka_mock_cluster_t *mc;
	id_config_t *cfg;
	int64_t next[NPART]; /* where the next consume_new() starts */
} fixture_t;

typedef struct events {
	employee_event_t ev[MAX_EVENTS]; /* sorted by employee id */
	size_t n;
} events_t;

/* ---- fixture ---------------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	char errstr[256], path[128];
	id_err_t err = {0};
	fixture_t *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	strcpy(fx->dir, "/tmp/idstream-ingest-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));

	/* The host handle only carries the cluster; quiet its "no bootstrap
	 * servers" notice. */
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	assert_int_equal(
	    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)),
	    RD_KAFKA_CONF_OK);
	fx->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(fx->host);
	fx->mc = rd_kafka_mock_cluster_new(fx->host, 1);
	assert_non_null(fx->mc);
	assert_int_equal(rd_kafka_mock_topic_create(fx->mc, TOPIC, NPART, 1),
	                 RD_KAFKA_RESP_ERR_NO_ERROR);

	fx->cfg = id_config_create();
	assert_non_null(fx->cfg);
	snprintf(path, sizeof(path), "%s/state", fx->dir);
	if (id_config_set(fx->cfg, "kafka.bootstrap.servers",
	                  rd_kafka_mock_cluster_bootstraps(fx->mc), &err) != 0 ||
	    id_config_set(fx->cfg, "topic.prefix", PREFIX, &err) != 0 ||
	    id_config_set(fx->cfg, "state.dir", path, &err) != 0)
		fail_msg("config: %s", err.msg);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture_t *fx = *state;
	id_config_destroy(fx->cfg);
	rd_kafka_mock_cluster_destroy(fx->mc);
	rd_kafka_destroy(fx->host);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

/* Writes the header and rows to <dir>/name with a fixed mtime; path receives
 * the file's path. */
static void write_export(fixture_t *fx, const char *name, const char *const *rows,
                         size_t n, char path[256])
{
	snprintf(path, 256, "%s/%s", fx->dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%s\n", HEADER);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\n", rows[i]);
	assert_int_equal(fclose(f), 0);
	struct timespec t[2] = {{FILE_MTIME, 0}, {FILE_MTIME, 0}};
	assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

/* Rows E(first) … E(last), 1-based. */
static size_t rows_range(const char **out, int first, int last)
{
	size_t n = 0;
	for (int i = first; i <= last; i++)
		out[n++] = ROWS[i - 1];
	return n;
}

static int run(fixture_t *fx, const char *path, bool force, bool dry_run,
               ingest_csv_report_t *rep, id_err_t *err)
{
	ingest_csv_opts_t o = {.file = path, .force = force, .dry_run = dry_run};
	id_err_clear(err);
	return ingest_csv_run(fx->cfg, &o, rep, err);
}

static int by_employee(const void *a, const void *b)
{
	return strcmp(((const employee_event_t *)a)->employee_id,
	              ((const employee_event_t *)b)->employee_id);
}

/*
 * Reads, read_committed, every event appended to the topic since the last
 * call, decodes it, and checks that it is keyed by its employee id and sits
 * on the partition Kafka's default partitioner gives that key.
 */
static void consume_new(fixture_t *fx, events_t *out)
{
	id_err_t err = {0};
	codec_t *codec = codec_create(&err);
	if (codec == NULL)
		fail_msg("codec: %s", err.msg);
	rd_kafka_t *c =
	    id_kafka_consumer_create(fx->cfg, "test-reader", NULL, NULL, NULL, &err);
	if (c == NULL)
		fail_msg("consumer: %s", err.msg);
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NPART);
	for (int p = 0; p < NPART; p++)
		rd_kafka_topic_partition_list_add(l, TOPIC, p)->offset = fx->next[p];
	assert_int_equal(rd_kafka_assign(c, l), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(l);

	out->n = 0;
	bool eof[NPART] = {false};
	int neof = 0;
	for (int i = 0; i < 200 && neof < NPART; i++) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if (!eof[m->partition]) {
				eof[m->partition] = true;
				neof++;
			}
			fx->next[m->partition] = m->offset;
			rd_kafka_message_destroy(m);
			continue;
		}
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			fail_msg("consume: %s", rd_kafka_message_errstr(m));
		assert_true(out->n < MAX_EVENTS);
		employee_event_t *ev = &out->ev[out->n++];
		employee_event_init(ev);
		if (codec_decode_event(codec, m->payload, m->len, ev, &err) != 0)
			fail_msg("offset %lld: %s", (long long)m->offset, err.msg);
		assert_non_null(m->key);
		assert_int_equal(m->key_len, strlen(ev->employee_id));
		assert_memory_equal(m->key, ev->employee_id, m->key_len);
		assert_int_equal(m->partition,
		                 id_kafka_partition_for_key(m->key, m->key_len, NPART));
		fx->next[m->partition] = m->offset + 1;
		rd_kafka_message_destroy(m);
	}
	if (neof < NPART)
		fail_msg("only %d of %d partitions reached their end", neof, NPART);
	id_kafka_destroy(c);
	codec_destroy(codec);
	qsort(out->ev, out->n, sizeof(out->ev[0]), by_employee);
}

static void events_fini(events_t *e)
{
	for (size_t i = 0; i < e->n; i++)
		employee_event_fini(&e->ev[i]);
	e->n = 0;
}

static size_t consume_count(fixture_t *fx)
{
	events_t e;
	consume_new(fx, &e);
	size_t n = e.n;
	events_fini(&e);
	return n;
}

static void assert_attr(const id_attrs_t *a, const char *k, const char *v)
{
	assert_true(id_attrs_has(a, k));
	assert_string_equal(id_attrs_get(a, k), v);
}

static void sha256_file(const char *path, char out[65])
{
	unsigned char buf[8192], h[32];
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		EVP_DigestUpdate(md, buf, n);
	EVP_DigestFinal_ex(md, h, NULL);
	EVP_MD_CTX_free(md);
	fclose(f);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* The first export: E001 … E020 hired, all committed. */
static void ingest_first_export(fixture_t *fx, char path[256])
{
	const char *rows[20];
	ingest_csv_report_t r;
	id_err_t err;
	write_export(fx, "hr-1.csv", rows, rows_range(rows, 1, 20), path);
	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("first export: %s", err.msg);
	assert_int_equal(r.published, 20);
	assert_int_equal(consume_count(fx), 20);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_first_export_publishes_hires(void **state)
{
	fixture_t *fx = *state;
	const char *rows[20];
	char path[256], sha[65], want[64];
	ingest_csv_report_t r;
	id_err_t err;
	write_export(fx, "hr-1.csv", rows, rows_range(rows, 1, 20), path);
	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r.rows, 20);
	assert_int_equal(r.hires, 20);
	assert_int_equal(r.updates + r.terminations + r.rehires + r.unchanged, 0);
	assert_int_equal(r.published, 20);
	sha256_file(path, sha);
	assert_string_equal(r.file_sha256, sha);

	events_t e;
	consume_new(fx, &e);
	assert_int_equal(e.n, 20);
	for (size_t i = 0; i < e.n; i++) {
		snprintf(want, sizeof(want), "E%03zu", i + 1);
		assert_string_equal(e.ev[i].employee_id, want);
		assert_int_equal(e.ev[i].type, EV_HIRE);
		assert_int_equal(strlen(e.ev[i].event_id), 32);
		if (i > 0)
			assert_string_not_equal(e.ev[i].event_id, e.ev[i - 1].event_id);
	}

	const employee_event_t *ev = &e.ev[0];
	assert_string_equal(ev->source, "csv");
	snprintf(want, sizeof(want), "%.16s:E001:0", sha);
	assert_string_equal(ev->source_event_id, want);
	assert_string_equal(ev->actor, "csv:hr-1.csv");
	assert_string_equal(ev->reason, "new in the HR export");
	assert_int_equal(ev->occurred_at, FILE_MTIME * 1000LL);
	assert_int_equal(ev->effective_at, FILE_MTIME * 1000LL);
	/* Empty columns are not attributes; employee_id is the key. */
	assert_int_equal(ev->attributes.len, 7);
	assert_attr(&ev->attributes, "first_name", "Zoë");
	assert_attr(&ev->attributes, "last_name", "Çelik");
	assert_attr(&ev->attributes, "title", "Chief Executive Officer");
	assert_attr(&ev->attributes, "department", "Operations");
	assert_attr(&ev->attributes, "location", "São Paulo");
	assert_attr(&ev->attributes, "employment_type", "Full-Time");
	assert_attr(&ev->attributes, "start_date", "2012-01-02");

	/* Quoted fields with commas and doubled quotes arrive unquoted. */
	ev = &e.ev[6];
	assert_string_equal(ev->employee_id, "E007");
	assert_int_equal(ev->attributes.len, 9);
	assert_attr(&ev->attributes, "first_name", "Grace");
	assert_attr(&ev->attributes, "last_name", "O'Neil");
	assert_attr(&ev->attributes, "preferred_name", "Gracie");
	assert_attr(&ev->attributes, "title", "Engineer, \"Platform\"");
	assert_attr(&ev->attributes, "department", "Engineering");
	assert_attr(&ev->attributes, "location", "Dublin, Ireland");
	assert_attr(&ev->attributes, "manager_id", "E002");
	assert_attr(&ev->attributes, "employment_type", "Contractor");
	assert_attr(&ev->attributes, "start_date", "2019-03-04");
	events_fini(&e);
}

static void test_same_file_again_publishes_nothing(void **state)
{
	fixture_t *fx = *state;
	char path[256];
	ingest_csv_report_t r;
	id_err_t err;
	ingest_first_export(fx, path);
	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r.unchanged, 20);
	assert_int_equal(r.hires + r.updates + r.terminations + r.rehires, 0);
	assert_int_equal(r.published, 0);
	assert_int_equal(consume_count(fx), 0);
}

static void test_changed_export_publishes_only_the_changes(void **state)
{
	fixture_t *fx = *state;
	char path[256];
	const char *rows[21];
	ingest_csv_report_t r;
	id_err_t err;
	ingest_first_export(fx, path);

	/* E005 promoted, E012 gone, E021 new. */
	size_t n = 0;
	for (int i = 1; i <= 21; i++)
		if (i != 12)
			rows[n++] = i == 5 ? ROW_E005_PROMOTED : ROWS[i - 1];
	write_export(fx, "hr-2.csv", rows, n, path);
	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r.hires, 1);
	assert_int_equal(r.updates, 1);
	assert_int_equal(r.terminations, 1);
	assert_int_equal(r.unchanged, 18);
	assert_int_equal(r.published, 3);

	events_t e;
	consume_new(fx, &e);
	assert_int_equal(e.n, 3);
	assert_string_equal(e.ev[0].employee_id, "E005");
	assert_int_equal(e.ev[0].type, EV_UPDATE);
	assert_int_equal(e.ev[0].attributes.len, 1);
	assert_attr(&e.ev[0].attributes, "title", "Senior Engineer");
	assert_string_equal(e.ev[0].actor, "csv:hr-2.csv");

	assert_string_equal(e.ev[1].employee_id, "E012");
	assert_int_equal(e.ev[1].type, EV_TERMINATE);
	assert_int_equal(e.ev[1].attributes.len, 0);

	assert_string_equal(e.ev[2].employee_id, "E021");
	assert_int_equal(e.ev[2].type, EV_HIRE);
	assert_int_equal(e.ev[2].attributes.len, 8);
	assert_attr(&e.ev[2].attributes, "first_name", "Uma");
	assert_attr(&e.ev[2].attributes, "manager_id", "E002");
	events_fini(&e);
}

/*
 * Pushes cnt copies of code onto the error stack of request type api, runs
 * the 20-row export (which must fail with ID_EKAFKA and report nothing
 * published), clears the stack, and runs the same file again cleanly: that
 * run must still see all 20 as hires (the snapshot was not touched) and
 * publish them.  Whatever a reader saw after the failed run must come again
 * with the same event ids, so a reader that drops duplicate ids ends up with
 * each hire once.  Returns how many events a read_committed reader saw after
 * the failed run.
 */
static size_t fail_then_recover(fixture_t *fx, int16_t api, rd_kafka_resp_err_t code,
                                size_t cnt)
{
	const char *rows[20];
	rd_kafka_resp_err_t codes[32];
	char path[256];
	ingest_csv_report_t r;
	id_err_t err;
	assert_true(cnt <= 32);
	for (size_t i = 0; i < cnt; i++)
		codes[i] = code;
	write_export(fx, "hr-1.csv", rows, rows_range(rows, 1, 20), path);

	rd_kafka_mock_push_request_errors_array(fx->mc, api, cnt, codes);
	assert_int_equal(run(fx, path, false, false, &r, &err), ID_EKAFKA);
	rd_kafka_mock_clear_request_errors(fx->mc, api);
	assert_int_equal(r.published, 0);
	assert_non_null(strstr(err.msg, path));
	assert_non_null(strstr(err.msg, "nothing was published"));
	assert_non_null(strstr(err.msg, rd_kafka_err2name(code)));
	events_t failed;
	consume_new(fx, &failed);

	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("clean run: %s", err.msg);
	assert_int_equal(r.hires, 20);
	assert_int_equal(r.published, 20);
	events_t e;
	consume_new(fx, &e);
	assert_int_equal(e.n, 20);
	for (size_t i = 0; i < e.n; i++)
		assert_int_equal(e.ev[i].type, EV_HIRE);
	/* Both sorted by employee id, and neither has an employee twice. */
	for (size_t i = 0, j = 0; i < failed.n; i++) {
		while (j < e.n &&
		       strcmp(e.ev[j].employee_id, failed.ev[i].employee_id) != 0)
			j++;
		if (j == e.n)
			fail_msg("%s was seen after the failure but not republished",
			         failed.ev[i].employee_id);
		assert_string_equal(e.ev[j].event_id, failed.ev[i].event_id);
	}
	size_t visible = failed.n;
	events_fini(&failed);
	events_fini(&e);
	return visible;
}

static void test_produce_error_publishes_nothing(void **state)
{
	/* Every Produce request of the run refused (not retriable). */
	assert_int_equal(fail_then_recover(*state, API_PRODUCE,
	                                   RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
	                                   32),
	                 0);
}

static void test_add_partitions_error_publishes_nothing(void **state)
{
	/* The coordinator refuses to add the partitions to the transaction,
	 * so no record is ever sent. */
	assert_int_equal(fail_then_recover(*state, API_ADD_PARTITIONS_TO_TXN,
	                                   RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
	                                   8),
	                 0);
}

/*
 * Everything delivered, then the commit refused.  A real broker hides the
 * aborted records from read_committed readers; the mock has no abort markers
 * and shows all 20 (see the header), so their visibility is not asserted —
 * fail_then_recover() still checks that the stage failed, kept the snapshot,
 * and republished them with the same event ids.
 */
static void test_end_txn_abortable_error_keeps_snapshot(void **state)
{
	/* Abortable: the stage aborts the transaction itself. */
	fail_then_recover(*state, API_END_TXN, RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID, 1);
}

static void test_end_txn_fatal_error_keeps_snapshot(void **state)
{
	/* Fatal: the producer is unusable and cannot even abort. */
	fail_then_recover(*state, API_END_TXN, RD_KAFKA_RESP_ERR_INVALID_TXN_STATE, 1);
}

static void test_mass_termination_guard(void **state)
{
	fixture_t *fx = *state;
	const char *rows[10];
	char path[256];
	ingest_csv_report_t r;
	id_err_t err;
	write_export(fx, "hr-1.csv", rows, rows_range(rows, 1, 10), path);
	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(consume_count(fx), 10);

	/* 3 of 10 leave: above the default 20%. */
	write_export(fx, "hr-2.csv", rows, rows_range(rows, 1, 7), path);
	assert_int_equal(run(fx, path, false, false, &r, &err), ID_ETHRESHOLD);
	assert_true(r.threshold_exceeded);
	assert_int_equal(r.terminations, 3);
	assert_int_equal(r.known_active, 10);
	assert_int_equal(r.published, 0);
	assert_non_null(strstr(err.msg, path));
	assert_non_null(strstr(err.msg, "--force"));
	assert_int_equal(consume_count(fx), 0);

	if (run(fx, path, true, false, &r, &err) != 0)
		fail_msg("forced: %s", err.msg);
	assert_int_equal(r.published, 3);
	events_t e;
	consume_new(fx, &e);
	assert_int_equal(e.n, 3);
	const char *gone[3] = {"E008", "E009", "E010"};
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(e.ev[i].employee_id, gone[i]);
		assert_int_equal(e.ev[i].type, EV_TERMINATE);
	}
	events_fini(&e);
}

static void test_malformed_file_publishes_nothing(void **state)
{
	fixture_t *fx = *state;
	const char *rows[3] = {ROWS[0], "E002,Kofi,Carter,,\"VP Engineering,Engineering",
	                       ROWS[2]};
	char path[256], want[300];
	ingest_csv_report_t r;
	id_err_t err;
	write_export(fx, "broken.csv", rows, 3, path);
	assert_int_equal(run(fx, path, false, false, &r, &err), ID_EPARSE);
	snprintf(want, sizeof(want), "%s line 3 column 5 (title): unterminated quote",
	         path);
	assert_non_null(strstr(err.msg, want));
	assert_int_equal(r.published, 0);
	assert_int_equal(consume_count(fx), 0);
}

static void test_dry_run_reports_and_leaves_no_trace(void **state)
{
	fixture_t *fx = *state;
	const char *rows[21];
	char path[256], store[128];
	ingest_csv_report_t r;
	id_err_t err;
	struct stat st;
	write_export(fx, "hr-1.csv", rows, rows_range(rows, 1, 20), path);
	if (run(fx, path, false, true, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r.hires, 20);
	assert_int_equal(r.published, 0);
	assert_int_equal(consume_count(fx), 0);
	snprintf(store, sizeof(store), "%s/state/ingest-csv", fx->dir);
	assert_int_not_equal(stat(store, &st), 0);

	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r.published, 20);
	assert_int_equal(consume_count(fx), 20);

	/* On top of an existing snapshot: counted, not published, not stored. */
	write_export(fx, "hr-2.csv", rows, rows_range(rows, 2, 21), path);
	if (run(fx, path, false, true, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r.hires, 1);
	assert_int_equal(r.terminations, 1);
	assert_int_equal(r.unchanged, 19);
	assert_int_equal(r.published, 0);
	assert_int_equal(consume_count(fx), 0);

	if (run(fx, path, false, false, &r, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(r.published, 2);
	events_t e;
	consume_new(fx, &e);
	assert_int_equal(e.n, 2);
	assert_string_equal(e.ev[0].employee_id, "E001");
	assert_int_equal(e.ev[0].type, EV_TERMINATE);
	assert_string_equal(e.ev[1].employee_id, "E021");
	assert_int_equal(e.ev[1].type, EV_HIRE);
	events_fini(&e);
}

int main(void)
{
	/* The failure tests make librdkafka log errors; keep the rest quiet. */
	id_log_set_level(ID_LOG_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_first_export_publishes_hires, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_same_file_again_publishes_nothing, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        test_changed_export_publishes_only_the_changes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_produce_error_publishes_nothing, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_add_partitions_error_publishes_nothing,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_end_txn_abortable_error_keeps_snapshot,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_end_txn_fatal_error_keeps_snapshot,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mass_termination_guard, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_file_publishes_nothing, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_dry_run_reports_and_leaves_no_trace,
	                                    setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
