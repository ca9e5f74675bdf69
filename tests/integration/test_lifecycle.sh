# test_lifecycle.sh — HR export → Kafka → processor → OpenLDAP, end to end on
# the real broker and slapd: create, update, rename, OU move, terminate, and
# idempotence (same export again; identity.desired re-delivered to a sink
# with empty state) checked on the directory's own entryCSN values.
. "$IDSTREAM_REPO/tests/lib.sh"

ldap_reset
write_config 'topic.partitions = 3' 'mapping.mail_domain = corp.test' \
	'ingest.termination_threshold = 0.1'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >"$T_DIR/topics.out"
assert_contains "$(cat "$T_DIR/topics.out")" "created $T_PREFIX.hr.events (3 partitions)"
# Idempotent: a second run finds the topics and changes nothing.
out=$(ids topics create)
assert_contains "$out" "exists  $T_PREFIX.hr.events (3 partitions)"
assert_contains "$out" "exists  $T_PREFIX.sink.results (3 partitions)"
P=$T_LDAP_PEOPLE
G=$T_LDAP_GROUPS

# ------------------------------------------------------------------ day 1
cat >"$T_DIR/day1.csv" <<'CSV'
employee_id,first_name,last_name,title,department,manager_id,location,employment_type
E099,Charles,Babbage,Analyst,Finance,E103,London,employee
E100,Ada,Lovelace,Chief Engineer,Engineering,,London,employee
E101,Grace,Hopper,"Rear Admiral, Navy",Engineering,E100,Arlington,employee
E102,Alan,Turing,Researcher,Research,E100,Manchester,contractor
E103,Åsa,Øberg,Account Executive,Sales,E100,Stockholm,employee
CSV
out=$(ids ingest csv "$T_DIR/day1.csv")
assert_contains "$out" "5 hires" "day 1 ingest report"
assert_eq 5 "$(kafka_count "$T_PREFIX.hr.events")" "HR events after day 1"
ids run --until-idle >"$T_DIR/run1.out" 2>"$T_DIR/run1.log"
assert_contains "$(cat "$T_DIR/run1.out")" "5 created" "day 1 summary"

ada="uid=alovelace,ou=Engineering,$P"
assert_eq "Ada Lovelace" "$(ldap_get "$ada" cn)" "cn of E100"
assert_eq "Lovelace" "$(ldap_get "$ada" sn)"
assert_eq "alovelace@corp.test" "$(ldap_get "$ada" mail)"
assert_eq "E100" "$(ldap_get "$ada" employeeNumber)"
assert_eq "Chief Engineer" "$(ldap_get "$ada" title)"
assert_eq "$(printf 'cn=dept-engineering,%s\ncn=staff,%s' "$G" "$G")" "$(ldap_get "$ada" memberOf)" \
	"groups of E100"
grace="uid=ghopper,ou=Engineering,$P"
assert_eq "Rear Admiral, Navy" "$(ldap_get "$grace" title)" "quoted title with a comma"
assert_eq "$ada" "$(ldap_get "$grace" manager)" "manager of E101 is E100's DN"
alan="uid=aturing,ou=Research,$P"
assert_eq "contractor" "$(ldap_get "$alan" employeeType)"
asa="uid=aoberg,ou=Sales,$P"
assert_eq "Åsa Øberg" "$(ldap_get "$asa" cn)" "UTF-8 cn, ASCII-folded uid"
# E099's manager (E103) may be applied after E099: the link is completed
# once the manager's entry exists.
assert_eq "$asa" "$(ldap_get "uid=cbabbage,ou=Finance,$P" manager)" "manager hired with the report"
assert_eq 5 "$(ldap_get "cn=staff,$G" member | wc -l | tr -d ' ')" "members of staff"
assert_eq 2 "$(ldap_get "cn=dept-engineering,$G" member | wc -l | tr -d ' ')"

# ------------------------------------------------------------------ day 2
# E100 leaves (missing), E101 new title, E102 moves Research → Engineering,
# E103 changes last name (rename), E104 joins.
cat >"$T_DIR/day2.csv" <<'CSV'
employee_id,first_name,last_name,title,department,manager_id,location,employment_type
E099,Charles,Babbage,Analyst,Finance,E103,London,employee
E101,Grace,Hopper,Commodore,Engineering,E100,Arlington,employee
E102,Alan,Turing,Researcher,Engineering,E100,Manchester,contractor
E103,Åsa,Lind,Account Executive,Sales,E100,Stockholm,employee
E104,Katherine,Johnson,Mathematician,Research,E101,Hampton,employee
CSV
# 1 of 5 known employees leaves: 20% is above the configured 10% guard.
if ids ingest csv "$T_DIR/day2.csv" >"$T_DIR/ingest2.out" 2>&1; then
	fail "a file terminating 25% of employees was accepted without --force"
fi
assert_contains "$(cat "$T_DIR/ingest2.out")" "--force"
assert_eq 5 "$(kafka_count "$T_PREFIX.hr.events")" "nothing published by the refused file"
out=$(ids ingest csv --force "$T_DIR/day2.csv")
assert_contains "$out" "1 hires, 3 updates, 1 terminations" "day 2 ingest report"
ids run --until-idle >"$T_DIR/run2.out" 2>"$T_DIR/run2.log"
summary=$(cat "$T_DIR/run2.out")
assert_contains "$summary" "1 created" "day 2 summary"
assert_contains "$summary" "1 disabled" "day 2 summary"
assert_contains "$summary" "3 updated" "day 2 summary"

# Terminated: still there, locked, out of every group.
assert_eq "000001010000Z" "$(ldap_get "$ada" pwdAccountLockedTime)" "E100 locked"
assert_eq "" "$(ldap_get "$ada" memberOf)" "E100 removed from its groups"
# Title change.
assert_eq "Commodore" "$(ldap_get "$grace" title)"
# OU move: new DN, old DN gone, groups follow the department.
alan2="uid=aturing,ou=Engineering,$P"
ldap_exists "$alan2" || fail "E102 was not moved to ou=Engineering"
! ldap_exists "$alan" || fail "E102 still exists under ou=Research"
assert_eq "Engineering" "$(ldap_get "$alan2" departmentNumber)"
assert_eq "$(printf 'cn=dept-engineering,%s\ncn=staff,%s' "$G" "$G")" "$(ldap_get "$alan2" memberOf)" \
	"groups of E102 after the move"
# Rename: uid, DN and mail follow the new last name; memberships survive.
asa2="uid=alind,ou=Sales,$P"
ldap_exists "$asa2" || fail "E103 was not renamed to uid=alind"
! ldap_exists "$asa" || fail "old DN uid=aoberg still exists"
assert_eq "alind@corp.test" "$(ldap_get "$asa2" mail)"
assert_eq "Lind" "$(ldap_get "$asa2" sn)"
assert_eq "Åsa Lind" "$(ldap_get "$asa2" cn)"
assert_contains "$(ldap_get "$asa2" memberOf)" "cn=dept-sales,$G"
assert_eq "$asa2" "$(ldap_get "uid=cbabbage,ou=Finance,$P" manager)" "manager reference follows the rename"
# New hire, with the manager resolved to the renamed-free DN of E101.
kj="uid=kjohnson,ou=Research,$P"
assert_eq "Katherine Johnson" "$(ldap_get "$kj" cn)"
assert_eq "$grace" "$(ldap_get "$kj" manager)"
assert_eq 2 "$(ldap_get "cn=dept-engineering,$G" member | wc -l | tr -d " ")" \
	"dept-engineering: E101, E102 (moved in); E100 left"
assert_eq 5 "$(ldap_get "cn=staff,$G" member | wc -l | tr -d ' ')" "staff: E099, E101-E104"

# History tells the story of the rename.
hist=$(ids history E103)
assert_contains "$hist" "HIRE" "history of E103"
assert_contains "$hist" "UPDATE" "history of E103"
assert_contains "$hist" "modrdn" "history of E103"
hist_json=$(ids history E103 --json)
assert_contains "$hist_json" '"kind": "desired"'
assert_contains "$hist_json" '"last_name": "Lind"'

# ------------------------------------------------------------------ idempotence
csn_snapshot() {
	ldapsearch -x -LLL -H "$IDSTREAM_TEST_LDAP_URL" -D "$T_LDAP_ADMIN_DN" -y "$T_LDAP_PWFILE" \
		-b "$T_LDAP_BASE" '(|(objectClass=inetOrgPerson)(objectClass=groupOfNames)(objectClass=organizationalUnit))' \
		entryCSN | grep -v '^$' | paste -d' ' - - | sort
}
before=$(csn_snapshot)
events_before=$(kafka_count "$T_PREFIX.hr.events")
out=$(ids ingest csv "$T_DIR/day2.csv")
assert_contains "$out" "0 events published" "same export again"
assert_eq "$events_before" "$(kafka_count "$T_PREFIX.hr.events")" "no new HR events"
ids run --until-idle >"$T_DIR/run3.out" 2>"$T_DIR/run3.log"
assert_contains "$(cat "$T_DIR/run3.out")" "0 desired versions produced"
# Re-deliver the whole identity.desired topic to a sink with empty state (a
# new target name means a new consumer group from offset 0 and no recorded
# versions): every version is diffed against the live entry, none written.
ids --set sink.ldap.target=replay sink ldap --until-idle >"$T_DIR/replay.out" 2>"$T_DIR/replay.log"
replay=$(cat "$T_DIR/replay.out")
assert_contains "$replay" "0 created, 0 updated, 0 disabled, 0 enabled" "re-delivery summary"
assert_contains "$replay" "0 LDAP writes" "re-delivery made no LDAP writes"
assert_eq "$before" "$(csn_snapshot)" "entryCSN of every entry unchanged by re-delivery"
echo "ok"
