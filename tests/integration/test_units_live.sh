#!/bin/bash
# keysvcd.socket and keysvcd.service as shipped, run by a live systemd.
#
# systemd is booted (tests/integration/nsboot.sh) as PID 1 of private namespaces (PID, mount, UTS, IPC,
# cgroup) over the host's own file system, with /etc, /usr and /var behind
# throw-away overlays and a fresh /run and cgroup2 tree, so nothing outside
# the test's scratch directory is written. In there: a "keysvc" system user,
# keysvcd installed as /usr/sbin/keysvcd, the units (keysvc/systemd/*.in
# filled in for the prefix /usr) in /usr/lib/systemd/system,
# the PIN in /etc/keysvc/pin (root 0600), a SoftHSM token in /var/lib/keysvc.
# The only change to the units is a drop-in with DefaultDependencies=no (and
# SOFTHSM2_CONF), since this systemd boots no sysinit.target.
#
# Checked: socket activation (the socket exists first, a client starts the
# service), Type=notify, the PIN as a LoadCredential= credential, User=, the
# sandbox as the kernel shows it, the socket's owner and mode kept, keys and
# CSRs through the socket, the audit log in LogsDirectory=, peers refused by
# the socket's mode and by the policy, reload, restart after a crash, stop
# and re-activation, RemoveOnStop=; and a rejected PIN: the token sees it
# once however many clients knock (keysvcd's marker in StateDirectory=, the
# service's start limit stopping the socket), counted by tests/faultp11 in
# front of SoftHSM (KS_FAULTP11_COUNT: one line per C_Login).
#
# Needs root, unshare/nsenter (util-linux), overlayfs and systemd; skipped
# (exit 77) without them, and for sanitizer builds (the sandbox's syscall
# filter stops the sanitizers' runtime, not keysvcd).
set -u

if [ "${1:-}" = --pid1 ]; then
	# ---- inside the namespaces, as PID 1 --------------------------------
	set -e
	. "$KS_SOURCE_ROOT/tests/integration/nsboot.sh"
	ns_pid1_mounts "$2"

	# In the overlay only; a host that has them already keeps its own.
	id keysvc >/dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin keysvc
	id ksmember >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin ksmember
	usermod -a -G keysvc ksmember
	install -m 0755 "$KS_KEYSVCD" /usr/sbin/keysvcd
	install -d -m 0755 /usr/local/libexec/keysvc-live
	# The build tree's layout (clients/cli/, clients/lib/), so the CLI's RUNPATH $ORIGIN/../lib finds libkeysvc.
	install -D -m 0755 "$KS_KEYSVC_CLI" /usr/local/libexec/keysvc-live/cli/keysvc
	install -D -m 0755 "$KS_BUILD_ROOT/clients/lib/libkeysvc.so.1" /usr/local/libexec/keysvc-live/lib/libkeysvc.so.1
	install -m 0755 "$KS_FAULTP11" /usr/local/libexec/keysvc-live/faultp11.so
	# The templates filled in for the prefix /usr, as the Debian package has them.
	for u in keysvcd.service keysvcd.socket; do
		sed 's#@sbindir@#/usr/sbin#g; s#@bindir@#/usr/bin#g; s#@sysconfdir@#/etc#g; s#@localstatedir@#/var#g; s#@runstatedir@#/run#g; s#@docdir@#/usr/share/doc/keysvcd#g' \
			"$KS_SOURCE_ROOT/keysvc/systemd/$u.in" >"/usr/lib/systemd/system/$u"
	done
	mkdir -p /run/systemd/system/keysvcd.service.d /run/systemd/system/keysvcd.socket.d
	printf '[Unit]\nDefaultDependencies=no\n[Service]\nEnvironment=SOFTHSM2_CONF=/var/lib/keysvc/token/softhsm2.conf\n%s\n%s\n' \
		"Environment=KS_FAULTP11_TARGET=${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}" \
		"Environment=KS_FAULTP11_COUNT=/var/lib/keysvc/c_login.count" \
		>/run/systemd/system/keysvcd.service.d/live-test.conf
	printf '[Unit]\nDefaultDependencies=no\n' >/run/systemd/system/keysvcd.socket.d/live-test.conf
	printf '[Unit]\nDescription=keysvc live test\nDefaultDependencies=no\nWants=keysvcd.socket systemd-journald.socket\n' \
		>/run/systemd/system/keysvc-live.target

	mkdir -p /var/lib/keysvc /etc/keysvc
	bash "$KS_SOURCE_ROOT/softhsm-conf/setup-token.sh" /var/lib/keysvc/token keysvc >/dev/null
	install -m 0600 /var/lib/keysvc/token/pin /etc/keysvc/pin
	rm /var/lib/keysvc/token/pin
	chown -R keysvc:keysvc /var/lib/keysvc
	chmod 0700 /var/lib/keysvc
	# No pin_file: the PIN can only come from the credential.
	cat >/etc/keysvc/keysvcd.json <<JSON
{
  "module": "/usr/local/libexec/keysvc-live/faultp11.so",
  "token": {"label": "keysvc"},
  "audit_log": "/var/log/keysvc/audit.log",
  "policy": [{"uid": 0, "keys": ["*"], "ops": ["key.generate", "key.list", "key.public", "csr.create", "sign"]}]
}
JSON
	chmod 0644 /etc/keysvc/keysvcd.json
	exec env -i container=keysvc-live PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		/usr/lib/systemd/systemd --system --unit=keysvc-live.target --log-target=journal \
		--log-level=debug --show-status=no
fi

# ---- outside: set up, boot, check -----------------------------------------
work=$(mktemp -d)
chmod 0755 "$work"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
. "$KS_SOURCE_ROOT/tests/integration/nsboot.sh"
skip() { echo "1..0 # SKIP $*"; rm -rf "$work"; exit 77; }

[ "${KS_B_SANITIZE:-none}" = none ] || skip "sanitizer build (b_sanitize=$KS_B_SANITIZE)"
[ -n "${KS_FAULTP11:-}" ] || skip "KS_FAULTP11 is not set"
ns_require
trap ns_cleanup EXIT
ns_boot "$0" --pid1 "$work"

cli() { in_ns /usr/local/libexec/keysvc-live/cli/keysvc --socket /run/keysvc/keysvc.sock "$@"; }
# A line reaches journald, and its files, a moment after keysvcd wrote it
# (right after boot the files may not exist yet: "No journal files were
# found"): a check that a line is there waits for it, up to 5 s.
eventually() { local i; for i in $(seq 50); do "$@" && return 0; sleep 0.1; done; return 1; }
unit_log_has_now() { in_ns journalctl --no-pager -u keysvcd.service | grep -q "$@"; }
unit_log_has() { eventually unit_log_has_now "$@"; }
# unit_log_at PRIORITY PATTERN: keysvcd logged a line matching PATTERN at PRIORITY or above.
unit_log_at_now() { in_ns journalctl --no-pager -u keysvcd.service -p "$1" | grep -q -- "$2"; }
unit_log_at() { eventually unit_log_at_now "$@"; }
unit_log_lacks_at() { ! unit_log_at_now "$@"; }

check "systemd runs as PID 1 of the namespaces and reached keysvc-live.target" booted

check "keysvcd.socket is listening" is active "$(ctl is-active keysvcd.socket)"
check "keysvcd.service has not started before the first client" is inactive "$(ctl is-active keysvcd.service)"
sock_shape() { in_ns stat -c '%U:%G %a' "$1"; }
check "the socket is root:keysvc 0660 before keysvcd starts" is "root:keysvc 660" "$(sock_shape /run/keysvc/keysvc.sock)"

run_exit 0 "health:     ok" "the first client starts keysvcd and is answered (hello)" cli hello
check "keysvcd.service is active (Type=notify: READY=1 arrived)" is active "$(ctl is-active keysvcd.service)"
check "the STATUS= text keysvcd sent" is "serving /run/keysvc/keysvc.sock" "$(prop StatusText keysvcd.service)"
check "keysvcd says it took the socket from systemd" unit_log_has 'passed by systemd'
check "the socket is still root:keysvc 0660 with keysvcd running" \
	is "root:keysvc 660" "$(sock_shape /run/keysvc/keysvc.sock)"
check "/run/keysvc is still root 0755" is "root:root 755" "$(sock_shape /run/keysvc)"

main=$(prop MainPID keysvcd.service)
status_of() { in_ns cat "/proc/$main/status"; }
field() { status_of | sed -n "s/^$1:[[:space:]]*//p" | awk '{print $1}'; }
ks_uid=$(in_ns id -u keysvc)
check "keysvcd runs as user keysvc (uid $ks_uid)" is "$ks_uid" "$(field Uid)"
check "no capabilities (CapEff and CapBnd 0)" \
	is "0000000000000000 0000000000000000" "$(field CapEff) $(field CapBnd)"
check "NoNewPrivs is set" is 1 "$(field NoNewPrivs)"
check "a seccomp filter is in force (SystemCallFilter=)" is 2 "$(field Seccomp)"
check "the PIN came as the keysvc-pin credential (no pin_file configured)" \
	in_ns test -e "/proc/$main/root/run/credentials/keysvcd.service/keysvc-pin"
own_mount_ns() { local m; m=$(in_ns readlink "/proc/$main/ns/mnt") && [ -n "$m" ] && [ "$m" != "$(in_ns readlink /proc/1/ns/mnt)" ]; }
check "keysvcd has a mount namespace of its own (ProtectSystem=, PrivateTmp=)" own_mount_ns

run_exit 0 "BEGIN PUBLIC KEY" "keygen through the socket" cli keygen live
run_exit 0 "" "csr through the socket" cli csr live --subject CN=live.example --out "$work/live.csr"
check "the CSR's signature verifies" openssl req -in "$work/live.csr" -verify -noout
check "the audit log (LogsDirectory=) has the CSR" \
	in_ns grep -q '"op":"csr.create","key":"live","purpose":"csr","intent":[0-9]*,"outcome":"ok"' /var/log/keysvc/audit.log
pin=$(in_ns cat /etc/keysvc/pin)
journal_lacks() { ! in_ns journalctl --no-pager | grep -qF -- "$1"; }
check "the journal never shows the PIN" journal_lacks "$pin"

run_exit 7 "" "a user outside group keysvc cannot connect (socket mode)" as_user nobody \
	/usr/local/libexec/keysvc-live/cli/keysvc --socket /run/keysvc/keysvc.sock hello
run_exit 8 "denied" "a member of group keysvc without a policy grant is denied" as_user ksmember \
	/usr/local/libexec/keysvc-live/cli/keysvc --socket /run/keysvc/keysvc.sock list

check "systemctl reload" ctl reload keysvcd.service
check "after reload: active, same process" \
	is "active $main" "$(ctl is-active keysvcd.service) $(prop MainPID keysvcd.service)"
check "keysvcd told systemd it was reloading (RELOADING=1)" unit_log_has 'RELOADING=1'
# A broken file fails the reload visibly (ExecReload= runs keysvcd
# --check-reload first), its place in the journal at priority err; keysvcd
# goes on with the policy in force.
in_ns sh -c 'cp /etc/keysvc/keysvcd.json /etc/keysvc/keysvcd.json.good &&
	printf "{\n  \"module\": ,\n}\n" >/etc/keysvc/keysvcd.json'
reload_fails() { ! ctl reload keysvcd.service; }
check "systemctl reload of a broken file fails" reload_fails
check "the journal has the file's line and column at priority err" \
	unit_log_at err 'keysvcd.json:2:13: malformed JSON'
check "after the failed reload: active, same process" \
	is "active $main" "$(ctl is-active keysvcd.service) $(prop MainPID keysvcd.service)"
run_exit 0 "live" "the policy in force still serves" cli list
in_ns mv /etc/keysvc/keysvcd.json.good /etc/keysvc/keysvcd.json
check "systemctl reload of the good file again" ctl reload keysvcd.service

# Guarded: "kill -KILL 0" would hit this script's own process group.
[ "${main:-0}" -gt 1 ] && in_ns kill -KILL "$main"
restarted() { local p; p=$(prop MainPID keysvcd.service); [ "$p" != 0 ] && [ "$p" != "$main" ] && [ "$(ctl is-active keysvcd.service)" = active ]; }
check "killed with SIGKILL, keysvcd is restarted (Restart=on-failure)" wait_for 15 restarted
run_exit 0 "live" "the key is still there after the restart" cli list

check "systemctl stop keysvcd.service" ctl stop keysvcd.service
check "keysvcd told systemd it was stopping (STOPPING=1)" unit_log_has 'STOPPING=1'
check "the socket stays while keysvcd is stopped" in_ns test -S /run/keysvc/keysvc.sock
run_exit 0 "live" "the next client starts keysvcd again" cli list

check "the PIN guard's key is in StateDirectory=, keysvc's, 0600" \
	is "keysvc 600" "$(in_ns stat -c '%U %a' /var/lib/keysvc/pin-guard.key)"

# A PIN the token rejects: exit 6, and the token sees it once, whatever
# restarts keysvcd. Earlier starts are not to count against the start limit.
logins() { in_ns sh -c 'grep -c "^C_Login$" /var/lib/keysvc/c_login.count || true'; }
ctl reset-failed keysvcd.service keysvcd.socket >/dev/null 2>&1
before=$(logins)
in_ns sh -c 'printf "%s\n" 00000000wrong > /etc/keysvc/pin'
ctl restart keysvcd.service >/dev/null 2>&1
sleep 3
check "a rejected PIN: keysvcd exits 6" is 6 "$(prop ExecMainStatus keysvcd.service)"
not_restarted() { [ "$(prop NRestarts keysvcd.service)" = 0 ] && [ "$(ctl is-active keysvcd.service)" != active ]; }
check "... and is not restarted (RestartPreventExitStatus=)" not_restarted
check "... with a clear message" unit_log_has -i 'pin rejected'
check "... and records it in StateDirectory= (pin-rejected)" in_ns test -f /var/lib/keysvc/pin-rejected
marker_lacks_pin() { ! in_ns grep -q 00000000wrong /var/lib/keysvc/pin-rejected; }
check "... without the PIN in it" marker_lacks_pin
# Clients knock: each connection re-triggers keysvcd through the socket.
for _ in 1 2 3 4 5 6 7 8; do
	in_ns timeout 10 /usr/local/libexec/keysvc-live/cli/keysvc --socket /run/keysvc/keysvc.sock hello >/dev/null 2>&1
done
socket_gave_up() { [ "$(ctl is-active keysvcd.socket) $(prop Result keysvcd.socket)" = "failed service-start-limit-hit" ]; }
check "after the start limit the socket stops re-triggering (failed, service-start-limit-hit)" \
	wait_for 15 socket_gave_up
check "the restarts refused the PIN without presenting it" unit_log_has 'rejected this PIN before'
check "keysvcd's errors reach the journal at priority err (journalctl -p err)" \
	unit_log_at err 'rejected this PIN before'
check "... and its info lines stay below warning" unit_log_lacks_at warning 'keysvcd\[info\]'
check "the token saw the wrong PIN exactly once (C_Login through faultp11)" \
	is "$((before + 1))" "$(logins)"
run_exit 7 "" "with the socket failed, a client cannot connect" cli hello
check "... and the token still saw the wrong PIN once" is "$((before + 1))" "$(logins)"

in_ns sh -c 'printf "%s\n" "$1" > /etc/keysvc/pin' - "$pin"
ctl reset-failed keysvcd.service keysvcd.socket >/dev/null 2>&1
ctl start keysvcd.socket >/dev/null 2>&1
run_exit 0 "live" "with the PIN put back, a client starts keysvcd again" cli list
check "the replaced PIN was presented (one more C_Login)" is "$((before + 2))" "$(logins)"
check "... and the marker is gone" in_ns test ! -e /var/lib/keysvc/pin-rejected

check "systemctl stop keysvcd.socket keysvcd.service" ctl stop keysvcd.socket keysvcd.service
check "the socket file is gone (RemoveOnStop=)" in_ns test ! -e /run/keysvc/keysvc.sock

if [ "$failed" -ne 0 ]; then
	echo "# the namespaced journal:"
	in_ns journalctl --no-pager -o short-monotonic 2>&1 | grep -v 'systemd\[1\]: .*\(Got\|Changed\|Passing\|Sent message\|Received\)' | tail -n 80 | sed 's/^/#   /'
fi
echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
