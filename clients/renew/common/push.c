#include "clients/renew/common/push.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/inventory.h"
#include "clients/renew/common/procgroup.h"
#include "clients/renew/common/served.h"

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ks_hook_run(char *const argv[], int timeout_ms, char *reason, size_t len)
{
	long long deadline;
	int pfd[2], status = 0, child_errno = 0;
	ssize_t n;
	pid_t pid, w;

	if (pipe2(pfd, O_CLOEXEC) != 0) {
		snprintf(reason, len, "pipe: %s", strerror(errno));
		return -1;
	}
	if ((pid = fork()) < 0) {
		snprintf(reason, len, "fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		int e, nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* Its own group, so a timeout kills whatever it started too. */
		setpgid(0, 0);
		if (nul >= 0)
			dup2(nul, STDIN_FILENO);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		/* Only reached when exec failed: tell the parent why. */
		e = errno;
		(void)!write(pfd[1], &e, sizeof(e));
		_exit(127);
	}
	setpgid(pid, pid);   /* also here: whichever runs first, the group exists before a kill */
	close(pfd[1]);
	/* EOF when exec succeeded (the pipe is close-on-exec), an errno when not. */
	do
		n = read(pfd[0], &child_errno, sizeof(child_errno));
	while (n < 0 && errno == EINTR);
	close(pfd[0]);
	if (n == (ssize_t)sizeof(child_errno)) {
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		snprintf(reason, len, "cannot run %s: %s", argv[0], strerror(child_errno));
		return -1;
	}
	deadline = now_ms() + timeout_ms;
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			snprintf(reason, len, "waitpid: %s", strerror(errno));
			return -1;
		}
		if (now_ms() >= deadline) {
			int stopped = ks_pgroup_stop(pid, KS_HOOK_GRACE_MS);

			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			if (stopped)
				snprintf(reason, len, "%s timed out after %d s and was stopped (SIGTERM)",
					 argv[0], timeout_ms / 1000);
			else
				snprintf(reason, len, "%s timed out after %d s and was killed (SIGKILL, "
					 "%d s after SIGTERM)", argv[0], timeout_ms / 1000,
					 KS_HOOK_GRACE_MS / 1000);
			return -1;
		}
		(void)poll(NULL, 0, 20);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		snprintf(reason, len, "%s exited with status %d", argv[0], WEXITSTATUS(status));
	else
		snprintf(reason, len, "%s was killed by signal %d", argv[0], WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return -1;
}

static X509 *load_cert(const char *path)
{
	char err[KS_CI_ERR_MAX], *text = NULL;
	X509 *x = NULL;
	size_t n;

	if (ks_ci_read_file(path, &text, &n, err) == 0)
		(void)ks_ci_parse_one(text, n, &x, err);
	free(text);
	return x;
}

int ks_push_verify(const struct ks_conf *conf, const struct ks_conf_cert *cc, int wait_s, char *reason,
		   size_t len)
{
	char prev_path[4200], detail[KS_SERVED_ERR_MAX], first[KS_SERVED_ERR_MAX + 64];
	unsigned char done[KS_CONF_MAX_ENDPOINTS];
	long long deadline = now_ms() + (long long)wait_s * 1000;
	X509 *expected, *previous;
	size_t bad;
	int r;

	if ((expected = load_cert(cc->cert)) == NULL) {
		snprintf(reason, len, "cannot read the installed certificate %s", cc->cert);
		return -ENOENT;
	}
	snprintf(prev_path, sizeof(prev_path), "%s.prev", cc->cert);
	previous = load_cert(prev_path);
	memset(done, 0, sizeof(done));
	for (;;) {
		bad = 0;
		first[0] = '\0';
		for (size_t i = 0; i < cc->n_endpoints; i++) {
			const struct ks_conf_endpoint *ep = &cc->endpoints[i];
			enum ks_served s;

			if (done[i])
				continue;
			s = ks_served_check(ep->host, ep->port, ep->sni, conf->connect_timeout_ms,
					    conf->handshake_timeout_ms, expected, previous, detail);
			if (s == KS_SERVED_EXPECTED) {
				done[i] = 1;
				continue;
			}
			if (bad++ == 0)
				snprintf(first, sizeof(first), "%s port %d: %s", ep->host, ep->port, detail);
		}
		if (bad == 0 || now_ms() >= deadline)
			break;
		(void)poll(NULL, 0, 1000);
	}
	if (bad == 0) {
		r = 0;
	} else {
		snprintf(reason, len, "%zu of %zu endpoints do not serve the new certificate (%s)", bad,
			 cc->n_endpoints, first);
		r = -1;
	}
	X509_free(expected);
	X509_free(previous);
	return r;
}

int ks_renewal_init(struct ks_renewal *rn, const char *client, const char *inventory_opt,
		    const char *config_opt)
{
	char err[KS_CONF_ERR_MAX];

	memset(rn, 0, sizeof(*rn));
	rn->client = client;
	if (ks_conf_load(config_opt != NULL ? config_opt : KS_CONF_DEFAULT, config_opt != NULL, &rn->conf, err) < 0)
		return ks_die(KS_EXIT_CONFIG, "configuration: %s", err);
	rn->inventory = ks_inv_dir(inventory_opt, rn->conf.inventory);
	return 0;
}

/* The hook and the check of @cc; 0, or -1 with @reason. */
static int push(const struct ks_renewal *rn, const struct ks_conf_cert *cc, char *reason, size_t len)
{
	if (cc->reload != NULL) {
		if (ks_hook_run(cc->reload, cc->reload_timeout_s * 1000, reason, len) < 0)
			return -1;
		ks_say("reloaded: %s", cc->reload[0]);
	}
	if (cc->verify_after_reload) {
		if (ks_push_verify(&rn->conf, cc, cc->verify_wait_s, reason, len) != 0)
			return -1;
		ks_say("all %zu endpoints serve the new certificate", cc->n_endpoints);
	}
	return 0;
}

int ks_renewal_finish(struct ks_renewal *rn, int code, const char *cert, const char *key,
		      const char *ca_file, const char *crl)
{
	char err[KS_INV_ERR_MAX], reason[KS_PUSH_REASON_MAX];
	const struct ks_conf_cert *cc = NULL;
	enum ks_inv_outcome outcome;
	const char *why = NULL;
	char *abs;

	if (code == KS_EXIT_USAGE || code == KS_EXIT_CONFIG || code == KS_EXIT_NOT_DUE || cert == NULL)
		return code;
	if ((abs = ks_inv_abs_path(cert)) != NULL)
		cc = ks_conf_find(&rn->conf, abs);
	free(abs);
	if (code == 0) {
		outcome = KS_INV_OK;
		if (cc != NULL && push(rn, cc, reason, sizeof(reason)) != 0) {
			code = ks_die(KS_EXIT_PUSH_FAILED, "push failed: %s; %s is installed, the previous "
				      "certificate is kept as %s.prev for a rollback", reason, cert, cert);
			outcome = KS_INV_PUSH_FAILED;
			why = reason;
		}
	} else {
		outcome = KS_INV_FAILED;
		why = ks_last_error()[0] != '\0' ? ks_last_error() : "failed";
	}
	if (ks_inv_record(rn->inventory, cert, key, rn->client, ca_file, crl, outcome, why, time(NULL), err) < 0)
		(void)ks_die(0, "warning: the inventory (%s) is not updated: %s", rn->inventory, err);
	return code;
}

void ks_renewal_free(struct ks_renewal *rn)
{
	ks_conf_free(&rn->conf);
	memset(rn, 0, sizeof(*rn));
}
