# A tpm2-pkcs11 token over the swtpm simulator, for the tpm2 suite. Sourced.
# Everything runs as ordinary processes of the test on 127.0.0.1 and under
# the test's directory: no system daemon, no system bus, nothing written
# elsewhere (see /work/shared/notes/tokens.md for the facts behind it).
#
#   ks_tpm2_missing             prints why the suite cannot run here and
#                               returns 0, or returns 1 when it can
#   ks_tpm2_start DIR LABEL     swtpm on two free loopback ports, a private
#                               dbus-daemon (DIR/dbus.sock), tpm2-abrmd on it,
#                               a tpm2-pkcs11 store in DIR/store and a token
#                               LABEL with a random user PIN in DIR/pin (0600);
#                               exports TPM2_PKCS11_TCTI, TPM2_PKCS11_STORE,
#                               DBUS_SESSION_BUS_ADDRESS; sets KS_TPM2_MODULE
#   ks_tpm2_stop                stops what ks_tpm2_start started (trap it)
#                               ($KS_TPM2_ABRMD_PID, $KS_TPM2_PORT: tpm2-abrmd's
#                               pid and swtpm's port, to do without the former)
#   ks_tpm2_keysvcd_start DIR POLICY
#                               keysvcd on that token: DIR/keysvcd.json,
#                               DIR/run/keysvc.sock, DIR/audit.log; sets
#                               KS_SOCKET, KS_PID (ks_stop of harness.sh stops it)
#
# Needs KS_TOKEN_INIT and KS_KEYSVCD, KS_KEYSVC_CLI for the daemon.

KS_TPM2_MODULE=${KS_TPM2_MODULE:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/pkcs11/libtpm2_pkcs11.so}
ks_tpm2_pids=()

ks_tpm2_missing() {
	local p
	for p in swtpm tpm2-abrmd dbus-daemon tpm2_ptool python3; do
		if ! command -v "$p" >/dev/null 2>&1; then
			echo "$p is not installed (scripts/deps.sh installs swtpm, tpm2-abrmd, dbus, libtpm2-pkcs11-tools)"
			return 0
		fi
	done
	if [ ! -r "$KS_TPM2_MODULE" ]; then
		echo "$KS_TPM2_MODULE is not installed (scripts/deps.sh installs libtpm2-pkcs11-1)"
		return 0
	fi
	if ! compgen -G "${KS_TPM2_MODULE%/pkcs11/*}/libtss2-tcti-tabrmd.so*" >/dev/null; then
		echo "libtss2-tcti-tabrmd is not installed (scripts/deps.sh installs libtss2-tcti-tabrmd0)"
		return 0
	fi
	return 1
}

# Two consecutive free ports on 127.0.0.1 (server, control).
ks_tpm2_ports() {
	python3 - <<'PY'
import socket
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(); b.close(); continue
    a.close(); b.close(); print(p); break
PY
}

ks_tpm2_start() {
	local dir=$1 label=$2 i port tries
	mkdir -p "$dir/state" "$dir/store"
	chmod 0700 "$dir/state" "$dir/store"
	# A port taken between the probe and swtpm's bind: try others.
	for tries in 1 2 3 4 5; do
		port=$(ks_tpm2_ports)
		[ -n "$port" ] || continue
		swtpm socket --tpm2 --tpmstate "dir=$dir/state" \
			--server "type=tcp,port=$port,bindaddr=127.0.0.1" \
			--ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
			--flags not-need-init,startup-clear --log "file=$dir/swtpm.log" &
		ks_tpm2_pids+=($!)
		for i in $(seq 1 50); do
			python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" \
				2>/dev/null && break
			kill -0 "${ks_tpm2_pids[-1]}" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "${ks_tpm2_pids[-1]}" 2>/dev/null && break
		unset 'ks_tpm2_pids[-1]'
		port=
	done
	[ -n "$port" ] || { echo "tpm2env: swtpm did not start: $(tail -3 "$dir/swtpm.log" 2>/dev/null)" >&2; return 1; }
	KS_TPM2_PORT=$port

	# A bus of our own: tpm2-abrmd --session registers its name there only.
	dbus-daemon --session --nofork --address="unix:path=$dir/dbus.sock" >"$dir/dbus.log" 2>&1 &
	ks_tpm2_pids+=($!)
	for i in $(seq 1 50); do
		[ -S "$dir/dbus.sock" ] && break
		sleep 0.1
	done
	export DBUS_SESSION_BUS_ADDRESS=unix:path=$dir/dbus.sock
	# Without a resource manager tpm2-pkcs11 runs out of TPM object contexts.
	tpm2-abrmd --session --allow-root --tcti="swtpm:host=127.0.0.1,port=$port" >"$dir/abrmd.log" 2>&1 &
	ks_tpm2_pids+=($!)
	KS_TPM2_ABRMD_PID=$!
	export TPM2TOOLS_TCTI=tabrmd:bus_type=session
	export TPM2_PKCS11_TCTI=tabrmd:bus_type=session
	export TPM2_PKCS11_STORE=$dir/store
	for i in $(seq 1 50); do
		tpm2_getcap properties-fixed >/dev/null 2>&1 && break
		sleep 0.1
	done
	tpm2_getcap properties-fixed >/dev/null 2>&1 ||
		{ echo "tpm2env: tpm2-abrmd did not come up: $(tail -3 "$dir/abrmd.log")" >&2; return 1; }

	tpm2_ptool init --path="$dir/store" >"$dir/ptool.log" 2>&1 ||
		{ echo "tpm2env: tpm2_ptool init failed: $(tail -3 "$dir/ptool.log")" >&2; return 1; }
	(umask 077
	 head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/pin"
	 head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/so-pin")
	# tpm2_ptool takes the PINs only as arguments: a throw-away PIN of a
	# simulated TPM, seen for a moment in this test's process list. A token
	# made with C_InitToken (ks-token-init) does not list RSA-PSS: only
	# tpm2_ptool records that the TPM's PSS signatures are good.
	tpm2_ptool addtoken --pid=1 --label="$label" --userpin="$(cat "$dir/pin")" \
		--sopin="$(cat "$dir/so-pin")" --path="$dir/store" >>"$dir/ptool.log" 2>&1 ||
		{ echo "tpm2env: tpm2_ptool addtoken failed: $(tail -3 "$dir/ptool.log")" >&2; return 1; }
	KS_TPM2_DIR=$dir
	KS_TPM2_LABEL=$label
}

ks_tpm2_stop() {
	local i j pid
	for ((i = ${#ks_tpm2_pids[@]} - 1; i >= 0; i--)); do
		pid=${ks_tpm2_pids[$i]}
		kill -TERM "$pid" 2>/dev/null
		# tpm2-abrmd that never got its bus name ignores SIGTERM.
		for j in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	ks_tpm2_pids=()
}

ks_tpm2_keysvcd_start() {
	local dir=$1 policy=$2 i
	KS_SOCKET=$dir/run/keysvc.sock
	mkdir -p "$dir/run" "$dir/kstate"
	chmod 0711 "$dir"
	chmod 0755 "$dir/run"
	chmod 0700 "$dir/kstate"
	cat >"$dir/keysvcd.json" <<JSON
{
  "module": "$KS_TPM2_MODULE",
  "token": {"label": "$KS_TPM2_LABEL"},
  "pin_file": "$KS_TPM2_DIR/pin",
  "state_dir": "$dir/kstate",
  "socket": "$KS_SOCKET",
  "audit_log": "$dir/audit.log",
  "log_level": "${KS_LOG_LEVEL:-info}",
  "rescan": "reinitialize",
  "policy": $policy
}
JSON
	chmod 0644 "$dir/keysvcd.json"
	"$KS_KEYSVCD" -c "$dir/keysvcd.json" >>"$dir/daemon.log" 2>&1 &
	KS_PID=$!
	for i in $(seq 1 300); do
		if [ -S "$KS_SOCKET" ] && "$KS_KEYSVC_CLI" --socket "$KS_SOCKET" hello >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$KS_PID" 2>/dev/null || { tail -20 "$dir/daemon.log" >&2; echo "tpm2env: keysvcd exited" >&2; return 1; }
		sleep 0.1
	done
	tail -20 "$dir/daemon.log" >&2
	echo "tpm2env: keysvcd did not come up" >&2
	return 1
}
