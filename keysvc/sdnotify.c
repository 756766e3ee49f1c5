#include "keysvc/sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A decimal unsigned number, no sign, no spaces, no trailing junk. */
static int parse_ulong(const char *s, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (s == NULL || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

static void unset_listen_env(void)
{
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
}

/* The bound name of @fd for log lines: a path, "@name" or "". */
static void socket_name(const struct sockaddr_un *sun, socklen_t len, char *path,
			size_t path_len)
{
	size_t n;

	if (path_len == 0)
		return;
	path[0] = '\0';
	if (len <= offsetof(struct sockaddr_un, sun_path))
		return;
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (sun->sun_path[0] == '\0')
		snprintf(path, path_len, "@%.*s", (int)(n - 1), sun->sun_path + 1);
	else
		snprintf(path, path_len, "%.*s", (int)strnlen(sun->sun_path, n), sun->sun_path);
}

static int check_listener(int fd, char *path, size_t path_len, char *err, size_t err_len)
{
	struct sockaddr_un sun;
	socklen_t len, sun_len;
	int v, flags;

	if (fcntl(fd, F_GETFD) < 0) {
		snprintf(err, err_len, "socket activation: fd %d is not open", fd);
		return -EBADF;
	}
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0) {
		int r = errno == ENOTSOCK ? -ENOTSOCK : -errno;

		snprintf(err, err_len, "socket activation: fd %d: %s", fd, strerror(-r));
		return r;
	}
	if (v != SOCK_STREAM) {
		snprintf(err, err_len, "socket activation: fd %d is not a stream socket "
			 "(ListenStream= is needed)", fd);
		return -ESOCKTNOSUPPORT;
	}
	memset(&sun, 0, sizeof(sun));
	sun_len = sizeof(sun);
	if (getsockname(fd, (struct sockaddr *)&sun, &sun_len) != 0) {
		int r = -errno;

		snprintf(err, err_len, "socket activation: getsockname: %s", strerror(errno));
		return r;
	}
	if (sun.sun_family != AF_UNIX) {
		snprintf(err, err_len, "socket activation: fd %d is not a Unix socket; "
			 "keysvcd identifies peers with SO_PEERCRED and serves only AF_UNIX", fd);
		return -EAFNOSUPPORT;
	}
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0 || v == 0) {
		snprintf(err, err_len, "socket activation: fd %d is not listening "
			 "(Accept=no is needed)", fd);
		return -EDESTADDRREQ;
	}
	/* The accept loop polls and must never block in accept(). */
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 || (flags = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
		int r = -errno;

		snprintf(err, err_len, "socket activation: fcntl: %s", strerror(errno));
		return r;
	}
	socket_name(&sun, sun_len, path, path_len);
	return 0;
}

int ks_sd_listen_fd(int *fd, char *path, size_t path_len, char *err, size_t err_len)
{
	const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
	unsigned long pid, nfds;
	int r;

	*fd = -1;
	if (path_len > 0)
		path[0] = '\0';
	if (pid_s == NULL && fds_s == NULL) {
		r = 0;
		goto out;
	}
	if (parse_ulong(pid_s, &pid) != 0 || pid == 0 || parse_ulong(fds_s, &nfds) != 0) {
		snprintf(err, err_len, "socket activation: malformed LISTEN_PID or LISTEN_FDS");
		r = -EINVAL;
		goto out;
	}
	/* Inherited from a parent that was activated itself: not ours. */
	if (pid != (unsigned long)getpid()) {
		r = 0;
		goto out;
	}
	if (nfds != 1) {
		snprintf(err, err_len, "socket activation: %lu sockets passed, keysvcd serves "
			 "exactly one (one ListenStream= in keysvcd.socket)", nfds);
		r = -EINVAL;
		goto out;
	}
	if ((r = check_listener(KS_SD_LISTEN_FDS_START, path, path_len, err, err_len)) != 0)
		goto out;
	*fd = KS_SD_LISTEN_FDS_START;
	r = 1;
out:
	unset_listen_env();
	return r;
}

int ks_sd_notify(const char *state)
{
	const char *addr = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	size_t addr_len;
	socklen_t sa_len;
	ssize_t n;
	int fd, r;

	if (addr == NULL || addr[0] == '\0')
		return 0;
	if (addr[0] != '/' && addr[0] != '@')
		return -EAFNOSUPPORT;
	addr_len = strlen(addr);
	/* A path needs room for its NUL; an abstract name has none but starts with one. */
	if (addr_len >= sizeof(sun.sun_path) || addr_len < 2)
		return -ENAMETOOLONG;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, addr, addr_len);
	if (addr[0] == '@')
		sun.sun_path[0] = '\0';
	/* An abstract name is exactly its bytes: no trailing NUL in the length. */
	sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + addr_len +
			     (addr[0] == '/' ? 1 : 0));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	do
		n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, sa_len);
	while (n < 0 && errno == EINTR);
	r = n < 0 ? -errno : 1;
	close(fd);
	return r;
}

unsigned long long ks_sd_monotonic_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}
