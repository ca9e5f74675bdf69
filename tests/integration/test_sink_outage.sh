# test_sink_outage.sh — the directory goes away for ~30 s while `idstream
# sink ldap` is applying a stream of changes: nothing is skipped or lost,
# the sink backs off, its circuit opens (one warning, one DEFERRED result)
# and closes when slapd is back, and every change ends up in the directory
# with an APPLIED result.
. "$IDSTREAM_REPO/tests/lib.sh"

: "${IDSTREAM_RUN:?run through tests/run.sh, which names the services folder in IDSTREAM_RUN}"
# scripts/services.sh restarts slapd on the port tests/run.sh gave it.
IDSTREAM_LDAP_PORT=$(printf '%s' "$IDSTREAM_TEST_LDAP_URL" | sed -e 's|.*:||' -e 's|/.*||')
export IDSTREAM_LDAP_PORT
# 8>&-: a slapd started here must not hold the test runner's lock (fd 8).
slapd() { sh "$IDSTREAM_REPO/scripts/services.sh" "$1" slapd 8>&- >>"$T_DIR/services.log" 2>&1; }
SLAPD_DOWN=""
trap '[ -z "$SLAPD_DOWN" ] || slapd start; lib_cleanup' EXIT

ldap_reset
write_config 'topic.partitions = 3' 'sink.retry.initial_ms = 200' \
	'sink.retry.max_ms = 2000' 'sink.circuit.failures = 4' 'ldap.timeout_ms = 2000'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
P=$T_LDAP_PEOPLE
RESULTS=$T_PREFIX.sink.results

export_csv() { # FILE TITLE_OF_E1..E10: 30 employees, the first 10 with that title
	{
		echo "employee_id,first_name,last_name,title,department"
		for i in $(seq 101 130); do
			t=Engineer
			[ "$i" -gt 110 ] || t=$2
			echo "E$i,Sam,Outage$i,$t,Engineering"
		done
	} >"$1"
}
dn_of() { printf 'uid=soutage%s,ou=Engineering,%s' "${1#E}" "$P"; }
eq() {
	_want=$1
	shift
	[ "$("$@")" = "$_want" ]
}
people() { ldap_count '(employeeNumber=*)' "$P"; }
titled() { ldap_count "(title=$1)" "$P"; }

spawn proc "$IDSTREAM_BIN" --config "$T_CONF" process
spawn sink "$IDSTREAM_BIN" --config "$T_CONF" sink ldap
SINK_PID=$SPAWNED_PID
export_csv "$T_DIR/day1.csv" Engineer
ids ingest csv "$T_DIR/day1.csv" >/dev/null
wait_for 60 eq 30 people
kafka_wait_count "$RESULTS" 30 30
results_before=$(kafka_count "$RESULTS")

# slapd goes away; ten title changes arrive while it is gone.
slapd stop
SLAPD_DOWN=1
export_csv "$T_DIR/day2.csv" Analyst
ids ingest csv "$T_DIR/day2.csv" >/dev/null
wait_for 30 grep -q 'circuit open' "$T_DIR/sink.log"
sleep 25
# Backing off, not hammering: with delays of 0.1-2 s, 30 s hold at most a
# few dozen attempts; and one DEFERRED result, not one per attempt.
attempts=$(grep -c 'probe failed\|unavailable (attempt' "$T_DIR/sink.log" || true)
[ "$attempts" -lt 40 ] || fail "$attempts attempts in ~30 s: not backing off"
assert_eq 1 "$(grep -c 'circuit open' "$T_DIR/sink.log")" "circuit-open warnings"
kill -0 "$SINK_PID" 2>/dev/null || fail "the sink exited while slapd was down: $(tail -5 "$T_DIR/sink.log")"

slapd start
SLAPD_DOWN=""
wait_for 60 grep -q 'circuit closed' "$T_DIR/sink.log"
wait_for 60 eq 10 titled Analyst
assert_contains "$(grep 'circuit closed' "$T_DIR/sink.log")" "reachable again after"
for i in 101 105 110; do
	assert_eq "Analyst" "$(ldap_get "$(dn_of "E$i")" title)" "title of E$i after the outage"
done
assert_eq 20 "$(titled Engineer)" "untouched titles"
# Every change has its APPLIED result; the wait left one DEFERRED result.
kafka_wait_count "$RESULTS" $((results_before + 11)) 30
hist=""
for i in $(seq 101 110); do
	h=$(ids history "E$i")
	assert_contains "$h" "APPLIED    ldap v2" "result of E$i's change"
	hist="$hist$h"
done
deferred=$(printf '%s\n' "$hist" | grep -c 'DEFERRED' || true)
assert_eq 1 "$deferred" "DEFERRED results (the employee waiting when the circuit opened)"
assert_contains "$hist" "circuit open"

stop_pid "$SINK_PID"
assert_contains "$(tail -1 "$T_DIR/sink.log")" "0 failed"
echo ok
