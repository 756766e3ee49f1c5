# Starting and stopping the fake servers (tests/fakesrv) in their smoke
# tests, several at once by name. Needs tap.sh and $work.
#
#   srv_start NAME PROGRAM ARGS...  start PROGRAM ARGS --port-file WORK/NAME.port
#                                   (stderr to WORK/NAME.log), wait for the
#                                   port: ${port[NAME]}; exit if it never comes
#   srv_stop NAME                   SIGTERM must end it promptly with status 0
#   srv_cleanup                     kill what is left (for the EXIT trap)
#
# SRV_WRAPPER (e.g. valgrind) goes in front of PROGRAM; SRV_START_TRIES and
# SRV_STOP_TRIES count the 0.1 s waits (200 and 100).
declare -A pid port

srv_start() {
	local name=$1 i
	shift
	rm -f "$work/$name.port"
	${SRV_WRAPPER:-} "$@" --port-file "$work/$name.port" 2>"$work/$name.log" &
	pid[$name]=$!
	for i in $(seq 1 "${SRV_START_TRIES:-200}"); do
		[ -s "$work/$name.port" ] && break
		kill -0 "${pid[$name]}" 2>/dev/null || break
		sleep 0.1
	done
	if [ -s "$work/$name.port" ]; then
		port[$name]=$(cat "$work/$name.port")
		ok "$name: listening on port ${port[$name]}"
	else
		fail "$name: did not start"
		sed 's/^/#   /' "$work/$name.log"
		exit 1
	fi
}

srv_stop() {
	local name=$1 st=0 i
	kill -TERM "${pid[$name]}"
	for i in $(seq 1 "${SRV_STOP_TRIES:-100}"); do
		kill -0 "${pid[$name]}" 2>/dev/null || break
		sleep 0.1
	done
	wait "${pid[$name]}" || st=$?
	unset "pid[$name]"
	if [ "$st" -eq 0 ]; then ok "$name: SIGTERM, exit status 0"; else
		fail "$name: exit status $st after SIGTERM"
		sed 's/^/#   /' "$work/$name.log"
	fi
}

srv_cleanup() {
	local n
	for n in "${!pid[@]}"; do
		kill -KILL "${pid[$n]}" 2>/dev/null
	done
	jobs -p | xargs -r kill 2>/dev/null
	wait 2>/dev/null
}
