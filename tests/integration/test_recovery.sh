# test_recovery.sh — the exactly-once recovery paths, hit deterministically
# with failpoints (a SIGKILL at a named point, see common/failpoint.h):
#   1. processor killed after its Kafka transaction committed but before its
#      RocksDB WriteBatch: the restart re-derives that state without output;
#   2. processor state folder lost: rebuilt from the log, versions continue;
#   3. sink killed after writing LDAP but before recording the version: the
#      restart's diff finds nothing left to do.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 3' 'processor.batch_max = 1000'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
DESIRED=$T_PREFIX.identity.desired

{
	echo "employee_id,first_name,last_name,title,department"
	for i in $(seq 10 39); do echo "E2$i,Test,Person$i,Engineer,Engineering"; done
} >"$T_DIR/a.csv"
ids ingest csv "$T_DIR/a.csv" >/dev/null

# 1. Crash between commit and WriteBatch.
set +e
IDSTREAM_FAILPOINTS=processor.after_commit ids process --until-idle >"$T_DIR/p1.out" 2>"$T_DIR/p1.log"
rc=$?
set -e
assert_eq 137 "$rc" "processor killed at the failpoint"
assert_contains "$(cat "$T_DIR/p1.log")" "processor.after_commit"
# The first transaction committed (how many events it held depends on
# when input looked idle); its state was never written.
n1=$(kafka_count "$DESIRED")
[ "$n1" -ge 1 ] && [ "$n1" -le 30 ] || fail "first transaction produced $n1 identities"
ids process --until-idle >"$T_DIR/p2.out" 2>"$T_DIR/p2.log"
assert_contains "$(cat "$T_DIR/p2.log")" "re-deriving state" "restart notices the gap"
assert_contains "$(cat "$T_DIR/p2.out")" \
	"$((30 - n1)) desired versions produced, $n1 re-derived after restart"
assert_eq 30 "$(kafka_count "$DESIRED")" "nothing produced twice"
assert_eq 30 "$(kafka_keys "$DESIRED" | sort -u | wc -l | tr -d ' ')" "one version per employee"

# 2. State folder lost: replay rebuilds it; the next change is version 2.
rm -rf "$T_DIR/state/processor"
sed 's/^E215,Test,Person15,Engineer,/E215,Test,Person15,Staff Engineer,/' "$T_DIR/a.csv" >"$T_DIR/b.csv"
out=$(ids ingest csv "$T_DIR/b.csv")
assert_contains "$out" "1 updates"
ids process --until-idle >"$T_DIR/p3.out" 2>"$T_DIR/p3.log"
assert_contains "$(cat "$T_DIR/p3.out")" "1 desired versions produced, 30 re-derived after restart"
assert_eq 31 "$(kafka_count "$DESIRED")"
versions=$(ids history E215 --json | grep -o '"version": [0-9]*' | tr '\n' ' ')
assert_eq '"version": 1 "version": 2 ' "$versions" "E215's versions after a state rebuild"
assert_contains "$(ids history E215)" "title=Staff Engineer"

# 3. Sink killed after the LDAP write of its first employee.
set +e
IDSTREAM_FAILPOINTS=sink.after_apply ids sink ldap --until-idle >"$T_DIR/s1.out" 2>"$T_DIR/s1.log"
rc=$?
set -e
assert_eq 137 "$rc" "sink killed at the failpoint"
assert_eq 1 "$(ldap_count '(employeeNumber=*)' "$T_LDAP_PEOPLE")" "one entry written before the crash"
ids sink ldap --until-idle >"$T_DIR/s2.out" 2>"$T_DIR/s2.log"
assert_contains "$(cat "$T_DIR/s2.out")" "29 created"
assert_contains "$(cat "$T_DIR/s2.out")" "1 unchanged" "the crashed apply converged without writes"
assert_eq 30 "$(ldap_count '(employeeNumber=*)' "$T_LDAP_PEOPLE")"
for i in 10 15 39; do
	assert_eq 1 "$(ldap_count "(employeeNumber=E2$i)" "$T_LDAP_PEOPLE")" "E2$i exactly once"
done
assert_eq "Staff Engineer" "$(ldap_get "uid=tperson15,ou=Engineering,$T_LDAP_PEOPLE" title)"
echo ok
