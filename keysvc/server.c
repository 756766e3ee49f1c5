#include "keysvc/server.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto/frame.h"
#include "proto/log.h"

#define KS_THREAD_STACK (256 * 1024)
#define KS_SHUTDOWN_WAIT_MS 5000

struct ks_conn {
	int fd;
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
	int stopping;
};

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
	if (srv->nconns == 0)
		pthread_cond_broadcast(&srv->drained);
	pthread_mutex_unlock(&srv->lock);
}

static void *conn_thread(void *arg)
{
	struct ks_conn *c = arg;
	struct ks_server *srv = c->srv;
	int timeout = (int)srv->cfg->client_timeout_ms;
	struct ks_buf body;
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	int r;

	ks_buf_init(&body, KS_FRAME_MAX);
	for (;;) {
		r = ks_frame_read(c->fd, &body, timeout);
		if (r == -EBADMSG || r == -EMSGSIZE) {
			/* The stream is out of sync: answer once, then hang up. */
			if (ks_dispatch_frame_error(srv->ctx, &c->peer,
						    r == -EBADMSG ? "zero-length frame" :
						    "frame longer than 65536 bytes",
						    &resp, &resp_len) == 0)
				ks_frame_write(c->fd, resp, resp_len, timeout);
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
		r = ks_frame_write(c->fd, resp, resp_len, timeout);
		free(resp);
		resp = NULL;
		if (r != 0)
			break;
	}
	free(resp);
	ks_buf_free(&body);
	/* Unlinked first, so shutdown_conns() never touches a closed (maybe reused) fd. */
	conn_unlink(srv, c);
	close(c->fd);
	free(c);
	return NULL;
}

static void accept_one(struct ks_server *srv, int listen_fd)
{
	pthread_attr_t attr;
	pthread_t tid;
	struct ks_conn *c;
	int fd;

	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE) {
			/* Do not spin on a full descriptor table; the next poll round retries. */
			ks_warn("accept: %s", strerror(errno));
			poll(NULL, 0, 100);
		}
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->srv = srv;
	if (peer_identity(fd, &c->peer) != 0) {
		ks_warn("cannot read peer credentials; closing");
		close(fd);
		free(c);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	if (srv->nconns >= srv->cfg->max_clients) {
		pthread_mutex_unlock(&srv->lock);
		ks_warn("uid %u pid %d: too many connections (%u); closing",
			(unsigned)c->peer.uid, (int)c->peer.pid, srv->cfg->max_clients);
		close(fd);
		free(c);
		return;
	}
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
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
	unsigned left;
	int r = 0;

	/* On the heap: if a thread is still stuck at shutdown it keeps using it. */
	if ((srvp = calloc(1, sizeof(*srvp))) == NULL)
		return -ENOMEM;
	srvp->ctx = ctx;
	srvp->cfg = cfg;
	pthread_mutex_init(&srvp->lock, NULL);
	pthread_cond_init(&srvp->drained, NULL);
	pfd[0].fd = listen_fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = signal_fd;
	pfd[1].events = POLLIN;
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
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
			break;
		}
		if (pfd[0].revents & POLLIN)
			accept_one(srvp, listen_fd);
	}
	close(listen_fd);
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
