/*
 * main.c — the idstream binary: global options, configuration loading and
 * dispatch to the subcommands in cmd/.  Every subcommand has --help.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/log.h"

#ifndef IDSTREAM_VERSION
#define IDSTREAM_VERSION "0.1.0"
#endif

volatile sig_atomic_t cli_stop_requested = 0;

static void on_signal(int sig)
{
	(void)sig;
	cli_stop_requested = 1;
}

static const struct {
	const char *name;
	int (*fn)(cli_t *, int, char **);
	const char *summary;
} commands[] = {
    {"topics", cmd_topics, "create the deployment's Kafka topics"},
    {"ingest", cmd_ingest,
     "publish HR changes (export files, signed webhooks) to hr.events"},
    {"process", cmd_process, "fold HR events into desired identities"},
    {"sink", cmd_sink, "apply desired identities to a target (ldap, ad, scim)"},
    {"run", cmd_run, "run processor and sinks together in one process"},
    {"index", cmd_index,
     "index where each employee's records sit, for history/why/as-of"},
    {"history", cmd_history, "show an employee's events, versions and operations"},
    {"why", cmd_why, "explain each attribute of an account: operation, rule, HR event"},
    {"as-of", cmd_asof, "the desired identities as they were at a past instant"},
    {"plan", cmd_plan, "what a new policy would change, computed from the whole history"},
    {"apply", cmd_apply,
     "deploy a planned policy if the plan still holds; verify the outcome"},
    {"held", cmd_held, "list the disables/deletes a sink's mass-change guard holds"},
    {"approve", cmd_approve, "apply what a sink's mass-change guard holds"},
    {"reject", cmd_reject, "drop what a sink's mass-change guard holds"},
    {"reconcile", cmd_reconcile,
     "report (--repair: undo) drift made by hand on a target"},
    {"report", cmd_report, "write an HTML page of an employee's timeline and identity"},
    {"replay", cmd_replay, "check that replaying hr.events reproduces identity.desired"},
    {"config", cmd_config, "print the effective configuration or its documentation"},
    {"policy", cmd_policy, "check or deploy a Lua identity policy"},
    {"names", cmd_names,
     "unique usernames/e-mails: the claims arbiter, import of existing names, show"},
};

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: idstream [--config FILE] [--set KEY=VALUE]... COMMAND [ARGS]\n"
	        "\n"
	        "Keeps identity providers in step with the HR system, event by event.\n"
	        "\n"
	        "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(
	    out,
	    "\n"
	    "Global options:\n"
	    "  --config FILE     configuration file (key = value lines); see "
	    "CONFIGURATION.md\n"
	    "  --set KEY=VALUE   override one option (repeatable; not for secrets)\n"
	    "  --version         print the version\n"
	    "  -h, --help        this help; `idstream COMMAND --help` for a command\n"
	    "\n"
	    "Environment: IDSTREAM_<OPTION> overrides an option (e.g. "
	    "IDSTREAM_TOPIC_PREFIX);\n"
	    "IDSTREAM_CONFIG names the configuration file when --config is not given.\n");
}

bool cli_is_help(const char *s)
{
	return strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0;
}

int cli_fail(const char *what, const id_err_t *err)
{
	if (err != NULL && err->code != 0)
		fprintf(stderr, "idstream: %s: %s\n", what,
		        err->msg[0] ? err->msg : id_err_str(err->code));
	else
		fprintf(stderr, "idstream: %s\n", what);
	return CLI_EXIT_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "idstream %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'idstream %s --help'.\n", cmd);
	return CLI_EXIT_USAGE;
}

int main(int argc, char **argv)
{
	int rc = CLI_EXIT_FAIL;
	id_err_t err = {0};
	cli_t cli = {.cfg = NULL, .prog = "idstream"};
	const char *config_path = getenv("IDSTREAM_CONFIG");
	const char *sets[64];
	int nsets = 0, i = 1;

	/* --config and --set are global and may appear anywhere, so
	 * `idstream process --config x.conf` works as well as
	 * `idstream --config x.conf process`.  They are taken out of argv. */
	char **args = calloc((size_t)argc + 1, sizeof(*args));
	int nargs = 0;
	if (args == NULL)
		return cli_fail("out of memory", NULL);
	for (int a = 0; a < argc; a++) {
		if (strcmp(argv[a], "--config") == 0 && a + 1 < argc) {
			config_path = argv[++a];
		} else if (strncmp(argv[a], "--config=", 9) == 0) {
			config_path = argv[a] + 9;
		} else if (strcmp(argv[a], "--set") == 0 && a + 1 < argc) {
			if (nsets == 64) {
				free(args);
				return cli_usage_error("", "too many --set options");
			}
			sets[nsets++] = argv[++a];
		} else {
			args[nargs++] = argv[a];
		}
	}
	argc = nargs;
	argv = args;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (cli_is_help(argv[i])) {
			usage(stdout);
			rc = CLI_EXIT_OK;
			goto out;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("idstream %s\n", IDSTREAM_VERSION);
			rc = CLI_EXIT_OK;
			goto out;
		} else {
			fprintf(stderr, "idstream: unknown option %s\n\n", argv[i]);
			usage(stderr);
			rc = CLI_EXIT_USAGE;
			goto out;
		}
	}
	if (i >= argc) {
		usage(stderr);
		rc = CLI_EXIT_USAGE;
		goto out;
	}

	cli.cfg = id_config_create();
	if (cli.cfg == NULL) {
		rc = cli_fail("out of memory", NULL);
		goto out;
	}
	if (config_path != NULL && id_config_load_file(cli.cfg, config_path, &err) != 0) {
		rc = cli_fail("configuration", &err);
		goto out;
	}
	if (id_config_load_env(cli.cfg, &err) != 0) {
		rc = cli_fail("configuration", &err);
		goto out;
	}
	for (int s = 0; s < nsets; s++) {
		char key[256];
		const char *eq = strchr(sets[s], '=');
		if (eq == NULL || (size_t)(eq - sets[s]) >= sizeof(key)) {
			rc = cli_usage_error("", "--set expects KEY=VALUE, got \"%s\"",
			                     sets[s]);
			goto out;
		}
		memcpy(key, sets[s], (size_t)(eq - sets[s]));
		key[eq - sets[s]] = '\0';
		if (id_config_set(cli.cfg, key, eq + 1, &err) != 0) {
			rc = cli_fail("--set", &err);
			goto out;
		}
	}

	/* The log threshold follows the final configuration, --set included. */
	id_log_level_t level;
	if (id_log_level_parse(id_config_str(cli.cfg, "log.level"), &level) == 0)
		id_log_set_level(level);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* libldap may write to a socket the server closed; that must be an
	 * error return, not the death of the process. */
	signal(SIGPIPE, SIG_IGN);

	for (size_t c = 0; c < sizeof(commands) / sizeof(*commands); c++) {
		if (strcmp(commands[c].name, argv[i]) == 0) {
			rc = commands[c].fn(&cli, argc - i, argv + i);
			goto out;
		}
	}
	fprintf(stderr, "idstream: unknown command \"%s\"\n\n", argv[i]);
	usage(stderr);
	rc = CLI_EXIT_USAGE;
out:
	id_config_destroy(cli.cfg);
	free(args);
	return rc;
}
