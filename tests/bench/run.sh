#!/usr/bin/env bash
# Runs the sign benchmark (bench_sign) outside meson, with a header naming
# the machine and the versions, so that its Markdown output can go into
# BENCHMARKS.md as is.
#
#   tests/bench/run.sh [BUILD_DIR] [ROUNDS]     (default: build, 1 run)
#
# ROUNDS > 1 runs the whole benchmark that many times in a row (the numbers
# of a busy machine differ from run to run; report each). Environment
# variables of bench_sign (KS_BENCH_SECONDS, KS_BENCH_ROUNDS, KS_BENCH_WAYS,
# KS_BENCH_SESSIONS, ...) are passed through; see tests/bench/bench_sign.c.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
runs=${2:-1}
[ -x "$build/tests/bench/bench_sign" ] || { echo "run.sh: build first: meson setup $build && ninja -C $build" >&2; exit 1; }
ninja -C "$build" tests/bench/bench_sign keysvc/keysvcd softhsm-conf/ks-token-init >/dev/null

export KS_SOFTHSM_MODULE=${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
export KS_SETUP_TOKEN=$src/softhsm-conf/setup-token.sh
export KS_TOKEN_INIT=$build/softhsm-conf/ks-token-init
export KS_KEYSVCD=$build/keysvc/keysvcd
export KS_P11KIT_CLIENT=${KS_P11KIT_CLIENT:-$(pkg-config --variable=p11_module_path p11-kit-1)/p11-kit-client.so}
export LC_ALL=C

for i in $(seq 1 "$runs"); do
	echo "## Run $i of $runs, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1);" \
	     "$(. /etc/os-release && echo "$PRETTY_NAME"); kernel $(uname -r);" \
	     "load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
	echo "Versions: OpenSSL $(openssl version | cut -d' ' -f2), SoftHSM $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null)," \
	     "p11-kit $(dpkg-query -W -f='${Version}' p11-kit 2>/dev/null), keysvc $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?')" \
	     "$(git -C "$src" diff --quiet HEAD 2>/dev/null || echo '(with uncommitted changes)'), buildtype $(meson introspect --buildoptions "$build" 2>/dev/null | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))' 2>/dev/null || echo '?')."
	echo
	"$build/tests/bench/bench_sign"
	echo
done
