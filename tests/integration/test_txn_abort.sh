# test_txn_abort.sh — the processor's aborted transactions, on the real
# broker.  identity.desired is made to refuse every batch (its
# max.message.bytes of 300 is below one message, while the transaction
# markers still fit), so each commit fails with an error
# that requires an abort — while the next batch is already being folded
# behind the commit in flight.  Then the topic takes messages again: every
# employee has exactly one desired version (nothing of the aborted
# transactions visible, nothing lost), and a restart produces nothing more.
. "$IDSTREAM_REPO/tests/lib.sh"

N=800
write_config 'topic.partitions = 3' 'processor.batch_max = 50' 'log.level = info'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
GEN=$(dirname "$IDSTREAM_BIN")/tools/gen_export
[ -x "$GEN" ] || fail "no data generator at $GEN"
DESIRED=$T_PREFIX.identity.desired

ids topics create >"$T_DIR/topics.log" 2>&1 || fail "topics create: $(cat "$T_DIR/topics.log")"
"$GEN" --employees "$N" --seed 11 >"$T_DIR/hr.csv"
ids ingest csv "$T_DIR/hr.csv" >"$T_DIR/ingest.log" 2>&1 || fail "ingest: $(tail -3 "$T_DIR/ingest.log")"
kafka_wait_count "$T_PREFIX.hr.events" "$N"

# Every batch of desired identities is now too large for the topic.
kafka_topic_config "$DESIRED" max.message.bytes=300
spawn process "$IDSTREAM_BIN" --config "$T_CONF" process
PROC=$SPAWNED_PID
wait_for 60 sh -c "[ \$(grep -c 'transaction aborted' '$T_DIR/process.log') -ge 3 ]"
kill -0 "$PROC" 2>/dev/null || fail "the processor stopped: $(tail -5 "$T_DIR/process.log")"
# Counted with the processor paused: while it aborts and begins again, the
# topic's last stable offset keeps moving and a reader never meets its end.
kill -STOP "$PROC"
N_DESIRED=$(kafka_count "$DESIRED")
kill -CONT "$PROC"
[ "$N_DESIRED" = 0 ] ||
	fail "$N_DESIRED desired identities committed while the topic refused them"

# The topic takes them again: the processor goes on from its stored offsets.
kafka_topic_config "$DESIRED" max.message.bytes=1048588
kafka_wait_count "$DESIRED" "$N" 90
sleep 1
stop_pid "$PROC" || fail "the processor exited with an error: $(tail -5 "$T_DIR/process.log")"

kafka_keys "$DESIRED" | sort | uniq -c | awk '$1 != 1' >"$T_DIR/dups"
[ -s "$T_DIR/dups" ] && fail "employees with more than one desired version: $(head -5 "$T_DIR/dups")"
assert_eq "$N" "$(kafka_keys "$DESIRED" | sort -u | wc -l)" "employees with a desired version"
cut -d, -f1 "$T_DIR/hr.csv" | sed 1d | sort >"$T_DIR/want"
kafka_keys "$DESIRED" | sort >"$T_DIR/got"
cmp -s "$T_DIR/want" "$T_DIR/got" || fail "desired identities are not one per employee of the export: $(diff "$T_DIR/want" "$T_DIR/got" | head -5)"

# State and offsets agree with what was committed: nothing is folded again.
ids process --until-idle >"$T_DIR/again.log" 2>&1 || fail "process again: $(tail -3 "$T_DIR/again.log")"
assert_contains "$(cat "$T_DIR/again.log")" "0 events folded, 0 desired versions produced"
echo "ok: $(grep -c 'transaction aborted' "$T_DIR/process.log") transactions aborted, $N employees exactly once"
