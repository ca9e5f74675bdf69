# test_unique_names.sh — a policy's `unique` candidate lists make usernames
# and e-mails unique, against the real broker and slapd:
#   1. an account made by hand (uid bjones) is reserved with
#      `names import ldap`;
#   2. two "Anna Smith" hired in the same export (the same second), on
#      different hr.events partitions, and a "Bob Jones": one `run
#      --until-idle` (processor + names arbiter + sink) ends with three
#      accounts whose uids are asmith and asmith2 (one each) and bjones2,
#      every answer recorded as NAME_GRANTED / NAME_DENIED in `history`;
#   3. a rename keeps the old uid until the new one is granted, then
#      releases it (names show: RELEASED, reserved for its old owner);
#   4. a processor killed between its commit and its state write (claims
#      produced) is restarted: each claim is made once, and the new Anna
#      Smith gets asmith3;
#   5. `replay --check` reproduces identity.desired byte for byte; `plan`
#      of the deployed policy plans nothing; `plan` of a policy with other
#      candidates assumes its (unanswered) claims granted.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 4'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
HR=$T_PREFIX.hr.events
ids topics create >/dev/null

cat >"$T_DIR/unique.lua" <<'LUA'
local DOMAIN = "example.com"
local function identity(emp, ctx)
	local base = initial(emp.first_name) .. alnum(emp.last_name)
	local usernames = candidates(base, with_suffixes(base, 5))
	local username = pick(ctx, "username", usernames)
	local emails = candidates(username .. "@" .. DOMAIN,
		join(".", alnum(emp.first_name), alnum(emp.last_name)) .. "@" .. DOMAIN)
	local full = join(" ", emp.first_name, emp.last_name)
	return {
		targets = { ldap = {
			attributes = { uid = username, mail = pick(ctx, "email", emails),
				cn = full, displayName = full, sn = emp.last_name,
				givenName = emp.first_name, employeeNumber = emp.employee_id },
			groups = ctx.state == "ACTIVE" and { "staff" } or {},
			container = "ou=" .. coalesce(emp.department, "Unassigned"),
		} },
		unique = { username = usernames, email = emails },
		timing = { name_quarantine_days = 30 },
	}
end
return { targets = { "ldap" }, identity = identity }
LUA

# uid_of EMPLOYEE: the uid of the employee's entry in slapd.
uid_of() {
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$T_LDAP_PEOPLE" "(employeeNumber=$1)" uid |
		sed -n 's/^uid: //p'
}
# answers EMPLOYEE: "TYPE namespace value reason" per name answer in history.
answers() {
	ids history "$1" --json |
		jq -r '.. | objects | select(.type? == "NAME_GRANTED" or .type? == "NAME_DENIED")
		       | "\(.type) \(.attributes.namespace) \(.attributes.value) \(.attributes.reason // "-")"'
}

# ---------------------------------------------------------------- 1
printf 'dn: uid=bjones,%s\nobjectClass: inetOrgPerson\nuid: bjones\ncn: B Jones\nsn: Jones\nmail: bjones@example.com\n\n' \
	"$T_LDAP_PEOPLE" | _ldap ldapadd >/dev/null
out=$(ids names import ldap)
assert_contains "$out" "reserved 2 names (1 usernames, 1 e-mails, 0 other)"
ids policy deploy "$T_DIR/unique.lua" >/dev/null

# ---------------------------------------------------------------- 2
cat >"$T_DIR/export.csv" <<'CSV'
employee_id,first_name,last_name,department,start_date
E1001,Anna,Smith,Sales,2020-01-01
E1002,Anna,Smith,Engineering,2020-01-01
E1004,Bob,Jones,Sales,2020-01-01
CSV
ids ingest csv "$T_DIR/export.csv" >/dev/null
p1=$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -e -q -X isolation.level=read_committed \
	-f '%p %k\n' 2>/dev/null | awk '$2 == "E1001" { print $1; exit }')
p2=$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -e -q -X isolation.level=read_committed \
	-f '%p %k\n' 2>/dev/null | awk '$2 == "E1002" { print $1; exit }')
[ -n "$p1" ] && [ -n "$p2" ] && [ "$p1" != "$p2" ] ||
	fail "E1001 and E1002 should be on different hr.events partitions (got '$p1' and '$p2')"

ids run --until-idle >"$T_DIR/run1.out" 2>"$T_DIR/run1.log" ||
	fail "run --until-idle failed: $(tail -5 "$T_DIR/run1.log")"
u1=$(uid_of E1001)
u2=$(uid_of E1002)
assert_eq "asmith asmith2" "$(printf '%s\n%s\n' "$u1" "$u2" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')" \
	"the two Anna Smiths' uids (E1001: $u1, E1002: $u2)"
assert_eq "bjones2" "$(uid_of E1004)" "Bob Jones's uid (bjones is reserved)"
# mail_of EMPLOYEE: the mail of the employee's entry in slapd.
mail_of() {
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$T_LDAP_PEOPLE" "(employeeNumber=$1)" mail |
		sed -n 's/^mail: //p'
}
# The e-mail is built from the username granted, else first.last: which one
# an employee keeps depends on which grant came first (a granted e-mail that
# is still a candidate is kept), never bjones@ (reserved).
case $(mail_of E1004) in
bjones2@example.com | bob.jones@example.com) ;;
*) fail "Bob Jones's mail: $(mail_of E1004)" ;;
esac
assert_eq "1" "$(ldap_count '(uid=asmith)' "$T_LDAP_PEOPLE")" "one asmith"
assert_eq "bjones@example.com" "$(ldap_get "uid=bjones,$T_LDAP_PEOPLE" mail)" \
	"the hand-made account is untouched"
if [ "$u1" = asmith ]; then win=E1001 lose=E1002; else win=E1002 lose=E1001; fi
assert_eq "asmith@example.com" "$(mail_of $win)" "the first Anna Smith's mail"
case $(mail_of $lose) in
asmith2@example.com | anna.smith@example.com) ;;
*) fail "the second Anna Smith's mail: $(mail_of $lose)" ;;
esac
a=$(answers $win)
assert_contains "$a" "NAME_GRANTED username asmith -"
assert_contains "$a" "NAME_GRANTED email asmith@example.com -"
a=$(answers $lose)
assert_contains "$a" "NAME_DENIED username asmith taken"
assert_contains "$a" "NAME_GRANTED username asmith2 -"
a=$(answers E1004)
assert_contains "$a" "NAME_DENIED username bjones reserved"
assert_contains "$a" "NAME_DENIED email bjones@example.com reserved"
assert_contains "$a" "NAME_GRANTED username bjones2 -"
# Each employee got one desired version: created with its final names.
keys=$(kafka_keys "$T_PREFIX.identity.desired" | LC_ALL=C sort | tr '\n' ' ')
assert_eq "E1001 E1002 E1004 " "$keys" "one desired version each"
assert_contains "$(cat "$T_DIR/run1.out")" "names: "

# ---------------------------------------------------------------- 3
cat >"$T_DIR/rename.csv" <<'CSV'
employee_id,first_name,last_name,department,start_date
E1001,Anna,Smith,Sales,2020-01-01
E1002,Anna,Smith,Engineering,2020-01-01
E1004,Bob,Brown,Sales,2020-01-01
CSV
ids ingest csv "$T_DIR/rename.csv" >/dev/null
ids run --until-idle >"$T_DIR/run2.out" 2>"$T_DIR/run2.log" ||
	fail "second run failed: $(tail -5 "$T_DIR/run2.log")"
assert_eq "bbrown" "$(uid_of E1004)" "renamed once bbrown was granted"
ldap_exists "uid=bjones2,ou=Sales,$T_LDAP_PEOPLE" && fail "bjones2 should be renamed"
show=$(ids names show username:bjones2 --json)
assert_eq "RELEASED E1004" "$(printf '%s' "$show" | jq -r '"\(.state) \(.owner)"')" \
	"the old uid is released, still its old owner's"

# ---------------------------------------------------------------- 4
{ cat "$T_DIR/rename.csv"; echo 'E1003,Anna,Smith,Sales,2020-01-01'; } >"$T_DIR/hire3.csv"
ids ingest csv "$T_DIR/hire3.csv" >/dev/null
set +e
IDSTREAM_FAILPOINTS=processor.after_commit ids process --until-idle >/dev/null 2>"$T_DIR/crash.log"
rc=$?
set -e
assert_eq 137 "$rc" "processor killed at processor.after_commit"
ids run --until-idle >"$T_DIR/run3.out" 2>"$T_DIR/run3.log" ||
	fail "run after the crash failed: $(tail -5 "$T_DIR/run3.log")"
assert_eq "asmith3" "$(uid_of E1003)" "the third Anna Smith's uid"
for n in asmith asmith2 asmith3; do
	assert_eq 1 "$(ids names show "username:$n" --json |
		jq '[.history[] | select(.kind == "CLAIM" and .employee_id == "E1003")] | length')" \
		"E1003's claims of $n"
done

# ---------------------------------------------------------------- 5
ids replay --check >"$T_DIR/replay.out" 2>&1 ||
	fail "replay --check: $(cat "$T_DIR/replay.out")"
ids plan >"$T_DIR/plan0.out" 2>&1 || fail "plan of the log's own policy: $(cat "$T_DIR/plan0.out")"
ids plan --policy "$T_DIR/unique.lua" >"$T_DIR/plan1.out" 2>&1 ||
	fail "plan of the deployed policy: $(cat "$T_DIR/plan1.out")"
sed 's/local usernames = candidates(base, with_suffixes(base, 5))/local usernames = candidates(alnum(emp.first_name) .. alnum(emp.last_name), base)/' \
	"$T_DIR/unique.lua" >"$T_DIR/full.lua"
set +e
ids plan --policy "$T_DIR/full.lua" --json >"$T_DIR/plan2.json" 2>"$T_DIR/plan2.err"
rc=$?
set -e
assert_eq 2 "$rc" "exit status of a plan that renames"
assert_eq "bbrown bobbrown" \
	"$(jq -r '.employees_changed[] | select(.employee_id == "E1004") | .changes[]
	          | select(.kind == "rename") | "\(.old) \(.new)"' "$T_DIR/plan2.json")" \
	"the planned uid is the new first candidate, assumed granted"
