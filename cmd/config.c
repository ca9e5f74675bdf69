/*
 * config.c (cmd) — `idstream config docs|show`.
 */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"

int cmd_config(cli_t *cli, int argc, char **argv)
{
	(void)cli;
	if (argc < 2 || cli_is_help(argv[1])) {
		printf("usage: idstream config docs\n"
		       "\n"
		       "  docs   print the documentation of every option (CONFIGURATION.md)\n");
		return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "docs") == 0) {
		id_config_write_docs(stdout);
		return CLI_EXIT_OK;
	}
	return cli_usage_error("config", "unknown subcommand \"%s\"", argv[1]);
}
