/*
 * cli.h — what the subcommands of the idstream binary share: the loaded
 * configuration, the stop flag set by SIGINT/SIGTERM, and the entry point of
 * each subcommand.  cmd/ holds the I/O shells around the pure cores: they
 * parse arguments, open Kafka/RocksDB/LDAP handles and drive the loops.
 *
 * Exit codes: 0 success, 1 failure, 64 usage error (EX_USAGE).
 */
#ifndef IDSTREAM_CLI_H
#define IDSTREAM_CLI_H

#include <signal.h>
#include <stdbool.h>

#include "common/config.h"

#define CLI_EXIT_OK    0
#define CLI_EXIT_FAIL  1
#define CLI_EXIT_USAGE 64

/* The binary's one global: set by the SIGINT/SIGTERM handler, read by loops. */
extern volatile sig_atomic_t cli_stop_requested;

typedef struct cli {
	id_config_t *cfg;
	const char *prog; /* "idstream" */
} cli_t;

/* Each returns an exit code.  argv[0] is the subcommand name. */
int cmd_topics(cli_t *cli, int argc, char **argv);
int cmd_ingest(cli_t *cli, int argc, char **argv);
int cmd_process(cli_t *cli, int argc, char **argv);
int cmd_sink(cli_t *cli, int argc, char **argv);
int cmd_run(cli_t *cli, int argc, char **argv);
int cmd_history(cli_t *cli, int argc, char **argv);
int cmd_replay(cli_t *cli, int argc, char **argv);
int cmd_plan(cli_t *cli, int argc, char **argv);
int cmd_apply(cli_t *cli, int argc, char **argv);
int cmd_index(cli_t *cli, int argc, char **argv);
int cmd_report(cli_t *cli, int argc, char **argv);
int cmd_held(cli_t *cli, int argc, char **argv);
int cmd_approve(cli_t *cli, int argc, char **argv);
int cmd_reject(cli_t *cli, int argc, char **argv);
int cmd_reconcile(cli_t *cli, int argc, char **argv);
int cmd_why(cli_t *cli, int argc, char **argv);
int cmd_asof(cli_t *cli, int argc, char **argv);
int cmd_config(cli_t *cli, int argc, char **argv);
int cmd_policy(cli_t *cli, int argc, char **argv);
int cmd_names(cli_t *cli, int argc, char **argv);

/* True when s is "-h" or "--help". */
bool cli_is_help(const char *s);
/* Prints "idstream: <msg>" (and the error detail) to stderr; returns CLI_EXIT_FAIL. */
int cli_fail(const char *what, const id_err_t *err);
/* Prints a usage error and the hint to use --help; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Stage loops shared by `process`, `sink ldap` and `run`.  Each runs until
 * cli_stop_requested is set or, with until_idle, until it has caught up
 * (see the functions' own comments).  The processor and sink keep counters
 * for the summary that `run` prints.
 */
typedef struct processor_stats {
	long events;   /* input events folded */
	long replayed; /* events re-derived after a restart without output */
	long emitted;  /* desired identity versions produced */
	long rejected; /* undecodable or refused events */
	long txns;     /* committed transactions */
	long timers;   /* REEVALUATE events published for due timers */
} processor_stats_t;

typedef struct sink_stats {
	long seen;     /* desired versions consumed */
	long skipped;  /* already applied (version ≤ recorded) */
	long created;  /* accounts created */
	long updated;  /* accounts changed (attributes, rename, move, groups) */
	long disabled; /* accounts disabled */
	long enabled;  /* accounts re-enabled */
	long noop;     /* nothing to do: target already right */
	long failed;   /* failed (published as FAILED results) */
	long relinked; /* manager attribute set once the manager's entry existed */
	long held;     /* disables/deletes held by the mass-change guard */
	long ldap_ops; /* write requests sent to the target */
} sink_stats_t;

#define STAGE_MAX_PARTITIONS 4096

/* Shared by the threads of `run --until-idle` so the sink knows when the
 * processor has caught up and how far it must read to see all its output. */
typedef struct stage_sync {
	volatile sig_atomic_t processor_idle; /* processor caught up and stopped */
	/* Offset after the last desired identity the processor produced, per
	 * partition of identity.desired; written before processor_idle. */
	int64_t desired_next[STAGE_MAX_PARTITIONS];
} stage_sync_t;

int processor_loop(const id_config_t *cfg, bool until_idle, processor_stats_t *stats,
                   stage_sync_t *sync, id_err_t *err);
struct mapping;
/*
 * The built-in mapping configured by the mapping.* options (mail domain and
 * lifecycle timing).  Every stage that folds (process, replay, plan) builds
 * it here, so they agree.  NULL with err set on a bad option.
 * Ownership: caller frees with mapping_destroy().
 */
struct mapping *processor_builtin_mapping(const id_config_t *cfg, id_err_t *err);
/* kind: a target kind of cmd/sink_targets.c ("ldap", ...). */
int sink_loop(const id_config_t *cfg, const char *kind, bool until_idle,
              sink_stats_t *stats, stage_sync_t *sync, id_err_t *err);

/*
 * The names arbiter (cmd/names.c): decides the claims on names.claims and
 * answers them on hr.events, exactly once, until cli_stop_requested or, with
 * until_idle, until every assigned partition is caught up.  stats must be
 * zeroed by the caller; one thread.
 */
typedef struct names_stats {
	long granted;  /* CLAIMs answered NAME_GRANTED */
	long denied;   /* CLAIMs answered NAME_DENIED (invalid ones included) */
	long reserved; /* RESERVEs that reserved a name */
	long released; /* RELEASEs that released a name */
	long ignored;  /* RESERVE/RELEASE that changed nothing */
	long replayed; /* claims re-decided after a restart without output */
	long rejected; /* undecodable or invalid claims */
	long txns;     /* committed transactions */
} names_stats_t;

int names_arbiter_loop(const id_config_t *cfg, bool until_idle, names_stats_t *stats,
                       id_err_t *err);
void names_stats_print(const names_stats_t *st);

/* One-line summaries printed by process, sink and run. */
void sink_stats_print(const char *target, const char *kind, const sink_stats_t *st);
void processor_stats_print(const processor_stats_t *st);

#endif
