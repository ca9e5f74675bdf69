/*
 * ingest.c (cmd) — `idstream ingest csv FILE [--force] [--dry-run]`:
 * argument parsing and the report around ingest_csv_run().
 */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "ingest/ingest_csv.h"

static void ingest_usage(void)
{
	printf(
	    "usage: idstream ingest csv FILE [--force] [--dry-run]\n"
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
	    "Required columns: employee_id, first_name, last_name. Known optional "
	    "columns:\n"
	    "preferred_name, title, department, location, manager_id, employment_type,\n"
	    "start_date (YYYY-MM-DD). Other columns are published as attributes too.\n");
}

int cmd_ingest(cli_t *cli, int argc, char **argv)
{
	ingest_csv_opts_t opts = {0};
	if (argc >= 2 && cli_is_help(argv[1])) {
		ingest_usage();
		return CLI_EXIT_OK;
	}
	if (argc < 2 || strcmp(argv[1], "csv") != 0)
		return cli_usage_error("ingest", "expected a source kind: csv");
	for (int i = 2; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			ingest_usage();
			return CLI_EXIT_OK;
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
