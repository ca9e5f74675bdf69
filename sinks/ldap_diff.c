/*
 * ldap_diff.c — desired identity vs. directory entry → ordered LDAP plan
 * (see ldap_diff.h), plus the small RFC 4514 DN parser the comparison needs.
 *
 * The DN parser is deliberately strict (no RFC 1779 quoting, no ';'
 * separators): slapd only ever returns RFC 4514 strings, and a strict parse
 * is what lets a container such as "ou=R&D, Europe" be recognised as one
 * unescaped value rather than two RDNs (see container_parse()).
 * Pure code: no I/O, no clock, no globals besides constant tables.
 */
#include "sinks/ldap_diff.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const ldap_diff_managed_attrs[] = {
    "uid",
    "cn",
    "sn",
    "givenName",
    "displayName",
    "mail",
    "title",
    "departmentNumber",
    "employeeNumber",
    "employeeType",
    "l",
    "manager",
    NULL,
};

const char *const ldap_diff_posix_attrs[] = {
    "uidNumber", "gidNumber", "homeDirectory", "loginShell", NULL,
};

static const char *const op_kind_names[] = {
#define LDAP_DIFF_OP_NAME_(n, s) s,
    LDAP_DIFF_OP_MAP(LDAP_DIFF_OP_NAME_)
#undef LDAP_DIFF_OP_NAME_
};

const char *ldap_diff_op_kind_name(ldap_diff_op_kind_t k)
{
	if ((int)k < 0 || k >= LDAP_DIFF_OP_COUNT)
		return "unknown";
	return op_kind_names[k];
}

/* ---- entry ---- */

void ldap_diff_entry_init(ldap_diff_entry_t *e)
{
	memset(e, 0, sizeof(*e));
	id_attrs_init(&e->attrs);
}

void ldap_diff_entry_fini(ldap_diff_entry_t *e)
{
	if (e == NULL)
		return;
	free(e->dn);
	id_attrs_fini(&e->attrs);
	for (size_t i = 0; i < e->nmember_of; i++)
		free(e->member_of[i]);
	free(e->member_of);
	free(e->lock_time);
	ldap_diff_entry_init(e);
}

static int replace_str(char **dst, const char *src)
{
	char *n = NULL;
	if (src != NULL && (n = strdup(src)) == NULL)
		return ID_ENOMEM;
	free(*dst);
	*dst = n;
	return 0;
}

int ldap_diff_entry_set_dn(ldap_diff_entry_t *e, const char *dn)
{
	return replace_str(&e->dn, dn);
}

int ldap_diff_entry_set_lock(ldap_diff_entry_t *e, const char *lock_time)
{
	return replace_str(&e->lock_time, lock_time);
}

int ldap_diff_entry_add_member_of(ldap_diff_entry_t *e, const char *group_dn)
{
	char **n = realloc(e->member_of, (e->nmember_of + 1) * sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	e->member_of = n;
	if ((n[e->nmember_of] = strdup(group_dn)) == NULL)
		return ID_ENOMEM;
	e->nmember_of++;
	return 0;
}

/* ---- plan ---- */

void ldap_diff_plan_init(ldap_diff_plan_t *p)
{
	memset(p, 0, sizeof(*p));
}

static void op_fini(ldap_diff_op_t *op)
{
	free(op->dn);
	free(op->attribute);
	free(op->old_value);
	free(op->new_value);
	free(op->new_rdn);
	free(op->new_superior);
	id_attrs_fini(&op->attrs);
}

void ldap_diff_plan_fini(ldap_diff_plan_t *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->nops; i++)
		op_fini(&p->ops[i]);
	free(p->ops);
	free(p->dn);
	ldap_diff_plan_init(p);
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : ID_ENOMEM;
}

/* Appends an op; returns it (owned by the plan) or NULL on ENOMEM. */
static ldap_diff_op_t *plan_push(ldap_diff_plan_t *p, ldap_diff_op_kind_t kind,
                                 const char *dn, const char *attribute,
                                 const char *old_value, const char *new_value)
{
	if (p->nops == p->cap) {
		size_t ncap = p->cap ? p->cap * 2 : 8;
		ldap_diff_op_t *n = realloc(p->ops, ncap * sizeof(*n));
		if (n == NULL)
			return NULL;
		p->ops = n;
		p->cap = ncap;
	}
	ldap_diff_op_t *op = &p->ops[p->nops];
	memset(op, 0, sizeof(*op));
	id_attrs_init(&op->attrs);
	op->kind = kind;
	if (dup_opt(&op->dn, dn) || dup_opt(&op->attribute, attribute) ||
	    dup_opt(&op->old_value, old_value) || dup_opt(&op->new_value, new_value)) {
		op_fini(op);
		return NULL;
	}
	p->nops++;
	return op;
}

/* ---- RFC 4514 DNs ---- */

typedef struct dn_atv {
	char *type;
	char *value; /* unescaped */
	bool plus;   /* joined to the previous AVA with '+' (same RDN) */
} dn_atv_t;

typedef struct dn_parsed {
	dn_atv_t *atv;
	size_t n;
} dn_parsed_t;

static void dn_parsed_fini(dn_parsed_t *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->atv[i].type);
		free(d->atv[i].value);
	}
	free(d->atv);
	d->atv = NULL;
	d->n = 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int dn_push(dn_parsed_t *d, const char *type, size_t tlen, id_buf_t *val,
                   bool plus)
{
	dn_atv_t *n = realloc(d->atv, (d->n + 1) * sizeof(*n));
	if (n == NULL)
		return ID_ENOMEM;
	d->atv = n;
	dn_atv_t *a = &n[d->n];
	a->type = strndup(type, tlen);
	a->value = malloc(val->len + 1);
	if (a->type == NULL || a->value == NULL) {
		free(a->type);
		free(a->value);
		return ID_ENOMEM;
	}
	if (val->len)
		memcpy(a->value, val->data, val->len);
	a->value[val->len] = '\0';
	a->plus = plus;
	d->n++;
	return 0;
}

/*
 * Parses an RFC 4514 DN string.  Returns 0, ID_EPARSE (not a DN) or
 * ID_ENOMEM.  Values containing NUL are refused: they cannot round-trip
 * through C strings.
 */
static int dn_parse(const char *s, dn_parsed_t *out)
{
	id_buf_t val = ID_BUF_INIT;
	int rc = 0;
	bool plus = false;
	const char *p = s;

	out->atv = NULL;
	out->n = 0;
	while (*p == ' ')
		p++;
	if (*p == '\0')
		goto out; /* the root DN */
	for (;;) {
		while (*p == ' ')
			p++;
		const char *type = p;
		if (is_alpha((unsigned char)*p)) {
			while (is_alpha((unsigned char)*p) ||
			       is_digit((unsigned char)*p) || *p == '-')
				p++;
		} else if (is_digit((unsigned char)*p)) {
			while (is_digit((unsigned char)*p) || *p == '.')
				p++;
		}
		size_t tlen = (size_t)(p - type);
		while (*p == ' ')
			p++;
		if (tlen == 0 || *p != '=') {
			rc = ID_EPARSE;
			goto out;
		}
		p++;
		while (*p == ' ')
			p++;
		id_buf_reset(&val);
		if (*p == '#') {
			/* BER-encoded value: kept as raw bytes, compared as such. */
			p++;
			while (hexval((unsigned char)p[0]) >= 0 &&
			       hexval((unsigned char)p[1]) >= 0) {
				uint8_t b = (uint8_t)(hexval((unsigned char)p[0]) * 16 +
				                      hexval((unsigned char)p[1]));
				if (b == 0 || id_buf_append_u8(&val, b) != 0) {
					rc = b == 0 ? ID_EPARSE : ID_ENOMEM;
					goto out;
				}
				p += 2;
			}
			while (*p == ' ')
				p++;
		} else {
			size_t keep = 0; /* length without trailing unescaped spaces */
			for (;;) {
				unsigned char c = (unsigned char)*p;
				if (c == '\0' || c == ',' || c == '+')
					break;
				if (c == '"' || c == ';' || c == '<' || c == '>') {
					rc = ID_EPARSE;
					goto out;
				}
				if (c == '\\') {
					int h = hexval((unsigned char)p[1]);
					int l = h >= 0 ? hexval((unsigned char)p[2]) : -1;
					if (h >= 0 && l >= 0) {
						c = (unsigned char)(h * 16 + l);
						p += 3;
					} else if (p[1] != '\0' &&
					           strchr("\"+,;<>\\ #=", p[1]) != NULL) {
						c = (unsigned char)p[1];
						p += 2;
					} else {
						rc = ID_EPARSE;
						goto out;
					}
					if (c == 0) {
						rc = ID_EPARSE;
						goto out;
					}
					if (id_buf_append_u8(&val, c) != 0) {
						rc = ID_ENOMEM;
						goto out;
					}
					keep = val.len;
					continue;
				}
				if (id_buf_append_u8(&val, c) != 0) {
					rc = ID_ENOMEM;
					goto out;
				}
				if (c != ' ')
					keep = val.len;
				p++;
			}
			val.len = keep;
		}
		if (val.len == 0 && *p != '\0' && *p != ',' && *p != '+') {
			rc = ID_EPARSE;
			goto out;
		}
		if ((rc = dn_push(out, type, tlen, &val, plus)) != 0)
			goto out;
		if (*p == '\0')
			break;
		plus = *p == '+';
		p++;
	}
out:
	id_buf_fini(&val);
	if (rc != 0)
		dn_parsed_fini(out);
	return rc;
}

int ldap_diff_dn_escape(id_buf_t *out, const char *value)
{
	size_t n = strlen(value);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)value[i];
		bool esc = strchr("\"+,;<>\\", c) != NULL ||
		           (i == 0 && (c == ' ' || c == '#')) || (i == n - 1 && c == ' ');
		if (esc && id_buf_append_u8(out, '\\') != 0)
			return ID_ENOMEM;
		if (id_buf_append_u8(out, c) != 0)
			return ID_ENOMEM;
	}
	return 0;
}

/* Serialises atv[from..n) as a DN string, appended to out. */
static int dn_format(const dn_parsed_t *d, size_t from, id_buf_t *out)
{
	for (size_t i = from; i < d->n; i++) {
		if (i > from && id_buf_append_u8(out, d->atv[i].plus ? '+' : ',') != 0)
			return ID_ENOMEM;
		if (id_buf_append_str(out, d->atv[i].type) != 0 ||
		    id_buf_append_u8(out, '=') != 0 ||
		    ldap_diff_dn_escape(out, d->atv[i].value) != 0)
			return ID_ENOMEM;
	}
	return 0;
}

/* Compares a[ai..] with b[bi..] (the same number of AVAs must remain). */
static bool dn_tail_equal(const dn_parsed_t *a, size_t ai, const dn_parsed_t *b,
                          size_t bi)
{
	if (a->n - ai != b->n - bi)
		return false;
	for (; ai < a->n; ai++, bi++) {
		if ((ai > 0 && a->atv[ai].plus) != (bi > 0 && b->atv[bi].plus))
			return false;
		if (strcasecmp(a->atv[ai].type, b->atv[bi].type) != 0 ||
		    strcasecmp(a->atv[ai].value, b->atv[bi].value) != 0)
			return false;
	}
	return true;
}

bool ldap_diff_dn_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	dn_parsed_t pa, pb;
	if (dn_parse(a, &pa) != 0)
		return strcasecmp(a, b) == 0;
	if (dn_parse(b, &pb) != 0) {
		dn_parsed_fini(&pa);
		return strcasecmp(a, b) == 0;
	}
	bool eq = dn_tail_equal(&pa, 0, &pb, 0);
	dn_parsed_fini(&pa);
	dn_parsed_fini(&pb);
	return eq;
}

char *ldap_diff_group_name(const ldap_diff_layout_t *layout, const char *dn)
{
	dn_parsed_t g, base;
	char *name = NULL;
	if (dn == NULL || dn_parse(dn, &g) != 0)
		return NULL;
	if (dn_parse(layout->groups_dn, &base) != 0) {
		dn_parsed_fini(&g);
		return NULL;
	}
	if (g.n == base.n + 1 && strcasecmp(g.atv[0].type, "cn") == 0 &&
	    (g.n < 2 || !g.atv[1].plus) && dn_tail_equal(&g, 1, &base, 0))
		name = strdup(g.atv[0].value);
	dn_parsed_fini(&g);
	dn_parsed_fini(&base);
	return name;
}

int ldap_diff_group_dn(const ldap_diff_layout_t *layout, const char *name, id_buf_t *out)
{
	id_buf_reset(out);
	if (id_buf_append_str(out, "cn=") != 0 || ldap_diff_dn_escape(out, name) != 0 ||
	    id_buf_append_u8(out, ',') != 0 ||
	    id_buf_append_str(out, layout->groups_dn) != 0 ||
	    id_buf_append_u8(out, 0) != 0)
		return ID_ENOMEM;
	out->len--; /* keep the terminator out of len */
	return 0;
}

/*
 * The container as a list of ou values, outermost last (DN order).  A
 * container that is a valid DN of ou= components is taken as such
 * ("ou=Berlin,ou=Sales" is two levels); one that is not — typically
 * "ou=R&D, Europe" built from a raw department name — is one ou whose value
 * is everything after "ou=".  Anything else is refused.
 */
static int container_parse(const char *container, dn_parsed_t *out, id_err_t *err)
{
	out->atv = NULL;
	out->n = 0;
	if (container == NULL || container[0] == '\0')
		return 0;
	int rc = dn_parse(container, out);
	if (rc == ID_ENOMEM)
		return id_err_set(err, rc, "container \"%s\": out of memory", container);
	if (rc == 0) {
		for (size_t i = 0; i < out->n; i++) {
			if (strcasecmp(out->atv[i].type, "ou") != 0 || out->atv[i].plus ||
			    out->atv[i].value[0] == '\0') {
				dn_parsed_fini(out);
				return id_err_set(err, ID_EINVALID,
				                  "container \"%s\": only non-empty ou= "
				                  "components are supported",
				                  container);
			}
		}
		return 0;
	}
	/* Not a DN: accept "ou=<raw value>" only. */
	const char *v = container;
	while (*v == ' ')
		v++;
	if (strncasecmp(v, "ou", 2) != 0)
		goto bad;
	v += 2;
	while (*v == ' ')
		v++;
	if (*v++ != '=')
		goto bad;
	while (*v == ' ')
		v++;
	size_t len = strlen(v);
	while (len > 0 && v[len - 1] == ' ')
		len--;
	if (len == 0)
		goto bad;
	id_buf_t b = ID_BUF_INIT;
	if (id_buf_append(&b, v, len) != 0 || dn_push(out, "ou", 2, &b, false) != 0) {
		id_buf_fini(&b);
		return id_err_set(err, ID_ENOMEM, "container \"%s\": out of memory",
		                  container);
	}
	id_buf_fini(&b);
	return 0;
bad:
	return id_err_set(err, ID_EINVALID,
	                  "container \"%s\" is neither an ou= DN nor \"ou=<name>\"",
	                  container);
}

/* ---- posixAccount ---- */

int ldap_diff_posix_check(const char *home_template, id_err_t *err)
{
	if (home_template == NULL || home_template[0] == '\0')
		return id_err_set(err, ID_ECONFIG, "homeDirectory template is empty");
	for (const char *p = home_template; *p != '\0'; p++) {
		if (*p != '%')
			continue;
		p++;
		if (*p != 'u' && *p != '%')
			return id_err_set(err, ID_ECONFIG,
			                  "homeDirectory template \"%s\": only %%u (the "
			                  "uid) and %%%% may follow a %%",
			                  home_template);
	}
	return 0;
}

int ldap_diff_posix_home(const char *home_template, const char *uid, id_buf_t *out)
{
	id_buf_reset(out);
	for (const char *p = home_template; *p != '\0'; p++) {
		int rc;
		if (*p != '%') {
			rc = id_buf_append_u8(out, (uint8_t)*p);
		} else if (p[1] == 'u') {
			rc = id_buf_append_str(out, uid);
			p++;
		} else if (p[1] == '%') {
			rc = id_buf_append_u8(out, '%');
			p++;
		} else {
			return ID_EINVALID;
		}
		if (rc != 0)
			return ID_ENOMEM;
	}
	return id_buf_append_u8(out, 0) != 0 ? ID_ENOMEM : 0;
}

/* ---- the diff ---- */

/* Case-insensitive lookup: attribute names are case-insensitive in LDAP. */
static const char *attrs_get_ci(const id_attrs_t *a, const char *key)
{
	for (size_t i = 0; i < a->len; i++)
		if (strcasecmp(a->items[i].key, key) == 0)
			return a->items[i].value;
	return NULL;
}

static const char *nonempty(const char *s)
{
	return (s != NULL && s[0] != '\0') ? s : NULL;
}

static bool has_group(const desired_identity_t *d, const char *name)
{
	for (size_t i = 0; i < d->ngroups; i++)
		if (strcasecmp(d->groups[i], name) == 0)
			return true;
	return false;
}

static bool member_of_group(const ldap_diff_layout_t *layout, const ldap_diff_entry_t *e,
                            const char *name)
{
	for (size_t i = 0; i < e->nmember_of; i++) {
		char *g = ldap_diff_group_name(layout, e->member_of[i]);
		bool hit = g != NULL && strcasecmp(g, name) == 0;
		free(g);
		if (hit)
			return true;
	}
	return false;
}

#define PUSH(...)                                                                        \
	do {                                                                             \
		if ((op = plan_push(__VA_ARGS__)) == NULL)                               \
			goto nomem;                                                      \
	} while (0)

/* GROUP_REMOVE for every managed membership of e not wanted by d. */
static int plan_group_removes(const ldap_diff_layout_t *layout,
                              const desired_identity_t *d, bool keep_desired,
                              const ldap_diff_entry_t *e, const char *member_dn,
                              ldap_diff_plan_t *plan)
{
	ldap_diff_op_t *op;
	for (size_t i = 0; i < e->nmember_of; i++) {
		char *name = ldap_diff_group_name(layout, e->member_of[i]);
		if (name == NULL)
			continue; /* not ours (or ENOMEM: the next apply retries) */
		bool drop = !(keep_desired && has_group(d, name));
		/* Two memberOf values can name one group in different spellings. */
		for (size_t j = 0; drop && j < plan->nops; j++)
			if (plan->ops[j].kind == LDAP_DIFF_OP_GROUP_REMOVE &&
			    strcasecmp(plan->ops[j].attribute, name) == 0)
				drop = false;
		if (drop) {
			op = plan_push(plan, LDAP_DIFF_OP_GROUP_REMOVE, e->member_of[i],
			               name, member_dn, NULL);
			if (op == NULL) {
				free(name);
				return ID_ENOMEM;
			}
		}
		free(name);
	}
	return 0;
}

/* ENSURE_OU for layout->disabled_dn when its first RDN is an ou (else the
 * operator must have created it).  0 or ID_ENOMEM. */
static int disabled_ou(const ldap_diff_layout_t *layout, ldap_diff_plan_t *plan)
{
	dn_parsed_t p;
	int rc = dn_parse(layout->disabled_dn, &p);
	if (rc != 0)
		return rc == ID_ENOMEM ? rc : 0;
	if (p.n > 0 && strcasecmp(p.atv[0].type, "ou") == 0 &&
	    plan_push(plan, LDAP_DIFF_OP_ENSURE_OU, layout->disabled_dn, "ou", NULL,
	              p.atv[0].value) == NULL)
		rc = ID_ENOMEM;
	dn_parsed_fini(&p);
	return rc;
}

/*
 * PENDING over an existing entry in move mode: only moved below
 * disabled_dn (keeping its RDN) unless it is there already.
 */
static int pending_move(const ldap_diff_layout_t *layout, const ldap_diff_entry_t *actual,
                        ldap_diff_plan_t *plan, id_err_t *err)
{
	dn_parsed_t a = {NULL, 0}, dis = {NULL, 0};
	id_buf_t rdn = ID_BUF_INIT, to = ID_BUF_INIT;
	ldap_diff_op_t *op;
	int rc = dn_parse(actual->dn, &a);
	if (rc == 0)
		rc = dn_parse(layout->disabled_dn, &dis);
	if (rc != 0) {
		if (rc != ID_ENOMEM)
			rc = id_err_set(err, ID_EINVALID,
			                "ldap diff: \"%s\" or \"%s\" is not a DN",
			                actual->dn, layout->disabled_dn);
		goto out;
	}
	bool there = a.n == dis.n + 1 && (a.n < 2 || !a.atv[1].plus) &&
	             dn_tail_equal(&a, 1, &dis, 0);
	dn_parsed_t first = {a.atv, 1};
	if (a.n == 0 || dn_format(&first, 0, &rdn) != 0 ||
	    id_buf_append_u8(&rdn, 0) != 0 ||
	    id_buf_printf(&to, "%s,%s", (const char *)rdn.data, layout->disabled_dn) !=
	        0 ||
	    id_buf_append_u8(&to, 0) != 0)
		goto nomem;
	if ((plan->dn = strdup(there ? actual->dn : (const char *)to.data)) == NULL)
		goto nomem;
	if (!there) {
		if (disabled_ou(layout, plan) != 0)
			goto nomem;
		if ((op = plan_push(plan, LDAP_DIFF_OP_DISABLE, actual->dn, "dn",
		                    actual->dn, (const char *)to.data)) == NULL ||
		    (op->new_rdn = strdup((const char *)rdn.data)) == NULL ||
		    (op->new_superior = strdup(layout->disabled_dn)) == NULL)
			goto nomem;
	}
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "ldap diff: out of memory");
out:
	dn_parsed_fini(&a);
	dn_parsed_fini(&dis);
	id_buf_fini(&rdn);
	id_buf_fini(&to);
	return rc;
}

/*
 * The posixAccount attributes entry should carry into want: uidNumber
 * (kept, or the caller's next number, then noted in plan->uid_number),
 * gidNumber, homeDirectory for uid, loginShell.
 */
static int posix_want(const ldap_diff_posix_t *posix, const desired_identity_t *d,
                      const ldap_diff_entry_t *actual, const char *uid, id_attrs_t *want,
                      ldap_diff_plan_t *plan, id_err_t *err)
{
	id_buf_t home = ID_BUF_INIT;
	char num[32];
	int rc = 0;
	const char *have =
	    actual != NULL ? nonempty(attrs_get_ci(&actual->attrs, "uidNumber")) : NULL;
	if (have == NULL) {
		if (posix->next_uid_number <= 0) {
			rc = id_err_set(err, ID_EINVALID,
			                "ldap diff: employee %s: no uidNumber allocated",
			                d->employee_id);
			goto out;
		}
		plan->uid_number = posix->next_uid_number;
	}
	snprintf(num, sizeof(num), "%lld", posix->next_uid_number);
	if (id_attrs_set(want, "uidNumber", have != NULL ? have : num) != 0)
		goto nomem;
	snprintf(num, sizeof(num), "%lld", posix->gid_number);
	if (id_attrs_set(want, "gidNumber", num) != 0)
		goto nomem;
	rc = ldap_diff_posix_home(posix->home_template, uid, &home);
	if (rc == ID_EINVALID) {
		rc = id_err_set(err, ID_EINVALID,
		                "ldap diff: homeDirectory template \"%s\" is not valid",
		                posix->home_template);
		goto out;
	}
	if (rc != 0 || id_attrs_set(want, "homeDirectory", (const char *)home.data) != 0)
		goto nomem;
	if (nonempty(posix->login_shell) != NULL &&
	    id_attrs_set(want, "loginShell", posix->login_shell) != 0)
		goto nomem;
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "ldap diff: employee %s: out of memory",
	                d->employee_id);
out:
	id_buf_fini(&home);
	return rc;
}

int ldap_diff_compute(const ldap_diff_layout_t *layout, const desired_identity_t *d,
                      const ldap_diff_entry_t *actual, const char *manager_dn,
                      ldap_diff_plan_t *plan, id_err_t *err)
{
	return ldap_diff_compute_posix(layout, NULL, d, actual, manager_dn, plan, err);
}

int ldap_diff_compute_posix(const ldap_diff_layout_t *layout,
                            const ldap_diff_posix_t *posix, const desired_identity_t *d,
                            const ldap_diff_entry_t *actual, const char *manager_dn,
                            ldap_diff_plan_t *plan, id_err_t *err)
{
	dn_parsed_t cont = {NULL, 0}, adn = {NULL, 0};
	id_attrs_t want = ID_ATTRS_INIT;
	id_buf_t parent = ID_BUF_INIT, rdn = ID_BUF_INIT, dn = ID_BUF_INIT,
	         tmp = ID_BUF_INIT;
	ldap_diff_op_t *op;
	int rc = 0;

	ldap_diff_plan_fini(plan);
	if (layout == NULL || layout->people_dn == NULL || layout->groups_dn == NULL)
		return id_err_set(err, ID_EINVALID, "ldap diff: layout DNs missing");
	if (d->employee_id == NULL || d->employee_id[0] == '\0')
		return id_err_set(err, ID_EINVALID,
		                  "ldap diff: desired identity has no employee id");
	if (actual != NULL && actual->dn == NULL)
		return id_err_set(err, ID_EINVALID,
		                  "ldap diff: employee %s: entry without DN",
		                  d->employee_id);

	if (d->state == LC_DELETED || (d->state == LC_DISABLED && actual == NULL) ||
	    (d->state == LC_PENDING && actual == NULL)) {
		/* Never create an account only to shut it, nor before pre-start. */
		if (actual != NULL) {
			if (plan_group_removes(layout, d, false, actual, actual->dn,
			                       plan) != 0)
				goto nomem;
			PUSH(plan, LDAP_DIFF_OP_DELETE, actual->dn, NULL, actual->dn,
			     NULL);
		}
		goto out;
	}
	if (d->state == LC_PENDING) {
		/*
		 * An account that exists before its pre-start window (a rehire, a
		 * start date moved out) is left as it is, only kept locked: the
		 * PRESTART version converges it when the window opens.
		 */
		if (layout->disabled_dn != NULL) {
			rc = pending_move(layout, actual, plan, err);
			goto out;
		}
		if ((plan->dn = strdup(actual->dn)) == NULL)
			goto nomem;
		if (actual->lock_time == NULL ||
		    strcmp(actual->lock_time, LDAP_DIFF_LOCK_VALUE) != 0)
			PUSH(plan, LDAP_DIFF_OP_DISABLE, actual->dn, LDAP_DIFF_LOCK_ATTR,
			     actual->lock_time, LDAP_DIFF_LOCK_VALUE);
		goto out;
	}

	/* The attribute values the entry should carry. */
	const char *uid = nonempty(attrs_get_ci(&d->attributes, "uid"));
	for (const char *const *a = ldap_diff_managed_attrs; *a != NULL; a++) {
		const char *v;
		if (strcmp(*a, "employeeNumber") == 0)
			v = d->employee_id;
		else if (strcmp(*a, "manager") == 0)
			v = d->manager_id != NULL ? nonempty(manager_dn) : NULL;
		else
			v = nonempty(attrs_get_ci(&d->attributes, *a));
		if (v != NULL && id_attrs_set(&want, *a, v) != 0)
			goto nomem;
	}
	/* Manager known to HR but without an entry yet: leave it for later. */
	bool manager_pending = d->manager_id != NULL && nonempty(manager_dn) == NULL;
	/*
	 * posixAccount needs a uid (for it and homeDirectory): the desired
	 * one, else the entry's.  With neither, posix waits like the uid does.
	 */
	const char *posix_uid = uid;
	if (posix_uid == NULL && actual != NULL)
		posix_uid = nonempty(attrs_get_ci(&actual->attrs, "uid"));
	bool posix_on =
	    posix != NULL && posix_uid != NULL && strchr(posix_uid, '\n') == NULL;
	if (posix_on &&
	    (rc = posix_want(posix, d, actual, posix_uid, &want, plan, err)) != 0)
		goto out;

	/* Target parent and RDN. */
	if ((rc = container_parse(d->container, &cont, err)) != 0)
		goto out;
	if (dn_format(&cont, 0, &parent) != 0 ||
	    (cont.n > 0 && id_buf_append_u8(&parent, ',') != 0) ||
	    id_buf_append_str(&parent, layout->people_dn) != 0 ||
	    id_buf_append_u8(&parent, 0) != 0)
		goto nomem;
	if (actual != NULL && (rc = dn_parse(actual->dn, &adn)) != 0) {
		if (rc == ID_ENOMEM)
			goto nomem;
		rc = id_err_set(err, ID_EINVALID,
		                "ldap diff: employee %s: entry DN \"%s\" is not a DN",
		                d->employee_id, actual->dn);
		goto out;
	}
	if (uid != NULL) {
		if (id_buf_append_str(&rdn, "uid=") != 0 ||
		    ldap_diff_dn_escape(&rdn, uid) != 0)
			goto nomem;
	} else if (actual != NULL && adn.n > 0 && !(adn.n > 1 && adn.atv[1].plus)) {
		/* No uid decided (yet): keep whatever RDN the entry has. */
		dn_parsed_t first = {adn.atv, 1};
		if (dn_format(&first, 0, &rdn) != 0)
			goto nomem;
	} else {
		rc = id_err_set(err, ID_EINVALID,
		                "ldap diff: employee %s: desired identity has no uid",
		                d->employee_id);
		goto out;
	}
	bool want_lock = d->state != LC_ACTIVE;
	/*
	 * Disable by move: a disabled entry lives directly below disabled_dn
	 * (that placement is the disable), an enabled one in its container.
	 */
	bool move = layout->disabled_dn != NULL;
	bool disabled_now = false;
	if (move && actual != NULL) {
		dn_parsed_t pdis;
		if ((rc = dn_parse(layout->disabled_dn, &pdis)) != 0) {
			if (rc == ID_ENOMEM)
				goto nomem;
			rc = id_err_set(err, ID_EINVALID, "ldap diff: disabled DN \"%s\"",
			                layout->disabled_dn);
			goto out;
		}
		disabled_now = adn.n == pdis.n + 1 && (adn.n < 2 || !adn.atv[1].plus) &&
		               dn_tail_equal(&adn, 1, &pdis, 0);
		dn_parsed_fini(&pdis);
	}
	if (id_buf_append_u8(&rdn, 0) != 0)
		goto nomem;
	if (move && want_lock) {
		id_buf_reset(&parent);
		if (id_buf_append_str(&parent, layout->disabled_dn) != 0 ||
		    id_buf_append_u8(&parent, 0) != 0)
			goto nomem;
	}
	if (id_buf_printf(&dn, "%s,%s", (char *)rdn.data, (char *)parent.data) != 0 ||
	    id_buf_append_u8(&dn, 0) != 0)
		goto nomem;
	const char *target = (const char *)dn.data;
	if ((plan->dn = strdup(target)) == NULL)
		goto nomem;
	/* Move mode: disabling is the move; enabling moves back last. */
	bool move_disable = move && want_lock && actual != NULL && !disabled_now;
	bool move_enable = move && !want_lock && disabled_now;
	/* The DN the entry has while attributes and groups are written. */
	const char *cur = move_enable ? actual->dn : target;

	bool rdn_moves = false, parent_moves = false;
	if (actual != NULL && !ldap_diff_dn_equal(actual->dn, target)) {
		dn_parsed_t prdn, pparent;
		if (dn_parse((const char *)rdn.data, &prdn) != 0)
			goto nomem; /* we built it: only ENOMEM can fail */
		if (dn_parse((const char *)parent.data, &pparent) != 0) {
			dn_parsed_fini(&prdn);
			goto nomem;
		}
		size_t rlen = 1;
		while (rlen < adn.n && adn.atv[rlen].plus)
			rlen++;
		rdn_moves = adn.n < rlen || !(rlen == prdn.n) ||
		            strcasecmp(adn.atv[0].type, prdn.atv[0].type) != 0 ||
		            strcasecmp(adn.atv[0].value, prdn.atv[0].value) != 0;
		parent_moves = !dn_tail_equal(&adn, rlen, &pparent, 0);
		dn_parsed_fini(&prdn);
		dn_parsed_fini(&pparent);
	}

	/* Containers, outermost first, when the entry is created or moved. */
	if (move && want_lock && (actual == NULL || move_disable)) {
		if (disabled_ou(layout, plan) != 0)
			goto nomem;
	} else if (actual == NULL || parent_moves) {
		for (size_t i = cont.n; i-- > 0;) {
			id_buf_reset(&tmp);
			if (dn_format(&cont, i, &tmp) != 0 ||
			    id_buf_append_u8(&tmp, ',') != 0 ||
			    id_buf_append_str(&tmp, layout->people_dn) != 0 ||
			    id_buf_append_u8(&tmp, 0) != 0)
				goto nomem;
			PUSH(plan, LDAP_DIFF_OP_ENSURE_OU, (const char *)tmp.data, "ou",
			     NULL, cont.atv[i].value);
		}
	}

	if (actual == NULL) {
		PUSH(plan, LDAP_DIFF_OP_ADD, target, NULL, NULL, NULL);
		if (id_attrs_copy(&op->attrs, &want) != 0)
			goto nomem;
		if (posix_on &&
		    id_attrs_set(&op->attrs, "objectClass", LDAP_DIFF_POSIX_CLASS) != 0)
			goto nomem;
		/* Created locked in the same write: never a moment unlocked. */
		if (want_lock && !move &&
		    id_attrs_set(&op->attrs, LDAP_DIFF_LOCK_ATTR, LDAP_DIFF_LOCK_VALUE) !=
		        0)
			goto nomem;
		for (size_t i = 0; i < d->ngroups; i++) {
			if (ldap_diff_group_dn(layout, d->groups[i], &tmp) != 0)
				goto nomem;
			PUSH(plan, LDAP_DIFF_OP_GROUP_ADD, (const char *)tmp.data,
			     d->groups[i], NULL, target);
		}
		goto out;
	}

	/* Lock first: if anything later fails, the account is already shut. */
	if (move_disable) {
		PUSH(plan, LDAP_DIFF_OP_DISABLE, actual->dn, "dn", actual->dn, target);
		if ((op->new_rdn = strdup((const char *)rdn.data)) == NULL ||
		    (op->new_superior = strdup(layout->disabled_dn)) == NULL)
			goto nomem;
	} else if (want_lock && !move &&
	           (actual->lock_time == NULL ||
	            strcmp(actual->lock_time, LDAP_DIFF_LOCK_VALUE) != 0)) {
		PUSH(plan, LDAP_DIFF_OP_DISABLE, actual->dn, LDAP_DIFF_LOCK_ATTR,
		     actual->lock_time, LDAP_DIFF_LOCK_VALUE);
	}

	if ((rdn_moves || parent_moves) && !move_disable && !move_enable) {
		PUSH(plan, LDAP_DIFF_OP_MODRDN, actual->dn, "dn", actual->dn, target);
		if ((op->new_rdn = strdup((const char *)rdn.data)) == NULL)
			goto nomem;
		if (parent_moves &&
		    (op->new_superior = strdup((const char *)parent.data)) == NULL)
			goto nomem;
	}

	for (const char *const *a = ldap_diff_managed_attrs; *a != NULL; a++) {
		if (strcmp(*a, "uid") == 0)
			continue; /* the RDN: changed by MODRDN only */
		if (strcmp(*a, "manager") == 0 && manager_pending)
			continue;
		const char *have = attrs_get_ci(&actual->attrs, *a);
		const char *w = id_attrs_get(&want, *a);
		bool same = strcmp(*a, "manager") == 0    ? ldap_diff_dn_equal(have, w)
		            : (have == NULL || w == NULL) ? have == w
		                                          : strcmp(have, w) == 0;
		if (!same)
			PUSH(plan, LDAP_DIFF_OP_MODIFY, cur, *a, have, w);
	}
	/* In the same modify: posixAccount's MUST attributes come with it. */
	if (posix_on && !actual->posix)
		PUSH(plan, LDAP_DIFF_OP_MODIFY, cur, "objectClass", NULL,
		     LDAP_DIFF_POSIX_CLASS);
	for (const char *const *a = ldap_diff_posix_attrs; posix_on && *a != NULL; a++) {
		const char *have = attrs_get_ci(&actual->attrs, *a);
		const char *w = id_attrs_get(&want, *a);
		/* uidNumber is allocated once: an entry keeps the one it has. */
		if (strcmp(*a, "uidNumber") == 0 && nonempty(have) != NULL)
			continue;
		bool same =
		    (have == NULL || w == NULL) ? have == w : strcmp(have, w) == 0;
		if (!same)
			PUSH(plan, LDAP_DIFF_OP_MODIFY, cur, *a, have, w);
	}

	for (size_t i = 0; i < d->ngroups; i++) {
		if (member_of_group(layout, actual, d->groups[i]))
			continue;
		if (ldap_diff_group_dn(layout, d->groups[i], &tmp) != 0)
			goto nomem;
		PUSH(plan, LDAP_DIFF_OP_GROUP_ADD, (const char *)tmp.data, d->groups[i],
		     NULL, cur);
	}
	/* After a rename, refint has already rewritten member values to target. */
	if (plan_group_removes(layout, d, true, actual, cur, plan) != 0)
		goto nomem;

	/* Unlock last, once attributes and groups are right. */
	if (move_enable) {
		PUSH(plan, LDAP_DIFF_OP_ENABLE, actual->dn, "dn", actual->dn, target);
		if ((op->new_rdn = strdup((const char *)rdn.data)) == NULL ||
		    (op->new_superior = strdup((const char *)parent.data)) == NULL)
			goto nomem;
	} else if (!want_lock && actual->lock_time != NULL &&
	           strcmp(actual->lock_time, LDAP_DIFF_LOCK_VALUE) == 0) {
		/* (In move mode too: an entry locked before the switch.) */
		PUSH(plan, LDAP_DIFF_OP_ENABLE, target, LDAP_DIFF_LOCK_ATTR,
		     actual->lock_time, NULL);
	}
	goto out;

nomem:
	rc = id_err_set(err, ID_ENOMEM, "ldap diff: employee %s: out of memory",
	                d->employee_id);
out:
	if (rc != 0)
		ldap_diff_plan_fini(plan);
	dn_parsed_fini(&cont);
	dn_parsed_fini(&adn);
	id_attrs_fini(&want);
	id_buf_fini(&parent);
	id_buf_fini(&rdn);
	id_buf_fini(&dn);
	id_buf_fini(&tmp);
	return rc;
}
