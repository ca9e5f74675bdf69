# test_report.sh — `idstream report EMP --html FILE` on a real pipeline: the
# page holds the HR events, desired versions and sink operations, escapes
# every value (a name with <script> and quotes, a department "R&D"), loads
# nothing from outside, and renders in headless Chromium to a non-blank
# screenshot of the requested size.  `idstream plan --policy … --html FILE`
# likewise: the summary and the per-employee diff of a Sales split, rendered
# by Chromium.
. "$IDSTREAM_REPO/tests/lib.sh"

# Chromium renders the page.  Installing it takes ~20 s once per machine;
# without it the test cannot check rendering, so it fails rather than skips.
if ! command -v chromium >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || fail "chromium is missing and only root can install it"
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >"$T_DIR/apt.log" 2>&1 ||
		fail "could not install chromium (see $T_DIR/apt.log)"
	command -v chromium >/dev/null 2>&1 || fail "chromium still missing after install"
fi

ldap_reset
write_config 'topic.partitions = 3' 'ingest.termination_threshold = 0.9'
ids() { "$IDSTREAM_BIN" --config "$T_CONF" "$@"; }
ids topics create >/dev/null

cat >"$T_DIR/day1.csv" <<'CSV'
employee_id,first_name,last_name,title,department,location
E900,Seán,O'Brien <script>alert(1)</script>,"Engineer & ""Lead""",R&D,
E901,Ada,Lovelace,Analyst,R&D,
E902,Grace,Hopper,Account Executive,Sales,New York
CSV
ids ingest csv "$T_DIR/day1.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run1.log" || fail "run 1 failed"
sleep 1.1
# Day 2: a new title, so the page has a second event, version and modify.
cat >"$T_DIR/day2.csv" <<'CSV'
employee_id,first_name,last_name,title,department,location
E900,Seán,O'Brien <script>alert(1)</script>,Principal <Engineer>,R&D,
E901,Ada,Lovelace,Analyst,R&D,
E902,Grace,Hopper,Account Executive,Sales,New York
CSV
touch "$T_DIR/day2.csv"
ids ingest csv "$T_DIR/day2.csv" >/dev/null
ids run --until-idle >/dev/null 2>"$T_DIR/run2.log" || fail "run 2 failed"

page=$T_DIR/E900.html
ids report E900 --html "$page" || fail "report failed"
html=$(cat "$page")
# Events → versions → operations, with outcomes and the why of attributes.
assert_contains "$html" "<!DOCTYPE html>"
assert_contains "$html" ">HIRE<"
assert_contains "$html" ">UPDATE<"
assert_contains "$html" "Desired v1"
assert_contains "$html" "Desired v2"
assert_contains "$html" ">APPLIED<"
assert_contains "$html" ">add<"
assert_contains "$html" ">modify<"
assert_contains "$html" "default.title"
assert_contains "$html" "csv:day2.csv"
assert_contains "$html" "Current identity"
# The version diff of v2: the title from the old to the new value.
assert_contains "$html" '<td class="old">Engineer &amp; &quot;Lead&quot;</td><td class="new">Principal &lt;Engineer&gt;</td>'
# Escaping: the name and department appear only escaped.
assert_contains "$html" "O&#39;Brien &lt;script&gt;alert(1)&lt;/script&gt;"
assert_contains "$html" "R&amp;D"
case $html in *"<script"* | *"R&D"* | *"O'Brien"*) fail "an unescaped value is in the page" ;; esac
# Self-contained: nothing is loaded from elsewhere.
case $html in *"src="* | *"href="* | *"@import"* | *"url("*) fail "the page refers to an external resource" ;; esac
# An unknown employee or a missing --html is an error, not an empty page.
ids report NOPE --html "$T_DIR/nope.html" 2>"$T_DIR/err" && fail "report of an unknown employee succeeded"
[ -e "$T_DIR/nope.html" ] && fail "report of an unknown employee wrote a page"
ids report E900 2>/dev/null && fail "report without --html succeeded"

# render PAGE PNG: renders PAGE in headless Chromium and checks the
# screenshot: a valid PNG of the window's size with more than a handful of
# colours (a blank or error page has one or two).  As root Chromium needs
# --no-sandbox; the background-networking flags keep it from calling out
# (the machine's network is closed).
render() {
	timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic \
		--disable-background-networking --disable-component-update --disable-sync \
		--no-first-run --user-data-dir="$T_DIR/chromium-profile" \
		--screenshot="$2" --window-size=1200,1600 "file://$1" \
		>"$T_DIR/chromium.log" 2>&1 || fail "chromium failed on $1 (see $T_DIR/chromium.log)"
	[ -s "$2" ] || fail "no screenshot written for $1"
	python3 - "$2" <<'PY' || fail "the screenshot of $1 is not a rendered page"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, hdr = 8, b"", None
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        hdr = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
w, h, depth, ctype, _, _, interlace = hdr
assert (w, h) == (1200, 1600), f"size {w}x{h}"
assert depth == 8 and ctype in (2, 6) and interlace == 0, f"format {hdr}"
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, colours, i = bytearray(stride), set(), 0
for y in range(h):
    ft, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        if ft == 1:
            line[x] = (line[x] + a) & 255
        elif ft == 2:
            line[x] = (line[x] + b) & 255
        elif ft == 3:
            line[x] = (line[x] + ((a + b) >> 1)) & 255
        elif ft == 4:
            c = prev[x - bpp] if x >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[x] = (line[x] + pr) & 255
    if y % 4 == 0:
        colours.update(bytes(line[k:k + 3]) for k in range(0, stride, bpp * 2))
    prev = line
print(f"screenshot {w}x{h}, {len(colours)} colours")
assert len(colours) > 20, f"only {len(colours)} colours: blank page?"
PY
}

render "$page" "$T_DIR/E900.png"

# ------------------------------------------------------------ plan --html
# Sales split by region: E902 (New York) leaves dept-sales for
# dept-sales-americas; nobody else changes.
SPLIT=$IDSTREAM_REPO/tests/cases/plan/split-sales.lua
version=$(ids policy version "$SPLIT")
plan=$T_DIR/plan.html
set +e
ids plan --policy "$SPLIT" --html "$plan" >"$T_DIR/plan.out" 2>"$T_DIR/plan.err"
rc=$?
set -e
assert_eq 2 "$rc" "plan exit status (changes): $(cat "$T_DIR/plan.err")"
[ -s "$plan" ] || fail "plan --html wrote no page"
html=$(cat "$plan")
assert_contains "$html" "<!DOCTYPE html>"
assert_contains "$html" "Plan for policy $version"
assert_contains "$html" "1 employees change"
assert_contains "$html" "Users joining each group"
assert_contains "$html" "<tr><td>E902</td>"
assert_contains "$html" "<code>dept-sales-americas</code>"
assert_contains "$html" "<code>dept-sales</code>"
case $html in *"E900"* | *"E901"*) fail "the plan lists an employee it does not change" ;; esac
case $html in *"<script"* | *"src="* | *"href="* | *"@import"* | *"url("*)
	fail "the plan page has a script or refers to an external resource" ;;
esac
render "$plan" "$T_DIR/plan.png"
echo ok
