#!/bin/sh
# samba.sh — provision, start, stop and inspect a throwaway Samba AD DC for the
# Active Directory sink (tests, demo, bench).
#
#   sh scripts/samba.sh start|stop|status|env
#
# Everything lives in one folder, ${IDSTREAM_RUN:-<repo>/run}/samba unless
# IDSTREAM_SAMBA_DIR names another: the provisioned domain (etc/ private/
# state/), run/ (Samba's own PID file and sockets), log/, the launcher PID
# file samba.pid, and admin.pw — the Administrator password, mode 0600, no
# trailing newline (ldap-utils' -y reads the whole file).  `env` prints the
# variables tests/unit/test_sink_ad.c reads.
#
# Realm IDSTREAM_AD_REALM (default EXAMPLE.TEST), NetBIOS domain
# IDSTREAM_AD_DOMAIN (default EXAMPLE); base DN = the realm as DC= parts.
#
# Invariants:
#  - Samba's listeners are fixed (389, 636, 3268, 3269, 88, 464, 135 on
#    loopback), so only one AD DC can run on the machine.  `start` refuses,
#    naming the port and its owner, when any of them is taken by anything but
#    this folder's own samba; a machine-wide lock serialises concurrent starts.
#  - Provisioning happens once per folder and is reused by later starts (the
#    marker is .provisioned; a folder without it is a half-done provision and
#    is redone).  The password is never in argv: samba-tool provisions with a
#    random password of its own (its log line is redacted), then our password,
#    generated into admin.pw, is set offline in sam.ldb through Samba's Python
#    bindings, which read it from stdin.  That session also indexes
#    employeeID, the attribute every sink lookup filters on.
#  - samba runs in its own process group (setsid); stop signals that group,
#    and only when that PID is a samba whose working directory is this folder
#    (samba rewrites its command line, so that cannot be the proof).
#  - `start` returns once a simple bind as Administrator over LDAPS works.

set -eu
umask 077

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUN=${IDSTREAM_RUN:-$REPO/run}
# IDSTREAM_SAMBA_DIR overrides the folder, e.g. to share one DC (the ports
# allow only one per machine) between suites with different run folders.
D=${IDSTREAM_SAMBA_DIR:-$RUN/samba}
REALM=${IDSTREAM_AD_REALM:-EXAMPLE.TEST}
DOMAIN=${IDSTREAM_AD_DOMAIN:-EXAMPLE}
START_TIMEOUT=${IDSTREAM_SAMBA_START_TIMEOUT:-60}
STOP_TIMEOUT=${IDSTREAM_STOP_TIMEOUT:-30}
PORTS="389 636 3268 3269 88 464 135"
URL="ldaps://127.0.0.1:636"
PIDFILE=$D/samba.pid
PWFILE=$D/admin.pw
CONF=$D/etc/smb.conf
LOG=$D/log/out.log
# Machine-wide: the ports are machine-wide, whatever the run folder.
PORT_LOCK=${TMPDIR:-/tmp}/idstream-samba-ports.lock

realm_lc=$(printf '%s' "$REALM" | tr 'A-Z' 'a-z')
BASE_DN=$(printf '%s' "$realm_lc" | sed 's/^/DC=/; s/\./,DC=/g')
ADMIN="Administrator@$REALM"

say() { printf 'samba: %s\n' "$*"; }
die() {
	printf 'samba: error: %s\n' "$*" >&2
	exit 1
}
now_ms() { date +%s%3N; }

log_tail() {
	if [ -f "$1" ]; then
		printf -- '--- last lines of %s ---\n' "$1" >&2
		tail -n 40 "$1" >&2
		printf -- '--- end ---\n' >&2
	fi
}

# True when the PID in samba.pid is alive and is a samba started in this
# folder.  samba rewrites its command line ("samba: root process"), so the
# proof is its working directory, which start sets to $D.
running() {
	[ -s "$PIDFILE" ] || return 1
	_pid=$(cat "$PIDFILE")
	case $_pid in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$_pid" 2>/dev/null || return 1
	[ "$(awk '{print $3}' "/proc/$_pid/stat" 2>/dev/null)" != Z ] || return 1
	[ "$(readlink "/proc/$_pid/cwd" 2>/dev/null)" = "$(cd "$D" && pwd -P)" ] || return 1
	case $(readlink "/proc/$_pid/exe" 2>/dev/null) in */samba) return 0 ;; esac
	return 1
}

# Prints "port P (owner)" for the first fixed port something listens on.
busy_port() {
	for _p in $PORTS; do
		_l=$(ss -Hltnp "sport = :$_p" 2>/dev/null | head -n 1)
		if [ -n "$_l" ]; then
			_who=$(printf '%s' "$_l" | sed -n 's/.*users:((\(.*\)))/\1/p')
			printf 'port %s (%s)' "$_p" "${_who:-owner not visible}"
			return 0
		fi
	done
	return 1
}

# ldap-utils against our DC, as Administrator, password from the 0600 file.
ldap_as_admin() {
	_c=$1
	shift
	LDAPTLS_REQCERT=never "$_c" -x -H "$URL" -D "$ADMIN" -y "$PWFILE" \
		-o nettimeout=5 "$@"
}

bind_works() {
	ldap_as_admin ldapsearch -LLL -b "" -s base '(objectClass=*)' dn >/dev/null 2>&1
}

# samba-tool's own interpreter: the Samba Python modules are installed for it
# (a python3 earlier in PATH, e.g. from pyenv, may not see them).
samba_python() {
	_st=$(command -v samba-tool) || die "samba-tool not found; apt-get install -y samba"
	_py=$(head -n 1 "$_st" | sed -n 's/^#! *\([^ ]*\).*/\1/p')
	[ -n "$_py" ] && [ -x "$_py" ] || _py=/usr/bin/python3
	printf '%s' "$_py"
}

provision() {
	say "provisioning $REALM into $D (once per folder)"
	rm -rf "$D/etc" "$D/private" "$D/state" "$D/bind-dns" "$D/run" "$D/gencache.tdb" \
		"$PWFILE" "$D/.provisioned"
	mkdir -p "$D/log" "$D/run"
	_t0=$(now_ms)
	# Without --adminpass samba-tool picks a random password and prints it;
	# that line is redacted before it reaches the log, and the password is
	# replaced below anyway.  RPC endpoints get ports below the kernel's
	# ephemeral range (32768+): Samba's default 49152+ collides with client
	# connections in TIME_WAIT and then refuses to start.
	_rc=0
	{
		samba-tool domain provision -s /dev/null --realm="$REALM" --domain="$DOMAIN" \
			--server-role=dc --dns-backend=NONE --targetdir="$D" \
			--use-rfc2307 --host-ip=127.0.0.1 --option="interfaces=lo" \
			--option="bind interfaces only=yes" --option="pid directory=$D/run" \
			--option="ncalrpc dir=$D/run/ncalrpc" \
			--option="winbindd socket directory=$D/run/winbindd" \
			--option="ntp signd socket directory=$D/run/ntp_signd" \
			--option="log file=$D/log/log.%m" \
			--option="server services=ldap cldap kdc rpc drepl kcc" \
			--option="rpc server dynamic port range=31100-31199" 2>&1 ||
			echo "PROVISION-FAILED $?"
	} | sed 's/\(Admin password:\).*/\1 (redacted; replaced by admin.pw)/' \
		>"$D/log/provision.log"
	if grep -q '^PROVISION-FAILED' "$D/log/provision.log"; then
		log_tail "$D/log/provision.log"
		die "samba-tool domain provision failed (log: $D/log/provision.log)"
	fi
	# 24 random characters plus one of each class AD's complexity rule
	# counts; written without a newline.
	_pw=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-24)
	[ ${#_pw} -eq 24 ] || die "could not generate a password"
	printf '%s' "${_pw}aZ7-" >"$PWFILE"
	_pw=""
	_py=$(samba_python)
	# The password travels on stdin only.  The same offline session indexes
	# employeeID (searchFlags 1), as sinks/README.md recommends for real
	# domains: every sink lookup is by employeeID.  The schema-update switch
	# is set for this session only, not in smb.conf.
	"$_py" -c '
import sys, ldb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
lp = LoadParm()
lp.load(sys.argv[1])
lp.set("dsdb:schema update allowed", "yes")
pw = sys.stdin.read()
db = SamDB(url=sys.argv[2], session_info=system_session(), lp=lp)
db.setpassword("(sAMAccountName=Administrator)", pw,
               force_change_at_next_login=False)
m = ldb.Message()
m.dn = ldb.Dn(db, "CN=Employee-ID," + str(db.get_schema_basedn()))
m["searchFlags"] = ldb.MessageElement("1", ldb.FLAG_MOD_REPLACE, "searchFlags")
db.modify(m)
' "$CONF" "$D/private/sam.ldb" <"$PWFILE" >>"$D/log/provision.log" 2>&1 ||
		{
			log_tail "$D/log/provision.log"
			die "setting the Administrator password (or the employeeID index) failed"
		}
	: >"$D/.provisioned"
	say "provisioned in $(($(now_ms) - _t0)) ms; Administrator password in $PWFILE"
}

# The people/groups OUs the demo and bench use; tests make their own.
base_ous() {
	[ -f "$D/.base-ous" ] && return 0
	printf 'dn: OU=people,%s\nobjectClass: organizationalUnit\n\ndn: OU=groups,%s\nobjectClass: organizationalUnit\n' \
		"$BASE_DN" "$BASE_DN" | ldap_as_admin ldapadd -c >/dev/null 2>&1 || true
	: >"$D/.base-ous"
}

start() {
	command -v samba >/dev/null || die "samba not found; apt-get install -y samba"
	command -v ldapsearch >/dev/null || die "ldapsearch not found; apt-get install -y ldap-utils"
	command -v flock >/dev/null || die "flock not found (util-linux)"
	mkdir -p "$D"
	chmod 700 "$D"
	exec 9>"$PORT_LOCK"
	flock -w 120 9 || die "another samba.sh start holds $PORT_LOCK"
	if running; then
		say "already running (pid $(cat "$PIDFILE")) at $URL"
		return 0
	fi
	rm -f "$PIDFILE"
	if _b=$(busy_port); then
		die "$_b is already in use. Samba's ports are fixed, so only one AD DC can run on this machine. If it is another folder's samba, use it (IDSTREAM_SAMBA_DIR=<its folder> sh scripts/samba.sh env) or stop it (IDSTREAM_SAMBA_DIR=<its folder> sh scripts/samba.sh stop)."
	fi
	[ -f "$D/.provisioned" ] || provision
	[ -s "$PWFILE" ] || die "$PWFILE is missing; delete $D to provision again"
	mkdir -p "$D/log" "$D/run"
	rm -f "$D/run/samba.pid" # a stale one makes samba refuse to start
	_t0=$(now_ms)
	# setsid: samba leads its own process group, which stop signals whole.
	# fd 9 (the port lock) is closed for it, or it would hold the lock.
	(cd "$D" && exec setsid samba -F --debug-stdout -d 1 -M single -s "$CONF" \
		>"$LOG" 2>&1 </dev/null 9>&-) &
	echo $! >"$PIDFILE"
	_i=0
	until bind_works; do
		if ! running; then
			log_tail "$LOG"
			rm -f "$PIDFILE"
			die "samba exited during start-up (log: $LOG)"
		fi
		_i=$((_i + 1))
		if [ "$_i" -gt $((START_TIMEOUT * 10)) ]; then
			log_tail "$LOG"
			stop >/dev/null
			die "no LDAPS bind as $ADMIN at $URL within ${START_TIMEOUT}s"
		fi
		sleep 0.1
	done
	base_ous
	say "running (pid $(cat "$PIDFILE")) at $URL, bind as $ADMIN, base $BASE_DN; ready in $(($(now_ms) - _t0)) ms"
}

stop() {
	if ! running; then
		rm -f "$PIDFILE" "$D/run/samba.pid"
		say "not running"
		return 0
	fi
	_pid=$(cat "$PIDFILE")
	_t0=$(now_ms)
	kill -TERM -- "-$_pid" 2>/dev/null || kill -TERM "$_pid" 2>/dev/null || true
	_i=0
	while kill -0 "$_pid" 2>/dev/null; do
		[ "$(awk '{print $3}' "/proc/$_pid/stat" 2>/dev/null)" = Z ] && break
		_i=$((_i + 1))
		if [ "$_i" -gt $((STOP_TIMEOUT * 10)) ]; then
			say "no exit ${STOP_TIMEOUT}s after TERM, sending KILL to group $_pid"
			kill -KILL -- "-$_pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	rm -f "$PIDFILE" "$D/run/samba.pid"
	say "stopped (pid $_pid, $(($(now_ms) - _t0)) ms)"
}

status() {
	if running; then
		say "running (pid $(cat "$PIDFILE")) at $URL, base $BASE_DN"
		return 0
	fi
	if [ -f "$D/.provisioned" ]; then
		say "stopped (provisioned in $D)"
	else
		say "stopped (not provisioned)"
	fi
	return 3
}

env_vars() {
	printf 'IDSTREAM_TEST_AD_URL=%s\n' "$URL"
	printf 'IDSTREAM_TEST_AD_BIND=%s\n' "$ADMIN"
	printf 'IDSTREAM_TEST_AD_PASSWORD_FILE=%s\n' "$PWFILE"
	printf 'IDSTREAM_TEST_AD_BASE=%s\n' "$BASE_DN"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
env) env_vars ;;
*)
	echo "usage: sh scripts/samba.sh start|stop|status|env" >&2
	exit 2
	;;
esac
