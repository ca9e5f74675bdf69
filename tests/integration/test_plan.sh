# test_plan.sh — plan before apply: replaying the whole history under a
# candidate policy lists exactly the employees it would change (summary for
# its target, per-employee diff, also with --at), writes nothing, exits
# 0 / 2 / 1 like `terraform plan -detailed-exitcode`, and shows progress on
# a terminal only.
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
assert_contains "$human" "$sales employees change in target ldap"
assert_contains "$human" "users leave group dept-sales"
assert_eq ldap "$(jq -r .target "$T_DIR/plan.json")" "the plan names its target"

# --at: the log's policies up to TIME, the candidate from then on.  This
# mapping depends on no time, so the same employees change the same way.
set +e
ids plan --policy "$IDSTREAM_REPO/tests/cases/plan/split-sales.lua" \
	--at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --json >"$T_DIR/plan-at.json"
rc=$?
set -e
assert_eq 2 "$rc" "exit status of a plan with --at"
assert_eq "$(jq -c .employees_changed "$T_DIR/plan.json")" \
	"$(jq -c .employees_changed "$T_DIR/plan-at.json")" "the changes with --at"
assert_eq number "$(jq -r '.at | type' "$T_DIR/plan-at.json")" "the plan records --at"

# Errors exit 1: a policy file that is not there, or does not compile.
set +e
ids plan --policy "$T_DIR/missing.lua" >/dev/null 2>"$T_DIR/err1"
rc1=$?
printf 'this is not lua\n' >"$T_DIR/broken.lua"
ids plan --policy "$T_DIR/broken.lua" >/dev/null 2>"$T_DIR/err2"
rc2=$?
set -e
assert_eq 1 "$rc1" "exit status of a plan with a missing policy"
assert_contains "$(cat "$T_DIR/err1")" "missing.lua"
assert_eq 1 "$rc2" "exit status of a plan with a broken policy"

# The progress bar: on a terminal (script gives plan one) it counts the
# events replayed with the rate; into a pipe or file there is none.
script -qec "$IDSTREAM_BIN --config $T_CONF plan" /dev/null >"$T_DIR/tty.out" || true
assert_contains "$(cat "$T_DIR/tty.out")" "replayed 286 events in"
assert_contains "$(cat "$T_DIR/tty.out")" "events/s"
assert_contains "$(cat "$T_DIR/tty.out")" "no changes"
ids plan >"$T_DIR/pipe.out" 2>&1
case $(cat "$T_DIR/pipe.out") in *replay*events/s*) fail "progress bar without a terminal" ;; esac

# A plan writes nothing.
assert_eq "$desired_before" "$(kafka_count "$T_PREFIX.identity.desired")" "plan produced nothing"
echo ok
