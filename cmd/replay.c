/*
 * replay.c — `idstream replay --check`: the determinism audit.
 *
 * Reads <prefix>.hr.events of every partition from offset 0 into empty,
 * in-memory scratch state, folds every event with the current mapping, and
 * compares the desired identities it would produce with what
 * <prefix>.identity.desired holds — per partition, as SHA-256 over the
 * sequence of encoded records.  Nothing is written anywhere and no consumer
 * group is joined, so it is safe against production topics.
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
#include "schemas/codec.h"

typedef struct replay_part {
	EVP_MD_CTX *replayed; /* hash of what the fold produces now */
	EVP_MD_CTX *stored;   /* hash of what identity.desired holds */
	long nreplayed, nstored;
} replay_part_t;

typedef struct replay {
	codec_t *codec;
	mapping_t *mapping;
	id_hmap_t records; /* employee id → employee_record_t* */
	replay_part_t *parts;
	int32_t nparts;
	long refused;
	id_buf_t buf;
} replay_t;

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
	employee_record_t *rec = id_hmap_get(&r->records, ev.employee_id);
	if (rec == NULL) {
		if ((rec = malloc(sizeof(*rec))) == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		employee_record_init(rec);
		if (id_hmap_put(&r->records, ev.employee_id, rec) != 0) {
			employee_record_fini(rec);
			free(rec);
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
	}
	int frc = fold_apply(rec, &ev, r->mapping, &d, &emitted, NULL);
	if (frc == ID_ENOMEM) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if (frc != 0 || !emitted)
		goto out;
	id_buf_reset(&r->buf);
	if ((rc = codec_encode_desired(r->codec, &d, &r->buf, err)) != 0)
		goto out;
	int32_t p =
	    id_kafka_partition_for_key(ev.employee_id, strlen(ev.employee_id), r->nparts);
	EVP_DigestUpdate(r->parts[p].replayed, r->buf.data, r->buf.len);
	r->parts[p].nreplayed++;
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
	    "Replays <prefix>.hr.events from offset 0 into empty scratch state with the\n"
	    "current mapping and checks that it reproduces <prefix>.identity.desired "
	    "byte\n"
	    "for byte, partition by partition. Writes nothing and joins no consumer "
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
	id_buf_init(&r.buf);
	id_config_topic(cli->cfg, "hr.events", in_topic, sizeof(in_topic));
	id_config_topic(cli->cfg, "identity.desired", out_topic, sizeof(out_topic));
	rd_kafka_t *rk =
	    id_kafka_consumer_create(cli->cfg, "idstream-replay", NULL, NULL, NULL, &err);
	if (rk == NULL || (r.codec = codec_create(&err)) == NULL ||
	    (r.mapping = mapping_create_default(
	         id_config_str(cli->cfg, "mapping.mail_domain"), &err)) == NULL ||
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
	rc = differing ? 2 : CLI_EXIT_OK;
out:
	for (size_t i = 0; i < r.records.cap; i++) {
		employee_record_t *rec = r.records.slots[i].value;
		if (r.records.slots[i].key != NULL && rec != NULL) {
			employee_record_fini(rec);
			free(rec);
		}
	}
	id_hmap_fini(&r.records);
	for (int32_t p = 0; r.parts != NULL && p < r.nparts; p++) {
		EVP_MD_CTX_free(r.parts[p].replayed);
		EVP_MD_CTX_free(r.parts[p].stored);
	}
	free(r.parts);
	id_buf_fini(&r.buf);
	mapping_destroy(r.mapping);
	codec_destroy(r.codec);
	id_kafka_destroy(rk);
	return rc;
}
