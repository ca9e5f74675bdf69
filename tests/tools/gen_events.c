/*
 * gen_events.c — deterministic load generator for the processor benchmark:
 * writes encoded EmployeeEvents straight into <topic> (hr.events), without
 * the CSV and diff work of `ingest`, so a million events take seconds.
 *
 *   gen_events --brokers HOST:PORT --topic TOPIC --events N --employees E
 *              [--seed S]
 *
 * The first E events are HIREs of employees E100001… (first_name,
 * last_name, title, department, location, employment_type, start_date), the
 * remaining N - E are UPDATEs of a random employee changing one to three of
 * title, department and location, always to a value different from the
 * current one, so every event changes the employee's desired identity.
 * Same arguments, same events (ids, times and attributes come from the
 * seed); the partition of each event is the one ingest would pick (key =
 * employee id, murmur2).
 *
 * It produces through id_kafka_producer_create() (idempotent, acks=all, not
 * transactional), with large batches, and prints one line:
 *
 *   events=N hires=E updates=U bytes=B wall_ms=W
 *
 * Threading: one thread.  Exit status 0, or 1 with a message on stderr.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/err.h"
#include "common/kafka.h"
#include "schemas/codec.h"
#include "schemas/model.h"

/* 2024-01-01T00:00:00Z: the first event's time; each next one is 1 s later. */
#define GEN_T0_MS 1704067200000LL

static uint64_t rng_state;

/* splitmix64: small, fast and the same on every platform. */
static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rng_below(unsigned n)
{
	return (unsigned)(rng_next() % n);
}

static const char *const first_names[] = {
    "Ada",   "Alan",  "Grace", "José",   "Åsa",    "Björn", "Øyvind", "Zoë",
    "Chloé", "Renée", "Søren", "Łukasz", "Mónica", "Ngozi", "Aarav",  "Mei",
    "Kwame", "Sofia", "Lars",  "Ingrid", "Mateo",  "Lucía", "Noah",   "Emma",
    "Wei",   "Aiko",  "Kenji", "Rahul",  "Anika",  "Tomás", "Hélène", "Siobhán",
};
static const char *const last_names[] = {
    "Lovelace", "Hopper",   "García", "Müller",  "Strauß",  "Øvergaard", "Åkesson",
    "Nyström",  "Martínez", "Çelik",  "Nowak",   "Dvořák",  "Horváth",   "O'Brien",
    "Smith",    "Johnson",  "Brown",  "Nguyen",  "Singh",   "Okafor",    "Rossi",
    "Dubois",   "Schröder", "Jensen", "Larsson", "Mäkinen", "Tanaka",    "Kim",
};
#define NDEPTS 8
static const char *const departments[NDEPTS] = {
    "Engineering", "Sales",   "Marketing", "Finance",
    "People",      "Support", "Legal",     "Operations",
};
static const char *const titles[] = {
    "Software Engineer",   "Account Executive", "Designer",       "Accountant",
    "Recruiter",           "Support Engineer",  "Counsel",        "IT Administrator",
    "Engineering Manager", "Sales Manager",     "Data Engineer",  "Controller",
    "Technical Writer",    "Paralegal",         "Office Manager", "Financial Analyst",
};
static const char *const locations[] = {
    "Oslo",   "Stockholm", "Berlin",   "München",   "Zürich",
    "Madrid", "London",    "New York", "São Paulo", "Remote",
};
#define COUNT(a) ((unsigned)(sizeof(a) / sizeof((a)[0])))

/* What the generator remembers of each employee: indexes into the tables. */
typedef struct gen_emp {
	unsigned char title, dept, loc;
} gen_emp_t;

static void gen_usage(void)
{
	fprintf(stderr, "usage: gen_events --brokers HOST:PORT --topic TOPIC --events N "
	                "--employees E [--seed S] [--hold-until FILE]\n"
	                "  --hold-until FILE  produce in one transaction, print "
	                "\"held\" once all is\n"
	                "                     written, and commit it once FILE exists "
	                "(at most 120 s)\n");
	exit(2);
}

static double gen_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A different index than cur, below n. */
static unsigned char gen_other(unsigned char cur, unsigned n)
{
	return (unsigned char)((cur + 1 + rng_below(n - 1)) % n);
}

/* Fills ev (initialised, empty) with event number i. */
static int gen_event(uint64_t seed, long i, long employees, gen_emp_t *emp,
                     employee_event_t *ev)
{
	char id[32], eid[40], sid[64];
	long who;
	bool hire = i < employees;
	if (hire)
		who = i;
	else
		who = (long)(rng_next() % (uint64_t)employees);
	snprintf(id, sizeof(id), "E%ld", 100001 + who);
	snprintf(eid, sizeof(eid), "%016llx%016llx", (unsigned long long)seed,
	         (unsigned long long)i);
	snprintf(sid, sizeof(sid), "gen:%llu:%ld", (unsigned long long)seed, i);
	ev->type = hire ? EV_HIRE : EV_UPDATE;
	ev->occurred_at = ev->effective_at = GEN_T0_MS + (int64_t)i * 1000;
	if ((ev->event_id = strdup(eid)) == NULL ||
	    (ev->source = strdup("gen")) == NULL ||
	    (ev->source_event_id = strdup(sid)) == NULL ||
	    (ev->employee_id = strdup(id)) == NULL ||
	    (ev->actor = strdup("gen_events")) == NULL)
		return ID_ENOMEM;
	gen_emp_t *e = &emp[who];
	id_attrs_t *a = &ev->attributes;
	int rc = 0;
	if (hire) {
		char start[16];
		e->title = (unsigned char)rng_below(COUNT(titles));
		e->dept = (unsigned char)rng_below(NDEPTS);
		e->loc = (unsigned char)rng_below(COUNT(locations));
		snprintf(start, sizeof(start), "20%02u-%02u-%02u", 10 + rng_below(14),
		         1 + rng_below(12), 1 + rng_below(28));
		rc = id_attrs_set(a, "first_name",
		                  first_names[rng_below(COUNT(first_names))]) ||
		     id_attrs_set(a, "last_name",
		                  last_names[rng_below(COUNT(last_names))]) ||
		     id_attrs_set(a, "title", titles[e->title]) ||
		     id_attrs_set(a, "department", departments[e->dept]) ||
		     id_attrs_set(a, "location", locations[e->loc]) ||
		     id_attrs_set(a, "employment_type", "employee") ||
		     id_attrs_set(a, "start_date", start);
		return rc ? ID_ENOMEM : 0;
	}
	/* One to three of title, department, location: bit k of what. */
	unsigned what = 1 + rng_below(7);
	if (what & 1) {
		e->title = gen_other(e->title, COUNT(titles));
		rc |= id_attrs_set(a, "title", titles[e->title]);
	}
	if (what & 2) {
		e->dept = gen_other(e->dept, NDEPTS);
		rc |= id_attrs_set(a, "department", departments[e->dept]);
	}
	if (what & 4) {
		e->loc = gen_other(e->loc, COUNT(locations));
		rc |= id_attrs_set(a, "location", locations[e->loc]);
	}
	return rc ? ID_ENOMEM : 0;
}

int main(int argc, char **argv)
{
	const char *brokers = NULL, *topic = NULL;
	long events = -1, employees = -1;
	const char *hold = NULL;
	uint64_t seed = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc)
			brokers = argv[++i];
		else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc)
			topic = argv[++i];
		else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
			events = atol(argv[++i]);
		else if (strcmp(argv[i], "--employees") == 0 && i + 1 < argc)
			employees = atol(argv[++i]);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--hold-until") == 0 && i + 1 < argc)
			hold = argv[++i];
		else
			gen_usage();
	}
	if (brokers == NULL || topic == NULL || employees <= 0 || events < employees)
		gen_usage();
	rng_state = seed;

	int rc = 1;
	id_err_t err = {0};
	id_buf_t val = ID_BUF_INIT;
	employee_event_t ev;
	id_kafka_delivery_t dr = {0, RD_KAFKA_RESP_ERR_NO_ERROR, NULL, 0};
	rd_kafka_t *rk = NULL;
	codec_t *codec = NULL;
	gen_emp_t *emp = calloc((size_t)employees, sizeof(*emp));
	id_config_t *cfg = id_config_create();
	long long bytes = 0;
	double t0 = gen_now_ms();
	char txid[64];
	rd_kafka_error_t *txe = NULL;
	snprintf(txid, sizeof(txid), "idstream-gen-events.%ld", (long)getpid());
	employee_event_init(&ev);
	if (emp == NULL || cfg == NULL) {
		fprintf(stderr, "gen_events: out of memory\n");
		goto out;
	}
	/* Big batches: the generator should not be what the bench waits for. */
	if (id_config_set(cfg, "kafka.bootstrap.servers", brokers, &err) ||
	    id_config_set(cfg, "kafka.linger.ms", "20", &err) ||
	    id_config_set(cfg, "kafka.batch.size", "1000000", &err) ||
	    id_config_set(cfg, "kafka.batch.num.messages", "10000", &err) ||
	    id_config_set(cfg, "kafka.queue.buffering.max.kbytes", "262144", &err) ||
	    (codec = codec_create(&err)) == NULL ||
	    (rk = id_kafka_producer_create(cfg, "idstream-gen-events",
	                                   hold != NULL ? txid : NULL, &err)) == NULL) {
		fprintf(stderr, "gen_events: %s\n", err.msg);
		goto out;
	}
	if (hold != NULL && (txe = rd_kafka_begin_transaction(rk)) != NULL) {
		fprintf(stderr, "gen_events: %s\n", rd_kafka_error_string(txe));
		goto out;
	}
	for (long i = 0; i < events; i++) {
		employee_event_fini(&ev);
		if (gen_event(seed, i, employees, emp, &ev) != 0) {
			fprintf(stderr, "gen_events: out of memory\n");
			goto out;
		}
		if (codec_encode_event(codec, &ev, &val, &err) != 0) {
			fprintf(stderr, "gen_events: event %ld: %s\n", i, err.msg);
			goto out;
		}
		rd_kafka_resp_err_t e;
		for (;;) {
			dr.pending++;
			e = rd_kafka_producev(
			    rk, RD_KAFKA_V_TOPIC(topic),
			    RD_KAFKA_V_KEY(ev.employee_id, strlen(ev.employee_id)),
			    RD_KAFKA_V_VALUE(val.data, val.len),
			    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			    RD_KAFKA_V_OPAQUE(&dr), RD_KAFKA_V_END);
			if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
				break;
			dr.pending--;
			if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			rd_kafka_poll(rk, 50);
		}
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			fprintf(stderr, "gen_events: producing event %ld: %s\n", i,
			        rd_kafka_err2str(e));
			goto out;
		}
		bytes += (long long)val.len;
		if ((i & 1023) == 0)
			rd_kafka_poll(rk, 0);
	}
	for (int i = 0; i < 120 && dr.pending > 0; i++)
		rd_kafka_flush(rk, 1000);
	if (dr.pending > 0 || dr.first_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "gen_events: %ld events not acknowledged: %s\n",
		        dr.pending, rd_kafka_err2str(dr.first_err));
		goto out;
	}
	if (hold != NULL) {
		/* Written, not committed: readers see the end of what is stable
		 * below the high watermark until the commit. */
		printf("held\n");
		fflush(stdout);
		struct timespec ts = {0, 10 * 1000000L};
		for (int i = 0; i < 12000 && access(hold, F_OK) != 0; i++)
			nanosleep(&ts, NULL);
		if ((txe = rd_kafka_commit_transaction(rk, 60000)) != NULL) {
			fprintf(stderr, "gen_events: committing: %s\n",
			        rd_kafka_error_string(txe));
			goto out;
		}
	}
	printf("events=%ld hires=%ld updates=%ld bytes=%lld wall_ms=%.0f\n", events,
	       employees, events - employees, bytes, gen_now_ms() - t0);
	rc = 0;
out:
	if (txe != NULL)
		rd_kafka_error_destroy(txe);
	employee_event_fini(&ev);
	id_kafka_destroy(rk);
	codec_destroy(codec);
	id_config_destroy(cfg);
	id_buf_fini(&val);
	free(emp);
	return rc;
}
