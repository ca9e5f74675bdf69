# test_index.sh — the per-employee index: after `run --until-idle` (which
# runs the indexer), `history` and `why` give the same output with the index
# as with a partition scan, the debug log says the index was used, and the
# answer for one employee among 5,000 reads only a few records of the
# partitions that hold thousands; `as-of` for everyone decodes one version
# per employee instead of all of them.  While an indexer holds the store (as
# `idstream run` does), the commands still read it (a RocksDB secondary
# instance) and see what it indexes meanwhile, leaving no files behind.
. "$IDSTREAM_REPO/tests/lib.sh"

GEN=$(dirname "$IDSTREAM_BIN")/tools/gen_export
[ -x "$GEN" ] || fail "missing $GEN (make unit builds it)"
ldap_reset
write_config 'topic.partitions = 3'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null
"$GEN" --employees 5000 --seed 3 >"$T_DIR/a.csv"
"$GEN" --seed 3 --changes-from "$T_DIR/a.csv" >"$T_DIR/b.csv"
ids ingest csv "$T_DIR/a.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run1.log"
ids ingest csv --force "$T_DIR/b.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run2.log"
[ -f "$T_DIR/state/index/CURRENT" ] || fail "run did not write the index"

# An employee the second export changed, so it has several records per topic.
emp=$(awk -F, 'NR == FNR { a[$0] = 1; next } FNR > 1 && !($0 in a) { print $1; exit }' \
	"$T_DIR/a.csv" "$T_DIR/b.csv")
[ -n "$emp" ] || fail "no employee in b.csv"

ids history "$emp" >"$T_DIR/h.idx" 2>"$T_DIR/h.idx.log"
ids history "$emp" --json >"$T_DIR/hj.idx" 2>/dev/null
ids why "$emp" >"$T_DIR/w.idx" 2>"$T_DIR/w.idx.log"
assert_contains "$(cat "$T_DIR/h.idx.log")" "employee $emp: index used"
assert_contains "$(cat "$T_DIR/w.idx.log")" "employee $emp: index used"
assert_contains "$(cat "$T_DIR/h.idx")" "HIRE"
assert_contains "$(cat "$T_DIR/h.idx")" "UPDATE"

# The same questions without the index: a scan of the partitions.
mv "$T_DIR/state/index" "$T_DIR/state/index.off"
ids history "$emp" >"$T_DIR/h.scan" 2>"$T_DIR/h.scan.log"
ids history "$emp" --json >"$T_DIR/hj.scan" 2>/dev/null
ids why "$emp" >"$T_DIR/w.scan" 2>/dev/null
mv "$T_DIR/state/index.off" "$T_DIR/state/index"
assert_contains "$(cat "$T_DIR/h.scan.log")" "employee $emp: partition scan"
cmp -s "$T_DIR/h.idx" "$T_DIR/h.scan" || fail "history differs with the index"
cmp -s "$T_DIR/hj.idx" "$T_DIR/hj.scan" || fail "history --json differs with the index"
cmp -s "$T_DIR/w.idx" "$T_DIR/w.scan" || fail "why differs with the index"

# as-of for everyone: with the index only each employee's version at the
# instant is decoded, without it every version; the same answer.
later=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
ids --set log.level=debug as-of "$later" --json >"$T_DIR/a.idx" 2>"$T_DIR/a.idx.log"
mv "$T_DIR/state/index" "$T_DIR/state/index.off"
ids --set log.level=debug as-of "$later" --json >"$T_DIR/a.scan" 2>"$T_DIR/a.scan.log"
mv "$T_DIR/state/index.off" "$T_DIR/state/index"
cmp -s "$T_DIR/a.idx" "$T_DIR/a.scan" || fail "as-of of everyone differs with the index"
asof() { sed -n "s/.*\"$1: \([0-9]*\) employees, \([0-9]*\) versions decoded.*/\1 \2/p" "$2"; }
set -- $(asof "index used" "$T_DIR/a.idx.log")
[ "${1:-0}" -ge 5000 ] || fail "as-of with the index: ${1:-no} employees ($(cat "$T_DIR/a.idx.log"))"
assert_eq "$1" "$2" "versions decoded by as-of with the index = employees"
assert_eq "$1" "$(grep -c '"employee_id"' "$T_DIR/a.idx")" "employees in as-of --json"
set -- $(asof "topic scan" "$T_DIR/a.scan.log")
[ "${2:-0}" -gt "$1" ] || fail "the scan decoded only ${2:-no} versions"

# Records read: with the index a handful, without it whole partitions.
count() { sed -n "s/.*employee $emp: [a-z ]*, \([0-9]*\) records read, \([0-9]*\) entries.*/\1 \2/p" "$1"; }
set -- $(count "$T_DIR/h.idx.log")
idx_read=$1 entries=$2
set -- $(count "$T_DIR/h.scan.log")
scan_read=$1
echo "employee $emp: $entries entries; read $idx_read records with the index, $scan_read without"
[ "$entries" -ge 5 ] || fail "expected at least 5 entries for $emp, got $entries"
[ "$entries" -eq "$(grep -c '"kind"' "$T_DIR/hj.idx")" ] || fail "entries count mismatch"
[ "$scan_read" -gt 1000 ] || fail "the scan read only $scan_read records"
[ "$idx_read" -le $((entries * 4)) ] || fail "index read $idx_read records for $entries entries"

# While `idstream index` runs and holds the store, the same answers, from
# the index; records produced meanwhile show up once indexed.
spawn indexer "$IDSTREAM_BIN" --config "$T_CONF" index
IDXPID=$SPAWNED_PID
mkdir -p "$T_DIR/tmp"
held() { TMPDIR=$T_DIR/tmp ids "$@"; }
wait_for 30 grep -q 'indexing' "$T_DIR/indexer.log"
held --set log.level=debug history "$emp" >"$T_DIR/h.held" 2>"$T_DIR/h.held.log" ||
	fail "history while the index is held: $(cat "$T_DIR/h.held.log")"
assert_contains "$(cat "$T_DIR/h.held.log")" "employee $emp: index used"
cmp -s "$T_DIR/h.idx" "$T_DIR/h.held" || fail "history differs while the index is held"
held why "$emp" >"$T_DIR/w.held" 2>/dev/null || fail "why while the index is held"
cmp -s "$T_DIR/w.idx" "$T_DIR/w.held" || fail "why differs while the index is held"
# A new update of the employee, processed while the indexer runs: it is in
# history at once (the tail past the indexed position is scanned) and, a
# moment later, from the index itself.
awk -F, -v OFS=, -v e="$emp" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "title") c = i }
	NR > 1 && $1 == e { $c = "Indexed Title" } { print }' "$T_DIR/b.csv" >"$T_DIR/c.csv"
ids ingest csv "$T_DIR/c.csv" >/dev/null 2>"$T_DIR/ingest-c.log" || fail "ingest c.csv"
ids process --until-idle >/dev/null 2>"$T_DIR/process-c.log"
assert_contains "$(held history "$emp")" "title=Indexed Title"
sleep 2.5 # the indexer makes its writes visible to readers every second
held --set log.level=debug history "$emp" --json >"$T_DIR/hj.held" 2>"$T_DIR/hj.held.log"
assert_contains "$(cat "$T_DIR/hj.held")" "Indexed Title"
n=$(grep -c '"kind"' "$T_DIR/hj.held")
assert_contains "$(cat "$T_DIR/hj.held.log")" "$n entries, $n indexed"
stop_pid "$IDXPID" || fail "the indexer failed: $(tail -3 "$T_DIR/indexer.log")"
assert_eq "" "$(ls -A "$T_DIR/tmp")" "files left in TMPDIR by the readers"

# A lost index is rebuilt from the log by `idstream index` (its group has
# committed offsets; the store's positions win), with the same answer.
ids history "$emp" >"$T_DIR/h.idx1" 2>/dev/null
rm -rf "$T_DIR/state/index"
ids index --until-idle >"$T_DIR/index.out" 2>"$T_DIR/index.log" || fail "index failed"
assert_contains "$(cat "$T_DIR/index.out")" "records indexed"
ids history "$emp" >"$T_DIR/h.idx2" 2>/dev/null
cmp -s "$T_DIR/h.idx1" "$T_DIR/h.idx2" || fail "history changed after re-indexing"
echo "index ok"
