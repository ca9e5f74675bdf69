/*
 * store.h — the state store: a thin, opaque wrapper around one RocksDB
 * database.  This module is the only code in idstream that includes
 * rocksdb/c.h; RocksDB error strings are translated into ID_ESTATE errors
 * naming the store's path here.
 *
 * Each stage keeps its own store under state.dir (see state/README.md) and
 * documents its key layout as a table in its own code.  State is a cache of
 * the Kafka log: losing a store costs a replay, never data.
 *
 * Memory is bounded: one LRU block cache holds data, index and filter blocks
 * (cache_index_and_filter_blocks), and all memtables together are capped by
 * db_write_buffer_size.  RocksDB 7.8's C API has no write-buffer manager, so
 * the memtable budget is per store, not per process.
 *
 * Thread safety: a store may be used from several threads (RocksDB is
 * thread-safe for get/put/write/iterators).  A batch or an iterator belongs to
 * one thread at a time.  A store directory can be open for writing in one
 * process only (RocksDB's LOCK file); a second state_store_open() fails with
 * ID_ESTATE.  Other processes may read it meanwhile through
 * state_store_open_reader().
 */
#ifndef IDSTREAM_STATE_STORE_H
#define IDSTREAM_STATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

typedef struct state_store state_store_t;
typedef struct state_batch state_batch_t;
typedef struct state_iter state_iter_t;
typedef struct state_cache state_cache_t;

/* Defaults used when state_store_opts_t is NULL or a field is 0. */
#define STATE_STORE_DEFAULT_CACHE_BYTES        ((size_t)32 << 20)
#define STATE_STORE_DEFAULT_WRITE_BUFFER_BYTES ((size_t)16 << 20)

typedef struct state_store_opts {
	/* Block cache shared with other stores of the process, or NULL for a
	 * private cache of cache_bytes.  Borrowed only during open: RocksDB
	 * keeps its own reference, so the cache may be destroyed after. */
	state_cache_t *cache;
	size_t cache_bytes;        /* private cache size; 0 = default */
	size_t write_buffer_bytes; /* all memtables of the store; 0 = default */
} state_store_opts_t;

/*
 * Creates an LRU block cache of capacity bytes that several stores of one
 * process can share (`idstream run` opens one store per stage).
 * Ownership: caller frees with state_cache_destroy(); NULL on ENOMEM.
 */
state_cache_t *state_cache_create(size_t capacity);
void state_cache_destroy(state_cache_t *c);

/*
 * Opens the store at path, creating it (and missing parent directories) when
 * absent.  opts may be NULL.  Ownership: *out is closed with
 * state_store_close().  Errors: ID_ESTATE (path and RocksDB's reason),
 * ID_EIO (a parent directory could not be created), ID_ENOMEM.
 */
int state_store_open(const char *path, const state_store_opts_t *opts,
                     state_store_t **out, id_err_t *err);
/*
 * Readers of a store that another process may hold open for writing (the
 * index of `idstream run`, read by `history`): RocksDB lets one process
 * write a store, but any number read it in one of these modes.  Neither
 * takes the store's lock, writes to its folder or creates it.
 *
 *   STATE_STORE_READ_ONLY  a snapshot of the store as of the open (its
 *                          write-ahead log included); cheapest to open.
 *   STATE_STORE_SECONDARY  a secondary instance: state_store_catch_up()
 *                          moves it forward to the writer's newest state.
 *                          RocksDB keeps its info log in a private
 *                          temporary folder, removed on close.
 */
typedef enum state_store_reader {
	STATE_STORE_READ_ONLY = 1,
	STATE_STORE_SECONDARY = 2,
} state_store_reader_t;

/*
 * Opens the existing store at path for reading only, in mode.  Every table
 * file stays open while the store is, so files the writer's compactions
 * delete meanwhile remain readable.  Writes through the handle fail with
 * ID_ESTATE.  opts may be NULL (write_buffer_bytes is then irrelevant).
 * Ownership: *out is closed with state_store_close().  Errors: ID_ENOTFOUND
 * (err untouched) when there is no store at path; ID_ESTATE (path and
 * RocksDB's reason); ID_EIO (secondary: no temporary folder); ID_ENOMEM.
 */
int state_store_open_reader(const char *path, const state_store_opts_t *opts,
                            state_store_reader_t mode, state_store_t **out,
                            id_err_t *err);
/* True when a store exists at path (its CURRENT file is there). */
bool state_store_exists(const char *path);

/*
 * A secondary instance: reads what the writer has written since the open or
 * the last catch-up (new table files and the write-ahead log's tail).
 * Iterators created before keep their view.  A no-op (0) for a read-only
 * or read-write store.  0 or ID_ESTATE.
 */
int state_store_catch_up(state_store_t *s, id_err_t *err);

/* Closes the store; NULL is a no-op.  Batches/iterators must be gone. */
void state_store_close(state_store_t *s);
/* The path the store was opened with (borrowed, lives as long as s). */
const char *state_store_path(const state_store_t *s);

/*
 * Reads key.  On success *val is a malloc'd copy the caller frees with free()
 * (never NULL, even for an empty value; it is NUL-terminated one byte past
 * *vlen for convenience) and *vlen its length.  ID_ENOTFOUND (without
 * touching err) when the key is absent; ID_ESTATE on a read error.
 */
int state_store_get(state_store_t *s, const void *key, size_t klen, void **val,
                    size_t *vlen, id_err_t *err);

/*
 * Same as state_store_get(), but the value is copied into out (reset first,
 * its memory reused; NUL-terminated one byte past out->len), so a caller that
 * reads in a loop allocates nothing per read.  ID_ENOTFOUND (out->len == 0,
 * err untouched) when the key is absent; ID_ESTATE on a read error;
 * ID_ENOMEM.
 */
int state_store_get_buf(state_store_t *s, const void *key, size_t klen, id_buf_t *out,
                        id_err_t *err);

/*
 * Single writes.  They go through the write-ahead log without fsync: they
 * survive a process crash, not a power loss.  Use a batch written with
 * sync=true for data whose loss would not be repaired by a replay.
 */
int state_store_put(state_store_t *s, const void *key, size_t klen, const void *val,
                    size_t vlen, id_err_t *err);
/* Deleting an absent key succeeds. */
int state_store_delete(state_store_t *s, const void *key, size_t klen, id_err_t *err);

/*
 * Atomic write batches: all operations of a batch become visible together,
 * and after a crash either all or none of them are there.
 * Ownership: caller frees with state_batch_destroy() (NULL is a no-op);
 * destroying an unwritten batch discards it.  NULL on ENOMEM.
 */
state_batch_t *state_batch_create(void);
void state_batch_destroy(state_batch_t *b);
void state_batch_put(state_batch_t *b, const void *key, size_t klen, const void *val,
                     size_t vlen);
void state_batch_delete(state_batch_t *b, const void *key, size_t klen);
/* Number of put/delete operations recorded so far. */
size_t state_batch_count(const state_batch_t *b);
/* Clears the batch so it can be reused. */
void state_batch_clear(state_batch_t *b);
/*
 * Applies the batch atomically.  sync=true waits until the write-ahead log
 * is on disk (fsync) before returning.  The batch is left as is (clear or
 * destroy it afterwards).
 */
int state_batch_write(state_store_t *s, state_batch_t *b, bool sync, id_err_t *err);

/*
 * Applies the batch atomically without the write-ahead log, for state that a
 * replay rebuilds: it skips a write of every byte.  After a process crash
 * the store holds the writes up to some earlier batch (whole batches, in
 * order: all writes of a store go through one memtable sequence), as if the
 * later ones had not happened; memtable flushes and state_store_close() make
 * writes durable.  Do not mix with logged writes whose loss would not be
 * repaired the same way.
 */
int state_batch_write_unlogged(state_store_t *s, state_batch_t *b, id_err_t *err);

/*
 * Writes the memtables to table files, making unlogged writes durable and
 * visible to readers (state_store_open_reader()) that do not replay a
 * write-ahead log holding them.  wait=false only schedules the flush.
 * 0 or ID_ESTATE.
 */
int state_store_flush(state_store_t *s, bool wait, id_err_t *err);

/*
 * Iterates, in ascending bytewise key order, over the keys that start with
 * prefix (plen 0: every key), as of a consistent point in time taken at
 * creation.  Ownership: caller frees with state_iter_destroy() (NULL is a
 * no-op), before closing the store.
 */
int state_iter_create(state_store_t *s, const void *prefix, size_t plen,
                      state_iter_t **out, id_err_t *err);
/*
 * Advances to the next entry.  Returns 1 and sets the borrowed key and value
 * pointers (valid until the next call or destroy), 0 when there are no more
 * entries, or a negative ID_ESTATE on a read error.
 */
int state_iter_next(state_iter_t *it, const void **key, size_t *klen, const void **val,
                    size_t *vlen, id_err_t *err);
void state_iter_destroy(state_iter_t *it);

/*
 * Big-endian integer helpers for keys: big-endian integers sort bytewise in
 * numeric order, so "offset" or "version" keys iterate in order.
 */
void state_be32_put(unsigned char out[4], uint32_t v);
void state_be64_put(unsigned char out[8], uint64_t v);
uint32_t state_be32_get(const unsigned char in[4]);
uint64_t state_be64_get(const unsigned char in[8]);

#endif
