# test_bad_input.sh — what a user sees when the input is wrong:
#   a. malformed exports are refused naming file, line and column, and
#      nothing of them reaches hr.events;
#   b. an export that would terminate too many people is refused (count,
#      fraction, --force named) until --force, which publishes the TERMINATEs;
#   c. undecodable records in hr.events (unknown schema fingerprint, a
#      truncated record) are refused by the processor naming partition,
#      offset and the problem, without output and without blocking the
#      valid events behind them;
#   e. the same export twice publishes nothing the second time;
#   d. a bad configuration file is refused naming file:line before anything
#      is done.
# Every case has its own topics and state (conf_for NAME).
. "$IDSTREAM_REPO/tests/lib.sh"

# conf_for NAME: writes $T_DIR/NAME.conf (topic prefix <T_PREFIX>_NAME, state
# in $T_DIR/state-NAME), creates its topics, prints the file name.
conf_for() {
	write_config 'topic.partitions = 3' "topic.prefix = ${T_PREFIX}_$1" \
		"state.dir = $T_DIR/state-$1"
	cp "$T_CONF" "$T_DIR/$1.conf"
	"$IDSTREAM_BIN" --config "$T_DIR/$1.conf" topics create >/dev/null 2>&1 ||
		fail "topics create for case $1 failed"
	printf '%s' "$T_DIR/$1.conf"
}

# try CONF ARGS...: runs `idstream ARGS` with CONF; sets RC, OUT (stdout)
# and ERR (stderr).
try() {
	_try_conf=$1
	shift
	set +e
	"$IDSTREAM_BIN" --config "$_try_conf" "$@" >"$T_DIR/try.out" 2>"$T_DIR/try.err"
	RC=$?
	set -e
	OUT=$(cat "$T_DIR/try.out")
	ERR=$(cat "$T_DIR/try.err")
}

# employees FIRST LAST: a valid export with employees E<FIRST>..E<LAST>.
employees() {
	echo "employee_id,first_name,last_name,title,department"
	for _i in $(seq "$1" "$2"); do echo "E$_i,Test,Person$_i,Engineer,Engineering"; done
}

# event_types TOPIC: "KEY TYPE" for each committed EmployeeEvent of TOPIC
# (Avro single-object encoding, schemas/employee_event.avsc).
event_types() {
	kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$1" -e -q -X isolation.level=read_committed \
		-f '%K %S %k%s' 2>/dev/null | perl -e '
use strict; binmode STDIN; local $/; my $d = <STDIN>;
my @types = qw(HIRE UPDATE TERMINATE REHIRE LEAVE_START LEAVE_END);
my ($v, $i);
sub lng { my ($n, $s) = (0, 0);
  while (1) { die "truncated\n" if $i >= length $v; my $b = ord(substr($v, $i++, 1));
    $n |= ($b & 0x7f) << $s; $s += 7; last unless $b & 0x80; }
  return ($n >> 1) ^ -($n & 1); }
sub str { my $l = lng(); my $s = substr($v, $i, $l); $i += $l; return $s; }
while ($d =~ /\G(-?\d+) (-?\d+) /gc) {
  my ($kl, $vl) = ($1, $2); my $p = pos($d);
  my $k = substr($d, $p, $kl); $v = substr($d, $p + $kl, $vl); pos($d) = $p + $kl + $vl;
  $i = 10; str(); str(); str(); str(); print "$k ", $types[lng()] // "?", "\n"; }
'
}

# ---------------------------------------------------------------- a. malformed

CONF=$(conf_for a)
HR=${T_PREFIX}_a.hr.events
A=$T_DIR/a
mkdir -p "$A"
H='employee_id,first_name,last_name,title,start_date'
printf '%s\nE1,Ann,Lee,Engineer,2024-01-15\nE2,Bob,Ray,"Chef,2024-02-01\nE3,Cat,Kim,Cook,2024-03-01\n' \
	"$H" >"$A/unterminated.csv"
printf 'employee_id,first_name,title\nE1,Ann,Engineer\n' >"$A/no-last-name.csv"
printf '%s\nE1,Ann,Lee,Engineer,2024-01-15\nE2,Bob,Ray,Chef\n' "$H" >"$A/short-row.csv"
printf '%s\nE1,Ann,Lee,Engineer,2024-01-15\nE2,Bob,Ray,Chef,2024-02-01,extra\n' "$H" >"$A/long-row.csv"
printf '%s\nE1,Ann,Lee,Engineer,2024-01-15\nE2,Bob,Ray,Chef,\nE1,Cat,Kim,Cook,\n' "$H" >"$A/duplicate-id.csv"
# The quoted title spans lines 3-4 (CRLF inside the quotes), so E3's row
# starts on physical line 5.
printf '%s\r\nE1,Ann,Lee,Engineer,2024-01-15\r\nE2,Bob,Ray,"Head\r\nChef",2024-02-01\r\nE3,Cat,Kim,Cook,2024-02-30\r\n' \
	"$H" >"$A/bad-date.csv"
check_refused() { # FILE EXPECTED-LOCATION EXPECTED-PROBLEM
	try "$CONF" ingest csv "$A/$1"
	assert_eq 1 "$RC" "exit code of ingest csv $1"
	assert_contains "$ERR" "$A/$1 $2" "stderr of ingest csv $1 names file, line and column"
	assert_contains "$ERR" "$3" "stderr of ingest csv $1 names the problem"
	assert_contains "$ERR" "nothing of $A/$1 was published"
}
check_refused unterminated.csv "line 3 column 4 (title)" "unterminated quote"
check_refused no-last-name.csv "line 1" "missing required column last_name"
check_refused short-row.csv "line 3 column 5 (start_date)" "row has 4 fields, the header has 5"
check_refused long-row.csv "line 3 column 6" "row has 6 fields, the header has 5"
check_refused duplicate-id.csv "line 4 column 1 (employee_id)" "duplicate employee_id E1 (first on line 2)"
check_refused bad-date.csv "line 5 column 5 (start_date)" '"2024-02-30" is not a date'
assert_eq 0 "$(kafka_count "$HR")" "hr.events after six refused files"
# The refusals left no trace: a good export afterwards is all hires.
employees 1 5 >"$A/good.csv"
try "$CONF" ingest csv "$A/good.csv"
assert_eq 0 "$RC" "exit code of a good export after refused ones ($ERR)"
assert_contains "$OUT" "5 hires, 0 updates, 0 terminations"
assert_eq 5 "$(kafka_count "$HR")" "hr.events after the good export"
echo "a: malformed exports refused with file, line and column"

# ---------------------------------------------------------------- b. mass termination

CONF=$(conf_for b)
HR=${T_PREFIX}_b.hr.events
employees 3000 3099 >"$T_DIR/b100.csv"
employees 3000 3069 >"$T_DIR/b70.csv"
try "$CONF" ingest csv "$T_DIR/b100.csv"
assert_eq 0 "$RC" "exit code of the 100-row export ($ERR)"
assert_eq 100 "$(kafka_count "$HR")" "hr.events after the 100-row export"
try "$CONF" ingest csv "$T_DIR/b70.csv"
assert_eq 1 "$RC" "exit code of the export dropping 30 of 100"
assert_contains "$ERR" "$T_DIR/b70.csv"
assert_contains "$ERR" "30 of 100 active employees (30.0%)" "the refusal names count and fraction"
assert_contains "$ERR" "ingest.termination_threshold (20.0%)" "the refusal names the threshold"
assert_contains "$ERR" "--force" "the refusal names the way out"
assert_eq 100 "$(kafka_count "$HR")" "hr.events after the refused export"
try "$CONF" ingest csv "$T_DIR/b70.csv" --force
assert_eq 0 "$RC" "exit code with --force ($ERR)"
assert_contains "$OUT" "30 terminations"
assert_contains "$OUT" "30 events published"
assert_eq 130 "$(kafka_count "$HR")" "hr.events after --force"
event_types "$HR" | awk '$2 == "TERMINATE" { print $1 }' | sort >"$T_DIR/b-terminated"
seq 3070 3099 | sed 's/^/E/' | sort >"$T_DIR/b-expected"
diff "$T_DIR/b-expected" "$T_DIR/b-terminated" >"$T_DIR/b.diff" ||
	fail "TERMINATE events (expected < > published): $(head -10 "$T_DIR/b.diff")"
assert_eq 100 "$(event_types "$HR" | grep -c ' HIRE$')" "HIRE events"
echo "b: mass termination refused, then published with --force"

# ---------------------------------------------------------------- c. undecodable records

CONF=$(conf_for c)
HR=${T_PREFIX}_c.hr.events
DESIRED=${T_PREFIX}_c.identity.desired
employees 1 2 >"$T_DIR/c1.csv"
employees 1 4 >"$T_DIR/c2.csv"
try "$CONF" ingest csv "$T_DIR/c1.csv"
assert_eq 0 "$RC" "ingest of c1.csv ($ERR)"
# Two bad records keyed E3, so they sit in E3's partition before its HIRE:
#  - single-object magic with a fingerprint no schema has (bytes 11..88,
#    little-endian: 0x8877665544332211);
#  - E1's real HIRE cut after 40 bytes.
printf '\303\001\021\042\063\104\125\146\167\210not an event body' >"$T_DIR/unknown-fp.bin"
p1=$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -e -q -f '%p %k\n' | awk '$2 == "E1" { print $1 }')
kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -p "$p1" -o beginning -c 1 -e -q -f '%s' |
	head -c 40 >"$T_DIR/truncated.bin"
assert_eq 40 "$(wc -c <"$T_DIR/truncated.bin" | tr -d ' ')" "size of the truncated record"
for f in unknown-fp truncated; do
	kcat -P -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -k E3 -X enable.idempotence=true \
		-X partitioner=murmur2_random "$T_DIR/$f.bin" || fail "producing $f.bin failed"
done
try "$CONF" ingest csv "$T_DIR/c2.csv"
assert_eq 0 "$RC" "ingest of c2.csv ($ERR)"
kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$HR" -e -q -f '%k %p %o %S\n' | sort >"$T_DIR/c-hr"
bad_unknown=$(awk '$1 == "E3" && $4 == 27 { print "partition " $2 " offset " $3 }' "$T_DIR/c-hr")
bad_trunc=$(awk '$1 == "E3" && $4 == 40 { print "partition " $2 " offset " $3 }' "$T_DIR/c-hr")
[ -n "$bad_unknown" ] && [ -n "$bad_trunc" ] || fail "bad records not found in hr.events: $(cat "$T_DIR/c-hr")"
try "$CONF" process --until-idle
assert_eq 0 "$RC" "exit code of the processor after bad records ($(tail -3 "$T_DIR/try.err"))"
assert_contains "$OUT" "4 events folded, 4 desired versions produced"
assert_contains "$OUT" "2 refused"
line=$(grep "$bad_unknown:" "$T_DIR/try.err" || true)
assert_contains "$line" "unknown writer schema fingerprint 0x8877665544332211" \
	"the log names the unknown record's $bad_unknown and fingerprint"
line=$(grep "$bad_trunc:" "$T_DIR/try.err" || true)
assert_contains "$line" "truncated" "the log names the truncated record's $bad_trunc"
# Nothing for the bad records; one identity, version 1, for each employee.
assert_eq "E1 E2 E3 E4" "$(kafka_keys "$DESIRED" | sort | tr '\n' ' ' | sed 's/ $//')" \
	"keys of identity.desired"
v=$("$IDSTREAM_BIN" --config "$CONF" history E3 --json |
	jq -c '[.[] | select(.kind == "desired") | [.version, .state, .attributes.uid]]')
assert_eq '[[1,"ACTIVE","tperson3"]]' "$v" "E3's desired identity behind the bad records"
echo "c: undecodable records refused by the processor, valid events processed"

# ---------------------------------------------------------------- e. same file twice

CONF=$(conf_for e)
HR=${T_PREFIX}_e.hr.events
employees 1 20 >"$T_DIR/e.csv"
try "$CONF" ingest csv "$T_DIR/e.csv"
assert_eq 0 "$RC" "first ingest ($ERR)"
assert_eq 20 "$(kafka_count "$HR")" "hr.events after the first ingest"
try "$CONF" ingest csv "$T_DIR/e.csv"
assert_eq 0 "$RC" "second ingest ($ERR)"
assert_contains "$OUT" "20 unchanged; 0 events published"
# A fresh copy (new name, new modification time) is still the same export.
sleep 1
cp "$T_DIR/e.csv" "$T_DIR/e-copy.csv"
try "$CONF" ingest csv "$T_DIR/e-copy.csv"
assert_eq 0 "$RC" "ingest of the copy ($ERR)"
assert_contains "$OUT" "0 events published"
assert_eq 20 "$(kafka_count "$HR")" "hr.events after ingesting the same export again"
echo "e: the same export again publishes nothing"

# ---------------------------------------------------------------- d. bad configuration

CONF=$(conf_for d)
HR=${T_PREFIX}_d.hr.events
employees 1 3 >"$T_DIR/d.csv"
# check_bad_conf LINE EXPECTED...: the case's file with LINE appended after a
# comment and a blank line is refused by two commands, naming file:line and
# each EXPECTED text, and nothing is published.
check_bad_conf() {
	{
		cat "$CONF"
		printf '# a comment\n\n%s\n' "$1"
	} >"$T_DIR/bad.conf"
	_cb_line=$(wc -l <"$T_DIR/bad.conf" | tr -d ' ')
	shift
	for _args in "ingest csv $T_DIR/d.csv" "process --until-idle"; do
		# shellcheck disable=SC2086
		try "$T_DIR/bad.conf" $_args
		[ "$RC" -ne 0 ] || fail "idstream $_args ran with a bad config file: $OUT"
		assert_contains "$ERR" "$T_DIR/bad.conf:$_cb_line:" "idstream $_args names the config file and line"
		for _e in "$@"; do assert_contains "$ERR" "$_e" "idstream $_args: the error"; done
	done
	assert_eq 0 "$(kafka_count "$HR")" "hr.events after a refused configuration"
}
check_bad_conf 'no.such.key = 1' 'unknown option "no.such.key"'
check_bad_conf 'topic.partitions = many' 'topic.partitions' '"many"'
check_bad_conf 'processor.batch_max = 0' 'processor.batch_max'
check_bad_conf 'ingest.termination_threshold = 1.5' 'ingest.termination_threshold'
check_bad_conf 'topic.prefix' 'key = value'
check_bad_conf 'log.level = loud' 'log.level' '"loud"'
echo "d: bad configuration refused with file:line"
echo ok
