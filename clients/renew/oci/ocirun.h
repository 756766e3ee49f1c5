/*
 * Running the operator's --state-command with a deadline. A command that
 * never exits must not hang keysvc-oci: it runs in a process group of its
 * own, so that at the deadline everything it started is stopped with it
 * (SIGTERM to the group, a short grace, then SIGKILL: procgroup.h), and it is always
 * reaped before we return.
 *
 * Errors are negative errno values.
 */
#ifndef KEYSVC_CLIENTS_OCI_OCIRUN_H
#define KEYSVC_CLIENTS_OCI_OCIRUN_H

#include <stddef.h>

/* How long a command killed at its deadline gets after SIGTERM before SIGKILL. */
#define OCI_RUN_GRACE_MS 1000

/*
 * Run @shell_cmd with /bin/sh -c, stdin from /dev/null, stderr inherited,
 * for at most @timeout_ms (0 or more). The first line of its stdout goes to
 * @out (@out_len bytes, at least 1: NUL-terminated, the line end cut, the
 * rest of the output read and dropped). When the command exits, whatever
 * it left running in its process group is killed too: a state query has no
 * business leaving processes behind. *@status gets the wait status.
 * 0 when it exited by itself; -ETIME when it was killed at the deadline;
 * -errno when it could not be started.
 */
int oci_run_first_line(const char *shell_cmd, long timeout_ms, char *out, size_t out_len, int *status);

#endif
