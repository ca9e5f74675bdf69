# test_plan.sh — plan before apply: replaying the whole history under a
# candidate policy lists exactly the employees it would change, writes
# nothing, and exits 0 / 2 like `terraform plan -detailed-exitcode`.
. "$IDSTREAM_REPO/tests/lib.sh"

write_config 'topic.partitions = 4'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
ids ingest csv "$IDSTREAM_REPO/examples/hr-export-1.csv" >/dev/null
ids ingest csv "$IDSTREAM_REPO/examples/hr-export-2.csv" >/dev/null
ids process --until-idle >/dev/null 2>"$T_DIR/process.log"
desired_before=$(kafka_count "$T_PREFIX.identity.desired")

# The current mapping again: nothing to do.
set +e
out=$(ids plan)
rc=$?
set -e
assert_eq 0 "$rc" "exit status of a plan without changes"
assert_contains "$out" "no changes"
assert_contains "$out" "replayed 286 events of 263 employees"

# Sales split into two regional groups: exactly the active Sales people
# change, each leaving dept-sales and joining one of the new groups.
set +e
ids plan --policy "$IDSTREAM_REPO/tests/cases/plan/split-sales.lua" --json >"$T_DIR/plan.json"
rc=$?
set -e
assert_eq 2 "$rc" "exit status of a plan with changes"
# Active Sales employees: the rows of the second export (leavers are absent
# from it) whose department column is Sales.
sales=$(grep -c ',Sales,' "$IDSTREAM_REPO/examples/hr-export-2.csv")
changed=$(grep -c '"employee_id"' "$T_DIR/plan.json")
assert_eq "$sales" "$changed" "employees in the plan = active Sales employees"
removes=$(grep -A1 '"kind": "group_remove"' "$T_DIR/plan.json" | grep -c '"group": "dept-sales"')
assert_eq "$sales" "$removes" "every one of them leaves dept-sales"
adds=$(grep -A1 '"kind": "group_add"' "$T_DIR/plan.json" | grep -c '"group": "dept-sales-')
assert_eq "$sales" "$adds" "and joins a regional group"
assert_contains "$(cat "$T_DIR/plan.json")" '"dept-sales":' "summary of group removals"
! grep -q '"kind": "attribute"' "$T_DIR/plan.json" || fail "the split changed an attribute"
human=$(ids plan --policy "$IDSTREAM_REPO/tests/cases/plan/split-sales.lua" || true)
assert_contains "$human" "$sales employees change"
assert_contains "$human" "users leave group dept-sales"

# A plan writes nothing.
assert_eq "$desired_before" "$(kafka_count "$T_PREFIX.identity.desired")" "plan produced nothing"
echo ok
