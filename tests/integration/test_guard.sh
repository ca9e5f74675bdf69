# test_guard.sh — the sink's mass-change guard, operator decisions and
# parked failures, against the real broker and slapd, with `idstream sink
# ldap` and `idstream process` running as services:
#   A. an export terminating 30% of the accounts is held: zero LDAP writes
#      for those accounts (no lock, entryCSN unchanged), one HELD result
#      each (sink.results, `idstream history`, `idstream held`), while the
#      other changes of the same export are applied; the hold survives a
#      sink restart; `idstream approve` then disables them;
#   B. a second 30% termination is held and `idstream reject`ed: the
#      accounts stay enabled, the decision is a result, nothing is held any
#      more, and a later version of a rejected employee (a rehire) is
#      applied normally;
#   C. a single termination, under the limit, flows without anyone asking;
#   D. a hire whose uid belongs to a hand-made entry fails and is parked;
#      after the entry is removed, `idstream sink retry` creates the account;
#   E. an attribute edited by hand is reported by `idstream reconcile` and
#      written back by `idstream reconcile --repair`.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
# 40 accounts; the limit is 10% of at least 20 accounts.  Disables wait
# 1.5 s for the rest of their batch.
write_config 'topic.partitions = 3' 'sink.guard.min_managed = 20' \
	'sink.guard.settle_ms = 1500' 'ingest.termination_threshold = 0.5'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >"$T_DIR/topics.out"
assert_contains "$(cat "$T_DIR/topics.out")" "created $T_PREFIX.sink.control (1 partitions)"
P=$T_LDAP_PEOPLE
RESULTS=$T_PREFIX.sink.results

# export FILE FIRST LAST [EXTRA_ROW...]: employees E0FIRST..E0LAST.
export_csv() {
	_f=$1 _a=$2 _b=$3
	shift 3
	{
		echo "employee_id,first_name,last_name,title,department"
		for _i in $(seq "$_a" "$_b"); do
			_n=$(printf '%03d' "$_i")
			echo "E$_n,Pat,Guard$_n,Engineer,Engineering"
		done
		for _row in "$@"; do echo "$_row"; done
	} >"$_f"
}
dn_of() { printf 'uid=pguard%s,ou=Engineering,%s' "${1#E}" "$P"; }
locked() { ldap_get "$(dn_of "$1")" pwdAccountLockedTime; }
csn() { ldap_get "$(dn_of "$1")" entryCSN; }
held_count() { ids held ldap --json | grep -c '"employee_id"' || true; }
results_with() { # OUTCOME: results of target ldap with that outcome
	ids history "$1" --json | grep -c "\"outcome\": \"$2\"" || true
}

# eq EXPECTED CMD...: CMD prints EXPECTED (for wait_for, which runs it again
# and again).
eq() {
	_want=$1
	shift
	[ "$("$@")" = "$_want" ]
}

start_sink() {
	spawn "sink$1" "$IDSTREAM_BIN" --config "$T_CONF" sink ldap
	SINK_PID=$SPAWNED_PID
}
spawn proc "$IDSTREAM_BIN" --config "$T_CONF" process
start_sink 1

export_csv "$T_DIR/day1.csv" 1 40
ids ingest csv "$T_DIR/day1.csv" >/dev/null
people() { ldap_count '(employeeNumber=*)' "$P"; }
wait_for 60 eq 40 people
kafka_wait_count "$RESULTS" 40 30

# ---------------------------------------------------------------- A. hold, approve
for i in 001 005 012; do eval "csn_$i=\$(csn E$i)"; done
# E001-E012 leave (12 of 40 = 30%), E013 gets a new title, E041 joins.
export_csv "$T_DIR/day2.csv" 14 40 "E013,Pat,Guard013,Staff Engineer,Engineering" \
	"E041,Pat,Guard041,Engineer,Engineering"
out=$(ids ingest csv "$T_DIR/day2.csv")
assert_contains "$out" "12 terminations"
wait_for 60 eq 12 held_count
# The other changes of the same export went through.
wait_for 30 eq "Staff Engineer" ldap_get "$(dn_of E013)" title
wait_for 30 ldap_exists "$(dn_of E041)"
for i in 001 002 005 009 012; do
	assert_eq "" "$(locked "E$i")" "E$i locked although its termination is held"
	assert_contains "$(ldap_get "$(dn_of "E$i")" memberOf)" "cn=staff" "E$i groups while held"
done
for i in 001 005 012; do
	assert_eq "$(eval "printf %s \"\$csn_$i\"")" "$(csn "E$i")" "entryCSN of held E$i (no LDAP write)"
done
assert_eq 1 "$(results_with E005 HELD)" "HELD results of E005"
assert_contains "$(ids history E005)" "HELD" "history of a held employee"
assert_contains "$(ids history E005)" "mass-change guard"
held=$(ids held ldap)
assert_contains "$held" "E001 "
assert_contains "$held" "ACTIVE -> DISABLED"
assert_contains "$held" "12 changes held for ldap"
grep -q 'HELD' "$T_DIR/sink1.log" || fail "the sink did not log that ldap is held"

# The hold is state: it survives a restart of the sink.
stop_pid "$SINK_PID"
start_sink 2
sleep 3
assert_eq 12 "$(held_count)" "held after a sink restart"
assert_eq "" "$(locked E003)" "E003 after the restart"

out=$(ids approve ldap)
assert_contains "$out" "approve ldap: 12 applied, 0 failed, 0 no longer held"
for i in 001 002 005 009 012; do
	assert_eq "000001010000Z" "$(locked "E$i")" "E$i locked after approve"
	assert_eq "" "$(ldap_get "$(dn_of "E$i")" memberOf)" "E$i groups after approve"
done
assert_contains "$(ids held ldap)" "nothing held for ldap"
assert_contains "$(ids history E005)" "disable"

# ---------------------------------------------------------------- B. hold, reject
# 29 active accounts: E014-E021 leave (8, 28%).
export_csv "$T_DIR/day3.csv" 22 41 "E013,Pat,Guard013,Staff Engineer,Engineering"
out=$(ids ingest csv "$T_DIR/day3.csv")
assert_contains "$out" "8 terminations"
wait_for 60 eq 8 held_count
csn_20=$(csn E020)
out=$(ids reject ldap)
assert_contains "$out" "reject ldap: 8 rejected, 0 failed, 0 no longer held"
assert_contains "$(ids held ldap)" "nothing held for ldap"
sleep 2
for i in 014 017 020 021; do
	assert_eq "" "$(locked "E$i")" "E$i locked although rejected"
done
assert_eq "$csn_20" "$(csn E020)" "entryCSN of rejected E020"
assert_contains "$(ids history E017)" "rejected by the operator"
# A restarted sink does not apply the rejected versions either.
stop_pid "$SINK_PID"
start_sink 3
sleep 3
assert_eq "" "$(locked E017)" "E017 after a restart"
# A later version of a rejected employee is applied normally: E020 is
# rehired with a new title.
export_csv "$T_DIR/day4.csv" 22 41 "E013,Pat,Guard013,Staff Engineer,Engineering" \
	"E020,Pat,Guard020,Returner,Engineering"
ids ingest csv "$T_DIR/day4.csv" >/dev/null
wait_for 30 eq Returner ldap_get "$(dn_of E020)" title
assert_eq "" "$(locked E020)" "E020 after the rehire"

# ---------------------------------------------------------------- C. small termination
# One leaver (E022), well under the limit: applied without a decision.
export_csv "$T_DIR/day5.csv" 23 41 "E013,Pat,Guard013,Staff Engineer,Engineering" \
	"E020,Pat,Guard020,Returner,Engineering"
ids ingest csv "$T_DIR/day5.csv" >/dev/null
wait_for 30 eq 000001010000Z locked E022
assert_eq 0 "$(results_with E022 HELD)" "HELD results of E022"
assert_contains "$(ids held ldap)" "nothing held for ldap"

# ---------------------------------------------------------------- D. parked failure
printf 'dn: uid=jdoe,ou=Engineering,%s\nobjectClass: inetOrgPerson\nuid: jdoe\ncn: John Doe\nsn: Doe\nemployeeNumber: MANUAL1\n' "$P" |
	_ldap ldapadd >/dev/null
export_csv "$T_DIR/day6.csv" 23 41 "E013,Pat,Guard013,Staff Engineer,Engineering" \
	"E020,Pat,Guard020,Returner,Engineering" "E900,John,Doe,Engineer,Engineering"
ids ingest csv "$T_DIR/day6.csv" >/dev/null
wait_for 30 eq 1 results_with E900 FAILED
assert_contains "$(ids history E900)" "already used"
assert_eq "MANUAL1" "$(ldap_get "uid=jdoe,ou=Engineering,$P" employeeNumber)" "hand-made entry untouched"
# Still conflicting: the retry fails again and stays parked.
set +e
out=$(ids sink retry ldap 2>&1)
rc=$?
set -e
assert_eq 1 "$rc" "exit status of a retry that fails again"
assert_contains "$out" "0 applied, 1 failed again"
_ldap ldapdelete "uid=jdoe,ou=Engineering,$P"
out=$(ids sink retry ldap)
assert_contains "$out" "sink retry ldap: 1 applied, 0 failed again, 0 superseded; 0 still parked"
assert_eq "E900" "$(ldap_get "uid=jdoe,ou=Engineering,$P" employeeNumber)" "E900 created by the retry"
assert_contains "$(ids history E900)" "APPLIED"

# ---------------------------------------------------------------- E. drift
printf 'dn: %s\nchangetype: modify\nreplace: title\ntitle: Hacker\n' "$(dn_of E030)" |
	_ldap ldapmodify >/dev/null
set +e
out=$(ids reconcile ldap)
rc=$?
set -e
assert_eq 1 "$rc" "exit status of reconcile finding drift"
assert_contains "$out" "E030 v1: modify title Hacker -> Engineer"
assert_contains "$out" "1 drifted"
assert_eq "Hacker" "$(ldap_get "$(dn_of E030)" title)" "reconcile without --repair writes nothing"
out=$(ids reconcile ldap --repair)
assert_contains "$out" "1 repaired, 0 failed"
assert_eq "Engineer" "$(ldap_get "$(dn_of E030)" title)" "title repaired"
out=$(ids reconcile ldap)
assert_contains "$out" "0 drifted"

stop_pid "$SINK_PID"
echo ok
