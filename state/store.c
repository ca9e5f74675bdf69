/*
 * store.c — RocksDB behind the state_* API (see store.h).
 *
 * Invariants: every RocksDB error string is freed here and reported as
 * ID_ESTATE "state store <path>: <operation>: <reason>"; callers never see a
 * RocksDB type.  An iterator owns the upper-bound buffer its read options
 * point to, because RocksDB keeps the pointer, not a copy.
 *
 * Threading: see store.h; no global state.
 */
#include "state/store.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct state_cache {
	rocksdb_cache_t *cache;
};

struct state_store {
	rocksdb_t *db;
	rocksdb_options_t *options;
	rocksdb_readoptions_t *ropts;
	rocksdb_writeoptions_t *wopts;       /* WAL, no fsync */
	rocksdb_writeoptions_t *wopts_sync;  /* WAL + fsync */
	rocksdb_writeoptions_t *wopts_nowal; /* memtable only */
	char *path;
	char *scratch; /* secondary instance: its private folder, else NULL */
	int mode;      /* 0: the read-write owner, else a state_store_reader_t */
};

struct state_batch {
	rocksdb_writebatch_t *wb;
};

struct state_iter {
	state_store_t *store;
	rocksdb_readoptions_t *ropts;
	rocksdb_iterator_t *it;
	unsigned char *upper; /* exclusive upper bound, NULL when unbounded */
	bool started;
	bool done; /* RocksDB asserts on Next() of an invalid iterator */
};

/* Consumes RocksDB's malloc'd error string. */
static int store_err(id_err_t *err, const char *path, const char *what, char *rerr)
{
	id_err_set(err, ID_ESTATE, "state store %s: %s: %s", path, what,
	           rerr != NULL ? rerr : "unknown error");
	rocksdb_free(rerr);
	return ID_ESTATE;
}

/*
 * An LRU cache with few shards.  RocksDB's default splits even a small cache
 * into 64 shards of capacity/64; a block larger than its shard's share is
 * evicted as soon as it is released, so every read pays for reading and
 * decompressing it again.  Shards of at least 4 MB keep that from happening
 * to any block the tables below write (data 8 KB, index and filter
 * partitions 4 KB, top levels pinned).
 */
static rocksdb_cache_t *store_cache_new(size_t capacity)
{
	int bits = 0;
	while (bits < 4 && (capacity >> (bits + 1)) >= ((size_t)4 << 20))
		bits++;
	rocksdb_lru_cache_options_t *o = rocksdb_lru_cache_options_create();
	if (o == NULL)
		return NULL;
	rocksdb_lru_cache_options_set_capacity(o, capacity);
	rocksdb_lru_cache_options_set_num_shard_bits(o, bits);
	rocksdb_cache_t *c = rocksdb_cache_create_lru_opts(o);
	rocksdb_lru_cache_options_destroy(o);
	return c;
}

state_cache_t *state_cache_create(size_t capacity)
{
	state_cache_t *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->cache = store_cache_new(capacity);
	if (c->cache == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

void state_cache_destroy(state_cache_t *c)
{
	if (c == NULL)
		return;
	rocksdb_cache_destroy(c->cache);
	free(c);
}

/* mkdir -p of the parent directories of path (RocksDB creates only the last). */
static int store_mkdir_parents(const char *path, id_err_t *err)
{
	int rc = 0;
	char *p = strdup(path);
	if (p == NULL)
		return id_err_set(err, ID_ENOMEM, "state store %s: out of memory", path);
	char *slash = strrchr(p, '/');
	if (slash == NULL || slash == p)
		goto out;
	*slash = '\0';
	for (char *q = p + 1; *q != '\0'; q++) {
		if (*q != '/')
			continue;
		*q = '\0';
		if (mkdir(p, 0750) != 0 && errno != EEXIST) {
			rc = id_err_set(err, ID_EIO,
			                "state store %s: cannot create %s: %s", path, p,
			                strerror(errno));
			goto out;
		}
		*q = '/';
	}
	if (mkdir(p, 0750) != 0 && errno != EEXIST)
		rc = id_err_set(err, ID_EIO, "state store %s: cannot create %s: %s", path,
		                p, strerror(errno));
out:
	free(p);
	return rc;
}

/*
 * The options every store is opened with (see store.h on memory).  On
 * success *private_cache holds the cache the caller must release after the
 * open (the table factory keeps its own reference), or NULL when opts
 * supplied a shared one.
 */
static int store_options_init(state_store_t *s, const state_store_opts_t *opts,
                              rocksdb_cache_t **private_cache, id_err_t *err)
{
	size_t cache_bytes = STATE_STORE_DEFAULT_CACHE_BYTES;
	size_t wbuf_bytes = STATE_STORE_DEFAULT_WRITE_BUFFER_BYTES;
	if (opts != NULL && opts->cache_bytes != 0)
		cache_bytes = opts->cache_bytes;
	if (opts != NULL && opts->write_buffer_bytes != 0)
		wbuf_bytes = opts->write_buffer_bytes;

	*private_cache = NULL;
	s->options = rocksdb_options_create();
	s->ropts = rocksdb_readoptions_create();
	s->wopts = rocksdb_writeoptions_create();
	s->wopts_sync = rocksdb_writeoptions_create();
	s->wopts_nowal = rocksdb_writeoptions_create();
	rocksdb_writeoptions_disable_WAL(s->wopts_nowal, 1);
	rocksdb_block_based_table_options_t *bbto = rocksdb_block_based_options_create();
	rocksdb_writeoptions_set_sync(s->wopts_sync, 1);

	rocksdb_options_set_create_if_missing(s->options, 1);
	/* Two memtables of half the budget each; the total is the hard cap. */
	rocksdb_options_set_write_buffer_size(s->options, wbuf_bytes / 2);
	rocksdb_options_set_max_write_buffer_number(s->options, 2);
	rocksdb_options_set_db_write_buffer_size(s->options, wbuf_bytes);
	/* Table readers hold memory outside the cache: keep their number modest. */
	rocksdb_options_set_max_open_files(s->options, 256);
	/* RocksDB's own LOG files: warnings only, and not many of them. */
	rocksdb_options_set_info_log_level(s->options, 2 /* WARN */);
	rocksdb_options_set_keep_log_file_num(s->options, 3);
	rocksdb_options_set_max_log_file_size(s->options, 1 << 20);

	if (opts != NULL && opts->cache != NULL) {
		rocksdb_block_based_options_set_block_cache(bbto, opts->cache->cache);
	} else {
		*private_cache = store_cache_new(cache_bytes);
		if (*private_cache == NULL) {
			rocksdb_block_based_options_destroy(bbto);
			return id_err_set(err, ID_ENOMEM, "state store %s: out of memory",
			                  s->path);
		}
		rocksdb_block_based_options_set_block_cache(bbto, *private_cache);
	}
	/*
	 * Index and filter blocks count against the cache instead of growing
	 * without bound with the data.  They are partitioned (two-level index,
	 * partitioned Bloom filters): a table's monolithic index grows with
	 * its size, and once it no longer fits in a cache shard every point
	 * lookup re-reads and decompresses all of it.  The small top levels
	 * and L0's blocks stay pinned so lookups on fresh data do not thrash.
	 */
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(bbto, 1);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(
	    bbto, 1);
	rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(bbto, 1);
	rocksdb_block_based_options_set_pin_top_level_index_and_filter(bbto, 1);
	rocksdb_block_based_options_set_index_type(
	    bbto, rocksdb_block_based_table_index_type_two_level_index_search);
	rocksdb_block_based_options_set_partition_filters(bbto, 1);
	rocksdb_block_based_options_set_metadata_block_size(bbto, 4096);
	/* Values (employee records, entries) are a few hundred bytes to a few
	 * KB: 8 KB blocks hold several, halving the index. */
	rocksdb_block_based_options_set_block_size(bbto, 8192);
	/* Ownership of the filter policy passes to the table options. */
	rocksdb_block_based_options_set_filter_policy(
	    bbto, rocksdb_filterpolicy_create_bloom(10));
	rocksdb_options_set_block_based_table_factory(s->options, bbto);
	rocksdb_block_based_options_destroy(bbto);
	/* L0 and L1 hold the recently written data, rewritten by every flush
	 * and L0→L1 compaction and read by most lookups: uncompressed there.
	 * Deeper levels use LZ4, several times faster to decompress than the
	 * default Snappy. */
	int levels[7] = {rocksdb_no_compression,  rocksdb_no_compression,
	                 rocksdb_lz4_compression, rocksdb_lz4_compression,
	                 rocksdb_lz4_compression, rocksdb_lz4_compression,
	                 rocksdb_lz4_compression};
	rocksdb_options_set_num_levels(s->options, 7);
	rocksdb_options_set_compression_per_level(s->options, levels, 7);
	/* Most lookups are for keys that the memtables do not hold: a Bloom
	 * filter over whole keys answers those without a skiplist search. */
	rocksdb_options_set_memtable_prefix_bloom_size_ratio(s->options, 0.02);
	rocksdb_options_set_memtable_whole_key_filtering(s->options, 1);
	return 0;
}

int state_store_open(const char *path, const state_store_opts_t *opts,
                     state_store_t **out, id_err_t *err)
{
	int rc = 0;
	char *rerr = NULL;
	state_store_t *s = NULL;
	rocksdb_cache_t *private_cache = NULL;

	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return id_err_set(err, ID_EINVALID, "state store: empty path");
	if ((rc = store_mkdir_parents(path, err)) != 0)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL || (s->path = strdup(path)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "state store %s: out of memory", path);
		goto out;
	}
	if ((rc = store_options_init(s, opts, &private_cache, err)) != 0)
		goto out;
	s->db = rocksdb_open(s->options, path, &rerr);
	if (rerr != NULL) {
		rc = store_err(err, path, "open", rerr);
		goto out;
	}
	*out = s;
	s = NULL;
out:
	/* The table factory holds its own reference to the cache. */
	if (private_cache != NULL)
		rocksdb_cache_destroy(private_cache);
	state_store_close(s);
	return rc;
}

/* Removes the secondary instance's scratch folder and its few files. */
static void store_rmdir_scratch(const char *dir)
{
	DIR *d = opendir(dir);
	if (d != NULL) {
		struct dirent *e;
		char p[PATH_MAX];
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			if (snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) <
			    (int)sizeof(p))
				unlink(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

bool state_store_exists(const char *path)
{
	char current[PATH_MAX];
	return path != NULL && path[0] != '\0' &&
	       snprintf(current, sizeof(current), "%s/CURRENT", path) <
	           (int)sizeof(current) &&
	       access(current, F_OK) == 0;
}

int state_store_open_reader(const char *path, const state_store_opts_t *opts,
                            state_store_reader_t mode, state_store_t **out, id_err_t *err)
{
	int rc = 0;
	char *rerr = NULL;
	state_store_t *s = NULL;
	rocksdb_cache_t *private_cache = NULL;

	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return id_err_set(err, ID_EINVALID, "state store: empty path");
	/* Both modes fail on a missing store anyway, but with a RocksDB message
	 * that does not tell "absent" from "broken". */
	if (!state_store_exists(path))
		return ID_ENOTFOUND;
	s = calloc(1, sizeof(*s));
	if (s == NULL || (s->path = strdup(path)) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "state store %s: out of memory", path);
		goto out;
	}
	if ((rc = store_options_init(s, opts, &private_cache, err)) != 0)
		goto out;
	rocksdb_options_set_create_if_missing(s->options, 0);
	/*
	 * Every table file is opened now and kept open: the writer deletes
	 * files that compaction replaced, and a file opened before its unlink
	 * stays readable, so the reader's view never loses a table under it.
	 */
	rocksdb_options_set_max_open_files(s->options, -1);
	if (mode == STATE_STORE_SECONDARY) {
		const char *tmp = getenv("TMPDIR");
		char dir[PATH_MAX];
		if (snprintf(dir, sizeof(dir), "%s/idstream-secondary-XXXXXX",
		             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp") >=
		        (int)sizeof(dir) ||
		    mkdtemp(dir) == NULL) {
			rc = id_err_set(err, ID_EIO,
			                "state store %s: cannot create a folder for the "
			                "secondary instance: %s",
			                path, strerror(errno));
			goto out;
		}
		if ((s->scratch = strdup(dir)) == NULL) {
			rmdir(dir);
			rc = id_err_set(err, ID_ENOMEM, "state store %s: out of memory",
			                path);
			goto out;
		}
		s->db = rocksdb_open_as_secondary(s->options, path, s->scratch, &rerr);
	} else {
		s->db = rocksdb_open_for_read_only(s->options, path, 0, &rerr);
	}
	if (rerr != NULL) {
		rc = store_err(err, path,
		               mode == STATE_STORE_SECONDARY ? "open as secondary"
		                                             : "open read-only",
		               rerr);
		goto out;
	}
	s->mode = mode;
	*out = s;
	s = NULL;
out:
	if (private_cache != NULL)
		rocksdb_cache_destroy(private_cache);
	state_store_close(s);
	return rc;
}

int state_store_catch_up(state_store_t *s, id_err_t *err)
{
	char *rerr = NULL;
	if (s->mode != STATE_STORE_SECONDARY)
		return 0;
	rocksdb_try_catch_up_with_primary(s->db, &rerr);
	if (rerr != NULL)
		return store_err(err, s->path, "catch up with the primary", rerr);
	return 0;
}

void state_store_close(state_store_t *s)
{
	if (s == NULL)
		return;
	if (s->db != NULL)
		rocksdb_close(s->db);
	if (s->wopts_sync != NULL)
		rocksdb_writeoptions_destroy(s->wopts_sync);
	if (s->wopts_nowal != NULL)
		rocksdb_writeoptions_destroy(s->wopts_nowal);
	if (s->wopts != NULL)
		rocksdb_writeoptions_destroy(s->wopts);
	if (s->ropts != NULL)
		rocksdb_readoptions_destroy(s->ropts);
	if (s->options != NULL)
		rocksdb_options_destroy(s->options);
	if (s->scratch != NULL)
		store_rmdir_scratch(s->scratch);
	free(s->scratch);
	free(s->path);
	free(s);
}

const char *state_store_path(const state_store_t *s)
{
	return s->path;
}

int state_store_get(state_store_t *s, const void *key, size_t klen, void **val,
                    size_t *vlen, id_err_t *err)
{
	char *rerr = NULL;
	size_t n = 0;
	*val = NULL;
	*vlen = 0;
	char *v = rocksdb_get(s->db, s->ropts, key, klen, &n, &rerr);
	if (rerr != NULL)
		return store_err(err, s->path, "get", rerr);
	if (v == NULL)
		return ID_ENOTFOUND;
	/* Copy into our allocator's memory, NUL-terminated, so callers free()
	 * it like everything else and may treat text values as C strings. */
	unsigned char *copy = malloc(n + 1);
	if (copy == NULL) {
		rocksdb_free(v);
		return id_err_set(err, ID_ENOMEM, "state store %s: get: out of memory",
		                  s->path);
	}
	memcpy(copy, v, n);
	copy[n] = '\0';
	rocksdb_free(v);
	*val = copy;
	*vlen = n;
	return 0;
}

int state_store_get_buf(state_store_t *s, const void *key, size_t klen, id_buf_t *out,
                        id_err_t *err)
{
	char *rerr = NULL;
	size_t n = 0;
	id_buf_reset(out);
	/* Pinned: RocksDB hands out the block cache's bytes without a copy of
	 * its own; ours goes into the caller's reusable buffer. */
	rocksdb_pinnableslice_t *v =
	    rocksdb_get_pinned(s->db, s->ropts, key, klen, &rerr);
	if (rerr != NULL)
		return store_err(err, s->path, "get", rerr);
	if (v == NULL)
		return ID_ENOTFOUND;
	const char *data = rocksdb_pinnableslice_value(v, &n);
	int rc = 0;
	if (id_buf_reserve(out, n + 1) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "state store %s: get: out of memory",
		                s->path);
	} else {
		if (n > 0)
			memcpy(out->data, data, n);
		out->data[n] = '\0';
		out->len = n;
	}
	rocksdb_pinnableslice_destroy(v);
	return rc;
}

int state_store_put(state_store_t *s, const void *key, size_t klen, const void *val,
                    size_t vlen, id_err_t *err)
{
	char *rerr = NULL;
	rocksdb_put(s->db, s->wopts, key, klen, val, vlen, &rerr);
	if (rerr != NULL)
		return store_err(err, s->path, "put", rerr);
	return 0;
}

int state_store_delete(state_store_t *s, const void *key, size_t klen, id_err_t *err)
{
	char *rerr = NULL;
	rocksdb_delete(s->db, s->wopts, key, klen, &rerr);
	if (rerr != NULL)
		return store_err(err, s->path, "delete", rerr);
	return 0;
}

state_batch_t *state_batch_create(void)
{
	state_batch_t *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	b->wb = rocksdb_writebatch_create();
	if (b->wb == NULL) {
		free(b);
		return NULL;
	}
	return b;
}

void state_batch_destroy(state_batch_t *b)
{
	if (b == NULL)
		return;
	rocksdb_writebatch_destroy(b->wb);
	free(b);
}

void state_batch_put(state_batch_t *b, const void *key, size_t klen, const void *val,
                     size_t vlen)
{
	rocksdb_writebatch_put(b->wb, key, klen, val, vlen);
}

void state_batch_delete(state_batch_t *b, const void *key, size_t klen)
{
	rocksdb_writebatch_delete(b->wb, key, klen);
}

size_t state_batch_count(const state_batch_t *b)
{
	return (size_t)rocksdb_writebatch_count(b->wb);
}

void state_batch_clear(state_batch_t *b)
{
	rocksdb_writebatch_clear(b->wb);
}

int state_batch_write(state_store_t *s, state_batch_t *b, bool sync, id_err_t *err)
{
	char *rerr = NULL;
	rocksdb_write(s->db, sync ? s->wopts_sync : s->wopts, b->wb, &rerr);
	if (rerr != NULL)
		return store_err(err, s->path, "write batch", rerr);
	return 0;
}

int state_batch_write_unlogged(state_store_t *s, state_batch_t *b, id_err_t *err)
{
	char *rerr = NULL;
	rocksdb_write(s->db, s->wopts_nowal, b->wb, &rerr);
	if (rerr != NULL)
		return store_err(err, s->path, "write batch", rerr);
	return 0;
}

int state_store_flush(state_store_t *s, bool wait, id_err_t *err)
{
	char *rerr = NULL;
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
	if (fo == NULL)
		return id_err_set(err, ID_ENOMEM, "state store %s: flush: out of memory",
		                  s->path);
	rocksdb_flushoptions_set_wait(fo, wait ? 1 : 0);
	rocksdb_flush(s->db, fo, &rerr);
	rocksdb_flushoptions_destroy(fo);
	if (rerr != NULL)
		return store_err(err, s->path, "flush", rerr);
	return 0;
}

/*
 * The smallest key greater than every key starting with prefix: the prefix
 * with trailing 0xff bytes dropped and the last byte incremented.  Returns
 * false (unbounded) when the prefix is empty or all 0xff.
 */
static bool store_prefix_successor(const unsigned char *prefix, size_t plen,
                                   unsigned char *out, size_t *outlen)
{
	while (plen > 0 && prefix[plen - 1] == 0xff)
		plen--;
	if (plen == 0)
		return false;
	memcpy(out, prefix, plen);
	out[plen - 1]++;
	*outlen = plen;
	return true;
}

int state_iter_create(state_store_t *s, const void *prefix, size_t plen,
                      state_iter_t **out, id_err_t *err)
{
	int rc = 0;
	state_iter_t *it = NULL;
	*out = NULL;

	it = calloc(1, sizeof(*it));
	if (it == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "state store %s: iterator: out of memory",
		                s->path);
		goto out;
	}
	it->store = s;
	it->ropts = rocksdb_readoptions_create();
	if (plen > 0) {
		it->upper = malloc(plen);
		if (it->upper == NULL) {
			rc = id_err_set(err, ID_ENOMEM,
			                "state store %s: iterator: out of memory",
			                s->path);
			goto out;
		}
		size_t ulen = 0;
		if (store_prefix_successor(prefix, plen, it->upper, &ulen)) {
			rocksdb_readoptions_set_iterate_upper_bound(
			    it->ropts, (const char *)it->upper, ulen);
		} else {
			free(it->upper);
			it->upper = NULL;
		}
	}
	it->it = rocksdb_create_iterator(s->db, it->ropts);
	if (plen > 0)
		rocksdb_iter_seek(it->it, prefix, plen);
	else
		rocksdb_iter_seek_to_first(it->it);
	*out = it;
	it = NULL;
out:
	state_iter_destroy(it);
	return rc;
}

int state_iter_next(state_iter_t *it, const void **key, size_t *klen, const void **val,
                    size_t *vlen, id_err_t *err)
{
	if (it->done)
		return 0;
	if (it->started)
		rocksdb_iter_next(it->it);
	it->started = true;
	if (!rocksdb_iter_valid(it->it)) {
		it->done = true;
		char *rerr = NULL;
		rocksdb_iter_get_error(it->it, &rerr);
		if (rerr != NULL)
			return store_err(err, it->store->path, "iterate", rerr);
		return 0;
	}
	*key = rocksdb_iter_key(it->it, klen);
	*val = rocksdb_iter_value(it->it, vlen);
	return 1;
}

void state_iter_destroy(state_iter_t *it)
{
	if (it == NULL)
		return;
	if (it->it != NULL)
		rocksdb_iter_destroy(it->it);
	if (it->ropts != NULL)
		rocksdb_readoptions_destroy(it->ropts);
	free(it->upper);
	free(it);
}

void state_be32_put(unsigned char out[4], uint32_t v)
{
	out[0] = (unsigned char)(v >> 24);
	out[1] = (unsigned char)(v >> 16);
	out[2] = (unsigned char)(v >> 8);
	out[3] = (unsigned char)v;
}

void state_be64_put(unsigned char out[8], uint64_t v)
{
	for (int i = 0; i < 8; i++)
		out[i] = (unsigned char)(v >> (56 - 8 * i));
}

uint32_t state_be32_get(const unsigned char in[4])
{
	return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 |
	       (uint32_t)in[3];
}

uint64_t state_be64_get(const unsigned char in[8])
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | in[i];
	return v;
}
