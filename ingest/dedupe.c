/*
 * dedupe.c — delivery-id records with a TTL in the state store, plus the
 * in-memory set of deliveries being published (see dedupe.h for the key
 * layout and the claim/commit protocol).
 *
 * Invariant: an id is in the in-flight set from a successful claim until its
 * commit or release; while it is there no other claim of it succeeds.
 * Threading: the mutex guards only the in-flight set; store calls happen
 * outside it except the read in claim, which must be atomic with the
 * insertion into the set.
 */
#include "ingest/dedupe.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/hmap.h"

struct dedupe {
	state_store_t *store; /* borrowed */
	int64_t ttl_ms;
	bool sync;
	pthread_mutex_t mu;
	/* "source/id" → d while in flight, NULL once released (id_hmap has no
	 * delete; released keys are dropped when the table is rebuilt). */
	id_hmap_t in_flight;
	size_t live; /* keys with a non-NULL value */
};

dedupe_t *dedupe_create(state_store_t *store, int64_t ttl_ms, bool sync)
{
	dedupe_t *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	d->store = store;
	d->ttl_ms = ttl_ms > 0 ? ttl_ms : 1;
	d->sync = sync;
	pthread_mutex_init(&d->mu, NULL);
	id_hmap_init(&d->in_flight);
	return d;
}

void dedupe_destroy(dedupe_t *d)
{
	if (d == NULL)
		return;
	id_hmap_fini(&d->in_flight);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

/* "d/" source NUL id */
static int record_key(id_buf_t *k, const char *source, const char *id)
{
	id_buf_reset(k);
	if (id_buf_append_str(k, "d/") || id_buf_append_str(k, source) ||
	    id_buf_append_u8(k, 0) || id_buf_append_str(k, id))
		return ID_ENOMEM;
	return 0;
}

/* "x/" expiry source NUL id */
static int index_key(id_buf_t *k, int64_t expiry, const char *source, const char *id)
{
	unsigned char be[8];
	state_be64_put(be, (uint64_t)expiry);
	id_buf_reset(k);
	if (id_buf_append_str(k, "x/") || id_buf_append(k, be, 8) ||
	    id_buf_append_str(k, source) || id_buf_append_u8(k, 0) ||
	    id_buf_append_str(k, id))
		return ID_ENOMEM;
	return 0;
}

/* Source names never contain '/', so "source/id" is unambiguous. */
static char *flight_key(const char *source, const char *id)
{
	size_t n = strlen(source) + strlen(id) + 2;
	char *k = malloc(n);
	if (k != NULL)
		snprintf(k, n, "%s/%s", source, id);
	return k;
}

static void fmt_time(int64_t ms, char *out, size_t n)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int dedupe_claim(dedupe_t *d, const char *source, const char *id, int64_t now_ms,
                 bool *in_flight, id_err_t *err)
{
	int rc = 0;
	id_buf_t k = ID_BUF_INIT;
	void *val = NULL;
	size_t vlen = 0;
	char *fk = flight_key(source, id);
	*in_flight = false;
	if (fk == NULL || record_key(&k, source, id) != 0) {
		free(fk);
		id_buf_fini(&k);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	pthread_mutex_lock(&d->mu);
	if (id_hmap_get(&d->in_flight, fk) != NULL) {
		*in_flight = true;
		rc = id_err_set(err, ID_ECONFLICT,
		                "delivery %s of %s is being processed by another request",
		                id, source);
		goto out;
	}
	rc = state_store_get(d->store, k.data, k.len, &val, &vlen, err);
	if (rc == 0 && vlen >= 16) {
		int64_t expiry = (int64_t)state_be64_get(val);
		int64_t at = (int64_t)state_be64_get((unsigned char *)val + 8);
		if (expiry > now_ms) {
			char when[32];
			fmt_time(at, when, sizeof(when));
			rc = id_err_set(
			    err, ID_ECONFLICT,
			    "delivery %s of %s was already accepted at %s; its "
			    "events are in the log",
			    id, source, when);
			goto out;
		}
	}
	if (rc != 0 && rc != ID_ENOTFOUND)
		goto out;
	rc = 0;
	/* The map copies the key; the value only marks presence. */
	if (id_hmap_put(&d->in_flight, fk, d) != 0)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	else
		d->live++;
out:
	pthread_mutex_unlock(&d->mu);
	free(val);
	free(fk);
	id_buf_fini(&k);
	return rc;
}

/* Drops released keys once they outnumber the live ones, so the table
 * stays proportional to the requests in flight (amortised O(1)). */
static void flight_compact(dedupe_t *d)
{
	if (d->in_flight.len < 1024 || d->in_flight.len < 4 * d->live)
		return;
	id_hmap_t next;
	id_hmap_init(&next);
	for (size_t i = 0; i < d->in_flight.cap; i++) {
		const char *k = d->in_flight.slots[i].key;
		if (k != NULL && d->in_flight.slots[i].value != NULL &&
		    id_hmap_put(&next, k, d) != 0) {
			/* Out of memory: keep the old table, try again later. */
			id_hmap_fini(&next);
			return;
		}
	}
	id_hmap_fini(&d->in_flight);
	d->in_flight = next;
}

void dedupe_release(dedupe_t *d, const char *source, const char *id)
{
	char *fk = flight_key(source, id);
	if (fk == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	if (id_hmap_get(&d->in_flight, fk) != NULL &&
	    id_hmap_put(&d->in_flight, fk, NULL) == 0) {
		d->live--;
		flight_compact(d);
	}
	pthread_mutex_unlock(&d->mu);
	free(fk);
}

int dedupe_record(dedupe_t *d, state_batch_t *b, const char *source, const char *id,
                  int64_t now_ms, id_err_t *err)
{
	int rc = 0;
	id_buf_t rk = ID_BUF_INIT, xk = ID_BUF_INIT;
	unsigned char val[16];
	int64_t expiry = now_ms + d->ttl_ms;
	if (record_key(&rk, source, id) != 0 || index_key(&xk, expiry, source, id) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	state_be64_put(val, (uint64_t)expiry);
	state_be64_put(val + 8, (uint64_t)now_ms);
	state_batch_put(b, rk.data, rk.len, val, sizeof(val));
	state_batch_put(b, xk.data, xk.len, "", 0);
out:
	id_buf_fini(&rk);
	id_buf_fini(&xk);
	return rc;
}

int dedupe_commit(dedupe_t *d, const char *source, const char *id, int64_t now_ms,
                  id_err_t *err)
{
	int rc;
	state_batch_t *b = state_batch_create();
	if (b == NULL)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	else if ((rc = dedupe_record(d, b, source, id, now_ms, err)) == 0)
		rc = state_batch_write(d->store, b, d->sync, err);
	dedupe_release(d, source, id);
	state_batch_destroy(b);
	return rc;
}

int dedupe_sweep(dedupe_t *d, int64_t now_ms, size_t max, size_t *removed, id_err_t *err)
{
	int rc = 0;
	size_t n = 0;
	state_iter_t *it = NULL;
	id_buf_t rk = ID_BUF_INIT;
	state_batch_t *b = state_batch_create();
	if (b == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = state_iter_create(d->store, "x/", 2, &it, err)) != 0)
		goto out;
	const void *k, *v;
	size_t kl, vl;
	while (n < max && (rc = state_iter_next(it, &k, &kl, &v, &vl, err)) == 1) {
		const unsigned char *p = k;
		if (kl < 11)
			continue;
		int64_t expiry = (int64_t)state_be64_get(p + 2);
		if (expiry > now_ms)
			break;
		/* The record key is "d/" + the index key's tail. */
		id_buf_reset(&rk);
		if (id_buf_append_str(&rk, "d/") || id_buf_append(&rk, p + 10, kl - 10)) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		/* A later commit of the same id wrote a newer expiry under "d/";
		 * only delete the record when it is this one. */
		void *cur = NULL;
		size_t cl = 0;
		int g = state_store_get(d->store, rk.data, rk.len, &cur, &cl, NULL);
		if (g == 0 && cl >= 8 && (int64_t)state_be64_get(cur) <= now_ms)
			state_batch_delete(b, rk.data, rk.len);
		free(cur);
		state_batch_delete(b, k, kl);
		n++;
	}
	if (rc < 0)
		goto out;
	rc = 0;
	if (state_batch_count(b) > 0)
		rc = state_batch_write(d->store, b, false, err);
out:
	state_iter_destroy(it);
	state_batch_destroy(b);
	id_buf_fini(&rk);
	if (removed != NULL)
		*removed = rc == 0 ? n : 0;
	return rc;
}

size_t dedupe_in_flight(dedupe_t *d)
{
	pthread_mutex_lock(&d->mu);
	size_t n = d->live;
	pthread_mutex_unlock(&d->mu);
	return n;
}
