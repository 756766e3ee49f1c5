#include "tests/common/softhsm.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Runs setup-token.sh DIR LABEL; its stdout (whose last line names the
 * configuration) comes back in @out, its stderr goes to the test log.
 */
static int run_setup(const char *script, const char *dir, const char *label, char *out,
		     size_t out_len)
{
	int fds[2], status;
	size_t n = 0;
	ssize_t got;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) != 0)
		return -1;
	if ((pid = fork()) < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		if (dup2(fds[1], STDOUT_FILENO) < 0)
			_exit(127);
		execlp("bash", "bash", script, dir, label, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		got = read(fds[0], out + n, out_len - 1 - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		n += (size_t)got;
		if (n == out_len - 1) {
			/* Keep only the tail; the last line is what matters. */
			memmove(out, out + n / 2, n - n / 2);
			n -= n / 2;
		}
	}
	out[n] = '\0';
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The directory mkdtemp made: the parent of t->dir. */
static void remove_tree(struct ks_test_token *t)
{
	char base[PATH_MAX];
	char *slash;

	if (t->dir[0] == '\0' || getenv("KS_KEEP_TEST_DIRS") != NULL)
		return;
	snprintf(base, sizeof(base), "%s", t->dir);
	if ((slash = strrchr(base, '/')) == NULL || slash == base)
		return;
	*slash = '\0';
	if (strstr(base, "/keysvc-test.") == NULL)
		return;
	nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int ks_test_token_setup(struct ks_test_token *t, const char *label)
{
	const char *script = getenv("KS_SETUP_TOKEN");
	const char *module = getenv("KS_SOFTHSM_MODULE");
	const char *tmp = getenv("TMPDIR");
	char base[PATH_MAX], out[4096], want[PATH_MAX + 32], *last;
	ssize_t n;
	int fd;

	memset(t, 0, sizeof(*t));
	if (script == NULL) {
		fprintf(stderr, "softhsm fixture: KS_SETUP_TOKEN is not set\n");
		return -1;
	}
	if (label == NULL || strlen(label) == 0 || strlen(label) >= sizeof(t->label)) {
		fprintf(stderr, "softhsm fixture: a token label has 1 to 32 characters\n");
		return -1;
	}
	snprintf(t->module, sizeof(t->module), "%s",
		 module != NULL ? module : "/usr/lib/softhsm/libsofthsm2.so");
	snprintf(t->label, sizeof(t->label), "%s", label);
	if (snprintf(base, sizeof(base), "%s/keysvc-test.XXXXXX",
		     tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp") >= (int)sizeof(base)) {
		fprintf(stderr, "softhsm fixture: TMPDIR is too long\n");
		return -1;
	}
	if (mkdtemp(base) == NULL) {
		fprintf(stderr, "softhsm fixture: mkdtemp %s: %s\n", base, strerror(errno));
		return -1;
	}
	/* The daemon tests drop to nobody, who must reach the socket below this. */
	chmod(base, 0711);
	if (snprintf(t->dir, sizeof(t->dir), "%s/token", base) >= (int)sizeof(t->dir) ||
	    snprintf(t->conf, sizeof(t->conf), "%s/softhsm2.conf", t->dir) >= (int)sizeof(t->conf) ||
	    snprintf(t->pin_file, sizeof(t->pin_file), "%s/pin", t->dir) >= (int)sizeof(t->pin_file)) {
		fprintf(stderr, "softhsm fixture: path too long\n");
		rmdir(base);
		memset(t->dir, 0, sizeof(t->dir));
		return -1;
	}
	if (run_setup(script, t->dir, label, out, sizeof(out)) != 0) {
		fprintf(stderr, "softhsm fixture: %s %s %s failed\n", script, t->dir, label);
		goto fail;
	}
	/* The script's contract: the last line names the configuration it wrote. */
	while (strlen(out) > 0 && out[strlen(out) - 1] == '\n')
		out[strlen(out) - 1] = '\0';
	last = strrchr(out, '\n');
	last = last != NULL ? last + 1 : out;
	snprintf(want, sizeof(want), "SOFTHSM2_CONF=%s", t->conf);
	if (strcmp(last, want) != 0) {
		fprintf(stderr, "softhsm fixture: setup-token.sh ended with \"%s\", not \"%s\"\n",
			last, want);
		goto fail;
	}
	if (setenv("SOFTHSM2_CONF", t->conf, 1) != 0)
		goto fail;
	if ((fd = open(t->pin_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		fprintf(stderr, "softhsm fixture: %s: %s\n", t->pin_file, strerror(errno));
		goto fail;
	}
	n = read(fd, t->pin, sizeof(t->pin) - 1);
	close(fd);
	if (n > 0 && t->pin[n - 1] == '\n')
		n--;
	if (n <= 0) {
		fprintf(stderr, "softhsm fixture: %s is empty\n", t->pin_file);
		goto fail;
	}
	t->pin_len = (size_t)n;
	t->pin[n] = '\0';
	return 0;
fail:
	remove_tree(t);
	explicit_bzero(t->pin, sizeof(t->pin));
	t->pin_len = 0;
	memset(t->dir, 0, sizeof(t->dir));
	return -1;
}

void ks_test_token_config(const struct ks_test_token *t, struct ks_token_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->module_path = t->module;
	cfg->token_label = t->label;
	cfg->pin = t->pin;
	cfg->pin_len = t->pin_len;
}

void ks_test_token_teardown(struct ks_test_token *t)
{
	remove_tree(t);
	explicit_bzero(t->pin, sizeof(t->pin));
	t->pin_len = 0;
}

int ks_test_faultp11_token_setup(struct ks_test_token *t, const char *label, char *count,
				 size_t count_len)
{
	if (getenv("KS_FAULTP11") == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set (meson test sets it)\n");
		return -1;
	}
	if (ks_test_token_setup(t, label) != 0)
		return -1;
	if ((size_t)snprintf(count, count_len, "%s/calls", t->dir) >= count_len) {
		fprintf(stderr, "%s/calls: path too long\n", t->dir);
		return -1;
	}
	setenv("KS_FAULTP11_TARGET", t->module, 1);
	setenv("KS_FAULTP11_COUNT", count, 1);
	return 0;
}

void ks_test_faultp11_token_teardown(struct ks_test_token *t)
{
	unsetenv("KS_FAULTP11_COUNT");
	ks_test_token_teardown(t);
}

int ks_test_count_lines(const char *path, const char *line)
{
	char buf[256];
	size_t len = strlen(line);
	FILE *f = fopen(path, "r");
	int n = 0;

	if (f == NULL)
		return 0;
	while (fgets(buf, sizeof(buf), f) != NULL)
		n += strncmp(buf, line, len) == 0 && (buf[len] == '\n' || buf[len] == '\0');
	fclose(f);
	return n;
}
