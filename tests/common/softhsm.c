#include "tests/common/softhsm.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int run_setup(const char *script, const char *dir, const char *label)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* The script's chatter goes to the test log; its last line is not needed here. */
		int devnull = open("/dev/null", O_WRONLY);

		if (devnull >= 0)
			dup2(devnull, STDOUT_FILENO);
		execlp("bash", "bash", script, dir, label, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int ks_test_token_setup(struct ks_test_token *t, const char *label)
{
	const char *script = getenv("KS_SETUP_TOKEN");
	const char *module = getenv("KS_SOFTHSM_MODULE");
	const char *tmp = getenv("TMPDIR");
	char base[PATH_MAX];
	ssize_t n;
	int fd;

	memset(t, 0, sizeof(*t));
	if (script == NULL) {
		fprintf(stderr, "softhsm fixture: KS_SETUP_TOKEN is not set\n");
		return -1;
	}
	snprintf(t->module, sizeof(t->module), "%s",
		 module ? module : "/usr/lib/softhsm/libsofthsm2.so");
	snprintf(t->label, sizeof(t->label), "%s", label);
	snprintf(base, sizeof(base), "%s/keysvc-test.XXXXXX", tmp ? tmp : "/tmp");
	if (mkdtemp(base) == NULL) {
		fprintf(stderr, "softhsm fixture: mkdtemp: %s\n", strerror(errno));
		return -1;
	}
	/* The daemon tests drop to nobody, who must reach the socket below this. */
	chmod(base, 0711);
	if (snprintf(t->dir, sizeof(t->dir), "%s/token", base) >= (int)sizeof(t->dir) ||
	    snprintf(t->conf, sizeof(t->conf), "%s/softhsm2.conf", t->dir) >= (int)sizeof(t->conf) ||
	    snprintf(t->pin_file, sizeof(t->pin_file), "%s/pin", t->dir) >= (int)sizeof(t->pin_file)) {
		fprintf(stderr, "softhsm fixture: path too long\n");
		return -1;
	}
	if (run_setup(script, t->dir, label) != 0) {
		fprintf(stderr, "softhsm fixture: %s %s failed\n", script, t->dir);
		return -1;
	}
	if (setenv("SOFTHSM2_CONF", t->conf, 1) != 0)
		return -1;
	if ((fd = open(t->pin_file, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, t->pin, sizeof(t->pin) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	t->pin_len = (size_t)n;
	t->pin[n] = '\0';
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void ks_test_token_teardown(struct ks_test_token *t)
{
	char base[PATH_MAX];
	char *slash;

	if (t->dir[0] != '\0') {
		if (snprintf(base, sizeof(base), "%s", t->dir) >= (int)sizeof(base))
			return;
		if ((slash = strrchr(base, '/')) != NULL)
			*slash = '\0';
		if (getenv("KS_KEEP_TEST_DIRS") == NULL)
			nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
	explicit_bzero(t->pin, sizeof(t->pin));
	t->pin_len = 0;
}
