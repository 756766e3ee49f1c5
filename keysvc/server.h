/*
 * The socket side of keysvcd: a Unix stream socket, peer credentials taken
 * at accept, connections (bounded by max_clients) waiting in one epoll set
 * for a few event workers that serve the requests already whole in their
 * socket. A slow or hostile client holds only a thread of its own, never a
 * worker: every read and write has a deadline, and the dispatcher never
 * waits on another connection.
 */
#ifndef KEYSVC_SERVER_H
#define KEYSVC_SERVER_H

#include <stddef.h>
#include <sys/types.h>

#include "keysvc/dispatch.h"

struct ks_token;

struct ks_server_config {
	const char *socket_path;
	mode_t socket_mode;
	int has_socket_gid;
	gid_t socket_gid;
	/* The listening socket came from systemd: its path is not ours to unlink. */
	int socket_activated;
	unsigned max_clients;         /* connections in all; more get a denied frame */
	unsigned max_clients_per_uid; /* connections of one peer uid; likewise */
	unsigned idle_timeout_ms;     /* wait for the first byte of the next request */
	unsigned frame_timeout_ms;    /* whole request frame in, whole response frame out */
	/*
	 * Descriptors kept free below RLIMIT_NOFILE for the token and for
	 * refusals: ks_server_run() serves fewer than max_clients connections
	 * at once if the limit leaves less room, and refuses to run if none.
	 */
	unsigned fd_reserve;
	/*
	 * The event workers (see ks_server_run()): never fewer than
	 * workers_min (0: KS_WORKERS_MIN), never more than workers_max; in
	 * between as the token's sign latency says (keysvc/workerctl.h), read
	 * from @token (NULL: always workers_min).
	 */
	unsigned workers_min;
	unsigned workers_max;
	struct ks_token *token;
};

#define KS_WORKERS_MIN 16

/* The part of max_clients kept for peers the policy names: a quarter. */
#define KS_KNOWN_RESERVE_DIVISOR 4

/*
 * Connection slots of @max_conns that peers no policy rule names never
 * get: max_conns / KS_KNOWN_RESERVE_DIVISOR, at least 1 (so with
 * max_clients 1 only named peers are served).
 */
unsigned ks_server_known_reserve(unsigned max_conns);

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
 * through @signal_fd). On SIGHUP calls @reload. On return all connections
 * are closed and the workers and connection threads have ended (after at
 * most a few seconds; -EBUSY, with what is still running left alone, if
 * not) and the socket file is removed (unless cfg->socket_activated:
 * systemd owns it then). Sends STOPPING=1 to systemd when a stop signal
 * arrives.
 *
 * How requests are served: an accepted connection is armed one-shot in an
 * epoll set. An event worker takes one ready connection; if the whole
 * request frame is in the socket (checked without consuming anything) it
 * reads it, calls ks_dispatch() and sends the answer without blocking,
 * then arms the connection again (so one request per connection is in
 * progress, and a request already queued behind it fires at once). A
 * frame not yet whole, a bad header or an answer the socket does not take
 * in full hands the connection to a thread of its own that applies the
 * deadlines below until that request is answered, then arms it again. The
 * workers number between cfg->workers_min and cfg->workers_max, set every
 * 100 ms or more from the token's sign latency (keysvc/workerctl.h), and
 * grow by workers_min whenever all were busy for 100 ms without finishing
 * a request.
 *
 * Limits, each logged when it strikes (proto/PROTOCOL.md, "Limits"):
 *   - over max_clients (or the fewer connections RLIMIT_NOFILE allows with
 *     cfg->fd_reserve descriptors kept free, counted once at start; -EMFILE
 *     at once if that is none), or over max_clients_per_uid for the
 *     peer's uid, a new connection gets one denied frame (id null) and is
 *     closed;
 *   - a peer no policy rule names (ks_policy_knows_peer(), decided at
 *     accept with the policy then in force) may hold connections only up
 *     to max_clients less ks_server_known_reserve(): the rest is kept for
 *     the peers the policy names, so that unknown peers cannot lock them
 *     out. Such a connection gets one request answered (denied by the
 *     policy, audited by the dispatcher) and is then closed; its wait for
 *     that request is frame_timeout_ms if that is shorter than
 *     idle_timeout_ms;
 *   - every connection refused at accept is audited (outcome "denied", op
 *     null) and answered through ks_dispatch_refusal();
 *   - a connection idle for idle_timeout_ms between requests is closed
 *     (checked every 100 ms; logged "idle for N ms; closing");
 *   - a request frame not complete frame_timeout_ms after its first byte,
 *     or a response frame not taken by the peer within frame_timeout_ms,
 *     closes the connection. Each connection holds at most one request and
 *     one response (each at most KS_FRAME_MAX) at a time: nothing else is
 *     buffered for it in user space;
 *   - when accept() fails for lack of descriptors (EMFILE, ENFILE) or
 *     memory, the listening socket is left alone for a back-off (100 ms
 *     doubling to 1 s) while established connections are served; one
 *     warning per burst, and a notice once accepting works again.
 * Returns 0 or a negative errno.
 */
int ks_server_run(int listen_fd, int signal_fd, struct ks_ctx *ctx,
		  const struct ks_server_config *cfg, ks_reload_fn reload,
		  void *reload_arg);

#endif
