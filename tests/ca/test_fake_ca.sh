#!/usr/bin/env bash
# Smoke test of fake-openvox-ca, the imitation OpenVox / Puppet Server CA
# that the keysvc-openvox tests talk to: enrollment, renewal, the fault
# modes of the control file, header-cert mode and --strict-auth, all driven
# by the curl and openssl command line tools.
#
#   test_fake_ca.sh PATH-TO-fake-openvox-ca
#
# FAKE_CA_VALGRIND=1 also runs one server under valgrind (slow).
set -uo pipefail

fake_ca=${1:?usage: test_fake_ca.sh PATH-TO-fake-openvox-ca}
export LC_ALL=C

work=$(mktemp -d "${TMPDIR:-/tmp}/fake-ca.XXXXXX")
ca=$work/ca
control=$work/control
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
. "$KS_SOURCE_ROOT/tests/integration/fakesrv.sh"

cleanup() {
	srv_cleanup
	rm -rf "$work"
}
trap cleanup EXIT

# start NAME ARGS... / stop NAME: a server on the shared state.
start() { local name=$1; shift; srv_start "$name" "$fake_ca" --dir "$ca" --control "$control" "$@"; }
stop() { srv_stop "$1"; }

# req SERVER METHOD PATH [CURL-ARGS...]: sets $code; body in $work/body.
req() {
	local name=$1 method=$2 path=$3 host=127.0.0.1
	shift 3
	[ "${listen[$name]:-}" = "::1" ] && host='[::1]'
	code=$(curl -sS -g --max-time 20 --cacert "$ca/ca.pem" -o "$work/body" -D "$work/headers" \
		-w '%{http_code}' -X "$method" "$@" "https://$host:${port[$name]}$path" 2>"$work/curl.err")
	curl_status=$?
}
declare -A listen

# hang_renew SERVER CERT KEY SECONDS: a renewal in the background (own files).
hang_renew() {
	local host=127.0.0.1
	[ "${listen[$1]:-}" = "::1" ] && host='[::1]'
	curl -sS -g --max-time "$4" --cacert "$ca/ca.pem" --cert "$2" --key "$3" -X POST --data-binary '' \
		-H 'Content-Type: text/plain' -o "$work/hang.body" "https://$host:${port[$1]}/puppet-ca/v1/certificate_renewal" \
		2>"$work/hang.err" &
	hang_pid=$!
}

# The empty POST the agent sends.
renew() { # renew SERVER [CURL-ARGS...]
	local name=$1
	shift
	req "$name" POST /puppet-ca/v1/certificate_renewal --data-binary '' \
		-H 'Content-Type: text/plain' -H 'Accept: text/plain' "$@"
}

put_csr() { # put_csr SERVER CERTNAME FILE
	req "$1" PUT "/puppet-ca/v1/certificate_request/$2" --data-binary "@$3" -H 'Content-Type: text/plain'
}

expect() { # expect DESCRIPTION CODE [BODY]
	local what=$1 want=$2 body
	body=$(cat "$work/body" 2>/dev/null)
	if [ "$code" = "$want" ] && { [ $# -lt 3 ] || [ "$body" = "$3" ]; }; then ok "$what ($code)"; else
		fail "$what: got $code \"${body:0:300}\", expected $want${3:+ \"$3\"}"
		sed 's/^/#   curl: /' "$work/curl.err"
	fi
}

pubkey() { openssl x509 -in "$1" -noout -pubkey; }
not_after() { date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s; }
not_before() { date -d "$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)" +%s; }
extensions() { openssl x509 -in "$1" -noout -text | sed -n '/X509v3 extensions:/,/Signature Algorithm:/p' | sort; }
urlencode() { od -An -tx1 -v | tr -d ' \n' | sed 's/../%&/g'; }
same_pubkey() { [ "$(pubkey "$1")" = "$(pubkey "$2")" ]; }
verifies() { openssl verify -CAfile "$ca/ca.pem" "$1"; }
export -f pubkey same_pubkey extensions
valid_for_days() { # valid_for_days CERT MIN MAX: notAfter between now+MIN and now+MAX days
	openssl x509 -in "$1" -noout -checkend $(($2 * 86400)) && ! openssl x509 -in "$1" -noout -checkend $(($3 * 86400))
}
wait_for_cert() { # wait_for_cert SERVER CERTNAME: poll GET until 200
	local i
	for i in $(seq 1 50); do
		req "$1" GET "/puppet-ca/v1/certificate/$2"
		[ "$code" = 200 ] && return 0
		sleep 0.1
	done
	return 1
}

cat >"$work/req.cnf" <<'EOF'
[req]
distinguished_name = dn
string_mask = default
[dn]
EOF
# csr NAME CN [openssl req args...]: EC P-256 key NAME.key, CSR NAME.csr.
csr() {
	local name=$1 cn=$2
	shift 2
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/$name.key" \
		-config "$work/req.cnf" -subj "/CN=$cn" -out "$work/$name.csr" "$@" 2>"$work/openssl.err" ||
		cat "$work/openssl.err" >&2
}
# agent_csr NAME CN: the agent's CSR, with pp_auth_auto_renew=true as a
# PrintableString attribute (openssl req only adds attributes when the
# subject comes from the config, not from -subj).
agent_csr() {
	cat >"$work/$1.cnf" <<EOF
[req]
distinguished_name = dn
attributes = attrs
prompt = no
string_mask = default
[dn]
CN = $2
[attrs]
1.3.6.1.4.1.34380.1.3.2 = true
EOF
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/$1.key" \
		-config "$work/$1.cnf" -out "$work/$1.csr" 2>"$work/openssl.err" || cat "$work/openssl.err" >&2
}

# ---------------------------------------------------------------- refusals
st=0
"$fake_ca" --dir "$work/refused" --listen 0.0.0.0 2>"$work/out" || st=$?
if [ "$st" -ne 0 ] && grep -q 'only 127.0.0.1 or ::1' "$work/out"; then ok "--listen 0.0.0.0 refused (exit $st)"; else
	fail "--listen 0.0.0.0 not refused (exit $st)"
fi
[ ! -e "$work/refused" ] && ok "nothing created when refusing" || fail "refusal created $work/refused"

# ---------------------------------------------------------------- server a
: >"$control"
start a --ttl $((30 * 86400)) --renewal-ttl $((60 * 86400))
for f in ca.pem ca.key server.pem crl.pem foreign-ca.pem foreign-ca.key; do
	[ -s "$ca/$f" ] && ok "$f written" || fail "$f missing"
done
[ "$(stat -c %a "$ca/ca.key")" = 600 ] && ok "ca.key is 0600" || fail "ca.key mode $(stat -c %a "$ca/ca.key")"
check "CA is CA:TRUE critical with keyCertSign" bash -c "openssl x509 -in '$ca/ca.pem' -noout -text |
	grep -A1 'Basic Constraints: critical' | grep -q CA:TRUE &&
	openssl x509 -in '$ca/ca.pem' -noout -ext keyUsage | grep -q 'Certificate Sign, CRL Sign'"
check "server cert verifies against the CA" verifies "$ca/server.pem"
check "server cert has the loopback SANs" bash -c "openssl x509 -in '$ca/server.pem' -noout -ext subjectAltName |
	grep -q 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1'"
check "foreign CA is another CA" bash -c "! openssl verify -CAfile '$ca/ca.pem' '$ca/foreign-ca.pem'"

req a GET /puppet-ca/v1/certificate/ca
expect "GET certificate/ca" 200
check "CA download equals ca.pem" cmp "$work/body" "$ca/ca.pem"
check "X-Puppet-Version header" grep -qi '^X-Puppet-Version: 8.0.0-fake' "$work/headers"
req a GET /puppet-ca/v1/certificate_revocation_list/ca
expect "GET certificate_revocation_list/ca" 200
check "CRL is signed by the CA and empty" bash -c "openssl crl -in '$work/body' -CAfile '$ca/ca.pem' -noout 2>&1 |
	grep -q 'verify OK' && openssl crl -in '$work/body' -noout -text | grep -q 'No Revoked Certificates'"
req a GET /puppet-ca/v1/certificate/ca -H "If-Modified-Since: $(date -u -d '+1 hour' '+%a, %d %b %Y %H:%M:%S GMT')"
expect "If-Modified-Since after the change" 304
req a GET /puppet-ca/v1/nothing
expect "unknown route" 404 "Not Found"

# ---------------------------------------------------------------- enrollment
agent_csr agent1 agent1.example.org
check "agent1 CSR carries pp_auth_auto_renew as PrintableString" bash -c \
	"openssl asn1parse -in '$work/agent1.csr' | grep -A2 1.3.6.1.4.1.34380.1.3.2 | grep -q 'PRINTABLESTRING *:true'"
put_csr a agent1.example.org "$work/agent1.csr"
expect "PUT agent1 CSR" 200 ""
[ -s "$ca/requests/agent1.example.org.pem" ] && ok "CSR stored in requests/" || fail "no requests/agent1.example.org.pem"
req a GET /puppet-ca/v1/certificate_request/agent1.example.org
expect "GET certificate_request/agent1" 200
req a GET /puppet-ca/v1/certificate/agent1.example.org
expect "GET agent1 before signing" 404 "Could not find certificate agent1.example.org"
touch "$ca/sign/agent1.example.org"
if wait_for_cert a agent1.example.org; then ok "GET agent1 after touch sign/agent1.example.org (200)"; else
	fail "agent1 not signed after touching sign/agent1.example.org (last $code)"
fi
cp "$work/body" "$work/agent1.pem"
check "agent1 cert verifies against ca.pem" verifies "$work/agent1.pem"
check "agent1 cert stored in signed/" cmp "$work/agent1.pem" "$ca/signed/agent1.example.org.pem"
[ ! -e "$ca/requests/agent1.example.org.pem" ] && ok "request removed after signing" || fail "request left behind"
check "agent1 subject is CN only" bash -c \
	"[ \"\$(openssl x509 -in '$work/agent1.pem' -noout -subject -nameopt RFC2253)\" = 'subject=CN=agent1.example.org' ]"
check "agent1 EKU serverAuth+clientAuth, critical" bash -c "openssl x509 -in '$work/agent1.pem' -noout -text |
	grep -A1 'Extended Key Usage: critical' | grep -q 'TLS Web Server Authentication, TLS Web Client Authentication'"
check "agent1 KU digitalSignature+keyEncipherment, critical" bash -c "openssl x509 -in '$work/agent1.pem' -noout -text |
	grep -A1 'X509v3 Key Usage: critical' | grep -q 'Digital Signature, Key Encipherment'"
check "agent1 SAN DNS:agent1.example.org" bash -c "openssl x509 -in '$work/agent1.pem' -noout -ext subjectAltName |
	grep -q '^ *DNS:agent1.example.org$'"
check "agent1 CA:FALSE, AKI and SKI" bash -c "t=\$(openssl x509 -in '$work/agent1.pem' -noout -text);
	grep -q CA:FALSE <<<\"\$t\" && grep -q 'Authority Key Identifier' <<<\"\$t\" && grep -q 'Subject Key Identifier' <<<\"\$t\""
check "agent1 cert has the CSR's public key" bash -c \
	"[ \"\$(openssl req -in '$work/agent1.csr' -noout -pubkey)\" = \"\$(openssl x509 -in '$work/agent1.pem' -noout -pubkey)\" ]"
nb=$(not_before "$work/agent1.pem")
now=$(date +%s)
[ $((now - nb)) -ge $((86400 - 120)) ] && [ $((now - nb)) -le $((86400 + 120)) ] &&
	ok "notBefore is now - 1 day" || fail "notBefore $(openssl x509 -in "$work/agent1.pem" -noout -startdate)"
check "pp_auth_auto_renew CSR got --renewal-ttl (60 days)" valid_for_days "$work/agent1.pem" 59 61

csr agent2 agent2.example.org
put_csr a agent2.example.org "$work/agent2.csr"
expect "PUT agent2 CSR (no auto-renew attribute)" 200
echo "sign agent2.example.org" >"$control"
wait_for_cert a agent2.example.org && ok "control line 'sign agent2.example.org' signs" || fail "agent2 not signed ($code)"
cp "$work/body" "$work/agent2.pem"
: >"$control"
check "plain CSR got --ttl (30 days)" valid_for_days "$work/agent2.pem" 29 31

put_csr a agent1.example.org "$work/agent1.csr"
expect "PUT for a name with a signed cert" 400 \
	"agent1.example.org already has a signed certificate; ignoring certificate request"

csr ku agent3.example.org -addext keyUsage=digitalSignature
put_csr a agent3.example.org "$work/ku.csr"
expect "CSR with keyUsage" 400 "Found extensions that are not permitted: 2.5.29.15"
put_csr a agent3.example.org "$work/ku.csr"
expect "refused CSR stays pending, like the real CA" 400 \
	"agent3.example.org already has a requested certificate; ignoring certificate request"

csr mismatch agent4.example.org
put_csr a agent5.example.org "$work/mismatch.csr"
expect "CSR CN differs from the certname" 400 \
	'Instance name "agent4.example.org" does not match requested key "agent5.example.org"'
csr upper Agent6.example.org
put_csr a Agent6.example.org "$work/upper.csr"
expect "upper-case certname" 400 "Certificate names must be lower case."
csr badchar 'agent_6!.example.org'
put_csr a 'agent_6!.example.org' "$work/badchar.csr"
expect "certname with '!'" 400 "Subject hostname format is invalid"

printf 'this is not a CSR\n' >"$work/garbage.csr"
put_csr a agent7.example.org "$work/garbage.csr"
[ "$code" = 500 ] && ok "garbage CSR body (500, like the real CA)" || fail "garbage CSR body: $code"

openssl req -new -newkey rsa:2048 -nodes -keyout "$work/badsig.key" -config "$work/req.cnf" \
	-subj /CN=agent7.example.org -outform DER -out "$work/badsig.der" 2>/dev/null
size=$(stat -c %s "$work/badsig.der")
last=$(tail -c 1 "$work/badsig.der" | od -An -tu1 | tr -d ' ')
{ head -c $((size - 1)) "$work/badsig.der"; printf "\\$(printf %03o $((last ^ 1)))"; } >"$work/badsig2.der"
openssl req -inform DER -in "$work/badsig2.der" -out "$work/badsig.csr" 2>/dev/null
put_csr a agent7.example.org "$work/badsig.csr"
expect "CSR with a broken signature" 400 "CSR contains a public key that does not correspond to the signing key"

csr san agent8.example.org -addext "subjectAltName=DNS:agent8.example.org,DNS:other.example.org"
put_csr a agent8.example.org "$work/san.csr"
expect "CSR with an extra SAN" 400 "CSR 'agent8.example.org' contains extra subject alternative names \
(DNS:other.example.org), which are disallowed. To allow subject alternative names, set \
allow-subject-alt-names to true in your ca.conf file. Then restart the puppetserver and try signing \
this certificate again."

head -c 70000 /dev/zero | tr '\0' A >"$work/big"
put_csr a agent9.example.org "$work/big"
expect "70000-byte body" 413

# ---------------------------------------------------------------- renewal
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "renewal with agent2's cert" 200
cp "$work/body" "$work/agent2-renewed.pem"
check "renewed cert verifies against ca.pem" verifies "$work/agent2-renewed.pem"
check "renewed cert has the same public key" same_pubkey "$work/agent2.pem" "$work/agent2-renewed.pem"
check "renewed cert has the same subject" bash -c "[ \"\$(openssl x509 -in '$work/agent2.pem' -noout -subject)\" = \
	\"\$(openssl x509 -in '$work/agent2-renewed.pem' -noout -subject)\" ]"
check "renewed cert has the same extensions" bash -c \
	"diff <(extensions '$work/agent2.pem') <(extensions '$work/agent2-renewed.pem')"
check "renewed cert has a new serial" bash -c "[ \"\$(openssl x509 -in '$work/agent2.pem' -noout -serial)\" != \
	\"\$(openssl x509 -in '$work/agent2-renewed.pem' -noout -serial)\" ]"
[ "$(not_after "$work/agent2-renewed.pem")" -gt "$(not_after "$work/agent2.pem")" ] &&
	ok "renewed notAfter is later" || fail "renewed notAfter not later"
check "renewed cert lasts --renewal-ttl (60 days)" valid_for_days "$work/agent2-renewed.pem" 59 61
check "renewal replaced signed/agent2.example.org.pem" cmp "$work/agent2-renewed.pem" "$ca/signed/agent2.example.org.pem"

renew a
expect "renewal without a client cert" 400 "No valid certificate found in renewal request"

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/foreign.key" \
	-config "$work/req.cnf" -subj /CN=agent2.example.org -out "$work/foreign.csr" 2>/dev/null
printf 'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\nextendedKeyUsage=clientAuth\n' >"$work/foreign.ext"
openssl x509 -req -in "$work/foreign.csr" -CA "$ca/foreign-ca.pem" -CAkey "$ca/foreign-ca.key" -set_serial 7 \
	-days 30 -extfile "$work/foreign.ext" -out "$work/foreign.pem" 2>/dev/null
renew a --cert "$work/foreign.pem" --key "$work/foreign.key"
expect "renewal with a foreign CA's cert" 403 "Certificate present, but does not match signature"

renew a -H 'X-Client-Cert: whatever' --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "TLS cert plus X-Client-Cert without --header-cert" 400 "No valid certificate found in renewal request"

echo renewal-disabled >"$control"
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "renewal-disabled" 404 "Not Found"

echo no-renewal-rule >"$control"
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "no-renewal-rule: Puppet Server 7's auth.conf denies a valid cert" 403 \
	"Forbidden request: /puppet-ca/v1/certificate_renewal (method :post). Please see the server logs for details."
echo crl-empty >"$control"
req a GET /puppet-ca/v1/certificate_revocation_list/ca
expect "crl-empty" 200
check "crl-empty: the body is empty" test ! -s "$work/body"
echo crl-garbage >"$control"
req a GET /puppet-ca/v1/certificate_revocation_list/ca
expect "crl-garbage" 200
check "crl-garbage: the body is no CRL" bash -c "! openssl crl -in '$work/body' -noout 2>/dev/null"
echo crl-foreign >"$control"
req a GET /puppet-ca/v1/certificate_revocation_list/ca
expect "crl-foreign" 200
check "crl-foreign: signed by the foreign CA, not the CA" bash -c "openssl crl -in '$work/body' \
	-CAfile '$ca/foreign-ca.pem' -noout 2>&1 | grep -q 'verify OK' &&
	! openssl crl -in '$work/body' -CAfile '$ca/ca.pem' -noout 2>/dev/null"

echo garbage >"$control"
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "garbage mode" 200
check "garbage body is no certificate" bash -c "! openssl x509 -in '$work/body' -noout"

echo other-key >"$control"
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "other-key mode" 200
cp "$work/body" "$work/other.pem"
check "other-key cert verifies against ca.pem" verifies "$work/other.pem"
check "other-key cert has another public key" bash -c "! same_pubkey '$work/agent2.pem' '$work/other.pem'"

echo expired >"$control"
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "expired mode" 200
cp "$work/body" "$work/expired.pem"
check "expired cert has the same key" same_pubkey "$work/agent2.pem" "$work/expired.pem"
check "expired cert's notAfter has passed" bash -c "! openssl x509 -in '$work/expired.pem' -noout -checkend 0"

echo shorter >"$control"
renew a --cert "$work/agent2-renewed.pem" --key "$work/agent2.key"
expect "shorter mode" 200
cp "$work/body" "$work/shorter.pem"
[ "$(not_after "$work/shorter.pem")" -lt "$(not_after "$work/agent2-renewed.pem")" ] &&
	ok "shorter cert ends before the presented one" || fail "shorter cert does not end earlier"
check "shorter cert is still valid" openssl x509 -in "$work/shorter.pem" -noout -checkend 60
check "faults leave signed/ alone" cmp "$work/agent2-renewed.pem" "$ca/signed/agent2.example.org.pem"

echo status-500 >"$control"
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
[ "$code" = 500 ] && [ -s "$work/body" ] && ok "status-500 mode (500 with a text body)" || fail "status-500: $code"

echo huge >"$control"
# curl by hand below: the body goes to /dev/null, not to $work/body.
huge() { # huge CURL-ARGS...: prints status and size
	curl -sS --max-time 60 --cacert "$ca/ca.pem" --cert "$work/agent2.pem" --key "$work/agent2.key" \
		-X POST --data-binary '' -H 'Content-Type: text/plain' -o /dev/null -w '%{http_code} %{size_download}' \
		"$@" "https://127.0.0.1:${port[a]}/puppet-ca/v1/certificate_renewal" 2>"$work/huge.err"
}
got=$(huge)
[ "$got" = "200 67108864" ] && ok "huge mode: 200 with 64 MiB" || fail "huge mode: status and size $got"
got=$(huge --max-filesize 100000)
st=$?
[ "$st" -ne 0 ] && ok "client refusing the huge body (curl exit $st)" || fail "curl took the huge body: $got"
req a GET /puppet-ca/v1/certificate/ca
expect "still answering after a client dropped the huge body" 200

echo hang >"$control"
t0=$(date +%s)
hang_renew a "$work/agent2.pem" "$work/agent2.key" 3
sleep 0.5
req a GET /puppet-ca/v1/certificate/ca
expect "other requests answered while one hangs" 200
wait "$hang_pid"
hang_status=$?
[ $(($(date +%s) - t0)) -ge 2 ] && ok "hang mode: no answer until the client gives up" ||
	fail "hang mode answered early (status $hang_status)"
grep -q 'certificate_renewal hang' "$work/a.log" && ok "hang logged" || fail "hang not logged"

echo sign-pending >"$control"
csr agent9 agent9.example.org
put_csr a agent9.example.org "$work/agent9.csr"
expect "PUT agent9 under sign-pending" 200
touch "$ca/sign/agent9.example.org"
sleep 1
req a GET /puppet-ca/v1/certificate/agent9.example.org
expect "sign-pending keeps agent9 unsigned" 404
: >"$control"
wait_for_cert a agent9.example.org && ok "agent9 signed once sign-pending is lifted" || fail "agent9 still unsigned"

echo 'no-such-mode' >"$control"
renew a --cert "$work/agent2.pem" --key "$work/agent2.key"
expect "unknown control word is ignored" 200
: >"$control"

# A connection left hanging must not keep SIGTERM from working.
echo hang >"$control"
hang_renew a "$work/agent2.pem" "$work/agent2.key" 30
sleep 0.5
t0=$(date +%s)
stop a
[ $(($(date +%s) - t0)) -le 5 ] && ok "stopped within 5 s with a hanging client" || fail "slow stop with a hanging client"
wait "$hang_pid" 2>/dev/null
: >"$control"
grep -q 'GET /puppet-ca/v1/certificate/ca 200' "$work/a.log" && ok "requests logged with method, path, status" ||
	fail "request log lines missing"

# ---------------------------------------------------------------- header mode
start b --header-cert
check "CA reused on restart" bash -c "openssl verify -CAfile '$ca/ca.pem' '$work/agent1.pem'"
renew b -H "X-Client-Cert: $(urlencode <"$work/agent1.pem")"
expect "header-cert: renewal with X-Client-Cert" 200
cp "$work/body" "$work/agent1-renewed.pem"
check "header-cert: same public key" same_pubkey "$work/agent1.pem" "$work/agent1-renewed.pem"
check "header-cert: renewed cert verifies" verifies "$work/agent1-renewed.pem"
renew b --cert "$work/agent1.pem" --key "$work/agent1.key"
expect "header-cert: TLS client cert alone is not used" 400 "No valid certificate found in renewal request"
renew b -H "X-Client-Cert: $(cat "$work/agent1.pem" "$work/agent2.pem" | urlencode)"
expect "header-cert: two certificates" 400 "Only 1 PEM should be supplied for x-client-cert but 2 found"
renew b -H "X-Client-Cert: $(urlencode <"$work/foreign.pem")"
expect "header-cert: foreign CA's cert" 403 "Certificate present, but does not match signature"
renew b -H 'X-Client-Cert: hello'
expect "header-cert: no PEM in the header" 400 "No certs found in PEM read from x-client-cert"
stop b

# ---------------------------------------------------------------- strict auth
addr=127.0.0.1
if [ -e /proc/net/if_inet6 ] && grep -q '^0\{31\}1 ' /proc/net/if_inet6; then addr=::1; fi
listen[c]=$addr
start c --strict-auth --autosign --listen "$addr"
csr agent10 agent10.example.org
put_csr c agent10.example.org "$work/agent10.csr"
expect "strict ($addr): PUT with --autosign" 200
req c GET /puppet-ca/v1/certificate/agent10.example.org
expect "autosign: signed at once" 200
cp "$work/body" "$work/agent10.pem"
renew c --cert "$work/agent10.pem" --key "$work/agent10.key"
expect "strict: renewal with a valid cert" 200
renew c
expect "strict: renewal without a cert is denied by auth.conf" 403 \
	"Forbidden request: /puppet-ca/v1/certificate_renewal (method :post). Please see the server logs for details."
renew c --cert "$work/foreign.pem" --key "$work/foreign.key"
[ "$curl_status" -ne 0 ] && [ "$code" = 000 ] && ok "strict: foreign client cert fails the TLS handshake (curl exit $curl_status)" ||
	fail "strict: foreign client cert got HTTP $code"
req c GET /puppet-ca/v1/expirations
expect "strict: routes without a rule are denied" 403
stop c

# ---------------------------------------------------------------- valgrind
if [ "${FAKE_CA_VALGRIND:-0}" = 1 ]; then
	SRV_WRAPPER="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
--show-leak-kinds=definite --log-file=$work/valgrind.log" SRV_START_TRIES=600 SRV_STOP_TRIES=600 \
		start v --autosign
	req v GET /puppet-ca/v1/certificate/ca
	expect "valgrind: GET ca" 200
	agent_csr agent11 agent11.example.org
	put_csr v agent11.example.org "$work/agent11.csr"
	expect "valgrind: PUT" 200
	req v GET /puppet-ca/v1/certificate/agent11.example.org
	expect "valgrind: GET cert" 200
	cp "$work/body" "$work/agent11.pem"
	renew v --cert "$work/agent11.pem" --key "$work/agent11.key"
	expect "valgrind: renewal" 200
	renew v --cert "$work/foreign.pem" --key "$work/foreign.key"
	expect "valgrind: foreign cert" 403
	put_csr v agent12.example.org "$work/ku.csr"
	expect "valgrind: bad CSR" 400
	for m in other-key expired shorter garbage; do
		echo "$m" >"$control"
		renew v --cert "$work/agent11.pem" --key "$work/agent11.key"
		expect "valgrind: $m" 200
	done
	echo hang >"$control"
	hang_renew v "$work/agent11.pem" "$work/agent11.key" 60
	sleep 2
	SRV_STOP_TRIES=600 stop v
	: >"$control"
	if [ ! -e "$work/valgrind.log" ] || [ -s "$work/valgrind.log" ]; then
		fail "valgrind reported something"
		sed 's/^/#   /' "$work/valgrind.log" 2>/dev/null
	else
		ok "valgrind: no errors, no definite leaks"
	fi
fi

echo "# $passed passed, $failed failed"
[ "$failed" -eq 0 ]
