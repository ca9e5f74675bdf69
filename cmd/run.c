/*
 * run.c — `idstream run`: the processor, the LDAP sink and the indexer of one
 * deployment in one process (small companies), each on its own thread,
 * running the very same loops as `idstream process`, `idstream sink ldap`
 * and `idstream index`.
 *
 * With --until-idle the processor stops once caught up, then the sink stops
 * once it has applied everything the processor committed, then the indexer
 * stops once it has indexed every topic up to its end as of that moment
 * (so it covers all the processor and the sink produced); a summary follows.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/index.h"
#include "common/log.h"

typedef struct run_stage {
	const id_config_t *cfg;
	bool until_idle;
	stage_sync_t *sync;
	processor_stats_t pstats;
	sink_stats_t sstats;
	index_stats_t istats;
	volatile sig_atomic_t *upstream_done; /* indexer: processor and sink done */
	id_err_t err;
	int rc;
} run_stage_t;

static void *run_processor(void *arg)
{
	run_stage_t *st = arg;
	st->rc = processor_loop(st->cfg, st->until_idle, &st->pstats, st->sync, &st->err);
	if (st->rc != 0) {
		id_log_error("run", "processor stopped: %s", st->err.msg);
		cli_stop_requested = 1; /* one stage down means the deployment is down */
	}
	return NULL;
}

static void *run_sink(void *arg)
{
	run_stage_t *st = arg;
	st->rc =
	    sink_loop(st->cfg, "ldap", st->until_idle, &st->sstats, st->sync, &st->err);
	if (st->rc != 0) {
		id_log_error("run", "ldap sink stopped: %s", st->err.msg);
		cli_stop_requested = 1;
	}
	return NULL;
}

static void *run_index(void *arg)
{
	run_stage_t *st = arg;
	st->rc =
	    index_loop(st->cfg, st->until_idle, st->upstream_done, &st->istats, &st->err);
	if (st->rc != 0) {
		id_log_error("run", "indexer stopped: %s", st->err.msg);
		cli_stop_requested = 1;
	}
	return NULL;
}

static void run_usage(void)
{
	printf("usage: idstream run [--until-idle]\n"
	       "\n"
	       "Runs the processor and the ldap sink together in one process, with the "
	       "same\n"
	       "code, state and consumer groups as `idstream process` and `idstream sink "
	       "ldap`.\n"
	       "\n"
	       "  --until-idle   stop once everything ingested so far is applied, and "
	       "print a\n"
	       "                 summary (accounts created / updated / disabled)\n");
}

int cmd_run(cli_t *cli, int argc, char **argv)
{
	bool until_idle = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			run_usage();
			return CLI_EXIT_OK;
		} else if (strcmp(argv[i], "--until-idle") == 0) {
			until_idle = true;
		} else {
			return cli_usage_error("run", "unknown argument \"%s\"", argv[i]);
		}
	}
	stage_sync_t sync = {0};
	run_stage_t proc = {.cfg = cli->cfg, .until_idle = until_idle, .sync = &sync};
	run_stage_t sink = {.cfg = cli->cfg, .until_idle = until_idle, .sync = &sync};
	volatile sig_atomic_t upstream_done = 0;
	run_stage_t idx = {.cfg = cli->cfg,
	                   .until_idle = until_idle,
	                   .sync = &sync,
	                   .upstream_done = &upstream_done};
	pthread_t tp, ts, ti;
	if (pthread_create(&tp, NULL, run_processor, &proc) != 0)
		return cli_fail("cannot start the processor thread", NULL);
	if (pthread_create(&ts, NULL, run_sink, &sink) != 0) {
		cli_stop_requested = 1;
		pthread_join(tp, NULL);
		return cli_fail("cannot start the sink thread", NULL);
	}
	if (pthread_create(&ti, NULL, run_index, &idx) != 0) {
		cli_stop_requested = 1;
		pthread_join(tp, NULL);
		pthread_join(ts, NULL);
		return cli_fail("cannot start the indexer thread", NULL);
	}
	pthread_join(tp, NULL);
	pthread_join(ts, NULL);
	/* Everything the two produced is committed: the indexer may now take
	 * the topics' ends as its goal. */
	upstream_done = 1;
	pthread_join(ti, NULL);
	processor_stats_print(&proc.pstats);
	sink_stats_print(id_config_str(cli->cfg, "sink.ldap.target"), "ldap",
	                 &sink.sstats);
	if (proc.rc != 0)
		return cli_fail("processor", &proc.err);
	if (sink.rc != 0)
		return cli_fail("ldap sink", &sink.err);
	if (idx.rc != 0)
		return cli_fail("indexer", &idx.err);
	return CLI_EXIT_OK;
}
