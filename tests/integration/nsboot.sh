# A systemd booted as PID 1 of private namespaces (PID, mount, UTS, IPC,
# cgroup) over the host's own file system, with /etc, /usr and /var behind
# throw-away overlays in the test's scratch directory and a fresh /run and
# cgroup2 tree: nothing outside the scratch directory is written. The
# network namespace is the host's (loopback servers of the test are
# reachable). Used by test_units_live.sh and test_package_system.sh; needs
# tap.sh, $work (0755) and a skip() function.
#
#   ns_pid1_mounts WORK      inside, as PID 1: the overlays, /run, cgroup2
#   ns_require               skip() unless root, unshare/nsenter/setpriv,
#                            systemd, namespaces with overlays and a cgroup2
#                            hierarchy we may write are there
#   ns_boot SCRIPT ARGS...   runs `bash SCRIPT ARGS` as PID 1 of new
#                            namespaces (it ends by exec'ing systemd), in a
#                            cgroup of its own; sets $ns_pid; exits the test
#                            (TAP plan, status 1) when it does not come up
#   ns_cleanup               kills it and removes the cgroup and $work
#   in_ns CMD..., ctl ARGS..., wait_for SECONDS CMD..., booted, prop P UNIT,
#   as_user USER CMD..., is WANT GOT

ns_pid1_mounts() {
	local T=$1 d
	for d in etc usr var; do
		mkdir -p "$T/ov/$d/upper" "$T/ov/$d/work"
		mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/ov/$d/upper,workdir=$T/ov/$d/work" "/$d"
	done
	mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
	# The cgroup namespace's root is the test's own cgroup (see ns_boot).
	mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
	# systemd hands mounts to services (credentials) through shared propagation.
	mount --make-rshared /
}

ns_require() {
	local c
	[ "$(id -u)" = 0 ] || skip "needs root (namespaces, overlay mounts, system users)"
	for c in unshare nsenter useradd setpriv; do
		command -v $c >/dev/null 2>&1 || skip "$c not installed"
	done
	[ -x /usr/lib/systemd/systemd ] || skip "systemd not installed"
	# What this machine lets root do, tried in throw-away namespaces first: past
	# this point a systemd that does not come up is a failure, not a skip.
	mkdir -p "$work/probe/lower" "$work/probe/upper" "$work/probe/work" "$work/probe/merged"
	unshare --pid --fork --mount --uts --ipc --cgroup --mount-proc --propagation private \
		mount -t overlay overlay \
		-o "lowerdir=$work/probe/lower,upperdir=$work/probe/upper,workdir=$work/probe/work" \
		"$work/probe/merged" >/dev/null 2>&1 || skip "cannot make PID, mount, cgroup namespaces with an overlay mount here"
	rm -rf "$work/probe"
	if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
		ns_cg_mount=/sys/fs/cgroup
	elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
		ns_cg_mount=/sys/fs/cgroup/unified
	else
		skip "no cgroup2 hierarchy"
	fi
}

ns_pid=
ns_unshare_pid=
ns_cg=

ns_cleanup() {
	[ -n "$ns_pid" ] && kill -KILL "$ns_pid" 2>/dev/null
	[ -n "$ns_unshare_pid" ] && wait "$ns_unshare_pid" 2>/dev/null
	# Children first; a cgroup empties a moment after its processes die.
	local i
	if [ -n "$ns_cg" ]; then
		for i in $(seq 1 50); do
			find "$ns_cg" -depth -type d -exec rmdir {} + 2>/dev/null
			[ -d "$ns_cg" ] || break
			sleep 0.1
		done
	fi
	rm -rf "$work"
}

in_ns() { nsenter --target "$ns_pid" --mount --pid --uts --ipc -- "$@"; }
ctl() { in_ns systemctl "$@"; }
prop() { ctl show -p "$1" --value "$2"; }
as_user() { # as_user USER COMMAND...: with USER's uid, gid and groups
	local uid gid
	uid=$(in_ns id -u "$1") && gid=$(in_ns id -g "$1") || return 1
	shift
	in_ns setpriv --reuid="$uid" --regid="$gid" --init-groups "$@"
}
wait_for() { # wait_for SECONDS COMMAND...
	local n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
booted() { case $(ctl is-system-running 2>/dev/null) in running | degraded) return 0 ;; esac; return 1; }
is() { # is WANT GOT: for check, with both shown on a mismatch
	[ "$1" = "$2" ] && return 0
	echo "expected '$1', got '$2'"
	return 1
}

ns_boot() {
	# A cgroup of the test's own in the cgroup2 hierarchy: the namespaced
	# systemd's root, removed afterwards with everything systemd made in it.
	ns_cg=$ns_cg_mount$(sed -n 's/^0:://p' /proc/self/cgroup)/keysvc-ns.$$
	ns_cg=${ns_cg//\/\//\/}
	mkdir "$ns_cg" 2>/dev/null || { ns_cg=; skip "cannot create a cgroup under $ns_cg_mount"; }
	(
		echo $BASHPID >"$ns_cg/cgroup.procs"
		exec unshare --pid --fork --mount --uts --ipc --cgroup --mount-proc --propagation private \
			bash "$@"
	) >"$work/boot.log" 2>&1 &
	ns_unshare_pid=$!
	local _
	for _ in $(seq 1 100); do
		ns_pid=$(pgrep -P "$ns_unshare_pid" 2>/dev/null | head -n 1)
		[ -n "$ns_pid" ] && break
		sleep 0.1
	done
	if [ -z "$ns_pid" ]; then
		fail "the namespaces were not created"
		sed 's/^/#   /' "$work/boot.log"
		echo "1..$((passed + failed))"
		exit 1
	fi
	# Up, or PID 1 gone (its set-up failed): no use waiting longer.
	ns_up_or_gone() { booted || ! kill -0 "$ns_pid" 2>/dev/null; }
	wait_for "${NS_BOOT_WAIT:-30}" ns_up_or_gone
	if ! booted; then
		fail "systemd did not come up in the namespaces"
		sed 's/^/#   /' "$work/boot.log"
		in_ns journalctl --no-pager 2>&1 | tail -n 40 | sed 's/^/#   /'
		echo "1..$((passed + failed))"
		exit 1
	fi
}
