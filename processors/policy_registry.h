/*
 * policy_registry.h — which mapping each partition of hr.events runs, as
 * decided by the POLICY_ACTIVATED events in that partition's log.
 *
 * A policy deployment (`idstream policy deploy`) writes one activation
 * marker to every partition of hr.events.  The marker carries the policy
 * itself (its Lua source) and its version, so the log alone says which
 * mapping was active at every offset: the processor, `replay --check` and
 * `plan` all feed the markers they read to a registry and ask it for the
 * partition's mapping before folding the partition's next event.
 *
 * Marker attributes (EmployeeEvent.attributes; key POLICY_EVENT_KEY, source
 * POLICY_EVENT_SOURCE):
 *
 *   | attribute        | value                                             |
 *   |------------------|---------------------------------------------------|
 *   | policy_version   | "sha256:<16 hex>" (or the built-in's version)     |
 *   | policy_sha256    | 64 hex digits of SHA-256(source); optional check  |
 *   | policy_name      | file name, used in error messages                 |
 *   | policy_source    | the Lua source, at most POLICY_SOURCE_MAX bytes   |
 *   | policy_builtin   | "default": back to the built-in mapping (no source)|
 *   | deployment_id    | the same on every partition of one deployment     |
 *
 * A marker that cannot be used (wrong source, no version, a source whose
 * hash is not the declared version, a policy that fails to load or lacks
 * the registry's target) is refused: the partition keeps its mapping, the
 * error is returned and kept (policy_registry_last_error()).  Refusal is a
 * function of the marker's bytes, so a replay refuses the same markers.
 *
 * Loaded policies are cached by their SHA-256, so twelve partitions
 * switching to one policy load it once.  Unused entries beyond
 * POLICY_REGISTRY_CACHE_MAX are dropped.
 *
 * Purity: no I/O, no clock.  Thread safety: none; a registry and the
 * mappings it returns belong to one thread (a policy_t holds one Lua
 * interpreter).
 */
#ifndef IDSTREAM_POLICY_REGISTRY_H
#define IDSTREAM_POLICY_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "processors/mapping.h"
#include "processors/policy.h"
#include "schemas/model.h"

/* Kafka key and EmployeeEvent.employee_id of activation markers.  '@' is
 * reserved: no HR employee id can collide with it in the processor's view. */
#define POLICY_EVENT_KEY "@policy"
/* EmployeeEvent.source of markers; markers from any other source are refused. */
#define POLICY_EVENT_SOURCE "idstream"

#define POLICY_ATTR_VERSION    "policy_version"
#define POLICY_ATTR_SHA256     "policy_sha256"
#define POLICY_ATTR_NAME       "policy_name"
#define POLICY_ATTR_SOURCE     "policy_source"
#define POLICY_ATTR_BUILTIN    "policy_builtin"
#define POLICY_ATTR_DEPLOYMENT "deployment_id"

/* policy_builtin value that selects the built-in mapping. */
#define POLICY_BUILTIN_DEFAULT "default"

/* Largest policy source a marker may carry (Kafka messages stay small). */
#define POLICY_SOURCE_MAX ((size_t)256 * 1024)

/* Loaded policies kept although no partition runs them. */
#define POLICY_REGISTRY_CACHE_MAX 4

typedef struct policy_registry policy_registry_t;

/*
 * Creates a registry in which every partition runs builtin until a marker
 * says otherwise.  builtin is owned by the registry from the call on (also
 * when creation fails).  target is the policy target whose output the
 * mappings produce (e.g. "ldap"); a policy that does not declare it is
 * refused.  limits may be NULL (the policy engine's defaults).
 * Ownership: caller frees with policy_registry_destroy(); NULL with err set.
 */
policy_registry_t *policy_registry_create(mapping_t *builtin, const char *target,
                                          const policy_limits_t *limits, id_err_t *err);
void policy_registry_destroy(policy_registry_t *r);

/* The mapping partition runs now; never NULL.  Borrowed: valid until the
 * partition's mapping changes (activate/set/reset) or the registry goes. */
const mapping_t *policy_registry_mapping(const policy_registry_t *r, int32_t partition);

/* The version of that mapping ("sha256:..." or the built-in's).  Borrowed. */
const char *policy_registry_version(const policy_registry_t *r, int32_t partition);

/*
 * What partition runs, for persisting it: *name and *src (*len bytes) of
 * the active policy, or *src == NULL (and *name NULL, *len 0) for the
 * built-in mapping.  Borrowed, same lifetime as policy_registry_mapping().
 */
void policy_registry_active(const policy_registry_t *r, int32_t partition,
                            const char **name, const char **src, size_t *len);

/*
 * Applies the POLICY_ACTIVATED event ev to partition.  0: the partition now
 * runs the marker's policy.  Otherwise the partition keeps its mapping:
 * ID_EINVALID (not a usable marker, or its policy fails to load or lacks
 * the target; err names the event, the partition and why), ID_EPARSE (a
 * syntax error in the policy), ID_ENOMEM.
 */
int policy_registry_activate(policy_registry_t *r, int32_t partition,
                             const employee_event_t *ev, id_err_t *err);

/*
 * Makes partition run the policy whose source is src[0..len) (named name in
 * errors), or the built-in mapping when src is NULL.  Used to restore a
 * partition from persisted state.  Errors as policy_registry_activate();
 * on error the partition keeps its mapping.
 */
int policy_registry_set(policy_registry_t *r, int32_t partition, const char *name,
                        const char *src, size_t len, id_err_t *err);

/* Makes partition run the built-in mapping again. */
void policy_registry_reset(policy_registry_t *r, int32_t partition);

/* The error of the last refused activation on partition, "" when none
 * (cleared by the next successful one).  Borrowed. */
const char *policy_registry_last_error(const policy_registry_t *r, int32_t partition);

/*
 * Checks that ev is shaped like a marker (type, source, employee id,
 * version, source size and declared hash, or the built-in selector),
 * without loading the policy.  0 or ID_EINVALID with err saying why.
 */
int policy_registry_check_marker(const employee_event_t *ev, id_err_t *err);

#endif
