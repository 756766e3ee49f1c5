#!/usr/bin/env bash
# Creates a private SoftHSM token for keysvc in DIR:
#   DIR/softhsm2.conf   SoftHSM configuration whose token directory is DIR/tokens
#   DIR/pin, DIR/so-pin random user and SO PINs (hex of 16 random bytes), mode 0600
#   DIR/tokens/         the initialised token, labelled LABEL (default: keysvc)
# Prints SOFTHSM2_CONF=DIR/softhsm2.conf as its last line: export it for
# keysvcd and any tool that should see this token.
#
# DIR must not exist, or be empty, or be a token directory this script made
# earlier with the same LABEL (then nothing is changed and the line is
# printed again). Never writes to the system token directory or
# ~/.config/softhsm2; no PIN is ever passed on a command line (ks-token-init
# reads them from the files).
#
# Environment: KS_TOKEN_INIT (path of ks-token-init; default: looked for in
# ./build/softhsm-conf, in a meson build directory next to this script, and
# installed: PREFIX/sbin when this script is PREFIX/share/keysvc/softhsm's),
# KS_SOFTHSM_MODULE (default /usr/lib/softhsm/libsofthsm2.so).
set -euo pipefail

prog=setup-token.sh
marker=.keysvc-token

usage() {
	echo "usage: $prog DIR [LABEL]   (--help for details)" >&2
	exit 2
}
die() {
	echo "$prog: $*" >&2
	exit 1
}

case ${1:-} in
-h | --help)
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
"" | -*) usage ;;
esac
[ $# -le 2 ] || usage

dir=$1
label=${2:-keysvc}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module=${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

if [ -z "$label" ] || [ ${#label} -gt 32 ]; then
	echo "$prog: a token label has 1 to 32 characters" >&2
	exit 2
fi
case $label in *[![:print:]]*) echo "$prog: the label must be printable" >&2; exit 2 ;; esac
case $dir in *$'\n'* | *$'\r'*) die "DIR must not contain line breaks" ;; esac

# The absolute, symlink-free path of DIR as it will be (its parent must exist).
parent=$(dirname -- "$dir")
[ -d "$parent" ] || die "$parent does not exist"
abs=$(cd -- "$parent" && pwd -P)/$(basename -- "$dir")
case $abs in //*) abs=${abs#/} ;; esac

# Never the system token store or the per-user SoftHSM configuration.
for forbidden in /var/lib/softhsm "${HOME:-/nonexistent}/.config/softhsm2" /etc/softhsm; do
	case $abs/ in "$forbidden"/*) die "refusing $abs: that is SoftHSM's own configuration or token store" ;; esac
done

conf_line="SOFTHSM2_CONF=$abs/softhsm2.conf"

if [ -L "$dir" ]; then
	die "$dir is a symbolic link; give the real directory"
fi
if [ -e "$dir" ] && [ -n "$(ls -A -- "$dir" 2>/dev/null)" ]; then
	# Only a token directory of ours, untouched, is accepted again; anything else might be someone's.
	[ -d "$dir" ] && [ -O "$dir" ] && [ -f "$dir/$marker" ] && [ ! -L "$dir/$marker" ] ||
		die "$dir exists and is not empty (and is not a keysvc token directory); choose a new directory"
	for f in softhsm2.conf pin so-pin; do
		[ -f "$dir/$f" ] && [ ! -L "$dir/$f" ] && [ -O "$dir/$f" ] ||
			die "$dir looks like a keysvc token directory but $f is missing or not yours"
	done
	[ -d "$dir/tokens" ] && [ ! -L "$dir/tokens" ] || die "$dir/tokens is missing"
	[ "$(stat -c %a -- "$dir")" = 700 ] || die "$dir is not mode 0700; not reusing it"
	grep -qxF "directories.tokendir = $abs/tokens" "$dir/softhsm2.conf" ||
		die "$dir/softhsm2.conf does not point at $abs/tokens; not reusing it"
	had=$(sed -n 's/^label=//p' "$dir/$marker")
	[ "$had" = "$label" ] || die "$dir holds the token \"$had\", not \"$label\""
	echo "$prog: $dir already holds the keysvc token \"$label\"; left as it is" >&2
	echo "$conf_line"
	exit 0
fi
if [ -e "$dir" ]; then
	[ -d "$dir" ] && [ -O "$dir" ] || die "$dir exists and is not an empty directory of yours"
fi

[ -r "$module" ] || die "SoftHSM module $module not found (apt-get install softhsm2)"

init=${KS_TOKEN_INIT:-}
if [ -z "$init" ]; then
	# A build tree's, then the installed one (sbindir, from datadir/keysvc/softhsm).
	for cand in "$PWD/build/softhsm-conf/ks-token-init" "$here/ks-token-init" \
		"$here/../build/softhsm-conf/ks-token-init" "$here/../builddir/softhsm-conf/ks-token-init" \
		"$here/../../../sbin/ks-token-init"; do
		if [ -f "$cand" ] && [ -x "$cand" ]; then
			init=$cand
			break
		fi
	done
fi
[ -n "$init" ] && [ -x "$init" ] || die "ks-token-init not found; build it (ninja -C build softhsm-conf/ks-token-init) or set KS_TOKEN_INIT"

umask 077
mkdir -p -- "$dir/tokens"
chmod 0700 -- "$dir" "$dir/tokens"

# Bash substitution rather than sed: the path may hold characters sed treats specially.
tokendir=$abs/tokens
while IFS= read -r line || [ -n "$line" ]; do
	printf '%s\n' "${line//@TOKENDIR@/"$tokendir"}"
done <"$here/softhsm2.conf.in" >"$dir/softhsm2.conf"

# 16 random bytes as 32 hex digits each, without a newline: written straight to 0600 files.
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/pin"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/so-pin"
chmod 0600 -- "$dir/pin" "$dir/so-pin" "$dir/softhsm2.conf"
[ "$(wc -c <"$dir/pin")" -eq 32 ] && [ "$(wc -c <"$dir/so-pin")" -eq 32 ] || die "could not read /dev/urandom"

SOFTHSM2_CONF=$abs/softhsm2.conf "$init" --module "$module" --label "$label" \
	--pin-file "$dir/pin" --so-pin-file "$dir/so-pin" >&2 ||
	die "ks-token-init failed; $dir is left for inspection (remove it before trying again)"
printf 'label=%s\n' "$label" >"$dir/$marker"

echo "$conf_line"
