#!/usr/bin/env bash
# The manual pages (docs/man/): each formats without a warning (groff -ww,
# man --warnings), and each names every option its program's --help lists
# (keysvc: also every subcommand's --help), so that the two cannot drift.
#
# test_man.sh KEYSVC_OPENVOX KEYSVC_UCL KEYSVC_OCI KEYSVC_CCE
set -uo pipefail

ovx=$1 ucl=$2 oci=$3 cce=$4
man_dir=$KS_SOURCE_ROOT/docs/man

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-man.XXXXXX")
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
trap 'rm -rf "$work"' EXIT

command -v groff >/dev/null || { echo "1..0 # SKIP groff is not installed (scripts/deps.sh: groff-base)"; exit 77; }

pages=(keysvcd.8 keysvcd.json.5 keysvc.1 keysvc-openvox.8 keysvc-ucl.8 keysvc-oci.8 keysvc-cce.1
	libkeysvc.3 keysvc-provider.7)
quiet() { local out; out=$("$@" 2>&1 >/dev/null); [ -z "$out" ] || { echo "$out"; return 1; }; }
for p in "${pages[@]}"; do
	check "$p: groff -man -ww finds nothing to warn about" quiet groff -man -ww -z "$man_dir/$p"
	if command -v man >/dev/null; then
		check "$p: man --warnings finds nothing to warn about" quiet man --warnings -l "$man_dir/$p"
	fi
	check "$p: has NAME, DESCRIPTION and SEE ALSO" \
		grep -q '^\.SH NAME' "$man_dir/$p" -e '^\.SH DESCRIPTION' -e '^\.SH "\?SEE ALSO'
done
check "docs/man/meson.build installs every page" \
	bash -c 'for p in "$@"; do grep -qF "'"'"'$p'"'"'" "'"$man_dir"'/meson.build" || { echo "$p"; exit 1; }; done' _ "${pages[@]}"

# The page's text with troff's escaped hyphens and fonts undone.
plain() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\e/\\/g' "$man_dir/$1"; }
# names_options PAGE HELP_FILE: every --option (and -x short option) of HELP_FILE is in PAGE.
names_options() {
	local page=$1 help=$2 opt missing=
	plain "$page" >"$work/page"
	for opt in $(grep -oE -- '(^|[[:space:][,(|])--[a-z0-9][a-z0-9-]*[a-z0-9]([^a-z0-9*-]|$)' "$help" | grep -oE -- '--[a-z0-9-]*[a-z0-9]' | sort -u); do
		grep -qE -- "(^|[^a-z0-9-])$opt([^a-z0-9-]|\$)" "$work/page" || missing+=" $opt"
	done
	for opt in $(grep -oE -- '^ +-[a-zA-Z],' "$help" | tr -d ' ,' | sort -u); do
		grep -qE -- "(^|[^a-z0-9-])$opt([^a-z0-9-]|\$)" "$work/page" || missing+=" $opt"
	done
	[ -z "$missing" ] || { echo "$page lacks:$missing"; return 1; }
}
help_of() { "$@" --help 2>&1 | sed '/^Exit codes/,$d'; }
help_of "$KS_KEYSVCD" >"$work/keysvcd.help"
check "keysvcd(8) names every option of keysvcd --help" names_options keysvcd.8 "$work/keysvcd.help"
help_of "$KS_KEYSVC_CLI" >"$work/keysvc.help"
for c in hello keygen list pubkey csr sign delete cert-put cert-get status verify audit-verify track; do
	help_of "$KS_KEYSVC_CLI" "$c" >>"$work/keysvc.help"
	check "keysvc(1) names the command $c" grep -qE "^\.B(I|R)? \"?$(printf '%s' "$c" | sed 's/-/\\\\-/g')" "$man_dir/keysvc.1"
done
check "keysvc(1) names every option of keysvc --help and of each command's" \
	names_options keysvc.1 "$work/keysvc.help"
for prog in "$ovx:keysvc-openvox.8" "$ucl:keysvc-ucl.8" "$oci:keysvc-oci.8" "$cce:keysvc-cce.1"; do
	help_of "${prog%%:*}" >"$work/client.help"
	check "${prog#*:} names every option of $(basename "${prog%%:*}") --help" \
		names_options "${prog#*:}" "$work/client.help"
done
# The whole exit-code table, as every --help prints it, is in keysvc(1).
"$KS_KEYSVCD" --help | sed -n '/^Exit codes/,$p' | tail -n +2 >"$work/table"
table_in_page() {
	local code text
	plain keysvc.1 >"$work/page"
	while read -r code text; do
		grep -qxF ".B $code" "$work/page" && grep -qxF -- "$text" "$work/page" || { echo "missing: $code $text"; return 1; }
	done <"$work/table"
}
check "keysvc(1) has the whole exit-code table" table_in_page

echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
