# test_scale.sh — exactly-once with three processor processes sharing one
# 12-partition hr.events: partitions rebalance as processes join; one is
# killed with SIGKILL mid-stream and its partitions move to the others,
# which rebuild those partitions' state from the log before going on.
# Afterwards every employee has versions 1..n exactly once, and replaying
# hr.events from offset 0 reproduces identity.desired byte for byte.
. "$IDSTREAM_REPO/tests/lib.sh"

GEN=$(dirname "$IDSTREAM_BIN")/tools/gen_export
[ -x "$GEN" ] || fail "missing $GEN (make unit builds it)"
write_config 'topic.partitions = 12' 'processor.batch_max = 100' 'processor.batch_ms = 50'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
DESIRED=$T_PREFIX.identity.desired

"$GEN" --employees 3000 --seed 7 >"$T_DIR/a.csv"
"$GEN" --seed 7 --changes-from "$T_DIR/a.csv" >"$T_DIR/b.csv"
"$GEN" --seed 8 --changes-from "$T_DIR/b.csv" >"$T_DIR/c.csv"
ids ingest csv "$T_DIR/a.csv" >/dev/null
ids ingest csv --force "$T_DIR/b.csv" >/dev/null
ids ingest csv --force "$T_DIR/c.csv" >/dev/null
events=$(kafka_count "$T_PREFIX.hr.events")

# Three processes, each with its own state folder and transactional.id.
start_proc() {
	spawn "proc$1" "$IDSTREAM_BIN" --config "$T_CONF" --set "processor.instance_id=$1" \
		--set "state.dir=$T_DIR/state$1" process
	eval "PID$1=\$SPAWNED_PID"
}
start_proc 1
kafka_wait_count "$DESIRED" 300 60
start_proc 2
start_proc 3
kafka_wait_count "$DESIRED" 1500 90
n=$(kafka_count "$DESIRED")
kill -KILL "$PID2"
echo "killed processor 2 with $n desired identities committed"
# Everything gets done by processors 1 and 3.
deadline=$(($(date +%s) + 120))
prev=-1
while :; do
	cur=$(kafka_count "$DESIRED")
	[ "$cur" = "$prev" ] && [ "$cur" -ge 3000 ] && break
	[ "$(date +%s)" -lt "$deadline" ] || fail "identity.desired stuck at $cur"
	prev=$cur
	sleep 3
done
stop_pid "$PID1"
stop_pid "$PID3"
grep -h "re-deriving state" "$T_DIR"/proc1.log "$T_DIR"/proc3.log >/dev/null ||
	fail "no surviving processor rebuilt the moved partitions' state"

# Versions per employee: 1..n, each exactly once.
kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$DESIRED" -e -q -X isolation.level=read_committed \
	-f '%k\n' >"$T_DIR/keys.txt"
total=$(wc -l <"$T_DIR/keys.txt" | tr -d ' ')
distinct=$(sort -u "$T_DIR/keys.txt" | wc -l | tr -d ' ')
echo "$events HR events, $total desired identities for $distinct employees"
for emp in $(sort "$T_DIR/keys.txt" | uniq -c | sort -rn | head -3 | awk '{print $2}') E10001 E10500; do
	versions=$(ids history "$emp" --json | grep -o '"version": [0-9]*' | awk '{print $2}' | tr '\n' ' ')
	expect=$(seq 1 "$(grep -cx "$emp" "$T_DIR/keys.txt")" | tr '\n' ' ')
	assert_eq "$expect" "$versions" "versions of $emp"
done

# The whole output equals a replay from offset 0 into empty state.
out=$(ids replay --check) || fail "replay differs after the rebalance and the kill: $out"
assert_contains "$out" "12 of 12 partitions"
assert_contains "$out" "($total records) reproduced byte for byte"
echo ok
