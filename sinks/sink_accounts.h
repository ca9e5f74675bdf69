/*
 * sink_accounts.h — the accounts a target holds in the subtree (or the
 * resource type) a sink manages, as listed by the sink cores for
 * `idstream reconcile`: what it is called, how to remove it, and the
 * employee id it carries, if any.  Whether an account is managed is the
 * sink loop's decision (cmd/sink.c), not the core's: an account is managed
 * when the sink has applied a version for the employee id it carries.
 *
 * Threading: a list belongs to one thread.
 */
#ifndef IDSTREAM_SINK_ACCOUNTS_H
#define IDSTREAM_SINK_ACCOUNTS_H

#include <stddef.h>

typedef struct sink_account {
	char *ref;         /* what the core's remove takes: a DN, a SCIM id */
	char *name;        /* uid, sAMAccountName, userName; NULL when none */
	char *employee_id; /* employeeNumber, employeeID, externalId; NULL: none */
} sink_account_t;

typedef struct sink_account_list {
	sink_account_t *v;
	size_t n, cap;
} sink_account_list_t;

void sink_account_list_init(sink_account_list_t *l);
/* Frees every account and the array; the list is empty afterwards. */
void sink_account_list_fini(sink_account_list_t *l);
/* Appends copies of the strings (name and employee_id may be NULL; an empty
 * employee_id counts as none).  0 or ID_ENOMEM. */
int sink_account_list_add(sink_account_list_t *l, const char *ref, const char *name,
                          const char *employee_id);

#endif
