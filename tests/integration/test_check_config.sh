#!/usr/bin/env bash
# keysvcd --check-config, --check-token and --check-reload against a real
# SoftHSM token (behind tests/faultp11, which counts every C_Login in
# KS_FAULTP11_COUNT): what a start would meet is found before the start,
# and only --check-token ever shows the token the PIN.
#
# Checked: a good set-up; a wrong token label; a module that is not a
# PKCS#11 module (libc, a text file); a missing audit directory; the PIN as
# a systemd credential, found in keysvcd.service (and its drop-ins) on
# $SYSTEMD_UNIT_PATH, or named with --pin-file, or missing; --user; broken
# JSON with its line and column; an unknown user named; --check-token with
# the right PIN, a wrong one (recorded) and the wrong one again (not shown
# to the token); --check-reload.
set -uo pipefail

. "$KS_SOURCE_ROOT/tests/integration/harness.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/keysvc-check.XXXXXX")
chmod 0711 "$work"
. "$KS_SOURCE_ROOT/tests/integration/tap.sh"
trap 'rm -rf "$work"' EXIT

[ "$(id -u)" -eq 0 ] || { echo "1..0 # SKIP needs root (the module and config must be root's)"; exit 77; }
softhsm=${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -e "$softhsm" ] || { echo "1..0 # SKIP no SoftHSM at $softhsm"; exit 77; }

conf=$(KS_TOKEN_INIT=$KS_TOKEN_INIT bash "$KS_SOURCE_ROOT/softhsm-conf/setup-token.sh" "$work/token" keysvc-test | tail -n 1)
export SOFTHSM2_CONF=${conf#SOFTHSM2_CONF=}
export KS_FAULTP11_TARGET=$softhsm KS_FAULTP11_COUNT=$work/c_login.count
# No host unit (an installed keysvcd.service with User=) may change what is checked.
mkdir -p "$work/no-units" "$work/units" "$work/state" "$work/log"
chmod 0700 "$work/state"
export SYSTEMD_UNIT_PATH=$work/no-units
logins() { if [ -e "$KS_FAULTP11_COUNT" ]; then grep -c '^C_Login$' "$KS_FAULTP11_COUNT" || true; else echo 0; fi; }
# The output of the last run_exit, which the next check would overwrite.
said() { cp "$work/out" "$work/said"; check "$1" grep -qF -- "$2" "$work/said"; }

# write_conf FILE [JSON-FIELDS...]: a config for the test token; extra fields replace defaults.
write_conf() {
	local file=$1 module=${MODULE:-$KS_FAULTP11} label=${LABEL:-keysvc-test}
	local pin=${PIN_FIELD-\"pin_file\": \"$work/token/pin\",}
	cat >"$file" <<JSON
{
  "module": "$module",
  "token": {"label": "$label"},
  $pin
  "state_dir": "$work/state",
  "socket": "$work/keysvc.sock",
  "audit_log": "${AUDIT:-$work/log/audit.log}",
  "policy": [{"uid": ${UID_VALUE:-0}, "keys": ["*"], "ops": ["key.list"]}]
}
JSON
	chmod 0644 "$file"
}
check_config() { "$KS_KEYSVCD" -c "$1" --check-config "${@:2}"; }

write_conf "$work/good.json"
run_exit 0 'token: "keysvc-test"' "a good set-up passes, the token named" check_config "$work/good.json"
said "it says where the PIN comes from" "PIN: read from pin_file $work/token/pin"
check "--check-config never logs in" [ "$(logins)" = 0 ]

LABEL=no-such-token write_conf "$work/label.json"
run_exit 5 'no initialised token matches label "no-such-token"' "a wrong token label: exit 5" \
	check_config "$work/label.json"

libc=$(realpath "$(ldconfig -p | awk '/libc\.so\.6 .*x86-64|libc\.so\.6 \(libc6/ { print $NF; exit }')")
MODULE=$libc write_conf "$work/libc.json"
run_exit 5 "cannot load PKCS#11 module $libc" "libc is not a PKCS#11 module: exit 5" \
	check_config "$work/libc.json"
printf 'not a library\n' >"$work/module.txt"
MODULE=$work/module.txt write_conf "$work/text.json"
run_exit 5 "cannot load PKCS#11 module $work/module.txt" "a text file is not a PKCS#11 module: exit 5" \
	check_config "$work/text.json"

AUDIT=$work/no-such-dir/audit.log write_conf "$work/audit.json"
run_exit 3 "audit log $work/no-such-dir/audit.log: directory $work/no-such-dir: No such file or directory" \
	"a missing audit directory: exit 3" check_config "$work/audit.json"

# The documented systemd set-up: no pin_file, the PIN as the credential keysvc-pin.
PIN_FIELD= write_conf "$work/cred.json"
run_exit 4 "--pin-file FILE" "no pin_file and no unit: exit 4, and how to name the file" \
	check_config "$work/cred.json"
run_exit 0 "configuration OK" "--pin-file names the credential's file" \
	check_config "$work/cred.json" --pin-file "$work/token/pin"
printf '[Service]\nUser=root\nLoadCredential=keysvc-pin:/nonexistent/pin\n' >"$work/units/keysvcd.service"
mkdir -p "$work/units/keysvcd.service.d"
printf '[Service]\nLoadCredential=\nLoadCredential=keysvc-pin:%s\n' "$work/token/pin" \
	>"$work/units/keysvcd.service.d/pin.conf"
export SYSTEMD_UNIT_PATH=$work/units
run_exit 0 "which $work/units/keysvcd.service passes as the credential keysvc-pin" \
	"by hand, the PIN is read from the unit's LoadCredential= (a drop-in's wins)" check_config "$work/cred.json"
rm "$work/units/keysvcd.service.d/pin.conf"
run_exit 4 "/nonexistent/pin" "the unit's credential file is missing: exit 4" check_config "$work/cred.json"
export SYSTEMD_UNIT_PATH=$work/no-units
CREDENTIALS_DIRECTORY=$work/token run_exit 4 "" "a credentials directory without keysvc-pin: exit 4" \
	check_config "$work/cred.json"
mkdir -p "$work/creds" && install -m 0400 "$work/token/pin" "$work/creds/keysvc-pin"
CREDENTIALS_DIRECTORY=$work/creds run_exit 0 "PIN: read from the credential $work/creds/keysvc-pin" \
	"under systemd the credential is read" check_config "$work/cred.json"

# As root for another user: the credential's file is read as root (systemd
# does), then state_dir (root's, 0700) is not that user's to write.
run_exit 3 "state_dir $work/state: not writable" "--user checks as that user" \
	check_config "$work/cred.json" --pin-file "$work/token/pin" --user nobody
said "and says so" "checking as user nobody (--user)"
# A pin_file is read as keysvcd's user, as keysvcd reads it: root's 0600 file is not nobody's.
run_exit 4 "PIN file $work/token/pin" "--user: pin_file is read as that user" \
	check_config "$work/good.json" --user nobody

# Errors that name their place and their value.
printf '{\n  "module": "%s",\n  "token": "keysvc-test",,\n  "policy": []\n}\n' "$KS_FAULTP11" >"$work/broken.json"
chmod 0644 "$work/broken.json"
run_exit 3 "config $work/broken.json:3:26: malformed JSON" "broken JSON: exit 3 with line and column" \
	check_config "$work/broken.json"
UID_VALUE='"no-such-user-bob"' write_conf "$work/user.json"
run_exit 3 'policy rule 1: uid "no-such-user-bob": unknown user' "an unknown user is named" \
	check_config "$work/user.json"

# --check-reload: what ExecReload= runs before SIGHUP.
run_exit 0 "configuration OK" "--check-reload: a good file" "$KS_KEYSVCD" -c "$work/good.json" --check-reload
run_exit 3 "malformed JSON" "--check-reload: broken JSON fails" "$KS_KEYSVCD" -c "$work/broken.json" --check-reload
run_exit 2 "" "--pin-file without a --check-* option is a usage error" \
	"$KS_KEYSVCD" -c "$work/good.json" --pin-file "$work/token/pin"

# --check-token: one login, through the rejected-PIN guard.
run_exit 0 "token: logged in with the PIN" "--check-token logs in with the right PIN" \
	"$KS_KEYSVCD" -c "$work/good.json" --check-token
check "once" [ "$(logins)" = 1 ]
printf 'wrong-pin-123\n' >"$work/wrong-pin" && chmod 0600 "$work/wrong-pin"
PIN_FIELD="\"pin_file\": \"$work/wrong-pin\"," write_conf "$work/wrong.json"
run_exit 6 "the token rejected the PIN; recorded in $work/state/pin-rejected" \
	"--check-token with a wrong PIN: exit 6, recorded" "$KS_KEYSVCD" -c "$work/wrong.json" --check-token
check "the token saw the wrong PIN once" [ "$(logins)" = 2 ]
run_exit 6 "" "--check-token again: exit 6" "$KS_KEYSVCD" -c "$work/wrong.json" --check-token
run_exit 6 "" "--check-config knows it too: exit 6" check_config "$work/wrong.json"
check "and the token never saw it again" [ "$(logins)" = 2 ]

echo "1..$((passed + failed))"
[ "$failed" -eq 0 ]
