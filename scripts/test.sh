#!/usr/bin/env bash
# Builds keysvc and runs everything CI runs, in three parts:
#   1. the whole test suite (unit, SoftHSM, daemon, fuzz corpus replay),
#      built with -Werror, in BUILD_DIR;
#   2. the whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer
#      (leaks included), built in BUILD_DIR/sanitize-build;
#   3. each libFuzzer target for a bounded time (tests/fuzz/run.sh), built
#      with clang in BUILD_DIR/fuzz-build.
# Installs what it needs first (scripts/deps.sh).
#
#   bash scripts/test.sh [BUILD_DIR]        default: build/
#
# Environment:
#   KEYSVC_QUICK=1         part 1 only (a quick local run)
#   KEYSVC_FUZZ_SECONDS=N  seconds per fuzz target (default 30)
#
# The last line says `keysvc: N passed, N failed, N skipped`, counting the
# test programs of parts 1 and 2 and the fuzz targets of part 3.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
quick=${KEYSVC_QUICK:-0}

bash "$top/scripts/deps.sh"

total_passed=0 total_failed=0 total_skipped=0
status=0
started=$SECONDS

# Counts one meson test log into the totals and prints its line.
count_log() {
	local label=$1 log=$2 passed failed skipped
	passed=$(grep -c '"result": "OK"' "$log" || true)
	failed=$(grep -Ec '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" || true)
	skipped=$(grep -c '"result": "SKIP"' "$log" || true)
	echo "keysvc $label: $passed passed, $failed failed, $skipped skipped"
	total_passed=$((total_passed + passed))
	total_failed=$((total_failed + failed))
	total_skipped=$((total_skipped + skipped))
}

# ---- 1. the normal suite --------------------------------------------------
t0=$SECONDS
if [ -f "$build/build.ninja" ]; then
	meson configure "$build" -Dwerror=true >/dev/null
else
	meson setup "$build" "$top" -Dwerror=true >/dev/null
fi
ninja -C "$build"
rm -f "$build/meson-logs/testlog.json"
meson test -C "$build" --print-errorlogs --num-processes 2 || status=1
[ -f "$build/meson-logs/testlog.json" ] && count_log normal "$build/meson-logs/testlog.json"
times=("normal $((SECONDS - t0))s")

if [ "$quick" != 1 ]; then
	# ---- 2. the same suite under ASan + UBSan -------------------------
	# Not -Werror: with -fsanitize gcc warns about code it has instrumented
	# (-Warray-bounds, -Wformat-overflow false positives); part 1 holds the
	# warning bar. b_lundef=false: shared modules (the provider, faultp11)
	# take the sanitizer runtime from the program that loads them.
	t0=$SECONDS
	san=$build/sanitize-build
	if [ ! -f "$san/build.ninja" ]; then
		meson setup "$san" "$top" -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	fi
	ninja -C "$san"
	rm -f "$san"/meson-logs/sanitizer.* "$san/meson-logs/testlog-sanitize.json"
	san_status=0
	meson test -C "$san" --setup sanitize --print-errorlogs --num-processes 2 || san_status=1
	# A report from a background process (keysvcd, a fake server) need not
	# fail the test that started it; every ASan/LSan report is in a file
	# (tests/meson.build), UBSan's are on the processes' stderr.
	reports=$(find "$san/meson-logs" -maxdepth 1 -name 'sanitizer.*' -type f | sort)
	if [ -n "$reports" ]; then
		san_status=1
		for f in $reports; do
			echo "==== sanitizer report $f" >&2
			cat "$f" >&2
		done
	fi
	if grep -q "runtime error:" "$san/meson-logs/testlog-sanitize.txt" 2>/dev/null; then
		san_status=1
		echo "==== UndefinedBehaviorSanitizer reports in $san/meson-logs/testlog-sanitize.txt:" >&2
		grep -A8 "runtime error:" "$san/meson-logs/testlog-sanitize.txt" >&2
	fi
	if [ -f "$san/meson-logs/testlog-sanitize.json" ]; then
		count_log sanitize "$san/meson-logs/testlog-sanitize.json"
	fi
	if [ "$san_status" -ne 0 ]; then
		status=1
		# Reports outside any failed test still fail the run: count them as one failure.
		[ -n "$reports" ] && total_failed=$((total_failed + 1)) &&
			echo "keysvc sanitize: $(echo "$reports" | wc -l) sanitizer report(s) (above)"
	fi
	times+=("sanitize $((SECONDS - t0))s")

	# ---- 3. bounded fuzzing ---------------------------------------------
	t0=$SECONDS
	fuzz_log=$build/fuzz-summary.txt
	fuzz_status=0
	bash "$top/tests/fuzz/run.sh" "$build/fuzz-build" | tee "$fuzz_log" || fuzz_status=1
	fuzz_ok=$(grep -c '^fuzz: [a-z]*: ok' "$fuzz_log" || true)
	fuzz_failed=$(grep -c '^fuzz: [a-z]*: FAILED' "$fuzz_log" || true)
	if [ "$fuzz_status" -ne 0 ] && [ "$fuzz_failed" -eq 0 ]; then
		fuzz_failed=1       # the build or the script itself failed
	fi
	[ "$fuzz_failed" -ne 0 ] && status=1
	echo "keysvc fuzz: $fuzz_ok passed, $fuzz_failed failed, 0 skipped"
	total_passed=$((total_passed + fuzz_ok))
	total_failed=$((total_failed + fuzz_failed))
	times+=("fuzz $((SECONDS - t0))s")
fi

echo "keysvc: time ${times[*]}, total $((SECONDS - started))s"
# meson's own summary is not a line CI tools read; say it plainly too.
echo "keysvc: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit $status
