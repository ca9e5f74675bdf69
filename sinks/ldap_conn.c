/*
 * ldap_conn.c — the libldap plumbing shared by the OpenLDAP and AD sinks
 * (see ldap_conn.h).  libldap error strings become id_err_t messages here
 * (ldap_conn_fail) and in the sinks' own op executors, nowhere else.
 * Threading: one thread per connection.
 */
#include "sinks/ldap_conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"

/* OU DNs known to exist; bounded so a huge OU churn cannot grow it. */
#define OU_CACHE_MAX 4096

static bool lrc_transport(int lrc)
{
	return lrc == LDAP_SERVER_DOWN || lrc == LDAP_CONNECT_ERROR ||
	       lrc == LDAP_TIMEOUT || lrc == LDAP_UNAVAILABLE || lrc == LDAP_BUSY;
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL || src[0] == '\0')
		return 0;
	return (*dst = strdup(src)) != NULL ? 0 : ID_ENOMEM;
}

int ldap_conn_init(ldap_conn_t *c, const char *label, const char *log_comp,
                   const char *url, const char *bind_dn, const char *password,
                   const ldap_conn_tls_t *tls, int timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->label = label;
	c->log_comp = log_comp;
	const char *pw = password != NULL ? password : "";
	c->password_len = strlen(pw);
	if ((c->url = strdup(url)) == NULL || (c->password = strdup(pw)) == NULL ||
	    dup_opt(&c->bind_dn, bind_dn) != 0 ||
	    (tls != NULL && dup_opt(&c->tls_ca_file, tls->ca_file) != 0)) {
		ldap_conn_fini(c);
		return ID_ENOMEM;
	}
	if (tls != NULL) {
		c->tls = tls->tls;
		c->tls_require = tls->require_cert;
	}
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
	return 0;
}

void ldap_conn_disconnect(ldap_conn_t *c)
{
	if (c->ld != NULL)
		ldap_unbind_ext_s(c->ld, NULL, NULL);
	c->ld = NULL;
}

void ldap_conn_ou_clear(ldap_conn_t *c)
{
	for (size_t i = 0; i < c->nous; i++)
		free(c->ous[i]);
	free(c->ous);
	c->ous = NULL;
	c->nous = 0;
}

void ldap_conn_fini(ldap_conn_t *c)
{
	if (c == NULL)
		return;
	ldap_conn_disconnect(c);
	if (c->password != NULL)
		explicit_bzero(c->password, c->password_len);
	free(c->password);
	free(c->url);
	free(c->bind_dn);
	free(c->tls_ca_file);
	ldap_conn_ou_clear(c);
	memset(c, 0, sizeof(*c));
}

int ldap_conn_fail(ldap_conn_t *c, int lrc, id_err_t *err, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	char *diag = NULL, *matched = NULL;
	if (c->ld != NULL) {
		ldap_get_option(c->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
		ldap_get_option(c->ld, LDAP_OPT_MATCHED_DN, &matched);
	}
	int code = lrc == LDAP_TIMEOUT ? ID_ETIMEOUT : ID_ELDAP;
	c->last_lrc = lrc;
	id_err_set(err, code, "%s: %s (%d)%s%s%s%s%s%s", what, ldap_err2string(lrc), lrc,
	           matched && *matched ? "; matched DN \"" : "",
	           matched && *matched ? matched : "", matched && *matched ? "\"" : "",
	           diag && *diag ? "; diagnostic \"" : "", diag && *diag ? diag : "",
	           diag && *diag ? "\"" : "");
	ldap_memfree(diag);
	ldap_memfree(matched);
	if (lrc_transport(lrc))
		ldap_conn_disconnect(c);
	return code;
}

/* The connection and (with tls) TLS options; 0 or -1. */
static int set_options(ldap_conn_t *c, LDAP *ld)
{
	int v3 = LDAP_VERSION3, req = c->tls_require, is_server = 0;
	struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON) != LDAP_OPT_SUCCESS)
		return -1;
	if (!c->tls)
		return 0;
	/* TLS options go on this handle, and NEWCTX builds its own TLS context
	 * from them (the process-wide defaults stay untouched). */
	if (ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req) != LDAP_OPT_SUCCESS ||
	    (c->tls_ca_file != NULL &&
	     ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, c->tls_ca_file) !=
	         LDAP_OPT_SUCCESS) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &is_server) != LDAP_OPT_SUCCESS)
		return -1;
	return 0;
}

int ldap_conn_connect(ldap_conn_t *c, id_err_t *err)
{
	LDAP *ld = NULL;
	int lrc = ldap_initialize(&ld, c->url);
	if (lrc != LDAP_SUCCESS)
		return id_err_set(err, ID_ECONFIG, "%s url \"%s\": %s", c->label, c->url,
		                  ldap_err2string(lrc));
	if (set_options(c, ld) != 0) {
		ldap_unbind_ext_s(ld, NULL, NULL);
		return id_err_set(err, ID_ELDAP, "%s %s: cannot set connection%s options",
		                  c->label, c->url, c->tls ? " or TLS" : "");
	}
	c->ld = ld;
	/* With TLS, the password (and AD's unicodePwd) never travel in clear. */
	if (c->tls && !ldap_is_ldaps_url(c->url)) {
		lrc = ldap_start_tls_s(ld, NULL, NULL);
		if (lrc != LDAP_SUCCESS) {
			int rc = ldap_conn_fail(c, lrc, err, "%s StartTLS with %s",
			                        c->label, c->url);
			ldap_conn_disconnect(c);
			return rc;
		}
	}
	struct berval cred = {c->password_len, c->password};
	const char *who = c->bind_dn != NULL ? c->bind_dn : "";
	lrc = ldap_sasl_bind_s(ld, who, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (lrc != LDAP_SUCCESS) {
		/* The password is never part of the message. */
		int rc = ldap_conn_fail(c, lrc, err, "%s bind to %s as \"%s\"", c->label,
		                        c->url, who);
		ldap_conn_disconnect(c);
		return rc;
	}
	return 0;
}

int ldap_conn_ensure(ldap_conn_t *c, id_err_t *err)
{
	if (c->ld != NULL)
		return 0;
	id_log_info(c->log_comp, "connecting to %s", c->url);
	return ldap_conn_connect(c, err);
}

int ldap_conn_search(ldap_conn_t *c, const char *base, int scope, const char *filter,
                     const char *const *attrs, LDAPMessage **res, id_err_t *err)
{
	*res = NULL;
	int rc = ldap_conn_ensure(c, err);
	if (rc != 0)
		return rc;
	struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
	int lrc = ldap_search_ext_s(c->ld, base, scope, filter, (char **)attrs, 0, NULL,
	                            NULL, &tv, 0, res);
	if (lrc != LDAP_SUCCESS) {
		ldap_msgfree(*res);
		*res = NULL;
		return ldap_conn_fail(c, lrc, err, "%s search %s under \"%s\"", c->label,
		                      filter, base);
	}
	return 0;
}

int ldap_conn_search_unique(ldap_conn_t *c, const char *base, int scope,
                            const char *filter, const char *const *attrs, const char *id,
                            const char *noun, LDAPMessage **res, LDAPMessage **entry,
                            id_err_t *err)
{
	*entry = NULL;
	int rc = ldap_conn_search(c, base, scope, filter, attrs, res, err);
	if (rc != 0)
		return rc;
	int n = ldap_count_entries(c->ld, *res);
	if (n > 1) {
		id_buf_t dns = ID_BUF_INIT;
		for (LDAPMessage *e = ldap_first_entry(c->ld, *res); e != NULL;
		     e = ldap_next_entry(c->ld, e)) {
			char *dn = ldap_get_dn(c->ld, e);
			id_buf_printf(&dns, "%s\"%s\"", dns.len ? ", " : "",
			              dn ? dn : "?");
			ldap_memfree(dn);
		}
		id_buf_append_u8(&dns, 0);
		rc = id_err_set(err, ID_ECONFLICT, "employee %s has %d %s: %s", id, n,
		                noun, dns.data ? (const char *)dns.data : "");
		id_buf_fini(&dns);
		return rc;
	}
	if (n == 1)
		*entry = ldap_first_entry(c->ld, *res);
	return 0;
}

/* The first value of attr of entry e as a C string (malloc'd), NULL when
 * absent; *oom set when out of memory. */
static char *first_value(LDAP *ld, LDAPMessage *e, const char *attr, bool *oom)
{
	if (attr == NULL)
		return NULL;
	struct berval **vals = ldap_get_values_len(ld, e, attr);
	char *v = NULL;
	if (vals != NULL && vals[0] != NULL && (v = ldap_conn_bv_strdup(vals[0])) == NULL)
		*oom = true;
	ldap_value_free_len(vals);
	return v;
}

int ldap_conn_list_accounts(ldap_conn_t *c, const char *base, const char *filter,
                            const char *name_attr, const char *emp_attr,
                            sink_account_list_t *out, id_err_t *err)
{
	const char *attrs[] = {name_attr ? name_attr : LDAP_NO_ATTRS, emp_attr, NULL};
	struct berval *cookie = NULL;
	int rc = 0;
	do {
		LDAPControl *page = NULL, **rctrls = NULL;
		LDAPMessage *res = NULL;
		int lrc, errcode = 0;
		if ((rc = ldap_conn_ensure(c, err)) != 0)
			break;
		if (ldap_create_page_control(c->ld, 500, cookie, 0, &page) !=
		    LDAP_SUCCESS) {
			rc = id_err_set(err, ID_ENOMEM, "%s: out of memory", c->label);
			break;
		}
		LDAPControl *sctrls[] = {page, NULL};
		struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
		lrc = ldap_search_ext_s(c->ld, base, LDAP_SCOPE_SUBTREE, filter,
		                        (char **)attrs, 0, sctrls, NULL, &tv, 0, &res);
		ldap_control_free(page);
		if (lrc == LDAP_NO_SUCH_OBJECT) {
			ldap_msgfree(res);
			break;
		}
		if (lrc == LDAP_SUCCESS)
			lrc = ldap_parse_result(c->ld, res, &errcode, NULL, NULL, NULL,
			                        &rctrls, 0);
		if (lrc == LDAP_SUCCESS)
			lrc = errcode;
		if (lrc != LDAP_SUCCESS) {
			ldap_msgfree(res);
			ldap_controls_free(rctrls);
			rc = ldap_conn_fail(c, lrc, err, "%s list %s under \"%s\"",
			                    c->label, filter, base);
			break;
		}
		for (LDAPMessage *e = ldap_first_entry(c->ld, res); rc == 0 && e != NULL;
		     e = ldap_next_entry(c->ld, e)) {
			bool oom = false;
			char *dn = ldap_get_dn(c->ld, e);
			char *name = first_value(c->ld, e, name_attr, &oom);
			char *emp = first_value(c->ld, e, emp_attr, &oom);
			if (dn == NULL || oom ||
			    sink_account_list_add(out, dn, name, emp) != 0)
				rc = id_err_set(err, ID_ENOMEM, "%s: out of memory",
				                c->label);
			ldap_memfree(dn);
			free(name);
			free(emp);
		}
		ldap_msgfree(res);
		ber_bvfree(cookie);
		cookie = NULL;
		LDAPControl *resp =
		    rctrls ? ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL)
		           : NULL;
		if (rc == 0 && resp != NULL) {
			struct berval ck = {0, NULL};
			ber_int_t est = 0;
			if (ldap_parse_pageresponse_control(c->ld, resp, &est, &ck) ==
			        LDAP_SUCCESS &&
			    ck.bv_len > 0)
				cookie = ber_bvdup(&ck);
			ber_memfree(ck.bv_val);
		}
		ldap_controls_free(rctrls);
	} while (rc == 0 && cookie != NULL);
	ber_bvfree(cookie);
	return rc;
}

/* ---- writes ---- */

int ldap_conn_add(ldap_conn_t *c, const char *dn, LDAPMod **mods)
{
	c->writes++;
	return ldap_add_ext_s(c->ld, dn, mods, NULL, NULL);
}

int ldap_conn_modify(ldap_conn_t *c, const char *dn, LDAPMod **mods)
{
	c->writes++;
	return ldap_modify_ext_s(c->ld, dn, mods, NULL, NULL);
}

int ldap_conn_modify1(ldap_conn_t *c, const char *dn, int mod_op, const char *attr,
                      const char *value)
{
	char *vals[2] = {(char *)value, NULL};
	LDAPMod mod = {.mod_op = mod_op,
	               .mod_type = (char *)attr,
	               .mod_values = value ? vals : NULL};
	LDAPMod *mods[2] = {&mod, NULL};
	return ldap_conn_modify(c, dn, mods);
}

int ldap_conn_add_simple(ldap_conn_t *c, const char *dn, const char *const *pairs)
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
	return ldap_conn_add(c, dn, mp);
}

int ldap_conn_rename(ldap_conn_t *c, const char *dn, const char *new_rdn,
                     const char *new_superior)
{
	c->writes++;
	return ldap_rename_s(c->ld, dn, new_rdn, new_superior, 1, NULL, NULL);
}

int ldap_conn_delete(ldap_conn_t *c, const char *dn, LDAPControl **ctrls)
{
	c->writes++;
	return ldap_delete_ext_s(c->ld, dn, ctrls, NULL);
}

int ldap_conn_add_entry(ldap_conn_t *c, const char *dn, const char *object_class,
                        const id_attrs_t *attrs, LDAPMod **extra, int *lrc)
{
	const char *classes[] = {object_class, NULL};
	return ldap_conn_add_entry_classes(c, dn, classes, attrs, extra, lrc);
}

int ldap_conn_add_entry_classes(ldap_conn_t *c, const char *dn,
                                const char *const *classes, const id_attrs_t *attrs,
                                LDAPMod **extra, int *lrc)
{
	size_t n = attrs->len, nextra = 0;
	while (extra != NULL && extra[nextra] != NULL)
		nextra++;
	LDAPMod *mods = calloc(n + 1, sizeof(*mods));
	LDAPMod **mp = calloc(n + nextra + 2, sizeof(*mp));
	char *(*vals)[2] = calloc(n + 1, sizeof(*vals));
	int rc = 0;
	if (mods == NULL || mp == NULL || vals == NULL) {
		rc = ID_ENOMEM;
		goto out;
	}
	/* libldap does not write mod_values; the cast only drops const. */
	mods[0] = (LDAPMod){.mod_op = LDAP_MOD_ADD,
	                    .mod_type = "objectClass",
	                    .mod_values = (char **)classes};
	for (size_t i = 0; i < n; i++) {
		vals[i + 1][0] = attrs->items[i].value;
		mods[i + 1] = (LDAPMod){.mod_op = LDAP_MOD_ADD,
		                        .mod_type = attrs->items[i].key,
		                        .mod_values = vals[i + 1]};
	}
	for (size_t i = 0; i <= n; i++)
		mp[i] = &mods[i];
	for (size_t i = 0; i < nextra; i++)
		mp[n + 1 + i] = extra[i];
	*lrc = ldap_conn_add(c, dn, mp);
out:
	free(mods);
	free(mp);
	free(vals);
	return rc;
}

int ldap_conn_modify_many(ldap_conn_t *c, const char *dn, size_t n,
                          ldap_conn_mod_fn value, const void *ctx, int *lrc)
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
		const char *attr, *v;
		value(ctx, i, &attr, &v);
		vals[i][0] = (char *)v;
		mods[i].mod_op = v ? LDAP_MOD_REPLACE : LDAP_MOD_DELETE;
		mods[i].mod_type = (char *)attr;
		mods[i].mod_values = v ? vals[i] : NULL;
		mp[i] = &mods[i];
	}
	*lrc = ldap_conn_modify(c, dn, mp);
out:
	free(mods);
	free(mp);
	free(vals);
	return rc;
}

static bool ou_cached(const ldap_conn_t *c, const char *dn)
{
	for (size_t i = 0; i < c->nous; i++)
		if (strcmp(c->ous[i], dn) == 0)
			return true;
	return false;
}

static void ou_cache_put(ldap_conn_t *c, const char *dn)
{
	if (c->nous >= OU_CACHE_MAX)
		ldap_conn_ou_clear(c);
	char **n = realloc(c->ous, (c->nous + 1) * sizeof(*n));
	if (n == NULL)
		return; /* only a cache */
	c->ous = n;
	if ((n[c->nous] = strdup(dn)) != NULL)
		c->nous++;
}

int ldap_conn_ensure_ou(ldap_conn_t *c, const char *dn, const char *ou, bool *created,
                        bool *cached, id_err_t *err)
{
	*created = false;
	*cached = ou_cached(c, dn);
	if (*cached)
		return 0;
	const char *pairs[] = {"objectClass", "organizationalUnit", "ou", ou, NULL};
	int lrc = ldap_conn_add_simple(c, dn, pairs);
	if (lrc == LDAP_SUCCESS)
		*created = true;
	else if (lrc != LDAP_ALREADY_EXISTS)
		return ldap_conn_fail(c, lrc, err, "create OU \"%s\"", dn);
	ou_cache_put(c, dn);
	return 0;
}

int ldap_conn_entry_walk(ldap_conn_t *c, LDAPMessage *e, ldap_conn_dn_fn set_dn,
                         ldap_conn_attr_fn attr, void *out, id_err_t *err)
{
	BerElement *ber = NULL;
	int rc = 0;
	char *dn = ldap_get_dn(c->ld, e);
	if (dn == NULL)
		return id_err_set(err, ID_ELDAP, "%s: entry without DN in search result",
		                  c->label);
	if (set_dn(out, dn) != 0)
		goto nomem;
	for (char *a = ldap_first_attribute(c->ld, e, &ber); a != NULL;
	     a = ldap_next_attribute(c->ld, e, ber)) {
		struct berval **vals = ldap_get_values_len(c->ld, e, a);
		int r = attr(out, a, vals, (size_t)ldap_count_values_len(vals));
		ldap_value_free_len(vals);
		ldap_memfree(a);
		if (r != 0)
			goto nomem;
	}
	goto out;
nomem:
	rc =
	    id_err_set(err, ID_ENOMEM, "%s: reading \"%s\": out of memory", c->label, dn);
out:
	ber_free(ber, 0);
	ldap_memfree(dn);
	return rc;
}

/* ---- the apply loop ---- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What the loop does after a failed attempt. */
enum { AGAIN_NO, AGAIN_STALE_CACHE, AGAIN_RECONNECT };

int ldap_conn_apply(ldap_conn_t *c, const char *target, const desired_identity_t *d,
                    sink_result_t *result, ldap_conn_attempt_fn attempt, void *ctx,
                    const size_t *changes, id_err_t *err)
{
	id_err_t local;
	id_err_t *e = err != NULL ? err : &local;
	id_err_clear(e);
	sink_result_fini(result);
	result->desired_version = d->version;
	if ((result->target = strdup(target)) == NULL ||
	    (result->employee_id = strdup(d->employee_id)) == NULL)
		return id_err_set(err, ID_ENOMEM, "%s apply: out of memory", c->label);

	bool manager_pending = false;
	int again = AGAIN_NO, rc = 0;
	for (int round = 0; round < 2; round++) {
		bool used_cache = false;
		id_err_clear(e);
		manager_pending = false;
		c->last_lrc = LDAP_SUCCESS;
		rc = ldap_conn_ensure(c, e);
		if (rc == 0)
			rc = attempt(ctx, &manager_pending, &used_cache, e);
		if (rc != 0 && c->ld == NULL)
			again = AGAIN_RECONNECT;
		else if (rc == ID_ELDAP && used_cache &&
		         c->last_lrc == LDAP_NO_SUCH_OBJECT)
			again = AGAIN_STALE_CACHE; /* an OU we thought existed is gone */
		else
			again = AGAIN_NO;
		if (rc == 0 || again == AGAIN_NO || round > 0)
			break;
		if (again == AGAIN_STALE_CACHE)
			ldap_conn_ou_clear(c);
		else
			id_log_warn(c->log_comp, "employee %s: %s; reconnecting",
			            d->employee_id, e->msg);
	}
	if (manager_pending && rc == 0 &&
	    sink_result_add_op(result, "manager_pending", "manager", NULL,
	                       d->manager_id) != 0)
		rc = id_err_set(e, ID_ENOMEM, "%s apply: out of memory", c->label);
	result->at = now_ms();
	if (rc == 0) {
		result->outcome = *changes > 0 ? SINK_APPLIED : SINK_NOOP;
		return 0;
	}
	result->outcome = SINK_FAILED;
	if ((result->error = strdup(e->msg[0] ? e->msg : id_err_str(rc))) == NULL)
		return id_err_set(err, ID_ENOMEM, "%s apply: out of memory", c->label);
	/* Unreachable directory: the caller should retry this desired later. */
	if (again == AGAIN_RECONNECT && (rc == ID_ELDAP || rc == ID_ETIMEOUT))
		return rc;
	return rc == ID_ENOMEM ? rc : 0;
}

/* ---- helpers ---- */

int ldap_conn_filter_eq(id_buf_t *out, const char *prefix, const char *attr,
                        const char *value)
{
	id_buf_reset(out);
	if ((prefix != NULL ? id_buf_printf(out, "(&%s(%s=", prefix, attr)
	                    : id_buf_printf(out, "(%s=", attr)) != 0)
		return ID_ENOMEM;
	for (const char *v = value; *v; v++) {
		unsigned char ch = (unsigned char)*v;
		int rc = (ch == '*' || ch == '(' || ch == ')' || ch == '\\' || ch < 0x20)
		             ? id_buf_printf(out, "\\%02x", ch)
		             : id_buf_append_u8(out, ch);
		if (rc != 0)
			return ID_ENOMEM;
	}
	if (id_buf_append_str(out, prefix != NULL ? "))" : ")") != 0 ||
	    id_buf_append_u8(out, 0) != 0)
		return ID_ENOMEM;
	return 0;
}

char *ldap_conn_bv_strdup(const struct berval *bv)
{
	return strndup(bv->bv_val, bv->bv_len);
}

int ldap_conn_values_join(struct berval **vals, id_buf_t *out)
{
	size_t n = (size_t)ldap_count_values_len(vals);
	id_buf_reset(out);
	for (size_t i = 0; i < n; i++)
		if ((i > 0 && id_buf_append_u8(out, '\n') != 0) ||
		    id_buf_append(out, vals[i]->bv_val, vals[i]->bv_len) != 0)
			return ID_ENOMEM;
	return id_buf_append_u8(out, 0) != 0 ? ID_ENOMEM : 0;
}

const char *ldap_conn_name_in(const char *const *list, const char *attr)
{
	for (const char *const *a = list; *a != NULL; a++)
		if (strcasecmp(*a, attr) == 0)
			return *a;
	return NULL;
}
