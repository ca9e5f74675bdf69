/*
 * sink_targets.h — the kinds of target the generic sink loop (cmd/sink.c)
 * can drive.  Each kind maps its configuration options to its core's
 * options struct, reads its secret from a file or the environment, and
 * adapts the core's open/apply/writes/close to one interface.
 *
 * Contract of apply (same for every core): 0 when result holds the final
 * outcome of this desired version (FAILED included); non-zero when the
 * target could not be reached — the loop retries the same version.
 *
 * plan is apply without writes, for `idstream reconcile` without --repair:
 * result gets the operations apply would do (outcome APPLIED) or none
 * (NOOP).  A kind whose core cannot plan leaves it NULL.
 *
 * accounts lists every account of the target's managed subtree (people
 * OU, SCIM Users) with the employee id it carries, so reconcile can name
 * the accounts idstream does not manage; remove deletes one of them.
 *
 * The operator commands that travel to running sinks over
 * <prefix>.sink.control (approve, reject, sink retry, reconcile) are in
 * cmd/approve.c; the message format is described there and in cmd/sink.c.
 */
#ifndef IDSTREAM_SINK_TARGETS_H
#define IDSTREAM_SINK_TARGETS_H

#include <stdint.h>

#include "cmd/cli.h"
#include "common/config.h"
#include "common/err.h"
#include "schemas/model.h"
#include "sinks/sink_accounts.h"

typedef struct sink_target_ops {
	const char *kind;       /* "ldap", "ad", "scim" */
	const char *target_key; /* config option holding the target name */
	void *(*open)(const id_config_t *cfg, id_err_t *err);
	int (*apply)(void *h, const desired_identity_t *d, sink_result_t *r,
	             id_err_t *err);
	uint64_t (*writes)(const void *h);
	void (*close)(void *h);
	/* Retry-After of the target's last refusal in ms, 0 when none; NULL
	 * when the kind never gives one. */
	int64_t (*retry_after_ms)(const void *h);
	int (*plan)(void *h, const desired_identity_t *d, sink_result_t *r,
	            id_err_t *err); /* NULL: no dry run */
	/* The accounts in the target's managed subtree (reconcile); the
	 * adapter inits and fills out.  0 or non-zero when the target could
	 * not be reached. */
	int (*accounts)(void *h, sink_account_list_t *out, id_err_t *err);
	/* Removes one account listed by accounts (its ref): an account no
	 * employee owns, with reconcile.delete_unmanaged. */
	int (*remove)(void *h, const char *ref, id_err_t *err);
	/* Lets handle h work together with handle h0 of the same sink (each
	 * used by its own thread); NULL when the kind has nothing to share. */
	void (*share)(void *h, void *h0);
	/* Batches (both NULL when the kind has none): batch_begin(h0) before
	 * the applies of a batch of distinct employees run (through h0 and
	 * the handles shared with it), batch_end(h0) after them, in the
	 * loop's thread.  A core may leave writes of those applies to
	 * batch_end (ldap: member additions, one modify per group), which
	 * then completes their results; a result it left DEFERRED is applied
	 * again (the target became unreachable before its writes were made).
	 * batch_end returns 0 or ID_ENOMEM. */
	void (*batch_begin)(void *h0);
	int (*batch_end)(void *h0, id_err_t *err);
	const char *help; /* what `idstream sink KIND --help` says about options */
} sink_target_ops_t;

/* The ops of kind, or NULL when unknown. */
const sink_target_ops_t *sink_target_find(const char *kind);
/* "ldap, ad, scim" — for messages. */
const char *sink_target_kinds(void);

/* `idstream sink retry TARGET [EMPLOYEE_ID...]` (cmd/approve.c); argv[0]
 * is "retry".  Returns an exit code. */
int sink_control_retry(cli_t *cli, int argc, char **argv);

#endif
