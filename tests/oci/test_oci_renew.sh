#!/usr/bin/env bash
# keysvc-oci status and renew end to end: keysvcd on a private SoftHSM
# token, fake-oci (tests/oci) on 127.0.0.1 checking every request's OCI
# signature with the token key's public key, and every way the answer can
# go wrong. Where a renewal fails, the installed certificate must be
# unchanged byte for byte and the failure recorded for the backoff.
#
# Arguments: the fake-oci and keysvc-oci programs.
set -uo pipefail

fake=$1
oci=$2
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-oci.XXXXXX")
chmod 0711 "$work"
cleanup() {
	ks_fake_stop
	ks_stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

export OPENSSL_MODULES=$KS_PROVIDER_DIR
me=$(id -u)
policy='[{"uid": '"$me"', "keys": ["node*"], "ops": ["key.generate", "key.delete", "key.list", "key.public", "csr.create", "sign"]},
         {"uid": '"$me"', "keys": ["nosign"], "ops": ["key.generate", "key.public", "csr.create"]}]'
ks_start "$work/d" "$policy"
# What keysvc-oci needs and no more: CSRs and OCI request signatures.
ks_cli keygen node1 --type rsa-2048 --purpose csr,http-signature >/dev/null || ks_die "keygen"
ks_cli pubkey node1 --out "$work/node1.pub" >/dev/null || ks_die "pubkey"
ks_cli keygen nosign --type rsa-2048 >/dev/null || ks_die "keygen nosign"

ca=$work/ca
certs=$work/certs
mkdir -p "$certs"
ks_cli csr node1 --subject "CN=rover-node-1,O=Example Rover,C=US" --dns node1.example.org --ip 192.0.2.7 \
	--out "$work/node1.csr" >/dev/null || ks_die "csr"
# Current certificates of several ages, issued by the fake OCI CA.
"$fake" --dir "$ca" --issue "$work/node1.csr" --out "$work/young.pem" --age-days 1 || ks_die "issue"
"$fake" --dir "$ca" --issue "$work/node1.csr" --out "$work/due.pem" --age-days 31 || ks_die "issue"
"$fake" --dir "$ca" --issue "$work/node1.csr" --out "$work/old.pem" --age-days 61 || ks_die "issue"
"$fake" --dir "$ca" --issue "$work/node1.csr" --out "$work/long.pem" --age-days 70 --days 365 || ks_die "issue"

# ---- status ----
run_exit 0 "phase:        current" "status of a 1-day-old certificate" "$oci" status --cert "$work/young.pem"
run_exit 11 "phase:        renewal due" "status of a 31-day-old certificate" "$oci" status --cert "$work/due.pem"
run_exit 12 "expired: re-bootstrap required" "status of a 61-day-old certificate" "$oci" status --cert "$work/old.pem"
run_exit 12 "expired" "a 365-day certificate is expired after the 60-day lifetime" "$oci" status --cert "$work/long.pem"
run_exit 11 "renewal due" "... unless the lifetime is configured longer" "$oci" status --cert "$work/long.pem" \
	--lifetime 100
run_exit 0 "current" "--renew-after 40 moves the renewal point" "$oci" status --cert "$work/due.pem" --renew-after 40
run_exit 2 "--renew-after must not be later" "--renew-after beyond --lifetime refused" "$oci" status \
	--cert "$work/due.pem" --renew-after 70
check "status --json: phase and dates" bash -c "'$oci' status --cert '$work/due.pem' --json; test \$? -eq 11" 
check "status --json parses, phase renewal-due, age 31 days" python3 -c "
import json, subprocess, sys
p = subprocess.run(['$oci', 'status', '--cert', '$work/due.pem', '--json'], capture_output=True, text=True)
d = json.loads(p.stdout)
assert p.returncode == 11, p.returncode
assert d['phase'] == 'renewal-due', d
assert 30.9 < d['age_days'] < 31.1, d
assert d['renew_after_days'] == 30 and d['lifetime_days'] == 60, d
for k in ('issued', 'renewal_due', 'expires'): assert d[k].endswith('Z'), d
"
check "status --json of an expired certificate says so" bash -c \
	"'$oci' status --cert '$work/old.pem' --json | grep -q '\"phase\": \"expired-rebootstrap-required\"'"
run_exit 2 "" "status of a missing file" "$oci" status --cert "$work/none.pem"
# Not valid for two more days (a CA clock ahead of ours): not current. One
# rule for both tools: keysvc status classes it expired (exit 24), so
# keysvc-oci status exits as for expired (12), saying why.
"$fake" --dir "$ca" --issue "$work/node1.csr" --out "$work/future.pem" --age-days -2 || ks_die "issue"
from=$(openssl x509 -in "$work/future.pem" -noout -startdate | sed 's/^notBefore=//')
from=$(date -u -d "$from" +%Y-%m-%dT%H:%M:%SZ)
run_exit 12 "phase:        not yet valid (from $from)" "status of a certificate valid only in 2 days: not current" \
	"$oci" status --cert "$work/future.pem"
check "... --json: phase not-yet-valid, exit 12" bash -c \
	"out=\$('$oci' status --cert '$work/future.pem' --json); st=\$?; echo \"\$out\"; test \$st -eq 12 && \
	grep -q '\"phase\": \"not-yet-valid\"' <<<\"\$out\""
mkdir -p "$work/inv-future"
printf '{"version": 1, "cert": "%s", "key": "node1", "client": "oci", "outcome": "ok"}\n' "$work/future.pem" \
	>"$work/inv-future/$(printf %s "$work/future.pem" | sha256sum | cut -c1-64).json"
run_exit 24 "not yet valid (from " "keysvc status of the same certificate: expired, exit 24" \
	"$KS_KEYSVC_CLI" --socket "$KS_SOCKET" status --inventory "$work/inv-future"
check "both tools put it in the expired class" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' status --inventory \
	'$work/inv-future' --json | python3 -c 'import json, sys; d = json.load(sys.stdin); \
	assert [c[\"class\"] for c in d[\"certificates\"]] == [\"expired\"], d' && \
	{ '$oci' status --cert '$work/future.pem'; test \$? -eq 12; }"

# ---- renewal ----
key_id="ocid1.tenancy.oc1..aaaatest/ocid1.user.oc1..aaaatest/11:22:33"
: >"$work/control"
ks_fake_start "$fake" --dir "$ca" --verify-key "$work/node1.pub" --key-id "$key_id" --control "$work/control"
endpoint=https://127.0.0.1:$KS_FAKE_PORT
mode() { echo "$1" >"$work/control"; }

cert=$certs/node.pem
common=(--cert "$cert" --ca-file "$ca/ca.pem" --key node1 --key-id "$key_id" --endpoint "$endpoint"
	--node-id ocid1.rovernode.oc1.test.node1 --socket "$KS_SOCKET")
renew() { "$oci" renew "${common[@]}" --quiet --inventory "$work/inv" "$@"; }
inv_says() { ks_inventory_says "$work/inv" /node.pem "$@"; }
reset_cert() { cp "$1" "$cert"; cp "$1" "$work/before.pem"; rm -f "$cert.prev" "$cert.state"; }
unchanged() { cmp -s "$cert" "$work/before.pem"; }

reset_cert "$work/young.pem"
run_exit 10 "" "renew --when-due with a current certificate: not due" renew --when-due
check "not due: nothing sent" test ! -e "$ca/requests.log"
# Not yet valid is no reason to renew: the timer waits, as for a current one.
reset_cert "$work/future.pem"
run_exit 10 "not due" "renew --when-due with a not yet valid certificate: not due" "$oci" renew "${common[@]}" \
	--inventory "$work/inv" --when-due
check "not yet valid: nothing sent" test ! -e "$ca/requests.log"

reset_cert "$work/due.pem"
flock "$cert.lock" sleep 4 &
holder=$!
while flock -n "$cert.lock" true; do sleep 0.1; done
run_exit 13 "another run holds the lock on $cert" "renew while another run holds the lock: busy" renew --lock-wait 0
check "busy: certificate unchanged" unchanged
check "busy: nothing sent" test ! -e "$ca/requests.log"
wait "$holder"
run_exit 0 "" "renew --when-due with a 31-day-old certificate: renewed" renew --when-due
check "the new certificate chains to the CA" openssl verify -CAfile "$ca/ca.pem" "$cert"
check "the previous certificate is kept as .prev" cmp -s "$cert.prev" "$work/due.pem"
check "same key" bash -c "openssl x509 -in '$cert' -noout -pubkey | cmp -s - '$work/node1.pub'"
check "same subject" bash -c "[ \"\$(openssl x509 -in '$cert' -noout -subject)\" = \"\$(openssl x509 -in '$work/due.pem' -noout -subject)\" ]"
check "same SANs" bash -c "openssl x509 -in '$cert' -noout -ext subjectAltName | grep -q 'DNS:node1.example.org, IP Address:192.0.2.7'"
check "the CSR carried the subject and SANs" bash -c \
	"openssl req -in '$ca/last-csr.pem' -noout -text | grep -q 'DNS:node1.example.org, IP Address:192.0.2.7'"
check "the body is exactly {csr, timeCertValidityEnd}" python3 -c "
import json, datetime
d = json.load(open('$ca/last-renew.json'))
assert list(d) == ['csr', 'timeCertValidityEnd'], list(d)
assert d['csr'].startswith('-----BEGIN CERTIFICATE REQUEST-----'), d['csr'][:40]
end = datetime.datetime.strptime(d['timeCertValidityEnd'], '%Y-%m-%dT%H:%M:%SZ')
left = (end - datetime.datetime.utcnow()).total_seconds() / 86400
assert 59.9 < left < 60.1, left
"
check "renewCertificate was signed with the body headers" grep -q \
	'^POST /20201210/roverNodes/ocid1.rovernode.oc1.test.node1/actions/renewCertificate .*x-content-sha256' \
	"$ca/requests.log"
check "the bundle was fetched with a signed GET" grep -q '^GET /20210224/certificateBundles/ocid1.certificate.oc1.fake.1 .*authorization' \
	"$ca/requests.log"
run_exit 0 "current" "status after renewal: current" "$oci" status --cert "$cert"
check "no state file after a success" test ! -e "$cert.state"
check "inventory: the renewal is recorded (client oci, outcome ok, key node1)" inv_says client oci outcome ok key node1

# A server that answers the certificate directly.
reset_cert "$work/due.pem"
mode direct
run_exit 0 "" "renew against an answer carrying certificatePem" renew
check "direct: installed and chaining" openssl verify -CAfile "$ca/ca.pem" "$cert"
mode normal

# Every failure: message, exit code, certificate unchanged, failure recorded.
for m in status-500:17:"InternalServerError" \
	not-authorized:17:"HTTP 404: NotAuthorizedOrNotFound" \
	garbage:18:"not a JSON object" \
	bundle-404:17:"the certificate bundle: HTTP 404" \
	other-key:18:"" \
	foreign-ca:18:"" \
	expired:18:"" \
	shorter:18:"" \
	other-subject:18:"subject is not the current" \
	huge:19:"" \
	hang:19:""; do
	name=${m%%:*}
	rest=${m#*:}
	code=${rest%%:*}
	text=${rest#*:}
	reset_cert "$work/due.pem"
	mode "$name"
	"$oci" renew "${common[@]}" --timeout 3 >"$work/out" 2>&1
	st=$?
	if [ "$st" -eq "$code" ] && { [ -z "$text" ] || grep -qF -- "$text" "$work/out"; }; then
		ok "renew against mode $name (exit $st)"
	else
		fail "renew against mode $name: exit $st, expected $code${text:+ and '$text'}"
		sed 's/^/#   /' "$work/out"
	fi
	check "mode $name: certificate unchanged byte for byte" unchanged
	[ -e "$cert.prev" ] && fail "mode $name: no .prev made" || ok "mode $name: no .prev made"
	check "mode $name: failure recorded in the state file" grep -q '"failures": 1' "$cert.state"
done
mode normal

# Backoff: after a failure, --when-due waits; a manual renew does not.
# (The later attempt is made with --now in the future, so slow machines and
# valgrind do not race the delays.)
reset_cert "$work/due.pem"
mode status-500
run_exit 17 "" "a failed renewal" renew --backoff 30 --backoff-max 60
check "inventory: the failure is recorded" inv_says outcome failed
mode normal
run_exit 10 "backing off after 1 failed attempt" "renew --when-due right after: backing off" \
	"$oci" renew "${common[@]}" --when-due
check "backing off: certificate unchanged" unchanged
mode status-500
run_exit 17 "" "a second failed renewal (manual: no waiting)" renew --backoff 30 --backoff-max 60
check "two failures recorded" grep -q '"failures": 2' "$cert.state"
check "the delay doubled and was capped, with jitter: 30..60 s" python3 -c "
import json, time
d = json.load(open('$cert.state'))
left = d['next_attempt'] - time.time()
assert 20 < left <= 60, left
"
mode normal
run_exit 10 "backing off after 2 failed attempts" "renew --when-due 10 s later: still backing off" \
	"$oci" renew "${common[@]}" --when-due --now $(( $(date +%s) + 10 ))
run_exit 0 "" "renew --when-due after the backoff: renewed" renew --when-due --now $(( $(date +%s) + 61 ))
check "state file removed after the success" test ! -e "$cert.state"

# Local and keysvcd failures.
reset_cert "$work/old.pem"
run_exit 12 "re-bootstrap is required" "renew of an expired certificate: re-bootstrap required" \
	"$oci" renew "${common[@]}"
check "expired: certificate unchanged" unchanged
reset_cert "$work/due.pem"
run_exit 17 "NotAuthenticated" "a keyId the server does not know: 401" \
	"$oci" renew "${common[@]}" --key-id "ocid1.tenancy.oc1..other/u/f"
run_exit 19 "" "a TLS CA that is not the server's" renew --tls-ca-file "$ca/foreign-ca.pem"
run_exit 7 "cannot reach keysvcd" "keysvcd unreachable" "$oci" renew --cert "$cert" --ca-file "$ca/ca.pem" \
	--key node1 --key-id "$key_id" --endpoint "$endpoint" --node-id ocid1.rovernode.oc1.test.node1 \
	--socket "$work/none.sock"
run_exit 2 "is not a certificate for key" "the certificate of another key" \
	"$oci" renew "${common[@]}" --key nosign
run_exit 2 "https://" "an http:// endpoint" "$oci" renew "${common[@]}" --endpoint "http://127.0.0.1:1"
run_exit 2 "--node-id" "a node id with a slash" "$oci" renew "${common[@]}" --node-id "a/b"
check "local failures: certificate unchanged" unchanged

# renew --new-key: the new key is certified, the request still signed with the old one.
reset_cert "$work/due.pem"
mode other-key
run_exit 18 "" "renew --new-key against a bad answer" renew --new-key node2
check "bad answer: certificate unchanged" unchanged
run_exit 14 "no key named node2" "bad answer: the new key node2 is deleted again" ks_cli pubkey node2
mode normal
run_exit 2 "a key of that name exists" "--new-key naming an existing key is refused" renew --new-key nosign
run_exit 2 "not with --when-due" "--new-key with --when-due is refused" renew --new-key node2 --when-due
run_exit 2 "another key" "--new-key equal to --key is refused" renew --new-key node1
check "refusals: certificate unchanged" unchanged
run_exit 0 "" "renew --new-key node2" "$oci" renew "${common[@]}" --new-key node2
check "--new-key: the certificate is for node2" bash -c \
	"openssl x509 -in '$cert' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey node2)"
check "--new-key: node2 has node1's type" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -q 'node2.*rsa-2048'"
check "--new-key: node2 has only the purposes keysvc-oci needs (csr,http-signature)" bash -c \
	"'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -Eq '^node2 .* csr,http-signature\$'"
check "--new-key: node1 is kept for a rollback" ks_cli pubkey node1
check "--new-key: same subject and SANs" bash -c "openssl x509 -in '$cert' -noout -ext subjectAltName | grep -q 'DNS:node1.example.org, IP Address:192.0.2.7'"
check "--new-key: the previous certificate is .prev" cmp -s "$cert.prev" "$work/due.pem"

# sign-request against the server: a curl GET with the printed headers is accepted.
reset_cert "$work/due.pem"
mode normal
renew >/dev/null 2>&1
"$oci" sign-request --socket "$KS_SOCKET" --key node1 --key-id "$key_id" --method GET \
	--url "$endpoint/20210224/certificateBundles/ocid1.certificate.oc1.fake.1" >"$work/headers"
check "sign-request: three header lines" test "$(wc -l <"$work/headers")" -eq 3
hdr=()
while IFS= read -r line; do hdr+=(-H "$line"); done <"$work/headers"
check "curl with sign-request's headers is accepted" bash -c \
	"curl -sS -f --cacert '$ca/ca.pem' $(printf "'%s' " "${hdr[@]}") '$endpoint/20210224/certificateBundles/ocid1.certificate.oc1.fake.1' | grep -q certificatePem"
echo '{"x": 1}' >"$work/body.json"
run_exit 0 "x-content-sha256: " "sign-request with a body prints the body headers" \
	"$oci" sign-request --socket "$KS_SOCKET" --key node1 --key-id "$key_id" --method PUT --url "$endpoint/x" \
	--body-file "$work/body.json"
check "sign-request --json: the same headers as an object" python3 -c "
import json, subprocess
p = subprocess.run(['$oci', 'sign-request', '--socket', '$KS_SOCKET', '--key', 'node1', '--key-id', '$key_id',
                    '--method', 'POST', '--url', '$endpoint/x', '--body-file', '$work/body.json', '--json'],
                   capture_output=True, text=True, check=True)
d = json.loads(p.stdout)
assert list(d) == ['date', 'host', 'content-length', 'content-type', 'x-content-sha256', 'authorization'], list(d)
assert d['content-length'] == '9' and d['authorization'].startswith('Signature version=\"1\",headers='), d
"
run_exit 8 "keysvcd would not sign" "sign-request with a key the policy does not let us sign with" \
	"$oci" sign-request --socket "$KS_SOCKET" --key nosign --key-id "$key_id" --method GET --url "$endpoint/x"

ks_fake_stop
echo "# oci-renew: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
