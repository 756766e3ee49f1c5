# Shell harness: a private SoftHSM token, a keysvcd config and a running
# daemon in one directory. Sourced by the shell tests and by scripts/demo.sh.
#
#   ks_start DIR POLICY_JSON    token + config + daemon; sets KS_DIR, KS_SOCKET, KS_PID
#                               ($KS_LOG_LEVEL: the config's log_level, default info;
#                               $KS_KEYSVCD_ARGS: more keysvcd arguments, split on blanks)
#   ks_stop                     SIGTERM, wait, check the exit status
#   ks_cli ARGS...              the keysvc CLI on the daemon's socket
#   ks_fake_start PROGRAM ARGS...
#                               a fake server (tests/fakesrv) in the background:
#                               ARGS plus --port-file, stderr appended to
#                               $work/fake.log; sets KS_FAKE_PID, KS_FAKE_PORT;
#                               a running one is stopped first
#   ks_fake_stop                SIGTERM and wait (nothing if none runs)
#   ks_tls_server_start LOG COMMAND...
#                               an `openssl s_server` command line in the
#                               background on 127.0.0.1, port of the kernel's
#                               choice; sets KS_SERVER_PID, KS_SERVER_PORT
#   ks_tls_server_stop [now]    wait up to 10 s for it to end (or not), stop it
#
# Needs KS_KEYSVCD, KS_KEYSVC_CLI, KS_TOKEN_INIT (paths of the built
# programs) and optionally KS_SOFTHSM_MODULE.

ks_die() { echo "harness: $*" >&2; exit 1; }

ks_start() {
	local dir=$1 policy=$2 conf
	KS_DIR=$dir
	KS_SOCKET=$dir/run/keysvc.sock
	mkdir -p "$dir"
	chmod 0711 "$dir"
	conf=$(KS_TOKEN_INIT=$KS_TOKEN_INIT bash "$KS_SOURCE_ROOT/softhsm-conf/setup-token.sh" "$dir/token" keysvc-test | tail -n 1)
	[ "${conf%%=*}" = SOFTHSM2_CONF ] || ks_die "setup-token.sh did not report SOFTHSM2_CONF"
	export SOFTHSM2_CONF=${conf#SOFTHSM2_CONF=}
	mkdir -p "$dir/run" "$dir/state"
	chmod 0755 "$dir/run"
	chmod 0700 "$dir/state"
	cat >"$dir/keysvcd.json" <<JSON
{
  "module": "${KS_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}",
  "token": {"label": "keysvc-test"},
  "pin_file": "$dir/token/pin",
  "state_dir": "$dir/state",
  "socket": "$KS_SOCKET",
  "audit_log": "$dir/audit.log",
  "log_level": "${KS_LOG_LEVEL:-info}",
  "policy": $policy
}
JSON
	chmod 0644 "$dir/keysvcd.json"
	# shellcheck disable=SC2086 # a list of arguments, split on purpose
	"$KS_KEYSVCD" -c "$dir/keysvcd.json" ${KS_KEYSVCD_ARGS:-} 2>"$dir/daemon.log" &
	KS_PID=$!
	local i
	for i in $(seq 1 100); do
		if [ -S "$KS_SOCKET" ] && "$KS_KEYSVC_CLI" --socket "$KS_SOCKET" hello >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$KS_PID" 2>/dev/null || { cat "$dir/daemon.log" >&2; ks_die "keysvcd exited"; }
		sleep 0.1
	done
	cat "$dir/daemon.log" >&2
	ks_die "keysvcd did not come up"
}

ks_stop() {
	[ -n "${KS_PID:-}" ] || return 0
	kill -TERM "$KS_PID" 2>/dev/null || true
	local st=0
	wait "$KS_PID" || st=$?
	KS_PID=
	[ "$st" -eq 0 ] || ks_die "keysvcd exited with status $st"
}

ks_cli() {
	"$KS_KEYSVC_CLI" --socket "$KS_SOCKET" "$@"
}

# ks_inventory_says DIR CERT_SUFFIX FIELD VALUE...: the inventory in DIR, read
# through `keysvc status --json`, has a record for the certificate whose path
# ends in CERT_SUFFIX with each FIELD equal to VALUE (what it has is printed).
ks_inventory_says() {
	local dir=$1 suffix=$2 report
	shift 2
	# Exit 24 (something needs attention) is expected here: only the record matters.
	report=$("$KS_KEYSVC_CLI" --socket "$KS_SOCKET" status --json --inventory "$dir" 2>/dev/null)
	printf '%s' "$report" | python3 -c "
import json, sys
d = json.load(sys.stdin)
c = [x for x in d['certificates'] if x['cert'].endswith(sys.argv[1])]
want = sys.argv[2:]
got = {k: str(c[0].get(k)) for k in want[0::2]} if c else {}
print(got)
sys.exit(0 if c and all(got[k] == v for k, v in zip(want[0::2], want[1::2])) else 1)" "$suffix" "$@"
}

ks_fake_stop() {
	[ -n "${KS_FAKE_PID:-}" ] || return 0
	kill -TERM "$KS_FAKE_PID" 2>/dev/null
	wait "$KS_FAKE_PID" 2>/dev/null
	KS_FAKE_PID=
}

ks_fake_start() {
	local i
	ks_fake_stop
	rm -f "$work/fake.port"
	"$@" --port-file "$work/fake.port" 2>>"$work/fake.log" &
	KS_FAKE_PID=$!
	for i in $(seq 1 100); do
		[ -s "$work/fake.port" ] && break
		kill -0 "$KS_FAKE_PID" 2>/dev/null || ks_die "$(basename "$1") exited: $(tail -5 "$work/fake.log")"
		sleep 0.05
	done
	[ -s "$work/fake.port" ] || ks_die "$(basename "$1") did not come up: $(tail -5 "$work/fake.log")"
	KS_FAKE_PORT=$(cat "$work/fake.port")
}

# ks_tls_server_start LOG COMMAND...: COMMAND (an openssl s_server command
# line, with a prefix such as env(1) if wanted) plus -accept 127.0.0.1:0,
# in the background, its output in LOG and its standard input held open
# (s_server stops at its end). Returns when it has said its port
# ("ACCEPT 127.0.0.1:PORT"): a port picked beforehand could be taken by
# another test's server in between. Sets KS_SERVER_PID and KS_SERVER_PORT;
# returns 1, with the server stopped, if it did not say it within 30 s.
ks_tls_server_start() {
	local log=$1 keep i
	shift
	# Emptied here, before the fork: the child truncates LOG only when it
	# gets to run, and a read before that saw the previous server's ACCEPT
	# (and its port, long closed) on a loaded machine.
	: >"$log"
	exec {keep}< <(exec sleep 600 2>/dev/null)
	KS_SERVER_KEEP_PID=$!
	"$@" -accept 127.0.0.1:0 >>"$log" 2>&1 <&$keep &
	KS_SERVER_PID=$!
	exec {keep}<&-
	KS_SERVER_PORT=
	for i in $(seq 1 300); do
		KS_SERVER_PORT=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$log" 2>/dev/null)
		[ -n "$KS_SERVER_PORT" ] && return 0
		kill -0 "$KS_SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$KS_SERVER_PID" 2>/dev/null; then
		echo "s_server did not say its port within 30 s" >>"$log"
	else
		echo "s_server exited before it said its port" >>"$log"
	fi
	ks_tls_server_stop now
	return 1
}

# ks_tls_server_stop [now]: the server of ks_tls_server_start, given up to
# 10 s to end by itself (s_server -naccept 1 ends after its one client and
# prints its statistics) unless "now", then stopped and waited for.
ks_tls_server_stop() {
	local i
	[ -n "${KS_SERVER_PID:-}" ] || return 0
	if [ "${1:-}" != now ]; then
		for i in $(seq 1 100); do
			kill -0 "$KS_SERVER_PID" 2>/dev/null || break
			sleep 0.1
		done
	fi
	kill "$KS_SERVER_PID" 2>/dev/null
	wait "$KS_SERVER_PID" 2>/dev/null
	kill "$KS_SERVER_KEEP_PID" 2>/dev/null
	KS_SERVER_PID=
}
