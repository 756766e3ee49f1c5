# bash completion for keysvc, keysvcd and the renewal clients
# (keysvc-openvox, keysvc-ucl, keysvc-oci, keysvc-cce). Installed once per
# program name in bash-completion's completions directory, where it is
# loaded on first use of that name.
#
# Options come from the program's own --help, so they follow it; key
# names (keysvc pubkey NAME, ...) from `keysvc list` on the socket given
# by --socket or $KEYSVC_SOCKET, with a short timeout: nothing when
# keysvcd does not answer.

# Files, through bash-completion's _filedir when it is loaded.
_keysvc_files()
{
	if declare -F _filedir >/dev/null; then
		_filedir
	else
		local IFS=$'\n'
		COMPREPLY+=($(compgen -f -- "$1"))
	fi
}

# Every --option of "PROGRAM [COMMAND] --help".
_keysvc_help_opts()
{
	"$@" --help 2>/dev/null | grep -oE -- '(^|[[:space:][,(|])--[a-z0-9][a-z0-9-]*[a-z0-9]' |
		grep -oE -- '--[a-z0-9-]+' | sort -u
}

# The keys keysvcd lets this user list, on the socket of the command line.
_keysvc_key_names()
{
	local prog=$1 i socket=()
	for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
		[[ ${COMP_WORDS[i]} == --socket ]] && socket=(--socket "${COMP_WORDS[i + 1]}")
	done
	"$prog" "${socket[@]}" --timeout 2 list 2>/dev/null | awk 'NR > 1 { print $1 }'
}

# Values of an option that takes one; returns 1 when @prev takes none.
_keysvc_option_value()
{
	local prev=$1 cur=$2
	case $prev in
	--type | --key-type) COMPREPLY=($(compgen -W "rsa-2048 rsa-3072 rsa-4096 ec-p256 ec-p384" -- "$cur")) ;;
	--alg) COMPREPLY=($(compgen -W "rsa-pkcs1-sha256 rsa-pkcs1-sha384 rsa-pkcs1-sha512 rsa-pss-sha256
		rsa-pss-sha384 rsa-pss-sha512 ecdsa-sha256 ecdsa-sha384" -- "$cur")) ;;
	--digest) COMPREPLY=($(compgen -W "sha256 sha384 sha512" -- "$cur")) ;;
	--format) COMPREPLY=($(compgen -W "text json prometheus" -- "$cur")) ;;
	--color) COMPREPLY=($(compgen -W "auto always never" -- "$cur")) ;;
	--component) COMPREPLY=($(compgen -W "all service-account-controller custom" -- "$cur")) ;;
	--method) COMPREPLY=($(compgen -W "GET HEAD POST PUT PATCH DELETE" -- "$cur")) ;;
	--user) COMPREPLY=($(compgen -u -- "$cur")) ;;
	--inventory | --support-dir) COMPREPLY=($(compgen -d -- "$cur")) ;;
	-c | --config | --pin-file | --cert | --ca-file | --ca-out | --crl | --crl-out | --in | --out | \
	--chain | --issuer-ca | --state | --token-file | --body-file | --tls-ca-file | --token-zip | \
	--custom-ca | --custom-cert | --custom-key | --textfile | --socket)
		_keysvc_files "$cur" ;;
	--subject | --dns | --ip | --uri | --email | --key-usage | --eku | --attr | --digest-hex | \
	--timeout | --server | --certname | --key | --key-id | --url | --endpoint | --node-id | \
	--connector-url | --key-base | --renew-share | --lock-wait | --waitforcert | --maxwaitforcert | \
	--renewal-interval | --rotate-key | --ca-fingerprint | --dns-alt-name | --project-id | \
	--cluster-id | --expiration-hours | --poll-interval | --max-wait | --client | --forget | \
	--new-key | --renew-after | --lifetime | --renew-path | --bundle-endpoint | --bundle-path | \
	--backoff | --backoff-max | --rps-fqdn | --rps-url | --register-retry-wait | --ready-wait | \
	--check-retry-wait | --state-command | --connect-limit | --session-max-age | --now | \
	--infrastructure-id | --region | --content-type | --date)
		COMPREPLY=() ;;
	*) return 1 ;;
	esac
	return 0
}

_keysvc()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	local prog=${COMP_WORDS[0]} cmd= i n_args=0
	local commands="hello keygen list pubkey csr sign delete cert-put cert-get status verify
		audit-verify track"

	COMPREPLY=()
	_keysvc_option_value "$prev" "$cur" && return 0
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--socket | --timeout) ((i++)) ;;
		-*) ;;
		*) if [[ -z $cmd ]]; then cmd=${COMP_WORDS[i]}; else ((n_args++)); fi ;;
		esac
	done
	if [[ -z $cmd ]]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$(_keysvc_help_opts "$prog")" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		fi
		return 0
	fi
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_keysvc_help_opts "$prog" "$cmd") --json --help" -- "$cur"))
		return 0
	fi
	case $cmd in
	pubkey | csr | sign | delete | cert-get | cert-put)
		if ((n_args == 0)); then
			COMPREPLY=($(compgen -W "$(_keysvc_key_names "$prog")" -- "$cur"))
		elif [[ $cmd == cert-put ]]; then
			_keysvc_files "$cur"
		fi ;;
	audit-verify) _keysvc_files "$cur" ;;
	esac
	return 0
}

# keysvcd and the renewal clients: COMMAND (if the program has commands), then options.
_keysvc_client()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	local prog=${COMP_WORDS[0]} commands
	case ${prog##*/} in
	keysvc-openvox) commands="enroll renew" ;;
	keysvc-ucl) commands="pair renew revoke" ;;
	keysvc-oci) commands="sign-request status renew rebootstrap" ;;
	keysvc-cce) commands="rotate" ;;
	*) commands= ;;
	esac

	COMPREPLY=()
	_keysvc_option_value "$prev" "$cur" && return 0
	if ((COMP_CWORD == 1)) && [[ -n $commands && $cur != -* ]]; then
		COMPREPLY=($(compgen -W "$commands" -- "$cur"))
	elif [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_keysvc_help_opts "$prog") --help" -- "$cur"))
	fi
	return 0
}

complete -F _keysvc keysvc
complete -F _keysvc_client keysvcd keysvc-openvox keysvc-ucl keysvc-oci keysvc-cce
