# test_apply.sh — plan, then apply: `idstream apply PLAN.json` deploys the
# planned policy only while the plan still holds, and afterwards the actual
# changes equal the planned ones.
#   1. a plan made before an HR change that alters it is refused as stale,
#      and nothing is deployed;
#   2. a plan whose policy file changed since is refused;
#   3. an HR change that does not alter the plan does not stop it: apply
#      deploys, waits for the running processor, and reports plan = actual;
#      afterwards the same plan finds nothing left to do, the replay is
#      identical and slapd holds the new groups.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 3'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
HR=$T_PREFIX.hr.events
G=$T_LDAP_GROUPS
X2=$IDSTREAM_REPO/examples/hr-export-2.csv
ids topics create >/dev/null
ids ingest csv "$IDSTREAM_REPO/examples/hr-export-1.csv" >/dev/null
ids ingest csv "$X2" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run1.log"
cp "$IDSTREAM_REPO/tests/cases/plan/split-sales.lua" "$T_DIR/policy.lua"
version=$(ids policy version "$T_DIR/policy.lua")
nsales=$(grep -c ',Sales,' "$X2")

set +e
ids plan --policy "$T_DIR/policy.lua" --out "$T_DIR/plan1.json" --html "$T_DIR/plan1.html" >"$T_DIR/plan1.out"
rc=$?
set -e
assert_eq 2 "$rc" "plan with changes"
assert_contains "$(cat "$T_DIR/plan1.out")" "$nsales employees change"
assert_contains "$(cat "$T_DIR/plan1.out")" "plan written to $T_DIR/plan1.json"
assert_eq "$version" "$(jq -r .policy_version "$T_DIR/plan1.json")"
assert_eq "$nsales" "$(jq '.employees_changed | length' "$T_DIR/plan1.json")"
assert_contains "$(cat "$T_DIR/plan1.html")" "Plan for policy $version" "the plan's HTML page"
assert_contains "$(cat "$T_DIR/plan1.html")" "dept-sales-emea"

# ---------------------------------------------------------------- 1. stale
# E10014 (Sales, Berlin) moves to New York: planned dept-sales-emea, now
# dept-sales-americas.
grep -q '^E10014,Lena,Vogel,,Sales Manager,Sales,Berlin,' "$X2" || fail "E10014 not in the export"
sed 's/^E10014,Lena,Vogel,,Sales Manager,Sales,Berlin,/E10014,Lena,Vogel,,Sales Manager,Sales,New York,/' \
	"$X2" >"$T_DIR/x3.csv"
ids ingest csv "$T_DIR/x3.csv" >/dev/null
ids process --until-idle >/dev/null 2>"$T_DIR/p3.log"
events=$(kafka_count "$HR")
if ids apply "$T_DIR/plan1.json" >"$T_DIR/apply1.out" 2>"$T_DIR/apply1.err"; then
	fail "a stale plan was applied"
fi
assert_contains "$(cat "$T_DIR/apply1.out")" "refused: the history moved since the plan"
assert_contains "$(cat "$T_DIR/apply1.out")" "employee E10014"
assert_contains "$(cat "$T_DIR/apply1.err")" "the plan is stale"
assert_eq "$events" "$(kafka_count "$HR")" "a refused apply deploys nothing"

# ---------------------------------------------------------------- 2. policy changed
set +e
ids plan --policy "$T_DIR/policy.lua" --out "$T_DIR/plan2.json" >/dev/null
set -e
assert_eq '["dept-sales-americas"]' \
	"$(jq -c '.employees_changed[] | select(.employee_id == "E10014") | [.changes[] | select(.kind == "group_add") | .group]' "$T_DIR/plan2.json")" \
	"the new plan sees the move"
printf '\n-- edited after the plan\n' >>"$T_DIR/policy.lua"
if ids apply "$T_DIR/plan2.json" >"$T_DIR/apply2.out" 2>"$T_DIR/apply2.err"; then
	fail "a plan whose policy file changed was applied"
fi
assert_contains "$(cat "$T_DIR/apply2.err")" "the plan was made for $version; plan again"
assert_eq "$events" "$(kafka_count "$HR")" "nothing deployed"
cp "$IDSTREAM_REPO/tests/cases/plan/split-sales.lua" "$T_DIR/policy.lua"

# ---------------------------------------------------------------- 3. apply
# A change outside Sales: the plan still holds.
sed 's/^E10002,Astrid,Çelik,,VP Engineering,/E10002,Astrid,Çelik,,Chief Technology Officer,/' \
	"$T_DIR/x3.csv" >"$T_DIR/x4.csv"
ids ingest csv "$T_DIR/x4.csv" >/dev/null
spawn processor "$IDSTREAM_BIN" --config "$T_CONF" process
PROC=$SPAWNED_PID
ids apply "$T_DIR/plan2.json" --reason "split Sales by region" >"$T_DIR/apply3.out" 2>"$T_DIR/apply3.err" ||
	fail "apply failed: $(cat "$T_DIR/apply3.out" "$T_DIR/apply3.err")"
out=$(cat "$T_DIR/apply3.out")
assert_contains "$out" "plan still holds: $nsales employees change under $version"
assert_contains "$out" "deployed $version (policy.lua) to 3 partitions"
assert_contains "$out" "applied $version: plan vs actual identical ($nsales employees changed)"
assert_eq $((events + 1 + 3)) "$(kafka_count "$HR")" "the HR change and one marker per partition"
# The markers carry the reason.
ids history @policy --json >"$T_DIR/markers.json"
assert_eq "split Sales by region" "$(jq -r '[.[] | select(.kind == "hr_event")][0].reason' "$T_DIR/markers.json")"
set +e
ids plan --policy "$T_DIR/policy.lua" >"$T_DIR/plan3.out"
rc=$?
set -e
assert_eq 0 "$rc" "nothing left to plan: $(cat "$T_DIR/plan3.out")"
stop_pid "$PROC"
out=$(ids replay --check) || fail "replay --check after apply: $out"
assert_contains "$out" "3 of 3 partitions"
ids sink ldap --until-idle >/dev/null 2>"$T_DIR/sink.log"
americas=$(grep ',Sales,' "$T_DIR/x4.csv" | grep -c -e ',New York,' -e ',São Paulo,')
assert_eq "$americas" "$(ldap_get "cn=dept-sales-americas,$G" member | wc -l | tr -d ' ')" "members of dept-sales-americas"
assert_contains "$(ldap_get "cn=dept-sales-americas,$G" member)" "uid=lvogel,"
echo ok
