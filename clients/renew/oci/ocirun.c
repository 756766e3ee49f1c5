#include "clients/renew/oci/ocirun.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clients/renew/common/procgroup.h"

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append what @fd has to @out up to its first line end; drop the rest. 0 at EOF, 1 if more may come. */
static int drain(int fd, char *out, size_t out_len, size_t *used, int *line_done)
{
	char buf[4096];
	ssize_t n;

	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 1 : 0;
		if (n == 0)
			return 0;
		for (ssize_t i = 0; i < n && !*line_done; i++) {
			if (buf[i] == '\n' || buf[i] == '\r' || *used + 1 >= out_len)
				*line_done = 1;
			else
				out[(*used)++] = buf[i];
		}
	}
}

int oci_run_first_line(const char *shell_cmd, long timeout_ms, char *out, size_t out_len, int *status)
{
	long long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	size_t used = 0;
	int pfd[2], line_done = 0, open_out = 1, timed_out = 0, r;
	pid_t pid;

	out[0] = '\0';
	*status = 0;
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -errno;
	if ((pid = fork()) < 0) {
		r = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return r;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* Its own group, so a timeout reaches whatever it started too. */
		setpgid(0, 0);
		if (nul >= 0)
			dup2(nul, STDIN_FILENO);
		dup2(pfd[1], STDOUT_FILENO);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", shell_cmd, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);   /* also here: whichever runs first, the group exists before a kill */
	close(pfd[1]);
	(void)fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	/* Until the leader exits: read its output as it comes so that it never blocks on a full pipe. */
	while (!ks_pgroup_leader_exited(pid)) {
		long long left = deadline - now_ms();
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };

		if (left <= 0) {
			timed_out = 1;
			break;
		}
		/* Once stdout is closed, poll() only paces the checks of the leader. */
		if (poll(open_out ? &p : NULL, open_out ? 1 : 0, left < 20 ? (int)left : 20) > 0)
			open_out = drain(pfd[0], out, out_len, &used, &line_done);
	}
	if (timed_out)
		(void)ks_pgroup_stop(pid, OCI_RUN_GRACE_MS);
	else
		kill(-pid, SIGKILL);
	if (open_out)
		(void)drain(pfd[0], out, out_len, &used, &line_done);
	out[used] = '\0';
	close(pfd[0]);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	return timed_out ? -ETIME : 0;
}
