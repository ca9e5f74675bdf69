#!/bin/sh
# tests/run.sh — runs the whole suite against real local services.
#
#   IDSTREAM_BUILD=build-asan sh tests/run.sh [NAME-SUBSTRING]
#
# Starts Kafka, slapd, scim2-server and a Samba AD DC once (scripts/services.sh, run folder
# ${IDSTREAM_TEST_RUN:-<repo>/run/test}, wiped first so every run starts
# from empty services), then runs every unit binary $IDSTREAM_BUILD/tests/test_*
# and every tests/integration/*.sh (with bash), one at a time.  Test names are
# "unit/test_x" and "integration/x"; the optional argument keeps the tests
# whose name contains it.  Each test has its own log and scratch folder under
# the run folder; one line per test is printed, with the log tail on failure,
# and the last line is "N passed, N failed".  Exit status 0 only when every
# selected test passed.  The services are stopped by PID on any exit.
#
# Environment given to each test:
#   IDSTREAM_TEST_KAFKA     127.0.0.1:<kafka port> (default 19092)
#   IDSTREAM_TEST_LDAP_URL  ldap://127.0.0.1:<ldap port>/ (default 13890)
#   IDSTREAM_TEST_SCIM_URL  http://127.0.0.1:<scim port>/v2 (IDSTREAM_SCIM_PORT,
#                           default 18080, or a free port when that is taken)
#   IDSTREAM_TEST_SCIM_TOKEN_FILE  the file holding that server's bearer token
#   IDSTREAM_BIN            absolute path of the idstream binary under test
#   IDSTREAM_REPO           the repository root (also the working directory)
#   IDSTREAM_TEST_NAME      the test's name, IDSTREAM_TEST_DIR its empty
#                           scratch folder, IDSTREAM_TEST_LOG its log file
# IDSTREAM_TEST_SAMBA=0 skips starting the Samba AD DC (its ports are fixed, so
# only one runs per machine; IDSTREAM_SAMBA_DIR shares another folder's).
# Each test gets at most IDSTREAM_TEST_TIMEOUT seconds (default 600); a
# test's leftover background processes are ended when it finishes.

set -u

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 1
BUILD=${IDSTREAM_BUILD:-build-asan}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
FILTER=${1:-}
TIMEOUT=${IDSTREAM_TEST_TIMEOUT:-600}

export IDSTREAM_RUN="${IDSTREAM_TEST_RUN:-$REPO/run/test}"
RUN=$IDSTREAM_RUN
export IDSTREAM_REPO="$REPO"
export IDSTREAM_TEST_KAFKA="127.0.0.1:${IDSTREAM_KAFKA_PORT:-19092}"
export IDSTREAM_TEST_LDAP_URL="ldap://127.0.0.1:${IDSTREAM_LDAP_PORT:-13890}/"
# Suites started before the SCIM server joined them set only the Kafka and
# LDAP ports: without IDSTREAM_SCIM_PORT, take 18080 when it is free, else a
# free port in 20000-31000, so two suites never fight over it.
if [ -z "${IDSTREAM_SCIM_PORT:-}" ]; then
	IDSTREAM_SCIM_PORT=18080
	_tries=0
	while ss -Hltn "sport = :$IDSTREAM_SCIM_PORT" 2>/dev/null | grep -q . &&
		[ "$_tries" -lt 50 ]; do
		IDSTREAM_SCIM_PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 11000))
		_tries=$((_tries + 1))
	done
fi
export IDSTREAM_SCIM_PORT
export IDSTREAM_TEST_SCIM_URL="http://127.0.0.1:$IDSTREAM_SCIM_PORT/v2"
# Written by scripts/services.sh when it starts the server.
export IDSTREAM_TEST_SCIM_TOKEN_FILE="$RUN/scim/token"
export IDSTREAM_BIN="$BUILD/idstream"

# Sanitizers.  Leak checking stays on: librdkafka 2.0.2 (producer, consumer
# group, transactions incl. the fenced path), libldap and libcurl were checked
# to exit leak-free under LSan when their handles are destroyed, so every
# report is a missing destroy/free in our code (ownership is part of the
# style rules).  If a library leak ever shows up, suppress that one stack
# with a narrow LSan suppression rather than turning detection off.
# halt_on_error: the first error ends the test with its report in the log.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:print_summary=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

say() { printf '%s\n' "$*"; }

mkdir -p "$(dirname "$RUN")"
# One suite per run folder at a time: a second `make test` would otherwise
# wipe the first one's brokers.
exec 8>"$RUN.lock"
if ! flock -n 8; then
	say "tests: another test run holds $RUN.lock; wait for it or set IDSTREAM_TEST_RUN and other ports" >&2
	exit 1
fi

CUR_PGID=""
SAMBA_STARTED=""
cleanup() {
	if [ -n "$CUR_PGID" ]; then
		kill -TERM "-$CUR_PGID" 2>/dev/null
		CUR_PGID=""
	fi
	sh "$REPO/scripts/services.sh" stop all >/dev/null 2>&1 ||
		say "tests: stopping the services failed; see $RUN" >&2
	if [ -n "$SAMBA_STARTED" ]; then
		sh "$REPO/scripts/samba.sh" stop >/dev/null 2>&1 ||
			say "tests: stopping the samba AD DC failed; see $RUN/samba" >&2
	fi
}
trap cleanup EXIT
trap 'say "tests: interrupted"; exit 130' INT TERM HUP

now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }

PASSED=0
FAILED=0
FAILED_NAMES=""

# run_one NAME CMD...: runs CMD with the test's environment and bookkeeping.
run_one() {
	_name=$1
	shift
	case $_name in *"$FILTER"*) ;; *) return 0 ;; esac
	_safe=$(printf '%s' "$_name" | tr '/' '_')
	_log=$RUN/logs/$_safe.log
	_dir=$RUN/tests/$_safe
	mkdir -p "$_dir"
	_t0=$(now_ms)
	# timeout makes its own process group, so a timeout (and the sweep after
	# the test) reaches everything the test started in the background.
	IDSTREAM_TEST_NAME=$_name IDSTREAM_TEST_DIR=$_dir IDSTREAM_TEST_LOG=$_log \
		timeout -k 10 "$TIMEOUT" "$@" </dev/null >"$_log" 2>&1 &
	CUR_PGID=$!
	wait "$CUR_PGID"
	_rc=$?
	kill -TERM "-$CUR_PGID" 2>/dev/null
	CUR_PGID=""
	_dt=$(secs $(($(now_ms) - _t0)))
	if [ "$_rc" -eq 0 ]; then
		PASSED=$((PASSED + 1))
		say "PASS $_name (${_dt}s)"
	else
		FAILED=$((FAILED + 1))
		FAILED_NAMES="$FAILED_NAMES $_name"
		_why="exit $_rc"
		[ "$_rc" -eq 124 ] && _why="timed out after ${TIMEOUT}s"
		say "FAIL $_name (${_dt}s, $_why)"
		say "--- last lines of $_log ---"
		tail -n 40 "$_log"
		say "--- end ---"
	fi
}

# The selection first, so that a filter matching nothing starts nothing.
SELECTED=0
for t in "$BUILD"/tests/test_* "$REPO"/tests/integration/*.sh; do
	[ -f "$t" ] || continue
	case $t in
	*.sh) _n="integration/$(basename "$t" .sh)" ;;
	*) [ -x "$t" ] || continue; _n="unit/$(basename "$t")" ;;
	esac
	case $_n in *"$FILTER"*) SELECTED=$((SELECTED + 1)) ;; esac
done
if [ "$SELECTED" -eq 0 ]; then
	if [ -n "$FILTER" ]; then
		say "tests: no test name contains '$FILTER'"
	else
		say "tests: no tests found (unit binaries in $BUILD/tests, scripts in tests/integration)"
	fi
	say "0 passed, 0 failed"
	exit 1
fi

# Leftovers of an interrupted earlier run in this folder are ours: stop them
# (by their PID files) and start from empty services.
sh "$REPO/scripts/services.sh" stop all >/dev/null 2>&1
rm -rf "$RUN"
mkdir -p "$RUN/logs" "$RUN/tests"
# The services outlive this script's process group; they must not inherit
# the lock (fd 8), or an interrupted run would keep the folder locked.
if ! sh "$REPO/scripts/services.sh" start all 8>&-; then
	say "tests: could not start the services (run: sh scripts/bootstrap.sh)" >&2
	exit 1
fi
# The Samba AD DC listens on fixed ports (389/636), so only one can run per
# machine: when it cannot start here, the AD tests fail and say why, the
# others still run.  IDSTREAM_TEST_SAMBA=0 does not try (another run on this
# machine holds those ports): the AD tests then fail, saying so.
if [ "${IDSTREAM_TEST_SAMBA:-1}" = 0 ]; then
	say "tests: IDSTREAM_TEST_SAMBA=0: no Samba AD DC; the AD tests will fail" >&2
elif sh "$REPO/scripts/samba.sh" start 8>&-; then
	[ -n "${IDSTREAM_SAMBA_DIR:-}" ] || SAMBA_STARTED=1
	eval "$(sh "$REPO/scripts/samba.sh" env | sed 's/^/export /')"
else
	say "tests: the Samba AD DC did not start; the AD tests will fail" >&2
fi

for t in "$BUILD"/tests/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	run_one "unit/$(basename "$t")" "$t"
done
for t in "$REPO"/tests/integration/*.sh; do
	[ -f "$t" ] || continue
	run_one "integration/$(basename "$t" .sh)" bash "$t"
done

[ "$FAILED" -eq 0 ] || say "failed:$FAILED_NAMES (logs in $RUN/logs)"
say "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ] || exit 1
exit 0
