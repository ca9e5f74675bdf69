#!/bin/sh
# bench_why.sh — latency of `why`, `history` and `as-of TIME EMP` with the
# per-employee index at scale: gen_events writes N events of E employees into
# hr.events, the processor folds them, `idstream index` indexes them, then
# each command is timed for K random employees (wall time of the command,
# process start included).  Prints p50/p99 of each in three passes: with
# the index store free; while an `idstream index` keeps it open (as
# `idstream run` does; the commands read it as a secondary instance); and
# live, while N/5 more events are being processed and indexed.
#
#   sh tests/tools/bench_why.sh [EVENTS [EMPLOYEES [SAMPLES]]]
#        defaults 1000000 50000 100
#
# Environment:
#   IDSTREAM_BUILD           build folder of idstream and tools (default build)
#   IDSTREAM_KAFKA_PORT      Kafka port (default 27510; controller port + 1)
#   IDSTREAM_BENCH_WHY_RUN   run folder (default <repo>/run/bench-why)
#   IDSTREAM_BENCH_WHY_REUSE 1: keep the run folder's Kafka data and state
#                            from an earlier run of the same N/E and only
#                            time the queries
#
# Starts its own Kafka (scripts/services.sh) in the run folder and stops it
# (and the background indexer) by PID on exit.  Needs `make unit`
# (idstream and tools/gen_events of the build).
set -eu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-1000000} E=${2:-50000} K=${3:-100}
BUILD=${IDSTREAM_BUILD:-build}
export IDSTREAM_RUN="${IDSTREAM_BENCH_WHY_RUN:-$REPO/run/bench-why}"
export IDSTREAM_KAFKA_PORT=${IDSTREAM_KAFKA_PORT:-27510}
export IDSTREAM_KAFKA_CTRL_PORT=$((IDSTREAM_KAFKA_PORT + 1))
BIN=$REPO/$BUILD/idstream GEN=$REPO/$BUILD/tools/gen_events W=$IDSTREAM_RUN/work
IDXPID= PROCPID=
cleanup() {
	for pid in $PROCPID $IDXPID; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	sh "$REPO/scripts/services.sh" stop kafka >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM
reuse=0
if [ "${IDSTREAM_BENCH_WHY_REUSE:-0}" = 1 ] && [ -f "$W/done-$N-$E" ]; then
	reuse=1
else
	rm -rf "$IDSTREAM_RUN" && mkdir -p "$W"
fi
sh "$REPO/scripts/services.sh" start kafka >&2
cat >"$W/conf" <<CONF
topic.prefix = bw
topic.replication_factor = 1
state.dir = $W/state
kafka.bootstrap.servers = 127.0.0.1:$IDSTREAM_KAFKA_PORT
CONF
ids() { "$BIN" --config "$W/conf" "$@"; }
ms() { date +%s%3N; }
if [ $reuse = 0 ]; then
	ids topics create >/dev/null
	t0=$(ms)
	"$GEN" --brokers "127.0.0.1:$IDSTREAM_KAFKA_PORT" --topic bw.hr.events \
		--events "$N" --employees "$E" >&2
	t1=$(ms)
	ids process --until-idle >/dev/null 2>&1
	t2=$(ms)
	ids index --until-idle >&2
	t3=$(ms)
	echo "gen ${N}/${E}: $((t1 - t0)) ms, process: $((t2 - t1)) ms, index: $((t3 - t2)) ms"
	: >"$W/done-$N-$E"
fi
# Let the broker finish what the bulk load left it (log flushes, cleanup)
# so the first pass measures queries, not the load's aftermath.
sleep 5
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if(i<1)i=1; print a[i]}'; }
# The same employees for every command and pass.
i=0
: >"$W/emps"
while [ $i -lt "$K" ]; do
	echo "E$((100001 + ($(od -An -N4 -tu4 /dev/urandom) % E)))" >>"$W/emps"
	i=$((i + 1))
done
measure() { # label
	label=$1
	for cmd in why history as-of; do
		: >"$W/$cmd.ms"
		fails=0
		while read -r emp; do
			if [ "$cmd" = as-of ]; then
				set -- as-of 2030-01-01 "$emp"
			else
				set -- "$cmd" "$emp"
			fi
			a=$(ms)
			ids "$@" >/dev/null 2>&1 || fails=$((fails + 1))
			b=$(ms)
			echo $((b - a)) >>"$W/$cmd.ms"
		done <"$W/emps"
		echo "$label: $cmd latency over $K employees: p50 $(pct 50 <"$W/$cmd.ms") ms," \
			"p99 $(pct 99 <"$W/$cmd.ms") ms, max $(pct 100 <"$W/$cmd.ms") ms" \
			"($fails failed)"
	done
	emp=$(head -1 "$W/emps")
	ids --set log.level=debug history "$emp" 2>&1 >/dev/null |
		sed -n 's/.*"msg":"\(employee .*records read.*\)".*/  \1/p' || true
}
measure "index free"
# An indexer that keeps running holds the store, like `idstream run`.
"$BIN" --config "$W/conf" index >"$W/index-bg.log" 2>&1 &
IDXPID=$!
sleep 3
measure "index held by a running indexer"
# Live: more events arrive while the processor and the indexer work on
# them (both compete with the queries for the machine's cores).
"$BIN" --config "$W/conf" process >"$W/process-bg.log" 2>&1 &
PROCPID=$!
"$GEN" --brokers "127.0.0.1:$IDSTREAM_KAFKA_PORT" --topic bw.hr.events \
	--events $((N / 5)) --employees "$E" --seed 2 >&2
measure "live: $((N / 5)) new events being processed and indexed"
kill "$PROCPID" 2>/dev/null || true
wait "$PROCPID" 2>/dev/null || true
PROCPID=
