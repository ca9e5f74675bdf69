/*
 * ingest.c (cmd) — `idstream ingest csv FILE [--force] [--dry-run]`: argument
 * parsing and the report around ingest_csv_run(); `idstream ingest csv
 * --watch DIR`: the drop folder (ingest/watch.h) feeding ingest_csv_run();
 * `idstream ingest http`: the webhook server (ingest/http_server.h) with its
 * Kafka producer, dedupe store and secrets, running until SIGINT/SIGTERM; and
 * `idstream ingest poll bamboohr`: the changed-since poller
 * (ingest/poll_bamboohr.h) on a schedule.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cmd/cli.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ingest/dedupe.h"
#include "ingest/enrich.h"
#include "ingest/http_server.h"
#include "ingest/ingest_csv.h"
#include "ingest/outbox.h"
#include "ingest/poll_bamboohr.h"
#include "ingest/watch.h"
#include "ingest/webhook.h"
#include "state/store.h"

static void ingest_usage(void)
{
	printf(
	    "usage: idstream ingest csv FILE [--force] [--dry-run]\n"
	    "       idstream ingest csv --watch DIR [--once] [--settle-ms MS]\n"
	    "       idstream ingest http [OPTIONS]   (see idstream ingest http --help)\n"
	    "       idstream ingest poll bamboohr [OPTIONS]\n"
	    "                                        (see idstream ingest poll --help)\n"
	    "\n"
	    "Publishes the changes in a full HR export to <prefix>.hr.events: HIRE for "
	    "new\n"
	    "employees, UPDATE with the changed attributes, TERMINATE for employees "
	    "missing\n"
	    "from the file, REHIRE for terminated ones that reappear. The file is "
	    "checked\n"
	    "completely first and published in one Kafka transaction: a bad row (named "
	    "by\n"
	    "file, line and column) publishes nothing. The same file twice publishes "
	    "nothing.\n"
	    "\n"
	    "  --force     publish even when the file would terminate more than\n"
	    "              ingest.termination_threshold of the known employees\n"
	    "  --dry-run   report what would be published; publish and store nothing\n"
	    "\n"
	    "With --watch DIR, exports dropped into DIR (an SFTP drop) are picked up\n"
	    "once complete (size and modification time unchanged for --settle-ms,\n"
	    "ingest.watch.settle_ms, 2000; dot-files and partial uploads *.tmp, *.part,\n"
	    "*.partial, *.filepart are ignored; only names matching "
	    "ingest.watch.pattern),\n"
	    "oldest first, each processed exactly as `ingest csv FILE` once, then moved\n"
	    "to DIR/done/. A refused file (malformed, over the termination threshold) "
	    "is\n"
	    "moved to DIR/failed/ with DIR/failed/NAME.error saying why; when Kafka is\n"
	    "unavailable the file stays and is tried again. Runs until SIGINT/SIGTERM;\n"
	    "--once handles what is in DIR and exits (1 if a file was refused or left).\n"
	    "Processed files are recorded in <state.dir>/ingest-watch-<ingest.source>,\n"
	    "so a crash between publishing and moving never publishes a file twice.\n"
	    "\n"
	    "Required columns: employee_id, first_name, last_name. Known optional "
	    "columns:\n"
	    "preferred_name, title, department, location, manager_id, employment_type,\n"
	    "start_date (YYYY-MM-DD). Other columns are published as attributes too.\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out);
static int ingest_watch_main(cli_t *cli, const char *dir, bool once, int64_t settle_ms);

static int ingest_csv_main(cli_t *cli, int argc, char **argv)
{
	ingest_csv_opts_t opts = {0};
	const char *watch = NULL;
	bool once = false;
	int64_t settle_ms = -1;
	for (int i = 2; i < argc; i++) {
		uint64_t n;
		if (cli_is_help(argv[i])) {
			ingest_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--watch") == 0) {
			if (i + 1 >= argc)
				return cli_usage_error("ingest",
				                       "--watch expects a folder");
			watch = argv[++i];
		} else if (strcmp(argv[i], "--once") == 0) {
			once = true;
		} else if (strcmp(argv[i], "--settle-ms") == 0) {
			if (i + 1 >= argc || parse_u64(argv[i + 1], 3600000, &n) != 0 ||
			    n < 10)
				return cli_usage_error("ingest",
				                       "--settle-ms expects 10-3600000");
			settle_ms = (int64_t)n;
			i++;
		} else if (strcmp(argv[i], "--force") == 0) {
			opts.force = true;
		} else if (strcmp(argv[i], "--dry-run") == 0) {
			opts.dry_run = true;
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			return cli_usage_error("ingest", "unknown option \"%s\"",
			                       argv[i]);
		} else if (opts.file == NULL) {
			opts.file = argv[i];
		} else {
			return cli_usage_error("ingest", "only one FILE at a time");
		}
	}
	if (watch != NULL) {
		if (opts.file != NULL || opts.force || opts.dry_run)
			return cli_usage_error(
			    "ingest", "--watch takes no FILE, --force or --dry-run (run "
			              "`ingest csv FILE --force` on a refused file)");
		return ingest_watch_main(cli, watch, once, settle_ms);
	}
	if (once || settle_ms >= 0)
		return cli_usage_error("ingest",
		                       "--once and --settle-ms go with --watch");
	if (opts.file == NULL)
		return cli_usage_error("ingest", "missing FILE");

	ingest_csv_report_t r = {0};
	id_err_t err = {0};
	int rc = ingest_csv_run(cli->cfg, &opts, &r, &err);
	if (rc != 0) {
		cli_fail("ingest", &err);
		if (r.published == 0)
			fprintf(stderr, "idstream: nothing of %s was published\n",
			        opts.file);
		return CLI_EXIT_FAIL;
	}
	if (opts.dry_run && r.threshold_exceeded)
		printf("%s: would be refused without --force: %zu terminations of %zu "
		       "active "
		       "employees exceed ingest.termination_threshold\n",
		       opts.file, r.terminations, r.known_active);
	printf(
	    "%s: %zu rows: %zu hires, %zu updates, %zu terminations, %zu rehires, "
	    "%zu unchanged; %zu events %s\n",
	    opts.file, r.rows, r.hires, r.updates, r.terminations, r.rehires, r.unchanged,
	    opts.dry_run ? r.hires + r.updates + r.terminations + r.rehires : r.published,
	    opts.dry_run ? "would be published (dry run)" : "published");
	return CLI_EXIT_OK;
}

/* ---- ingest http ----------------------------------------------------------------- */

/*
 * Options of `ingest http`: defaults from the configuration (ingest.http.*,
 * see CONFIGURATION.md), overridden by the command-line flags.
 */
typedef struct http_cli_opts {
	char addr[64];
	unsigned port;
	unsigned threads;
	size_t max_body;
	int64_t window_s;
	int64_t publish_timeout_ms;
	int64_t dedupe_ttl_s;
	bool dedupe_sync;
	const char *tls_cert;
	const char *tls_key;
	const char *secret_file[WEBHOOK_SOURCE_COUNT];
	const char *api_url[WEBHOOK_SOURCE_COUNT];
	const char *api_token_file[WEBHOOK_SOURCE_COUNT];
	long api_timeout_ms;
	const char *port_file;
} http_cli_opts_t;

static void ingest_http_usage(void)
{
	printf(
	    "usage: idstream ingest http [--listen ADDR:PORT] [--threads N]\n"
	    "                            [--secret-file SOURCE=FILE]... [--max-body "
	    "BYTES]\n"
	    "                            [--window SECONDS] [--publish-timeout MS]\n"
	    "                            [--dedupe-ttl SECONDS] [--dedupe-sync]\n"
	    "                            [--tls-cert FILE --tls-key FILE] [--port-file "
	    "FILE]\n"
	    "                            [--hr-api SOURCE=URL]... [--hr-api-token-file "
	    "SOURCE=FILE]...\n"
	    "                            [--hr-api-timeout MS]\n"
	    "\n"
	    "Receives signed HR webhooks and publishes the employee events they mean to\n"
	    "<prefix>.hr.events. A delivery is answered 200 only after Kafka "
	    "acknowledged\n"
	    "its events (acks=all); 503 with Retry-After when Kafka does not within the\n"
	    "publish timeout; 4xx with {\"error\", \"detail\"} and nothing published "
	    "when it\n"
	    "is unsigned or forged, stale, a replay, malformed or too large. Runs until\n"
	    "SIGINT/SIGTERM. The contract of every source is in docs/WEBHOOKS.md.\n"
	    "\n"
	    "Endpoints: POST /webhooks/SOURCE (SOURCE: generic, bamboohr, hibob, gusto,\n"
	    "personio), GET /healthz, GET /metrics (Prometheus).\n"
	    "\n"
	    "  --listen ADDR:PORT     where to listen (ingest.http.listen, default\n"
	    "                         127.0.0.1:8088; port 0 picks a free one)\n"
	    "  --threads N            HTTP worker threads (ingest.http.threads, 4)\n"
	    "  --secret-file S=FILE   HMAC secret(s) of source S, one per line: any "
	    "line\n"
	    "                         may have signed (ingest.http.<S>.secret_file); "
	    "the\n"
	    "                         secret may instead come from the environment as\n"
	    "                         IDSTREAM_WEBHOOK_<S>_SECRET. A source without a\n"
	    "                         secret is disabled (404).\n"
	    "  --max-body BYTES       largest accepted body "
	    "(ingest.http.max_body_bytes,\n"
	    "                         1048576)\n"
	    "  --window SECONDS       accepted clock skew of signed send times\n"
	    "                         (ingest.http.timestamp_window_s, 300)\n"
	    "  --publish-timeout MS   how long a delivery may wait for Kafka before "
	    "503;\n"
	    "                         also the producer's message.timeout.ms\n"
	    "                         (ingest.http.publish_timeout_ms, 2500)\n"
	    "  --dedupe-ttl SECONDS   how long delivery ids are remembered\n"
	    "                         (ingest.http.dedupe_ttl_s, 604800 = 7 days)\n"
	    "  --dedupe-sync          fsync every recorded delivery id\n"
	    "                         (ingest.http.dedupe_sync, false)\n"
	    "  --tls-cert FILE        serve HTTPS with this PEM certificate ...\n"
	    "  --tls-key FILE         ... and key (ingest.http.tls_cert_file/_key_file)\n"
	    "  --port-file FILE       write the port listened on to FILE once ready\n"
	    "  --hr-api S=URL         the HR API of source S, to complete events that "
	    "carry\n"
	    "                         ids only (ingest.http.<S>.api_url). With one, a\n"
	    "                         delivery whose API call fails is stored in the\n"
	    "                         outbox, answered 202 and published once the API\n"
	    "                         answers. Without, such events are refused (422).\n"
	    "  --hr-api-token-file S=FILE  the API token of source S\n"
	    "                         (ingest.http.<S>.api_token_file), or from the\n"
	    "                         environment as IDSTREAM_HRAPI_<S>_TOKEN\n"
	    "  --hr-api-timeout MS    bound of one HR API call "
	    "(ingest.http.api_timeout_ms,\n"
	    "                         2000)\n"
	    "\n"
	    "State: delivery ids and the outbox in <state.dir>/ingest-http.\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_listen(const char *s, http_cli_opts_t *o)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;
	if (colon == NULL || (size_t)(colon - s) >= sizeof(o->addr) ||
	    parse_u64(colon + 1, 65535, &port) != 0)
		return -1;
	memcpy(o->addr, s, (size_t)(colon - s));
	o->addr[colon - s] = '\0';
	if (o->addr[0] == '\0')
		snprintf(o->addr, sizeof(o->addr), "127.0.0.1");
	o->port = (unsigned)port;
	return 0;
}

/* The secrets of all sources: from the environment and the secret files. */
typedef struct http_secrets {
	char *keys[WEBHOOK_SOURCE_COUNT][16];
	size_t n[WEBHOOK_SOURCE_COUNT];
} http_secrets_t;

static void secrets_wipe(http_secrets_t *sec)
{
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++) {
		for (size_t i = 0; i < sec->n[s]; i++) {
			memset(sec->keys[s][i], 0, strlen(sec->keys[s][i]));
			free(sec->keys[s][i]);
		}
		sec->n[s] = 0;
	}
}

static int secret_add(http_secrets_t *sec, int src, const char *k, size_t len)
{
	if (len == 0 || sec->n[src] >= 16)
		return 0;
	char *c = strndup(k, len);
	if (c == NULL)
		return -1;
	sec->keys[src][sec->n[src]++] = c;
	return 0;
}

static int secrets_load(const http_cli_opts_t *o, http_secrets_t *sec, id_err_t *err)
{
	for (int src = 0; src < WEBHOOK_SOURCE_COUNT; src++) {
		char env[64];
		const char *name = webhook_source_name((webhook_source_t)src);
		snprintf(env, sizeof(env), "IDSTREAM_WEBHOOK_%s_SECRET", name);
		for (char *p = env; *p; p++)
			*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
		const char *v = getenv(env);
		if (v != NULL && secret_add(sec, src, v, strlen(v)) != 0)
			return id_err_set(err, ID_ENOMEM, "out of memory");
		if (o->secret_file[src] == NULL)
			continue;
		FILE *f = fopen(o->secret_file[src], "r");
		if (f == NULL)
			return id_err_set(err, ID_EIO, "secret file of %s: %s: %s", name,
			                  o->secret_file[src], strerror(errno));
		char line[1024];
		while (fgets(line, sizeof(line), f) != NULL) {
			size_t n = strcspn(line, "\r\n");
			if (secret_add(sec, src, line, n) != 0) {
				fclose(f);
				return id_err_set(err, ID_ENOMEM, "out of memory");
			}
		}
		memset(line, 0, sizeof(line));
		fclose(f);
		if (sec->n[src] == 0)
			return id_err_set(err, ID_ECONFIG,
			                  "secret file of %s: %s is empty", name,
			                  o->secret_file[src]);
	}
	return 0;
}

/*
 * One secret: IDSTREAM_<KIND>_<SOURCE>_<WHAT> from the environment, else the
 * first line of file.  *out is malloc'd (the caller wipes and frees it).
 */
static int secret_read(const char *source, const char *kind, const char *what,
                       const char *file, char **out, id_err_t *err)
{
	char env[96];
	snprintf(env, sizeof(env), "IDSTREAM_%s_%s_%s", kind, source, what);
	for (char *p = env; *p; p++)
		*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
	const char *v = getenv(env);
	if (v != NULL) {
		*out = strdup(v);
		return *out != NULL ? 0 : id_err_set(err, ID_ENOMEM, "out of memory");
	}
	if (file == NULL)
		return id_err_set(err, ID_ECONFIG,
		                  "%s API of %s: set %s or give a token file", kind,
		                  source, env);
	FILE *f = fopen(file, "r");
	if (f == NULL)
		return id_err_set(err, ID_EIO, "%s: %s", file, strerror(errno));
	char line[4096];
	if (fgets(line, sizeof(line), f) == NULL)
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	*out = strdup(line);
	memset(line, 0, sizeof(line));
	return *out != NULL ? 0 : id_err_set(err, ID_ENOMEM, "out of memory");
}

static int ingest_http_main(cli_t *cli, int argc, char **argv)
{
	int rc = CLI_EXIT_FAIL;
	id_err_t err = {0};
	http_cli_opts_t o = {.addr = "127.0.0.1",
	                     .port = 8088,
	                     .threads = 4,
	                     .max_body = (size_t)1 << 20,
	                     .window_s = 300,
	                     .publish_timeout_ms = 2500,
	                     .dedupe_ttl_s = 7 * 24 * 3600,
	                     .api_timeout_ms = 2000};
	/* Defaults from the configuration (ingest.http.*); flags override. */
	const id_config_t *cfg = cli->cfg;
	if (parse_listen(id_config_str(cfg, "ingest.http.listen"), &o) != 0) {
		fprintf(stderr,
		        "idstream: ingest.http.listen: expected ADDR:PORT, got \"%s\"\n",
		        id_config_str(cfg, "ingest.http.listen"));
		return CLI_EXIT_FAIL;
	}
	o.threads = (unsigned)id_config_int(cfg, "ingest.http.threads");
	o.max_body = (size_t)id_config_int(cfg, "ingest.http.max_body_bytes");
	o.window_s = id_config_int(cfg, "ingest.http.timestamp_window_s");
	o.publish_timeout_ms = id_config_int(cfg, "ingest.http.publish_timeout_ms");
	o.dedupe_ttl_s = id_config_int(cfg, "ingest.http.dedupe_ttl_s");
	o.dedupe_sync = id_config_bool(cfg, "ingest.http.dedupe_sync");
	o.api_timeout_ms = (long)id_config_int(cfg, "ingest.http.api_timeout_ms");
	if (*id_config_str(cfg, "ingest.http.tls_cert_file") != '\0')
		o.tls_cert = id_config_str(cfg, "ingest.http.tls_cert_file");
	if (*id_config_str(cfg, "ingest.http.tls_key_file") != '\0')
		o.tls_key = id_config_str(cfg, "ingest.http.tls_key_file");
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++) {
		char key[128];
		const char *v;
		snprintf(key, sizeof(key), "ingest.http.%s.secret_file",
		         webhook_source_name((webhook_source_t)s));
		if (*(v = id_config_str(cfg, key)) != '\0')
			o.secret_file[s] = v;
		snprintf(key, sizeof(key), "ingest.http.%s.api_url",
		         webhook_source_name((webhook_source_t)s));
		if (*(v = id_config_str(cfg, key)) != '\0')
			o.api_url[s] = v;
		snprintf(key, sizeof(key), "ingest.http.%s.api_token_file",
		         webhook_source_name((webhook_source_t)s));
		if (*(v = id_config_str(cfg, key)) != '\0')
			o.api_token_file[s] = v;
	}
	http_secrets_t sec;
	memset(&sec, 0, sizeof(sec));
	rd_kafka_t *rk = NULL;
	state_store_t *store = NULL;
	dedupe_t *dd = NULL;
	http_server_t *srv = NULL;
	enrich_t *en = NULL;
	outbox_t *ob = NULL;
	rd_kafka_t *ob_rk = NULL;
	char *tokens[WEBHOOK_SOURCE_COUNT] = {0};

	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t n;
		if (cli_is_help(a)) {
			ingest_http_usage();
			return CLI_EXIT_OK;
		}
		if (strcmp(a, "--dedupe-sync") == 0) {
			o.dedupe_sync = true;
			continue;
		}
		if (a[0] != '-' || v == NULL)
			return cli_usage_error(
			    "ingest http", "%s \"%s\"",
			    a[0] == '-' ? "missing value for" : "unexpected argument", a);
		i++;
		if (strcmp(a, "--listen") == 0) {
			if (parse_listen(v, &o) != 0)
				return cli_usage_error(
				    "ingest http",
				    "--listen expects ADDR:PORT, got \"%s\"", v);
		} else if (strcmp(a, "--threads") == 0) {
			if (parse_u64(v, 256, &n) != 0 || n == 0)
				return cli_usage_error("ingest http",
				                       "--threads expects 1-256");
			o.threads = (unsigned)n;
		} else if (strcmp(a, "--max-body") == 0) {
			if (parse_u64(v, (uint64_t)1 << 30, &n) != 0 || n == 0)
				return cli_usage_error(
				    "ingest http", "--max-body expects 1 to 2^30 bytes");
			o.max_body = (size_t)n;
		} else if (strcmp(a, "--window") == 0) {
			if (parse_u64(v, 86400, &n) != 0 || n == 0)
				return cli_usage_error(
				    "ingest http", "--window expects 1-86400 seconds");
			o.window_s = (int64_t)n;
		} else if (strcmp(a, "--publish-timeout") == 0) {
			if (parse_u64(v, 600000, &n) != 0 || n < 100)
				return cli_usage_error(
				    "ingest http",
				    "--publish-timeout expects 100-600000 ms");
			o.publish_timeout_ms = (int64_t)n;
		} else if (strcmp(a, "--dedupe-ttl") == 0) {
			if (parse_u64(v, 366 * 86400, &n) != 0 || n == 0)
				return cli_usage_error(
				    "ingest http",
				    "--dedupe-ttl expects 1 s to 366 days");
			o.dedupe_ttl_s = (int64_t)n;
		} else if (strcmp(a, "--tls-cert") == 0) {
			o.tls_cert = v;
		} else if (strcmp(a, "--tls-key") == 0) {
			o.tls_key = v;
		} else if (strcmp(a, "--port-file") == 0) {
			o.port_file = v;
		} else if (strcmp(a, "--hr-api-timeout") == 0) {
			if (parse_u64(v, 60000, &n) != 0 || n < 100)
				return cli_usage_error(
				    "ingest http",
				    "--hr-api-timeout expects 100-60000 ms");
			o.api_timeout_ms = (long)n;
		} else if (strcmp(a, "--secret-file") == 0 ||
		           strcmp(a, "--hr-api") == 0 ||
		           strcmp(a, "--hr-api-token-file") == 0) {
			const char *eq = strchr(v, '=');
			char name[32];
			webhook_source_t src;
			if (eq == NULL || (size_t)(eq - v) >= sizeof(name))
				return cli_usage_error("ingest http",
				                       "%s expects SOURCE=VALUE", a);
			memcpy(name, v, (size_t)(eq - v));
			name[eq - v] = '\0';
			if (webhook_source_parse(name, &src) != 0)
				return cli_usage_error(
				    "ingest http",
				    "unknown source \"%s\" (generic, bamboohr, "
				    "hibob, gusto, personio)",
				    name);
			if (strcmp(a, "--secret-file") == 0)
				o.secret_file[src] = eq + 1;
			else if (strcmp(a, "--hr-api") == 0)
				o.api_url[src] = eq + 1;
			else
				o.api_token_file[src] = eq + 1;
		} else {
			return cli_usage_error("ingest http", "unknown option \"%s\"", a);
		}
	}
	if ((o.tls_cert == NULL) != (o.tls_key == NULL))
		return cli_usage_error("ingest http",
		                       "--tls-cert and --tls-key go together");

	if (secrets_load(&o, &sec, &err) != 0) {
		rc = cli_fail("ingest http", &err);
		goto out;
	}
	size_t enabled = 0;
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++)
		enabled += sec.n[s] > 0;
	if (enabled == 0) {
		fprintf(stderr, "idstream: ingest http: no source has a secret; set "
		                "IDSTREAM_WEBHOOK_<SOURCE>_SECRET or --secret-file "
		                "SOURCE=FILE\n");
		rc = CLI_EXIT_USAGE;
		goto out;
	}

	/* The producer's own timeout is the publish bound: a message it gives
	 * up on is reported failed (503) and never delivered later behind the
	 * sender's retry.  Unless the user chose both. */
	char tmo[32];
	const id_attrs_t *kconf = id_config_kafka(cli->cfg);
	if (id_attrs_has(kconf, "message.timeout.ms")) {
		const char *mt = id_attrs_get(kconf, "message.timeout.ms");
		long long v = mt != NULL ? strtoll(mt, NULL, 10) : 0;
		if (v > 0 && v != o.publish_timeout_ms) {
			id_log_info("ingest-http",
			            "using kafka.message.timeout.ms=%lld as the publish "
			            "timeout",
			            v);
			o.publish_timeout_ms = v;
		}
	} else {
		snprintf(tmo, sizeof(tmo), "%lld", (long long)o.publish_timeout_ms);
		if (id_config_set(cli->cfg, "kafka.message.timeout.ms", tmo, &err) != 0) {
			rc = cli_fail("ingest http", &err);
			goto out;
		}
	}
	/* Each request waits for its own acknowledgement: batch briefly. */
	if (!id_attrs_has(kconf, "linger.ms") &&
	    id_config_set(cli->cfg, "kafka.linger.ms", "1", &err) != 0) {
		rc = cli_fail("ingest http", &err);
		goto out;
	}

	char topic[512], path[4096];
	id_config_topic(cli->cfg, "hr.events", topic, sizeof(topic));
	if ((rk = id_kafka_producer_create(cli->cfg, "idstream-ingest-http", NULL,
	                                   &err)) == NULL) {
		rc = cli_fail("ingest http", &err);
		goto out;
	}
	int32_t parts = 0;
	if (id_kafka_partition_count(rk, topic, &parts, &err) != 0) {
		rc = cli_fail("ingest http", &err);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/ingest-http",
	         id_config_str(cli->cfg, "state.dir"));
	if (state_store_open(path, NULL, &store, &err) != 0) {
		rc = cli_fail("ingest http", &err);
		goto out;
	}
	if ((dd = dedupe_create(store, o.dedupe_ttl_s * 1000, o.dedupe_sync)) == NULL) {
		fprintf(stderr, "idstream: ingest http: out of memory\n");
		goto out;
	}

	/* HR APIs: tokens from the environment or a file, never argv. */
	enrich_api_t apis[WEBHOOK_SOURCE_COUNT];
	memset(apis, 0, sizeof(apis));
	bool any_api = false;
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++) {
		if (o.api_url[s] == NULL)
			continue;
		if (secret_read(webhook_source_name((webhook_source_t)s), "HRAPI",
		                "TOKEN", o.api_token_file[s], &tokens[s], &err) != 0) {
			rc = cli_fail("ingest http", &err);
			goto out;
		}
		apis[s].base_url = o.api_url[s];
		apis[s].token = tokens[s];
		any_api = true;
	}
	if (any_api) {
		if ((en = enrich_create(apis, o.api_timeout_ms)) == NULL ||
		    (ob = outbox_open(store, &err)) == NULL) {
			rc = cli_fail("ingest http", &err);
			goto out;
		}
		if ((ob_rk = id_kafka_producer_create(
		         cli->cfg, "idstream-ingest-http-outbox", NULL, &err)) == NULL) {
			rc = cli_fail("ingest http", &err);
			goto out;
		}
	}

	http_server_opts_t so = {
	    .bind_addr = o.addr,
	    .port = (uint16_t)o.port,
	    .threads = o.threads,
	    .max_body_bytes = o.max_body,
	    .timestamp_window_s = o.window_s,
	    .publish_timeout_ms = o.publish_timeout_ms,
	    .tls_cert_file = o.tls_cert,
	    .tls_key_file = o.tls_key,
	    .topic = topic,
	    .producer = rk,
	    .dedupe = dd,
	    .enrich = en != NULL ? enrich_event : NULL,
	    .enrich_opaque = en,
	    .outbox = ob,
	    .store = store,
	    .outbox_producer = ob_rk,
	};
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++) {
		so.keys[s].keys = (const char *const *)sec.keys[s];
		so.keys[s].nkeys = sec.n[s];
	}
	if (http_server_start(&so, &srv, &err) != 0) {
		rc = cli_fail("ingest http", &err);
		goto out;
	}
	if (o.port_file != NULL) {
		FILE *pf = fopen(o.port_file, "w");
		if (pf == NULL || fprintf(pf, "%u\n", http_server_port(srv)) < 0 ||
		    fclose(pf) != 0) {
			fprintf(stderr, "idstream: ingest http: cannot write %s\n",
			        o.port_file);
			goto out;
		}
	}
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++)
		if (sec.n[s] > 0)
			id_log_info("ingest-http", "source %s enabled (%zu secret%s)",
			            webhook_source_name((webhook_source_t)s), sec.n[s],
			            sec.n[s] > 1 ? "s" : "");
	while (!cli_stop_requested) {
		struct timespec ts = {0, 200 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	http_server_stats_t st;
	http_server_get_stats(srv, &st);
	http_server_stop(srv);
	srv = NULL;
	printf(
	    "ingest http: %ld deliveries accepted (%ld events published), %ld queued in "
	    "the outbox, %ld ignored, %ld refused, %ld failed\n",
	    st.accepted, st.published, st.queued, st.ignored, st.refused, st.failed);
	rc = CLI_EXIT_OK;
out:
	http_server_stop(srv);
	outbox_close(ob);
	enrich_destroy(en);
	dedupe_destroy(dd);
	state_store_close(store);
	id_kafka_destroy(ob_rk);
	id_kafka_destroy(rk);
	secrets_wipe(&sec);
	for (int s = 0; s < WEBHOOK_SOURCE_COUNT; s++) {
		if (tokens[s] != NULL)
			memset(tokens[s], 0, strlen(tokens[s]));
		free(tokens[s]);
	}
	return rc;
}

/* ---- ingest csv --watch ------------------------------------------------------------ */

/* One dropped file through the same path as `ingest csv FILE`. */
static int watch_process(void *opaque, const char *path, char *summary,
                         size_t summary_len, id_err_t *err)
{
	cli_t *cli = opaque;
	ingest_csv_opts_t opts = {.file = path};
	ingest_csv_report_t r;
	int rc = ingest_csv_run(cli->cfg, &opts, &r, err);
	if (rc == 0)
		snprintf(summary, summary_len,
		         "%zu rows: %zu hires, %zu updates, %zu terminations, %zu "
		         "rehires, %zu unchanged; %zu events published",
		         r.rows, r.hires, r.updates, r.terminations, r.rehires,
		         r.unchanged, r.published);
	return rc;
}

static int ingest_watch_main(cli_t *cli, const char *dir, bool once, int64_t settle_ms)
{
	int rc = CLI_EXIT_FAIL;
	id_err_t err = {0};
	state_store_t *store = NULL;
	char path[4096];
	snprintf(path, sizeof(path), "%s/ingest-watch-%s",
	         id_config_str(cli->cfg, "state.dir"),
	         id_config_str(cli->cfg, "ingest.source"));
	if (state_store_open(path, NULL, &store, &err) != 0) {
		rc = cli_fail("ingest csv --watch", &err);
		goto out;
	}
	watch_opts_t wo = {
	    .dir = dir,
	    .pattern = id_config_str(cli->cfg, "ingest.watch.pattern"),
	    .settle_ms = settle_ms >= 0
	                     ? settle_ms
	                     : id_config_int(cli->cfg, "ingest.watch.settle_ms"),
	    .interval_ms = id_config_int(cli->cfg, "ingest.watch.interval_ms"),
	    .once = once,
	    .store = store,
	    .process = watch_process,
	    .opaque = cli,
	    .stop = &cli_stop_requested,
	};
	if (!once)
		id_log_info("ingest-watch", "watching %s (pattern %s)", dir, wo.pattern);
	watch_report_t wr;
	int wrc = watch_run(&wo, &wr, &err);
	printf("ingest csv --watch %s: %zu processed, %zu refused (in %s/failed), %zu "
	       "recovered after an interruption, %zu left waiting\n",
	       dir, wr.processed, wr.failed, dir, wr.recovered, wr.waiting);
	if (wrc != 0) {
		rc = cli_fail("ingest csv --watch", &err);
		goto out;
	}
	rc = once && (wr.failed > 0 || wr.waiting > 0) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	state_store_close(store);
	return rc;
}

/* ---- ingest poll bamboohr ---------------------------------------------------------- */

static void ingest_poll_usage(void)
{
	printf(
	    "usage: idstream ingest poll bamboohr [--once] [--interval SECONDS]\n"
	    "                                     [--api-url URL] [--api-key-file FILE]\n"
	    "                                     [--since ISO8601] [--api-timeout MS]\n"
	    "\n"
	    "Polls BambooHR's \"changed since\" API (GET "
	    "URL/v1/employees/changed?since=)\n"
	    "and publishes what changed to <prefix>.hr.events as the BambooHR webhooks\n"
	    "do: a new employee is a HIRE, status Inactive or a deleted record a\n"
	    "TERMINATE, status Active again a REHIRE, other changes an UPDATE with the\n"
	    "changed attributes (fields fetched from URL/v1/employees/ID). Only what\n"
	    "differs from what hr.events already holds is published, so a change the\n"
	    "webhook server already published is not published again. Each pass is one\n"
	    "Kafka transaction; the watermark (in <state.dir>/ingest-poll-bamboohr)\n"
	    "advances only after it committed. When the API or Kafka is unavailable the\n"
	    "pass fails with the reason, the watermark stays, and the next pass "
	    "retries.\n"
	    "Runs until SIGINT/SIGTERM.\n"
	    "\n"
	    "  --once               one pass, then exit (1 when it failed)\n"
	    "  --interval SECONDS   between passes (ingest.poll.interval_s, 300)\n"
	    "  --api-url URL        e.g. "
	    "https://api.bamboohr.com/api/gateway.php/COMPANY\n"
	    "                       (ingest.poll.bamboohr.api_url)\n"
	    "  --api-key-file FILE  the API key, first line "
	    "(ingest.poll.bamboohr.api_key_file);\n"
	    "                       or the environment variable "
	    "IDSTREAM_HRAPI_BAMBOOHR_TOKEN\n"
	    "  --since ISO8601      watermark of the very first pass\n"
	    "                       (ingest.poll.bamboohr.since; default: everything)\n"
	    "  --api-timeout MS     bound of one API call (ingest.poll.api_timeout_ms, "
	    "10000)\n");
}

static void poll_report_print(const poll_bamboohr_report_t *r)
{
	char since[40], next[40];
	poll_bamboohr_fmt_time(r->since_ms, since, sizeof(since));
	poll_bamboohr_fmt_time(r->next_since_ms, next, sizeof(next));
	printf("poll bamboohr since %s: %zu changed: %zu hires, %zu updates, %zu "
	       "terminations, %zu rehires, %zu already in the log, %zu handled before, "
	       "%zu ignored, %zu unusable; %zu events published; watermark %s\n",
	       since, r->changed, r->hires, r->updates, r->terminations, r->rehires,
	       r->unchanged, r->already, r->ignored, r->unusable, r->published, next);
	fflush(stdout);
}

static int ingest_poll_main(cli_t *cli, int argc, char **argv)
{
	int rc = CLI_EXIT_FAIL;
	id_err_t err = {0};
	const id_config_t *cfg = cli->cfg;
	bool once = false;
	int64_t interval_s = id_config_int(cfg, "ingest.poll.interval_s");
	long api_timeout_ms = (long)id_config_int(cfg, "ingest.poll.api_timeout_ms");
	const char *url = id_config_str(cfg, "ingest.poll.bamboohr.api_url");
	const char *key_file = id_config_str(cfg, "ingest.poll.bamboohr.api_key_file");
	const char *since = id_config_str(cfg, "ingest.poll.bamboohr.since");
	char *key = NULL;
	rd_kafka_t *producer = NULL, *consumer = NULL;
	state_store_t *store = NULL;
	poll_bamboohr_t *poller = NULL;

	if (argc >= 3 && cli_is_help(argv[2])) {
		ingest_poll_usage();
		return CLI_EXIT_OK;
	}
	if (argc < 3 || strcmp(argv[2], "bamboohr") != 0)
		return cli_usage_error("ingest poll", "expected a source: bamboohr");
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t n;
		if (cli_is_help(a)) {
			ingest_poll_usage();
			return CLI_EXIT_OK;
		}
		if (strcmp(a, "--once") == 0) {
			once = true;
			continue;
		}
		if (a[0] != '-' || v == NULL)
			return cli_usage_error(
			    "ingest poll", "%s \"%s\"",
			    a[0] == '-' ? "missing value for" : "unexpected argument", a);
		i++;
		if (strcmp(a, "--interval") == 0) {
			if (parse_u64(v, 86400, &n) != 0 || n == 0)
				return cli_usage_error(
				    "ingest poll", "--interval expects 1-86400 seconds");
			interval_s = (int64_t)n;
		} else if (strcmp(a, "--api-url") == 0) {
			url = v;
		} else if (strcmp(a, "--api-key-file") == 0) {
			key_file = v;
		} else if (strcmp(a, "--since") == 0) {
			since = v;
		} else if (strcmp(a, "--api-timeout") == 0) {
			if (parse_u64(v, 120000, &n) != 0 || n < 100)
				return cli_usage_error(
				    "ingest poll", "--api-timeout expects 100-120000 ms");
			api_timeout_ms = (long)n;
		} else {
			return cli_usage_error("ingest poll", "unknown option \"%s\"", a);
		}
	}
	/* The webhook server's BambooHR API settings serve as defaults. */
	if (*url == '\0')
		url = id_config_str(cfg, "ingest.http.bamboohr.api_url");
	if (*key_file == '\0')
		key_file = id_config_str(cfg, "ingest.http.bamboohr.api_token_file");
	if (*url == '\0')
		return cli_usage_error("ingest poll",
		                       "no BambooHR API URL: give --api-url or set "
		                       "ingest.poll.bamboohr.api_url");
	int64_t since_ms = 0;
	if (*since != '\0' && webhook_time_parse(since, &since_ms) != 0)
		return cli_usage_error(
		    "ingest poll", "--since expects an ISO 8601 time, got \"%s\"", since);
	if (secret_read("bamboohr", "HRAPI", "TOKEN", *key_file ? key_file : NULL, &key,
	                &err) != 0) {
		rc = cli_fail("ingest poll bamboohr", &err);
		goto out;
	}

	char topic[512], txn_id[512], path[4096];
	id_config_topic(cfg, "hr.events", topic, sizeof(topic));
	snprintf(txn_id, sizeof(txn_id), "%s.ingest.poll.bamboohr",
	         id_config_str(cfg, "topic.prefix"));
	snprintf(path, sizeof(path), "%s/ingest-poll-bamboohr",
	         id_config_str(cfg, "state.dir"));
	if (state_store_open(path, NULL, &store, &err) != 0 ||
	    (consumer = id_kafka_consumer_create(cfg, "idstream-ingest-poll-bamboohr",
	                                         NULL, NULL, NULL, &err)) == NULL ||
	    (producer = id_kafka_producer_create(cfg, "idstream-ingest-poll-bamboohr",
	                                         txn_id, &err)) == NULL) {
		rc = cli_fail("ingest poll bamboohr", &err);
		goto out;
	}
	poll_bamboohr_opts_t po = {
	    .api_url = url,
	    .api_key = key,
	    .api_timeout_ms = api_timeout_ms,
	    .initial_since_ms = since_ms,
	    .topic = topic,
	    .producer = producer,
	    .consumer = consumer,
	    .store = store,
	    .kafka_timeout_ms = id_config_int(cfg, "ingest.poll.kafka_timeout_ms"),
	};
	if (poll_bamboohr_create(&po, &poller, &err) != 0) {
		rc = cli_fail("ingest poll bamboohr", &err);
		goto out;
	}
	if (!once)
		id_log_info("ingest-poll", "polling %s every %lld s", url,
		            (long long)interval_s);
	for (;;) {
		poll_bamboohr_report_t r;
		id_err_clear(&err);
		int prc = poll_bamboohr_run(poller, &r, &err);
		if (prc == 0) {
			poll_report_print(&r);
		} else {
			cli_fail("ingest poll bamboohr", &err);
			fprintf(stderr,
			        "idstream: ingest poll bamboohr: nothing published, "
			        "watermark unchanged%s\n",
			        once ? "" : "; retrying at the next interval");
			id_log_error("ingest-poll", "pass failed: %s", err.msg);
			if (once || prc == ID_EFENCED)
				goto out;
		}
		if (once) {
			rc = CLI_EXIT_OK;
			goto out;
		}
		for (int64_t t = 0; t < interval_s * 10 && !cli_stop_requested; t++) {
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		if (cli_stop_requested)
			break;
	}
	rc = CLI_EXIT_OK;
out:
	poll_bamboohr_destroy(poller);
	id_kafka_destroy(producer);
	id_kafka_destroy(consumer);
	state_store_close(store);
	if (key != NULL)
		memset(key, 0, strlen(key));
	free(key);
	return rc;
}

int cmd_ingest(cli_t *cli, int argc, char **argv)
{
	if (argc >= 2 && cli_is_help(argv[1])) {
		ingest_usage();
		return CLI_EXIT_OK;
	}
	if (argc >= 2 && strcmp(argv[1], "csv") == 0)
		return ingest_csv_main(cli, argc, argv);
	if (argc >= 2 && strcmp(argv[1], "http") == 0)
		return ingest_http_main(cli, argc, argv);
	if (argc >= 2 && strcmp(argv[1], "poll") == 0)
		return ingest_poll_main(cli, argc, argv);
	return cli_usage_error("ingest", "expected a source kind: csv, http or poll");
}
