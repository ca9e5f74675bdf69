/*
 * run.c — `idstream run`: the processor, the names arbiter, the LDAP sink and
 * the indexer of one deployment in one process (small companies), each on
 * its own thread, running the very same loops as `idstream process`,
 * `idstream names arbiter`, `idstream sink ldap` and `idstream index`.  The
 * arbiter always runs: it costs one idle consumer when the policy claims no
 * names.
 *
 * With --until-idle the processor stops once caught up and every name claim
 * it made is answered and the answer folded (cmd/names_sync.h: an answer is
 * input that may arrive after the processor first looked idle), then the
 * arbiter stops, the sink stops once it has applied everything the
 * processor committed, then the indexer stops once it has indexed every
 * topic up to its end as of that moment (so it covers all the processor,
 * the arbiter and the sink produced); a summary follows.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/index.h"
#include "cmd/names_sync.h"
#include "common/log.h"

typedef struct run_stage {
	const id_config_t *cfg;
	bool until_idle;
	stage_sync_t *sync;
	names_sync_t *names;
	processor_stats_t pstats;
	names_stats_t nstats;
	sink_stats_t sstats;
	index_stats_t istats;
	volatile sig_atomic_t *upstream_done; /* indexer: processor and sink done */
	id_err_t err;
	int rc;
} run_stage_t;

static void *run_processor(void *arg)
{
	run_stage_t *st = arg;
	st->rc = processor_loop_names(st->cfg, st->until_idle, &st->pstats, st->sync,
	                              st->names, &st->err);
	if (st->rc != 0) {
		id_log_error("run", "processor stopped: %s", st->err.msg);
		cli_stop_requested = 1; /* one stage down means the deployment is down */
	}
	return NULL;
}

static void *run_names(void *arg)
{
	run_stage_t *st = arg;
	st->rc = names_arbiter_loop_synced(st->cfg, st->until_idle, &st->nstats,
	                                   st->names, &st->err);
	if (st->rc != 0) {
		id_log_error("run", "names arbiter stopped: %s", st->err.msg);
		cli_stop_requested = 1;
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
	       "Runs the processor, the names arbiter and the ldap sink together in one\n"
	       "process, with the same code, state and consumer groups as `idstream "
	       "process`,\n"
	       "`idstream names arbiter` and `idstream sink ldap`.\n"
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
	names_sync_t nsync;
	if (names_sync_init(&nsync) != 0)
		return cli_fail("cannot initialise the names sync", NULL);
	run_stage_t proc = {
	    .cfg = cli->cfg, .until_idle = until_idle, .sync = &sync, .names = &nsync};
	run_stage_t names = {.cfg = cli->cfg, .until_idle = until_idle, .names = &nsync};
	run_stage_t sink = {.cfg = cli->cfg, .until_idle = until_idle, .sync = &sync};
	volatile sig_atomic_t upstream_done = 0;
	run_stage_t idx = {.cfg = cli->cfg,
	                   .until_idle = until_idle,
	                   .sync = &sync,
	                   .upstream_done = &upstream_done};
	pthread_t tp, tn, ts, ti;
	if (pthread_create(&tn, NULL, run_names, &names) != 0) {
		names_sync_fini(&nsync);
		return cli_fail("cannot start the names arbiter thread", NULL);
	}
	if (pthread_create(&tp, NULL, run_processor, &proc) != 0) {
		cli_stop_requested = 1;
		pthread_join(tn, NULL);
		names_sync_fini(&nsync);
		return cli_fail("cannot start the processor thread", NULL);
	}
	if (pthread_create(&ts, NULL, run_sink, &sink) != 0) {
		cli_stop_requested = 1;
		pthread_join(tp, NULL);
		pthread_join(tn, NULL);
		names_sync_fini(&nsync);
		return cli_fail("cannot start the sink thread", NULL);
	}
	if (pthread_create(&ti, NULL, run_index, &idx) != 0) {
		cli_stop_requested = 1;
		pthread_join(tp, NULL);
		pthread_join(tn, NULL);
		pthread_join(ts, NULL);
		names_sync_fini(&nsync);
		return cli_fail("cannot start the indexer thread", NULL);
	}
	pthread_join(tp, NULL);
	pthread_join(tn, NULL);
	pthread_join(ts, NULL);
	/* Everything the three produced is committed: the indexer may now
	 * take the topics' ends as its goal. */
	upstream_done = 1;
	pthread_join(ti, NULL);
	names_sync_fini(&nsync);
	processor_stats_print(&proc.pstats);
	if (names.nstats.granted + names.nstats.denied + names.nstats.released +
	        names.nstats.reserved >
	    0)
		names_stats_print(&names.nstats);
	sink_stats_print(id_config_str(cli->cfg, "sink.ldap.target"), "ldap",
	                 &sink.sstats);
	if (proc.rc != 0)
		return cli_fail("processor", &proc.err);
	if (names.rc != 0)
		return cli_fail("names arbiter", &names.err);
	if (sink.rc != 0)
		return cli_fail("ldap sink", &sink.err);
	if (idx.rc != 0)
		return cli_fail("indexer", &idx.err);
	return CLI_EXIT_OK;
}
