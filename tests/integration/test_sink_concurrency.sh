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
#      and reconcile finds no drift.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 6' 'sink.concurrency = 4' 'sink.guard.enabled = false'
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
# reconcile is a request to the running sink: once it has its partitions.
wait_for 60 grep -q "assigned 6 partitions" "$T_DIR/sink3.log"
out=$(ids reconcile ldap) || fail "reconcile ldap failed (exit $?): $out"
assert_contains "$out" "$N accounts checked, 0 drifted, 0 failed"
assert_members "at the end"
echo ok
