/*
 * sink_ldap.c — executes ldap_diff plans against slapd with libldap.
 *
 * Flow of one apply: search the entry by employeeNumber (managed attributes
 * plus memberOf and pwdAccountLockedTime), resolve the manager's DN, diff,
 * refuse a uid already carried by another employee, then run the plan in
 * order.  Each op tolerates the state a half-finished earlier apply left
 * behind ("already a member", "already gone"), so re-running converges.
 *
 * posixAccount (opts.posix): uidNumbers are allocated here, never in the
 * diff.  Open finds the highest number in use below base_dn with one
 * search; after that the next number is counted in memory (one sink per
 * directory is the deployment).  Before a plan writes a new number, a
 * search checks nobody took it meanwhile (a hand-made entry); if someone
 * did, or the add fails on a uniqueness constraint, the highest number is
 * searched for again and the whole read-diff-apply runs once more.
 *
 * Connection rule: any transport-level failure (server down, timeout)
 * drops the handle (s->conn.ld = NULL); apply then reconnects once and redoes
 * the whole read-diff-apply, which is safe because the diff starts from
 * what is really there.  libldap error strings are turned into id_err_t
 * messages here and nowhere else.
 *
 * Batches (sink_ldap_batch_begin/end): the member additions that end a
 * plan are queued with the apply's result and made at the batch's end,
 * one modify per group for all the batch's new members, which is what a
 * large group's write costs slapd for one member (the entry is rewritten
 * whole).  The results are completed then; a crash before leaves the
 * memberships to the next apply's diff.
 *
 * Threading: one thread per handle (see sink_ldap.h); the handles of one
 * sink share the batch queue and a per-group lock (group_lock: why it is
 * needed is said there).
 */
#include "sinks/sink_ldap.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/log.h"
#include "sinks/ldap_conn.h"

#define LOG_COMP "sink.ldap"

/* Rounds of a group update that raced with another writer. */
#define GROUP_TRIES 4
/* {SSHA} salt length (bytes). */
#define SSHA_SALT_LEN 8
/* Rounds of an apply whose new uidNumber was taken meanwhile. */
#define UID_TRIES 8
/* Most members one request adds to a group at the end of a batch. */
#define MEMBERS_PER_MODIFY 500

/*
 * A member addition left to the end of the batch (sink_ldap_batch_end):
 * add member to group dn (name cn), then complete result r with it.
 */
typedef struct deferred_add {
	char *dn;
	char *cn;
	char *member;
	sink_result_t *r; /* NULL while the apply that made it runs */
} deferred_add_t;

/*
 * What the handles of one sink share (sink_ldap_share): the member
 * additions of a batch, and which groups a handle is changing.
 * Invariants (under mu): open between sink_ldap_batch_begin() and
 * sink_ldap_batch_end(); items are the additions of applies that have
 * finished successfully, in the order they finished (each handle's thread
 * appends; only batch_end, with no apply running, takes them).  busy holds
 * the DNs of the groups a handle is writing (group_lock); cv is signalled
 * when one is released.
 */
typedef struct sink_shared {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	bool open;
	deferred_add_t *items;
	size_t n, cap;
	char **busy;
	size_t nbusy, capbusy;
} sink_shared_t;

struct sink_ldap {
	ldap_conn_t conn;
	char *people_dn;
	char *groups_dn;
	char *password_file; /* NULL: entries are created without a password */
	char *disabled_dn;   /* NULL: disable by lock, else by move below it */
	sink_password_policy_t policy;
	ldap_diff_layout_t layout;
	/* posixAccount: posix_cfg.next_uid_number is the allocation counter. */
	bool posix;
	char *base_dn; /* where uidNumbers are searched */
	char *posix_home;
	char *posix_shell;
	long long uid_min;
	ldap_diff_posix_t posix_cfg;
	/* What an employee search asks for: managed + lock + memberOf. */
	const char *read_attrs[24];
	/* The member additions left to the end of a batch, shared by the
	 * handles of one sink (sink_ldap_share); NULL until first needed. */
	sink_shared_t *shared;
};

/* ---- uidNumber allocation ---- */

/* A uidNumber value as a number; 0 when it is not one. */
static long long uid_parse(const char *v)
{
	char *end = NULL;
	long long n = v != NULL ? strtoll(v, &end, 10) : 0;
	return v != NULL && end != v && *end == '\0' && n > 0 ? n : 0;
}

/* Number n was written: the next one is above it. */
static void uid_used(sink_ldap_t *s, const char *v)
{
	long long n = uid_parse(v);
	if (n >= s->posix_cfg.next_uid_number)
		s->posix_cfg.next_uid_number = n + 1;
}

/*
 * Moves the counter to at least floor and above every uidNumber >= uid_min
 * below base_dn (one search; slapd's uidNumber has an ordering rule).
 */
static int uid_refresh(sink_ldap_t *s, long long floor, id_err_t *err)
{
	static const char *const attrs[] = {"uidNumber", NULL};
	char f[64];
	LDAPMessage *res = NULL;
	snprintf(f, sizeof(f), "(uidNumber>=%lld)", s->uid_min);
	int rc = ldap_conn_search(&s->conn, s->base_dn, LDAP_SCOPE_SUBTREE, f, attrs,
	                          &res, err);
	if (rc != 0) {
		id_err_wrap(err, "highest uidNumber below \"%s\"", s->base_dn);
		goto out;
	}
	long long max = 0;
	for (LDAPMessage *e = ldap_first_entry(s->conn.ld, res); e != NULL;
	     e = ldap_next_entry(s->conn.ld, e)) {
		struct berval **v = ldap_get_values_len(s->conn.ld, e, "uidNumber");
		for (int i = 0; v != NULL && v[i] != NULL; i++) {
			char *str = ldap_conn_bv_strdup(v[i]);
			long long n = uid_parse(str);
			free(str);
			if (n > max)
				max = n;
		}
		ldap_value_free_len(v);
	}
	if (floor < s->uid_min)
		floor = s->uid_min;
	if (max + 1 > floor)
		floor = max + 1;
	if (floor > s->posix_cfg.next_uid_number)
		s->posix_cfg.next_uid_number = floor;
	id_log_debug(LOG_COMP, "next uidNumber %lld (highest in use %lld)",
	             s->posix_cfg.next_uid_number, max);
out:
	ldap_msgfree(res);
	return rc;
}

/* *taken: some entry below base_dn already has uidNumber n. */
static int uid_taken(sink_ldap_t *s, long long n, bool *taken, id_err_t *err)
{
	static const char *const attrs[] = {LDAP_NO_ATTRS, NULL};
	char f[64];
	LDAPMessage *res = NULL;
	*taken = false;
	snprintf(f, sizeof(f), "(uidNumber=%lld)", n);
	int rc = ldap_conn_search(&s->conn, s->base_dn, LDAP_SCOPE_SUBTREE, f, attrs,
	                          &res, err);
	if (rc == 0)
		*taken = ldap_count_entries(s->conn.ld, res) > 0;
	ldap_msgfree(res);
	return rc;
}

/* ---- the member additions of a batch ---- */

static void deferred_free(deferred_add_t *a)
{
	free(a->dn);
	free(a->cn);
	free(a->member);
	memset(a, 0, sizeof(*a));
}

static sink_shared_t *shared_create(void)
{
	sink_shared_t *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	q->refs = 1;
	return q;
}

static void shared_unref(sink_shared_t *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	int left = --q->refs;
	pthread_mutex_unlock(&q->mu);
	if (left > 0)
		return;
	for (size_t i = 0; i < q->n; i++)
		deferred_free(&q->items[i]);
	free(q->items);
	free(q->busy); /* empty: no handle is left to hold a group */
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

/*
 * Group changes of the handles applying in parallel are made one group at
 * a time: while a handle adds to, removes from, creates or deletes group
 * dn, the others wait for that group (other groups stay parallel).
 *
 * Why: slapd's memberof overlay decides whether the target of a modify is
 * a group with a search made before the modify runs, and keeps members'
 * memberOf only when it was.  A modify adding a member to a group whose
 * creation is committing at that moment (the add-first-member-creates
 * path of another handle) finds no group in that search, then succeeds:
 * the member is in the group's member values, but its memberOf never
 * gets the group, and the sink, which reads memberships from memberOf,
 * would report drift for ever.  Likewise a member added while the group is
 * deleted and created again.  One writer per group at a time rules both
 * out.  Returns false when out of memory (the caller then goes ahead
 * unlocked: correct but for that race).
 */
static bool group_lock(sink_shared_t *q, const char *dn)
{
	if (q == NULL)
		return false; /* one handle: nobody to race with */
	pthread_mutex_lock(&q->mu);
	for (;;) {
		bool busy = false;
		for (size_t i = 0; i < q->nbusy && !busy; i++)
			busy = ldap_diff_dn_equal(q->busy[i], dn);
		if (!busy)
			break;
		pthread_cond_wait(&q->cv, &q->mu);
	}
	bool ok = true;
	if (q->nbusy == q->capbusy) {
		size_t nc = q->capbusy ? q->capbusy * 2 : 8;
		char **n = realloc(q->busy, nc * sizeof(*n));
		if (n == NULL)
			ok = false;
		else {
			q->busy = n;
			q->capbusy = nc;
		}
	}
	if (ok)
		q->busy[q->nbusy++] = (char *)dn; /* the caller keeps dn alive */
	pthread_mutex_unlock(&q->mu);
	return ok;
}

static void group_unlock(sink_shared_t *q, const char *dn)
{
	pthread_mutex_lock(&q->mu);
	for (size_t i = 0; i < q->nbusy; i++)
		if (q->busy[i] == dn) {
			q->busy[i] = q->busy[--q->nbusy];
			break;
		}
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static bool batch_is_open(sink_shared_t *q)
{
	if (q == NULL)
		return false;
	pthread_mutex_lock(&q->mu);
	bool open = q->open;
	pthread_mutex_unlock(&q->mu);
	return open;
}

sink_ldap_t *sink_ldap_open(const sink_ldap_opts_t *opts, id_err_t *err)
{
	sink_ldap_t *s = NULL;
	if (opts == NULL || opts->url == NULL || opts->people_dn == NULL ||
	    opts->groups_dn == NULL) {
		id_err_set(err, ID_EINVALID,
		           "sink_ldap_open: url, people_dn and groups_dn are required");
		goto out;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL)
		goto nomem;
	if (ldap_conn_init(&s->conn, "ldap", LOG_COMP, opts->url, opts->bind_dn,
	                   opts->bind_password, NULL, opts->timeout_ms) != 0 ||
	    (s->people_dn = strdup(opts->people_dn)) == NULL ||
	    (s->groups_dn = strdup(opts->groups_dn)) == NULL)
		goto nomem;
	if (opts->password_file != NULL && opts->password_file[0] != '\0') {
		if ((s->password_file = strdup(opts->password_file)) == NULL)
			goto nomem;
		s->policy = opts->password_policy;
		/* Refuse an impossible policy now, not at the first hire. */
		char probe[SINK_PASSWORD_MAX_LEN + 1];
		int prc = sink_password_generate(&s->policy, NULL, NULL, probe, err);
		explicit_bzero(probe, sizeof(probe));
		if (prc != 0) {
			id_err_wrap(err, "ldap.password_*");
			sink_ldap_close(s);
			s = NULL;
			goto out;
		}
	}
	size_t k = 0;
	for (const char *const *a = ldap_diff_managed_attrs; *a != NULL && k + 3 < 24;
	     a++)
		s->read_attrs[k++] = *a;
	s->read_attrs[k++] = LDAP_DIFF_LOCK_ATTR;
	s->read_attrs[k++] = "memberOf"; /* operational: only returned when asked */
	if (opts->posix) {
		for (const char *const *a = ldap_diff_posix_attrs; *a != NULL; a++)
			s->read_attrs[k++] = *a;
		s->read_attrs[k++] = "objectClass";
	}
	s->read_attrs[k] = NULL;
	s->layout.people_dn = s->people_dn;
	s->layout.groups_dn = s->groups_dn;
	if (opts->disabled_dn != NULL && opts->disabled_dn[0] != '\0') {
		if ((s->disabled_dn = strdup(opts->disabled_dn)) == NULL)
			goto nomem;
		s->layout.disabled_dn = s->disabled_dn;
	}
	if (opts->posix) {
		const char *home = opts->posix_home != NULL ? opts->posix_home : "";
		if (ldap_diff_posix_check(home, err) != 0) {
			id_err_wrap(err, "ldap.posix_home");
			sink_ldap_close(s);
			s = NULL;
			goto out;
		}
		const char *base = opts->base_dn != NULL && opts->base_dn[0] != '\0'
		                       ? opts->base_dn
		                       : opts->people_dn;
		if ((s->base_dn = strdup(base)) == NULL ||
		    (s->posix_home = strdup(home)) == NULL)
			goto nomem;
		if (opts->posix_shell != NULL && opts->posix_shell[0] != '\0' &&
		    (s->posix_shell = strdup(opts->posix_shell)) == NULL)
			goto nomem;
		s->posix = true;
		s->uid_min = opts->posix_uid_min > 0 ? opts->posix_uid_min : 10000;
		s->posix_cfg = (ldap_diff_posix_t){.gid_number = opts->posix_gid,
		                                   .home_template = s->posix_home,
		                                   .login_shell = s->posix_shell,
		                                   .next_uid_number = 0};
	}
	if (ldap_conn_connect(&s->conn, err) != 0 ||
	    (s->posix && uid_refresh(s, s->uid_min, err) != 0)) {
		sink_ldap_close(s);
		s = NULL;
	}
	goto out;
nomem:
	id_err_set(err, ID_ENOMEM, "sink_ldap_open: out of memory");
	sink_ldap_close(s);
	s = NULL;
out:
	return s;
}

void sink_ldap_close(sink_ldap_t *s)
{
	if (s == NULL)
		return;
	ldap_conn_fini(&s->conn);
	shared_unref(s->shared);
	free(s->people_dn);
	free(s->groups_dn);
	free(s->password_file);
	free(s->disabled_dn);
	free(s->base_dn);
	free(s->posix_home);
	free(s->posix_shell);
	free(s);
}

void sink_ldap_share(sink_ldap_t *dst, sink_ldap_t *src)
{
	if (dst == NULL || src == NULL || dst == src)
		return;
	if (src->shared == NULL && (src->shared = shared_create()) == NULL)
		return; /* out of memory: dst adds its members itself, correctly */
	shared_unref(dst->shared);
	dst->shared = src->shared;
	pthread_mutex_lock(&src->shared->mu);
	src->shared->refs++;
	pthread_mutex_unlock(&src->shared->mu);
}

uint64_t sink_ldap_writes(const sink_ldap_t *s)
{
	return s != NULL ? s->conn.writes : 0;
}

long long sink_ldap_next_uid_number(const sink_ldap_t *s)
{
	return s != NULL && s->posix ? s->posix_cfg.next_uid_number : 0;
}

/* ---- reads ---- */

static int entry_dn(void *out, const char *dn)
{
	return ldap_diff_entry_set_dn(out, dn);
}

/* One attribute of a search entry into the ldap_diff_entry_t out. */
static int entry_attr(void *out, const char *a, struct berval **vals, size_t n)
{
	ldap_diff_entry_t *e = out;
	const char *name = ldap_conn_name_in(ldap_diff_managed_attrs, a);
	if (name == NULL)
		name = ldap_conn_name_in(ldap_diff_posix_attrs, a);
	int r = 0;
	if (strcasecmp(a, "memberOf") == 0) {
		for (size_t i = 0; r == 0 && i < n; i++) {
			char *v = ldap_conn_bv_strdup(vals[i]);
			r = v ? ldap_diff_entry_add_member_of(e, v) : ID_ENOMEM;
			free(v);
		}
	} else if (strcasecmp(a, "objectClass") == 0) {
		for (size_t i = 0; i < n; i++)
			if (vals[i]->bv_len == strlen(LDAP_DIFF_POSIX_CLASS) &&
			    strncasecmp(vals[i]->bv_val, LDAP_DIFF_POSIX_CLASS,
			                vals[i]->bv_len) == 0)
				e->posix = true;
	} else if (strcasecmp(a, LDAP_DIFF_LOCK_ATTR) == 0 && n > 0) {
		char *v = ldap_conn_bv_strdup(vals[0]);
		r = v ? ldap_diff_entry_set_lock(e, v) : ID_ENOMEM;
		free(v);
	} else if (name != NULL && n > 0) {
		id_buf_t joined = ID_BUF_INIT;
		r = ldap_conn_values_join(vals, &joined);
		if (r == 0)
			r = id_attrs_set(&e->attrs, name, (const char *)joined.data);
		id_buf_fini(&joined);
	}
	return r;
}

static int entry_convert(sink_ldap_t *s, LDAPMessage *e, ldap_diff_entry_t *out,
                         id_err_t *err)
{
	return ldap_conn_entry_walk(&s->conn, e, entry_dn, entry_attr, out, err);
}

/*
 * Searches the people subtree for employeeNumber=id.  0 with *found set,
 * ID_ECONFLICT when several entries carry it.
 */
static int read_employee(sink_ldap_t *s, const char *id, const char *const *attrs,
                         ldap_diff_entry_t *out, bool *found, id_err_t *err)
{
	id_buf_t f = ID_BUF_INIT;
	LDAPMessage *res = NULL, *e = NULL;
	int rc;
	*found = false;
	ldap_diff_entry_fini(out);
	if ((rc = ldap_conn_filter_eq(&f, NULL, "employeeNumber", id)) != 0) {
		rc = id_err_set(err, rc, "ldap: employee %s: out of memory", id);
		goto out;
	}
	if ((rc = ldap_conn_search_unique(&s->conn, s->people_dn, LDAP_SCOPE_SUBTREE,
	                                  (const char *)f.data, attrs, id, "entries",
	                                  &res, &e, err)) != 0)
		goto out;
	if (s->disabled_dn != NULL) {
		/* Disabled by move: the entry may be below disabled_dn instead. */
		LDAPMessage *dres = NULL, *de = NULL;
		rc = ldap_conn_search_unique(&s->conn, s->disabled_dn,
		                             LDAP_SCOPE_ONELEVEL, (const char *)f.data,
		                             attrs, id, "entries", &dres, &de, err);
		if (rc == 0 && de != NULL && e != NULL) {
			char *a = ldap_get_dn(s->conn.ld, e),
			     *b = ldap_get_dn(s->conn.ld, de);
			rc = id_err_set(err, ID_ECONFLICT,
			                "employee %s has 2 entries: \"%s\", \"%s\"", id,
			                a ? a : "?", b ? b : "?");
			ldap_memfree(a);
			ldap_memfree(b);
		}
		if (rc == 0 && de != NULL) {
			ldap_msgfree(res);
			res = dres;
			e = de;
			dres = NULL;
		}
		ldap_msgfree(dres);
		if (rc != 0) {
			/* A missing disabled OU just means nobody is disabled yet. */
			if (s->conn.last_lrc != LDAP_NO_SUCH_OBJECT || rc == ID_ECONFLICT)
				goto out;
			id_err_clear(err);
			rc = 0;
		}
	}
	if (e != NULL) {
		if ((rc = entry_convert(s, e, out, err)) != 0)
			goto out;
		*found = true;
	}
out:
	ldap_msgfree(res);
	id_buf_fini(&f);
	return rc;
}

int sink_ldap_read(sink_ldap_t *s, const char *employee_id, ldap_diff_entry_t *out,
                   id_err_t *err)
{
	if (s == NULL || employee_id == NULL || out == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ldap_read: NULL argument");
	bool found;
	int rc = read_employee(s, employee_id, s->read_attrs, out, &found, err);
	if (rc == 0 && !found)
		rc = id_err_set(err, ID_ENOTFOUND,
		                "no entry with employeeNumber %s under \"%s\"",
		                employee_id, s->people_dn);
	return rc;
}

static int read_employee_uid(sink_ldap_t *s, const char *id, const char *uid,
                             const char *manager_id, ldap_diff_entry_t *out, bool *found,
                             char **manager_dn, int *nmanagers, LDAPMessage **uid_res,
                             id_err_t *err);

/* Reads the entry of d and the manager's DN (*manager_dn malloc'd or NULL).
 * With uid_res (may be NULL), the entries holding d's uid are read in the
 * same request when that can be done (see read_employee_uid); *uid_res is
 * then the caller's to ldap_msgfree(). */
static int read_state(sink_ldap_t *s, const desired_identity_t *d,
                      ldap_diff_entry_t *actual, bool *found, char **manager_dn,
                      LDAPMessage **uid_res, id_err_t *err)
{
	*manager_dn = NULL;
	const char *uid = id_attrs_get(&d->attributes, "uid");
	const char *mid =
	    d->manager_id != NULL && d->manager_id[0] != '\0' ? d->manager_id : NULL;
	int rc, nmgr = 0;
	if (uid_res != NULL && s->disabled_dn == NULL && uid != NULL && uid[0] != '\0' &&
	    d->state != LC_DELETED) {
		rc = read_employee_uid(s, d->employee_id, uid, mid, actual, found,
		                       manager_dn, &nmgr, uid_res, err);
		if (rc != 0 || mid == NULL)
			return rc;
		if (nmgr > 1) /* as read_employee() would say */
			id_log_warn(LOG_COMP,
			            "employee %s: manager %s is ambiguous: %d entries",
			            d->employee_id, mid, nmgr);
		return 0;
	}
	rc = read_employee(s, d->employee_id, s->read_attrs, actual, found, err);
	if (rc != 0 || mid == NULL)
		return rc;
	static const char *const no_attrs[] = {LDAP_NO_ATTRS, NULL};
	ldap_diff_entry_t mgr;
	bool mfound;
	ldap_diff_entry_init(&mgr);
	rc = read_employee(s, d->manager_id, no_attrs, &mgr, &mfound, err);
	if (rc == 0 && mfound) {
		*manager_dn = mgr.dn;
		mgr.dn = NULL;
	} else if (rc == ID_ECONFLICT) {
		/* Ambiguous manager: leave the attribute alone, like a missing one. */
		id_log_warn(LOG_COMP, "employee %s: manager %s is ambiguous: %s",
		            d->employee_id, d->manager_id, err ? err->msg : "");
		id_err_clear(err);
		rc = 0;
	}
	ldap_diff_entry_fini(&mgr);
	return rc;
}

int sink_ldap_plan(sink_ldap_t *s, const desired_identity_t *d, ldap_diff_plan_t *plan,
                   bool *manager_pending, id_err_t *err)
{
	if (s == NULL || d == NULL || plan == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ldap_plan: NULL argument");
	ldap_diff_entry_t actual;
	char *mdn = NULL;
	bool found;
	ldap_diff_entry_init(&actual);
	int rc = read_state(s, d, &actual, &found, &mdn, NULL, err);
	if (rc == 0)
		rc = ldap_diff_compute_posix(&s->layout, s->posix ? &s->posix_cfg : NULL,
		                             d, found ? &actual : NULL, mdn, plan, err);
	if (manager_pending != NULL)
		*manager_pending = rc == 0 && d->manager_id != NULL && mdn == NULL;
	free(mdn);
	ldap_diff_entry_fini(&actual);
	return rc;
}

/*
 * read_employee() and the uid check's search in one request: the entries
 * below people_dn whose employeeNumber is id or whose uid is uid.  The one
 * with the employee number is the employee's (several: ID_ECONFLICT, as
 * read_employee() says); *uid_res keeps the whole answer for
 * check_uid_free(), which needs no search of its own then.  With
 * manager_id (may be NULL), the manager's entry is read in the same
 * request too: *manager_dn is its DN (malloc'd) when exactly one entry has
 * that employee number, else NULL, and *nmanagers how many do.  A create
 * costs two round trips less.  Only without disabled_dn (one subtree to
 * read).  *uid_res is the caller's to ldap_msgfree() (NULL on error); it
 * may hold entries that do not carry uid (the employee's, the manager's):
 * uid_owned_by_other() looks at the uid values.
 */
static int read_employee_uid(sink_ldap_t *s, const char *id, const char *uid,
                             const char *manager_id, ldap_diff_entry_t *out, bool *found,
                             char **manager_dn, int *nmanagers, LDAPMessage **uid_res,
                             id_err_t *err)
{
	id_buf_t f = ID_BUF_INIT, dns = ID_BUF_INIT;
	LDAPMessage *res = NULL, *mine = NULL;
	int rc, n = 0;
	*found = false;
	*uid_res = NULL;
	ldap_diff_entry_fini(out);
	if (ldap_conn_filter_eq(&f, NULL, "employeeNumber", id) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "ldap: employee %s: out of memory", id);
		goto out;
	}
	/* "(|" + (employeeNumber=id) + (uid=uid) [+ (employeeNumber=mgr)] + ")" */
	*manager_dn = NULL;
	*nmanagers = 0;
	id_buf_t g = ID_BUF_INIT, m = ID_BUF_INIT;
	rc = ldap_conn_filter_eq(&g, NULL, "uid", uid);
	if (rc == 0 && manager_id != NULL)
		rc = ldap_conn_filter_eq(&m, NULL, "employeeNumber", manager_id);
	if (rc == 0) {
		id_buf_t both = ID_BUF_INIT;
		if (id_buf_printf(&both, "(|%s%s%s)", (const char *)f.data,
		                  (const char *)g.data,
		                  manager_id != NULL ? (const char *)m.data : "") != 0)
			rc = ID_ENOMEM;
		id_buf_fini(&f);
		f = both;
	}
	id_buf_fini(&g);
	id_buf_fini(&m);
	if (rc != 0) {
		rc = id_err_set(err, ID_ENOMEM, "ldap: employee %s: out of memory", id);
		goto out;
	}
	if ((rc = ldap_conn_search(&s->conn, s->people_dn, LDAP_SCOPE_SUBTREE,
	                           (const char *)f.data, s->read_attrs, &res, err)) != 0)
		goto out;
	for (LDAPMessage *e = ldap_first_entry(s->conn.ld, res); e != NULL;
	     e = ldap_next_entry(s->conn.ld, e)) {
		struct berval **v = ldap_get_values_len(s->conn.ld, e, "employeeNumber");
		bool his = false, boss = false;
		for (int i = 0; v != NULL && v[i] != NULL; i++) {
			his = his || (v[i]->bv_len == strlen(id) &&
			              strncasecmp(v[i]->bv_val, id, v[i]->bv_len) == 0);
			boss =
			    boss ||
			    (manager_id != NULL && v[i]->bv_len == strlen(manager_id) &&
			     strncasecmp(v[i]->bv_val, manager_id, v[i]->bv_len) == 0);
		}
		ldap_value_free_len(v);
		if (boss && ++*nmanagers == 1) {
			char *mdn = ldap_get_dn(s->conn.ld, e);
			if (mdn != NULL && (*manager_dn = strdup(mdn)) == NULL)
				rc = ID_ENOMEM;
			ldap_memfree(mdn);
			if (rc != 0) {
				rc = id_err_set(err, rc,
				                "ldap: employee %s: out of memory", id);
				goto out;
			}
		}
		if (!his)
			continue;
		char *dn = ldap_get_dn(s->conn.ld, e);
		id_buf_printf(&dns, "%s\"%s\"", n ? ", " : "", dn ? dn : "?");
		ldap_memfree(dn);
		mine = e;
		n++;
	}
	if (n > 1) {
		id_buf_append_u8(&dns, 0);
		rc = id_err_set(err, ID_ECONFLICT, "employee %s has %d entries: %s", id,
		                n, dns.data ? (const char *)dns.data : "");
		goto out;
	}
	if (mine != NULL) {
		if ((rc = entry_convert(s, mine, out, err)) != 0)
			goto out;
		*found = true;
	}
	if (*nmanagers > 1) { /* ambiguous: left alone, like a missing one */
		free(*manager_dn);
		*manager_dn = NULL;
	}
	*uid_res = res;
	res = NULL;
out:
	if (rc != 0) {
		free(*manager_dn);
		*manager_dn = NULL;
	}
	ldap_msgfree(res);
	id_buf_fini(&f);
	id_buf_fini(&dns);
	return rc;
}

/* ---- writes ---- */

typedef struct apply_ctx {
	sink_ldap_t *s;
	const desired_identity_t *d;
	sink_result_t *r;
	size_t changes;  /* ops recorded as done */
	bool used_cache; /* an ENSURE_OU was skipped thanks to the cache */
	/* The entries carrying the desired uid, read together with the
	 * employee's own entry (see read_employee_uid); NULL: not read. */
	LDAPMessage *uid_res;
	/* In a batch (sink_ldap_batch_begin): the member additions this
	 * apply leaves to the batch's end; emptied when a plan starts. */
	bool defer;
	deferred_add_t *later;
	size_t nlater, caplater;
} apply_ctx_t;

static int record(apply_ctx_t *c, const char *op, const char *attribute,
                  const char *old_value, const char *new_value, id_err_t *err)
{
	if (sink_result_add_op(c->r, op, attribute, old_value, new_value) != 0)
		return id_err_set(err, ID_ENOMEM,
		                  "ldap sink: out of memory recording an op");
	c->changes++;
	return 0;
}

static int exec_ensure_ou(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	bool created, cached;
	int rc = ldap_conn_ensure_ou(&c->s->conn, op->dn, op->new_value, &created,
	                             &cached, err);
	if (cached)
		c->used_cache = true;
	if (rc == 0 && created)
		rc = record(c, "create_ou", op->dn, NULL, op->new_value, err);
	return rc;
}

/*
 * The {SSHA} userPassword value of pw (RFC 2307 style: base64 of
 * SHA-1(pw + salt) + salt), into out (reset first, NUL-terminated).  0,
 * ID_EIO (no randomness) or ID_ENOMEM.  The caller wipes out.
 */
static int ssha_hash(const char *pw, id_buf_t *out, id_err_t *err)
{
	unsigned char raw[20 + SSHA_SALT_LEN];
	unsigned char b64[((sizeof(raw) + 2) / 3) * 4 + 1];
	unsigned int mdlen = 0;
	int rc = 0;
	id_buf_reset(out);
	if (RAND_bytes(raw + 20, SSHA_SALT_LEN) != 1) {
		rc = id_err_set(err, ID_EIO, "ldap sink: no random salt");
		goto out;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha1(), NULL) == 1 &&
	          EVP_DigestUpdate(md, pw, strlen(pw)) == 1 &&
	          EVP_DigestUpdate(md, raw + 20, SSHA_SALT_LEN) == 1 &&
	          EVP_DigestFinal_ex(md, raw, &mdlen) == 1 && mdlen == 20;
	EVP_MD_CTX_free(md);
	if (!ok) {
		rc = id_err_set(err, ID_ENOMEM, "ldap sink: SHA-1 failed");
		goto out;
	}
	EVP_EncodeBlock(b64, raw, (int)sizeof(raw));
	if (id_buf_printf(out, "{SSHA}%s", (const char *)b64) != 0 ||
	    id_buf_append_u8(out, 0) != 0)
		rc = id_err_set(err, ID_ENOMEM, "ldap sink: out of memory");
out:
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(b64, sizeof(b64));
	return rc;
}

static int exec_add(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	char pw[SINK_PASSWORD_MAX_LEN + 1] = {0};
	id_buf_t hash = ID_BUF_INIT;
	LDAPMod pwmod;
	char *pwvals[2] = {NULL, NULL};
	LDAPMod *extra[2] = {NULL, NULL};
	id_attrs_t plain = ID_ATTRS_INIT;
	int rc = 0, lrc = LDAP_SUCCESS;
	if (s->password_file != NULL) {
		/* Delivered (on disk) before the entry that uses it exists. */
		const char *uid = id_attrs_get(&op->attrs, "uid");
		if ((rc = sink_password_generate(&s->policy, uid,
		                                 id_attrs_get(&op->attrs, "displayName"),
		                                 pw, err)) != 0 ||
		    (rc = sink_password_deliver(s->password_file, c->d->employee_id,
		                                uid ? uid : "", pw, err)) != 0 ||
		    (rc = ssha_hash(pw, &hash, err)) != 0)
			goto out;
		pwvals[0] = (char *)hash.data;
		pwmod = (LDAPMod){.mod_op = LDAP_MOD_ADD,
		                  .mod_type = "userPassword",
		                  .mod_values = pwvals};
		extra[0] = &pwmod;
	}
	/* The plan lists posixAccount as an attribute; the add as a class. */
	bool posix = id_attrs_has(&op->attrs, "objectClass");
	const char *classes[] = {"inetOrgPerson", posix ? LDAP_DIFF_POSIX_CLASS : NULL,
	                         NULL};
	if ((posix && (id_attrs_copy(&plain, &op->attrs) != 0 ||
	               !id_attrs_remove(&plain, "objectClass"))) ||
	    ldap_conn_add_entry_classes(&s->conn, op->dn, classes,
	                                posix ? &plain : &op->attrs, extra, &lrc) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "add \"%s\": out of memory", op->dn);
		goto out;
	}
	if (lrc != LDAP_SUCCESS) {
		rc = ldap_conn_fail(&s->conn, lrc, err, "add \"%s\"", op->dn);
		goto out;
	}
	if (posix)
		uid_used(s, id_attrs_get(&op->attrs, "uidNumber"));
	if ((rc = record(c, "add", "dn", NULL, op->dn, err)) != 0)
		goto out;
	for (size_t i = 0; i < op->attrs.len; i++)
		if ((rc = record(c, "add", op->attrs.items[i].key, NULL,
		                 op->attrs.items[i].value, err)) != 0)
			goto out;
	if (s->password_file != NULL)
		rc = record(c, "add", "userPassword", NULL,
		            "(initial password delivered)", err);
out:
	explicit_bzero(pw, sizeof(pw));
	id_attrs_fini(&plain);
	if (hash.data != NULL)
		explicit_bzero(hash.data, hash.cap);
	id_buf_fini(&hash);
	return rc;
}

/* Attribute i of a run of MODIFY ops (for ldap_conn_modify_many). */
static void modify_value(const void *ctx, size_t i, const char **attr, const char **value)
{
	const ldap_diff_op_t *ops = ctx;
	*attr = ops[i].attribute;
	*value = ops[i].new_value;
}

/*
 * One modify request that adds objectClass posixAccount (a value added, not
 * a replace) and writes the other attributes of ops[0..n).  0 with *lrc, or
 * ID_ENOMEM.
 */
static int modify_with_class(sink_ldap_t *s, const ldap_diff_op_t *ops, size_t n,
                             int *lrc)
{
	LDAPMod *mods = calloc(n, sizeof(*mods));
	LDAPMod **mp = calloc(n + 1, sizeof(*mp));
	char *(*vals)[2] = calloc(n, sizeof(*vals));
	int rc = 0;
	if (mods == NULL || mp == NULL || vals == NULL) {
		rc = ID_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		bool cls = strcasecmp(ops[i].attribute, "objectClass") == 0;
		vals[i][0] = ops[i].new_value;
		mods[i] =
		    (LDAPMod){.mod_op = cls                        ? LDAP_MOD_ADD
		                        : ops[i].new_value == NULL ? LDAP_MOD_DELETE
		                                                   : LDAP_MOD_REPLACE,
		              .mod_type = ops[i].attribute,
		              .mod_values = ops[i].new_value ? vals[i] : NULL};
		mp[i] = &mods[i];
	}
	*lrc = ldap_conn_modify(&s->conn, ops[0].dn, mp);
out:
	free(mods);
	free(mp);
	free(vals);
	return rc;
}

/* Runs ops[0..n) — consecutive MODIFYs of one DN — as one modify request. */
static int exec_modify_batch(apply_ctx_t *c, const ldap_diff_op_t *ops, size_t n,
                             id_err_t *err)
{
	sink_ldap_t *s = c->s;
	int lrc = LDAP_SUCCESS, rc;
	bool cls = false;
	for (size_t i = 0; i < n; i++)
		cls = cls || strcasecmp(ops[i].attribute, "objectClass") == 0;
	if ((cls ? modify_with_class(s, ops, n, &lrc)
	         : ldap_conn_modify_many(&s->conn, ops[0].dn, n, modify_value, ops,
	                                 &lrc)) != 0)
		return id_err_set(err, ID_ENOMEM, "modify \"%s\": out of memory",
		                  ops[0].dn);
	if (lrc != LDAP_SUCCESS)
		return ldap_conn_fail(&s->conn, lrc, err, "modify \"%s\" (%s%s)",
		                      ops[0].dn, ops[0].attribute, n > 1 ? ", ..." : "");
	for (size_t i = 0; i < n; i++) {
		if (strcmp(ops[i].attribute, "uidNumber") == 0)
			uid_used(s, ops[i].new_value);
		if ((rc = record(c, "modify", ops[i].attribute, ops[i].old_value,
		                 ops[i].new_value, err)) != 0)
			return rc;
	}
	return 0;
}

static int exec_modrdn(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	int lrc = ldap_conn_rename(&s->conn, op->dn, op->new_rdn, op->new_superior);
	if (lrc != LDAP_SUCCESS)
		return ldap_conn_fail(&s->conn, lrc, err, "modrdn \"%s\" to \"%s\"",
		                      op->dn, op->new_value);
	return record(c, "modrdn", "dn", op->old_value, op->new_value, err);
}

static int exec_group_add(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	for (int t = 0; t < GROUP_TRIES; t++) {
		int lrc = ldap_conn_modify1(&s->conn, op->dn, LDAP_MOD_ADD, "member",
		                            op->new_value);
		if (lrc == LDAP_SUCCESS)
			return record(c, "group_add", op->attribute, NULL, op->dn, err);
		if (lrc == LDAP_TYPE_OR_VALUE_EXISTS)
			return 0; /* an earlier, interrupted apply got this far */
		if (lrc != LDAP_NO_SUCH_OBJECT)
			return ldap_conn_fail(&s->conn, lrc, err,
			                      "add member to group \"%s\"", op->dn);
		/* groupOfNames needs a member, so the first one creates it. */
		const char *pairs[] = {"objectClass", "groupOfNames", "cn", op->attribute,
		                       "member",      op->new_value,  NULL};
		lrc = ldap_conn_add_simple(&s->conn, op->dn, pairs);
		if (lrc == LDAP_SUCCESS) {
			int rc =
			    record(c, "create_group", op->attribute, NULL, op->dn, err);
			return rc != 0 ? rc
			               : record(c, "group_add", op->attribute, NULL,
			                        op->dn, err);
		}
		if (lrc != LDAP_ALREADY_EXISTS) /* else: created meanwhile, add again */
			return ldap_conn_fail(&s->conn, lrc, err, "create group \"%s\"",
			                      op->dn);
	}
	return id_err_set(err, ID_ECONFLICT,
	                  "group \"%s\" kept changing while adding \"%s\"", op->dn,
	                  op->new_value);
}

/*
 * Deletes group dn if member is its only member, guarded by an assertion
 * on the entryCSN read just before, so a member another sink adds meanwhile
 * is never lost (the delete fails and the caller retries).
 * *done tells whether the membership is gone; false means "retry".
 */
static int group_delete_if_last(apply_ctx_t *c, const ldap_diff_op_t *op, bool *done,
                                id_err_t *err)
{
	sink_ldap_t *s = c->s;
	static const char *const attrs[] = {"member", "entryCSN", NULL};
	LDAPMessage *res = NULL;
	struct berval **members = NULL, **csn = NULL;
	LDAPControl *assert_ctrl = NULL;
	id_buf_t f = ID_BUF_INIT;
	int rc = 0;
	*done = false;
	int lrc =
	    ldap_search_ext_s(s->conn.ld, op->dn, LDAP_SCOPE_BASE, "(objectClass=*)",
	                      (char **)attrs, 0, NULL, NULL, NULL, 0, &res);
	if (lrc == LDAP_NO_SUCH_OBJECT) {
		*done = true;
		goto out;
	}
	if (lrc != LDAP_SUCCESS) {
		rc = ldap_conn_fail(&s->conn, lrc, err, "read group \"%s\"", op->dn);
		goto out;
	}
	LDAPMessage *e = ldap_first_entry(s->conn.ld, res);
	if (e == NULL) {
		*done = true;
		goto out;
	}
	members = ldap_get_values_len(s->conn.ld, e, "member");
	csn = ldap_get_values_len(s->conn.ld, e, "entryCSN");
	if (ldap_count_values_len(members) != 1 || ldap_count_values_len(csn) != 1)
		goto out; /* changed since our modify: retry it */
	char *m = ldap_conn_bv_strdup(members[0]);
	bool ours = m != NULL && ldap_diff_dn_equal(m, op->old_value);
	free(m);
	if (!ours) {
		*done = true; /* someone else's last member: we are not in it */
		goto out;
	}
	/*
	 * slapd's memberof overlay runs its memberOf clean-up of the member
	 * entries under the same assertion, so the filter must also hold for
	 * them (they are not groups), or memberOf would be left dangling.
	 */
	char *cv = ldap_conn_bv_strdup(csn[0]);
	rc = cv ? ldap_conn_filter_eq(&f, NULL, "entryCSN", cv) : ID_ENOMEM;
	free(cv);
	if (rc == 0) {
		f.len--; /* drop the terminator, wrap the filter */
		char *inner = strndup((const char *)f.data, f.len);
		id_buf_reset(&f);
		rc = inner == NULL ||
		             id_buf_printf(&f, "(|%s(!(objectClass=groupOfNames)))",
		                           inner) != 0 ||
		             id_buf_append_u8(&f, 0) != 0
		         ? ID_ENOMEM
		         : 0;
		free(inner);
	}
	if (rc != 0) {
		rc = id_err_set(err, rc, "delete group \"%s\": out of memory", op->dn);
		goto out;
	}
	lrc = ldap_create_assertion_control(s->conn.ld, (char *)f.data, 1, &assert_ctrl);
	if (lrc != LDAP_SUCCESS) {
		rc = ldap_conn_fail(&s->conn, lrc, err,
		                    "assertion control for group \"%s\"", op->dn);
		goto out;
	}
	LDAPControl *ctrls[] = {assert_ctrl, NULL};
	lrc = ldap_conn_delete(&s->conn, op->dn, ctrls);
	if (lrc == LDAP_ASSERTION_FAILED)
		goto out; /* changed meanwhile: retry */
	if (lrc == LDAP_NO_SUCH_OBJECT) {
		*done = true;
		goto out;
	}
	if (lrc != LDAP_SUCCESS) {
		rc = ldap_conn_fail(&s->conn, lrc, err, "delete group \"%s\"", op->dn);
		goto out;
	}
	*done = true;
	if ((rc = record(c, "group_remove", op->attribute, op->dn, NULL, err)) == 0)
		rc = record(c, "delete_group", op->attribute, op->dn, NULL, err);
out:
	ldap_control_free(assert_ctrl);
	ldap_value_free_len(members);
	ldap_value_free_len(csn);
	ldap_msgfree(res);
	id_buf_fini(&f);
	return rc;
}

static int exec_group_remove(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	for (int t = 0; t < GROUP_TRIES; t++) {
		int lrc = ldap_conn_modify1(&s->conn, op->dn, LDAP_MOD_DELETE, "member",
		                            op->old_value);
		if (lrc == LDAP_SUCCESS)
			return record(c, "group_remove", op->attribute, op->dn, NULL,
			              err);
		if (lrc == LDAP_NO_SUCH_ATTRIBUTE || lrc == LDAP_NO_SUCH_OBJECT)
			return 0; /* not (or no longer) a member */
		if (lrc != LDAP_OBJECT_CLASS_VIOLATION)
			return ldap_conn_fail(&s->conn, lrc, err,
			                      "remove member from group \"%s\"", op->dn);
		/* The last member: groupOfNames cannot be empty, so the group goes. */
		bool done;
		int rc = group_delete_if_last(c, op, &done, err);
		if (rc != 0 || done)
			return rc;
	}
	return id_err_set(err, ID_ECONFLICT,
	                  "group \"%s\" kept changing while removing \"%s\"", op->dn,
	                  op->old_value);
}

static int exec_lock(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	int lrc;
	if (op->new_superior != NULL) {
		/* Disable by move (or the move back). */
		lrc = ldap_conn_rename(&s->conn, op->dn, op->new_rdn, op->new_superior);
	} else if (op->kind == LDAP_DIFF_OP_DISABLE) {
		lrc = ldap_conn_modify1(&s->conn, op->dn, LDAP_MOD_REPLACE, op->attribute,
		                        op->new_value);
	} else {
		/* Delete only our permanent lock, never a failed-bind lockout. */
		lrc = ldap_conn_modify1(&s->conn, op->dn, LDAP_MOD_DELETE, op->attribute,
		                        op->old_value);
		if (lrc == LDAP_NO_SUCH_ATTRIBUTE)
			return 0;
	}
	if (lrc != LDAP_SUCCESS)
		return ldap_conn_fail(&s->conn, lrc, err, "%s \"%s\"",
		                      ldap_diff_op_kind_name(op->kind), op->dn);
	return record(c, ldap_diff_op_kind_name(op->kind), op->attribute, op->old_value,
	              op->new_value, err);
}

static int exec_delete(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	int lrc = ldap_conn_delete(&s->conn, op->dn, NULL);
	if (lrc == LDAP_NO_SUCH_OBJECT)
		return 0;
	if (lrc != LDAP_SUCCESS)
		return ldap_conn_fail(&s->conn, lrc, err, "delete \"%s\"", op->dn);
	return record(c, "delete", "dn", op->dn, NULL, err);
}

/*
 * False when e came with its uid values and none is uid (an entry read
 * with the employee's for another reason: its manager); an entry read
 * without them (the uid check's own search) matched (uid=uid).
 */
static bool carries_uid(sink_ldap_t *s, LDAPMessage *e, const char *uid)
{
	struct berval **v = ldap_get_values_len(s->conn.ld, e, "uid");
	bool yes = v == NULL; /* not asked for */
	for (int i = 0; v != NULL && v[i] != NULL && !yes; i++)
		yes = v[i]->bv_len == strlen(uid) &&
		      strncasecmp(v[i]->bv_val, uid, v[i]->bv_len) == 0;
	ldap_value_free_len(v);
	return yes;
}

/* ID_ECONFLICT when an entry of res other than actual carries uid. */
static int uid_owned_by_other(apply_ctx_t *c, const ldap_diff_entry_t *actual,
                              const char *uid, LDAPMessage *res, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	int rc = 0;
	for (LDAPMessage *e = ldap_first_entry(s->conn.ld, res); e != NULL && rc == 0;
	     e = ldap_next_entry(s->conn.ld, e)) {
		char *dn = ldap_get_dn(s->conn.ld, e);
		if (dn != NULL &&
		    !(actual != NULL && ldap_diff_dn_equal(dn, actual->dn)) &&
		    carries_uid(s, e, uid)) {
			struct berval **v =
			    ldap_get_values_len(s->conn.ld, e, "employeeNumber");
			char *owner = ldap_count_values_len(v) > 0
			                  ? ldap_conn_bv_strdup(v[0])
			                  : NULL;
			if (owner != NULL && strcmp(owner, c->d->employee_id) != 0)
				rc = id_err_set(err, ID_ECONFLICT,
				                "uid %s already used by employee %s", uid,
				                owner);
			else if (owner == NULL)
				rc = id_err_set(err, ID_ECONFLICT,
				                "uid %s already used by entry \"%s\" (no "
				                "employeeNumber)",
				                uid, dn);
			free(owner);
			ldap_value_free_len(v);
		}
		ldap_memfree(dn);
	}
	return rc;
}

/*
 * Refuses a plan that would give this employee a uid another entry under
 * people_dn already has.  ID_ECONFLICT with the exact message the result
 * carries ("uid x already used by employee Y").
 */
static int check_uid_free(apply_ctx_t *c, const ldap_diff_entry_t *actual, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	const char *uid = id_attrs_get(&c->d->attributes, "uid");
	static const char *const attrs[] = {"employeeNumber", NULL};
	id_buf_t f = ID_BUF_INIT;
	LDAPMessage *res = NULL;
	int rc;
	if (uid == NULL || uid[0] == '\0')
		return 0;
	if (c->uid_res != NULL) {
		/* Read with the entry itself (read_employee_uid). */
		rc = uid_owned_by_other(c, actual, uid, c->uid_res, err);
		goto out;
	}
	if ((rc = ldap_conn_filter_eq(&f, NULL, "uid", uid)) != 0) {
		rc = id_err_set(err, rc, "uid check: out of memory");
		goto out;
	}
	/* Below people_dn, and below disabled_dn when accounts are moved there. */
	for (int pass = 0; rc == 0 && pass < (s->disabled_dn != NULL ? 2 : 1); pass++) {
		ldap_msgfree(res);
		rc =
		    ldap_conn_search(&s->conn, pass == 0 ? s->people_dn : s->disabled_dn,
		                     pass == 0 ? LDAP_SCOPE_SUBTREE : LDAP_SCOPE_ONELEVEL,
		                     (const char *)f.data, attrs, &res, err);
		if (rc != 0 && pass == 1 && s->conn.last_lrc == LDAP_NO_SUCH_OBJECT) {
			id_err_clear(err); /* no disabled OU yet */
			rc = 0;
			break;
		}
		if (rc == 0)
			rc = uid_owned_by_other(c, actual, uid, res, err);
	}
out:
	ldap_msgfree(res);
	id_buf_fini(&f);
	return rc;
}

static bool plan_names_entry(const ldap_diff_plan_t *p)
{
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].kind == LDAP_DIFF_OP_ADD ||
		    p->ops[i].kind == LDAP_DIFF_OP_MODRDN)
			return true;
	return false;
}

/*
 * True when ops[i..] are all group additions and removals: additions among
 * them may then wait for the end of the batch, since nothing after them
 * (an unlock, above all) depends on the memberships being there.
 */
static bool only_groups_from(const ldap_diff_plan_t *plan, size_t i)
{
	for (; i < plan->nops; i++)
		if (plan->ops[i].kind != LDAP_DIFF_OP_GROUP_ADD &&
		    plan->ops[i].kind != LDAP_DIFF_OP_GROUP_REMOVE)
			return false;
	return true;
}

static void later_clear(apply_ctx_t *c)
{
	for (size_t i = 0; i < c->nlater; i++)
		deferred_free(&c->later[i]);
	c->nlater = 0;
}

/* Leaves op (a GROUP_ADD) to the end of the batch (sink_ldap_batch_end). */
static int defer_group_add(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	if (c->nlater == c->caplater) {
		size_t nc = c->caplater ? c->caplater * 2 : 4;
		deferred_add_t *n = realloc(c->later, nc * sizeof(*n));
		if (n == NULL)
			goto nomem;
		c->later = n;
		c->caplater = nc;
	}
	deferred_add_t *a = &c->later[c->nlater];
	*a = (deferred_add_t){0};
	if ((a->dn = strdup(op->dn)) == NULL || (a->cn = strdup(op->attribute)) == NULL ||
	    (a->member = strdup(op->new_value)) == NULL) {
		deferred_free(a);
		goto nomem;
	}
	c->nlater++;
	return 0;
nomem:
	return id_err_set(err, ID_ENOMEM, "ldap sink: out of memory deferring a member");
}

static int exec_plan(apply_ctx_t *c, const ldap_diff_plan_t *plan, id_err_t *err)
{
	int rc = 0;
	later_clear(c); /* what an earlier attempt left is planned again */
	for (size_t i = 0; rc == 0 && i < plan->nops; i++) {
		const ldap_diff_op_t *op = &plan->ops[i];
		switch (op->kind) {
		case LDAP_DIFF_OP_ENSURE_OU:
			rc = exec_ensure_ou(c, op, err);
			break;
		case LDAP_DIFF_OP_ADD:
			rc = exec_add(c, op, err);
			break;
		case LDAP_DIFF_OP_DISABLE:
		case LDAP_DIFF_OP_ENABLE:
			rc = exec_lock(c, op, err);
			break;
		case LDAP_DIFF_OP_MODRDN:
			rc = exec_modrdn(c, op, err);
			break;
		case LDAP_DIFF_OP_MODIFY: {
			/* One request for all attribute changes of the entry. */
			size_t j = i + 1;
			while (j < plan->nops &&
			       plan->ops[j].kind == LDAP_DIFF_OP_MODIFY &&
			       strcmp(plan->ops[j].dn, op->dn) == 0)
				j++;
			rc = exec_modify_batch(c, op, j - i, err);
			i = j - 1;
			break;
		}
		case LDAP_DIFF_OP_GROUP_ADD:
			if (c->defer && only_groups_from(plan, i)) {
				rc = defer_group_add(c, op, err);
				break;
			}
			/* fall through */
		case LDAP_DIFF_OP_GROUP_REMOVE: {
			bool locked = group_lock(c->s->shared, op->dn);
			rc = op->kind == LDAP_DIFF_OP_GROUP_ADD
			         ? exec_group_add(c, op, err)
			         : exec_group_remove(c, op, err);
			if (locked)
				group_unlock(c->s->shared, op->dn);
			break;
		}
		case LDAP_DIFF_OP_DELETE:
			rc = exec_delete(c, op, err);
			break;
		default:
			rc = id_err_set(err, ID_EINVALID, "ldap sink: unknown plan op %d",
			                (int)op->kind);
		}
	}
	return rc;
}

/* One read-diff-apply (an ldap_conn_attempt_fn). */
static int apply_once(void *ctx, bool *manager_pending, bool *used_cache, id_err_t *err)
{
	apply_ctx_t *c = ctx;
	sink_ldap_t *s = c->s;
	ldap_diff_entry_t actual;
	ldap_diff_plan_t plan;
	char *mdn = NULL;
	bool found = false;
	int rc;

	ldap_diff_entry_init(&actual);
	ldap_diff_plan_init(&plan);
	c->used_cache = false;
	for (int round = 1;; round++) {
		free(mdn);
		mdn = NULL;
		ldap_msgfree(c->uid_res);
		c->uid_res = NULL;
		if ((rc = read_state(s, c->d, &actual, &found, &mdn, &c->uid_res, err)) !=
		    0)
			goto out;
		*manager_pending = c->d->manager_id != NULL && mdn == NULL;
		if ((rc = ldap_diff_compute_posix(
		         &s->layout, s->posix ? &s->posix_cfg : NULL, c->d,
		         found ? &actual : NULL, mdn, &plan, err)) != 0)
			goto out;
		long long uidn = plan.uid_number;
		bool taken = false;
		/* A number someone took since we counted: look again, re-plan. */
		if (uidn > 0 && (rc = uid_taken(s, uidn, &taken, err)) != 0)
			goto out;
		if (!taken) {
			if (plan_names_entry(&plan) &&
			    (rc = check_uid_free(c, found ? &actual : NULL, err)) != 0)
				goto out;
			rc = exec_plan(c, &plan, err);
			/* A uniqueness constraint (slapd's unique overlay) said so. */
			id_err_t terr = {0};
			if (rc == 0 || uidn <= 0 ||
			    s->conn.last_lrc != LDAP_CONSTRAINT_VIOLATION ||
			    s->conn.ld == NULL ||
			    uid_taken(s, uidn, &taken, &terr) != 0 || !taken)
				goto out;
		}
		if (round >= UID_TRIES) {
			rc =
			    id_err_set(err, ID_ECONFLICT,
			               "employee %s: uidNumber %lld was taken by someone "
			               "else %d times in a row",
			               c->d->employee_id, uidn, UID_TRIES);
			goto out;
		}
		id_log_info(LOG_COMP,
		            "employee %s: uidNumber %lld is already taken; searching "
		            "for the highest again",
		            c->d->employee_id, uidn);
		id_err_clear(err);
		if ((rc = uid_refresh(s, uidn + 1, err)) != 0)
			goto out;
	}
out:
	*used_cache = c->used_cache;
	ldap_msgfree(c->uid_res);
	c->uid_res = NULL;
	free(mdn);
	ldap_diff_plan_fini(&plan);
	ldap_diff_entry_fini(&actual);
	return rc;
}

static int later_hand_over(apply_ctx_t *c, id_err_t *err);

int sink_ldap_apply(sink_ldap_t *s, const desired_identity_t *d, sink_result_t *result,
                    id_err_t *err)
{
	if (s == NULL || d == NULL || result == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ldap_apply: NULL argument");
	apply_ctx_t c = {.s = s, .d = d, .r = result, .defer = batch_is_open(s->shared)};
	int rc =
	    ldap_conn_apply(&s->conn, "ldap", d, result, apply_once, &c, &c.changes, err);
	/* Only a successful apply's additions are made, at the batch's end. */
	if (rc == 0 && c.nlater > 0 && result->outcome != SINK_FAILED)
		rc = later_hand_over(&c, err);
	later_clear(&c);
	free(c.later);
	return rc;
}

/* ---- the end of a batch: member additions, one modify per group ---- */

void sink_ldap_batch_begin(sink_ldap_t *s)
{
	if (s == NULL)
		return;
	if (s->shared == NULL && (s->shared = shared_create()) == NULL)
		return; /* out of memory: each apply adds its members itself */
	pthread_mutex_lock(&s->shared->mu);
	s->shared->open = true;
	pthread_mutex_unlock(&s->shared->mu);
}

/* Moves c's deferred additions into the queue, bound to c's result. */
static int later_hand_over(apply_ctx_t *c, id_err_t *err)
{
	sink_shared_t *q = c->s->shared;
	int rc = 0;
	pthread_mutex_lock(&q->mu);
	if (q->n + c->nlater > q->cap) {
		size_t nc = q->cap ? q->cap : 64;
		while (nc < q->n + c->nlater)
			nc *= 2;
		deferred_add_t *n = realloc(q->items, nc * sizeof(*n));
		if (n == NULL) {
			rc = id_err_set(err, ID_ENOMEM,
			                "ldap sink: out of memory queueing members");
			goto out;
		}
		q->items = n;
		q->cap = nc;
	}
	for (size_t i = 0; i < c->nlater; i++) {
		q->items[q->n] = c->later[i];
		q->items[q->n++].r = c->r;
	}
	c->nlater = 0; /* moved */
out:
	pthread_mutex_unlock(&q->mu);
	return rc;
}

/* Group DN order; the queue's order (their addresses) within a group. */
static int cmp_deferred(const void *a, const void *b)
{
	const deferred_add_t *x = *(deferred_add_t *const *)a,
	                     *y = *(deferred_add_t *const *)b;
	int c = strcmp(x->dn, y->dn);
	return c != 0 ? c : (x < y ? -1 : x > y);
}

/*
 * Adds it[0..k) — members of one group — in one modify (or one add that
 * creates the group with all of them), then completes each one's result.
 * When that request fails, each member is added on its own through
 * exec_group_add(), whose answer says what is wrong with whom (already a
 * member, a refusal...).  A result whose addition the directory refused
 * becomes FAILED; one whose addition could not be made because the
 * directory went away becomes DEFERRED (see sink_ldap_batch_end()).
 * 0 or ID_ENOMEM.
 */
static int flush_members(sink_ldap_t *s, deferred_add_t **it, size_t k, id_err_t *err)
{
	const char *dn = it[0]->dn, *cn = it[0]->cn;
	int lrc = LDAP_OTHER;
	bool created = false;
	id_err_t cerr = {0};
	if (k > 1 && ldap_conn_ensure(&s->conn, &cerr) == 0) {
		char **vals = calloc(k + 1, sizeof(*vals));
		if (vals == NULL)
			return id_err_set(err, ID_ENOMEM, "ldap sink: out of memory");
		for (size_t i = 0; i < k; i++)
			vals[i] = it[i]->member;
		char *oc[] = {"groupOfNames", NULL}, *cnv[] = {(char *)cn, NULL};
		LDAPMod mm = {.mod_op = LDAP_MOD_ADD,
		              .mod_type = "member",
		              .mod_values = vals},
		        mo = {.mod_op = LDAP_MOD_ADD,
		              .mod_type = "objectClass",
		              .mod_values = oc},
		        mc = {
		            .mod_op = LDAP_MOD_ADD, .mod_type = "cn", .mod_values = cnv};
		LDAPMod *mods[] = {&mm, NULL}, *entry[] = {&mo, &mc, &mm, NULL};
		for (int t = 0; t < GROUP_TRIES; t++) {
			lrc = ldap_conn_modify(&s->conn, dn, mods);
			if (lrc != LDAP_NO_SUCH_OBJECT)
				break;
			/* groupOfNames needs a member: created with all of them. */
			lrc = ldap_conn_add(&s->conn, dn, entry);
			if (lrc == LDAP_SUCCESS)
				created = true;
			if (lrc != LDAP_ALREADY_EXISTS) /* else: created meanwhile */
				break;
		}
		free(vals);
	}
	for (size_t i = 0; i < k; i++) {
		sink_result_t *r = it[i]->r;
		apply_ctx_t c = {.s = s, .r = r};
		id_err_t e = {0};
		int rc = 0;
		if (lrc == LDAP_SUCCESS) {
			if (created && i == 0)
				rc = record(&c, "create_group", cn, NULL, dn, &e);
			if (rc == 0)
				rc = record(&c, "group_add", cn, NULL, dn, &e);
		} else {
			ldap_diff_op_t op = {.kind = LDAP_DIFF_OP_GROUP_ADD,
			                     .dn = it[i]->dn,
			                     .attribute = it[i]->cn,
			                     .new_value = it[i]->member};
			if ((rc = ldap_conn_ensure(&s->conn, &e)) == 0)
				rc = exec_group_add(&c, &op, &e);
		}
		if (rc == ID_ENOMEM)
			return id_err_set(err, ID_ENOMEM, "%s", e.msg);
		if (rc == 0) {
			if (c.changes > 0)
				r->outcome = SINK_APPLIED;
			continue;
		}
		r->outcome = s->conn.ld == NULL ? SINK_DEFERRED : SINK_FAILED;
		free(r->error);
		if ((r->error = strdup(e.msg[0] ? e.msg : id_err_str(rc))) == NULL)
			return id_err_set(err, ID_ENOMEM, "ldap sink: out of memory");
	}
	return 0;
}

int sink_ldap_batch_end(sink_ldap_t *s, id_err_t *err)
{
	sink_shared_t *q = s != NULL ? s->shared : NULL;
	if (q == NULL)
		return 0;
	pthread_mutex_lock(&q->mu);
	deferred_add_t *items = q->items;
	size_t n = q->n;
	q->items = NULL;
	q->n = q->cap = 0;
	q->open = false;
	pthread_mutex_unlock(&q->mu);
	if (n == 0) {
		free(items);
		return 0;
	}
	int rc = 0;
	deferred_add_t **order = malloc(n * sizeof(*order));
	if (order == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "ldap sink: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		order[i] = &items[i];
	qsort(order, n, sizeof(*order), cmp_deferred);
	for (size_t i = 0; i < n && rc == 0;) {
		size_t k = 1;
		while (i + k < n && k < MEMBERS_PER_MODIFY &&
		       strcmp(order[i + k]->dn, order[i]->dn) == 0)
			k++;
		rc = flush_members(s, order + i, k, err);
		i += k;
	}
out:
	free(order);
	for (size_t i = 0; i < n; i++)
		deferred_free(&items[i]);
	free(items);
	return rc;
}

/* ---- the accounts of the subtree (reconcile) ---- */

int sink_ldap_accounts(sink_ldap_t *s, sink_account_list_t *out, id_err_t *err)
{
	if (s == NULL || out == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ldap_accounts: NULL argument");
	int rc =
	    ldap_conn_list_accounts(&s->conn, s->people_dn, "(objectClass=inetOrgPerson)",
	                            "uid", "employeeNumber", out, err);
	if (rc == 0 && s->disabled_dn != NULL)
		rc = ldap_conn_list_accounts(&s->conn, s->disabled_dn,
		                             "(objectClass=inetOrgPerson)", "uid",
		                             "employeeNumber", out, err);
	return rc;
}

int sink_ldap_remove(sink_ldap_t *s, const char *dn, id_err_t *err)
{
	if (s == NULL || dn == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ldap_remove: NULL argument");
	int rc = ldap_conn_ensure(&s->conn, err);
	if (rc != 0)
		return rc;
	int lrc = ldap_conn_delete(&s->conn, dn, NULL);
	if (lrc == LDAP_SUCCESS || lrc == LDAP_NO_SUCH_OBJECT)
		return 0;
	return ldap_conn_fail(&s->conn, lrc, err, "delete \"%s\"", dn);
}
