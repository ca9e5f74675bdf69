# test_ingest_http.sh — `idstream ingest http` as a sender sees it, over real
# HTTP against the real broker (and, for thin events, a local stand-in of the
# HR API: tests/tools/hr_api_standin.py):
#   - every source's valid, signed payload becomes the right EmployeeEvent in
#     hr.events (read back with `idstream history EMP --json`);
#   - every refusal (forged, unsigned, stale, replayed, malformed, mistyped,
#     too large, unknown source, thin without an HR API) is a 4xx whose body
#     names the reason, and the topic is unchanged;
#   - with the broker stopped the answer is 503 with Retry-After; after the
#     restart the sender's retry is accepted and the event is in the log once;
#   - thin events are completed from the HR API; while it is down they are
#     acknowledged (202) into the durable outbox, survive a server restart,
#     and are published once, in order, when the API is back.
. "$IDSTREAM_REPO/tests/lib.sh"

B=$IDSTREAM_BIN
write_config 'topic.partitions = 3'
"$B" --config "$T_CONF" topics create >"$T_DIR/topics.log" 2>&1 ||
	fail "topics create: $(cat "$T_DIR/topics.log")"
TOPIC=$T_PREFIX.hr.events

# Test-only secrets, one file per source (generic has two: key rotation).
for s in generic bamboohr hibob gusto personio; do
	(umask 077 && printf '%s-secret\n' "$s" >"$T_DIR/$s.key")
done
printf 'generic-old\n' >>"$T_DIR/generic.key"

# The broker is stopped and started again below; make sure it runs again
# whatever happens to this test, for the tests after it.
KAFKA_STOPPED=0
KPORT=${IDSTREAM_TEST_KAFKA##*:}
kafka_service() {
	IDSTREAM_KAFKA_PORT=$KPORT sh "$IDSTREAM_REPO/scripts/services.sh" "$1" kafka
}
cleanup() {
	lib_cleanup
	if [ "$KAFKA_STOPPED" = 1 ]; then kafka_service start >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The HiBob API stand-in, with the records it serves.
printf 'svc-user:api-token\n' >"$T_DIR/hibob-api.token"
cat >"$T_DIR/records.json" <<'JSON'
{"H2": {"id": "H2", "firstName": "Hedy", "surname": "Lamarr",
        "work": {"title": "Inventor", "department": "R&D", "reportsTo": {"id": "H0"}}}}
JSON
standin() { # standin PORT
	spawn standin python3 "$IDSTREAM_REPO/tests/tools/hr_api_standin.py" --source hibob \
		--records "$T_DIR/records.json" --token-file "$T_DIR/hibob-api.token" \
		--port "$1" --port-file "$T_DIR/api.port"
	STANDIN=$SPAWNED_PID
	wait_for 30 test -s "$T_DIR/api.port"
}
standin 0
API_PORT=$(cat "$T_DIR/api.port")

start_server() {
	rm -f "$T_DIR/port"
	spawn server "$B" --config "$T_CONF" ingest http --listen 127.0.0.1:0 \
		--port-file "$T_DIR/port" --publish-timeout 2000 \
		--secret-file generic="$T_DIR/generic.key" \
		--secret-file bamboohr="$T_DIR/bamboohr.key" \
		--secret-file hibob="$T_DIR/hibob.key" \
		--secret-file gusto="$T_DIR/gusto.key" \
		--secret-file personio="$T_DIR/personio.key" \
		--hr-api hibob="http://127.0.0.1:$API_PORT" \
		--hr-api-token-file hibob="$T_DIR/hibob-api.token" --hr-api-timeout 1000
	SERVER=$SPAWNED_PID
	wait_for 30 test -s "$T_DIR/port"
	URL=http://127.0.0.1:$(cat "$T_DIR/port")
}
start_server

# ---------------------------------------------------------------- helpers

hmac_hex() { openssl dgst -"$1" -hmac "$2" -hex | awk '{print $NF}'; }

# post SOURCE BODYFILE [HEADER...]: POSTs the exact bytes of BODYFILE; sets
# STATUS, RESP (the body) and HDRS (response headers file).
post() {
	_src=$1
	_file=$2
	shift 2
	HDRS=$T_DIR/resp.hdrs
	RESP=$(curl -sS -o - -D "$HDRS" -w '\n%{http_code}' -X POST \
		-H 'Content-Type: application/json' "$@" \
		--data-binary @"$_file" "$URL/webhooks/$_src") || fail "curl to $_src failed"
	STATUS=${RESP##*$'\n'}
	RESP=${RESP%$'\n'*}
}

# body TEXT: writes TEXT (no newline) to a fresh file; prints its name.
N=0
body() {
	N=$((N + 1))
	printf '%s' "$1" >"$T_DIR/body.$N"
	printf '%s' "$T_DIR/body.$N"
}

# generic_post BODYFILE DELIVERY [TS [KEY [CURL-ARG...]]]: a correctly signed
# generic delivery (TS and KEY may be "" for the defaults).
generic_post() {
	_f=$1
	_d=$2
	_ts=${3:-$(date +%s)}
	_key=${4:-generic-secret}
	shift 2
	[ $# -eq 0 ] || shift
	[ $# -eq 0 ] || shift
	_sig=$({ printf '%s.' "$_ts"; cat "$_f"; } | hmac_hex sha256 "$_key")
	post generic "$_f" -H "X-Idstream-Timestamp: $_ts" -H "X-Idstream-Delivery: $_d" \
		-H "X-Idstream-Signature: v1=$_sig" "$@"
}

expect() { # expect STATUS ERROR-CODE WHAT
	assert_eq "$1" "$STATUS" "$3: HTTP status (body: $RESP)"
	[ -z "$2" ] || assert_eq "$2" "$(printf '%s' "$RESP" | jq -r .error)" "$3: error code"
	if [ -n "$2" ]; then
		[ -n "$(printf '%s' "$RESP" | jq -r .detail)" ] || fail "$3: no detail in $RESP"
	fi
}

# event EMP FILTER: the jq FILTER applied to EMP's hr_event records.
event() {
	"$B" --config "$T_CONF" history "$1" --json 2>>"$T_DIR/history.log" |
		jq -c "[.[] | select(.kind == \"hr_event\")] | $2"
}

# ---------------------------------------------------------------- valid payloads

# generic: a HIRE with attributes, signed with the second (old) key.
f=$(body '{"employee_id":"G1","type":"HIRE","effective_at":"2026-02-01","attributes":{"first_name":"Ada","last_name":"Lovelace","department":"Research"},"actor":"hr-script","reason":"new starter"}')
generic_post "$f" gen-1 "" generic-old
expect 200 "" "generic HIRE"
assert_eq 1 "$(printf '%s' "$RESP" | jq '.events | length')" "events in the answer"
EID=$(printf '%s' "$RESP" | jq -r '.events[0].event_id')
assert_eq "[\"$EID\",\"HIRE\",\"generic\",\"gen-1\",\"Ada\",\"Research\",1769904000000,\"hr-script\"]" \
	"$(event G1 '.[0] | [.event_id, .type, .source, .source_event_id, .attributes.first_name, .attributes.department, .effective_at, .actor]')" \
	"generic event in the topic"

# bamboohr, field-based: an update with values, and a status change to Inactive.
f=$(body '{"employees":[{"action":"Updated","changedFields":["Job Title"],"fields":{"First Name":"Bryony","Last Name":"Hale","Job Title":"CTO"},"id":"B1","timestamp":"2026-01-31T18:42:00+0000"},{"action":"Updated","changedFields":["Status"],"fields":{"Status":"Inactive"},"id":"B2"}]}')
ts=$(date +%s)
sig=$({ cat "$f"; printf '%s' "$ts"; } | hmac_hex sha256 bamboohr-secret)
post bamboohr "$f" -H "X-BambooHR-Timestamp: $ts" -H "X-BambooHR-Signature: $sig"
expect 200 "" "bamboohr field-based"
assert_eq '["UPDATE","bamboohr","Bryony","Hale","CTO",1769884920000]' \
	"$(event B1 '.[0] | [.type, .source, .attributes.first_name, .attributes.last_name, .attributes.title, .occurred_at]')" \
	"bamboohr update"
assert_eq '"TERMINATE"' "$(event B2 '.[0].type')" "bamboohr Status=Inactive"

# bamboohr, event-based: employee.deleted.
f=$(body '{"type":"employee.deleted","timestamp":"2026-01-31T18:42:00+0000","data":{"companyId":"1","employeeId":"B3"}}')
ts=$(date +%s)
sig=$({ cat "$f"; printf '%s' "$ts"; } | hmac_hex sha256 bamboohr-secret)
post bamboohr "$f" -H "X-BambooHR-Timestamp: $ts" -H "X-BambooHR-Signature: $sig"
expect 200 "" "bamboohr event-based"
assert_eq '["TERMINATE","bamboohr"]' "$(event B3 '.[0] | [.type, .source]')" "bamboohr delete"

# hibob: lifecycle employee.left (base64 HMAC-SHA512 of the body).
f=$(body '{"companyId":636192,"type":"employee.left","triggeredBy":"3332883804594373380","triggeredAt":"2025-01-08T13:06:26.915906","version":"v2","data":{"employeeId":"H1","effectiveDate":"2025-01-10"}}')
sig=$(openssl dgst -sha512 -hmac hibob-secret -binary <"$f" | base64 -w0)
post hibob "$f" -H "Bob-Signature: $sig"
expect 200 "" "hibob employee.left"
assert_eq '["TERMINATE","hibob","hibob:3332883804594373380",1736467200000]' \
	"$(event H1 '.[0] | [.type, .source, .actor, .effective_at]')" "hibob event"

# gusto: employee.rehire_effective.
f=$(body '{"uuid":"5b7d0f6a-0000-4000-8000-000000000001","event_type":"employee.rehire_effective","resource_type":"Company","resource_uuid":"c-1","entity_type":"Employee","entity_uuid":"U1","timestamp":1767225600}')
post gusto "$f" -H "X-Gusto-Signature: $(hmac_hex sha256 gusto-secret <"$f")"
expect 200 "" "gusto rehire"
assert_eq '["REHIRE","gusto","5b7d0f6a-0000-4000-8000-000000000001",1767225600000]' \
	"$(event U1 '.[0] | [.type, .source, .source_event_id, .occurred_at]')" "gusto event"

# personio: person.updated carrying attributes.
f=$(body '{"company_id":"42","event_name":"person.updated","occurred_at":"2026-03-01T09:00:00Z","payload":{"id":"P1","attributes":{"position":{"label":"Position","value":"Engineer"},"office":"Berlin"}},"meta":{}}')
post personio "$f" -H "X-Personio-Signature: $(hmac_hex sha256 personio-secret <"$f")"
expect 200 "" "personio update"
assert_eq '["UPDATE","personio","Engineer","Berlin"]' \
	"$(event P1 '.[0] | [.type, .source, .attributes.title, .attributes.location]')" "personio event"

# A valid delivery of an event type idstream does not use: 200, nothing published.
f=$(body '{"companyId":1,"type":"table.entry.created","data":{"employeeId":"H9","tableId":"work"}}')
post hibob "$f" -H "Bob-Signature: $(openssl dgst -sha512 -hmac hibob-secret -binary <"$f" | base64 -w0)"
expect 200 "" "hibob table event"
assert_eq '"ignored"' "$(printf '%s' "$RESP" | jq .status)" "ignored delivery"

# ---------------------------------------------------------------- refusals

BEFORE=$(kafka_count "$TOPIC")
assert_eq 7 "$BEFORE" "events published by the valid deliveries"

f=$(body '{"employee_id":"R1","type":"UPDATE","attributes":{"title":"x"}}')
generic_post "$f" ref-1 "" wrong-secret
expect 401 bad_signature "forged signature"
post generic "$f" -H "X-Idstream-Timestamp: $(date +%s)" -H "X-Idstream-Delivery: ref-2"
expect 401 missing_signature "unsigned"
generic_post "$f" ref-3 $(($(date +%s) - 1000))
expect 401 timestamp_out_of_window "stale timestamp"
assert_contains "$RESP" "outside the accepted window of 300 s"
f2=$(body '{"employee_id":"G1","type":"HIRE","effective_at":"2026-02-01","attributes":{"first_name":"Ada","last_name":"Lovelace","department":"Research"},"actor":"hr-script","reason":"new starter"}')
generic_post "$f2" gen-1
expect 409 duplicate_delivery "replayed delivery id"
assert_contains "$RESP" "already accepted"
# The same BambooHR body again (its retry) is a duplicate too: id = body digest.
f=$(body '{"type":"employee.deleted","timestamp":"2026-01-31T18:42:00+0000","data":{"companyId":"1","employeeId":"B3"}}')
ts=$(date +%s)
sig=$({ cat "$f"; printf '%s' "$ts"; } | hmac_hex sha256 bamboohr-secret)
post bamboohr "$f" -H "X-BambooHR-Timestamp: $ts" -H "X-BambooHR-Signature: $sig"
expect 409 duplicate_delivery "bamboohr retry"
f=$(body '{"employee_id":"R1","type":"UPDATE",')
generic_post "$f" ref-4
expect 400 malformed_json "malformed JSON"
f=$(body '{"employee_id":"R1","type":"UPDATE","attributes":{"title":42}}')
generic_post "$f" ref-5
expect 422 invalid_payload "wrong field type"
assert_contains "$RESP" "attributes.title"
f=$(body '{"employee_id":"R1","type":"PROMOTE"}')
generic_post "$f" ref-6
expect 422 invalid_payload "unknown event type"
f=$(body '{"employee_id":"R1","type":"UPDATE"}')
ts=$(date +%s)
post generic "$f" -H "X-Idstream-Timestamp: $ts" \
	-H "X-Idstream-Signature: v1=$({ printf '%s.' "$ts"; cat "$f"; } | hmac_hex sha256 generic-secret)"
expect 400 missing_delivery_id "no delivery id"
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$T_DIR/big"
generic_post "$T_DIR/big" ref-7
expect 413 body_too_large "body over the limit (Content-Length)"
STATUS=$(curl -s -o "$T_DIR/resp.big" -w '%{http_code}' -H 'Content-Type: application/json' \
	-H 'Transfer-Encoding: chunked' --data-binary @"$T_DIR/big" "$URL/webhooks/generic")
RESP=$(cat "$T_DIR/resp.big")
expect 413 body_too_large "body over the limit (chunked)"
post workday "$f"
expect 404 unknown_source "unknown source"
f=$(body '{"uuid":"u-thin","event_type":"employee.created","entity_type":"Employee","entity_uuid":"U2","timestamp":1767225600}')
post gusto "$f" -H "X-Gusto-Signature: $(hmac_hex sha256 gusto-secret <"$f")"
expect 422 enrichment_unavailable "thin event without an HR API"
STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: text/plain' --data x "$URL/webhooks/generic")
assert_eq 415 "$STATUS" "non-JSON media type"

assert_eq "$BEFORE" "$(kafka_count "$TOPIC")" "refused deliveries published nothing"

# The server's own account of it.
METRICS=$(curl -s "$URL/metrics")
assert_contains "$METRICS" 'idstream_webhook_requests_total{source="generic",outcome="bad_signature"} 1'
assert_contains "$METRICS" 'idstream_webhook_requests_total{source="generic",outcome="duplicate_delivery"} 1'
assert_contains "$METRICS" 'idstream_webhook_events_published_total{source="bamboohr"} 3'
assert_contains "$METRICS" 'idstream_webhook_publish_seconds_count 6'
assert_eq ok "$(curl -s "$URL/healthz" | jq -r .status)" "healthz"

# ---------------------------------------------------------------- broker down

f=$(body '{"employee_id":"K1","type":"TERMINATE","reason":"left during the outage"}')
kafka_service stop >"$T_DIR/kafka-stop.log" 2>&1 || fail "stopping Kafka: $(cat "$T_DIR/kafka-stop.log")"
KAFKA_STOPPED=1
t0=$(date +%s%3N)
generic_post "$f" outage-1
t1=$(date +%s%3N)
expect 503 unavailable "broker stopped"
grep -qi '^Retry-After: [0-9]' "$HDRS" || fail "503 without Retry-After: $(cat "$HDRS")"
[ $((t1 - t0)) -lt 10000 ] || fail "503 took $((t1 - t0)) ms, expected about the 2000 ms publish timeout"
# The sender retries while the broker is still down: still 503, not a duplicate.
generic_post "$f" outage-1
expect 503 unavailable "retry during the outage"
kafka_service start >"$T_DIR/kafka-start.log" 2>&1 || fail "starting Kafka: $(cat "$T_DIR/kafka-start.log")"
KAFKA_STOPPED=0
# The sender keeps retrying until accepted (bounded).
for _i in $(seq 1 30); do
	generic_post "$f" outage-1
	[ "$STATUS" != 200 ] || break
	[ "$STATUS" = 503 ] || fail "retry after the restart: $STATUS $RESP"
	sleep 1
done
expect 200 "" "retry after the restart"
generic_post "$f" outage-1
expect 409 duplicate_delivery "retry after acceptance"
assert_eq '[["TERMINATE","outage-1"]]' "$(event K1 '[.[] | [.type, .source_event_id]]')" \
	"the event is in the log exactly once"
assert_eq $((BEFORE + 1)) "$(kafka_count "$TOPIC")" "nothing else was published"

# ---------------------------------------------------------------- thin events

hibob_post() { # hibob_post BODYFILE
	post hibob "$1" -H "Bob-Signature: $(openssl dgst -sha512 -hmac hibob-secret -binary <"$1" | base64 -w0)"
}
COUNT=$(kafka_count "$TOPIC")

# Completed from the API: the HIRE carries the record's fields.
f=$(body '{"companyId":1,"type":"employee.created","triggeredAt":"2026-03-02T08:00:00","data":{"employeeId":"H2"}}')
hibob_post "$f"
expect 200 "" "thin hibob employee.created"
assert_eq '["HIRE","Hedy","Lamarr","Inventor","R&D","H0"]' \
	"$(event H2 '.[0] | [.type, .attributes.first_name, .attributes.last_name, .attributes.title, .attributes.department, .attributes.manager_id]')" \
	"enriched HIRE"
grep -q '^POST /v1/people/H2 200' "$T_DIR/standin.log" || fail "stand-in saw no request: $(cat "$T_DIR/standin.log")"
# The API does not know the employee: refused, nothing published.
f=$(body '{"companyId":1,"type":"employee.created","triggeredAt":"2026-03-02T08:00:01","data":{"employeeId":"H404"}}')
hibob_post "$f"
expect 422 invalid_payload "employee unknown to the HR API"
assert_eq $((COUNT + 1)) "$(kafka_count "$TOPIC")" "one event from the thin deliveries"

# The API goes down: acknowledged into the outbox, in order, nothing published yet.
stop_pid "$STANDIN" 5 || true
f_join=$(body '{"companyId":1,"type":"employee.joined","triggeredAt":"2026-03-03T00:00:00","data":{"employeeId":"H3"}}')
hibob_post "$f_join"
expect 202 "" "thin event while the HR API is down"
assert_eq '"queued"' "$(printf '%s' "$RESP" | jq .status)" "queued answer"
# A complete event of the same employee queues behind it (order kept).
f=$(body '{"companyId":1,"type":"employee.left","triggeredAt":"2026-03-04T00:00:00","data":{"employeeId":"H3"}}')
hibob_post "$f"
expect 202 "" "later event of an employee waiting in the outbox"
hibob_post "$f_join"
expect 409 duplicate_delivery "retry of a queued delivery"
assert_contains "$(curl -s "$URL/metrics")" "idstream_webhook_outbox_depth 2"
assert_eq $((COUNT + 1)) "$(kafka_count "$TOPIC")" "nothing published while the API is down"

# The outbox is durable: restart the server, then bring the API back.
stop_pid "$SERVER" 30 || fail "server exited non-zero: $(tail -5 "$T_DIR/server.log")"
assert_contains "$(cat "$T_DIR/server.log")" "deliveries accepted"
cp "$T_DIR/server.log" "$T_DIR/server-1.log"
start_server
jq '. + {"H3": {"firstName": "Mary", "surname": "Jackson", "work": {"title": "Engineer"}}}' \
	"$T_DIR/records.json" >"$T_DIR/records.new" && mv "$T_DIR/records.new" "$T_DIR/records.json"
standin "$API_PORT"
wait_for 60 sh -c "[ \"\$(curl -s $URL/metrics | grep '^idstream_webhook_outbox_depth ')\" = 'idstream_webhook_outbox_depth 0' ]"
assert_eq '[["HIRE","Mary","Engineer"],["TERMINATE",null,null]]' \
	"$(event H3 '[.[] | [.type, .attributes.first_name, .attributes.title]]')" \
	"queued events published once, in order, completed from the API"
assert_eq $((COUNT + 3)) "$(kafka_count "$TOPIC")" "outbox published exactly its two events"

# ---------------------------------------------------------------- shutdown

stop_pid "$SERVER" 30 || fail "server exited non-zero: $(tail -5 "$T_DIR/server.log")"
assert_contains "$(cat "$T_DIR/server.log")" "deliveries accepted"
if grep -q 'generic-secret\|bamboohr-secret\|hibob-secret\|api-token' "$T_DIR"/server*.log; then
	fail "a secret appears in the server log"
fi

# ---------------------------------------------------------------- TLS

# The same state over HTTPS: delivery ids are remembered across restarts.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T_DIR/tls.key" -out "$T_DIR/tls.pem" \
	-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1 ||
	fail "openssl could not make a test certificate"
rm -f "$T_DIR/port"
spawn tls "$B" --config "$T_CONF" ingest http --listen 127.0.0.1:0 --port-file "$T_DIR/port" \
	--secret-file generic="$T_DIR/generic.key" --tls-cert "$T_DIR/tls.pem" --tls-key "$T_DIR/tls.key"
TLS_SERVER=$SPAWNED_PID
wait_for 30 test -s "$T_DIR/port"
URL=https://127.0.0.1:$(cat "$T_DIR/port")
assert_eq ok "$(curl -s --cacert "$T_DIR/tls.pem" "$URL/healthz" | jq -r .status)" "healthz over TLS"
f=$(body '{"employee_id":"T1","type":"UPDATE","attributes":{"title":"Over TLS"}}')
generic_post "$f" tls-1 "" "" --cacert "$T_DIR/tls.pem"
expect 200 "" "delivery over TLS"
generic_post "$f2" gen-1 "" "" --cacert "$T_DIR/tls.pem"
expect 409 duplicate_delivery "delivery id remembered across a restart"
assert_eq '["UPDATE","Over TLS"]' "$(event T1 '.[0] | [.type, .attributes.title]')" "TLS event"
stop_pid "$TLS_SERVER" 30 || fail "TLS server exited non-zero: $(tail -5 "$T_DIR/tls.log")"
