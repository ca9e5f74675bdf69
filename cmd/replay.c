/*
 * replay.c — `idstream replay --check`: the determinism audit.
 *
 * Reads <prefix>.hr.events of every partition from offset 0 into empty,
 * in-memory scratch state, folds every event with the mapping the log
 * selects for its partition (the built-in mapping until a POLICY_ACTIVATED
 * marker, then the marker's policy, exactly as the processor does: the
 * partition's employees are re-evaluated in employee id order), and
 * compares the desired identities it would produce with what
 * <prefix>.identity.desired holds — per partition, as SHA-256 over the
 * sequence of encoded records.  Nothing is written anywhere and no consumer
 * group is joined, so it is safe against production topics.
 *
 * Unique names need nothing special: the names arbiter's answers are events
 * of hr.events, so the fold meets every grant and denial where the
 * processor did, and holds and emits the same versions.  The claims the
 * fold reports are dropped (they are on names.claims already).
 *
 * Per-partition sequences are comparable because both topics have the same
 * partition count and the same key partitioner: the events of input
 * partition p are folded in log order and their outputs land, in that
 * order, on output partition p.
 *
 * Exit codes: 0 identical, 2 different (the partitions are named), 1 error.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/scan.h"
#include "common/buf.h"
#include "common/hmap.h"
#include "common/kafka.h"
#include "common/log.h"
#include "processors/employee_record.h"
#include "processors/fold.h"
#include "processors/mapping.h"
#include "processors/policy_registry.h"
#include "schemas/codec.h"

typedef struct replay_part {
	EVP_MD_CTX *replayed; /* hash of what the fold produces now */
	EVP_MD_CTX *stored;   /* hash of what identity.desired holds */
	long nreplayed, nstored;
} replay_part_t;

/* One employee's scratch state and the input partition its events are on. */
typedef struct replay_rec {
	employee_record_t rec;
	int32_t partition;
} replay_rec_t;

typedef struct replay {
	codec_t *codec;
	policy_registry_t *registry;
	id_hmap_t records;    /* employee id → replay_rec_t* */
	fold_claims_t claims; /* reported by each fold, dropped */
	long activations, refused_activations;
	replay_part_t *parts;
	int32_t nparts;
	long refused;
	id_buf_t buf;
} replay_t;

/* Adds d's bytes to the replayed hash of its output partition. */
static int replay_hash(replay_t *r, const desired_identity_t *d, id_err_t *err)
{
	int rc;
	id_buf_reset(&r->buf);
	if ((rc = codec_encode_desired(r->codec, d, &r->buf, err)) != 0)
		return rc;
	int32_t p =
	    id_kafka_partition_for_key(d->employee_id, strlen(d->employee_id), r->nparts);
	EVP_DigestUpdate(r->parts[p].replayed, r->buf.data, r->buf.len);
	r->parts[p].nreplayed++;
	return 0;
}

static int cmp_cstr_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A marker at partition part: switch, then re-evaluate the partition's
 * employees in id order, as the processor does. */
static int replay_activate(replay_t *r, int32_t part, const employee_event_t *ev,
                           id_err_t *err)
{
	desired_identity_t d;
	const char **ids = NULL;
	size_t n = 0;
	int rc = policy_registry_activate(r->registry, part, ev, NULL);
	if (rc == ID_ENOMEM)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	if (rc != 0) {
		r->refused_activations++;
		return 0; /* the processor refuses it too: mapping unchanged */
	}
	r->activations++;
	if ((ids = malloc((r->records.len ? r->records.len : 1) * sizeof(*ids))) == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	for (size_t i = 0; i < r->records.cap; i++) {
		replay_rec_t *x = r->records.slots[i].value;
		if (r->records.slots[i].key != NULL && x != NULL && x->partition == part)
			ids[n++] = r->records.slots[i].key;
	}
	qsort(ids, n, sizeof(*ids), cmp_cstr_ptr);
	desired_identity_init(&d);
	const mapping_t *m = policy_registry_mapping(r->registry, part);
	for (size_t i = 0; i < n && rc == 0; i++) {
		replay_rec_t *x = id_hmap_get(&r->records, ids[i]);
		bool emitted = false;
		fold_claims_clear(&r->claims);
		int frc = fold_reevaluate_claims(&x->rec, ev, m, &d, &emitted, &r->claims,
		                                 NULL);
		if (frc == ID_ENOMEM)
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
		else if (frc == 0 && emitted)
			rc = replay_hash(r, &d, err);
	}
	desired_identity_fini(&d);
	free(ids);
	return rc;
}

static int replay_fold(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	replay_t *r = opaque;
	employee_event_t ev;
	desired_identity_t d;
	bool emitted = false;
	int rc = 0;
	employee_event_init(&ev);
	desired_identity_init(&d);
	if (codec_decode_event(r->codec, m->payload, m->len, &ev, NULL) != 0) {
		r->refused++; /* the processor refuses it too: no output */
		goto out;
	}
	if (ev.type == EV_POLICY_ACTIVATED) {
		rc = replay_activate(r, m->partition, &ev, err);
		goto out;
	}
	replay_rec_t *x = id_hmap_get(&r->records, ev.employee_id);
	if (x == NULL) {
		if ((x = malloc(sizeof(*x))) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		employee_record_init(&x->rec);
		x->partition = m->partition;
		if (id_hmap_put(&r->records, ev.employee_id, x) != 0) {
			employee_record_fini(&x->rec);
			free(x);
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
	}
	fold_claims_clear(&r->claims);
	int frc = fold_apply_claims(&x->rec, &ev,
	                            policy_registry_mapping(r->registry, m->partition),
	                            &d, &emitted, &r->claims, NULL);
	if (frc == ID_ENOMEM) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if (frc != 0 || !emitted)
		goto out;
	rc = replay_hash(r, &d, err);
out:
	desired_identity_fini(&d);
	employee_event_fini(&ev);
	return rc;
}

static int replay_hash_stored(void *opaque, const rd_kafka_message_t *m, id_err_t *err)
{
	replay_t *r = opaque;
	(void)err;
	if (m->partition < 0 || m->partition >= r->nparts)
		return 0;
	EVP_DigestUpdate(r->parts[m->partition].stored, m->payload, m->len);
	r->parts[m->partition].nstored++;
	return 0;
}

static void replay_usage(void)
{
	printf(
	    "usage: idstream replay --check\n"
	    "\n"
	    "Replays <prefix>.hr.events from offset 0 into empty scratch state, "
	    "following\n"
	    "its policy activations like the processor, and checks that it reproduces\n"
	    "<prefix>.identity.desired byte "
	    "for\n"
	    "byte, partition by partition. Writes nothing and joins no consumer "
	    "group.\n"
	    "Exit status: 0 identical, 2 different (partitions named), 1 error.\n");
}

int cmd_replay(cli_t *cli, int argc, char **argv)
{
	bool check = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			replay_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--check") == 0) {
			check = true;
		} else {
			return cli_usage_error("replay", "unknown argument \"%s\"",
			                       argv[i]);
		}
	}
	if (!check)
		return cli_usage_error("replay", "expected --check");

	id_err_t err = {0};
	int rc = CLI_EXIT_FAIL;
	char in_topic[256], out_topic[256];
	int32_t nin = 0, nout = 0;
	long nevents = 0, ndesired = 0;
	replay_t r = {0};
	id_hmap_init(&r.records);
	fold_claims_init(&r.claims);
	id_buf_init(&r.buf);
	id_config_topic(cli->cfg, "hr.events", in_topic, sizeof(in_topic));
	id_config_topic(cli->cfg, "identity.desired", out_topic, sizeof(out_topic));
	rd_kafka_t *rk =
	    id_kafka_consumer_create(cli->cfg, "idstream-replay", NULL, NULL, NULL, &err);
	mapping_t *builtin = NULL;
	if (rk == NULL || (r.codec = codec_create(&err)) == NULL ||
	    (builtin = processor_builtin_mapping(cli->cfg, &err)) == NULL ||
	    (r.registry = policy_registry_create(builtin, "ldap", NULL, &err)) == NULL ||
	    id_kafka_partition_count(rk, in_topic, &nin, &err) != 0 ||
	    id_kafka_partition_count(rk, out_topic, &nout, &err) != 0) {
		cli_fail("replay", &err);
		goto out;
	}
	if (nin != nout) {
		fprintf(stderr,
		        "idstream: replay: %s has %d partitions and %s %d; per-partition "
		        "order is only comparable with equal counts\n",
		        in_topic, nin, out_topic, nout);
		goto out;
	}
	r.nparts = nin;
	r.parts = calloc((size_t)nin, sizeof(*r.parts));
	for (int32_t p = 0; r.parts != NULL && p < nin; p++) {
		r.parts[p].replayed = EVP_MD_CTX_new();
		r.parts[p].stored = EVP_MD_CTX_new();
		EVP_DigestInit_ex(r.parts[p].replayed, EVP_sha256(), NULL);
		EVP_DigestInit_ex(r.parts[p].stored, EVP_sha256(), NULL);
	}
	if (r.parts == NULL) {
		cli_fail("out of memory", NULL);
		goto out;
	}
	if (scan_topic(rk, in_topic, nin, replay_fold, &r, &nevents, &err) != 0 ||
	    scan_topic(rk, out_topic, nout, replay_hash_stored, &r, &ndesired, &err) !=
	        0) {
		cli_fail("replay", &err);
		goto out;
	}
	int differing = 0;
	for (int32_t p = 0; p < nin; p++) {
		unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
		unsigned int al = 0, bl = 0;
		EVP_DigestFinal_ex(r.parts[p].replayed, a, &al);
		EVP_DigestFinal_ex(r.parts[p].stored, b, &bl);
		bool same = al == bl && memcmp(a, b, al) == 0 &&
		            r.parts[p].nreplayed == r.parts[p].nstored;
		if (!same) {
			differing++;
			printf("partition %d differs: replay produced %ld desired "
			       "identities, the "
			       "topic holds %ld\n",
			       p, r.parts[p].nreplayed, r.parts[p].nstored);
		}
	}
	printf("replayed %ld events (%ld refused) of %s into %ld employees: %d of %d "
	       "partitions of %s (%ld records) reproduced byte for byte\n",
	       nevents, r.refused, in_topic, (long)r.records.len, nin - differing, nin,
	       out_topic, ndesired);
	if (r.activations + r.refused_activations > 0)
		printf("followed %ld policy activations (%ld refused)\n", r.activations,
		       r.refused_activations);
	rc = differing ? 2 : CLI_EXIT_OK;
out:
	for (size_t i = 0; i < r.records.cap; i++) {
		replay_rec_t *x = r.records.slots[i].value;
		if (r.records.slots[i].key != NULL && x != NULL) {
			employee_record_fini(&x->rec);
			free(x);
		}
	}
	id_hmap_fini(&r.records);
	fold_claims_fini(&r.claims);
	for (int32_t p = 0; r.parts != NULL && p < r.nparts; p++) {
		EVP_MD_CTX_free(r.parts[p].replayed);
		EVP_MD_CTX_free(r.parts[p].stored);
	}
	free(r.parts);
	id_buf_fini(&r.buf);
	policy_registry_destroy(r.registry);
	codec_destroy(r.codec);
	id_kafka_destroy(rk);
	return rc;
}
