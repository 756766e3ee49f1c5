#!/usr/bin/env bash
# keysvc-ucl end to end: keysvcd on a private SoftHSM token, the fake UCL
# connector (tests/ucl) on 127.0.0.1 validating every GraphQL request
# against the connector's schema, pairing, renewal, revocation, and every
# way the connector can answer wrong. Where a renewal fails, the installed
# files, the state and the keys must be as they were.
#
# Arguments: the fake-ucl-connector and keysvc-ucl programs, the schema.
set -uo pipefail

fake=$1
ucl=$2
schema=$3
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-ucl.XXXXXX")
chmod 0711 "$work"
cleanup() {
	ks_fake_stop
	ks_stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

token=one-time-$RANDOM$RANDOM
subject_base="OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US"
client_id=app-1234

start_srv() {
	ks_fake_start "$fake" --dir "$work/conn" --schema "$schema" --control "$work/control" \
		--token "$token" --client-id "$client_id" --subject-base "$subject_base" "$@"
	port=$KS_FAKE_PORT
}
stop_srv() { ks_fake_stop; }
mode() { printf '%s\n' "$1" >"$work/control"; }

export OPENSSL_MODULES=$KS_PROVIDER_DIR
me=$(id -u)
policy='[{"uid": '"$me"', "keys": ["ucl.*", "uclx*"], "ops": ["key.generate", "key.list", "key.public", "key.delete", "csr.create", "sign"]}]'
ks_start "$work/d" "$policy"
: >"$work/control"
start_srv

files=$work/files
mkdir -p "$files"
state=$files/state.json
printf '%s\n' "$token" >"$work/token"
chmod 0600 "$work/token"
pair=(pair --connector-url "https://127.0.0.1:$port/connector/graphql" --token-file "$work/token"
	--ca-file "$work/conn/ca.pem" --cert "$files/client.pem" --chain "$files/chain.pem"
	--ca-out "$files/ca.pem" --state "$state" --socket "$KS_SOCKET" --quiet)

# ---- pairing ----
chmod 0644 "$work/token"
run_exit 2 "mode 0600" "a token file readable by others is refused" "$ucl" "${pair[@]}"
chmod 0600 "$work/token"
run_exit 2 "unrecognized option" "no --token option exists (the token never goes on a command line)" \
	"$ucl" pair --token "$token" --state "$state"
mode "key-algorithm ed25519"
run_exit 18 "cannot make" "the connector asks for an algorithm keysvc cannot make" "$ucl" "${pair[@]}"
# (The run's lock file, state.json.lock, stays: see certlock.h.)
check "  nothing installed, no state" bash -c "! ls '$files'/* 2>/dev/null | grep -v '\.lock$' | grep -q ."
mode normal
# The one-time token was used by the refused attempt: a new one.
stop_srv
token=one-time-$RANDOM$RANDOM
printf '%s\n' "$token" >"$work/token"
start_srv
pair[2]="https://127.0.0.1:$port/connector/graphql"
run_exit 0 "" "pair with the one-time token" "$ucl" "${pair[@]}"
# Keys are BASE.ID.N, ID the pairing id of the state file.
id=$(jq -r .pairing_id "$state")
check "the state has a pairing id of 8 hex digits" bash -c "[[ '$id' =~ ^[0-9a-f]{8}\$ ]]"
k1=ucl.$id.1 k2=ucl.$id.2 k3=ucl.$id.3
check "the client certificate is for key $k1" bash -c \
	"openssl x509 -in '$files/client.pem' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey $k1)"
check "the state names it as the current key" test "$(jq -r .key "$state")" = "$k1"
check "the certificate chains to the installed CA" openssl verify -CAfile "$files/ca.pem" "$files/client.pem"
check "the subject is the configured one" bash -c \
	"openssl x509 -in '$files/client.pem' -noout -subject -nameopt RFC2253 | grep -q 'CN=$client_id'"
check "the chain starts with the client certificate" bash -c \
	"cmp -s <(openssl x509 -in '$files/chain.pem') <(openssl x509 -in '$files/client.pem')"
check "the state file is 0600" bash -c "[ \$(stat -c %a '$state') = 600 ]"
check "the token is not in the state" bash -c "! grep -q '$token' '$state'"
run_exit 2 "already paired" "pair again over an existing state is refused" "$ucl" "${pair[@]}"
run_exit 17 "" "the one-time token cannot be used twice" "$ucl" "${pair[@]/$state/$work/other-state.json}"

# ---- the CA the client certificate must chain to ----
# pair_as DIR KEYBASE TOKEN [OPTIONS...]: another pairing, into DIR, with a
# one-time token that the control file must add.
pair_as() {
	local d=$1 base=$2 tok=$3
	shift 3
	mkdir -p "$d"
	printf '%s\n' "$tok" >"$work/token-$base"
	chmod 0600 "$work/token-$base"
	"$ucl" pair --connector-url "https://127.0.0.1:$port/connector/graphql" --token-file "$work/token-$base" \
		--ca-file "$work/conn/ca.pem" --cert "$d/client.pem" --chain "$d/chain.pem" --ca-out "$d/ca.pem" \
		--state "$d/state.json" --key-base "$base" --socket "$KS_SOCKET" --quiet "$@"
}
renew_as() { "$ucl" renew --state "$1/state.json" --socket "$KS_SOCKET" --quiet --inventory "$work/inv-x"; }
# --issuer-ca pins the CA: a self-consistent answer from another CA is refused.
printf 'token tok-a-%s\nother-ca\n' "$RANDOM" >"$work/control"
run_exit 18 "does not chain to" "pair --issuer-ca: an answer from another CA is refused" \
	pair_as "$work/pa" uclxa "$(sed -n 's/^token //p' "$work/control")" --issuer-ca "$work/conn/ca.pem"
check "  refused: nothing installed" bash -c "! ls '$work/pa'/*.pem 2>/dev/null | grep -q ."
check "  the state records only the unfinished attempt and its key" \
	jq -e '(keys == ["key_base", "pairing_id", "unfinished_key", "version"]) and
		.unfinished_key == "uclxa." + .pairing_id + ".1"' "$work/pa/state.json"
run_exit 2 "did not finish" "  renew refuses the unfinished pairing" renew_as "$work/pa"
# pair again with this state (and a new token): the attempt's key is reused.
ida=$(jq -r .pairing_id "$work/pa/state.json")
ks_cli pubkey "uclxa.$ida.1" >"$work/pa-key1"
printf 'token tok-a2-%s\n' "$RANDOM" >"$work/control"
run_exit 0 "" "pair again with the unfinished state" \
	pair_as "$work/pa" uclxa "$(sed -n 's/^token //p' "$work/control")" --issuer-ca "$work/conn/ca.pem"
check "  the certificate is for the key the unfinished attempt made" bash -c \
	"openssl x509 -in '$work/pa/client.pem' -noout -pubkey | cmp -s - '$work/pa-key1'"
check "  now paired, under the same pairing id" \
	jq -e '.unfinished_key == null and .key == "uclxa." + .pairing_id + ".1"' "$work/pa/state.json"

# An unfinished pairing resumes only with its own base; its key, if the
# connector now asks for another algorithm, is replaced (it is this state's).
printf 'token tok-e-%s\nother-ca\n' "$RANDOM" >"$work/control"
run_exit 18 "does not chain to" "pair into pe fails after making its key" \
	pair_as "$work/pe" uclxe "$(sed -n 's/^token //p' "$work/control")" --issuer-ca "$work/conn/ca.pem"
ide=$(jq -r .pairing_id "$work/pe/state.json")
printf 'token tok-e2-%s\n' "$RANDOM" >"$work/control"
run_exit 2 "unfinished pairing with --key-base uclxe" "  pair again with another --key-base is refused" \
	pair_as "$work/pe" uclxf "$(sed -n 's/^token //p' "$work/control")"
printf 'token tok-e3-%s\nkey-algorithm rsa4096\n' "$RANDOM" >"$work/control"
run_exit 0 "" "  pair again, the connector now asking for rsa4096" \
	pair_as "$work/pe" uclxe "$(sed -n 's/^token //p' "$work/control")" --issuer-ca "$work/conn/ca.pem"
mode normal
check "  the attempt's rsa-2048 key replaced by an rsa-4096 one under the same name" bash -c \
	"'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -qE '^uclxe\.$ide\.1 +rsa-4096'"
check "  the key has only the purposes keysvc-ucl needs (csr,tls)" bash -c \
	"'$KS_KEYSVC_CLI' --socket '$KS_SOCKET' list | grep -qE '^uclxe\.$ide\.1 +rsa-4096 .* csr,tls\$'"
# A version 2 state holds absolute paths only.
jq '.cert = "pe/client.pem"' "$work/pe/state.json" >"$work/pe-rel.json"
run_exit 2 "a relative path" "a version 2 state with a relative path is refused" \
	"$ucl" renew --state "$work/pe-rel.json" --socket "$KS_SOCKET" --quiet --inventory "$work/inv-x"
# The connector hands out only its signing CA (no root secret): pinning the
# root works, and so does pinning the signing CA alone.
printf 'token tok-b-%s\nsub-ca\n' "$RANDOM" >"$work/control"
run_exit 0 "" "pair --issuer-ca ROOT, the answer's CA an intermediate under it" \
	pair_as "$work/pb" uclxb "$(sed -n 's/^token //p' "$work/control")" --issuer-ca "$work/conn/ca.pem"
check "  the installed CA is the connector's signing CA" cmp -s "$work/pb/ca.pem" "$work/conn/sub-ca.pem"
check "  the certificate chains through it to the root" \
	openssl verify -CAfile "$work/conn/ca.pem" -untrusted "$work/pb/ca.pem" "$work/pb/client.pem"
printf 'token tok-c-%s\nsub-ca\n' "$RANDOM" >"$work/control"
run_exit 0 "" "pair --issuer-ca with only the signing CA (not self-signed) pinned" \
	pair_as "$work/pc" uclxc "$(sed -n 's/^token //p' "$work/control")" --issuer-ca "$work/conn/sub-ca.pem"
mode sub-ca
run_exit 0 "" "renew: the installed signing CA alone is the trust anchor" renew_as "$work/pc"
# A CA above the installed one is not vouched for by it: pair again.
cp "$work/pc/chain.pem" "$work/pc-chain.before"
mode normal
run_exit 18 "pair again" "renew: a caCertificate the installed CA does not vouch for is refused" renew_as "$work/pc"
check "  refused: chain unchanged" cmp -s "$work/pc/chain.pem" "$work/pc-chain.before"
# Without --issuer-ca the first answer's CA is trusted (TOFU over verified TLS);
# a later caCertificate must chain to it.
printf 'token tok-d-%s\n' "$RANDOM" >"$work/control"
run_exit 0 "" "pair without --issuer-ca: the answer's CA is trusted on first use" \
	pair_as "$work/pd" uclxd "$(sed -n 's/^token //p' "$work/control")"
check "  the installed CA is the connector's CA" cmp -s "$work/pd/ca.pem" "$work/conn/ca.pem"
mode sub-ca
run_exit 0 "" "renew: a new caCertificate that chains to the installed CA is accepted" renew_as "$work/pd"
check "  and installed" cmp -s "$work/pd/ca.pem" "$work/conn/sub-ca.pem"
mode normal

# ---- pairings that share a key base ----
# Each pairing has its own id in its key names, so neither reuses nor
# deletes the other's keys (before, the second reused BASE.1 and the first's
# renewals deleted it under it). Also with the default base: the main
# pairing above is ucl too, and s3 renews after the main one's renewals.
next_token() { printf 'token tok-%s-%s\n' "$1" "$RANDOM" >"$work/control"; sed -n 's/^token //p' "$work/control"; }
for s in s1 s2; do
	run_exit 0 "" "pair $s with --key-base uclxs" pair_as "$work/$s" uclxs "$(next_token "$s")"
done
mkdir -p "$work/s3"
tok=$(next_token s3)
printf '%s\n' "$tok" >"$work/token-s3"
chmod 0600 "$work/token-s3"
run_exit 0 "" "pair s3 with the default key base, as the main pairing" "$ucl" pair \
	--connector-url "https://127.0.0.1:$port/connector/graphql" --token-file "$work/token-s3" \
	--ca-file "$work/conn/ca.pem" --cert "$work/s3/client.pem" --chain "$work/s3/chain.pem" \
	--ca-out "$work/s3/ca.pem" --state "$work/s3/state.json" --socket "$KS_SOCKET" --quiet
mode normal
check "  s1 and s2 have keys of their own" \
	test "$(jq -r .key "$work/s1/state.json")" != "$(jq -r .key "$work/s2/state.json")"
check "  s3's key is not the main pairing's" test "$(jq -r .key "$work/s3/state.json")" != "$k1"
for s in s1 s1 s2 s2; do
	run_exit 0 "" "renew $s (two renewals each, s1's first)" renew_as "$work/$s"
done
for s in s1 s2; do
	check "  $s's certificate is for its current key" bash -c \
		"openssl x509 -in '$work/$s/client.pem' -noout -pubkey |
			cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey \$(jq -r .key '$work/$s/state.json'))"
	check "  $s's previous key is there for a rollback" ks_cli pubkey "$(jq -r .previous_key "$work/$s/state.json")"
done

# ---- relative paths on pair's command line ----
# The state holds them absolute: the service renews from /.
mkdir -p "$work/rel/p1"
printf '%s\n' "$(next_token rel)" >"$work/rel/token"
chmod 0600 "$work/rel/token"
cp "$work/conn/ca.pem" "$work/rel/server-ca.pem"
run_exit 0 "" "pair with relative paths" bash -c "cd '$work/rel' && '$ucl' pair \
	--connector-url 'https://127.0.0.1:$port/connector/graphql' --token-file token --ca-file server-ca.pem \
	--cert p1/client.pem --chain p1/chain.pem --ca-out p1/ca.pem --state p1/state.json --key-base uclxr \
	--socket '$KS_SOCKET' --quiet"
mode normal
check "  the state's paths are absolute" jq -e --arg d "$(realpath "$work/rel")" \
	'[.cert, .chain, .ca, .server_ca_file] == [$d + "/p1/client.pem", $d + "/p1/chain.pem", $d + "/p1/ca.pem",
	 $d + "/server-ca.pem"]' "$work/rel/p1/state.json"
run_exit 0 "" "renew from / with the state's absolute path" \
	bash -c "cd / && '$ucl' renew --state '$work/rel/p1/state.json' --socket '$KS_SOCKET' --quiet --inventory '$work/inv-x'"

# ---- a state file of an earlier keysvc-ucl (version 1) ----
# Made as it made them: key BASE.1 (no pairing id), its certificate from the
# token-secured connector, the paths as given to pair in $work/old, no id.
mkdir -p "$work/old/m"
cp "$work/conn/ca.pem" "$work/old/server-ca.pem"
tok=$(next_token old)
gql_old() {
	jq -n --arg q "$1" --argjson v "$2" '{query: $q, variables: $v}' |
		curl -sS --fail --cacert "$work/conn/ca.pem" -H 'Content-Type: application/json' -H "Connector-Token: $3" \
			--data-binary @- "https://127.0.0.1:$port/connector/graphql"
}
ks_cli keygen uclxm.1 --type rsa-2048 >/dev/null
ks_cli csr uclxm.1 --subject "$subject_base,CN=$client_id" >"$work/old/m.csr"
tok2=$(gql_old 'query { result: configuration { token { token } } }' null "$tok" | jq -r .data.result.token.token)
gql_old 'mutation S($csr: String!) { result: signCertificateSigningRequest(csr: $csr) {
	certificateChain caCertificate clientCertificate } }' \
	"$(jq -n --arg c "$(base64 -w0 "$work/old/m.csr")" '{csr: $c}')" "$tok2" >"$work/old/sign.json"
mode normal
for f in client:clientCertificate chain:certificateChain ca:caCertificate; do
	jq -r ".data.result.${f#*:}" "$work/old/sign.json" | base64 -d >"$work/old/m/${f%%:*}.pem"
done
cat >"$work/old/m/state.json" <<JSON
{
  "ca": "m/ca.pem",
  "cert": "m/client.pem",
  "chain": "m/chain.pem",
  "connector_url": "https://127.0.0.1:$port/connector/graphql",
  "generation": 1,
  "key_base": "uclxm",
  "mtls_url": "https://127.0.0.1:$port/mtls/graphql",
  "server_ca_file": "server-ca.pem",
  "version": 1
}
JSON
chmod 0600 "$work/old/m/state.json"
check "  the version 1 certificate is for uclxm.1" bash -c \
	"openssl x509 -in '$work/old/m/client.pem' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey uclxm.1)"
renew_old() { (cd / && "$ucl" renew --state "$work/old/m/state.json" --socket "$KS_SOCKET" --inventory "$work/inv-x"); }
run_exit 0 "now with pairing id" "renew a version 1 state from /: its relative paths found from its directory's parent" renew_old
idm=$(jq -r .pairing_id "$work/old/m/state.json")
check "  migrated: version 2, a pairing id, absolute paths, the new key with the id" \
	jq -e --arg d "$(realpath "$work/old")" '.version == 2 and (.pairing_id | test("^[0-9a-f]{8}$")) and
	.cert == $d + "/m/client.pem" and .server_ca_file == $d + "/server-ca.pem" and
	.key == "uclxm." + .pairing_id + ".2" and .previous_key == "uclxm.1"' "$work/old/m/state.json"
run_exit 0 "kept the retired key uclxm.1" "renew it again: the id-less key uclxm.1 is retired but not deleted" renew_old
check "  uclxm.1 is still in the token" ks_cli pubkey uclxm.1
check "  the current key is uclxm.$idm.3" test "$(jq -r .key "$work/old/m/state.json")" = "uclxm.$idm.3"

# ---- renewal failures: nothing changes ----
snapshot() { (cd "$files" && sha256sum client.pem chain.pem ca.pem state.json) >"$work/snap"; }
unchanged() { (cd "$files" && sha256sum -c --quiet "$work/snap"); }
renew() { "$ucl" renew --state "$state" --socket "$KS_SOCKET" --quiet --inventory "$work/inv" "$@"; }
inv_says() { ks_inventory_says "$work/inv" /client.pem "$@"; }
snapshot
run_exit 10 "" "renew --when-due: not due" renew --when-due
check "not due: files unchanged" unchanged
for m in graphql-error:17:"answered with errors" \
	partial:17:"answered with errors" \
	http-500:17:"HTTP 500" \
	wrong-subject:18:"subject" \
	other-key:18:"another public key than the token key" \
	bad-base64:18:"not valid base64" \
	bad-chain:18:"does not chain" \
	other-ca:18:"pair again" \
	validation-error:17:"HTTP 422: the connector answered with errors: fake-ucl-connector: validation failed" \
	huge:19:"" \
	hang:19:""; do
	name=${m%%:*}
	rest=${m#*:}
	code=${rest%%:*}
	text=${rest#*:}
	mode "$name"
	run_exit "$code" "$text" "renew against a connector in mode $name" renew --timeout 3
	check "mode $name: files and state unchanged" unchanged
	check "mode $name: the current key $k1 is still there" ks_cli pubkey "$k1"
done
mode normal
check "inventory: the failed renewals are recorded (client ucl, outcome failed)" inv_says client ucl outcome failed key "$k1"
run_exit 19 "" "renew with a CA file that does not match the server" renew --ca-file "$work/conn/foreign-ca.pem"
check "wrong CA file: unchanged" unchanged

# The certificate cannot be installed after the chain and the CA could be (a
# directory in the way of its .prev stops root too): all three stay as they were.
mkdir -p "$files/client.pem.prev/in-the-way"
run_exit 1 "cannot keep the previous file" "renew: the certificate's install fails last" renew
check "  certificate, chain, CA and state unchanged" unchanged
check "  no .prev left of the files put back" bash -c "! ls '$files'/chain.pem.prev '$files'/ca.pem.prev 2>/dev/null"
rm -rf "$files/client.pem.prev"

# Another run holds the pairing's lock (beside --state, which names the certificate).
flock "$state.lock" sleep 4 &
holder=$!
while flock -n "$state.lock" true; do sleep 0.1; done
run_exit 13 "another run holds the lock on $state" "renew while another run holds the lock: busy" renew --lock-wait 0
check "  busy: certificate, chain, CA and state unchanged" unchanged
wait "$holder"

# ---- renewal ----
# The next certificate lives 180 s (notBefore is 60 s back): two thirds left.
mode "ttl 120"
run_exit 0 "" "renew: a new key $k2, certificate installed" renew
mode normal
check "renewed: the certificate is for $k2" bash -c \
	"openssl x509 -in '$files/client.pem' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey $k2)"
check "renewed: the previous key $k1 is kept for a rollback" ks_cli pubkey "$k1"
check "renewed: the previous certificate is kept" test -s "$files/client.pem.prev"
check "renewed: the state names generation 2" grep -q '"generation": 2' "$state"
check "inventory: the renewal is recorded (outcome ok, key $k2)" inv_says outcome ok key "$k2" successes 1
run_exit 10 "" "renew --when-due: two thirds of the validity left is not due at the default 30%" renew --when-due
run_exit 0 "" "renew --when-due --renew-share 70: due, renewed to $k3" renew --when-due --renew-share 70
check "renewed: the certificate is for $k3" bash -c \
	"openssl x509 -in '$files/client.pem' -noout -pubkey | cmp -s - <('$KS_KEYSVC_CLI' --socket '$KS_SOCKET' pubkey $k3)"
run_exit 14 "" "after two renewals the key two generations back ($k1) is deleted" ks_cli pubkey "$k1"
check "$k2 is kept as the previous key" ks_cli pubkey "$k2"
run_exit 0 "" "s3, paired with the same default base, still renews after the main pairing's renewals" \
	renew_as "$work/s3"

# ---- revocation ----
run_exit 0 "" "revoke" "$ucl" revoke --state "$state" --socket "$KS_SOCKET" --quiet
run_exit 17 "Failed to authenticate" "a revoked certificate cannot renew" renew
check "revoked: the installed files stay (the operator decides)" test -s "$files/client.pem"

stop_srv
ks_stop || fail "keysvcd exit status"
echo "# ucl: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
