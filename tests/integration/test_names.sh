# test_names.sh — unique names across employees, against the real broker
# and slapd: the names arbiter (`idstream names arbiter`) decides claims on
# <prefix>.names.claims and answers on hr.events.
#   1. two employees on different hr.events partitions claim the same name
#      in the same second → exactly one NAME_GRANTED, one NAME_DENIED (taken);
#   2. the owner claims it again → granted again;
#   3. `names import ldap` reserves the uids and mails slapd already has:
#      an outsider's claim is denied (reserved), the employee whose entry it
#      is (employeeNumber) is granted;
#   4. release with a quarantine: denied inside it (judged by claimed_at),
#      granted from its end;
#   5. kill -9 of the arbiter (at the commit failpoint and at a random
#      moment) mid-stream, restart → every claim answered exactly once, and
#      each answer is what a replay of the log decides.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 4' 'names.batch_ms = 20' 'names.batch_max = 25'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
out=$(ids topics create)
assert_contains "$out" "$T_PREFIX.names.claims (4 partitions)"
HR=$T_PREFIX.hr.events

# answers EMPLOYEE: "TYPE value reason" per name answer on the employee's stream.
answers() {
	ids history "$1" --json |
		jq -r '.. | objects | select(.type? == "NAME_GRANTED" or .type? == "NAME_DENIED")
		       | "\(.type) \(.attributes.value) \(.attributes.reason // "-")"'
}
# partition_of EMPLOYEE: the hr.events partition of the employee's answers.
partition_of() {
	kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -e -q -X isolation.level=read_committed \
		-f '%p %k\n' 2>/dev/null | awk -v k="$1" '$2 == k { print $1; exit }'
}
arbiter() { ids names arbiter --until-idle 2>>"$T_DIR/arbiter.log"; }

# ---------------------------------------------------------------- 1 + 2
T0=1767225600000 # 2026-01-01T00:00:00Z
ids names claim username asmith E1 --at $T0 >/dev/null
ids names claim username ASmith E2 --at $T0 >/dev/null
out=$(arbiter)
assert_contains "$out" "names: 1 granted, 1 denied"
assert_eq "NAME_GRANTED asmith -" "$(answers E1)" "E1 is granted asmith"
assert_eq "NAME_DENIED ASmith taken" "$(answers E2)" "E2 is denied ASmith"
p1=$(partition_of E1)
p2=$(partition_of E2)
[ -n "$p1" ] && [ -n "$p2" ] && [ "$p1" != "$p2" ] ||
	fail "E1 and E2 should be on different hr.events partitions (got '$p1' and '$p2')"
# The denial does not name the owner.
assert_eq "" "$(ids history E2 --json | jq -r '.. | objects | .attributes?.owner // empty')"
show=$(ids names show asmith --json)
assert_eq "GRANTED E1" "$(printf '%s' "$show" | jq -r '"\(.state) \(.owner)"')"
assert_eq "2" "$(printf '%s' "$show" | jq '.history | length')"

ids names claim username asmith E1 --at $((T0 + 60000)) >/dev/null
out=$(arbiter)
assert_contains "$out" "names: 1 granted, 0 denied"
assert_eq "2" "$(answers E1 | grep -c '^NAME_GRANTED asmith')" "owner granted again"
assert_eq 3 "$(kafka_count "$HR")" "three answers in hr.events"

# ---------------------------------------------------------------- 3
ldif() {
	printf 'dn: uid=%s,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nmail: %s@example.com\n' \
		"$1" "$T_LDAP_PEOPLE" "$1" "$1" "$1" "$1"
	[ -z "${2:-}" ] || printf 'employeeNumber: %s\n' "$2"
	printf '\n'
}
{ ldif jdoe; ldif bjones E900; } | _ldap ldapadd >/dev/null
out=$(ids names import ldap)
assert_contains "$out" "reserved 4 names (2 usernames, 2 e-mails, 0 other)"
printf '# legacy accounts\nnamespace,value,owner\nusername,root\nemail,Postmaster@Example.com,external:mailer\nsvc-backup\n' \
	>"$T_DIR/names.csv"
out=$(ids names import --file "$T_DIR/names.csv")
assert_contains "$out" "reserved 3 names (2 usernames, 1 e-mails, 0 other)"
ids names claim username jdoe E5 --at $T0 >/dev/null
ids names claim username bjones E900 --at $T0 >/dev/null
ids names claim email postmaster@example.com E5 --at $T0 >/dev/null
out=$(arbiter)
assert_contains "$out" "names: 1 granted, 2 denied, 7 reserved"
assert_contains "$(answers E5)" "NAME_DENIED jdoe reserved"
assert_contains "$(answers E5)" "NAME_DENIED postmaster@example.com reserved"
assert_eq "NAME_GRANTED bjones -" "$(answers E900)" "the entry's own employee"
assert_eq "RESERVED external:uid=jdoe,$T_LDAP_PEOPLE" \
	"$(ids names show jdoe --json | jq -r '"\(.state) \(.owner)"')"
set +e
ids names show nobody-has-this >/dev/null
rc=$?
set -e
assert_eq 3 "$rc" "a free name exits 3"

# ---------------------------------------------------------------- 4
T1=$((T0 + 86400000))
ids names release username asmith E1 --at $T1 --quarantine-days 30 >/dev/null
ids names claim username asmith E3 --at $((T1 + 29 * 86400000)) >/dev/null
ids names claim username asmith E3 --at $((T1 + 30 * 86400000)) >/dev/null
out=$(arbiter)
assert_contains "$out" "names: 1 granted, 1 denied, 0 reserved, 1 released"
assert_eq "NAME_DENIED asmith quarantined
NAME_GRANTED asmith -" "$(answers E3)"
assert_eq "GRANTED E3" "$(ids names show username:asmith --json | jq -r '"\(.state) \(.owner)"')"

# ---------------------------------------------------------------- 5
# 120 claims on 12 names from 30 employees, published before the arbiter runs.
i=0
: >"$T_DIR/claims.txt"
for e in $(seq 100 129); do
	for k in 1 2 3 4; do
		n=$(((e * k) % 12))
		printf 'username\tu%s\tE%s\t%s\n' "$n" "$e" "$((T1 + i))" >>"$T_DIR/claims.txt"
		i=$((i + 1))
	done
done
while IFS="$(printf '\t')" read -r ns v e at; do
	ids names claim "$ns" "$v" "$e" --at "$at" >/dev/null
done <"$T_DIR/claims.txt"
before=$(kafka_count "$HR")
set +e
IDSTREAM_FAILPOINTS=names.after_commit ids names arbiter --until-idle >/dev/null 2>"$T_DIR/crash1.log"
rc=$?
set -e
assert_eq 137 "$rc" "arbiter killed at names.after_commit"
# A second crash at a random moment while the restart re-decides and goes on.
spawn arb "$IDSTREAM_BIN" --config "$T_CONF" names arbiter
sleep 1.5
kill -KILL "$SPAWNED_PID"
wait "$SPAWNED_PID" 2>/dev/null || true
# Until its session times out (kafka.session.timeout.ms, 6 s here) the killed
# member still holds its partitions in the group; --until-idle stops when
# what it was given is caught up, so start it once they are free again.
sleep 7
out=$(arbiter)
# The gap left by the first crash is re-decided by whichever restart gets
# there first: the one killed at random, or the last.
assert_contains "$(cat "$T_DIR/arb.log" "$T_DIR/arbiter.log")" "re-deciding claims" "restart notices the gap"
after=$(kafka_count "$HR")
assert_eq 120 "$((after - before))" "every claim answered exactly once"
ids history E100 --json >/dev/null
# Each recorded answer is the one a replay of the log gives.
: >"$T_DIR/expected"
for n in $(seq 0 11); do
	ids names show "u$n" --json |
		jq -r '.history[] | select(.kind == "CLAIM") | "\(.employee_id) \(.value) \(.outcome)"' \
			>>"$T_DIR/expected"
done
: >"$T_DIR/actual"
for e in $(seq 100 129); do
	answers "E$e" | while read -r type v _; do
		case $type in NAME_GRANTED) o=granted ;; *) o=denied ;; esac
		printf 'E%s %s %s\n' "$e" "$v" "$o"
	done >>"$T_DIR/actual"
done
assert_eq 120 "$(wc -l <"$T_DIR/actual" | tr -d ' ')" "120 answers on the employees' streams"
assert_eq "$(sort "$T_DIR/expected")" "$(sort "$T_DIR/actual")" "answers = replay of the log"
assert_eq 12 "$(grep ' granted$' "$T_DIR/actual" | cut -d' ' -f1,2 | sort -u | wc -l | tr -d ' ')" \
	"one owner per name"
echo ok
