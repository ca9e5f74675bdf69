/*
 * asof.c — `idstream as-of TIME [EMPLOYEE_ID] [--json]`: the desired
 * identity of one employee, or of everyone, as it was at TIME: for each
 * employee the newest version whose effective time (the fold's `now`) is
 * not after TIME.  An employee without such a version (hired later) is
 * absent.
 *
 * One employee: its desired versions (cmd/timeline.h: only those, not its
 * events and results), read through the index.
 *
 * Everyone: the index (cmd/index.c) has each desired version under its
 * employee ordered by effective time ('v' entries), so one walk over them
 * picks every employee's version at TIME with its position, and only those
 * records are read from identity.desired: per partition in offset order,
 * reading on through near ones and seeking over long gaps, then whatever
 * the partition holds past the indexed position (decoded, and kept when it
 * is newer and effective by TIME).  At 50,000 employees / 1,000,000
 * versions that decodes ~50,000 records instead of 1,000,000.  Without an
 * index that has the 'v' entries (none yet, or one written by an older
 * idstream before `idstream index` has upgraded it) the topic is scanned
 * and every version decoded, with the same answer.
 *
 * Nothing is written; no consumer group is joined.  Threading: one thread.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/asof.h"
#include "cmd/cli.h"
#include "cmd/index.h"
#include "cmd/scan.h"
#include "cmd/timeline.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "schemas/codec.h"

/* Wanted offsets at most this far apart are read on rather than sought
 * to: a fetch brings about a megabyte (a thousand versions) anyway. */
#define ASOF_GAP_MAX 2000
/* Polls of 100 ms without a message before the read gives up. */
#define ASOF_IDLE_POLLS 100
/* How long the broker may hold a fetch that finds nothing new. */
#define ASOF_FETCH_WAIT_MS "10"

typedef struct asof {
	codec_t *codec;
	int64_t at;
	id_hmap_t *latest; /* employee id → desired_identity_t* (owned) */
	id_hmap_t raw;     /* ASOF_NEWEST scans: employee id → id_buf_t* */
	long unreadable;
	long decoded;
} asof_t;

/* Keeps d (moved from, left empty) as employee's identity at `at` when it
 * is effective by then and newer than the one kept.  0 or ID_ENOMEM. */
static int asof_offer(asof_t *a, desired_identity_t *d, id_err_t *err)
{
	if (d->effective_at > a->at || d->employee_id == NULL)
		return 0;
	desired_identity_t *cur = id_hmap_get(a->latest, d->employee_id);
	if (cur != NULL && cur->version >= d->version)
		return 0;
	if (cur == NULL) {
		if ((cur = malloc(sizeof(*cur))) == NULL ||
		    id_hmap_put(a->latest, d->employee_id, cur) != 0) {
			free(cur);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
		desired_identity_init(cur);
	}
	desired_identity_fini(cur);
	*cur = *d; /* moves d's memory into the map */
	desired_identity_init(d);
	return 0;
}

static int asof_decode_offer(asof_t *a, const rd_kafka_message_t *m, id_err_t *err)
{
	desired_identity_t d;
	desired_identity_init(&d);
	a->decoded++;
	if (codec_decode_desired(a->codec, m->payload, m->len, &d, NULL) != 0) {
		a->unreadable++;
		return 0;
	}
	int rc = asof_offer(a, &d, err);
	desired_identity_fini(&d);
	return rc;
}

static int asof_keep(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	return asof_decode_offer(opaque, m, err);
}

/*
 * The newest version of everyone without the index: a partition holds an
 * employee's versions in order, so the last record of each key is its
 * newest.  Only its bytes are kept while scanning; only those are decoded.
 */
static int asof_keep_raw(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	asof_t *a = opaque;
	char key[512];
	if (m->key == NULL || m->key_len == 0 || m->key_len >= sizeof(key))
		return asof_decode_offer(a, m, err); /* decoded: its id decides */
	memcpy(key, m->key, m->key_len);
	key[m->key_len] = 0;
	id_buf_t *b = id_hmap_get(&a->raw, key);
	if (b == NULL) {
		if ((b = malloc(sizeof(*b))) == NULL ||
		    id_hmap_put(&a->raw, key, b) != 0) {
			free(b);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
		id_buf_init(b);
	}
	b->len = 0;
	if (id_buf_append(b, m->payload, m->len) != 0)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	return 0;
}

/* Decodes what asof_keep_raw() kept into a->latest and frees it. */
static int asof_decode_raw(asof_t *a, id_err_t *err)
{
	int rc = 0;
	desired_identity_t d;
	desired_identity_init(&d);
	for (size_t i = 0; i < a->raw.cap; i++) {
		id_buf_t *b = a->raw.slots[i].value;
		if (a->raw.slots[i].key == NULL || b == NULL)
			continue;
		if (rc == 0) {
			a->decoded++;
			if (codec_decode_desired(a->codec, b->data, b->len, &d, NULL) !=
			    0)
				a->unreadable++;
			else
				rc = asof_offer(a, &d, err);
			desired_identity_fini(&d);
		}
		id_buf_fini(b);
		free(b);
		a->raw.slots[i].value = NULL;
	}
	return rc;
}

/* What to read from one partition of identity.desired. */
typedef struct asof_part {
	int64_t lo, hi;   /* watermarks when the read started */
	int64_t until;    /* indexed below */
	int64_t *want;    /* the versions at `at` below until, ascending */
	size_t nwant, wi; /* wi: the next one not yet passed */
	int64_t expect;   /* offsets below were handled or sought over */
	bool done;
} asof_part_t;

/* The next offset to read at or after pos, or -1 when p is finished. */
static int64_t asof_next(asof_part_t *p, int64_t pos)
{
	while (p->wi < p->nwant && p->want[p->wi] < pos)
		p->wi++;
	if (p->wi < p->nwant)
		return p->want[p->wi];
	int64_t tail = pos > p->until ? pos : p->until;
	if (tail < p->lo)
		tail = p->lo;
	return tail < p->hi ? tail : -1;
}

static int asof_cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
	return a < b ? -1 : a > b;
}

/* Watermarks of every partition of topic: one ListOffsets request per end. */
static int asof_watermarks(rd_kafka_t *rk, const char *topic, asof_part_t *parts,
                           int32_t n, id_err_t *err)
{
	int rc = 0;
	for (int end = 0; end < 2 && rc == 0; end++) {
		rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
		for (int32_t p = 0; p < n; p++)
			rd_kafka_topic_partition_list_add(l, topic, p)->offset =
			    end ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
		rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, 10000);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			rc = id_kafka_err(err, e, "reading topic offsets");
		for (int i = 0; rc == 0 && i < l->cnt; i++) {
			int32_t p = l->elems[i].partition;
			int64_t o = l->elems[i].offset > 0 ? l->elems[i].offset : 0;
			if (l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
				rc = id_kafka_err(err, l->elems[i].err,
				                  "reading topic offsets");
			} else if (p >= 0 && p < n) {
				if (end)
					parts[p].hi = o;
				else
					parts[p].lo = o;
			}
		}
		rd_kafka_topic_partition_list_destroy(l);
	}
	return rc;
}

/*
 * Reads the indexed versions at `at` (v, n) and every partition's tail past
 * its indexed position into a->latest, with consumer rk.
 */
static int asof_read_indexed(rd_kafka_t *rk, const char *topic, int32_t nparts,
                             state_store_t *idx, const index_version_t *v, size_t n,
                             asof_t *a, long *read, id_err_t *err)
{
	asof_part_t *parts = calloc((size_t)nparts, sizeof(*parts));
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
	int rc = 0, active = 0, idle = 0;
	if (parts == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = asof_watermarks(rk, topic, parts, nparts, err)) != 0)
		goto out;
	for (int32_t p = 0; p < nparts; p++)
		parts[p].until = index_indexed_until(idx, 1, p);
	/* Each partition's wanted offsets, ascending. */
	for (size_t i = 0; i < n; i++) {
		int32_t p = v[i].partition;
		if (p >= 0 && p < nparts)
			parts[p].nwant++;
	}
	for (int32_t p = 0; p < nparts; p++) {
		parts[p].want =
		    malloc((parts[p].nwant ? parts[p].nwant : 1) * sizeof(int64_t));
		if (parts[p].want == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		parts[p].nwant = 0;
	}
	for (size_t i = 0; i < n; i++) {
		asof_part_t *q = v[i].partition >= 0 && v[i].partition < nparts
		                     ? &parts[v[i].partition]
		                     : NULL;
		/* Below lo: deleted by retention since it was indexed. */
		if (q != NULL && v[i].offset >= q->lo && v[i].offset < q->until)
			q->want[q->nwant++] = v[i].offset;
	}
	for (int32_t p = 0; p < nparts; p++) {
		asof_part_t *q = &parts[p];
		if (q->nwant > 1)
			qsort(q->want, q->nwant, sizeof(*q->want), asof_cmp_i64);
		int64_t first = asof_next(q, q->lo);
		if (first < 0) {
			q->done = true;
			continue;
		}
		q->expect = first;
		rd_kafka_topic_partition_list_add(l, topic, p)->offset = first;
		active++;
	}
	if (active == 0)
		goto out;
	rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = id_kafka_err(err, e, "assigning partitions");
		goto out;
	}
	while (active > 0 && rc == 0 && !cli_stop_requested) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (m == NULL) {
			if (++idle >= ASOF_IDLE_POLLS)
				rc = id_err_set(err, ID_ETIMEOUT,
				                "%s: no record from Kafka for %d s",
				                topic, ASOF_IDLE_POLLS / 10);
			continue;
		}
		idle = 0;
		int32_t p = m->partition;
		asof_part_t *q = p >= 0 && p < nparts ? &parts[p] : NULL;
		if (q == NULL || q->done || m->offset < q->expect) {
			rd_kafka_message_destroy(m);
			continue;
		}
		int64_t next = -1;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			/* Nothing more is readable (read_committed stops at the
			 * last stable offset). */
		} else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = id_err_set(err, ID_EKAFKA, "reading %s [%d]: %s", topic,
			                (int)p, rd_kafka_message_errstr(m));
		} else {
			bool wanted = q->wi < q->nwant && q->want[q->wi] == m->offset;
			(*read)++;
			if (wanted || m->offset >= q->until)
				rc = asof_decode_offer(a, m, err);
			next = asof_next(q, m->offset + 1);
			q->expect = m->offset + 1;
			if (next > m->offset + 1 + ASOF_GAP_MAX) {
				e = rd_kafka_seek(m->rkt, p, next, 0);
				if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
					rc = id_kafka_err(err, e, "seeking");
				q->expect = next;
			}
		}
		if (next < 0) {
			q->done = true;
			active--;
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_assign(rk, NULL);
out:
	for (int32_t p = 0; parts != NULL && p < nparts; p++)
		free(parts[p].want);
	free(parts);
	rd_kafka_topic_partition_list_destroy(l);
	return rc;
}

/* Opens the index for reading (a secondary instance: `run` may hold it);
 * NULL when there is none or it lacks the as-of entries. */
static state_store_t *asof_index_open(const id_config_t *cfg)
{
	char path[1024];
	state_store_t *s = NULL;
	id_err_t err = {0};
	state_store_opts_t opts = {.cache_bytes = (size_t)32 << 20};
	index_path(cfg, path, sizeof(path));
	int rc = state_store_open_reader(path, &opts, STATE_STORE_SECONDARY, &s, &err);
	if (rc != 0) {
		if (rc != ID_ENOTFOUND)
			id_log_debug("as-of", "index not usable: %s", err.msg);
		return NULL;
	}
	if (!index_has_versions(s)) {
		id_log_info("as-of",
		            "the index at %s has no as-of entries yet (`idstream "
		            "index` adds them); scanning identity.desired",
		            path);
		state_store_close(s);
		return NULL;
	}
	return s;
}

static int64_t asof_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_t *jstr(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *asof_json(const desired_identity_t *d)
{
	json_t *attrs = json_object(), *groups = json_array();
	for (size_t i = 0; i < d->attributes.len; i++)
		json_object_set_new(attrs, d->attributes.items[i].key,
		                    jstr(d->attributes.items[i].value));
	for (size_t i = 0; i < d->ngroups; i++)
		json_array_append_new(groups, json_string(d->groups[i]));
	return json_pack("{s:s, s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:I}", "employee_id",
	                 d->employee_id, "version", (json_int_t)d->version, "state",
	                 lifecycle_state_name(d->state), "container", jstr(d->container),
	                 "manager_id", jstr(d->manager_id), "policy_version",
	                 jstr(d->policy_version), "attributes", attrs, "groups", groups,
	                 "effective_at", (json_int_t)d->effective_at);
}

static void asof_print(const desired_identity_t *d)
{
	char when[64];
	timeline_fmt_time(d->effective_at, when, sizeof(when));
	printf("%s v%lld %s (effective %s, policy %s)\n", d->employee_id,
	       (long long)d->version, lifecycle_state_name(d->state), when,
	       d->policy_version ? d->policy_version : "-");
	printf("  container   %s\n", d->container ? d->container : "-");
	printf("  groups     ");
	for (size_t i = 0; i < d->ngroups; i++)
		printf(" %s", d->groups[i]);
	printf("\n");
	for (size_t i = 0; i < d->attributes.len; i++)
		printf("  %-11s %s\n", d->attributes.items[i].key,
		       d->attributes.items[i].value ? d->attributes.items[i].value : "");
}

static int cmp_desired_ptr(const void *x, const void *y)
{
	const desired_identity_t *a = *(desired_identity_t *const *)x;
	const desired_identity_t *b = *(desired_identity_t *const *)y;
	return strcmp(a->employee_id, b->employee_id);
}

static void asof_usage(void)
{
	printf(
	    "usage: idstream as-of TIME [EMPLOYEE_ID] [--json]\n"
	    "\n"
	    "The desired identity of one employee, or of everyone, as it was at TIME:\n"
	    "the newest version whose effective time is not after TIME (employees\n"
	    "without one, e.g. hired later, are left out). TIME is YYYY-MM-DD,\n"
	    "YYYY-MM-DDTHH:MM:SS[.mmm]Z (UTC) or milliseconds since 1970.\n"
	    "\n"
	    "Everyone: a table (employee, version, state, uid, container, groups), or\n"
	    "with --json an array of identities, one per line. It reads only the\n"
	    "versions it shows when the index (`idstream index`, run by `idstream run`)\n"
	    "is there, and scans identity.desired otherwise.\n"
	    "\n"
	    "  --json   machine-readable output\n");
}

/* One employee at `at`, from the timeline. */
static int asof_one(cli_t *cli, const char *employee, const char *when, int64_t at,
                    bool as_json)
{
	id_err_t err = {0};
	timeline_t t;
	if (timeline_load_kinds(cli->cfg, employee, TL_KIND_BIT(TL_DESIRED), &t, &err) !=
	    0) {
		timeline_fini(&t);
		return cli_fail("as-of", &err);
	}
	const desired_identity_t *best = NULL;
	for (size_t i = 0; i < t.len; i++) {
		const tl_entry_t *te = &t.items[i];
		if (te->kind == TL_DESIRED && !te->unreadable &&
		    te->d.effective_at <= at &&
		    (best == NULL || te->d.version > best->version))
			best = &te->d;
	}
	if (best == NULL) {
		if (as_json)
			printf("null\n");
		else
			printf("employee %s had no identity at %s\n", employee, when);
	} else if (as_json) {
		json_t *o = asof_json(best);
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(o);
	} else {
		asof_print(best);
	}
	timeline_fini(&t);
	return CLI_EXIT_OK;
}

void asof_latest_free(id_hmap_t *latest)
{
	for (size_t i = 0; i < latest->cap; i++) {
		desired_identity_t *d = latest->slots[i].value;
		if (latest->slots[i].key != NULL && d != NULL) {
			desired_identity_fini(d);
			free(d);
		}
	}
	id_hmap_fini(latest);
}

int asof_collect(const id_config_t *cfg, int64_t at, id_hmap_t *latest, asof_stats_t *st,
                 id_err_t *err)
{
	asof_t a = {.at = at, .latest = latest};
	rd_kafka_t *rk = NULL;
	state_store_t *idx = NULL;
	index_version_t *v = NULL;
	size_t nv = 0;
	char topic[256];
	int32_t nparts = 0;
	long read = 0;
	int rc = 0;
	int64_t t0 = asof_now_ms(), t_walk = 0;
	memset(st, 0, sizeof(*st));
	id_hmap_init(&a.raw);
	id_config_topic(cfg, "identity.desired", topic, sizeof(topic));
	if ((a.codec = codec_create(err)) == NULL ||
	    (rk = id_kafka_consumer_create(cfg, "idstream-as-of", NULL, NULL, NULL,
	                                   err)) == NULL) {
		rc = err && err->code ? err->code : ID_EKAFKA;
		goto out;
	}
	if ((rc = id_kafka_partition_count(rk, topic, &nparts, err)) != 0)
		goto out;
	if ((idx = asof_index_open(cfg)) != NULL) {
		if ((rc = index_versions_at(idx, at, &v, &nv, err)) != 0)
			goto out;
		t_walk = asof_now_ms() - t0;
		if ((rc = asof_read_indexed(rk, topic, nparts, idx, v, nv, &a, &read,
		                            err)) != 0)
			goto out;
	} else if (at == ASOF_NEWEST) {
		if ((rc = scan_topic(rk, topic, nparts, asof_keep_raw, &a, &read, err)) !=
		        0 ||
		    (rc = asof_decode_raw(&a, err)) != 0)
			goto out;
	} else if ((rc = scan_topic(rk, topic, nparts, asof_keep, &a, &read, err)) != 0) {
		goto out;
	}
	st->used_index = idx != NULL;
	st->indexed = nv;
	st->read = read;
	st->decoded = a.decoded;
	st->unreadable = a.unreadable;
	id_log_debug("as-of",
	             "%s: %zu employees, %ld versions decoded (%zu indexed, %ld read), "
	             "%lld ms (index walk done at %lld ms)",
	             idx != NULL ? "index used" : "topic scan", latest->len, a.decoded,
	             nv, read, (long long)(asof_now_ms() - t0), (long long)t_walk);
out:
	for (size_t i = 0; i < a.raw.cap; i++)
		if (a.raw.slots[i].key != NULL && a.raw.slots[i].value != NULL) {
			id_buf_fini(a.raw.slots[i].value);
			free(a.raw.slots[i].value);
		}
	id_hmap_fini(&a.raw);
	index_versions_free(v, nv);
	state_store_close(idx);
	codec_destroy(a.codec);
	id_kafka_destroy(rk);
	return rc;
}

int cmd_asof(cli_t *cli, int argc, char **argv)
{
	const char *when = NULL, *employee = NULL;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			asof_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else if (argv[i][0] != '-' && when == NULL) {
			when = argv[i];
		} else if (argv[i][0] != '-' && employee == NULL) {
			employee = argv[i];
		} else {
			return cli_usage_error("as-of", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	if (when == NULL)
		return cli_usage_error("as-of", "missing TIME");
	int64_t at = 0;
	if (timeline_parse_time(when, &at) != 0)
		return cli_usage_error("as-of", "cannot read TIME \"%s\"", when);
	if (employee != NULL)
		return asof_one(cli, employee, when, at, as_json);

	id_err_t err = {0};
	int rc = CLI_EXIT_OK;
	id_hmap_t latest;
	asof_stats_t st;
	desired_identity_t **list = NULL;
	size_t n = 0;
	id_hmap_init(&latest);
	/* The broker need not hold a fetch at a partition's end for long. */
	if (!id_attrs_has(id_config_kafka(cli->cfg), "fetch.wait.max.ms"))
		(void)id_config_set(cli->cfg, "kafka.fetch.wait.max.ms",
		                    ASOF_FETCH_WAIT_MS, NULL);
	if (asof_collect(cli->cfg, at, &latest, &st, &err) != 0) {
		rc = cli_fail("as-of", &err);
		goto out;
	}
	if (st.unreadable > 0)
		fprintf(stderr,
		        "idstream: as-of: %ld desired versions could not be decoded\n",
		        st.unreadable);
	list = malloc((latest.len ? latest.len : 1) * sizeof(*list));
	for (size_t i = 0; list != NULL && i < latest.cap; i++)
		if (latest.slots[i].key != NULL)
			list[n++] = latest.slots[i].value;
	if (list == NULL) {
		rc = cli_fail("out of memory", NULL);
		goto out;
	}
	if (n > 1)
		qsort(list, n, sizeof(*list), cmp_desired_ptr);
	if (as_json) {
		/* One identity per line: 50,000 of them need not be one tree. */
		printf("[");
		for (size_t i = 0; i < n; i++) {
			json_t *o = asof_json(list[i]);
			char *line = json_dumps(o, JSON_PRESERVE_ORDER);
			printf("%s\n  %s", i ? "," : "", line ? line : "null");
			free(line);
			json_decref(o);
		}
		printf("\n]\n");
	} else {
		printf("%-12s %-8s %-10s %-20s %-24s %s\n", "EMPLOYEE", "VERSION",
		       "STATE", "UID", "CONTAINER", "GROUPS");
		for (size_t i = 0; i < n; i++) {
			const desired_identity_t *d = list[i];
			const char *uid = id_attrs_get(&d->attributes, "uid");
			printf("%-12s v%-7lld %-10s %-20s %-24s", d->employee_id,
			       (long long)d->version, lifecycle_state_name(d->state),
			       uid ? uid : "-", d->container ? d->container : "-");
			for (size_t g = 0; g < d->ngroups; g++)
				printf("%s%s", g ? "," : " ", d->groups[g]);
			printf("\n");
		}
		printf("%zu employees at %s (%ld desired versions read)\n", n, when,
		       st.read);
	}
out:
	free(list);
	asof_latest_free(&latest);
	return rc;
}
