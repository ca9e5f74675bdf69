# tests/lib.sh — helpers for tests/integration/*.sh (sourced, POSIX sh; the
# runner executes the tests with bash).  Usage at the top of a test:
#
#   . "$IDSTREAM_REPO/tests/lib.sh"
#   write_config 'topic.partitions = 3'      # -> $T_CONF
#   "$IDSTREAM_BIN" process --config "$T_CONF" &  ... or: spawn proc "$IDSTREAM_BIN" process --config "$T_CONF"
#
# Sourcing turns on `set -eu` and installs an EXIT trap that stops whatever
# was started with `spawn` (a test that sets its own EXIT trap should call
# lib_cleanup from it).  The services are the ones tests/run.sh started:
# Kafka at $IDSTREAM_TEST_KAFKA, slapd at $IDSTREAM_TEST_LDAP_URL (base
# dc=example,dc=com, admin cn=admin,dc=example,dc=com — test-only password).
#
# Variables set here:
#   T_NAME    the test's name            T_DIR   its scratch folder (empty at start)
#   T_PREFIX  a topic prefix unique to this test process (t<pid>_<name>)
#   T_CONF    the idstream config file (after write_config)
#   T_LDAP_PWFILE  file holding the LDAP admin password (for ldap-utils -y
#             and idstream's ldap.bind_password_file)
# Every check ends the test with "FAIL: <test>: <what>" on stderr and exit 1.

set -eu

: "${IDSTREAM_TEST_KAFKA:?run integration tests through tests/run.sh (IDSTREAM_TEST_KAFKA unset)}"
: "${IDSTREAM_TEST_LDAP_URL:?run integration tests through tests/run.sh (IDSTREAM_TEST_LDAP_URL unset)}"
IDSTREAM_REPO=${IDSTREAM_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
IDSTREAM_BIN=${IDSTREAM_BIN:-$IDSTREAM_REPO/build-asan/idstream}

T_NAME=${IDSTREAM_TEST_NAME:-$(basename "$0" .sh)}
if [ -n "${IDSTREAM_TEST_DIR:-}" ]; then
	T_DIR=$IDSTREAM_TEST_DIR
	mkdir -p "$T_DIR"
else
	T_DIR=$(mktemp -d "${TMPDIR:-/tmp}/idstream-test.XXXXXX")
fi
# Topic names allow [A-Za-z0-9._-]; the prefix itself must not contain '.'
# (idstream appends ".hr.events" etc.).
T_PREFIX="t$$_$(printf '%s' "${T_NAME##*/}" | tr -c 'A-Za-z0-9_-' '_' | cut -c1-60)"
T_CONF=$T_DIR/idstream.conf
T_LDAP_BASE="dc=example,dc=com"
T_LDAP_ADMIN_DN="cn=admin,$T_LDAP_BASE"
T_LDAP_PEOPLE="ou=people,$T_LDAP_BASE"
T_LDAP_GROUPS="ou=groups,$T_LDAP_BASE"
T_LDAP_PWFILE=$T_DIR/ldap-admin.pw
(umask 077 && printf '%s' adminpw >"$T_LDAP_PWFILE")

# ---------------------------------------------------------------- checks

fail() {
	printf 'FAIL: %s: %s\n' "$T_NAME" "$*" >&2
	exit 1
}

# assert_eq EXPECTED ACTUAL [WHAT]
assert_eq() {
	[ "$1" = "$2" ] ||
		fail "${3:-values differ}: expected '$1', got '$2'"
}

# assert_contains HAYSTACK NEEDLE [WHAT]
assert_contains() {
	case $1 in
	*"$2"*) ;;
	*) fail "${3:-text does not contain '$2'}: '$2' not found in: $1" ;;
	esac
}

# wait_for TIMEOUT_S CMD...: runs CMD every 0.2 s until it succeeds; fails
# the test after TIMEOUT_S seconds naming CMD.
wait_for() {
	_wf_deadline=$(($(date +%s) + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$_wf_deadline" ] || fail "timed out waiting for: $*"
		sleep 0.2
	done
}

# ---------------------------------------------------------------- config

# write_config [LINE...]: writes $T_CONF pointing at the test services, with
# this test's topic prefix and state folder; each LINE ("key = value") is
# appended (later lines win).
write_config() {
	{
		printf '# %s — written by tests/lib.sh\n' "$T_NAME"
		printf 'topic.prefix = %s\n' "$T_PREFIX"
		printf 'topic.replication_factor = 1\n'
		printf 'state.dir = %s/state\n' "$T_DIR"
		printf 'log.level = debug\n'
		printf 'kafka.bootstrap.servers = %s\n' "$IDSTREAM_TEST_KAFKA"
		# A killed member leaves the group only when its session times
		# out; the broker's minimum keeps crash tests short.
		printf 'kafka.session.timeout.ms = 6000\n'
		printf 'ldap.url = %s\n' "$IDSTREAM_TEST_LDAP_URL"
		printf 'ldap.bind_dn = %s\n' "$T_LDAP_ADMIN_DN"
		printf 'ldap.bind_password_file = %s\n' "$T_LDAP_PWFILE"
		printf 'ldap.base_dn = %s\n' "$T_LDAP_BASE"
		printf 'ldap.people_dn = %s\n' "$T_LDAP_PEOPLE"
		printf 'ldap.groups_dn = %s\n' "$T_LDAP_GROUPS"
		# The example and generated exports have start dates weeks
		# ahead of the day the suite runs: provision every hire at once,
		# so what these tests assert does not depend on the date.  The
		# lifecycle itself is tested by test_timers and tests/cases/.
		printf 'mapping.create_days_before_start = 3650\n'
		printf 'mapping.enable = create\n'
		for _l in "$@"; do printf '%s\n' "$_l"; done
	} >"$T_CONF"
}

# ---------------------------------------------------------------- processes

T_PIDS=""
# spawn NAME CMD...: starts CMD in the background with its output in
# $T_DIR/NAME.log; sets SPAWNED_PID; stopped by lib_cleanup.
spawn() {
	_sp_name=$1
	shift
	"$@" >"$T_DIR/$_sp_name.log" 2>&1 </dev/null &
	SPAWNED_PID=$!
	T_PIDS="$T_PIDS $SPAWNED_PID"
}

# stop_pid PID [TIMEOUT_S]: TERM, wait (default 15 s), then KILL.  Returns
# the process's exit status when it is our child, else 0.
stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	kill -CONT "$1" 2>/dev/null || true # a paused one acts on TERM too
	_st_i=0
	while kill -0 "$1" 2>/dev/null; do
		# A zombie is an exited child waiting for `wait` below.
		[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ] || break
		_st_i=$((_st_i + 1))
		if [ "$_st_i" -gt $((${2:-15} * 10)) ]; then
			kill -KILL "$1" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	wait "$1" 2>/dev/null
}

lib_cleanup() {
	for _p in $T_PIDS; do stop_pid "$_p" 5 || true; done
	T_PIDS=""
}
trap lib_cleanup EXIT

# ---------------------------------------------------------------- LDAP

_ldap() {
	_ld_cmd=$1
	shift
	"$_ld_cmd" -x -H "$IDSTREAM_TEST_LDAP_URL" -D "$T_LDAP_ADMIN_DN" \
		-y "$T_LDAP_PWFILE" -o nettimeout=10 "$@"
}

# ldap_reset: empties ou=people and ou=groups (recreating both OUs).
ldap_reset() {
	for _ou in "$T_LDAP_GROUPS" "$T_LDAP_PEOPLE"; do
		# -c: a missing OU (code 32) is fine; anything else shows below.
		_ldap ldapdelete -c -r "$_ou" >/dev/null 2>&1 || true
		if _ldap ldapsearch -LLL -s base -b "$_ou" 1.1 >/dev/null 2>&1; then
			fail "ldap_reset: could not delete $_ou"
		fi
		_ou_name=${_ou%%,*}
		_ou_name=${_ou_name#ou=}
		printf 'dn: %s\nobjectClass: organizationalUnit\nou: %s\n' "$_ou" "$_ou_name" |
			_ldap ldapadd >/dev/null || fail "ldap_reset: could not recreate $_ou"
	done
}

# ldap_get DN ATTR: the values of ATTR (operational ones too, e.g. memberOf)
# of entry DN, one per line, sorted; nothing when the entry or the attribute
# is absent.  Base64 values (non-ASCII) are decoded.
ldap_get() {
	_lg_out=$(_ldap ldapsearch -LLL -o ldif-wrap=no -s base -b "$1" \
		'(objectClass=*)' "$2" 2>&1) || {
		case $_lg_out in *"No such object"*) return 0 ;; esac
		fail "ldap_get $1 $2: $_lg_out"
	}
	printf '%s\n' "$_lg_out" | while IFS= read -r _line; do
		_k=${_line%%:*}
		# Attribute names compare case-insensitively.
		[ "$(printf '%s' "$_k" | tr 'A-Z' 'a-z')" = "$(printf '%s' "$2" | tr 'A-Z' 'a-z')" ] || continue
		case $_line in
		*":: "*) printf '%s\n' "${_line#*:: }" | base64 -d && echo ;;
		*": "*) printf '%s\n' "${_line#*: }" ;;
		esac
	done | LC_ALL=C sort
}

# ldap_exists DN: true when the entry exists.
ldap_exists() {
	_ldap ldapsearch -LLL -s base -b "$1" 1.1 >/dev/null 2>&1
}

# ldap_count FILTER [BASE]: entries under BASE (default dc=example,dc=com)
# matching FILTER.
ldap_count() {
	_lc_out=$(_ldap ldapsearch -LLL -o ldif-wrap=no -b "${2:-$T_LDAP_BASE}" "$1" 1.1 2>&1) ||
		fail "ldap_count $1: $_lc_out"
	printf '%s\n' "$_lc_out" | grep -c '^dn:' || true
}

# ---------------------------------------------------------------- Kafka

# kafka_count TOPIC: committed messages in TOPIC (read_committed: aborted
# and still-open transactions are not counted).
kafka_count() {
	_kc_out=$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$1" -e -q \
		-X isolation.level=read_committed -f 'x\n' 2>&1) ||
		fail "kafka_count $1: $_kc_out"
	case $_kc_out in *"ERROR"* | *"% "*) fail "kafka_count $1: $_kc_out" ;; esac
	printf '%s' "$_kc_out" | grep -c '^x$' || true
}

# kafka_wait_count TOPIC N [TIMEOUT_S]: waits until TOPIC holds at least N
# committed messages (default 30 s).
kafka_wait_count() {
	_kw_deadline=$(($(date +%s) + ${3:-30}))
	while :; do
		_kw_n=$(kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$1" -e -q \
			-X isolation.level=read_committed -f 'x\n' 2>/dev/null | grep -c '^x$' || true)
		[ "$_kw_n" -lt "$2" ] || return 0
		[ "$(date +%s)" -lt "$_kw_deadline" ] ||
			fail "topic $1 has $_kw_n committed messages after ${3:-30}s, expected at least $2"
		sleep 0.2
	done
}

# kafka_keys TOPIC: the keys of TOPIC's committed messages, one per line,
# in partition then offset order.
kafka_keys() {
	kcat -C -b "$IDSTREAM_TEST_KAFKA" -t "$1" -e -q \
		-X isolation.level=read_committed -f '%p %o %k\n' 2>/dev/null |
		sort -k1,1n -k2,2n | cut -d' ' -f3-
}

# kafka_create_topic TOPIC [PARTITIONS]: creates TOPIC (replication 1) with
# Kafka's own TopicCommand (kcat cannot create topics).
kafka_create_topic() {
	. "$IDSTREAM_REPO/scripts/versions.env"
	_kt_libs=${IDSTREAM_CACHE:-$HOME/.cache/idstream}/kafka-$KAFKA_VERSION/libs
	_kt_out=$(java -cp "$_kt_libs/*" org.apache.kafka.tools.TopicCommand \
		--bootstrap-server "$IDSTREAM_TEST_KAFKA" --create --topic "$1" \
		--partitions "${2:-1}" --replication-factor 1 2>&1) ||
		fail "kafka_create_topic $1: $_kt_out"
}

# kafka_topic_config TOPIC KEY=VALUE: sets one configuration of TOPIC with
# Kafka's own ConfigCommand.
kafka_topic_config() {
	. "$IDSTREAM_REPO/scripts/versions.env"
	_kt_libs=${IDSTREAM_CACHE:-$HOME/.cache/idstream}/kafka-$KAFKA_VERSION/libs
	_kt_out=$(java -cp "$_kt_libs/*" org.apache.kafka.tools.ConfigCommand \
		--bootstrap-server "$IDSTREAM_TEST_KAFKA" --alter --entity-type topics \
		--entity-name "$1" --add-config "$2" 2>&1) ||
		fail "kafka_topic_config $1 $2: $_kt_out"
}

# kafka_produce TOPIC: produces one message per stdin line "KEY<TAB>VALUE"
# (idempotent, acks=all, murmur2_random like idstream).
kafka_produce() {
	kcat -P -b "$IDSTREAM_TEST_KAFKA" -t "$1" -K "$(printf '\t')" \
		-X enable.idempotence=true -X partitioner=murmur2_random ||
		fail "kafka_produce $1 failed"
}
