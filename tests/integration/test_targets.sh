# test_targets.sh — one deployment, three targets: the same desired
# identities applied by `idstream sink ldap`, `sink ad` (real Samba AD DC)
# and `sink scim` (real scim2-server), each checked on the target itself:
# create, title change, rename, department move, termination (disabled),
# and a second run that writes nothing.
. "$IDSTREAM_REPO/tests/lib.sh"

: "${IDSTREAM_TEST_AD_URL:?the Samba AD DC is not running (tests/run.sh starts it)}"
: "${IDSTREAM_TEST_SCIM_URL:?scim2-server is not running (tests/run.sh starts it)}"
AD_BASE=${IDSTREAM_TEST_AD_BASE:-DC=example,DC=test}
AD_OU="OU=$T_PREFIX,$AD_BASE"
AD_BIND=${IDSTREAM_TEST_AD_BIND:-Administrator@EXAMPLE.TEST}

ad() {
	LDAPTLS_REQCERT=never "$@" -x -H "$IDSTREAM_TEST_AD_URL" -D "$AD_BIND" \
		-y "$IDSTREAM_TEST_AD_PASSWORD_FILE" -o ldif-wrap=no
}
# This test's own OUs in the shared domain, removed at the end.
printf 'dn: %s\nobjectClass: organizationalUnit\n\ndn: OU=people,%s\nobjectClass: organizationalUnit\n\ndn: OU=groups,%s\nobjectClass: organizationalUnit\n' \
	"$AD_OU" "$AD_OU" "$AD_OU" | ad ldapadd >/dev/null
trap 'ad ldapdelete -r "$AD_OU" >/dev/null 2>&1 || true; lib_cleanup' EXIT

ldap_reset
write_config 'topic.partitions = 3' \
	"ad.url = $IDSTREAM_TEST_AD_URL" "ad.bind_dn = $AD_BIND" \
	"ad.bind_password_file = $IDSTREAM_TEST_AD_PASSWORD_FILE" "ad.base_dn = $AD_BASE" \
	"ad.people_dn = OU=people,$AD_OU" "ad.groups_dn = OU=groups,$AD_OU" \
	'ad.tls_verify = never' "ad.password_file = $T_DIR/ad-passwords" \
	"scim.url = $IDSTREAM_TEST_SCIM_URL" "scim.bearer_token_file = $IDSTREAM_TEST_SCIM_TOKEN_FILE"
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null

scim_get() { # PATH → JSON
	curl -fsS -H "Authorization: Bearer $(cat "$IDSTREAM_TEST_SCIM_TOKEN_FILE")" \
		"$IDSTREAM_TEST_SCIM_URL$1"
}
scim_user() { # externalId → the User's JSON (one line)
	scim_get "/Users?filter=externalId%20eq%20%22$1%22" | tr -d '\n' | sed 's/": /":/g'
}
apply_all() {
	ids process --until-idle >/dev/null 2>>"$T_DIR/process.log"
	for kind in ldap ad scim; do
		ids sink "$kind" --until-idle >"$T_DIR/$kind.out" 2>>"$T_DIR/$kind.log" ||
			fail "sink $kind failed: $(tail -3 "$T_DIR/$kind.log")"
	done
}

cat >"$T_DIR/day1.csv" <<'CSV'
employee_id,first_name,last_name,title,department,manager_id
E500,Mary,Jackson,Engineer,Engineering,
E501,Dorothy,Vaughan,Analyst,Research,E500
E502,Hedy,Lamarr,Inventor,Research,E500
CSV
ids ingest csv "$T_DIR/day1.csv" >/dev/null
apply_all
for kind in ldap ad scim; do
	assert_contains "$(cat "$T_DIR/$kind.out")" "3 created" "sink $kind, day 1"
done
# AD: user objects, enabled, in their OU, with a delivered password.
u=$(ad ldapsearch -b "$AD_OU" '(employeeID=E501)' sAMAccountName title department userAccountControl manager)
assert_contains "$u" "OU=Research,OU=people,$AD_OU" "AD OU of E501"
assert_contains "$u" "sAMAccountName: dvaughan"
assert_contains "$u" "title: Analyst"
assert_contains "$u" "userAccountControl: 512" "E501 enabled in AD"
assert_contains "$u" "manager: CN=Mary Jackson" "AD manager of E501"
[ "$(stat -c %a "$T_DIR/ad-passwords")" = 600 ] || fail "AD password file is not 0600"
assert_eq 3 "$(wc -l <"$T_DIR/ad-passwords" | tr -d ' ')" "one initial password per created user"
# SCIM: Users with externalId, userName, title, active.
s=$(scim_user E501)
assert_contains "$s" '"userName":"dvaughan"' "SCIM userName of E501"
assert_contains "$s" '"title":"Analyst"'
assert_contains "$s" '"active":true'

cat >"$T_DIR/day2.csv" <<'CSV'
employee_id,first_name,last_name,title,department,manager_id
E500,Mary,Jackson,Lead Engineer,Engineering,
E501,Dorothy,Johnson,Analyst,Engineering,E500
CSV
ids ingest csv --force "$T_DIR/day2.csv" >/dev/null
apply_all
for kind in ldap ad scim; do
	out=$(cat "$T_DIR/$kind.out")
	assert_contains "$out" "2 updated" "sink $kind, day 2"
	assert_contains "$out" "1 disabled" "sink $kind, day 2"
done
# AD: title, rename + move, disabled leaver.
assert_contains "$(ad ldapsearch -b "$AD_OU" '(employeeID=E500)' title)" "title: Lead Engineer"
u=$(ad ldapsearch -b "$AD_OU" '(employeeID=E501)' sAMAccountName)
assert_contains "$u" "OU=Engineering,OU=people,$AD_OU" "E501 moved in AD"
assert_contains "$u" "sAMAccountName: djohnson" "E501 renamed in AD"
assert_contains "$(ad ldapsearch -b "$AD_OU" '(employeeID=E502)' userAccountControl)" \
	"userAccountControl: 514" "E502 disabled in AD"
# SCIM: the same facts.
assert_contains "$(scim_user E500)" '"title":"Lead Engineer"'
assert_contains "$(scim_user E501)" '"userName":"djohnson"' "E501 renamed in SCIM"
assert_contains "$(scim_user E502)" '"active":false' "E502 disabled in SCIM"
# LDAP: the same facts.
assert_eq "Lead Engineer" "$(ldap_get "uid=mjackson,ou=Engineering,$T_LDAP_PEOPLE" title)"
ldap_exists "uid=djohnson,ou=Engineering,$T_LDAP_PEOPLE" || fail "E501 not renamed/moved in LDAP"

# Nothing left to do: a new consumer group with empty state per target
# re-reads everything and writes nothing anywhere.
for kind in ldap ad scim; do
	out=$(ids --set "sink.$kind.target=${kind}again" sink "$kind" --until-idle 2>>"$T_DIR/$kind.log")
	assert_contains "$out" "0 created, 0 updated, 0 disabled, 0 enabled" "re-delivery to $kind"
	assert_contains "$out" "; 0 " "re-delivery to $kind writes nothing"
done
echo ok
