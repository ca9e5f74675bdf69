# test_scim_target.sh — the SCIM target under the failures issue 4 names,
# against the real scim2-server, driven by `idstream process` and `idstream
# sink scim` as an operator runs them; every check reads the Users and
# Groups back over HTTP (curl + jq) or decodes <prefix>.sink.results.
# Each part is its own deployment (topic prefix, state folder, employee ids
# and user names), so one part's accounts never count in another's guard.
#
#   A. kill -9 of `sink scim`: at the sink.after_apply failpoint (a User
#      written, its version not recorded) and at a random moment, during the
#      hires and again during an export of title changes and terminations;
#      after each restart every User is exactly as desired (userName, title,
#      department, mail, displayName, active, Group memberships) and
#      sink.results holds no version applied twice and no operation done
#      twice.
#   C. an export terminating 30% of the accounts is held: every User keeps
#      active=true and its meta.version (no write at all), one HELD result
#      each, while a title change of the same export is applied; `idstream
#      approve scim` then sets them inactive and out of their groups.
#   D. attributes edited by hand on the server (PATCH title, PATCH active)
#      are reported by `idstream reconcile scim` and written back by
#      `--repair`.
#   E. sink.concurrency = 4 (the connections share one listing of the
#      Users): a User made by hand after the listing, with an employee's
#      userName, is adopted (the create meets a 409), nobody is created
#      twice.
#   B. scim2-server stopped for 30 s (scripts/services.sh, by its PID file)
#      while changes arrive: the sink backs off, its circuit opens (one
#      warning, one DEFERRED result) and closes, and every change that
#      arrived is applied.  scim2-server keeps its resources in memory only,
#      so it comes back empty: the Users the outage wiped are reported by
#      `idstream reconcile scim` and re-created by `--repair`, after which the
#      server is exactly the export again.  (Last, because it empties the
#      server.)
. "$IDSTREAM_REPO/tests/lib.sh"

: "${IDSTREAM_TEST_SCIM_URL:?scim2-server is not running (tests/run.sh starts it)}"
: "${IDSTREAM_TEST_SCIM_TOKEN_FILE:?no SCIM token file (tests/run.sh names it)}"
: "${IDSTREAM_RUN:?run through tests/run.sh, which names the services folder in IDSTREAM_RUN}"
# scripts/services.sh restarts scim2-server on the port tests/run.sh gave it.
IDSTREAM_SCIM_PORT=$(printf '%s' "$IDSTREAM_TEST_SCIM_URL" | sed -e 's|.*:||' -e 's|/.*||')
export IDSTREAM_SCIM_PORT
# 8>&-: a server started here must not hold the test runner's lock (fd 8).
scim_service() { sh "$IDSTREAM_REPO/scripts/services.sh" "$1" scim 8>&- >>"$T_DIR/services.log" 2>&1; }
SCIM_DOWN=""
trap '[ -z "$SCIM_DOWN" ] || scim_service start; lib_cleanup' EXIT

T0=$(date +%s)
step() { printf '[%3ds] %s\n' $(($(date +%s) - T0)) "$*"; }

# The token goes to curl in a header file (0600), never in argv.
HDR=$T_DIR/scim-auth.hdr
(umask 077 && printf 'Authorization: Bearer %s\n' "$(cat "$IDSTREAM_TEST_SCIM_TOKEN_FILE")" >"$HDR")
# Employee ids E<K><part><nnn>: K is unique to this run, since the server
# may hold the Users of earlier runs (user names derive from the ids).
K=$(printf '%05d' $(($$ % 100000)))
ENT="urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# ---------------------------------------------------------------- helpers

# deployment X: config $T_DIR/X.conf with topic prefix ${T_PREFIX}_X and
# state $T_DIR/X-state; ids X ARGS... runs idstream on it.
deployment() {
	write_config 'topic.partitions = 3' \
		"scim.url = $IDSTREAM_TEST_SCIM_URL" \
		"scim.bearer_token_file = $IDSTREAM_TEST_SCIM_TOKEN_FILE" \
		'ingest.termination_threshold = 0.5' "$@"
	sed -e "s|^topic.prefix = .*|topic.prefix = ${T_PREFIX}_$D|" \
		-e "s|^state.dir = .*|state.dir = $T_DIR/$D-state|" "$T_CONF" >"$T_DIR/$D.conf"
	ids "$D" topics create >/dev/null
}
ids() {
	_d=$1
	shift
	"$IDSTREAM_BIN" --config "$T_DIR/$_d.conf" "$@"
}

# alive PID: runs and is not a zombie.
alive() {
	kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
# crash PID: SIGKILL, reap, forget.
crash() {
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	T_PIDS=$(printf ' %s ' "$T_PIDS" | sed "s/ $1 / /")
}

scim_get() { # PATH → JSON (fails the test when the server does not answer 2xx)
	curl -fsS -H @"$HDR" "$IDSTREAM_TEST_SCIM_URL$1" ||
		fail "GET $1 on scim2-server failed"
}
scim_send() { # METHOD PATH JSON
	curl -fsS -X "$1" -H @"$HDR" -H 'Content-Type: application/scim+json' \
		--data "$3" "$IDSTREAM_TEST_SCIM_URL$2" >/dev/null ||
		fail "$1 $2 on scim2-server failed"
}
# users X: the Users whose externalId starts with E<X> (a list response).
users() { scim_get "/Users?filter=externalId%20sw%20%22E$K$1%22&count=1000"; }
user_count() { users "$1" | jq '.totalResults'; }
user() { # EMP → its User (null when none)
	scim_get "/Users?filter=externalId%20eq%20%22$1%22" | jq -c '.Resources[0]'
}

# snapshot X: one line per User of part X, sorted:
#   externalId|userName|title|department|active|groups|emails|displayName
# (groups: the displayNames of the Groups listing it as a member.)
snapshot() {
	users "$1" >"$T_DIR/users.json"
	scim_get "/Groups?count=1000" >"$T_DIR/groups.json"
	jq -r -n --arg ent "$ENT" --slurpfile u "$T_DIR/users.json" \
		--slurpfile g "$T_DIR/groups.json" '
		($g[0].Resources // []) as $groups
		| ($u[0].Resources // [])[] | . as $x
		| [$x.externalId, $x.userName, ($x.title // ""), ($x[$ent].department // ""),
		   ($x.active | tostring),
		   ([$groups[] | select(any(.members[]?; .value == $x.id)) | .displayName]
		    | sort | join(",")),
		   ([$x.emails[]?.value] | join(",")), ($x.displayName // "")]
		| join("|")' | LC_ALL=C sort
}

# expected CSV [CSV_BEFORE]: the snapshot lines the export means: everyone
# in CSV active in staff and dept-<department>; given the export before it,
# everyone missing from CSV inactive, in no group, attributes as before.
expected() {
	LC_ALL=C awk -F, -v OFS='|' '
	function row(active, groups,    u) {
		u = tolower(substr($2, 1, 1) $3)
		return $1 OFS u OFS $4 OFS $5 OFS active OFS groups OFS u "@example.com" OFS $2 " " $3
	}
	FNR == 1 { next }
	NR == FNR { seen[$1] = 1; print row("true", "dept-" tolower($5) ",staff"); next }
	!($1 in seen) { print row("false", "") }' "$@" | LC_ALL=C sort
}

# check_users X EXPECTED_FILE WHAT: the Users of part X are exactly those.
check_users() {
	snapshot "$1" >"$T_DIR/actual.txt"
	diff "$2" "$T_DIR/actual.txt" >"$T_DIR/users.diff" ||
		fail "$3: the SCIM Users differ from the export (< expected, > actual):
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
	_dup=$(awk '$4 ~ /(^|;)create\// { print $1 }' "$T_DIR/results-$1.txt" | sort | uniq -d | head -5)
	[ -z "$_dup" ] || fail "$2: employees created twice: $(echo $_dup)"
}

# export_csv FILE PART FIRST LAST [TITLE_FROM TITLE_TO TITLE]: employees
# E<PART>FIRST..E<PART>LAST (3 digits), "Engineer" in Engineering, those
# from TITLE_FROM to TITLE_TO with TITLE instead.
export_csv() {
	_f=$1 _p=$2 _a=$3 _b=$4 _tf=${5:-0} _tt=${6:-0} _tn=${7:-}
	{
		echo "employee_id,first_name,last_name,title,department"
		for _i in $(seq "$_a" "$_b"); do
			_n=$(printf '%03d' "$_i")
			_t=Engineer
			[ "$_i" -lt "$_tf" ] || [ "$_i" -gt "$_tt" ] || _t=$_tn
			echo "E$K$_p$_n,Sam,Scimt$K$_p$_n,$_t,Engineering"
		done
	} >"$_f"
}

# eq EXPECTED CMD...: CMD prints EXPECTED (for wait_for).
eq() {
	_want=$1
	shift
	[ "$("$@")" = "$_want" ]
}
ge() { # MIN CMD...: CMD prints a number >= MIN
	_min=$1
	shift
	_got=$("$@") || return 1
	[ "${_got:-0}" -ge "$_min" ]
}
# differing X EXPECTED_FILE: how many snapshot lines of part X are not in
# the file (Users changed since then).
differing() {
	snapshot "$1" | LC_ALL=C comm -13 "$2" - | wc -l | tr -d ' '
}

# ---------------------------------------------------------------- A. kill -9
D=A
deployment 'sink.guard.enabled = false'
export_csv "$T_DIR/A1.csv" A 1 80
expected "$T_DIR/A1.csv" >"$T_DIR/A1.exp"
ids A ingest csv "$T_DIR/A1.csv" >/dev/null
ids A process --until-idle >"$T_DIR/A-process1.log" 2>&1 || fail "process A1: $(tail -3 "$T_DIR/A-process1.log")"

# The failpoint: the first User is written, then the sink dies before it
# records the version or publishes a result.
set +e
IDSTREAM_FAILPOINTS=sink.after_apply ids A sink scim --until-idle >"$T_DIR/A-fp1.log" 2>&1
rc=$?
set -e
assert_eq 137 "$rc" "exit status of the sink at sink.after_apply (SIGKILL)"
assert_eq 1 "$(user_count A)" "Users written before the failpoint"
fp_emp=$(users A | jq -r '.Resources[0].externalId')
assert_eq "" "$(results A)" "sink.results before the first restart"

# A random kill while it creates (paced by sink.rate_limit so that the kill
# lands mid-run on any machine).
spawn A-sink1 "$IDSTREAM_BIN" --config "$T_DIR/A.conf" --set sink.rate_limit=40 sink scim
pid=$SPAWNED_PID
# Past 50 Users: the sink has recorded what it applied at least once.
wait_for 60 ge 60 user_count A
alive "$pid" || fail "sink A exited before the kill: $(tail -5 "$T_DIR/A-sink1.log")"
crash "$pid"
at_kill=$(user_count A)
[ "$at_kill" -lt 80 ] || fail "the sink was not killed mid-run ($at_kill of 80 Users)"
step "A: sink killed at the failpoint (1 User) and at random ($at_kill of 80 Users)"
ids A sink scim --until-idle >"$T_DIR/A-sink2.out" 2>"$T_DIR/A-sink2.log" ||
	fail "sink A after the kills: $(tail -5 "$T_DIR/A-sink2.log")"
check_users A "$T_DIR/A1.exp" "after the kills during the hires"
check_results A "after the kills during the hires"
assert_eq 80 "$(awk '$2 == 1 && ($3 == "APPLIED" || $3 == "NOOP") { print $1 }' \
	"$T_DIR/results-A.txt" | sort -u | wc -l | tr -d ' ')" "hires with a result"
# The User written just before the failpoint has no APPLIED result, only the
# NOOP of the restart that found it done.
assert_eq "NOOP" "$(awk -v e="$fp_emp" '$1 == e { print $3 }' "$T_DIR/results-A.txt" | sort -u)" \
	"results of $fp_emp, written at the failpoint"
# The sink records what it applied as it goes (at least every second): the
# random kill leaves only the last few to be read again, each a NOOP.
again=$(awk '{ print $1, $2 }' "$T_DIR/results-A.txt" | sort | uniq -d | wc -l | tr -d ' ')
[ "$again" -lt 20 ] || fail "$again of $at_kill versions published again after the random kill: applied versions are not recorded as they go"
step "A: 80 Users exact after the restart, each version applied once ($again read again)"

# Second export: 20 title changes (EA001-EA020) and 6 terminations (EA075-EA080).
export_csv "$T_DIR/A2.csv" A 1 74 1 20 "Senior Engineer"
expected "$T_DIR/A2.csv" "$T_DIR/A1.csv" >"$T_DIR/A2.exp"
out=$(ids A ingest csv "$T_DIR/A2.csv")
assert_contains "$out" "20 updates, 6 terminations"
ids A process --until-idle >"$T_DIR/A-process2.log" 2>&1 || fail "process A2: $(tail -3 "$T_DIR/A-process2.log")"
set +e
IDSTREAM_FAILPOINTS=sink.after_apply ids A sink scim --until-idle >"$T_DIR/A-fp2.log" 2>&1
rc=$?
set -e
assert_eq 137 "$rc" "exit status of the sink at sink.after_apply (second export)"
assert_eq 1 "$(differing A "$T_DIR/A1.exp")" "Users changed before the second failpoint"
spawn A-sink3 "$IDSTREAM_BIN" --config "$T_DIR/A.conf" --set sink.rate_limit=20 sink scim
pid=$SPAWNED_PID
wait_for 60 ge 8 differing A "$T_DIR/A1.exp"
alive "$pid" || fail "sink A exited before the kill: $(tail -5 "$T_DIR/A-sink3.log")"
crash "$pid"
at_kill=$(differing A "$T_DIR/A1.exp")
[ "$at_kill" -lt 26 ] || fail "the sink was not killed mid-run ($at_kill of 26 changes)"
ids A sink scim --until-idle >"$T_DIR/A-sink4.out" 2>"$T_DIR/A-sink4.log" ||
	fail "sink A after the second kills: $(tail -5 "$T_DIR/A-sink4.log")"
check_users A "$T_DIR/A2.exp" "after the kills during the changes"
check_results A "after the kills during the changes"
bad=$(awk -v k="E$K" 'NR == FNR { id = $1; sub(/\|.*/, "", id); want[id] = 1; next }
	$2 == 2 && ($3 == "APPLIED" || $3 == "NOOP") { got[$1] = 1 }
	END { for (e in want) if (e <= k "A020" || e >= k "A075") if (!(e in got)) print e }' \
	"$T_DIR/A2.exp" "$T_DIR/results-A.txt" | sort | head -5)
[ -z "$bad" ] || fail "changed employees without a result for version 2: $bad"
step "A: 20 changes + 6 terminations exact after two more kills, each version applied once"

# ---------------------------------------------------------------- C. guard
# 40 accounts, the limit is 10% of at least 20.
D=C
deployment 'sink.guard.min_managed = 20' 'sink.guard.settle_ms = 1500'
spawn C-proc "$IDSTREAM_BIN" --config "$T_DIR/C.conf" process
spawn C-sink "$IDSTREAM_BIN" --config "$T_DIR/C.conf" sink scim
C_SINK=$SPAWNED_PID
export_csv "$T_DIR/C1.csv" C 1 40
expected "$T_DIR/C1.csv" >"$T_DIR/C1.exp"
ids C ingest csv "$T_DIR/C1.csv" >/dev/null
wait_for 60 eq 40 user_count C
wait_for 30 eq 40 eval 'results C | wc -l | tr -d " "'
check_users C "$T_DIR/C1.exp" "guard: the 40 hires"
users C | jq -r '.Resources[] | "\(.externalId) \(.meta.version)"' | sort >"$T_DIR/C-versions-before.txt"

# EC001-EC012 leave (12 of 40 = 30%), EC013 gets a new title.
export_csv "$T_DIR/C2.csv" C 13 40 13 13 "Staff Engineer"
out=$(ids C ingest csv "$T_DIR/C2.csv")
assert_contains "$out" "12 terminations"
held_count() { ids C held scim --json | grep -c '"employee_id"' || true; }
wait_for 60 eq 12 held_count
wait_for 30 eq '"Staff Engineer"' eval 'user E${K}C013 | jq .title'
sleep 2
# Zero Users touched: all 40 still active and in their groups, and none but
# EC013 has a new meta.version.
expected "$T_DIR/C1.csv" | sed "s/^\\(E${K}C013|[^|]*|\\)Engineer|/\\1Staff Engineer|/" >"$T_DIR/C-held.exp"
check_users C "$T_DIR/C-held.exp" "guard: while the terminations are held"
assert_eq 40 "$(users C | jq '[.Resources[] | select(.active == true)] | length')" "active Users while held"
users C | jq -r '.Resources[] | "\(.externalId) \(.meta.version)"' | sort >"$T_DIR/C-versions-held.txt"
assert_eq "E${K}C013" "$(diff "$T_DIR/C-versions-before.txt" "$T_DIR/C-versions-held.txt" |
	sed -n 's/^> \([^ ]*\) .*/\1/p' | tr '\n' ' ' | sed 's/ $//')" "Users with a new meta.version while held"
results C >"$T_DIR/results-C.txt"
assert_eq 12 "$(awk '$2 == 2 && $3 == "HELD"' "$T_DIR/results-C.txt" | wc -l | tr -d ' ')" "HELD results"
assert_contains "$(ids C held scim)" "12 changes held for scim"
assert_contains "$(ids C history E${K}C005)" "mass-change guard"
step "C: 12 terminations of 40 held, no User touched, the title change applied"

out=$(ids C approve scim)
assert_contains "$out" "approve scim: 12 applied, 0 failed, 0 no longer held"
expected "$T_DIR/C2.csv" "$T_DIR/C1.csv" >"$T_DIR/C2.exp"
check_users C "$T_DIR/C2.exp" "guard: after approve"
assert_contains "$(ids C held scim)" "nothing held for scim"
assert_eq 12 "$(results C | awk '$2 == 2 && $3 == "APPLIED" && $4 ~ /disable\/active/' | wc -l | tr -d ' ')" \
	"APPLIED disables after approve"
step "C: approve set the 12 Users inactive and out of their groups"

# ---------------------------------------------------------------- D. drift
id30=$(user E${K}C030 | jq -r .id)
id31=$(user E${K}C031 | jq -r .id)
scim_send PATCH "/Users/$id30" '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"Hacker"}]}'
scim_send PATCH "/Users/$id31" '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}'
assert_eq '"Hacker"' "$(user E${K}C030 | jq .title)" "hand edit of E${K}C030"
assert_eq false "$(user E${K}C031 | jq .active)" "hand edit of E${K}C031"
# A PUT of the whole User with another displayName (meta dropped: it is
# read-only).
u32=$(user E${K}C032)
scim_send PUT "/Users/$(printf '%s' "$u32" | jq -r .id)" \
	"$(printf '%s' "$u32" | jq -c 'del(.meta) | .displayName = "Somebody Else"')"
assert_eq '"Somebody Else"' "$(user E${K}C032 | jq .displayName)" "hand edit of E${K}C032"
set +e
out=$(ids C reconcile scim)
rc=$?
set -e
assert_eq 1 "$rc" "exit status of reconcile finding drift"
assert_contains "$out" "E${K}C030 v1:"
assert_contains "$out" "title Hacker -> Engineer"
assert_contains "$out" "E${K}C031 v1:"
assert_contains "$out" "active false -> true"
assert_contains "$out" "E${K}C032 v1:"
assert_contains "$out" "displayName Somebody Else -> Sam Scimt${K}C032"
assert_contains "$out" "3 drifted"
printf '%s\n' "$out"
assert_eq '"Hacker"' "$(user E${K}C030 | jq .title)" "reconcile without --repair writes nothing"
out=$(ids C reconcile scim --repair)
assert_contains "$out" "3 repaired, 0 failed"
printf '%s\n' "$out"
check_users C "$T_DIR/C2.exp" "after reconcile --repair"
# The repairs are in sink.results, as the operations they were.
results C >"$T_DIR/results-C.txt"
for want in "C030 1 APPLIED .*title" "C031 1 APPLIED .*enable/active" "C032 1 APPLIED .*displayName"; do
	grep -q "^E$K$want" "$T_DIR/results-C.txt" || fail "no result of the repair matching '$want'"
done
out=$(ids C reconcile scim)
assert_contains "$out" "0 drifted"
stop_pid "$C_SINK"
step "D: hand edits of title and active reported and repaired"

# ---------------------------------------------------------------- E. concurrency
# sink.concurrency = 4: the four connections share the one listing of the
# Users the sink takes.  30 hires; then a User made by hand with the
# userName of E031 (no externalId), which that listing does not hold; then
# 10 more hires.  Every employee ends with exactly one User, E031's is the
# one made by hand (adopted after the server's 409), and sink.results holds
# no create twice and none for E031.
D=E
deployment 'sink.guard.enabled = false' 'sink.concurrency = 4'
spawn E-proc "$IDSTREAM_BIN" --config "$T_DIR/E.conf" process
spawn E-sink "$IDSTREAM_BIN" --config "$T_DIR/E.conf" sink scim
E_SINK=$SPAWNED_PID
export_csv "$T_DIR/E1.csv" E 1 30
ids E ingest csv "$T_DIR/E1.csv" >/dev/null
wait_for 60 eq 30 user_count E
E_NAME=$(printf 'sscimt%se031' "$K")
E_HAND=$(curl -fsS -X POST -H @"$HDR" -H 'Content-Type: application/scim+json' \
	--data "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"$E_NAME\"}" \
	"$IDSTREAM_TEST_SCIM_URL/Users" | jq -r .id) || fail "POST of the User made by hand failed"
export_csv "$T_DIR/E2.csv" E 1 40
ids E ingest csv "$T_DIR/E2.csv" >/dev/null
wait_for 60 eq 40 user_count E
wait_for 30 eq 40 eval 'results E | wc -l | tr -d " "'
expected "$T_DIR/E2.csv" >"$T_DIR/E2.exp"
check_users E "$T_DIR/E2.exp" "concurrency: the 40 hires"
assert_eq "$E_HAND" "$(user "E${K}E031" | jq -r .id)" "E031's User is the one made by hand"
assert_eq 1 "$(scim_get "/Users?filter=userName%20eq%20%22$E_NAME%22" | jq .totalResults)" \
	"Users named $E_NAME"
check_results E "concurrency"
if grep -q "^E${K}E031 .*create/" "$T_DIR/results-E.txt"; then
	fail "E031 was created although a User of its name was there: $(grep "^E${K}E031 " "$T_DIR/results-E.txt")"
fi
stop_pid "$E_SINK"
step "E: 4 connections, one listing; a User made after it adopted, none made twice"

# ---------------------------------------------------------------- B. outage
D=B
deployment 'sink.retry.initial_ms = 200' 'sink.retry.max_ms = 2000' \
	'sink.circuit.failures = 4' 'scim.timeout_ms = 2000'
spawn B-proc "$IDSTREAM_BIN" --config "$T_DIR/B.conf" process
spawn B-sink "$IDSTREAM_BIN" --config "$T_DIR/B.conf" sink scim
B_SINK=$SPAWNED_PID
export_csv "$T_DIR/B1.csv" B 1 30
ids B ingest csv "$T_DIR/B1.csv" >/dev/null
wait_for 60 eq 30 user_count B
wait_for 30 eq 30 eval 'results B | wc -l | tr -d " "'

# The server goes away; 10 title changes and 5 hires arrive while it is gone.
scim_service stop
SCIM_DOWN=1
t_down=$(date +%s)
export_csv "$T_DIR/B2.csv" B 1 35 1 10 Analyst
expected "$T_DIR/B2.csv" >"$T_DIR/B2.exp"
ids B ingest csv "$T_DIR/B2.csv" >/dev/null
wait_for 30 grep -q 'circuit open' "$T_DIR/B-sink.log"
left=$((30 - ($(date +%s) - t_down)))
[ "$left" -le 0 ] || sleep "$left"
attempts=$(grep -c 'probe failed\|unavailable (attempt' "$T_DIR/B-sink.log" || true)
[ "$attempts" -lt 50 ] || fail "$attempts attempts in 30 s: not backing off"
assert_eq 1 "$(grep -c 'circuit open' "$T_DIR/B-sink.log")" "circuit-open warnings"
alive "$B_SINK" || fail "the sink exited while scim2-server was down: $(tail -5 "$T_DIR/B-sink.log")"
scim_service start
SCIM_DOWN=""
step "B: scim2-server down for $(($(date +%s) - t_down)) s, $attempts attempts"
wait_for 60 grep -q 'circuit closed' "$T_DIR/B-sink.log"
assert_contains "$(grep 'circuit closed' "$T_DIR/B-sink.log")" "reachable again after"
# Everything that arrived during the outage is applied by the sink itself.
wait_for 60 eq 15 user_count B
grep -E "^E${K}B0(0[1-9]|10|3[1-5])\\|" "$T_DIR/B2.exp" >"$T_DIR/B2-changed.exp"
check_users B "$T_DIR/B2-changed.exp" "the changes made during the outage"
results B >"$T_DIR/results-B.txt"
assert_eq 1 "$(awk '$3 == "DEFERRED"' "$T_DIR/results-B.txt" | wc -l | tr -d ' ')" \
	"DEFERRED results (the employee waiting when the circuit opened)"
bad=$(awk -F'|' '{ print $1 }' "$T_DIR/B2-changed.exp" | while read -r e; do
	want=2
	case $e in "E${K}B03"*) want=1 ;; esac
	awk -v e="$e" -v w="$want" '$1 == e && $2 == w && $3 == "APPLIED"' "$T_DIR/results-B.txt" |
		grep -q . || echo "$e"
done | head -5)
[ -z "$bad" ] || fail "changes without an APPLIED result after the outage: $bad"
check_results B "after the outage" recreated
# The restarted server lost the 20 Users nobody changed: reconcile finds
# them and re-creates them.
set +e
out=$(ids B reconcile scim)
rc=$?
set -e
assert_eq 1 "$rc" "exit status of reconcile after the server lost its data"
assert_contains "$out" "20 drifted"
printf '%s\n' "$out" | tail -3
out=$(ids B reconcile scim --repair)
assert_contains "$out" "20 repaired, 0 failed"
printf '%s\n' "$out"
check_users B "$T_DIR/B2.exp" "after the outage and reconcile --repair"
stop_pid "$B_SINK"
assert_contains "$(tail -1 "$T_DIR/B-sink.log")" "0 failed"
step "B: nothing lost; circuit opened once and closed; server exact after repair"
echo ok
