#!/bin/sh
# demo.sh — the end-to-end demo behind `make demo`: a local Kafka broker and
# slapd, the bundled HR exports, and the idstream pipeline in between.
#
#   1. start Kafka (KRaft) and slapd on loopback (scripts/services.sh)
#   2. create the topics of a fresh deployment (prefix demo<time>)
#   3. ingest examples/hr-export-1.csv, run processor + LDAP sink until idle
#   4. ingest examples/hr-export-2.csv (hires, moves, a name change,
#      terminations), run again, print the summary
#   5. print one employee's history and the ldapsearch command
#
# The services keep running afterwards so the directory can be looked at;
# stop them with `sh scripts/services.sh stop all`.  Running the demo again
# starts over with a new deployment (new topics, empty state, empty
# ou=people).
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
BIN=${IDSTREAM_BIN:-$REPO/build/idstream}
export IDSTREAM_RUN=${IDSTREAM_RUN:-$REPO/run}
DEMO=$IDSTREAM_RUN/demo
LDAP_URL=ldap://127.0.0.1:${IDSTREAM_LDAP_PORT:-13890}/
KAFKA=127.0.0.1:${IDSTREAM_KAFKA_PORT:-19092}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$(date +%s)

step "Starting Kafka and slapd on loopback"
sh scripts/services.sh start all

step "A fresh deployment"
prefix="demo$(date +%s)"
rm -rf "$DEMO"
mkdir -p "$DEMO"
# The bind password lives in a file readable by us only, never in argv.
umask 077
printf '%s' adminpw >"$DEMO/ldap.password"
umask 022
cat >"$DEMO/idstream.conf" <<CONF
# Demo deployment (see CONFIGURATION.md for every option).
topic.prefix = $prefix
topic.partitions = 12
state.dir = $DEMO/state
kafka.bootstrap.servers = $KAFKA
ldap.url = $LDAP_URL
ldap.bind_dn = cn=admin,dc=example,dc=com
ldap.bind_password_file = $DEMO/ldap.password
mapping.mail_domain = example.com
log.level = error
CONF
# Empty the accounts and groups a previous demo left in the directory.
ldapdelete -x -H "$LDAP_URL" -D cn=admin,dc=example,dc=com -y "$DEMO/ldap.password" -r \
	ou=people,dc=example,dc=com ou=groups,dc=example,dc=com 2>/dev/null || true
printf 'dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\ndn: ou=groups,dc=example,dc=com\nobjectClass: organizationalUnit\nou: groups\n' |
	ldapadd -x -H "$LDAP_URL" -D cn=admin,dc=example,dc=com -y "$DEMO/ldap.password" >/dev/null
ids() { "$BIN" --config "$DEMO/idstream.conf" "$@"; }
ids topics create

step "Day 1: ingest the HR export ($(($(wc -l <examples/hr-export-1.csv) - 1)) employees)"
ids ingest csv examples/hr-export-1.csv
step "Day 1: processor and LDAP sink until caught up"
ids run --until-idle

step "Day 2: ingest the next export (hires, moves, a name change, leavers)"
ids ingest csv examples/hr-export-2.csv
step "Day 2: processor and LDAP sink until caught up"
ids run --until-idle | tee "$DEMO/day2.summary"

# The employee whose last name changed between the two exports.
renamed=$(awk -F, 'NR==FNR { if (FNR > 1) last[$1] = $3; next }
	FNR > 1 && ($1 in last) && last[$1] != $3 { print $1; exit }' \
	examples/hr-export-1.csv examples/hr-export-2.csv)
if [ -n "$renamed" ]; then
	step "History of employee $renamed (renamed on day 2)"
	ids history "$renamed"
fi

# The day-2 joiners start in the coming weeks: those outside the pre-start
# window have no account yet (PENDING); a timer creates and enables each on
# time.  Show the first such joiner.
for id in $(awk -F, 'NR==FNR { if (FNR > 1) seen[$1] = 1; next }
	FNR > 1 && !($1 in seen) { print $1 }' examples/hr-export-1.csv examples/hr-export-2.csv); do
	h=$(ids history "$id" --json 2>/dev/null) || continue
	[ "$(printf '%s' "$h" | jq -r '[.[] | select(.kind == "desired")] | last | .state')" = PENDING ] || continue
	start=$(printf '%s' "$h" | jq -r '[.[] | select(.kind == "hr_event")][0].attributes.start_date')
	step "History of employee $id (starts on $start: no account until the pre-start window)"
	ids history "$id"
	break
done

step "Look at the directory"
people=$(ldapsearch -x -LLL -H "$LDAP_URL" -D cn=admin,dc=example,dc=com -y "$DEMO/ldap.password" \
	-b ou=people,dc=example,dc=com '(objectClass=inetOrgPerson)' dn | grep -c '^dn:' || true)
locked=$(ldapsearch -x -LLL -H "$LDAP_URL" -D cn=admin,dc=example,dc=com -y "$DEMO/ldap.password" \
	-b ou=people,dc=example,dc=com '(pwdAccountLockedTime=*)' dn | grep -c '^dn:' || true)
echo "$people accounts in ou=people, $locked of them disabled (pwdAccountLockedTime)."
echo
echo "  ldapsearch -x -H $LDAP_URL -D cn=admin,dc=example,dc=com -w adminpw \\"
echo "    -b ou=people,dc=example,dc=com '(uid=*)' uid cn title memberOf pwdAccountLockedTime"
echo
echo "  $BIN --config $DEMO/idstream.conf history <EMPLOYEE_ID>"
echo
echo "Demo finished in $(($(date +%s) - t0)) s. Services keep running; stop them with:"
echo "  sh scripts/services.sh stop all"
