/*
 * export_diff.c — the pure export → events diff (see export_diff.h).
 *
 * The snapshot is an array sorted lazily (appends are O(1); the first lookup
 * after an out-of-order append sorts).  The diff merges the sorted snapshot
 * with the rows sorted by employee id, so it is O(n log n) and its output is
 * in id order by construction.
 */
#include "ingest/export_diff.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct export_snapshot {
	export_entry_t *items;
	size_t len;
	size_t cap;
	size_t active;
	bool sorted;
};

void export_entry_init(export_entry_t *e)
{
	memset(e, 0, sizeof(*e));
	id_attrs_init(&e->attrs);
}

void export_entry_fini(export_entry_t *e)
{
	if (e == NULL)
		return;
	free(e->employee_id);
	id_attrs_fini(&e->attrs);
	export_entry_init(e);
}

export_snapshot_t *export_snapshot_create(void)
{
	export_snapshot_t *s = calloc(1, sizeof(*s));
	if (s != NULL)
		s->sorted = true;
	return s;
}

void export_snapshot_destroy(export_snapshot_t *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->len; i++)
		export_entry_fini(&s->items[i]);
	free(s->items);
	free(s);
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const export_entry_t *)a)->employee_id,
	              ((const export_entry_t *)b)->employee_id);
}

static void snapshot_sort(export_snapshot_t *s)
{
	if (!s->sorted) {
		qsort(s->items, s->len, sizeof(*s->items), entry_cmp);
		s->sorted = true;
	}
}

const export_entry_t *export_snapshot_find(export_snapshot_t *s, const char *employee_id)
{
	snapshot_sort(s);
	size_t lo = 0, hi = s->len;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->items[mid].employee_id, employee_id);
		if (c == 0)
			return &s->items[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int export_snapshot_add(export_snapshot_t *s, const char *employee_id, bool terminated,
                        uint64_t seq, const id_attrs_t *attrs)
{
	bool in_order =
	    s->len == 0 || strcmp(s->items[s->len - 1].employee_id, employee_id) < 0;
	if (!in_order && export_snapshot_find(s, employee_id) != NULL)
		return ID_ECONFLICT;
	if (s->len == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 64;
		export_entry_t *n = realloc(s->items, ncap * sizeof(*n));
		if (n == NULL)
			return ID_ENOMEM;
		s->items = n;
		s->cap = ncap;
	}
	export_entry_t *e = &s->items[s->len];
	export_entry_init(e);
	if ((e->employee_id = strdup(employee_id)) == NULL ||
	    (attrs != NULL && id_attrs_copy(&e->attrs, attrs) != 0)) {
		export_entry_fini(e);
		return ID_ENOMEM;
	}
	e->terminated = terminated;
	e->seq = seq;
	s->len++;
	if (!terminated)
		s->active++;
	if (!in_order)
		s->sorted = false;
	return 0;
}

const export_entry_t *export_snapshot_entries(export_snapshot_t *s, size_t *n)
{
	snapshot_sort(s);
	*n = s->len;
	return s->items;
}

size_t export_snapshot_active_count(const export_snapshot_t *s)
{
	return s->active;
}

/* ---- diff ---------------------------------------------------------------- */

void export_diff_fini(export_diff_t *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->nchanges; i++) {
		employee_event_fini(&d->changes[i].event);
		export_entry_fini(&d->changes[i].entry);
	}
	free(d->changes);
	memset(d, 0, sizeof(*d));
}

static int rowp_cmp(const void *a, const void *b)
{
	const csv_row_t *x = *(const csv_row_t *const *)a;
	const csv_row_t *y = *(const csv_row_t *const *)b;
	return strcmp(x->employee_id, y->employee_id);
}

static int make_event_id(const export_diff_params_t *p, const char *employee_id,
                         employee_event_type_t type, uint64_t seq, char **out)
{
	int rc = ID_ENOMEM;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char h[32];
	char seqs[24];
	const char *type_name = employee_event_type_name(type);
	int seqn = snprintf(seqs, sizeof(seqs), "%llu", (unsigned long long)seq);
	/* NUL separators keep ("ab","c") and ("a","bc") apart. */
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, p->source, strlen(p->source) + 1) != 1 ||
	    EVP_DigestUpdate(md, p->file_sha256, strlen(p->file_sha256) + 1) != 1 ||
	    EVP_DigestUpdate(md, employee_id, strlen(employee_id) + 1) != 1 ||
	    EVP_DigestUpdate(md, type_name, strlen(type_name) + 1) != 1 ||
	    EVP_DigestUpdate(md, seqs, (size_t)seqn) != 1 ||
	    EVP_DigestFinal_ex(md, h, NULL) != 1)
		goto out;
	char *hex = malloc(33);
	if (hex == NULL)
		goto out;
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	*out = hex;
	rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

/* "<16 hex of the file digest>:<employee id>:<seq>"; malloc'd, NULL on ENOMEM. */
static char *source_event_id(const char *file_sha256, const char *employee_id,
                             uint64_t seq)
{
	size_t n = 16 + 1 + strlen(employee_id) + 1 + 20 + 1;
	char *s = malloc(n);
	if (s != NULL)
		snprintf(s, n, "%.16s:%s:%llu", file_sha256, employee_id,
		         (unsigned long long)seq);
	return s;
}

static const char *reason_of(employee_event_type_t t)
{
	switch (t) {
	case EV_HIRE:
		return "new in the HR export";
	case EV_UPDATE:
		return "changed in the HR export";
	case EV_TERMINATE:
		return "missing from the HR export";
	case EV_REHIRE:
		return "back in the HR export after a termination";
	default:
		return NULL;
	}
}

/*
 * Appends the change for one employee.  prev is the old entry (NULL for a
 * hire), row the new row (NULL for a termination).
 */
static int add_change(export_diff_t *d, const export_diff_params_t *p,
                      employee_event_type_t type, const char *employee_id,
                      const export_entry_t *prev, const csv_row_t *row)
{
	export_change_t *c = &d->changes[d->nchanges];
	employee_event_t *ev = &c->event;
	export_entry_t *en = &c->entry;
	uint64_t seq = prev != NULL ? prev->seq : 0;
	const char *reason = reason_of(type);

	employee_event_init(ev);
	export_entry_init(en);
	/* Counted first so export_diff_fini() frees a half-built change. */
	d->nchanges++;

	ev->type = type;
	ev->occurred_at = p->at_ms;
	ev->effective_at = p->at_ms;
	if (make_event_id(p, employee_id, type, seq, &ev->event_id) != 0 ||
	    (ev->source = strdup(p->source)) == NULL ||
	    (ev->source_event_id = source_event_id(p->file_sha256, employee_id, seq)) ==
	        NULL ||
	    (ev->employee_id = strdup(employee_id)) == NULL ||
	    (ev->actor = strdup(p->actor)) == NULL ||
	    (reason != NULL && (ev->reason = strdup(reason)) == NULL))
		return ID_ENOMEM;

	const id_attrs_t *now = row != NULL ? &row->attrs : NULL;
	const id_attrs_t *was = prev != NULL ? &prev->attrs : NULL;
	switch (type) {
	case EV_HIRE:
	case EV_REHIRE:
		if (id_attrs_copy(&ev->attributes, now) != 0)
			return ID_ENOMEM;
		break;
	case EV_UPDATE:
		for (size_t i = 0; i < now->len; i++) {
			const char *old = id_attrs_get(was, now->items[i].key);
			const char *cur = now->items[i].value;
			if (id_attrs_has(was, now->items[i].key) &&
			    (old == cur ||
			     (old != NULL && cur != NULL && strcmp(old, cur) == 0)))
				continue;
			if (id_attrs_set(&ev->attributes, now->items[i].key,
			                 now->items[i].value) != 0)
				return ID_ENOMEM;
		}
		break;
	default:
		break;
	}
	/* Attributes the employee had and the file no longer has are cleared
	 * (a REHIRE carries them too, so the record ends up as the file says
	 * whether the consumer merges or replaces). */
	if (type == EV_UPDATE || type == EV_REHIRE) {
		for (size_t i = 0; i < was->len; i++) {
			if (!id_attrs_has(now, was->items[i].key) &&
			    id_attrs_set(&ev->attributes, was->items[i].key, NULL) != 0)
				return ID_ENOMEM;
		}
	}

	if ((en->employee_id = strdup(employee_id)) == NULL)
		return ID_ENOMEM;
	en->seq = seq + 1;
	en->terminated = type == EV_TERMINATE;
	/* A terminated entry keeps its last attributes, so a rehire can tell
	 * which ones have gone since. */
	if (id_attrs_copy(&en->attrs, type == EV_TERMINATE ? was : now) != 0)
		return ID_ENOMEM;
	return 0;
}

int export_diff_compute(export_snapshot_t *prev, const csv_row_t *rows, size_t nrows,
                        const export_diff_params_t *params, export_diff_t *out,
                        id_err_t *err)
{
	int rc = 0;
	const csv_row_t **sorted = NULL;
	export_diff_t d = EXPORT_DIFF_INIT;

	if (params == NULL || params->source == NULL || params->file_sha256 == NULL ||
	    strlen(params->file_sha256) < 16 || params->actor == NULL)
		return id_err_set(
		    err, ID_EINVALID,
		    "export diff: source, file digest and actor are required");

	size_t nprev = 0;
	const export_entry_t *old = export_snapshot_entries(prev, &nprev);
	size_t maxchanges = nprev + nrows;
	sorted = malloc((nrows ? nrows : 1) * sizeof(*sorted));
	d.changes = calloc(maxchanges ? maxchanges : 1, sizeof(*d.changes));
	if (sorted == NULL || d.changes == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "export diff: out of memory");
		goto out;
	}
	for (size_t i = 0; i < nrows; i++)
		sorted[i] = &rows[i];
	qsort(sorted, nrows, sizeof(*sorted), rowp_cmp);
	d.known_active = export_snapshot_active_count(prev);

	size_t i = 0, j = 0;
	while (i < nprev || j < nrows) {
		int c;
		if (i == nprev)
			c = 1;
		else if (j == nrows)
			c = -1;
		else
			c = strcmp(old[i].employee_id, sorted[j]->employee_id);

		if (c < 0) { /* only in the snapshot */
			if (old[i].terminated) {
				d.still_terminated++;
			} else {
				rc = add_change(&d, params, EV_TERMINATE,
				                old[i].employee_id, &old[i], NULL);
				d.terminations++;
			}
			i++;
		} else if (c > 0) { /* only in the file */
			rc = add_change(&d, params, EV_HIRE, sorted[j]->employee_id, NULL,
			                sorted[j]);
			d.hires++;
			j++;
		} else {
			if (old[i].terminated) {
				rc = add_change(&d, params, EV_REHIRE, old[i].employee_id,
				                &old[i], sorted[j]);
				d.rehires++;
			} else if (!id_attrs_equal(&old[i].attrs, &sorted[j]->attrs)) {
				rc = add_change(&d, params, EV_UPDATE, old[i].employee_id,
				                &old[i], sorted[j]);
				d.updates++;
			} else {
				d.unchanged++;
			}
			i++;
			j++;
		}
		if (rc != 0) {
			rc = id_err_set(err, ID_ENOMEM, "export diff: out of memory");
			goto out;
		}
	}
	*out = d;
	memset(&d, 0, sizeof(d));
out:
	export_diff_fini(&d);
	free(sorted);
	return rc;
}
