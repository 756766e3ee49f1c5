#!/bin/bash
# The Debian packages on a host, as an admin installs and runs them: built
# by dpkg-buildpackage (build_debs.sh), installed with `dpkg -i` into a
# throw-away root (systemd as PID 1 of private namespaces over overlays of
# /etc, /usr and /var, tests/integration/nsboot.sh), whose maintainer
# scripts make the users and directories and enable keysvcd.socket, which
# waits for the PIN. Then, as docs/deployment.md tells: a SoftHSM token for
# keysvc (the installed setup-token.sh and ks-token-init), the PIN in
# /etc/keysvc/pin (a credential of the service), the example configuration
# with the renewal clients' rules, `systemctl start keysvcd.socket`,
# `keysvc hello`; keysvc-openvox enrolls as its own user with the local
# test CA (tests/ca, on the host's 127.0.0.1, whose network the namespaces
# share), /etc/keysvc/openvox.env from the example, and the timer's service
# runs once and renews; keysvc-metrics.service writes its textfile as its
# own user. Checked: `keysvc status`, `journalctl -p err` of
# our units, the owners and modes of every directory and file, a program
# built against libkeysvc-dev (pkg-config), and the audit log rotated by the
# logrotate snippet (when logrotate is installed).
#
# Needs root, util-linux unshare/nsenter, overlayfs, systemd, debhelper;
# skipped (exit 77) without them, and for sanitizer builds (the packages
# are built without the sanitizers; the sandbox's syscall filter stops
# their runtime).
#
# Arguments: the fake-openvox-ca program.
set -u

if [ "${1:-}" = --pid1 ]; then
	# ---- inside the namespaces, as PID 1 --------------------------------
	set -e
	. "$KS_SOURCE_ROOT/tests/integration/nsboot.sh"
	ns_pid1_mounts "$2"
	arch=$(dpkg --print-architecture)
	# As an admin would: their maintainer scripts run (no systemd yet, so
	# they start nothing; the test checks what they enabled).
	dpkg -i "$2"/debs/keysvcd_*_"$arch".deb "$2"/debs/keysvc-clients_*_"$arch".deb \
		"$2"/debs/libkeysvc1_*_"$arch".deb "$2"/debs/libkeysvc-dev_*_"$arch".deb \
		"$2"/debs/openssl-provider-keysvc_*_"$arch".deb >"$2/dpkg.log" 2>&1
	# This systemd boots no sysinit.target, and nothing in here brings a
	# network up (the host's is shared): runtime drop-ins and a mask, in /run.
	for u in keysvcd.service keysvcd.socket keysvc-openvox-renew.service keysvc-openvox-renew.timer keysvc-ucl-renew.service \
		keysvc-metrics.service; do
		mkdir -p "/run/systemd/system/$u.d"
		printf '[Unit]\nDefaultDependencies=no\n' >"/run/systemd/system/$u.d/system-test.conf"
	done
	ln -s /dev/null /run/systemd/system/network-online.target
	# keysvc-pkg.target stands in for sockets.target (which would start the
	# host's own sockets in here).
	printf '[Unit]\nDescription=keysvc package test\nDefaultDependencies=no\nWants=keysvcd.socket systemd-journald.socket\n' \
		>/run/systemd/system/keysvc-pkg.target
	exec env -i container=keysvc-pkg PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		/usr/lib/systemd/systemd --system --unit=keysvc-pkg.target --log-target=journal \
		--log-level=info --show-status=no
fi

# ---- outside: build, boot, check ------------------------------------------
fake_ca=$1
work=$(mktemp -d)
chmod 0755 "$work"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
. "$KS_SOURCE_ROOT/tests/integration/nsboot.sh"
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
skip() { echo "1..0 # SKIP $*"; rm -rf "$work"; exit 77; }

[ "${KS_B_SANITIZE:-none}" = none ] || skip "sanitizer build (b_sanitize=$KS_B_SANITIZE)"
ns_require
# The commands run in the namespaces inherit this environment: the
# installed programs are to use their defaults (the inventory above all).
unset KEYSVC_INVENTORY KEYSVC_SOCKET OPENSSL_MODULES SOFTHSM2_CONF
st=0
why=$(bash "$KS_SOURCE_ROOT/tests/integration/build_debs.sh" "$work/debs") || st=$?
[ "$st" -eq 77 ] && skip "$why"
check "the packages were built (dpkg-buildpackage)" test "$st" -eq 0
[ "$st" -eq 0 ] || { echo "1..$((passed + failed))"; exit 1; }

cleanup() { ks_fake_stop; ns_cleanup; }
# The namespaces share the kernel's boot id (and /var/log/journal) with the host: our entries are the ones since now.
started=$(date +%s)
trap cleanup EXIT
NS_BOOT_WAIT=60 ns_boot "$0" --pid1 "$work"
check "dpkg -i installed the five packages and systemd came up" booted
pkg_installed() { in_ns dpkg-query -W -f='${Status}\n' keysvcd keysvc-clients libkeysvc1 libkeysvc-dev openssl-provider-keysvc | grep -vc 'install ok installed' | grep -qx 0; }
check "dpkg knows them as installed" pkg_installed || sed 's/^/#   /' "$work/dpkg.log"

# ---- what the packages did -------------------------------------------------
groups_of() { in_ns id -nG "$1" | tr ' ' '\n' | sort | tr '\n' ' '; }
check "sysusers.d: the system user keysvc" in_ns id keysvc
for c in openvox ucl oci; do
	check "sysusers.d: keysvc-$c, in groups keysvc and keysvc-inventory" \
		is "keysvc keysvc-inventory keysvc-$c " "$(groups_of "keysvc-$c")"
done
check "sysusers.d: keysvc-metrics, in group keysvc" is "keysvc keysvc-metrics " "$(groups_of keysvc-metrics)"
shape() { in_ns stat -c '%U:%G %a' "$1"; }
check "tmpfiles.d: /var/lib/keysvc-metrics is keysvc-metrics's, 0755" \
	is "keysvc-metrics:keysvc-metrics 755" "$(shape /var/lib/keysvc-metrics)"
check "tmpfiles.d: /var/lib/keysvc is keysvc:keysvc 0700" is "keysvc:keysvc 700" "$(shape /var/lib/keysvc)"
check "tmpfiles.d: /var/log/keysvc is keysvc:keysvc 0750" is "keysvc:keysvc 750" "$(shape /var/log/keysvc)"
for c in openvox ucl oci; do
	check "tmpfiles.d: /var/lib/keysvc-$c is keysvc-$c's, 0755" is "keysvc-$c:keysvc-$c 755" "$(shape "/var/lib/keysvc-$c")"
done
check "tmpfiles.d: /var/lib/keysvc-inventory is root:keysvc-inventory 0775" \
	is "root:keysvc-inventory 775" "$(shape /var/lib/keysvc-inventory)"
check "/etc/keysvc/keysvcd.json (conffile) is root:root 0644" is "root:root 644" "$(shape /etc/keysvc/keysvcd.json)"
check "keysvcd.socket is enabled" is enabled "$(ctl is-enabled keysvcd.socket)"
check "keysvcd.service is not enabled (the socket starts it)" is disabled "$(ctl is-enabled keysvcd.service)"
for c in openvox ucl oci; do
	check "keysvc-$c-renew.timer is not enabled" is disabled "$(ctl is-enabled "keysvc-$c-renew.timer")"
done
check "without a PIN keysvcd.socket is skipped, not failed (ConditionPathExists=)" \
	is "inactive no" "$(ctl is-active keysvcd.socket) $(prop ConditionResult keysvcd.socket)"
check "keysvcd.service was never started" is "inactive 0" "$(ctl is-active keysvcd.service) $(prop NRestarts keysvcd.service)"

# ---- the admin's steps (docs/deployment.md, "Install on a host") -----------
module=${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
check "a SoftHSM token for keysvc with the installed setup-token.sh and ks-token-init" \
	in_ns env -u KS_TOKEN_INIT KS_SOFTHSM_MODULE="$module" \
	bash /usr/share/keysvc/softhsm/setup-token.sh /var/lib/keysvc/token keysvc
in_ns sh -c 'install -m 0600 /var/lib/keysvc/token/pin /etc/keysvc/pin && rm /var/lib/keysvc/token/pin /var/lib/keysvc/token/so-pin &&
	chown -R keysvc:keysvc /var/lib/keysvc/token &&
	mkdir -p /etc/systemd/system/keysvcd.service.d &&
	printf "[Service]\nEnvironment=SOFTHSM2_CONF=/var/lib/keysvc/token/softhsm2.conf\n" >/etc/systemd/system/keysvcd.service.d/softhsm.conf'
in_ns sh -c 'sed "s#/usr/lib/softhsm/libsofthsm2.so#$1#" /usr/share/doc/keysvcd/examples/keysvcd-clients.json >/etc/keysvc/keysvcd.json' - "$module"
ctl daemon-reload
check "systemctl start keysvcd.socket, with the PIN in place" ctl start keysvcd.socket
check "keysvcd.socket is active" is active "$(ctl is-active keysvcd.socket)"
run_exit 0 "health:     ok" "keysvc hello (the installed CLI) starts keysvcd and is answered" in_ns keysvc hello
check "the socket is root:keysvc 0660" is "root:keysvc 660" "$(shape /run/keysvc/keysvc.sock)"

# A program of the admin's own, built with libkeysvc-dev through pkg-config.
if command -v cc >/dev/null 2>&1; then
	cat >"$work/hello.c" <<'C'
#include <keysvc/keysvc.h>
#include <stdio.h>
int main(void)
{
	keysvc *ks;
	int r = keysvc_connect("/run/keysvc/keysvc.sock", &ks);
	if (r != 0) { fprintf(stderr, "%s\n", keysvc_strerror(r)); return 1; }
	keysvc_close(ks);
	return 0;
}
C
	check "a program built with \`pkg-config --cflags --libs libkeysvc\` connects" \
		in_ns sh -c "cc -o '$work/hello' '$work/hello.c' \$(pkg-config --cflags --libs libkeysvc) && '$work/hello'"
fi

# ---- a renewal client with the local test CA ----------------------------------
: >"$work/control"
# Enrolled for 10 days (the CSR asks for auto-renewal, so --renewal-ttl
# applies), then the CA restarted to renew for 90: the renewal is due (less
# than 30 days left) and its certificate ends later than the current one.
ks_fake_start "$fake_ca" --dir "$work/ca" --control "$work/control" --autosign --ttl 864000 --renewal-ttl 864000
server=https://127.0.0.1:$KS_FAKE_PORT
in_ns install -m 0644 "$work/ca/ca.pem" /etc/keysvc/openvox-ca.pem
cert=/var/lib/keysvc-openvox/agent1.pem
run_exit 0 "" "keysvc-openvox enroll, as keysvc-openvox (the example policy's rule)" \
	as_user keysvc-openvox keysvc-openvox enroll --server "$server" --certname agent1.example.org \
	--key openvox-agent1 --ca-file /etc/keysvc/openvox-ca.pem --cert "$cert" \
	--crl-out /var/lib/keysvc-openvox/crl.pem --waitforcert 1 --maxwaitforcert 30
serial() { in_ns openssl x509 -in "$cert" -noout -serial; }
before=$(serial)
ks_fake_start "$fake_ca" --dir "$work/ca" --control "$work/control" --autosign --ttl 864000 --renewal-ttl 7776000
server=https://127.0.0.1:$KS_FAKE_PORT
# The example environment file with this CA's address.
in_ns sh -c 'sed "s#^KEYSVC_OPENVOX_ARGS=.*#KEYSVC_OPENVOX_ARGS=\"--server $1 --certname agent1.example.org --key openvox-agent1 --ca-file /etc/keysvc/openvox-ca.pem --cert $2\"#" \
	/usr/share/doc/keysvcd/examples/openvox.env.example >/etc/keysvc/openvox.env' - "$server" "$cert"
check "systemctl start keysvc-openvox-renew.service (the timer's service, once)" ctl start keysvc-openvox-renew.service
check "... it succeeded (exit 0: renewed)" \
	is "success 0" "$(prop Result keysvc-openvox-renew.service) $(prop ExecMainStatus keysvc-openvox-renew.service)"
renewed() { [ -n "$before" ] && [ "$(serial)" != "$before" ]; }
check "... and installed a new certificate" renewed
check "... which chains to the CA" in_ns openssl verify -CAfile /etc/keysvc/openvox-ca.pem "$cert"
check "... keeping the old one as .prev" in_ns test -f "$cert.prev"
check "systemctl enable --now keysvc-openvox-renew.timer" ctl enable --now keysvc-openvox-renew.timer
check "the timer is active" is active "$(ctl is-active keysvc-openvox-renew.timer)"

# As systemd runs them here, not only offline (the units test): at most 2.0.
live_score() {
	local sc
	sc=$(in_ns systemd-analyze security "$1" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	echo "exposure $sc"
	[ -n "$sc" ] && awk -v s="$sc" 'BEGIN { exit !(s <= 2.0) }'
}
check "systemd-analyze security keysvc-openvox-renew.service (installed): at most 2.0" live_score keysvc-openvox-renew.service
ucl_skipped() { ctl start keysvc-ucl-renew.service && is "inactive no" "$(ctl is-active keysvc-ucl-renew.service) $(prop ConditionResult keysvc-ucl-renew.service)"; }
check "without /etc/keysvc/ucl.env keysvc-ucl-renew.service is skipped, not failed" ucl_skipped

run_exit 0 "$cert" "keysvc status lists the renewed certificate (the inventory)" in_ns keysvc status
run_exit 0 "openvox" "... recorded by the openvox client" in_ns keysvc status --json

# ---- the metrics writer, as its own user with the example policy's rule --------
check "systemctl start keysvc-metrics.service (the timer's service, once)" ctl start keysvc-metrics.service
check "... it succeeded" is "success 0" "$(prop Result keysvc-metrics.service) $(prop ExecMainStatus keysvc-metrics.service)"
prom=/var/lib/keysvc-metrics/keysvc.prom
metrics_written() {
	in_ns grep -qx 'keysvc_up 1' "$prom" && in_ns grep -qx 'keysvc_health{state="ok"} 1' "$prom" &&
		in_ns grep -qF "keysvc_certificate_expiry_seconds{cert=\"$cert\"" "$prom"
}
check "... wrote $prom: keysvcd up (hello granted), health ok, the certificate" metrics_written
check "... keysvc-metrics's, 0644, for node_exporter" is "keysvc-metrics:keysvc-metrics 644" "$(shape "$prom")"
run_exit 0 '"key_present":true' "the rule grants keysvc-metrics key.public: the key is checked" \
	as_user keysvc-metrics keysvc status --json

# ---- owners and modes --------------------------------------------------------
check "the certificate is keysvc-openvox's" is keysvc-openvox "$(in_ns stat -c %U "$cert")"
inv_owned() { # every inventory record is keysvc-openvox's
	local n
	n=$(in_ns find /var/lib/keysvc-inventory -type f ! -user keysvc-openvox | wc -l)
	[ "$n" = 0 ] && [ "$(in_ns find /var/lib/keysvc-inventory -type f | wc -l)" -ge 1 ]
}
check "the inventory records are keysvc-openvox's" inv_owned
check "/var/lib/keysvc-openvox is still keysvc-openvox's 0755 after the run (StateDirectory=)" \
	is "keysvc-openvox:keysvc-openvox 755" "$(shape /var/lib/keysvc-openvox)"
check "/var/lib/keysvc is still keysvc's 0700 with keysvcd running" is "keysvc:keysvc 700" "$(shape /var/lib/keysvc)"
# keysvcd makes it 0640, and the unit's UMask=0077 takes the group's read away.
check "the audit log is keysvc's, 0600" is "keysvc:keysvc 600" "$(shape /var/log/keysvc/audit.log)"
check "/etc/keysvc/pin is root's 0600" is "root:root 600" "$(shape /etc/keysvc/pin)"
no_errors() { # journalctl -p err of our units is empty
	local out
	out=$(in_ns journalctl --no-pager -q -p err --since "@$started" -u keysvcd.service -u keysvcd.socket \
		-u keysvc-openvox-renew.service -u keysvc-openvox-renew.timer -u keysvc-metrics.service)
	[ -z "$out" ] || { echo "$out"; return 1; }
}
check "journalctl -p err: nothing from keysvcd or the renewal" no_errors

# ---- the audit log's rotation (the logrotate snippet) ------------------------
if in_ns sh -c 'command -v logrotate' >/dev/null 2>&1; then
	check "logrotate -f /etc/logrotate.d/keysvcd" in_ns logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/keysvcd
	check "... renamed the audit log to audit.log.1" in_ns test -s /var/log/keysvc/audit.log.1
	run_exit 0 "" "after the reload a request is audited in a new audit.log" in_ns keysvc list
	check "... which keysvcd made (keysvc, 0600)" is "keysvc:keysvc 600" "$(shape /var/log/keysvc/audit.log)"
	run_exit 0 "" "keysvc audit-verify audit.log.1 audit.log: one chain across the rotation" \
		in_ns keysvc audit-verify /var/log/keysvc/audit.log.1 /var/log/keysvc/audit.log
else
	echo "# logrotate not installed: the rotation is not checked"
fi

if [ "$failed" -ne 0 ]; then
	echo "# the namespaced journal:"
	in_ns journalctl --no-pager --since "@$started" -u keysvcd.service -u keysvcd.socket \
		-u keysvc-openvox-renew.service 2>&1 | tail -n 60 | sed 's/^/#   /'
fi
echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
