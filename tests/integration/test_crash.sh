# test_crash.sh — kill -9 in the middle of a 5,000-employee run, at random
# points rather than at failpoints (test_recovery.sh does those):
#   A. the processor, while it is producing: after the restart
#      identity.desired holds every employee exactly once, as version 1;
#   B. the LDAP sink, while it is creating entries: after the restart the
#      directory is exactly the export (one entry per employee, attributes,
#      OUs, groups) and sink.results records each creation once;
#   C. `idstream run`, while it applies a second export (hires, changes,
#      terminations): after the restart every changed employee has exactly
#      one new version and the directory matches the second export;
#   D. afterwards small changes are applied by `run --until-idle`, and every
#      employee's latest version has a record in sink.results.
# Transactions of 20 events (~250 for the first export) give the kill many
# commit/WriteBatch boundaries to land near.
# Consumer groups of killed processes are left behind until their session
# times out; kafka.session.timeout.ms = 6000 (the broker's minimum) keeps each
# restart's wait for them at seconds instead of 45.
. "$IDSTREAM_REPO/tests/lib.sh"

PARTS=6
write_config "topic.partitions = $PARTS" 'processor.batch_max = 20' \
	'kafka.session.timeout.ms = 6000'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
GEN=$(dirname "$IDSTREAM_BIN")/tools/gen_export
[ -x "$GEN" ] || fail "no data generator at $GEN (make unit BUILD=...)"
HR=$T_PREFIX.hr.events
DESIRED=$T_PREFIX.identity.desired
RESULTS=$T_PREFIX.sink.results
PEOPLE_FILTER='(objectClass=inetOrgPerson)'
T0=$(date +%s)
step() { printf '[%3ds] %s\n' $(($(date +%s) - T0)) "$*"; }

# ---------------------------------------------------------------- helpers

# alive PID: the process runs (a zombie is an exited child not yet waited for).
alive() {
	kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# crash PID: SIGKILL, reap, and forget it (lib_cleanup must not signal a
# reused PID later).
crash() {
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	T_PIDS=$(printf ' %s ' "$T_PIDS" | sed "s/ $1 / /")
}

# wait_progress TIMEOUT PID LOG MIN CMD...: polls CMD (prints a number) every
# 50 ms until it reaches MIN; fails if PID exits first (naming its log) or
# after TIMEOUT seconds.
wait_progress() {
	_wp_deadline=$(($(date +%s) + $1))
	_wp_pid=$2 _wp_log=$3 _wp_min=$4
	shift 4
	while :; do
		_wp_n=$("$@") || true
		case $_wp_n in '' | *[!0-9]*) _wp_n=0 ;; esac
		[ "$_wp_n" -lt "$_wp_min" ] || return 0
		alive "$_wp_pid" || fail "$(basename "$_wp_log" .log) exited before the kill point ($* = $_wp_n): $(tail -5 "$_wp_log")"
		[ "$(date +%s)" -lt "$_wp_deadline" ] || fail "timed out waiting for $* >= $_wp_min (at $_wp_n)"
		sleep 0.05
	done
}

# run_until_idle NAME ARGS...: runs `idstream ARGS` in the foreground (at most
# 180 s) with its output in $T_DIR/NAME.log; fails with the log's tail.
run_until_idle() {
	_ru_name=$1
	shift
	timeout -k 5 180 "$IDSTREAM_BIN" --config "$T_CONF" "$@" >"$T_DIR/$_ru_name.log" 2>&1 ||
		fail "idstream $* exited with $?: $(grep -v '"debug"' "$T_DIR/$_ru_name.log" | tail -8)"
}

# end_offsets TOPIC: the sum of the partitions' end offsets (transaction
# markers included): a cheap progress gauge, not a message count.
end_offsets() {
	_eo_args=""
	_eo_p=0
	while [ "$_eo_p" -lt "$PARTS" ]; do
		_eo_args="$_eo_args -t $1:$_eo_p:-1"
		_eo_p=$((_eo_p + 1))
	done
	# shellcheck disable=SC2086
	kcat -Q -b "$IDSTREAM_TEST_KAFKA" $_eo_args 2>/dev/null | awk '{ s += $NF } END { print s + 0 }'
}

people_count() { ldap_count "$PEOPLE_FILTER" "$T_LDAP_PEOPLE"; }

# decode TOPIC desired|result: the committed messages of TOPIC decoded from
# their Avro single-object encoding (schemas/*.avsc), one line each:
#   desired  "KEY EMPLOYEE_ID VERSION STATE"
#   result   "KEY EMPLOYEE_ID VERSION OUTCOME CREATIONS" (ops "add" of "dn")
# A payload that is not single-object encoded prints "KEY BADMAGIC".
decode() {
	kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$1" -e -q -X isolation.level=read_committed \
		-f '%K %S %k%s' 2>"$T_DIR/kcat.err" | perl -e '
use strict; binmode STDIN; local $/; my $d = <STDIN>; my $kind = $ARGV[0];
my @states = qw(PENDING ACTIVE SUSPENDED DISABLED DELETED);
my @outcomes = qw(APPLIED NOOP FAILED DEFERRED HELD);
my ($v, $i);
sub lng { my ($n, $s) = (0, 0);
  while (1) { die "truncated\n" if $i >= length $v; my $b = ord(substr($v, $i++, 1));
    $n |= ($b & 0x7f) << $s; $s += 7; last unless $b & 0x80; }
  return ($n >> 1) ^ -($n & 1); }
sub str { my $l = lng(); my $s = substr($v, $i, $l); $i += $l; return $s; }
while ($d =~ /\G(-?\d+) (-?\d+) /gc) {
  my ($kl, $vl) = ($1, $2); my $p = pos($d);
  my $k = substr($d, $p, $kl); $v = substr($d, $p + $kl, $vl); pos($d) = $p + $kl + $vl;
  if (substr($v, 0, 2) ne "\xC3\x01") { print "$k BADMAGIC\n"; next; }
  $i = 10;
  if ($kind eq "desired") {
    my $id = str(); my $ver = lng(); my $st = lng(); print "$k $id $ver $states[$st]\n"; next; }
  str(); my $id = str(); my $ver = lng(); my $oc = lng(); my $adds = 0;
  while (1) { my $n = lng(); last if $n == 0; if ($n < 0) { $n = -$n; lng(); }
    for (1 .. $n) { my $op = str(); my $at = str(); for (1 .. 2) { str() if lng() == 1; }
      $adds++ if $op eq "add" && $at eq "dn"; } }
  print "$k $id $ver $outcomes[$oc] $adds\n"; }
die "unparsed bytes after message ", pos($d) // 0, "\n" if (pos($d) // 0) != length $d;
' "$2" || fail "decoding $1 failed: $(cat "$T_DIR/kcat.err")"
}

# expected_people CSV [CSV_BEFORE]: "ID|TITLE|DEPARTMENT|UID|STATE" for every
# employee of CSV (STATE active) and, given the export before it, for every
# employee missing from CSV (STATE disabled, attributes as before).  UID is
# computed only for names that are plain ASCII (first initial + last name,
# lower-case, [a-z0-9] only); diacritic folding is the unit tests' business.
expected_people() {
	LC_ALL=C awk -v OFS='|' '
	function csv(s, f,    n, i, c, q, cur) {
		n = 0; cur = ""; q = 0
		for (i = 1; i <= length(s); i++) {
			c = substr(s, i, 1)
			if (q) {
				if (c != "\"") cur = cur c
				else if (substr(s, i + 1, 1) == "\"") { cur = cur c; i++ }
				else q = 0
			} else if (c == "\"") q = 1
			else if (c == ",") { f[++n] = cur; cur = "" }
			else cur = cur c
		}
		f[++n] = cur
		return n
	}
	function row(line, state,    f, u) {
		csv(line, f)
		u = ""
		if ((f[col["first_name"]] f[col["last_name"]]) ~ /^[ -~]*$/) {
			u = tolower(substr(f[col["first_name"]], 1, 1) f[col["last_name"]])
			gsub(/[^a-z0-9]/, "", u)
		}
		return f[col["employee_id"]] OFS f[col["title"]] OFS f[col["department"]] OFS u OFS state
	}
	FNR == 1 { delete col; n = csv($0, h); for (i = 1; i <= n; i++) col[h[i]] = i; next }
	NR == FNR { id = $0; sub(/,.*/, "", id); seen[id] = 1; print row($0, "active"); next }
	{ id = $0; sub(/,.*/, "", id); if (!(id in seen)) print row($0, "disabled") }
	' "$@"
}

# directory_people: "ID|TITLE|DEPARTMENT|OU|UID|MAIL|LOCKED|MEMBEROF|RDN_UID"
# for every inetOrgPerson under ou=people (LOCKED: pwdAccountLockedTime set;
# MEMBEROF: number of groups).
directory_people() {
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$T_LDAP_PEOPLE" "$PEOPLE_FILTER" \
		employeeNumber title departmentNumber uid mail pwdAccountLockedTime memberOf \
		>"$T_DIR/people.ldif" 2>"$T_DIR/ldapsearch.err" ||
		fail "ldapsearch of the people failed: $(cat "$T_DIR/ldapsearch.err")"
	perl -MMIME::Base64 -pe 's/^([^:]+):: (.*)$/"$1: " . decode_base64($2)/e' \
		"$T_DIR/people.ldif" | LC_ALL=C awk -v OFS='|' '
	function flush() {
		if (dn != "") print a["employeenumber"], a["title"], a["departmentnumber"], ou,
			a["uid"], a["mail"], a["pwdaccountlockedtime"] != "", groups, rdn
		dn = ""; ou = ""; rdn = ""; groups = 0; delete a
	}
	/^$/ { flush(); next }
	/^dn: / {
		dn = substr($0, 5); n = split(dn, r, ",")
		rdn = r[1]; sub(/^uid=/, "", rdn); ou = r[2]; sub(/^ou=/, "", ou); next
	}
	{
		k = tolower(substr($0, 1, index($0, ":") - 1)); v = substr($0, index($0, ":") + 2)
		if (k == "memberof") groups++
		else if (k in a) a[k] = a[k] "+" v
		else a[k] = v
	}
	END { flush() }'
}

# check_directory EXPECTED_FILE: the people in the directory are exactly the
# expected ones: one entry per employee, no other entries, title,
# departmentNumber and OU as exported, uid (ASCII names) and mail, active
# ones unlocked in staff + their department group, disabled ones locked and
# in no group.
check_directory() {
	directory_people >"$T_DIR/actual.txt"
	LC_ALL=C awk -F'|' '
	NR == FNR { want[$1] = $0; next }
	{
		n[$1]++
		if (!($1 in want)) { print "unexpected entry for employeeNumber " $1; next }
		split(want[$1], e, "|")
		if ($2 != e[2]) print $1 ": title \"" $2 "\", expected \"" e[2] "\""
		if ($3 != e[3]) print $1 ": departmentNumber \"" $3 "\", expected \"" e[3] "\""
		if ($4 != e[3]) print $1 ": entry in ou=" $4 ", expected ou=" e[3]
		if (e[4] != "" && $5 != e[4]) print $1 ": uid \"" $5 "\", expected \"" e[4] "\""
		if ($5 != $9) print $1 ": uid \"" $5 "\" differs from the RDN uid=" $9
		if ($6 != $5 "@example.com") print $1 ": mail \"" $6 "\" for uid " $5
		if (e[5] == "active" && ($7 != 0 || $8 != 2))
			print $1 ": active but locked=" $7 ", in " $8 " groups (expected 2)"
		if (e[5] == "disabled" && ($7 != 1 || $8 != 0))
			print $1 ": terminated but locked=" $7 ", in " $8 " groups (expected 0)"
	}
	END {
		for (id in want) if (n[id] != 1) print id ": " (n[id] + 0) " entries, expected 1"
	}' "$1" "$T_DIR/actual.txt" >"$T_DIR/directory.diff" || fail "comparing the directory failed"
	[ ! -s "$T_DIR/directory.diff" ] ||
		fail "directory differs from the export ($(wc -l <"$T_DIR/directory.diff") problems):
$(sort "$T_DIR/directory.diff" | head -10)"
	# Group sizes: staff = every active employee, dept-<d> = its active ones.
	_ldap ldapsearch -LLL -o ldif-wrap=no -b "$T_LDAP_GROUPS" '(objectClass=groupOfNames)' \
		cn member 2>&1 | awk '/^cn: / { cn = $2 } /^member: / { n[cn]++ }
		END { for (c in n) print c, n[c] }' | sort >"$T_DIR/groups.actual"
	awk -F'|' '$5 == "active" { n["staff"]++; n["dept-" tolower($3)]++ }
		END { for (c in n) print c, n[c] }' "$1" | sort >"$T_DIR/groups.expected"
	diff "$T_DIR/groups.expected" "$T_DIR/groups.actual" >"$T_DIR/groups.diff" ||
		fail "group members (expected < > actual): $(cat "$T_DIR/groups.diff")"
}

# check_desired WHAT: identity.desired has no employee with the same version
# twice, and versions grow with the offset within each employee's partition.
check_desired() {
	decode "$DESIRED" desired >"$T_DIR/desired.txt"
	_dup=$(awk '{ print $1, $3 }' "$T_DIR/desired.txt" | sort | uniq -d | head -5)
	[ -z "$_dup" ] || fail "$1: identity.desired has duplicate versions: $_dup"
	_bad=$(awk '$1 != $2 || $3 <= last[$1] { print; n++ } { last[$1] = $3 } n == 5 { exit }' \
		"$T_DIR/desired.txt")
	[ -z "$_bad" ] || fail "$1: key/employee mismatch or versions out of order: $_bad"
}

# ---------------------------------------------------------------- data

"$GEN" --employees 5000 --seed 42 >"$T_DIR/export-1.csv"
"$GEN" --seed 42 --changes-from "$T_DIR/export-1.csv" >"$T_DIR/export-2.csv"
expected_people "$T_DIR/export-1.csv" >"$T_DIR/expected-1.txt"
expected_people "$T_DIR/export-2.csv" "$T_DIR/export-1.csv" >"$T_DIR/expected-2.txt"
assert_eq 5000 "$(wc -l <"$T_DIR/expected-1.txt" | tr -d ' ')" "employees in the first export"

ldap_reset
ids topics create >/dev/null
out=$(ids ingest csv "$T_DIR/export-1.csv")
assert_contains "$out" "5000 events published"
assert_eq 5000 "$(kafka_count "$HR")" "hr.events after the first export"
step "5000 hires ingested"

# ---------------------------------------------------------------- A. processor

spawn proc1 "$IDSTREAM_BIN" --config "$T_CONF" process
pid=$SPAWNED_PID
# 1,000 messages plus the commit markers of ~50 transactions of 20.
wait_progress 120 "$pid" "$T_DIR/proc1.log" 1100 end_offsets "$DESIRED"
crash "$pid"
at_kill=$(kafka_count "$DESIRED")
step "processor killed with $at_kill desired identities committed"
[ "$at_kill" -gt 0 ] && [ "$at_kill" -lt 5000 ] ||
	fail "the processor was not killed mid-run ($at_kill of 5000 committed)"

run_until_idle proc2 process --until-idle
grep -q 're-deriving state' "$T_DIR/proc2.log" &&
	step "restart re-derived state the killed processor had committed but not stored" || true
assert_eq 5000 "$(kafka_count "$DESIRED")" "identity.desired after the processor restart"
check_desired "after the processor crash"
assert_eq 5000 "$(awk '$3 == 1 && $4 == "ACTIVE"' "$T_DIR/desired.txt" | wc -l | tr -d ' ')" \
	"version-1 ACTIVE identities"
assert_eq "$(cut -d'|' -f1 "$T_DIR/expected-1.txt" | sort)" \
	"$(awk '{ print $1 }' "$T_DIR/desired.txt" | sort)" "employees with a desired identity"
# The same seen through the user's tool, for a few employees.
for e in E10001 E12345 E15000; do
	v=$(ids history "$e" --json | jq -c '[.[] | select(.kind == "desired") | .version]')
	assert_eq "[1]" "$v" "desired versions of $e in idstream history"
done
step "A: 5000 desired identities, each employee once, version 1"

# ---------------------------------------------------------------- B. sink

spawn sink1 "$IDSTREAM_BIN" --config "$T_CONF" sink ldap
pid=$SPAWNED_PID
wait_progress 150 "$pid" "$T_DIR/sink1.log" 1000 people_count
crash "$pid"
at_kill=$(people_count)
step "sink killed with $at_kill entries in the directory"
[ "$at_kill" -lt 5000 ] || fail "the sink was not killed mid-run ($at_kill of 5000 entries)"

run_until_idle sink2 sink ldap --until-idle
check_directory "$T_DIR/expected-1.txt"
decode "$RESULTS" result >"$T_DIR/results-1.txt"
dup=$(awk '$4 == "APPLIED" && $5 > 0 { print $1 }' "$T_DIR/results-1.txt" | sort | uniq -d | head -5)
[ -z "$dup" ] || fail "sink.results records these employees as created twice: $dup"
bad=$(awk '$4 != "APPLIED" && $4 != "NOOP"' "$T_DIR/results-1.txt" | head -3)
[ -z "$bad" ] || fail "sink.results has failed applies: $bad"
for e in E10001 E12345 E15000; do
	n=$(ids history "$e" --json |
		jq '[.[] | select(.kind == "sink_result") | .operations[] | select(.op == "add" and .attribute == "dn")] | length')
	[ "$n" -le 1 ] || fail "idstream history shows $e created $n times"
done
step "B: directory = export 1 (5000 entries, groups), no employee created twice"

# ---------------------------------------------------------------- C. run

out=$(ids ingest csv "$T_DIR/export-2.csv")
hires=$(awk -F'|' 'NR == FNR { old[$1] = 1; next } !($1 in old)' "$T_DIR/expected-1.txt" \
	"$T_DIR/expected-2.txt" | wc -l | tr -d ' ')
terms=$(grep -c '|disabled$' "$T_DIR/expected-2.txt" || true)
# Rows present in both files that differ (title, department, name).
changed=$(LC_ALL=C awk -F, 'NR == FNR { row[$1] = $0; next } ($1 in row) && row[$1] != $0' \
	"$T_DIR/export-1.csv" "$T_DIR/export-2.csv" | wc -l | tr -d ' ')
assert_contains "$out" "$hires hires, $changed updates, $terms terminations"
[ "$hires" -gt 0 ] && [ "$changed" -gt 0 ] && [ "$terms" -gt 0 ] ||
	fail "the second export changes too little: $out"
new_versions=$((hires + changed + terms))
results_before=$(kafka_count "$RESULTS")
step "export 2 ingested: $hires hires, $changed changed, $terms terminated"

# Transactions of 5 events make the processor slow enough to be still
# producing when the sink behind it has applied its first changes: the kill
# then leaves work for both stages of the restarted `run`.
spawn run1 "$IDSTREAM_BIN" --config "$T_CONF" --set processor.batch_max=5 run
pid=$SPAWNED_PID
# sink.results is not transactional: its end offsets count its messages.
wait_progress 150 "$pid" "$T_DIR/run1.log" $((results_before + 20)) end_offsets "$RESULTS"
crash "$pid"
desired_at_kill=$(($(kafka_count "$DESIRED") - 5000))
results_at_kill=$(($(kafka_count "$RESULTS") - results_before))
step "run killed after $desired_at_kill new versions and $results_at_kill results of $new_versions"
[ "$desired_at_kill" -lt "$new_versions" ] && [ "$results_at_kill" -lt "$new_versions" ] ||
	fail "idstream run was not killed mid-run ($desired_at_kill versions, $results_at_kill results of $new_versions)"

run_until_idle run2 run --until-idle
assert_eq $((5000 + new_versions)) "$(kafka_count "$DESIRED")" \
	"identity.desired after the second export"
check_desired "after the run crash"
# Every hire has version 1 only; every changed or terminated employee has
# exactly versions 1 and 2, and the terminated ones end DISABLED.
awk '{ n[$1]++; last[$1] = $3; state[$1] = $4 }
	END { for (k in n) print k, n[k], last[k], state[k] }' "$T_DIR/desired.txt" |
	sort >"$T_DIR/versions.txt"
LC_ALL=C awk -F, 'NR == FNR { row[$1] = $0; next } FNR > 1 && (!($1 in row) || row[$1] != $0) { print $1 }' \
	"$T_DIR/export-1.csv" "$T_DIR/export-2.csv" >"$T_DIR/touched.txt"
grep '|disabled$' "$T_DIR/expected-2.txt" | cut -d'|' -f1 >>"$T_DIR/touched.txt"
bad=$(LC_ALL=C awk -F'|' '
	FILENAME == ARGV[1] { touched[$1] = 1; next }
	FILENAME == ARGV[2] { old[$1] = 1; next }
	FILENAME == ARGV[3] { state[$1] = $5; next }
	{
		split($0, v, " "); id = v[1]
		want = (id in touched) && (id in old) ? 2 : 1
		st = state[id] == "disabled" ? "DISABLED" : "ACTIVE"
		if (v[2] != want || v[3] != want || v[4] != st)
			print id ": " v[2] " versions, last v" v[3] " " v[4] ", expected v" want " " st
	}' "$T_DIR/touched.txt" "$T_DIR/expected-1.txt" "$T_DIR/expected-2.txt" \
	"$T_DIR/versions.txt" | head -5)
[ -z "$bad" ] || fail "desired versions after the second export: $bad"
assert_eq $((5000 + hires)) "$(wc -l <"$T_DIR/versions.txt" | tr -d ' ')" "employees in identity.desired"

check_directory "$T_DIR/expected-2.txt"
decode "$RESULTS" result >"$T_DIR/results-2.txt"
dup=$(awk '$4 == "APPLIED" && $5 > 0 { print $1 }' "$T_DIR/results-2.txt" | sort | uniq -d | head -5)
[ -z "$dup" ] || fail "sink.results records these employees as created twice: $dup"
bad=$(awk '$4 != "APPLIED" && $4 != "NOOP"' "$T_DIR/results-2.txt" | head -3)
[ -z "$bad" ] || fail "sink.results has failed applies: $bad"
step "C: directory = export 2 ($((5000 + hires)) entries, $terms locked), versions exact"

# ---------------------------------------------------------------- D. after the crashes

# The restarted pipeline keeps working: a small export after everything is
# caught up is applied by one `run --until-idle` (the sink must not stop
# before the processor's new output has arrived).
prev=$T_DIR/export-2.csv
for round in 1 2 3; do
	next=$T_DIR/export-3-$round.csv
	# New titles for the first 30 rows without quoted fields.
	LC_ALL=C awk -F, -v OFS=, -v r="$round" 'NR > 1 && !/"/ && n < 30 {
		n++; $5 = "Crash Survivor " r " " n; print $1, $5 >"/dev/stderr" } 1' \
		"$prev" >"$next" 2>"$T_DIR/changes-3.txt"
	out=$(ids ingest csv "$next")
	assert_contains "$out" "30 updates, 0 terminations" "ingest of small change $round"
	run_until_idle "run-d$round" run --until-idle
	while IFS=, read -r e title; do
		got=$(_ldap ldapsearch -LLL -o ldif-wrap=no -b "$T_LDAP_PEOPLE" "(employeeNumber=$e)" title |
			sed -n 's/^title: //p')
		assert_eq "$title" "$got" "title of $e after small change $round and run --until-idle"
	done <"$T_DIR/changes-3.txt"
	prev=$next
done
step "D: small changes after the crashes applied by run --until-idle"

# Last: sink.results is the account's audit trail (idstream history), so
# every employee's latest version must have a result, crashes or not.
decode "$DESIRED" desired >"$T_DIR/desired-final.txt"
awk '{ last[$1] = $3 } END { for (k in last) print k, last[k] }' "$T_DIR/desired-final.txt" \
	>"$T_DIR/latest.txt"
assert_eq $((5000 + hires)) "$(wc -l <"$T_DIR/latest.txt" | tr -d ' ')" "employees with a latest version"
decode "$RESULTS" result >"$T_DIR/results-3.txt"
missing=$(awk 'NR == FNR { have[$1 " " $3] = 1; next } !(($1 " " $2) in have) { print $1 " v" $2 }' \
	"$T_DIR/results-3.txt" "$T_DIR/latest.txt" | sort)
[ -z "$missing" ] || fail "$(printf '%s\n' "$missing" | wc -l | tr -d ' ') employees' latest versions have no sink.results record (e.g. $(printf '%s\n' "$missing" | head -3 | tr '\n' ' '))"
step "every employee's latest version has a sink result"
echo ok
