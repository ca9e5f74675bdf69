/*
 * ad_diff.c — desired identity vs. AD user object → ordered plan (see
 * ad_diff.h), and the pure helpers around it: sAMAccountName/CN shaping,
 * accountExpires conversion, password shaping, complexity and encoding.
 *
 * DN handling: values we put in DNs are escaped with ldap_diff_dn_escape()
 * and DNs are compared with ldap_diff_dn_equal() (sinks/ldap_diff.h).  The
 * only parsing done here is splitting a DN after its first RDN and reading
 * the ou= parts of a container, both with the same strict RFC 4514 reading
 * of escapes as ldap_diff.c; AD never uses multi-valued RDNs.
 * Pure code: no I/O, no clock, no globals besides constant tables.
 */
#include "sinks/ad_diff.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sinks/ldap_diff.h"
#include "sinks/sink_password.h"

const char *const ad_diff_managed_attrs[] = {
    "sAMAccountName",
    "userPrincipalName",
    "givenName",
    "sn",
    "displayName",
    "mail",
    "title",
    "department",
    "employeeID",
    "employeeNumber",
    "employeeType",
    "l",
    "manager",
    "accountExpires",
    NULL,
};

const char *const ad_diff_internal_attrs[] = {
    /* sources of computed values */
    "uid",
    "cn",
    "departmentNumber",
    "terminationDate",
    /* the sink's own, or the directory's */
    "objectClass",
    "userAccountControl",
    "unicodePwd",
    "userPassword",
    "pwdLastSet",
    "memberOf",
    "member",
    "distinguishedName",
    "dn",
    "name",
    "objectGUID",
    "objectSid",
    NULL,
};

static bool name_in(const char *const *list, const char *name)
{
	for (; *list != NULL; list++)
		if (strcasecmp(*list, name) == 0)
			return true;
	return false;
}

bool ad_diff_is_extra(const char *name)
{
	if (name == NULL ||
	    !((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z')))
		return false;
	for (const char *p = name; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-'))
			return false;
	return !name_in(ad_diff_managed_attrs, name) &&
	       !name_in(ad_diff_internal_attrs, name);
}

static const char *const op_kind_names[] = {
#define AD_DIFF_OP_NAME_(n, s) s,
    AD_DIFF_OP_MAP(AD_DIFF_OP_NAME_)
#undef AD_DIFF_OP_NAME_
};

const char *ad_diff_op_kind_name(ad_diff_op_kind_t k)
{
	if ((int)k < 0 || k >= AD_DIFF_OP_COUNT)
		return "unknown";
	return op_kind_names[k];
}

/* ---- entry ---- */

void ad_diff_entry_init(ad_diff_entry_t *e)
{
	memset(e, 0, sizeof(*e));
	id_attrs_init(&e->attrs);
}

void ad_diff_entry_fini(ad_diff_entry_t *e)
{
	if (e == NULL)
		return;
	free(e->dn);
	id_attrs_fini(&e->attrs);
	for (size_t i = 0; i < e->nmember_of; i++)
		free(e->member_of[i]);
	free(e->member_of);
	ad_diff_entry_init(e);
}

int ad_diff_entry_set_dn(ad_diff_entry_t *e, const char *dn)
{
	char *n = dn != NULL ? strdup(dn) : NULL;
	if (dn != NULL && n == NULL)
		return ID_ENOMEM;
	free(e->dn);
	e->dn = n;
	return 0;
}

int ad_diff_entry_add_member_of(ad_diff_entry_t *e, const char *group_dn)
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

void ad_diff_plan_init(ad_diff_plan_t *p)
{
	memset(p, 0, sizeof(*p));
}

static void op_fini(ad_diff_op_t *op)
{
	free(op->dn);
	free(op->attribute);
	free(op->old_value);
	free(op->new_value);
	free(op->new_rdn);
	free(op->new_superior);
	free(op->alt_rdn);
	free(op->alt_dn);
	id_attrs_fini(&op->attrs);
}

void ad_diff_plan_fini(ad_diff_plan_t *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->nops; i++)
		op_fini(&p->ops[i]);
	free(p->ops);
	free(p->dn);
	free(p->sam);
	ad_diff_plan_init(p);
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
static ad_diff_op_t *plan_push(ad_diff_plan_t *p, ad_diff_op_kind_t kind, const char *dn,
                               const char *attribute, const char *old_value,
                               const char *new_value)
{
	if (p->nops == p->cap) {
		size_t ncap = p->cap ? p->cap * 2 : 8;
		ad_diff_op_t *n = realloc(p->ops, ncap * sizeof(*n));
		if (n == NULL)
			return NULL;
		p->ops = n;
		p->cap = ncap;
	}
	ad_diff_op_t *op = &p->ops[p->nops];
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

/* ---- strings ---- */

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

static const char *desired_attr(const desired_identity_t *d, const char *name)
{
	return nonempty(attrs_get_ci(&d->attributes, name));
}

/* Number of UTF-8 characters (lead bytes) in s[0..n). */
static size_t utf8_chars(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xC0) != 0x80;
	return c;
}

/*
 * Copies src without the bytes drop() refuses, trimmed of spaces, cut to
 * max characters on a character boundary.  NULL when nothing is left or
 * on ENOMEM.
 */
static char *shape(const char *src, bool (*drop)(unsigned char), size_t max)
{
	size_t n = strlen(src), len = 0, chars = 0;
	char *out = malloc(n + 1);
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)src[i];
		if (drop(c))
			continue;
		if ((c & 0xC0) != 0x80) {
			if (chars == max)
				break;
			chars++;
		}
		out[len++] = (char)c;
	}
	out[len] = '\0';
	size_t start = 0;
	while (out[start] == ' ')
		start++;
	while (len > start && out[len - 1] == ' ')
		len--;
	memmove(out, out + start, len - start);
	out[len - start] = '\0';
	if (out[0] == '\0') {
		free(out);
		return NULL;
	}
	return out;
}

static bool is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static bool sam_forbidden(unsigned char c)
{
	return is_control(c) || strchr("\"/\\[]:;|=,+*?<>@", c) != NULL;
}

char *ad_diff_sam_account_name(const desired_identity_t *d)
{
	const char *src = desired_attr(d, "sAMAccountName");
	if (src == NULL)
		src = desired_attr(d, "uid");
	return src != NULL ? shape(src, sam_forbidden, AD_DIFF_SAM_MAX) : NULL;
}

char *ad_diff_cn(const desired_identity_t *d)
{
	const char *src = desired_attr(d, "cn");
	if (src == NULL)
		src = desired_attr(d, "displayName");
	if (src == NULL)
		src = desired_attr(d, "uid");
	return src != NULL ? shape(src, is_control, AD_DIFF_CN_MAX) : NULL;
}

char *ad_diff_cn_alt(const char *cn, const char *sam)
{
	size_t suffix = 3 + utf8_chars(sam, strlen(sam)); /* " (" sam ")" */
	size_t keep = suffix < AD_DIFF_CN_MAX ? AD_DIFF_CN_MAX - suffix : 1;
	/* Cut cn to keep characters, then drop trailing spaces. */
	size_t n = 0, chars = 0;
	for (; cn[n] != '\0'; n++) {
		if (((unsigned char)cn[n] & 0xC0) != 0x80) {
			if (chars == keep)
				break;
			chars++;
		}
	}
	while (n > 0 && cn[n - 1] == ' ')
		n--;
	size_t len = n + strlen(sam) + 4;
	char *out = malloc(len);
	if (out != NULL)
		snprintf(out, len, "%.*s (%s)", (int)n, cn, sam);
	return out;
}

/* ---- accountExpires ---- */

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's method). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool leap(unsigned y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int ad_diff_account_expires(const char *value, char out[24], id_err_t *err)
{
	const char *v = value != NULL ? value : "";
	if (v[0] == '\0' || strcasecmp(v, "never") == 0) {
		snprintf(out, 24, "%s", AD_DIFF_NEVER_EXPIRES);
		return 0;
	}
	size_t n = strlen(v);
	bool digits = n <= 19;
	for (size_t i = 0; digits && i < n; i++)
		digits = v[i] >= '0' && v[i] <= '9';
	if (digits) {
		uint64_t x = strtoull(v, NULL, 10);
		if (x > (uint64_t)INT64_MAX)
			goto bad;
		if (x == 0)
			snprintf(out, 24, "%s", AD_DIFF_NEVER_EXPIRES);
		else
			snprintf(out, 24, "%" PRIu64, x);
		return 0;
	}
	if (n != 10 || v[4] != '-' || v[7] != '-')
		goto bad;
	for (size_t i = 0; i < n; i++)
		if (i != 4 && i != 7 && !(v[i] >= '0' && v[i] <= '9'))
			goto bad;
	unsigned y = (unsigned)strtoul(v, NULL, 10),
	         m = (unsigned)strtoul(v + 5, NULL, 10),
	         d = (unsigned)strtoul(v + 8, NULL, 10);
	static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (y < 1601 || y > 9999 || m < 1 || m > 12 || d < 1 ||
	    d > mdays[m - 1] + (m == 2 && leap(y)))
		goto bad;
	/* The next day at 00:00 UTC, in 100 ns units since 1601-01-01. */
	int64_t days = days_from_civil(y, m, d) + 1 - days_from_civil(1601, 1, 1);
	snprintf(out, 24, "%" PRId64, days * 86400 * INT64_C(10000000));
	return 0;
bad:
	return id_err_set(err, ID_EINVALID,
	                  "accountExpires \"%s\" is neither YYYY-MM-DD, a FILETIME nor "
	                  "\"never\"",
	                  v);
}

/* "never" has two spellings in AD: 0 and INT64_MAX (and absent). */
static bool expires_never(const char *v)
{
	return v == NULL || strcmp(v, "0") == 0 || strcmp(v, AD_DIFF_NEVER_EXPIRES) == 0;
}

/* ---- passwords ---- */

void ad_diff_password_from_bytes(const unsigned char rnd[AD_DIFF_PASSWORD_LEN], char *out)
{
	static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                 "abcdefghijklmnopqrstuvwxyz"
	                                 "0123456789-.";
	for (size_t i = 0; i < AD_DIFF_PASSWORD_LEN; i++)
		out[i] = alphabet[rnd[i] & 63];
	out[AD_DIFF_PASSWORD_LEN] = '\0';
}

bool ad_diff_password_complex(const char *pw, const char *sam, const char *display_name)
{
	/* The rule itself is shared with the other sinks' password policies. */
	static const sink_password_policy_t ad = {AD_DIFF_PASSWORD_LEN, 3, true};
	return pw != NULL && sink_password_meets(&ad, pw, sam, display_name);
}

static int put_u16le(id_buf_t *out, uint32_t u)
{
	return id_buf_append_u8(out, (uint8_t)(u & 0xff)) != 0 ||
	               id_buf_append_u8(out, (uint8_t)(u >> 8)) != 0
	           ? ID_ENOMEM
	           : 0;
}

int ad_diff_unicode_pwd(const char *pw, id_buf_t *out)
{
	id_buf_reset(out);
	if (put_u16le(out, '"') != 0)
		return ID_ENOMEM;
	const unsigned char *p = (const unsigned char *)pw;
	while (*p) {
		uint32_t cp;
		size_t len;
		if (p[0] < 0x80) {
			cp = p[0];
			len = 1;
		} else if ((p[0] & 0xE0) == 0xC0) {
			cp = p[0] & 0x1F;
			len = 2;
		} else if ((p[0] & 0xF0) == 0xE0) {
			cp = p[0] & 0x0F;
			len = 3;
		} else if ((p[0] & 0xF8) == 0xF0) {
			cp = p[0] & 0x07;
			len = 4;
		} else {
			return ID_EINVALID;
		}
		for (size_t i = 1; i < len; i++) {
			if ((p[i] & 0xC0) != 0x80)
				return ID_EINVALID;
			cp = (cp << 6) | (p[i] & 0x3F);
		}
		static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
		if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return ID_EINVALID;
		int rc;
		if (cp >= 0x10000) {
			cp -= 0x10000;
			rc = put_u16le(out, 0xD800 | (cp >> 10));
			if (rc == 0)
				rc = put_u16le(out, 0xDC00 | (cp & 0x3FF));
		} else {
			rc = put_u16le(out, cp);
		}
		if (rc != 0)
			return rc;
		p += len;
	}
	return put_u16le(out, '"');
}

/* ---- DNs ---- */

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

/* Length of the first RDN of dn: up to its first unescaped ','. */
static size_t dn_rdn_len(const char *dn)
{
	size_t i = 0;
	for (; dn[i] != '\0' && dn[i] != ','; i++)
		if (dn[i] == '\\' && dn[i + 1] != '\0')
			i++;
	return i;
}

/*
 * Reads "type=value" in s[0..n) (RFC 4514, strict): *type_len is the type's
 * length (after leading spaces at *type_off), value is unescaped into out
 * (NUL-terminated), unescaped leading/trailing spaces dropped.
 * 0, ID_EPARSE or ID_ENOMEM.
 */
static int ava_read(const char *s, size_t n, size_t *type_off, size_t *type_len,
                    id_buf_t *out)
{
	size_t i = 0;
	id_buf_reset(out);
	while (i < n && s[i] == ' ')
		i++;
	*type_off = i;
	while (i < n && s[i] != '=' && s[i] != ' ')
		i++;
	*type_len = i - *type_off;
	while (i < n && s[i] == ' ')
		i++;
	if (*type_len == 0 || i >= n || s[i] != '=')
		return ID_EPARSE;
	i++;
	while (i < n && s[i] == ' ')
		i++;
	size_t keep = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '+' || c == ';' || c == '<' || c == '>' ||
		    c == ',' || c == '\0')
			return ID_EPARSE;
		if (c == '\\') {
			int h = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
			int l =
			    h >= 0 && i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
			if (h >= 0 && l >= 0) {
				c = (unsigned char)(h * 16 + l);
				i += 3;
			} else if (i + 1 < n &&
			           strchr("\"+,;<>\\ #=", s[i + 1]) != NULL) {
				c = (unsigned char)s[i + 1];
				i += 2;
			} else {
				return ID_EPARSE;
			}
			if (c == 0)
				return ID_EPARSE;
			if (id_buf_append_u8(out, c) != 0)
				return ID_ENOMEM;
			keep = out->len;
			continue;
		}
		if (id_buf_append_u8(out, c) != 0)
			return ID_ENOMEM;
		if (c != ' ')
			keep = out->len;
		i++;
	}
	out->len = keep;
	if (id_buf_append_u8(out, 0) != 0)
		return ID_ENOMEM;
	out->len--;
	return 0;
}

/* An ordered list of ou values, innermost first (DN order). */
typedef struct ou_list {
	char **v;
	size_t n;
} ou_list_t;

static void ou_list_fini(ou_list_t *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int ou_list_push(ou_list_t *l, const char *s, size_t n)
{
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (v == NULL)
		return ID_ENOMEM;
	l->v = v;
	if ((v[l->n] = strndup(s, n)) == NULL)
		return ID_ENOMEM;
	l->n++;
	return 0;
}

/*
 * The container as ou values.  "ou=Berlin,ou=Sales" is two levels; a
 * string that is not a DN of non-empty ou= parts but starts with "ou=" —
 * typically "ou=R&D, Europe" from a raw department name — is one ou whose
 * value is everything after "ou=" (the same reading as sinks/ldap_diff.c).
 */
static int container_parse(const char *container, ou_list_t *out, id_err_t *err)
{
	id_buf_t val = ID_BUF_INIT;
	int rc = 0;
	out->v = NULL;
	out->n = 0;
	if (container == NULL || container[0] == '\0')
		goto out;
	for (const char *p = container;;) {
		size_t n = dn_rdn_len(p), toff, tlen;
		rc = ava_read(p, n, &toff, &tlen, &val);
		if (rc == ID_ENOMEM)
			goto nomem;
		if (rc != 0 || tlen != 2 || strncasecmp(p + toff, "ou", 2) != 0 ||
		    val.len == 0)
			goto raw;
		if ((rc = ou_list_push(out, (const char *)val.data, val.len)) != 0)
			goto nomem;
		if (p[n] == '\0')
			break;
		p += n + 1;
	}
	goto out;
raw:
	ou_list_fini(out);
	rc = 0;
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
	if (ou_list_push(out, v, len) != 0)
		goto nomem;
	goto out;
bad:
	rc = id_err_set(err, ID_EINVALID,
	                "container \"%s\" is neither an ou= DN nor \"ou=<name>\"",
	                container);
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "container \"%s\": out of memory", container);
out:
	if (rc != 0)
		ou_list_fini(out);
	id_buf_fini(&val);
	return rc;
}

/* Appends "OU=a,OU=b,...," for ous[from..n) then base; NUL-terminated. */
static int ou_dn(id_buf_t *out, const ou_list_t *ous, size_t from, const char *base)
{
	id_buf_reset(out);
	for (size_t i = from; i < ous->n; i++)
		if (id_buf_append_str(out, "OU=") != 0 ||
		    ldap_diff_dn_escape(out, ous->v[i]) != 0 ||
		    id_buf_append_u8(out, ',') != 0)
			return ID_ENOMEM;
	if (id_buf_append_str(out, base) != 0 || id_buf_append_u8(out, 0) != 0)
		return ID_ENOMEM;
	out->len--;
	return 0;
}

/* "CN=<escaped cn>" into out, NUL-terminated. */
static int cn_rdn(id_buf_t *out, const char *cn)
{
	id_buf_reset(out);
	if (id_buf_append_str(out, "CN=") != 0 || ldap_diff_dn_escape(out, cn) != 0 ||
	    id_buf_append_u8(out, 0) != 0)
		return ID_ENOMEM;
	out->len--;
	return 0;
}

static char *join_dn(const char *rdn, size_t rdn_len, const char *parent)
{
	size_t len = rdn_len + 1 + strlen(parent) + 1;
	char *s = malloc(len);
	if (s != NULL)
		snprintf(s, len, "%.*s,%s", (int)rdn_len, rdn, parent);
	return s;
}

/* ---- the diff ---- */

static bool has_group(const desired_identity_t *d, const char *name)
{
	for (size_t i = 0; i < d->ngroups; i++)
		if (strcasecmp(d->groups[i], name) == 0)
			return true;
	return false;
}

static bool member_of_group(const ldap_diff_layout_t *gl, const ad_diff_entry_t *e,
                            const char *name)
{
	for (size_t i = 0; i < e->nmember_of; i++) {
		char *g = ldap_diff_group_name(gl, e->member_of[i]);
		bool hit = g != NULL && strcasecmp(g, name) == 0;
		free(g);
		if (hit)
			return true;
	}
	return false;
}

/* Milliseconds since the Unix epoch as a FILETIME (100 ns since 1601). */
static void filetime_from_ms(int64_t ms, char out[24])
{
	int64_t days1601 = -days_from_civil(1601, 1, 1);
	snprintf(out, 24, "%" PRId64, (ms + days1601 * INT64_C(86400000)) * 10000);
}

/*
 * The managed attribute values the object should carry (absent = NULL).
 * *expires_implied is set when accountExpires is not from the desired
 * attributes but from the termination (see ad_diff_compute()).
 */
static int want_compute(const ad_diff_layout_t *layout, const desired_identity_t *d,
                        const char *manager_dn, const char *sam, id_attrs_t *want,
                        bool *expires_implied, id_err_t *err)
{
	id_buf_t upn = ID_BUF_INIT;
	int rc = 0;
	const char *uid = desired_attr(d, "uid");
	const char *suffix =
	    layout->upn_suffix != NULL ? nonempty(layout->upn_suffix) : NULL;
	for (const char *const *a = ad_diff_managed_attrs; *a != NULL; a++) {
		const char *v;
		char exp[24];
		if (strcmp(*a, "sAMAccountName") == 0) {
			v = sam;
		} else if (strcmp(*a, "userPrincipalName") == 0) {
			v = desired_attr(d, "userPrincipalName");
			if (v == NULL && uid != NULL && suffix != NULL) {
				if (id_buf_printf(&upn, "%s@%s", uid, suffix) != 0 ||
				    id_buf_append_u8(&upn, 0) != 0)
					goto nomem;
				v = (const char *)upn.data;
			}
		} else if (strcmp(*a, "department") == 0) {
			v = desired_attr(d, "department");
			if (v == NULL)
				v = desired_attr(d, "departmentNumber");
		} else if (strcmp(*a, "employeeID") == 0) {
			v = d->employee_id;
		} else if (strcmp(*a, "manager") == 0) {
			v = d->manager_id != NULL ? nonempty(manager_dn) : NULL;
		} else if (strcmp(*a, "accountExpires") == 0) {
			const char *src = desired_attr(d, "accountExpires");
			if (src == NULL)
				src = desired_attr(d, "terminationDate");
			*expires_implied = false;
			if (src == NULL && d->state == LC_DISABLED &&
			    d->effective_at > 0) {
				/* Terminated without a date: the version's effective
				 * time is when the termination took effect. */
				filetime_from_ms(d->effective_at, exp);
				*expires_implied = true;
			} else if ((rc = ad_diff_account_expires(src, exp, err)) != 0) {
				id_err_wrap(err, "ad diff: employee %s", d->employee_id);
				goto out;
			}
			v = exp;
		} else {
			v = desired_attr(d, *a);
		}
		if (v != NULL && id_attrs_set(want, *a, v) != 0)
			goto nomem;
	}
	/* The extra attributes, under the desired identity's names. */
	for (size_t i = 0; i < d->attributes.len; i++) {
		const char *k = d->attributes.items[i].key;
		const char *v = nonempty(d->attributes.items[i].value);
		if (v != NULL && ad_diff_is_extra(k) && attrs_get_ci(want, k) == NULL &&
		    id_attrs_set(want, k, v) != 0)
			goto nomem;
	}
	goto out;
nomem:
	rc = id_err_set(err, ID_ENOMEM, "ad diff: employee %s: out of memory",
	                d->employee_id);
out:
	id_buf_fini(&upn);
	return rc;
}

/*
 * Appends a MODIFY for extra attribute name when the object's value differs
 * from the wanted one (absent on either side included).
 */
static int diff_extra(ad_diff_plan_t *plan, const char *target,
                      const ad_diff_entry_t *actual, const id_attrs_t *want,
                      const char *name)
{
	const char *have = attrs_get_ci(&actual->attrs, name);
	const char *w = attrs_get_ci(want, name);
	bool same = (have == NULL || w == NULL) ? have == w : strcmp(have, w) == 0;
	if (same)
		return 0;
	return plan_push(plan, AD_DIFF_OP_MODIFY, target, name, have, w) != NULL
	           ? 0
	           : ID_ENOMEM;
}

#define PUSH(...)                                                                        \
	do {                                                                             \
		if ((op = plan_push(__VA_ARGS__)) == NULL)                               \
			goto nomem;                                                      \
	} while (0)

int ad_diff_compute(const ad_diff_layout_t *layout, const desired_identity_t *d,
                    const ad_diff_entry_t *actual, const char *manager_dn,
                    ad_diff_plan_t *plan, id_err_t *err)
{
	return ad_diff_compute_extra(layout, NULL, 0, d, actual, manager_dn, plan, err);
}

int ad_diff_compute_extra(const ad_diff_layout_t *layout, const char *const *extra_attrs,
                          size_t nextra_attrs, const desired_identity_t *d,
                          const ad_diff_entry_t *actual, const char *manager_dn,
                          ad_diff_plan_t *plan, id_err_t *err)
{
	ou_list_t ous = {NULL, 0};
	id_attrs_t want = ID_ATTRS_INIT;
	id_buf_t parent = ID_BUF_INIT, rdn = ID_BUF_INIT, alt_rdn = ID_BUF_INIT,
	         tmp = ID_BUF_INIT, aval = ID_BUF_INIT;
	char *sam = NULL, *cn = NULL, *alt_cn = NULL, *target = NULL, *alt_target = NULL;
	ad_diff_op_t *op;
	char num[2][16];
	int rc = 0;

	ad_diff_plan_fini(plan);
	if (layout == NULL || layout->people_dn == NULL || layout->groups_dn == NULL)
		return id_err_set(err, ID_EINVALID, "ad diff: layout DNs missing");
	if (d->employee_id == NULL || d->employee_id[0] == '\0')
		return id_err_set(err, ID_EINVALID,
		                  "ad diff: desired identity has no employee id");
	if (actual != NULL && actual->dn == NULL)
		return id_err_set(err, ID_EINVALID,
		                  "ad diff: employee %s: object without DN",
		                  d->employee_id);
	const ldap_diff_layout_t gl = {layout->people_dn, layout->groups_dn, NULL};

	if (d->state == LC_DELETED || (d->state == LC_DISABLED && actual == NULL) ||
	    (d->state == LC_PENDING && actual == NULL)) {
		/* Never create an account only to shut it, nor before pre-start.
		 * AD removes the object's group links and manager references. */
		if (actual != NULL)
			PUSH(plan, AD_DIFF_OP_DELETE, actual->dn, "dn", actual->dn, NULL);
		goto out;
	}
	if (d->state == LC_PENDING) {
		/* Before the pre-start window an existing object is left as it
		 * is, only kept disabled (see ad_diff.h). */
		uint32_t u = actual->has_uac ? actual->uac : AD_DIFF_UAC_ENABLED;
		if ((plan->dn = strdup(actual->dn)) == NULL)
			goto nomem;
		if (!(u & AD_DIFF_UAC_ACCOUNTDISABLE)) {
			snprintf(num[0], sizeof(num[0]), "%u", u);
			snprintf(num[1], sizeof(num[1]), "%u",
			         u | AD_DIFF_UAC_ACCOUNTDISABLE);
			PUSH(plan, AD_DIFF_OP_DISABLE, actual->dn, "userAccountControl",
			     num[0], num[1]);
		}
		goto out;
	}

	sam = ad_diff_sam_account_name(d);
	cn = ad_diff_cn(d);
	if (cn == NULL) {
		rc = id_err_set(err, ID_EINVALID,
		                "ad diff: employee %s: no cn, displayName or uid to name "
		                "the object",
		                d->employee_id);
		goto out;
	}
	if (sam == NULL && actual == NULL) {
		rc = id_err_set(err, ID_EINVALID,
		                "ad diff: employee %s: no sAMAccountName or uid",
		                d->employee_id);
		goto out;
	}
	if (sam != NULL && (plan->sam = strdup(sam)) == NULL)
		goto nomem;
	bool expires_implied = false;
	if ((rc = want_compute(layout, d, manager_dn, sam, &want, &expires_implied,
	                       err)) != 0)
		goto out;
	bool manager_pending = d->manager_id != NULL && nonempty(manager_dn) == NULL;
	bool want_lock = d->state != LC_ACTIVE;

	if ((rc = container_parse(d->container, &ous, err)) != 0)
		goto out;
	if (ou_dn(&parent, &ous, 0, layout->people_dn) != 0 || cn_rdn(&rdn, cn) != 0)
		goto nomem;
	/* The CN for when cn is taken in the OU by someone else's object. */
	if (sam != NULL) {
		if ((alt_cn = ad_diff_cn_alt(cn, sam)) == NULL ||
		    cn_rdn(&alt_rdn, alt_cn) != 0)
			goto nomem;
	}
	const char *pdn = (const char *)parent.data;

	/* Where the object goes: keep an acceptable CN it already has. */
	bool rdn_moves = true, parent_moves = true;
	size_t keep_len = 0;
	if (actual != NULL) {
		size_t n = dn_rdn_len(actual->dn), toff, tlen;
		int r = ava_read(actual->dn, n, &toff, &tlen, &aval);
		if (r == ID_ENOMEM)
			goto nomem;
		const char *have = (const char *)aval.data;
		rdn_moves = !(r == 0 && tlen == 2 &&
		              strncasecmp(actual->dn + toff, "cn", 2) == 0 &&
		              (strcasecmp(have, cn) == 0 ||
		               (alt_cn != NULL && strcasecmp(have, alt_cn) == 0)));
		parent_moves =
		    actual->dn[n] != ',' || !ldap_diff_dn_equal(actual->dn + n + 1, pdn);
		if (!rdn_moves) {
			keep_len = n;
			/* Already in the alternative form: no further fallback. */
			if (alt_cn != NULL && strcasecmp(have, cn) != 0)
				id_buf_reset(&alt_rdn);
		}
	}
	if (actual != NULL && !rdn_moves)
		target = join_dn(actual->dn, keep_len, pdn);
	else
		target = join_dn((const char *)rdn.data, rdn.len, pdn);
	if (target == NULL || (plan->dn = strdup(target)) == NULL)
		goto nomem;
	if (alt_rdn.len > 0 &&
	    (alt_target = join_dn((const char *)alt_rdn.data, alt_rdn.len, pdn)) == NULL)
		goto nomem;

	/* OUs, outermost first, when the object is created or moved. */
	if (actual == NULL || parent_moves) {
		for (size_t i = ous.n; i-- > 0;) {
			if (ou_dn(&tmp, &ous, i, layout->people_dn) != 0)
				goto nomem;
			PUSH(plan, AD_DIFF_OP_ENSURE_OU, (const char *)tmp.data, "ou",
			     NULL, ous.v[i]);
		}
	}

	if (actual == NULL) {
		PUSH(plan, AD_DIFF_OP_ADD, target, "dn", NULL, target);
		if (dup_opt(&op->alt_dn, alt_target) != 0 ||
		    id_attrs_copy(&op->attrs, &want))
			goto nomem;
		/* Created disabled in the same add: never a moment enabled. */
		snprintf(num[0], sizeof(num[0]), "%u",
		         want_lock ? AD_DIFF_UAC_DISABLED : AD_DIFF_UAC_ENABLED);
		if (id_attrs_set(&op->attrs, "userAccountControl", num[0]) != 0)
			goto nomem;
		for (size_t i = 0; i < d->ngroups; i++) {
			if (ldap_diff_group_dn(&gl, d->groups[i], &tmp) != 0)
				goto nomem;
			PUSH(plan, AD_DIFF_OP_GROUP_ADD, (const char *)tmp.data,
			     d->groups[i], NULL, target);
		}
		goto out;
	}

	uint32_t uac = actual->has_uac ? actual->uac : AD_DIFF_UAC_ENABLED;
	snprintf(num[0], sizeof(num[0]), "%u", uac);
	/* Disable first: if anything later fails, the account is already shut. */
	if (want_lock && !(uac & AD_DIFF_UAC_ACCOUNTDISABLE)) {
		snprintf(num[1], sizeof(num[1]), "%u", uac | AD_DIFF_UAC_ACCOUNTDISABLE);
		PUSH(plan, AD_DIFF_OP_DISABLE, actual->dn, "userAccountControl", num[0],
		     num[1]);
	}

	if (rdn_moves || parent_moves) {
		PUSH(plan, AD_DIFF_OP_MODRDN, actual->dn, "dn", actual->dn, target);
		op->new_rdn = rdn_moves ? strndup((const char *)rdn.data, rdn.len)
		                        : strndup(actual->dn, keep_len);
		if (op->new_rdn == NULL)
			goto nomem;
		if (parent_moves && (op->new_superior = strdup(pdn)) == NULL)
			goto nomem;
		if (alt_target != NULL &&
		    ((op->alt_rdn = strndup((const char *)alt_rdn.data, alt_rdn.len)) ==
		         NULL ||
		     (op->alt_dn = strdup(alt_target)) == NULL))
			goto nomem;
	}

	for (const char *const *a = ad_diff_managed_attrs; *a != NULL; a++) {
		const char *have = attrs_get_ci(&actual->attrs, *a);
		const char *w = id_attrs_get(&want, *a);
		bool same;
		if (strcmp(*a, "manager") == 0) {
			if (manager_pending)
				continue;
			same = ldap_diff_dn_equal(have, w);
		} else if (strcmp(*a, "accountExpires") == 0) {
			/* A termination without a date keeps the expiry the object
			 * got when it was disabled (later versions of a leaver
			 * have later effective times). */
			same =
			    expires_never(have)
			        ? expires_never(w)
			        : expires_implied || (w != NULL && strcmp(have, w) == 0);
		} else if (w == NULL && (strcmp(*a, "sAMAccountName") == 0 ||
		                         strcmp(*a, "userPrincipalName") == 0)) {
			continue; /* nothing decided (yet): keep what is there */
		} else {
			same = (have == NULL || w == NULL) ? have == w
			                                   : strcmp(have, w) == 0;
		}
		if (!same)
			PUSH(plan, AD_DIFF_OP_MODIFY, target, *a, have, w);
	}
	/* Extra attributes: the desired identity's, then the others known. */
	for (size_t i = 0; i < d->attributes.len; i++) {
		const char *k = d->attributes.items[i].key;
		bool dup = false;
		for (size_t j = 0; !dup && j < i; j++)
			dup = strcasecmp(d->attributes.items[j].key, k) == 0;
		if (!dup && ad_diff_is_extra(k) &&
		    diff_extra(plan, target, actual, &want, k) != 0)
			goto nomem;
	}
	for (size_t i = 0; extra_attrs != NULL && i < nextra_attrs; i++) {
		const char *k = extra_attrs[i];
		if (ad_diff_is_extra(k) && attrs_get_ci(&d->attributes, k) == NULL &&
		    diff_extra(plan, target, actual, &want, k) != 0)
			goto nomem;
	}

	for (size_t i = 0; i < d->ngroups; i++) {
		if (member_of_group(&gl, actual, d->groups[i]))
			continue;
		if (ldap_diff_group_dn(&gl, d->groups[i], &tmp) != 0)
			goto nomem;
		PUSH(plan, AD_DIFF_OP_GROUP_ADD, (const char *)tmp.data, d->groups[i],
		     NULL, target);
	}
	for (size_t i = 0; i < actual->nmember_of; i++) {
		char *name = ldap_diff_group_name(&gl, actual->member_of[i]);
		if (name == NULL)
			continue; /* not ours (or ENOMEM: the next apply retries) */
		bool drop = !has_group(d, name);
		/* Two memberOf values can name one group in different spellings. */
		for (size_t j = 0; drop && j < plan->nops; j++)
			if (plan->ops[j].kind == AD_DIFF_OP_GROUP_REMOVE &&
			    strcasecmp(plan->ops[j].attribute, name) == 0)
				drop = false;
		op = drop ? plan_push(plan, AD_DIFF_OP_GROUP_REMOVE, actual->member_of[i],
		                      name, target, NULL)
		          : NULL;
		free(name);
		if (drop && op == NULL)
			goto nomem;
	}

	if (!want_lock && (uac & AD_DIFF_UAC_ACCOUNTDISABLE)) {
		snprintf(num[1], sizeof(num[1]), "%u", uac & ~AD_DIFF_UAC_ACCOUNTDISABLE);
		PUSH(plan, AD_DIFF_OP_ENABLE, target, "userAccountControl", num[0],
		     num[1]);
	}
	goto out;

nomem:
	rc = id_err_set(err, ID_ENOMEM, "ad diff: employee %s: out of memory",
	                d->employee_id);
out:
	if (rc != 0)
		ad_diff_plan_fini(plan);
	ou_list_fini(&ous);
	id_attrs_fini(&want);
	id_buf_fini(&parent);
	id_buf_fini(&rdn);
	id_buf_fini(&alt_rdn);
	id_buf_fini(&tmp);
	id_buf_fini(&aval);
	free(sam);
	free(cn);
	free(alt_cn);
	free(target);
	free(alt_target);
	return rc;
}
