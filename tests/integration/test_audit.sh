# test_audit.sh — the audit questions on a real pipeline: `why` names the
# operation, rule and HR event behind each attribute (and behind a disable),
# `as-of` gives the identity before and after a transfer (of one employee
# and of everyone: a later hire is absent before), and after a policy
# deployment `why` names the activation (policy name and version) behind a
# changed group while `history` shows the policy's name and version, not its
# source.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 3' 'ingest.termination_threshold = 0.5'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null

cat >"$T_DIR/day1.csv" <<'CSV'
employee_id,first_name,last_name,title,department,location
E700,Rosalind,Franklin,Chemist,Research,
E701,Lise,Meitner,Physicist,Research,
E702,Emmy,Noether,Mathematician,Research,
E703,Grace,Hopper,Account Executive,Sales,New York
CSV
ids ingest csv "$T_DIR/day1.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run1.log"
sleep 1.1 # so the two days have distinct effective times
between=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.1
# Day 2: E700 moves to Engineering with a new title; E702 leaves; E704 is
# hired.
cat >"$T_DIR/day2.csv" <<'CSV'
employee_id,first_name,last_name,title,department,location
E700,Rosalind,Franklin,Lead Chemist,Engineering,
E701,Lise,Meitner,Physicist,Research,
E703,Grace,Hopper,Account Executive,Sales,New York
E704,Chien-Shiung,Wu,Physicist,Research,
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
# Everyone at that instant: three active employees in Research, one in Sales.
all=$(ids as-of "$between" --json)
assert_eq 4 "$(printf '%s' "$all" | grep -c '"state": "ACTIVE"')" "active employees before day 2"
assert_eq 3 "$(printf '%s' "$all" | grep -c '"container": "ou=Research"')"
assert_contains "$(ids as-of 2000-01-01 E700)" "had no identity"
# Everyone, as a table, from the index `run` wrote: before day 2 E700 is in
# Research and E704 (hired on day 2) is absent; after it E700 is in
# Engineering, E702 disabled, E704 there.
tbl=$(ids --set log.level=debug as-of "$between" 2>"$T_DIR/asof-before.log")
assert_contains "$(cat "$T_DIR/asof-before.log")" "index used: 4 employees"
assert_contains "$(printf '%s\n' "$tbl" | grep '^E700 ')" "ou=Research"
assert_contains "$(printf '%s\n' "$tbl" | grep '^E702 ')" "ACTIVE"
case $tbl in *E704*) fail "as-of before day 2 lists E704, hired later: $tbl" ;; esac
assert_contains "$tbl" "4 employees at $between"
tbl=$(ids as-of "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
assert_contains "$(printf '%s\n' "$tbl" | grep '^E700 ')" "ou=Engineering"
assert_contains "$(printf '%s\n' "$tbl" | grep '^E700 ')" "dept-engineering"
assert_contains "$(printf '%s\n' "$tbl" | grep '^E702 ')" "DISABLED"
assert_contains "$(printf '%s\n' "$tbl" | grep '^E704 ')" "cwu"
assert_contains "$tbl" "5 employees at"
# The same answer without the index (a scan of identity.desired).
ids as-of "$between" --json >"$T_DIR/asof.idx"
mv "$T_DIR/state/index" "$T_DIR/state/index.off"
ids as-of "$between" --json >"$T_DIR/asof.scan"
mv "$T_DIR/state/index.off" "$T_DIR/state/index"
cmp -s "$T_DIR/asof.idx" "$T_DIR/asof.scan" || fail "as-of --json differs without the index"

# A policy deployment: Sales split by region moves E703 from dept-sales to
# dept-sales-americas.  `why` on that membership names the activation event
# with the policy's name and version.
SPLIT=$IDSTREAM_REPO/tests/cases/plan/split-sales.lua
version=$(ids policy version "$SPLIT")
ids policy deploy "$SPLIT" --reason "split Sales by region" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run3.log"
out=$(ids why E703 --attr @groups)
row=$(printf '%s\n' "$out" | grep ' dept-sales-americas ') || fail "no dept-sales-americas row: $out"
assert_contains "$row" "group_add v2"
assert_contains "$row" "POLICY_ACTIVATED split-sales.lua $version effective"
assert_contains "$row" "idstream policy deploy"
# staff, a member since the hire, still points at the HIRE.
row=$(printf '%s\n' "$out" | grep ' staff ') || fail "no staff row: $out"
assert_contains "$row" "group_add v1"
assert_contains "$row" "HIRE effective"
json=$(ids why E703 --attr @groups --json)
got=$(printf '%s' "$json" | jq -c '.[] | select(.value == "dept-sales-americas") |
	[.policy_version, .hr_event.type, .hr_event.policy_name, .hr_event.policy_version, .hr_event.reason]')
assert_eq "[\"$version\",\"POLICY_ACTIVATED\",\"split-sales.lua\",\"$version\",\"split Sales by region\"]" "$got" \
	"why --json of the new membership"
# Unchanged attributes keep their HR cause.
assert_contains "$(ids why E703 --attr sn)" "HIRE effective"
# history: the activation with name and version, without its Lua source
# (--verbose and --json have it).
hist=$(ids history E703)
row=$(printf '%s\n' "$hist" | grep 'POLICY_ACTIVATED') || fail "no activation in history: $hist"
assert_contains "$row" "policy_name=split-sales.lua"
assert_contains "$row" "policy_version=$version"
case $hist in *"local AMERICAS"* | *policy_sha256* | *identity\(*) fail "history printed the policy's source: $hist" ;; esac
assert_contains "$(ids history E703 --verbose)" "local AMERICAS"
assert_eq "$version" "$(ids history E703 --json | jq -r '.[] | select(.type == "POLICY_ACTIVATED") | .attributes.policy_version')"
assert_contains "$(ids history E703 --json)" "local AMERICAS"
# An employee the deployment did not change has no activation in history.
case $(ids history E701) in *POLICY_ACTIVATED*) fail "E701's history shows the activation" ;; esac
# The same answers from a scan of the partitions as from the index.
[ -f "$T_DIR/state/index/CURRENT" ] || fail "run did not write the index"
ids why E703 >"$T_DIR/why.idx"
ids history E703 --json >"$T_DIR/hist.idx"
mv "$T_DIR/state/index" "$T_DIR/state/index.off"
ids why E703 >"$T_DIR/why.scan"
ids history E703 --json >"$T_DIR/hist.scan"
mv "$T_DIR/state/index.off" "$T_DIR/state/index"
cmp -s "$T_DIR/why.idx" "$T_DIR/why.scan" || fail "why differs without the index"
cmp -s "$T_DIR/hist.idx" "$T_DIR/hist.scan" || fail "history differs without the index"

# Day 3: E700 returns to Research.  Its dept-research membership broke on
# day 2, so `why` names the day-3 UPDATE, not the HIRE (why reads only the
# versions around each membership's start; the scan reads them all).
sed 's/^E700,Rosalind,Franklin,Lead Chemist,Engineering,$/E700,Rosalind,Franklin,Lead Chemist,Research,/' \
	"$T_DIR/day2.csv" >"$T_DIR/day3.csv"
ids ingest csv "$T_DIR/day3.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run4.log"
row=$(ids why E700 --attr @groups | grep ' dept-research ') || fail "no dept-research row"
assert_contains "$row" "UPDATE effective"
assert_contains "$row" "csv:day3.csv"
# Day 4: E701's new title is processed and indexed but not yet applied:
# why explains the version the target has (v1), with its causes.
sed 's/^E701,Lise,Meitner,Physicist,/E701,Lise,Meitner,Senior Physicist,/' \
	"$T_DIR/day3.csv" >"$T_DIR/day4.csv"
ids ingest csv "$T_DIR/day4.csv" >/dev/null
ids process --until-idle >/dev/null 2>"$T_DIR/process5.log"
ids index --until-idle >/dev/null 2>"$T_DIR/index5.log"
out=$(ids why E701)
assert_contains "$out" "desired v1 (ACTIVE)"
assert_contains "$(printf '%s\n' "$out" | grep '^title ')" "HIRE effective"
# Day 5: E703's new title is processed and applied, not indexed: why
# explains a version past the indexed position.
sed 's/^E703,Grace,Hopper,Account Executive,/E703,Grace,Hopper,Sales Director,/' \
	"$T_DIR/day4.csv" >"$T_DIR/day5.csv"
ids ingest csv "$T_DIR/day5.csv" >/dev/null
ids process --until-idle >/dev/null 2>"$T_DIR/process6.log"
ids sink ldap --until-idle >/dev/null 2>"$T_DIR/sink6.log"
out=$(ids why E703 --attr title)
assert_contains "$out" "Sales Director"
assert_contains "$out" "csv:day5.csv"
# Days 6 and 7: two more changes of E701, processed, not applied; the
# first indexed, the second not: the target is at v2, behind the indexed
# v3, and v4 lies past the indexed position.
sed 's/^E701,Lise,Meitner,Senior Physicist,/E701,Lise,Meitner,Principal Physicist,/' \
	"$T_DIR/day5.csv" >"$T_DIR/day6.csv"
ids ingest csv "$T_DIR/day6.csv" >/dev/null
ids process --until-idle >/dev/null 2>"$T_DIR/process7.log"
ids index --until-idle >/dev/null 2>"$T_DIR/index7.log"
sed 's/^E701,Lise,Meitner,Principal Physicist,/E701,Lise,Meitner,Distinguished Physicist,/' \
	"$T_DIR/day6.csv" >"$T_DIR/day7.csv"
ids ingest csv "$T_DIR/day7.csv" >/dev/null
ids process --until-idle >/dev/null 2>"$T_DIR/process8.log"
assert_contains "$(ids why E701)" "desired v2 (ACTIVE)"
for e in E700 E701 E703; do
	ids why "$e" >"$T_DIR/why-$e.idx"
done
mv "$T_DIR/state/index" "$T_DIR/state/index.off"
for e in E700 E701 E703; do
	ids why "$e" >"$T_DIR/why-$e.scan"
done
mv "$T_DIR/state/index.off" "$T_DIR/state/index"
for e in E700 E701 E703; do
	cmp -s "$T_DIR/why-$e.idx" "$T_DIR/why-$e.scan" ||
		fail "why $e differs without the index: $(diff "$T_DIR/why-$e.scan" "$T_DIR/why-$e.idx")"
done
echo ok
