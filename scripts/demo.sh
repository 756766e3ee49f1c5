#!/usr/bin/env bash
# The main job, end to end on a fresh machine:
#   a private SoftHSM token -> keysvcd -> a key generated inside the token ->
#   a CSR signed inside the token and verified with openssl -> a certificate
#   from a local test CA, checked and installed -> a renewal with a new CSR
#   from the same token key, checked and installed, the previous one kept ->
#   the same over the network: keysvc-openvox enrolls with a local OpenVox
#   test CA on 127.0.0.1 and renews over mutual TLS (certificate_renewal),
#   the TLS client key used through the keysvc OpenSSL provider.
# Everything lives in one directory (default: a new one under /tmp) and the
# daemon is stopped at the end. Usage: bash scripts/demo.sh [DIR]
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build

bash "$top/scripts/deps.sh"
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" "$top" >/dev/null
fi
# Only what the demo runs; the test programs are built by scripts/test.sh.
targets=(keysvc/keysvcd clients/cli/keysvc softhsm-conf/ks-token-init clients/provider/keysvc.so
	clients/renew/openvox/keysvc-openvox tests/ca/fake-openvox-ca)
ninja -C "$build" "${targets[@]}" >/dev/null || ninja -C "$build" "${targets[@]}"

export KS_SOURCE_ROOT=$top
export KS_KEYSVCD=$build/keysvc/keysvcd
export KS_KEYSVC_CLI=$build/clients/cli/keysvc
export KS_TOKEN_INIT=$build/softhsm-conf/ks-token-init
. "$top/tests/integration/harness.sh"

dir=${1:-$(mktemp -d "${TMPDIR:-/tmp}/keysvc-demo.XXXXXX")}
ca_pid=
stop_all() {
	[ -n "$ca_pid" ] && kill "$ca_pid" 2>/dev/null && wait "$ca_pid" 2>/dev/null
	ks_stop >/dev/null 2>&1 || true
}
trap stop_all EXIT
step() { printf '\n== %s\n' "$*"; }

step "SoftHSM token in $dir/token, keysvcd on $dir/run/keysvc.sock"
me=$(id -u)
ks_start "$dir" "[{\"uid\": $me, \"keys\": [\"demo-*\", \"agent*\"], \"ops\": [\"key.generate\", \"key.list\", \"key.public\", \"csr.create\", \"sign\", \"cert.put\", \"cert.get\"]}]"
ks_cli hello

step "Generate demo-agent (EC P-256) inside the token"
ks_cli keygen demo-agent --type ec-p256 --out "$dir/demo-agent.pub.pem"
cat "$dir/demo-agent.pub.pem"

step "CSR signed inside the token"
subject="OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=demo-agent"
ks_cli csr demo-agent --subject "$subject" --dns demo-agent.example.org \
	--eku clientAuth --key-usage digitalSignature --out "$dir/demo-agent.csr"
openssl req -in "$dir/demo-agent.csr" -noout -verify
openssl req -in "$dir/demo-agent.csr" -noout -text | sed -n '1,20p'

step "A local test CA"
mkdir -p "$dir/ca" "$dir/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$dir/ca/ca.key" -out "$dir/ca/ca.pem" -days 30 \
	-subj "/CN=keysvc demo CA" 2>/dev/null
cat >"$dir/ca/leaf.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:demo-agent.example.org
EOF

# issue CSR OUT: the test CA signs the CSR.
issue() {
	openssl x509 -req -in "$1" -CA "$dir/ca/ca.pem" -CAkey "$dir/ca/ca.key" \
		-CAcreateserial -days 7 -extfile "$dir/ca/leaf.ext" -out "$2" 2>/dev/null
}

# install NEW: only a certificate that matches the token key and chains to
# the CA replaces certs/demo-agent.pem; the previous one is kept as .prev;
# the file is replaced by rename after fsync, never rewritten in place.
install_cert() {
	local new=$1 target=$dir/certs/demo-agent.pem tmp
	openssl verify -CAfile "$dir/ca/ca.pem" "$new" >/dev/null ||
		{ echo "demo: $new does not chain to the CA" >&2; return 1; }
	cmp -s <(openssl x509 -in "$new" -noout -pubkey) "$dir/demo-agent.pub.pem" ||
		{ echo "demo: $new is not for the token key" >&2; return 1; }
	tmp=$(mktemp "$dir/certs/.demo-agent.XXXXXX")
	cat "$new" >"$tmp"
	chmod 0644 "$tmp"
	sync "$tmp"
	[ -f "$target" ] && ln -f "$target" "$target.prev"
	mv -f "$tmp" "$target"
	sync "$dir/certs"
	ks_cli cert-put demo-agent "$target"
	openssl x509 -in "$target" -noout -subject -serial -enddate
}

step "Issue and install the first certificate"
issue "$dir/demo-agent.csr" "$dir/issued-1.pem"
install_cert "$dir/issued-1.pem"

step "Renewal: a new CSR from the same token key, a new certificate"
ks_cli csr demo-agent --subject "$subject" --dns demo-agent.example.org \
	--eku clientAuth --key-usage digitalSignature --out "$dir/demo-agent-renew.csr"
openssl req -in "$dir/demo-agent-renew.csr" -noout -verify
issue "$dir/demo-agent-renew.csr" "$dir/issued-2.pem"
install_cert "$dir/issued-2.pem"
echo "previous certificate kept:"
openssl x509 -in "$dir/certs/demo-agent.pem.prev" -noout -serial

step "A local OpenVox CA on 127.0.0.1 (tests/ca/fake-openvox-ca), auto-renewal enabled"
"$build/tests/ca/fake-openvox-ca" --dir "$dir/openvox-ca" --port-file "$dir/openvox-ca.port" \
	--autosign 2>"$dir/openvox-ca.log" &
ca_pid=$!
for _ in $(seq 1 100); do [ -s "$dir/openvox-ca.port" ] && break; sleep 0.05; done
server=https://127.0.0.1:$(cat "$dir/openvox-ca.port")
echo "CA at $server"
export OPENSSL_MODULES=$build/clients/provider

step "keysvc-openvox enroll: key in the token, CSR, PUT certificate_request, certificate checked and installed"
"$build/clients/renew/openvox/keysvc-openvox" enroll --server "$server" --socket "$KS_SOCKET" \
	--certname agent1.example.org --key agent1 --ca-file "$dir/openvox-ca/ca.pem" \
	--cert "$dir/certs/agent1.pem" --crl-out "$dir/certs/crl.pem" --inventory "$dir/inventory"
openssl verify -CAfile "$dir/openvox-ca/ca.pem" "$dir/certs/agent1.pem"

step "keysvc-openvox renew: POST certificate_renewal over mutual TLS, the TLS key in the token"
sleep 1   # so that the renewed certificate ends later, to the second
"$build/clients/renew/openvox/keysvc-openvox" renew --server "$server" --socket "$KS_SOCKET" \
	--certname agent1.example.org --key agent1 --ca-file "$dir/openvox-ca/ca.pem" \
	--cert "$dir/certs/agent1.pem" --inventory "$dir/inventory"
openssl verify -CAfile "$dir/openvox-ca/ca.pem" "$dir/certs/agent1.pem"
echo "same key, new certificate; the previous one is kept:"
for f in "$dir/certs/agent1.pem.prev" "$dir/certs/agent1.pem"; do
	openssl x509 -in "$f" -noout -serial -enddate | tr '\n' ' '
	echo
done
echo "the audit log shows the handshake signatures made by keysvcd (intent, then outcome):"
grep '"sign"' "$dir/audit.log" | tail -n 2
echo "and its hash chain is intact:"
"$build/clients/cli/keysvc" audit-verify "$dir/audit.log"

step "The token holds the keys (the private halves never left it)"
ks_cli list

step "keysvc status: the managed certificate, its class and last renewal (exit 0: nothing needs attention)"
ks_cli status --inventory "$dir/inventory" --color never

stop_all
trap - EXIT
step "Done. Token, config, logs and certificates are in $dir (audit log: $dir/audit.log)"
