# test_timers.sh — time as events, on the real broker and slapd: signed
# webhooks announce a termination and a leave a few seconds ahead; `run`
# keeps the accounts as they are until the effective instant, then its timer
# scheduler publishes REEVALUATE events, the fold disables / suspends, and
# slapd shows it.  Also: a hire whose start date is weeks away gets no
# account (PENDING, with a timer), a policy error holds that employee with a
# result `history` shows while the others go on, and `replay --check`
# reproduces every timed decision byte for byte.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 3' 'processor.timer_check_ms = 200' \
	'mapping.create_days_before_start = 7' 'mapping.enable = start'
B=$IDSTREAM_BIN
ids() { "$B" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
P=$T_LDAP_PEOPLE

(umask 077 && printf 'timer-secret\n' >"$T_DIR/generic.key")
spawn server "$B" --config "$T_CONF" ingest http --listen 127.0.0.1:0 \
	--port-file "$T_DIR/port" --secret-file generic="$T_DIR/generic.key"
wait_for 30 test -s "$T_DIR/port"
URL=http://127.0.0.1:$(cat "$T_DIR/port")

N=0
# send JSON: one signed generic delivery; asserts it was accepted.
send() {
	N=$((N + 1))
	printf '%s' "$1" >"$T_DIR/body.$N"
	_ts=$(date +%s)
	_sig=$({ printf '%s.' "$_ts"; cat "$T_DIR/body.$N"; } |
		openssl dgst -sha256 -hmac timer-secret -hex | awk '{print $NF}')
	_st=$(curl -sS -o "$T_DIR/resp.$N" -w '%{http_code}' -X POST \
		-H 'Content-Type: application/json' -H "X-Idstream-Timestamp: $_ts" \
		-H "X-Idstream-Delivery: timers-$N" -H "X-Idstream-Signature: v1=$_sig" \
		--data-binary @"$T_DIR/body.$N" "$URL/webhooks/generic")
	assert_eq 200 "$_st" "delivery $N accepted ($(cat "$T_DIR/resp.$N"))"
}
iso_in() { date -u -d "@$(($(date +%s) + $1))" +%Y-%m-%dT%H:%M:%SZ; }
today=$(date -u +%Y-%m-%d)
later=$(date -u -d '+40 days' +%Y-%m-%d)

spawn run "$B" --config "$T_CONF" run
RUN=$SPAWNED_PID

hire() { # hire ID FIRST LAST START
	send "{\"employee_id\":\"$1\",\"type\":\"HIRE\",\"attributes\":{\"first_name\":\"$2\",\"last_name\":\"$3\",\"department\":\"Sales\",\"start_date\":\"$4\"}}"
}
hire T1 Tess Tanaka "$today"
hire T2 Lars Lund "$today"
hire T3 Nora Novak "$later"
tess="uid=ttanaka,ou=Sales,$P"
lars="uid=llund,ou=Sales,$P"
wait_for 60 ldap_exists "$tess"
wait_for 60 ldap_exists "$lars"
assert_eq "" "$(ldap_get "$tess" pwdAccountLockedTime)" "T1 active after the hire"

# T3 starts in 40 days: pending, no account, a timer at its start date.
ndesired() { ids history "$1" --json 2>/dev/null | jq '[.[] | select(.kind == "desired")] | length'; }
has_desired() { [ "$(ndesired "$1")" -ge 1 ]; }
wait_for 30 has_desired T3
assert_eq PENDING "$(ids history T3 --json | jq -r '[.[] | select(.kind == "desired")][0].state')" \
	"T3 is pending"
assert_eq 0 "$(ldap_count "(employeeNumber=T3)")" "no account before the pre-start window"

# A termination effective in 6 s and a leave starting in 6 s.
at=$(iso_in 6)
send "{\"employee_id\":\"T1\",\"type\":\"TERMINATE\",\"effective_at\":\"$at\",\"reason\":\"resignation\"}"
send "{\"employee_id\":\"T2\",\"type\":\"LEAVE_START\",\"effective_at\":\"$at\",\"reason\":\"parental\"}"
sleep 3
assert_eq "" "$(ldap_get "$tess" pwdAccountLockedTime)" "T1 still enabled before the effective time"
assert_eq "" "$(ldap_get "$lars" pwdAccountLockedTime)" "T2 still enabled before the leave"
locked() { [ "$(ldap_get "$1" pwdAccountLockedTime)" = "000001010000Z" ]; }
wait_for 30 locked "$tess"
assert_eq "000001010000Z" "$(ldap_get "$tess" pwdAccountLockedTime)" "T1 disabled at the effective time"
wait_for 30 locked "$lars"
assert_eq "000001010000Z" "$(ldap_get "$lars" pwdAccountLockedTime)" "T2 suspended on leave"

# The decisions are timer events in hr.events, caused by the HR events.
h1=$(ids history T1 --json)
assert_eq 1 "$(printf '%s' "$h1" | jq '[.[] | select(.kind == "hr_event" and .type == "REEVALUATE")] | length')" \
	"one REEVALUATE for T1's timer"
assert_eq DISABLED "$(printf '%s' "$h1" | jq -r '[.[] | select(.kind == "desired")] | last | .state')"
term=$(printf '%s' "$h1" | jq -r '[.[] | select(.kind == "hr_event" and .type == "TERMINATE")][0].event_id')
assert_eq "$term" "$(printf '%s' "$h1" | jq -r '[.[] | select(.kind == "desired")] | last | .causes["@state"].event_id')" \
	"the disabled state is caused by the termination, not the timer"
h2=$(ids history T2 --json)
assert_eq SUSPENDED "$(printf '%s' "$h2" | jq -r '[.[] | select(.kind == "desired")] | last | .state')"

# A policy that fails for one employee holds that identity; others go on.
cat >"$T_DIR/policy.lua" <<'LUA'
local function identity(emp, ctx)
	if emp.last_name == "Broken" then
		error("no mapping for this employee")
	end
	local uid = initial(emp.first_name) .. alnum(emp.last_name)
	return { targets = { ldap = {
		attributes = { uid = uid, cn = join(" ", emp.first_name, emp.last_name),
		               sn = emp.last_name, employeeNumber = emp.employee_id },
		groups = ctx.state == "ACTIVE" and { "staff" } or {},
		container = "ou=" .. coalesce(emp.department, "Unassigned") } } }
end
return { targets = { "ldap" }, identity = identity }
LUA
ids policy deploy "$T_DIR/policy.lua" >"$T_DIR/deploy.out" 2>&1 ||
	fail "policy deploy: $(cat "$T_DIR/deploy.out")"
hire T4 Bob Broken "$today"
hire T5 Eve Ok "$today"
wait_for 60 ldap_exists "uid=eok,ou=Sales,$P"
held() { ids history T4 --json 2>/dev/null | grep -q 'no mapping for this employee'; }
wait_for 30 held
h4=$(ids history T4 --json)
assert_eq HELD "$(printf '%s' "$h4" | jq -r '[.[] | select(.kind == "sink_result" and .target == "processor")][0].outcome')" \
	"T4's identity is held by the processor"
assert_contains "$(ids history T4)" "no mapping for this employee" "history shows the policy error"
assert_eq 0 "$(ldap_count "(employeeNumber=T4)")" "no account for the held employee"

stop_pid "$RUN"
# Every timed decision is reproduced by a replay of the log.
ids replay --check >"$T_DIR/replay.out" 2>&1 || fail "replay --check: $(cat "$T_DIR/replay.out")"
assert_contains "$(cat "$T_DIR/replay.out")" "reproduced byte for byte" "replay reproduces identity.desired"
assert_contains "$(cat "$T_DIR/replay.out")" "3 of 3 partitions" "every partition identical"
