# test_target_sections.sh — one policy, three targets, each with its own
# identity: the policy's ldap, ad and scim sections reach slapd, the Samba AD
# DC and scim2-server with their own names, groups and OUs; scoping (no
# contractors in SCIM) creates no account out of scope and disables the one
# that leaves the scope; `why --target ad` names the ad rule; a sink whose
# target the policy does not declare applies nothing and says why.
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

# Each target gets its own names: ldap uid "mjackson", AD sAMAccountName
# "x-mjackson" and an upper-case title, SCIM userName the e-mail address.
cat >"$T_DIR/policy.lua" <<'LUA'
local function identity(emp, ctx)
	local active = ctx.state == "ACTIVE"
	local uid = lower(alnum(fold(left(emp.first_name, 1) .. emp.last_name)))
	local full = emp.first_name .. " " .. emp.last_name
	local dept = coalesce(emp.department, "Unassigned")
	local ldap = {
		attributes = { uid = uid, cn = full, sn = emp.last_name, givenName = emp.first_name,
			mail = uid .. "@example.com", title = emp.title, employeeNumber = emp.employee_id },
		groups = active and { "staff" } or {},
		container = "ou=" .. dn_escape(dept),
	}
	local ad = {
		attributes = { sAMAccountName = "x-" .. uid, userPrincipalName = uid .. "@corp.example.com",
			givenName = emp.first_name, sn = emp.last_name, displayName = full,
			title = upper(emp.title), department = dept },
		groups = active and { "GG-Staff" } or {},
		container = "OU=" .. dn_escape(dept),
	}
	local scim = emp.employment_type ~= "Contractor" and {
		attributes = { userName = uid .. "@example.com", ["name.givenName"] = emp.first_name,
			["name.familyName"] = emp.last_name, displayName = full, title = emp.title },
		groups = active and { "everyone" } or {},
	}
	return {
		targets = { ldap = ldap, ad = ad, scim = scim },
		manager_id = emp.manager_id,
		timing = { create_days_before_start = 3650, enable = "create" },
	}
end
return { targets = { "ldap", "ad", "scim" }, identity = identity }
LUA
ids policy deploy "$T_DIR/policy.lua" --reason "per-target identities" >/dev/null

cat >"$T_DIR/day1.csv" <<'CSV'
employee_id,first_name,last_name,title,department,manager_id,employment_type
E600,Mary,Jackson,Engineer,Engineering,,Full-Time
E601,Dorothy,Vaughan,Analyst,Research,E600,Contractor
CSV
ids ingest csv "$T_DIR/day1.csv" >/dev/null
apply_all
assert_contains "$(cat "$T_DIR/ldap.out")" "2 created" "sink ldap, day 1"
assert_contains "$(cat "$T_DIR/ad.out")" "2 created" "sink ad, day 1"
assert_contains "$(cat "$T_DIR/scim.out")" "1 created" "sink scim, day 1: the contractor is out of scope"
# LDAP: the ldap section.
assert_eq "Engineer" "$(ldap_get "uid=mjackson,ou=Engineering,$T_LDAP_PEOPLE" title)"
ldap_exists "uid=dvaughan,ou=Research,$T_LDAP_PEOPLE" || fail "E601 not in LDAP"
# AD: the ad section, not the ldap one.
u=$(ad ldapsearch -b "$AD_OU" '(employeeID=E600)' sAMAccountName userPrincipalName title memberOf)
assert_contains "$u" "sAMAccountName: x-mjackson" "AD name from the ad section"
assert_contains "$u" "userPrincipalName: mjackson@corp.example.com"
assert_contains "$u" "title: ENGINEER" "AD title from the ad section"
assert_contains "$u" "OU=Engineering,OU=people,$AD_OU" "AD OU from the ad section"
assert_contains "$u" "memberOf: CN=GG-Staff," "AD group from the ad section"
assert_contains "$(ad ldapsearch -b "$AD_OU" '(employeeID=E601)' sAMAccountName)" \
	"sAMAccountName: x-dvaughan"
# SCIM: the scim section; no User for the contractor.
s=$(scim_user E600)
assert_contains "$s" '"userName":"mjackson@example.com"' "SCIM userName from the scim section"
assert_contains "$s" '"givenName":"Mary"'
assert_contains "$s" '"active":true'
assert_contains "$(scim_user E601)" '"totalResults":0' "no SCIM User out of scope"

# Day 2: Mary becomes a contractor (leaves the SCIM scope) with a new title,
# Dorothy an employee (enters it).
cat >"$T_DIR/day2.csv" <<'CSV'
employee_id,first_name,last_name,title,department,manager_id,employment_type
E600,Mary,Jackson,Lead,Engineering,,Contractor
E601,Dorothy,Vaughan,Analyst,Research,E600,Full-Time
CSV
ids ingest csv --force "$T_DIR/day2.csv" >/dev/null
apply_all
s=$(scim_user E600)
assert_contains "$s" '"active":false' "SCIM User disabled when out of scope"
assert_contains "$s" '"userName":"mjackson@example.com"' "kept under its last name"
assert_contains "$(scim_user E601)" '"active":true' "SCIM User created when in scope"
assert_contains "$(scim_user E601)" '"userName":"dvaughan@example.com"'
# LDAP and AD are unaffected by SCIM's scope: Mary stays enabled there.
assert_eq "Lead" "$(ldap_get "uid=mjackson,ou=Engineering,$T_LDAP_PEOPLE" title)"
u=$(ad ldapsearch -b "$AD_OU" '(employeeID=E600)' title userAccountControl)
assert_contains "$u" "title: LEAD"
assert_contains "$u" "userAccountControl: 512" "still enabled in AD"

# history: every version carries each target's section.
h=$(ids history E600 --json)
assert_eq "x-mjackson" "$(printf '%s' "$h" | jq -r '[.[] | select(.kind == "desired")] | last | .targets.ad.attributes.sAMAccountName')"
assert_eq "false" "$(printf '%s' "$h" | jq -r '[.[] | select(.kind == "desired")] | last | .targets.scim.in_scope')"
assert_contains "$(ids history E600)" "out of scope: scim"

# why, per target: the AD value, its ad rule and the policy version.
w=$(ids why E600 --target ad --attr sAMAccountName)
assert_contains "$w" "x-mjackson" "why --target ad shows the AD value"
assert_contains "$w" "policy:ad.sAMAccountName" "why --target ad names the ad rule"

# plan, per target: the history as deployed changes nothing; a policy that
# only renames the AD accounts changes the ad target and nothing else.
ids plan >"$T_DIR/plan0.out" || fail "plan of the unchanged history: exit $?: $(cat "$T_DIR/plan0.out")"
assert_contains "$(cat "$T_DIR/plan0.out")" "no changes"
sed 's/"x-" \.\. uid/"y-" .. uid/' "$T_DIR/policy.lua" >"$T_DIR/policy2.lua"
rc=0
ids plan --policy "$T_DIR/policy2.lua" >"$T_DIR/plan2.out" || rc=$?
assert_eq 2 "$rc" "plan exit status when something changes"
out=$(cat "$T_DIR/plan2.out")
assert_contains "$out" "2 employees change in target ad:"
assert_contains "$out" "E600: attribute sAMAccountName → y-mjackson"
assert_eq "ad" "$(ids plan --policy "$T_DIR/policy2.lua" --json |
	jq -r '[.employees_changed[].changes[].target] | unique | join(",")')" "only ad changes"

# A sink whose target name the policy does not declare applies nothing and
# says which targets it does declare.
before=$(ldap_get "uid=mjackson,ou=Engineering,$T_LDAP_PEOPLE" title)
ids --set sink.ldap.target=openldap sink ldap --until-idle >"$T_DIR/undeclared.out" \
	2>"$T_DIR/undeclared.log" || true
assert_contains "$(cat "$T_DIR/undeclared.log")" 'has no target \"openldap\" (it declares ad, ldap, scim)'
# ... and a FAILED result per employee, which history shows.
assert_contains "$(ids history E600)" "openldap" "history shows the openldap result"
assert_contains "$(ids history E600 --json | jq -r '.[] | select(.target == "openldap") | .outcome')" \
	"FAILED" "FAILED result of openldap"
assert_eq "$before" "$(ldap_get "uid=mjackson,ou=Engineering,$T_LDAP_PEOPLE" title)"
# The sections are part of the log's decisions: a replay from offset 0 gives
# the same bytes.
out=$(ids replay --check) || fail "replay --check found differences: $out"
echo ok
