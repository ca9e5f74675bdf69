/*
 * ldap_conn.h — the libldap plumbing the OpenLDAP and Active Directory sinks
 * share: one connection (bind, optional TLS, reconnect on transport
 * failure), libldap errors turned into id_err_t messages, searches, the
 * write calls (each counted), the cache of OUs known to exist, and the
 * small filter/value helpers.  What differs between the two directories —
 * the schema, how an account is disabled, groups, passwords — stays in
 * sinks/sink_ldap.c and sinks/sink_ad.c.
 *
 * Invariants:
 *  - Any transport-level failure passed through ldap_conn_fail() drops the
 *    handle (ld = NULL); ldap_conn_ensure() opens a new one.  The sinks
 *    rely on that to redo a whole read-diff-apply after a reconnect.
 *  - The bind password is copied once, never logged, wiped at fini.
 *
 * Only sinks/ldap_conn.c, sinks/sink_ldap.c and sinks/sink_ad.c include
 * <ldap.h>.  Thread safety: an ldap_conn_t belongs to one thread at a time.
 */
#ifndef IDSTREAM_LDAP_CONN_H
#define IDSTREAM_LDAP_CONN_H

#include <ldap.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/attrs.h"
#include "common/buf.h"
#include "common/err.h"
#include "schemas/model.h"
#include "sinks/sink_accounts.h"

/* TLS settings of a connection (all unused when tls is false). */
typedef struct ldap_conn_tls {
	bool tls;            /* ldaps://, or StartTLS on an ldap:// URL */
	int require_cert;    /* LDAP_OPT_X_TLS_DEMAND, _TRY, _ALLOW, _NEVER */
	const char *ca_file; /* PEM bundle; NULL: the system's */
} ldap_conn_tls_t;

/*
 * One directory connection.  Caller-allocated; fields are read by the
 * sinks (ld, writes, last_lrc) but only changed through these functions.
 * Ownership: the struct owns every string and the handle; ldap_conn_fini()
 * releases them.
 */
typedef struct ldap_conn {
	LDAP *ld;          /* NULL while disconnected */
	const char *label; /* "ldap", "ad": starts messages (static string) */
	const char *log_comp;
	char *url;
	char *bind_dn; /* NULL: anonymous */
	char *password;
	size_t password_len;
	bool tls;
	int tls_require;
	char *tls_ca_file;
	int timeout_ms;
	uint64_t writes; /* add, modify, modrdn, delete requests sent */
	int last_lrc;    /* libldap code of the last failure */
	char **ous;      /* OU DNs known to exist (a bounded cache) */
	size_t nous;
} ldap_conn_t;

/*
 * Copies the settings into c (no connection is made).  label and log_comp
 * must be static strings.  bind_dn NULL or "" binds anonymously; tls NULL
 * means no TLS; timeout_ms <= 0 means 10000.  0 or ID_ENOMEM (c is then
 * fini'd).
 */
int ldap_conn_init(ldap_conn_t *c, const char *label, const char *log_comp,
                   const char *url, const char *bind_dn, const char *password,
                   const ldap_conn_tls_t *tls, int timeout_ms);
/* Unbinds, wipes the password copy, frees.  Safe on a zeroed struct. */
void ldap_conn_fini(ldap_conn_t *c);

/* Opens and binds (LDAPv3, simple bind, referrals off, StartTLS when asked
 * and the URL is not ldaps://).  0, ID_ECONFIG (bad URL), ID_ELDAP or
 * ID_ETIMEOUT; the password never appears in err. */
int ldap_conn_connect(ldap_conn_t *c, id_err_t *err);
/* Connects when disconnected (logged), else nothing.  As ldap_conn_connect. */
int ldap_conn_ensure(ldap_conn_t *c, id_err_t *err);
void ldap_conn_disconnect(ldap_conn_t *c);

/*
 * Fills err with "<what>: <libldap message> (<code>); matched DN "..";
 * diagnostic ".."" from the handle's last result, remembers lrc in
 * last_lrc, and drops the connection when the failure was the transport's.
 * Returns ID_ETIMEOUT or ID_ELDAP.
 */
int ldap_conn_fail(ldap_conn_t *c, int lrc, id_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Search with the connection's timeout; *res is the caller's to
 * ldap_msgfree() (NULL on error).  0 or as ldap_conn_fail(). */
int ldap_conn_search(ldap_conn_t *c, const char *base, int scope, const char *filter,
                     const char *const *attrs, LDAPMessage **res, id_err_t *err);

/*
 * Searches for the one entry matching filter.  On 0, *entry is that entry
 * inside *res, or NULL when there is none.  More than one: ID_ECONFLICT
 * naming every DN ("employee <id> has <n> <noun>: ..."), so a human can pick
 * the one to keep.  *res is the caller's to ldap_msgfree() in every case.
 */
int ldap_conn_search_unique(ldap_conn_t *c, const char *base, int scope,
                            const char *filter, const char *const *attrs, const char *id,
                            const char *noun, LDAPMessage **res, LDAPMessage **entry,
                            id_err_t *err);

/*
 * Appends to out every entry below base (subtree) matching filter, with its
 * DN as ref and the first values of name_attr and emp_attr (either may be
 * absent), reading in pages of 500 (RFC 2696) so a server's size limit
 * (AD: 1000 by default) does not cut the list.  0 or as ldap_conn_fail();
 * ID_ENOMEM.  A base that does not exist is an empty list.
 */
int ldap_conn_list_accounts(ldap_conn_t *c, const char *base, const char *filter,
                            const char *name_attr, const char *emp_attr,
                            sink_account_list_t *out, id_err_t *err);

/* ---- writes: each returns the libldap code and counts one write ---- */

int ldap_conn_add(ldap_conn_t *c, const char *dn, LDAPMod **mods);
int ldap_conn_modify(ldap_conn_t *c, const char *dn, LDAPMod **mods);
/* One-attribute modify; value NULL deletes the whole attribute. */
int ldap_conn_modify1(ldap_conn_t *c, const char *dn, int mod_op, const char *attr,
                      const char *value);
/* Adds an entry made of (attribute, value) pairs, NULL-terminated (at most 8). */
int ldap_conn_add_simple(ldap_conn_t *c, const char *dn, const char *const *pairs);
int ldap_conn_rename(ldap_conn_t *c, const char *dn, const char *new_rdn,
                     const char *new_superior);
int ldap_conn_delete(ldap_conn_t *c, const char *dn, LDAPControl **ctrls);

/*
 * Adds dn with objectClass object_class, one value per attribute of attrs,
 * and the NULL-terminated extra mods (may be NULL).  Returns 0 with *lrc
 * the libldap code, or ID_ENOMEM.
 */
int ldap_conn_add_entry(ldap_conn_t *c, const char *dn, const char *object_class,
                        const id_attrs_t *attrs, LDAPMod **extra, int *lrc);
/* As ldap_conn_add_entry() with several object classes (NULL-terminated). */
int ldap_conn_add_entry_classes(ldap_conn_t *c, const char *dn,
                                const char *const *classes, const id_attrs_t *attrs,
                                LDAPMod **extra, int *lrc);

/*
 * One modify request of n attributes: value(i) gives attribute i and its
 * new value (NULL: delete the attribute, else replace).  Returns 0 with
 * *lrc the libldap code, or ID_ENOMEM.
 */
typedef void (*ldap_conn_mod_fn)(const void *ctx, size_t i, const char **attr,
                                 const char **value);
int ldap_conn_modify_many(ldap_conn_t *c, const char *dn, size_t n,
                          ldap_conn_mod_fn value, const void *ctx, int *lrc);

/*
 * Creates the OU dn (ou value ou) unless the cache or the directory
 * already has it.  *created tells whether this call made it, *cached
 * whether the cache answered (a stale cache shows as NO_SUCH_OBJECT later:
 * the caller then clears it and retries).  0 or as ldap_conn_fail().
 */
int ldap_conn_ensure_ou(ldap_conn_t *c, const char *dn, const char *ou, bool *created,
                        bool *cached, id_err_t *err);
void ldap_conn_ou_clear(ldap_conn_t *c);

/*
 * Walks the attributes of search entry e: set_dn(out, dn) first, then
 * attr(out, name, vals, n) for each attribute (the callbacks return 0 or
 * ID_ENOMEM).  0, ID_ELDAP (an entry without DN) or ID_ENOMEM, with a
 * message naming the entry.
 */
typedef int (*ldap_conn_dn_fn)(void *out, const char *dn);
typedef int (*ldap_conn_attr_fn)(void *out, const char *name, struct berval **vals,
                                 size_t n);
int ldap_conn_entry_walk(ldap_conn_t *c, LDAPMessage *e, ldap_conn_dn_fn set_dn,
                         ldap_conn_attr_fn attr, void *out, id_err_t *err);

/* ---- the apply loop of both sinks ---- */

/*
 * One read-diff-apply of a sink: 0 or an error.  Sets *manager_pending when
 * the manager has no entry yet, and *used_cache when an OU was taken as
 * existing from the cache.  Reports its writes in the result itself.
 */
typedef int (*ldap_conn_attempt_fn)(void *ctx, bool *manager_pending, bool *used_cache,
                                    id_err_t *err);

/*
 * Runs attempt for d and fills result (fini'd first: target, employee id,
 * version, outcome, error, at; the ops are the attempt's).  A failure that
 * dropped the connection, or a NO_SUCH_OBJECT after the OU cache answered
 * (an OU deleted behind our back: the cache is cleared), is attempted once
 * more — safe, because each attempt diffs what is really there.  *changes
 * is read after the attempts: the number of writes recorded (APPLIED when
 * > 0, else NOOP).  Adds the "manager_pending" note when asked.
 * Returns 0 when result is final (FAILED included); ID_ELDAP/ID_ETIMEOUT
 * when the directory stayed unreachable (retry later); ID_ENOMEM.
 */
int ldap_conn_apply(ldap_conn_t *c, const char *target, const desired_identity_t *d,
                    sink_result_t *result, ldap_conn_attempt_fn attempt, void *ctx,
                    const size_t *changes, id_err_t *err);

/* ---- helpers ---- */

/*
 * "(attr=<value>)", or "(&<prefix>(attr=<value>))" when prefix is not NULL,
 * into out, NUL-terminated (the terminator is counted in out->len).  The
 * value is RFC 4515-escaped ('*', '(', ')', '\\' and control characters).
 * 0 or ID_ENOMEM.
 */
int ldap_conn_filter_eq(id_buf_t *out, const char *prefix, const char *attr,
                        const char *value);

/* Copy of a berval as a C string (malloc'd; NULL on ENOMEM). */
char *ldap_conn_bv_strdup(const struct berval *bv);

/*
 * The values joined by '\n' into out (reset first), NUL-terminated: an
 * attribute with several values never equals a single desired value, so
 * the diff replaces it.  0 or ID_ENOMEM.
 */
int ldap_conn_values_join(struct berval **vals, id_buf_t *out);

/* The entry of attribute name in list (NULL-terminated) matching attr
 * ignoring case, or NULL. */
const char *ldap_conn_name_in(const char *const *list, const char *attr);

#endif
