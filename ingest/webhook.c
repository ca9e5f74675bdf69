/*
 * webhook.c — signature checks and per-source parsers of the HR webhooks
 * (see webhook.h and docs/WEBHOOKS.md).
 *
 * Invariants: a parse either returns every event of the delivery or none
 * (the delivery is left empty on error); signatures are compared with
 * CRYPTO_memcmp over MACs of equal length; nothing here reads a clock.
 * Threading: reentrant, no shared state.
 */
#include "ingest/webhook.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"

#define MAX_ID_LEN        256  /* employee ids, delivery ids */
#define MAX_VALUE_LEN     4096 /* one attribute value */
#define MAX_ATTRS         256  /* attributes of one event */
#define MAX_EVENTS        1000 /* events of one delivery */
#define MAX_KEY_LEN       64   /* attribute key after normalisation */
#define MAX_SIGNATURES    8    /* signatures in one header (sender-side rotation) */
#define MAX_MAC_LEN       64   /* SHA-512 */
#define DELIVERY_HASH_HEX 32

/* ---- tables ---------------------------------------------------------------- */

static const char *const source_names[] = {
#define WH_SRC_NAME_(n, s) s,
    WEBHOOK_SOURCE_MAP(WH_SRC_NAME_)
#undef WH_SRC_NAME_
};

static const webhook_header_names_t source_headers[WEBHOOK_SOURCE_COUNT] = {
    [WEBHOOK_GENERIC] = {"X-Idstream-Signature", "X-Idstream-Timestamp",
                         "X-Idstream-Delivery"},
    [WEBHOOK_BAMBOOHR] = {"X-BambooHR-Signature", "X-BambooHR-Timestamp", NULL},
    [WEBHOOK_HIBOB] = {"Bob-Signature", NULL, NULL},
    [WEBHOOK_GUSTO] = {"X-Gusto-Signature", NULL, NULL},
    [WEBHOOK_PERSONIO] = {"X-Personio-Signature", NULL, NULL},
};

static const struct {
	const char *name;
	int status;
} refusals[] = {
#define WH_REF_ROW_(n, s, st) {s, st},
    WEBHOOK_REFUSAL_MAP(WH_REF_ROW_)
#undef WH_REF_ROW_
};

const char *webhook_source_name(webhook_source_t s)
{
	return (unsigned)s < WEBHOOK_SOURCE_COUNT ? source_names[s] : "unknown";
}

int webhook_source_parse(const char *name, webhook_source_t *out)
{
	for (int i = 0; i < WEBHOOK_SOURCE_COUNT; i++) {
		if (name != NULL && strcmp(name, source_names[i]) == 0) {
			*out = (webhook_source_t)i;
			return 0;
		}
	}
	return ID_ENOTFOUND;
}

const webhook_header_names_t *webhook_source_headers(webhook_source_t s)
{
	return (unsigned)s < WEBHOOK_SOURCE_COUNT ? &source_headers[s] : NULL;
}

const char *webhook_refusal_name(webhook_refusal_t r)
{
	return (unsigned)r < WEBHOOK_REFUSAL_COUNT ? refusals[r].name : "unknown";
}

int webhook_refusal_status(webhook_refusal_t r)
{
	return (unsigned)r < WEBHOOK_REFUSAL_COUNT ? refusals[r].status : 500;
}

static int refuse(webhook_refusal_t *why, webhook_refusal_t r, int code)
{
	if (why != NULL)
		*why = r;
	return code;
}

/* ---- encodings --------------------------------------------------------------- */

static int hex_val(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes exactly n hex digits into n/2 bytes; false on a non-hex digit. */
static bool hex_decode(const char *s, size_t n, unsigned char *out)
{
	if (n % 2 != 0)
		return false;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hex_val((unsigned char)s[i]),
		    lo = hex_val((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i / 2] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int b64_val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Standard or URL-safe base64, padding optional; at most cap bytes out. */
static bool b64_decode(const char *s, size_t n, unsigned char *out, size_t cap,
                       size_t *outlen)
{
	while (n > 0 && s[n - 1] == '=')
		n--;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val((unsigned char)s[i]);
		if (v < 0)
			return false;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return false;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* Leftover bits must be zero padding of a well-formed encoding. */
	if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
		return false;
	*outlen = o;
	return true;
}

/* ---- signatures -------------------------------------------------------------- */

typedef struct mac_spec {
	const EVP_MD *md;
	size_t len;
} mac_spec_t;

static mac_spec_t source_mac(webhook_source_t src)
{
	if (src == WEBHOOK_HIBOB)
		return (mac_spec_t){EVP_sha512(), 64};
	return (mac_spec_t){EVP_sha256(), 32};
}

/*
 * The exact bytes a source signs.  Only generic and BambooHR mix in the
 * timestamp; *msg is either body itself or *tmp (which the caller frees).
 */
static int signed_message(webhook_source_t src, const char *ts, const void *body,
                          size_t len, const unsigned char **msg, size_t *msglen,
                          id_buf_t *tmp)
{
	id_buf_reset(tmp);
	if (src == WEBHOOK_GENERIC) {
		if (id_buf_append_str(tmp, ts) || id_buf_append_u8(tmp, '.') ||
		    id_buf_append(tmp, body, len))
			return ID_ENOMEM;
	} else if (src == WEBHOOK_BAMBOOHR) {
		if (id_buf_append(tmp, body, len) || id_buf_append_str(tmp, ts))
			return ID_ENOMEM;
	} else {
		*msg = body;
		*msglen = len;
		return 0;
	}
	*msg = tmp->data != NULL ? tmp->data : (const unsigned char *)"";
	*msglen = tmp->len;
	return 0;
}

/* Splits a signature header into the candidate MACs it carries. */
static size_t signature_candidates(webhook_source_t src, const char *hdr,
                                   unsigned char out[][MAX_MAC_LEN], size_t maclen)
{
	size_t n = 0;
	const char *p = hdr;
	while (*p != '\0' && n < MAX_SIGNATURES) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *end = p;
		while (*end != '\0' && *end != ',')
			end++;
		const char *v = p;
		size_t vl = (size_t)(end - p);
		while (vl > 0 && v[vl - 1] == ' ')
			vl--;
		p = end;
		if (src == WEBHOOK_GENERIC) {
			/* Only the v1 scheme is defined; others are skipped so a
			 * sender can add a future scheme next to v1. */
			if (vl < 3 || strncmp(v, "v1=", 3) != 0)
				continue;
			v += 3;
			vl -= 3;
		} else if (vl > 7 && (strncmp(v, "sha256=", 7) == 0 ||
		                      strncmp(v, "sha512=", 7) == 0)) {
			v += 7;
			vl -= 7;
		}
		size_t got = 0;
		if (vl == 2 * maclen && hex_decode(v, vl, out[n])) {
			n++;
		} else if (src == WEBHOOK_HIBOB &&
		           b64_decode(v, vl, out[n], MAX_MAC_LEN, &got) &&
		           got == maclen) {
			n++;
		}
	}
	return n;
}

static bool parse_epoch_seconds(const char *s, int64_t *out)
{
	int64_t ms;
	if (webhook_time_parse(s, &ms) != 0)
		return false;
	*out = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
	return true;
}

int webhook_verify(webhook_source_t src, const webhook_headers_t *h, const void *body,
                   size_t len, const webhook_keys_t *keys, int64_t now_s,
                   int64_t window_s, webhook_refusal_t *why, id_err_t *err)
{
	int rc = 0;
	id_buf_t tmp = ID_BUF_INIT;
	unsigned char cand[MAX_SIGNATURES][MAX_MAC_LEN];
	const webhook_header_names_t *names = webhook_source_headers(src);
	if (names == NULL)
		return refuse(why, WEBHOOK_REFUSE_UNKNOWN_SOURCE,
		              id_err_set(err, ID_EINVALID, "unknown webhook source"));
	if (keys == NULL || keys->nkeys == 0) {
		rc = id_err_set(err, ID_EINVALID, "no secret is configured for source %s",
		                webhook_source_name(src));
		return refuse(why, WEBHOOK_REFUSE_MISSING_SIGNATURE, rc);
	}
	if (h->signature == NULL || h->signature[0] == '\0')
		return refuse(why, WEBHOOK_REFUSE_MISSING_SIGNATURE,
		              id_err_set(err, ID_EINVALID, "header %s is missing",
		                         names->signature));
	if (names->timestamp != NULL && (h->timestamp == NULL || h->timestamp[0] == '\0'))
		return refuse(why, WEBHOOK_REFUSE_BAD_TIMESTAMP,
		              id_err_set(err, ID_EINVALID, "header %s is missing",
		                         names->timestamp));

	mac_spec_t spec = source_mac(src);
	size_t ncand = signature_candidates(src, h->signature, cand, spec.len);
	if (ncand == 0)
		return refuse(
		    why, WEBHOOK_REFUSE_BAD_SIGNATURE,
		    id_err_set(err, ID_EINVALID,
		               "header %s holds no %s signature of the expected "
		               "form (%s)",
		               names->signature,
		               spec.len == 64 ? "HMAC-SHA512" : "HMAC-SHA256",
		               src == WEBHOOK_GENERIC ? "v1=<64 hex digits>"
		               : src == WEBHOOK_HIBOB ? "base64 or hex"
		                                      : "hex"));

	const unsigned char *msg = NULL;
	size_t msglen = 0;
	if ((rc = signed_message(src, h->timestamp, body, len, &msg, &msglen, &tmp)) !=
	    0) {
		rc = refuse(why, WEBHOOK_REFUSE_INTERNAL,
		            id_err_set(err, ID_ENOMEM, "out of memory"));
		goto out;
	}
	/* Every key against every candidate, without early exit, so the time
	 * taken does not depend on which one matched. */
	int match = 0;
	for (size_t k = 0; k < keys->nkeys; k++) {
		unsigned char mac[MAX_MAC_LEN];
		unsigned int maclen = 0;
		const char *key = keys->keys[k];
		if (HMAC(spec.md, key, (int)strlen(key), msg, msglen, mac, &maclen) ==
		        NULL ||
		    maclen != spec.len) {
			rc = refuse(
			    why, WEBHOOK_REFUSE_INTERNAL,
			    id_err_set(err, ID_EINVALID, "HMAC computation failed"));
			goto out;
		}
		for (size_t c = 0; c < ncand; c++)
			match |= CRYPTO_memcmp(mac, cand[c], spec.len) == 0;
		OPENSSL_cleanse(mac, sizeof(mac));
	}
	if (!match) {
		rc = refuse(
		    why, WEBHOOK_REFUSE_BAD_SIGNATURE,
		    id_err_set(err, ID_EINVALID,
		               "header %s does not match the body (wrong secret, or "
		               "the body or %s was changed on the way)",
		               names->signature,
		               names->timestamp ? names->timestamp : "nothing else"));
		goto out;
	}
	/* The timestamp is checked after the signature: its value is only
	 * meaningful once we know the sender signed it. */
	if (names->timestamp != NULL) {
		int64_t ts;
		if (!parse_epoch_seconds(h->timestamp, &ts)) {
			rc = refuse(
			    why, WEBHOOK_REFUSE_BAD_TIMESTAMP,
			    id_err_set(err, ID_EINVALID,
			               "header %s is not a time (seconds since the "
			               "epoch or ISO 8601)",
			               names->timestamp));
			goto out;
		}
		int64_t skew = now_s > ts ? now_s - ts : ts - now_s;
		if (window_s > 0 && skew > window_s) {
			rc = refuse(why, WEBHOOK_REFUSE_STALE_TIMESTAMP,
			            id_err_set(err, ID_EINVALID,
			                       "header %s is %lld s %s the server clock, "
			                       "outside the accepted window of %lld s",
			                       names->timestamp, (long long)skew,
			                       ts < now_s ? "behind" : "ahead of",
			                       (long long)window_s));
			goto out;
		}
	}
	refuse(why, WEBHOOK_REFUSE_NONE, 0);
out:
	id_buf_fini(&tmp);
	return rc;
}

int webhook_sign(webhook_source_t src, const char *key, const char *timestamp,
                 const void *body, size_t len, char **out)
{
	int rc = ID_ENOMEM;
	id_buf_t tmp = ID_BUF_INIT;
	unsigned char mac[MAX_MAC_LEN];
	unsigned int maclen = 0;
	const unsigned char *msg = NULL;
	size_t msglen = 0;
	mac_spec_t spec = source_mac(src);
	char *s = NULL;

	*out = NULL;
	if ((src == WEBHOOK_GENERIC || src == WEBHOOK_BAMBOOHR) && timestamp == NULL) {
		rc = ID_EINVALID;
		goto out;
	}
	if (signed_message(src, timestamp, body, len, &msg, &msglen, &tmp) != 0)
		goto out;
	if (HMAC(spec.md, key, (int)strlen(key), msg, msglen, mac, &maclen) == NULL) {
		rc = ID_EINVALID;
		goto out;
	}
	if ((s = malloc(2 * MAX_MAC_LEN + 8)) == NULL)
		goto out;
	if (src == WEBHOOK_HIBOB) {
		EVP_EncodeBlock((unsigned char *)s, mac, (int)maclen);
	} else if (src == WEBHOOK_GENERIC) {
		memcpy(s, "v1=", 3);
		hex_encode(mac, maclen, s + 3);
	} else {
		hex_encode(mac, maclen, s);
	}
	*out = s;
	rc = 0;
out:
	id_buf_fini(&tmp);
	return rc;
}

/* ---- times --------------------------------------------------------------------- */

/* Reads exactly n digits; false otherwise. */
static bool take_digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return true;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
	/* Howard Hinnant's algorithm: no timegm(), no TZ state. */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int webhook_time_parse(const char *s, int64_t *ms)
{
	if (s == NULL || *s == '\0')
		return ID_EPARSE;
	const char *p = s;
	bool all_digits = true;
	for (const char *q = s; *q; q++)
		all_digits &= isdigit((unsigned char)*q) != 0;
	if (all_digits) {
		if (strlen(s) > 15)
			return ID_EPARSE;
		int64_t v = strtoll(s, NULL, 10);
		*ms = v > 100000000000LL ? v : v * 1000;
		return 0;
	}
	int y, mo, d, h = 0, mi = 0, sec = 0, frac_ms = 0;
	if (!take_digits(&p, 4, &y) || *p++ != '-' || !take_digits(&p, 2, &mo) ||
	    *p++ != '-' || !take_digits(&p, 2, &d))
		return ID_EPARSE;
	if (mo < 1 || mo > 12 || d < 1 || d > 31)
		return ID_EPARSE;
	int64_t offset_s = 0;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if (!take_digits(&p, 2, &h) || *p++ != ':' || !take_digits(&p, 2, &mi))
			return ID_EPARSE;
		if (*p == ':') {
			p++;
			if (!take_digits(&p, 2, &sec))
				return ID_EPARSE;
			if (*p == '.' || *p == ',') {
				p++;
				int digits = 0;
				while (isdigit((unsigned char)*p)) {
					if (digits < 3)
						frac_ms = frac_ms * 10 + (*p - '0');
					digits++;
					p++;
				}
				if (digits == 0)
					return ID_EPARSE;
				for (int i = digits; i < 3; i++)
					frac_ms *= 10;
			}
		}
		if (h > 23 || mi > 59 || sec > 60)
			return ID_EPARSE;
		if (*p == 'Z' || *p == 'z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
			if (!take_digits(&p, 2, &oh))
				return ID_EPARSE;
			if (*p == ':')
				p++;
			if (isdigit((unsigned char)*p) && !take_digits(&p, 2, &om))
				return ID_EPARSE;
			if (oh > 23 || om > 59)
				return ID_EPARSE;
			offset_s = sign * (oh * 3600 + om * 60);
		}
	}
	if (*p != '\0')
		return ID_EPARSE;
	int64_t days = days_from_civil(y, mo, d);
	int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_s;
	*ms = secs * 1000 + frac_ms;
	return 0;
}

/* ---- delivery building ----------------------------------------------------------- */

void webhook_delivery_init(webhook_delivery_t *d)
{
	memset(d, 0, sizeof(*d));
}

void webhook_delivery_fini(webhook_delivery_t *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->nevents; i++)
		employee_event_fini(&d->events[i].ev);
	free(d->events);
	free(d->delivery_id);
	free(d->kind);
	webhook_delivery_init(d);
}

int webhook_event_id(const char *source, const char *source_event_id, char **out)
{
	unsigned char h[32];
	unsigned int hl = 0;
	int rc = ID_ENOMEM;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	char *hex = NULL;
	/* NUL separator keeps ("ab","c") and ("a","bc") apart. */
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, source, strlen(source) + 1) != 1 ||
	    EVP_DigestUpdate(md, source_event_id, strlen(source_event_id)) != 1 ||
	    EVP_DigestFinal_ex(md, h, &hl) != 1)
		goto out;
	if ((hex = malloc(33)) == NULL)
		goto out;
	hex_encode(h, 16, hex);
	*out = hex;
	rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

/* The state of one parse: where errors go and what is being built. */
typedef struct pctx {
	webhook_source_t src;
	webhook_delivery_t *d;
	webhook_refusal_t *why;
	id_err_t *err;
	int64_t now_ms;
} pctx_t;

static int invalid(pctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Refuses the payload as INVALID_PAYLOAD; the message names the field. */
static int invalid(pctx_t *c, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return refuse(c->why, WEBHOOK_REFUSE_INVALID_PAYLOAD,
	              id_err_set(c->err, ID_EINVALID, "%s webhook: %s",
	                         webhook_source_name(c->src), msg));
}

static int nomem(pctx_t *c)
{
	return refuse(c->why, WEBHOOK_REFUSE_INTERNAL,
	              id_err_set(c->err, ID_ENOMEM, "out of memory"));
}

static bool id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MAX_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/*
 * An id field: a JSON string or integer (HR systems use both), valid as an
 * id.  Writes it into buf.  Returns 0, or an INVALID_PAYLOAD error naming
 * the field.
 */
static int get_id(pctx_t *c, json_t *obj, const char *key, const char *where, char *buf,
                  size_t buflen)
{
	json_t *v = json_object_get(obj, key);
	if (json_is_string(v))
		snprintf(buf, buflen, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(buf, buflen, "%lld", (long long)json_integer_value(v));
	else if (v == NULL || json_is_null(v))
		return invalid(c, "%s is missing", where);
	else
		return invalid(c, "%s must be a string or an integer", where);
	if (json_is_string(v) && strlen(json_string_value(v)) >= buflen)
		return invalid(c, "%s is too long", where);
	if (!id_ok(buf))
		return invalid(c,
		               "%s must be 1-256 characters without control "
		               "characters",
		               where);
	return 0;
}

/* An optional string field: NULL when absent/null, error for other types. */
static int get_opt_str(pctx_t *c, json_t *obj, const char *key, const char *where,
                       const char **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return invalid(c, "%s must be a string", where);
	*out = json_string_value(v);
	return 0;
}

/* A time field given as string (ISO 8601) or integer (epoch s or ms). */
static int get_opt_time(pctx_t *c, json_t *obj, const char *key, const char *where,
                        int64_t *out, bool *present)
{
	json_t *v = json_object_get(obj, key);
	*present = false;
	if (v == NULL || json_is_null(v))
		return 0;
	char buf[64];
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
	else if (json_is_string(v))
		snprintf(buf, sizeof(buf), "%s", json_string_value(v));
	else
		return invalid(c, "%s must be a time (ISO 8601 string)", where);
	if (webhook_time_parse(buf, out) != 0)
		return invalid(c, "%s is not a time: \"%s\"", where, buf);
	*present = true;
	return 0;
}

/*
 * Appends an event to the delivery.  index < 0: a single-event delivery,
 * source_event_id = delivery id; otherwise "<delivery id>:<index>".
 */
static webhook_event_t *add_event(pctx_t *c, const char *employee_id,
                                  employee_event_type_t type, int64_t occurred,
                                  int64_t effective, bool thin, long index)
{
	webhook_delivery_t *d = c->d;
	if (d->nevents >= MAX_EVENTS) {
		invalid(c, "more than 1000 events in one delivery");
		return NULL;
	}
	webhook_event_t *n = realloc(d->events, (d->nevents + 1) * sizeof(*n));
	if (n == NULL) {
		nomem(c);
		return NULL;
	}
	d->events = n;
	webhook_event_t *we = &d->events[d->nevents++];
	employee_event_t *ev = &we->ev;
	employee_event_init(ev);
	we->thin = thin;
	ev->type = type;
	ev->occurred_at = occurred;
	ev->effective_at = effective;
	size_t sl = strlen(d->delivery_id) + 24;
	char actor[64];
	snprintf(actor, sizeof(actor), "webhook:%s", webhook_source_name(c->src));
	if ((ev->source_event_id = malloc(sl)) == NULL ||
	    (ev->source = strdup(webhook_source_name(c->src))) == NULL ||
	    (ev->employee_id = strdup(employee_id)) == NULL ||
	    (ev->actor = strdup(actor)) == NULL) {
		nomem(c);
		return NULL;
	}
	if (index < 0)
		snprintf(ev->source_event_id, sl, "%s", d->delivery_id);
	else
		snprintf(ev->source_event_id, sl, "%s:%ld", d->delivery_id, index);
	if (webhook_event_id(ev->source, ev->source_event_id, &ev->event_id) != 0) {
		nomem(c);
		return NULL;
	}
	return we;
}

static int set_str(pctx_t *c, char **field, const char *v)
{
	free(*field);
	*field = NULL;
	if (v != NULL && (*field = strdup(v)) == NULL)
		return nomem(c);
	return 0;
}

/* ---- attribute mapping --------------------------------------------------------- */

/* Source field names, squashed (lower-case letters and digits only), that
 * mean one of the attributes the pipeline knows. */
typedef struct key_map {
	const char *squashed;
	const char *attr;
} key_map_t;

static const key_map_t bamboohr_keys[] = {
    {"firstname", "first_name"},
    {"lastname", "last_name"},
    {"preferredname", "preferred_name"},
    {"middlename", "middle_name"},
    {"jobtitle", "title"},
    {"department", "department"},
    {"division", "division"},
    {"location", "location"},
    {"supervisoreid", "manager_id"},
    {"supervisorid", "manager_id"},
    {"employmenthistorystatus", "employment_type"},
    {"employmentstatus", "employment_type"},
    {"hiredate", "start_date"},
    {"workemail", "work_email"},
    {"employeenumber", "employee_number"},
    {"employee", "employee_number"}, /* "Employee #" */
    {"status", "status"},
    {NULL, NULL},
};

static const key_map_t hibob_keys[] = {
    {"rootfirstname", "first_name"},
    {"rootsurname", "last_name"},
    {"rootdisplayname", "display_name"},
    {"rootemail", "work_email"},
    {"firstname", "first_name"},
    {"surname", "last_name"},
    {"preferredname", "preferred_name"},
    {"aboutpreferredname", "preferred_name"},
    {"displayname", "display_name"},
    {"email", "work_email"},
    {"worktitle", "title"},
    {"workdepartment", "department"},
    {"worksite", "location"},
    {"workreportsto", "manager_id"},
    {"workreportstoid", "manager_id"},
    {"workstartdate", "start_date"},
    {"workemployeeidincompany", "employee_number"},
    {"internallifecyclestatus", "status"},
    {NULL, NULL},
};

static const key_map_t gusto_keys[] = {
    {"firstname", "first_name"},
    {"lastname", "last_name"},
    {"preferredfirstname", "preferred_name"},
    {"department", "department"},
    {"manageruuid", "manager_id"},
    {"workemail", "work_email"},
    {"jobstitle", "title"},
    {NULL, NULL},
};

static const key_map_t personio_keys[] = {
    {"firstname", "first_name"},
    {"lastname", "last_name"},
    {"preferredname", "preferred_name"},
    {"position", "title"},
    {"department", "department"},
    {"office", "location"},
    {"supervisor", "manager_id"},
    {"supervisorid", "manager_id"},
    {"hiredate", "start_date"},
    {"employmenttype", "employment_type"},
    {"email", "work_email"},
    {"status", "status"},
    {NULL, NULL},
};

static const key_map_t *source_keys(webhook_source_t src)
{
	switch (src) {
	case WEBHOOK_BAMBOOHR:
		return bamboohr_keys;
	case WEBHOOK_HIBOB:
		return hibob_keys;
	case WEBHOOK_GUSTO:
		return gusto_keys;
	case WEBHOOK_PERSONIO:
		return personio_keys;
	default:
		return NULL;
	}
}

/*
 * The attribute key for a source field name: the mapped name when known,
 * else the name in snake case ("Pay Rate" → pay_rate, payRate → pay_rate).
 * false when nothing usable is left or it is too long.
 */
static bool map_key(webhook_source_t src, const char *name, char *out, size_t outlen)
{
	char sq[128];
	size_t n = 0;
	for (const char *p = name; *p && n + 1 < sizeof(sq); p++)
		if (isalnum((unsigned char)*p))
			sq[n++] = (char)tolower((unsigned char)*p);
	sq[n] = '\0';
	const key_map_t *m = source_keys(src);
	for (; m != NULL && m->squashed != NULL; m++) {
		if (strcmp(m->squashed, sq) == 0) {
			snprintf(out, outlen, "%s", m->attr);
			return true;
		}
	}
	size_t o = 0;
	bool sep = false;
	for (const char *p = name; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		bool upper = isupper(ch) != 0;
		if (!isalnum(ch)) {
			sep = o > 0;
			continue;
		}
		/* camelCase boundary: a capital after a lower-case letter or digit */
		if (upper && p > name &&
		    (islower((unsigned char)p[-1]) || isdigit((unsigned char)p[-1])))
			sep = o > 0;
		if (sep) {
			if (o + 1 >= outlen)
				return false;
			out[o++] = '_';
			sep = false;
		}
		if (o + 1 >= outlen)
			return false;
		out[o++] = (char)tolower(ch);
	}
	out[o] = '\0';
	return o > 0 && o <= MAX_KEY_LEN;
}

/*
 * The scalar an HR field value stands for: strings and numbers as text,
 * null as NULL (cleared), and the wrappers HR APIs put around values
 * ({"value": x}, {"attributes": {...}}, {"id": x}, {"name": x}) looked
 * through.  false for anything else (arrays, unknown objects): such fields
 * are skipped, not guessed at.
 */
static bool scalarize(json_t *v, int depth, char *buf, size_t buflen, bool *is_null)
{
	*is_null = false;
	if (depth > 4)
		return false;
	switch (json_typeof(v)) {
	case JSON_STRING:
		if (json_string_length(v) >= buflen ||
		    json_string_length(v) > MAX_VALUE_LEN)
			return false;
		memcpy(buf, json_string_value(v), json_string_length(v) + 1);
		return true;
	case JSON_INTEGER:
		snprintf(buf, buflen, "%lld", (long long)json_integer_value(v));
		return true;
	case JSON_REAL:
		snprintf(buf, buflen, "%.15g", json_real_value(v));
		return true;
	case JSON_TRUE:
	case JSON_FALSE:
		snprintf(buf, buflen, "%s", json_is_true(v) ? "true" : "false");
		return true;
	case JSON_NULL:
		*is_null = true;
		return true;
	case JSON_OBJECT: {
		static const char *const wrappers[] = {"value", "attributes", "id",
		                                       "name"};
		for (size_t i = 0; i < sizeof(wrappers) / sizeof(*wrappers); i++) {
			json_t *w = json_object_get(v, wrappers[i]);
			if (w != NULL)
				return scalarize(w, depth + 1, buf, buflen, is_null);
		}
		return false;
	}
	default:
		return false;
	}
}

/* An object that stands for one value (see scalarize), not a group of fields. */
static bool is_wrapper(json_t *v)
{
	return json_object_get(v, "value") != NULL ||
	       json_object_get(v, "attributes") != NULL ||
	       json_object_get(v, "id") != NULL || json_object_get(v, "name") != NULL;
}

/* Sets one mapped attribute; arrays and unknown shapes are skipped. */
static int put_attr(pctx_t *c, id_attrs_t *attrs, const char *name, json_t *v)
{
	char key[MAX_KEY_LEN + 1], val[MAX_VALUE_LEN + 1];
	bool is_null;
	if (!map_key(c->src, name, key, sizeof(key)) ||
	    !scalarize(v, 0, val, sizeof(val), &is_null))
		return 0;
	if (attrs->len >= MAX_ATTRS && !id_attrs_has(attrs, key))
		return invalid(c, "more than 256 attributes for one employee");
	if (id_attrs_set(attrs, key, is_null ? NULL : val) != 0)
		return nomem(c);
	return 0;
}

/*
 * Maps a record object's fields; nested objects that are not value
 * wrappers are flattened with their parent's name as prefix (HiBob's
 * {"work": {"title": ...}} → work.title → title).
 */
static int put_record(pctx_t *c, id_attrs_t *attrs, json_t *obj, const char *prefix,
                      int depth)
{
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v)
	{
		char name[256];
		snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", k);
		int rc;
		if (json_is_object(v) && depth < 3 && !is_wrapper(v)) {
			if ((rc = put_record(c, attrs, v, name, depth + 1)) != 0)
				return rc;
			continue;
		}
		if (json_is_array(v) && strcmp(k, "jobs") == 0 &&
		    json_array_size(v) > 0 && json_is_object(json_array_get(v, 0))) {
			/* Gusto: the current job comes first. */
			json_t *t = json_object_get(json_array_get(v, 0), "title");
			if (t != NULL && (rc = put_attr(c, attrs, "jobs.title", t)) != 0)
				return rc;
			continue;
		}
		/* Wrapped scalars are mapped under the field's own name. */
		if ((rc = put_attr(c, attrs, name, v)) != 0)
			return rc;
	}
	return 0;
}

static bool has_names(const id_attrs_t *a)
{
	const char *f = id_attrs_get(a, "first_name"), *l = id_attrs_get(a, "last_name");
	return f != NULL && *f != '\0' && l != NULL && *l != '\0';
}

/* ---- generic ------------------------------------------------------------------- */

static const char *const generic_fields[] = {
    "employee_id", "type", "effective_at", "occurred_at", "attributes", "actor", "reason",
};

static int parse_generic(pctx_t *c, json_t *root, const char *delivery)
{
	int rc;
	if (delivery == NULL || delivery[0] == '\0' || !id_ok(delivery) ||
	    strchr(delivery, ' ') != NULL)
		return refuse(
		    c->why, WEBHOOK_REFUSE_MISSING_DELIVERY,
		    id_err_set(c->err, ID_EINVALID,
		               "header X-Idstream-Delivery is %s (a unique id "
		               "of 1-256 printable characters per delivery)",
		               delivery == NULL || !*delivery ? "missing" : "malformed"));
	if (set_str(c, &c->d->delivery_id, delivery) != 0)
		return ID_ENOMEM;

	const char *k;
	json_t *v;
	json_object_foreach(root, k, v)
	{
		bool known = false;
		for (size_t i = 0; i < sizeof(generic_fields) / sizeof(*generic_fields);
		     i++)
			known |= strcmp(k, generic_fields[i]) == 0;
		if (!known)
			return invalid(c, "unknown field \"%s\" (see docs/WEBHOOKS.md)",
			               k);
	}
	char employee[MAX_ID_LEN + 1];
	const char *type_s, *actor, *reason;
	if ((rc = get_id(c, root, "employee_id", "employee_id", employee,
	                 sizeof(employee))) != 0)
		return rc;
	if ((rc = get_opt_str(c, root, "type", "type", &type_s)) != 0)
		return rc;
	if (type_s == NULL)
		return invalid(c, "type is missing");
	char upper[32];
	size_t tl = strlen(type_s);
	if (tl >= sizeof(upper))
		return invalid(c, "unknown type \"%s\"", type_s);
	for (size_t i = 0; i <= tl; i++)
		upper[i] = (char)toupper((unsigned char)type_s[i]);
	employee_event_type_t type;
	if (employee_event_type_parse(upper, &type) != 0 || type > EV_CONVERSION)
		return invalid(c,
		               "unknown type \"%s\" (HIRE, UPDATE, TERMINATE, REHIRE, "
		               "LEAVE_START, LEAVE_END, CONVERSION)",
		               type_s);
	if ((rc = get_opt_str(c, root, "actor", "actor", &actor)) != 0 ||
	    (rc = get_opt_str(c, root, "reason", "reason", &reason)) != 0)
		return rc;
	int64_t occurred = c->now_ms, effective;
	bool has_occ, has_eff;
	if ((rc = get_opt_time(c, root, "occurred_at", "occurred_at", &occurred,
	                       &has_occ)) != 0 ||
	    (rc = get_opt_time(c, root, "effective_at", "effective_at", &effective,
	                       &has_eff)) != 0)
		return rc;
	if (!has_occ)
		occurred = c->now_ms;
	if (!has_eff)
		effective = occurred;

	json_t *attrs = json_object_get(root, "attributes");
	if (attrs != NULL && !json_is_null(attrs) && !json_is_object(attrs))
		return invalid(c, "attributes must be an object of strings");
	webhook_event_t *we =
	    add_event(c, employee, type, occurred, effective, false, -1);
	if (we == NULL)
		return c->err != NULL && c->err->code ? c->err->code : ID_ENOMEM;
	if (actor != NULL && (rc = set_str(c, &we->ev.actor, actor)) != 0)
		return rc;
	if ((rc = set_str(c, &we->ev.reason, reason)) != 0)
		return rc;
	json_object_foreach(attrs, k, v)
	{
		char key[MAX_KEY_LEN + 1];
		size_t kl = strlen(k);
		bool ok = kl > 0 && kl <= MAX_KEY_LEN;
		for (size_t i = 0; ok && i < kl; i++) {
			char ch = (char)tolower((unsigned char)k[i]);
			ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
			     ch == '_';
			key[i] = ch;
		}
		if (!ok)
			return invalid(
			    c,
			    "attribute name \"%s\" must be 1-64 letters, digits "
			    "or '_'",
			    k);
		key[kl] = '\0';
		if (strcmp(key, "employee_id") == 0)
			return invalid(c, "employee_id is the key, not an attribute");
		if (!json_is_string(v) && !json_is_null(v))
			return invalid(c, "attributes.%s must be a string or null", k);
		if (json_is_string(v) && json_string_length(v) > MAX_VALUE_LEN)
			return invalid(c, "attributes.%s is longer than 4096 bytes", k);
		if (we->ev.attributes.len >= MAX_ATTRS)
			return invalid(c, "more than 256 attributes");
		if (id_attrs_set(&we->ev.attributes, key,
		                 json_is_null(v) ? NULL : json_string_value(v)) != 0)
			return nomem(c);
	}
	if (type == EV_HIRE && !has_names(&we->ev.attributes))
		return invalid(c, "a HIRE needs attributes.first_name and "
		                  "attributes.last_name");
	return set_str(c, &c->d->kind, upper);
}

/* ---- BambooHR -------------------------------------------------------------------- */

/* "employee.updated" → UPDATE etc.; false for types idstream ignores. */
static bool bamboohr_event_type(const char *t, employee_event_type_t *out, bool *thin)
{
	if (strcmp(t, "employee.created") == 0) {
		*out = EV_HIRE;
		*thin = true;
	} else if (strcmp(t, "employee.updated") == 0) {
		*out = EV_UPDATE;
		*thin = true;
	} else if (strcmp(t, "employee.deleted") == 0) {
		*out = EV_TERMINATE;
		*thin = false;
	} else {
		return false;
	}
	return true;
}

/* "changed: a, b" from a changedFields array; "" when absent. */
static void changed_reason(json_t *arr, char *buf, size_t buflen)
{
	size_t o = 0;
	buf[0] = '\0';
	size_t i;
	json_t *f;
	json_array_foreach(arr, i, f)
	{
		if (!json_is_string(f))
			continue;
		int n = snprintf(buf + o, buflen - o, "%s%s", o == 0 ? "changed: " : ", ",
		                 json_string_value(f));
		if (n < 0 || (size_t)n >= buflen - o) {
			buf[o] = '\0';
			break;
		}
		o += (size_t)n;
	}
}

static int parse_bamboohr_event(pctx_t *c, json_t *root)
{
	int rc;
	const char *type_s;
	if ((rc = get_opt_str(c, root, "type", "type", &type_s)) != 0)
		return rc;
	if ((rc = set_str(c, &c->d->kind, type_s)) != 0)
		return rc;
	int64_t occurred;
	bool has;
	if ((rc = get_opt_time(c, root, "timestamp", "timestamp", &occurred, &has)) != 0)
		return rc;
	if (!has)
		occurred = c->now_ms;
	employee_event_type_t type;
	bool thin;
	if (!bamboohr_event_type(type_s, &type, &thin))
		return 0; /* a valid delivery of something idstream does not track */
	json_t *data = json_object_get(root, "data");
	if (!json_is_object(data))
		return invalid(c, "data must be an object");
	char employee[MAX_ID_LEN + 1];
	if ((rc = get_id(c, data, "employeeId", "data.employeeId", employee,
	                 sizeof(employee))) != 0)
		return rc;
	json_t *changed = json_object_get(data, "changedFields");
	if (changed != NULL && !json_is_array(changed))
		return invalid(c, "data.changedFields must be an array");
	webhook_event_t *we = add_event(c, employee, type, occurred, occurred, thin, -1);
	if (we == NULL)
		return c->err != NULL && c->err->code ? c->err->code : ID_ENOMEM;
	char reason[512];
	changed_reason(changed, reason, sizeof(reason));
	return reason[0] ? set_str(c, &we->ev.reason, reason) : 0;
}

/* True when a changedFields array names the status field. */
static bool names_status(json_t *changed)
{
	size_t i;
	json_t *f;
	json_array_foreach(changed, i, f)
	{
		char key[MAX_KEY_LEN + 1];
		if (json_is_string(f) &&
		    map_key(WEBHOOK_BAMBOOHR, json_string_value(f), key, sizeof(key)) &&
		    strcmp(key, "status") == 0)
			return true;
	}
	return false;
}

static int parse_bamboohr_fields(pctx_t *c, json_t *root)
{
	int rc;
	json_t *emps = json_object_get(root, "employees");
	if (!json_is_array(emps))
		return invalid(c, "employees must be an array");
	if ((rc = set_str(c, &c->d->kind, "employees")) != 0)
		return rc;
	size_t i;
	json_t *e;
	json_array_foreach(emps, i, e)
	{
		char where[64], employee[MAX_ID_LEN + 1];
		if (!json_is_object(e)) {
			snprintf(where, sizeof(where), "employees[%zu]", i);
			return invalid(c, "%s must be an object", where);
		}
		snprintf(where, sizeof(where), "employees[%zu].id", i);
		if ((rc = get_id(c, e, "id", where, employee, sizeof(employee))) != 0)
			return rc;
		const char *action;
		snprintf(where, sizeof(where), "employees[%zu].action", i);
		if ((rc = get_opt_str(c, e, "action", where, &action)) != 0)
			return rc;
		int64_t occurred;
		bool has;
		snprintf(where, sizeof(where), "employees[%zu].timestamp", i);
		if ((rc = get_opt_time(c, e, "timestamp", where, &occurred, &has)) != 0)
			return rc;
		if (!has)
			occurred = c->now_ms;
		json_t *fields = json_object_get(e, "fields");
		json_t *changed = json_object_get(e, "changedFields");
		if (fields != NULL && !json_is_object(fields) && !json_is_null(fields))
			return invalid(c, "employees[].fields must be an object");
		if (changed != NULL && !json_is_array(changed) && !json_is_null(changed))
			return invalid(c, "employees[].changedFields must be an array");
		/* Older deliveries have no action: a change with fields is an update. */
		if (action == NULL)
			action = "Updated";
		employee_event_type_t type;
		if (strcasecmp(action, "Created") == 0)
			type = EV_HIRE;
		else if (strcasecmp(action, "Updated") == 0)
			type = EV_UPDATE;
		else if (strcasecmp(action, "Deleted") == 0)
			type = EV_TERMINATE;
		else
			return invalid(c, "unknown employees[].action \"%s\"", action);
		webhook_event_t *we =
		    add_event(c, employee, type, occurred, occurred, false, (long)i);
		if (we == NULL)
			return c->err != NULL && c->err->code ? c->err->code : ID_ENOMEM;
		if (type != EV_TERMINATE && json_is_object(fields) &&
		    (rc = put_record(c, &we->ev.attributes, fields, "", 0)) != 0)
			return rc;
		/* A status change is a lifecycle change, not just an update. */
		const char *status = id_attrs_get(&we->ev.attributes, "status");
		if (type == EV_UPDATE && status != NULL && names_status(changed)) {
			if (strcasecmp(status, "Inactive") == 0)
				we->ev.type = EV_TERMINATE;
			else if (strcasecmp(status, "Active") == 0)
				we->ev.type = EV_REHIRE;
		}
		/* Created/Deleted come with empty fields: a creation must be
		 * completed from the API before it can replace the record. */
		if (type == EV_HIRE && !has_names(&we->ev.attributes))
			we->thin = true;
		if (type == EV_UPDATE && we->ev.attributes.len == 0)
			we->thin = true;
		char reason[512];
		changed_reason(changed, reason, sizeof(reason));
		if (reason[0] && (rc = set_str(c, &we->ev.reason, reason)) != 0)
			return rc;
	}
	return 0;
}

/* ---- HiBob ----------------------------------------------------------------------- */

static int parse_hibob(pctx_t *c, json_t *root)
{
	int rc;
	const char *type_s, *by;
	if ((rc = get_opt_str(c, root, "type", "type", &type_s)) != 0)
		return rc;
	if (type_s == NULL)
		return invalid(c, "type is missing");
	if ((rc = set_str(c, &c->d->kind, type_s)) != 0)
		return rc;
	int64_t occurred;
	bool has;
	if ((rc = get_opt_time(c, root, "triggeredAt", "triggeredAt", &occurred, &has)) !=
	    0)
		return rc;
	if (!has)
		occurred = c->now_ms;
	static const struct {
		const char *name;
		employee_event_type_t type;
		bool thin;
	} types[] = {
	    {"employee.created", EV_HIRE, true},
	    {"employee.joined", EV_HIRE, true},
	    {"employee.updated", EV_UPDATE, true},
	    {"employee.deleted", EV_TERMINATE, false},
	    {"employee.left", EV_TERMINATE, false},
	    {"employee.inactivated", EV_LEAVE_START, false},
	    {"employee.temporaryLeave", EV_LEAVE_START, false},
	    {"employee.activated", EV_LEAVE_END, false},
	};
	size_t t = 0, nt = sizeof(types) / sizeof(*types);
	while (t < nt && strcmp(types[t].name, type_s) != 0)
		t++;
	if (t == nt)
		return 0; /* tables, documents, ...: nothing for identities */
	json_t *data = json_object_get(root, "data");
	if (!json_is_object(data))
		return invalid(c, "data must be an object");
	char employee[MAX_ID_LEN + 1];
	if ((rc = get_id(c, data, "employeeId", "data.employeeId", employee,
	                 sizeof(employee))) != 0)
		return rc;
	int64_t effective;
	if ((rc = get_opt_time(c, data, "effectiveDate", "data.effectiveDate", &effective,
	                       &has)) != 0)
		return rc;
	if (!has)
		effective = occurred;
	if ((rc = get_opt_str(c, root, "triggeredBy", "triggeredBy", &by)) != 0)
		return rc;
	json_t *fids = json_object_get(data, "fieldIds");
	if (fids != NULL && !json_is_array(fids))
		return invalid(c, "data.fieldIds must be an array");
	webhook_event_t *we =
	    add_event(c, employee, types[t].type, occurred, effective, types[t].thin, -1);
	if (we == NULL)
		return c->err != NULL && c->err->code ? c->err->code : ID_ENOMEM;
	if (by != NULL) {
		char actor[MAX_ID_LEN + 16];
		snprintf(actor, sizeof(actor), "hibob:%s", by);
		if ((rc = set_str(c, &we->ev.actor, actor)) != 0)
			return rc;
	}
	char reason[512];
	changed_reason(fids, reason, sizeof(reason));
	return reason[0] ? set_str(c, &we->ev.reason, reason) : 0;
}

/* ---- Gusto ----------------------------------------------------------------------- */

static int parse_gusto(pctx_t *c, json_t *root)
{
	int rc;
	char uuid[MAX_ID_LEN + 1];
	const char *type_s, *entity_type;
	if ((rc = get_id(c, root, "uuid", "uuid", uuid, sizeof(uuid))) != 0)
		return rc == ID_EINVALID && c->why
		           ? refuse(c->why, WEBHOOK_REFUSE_MISSING_DELIVERY, rc)
		           : rc;
	if ((rc = set_str(c, &c->d->delivery_id, uuid)) != 0)
		return rc;
	if ((rc = get_opt_str(c, root, "event_type", "event_type", &type_s)) != 0 ||
	    (rc = get_opt_str(c, root, "entity_type", "entity_type", &entity_type)) != 0)
		return rc;
	if (type_s == NULL)
		return invalid(c, "event_type is missing");
	if ((rc = set_str(c, &c->d->kind, type_s)) != 0)
		return rc;
	int64_t occurred;
	bool has;
	if ((rc = get_opt_time(c, root, "timestamp", "timestamp", &occurred, &has)) != 0)
		return rc;
	if (!has)
		occurred = c->now_ms;
	/* Gusto announces future-dated terminations and rehires when they are
	 * entered and again when they take effect; idstream acts on the latter. */
	static const struct {
		const char *name;
		employee_event_type_t type;
		bool thin;
	} types[] = {
	    {"employee.created", EV_HIRE, true},
	    {"employee.onboarded", EV_HIRE, true},
	    {"employee.updated", EV_UPDATE, true},
	    {"employee.terminated_effective", EV_TERMINATE, false},
	    {"employee.rehire_effective", EV_REHIRE, false},
	    {"employee.deleted", EV_TERMINATE, false},
	    {"employee.destroyed", EV_TERMINATE, false},
	};
	size_t t = 0, nt = sizeof(types) / sizeof(*types);
	while (t < nt && strcmp(types[t].name, type_s) != 0)
		t++;
	if (t == nt || (entity_type != NULL && strcmp(entity_type, "Employee") != 0))
		return 0;
	char employee[MAX_ID_LEN + 1];
	if ((rc = get_id(c, root, "entity_uuid", "entity_uuid", employee,
	                 sizeof(employee))) != 0)
		return rc;
	webhook_event_t *we =
	    add_event(c, employee, types[t].type, occurred, occurred, types[t].thin, -1);
	return we == NULL ? (c->err != NULL && c->err->code ? c->err->code : ID_ENOMEM)
	                  : 0;
}

/* ---- Personio -------------------------------------------------------------------- */

static int parse_personio(pctx_t *c, json_t *root)
{
	int rc;
	const char *name;
	json_t *company = json_object_get(root, "company_id");
	if (!json_is_string(company) && !json_is_integer(company))
		return invalid(c, "company_id must be a string");
	if ((rc = get_opt_str(c, root, "event_name", "event_name", &name)) != 0)
		return rc;
	if (name == NULL)
		return invalid(c, "event_name is missing");
	if ((rc = set_str(c, &c->d->kind, name)) != 0)
		return rc;
	int64_t occurred;
	bool has;
	if ((rc = get_opt_time(c, root, "occurred_at", "occurred_at", &occurred, &has)) !=
	    0)
		return rc;
	if (!has)
		return invalid(c, "occurred_at is missing");
	json_t *payload = json_object_get(root, "payload");
	json_t *meta = json_object_get(root, "meta");
	if (!json_is_object(payload))
		return invalid(c, "payload must be an object");
	if (meta != NULL && !json_is_object(meta) && !json_is_null(meta))
		return invalid(c, "meta must be an object");
	static const struct {
		const char *name;
		employee_event_type_t type;
		bool thin;
	} types[] = {
	    {"person.created", EV_HIRE, true},
	    {"employment.started", EV_HIRE, true},
	    {"person.updated", EV_UPDATE, true},
	    {"employment.updated", EV_UPDATE, true},
	    {"person.deleted", EV_TERMINATE, false},
	    {"employment.terminated", EV_TERMINATE, false},
	};
	size_t t = 0, nt = sizeof(types) / sizeof(*types);
	while (t < nt && strcmp(types[t].name, name) != 0)
		t++;
	if (t == nt)
		return 0;
	/* Person events carry the person's id as payload.id; employment
	 * events name the person in payload.person_id. */
	char employee[MAX_ID_LEN + 1];
	const char *idkey = json_object_get(payload, "person_id") != NULL ? "person_id"
	                    : strncmp(name, "person.", 7) == 0            ? "id"
	                                                                  : "person_id";
	char where[32];
	snprintf(where, sizeof(where), "payload.%s", idkey);
	if ((rc = get_id(c, payload, idkey, where, employee, sizeof(employee))) != 0)
		return rc;
	int64_t effective;
	if ((rc = get_opt_time(c, payload, "effective_date", "payload.effective_date",
	                       &effective, &has)) != 0)
		return rc;
	if (!has)
		effective = occurred;
	webhook_event_t *we =
	    add_event(c, employee, types[t].type, occurred, effective, types[t].thin, -1);
	if (we == NULL)
		return c->err != NULL && c->err->code ? c->err->code : ID_ENOMEM;
	json_t *attrs = json_object_get(payload, "attributes");
	if (attrs != NULL && !json_is_null(attrs)) {
		if (!json_is_object(attrs))
			return invalid(c, "payload.attributes must be an object");
		if (types[t].type != EV_TERMINATE &&
		    (rc = put_record(c, &we->ev.attributes, attrs, "", 0)) != 0)
			return rc;
		/* Events that carry the data need no trip to the API. */
		if (types[t].type == EV_UPDATE && we->ev.attributes.len > 0)
			we->thin = false;
		if (types[t].type == EV_HIRE && has_names(&we->ev.attributes))
			we->thin = false;
	}
	return 0;
}

/* ---- entry points ------------------------------------------------------------------ */

/* First 32 hex digits of SHA-256(body): the delivery id of sources without one. */
static int body_digest(const void *body, size_t len, char **out)
{
	unsigned char h[32];
	if (EVP_Digest(body, len, h, NULL, EVP_sha256(), NULL) != 1)
		return ID_EINVALID;
	char *hex = malloc(2 * 32 + 1);
	if (hex == NULL)
		return ID_ENOMEM;
	hex_encode(h, 32, hex);
	hex[DELIVERY_HASH_HEX] = '\0';
	*out = hex;
	return 0;
}

int webhook_parse(webhook_source_t src, const void *body, size_t len,
                  const char *delivery_hdr, int64_t now_ms, webhook_delivery_t *out,
                  webhook_refusal_t *why, id_err_t *err)
{
	int rc = 0;
	json_error_t jerr;
	pctx_t c = {src, out, why, err, now_ms};
	refuse(why, WEBHOOK_REFUSE_NONE, 0);
	webhook_delivery_fini(out);
	if ((unsigned)src >= WEBHOOK_SOURCE_COUNT)
		return refuse(why, WEBHOOK_REFUSE_UNKNOWN_SOURCE,
		              id_err_set(err, ID_EINVALID, "unknown webhook source"));
	/* Duplicate keys are ambiguous (which one did the sender mean?). */
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		return refuse(why, WEBHOOK_REFUSE_MALFORMED_JSON,
		              id_err_set(err, ID_EPARSE,
		                         "%s webhook: body is not valid JSON: %s at line "
		                         "%d column %d",
		                         webhook_source_name(src), jerr.text, jerr.line,
		                         jerr.column));
	}
	if (!json_is_object(root)) {
		rc = refuse(why, WEBHOOK_REFUSE_MALFORMED_JSON,
		            id_err_set(err, ID_EPARSE,
		                       "%s webhook: body is not a JSON object",
		                       webhook_source_name(src)));
		goto out;
	}
	if (src != WEBHOOK_GENERIC && src != WEBHOOK_GUSTO &&
	    (rc = body_digest(body, len, &out->delivery_id)) != 0) {
		rc = nomem(&c);
		goto out;
	}
	switch (src) {
	case WEBHOOK_GENERIC:
		rc = parse_generic(&c, root, delivery_hdr);
		break;
	case WEBHOOK_BAMBOOHR:
		if (json_object_get(root, "employees") != NULL)
			rc = parse_bamboohr_fields(&c, root);
		else if (json_is_string(json_object_get(root, "type")))
			rc = parse_bamboohr_event(&c, root);
		else
			rc = invalid(&c,
			             "neither an event-based (\"type\", \"data\") nor a "
			             "field-based (\"employees\") payload");
		break;
	case WEBHOOK_HIBOB:
		rc = parse_hibob(&c, root);
		break;
	case WEBHOOK_GUSTO:
		rc = parse_gusto(&c, root);
		break;
	case WEBHOOK_PERSONIO:
		rc = parse_personio(&c, root);
		break;
	default:
		break;
	}
out:
	json_decref(root);
	if (rc != 0)
		webhook_delivery_fini(out);
	return rc;
}

int webhook_event_enrich(webhook_source_t src, webhook_event_t *we,
                         const void *record_json, size_t len, id_err_t *err)
{
	int rc = 0;
	json_error_t jerr;
	webhook_refusal_t why;
	pctx_t c = {src, NULL, &why, err, 0};
	id_attrs_t attrs = ID_ATTRS_INIT;
	json_t *root = json_loadb(record_json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		rc = id_err_set(err, ID_EPARSE,
		                "%s API: the employee record is not a JSON "
		                "object",
		                webhook_source_name(src));
		goto out;
	}
	/* Personio wraps the record: {"data": {"attributes": {...}}}. */
	json_t *rec = root;
	json_t *data = json_object_get(root, "data");
	if (json_is_object(data))
		rec = json_is_object(json_object_get(data, "attributes"))
		          ? json_object_get(data, "attributes")
		          : data;
	if ((rc = put_record(&c, &attrs, rec, "", 0)) != 0)
		goto out;
	/* Ids and bookkeeping of the API are not HR attributes. */
	static const char *const drop[] = {"id",          "uuid",    "company_id",
	                                   "employee_id", "version", "type"};
	for (size_t i = 0; i < sizeof(drop) / sizeof(*drop); i++)
		id_attrs_remove(&attrs, drop[i]);
	if (we->ev.type == EV_HIRE && !has_names(&attrs)) {
		rc = id_err_set(err, ID_EINVALID,
		                "%s API: the record of employee %s has no first and last "
		                "name",
		                webhook_source_name(src), we->ev.employee_id);
		goto out;
	}
	for (size_t i = 0; i < attrs.len; i++) {
		if (id_attrs_set(&we->ev.attributes, attrs.items[i].key,
		                 attrs.items[i].value) != 0) {
			rc = id_err_set(err, ID_ENOMEM, "out of memory");
			goto out;
		}
	}
	we->thin = false;
out:
	id_attrs_fini(&attrs);
	json_decref(root);
	return rc;
}
