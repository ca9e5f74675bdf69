#!/bin/sh
# bootstrap.sh — installs everything idstream's build, tests and demo need on
# Debian 12, idempotently:
#   1. Debian packages (only the missing ones; `apt-get update` only then, so
#      a second run needs no network and takes about a second);
#   2. the Apache Kafka broker jars from Maven Central (pinned in
#      scripts/versions.env) into ${IDSTREAM_CACHE:-$HOME/.cache/idstream}/kafka-<ver>/libs;
#   3. a Python venv with the SCIM 2.0 test peer scim2-server (pinned) in
#      ${IDSTREAM_CACHE:-$HOME/.cache/idstream}/scim2-server-<ver>.
# Each cached item has a `.complete` marker written last, so an interrupted
# fetch is redone and a finished one is never touched again.  The cache is
# outside the clone: a fresh clone reuses it.
#
# Installing packages needs root; when everything is present it does not.
# Exits non-zero with a message naming what could not be installed.

set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/scripts/versions.env"

CACHE=${IDSTREAM_CACHE:-${HOME:?HOME is not set; set IDSTREAM_CACHE}/.cache/idstream}

PKGS="build-essential pkg-config librdkafka-dev librocksdb-dev libavro-dev
libjansson-dev libldap-dev libcurl4-openssl-dev liblua5.4-dev libmicrohttpd-dev
libcmocka-dev libssl-dev libcsv-dev slapd ldap-utils kcat clang-format maven
default-jre-headless python3-venv samba time jq"

say() { printf 'bootstrap: %s\n' "$*"; }
die() {
	printf 'bootstrap: error: %s\n' "$*" >&2
	exit 1
}
# show_log FILE: the tail of a step's log, on failure.
show_log() {
	printf -- '--- last lines of %s ---\n' "$1" >&2
	tail -n 30 "$1" >&2 || true
	printf -- '--- end ---\n' >&2
}

mkdir -p "$CACHE" || die "cannot create cache folder $CACHE (set IDSTREAM_CACHE)"
# Two bootstraps at once (make test and make demo in two terminals) would
# race on apt's lock and on the cache folders; the second one waits here.
exec 9>"$CACHE/.bootstrap.lock"
flock 9

# ---------------------------------------------------------------- 1. packages

# shellcheck disable=SC2086
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null |
	awk '$NF == "installed" {print $1}')
missing=""
for p in $PKGS; do
	printf '%s\n' "$installed" | grep -qxF "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	[ "$(id -u)" = 0 ] || die "missing Debian packages:$missing — run this script as root (sudo sh scripts/bootstrap.sh)"
	say "installing Debian packages:$missing"
	log=$CACHE/apt.log
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get update -q >"$log" 2>&1; then
		show_log "$log"
		die "apt-get update failed (log: $log)"
	fi
	# shellcheck disable=SC2086
	if ! apt-get install -y -q $missing >>"$log" 2>&1; then
		show_log "$log"
		die "apt-get install failed for:$missing (log: $log)"
	fi
fi

# Kafka 4 brokers need Java 17 or newer.
jv=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}')
case $jv in '' | *[!0-9]*) die "cannot tell the Java version (java -version); need 17 or newer" ;; esac
[ "$jv" -ge 17 ] || die "java is version $jv; Kafka $KAFKA_VERSION needs 17 or newer"

# ---------------------------------------------------------------- 2. Kafka jars

kdir=$CACHE/kafka-$KAFKA_VERSION
if [ ! -f "$kdir/.complete" ]; then
	say "fetching Apache Kafka $KAFKA_VERSION jars into $kdir/libs"
	rm -rf "$kdir"
	mkdir -p "$kdir"
	log=$kdir/fetch.log
	# The local Maven repository lives in the cache too, so deleting the
	# cache folder really starts from nothing.
	if ! mvn -B -q -f "$REPO/scripts/kafka-pom.xml" \
		-Dmaven.repo.local="$CACHE/m2" \
		-Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$LOG4J_VERSION" \
		-Dslf4j.version="$SLF4J_VERSION" \
		dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$kdir/libs.tmp" >"$log" 2>&1; then
		show_log "$log"
		die "could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central (log: $log)"
	fi
	[ -f "$kdir/libs.tmp/kafka_2.13-$KAFKA_VERSION.jar" ] ||
		die "kafka_2.13-$KAFKA_VERSION.jar missing after the Maven fetch (log: $log)"
	mv "$kdir/libs.tmp" "$kdir/libs"
	echo "$KAFKA_VERSION" >"$kdir/.complete"
fi

# ---------------------------------------------------------------- 3. SCIM peer

sdir=$CACHE/scim2-server-$SCIM2_SERVER_VERSION
if [ ! -f "$sdir/.complete" ]; then
	say "installing scim2-server $SCIM2_SERVER_VERSION into $sdir"
	rm -rf "$sdir"
	log=$CACHE/scim2-server-$SCIM2_SERVER_VERSION.log
	# Debian's python3 (python3-venv is installed for it), not whatever
	# python3 comes first on PATH.
	py=/usr/bin/python3
	[ -x "$py" ] || py=python3
	if ! "$py" -m venv "$sdir" >"$log" 2>&1 ||
		! "$sdir/bin/pip" install -q --disable-pip-version-check \
			"scim2-server==$SCIM2_SERVER_VERSION" >>"$log" 2>&1; then
		show_log "$log"
		rm -rf "$sdir"
		die "could not install scim2-server==$SCIM2_SERVER_VERSION from PyPI (log: $log)"
	fi
	if ! "$sdir/bin/scim2-server" --help >>"$log" 2>&1; then
		show_log "$log"
		rm -rf "$sdir"
		die "scim2-server $SCIM2_SERVER_VERSION installed but does not run (log: $log)"
	fi
	echo "$SCIM2_SERVER_VERSION" >"$sdir/.complete"
fi
