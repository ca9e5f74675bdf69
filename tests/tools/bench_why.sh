#!/bin/sh
# bench_why.sh — latency of `why` and `history` with the per-employee index
# at scale: gen_events writes N events of E employees into hr.events, the
# processor folds them, `idstream index` indexes them, then `why` and
# `history` are timed for K random employees (wall time of the command,
# process start included).  Prints p50/p99 of each.
#
#   sh tests/tools/bench_why.sh [EVENTS [EMPLOYEES [SAMPLES]]]
#        defaults 1000000 50000 100
#
# Starts its own Kafka (scripts/services.sh) in run/bench-why on
# IDSTREAM_KAFKA_PORT (default 27510) and stops it by PID on exit.  Uses
# build/idstream and build/tools/gen_events (`make` and `make unit`).
set -eu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-1000000} E=${2:-50000} K=${3:-100}
export IDSTREAM_RUN="$REPO/run/bench-why"
export IDSTREAM_KAFKA_PORT=${IDSTREAM_KAFKA_PORT:-27510}
export IDSTREAM_KAFKA_CTRL_PORT=$((IDSTREAM_KAFKA_PORT + 1))
BIN=$REPO/build/idstream GEN=$REPO/build/tools/gen_events W=$IDSTREAM_RUN/work
trap 'sh "$REPO/scripts/services.sh" stop kafka >/dev/null 2>&1 || true' EXIT INT TERM
rm -rf "$IDSTREAM_RUN" && mkdir -p "$W"
sh "$REPO/scripts/services.sh" start kafka >&2
cat >"$W/conf" <<CONF
topic.prefix = bw
topic.replication_factor = 1
state.dir = $W/state
kafka.bootstrap.servers = 127.0.0.1:$IDSTREAM_KAFKA_PORT
CONF
ids() { "$BIN" --config "$W/conf" "$@"; }
ms() { date +%s%3N; }
ids topics create >/dev/null
t0=$(ms); "$GEN" --brokers "127.0.0.1:$IDSTREAM_KAFKA_PORT" --topic bw.hr.events \
	--events "$N" --employees "$E" >&2
t1=$(ms); ids process --until-idle >/dev/null 2>&1
t2=$(ms); ids index --until-idle >&2
t3=$(ms)
echo "gen ${N}/${E}: $((t1 - t0)) ms, process: $((t2 - t1)) ms, index: $((t3 - t2)) ms"
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if(i<1)i=1; print a[i]}'; }
for cmd in why history; do
	: >"$W/$cmd.ms"
	i=0
	while [ $i -lt "$K" ]; do
		emp=E$((100001 + ($(od -An -N4 -tu4 /dev/urandom) % E)))
		a=$(ms); ids $cmd "$emp" >/dev/null 2>&1 || true; b=$(ms)
		echo $((b - a)) >>"$W/$cmd.ms"
		i=$((i + 1))
	done
	echo "$cmd latency over $K employees: p50 $(pct 50 <"$W/$cmd.ms") ms, p99 $(pct 99 <"$W/$cmd.ms") ms"
done
ids --set log.level=debug history E100001 2>&1 >/dev/null | grep 'records read' || true
