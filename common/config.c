/*
 * config.c — the option table and its loaders (see config.h).
 *
 * The table below is the single source of truth: parsing, validation,
 * environment overrides and CONFIGURATION.md (`idstream config docs`) all
 * come from it.  Adding an option means adding one row.
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/kafka.h"
#include "common/log.h"

typedef enum { OPT_STR, OPT_INT, OPT_DOUBLE, OPT_BOOL } opt_type_t;

typedef struct opt_def {
	const char *name;
	opt_type_t type;
	const char *def;
	double min, max; /* for numbers; min > max means unbounded */
	const char *doc;
} opt_def_t;

static const opt_def_t opt_table[] = {
    {"topic.prefix", OPT_STR, "idstream", 0, -1,
     "Prefix of every topic of this deployment: `<prefix>.hr.events`, "
     "`<prefix>.identity.desired`, `<prefix>.sink.results`."},
    {"topic.partitions", OPT_INT, "12", 1, 10000,
     "Partitions of each topic made by `idstream topics create`. More partitions allow "
     "more processor and sink processes."},
    {"topic.replication_factor", OPT_INT, "1", 1, 16,
     "Replication factor of topics made by `idstream topics create` (use 3 in "
     "production)."},
    {"state.dir", OPT_STR, "./state", 0, -1,
     "Folder of the local RocksDB state of every stage (one sub-folder per stage). "
     "State is a cache of the log: losing it costs a replay, never data."},
    {"log.level", OPT_STR, "info", 0, -1, "Log threshold: debug, info, warn or error."},
    {"ingest.source", OPT_STR, "csv", 0, -1,
     "Name of the HR source recorded in every event ingested from files, and the "
     "name of its snapshot."},
    {"ingest.termination_threshold", OPT_DOUBLE, "0.2", 0, 1,
     "Largest fraction of known active employees that one export may terminate "
     "(by leaving them out). Above it nothing is published unless `--force` is given."},
    {"mapping.mail_domain", OPT_STR, "example.com", 0, -1,
     "Domain of the e-mail addresses the default mapping gives (`uid@domain`)."},
    {"mapping.create_days_before_start", OPT_INT, "7", 0, 3650,
     "Built-in mapping: days before the start date an account is created (disabled "
     "until the start date when mapping.enable is `start`). A Lua policy sets this per "
     "employee in its `timing` table instead."},
    {"mapping.enable", OPT_STR, "start", 0, -1,
     "Built-in mapping: when a new account is enabled: `start` (at midnight of the "
     "start date in mapping.timezone) or `create` (as soon as it is created)."},
    {"mapping.delete_after_days", OPT_INT, "-1", -1, 36500,
     "Built-in mapping: days after a termination takes effect that the account is "
     "deleted; -1 never deletes (disabled accounts stay)."},
    {"mapping.timezone", OPT_STR, "UTC", 0, -1,
     "Built-in mapping: IANA time zone in which start dates begin (e.g. "
     "`Europe/Oslo`)."},
    {"processor.instance_id", OPT_STR, "0", 0, -1,
     "Stable id of this processor process; its Kafka transactional.id is "
     "`<prefix>.processor.<instance_id>`. Give each concurrently running processor a "
     "different one and keep it across restarts (zombie fencing relies on it)."},
    {"processor.threads", OPT_INT, "1", 1, 64,
     "Fold threads of `idstream process`: each is a member of the processor's consumer "
     "group with its own Kafka transactions (transactional.id "
     "`<prefix>.processor.<instance_id>` for the first, `...#<n>` for the others) and "
     "its share of the partitions; all share one state store.  Up to the number of "
     "cores; keep it across restarts like the instance id.  `idstream run` folds on "
     "one thread."},
    {"processor.cache_mb", OPT_DOUBLE, "64", 0.01, 1048576,
     "Memory for the processor's record cache, in MB: the records of the employees "
     "folded last, kept between transactions so that their next events read no "
     "RocksDB (about 1 KB per employee with the built-in mapping; the fold threads "
     "share it).  Beyond it the least recently used records are read from RocksDB "
     "again."},
    {"processor.batch_max", OPT_INT, "1000", 1, 1000000,
     "Most input events per Kafka transaction."},
    {"processor.batch_ms", OPT_INT, "100", 1, 60000,
     "Longest time a transaction stays open collecting events, in milliseconds."},
    {"processor.timer_check_ms", OPT_INT, "1000", 10, 3600000,
     "How often the processor looks for lifecycle timers that are due (a start date "
     "reached, a termination taking effect, a retention period over, a future-dated "
     "change) and publishes a REEVALUATE event for each, in milliseconds."},
    {"names.instance_id", OPT_STR, "0", 0, -1,
     "Stable id of this names arbiter process; its Kafka transactional.id is "
     "`<prefix>.names.<instance_id>`. Give each concurrently running arbiter a "
     "different one and keep it across restarts (zombie fencing relies on it)."},
    {"names.batch_max", OPT_INT, "1000", 1, 1000000,
     "Most name claims decided per Kafka transaction of the names arbiter."},
    {"names.batch_ms", OPT_INT, "50", 1, 60000,
     "Longest time an arbiter transaction stays open collecting claims, in "
     "milliseconds (a claimant waits at least this long for its answer)."},
    {"ldap.url", OPT_STR, "ldap://127.0.0.1:13890/", 0, -1,
     "LDAP server URL of the ldap sink."},
    {"ldap.bind_dn", OPT_STR, "cn=admin,dc=example,dc=com", 0, -1,
     "DN the ldap sink binds as."},
    {"ldap.bind_password_file", OPT_STR, "", 0, -1,
     "File holding the bind password (trailing newline ignored). The environment "
     "variable `IDSTREAM_LDAP_BIND_PASSWORD` takes precedence. Never put the password "
     "itself in the config file or on the command line."},
    {"ldap.base_dn", OPT_STR, "dc=example,dc=com", 0, -1, "Base DN of the directory."},
    {"ldap.people_dn", OPT_STR, "ou=people,dc=example,dc=com", 0, -1,
     "DN under which accounts are kept (one OU per department below it)."},
    {"ldap.groups_dn", OPT_STR, "ou=groups,dc=example,dc=com", 0, -1,
     "DN under which groups (groupOfNames) are kept."},
    {"ldap.timeout_ms", OPT_INT, "10000", 100, 600000, "Timeout of each LDAP operation."},
    {"ldap.password_file", OPT_STR, "", 0, -1,
     "Where initial passwords of created entries go: one line `employee_id TAB uid TAB "
     "password` each, file mode 0600 (a file others can read is refused). The entry "
     "gets the password as an {SSHA} userPassword. Empty: entries are created "
     "without a password."},
    {"ldap.password_length", OPT_INT, "20", 8, 128,
     "Length of generated initial passwords of the ldap sink."},
    {"ldap.password_classes", OPT_INT, "3", 0, 4,
     "How many of upper case, lower case, digits and other characters an initial "
     "password of the ldap sink contains at least; it never contains the uid or a "
     "part of the display name."},
    {"ldap.disable_method", OPT_STR, "lock", 0, -1,
     "How the ldap sink disables an account: `lock` (ppolicy's permanent lock, "
     "pwdAccountLockedTime=000001010000Z) or `move` (the entry moves to "
     "ldap.disabled_dn and back to its department's OU when enabled)."},
    {"ldap.disabled_dn", OPT_STR, "ou=disabled,dc=example,dc=com", 0, -1,
     "Where disabled entries are kept when ldap.disable_method is `move` (created "
     "when missing)."},
    {"ldap.posix", OPT_BOOL, "false", 0, -1,
     "Make every entry of the ldap sink a posixAccount too (uidNumber, gidNumber, "
     "homeDirectory, loginShell). Entries made before it was turned on get it on "
     "their next change or by `idstream reconcile ldap --repair`; turning it off "
     "removes nothing."},
    {"ldap.posix_uid_min", OPT_INT, "10000", 0, -1,
     "Lowest uidNumber the ldap sink hands out. A new account gets one more than "
     "the highest uidNumber (at least this one) below ldap.base_dn; an entry keeps "
     "the uidNumber it has for good. Run one ldap sink per directory: numbers are "
     "counted in that process. From 1 to 2147483647."},
    {"ldap.posix_gid", OPT_INT, "10000", 0, -1,
     "gidNumber (primary group) of every posixAccount of the ldap sink, from 0 to "
     "2147483647."},
    {"ldap.posix_home", OPT_STR, "/home/%u", 0, -1,
     "homeDirectory of a posixAccount: `%u` is replaced by the uid (so it follows "
     "renames), `%%` by `%`."},
    {"ldap.posix_shell", OPT_STR, "/bin/bash", 0, -1,
     "loginShell of a posixAccount; empty: none."},
    {"sink.ldap.target", OPT_STR, "ldap", 0, -1,
     "Target name of the ldap sink: names its consumer group "
     "(`<prefix>.sink.<target>`), its state and its results, and the policy "
     "section it applies (a policy must declare it)."},
    {"ad.url", OPT_STR, "ldaps://127.0.0.1:636", 0, -1,
     "Active Directory URL of the ad sink. An ldap:// URL is upgraded with StartTLS; "
     "the bind password and initial passwords never travel in clear."},
    {"ad.bind_dn", OPT_STR, "Administrator@EXAMPLE.TEST", 0, -1,
     "Account the ad sink binds as (a UPN or a DN)."},
    {"ad.bind_password_file", OPT_STR, "", 0, -1,
     "File holding the AD bind password. The environment variable "
     "`IDSTREAM_AD_BIND_PASSWORD` takes precedence."},
    {"ad.base_dn", OPT_STR, "DC=example,DC=test", 0, -1,
     "The domain's DN; sAMAccountName is checked for uniqueness below it."},
    {"ad.people_dn", OPT_STR, "OU=people,DC=example,DC=test", 0, -1,
     "OU under which user objects are kept (one OU per department below it)."},
    {"ad.groups_dn", OPT_STR, "OU=groups,DC=example,DC=test", 0, -1,
     "OU under which managed groups are kept."},
    {"ad.upn_suffix", OPT_STR, "example.test", 0, -1,
     "Suffix of userPrincipalName (`uid@suffix`)."},
    {"ad.tls_verify", OPT_STR, "demand", 0, -1,
     "Certificate check of the AD connection: demand (verify certificate and host "
     "name), try, allow, or never (self-signed test domain controllers only)."},
    {"ad.tls_ca_file", OPT_STR, "", 0, -1,
     "PEM bundle to verify the domain controller's certificate against; empty: the "
     "system's."},
    {"ad.password_file", OPT_STR, "", 0, -1,
     "Where initial passwords of created users go: one line `employee_id TAB "
     "sAMAccountName TAB password` each, file mode 0600 (a file others can read is "
     "refused). Without it the ad sink refuses to create users."},
    {"ad.password_must_change", OPT_BOOL, "true", 0, -1,
     "New users must change their initial password at first logon."},
    {"ad.timeout_ms", OPT_INT, "10000", 100, 600000, "Timeout of each AD operation."},
    {"sink.ad.target", OPT_STR, "ad", 0, -1,
     "Target name of the ad sink: names its consumer group, its state and its "
     "results, and the policy section it applies (a policy must declare it)."},
    {"scim.url", OPT_STR, "http://127.0.0.1:18080/v2", 0, -1,
     "Base URL of the SCIM 2.0 service provider of the scim sink."},
    {"scim.bearer_token_file", OPT_STR, "", 0, -1,
     "File holding the SCIM bearer token. The environment variable "
     "`IDSTREAM_SCIM_BEARER_TOKEN` takes precedence."},
    {"scim.timeout_ms", OPT_INT, "10000", 100, 600000,
     "Timeout of each SCIM request, connecting included."},
    {"scim.password_file", OPT_STR, "", 0, -1,
     "Where initial passwords of created Users go (sent as the User's `password` "
     "attribute on create): one line `employee_id TAB userName TAB password` each, "
     "file mode 0600. Empty: Users are created without a password."},
    {"scim.password_length", OPT_INT, "20", 8, 128,
     "Length of generated initial passwords of the scim sink."},
    {"scim.password_classes", OPT_INT, "3", 0, 4,
     "How many of upper case, lower case, digits and other characters an initial "
     "password of the scim sink contains at least; it never contains the userName "
     "or a part of the display name."},
    {"scim.ca_file", OPT_STR, "", 0, -1,
     "PEM bundle to verify the SCIM server's certificate against; empty: the system's."},
    {"scim.tls_insecure", OPT_BOOL, "false", 0, -1,
     "Skip TLS certificate and host name checks (self-signed test servers only)."},
    {"scim.patch", OPT_BOOL, "true", 0, -1,
     "Use PATCH when the server announces it (else PUT)."},
    {"scim.bulk", OPT_BOOL, "false", 0, -1,
     "Send a plan of several requests (a new User with its group memberships, for "
     "example) as one "
     "/Bulk request when the server announces /Bulk. Off by default: one request at a "
     "time is the "
     "path every SCIM application serves, and scim2-server spends more CPU on one /Bulk "
     "than on the "
     "same requests sent one by one."},
    {"scim.etag", OPT_BOOL, "true", 0, -1,
     "Send If-Match with the resource's ETag when the server announces ETags."},
    {"sink.scim.target", OPT_STR, "scim", 0, -1,
     "Target name of the scim sink: names its consumer group, its state and its "
     "results, and the policy section it applies (a policy must declare it)."},
    {"sink.guard.enabled", OPT_BOOL, "true", 0, -1,
     "Mass-change guard of every sink: disables and deletes beyond the limit below "
     "are held until `idstream approve TARGET` or `idstream reject TARGET`. Turn it "
     "off only for a target that is rebuilt from scratch."},
    {"sink.guard.max_fraction", OPT_DOUBLE, "0.1", 0, 1,
     "Largest fraction of a target's active managed accounts (last applied state "
     "ACTIVE) that may be disabled or deleted within `sink.guard.window_s` without "
     "an operator. 1 turns the fraction off; 0 holds every disable."},
    {"sink.guard.max_count", OPT_INT, "0", 0, 100000000,
     "Absolute cap on disables and deletes within the window; the stricter of this "
     "and the fraction applies. 0: the fraction only."},
    {"sink.guard.min_managed", OPT_INT, "50", 0, 100000000,
     "The fraction is taken of at least this many accounts, so a small deployment "
     "may still lose max_fraction x min_managed accounts (5 by default) per window "
     "without being held: at that size one or two leavers are ordinary churn, not "
     "a broken export. 0: the fraction of the real count."},
    {"sink.guard.window_s", OPT_INT, "3600", 0, 2592000,
     "Disables and deletes applied within this many seconds count together against "
     "the limit (approved ones do not count)."},
    {"sink.guard.settle_ms", OPT_INT, "2000", 0, 600000,
     "A disable or delete waits until no desired identity has arrived for this "
     "long (at most ten times this), so that its whole batch is counted before any "
     "of it is applied."},
    {"sink.retry.initial_ms", OPT_INT, "200", 1, 3600000,
     "First delay before retrying an unreachable target; it doubles on each "
     "failure up to `sink.retry.max_ms`, each delay drawn between half and all of "
     "it (jitter). A longer Retry-After from the target is waited out."},
    {"sink.retry.max_ms", OPT_INT, "30000", 1, 3600000,
     "Longest delay between two attempts to reach a target (also the probe "
     "interval while the circuit is open)."},
    {"sink.rate_limit", OPT_DOUBLE, "0", 0, 1000000,
     "Most writes per second a sink sends to its target (add, modify, rename, delete, "
     "HTTP write; averaged, one identity's writes are never split); 0: no limit. "
     "Each sink process limits its own target."},
    {"sink.circuit.failures", OPT_INT, "5", 1, 1000000,
     "Consecutive failures to reach a target after which its circuit opens: one "
     "warning and one DEFERRED result, then quiet probes until it answers."},
    {"reconcile.delete_unmanaged", OPT_BOOL, "false", 0, -1,
     "With `idstream reconcile TARGET --repair`, delete the accounts of the target's "
     "managed subtree (people OU, SCIM Users) that no employee of the sink owns. Off: "
     "they are only listed. The mass-change guard still applies: when they are more "
     "than the limit allows, none is deleted."},
    {"sink.concurrency", OPT_INT, "1", 1, 64,
     "Employees a sink applies at the same time, each on its own connection to the "
     "target (one employee's versions always in order). 1 with `sink.rate_limit` or "
     "`ldap.posix`. The ldap sink adds each group's new members of a batch in one "
     "modify and changes one group from one connection at a time; above 1 is "
     "tested for ldap only."},
    {"ingest.http.listen", OPT_STR, "127.0.0.1:8088", 0, -1,
     "Address and port `idstream ingest http` listens on (port 0 picks a free one)."},
    {"ingest.http.threads", OPT_INT, "4", 1, 256,
     "HTTP worker threads of the webhook server."},
    {"ingest.http.max_body_bytes", OPT_INT, "1048576", 1024, 67108864,
     "Largest webhook body accepted; larger ones are refused with 413 before reading "
     "them."},
    {"ingest.http.timestamp_window_s", OPT_INT, "300", 1, 86400,
     "Accepted clock skew of a webhook's signed send time; older or newer is refused."},
    {"ingest.http.publish_timeout_ms", OPT_INT, "2500", 100, 120000,
     "How long a delivery may wait for Kafka's acknowledgement before it is answered 503 "
     "with Retry-After."},
    {"ingest.http.dedupe_ttl_s", OPT_INT, "604800", 60, 31536000,
     "How long delivery ids are remembered to refuse replays (7 days)."},
    {"ingest.http.dedupe_sync", OPT_BOOL, "false", 0, -1,
     "fsync every recorded delivery id (survives power loss; slower)."},
    {"ingest.http.tls_cert_file", OPT_STR, "", 0, -1,
     "PEM certificate: when set (with the key), the webhook server speaks HTTPS."},
    {"ingest.http.tls_key_file", OPT_STR, "", 0, -1,
     "PEM private key of the certificate."},
    {"ingest.http.api_timeout_ms", OPT_INT, "2000", 100, 60000,
     "Bound of one HR API call made to complete a thin webhook event."},
    {"ingest.http.generic.secret_file", OPT_STR, "", 0, -1,
     "HMAC secret(s) of the generic signed format webhooks, one per line (any may have "
     "signed: rotation). The "
     "environment variable `IDSTREAM_WEBHOOK_GENERIC_SECRET` works too. Without a secret "
     "the "
     "source is disabled."},
    {"ingest.http.generic.api_url", OPT_STR, "", 0, -1,
     "the generic signed format HR API used to complete events that carry ids only; "
     "failed calls go to the "
     "durable outbox."},
    {"ingest.http.generic.api_token_file", OPT_STR, "", 0, -1,
     "Token of that HR API (or `IDSTREAM_HRAPI_GENERIC_TOKEN`)."},
    {"ingest.http.bamboohr.secret_file", OPT_STR, "", 0, -1,
     "HMAC secret(s) of BambooHR webhooks, one per line (any may have signed: rotation). "
     "The "
     "environment variable `IDSTREAM_WEBHOOK_BAMBOOHR_SECRET` works too. Without a "
     "secret the "
     "source is disabled."},
    {"ingest.http.bamboohr.api_url", OPT_STR, "", 0, -1,
     "BambooHR HR API used to complete events that carry ids only; failed calls go to "
     "the "
     "durable outbox."},
    {"ingest.http.bamboohr.api_token_file", OPT_STR, "", 0, -1,
     "Token of that HR API (or `IDSTREAM_HRAPI_BAMBOOHR_TOKEN`)."},
    {"ingest.http.hibob.secret_file", OPT_STR, "", 0, -1,
     "HMAC secret(s) of HiBob webhooks, one per line (any may have signed: rotation). "
     "The "
     "environment variable `IDSTREAM_WEBHOOK_HIBOB_SECRET` works too. Without a secret "
     "the "
     "source is disabled."},
    {"ingest.http.hibob.api_url", OPT_STR, "", 0, -1,
     "HiBob HR API used to complete events that carry ids only; failed calls go to the "
     "durable outbox."},
    {"ingest.http.hibob.api_token_file", OPT_STR, "", 0, -1,
     "Token of that HR API (or `IDSTREAM_HRAPI_HIBOB_TOKEN`)."},
    {"ingest.http.gusto.secret_file", OPT_STR, "", 0, -1,
     "HMAC secret(s) of Gusto-style webhooks, one per line (any may have signed: "
     "rotation). The "
     "environment variable `IDSTREAM_WEBHOOK_GUSTO_SECRET` works too. Without a secret "
     "the "
     "source is disabled."},
    {"ingest.http.gusto.api_url", OPT_STR, "", 0, -1,
     "Gusto-style HR API used to complete events that carry ids only; failed calls go to "
     "the "
     "durable outbox."},
    {"ingest.http.gusto.api_token_file", OPT_STR, "", 0, -1,
     "Token of that HR API (or `IDSTREAM_HRAPI_GUSTO_TOKEN`)."},
    {"ingest.http.personio.secret_file", OPT_STR, "", 0, -1,
     "HMAC secret(s) of Personio webhooks, one per line (any may have signed: rotation). "
     "The "
     "environment variable `IDSTREAM_WEBHOOK_PERSONIO_SECRET` works too. Without a "
     "secret the "
     "source is disabled."},
    {"ingest.http.personio.api_url", OPT_STR, "", 0, -1,
     "Personio HR API used to complete events that carry ids only; failed calls go to "
     "the "
     "durable outbox."},
    {"ingest.http.personio.api_token_file", OPT_STR, "", 0, -1,
     "Token of that HR API (or `IDSTREAM_HRAPI_PERSONIO_TOKEN`)."},
    {"ingest.poll.interval_s", OPT_INT, "300", 1, 86400,
     "Seconds between two passes of `idstream ingest poll` (`--interval`)."},
    {"ingest.poll.api_timeout_ms", OPT_INT, "10000", 100, 120000,
     "Bound of one HR API call made by `idstream ingest poll`."},
    {"ingest.poll.kafka_timeout_ms", OPT_INT, "30000", 1000, 600000,
     "Bound of reading `<prefix>.hr.events` to its end (to learn what is already "
     "published) and of committing a pass's events, per pass of `idstream ingest "
     "poll`."},
    {"ingest.poll.bamboohr.api_url", OPT_STR, "", 0, -1,
     "BambooHR API base URL polled by `idstream ingest poll bamboohr`, e.g. "
     "`https://api.bamboohr.com/api/gateway.php/<company>`. Empty: "
     "`ingest.http.bamboohr.api_url`."},
    {"ingest.poll.bamboohr.api_key_file", OPT_STR, "", 0, -1,
     "File holding the BambooHR API key (first line). The environment variable "
     "`IDSTREAM_HRAPI_BAMBOOHR_TOKEN` takes precedence. Empty: "
     "`ingest.http.bamboohr.api_token_file`."},
    {"ingest.poll.bamboohr.since", OPT_STR, "", 0, -1,
     "Watermark of the very first poll (ISO 8601, e.g. `2026-01-01T00:00:00Z`); "
     "empty: every change BambooHR has. Later passes continue from the stored "
     "watermark."},
    {"ingest.watch.settle_ms", OPT_INT, "2000", 10, 3600000,
     "`idstream ingest csv --watch`: a dropped file counts as complete once its size "
     "and modification time have not changed for this long."},
    {"ingest.watch.interval_ms", OPT_INT, "1000", 10, 3600000,
     "`idstream ingest csv --watch`: time between two scans of the folder."},
    {"ingest.watch.pattern", OPT_STR, "*", 0, -1,
     "`idstream ingest csv --watch`: only file names matching this shell pattern "
     "are picked up (dot-files and partial uploads such as `*.tmp`, `*.part` never "
     "are)."},
    {"kafka.bootstrap.servers", OPT_STR, "127.0.0.1:19092", 0, -1,
     "Kafka brokers. Every `kafka.*` key is passed to librdkafka without the "
     "`kafka.` prefix (see librdkafka's CONFIGURATION.md), e.g. "
     "`kafka.security.protocol = SASL_SSL`."},
};

#define OPT_COUNT (sizeof(opt_table) / sizeof(opt_table[0]))

struct id_config {
	char *values[OPT_COUNT]; /* current value of each table option */
	id_attrs_t kafka;        /* kafka.* pass-through, prefix stripped */
};

static long opt_find(const char *name)
{
	for (size_t i = 0; i < OPT_COUNT; i++)
		if (strcmp(opt_table[i].name, name) == 0)
			return (long)i;
	return -1;
}

id_config_t *id_config_create(void)
{
	id_config_t *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	id_attrs_init(&c->kafka);
	for (size_t i = 0; i < OPT_COUNT; i++) {
		if (id_config_set(c, opt_table[i].name, opt_table[i].def, NULL) != 0) {
			id_config_destroy(c);
			return NULL;
		}
	}
	return c;
}

void id_config_destroy(id_config_t *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < OPT_COUNT; i++)
		free(c->values[i]);
	id_attrs_fini(&c->kafka);
	free(c);
}

static int opt_validate(const opt_def_t *d, const char *value, id_err_t *err)
{
	char *end = NULL;
	double v = 0;
	switch (d->type) {
	case OPT_STR:
		return 0;
	case OPT_BOOL:
		if (strcmp(value, "true") == 0 || strcmp(value, "false") == 0)
			return 0;
		return id_err_set(err, ID_ECONFIG,
		                  "%s: expected true or false, got \"%s\"", d->name,
		                  value);
	case OPT_INT:
		errno = 0;
		v = (double)strtoll(value, &end, 10);
		break;
	case OPT_DOUBLE:
		errno = 0;
		v = strtod(value, &end);
		break;
	}
	if (end == value || *end != '\0' || errno != 0)
		return id_err_set(err, ID_ECONFIG, "%s: expected a %s, got \"%s\"",
		                  d->name, d->type == OPT_INT ? "whole number" : "number",
		                  value);
	if (d->min <= d->max && (v < d->min || v > d->max))
		return id_err_set(err, ID_ECONFIG, "%s: %s is out of range [%g, %g]",
		                  d->name, value, d->min, d->max);
	return 0;
}

int id_config_set(id_config_t *c, const char *key, const char *value, id_err_t *err)
{
	long at = opt_find(key);
	if (strncmp(key, "kafka.", 6) == 0 && key[6] != '\0') {
		int krc = id_kafka_check_option(key + 6, value, err);
		if (krc != 0)
			return krc;
		if (id_attrs_set(&c->kafka, key + 6, value) != 0)
			return id_err_set(err, ID_ENOMEM, "out of memory");
	} else if (at < 0) {
		return id_err_set(err, ID_ECONFIG, "unknown option \"%s\"", key);
	}
	if (at < 0)
		return 0;
	int rc = opt_validate(&opt_table[at], value, err);
	if (rc != 0)
		return rc;
	id_log_level_t level;
	if (strcmp(key, "log.level") == 0 && id_log_level_parse(value, &level) != 0)
		return id_err_set(
		    err, ID_ECONFIG,
		    "log.level: unknown level \"%s\" (debug, info, warn, error)", value);
	char *v = strdup(value);
	if (v == NULL)
		return id_err_set(err, ID_ENOMEM, "out of memory");
	free(c->values[at]);
	c->values[at] = v;
	return 0;
}

static char *str_trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int id_config_load_file(id_config_t *c, const char *path, id_err_t *err)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return id_err_set(err, ID_ECONFIG, "config file %s: %s", path,
		                  strerror(errno));
	char line[4096];
	int lineno = 0, rc = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		char *s = str_trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			rc = id_err_set(err, ID_ECONFIG,
			                "%s:%d: expected \"key = value\"", path, lineno);
			break;
		}
		*eq = '\0';
		char *key = str_trim(s), *value = str_trim(eq + 1);
		size_t vl = strlen(value);
		if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
			value[vl - 1] = '\0';
			value++;
		}
		rc = id_config_set(c, key, value, err);
		if (rc != 0) {
			id_err_wrap(err, "%s:%d", path, lineno);
			break;
		}
	}
	fclose(f);
	return rc;
}

/* "topic.prefix" → "IDSTREAM_TOPIC_PREFIX" */
static void env_name_of(const char *key, char *out, size_t outlen)
{
	size_t n = (size_t)snprintf(out, outlen, "IDSTREAM_");
	for (const char *p = key; *p && n + 1 < outlen; p++)
		out[n++] =
		    (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
	out[n] = '\0';
}

int id_config_load_env(id_config_t *c, id_err_t *err)
{
	char name[256];
	for (size_t i = 0; i < OPT_COUNT; i++) {
		env_name_of(opt_table[i].name, name, sizeof(name));
		const char *v = getenv(name);
		if (v == NULL)
			continue;
		int rc = id_config_set(c, opt_table[i].name, v, err);
		if (rc != 0)
			return id_err_wrap(err, "environment variable %s", name);
	}
	/* kafka.* keys already known (from the file) may be overridden too. */
	for (size_t i = 0; i < c->kafka.len; i++) {
		char key[256];
		snprintf(key, sizeof(key), "kafka.%s", c->kafka.items[i].key);
		env_name_of(key, name, sizeof(name));
		const char *v = getenv(name);
		if (v != NULL && id_attrs_set(&c->kafka, c->kafka.items[i].key, v) != 0)
			return id_err_set(err, ID_ENOMEM, "out of memory");
	}
	const char *lvl = id_config_str(c, "log.level");
	id_log_level_t level;
	if (id_log_level_parse(lvl, &level) != 0)
		return id_err_set(err, ID_ECONFIG, "log.level: unknown level \"%s\"",
		                  lvl);
	id_log_set_level(level);
	return 0;
}

static long opt_require(const char *name)
{
	long at = opt_find(name);
	if (at < 0) {
		fprintf(stderr, "idstream: internal error: unknown option %s\n", name);
		abort();
	}
	return at;
}

const char *id_config_str(const id_config_t *c, const char *name)
{
	if (strncmp(name, "kafka.", 6) == 0)
		return id_attrs_get(&c->kafka, name + 6);
	return c->values[opt_require(name)];
}

int64_t id_config_int(const id_config_t *c, const char *name)
{
	return strtoll(c->values[opt_require(name)], NULL, 10);
}

double id_config_double(const id_config_t *c, const char *name)
{
	return strtod(c->values[opt_require(name)], NULL);
}

bool id_config_bool(const id_config_t *c, const char *name)
{
	return strcmp(c->values[opt_require(name)], "true") == 0;
}

const id_attrs_t *id_config_kafka(const id_config_t *c)
{
	return &c->kafka;
}

int id_config_secret(const id_config_t *c, const char *file_option, const char *env_name,
                     char **out, id_err_t *err)
{
	*out = NULL;
	const char *v = env_name ? getenv(env_name) : NULL;
	if (v != NULL && *v != '\0') {
		*out = strdup(v);
		return *out ? 0 : id_err_set(err, ID_ENOMEM, "out of memory");
	}
	const char *path = file_option ? id_config_str(c, file_option) : NULL;
	if (path == NULL || *path == '\0')
		return id_err_set(
		    err, ID_ENOTFOUND,
		    "no secret configured: set %s or the environment variable %s",
		    file_option ? file_option : "(none)", env_name ? env_name : "(none)");
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return id_err_set(err, ID_ECONFIG, "%s: cannot read %s: %s", file_option,
		                  path, strerror(errno));
	char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	*out = strdup(buf);
	memset(buf, 0, sizeof(buf));
	return *out ? 0 : id_err_set(err, ID_ENOMEM, "out of memory");
}

void id_config_write(const id_config_t *c, FILE *out)
{
	for (size_t i = 0; i < OPT_COUNT; i++) {
		if (strcmp(opt_table[i].name, "kafka.bootstrap.servers") == 0)
			continue; /* printed with the other kafka.* keys */
		fprintf(out, "%s = %s\n", opt_table[i].name, c->values[i]);
	}
	for (size_t i = 0; i < c->kafka.len; i++)
		fprintf(out, "kafka.%s = %s\n", c->kafka.items[i].key,
		        c->kafka.items[i].value ? c->kafka.items[i].value : "");
}

void id_config_write_docs(FILE *out)
{
	static const char *const type_names[] = {"string", "integer", "number",
	                                         "boolean"};
	fputs(
	    "# idstream configuration\n\n"
	    "<!-- Generated by `idstream config docs` from the option table in "
	    "common/config.c; do not edit by hand. -->\n\n"
	    "idstream reads one file given with `--config FILE` (`key = value` lines, "
	    "`#` "
	    "starts a comment). Every option can be overridden by an environment "
	    "variable "
	    "named `IDSTREAM_` + the key in upper case with `.` and `-` as `_` (for "
	    "example "
	    "`IDSTREAM_TOPIC_PREFIX`), and on the command line with `--set key=value`. "
	    "Later sources win: defaults < file < environment < `--set`.\n\n"
	    "Secrets are never option values: they come from a file named by a `*_file` "
	    "option or from an environment variable, and are never logged.\n\n"
	    "| Option | Type | Default | Environment | Description |\n"
	    "|---|---|---|---|---|\n",
	    out);
	for (size_t i = 0; i < OPT_COUNT; i++) {
		const opt_def_t *d = &opt_table[i];
		char env[256];
		env_name_of(d->name, env, sizeof(env));
		char range[96] = "";
		if (d->min <= d->max)
			snprintf(range, sizeof(range), " (%g–%g)", d->min, d->max);
		fprintf(out, "| `%s` | %s%s | `%s` | `%s` | %s |\n", d->name,
		        type_names[d->type], range, d->def, env, d->doc);
	}
	fputs(
	    "\nOther `kafka.*` keys are passed to librdkafka as they are. These are set "
	    "by idstream and cannot be overridden, because its delivery guarantees "
	    "depend "
	    "on them: `enable.idempotence`, `acks`, `enable.auto.commit`, "
	    "`isolation.level`, `transactional.id`, `group.id`.\n",
	    out);
}

const char *id_config_topic(const id_config_t *c, const char *suffix, char *buf,
                            size_t buflen)
{
	snprintf(buf, buflen, "%s.%s", id_config_str(c, "topic.prefix"), suffix);
	return buf;
}
