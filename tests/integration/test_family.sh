#!/usr/bin/env bash
# One command-line family: every keysvc program ends its --help (and each
# keysvc subcommand's) with the one exit-code table exactly as
# proto/exitcode prints it, prints "PROGRAM keysvc VERSION" for --version,
# takes --json where it prints a result (checked by running it), takes
# --timeout in seconds and names an unknown command in its error.
#
# test_family.sh EXIT_TABLE VERSION KEYSVC_OPENVOX KEYSVC_UCL KEYSVC_OCI KEYSVC_CCE
set -uo pipefail

exit_table=$1 version=$2 ovx=$3 ucl=$4 oci=$5 cce=$6

. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-family.XXXXXX")
chmod 0711 "$work"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
cleanup() {
	ks_stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# The reference: what proto/exitcode prints, from its heading on.
table_of() { sed -n '/^Exit codes (all keysvc programs):$/,$p'; }
"$exit_table" | table_of >"$work/table"
[ "$(wc -l <"$work/table")" -eq 26 ] && ok "the table has a heading and 25 codes" ||
	fail "the table: $(cat "$work/table")"

# has_table DESCRIPTION COMMAND...: exits 0, and its stdout ends with the whole table.
has_table() {
	local what=$1 st=0
	shift
	"$@" >"$work/help" 2>"$work/help.err" || st=$?
	if [ "$st" -eq 0 ] && table_of <"$work/help" | cmp -s - "$work/table"; then
		ok "$what: exit 0, ends with the exit-code table"
	else
		fail "$what: exit $st, or the table differs"
		table_of <"$work/help" | diff "$work/table" - | sed 's/^/#   /'
		sed 's/^/#   /' "$work/help.err"
	fi
}

declare -A programs=(
	[keysvcd]=$KS_KEYSVCD [keysvc]=$KS_KEYSVC_CLI [ks-token-init]=$KS_TOKEN_INIT
	[keysvc-openvox]=$ovx [keysvc-ucl]=$ucl [keysvc-oci]=$oci [keysvc-cce]=$cce
)
for name in "${!programs[@]}"; do
	p=${programs[$name]}
	has_table "$name --help" "$p" --help
	got=$("$p" --version 2>&1)
	st=$?
	[ "$st" -eq 0 ] && [ "$got" = "$name keysvc $version" ] && ok "$name --version: $got" ||
		fail "$name --version: exit $st, '$got', expected '$name keysvc $version'"
done

for cmd in hello keygen list pubkey csr sign delete cert-put cert-get status verify audit-verify track; do
	has_table "keysvc $cmd --help" "$KS_KEYSVC_CLI" "$cmd" --help
done

# An unknown command is named in the error, with the usage exit code.
unknown() { # unknown PROGRAM ARGS...
	local name=$1 st=0
	shift
	"$@" frobnicate >"$work/out" 2>&1 || st=$?
	[ "$st" -eq 2 ] && grep -q "unknown command.*frobnicate" "$work/out" &&
		ok "$name: an unknown command is named (exit 2)" ||
		{ fail "$name frobnicate: exit $st"; sed 's/^/#   /' "$work/out"; }
}
unknown keysvc "$KS_KEYSVC_CLI"
unknown keysvc-openvox "$ovx" --server https://127.0.0.1:1 --certname a.example.org --cert "$work/c.pem"
unknown keysvc-ucl "$ucl" --state "$work/state.json"
unknown keysvc-oci "$oci"
unknown keysvc-cce "$cce"

# --timeout is seconds everywhere; more than an hour (a value in milliseconds) is refused.
run_exit 2 "expected 0..3600 seconds" "keysvc --timeout 30000 (milliseconds) is refused" \
	"$KS_KEYSVC_CLI" --socket "$work/none.sock" --timeout 30000 hello
for name in keysvc-openvox keysvc-ucl keysvc-oci keysvc-cce; do
	run_exit 2 "--timeout: 1..3600 seconds" "$name --timeout 30000 is refused" \
		"${programs[$name]}" --timeout 30000 renew
	grep -q -- "--timeout S" <("${programs[$name]}" --help) && ok "$name --help: --timeout in seconds" ||
		fail "$name --help does not say seconds"
done
grep -q -- "--timeout SECONDS" <("$KS_KEYSVC_CLI" --help) && ok "keysvc --help: --timeout in seconds" ||
	fail "keysvc --help does not say seconds"

# --json is offered by every program and subcommand that prints a result.
for name in keysvc keysvc-openvox keysvc-ucl keysvc-oci keysvc-cce; do
	grep -q -- "--json" <("${programs[$name]}" --help) && ok "$name --help offers --json" ||
		fail "$name --help lacks --json"
done
for cmd in status verify track audit-verify; do
	grep -q -- "--json" <("$KS_KEYSVC_CLI" "$cmd" --help) && ok "keysvc $cmd --help offers --json" ||
		fail "keysvc $cmd --help lacks --json"
done

# is_json FILE PYTHON-CONDITION: FILE is one JSON object d for which the condition holds.
is_json() {
	python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if isinstance(d, dict) and ($2) else 1)" "$1"
}
# json_run CODE DESCRIPTION CONDITION COMMAND...: exits CODE, its stdout is one JSON object matching CONDITION.
json_run() {
	local want=$1 what=$2 cond=$3 st=0
	shift 3
	"$@" >"$work/json" 2>"$work/json.err" || st=$?
	if [ "$st" -eq "$want" ] && is_json "$work/json" "$cond" 2>/dev/null; then
		ok "$what (exit $st, JSON)"
	else
		fail "$what: exit $st, expected $want and JSON with $cond"
		sed 's/^/#   stdout: /' "$work/json"
		sed 's/^/#   stderr: /' "$work/json.err"
	fi
}

me=$(id -u)
policy="[{\"uid\": $me, \"keys\": [\"*\"], \"ops\": [\"key.generate\", \"key.list\", \"key.public\", \"key.delete\", \"csr.create\", \"sign\", \"cert.put\", \"cert.get\"]}]"
ks_start "$work/d" "$policy"

json_run 0 "keysvc --json hello" "d['health'] == 'ok'" ks_cli --json hello
json_run 0 "keysvc --timeout 0.5 --json keygen (seconds, a fraction)" "'public_key' in d or 'pem' in d or len(d) > 0" \
	ks_cli --timeout 0.5 --json keygen fam --purpose csr,sign
json_run 0 "keysvc --json pubkey" "len(d) > 0" ks_cli --json pubkey fam
json_run 14 "keysvc --json pubkey of a missing key: exit 14 (no such key)" "d['error'] == 'no-such-key'" \
	ks_cli --json pubkey nokey
json_run 15 "keysvc --json keygen of an existing name: exit 15" "d['error'] == 'exists'" ks_cli --json keygen fam
printf 'abc' >"$work/data"
json_run 0 "keysvc --json sign" "len(d) > 0" ks_cli --json sign fam --alg ecdsa-sha256 --in "$work/data"
json_run 0 "keysvc --json status" "'certificates' in d" ks_cli --json status --inventory "$work/inv-empty"
json_run 0 "keysvc audit-verify --json: intact" "d['intact'] is True and d['records'] > 0 and d['files'] == 1" \
	"$KS_KEYSVC_CLI" audit-verify --json "$KS_DIR/audit.log"
json_run 0 "keysvc --json audit-verify: intact" "d['intact'] is True" \
	"$KS_KEYSVC_CLI" --json audit-verify "$KS_DIR/audit.log"
sed '1s/"seq":[0-9]*/"seq":999/' "$KS_DIR/audit.log" >"$work/edited.log"
json_run 1 "keysvc audit-verify --json: an edited record" \
	"d['intact'] is False and d['line'] >= 1 and d['file'].endswith('edited.log') and d['reason']" \
	"$KS_KEYSVC_CLI" audit-verify --json "$work/edited.log"
json_run 2 "keysvc audit-verify --json: an unreadable file" "d['error'] == 'input'" \
	"$KS_KEYSVC_CLI" audit-verify --json "$work/missing.log"

# The renewal clients: one object at the end, without a CA (nothing is due, or nothing to renew).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/k.pem" \
	-out "$work/c.pem" -days 365 -subj /CN=a.example.org 2>/dev/null
not_after=$(date -u -d "$(openssl x509 -in "$work/c.pem" -noout -enddate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ)
json_run 10 "keysvc-openvox renew --when-due --json: not due" \
	"d['program'] == 'keysvc-openvox' and d['command'] == 'renew' and d['outcome'] == 'not-due' and d['exit_code'] == 10 and d['certificate'] == '$work/c.pem' and d['key'] == 'a.example.org' and d['not_after'] == '$not_after' and d['error'] is None" \
	"$ovx" renew --json --when-due --server https://127.0.0.1:1 --certname a.example.org --cert "$work/c.pem" \
	--ca-file "$work/c.pem" --socket "$KS_SOCKET" --inventory "$work/inv"
check "keysvc-openvox --json: progress went to stderr" grep -q "not due" "$work/json.err"
json_run 19 "keysvc-openvox enroll --json: no CA there (exit 19), a failure is one object too" \
	"d['command'] == 'enroll' and d['outcome'] == 'failed' and d['exit_code'] == 19 and 'cannot connect' in d['error']" \
	"$ovx" enroll --json --server https://127.0.0.1:1 --certname a.example.org --cert "$work/c.pem" \
	--ca-file "$work/c.pem" --socket "$KS_SOCKET" --inventory "$work/inv"
json_run 2 "keysvc-ucl renew --json: no state (pair first)" \
	"d['program'] == 'keysvc-ucl' and d['command'] == 'renew' and d['outcome'] == 'failed' and d['exit_code'] == 2 and 'pair first' in d['error']" \
	"$ucl" renew --json --state "$work/state.json" --socket "$KS_SOCKET" --inventory "$work/inv"
json_run 2 "keysvc-ucl revoke --json" "d['command'] == 'revoke' and d['outcome'] == 'failed'" \
	"$ucl" revoke --json --state "$work/state.json" --socket "$KS_SOCKET" --inventory "$work/inv"
json_run 2 "keysvc-ucl pair --json" "d['command'] == 'pair' and d['outcome'] == 'failed' and d['certificate'] == '$work/u.pem'" \
	"$ucl" pair --json --state "$work/state.json" --socket "$KS_SOCKET" --inventory "$work/inv" \
	--connector-url https://127.0.0.1:1/graphql --token-file "$work/missing-token" --ca-file "$work/c.pem" \
	--cert "$work/u.pem" --chain "$work/u-chain.pem" --ca-out "$work/u-ca.pem"
json_run 0 "keysvc-oci status --json" "d['phase'] == 'current'" "$oci" status --json --cert "$work/c.pem"
json_run 2 "keysvc-oci renew --json: a failure is one object" "d['command'] == 'renew' and d['exit_code'] == 2" \
	"$oci" renew --json

echo "1..$((passed + failed))"
echo "family: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
