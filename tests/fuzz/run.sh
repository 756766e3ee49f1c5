#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, coverage for all of
# the daemon's code, AddressSanitizer and UndefinedBehaviorSanitizer, then
# runs each target for a bounded time starting from the seed corpus and the
# regression inputs. Fails on the first crash, leak, sanitizer report,
# broken invariant or timeout, and prints the input that caused it.
#
#   bash tests/fuzz/run.sh [BUILD_DIR]        default: build/fuzz-build
#
# Environment:
#   KEYSVC_FUZZ_SECONDS  seconds per target (default 30)
#   KEYSVC_FUZZ_TARGETS  which targets (default "frame json csr dispatch sigform")
#   KEYSVC_FUZZ_KEEP     a directory to keep the grown corpus and logs in
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build/fuzz-build}
seconds=${KEYSVC_FUZZ_SECONDS:-30}
targets=${KEYSVC_FUZZ_TARGETS:-frame json csr dispatch sigform}

# -fsanitize=fuzzer-no-link gives every object file (dispatcher, token
# layer, CSR code, ...) the coverage feedback libFuzzer steers by; the
# fuzz_* executables add -fsanitize=fuzzer themselves (tests/fuzz/meson.build).
# b_lundef=false: clang does not link the sanitizer runtime into shared
# modules, which resolve it from the executable that loads them.
# Not -Werror: the gcc build of scripts/test.sh is the warning gate; a
# clang-only warning elsewhere should not stop the fuzzing.
opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=enabled
      -Dc_args=-fsanitize=fuzzer-no-link -Dwerror=false)
if [ -f "$build/build.ninja" ]; then
	meson configure "$build" "${opts[@]}" >/dev/null 2>&1
else
	CC=clang meson setup "$build" "$top" "${opts[@]}" >/dev/null
fi
# (-Dfuzz=enabled already refuses to configure a build directory made with gcc.)
exes=()
for t in $targets; do
	exes+=("tests/fuzz/fuzz_$t")
done
ninja -C "$build" "${exes[@]}" softhsm-conf/ks-token-init

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-fuzz.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/tmp"

# Any sanitizer report is fatal, with a symbolised stack.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:symbolize=1
export TMPDIR=$work/tmp          # fuzz_dispatch's SoftHSM token goes here
export LC_ALL=C

status=0
summary=()
for t in $targets; do
	corpus=$work/$t/corpus
	mkdir -p "$corpus"
	dict=()
	[ -f "$top/tests/fuzz/$t.dict" ] && dict=(-dict="$top/tests/fuzz/$t.dict")
	echo "fuzz: $t for ${seconds}s"
	# The first directory collects new inputs; the checked-in ones are only read.
	# Per-input leak checks cost fuzz_dispatch two thirds of its speed (SoftHSM
	# keeps allocations across calls, so LeakSanitizer runs after nearly every
	# input); it fuzzes without them and then replays all it found with them.
	leaks=1
	[ "$t" = dispatch ] && leaks=0
	rc=0
	"$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=2048 \
		-max_len=70000 -print_final_stats=1 -detect_leaks=$leaks \
		-artifact_prefix="$work/$t/" "${dict[@]}" \
		"$corpus" "$top/tests/fuzz/corpus/$t" "$top/tests/fuzz/regressions/$t" \
		>"$work/$t.log" 2>&1 || rc=$?
	if [ "$rc" -eq 0 ] && [ "$leaks" -eq 0 ]; then
		"$build/tests/fuzz/fuzz_$t" -runs=0 -detect_leaks=1 -timeout=60 \
			-artifact_prefix="$work/$t/" "$corpus" >>"$work/$t.log" 2>&1 || rc=$?
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
	cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -1 || true)
	if [ "$rc" -ne 0 ]; then
		status=1
		summary+=("$t: FAILED (exit $rc)")
		echo "fuzz: $t FAILED (exit $rc); the end of its log:" >&2
		tail -n 80 "$work/$t.log" >&2
		for a in "$work/$t"/crash-* "$work/$t"/leak-* "$work/$t"/timeout-* "$work/$t"/oom-*; do
			[ -f "$a" ] || continue
			mkdir -p "$build/fuzz-artifacts"
			cp "$a" "$build/fuzz-artifacts/$t-$(basename "$a")"
			echo "fuzz: input kept as $build/fuzz-artifacts/$t-$(basename "$a") (base64 below);" \
			     "add it to tests/fuzz/regressions/$t/ once fixed" >&2
			head -c 4096 "$a" | base64 >&2
		done
	else
		summary+=("$t: ok, ${runs:-?} inputs, ${cov:-cov: ?}")
	fi
done
if [ -n "${KEYSVC_FUZZ_KEEP:-}" ]; then
	mkdir -p "$KEYSVC_FUZZ_KEEP"
	cp -r "$work"/* "$KEYSVC_FUZZ_KEEP"/
fi
for line in "${summary[@]}"; do
	echo "fuzz: $line"
done
exit $status
