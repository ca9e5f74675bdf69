# test_policy_deploy.sh — deploying a policy is an event in the log:
#   1. a broken policy (syntax error, no ldap target, a runtime error, too
#      large) is refused and writes nothing to hr.events;
#   2. `policy deploy` writes one POLICY_ACTIVATED marker to every partition;
#      the processor switches and re-evaluates: exactly the active Sales
#      employees get a new version with the regional group and
#      policy_version = the policy's hash (once, also when the processor is
#      killed between its commit and its state write), and slapd's groups
#      follow;
#   3. a restarted processor keeps the policy (a new Sales hire is mapped
#      with it), also after losing its state folder (rebuilt from the log,
#      markers included);
#   4. `replay --check` reproduces identity.desired byte for byte across the
#      deployments, and `policy deploy --default` switches back.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 4' 'processor.batch_max = 50'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
HR=$T_PREFIX.hr.events
DESIRED=$T_PREFIX.identity.desired
G=$T_LDAP_GROUPS
SPLIT=$IDSTREAM_REPO/tests/cases/plan/split-sales.lua
X2=$IDSTREAM_REPO/examples/hr-export-2.csv
ids topics create >/dev/null
ids ingest csv "$IDSTREAM_REPO/examples/hr-export-1.csv" >/dev/null
ids ingest csv "$X2" >/dev/null
ids run --until-idle >"$T_DIR/run1.out" 2>"$T_DIR/run1.log"
events0=$(kafka_count "$HR")
desired0=$(kafka_count "$DESIRED")
assert_eq 286 "$desired0" "desired versions before any deployment"

# The active Sales employees of the second export and their new groups.
python3 - "$X2" >"$T_DIR/sales.txt" <<'PY'
import csv, sys
for r in csv.DictReader(open(sys.argv[1], encoding="utf-8")):
    if r["department"] == "Sales":
        region = "americas" if r["location"] in ("New York", "São Paulo") else "emea"
        print(r["employee_id"], "dept-sales-" + region)
PY
nsales=$(wc -l <"$T_DIR/sales.txt" | tr -d ' ')
nemea=$(grep -c ' dept-sales-emea$' "$T_DIR/sales.txt" || true)
namer=$(grep -c ' dept-sales-americas$' "$T_DIR/sales.txt" || true)
[ "$nsales" -gt 10 ] && [ "$namer" -gt 0 ] && [ "$nemea" -gt 0 ] || fail "unexpected Sales rows: $nsales"
assert_eq "$nsales" "$(ldap_get "cn=dept-sales,$G" member | wc -l | tr -d ' ')" "dept-sales before"

# ---------------------------------------------------------------- 1. refused
refused() { # refused NAME FILE EXPECTED-MESSAGE
	if ids policy deploy "$2" >"$T_DIR/$1.out" 2>"$T_DIR/$1.err"; then
		fail "policy deploy accepted the $1 policy"
	fi
	assert_contains "$(cat "$T_DIR/$1.err")" "nothing deployed" "$1 policy"
	assert_contains "$(cat "$T_DIR/$1.err")" "$3" "$1 policy"
}
printf 'return {\n  targets = {"ldap"},\n' >"$T_DIR/syntax.lua"
refused syntax "$T_DIR/syntax.lua" "syntax.lua:"
cat >"$T_DIR/notarget.lua" <<'LUA'
return { targets = { "ad" }, identity = function(emp, ctx) return { targets = { ad = false } } end }
LUA
refused notarget "$T_DIR/notarget.lua" 'target "ldap" is not declared'
cat >"$T_DIR/runtime.lua" <<'LUA'
return { targets = { "ldap" }, identity = function(emp, ctx)
	return { targets = { ldap = { attributes = { uid = emp.first_name .. emp.nickname } } } }
end }
LUA
refused runtime "$T_DIR/runtime.lua" "runtime.lua:2"
{ cat "$SPLIT"; head -c 300000 /dev/zero | tr '\0' '-' | fold -w 100 | sed 's/^/--/'; } >"$T_DIR/huge.lua"
refused huge "$T_DIR/huge.lua" "at most 262144"
assert_eq "$events0" "$(kafka_count "$HR")" "refused deployments wrote nothing"

# ---------------------------------------------------------------- 2. deploy
version=$(ids policy version "$SPLIT")
case $version in sha256:????????????????) ;; *) fail "policy version: $version" ;; esac
out=$(ids policy deploy "$SPLIT" --reason "split Sales by region")
assert_contains "$out" "deployed $version (split-sales.lua) to 4 partitions of $HR"
assert_eq $((events0 + 4)) "$(kafka_count "$HR")" "one marker per partition"
# Each partition holds exactly one marker, keyed @policy.
markers=$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -e -q -X isolation.level=read_committed \
	-f '%p %k\n' 2>/dev/null | grep ' @policy$' | sort)
assert_eq "$(printf '0 @policy\n1 @policy\n2 @policy\n3 @policy')" "$markers" "markers per partition"

# The processor dies right after committing the activation's transaction,
# before its state write: the restart re-derives the switch and produces
# nothing twice.
set +e
IDSTREAM_FAILPOINTS=processor.after_commit ids process --until-idle >/dev/null 2>"$T_DIR/crash.log"
rc=$?
set -e
assert_eq 137 "$rc" "processor killed at the failpoint"
assert_contains "$(cat "$T_DIR/crash.log")" "employees re-evaluated"
assert_eq $((desired0 + nsales)) "$(kafka_count "$DESIRED")" "only the Sales employees got a version"
ids run --until-idle >"$T_DIR/run2.out" 2>"$T_DIR/run2.log"
assert_contains "$(cat "$T_DIR/run2.out")" "0 desired versions produced, 4 re-derived after restart"
assert_contains "$(cat "$T_DIR/run2.log")" "(re-derived, not produced)"
assert_eq $((desired0 + nsales)) "$(kafka_count "$DESIRED")" "nothing produced twice"

# identity.desired: every Sales employee's newest version has the regional
# group and the new policy version; nobody else has the new version.
ids as-of 2999-01-01 --json >"$T_DIR/asof.json"
jq -r --arg v "$version" '.[] | select(.policy_version == $v) |
	"\(.employee_id) \(.groups | map(select(startswith("dept-"))) | join(","))"' \
	"$T_DIR/asof.json" | sort >"$T_DIR/got.txt"
sort "$T_DIR/sales.txt" >"$T_DIR/want.txt"
diff "$T_DIR/want.txt" "$T_DIR/got.txt" >"$T_DIR/diff.txt" ||
	fail "employees under $version differ from the Sales employees: $(cat "$T_DIR/diff.txt")"
# One of them through history: the next version, caused by the marker.
emp=$(head -n1 "$T_DIR/sales.txt" | cut -d' ' -f1)
grp=$(head -n1 "$T_DIR/sales.txt" | cut -d' ' -f2)
ids history "$emp" --json >"$T_DIR/hist.json"
last=$(jq -c '[.[] | select(.kind == "desired")] | last' "$T_DIR/hist.json")
assert_eq "$version" "$(printf '%s' "$last" | jq -r .policy_version)" "policy_version of $emp"
assert_eq "[\"$grp\",\"staff\"]" "$(printf '%s' "$last" | jq -c .groups)" "groups of $emp"
prev=$(jq -c '[.[] | select(.kind == "desired")] | .[-2]' "$T_DIR/hist.json")
assert_eq '["dept-sales","staff"]' "$(printf '%s' "$prev" | jq -c .groups)" "groups of $emp before"
assert_eq $(($(printf '%s' "$prev" | jq .version) + 1)) "$(printf '%s' "$last" | jq .version)" "next version of $emp"
assert_eq "policy:ldap.groups" "$(printf '%s' "$last" | jq -r '.causes["@groups"].rule')"
marker_id=$(printf '%s' "$last" | jq -r .cause_event_id)
assert_eq "$marker_id" "$(printf '%s' "$last" | jq -r '.causes["@groups"].event_id')" \
	"the group change is caused by the activation"
# sn did not change: its cause stays one of the employee's HR events.
sn_type=$(jq -r --arg e "$(printf '%s' "$last" | jq -r '.causes.sn.event_id')" \
	'.[] | select(.kind == "hr_event" and .event_id == $e) | .type' "$T_DIR/hist.json")
case $sn_type in HIRE | UPDATE) ;; *) fail "cause of the unchanged sn: '$sn_type'" ;; esac
# slapd: the groups follow.
assert_eq "$nemea" "$(ldap_get "cn=dept-sales-emea,$G" member | wc -l | tr -d ' ')" "members of dept-sales-emea"
assert_eq "$namer" "$(ldap_get "cn=dept-sales-americas,$G" member | wc -l | tr -d ' ')" "members of dept-sales-americas"
! ldap_exists "cn=dept-sales,$G" || fail "dept-sales still exists: $(ldap_get "cn=dept-sales,$G" member | head -3)"

# ---------------------------------------------------------------- 3. restart
# A new Sales hire in New York, processed by a new processor process.
{ cat "$X2"; echo "E19990,Zelda,Quillfeather,,Account Executive,Sales,New York,E10003,Full-Time,2026-01-05"; } >"$T_DIR/x3.csv"
touch "$T_DIR/x3.csv"
ids ingest csv "$T_DIR/x3.csv" >/dev/null
ids process --until-idle >"$T_DIR/p3.out" 2>"$T_DIR/p3.log"
assert_contains "$(cat "$T_DIR/p3.log")" "policy $version restored from state"
assert_contains "$(cat "$T_DIR/p3.out")" "1 desired versions produced"
zq=$(ids as-of 2999-01-01 E19990 --json)
assert_eq "$version" "$(printf '%s' "$zq" | jq -r .policy_version)" "the new hire is mapped with the policy"
assert_eq '["dept-sales-americas","staff"]' "$(printf '%s' "$zq" | jq -c .groups)"

# State folder lost: rebuilt from the log, the markers switch again, and the
# next change is mapped with the policy as version 2.
rm -rf "$T_DIR/state/processor"
sed 's/^E19990,Zelda,Quillfeather,,Account Executive,/E19990,Zelda,Quillfeather,,Senior Account Executive,/' "$T_DIR/x3.csv" >"$T_DIR/x4.csv"
ids ingest csv "$T_DIR/x4.csv" >/dev/null
ids process --until-idle >"$T_DIR/p4.out" 2>"$T_DIR/p4.log"
assert_contains "$(cat "$T_DIR/p4.out")" "1 desired versions produced"
assert_contains "$(cat "$T_DIR/p4.log")" "(re-derived, not produced)"
zq=$(ids as-of 2999-01-01 E19990 --json)
assert_eq 2 "$(printf '%s' "$zq" | jq .version)"
assert_eq "$version" "$(printf '%s' "$zq" | jq -r .policy_version)"
assert_eq "Senior Account Executive" "$(printf '%s' "$zq" | jq -r .attributes.title)"

# ---------------------------------------------------------------- 4. replay, --default
out=$(ids replay --check) || fail "replay --check after the deployment: $out"
assert_contains "$out" "4 of 4 partitions"
assert_contains "$out" "followed 4 policy activations (0 refused)"
out=$(ids policy deploy --default --reason "back to the built-in mapping")
assert_contains "$out" "deployed default-1 (built-in mapping) to 4 partitions"
ids run --until-idle >"$T_DIR/run5.out" 2>"$T_DIR/run5.log"
assert_contains "$(cat "$T_DIR/run5.out")" "$((nsales + 1)) desired versions produced"
assert_eq $((nsales + 1)) "$(ldap_get "cn=dept-sales,$G" member | wc -l | tr -d ' ')" "dept-sales is back"
! ldap_exists "cn=dept-sales-emea,$G" || fail "dept-sales-emea still exists"
zq=$(ids as-of 2999-01-01 E19990 --json)
assert_eq "default-1" "$(printf '%s' "$zq" | jq -r .policy_version)"
out=$(ids replay --check) || fail "replay --check after two deployments: $out"
assert_contains "$out" "followed 8 policy activations (0 refused)"
# A plan of the current mapping finds nothing to do.
ids plan >"$T_DIR/plan.out" || fail "plan after --default: $(cat "$T_DIR/plan.out")"
echo ok
