/*
 * sink_targets.c — configuration → core options for each target kind (see
 * sink_targets.h).  Secrets are read here and wiped once the core has
 * copied them.
 */
#include "cmd/sink_targets.h"

#include <stdlib.h>
#include <string.h>

#include "sinks/sink_ldap.h"

static void secret_free(char *s)
{
	if (s == NULL)
		return;
	memset(s, 0, strlen(s));
	free(s);
}

static void *ldap_open(const id_config_t *cfg, id_err_t *err)
{
	char *password = NULL;
	if (id_config_secret(cfg, "ldap.bind_password_file",
	                     "IDSTREAM_LDAP_BIND_PASSWORD", &password, err) != 0)
		return NULL;
	sink_ldap_opts_t o = {
	    .url = id_config_str(cfg, "ldap.url"),
	    .bind_dn = id_config_str(cfg, "ldap.bind_dn"),
	    .bind_password = password,
	    .people_dn = id_config_str(cfg, "ldap.people_dn"),
	    .groups_dn = id_config_str(cfg, "ldap.groups_dn"),
	    .timeout_ms = (int)id_config_int(cfg, "ldap.timeout_ms"),
	};
	sink_ldap_t *s = sink_ldap_open(&o, err);
	secret_free(password);
	return s;
}

static int ldap_apply(void *h, const desired_identity_t *d, sink_result_t *r,
                      id_err_t *err)
{
	return sink_ldap_apply(h, d, r, err);
}

static uint64_t ldap_writes(const void *h)
{
	return sink_ldap_writes(h);
}

static void ldap_close(void *h)
{
	sink_ldap_close(h);
}

static const sink_target_ops_t targets[] = {
    {"ldap", "sink.ldap.target", ldap_open, ldap_apply, ldap_writes, ldap_close,
     "OpenLDAP (ldap.* options). The bind password comes from\n"
     "IDSTREAM_LDAP_BIND_PASSWORD or ldap.bind_password_file."},
};

const sink_target_ops_t *sink_target_find(const char *kind)
{
	for (size_t i = 0; i < sizeof(targets) / sizeof(*targets); i++)
		if (strcmp(targets[i].kind, kind) == 0)
			return &targets[i];
	return NULL;
}

const char *sink_target_kinds(void)
{
	return "ldap";
}
