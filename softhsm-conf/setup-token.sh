#!/usr/bin/env bash
# Creates a private SoftHSM token for keysvc in DIR:
#   DIR/softhsm2.conf   SoftHSM configuration whose token directory is DIR/tokens
#   DIR/pin, DIR/so-pin random user and SO PINs, mode 0600
#   DIR/tokens/         the initialised token, labelled LABEL (default: keysvc)
# Prints SOFTHSM2_CONF=DIR/softhsm2.conf as its last line: export it for
# keysvcd and any tool that should see this token. Never writes to the
# system token directory or ~/.config/softhsm2; no PIN is ever passed on a
# command line (ks-token-init reads them from the files).
#
# Environment: KS_TOKEN_INIT (path of ks-token-init; default: found in a
# meson build directory next to this script), KS_SOFTHSM_MODULE (default
# /usr/lib/softhsm/libsofthsm2.so).
set -euo pipefail

usage() {
	echo "usage: setup-token.sh DIR [LABEL]" >&2
	exit 2
}
case ${1:-} in -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; "") usage ;; esac
[ $# -le 2 ] || usage

dir=$1
label=${2:-keysvc}
here=$(cd "$(dirname "$0")" && pwd)
module=${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

if [ ${#label} -gt 32 ]; then
	echo "setup-token.sh: a token label has at most 32 characters" >&2
	exit 2
fi
[ -r "$module" ] || { echo "setup-token.sh: SoftHSM module $module not found (apt-get install softhsm2)" >&2; exit 1; }

init=${KS_TOKEN_INIT:-}
if [ -z "$init" ]; then
	for cand in "$here/../build/softhsm-conf/ks-token-init" "$here/../builddir/softhsm-conf/ks-token-init"; do
		[ -x "$cand" ] && init=$cand && break
	done
fi
[ -n "$init" ] && [ -x "$init" ] || { echo "setup-token.sh: ks-token-init not found; build first or set KS_TOKEN_INIT" >&2; exit 1; }

# Only a new or empty directory: never reuse or clobber someone's token.
if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
	echo "setup-token.sh: $dir exists and is not empty; choose a new directory" >&2
	exit 1
fi

umask 077
mkdir -p "$dir/tokens"
chmod 0700 "$dir" "$dir/tokens"
dir=$(cd "$dir" && pwd)

sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.in" >"$dir/softhsm2.conf"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/pin"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/so-pin"
chmod 0600 "$dir/pin" "$dir/so-pin" "$dir/softhsm2.conf"

SOFTHSM2_CONF=$dir/softhsm2.conf "$init" --module "$module" --label "$label" \
	--pin-file "$dir/pin" --so-pin-file "$dir/so-pin" >&2

echo "SOFTHSM2_CONF=$dir/softhsm2.conf"
