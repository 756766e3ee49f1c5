#include "tests/common/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TD_FRAME_MAX 65536u
#define TD_REQUEST_TIMEOUT_MS 10000

int64_t ks_td_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- files ------------------------------------------------------------- */

char *ks_td_read_file(const char *path, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf, *nb;
	ssize_t r;
	int fd;

	if (len != NULL)
		*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return NULL;
	if ((buf = malloc(cap + 1)) == NULL) {
		close(fd);
		return NULL;
	}
	for (;;) {
		if (n == cap) {
			cap *= 2;
			if ((nb = realloc(buf, cap + 1)) == NULL) {
				free(buf);
				close(fd);
				return NULL;
			}
			buf = nb;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			close(fd);
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

char *ks_td_daemon_log(const struct ks_td *d, size_t *len)
{
	return ks_td_read_file(d->daemon_log, len);
}

char *ks_td_audit_log(const struct ks_td *d, size_t *len)
{
	return ks_td_read_file(d->audit_log, len);
}

int ks_td_log_count(const struct ks_td *d, const char *needle)
{
	size_t len, nlen = strlen(needle);
	char *log = ks_td_daemon_log(d, &len);
	const char *p, *end;
	int count = 0;

	if (log == NULL || nlen == 0) {
		free(log);
		return 0;
	}
	end = log + len;
	for (p = log; (p = memmem(p, (size_t)(end - p), needle, nlen)) != NULL; p += nlen)
		count++;
	free(log);
	return count;
}

int ks_td_wait_log(const struct ks_td *d, const char *needle, int count, int timeout_ms)
{
	int64_t deadline = ks_td_now_ms() + timeout_ms;

	for (;;) {
		if (ks_td_log_count(d, needle) >= count)
			return 0;
		if (ks_td_now_ms() >= deadline) {
			fprintf(stderr, "daemon harness: \"%s\" not in the daemon log %d times "
				"after %d ms\n", needle, count, timeout_ms);
			return -1;
		}
		sleep_ms(20);
	}
}

static void print_log_tail(const struct ks_td *d)
{
	size_t len;
	char *log = ks_td_daemon_log(d, &len);
	const char *start;

	if (log == NULL) {
		fprintf(stderr, "daemon harness: no daemon log at %s\n", d->daemon_log);
		return;
	}
	start = len > 4000 ? log + len - 4000 : log;
	fprintf(stderr, "---- tail of %s ----\n%s---- end ----\n", d->daemon_log, start);
	free(log);
}

static int write_file_atomic(const char *path, const char *text, mode_t mode)
{
	char tmp[PATH_MAX + 8];
	size_t len = strlen(text), done = 0;
	ssize_t n;
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0) {
		fprintf(stderr, "daemon harness: %s: %s\n", tmp, strerror(errno));
		return -1;
	}
	while (done < len) {
		n = write(fd, text + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "daemon harness: write %s: %s\n", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return -1;
		}
		done += (size_t)n;
	}
	/* Exactly @mode whatever the umask. */
	if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
		fprintf(stderr, "daemon harness: %s: %s\n", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) != 0) {
		fprintf(stderr, "daemon harness: rename %s: %s\n", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* ---- configuration ----------------------------------------------------- */

int ks_td_write_config_raw(struct ks_td *d, const char *text)
{
	return write_file_atomic(d->config, text, 0600);
}

int ks_td_write_config(struct ks_td *d)
{
	json_error_t jerr;
	json_t *policy, *cfg;
	char *text;
	int r;

	if ((policy = json_loads(d->policy ? d->policy : "[]", 0, &jerr)) == NULL) {
		fprintf(stderr, "daemon harness: policy is not JSON: %s\n", jerr.text);
		return -1;
	}
	cfg = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}",
			"module", d->module[0] != '\0' ? d->module : d->token.module,
			"token", d->token.label,
			"state_dir", d->state_dir,
			"socket", d->socket_path,
			"audit_log", d->audit_log,
			"log_level", "debug",
			"policy", policy);
	if (cfg == NULL)
		return -1;
	if (!d->no_pin_file)
		json_object_set_new(cfg, "pin_file", json_string(d->pin_file));
	if (d->max_clients_per_uid != 0)
		json_object_set_new(cfg, "max_clients_per_uid", json_integer(d->max_clients_per_uid));
	if (d->idle_timeout_ms != 0)
		json_object_set_new(cfg, "idle_timeout_ms", json_integer(d->idle_timeout_ms));
	if (d->frame_timeout_ms != 0)
		json_object_set_new(cfg, "frame_timeout_ms", json_integer(d->frame_timeout_ms));
	if (d->client_timeout_ms != 0)
		json_object_set_new(cfg, "client_timeout_ms", json_integer(d->client_timeout_ms));
	if (d->max_clients != 0)
		json_object_set_new(cfg, "max_clients", json_integer(d->max_clients));
	if (d->audit_failure != NULL)
		json_object_set_new(cfg, "audit_failure", json_string(d->audit_failure));
	text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(cfg);
	if (text == NULL)
		return -1;
	r = write_file_atomic(d->config, text, 0600);
	free(text);
	return r;
}

int ks_td_set_policy(struct ks_td *d, const char *policy)
{
	char *p = strdup(policy);

	if (p == NULL)
		return -1;
	free(d->policy);
	d->policy = p;
	return ks_td_write_config(d);
}

static int path_join(char *out, size_t out_len, const char *dir, const char *name)
{
	if (snprintf(out, out_len, "%s/%s", dir, name) >= (int)out_len) {
		fprintf(stderr, "daemon harness: path too long: %s/%s\n", dir, name);
		return -1;
	}
	return 0;
}

int ks_td_init(struct ks_td *d, const char *label, const char *policy,
	       unsigned client_timeout_ms, unsigned max_clients)
{
	char *slash;

	memset(d, 0, sizeof(*d));
	if (ks_test_token_setup(&d->token, label) != 0)
		return -1;
	snprintf(d->dir, sizeof(d->dir), "%s", d->token.dir);
	if ((slash = strrchr(d->dir, '/')) == NULL || slash == d->dir) {
		fprintf(stderr, "daemon harness: unexpected token dir %s\n", d->token.dir);
		return -1;
	}
	*slash = '\0';
	/* nobody must be able to traverse to the socket, and nothing more. */
	if (chmod(d->dir, 0711) != 0) {
		fprintf(stderr, "daemon harness: chmod %s: %s\n", d->dir, strerror(errno));
		return -1;
	}
	if (path_join(d->run_dir, sizeof(d->run_dir), d->dir, "run") != 0 ||
	    path_join(d->socket_path, sizeof(d->socket_path), d->run_dir, "keysvc.sock") != 0 ||
	    path_join(d->config, sizeof(d->config), d->dir, "keysvcd.json") != 0 ||
	    path_join(d->audit_log, sizeof(d->audit_log), d->dir, "audit.log") != 0 ||
	    path_join(d->daemon_log, sizeof(d->daemon_log), d->dir, "daemon.log") != 0 ||
	    path_join(d->state_dir, sizeof(d->state_dir), d->dir, "state") != 0)
		return -1;
	snprintf(d->pin_file, sizeof(d->pin_file), "%s", d->token.pin_file);
	if (strlen(d->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fprintf(stderr, "daemon harness: socket path too long: %s (set TMPDIR shorter)\n",
			d->socket_path);
		return -1;
	}
	if (mkdir(d->state_dir, 0700) != 0) {
		fprintf(stderr, "daemon harness: mkdir %s: %s\n", d->state_dir, strerror(errno));
		return -1;
	}
	if (mkdir(d->run_dir, 0755) != 0 || chmod(d->run_dir, 0755) != 0) {
		fprintf(stderr, "daemon harness: mkdir %s: %s\n", d->run_dir, strerror(errno));
		return -1;
	}
	if ((d->policy = strdup(policy ? policy : "[]")) == NULL)
		return -1;
	d->client_timeout_ms = client_timeout_ms;
	d->max_clients = max_clients;
	return ks_td_write_config(d);
}

int ks_td_setup(struct ks_td *d, const char *label, const char *policy,
		unsigned client_timeout_ms, unsigned max_clients)
{
	if (ks_td_init(d, label, policy, client_timeout_ms, max_clients) != 0)
		return -1;
	return ks_td_start(d);
}

/* ---- process ----------------------------------------------------------- */

int ks_td_spawn(struct ks_td *d)
{
	return ks_td_spawn_with(d, NULL);
}

/* In the child, before exec: the environment and descriptors @opts asks for. */
static void apply_spawn_opts(const struct ks_td_spawn_opts *opts)
{
	char pid[32];

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	unsetenv("NOTIFY_SOCKET");
	unsetenv("CREDENTIALS_DIRECTORY");
	if (opts == NULL)
		return;
	if (opts->listen_fd >= 0) {
		if (opts->listen_fd != 3 && dup2(opts->listen_fd, 3) != 3)
			_exit(126);
		/* dup2() clears close-on-exec, but not when the fd already was 3. */
		if (fcntl(3, F_SETFD, 0) != 0)
			_exit(126);
		snprintf(pid, sizeof(pid), "%ld", (long)getpid());
		setenv("LISTEN_PID", pid, 1);
		setenv("LISTEN_FDS", opts->listen_fds != NULL ? opts->listen_fds : "1", 1);
		setenv("LISTEN_FDNAMES", "keysvcd.socket", 1);
	}
	if (opts->notify_socket != NULL)
		setenv("NOTIFY_SOCKET", opts->notify_socket, 1);
	if (opts->credentials_dir != NULL)
		setenv("CREDENTIALS_DIRECTORY", opts->credentials_dir, 1);
	if (opts->drop_cap_sys_ptrace && prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) != 0 &&
	    errno != EPERM)
		_exit(126);
}

int ks_td_spawn_with(struct ks_td *d, const struct ks_td_spawn_opts *opts)
{
	const char *exe = getenv("KS_KEYSVCD");
	sigset_t empty;
	pid_t pid;
	int logfd;

	if (exe == NULL) {
		fprintf(stderr, "daemon harness: KS_KEYSVCD is not set\n");
		return -1;
	}
	if (d->pid > 0) {
		fprintf(stderr, "daemon harness: a daemon is already running (pid %d)\n", (int)d->pid);
		return -1;
	}
	logfd = open(d->daemon_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0) {
		fprintf(stderr, "daemon harness: %s: %s\n", d->daemon_log, strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "daemon harness: fork: %s\n", strerror(errno));
		close(logfd);
		return -1;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull >= 0)
			dup2(devnull, STDIN_FILENO);
		dup2(logfd, STDOUT_FILENO);
		dup2(logfd, STDERR_FILENO);
		/* A clean slate: no blocked or ignored signals inherited from the test. */
		sigemptyset(&empty);
		sigprocmask(SIG_SETMASK, &empty, NULL);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		apply_spawn_opts(opts);
		execl(exe, exe, "-c", d->config, (char *)NULL);
		dprintf(STDERR_FILENO, "daemon harness: exec %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	close(logfd);
	d->pid = pid;
	d->status = -1;
	/*
	 * From here rather than in the child: under valgrind the child runs
	 * on valgrind's emulated setrlimit() until exec, which refuses to lower
	 * the hard limit. prlimit() on another process is the kernel's, and
	 * the limit holds across the exec whichever comes first.
	 */
	if (opts != NULL && opts->nofile > 0) {
		struct rlimit rl = { opts->nofile, opts->nofile };

		if (prlimit(pid, RLIMIT_NOFILE, &rl, NULL) != 0) {
			fprintf(stderr, "daemon harness: prlimit: %s\n", strerror(errno));
			kill(pid, SIGKILL);
			waitpid(pid, &d->status, 0);
			d->pid = 0;
			return -1;
		}
	}
	return 0;
}

int ks_td_alive(struct ks_td *d)
{
	int status;
	pid_t r;

	if (d->pid <= 0)
		return 0;
	r = waitpid(d->pid, &status, WNOHANG);
	if (r == 0)
		return 1;
	if (r == d->pid)
		d->status = status;
	d->pid = 0;
	return 0;
}

int ks_td_wait_exit(struct ks_td *d, int timeout_ms)
{
	int64_t deadline = ks_td_now_ms() + timeout_ms;

	for (;;) {
		if (!ks_td_alive(d))
			return 0;
		if (ks_td_now_ms() >= deadline)
			return -1;
		sleep_ms(10);
	}
}

int ks_td_wait_ready(struct ks_td *d, int timeout_ms)
{
	int64_t deadline = ks_td_now_ms() + timeout_ms;
	int fd;

	for (;;) {
		if (!ks_td_alive(d)) {
			fprintf(stderr, "daemon harness: keysvcd exited before listening (status 0x%x)\n",
				(unsigned)d->status);
			print_log_tail(d);
			return -1;
		}
		if ((fd = ks_td_connect(d)) >= 0) {
			close(fd);
			return 0;
		}
		if (ks_td_now_ms() >= deadline) {
			fprintf(stderr, "daemon harness: %s does not accept connections after %d ms\n",
				d->socket_path, timeout_ms);
			print_log_tail(d);
			return -1;
		}
		sleep_ms(20);
	}
}

int ks_td_start(struct ks_td *d)
{
	if (ks_td_spawn(d) != 0)
		return -1;
	return ks_td_wait_ready(d, 10000);
}

int ks_td_kill(struct ks_td *d, int sig, int timeout_ms)
{
	if (!ks_td_alive(d)) {
		fprintf(stderr, "daemon harness: no daemon to signal\n");
		return -1;
	}
	if (kill(d->pid, sig) != 0) {
		fprintf(stderr, "daemon harness: kill: %s\n", strerror(errno));
		return -1;
	}
	if (ks_td_wait_exit(d, timeout_ms) == 0)
		return d->status;
	fprintf(stderr, "daemon harness: keysvcd did not exit within %d ms of signal %d\n",
		timeout_ms, sig);
	print_log_tail(d);
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &d->status, 0);
	d->pid = 0;
	return -1;
}

int ks_td_stop(struct ks_td *d)
{
	int st = ks_td_kill(d, SIGTERM, 5000);

	if (st == -1)
		return -1;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "daemon harness: keysvcd ended with status 0x%x after SIGTERM\n",
			(unsigned)st);
		print_log_tail(d);
		return -1;
	}
	return 0;
}

int ks_td_reload(struct ks_td *d)
{
	if (!ks_td_alive(d) || kill(d->pid, SIGHUP) != 0) {
		fprintf(stderr, "daemon harness: cannot send SIGHUP\n");
		return -1;
	}
	return 0;
}

void ks_td_teardown(struct ks_td *d)
{
	if (ks_td_alive(d)) {
		kill(d->pid, SIGTERM);
		if (ks_td_wait_exit(d, 5000) != 0) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &d->status, 0);
			d->pid = 0;
		}
	}
	if (getenv("KS_KEEP_TEST_DIRS") != NULL && d->dir[0] != '\0')
		fprintf(stderr, "daemon harness: keeping %s\n", d->dir);
	ks_test_token_teardown(&d->token);
	free(d->policy);
	d->policy = NULL;
}

/* ---- wire -------------------------------------------------------------- */

int ks_td_connect_path(const char *path)
{
	struct sockaddr_un sun;
	int fd, r;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	while ((r = connect(fd, (struct sockaddr *)&sun, sizeof(sun))) != 0 && errno == EINTR)
		;
	if (r != 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int ks_td_connect(const struct ks_td *d)
{
	return ks_td_connect_path(d->socket_path);
}

int ks_td_send_raw(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = send(fd, p + done, len - done, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

int ks_td_send_frame(int fd, const void *body, size_t len)
{
	uint8_t hdr[4] = {
		(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,
	};
	int r;

	if ((r = ks_td_send_raw(fd, hdr, sizeof(hdr))) != 0)
		return r;
	return len ? ks_td_send_raw(fd, body, len) : 0;
}

/* Read exactly @n bytes before @deadline. *@got counts what came. */
static int read_exact(int fd, uint8_t *p, size_t n, int64_t deadline, size_t *got)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int64_t left;
	ssize_t r;

	while (*got < n) {
		left = deadline - ks_td_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		r = recv(fd, p + *got, n - *got, MSG_DONTWAIT);
		if (r > 0) {
			*got += (size_t)r;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			continue;
		return -errno;
	}
	return 0;
}

int ks_td_read_frame(int fd, int timeout_ms, char **body, size_t *len)
{
	int64_t deadline = ks_td_now_ms() + timeout_ms;
	uint8_t hdr[4];
	size_t got = 0, n;
	char *buf;
	int r;

	*body = NULL;
	*len = 0;
	r = read_exact(fd, hdr, sizeof(hdr), deadline, &got);
	if ((r == -EPIPE || r == -ECONNRESET) && got == 0)
		return -ECONNRESET;
	if (r != 0)
		return r;
	n = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
	if (n == 0 || n > TD_FRAME_MAX)
		return -EMSGSIZE;
	if ((buf = malloc(n + 1)) == NULL)
		return -ENOMEM;
	got = 0;
	if ((r = read_exact(fd, (uint8_t *)buf, n, deadline, &got)) != 0) {
		free(buf);
		return r == -ECONNRESET ? -EPIPE : r;
	}
	buf[n] = '\0';
	*body = buf;
	*len = n;
	return 0;
}

int ks_td_wait_closed(int fd, int timeout_ms)
{
	int64_t deadline = ks_td_now_ms() + timeout_ms;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char c;
	int64_t left;
	ssize_t r;

	for (;;) {
		left = deadline - ks_td_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		r = recv(fd, &c, 1, MSG_DONTWAIT);
		if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE)))
			return 0;
		if (r > 0)
			return -EPROTO;
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
	}
}

int ks_td_send_json(int fd, const char *json)
{
	return ks_td_send_frame(fd, json, strlen(json));
}

json_t *ks_td_read_json(int fd, int timeout_ms, int *err)
{
	json_error_t jerr;
	json_t *resp;
	char *body = NULL;
	size_t len = 0;
	int r;

	if (err != NULL)
		*err = 0;
	if ((r = ks_td_read_frame(fd, timeout_ms, &body, &len)) != 0) {
		if (err != NULL)
			*err = r;
		return NULL;
	}
	resp = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	free(body);
	if (resp == NULL || !json_is_object(resp)) {
		json_decref(resp);
		if (err != NULL)
			*err = -EPROTO;
		return NULL;
	}
	return resp;
}

json_t *ks_td_request(int fd, const char *json)
{
	json_error_t jerr;
	json_t *resp;
	char *body = NULL;
	size_t len = 0;
	int r;

	/*
	 * A connection refused over a limit gets its denied frame and the
	 * close at once, maybe before the request goes out: the frame is
	 * still there to read, as libkeysvc reads it (PROTOCOL.md, "Limits").
	 */
	if ((r = ks_td_send_frame(fd, json, strlen(json))) != 0 && r != -EPIPE && r != -ECONNRESET) {
		fprintf(stderr, "daemon harness: send %.80s: %s\n", json, strerror(-r));
		return NULL;
	}
	if ((r = ks_td_read_frame(fd, r != 0 ? 1000 : TD_REQUEST_TIMEOUT_MS, &body, &len)) != 0) {
		fprintf(stderr, "daemon harness: no answer to %.80s: %s\n", json, strerror(-r));
		return NULL;
	}
	resp = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (resp == NULL || !json_is_object(resp)) {
		fprintf(stderr, "daemon harness: answer to %.80s is not a JSON object: %.200s\n",
			json, body);
		json_decref(resp);
		resp = NULL;
	}
	free(body);
	return resp;
}

json_t *ks_td_request_once(const struct ks_td *d, const char *json)
{
	json_t *resp;
	int fd = ks_td_connect(d);

	if (fd < 0) {
		fprintf(stderr, "daemon harness: connect %s: %s\n", d->socket_path, strerror(-fd));
		return NULL;
	}
	resp = ks_td_request(fd, json);
	close(fd);
	return resp;
}

const char *ks_td_outcome(json_t *resp)
{
	json_t *ok = json_object_get(resp, "ok");

	if (json_is_true(ok))
		return "ok";
	if (json_is_false(ok) && json_is_string(json_object_get(resp, "error")))
		return json_string_value(json_object_get(resp, "error"));
	return NULL;
}

int ks_td_fixture_alloc(void **state)
{
	struct ks_td *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return -1;
	*state = d;
	return 0;
}

int ks_td_fixture_free(void **state)
{
	struct ks_td *d = *state;

	ks_td_teardown(d);
	free(d);
	return 0;
}
