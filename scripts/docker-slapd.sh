#!/bin/sh
# docker-slapd.sh — entry point of the `slapd` image (Dockerfile): on first
# start, creates the directory from scripts/slapd-config.ldif and
# scripts/slapd-base.ldif with the admin password taken from a secret file;
# then runs slapd in the foreground as the openldap user.
#
#   LDAP_DATA_DIR            data + config folder (default /var/lib/idstream-ldap)
#   LDAP_ADMIN_PASSWORD_FILE secret with the password of cn=admin,dc=example,dc=com
#                            (default /run/secrets/ldap_admin_password)
#   LDAP_URLS                listeners (default ldap:///)
#   LDAP_RUN_AS              user slapd drops to (default openldap; empty: stay)
#
# Unlike the test copy, writes are fsync'ed (olcDbNoSync is dropped) and the
# cn=config database has no remote administrator.  The password is hashed
# (SSHA) before it reaches the configuration and never appears in argv.
set -eu

D=${LDAP_DATA_DIR:-/var/lib/idstream-ldap}
PWFILE=${LDAP_ADMIN_PASSWORD_FILE:-/run/secrets/ldap_admin_password}
URLS=${LDAP_URLS:-ldap:///}
RUN_AS=${LDAP_RUN_AS-openldap}
SRC=${LDAP_LDIF_DIR:-/usr/share/idstream/ldap}

die() {
	echo "docker-slapd: $*" >&2
	exit 1
}

if [ ! -d "$D/slapd.d" ]; then
	[ -s "$PWFILE" ] || die "no admin password: $PWFILE is missing or empty"
	mkdir -p "$D/data" "$D/run"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# The secret without its trailing newline (what clients will send).
	(umask 077 && head -n 1 "$PWFILE" | tr -d '\r\n' >"$tmp/pw")
	hash=$(slappasswd -h '{SSHA}' -T "$tmp/pw")
	sed -e "s|@DIR@|$D|g" \
		-e "s|^olcRootPW: adminpw\$|olcRootPW: $hash|" \
		-e '/^olcDbNoSync:/d' \
		-e '/^olcRootDN: cn=admin,cn=config$/d' \
		-e '/^olcRootPW: configpw$/d' \
		"$SRC/slapd-config.ldif" >"$tmp/config.ldif"
	grep -q "^olcRootPW: {SSHA}" "$tmp/config.ldif" || die "could not set the admin password"
	mkdir -p "$D/slapd.d.tmp"
	slapadd -n0 -F "$D/slapd.d.tmp" -l "$tmp/config.ldif"
	slapadd -n1 -F "$D/slapd.d.tmp" -l "$SRC/slapd-base.ldif"
	mv "$D/slapd.d.tmp" "$D/slapd.d"
	echo "docker-slapd: created dc=example,dc=com in $D"
fi

set -- -d 0 -h "$URLS" -F "$D/slapd.d"
if [ -n "$RUN_AS" ]; then
	chown -R "$RUN_AS:$RUN_AS" "$D"
	set -- "$@" -u "$RUN_AS" -g "$RUN_AS"
fi
exec /usr/sbin/slapd "$@"
