#!/usr/bin/env bash
# Journal priorities for every program: under systemd, stdout and stderr
# are the journal's stream ($JOURNAL_STREAM names its device and inode),
# and a line starting "<N>" is filed at syslog priority N. Each program is
# run with its stderr (and stdout) in a file and JOURNAL_STREAM set to that
# file's device and inode, as systemd would set it for its stream: errors
# must come as <3>, warnings <4>, progress <6>. With JOURNAL_STREAM unset,
# or naming another file, no prefix.
#
# test_journal.sh KEYSVC_OPENVOX KEYSVC_UCL KEYSVC_OCI KEYSVC_CCE
set -uo pipefail

ovx=$1 ucl=$2 oci=$3 cce=$4

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-journal.XXXXXX")
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
trap 'rm -rf "$work"' EXIT

# as_journal COMMAND...: COMMAND with both streams in $work/journal, the journal's stream.
as_journal() {
	: >"$work/journal"
	JOURNAL_STREAM=$(stat -c '%d:%i' "$work/journal") "$@" >>"$work/journal" 2>&1
	return 0
}
# logged PRIORITY TEXT: a line of $work/journal is "<PRIORITY>" then TEXT.
logged() { grep -qxF -- "<$1>$2" "$work/journal" || { sed 's/^/#   /' "$work/journal"; return 1; }; }
starts() { grep -q -- "^<$1>$2" "$work/journal" || { sed 's/^/#   /' "$work/journal"; return 1; }; }

as_journal "$KS_KEYSVCD" -c "$work/no-such.json"
check "keysvcd: an error at priority 3" starts 3 "keysvcd\[err\]: config $work/no-such.json: "
as_journal "$KS_KEYSVC_CLI" --socket "$work/no.sock" hello
check "keysvc: an error at priority 3" starts 3 "keysvc: hello: connect: cannot reach keysvcd at $work/no.sock"
as_journal "$KS_KEYSVC_CLI" status --format bogus
check "keysvc status: a usage error at priority 3" logged 3 "keysvc: status: usage: --format bogus: text, json or prometheus"
as_journal "$ovx" enroll --server https://127.0.0.1:1 --certname x
check "keysvc-openvox: an error at priority 3" logged 3 "keysvc-openvox: --cert PATH is required"
as_journal "$ucl" renew --state "$work/none/state"
check "keysvc-ucl: an error at priority 3" starts 3 "keysvc-ucl: lock file $work/none/state.lock: "
as_journal "$oci" status --cert "$work/none.pem"
check "keysvc-oci: an error at priority 3" starts 3 "keysvc-oci: the current certificate $work/none.pem: "
as_journal "$cce" rotate
check "keysvc-cce: an error at priority 3" starts 3 "keysvc-cce: --endpoint https://HOST\[:PORT\] is required"
# Warnings: keysvc-cce warns about --insecure before it fails to connect; a
# renewal client that cannot update the inventory warns after its error.
printf 'token\n' >"$work/token" && chmod 0600 "$work/token"
as_journal "$cce" rotate --endpoint https://127.0.0.1:1 --project-id p --cluster-id c --component all \
	--insecure --token-file "$work/token" --timeout 1
check "keysvc-cce: a warning at priority 4" starts 4 "keysvc-cce: warning: --insecure"
check "keysvc-cce: the connection error at priority 3" starts 3 "keysvc-cce: POST https://127.0.0.1:1/"
as_journal "$ovx" enroll --server https://127.0.0.1:1 --certname x --cert "$work/x.pem" \
	--ca-file "$work/ca.pem" --inventory "$work/none/inventory"
check "keysvc-openvox: the error at priority 3" starts 3 "keysvc-openvox: GET https://127.0.0.1:1/"
check "keysvc-openvox: \"warning: ...\" at priority 4" starts 4 \
	"keysvc-openvox: warning: the inventory ($work/none/inventory) is not updated"

# Not the journal: no prefix.
"$KS_KEYSVC_CLI" --socket "$work/no.sock" hello >"$work/plain" 2>&1
check "no JOURNAL_STREAM: no prefix" grep -q "^keysvc: hello: connect" "$work/plain"
: >"$work/other"
JOURNAL_STREAM=$(stat -c '%d:%i' "$work/other") "$ovx" enroll --server https://127.0.0.1:1 --certname x \
	>"$work/plain" 2>&1
check "JOURNAL_STREAM of another file: no prefix" grep -qx "keysvc-openvox: --cert PATH is required" "$work/plain"

echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
