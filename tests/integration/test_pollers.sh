# test_pollers.sh — the two pollers against the real broker, read back from
# the topic with `idstream history EMP --json` and kcat:
#   `ingest poll bamboohr` against the local stand-in of the BambooHR API
#   (tests/tools/hr_api_standin.py, the documented changed-since contract):
#     - a first poll publishes a HIRE per new active employee, nothing for
#       one that left before idstream knew them; a second poll nothing;
#     - with the API down the poll fails naming it, publishes nothing, keeps
#       its watermark, and publishes the change once the API is back;
#     - a change the webhook server already published (update, deletion) is
#       not published again by the poll;
#     - a crash between the Kafka commit and the watermark write publishes
#       nothing twice;
#   `ingest csv --watch DIR`:
#     - two exports dropped are processed oldest first, moved to done/, their
#       events in the topic; dot-files and partial uploads stay untouched;
#     - a malformed export goes to failed/ with a .error naming the problem,
#       nothing published;
#     - a crash between recording and moving does not publish twice;
#     - a file still being written is processed only once it is complete.
. "$IDSTREAM_REPO/tests/lib.sh"

B=$IDSTREAM_BIN
write_config 'topic.partitions = 3' 'ingest.source = hrexport'
"$B" --config "$T_CONF" topics create >"$T_DIR/topics.log" 2>&1 ||
	fail "topics create: $(cat "$T_DIR/topics.log")"
TOPIC=$T_PREFIX.hr.events

# event EMP FILTER: the jq FILTER applied to EMP's hr_event records.
event() {
	"$B" --config "$T_CONF" history "$1" --json 2>>"$T_DIR/history.log" |
		jq -c "[.[] | select(.kind == \"hr_event\")] | $2"
}

# ================================================================ poll bamboohr

(umask 077 && printf 'poll-api-key-123\n' >"$T_DIR/bamboohr.key")
REC=$T_DIR/records.json
# records JSON: replaces the stand-in's data atomically.
records() {
	printf '%s\n' "$1" >"$REC.tmp"
	mv "$REC.tmp" "$REC"
}
records '{
 "101": {"id": "101", "firstName": "Ada", "lastName": "Lovelace", "jobTitle": "Engineer",
         "department": "R&D", "status": "Active",
         "_action": "Inserted", "_lastChanged": "2026-03-01T10:00:00+00:00"},
 "102": {"id": "102", "firstName": "Alan", "lastName": "Turing", "jobTitle": "Analyst",
         "department": "Research", "status": "Active",
         "_action": "Inserted", "_lastChanged": "2026-03-01T10:05:00Z"},
 "103": {"id": "103", "firstName": "Old", "lastName": "Timer", "status": "Inactive",
         "_lastChanged": "2026-03-01T09:00:00Z"}}'

standin() { # standin PORT
	rm -f "$T_DIR/api.port"
	spawn standin python3 "$IDSTREAM_REPO/tests/tools/hr_api_standin.py" --source bamboohr \
		--records "$REC" --token-file "$T_DIR/bamboohr.key" \
		--port "$1" --port-file "$T_DIR/api.port"
	STANDIN=$SPAWNED_PID
	wait_for 30 test -s "$T_DIR/api.port"
}
standin 0
API_PORT=$(cat "$T_DIR/api.port")
API=http://127.0.0.1:$API_PORT/api/gateway.php/acme

N=0
# poll: one pass; its stdout in $T_DIR/poll.N.out, stderr in poll.N.err; sets
# POLL_RC and POLL_OUT.
poll() {
	N=$((N + 1))
	POLL_RC=0
	"$B" --config "$T_CONF" ingest poll bamboohr --once --api-url "$API" \
		--api-key-file "$T_DIR/bamboohr.key" --api-timeout 2000 \
		>"$T_DIR/poll.$N.out" 2>"$T_DIR/poll.$N.err" || POLL_RC=$?
	POLL_OUT=$(cat "$T_DIR/poll.$N.out")
}

# ---------------------------------------------------------------- first poll

poll
assert_eq 0 "$POLL_RC" "first poll (stderr: $(cat "$T_DIR/poll.$N.err"))"
assert_contains "$POLL_OUT" "2 events published"
assert_eq '["HIRE","bamboohr","poll:bamboohr","Ada","Lovelace","Engineer","R&D",1772359200000]' \
	"$(event 101 '.[0] | [.type, .source, .actor, .attributes.first_name, .attributes.last_name, .attributes.title, .attributes.department, .effective_at]')" \
	"HIRE of 101"
assert_eq '[["HIRE","Alan","Analyst"]]' \
	"$(event 102 '[.[] | [.type, .attributes.first_name, .attributes.title]]')" "HIRE of 102"
assert_eq '[]' "$(event 103 '.')" "an employee inactive before idstream knew them is not hired"
assert_eq 2 "$(kafka_count "$TOPIC")" "events after the first poll"
# The documented contract: since in ISO 8601, the key as Basic user, JSON.
assert_contains "$(cat "$T_DIR/standin.log")" \
	"GET /api/gateway.php/acme/v1/employees/changed?since=1970-01-01T00:00:00Z 200"
assert_contains "$(cat "$T_DIR/standin.log")" "GET /api/gateway.php/acme/v1/employees/101?fields="

# ---------------------------------------------------------------- second poll

poll
assert_eq 0 "$POLL_RC" "second poll"
assert_contains "$POLL_OUT" "0 events published"
assert_contains "$POLL_OUT" "since 2026-03-01T10:05:00Z"
assert_eq 2 "$(kafka_count "$TOPIC")" "the second poll published nothing"

# ---------------------------------------------------------------- HR API down

records '{
 "101": {"id": "101", "firstName": "Ada", "lastName": "Lovelace", "jobTitle": "Engineer",
         "department": "R&D", "status": "Active",
         "_action": "Inserted", "_lastChanged": "2026-03-01T10:00:00+00:00"},
 "102": {"id": "102", "firstName": "Alan", "lastName": "Turing", "jobTitle": "Lead Analyst",
         "department": "Research", "status": "Active",
         "_action": "Updated", "_lastChanged": "2026-03-02T08:00:00Z"},
 "103": {"id": "103", "firstName": "Old", "lastName": "Timer", "status": "Inactive",
         "_lastChanged": "2026-03-01T09:00:00Z"}}'
stop_pid "$STANDIN" 10 || true
poll
[ "$POLL_RC" -ne 0 ] || fail "a poll with the HR API down succeeded: $POLL_OUT"
ERR=$(cat "$T_DIR/poll.$N.err")
assert_contains "$ERR" "BambooHR API http://127.0.0.1:$API_PORT/api/gateway.php/acme/v1/employees/changed"
assert_contains "$ERR" "watermark unchanged"
assert_eq 2 "$(kafka_count "$TOPIC")" "nothing published while the API is down"

standin "$API_PORT"
poll
assert_eq 0 "$POLL_RC" "poll after the API is back (stderr: $(cat "$T_DIR/poll.$N.err"))"
assert_contains "$POLL_OUT" "since 2026-03-01T10:05:00Z" "watermark kept across the failure"
assert_eq '[["HIRE","Analyst","new in BambooHR"],["UPDATE","Lead Analyst","changed: title"]]' \
	"$(event 102 '[.[] | [.type, .attributes.title, .reason] | map(select(. != null))]')" \
	"the change is published once the API is back"
assert_eq 3 "$(kafka_count "$TOPIC")" "events after the API came back"
poll
assert_eq 3 "$(kafka_count "$TOPIC")" "published once"

# ---------------------------------------------------------------- webhook + poll

printf 'bamboohr-webhook-secret\n' >"$T_DIR/webhook.key"
rm -f "$T_DIR/port"
spawn server "$B" --config "$T_CONF" ingest http --listen 127.0.0.1:0 \
	--port-file "$T_DIR/port" --secret-file bamboohr="$T_DIR/webhook.key"
SERVER=$SPAWNED_PID
wait_for 30 test -s "$T_DIR/port"
URL=http://127.0.0.1:$(cat "$T_DIR/port")

hook() { # hook BODY: a signed BambooHR webhook; prints the HTTP status
	printf '%s' "$1" >"$T_DIR/hook.body"
	_ts=$(date +%s)
	_sig=$({ cat "$T_DIR/hook.body"; printf '%s' "$_ts"; } |
		openssl dgst -sha256 -hmac bamboohr-webhook-secret -hex | awk '{print $NF}')
	curl -sS -o "$T_DIR/hook.resp" -w '%{http_code}' -X POST \
		-H 'Content-Type: application/json' -H "X-BambooHR-Timestamp: $_ts" \
		-H "X-BambooHR-Signature: $_sig" --data-binary @"$T_DIR/hook.body" \
		"$URL/webhooks/bamboohr"
}

# An update of 101 arrives by webhook first ...
assert_eq 200 "$(hook '{"employees":[{"action":"Updated","changedFields":["Job Title"],"fields":{"Job Title":"Principal Engineer"},"id":"101","timestamp":"2026-03-03T09:00:00+0000"}]}')" \
	"webhook update (answer: $(cat "$T_DIR/hook.resp"))"
# ... and 102's deletion too.
assert_eq 200 "$(hook '{"type":"employee.deleted","timestamp":"2026-03-03T09:30:00+0000","data":{"companyId":"1","employeeId":"102"}}')" \
	"webhook deletion (answer: $(cat "$T_DIR/hook.resp"))"
assert_eq 5 "$(kafka_count "$TOPIC")" "events after the webhooks"
# ... then the poll sees the same changes in BambooHR.
records '{
 "101": {"id": "101", "firstName": "Ada", "lastName": "Lovelace", "jobTitle": "Principal Engineer",
         "department": "R&D", "status": "Active",
         "_action": "Updated", "_lastChanged": "2026-03-03T09:00:00Z"},
 "102": {"_action": "Deleted", "_lastChanged": "2026-03-03T09:30:00Z"},
 "103": {"id": "103", "firstName": "Old", "lastName": "Timer", "status": "Inactive",
         "_lastChanged": "2026-03-01T09:00:00Z"}}'
poll
assert_eq 0 "$POLL_RC" "poll after the webhooks (stderr: $(cat "$T_DIR/poll.$N.err"))"
assert_contains "$POLL_OUT" "2 changed"
assert_contains "$POLL_OUT" "2 already in the log"
assert_eq 5 "$(kafka_count "$TOPIC")" "changes seen by webhook and poll are published once"
assert_eq '[["HIRE","poll:bamboohr","Engineer"],["UPDATE","webhook:bamboohr","Principal Engineer"]]' \
	"$(event 101 '[.[] | [.type, .actor, .attributes.title]]')" "101: one update, by webhook"
assert_eq '["HIRE","UPDATE","TERMINATE"]' "$(event 102 '[.[].type]')" "102: one termination"
assert_eq '"webhook:bamboohr"' "$(event 102 '.[2].actor')" "the termination came by webhook"

# A change only the poll sees is still published (mapped as the webhook maps
# it): status Inactive → TERMINATE.
records '{
 "101": {"id": "101", "firstName": "Ada", "lastName": "Lovelace", "jobTitle": "Principal Engineer",
         "department": "R&D", "status": "Inactive",
         "_action": "Updated", "_lastChanged": "2026-03-04T12:00:00Z"},
 "102": {"_action": "Deleted", "_lastChanged": "2026-03-03T09:30:00Z"}}'
# A crash right after the commit: the watermark is not written ...
IDSTREAM_FAILPOINTS=poll.after_commit poll
[ "$POLL_RC" -ne 0 ] || fail "the failpoint did not stop the poll"
assert_eq 6 "$(kafka_count "$TOPIC")" "the crashed pass committed its event"
# ... and the next pass asks again from the old watermark, publishing nothing twice.
poll
assert_eq 0 "$POLL_RC" "poll after the crash (stderr: $(cat "$T_DIR/poll.$N.err"))"
assert_contains "$POLL_OUT" "since 2026-03-03T09:30:00Z"
assert_contains "$POLL_OUT" "0 events published"
assert_eq 6 "$(kafka_count "$TOPIC")" "nothing published twice after the crash"
assert_eq '["TERMINATE","Inactive","poll:bamboohr"]' \
	"$(event 101 '.[-1] | [.type, .attributes.status, .actor]')" "status Inactive terminates"

stop_pid "$SERVER" 30 || fail "webhook server exited non-zero"
if grep -q 'poll-api-key-123' "$T_DIR"/poll.*.out "$T_DIR"/poll.*.err; then
	fail "the API key appears in the poller's output"
fi

# ================================================================ csv --watch

W=$T_DIR/drop
mkdir -p "$W"
BEFORE=$(kafka_count "$TOPIC")

watch_once() { # watch_once: one --once run; sets WATCH_RC and WATCH_OUT
	WATCH_RC=0
	"$B" --config "$T_CONF" ingest csv --watch "$W" --once --settle-ms 300 \
		>"$T_DIR/watch.out" 2>"$T_DIR/watch.err" || WATCH_RC=$?
	WATCH_OUT=$(cat "$T_DIR/watch.out")
}

# Two exports; the older one has the later name, so name order would be wrong.
printf 'employee_id,first_name,last_name,department\nE1,Grace,Hopper,Navy\nE2,Katherine,Johnson,NASA\n' \
	>"$W/b-monday.csv"
touch -d '2026-03-02 08:00:00' "$W/b-monday.csv"
printf 'employee_id,first_name,last_name,department\nE1,Grace,Hopper,Research\nE2,Katherine,Johnson,NASA\nE3,Dorothy,Vaughan,NASA\n' \
	>"$W/a-tuesday.csv"
touch -d '2026-03-03 08:00:00' "$W/a-tuesday.csv"
# Not (yet) exports: a partial upload and a dot-file.
printf 'employee_id,first_name,last_name\nX1,Partial,Upload\n' >"$W/c-wednesday.csv.part"
printf 'employee_id,first_name,last_name\nX2,Hidden,File\n' >"$W/.c-wednesday.csv"

watch_once
assert_eq 0 "$WATCH_RC" "watch --once (stderr: $(cat "$T_DIR/watch.err"))"
assert_contains "$WATCH_OUT" "2 processed, 0 refused"
assert_eq '[["HIRE","Navy","csv:b-monday.csv"],["UPDATE","Research","csv:a-tuesday.csv"]]' \
	"$(event E1 '[.[] | [.type, .attributes.department, .actor]]')" "E1: the exports in the order they arrived"
assert_eq '["HIRE"]' "$(event E3 '[.[].type]')" "E3 hired by the second export"
assert_eq $((BEFORE + 4)) "$(kafka_count "$TOPIC")" "events of the two exports"
assert_eq "a-tuesday.csv b-monday.csv" "$(cd "$W/done" && echo *)" "both moved to done/"
assert_eq "c-wednesday.csv.part" "$(cd "$W" && ls -p | grep -v / | tr '\n' ' ' | sed 's/ $//')" \
	"only the partial upload left in the folder"
[ -f "$W/.c-wednesday.csv" ] || fail "the dot-file was touched"
assert_eq '[]' "$(event X1 '.')" "partial upload not ingested"

# Nothing left to do: a second run publishes nothing.
watch_once
assert_eq 0 "$WATCH_RC" "second watch --once"
assert_contains "$WATCH_OUT" "0 processed"
assert_eq $((BEFORE + 4)) "$(kafka_count "$TOPIC")" "a second run published nothing"

# A malformed export: refused, moved to failed/ with the reason, nothing published.
printf 'employee_id,first_name\nE1,Grace\n' >"$W/d-broken.csv"
watch_once
assert_eq 1 "$WATCH_RC" "watch --once with a refused file exits 1"
assert_contains "$WATCH_OUT" "0 processed, 1 refused"
[ -f "$W/failed/d-broken.csv" ] || fail "the malformed export is not in failed/"
[ ! -e "$W/d-broken.csv" ] || fail "the malformed export is still in the folder"
assert_contains "$(cat "$W/failed/d-broken.csv.error")" "last_name" "the .error names the problem"
assert_contains "$(cat "$W/failed/d-broken.csv.error")" "EPARSE"
assert_eq $((BEFORE + 4)) "$(kafka_count "$TOPIC")" "nothing of the malformed export published"

# A crash after the file was processed and recorded, before it was moved ...
printf 'employee_id,first_name,last_name,department\nE1,Grace,Hopper,Research\nE2,Katherine,Johnson,NASA\nE3,Dorothy,Vaughan,Computing\n' \
	>"$W/e-thursday.csv"
touch -d '2026-03-05 08:00:00' "$W/e-thursday.csv"
WATCH_RC=0
IDSTREAM_FAILPOINTS=watch.after_record "$B" --config "$T_CONF" ingest csv --watch "$W" \
	--once --settle-ms 300 >"$T_DIR/watch.out" 2>"$T_DIR/watch.err" || WATCH_RC=$?
[ "$WATCH_RC" -ne 0 ] || fail "the failpoint did not stop the watcher"
[ -f "$W/e-thursday.csv" ] || fail "the file was moved despite the crash"
assert_eq $((BEFORE + 5)) "$(kafka_count "$TOPIC")" "the crashed run published the file's event"
# ... is finished by the next run without publishing again.
watch_once
assert_eq 0 "$WATCH_RC" "watch after the crash (stderr: $(cat "$T_DIR/watch.err"))"
assert_contains "$WATCH_OUT" "1 recovered after an interruption"
[ -f "$W/done/e-thursday.csv" ] || fail "the recovered file is not in done/"
assert_eq $((BEFORE + 5)) "$(kafka_count "$TOPIC")" "nothing published twice"
assert_eq '["HIRE","UPDATE"]' "$(event E3 '[.[].type]')" "E3: one update"

# Running until SIGTERM: a file written in two steps is taken only once complete.
spawn watcher "$B" --config "$T_CONF" ingest csv --watch "$W" --settle-ms 1500
WATCHER=$SPAWNED_PID
{
	printf 'employee_id,first_name,last_name,department\nE1,Grace,Hopper,Research\nE2,Katherine,Johnson,NASA\n'
	sleep 1
	printf 'E3,Dorothy,Vaughan,Computing\nE5,Mary,Jackson,NASA\n'
} >"$W/f-friday.csv"
wait_for 30 test -f "$W/done/f-friday.csv"
assert_eq '["HIRE"]' "$(event E5 '[.[].type]')" "E5 hired from the completed file"
assert_eq '["HIRE","UPDATE"]' "$(event E3 '[.[].type]')" "E3 not terminated by a half-written file"
stop_pid "$WATCHER" 15 || fail "the watcher exited non-zero: $(tail -5 "$T_DIR/watcher.log")"
assert_contains "$(cat "$T_DIR/watcher.log")" "1 processed, 0 refused"
