/*
 * sink_ad.c — executes ad_diff plans against Active Directory with libldap
 * over TLS.
 *
 * Flow of one apply: one search of the domain finds the user by employeeID
 * below people_dn (managed and extra attributes, userAccountControl,
 * memberOf), the manager's user the same way, and any object holding the
 * sAMAccountName the employee gets; diff; refuse a sAMAccountName another
 * object of the domain already has; then run the plan in order.  A new
 * extra attribute name is first looked up in the schema (once per
 * process).  Each op tolerates the
 * state a half-finished earlier apply left behind ("already a member",
 * "already gone"), so re-running converges.
 *
 * A new user is created by one add that carries every attribute, the
 * enable/disable state and the initial password, so there is never a
 * half-made account.  The password line is written to the delivery file
 * (and fsync'd) before that add is sent: a crash can leave a line for an
 * account that was never created (the next creation appends a newer line),
 * never an account whose password nobody has.
 *
 * Connection rule: any transport-level failure drops the handle
 * (s->conn.ld = NULL); apply then reconnects once and redoes the whole
 * read-diff-apply.  libldap error strings become id_err_t messages here.
 * Threading: one thread per handle (see sink_ad.h).
 */
#include "sinks/sink_ad.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/log.h"
#include "sinks/ad_diff.h"
#include "sinks/ldap_conn.h"
#include "sinks/ldap_diff.h"
#include "sinks/sink_password.h"

#define LOG_COMP "sink.ad"

/* Rounds of a group update that raced with another writer. */
#define GROUP_TRIES 4
/* Microsoft's tree-delete control: removes a user with child objects. */
#define AD_TREE_DELETE_OID "1.2.840.113556.1.4.805"

struct sink_ad {
	ldap_conn_t conn;
	char *base_dn;
	char *people_dn;
	char *groups_dn;
	char *upn_suffix;
	char *password_file;
	bool must_change;
	ad_diff_layout_t layout;
	ldap_diff_layout_t glayout; /* for the shared group-DN helpers */
	/*
	 * Extra attributes (ad_diff.h) seen in desired identities since open,
	 * each checked once against the schema and spelled as the schema
	 * does; given to every diff.  Read with every employee, so
	 * one the policy stops producing is cleared.
	 */
	char **extras;
	size_t nextras;
	char *schema_dn; /* the schema naming context, read at first need */
	/* What an employee search asks for: the managed attributes,
	 * userAccountControl, memberOf, then the extras (rebuilt as they grow). */
	const char **read_attrs;
};

/* AD's default password rule (see ad_diff_password_complex()). */
static const sink_password_policy_t ad_policy = {AD_DIFF_PASSWORD_LEN, 3, true};

static int tls_require_cert(sink_ad_tls_check_t c)
{
	switch (c) {
	case SINK_AD_TLS_NEVER:
		return LDAP_OPT_X_TLS_NEVER;
	case SINK_AD_TLS_ALLOW:
		return LDAP_OPT_X_TLS_ALLOW;
	case SINK_AD_TLS_TRY:
		return LDAP_OPT_X_TLS_TRY;
	default:
		return LDAP_OPT_X_TLS_DEMAND;
	}
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL || src[0] == '\0')
		return 0;
	return (*dst = strdup(src)) != NULL ? 0 : ID_ENOMEM;
}

/* (Re)builds s->read_attrs from the managed attributes and s->extras. */
static int read_attrs_build(sink_ad_t *s)
{
	size_t n = 0;
	while (ad_diff_managed_attrs[n] != NULL)
		n++;
	const char **a = calloc(n + 3 + s->nextras, sizeof(*a));
	if (a == NULL)
		return ID_ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		a[k++] = ad_diff_managed_attrs[i];
	a[k++] = "userAccountControl";
	a[k++] = "memberOf";
	for (size_t i = 0; i < s->nextras; i++)
		a[k++] = s->extras[i];
	a[k] = NULL;
	free(s->read_attrs);
	s->read_attrs = a;
	return 0;
}

sink_ad_t *sink_ad_open(const sink_ad_opts_t *opts, id_err_t *err)
{
	sink_ad_t *s = NULL;
	if (opts == NULL || opts->url == NULL || opts->base_dn == NULL ||
	    opts->people_dn == NULL || opts->groups_dn == NULL) {
		id_err_set(err, ID_EINVALID,
		           "sink_ad_open: url, base_dn, people_dn and groups_dn are "
		           "required");
		goto out;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL)
		goto nomem;
	/* The password and unicodePwd never travel in clear. */
	const ldap_conn_tls_t tls = {true, tls_require_cert(opts->tls_check),
	                             opts->tls_ca_file};
	if (ldap_conn_init(&s->conn, "ad", LOG_COMP, opts->url, opts->bind_dn,
	                   opts->bind_password, &tls, opts->timeout_ms) != 0 ||
	    (s->base_dn = strdup(opts->base_dn)) == NULL ||
	    (s->people_dn = strdup(opts->people_dn)) == NULL ||
	    (s->groups_dn = strdup(opts->groups_dn)) == NULL ||
	    dup_opt(&s->upn_suffix, opts->upn_suffix) != 0 ||
	    dup_opt(&s->password_file, opts->password_file) != 0)
		goto nomem;
	if (read_attrs_build(s) != 0)
		goto nomem;
	s->layout.people_dn = s->people_dn;
	s->layout.groups_dn = s->groups_dn;
	s->layout.upn_suffix = s->upn_suffix;
	s->glayout.people_dn = s->people_dn;
	s->glayout.groups_dn = s->groups_dn;
	s->must_change = opts->password_must_change;
	if (ldap_conn_connect(&s->conn, err) != 0) {
		sink_ad_close(s);
		s = NULL;
	}
	goto out;
nomem:
	id_err_set(err, ID_ENOMEM, "sink_ad_open: out of memory");
	sink_ad_close(s);
	s = NULL;
out:
	return s;
}

void sink_ad_close(sink_ad_t *s)
{
	if (s == NULL)
		return;
	ldap_conn_fini(&s->conn);
	free(s->base_dn);
	free(s->people_dn);
	free(s->groups_dn);
	free(s->upn_suffix);
	free(s->password_file);
	for (size_t i = 0; i < s->nextras; i++)
		free(s->extras[i]);
	free(s->extras);
	free(s->schema_dn);
	free(s->read_attrs);
	free(s);
}

uint64_t sink_ad_writes(const sink_ad_t *s)
{
	return s != NULL ? s->conn.writes : 0;
}

/* ---- reads ---- */

static int entry_dn(void *out, const char *dn)
{
	return ad_diff_entry_set_dn(out, dn);
}

/* One attribute of a search entry into the ad_diff_entry_t out. */
static int entry_attr(void *out, const char *a, struct berval **vals, size_t n)
{
	ad_diff_entry_t *e = out;
	/* Anything else the search returns is an extra attribute asked for. */
	const char *name = ldap_conn_name_in(ad_diff_managed_attrs, a);
	if (name == NULL && ad_diff_is_extra(a))
		name = a;
	int r = 0;
	if (strcasecmp(a, "memberOf") == 0) {
		for (size_t i = 0; r == 0 && i < n; i++) {
			char *v = ldap_conn_bv_strdup(vals[i]);
			r = v ? ad_diff_entry_add_member_of(e, v) : ID_ENOMEM;
			free(v);
		}
	} else if (strcasecmp(a, "userAccountControl") == 0 && n > 0) {
		char *v = ldap_conn_bv_strdup(vals[0]);
		if (v == NULL)
			return ID_ENOMEM;
		/* An int32 on the wire: may come back signed. */
		e->uac = (uint32_t)strtoll(v, NULL, 10);
		e->has_uac = true;
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

static int entry_convert(sink_ad_t *s, LDAPMessage *e, ad_diff_entry_t *out,
                         id_err_t *err)
{
	return ldap_conn_entry_walk(&s->conn, e, entry_dn, entry_attr, out, err);
}

/* The schema naming context (rootDSE schemaNamingContext) into s->schema_dn. */
static int schema_dn_read(sink_ad_t *s, id_err_t *err)
{
	static const char *const attrs[] = {"schemaNamingContext", NULL};
	LDAPMessage *res = NULL;
	int rc = ldap_conn_search(&s->conn, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs,
	                          &res, err);
	LDAPMessage *e = rc == 0 ? ldap_first_entry(s->conn.ld, res) : NULL;
	struct berval **v =
	    e != NULL ? ldap_get_values_len(s->conn.ld, e, "schemaNamingContext") : NULL;
	if (rc == 0 && ldap_count_values_len(v) > 0) {
		if ((s->schema_dn = ldap_conn_bv_strdup(v[0])) == NULL)
			rc = id_err_set(err, ID_ENOMEM, "ad: out of memory");
	} else if (rc == 0) {
		/* Not announced: where AD keeps it. */
		size_t len = strlen(s->base_dn) + 32;
		if ((s->schema_dn = malloc(len)) == NULL)
			rc = id_err_set(err, ID_ENOMEM, "ad: out of memory");
		else
			snprintf(s->schema_dn, len, "CN=Schema,CN=Configuration,%s",
			         s->base_dn);
	}
	ldap_value_free_len(v);
	ldap_msgfree(res);
	return rc;
}

/*
 * Makes every extra attribute of d known (s->extras): a name not seen yet
 * is looked up in the schema first.  One the directory does not define, or
 * defines as system-only, is ID_EINVALID naming it and the employee, before
 * anything is written for that employee.
 */
static int extras_learn(sink_ad_t *s, const desired_identity_t *d, id_err_t *err)
{
	static const char *const attrs[] = {"lDAPDisplayName", "systemOnly", NULL};
	id_buf_t f = ID_BUF_INIT;
	LDAPMessage *res = NULL;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < d->attributes.len; i++) {
		const char *k = d->attributes.items[i].key;
		if (!ad_diff_is_extra(k))
			continue;
		bool known = false;
		for (size_t j = 0; !known && j < s->nextras; j++)
			known = strcasecmp(s->extras[j], k) == 0;
		if (known)
			continue;
		if (s->schema_dn == NULL && (rc = schema_dn_read(s, err)) != 0)
			break;
		ldap_msgfree(res);
		res = NULL;
		LDAPMessage *e = NULL;
		if ((rc = ldap_conn_filter_eq(&f, "(objectClass=attributeSchema)",
		                              "lDAPDisplayName", k)) != 0) {
			rc = id_err_set(err, rc, "ad: out of memory");
			break;
		}
		if ((rc = ldap_conn_search_unique(&s->conn, s->schema_dn,
		                                  LDAP_SCOPE_ONELEVEL,
		                                  (const char *)f.data, attrs, k,
		                                  "schema entries", &res, &e, err)) != 0)
			break;
		struct berval **name =
		    e != NULL ? ldap_get_values_len(s->conn.ld, e, "lDAPDisplayName")
		              : NULL;
		struct berval **sys =
		    e != NULL ? ldap_get_values_len(s->conn.ld, e, "systemOnly") : NULL;
		bool system_only = ldap_count_values_len(sys) > 0 &&
		                   sys[0]->bv_len == 4 &&
		                   strncasecmp(sys[0]->bv_val, "TRUE", 4) == 0;
		char *canon =
		    ldap_count_values_len(name) > 0 ? ldap_conn_bv_strdup(name[0]) : NULL;
		ldap_value_free_len(name);
		ldap_value_free_len(sys);
		if (e == NULL || system_only) {
			free(canon);
			rc = id_err_set(err, ID_EINVALID,
			                "employee %s: attribute %s %s; nothing written "
			                "(fix the policy's ad section or the schema)",
			                d->employee_id, k,
			                e == NULL ? "is not defined in the AD schema"
			                          : "is system-only in the AD schema");
			break;
		}
		char **n = canon != NULL
		               ? realloc(s->extras, (s->nextras + 1) * sizeof(*n))
		               : NULL;
		if (n == NULL) {
			free(canon);
			rc = id_err_set(err, ID_ENOMEM, "ad: out of memory");
			break;
		}
		s->extras = n;
		s->extras[s->nextras++] = canon;
		if (read_attrs_build(s) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "ad: out of memory");
			break;
		}
		id_log_info(LOG_COMP,
		            "attribute %s is managed from now on (extra attribute "
		            "of the policy's ad section)",
		            canon);
	}
	ldap_msgfree(res);
	id_buf_fini(&f);
	return rc;
}

/* True when dn is strictly below base (compared as DNs, not as strings). */
static bool dn_below(const char *dn, const char *base)
{
	for (size_t i = 0; dn[i] != '\0'; i++) {
		if (dn[i] == '\\' && dn[i + 1] != '\0')
			i++;
		else if (dn[i] == ',' && ldap_diff_dn_equal(dn + i + 1, base))
			return true;
	}
	return false;
}

/* The first value of attribute a of entry e equals v (ignoring case, as
 * AD's matching rules for employeeID and sAMAccountName do). */
static bool value_is(LDAP *ld, LDAPMessage *e, const char *a, const char *v)
{
	struct berval **vals = ldap_get_values_len(ld, e, a);
	bool hit = ldap_count_values_len(vals) > 0 && strlen(v) == vals[0]->bv_len &&
	           strncasecmp(vals[0]->bv_val, v, vals[0]->bv_len) == 0;
	ldap_value_free_len(vals);
	return hit;
}

/* Appends one RFC 4515 term (built by ldap_conn_filter_eq) to f. */
static int filter_term(id_buf_t *f, id_buf_t *tmp, const char *prefix, const char *attr,
                       const char *value)
{
	if (ldap_conn_filter_eq(tmp, prefix, attr, value) != 0)
		return ID_ENOMEM;
	return id_buf_append(f, tmp->data, tmp->len - 1) != 0 ? ID_ENOMEM : 0;
}

/*
 * What one apply reads, in one search of the domain (the terms are
 * indexed): the user of the employee and the manager's user (by employeeID,
 * below people_dn), and any object holding the sAMAccountName the employee
 * gets (sAMAccountName is unique in the whole domain).  Three searches
 * before; one round trip now, which is most of an apply's reads.
 */
typedef struct ad_state {
	ad_diff_entry_t actual;
	bool found;
	char *manager_dn;   /* NULL: no manager, or none found (or ambiguous) */
	char *sam_conflict; /* another object holds the sAMAccountName: why */
} ad_state_t;

static void ad_state_init(ad_state_t *st)
{
	memset(st, 0, sizeof(*st));
	ad_diff_entry_init(&st->actual);
}

static void ad_state_fini(ad_state_t *st)
{
	ad_diff_entry_fini(&st->actual);
	free(st->manager_dn);
	free(st->sam_conflict);
	ad_state_init(st);
}

/* Entry e is the user of employee id: below people_dn, employeeID id. */
static bool role_employee(sink_ad_t *s, LDAPMessage *e, const char *id)
{
	char *dn = ldap_get_dn(s->conn.ld, e);
	bool hit = dn != NULL && dn_below(dn, s->people_dn) &&
	           value_is(s->conn.ld, e, "employeeID", id);
	ldap_memfree(dn);
	return hit;
}

/* The entries of res in role for id: how many, the first in *first, and
 * their DNs in dns when more than one. */
static int role_entries(sink_ad_t *s, LDAPMessage *res, const char *id,
                        LDAPMessage **first, id_buf_t *dns)
{
	int n = 0;
	*first = NULL;
	id_buf_reset(dns);
	for (LDAPMessage *e = ldap_first_entry(s->conn.ld, res); e != NULL;
	     e = ldap_next_entry(s->conn.ld, e)) {
		if (!role_employee(s, e, id))
			continue;
		char *dn = ldap_get_dn(s->conn.ld, e);
		(void)id_buf_printf(dns, "%s\"%s\"", n > 0 ? ", " : "", dn ? dn : "?");
		ldap_memfree(dn);
		if (n++ == 0)
			*first = e;
	}
	(void)id_buf_append_u8(dns, 0);
	return n;
}

/*
 * Reads the state of one apply into st (init'd by the caller; fini'd and
 * refilled).  Several users below people_dn with the employee's id is
 * ID_ECONFLICT naming every DN; an ambiguous manager is left alone (a
 * warning), like a missing one.
 */
static int read_state(sink_ad_t *s, const desired_identity_t *d, ad_state_t *st,
                      id_err_t *err)
{
	id_buf_t f = ID_BUF_INIT, tmp = ID_BUF_INIT, dns = ID_BUF_INIT;
	LDAPMessage *res = NULL, *e;
	char *sam = NULL;
	int rc;
	ad_state_fini(st);
	if ((rc = d->state != LC_DELETED ? extras_learn(s, d, err) : 0) != 0)
		goto out;
	bool live = d->state != LC_DELETED;
	const char *mid = live && d->manager_id != NULL && d->manager_id[0] != '\0' &&
	                          strcasecmp(d->manager_id, d->employee_id) != 0
	                      ? d->manager_id
	                      : NULL;
	if (live)
		sam = ad_diff_sam_account_name(d);
	if (id_buf_append_str(&f, "(|") != 0 ||
	    filter_term(&f, &tmp, "(objectClass=user)", "employeeID", d->employee_id) ||
	    (mid != NULL &&
	     filter_term(&f, &tmp, "(objectClass=user)", "employeeID", mid) != 0) ||
	    (sam != NULL && filter_term(&f, &tmp, NULL, "sAMAccountName", sam) != 0) ||
	    id_buf_append_str(&f, ")") != 0 || id_buf_append_u8(&f, 0) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "ad: employee %s: out of memory",
		                d->employee_id);
		goto out;
	}
	if ((rc = ldap_conn_search(&s->conn, s->base_dn, LDAP_SCOPE_SUBTREE,
	                           (const char *)f.data, s->read_attrs, &res, err)) != 0)
		goto out;

	int n = role_entries(s, res, d->employee_id, &e, &dns);
	if (n > 1) {
		rc = id_err_set(err, ID_ECONFLICT, "employee %s has %d users: %s",
		                d->employee_id, n, (const char *)dns.data);
		goto out;
	}
	if (e != NULL) {
		if ((rc = entry_convert(s, e, &st->actual, err)) != 0)
			goto out;
		st->found = true;
	}
	if (d->manager_id != NULL && live && mid == NULL && st->found &&
	    strcasecmp(d->manager_id, d->employee_id) == 0 &&
	    (st->manager_dn = strdup(st->actual.dn)) == NULL)
		goto nomem;
	if (mid != NULL) {
		n = role_entries(s, res, mid, &e, &dns);
		if (n > 1) {
			id_log_warn(
			    LOG_COMP,
			    "employee %s: manager %s is ambiguous: employee %s has "
			    "%d users: %s",
			    d->employee_id, mid, mid, n, (const char *)dns.data);
		} else if (e != NULL) {
			char *dn = ldap_get_dn(s->conn.ld, e);
			st->manager_dn = dn != NULL ? strdup(dn) : NULL;
			ldap_memfree(dn);
			if (st->manager_dn == NULL)
				goto nomem;
		}
	}
	/* Another object with the sAMAccountName: the result names its owner
	 * (AD would refuse the write anyway). */
	for (e = ldap_first_entry(s->conn.ld, res); sam != NULL && e != NULL;
	     e = ldap_next_entry(s->conn.ld, e)) {
		if (!value_is(s->conn.ld, e, "sAMAccountName", sam))
			continue;
		char *dn = ldap_get_dn(s->conn.ld, e);
		if (dn != NULL && !(st->found && ldap_diff_dn_equal(dn, st->actual.dn))) {
			struct berval **v =
			    ldap_get_values_len(s->conn.ld, e, "employeeID");
			char *owner = ldap_count_values_len(v) > 0
			                  ? ldap_conn_bv_strdup(v[0])
			                  : NULL;
			id_buf_reset(&tmp);
			rc = owner != NULL
			         ? id_buf_printf(&tmp,
			                         "sAMAccountName %s already used by "
			                         "employee %s",
			                         sam, owner)
			         : id_buf_printf(&tmp,
			                         "sAMAccountName %s already used by "
			                         "\"%s\"",
			                         sam, dn);
			free(owner);
			ldap_value_free_len(v);
			if (rc != 0 || id_buf_append_u8(&tmp, 0) != 0 ||
			    (st->sam_conflict = strdup((const char *)tmp.data)) == NULL) {
				ldap_memfree(dn);
				goto nomem;
			}
			rc = 0;
		}
		ldap_memfree(dn);
		if (st->sam_conflict != NULL)
			break;
	}
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "ad: employee %s: out of memory", d->employee_id);
out:
	free(sam);
	ldap_msgfree(res);
	id_buf_fini(&f);
	id_buf_fini(&tmp);
	id_buf_fini(&dns);
	return rc;
}

/* ---- writes ---- */

typedef struct apply_ctx {
	sink_ad_t *s;
	const desired_identity_t *d;
	sink_result_t *r;
	char *cur_dn;    /* where the user is right now (owned) */
	size_t changes;  /* ops recorded as done */
	bool used_cache; /* an ENSURE_OU was skipped thanks to the cache */
} apply_ctx_t;

static int record(apply_ctx_t *c, const char *op, const char *attribute,
                  const char *old_value, const char *new_value, id_err_t *err)
{
	if (sink_result_add_op(c->r, op, attribute, old_value, new_value) != 0)
		return id_err_set(err, ID_ENOMEM,
		                  "ad sink: out of memory recording an op");
	c->changes++;
	return 0;
}

static int set_cur_dn(apply_ctx_t *c, const char *dn, id_err_t *err)
{
	char *n = strdup(dn);
	if (n == NULL)
		return id_err_set(err, ID_ENOMEM, "ad sink: out of memory");
	free(c->cur_dn);
	c->cur_dn = n;
	return 0;
}

static int exec_ensure_ou(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
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

static int exec_add(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	char pw[AD_DIFF_PASSWORD_LEN + 1] = {0};
	id_buf_t upw = ID_BUF_INIT;
	int rc = 0, lrc = LDAP_SUCCESS;
	const char *sam = id_attrs_get(&op->attrs, "sAMAccountName");
	if ((rc = sink_password_generate(&ad_policy, sam,
	                                 id_attrs_get(&op->attrs, "displayName"), pw,
	                                 err)) != 0 ||
	    (rc = sink_password_deliver(s->password_file, c->d->employee_id,
	                                sam ? sam : "", pw, err)) != 0)
		goto out;
	if (ad_diff_unicode_pwd(pw, &upw) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "add \"%s\": out of memory", op->dn);
		goto out;
	}
	struct berval pwv = {upw.len, (char *)upw.data};
	struct berval *pwvals[2] = {&pwv, NULL};
	char *zero[2] = {"0", NULL}; /* expired: a new one is picked at first logon */
	LDAPMod pwmod = {.mod_op = LDAP_MOD_ADD | LDAP_MOD_BVALUES,
	                 .mod_type = "unicodePwd",
	                 .mod_bvalues = pwvals};
	LDAPMod lastset = {
	    .mod_op = LDAP_MOD_ADD, .mod_type = "pwdLastSet", .mod_values = zero};
	LDAPMod *extra[3] = {&pwmod, s->must_change ? &lastset : NULL, NULL};
	const char *dn = op->dn;
	if (ldap_conn_add_entry(&s->conn, dn, "user", &op->attrs, extra, &lrc) != 0)
		goto nomem;
	if (lrc == LDAP_ALREADY_EXISTS && op->alt_dn != NULL) {
		/* The CN is taken in that OU (or the sAMAccountName raced): try
		 * "<cn> (<sAMAccountName>)"; a sAMAccountName clash fails again. */
		dn = op->alt_dn;
		if (ldap_conn_add_entry(&s->conn, dn, "user", &op->attrs, extra, &lrc) !=
		    0)
			goto nomem;
	}
	if (lrc != LDAP_SUCCESS) {
		rc = ldap_conn_fail(&s->conn, lrc, err, "employee %s: add \"%s\"",
		                    c->d->employee_id, dn);
		goto out;
	}
	if ((rc = set_cur_dn(c, dn, err)) != 0 ||
	    (rc = record(c, "add", "dn", NULL, dn, err)) != 0)
		goto out;
	for (size_t i = 0; i < op->attrs.len; i++)
		if ((rc = record(c, "add", op->attrs.items[i].key, NULL,
		                 op->attrs.items[i].value, err)) != 0)
			goto out;
	rc = record(c, "add", "unicodePwd", NULL, "(initial password delivered)", err);
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "add \"%s\": out of memory", op->dn);
out:
	explicit_bzero(pw, sizeof(pw));
	if (upw.data != NULL)
		explicit_bzero(upw.data, upw.cap);
	id_buf_fini(&upw);
	return rc;
}

/* Attribute i of a run of MODIFY ops (for ldap_conn_modify_many). */
static void modify_value(const void *ctx, size_t i, const char **attr, const char **value)
{
	const ad_diff_op_t *ops = ctx;
	*attr = ops[i].attribute;
	*value = ops[i].new_value;
}

/* Runs n consecutive MODIFY ops on the user as one modify request. */
static int exec_modify_batch(apply_ctx_t *c, const ad_diff_op_t *ops, size_t n,
                             id_err_t *err)
{
	sink_ad_t *s = c->s;
	int lrc = LDAP_SUCCESS, rc;
	if (ldap_conn_modify_many(&s->conn, c->cur_dn, n, modify_value, ops, &lrc) != 0)
		return id_err_set(err, ID_ENOMEM, "modify \"%s\": out of memory",
		                  c->cur_dn);
	if (lrc != LDAP_SUCCESS) {
		/* Every attribute of the request: the refused one is among them. */
		id_buf_t names = ID_BUF_INIT;
		for (size_t i = 0; i < n; i++)
			(void)id_buf_printf(&names, "%s%s", i > 0 ? ", " : "",
			                    ops[i].attribute);
		(void)id_buf_append_u8(&names, 0);
		rc = ldap_conn_fail(&s->conn, lrc, err, "employee %s: modify \"%s\" (%s)",
		                    c->d->employee_id, c->cur_dn,
		                    names.data != NULL ? (const char *)names.data : "?");
		id_buf_fini(&names);
		return rc;
	}
	for (size_t i = 0; i < n; i++)
		if ((rc = record(c, "modify", ops[i].attribute, ops[i].old_value,
		                 ops[i].new_value, err)) != 0)
			return rc;
	return 0;
}

static int exec_modrdn(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	const char *to = op->new_value;
	int lrc = ldap_conn_rename(&s->conn, c->cur_dn, op->new_rdn, op->new_superior);
	if (lrc == LDAP_ALREADY_EXISTS && op->alt_rdn != NULL) {
		to = op->alt_dn;
		lrc =
		    ldap_conn_rename(&s->conn, c->cur_dn, op->alt_rdn, op->new_superior);
	}
	if (lrc != LDAP_SUCCESS)
		return ldap_conn_fail(&s->conn, lrc, err, "modrdn \"%s\" to \"%s\"",
		                      c->cur_dn, to);
	int rc = record(c, "modrdn", "dn", c->cur_dn, to, err);
	return rc != 0 ? rc : set_cur_dn(c, to, err);
}

static int exec_uac(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	int lrc = ldap_conn_modify1(&c->s->conn, c->cur_dn, LDAP_MOD_REPLACE,
	                            op->attribute, op->new_value);
	if (lrc != LDAP_SUCCESS)
		return ldap_conn_fail(&c->s->conn, lrc, err, "%s \"%s\"",
		                      ad_diff_op_kind_name(op->kind), c->cur_dn);
	return record(c, ad_diff_op_kind_name(op->kind), op->attribute, op->old_value,
	              op->new_value, err);
}

/* A group name usable as its sAMAccountName (else AD makes one up). */
static bool group_sam_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64 || name[n - 1] == '.')
		return false;
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p < 0x20 || strchr("\"/\\[]:;|=,+*?<>@", *p) != NULL)
			return false;
	return true;
}

static int exec_group_add(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	bool with_sam = group_sam_ok(op->attribute);
	for (int t = 0; t < GROUP_TRIES; t++) {
		int lrc = ldap_conn_modify1(&s->conn, op->dn, LDAP_MOD_ADD, "member",
		                            c->cur_dn);
		if (lrc == LDAP_SUCCESS)
			return record(c, "group_add", op->attribute, NULL, op->dn, err);
		/* AD answers "already exists" for a member already there. */
		if (lrc == LDAP_ALREADY_EXISTS || lrc == LDAP_TYPE_OR_VALUE_EXISTS)
			return 0;
		if (lrc != LDAP_NO_SUCH_OBJECT)
			return ldap_conn_fail(&s->conn, lrc, err,
			                      "add member to group \"%s\"", op->dn);
		const char *pairs[] = {"objectClass",    "group",       "cn",
		                       op->attribute,    "member",      c->cur_dn,
		                       "sAMAccountName", op->attribute, NULL};
		if (!with_sam)
			pairs[6] = NULL;
		lrc = ldap_conn_add_simple(&s->conn, op->dn, pairs);
		if (lrc == LDAP_SUCCESS) {
			int rc =
			    record(c, "create_group", op->attribute, NULL, op->dn, err);
			return rc != 0 ? rc
			               : record(c, "group_add", op->attribute, NULL,
			                        op->dn, err);
		}
		if (lrc != LDAP_ALREADY_EXISTS)
			return ldap_conn_fail(&s->conn, lrc, err, "create group \"%s\"",
			                      op->dn);
		/*
		 * Either the group appeared meanwhile (the next member add works)
		 * or its name is another object's sAMAccountName: if the group is
		 * still missing next round, create it without one.
		 */
		if (t > 0)
			with_sam = false;
	}
	return id_err_set(err, ID_ECONFLICT,
	                  "group \"%s\" kept changing while adding \"%s\"", op->dn,
	                  c->cur_dn);
}

static int exec_group_remove(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	int lrc =
	    ldap_conn_modify1(&s->conn, op->dn, LDAP_MOD_DELETE, "member", c->cur_dn);
	if (lrc == LDAP_SUCCESS)
		return record(c, "group_remove", op->attribute, op->dn, NULL, err);
	/* Not (or no longer) a member: AD says "unwilling to perform". */
	if (lrc == LDAP_UNWILLING_TO_PERFORM || lrc == LDAP_NO_SUCH_ATTRIBUTE ||
	    lrc == LDAP_NO_SUCH_OBJECT)
		return 0;
	return ldap_conn_fail(&s->conn, lrc, err, "remove member from group \"%s\"",
	                      op->dn);
}

static int exec_delete(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	int lrc = ldap_conn_delete(&s->conn, op->dn, NULL);
	if (lrc == LDAP_NOT_ALLOWED_ON_NONLEAF) {
		/* Objects some applications hang below users go with them. */
		LDAPControl tree = {.ldctl_oid = AD_TREE_DELETE_OID,
		                    .ldctl_value = {0, NULL},
		                    .ldctl_iscritical = 1};
		LDAPControl *ctrls[] = {&tree, NULL};
		lrc = ldap_conn_delete(&s->conn, op->dn, ctrls);
	}
	if (lrc == LDAP_NO_SUCH_OBJECT)
		return 0;
	if (lrc != LDAP_SUCCESS)
		return ldap_conn_fail(&s->conn, lrc, err, "delete \"%s\"", op->dn);
	return record(c, "delete", "dn", op->dn, NULL, err);
}

static bool plan_sets_sam(const ad_diff_plan_t *p)
{
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].kind == AD_DIFF_OP_ADD ||
		    (p->ops[i].kind == AD_DIFF_OP_MODIFY &&
		     strcmp(p->ops[i].attribute, "sAMAccountName") == 0))
			return true;
	return false;
}

static int exec_plan(apply_ctx_t *c, const ad_diff_plan_t *plan, id_err_t *err)
{
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < plan->nops; i++) {
		const ad_diff_op_t *op = &plan->ops[i];
		switch (op->kind) {
		case AD_DIFF_OP_ENSURE_OU:
			rc = exec_ensure_ou(c, op, err);
			break;
		case AD_DIFF_OP_ADD:
			rc = exec_add(c, op, err);
			break;
		case AD_DIFF_OP_DISABLE:
		case AD_DIFF_OP_ENABLE:
			rc = exec_uac(c, op, err);
			break;
		case AD_DIFF_OP_MODRDN:
			rc = exec_modrdn(c, op, err);
			break;
		case AD_DIFF_OP_MODIFY: {
			/* One request for all attribute changes of the user. */
			size_t j = i + 1;
			while (j < plan->nops && plan->ops[j].kind == AD_DIFF_OP_MODIFY)
				j++;
			rc = exec_modify_batch(c, op, j - i, err);
			i = j - 1;
			break;
		}
		case AD_DIFF_OP_GROUP_ADD:
			rc = exec_group_add(c, op, err);
			break;
		case AD_DIFF_OP_GROUP_REMOVE:
			rc = exec_group_remove(c, op, err);
			break;
		case AD_DIFF_OP_DELETE:
			rc = exec_delete(c, op, err);
			break;
		default:
			rc = id_err_set(err, ID_EINVALID, "ad sink: unknown plan op %d",
			                (int)op->kind);
		}
	}
	return rc;
}

/* One read-diff-apply (an ldap_conn_attempt_fn). */
static int apply_once(void *ctx, bool *manager_pending, bool *used_cache, id_err_t *err)
{
	apply_ctx_t *c = ctx;
	sink_ad_t *s = c->s;
	ad_state_t st;
	ad_diff_plan_t plan;
	int rc;

	ad_state_init(&st);
	ad_diff_plan_init(&plan);
	c->used_cache = false;
	if ((rc = read_state(s, c->d, &st, err)) != 0)
		goto out;
	*manager_pending = c->d->state != LC_DELETED && c->d->manager_id != NULL &&
	                   st.manager_dn == NULL;
	if ((rc = ad_diff_compute_extra(&s->layout, (const char *const *)s->extras,
	                                s->nextras, c->d, st.found ? &st.actual : NULL,
	                                st.manager_dn, &plan, err)) != 0)
		goto out;
	/* Refused before anything is written: the result names the owner. */
	if (plan.sam != NULL && plan_sets_sam(&plan) && st.sam_conflict != NULL) {
		rc = id_err_set(err, ID_ECONFLICT, "%s", st.sam_conflict);
		goto out;
	}
	free(c->cur_dn);
	c->cur_dn = NULL;
	if (st.found && (rc = set_cur_dn(c, st.actual.dn, err)) != 0)
		goto out;
	rc = exec_plan(c, &plan, err);
out:
	*used_cache = c->used_cache;
	ad_diff_plan_fini(&plan);
	ad_state_fini(&st);
	return rc;
}

int sink_ad_apply(sink_ad_t *s, const desired_identity_t *d, sink_result_t *result,
                  id_err_t *err)
{
	if (s == NULL || d == NULL || result == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ad_apply: NULL argument");
	apply_ctx_t c = {.s = s, .d = d, .r = result};
	int rc =
	    ldap_conn_apply(&s->conn, "ad", d, result, apply_once, &c, &c.changes, err);
	free(c.cur_dn);
	return rc;
}

int sink_ad_plan(sink_ad_t *s, const desired_identity_t *d, ad_diff_plan_t *plan,
                 bool *manager_pending, id_err_t *err)
{
	if (s == NULL || d == NULL || plan == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ad_plan: NULL argument");
	ad_state_t st;
	ad_state_init(&st);
	int rc = read_state(s, d, &st, err);
	if (rc == 0)
		rc = ad_diff_compute_extra(&s->layout, (const char *const *)s->extras,
		                           s->nextras, d, st.found ? &st.actual : NULL,
		                           st.manager_dn, plan, err);
	if (manager_pending != NULL)
		*manager_pending = rc == 0 && d->state != LC_DELETED &&
		                   d->manager_id != NULL && st.manager_dn == NULL;
	ad_state_fini(&st);
	return rc;
}

/* ---- the accounts of the subtree (reconcile) ---- */

int sink_ad_accounts(sink_ad_t *s, sink_account_list_t *out, id_err_t *err)
{
	if (s == NULL || out == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ad_accounts: NULL argument");
	/* Computers are users too (objectClass user); they are not accounts
	 * of people. */
	return ldap_conn_list_accounts(&s->conn, s->people_dn,
	                               "(&(objectClass=user)(!(objectClass=computer)))",
	                               "sAMAccountName", "employeeID", out, err);
}

int sink_ad_remove(sink_ad_t *s, const char *dn, id_err_t *err)
{
	if (s == NULL || dn == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ad_remove: NULL argument");
	int rc = ldap_conn_ensure(&s->conn, err);
	if (rc != 0)
		return rc;
	sink_result_t r;
	sink_result_init(&r);
	apply_ctx_t c = {.s = s, .r = &r};
	ad_diff_op_t op = {.kind = AD_DIFF_OP_DELETE, .dn = (char *)dn};
	rc = exec_delete(&c, &op, err);
	sink_result_fini(&r);
	return rc;
}
