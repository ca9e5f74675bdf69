/*
 * sink_ldap.h — applies desired identities to an OpenLDAP directory.
 *
 * One call per desired identity: read the entry that carries the employee
 * number, resolve the manager's DN, diff (sinks/ldap_diff.h) and apply the
 * plan in order, recording every write in a SinkResult.  Converging by diff
 * is what makes it idempotent: applying the same desired twice makes no
 * write the second time, and an apply cut short (crash, server gone) is
 * finished by the next one.
 *
 * The directory needs the memberof and refint overlays (memberOf is how
 * current memberships are read; refint keeps group members right across
 * renames) and ppolicy (pwdAccountLockedTime is the lock).  See
 * sinks/README.md.
 *
 * This is the only code that includes <ldap.h>; the handle is opaque.
 * Thread safety: a sink_ldap_t belongs to one thread at a time; open one
 * per worker thread.  libldap may write to a socket the server has closed:
 * the process must ignore SIGPIPE.
 */
#ifndef IDSTREAM_SINK_LDAP_H
#define IDSTREAM_SINK_LDAP_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "schemas/model.h"
#include "sinks/sink_accounts.h"
#include "sinks/ldap_diff.h"
#include "sinks/sink_password.h"

typedef struct sink_ldap sink_ldap_t;

typedef struct sink_ldap_opts {
	const char *url;           /* "ldap://127.0.0.1:13890/" */
	const char *bind_dn;       /* NULL or "": anonymous */
	const char *bind_password; /* copied, wiped at close, never logged */
	const char *people_dn;
	const char *groups_dn;
	int timeout_ms; /* connect and per-request timeout; <= 0 means 10000 */
	/*
	 * Initial passwords: when set, every entry is created with a random
	 * password meeting password_policy, stored as an {SSHA} userPassword;
	 * the clear text goes only to this file (one line "employee_id TAB uid
	 * TAB password", flushed before the add; see sinks/sink_password.h).
	 * NULL or "": entries are created without a password.
	 */
	const char *password_file;
	sink_password_policy_t password_policy;
	/*
	 * NULL or "": accounts are disabled with ppolicy's permanent lock.
	 * Else disabling moves the entry directly below this DN and enabling
	 * moves it back (see ldap_diff_layout_t); entries are then searched for
	 * below people_dn and directly below disabled_dn.
	 */
	const char *disabled_dn;
	/*
	 * posixAccount on every managed entry (see ldap_diff_compute_posix()).
	 * uidNumbers are allocated here: at open, one search finds the highest
	 * uidNumber >= posix_uid_min below base_dn; each new one is the next
	 * number, counted in memory, and searched for before it is written (a
	 * number taken meanwhile by someone else makes the search run again).
	 * One sink process per directory: two would hand out the same number.
	 */
	bool posix;
	const char *base_dn;     /* NULL or "": people_dn */
	long long posix_uid_min; /* first uidNumber handed out; <= 0: 10000 */
	long long posix_gid;     /* gidNumber of every account */
	const char *posix_home;  /* homeDirectory template, "%u" = uid */
	const char *posix_shell; /* loginShell; NULL or "": none */
} sink_ldap_opts_t;

/*
 * Connects and binds (LDAPv3, simple bind, referrals off), so a wrong URL or
 * password is reported at start-up; with posix, also finds the highest
 * uidNumber in use (a bad home template is ID_ECONFIG).  Later, a lost connection is
 * re-opened by sink_ldap_apply() itself. Ownership: caller closes with sink_ldap_close().
 * NULL on error (err says which URL and why; the password never appears).
 */
sink_ldap_t *sink_ldap_open(const sink_ldap_opts_t *opts, id_err_t *err);

/* Unbinds, wipes the password copy and frees.  NULL is a no-op. */
void sink_ldap_close(sink_ldap_t *s);

/*
 * Makes the directory match d and describes what was done in result
 * (which is fini'd and refilled: target "ldap", employee id, version,
 * outcome, ops, error, at).
 *
 * Outcomes: APPLIED (at least one change), NOOP (nothing to change),
 * FAILED (the directory refused, or the input cannot be applied — e.g.
 * "uid x already used by employee Y", in which case nothing was changed for
 * this employee).  Op names: add, modrdn, modify, group_add, group_remove,
 * disable, enable, create_ou, create_group, delete_group, delete; plus the
 * note "manager_pending" (attribute "manager", new_value = manager's
 * employee id) when the manager has no entry yet and the attribute was left
 * for a later apply.
 *
 * Returns 0 when result holds the final outcome for this desired version,
 * FAILED included (err is filled too when FAILED).  Returns ID_ELDAP or
 * ID_ETIMEOUT when the directory could not be reached even after one
 * reconnect: result then says FAILED, and the caller should retry the same
 * desired later rather than move on.  ID_EINVALID for NULL arguments.
 */
int sink_ldap_apply(sink_ldap_t *s, const desired_identity_t *d, sink_result_t *result,
                    id_err_t *err);

/*
 * Computes what sink_ldap_apply() would do, without writing: reads the
 * entry, resolves the manager and diffs.  *manager_pending is set when the
 * manager has no entry (may be NULL).  Returns 0, ID_ELDAP/ID_ETIMEOUT, or
 * ID_EINVALID/ID_ECONFLICT (several entries carry the employee number).
 */
int sink_ldap_plan(sink_ldap_t *s, const desired_identity_t *d, ldap_diff_plan_t *plan,
                   bool *manager_pending, id_err_t *err);

/*
 * Reads the entry whose employeeNumber is employee_id into out (fini'd and
 * refilled).  0, ID_ENOTFOUND, ID_ECONFLICT (more than one entry),
 * ID_ELDAP or ID_ETIMEOUT.
 */
int sink_ldap_read(sink_ldap_t *s, const char *employee_id, ldap_diff_entry_t *out,
                   id_err_t *err);

/* With posix: the uidNumber the next entry that needs one would get
 * (before the check that nobody took it meanwhile); else 0. */
long long sink_ldap_next_uid_number(const sink_ldap_t *s);

/* Number of write requests (add, modify, modrdn, delete) sent so far. */
uint64_t sink_ldap_writes(const sink_ldap_t *s);

/*
 * Lists every inetOrgPerson below people_dn (and disabled_dn with the move
 * method) into out: ref = DN, name = uid, employee_id = employeeNumber.
 * 0, ID_ELDAP/ID_ETIMEOUT (unreachable: try later), ID_ENOMEM.
 */
int sink_ldap_accounts(sink_ldap_t *s, sink_account_list_t *out, id_err_t *err);

/*
 * Deletes the entry dn (an account listed by sink_ldap_accounts() that no
 * employee owns).  One already gone is not an error.  0 or as
 * sink_ldap_accounts().  Counts one write.
 */
int sink_ldap_remove(sink_ldap_t *s, const char *dn, id_err_t *err);

/*
 * Makes dst leave its member additions in a batch to the same queue as src
 * (and every handle sharing src's), so sink_ldap_batch_end() on any of them
 * makes them all.  For the handles of one sink, each used by its own
 * thread.  Both must be open; either may be closed first.
 */
void sink_ldap_share(sink_ldap_t *dst, sink_ldap_t *src);

/*
 * Batches: after sink_ldap_batch_begin(s), sink_ldap_apply() through s and
 * the handles sharing with it (sink_ldap_share) leaves the member
 * additions that end a plan (nothing but group changes after them: a
 * create's memberships, above all) to sink_ldap_batch_end(), which adds
 * each group's new members in one modify (at most 500 a request; a group
 * that does not exist yet is created with them) instead of one modify per
 * member: a write of a large group costs the directory about as much for
 * many members as for one.  Other ops are made by the apply as before.
 *
 * batch_end completes each result whose apply left additions: their
 * group_add (and create_group) ops are appended and the outcome becomes
 * APPLIED; when a combined request fails, each member is added on its own,
 * and a result whose addition the directory refuses becomes FAILED (with
 * the error), as if the apply had failed there.  A result whose addition
 * could not be made because the directory became unreachable becomes
 * DEFERRED: the caller must apply that desired version again (its read
 * finds what is missing).  Until batch_end returns, the results of the
 * batch are not final; a crash before leaves the additions undone and a
 * restart's diff makes them.  batch_end returns 0 or ID_ENOMEM.
 *
 * Threading: begin and end are called with no apply running (the caller's
 * thread between two parallel rounds); applies may run on any handle in
 * between.  Without begin, applies make every write themselves.
 */
void sink_ldap_batch_begin(sink_ldap_t *s);
int sink_ldap_batch_end(sink_ldap_t *s, id_err_t *err);

#endif
