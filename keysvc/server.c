#include "keysvc/server.h"

#include <errno.h>
#include <limits.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "keysvc/sdnotify.h"
#include "keysvc/workerctl.h"
#include "pkcs11/token.h"
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
/* The accept loop's tick: idle connections swept, the worker limit adjusted. */
#define KS_TICK_MS 100
/* A controller window is at least a tick, and longer until it holds enough signatures. */
#define KS_WINDOW_MAX_NS 1000000000

/*
 * Who has a connection now: atomic, no lock (two lock round trips less per
 * request). The sweep moves it from CONN_WAIT to CONN_EXPIRED with a
 * compare-and-swap and a worker takes it with an exchange, so exactly one
 * of them wins: the sweep never shuts down a connection a worker serves.
 */
enum conn_state {
	CONN_WAIT,      /* in the epoll set, armed: no request in progress */
	CONN_BUSY,      /* a worker took it from the epoll set */
	CONN_THREAD,    /* handed to a thread of its own until its request is answered */
	CONN_EXPIRED,   /* swept for idleness while CONN_WAIT: the fd is shut down */
};

struct ks_conn {
	int fd;
	int known;              /* a policy rule named the peer at accept */
	int answered;           /* a request of it has been answered */
	int state;              /* enum conn_state, atomic */
	int64_t last_ms;        /* when it became CONN_WAIT: its idle time runs from here; atomic */
	/* A response a worker could not send at once: its unsent tail, for the thread. */
	uint8_t *pending;
	size_t pending_len;
	struct ks_peer peer;
	struct ks_server *srv;
	struct ks_conn *prev, *next;
};

struct ks_worker {
	struct ks_server *srv;
	unsigned idx;
	pthread_t tid;
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

	/* The event-driven part: armed connections, and the workers taking them. */
	int epfd;
	int stop_efd;           /* in the epoll set, level-triggered: readable once workers must end */
	struct ks_worker *workers;   /* wctl.cap entries, nworkers of them started */
	unsigned nworkers;
	unsigned limit;         /* workers with idx below it take requests; atomic reads */
	int workers_stop;       /* under lock */
	pthread_cond_t park;    /* a parked worker waits here for the limit to grow, or the end */
	uint64_t busy_ns;       /* all workers' time serving requests; atomic */
	unsigned nbusy;         /* workers serving a request now; atomic */
	uint64_t served;        /* requests workers finished; atomic */
	uint64_t served_seen;   /* at the last tick */
	/* The controller and its last readings, accept loop only. */
	struct ks_wctl wctl;
	int64_t tick_ns;
	uint64_t signs, sign_ns, busy_seen;
};

unsigned ks_server_known_reserve(unsigned max_conns)
{
	unsigned reserve = max_conns / KS_KNOWN_RESERVE_DIVISOR;

	return reserve > 0 ? reserve : max_conns > 0 ? 1 : 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ms(void)
{
	return now_ns() / 1000000;
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

/*
 * The wait for a connection's next request. A peer no rule names has
 * nothing to wait for: it gets one answer (denied, audited by the
 * dispatcher) and as little time for its request as any request gets.
 */
static unsigned conn_idle_ms(const struct ks_conn *c)
{
	unsigned idle_ms = c->srv->cfg->idle_timeout_ms, frame_ms = c->srv->cfg->frame_timeout_ms;

	return !c->known && frame_ms < idle_ms ? frame_ms : idle_ms;
}

/* The rest of a response a worker began, within @frame_ms of now (0: no bound). */
static int send_rest(int fd, const uint8_t *p, size_t n, int frame_ms)
{
	int64_t deadline = now_ms() + frame_ms;
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	ssize_t w;
	int left;

	while (n > 0) {
		if ((w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)) > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		left = frame_ms > 0 ? (int)(deadline - now_ms()) : -1;
		if (frame_ms > 0 && left <= 0)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, left) < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

static void conn_rearm(struct ks_conn *c);

/*
 * A connection whose peer is slow to send or to read, handed over by a
 * worker: today's per-connection logic (frame and response deadlines, idle
 * timeout) until one request is answered in full, then back to the epoll
 * set. Only this thread waits for such a peer.
 */
static void *conn_thread(void *arg)
{
	struct ks_conn *c = arg;
	struct ks_server *srv = c->srv;
	unsigned idle_ms = conn_idle_ms(c);
	int frame_ms = (int)srv->cfg->frame_timeout_ms;
	struct ks_buf body;
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	int r, back = 0;

	ks_buf_init(&body, KS_FRAME_MAX);
	if (c->pending != NULL) {
		/* A worker's answer the peer did not take at once: its deadline starts here. */
		r = send_rest(c->fd, c->pending, c->pending_len, frame_ms);
		free(c->pending);
		c->pending = NULL;
		if (r == -ETIMEDOUT)
			ks_notice("uid %u pid %d: response not read within %d ms; closing",
				  (unsigned)c->peer.uid, (int)c->peer.pid, frame_ms);
		if (r != 0)
			goto out;
		back = 1;
	}
	if (c->answered && !c->known) {
		ks_debug("uid %u pid %d: no policy rule names this peer; closing after "
			 "its first answer", (unsigned)c->peer.uid, (int)c->peer.pid);
		back = 0;
		goto out;
	}
	if (back)
		goto out;
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
		back = 1;
		break;
	}
out:
	free(resp);
	ks_buf_free(&body);
	if (back) {
		/* Answered in full: the connection waits in the epoll set again, without a thread. */
		OPENSSL_thread_stop();
		conn_rearm(c);
		return NULL;
	}
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

/* A connection a worker holds (CONN_BUSY) ends: unlinked first, as in conn_thread(). */
static void conn_end(struct ks_conn *c)
{
	conn_unlink(c->srv, c);
	close(c->fd);
	free(c->pending);
	free(c);
}

/*
 * Give the connection a thread of its own running conn_thread(): its peer
 * is slow to send or to read, and only that thread waits for it.
 */
static void conn_handoff(struct ks_conn *c)
{
	pthread_attr_t attr;
	pthread_t tid;
	int r;

	__atomic_store_n(&c->state, CONN_THREAD, __ATOMIC_RELEASE);
	/* Disarmed (one-shot): no worker sees it until conn_thread() arms it again. */
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, KS_THREAD_STACK);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&tid, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		ks_warn("cannot start a connection thread; closing");
		conn_end(c);
	}
}

/* Back into the epoll set, idle from now; a request already there fires at once. */
static void conn_rearm(struct ks_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c };

	__atomic_store_n(&c->last_ms, now_ms(), __ATOMIC_RELAXED);
	__atomic_store_n(&c->state, CONN_WAIT, __ATOMIC_RELEASE);
	if (epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
		/* Cannot happen for a registered fd; never leave a connection nobody watches. */
		__atomic_store_n(&c->state, CONN_BUSY, __ATOMIC_RELEASE);
		conn_end(c);
	}
}

enum fast { FAST_DONE, FAST_REARM, FAST_HANDOFF, FAST_CLOSE };

/* A request frame up to this size is seen whole by one peek (most are a few hundred bytes). */
#define FAST_PEEK 2048

/*
 * Serve one request of @c if its whole frame is in the socket already and
 * its answer fits in the socket at once; otherwise consume nothing (or
 * keep the unsent tail in c->pending) and say FAST_HANDOFF. Never waits.
 * Nothing queued: FAST_REARM.
 */
static enum fast serve_fast(struct ks_conn *c, struct ks_buf *body)
{
	struct ks_server *srv = c->srv;
	uint8_t hdr[KS_FRAME_HDR], peek[FAST_PEEK], *p, *resp = NULL;
	struct iovec iov[2];
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	size_t len, resp_len = 0, got = 0, total;
	ssize_t n;
	int avail = 0;

	/*
	 * One peek tells nothing queued (EAGAIN), the peer gone (0), and for
	 * a frame of at most FAST_PEEK bytes whether all of it is there.
	 */
	iov[0] = (struct iovec){ .iov_base = hdr, .iov_len = sizeof(hdr) };
	iov[1] = (struct iovec){ .iov_base = peek, .iov_len = sizeof(peek) };
	n = recvmsg(c->fd, &msg, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? FAST_REARM : FAST_CLOSE;
	if (n == 0)
		return FAST_CLOSE;
	/* A bad header is answered by conn_thread(), as it always was. */
	if ((size_t)n < sizeof(hdr) || ks_frame_header_decode(hdr, &len) != 0)
		return FAST_HANDOFF;
	if ((size_t)n < sizeof(hdr) + len) {
		/* A large frame may be all there beyond what the peek holds. */
		if (len <= sizeof(peek) || ioctl(c->fd, FIONREAD, &avail) != 0 ||
		    (size_t)avail < sizeof(hdr) + len)
			return FAST_HANDOFF;
	}
	ks_buf_reset(body);
	if (ks_buf_reserve(body, len, &p) != 0)
		return FAST_CLOSE;
	/* Header and body in one recvmsg(), exactly this frame: a request behind it stays queued. */
	while (got < sizeof(hdr) + len) {
		size_t h = got < sizeof(hdr) ? got : sizeof(hdr);

		iov[0] = (struct iovec){ .iov_base = hdr + h, .iov_len = sizeof(hdr) - h };
		iov[1] = (struct iovec){ .iov_base = p + (got - h), .iov_len = len - (got - h) };
		/* The peek saw these bytes: a recvmsg() that finds none means a broken socket. */
		if ((n = recvmsg(c->fd, &msg, MSG_DONTWAIT)) <= 0)
			return FAST_CLOSE;
		got += (size_t)n;
	}
	if (ks_dispatch(srv->ctx, &c->peer, body->data, body->len, &resp, &resp_len) != 0)
		return FAST_CLOSE;
	c->answered = 1;
	ks_frame_header_encode(hdr, resp_len);
	iov[0] = (struct iovec){ .iov_base = hdr, .iov_len = sizeof(hdr) };
	iov[1] = (struct iovec){ .iov_base = resp, .iov_len = resp_len };
	total = sizeof(hdr) + resp_len;
	n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		free(resp);
		return FAST_CLOSE;
	}
	if (n < 0)
		n = 0;
	if ((size_t)n < total) {
		/* The peer's buffer is full: its thread waits for it, under frame_timeout_ms. */
		c->pending_len = total - (size_t)n;
		if ((c->pending = malloc(c->pending_len)) == NULL) {
			free(resp);
			return FAST_CLOSE;
		}
		if ((size_t)n < sizeof(hdr)) {
			memcpy(c->pending, hdr + n, sizeof(hdr) - (size_t)n);
			memcpy(c->pending + sizeof(hdr) - (size_t)n, resp, resp_len);
		} else {
			memcpy(c->pending, resp + ((size_t)n - sizeof(hdr)), c->pending_len);
		}
		free(resp);
		return FAST_HANDOFF;
	}
	free(resp);
	if (!c->known) {
		ks_debug("uid %u pid %d: no policy rule names this peer; closing after "
			 "its first answer", (unsigned)c->peer.uid, (int)c->peer.pid);
		return FAST_CLOSE;
	}
	return FAST_DONE;
}

static void worker_serve_one(struct ks_server *srv, struct ks_conn *c, struct ks_buf *body);

/* A worker got @c from the epoll set (so it is disarmed): serve it, or pass it on. */
static void worker_serve(struct ks_server *srv, struct ks_conn *c, struct ks_buf *body)
{
	int64_t t0 = now_ns();

	__atomic_add_fetch(&srv->nbusy, 1, __ATOMIC_RELAXED);
	worker_serve_one(srv, c, body);
	__atomic_add_fetch(&srv->busy_ns, (uint64_t)(now_ns() - t0), __ATOMIC_RELAXED);
	__atomic_add_fetch(&srv->served, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&srv->nbusy, 1, __ATOMIC_RELAXED);
}

static void worker_serve_one(struct ks_server *srv, struct ks_conn *c, struct ks_buf *body)
{
	int expired, stopping;

	expired = __atomic_exchange_n(&c->state, CONN_BUSY, __ATOMIC_ACQ_REL) == CONN_EXPIRED;
	stopping = __atomic_load_n(&srv->stopping, __ATOMIC_RELAXED);
	if (expired) {
		ks_info("uid %u pid %d: idle for %u ms; closing",
			(unsigned)c->peer.uid, (int)c->peer.pid, conn_idle_ms(c));
		conn_end(c);
		return;
	}
	if (stopping) {
		conn_end(c);
		return;
	}
	switch (serve_fast(c, body)) {
	case FAST_DONE:
	case FAST_REARM:
		conn_rearm(c);
		break;
	case FAST_HANDOFF:
		conn_handoff(c);
		break;
	case FAST_CLOSE:
		conn_end(c);
		break;
	}
}

/*
 * One of the workers: takes one armed connection at a time, so a worker
 * that finishes a request and finds another ready goes on without sleeping.
 * Those at or above srv->limit park instead of waiting on the epoll set.
 */
static void *worker_main(void *arg)
{
	struct ks_worker *w = arg;
	struct ks_server *srv = w->srv;
	struct epoll_event ev;
	struct ks_buf body;
	int n, stop = 0;

	ks_buf_init(&body, KS_FRAME_MAX);
	while (!stop) {
		if (__atomic_load_n(&srv->limit, __ATOMIC_RELAXED) <= w->idx) {
			pthread_mutex_lock(&srv->lock);
			while (!srv->workers_stop && srv->limit <= w->idx)
				pthread_cond_wait(&srv->park, &srv->lock);
			stop = srv->workers_stop;
			pthread_mutex_unlock(&srv->lock);
			continue;
		}
		n = epoll_wait(srv->epfd, &ev, 1, -1);
		if (n < 0 && errno != EINTR) {
			ks_err("epoll_wait: %s", strerror(errno));
			break;
		}
		if (n <= 0)
			continue;
		if (ev.data.ptr == NULL)
			break;
		worker_serve(srv, ev.data.ptr, &body);
	}
	ks_buf_free(&body);
	OPENSSL_thread_stop();
	return NULL;
}

/* Start workers up to @limit (at most wctl.cap) and let them take requests. */
static void workers_set_limit(struct ks_server *srv, unsigned limit)
{
	pthread_attr_t attr;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, KS_THREAD_STACK);
	while (srv->nworkers < limit) {
		struct ks_worker *w = &srv->workers[srv->nworkers];

		w->srv = srv;
		w->idx = srv->nworkers;
		if (pthread_create(&w->tid, &attr, worker_main, w) != 0) {
			ks_warn("cannot start worker %u; serving with %u", w->idx, srv->nworkers);
			break;
		}
		srv->nworkers++;
	}
	pthread_attr_destroy(&attr);
	if (limit > srv->nworkers)
		limit = srv->nworkers;
	pthread_mutex_lock(&srv->lock);
	if (limit != srv->limit)
		ks_debug("workers: %u (were %u)", limit, srv->limit);
	/*
	 * Only a higher limit has parked workers to wake: a broadcast at every
	 * tick woke all of them ten times a second just to park again.
	 */
	if (limit > srv->limit)
		pthread_cond_broadcast(&srv->park);
	__atomic_store_n(&srv->limit, limit, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&srv->lock);
}

/*
 * The accept loop's tick: connections idle for their time are shut down
 * (the worker that gets the hang-up logs and closes them: only the holder
 * of a connection frees it), and the controller gets the window.
 */
static void server_tick(struct ks_server *srv)
{
	int64_t now = now_ns(), ms = now / 1000000;
	struct ks_wctl_window w = { 0 };
	uint64_t signs = 0, sign_ns = 0, served, busy = __atomic_load_n(&srv->busy_ns, __ATOMIC_RELAXED);
	unsigned idle;

	pthread_mutex_lock(&srv->lock);
	for (struct ks_conn *c = srv->conns; c != NULL; c = c->next) {
		idle = conn_idle_ms(c);
		int wait = CONN_WAIT;

		/* Under srv->lock: the holder unlinks it before closing, so the fd is still its. */
		if (idle > 0 && __atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == CONN_WAIT &&
		    ms - __atomic_load_n(&c->last_ms, __ATOMIC_RELAXED) >= idle &&
		    __atomic_compare_exchange_n(&c->state, &wait, CONN_EXPIRED, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			shutdown(c->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&srv->lock);
	served = __atomic_load_n(&srv->served, __ATOMIC_RELAXED);
	if (__atomic_load_n(&srv->nbusy, __ATOMIC_RELAXED) >= srv->limit && served == srv->served_seen) {
		ks_debug("workers: all %u busy and none done for %d ms; adding some", srv->limit,
			 KS_TICK_MS);
		workers_set_limit(srv, ks_wctl_stalled(&srv->wctl));
	}
	srv->served_seen = served;
	if (srv->cfg->token != NULL)
		ks_token_sign_stats(srv->cfg->token, &signs, &sign_ns);
	/* A slow token's window runs on until it says something, or a second passed. */
	if (signs - srv->signs < KS_WCTL_MIN_SIGNS && now - srv->tick_ns < KS_WINDOW_MAX_NS)
		return;
	w.signs = signs - srv->signs;
	w.sign_ns = sign_ns - srv->sign_ns;
	w.busy = now > srv->tick_ns ? (double)(busy - srv->busy_seen) / (double)(now - srv->tick_ns) : 0;
	w.window_ns = now > srv->tick_ns ? (uint64_t)(now - srv->tick_ns) : 0;
	srv->signs = signs;
	srv->sign_ns = sign_ns;
	srv->busy_seen = busy;
	srv->tick_ns = now;
	workers_set_limit(srv, ks_wctl_step(&srv->wctl, &w));
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
 * Accept one connection into the epoll set. 0 (also when the connection
 * was refused or its peer had already gone), or the negative errno of an
 * accept() that failed for lack of resources (-EMFILE, -ENFILE, -ENOBUFS,
 * -ENOMEM), for the caller to back off.
 */
static int accept_one(struct ks_server *srv, int listen_fd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT };
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
	c->state = CONN_WAIT;
	c->last_ms = now_ms();
	pthread_mutex_unlock(&srv->lock);

	/* Armed from here on: a worker may have it before epoll_ctl() returns. */
	ev.data.ptr = c;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		ks_warn("epoll_ctl: %s; closing", strerror(errno));
		conn_unlink(srv, c);
		close(fd);
		free(c);
	}
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
	__atomic_store_n(&srv->stopping, 1, __ATOMIC_RELAXED);
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
	int64_t resume_ms = 0, next_tick;
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
	pthread_cond_init(&srvp->park, NULL);
	ks_wctl_init(&srvp->wctl, cfg->workers_min > 0 ? cfg->workers_min : KS_WORKERS_MIN,
		     cfg->workers_max);
	srvp->epfd = epoll_create1(EPOLL_CLOEXEC);
	srvp->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srvp->workers = calloc(srvp->wctl.cap, sizeof(*srvp->workers));
	if (srvp->epfd < 0 || srvp->stop_efd < 0 || srvp->workers == NULL ||
	    epoll_ctl(srvp->epfd, EPOLL_CTL_ADD, srvp->stop_efd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = NULL }) != 0) {
		r = srvp->workers == NULL ? -ENOMEM : -errno;
		ks_err("cannot set up the workers: %s", strerror(-r));
		goto out;
	}
	workers_set_limit(srvp, srvp->wctl.limit);
	if (srvp->nworkers == 0) {
		r = -EAGAIN;
		ks_err("cannot start any worker thread");
		goto out;
	}
	srvp->tick_ns = now_ns();
	next_tick = now_ms() + KS_TICK_MS;
	pfd[0].fd = listen_fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = signal_fd;
	pfd[1].events = POLLIN;
	for (;;) {
		int64_t now = now_ms();

		if (now >= next_tick) {
			server_tick(srvp);
			next_tick = now + KS_TICK_MS;
		}
		timeout = (int)(next_tick - now);
		if (backoff_ms > 0) {
			int64_t wait = resume_ms - now;

			/* poll() skips a negative fd: the backlog waits, signals do not. */
			pfd[0].fd = wait > 0 ? -1 : listen_fd;
			if (wait > 0 && wait < timeout)
				timeout = (int)wait;
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
out:
	close(listen_fd);
	/* An activated socket's file belongs to systemd, which may pass it on again. */
	if (!cfg->socket_activated)
		unlink(cfg->socket_path);
	shutdown_conns(srvp);
	pthread_mutex_lock(&srvp->lock);
	left = srvp->nconns;
	srvp->workers_stop = 1;
	pthread_cond_broadcast(&srvp->park);
	pthread_mutex_unlock(&srvp->lock);
	/* Level-triggered and never read: every worker in epoll_wait() sees it. */
	if (srvp->stop_efd >= 0)
		(void)!write(srvp->stop_efd, &(uint64_t){ 1 }, sizeof(uint64_t));
	/* Threads still running use the server struct; then it is left to process exit. */
	if (left == 0) {
		for (unsigned i = 0; i < srvp->nworkers; i++)
			pthread_join(srvp->workers[i].tid, NULL);
		if (srvp->epfd >= 0)
			close(srvp->epfd);
		if (srvp->stop_efd >= 0)
			close(srvp->stop_efd);
		free(srvp->workers);
		pthread_cond_destroy(&srvp->park);
		pthread_cond_destroy(&srvp->drained);
		pthread_mutex_destroy(&srvp->lock);
		free(srvp);
	}
	return left == 0 ? r : -EBUSY;
}
