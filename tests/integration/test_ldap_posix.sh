# test_ldap_posix.sh — ldap.posix against the real broker and slapd, with
# `idstream process` and `idstream sink ldap` running as services:
#   A. with posix off, hires are plain inetOrgPersons;
#   B. a hand-made entry already holds uidNumber 10000: with posix on, new
#      hires get 10001, 10002 (gidNumber, homeDirectory, loginShell too),
#      and the older entries are left as they are until asked;
#   C. `idstream reconcile ldap` reports the missing posixAccount of the
#      older entries, `--repair` adds it with the next numbers;
#   D. a hand-made entry takes the sink's next number meanwhile: the next
#      hire skips it;
#   E. a rename moves homeDirectory and keeps uidNumber;
#   F. a rebuilt sink state (state.dir/sink-ldap deleted, the whole
#      identity.desired re-delivered to an empty sink) writes nothing and
#      keeps every uidNumber; a later hire gets a number nobody has.
# Every uidNumber below the base DN is unique at the end.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
CONF_LINES="topic.partitions = 3"
write_config "$CONF_LINES"
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >"$T_DIR/topics.out"
P=$T_LDAP_PEOPLE

# uidn EMP / attr EMP ATTR: an attribute of the entry of employee EMP.
dn_of() {
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$P" "(employeeNumber=$1)" 1.1 |
		sed -n 's/^dn: //p'
}
attr() {
	_d=$(dn_of "$1")
	[ -n "$_d" ] || return 0
	ldap_get "$_d" "$2"
}
uidn() { attr "$1" uidNumber; }
is_posix() { attr "$1" objectClass | grep -qx posixAccount; }
# all_uidn: every uidNumber below the base DN, sorted.
all_uidn() {
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$T_LDAP_BASE" '(uidNumber=*)' uidNumber |
		sed -n 's/^uidNumber: //p' | sort -n
}
eq() {
	_want=$1
	shift
	[ "$("$@")" = "$_want" ]
}
has_uidn() { [ -n "$(uidn "$1")" ]; }
exists() { [ -n "$(dn_of "$1")" ]; }
# export FILE ROW...: an HR export with these employees.
export_csv() {
	_f=$1
	shift
	{
		echo "employee_id,first_name,last_name,title,department"
		for _row in "$@"; do echo "$_row"; done
	} >"$_f"
}
hand_made() { # UID NUMBER
	printf 'dn: uid=%s,%s\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: %s\ncn: Hand Made\nsn: Made\nuidNumber: %s\ngidNumber: 10000\nhomeDirectory: /home/%s\n' \
		"$1" "$P" "$1" "$2" "$1" | _ldap ldapadd >/dev/null
}
start_sink() {
	spawn "sink$1" "$IDSTREAM_BIN" --config "$T_CONF" sink ldap
	SINK_PID=$SPAWNED_PID
}

spawn proc "$IDSTREAM_BIN" --config "$T_CONF" process
E1="E1,Ada,Lovelace,Engineer,Engineering"
E2="E2,Grace,Hopper,Engineer,Engineering"
E3="E3,Alan,Turing,Researcher,Engineering"
E4="E4,Katherine,Johnson,Mathematician,Engineering"
E5="E5,Edsger,Dijkstra,Engineer,Engineering"
E6="E6,Barbara,Liskov,Engineer,Engineering"

# ---------------------------------------------------------------- A. posix off
start_sink 1
export_csv "$T_DIR/day1.csv" "$E1" "$E2"
ids ingest csv "$T_DIR/day1.csv" >/dev/null
wait_for 60 exists E1
wait_for 60 exists E2
for e in E1 E2; do
	! is_posix $e || fail "$e is a posixAccount with ldap.posix off"
	assert_eq "" "$(uidn $e)" "uidNumber of $e with ldap.posix off"
	assert_eq "" "$(attr $e homeDirectory)" "homeDirectory of $e with ldap.posix off"
done
stop_pid "$SINK_PID"

# ---------------------------------------------------------------- B. posix on
hand_made handmade 10000
write_config "$CONF_LINES" 'ldap.posix = true'
start_sink 2
export_csv "$T_DIR/day2.csv" "$E1" "$E2" "$E3" "$E4"
ids ingest csv "$T_DIR/day2.csv" >/dev/null
wait_for 60 has_uidn E3
wait_for 60 has_uidn E4
assert_eq "$(printf '10001\n10002')" "$(printf '%s\n%s\n' "$(uidn E3)" "$(uidn E4)" | sort -n)" \
	"uidNumbers of the two hires after the hand-made 10000"
is_posix E3 || fail "E3 is not a posixAccount"
assert_eq "$(printf 'inetOrgPerson\nposixAccount')" "$(attr E4 objectClass)" "classes of E4"
assert_eq 10000 "$(attr E3 gidNumber)" "gidNumber of E3"
assert_eq /home/aturing "$(attr E3 homeDirectory)" "homeDirectory of E3"
assert_eq /home/kjohnson "$(attr E4 homeDirectory)" "homeDirectory of E4"
assert_eq /bin/bash "$(attr E4 loginShell)" "loginShell of E4"
assert_eq 10000 "$(ldap_get "uid=handmade,$P" uidNumber)" "hand-made entry untouched"
# Unchanged employees are not touched just because posix was turned on.
! is_posix E1 || fail "E1 got posixAccount without a change or a repair"
assert_eq "" "$(uidn E2)" "E2 before the repair"

# ---------------------------------------------------------------- C. reconcile
set +e
out=$(ids reconcile ldap)
rc=$?
set -e
assert_eq 1 "$rc" "exit status of reconcile finding the missing posixAccount"
assert_contains "$out" "E1 v1: modify objectClass (none) -> posixAccount"
assert_contains "$out" "modify homeDirectory (none) -> /home/ghopper"
assert_contains "$out" "2 drifted"
! is_posix E1 || fail "reconcile without --repair wrote posixAccount"
out=$(ids reconcile ldap --repair)
assert_contains "$out" "2 repaired, 0 failed"
for e in E1 E2; do is_posix $e || fail "$e has no posixAccount after the repair"; done
assert_eq "$(printf '10003\n10004')" "$(printf '%s\n%s\n' "$(uidn E1)" "$(uidn E2)" | sort -n)" \
	"uidNumbers given by the repair"
assert_eq /home/alovelace "$(attr E1 homeDirectory)" "homeDirectory of E1 after the repair"
assert_eq /bin/bash "$(attr E2 loginShell)" "loginShell of E2 after the repair"
out=$(ids reconcile ldap)
assert_contains "$out" "0 drifted"

# ---------------------------------------------------------------- D. taken meanwhile
# The sink counts 10005 as its next number; someone takes it by hand.
hand_made handmade2 10005
export_csv "$T_DIR/day3.csv" "$E1" "$E2" "$E3" "$E4" "$E5"
ids ingest csv "$T_DIR/day3.csv" >/dev/null
wait_for 60 has_uidn E5
assert_eq 10006 "$(uidn E5)" "the hire after a hand-made 10005"
assert_eq 10005 "$(ldap_get "uid=handmade2,$P" uidNumber)" "hand-made 10005 untouched"

# ---------------------------------------------------------------- E. rename
e2_uidn=$(uidn E2)
E2="E2,Grace,Murray,Engineer,Engineering"
export_csv "$T_DIR/day4.csv" "$E1" "$E2" "$E3" "$E4" "$E5"
ids ingest csv "$T_DIR/day4.csv" >/dev/null
renamed() { dn_of E2 | grep -q '^uid=gmurray,'; }
wait_for 60 renamed
wait_for 30 eq /home/gmurray attr E2 homeDirectory
assert_eq "$e2_uidn" "$(uidn E2)" "uidNumber of E2 across the rename"
assert_eq gmurray "$(attr E2 uid)" "uid of E2 after the rename"
stop_pid "$SINK_PID"

# ---------------------------------------------------------------- F. rebuilt state
snapshot() {
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$P" '(employeeNumber=*)' \
		employeeNumber uidNumber gidNumber homeDirectory entryCSN |
		grep -v '^$' | paste -d' ' - - - - - - | sort
}
before=$(snapshot)
[ -d "$T_DIR/state/sink-ldap" ] || fail "no sink state at $T_DIR/state/sink-ldap"
rm -rf "$T_DIR/state/sink-ldap"
# A target name the broker has never seen: the whole identity.desired is
# delivered again to an empty state, as after losing state and offsets.
ids --set sink.ldap.target=rebuilt sink ldap --until-idle >"$T_DIR/rebuilt.out" \
	2>"$T_DIR/rebuilt.log"
assert_contains "$(cat "$T_DIR/rebuilt.out")" "0 created, 0 updated" "re-delivery summary"
assert_contains "$(cat "$T_DIR/rebuilt.out")" "0 LDAP writes" "re-delivery made no LDAP writes"
assert_eq "$before" "$(snapshot)" "every uidNumber (and entryCSN) after the rebuilt state"
# The regular sink starts again from an empty state, and finds the highest
# number again.
start_sink 3
export_csv "$T_DIR/day5.csv" "$E1" "$E2" "$E3" "$E4" "$E5" "$E6"
ids ingest csv "$T_DIR/day5.csv" >/dev/null
wait_for 60 has_uidn E6
assert_eq 10007 "$(uidn E6)" "the first hire after the rebuild"
assert_eq /home/bliskov "$(attr E6 homeDirectory)"
stop_pid "$SINK_PID"

# Unique: every number once, the hand-made ones included.
assert_eq "$(seq 10000 10007)" "$(all_uidn)" "all uidNumbers below $T_LDAP_BASE"
echo ok
