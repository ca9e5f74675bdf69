# test_ad_target.sh — the Active Directory target under the failures issue 4
# names, against a real Samba AD DC, driven by `idstream process` and
# `idstream sink ad` as an operator runs them; every check reads the users
# back over LDAPS (ldapsearch) or decodes <prefix>.sink.results.
#
#   A. kill -9 of `sink ad`: at the sink.after_apply failpoint (a user
#      written, its version not recorded) and at a random moment, during the
#      hires and again during an export of title changes and terminations;
#      after each restart every user is exactly as desired (sAMAccountName,
#      title, department, enabled or disabled, group memberships) and
#      sink.results holds no version applied twice and no operation done
#      twice.
#   D. an export terminating 30% of the users is held by the mass-change
#      guard: no user object written (uSNChanged unchanged), one HELD
#      result each, while a title change of the same export is applied;
#      `idstream approve ad` then disables them and empties their groups.
#   B. the DC stopped for 30 s (scripts/samba.sh stop, then start) while
#      changes arrive: the sink backs off, its circuit opens (one warning,
#      one DEFERRED result) and closes, and every change that arrived is
#      applied.  Samba's ports are fixed and machine-wide: when another
#      suite on this machine takes them while the DC is down, the start is
#      retried for up to 5 minutes.
#   C. extra attributes: a policy whose ad section declares telephoneNumber,
#      company and physicalDeliveryOfficeName: written (ldapsearch shows
#      them), a value the policy stops producing cleared, hand edits
#      repaired by `reconcile ad --repair`; then an attribute the schema does
#      not define: a FAILED result per employee naming it and the employee,
#      nothing of that version written, the sink still running.
. "$IDSTREAM_REPO/tests/lib.sh"

: "${IDSTREAM_TEST_AD_URL:?the Samba AD DC is not running (tests/run.sh starts it)}"
: "${IDSTREAM_RUN:?run through tests/run.sh, which names the services folder in IDSTREAM_RUN}"
AD_BASE=${IDSTREAM_TEST_AD_BASE:-DC=example,DC=test}
AD_OU="OU=$T_PREFIX,$AD_BASE"
AD_BIND=${IDSTREAM_TEST_AD_BIND:-Administrator@EXAMPLE.TEST}
ad() {
	LDAPTLS_REQCERT=never "$@" -x -H "$IDSTREAM_TEST_AD_URL" -D "$AD_BIND" \
		-y "$IDSTREAM_TEST_AD_PASSWORD_FILE" -o ldif-wrap=no
}
# 8>&-: a DC started here must not hold the test runner's lock (fd 8).
samba() { sh "$IDSTREAM_REPO/scripts/samba.sh" "$1" 8>&- >>"$T_DIR/samba.log" 2>&1; }
samba_up() { # start, retried while another suite holds the ports
	_deadline=$(($(date +%s) + 300))
	until samba start; do
		[ "$(date +%s)" -lt "$_deadline" ] || return 1
		sleep 3
	done
}
SAMBA_DOWN=""
trap '[ -z "$SAMBA_DOWN" ] || samba_up; ad ldapdelete -r "$AD_OU" >/dev/null 2>&1 || true; lib_cleanup' EXIT
printf 'dn: %s\nobjectClass: organizationalUnit\n\ndn: OU=people,%s\nobjectClass: organizationalUnit\n\ndn: OU=groups,%s\nobjectClass: organizationalUnit\n' \
	"$AD_OU" "$AD_OU" "$AD_OU" | ad ldapadd >/dev/null

T0=$(date +%s)
step() { printf '[%3ds] %s\n' $(($(date +%s) - T0)) "$*"; }
# Employee ids E<K><part><nnn>; sAMAccountNames at most 20 characters.
K=$(printf '%03d' $(($$ % 1000)))

# ---------------------------------------------------------------- helpers

deployment() { # D set: config $T_DIR/$D.conf (prefix ${T_PREFIX}_$D)
	write_config 'topic.partitions = 3' 'ingest.termination_threshold = 0.5' \
		"ad.url = $IDSTREAM_TEST_AD_URL" "ad.bind_dn = $AD_BIND" \
		"ad.bind_password_file = $IDSTREAM_TEST_AD_PASSWORD_FILE" "ad.base_dn = $AD_BASE" \
		"ad.people_dn = OU=people,$AD_OU" "ad.groups_dn = OU=groups,$AD_OU" \
		'ad.tls_verify = never' "ad.password_file = $T_DIR/ad-passwords" "$@"
	sed -e "s|^topic.prefix = .*|topic.prefix = ${T_PREFIX}_$D|" \
		-e "s|^state.dir = .*|state.dir = $T_DIR/$D-state|" "$T_CONF" >"$T_DIR/$D.conf"
	ids "$D" topics create >/dev/null
}
ids() {
	_d=$1
	shift
	"$IDSTREAM_BIN" --config "$T_DIR/$_d.conf" "$@"
}
alive() {
	kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
crash() {
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	T_PIDS=$(printf ' %s ' "$T_PIDS" | sed "s/ $1 / /")
}

# snapshot X: one line per user of part X, sorted:
#   employeeID|sAMAccountName|title|department|userAccountControl|groups
# (groups: the CNs of its memberOf below this test's groups OU).
snapshot() {
	ad ldapsearch -LLL -b "OU=people,$AD_OU" "(employeeID=E$K$1*)" employeeID \
		sAMAccountName title department userAccountControl memberOf 2>/dev/null |
		LC_ALL=C awk -v gou=",OU=groups,$AD_OU" '
		function flush() { if (e != "") { n = split(g, a, ","); s = "";
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
			for (i = 1; i <= n; i++) s = s (i > 1 ? "," : "") a[i];
			print e "|" sam "|" ti "|" de "|" uac "|" s }
			e = sam = ti = de = uac = g = "" }
		/^dn: / { flush() }
		/^employeeID: / { e = substr($0, 13) }
		/^sAMAccountName: / { sam = substr($0, 17) }
		/^title: / { ti = substr($0, 8) }
		/^department: / { de = substr($0, 13) }
		/^userAccountControl: / { uac = substr($0, 21) }
		/^memberOf: / { v = substr($0, 11); if (index(v, gou)) { sub(/^CN=/, "", v); sub(/,.*/, "", v); g = g (g == "" ? "" : ",") v } }
		END { flush() }' | LC_ALL=C sort
}
user_count() { snapshot "$1" | wc -l | tr -d ' '; }

# expected CSV [CSV_BEFORE]: everyone in CSV enabled (512) in dept-engineering
# and staff; given the export before it, everyone missing from CSV disabled
# (514), in no group, attributes as before.
expected() {
	LC_ALL=C awk -F, -v OFS='|' '
	function row(uac, groups) { return $1 OFS tolower(substr($2, 1, 1) $3) OFS $4 OFS $5 OFS uac OFS groups }
	FNR == 1 { next }
	NR == FNR { seen[$1] = 1; print row(512, "dept-" tolower($5) ",staff"); next }
	!($1 in seen) { print row(514, "") }' "$@" | LC_ALL=C sort
}
check_users() { # X EXPECTED_FILE WHAT
	snapshot "$1" >"$T_DIR/actual.txt"
	diff "$2" "$T_DIR/actual.txt" >"$T_DIR/users.diff" ||
		fail "$3: the AD users differ from the export (< expected, > actual):
$(head -20 "$T_DIR/users.diff")"
}
# results X: the committed SinkResults of part X decoded, one line each:
#   "EMPLOYEE VERSION OUTCOME OPS" with OPS "op/attribute;..." (spaces
#   in attributes as '_', "-" for none).
results() {
	kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "${T_PREFIX}_$1.sink.results" -e -q \
		-f '%K %S %k%s' 2>"$T_DIR/kcat.err" | perl -e '
use strict; binmode STDIN; local $/; my $d = <STDIN>;
my @outcomes = qw(APPLIED NOOP FAILED DEFERRED HELD);
my ($v, $i);
sub lng { my ($n, $s) = (0, 0);
  while (1) { die "truncated\n" if $i >= length $v; my $b = ord(substr($v, $i++, 1));
    $n |= ($b & 0x7f) << $s; $s += 7; last unless $b & 0x80; }
  return ($n >> 1) ^ -($n & 1); }
sub str { my $l = lng(); my $s = substr($v, $i, $l); $i += $l; return $s; }
while ($d =~ /\G(-?\d+) (-?\d+) /gc) {
  my ($kl, $vl) = ($1, $2); my $p = pos($d);
  $v = substr($d, $p + $kl, $vl); pos($d) = $p + $kl + $vl;
  die "not single-object encoded\n" if substr($v, 0, 2) ne "\xC3\x01";
  $i = 10; str(); my $id = str(); my $ver = lng(); my $oc = lng(); my @ops;
  while (1) { my $n = lng(); last if $n == 0; if ($n < 0) { $n = -$n; lng(); }
    for (1 .. $n) { my $op = str(); my $at = str(); for (1 .. 2) { str() if lng() == 1; }
      $at =~ s/ /_/g; push @ops, "$op/$at"; } }
  print "$id $ver $outcomes[$oc] ", (@ops ? join(";", @ops) : "-"), "\n"; }
die "unparsed bytes\n" if (pos($d) // 0) != length $d;
' || fail "decoding ${T_PREFIX}_$1.sink.results failed: $(cat "$T_DIR/kcat.err")"
}

# check_results X WHAT [RECREATED]: no version of part X applied twice, no
# operation done twice for one version, nothing FAILED, and no employee
# created twice (unless RECREATED: the server lost them).
check_results() {
	results "$1" >"$T_DIR/results-$1.txt"
	_bad=$(awk '$3 == "FAILED"' "$T_DIR/results-$1.txt" | head -3)
	[ -z "$_bad" ] || fail "$2: failed applies in sink.results: $_bad"
	_dup=$(awk '$3 == "APPLIED" { print $1, "v" $2 }' "$T_DIR/results-$1.txt" | sort | uniq -d | head -5)
	[ -z "$_dup" ] || fail "$2: versions APPLIED twice in sink.results: $_dup"
	_dup=$(awk '$4 != "-" { n = split($4, o, ";"); for (j = 1; j <= n; j++) print $1, "v" $2, o[j] }' \
		"$T_DIR/results-$1.txt" | sort | uniq -d | head -5)
	[ -z "$_dup" ] || fail "$2: operations done twice for one version: $_dup"
	[ -z "${3:-}" ] || return 0
	_dup=$(awk '$4 ~ /(^|;)add\/dn/ { print $1 }' "$T_DIR/results-$1.txt" | sort | uniq -d | head -5)
	[ -z "$_dup" ] || fail "$2: employees created twice: $(echo $_dup)"
}

# export_csv FILE PART FIRST LAST [TITLE_FROM TITLE_TO TITLE]: employees
# E<K><PART><nnn>, "Engineer" in Engineering, those from TITLE_FROM to
# TITLE_TO with TITLE instead.
export_csv() {
	_f=$1 _p=$2 _a=$3 _b=$4 _tf=${5:-0} _tt=${6:-0} _tn=${7:-}
	{
		echo "employee_id,first_name,last_name,title,department"
		for _i in $(seq "$_a" "$_b"); do
			_n=$(printf '%03d' "$_i")
			_t=Engineer
			[ "$_i" -lt "$_tf" ] || [ "$_i" -gt "$_tt" ] || _t=$_tn
			echo "E$K$_p$_n,Ada,Adt$K$_p$_n,$_t,Engineering"
		done
	} >"$_f"
}
ge() { # MIN CMD...
	_min=$1
	shift
	_got=$("$@") || return 1
	[ "${_got:-0}" -ge "$_min" ]
}
differing() { snapshot "$1" | LC_ALL=C comm -13 "$2" - | wc -l | tr -d ' '; }
eq_file() { snapshot "$1" | cmp -s - "$2"; } # X FILE: the users are exactly FILE

# ---------------------------------------------------------------- A. kill -9
D=A
deployment 'sink.guard.enabled = false'
export_csv "$T_DIR/A1.csv" A 1 60
expected "$T_DIR/A1.csv" >"$T_DIR/A1.exp"
ids A ingest csv "$T_DIR/A1.csv" >/dev/null
ids A process --until-idle >"$T_DIR/A-process1.log" 2>&1 || fail "process A1: $(tail -3 "$T_DIR/A-process1.log")"

set +e
IDSTREAM_FAILPOINTS=sink.after_apply ids A sink ad --until-idle >"$T_DIR/A-fp1.log" 2>&1
rc=$?
set -e
assert_eq 137 "$rc" "exit status of the sink at sink.after_apply (SIGKILL)"
assert_eq 1 "$(user_count A)" "users written before the failpoint"
fp_emp=$(snapshot A | cut -d'|' -f1)
assert_eq "" "$(results A)" "sink.results before the first restart"

# A random kill while it creates (paced by sink.rate_limit, three writes a
# user, so that the kill lands mid-run).
spawn A-sink1 "$IDSTREAM_BIN" --config "$T_DIR/A.conf" --set sink.rate_limit=30 sink ad
pid=$SPAWNED_PID
wait_for 60 ge 15 user_count A
alive "$pid" || fail "sink A exited before the kill: $(tail -5 "$T_DIR/A-sink1.log")"
crash "$pid"
at_kill=$(user_count A)
[ "$at_kill" -lt 60 ] || fail "the sink was not killed mid-run ($at_kill of 60 users)"
step "A: sink killed at the failpoint (1 user) and at random ($at_kill of 60 users)"
ids A sink ad --until-idle >"$T_DIR/A-sink2.out" 2>"$T_DIR/A-sink2.log" ||
	fail "sink A after the kills: $(tail -5 "$T_DIR/A-sink2.log")"
check_users A "$T_DIR/A1.exp" "after the kills during the hires"
check_results A "after the kills during the hires"
assert_eq 60 "$(awk '$2 == 1 && ($3 == "APPLIED" || $3 == "NOOP") { print $1 }' \
	"$T_DIR/results-A.txt" | sort -u | wc -l | tr -d ' ')" "hires with a result"
assert_eq "NOOP" "$(awk -v e="$fp_emp" '$1 == e { print $3 }' "$T_DIR/results-A.txt" | sort -u)" \
	"results of $fp_emp, written at the failpoint"
step "A: 60 users exact after the restart, each version applied once"

# Second export: 15 title changes (A001-A015) and 5 terminations (A056-A060).
export_csv "$T_DIR/A2.csv" A 1 55 1 15 "Senior Engineer"
expected "$T_DIR/A2.csv" "$T_DIR/A1.csv" >"$T_DIR/A2.exp"
out=$(ids A ingest csv "$T_DIR/A2.csv")
assert_contains "$out" "15 updates, 5 terminations"
ids A process --until-idle >"$T_DIR/A-process2.log" 2>&1 || fail "process A2: $(tail -3 "$T_DIR/A-process2.log")"
set +e
IDSTREAM_FAILPOINTS=sink.after_apply ids A sink ad --until-idle >"$T_DIR/A-fp2.log" 2>&1
rc=$?
set -e
assert_eq 137 "$rc" "exit status of the sink at sink.after_apply (second export)"
assert_eq 1 "$(differing A "$T_DIR/A1.exp")" "users changed before the second failpoint"
spawn A-sink3 "$IDSTREAM_BIN" --config "$T_DIR/A.conf" --set sink.rate_limit=8 sink ad
pid=$SPAWNED_PID
wait_for 60 ge 6 differing A "$T_DIR/A1.exp"
alive "$pid" || fail "sink A exited before the kill: $(tail -5 "$T_DIR/A-sink3.log")"
crash "$pid"
at_kill=$(differing A "$T_DIR/A1.exp")
[ "$at_kill" -lt 20 ] || fail "the sink was not killed mid-run ($at_kill of 20 changes)"
ids A sink ad --until-idle >"$T_DIR/A-sink4.out" 2>"$T_DIR/A-sink4.log" ||
	fail "sink A after the second kills: $(tail -5 "$T_DIR/A-sink4.log")"
check_users A "$T_DIR/A2.exp" "after the kills during the changes"
check_results A "after the kills during the changes"
step "A: 15 changes + 5 terminations exact after two more kills ($at_kill at the random kill)"

# ---------------------------------------------------------------- C. extra attributes
# A policy whose ad section declares attributes beyond the built-in ones:
# they are written, repaired by reconcile and cleared when the policy stops
# producing a value; one the schema does not define fails each employee,
# naming it, with nothing written.
D=C
deployment 'sink.guard.enabled = false'
cat >"$T_DIR/C-policy.lua" <<'LUA'
local function identity(emp, ctx)
	local uid = lower(alnum(fold(left(emp.first_name, 1) .. emp.last_name)))
	local full = emp.first_name .. " " .. emp.last_name
	return {
		targets = { ldap = { attributes = { uid = uid, cn = full, sn = emp.last_name } },
		ad = { attributes = {
			sAMAccountName = uid, givenName = emp.first_name, sn = emp.last_name,
			displayName = full, title = emp.title, department = emp.department,
			employeeID = emp.employee_id, company = "Example Corp",
			telephoneNumber = emp.phone, physicalDeliveryOfficeName = emp.location,
			EXTRA
		}, groups = {} } },
		timing = { create_days_before_start = 3650, enable = "create" },
	}
end
return { targets = { "ldap", "ad" }, identity = identity }
LUA
sed 's/EXTRA//' "$T_DIR/C-policy.lua" >"$T_DIR/C-policy1.lua"
ids C policy deploy "$T_DIR/C-policy1.lua" --reason "extra AD attributes" >/dev/null
c_csv() { # FILE then rows "n,location,phone"
	_f=$1
	shift
	echo "employee_id,first_name,last_name,title,department,location,phone" >"$_f"
	for _r in "$@"; do
		_n=${_r%%,*}
		echo "E${K}C$_n,Ada,Cdt${K}C$_n,Engineer,Engineering,${_r#*,}" >>"$_f"
	done
}
# c_attrs N: "telephoneNumber|company|physicalDeliveryOfficeName|title" of E<K>C<N>.
c_attrs() {
	ad ldapsearch -LLL -b "OU=people,$AD_OU" "(employeeID=E${K}C$1)" telephoneNumber \
		company physicalDeliveryOfficeName title 2>/dev/null | awk '
		/^telephoneNumber: / { t = substr($0, 18) } /^company: / { c = substr($0, 10) }
		/^physicalDeliveryOfficeName: / { o = substr($0, 29) } /^title: / { ti = substr($0, 8) }
		END { print t "|" c "|" o "|" ti }'
}
is_attrs() { [ "$(c_attrs "$1")" = "$2" ]; }
spawn C-sink "$IDSTREAM_BIN" --config "$T_DIR/C.conf" sink ad
C_SINK=$SPAWNED_PID
c_csv "$T_DIR/C1.csv" "001,Berlin,+49 30 1234" "002,Paris," "003,Oslo,+47 22 5555"
ids C ingest csv "$T_DIR/C1.csv" >/dev/null
ids C process --until-idle >"$T_DIR/C-process1.log" 2>&1 || fail "process C1: $(tail -3 "$T_DIR/C-process1.log")"
wait_for 60 is_attrs 003 "+47 22 5555|Example Corp|Oslo|Engineer"
assert_eq "+49 30 1234|Example Corp|Berlin|Engineer" "$(c_attrs 001)" "extra attributes of E${K}C001 in AD"
assert_eq "|Example Corp|Paris|Engineer" "$(c_attrs 002)" "extra attributes of E${K}C002 (no phone) in AD"
assert_eq "+47 22 5555|Example Corp|Oslo|Engineer" "$(c_attrs 003)" "extra attributes of E${K}C003 in AD"
step "C: telephoneNumber, company, physicalDeliveryOfficeName written"

# The phone of C001 leaves the HR record, C003 moves office.
c_csv "$T_DIR/C2.csv" "001,Berlin," "002,Paris," "003,Bergen,+47 22 5555"
ids C ingest csv "$T_DIR/C2.csv" >/dev/null
ids C process --until-idle >"$T_DIR/C-process2.log" 2>&1 || fail "process C2: $(tail -3 "$T_DIR/C-process2.log")"
wait_for 60 is_attrs 003 "+47 22 5555|Example Corp|Bergen|Engineer"
wait_for 30 is_attrs 001 "|Example Corp|Berlin|Engineer"
assert_eq "|Example Corp|Berlin|Engineer" "$(c_attrs 001)" \
	"E${K}C001 after its phone left the HR record (telephoneNumber cleared)"
step "C: a value the policy stops producing is cleared, a changed one replaced"

# Drift by hand, repaired by reconcile.
dn3=$(ad ldapsearch -LLL -b "OU=people,$AD_OU" "(employeeID=E${K}C003)" 1.1 | sed -n 's/^dn: //p')
dn2=$(ad ldapsearch -LLL -b "OU=people,$AD_OU" "(employeeID=E${K}C002)" 1.1 | sed -n 's/^dn: //p')
printf 'dn: %s\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: 000\n\ndn: %s\nchangetype: modify\ndelete: company\n\ndn: %s\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: 111\n' \
	"$dn3" "$dn2" "$dn2" | ad ldapmodify >/dev/null
assert_eq "111||Paris|Engineer" "$(c_attrs 002)" "E${K}C002 edited by hand"
set +e
out=$(ids C reconcile ad --repair 2>&1)
set -e
assert_contains "$out" "2 repaired, 0 failed" "reconcile --repair of the extra attributes"
assert_eq "+47 22 5555|Example Corp|Bergen|Engineer" "$(c_attrs 003)" "E${K}C003 after reconcile"
assert_eq "|Example Corp|Paris|Engineer" "$(c_attrs 002)" "E${K}C002 after reconcile"
step "C: hand edits of extra attributes repaired by reconcile"

# An attribute the schema does not define: every employee FAILED, naming it
# and the employee; nothing written (the title change of the same version
# is not applied either), and the sink keeps running.
sed -e 's/EXTRA/noSuchAttr'"$K"' = "x",/' -e 's/title = emp.title/title = upper(emp.title)/' \
	"$T_DIR/C-policy.lua" >"$T_DIR/C-policy2.lua"
ids C policy deploy "$T_DIR/C-policy2.lua" --reason "an attribute AD does not know" >/dev/null
ids C process --until-idle >"$T_DIR/C-process3.log" 2>&1 || fail "process C3: $(tail -3 "$T_DIR/C-process3.log")"
failed_for() { # N: the FAILED result of E<K>C<N> names the attribute and the employee
	kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "${T_PREFIX}_C.sink.results" -e -q -f '%s\n' 2>/dev/null |
		grep -a "E${K}C$1: attribute noSuchAttr$K is not defined in the AD schema" >/dev/null
}
wait_for 60 failed_for 001
wait_for 30 failed_for 002
wait_for 30 failed_for 003
alive "$C_SINK" || fail "the sink exited on an undefined attribute: $(tail -5 "$T_DIR/C-sink.log")"
results C >"$T_DIR/results-C.txt"
assert_eq 3 "$(awk '$3 == "FAILED"' "$T_DIR/results-C.txt" | wc -l | tr -d ' ')" "FAILED results"
assert_eq "|Example Corp|Berlin|Engineer" "$(c_attrs 001)" "E${K}C001 untouched by the failed version"
assert_eq "+47 22 5555|Example Corp|Bergen|Engineer" "$(c_attrs 003)" "E${K}C003 untouched by the failed version"
stop_pid "$C_SINK"
step "C: an undefined attribute fails each employee by name, nothing half-applied"

# ---------------------------------------------------------------- D. guard
# 40 users, the limit is 10% of at least 20: terminating 12 (30%) holds them
# all, with no user object written, while a title change of the same export
# is applied; `idstream approve ad` then disables them.
D=D
deployment 'sink.guard.min_managed = 20' 'sink.guard.settle_ms = 1500'
spawn D-proc "$IDSTREAM_BIN" --config "$T_DIR/D.conf" process
spawn D-sink "$IDSTREAM_BIN" --config "$T_DIR/D.conf" sink ad
D_SINK=$SPAWNED_PID
export_csv "$T_DIR/D1.csv" D 1 40
expected "$T_DIR/D1.csv" >"$T_DIR/D1.exp"
ids D ingest csv "$T_DIR/D1.csv" >/dev/null
wait_for 120 ge 40 user_count D
wait_for 60 eq_file D "$T_DIR/D1.exp"
# usns: "employeeID uSNChanged" of each user of part D (uSNChanged moves on
# every write to the object; a membership change writes the group only).
usns() {
	ad ldapsearch -LLL -b "OU=people,$AD_OU" "(employeeID=E${K}D*)" employeeID uSNChanged |
		awk '/^dn: / { if (e != "") print e, u; e = u = "" }
		/^employeeID: / { e = $2 } /^uSNChanged: / { u = $2 }
		END { if (e != "") print e, u }' | LC_ALL=C sort
}
usns >"$T_DIR/D-usn-before.txt"
assert_eq 40 "$(wc -l <"$T_DIR/D-usn-before.txt" | tr -d ' ')" "users with a uSNChanged"

# ED001-ED012 leave (12 of 40 = 30%), ED013 gets a new title.
export_csv "$T_DIR/D2.csv" D 13 40 13 13 "Staff Engineer"
out=$(ids D ingest csv "$T_DIR/D2.csv")
assert_contains "$out" "12 terminations"
held_count() { ids D held ad --json | grep -c '"employee_id"' || true; }
held_is_12() { [ "$(held_count)" = 12 ]; }
wait_for 60 held_is_12
title_of_13() { snapshot D | grep -q "^E${K}D013|[^|]*|Staff Engineer|"; }
wait_for 60 title_of_13
sleep 2
expected "$T_DIR/D1.csv" | sed "s/^\\(E${K}D013|[^|]*|\\)Engineer|/\\1Staff Engineer|/" >"$T_DIR/D-held.exp"
check_users D "$T_DIR/D-held.exp" "guard: while the terminations are held"
usns >"$T_DIR/D-usn-held.txt"
assert_eq "E${K}D013" "$(diff "$T_DIR/D-usn-before.txt" "$T_DIR/D-usn-held.txt" |
	sed -n 's/^> \([^ ]*\) .*/\1/p' | tr '\n' ' ' | sed 's/ $//')" "users written while held"
results D >"$T_DIR/results-D.txt"
assert_eq 12 "$(awk '$2 == 2 && $3 == "HELD"' "$T_DIR/results-D.txt" | wc -l | tr -d ' ')" "HELD results"
assert_contains "$(ids D held ad)" "12 changes held for ad"
assert_contains "$(ids D history E${K}D005)" "mass-change guard"
step "D: 12 terminations of 40 held, no user written, the title change applied"

out=$(ids D approve ad)
assert_contains "$out" "approve ad: 12 applied, 0 failed, 0 no longer held"
expected "$T_DIR/D2.csv" "$T_DIR/D1.csv" >"$T_DIR/D2.exp"
wait_for 30 eq_file D "$T_DIR/D2.exp"
check_users D "$T_DIR/D2.exp" "guard: after approve"
assert_contains "$(ids D held ad)" "nothing held for ad"
stop_pid "$D_SINK"
check_results D "guard"
step "D: approve disabled the 12 users and took them out of their groups"

# ---------------------------------------------------------------- B. outage
D=B
deployment 'sink.guard.enabled = false' 'sink.retry.initial_ms = 200' \
	'sink.retry.max_ms = 2000' 'sink.circuit.failures = 4' 'ad.timeout_ms = 2000'
spawn B-proc "$IDSTREAM_BIN" --config "$T_DIR/B.conf" process
spawn B-sink "$IDSTREAM_BIN" --config "$T_DIR/B.conf" sink ad
B_SINK=$SPAWNED_PID
export_csv "$T_DIR/B1.csv" B 1 20
expected "$T_DIR/B1.csv" >"$T_DIR/B1.exp"
ids B ingest csv "$T_DIR/B1.csv" >/dev/null
wait_for 90 ge 20 user_count B
wait_for 30 eq_file B "$T_DIR/B1.exp"
check_users B "$T_DIR/B1.exp" "before the outage"

samba stop
SAMBA_DOWN=1
down_at=$(date +%s)
export_csv "$T_DIR/B2.csv" B 1 20 1 8 Analyst
expected "$T_DIR/B2.csv" >"$T_DIR/B2.exp"
ids B ingest csv "$T_DIR/B2.csv" >/dev/null
wait_for 60 grep -q "circuit open" "$T_DIR/B-sink.log"
left=$((30 - ($(date +%s) - down_at)))
[ "$left" -le 0 ] || sleep "$left"
alive "$B_SINK" || fail "the sink exited while the DC was down: $(tail -5 "$T_DIR/B-sink.log")"
attempts=$(grep -c 'probe failed\|unavailable (attempt' "$T_DIR/B-sink.log" || true)
[ "$attempts" -lt 40 ] || fail "$attempts attempts in ~30 s: not backing off"
samba_up || fail "the DC did not start again: $(tail -3 "$T_DIR/samba.log")"
SAMBA_DOWN=""
step "B: DC down for $(($(date +%s) - down_at)) s, $attempts attempts meanwhile"
wait_for 60 grep -q 'circuit closed' "$T_DIR/B-sink.log"
assert_eq 1 "$(grep -c 'circuit open' "$T_DIR/B-sink.log")" "circuit-open warnings"
assert_contains "$(grep 'circuit closed' "$T_DIR/B-sink.log")" "reachable again after"
wait_for 60 eq_file B "$T_DIR/B2.exp"
check_users B "$T_DIR/B2.exp" "the changes made during the outage"
stop_pid "$B_SINK"
check_results B "after the outage"
assert_eq 1 "$(awk '$3 == "DEFERRED"' "$T_DIR/results-B.txt" | wc -l | tr -d ' ')" \
	"DEFERRED results (the employee waiting when the circuit opened)"
assert_eq 8 "$(awk '$2 == 2 && $3 == "APPLIED"' "$T_DIR/results-B.txt" | wc -l | tr -d ' ')" \
	"APPLIED results of the changes made during the outage"
step "B: every change made during the outage applied once"
echo ok
