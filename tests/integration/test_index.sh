# test_index.sh — the per-employee index: after `run --until-idle` (which
# runs the indexer), `history` and `why` give the same output with the index
# as with a partition scan, the debug log says the index was used, and the
# answer for one employee among 5,000 reads only a few records of the
# partitions that hold thousands.
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

# A lost index is rebuilt from the log by `idstream index` (its group has
# committed offsets; the store's positions win), with the same answer.
rm -rf "$T_DIR/state/index"
ids index --until-idle >"$T_DIR/index.out" 2>"$T_DIR/index.log" || fail "index failed"
assert_contains "$(cat "$T_DIR/index.out")" "records indexed"
ids history "$emp" >"$T_DIR/h.idx2" 2>/dev/null
cmp -s "$T_DIR/h.idx" "$T_DIR/h.idx2" || fail "history changed after re-indexing"
echo "index ok"
