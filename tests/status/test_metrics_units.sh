#!/usr/bin/env bash
# keysvc-metrics.service and .timer as meson generated them for this
# prefix: systemd-analyze accepts them, the service is sandboxed to an
# exposure of at most 2.0, its paths are the prefix's, and its ExecStart=
# (run here with the built keysvc and a scratch textfile directory) writes
# the metrics file, keysvc_up included, with keysvcd unreachable.
# Skipped (exit 77) without systemd-analyze.
#
# test_metrics_units.sh BUILT_UNIT_DIR PREFIX
set -uo pipefail

built=$1 prefix=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-metrics.XXXXXX")
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
trap 'rm -rf "$work"' EXIT
command -v systemd-analyze >/dev/null || { echo "1..0 # SKIP systemd-analyze not installed"; exit 77; }

service=$built/keysvc-metrics.service timer=$built/keysvc-metrics.timer
check "no @placeholder@ left" bash -c "! grep -n '@[a-z]*@' '$service' '$timer'"
check "ExecStart= runs the prefix's keysvc" grep -q "^ExecStart=$prefix/bin/keysvc status --format prometheus --textfile " "$service"
mkdir "$work/units"
sed "s#^ExecStart=$prefix/bin/keysvc #ExecStart=$KS_KEYSVC_CLI #" "$service" >"$work/units/keysvc-metrics.service"
cp "$timer" "$work/units/"
check "systemd-analyze verify accepts both" \
	systemd-analyze verify --man=no "$work/units/keysvc-metrics.service" "$work/units/keysvc-metrics.timer"
score() {
	local s
	s=$(systemd-analyze security --offline=yes "$work/units/keysvc-metrics.service" 2>/dev/null |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	echo "exposure $s"
	[ -n "$s" ] && awk -v s="$s" 'BEGIN { exit !(s <= 2.0) }'
}
check "systemd-analyze security: exposure at most 2.0" score

# What the timer runs, with the unit's own command line.
cmd=$(sed -n 's/^ExecStart=//p' "$service")
dir=$work/textfile
mkdir "$dir" "$work/inventory"
# systemd's ${VAR} expansion and the built program in place of the installed one.
line=${cmd//'${KEYSVC_METRICS_DIR}'/$dir}
line=${line/#"$prefix/bin/keysvc"/$KS_KEYSVC_CLI}
run_cmd() {
	# shellcheck disable=SC2086 # a command line, split on blanks as systemd splits it
	KEYSVC_SOCKET=$work/nobody.sock KEYSVC_INVENTORY=$work/inventory $line --config "$work/no-certs.json" >/dev/null
}
printf '{}\n' >"$work/no-certs.json"
run_exit 0 "" "ExecStart= exits 0 with keysvcd unreachable and no certificates" run_cmd
check "it wrote the textfile with keysvc_up 0" grep -qx "keysvc_up 0" "$dir/keysvc.prom"
check "mode 0644, for node_exporter" bash -c "[ \$(stat -c %a '$dir/keysvc.prom') = 644 ]"

echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
