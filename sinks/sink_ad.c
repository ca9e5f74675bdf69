/*
 * sink_ad.c — executes ad_diff plans against Active Directory with libldap
 * over TLS.
 *
 * Flow of one apply: search the user by employeeID below people_dn
 * (managed attributes, userAccountControl, memberOf), resolve the manager's
 * DN the same way, diff, refuse a sAMAccountName another object of the
 * domain already has, then run the plan in order.  Each op tolerates the
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
 * (s->ld = NULL); apply then reconnects once and redoes the whole
 * read-diff-apply.  libldap error strings become id_err_t messages here.
 * Threading: one thread per handle (see sink_ad.h).
 */
#include "sinks/sink_ad.h"

#include <errno.h>
#include <fcntl.h>
#include <ldap.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "sinks/ad_diff.h"
#include "sinks/ldap_diff.h"

#define LOG_COMP "sink.ad"

/* OU DNs known to exist; bounded so a huge OU churn cannot grow it. */
#define OU_CACHE_MAX 4096
/* Rounds of a group update that raced with another writer. */
#define GROUP_TRIES 4
/* Microsoft's tree-delete control: removes a user with child objects. */
#define AD_TREE_DELETE_OID "1.2.840.113556.1.4.805"

struct sink_ad {
	LDAP *ld; /* NULL while disconnected */
	char *url;
	char *bind_dn;
	char *password;
	size_t password_len;
	char *base_dn;
	char *people_dn;
	char *groups_dn;
	char *upn_suffix;
	char *tls_ca_file;
	char *password_file;
	sink_ad_tls_check_t tls_check;
	bool must_change;
	ad_diff_layout_t layout;
	ldap_diff_layout_t glayout; /* for the shared group-DN helpers */
	int timeout_ms;
	uint64_t writes;
	int last_lrc; /* libldap code of the last failure */
	/* What an employee search asks for. */
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

static void ad_disconnect(sink_ad_t *s)
{
	if (s->ld != NULL)
		ldap_unbind_ext_s(s->ld, NULL, NULL);
	s->ld = NULL;
}

/*
 * Fills err with "<what>: <libldap message> (<code>); matched DN ..;
 * diagnostic .." and drops the connection when the transport failed.
 * Returns ID_ETIMEOUT or ID_ELDAP.
 */
static int ad_fail(sink_ad_t *s, int lrc, id_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int ad_fail(sink_ad_t *s, int lrc, id_err_t *err, const char *fmt, ...)
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
		ad_disconnect(s);
	return code;
}

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

static int ad_connect(sink_ad_t *s, id_err_t *err)
{
	LDAP *ld = NULL;
	int lrc = ldap_initialize(&ld, s->url);
	if (lrc != LDAP_SUCCESS)
		return id_err_set(err, ID_ECONFIG, "ad url \"%s\": %s", s->url,
		                  ldap_err2string(lrc));
	int v3 = LDAP_VERSION3, req = tls_require_cert(s->tls_check), is_server = 0;
	struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
	/* TLS options go on this handle, and NEWCTX builds its own TLS context
	 * from them (the process-wide defaults stay untouched). */
	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req) != LDAP_OPT_SUCCESS ||
	    (s->tls_ca_file != NULL &&
	     ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, s->tls_ca_file) !=
	         LDAP_OPT_SUCCESS) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &is_server) != LDAP_OPT_SUCCESS) {
		ldap_unbind_ext_s(ld, NULL, NULL);
		return id_err_set(err, ID_ELDAP,
		                  "ad %s: cannot set connection or TLS options", s->url);
	}
	s->ld = ld;
	/* The password and unicodePwd never travel in clear. */
	if (!ldap_is_ldaps_url(s->url)) {
		lrc = ldap_start_tls_s(ld, NULL, NULL);
		if (lrc != LDAP_SUCCESS) {
			int rc = ad_fail(s, lrc, err, "ad StartTLS with %s", s->url);
			ad_disconnect(s);
			return rc;
		}
	}
	struct berval cred = {s->password_len, s->password};
	const char *who = s->bind_dn != NULL ? s->bind_dn : "";
	lrc = ldap_sasl_bind_s(ld, who, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (lrc != LDAP_SUCCESS) {
		/* The password is never part of the message. */
		int rc = ad_fail(s, lrc, err, "ad bind to %s as \"%s\"", s->url, who);
		ad_disconnect(s);
		return rc;
	}
	return 0;
}

static int ad_ensure_connected(sink_ad_t *s, id_err_t *err)
{
	if (s->ld != NULL)
		return 0;
	id_log_info(LOG_COMP, "connecting to %s", s->url);
	return ad_connect(s, err);
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL || src[0] == '\0')
		return 0;
	return (*dst = strdup(src)) != NULL ? 0 : ID_ENOMEM;
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
	const char *pw = opts->bind_password != NULL ? opts->bind_password : "";
	s->password_len = strlen(pw);
	if ((s->url = strdup(opts->url)) == NULL || (s->password = strdup(pw)) == NULL ||
	    (s->base_dn = strdup(opts->base_dn)) == NULL ||
	    (s->people_dn = strdup(opts->people_dn)) == NULL ||
	    (s->groups_dn = strdup(opts->groups_dn)) == NULL ||
	    dup_opt(&s->bind_dn, opts->bind_dn) != 0 ||
	    dup_opt(&s->upn_suffix, opts->upn_suffix) != 0 ||
	    dup_opt(&s->tls_ca_file, opts->tls_ca_file) != 0 ||
	    dup_opt(&s->password_file, opts->password_file) != 0)
		goto nomem;
	size_t k = 0;
	for (const char *const *a = ad_diff_managed_attrs; *a != NULL && k + 3 < 24; a++)
		s->read_attrs[k++] = *a;
	s->read_attrs[k++] = "userAccountControl";
	s->read_attrs[k++] = "memberOf";
	s->read_attrs[k] = NULL;
	s->layout.people_dn = s->people_dn;
	s->layout.groups_dn = s->groups_dn;
	s->layout.upn_suffix = s->upn_suffix;
	s->glayout.people_dn = s->people_dn;
	s->glayout.groups_dn = s->groups_dn;
	s->tls_check = opts->tls_check;
	s->must_change = opts->password_must_change;
	s->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
	if (ad_connect(s, err) != 0) {
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

static void ou_cache_clear(sink_ad_t *s)
{
	for (size_t i = 0; i < s->nous; i++)
		free(s->ous[i]);
	free(s->ous);
	s->ous = NULL;
	s->nous = 0;
}

void sink_ad_close(sink_ad_t *s)
{
	if (s == NULL)
		return;
	ad_disconnect(s);
	if (s->password != NULL)
		explicit_bzero(s->password, s->password_len);
	free(s->password);
	free(s->url);
	free(s->bind_dn);
	free(s->base_dn);
	free(s->people_dn);
	free(s->groups_dn);
	free(s->upn_suffix);
	free(s->tls_ca_file);
	free(s->password_file);
	ou_cache_clear(s);
	free(s);
}

uint64_t sink_ad_writes(const sink_ad_t *s)
{
	return s != NULL ? s->writes : 0;
}

/* ---- reads ---- */

/* "(&<prefix>(attr=<RFC 4515-escaped value>))" into out, NUL-terminated. */
static int filter_eq(id_buf_t *out, const char *prefix, const char *attr,
                     const char *value)
{
	id_buf_reset(out);
	if (id_buf_printf(out, "(&%s(%s=", prefix, attr) != 0)
		return ID_ENOMEM;
	for (const char *v = value; *v; v++) {
		unsigned char c = (unsigned char)*v;
		int rc = (c == '*' || c == '(' || c == ')' || c == '\\' || c < 0x20)
		             ? id_buf_printf(out, "\\%02x", c)
		             : id_buf_append_u8(out, c);
		if (rc != 0)
			return ID_ENOMEM;
	}
	if (id_buf_append_str(out, "))") != 0 || id_buf_append_u8(out, 0) != 0)
		return ID_ENOMEM;
	return 0;
}

static int ad_search(sink_ad_t *s, const char *base, const char *filter,
                     const char *const *attrs, LDAPMessage **res, id_err_t *err)
{
	*res = NULL;
	int rc = ad_ensure_connected(s, err);
	if (rc != 0)
		return rc;
	struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
	int lrc = ldap_search_ext_s(s->ld, base, LDAP_SCOPE_SUBTREE, filter,
	                            (char **)attrs, 0, NULL, NULL, &tv, 0, res);
	if (lrc != LDAP_SUCCESS) {
		ldap_msgfree(*res);
		*res = NULL;
		return ad_fail(s, lrc, err, "ad search %s under \"%s\"", filter, base);
	}
	return 0;
}

static const char *managed_name(const char *attr)
{
	for (const char *const *a = ad_diff_managed_attrs; *a != NULL; a++)
		if (strcasecmp(*a, attr) == 0)
			return *a;
	return NULL;
}

static char *bv_strdup(const struct berval *bv)
{
	return strndup(bv->bv_val, bv->bv_len);
}

/* Converts one search entry into out. */
static int entry_convert(sink_ad_t *s, LDAPMessage *e, ad_diff_entry_t *out,
                         id_err_t *err)
{
	BerElement *ber = NULL;
	id_buf_t joined = ID_BUF_INIT;
	int rc = 0;
	char *dn = ldap_get_dn(s->ld, e);
	if (dn == NULL)
		return id_err_set(err, ID_ELDAP, "ad: entry without DN in search result");
	if (ad_diff_entry_set_dn(out, dn) != 0)
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
				r = v ? ad_diff_entry_add_member_of(out, v) : ID_ENOMEM;
				free(v);
			}
		} else if (strcasecmp(a, "userAccountControl") == 0 && n > 0) {
			char *v = bv_strdup(vals[0]);
			if (v == NULL) {
				r = ID_ENOMEM;
			} else {
				/* An int32 on the wire: may come back signed. */
				out->uac = (uint32_t)strtoll(v, NULL, 10);
				out->has_uac = true;
			}
			free(v);
		} else if (name != NULL && n > 0) {
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
	rc = id_err_set(err, ID_ENOMEM, "ad: reading \"%s\": out of memory", dn);
out:
	ber_free(ber, 0);
	ldap_memfree(dn);
	id_buf_fini(&joined);
	return rc;
}

/*
 * Searches people_dn for the user whose employeeID is id.  0 with *found
 * set; ID_ECONFLICT (naming every DN) when several carry it.
 */
static int read_employee(sink_ad_t *s, const char *id, const char *const *attrs,
                         ad_diff_entry_t *out, bool *found, id_err_t *err)
{
	id_buf_t f = ID_BUF_INIT;
	LDAPMessage *res = NULL;
	int rc;
	*found = false;
	ad_diff_entry_fini(out);
	if ((rc = filter_eq(&f, "(objectClass=user)", "employeeID", id)) != 0) {
		rc = id_err_set(err, rc, "ad: employee %s: out of memory", id);
		goto out;
	}
	if ((rc = ad_search(s, s->people_dn, (const char *)f.data, attrs, &res, err)) !=
	    0)
		goto out;
	int n = ldap_count_entries(s->ld, res);
	if (n > 1) {
		id_buf_t dns = ID_BUF_INIT;
		for (LDAPMessage *e = ldap_first_entry(s->ld, res); e != NULL;
		     e = ldap_next_entry(s->ld, e)) {
			char *dn = ldap_get_dn(s->ld, e);
			id_buf_printf(&dns, "%s\"%s\"", dns.len ? ", " : "",
			              dn ? dn : "?");
			ldap_memfree(dn);
		}
		id_buf_append_u8(&dns, 0);
		rc = id_err_set(err, ID_ECONFLICT, "employee %s has %d users: %s", id, n,
		                dns.data ? (const char *)dns.data : "");
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

/* Reads the user of d and the manager's DN (*manager_dn malloc'd or NULL). */
static int read_state(sink_ad_t *s, const desired_identity_t *d, ad_diff_entry_t *actual,
                      bool *found, char **manager_dn, id_err_t *err)
{
	*manager_dn = NULL;
	int rc = read_employee(s, d->employee_id, s->read_attrs, actual, found, err);
	if (rc != 0 || d->manager_id == NULL || d->manager_id[0] == '\0' ||
	    d->state == LC_DELETED)
		return rc;
	static const char *const no_attrs[] = {LDAP_NO_ATTRS, NULL};
	ad_diff_entry_t mgr;
	bool mfound;
	ad_diff_entry_init(&mgr);
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
	ad_diff_entry_fini(&mgr);
	return rc;
}

/* ---- writes ---- */

typedef struct apply_ctx {
	sink_ad_t *s;
	const desired_identity_t *d;
	sink_result_t *r;
	const char *sam; /* the plan's sAMAccountName (borrowed) */
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

static int ad_add(sink_ad_t *s, const char *dn, LDAPMod **mods)
{
	s->writes++;
	return ldap_add_ext_s(s->ld, dn, mods, NULL, NULL);
}

static int ad_modify(sink_ad_t *s, const char *dn, LDAPMod **mods)
{
	s->writes++;
	return ldap_modify_ext_s(s->ld, dn, mods, NULL, NULL);
}

/* One-attribute modify; value NULL deletes the whole attribute. */
static int ad_modify1(sink_ad_t *s, const char *dn, int mod_op, const char *attr,
                      const char *value)
{
	char *vals[2] = {(char *)value, NULL};
	LDAPMod mod = {.mod_op = mod_op,
	               .mod_type = (char *)attr,
	               .mod_values = value ? vals : NULL};
	LDAPMod *mods[2] = {&mod, NULL};
	return ad_modify(s, dn, mods);
}

/* Adds an entry made of (attribute, value) pairs, NULL-terminated. */
static int ad_add_simple(sink_ad_t *s, const char *dn, const char *const *pairs)
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
	return ad_add(s, dn, mp);
}

static bool ou_cached(const sink_ad_t *s, const char *dn)
{
	for (size_t i = 0; i < s->nous; i++)
		if (strcmp(s->ous[i], dn) == 0)
			return true;
	return false;
}

static void ou_cache_put(sink_ad_t *s, const char *dn)
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

static int exec_ensure_ou(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	if (ou_cached(s, op->dn)) {
		c->used_cache = true;
		return 0;
	}
	const char *pairs[] = {"objectClass", "organizationalUnit", "ou", op->new_value,
	                       NULL};
	int lrc = ad_add_simple(s, op->dn, pairs);
	if (lrc == LDAP_SUCCESS) {
		int rc = record(c, "create_ou", op->dn, NULL, op->new_value, err);
		if (rc != 0)
			return rc;
	} else if (lrc != LDAP_ALREADY_EXISTS) {
		return ad_fail(s, lrc, err, "create OU \"%s\"", op->dn);
	}
	ou_cache_put(s, op->dn);
	return 0;
}

/* A random password AD's complexity rule accepts for this user. */
static int password_generate(const char *sam, const char *display_name,
                             char out[AD_DIFF_PASSWORD_LEN + 1], id_err_t *err)
{
	unsigned char rnd[AD_DIFF_PASSWORD_LEN];
	int rc = ID_EIO;
	/* A miss (one class absent, a name inside) is rare; 64 tries is plenty. */
	for (int t = 0; t < 64 && rc != 0; t++) {
		size_t got = 0;
		while (got < sizeof(rnd)) {
			ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
			if (n < 0 && errno != EINTR) {
				rc = id_err_set(err, ID_EIO, "ad sink: getrandom: %s",
				                strerror(errno));
				goto out;
			}
			got += n > 0 ? (size_t)n : 0;
		}
		ad_diff_password_from_bytes(rnd, out);
		if (ad_diff_password_complex(out, sam, display_name))
			rc = 0;
	}
	if (rc != 0)
		rc = id_err_set(err, ID_EIO,
		                "ad sink: no random password met the "
		                "complexity rule in 64 tries");
out:
	explicit_bzero(rnd, sizeof(rnd));
	if (rc != 0)
		explicit_bzero(out, AD_DIFF_PASSWORD_LEN + 1);
	return rc;
}

static bool has_control_chars(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return true;
	return false;
}

/*
 * Appends "employee_id TAB sam TAB password LF" to the delivery file and
 * flushes it to disk.  The file is created 0600; an existing file that is
 * not a regular file of ours, or that group/others may read, is refused.
 */
static int password_deliver(sink_ad_t *s, const char *employee_id, const char *sam,
                            const char *pw, id_err_t *err)
{
	id_buf_t line = ID_BUF_INIT;
	int fd = -1, rc = 0;
	if (s->password_file == NULL)
		return id_err_set(
		    err, ID_EINVALID,
		    "employee %s: no password delivery file is configured, so "
		    "the user is not created (its password would be lost)",
		    employee_id);
	if (has_control_chars(employee_id) || has_control_chars(sam))
		return id_err_set(err, ID_EINVALID,
		                  "employee %s: control characters in the employee id or "
		                  "sAMAccountName cannot go into the delivery file",
		                  employee_id);
	fd = open(s->password_file,
	          O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = id_err_set(err, ID_EIO, "password delivery file %s: %s",
		                s->password_file, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077) != 0) {
		rc = id_err_set(
		    err, ID_ECONFIG,
		    "password delivery file %s must be a regular file owned by "
		    "this user with mode 0600 (it is %04o); refusing to write "
		    "passwords into it",
		    s->password_file, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (id_buf_printf(&line, "%s\t%s\t%s\n", employee_id, sam, pw) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "password delivery: out of memory");
		goto out;
	}
	for (size_t off = 0; off < line.len;) {
		ssize_t n = write(fd, line.data + off, line.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = id_err_set(err, ID_EIO,
			                "password delivery file %s: write: %s",
			                s->password_file, strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	if (fsync(fd) != 0)
		rc = id_err_set(err, ID_EIO, "password delivery file %s: fsync: %s",
		                s->password_file, strerror(errno));
out:
	if (line.data != NULL)
		explicit_bzero(line.data, line.cap);
	id_buf_fini(&line);
	if (fd >= 0)
		close(fd);
	return rc;
}

static int exec_add(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	size_t n = op->attrs.len;
	char pw[AD_DIFF_PASSWORD_LEN + 1] = {0};
	id_buf_t upw = ID_BUF_INIT;
	int rc = 0;
	LDAPMod *mods = calloc(n + 3, sizeof(*mods));
	LDAPMod **mp = calloc(n + 4, sizeof(*mp));
	char *(*vals)[2] = calloc(n + 3, sizeof(*vals));
	if (mods == NULL || mp == NULL || vals == NULL) {
		rc = id_err_set(err, ID_ENOMEM, "add \"%s\": out of memory", op->dn);
		goto out;
	}
	const char *sam = id_attrs_get(&op->attrs, "sAMAccountName");
	if ((rc = password_generate(sam, id_attrs_get(&op->attrs, "displayName"), pw,
	                            err)) != 0 ||
	    (rc = password_deliver(s, c->d->employee_id, sam ? sam : "", pw, err)) != 0)
		goto out;
	if (ad_diff_unicode_pwd(pw, &upw) != 0) {
		rc = id_err_set(err, ID_ENOMEM, "add \"%s\": out of memory", op->dn);
		goto out;
	}
	size_t k = 0;
	vals[k][0] = "user";
	mods[k] = (LDAPMod){
	    .mod_op = LDAP_MOD_ADD, .mod_type = "objectClass", .mod_values = vals[k]};
	k++;
	for (size_t i = 0; i < n; i++, k++) {
		vals[k][0] = op->attrs.items[i].value;
		mods[k] = (LDAPMod){.mod_op = LDAP_MOD_ADD,
		                    .mod_type = op->attrs.items[i].key,
		                    .mod_values = vals[k]};
	}
	struct berval pwv = {upw.len, (char *)upw.data};
	struct berval *pwvals[2] = {&pwv, NULL};
	mods[k].mod_op = LDAP_MOD_ADD | LDAP_MOD_BVALUES;
	mods[k].mod_type = "unicodePwd";
	mods[k].mod_bvalues = pwvals;
	k++;
	if (s->must_change) {
		vals[k][0] = "0"; /* expired: the user picks a new one at first logon */
		mods[k] = (LDAPMod){.mod_op = LDAP_MOD_ADD,
		                    .mod_type = "pwdLastSet",
		                    .mod_values = vals[k]};
		k++;
	}
	for (size_t i = 0; i < k; i++)
		mp[i] = &mods[i];
	mp[k] = NULL;
	const char *dn = op->dn;
	int lrc = ad_add(s, dn, mp);
	if (lrc == LDAP_ALREADY_EXISTS && op->alt_dn != NULL) {
		/* The CN is taken in that OU (or the sAMAccountName raced): try
		 * "<cn> (<sAMAccountName>)"; a sAMAccountName clash fails again. */
		dn = op->alt_dn;
		lrc = ad_add(s, dn, mp);
	}
	if (lrc != LDAP_SUCCESS) {
		rc = ad_fail(s, lrc, err, "add \"%s\"", dn);
		goto out;
	}
	if ((rc = set_cur_dn(c, dn, err)) != 0 ||
	    (rc = record(c, "add", "dn", NULL, dn, err)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++)
		if ((rc = record(c, "add", op->attrs.items[i].key, NULL,
		                 op->attrs.items[i].value, err)) != 0)
			goto out;
	rc = record(c, "add", "unicodePwd", NULL, "(initial password delivered)", err);
out:
	explicit_bzero(pw, sizeof(pw));
	if (upw.data != NULL)
		explicit_bzero(upw.data, upw.cap);
	id_buf_fini(&upw);
	free(mods);
	free(mp);
	free(vals);
	return rc;
}

/* Runs n consecutive MODIFY ops on the user as one modify request. */
static int exec_modify_batch(apply_ctx_t *c, const ad_diff_op_t *ops, size_t n,
                             id_err_t *err)
{
	sink_ad_t *s = c->s;
	int rc = 0;
	LDAPMod *mods = calloc(n, sizeof(*mods));
	LDAPMod **mp = calloc(n + 1, sizeof(*mp));
	char *(*vals)[2] = calloc(n, sizeof(*vals));
	if (mods == NULL || mp == NULL || vals == NULL) {
		rc =
		    id_err_set(err, ID_ENOMEM, "modify \"%s\": out of memory", c->cur_dn);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		vals[i][0] = ops[i].new_value;
		mods[i].mod_op = ops[i].new_value ? LDAP_MOD_REPLACE : LDAP_MOD_DELETE;
		mods[i].mod_type = ops[i].attribute;
		mods[i].mod_values = ops[i].new_value ? vals[i] : NULL;
		mp[i] = &mods[i];
	}
	int lrc = ad_modify(s, c->cur_dn, mp);
	if (lrc != LDAP_SUCCESS) {
		rc = ad_fail(s, lrc, err, "modify \"%s\" (%s%s)", c->cur_dn,
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

static int exec_modrdn(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	const char *to = op->new_value;
	s->writes++;
	int lrc =
	    ldap_rename_s(s->ld, c->cur_dn, op->new_rdn, op->new_superior, 1, NULL, NULL);
	if (lrc == LDAP_ALREADY_EXISTS && op->alt_rdn != NULL) {
		to = op->alt_dn;
		s->writes++;
		lrc = ldap_rename_s(s->ld, c->cur_dn, op->alt_rdn, op->new_superior, 1,
		                    NULL, NULL);
	}
	if (lrc != LDAP_SUCCESS)
		return ad_fail(s, lrc, err, "modrdn \"%s\" to \"%s\"", c->cur_dn, to);
	int rc = record(c, "modrdn", "dn", c->cur_dn, to, err);
	return rc != 0 ? rc : set_cur_dn(c, to, err);
}

static int exec_uac(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	int lrc =
	    ad_modify1(c->s, c->cur_dn, LDAP_MOD_REPLACE, op->attribute, op->new_value);
	if (lrc != LDAP_SUCCESS)
		return ad_fail(c->s, lrc, err, "%s \"%s\"",
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
		int lrc = ad_modify1(s, op->dn, LDAP_MOD_ADD, "member", c->cur_dn);
		if (lrc == LDAP_SUCCESS)
			return record(c, "group_add", op->attribute, NULL, op->dn, err);
		/* AD answers "already exists" for a member already there. */
		if (lrc == LDAP_ALREADY_EXISTS || lrc == LDAP_TYPE_OR_VALUE_EXISTS)
			return 0;
		if (lrc != LDAP_NO_SUCH_OBJECT)
			return ad_fail(s, lrc, err, "add member to group \"%s\"", op->dn);
		const char *pairs[] = {"objectClass",    "group",       "cn",
		                       op->attribute,    "member",      c->cur_dn,
		                       "sAMAccountName", op->attribute, NULL};
		if (!with_sam)
			pairs[6] = NULL;
		lrc = ad_add_simple(s, op->dn, pairs);
		if (lrc == LDAP_SUCCESS) {
			int rc =
			    record(c, "create_group", op->attribute, NULL, op->dn, err);
			return rc != 0 ? rc
			               : record(c, "group_add", op->attribute, NULL,
			                        op->dn, err);
		}
		if (lrc != LDAP_ALREADY_EXISTS)
			return ad_fail(s, lrc, err, "create group \"%s\"", op->dn);
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
	int lrc = ad_modify1(s, op->dn, LDAP_MOD_DELETE, "member", c->cur_dn);
	if (lrc == LDAP_SUCCESS)
		return record(c, "group_remove", op->attribute, op->dn, NULL, err);
	/* Not (or no longer) a member: AD says "unwilling to perform". */
	if (lrc == LDAP_UNWILLING_TO_PERFORM || lrc == LDAP_NO_SUCH_ATTRIBUTE ||
	    lrc == LDAP_NO_SUCH_OBJECT)
		return 0;
	return ad_fail(s, lrc, err, "remove member from group \"%s\"", op->dn);
}

static int exec_delete(apply_ctx_t *c, const ad_diff_op_t *op, id_err_t *err)
{
	sink_ad_t *s = c->s;
	s->writes++;
	int lrc = ldap_delete_ext_s(s->ld, op->dn, NULL, NULL);
	if (lrc == LDAP_NOT_ALLOWED_ON_NONLEAF) {
		/* Objects some applications hang below users go with them. */
		LDAPControl tree = {.ldctl_oid = AD_TREE_DELETE_OID,
		                    .ldctl_value = {0, NULL},
		                    .ldctl_iscritical = 1};
		LDAPControl *ctrls[] = {&tree, NULL};
		s->writes++;
		lrc = ldap_delete_ext_s(s->ld, op->dn, ctrls, NULL);
	}
	if (lrc == LDAP_NO_SUCH_OBJECT)
		return 0;
	if (lrc != LDAP_SUCCESS)
		return ad_fail(s, lrc, err, "delete \"%s\"", op->dn);
	return record(c, "delete", "dn", op->dn, NULL, err);
}

/*
 * Refuses a sAMAccountName that another object of the domain (user, group
 * or computer) already has: AD would refuse the write anyway, and this way
 * the result names the owner.  ID_ECONFLICT.
 */
static int check_sam_free(apply_ctx_t *c, const ad_diff_entry_t *actual, id_err_t *err)
{
	sink_ad_t *s = c->s;
	static const char *const attrs[] = {"employeeID", NULL};
	id_buf_t f = ID_BUF_INIT;
	LDAPMessage *res = NULL;
	int rc;
	if ((rc = filter_eq(&f, "", "sAMAccountName", c->sam)) != 0) {
		rc = id_err_set(err, rc, "sAMAccountName check: out of memory");
		goto out;
	}
	if ((rc = ad_search(s, s->base_dn, (const char *)f.data, attrs, &res, err)) != 0)
		goto out;
	for (LDAPMessage *e = ldap_first_entry(s->ld, res); e != NULL && rc == 0;
	     e = ldap_next_entry(s->ld, e)) {
		char *dn = ldap_get_dn(s->ld, e);
		if (dn != NULL &&
		    !(actual != NULL && ldap_diff_dn_equal(dn, actual->dn))) {
			struct berval **v = ldap_get_values_len(s->ld, e, "employeeID");
			char *owner =
			    ldap_count_values_len(v) > 0 ? bv_strdup(v[0]) : NULL;
			if (owner != NULL)
				rc = id_err_set(
				    err, ID_ECONFLICT,
				    "sAMAccountName %s already used by employee %s",
				    c->sam, owner);
			else
				rc =
				    id_err_set(err, ID_ECONFLICT,
				               "sAMAccountName %s already used by \"%s\"",
				               c->sam, dn);
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

/* What the caller of apply_once should do after a failure. */
enum { AGAIN_NO, AGAIN_STALE_CACHE, AGAIN_RECONNECT };

static int apply_once(apply_ctx_t *c, bool *manager_pending, int *again, id_err_t *err)
{
	sink_ad_t *s = c->s;
	ad_diff_entry_t actual;
	ad_diff_plan_t plan;
	char *mdn = NULL;
	bool found = false;
	int rc;

	ad_diff_entry_init(&actual);
	ad_diff_plan_init(&plan);
	*again = AGAIN_NO;
	*manager_pending = false;
	c->used_cache = false;
	s->last_lrc = LDAP_SUCCESS;
	if ((rc = ad_ensure_connected(s, err)) != 0)
		goto out;
	if ((rc = read_state(s, c->d, &actual, &found, &mdn, err)) != 0)
		goto out;
	*manager_pending =
	    c->d->state != LC_DELETED && c->d->manager_id != NULL && mdn == NULL;
	if ((rc = ad_diff_compute(&s->layout, c->d, found ? &actual : NULL, mdn, &plan,
	                          err)) != 0)
		goto out;
	c->sam = plan.sam;
	if (plan.sam != NULL && plan_sets_sam(&plan) &&
	    (rc = check_sam_free(c, found ? &actual : NULL, err)) != 0)
		goto out;
	free(c->cur_dn);
	c->cur_dn = NULL;
	if (found && (rc = set_cur_dn(c, actual.dn, err)) != 0)
		goto out;
	rc = exec_plan(c, &plan, err);
out:
	if (rc != 0 && s->ld == NULL)
		*again = AGAIN_RECONNECT;
	else if (rc == ID_ELDAP && c->used_cache && s->last_lrc == LDAP_NO_SUCH_OBJECT)
		*again = AGAIN_STALE_CACHE; /* an OU we thought existed is gone */
	c->sam = NULL;
	free(mdn);
	ad_diff_plan_fini(&plan);
	ad_diff_entry_fini(&actual);
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sink_ad_apply(sink_ad_t *s, const desired_identity_t *d, sink_result_t *result,
                  id_err_t *err)
{
	if (s == NULL || d == NULL || result == NULL || d->employee_id == NULL)
		return id_err_set(err, ID_EINVALID, "sink_ad_apply: NULL argument");
	id_err_t local;
	id_err_t *e = err != NULL ? err : &local;
	id_err_clear(e);
	sink_result_fini(result);
	result->desired_version = d->version;
	if ((result->target = strdup("ad")) == NULL ||
	    (result->employee_id = strdup(d->employee_id)) == NULL)
		return id_err_set(err, ID_ENOMEM, "sink_ad_apply: out of memory");

	apply_ctx_t c = {.s = s, .d = d, .r = result};
	bool manager_pending = false;
	int again = AGAIN_NO, rc = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		id_err_clear(e);
		rc = apply_once(&c, &manager_pending, &again, e);
		if (rc == 0 || again == AGAIN_NO || attempt > 0)
			break;
		if (again == AGAIN_STALE_CACHE)
			ou_cache_clear(s);
		else
			id_log_warn(LOG_COMP, "employee %s: %s; reconnecting",
			            d->employee_id, e->msg);
	}
	free(c.cur_dn);
	if (manager_pending && rc == 0 &&
	    sink_result_add_op(result, "manager_pending", "manager", NULL,
	                       d->manager_id) != 0)
		rc = id_err_set(e, ID_ENOMEM, "sink_ad_apply: out of memory");
	result->at = now_ms();
	if (rc == 0) {
		result->outcome = c.changes > 0 ? SINK_APPLIED : SINK_NOOP;
		return 0;
	}
	result->outcome = SINK_FAILED;
	if ((result->error = strdup(e->msg[0] ? e->msg : id_err_str(rc))) == NULL)
		return id_err_set(err, ID_ENOMEM, "sink_ad_apply: out of memory");
	/* Unreachable directory: the caller should retry this desired later. */
	if (again == AGAIN_RECONNECT && (rc == ID_ELDAP || rc == ID_ETIMEOUT))
		return rc;
	return rc == ID_ENOMEM ? rc : 0;
}
