/*
 * policy_registry.c — the active mapping of every partition, switched by
 * POLICY_ACTIVATED markers (see policy_registry.h).
 *
 * Invariants: parts[i] is NULL (the built-in mapping) or an entry of the
 * cache whose refs counts the partitions pointing at it; an entry with
 * refs == 0 may be dropped, one with refs > 0 never is.  Entries are looked
 * up by the SHA-256 of the source before anything is loaded, so a marker
 * repeated on every partition costs one load.
 */
#include "processors/policy_registry.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reg_entry {
	char sha256[65];
	char *name;
	char *src;
	size_t len;
	policy_t *policy;
	mapping_t *mapping;
	long refs;
	uint64_t used; /* registry tick of the last activation, for eviction */
} reg_entry_t;

typedef struct reg_part {
	reg_entry_t *entry; /* NULL: the built-in mapping */
	char *last_error;   /* NULL: none */
} reg_part_t;

struct policy_registry {
	mapping_t *builtin;
	char *target;
	policy_limits_t limits;
	reg_entry_t **cache;
	size_t ncache, capcache;
	reg_part_t *parts;
	size_t nparts;
	uint64_t tick;
};

static void entry_free(reg_entry_t *e)
{
	if (e == NULL)
		return;
	mapping_destroy(e->mapping);
	policy_destroy(e->policy);
	free(e->name);
	free(e->src);
	free(e);
}

policy_registry_t *policy_registry_create(mapping_t *builtin, const char *target,
                                          const policy_limits_t *limits, id_err_t *err)
{
	policy_registry_t *r = NULL;
	if (builtin == NULL || target == NULL || target[0] == '\0') {
		id_err_set(
		    err, ID_EINVALID,
		    "policy registry: a built-in mapping and a target are required");
		goto fail;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL || (r->target = strdup(target)) == NULL) {
		id_err_set(err, ID_ENOMEM, "policy registry: out of memory");
		goto fail;
	}
	r->builtin = builtin;
	if (limits != NULL)
		r->limits = *limits;
	return r;
fail:
	if (r != NULL)
		free(r->target);
	free(r);
	mapping_destroy(builtin);
	return NULL;
}

void policy_registry_destroy(policy_registry_t *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->ncache; i++)
		entry_free(r->cache[i]);
	for (size_t i = 0; i < r->nparts; i++)
		free(r->parts[i].last_error);
	free(r->cache);
	free(r->parts);
	free(r->target);
	mapping_destroy(r->builtin);
	free(r);
}

static const reg_part_t *part_get(const policy_registry_t *r, int32_t partition)
{
	if (partition < 0 || (size_t)partition >= r->nparts)
		return NULL;
	return &r->parts[partition];
}

/* The slot of partition, growing the table; NULL on ENOMEM or a bad index. */
static reg_part_t *part_slot(policy_registry_t *r, int32_t partition)
{
	if (partition < 0)
		return NULL;
	if ((size_t)partition >= r->nparts) {
		size_t n = (size_t)partition + 1;
		if (n < 16)
			n = 16;
		reg_part_t *p = realloc(r->parts, n * sizeof(*p));
		if (p == NULL)
			return NULL;
		memset(p + r->nparts, 0, (n - r->nparts) * sizeof(*p));
		r->parts = p;
		r->nparts = n;
	}
	return &r->parts[partition];
}

const mapping_t *policy_registry_mapping(const policy_registry_t *r, int32_t partition)
{
	const reg_part_t *p = part_get(r, partition);
	return p != NULL && p->entry != NULL ? p->entry->mapping : r->builtin;
}

const char *policy_registry_version(const policy_registry_t *r, int32_t partition)
{
	return mapping_version(policy_registry_mapping(r, partition));
}

void policy_registry_active(const policy_registry_t *r, int32_t partition,
                            const char **name, const char **src, size_t *len)
{
	const reg_part_t *p = part_get(r, partition);
	const reg_entry_t *e = p != NULL ? p->entry : NULL;
	*name = e ? e->name : NULL;
	*src = e ? e->src : NULL;
	*len = e ? e->len : 0;
}

const char *policy_registry_last_error(const policy_registry_t *r, int32_t partition)
{
	const reg_part_t *p = part_get(r, partition);
	return p != NULL && p->last_error != NULL ? p->last_error : "";
}

static void note_error(policy_registry_t *r, int32_t partition, const char *msg)
{
	reg_part_t *p = part_slot(r, partition);
	if (p == NULL)
		return;
	free(p->last_error);
	p->last_error = strdup(msg != NULL && msg[0] ? msg : "refused");
}

/* Points partition at e (NULL: built-in), keeping the reference counts. */
static void part_point(reg_part_t *p, reg_entry_t *e)
{
	if (p->entry != NULL)
		p->entry->refs--;
	p->entry = e;
	if (e != NULL)
		e->refs++;
	free(p->last_error);
	p->last_error = NULL;
}

/* Drops unused entries beyond the cache bound, least recently used first. */
static void cache_trim(policy_registry_t *r)
{
	while (r->ncache > POLICY_REGISTRY_CACHE_MAX) {
		size_t victim = r->ncache;
		for (size_t i = 0; i < r->ncache; i++)
			if (r->cache[i]->refs == 0 &&
			    (victim == r->ncache ||
			     r->cache[i]->used < r->cache[victim]->used))
				victim = i;
		if (victim == r->ncache)
			return; /* everything is in use */
		entry_free(r->cache[victim]);
		r->cache[victim] = r->cache[--r->ncache];
	}
}

static int sha256_hex(const char *src, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(src, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return ID_EINVALID;
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* The cached entry for src, loading it when absent.  NULL with err set. */
static reg_entry_t *entry_get(policy_registry_t *r, const char *name, const char *src,
                              size_t len, id_err_t *err)
{
	char sha[65];
	reg_entry_t *e = NULL;
	if (sha256_hex(src, len, sha) != 0) {
		id_err_set(err, ID_EINVALID, "policy %s: SHA-256 failed", name);
		return NULL;
	}
	for (size_t i = 0; i < r->ncache; i++)
		if (strcmp(r->cache[i]->sha256, sha) == 0)
			return r->cache[i];
	if (r->ncache == r->capcache) {
		size_t n = r->capcache ? 2 * r->capcache : 8;
		reg_entry_t **c = realloc(r->cache, n * sizeof(*c));
		if (c == NULL)
			goto nomem;
		r->cache = c;
		r->capcache = n;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL || (e->name = strdup(name)) == NULL ||
	    (e->src = malloc(len + 1)) == NULL)
		goto nomem;
	memcpy(e->src, src, len);
	e->src[len] = '\0';
	e->len = len;
	memcpy(e->sha256, sha, sizeof(sha));
	if ((e->policy = policy_create(name, src, len, &r->limits, err)) == NULL)
		goto fail;
	if ((e->mapping = policy_mapping_create(e->policy, r->target, err)) == NULL)
		goto fail;
	r->cache[r->ncache++] = e;
	return e;
nomem:
	id_err_set(err, ID_ENOMEM, "policy %s: out of memory", name);
fail:
	entry_free(e);
	return NULL;
}

int policy_registry_set(policy_registry_t *r, int32_t partition, const char *name,
                        const char *src, size_t len, id_err_t *err)
{
	reg_part_t *p = part_slot(r, partition);
	if (p == NULL)
		return id_err_set(err, partition < 0 ? ID_EINVALID : ID_ENOMEM,
		                  "policy registry: partition %d: %s", (int)partition,
		                  partition < 0 ? "invalid partition" : "out of memory");
	if (src == NULL) {
		part_point(p, NULL);
		return 0;
	}
	if (len > POLICY_SOURCE_MAX)
		return id_err_set(err, ID_EINVALID,
		                  "policy %s: %zu bytes; at most %zu are accepted",
		                  name ? name : "(unnamed)", len, POLICY_SOURCE_MAX);
	reg_entry_t *e =
	    entry_get(r, name && name[0] ? name : "policy.lua", src, len, err);
	if (e == NULL)
		return err != NULL && err->code != 0 ? err->code : ID_EINVALID;
	e->used = ++r->tick;
	part_point(p, e);
	cache_trim(r);
	return 0;
}

void policy_registry_reset(policy_registry_t *r, int32_t partition)
{
	reg_part_t *p = part_slot(r, partition);
	if (p != NULL)
		part_point(p, NULL);
}

int policy_registry_check_marker(const employee_event_t *ev, id_err_t *err)
{
	const char *id = ev->event_id ? ev->event_id : "(none)";
	if (ev->type != EV_POLICY_ACTIVATED)
		return id_err_set(err, ID_EINVALID,
		                  "event %s: a %s event is not a policy "
		                  "activation",
		                  id, employee_event_type_name(ev->type));
	if (ev->source == NULL || strcmp(ev->source, POLICY_EVENT_SOURCE) != 0)
		return id_err_set(err, ID_EINVALID,
		                  "policy activation %s: source \"%s\"; only \"%s\" may "
		                  "activate policies",
		                  id, ev->source ? ev->source : "", POLICY_EVENT_SOURCE);
	if (ev->employee_id == NULL || strcmp(ev->employee_id, POLICY_EVENT_KEY) != 0)
		return id_err_set(
		    err, ID_EINVALID,
		    "policy activation %s: employee id \"%s\"; expected \"%s\"", id,
		    ev->employee_id ? ev->employee_id : "", POLICY_EVENT_KEY);
	const char *version = id_attrs_get(&ev->attributes, POLICY_ATTR_VERSION);
	const char *src = id_attrs_get(&ev->attributes, POLICY_ATTR_SOURCE);
	const char *builtin = id_attrs_get(&ev->attributes, POLICY_ATTR_BUILTIN);
	const char *sha = id_attrs_get(&ev->attributes, POLICY_ATTR_SHA256);
	if (version == NULL || version[0] == '\0')
		return id_err_set(err, ID_EINVALID,
		                  "policy activation %s: no %s attribute", id,
		                  POLICY_ATTR_VERSION);
	if (builtin != NULL) {
		if (strcmp(builtin, POLICY_BUILTIN_DEFAULT) != 0)
			return id_err_set(
			    err, ID_EINVALID,
			    "policy activation %s: unknown built-in mapping "
			    "\"%s\"",
			    id, builtin);
		if (src != NULL)
			return id_err_set(err, ID_EINVALID,
			                  "policy activation %s: both %s and %s are set",
			                  id, POLICY_ATTR_BUILTIN, POLICY_ATTR_SOURCE);
		return 0;
	}
	if (src == NULL)
		return id_err_set(err, ID_EINVALID,
		                  "policy activation %s: no %s attribute (nor %s)", id,
		                  POLICY_ATTR_SOURCE, POLICY_ATTR_BUILTIN);
	size_t len = strlen(src);
	if (len > POLICY_SOURCE_MAX)
		return id_err_set(
		    err, ID_EINVALID,
		    "policy activation %s: the policy has %zu bytes; at most "
		    "%zu are accepted",
		    id, len, POLICY_SOURCE_MAX);
	char hex[65];
	if (sha256_hex(src, len, hex) != 0)
		return id_err_set(err, ID_EINVALID,
		                  "policy activation %s: SHA-256 failed", id);
	char expect[sizeof(POLICY_VERSION_PREFIX) + 16];
	snprintf(expect, sizeof(expect), "%s%.16s", POLICY_VERSION_PREFIX, hex);
	if (strcmp(version, expect) != 0)
		return id_err_set(err, ID_EINVALID,
		                  "policy activation %s: the source's version is %s, but "
		                  "the marker declares %s",
		                  id, expect, version);
	if (sha != NULL && strcmp(sha, hex) != 0)
		return id_err_set(err, ID_EINVALID,
		                  "policy activation %s: the source's SHA-256 is %s, but "
		                  "the marker declares %s",
		                  id, hex, sha);
	return 0;
}

int policy_registry_activate(policy_registry_t *r, int32_t partition,
                             const employee_event_t *ev, id_err_t *err)
{
	id_err_t e = {0};
	int rc = policy_registry_check_marker(ev, &e);
	if (rc == 0) {
		const char *src = id_attrs_get(&ev->attributes, POLICY_ATTR_SOURCE);
		const char *name = id_attrs_get(&ev->attributes, POLICY_ATTR_NAME);
		rc = policy_registry_set(r, partition, name, src, src ? strlen(src) : 0,
		                         &e);
	}
	if (rc == 0)
		return 0;
	if (rc != ID_ENOMEM)
		id_err_wrap(&e,
		            "partition %d: policy activation %s refused, the "
		            "partition keeps %s",
		            (int)partition, ev->event_id ? ev->event_id : "(none)",
		            policy_registry_version(r, partition));
	note_error(r, partition, e.msg);
	if (err != NULL)
		*err = e;
	return rc;
}
