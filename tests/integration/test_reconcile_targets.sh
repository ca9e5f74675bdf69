# test_reconcile_targets.sh — `idstream reconcile TARGET` on all three
# targets (slapd, a real Samba AD DC, scim2-server), each sink running as a
# service over the same identity.desired:
#   A. dry run: an attribute edited by hand is reported (exit status 1) and
#      nothing is written; hand-made accounts in the managed subtree (one
#      without an employee id, one with an id idstream never applied) are
#      listed as unmanaged and left alone, also by --repair, which writes
#      the drifted attribute back;
#   B. with reconcile.delete_unmanaged = true the guard still applies: two
#      unmanaged accounts over a limit of one are not deleted;
#   C. under the limit, --repair deletes them (APPLIED results with op
#      delete_unmanaged) and every managed account stays as it was.
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
P=$T_LDAP_PEOPLE
# uids unique to this run: SCIM Users live in one flat namespace.
K=$(printf '%s' "$T_PREFIX" | cksum | cut -c1-5)
CONF_LINES="topic.partitions=3
ad.url=$IDSTREAM_TEST_AD_URL
ad.bind_dn=$AD_BIND
ad.bind_password_file=$IDSTREAM_TEST_AD_PASSWORD_FILE
ad.base_dn=$AD_BASE
ad.people_dn=OU=people,$AD_OU
ad.groups_dn=OU=groups,$AD_OU
ad.tls_verify=never
ad.password_file=$T_DIR/ad-passwords
scim.url=$IDSTREAM_TEST_SCIM_URL
scim.bearer_token_file=$IDSTREAM_TEST_SCIM_TOKEN_FILE
sink.guard.min_managed=10
sink.guard.max_count=1"
# shellcheck disable=SC2086
IFS='
'
write_config $CONF_LINES
unset IFS
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null

{
	echo "employee_id,first_name,last_name,title,department"
	for i in 1 2 3 4 5 6 7 8 9; do echo "E${K}0$i,Pat,Recon${K}0$i,Engineer,Engineering"; done
} >"$T_DIR/hr.csv"
ids ingest csv "$T_DIR/hr.csv" >/dev/null
ids process --until-idle >/dev/null 2>"$T_DIR/process.log" || fail "process failed"

SET=""
start_sinks() { # [--set KEY=VALUE...]
	PIDS=""
	for kind in ldap ad scim; do
		spawn "sink-$kind" "$IDSTREAM_BIN" --config "$T_CONF" "$@" sink "$kind"
		PIDS="$PIDS $SPAWNED_PID"
	done
}
stop_sinks() { for p in $PIDS; do stop_pid "$p"; done; }

# ---------------------------------------------------------------- per target
TOKEN=$(cat "$IDSTREAM_TEST_SCIM_TOKEN_FILE")
scim() { # METHOD PATH [BODY]
	curl -fsS -X "$1" -H "Authorization: Bearer $TOKEN" \
		-H 'Content-Type: application/scim+json' ${3:+-d "$3"} "$IDSTREAM_TEST_SCIM_URL$2"
}
scim_find() { # ATTR VALUE → the matching Users (JSON)
	scim GET "/Users?filter=$1%20eq%20%22$2%22"
}
uid_of() { printf 'precon%s' "${1#E}" | tr 'A-Z' 'a-z'; }

# accounts KIND: the managed accounts' "uid title" lines, sorted.
accounts() {
	case $1 in
	ldap)
		_ldap ldapsearch -LLL -o ldif-wrap=no -b "$P" '(uid=precon*)' uid title |
			awk '/^uid:/{u=$2} /^title:/{t=substr($0,8)} /^$/{if(u)print u, t; u=""; t=""} END{if(u)print u, t}' | sort
		;;
	ad)
		ad ldapsearch -LLL -b "OU=people,$AD_OU" '(sAMAccountName=precon*)' sAMAccountName title |
			awk '/^sAMAccountName:/{u=$2} /^title:/{t=substr($0,8)} /^$/{if(u)print u, t; u=""; t=""} END{if(u)print u, t}' | sort
		;;
	scim)
		for i in 1 2 3 4 5 6 7 8 9; do
			scim_find externalId "E${K}0$i" |
				jq -r '.Resources[] | .userName + " " + (.title // "")'
		done | sort
		;;
	esac
}
# handmade KIND NAME [EMPLOYEE_ID]: an account made by hand in the subtree.
handmade() {
	case $1 in
	ldap)
		printf 'dn: uid=%s,ou=Engineering,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: Hand Made\nsn: Made\n%s' \
			"$2" "$P" "$2" "${3:+employeeNumber: $3
}" | _ldap ldapadd >/dev/null
		;;
	ad)
		printf 'dn: CN=%s,OU=people,%s\nobjectClass: user\nsAMAccountName: %s\n%s' \
			"$2" "$AD_OU" "$2" "${3:+employeeID: $3
}" | ad ldapadd >/dev/null
		;;
	scim)
		scim POST /Users "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"$2\"${3:+,\"externalId\":\"$3\"}}" >/dev/null
		;;
	esac
}
exists() { # KIND NAME → 1 or 0
	case $1 in
	ldap) ldap_count "(uid=$2)" "$P" ;;
	ad) ad ldapsearch -LLL -b "OU=people,$AD_OU" "(sAMAccountName=$2)" 1.1 | grep -c '^dn:' || true ;;
	scim) scim_find userName "$2" | jq '.totalResults' ;;
	esac
}
drift() { # KIND EMPLOYEE_ID: title edited by hand
	case $1 in
	ldap)
		printf 'dn: uid=%s,ou=Engineering,%s\nchangetype: modify\nreplace: title\ntitle: Hacker\n' \
			"$(uid_of "$2")" "$P" | _ldap ldapmodify >/dev/null
		;;
	ad)
		_dn=$(ad ldapsearch -LLL -b "OU=people,$AD_OU" "(employeeID=$2)" 1.1 | sed -n 's/^dn: //p')
		printf 'dn: %s\nchangetype: modify\nreplace: title\ntitle: Hacker\n' "$_dn" | ad ldapmodify >/dev/null
		;;
	scim)
		_id=$(scim_find externalId "$2" | jq -r '.Resources[0].id')
		scim PATCH "/Users/$_id" '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"Hacker"}]}' >/dev/null
		;;
	esac
}

start_sinks
n_results() { kafka_count "$T_PREFIX.sink.results"; }
ge() { [ "$("$@")" -ge "$WANT" ]; }
WANT=27
wait_for 120 ge n_results
for kind in ldap ad scim; do
	assert_eq 9 "$(accounts "$kind" | grep -c ' Engineer$')" "$kind: 9 accounts made by the sink"
done

# ---------------------------------------------------------------- A. dry run
E5=E${K}05
for kind in ldap ad scim; do
	accounts "$kind" >"$T_DIR/$kind.before"
	drift "$kind" "$E5"
	handmade "$kind" "hand${K}a"
	handmade "$kind" "hand${K}b" "X${K}99"
	set +e
	out=$(ids reconcile "$kind" 2>&1)
	rc=$?
	set -e
	echo "$out" >"$T_DIR/$kind.reconcile"
	assert_eq 1 "$rc" "$kind: exit status of reconcile finding drift"
	op=modify
	[ "$kind" != scim ] || op=update
	assert_contains "$out" "$E5 v1: $op title Hacker -> Engineer" "$kind: drift reported"
	assert_contains "$out" "1 drifted" "$kind: drift counted"
	assert_contains "$out" "unmanaged hand${K}a: " "$kind: account without employee id listed"
	assert_contains "$out" "unmanaged hand${K}b: " "$kind: account of an unknown employee listed"
	assert_contains "$out" "(employee id X${K}99)" "$kind: its employee id shown"
	assert_contains "$out" "left alone (reconcile.delete_unmanaged is off)" "$kind: nothing deleted"
	case $out in *"unmanaged $(uid_of "$E5")"*) fail "$kind: a managed account listed as unmanaged" ;; esac
	assert_eq "Hacker" "$(accounts "$kind" | awk -v u="$(uid_of "$E5")" '$1==u{print $2}')" \
		"$kind: reconcile without --repair writes nothing"
	out=$(ids reconcile "$kind" --repair)
	assert_contains "$out" "1 repaired, 0 failed" "$kind: repair"
	assert_eq "$(cat "$T_DIR/$kind.before")" "$(accounts "$kind")" "$kind: accounts after --repair"
	assert_eq 1 "$(exists "$kind" "hand${K}a")" "$kind: --repair left the hand-made account"
	assert_eq 1 "$(exists "$kind" "hand${K}b")" "$kind: --repair left the unknown employee's account"
done
stop_sinks

# ---------------------------------------------------------------- B. guard
start_sinks --set reconcile.delete_unmanaged=true
for kind in ldap ad scim; do
	wait_for 60 grep -q "assigned 3 partitions" "$T_DIR/sink-$kind.log"
	out=$(ids reconcile "$kind" --repair)
	echo "$out" >>"$T_DIR/$kind.reconcile"
	assert_contains "$out" "none deleted: more than the mass-change limit of 1 allows" "$kind: guard"
	assert_eq 1 "$(exists "$kind" "hand${K}a")" "$kind: held by the guard (a)"
	assert_eq 1 "$(exists "$kind" "hand${K}b")" "$kind: held by the guard (b)"
done
stop_sinks

# ---------------------------------------------------------------- C. delete
start_sinks --set reconcile.delete_unmanaged=true --set sink.guard.max_count=0 \
	--set sink.guard.max_fraction=1 --set sink.guard.min_managed=100000
before=$(n_results)
for kind in ldap ad scim; do
	wait_for 60 grep -q "assigned 3 partitions" "$T_DIR/sink-$kind.log"
	out=$(ids reconcile "$kind" --repair)
	echo "$out" >>"$T_DIR/$kind.reconcile"
	assert_contains "$out" "deleted, 0 failed" "$kind: unmanaged deleted"
	assert_eq 0 "$(exists "$kind" "hand${K}a")" "$kind: hand-made account deleted"
	assert_eq 0 "$(exists "$kind" "hand${K}b")" "$kind: unknown employee's account deleted"
	assert_eq "$(cat "$T_DIR/$kind.before")" "$(accounts "$kind")" "$kind: managed accounts untouched"
	out=$(ids reconcile "$kind")
	case $out in *"unmanaged hand${K}"*) fail "$kind: still listed after deletion" ;; esac
	assert_contains "$out" "0 drifted" "$kind: nothing left to do"
done
WANT=$((before + 6))
wait_for 30 ge n_results
assert_eq 6 "$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$T_PREFIX.sink.results" -e -q -o beginning \
	-f '%k\n' 2>/dev/null | grep -c -x -e "unmanaged:hand${K}a" -e "X${K}99")" \
	"one result per deleted account"
stop_sinks
echo ok
