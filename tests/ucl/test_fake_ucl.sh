#!/usr/bin/env bash
# Smoke test of fake-ucl-connector, the imitation Kyma / SAP UCL Connector
# that the keysvc-ucl tests talk to: pairing with the one-time token, renewal
# and revocation over mutual TLS, GraphQL validation, CSR checks and the
# fault modes of the control file, all driven by curl, jq and openssl.
#
#   test_fake_ucl.sh PATH-TO-fake-ucl-connector PATH-TO-schema.graphql
#
# FAKE_UCL_VALGRIND=1 also runs one server under valgrind (slow).
set -uo pipefail

fake=${1:?usage: test_fake_ucl.sh PATH-TO-fake-ucl-connector SCHEMA}
schema=${2:?usage: test_fake_ucl.sh PATH-TO-fake-ucl-connector SCHEMA}
export LC_ALL=C

work=$(mktemp -d "${TMPDIR:-/tmp}/fake-ucl.XXXXXX")
st=$work/state
control=$work/control
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
. "$KS_SOURCE_ROOT/tests/integration/fakesrv.sh"
declare -A listen

cleanup() {
	srv_cleanup
	rm -rf "$work"
}
trap cleanup EXIT

# start NAME ARGS... / stop NAME: a server on the shared state.
start() { local name=$1; shift; srv_start "$name" "$fake" --dir "$st" --schema "$schema" --control "$control" "$@"; }
stop() { srv_stop "$1"; }

host_of() { if [ "${listen[$1]:-}" = "::1" ]; then echo '[::1]'; else echo 127.0.0.1; fi; }

# raw SERVER PATH [CURL-ARGS...]: sets $code and $curl_status; body in $work/body.
raw() {
	local name=$1 path=$2
	shift 2
	code=$(curl -sS -g --max-time 20 --cacert "$st/ca.pem" -o "$work/body" -w '%{http_code}' "$@" \
		"https://$(host_of "$name"):${port[$name]}$path" 2>"$work/curl.err")
	curl_status=$?
}

# gql SERVER PATH QUERY [VARIABLES-JSON [CURL-ARGS...]]: a GraphQL POST.
gql() {
	local name=$1 path=$2 query=$3 vars=${4:-null}
	shift 3
	[ $# -gt 0 ] && shift
	jq -n --arg q "$query" --argjson v "$vars" '{query: $q, variables: $v}' >"$work/req.json"
	raw "$name" "$path" -H 'Content-Type: application/json' --data-binary "@$work/req.json" "$@"
}

# expect DESCRIPTION CODE [JQ-FILTER]: status, and the filter holds on the body.
expect() {
	local what=$1 want=$2
	if [ "$code" = "$want" ] && { [ $# -lt 3 ] || jq -e "$3" "$work/body" >/dev/null 2>&1; }; then
		ok "$what ($code)"
	else
		fail "$what: got $code $(head -c 400 "$work/body" 2>/dev/null), expected $want${3:+ with $3}"
		sed 's/^/#   curl: /' "$work/curl.err"
	fi
}

# expect_error DESCRIPTION CODE MESSAGE: data null, errors[0].message exactly MESSAGE.
expect_error() {
	expect "$1" "$2" "(.data == null) and (.errors[0].message == $(jq -Rn --arg m "$3" '$m'))"
}

subject_base="OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US"
subj() { echo "/C=US/ST=Virginia/L=Blacksburg/O=Test/OU=Test/CN=${1:-test-app}"; }
# csr NAME SUBJECT [OPENSSL-KEY-ARGS...]: $work/NAME.key and $work/NAME.csr.
csr() {
	local name=$1 s=$2
	shift 2
	[ $# -gt 0 ] || set -- -newkey rsa:2048
	openssl req -new -nodes "$@" -keyout "$work/$name.key" -subj "$s" -out "$work/$name.csr" 2>"$work/openssl.err"
}
b64() { openssl base64 -in "$1"; } # with line breaks, as the tutorial has it
b64_1() { base64 -w0 "$1"; }
mtls() { echo --cert "$work/$1.pem" --key "$work/$1.key"; }

CONFIG='query { result: configuration { token { token } certificateSigningRequestInfo { subject keyAlgorithm }
  managementPlaneInfo { directorURL certificateSecuredConnectorURL } } }'
SIGN='mutation Sign($csr: String!) { result: signCertificateSigningRequest(csr: $csr) {
  certificateChain caCertificate clientCertificate } }'
REVOKE='mutation { result: revokeCertificate }'
MSG_AUTH='Failed to authenticate request. Token authentication error: Failed to authenticate with one time token.. Certificate authentication error: Failed to authenticate with Certificate. Invalid subject.'
MSG_SIGN='Error while signing Certificate Signing Request: '

# sign SERVER PATH CSR-NAME [CURL-ARGS...]
sign() {
	local name=$1 path=$2 c=$3
	shift 3
	gql "$name" "$path" "$SIGN" "$(jq -n --arg c "$(b64 "$work/$c.csr")" '{csr: $c}')" "$@"
}

# decode NAME: the three results of the last sign into NAME.pem, NAME.ca, NAME.chain.
decode() {
	jq -r .data.result.clientCertificate "$work/body" | base64 -d >"$work/$1.pem" &&
		jq -r .data.result.caCertificate "$work/body" | base64 -d >"$work/$1.ca" &&
		jq -r .data.result.certificateChain "$work/body" | base64 -d >"$work/$1.chain"
}
pubkey() { openssl x509 -in "$1" -noout -pubkey; }
csr_pubkey() { openssl req -in "$1" -noout -pubkey; }
subject_of() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253 | sed 's/^subject=//'; }
verifies() { openssl verify -CAfile "$st/ca.pem" "$1"; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
export -f pubkey csr_pubkey subject_of

# ---------------------------------------------------------------- startup
rc=0
"$fake" --dir "$work/refused" --schema "$schema" --listen 0.0.0.0 2>"$work/out" || rc=$?
if [ "$rc" -ne 0 ] && grep -q 'only 127.0.0.1 or ::1' "$work/out"; then ok "--listen 0.0.0.0 refused (exit $rc)"; else
	fail "--listen 0.0.0.0 not refused (exit $rc)"
fi
rc=0
printf 'type Query { x: Nope }\n' >"$work/bad.graphql"
"$fake" --dir "$work/refused" --schema "$work/bad.graphql" 2>"$work/out" || rc=$?
if [ "$rc" -ne 0 ] && grep -q 'unknown type Nope' "$work/out"; then ok "a schema with an unknown type is refused"; else
	fail "bad schema not refused (exit $rc)"
	sed 's/^/#   /' "$work/out"
fi

: >"$control"
start main --token T1 --client-id test-app --ttl 86400
check "ca.key is 0600" test "$(stat -c %a "$st/ca.key")" = 600
check "server cert names localhost, 127.0.0.1, ::1" \
	bash -c "openssl x509 -in '$st/server.pem' -noout -ext subjectAltName | grep -q 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1'"
check "foreign CA exists" test -s "$st/foreign-ca.pem" -a -s "$st/foreign-ca.key"
check "DIR/token holds --token" test "$(cat "$st/token")" = T1

# ---------------------------------------------------------------- pairing with the one-time token
gql main /connector/graphql "$CONFIG" null -H 'Connector-Token: T1'
expect "configuration with the one-time token" 200 "
  .data.result.certificateSigningRequestInfo == {subject: \"$subject_base,CN=test-app\", keyAlgorithm: \"rsa2048\"}
  and .data.result.managementPlaneInfo.directorURL == \"https://127.0.0.1:${port[main]}/director/graphql\"
  and .data.result.managementPlaneInfo.certificateSecuredConnectorURL == \"https://127.0.0.1:${port[main]}/mtls/graphql\"
  and (.data.result.token.token | length > 10) and .data.result.token.token != \"T1\" and (has(\"errors\") | not)"
tok2=$(jq -r .data.result.token.token "$work/body")
check "answer keys in selection order" bash -c "jq -c '.data.result | keys_unsorted' '$work/body' | grep -qx '\[\"token\",\"certificateSigningRequestInfo\",\"managementPlaneInfo\"\]'"

gql main /connector/graphql "$CONFIG" null -H 'Connector-Token: T1'
expect_error "one-time token is single use" 200 "$MSG_AUTH"
expect "auth error has path [result]" 200 '.errors[0].path == ["result"]'
gql main /connector/graphql "$CONFIG" null
expect_error "no token" 200 "$MSG_AUTH"
gql main /connector/graphql "$CONFIG" null -H 'Connector-Token: nope'
expect_error "unknown token" 200 "$MSG_AUTH"

csr a "$(subj)"
sign main /connector/graphql a -H "Connector-Token: $tok2"
expect "signCertificateSigningRequest with the configuration token" 200 \
	'(.data.result | keys_unsorted) == ["certificateChain","caCertificate","clientCertificate"]'
decode a
check "client cert verifies against ca.pem" verifies "$work/a.pem"
check "client cert subject" test "$(subject_of "$work/a.pem")" = "CN=test-app,OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US"
check "client cert has the CSR's key" bash -c "[ \"\$(pubkey '$work/a.pem')\" = \"\$(csr_pubkey '$work/a.csr')\" ]"
check "KeyUsage critical digitalSignature" \
	bash -c "openssl x509 -in '$work/a.pem' -noout -ext keyUsage | tr -d ' \n' | grep -qx 'X509v3KeyUsage:criticalDigitalSignature'"
check "EKU clientAuth" \
	bash -c "openssl x509 -in '$work/a.pem' -noout -ext extendedKeyUsage | tr -d ' \n' | grep -qx 'X509v3ExtendedKeyUsage:TLSWebClientAuthentication'"
ext_value() { openssl x509 -in "$1" -noout -ext "$2" | sed -n 2p | tr -d ' '; }
export -f ext_value
check "SKI present, AKI is the CA's SKI" bash -c "[ -n \"\$(ext_value '$work/a.pem' subjectKeyIdentifier)\" ] &&
	[ \"\$(ext_value '$work/a.pem' authorityKeyIdentifier)\" = \"\$(ext_value '$st/ca.pem' subjectKeyIdentifier)\" ]"
check "notAfter = now + --ttl" bash -c "openssl x509 -in '$work/a.pem' -noout -checkend 86000 && ! openssl x509 -in '$work/a.pem' -noout -checkend 86500"
check "notBefore in the past" bash -c "[ \$(date -d \"\$(openssl x509 -in '$work/a.pem' -noout -startdate | cut -d= -f2)\" +%s) -le \$(date +%s) ]"
check "caCertificate is ca.pem" cmp "$work/a.ca" "$st/ca.pem"
check "certificateChain is cert + CA" bash -c "cat '$work/a.pem' '$st/ca.pem' | cmp - '$work/a.chain'"

sign main /connector/graphql a -H "Connector-Token: $tok2"
expect_error "the configuration token is single use" 200 "$MSG_AUTH"

# "token VALUE" in the control file arms another one-time token; an inline
# literal instead of a variable, single-line base64.
printf 'token T3\n' >"$control"
gql main /connector/graphql "$CONFIG" null -H 'Connector-Token: T3'
expect "control-file token" 200 '.data.result.token.token | length > 10'
tok3=$(jq -r .data.result.token.token "$work/body")
: >"$control"
csr c "$(subj)"
gql main /connector/graphql "mutation { result: signCertificateSigningRequest(csr: \"$(b64_1 "$work/c.csr")\") { clientCertificate } }" null \
	-H "Connector-Token: $tok3"
expect "sign with an inline literal, only clientCertificate selected" 200 \
	'(.data.result | keys_unsorted) == ["clientCertificate"]'
gql main /connector/graphql "$CONFIG" null -H 'Connector-Token: T3'
expect_error "a control-file token is not re-armed" 200 "$MSG_AUTH"

# ---------------------------------------------------------------- mutual TLS
gql main /mtls/graphql "$CONFIG"
expect "mtls without a client cert" 403
openssl req -new -x509 -days 2 -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$work/f.key" \
	-subj "$(subj)" -CA "$st/foreign-ca.pem" -CAkey "$st/foreign-ca.key" -addext extendedKeyUsage=clientAuth \
	-out "$work/f.pem" 2>"$work/openssl.err"
gql main /mtls/graphql "$CONFIG" null $(mtls f)
expect "mtls with a cert from the foreign CA" 403
gql main /mtls/graphql "$CONFIG" null $(mtls a)
expect "mtls configuration with the issued cert" 200 \
	".data.result.certificateSigningRequestInfo.subject == \"$subject_base,CN=test-app\" and (.data.result.token.token | length > 10)"
csr b "$(subj)" -newkey rsa:4096
sign main /mtls/graphql b $(mtls a)
expect "mtls renewal with a 4096-bit key (the tutorial's choice)" 200 '.data.result.clientCertificate | length > 100'
decode b
check "renewed cert verifies" verifies "$work/b.pem"
check "renewed cert has the new key" bash -c "[ \"\$(pubkey '$work/b.pem')\" = \"\$(csr_pubkey '$work/b.csr')\" ]"
gql main /connector/graphql "$REVOKE"
expect_error "revokeCertificate needs a certificate" 200 \
	'Failed to authenticate with certificate: Failed to authenticate with Certificate. Invalid subject.'
gql main /mtls/graphql "$REVOKE" null $(mtls a)
expect "revokeCertificate" 200 '.data.result == true'
check "revoked.txt has the serial" grep -qix "$(serial_of "$work/a.pem")" "$st/revoked.txt"
gql main /mtls/graphql "$CONFIG" null $(mtls a)
expect_error "revoked cert refused" 200 "$MSG_AUTH"
sign main /mtls/graphql b $(mtls a)
expect_error "revoked cert cannot renew" 200 "$MSG_AUTH"
gql main /mtls/graphql "$CONFIG" null $(mtls b)
expect "the renewed cert still works" 200 '.data.result.token.token | length > 10'

# ---------------------------------------------------------------- CSR checks (over mTLS with b)
csr x "$(subj other)"
sign main /mtls/graphql x $(mtls b)
expect_error "CSR with another CN" 200 "${MSG_SIGN}CSR: Invalid common name provided."
csr x "/C=US/ST=Virginia/L=Blacksburg/O=Other/OU=Test/CN=test-app"
sign main /mtls/graphql x $(mtls b)
expect_error "CSR with another O" 200 "${MSG_SIGN}CSR: Invalid organization provided."
csr x "/C=US/ST=Virginia/O=Test/OU=Test/CN=test-app"
sign main /mtls/graphql x $(mtls b)
expect_error "CSR without L" 200 "${MSG_SIGN}CSR: No locality provided."
csr x "$(subj)" -newkey rsa:1024
sign main /mtls/graphql x $(mtls b)
expect "CSR with a 1024-bit key" 200 '.data == null and (.errors[0].message | startswith("Error while signing Certificate Signing Request: CSR: Invalid key algorithm"))'
csr x "$(subj)" -newkey ec -pkeyopt ec_paramgen_curve:P-256
sign main /mtls/graphql x $(mtls b)
expect "CSR with an EC key for rsa2048" 200 '.data == null and (.errors[0].message | contains("Invalid key algorithm"))'
gql main /mtls/graphql "$SIGN" '{"csr": "not base64!"}' $(mtls b)
expect_error "csr not base64" 200 \
	'Error while decoding Certificate Signing Request: Error while parsing base64 content. Incorrect value provided.'
gql main /mtls/graphql "$SIGN" "{\"csr\": \"$(printf hello | base64)\"}" $(mtls b)
expect_error "csr not PEM" 200 "${MSG_SIGN}Error while decoding pem block."

# ---------------------------------------------------------------- GraphQL validation
v() { # v DESCRIPTION QUERY MESSAGE [VARIABLES]
	gql main /connector/graphql "$2" "${4:-null}"
	expect "invalid: $1" 422 "(.data == null) and (.errors[0].message == $(jq -Rn --arg m "$3" '$m'))
	  and (.errors[0].extensions.code | startswith(\"GRAPHQL_\"))"
}
v "unknown field" '{ result: configuration { foo } }' 'Cannot query field "foo" on type "Configuration".'
v "subject on Configuration" '{ result: configuration { subject } }' 'Cannot query field "subject" on type "Configuration".'
v "missing selection set" '{ configuration }' \
	'Field "configuration" of type "Configuration!" must have a selection of subfields. Did you mean "configuration { ... }"?'
v "selection set on a scalar" '{ configuration { token { token { x } } } }' \
	'Field "token" must not have a selection since type "String!" has no subfields.'
v "missing argument csr" 'mutation { signCertificateSigningRequest { caCertificate } }' \
	'Field "signCertificateSigningRequest" argument "csr" of type "String!" is required, but it was not provided.'
v "unknown argument" 'mutation { signCertificateSigningRequest(csr: "x", pem: "y") { caCertificate } }' \
	'Unknown argument "pem" on field "Mutation.signCertificateSigningRequest".'
v "argument of the wrong type" 'mutation { signCertificateSigningRequest(csr: 12) { caCertificate } }' \
	'Expected type String!, found 12.'
v "null for String!" 'mutation { signCertificateSigningRequest(csr: null) { caCertificate } }' \
	'Expected type String!, found null.'
v "syntax error" '{ configuration { token ' 'Expected Name, found <EOF>'
v "unterminated string" 'mutation { signCertificateSigningRequest(csr: "abc) { caCertificate } }' 'Unterminated string.'
v "mutation field in a query" '{ signCertificateSigningRequest(csr: "x") { caCertificate } }' \
	'Cannot query field "signCertificateSigningRequest" on type "Query".'
v "undefined variable" 'mutation { signCertificateSigningRequest(csr: $c) { caCertificate } }' 'Variable "$c" is not defined.'
v "unused variable" 'query Q($c: String) { configuration { token { token } } }' \
	'Variable "$c" is never used in operation "Q".'
v "variable of the wrong type" 'mutation M($c: Int!) { signCertificateSigningRequest(csr: $c) { caCertificate } }' \
	'Variable "$c" of type "Int!" used in position expecting type "String!".'
v "missing variable value" "$SIGN" 'must be defined'
v "variable value of the wrong JSON type" "$SIGN" 'cannot use json.Number as String' '{"csr": 12}'
v "alias conflict" '{ result: configuration { token { t: token } } result: __typename }' \
	'Fields "result" conflict because configuration and __typename are different fields. Use different aliases on the fields to fetch both if this was intentional.'
v "two anonymous operations" '{ configuration { token { token } } } { configuration { token { token } } }' \
	'This anonymous operation must be the only defined operation.'
v "too deep" "$(printf '{ a%.0s' $(seq 40))" 'Document nested deeper than 32 levels (fake-ucl-connector limit)'
gql main /connector/graphql '# a comment
query Q { a: __typename } query R { b: __typename }' null
expect "no operationName with two operations" 422 '.errors[0].message == "operation name is required"'
jq -n '{query: "query Q { a: __typename } query R { b: __typename }", operationName: "R"}' >"$work/req.json"
raw main /connector/graphql -H 'Content-Type: application/json' --data-binary "@$work/req.json"
expect "operationName picks one operation" 200 '.data == {b: "Query"}'
gql main /connector/graphql 'query { """block""" }' null
expect "block string where a field belongs" 422 '.errors[0].extensions.code == "GRAPHQL_PARSE_FAILED"'
gql main /connector/graphql '{ configuration { token { token } } }' null -H 'Connector-Token: '
expect_error "a valid shorthand query still needs a token" 200 "$MSG_AUTH"

# ---------------------------------------------------------------- HTTP layer
raw main /connector/graphql -H 'Content-Type: text/plain' --data-binary '{"query": "{ __typename }"}'
expect "wrong content type" 400 '.errors[0].message == "transport not supported"'
raw main /connector/graphql
expect "GET" 400 '.errors[0].message == "transport not supported"'
raw main /connector/graphql -H 'Content-Type: application/json' --data-binary '{"query": '
expect "malformed JSON" 400 '.errors[0].message | startswith("json request body could not be decoded")'
raw main /connector/graphql -H 'Content-Type: application/json' --data-binary '{"query": "{ __typename }", "variables": 3}'
expect "variables not an object" 400 '.errors[0].message | startswith("json request body could not be decoded")'
raw main /connector/graphql -H 'Content-Type: application/json; charset=utf-8' --data-binary '{"query": "{ t: __typename }"}'
expect "charset parameter accepted" 200 '.data == {t: "Query"}'
raw main /director/graphql -H 'Content-Type: application/json' --data-binary '{}'
expect "unknown path" 404
head -c 70000 /dev/zero | tr '\0' ' ' >"$work/big"
raw main /connector/graphql -H 'Content-Type: application/json' --data-binary "@$work/big"
expect "body over 64 KiB" 413

# ---------------------------------------------------------------- fault modes
mode() { printf '%s\n' "$@" >"$control"; }
mode graphql-error
gql main /mtls/graphql "$CONFIG" null $(mtls b)
expect_error "graphql-error" 200 "Internal Server Error"
mode partial
gql main /mtls/graphql "$CONFIG" null $(mtls b)
expect "partial" 200 '.data == {result: null} and (.errors | length >= 1) and .errors[0].path == ["result"]'
mode http-500
gql main /mtls/graphql "$CONFIG" null $(mtls b)
expect "http-500" 500
csr m "$(subj)"
mode wrong-subject
sign main /mtls/graphql m $(mtls b)
expect "wrong-subject answers" 200 '.data.result.clientCertificate | length > 100'
decode m
check "wrong-subject: cert verifies but CN is not the client id" \
	bash -c "openssl verify -CAfile '$st/ca.pem' '$work/m.pem' && ! subject_of '$work/m.pem' | grep -q '^CN=test-app,'"
mode other-key
sign main /mtls/graphql m $(mtls b)
decode m
check "other-key: cert verifies but has another key" \
	bash -c "openssl verify -CAfile '$st/ca.pem' '$work/m.pem' && [ \"\$(pubkey '$work/m.pem')\" != \"\$(csr_pubkey '$work/m.csr')\" ]"
mode bad-base64
sign main /mtls/graphql m $(mtls b)
expect "bad-base64 answers" 200 '.data.result.clientCertificate | length > 100'
check "bad-base64: clientCertificate does not decode, the others do" \
	bash -c "! jq -r .data.result.clientCertificate '$work/body' | base64 -d >/dev/null 2>&1 &&
		jq -r .data.result.caCertificate '$work/body' | base64 -d | cmp - '$st/ca.pem'"
mode bad-chain
sign main /mtls/graphql m $(mtls b)
decode m
check "bad-chain: cert from the foreign CA, caCertificate the real one" \
	bash -c "! openssl verify -CAfile '$st/ca.pem' '$work/m.pem' && openssl verify -CAfile '$st/foreign-ca.pem' '$work/m.pem' &&
		cmp '$work/m.ca' '$st/ca.pem'"
mode hang
raw main /mtls/graphql -H 'Content-Type: application/json' --data-binary '{"query": "{ __typename }"}' \
	--max-time 2 $(mtls b)
check "hang: no answer within 2 s (curl status $curl_status)" test "$curl_status" = 28
mode huge
size=$(curl -sS --max-time 120 --cacert "$st/ca.pem" -o /dev/null -w '%{size_download}' $(mtls b) \
	-H 'Content-Type: application/json' --data-binary '{"query": "{ __typename }"}' \
	"https://127.0.0.1:${port[main]}/mtls/graphql" 2>"$work/curl.err")
check "huge: 64 MiB body ($size)" test "$size" = 67108864
mode "key-algorithm ed25519"
gql main /mtls/graphql "$CONFIG" null $(mtls b)
expect "key-algorithm ed25519: configuration says so" 200 '.data.result.certificateSigningRequestInfo.keyAlgorithm == "ed25519"'
sign main /mtls/graphql m $(mtls b)
expect "key-algorithm ed25519: an RSA CSR is refused" 200 '.data == null and (.errors[0].message | contains("expected ed25519"))'
csr e "$(subj)" -newkey ed25519
sign main /mtls/graphql e $(mtls b)
expect "key-algorithm ed25519: an Ed25519 CSR is signed" 200 '.data.result.clientCertificate | length > 100'
mode "key-algorithm rsa1024"
gql main /mtls/graphql "$CONFIG" null $(mtls b)
expect "key-algorithm rsa1024" 200 '.data.result.certificateSigningRequestInfo.keyAlgorithm == "rsa1024"'
mode expired-token "token T4"
gql main /connector/graphql "$CONFIG" null -H 'Connector-Token: T4'
expect_error "expired-token" 200 "$MSG_AUTH"
mode normal "token T4"
gql main /connector/graphql "$CONFIG" null -H 'Connector-Token: T4'
expect "an expired-looking token was not spent" 200 '.data.result.token.token | length > 10'
: >"$control"
check "one log line per request" bash -c "grep -c 'POST /' '$work/main.log' | awk '\$1 > 50 { ok = 1 } END { exit !ok }'"
stop main

# ---------------------------------------------------------------- token expiry, CA reuse, ::1
cp "$st/ca.pem" "$work/ca.before"
start short --token T5 --token-ttl 1
check "the CA is reused" cmp "$st/ca.pem" "$work/ca.before"
sleep 2
gql short /connector/graphql "$CONFIG" null -H 'Connector-Token: T5'
expect_error "the one-time token expires" 200 "$MSG_AUTH"
stop short

if [ -e /proc/net/if_inet6 ] && grep -q '^0\{31\}1 ' /proc/net/if_inet6; then
	listen[v6]=::1
	start v6 --listen ::1 --token T6
	gql v6 /connector/graphql "$CONFIG" null -H 'Connector-Token: T6'
	expect "::1" 200 ".data.result.managementPlaneInfo.certificateSecuredConnectorURL == \"https://[::1]:${port[v6]}/mtls/graphql\""
	stop v6
else
	ok "# SKIP no IPv6 loopback"
fi

# ---------------------------------------------------------------- valgrind
if [ "${FAKE_UCL_VALGRIND:-0}" = 1 ] && command -v valgrind >/dev/null; then
	SRV_WRAPPER="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
--show-leak-kinds=definite --log-file=$work/valgrind.log" SRV_START_TRIES=600 SRV_STOP_TRIES=600 \
		start vg --token T7
	gql vg /connector/graphql "$CONFIG" null -H 'Connector-Token: T7'
	expect "valgrind: configuration" 200
	tok=$(jq -r .data.result.token.token "$work/body")
	sign vg /connector/graphql m -H "Connector-Token: $tok"
	expect "valgrind: sign" 200
	sign vg /mtls/graphql m $(mtls b)
	expect "valgrind: mtls sign" 200
	v() { gql vg /connector/graphql "$1" "${2:-null}"; expect "valgrind: invalid ${1%%$'\n'*}" 422; }
	v '{ configuration { foo } }'
	v '{ configuration { token '
	v "$SIGN"
	v "$SIGN" '{"csr": 1}'
	v "$(printf '{ a%.0s' $(seq 40))"
	gql vg /mtls/graphql "$SIGN" '{"csr": "eA=="}' $(mtls b)
	expect "valgrind: bad CSR" 200
	for m in graphql-error partial bad-chain other-key wrong-subject bad-base64; do
		mode "$m"
		sign vg /mtls/graphql m $(mtls b)
		expect "valgrind: $m" 200
	done
	: >"$control"
	stop vg
	if [ ! -e "$work/valgrind.log" ] || [ -s "$work/valgrind.log" ]; then
		fail "valgrind reported something"
		sed 's/^/#   /' "$work/valgrind.log" 2>/dev/null
	else
		ok "valgrind: no errors, no definite leaks"
	fi
fi

echo "# passed $passed, failed $failed"
[ "$failed" -eq 0 ]
