#!/usr/bin/env bash
# keysvcd on a second, independent PKCS#11 implementation: tpm2-pkcs11 over
# the swtpm simulator (tests/tpm2/tpm2env.sh starts it on loopback and
# private paths). Key generation of every type the token says it can make
# (from hello, which keysvcd builds from the token's mechanism list), the
# types it cannot refused as unsupported with the token's limit, CSRs, every
# signature algorithm hello offers (verified by openssl with the public key
# only; these keys have the purpose sign, so that what is tested is the
# token), PKCS#1 v1.5 from a digest refused with the reason, the keys'
# attributes read through PKCS#11 (sensitive, never extractable, sign-only),
# the provider in a TLS 1.3 handshake, a key made by another program used
# by name without a restart, and a restart with the keys still there.
#
# Purpose-bound keys (issue 21) on this token: keys made with each purpose
# set keep it in their CKA_ID (read through PKCS#11, the same on the public
# key) and in keysvc list, across a restart of keysvcd; keys whose only
# purpose is tls make TLS 1.2 and 1.3 handshakes through the provider as
# server and client, RSA and EC, including TLS 1.2 RSA PKCS#1 v1.5, which
# this token makes only in the message form (CKM_SHA256_RSA_PKCS); the same
# keys refuse arbitrary data, a CSR and a digest as denied, the digest
# before the token is tried (a fresh keysvcd does not learn from it that
# the token needs decrypt-capable keys for PKCS#1 v1.5 from a digest).
#
# Skipped (77) with the reason when the tpm2 packages are missing; in CI
# scripts/deps.sh installs them. Skipped in sanitizer builds: tpm2-pkcs11
# 1.9 leaks an ASN.1 string at every C_SignInit (ssl_util_attrs_to_evp) in
# keysvcd, and LeakSanitizer's fast unwinder stops in libcrypto, so no
# suppression narrower than all of ASN1_STRING_set would match it.
set -uo pipefail

p11obj=${1:?usage: test_tpm2.sh PATH_OF_p11obj}

. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/tpm2/tpm2env.sh"
. "$KS_SOURCE_ROOT/tests/integration/purpose_tls.sh"

skip() { echo "1..0 # SKIP $*"; exit 77; }
[ "${KS_B_SANITIZE:-none}" = none ] || skip "sanitizer build (b_sanitize=$KS_B_SANITIZE): tpm2-pkcs11 leaks at every C_SignInit"
if why=$(ks_tpm2_missing); then skip "$why"; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-tpm2.XXXXXX")
chmod 0711 "$work"
cleanup() {
	ks_tls_server_stop now
	ks_stop >/dev/null 2>&1 || true
	ks_tpm2_stop
	rm -rf "$work"
}
trap cleanup EXIT
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"

check_fails_with() { # check_fails_with DESCRIPTION TEXT COMMAND...: exits non-zero and says TEXT
	local what=$1 text=$2 st=0
	shift 2
	"$@" >"$work/out" 2>&1 || st=$?
	if [ "$st" -ne 0 ] && grep -qF -- "$text" "$work/out"; then ok "$what"; else
		fail "$what: exit $st, expected failure saying '$text'"
		sed 's/^/#   /' "$work/out"
	fi
}

ks_tpm2_start "$work/tpm" keysvc-tpm || { echo "Bail out! the tpm2 token could not be set up"; exit 1; }
me=$(id -u)
policy='[{"uid": '"$me"', "keys": ["*"], "ops": ["key.generate", "key.list", "key.public", "key.delete", "csr.create", "sign", "cert.put", "cert.get"]}]'
ks_tpm2_keysvcd_start "$work/d" "$policy" || { echo "Bail out! keysvcd did not start on the tpm2 token"; exit 1; }
export KEYSVC_SOCKET=$KS_SOCKET

p11() { "$p11obj" "$KS_TPM2_MODULE" "$KS_TPM2_LABEL" "$KS_TPM2_DIR/pin" "$@"; }

# hello as keysvcd answers it on the wire (the CLI shows only the fields it knows).
raw_hello() {
	python3 - "$KS_SOCKET" <<'PY'
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = b'{"id":1,"op":"hello"}'
s.sendall(struct.pack(">I", len(body)) + body)
def read(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit(1)
        b += c
    return b
print(json.dumps(json.loads(read(struct.unpack(">I", read(4))[0])), indent=1))
PY
}

# What the token can do, as keysvcd advertises it.
raw_hello >"$work/hello.json" || { echo "Bail out! hello failed"; exit 1; }
read -r -a types < <(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["key_types"]))' "$work/hello.json")
read -r -a algs < <(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["algorithms"]))' "$work/hello.json")
echo "# key types: ${types[*]}"
echo "# algorithms: ${algs[*]}"
check "hello: health ok" grep -q '"health": *"ok"' "$work/hello.json"
check "hello: the token offers RSA and EC key types" bash -c \
	"printf '%s\n' ${types[*]} | grep -q rsa- && printf '%s\n' ${types[*]} | grep -q ec-"
# tpm2-pkcs11 over swtpm makes RSA keys of 1024..3072 bits only.
check "hello: rsa-4096 is not offered (the token's RSA keys end at 3072 bits)" \
	bash -c "! grep -q rsa-4096 '$work/hello.json'"
check_fails_with "keygen rsa-4096: unsupported, naming the token's limit" \
	"the token's RSA key sizes are 1024..3072 bits" ks_cli keygen k-big --type rsa-4096
check "the refused rsa-4096 generation never reached the token" \
	bash -c "! grep -q 'Keysize 4096' '$work/d/daemon.log'"

# Data to sign; its digests and the PKCS#1 v1.5 DigestInfo of SHA-256.
head -c 3000 /dev/urandom >"$work/data"

for type in "${types[@]}"; do
	k=k-$type
	d=$work/$type
	mkdir -p "$d"
	# sign: the algorithms below are signed from digests and from data of no form.
	check "$type: keygen" ks_cli keygen "$k" --type "$type" --purpose csr,tls,sign --out "$d/pub.pem"
	check "$type: private key sensitive, never extractable, sign-only (read through PKCS#11)" \
		p11 attrs "$k"
	check "$type: CSR" ks_cli csr "$k" --subject "CN=$k,O=keysvc test" --dns "$k.example.org" \
		--out "$d/csr.pem"
	check "$type: CSR verifies with the token's public key" bash -c \
		"openssl req -in '$d/csr.pem' -noout -verify 2>&1 | grep -q 'verify OK' &&
		 openssl req -in '$d/csr.pem' -noout -pubkey | cmp -s - '$d/pub.pem'"
	family=${type%%-*}
	for alg in "${algs[@]}"; do
		case $family:$alg in rsa:rsa-*|ec:ecdsa-*) ;; *) continue ;; esac
		md=${alg##*-}
		opts=()
		case $alg in
		rsa-pss-*) opts=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest) ;;
		esac
		check "$type: sign $alg (data), verified by openssl" bash -c \
			"'$KS_KEYSVC_CLI' sign '$k' --alg '$alg' --in '$work/data' --out '$d/$alg.sig' &&
			 openssl dgst -'$md' -verify '$d/pub.pem' ${opts[*]} -signature '$d/$alg.sig' '$work/data'"
		hex=$(openssl dgst -"$md" -binary "$work/data" | od -An -tx1 | tr -d ' \n')
		# tpm2-pkcs11 makes CKM_RSA_PKCS signatures with a raw RSA decrypt,
		# which keysvcd's sign-only keys may not do (see below).
		if [ "${alg#rsa-pkcs1-}" != "$alg" ]; then
			check_fails_with "$type: sign $alg (digest): unsupported, saying why" \
				"only from the data" ks_cli sign "$k" --alg "$alg" --digest-hex "$hex"
		else
			check "$type: sign $alg (digest), verified by openssl" bash -c \
				"'$KS_KEYSVC_CLI' sign '$k' --alg '$alg' --digest-hex '$hex' --out '$d/$alg.dsig' &&
				 openssl dgst -'$md' -verify '$d/pub.pem' ${opts[*]} -signature '$d/$alg.dsig' '$work/data'"
		fi
	done
done

# A PKCS#1 v1.5 signature from a digest: the first attempt above taught
# keysvcd that the token needs a decrypt-capable key for it (hello now lists
# those algorithms under data_only); the keys never got that capability.
if printf '%s\n' "${types[@]}" | grep -q '^rsa-'; then
	rk=k-$(printf '%s\n' "${types[@]}" | grep '^rsa-' | head -1)
	raw_hello >"$work/hello2.json"
	check "hello lists the PKCS#1 v1.5 algorithms under data_only now" python3 -c \
		"import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if {'rsa-pkcs1-sha256','rsa-pkcs1-sha384','rsa-pkcs1-sha512'} <= set(d.get('data_only', [])) and 'rsa-pkcs1-sha256' in d['algorithms'] else 1)" \
		"$work/hello2.json"
	check "health stays ok after the refused digest signatures" grep -q '"health": *"ok"' "$work/hello2.json"
	check "the daemon log says why, once" test "$(grep -c 'only with keys that can decrypt' "$work/d/daemon.log")" -eq 1
	check "$rk still sign-only after it (read through PKCS#11)" p11 attrs "$rk"
fi

# The provider signs the TLS 1.3 handshake (CertificateVerify) with a token key.
export OPENSSL_MODULES=$KS_PROVIDER_DIR
prov=(-provider default -provider keysvc)
ca=$work/ca
mkdir -p "$ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/ca.key" \
	-out "$ca/ca.pem" -subj "/CN=keysvc tpm2 test CA" -days 2 \
	-addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/server.key" \
	-out "$ca/server.csr" -subj "/CN=localhost" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$ca/server.ext"
openssl x509 -req -in "$ca/server.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
	-days 2 -extfile "$ca/server.ext" -out "$ca/server.pem" >/dev/null 2>&1
printf 'extendedKeyUsage=clientAuth\n' >"$ca/client.ext"

# tls13 KEYNAME: s_server demands a client certificate from the test CA;
# s_client presents the one of keysvc:KEYNAME.
tls13() {
	local key=$1 d=$work/$2 log=$work/s_server.log st=0
	openssl x509 -req -in "$d/csr.pem" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
		-days 1 -extfile "$ca/client.ext" -out "$d/client.pem" >/dev/null 2>&1 || return 1
	if ks_tls_server_start "$log" openssl s_server -naccept 1 -cert "$ca/server.pem" -key "$ca/server.key" \
		-CAfile "$ca/ca.pem" -Verify 1 -verify_return_error -tls1_3; then
		echo hello | timeout 60 openssl s_client "${prov[@]}" -connect "127.0.0.1:$KS_SERVER_PORT" -brief \
			-no_ign_eof -CAfile "$ca/ca.pem" -verify_return_error -cert "$d/client.pem" \
			-key "keysvc:$key" -tls1_3 >"$work/s_client.log" 2>&1 || st=$?
	else
		: >"$work/s_client.log"
		st=1
	fi
	if [ "$st" -eq 0 ]; then ks_tls_server_stop; else ks_tls_server_stop now; fi
	cat "$work/s_client.log" "$log"
	[ "$st" -eq 0 ] && grep -q "Protocol version: TLSv1.3" "$work/s_client.log" &&
		grep -q "1 server accepts that finished" "$log" && grep -q "^hello" "$log"
}
for type in "${types[@]}"; do
	case $type in ec-p256|rsa-2048) check "$type: TLS 1.3 client authentication through the provider" tls13 "k-$type" "$type" ;; esac
done

# Purposes (issue 21) on this token: kept in the key's CKA_ID, which
# tpm2-pkcs11 stores in its own database (up to 16 + 5 + 27 bytes here).
audit=$work/d/audit.log
purposes_of() { # purposes_of KEY: the purposes keysvc list --json shows for KEY
	"$KS_KEYSVC_CLI" list --json | python3 -c \
		'import json,sys; k={e["name"]: e for e in json.load(sys.stdin)["keys"]}[sys.argv[1]]; print(k["purposes"] + (" legacy" if k["purposes_legacy"] else ""))' "$1"
}
id_says() { # id_says KEY LIST: the CKA_ID through PKCS#11 holds LIST, the same on the public key, not modifiable
	p11 id "$1" >"$work/id.$1" || { cat "$work/id.$1"; return 1; }
	cat "$work/id.$1"
	grep -qx "purposes=$2" "$work/id.$1" && grep -qx "CKA_MODIFIABLE=0" "$work/id.$1"
}
psets=(csr tls http-signature sign csr,tls,http-signature,sign)
for i in "${!psets[@]}"; do
	set=${psets[$i]}
	k=p-$i
	type=ec-p256
	[ "$set" = csr,tls,http-signature,sign ] && type=rsa-2048
	check "keygen $k --purpose $set ($type)" ks_cli keygen "$k" --type "$type" --purpose "$set"
done
check "keygen p-default (no --purpose)" ks_cli keygen p-default --type ec-p256
psets+=(csr,tls)
for i in "${!psets[@]}"; do
	set=${psets[$i]}
	k=p-$i
	[ "$i" -eq 5 ] && k=p-default
	check "$k: keysvc list shows the purposes $set" test "$(purposes_of "$k")" = "$set"
	check "$k: its CKA_ID holds ksp1:$set, on the private and the public key (read through PKCS#11)" \
		id_says "$k" "$set"
	check "$k: still sensitive, never extractable, sign-only" p11 attrs "$k"
done
# Each purpose allows what it names and nothing else.
printf 'I, the holder of this key, owe Mallory 1000 EUR.' >"$work/message"
check "p-0 (csr): a CSR" ks_cli csr p-0 --subject "CN=p-0" --out "$work/p-0.csr"
run_exit 8 "key p-0 has the purposes csr: data of no form they allow needs the purpose sign" \
	"p-0 (csr): arbitrary data refused" ks_cli sign p-0 --alg ecdsa-sha256 --in "$work/message"
check "p-3 (sign): arbitrary data signed, verified by openssl" bash -c \
	"'$KS_KEYSVC_CLI' pubkey p-3 >'$work/p-3.pub' &&
	 '$KS_KEYSVC_CLI' sign p-3 --alg ecdsa-sha256 --in '$work/message' --out '$work/p-3.sig' &&
	 openssl dgst -sha256 -verify '$work/p-3.pub' -signature '$work/p-3.sig' '$work/message'"
run_exit 8 "key p-3 has the purposes sign: csr.create needs the purpose csr" \
	"p-3 (sign): a CSR refused" ks_cli csr p-3 --subject "CN=p-3"
run_exit 8 "key p-2 has the purposes http-signature: data of no form they allow needs the purpose sign" \
	"p-2 (http-signature): arbitrary data refused" ks_cli sign p-2 --alg ecdsa-sha256 --in "$work/message"

# tls-only keys through the provider: TLS 1.2 and 1.3, as server and
# client. TLS 1.2 RSA PKCS#1 v1.5 works on this token only in the message
# form (CKM_SHA256_RSA_PKCS from the data), which is what the provider
# sends for a key without the purpose sign.
pt_ca "$work/pca" || { echo "Bail out! cannot make the purposes test CA"; exit 1; }
for k in t-ec t-rsa; do
	type=ec-p256
	[ "$k" = t-rsa ] && type=rsa-2048
	check "$k: keygen --purpose tls" ks_cli keygen "$k" --type "$type" --purpose tls --out "$work/$k.pub"
	check "$k: keysvc list shows the purpose tls" test "$(purposes_of "$k")" = tls
	check "$k: its CKA_ID holds ksp1:tls (read through PKCS#11)" id_says "$k" tls
	check "$k: certificate for the token's public key" pt_cert "$k" "$work/$k.pub" "$work/$k.pem"
done
for side in server client; do
	check "t-ec as $side, TLS 1.3, ECDSA" pt_handshake "$side" t-ec tls1_3 ecdsa_secp256r1_sha256
	check "t-ec as $side, TLS 1.2, ECDSA" pt_handshake "$side" t-ec tls1_2 ecdsa_secp256r1_sha256
	check "t-rsa as $side, TLS 1.3, RSA-PSS" pt_handshake "$side" t-rsa tls1_3 rsa_pss_rsae_sha256
	check "t-rsa as $side, TLS 1.2, RSA-PSS" pt_handshake "$side" t-rsa tls1_2 rsa_pss_rsae_sha256
	check "t-rsa as $side, TLS 1.2, RSA PKCS#1 v1.5 (hash-and-sign on the token)" \
		pt_handshake "$side" t-rsa tls1_2 rsa_pkcs1_sha256
	check "t-rsa as $side, TLS 1.2, RSA PKCS#1 v1.5 with SHA-384" pt_handshake "$side" t-rsa tls1_2 rsa_pkcs1_sha384
done
# The forgeries of issue 21 on the tls keys: refused (denied) and audited.
for k in t-ec t-rsa; do
	check "$k: a signature over an arbitrary message is refused" pt_refused "$k" "has the purposes tls" \
		pt_forge openssl dgst "${prov[@]}" -sha256 -sign "keysvc:$k" -out "$work/forged.sig" "$work/message"
	check "$k: a CSR for any subject (openssl req -new) is refused" pt_refused "$k" "has the purposes tls" \
		pt_forge openssl req "${prov[@]}" -new -key "keysvc:$k" -subj "/CN=www.bank.example" -out "$work/forged.csr"
	alg=ecdsa-sha256
	[ "$k" = t-rsa ] && alg=rsa-pss-sha256
	check "$k: arbitrary data through keysvc sign is refused" pt_refused "$k" \
		"data of no form they allow needs the purpose sign" pt_forge ks_cli sign "$k" --alg "$alg" --in "$work/message"
done
check "no forged signature or CSR was written" bash -c "! test -s '$work/forged.sig' && ! test -s '$work/forged.csr'"

# ks-token-init initialises a tpm2-pkcs11 token too (it keeps the slot and
# reports a user PIN at once).
(umask 077; head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/pin2"
 head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/so-pin2")
check "ks-token-init initialises a second tpm2-pkcs11 token" "$KS_TOKEN_INIT" \
	--module "$KS_TPM2_MODULE" --label second --pin-file "$work/pin2" --so-pin-file "$work/so-pin2"

# A key made on the token by another program while keysvcd runs: found by
# name on the miss, without a restart.
check "another program makes key other-ec on the token" p11 generate other-ec
check "keysvc pubkey other-ec: found without a restart" ks_cli pubkey other-ec
check "keysvc sign with other-ec, verified by openssl" bash -c \
	"'$KS_KEYSVC_CLI' pubkey other-ec >'$work/other.pub' &&
	 '$KS_KEYSVC_CLI' sign other-ec --alg ecdsa-sha256 --in '$work/data' --out '$work/other.sig' &&
	 openssl dgst -sha256 -verify '$work/other.pub' -signature '$work/other.sig' '$work/data'"
legacy_id() { p11 id "$1" >"$work/id.$1" && grep -qx purposes=legacy "$work/id.$1"; }
check "other-ec (its CKA_ID has no ksp1:) is a legacy key with every purpose in keysvc list" \
	test "$(purposes_of other-ec)" = "csr,tls,http-signature,sign legacy"
check "... its CKA_ID read through PKCS#11 has no purposes" legacy_id other-ec
check_fails_with "a name nobody made is still no-such-key" "no key named" ks_cli pubkey nobody-made-this
check "... answered at once: no second re-initialisation within 10 s" test \
	"$(grep -c 'initialising the module again to see keys' "$work/d/daemon.log")" -eq 1

# A key that can decrypt, made elsewhere: keysvcd serves it, with a warning.
check "another program makes key other-dec that can also decrypt" p11 generate other-dec decrypt
sleep 10.5
check "keysvc pubkey other-dec: found" ks_cli pubkey other-dec
check "keysvcd warns that other-dec can decrypt" grep -q "key other-dec can decrypt" "$work/d/daemon.log"
check "keysvcd never warned so about its own keys" bash -c "! grep 'can decrypt (CKA_DECRYPT' '$work/d/daemon.log' | grep -v other-dec"

# Restart: the keys are still there and still sign.
# (stdout only: stderr names the legacy keys other-ec and other-dec)
ks_cli list >"$work/list.before" 2>"$work/list.before.err"
check "keysvcd stops" ks_stop
restart_mark=$(wc -l <"$work/d/daemon.log")
check "keysvcd starts again on the same token" ks_tpm2_keysvcd_start "$work/d" "$policy"
check "the same keys after the restart" bash -c "'$KS_KEYSVC_CLI' list | cmp -s - '$work/list.before'"
for type in "${types[@]}"; do
	d=$work/$type
	alg=ecdsa-sha256
	case $type in rsa-*) alg=rsa-pss-sha256 ;; esac
	md=sha256
	opts=()
	case $alg in rsa-pss-*) opts=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest) ;; esac
	check "$type: signs after the restart" bash -c \
		"'$KS_KEYSVC_CLI' sign 'k-$type' --alg '$alg' --in '$work/data' --out '$d/after.sig' &&
		 openssl dgst -'$md' -verify '$d/pub.pem' ${opts[*]} -signature '$d/after.sig' '$work/data'"
done

# Purposes after the restart: read back from the token (nothing of them is
# kept in a file), and enforced by the new keysvcd.
same_id() { # same_id KEY: the CKA_ID read now is the one read before the restart
	cp "$work/id.$1" "$work/id.$1.before" &&
		id_says "$1" "$(sed -n 's/^purposes=//p' "$work/id.$1.before")" &&
		cmp "$work/id.$1" "$work/id.$1.before"
}
for k in p-0 p-1 p-2 p-3 p-4 p-default t-ec t-rsa; do
	check "$k: the same CKA_ID after the restart (read through PKCS#11)" same_id "$k"
done
check "t-rsa after the restart: keysvc list still shows tls" test "$(purposes_of t-rsa)" = tls
check "p-4 after the restart: keysvc list still shows every purpose" \
	test "$(purposes_of p-4)" = csr,tls,http-signature,sign
# A PKCS#1 v1.5 signature from a digest with the tls-only RSA key: denied
# by its purposes before the token is tried. Observable on this token: had
# keysvcd tried it, the token's failure would have taught this fresh
# keysvcd that PKCS#1 v1.5 needs the data (logged, and in hello's
# data_only), as the control with the sign key k-rsa-2048 below shows.
hex=$(openssl dgst -sha256 -binary "$work/message" | od -An -tx1 | tr -d ' \n')
denied_before=$(pt_n_denied t-rsa)
run_exit 8 "key t-rsa has the purposes tls: signing a digest needs the purpose sign" \
	"t-rsa after the restart: a PKCS#1 v1.5 signature from a digest is denied" \
	ks_cli sign t-rsa --alg rsa-pkcs1-sha256 --digest-hex "$hex"
denied_as_sign() { # one more denied sign of t-rsa, the last one audited under the purpose sign
	[ "$(pt_n_denied t-rsa)" -eq $((denied_before + 1)) ] &&
		grep '"op":"sign"' "$audit" | grep '"key":"t-rsa"' | tail -1 |
		grep '"outcome":"denied"' | grep -q '"purpose":"sign"'
}
since_restart() { tail -n +$((restart_mark + 1)) "$work/d/daemon.log"; }
untried() { ! since_restart | grep -E 'C_Sign(Init)?: CKR|only with keys that can decrypt'; }
no_data_only() { raw_hello | python3 -c 'import json,sys; sys.exit("data_only" in json.load(sys.stdin))'; }
learned() { since_restart | grep -q 'only with keys that can decrypt' && ! no_data_only; }
check "... audited as denied under the purpose sign" denied_as_sign
check "... before the token was tried: no token failure and no PKCS#1 v1.5 lesson in this keysvcd's log" untried
check "... and hello lists no data_only algorithms" no_data_only
check_fails_with "control: the same digest with the sign key k-rsa-2048 reaches the token (unsupported)" \
	"only from the data" ks_cli sign k-rsa-2048 --alg rsa-pkcs1-sha256 --digest-hex "$hex"
check "control: ... which this keysvcd logged and learned (hello: data_only)" learned
check "t-rsa after the restart: TLS 1.2 RSA PKCS#1 v1.5 as server" pt_handshake server t-rsa tls1_2 rsa_pkcs1_sha256
check "t-ec after the restart: TLS 1.3 ECDSA as client" pt_handshake client t-ec tls1_3 ecdsa_secp256r1_sha256
check "t-ec after the restart: arbitrary data still refused" pt_refused t-ec "has the purposes tls" \
	pt_forge ks_cli sign t-ec --alg ecdsa-sha256 --in "$work/message"
# A fact of tpm2-pkcs11 1.9 (docs/security.md): it keeps CKA_MODIFIABLE
# false but lets C_SetAttributeValue rewrite CKA_ID all the same, so on this
# token anyone with the PIN can change a key's purposes (the PIN already
# lets them sign anything with it). Should this fail, the token enforces
# CKA_MODIFIABLE now: say so in docs/security.md.
check "keygen p-mod --purpose csr" ks_cli keygen p-mod --type ec-p256 --purpose csr
run_exit 1 "the purposes were rewritten" \
	"tpm2-pkcs11 lets a PIN holder rewrite the CKA_ID of a key with CKA_MODIFIABLE false" \
	p11 set-purposes p-mod sign
check "keysvcd stops cleanly" ks_stop

# The TPM out of object contexts, for real: without the resource manager
# the TPM holds the contexts of about one key (tpm2-pkcs11: "out of memory
# for object contexts", CKR_GENERAL_ERROR). Each generation's name check
# still succeeds; health must say degraded all the same, and the third
# fault in a row initialises the module again, after which it generates.
kill "$KS_TPM2_ABRMD_PID" 2>/dev/null
wait "$KS_TPM2_ABRMD_PID" 2>/dev/null
export TPM2_PKCS11_TCTI=swtpm:host=127.0.0.1,port=$KS_TPM2_PORT
check "keysvcd starts on the TPM without a resource manager" ks_tpm2_keysvcd_start "$work/d2" "$policy"
fails=0
for i in $(seq 1 8); do
	if ! ks_cli keygen "norm-$i" --type ec-p256 >/dev/null 2>&1; then
		fails=$((fails + 1))
		if [ "$fails" -eq 2 ]; then
			ks_cli list >/dev/null 2>&1
			raw_hello >"$work/hello-exhausted.json"
		fi
		[ "$fails" -eq 3 ] && break
	fi
done
check "generations fail once the TPM is out of object contexts" test "$fails" -eq 3
check "the token's error is in the log" grep -q "out of memory for object contexts" "$work/d2/daemon.log"
check "hello: degraded with the failing call, although a key.list succeeded" python3 -c \
	"import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d['health'] == 'degraded' and d['health_reason'].startswith('C_GenerateKeyPair: CKR_GENERAL_ERROR 2 times') else 1)" \
	"$work/hello-exhausted.json"
for i in $(seq 1 100); do
	grep -q "token reconnected" "$work/d2/daemon.log" && break
	sleep 0.2
done
check "the third fault in a row initialised the module again" grep -q "token reconnected" "$work/d2/daemon.log"
check "health ok after it" bash -c "$(declare -f raw_hello); KS_SOCKET='$KS_SOCKET' raw_hello | grep -q '\"health\": \"ok\"'"
check "and a key can be generated again" ks_cli keygen norm-after --type ec-p256
check "keysvcd stops cleanly" ks_stop

echo "1..$((passed + failed))"
echo "# passed $passed, failed $failed"
[ "$failed" -eq 0 ]
