#!/usr/bin/env bash
# keysvc-oci rebootstrap against fake-oci --rps on 127.0.0.1: the form is
# checked exactly as the seed's curl sends it (and curl itself is checked
# against the same server first), register failing once or twice,
# check_ready failing once or always, a connection that never reaches
# Connected, a state command that never exits: each ends as the seed says,
# with its exit code and a complete support bundle. Waits are shortened
# with the options. And the --rps-fqdn values that are refused.
#
# Arguments: the fake-oci and keysvc-oci programs.
set -uo pipefail

fake=$1
oci=$2
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-oci-rb.XXXXXX")
cleanup() { ks_fake_stop; rm -rf "$work"; }
trap cleanup EXIT

export OPENSSL_MODULES=$KS_PROVIDER_DIR
infra=ocid1.rovinfra.oc1.test.infra1
# An exported session token: a real zip, with a marker that must never reach a bundle.
python3 - "$work/exportedToken.zip" <<'PY' || ks_die "zip"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('config', '[new_profile]\nregion=us-ashburn-1\n')
    z.writestr('token', 'SECRET-SESSION-TOKEN-MARKER')
PY
zip=$work/exportedToken.zip

# start MODE [STEP_MS]: a fresh fake RPS (its counters start at zero) in MODE,
# the connection state moving one step every STEP_MS (default 300).
start() {
	ks_fake_stop
	rm -f "$work/state"
	echo "$1" >"$work/control"
	ks_fake_start "$fake" --dir "$work/ca" --rps --infrastructure-id "$infra" --state-file "$work/state" \
		--state-step-ms "${2:-300}" --control "$work/control"
	rps=https://127.0.0.1:$KS_FAKE_PORT
}
rb() {
	rm -rf "$work/support"
	"$oci" rebootstrap --rps-url "$rps" --tls-ca-file "$work/ca/ca.pem" --infrastructure-id "$infra" \
		--token-zip "$zip" --region us-ashburn-1 --support-dir "$work/support" --register-retry-wait 1 \
		--ready-wait 0 --check-retry-wait 1 --poll-interval 1 --connect-limit 10 \
		--state-command "cat '$work/state' 2>/dev/null" "$@"
}
bundle() { cat "$work"/support/rebootstrap-*.txt; }
has() { bundle | grep -qF -- "$1"; }

# ---- the fake RPS against the seed's own curl command (-k replaced by the CA) ----
start normal
check "the seed's curl /register is accepted" bash -c "curl -sS -f --cacert '$work/ca/ca.pem' -X POST '$rps/register' \
	-H 'Accept: application/json' -H 'Content-Type: multipart/form-data' \
	-F 'file=@$zip;type=application/zip' -F 'infrastructure_id=$infra;type=text/plain' | grep -q registered"
check "a form without the part types is refused" bash -c "curl -sS --cacert '$work/ca/ca.pem' -X POST '$rps/register' \
	-H 'Accept: application/json' -F 'file=@$zip' -F 'infrastructure_id=$infra' | grep -q InvalidParameter"
check "another infrastructure_id is refused" bash -c "curl -sS --cacert '$work/ca/ca.pem' -X POST '$rps/register' \
	-H 'Accept: application/json' -F 'file=@$zip;type=application/zip' -F 'infrastructure_id=x;type=text/plain' \
	| grep -q 'unknown infrastructure_id'"

# ---- success paths ----
# States change slower than they are polled, so each one is seen.
start normal 1500
run_exit 0 "connection state: Connected" "rebootstrap: register, check_ready, Ready -> ... -> Connected" rb
cp "$work/out" "$work/last"
check "the states were followed in order" bash -c "grep -o 'connection state: [A-Za-z]*' '$work/last' | tr '\n' ' ' | \
	grep -q 'Ready.*Disconnected.*Connecting.*Connected'"
check "waits are plain log lines off a terminal" grep -q "waiting 0 s after /register, before /check_ready" "$work/last"
check "bundle: infrastructure ID, region, RPS, outcome" bash -c "bundle() { cat '$work'/support/rebootstrap-*.txt; }; \
	bundle | grep -q 'infrastructure ID: $infra' && bundle | grep -q 'region: us-ashburn-1' && \
	bundle | grep -q 'RPS: $rps' && bundle | grep -q 'outcome: Connected (exit 0)'"
check "bundle: every call with its timestamp and answer" bash -c "cat '$work'/support/rebootstrap-*.txt | \
	grep -cE '^\[20[0-9-]+T[0-9:]+Z\] POST /(register|check_ready): HTTP 200' | grep -qx 2"
check "bundle: the token itself is not in it" bash -c "! grep -q SECRET-SESSION-TOKEN-MARKER '$work'/support/*"
check "bundle is private (0600)" bash -c "[ \"\$(stat -c %a '$work'/support/rebootstrap-*.txt)\" = 600 ]"

start normal
run_exit 0 "no --state-command to follow it" "without --state-command: ends after check_ready" \
	"$oci" rebootstrap --rps-url "$rps" --tls-ca-file "$work/ca/ca.pem" --infrastructure-id "$infra" \
	--token-zip "$zip" --region us-ashburn-1 --support-dir "$work/support2" --ready-wait 0

# No token key is used: keysvc.so need not be installed.
mkdir -p "$work/no-provider"
start normal
run_exit 0 "no --state-command to follow it" "without the keysvc provider installed" \
	"$oci" rebootstrap --rps-url "$rps" --tls-ca-file "$work/ca/ca.pem" --infrastructure-id "$infra" \
	--token-zip "$zip" --region us-ashburn-1 --support-dir "$work/support3" --ready-wait 0 \
	--provider-dir "$work/no-provider"

start register-fail-once
run_exit 0 "Connected" "register fails once: waits, tries once more, goes on" rb
cp "$work/out" "$work/last"
check "register-fail-once: two /register calls, the first answered 500" bash -c "cat '$work'/support/rebootstrap-*.txt | \
	grep -q 'POST /register: HTTP 500' && cat '$work'/support/rebootstrap-*.txt | grep -q 'register (attempt 2)'"
check "register-fail-once: the wait before the retry" grep -q "before retrying /register" "$work/last"

start check-fail-once
run_exit 0 "Connected" "check_ready fails once: waits, tries again, goes on" rb

# ---- stops ----
start register-fail-always
run_exit 20 "support bundle written to" "register fails twice: stop (exit 20)" rb
cp "$work/out" "$work/last"
check "register twice: both error bodies in the bundle" bash -c "[ \$(cat '$work'/support/rebootstrap-*.txt | \
	grep -c 'certificate registration failed (fake)') -eq 2 ]"
check "register twice: check_ready never called" bash -c "! grep -q check_ready '$work'/support/rebootstrap-*.txt"
check "register twice: outcome says stop and contact support" bash -c "grep -q 'outcome: /register failed twice: stop and contact support (exit 20)' '$work'/support/rebootstrap-*.txt"
check "the message names the bundle" bash -c "grep -q \"support bundle written to $work/support/rebootstrap-\" '$work/last'"

start check-fail-always
run_exit 21 "support bundle written to" "check_ready fails twice: stop (exit 21)" rb
check "check_ready twice: both error bodies in the bundle" bash -c "[ \$(cat '$work'/support/rebootstrap-*.txt | \
	grep -c 'certificate is not ready (fake)') -eq 2 ]"
check "check_ready twice: outcome" bash -c "grep -q 'outcome: /check_ready failed twice' '$work'/support/rebootstrap-*.txt"

start never-connected
run_exit 22 "support bundle written to" "never Connected: stop after the limit (exit 22)" rb --connect-limit 3
check "never connected: the last state in the bundle" bash -c "grep -q 'not Connected within 3 s (last state: Connecting)' '$work'/support/rebootstrap-*.txt"

# The state command is bounded by --connect-limit: one that never exits is
# killed, with everything it started (its process group), when the limit
# runs out. This one ignores SIGTERM and leaves a grandchild that does too,
# so only the group SIGKILL after the grace ends them.
# gone PIDFILE: that process has ended (a zombie counts: it was killed, and
# after its parent's end only init can reap it).
gone() { local st; st=$(ps -o stat= -p "$(cat "$1")" 2>/dev/null); [ -z "$st" ] || [ "${st#Z}" != "$st" ]; }
start normal
hang="trap '' TERM; echo \$\$ >'$work/hang.pid'; (trap '' TERM; exec sleep 100) & echo \$! >'$work/hang.child'; wait"
t0=$(date +%s)
run_exit 22 "state command timed out after 3 s" "a state command that never exits: killed at --connect-limit (exit 22)" \
	rb --connect-limit 3 --state-command "$hang"
t1=$(date +%s)
check "...within the limit and the grace, not after the command's 100 s" test $((t1 - t0)) -le 9
check "...the bundle says so" bash -c "grep -q 'outcome: the state command timed out after 3 s and was killed' '$work'/support/rebootstrap-*.txt"
check "...the command is gone" gone "$work/hang.pid"
check "...and so is what it started" gone "$work/hang.child"
start normal
t0=$(date +%s)
run_exit 22 "state command timed out after 2 s" "the reviewer's 'sleep 100' with --connect-limit 2" rb --connect-limit 2 \
	--state-command "sleep 100"
t1=$(date +%s)
check "...ends in seconds" test $((t1 - t0)) -le 8
# A command that prints its state and exits, leaving a process behind: the
# state is taken and the leftover killed, not waited for.
start normal 1500
run_exit 0 "connection state: Connected" "a state command leaving a background process behind" rb \
	--state-command "cat '$work/state' 2>/dev/null; (exec sleep 100) & echo \$! >'$work/left.pid'"
check "...the leftover is killed" gone "$work/left.pid"

# TLS stays verified: the RPS's CA is not in the default store.
start normal
run_exit 20 "" "the RPS's certificate is not trusted by the default CA store: both /register fail" \
	"$oci" rebootstrap --rps-url "$rps" --infrastructure-id "$infra" --token-zip "$zip" --region us-ashburn-1 \
	--support-dir "$work/support" --register-retry-wait 0 --ready-wait 0
check "the TLS failure is in the bundle" bash -c "grep -q 'POST /register failed: ' '$work'/support/rebootstrap-*.txt"
start normal
run_exit 0 "insecure" "--insecure works and warns" "$oci" rebootstrap --rps-url "$rps" --insecure \
	--infrastructure-id "$infra" --token-zip "$zip" --region us-ashburn-1 --support-dir "$work/support3" --ready-wait 0

# ---- the zip ----
printf 'not a zip at all, just text' >"$work/bad.zip"
run_exit 2 "not a zip archive" "a zip that is not one" rb --token-zip "$work/bad.zip"
head -c 60 "$zip" >"$work/short.zip"
run_exit 2 "truncated zip" "a truncated zip" rb --token-zip "$work/short.zip"
head -c 1100000 /dev/zero >"$work/big.zip"
run_exit 2 "at most" "an oversized zip" rb --token-zip "$work/big.zip"
run_exit 2 "No such file" "a missing zip" rb --token-zip "$work/none.zip"
cp "$zip" "$work/old.zip"
touch -d '2 hours ago' "$work/old.zip"
start normal
run_exit 0 "minutes old; the exported session expires after 60 minutes" "an old zip: a warning" \
	rb --token-zip "$work/old.zip"
run_exit 2 "--rps-fqdn" "an RPS FQDN with a path" "$oci" rebootstrap --rps-fqdn "x/y" --infrastructure-id "$infra" \
	--token-zip "$zip" --region r
# --rps-fqdn is the RPS host name, rps.<FQDN>, used as given (the URL itself
# is checked by the unit test oci). Refusals come before anything else: the
# support directory here cannot be made, so a value let through ends there.
for bad in "''::empty" "rps::a single label" "rps.::an empty label" "rps..example.org::an empty label" \
	".rps.example.org::an empty label" "rps.-x.org::starts with '-'" "rps.x-.org::ends with '-'" \
	"rps.exa_mple.org::only letters" "rps.$(printf 'a%.0s' {1..64}).org::longer than 63" \
	"rps.$(printf 'abcdefghi.%.0s' {1..25})org::longer than 253" "example.org::did you mean rps.example.org?"; do
	value=${bad%%::*}
	[ "$value" = "''" ] && value=
	run_exit 2 "${bad#*::}" "--rps-fqdn '$value' refused: ${bad#*::}" "$oci" rebootstrap \
		--rps-fqdn "$value" --infrastructure-id "$infra" --token-zip "$zip" --region r --support-dir /dev/null/x
done
run_exit 2 "needs" "missing arguments" "$oci" rebootstrap --rps-fqdn rps.example.org

ks_fake_stop
echo "# oci-rebootstrap: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
