#!/usr/bin/env bash
# Builds keysvc with warnings as errors and runs the whole test suite
# (unit, SoftHSM and daemon suites). Installs what it needs first.
#   bash scripts/test.sh [BUILD_DIR]        default: build/
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}

bash "$top/scripts/deps.sh"

if [ -f "$build/build.ninja" ]; then
	meson configure "$build" -Dwerror=true >/dev/null
else
	meson setup "$build" "$top" -Dwerror=true >/dev/null
fi
ninja -C "$build"

status=0
meson test -C "$build" --print-errorlogs --num-processes 2 || status=$?

# meson's own summary is not a line CI tools read; say it plainly too.
log=$build/meson-logs/testlog.json
if [ -f "$log" ]; then
	passed=$(grep -c '"result": "OK"' "$log" || true)
	failed=$(grep -Ec '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" || true)
	skipped=$(grep -c '"result": "SKIP"' "$log" || true)
	echo "keysvc: $passed passed, $failed failed, $skipped skipped"
fi
exit $status
