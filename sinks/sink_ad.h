/*
 * sink_ad.h — applies desired identities to Active Directory (tested with a
 * Samba AD DC) over LDAPS.
 *
 * One call per desired identity: find the user object whose employeeID is
 * the employee id, resolve the manager's DN the same way, diff
 * (sinks/ad_diff.h) and apply the plan in order, recording every write in a
 * SinkResult.  Converging by diff makes it idempotent (a second apply
 * writes nothing) and finishes an apply cut short.  A new user gets a
 * random initial password (unicodePwd, in the same add that creates it),
 * which is appended to a delivery file and never logged.
 *
 * Only this file's implementation and sinks/sink_ldap.c include <ldap.h>;
 * the handle is opaque.  Thread safety: a sink_ad_t belongs to one thread
 * at a time; open one per worker thread.  The process must ignore SIGPIPE.
 */
#ifndef IDSTREAM_SINK_AD_H
#define IDSTREAM_SINK_AD_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "schemas/model.h"
#include "sinks/ad_diff.h"
#include "sinks/sink_accounts.h"

typedef struct sink_ad sink_ad_t;

/* Certificate checking of the TLS connection (libldap's REQUIRE_CERT). */
typedef enum {
	SINK_AD_TLS_DEMAND = 0, /* verify the certificate and host name (default) */
	SINK_AD_TLS_TRY,        /* verify if one is sent, fail on a bad one */
	SINK_AD_TLS_ALLOW,      /* request one, accept a bad one */
	SINK_AD_TLS_NEVER,      /* no checks: self-signed test DCs only */
} sink_ad_tls_check_t;

typedef struct sink_ad_opts {
	/* "ldaps://dc.example.test:636"; an ldap:// URL is upgraded with
	 * StartTLS before the bind, never used in clear. */
	const char *url;
	const char *bind_dn;       /* "Administrator@EXAMPLE.TEST" or a DN */
	const char *bind_password; /* copied, wiped at close, never logged */
	const char *base_dn;       /* the domain: sAMAccountName is unique in it */
	const char *people_dn;     /* users go below it (it must exist) */
	const char *groups_dn;     /* managed groups, directly below it (must exist) */
	const char *upn_suffix;    /* userPrincipalName = uid@upn_suffix */
	sink_ad_tls_check_t tls_check;
	const char *tls_ca_file; /* PEM bundle; NULL: the system's */
	/*
	 * Where initial passwords go: one line "employee_id TAB sAMAccountName
	 * TAB password" appended per created user, flushed to disk before the
	 * add is sent.  Created with mode 0600; refused if group/others can
	 * read it.  NULL: creating users fails (their password would be lost).
	 */
	const char *password_file;
	bool password_must_change; /* pwdLastSet=0: change at first logon */
	int timeout_ms;            /* connect and per-request; <= 0 means 10000 */
} sink_ad_opts_t;

/*
 * Connects (TLS) and binds (simple bind, LDAPv3, referrals off), so a wrong
 * URL, certificate or password is reported at start-up; a lost connection
 * is re-opened later by sink_ad_apply() itself.
 * Ownership: caller closes with sink_ad_close().  NULL on error (err says
 * which URL and why; the password never appears).
 */
sink_ad_t *sink_ad_open(const sink_ad_opts_t *opts, id_err_t *err);

/* Unbinds, wipes the password copy and frees.  NULL is a no-op. */
void sink_ad_close(sink_ad_t *s);

/*
 * Makes the directory match d and describes what was done in result
 * (fini'd and refilled: target "ad", employee id, version, outcome, ops,
 * error, at).
 *
 * Outcomes: APPLIED (at least one write), NOOP, FAILED (the directory
 * refused, or the input cannot be applied — e.g. "sAMAccountName x already
 * used by employee Y", in which case nothing was written for this employee).
 * Op names: create_ou, add, disable, modrdn, modify, group_add,
 * create_group, group_remove, enable, delete; plus the note
 * "manager_pending" (attribute "manager", new_value = the manager's
 * employee id) when the manager has no user yet.
 *
 * Returns 0 when result holds the final outcome for this desired version,
 * FAILED included (err is filled too).  Returns ID_ELDAP or ID_ETIMEOUT when
 * the directory could not be reached even after one reconnect (result says
 * FAILED; retry the same desired later).  ID_EINVALID for NULL arguments.
 */
int sink_ad_apply(sink_ad_t *s, const desired_identity_t *d, sink_result_t *result,
                  id_err_t *err);

/* Number of write requests (add, modify, modrdn, delete) sent so far. */
uint64_t sink_ad_writes(const sink_ad_t *s);

/*
 * Computes what sink_ad_apply() would do, without writing: reads the user,
 * resolves the manager and diffs (plan is the caller's, init'd; the
 * sAMAccountName check of apply is not made).  *manager_pending (may be
 * NULL) is set when the manager has no user.  0, ID_ELDAP/ID_ETIMEOUT, or
 * ID_EINVALID/ID_ECONFLICT (several users carry the employee id).
 */
int sink_ad_plan(sink_ad_t *s, const desired_identity_t *d, ad_diff_plan_t *plan,
                 bool *manager_pending, id_err_t *err);

/*
 * Lists every user object below people_dn (computers excepted) into out:
 * ref = DN, name = sAMAccountName, employee_id = employeeID.  Paged, so
 * the DC's MaxPageSize does not cut it.  0, ID_ELDAP/ID_ETIMEOUT
 * (unreachable: try later), ID_ENOMEM.
 */
int sink_ad_accounts(sink_ad_t *s, sink_account_list_t *out, id_err_t *err);

/*
 * Deletes the user dn (with its child objects: tree delete), e.g. one
 * listed by sink_ad_accounts() that no employee owns.  One already gone is
 * not an error.  0 or as sink_ad_accounts().
 */
int sink_ad_remove(sink_ad_t *s, const char *dn, id_err_t *err);

#endif
