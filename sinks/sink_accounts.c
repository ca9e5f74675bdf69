/*
 * sink_accounts.c — the account list of sink_accounts.h.
 *
 * Invariant: v[0..n) are filled, each ref non-NULL.
 * Threading: a list belongs to one thread.
 */
#include "sinks/sink_accounts.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

void sink_account_list_init(sink_account_list_t *l)
{
	l->v = NULL;
	l->n = l->cap = 0;
}

void sink_account_list_fini(sink_account_list_t *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].ref);
		free(l->v[i].name);
		free(l->v[i].employee_id);
	}
	free(l->v);
	sink_account_list_init(l);
}

static char *dup_or_null(const char *s)
{
	return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

int sink_account_list_add(sink_account_list_t *l, const char *ref, const char *name,
                          const char *employee_id)
{
	if (ref == NULL)
		return ID_EINVALID;
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 64;
		sink_account_t *nv = realloc(l->v, nc * sizeof(*nv));
		if (nv == NULL)
			return ID_ENOMEM;
		l->v = nv;
		l->cap = nc;
	}
	sink_account_t *a = &l->v[l->n];
	a->ref = strdup(ref);
	a->name = dup_or_null(name);
	a->employee_id = dup_or_null(employee_id);
	if (a->ref == NULL || (name != NULL && name[0] && a->name == NULL) ||
	    (employee_id != NULL && employee_id[0] && a->employee_id == NULL)) {
		free(a->ref);
		free(a->name);
		free(a->employee_id);
		return ID_ENOMEM;
	}
	l->n++;
	return 0;
}
