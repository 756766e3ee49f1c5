/*
 * The two pieces of the systemd service protocol keysvcd uses, without
 * libsystemd: socket activation (sd_listen_fds(3)) and readiness
 * notification (sd_notify(3)). Both are no-ops outside systemd.
 *
 * Neither function is thread-safe: they read (and ks_sd_listen_fd()
 * changes) the environment, so call them from the main thread only.
 */
#ifndef KEYSVC_SDNOTIFY_H
#define KEYSVC_SDNOTIFY_H

#include <stddef.h>

/* The first passed descriptor (SD_LISTEN_FDS_START). */
#define KS_SD_LISTEN_FDS_START 3

/*
 * Take the socket systemd passed (keysvcd.socket): if $LISTEN_PID is this
 * process and $LISTEN_FDS is set, exactly one descriptor must have been
 * passed, and fd 3 must be an AF_UNIX SOCK_STREAM socket in the listening
 * state (checked with SO_TYPE, SO_ACCEPTCONN and getsockname()). It is
 * made close-on-exec and non-blocking, and its bound path (or "@name" for
 * an abstract one, "" if unnamed) is copied to @path (at most @path_len
 * bytes with the NUL, truncated).
 *
 * $LISTEN_PID, $LISTEN_FDS and $LISTEN_FDNAMES are unset in every case, so
 * nothing this process might start inherits them.
 *
 * Returns 1 with *@fd = 3 when activated, 0 with *@fd = -1 when not (no
 * variables, or $LISTEN_PID names another process: they were not meant
 * for us), or a negative errno with @err describing the problem:
 * -EINVAL (malformed variables, or more than one descriptor),
 * -EBADF (fd 3 not open), -ENOTSOCK, -EAFNOSUPPORT, -ESOCKTNOSUPPORT
 * (not a stream socket) or -EDESTADDRREQ (not listening).
 */
int ks_sd_listen_fd(int *fd, char *path, size_t path_len, char *err, size_t err_len);

/*
 * Send @state (newline-separated assignments, e.g. "READY=1" or
 * "RELOADING=1\nMONOTONIC_USEC=123") as one datagram to $NOTIFY_SOCKET: an
 * absolute path, or "@name" for an abstract socket. Other forms (such as
 * vsock:) are not supported. $NOTIFY_SOCKET is left in place, since the
 * daemon notifies again at reload and stop.
 *
 * Returns 1 if sent, 0 if $NOTIFY_SOCKET is unset (not under systemd), or
 * a negative errno (-EAFNOSUPPORT for an unsupported address,
 * -ENAMETOOLONG, or the socket error). The caller logs failures; the
 * daemon keeps running either way.
 */
int ks_sd_notify(const char *state);

/* CLOCK_MONOTONIC in microseconds, for MONOTONIC_USEC= next to RELOADING=1. */
unsigned long long ks_sd_monotonic_usec(void);

#endif
