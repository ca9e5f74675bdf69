# test_until_idle.sh — `--until-idle` next to a transaction that is not
# stable yet, on the real broker.  gen_events writes HR events in one
# transaction and holds it open: meanwhile a read_committed consumer meets
# the end of each partition at its last stable offset, below the high
# watermark.  `process --until-idle` and `index --until-idle`, started
# while it is open, must not take that for the end: once they say they are
# waiting for it, the transaction is committed, and they must fold (index)
# every one of its events before stopping.
. "$IDSTREAM_REPO/tests/lib.sh"

write_config 'topic.partitions = 3' 'log.level = debug'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
GEN=$(dirname "$IDSTREAM_BIN")/tools/gen_events
[ -x "$GEN" ] || fail "no event generator at $GEN"
EVENTS=$T_PREFIX.hr.events
ids topics create >"$T_DIR/topics.log" 2>&1 || fail "topics create: $(cat "$T_DIR/topics.log")"

# hold N EMPLOYEES SEED NAME: N events written in a transaction that stays
# open until $T_DIR/NAME.commit exists; returns once they are all written.
hold() {
	"$GEN" --brokers "$IDSTREAM_TEST_KAFKA" --topic "$EVENTS" --events "$1" \
		--employees "$2" --seed "$3" --hold-until "$T_DIR/$4.commit" \
		>"$T_DIR/$4.log" 2>&1 &
	HOLDER=$!
	wait_for 60 grep -q '^held$' "$T_DIR/$4.log" ||
		fail "gen_events did not write its transaction: $(cat "$T_DIR/$4.log")"
}

# run_held NAME PATTERN CMD...: runs idstream CMD while transaction NAME is
# open; commits it once the log (NAME.out) matches PATTERN.
run_held() {
	_name=$1 _pat=$2
	shift 2
	ids "$@" >"$T_DIR/$_name.out" 2>&1 &
	_pid=$!
	wait_for 30 grep -q "$_pat" "$T_DIR/$_name.out" ||
		fail "$* did not wait for the open transaction: $(grep -v CONFWARN "$T_DIR/$_name.out" | tail -5)"
	touch "$T_DIR/$_name.commit"
	wait "$HOLDER" || fail "gen_events: $(cat "$T_DIR/$_name.log")"
	wait "$_pid" || fail "$*: $(tail -3 "$T_DIR/$_name.out")"
}

# The processor.
hold 300 100 5 gen1
run_held gen1 'is below the high watermark' process --until-idle
assert_contains "$(cat "$T_DIR/gen1.out")" "300 events folded, 300 desired versions produced"
assert_eq 300 "$(kafka_count "$T_PREFIX.identity.desired")" "desired versions in the topic"

# The index: caught up with the first 600 records (300 events, 300 desired
# versions), then started again while a second transaction is open.
ids index --until-idle >"$T_DIR/index1.log" 2>&1 ||
	fail "index: $(tail -3 "$T_DIR/index1.log")"
assert_contains "$(cat "$T_DIR/index1.log")" "index: 600 records indexed"
hold 200 50 6 gen2
run_held gen2 'an end is below its high watermark' index --until-idle
assert_contains "$(cat "$T_DIR/gen2.out")" "index: 200 records indexed"
ids history E100001 >"$T_DIR/history.txt" 2>&1 || fail "history: $(cat "$T_DIR/history.txt")"
# E100001 is hired by both runs of the generator (seeds 5 and 6).
[ "$(grep -c 'HIRE' "$T_DIR/history.txt")" -ge 2 ] ||
	fail "history of E100001 lacks the held transaction's hire: $(head -20 "$T_DIR/history.txt")"
echo "ok: process and index waited for the open transactions (300 + 200 events)"
