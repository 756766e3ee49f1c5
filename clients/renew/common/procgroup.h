/*
 * Stopping a child that outlived its deadline together with everything it
 * started: the install hooks (push.h) and keysvc-oci's --state-command
 * (ocirun.h) each run in a process group of their own, led by the child
 * (setpgid(pid, pid) in both the child and the parent, so the group exists
 * before any kill). A stopped program first gets SIGTERM and a grace period
 * to clean up (a lock, a half-written file), then SIGKILL.
 */
#ifndef KEYSVC_CLIENTS_PROCGROUP_H
#define KEYSVC_CLIENTS_PROCGROUP_H

#include <sys/types.h>

/*
 * Whether the child @pid has exited, without reaping it: while it is a
 * zombie its pid (its group's id) cannot be reused, so kill(-pid) can only
 * reach its own group. A @pid that is not a child of the caller counts as
 * exited.
 */
int ks_pgroup_leader_exited(pid_t pid);

/*
 * Stop the process group led by the caller's child @pid (not reaped yet):
 * SIGTERM to the group, up to @grace_ms for the leader to exit, then
 * SIGKILL to the group, which also reaches the leader's children that
 * ignored SIGTERM or outlived it. The leader is not reaped: the caller
 * waits for it. 1 if the leader exited within the grace, 0 if it was still
 * running when SIGKILL was sent.
 */
int ks_pgroup_stop(pid_t pid, int grace_ms);

#endif
