# test_determinism.sh — replaying hr.events from offset 0 into empty state
# reproduces identity.desired byte for byte, per partition (design
# principle 1), also when the processor was killed between its Kafka commit
# and its state write; and the check does fail when the outcome differs.
# Part B: the same with three fold threads (processor.threads = 3) sharing
# twelve partitions, killed at the same failpoint, with a record cache so
# small that every commit trims it while the next batch is being folded:
# every partition is still reproduced byte for byte, each version made once.
. "$IDSTREAM_REPO/tests/lib.sh"

write_config 'topic.partitions = 4' 'processor.batch_max = 50'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
ids ingest csv "$IDSTREAM_REPO/examples/hr-export-1.csv" >/dev/null
ids process --until-idle >"$T_DIR/p1.out" 2>"$T_DIR/p1.log"
assert_contains "$(cat "$T_DIR/p1.out")" "250 desired versions produced"

# The second export, with the processor killed right after one of its
# transactions committed and before its state was written.
ids ingest csv "$IDSTREAM_REPO/examples/hr-export-2.csv" >/dev/null
set +e
IDSTREAM_FAILPOINTS=processor.after_commit ids process --until-idle >/dev/null 2>"$T_DIR/p2.log"
rc=$?
set -e
assert_eq 137 "$rc" "processor killed at the failpoint"
ids process --until-idle >"$T_DIR/p3.out" 2>"$T_DIR/p3.log"

out=$(ids replay --check) || fail "replay --check found differences: $out"
assert_contains "$out" "replayed 286 events (0 refused)" "all HR events replayed"
assert_contains "$out" "into 263 employees"
assert_contains "$out" "4 of 4 partitions" "every partition identical"
assert_contains "$out" "(286 records) reproduced byte for byte"

# A different outcome is detected: another mail domain changes every record.
set +e
out=$(ids --set mapping.mail_domain=elsewhere.test replay --check)
rc=$?
set -e
assert_eq 2 "$rc" "exit status when the replay differs"
assert_contains "$out" "partition 0 differs"
assert_contains "$out" "0 of 4 partitions"

# ---------------------------------------------------------------- B
idt() {
	"$IDSTREAM_BIN" --config "$T_CONF" --set "topic.prefix=${T_PREFIX}_t" \
		--set "state.dir=$T_DIR/state-t" --set topic.partitions=12 \
		--set processor.threads=3 --set processor.batch_max=20 \
		--set processor.cache_mb=0.05 "$@"
}
idt topics create >/dev/null
idt ingest csv "$IDSTREAM_REPO/examples/hr-export-1.csv" >/dev/null
idt ingest csv "$IDSTREAM_REPO/examples/hr-export-2.csv" >/dev/null
set +e
IDSTREAM_FAILPOINTS=processor.after_commit idt process --until-idle >/dev/null 2>"$T_DIR/t1.log"
rc=$?
set -e
assert_eq 137 "$rc" "three-thread processor killed at the failpoint"
idt process --until-idle >"$T_DIR/t2.out" 2>"$T_DIR/t2.log" ||
	fail "three-thread processor: $(tail -3 "$T_DIR/t2.log")"
[ "$(grep -c 'assigned' "$T_DIR/t2.log")" -ge 3 ] ||
	fail "expected three fold threads to be assigned partitions: $(grep assigned "$T_DIR/t2.log")"
out=$(idt replay --check) || fail "replay --check after three fold threads: $out"
assert_contains "$out" "replayed 286 events (0 refused)"
assert_contains "$out" "12 of 12 partitions" "every partition identical"
assert_contains "$out" "(286 records) reproduced byte for byte" "each version made once"
echo ok
