#!/usr/bin/env bash
# End to end: keysvcd on a private SoftHSM token, driven by the keysvc CLI,
# every result checked by the openssl command line tool.
set -uo pipefail

. "$KS_SOURCE_ROOT/tests/integration/harness.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-cli.XXXXXX")
# nobody must reach the socket below it: the permission test is about the socket, not this.
chmod 0711 "$work"
passed=0
failed=0

closer_close=
closer_read=
cleanup() {
	for pid in $closer_close $closer_read; do kill "$pid" 2>/dev/null; done
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
check_exit() { # check_exit CODE DESCRIPTION COMMAND...
	local want=$1 what=$2 st=0
	shift 2
	"$@" >"$work/out" 2>&1 || st=$?
	if [ "$st" -eq "$want" ]; then ok "$what (exit $st)"; else
		fail "$what: exit $st, expected $want"
		sed 's/^/#   /' "$work/out"
	fi
}

policy='[{"uid": 0, "keys": ["*"], "ops": ["key.generate", "key.list", "key.public", "key.delete", "csr.create", "sign", "cert.put", "cert.get"]}]'
ks_start "$work/d" "$policy"

check "hello" ks_cli hello
check "hello --json says health ok" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' --json hello | grep -q '\"health\": *\"ok\"'"

subject_base="OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US"
head -c 3000 /dev/urandom >"$work/data"

for type in ec-p256 ec-p384 rsa-2048 rsa-3072 rsa-4096; do
	k=k-$type
	d=$work/$type
	mkdir -p "$d"
	# These keys sign any data and digests below: the purpose sign, asked for explicitly.
	check "keygen $type" ks_cli keygen "$k" --type "$type" --purpose csr,sign --out "$d/pub.pem"
	check "$type public key parses" openssl pkey -pubin -in "$d/pub.pem" -noout
	check "pubkey $type equals keygen output" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey '$k' | cmp -s - '$d/pub.pem'"

	check "csr $type" ks_cli csr "$k" --subject "$subject_base,CN=$k" \
		--dns a.example.org --dns b.example.org --ip 127.0.0.1 --ip ::1 \
		--uri spiffe://example.org/agent --email ops@example.org \
		--key-usage digitalSignature --eku clientAuth,serverAuth \
		--attr 1.3.6.1.4.1.34380.1.3.2=true:printable --out "$d/csr.pem"
	check "csr $type: openssl req -verify" bash -c "openssl req -in '$d/csr.pem' -noout -verify 2>&1 | grep -q 'verify OK'"
	subj=$(openssl req -in "$d/csr.pem" -noout -subject -nameopt RFC2253 2>/dev/null)
	if [ "$subj" = "subject=$subject_base,CN=$k" ]; then ok "csr $type subject"; else fail "csr $type subject: $subj"; fi
	openssl req -in "$d/csr.pem" -noout -text >"$d/csr.txt" 2>&1
	for want in "DNS:a.example.org" "DNS:b.example.org" "IP Address:127.0.0.1" \
		"IP Address:0:0:0:0:0:0:0:1" "URI:spiffe://example.org/agent" \
		"email:ops@example.org" "TLS Web Client Authentication" \
		"TLS Web Server Authentication" "Digital Signature" "1.3.6.1.4.1.34380.1.3.2"; do
		if grep -qF "$want" "$d/csr.txt"; then ok "csr $type has $want"; else fail "csr $type lacks $want"; fi
	done
	check "csr $type carries the token's public key" bash -c "openssl req -in '$d/csr.pem' -noout -pubkey | cmp -s - '$d/pub.pem'"

	case $type in
	ec-*) algs="ecdsa-sha256 ecdsa-sha384" ;;
	rsa-*) algs="rsa-pkcs1-sha256 rsa-pkcs1-sha384 rsa-pkcs1-sha512 rsa-pss-sha256 rsa-pss-sha384 rsa-pss-sha512" ;;
	esac
	for alg in $algs; do
		md=${alg##*-}
		opts=()
		case $alg in rsa-pss-*) opts=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest) ;; esac
		check "sign $type $alg (data)" ks_cli sign "$k" --alg "$alg" --in "$work/data" --out "$d/$alg.sig"
		check "verify $type $alg with openssl dgst" openssl dgst "-$md" "${opts[@]}" -verify "$d/pub.pem" -signature "$d/$alg.sig" "$work/data"
		hex=$(openssl dgst "-$md" -r "$work/data" | cut -d' ' -f1)
		openssl dgst "-$md" -binary "$work/data" >"$d/digest.bin"
		check "sign $type $alg (digest)" ks_cli sign "$k" --alg "$alg" --digest-hex "$hex" --out "$d/$alg.dsig"
		popts=(-pkeyopt "digest:$md")
		case $alg in rsa-pss-*) popts+=(-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest) ;; esac
		check "verify $type $alg digest with openssl pkeyutl" bash -c \
			"openssl pkeyutl -verify -pubin -inkey '$d/pub.pem' -in '$d/digest.bin' -sigfile '$d/$alg.dsig' ${popts[*]} | grep -q 'Verified Successfully'"
	done
	case $type in
	ec-*) check_exit 2 "rsa algorithm on an EC key is a bad request" ks_cli sign "$k" --alg rsa-pkcs1-sha256 --in "$work/data" --out "$d/x.sig" ;;
	rsa-*) check_exit 2 "ECDSA on an RSA key is a bad request" ks_cli sign "$k" --alg ecdsa-sha256 --in "$work/data" --out "$d/x.sig" ;;
	esac
	check_exit 2 "digest of the wrong length is a bad request" ks_cli sign "$k" --alg "${algs%% *}" --digest-hex 00112233 --out "$d/x.sig"
	[ ! -e "$d/x.sig" ] && ok "no output file after a failed sign" || fail "a failed sign left $d/x.sig"
done

# Existing names, missing keys, bad names.
check_exit 15 "keygen of an existing name" ks_cli keygen k-ec-p256 --type ec-p256
check_exit 14 "pubkey of a missing key" ks_cli pubkey no-such-key
check_exit 2 "a bad key name" ks_cli pubkey "bad/name"
check_exit 16 "an unknown key type" ks_cli keygen k-dsa --type dsa-1024
check_exit 2 "a bad subject" ks_cli csr k-ec-p256 --subject "CN=x,,O=y" --out "$work/bad.csr"
check "list shows the keys" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -q k-rsa-3072"
check_stderr() { # check_stderr CODE TEXT DESCRIPTION COMMAND...: exit CODE, TEXT (fixed string) on stderr
	local want=$1 text=$2 what=$3 st=0
	shift 3
	"$@" >"$work/out" 2>"$work/err" || st=$?
	if [ "$st" -eq "$want" ] && grep -qF -- "$text" "$work/err"; then ok "$what (exit $st)"; else
		fail "$what: exit $st, expected $want and '$text' on stderr"
		sed 's/^/#   /' "$work/err"
	fi
}
# The name rule is proto/wire.c's, applied by the CLI itself: refused without asking keysvcd.
check_stderr 2 "bad/name: not a valid key name" "a bad key name is refused before connecting" \
	"$KS_KEYSVC_CLI" --socket "$work/nobody-listens.sock" delete "bad/name"
# `list --json` after the command: one object, each key named with type and certificate flag.
check "list --json (after the command) is one object with the keys" python3 -c "
import json, subprocess
p = subprocess.run(['$KS_KEYSVC_CLI', '--socket', '$KS_SOCKET', 'list', '--json'], capture_output=True, text=True)
assert p.returncode == 0, (p.returncode, p.stderr)
lines = p.stdout.splitlines()
assert len(lines) == 1, lines
d = json.loads(lines[0])
assert set(d) == {'keys', 'truncated'} and d['truncated'] is False, d
k = {e['name']: e for e in d['keys']}
assert k['k-rsa-3072'] == {'name': 'k-rsa-3072', 'type': 'rsa-3072', 'has_cert': False,
                          'purposes': 'csr,sign', 'purposes_legacy': False}, k
assert k['k-ec-p256']['type'] == 'ec-p256', k
"
check "hello --json after the command" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' hello --json | grep -q '\"health\": *\"ok\"'"
check_stderr 2 "keysvc: unknown command 'frob' (see keysvc --help)" "an unknown command is named" ks_cli frob
check_stderr 7 "cannot reach keysvcd at $work/none.sock: No such file or directory; is it running? (systemctl status keysvcd.socket)" \
	"cannot reach keysvcd names the socket" "$KS_KEYSVC_CLI" --socket "$work/none.sock" list
check_stderr 2 "--digest-hex: non-hex character at position 3" "--digest-hex: a non-hex character" \
	ks_cli sign k-ec-p256 --alg ecdsa-sha256 --digest-hex 00zz
check_stderr 2 "--digest-hex: 8 hex digits; ecdsa-sha384 takes a 48-byte digest, 96 hex digits" \
	"--digest-hex: the length for the algorithm, in hex digits" ks_cli sign k-ec-p384 --alg ecdsa-sha384 --digest-hex 00112233
if grep -qi base64 "$work/err"; then fail "--digest-hex error speaks of base64"; else ok "--digest-hex error does not speak of base64"; fi
# A keygen whose answer timed out may still have made the key: say so, and it does exist.
check_stderr 7 "no answer from keysvcd within 0.001 s; the key k-slow may have been created: check with \`keysvc list\`" \
	"keygen timed out: the key may exist" "$KS_KEYSVC_CLI" --socket "$KS_SOCKET" --timeout 0.001 keygen k-slow --type rsa-4096
check "... and keysvcd made it" bash -c "for _ in \$(seq 1 60); do '$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -q '^k-slow ' && exit 0; sleep 0.5; done; exit 1"
# A peer that closes every connection, before reading (keysvcd restarting, its idle timeout) or
# after reading the request (keysvcd going away while it works on it).
cat >"$work/closer.py" <<'PY'
import os, socket, sys
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
open(path + ".ready", "w").close()
while True:
    c, _ = s.accept()
    if mode == "read":
        n = int.from_bytes(c.recv(4, socket.MSG_WAITALL), "big")
        c.recv(n, socket.MSG_WAITALL)
    c.close()
PY
for mode in close read; do
	python3 "$work/closer.py" "$work/$mode.sock" "$mode" &
	eval "closer_$mode=\$!"
	for _ in $(seq 1 50); do [ -e "$work/$mode.sock.ready" ] && break; sleep 0.1; done
done
# strace holds the CLI's send back until the peer has closed, so that the request cannot get there.
late=()
if strace -o /dev/null -e trace=sendmsg true 2>/dev/null; then
	# LeakSanitizer cannot run under ptrace: off for this one run (the sanitize setup).
	late=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
		strace -f -o /dev/null -e trace=sendmsg -e inject=sendmsg:delay_enter=300000)
else
	echo "# strace cannot trace here: the unsent case runs without holding the send back"
fi
check_stderr 7 "the request never reached keysvcd (sending: Broken pipe); nothing was changed" \
	"keygen that never reached keysvcd says nothing was changed" "${late[@]}" "$KS_KEYSVC_CLI" --socket "$work/close.sock" keygen k-never
if grep -q "may have been" "$work/err"; then fail "an unsent keygen says the key may exist"; else ok "an unsent keygen does not say the key may exist"; fi
check_stderr 7 "no answer from keysvcd (keysvcd closed the connection); the key k-gone may have been deleted: check with \`keysvc list\`" \
	"delete read but not answered: the key may be gone" "$KS_KEYSVC_CLI" --socket "$work/read.sock" delete k-gone
check_stderr 7 "the certificate of k-gone may have been stored: check with \`keysvc cert-get k-gone\`" \
	"cert-put read but not answered: the certificate may be stored" "$KS_KEYSVC_CLI" --socket "$work/read.sock" cert-put k-gone "$work/ec-p256/pub.pem"
kill "$closer_close" "$closer_read" 2>/dev/null
wait "$closer_close" "$closer_read" 2>/dev/null
closer_close=
closer_read=

# Local files are named as files, never as "the answer".
printf 'not a certificate\n' >"$work/notcert.pem"
check_stderr 2 "--cert $work/notcert.pem: something other than PEM certificates is in it" \
	"track of a file that is not PEM: the file named" ks_cli track k-ec-p256 --cert "$work/notcert.pem"
if grep -q answer "$work/err"; then fail "a local file error speaks of an answer"; else ok "a local file error does not speak of an answer"; fi
check "delete k-slow" ks_cli delete k-slow

# Certificate objects: issued by a local CA from the token's CSR.
ca=$work/ca
mkdir -p "$ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/ca.key" \
	-out "$ca/ca.pem" -subj "/CN=keysvc test CA" -days 2 2>/dev/null
check "local CA issues a certificate for the CSR" openssl x509 -req -in "$work/ec-p256/csr.pem" \
	-CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial -days 1 -out "$ca/leaf.pem"
check "cert-put of the matching certificate" ks_cli cert-put k-ec-p256 "$ca/leaf.pem"
check "cert-get returns it" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' cert-get k-ec-p256 | openssl x509 -noout -fingerprint -sha256 | cmp -s - <(openssl x509 -in '$ca/leaf.pem' -noout -fingerprint -sha256)"
check_exit 2 "cert-put of a certificate for another key" ks_cli cert-put k-ec-p384 "$ca/leaf.pem"
check_exit 14 "cert-get where there is none" ks_cli cert-get k-ec-p384

# Delete removes the key for good.
check "delete" ks_cli delete k-rsa-2048
check_exit 14 "pubkey after delete" ks_cli pubkey k-rsa-2048
check_exit 14 "delete of a missing key" ks_cli delete k-rsa-2048

# A uid without a grant: the socket mode stops it first; opened to all, the policy does.
if command -v setpriv >/dev/null 2>&1; then
	check_exit 7 "nobody cannot connect through a 0660 socket" \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$KS_KEYSVC_CLI" --socket "$KS_SOCKET" hello
	chmod 0666 "$KS_SOCKET"
	check_exit 8 "nobody is denied hello with the socket 0666" \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$KS_KEYSVC_CLI" --socket "$KS_SOCKET" hello
	check_exit 8 "nobody is denied sign with the socket 0666" \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$KS_KEYSVC_CLI" --socket "$KS_SOCKET" \
		sign k-ec-p256 --alg ecdsa-sha256 --digest-hex "$(openssl dgst -sha256 -r "$work/data" | cut -d' ' -f1)"
	check_exit 8 "nobody is denied keygen with the socket 0666" \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$KS_KEYSVC_CLI" --socket "$KS_SOCKET" keygen evil
	check "the audit log records the denials" grep -q '"uid":65534.*"outcome":"denied"' "$KS_DIR/audit.log"
else
	fail "setpriv (util-linux) is missing"
fi

# Key purposes (issue 21): keygen --purpose, the default csr,tls, list shows them, a use
# outside them is denied (exit 8) naming them and audited with the purpose refused.
check "keygen --purpose csr,tls" ks_cli keygen p-tls --purpose csr,tls
check "keygen without --purpose" ks_cli keygen p-default
check "keygen --purpose sign" ks_cli keygen p-sign --purpose sign
check_stderr 2 "--purpose csr,frob: unknown purpose" "keygen --purpose with an unknown purpose" \
	ks_cli keygen p-bad --purpose csr,frob
check_exit 2 "keygen --purpose with an empty entry" ks_cli keygen p-bad --purpose csr,,tls
check_exit 2 "keygen --purpose with a purpose twice" ks_cli keygen p-bad --purpose tls,tls
check_exit 14 "no key made by a refused keygen" ks_cli pubkey p-bad
check "list shows each key's purposes" bash -c "'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list >'$work/list' &&
	grep -Eq '^p-tls +ec-p256 +no +csr,tls\$' '$work/list' &&
	grep -Eq '^p-default +ec-p256 +no +csr,tls\$' '$work/list' &&
	grep -Eq '^p-sign +ec-p256 +no +sign\$' '$work/list'"
check "list --json has the purposes" python3 -c "
import json, subprocess, sys
d = json.loads(subprocess.run(['$KS_KEYSVC_CLI', '--socket', '$KS_SOCKET', 'list', '--json'], capture_output=True, check=True).stdout)
k = {e['name']: e for e in d['keys']}
sys.exit(not (k['p-tls']['purposes'] == 'csr,tls' and k['p-sign']['purposes'] == 'sign' and k['p-tls']['purposes_legacy'] is False))"
check_stderr 8 "key p-tls has the purposes csr,tls: signing a digest needs the purpose sign" \
	"a digest with a csr,tls key is denied" \
	ks_cli sign p-tls --alg ecdsa-sha256 --digest-hex "$(openssl dgst -sha256 -r "$work/data" | cut -d' ' -f1)"
check_exit 8 "arbitrary data with a csr,tls key is denied" ks_cli sign p-tls --alg ecdsa-sha256 --in "$work/data"
check "the refusal is audited with the purpose refused" \
	grep -q '"op":"sign","key":"p-tls","purpose":"sign","outcome":"denied"' "$KS_DIR/audit.log"
check "a CSR with a csr,tls key" ks_cli csr p-tls --subject CN=p-tls --out "$work/p-tls.csr"
check "the CSR verifies" bash -c "openssl req -in '$work/p-tls.csr' -noout -verify 2>&1 | grep -q 'verify OK'"
check_stderr 8 "key p-sign has the purposes sign: csr.create needs the purpose csr" \
	"a CSR with a sign-only key is denied" ks_cli csr p-sign --subject CN=p-sign
check "a digest with a sign key" ks_cli sign p-sign --alg ecdsa-sha256 \
	--digest-hex "$(openssl dgst -sha256 -r "$work/data" | cut -d' ' -f1)"

check "SIGTERM stops the daemon cleanly" ks_stop
[ ! -e "$KS_SOCKET" ] && ok "socket removed at exit" || fail "socket left behind"

# --debug outranks the configuration's log_level, on a reload too.
KS_LOG_LEVEL=notice KS_KEYSVCD_ARGS=--debug ks_start "$work/dbg" "$policy"
kill -HUP "$KS_PID"
for _ in $(seq 1 50); do grep -q "reload: policy" "$KS_DIR/daemon.log" && break; sleep 0.1; done
check "--debug: reloaded" grep -q "reload: policy" "$KS_DIR/daemon.log"
check "--debug: hello after the reload" ks_cli hello
check "--debug: still debug after a reload to log_level notice" \
	awk '/reload: policy/ { r = 1 } r && / hello - ?: ok/ { f = 1 } END { exit !f }' "$KS_DIR/daemon.log"
check "SIGTERM stops the --debug daemon" ks_stop

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
