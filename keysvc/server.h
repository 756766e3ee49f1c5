/*
 * The socket side of keysvcd: a Unix stream socket, one thread per
 * connection (bounded by max_clients), peer credentials taken at accept.
 * A slow or hostile client holds only its own thread: every read and write
 * has a deadline, and the dispatcher never waits on another connection.
 */
#ifndef KEYSVC_SERVER_H
#define KEYSVC_SERVER_H

#include <stddef.h>
#include <sys/types.h>

#include "keysvc/dispatch.h"

struct ks_server_config {
	const char *socket_path;
	mode_t socket_mode;
	int has_socket_gid;
	gid_t socket_gid;
	unsigned max_clients;
	unsigned client_timeout_ms;
};

/*
 * Create the listening socket at cfg->socket_path. Its directory must be
 * a real directory (not a symlink) owned by root or the effective uid and
 * not writable by group or others; it is created 0755 if missing. An
 * existing file there is replaced only if it is a socket nobody answers
 * on. The socket is bound under umask 0177, then given socket_mode and
 * socket_gid. Returns the fd, or a negative errno with @err filled.
 */
int ks_server_listen(const struct ks_server_config *cfg, char *err, size_t err_len);

/*
 * Called from the main loop on SIGHUP. Reloads what can be reloaded.
 */
typedef void (*ks_reload_fn)(void *arg);

/*
 * Serve @listen_fd until SIGTERM or SIGINT (blocked by the caller and read
 * through @signal_fd). On SIGHUP calls @reload. On return all connection
 * threads have ended (after at most a few seconds) and the socket file is
 * removed. Returns 0 or a negative errno.
 */
int ks_server_run(int listen_fd, int signal_fd, struct ks_ctx *ctx,
		  const struct ks_server_config *cfg, ks_reload_fn reload,
		  void *reload_arg);

#endif
