/*
 * The listening socket of keysvcd (ks_server_listen(), keysvc/server.h):
 * its directory checked, a stale socket file replaced, bound under a
 * tight umask. Apart from server.c, which serves the connections.
 */
#include "keysvc/server.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto/log.h"

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
