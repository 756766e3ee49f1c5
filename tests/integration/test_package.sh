#!/bin/bash
# The Debian packages (debian/): `dpkg-buildpackage -b -uc -us` builds them
# from a copy of the source tree, lintian finds no errors (its warnings are
# listed), and each package holds what an admin expects where Debian 12
# expects it: the daemon, its units, sysusers.d and tmpfiles.d entries, the
# conffile /etc/keysvc/keysvcd.json and ks-token-init in keysvcd; the CLI,
# the renewal clients and their units in keysvc-clients; the library, its
# header and libkeysvc.pc, the OpenSSL provider in the modules directory of
# libcrypto. The maintainer scripts make the users and directories, enable
# keysvcd.socket and start nothing else.
# Skipped (exit 77) without dpkg-buildpackage/debhelper, and in sanitizer
# builds (the packages are built without this build's sanitizers).
set -u
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
skip() { echo "1..0 # SKIP $*"; exit 77; }
[ "${KS_B_SANITIZE:-none}" = none ] || skip "sanitizer build (b_sanitize=$KS_B_SANITIZE): the packages do not use it"

st=0
why=$(bash "$KS_SOURCE_ROOT/tests/integration/build_debs.sh" "$work/debs") || st=$?
[ "$st" -eq 77 ] && skip "$why"
check "dpkg-buildpackage -b -uc -us builds the packages" test "$st" -eq 0
[ "$st" -eq 0 ] || { tail -n 30 "$work/debs/build.log" | sed 's/^/#   /'; echo "1..$((passed + failed))"; exit 1; }

v=$(sed -n "s/^ *version : '\(.*\)',$/\1/p" "$KS_SOURCE_ROOT/meson.build")
check "debian/changelog has meson.build's version ($v)" \
	grep -q "^keysvc ($v) " "$KS_SOURCE_ROOT/debian/changelog"
deb() { echo "$work/debs/$1_${v}_$(dpkg --print-architecture).deb"; }
for p in keysvcd keysvc-clients libkeysvc1 libkeysvc-dev openssl-provider-keysvc; do
	check "package $p was built" test -f "$(deb "$p")"
done
has() { # has PACKAGE PATH...: each PATH is in PACKAGE
	local p=$1 f
	shift
	dpkg-deb -c "$(deb "$p")" | awk '{print $6}' | sed 's#^\.##' >"$work/list"
	for f in "$@"; do grep -qx -- "$f" "$work/list" || { echo "$f not in $p"; return 1; }; done
}
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
modulesdir=$(pkg-config --variable=modulesdir libcrypto 2>/dev/null || echo "/usr/lib/$multiarch/ossl-modules")
check "keysvcd: the daemon, ks-token-init, the units, sysusers.d, tmpfiles.d, logrotate, the conffile, the docs" \
	has keysvcd /usr/sbin/keysvcd /usr/sbin/ks-token-init /lib/systemd/system/keysvcd.service \
	/lib/systemd/system/keysvcd.socket /usr/lib/sysusers.d/keysvcd.conf /usr/lib/tmpfiles.d/keysvcd.conf \
	/etc/logrotate.d/keysvcd /etc/keysvc/keysvcd.json /usr/share/doc/keysvcd/README.md \
	/usr/share/doc/keysvcd/docs/deployment.md /usr/share/doc/keysvcd/examples/keysvcd-clients.json \
	/usr/share/doc/keysvcd/examples/openvox.env.example /usr/share/keysvc/softhsm/setup-token.sh
check "keysvc-clients: the CLI, the renewal clients, their units, users and directories" \
	has keysvc-clients /usr/bin/keysvc /usr/bin/keysvc-openvox /usr/bin/keysvc-ucl /usr/bin/keysvc-oci \
	/usr/bin/keysvc-cce /lib/systemd/system/keysvc-openvox-renew.service /lib/systemd/system/keysvc-openvox-renew.timer \
	/lib/systemd/system/keysvc-ucl-renew.timer /lib/systemd/system/keysvc-oci-renew.timer \
	/usr/lib/sysusers.d/keysvc-clients.conf /usr/lib/tmpfiles.d/keysvc-clients.conf
check "libkeysvc1: libkeysvc.so.1" has libkeysvc1 "/usr/lib/$multiarch/libkeysvc.so.1"
check "libkeysvc-dev: <keysvc/keysvc.h>, libkeysvc.so, libkeysvc.pc" \
	has libkeysvc-dev /usr/include/keysvc/keysvc.h "/usr/lib/$multiarch/libkeysvc.so" "/usr/lib/$multiarch/pkgconfig/libkeysvc.pc"
check "openssl-provider-keysvc: keysvc.so in libcrypto's modules directory ($modulesdir)" \
	has openssl-provider-keysvc "$modulesdir/keysvc.so"
check "/etc/keysvc/keysvcd.json is a conffile" sh -c "dpkg-deb -I '$(deb keysvcd)' conffiles | grep -qx /etc/keysvc/keysvcd.json"
check "the conffile parses as JSON" sh -c "dpkg-deb --fsys-tarfile '$(deb keysvcd)' | tar -xOf - ./etc/keysvc/keysvcd.json | python3 -m json.tool >/dev/null"

mkdir "$work/ctl"
dpkg-deb -e "$(deb keysvcd)" "$work/ctl/keysvcd"
dpkg-deb -e "$(deb keysvc-clients)" "$work/ctl/keysvc-clients"
check "keysvcd's postinst makes the keysvc user (systemd-sysusers keysvcd.conf)" \
	grep -q 'systemd-sysusers .*keysvcd.conf' "$work/ctl/keysvcd/postinst"
check "keysvcd's postinst makes its directories (systemd-tmpfiles --create keysvcd.conf)" \
	grep -q 'systemd-tmpfiles .*--create keysvcd.conf' "$work/ctl/keysvcd/postinst"
check "keysvcd's postinst enables and starts keysvcd.socket" \
	sh -c "grep -q \"deb-systemd-helper enable 'keysvcd.socket'\" '$work/ctl/keysvcd/postinst' &&
	       grep -q \"deb-systemd-invoke \\\$_dh_action 'keysvcd.socket'\" '$work/ctl/keysvcd/postinst'"
never_started() { ! grep -E "deb-systemd-invoke .*'($1)'" "$work/ctl/$2/postinst"; }
check "... but never starts keysvcd.service (no PIN yet)" never_started keysvcd.service keysvcd
check "keysvc-clients' postinst makes the client users" grep -q 'systemd-sysusers .*keysvc-clients.conf' "$work/ctl/keysvc-clients/postinst"
# debhelper's snippet for a unit enabled at installation says so in this comment.
lacks() { ! grep -q -- "$1" "$2"; }
check "keysvc-clients' postinst enables no renewal timer on a new installation" \
	lacks 'was-enabled defaults to true' "$work/ctl/keysvc-clients/postinst"
check "keysvc-clients' postinst starts nothing" lacks 'deb-systemd-invoke' "$work/ctl/keysvc-clients/postinst"

if command -v lintian >/dev/null 2>&1; then
	lintian --fail-on error "$work/debs"/*.changes >"$work/lintian" 2>&1
	lst=$?
	check "lintian finds no errors" sh -c "[ $lst -eq 0 ] && ! grep -q '^E:' '$work/lintian'" || cat "$work/lintian" | sed 's/^/#   /'
	grep '^[WE]:' "$work/lintian" | sed 's/^/# lintian: /'
else
	echo "# lintian not installed: not checked"
fi

echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
