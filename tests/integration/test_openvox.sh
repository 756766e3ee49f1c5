#!/usr/bin/env bash
# keysvc-openvox end to end: keysvcd on a private SoftHSM token, the
# fake OpenVox CA (tests/ca) on 127.0.0.1, enrollment and renewal through
# the provider, and every way the CA can answer wrong. Where a renewal
# fails, the installed certificate must be unchanged byte for byte.
#
# Arguments: the fake-openvox-ca and keysvc-openvox programs.
set -uo pipefail

fake_ca=$1
ovx=$2
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-openvox.XXXXXX")
chmod 0711 "$work"
cleanup() {
	ks_fake_stop
	ks_stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# start_ca DIR [FLAGS...]: the fake CA on 127.0.0.1, port in $ca_port
start_ca() {
	local dir=$1
	shift
	ks_fake_start "$fake_ca" --dir "$dir" --control "$work/control" "$@"
	ca_port=$KS_FAKE_PORT
}
stop_ca() { ks_fake_stop; }
mode() { echo "$1" >"$work/control"; }

export OPENSSL_MODULES=$KS_PROVIDER_DIR
export KEYSVC_INVENTORY=$work/inv
me=$(id -u)
policy='[{"uid": '"$me"', "keys": ["agent*"], "ops": ["key.generate", "key.list", "key.public", "key.delete", "csr.create", "sign"]},
         {"uid": '"$me"', "keys": ["nosign"], "ops": ["key.generate", "key.public", "csr.create"]}]'
ks_start "$work/d" "$policy"
: >"$work/control"
cadir=$work/ca
start_ca "$cadir" --ttl 864000 --renewal-ttl 7776000
server=https://127.0.0.1:$ca_port
certs=$work/certs
mkdir -p "$certs"
cert=$certs/agent1.pem
common=(--server "$server" --socket "$KS_SOCKET" --certname agent1.example.org --key agent1 --cert "$cert" --quiet)

# ---- enrollment ----
run_exit 2 "never trusted on first sight" "enroll without a pinned CA is refused" "$ovx" enroll "${common[@]}"
run_exit 2 "certname" "an upper-case certname is refused" "$ovx" enroll --server "$server" \
	--certname Agent1 --cert "$cert" --ca-file "$cadir/ca.pem"
run_exit 2 "https://" "an http:// server is refused" "$ovx" enroll --server "http://127.0.0.1:$ca_port" \
	--certname agent1.example.org --cert "$cert" --ca-file "$cadir/ca.pem"

# Not signed yet, asked once: exit 22, the key and the request stay.
run_exit 22 "has not signed" "enroll before the CA signs: not signed in time" \
	"$ovx" enroll "${common[@]}" --ca-file "$cadir/ca.pem" --maxwaitforcert 0
check "the key was made in the token" ks_cli pubkey agent1
[ -e "$cert" ] && fail "nothing installed before signing" || ok "nothing installed before signing"
check "the CSR reached the CA" test -s "$cadir/requests/agent1.example.org.pem"
check "the CSR carries pp_auth_auto_renew" bash -c \
	"openssl req -in '$cadir/requests/agent1.example.org.pem' -noout -text | grep -A1 '1.3.6.1.4.1.34380.1.3.2' | grep -q true"
check "the CSR is for the token key" bash -c \
	"openssl req -in '$cadir/requests/agent1.example.org.pem' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey agent1)"

# Signed while the client polls.
( sleep 1.5; mkdir -p "$cadir/sign"; touch "$cadir/sign/agent1.example.org" ) &
signer=$!
run_exit 0 "" "enroll: polls until the CA signs, then installs" \
	"$ovx" enroll "${common[@]}" --ca-file "$cadir/ca.pem" --waitforcert 1 --maxwaitforcert 30 \
	--crl-out "$certs/crl.pem"
wait "$signer"
check "the certificate verifies against the CA" openssl verify -CAfile "$cadir/ca.pem" "$cert"
check "the certificate is for the token key" bash -c \
	"openssl x509 -in '$cert' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey agent1)"
check "the agent key has only the purposes it needs (csr,tls)" bash -c \
	"'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -Eq '^agent1 .* csr,tls\$'"
check "the certificate is CN=agent1.example.org" bash -c \
	"openssl x509 -in '$cert' -noout -subject -nameopt RFC2253 | grep -qx 'subject=CN=agent1.example.org'"
check "the CRL was installed and verifies" openssl crl -in "$certs/crl.pem" -CAfile "$cadir/ca.pem" -noout

# Fingerprint bootstrap.
fp=$(openssl x509 -in "$cadir/ca.pem" -noout -fingerprint -sha256 | cut -d= -f2)
bad_fp=$(openssl x509 -in "$cadir/foreign-ca.pem" -noout -fingerprint -sha256 | cut -d= -f2)
run_exit 18 "no certificate of the CA bundle has fingerprint" "enroll with a wrong CA fingerprint" \
	"$ovx" enroll "${common[@]}" --cert "$certs/fp.pem" --ca-fingerprint "SHA256:$bad_fp" --ca-out "$certs/fp-ca.pem"
[ -e "$certs/fp-ca.pem" ] && fail "wrong fingerprint: CA not installed" || ok "wrong fingerprint: CA not installed"
run_exit 22 "has not signed" "enroll with the right CA fingerprint (second agent, pending)" \
	"$ovx" enroll --server "$server" --socket "$KS_SOCKET" --certname agent2.example.org --key agent2 \
	--cert "$certs/agent2.pem" --ca-fingerprint "SHA256:$fp" --ca-out "$certs/fp-ca.pem" \
	--waitforcert 1 --maxwaitforcert 0 --quiet
[ -e "$certs/fp-ca.pem" ] && fail "pending: --ca-out not written before a certificate is" ||
	ok "pending: --ca-out not written before a certificate is"

# A man in the middle adds his CA to the bundle, next to the genuine one, and
# answers with a certificate for the token key that his CA issued. Only what
# the pinned (or fingerprinted) CA vouches for is trusted.
printf 'extra-ca\nforeign-cert\nsign agent3.example.org\n' >"$work/control"
for pin in "fingerprint|--ca-fingerprint|SHA256:$fp" "--ca-file|--ca-file|$cadir/ca.pem"; do
	IFS='|' read -r label pin_opt pin_val <<<"$pin"
	run_exit 18 "does not chain" "$label: a certificate from a CA added to the bundle is refused" \
		"$ovx" enroll --server "$server" --socket "$KS_SOCKET" --certname agent3.example.org --key agent3 \
		--cert "$certs/mitm.pem" "$pin_opt" "$pin_val" --ca-out "$certs/mitm-ca.pem" \
		--waitforcert 1 --maxwaitforcert 10 --quiet
	for f in mitm.pem mitm-ca.pem; do
		[ -e "$certs/$f" ] && fail "$label, added CA: $f not installed" || ok "$label, added CA: $f not installed"
	done
done
# The genuine certificate, the extra CA still in the bundle: enrolled, and
# --ca-out holds the genuine CA only.
mode extra-ca
run_exit 0 "" "fingerprint: enrolled with an extra CA in the bundle" \
	"$ovx" enroll --server "$server" --socket "$KS_SOCKET" --certname agent3.example.org --key agent3 \
	--cert "$certs/agent3.pem" --ca-fingerprint "SHA256:$fp" --ca-out "$certs/agent3-ca.pem" \
	--waitforcert 1 --maxwaitforcert 10 --quiet
check "fingerprint: --ca-out holds the genuine CA only" cmp -s "$certs/agent3-ca.pem" "$cadir/ca.pem"
check "fingerprint: the certificate verifies against --ca-out" \
	openssl verify -CAfile "$certs/agent3-ca.pem" "$certs/agent3.pem"
run_exit 0 "" "--ca-file: enrolled with an extra CA in the bundle" \
	"$ovx" enroll --server "$server" --socket "$KS_SOCKET" --certname agent3.example.org --key agent3 \
	--cert "$certs/agent3b.pem" --ca-file "$cadir/ca.pem" --ca-out "$certs/agent3b-ca.pem" \
	--waitforcert 1 --maxwaitforcert 10 --quiet
check "--ca-file: --ca-out holds the genuine CA only" cmp -s "$certs/agent3b-ca.pem" "$cadir/ca.pem"
mode normal

# A CSR the CA refuses (extra SANs, allow-subject-alt-names off) is not
# "not signed yet": exit 17 with the CA's whole reason on stderr, even quiet.
san_reason="CSR 'agent5.example.org' contains extra subject alternative names (DNS:extra.example.org), which are \
disallowed. To allow subject alternative names, set allow-subject-alt-names to true in your ca.conf file. Then \
restart the puppetserver and try signing this certificate again."
run_exit 17 "the CA refused the CSR for agent5.example.org (HTTP 400): $san_reason" \
	"a CSR the CA refuses: exit 17, the whole reason on stderr with --quiet" \
	bash -c '"$0" "$@" 2>&1 >/dev/null' "$ovx" enroll --server "$server" --socket "$KS_SOCKET" \
	--certname agent5.example.org --key agent5 --cert "$certs/agent5.pem" --ca-file "$cadir/ca.pem" \
	--dns-alt-name extra.example.org --waitforcert 1 --maxwaitforcert 0 --quiet
[ -e "$certs/agent5.pem" ] && fail "refused CSR: nothing installed" || ok "refused CSR: nothing installed"
check "refused CSR: recorded as failed with the reason" ks_inventory_says "$work/inv" /agent5.pem outcome failed

# The CRL is checked before anything is installed: a CRL that is empty (no
# bytes), does not parse or is signed by another CA is exit 18 with nothing
# installed and no CRL recorded, so keysvc status has nothing to fail on.
inv6=$work/inv6
enroll6() {
	"$ovx" enroll --server "$server" --socket "$KS_SOCKET" --certname agent6.example.org --key agent6 \
		--cert "$certs/agent6.pem" --ca-file "$cadir/ca.pem" --crl-out "$certs/agent6-crl.pem" \
		--waitforcert 1 --maxwaitforcert 10 --inventory "$inv6" --quiet
}
for m in "crl-empty:does not parse" "crl-garbage:does not parse" "crl-foreign:not signed by the CA"; do
	printf '%s\nsign agent6.example.org\n' "${m%%:*}" >"$work/control"
	run_exit 18 "${m#*:}" "enroll, CA in mode ${m%%:*}: exit 18" enroll6
	for f in agent6.pem agent6-crl.pem; do
		[ -e "$certs/$f" ] && fail "mode ${m%%:*}: $f not installed" || ok "mode ${m%%:*}: $f not installed"
	done
	check "mode ${m%%:*}: recorded as failed, no CRL recorded" ks_inventory_says "$inv6" /agent6.pem \
		outcome failed crl None
	st=0
	ks_cli status --inventory "$inv6" >"$work/status.out" 2>&1 || st=$?
	[ "$st" -ne 1 ] && ok "mode ${m%%:*}: keysvc status has no error (exit $st)" ||
		{ fail "mode ${m%%:*}: keysvc status exit 1"; sed 's/^/#   /' "$work/status.out"; }
done
# The CA signed agent6 meanwhile: enroll again is told "already has a signed
# certificate", fetches it and installs it with the CRL (one without entries).
mode normal
run_exit 0 "" "enroll again with a good CRL: installed" enroll6
check "agent6: the certificate verifies against the CA" openssl verify -CAfile "$cadir/ca.pem" "$certs/agent6.pem"
check "agent6: the CRL is installed and verifies" openssl crl -in "$certs/agent6-crl.pem" -CAfile "$cadir/ca.pem" -noout
check "agent6: recorded ok with the CRL" ks_inventory_says "$inv6" /agent6.pem outcome ok crl "$certs/agent6-crl.pem"
run_exit 0 "" "agent6: keysvc status is content" ks_cli status --inventory "$inv6"

# ---- renewal ----
cp "$cert" "$work/before.pem"
unchanged() { cmp -s "$cert" "$work/before.pem"; }
renew() { "$ovx" renew "${common[@]}" --ca-file "$cadir/ca.pem" "$@"; }

run_exit 10 "" "renew --when-due: not due (90 days left, interval 30)" renew --when-due
check "not due: certificate unchanged" unchanged

for m in renewal-disabled:17:"auto-renewal is disabled on this CA" \
	garbage:18:"something other than PEM certificates" \
	other-key:18:"another public key than the token key" \
	expired:18:"expired" \
	shorter:18:"no later than the current one" \
	status-500:17:"unexpected answer from the CA: HTTP 500" \
	huge:19:"" \
	hang:19:""; do
	name=${m%%:*}
	rest=${m#*:}
	code=${rest%%:*}
	text=${rest#*:}
	mode "$name"
	run_exit "$code" "$text" "renew against a CA in mode $name" renew --timeout 3
	check "mode $name: certificate unchanged byte for byte" unchanged
	[ -e "$cert.prev" ] && fail "mode $name: no .prev made" || ok "mode $name: no .prev made"
done
mode normal

run_exit 19 "" "renew with a CA file that does not match the server: TLS verification fails" \
	"$ovx" renew "${common[@]}" --ca-file "$cadir/foreign-ca.pem"
check "wrong CA file: certificate unchanged" unchanged
run_exit 7 "cannot reach keysvcd at $work/none.sock: No such file or directory; is it running? (systemctl status keysvcd.socket)" \
	"renew with keysvcd unreachable: the socket named" \
	"$ovx" renew --server "$server" --socket "$work/none.sock" --certname agent1.example.org --key agent1 \
	--cert "$cert" --ca-file "$cadir/ca.pem"
run_exit 2 "is not a certificate for key" "renew with the certificate of another key" \
	"$ovx" renew --server "$server" --socket "$KS_SOCKET" --certname agent1.example.org --key agent2 \
	--cert "$cert" --ca-file "$cadir/ca.pem"
check "other key: certificate unchanged" unchanged

# A certificate for the token key issued by another CA: 403.
ks_cli csr agent1 --subject CN=agent1.example.org --out "$work/foreign.csr" >/dev/null
openssl x509 -req -in "$work/foreign.csr" -CA "$cadir/foreign-ca.pem" -CAkey "$cadir/foreign-ca.key" \
	-CAcreateserial -days 30 -out "$work/foreign.pem" 2>/dev/null
cp "$work/foreign.pem" "$work/foreign-before.pem"
run_exit 17 "not signed by this CA" "renew with a certificate from a foreign CA: 403" \
	"$ovx" renew "${common[@]}" --cert "$work/foreign.pem" --ca-file "$cadir/ca.pem"
check "403: certificate unchanged" cmp -s "$work/foreign.pem" "$work/foreign-before.pem"

# Puppet Server 7's stock auth.conf has no rule for the renewal route (7 has
# no such route): tk-authorization's 403, which is not a CA mismatch.
mode no-renewal-rule
run_exit 17 "auth.conf denies the renewal" "renew against Puppet Server 7's auth.conf: 403 Forbidden request" renew
cp "$work/out" "$work/auth403.out"
for text in 'path: "^/puppet-ca/v1/certificate_renewal$", type: regex, method: post' 'allow: "*"' \
	'sort-order: 500' 'before 8 have no renewal endpoint'; do
	check "auth.conf 403: the message says '$text'" grep -qF -- "$text" "$work/auth403.out"
done
check "auth.conf 403: not called a CA mismatch" bash -c "! grep -q 'not signed by this CA' '$work/auth403.out'"
check "auth.conf 403: certificate unchanged" unchanged
mode normal

# keysvcd will not sign with the key: the handshake cannot complete.
ks_cli keygen nosign --type ec-p256 >/dev/null
ks_cli csr nosign --subject CN=nosign.example.org --out "$work/nosign.csr" >/dev/null
openssl x509 -req -in "$work/nosign.csr" -CA "$cadir/ca.pem" -CAkey "$cadir/ca.key" \
	-CAcreateserial -days 30 -out "$work/nosign.pem" 2>/dev/null
run_exit 8 "denied" "renew with a key keysvcd may not sign with" \
	"$ovx" renew --server "$server" --socket "$KS_SOCKET" --certname nosign.example.org --key nosign \
	--cert "$work/nosign.pem" --ca-file "$cadir/ca.pem"

sleep 1.1   # the renewed certificate must end later, to the second
run_exit 0 "" "renew: 200, checked, installed" renew
check "renewed: the previous certificate is kept as .prev" cmp -s "$cert.prev" "$work/before.pem"
check "renewed: a new certificate" bash -c "! cmp -s '$cert' '$work/before.pem'"
check "renewed: same public key" bash -c \
	"cmp -s <(openssl x509 -in '$cert' -noout -pubkey) <(openssl x509 -in '$work/before.pem' -noout -pubkey)"
check "renewed: chains to the CA" openssl verify -CAfile "$cadir/ca.pem" "$cert"
check "renewed: ends later" bash -c \
	"[ \$(date -d \"\$(openssl x509 -in '$cert' -noout -enddate | cut -d= -f2)\" +%s) -gt \$(date -d \"\$(openssl x509 -in '$work/before.pem' -noout -enddate | cut -d= -f2)\" +%s) ]"
sleep 1.1
run_exit 0 "" "renew --when-due with a 3650-day interval: due, renewed" renew --when-due --renewal-interval 3650

# ---- one run at a time per certificate ----
# The timer and a manual run at once, against a busy CA: the first renews,
# the second waits for the lock, then finds the new certificate not due.
# Without the lock both would renew, and .prev would hold the first renewal.
stop_ca
start_ca "$cadir" --renewal-ttl 17280000      # 200 days: not due within a 100-day interval; 90 left now
server=https://127.0.0.1:$ca_port
common=(--server "$server" --socket "$KS_SOCKET" --certname agent1.example.org --key agent1 --cert "$cert" --quiet)
cp "$cert" "$work/before.pem"
mode slow
renew --when-due --renewal-interval 100 >"$work/first.out" 2>&1 &
first=$!
sleep 0.5
run_exit 10 "" "a second renew --when-due during the first: waits for it, then not due" \
	renew --when-due --renewal-interval 100
st=0
wait "$first" || st=$?
[ "$st" -eq 0 ] && ok "the first run renewed" || { fail "the first run renewed: exit $st"; sed 's/^/#   /' "$work/first.out"; }
mode normal
check "two runs at once: .prev keeps the original certificate" cmp -s "$cert.prev" "$work/before.pem"
check "the lock file is beside the certificate, 0600" test "$(stat -c %a "$cert.lock")" = 600
# A run that holds the lock longer than --lock-wait: exit 13, nothing touched.
cp "$cert" "$work/before.pem"
cp "$cert.prev" "$work/before.prev"
flock "$cert.lock" sleep 4 &
holder=$!
while flock -n "$cert.lock" true; do sleep 0.1; done
run_exit 13 "another run holds the lock on $cert" "renew while another run holds the lock: busy" \
	renew --lock-wait 1
check "busy: certificate unchanged" unchanged
check "busy: .prev unchanged" cmp -s "$cert.prev" "$work/before.prev"
wait "$holder"

# A CA behind a TLS-terminating proxy: the certificate only in X-Client-Cert.
stop_ca
start_ca "$cadir" --header-cert --renewal-ttl 17280000
server=https://127.0.0.1:$ca_port
common=(--server "$server" --socket "$KS_SOCKET" --certname agent1.example.org --key agent1 --cert "$cert" --quiet)
cp "$cert" "$work/before.pem"
run_exit 17 "no client certificate reached the CA" "header mode, certificate in TLS only: 400" renew
check "400: certificate unchanged" unchanged
sleep 1.1
run_exit 0 "" "header mode with --header-cert: renewed" renew --header-cert
check "header mode: the previous certificate kept" cmp -s "$cert.prev" "$work/before.pem"

# The whole Puppet Server stack: a client certificate this CA did not sign
# fails the TLS handshake itself, before any 403 could say so.
stop_ca
start_ca "$cadir" --strict-auth
server=https://127.0.0.1:$ca_port
common=(--server "$server" --socket "$KS_SOCKET" --certname agent1.example.org --key agent1 --cert "$cert" --quiet)
run_exit 19 "Puppet Server refuses a client certificate it did not sign" "strict: renew with a certificate from a foreign CA fails in the TLS handshake" \
	"$ovx" renew "${common[@]}" --cert "$work/foreign.pem" --ca-file "$cadir/ca.pem"
check "strict, foreign CA: certificate unchanged" cmp -s "$work/foreign.pem" "$work/foreign-before.pem"

# Rotation: a new key through enrollment, the old key deleted after.
stop_ca
rm -f "$cadir/signed/agent1.example.org.pem"     # what `puppetserver ca clean` does
start_ca "$cadir" --autosign
server=https://127.0.0.1:$ca_port
common=(--server "$server" --socket "$KS_SOCKET" --certname agent1.example.org --key agent1 --cert "$cert" --quiet)
cp "$cert" "$work/before.pem"
run_exit 0 "" "renew --rotate-key agent1-b" renew --rotate-key agent1-b --waitforcert 1 --maxwaitforcert 10
check "rotated: the certificate is for the new key" bash -c \
	"openssl x509 -in '$cert' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey agent1-b)"
run_exit 14 "" "rotated: the old key is gone" ks_cli pubkey agent1
check "rotated: the previous certificate kept" cmp -s "$cert.prev" "$work/before.pem"

# No keysvc.so where the client looks: enrollment uses no token key for TLS
# and works; renewal does, and says which directory it searched.
mkdir -p "$work/no-provider"
agent7=(--server "$server" --socket "$KS_SOCKET" --certname agent7.example.org --key agent7
	--cert "$certs/agent7.pem" --ca-file "$cadir/ca.pem" --quiet)
run_exit 0 "" "enroll without the keysvc provider installed: enrolled" \
	"$ovx" enroll "${agent7[@]}" --provider-dir "$work/no-provider" --waitforcert 1 --maxwaitforcert 10
check "enrolled without the provider: the certificate is installed" \
	openssl verify -CAfile "$cadir/ca.pem" "$certs/agent7.pem"
cp "$certs/agent7.pem" "$work/agent7-before.pem"
run_exit 10 "" "renew --when-due without the provider: not due, no request needs it" \
	"$ovx" renew "${agent7[@]}" --provider-dir "$work/no-provider" --when-due
run_exit 1 "no usable keysvc.so in $work/no-provider (--provider-dir" \
	"renew without the provider (--provider-dir): names the directory searched" \
	"$ovx" renew "${agent7[@]}" --provider-dir "$work/no-provider"
run_exit 1 "no usable keysvc.so in $work/no-provider (\$OPENSSL_MODULES" \
	"renew without the provider (\$OPENSSL_MODULES): names the directory searched" \
	env OPENSSL_MODULES="$work/no-provider" "$ovx" renew "${agent7[@]}"
modulesdir=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"$/\1/p')
if [ -n "$modulesdir" ] && [ ! -e "$modulesdir/keysvc.so" ]; then
	run_exit 1 "no usable keysvc.so in $modulesdir (OpenSSL's modules directory" \
		"renew without the provider (no --provider-dir, no \$OPENSSL_MODULES): names OpenSSL's directory" \
		env -u OPENSSL_MODULES "$ovx" renew "${agent7[@]}"
else
	ok "# SKIP keysvc.so is installed in OpenSSL's modules directory ${modulesdir:-(unknown)}"
fi
check "renew without the provider: certificate unchanged" cmp -s "$certs/agent7.pem" "$work/agent7-before.pem"

stop_ca
ks_stop || fail "keysvcd exit status"
echo "# openvox: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
