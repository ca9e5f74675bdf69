/*
 * watch.c — the export drop folder (see watch.h): scan, wait for files to
 * settle, process each once in arrival order, record, move aside.
 *
 * Invariant: a file leaves DIR only after its outcome is final — processed
 * and recorded (done/), or refused with its reason written (failed/).
 * Threading: single-threaded.
 */
#include "ingest/watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/failpoint.h"
#include "common/log.h"

#define LOG_COMP "ingest-watch"

/* A file seen in DIR, with what it looked like and since when. */
typedef struct cand {
	char *name;
	off_t size;
	struct timespec mtime;
	ino_t ino;
	int64_t stable_since; /* monotonic ms when size/mtime were last seen to change */
	bool seen;            /* in the latest scan */
} cand_t;

typedef struct watcher {
	const watch_opts_t *o;
	watch_report_t *rep;
	cand_t *c;
	size_t n, cap;
	char *done_dir, *failed_dir;
} watcher_t;

bool watch_error_refuses_file(int code)
{
	return code == ID_EPARSE || code == ID_EIO || code == ID_EINVALID ||
	       code == ID_ETHRESHOLD || code == ID_ETRUNCATED;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

bool watch_name_eligible(const char *name)
{
	static const char *const partial[] = {
	    ".tmp", ".part", ".partial", ".filepart", ".crdownload", "~", ".error"};
	if (name[0] == '.' || name[0] == '\0')
		return false;
	for (size_t i = 0; i < sizeof(partial) / sizeof(*partial); i++)
		if (ends_with(name, partial[i]))
			return false;
	return true;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool stop_requested(const watch_opts_t *o)
{
	return o->stop != NULL && *o->stop != 0;
}

/* Sleeps ms in short steps so a stop request is noticed quickly. */
static void nap(const watch_opts_t *o, int64_t ms)
{
	int64_t end = mono_ms() + ms;
	while (!stop_requested(o) && mono_ms() < end) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	if (p != NULL)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static int ensure_dir(const char *path, id_err_t *err)
{
	if (mkdir(path, 0750) == 0 || errno == EEXIST) {
		struct stat st;
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
		return id_err_set(err, ID_EIO, "%s exists and is not a folder", path);
	}
	return id_err_set(err, ID_EIO, "creating %s: %s", path, strerror(errno));
}

/* Makes renames into dir durable. */
static void sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static int sha256_file(const char *path, char hex[65], id_err_t *err)
{
	int rc = 0;
	unsigned char md[32], buf[65536];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		rc = id_err_set(err, ID_EIO, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		EVP_DigestUpdate(ctx, buf, n);
	if (ferror(f)) {
		rc = id_err_set(err, ID_EIO, "%s: read error", path);
		goto out;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
out:
	if (f != NULL)
		fclose(f);
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* ---- candidates ----------------------------------------------------------------- */

static cand_t *cand_find(watcher_t *w, const char *name)
{
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->c[i].name, name) == 0)
			return &w->c[i];
	return NULL;
}

static void cand_remove(watcher_t *w, cand_t *c)
{
	free(c->name);
	*c = w->c[--w->n];
}

/* Reads DIR: new files are added, changed ones restart their settle time,
 * vanished ones are dropped. */
static int scan(watcher_t *w, id_err_t *err)
{
	const watch_opts_t *o = w->o;
	DIR *d = opendir(o->dir);
	if (d == NULL)
		return id_err_set(err, ID_EIO, "watching %s: %s", o->dir,
		                  strerror(errno));
	for (size_t i = 0; i < w->n; i++)
		w->c[i].seen = false;
	int64_t now = mono_ms();
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		if (!watch_name_eligible(name))
			continue;
		if (o->pattern != NULL && o->pattern[0] != '\0' &&
		    fnmatch(o->pattern, name, 0) != 0)
			continue;
		struct stat st;
		char *p = path_join(o->dir, name);
		if (p == NULL) {
			closedir(d);
			return id_err_set(err, ID_ENOMEM, "out of memory");
		}
		int src = lstat(p, &st);
		free(p);
		if (src != 0 || !S_ISREG(st.st_mode))
			continue;
		cand_t *c = cand_find(w, name);
		if (c == NULL) {
			if (w->n == w->cap) {
				size_t nc = w->cap ? w->cap * 2 : 16;
				cand_t *nv = realloc(w->c, nc * sizeof(*nv));
				if (nv == NULL) {
					closedir(d);
					return id_err_set(err, ID_ENOMEM,
					                  "out of memory");
				}
				w->c = nv;
				w->cap = nc;
			}
			c = &w->c[w->n];
			memset(c, 0, sizeof(*c));
			if ((c->name = strdup(name)) == NULL) {
				closedir(d);
				return id_err_set(err, ID_ENOMEM, "out of memory");
			}
			w->n++;
			c->stable_since = now;
		} else if (c->size != st.st_size || c->ino != st.st_ino ||
		           c->mtime.tv_sec != st.st_mtim.tv_sec ||
		           c->mtime.tv_nsec != st.st_mtim.tv_nsec) {
			c->stable_since = now;
		}
		c->size = st.st_size;
		c->ino = st.st_ino;
		c->mtime = st.st_mtim;
		c->seen = true;
	}
	closedir(d);
	for (size_t i = 0; i < w->n;)
		if (!w->c[i].seen)
			cand_remove(w, &w->c[i]);
		else
			i++;
	return 0;
}

static int cand_cmp(const void *a, const void *b)
{
	const cand_t *x = a, *y = b;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* ---- moving aside ---------------------------------------------------------------- */

/* Renames DIR/name into dest/, as name or, when taken, name.N.  *final
 * (malloc'd) is the new path. */
static int move_to(watcher_t *w, const char *name, const char *dest, char **final,
                   id_err_t *err)
{
	int rc = 0;
	char *from = path_join(w->o->dir, name), *to = NULL;
	*final = NULL;
	if (from == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	for (unsigned i = 0; i < 10000; i++) {
		id_buf_t b = ID_BUF_INIT;
		free(to);
		if (i == 0)
			id_buf_printf(&b, "%s/%s", dest, name);
		else
			id_buf_printf(&b, "%s/%s.%u", dest, name, i);
		id_buf_append_u8(&b, 0);
		to = (char *)b.data;
		if (to == NULL) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
		struct stat st;
		if (lstat(to, &st) != 0 && errno == ENOENT)
			break;
	}
	if (rename(from, to) != 0) {
		rc = id_err_set(err, ID_EIO, "moving %s to %s: %s", from, to,
		                strerror(errno));
		goto out;
	}
	sync_dir(dest);
	sync_dir(w->o->dir);
	*final = to;
	to = NULL;
out:
	free(from);
	free(to);
	return rc;
}

/* Writes <failed_path>.error (through a temporary file) with the reason. */
static int write_error(const char *failed_path, const id_err_t *why, id_err_t *err)
{
	int rc = 0;
	FILE *f = NULL;
	id_buf_t tmp = ID_BUF_INIT, fin = ID_BUF_INIT;
	id_buf_printf(&tmp, "%s.error.tmp", failed_path);
	id_buf_append_u8(&tmp, 0);
	id_buf_printf(&fin, "%s.error", failed_path);
	id_buf_append_u8(&fin, 0);
	if (tmp.data == NULL || fin.data == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	f = fopen((const char *)tmp.data, "w");
	if (f == NULL || fprintf(f, "%s: %s\n", id_err_name(why->code), why->msg) < 0 ||
	    fflush(f) != 0 || fsync(fileno(f)) != 0) {
		rc = id_err_set(err, ID_EIO, "writing %s: %s", (const char *)tmp.data,
		                strerror(errno));
		goto out;
	}
	if (rename((const char *)tmp.data, (const char *)fin.data) != 0)
		rc = id_err_set(err, ID_EIO, "writing %s: %s", (const char *)fin.data,
		                strerror(errno));
out:
	if (f != NULL)
		fclose(f);
	id_buf_fini(&tmp);
	id_buf_fini(&fin);
	return rc;
}

/* ---- state ---------------------------------------------------------------------- */

static int mark_key(id_buf_t *k, const char *name)
{
	id_buf_reset(k);
	return id_buf_append(k, "m/", 2) | id_buf_append_str(k, name) ? ID_ENOMEM : 0;
}

/* *yes when name with this content was processed but not moved (a crash). */
static int was_processed(watcher_t *w, const char *name, const char hex[65], bool *yes,
                         id_err_t *err)
{
	id_buf_t k = ID_BUF_INIT, v = ID_BUF_INIT;
	int rc = mark_key(&k, name);
	*yes = false;
	if (rc != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	rc = state_store_get_buf(w->o->store, k.data, k.len, &v, err);
	if (rc == 0)
		*yes = v.len == 64 && memcmp(v.data, hex, 64) == 0;
	else if (rc == ID_ENOTFOUND)
		rc = 0;
out:
	id_buf_fini(&k);
	id_buf_fini(&v);
	return rc;
}

static int record_processed(watcher_t *w, const char *name, const char hex[65],
                            id_err_t *err)
{
	int rc = 0;
	id_buf_t k = ID_BUF_INIT, v = ID_BUF_INIT;
	state_batch_t *b = state_batch_create();
	if (b == NULL || id_buf_append(&k, "f/", 2) != 0 ||
	    id_buf_append(&k, hex, 64) != 0 ||
	    id_buf_append_be64(&v, (uint64_t)wall_ms()) != 0 ||
	    id_buf_append_str(&v, name) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	state_batch_put(b, k.data, k.len, v.data, v.len);
	if (mark_key(&k, name) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	state_batch_put(b, k.data, k.len, hex, 64);
	rc = state_batch_write(w->o->store, b, true, err);
out:
	state_batch_destroy(b);
	id_buf_fini(&k);
	id_buf_fini(&v);
	return rc;
}

static int unmark(watcher_t *w, const char *name, id_err_t *err)
{
	id_buf_t k = ID_BUF_INIT;
	int rc = mark_key(&k, name);
	if (rc == 0)
		rc = state_store_delete(w->o->store, k.data, k.len, err);
	else
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
	id_buf_fini(&k);
	return rc;
}

/* ---- one file ------------------------------------------------------------------- */

/*
 * Handles one ready file.  0 when its outcome is final (it left DIR);
 * otherwise the error that keeps it in DIR (to be retried).
 */
static int handle(watcher_t *w, const char *name, id_err_t *err)
{
	int rc = 0;
	char hex[65] = {0}, summary[512] = "";
	char *path = path_join(w->o->dir, name), *moved = NULL;
	bool already = false;
	id_err_t perr = {0};
	if (path == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	if ((rc = sha256_file(path, hex, err)) != 0 ||
	    (rc = was_processed(w, name, hex, &already, err)) != 0)
		goto out;
	if (already) {
		if ((rc = move_to(w, name, w->done_dir, &moved, err)) != 0 ||
		    (rc = unmark(w, name, err)) != 0)
			goto out;
		w->rep->recovered++;
		id_log_info(LOG_COMP,
		            "%s was processed before an interruption; moved to %s "
		            "without publishing again",
		            name, moved);
		goto out;
	}
	int prc = w->o->process(w->o->opaque, path, summary, sizeof(summary), &perr);
	if (prc == 0) {
		if ((rc = record_processed(w, name, hex, err)) != 0)
			goto out;
		id_failpoint_crash("watch.after_record");
		if ((rc = move_to(w, name, w->done_dir, &moved, err)) != 0 ||
		    (rc = unmark(w, name, err)) != 0)
			goto out;
		w->rep->processed++;
		id_log_info(LOG_COMP, "%s processed (sha256 %.12s): %s; moved to %s",
		            name, hex, summary[0] ? summary : "ok", moved);
		goto out;
	}
	if (perr.code == 0)
		id_err_set(&perr, prc, "%s", id_err_str(prc));
	if (!watch_error_refuses_file(prc)) {
		rc = id_err_set(err, prc, "%s", perr.msg);
		id_err_wrap(err, "%s stays in %s and is tried again", name, w->o->dir);
		goto out;
	}
	if ((rc = move_to(w, name, w->failed_dir, &moved, err)) != 0 ||
	    (rc = write_error(moved, &perr, err)) != 0)
		goto out;
	w->rep->failed++;
	id_log_error(LOG_COMP, "%s refused, moved to %s: %s", name, moved, perr.msg);
out:
	free(path);
	free(moved);
	return rc;
}

/*
 * One round: scan, then handle the settled files in order.  *pending says
 * how many candidates are left in DIR afterwards.  An error means a file
 * must be retried (or DIR/state failed).
 */
static int round_once(watcher_t *w, size_t *pending, id_err_t *err)
{
	int rc;
	*pending = 0;
	if ((rc = scan(w, err)) != 0)
		return rc;
	if (w->n > 1)
		qsort(w->c, w->n, sizeof(*w->c), cand_cmp);
	int64_t now = mono_ms();
	int64_t settle = w->o->settle_ms > 0 ? w->o->settle_ms : 2000;
	while (w->n > 0 && !stop_requested(w->o)) {
		cand_t *c = &w->c[0];
		/* Later files wait for an earlier, unfinished one. */
		if (now - c->stable_since < settle)
			break;
		if ((rc = handle(w, c->name, err)) != 0) {
			*pending = w->n;
			return rc;
		}
		free(c->name);
		memmove(c, c + 1, (w->n - 1) * sizeof(*c));
		w->n--;
	}
	*pending = w->n;
	return 0;
}

int watch_run(const watch_opts_t *o, watch_report_t *rep, id_err_t *err)
{
	int rc = 0;
	watch_report_t local;
	watcher_t w = {o, rep != NULL ? rep : &local, NULL, 0, 0, NULL, NULL};
	memset(w.rep, 0, sizeof(*w.rep));
	if (o == NULL || o->dir == NULL || o->store == NULL || o->process == NULL)
		return id_err_set(err, ID_EINVALID,
		                  "watch: folder, store and processor are required");
	int64_t settle = o->settle_ms > 0 ? o->settle_ms : 2000;
	int64_t interval = o->interval_ms > 0 ? o->interval_ms : 1000;
	if ((w.done_dir = path_join(o->dir, "done")) == NULL ||
	    (w.failed_dir = path_join(o->dir, "failed")) == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
		goto out;
	}
	struct stat st;
	errno = 0;
	if (stat(o->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		rc = id_err_set(err, ID_EIO, "watching %s: %s", o->dir,
		                errno != 0 ? strerror(errno) : "not a folder");
		goto out;
	}
	if ((rc = ensure_dir(w.done_dir, err)) != 0 ||
	    (rc = ensure_dir(w.failed_dir, err)) != 0)
		goto out;
	/* With once: a file is complete only after settle_ms without change,
	 * so wait for that; but not forever for a writer that never ends. */
	int64_t give_up = mono_ms() + settle * 11;
	while (!stop_requested(o)) {
		size_t pending = 0;
		id_err_t rerr = {0};
		int r = round_once(&w, &pending, &rerr);
		if (r != 0) {
			if (o->once) {
				w.rep->waiting = pending;
				rc = r;
				if (err != NULL)
					*err = rerr;
				goto out;
			}
			/* Kafka or the state store: the next round tries again. */
			id_log_error(LOG_COMP, "%s", rerr.msg);
		}
		if (o->once && (pending == 0 || mono_ms() > give_up)) {
			w.rep->waiting = pending;
			break;
		}
		/* With files waiting to settle, look again sooner. */
		int64_t wait = interval;
		if (pending > 0 && settle / 4 < wait)
			wait = settle / 4 > 0 ? settle / 4 : 1;
		nap(o, wait);
	}
out:
	for (size_t i = 0; i < w.n; i++)
		free(w.c[i].name);
	free(w.c);
	free(w.done_dir);
	free(w.failed_dir);
	return rc;
}
