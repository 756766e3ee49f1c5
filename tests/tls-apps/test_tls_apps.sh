#!/usr/bin/env bash
# Unmodified Debian programs using a keysvc key through a key reference
# file (keysvc key-ref) with the keysvc provider loaded from OPENSSL_CONF:
# curl --key against openssl s_server -Verify 1, Python's ssl client and
# server (load_cert_chain keyfile=), nginx's ssl_certificate_key serving
# curl and gnutls-cli; TLS 1.2 and 1.3, RSA and EC; and keysvc
# provider-check. Every server runs on 127.0.0.1, keysvcd on a private
# socket (tests/integration/harness.sh).
set -uo pipefail

. "$KS_SOURCE_ROOT/tests/integration/harness.sh"

for prog in curl python3 nginx gnutls-cli openssl; do
	command -v "$prog" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$prog" >/dev/null 2>&1 || {
		echo "SKIP: $prog is not installed (scripts/deps.sh installs it)"
		exit 77
	}
done
nginx=$(PATH=$PATH:/usr/sbin command -v nginx)

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-tls-apps.XXXXXX")
chmod 0711 "$work"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
pids=()

# The sanitize setup (tests/meson.build) builds keysvc.so with ASan, which
# must come first in a program that loads it: python3 and nginx get the
# runtime preloaded, as tests/fuzz/sanitize/openssl does for openssl.
# Their own leaks at exit are not ours: leak checks stay with openssl.
# curl cannot have it (with libasan preloaded, Debian 12's curl hangs in
# setlocale() before it does anything, even --version): there, curl runs
# only where it does not load the provider, as a client of the servers.
curl_loads_provider=1
skip_check() { echo "ok - $* # SKIP sanitizer build: curl cannot run with the ASan runtime preloaded"; }
if [ -n "${KS_ASAN_RUNTIME:-}" ] && [ -f "$KS_ASAN_RUNTIME" ]; then
	curl_loads_provider=0
	mkdir -p "$work/bin"
	for prog in python3 nginx; do
		real=$(PATH=$PATH:/usr/sbin command -v "$prog")
		printf '#!/bin/sh\nLD_PRELOAD=%s${LD_PRELOAD:+:$LD_PRELOAD} ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" exec %s "$@"\n' \
			"$KS_ASAN_RUNTIME" "$real" >"$work/bin/$prog"
		chmod 0755 "$work/bin/$prog"
	done
	PATH=$work/bin:$PATH
	nginx=$work/bin/nginx
fi

cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	ks_tls_server_stop now
	ks_stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# check_out DESCRIPTION TEXT COMMAND...: exits 0 and prints TEXT.
check_out() {
	local what=$1 text=$2 st=0
	shift 2
	"$@" >"$work/out" 2>&1 || st=$?
	if [ "$st" -eq 0 ] && grep -qF -- "$text" "$work/out"; then ok "$what"; else
		fail "$what: exit $st, expected success saying '$text'"
		sed 's/^/#   /' "$work/out"
	fi
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_tls PORT: a TLS server answers on 127.0.0.1:PORT within 30 s (sanitized servers start slowly).
wait_tls() {
	local i
	for i in $(seq 1 300); do
		python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
			"$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# nginx workers drop root: as root, they run as nobody, which the policy
# lets use the web keys and no other.
me=$(id -u)
worker_user=
worker_uid=$me
if [ "$me" -eq 0 ]; then
	worker_user="user nobody nogroup;"
	worker_uid=$(id -u nobody)
fi
policy='[{"uid": '"$me"', "keys": ["*"], "ops": ["key.generate", "key.list", "key.public", "csr.create", "sign"]},
         {"uid": '"$worker_uid"', "keys": ["web-*"], "ops": ["key.public", "sign"]}]'
ks_start "$work/d" "$policy"
chmod 0711 "$work/d"
# keysvcd's socket is 0660 (never world): the workers' group gets it.
[ "$me" -eq 0 ] && chgrp "$(id -g nobody)" "$KS_SOCKET"

# The provider from an OpenSSL configuration file, as the shipped
# openssl.cnf does: default and keysvc, in both orders.
write_cnf() { # write_cnf FILE FIRST SECOND
	cat >"$1" <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
$2 = $2_sect
$3 = $3_sect
[default_sect]
activate = 1
[keysvc_sect]
module = $KS_PROVIDER_DIR/keysvc.so
socket = $KS_SOCKET
activate = 1
CNF
	chmod 0644 "$1"
}
write_cnf "$work/default-first.cnf" default keysvc
write_cnf "$work/keysvc-first.cnf" keysvc default
export OPENSSL_CONF=$work/default-first.cnf
unset KEYSVC_SOCKET

# A CA, a file-key server certificate for s_server, and for each token key
# a certificate for both ends (localhost, 127.0.0.1).
ca=$work/ca
mkdir -p "$ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/ca.key" \
	-out "$ca/ca.pem" -subj "/CN=keysvc apps test CA" -days 2 \
	-addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign >/dev/null 2>&1 ||
	ks_die "cannot make the test CA"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ca/ext"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/server.key" \
	-out "$ca/server.csr" -subj "/CN=localhost" >/dev/null 2>&1 || ks_die "server CSR"
openssl x509 -req -in "$ca/server.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
	-days 2 -extfile "$ca/ext" -out "$ca/server.pem" >/dev/null 2>&1 || ks_die "server cert"

types=(ec-p256 rsa-2048)
for t in "${types[@]}"; do
	check "$t: keygen web-$t" ks_cli keygen "web-$t" --type "$t" --out "$work/$t.pub"
	check "$t: keysvc key-ref web-$t --out $t.ref" ks_cli key-ref "web-$t" --out "$work/$t.ref"
	ks_cli csr "web-$t" --subject "CN=localhost,O=keysvc apps test" --out "$work/$t.csr" >/dev/null ||
		ks_die "csr web-$t"
	openssl x509 -req -in "$work/$t.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
		-days 2 -extfile "$ca/ext" -out "$work/$t.pem" >/dev/null 2>&1 || ks_die "cert web-$t"
	chmod 0644 "$work/$t.pem"
done

# ---- the reference file and its command ----
check "key-ref: mode 0644" test "$(stat -c %a "$work/ec-p256.ref")" = 644
check "key-ref: a KEYSVC KEY REFERENCE block and nothing secret" bash -c \
	"head -1 '$work/ec-p256.ref' | grep -qx -- '-----BEGIN KEYSVC KEY REFERENCE-----' && ! grep -q PRIVATE '$work/ec-p256.ref'"
check "key-ref: names the key" bash -c "openssl asn1parse -in '$work/ec-p256.ref' | grep -q 'UTF8STRING *:web-ec-p256'"
check "key-ref: without --socket, no socket in the file" bash -c \
	"KEYSVC_SOCKET='$KS_SOCKET' '$KS_KEYSVC_CLI' key-ref web-ec-p256 | openssl asn1parse | grep UTF8STRING && \
	 ! KEYSVC_SOCKET='$KS_SOCKET' '$KS_KEYSVC_CLI' key-ref web-ec-p256 | openssl asn1parse | grep -q 'cont \\[ 0 \\]'"
check "key-ref --socket: the socket in the file" bash -c \
	"'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' key-ref web-ec-p256 | openssl asn1parse | grep -q 'cont \\[ 0 \\]'"
for t in "${types[@]}"; do
	check "$t: openssl pkey -in $t.ref -pubout is keysvcd's public key" bash -c \
		"openssl pkey -in '$work/$t.ref' -pubout | cmp -s - '$work/$t.pub'"
done
check_out "key-ref --json" '"key_ref":"-----BEGIN KEYSVC KEY REFERENCE-----' ks_cli key-ref web-ec-p256 --json
run_exit 14 "no-such-key" "key-ref of a key keysvcd does not have" ks_cli key-ref web-missing --out "$work/missing.ref"
check "key-ref of a missing key leaves no file" test ! -e "$work/missing.ref"
run_exit 2 "not a valid key name" "key-ref of a bad name" ks_cli key-ref ../etc

# A hand-made reference (openssl asn1parse -genconf) for what key-ref never writes.
make_ref() { # make_ref FILE KEY [SOCKET]
	{
		echo 'asn1=SEQUENCE:ref'
		echo '[ref]'
		echo 'd=VISIBLESTRING:keysvc key reference'
		echo "k=UTF8:$2"
		[ -n "${3:-}" ] && echo "s=IMPLICIT:0,UTF8:$3"
	} >"$1.conf"
	openssl asn1parse -genconf "$1.conf" -out "$1.der" -noout >/dev/null 2>&1 || ks_die "asn1parse -genconf"
	{ echo '-----BEGIN KEYSVC KEY REFERENCE-----'; openssl base64 -in "$1.der"
	  echo '-----END KEYSVC KEY REFERENCE-----'; } >"$1"
}
make_ref "$work/hand.ref" web-ec-p256
check_out "provider-check --key: a hand-made reference works" "signature: made by keysvcd, verified" \
	ks_cli provider-check --key "$work/hand.ref"
{ echo "key reference of web-ec-p256, made by hand"; cat "$work/hand.ref"; } >"$work/commented.ref"
check_out "provider-check --key: text before the block is skipped, as PEM readers do" \
	"signature: made by keysvcd, verified" ks_cli provider-check --key "$work/commented.ref"
# The decoder leaves every other PEM to the other providers.
for cnf in default-first keysvc-first; do
	check "$cnf: a PEM private key file still loads with the provider loaded" bash -c \
		"OPENSSL_CONF='$work/$cnf.cnf' openssl pkey -in '$ca/server.key' -pubout | \
		 cmp -s - <(openssl pkey -in '$ca/server.key' -pubout)"
done

# ---- provider-check ----
check_out "provider-check: default listed first" "ok: OpenSSL programs" ks_cli provider-check
for t in "${types[@]}"; do
	check_out "provider-check --key $t.ref (default, keysvc)" "signature: made by keysvcd, verified" \
		ks_cli provider-check --key "$work/$t.ref"
	check_out "provider-check --key $t.ref (keysvc, default)" "signature: made by keysvcd, verified" \
		env OPENSSL_CONF="$work/keysvc-first.cnf" "$KS_KEYSVC_CLI" provider-check --key "$work/$t.ref"
done
check_out "provider-check --json" '"ok":true' ks_cli --json provider-check --key "$work/ec-p256.ref"
printf 'openssl_conf = openssl_init\n[openssl_init]\n' >"$work/plain.cnf"
run_exit 3 "does not activate the keysvc provider" "provider-check: a configuration without keysvc" \
	env OPENSSL_CONF="$work/plain.cnf" "$KS_KEYSVC_CLI" provider-check
printf 'openssl_conf = openssl_init\n[openssl_init]\nproviders = p\n[p]\nkeysvc = k\n[k]\nmodule = %s\nactivate = 1\n' \
	"$KS_PROVIDER_DIR/keysvc.so" >"$work/nodefault.cnf"
run_exit 3 "activates keysvc but not default" "provider-check: keysvc without default" \
	env OPENSSL_CONF="$work/nodefault.cnf" "$KS_KEYSVC_CLI" provider-check
sed "s|^module = .*|module = $work/no/keysvc.so|" "$work/default-first.cnf" >"$work/nomodule.cnf"
run_exit 3 "its module = path cannot be read" "provider-check: the module path is wrong" \
	env OPENSSL_CONF="$work/nomodule.cnf" "$KS_KEYSVC_CLI" provider-check
# No "activate": OpenSSL 3.0 knows the provider and leaves it unloaded ("activate = 0" activates it).
sed "/^module = /{n;n;/^activate = 1/d}" "$work/default-first.cnf" >"$work/inactive.cnf"
run_exit 3 'add "activate = 1" to that section' "provider-check: keysvc named but not activated" \
	env OPENSSL_CONF="$work/inactive.cnf" "$KS_KEYSVC_CLI" provider-check
sed "s|^socket = .*|socket = $work/nowhere.sock|" "$work/default-first.cnf" >"$work/nowhere.cnf"
run_exit 7 "cannot reach keysvcd" "provider-check: keysvcd not on the configured socket" \
	env OPENSSL_CONF="$work/nowhere.cnf" "$KS_KEYSVC_CLI" provider-check
# The shipped files: keysvc.cnf included at the end of Debian's openssl.cnf,
# and the OPENSSL_CONF file for services (both with this build's paths).
sed -e "s|^module = .*|module = $KS_PROVIDER_DIR/keysvc.so|" -e "s|^# socket = .*|socket = $KS_SOCKET|" \
	"$KS_BUILD_ROOT/clients/provider/keysvc.cnf" >"$work/keysvc.cnf"
if [ -f /etc/ssl/openssl.cnf ] && ! grep -q keysvc /etc/ssl/openssl.cnf; then
	run_exit 3 "does not activate the keysvc provider" "provider-check: Debian's openssl.cnf alone" \
		env OPENSSL_CONF=/etc/ssl/openssl.cnf "$KS_KEYSVC_CLI" provider-check
	{ cat /etc/ssl/openssl.cnf; echo ".include $work/keysvc.cnf"; } >"$work/debian.cnf"
	check_out "provider-check: Debian's openssl.cnf with the one-line .include" "signature: made by keysvcd" \
		env OPENSSL_CONF="$work/debian.cnf" "$KS_KEYSVC_CLI" provider-check --key "$work/ec-p256.ref"
	sed "s|^\.include /.*keysvc.cnf$|.include $work/keysvc.cnf|" "$KS_BUILD_ROOT/clients/provider/openssl.cnf" \
		>"$work/service.cnf"
	check_out "provider-check: the shipped OPENSSL_CONF file for services" "signature: made by keysvcd" \
		env OPENSSL_CONF="$work/service.cnf" "$KS_KEYSVC_CLI" provider-check --key "$work/rsa-2048.ref"
fi
run_exit 2 "not a key reference file" "provider-check --key of a PEM public key" \
	ks_cli provider-check --key "$work/ec-p256.pub"
make_ref "$work/other.ref" web-ec-p256 "$work/elsewhere.sock"
run_exit 3 "made for keysvcd at $work/elsewhere.sock" "a reference made for another keysvcd is refused" \
	ks_cli provider-check --key "$work/other.ref"
make_ref "$work/badname.ref" "../web-ec-p256"
run_exit 2 "not a keysvc key name" "a reference with a bad key name is refused" \
	ks_cli provider-check --key "$work/badname.ref"
{ echo '-----BEGIN KEYSVC KEY REFERENCE-----'; echo 'not base64!'; echo '-----END KEYSVC KEY REFERENCE-----'; } \
	>"$work/garbled.ref"
run_exit 2 "not valid PEM" "a garbled reference is refused" ks_cli provider-check --key "$work/garbled.ref"
make_ref "$work/gone.ref" web-gone
run_exit 14 "no such key" "a reference to a missing key: no-such-key" ks_cli provider-check --key "$work/gone.ref"
make_ref "$work/denied.ref" other-key
ks_cli keygen other-key >/dev/null
[ "$me" -eq 0 ] && run_exit 8 "denied" "a reference to a key the policy does not grant sign on" \
	env OPENSSL_CONF="$work/default-first.cnf" setpriv --reuid="$worker_uid" --regid="$(id -g nobody)" --clear-groups \
	"$KS_KEYSVC_CLI" provider-check --key "$work/denied.ref"

# ---- curl, client certificate, against openssl s_server -Verify 1 ----
ks_tls_server_start "$work/s_server.log" env -u OPENSSL_CONF openssl s_server -www -cert "$ca/server.pem" \
	-key "$ca/server.key" -CAfile "$ca/ca.pem" -Verify 1 -verify_return_error ||
	ks_die "s_server did not listen: $(cat "$work/s_server.log")"
port=$KS_SERVER_PORT
for t in "${types[@]}"; do
	for v in 1.2 1.3; do
		[ "$curl_loads_provider" = 1 ] ||
			{ skip_check "curl --cert $t.pem --key $t.ref, TLS $v"; continue; }
		check_out "curl --cert $t.pem --key $t.ref, TLS $v, client certificate verified by s_server" \
			"Protocol  : TLSv$v" timeout 90 curl -sS --max-time 60 --cacert "$ca/ca.pem" --cert "$work/$t.pem" \
			--key "$work/$t.ref" "--tlsv$v" --tls-max "$v" "https://localhost:$port/" \
			--resolve "localhost:$port:127.0.0.1"
	done
	# Python's ssl client, same server.
	for v in 1.2 1.3; do
		check_out "python ssl client load_cert_chain(keyfile=$t.ref), TLS $v, against s_server" \
			"protocol TLSv$v" timeout 90 python3 "$KS_SOURCE_ROOT/tests/tls-apps/pyssl.py" client "$port" \
			"$ca/ca.pem" "$work/$t.pem" "$work/$t.ref" "$v"
	done
done
run_exit 58 "unable to set private key file" "curl without the keysvc provider cannot use the reference" \
	env -u OPENSSL_CONF timeout 90 curl -sS --max-time 60 --cacert "$ca/ca.pem" --cert "$work/ec-p256.pem" \
	--key "$work/ec-p256.ref" "https://localhost:$port/" --resolve "localhost:$port:127.0.0.1"
[ "$curl_loads_provider" = 1 ] || skip_check "curl with keysvc listed before default"
[ "$curl_loads_provider" = 1 ] && check_out "curl with keysvc listed before default" "Protocol  : TLSv1.3" \
	env OPENSSL_CONF="$work/keysvc-first.cnf" timeout 90 curl -sS --max-time 60 --cacert "$ca/ca.pem" \
	--cert "$work/ec-p256.pem" --key "$work/ec-p256.ref" --tlsv1.3 "https://localhost:$port/" \
	--resolve "localhost:$port:127.0.0.1"
check "s_server saw the token keys' certificates" grep -q "keysvc apps test" "$work/s_server.log"

# ---- Python's ssl server, curl as its client (no keysvc provider) ----
for t in "${types[@]}"; do
	rm -f "$work/py.port"
	python3 "$KS_SOURCE_ROOT/tests/tls-apps/pyssl.py" server "$work/py.port" "$work/$t.pem" "$work/$t.ref" 2 \
		>>"$work/pyserver.log" 2>&1 &
	pypid=$!
	pids+=($pypid)
	for i in $(seq 1 100); do [ -s "$work/py.port" ] && break; sleep 0.1; done
	pyport=$(cat "$work/py.port" 2>/dev/null)
	for v in 1.2 1.3; do
		check_out "python ssl server load_cert_chain(keyfile=$t.ref), TLS $v, to curl" \
			"served by python over TLSv$v" env -u OPENSSL_CONF timeout 90 curl -sS --max-time 60 \
			--cacert "$ca/ca.pem" "--tlsv$v" --tls-max "$v" "https://localhost:${pyport:-1}/" \
			--resolve "localhost:${pyport:-1}:127.0.0.1"
	done
	kill "$pypid" 2>/dev/null
	wait "$pypid" 2>/dev/null
done
[ -s "$work/pyserver.log" ] && sed 's/^/# python server: /' "$work/pyserver.log"

# ---- nginx: ssl_certificate_key is the reference ----
ng=$work/nginx
mkdir -p "$ng/tmp"
chmod 0755 "$ng" "$ng/tmp"
chmod 0644 "$work"/*.ref
{
	echo "daemon off;"
	echo "$worker_user"
	echo "worker_processes 2;"
	echo "pid $ng/nginx.pid;"
	echo "error_log $ng/error.log info;"
	# nginx empties its workers' environment: they sign, and need the provider's configuration.
	echo "env OPENSSL_CONF;"
	echo "events { worker_connections 64; }"
	echo "http {"
	echo "  access_log $ng/access.log;"
	for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $ng/tmp/$d;"; done
	for t in "${types[@]}"; do
		p=$(free_port)
		echo "$p" >"$ng/$t.port"
		echo "  server {"
		echo "    listen 127.0.0.1:$p ssl;"
		echo "    ssl_certificate $work/$t.pem;"
		echo "    ssl_certificate_key $work/$t.ref;"
		echo "    ssl_protocols TLSv1.2 TLSv1.3;"
		echo "    location / { return 200 \"served by nginx over \$ssl_protocol\\n\"; }"
		echo "  }"
	done
	echo "}"
} >"$ng/nginx.conf"
run_exit 1 "cannot load certificate key" "nginx -t without the keysvc provider cannot load the reference" \
	env -u OPENSSL_CONF "$nginx" -t -p "$ng" -c "$ng/nginx.conf" -e "$ng/error-t.log"
check "nginx -t with OPENSSL_CONF" "$nginx" -t -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log"
"$nginx" -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log" >>"$ng/stderr.log" 2>&1 &
pids+=($!)
for t in "${types[@]}"; do
	p=$(cat "$ng/$t.port")
	wait_tls "$p" || { fail "nginx did not listen on $p"; cat "$ng/error.log" "$ng/stderr.log"; continue; }
	for v in 1.2 1.3; do
		check_out "nginx ssl_certificate_key $t.ref, TLS $v, to curl" "served by nginx over TLSv$v" \
			env -u OPENSSL_CONF timeout 90 curl -sS --max-time 60 --cacert "$ca/ca.pem" "--tlsv$v" --tls-max "$v" \
			"https://localhost:$p/" --resolve "localhost:$p:127.0.0.1"
		check_out "nginx ssl_certificate_key $t.ref, TLS $v, to gnutls-cli" "served by nginx over TLSv$v" \
			bash -c "printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' | timeout 60 gnutls-cli \
				--x509cafile '$ca/ca.pem' --priority 'NORMAL:-VERS-ALL:+VERS-TLS$v' --port $p \
				--sni-hostname localhost --verify-hostname localhost 127.0.0.1; true"
	done
done
grep -q "\[emerg\]\|\[alert\]\|\[crit\]" "$ng/error.log" && sed 's/^/# nginx: /' "$ng/error.log"

echo "# passed $passed, failed $failed"
[ "$failed" -eq 0 ]
