#!/usr/bin/env bash
# bash completion (clients/completion/keysvc.bash), sourced into this bash
# and driven as bash drives it (COMP_WORDS, COMP_CWORD, the function
# `complete` names): commands, options read from each program's --help,
# option values, and key names from a running keysvcd.
#
# test_completion.sh KEYSVC_OPENVOX KEYSVC_UCL KEYSVC_OCI KEYSVC_CCE
set -uo pipefail

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-completion.XXXXXX")
chmod 0711 "$work"
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
trap 'ks_stop >/dev/null 2>&1; rm -rf "$work"' EXIT

# The built programs under their installed names, first on PATH.
mkdir "$work/bin"
for p in "$KS_KEYSVCD" "$KS_KEYSVC_CLI" "$@"; do ln -s "$p" "$work/bin/$(basename "$p")"; done
export PATH=$work/bin:$PATH
unset KEYSVC_SOCKET
. "$KS_SOURCE_ROOT/clients/completion/keysvc.bash"

# completes "WANT" WORDS...: completing the last of WORDS offers exactly WANT (sorted, blank separated).
completes() {
	local want=$1 fn got
	shift
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="$*" COMP_POINT=${#COMP_LINE}
	fn=$(complete -p "$1" 2>/dev/null | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
	[ -n "$fn" ] || { echo "no completion for $1"; return 1; }
	COMPREPLY=()
	"$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | xargs)
	[ "$got" = "$want" ] || { echo "completing '$*': got '$got', want '$want'"; return 1; }
}

check "keysvc: commands" completes "cert-get cert-put csr" keysvc c
check "keysvc: global options from --help" completes "--socket" keysvc --so
check "keysvc csr: its options from keysvc csr --help" completes "--subject" keysvc csr web --su
check "keysvc keygen --type: the key types" completes "ec-p256 ec-p384" keysvc keygen web --type ec
check "keysvc sign --alg: the algorithms" completes "rsa-pss-sha256 rsa-pss-sha384 rsa-pss-sha512" \
	keysvc sign web --alg rsa-pss
check "keysvc status --format" completes "prometheus" keysvc status --format p
check "keysvc --timeout takes a value: no command offered" completes "" keysvc --timeout ""
check "keysvcd: the --check-* options" completes "--check-config --check-reload --check-token" keysvcd --check-
check "keysvcd --config: files" completes "$work/bin/keysvcd" keysvcd --config "$work/bin/keysvcd"
check "keysvc-openvox: commands" completes "enroll" keysvc-openvox e
check "keysvc-openvox: options from its --help" completes "--ca-file --ca-fingerprint --ca-out" \
	keysvc-openvox enroll --ca-
check "keysvc-ucl: commands" completes "renew revoke" keysvc-ucl re
check "keysvc-oci: commands" completes "sign-request status" keysvc-oci s
check "keysvc-cce --component" completes "service-account-controller" keysvc-cce rotate --component s

# Key names from keysvcd, on the socket the command line names.
ks_start "$work/d" '[{"uid": '"$(id -u)"', "keys": ["*"], "ops": ["key.generate", "key.list"]}]'
ks_cli keygen web-1 >/dev/null && ks_cli keygen web-2 >/dev/null && ks_cli keygen db >/dev/null
check "keysvc pubkey: key names from keysvc list" completes "web-1 web-2" keysvc --socket "$KS_SOCKET" pubkey we
check "keysvc delete: every key" completes "db web-1 web-2" keysvc --socket "$KS_SOCKET" delete ""
check "keysvc pubkey NAME: nothing after the name" completes "" keysvc --socket "$KS_SOCKET" pubkey db ""
check "no keysvcd: no key names, no error" completes "" keysvc --socket "$work/nobody.sock" pubkey ""
ks_stop

echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
