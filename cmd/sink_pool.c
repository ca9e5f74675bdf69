/*
 * sink_pool.c — the parallel executor of sink_pool.h.
 *
 * Invariants: a batch is (jobs, n, next, done); `next` is the index of the
 * next job to hand out and `done` the number finished, both under `mu`.
 * The caller's thread works through the batch with handle 0 like the pool
 * threads with theirs, then waits until done == n.  `gen` counts batches, so
 * a thread that finished one does not take the same batch again.
 *
 * Threading: pthreads; one mutex and two condition variables.
 */
#include "cmd/sink_pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct worker {
	sink_pool_t *pool;
	void *handle;
	pthread_t tid;
} worker_t;

struct sink_pool {
	size_t width;
	void *handle0;
	worker_t *workers; /* width - 1 */
	size_t nstarted;
	pthread_mutex_t mu;
	pthread_cond_t work; /* a batch was posted, or stop */
	pthread_cond_t idle; /* the batch is done */
	bool stop;
	unsigned long gen;
	char *jobs;
	size_t n, size, next, done;
	sink_pool_fn fn;
	void *ctx;
};

/* Runs jobs of the current batch with handle h until none is left. */
static void pool_drain(sink_pool_t *p, void *h)
{
	for (;;) {
		if (p->next >= p->n)
			return;
		size_t i = p->next++;
		char *job = p->jobs + i * p->size;
		sink_pool_fn fn = p->fn;
		void *ctx = p->ctx;
		pthread_mutex_unlock(&p->mu);
		fn(h, job, ctx);
		pthread_mutex_lock(&p->mu);
		if (++p->done == p->n)
			pthread_cond_signal(&p->idle);
	}
}

static void *pool_main(void *arg)
{
	worker_t *w = arg;
	sink_pool_t *p = w->pool;
	unsigned long seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && (p->gen == seen || p->next >= p->n))
			pthread_cond_wait(&p->work, &p->mu);
		if (p->stop)
			break;
		seen = p->gen;
		pool_drain(p, w->handle);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

sink_pool_t *sink_pool_create(size_t width, void *const *handles, id_err_t *err)
{
	if (width < 1 || handles == NULL) {
		id_err_set(err, ID_EINVALID, "sink pool: width %zu", width);
		return NULL;
	}
	sink_pool_t *p = calloc(1, sizeof(*p));
	if (p == NULL || (width > 1 && (p->workers = calloc(
	                                    width - 1, sizeof(*p->workers))) == NULL)) {
		free(p);
		id_err_set(err, ID_ENOMEM, "sink pool: out of memory");
		return NULL;
	}
	p->width = width;
	p->handle0 = handles[0];
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->idle, NULL);
	for (size_t i = 0; i + 1 < width; i++) {
		worker_t *w = &p->workers[i];
		w->pool = p;
		w->handle = handles[i + 1];
		if (pthread_create(&w->tid, NULL, pool_main, w) != 0) {
			id_err_set(err, ID_EIO,
			           "sink pool: cannot start thread %zu of %zu", i + 2,
			           width);
			sink_pool_destroy(p);
			return NULL;
		}
		p->nstarted++;
	}
	return p;
}

void sink_pool_destroy(sink_pool_t *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
	for (size_t i = 0; i < p->nstarted; i++)
		pthread_join(p->workers[i].tid, NULL);
	pthread_cond_destroy(&p->idle);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->mu);
	free(p->workers);
	free(p);
}

void sink_pool_run(sink_pool_t *p, void *jobs, size_t n, size_t job_size, sink_pool_fn fn,
                   void *ctx)
{
	if (n == 0)
		return;
	pthread_mutex_lock(&p->mu);
	p->jobs = jobs;
	p->n = n;
	p->size = job_size;
	p->next = p->done = 0;
	p->fn = fn;
	p->ctx = ctx;
	p->gen++;
	if (n > 1)
		pthread_cond_broadcast(&p->work);
	pool_drain(p, p->handle0);
	while (p->done < p->n)
		pthread_cond_wait(&p->idle, &p->mu);
	p->jobs = NULL;
	p->n = 0;
	pthread_mutex_unlock(&p->mu);
}

size_t sink_pool_width(const sink_pool_t *p)
{
	return p != NULL ? p->width : 1;
}
