# test_sink_concurrency.sh — `idstream sink ldap` applying several employees
# at once (sink.concurrency = 4), against the real broker and slapd, with
# `idstream process` and the sink running as services:
#   A. 120 hires whose manager (E001) is hired in the same export: every
#      entry is there with its manager's DN (a report applied next to its
#      new manager is applied again once the manager exists), and in both
#      of its groups (staff, dept-engineering: created by these hires),
#      seen from the groups (member) and from the entries (memberOf);
#   B. three more exports right after each other change every title: each
#      employee ends with the last one (its versions were applied in
#      order), and sink.results has exactly one result per employee and
#      version (nothing applied twice);
#   C. a sink restarted on its state reads nothing it has to apply again,
#      and reconcile finds no drift;
#   D. kill -9 of the sink while it applies 400 more hires (a new
#      department: new groups, created by the batches), then a restart:
#      every entry and membership is there, both ways, and no employee's
#      results show an operation twice (idstream history).
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
# A killed sink's consumer group member is dropped after 6 s (the broker's
# minimum), so the restart in D does not wait 45 s for it.
write_config 'topic.partitions = 6' 'sink.concurrency = 4' 'sink.guard.enabled = false' \
	'kafka.session.timeout.ms = 6000'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
P=$T_LDAP_PEOPLE
N=120

export_csv() { # FILE TITLE
	{
		echo "employee_id,first_name,last_name,title,department,manager_id"
		for i in $(seq 1 $N); do
			n=$(printf '%03d' "$i")
			m=E001
			[ "$i" != 1 ] || m=
			echo "E$n,Cora,Conc$n,$2,Engineering,$m"
		done
	} >"$1"
}

spawn proc "$IDSTREAM_BIN" --config "$T_CONF" process
spawn sink "$IDSTREAM_BIN" --config "$T_CONF" sink ldap
SINK_PID=$SPAWNED_PID
wait_for 60 grep -q "applying up to 4 employees at a time" "$T_DIR/sink.log"

# ---------------------------------------------------------------- A. hires
export_csv "$T_DIR/v1.csv" Engineer
ids ingest csv "$T_DIR/v1.csv" >/dev/null
people() { ldap_count '(employeeNumber=*)' "$P"; }
eq() {
	_want=$1
	shift
	[ "$("$@")" = "$_want" ]
}
wait_for 120 eq $N people
MGR="uid=cconc001,ou=Engineering,$P"
with_manager() { ldap_count "(manager=$MGR)" "$P"; }
wait_for 60 eq $((N - 1)) with_manager
# The memberships, both ways: the groups' member values and the entries'
# memberOf (kept by slapd's memberof overlay), for each of the two groups.
members() { # GROUP_DN: its member values that are entries of $P
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$1" -s base '(objectClass=*)' member |
		grep -ci "^member: uid=.*,$P\$" || true
}
of_members() { ldap_count "(memberOf=$1)" "$P"; }
assert_members() {
	for _g in staff dept-engineering; do
		_dn="cn=$_g,$T_LDAP_GROUPS"
		_i=0
		while { [ "$(members "$_dn")" != $N ] || [ "$(of_members "$_dn")" != $N ]; } &&
			[ $_i -lt 150 ]; do
			sleep 0.2
			_i=$((_i + 1))
		done
		assert_eq $N "$(members "$_dn")" "member values of $_dn ($1)"
		assert_eq $N "$(of_members "$_dn")" \
			"entries whose memberOf has $_dn ($1); without it: $(_ldap ldapsearch \
				-LLL -b "$P" "(&(employeeNumber=*)(!(memberOf=$_dn)))" memberOf |
				tr '\n' ' ')"
	done
}
assert_members "after the hires"

# ---------------------------------------------------------------- B. order
for t in Lead Principal Fellow; do
	export_csv "$T_DIR/$t.csv" "$t"
	ids ingest csv "$T_DIR/$t.csv" >/dev/null
done
fellows() { ldap_count '(title=Fellow)' "$P"; }
wait_for 120 eq $N fellows
assert_eq 0 "$(ldap_count '(|(title=Engineer)(title=Lead)(title=Principal))' "$P")" \
	"no entry left with an older title"
stop_pid "$SINK_PID"
desired=$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$T_PREFIX.identity.desired" -e -q \
	-X isolation.level=read_committed -f 'x\n' 2>/dev/null | grep -c '^x$')
# Every desired version has exactly one result, plus one per report applied
# again once its manager existed (its result carries the same version).
results=$(kafka_count "$T_PREFIX.sink.results")
summary=$(grep '^sink ldap:' "$T_DIR/sink.log" | tail -1)
relinked=$(printf '%s' "$summary" | sed -n 's/.* \([0-9]*\) manager links completed.*/\1/p')
assert_eq "$desired" "$((results - relinked))" \
	"one result per desired version ($summary)"
assert_contains "$summary" "0 failed"

# ---------------------------------------------------------------- C. restart
out=$(ids sink ldap --until-idle 2>>"$T_DIR/sink2.log")
assert_contains "$out" "0 created, 0 updated, 0 disabled, 0 enabled, 0 unchanged, 0 failed"
assert_contains "$out" "; 0 LDAP writes"
spawn sink3 "$IDSTREAM_BIN" --config "$T_CONF" sink ldap
SINK3_PID=$SPAWNED_PID
# reconcile is a request to the running sink: once it has its partitions.
wait_for 60 grep -q "assigned 6 partitions" "$T_DIR/sink3.log"
out=$(ids reconcile ldap) || fail "reconcile ldap failed (exit $?): $out"
assert_contains "$out" "$N accounts checked, 0 drifted, 0 failed"
assert_members "at the end"
stop_pid "$SINK3_PID"

# ---------------------------------------------------------------- D. kill -9
N2=400
{
	echo "employee_id,first_name,last_name,title,department,manager_id"
	for i in $(seq 1 $N); do
		n=$(printf '%03d' "$i")
		m=E001
		[ "$i" != 1 ] || m=
		echo "E$n,Cora,Conc$n,Fellow,Engineering,$m"
	done
	for i in $(seq 1 $N2); do
		n=$(printf '%04d' "$i")
		echo "S$n,Sal,Crash$n,Seller,Sales,"
	done
} >"$T_DIR/sales.csv"
spawn sink4 "$IDSTREAM_BIN" --config "$T_CONF" sink ldap
SINK4_PID=$SPAWNED_PID
wait_for 60 grep -q "assigned 6 partitions" "$T_DIR/sink4.log"
ids ingest csv "$T_DIR/sales.csv" >/dev/null
sellers() { ldap_count '(departmentNumber=Sales)' "$P"; }
_i=0
while [ "$(sellers)" -lt 40 ] && [ $_i -lt 1200 ]; do
	sleep 0.05
	_i=$((_i + 1))
done
kill -KILL "$SINK4_PID"
wait "$SINK4_PID" 2>/dev/null || true
at_kill=$(sellers)
echo "sink killed with $at_kill of $N2 new entries in the directory"
out=$(ids sink ldap --until-idle 2>>"$T_DIR/sink5.log")
assert_contains "$out" " 0 failed"
assert_eq $N2 "$(sellers)" "Sales entries after the restart"
for _g in staff dept-sales; do
	_dn="cn=$_g,$T_LDAP_GROUPS"
	_want=$N2
	[ $_g = dept-sales ] || _want=$((N + N2))
	assert_eq $_want "$(members "$_dn")" "member values of $_dn after the crash"
	assert_eq $_want "$(of_members "$_dn")" "entries whose memberOf has $_dn after the crash"
done
# Nothing done twice: over the killed run and the restart, no employee's
# results show its creation or an addition to a group more than once (an
# apply whose result the kill cut off shows nothing, as the restart found
# nothing left to do).
for e in S0001 S0013 S0040 S0041 S0100 S0250 S0400; do
	ops=$(ids history "$e" --json | jq -c '[.[] | select(.kind == "sink_result") |
		.operations[] | select((.op == "add" and .attribute == "dn") or
		.op == "group_add") | .op + ":" + .attribute]')
	assert_eq '[]' "$(printf '%s' "$ops" | jq -c 'group_by(.) | map(select(length > 1))')" \
		"operations done twice for $e (all: $ops)"
done
echo ok
