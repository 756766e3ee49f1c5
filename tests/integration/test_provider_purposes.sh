#!/usr/bin/env bash
# Purpose-bound keys through the OpenSSL provider (issue 21). Keys whose
# only purpose is tls make TLS 1.2 and 1.3 handshakes with openssl
# s_server/s_client on 127.0.0.1, as the server and as the client (ECDSA,
# RSA-PSS, and RSA PKCS#1 v1.5 in TLS 1.2): the provider sends keysvcd the
# handshake's signature input itself, which keysvcd checks (proto/sigform)
# before it hashes and signs it, and audits with the purpose tls. The same
# keys refuse what a signing oracle would make: a CSR for any subject, a
# self-signed CA certificate, a signature over arbitrary data or over a
# digest, and a TLS 1.3 CertificateVerify content with the wrong context
# string; every refusal is audited.
set -uo pipefail

. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/purpose_tls.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-purposes.XXXXXX")
chmod 0711 "$work"
passed=0
failed=0

cleanup() {
	ks_tls_server_stop now
	ks_stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "not ok - $*"; }
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@" >"$work/out" 2>&1; then ok "$what"; else fail "$what"; sed 's/^/#   /' "$work/out"; fi
}
check_fails_with() { # check_fails_with DESCRIPTION TEXT COMMAND...: exits non-zero and says TEXT
	local what=$1 text=$2 st=0
	shift 2
	"$@" >"$work/out" 2>&1 || st=$?
	if [ "$st" -ne 0 ] && grep -qF -- "$text" "$work/out"; then ok "$what"; else
		fail "$what: exit $st, expected failure saying '$text'"
		sed 's/^/#   /' "$work/out"
	fi
}

export OPENSSL_MODULES=$KS_PROVIDER_DIR
prov=(-provider default -provider keysvc)

me=$(id -u)
policy='[{"uid": '"$me"', "keys": ["t-*"], "ops": ["key.generate", "key.list", "key.public", "csr.create", "sign"]}]'
ks_start "$work/d" "$policy"
export KEYSVC_SOCKET=$KS_SOCKET
audit=$KS_DIR/audit.log

# A file CA, and a file key and certificate for the other end.
pt_ca "$work/ca" || ks_die "cannot make the test CA"

for k in t-ec t-rsa; do
	type=ec-p256
	[ "$k" = t-rsa ] && type=rsa-2048
	check "$k: keygen --purpose tls" ks_cli keygen "$k" --type "$type" --purpose tls --out "$work/$k.pub"
	check "$k: keysvc list shows the purpose tls" bash -c \
		"'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -w '$k' | grep -qw tls"
	check "$k: certificate for the token's public key" pt_cert "$k" "$work/$k.pub" "$work/$k.pem"
done

for side in server client; do
	check "t-ec as $side, TLS 1.3, ECDSA" pt_handshake "$side" t-ec tls1_3 ecdsa_secp256r1_sha256
	check "t-ec as $side, TLS 1.2, ECDSA" pt_handshake "$side" t-ec tls1_2 ecdsa_secp256r1_sha256
	check "t-rsa as $side, TLS 1.3, RSA-PSS" pt_handshake "$side" t-rsa tls1_3 rsa_pss_rsae_sha256
	check "t-rsa as $side, TLS 1.2, RSA-PSS" pt_handshake "$side" t-rsa tls1_2 rsa_pss_rsae_sha256
	check "t-rsa as $side, TLS 1.2, RSA PKCS#1 v1.5" pt_handshake "$side" t-rsa tls1_2 rsa_pkcs1_sha256
	check "t-rsa as $side, TLS 1.2, RSA PKCS#1 v1.5 with SHA-384" pt_handshake "$side" t-rsa tls1_2 rsa_pkcs1_sha384
done

# The forgeries of issue 21, each refused by keysvcd and audited.
for k in t-ec t-rsa; do
	check "$k: a CSR for any subject (openssl req -new) is refused" pt_refused "$k" "has the purposes tls" \
		pt_forge openssl req "${prov[@]}" -new -key "keysvc:$k" -subj "/CN=www.bank.example" -out "$work/forged.csr"
	check "$k: a self-signed CA:TRUE certificate is refused" pt_refused "$k" "has the purposes tls" \
		pt_forge openssl req "${prov[@]}" -x509 -new -key "keysvc:$k" -subj "/CN=Evil CA" -days 2 \
		-addext basicConstraints=critical,CA:true -out "$work/forged-ca.pem"
	printf 'I, the holder of this key, owe Mallory 1000 EUR.' >"$work/message"
	check "$k: a signature over an arbitrary message is refused" pt_refused "$k" "has the purposes tls" \
		pt_forge openssl dgst "${prov[@]}" -sha256 -sign "keysvc:$k" -out "$work/forged.sig" "$work/message"
	openssl dgst -sha256 -binary "$work/message" >"$work/message.sha256"
	check "$k: a signature over a digest is refused" pt_refused "$k" "signing a digest needs the purpose sign" \
		pt_forge openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$k" -pkeyopt digest:sha256 \
		-in "$work/message.sha256" -out "$work/forged.sig"
done
[ -e "$work/forged.csr" ] || [ -e "$work/forged-ca.pem" ] && fail "a forged file was written" ||
	ok "no forged CSR or certificate was written"

# A TLS 1.3 CertificateVerify content, made by hand: with the server's
# context string it is signed (through the provider, which sends it whole)
# and verifies; with another context string it is refused.
hash=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
tls13() { # tls13 CONTEXT FILE
	python3 -c 'import sys; sys.stdout.buffer.write(b" " * 64 + sys.argv[1].encode() + b"\0" + bytes.fromhex(sys.argv[2]))' \
		"$1" "$hash" >"$2"
}
tls13 "TLS 1.3, server CertificateVerify" "$work/cv-good"
tls13 "TLS 1.3, server Finished_________" "$work/cv-bad"
check "the TLS 1.3 content is $((64 + 34 + 32)) bytes" test "$(stat -c %s "$work/cv-good")" -eq 130
for k in t-ec t-rsa; do
	check "$k: a TLS 1.3 CertificateVerify content is signed" openssl dgst "${prov[@]}" -sha256 \
		-sign "keysvc:$k" -out "$work/cv.sig" "$work/cv-good"
	check "$k: ... and the signature verifies" openssl dgst -sha256 -verify "$work/$k.pub" \
		-signature "$work/cv.sig" "$work/cv-good"
	check "$k: a TLS 1.3 content with the wrong context string is refused" pt_refused "$k" \
		"wrong context string" pt_forge openssl dgst "${prov[@]}" -sha256 -sign "keysvc:$k" \
		-out "$work/cv-bad.sig" "$work/cv-bad"
done
check "every refusal names the purpose it needed or the form it lacked" \
	bash -c "grep '\"outcome\":\"denied\"' '$audit' | grep -q '\"purpose\":'"

ks_stop || fail "keysvcd exit status"
echo "# provider-purposes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
