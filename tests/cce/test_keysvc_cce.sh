#!/usr/bin/env bash
# keysvc-cce end to end against fake-cce on 127.0.0.1: every component,
# the expiration bounds, custom certificate material and its refusals, the
# token's sources and refusals, each error answer with its message and exit
# code, --wait, TLS pinning. Refusals that must happen locally are checked
# to have sent nothing. The token must never show in any output.
#
# Arguments: the fake-cce and keysvc-cce programs.
set -uo pipefail

fake=$1
cce=$2

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-cce.XXXXXX")
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"

cleanup() {
	ks_fake_stop
	rm -rf "$work"
}
trap cleanup EXIT

# Everything keysvc-cce prints, for the final token search.
: >"$work/all.out"
# run_cce CODE TEXT DESCRIPTION ARGS...: keysvc-cce exits CODE and prints TEXT (stdout or stderr).
# Unlike tap.sh's run_cce it keeps stdout apart ($work/stdout, for the --json
# checks) and everything printed in all.out.
run_cce() {
	local want=$1 text=$2 what=$3 st=0
	shift 3
	"$cce" "$@" >"$work/stdout" 2>"$work/stderr" || st=$?
	cat "$work/stdout" "$work/stderr" >"$work/out"
	cat "$work/out" >>"$work/all.out"
	if [ "$st" -eq "$want" ] && { [ -z "$text" ] || grep -qF -- "$text" "$work/out"; }; then ok "$what (exit $st)"; else
		fail "$what: exit $st, expected $want and '$text'"
		sed 's/^/#   /' "$work/out"
	fi
}
posts() { grep -c '^fake-cce: POST ' "$work/fake.log"; }
# no_request DESCRIPTION: nothing reached the server since the last mark.
mark() { mark_posts=$(posts); }
no_request() {
	if [ "$(posts)" -eq "$mark_posts" ]; then ok "$1: nothing sent"; else fail "$1: a request was sent"; fi
}
mode() { echo "$1" >"$work/control"; }
body() { jq -r "$1" "$work/fake/last-body.json"; }
expect_eq() { # expect_eq DESCRIPTION GOT WANT
	if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: got '$2', want '$3'"; fi
}

# ---- the fake CCE and its token ----
# An IAM token is a few KB of base64-ish text; this one is easy to grep for.
token=$(head -c 3000 /dev/urandom | base64 -w0 | tr -d '/+=' | head -c 3000)
token="MIIZ-test-${token}"
printf '%s\n' "$token" >"$work/server-token"
printf '%s\n' "$token" >"$work/token"
chmod 0600 "$work/token"
: >"$work/control"
ks_fake_start "$fake" --dir "$work/fake" --token-file "$work/server-token" --control "$work/control"
port=$KS_FAKE_PORT

export OPENSSL_MODULES=$KS_PROVIDER_DIR
unset KEYSVC_CCE_TOKEN
ep=https://127.0.0.1:$port
base=(--endpoint "$ep" --project-id 0a1b2c3d4e5f60718293a4b5c6d7e8f9 --cluster-id 2ec9b78d-9368-46f3-8f29-d1a95622a568
	--ca-file "$work/fake/ca.pem" --token-file "$work/token" --timeout 10)

# ---- components and expiration ----
run_cce 0 "CCE accepted the rotation of all" "component all" rotate "${base[@]}" --component all
expect_eq "all: body" "$(jq -c . "$work/fake/last-body.json")" '{"component":"all"}'
mkdir -p "$work/no-provider"    # no token key is used: keysvc.so need not be installed
run_cce 0 "CCE accepted the rotation of all" "without the keysvc provider installed" rotate "${base[@]}" \
	--component all --provider-dir "$work/no-provider"
run_cce 0 "job " "component service-account-controller" rotate "${base[@]}" --component service-account-controller
expect_eq "service-account-controller: no certificateExpirationTime unless given" \
	"$(body '.certificateExpirationTime // "absent"')" absent
run_cce 0 "job " "expiration 0 accepted" rotate "${base[@]}" --component service-account-controller --expiration-hours 0
expect_eq "expiration 0 sent as an integer" "$(body '.certificateExpirationTime | type') $(body .certificateExpirationTime)" "number 0"
run_cce 0 "job " "expiration 8784 accepted" rotate "${base[@]}" --component all --expiration-hours 8784
expect_eq "expiration 8784 sent" "$(body .certificateExpirationTime)" 8784
mark
run_cce 2 "--expiration-hours: 0..8784" "expiration -1 refused" rotate "${base[@]}" --component all --expiration-hours -1
run_cce 2 "--expiration-hours: 0..8784" "expiration 8785 refused" rotate "${base[@]}" --component all --expiration-hours 8785
run_cce 2 "--expiration-hours" "expiration 1.5 refused" rotate "${base[@]}" --component all --expiration-hours 1.5
run_cce 2 "--component: all, service-account-controller or custom" "unknown component" rotate "${base[@]}" --component ALL
run_cce 2 "--project-id" "project id with a slash" rotate "${base[@]}" --project-id ../x --component all
run_cce 2 "--cluster-id" "cluster id of 65 characters" rotate "${base[@]}" --cluster-id "$(printf 'a%.0s' $(seq 65))" --component all
no_request "local refusals of arguments"

# ---- custom ----
m=$work/m
mkdir -p "$m"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$m/ca.key" -out "$m/ca.pem" \
	-subj /CN=proxy-ca -days 30 2>/dev/null || ks_die "openssl: CA"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$m/client.key" -out "$m/client.csr" \
	-subj /CN=front-proxy-client 2>/dev/null || ks_die "openssl: CSR"
openssl x509 -req -in "$m/client.csr" -CA "$m/ca.pem" -CAkey "$m/ca.key" -CAcreateserial -days 30 \
	-out "$m/client.pem" 2>/dev/null || ks_die "openssl: cert"
openssl x509 -in "$m/client.pem" -outform DER -out "$m/client.der"
openssl pkey -in "$m/client.key" -outform DER -out "$m/client.key.der"
openssl pkey -in "$m/client.key" -aes128 -passout pass:secret -out "$m/client.enc.key"
openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out "$m/other.key" 2>/dev/null
chmod 0600 "$m"/*.key "$m"/*.key.der
head -c $((1024 * 1024 + 1)) /dev/zero >"$m/big.pem"
echo "not a certificate" >"$m/junk.pem"
custom=(--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" --custom-key "$m/client.key")

run_cce 0 "notice: the private key in $m/client.key is sent to CCE" "custom with PEM files" rotate "${base[@]}" "${custom[@]}"
for part in ca:ca.pem cert:client.pem privateKey:client.key; do
	body ".certContent.${part%%:*}" | base64 -d >"$work/decoded"
	if cmp -s "$work/decoded" "$m/${part#*:}"; then ok "custom: certContent.${part%%:*} is the file's base64"; else
		fail "custom: certContent.${part%%:*} differs from ${part#*:}"; fi
done
run_cce 0 "job " "custom with DER certificate and key, expiration 48" rotate "${base[@]}" --component custom \
	--custom-ca "$m/ca.pem" --custom-cert "$m/client.der" --custom-key "$m/client.key.der" --expiration-hours 48
expect_eq "custom DER: expiration sent" "$(body .certificateExpirationTime)" 48
mark
run_cce 2 "--custom-key $m/missing.key: No such file" "custom: missing key file" rotate "${base[@]}" \
	--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" --custom-key "$m/missing.key"
run_cce 2 "over CCE's limit" "custom: CA file over 1 MiB" rotate "${base[@]}" \
	--component custom --custom-ca "$m/big.pem" --custom-cert "$m/client.pem" --custom-key "$m/client.key"
run_cce 2 "a key held by keysvcd is never exported" "custom: keysvc: key refused" rotate "${base[@]}" \
	--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" --custom-key keysvc:proxy
run_cce 2 "--custom-cert $m/junk.pem: not an X.509 certificate" "custom: not a certificate" rotate "${base[@]}" \
	--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/junk.pem" --custom-key "$m/client.key"
run_cce 2 "--custom-ca $m/client.key: not an X.509 certificate" "custom: a key as the CA" rotate "${base[@]}" \
	--component custom --custom-ca "$m/client.key" --custom-cert "$m/client.pem" --custom-key "$m/client.key"
install -m 0600 "$m/client.pem" "$m/client-pem-0600.pem"
run_cce 2 "--custom-key $m/client-pem-0600.pem: not a private key" "custom: a certificate as the key" rotate \
	"${base[@]}" --component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" \
	--custom-key "$m/client-pem-0600.pem"
run_cce 2 "encrypted; CCE takes only an unencrypted key" "custom: encrypted key" rotate "${base[@]}" \
	--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" --custom-key "$m/client.enc.key"
run_cce 2 "not for this private key" "custom: certificate and key do not match" rotate "${base[@]}" \
	--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" --custom-key "$m/other.key"
cp "$m/client.key" "$m/client-0644.key"
chmod 0644 "$m/client-0644.key"
run_cce 2 "--custom-key $m/client-0644.key: mode 0644 lets other users read it" "custom: world-readable key refused" \
	rotate "${base[@]}" --component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" \
	--custom-key "$m/client-0644.key"
ln -s "$m/client.key" "$m/client-link.key"
run_cce 2 "--custom-key $m/client-link.key" "custom: key through a symlink refused" rotate "${base[@]}" \
	--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem" --custom-key "$m/client-link.key"
run_cce 2 "needs --custom-ca, --custom-cert and --custom-key" "custom: a part missing" rotate "${base[@]}" \
	--component custom --custom-ca "$m/ca.pem" --custom-cert "$m/client.pem"
run_cce 2 "go only with --component custom" "custom files with component all" rotate "${base[@]}" \
	--component all --custom-ca "$m/ca.pem"
no_request "local refusals of custom material"
if grep -qF -- "$(sed -n 2p "$m/client.key")" "$work/all.out"; then fail "the custom key appears in the output"; else
	ok "the custom key never appears in the output"; fi

# ---- the token ----
mark
cp "$work/token" "$work/token-0644"
chmod 0644 "$work/token-0644"
run_cce 2 "lets other users read it" "token file readable by others" rotate "${base[@]}" --component all --token-file "$work/token-0644"
chmod 0640 "$work/token-0644"
run_cce 2 "lets other users read it" "token file readable by the group" rotate "${base[@]}" --component all --token-file "$work/token-0644"
run_cce 2 "not a regular file" "token file a directory" rotate "${base[@]}" --component all --token-file "$work"
nobase=(--endpoint "$ep" --project-id p1 --cluster-id c1 --ca-file "$work/fake/ca.pem" --component all)
run_cce 2 "no IAM token: give --token-file FILE (mode 0600) or set KEYSVC_CCE_TOKEN" "no token at all" rotate "${nobase[@]}"
run_cce 2 "a token on the command line can be read by every user" "--token refused" rotate "${nobase[@]}" --token "$token"
run_cce 2 "a token on the command line can be read by every user" "--token=... refused" rotate "${nobase[@]}" "--token=$token"
no_request "token refusals"
KEYSVC_CCE_TOKEN=$token run_cce 0 "job " "token from KEYSVC_CCE_TOKEN" rotate "${nobase[@]}"
# Huawei's limit is 16384 bytes: one that long (with its newline) is sent whole, one byte more is refused.
big=MIIZ-big-$(head -c 20000 /dev/urandom | base64 -w0 | tr -d '/+=' | head -c 16375)
printf '%s\n' "$big" >"$work/big-token"
chmod 0600 "$work/big-token"
expect_eq "the long token is 16384 bytes" "${#big}" 16384
cp "$work/big-token" "$work/server-token"
run_cce 0 "job " "a token of 16384 bytes from a file" rotate "${nobase[@]}" --token-file "$work/big-token"
KEYSVC_CCE_TOKEN=$big run_cce 0 "job " "a token of 16384 bytes from KEYSVC_CCE_TOKEN" rotate "${nobase[@]}"
mark
printf '%sx\n' "$big" >"$work/big-token"
run_cce 2 "over 1638" "a token file of 16385 bytes refused" rotate "${nobase[@]}" --token-file "$work/big-token"
KEYSVC_CCE_TOKEN=${big}x run_cce 2 "over 16384 bytes" "a token of 16385 bytes in KEYSVC_CCE_TOKEN refused" \
	rotate "${nobase[@]}"
no_request "over-long tokens"
printf '%s\n' "$token" >"$work/server-token"
KEYSVC_CCE_TOKEN=not-the-token run_cce 17 "CCE refused the rotation: the token is invalid or expired: APIGW.0301" \
	"a wrong token (the server's 401)" rotate "${nobase[@]}"

# ---- CCE's refusals ----
run_mode() { # run_mode MODE CODE TEXT
	mode "$1"
	run_cce "$2" "$3" "mode $1" rotate "${base[@]}" --component all
}
run_mode error-shape-1 17 "CCE refused the rotation: CCE.01400013: Cluster status is not available for rotating credentials (HTTP 400)"
run_mode error-shape-2 17 "CCE refused the rotation: CCE.01400001: Invalid request: the cluster version does not support this component (HTTP 400)"
run_mode 401 17 "CCE refused the rotation: the token is invalid or expired: APIGW.0307: The token must be updated. (HTTP 401)"
run_mode 403 17 "CCE refused the rotation: the token's user may not rotate this cluster's credentials: CCE.01403001"
run_mode 404 17 "CCE refused the rotation: no such project or cluster: CCE.01404001: Resource not found"
run_mode 500 17 "CCE refused the rotation: CCE.01500001: Internal server error (HTTP 500)"
run_mode garbage 18 "its answer is malformed: the answer is not a JSON object"
mode hang
start=$SECONDS
run_cce 19 "POST $ep/api/v3/projects/" "mode hang, --timeout 2" rotate "${base[@]}" --component all --timeout 2
[ $((SECONDS - start)) -le 8 ] && ok "hang: gave up in time" || fail "hang: took $((SECONDS - start)) s"
mode normal

# ---- --wait, --json, --quiet ----
run_cce 0 "job " "--wait: Running, then Success" rotate "${base[@]}" --component all --wait --poll-interval 1 --max-wait 30
grep -qE 'job [0-9a-f-]+: Success after' "$work/out" && ok "--wait: reports Success" || fail "--wait: no Success line"
grep -qE 'Running; asking again in 1 s' "$work/out" && ok "--wait: reports Running" || fail "--wait: no Running line"
mode job-flat
run_cce 0 "Success" "--wait: the flat status shape" rotate "${base[@]}" --component all --wait --poll-interval 1
mode job-fails
run_cce 17 "failed: rotating the certificates failed: kube-apiserver did not come back" "--wait: job Failed" \
	rotate "${base[@]}" --component all --wait --poll-interval 1
mode job-pending-forever
start=$SECONDS
run_cce 22 "is still Running after" "--wait: job never ends, --max-wait 2" rotate "${base[@]}" --component all \
	--wait --poll-interval 1 --max-wait 2
[ $((SECONDS - start)) -le 6 ] && ok "--max-wait: gave up in time" || fail "--max-wait: took $((SECONDS - start)) s"
# A 500 while polling is asked again; the job goes on in CCE.
mode job-500-once
run_cce 0 "Success after" "--wait: a 500 while polling is retried" rotate "${base[@]}" --component all --wait \
	--poll-interval 1 --max-wait 30
grep -qF "CCE.01500001: Internal server error (HTTP 500); asking again in 1 s" "$work/out" &&
	ok "--wait: the 500 is reported as retried" || fail "--wait: no retry warning"
# A poll that hangs is cut at --max-wait, not at --timeout.
mode job-hang
start=$SECONDS
run_cce 19 "giving up at --max-wait 3 s" "--wait: a hanging poll ends at --max-wait" rotate "${base[@]}" --component all \
	--wait --poll-interval 1 --max-wait 3 --timeout 60
[ $((SECONDS - start)) -le 6 ] && ok "--max-wait bounds a hanging poll" || fail "hanging poll: took $((SECONDS - start)) s"
mode normal
run_cce 0 "" "--json" rotate "${base[@]}" --component all --json
jq -e '.jobid | test("^[0-9a-f-]{36}$")' "$work/stdout" >/dev/null && [ "$(wc -l <"$work/stdout")" -eq 1 ] &&
	ok "--json: stdout is {\"jobid\": ...} alone" || { fail "--json: stdout is not the JSON document"; cat "$work/stdout"; }
run_cce 0 "" "--json --wait" rotate "${base[@]}" --component all --json --wait --poll-interval 1
expect_eq "--json --wait: phase" "$(jq -r .phase "$work/stdout")" Success
mode job-fails
run_cce 17 "" "--json --wait, job Failed" rotate "${base[@]}" --component all --json --wait --poll-interval 1
expect_eq "--json --wait failed: phase and reason" "$(jq -r '.phase + ": " + .reason' "$work/stdout")" \
	"Failed: rotating the certificates failed: kube-apiserver did not come back"
mode normal
run_cce 0 "" "--quiet" rotate "${base[@]}" --component all --quiet
grep -qxE '[0-9a-f-]{36}' "$work/stdout" && [ "$(wc -l <"$work/stdout")" -eq 1 ] && [ ! -s "$work/stderr" ] &&
	ok "--quiet: only the job id" || fail "--quiet: printed more than the job id"

# ---- TLS and the endpoint ----
mark
run_cce 19 "" "pinned CA mismatch" rotate "${base[@]}" --component all --ca-file "$work/fake/other-ca.pem"
run_cce 2 "plain http is refused" "http:// endpoint" rotate "${base[@]}" --component all --endpoint "http://127.0.0.1:$port"
run_cce 2 "with no path" "endpoint with a path" rotate "${base[@]}" --component all --endpoint "$ep/api"
run_cce 2 "--ca-file PEM_BUNDLE is required" "no --ca-file" rotate --endpoint "$ep" --project-id p --cluster-id c \
	--component all --token-file "$work/token"
no_request "TLS and endpoint refusals"
run_cce 0 "--insecure: the IAM token goes to a server that is not verified" "--insecure" rotate --endpoint "$ep" \
	--project-id p --cluster-id c --component all --token-file "$work/token" --insecure

# ---- the token never shows ----
if grep -qF -- "${token:0:40}" "$work/all.out"; then fail "the token appears in keysvc-cce's output"; else
	ok "the token never appears in keysvc-cce's output"; fi
if grep -qF -- "${token:0:40}" "$work/fake.log"; then fail "the token appears in the server log"; else
	ok "the token never appears in the server log"; fi
if grep -q 'bad request' "$work/fake.log"; then fail "fake-cce refused a request keysvc-cce sent as valid"
	grep 'bad request' "$work/fake.log" | sed 's/^/#   /'; else ok "fake-cce found every request well formed"; fi

echo "# $passed passed, $failed failed"
[ "$failed" -eq 0 ]
