/*
 * sink_pool.h — the parallel executor of a sink: runs a batch of
 * independent jobs (one employee each) over `width` target handles, one
 * thread per handle, and returns when every job is done.
 *
 * The sink loop (cmd/sink.c) decides what goes into a batch (never two jobs
 * of one employee, so each employee's versions stay in order) and does all
 * the bookkeeping (versions, state, results) itself, in input order, after
 * the batch: only the target calls run in parallel.  A handle is used by
 * one thread at a time, as the sink cores require.
 *
 * Threading: create, run and destroy from one thread (the sink loop);
 * handle 0 is used by that thread itself, handles 1..width-1 by the pool's
 * threads.
 */
#ifndef IDSTREAM_SINK_POOL_H
#define IDSTREAM_SINK_POOL_H

#include <stddef.h>

#include "common/err.h"

typedef struct sink_pool sink_pool_t;

/* One job: the target call for jobs[i] through handle h. */
typedef void (*sink_pool_fn)(void *h, void *job, void *ctx);

/*
 * Starts width - 1 threads (width 1: none; everything runs in the caller).
 * handles[0..width) are borrowed and must outlive the pool.
 * Ownership: caller destroys with sink_pool_destroy().  NULL on error.
 */
sink_pool_t *sink_pool_create(size_t width, void *const *handles, id_err_t *err);

/* Stops and joins the threads, frees.  NULL is a no-op. */
void sink_pool_destroy(sink_pool_t *p);

/* Calls fn(handle, (char *)jobs + i * job_size, ctx) for every i < n, at
 * most width at a time, and returns when all have returned. */
void sink_pool_run(sink_pool_t *p, void *jobs, size_t n, size_t job_size, sink_pool_fn fn,
                   void *ctx);

size_t sink_pool_width(const sink_pool_t *p);

#endif
