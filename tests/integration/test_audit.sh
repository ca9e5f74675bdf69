# test_audit.sh — the audit questions on a real pipeline: `why` names the
# operation, rule and HR event behind each attribute (and behind a disable),
# `as-of` gives the identity before and after a transfer.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 3' 'ingest.termination_threshold = 0.5'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null

cat >"$T_DIR/day1.csv" <<'CSV'
employee_id,first_name,last_name,title,department
E700,Rosalind,Franklin,Chemist,Research
E701,Lise,Meitner,Physicist,Research
E702,Emmy,Noether,Mathematician,Research
CSV
ids ingest csv "$T_DIR/day1.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run1.log"
sleep 1.1 # so the two days have distinct effective times
between=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.1
# Day 2: E700 moves to Engineering with a new title; E702 leaves.
cat >"$T_DIR/day2.csv" <<'CSV'
employee_id,first_name,last_name,title,department
E700,Rosalind,Franklin,Lead Chemist,Engineering
E701,Lise,Meitner,Physicist,Research
CSV
touch "$T_DIR/day2.csv"
ids ingest csv "$T_DIR/day2.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run2.log"

# why: the title was written by a modify of version 2, rule default.title,
# caused by the UPDATE event of day2.csv.
out=$(ids why E700 --attr title)
assert_contains "$out" "Lead Chemist"
assert_contains "$out" "modify v2"
assert_contains "$out" "default.title"
assert_contains "$out" "UPDATE effective"
assert_contains "$out" "csv:day2.csv"
# The container: moved by a modrdn, caused by the same update.
out=$(ids why E700 --attr @container)
assert_contains "$out" "ou=Engineering"
assert_contains "$out" "modrdn v2"
assert_contains "$out" "default.container"
# An attribute unchanged since the hire points at the HIRE.
assert_contains "$(ids why E700 --attr sn)" "HIRE effective"
# Why was E702 disabled: the TERMINATE event and its effective time.
out=$(ids why E702 --attr @state --json)
assert_contains "$out" '"value": "DISABLED"'
assert_contains "$out" '"op": "disable"'
assert_contains "$out" '"type": "TERMINATE"'
assert_contains "$out" '"effective_at"'
# Groups: each membership has its operation.
assert_contains "$(ids why E700 --attr @groups)" "group_add"
# Unknown attribute: a clear error.
if ids why E700 --attr noSuchAttr >/dev/null 2>"$T_DIR/err"; then
	fail "why accepted an unknown attribute"
fi
assert_contains "$(cat "$T_DIR/err")" 'no attribute "noSuchAttr"'

# as-of: before and after the transfer.
before=$(ids as-of "$between" E700)
assert_contains "$before" "v1 ACTIVE"
assert_contains "$before" "container   ou=Research"
after=$(ids as-of "$(date -u +%Y-%m-%dT%H:%M:%SZ)" E700)
assert_contains "$after" "v2 ACTIVE"
assert_contains "$after" "container   ou=Engineering"
# Everyone at that instant: three active employees in Research.
all=$(ids as-of "$between" --json)
assert_eq 3 "$(printf '%s' "$all" | grep -c '"state": "ACTIVE"')" "active employees before day 2"
assert_eq 3 "$(printf '%s' "$all" | grep -c '"container": "ou=Research"')"
assert_contains "$(ids as-of 2000-01-01 E700)" "had no identity"
echo ok
