#!/bin/bash
# The systemd units as meson generates them (keysvc/systemd/*.in and
# clients/renew/*/systemd/*.in, in the build tree): `systemd-analyze verify`
# accepts them (with ExecStart= pointed at the built programs, since the
# installed ones need not exist here), their paths follow the prefix, they
# agree with the programs' code (the credential name keysvcd reads, the
# default socket path, Type=notify, the inventory's directory), each unit
# writes only its own directories, every user and group a unit names is
# one the packages' sysusers.d files make, and `systemd-analyze security`
# scores every service at or below its bound (keysvcd 0.6, the renewal
# clients 2.0; keysvc-metrics.service: the metrics-units test).
# Skipped (exit 77) without systemd-analyze.
set -u
units=$KS_BUILD_ROOT/keysvc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
is() { [ "$1" = "$2" ] && return 0; printf "expected:\n%s\ngot:\n%s\n" "$1" "$2"; return 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze not installed"
	exit 77
fi
clients=(openvox ucl oci)
client_unit() { echo "$KS_BUILD_ROOT/clients/renew/$1/keysvc-$1-renew.$2"; }

# Every path comes from the prefix (KS_BINDIR, KS_SBINDIR, KS_SYSCONFDIR:
# meson's, as the build was configured).
check "keysvcd's ExecStart= is the configured sbindir's" \
	grep -qx "ExecStart=$KS_SBINDIR/keysvcd -c $KS_SYSCONFDIR/keysvc/keysvcd.json" "$units/keysvcd.service"
for c in "${clients[@]}"; do
	check "keysvc-$c-renew.service's ExecStart= is the configured bindir's" \
		grep -q "^ExecStart=$KS_BINDIR/keysvc-$c renew --when-due " "$(client_unit "$c" service)"
	check "keysvc-$c-renew.service reads $KS_SYSCONFDIR/keysvc/$c.env" \
		grep -qx "EnvironmentFile=$KS_SYSCONFDIR/keysvc/$c.env" "$(client_unit "$c" service)"
done
no_placeholder() { ! grep -n '@[a-z]*@' "$units"/keysvcd.service "$units"/keysvcd.socket "$KS_BUILD_ROOT"/clients/renew/*/keysvc-*-renew.*; }
check "no @placeholder@ is left in the generated units" no_placeholder

mkdir "$work/units"
sed "s#^\(Exec[A-Za-z]*\)=$KS_SBINDIR/keysvcd #\1=$KS_KEYSVCD #" "$units/keysvcd.service" >"$work/units/keysvcd.service"
cp "$units/keysvcd.socket" "$work/units/keysvcd.socket"
check "the service's ExecStart was rewritten for the test" grep -q "^ExecStart=$KS_KEYSVCD " "$work/units/keysvcd.service"
for c in "${clients[@]}"; do
	sed "s#^ExecStart=$KS_BINDIR/keysvc-$c #ExecStart=$KS_BUILD_ROOT/clients/renew/$c/keysvc-$c #" \
		"$(client_unit "$c" service)" >"$work/units/keysvc-$c-renew.service"
	cp "$(client_unit "$c" timer)" "$work/units/keysvc-$c-renew.timer"
done
# --man=no: the man pages of Documentation= are installed with the package, not here.
check "systemd-analyze verify accepts every unit" \
	systemd-analyze verify --man=no "$work"/units/*

cred=$(sed -n 's/^#define KS_PIN_CREDENTIAL "\(.*\)"$/\1/p' "$KS_SOURCE_ROOT/keysvc/config.h")
sock=$(sed -n 's/^#define KS_DEFAULT_SOCKET "\(.*\)"$/\1/p' "$KS_SOURCE_ROOT/keysvc/config.h")
check "LoadCredential= names the credential keysvcd reads ($cred)" \
	grep -qx "LoadCredential=$cred:$KS_SYSCONFDIR/keysvc/pin" "$units/keysvcd.service"
check "ListenStream= is the default socket ($sock)" grep -qx "ListenStream=$sock" "$units/keysvcd.socket"
check "Type=notify" grep -qx "Type=notify" "$units/keysvcd.service"
reload_checks_first() {
	sed -n 's/^ExecReload=//p' "$units/keysvcd.service" | tr '\n' '|' |
		grep -qx "$KS_SBINDIR/keysvcd -c $KS_SYSCONFDIR/keysvc/keysvcd.json --check-reload|/bin/kill -HUP \$MAINPID|"
}
check "ExecReload= checks the file (--check-reload) before SIGHUP" reload_checks_first
check "the socket starts only once the PIN is in place (ConditionPathExists=)" \
	grep -qx "ConditionPathExists=$KS_SYSCONFDIR/keysvc/pin" "$units/keysvcd.socket"
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
# The exposure scores, each at or below its bound (systemd 252's scale;
# keysvcd's is what it scored when the bound was set).
score() { systemd-analyze security --offline=yes "$1" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'; }
at_most() { # at_most BOUND UNIT
	local s
	s=$(score "$2")
	echo "exposure $s, bound $1"
	[ -n "$s" ] && awk -v s="$s" -v b="$1" 'BEGIN { exit !(s <= b) }'
}
check "systemd-analyze security: keysvcd.service at most 0.6" at_most 0.6 "$work/units/keysvcd.service"
for c in "${clients[@]}"; do
	check "systemd-analyze security: keysvc-$c-renew.service at most 2.0" at_most 2.0 "$work/units/keysvc-$c-renew.service"
done

# The file system layout: each unit writes only its own directories.
inv=$(sed -n 's/^#define KS_INV_DEFAULT_DIR "\(.*\)"$/\1/p' "$KS_SOURCE_ROOT/clients/renew/common/inventory.h")
check "the inventory's default directory ($inv) is outside keysvcd's StateDirectory=" \
	sh -c "case '$inv' in /var/lib/keysvc/*) exit 1 ;; esac"
writable() { # writable UNIT: the directories the unit may write, one a line
	sed -n 's/^StateDirectory=/\/var\/lib\//p; s/^LogsDirectory=/\/var\/log\//p; s/^ReadWritePaths=-\{0,1\}//p' "$1" | tr ' ' '\n' | sort
}
for c in "${clients[@]}"; do
	u=$(client_unit "$c" service)
	check "keysvc-$c-renew.service writes only /var/lib/keysvc-$c and the inventory" \
		is "$(printf '%s\n' "$inv" "/var/lib/keysvc-$c" | sort)" "$(writable "$u")"
	check "keysvc-$c-renew.service runs as keysvc-$c, in groups keysvc (socket) and keysvc-inventory" \
		sh -c "grep -qx 'User=keysvc-$c' '$u' && grep -qx 'SupplementaryGroups=keysvc keysvc-inventory' '$u'"
	check "keysvc-$c-renew.service: ProtectSystem=strict" grep -qx "ProtectSystem=strict" "$u"
done
check "keysvcd.service writes only /var/lib/keysvc, /var/log/keysvc (and SoftHSM's token directory)" \
	is "$(printf '%s\n' /var/lib/keysvc /var/lib/softhsm/tokens /var/log/keysvc | sort)" "$(writable "$units/keysvcd.service")"
# tmpfiles.d and sysusers.d agree with the units.
tmpf=$KS_SOURCE_ROOT/clients/renew/systemd/keysvc-clients.tmpfiles
sysu=$KS_SOURCE_ROOT/clients/renew/systemd/keysvc-clients.sysusers
check "tmpfiles.d: the inventory is root:keysvc-inventory 0775" grep -qx "d $inv 0775 root keysvc-inventory -" "$tmpf"
for c in "${clients[@]}"; do
	check "tmpfiles.d: /var/lib/keysvc-$c is keysvc-$c's" grep -qx "d /var/lib/keysvc-$c 0755 keysvc-$c keysvc-$c -" "$tmpf"
	check "sysusers.d: keysvc-$c, in groups keysvc and keysvc-inventory" \
		sh -c "grep -q '^u keysvc-$c ' '$sysu' && grep -qx 'm keysvc-$c keysvc' '$sysu' && grep -qx 'm keysvc-$c keysvc-inventory' '$sysu'"
done
metrics=$KS_BUILD_ROOT/clients/status/keysvc-metrics.service
check "keysvc-metrics.service writes only /var/lib/keysvc-metrics" \
	is /var/lib/keysvc-metrics "$(writable "$metrics")"
check "keysvc-metrics.service runs as keysvc-metrics, in group keysvc (socket)" \
	sh -c "grep -qx 'User=keysvc-metrics' '$metrics' && grep -qx 'SupplementaryGroups=keysvc' '$metrics'"
check "keysvc-metrics.service writes its textfile into its StateDirectory=" \
	sh -c "grep -qx 'StateDirectory=keysvc-metrics' '$metrics' &&
	       grep -qx 'Environment=KEYSVC_METRICS_DIR=/var/lib/keysvc-metrics' '$metrics'"
check "tmpfiles.d: /var/lib/keysvc-metrics is keysvc-metrics's, 0755 (node_exporter reads it)" \
	grep -qx "d /var/lib/keysvc-metrics 0755 keysvc-metrics keysvc-metrics -" "$tmpf"
check "sysusers.d: keysvc-metrics, in group keysvc" \
	sh -c "grep -q '^u keysvc-metrics ' '$sysu' && grep -qx 'm keysvc-metrics keysvc' '$sysu'"
# Every account a unit names (User=, Group=, SupplementaryGroups=, the
# socket's) is made by the packages: a unit naming another (a user some
# other package may or may not make) fails to start where it is missing.
made_accounts() { # root, and the users ("u") and groups ("u", "g") the sysusers.d files make
	{ echo root; sed -n 's/^[ug] \([^ ]*\) .*/\1/p' "$KS_SOURCE_ROOT/keysvc/systemd/keysvcd.sysusers" "$sysu"; } | sort -u
}
named_accounts() { # named_accounts UNIT
	sed -n 's/^\(User\|Group\|SupplementaryGroups\|SocketUser\|SocketGroup\)=//p' "$1" | tr ' ' '\n' | sed '/^$/d' | sort -u
}
accounts_made() { # accounts_made UNIT
	local missing
	missing=$(comm -23 <(named_accounts "$1") <(made_accounts))
	[ -z "$missing" ] || { echo "not made by sysusers.d:" $missing; return 1; }
}
for u in "$units/keysvcd.service" "$units/keysvcd.socket" "$metrics" \
	"$(client_unit openvox service)" "$(client_unit ucl service)" "$(client_unit oci service)"; do
	check "${u##*/}: every user and group it names is made by sysusers.d" accounts_made "$u"
done
check "tmpfiles.d: /var/lib/keysvc is keysvc's, 0700 (as StateDirectoryMode=)" \
	grep -qx "d /var/lib/keysvc 0700 keysvc keysvc -" "$KS_SOURCE_ROOT/keysvc/systemd/keysvcd.tmpfiles"
if command -v systemd-sysusers >/dev/null 2>&1; then
	check "systemd-sysusers accepts both sysusers.d files (dry run in a scratch root)" \
		sh -c "mkdir -p '$work/root/etc' && systemd-sysusers --root='$work/root' '$KS_SOURCE_ROOT/keysvc/systemd/keysvcd.sysusers' '$sysu' >/dev/null 2>&1 &&
		       grep -q '^keysvc-inventory:.*keysvc-oci' '$work/root/etc/group'"
fi

echo "1..$((passed + failed))"
echo "units: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
