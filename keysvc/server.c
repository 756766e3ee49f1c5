#include "keysvc/server.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "keysvc/sdnotify.h"
#include "proto/frame.h"
#include "proto/log.h"
#include "proto/wire.h"

#define KS_THREAD_STACK (256 * 1024)
#define KS_SHUTDOWN_WAIT_MS 5000
/* Back-off of the accept loop when descriptors or memory run out. */
#define KS_ACCEPT_BACKOFF_MIN_MS 100
#define KS_ACCEPT_BACKOFF_MAX_MS 1000
/* At most one refusal line per this many ms; the others are counted. */
#define KS_REFUSAL_LOG_INTERVAL_MS 1000

struct ks_conn {
	int fd;
	int known;              /* a policy rule named the peer at accept */
	struct ks_peer peer;
	struct ks_server *srv;
	struct ks_conn *prev, *next;
};

struct ks_server {
	struct ks_ctx *ctx;
	const struct ks_server_config *cfg;
	pthread_mutex_t lock;
	pthread_cond_t drained;
	struct ks_conn *conns;
	unsigned nconns;
	unsigned nunknown;      /* of nconns, those of peers no rule names */
	unsigned max_conns;     /* max_clients, or fewer if the descriptor limit says so */
	unsigned max_unknown;   /* max_conns less the reserve for known peers */
	int stopping;
	/* Used by the accept loop only, so not under the lock. */
	int64_t refusal_logged_ms;
	unsigned refusals_unlogged;
};

unsigned ks_server_known_reserve(unsigned max_conns)
{
	unsigned reserve = max_conns / KS_KNOWN_RESERVE_DIVISOR;

	return reserve > 0 ? reserve : max_conns > 0 ? 1 : 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int check_socket_dir(const char *dir, char *err, size_t err_len)
{
	struct stat st;

	if (lstat(dir, &st) != 0) {
		if (errno != ENOENT) {
			snprintf(err, err_len, "socket directory %s: %s", dir, strerror(errno));
			return -errno;
		}
		if (mkdir(dir, 0755) != 0) {
			snprintf(err, err_len, "socket directory %s: %s", dir, strerror(errno));
			return -errno;
		}
		if (lstat(dir, &st) != 0)
			return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, err_len, "socket directory %s: not a directory (or a symlink)", dir);
		return -EACCES;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		snprintf(err, err_len, "socket directory %s: owned by uid %u", dir,
			 (unsigned)st.st_uid);
		return -EACCES;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, err_len, "socket directory %s: writable by group or others", dir);
		return -EACCES;
	}
	return 0;
}

static int fill_sockaddr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	/* Never abstract: an absolute path that fits with its NUL. */
	if (path[0] != '/' || strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, path, strlen(path));
	return 0;
}

/* Remove a socket file left by a dead daemon; refuse anything else. */
static int clear_stale(const char *path, const struct sockaddr_un *sun, char *err,
		       size_t err_len)
{
	struct stat st;
	int fd, live;

	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, err_len, "%s exists and is not a socket; not replacing it", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0;
	close(fd);
	if (live) {
		snprintf(err, err_len, "%s: another keysvcd is listening there", path);
		return -EADDRINUSE;
	}
	if (unlink(path) != 0 && errno != ENOENT)
		return -errno;
	ks_info("removed stale socket %s", path);
	return 0;
}

int ks_server_listen(const struct ks_server_config *cfg, char *err, size_t err_len)
{
	struct sockaddr_un sun;
	char dirbuf[PATH_MAX];
	mode_t old_mask;
	int fd = -1, r;

	if (fill_sockaddr(cfg->socket_path, &sun) != 0) {
		snprintf(err, err_len, "socket path must be absolute and shorter than %zu bytes",
			 sizeof(sun.sun_path));
		return -ENAMETOOLONG;
	}
	snprintf(dirbuf, sizeof(dirbuf), "%s", cfg->socket_path);
	if ((r = check_socket_dir(dirname(dirbuf), err, err_len)) != 0)
		return r;
	if ((r = clear_stale(cfg->socket_path, &sun, err, err_len)) != 0) {
		if (err[0] == '\0')
			snprintf(err, err_len, "%s: %s", cfg->socket_path, strerror(-r));
		return r;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
		r = -errno;
		snprintf(err, err_len, "socket: %s", strerror(errno));
		return r;
	}
	/* No moment where the socket exists with wider permissions than asked. */
	old_mask = umask(0177);
	r = bind(fd, (const struct sockaddr *)&sun, sizeof(sun));
	umask(old_mask);
	if (r != 0) {
		r = -errno;
		snprintf(err, err_len, "bind %s: %s", cfg->socket_path, strerror(errno));
		goto fail;
	}
	if (cfg->has_socket_gid && chown(cfg->socket_path, (uid_t)-1, cfg->socket_gid) != 0) {
		r = -errno;
		snprintf(err, err_len, "chown %s: %s", cfg->socket_path, strerror(errno));
		goto fail;
	}
	if (chmod(cfg->socket_path, cfg->socket_mode) != 0) {
		r = -errno;
		snprintf(err, err_len, "chmod %s: %s", cfg->socket_path, strerror(errno));
		goto fail;
	}
	if (listen(fd, SOMAXCONN) != 0) {
		r = -errno;
		snprintf(err, err_len, "listen: %s", strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	unlink(cfg->socket_path);
	return r;
}

static int peer_identity(int fd, struct ks_peer *peer)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t groups[KS_PEER_MAX_GROUPS];

	memset(peer, 0, sizeof(*peer));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred))
		return -errno ? -errno : -EPROTO;
	peer->uid = cred.uid;
	peer->gid = cred.gid;
	peer->pid = cred.pid;
	len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
		peer->ngroups = len / sizeof(gid_t);
		memcpy(peer->groups, groups, peer->ngroups * sizeof(gid_t));
	} else if (errno == ERANGE) {
		/* More groups than we keep: rules naming the rest will not match, which denies. */
		ks_warn("uid %u has more than %d groups; only the primary group is used",
			(unsigned)peer->uid, KS_PEER_MAX_GROUPS);
	}
	return 0;
}

static void conn_unlink(struct ks_server *srv, struct ks_conn *c)
{
	pthread_mutex_lock(&srv->lock);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	srv->nconns--;
	srv->nunknown -= !c->known;
	if (srv->nconns == 0)
		pthread_cond_broadcast(&srv->drained);
	pthread_mutex_unlock(&srv->lock);
}

static void *conn_thread(void *arg)
{
	struct ks_conn *c = arg;
	struct ks_server *srv = c->srv;
	unsigned idle_ms = srv->cfg->idle_timeout_ms;
	int frame_ms = (int)srv->cfg->frame_timeout_ms;
	struct ks_buf body;
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	int r;

	ks_buf_init(&body, KS_FRAME_MAX);
	/*
	 * A peer no rule names has nothing to wait for: it gets one answer
	 * (denied, audited by the dispatcher) and as little time for its
	 * request as any request gets.
	 */
	if (!c->known && (unsigned)frame_ms < idle_ms)
		idle_ms = (unsigned)frame_ms;
	for (;;) {
		/* Idle time between requests and the time one request takes are bounded apart. */
		r = ks_frame_read_deadline(c->fd, &body, (int)idle_ms, frame_ms);
		if (r == -ETIME) {
			ks_info("uid %u pid %d: idle for %u ms; closing",
				(unsigned)c->peer.uid, (int)c->peer.pid, idle_ms);
			break;
		}
		if (r == -EBADMSG || r == -EMSGSIZE) {
			/* The stream is out of sync: answer once, then hang up. */
			if (ks_dispatch_frame_error(srv->ctx, &c->peer,
						    r == -EBADMSG ? "zero-length frame" :
						    "frame longer than 65536 bytes",
						    &resp, &resp_len) == 0)
				ks_frame_write_deadline(c->fd, resp, resp_len, frame_ms);
			break;
		}
		if (r == -ETIMEDOUT) {
			ks_notice("uid %u pid %d: request frame not complete within %d ms; closing",
				  (unsigned)c->peer.uid, (int)c->peer.pid, frame_ms);
			break;
		}
		if (r != 0) {
			if (r != -ECONNRESET)
				ks_debug("uid %u pid %d: connection closed: %s",
					 (unsigned)c->peer.uid, (int)c->peer.pid, strerror(-r));
			break;
		}
		if (ks_dispatch(srv->ctx, &c->peer, body.data, body.len, &resp, &resp_len) != 0)
			break;
		/*
		 * The next request is not read before this answer is gone, so a
		 * peer that never reads holds one response and the socket buffer,
		 * never a queue.
		 */
		r = ks_frame_write_deadline(c->fd, resp, resp_len, frame_ms);
		free(resp);
		resp = NULL;
		if (r == -ETIMEDOUT)
			ks_notice("uid %u pid %d: response not read within %d ms; closing",
				  (unsigned)c->peer.uid, (int)c->peer.pid, frame_ms);
		if (r != 0)
			break;
		if (!c->known) {
			ks_debug("uid %u pid %d: no policy rule names this peer; closing after "
				 "its first answer", (unsigned)c->peer.uid, (int)c->peer.pid);
			break;
		}
	}
	free(resp);
	ks_buf_free(&body);
	/*
	 * Threads are detached and shutdown waits only until the last one has
	 * unlinked itself: free this thread's OpenSSL state (its DRBG, made by
	 * key.generate or a CSR) before that, or main() may exit with it still
	 * allocated.
	 */
	OPENSSL_thread_stop();
	/* Unlinked first, so shutdown_conns() never touches a closed (maybe reused) fd. */
	conn_unlink(srv, c);
	close(c->fd);
	free(c);
	return NULL;
}

/* Connections of @uid now; called with srv->lock held. O(connections), bounded by max_clients. */
static unsigned conns_of_uid(const struct ks_server *srv, uid_t uid)
{
	unsigned n = 0;

	for (const struct ks_conn *c = srv->conns; c != NULL; c = c->next)
		n += c->peer.uid == uid;
	return n;
}

/*
 * Tell a connection over a limit why, in one frame, and close it. The
 * socket is fresh and non-blocking and the frame small, so the send never
 * waits; if it cannot go out at once the peer just sees the close.
 */
static void refuse(struct ks_server *srv, int fd, const struct ks_peer *peer,
		   const char *why, unsigned limit)
{
	char msg[KS_MESSAGE_MAX];
	uint8_t *body = NULL, *frame;
	size_t n = 0;
	int r;
	int64_t now = now_ms();

	/* Every refusal is audited; the diagnostic log gets at most one line a second. */
	snprintf(msg, sizeof(msg), "%s (limit %u); try again later", why, limit);
	r = ks_dispatch_refusal(srv->ctx, peer, msg, &body, &n);
	/* Logged before the peer hears of it, so the line exists once it does. */
	if (now - srv->refusal_logged_ms >= KS_REFUSAL_LOG_INTERVAL_MS) {
		/* A peer reconnecting in a loop must not flood the log: one line a second. */
		ks_warn("uid %u pid %d: %s (limit %u); closing%s", (unsigned)peer->uid,
			(int)peer->pid, why, limit,
			srv->refusals_unlogged > 0 ? " (and more refusals not logged)" : "");
		srv->refusal_logged_ms = now;
		srv->refusals_unlogged = 0;
	} else {
		srv->refusals_unlogged++;
	}
	/* One send of header and body: the peer reads the whole frame or nothing. */
	if (r == 0 && (frame = malloc(KS_FRAME_HDR + n)) != NULL) {
		ks_frame_header_encode(frame, n);
		memcpy(frame + KS_FRAME_HDR, body, n);
		(void)send(fd, frame, KS_FRAME_HDR + n, MSG_DONTWAIT | MSG_NOSIGNAL);
		free(frame);
	}
	free(body);
	close(fd);
}

/*
 * Accept one connection and start its thread. 0 (also when the connection
 * was refused or its peer had already gone), or the negative errno of an
 * accept() that failed for lack of resources (-EMFILE, -ENFILE, -ENOBUFS,
 * -ENOMEM), for the caller to back off.
 */
static int accept_one(struct ks_server *srv, int listen_fd)
{
	pthread_attr_t attr;
	pthread_t tid;
	struct ks_conn *c;
	unsigned same_uid;
	int fd;

	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			return -errno;
		return 0;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	c->fd = fd;
	c->srv = srv;
	if (peer_identity(fd, &c->peer) != 0) {
		ks_warn("cannot read peer credentials; closing");
		close(fd);
		free(c);
		return 0;
	}
	c->known = ks_ctx_knows_peer(srv->ctx, &c->peer);
	pthread_mutex_lock(&srv->lock);
	if (srv->nconns >= srv->max_conns) {
		pthread_mutex_unlock(&srv->lock);
		refuse(srv, fd, &c->peer, "too many connections", srv->max_conns);
		free(c);
		return 0;
	}
	/* The rest is kept for peers the policy names, however many others connect. */
	if (!c->known && srv->nunknown >= srv->max_unknown) {
		pthread_mutex_unlock(&srv->lock);
		refuse(srv, fd, &c->peer, "too many connections from peers no policy rule names",
		       srv->max_unknown);
		free(c);
		return 0;
	}
	same_uid = conns_of_uid(srv, c->peer.uid);
	if (same_uid >= srv->cfg->max_clients_per_uid) {
		pthread_mutex_unlock(&srv->lock);
		refuse(srv, fd, &c->peer, "too many connections for this uid",
		       srv->cfg->max_clients_per_uid);
		free(c);
		return 0;
	}
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	srv->nunknown += !c->known;
	pthread_mutex_unlock(&srv->lock);

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, KS_THREAD_STACK);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&tid, &attr, conn_thread, c) != 0) {
		ks_warn("cannot start a connection thread; closing");
		close(fd);
		conn_unlink(srv, c);
		free(c);
	}
	pthread_attr_destroy(&attr);
	return 0;
}

/* Descriptors open now; -1 if /proc cannot tell. */
static int open_descriptors(void)
{
	struct dirent *de;
	DIR *dir;
	int n = 0;

	if ((dir = opendir("/proc/self/fd")) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dir);
	return n - 1;   /* the directory's own */
}

/*
 * How many connections the descriptor limit allows with cfg->fd_reserve
 * kept free: a connection holds one descriptor, and the token needs some
 * of its own for every operation. Without them SoftHSM, for one, takes
 * keys it cannot open for keys that are gone. 0 if none are left.
 */
static unsigned connection_budget(const struct ks_server_config *cfg)
{
	struct rlimit rl;
	int used = open_descriptors();
	unsigned long long avail;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return cfg->max_clients;
	if (used < 0)
		used = 64;
	if (rl.rlim_cur <= (rlim_t)used + cfg->fd_reserve)
		return 0;
	avail = (unsigned long long)rl.rlim_cur - (unsigned long long)used - cfg->fd_reserve;
	if (avail < cfg->max_clients) {
		ks_warn("the descriptor limit (%llu, %d in use, %u kept for the token) allows "
			"%llu connections: serving at most that many, not max_clients %u",
			(unsigned long long)rl.rlim_cur, used, cfg->fd_reserve, avail,
			cfg->max_clients);
		return (unsigned)avail;
	}
	return cfg->max_clients;
}

static void shutdown_conns(struct ks_server *srv)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += KS_SHUTDOWN_WAIT_MS / 1000;
	pthread_mutex_lock(&srv->lock);
	srv->stopping = 1;
	/* Wakes threads blocked in poll(); each closes its own fd. */
	for (struct ks_conn *c = srv->conns; c != NULL; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	while (srv->nconns > 0) {
		if (pthread_cond_timedwait(&srv->drained, &srv->lock, &deadline) == ETIMEDOUT) {
			ks_warn("%u connections still busy at shutdown", srv->nconns);
			break;
		}
	}
	pthread_mutex_unlock(&srv->lock);
}

int ks_server_run(int listen_fd, int signal_fd, struct ks_ctx *ctx,
		  const struct ks_server_config *cfg, ks_reload_fn reload,
		  void *reload_arg)
{
	struct ks_server *srvp;
	struct pollfd pfd[2];
	struct signalfd_siginfo si;
	/* Accept back-off: 0 when accepting normally. */
	int64_t resume_ms = 0;
	unsigned backoff_ms = 0, failed_accepts = 0, left;
	int timeout, r = 0;

	/* On the heap: if a thread is still stuck at shutdown it keeps using it. */
	if ((srvp = calloc(1, sizeof(*srvp))) == NULL)
		return -ENOMEM;
	srvp->ctx = ctx;
	srvp->cfg = cfg;
	if ((srvp->max_conns = connection_budget(cfg)) == 0) {
		ks_err("the descriptor limit leaves none for connections with %u kept for the "
		       "token; raise RLIMIT_NOFILE (LimitNOFILE=) or lower max_sessions", cfg->fd_reserve);
		/* As on every other return: the socket is ours to close (and its file, unless systemd's). */
		close(listen_fd);
		if (!cfg->socket_activated)
			unlink(cfg->socket_path);
		free(srvp);
		return -EMFILE;
	}
	srvp->max_unknown = srvp->max_conns - ks_server_known_reserve(srvp->max_conns);
	pthread_mutex_init(&srvp->lock, NULL);
	pthread_cond_init(&srvp->drained, NULL);
	pfd[0].fd = listen_fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = signal_fd;
	pfd[1].events = POLLIN;
	for (;;) {
		timeout = -1;
		if (backoff_ms > 0) {
			int64_t wait = resume_ms - now_ms();

			/* poll() skips a negative fd: the backlog waits, signals do not. */
			pfd[0].fd = wait > 0 ? -1 : listen_fd;
			timeout = wait > 0 ? (int)wait : -1;
		}
		pfd[0].revents = 0;
		if (poll(pfd, 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			ks_err("poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents & POLLIN) {
			if (read(signal_fd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo == SIGHUP) {
				ks_notice("SIGHUP: reloading");
				if (reload != NULL)
					reload(reload_arg);
				continue;
			}
			ks_notice("signal %u: shutting down", si.ssi_signo);
			ks_sd_notify("STOPPING=1");
			break;
		}
		if (!(pfd[0].revents & POLLIN))
			continue;
		if ((r = accept_one(srvp, listen_fd)) < 0) {
			/*
			 * Out of descriptors (or memory): polling again at once would
			 * spin, since the connection stays in the backlog. Pause, serve
			 * what is open, retry; one warning for the whole burst.
			 */
			if (failed_accepts++ == 0) {
				pthread_mutex_lock(&srvp->lock);
				left = srvp->nconns;
				pthread_mutex_unlock(&srvp->lock);
				ks_warn("accept: %s (%u connections open); pausing new connections",
					strerror(-r), left);
			}
			backoff_ms = backoff_ms == 0 ? KS_ACCEPT_BACKOFF_MIN_MS :
				     backoff_ms * 2 > KS_ACCEPT_BACKOFF_MAX_MS ?
				     KS_ACCEPT_BACKOFF_MAX_MS : backoff_ms * 2;
			resume_ms = now_ms() + backoff_ms;
			r = 0;
			continue;
		}
		if (failed_accepts > 0)
			ks_notice("accepting connections again (%u attempts failed while out of "
				  "resources)", failed_accepts);
		failed_accepts = 0;
		backoff_ms = 0;
		pfd[0].fd = listen_fd;
	}
	close(listen_fd);
	/* An activated socket's file belongs to systemd, which may pass it on again. */
	if (!cfg->socket_activated)
		unlink(cfg->socket_path);
	shutdown_conns(srvp);
	pthread_mutex_lock(&srvp->lock);
	left = srvp->nconns;
	pthread_mutex_unlock(&srvp->lock);
	/* Threads still running use the server struct; then it is left to process exit. */
	if (left == 0) {
		pthread_cond_destroy(&srvp->drained);
		pthread_mutex_destroy(&srvp->lock);
		free(srvp);
	}
	return left == 0 ? r : -EBUSY;
}
