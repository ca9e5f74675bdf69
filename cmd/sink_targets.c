/*
 * sink_targets.c — configuration → core options for each target kind (see
 * sink_targets.h).  Secrets are read here and wiped once the core has
 * copied them.  The plan adapters turn a core's dry-run plan into the ops
 * of a SinkResult, named as the core names them when it applies them.
 */
#include "cmd/sink_targets.h"

#include <stdint.h>
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

static const char *empty_null(const char *s)
{
	return s != NULL && *s != '\0' ? s : NULL;
}

static void *ldap_open(const id_config_t *cfg, id_err_t *err)
{
	const char *method = id_config_str(cfg, "ldap.disable_method");
	if (strcmp(method, "lock") != 0 && strcmp(method, "move") != 0) {
		id_err_set(err, ID_ECONFIG,
		           "ldap.disable_method: \"%s\" is not one of lock, move",
		           method);
		return NULL;
	}
	bool move = strcmp(method, "move") == 0;
	if (move && empty_null(id_config_str(cfg, "ldap.disabled_dn")) == NULL) {
		id_err_set(err, ID_ECONFIG,
		           "ldap.disable_method is move but ldap.disabled_dn is empty");
		return NULL;
	}
	/* RFC 2307 numbers: slapd's integer syntax is unbounded, POSIX ids
	 * are not (and 2^32-1 is (uid_t)-1). */
	int64_t uid_min = id_config_int(cfg, "ldap.posix_uid_min"),
	        gid = id_config_int(cfg, "ldap.posix_gid");
	if (uid_min < 1 || uid_min > INT32_MAX || gid < 0 || gid > INT32_MAX) {
		id_err_set(err, ID_ECONFIG,
		           "ldap.posix_uid_min (%lld) must be 1 to %d and ldap.posix_gid "
		           "(%lld) 0 to %d",
		           (long long)uid_min, INT32_MAX, (long long)gid, INT32_MAX);
		return NULL;
	}
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
	    .password_file = empty_null(id_config_str(cfg, "ldap.password_file")),
	    .password_policy = {(size_t)id_config_int(cfg, "ldap.password_length"),
	                        (int)id_config_int(cfg, "ldap.password_classes"), true},
	    .disabled_dn = move ? id_config_str(cfg, "ldap.disabled_dn") : NULL,
	    .posix = id_config_bool(cfg, "ldap.posix"),
	    .base_dn = id_config_str(cfg, "ldap.base_dn"),
	    .posix_uid_min = uid_min,
	    .posix_gid = gid,
	    .posix_home = id_config_str(cfg, "ldap.posix_home"),
	    .posix_shell = empty_null(id_config_str(cfg, "ldap.posix_shell")),
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

/* A plan error that is about this identity (not the target being away) is
 * its final outcome: FAILED, as apply would say. */
static int plan_failed(sink_result_t *r, int rc, const id_err_t *perr)
{
	r->outcome = SINK_FAILED;
	free(r->error);
	r->error = strdup(perr->msg[0] ? perr->msg : id_err_str(rc));
	return r->error != NULL ? 0 : ID_ENOMEM;
}

static int ldap_plan(void *h, const desired_identity_t *d, sink_result_t *r,
                     id_err_t *err)
{
	ldap_diff_plan_t plan;
	bool pending = false;
	id_err_t perr = {0};
	ldap_diff_plan_init(&plan);
	int rc = sink_ldap_plan(h, d, &plan, &pending, &perr);
	if (rc == ID_ELDAP || rc == ID_ETIMEOUT) {
		if (err != NULL)
			*err = perr;
		goto out;
	}
	if (rc != 0) {
		rc = plan_failed(r, rc, &perr);
		goto out;
	}
	for (size_t i = 0; i < plan.nops && rc == 0; i++) {
		const ldap_diff_op_t *o = &plan.ops[i];
		switch (o->kind) {
		case LDAP_DIFF_OP_ADD:
			rc = sink_result_add_op(r, "add", "dn", NULL, o->dn);
			break;
		case LDAP_DIFF_OP_MODRDN:
			rc = sink_result_add_op(r, "modrdn", "dn", o->old_value,
			                        o->new_value);
			break;
		case LDAP_DIFF_OP_DELETE:
			rc = sink_result_add_op(r, "delete", "dn", o->dn, NULL);
			break;
		case LDAP_DIFF_OP_ENSURE_OU:
			rc =
			    sink_result_add_op(r, "create_ou", o->dn, NULL, o->new_value);
			break;
		case LDAP_DIFF_OP_GROUP_ADD:
			rc =
			    sink_result_add_op(r, "group_add", o->attribute, NULL, o->dn);
			break;
		case LDAP_DIFF_OP_GROUP_REMOVE:
			rc = sink_result_add_op(r, "group_remove", o->attribute, o->dn,
			                        NULL);
			break;
		default:
			rc = sink_result_add_op(r, ldap_diff_op_kind_name(o->kind),
			                        o->attribute, o->old_value, o->new_value);
			break;
		}
	}
	/* A create_ou for an OU that exists is not drift: the executor skips it. */
	if (rc == 0)
		r->outcome = SINK_NOOP;
	for (size_t i = 0; rc == 0 && i < r->nops; i++)
		if (strcmp(r->ops[i].op, "create_ou") != 0)
			r->outcome = SINK_APPLIED;
	if (rc == ID_ENOMEM)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
out:
	ldap_diff_plan_fini(&plan);
	return rc;
}

static int ldap_accounts(void *h, sink_account_list_t *out, id_err_t *err)
{
	return sink_ldap_accounts(h, out, err);
}

static int ldap_remove(void *h, const char *ref, id_err_t *err)
{
	return sink_ldap_remove(h, ref, err);
}

static void ldap_share(void *h, void *h0)
{
	sink_ldap_share(h, h0);
}

static void ldap_batch_begin(void *h0)
{
	sink_ldap_batch_begin(h0);
}

static int ldap_batch_end(void *h0, id_err_t *err)
{
	return sink_ldap_batch_end(h0, err);
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

static int ad_plan(void *h, const desired_identity_t *d, sink_result_t *r, id_err_t *err)
{
	ad_diff_plan_t plan;
	bool pending = false;
	id_err_t perr = {0};
	ad_diff_plan_init(&plan);
	int rc = sink_ad_plan(h, d, &plan, &pending, &perr);
	if (rc == ID_ELDAP || rc == ID_ETIMEOUT) {
		if (err != NULL)
			*err = perr;
		goto out;
	}
	if (rc != 0) {
		rc = plan_failed(r, rc, &perr);
		goto out;
	}
	for (size_t i = 0; i < plan.nops && rc == 0; i++) {
		const ad_diff_op_t *o = &plan.ops[i];
		switch (o->kind) {
		case AD_DIFF_OP_ADD:
			rc = sink_result_add_op(r, "add", "dn", NULL, o->dn);
			break;
		case AD_DIFF_OP_MODRDN:
			rc = sink_result_add_op(r, "modrdn", "dn", o->old_value,
			                        o->new_value);
			break;
		case AD_DIFF_OP_DELETE:
			rc = sink_result_add_op(r, "delete", "dn", o->dn, NULL);
			break;
		case AD_DIFF_OP_ENSURE_OU:
			rc =
			    sink_result_add_op(r, "create_ou", o->dn, NULL, o->new_value);
			break;
		case AD_DIFF_OP_GROUP_ADD:
			rc =
			    sink_result_add_op(r, "group_add", o->attribute, NULL, o->dn);
			break;
		case AD_DIFF_OP_GROUP_REMOVE:
			rc = sink_result_add_op(r, "group_remove", o->attribute, o->dn,
			                        NULL);
			break;
		default:
			rc = sink_result_add_op(r, ad_diff_op_kind_name(o->kind),
			                        o->attribute, o->old_value, o->new_value);
			break;
		}
	}
	/* As for LDAP: an OU that exists is skipped by the executor. */
	if (rc == 0)
		r->outcome = SINK_NOOP;
	for (size_t i = 0; rc == 0 && i < r->nops; i++)
		if (strcmp(r->ops[i].op, "create_ou") != 0)
			r->outcome = SINK_APPLIED;
	if (rc == ID_ENOMEM)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
out:
	ad_diff_plan_fini(&plan);
	return rc;
}

static int ad_accounts(void *h, sink_account_list_t *out, id_err_t *err)
{
	return sink_ad_accounts(h, out, err);
}

static int ad_remove(void *h, const char *ref, id_err_t *err)
{
	return sink_ad_remove(h, ref, err);
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
	    .password_file = empty_null(id_config_str(cfg, "scim.password_file")),
	    .password_policy = {(size_t)id_config_int(cfg, "scim.password_length"),
	                        (int)id_config_int(cfg, "scim.password_classes"), true},
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

static int64_t scim_retry_after(const void *h)
{
	return sink_scim_retry_after_ms(h);
}

static void scim_share(void *h, void *h0)
{
	sink_scim_share(h, h0);
}

static int scim_plan(void *h, const desired_identity_t *d, sink_result_t *r,
                     id_err_t *err)
{
	scim_diff_plan_t plan;
	bool pending = false;
	id_err_t perr = {0};
	scim_diff_plan_init(&plan);
	int rc = sink_scim_plan(h, d, &plan, &pending, &perr);
	if (rc == ID_EIO || rc == ID_ETIMEOUT || rc == ID_ECONFIG) {
		if (err != NULL)
			*err = perr;
		goto out;
	}
	if (rc != 0) {
		rc = plan_failed(r, rc, &perr);
		goto out;
	}
	for (size_t i = 0; i < plan.nops && rc == 0; i++) {
		const scim_diff_op_t *o = &plan.ops[i];
		const char *name = scim_diff_op_kind_name(o->kind);
		switch (o->kind) {
		case SCIM_DIFF_OP_UPDATE:
		case SCIM_DIFF_OP_DISABLE:
		case SCIM_DIFF_OP_ENABLE:
			rc = sink_result_add_op(r, name, scim_diff_field_path(o->field),
			                        o->old_value, o->new_value);
			break;
		case SCIM_DIFF_OP_CREATE:
			/* The User would be created: name it by its userName. */
			rc = sink_result_add_op(r, name, "userName", NULL,
			                        plan.want[SCIM_F_USER_NAME]);
			break;
		case SCIM_DIFF_OP_GROUP_REMOVE:
			rc = sink_result_add_op(r, name, o->group ? o->group : "",
			                        o->group_id, NULL);
			break;
		case SCIM_DIFF_OP_DELETE:
			rc = sink_result_add_op(r, name, "id", o->old_value, NULL);
			break;
		default: /* GROUP_ADD, CREATE_GROUP: the group it joins */
			rc = sink_result_add_op(r, name, o->group ? o->group : "", NULL,
			                        o->group_id);
			break;
		}
	}
	if (rc == 0)
		r->outcome = r->nops > 0 ? SINK_APPLIED : SINK_NOOP;
	else if (rc == ID_ENOMEM)
		rc = id_err_set(err, ID_ENOMEM, "out of memory");
out:
	scim_diff_plan_fini(&plan);
	return rc;
}

static int scim_accounts(void *h, sink_account_list_t *out, id_err_t *err)
{
	return sink_scim_accounts(h, out, err);
}

static int scim_remove(void *h, const char *ref, id_err_t *err)
{
	return sink_scim_remove(h, ref, err);
}

static const sink_target_ops_t targets[] = {
    {.kind = "ldap",
     .target_key = "sink.ldap.target",
     .open = ldap_open,
     .apply = ldap_apply,
     .writes = ldap_writes,
     .close = ldap_close,
     .retry_after_ms = NULL,
     .plan = ldap_plan,
     .accounts = ldap_accounts,
     .remove = ldap_remove,
     .share = ldap_share,
     .batch_begin = ldap_batch_begin,
     .batch_end = ldap_batch_end,
     .help = "OpenLDAP (ldap.* options). The bind password comes from\n"
             "IDSTREAM_LDAP_BIND_PASSWORD or ldap.bind_password_file; with\n"
             "ldap.password_file, initial passwords go there (mode 0600).\n"
             "With ldap.posix, entries are posixAccounts with allocated uidNumbers."},
    {.kind = "ad",
     .target_key = "sink.ad.target",
     .open = ad_open,
     .apply = ad_apply,
     .writes = ad_writes,
     .close = ad_close,
     .retry_after_ms = NULL,
     .plan = ad_plan,
     .accounts = ad_accounts,
     .remove = ad_remove,
     .help = "Active Directory over LDAPS (ad.* options). The bind password\n"
             "comes from IDSTREAM_AD_BIND_PASSWORD or ad.bind_password_file;\n"
             "initial passwords of new users go to ad.password_file (mode 0600)."},
    {.kind = "scim",
     .target_key = "sink.scim.target",
     .open = scim_open,
     .apply = scim_apply,
     .writes = scim_writes,
     .close = scim_close,
     .retry_after_ms = scim_retry_after,
     .plan = scim_plan,
     .accounts = scim_accounts,
     .remove = scim_remove,
     .share = scim_share,
     .help = "SCIM 2.0 service provider (scim.* options). The bearer token\n"
             "comes from IDSTREAM_SCIM_BEARER_TOKEN or scim.bearer_token_file;\n"
             "TLS is verified. With scim.password_file, Users are created with\n"
             "an initial password, delivered there (mode 0600)."},
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
