/*
 * config.c (cmd) — `idstream config docs|show|check`.  The configuration
 * itself is loaded by main.c (file, environment, --set) before any command
 * runs, so a bad file already fails there with file:line.
 */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"

static void config_usage(void)
{
	printf(
	    "usage: idstream [--config FILE] config docs|show|check\n"
	    "\n"
	    "  docs    print the documentation of every option (CONFIGURATION.md)\n"
	    "  show    print the effective configuration (defaults, file, environment,\n"
	    "          --set) as key = value lines; secrets are never option values\n"
	    "  check   load the configuration and report the first error, if any\n");
}

int cmd_config(cli_t *cli, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			config_usage();
			return CLI_EXIT_OK;
		}
	}
	if (argc < 2) {
		config_usage();
		return CLI_EXIT_USAGE;
	}
	if (argc > 2)
		return cli_usage_error("config", "unexpected argument \"%s\"", argv[2]);
	if (strcmp(argv[1], "docs") == 0) {
		id_config_write_docs(stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "show") == 0) {
		id_config_write(cli->cfg, stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "check") == 0) {
		printf("configuration ok\n");
		return CLI_EXIT_OK;
	}
	return cli_usage_error("config", "unknown subcommand \"%s\"", argv[1]);
}
