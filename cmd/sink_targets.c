/*
 * sink_targets.c — configuration → core options for each target kind (see
 * sink_targets.h).  Secrets are read here and wiped once the core has
 * copied them.
 */
#include "cmd/sink_targets.h"

#include <stdlib.h>
#include <string.h>

#include "sinks/sink_ad.h"
#include "sinks/sink_ldap.h"
#include "sinks/sink_scim.h"

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

static const char *empty_null(const char *s)
{
	return s != NULL && *s != '\0' ? s : NULL;
}

static void *ad_open(const id_config_t *cfg, id_err_t *err)
{
	static const char *const checks[] = {"demand", "try", "allow", "never"};
	const char *v = id_config_str(cfg, "ad.tls_verify");
	int check = -1;
	for (int i = 0; i < 4; i++)
		if (strcmp(v, checks[i]) == 0)
			check = i;
	if (check < 0) {
		id_err_set(
		    err, ID_ECONFIG,
		    "ad.tls_verify: \"%s\" is not one of demand, try, allow, never", v);
		return NULL;
	}
	char *password = NULL;
	if (id_config_secret(cfg, "ad.bind_password_file", "IDSTREAM_AD_BIND_PASSWORD",
	                     &password, err) != 0)
		return NULL;
	sink_ad_opts_t o = {
	    .url = id_config_str(cfg, "ad.url"),
	    .bind_dn = id_config_str(cfg, "ad.bind_dn"),
	    .bind_password = password,
	    .base_dn = id_config_str(cfg, "ad.base_dn"),
	    .people_dn = id_config_str(cfg, "ad.people_dn"),
	    .groups_dn = id_config_str(cfg, "ad.groups_dn"),
	    .upn_suffix = id_config_str(cfg, "ad.upn_suffix"),
	    .tls_check = (sink_ad_tls_check_t)check,
	    .tls_ca_file = empty_null(id_config_str(cfg, "ad.tls_ca_file")),
	    .password_file = empty_null(id_config_str(cfg, "ad.password_file")),
	    .password_must_change = id_config_bool(cfg, "ad.password_must_change"),
	    .timeout_ms = (int)id_config_int(cfg, "ad.timeout_ms"),
	};
	sink_ad_t *s = sink_ad_open(&o, err);
	secret_free(password);
	return s;
}

static int ad_apply(void *h, const desired_identity_t *d, sink_result_t *r, id_err_t *err)
{
	return sink_ad_apply(h, d, r, err);
}

static uint64_t ad_writes(const void *h)
{
	return sink_ad_writes(h);
}

static void ad_close(void *h)
{
	sink_ad_close(h);
}

static void *scim_open(const id_config_t *cfg, id_err_t *err)
{
	char *token = NULL;
	if (id_config_secret(cfg, "scim.bearer_token_file", "IDSTREAM_SCIM_BEARER_TOKEN",
	                     &token, err) != 0)
		return NULL;
	sink_scim_opts_t o = {
	    .base_url = id_config_str(cfg, "scim.url"),
	    .bearer_token = token,
	    .timeout_ms = (int)id_config_int(cfg, "scim.timeout_ms"),
	    .tls_insecure = id_config_bool(cfg, "scim.tls_insecure"),
	    .ca_file = empty_null(id_config_str(cfg, "scim.ca_file")),
	    .no_patch = !id_config_bool(cfg, "scim.patch"),
	    .no_bulk = !id_config_bool(cfg, "scim.bulk"),
	    .no_etag = !id_config_bool(cfg, "scim.etag"),
	};
	sink_scim_t *s = sink_scim_open(&o, err);
	secret_free(token);
	return s;
}

static int scim_apply(void *h, const desired_identity_t *d, sink_result_t *r,
                      id_err_t *err)
{
	return sink_scim_apply(h, d, r, err);
}

static uint64_t scim_writes(const void *h)
{
	return sink_scim_writes(h);
}

static void scim_close(void *h)
{
	sink_scim_close(h);
}

static const sink_target_ops_t targets[] = {
    {"ldap", "sink.ldap.target", ldap_open, ldap_apply, ldap_writes, ldap_close,
     "OpenLDAP (ldap.* options). The bind password comes from\n"
     "IDSTREAM_LDAP_BIND_PASSWORD or ldap.bind_password_file."},
    {"ad", "sink.ad.target", ad_open, ad_apply, ad_writes, ad_close,
     "Active Directory over LDAPS (ad.* options). The bind password comes from\n"
     "IDSTREAM_AD_BIND_PASSWORD or ad.bind_password_file; initial passwords of\n"
     "new users go to ad.password_file (mode 0600)."},
    {"scim", "sink.scim.target", scim_open, scim_apply, scim_writes, scim_close,
     "SCIM 2.0 service provider (scim.* options). The bearer token comes from\n"
     "IDSTREAM_SCIM_BEARER_TOKEN or scim.bearer_token_file; TLS is verified."},
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
	return "ldap, ad, scim";
}
