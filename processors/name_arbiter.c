/*
 * name_arbiter.c — decisions on unique names (see name_arbiter.h for the
 * rules and the entry layout).
 *
 * Invariant: an entry that is not FREE has an owner, a value and a claim id;
 * name_arbiter_decide() changes *e only on success, so an out-of-memory in
 * the middle of a decision leaves the name as it was.
 * Pure: no I/O, no clock; SHA-256 comes from OpenSSL's digest (a function).
 */
#include "processors/name_arbiter.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_ENTRY_FORMAT 0x01

static const char *const state_names[] = {"FREE", "GRANTED", "RESERVED", "RELEASED"};
static const char *const reason_names[] = {
    "", "taken", "reserved", "quarantined", "invalid", "not_owner"};

const char *name_state_name(name_state_t s)
{
	return (unsigned)s <= NAME_STATE_RELEASED ? state_names[s] : "UNKNOWN";
}

const char *name_reason_name(name_reason_t r)
{
	return (unsigned)r <= NAME_REASON_NOT_OWNER ? reason_names[r] : "";
}

void name_entry_init(name_entry_t *e)
{
	memset(e, 0, sizeof(*e));
}

void name_entry_fini(name_entry_t *e)
{
	if (e == NULL)
		return;
	free(e->owner);
	free(e->value);
	free(e->claim_id);
	name_entry_init(e);
}

static int put_str(id_buf_t *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n > UINT32_MAX || id_buf_append_be32(b, (uint32_t)n) != 0 ||
	    id_buf_append(b, s ? s : "", n) != 0)
		return ID_ENOMEM;
	return 0;
}

int name_entry_encode(const name_entry_t *e, id_buf_t *out)
{
	id_buf_reset(out);
	if (e->state == NAME_STATE_FREE || e->state > NAME_STATE_RELEASED)
		return ID_EINVALID;
	if (id_buf_append_u8(out, NAME_ENTRY_FORMAT) != 0 ||
	    id_buf_append_u8(out, (uint8_t)e->state) != 0 ||
	    id_buf_append_be64(out, (uint64_t)e->since) != 0 ||
	    id_buf_append_be64(out, (uint64_t)e->quarantine_until) != 0 ||
	    put_str(out, e->owner) != 0 || put_str(out, e->value) != 0 ||
	    put_str(out, e->claim_id) != 0)
		return ID_ENOMEM;
	return 0;
}

static uint64_t get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Reads one length-prefixed string at *pos; 1 on success, 0 when short,
 * -1 on ENOMEM. */
static int get_str(const unsigned char *p, size_t len, size_t *pos, char **out)
{
	if (len - *pos < 4)
		return 0;
	uint32_t n = ((uint32_t)p[*pos] << 24) | ((uint32_t)p[*pos + 1] << 16) |
	             ((uint32_t)p[*pos + 2] << 8) | p[*pos + 3];
	*pos += 4;
	if (len - *pos < n || memchr(p + *pos, 0, n) != NULL)
		return 0;
	if ((*out = strndup((const char *)p + *pos, n)) == NULL)
		return -1;
	*pos += n;
	return 1;
}

int name_entry_decode(name_entry_t *e, const void *data, size_t len, id_err_t *err)
{
	const unsigned char *p = data;
	size_t pos = 18;
	int r = 0;
	name_entry_fini(e);
	if (len < 18 || p[0] != NAME_ENTRY_FORMAT || p[1] == NAME_STATE_FREE ||
	    p[1] > NAME_STATE_RELEASED)
		goto bad;
	e->state = (name_state_t)p[1];
	e->since = (int64_t)get_be64(p + 2);
	e->quarantine_until = (int64_t)get_be64(p + 10);
	if ((r = get_str(p, len, &pos, &e->owner)) != 1 ||
	    (r = get_str(p, len, &pos, &e->value)) != 1 ||
	    (r = get_str(p, len, &pos, &e->claim_id)) != 1 || pos != len)
		goto bad;
	return 0;
bad:
	name_entry_fini(e);
	if (r < 0)
		return id_err_set(err, ID_ENOMEM, "name entry: out of memory");
	return id_err_set(err, ID_EPARSE,
	                  "name entry: %zu bytes that are not a format-1 entry", len);
}

int name_key(const char *ns, const char *value, id_buf_t *out)
{
	id_buf_reset(out);
	if (id_buf_append_str(out, ns) != 0 || id_buf_append_u8(out, ':') != 0 ||
	    id_buf_append_str(out, value) != 0)
		return ID_ENOMEM;
	for (size_t i = 0; i < out->len; i++)
		if (out->data[i] >= 'A' && out->data[i] <= 'Z')
			out->data[i] = (unsigned char)(out->data[i] - 'A' + 'a');
	return 0;
}

/* 32 hex digits of the first 16 bytes of SHA-256 over the n parts, each
 * followed by a NUL except the last (so ("ab","c") and ("a","bc") differ). */
static int hash_hex(const char *const *parts, size_t n, char **out)
{
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned int hl = 0;
	int rc = ID_ENOMEM;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		goto out;
	for (size_t i = 0; i < n; i++)
		if (EVP_DigestUpdate(md, parts[i], strlen(parts[i]) + (i + 1 < n)) != 1)
			goto out;
	if (EVP_DigestFinal_ex(md, h, &hl) != 1 || hl < 16)
		goto out;
	char *hex = malloc(33);
	if (hex == NULL)
		goto out;
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	free(*out);
	*out = hex;
	rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

int name_claim_make_id(name_claim_t *c)
{
	char at[32];
	if (c->ns == NULL || c->value == NULL || c->employee_id == NULL)
		return ID_EINVALID;
	snprintf(at, sizeof(at), "%" PRId64, c->claimed_at);
	const char *parts[] = {name_claim_kind_name(c->kind), c->employee_id, c->ns,
	                       c->value, at};
	return hash_hex(parts, 5, &c->claim_id);
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

int name_claim_check(const name_claim_t *c, const void *key, size_t klen, id_err_t *err)
{
	const char *what = NULL;
	if ((unsigned)c->kind >= NAME_CLAIM_KIND_COUNT)
		what = "kind is out of range";
	else if (c->claim_id == NULL || c->claim_id[0] == '\0')
		what = "claim_id is empty";
	else if (c->employee_id == NULL || c->employee_id[0] == '\0')
		what = "employee_id is empty";
	else if (strlen(c->employee_id) > NAME_OWNER_MAX)
		what = "employee_id is longer than 1024 bytes";
	else if (c->ns == NULL || c->ns[0] == '\0')
		what = "namespace is empty";
	else if (strlen(c->ns) > NAME_NAMESPACE_MAX)
		what = "namespace is longer than 64 bytes";
	else if (strchr(c->ns, ':') != NULL || has_ctl(c->ns))
		what = "namespace contains ':' or a control character";
	else if (c->value == NULL || c->value[0] == '\0')
		what = "value is empty";
	else if (strlen(c->value) > NAME_VALUE_MAX)
		what = "value is longer than 256 bytes";
	else if (has_ctl(c->value))
		what = "value contains a control character";
	else if (c->kind == NAME_RELEASE && c->quarantine_until < 0)
		what = "quarantine_until is negative";
	if (what != NULL)
		return id_err_set(err, ID_EINVALID, "claim %s: %s",
		                  c->claim_id ? c->claim_id : "(no id)", what);
	if (key == NULL)
		return 0;
	id_buf_t k = ID_BUF_INIT;
	if (name_key(c->ns, c->value, &k) != 0) {
		id_buf_fini(&k);
		return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	bool same = k.len == klen && memcmp(k.data, key, klen) == 0;
	id_buf_fini(&k);
	if (!same)
		return id_err_set(err, ID_EINVALID,
		                  "claim %s: message key is not \"%s:<value in lower "
		                  "case>\": it may sit on a partition that does not own "
		                  "the name",
		                  c->claim_id, c->ns);
	return 0;
}

/* Makes *e the entry {state, c's owner, value, id, since}; ID_ENOMEM leaves
 * *e untouched. */
static int entry_set(name_entry_t *e, name_state_t state, const name_claim_t *c,
                     int64_t quarantine_until)
{
	char *owner = strdup(c->employee_id);
	char *value = strdup(c->value);
	char *id = strdup(c->claim_id);
	if (owner == NULL || value == NULL || id == NULL) {
		free(owner);
		free(value);
		free(id);
		return ID_ENOMEM;
	}
	name_entry_fini(e);
	e->state = state;
	e->owner = owner;
	e->value = value;
	e->claim_id = id;
	e->since = c->claimed_at;
	e->quarantine_until = quarantine_until;
	return 0;
}

static void decided(name_decision_t *d, name_outcome_t o, name_reason_t r, bool changed,
                    const char *fmt, const name_claim_t *c)
{
	d->outcome = o;
	d->reason = r;
	d->changed = changed;
	snprintf(d->detail, sizeof(d->detail), fmt, c->ns, c->value, c->employee_id);
}

static int decide_claim(name_entry_t *e, const name_claim_t *c, name_decision_t *d)
{
	bool mine = e->owner != NULL && strcmp(e->owner, c->employee_id) == 0;
	switch (e->state) {
	case NAME_STATE_FREE:
		if (entry_set(e, NAME_STATE_GRANTED, c, 0) != 0)
			return ID_ENOMEM;
		decided(d, NAME_OUTCOME_GRANTED, NAME_REASON_NONE, true,
		        "%s %s granted to %s (was free)", c);
		return 0;
	case NAME_STATE_GRANTED:
		if (mine)
			decided(d, NAME_OUTCOME_GRANTED, NAME_REASON_NONE, false,
			        "%s %s granted again to its owner %s", c);
		else
			decided(d, NAME_OUTCOME_DENIED, NAME_REASON_TAKEN, false,
			        "%s %s denied to %s: taken by another employee", c);
		return 0;
	case NAME_STATE_RESERVED:
		if (!mine) {
			decided(d, NAME_OUTCOME_DENIED, NAME_REASON_RESERVED, false,
			        "%s %s denied to %s: reserved (exists outside idstream)",
			        c);
			return 0;
		}
		if (entry_set(e, NAME_STATE_GRANTED, c, 0) != 0)
			return ID_ENOMEM;
		decided(d, NAME_OUTCOME_GRANTED, NAME_REASON_NONE, true,
		        "%s %s granted to %s, who held its reservation", c);
		return 0;
	case NAME_STATE_RELEASED:
		if (!mine && c->claimed_at < e->quarantine_until) {
			decided(d, NAME_OUTCOME_DENIED, NAME_REASON_QUARANTINED, false,
			        "%s %s denied to %s: released, in quarantine", c);
			d->quarantine_until = e->quarantine_until;
			return 0;
		}
		if (entry_set(e, NAME_STATE_GRANTED, c, 0) != 0)
			return ID_ENOMEM;
		decided(d, NAME_OUTCOME_GRANTED, NAME_REASON_NONE, true,
		        mine ? "%s %s granted back to its old owner %s"
		             : "%s %s granted to %s (quarantine over)",
		        c);
		return 0;
	}
	return ID_EINVALID;
}

static int decide_release(name_entry_t *e, const name_claim_t *c, name_decision_t *d)
{
	bool mine = e->owner != NULL && strcmp(e->owner, c->employee_id) == 0;
	if (e->state == NAME_STATE_FREE || !mine) {
		decided(d, NAME_OUTCOME_NONE, NAME_REASON_NOT_OWNER, false,
		        "release of %s %s by %s ignored: not its owner", c);
		return 0;
	}
	if (e->state == NAME_STATE_RELEASED &&
	    e->quarantine_until == c->quarantine_until) {
		decided(d, NAME_OUTCOME_NONE, NAME_REASON_NONE, false,
		        "%s %s already released by %s", c);
		return 0;
	}
	/* The value keeps the owner's spelling; the release only moves time. */
	name_entry_t n;
	name_entry_init(&n);
	if (entry_set(&n, NAME_STATE_RELEASED, c, c->quarantine_until) != 0)
		return ID_ENOMEM;
	free(n.value);
	n.value = e->value;
	e->value = NULL;
	name_entry_fini(e);
	*e = n;
	decided(d, NAME_OUTCOME_NONE, NAME_REASON_NONE, true, "%s %s released by %s", c);
	return 0;
}

static int decide_reserve(name_entry_t *e, const name_claim_t *c, name_decision_t *d)
{
	bool mine = e->owner != NULL && strcmp(e->owner, c->employee_id) == 0;
	if (e->state == NAME_STATE_GRANTED || e->state == NAME_STATE_RESERVED) {
		if (mine)
			decided(d, NAME_OUTCOME_NONE, NAME_REASON_NONE, false,
			        "%s %s already held by %s", c);
		else
			decided(d, NAME_OUTCOME_NONE,
			        e->state == NAME_STATE_GRANTED ? NAME_REASON_TAKEN
			                                       : NAME_REASON_RESERVED,
			        false,
			        "reservation of %s %s for %s ignored: held by another",
			        c);
		return 0;
	}
	if (entry_set(e, NAME_STATE_RESERVED, c, 0) != 0)
		return ID_ENOMEM;
	decided(d, NAME_OUTCOME_NONE, NAME_REASON_NONE, true, "%s %s reserved for %s", c);
	return 0;
}

int name_arbiter_decide(name_entry_t *e, const name_claim_t *c, const void *key,
                        size_t klen, name_decision_t *d)
{
	id_err_t err = {0};
	memset(d, 0, sizeof(*d));
	int rc = name_claim_check(c, key, klen, &err);
	if (rc == ID_ENOMEM)
		return rc;
	if (rc != 0) {
		/* A CLAIM with a claimant is still answered, so that employee's
		 * fold moves on to its next candidate instead of waiting. */
		bool answer = c->kind == NAME_CLAIM && c->employee_id != NULL &&
		              c->employee_id[0] != '\0' && c->claim_id != NULL &&
		              c->claim_id[0] != '\0' && c->ns != NULL && c->value != NULL;
		d->outcome = answer ? NAME_OUTCOME_DENIED : NAME_OUTCOME_NONE;
		d->reason = NAME_REASON_INVALID;
		snprintf(d->detail, sizeof(d->detail), "%.250s", err.msg);
		return 0;
	}
	switch (c->kind) {
	case NAME_CLAIM:
		return decide_claim(e, c, d);
	case NAME_RELEASE:
		return decide_release(e, c, d);
	case NAME_RESERVE:
		return decide_reserve(e, c, d);
	default:
		return ID_EINVALID; /* excluded by name_claim_check() */
	}
}

int name_arbiter_answer(const name_claim_t *c, const name_decision_t *d,
                        employee_event_t *out)
{
	char buf[400];
	employee_event_fini(out);
	if (d->outcome == NAME_OUTCOME_NONE)
		return ID_EINVALID;
	bool granted = d->outcome == NAME_OUTCOME_GRANTED;
	out->type = granted ? EV_NAME_GRANTED : EV_NAME_DENIED;
	out->occurred_at = c->claimed_at;
	out->effective_at = c->claimed_at;
	const char *parts[] = {employee_event_type_name(out->type), c->claim_id};
	if (granted)
		snprintf(buf, sizeof(buf), "%s %s granted", c->ns, c->value);
	else
		snprintf(buf, sizeof(buf), "%s %s denied: %s", c->ns, c->value,
		         name_reason_name(d->reason));
	if (hash_hex(parts, 2, &out->event_id) != 0 ||
	    (out->source = strdup(NAME_EVENT_SOURCE)) == NULL ||
	    (out->source_event_id = strdup(c->claim_id)) == NULL ||
	    (out->employee_id = strdup(c->employee_id)) == NULL ||
	    (out->reason = strdup(buf)) == NULL ||
	    id_attrs_set(&out->attributes, NAME_ATTR_NAMESPACE, c->ns) != 0 ||
	    id_attrs_set(&out->attributes, NAME_ATTR_VALUE, c->value) != 0 ||
	    id_attrs_set(&out->attributes, NAME_ATTR_CLAIM_ID, c->claim_id) != 0)
		goto nomem;
	if (!granted && id_attrs_set(&out->attributes, NAME_ATTR_REASON,
	                             name_reason_name(d->reason)) != 0)
		goto nomem;
	if (d->reason == NAME_REASON_QUARANTINED) {
		snprintf(buf, sizeof(buf), "%" PRId64, d->quarantine_until);
		if (id_attrs_set(&out->attributes, NAME_ATTR_QUARANTINE_UNTIL, buf) != 0)
			goto nomem;
	}
	return 0;
nomem:
	employee_event_fini(out);
	return ID_ENOMEM;
}
