/*
 * names_sync.h — what the processor and the names arbiter of one `idstream
 * run` tell each other, so that `run --until-idle` stops only when every
 * name claim the processor made is answered and the answer is folded.
 *
 * The answers to claims arrive as input (NAME_GRANTED / NAME_DENIED on
 * hr.events), possibly after the processor looked idle.  So the processor,
 * once caught up, also waits until
 *   - the arbiter is caught up (every assigned partition of names.claims at
 *     its end, no transaction open),
 *   - for every partition of names.claims, the arbiter has decided and
 *     committed past the processor's last committed claim there
 *     (decided_next >= claims_next), and
 *   - for every partition of hr.events the processor holds, it has read past
 *     the arbiter's last committed answer there (answers_next).
 * All offsets come from delivery reports and commits, never from a clock.
 *
 * Threading: the processor thread writes claims_next and processor_done,
 * the arbiter thread the rest; everything except processor_done is read
 * and written under mu.
 */
#ifndef IDSTREAM_NAMES_SYNC_H
#define IDSTREAM_NAMES_SYNC_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "cmd/cli.h"

typedef struct names_sync {
	pthread_mutex_t mu;
	/* Offset after the processor's last committed claim, per partition
	 * of names.claims (0: none). */
	int64_t claims_next[STAGE_MAX_PARTITIONS];
	/* Next offset the arbiter has decided and committed, per partition of
	 * names.claims (-1: not assigned to it yet). */
	int64_t decided_next[STAGE_MAX_PARTITIONS];
	/* Offset after the arbiter's last committed answer, per partition of
	 * hr.events (0: none). */
	int64_t answers_next[STAGE_MAX_PARTITIONS];
	bool arbiter_caught_up;
	bool arbiter_stopped; /* the arbiter's loop returned (error or stop) */
	volatile sig_atomic_t processor_done; /* set as the processor returns */
} names_sync_t;

/* 0 or ID_ENOMEM.  fini after both loops have returned. */
int names_sync_init(names_sync_t *s);
void names_sync_fini(names_sync_t *s);

/*
 * processor_loop() (cli.h) that, with until_idle and ns != NULL, also waits
 * for the answers to its claims as described above, and sets
 * ns->processor_done when it returns.
 */
int processor_loop_names(const id_config_t *cfg, bool until_idle,
                         processor_stats_t *stats, stage_sync_t *sync, names_sync_t *ns,
                         id_err_t *err);

/*
 * names_arbiter_loop() (cli.h) publishing its progress to ns; with
 * until_idle and ns != NULL it stops once ns->processor_done is set (and
 * its transaction is committed), not when it is first caught up.
 */
int names_arbiter_loop_synced(const id_config_t *cfg, bool until_idle,
                              names_stats_t *stats, names_sync_t *ns, id_err_t *err);

#endif
