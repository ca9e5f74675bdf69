/*
 * outbox.c — acknowledged webhook deliveries waiting for the HR API (see
 * outbox.h for the key layout).
 *
 * Invariant: depth counts the "o/" keys written and not yet removed or
 * parked by this process, starting from the count found at open.
 * Threading: a mutex guards seq and depth; the store is thread-safe.
 */
#include "ingest/outbox.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

#define OUTBOX_FORMAT 1
#define NO_HEADER     0xffffffffu

struct outbox {
	state_store_t *store; /* borrowed */
	pthread_mutex_t mu;
	uint64_t next_seq;
	size_t depth;
};

void outbox_entry_fini(outbox_entry_t *e)
{
	if (e == NULL)
		return;
	free(e->delivery_hdr);
	free(e->body);
	memset(e, 0, sizeof(*e));
}

static void entry_key(unsigned char k[10], const char *prefix, uint64_t seq)
{
	memcpy(k, prefix, 2);
	state_be64_put(k + 2, seq);
}

outbox_t *outbox_open(state_store_t *store, id_err_t *err)
{
	outbox_t *o = calloc(1, sizeof(*o));
	state_iter_t *it = NULL;
	if (o == NULL) {
		id_err_set(err, ID_ENOMEM, "out of memory");
		return NULL;
	}
	o->store = store;
	o->next_seq = 1;
	pthread_mutex_init(&o->mu, NULL);
	/* Parked entries share the numbering, so both prefixes are scanned. */
	static const char *const prefixes[] = {"o/", "z/"};
	for (int p = 0; p < 2; p++) {
		if (state_iter_create(store, prefixes[p], 2, &it, err) != 0)
			goto fail;
		const void *k, *v;
		size_t kl, vl;
		int rc;
		while ((rc = state_iter_next(it, &k, &kl, &v, &vl, err)) == 1) {
			if (kl != 10)
				continue;
			uint64_t seq = state_be64_get((const unsigned char *)k + 2);
			if (seq >= o->next_seq)
				o->next_seq = seq + 1;
			if (p == 0)
				o->depth++;
		}
		state_iter_destroy(it);
		it = NULL;
		if (rc < 0)
			goto fail;
	}
	return o;
fail:
	state_iter_destroy(it);
	outbox_close(o);
	return NULL;
}

void outbox_close(outbox_t *o)
{
	if (o == NULL)
		return;
	pthread_mutex_destroy(&o->mu);
	free(o);
}

int outbox_add(outbox_t *o, state_batch_t *b, webhook_source_t src, int64_t received_ms,
               const char *delivery_hdr, const void *body, size_t len, uint64_t *seq,
               id_err_t *err)
{
	id_buf_t v = ID_BUF_INIT;
	unsigned char key[10];
	size_t hl = delivery_hdr != NULL ? strlen(delivery_hdr) : 0;
	if (id_buf_append_u8(&v, OUTBOX_FORMAT) || id_buf_append_u8(&v, (uint8_t)src) ||
	    id_buf_append_be64(&v, (uint64_t)received_ms) ||
	    id_buf_append_be32(&v, delivery_hdr != NULL ? (uint32_t)hl : NO_HEADER) ||
	    id_buf_append(&v, delivery_hdr != NULL ? delivery_hdr : "", hl) ||
	    id_buf_append_be32(&v, (uint32_t)len) || id_buf_append(&v, body, len)) {
		id_buf_fini(&v);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	pthread_mutex_lock(&o->mu);
	*seq = o->next_seq++;
	pthread_mutex_unlock(&o->mu);
	entry_key(key, "o/", *seq);
	state_batch_put(b, key, sizeof(key), v.data, v.len);
	id_buf_fini(&v);
	return 0;
}

void outbox_added(outbox_t *o)
{
	pthread_mutex_lock(&o->mu);
	o->depth++;
	pthread_mutex_unlock(&o->mu);
}

/* Decodes a value; false when it is not a format-1 entry. */
static bool entry_decode(const unsigned char *p, size_t n, outbox_entry_t *e)
{
	if (n < 18 || p[0] != OUTBOX_FORMAT || p[1] >= WEBHOOK_SOURCE_COUNT)
		return false;
	e->src = (webhook_source_t)p[1];
	e->received_ms = (int64_t)state_be64_get(p + 2);
	uint32_t hl = state_be32_get(p + 10);
	size_t off = 14;
	if (hl != NO_HEADER) {
		if (hl > n - off ||
		    (e->delivery_hdr = strndup((const char *)p + off, hl)) == NULL)
			return false;
		off += hl;
	}
	if (n - off < 4)
		return false;
	uint32_t bl = state_be32_get(p + off);
	off += 4;
	if (bl != n - off || (e->body = malloc((size_t)bl + 1)) == NULL)
		return false;
	memcpy(e->body, p + off, bl);
	e->body[bl] = '\0';
	e->len = bl;
	return true;
}

int outbox_next(outbox_t *o, uint64_t after, outbox_entry_t *out, id_err_t *err)
{
	state_iter_t *it = NULL;
	int rc;
	outbox_entry_fini(out);
	if ((rc = state_iter_create(o->store, "o/", 2, &it, err)) != 0)
		return rc;
	const void *k, *v;
	size_t kl, vl;
	while ((rc = state_iter_next(it, &k, &kl, &v, &vl, err)) == 1) {
		if (kl != 10)
			continue;
		uint64_t seq = state_be64_get((const unsigned char *)k + 2);
		if (seq <= after)
			continue;
		out->seq = seq;
		if (!entry_decode(v, vl, out)) {
			outbox_entry_fini(out);
			rc = id_err_set(err, ID_ESTATE,
			                "state store %s: outbox entry %llu is corrupt",
			                state_store_path(o->store),
			                (unsigned long long)seq);
			break;
		}
		rc = 1;
		break;
	}
	state_iter_destroy(it);
	return rc;
}

int outbox_remove(outbox_t *o, uint64_t seq, id_err_t *err)
{
	unsigned char key[10];
	entry_key(key, "o/", seq);
	state_batch_t *b = state_batch_create();
	if (b == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	state_batch_delete(b, key, sizeof(key));
	int rc = state_batch_write(o->store, b, true, err);
	state_batch_destroy(b);
	if (rc == 0) {
		pthread_mutex_lock(&o->mu);
		if (o->depth > 0)
			o->depth--;
		pthread_mutex_unlock(&o->mu);
	}
	return rc;
}

int outbox_park(outbox_t *o, const outbox_entry_t *e, id_err_t *err)
{
	unsigned char from[10], to[10];
	void *val = NULL;
	size_t vl = 0;
	entry_key(from, "o/", e->seq);
	entry_key(to, "z/", e->seq);
	int rc = state_store_get(o->store, from, sizeof(from), &val, &vl, err);
	if (rc != 0)
		return rc;
	state_batch_t *b = state_batch_create();
	if (b == NULL) {
		free(val);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	state_batch_put(b, to, sizeof(to), val, vl);
	state_batch_delete(b, from, sizeof(from));
	rc = state_batch_write(o->store, b, true, err);
	state_batch_destroy(b);
	free(val);
	if (rc == 0) {
		pthread_mutex_lock(&o->mu);
		if (o->depth > 0)
			o->depth--;
		pthread_mutex_unlock(&o->mu);
	}
	return rc;
}

size_t outbox_depth(outbox_t *o)
{
	pthread_mutex_lock(&o->mu);
	size_t n = o->depth;
	pthread_mutex_unlock(&o->mu);
	return n;
}
