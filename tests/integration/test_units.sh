#!/bin/bash
# keysvc/systemd/keysvcd.{service,socket}: `systemd-analyze verify` accepts
# them (with ExecStart pointed at the built keysvcd, since /usr/sbin/keysvcd
# need not exist here), and they agree with the daemon's code: the
# credential name keysvcd reads, the default socket path, Type=notify.
# Skipped (exit 77) without systemd-analyze.
set -u
units=$KS_SOURCE_ROOT/keysvc/systemd
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze not installed"
	exit 77
fi

mkdir "$work/units"
sed "s#^\(Exec[A-Za-z]*\)=/usr/sbin/keysvcd #\1=$KS_KEYSVCD #" "$units/keysvcd.service" >"$work/units/keysvcd.service"
cp "$units/keysvcd.socket" "$work/units/keysvcd.socket"
check "the service's ExecStart was rewritten for the test" grep -q "^ExecStart=$KS_KEYSVCD " "$work/units/keysvcd.service"
check "systemd-analyze verify accepts both units" \
	systemd-analyze verify "$work/units/keysvcd.socket" "$work/units/keysvcd.service"

cred=$(sed -n 's/^#define KS_PIN_CREDENTIAL "\(.*\)"$/\1/p' "$KS_SOURCE_ROOT/keysvc/config.h")
sock=$(sed -n 's/^#define KS_DEFAULT_SOCKET "\(.*\)"$/\1/p' "$KS_SOURCE_ROOT/keysvc/config.h")
check "LoadCredential= names the credential keysvcd reads ($cred)" \
	grep -qx "LoadCredential=$cred:/etc/keysvc/pin" "$units/keysvcd.service"
check "ListenStream= is the default socket ($sock)" grep -qx "ListenStream=$sock" "$units/keysvcd.socket"
check "Type=notify" grep -qx "Type=notify" "$units/keysvcd.service"
reload_checks_first() {
	sed -n 's/^ExecReload=//p' "$units/keysvcd.service" | tr '\n' '|' |
		grep -qx '/usr/sbin/keysvcd -c /etc/keysvc/keysvcd.json --check-reload|/bin/kill -HUP $MAINPID|'
}
check "ExecReload= checks the file (--check-reload) before SIGHUP" reload_checks_first
check "the socket is group keysvc, 0660" \
	sh -c "grep -qx 'SocketGroup=keysvc' '$units/keysvcd.socket' && grep -qx 'SocketMode=0660' '$units/keysvcd.socket'"
for d in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateNetwork=yes \
	RestrictAddressFamilies=AF_UNIX CapabilityBoundingSet= SystemCallFilter=@system-service \
	MemoryDenyWriteExecute=yes LockPersonality=yes StateDirectory=keysvc \
	User=keysvc LimitCORE=0; do
	check "sandboxing: $d" grep -qx "$d" "$units/keysvcd.service"
done
# keysvcd's exit codes (proto/exitcode.h, in keysvcd --help): 6, a PIN the token
# rejected, is final; 5, a token absent at start, is retried.
check "RestartPreventExitStatus= stops 2 3 4 6 (not 5)" grep -qx "RestartPreventExitStatus=2 3 4 6" "$units/keysvcd.service"
check "keysvcd --help has the same exit codes" \
	sh -c "'$KS_KEYSVCD' --help | grep -q '^   2  usage' && '$KS_KEYSVCD' --help | grep -q '^   3  configuration refused' &&
	       '$KS_KEYSVCD' --help | grep -q '^   4  PIN file' && '$KS_KEYSVCD' --help | grep -q '^   5  token unavailable' &&
	       '$KS_KEYSVCD' --help | grep -q '^   6  PIN rejected'"
check "a start limit stops socket re-activation (StartLimitBurst=)" grep -qx "StartLimitBurst=5" "$units/keysvcd.service"
# The exposure score is informative only: it changes between systemd versions.
systemd-analyze security --offline=yes "$work/units/keysvcd.service" 2>/dev/null | tail -n 1 | sed 's/^/# /' || true

echo "1..$((passed + failed))"
echo "units: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
