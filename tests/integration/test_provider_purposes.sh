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

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-purposes.XXXXXX")
chmod 0711 "$work"
passed=0
failed=0
server_pid=

cleanup() {
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
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

# A file CA, a server key and certificate for the handshakes where the
# keysvc key is the client's.
ca=$work/ca
mkdir -p "$ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/ca.key" \
	-out "$ca/ca.pem" -subj "/CN=keysvc purposes test CA" -days 2 \
	-addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign >/dev/null 2>&1 ||
	ks_die "cannot make the test CA"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ca/ext"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/file.key" \
	-out "$ca/file.csr" -subj "/CN=localhost" >/dev/null 2>&1 || ks_die "file key CSR"
openssl x509 -req -in "$ca/file.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
	-days 2 -extfile "$ca/ext" -out "$ca/file.pem" >/dev/null 2>&1 || ks_die "file key certificate"

# tls-only keys: no CSR from keysvcd (that needs csr), so the CA certifies
# the public key as it is (-force_pubkey), the way a CA that already knows
# the key would.
for k in t-ec t-rsa; do
	type=ec-p256
	[ "$k" = t-rsa ] && type=rsa-2048
	check "$k: keygen --purpose tls" ks_cli keygen "$k" --type "$type" --purpose tls --out "$work/$k.pub"
	check "$k: keysvc list shows the purpose tls" bash -c \
		"'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -w '$k' | grep -qw tls"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
		-out "$work/$k.dummy.csr" -subj "/O=keysvc test/CN=$k" >/dev/null 2>&1 || ks_die "dummy CSR"
	check "$k: certificate for the token's public key" openssl x509 -req -in "$work/$k.dummy.csr" \
		-CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial -force_pubkey "$work/$k.pub" \
		-days 1 -extfile "$ca/ext" -out "$work/$k.pem"
done

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

n_signed() { # n_signed KEY: sign outcomes "ok" under the purpose tls in the audit log
	grep '"op":"sign"' "$audit" | grep "\"key\":\"$1\"" | grep '"purpose":"tls"' | grep -c '"outcome":"ok"'
}

# handshake SIDE KEY VERSION SIGALGS: one TLS connection on 127.0.0.1 in which
# keysvc:KEY signs as the server (SIDE=server) or as the client certificate's
# key (SIDE=client, s_server -Verify 1), with only SIGALGS allowed for that
# signature. Succeeds when both ends finished and keysvcd made one
# signature more for KEY under the purpose tls.
handshake() {
	local side=$1 key=$2 version=$3 sigalgs=$4 port log=$work/s_server.log i before st=0
	local keep keep_pid srv cli
	before=$(n_signed "$key")
	if [ "$side" = server ]; then
		srv=("${prov[@]}" -cert "$work/$key.pem" -key "keysvc:$key")
		cli=(-sigalgs "$sigalgs")
	else
		srv=(-cert "$ca/file.pem" -key "$ca/file.key" -Verify 1 -verify_return_error
		     -client_sigalgs "$sigalgs")
		cli=("${prov[@]}" -cert "$work/$key.pem" -key "keysvc:$key" -client_sigalgs "$sigalgs")
	fi
	# A port another program took between free_port and the bind, or a slow
	# start on a loaded machine: try again on a new port, three times at most.
	local attempt
	for attempt in 1 2 3; do
		port=$(free_port)
		# s_server reads stdin and stops at its end; keep it open while it serves.
		exec {keep}< <(exec sleep 60 2>/dev/null)
		keep_pid=$!
		openssl s_server -accept "127.0.0.1:$port" -naccept 1 -CAfile "$ca/ca.pem" "${srv[@]}" \
			"-$version" >"$log" 2>&1 <&$keep &
		server_pid=$!
		exec {keep}<&-
		for i in $(seq 1 200); do
			grep -q ACCEPT "$log" 2>/dev/null && break
			kill -0 "$server_pid" 2>/dev/null || break
			sleep 0.1
		done
		grep -q ACCEPT "$log" 2>/dev/null && break
		kill "$server_pid" "$keep_pid" 2>/dev/null
		wait "$server_pid" 2>/dev/null
	done
	if grep -q ACCEPT "$log" 2>/dev/null; then
		echo "hello" | timeout 60 openssl s_client -connect "127.0.0.1:$port" -brief -no_ign_eof \
			-CAfile "$ca/ca.pem" -verify_return_error -verify_ip 127.0.0.1 "${cli[@]}" \
			"-$version" >"$work/s_client.log" 2>&1 || st=$?
	else
		echo "s_server did not listen on port $port within 20 s, three times" >"$work/s_client.log"
		st=1
	fi
	[ "$st" -eq 0 ] || kill "$server_pid" 2>/dev/null
	for i in $(seq 1 100); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$server_pid" 2>/dev/null
	wait "$server_pid" 2>/dev/null
	server_pid=
	kill "$keep_pid" 2>/dev/null
	cat "$work/s_client.log" "$log"
	[ "$st" -eq 0 ] || return 1
	local want=TLSv1.2
	[ "$version" = tls1_3 ] && want=TLSv1.3
	grep -q "Protocol version: $want" "$work/s_client.log" &&
		grep -q "^hello" "$log" &&
		{ [ "$side" = server ] || grep -q "^subject=O = keysvc test, CN = $key\$" "$log"; } &&
		[ "$(n_signed "$key")" -eq $((before + 1)) ]
}

for side in server client; do
	check "t-ec as $side, TLS 1.3, ECDSA" handshake "$side" t-ec tls1_3 ecdsa_secp256r1_sha256
	check "t-ec as $side, TLS 1.2, ECDSA" handshake "$side" t-ec tls1_2 ecdsa_secp256r1_sha256
	check "t-rsa as $side, TLS 1.3, RSA-PSS" handshake "$side" t-rsa tls1_3 rsa_pss_rsae_sha256
	check "t-rsa as $side, TLS 1.2, RSA-PSS" handshake "$side" t-rsa tls1_2 rsa_pss_rsae_sha256
	check "t-rsa as $side, TLS 1.2, RSA PKCS#1 v1.5" handshake "$side" t-rsa tls1_2 rsa_pkcs1_sha256
	check "t-rsa as $side, TLS 1.2, RSA PKCS#1 v1.5 with SHA-384" handshake "$side" t-rsa tls1_2 rsa_pkcs1_sha384
done

# The forgeries of issue 21, each refused by keysvcd and audited.
n_denied() { # n_denied KEY: sign outcomes "denied" for KEY in the audit log
	grep '"op":"sign"' "$audit" | grep "\"key\":\"$1\"" | grep -c '"outcome":"denied"'
}
refused() { # refused KEY TEXT COMMAND...: fails saying TEXT, and one more denied sign is audited
	local key=$1 text=$2 before st=0
	shift 2
	before=$(n_denied "$key")
	"$@" || st=$?
	[ "$st" -ne 0 ] && grep -qF -- "$text" "$work/refusal" 2>/dev/null &&
		[ "$(n_denied "$key")" -eq $((before + 1)) ]
}
forge() { "$@" >"$work/refusal" 2>&1; }

for k in t-ec t-rsa; do
	check "$k: a CSR for any subject (openssl req -new) is refused" refused "$k" "has the purposes tls" \
		forge openssl req "${prov[@]}" -new -key "keysvc:$k" -subj "/CN=www.bank.example" -out "$work/forged.csr"
	check "$k: a self-signed CA:TRUE certificate is refused" refused "$k" "has the purposes tls" \
		forge openssl req "${prov[@]}" -x509 -new -key "keysvc:$k" -subj "/CN=Evil CA" -days 2 \
		-addext basicConstraints=critical,CA:true -out "$work/forged-ca.pem"
	printf 'I, the holder of this key, owe Mallory 1000 EUR.' >"$work/message"
	check "$k: a signature over an arbitrary message is refused" refused "$k" "has the purposes tls" \
		forge openssl dgst "${prov[@]}" -sha256 -sign "keysvc:$k" -out "$work/forged.sig" "$work/message"
	openssl dgst -sha256 -binary "$work/message" >"$work/message.sha256"
	check "$k: a signature over a digest is refused" refused "$k" "signing a digest needs the purpose sign" \
		forge openssl pkeyutl "${prov[@]}" -sign -inkey "keysvc:$k" -pkeyopt digest:sha256 \
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
	check "$k: a TLS 1.3 content with the wrong context string is refused" refused "$k" \
		"wrong context string" forge openssl dgst "${prov[@]}" -sha256 -sign "keysvc:$k" \
		-out "$work/cv-bad.sig" "$work/cv-bad"
done
check "every refusal names the purpose it needed or the form it lacked" \
	bash -c "grep '\"outcome\":\"denied\"' '$audit' | grep -q '\"purpose\":'"

ks_stop || fail "keysvcd exit status"
echo "# provider-purposes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
