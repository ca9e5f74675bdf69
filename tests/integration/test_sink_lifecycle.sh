# test_sink_lifecycle.sh — every lifecycle state of a desired identity,
# applied by `idstream sink ldap`, `sink ad` (real Samba AD DC) and `sink
# scim` (real scim2-server), each checked on the target itself.  The desired
# identities are published straight to <prefix>.identity.desired (Avro
# single-object encoding, written by the small encoder below from
# schemas/desired_identity.avsc), since the point is what each state means
# to a target, whatever produces it:
#
#   E701 walks PENDING → PRESTART → ACTIVE → SUSPENDED → ACTIVE → DISABLED
#        → DELETED: no account while PENDING; created disabled with an
#        initial password (delivered to a 0600 file, in no log) in PRESTART;
#        enabled with its groups; disabled on leave, keeping the groups the
#        desired state lists; disabled without groups, AD accountExpires
#        from the termination; removed from its groups and deleted.
#   E702 is ACTIVE, then PENDING again (start date moved out): the account
#        is disabled and otherwise left as it is.
# Then ldap.disable_method = move (disabled entries live below
# ldap.disabled_dn), sink.rate_limit, and the mass-change guard: SUSPENDED
# and DISABLED count as disables, DELETED as a delete — three of them over a
# limit of one are all held, and no account is touched.
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
# The guard is off for the walk (it has its own part at the end).
write_config 'topic.partitions = 3' 'sink.guard.enabled = false' \
	"ldap.password_file = $T_DIR/ldap-passwords" \
	"ad.url = $IDSTREAM_TEST_AD_URL" "ad.bind_dn = $AD_BIND" \
	"ad.bind_password_file = $IDSTREAM_TEST_AD_PASSWORD_FILE" "ad.base_dn = $AD_BASE" \
	"ad.people_dn = OU=people,$AD_OU" "ad.groups_dn = OU=groups,$AD_OU" \
	'ad.tls_verify = never' "ad.password_file = $T_DIR/ad-passwords" \
	"scim.url = $IDSTREAM_TEST_SCIM_URL" "scim.bearer_token_file = $IDSTREAM_TEST_SCIM_TOKEN_FILE" \
	"scim.password_file = $T_DIR/scim-passwords"
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
DESIRED=$T_PREFIX.identity.desired
P=$T_LDAP_PEOPLE
GDN=$T_LDAP_GROUPS

# ---------------------------------------------------------------- encoder
cat >"$T_DIR/enc.py" <<'PY'
# enc.py AVSC OUT < record.json: Avro single-object encoding of one record
# (magic C3 01, CRC-64-AVRO fingerprint of the schema's Parsing Canonical
# Form little-endian, Avro binary body).
import json, struct, sys

PRIM = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
EMPTY = 0xC15D213AA4D7A795
TABLE = []
for i in range(256):
    fp = i
    for _ in range(8):
        fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
    TABLE.append(fp)

def crc64(data):
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return fp

def canonical(s, ns):
    if isinstance(s, str):
        return json.dumps(s)
    if isinstance(s, list):
        return "[" + ",".join(canonical(x, ns) for x in s) + "]"
    t = s["type"]
    if t in PRIM:
        return json.dumps(t)
    out = []
    if "name" in s:
        name = s["name"]
        ns = s.get("namespace", ns)
        if "." not in name and ns:
            name = ns + "." + name
        out.append('"name":' + json.dumps(name))
    out.append('"type":' + json.dumps(t))
    if t == "record":
        out.append('"fields":[' + ",".join(
            '{"name":%s,"type":%s}' % (json.dumps(f["name"]), canonical(f["type"], ns))
            for f in s["fields"]) + "]")
    if "symbols" in s:
        out.append('"symbols":' + json.dumps(s["symbols"], separators=(",", ":")))
    if "items" in s:
        out.append('"items":' + canonical(s["items"], ns))
    if "values" in s:
        out.append('"values":' + canonical(s["values"], ns))
    return "{" + ",".join(out) + "}"

def zz(n):
    n = (n << 1) ^ (n >> 63)
    b = bytearray()
    while n & ~0x7F:
        b.append((n & 0x7F) | 0x80)
        n >>= 7
    b.append(n)
    return bytes(b)

def enc(s, v):
    if isinstance(s, list):  # ["null", X]
        return zz(0) if v is None else zz(1) + enc(s[1], v)
    t = s if isinstance(s, str) else s["type"]
    if t in ("long", "int"):
        return zz(int(v))
    if t == "string":
        b = v.encode()
        return zz(len(b)) + b
    if t == "enum":
        return zz(s["symbols"].index(v))
    if t == "map":
        body = b"".join(enc("string", k) + enc(s["values"], v[k]) for k in sorted(v))
        return (zz(len(v)) + body + zz(0)) if v else zz(0)
    if t == "array":
        body = b"".join(enc(s["items"], x) for x in v)
        return (zz(len(v)) + body + zz(0)) if v else zz(0)
    if t == "record":
        return b"".join(enc(f["type"], v.get(f["name"], f.get("default"))) for f in s["fields"])
    raise SystemExit("unsupported type %r" % (t,))

schema = json.load(open(sys.argv[1]))
rec = json.load(sys.stdin)
fp = crc64(canonical(schema, "").encode())
with open(sys.argv[2], "wb") as f:
    f.write(b"\xc3\x01" + struct.pack("<Q", fp) + enc(schema, rec))
PY

# publish EMP VERSION STATE 'GROUPS' [EFFECTIVE_AT_MS [TITLE]]: one desired
# identity in ou=Engineering, straight to identity.desired.
publish() {
	_emp=$1 _ver=$2 _st=$3 _groups=$4 _eff=${5:-1760000000000} _title=${6:-Engineer}
	case $_emp in
	E701) _fn=Grace _ln=Hopper _uid=ghopper ;;
	*) _fn=Ada _ln=Byron${_emp#E} _uid=abyron${_emp#E} ;;
	esac
	python3 - "$_emp" "$_ver" "$_st" "$_groups" "$_eff" "$_title" "$_fn" "$_ln" "$_uid" \
		>"$T_DIR/d.json" <<'PY'
import json, sys
emp, ver, st, groups, eff, title, fn, ln, uid = sys.argv[1:]
print(json.dumps({
    "employee_id": emp, "version": int(ver), "state": st,
    "attributes": {"uid": uid, "cn": fn + " " + ln, "displayName": fn + " " + ln,
                   "givenName": fn, "sn": ln, "mail": uid + "@example.com",
                   "title": title, "departmentNumber": "Engineering",
                   "employeeNumber": emp},
    "groups": sorted(groups.split()), "container": "ou=Engineering",
    "manager_id": None, "policy_version": "test",
    "cause_event_id": "ev-%s-%s" % (emp, ver), "effective_at": int(eff),
    "causes": []}))
PY
	python3 "$T_DIR/enc.py" "$IDSTREAM_REPO/schemas/desired_identity.avsc" \
		"$T_DIR/d.avro" <"$T_DIR/d.json"
	kcat -P -b "$IDSTREAM_TEST_KAFKA" -t "$DESIRED" -k "$_emp" \
		-X partitioner=murmur2_random "$T_DIR/d.avro" ||
		fail "publishing $_emp v$_ver"
}

sinks() { # every sink to idle; summaries in $T_DIR/<kind>.out
	for kind in ldap ad scim; do
		ids sink "$kind" --until-idle >"$T_DIR/$kind.out" 2>>"$T_DIR/$kind.log" ||
			fail "sink $kind failed: $(tail -3 "$T_DIR/$kind.log")"
	done
}

L_DN="uid=ghopper,ou=Engineering,$P"
ad_attr() { # EMP ATTR → its values, one per line
	ad ldapsearch -b "$AD_OU" "(employeeID=$1)" "$2" | sed -n "s/^$2: //p"
}
scim_get() {
	curl -fsS -H "Authorization: Bearer $(cat "$IDSTREAM_TEST_SCIM_TOKEN_FILE")" \
		"$IDSTREAM_TEST_SCIM_URL$1" | tr -d '\n' | sed 's/": /":/g'
}
scim_user() { scim_get "/Users?filter=externalId%20eq%20%22$1%22"; }
scim_group() { scim_get "/Groups?filter=displayName%20eq%20%22$1%22"; }
scim_uid() { # EMP → the SCIM id of its User
	scim_user "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Resources"][0]["id"])'
}

# ---------------------------------------------------------------- PENDING
publish E701 1 PENDING ''
sinks
ldap_exists "$L_DN" && fail "LDAP: a PENDING hire got an entry"
assert_eq "" "$(ad_attr E701 sAMAccountName)" "AD: a PENDING hire got a user"
assert_contains "$(scim_user E701)" '"totalResults":0' "SCIM: a PENDING hire got a User"

# ---------------------------------------------------------------- PRESTART
publish E701 2 PRESTART ''
sinks
for kind in ldap ad scim; do
	assert_contains "$(cat "$T_DIR/$kind.out")" "1 created" "sink $kind, PRESTART"
done
assert_eq "000001010000Z" "$(ldap_get "$L_DN" pwdAccountLockedTime)" "LDAP: PRESTART entry locked"
assert_eq "514" "$(ad_attr E701 userAccountControl)" "AD: PRESTART user disabled"
assert_contains "$(scim_user E701)" '"active":false' "SCIM: PRESTART User inactive"
# Initial passwords: one line per created account, 0600 files, no log has one.
for kind in ldap ad scim; do
	f=$T_DIR/$kind-passwords
	[ -f "$f" ] || fail "$kind: no password delivery file"
	assert_eq 600 "$(stat -c %a "$f")" "$kind password file mode"
	assert_eq 1 "$(wc -l <"$f" | tr -d ' ')" "$kind: one initial password"
	assert_eq E701 "$(cut -f1 "$f")" "$kind: delivery line names the employee"
	pw=$(cut -f3 "$f")
	[ "${#pw}" -ge 20 ] || fail "$kind: initial password shorter than the policy"
	if grep -rqF -- "$pw" "$T_DIR"/*.log "$T_DIR"/*.out; then
		fail "$kind: the initial password appears in a log"
	fi
done
case $(ldap_get "$L_DN" userPassword) in
"{SSHA}"*) ;;
*) fail "LDAP: userPassword is not an {SSHA} hash" ;;
esac
assert_eq "" "$(ldap_get "$L_DN" memberOf)" "LDAP: no groups before the start"

# ---------------------------------------------------------------- ACTIVE
publish E701 3 ACTIVE 'dept-engineering staff'
publish E702 1 ACTIVE 'dept-engineering staff'
sinks
assert_eq "" "$(ldap_get "$L_DN" pwdAccountLockedTime)" "LDAP: ACTIVE unlocked"
assert_eq "$(printf 'cn=dept-engineering,%s\ncn=staff,%s' "$GDN" "$GDN")" \
	"$(ldap_get "$L_DN" memberOf)" "LDAP: ACTIVE groups"
# The initial password works once the lock is lifted.
ldapwhoami -x -H "$IDSTREAM_TEST_LDAP_URL" -D "$L_DN" \
	-y <(printf '%s' "$(cut -f3 "$T_DIR/ldap-passwords" | head -1)") >/dev/null 2>&1 ||
	fail "LDAP: the delivered initial password does not bind"
assert_eq "512" "$(ad_attr E701 userAccountControl)" "AD: ACTIVE enabled"
assert_eq 2 "$(ad_attr E701 memberOf | grep -c "OU=groups,$AD_OU")" "AD: ACTIVE groups"
assert_contains "$(scim_user E701)" '"active":true' "SCIM: ACTIVE"
G_ID=$(scim_uid E701)
assert_contains "$(scim_group staff)" "$G_ID" "SCIM: member of staff"
# Each account got its password once, at creation.
for kind in ldap ad scim; do
	assert_eq 2 "$(wc -l <"$T_DIR/$kind-passwords" | tr -d ' ')" "$kind: passwords after E702"
done

# ---------------------------------------------------------------- SUSPENDED
# On leave: disabled; the desired groups say "staff" only.
publish E701 4 SUSPENDED 'staff'
sinks
for kind in ldap ad scim; do
	assert_contains "$(cat "$T_DIR/$kind.out")" "1 disabled" "sink $kind, SUSPENDED"
done
assert_eq "000001010000Z" "$(ldap_get "$L_DN" pwdAccountLockedTime)" "LDAP: SUSPENDED locked"
assert_eq "cn=staff,$GDN" "$(ldap_get "$L_DN" memberOf)" "LDAP: SUSPENDED keeps the desired groups"
assert_eq "514" "$(ad_attr E701 userAccountControl)" "AD: SUSPENDED disabled"
assert_eq 1 "$(ad_attr E701 memberOf | grep -c "CN=staff,OU=groups")" "AD: SUSPENDED keeps staff"
assert_eq 0 "$(ad_attr E701 memberOf | grep -c "CN=dept-engineering" || true)" "AD: SUSPENDED leaves dept"
assert_contains "$(scim_user E701)" '"active":false' "SCIM: SUSPENDED"
assert_contains "$(scim_group staff)" "$G_ID" "SCIM: still in staff"
case $(scim_group dept-engineering) in *"$G_ID"*) fail "SCIM: SUSPENDED still in dept-engineering" ;; esac

# ---------------------------------------------------------------- back, then DISABLED
publish E701 5 ACTIVE 'dept-engineering staff'
sinks
assert_eq "" "$(ldap_get "$L_DN" pwdAccountLockedTime)" "LDAP: back from leave"
assert_eq "512" "$(ad_attr E701 userAccountControl)" "AD: back from leave"
assert_contains "$(scim_user E701)" '"active":true' "SCIM: back from leave"
# Terminated 2025-03-31T12:00:00Z: AD accountExpires is that instant.
publish E701 6 DISABLED '' 1743422400000
sinks
assert_eq "000001010000Z" "$(ldap_get "$L_DN" pwdAccountLockedTime)" "LDAP: DISABLED locked"
assert_eq "" "$(ldap_get "$L_DN" memberOf)" "LDAP: DISABLED has no groups"
assert_eq "514" "$(ad_attr E701 userAccountControl)" "AD: DISABLED"
assert_eq "133878960000000000" "$(ad_attr E701 accountExpires)" "AD: accountExpires from the termination"
assert_eq 0 "$(ad_attr E701 memberOf | grep -c "OU=groups" || true)" "AD: DISABLED has no groups"
assert_contains "$(scim_user E701)" '"active":false' "SCIM: DISABLED"

# ---------------------------------------------------------------- PENDING over an account
publish E702 2 PENDING '' 1760000000000 'Future Title'
sinks
E702_DN="uid=abyron702,ou=Engineering,$P"
assert_eq "000001010000Z" "$(ldap_get "$E702_DN" pwdAccountLockedTime)" "LDAP: PENDING locks an existing entry"
assert_eq "Engineer" "$(ldap_get "$E702_DN" title)" "LDAP: PENDING leaves the entry otherwise alone"
assert_eq 2 "$(ldap_get "$E702_DN" memberOf | grep -c .)" "LDAP: PENDING keeps the memberships"
assert_eq "514" "$(ad_attr E702 userAccountControl)" "AD: PENDING disables an existing user"
assert_eq "Engineer" "$(ad_attr E702 title)" "AD: PENDING leaves the user otherwise alone"
s=$(scim_user E702)
assert_contains "$s" '"active":false' "SCIM: PENDING sets an existing User inactive"
assert_contains "$s" '"title":"Engineer"' "SCIM: PENDING leaves the User otherwise alone"

# ---------------------------------------------------------------- DELETED
publish E701 7 DELETED ''
sinks
ldap_exists "$L_DN" && fail "LDAP: DELETED entry still there"
assert_eq 0 "$(ldap_count "(member=$L_DN)" "$GDN")" "LDAP: DELETED left no memberships"
assert_eq "" "$(ad_attr E701 sAMAccountName)" "AD: DELETED user still there"
assert_contains "$(scim_user E701)" '"totalResults":0' "SCIM: DELETED User still there"
case $(scim_group staff) in *"$G_ID"*) fail "SCIM: the deleted User is still in staff" ;; esac

# Nothing left to do: a second run writes nothing anywhere.
sinks
for kind in ldap ad scim; do
	assert_contains "$(cat "$T_DIR/$kind.out")" "; 0 " "idle $kind writes nothing"
done

# ---------------------------------------------------------------- disable by move
# ldap.disable_method = move: a leave moves the entry below ldap.disabled_dn
# (no lock), the return moves it back with its groups intact, and a
# deletion finds it there.
DIS="ou=disabled,$T_LDAP_BASE"
_ldap ldapdelete -r "$DIS" >/dev/null 2>&1 || true
mv_sink() {
	ids --set ldap.disable_method=move --set "ldap.disabled_dn=$DIS" \
		sink ldap --until-idle >"$T_DIR/ldap.out" 2>>"$T_DIR/ldap.log" ||
		fail "sink ldap (move) failed: $(tail -3 "$T_DIR/ldap.log")"
}
M_ACT="uid=abyron801,ou=Engineering,$P"
M_DIS="uid=abyron801,$DIS"
publish E801 1 ACTIVE 'dept-engineering staff'
mv_sink
ldap_exists "$M_ACT" || fail "move: E801 not created"
publish E801 2 SUSPENDED 'staff'
mv_sink
ldap_exists "$M_ACT" && fail "move: E801 still in its department while disabled"
ldap_exists "$M_DIS" || fail "move: E801 not below $DIS"
assert_eq "" "$(ldap_get "$M_DIS" pwdAccountLockedTime)" "move: no lock"
assert_eq "cn=staff,$GDN" "$(ldap_get "$M_DIS" memberOf)" "move: memberships follow the entry"
assert_eq 1 "$(ldap_count "(member=$M_DIS)" "$GDN")" "move: group member values follow the entry"
publish E801 3 ACTIVE 'dept-engineering staff' 1760000000000 'Staff Engineer'
mv_sink
assert_contains "$(cat "$T_DIR/ldap.out")" "1 enabled" "move: enable"
ldap_exists "$M_DIS" && fail "move: E801 still disabled"
assert_eq "Staff Engineer" "$(ldap_get "$M_ACT" title)" "move: updated on the way back"
assert_eq 2 "$(ldap_get "$M_ACT" memberOf | grep -c .)" "move: groups back"
publish E801 4 DISABLED ''
mv_sink
ldap_exists "$M_DIS" || fail "move: terminated E801 not below $DIS"
assert_eq "" "$(ldap_get "$M_DIS" memberOf)" "move: no groups when terminated"
publish E801 5 DELETED ''
mv_sink
ldap_exists "$M_DIS" && fail "move: DELETED entry still below $DIS"
mv_sink
assert_contains "$(cat "$T_DIR/ldap.out")" "; 0 " "move: idle writes nothing"
_ldap ldapdelete -r "$DIS" >/dev/null 2>&1 || true

# ---------------------------------------------------------------- guard
# Three more active accounts, then a suspension, a termination and a
# deletion at once, with a limit of one take-away: all three are held and no
# account is touched.
# (Created under sink.rate_limit = 3 writes/s: an apply waits until the
# writes before it are paid for, so the run lasts at least (writes - the last
# apply's writes) / 3 seconds — a lower bound, whatever the machine's speed.)
for e in E711 E712 E713; do publish "$e" 1 ACTIVE 'staff'; done
t0=$(date +%s%3N)
out=$(ids --set sink.rate_limit=3 sink ldap --until-idle 2>>"$T_DIR/ldap.log")
t1=$(date +%s%3N)
writes=$(printf '%s' "$out" | sed -n 's/.*; \([0-9]*\) LDAP writes.*/\1/p')
assert_contains "$out" "3 created" "rate-limited creates"
[ "$writes" -ge 6 ] || fail "expected at least 6 LDAP writes, got '$writes'"
[ $((t1 - t0)) -ge $(((writes - 3) * 1000 / 3)) ] ||
	fail "rate limit: $writes writes in $((t1 - t0)) ms at 3 writes/s"
for e in E711 E712 E713; do
	ldap_exists "uid=abyron${e#E},ou=Engineering,$P" || fail "$e not created"
done
publish E711 2 SUSPENDED 'staff'
publish E712 2 DISABLED ''
publish E713 2 DELETED ''
out=$(ids --set sink.guard.enabled=true --set sink.guard.max_count=1 \
	--set sink.guard.settle_ms=0 sink ldap --until-idle 2>>"$T_DIR/ldap.log")
assert_contains "$out" "3 held for approval" "the guard counts SUSPENDED, DISABLED and DELETED"
held=$(ids held ldap --json)
for e in E711 E712 E713; do
	assert_contains "$held" "\"$e\"" "$e held"
	dn="uid=abyron${e#E},ou=Engineering,$P"
	ldap_exists "$dn" || fail "$e deleted while held"
	assert_eq "" "$(ldap_get "$dn" pwdAccountLockedTime)" "$e locked while held"
done
echo ok
