/*
 * sink_ldap.c — executes ldap_diff plans against slapd with libldap.
 *
 * Flow of one apply: search the entry by employeeNumber (managed attributes
 * plus memberOf and pwdAccountLockedTime), resolve the manager's DN, diff,
 * refuse a uid already carried by another employee, then run the plan in
 * order.  Each op tolerates the state a half-finished earlier apply left
 * behind ("already a member", "already gone"), so re-running converges.
 *
 * Connection rule: any transport-level failure (server down, timeout)
 * drops the handle (s->ld = NULL); apply then reconnects once and redoes
 * the whole read-diff-apply, which is safe because the diff starts from
 * what is really there.  libldap error strings are turned into id_err_t
 * messages here and nowhere else.
 * Threading: one thread per handle (see sink_ldap.h).
 */
#include "sinks/sink_ldap.h"

#include <ldap.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"

#define LOG_COMP "sink.ldap"

/* OU DNs known to exist; bounded so a huge OU churn cannot grow it. */
#define OU_CACHE_MAX 4096
/* Rounds of a group update that raced with another writer. */
#define GROUP_TRIES 4

struct sink_ldap {
	LDAP *ld; /* NULL while disconnected */
	char *url;
	char *bind_dn;
	char *password;
	size_t password_len;
	char *people_dn;
	char *groups_dn;
	ldap_diff_layout_t layout;
	int timeout_ms;
	uint64_t writes;
	int last_lrc; /* libldap code of the last failure, for retry decisions */
	/* What an employee search asks for: managed + lock + memberOf. */
	const char *read_attrs[24];
	char **ous;
	size_t nous;
};

/* ---- errors and connection ---- */

static bool lrc_transport(int lrc)
{
	return lrc == LDAP_SERVER_DOWN || lrc == LDAP_CONNECT_ERROR ||
	       lrc == LDAP_TIMEOUT || lrc == LDAP_UNAVAILABLE || lrc == LDAP_BUSY;
}

static void sl_disconnect(sink_ldap_t *s)
{
	if (s->ld != NULL)
		ldap_unbind_ext_s(s->ld, NULL, NULL);
	s->ld = NULL;
}

/*
 * Fills err with "<what>: <libldap message> (<code>); matched DN "..";
 * diagnostic ".."" from the handle's last result, and drops the connection
 * when the failure was the transport's.  Returns ID_ETIMEOUT or ID_ELDAP.
 */
static int sl_fail(sink_ldap_t *s, int lrc, id_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int sl_fail(sink_ldap_t *s, int lrc, id_err_t *err, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	char *diag = NULL, *matched = NULL;
	if (s->ld != NULL) {
		ldap_get_option(s->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
		ldap_get_option(s->ld, LDAP_OPT_MATCHED_DN, &matched);
	}
	int code = lrc == LDAP_TIMEOUT ? ID_ETIMEOUT : ID_ELDAP;
	s->last_lrc = lrc;
	id_err_set(err, code, "%s: %s (%d)%s%s%s%s%s%s", what, ldap_err2string(lrc), lrc,
	           matched && *matched ? "; matched DN \"" : "",
	           matched && *matched ? matched : "", matched && *matched ? "\"" : "",
	           diag && *diag ? "; diagnostic \"" : "", diag && *diag ? diag : "",
	           diag && *diag ? "\"" : "");
	ldap_memfree(diag);
	ldap_memfree(matched);
	if (lrc_transport(lrc))
		sl_disconnect(s);
	return code;
}

static int sl_connect(sink_ldap_t *s, id_err_t *err)
{
	LDAP *ld = NULL;
	int lrc = ldap_initialize(&ld, s->url);
	if (lrc != LDAP_SUCCESS)
		return id_err_set(err, ID_ECONFIG, "ldap url \"%s\": %s", s->url,
		                  ldap_err2string(lrc));
	int v3 = LDAP_VERSION3;
	struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON) != LDAP_OPT_SUCCESS) {
		ldap_unbind_ext_s(ld, NULL, NULL);
		return id_err_set(err, ID_ELDAP, "ldap %s: cannot set connection options",
		                  s->url);
	}
	struct berval cred = {s->password_len, s->password};
	const char *who = s->bind_dn != NULL ? s->bind_dn : "";
	lrc = ldap_sasl_bind_s(ld, who, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	s->ld = ld;
	if (lrc != LDAP_SUCCESS) {
		/* The password is never part of the message. */
		int rc = sl_fail(s, lrc, err, "ldap bind to %s as \"%s\"", s->url, who);
		sl_disconnect(s);
		return rc;
	}
	return 0;
}

static int sl_ensure_connected(sink_ldap_t *s, id_err_t *err)
{
	if (s->ld != NULL)
		return 0;
	id_log_info(LOG_COMP, "connecting to %s", s->url);
	return sl_connect(s, err);
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
	const char *pw = opts->bind_password != NULL ? opts->bind_password : "";
	s->password_len = strlen(pw);
	if ((s->url = strdup(opts->url)) == NULL || (s->password = strdup(pw)) == NULL ||
	    (s->people_dn = strdup(opts->people_dn)) == NULL ||
	    (s->groups_dn = strdup(opts->groups_dn)) == NULL)
		goto nomem;
	if (opts->bind_dn != NULL && opts->bind_dn[0] != '\0' &&
	    (s->bind_dn = strdup(opts->bind_dn)) == NULL)
		goto nomem;
	size_t k = 0;
	for (const char *const *a = ldap_diff_managed_attrs; *a != NULL && k + 3 < 24;
	     a++)
		s->read_attrs[k++] = *a;
	s->read_attrs[k++] = LDAP_DIFF_LOCK_ATTR;
	s->read_attrs[k++] = "memberOf"; /* operational: only returned when asked */
	s->read_attrs[k] = NULL;
	s->layout.people_dn = s->people_dn;
	s->layout.groups_dn = s->groups_dn;
	s->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
	if (sl_connect(s, err) != 0) {
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

static void ou_cache_clear(sink_ldap_t *s)
{
	for (size_t i = 0; i < s->nous; i++)
		free(s->ous[i]);
	free(s->ous);
	s->ous = NULL;
	s->nous = 0;
}

void sink_ldap_close(sink_ldap_t *s)
{
	if (s == NULL)
		return;
	sl_disconnect(s);
	if (s->password != NULL)
		explicit_bzero(s->password, s->password_len);
	free(s->password);
	free(s->url);
	free(s->bind_dn);
	free(s->people_dn);
	free(s->groups_dn);
	ou_cache_clear(s);
	free(s);
}

uint64_t sink_ldap_writes(const sink_ldap_t *s)
{
	return s != NULL ? s->writes : 0;
}

/* ---- reads ---- */

/* RFC 4515 filter value escaping. */
static int filter_escape(id_buf_t *out, const char *v)
{
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;
		int rc = (c == '*' || c == '(' || c == ')' || c == '\\')
		             ? id_buf_printf(out, "\\%02x", c)
		             : id_buf_append_u8(out, c);
		if (rc != 0)
			return ID_ENOMEM;
	}
	return 0;
}

/* "(attr=<escaped value>)" into out, NUL-terminated. */
static int filter_eq(id_buf_t *out, const char *attr, const char *value)
{
	id_buf_reset(out);
	if (id_buf_printf(out, "(%s=", attr) != 0 || filter_escape(out, value) != 0 ||
	    id_buf_append_str(out, ")") != 0 || id_buf_append_u8(out, 0) != 0)
		return ID_ENOMEM;
	return 0;
}

static int sl_search(sink_ldap_t *s, const char *base, int scope, const char *filter,
                     const char *const *attrs, LDAPMessage **res, id_err_t *err)
{
	*res = NULL;
	int rc = sl_ensure_connected(s, err);
	if (rc != 0)
		return rc;
	struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
	int lrc = ldap_search_ext_s(s->ld, base, scope, filter, (char **)attrs, 0, NULL,
	                            NULL, &tv, 0, res);
	if (lrc != LDAP_SUCCESS) {
		ldap_msgfree(*res);
		*res = NULL;
		return sl_fail(s, lrc, err, "ldap search %s under \"%s\"", filter, base);
	}
	return 0;
}

/* The canonical managed name of attr, or NULL when not managed. */
static const char *managed_name(const char *attr)
{
	for (const char *const *a = ldap_diff_managed_attrs; *a != NULL; a++)
		if (strcasecmp(*a, attr) == 0)
			return *a;
	return NULL;
}

static char *bv_strdup(const struct berval *bv)
{
	return strndup(bv->bv_val, bv->bv_len);
}

/* Converts one search entry into out. */
static int entry_convert(sink_ldap_t *s, LDAPMessage *e, ldap_diff_entry_t *out,
                         id_err_t *err)
{
	BerElement *ber = NULL;
	id_buf_t joined = ID_BUF_INIT;
	int rc = 0;
	char *dn = ldap_get_dn(s->ld, e);
	if (dn == NULL)
		return id_err_set(err, ID_ELDAP,
		                  "ldap: entry without DN in search result");
	if (ldap_diff_entry_set_dn(out, dn) != 0)
		goto nomem;
	for (char *a = ldap_first_attribute(s->ld, e, &ber); a != NULL;
	     a = ldap_next_attribute(s->ld, e, ber)) {
		struct berval **vals = ldap_get_values_len(s->ld, e, a);
		size_t n = (size_t)ldap_count_values_len(vals);
		const char *name = managed_name(a);
		int r = 0;
		if (strcasecmp(a, "memberOf") == 0) {
			for (size_t i = 0; r == 0 && i < n; i++) {
				char *v = bv_strdup(vals[i]);
				r = v ? ldap_diff_entry_add_member_of(out, v) : ID_ENOMEM;
				free(v);
			}
		} else if (strcasecmp(a, LDAP_DIFF_LOCK_ATTR) == 0 && n > 0) {
			char *v = bv_strdup(vals[0]);
			r = v ? ldap_diff_entry_set_lock(out, v) : ID_ENOMEM;
			free(v);
		} else if (name != NULL && n > 0) {
			/* Several values are joined so they never equal one desired
			 * value. */
			id_buf_reset(&joined);
			for (size_t i = 0; r == 0 && i < n; i++)
				if ((i > 0 && id_buf_append_u8(&joined, '\n') != 0) ||
				    id_buf_append(&joined, vals[i]->bv_val,
				                  vals[i]->bv_len) != 0)
					r = ID_ENOMEM;
			if (r == 0 && id_buf_append_u8(&joined, 0) != 0)
				r = ID_ENOMEM;
			if (r == 0)
				r = id_attrs_set(&out->attrs, name,
				                 (const char *)joined.data);
		}
		ldap_value_free_len(vals);
		ldap_memfree(a);
		if (r != 0)
			goto nomem;
	}
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "ldap: reading entry \"%s\": out of memory", dn);
out:
	ber_free(ber, 0);
	ldap_memfree(dn);
	id_buf_fini(&joined);
	return rc;
}

/*
 * Searches the people subtree for employeeNumber=id.  0 with *found set,
 * ID_ECONFLICT when several entries carry it.
 */
static int read_employee(sink_ldap_t *s, const char *id, const char *const *attrs,
                         ldap_diff_entry_t *out, bool *found, id_err_t *err)
{
	id_buf_t f = ID_BUF_INIT;
	LDAPMessage *res = NULL;
	int rc;
	*found = false;
	ldap_diff_entry_fini(out);
	if ((rc = filter_eq(&f, "employeeNumber", id)) != 0) {
		rc = id_err_set(err, rc, "ldap: employee %s: out of memory", id);
		goto out;
	}
	if ((rc = sl_search(s, s->people_dn, LDAP_SCOPE_SUBTREE, (const char *)f.data,
	                    attrs, &res, err)) != 0)
		goto out;
	int n = ldap_count_entries(s->ld, res);
	if (n > 1) {
		/* Name them all: a human has to pick the one to keep. */
		id_buf_t dns = ID_BUF_INIT;
		for (LDAPMessage *e = ldap_first_entry(s->ld, res); e != NULL;
		     e = ldap_next_entry(s->ld, e)) {
			char *dn = ldap_get_dn(s->ld, e);
			id_buf_printf(&dns, "%s\"%s\"", dns.len ? ", " : "",
			              dn ? dn : "?");
			ldap_memfree(dn);
		}
		id_buf_append_u8(&dns, 0);
		rc = id_err_set(err, ID_ECONFLICT, "employee %s has %d entries: %s", id,
		                n, dns.data ? (const char *)dns.data : "");
		id_buf_fini(&dns);
		goto out;
	}
	if (n == 1) {
		if ((rc = entry_convert(s, ldap_first_entry(s->ld, res), out, err)) != 0)
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

/* Reads the entry of d and the manager's DN (*manager_dn malloc'd or NULL). */
static int read_state(sink_ldap_t *s, const desired_identity_t *d,
                      ldap_diff_entry_t *actual, bool *found, char **manager_dn,
                      id_err_t *err)
{
	*manager_dn = NULL;
	int rc = read_employee(s, d->employee_id, s->read_attrs, actual, found, err);
	if (rc != 0 || d->manager_id == NULL || d->manager_id[0] == '\0')
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
	int rc = read_state(s, d, &actual, &found, &mdn, err);
	if (rc == 0)
		rc = ldap_diff_compute(&s->layout, d, found ? &actual : NULL, mdn, plan,
		                       err);
	if (manager_pending != NULL)
		*manager_pending = rc == 0 && d->manager_id != NULL && mdn == NULL;
	free(mdn);
	ldap_diff_entry_fini(&actual);
	return rc;
}

/* ---- writes ---- */

typedef struct apply_ctx {
	sink_ldap_t *s;
	const desired_identity_t *d;
	sink_result_t *r;
	size_t changes;  /* ops recorded as done */
	bool used_cache; /* an ENSURE_OU was skipped thanks to the cache */
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

static int sl_add(sink_ldap_t *s, const char *dn, LDAPMod **mods)
{
	s->writes++;
	return ldap_add_ext_s(s->ld, dn, mods, NULL, NULL);
}

static int sl_modify(sink_ldap_t *s, const char *dn, LDAPMod **mods)
{
	s->writes++;
	return ldap_modify_ext_s(s->ld, dn, mods, NULL, NULL);
}

/* One-attribute modify; value NULL deletes the whole attribute. */
static int sl_modify1(sink_ldap_t *s, const char *dn, int mod_op, const char *attr,
                      const char *value)
{
	char *vals[2] = {(char *)value, NULL};
	LDAPMod mod = {.mod_op = mod_op,
	               .mod_type = (char *)attr,
	               .mod_values = value ? vals : NULL};
	LDAPMod *mods[2] = {&mod, NULL};
	return sl_modify(s, dn, mods);
}

/* Adds an entry made of pairs of (attribute, value), NULL-terminated. */
static int sl_add_simple(sink_ldap_t *s, const char *dn, const char *const *pairs)
{
	LDAPMod mods[8];
	LDAPMod *mp[9];
	char *vals[8][2];
	size_t n = 0;
	for (; pairs[2 * n] != NULL && n < 8; n++) {
		vals[n][0] = (char *)pairs[2 * n + 1];
		vals[n][1] = NULL;
		mods[n].mod_op = LDAP_MOD_ADD;
		mods[n].mod_type = (char *)pairs[2 * n];
		mods[n].mod_values = vals[n];
		mp[n] = &mods[n];
	}
	mp[n] = NULL;
	return sl_add(s, dn, mp);
}

static bool ou_cached(const sink_ldap_t *s, const char *dn)
{
	for (size_t i = 0; i < s->nous; i++)
		if (strcmp(s->ous[i], dn) == 0)
			return true;
	return false;
}

static void ou_cache_put(sink_ldap_t *s, const char *dn)
{
	if (s->nous >= OU_CACHE_MAX)
		ou_cache_clear(s);
	char **n = realloc(s->ous, (s->nous + 1) * sizeof(*n));
	if (n == NULL)
		return; /* only a cache */
	s->ous = n;
	if ((n[s->nous] = strdup(dn)) != NULL)
		s->nous++;
}

static int exec_ensure_ou(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	if (ou_cached(s, op->dn)) {
		c->used_cache = true;
		return 0;
	}
	const char *pairs[] = {"objectClass", "organizationalUnit", "ou", op->new_value,
	                       NULL};
	int lrc = sl_add_simple(s, op->dn, pairs);
	if (lrc == LDAP_SUCCESS) {
		int rc = record(c, "create_ou", op->dn, NULL, op->new_value, err);
		if (rc != 0)
			return rc;
	} else if (lrc != LDAP_ALREADY_EXISTS) {
		return sl_fail(s, lrc, err, "create OU \"%s\"", op->dn);
	}
	ou_cache_put(s, op->dn);
	return 0;
}

static int exec_add(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	size_t n = op->attrs.len;
	int rc = 0;
	LDAPMod *mods = calloc(n + 1, sizeof(*mods));
	LDAPMod **mp = calloc(n + 2, sizeof(*mp));
	char *(*vals)[2] = calloc(n + 1, sizeof(*vals));
	if (mods == NULL || mp == NULL || vals == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "add \"%s\": out of memory", op->dn);
		goto out;
	}
	vals[0][0] = "inetOrgPerson";
	mods[0].mod_op = LDAP_MOD_ADD;
	mods[0].mod_type = "objectClass";
	mods[0].mod_values = vals[0];
	mp[0] = &mods[0];
	for (size_t i = 0; i < n; i++) {
		vals[i + 1][0] = op->attrs.items[i].value;
		mods[i + 1].mod_op = LDAP_MOD_ADD;
		mods[i + 1].mod_type = op->attrs.items[i].key;
		mods[i + 1].mod_values = vals[i + 1];
		mp[i + 1] = &mods[i + 1];
	}
	int lrc = sl_add(s, op->dn, mp);
	if (lrc != LDAP_SUCCESS) {
		rc = sl_fail(s, lrc, err, "add \"%s\"", op->dn);
		goto out;
	}
	if ((rc = record(c, "add", "dn", NULL, op->dn, err)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++)
		if ((rc = record(c, "add", op->attrs.items[i].key, NULL,
		                 op->attrs.items[i].value, err)) != 0)
			goto out;
out:
	free(mods);
	free(mp);
	free(vals);
	return rc;
}

/* Runs ops[i..j) — consecutive MODIFYs of one DN — as one modify request. */
static int exec_modify_batch(apply_ctx_t *c, const ldap_diff_op_t *ops, size_t n,
                             id_err_t *err)
{
	sink_ldap_t *s = c->s;
	int rc = 0;
	LDAPMod *mods = calloc(n, sizeof(*mods));
	LDAPMod **mp = calloc(n + 1, sizeof(*mp));
	char *(*vals)[2] = calloc(n, sizeof(*vals));
	if (mods == NULL || mp == NULL || vals == NULL) {
		rc =
		    id_err_set(err, ID_ENOMEM, "modify \"%s\": out of memory", ops[0].dn);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		vals[i][0] = ops[i].new_value;
		mods[i].mod_op = ops[i].new_value ? LDAP_MOD_REPLACE : LDAP_MOD_DELETE;
		mods[i].mod_type = ops[i].attribute;
		mods[i].mod_values = ops[i].new_value ? vals[i] : NULL;
		mp[i] = &mods[i];
	}
	int lrc = sl_modify(s, ops[0].dn, mp);
	if (lrc != LDAP_SUCCESS) {
		rc = sl_fail(s, lrc, err, "modify \"%s\" (%s%s)", ops[0].dn,
		             ops[0].attribute, n > 1 ? ", ..." : "");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if ((rc = record(c, "modify", ops[i].attribute, ops[i].old_value,
		                 ops[i].new_value, err)) != 0)
			goto out;
out:
	free(mods);
	free(mp);
	free(vals);
	return rc;
}

static int exec_modrdn(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	s->writes++;
	int lrc =
	    ldap_rename_s(s->ld, op->dn, op->new_rdn, op->new_superior, 1, NULL, NULL);
	if (lrc != LDAP_SUCCESS)
		return sl_fail(s, lrc, err, "modrdn \"%s\" to \"%s\"", op->dn,
		               op->new_value);
	return record(c, "modrdn", "dn", op->old_value, op->new_value, err);
}

static int exec_group_add(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	for (int t = 0; t < GROUP_TRIES; t++) {
		int lrc = sl_modify1(s, op->dn, LDAP_MOD_ADD, "member", op->new_value);
		if (lrc == LDAP_SUCCESS)
			return record(c, "group_add", op->attribute, NULL, op->dn, err);
		if (lrc == LDAP_TYPE_OR_VALUE_EXISTS)
			return 0; /* an earlier, interrupted apply got this far */
		if (lrc != LDAP_NO_SUCH_OBJECT)
			return sl_fail(s, lrc, err, "add member to group \"%s\"", op->dn);
		/* groupOfNames needs a member, so the first one creates it. */
		const char *pairs[] = {"objectClass", "groupOfNames", "cn", op->attribute,
		                       "member",      op->new_value,  NULL};
		lrc = sl_add_simple(s, op->dn, pairs);
		if (lrc == LDAP_SUCCESS) {
			int rc =
			    record(c, "create_group", op->attribute, NULL, op->dn, err);
			return rc != 0 ? rc
			               : record(c, "group_add", op->attribute, NULL,
			                        op->dn, err);
		}
		if (lrc != LDAP_ALREADY_EXISTS) /* else: created meanwhile, add again */
			return sl_fail(s, lrc, err, "create group \"%s\"", op->dn);
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
	int lrc = ldap_search_ext_s(s->ld, op->dn, LDAP_SCOPE_BASE, "(objectClass=*)",
	                            (char **)attrs, 0, NULL, NULL, NULL, 0, &res);
	if (lrc == LDAP_NO_SUCH_OBJECT) {
		*done = true;
		goto out;
	}
	if (lrc != LDAP_SUCCESS) {
		rc = sl_fail(s, lrc, err, "read group \"%s\"", op->dn);
		goto out;
	}
	LDAPMessage *e = ldap_first_entry(s->ld, res);
	if (e == NULL) {
		*done = true;
		goto out;
	}
	members = ldap_get_values_len(s->ld, e, "member");
	csn = ldap_get_values_len(s->ld, e, "entryCSN");
	if (ldap_count_values_len(members) != 1 || ldap_count_values_len(csn) != 1)
		goto out; /* changed since our modify: retry it */
	char *m = bv_strdup(members[0]);
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
	char *cv = bv_strdup(csn[0]);
	rc = cv ? filter_eq(&f, "entryCSN", cv) : ID_ENOMEM;
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
	lrc = ldap_create_assertion_control(s->ld, (char *)f.data, 1, &assert_ctrl);
	if (lrc != LDAP_SUCCESS) {
		rc = sl_fail(s, lrc, err, "assertion control for group \"%s\"", op->dn);
		goto out;
	}
	LDAPControl *ctrls[] = {assert_ctrl, NULL};
	s->writes++;
	lrc = ldap_delete_ext_s(s->ld, op->dn, ctrls, NULL);
	if (lrc == LDAP_ASSERTION_FAILED)
		goto out; /* changed meanwhile: retry */
	if (lrc == LDAP_NO_SUCH_OBJECT) {
		*done = true;
		goto out;
	}
	if (lrc != LDAP_SUCCESS) {
		rc = sl_fail(s, lrc, err, "delete group \"%s\"", op->dn);
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
		int lrc = sl_modify1(s, op->dn, LDAP_MOD_DELETE, "member", op->old_value);
		if (lrc == LDAP_SUCCESS)
			return record(c, "group_remove", op->attribute, op->dn, NULL,
			              err);
		if (lrc == LDAP_NO_SUCH_ATTRIBUTE || lrc == LDAP_NO_SUCH_OBJECT)
			return 0; /* not (or no longer) a member */
		if (lrc != LDAP_OBJECT_CLASS_VIOLATION)
			return sl_fail(s, lrc, err, "remove member from group \"%s\"",
			               op->dn);
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
	if (op->kind == LDAP_DIFF_OP_DISABLE) {
		lrc =
		    sl_modify1(s, op->dn, LDAP_MOD_REPLACE, op->attribute, op->new_value);
	} else {
		/* Delete only our permanent lock, never a failed-bind lockout. */
		lrc =
		    sl_modify1(s, op->dn, LDAP_MOD_DELETE, op->attribute, op->old_value);
		if (lrc == LDAP_NO_SUCH_ATTRIBUTE)
			return 0;
	}
	if (lrc != LDAP_SUCCESS)
		return sl_fail(s, lrc, err, "%s \"%s\"", ldap_diff_op_kind_name(op->kind),
		               op->dn);
	return record(c, ldap_diff_op_kind_name(op->kind), op->attribute, op->old_value,
	              op->new_value, err);
}

static int exec_delete(apply_ctx_t *c, const ldap_diff_op_t *op, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	s->writes++;
	int lrc = ldap_delete_ext_s(s->ld, op->dn, NULL, NULL);
	if (lrc == LDAP_NO_SUCH_OBJECT)
		return 0;
	if (lrc != LDAP_SUCCESS)
		return sl_fail(s, lrc, err, "delete \"%s\"", op->dn);
	return record(c, "delete", "dn", op->dn, NULL, err);
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
	if ((rc = filter_eq(&f, "uid", uid)) != 0) {
		rc = id_err_set(err, rc, "uid check: out of memory");
		goto out;
	}
	if ((rc = sl_search(s, s->people_dn, LDAP_SCOPE_SUBTREE, (const char *)f.data,
	                    attrs, &res, err)) != 0)
		goto out;
	for (LDAPMessage *e = ldap_first_entry(s->ld, res); e != NULL && rc == 0;
	     e = ldap_next_entry(s->ld, e)) {
		char *dn = ldap_get_dn(s->ld, e);
		if (dn != NULL &&
		    !(actual != NULL && ldap_diff_dn_equal(dn, actual->dn))) {
			struct berval **v =
			    ldap_get_values_len(s->ld, e, "employeeNumber");
			char *owner =
			    ldap_count_values_len(v) > 0 ? bv_strdup(v[0]) : NULL;
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

static int exec_plan(apply_ctx_t *c, const ldap_diff_plan_t *plan, id_err_t *err)
{
	int rc = 0;
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
			rc = exec_group_add(c, op, err);
			break;
		case LDAP_DIFF_OP_GROUP_REMOVE:
			rc = exec_group_remove(c, op, err);
			break;
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

/* What the caller of apply_once should do after a failure. */
enum { AGAIN_NO, AGAIN_STALE_CACHE, AGAIN_RECONNECT };

static int apply_once(apply_ctx_t *c, bool *manager_pending, int *again, id_err_t *err)
{
	sink_ldap_t *s = c->s;
	ldap_diff_entry_t actual;
	ldap_diff_plan_t plan;
	char *mdn = NULL;
	bool found = false;
	int rc;

	ldap_diff_entry_init(&actual);
	ldap_diff_plan_init(&plan);
	*again = AGAIN_NO;
	c->used_cache = false;
	s->last_lrc = LDAP_SUCCESS;
	if ((rc = sl_ensure_connected(s, err)) != 0)
		goto out;
	if ((rc = read_state(s, c->d, &actual, &found, &mdn, err)) != 0)
		goto out;
	*manager_pending = c->d->manager_id != NULL && mdn == NULL;
	if ((rc = ldap_diff_compute(&s->layout, c->d, found ? &actual : NULL, mdn, &plan,
	                            err)) != 0)
		goto out;
	if (plan_names_entry(&plan) &&
	    (rc = check_uid_free(c, found ? &actual : NULL, err)) != 0)
		goto out;
	rc = exec_plan(c, &plan, err);
out:
	if (rc != 0 && s->ld == NULL)
		*again = AGAIN_RECONNECT;
	else if (rc == ID_ELDAP && c->used_cache && s->last_lrc == LDAP_NO_SUCH_OBJECT)
		*again = AGAIN_STALE_CACHE; /* an OU we thought existed is gone */
	free(mdn);
	ldap_diff_plan_fini(&plan);
	ldap_diff_entry_fini(&actual);
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sink_ldap_apply(sink_ldap_t *s, const desired_identity_t *d, sink_result_t *result,
                    id_err_t *err)
{
	if (s == NULL || d == NULL || result == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ldap_apply: NULL argument");
	id_err_t local;
	id_err_t *e = err != NULL ? err : &local;
	id_err_clear(e);
	sink_result_fini(result);
	result->desired_version = d->version;
	if ((result->target = strdup("ldap")) == NULL ||
	    (result->employee_id = strdup(d->employee_id)) == NULL)
		return id_err_set(err, ID_ENOMEM, "sink_ldap_apply: out of memory");

	apply_ctx_t c = {.s = s, .d = d, .r = result};
	bool manager_pending = false;
	int again = AGAIN_NO, rc = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		id_err_clear(e);
		rc = apply_once(&c, &manager_pending, &again, e);
		if (rc == 0 || again == AGAIN_NO)
			break;
		if (attempt > 0)
			break;
		if (again == AGAIN_STALE_CACHE)
			ou_cache_clear(s);
		else
			id_log_warn(LOG_COMP, "employee %s: %s; reconnecting",
			            d->employee_id, e->msg);
	}
	if (manager_pending && rc == 0 &&
	    sink_result_add_op(result, "manager_pending", "manager", NULL,
	                       d->manager_id) != 0)
		rc = id_err_set(e, ID_ENOMEM, "sink_ldap_apply: out of memory");
	result->at = now_ms();
	if (rc == 0) {
		result->outcome = c.changes > 0 ? SINK_APPLIED : SINK_NOOP;
		return 0;
	}
	result->outcome = SINK_FAILED;
	if ((result->error = strdup(e->msg[0] ? e->msg : id_err_str(rc))) == NULL)
		return id_err_set(err, ID_ENOMEM, "sink_ldap_apply: out of memory");
	/* Unreachable directory: the caller should retry this desired later. */
	if (again == AGAIN_RECONNECT && (rc == ID_ELDAP || rc == ID_ETIMEOUT))
		return rc;
	return rc == ID_ENOMEM ? rc : 0;
}
