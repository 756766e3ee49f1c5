#include "clients/renew/common/procgroup.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ks_pgroup_leader_exited(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
		if (errno != EINTR)
			return 1;
	return si.si_pid == pid;
}

int ks_pgroup_stop(pid_t pid, int grace_ms)
{
	long long until = now_ms() + (grace_ms > 0 ? grace_ms : 0);
	int exited;

	kill(-pid, SIGTERM);
	while (!(exited = ks_pgroup_leader_exited(pid)) && now_ms() < until)
		(void)poll(NULL, 0, 20);
	kill(-pid, SIGKILL);
	return exited;
}
