#!/usr/bin/env bash
# The keysvc OpenSSL provider driven by the real openssl programs: keys
# loaded as keysvc:NAME, CSRs, certificates, raw and digest signatures,
# TLS 1.2 and 1.3 client authentication with s_client/s_server on
# 127.0.0.1, and keysvcd's errors surfacing as OpenSSL errors.
#
# keysvcd runs on faultp11 (tests/faultp11) in pass-through mode, so the
# token can be "pulled" for the token-unavailable case.
set -uo pipefail

. "$KS_SOURCE_ROOT/tests/integration/harness.sh"

# provider_api (provider_api.c): the checks openssl(1) cannot express.
api=${1:?usage: test_provider.sh PATH_OF_provider_api}

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-provider.XXXXXX")
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

# Most checks load default first; the TLS handshakes and the checks after
# "keysvc loaded first" run in the other order too (prov_kf).
export OPENSSL_MODULES=$KS_PROVIDER_DIR
prov=(-provider default -provider keysvc)
prov_kf=(-provider keysvc -provider default)

export KS_FAULTP11_TARGET=${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
export KS_FAULTP11_CONTROL=$work/faults
: >"$KS_FAULTP11_CONTROL"
KS_SOFTHSM_MODULE=$KS_FAULTP11

me=$(id -u)
policy='[{"uid": '"$me"', "keys": ["*"], "ops": ["key.generate", "key.list", "key.public", "key.delete", "csr.create", "cert.put", "cert.get"]},
         {"uid": '"$me"', "keys": ["k-*", "ca-*"], "ops": ["sign"]}]'
ks_start "$work/d" "$policy"
export KEYSVC_SOCKET=$KS_SOCKET

check "provider loads" openssl list "${prov[@]}" -providers
check "provider lists its store loader" bash -c "openssl list ${prov[*]} -store-loaders | grep -q keysvc"

# Loaded from openssl.cnf, the socket from the provider's own section.
cat >"$work/openssl.cnf" <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
keysvc = keysvc_sect
[default_sect]
activate = 1
[keysvc_sect]
module = $KS_PROVIDER_DIR/keysvc.so
socket = $KS_SOCKET
activate = 1
CNF
check "openssl.cnf: keysvc loaded with its socket parameter" ks_cli keygen k-conf --type ec-p256 --out "$work/k-conf.pub"
check "openssl.cnf: keysvc:k-conf without KEYSVC_SOCKET or -provider" bash -c \
	"env -u KEYSVC_SOCKET -u OPENSSL_MODULES OPENSSL_CONF='$work/openssl.cnf' openssl pkey -in keysvc:k-conf -pubout | cmp -s - '$work/k-conf.pub'"
check "openssl.cnf: -text_pub shows a 256-bit EC key" bash -c \
	"env -u KEYSVC_SOCKET OPENSSL_CONF='$work/openssl.cnf' openssl pkey -in keysvc:k-conf -text_pub -noout | grep -q '256 bit'"

# A file CA for the client certificates and the TLS server.
ca=$work/ca
mkdir -p "$ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/ca.key" \
	-out "$ca/ca.pem" -subj "/CN=keysvc test CA" -days 2 \
	-addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign >/dev/null 2>&1 ||
	ks_die "cannot make the test CA"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/server.key" \
	-out "$ca/server.csr" -subj "/CN=localhost" >/dev/null 2>&1 || ks_die "server CSR"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$ca/server.ext"
openssl x509 -req -in "$ca/server.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
	-days 2 -extfile "$ca/server.ext" -out "$ca/server.pem" >/dev/null 2>&1 || ks_die "server cert"
printf 'extendedKeyUsage=clientAuth\n' >"$ca/client.ext"
# A client with a file key, for the TLS servers holding a keysvc key.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/fclient.key" \
	-out "$ca/fclient.csr" -subj "/CN=keysvc file client" >/dev/null 2>&1 || ks_die "file client CSR"
openssl x509 -req -in "$ca/fclient.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
	-days 2 -extfile "$ca/client.ext" -out "$ca/fclient.pem" >/dev/null 2>&1 || ks_die "file client cert"
# keysvc activated first from openssl.cnf, default after it.
cat >"$work/keysvc-first.cnf" <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
keysvc = keysvc_sect
default = default_sect
[keysvc_sect]
module = $KS_PROVIDER_DIR/keysvc.so
socket = $KS_SOCKET
activate = 1
[default_sect]
activate = 1
CNF

# tls_handshake ROLE KEYNAME CERT VERSION ORDER: one mutual-TLS handshake on
# 127.0.0.1 in which the keysvc key keysvc:KEYNAME (certificate CERT) signs.
# ROLE client: s_client holds it, s_server demands a client certificate from
# the test CA. ROLE server: s_server holds it (CERT is a server certificate),
# s_client presents a file key. ORDER: how the side with the keysvc key loads
# the providers: "default-first", "keysvc-first" (-provider options), or
# "conf-keysvc-first" (activated from an openssl.cnf listing keysvc first).
tls_handshake() {
	local role=$1 key=$2 cert=$3 version=$4 order=$5 log=$work/s_server.log
	local ks=(env) plain=(env) ks_prov
	case $order in
	default-first) ks+=(openssl) ks_prov=(-provider default -provider keysvc) ;;
	keysvc-first) ks+=(openssl) ks_prov=(-provider keysvc -provider default) ;;
	conf-keysvc-first) ks+=(-u KEYSVC_SOCKET "OPENSSL_CONF=$work/keysvc-first.cnf" openssl) ks_prov=() ;;
	esac
	plain+=(openssl)
	local srv=("${plain[@]}") cli=("${plain[@]}") srv_args cli_args
	if [ "$role" = client ]; then
		cli=("${ks[@]}")
		srv_args=(-cert "$ca/server.pem" -key "$ca/server.key")
		cli_args=("${ks_prov[@]}" -cert "$cert" -key "keysvc:$key" -verify_ip 127.0.0.1)
	else
		srv=("${ks[@]}")
		srv_args=("${ks_prov[@]}" -cert "$cert" -key "keysvc:$key")
		cli_args=(-cert "$ca/fclient.pem" -key "$ca/fclient.key" -verify_ip 127.0.0.1)
	fi
	local st=0
	if ks_tls_server_start "$log" "${srv[@]}" s_server "${srv_args[@]}" -naccept 1 -CAfile "$ca/ca.pem" \
		-Verify 1 -verify_return_error "-$version"; then
		echo "hello" | timeout 60 "${cli[@]}" s_client "${cli_args[@]}" -connect "127.0.0.1:$KS_SERVER_PORT" \
			-brief -no_ign_eof -CAfile "$ca/ca.pem" -verify_return_error "-$version" \
			>"$work/s_client.log" 2>&1 || st=$?
	else
		: >"$work/s_client.log"
		st=1
	fi
	# A server that never got this client's connection would wait for one for ever.
	if [ "$st" -eq 0 ]; then ks_tls_server_stop; else ks_tls_server_stop now; fi
	cat "$work/s_client.log" "$log"
	[ "$st" -eq 0 ] || return 1
	local want=TLSv1.2 subject="O = keysvc test, CN = $key"
	[ "$version" = tls1_3 ] && want=TLSv1.3
	[ "$role" = server ] && subject="CN = keysvc file client"
	# The peer saw the token's key: the server required and verified the
	# client certificate, the client verified the server's; the handshake
	# signature of the keysvc side was checked against its certificate's key.
	grep -q "Protocol version: $want" "$work/s_client.log" &&
		grep -q "^subject=$subject\$" "$log" &&
		grep -q "1 server accepts that finished" "$log" &&
		grep -q "^hello" "$log"
}

head -c 4000 /dev/urandom >"$work/data"
openssl dgst -sha256 -binary "$work/data" >"$work/data.sha256"
# The same digest as a DER DigestInfo (what RSA PKCS#1 v1.5 pads).
{ printf '\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20'
  cat "$work/data.sha256"; } >"$work/data.sha256.di"

for type in ec-p256 ec-p384 rsa-2048 rsa-3072; do
	k=k-$type
	d=$work/$type
	mkdir -p "$d"
	check "$type: keygen" ks_cli keygen "$k" --type "$type" --purpose csr,tls,sign --out "$d/pub.pem"

	check "$type: openssl pkey -pubout from keysvc:$k" bash -c \
		"openssl pkey ${prov[*]} -in 'keysvc:$k' -pubout -out '$d/pub2.pem' && cmp -s '$d/pub.pem' '$d/pub2.pem'"
	check "$type: keysvc:///$k names the same key" bash -c \
		"openssl pkey ${prov[*]} -in 'keysvc:///$k' -pubout | cmp -s - '$d/pub.pem'"
	check "$type: openssl pkey cannot write the private key" bash -c \
		"! openssl pkey ${prov[*]} -in 'keysvc:$k' -out '$d/priv.pem' && ! grep -q PRIVATE '$d/priv.pem'"

	# CSR and certificates.
	check "$type: openssl req -new -key keysvc:$k" openssl req "${prov[@]}" -new -key "keysvc:$k" \
		-subj "/O=keysvc test/CN=$k" -addext "subjectAltName=DNS:$k.example.org" -out "$d/csr.pem"
	check "$type: CSR verifies" bash -c "openssl req -in '$d/csr.pem' -noout -verify 2>&1 | grep -q 'verify OK'"
	check "$type: CSR carries the token's public key" bash -c \
		"openssl req -in '$d/csr.pem' -noout -pubkey | cmp -s - '$d/pub.pem'"
	check "$type: openssl req -x509 self-signed" openssl req "${prov[@]}" -x509 -new -key "keysvc:$k" \
		-subj "/CN=$k self" -days 1 -out "$d/self.pem"
	check "$type: self-signed certificate verifies" openssl verify -CAfile "$d/self.pem" "$d/self.pem"
	check "$type: openssl x509 -req -signkey keysvc:$k" openssl x509 "${prov[@]}" -req -in "$d/csr.pem" \
		-signkey "keysvc:$k" -days 1 -out "$d/signkey.pem"
	check "$type: -signkey certificate verifies" openssl verify -CAfile "$d/signkey.pem" "$d/signkey.pem"
	check "$type: client certificate from the test CA" openssl x509 -req -in "$d/csr.pem" \
		-CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial -days 1 -extfile "$ca/client.ext" \
		-out "$d/client.pem"

	# Signatures: pkeyutl on a digest, dgst on data; verified with the public key only.
	case $type in
	ec-*)
		check "$type: pkeyutl -sign (ECDSA)" openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$k" \
			-in "$work/data.sha256" -out "$d/sig.ecdsa"
		check "$type: pkeyutl -verify (ECDSA)" openssl pkeyutl -verify -pubin -inkey "$d/pub.pem" \
			-in "$work/data.sha256" -sigfile "$d/sig.ecdsa"
		;;
	rsa-*)
		check "$type: pkeyutl -sign (PKCS#1 v1.5)" openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$k" \
			-pkeyopt digest:sha256 -in "$work/data.sha256" -out "$d/sig.pkcs1"
		check "$type: pkeyutl -verify (PKCS#1 v1.5)" openssl pkeyutl -verify -pubin -inkey "$d/pub.pem" \
			-pkeyopt digest:sha256 -in "$work/data.sha256" -sigfile "$d/sig.pkcs1"
		check "$type: pkeyutl -sign (PSS)" openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$k" \
			-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest \
			-in "$work/data.sha256" -out "$d/sig.pss"
		check "$type: pkeyutl -verify (PSS)" openssl pkeyutl -verify -pubin -inkey "$d/pub.pem" \
			-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest \
			-in "$work/data.sha256" -sigfile "$d/sig.pss"
		# No digest set: OpenSSL pads the input as given, so only a DigestInfo can be signed.
		check_fails_with "$type: pkeyutl -sign of a bare digest with no digest set is refused" \
			"set a digest: keysvcd signs digests" \
			openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$k" -in "$work/data.sha256" -out "$d/sig.bare"
		check "$type: pkeyutl -sign of a DigestInfo with no digest set" openssl pkeyutl "${prov[@]}" -sign \
			-inkey "keysvc:$k" -in "$work/data.sha256.di" -out "$d/sig.di"
		check "$type: it verifies as raw PKCS#1 v1.5 of the DigestInfo" openssl pkeyutl -verify -pubin \
			-inkey "$d/pub.pem" -in "$work/data.sha256.di" -sigfile "$d/sig.di"
		check "$type: it is the SHA-256 signature of the digest" cmp -s "$d/sig.di" "$d/sig.pkcs1"
		check_fails_with "$type: PSS with no digest set is refused" "set a digest: keysvcd signs digests" \
			openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$k" -pkeyopt rsa_padding_mode:pss \
			-in "$work/data.sha256.di"
		check "$type: dgst -sha384 -sign with PSS" openssl dgst "${prov[@]}" -sha384 -sign "keysvc:$k" \
			-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest -out "$d/dgst.pss" "$work/data"
		check "$type: dgst -verify PSS" openssl dgst -sha384 -verify "$d/pub.pem" \
			-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest -signature "$d/dgst.pss" "$work/data"
		;;
	esac
	check "$type: dgst -sha256 -sign" openssl dgst "${prov[@]}" -sha256 -sign "keysvc:$k" \
		-out "$d/dgst.sig" "$work/data"
	check "$type: dgst -verify" openssl dgst -sha256 -verify "$d/pub.pem" -signature "$d/dgst.sig" "$work/data"

	# Verifying with the keysvc key: as a public key (-pubin, dgst -verify) and
	# as the key itself (pkeyutl -verify, EVP_DigestVerify in the key's provider).
	check "$type: pkey -pubin -in keysvc:$k" bash -c \
		"openssl pkey ${prov[*]} -pubin -in 'keysvc:$k' | cmp -s - '$d/pub.pem'"
	check "$type: dgst -verify keysvc:$k" openssl dgst "${prov[@]}" -sha256 -verify "keysvc:$k" \
		-signature "$d/dgst.sig" "$work/data"
	check_fails_with "$type: dgst -verify keysvc:$k rejects other data" "Verification failure" \
		openssl dgst "${prov[@]}" -sha256 -verify "keysvc:$k" -signature "$d/dgst.sig" "$work/data.sha256"
	case $type in
	ec-*) vopts=() vsig=$d/sig.ecdsa ;;
	rsa-*) vopts=(-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest) vsig=$d/sig.pss ;;
	esac
	check "$type: pkeyutl -verify -inkey keysvc:$k" openssl pkeyutl "${prov[@]}" -verify -inkey "keysvc:$k" \
		"${vopts[@]}" -in "$work/data.sha256" -sigfile "$vsig"
	check "$type: pkeyutl -verify -pubin -inkey keysvc:$k" openssl pkeyutl "${prov[@]}" -verify -pubin \
		-inkey "keysvc:$k" "${vopts[@]}" -in "$work/data.sha256" -sigfile "$vsig"
	# One bit of the signature flipped (a byte set to a value would leave it as it was 1 time in 256).
	python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[10] ^= 1; open(sys.argv[2], "wb").write(b)' \
		"$vsig" "$d/bad.sig"
	check_fails_with "$type: pkeyutl -verify -inkey keysvc:$k rejects a changed signature" "Signature Verification Failure" \
		openssl pkeyutl "${prov[@]}" -verify -inkey "keysvc:$k" "${vopts[@]}" -in "$work/data.sha256" -sigfile "$d/bad.sig"
	check "$type: EVP_DigestVerify with the keysvc key" "$api" verify "$k"
	n=$(grep -c '"op":"key.public"' "$KS_DIR/audit.log")
	check "$type: storeutl -certs keysvc:$k finds no key" bash -c \
		"openssl storeutl ${prov[*]} -certs 'keysvc:$k' | grep -q 'Total found: 0'"
	check "$type: ... and did not ask keysvcd for one" \
		test "$(grep -c '"op":"key.public"' "$KS_DIR/audit.log")" -eq "$n"

	# Through the API: what the openssl commands cannot ask.
	check "$type: re-init with no key signs the new message only" "$api" reinit "$k"
	n=$(grep -c "\"op\":\"sign\",\"key\":\"$k\"" "$KS_DIR/audit.log")
	check "$type: a buffer too small is refused" "$api" small-buffer "$k"
	check "$type: ... before keysvcd was asked to sign" \
		test "$(grep -c "\"op\":\"sign\",\"key\":\"$k\"" "$KS_DIR/audit.log")" -eq "$n"

	check "$type: server certificate from the test CA" openssl x509 -req -in "$d/csr.pem" \
		-CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial -days 1 -extfile "$ca/server.ext" \
		-out "$d/server.pem"
	# Mutual TLS with the key in the token: both versions, both ends, keysvc
	# loaded after or before default (libssl's TLS groups and ephemeral keys
	# must not depend on the order), and activated from openssl.cnf.
	orders="default-first keysvc-first"
	case $type in ec-p256 | rsa-2048) orders="$orders conf-keysvc-first" ;; esac
	for order in $orders; do
		for version in tls1_2 tls1_3; do
			check "$type: s_client $version with keysvc:$k ($order), s_server -Verify 1 -verify_return_error" \
				tls_handshake client "$k" "$d/client.pem" "$version" "$order"
			check "$type: s_server $version with keysvc:$k ($order), s_client with a client certificate" \
				tls_handshake server "$k" "$d/server.pem" "$version" "$order"
		done
	done
done

# Comparing and duplicating keysvc keys.
check "EC keys on one curve: same parameters, different keys" "$api" match k-ec-p256 k-conf k-ec-p384
check "RSA keys: same (no) parameters, different keys" "$api" match k-rsa-2048 k-rsa-3072
check "EVP_PKEY_dup of an EC key" "$api" dup k-ec-p256
check "EVP_PKEY_dup of an RSA key" "$api" dup k-rsa-2048

# A keysvc key as the issuing CA key: openssl x509 -req -CAkey keysvc:...
check "CA key in keysvc: keygen" ks_cli keygen ca-root --type ec-p384 --purpose sign --out "$work/ca-root.pub"
check "CA key in keysvc: self-signed CA certificate" openssl req "${prov[@]}" -x509 -new \
	-key keysvc:ca-root -subj "/CN=keysvc-held CA" -days 2 \
	-addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign -out "$work/ca-root.pem"
check "CA key in keysvc: openssl x509 -req -CAkey keysvc:ca-root" openssl x509 "${prov[@]}" -req \
	-in "$work/ec-p256/csr.pem" -CA "$work/ca-root.pem" -CAkey keysvc:ca-root -CAcreateserial \
	-days 1 -out "$work/issued.pem"
check "CA key in keysvc: issued certificate chains" openssl verify -CAfile "$work/ca-root.pem" "$work/issued.pem"

# A certificate that is not the key's is refused before any handshake.
check_fails_with "s_client refuses a certificate that is not the key's" "Private key does not match the certificate public key" \
	openssl s_client "${prov[@]}" -connect 127.0.0.1:1 -cert "$work/rsa-2048/client.pem" \
	-key keysvc:k-ec-p256

# What keysvcd does not offer is refused with a reason, not done differently.
check_fails_with "PSS with another salt length is refused" "salt as long as the digest only" \
	openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:k-rsa-2048 -pkeyopt digest:sha256 \
	-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:max -in "$work/data.sha256"
check_fails_with "ECDSA with SHA-512 is refused" "digest sha512 is not offered" \
	openssl dgst "${prov[@]}" -sha512 -sign keysvc:k-ec-p256 "$work/data"
check_fails_with "an RSA-PSS-signed CSR is refused" "signed with RSA-PSS are not offered" \
	openssl req "${prov[@]}" -new -key keysvc:k-rsa-2048 -subj /CN=pss -sigopt rsa_padding_mode:pss

# The defects of issue 20 item 5.
check "pkey -pubout with keysvc the only provider: PEM" bash -c \
	"openssl pkey -provider keysvc -in keysvc:k-ec-p256 -pubout -out '$work/only.pem' && cmp -s '$work/only.pem' '$work/ec-p256/pub.pem'"
check "pkey -pubout with keysvc the only provider: DER of an RSA key" bash -c \
	"openssl pkey -provider keysvc -in keysvc:k-rsa-2048 -pubout -outform DER -out '$work/only.der' &&
	openssl pkey -pubin -inform DER -in '$work/only.der' | cmp -s - '$work/rsa-2048/pub.pem'"
head -c 20 /dev/urandom >"$work/data.20"
check_fails_with "ECDSA of a 20-byte input is refused as ECDSA" "keysvcd signs ECDSA on SHA-256 or SHA-384 digests" \
	openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:k-ec-p256 -in "$work/data.20"
cp "$work/out" "$work/refusal" # check writes its own output to $work/out
check "... and the refusal does not speak of PSS" bash -c "! grep -q PSS '$work/refusal'"
check_fails_with "x509 -CAkey keysvc:k-ec-p256 -sha512 is refused" "digest sha512 is not offered" \
	openssl x509 "${prov[@]}" -req -in "$work/ec-p256/csr.pem" -CA "$work/ec-p256/self.pem" \
	-CAkey keysvc:k-ec-p256 -sha512 -days 1 -out "$work/sha512.pem"
cp "$work/out" "$work/refusal"
check "... with no spurious malloc failure before the refusal" bash -c \
	"grep -q 'digest sha512' '$work/refusal' && ! grep -q 'malloc failure' '$work/refusal'"
check "rsa_pss_saltlen:-1 (the digest's length, as OpenSSL reads it): pkeyutl -sign" \
	openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:k-rsa-2048 -pkeyopt digest:sha256 \
	-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:-1 -in "$work/data.sha256" -out "$work/pss-1.sig"
check "... the signature has a 32-byte salt" openssl pkeyutl -verify -pubin -inkey "$work/rsa-2048/pub.pem" \
	-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 \
	-in "$work/data.sha256" -sigfile "$work/pss-1.sig"
check "rsa_pss_saltlen:-1: dgst -sha384 -sign" bash -c \
	"openssl dgst ${prov[*]} -sha384 -sign keysvc:k-rsa-2048 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:-1 \
	-out '$work/pss-1.dgst' '$work/data' && openssl dgst -sha384 -verify '$work/rsa-2048/pub.pem' \
	-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48 -signature '$work/pss-1.dgst' '$work/data'"
check_fails_with "rsa_pss_saltlen:-3 (max) is refused" "salt as long as the digest only" \
	openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:k-rsa-2048 -pkeyopt digest:sha256 \
	-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:-3 -in "$work/data.sha256"
check_fails_with "rsa_pss_saltlen:some is refused" "rsa_pss_saltlen:some: expected digest, max, auto or a length" \
	openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:k-rsa-2048 -pkeyopt digest:sha256 \
	-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:some -in "$work/data.sha256"

# keysvc loaded first: the keys OpenSSL makes itself (here a new key for a
# CSR) are made, signed with and written by the other providers through it.
for spec in "ec -pkeyopt ec_paramgen_curve:P-384 -sha512" "rsa:2048 -sigopt rsa_padding_mode:pss"; do
	# shellcheck disable=SC2086 # the key spec, split on purpose
	check "keysvc loaded first: req -newkey $spec" openssl req "${prov_kf[@]}" -new -newkey $spec -nodes \
		-keyout "$work/new.key" -subj /CN=new -out "$work/new.csr"
	check "... the CSR verifies" bash -c "openssl req -in '$work/new.csr' -noout -verify 2>&1 | grep -q 'verify OK'"
	check "... the private key was written and is the CSR's" bash -c \
		"openssl pkey -in '$work/new.key' -pubout | cmp -s - <(openssl req -in '$work/new.csr' -noout -pubkey)"
done
check "keysvc loaded first: a PEM file's key signs in its own provider" bash -c \
	"openssl dgst ${prov_kf[*]} -sha256 -sign '$ca/ca.key' -out '$work/file.sig' '$work/data' &&
	openssl x509 -in '$ca/ca.pem' -pubkey -noout >'$work/ca.pub' &&
	openssl dgst -sha256 -verify '$work/ca.pub' -signature '$work/file.sig' '$work/data'"
check "keysvc loaded first: pkey -pubout" bash -c \
	"openssl pkey ${prov_kf[*]} -in keysvc:k-ec-p384 -pubout | cmp -s - '$work/ec-p384/pub.pem'"
check "keysvc loaded first: dgst -verify with a certificate's key" bash -c \
	"openssl x509 -in '$work/rsa-2048/self.pem' -pubkey -noout >'$work/self.pub' &&
	openssl dgst ${prov_kf[*]} -sha256 -verify '$work/self.pub' -signature '$work/rsa-2048/dgst.sig' '$work/data'"

# A stalled keysvcd costs one wait of the configured timeout, not two of
# libkeysvc's 30 s; the request that timed out is not sent again (the daemon
# has it and may still sign it), and the error keeps libkeysvc's reason.
check "stalled daemon: keygen" ks_cli keygen k-stall --type ec-p256 --purpose sign
sed "s|^socket = .*|&\ntimeout = 1|" "$work/openssl.cnf" >"$work/timeout.cnf"
echo "hang C_Sign" >"$KS_FAULTP11_CONTROL"
t0=$(date +%s)
check_fails_with "stalled daemon: the signature fails with libkeysvc's reason" "no answer within 1000 ms" \
	env -u KEYSVC_SOCKET OPENSSL_CONF="$work/timeout.cnf" openssl pkeyutl -sign -inkey keysvc:k-stall \
	-in "$work/data.sha256"
t1=$(date +%s)
check "stalled daemon: given up after the 1 s timeout, not retried (took $((t1 - t0)) s)" test $((t1 - t0)) -le 4
: >"$KS_FAULTP11_CONTROL"
# Intent records: written when the request reached the token, before the hang.
signs() { grep -c '"op":"sign","key":"k-stall","phase":"intent"' "$KS_DIR/audit.log"; }
for i in $(seq 1 50); do [ "$(signs)" -ge 1 ] && break; sleep 0.1; done
sleep 1.5
check "stalled daemon: the request reached keysvcd once ($(signs) signatures)" test "$(signs)" -eq 1
sed "s|^timeout = 1|timeout = -1|" "$work/timeout.cnf" >"$work/bad-timeout.cnf"
check_fails_with "timeout = -1 in openssl.cnf is refused when the key is used" "timeout = -1: expected whole seconds" \
	env -u KEYSVC_SOCKET OPENSSL_CONF="$work/bad-timeout.cnf" openssl pkey -in keysvc:k-stall -pubout
sed "s|^timeout = 1|connections = 0|" "$work/timeout.cnf" >"$work/bad-connections.cnf"
check_fails_with "connections = 0 in openssl.cnf is refused when the key is used" "connections = 0: expected a whole number, 1 to 64" \
	env -u KEYSVC_SOCKET OPENSSL_CONF="$work/bad-connections.cnf" openssl pkey -in keysvc:k-stall -pubout
long=$work/$(printf 'x%.0s' $(seq 1 120))/keysvc.sock
sed "s|^socket = .*|socket = $long|" "$work/openssl.cnf" >"$work/long-socket.cnf"
check_fails_with "a socket path too long for a Unix socket is refused, not cut short" "longer than the 107 bytes" \
	env -u KEYSVC_SOCKET OPENSSL_CONF="$work/long-socket.cnf" openssl pkey -in keysvc:k-stall -pubout

# Threads: one key used by many threads at once, each request on a
# connection of the provider's pool.
check "8 threads sign with one EC key at once: every signature verifies" "$api" threads k-ec-p256
check "8 threads sign with one RSA key at once: every signature verifies" "$api" threads k-rsa-2048
check "a signature stalled in the token does not hold up another thread's request" "$api" parallel k-stall k-ec-p384
check "fork with connections open: child and parent each sign on their own" "$api" fork k-ec-p256
: >"$KS_FAULTP11_CONTROL"

# keysvcd restarted under a process that keeps its connection: the next
# request's send fails before the daemon could read it, and is sent again.
mkfifo "$work/go"
"$api" resend k-ec-p256 <"$work/go" >"$work/resend.out" 2>&1 &
api_pid=$!
exec {go}>"$work/go"
for i in $(seq 1 100); do grep -q "signed once" "$work/resend.out" && break; sleep 0.1; done
ks_stop
"$KS_KEYSVCD" -c "$KS_DIR/keysvcd.json" 2>>"$KS_DIR/daemon.log" &
KS_PID=$!
for i in $(seq 1 100); do ks_cli hello >/dev/null 2>&1 && break; sleep 0.1; done
echo go >&$go
exec {go}>&-
if wait "$api_pid"; then ok "keysvcd restarted: a kept connection's request is sent again"; else
	fail "keysvcd restarted: a kept connection's request is sent again"
	sed 's/^/#   /' "$work/resend.out"
fi

# keysvcd's errors as OpenSSL errors.
check_fails_with "missing key: no such key" "keysvcd has no such key" \
	openssl pkey "${prov[@]}" -in keysvc:k-missing -pubout
check_fails_with "malformed URI is refused" "not a keysvc: URI" \
	openssl pkey "${prov[@]}" -in "keysvc:../etc/passwd" -pubout
check "key without a sign grant: keygen" ks_cli keygen nosign --type ec-p256
check_fails_with "key without a sign grant: denied" "keysvcd denied the request" \
	openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:nosign -in "$work/data.sha256"
# keysvcd's longest refusal (a 64-byte name, twice) is printed whole: it ends with the name.
long_key=nosign-a-key-name-as-long-as-keysvcd-allows-0123456789abcdefghij
check "a 64-byte key name without a sign grant: keygen" ks_cli keygen "$long_key" --type ec-p256
check_fails_with "... its refusal is shown whole" "is not granted sign on key $long_key" \
	openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$long_key" -in "$work/data.sha256"
if grep -q "is not granted sign on key $long_key\$" "$work/out"; then ok "... ending with the whole name"; else
	fail "... ending with the whole name"
	sed 's/^/#   /' "$work/out"
fi
check_fails_with "daemon not running: cannot reach keysvcd" "cannot reach keysvcd" \
	env KEYSVC_SOCKET="$work/no-such.sock" openssl pkey "${prov[@]}" -in keysvc:k-ec-p256 -pubout
echo "error CKR_DEVICE_REMOVED always C_Sign" >"$KS_FAULTP11_CONTROL"
check_fails_with "token pulled: token unavailable" "keysvcd's token is unavailable" \
	openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:k-ec-p256 -in "$work/data.sha256"
: >"$KS_FAULTP11_CONTROL"
ok=0
for i in $(seq 1 100); do
	if openssl pkeyutl "${prov[@]}" -sign -inkey keysvc:k-ec-p256 -in "$work/data.sha256" -out "$work/again.sig" 2>/dev/null; then
		ok=1
		break
	fi
	sleep 0.1
done
[ "$ok" = 1 ] && ok "token back: signing works again" || fail "token back: signing works again"

ks_stop || fail "keysvcd exit status"
echo "# provider: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
