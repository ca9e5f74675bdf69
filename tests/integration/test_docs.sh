# test_docs.sh — what a new user reads must match what the binary does:
# CONFIGURATION.md is the generated one, every subcommand has --help, the
# README's two commands exist, .ci/run runs the README's test command, and
# docker-compose.yml only uses commands and config keys that exist.
. "$IDSTREAM_REPO/tests/lib.sh"
cd "$IDSTREAM_REPO"
B=$IDSTREAM_BIN

# CONFIGURATION.md is generated from the option table.
"$B" config docs >"$T_DIR/CONFIGURATION.md"
diff -u CONFIGURATION.md "$T_DIR/CONFIGURATION.md" >"$T_DIR/config.diff" ||
	fail "CONFIGURATION.md is out of date (run: make docs): $(head -20 "$T_DIR/config.diff")"

# --help of the binary and of every subcommand: exit 0 and a usage line.
out=$("$B" --help) || fail "idstream --help exited non-zero"
assert_contains "$out" "usage: idstream"
for cmd in topics ingest process sink run index history why as-of report plan apply replay policy names held approve reject reconcile config; do
	assert_contains "$out" "  $cmd " "idstream --help lists $cmd"
	h=$("$B" "$cmd" --help) || fail "idstream $cmd --help exited non-zero"
	assert_contains "$h" "usage: idstream" "idstream $cmd --help"
done
for sub in "ingest csv" "ingest http" "ingest poll bamboohr" "names arbiter" "names import" "names show" "sink ldap" "sink ad" "sink scim" "topics create" "config docs" "policy check" "policy deploy"; do
	# shellcheck disable=SC2086
	"$B" $sub --help >/dev/null || fail "idstream $sub --help exited non-zero"
done
# Usage errors are reported as such (exit 64), naming the problem.
set +e
err=$("$B" ingest csv 2>&1)
rc=$?
set -e
assert_eq 64 "$rc" "exit code of a usage error"
assert_contains "$err" "missing FILE"
set +e
err=$("$B" --set no.such.key=1 config check 2>&1)
rc=$?
set -e
assert_eq 1 "$rc" "exit code of a bad option"
assert_contains "$err" 'unknown option "no.such.key"'
printf 'topic.prefix = x\ntopic.partitions = many\n' >"$T_DIR/bad.conf"
set +e
err=$("$B" --config "$T_DIR/bad.conf" config check 2>&1)
set -e
assert_contains "$err" "bad.conf:2" "a bad config value names file and line"
assert_contains "$err" "topic.partitions"

# README: the two commands first, and CI runs exactly the test command.
head -20 README.md | grep -q '^make demo' || fail "README does not start with make demo"
head -20 README.md | grep -q '^make test' || fail "README does not start with make test"
grep -q '^make test' .ci/run || grep -q 'exec make test' .ci/run || fail ".ci/run does not run make test"
for target in demo test bench asan; do
	grep -q "^$target:" Makefile || fail "Makefile has no $target target"
done

# docker-compose.yml: every idstream command it runs is a real subcommand,
# and the config file it mounts loads without error.
cmds=$(grep -E '^\s*command: \[' docker-compose.yml | sed -e 's/.*command: \[//' -e 's/\].*//' |
	tr -d '"' | tr ',' ' ')
[ -n "$cmds" ] || fail "no command: lines found in docker-compose.yml"
printf '%s\n' "$cmds" | while read -r line; do
	# Drop the global --config FILE, keep the subcommand words.
	# shellcheck disable=SC2086
	set -- $line
	words=""
	while [ $# -gt 0 ]; do
		case $1 in --config) shift ;; -*) ;; *) words="$words $1" ;; esac
		shift
	done
	# shellcheck disable=SC2086
	"$B" $words --help >/dev/null 2>&1 || fail "docker-compose.yml runs 'idstream$words', which does not exist"
done
conf=$(grep -E '^\s*- \./[^:]+:/etc/idstream/idstream.conf' docker-compose.yml | head -1 |
	sed -e 's/^\s*- //' -e 's/:.*//')
[ -n "$conf" ] || fail "docker-compose.yml mounts no idstream.conf"
"$B" --config "$conf" config check >/dev/null || fail "$conf (mounted by docker-compose.yml) does not load"
echo ok
