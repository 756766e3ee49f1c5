#!/usr/bin/env bash
# keysvc status, keysvc verify and the install hooks end to end.
#
#  - status: certificates minted by a local CA with chosen dates, recorded in
#    a temporary inventory; every class, --json, exit codes, Prometheus text
#    (label escaping, --textfile), colours, a CRL revoking one, a removed
#    file, a key removed from keysvcd and keysvcd unreachable.
#  - verify: TLS servers on 127.0.0.1 serving the installed certificate, the
#    previous one, an unrelated one, and one that never answers the handshake.
#  - hooks: keysvc-openvox against the fake CA with a reload command that
#    succeeds, fails, hangs past its timeout, and endpoints that keep
#    serving the old certificate: push-failed recorded, exit 23, .prev kept.
#
# Arguments: the fake-openvox-ca and keysvc-openvox programs, tls_server.py.
set -uo pipefail

fake_ca=$1
ovx=$2
tls_server=$3
. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
# run_exit's output stays in $work/last for the checks that follow (check itself writes $work/out).
eval "tap_$(declare -f run_exit)"
run_exit() { tap_run_exit "$@"; cp "$work/out" "$work/last"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-status.XXXXXX")
chmod 0711 "$work"
servers=()

cleanup() {
	local p
	for p in "${servers[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	ks_fake_stop
	ks_stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

cli() { "$KS_KEYSVC_CLI" "$@"; }
# No keysvcd for the first part: the socket is a path nobody listens on.
export KEYSVC_SOCKET=$work/nobody.sock
unset NO_COLOR KEYSVC_INVENTORY

# ---- a CA that mints certificates with chosen dates ----
ca=$work/ca
mkdir -p "$ca/new"
: >"$ca/index.txt"
echo 1000 >"$ca/serial"
cat >"$ca/ca.cnf" <<EOF
[ca]
default_ca = own
[own]
dir = $ca
database = \$dir/index.txt
new_certs_dir = \$dir/new
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
serial = \$dir/serial
default_md = sha256
policy = any
unique_subject = no
default_crl_days = 7
[any]
commonName = supplied
EOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/ca.key" -out "$ca/ca.pem" \
	-subj "/CN=keysvc status test CA" -days 3650 2>/dev/null || ks_die "CA"
# A look-alike CA: same name, another key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/fake.key" -out "$ca/fake.pem" \
	-subj "/CN=keysvc status test CA" -days 3650 2>/dev/null || ks_die "fake CA"

when() { date -u -d "$1" +%Y%m%d%H%M%SZ; }
# mint FILE CN START END: a certificate for a new key (FILE.key) valid from START to END ("date -d" words)
mint() {
	local f=$1 cn=$2
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$f.key" -out "$f.csr" \
		-subj "/CN=$cn" 2>/dev/null &&
	openssl ca -batch -config "$ca/ca.cnf" -in "$f.csr" -out "$f" -notext \
		-startdate "$(when "$3")" -enddate "$(when "$4")" 2>/dev/null || ks_die "mint $cn"
	rm -f "$f.csr"
}

inv=$work/inv
mkdir -p "$inv" "$work/c"
# record CERT KEY CLIENT OUTCOME [EXTRA-JSON]: an inventory record written by hand
record() {
	local name
	name=$(printf %s "$1" | sha256sum | cut -c1-64)
	printf '{"version": 1, "cert": "%s", "key": "%s", "client": "%s", "outcome": "%s", "successes": 2, "failures": 1%s}\n' \
		"$(printf %s "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')" "$2" "$3" "$4" "${5:-}" >"$inv/$name.json"
}

c=$work/c
mint "$c/valid.pem" valid "-1 day" "+200 days"
mint "$c/notice.pem" notice "-1 day" "+60 days"
mint "$c/warning.pem" warning "-1 day" "+20 days"
mint "$c/critical.pem" critical "-1 day" "+5 days"
mint "$c/expired.pem" expired "-30 days" "-1 day"
mint "$c/revoked.pem" revoked "-1 day" "+200 days"
mint "$c/pushfail.pem" pushfail "-1 day" "+200 days"
mint "$c/gone.pem" gone "-1 day" "+200 days"
weird=$c/'we"ird\name.pem'
mint "$weird" weird "-1 day" "+200 days"
openssl ca -config "$ca/ca.cnf" -revoke "$c/revoked.pem" 2>/dev/null || ks_die "revoke"
openssl ca -config "$ca/ca.cnf" -gencrl -out "$ca/crl.pem" 2>/dev/null || ks_die "gencrl"
rm -f "$c/gone.pem"

record "$c/valid.pem" k-valid openvox ok
record "$c/notice.pem" k-notice ucl ok
record "$c/warning.pem" k-warning oci failed ', "reason": "HTTP 500 from the CA", "last_renewal": 1764979200'
record "$c/critical.pem" k-critical openvox ok
record "$c/expired.pem" k-expired openvox ok
record "$c/revoked.pem" k-revoked openvox ok ", \"ca_file\": \"$ca/ca.pem\", \"crl\": \"$ca/crl.pem\""
record "$c/pushfail.pem" k-pushfail openvox push-failed ', "reason": "reload hook failed"'
record "$c/gone.pem" k-gone openvox ok
record "$weird" k-weird other ok
# A certificate only in the configuration, with the valid one's CRL settings.
cat >"$work/certs.json" <<EOF
{"thresholds": {"critical_days": 10, "warning_days": 30, "notice_days": 90},
 "certificates": [{"cert": "$c/extra.pem", "client": "other"},
                  {"cert": "$c/valid.pem", "ca_file": "$ca/ca.pem", "crl": "$ca/crl.pem"}]}
EOF
mint "$c/extra.pem" extra "-1 day" "+300 days"

st() { cli status --inventory "$inv" --config "$work/certs.json" "$@"; }
# keysvcd is down here: the view lacks its key checks, which is exit 1 (it wins over 3).
run_exit 1 "keysvcd cannot be reached" "status: something needs attention, keysvcd down" st
cp "$work/out" "$work/status.txt"
line_class() { grep -F -- "$2" "$work/status.txt" | grep -q "^$1 "; }
for pair in valid:valid.pem notice:notice.pem warning:warning.pem critical:critical.pem expired:expired.pem \
	revoked:revoked.pem push-failed:pushfail.pem removed:gone.pem valid:extra.pem; do
	check "status text: ${pair#*:} is ${pair%%:*}" line_class "${pair%%:*}" "$c/${pair#*:}"
done
check "status text: subject and issuer shown" grep -q "subject CN=notice; issuer CN=keysvc status test CA" "$work/status.txt"
check "status text: the failure reason shown" grep -q "last renewal failed: HTTP 500 from the CA" "$work/status.txt"
check "status text: keysvcd unreachable is said" grep -q "keysvcd cannot be reached" "$work/status.txt"
check "status text: no colour when not a terminal" bash -c "! grep -q $'\e' '$work/status.txt'"
check "status text: summary" grep -q "^10 certificates: 1 removed 1 revoked 1 push-failed 1 expired 1 critical 1 warning 1 notice 3 valid" "$work/status.txt"

run_exit 1 "" "status --color always" st --color always
check "colour: expired in red" grep -q $'\e\[31mexpired' "$work/last"
check "colour: critical in orange" grep -q $'\e\[38;5;208mcritical' "$work/last"
check "colour: revoked white on black" grep -q $'\e\[97;40mrevoked' "$work/last"
check "colour: removed in purple" grep -q $'\e\[35mremoved' "$work/last"
check "colour: valid in green" grep -q $'\e\[32mvalid' "$work/last"
run_exit 1 "" "status --color never" st --color never
check "--color never: no escape" bash -c "! grep -q $'\e' '$work/last'"
# NO_COLOR on a terminal: script(1) gives us one.
if command -v script >/dev/null; then
	NO_COLOR=1 script -qec "'$KS_KEYSVC_CLI' status --inventory '$inv' --config '$work/certs.json'" /dev/null \
		>"$work/tty-nocolor" 2>&1
	script -qec "'$KS_KEYSVC_CLI' status --inventory '$inv' --config '$work/certs.json'" /dev/null \
		>"$work/tty-color" 2>&1
	check "terminal: coloured" grep -q $'\e\[31mexpired' "$work/tty-color"
	check "terminal with NO_COLOR: not coloured" bash -c "! grep -q $'\e\[' '$work/tty-nocolor'"
fi

# JSON: one object, class names and colours.
st --json >"$work/status.json" 2>/dev/null
check "status --json: classes and colours" python3 - "$work/status.json" "$c" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = sys.argv[2]
got = {e["cert"][len(c) + 1:]: (e["class"], e["colour"]) for e in d["certificates"]}
want = {"valid.pem": ("valid", "green"), "notice.pem": ("notice", "blue"), "warning.pem": ("warning", "yellow"),
        "critical.pem": ("critical", "orange"), "expired.pem": ("expired", "red"), "revoked.pem": ("revoked", "black"),
        "pushfail.pem": ("push-failed", "gray"), "gone.pem": ("removed", "purple"), "extra.pem": ("valid", "green"),
        'we"ird\\name.pem': ("valid", "green")}
assert got == want, got
assert d["keys_checked"] is False and "cannot be reached" in d["keys_note"]
assert d["total"] == 10 and d["attention"] == 6 and d["errors"] == 1
by = {e["cert"][len(c) + 1:]: e for e in d["certificates"]}
assert by["revoked.pem"]["revoked"] is True and by["valid.pem"]["revoked"] is False
assert by["notice.pem"]["revoked"] is None
assert by["warning.pem"]["reason"] == "HTTP 500 from the CA" and by["warning.pem"]["outcome"] == "failed"
assert by["valid.pem"]["client"] == "openvox" and by["extra.pem"]["client"] == "other"
assert by["gone.pem"]["not_after"] is None and by["valid.pem"]["seconds_left"] > 199 * 86400
assert by["expired.pem"]["seconds_left"] < 0
EOF
cli --json status --inventory "$inv" --config "$work/certs.json" >"$work/status2.json" 2>/dev/null
check "keysvc --json status: the same JSON" python3 -c "
import json; a = json.load(open('$work/status.json')); b = json.load(open('$work/status2.json'))
assert [e['class'] for e in a['certificates']] == [e['class'] for e in b['certificates']]"

# Prometheus.
st --format prometheus >"$work/prom.txt" 2>/dev/null
check "prometheus: HELP and TYPE of each metric" bash -c "
	for m in keysvc_certificate_expiry_seconds:gauge keysvc_certificate_status:gauge \
		keysvc_renewal_success_total:counter keysvc_renewal_failure_total:counter; do
		grep -q \"^# HELP \${m%%:*} \" '$work/prom.txt' && grep -q \"^# TYPE \${m%%:*} \${m#*:}\$\" '$work/prom.txt' || exit 1
	done"
check "prometheus: class of the expired one" grep -qF "keysvc_certificate_status{cert=\"$c/expired.pem\",key=\"k-expired\",client=\"openvox\",class=\"expired\"} 1" "$work/prom.txt"
check "prometheus: expiry seconds negative once expired" grep -qE "^keysvc_certificate_expiry_seconds\{cert=\"$c/expired.pem\",[^}]*\} -[0-9]+$" "$work/prom.txt"
check "prometheus: no expiry for a removed file" bash -c "! grep -q 'expiry_seconds{cert=\"$c/gone.pem\"' '$work/prom.txt'"
check "prometheus: counters from the inventory" grep -qF "keysvc_renewal_failure_total{cert=\"$c/warning.pem\",key=\"k-warning\",client=\"oci\"} 1" "$work/prom.txt"
check "prometheus: label values escaped" grep -qF "cert=\"$c/we\\\"ird\\\\name.pem\",key=\"k-weird\"" "$work/prom.txt"
check "prometheus: every sample line parses" python3 - "$work/prom.txt" <<'EOF'
import re, sys
lab = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
pat = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{' + lab + r'(?:,' + lab + r')*\})? -?[0-9]+$')
n = 0
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("#"):
        continue
    assert pat.match(line), line
    if line.startswith(("keysvc_certificate_", "keysvc_renewal_success", "keysvc_renewal_failure")):
        n += 1
assert n == 9 + 10 + 10 + 10, n
EOF
# keysvcd and the token (here keysvcd is not running), the last renewal of each certificate.
check "prometheus: keysvcd unreachable is keysvc_up 0, and no health" bash -c "
	grep -qx 'keysvc_up 0' '$work/prom.txt' && ! grep -q '^keysvc_health' '$work/prom.txt'"
check "prometheus: the last renewal's outcome, one-hot" bash -c "
	grep -qxF 'keysvc_renewal_last_result{cert=\"$c/warning.pem\",key=\"k-warning\",client=\"oci\",outcome=\"failed\"} 1' '$work/prom.txt' &&
	grep -qxF 'keysvc_renewal_last_result{cert=\"$c/warning.pem\",key=\"k-warning\",client=\"oci\",outcome=\"ok\"} 0' '$work/prom.txt' &&
	grep -qxF 'keysvc_renewal_last_result{cert=\"$c/pushfail.pem\",key=\"k-pushfail\",client=\"openvox\",outcome=\"push-failed\"} 1' '$work/prom.txt'"
check "prometheus: when the last renewal was tried" \
	grep -qxF "keysvc_renewal_last_timestamp_seconds{cert=\"$c/warning.pem\",key=\"k-warning\",client=\"oci\"} 1764979200" "$work/prom.txt"
st --format prometheus --textfile "$work/keysvc.prom" >"$work/prom-same.txt" 2>/dev/null
check "textfile: what --format prometheus prints" cmp -s "$work/keysvc.prom" "$work/prom-same.txt"
rm -f "$work/keysvc.prom"
run_exit 1 "" "status --textfile with --format json" st --textfile "$work/keysvc.prom" --format json
check "textfile written beside JSON" grep -q "^keysvc_certificate_status{" "$work/keysvc.prom"
check "textfile: mode 0644" bash -c "[ \$(stat -c %a '$work/keysvc.prom') = 644 ]"
check "textfile: no temporary file left" bash -c "[ \$(ls '$work' | grep -c '^keysvc.prom') = 1 ]"
run_exit 1 "--textfile" "textfile in a missing directory: error" st --textfile "$work/none/keysvc.prom"

# Exit codes. Records without keys need no keysvcd.
mkdir -p "$work/inv-ok"
for f in valid notice; do
	n=$(printf %s "$c/$f.pem" | sha256sum | cut -c1-64).json
	sed 's/"key": "[^"]*", //' "$inv/$n" >"$work/inv-ok/$n"
done
echo '{}' >"$work/empty.json"
run_exit 0 "" "status: only valid and notice: nothing needs attention" \
	cli status --inventory "$work/inv-ok" --config "$work/empty.json"
# With a key to check and keysvcd down, the same view is incomplete.
mkdir -p "$work/inv-key"
cp "$inv/$(printf %s "$c/valid.pem" | sha256sum | cut -c1-64).json" "$work/inv-key/"
run_exit 1 "keysvcd cannot be reached" "status: a key to check and keysvcd down: exit 1" \
	cli status --inventory "$work/inv-key" --config "$work/empty.json"
cli status --json --inventory "$work/inv-key" --config "$work/empty.json" >"$work/down.json" 2>/dev/null
check "status --json, keysvcd down: counted in errors" python3 -c "
import json; d = json.load(open('$work/down.json'))
assert d['keys_checked'] is False and d['errors'] == 1 and d['certificates'][0]['class'] == 'valid', d"

# A failed last renewal of a certificate with 200 days left needs attention.
inv2=$work/inv-more
mkdir -p "$inv2"
mint "$c/failed-valid.pem" failed-valid "-1 day" "+200 days"
inv_save=$inv; inv=$inv2
record "$c/failed-valid.pem" "" other failed ', "reason": "HTTP 503 from the CA"'
inv=$inv_save
sed -i 's/"key": "", //' "$inv2"/*.json
run_exit 24 "last renewal failed: HTTP 503 from the CA" "status: a failed last renewal needs attention" \
	cli status --inventory "$inv2" --config "$work/empty.json"
check "failed renewal, 200 days left: class warning" bash -c "grep -F '$c/failed-valid.pem' '$work/last' | grep -q '^warning '"
rm -f "$inv2"/*.json

# An entry of class error is counted in --json's errors as in the exit code.
echo "not a certificate" >"$c/junk.pem"
inv=$inv2
record "$c/junk.pem" "" other ok
inv=$inv_save
sed -i 's/"key": "", //' "$inv2"/*.json
cli status --json --inventory "$inv2" --config "$work/empty.json" >"$work/err-class.json" 2>/dev/null
st_err=$?
check "status --json: a class error entry counts in errors, exit 1" python3 -c "
import json; d = json.load(open('$work/err-class.json'))
assert $st_err == 1 and d['certificates'][0]['class'] == 'error' and d['errors'] == 1, ($st_err, d)"
rm -f "$inv2"/*.json

# Removed entries age out after 30 days without an attempt; --forget deletes a record.
rec_time() { # rec_time CERT SECONDS-AGO: a removed record of CERT, last attempt that long ago
	local name
	name=$(printf %s "$1" | sha256sum | cut -c1-64)
	printf '{"version": 1, "cert": "%s", "client": "openvox", "outcome": "failed", "reason": "enrollment refused", "last_renewal": %d, "successes": 0, "failures": 1}\n' \
		"$1" "$(( $(date +%s) - $2 ))" >"$inv2/$name.json"
}
rec_time "$c/gone-old.pem" $((31 * 86400))
run_exit 0 "1 removed certificate not shown: untouched for over 30 days" \
	"status: a removed entry untouched for 31 days ages out" cli status --inventory "$inv2" --config "$work/empty.json"
cli status --json --inventory "$inv2" --config "$work/empty.json" >"$work/aged.json" 2>/dev/null
check "status --json: aged_out counted, not listed" python3 -c "
import json; d = json.load(open('$work/aged.json'))
assert d['aged_out'] == 1 and d['total'] == 0 and d['attention'] == 0, d"
rec_time "$c/gone-new.pem" $((29 * 86400))
run_exit 24 "" "status: a removed entry of 29 days is still shown" cli status --inventory "$inv2" --config "$work/empty.json"
check "29 days: class removed" bash -c "grep -F '$c/gone-new.pem' '$work/last' | grep -q '^removed '"
# In the configuration it never ages out.
echo "{\"certificates\": [{\"cert\": \"$c/gone-old.pem\"}]}" >"$work/gone-conf.json"
run_exit 24 "" "status: a configured removed entry does not age out" \
	cli status --inventory "$inv2" --config "$work/gone-conf.json"
check "configured: gone-old shown removed" bash -c "grep -F '$c/gone-old.pem' '$work/last' | grep -q '^removed '"
run_exit 0 "forgot $c/gone-new.pem" "status --forget by certificate path" \
	cli status --inventory "$inv2" --config "$work/empty.json" --forget "$c/gone-new.pem"
run_exit 0 "" "status after --forget: nothing needs attention" cli status --inventory "$inv2" --config "$work/empty.json"
check "forget: the record file is gone" bash -c "[ ! -e '$inv2/$(printf %s "$c/gone-new.pem" | sha256sum | cut -c1-64).json' ]"
check "forget: the other record stays" bash -c "[ -e '$inv2/$(printf %s "$c/gone-old.pem" | sha256sum | cut -c1-64).json' ]"
run_exit 0 "still listed in the configuration" "status --forget of a configured certificate says it stays shown" \
	cli status --inventory "$inv2" --config "$work/gone-conf.json" --forget "$c/gone-old.pem"
run_exit 2 "no record in" "status --forget of an unknown name" \
	cli status --inventory "$inv2" --config "$work/empty.json" --forget nothing-here
cp "$inv/$(printf %s "$c/valid.pem" | sha256sum | cut -c1-64).json" "$inv2/"
cp "$inv/$(printf %s "$c/notice.pem" | sha256sum | cut -c1-64).json" "$inv2/"
sed -i 's/"key": "k-notice"/"key": "k-valid"/' "$inv2"/*.json
run_exit 2 "several records match" "status --forget of a key name two records share" \
	cli status --inventory "$inv2" --config "$work/empty.json" --forget k-valid
cli status --json --inventory "$inv2" --config "$work/empty.json" --forget "$c/notice.pem" >"$work/forget.json" 2>/dev/null
check "status --json --forget: {\"forgot\": CERT}" python3 -c "
import json; d = json.load(open('$work/forget.json')); assert d == {'forgot': '$c/notice.pem'}, d"
run_exit 0 "forgot $c/valid.pem" "status --forget by key name, now one record" \
	cli status --inventory "$inv2" --config "$work/empty.json" --forget k-valid
check "forget: the inventory is empty" bash -c "[ -z \"\$(ls '$inv2')\" ]"
run_exit 0 "" "KEYSVC_INVENTORY names the directory" env KEYSVC_INVENTORY="$work/inv-ok" \
	"$KS_KEYSVC_CLI" status --config "$work/empty.json"
check "KEYSVC_INVENTORY: two certificates" grep -q "^2 certificates: 1 notice 1 valid" "$work/last"
echo '{"version": 1, "cert": "/x", "colour": "red"}' >"$work/inv-ok/$(printf '%064d' 0).json"
run_exit 1 "inventory record" "status: a broken record is an error (the others still shown)" \
	cli status --inventory "$work/inv-ok" --config "$work/empty.json"
check "broken record: the others still listed" grep -q "2 certificates" "$work/last"
echo '{"certificates": [{"cert": "/a", "colour": "red"}]}' >"$work/bad1.json"
echo '{"thresholds": {}, "thresholds": {}}' >"$work/bad2.json"
echo '{"thresholds": {"critical_days": "10"}}' >"$work/bad3.json"
run_exit 3 "certificates[0]: unknown field \"colour\"" "status: a configuration with an unknown field" \
	cli status --inventory "$inv" --config "$work/bad1.json"
run_exit 3 "duplicate object key" "status: a configuration with a duplicate key" \
	cli status --inventory "$inv" --config "$work/bad2.json"
run_exit 3 "thresholds.critical_days: expected an integer" "status: a configuration with a wrong type" \
	cli status --inventory "$inv" --config "$work/bad3.json"
cli status --json --inventory "$inv" --config "$work/bad1.json" >"$work/err.json" 2>/dev/null
check "status --json: the error as one JSON object" python3 -c "
import json; d = json.loads(open('$work/err.json').read())
assert d['error'] == 'configuration' and 'unknown field' in d['message'], d"
run_exit 3 "not a regular file" "status: a configuration that is not a regular file" \
	cli status --inventory "$inv" --config <(echo '{}')
run_exit 3 "No such file" "status: a missing --config" cli status --config "$work/none.json"
run_exit 2 "--format" "status: unknown format" st --format xml
run_exit 2 "unrecognized option" "status: a prefix of an option is not taken" st --inv "$inv"
run_exit 2 "unexpected argument" "status: stray argument" st extra
# Thresholds from the configuration: with notice at 10 days the 60-day one is valid.
cat >"$work/short.json" <<EOF
{"thresholds": {"critical_days": 1, "warning_days": 2, "notice_days": 10}}
EOF
run_exit 1 "" "status with configured thresholds" cli status --inventory "$inv" --config "$work/short.json"
check "thresholds: 60 days left is valid" bash -c "grep -F '$c/notice.pem' '$work/last' | grep -q '^valid '"
check "thresholds: 5 days left is notice" bash -c "grep -F '$c/critical.pem' '$work/last' | grep -q '^notice '"

# The CRL: one signed by the look-alike CA is not believed.
openssl ca -config "$ca/ca.cnf" -keyfile "$ca/fake.key" -cert "$ca/fake.pem" -gencrl -out "$work/fake-crl.pem" 2>/dev/null
record "$c/revoked.pem" k-revoked openvox ok ", \"ca_file\": \"$ca/ca.pem\", \"crl\": \"$work/fake-crl.pem\""
run_exit 1 "not signed by a CA certificate" "status: a CRL not signed by the CA: error, not revoked" st
check "fake CRL: not classed revoked" bash -c "grep -F '$c/revoked.pem' '$work/last' | grep -q '^valid '"
record "$c/revoked.pem" k-revoked openvox ok ", \"ca_file\": \"$ca/ca.pem\", \"crl\": \"$ca/crl.pem\""

# ---- keys: keysvcd running ----
me=$(id -u)
ks_start "$work/d" '[{"uid": '"$me"', "keys": ["*"], "ops": ["key.generate", "key.list", "key.public", "key.delete", "csr.create", "sign"]}]'
export KEYSVC_SOCKET=$KS_SOCKET
for k in k-valid k-notice k-warning k-critical k-expired k-revoked k-pushfail k-weird; do
	ks_cli keygen "$k" >/dev/null || ks_die "keygen $k"
done
run_exit 24 "" "status with keysvcd: k-gone's file is gone anyway" st
check "keysvcd reachable: no unreachable note" bash -c "! grep -q 'cannot be reached' '$work/last'"
st --format prometheus >"$work/prom-up.txt" 2>/dev/null
check "prometheus: keysvcd answered, its token ok (one-hot)" bash -c "
	grep -qx 'keysvc_up 1' '$work/prom-up.txt' && grep -qxF 'keysvc_health{state=\"ok\"} 1' '$work/prom-up.txt' &&
	grep -qxF 'keysvc_health{state=\"degraded\"} 0' '$work/prom-up.txt' &&
	grep -qxF 'keysvc_health{state=\"token-unavailable\"} 0' '$work/prom-up.txt'"
check "prometheus: the token's last good answer is recent" python3 -c "
import time
t = [int(l.split()[1]) for l in open('$work/prom-up.txt') if l.startswith('keysvc_token_last_ok_timestamp_seconds ')]
assert len(t) == 1 and 0 <= time.time() - t[0] < 600, t"
check "keysvc --json hello: last_token_ok, recent" python3 -c "
import json, subprocess, time
d = json.loads(subprocess.run(['$KS_KEYSVC_CLI', '--json', 'hello'], capture_output=True, check=True).stdout)
assert isinstance(d['last_token_ok'], int) and 0 <= time.time() - d['last_token_ok'] < 600, d"
check "keysvc hello: the last good token answer" bash -c "'$KS_KEYSVC_CLI' hello | grep -q '^last ok:    20[0-9-]*T'"
check "keysvcd: the valid one stays valid" bash -c "grep -F '$c/valid.pem' '$work/last' | grep -q '^valid '"
ks_cli delete k-valid >/dev/null
run_exit 24 "keysvcd has no key k-valid" "status: a key removed from keysvcd" st
check "removed key: class removed" bash -c "grep -F '$c/valid.pem' '$work/last' | grep -q '^removed '"
st --json >"$work/keys.json" 2>/dev/null
check "removed key: key_present false in JSON" python3 -c "
import json; d = json.load(open('$work/keys.json'))
e = {x['cert'].rsplit('/', 1)[1]: x for x in d['certificates']}
assert d['keys_checked'] is True
assert e['valid.pem']['key_present'] is False and e['valid.pem']['class'] == 'removed'
assert e['notice.pem']['key_present'] is True"

# keysvc track: a certificate made with keysvc csr and a CA, added by hand.
tinv=$work/tinv
ks_cli keygen k-track >/dev/null || ks_die "keygen k-track"
ks_cli csr k-track --subject CN=tracked --out "$work/track.csr" >/dev/null || ks_die "csr k-track"
openssl ca -batch -config "$ca/ca.cnf" -in "$work/track.csr" -out "$c/tracked.pem" -notext \
	-startdate "$(when "-1 day")" -enddate "$(when "+200 days")" 2>/dev/null || ks_die "sign the tracked CSR"
run_exit 0 "tracking $c/tracked.pem as k-track" "track NAME --cert FILE" \
	cli track k-track --cert "$c/tracked.pem" --inventory "$tinv" --config "$work/empty.json"
run_exit 0 "" "status shows the tracked certificate" cli status --inventory "$tinv" --config "$work/empty.json"
check "tracked: valid, key k-track" bash -c "grep -F '$c/tracked.pem' '$work/last' | grep -q '^valid .* k-track '"
run_exit 2 "already in the inventory" "track: the same certificate again is refused" \
	cli track other-name --key k-track --cert "$c/tracked.pem" --inventory "$tinv" --config "$work/empty.json"
cp "$c/tracked.pem" "$c/tracked-copy.pem"
run_exit 2 "already in the inventory as k-track" "track: the same NAME again is refused" \
	cli track k-track --cert "$c/tracked-copy.pem" --inventory "$tinv" --config "$work/empty.json"
run_exit 2 "is not a certificate for key k-notice" "track: a certificate that is not the key's is refused" \
	cli track k-notice --cert "$c/tracked-copy.pem" --inventory "$tinv" --config "$work/empty.json"
run_exit 14 "no-such-key" "track: a key keysvcd does not have" \
	cli track nokey --cert "$c/tracked-copy.pem" --inventory "$tinv" --config "$work/empty.json"
run_exit 2 "--cert $c/junk.pem" "track: a file that is not a certificate" \
	cli track k-track2 --key k-track --cert "$c/junk.pem" --inventory "$tinv" --config "$work/empty.json"
run_exit 2 "--cert FILE is required" "track: --cert missing" cli track k-track --inventory "$tinv"
check "track: the refusals left one record" bash -c "[ \$(ls '$tinv' | wc -l) = 1 ]"
run_exit 0 "" "track with a name of its own, --key and --json" \
	cli --json track web-copy --key k-track --cert "$c/tracked-copy.pem" --inventory "$tinv" --config "$work/empty.json"
check "track --json: the entry" python3 -c "
import json; d = json.load(open('$work/last')); assert d == {'tracked': 'web-copy', 'cert': '$c/tracked-copy.pem', 'key': 'k-track'}, d"
cli status --json --inventory "$tinv" --config "$work/empty.json" >"$work/track.json" 2>/dev/null
check "status --json: the tracked names" python3 -c "
import json; d = json.load(open('$work/track.json'))
assert sorted((e['name'], e['key'], e['class']) for e in d['certificates']) == [('k-track', 'k-track', 'valid'), ('web-copy', 'k-track', 'valid')], d"
run_exit 0 "forgot $c/tracked-copy.pem" "status --forget a tracked NAME" \
	cli status --inventory "$tinv" --config "$work/empty.json" --forget web-copy
ks_stop
run_exit 7 "cannot reach keysvcd" "track with keysvcd stopped" \
	cli track web-copy --key k-track --cert "$c/tracked-copy.pem" --inventory "$tinv" --config "$work/empty.json"
run_exit 1 "keysvcd cannot be reached" "status with keysvcd stopped: said so, exit 1" st
check "keysvcd stopped: the key is not taken as removed" bash -c "grep -F '$c/valid.pem' '$work/last' | grep -q '^valid '"

# ---- verify ----
# serve NAME CERT KEY | serve NAME --hang: a server in the background, its port in $port
serve() {
	local name=$1 i
	shift
	rm -f "$work/$name.port"
	python3 "$tls_server" "$work/$name.port" "$@" 2>>"$work/servers.log" &
	servers+=($!)
	for i in $(seq 1 100); do
		[ -s "$work/$name.port" ] && break
		sleep 0.05
	done
	[ -s "$work/$name.port" ] || ks_die "server $name did not come up: $(cat "$work/servers.log")"
	port=$(cat "$work/$name.port")
}
v=$work/v
mkdir -p "$v"
mint "$v/web.pem" web.example.org "-1 day" "+200 days"
mint "$v/old.pem" web.example.org "-100 days" "+100 days"
mint "$v/unrelated.pem" other.example.org "-1 day" "+200 days"
cp "$v/old.pem" "$v/web.pem.prev"
serve good "$v/web.pem" "$v/web.pem.key" "$work/sni.log"; p_good=$port
serve prev "$v/old.pem" "$v/old.pem.key"; p_prev=$port
serve other "$v/unrelated.pem" "$v/unrelated.pem.key"; p_other=$port
serve hang --hang; p_hang=$port
p_closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/verify.json" <<EOF
{"verify": {"connect_timeout_ms": 2000, "handshake_timeout_ms": 1500},
 "certificates": [{"cert": "$v/web.pem", "key": "web", "endpoints": [
   {"host": "127.0.0.1", "port": $p_good, "sni": "web.example.org"},
   {"host": "127.0.0.1", "port": $p_prev, "sni": "web.example.org"},
   {"host": "127.0.0.1", "port": $p_other},
   {"host": "127.0.0.1", "port": $p_hang},
   {"host": "127.0.0.1", "port": $p_closed}]},
  {"cert": "$v/unrelated.pem"}]}
EOF
start=$(date +%s)
run_exit 24 "Push Validation Report" "verify: some endpoints out of sync" cli verify --config "$work/verify.json"
took=$(( $(date +%s) - start ))
cp "$work/out" "$work/verify.txt"
check "verify: the expected certificate is In Sync" grep -q "^  In Sync      127.0.0.1:$p_good (SNI web.example.org)" "$work/verify.txt"
check "verify: the previous certificate still served" bash -c "grep -A1 '^  Out of Sync  127.0.0.1:$p_prev ' '$work/verify.txt' | grep -q 'an older certificate is still served: $v/web.pem.prev'"
check "verify: an unrelated certificate" bash -c "grep -A1 '^  Out of Sync  127.0.0.1:$p_other\$' '$work/verify.txt' | grep -q 'another certificate served: CN=other.example.org'"
check "verify: a silent server times out" bash -c "grep -A1 '^  Out of Sync  127.0.0.1:$p_hang\$' '$work/verify.txt' | grep -q 'timed out'"
check "verify: a closed port" bash -c "grep -A1 '^  Out of Sync  127.0.0.1:$p_closed\$' '$work/verify.txt' | grep -q 'Connection refused'"
check "verify: the share in sync" grep -q "^In Sync: 1 of 5 endpoints (20%); Out of Sync: 4" "$work/verify.txt"
check "verify: bounded by the handshake timeout (took ${took}s)" test "$took" -lt 10
check "verify: the SNI name was sent" grep -qx "web.example.org" "$work/sni.log"
cli verify --config "$work/verify.json" --json >"$work/verify.json.out" 2>/dev/null
check "verify --json" python3 -c "
import json; d = json.load(open('$work/verify.json.out'))
assert d['total'] == 5 and d['in_sync'] == 1 and abs(d['share'] - 0.2) < 1e-9, d
s = [e['served'] for e in d['endpoints']]
assert s == ['in-sync', 'previous', 'other', 'unreachable', 'unreachable'], s
assert d['endpoints'][0]['in_sync'] is True and d['endpoints'][1]['sni'] == 'web.example.org'"
cat >"$work/verify-ok.json" <<EOF
{"certificates": [{"cert": "$v/web.pem", "endpoints": [{"host": "127.0.0.1", "port": $p_good, "sni": "web.example.org"}]}]}
EOF
run_exit 0 "In Sync: 1 of 1 endpoints (100%)" "verify: all in sync" cli verify --config "$work/verify-ok.json"
run_exit 24 "In Sync: 0 of 1" "verify --cert: only that certificate" bash -c \
	"cd '$v' && '$KS_KEYSVC_CLI' verify --config '$work/verify.json' --cert unrelated.pem --json >/dev/null; \
	 sed 's/\"port\": $p_good/\"port\": $p_prev/' '$work/verify-ok.json' >'$work/verify-prev.json'; \
	 '$KS_KEYSVC_CLI' verify --config '$work/verify-prev.json' --cert '$v/web.pem'"
run_exit 2 "not in the configuration" "verify --cert not configured" cli verify --config "$work/verify.json" --cert /etc/none.pem
rm "$v/web.pem.prev"
run_exit 24 "another certificate served" "verify: without .prev the old one is just another certificate" \
	cli verify --config "$work/verify.json"

# ---- install hooks through keysvc-openvox ----
export OPENSSL_MODULES=$KS_PROVIDER_DIR
ks_start "$work/d2" '[{"uid": '"$me"', "keys": ["agent*"], "ops": ["key.generate", "key.list", "key.public", "key.delete", "csr.create", "sign"]}]'
export KEYSVC_SOCKET=$KS_SOCKET
cadir=$work/fakeca
: >"$work/control"
# Certificates of 90 days less an hour: "notice" however fast the test runs
# (exactly 90 days left, in the same second, would still be "valid").
ks_fake_start "$fake_ca" --dir "$cadir" --control "$work/control" --autosign --ttl 864000 --renewal-ttl 7772400
server=https://127.0.0.1:$KS_FAKE_PORT
certs=$work/agent
mkdir -p "$certs"
cert=$certs/agent1.pem
oinv=$work/oinv
common=(--server "$server" --socket "$KS_SOCKET" --certname agent1.example.org --key agent1 --cert "$cert"
	--quiet --inventory "$oinv")
orec() { cat "$oinv/$(printf %s "$cert" | sha256sum | cut -c1-64).json"; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))" \
	"$oinv/$(printf %s "$cert" | sha256sum | cut -c1-64).json" "$1"; }

echo '{"certificates": 1}' >"$work/bad4.json"
run_exit 3 "certificates: expected an array" "openvox: a broken --config is refused before anything" \
	"$ovx" enroll "${common[@]}" --ca-file "$cadir/ca.pem" --config "$work/bad4.json"
run_exit 3 "No such file" "openvox: a missing --config is refused" \
	"$ovx" enroll "${common[@]}" --ca-file "$cadir/ca.pem" --config "$work/none.json"
[ -e "$cert" ] && fail "broken config: nothing enrolled" || ok "broken config: nothing enrolled"
run_exit 0 "" "openvox enroll records into the inventory" \
	"$ovx" enroll "${common[@]}" --ca-file "$cadir/ca.pem" --waitforcert 1 --maxwaitforcert 10 \
	--crl-out "$certs/crl.pem"
check "inventory: ok, openvox, key, CA, CRL" bash -c "[ '$(field outcome)' = ok ] && [ '$(field client)' = openvox ] &&
	[ '$(field key)' = agent1 ] && [ '$(field ca_file)' = '$cadir/ca.pem' ] && [ '$(field crl)' = '$certs/crl.pem' ] &&
	[ '$(field successes)' = 1 ]"
check "inventory record mode 0644" bash -c "[ \$(stat -c %a '$oinv'/*.json) = 644 ]"
run_exit 0 "" "status of the enrolled certificate (89 days: notice, nothing to do)" \
	cli status --inventory "$oinv" --config "$work/empty.json"
check "enrolled: notice, openvox, agent1, ok" bash -c "grep -F '$cert' '$work/last' | grep -qE '^notice .* openvox +agent1 +ok '"
run_exit 0 "" "status: the CA's CRL checked and not revoking it" bash -c \
	"'$KS_KEYSVC_CLI' status --inventory '$oinv' --config '$work/empty.json' --json | python3 -c 'import json,sys; e=json.load(sys.stdin)[\"certificates\"][0]; assert e[\"revoked\"] is False and e[\"key_present\"] is True, e'"

# The endpoint: openssl s_server with the installed certificate and its key in the
# token (through the provider). The reload hook restarts it, so that it serves
# whatever is installed at that moment.
p_agent=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/restart.sh" <<SCRIPT
#!/bin/sh
# The reload: the endpoint restarts with the installed certificate.
if [ -s "$work/agent-server.pid" ]; then
	pid=\$(cat "$work/agent-server.pid")
	kill \$pid 2>/dev/null
	while kill -0 \$pid 2>/dev/null; do sleep 0.05; done
fi
# Emptied before the start: the server truncates it only when it runs, and
# the grep below would see the stopped server's ACCEPT before that.
: >"$work/agent-server.log"
openssl s_server -provider default -provider keysvc -accept 127.0.0.1:$p_agent -cert "$cert" \\
	-key keysvc:agent1 -www </dev/null >>"$work/agent-server.log" 2>&1 &
echo \$! >"$work/agent-server.pid"
for i in \$(seq 1 100); do
	grep -q ACCEPT "$work/agent-server.log" && { echo reloaded >>"$work/reload.log"; exit 0; }
	sleep 0.05
done
exit 1
SCRIPT
chmod +x "$work/restart.sh"
stop_agent_server() {
	[ -s "$work/agent-server.pid" ] && kill "$(cat "$work/agent-server.pid")" 2>/dev/null
	rm -f "$work/agent-server.pid"
}
trap 'stop_agent_server; cleanup' EXIT
check "the endpoint starts with the enrolled certificate" "$work/restart.sh"

# hookconf RELOAD-JSON [EXTRA]: the configuration for the agent's certificate, its endpoint included
hookconf() {
	printf '{"verify": {"handshake_timeout_ms": 3000}, "certificates": [{"cert": "%s", "reload": %s, "endpoints": [{"host": "127.0.0.1", "port": %s, "sni": "agent1.example.org"}]%s}]}\n' \
		"$cert" "$1" "$p_agent" "${2:-}" >"$work/hook.json"
}
renew() { sleep 1.1; "$ovx" renew "${common[@]}" --ca-file "$cadir/ca.pem" --config "$work/hook.json" "$@"; }
reason() { field reason; }

hookconf "[\"$work/restart.sh\"]"
run_exit 0 "In Sync: 1 of 1" "verify: the endpoint serves the enrolled certificate" cli verify --config "$work/hook.json"
cp "$cert" "$work/before.pem"
: >"$work/reload.log"
run_exit 0 "" "renew, reload hook restarts the endpoint, verified In Sync" renew
check "hook ok: the reload ran" grep -qx reloaded "$work/reload.log"
check "hook ok: recorded ok, 2 successes" bash -c "[ '$(field outcome)' = ok ] && [ '$(field successes)' = 2 ]"
check "hook ok: .prev is the previous certificate" cmp -s "$cert.prev" "$work/before.pem"
run_exit 0 "In Sync: 1 of 1" "verify: the renewed certificate is served" cli verify --config "$work/hook.json"

# The hook "succeeds" but reloads nothing: the endpoint still serves the previous certificate.
hookconf '["true"]' ', "verify_wait": 1'
cp "$cert" "$work/before.pem"
run_exit 23 "the previous certificate served" "renew, endpoint still serving the old certificate: exit 23" renew
check "verification failed: push-failed recorded" bash -c "[ '$(field outcome)' = push-failed ]"
case "$(reason)" in
*"1 of 1 endpoints do not serve the new certificate"*) ok "verification failed: the reason recorded" ;;
*) fail "verification failed: the reason recorded: $(reason)" ;;
esac
check "verification failed: the new certificate is installed" bash -c "! cmp -s '$cert' '$work/before.pem'"
check "verification failed: .prev kept for the rollback" cmp -s "$cert.prev" "$work/before.pem"
run_exit 24 "an older certificate is still served: $cert.prev" "verify says the older certificate is served" \
	cli verify --config "$work/hook.json"
run_exit 24 "" "status after the failed push" cli status --inventory "$oinv" --config "$work/hook.json"
check "status: push-failed (gray)" bash -c "grep -F '$cert' '$work/last' | grep -q '^push-failed '"
cli status --inventory "$oinv" --config "$work/hook.json" --format prometheus >"$work/prom2.txt" 2>/dev/null
check "prometheus: push-failed class and the counters" bash -c "
	grep -qF 'keysvc_certificate_status{cert=\"$cert\",key=\"agent1\",client=\"openvox\",class=\"push-failed\"} 1' '$work/prom2.txt' &&
	grep -qF 'keysvc_renewal_success_total{cert=\"$cert\",key=\"agent1\",client=\"openvox\"} 2' '$work/prom2.txt' &&
	grep -qF 'keysvc_renewal_failure_total{cert=\"$cert\",key=\"agent1\",client=\"openvox\"} 1' '$work/prom2.txt'"

hookconf '["sh", "-c", "echo reload failed >&2; exit 4"]'
cp "$cert" "$work/before.pem"
run_exit 23 "push failed: sh exited with status 4" "renew with a failing reload hook: exit 23" renew
check "failing hook: push-failed recorded with the reason" bash -c "[ '$(field outcome)' = push-failed ] &&
	[ '$(field reason)' = 'sh exited with status 4' ] && [ '$(field failures)' = 2 ]"
check "failing hook: .prev kept for the rollback" cmp -s "$cert.prev" "$work/before.pem"

hookconf '["sh", "-c", "sleep 60"]' ', "reload_timeout": 1'
start=$(date +%s)
run_exit 23 "timed out after 1 s" "renew with a hanging reload hook: killed, exit 23" renew
took=$(( $(date +%s) - start ))
check "hanging hook: bounded (took ${took}s)" test "$took" -lt 15
check "hanging hook: push-failed" bash -c "[ '$(field outcome)' = push-failed ] && [ '$(field failures)' = 3 ]"

hookconf '["/nonexistent/reload"]'
run_exit 23 "cannot run /nonexistent/reload" "renew with a reload command that does not exist" renew

# A renewal that fails at the CA: failed, with the reason; no reload attempted.
echo status-500 >"$work/control"
: >"$work/reload.log"
hookconf "[\"$work/restart.sh\"]"
run_exit 17 "HTTP 500" "renew refused by the CA" renew
check "CA failure: recorded failed" bash -c "[ '$(field outcome)' = failed ]"
case "$(reason)" in
*"HTTP 500"*) ok "CA failure: the reason recorded" ;;
*) fail "CA failure: the reason recorded: $(reason)" ;;
esac
check "CA failure: no reload attempted" bash -c "! [ -s '$work/reload.log' ]"
echo normal >"$work/control"
run_exit 0 "" "renew again: reloaded and verified" renew
check "recorded ok again" bash -c "[ '$(field outcome)' = ok ] && [ '$(field successes)' = 3 ]"
stop_agent_server

ks_fake_stop
ks_stop || fail "keysvcd exit status"
echo "# status: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
