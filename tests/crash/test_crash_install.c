/*
 * Crash-safe certificate installs: ks_ci_install() is killed with SIGKILL
 * at each of its file-system calls in turn (N = 1, 2, ... until it
 * completes), through the ks_crash_preload.c shim and the ks_crash_install
 * driver. After every kill:
 *
 *  - PATH is the complete old certificate or the complete new one (absent
 *    only if there was none before), byte for byte; never missing, never
 *    torn;
 *  - PATH.prev is absent (only if it was before), or a complete
 *    certificate: the one it was, or the one PATH was; and whenever PATH is
 *    the new certificate, PATH.prev is the old one;
 *  - other entries in the directory can only be the installer's temporary
 *    files (PATH.ks-tmp.*), which no reader takes for the certificate.
 *
 * Then an install that is not killed (the next renewal) must complete and
 * leave exactly PATH and PATH.prev: temporary files of a killed install
 * are removed by the next one.
 *
 *   test_crash_install DRIVER SHIM
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static const char *driver, *shim;
static char *pem_older, *pem_old, *pem_new;

static char *make_cert(const char *cn, int days)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_non_null(k);
	assert_non_null(x);
	assert_non_null(name);
	assert_non_null(b);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), days);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, name);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * days);
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_X509(b, x), 1);
	n = BIO_get_mem_data(b, &data);
	out = malloc((size_t)n + 1);
	assert_non_null(out);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	BIO_free(b);
	X509_NAME_free(name);
	X509_free(x);
	EVP_PKEY_free(k);
	return out;
}

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* The file's contents (NUL-terminated), or NULL if it does not exist. */
static char *get(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;

	if (f == NULL) {
		assert_int_equal(errno, ENOENT);
		return NULL;
	}
	buf = malloc(65536);
	assert_non_null(buf);
	n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int same(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static const char *which(const char *s)
{
	return s == NULL ? "absent" : same(s, pem_new) ? "new" : same(s, pem_old) ? "old" :
	       same(s, pem_older) ? "older" : "TORN/UNKNOWN";
}

struct paths {
	char base[64], dir[128], cert[192], prev[192], newfile[192], log[192];
};

/*
 * Run the driver (with the shim killing at @crash_at, or not at all for 0).
 * Returns the wait status; the driver's stderr goes to p->log.
 */
static int run_driver(const struct paths *p, long crash_at)
{
	char at[32];
	pid_t pid;
	int status, fd;

	snprintf(at, sizeof(at), "%ld", crash_at);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		setenv("LD_PRELOAD", shim, 1);
		/* Under AddressSanitizer the runtime need not come first: the shim only forwards. */
		if (getenv("ASAN_OPTIONS") != NULL) {
			char opts[1024];

			snprintf(opts, sizeof(opts), "%s:verify_asan_link_order=0", getenv("ASAN_OPTIONS"));
			setenv("ASAN_OPTIONS", opts, 1);
		}
		if (crash_at > 0)
			setenv("KS_CRASH_AT", at, 1);
		else
			unsetenv("KS_CRASH_AT");
		execl(driver, driver, p->cert, p->newfile, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* The shim's line for the step it killed at, or "". */
static void killed_at(const struct paths *p, char *buf, size_t len)
{
	char *log = get(p->log), *l, *e;

	buf[0] = '\0';
	if (log == NULL)
		return;
	if ((l = strstr(log, "(SIGKILL): ")) != NULL) {
		l += strlen("(SIGKILL): ");
		if ((e = strchr(l, '\n')) != NULL)
			*e = '\0';
		/* Paths relative to the directory, for a readable table. */
		for (char *d; (d = strstr(l, p->dir)) != NULL;) {
			size_t cut = strlen(p->dir) + (d[strlen(p->dir)] == '/');

			if (cut == strlen(p->dir))
				*d++ = '.';
			memmove(d, d + cut - (cut == strlen(p->dir)), strlen(d + cut - (cut == strlen(p->dir))) + 1);
		}
		snprintf(buf, len, "%s", l);
	}
	free(log);
}

/* Entries other than cert.pem and cert.pem.prev; each must be a temporary file. */
static int leftovers(const struct paths *p, char *names, size_t len)
{
	DIR *d = opendir(p->dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	names[0] = '\0';
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
		    strcmp(e->d_name, "cert.pem") == 0 || strcmp(e->d_name, "cert.pem.prev") == 0)
			continue;
		/* Files of others: never touched. */
		if (strcmp(e->d_name, "cert.pem.backup") == 0 || strcmp(e->d_name, "cert.pem.ks-tmp.locked") == 0)
			continue;
		if (strncmp(e->d_name, "cert.pem.ks-tmp.", 16) != 0)
			fail_msg("unexpected entry %s in the certificate directory", e->d_name);
		n++;
		snprintf(names + strlen(names), len - strlen(names), "%s%s", n > 1 ? " " : "", e->d_name);
	}
	closedir(d);
	return n;
}

/*
 * @stale: also what an install killed between link() and rename() of .prev
 * leaves (PATH.ks-tmp.XXXXXX torn, PATH.ks-tmp.XXXXXX.prev linked to PATH).
 * Always: a user's file whose name looks like a temporary one.
 */
static void setup_dir(struct paths *p, int with_cert, int with_prev, int stale)
{
	char cmd[256], f[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(mkdir(p->dir, 0700), 0);
	if (with_cert)
		put(p->cert, pem_old);
	if (with_prev)
		put(p->prev, pem_older);
	snprintf(f, sizeof(f), "%s/cert.pem.backup", p->dir);
	put(f, "a user's file\n");
	if (stale) {
		snprintf(f, sizeof(f), "%s/cert.pem.ks-tmp.Stale1", p->dir);
		put(f, "-----BEGIN CERT");
		snprintf(cmd, sizeof(cmd), "%s/cert.pem.ks-tmp.Stale1.prev", p->dir);
		assert_int_equal(link(p->cert, cmd), 0);
	}
}

static void check_user_file(const struct paths *p)
{
	char f[300], *s;

	snprintf(f, sizeof(f), "%s/cert.pem.backup", p->dir);
	s = get(f);
	assert_true(same(s, "a user's file\n"));
	free(s);
}

static void crash_every_step(int with_cert, int with_prev, int stale, const char *title)
{
	struct paths p;
	long n, total = -1;
	char cmd[300];

	snprintf(p.base, sizeof(p.base), "/tmp/ks-crash.XXXXXX");
	assert_non_null(mkdtemp(p.base));
	snprintf(p.dir, sizeof(p.dir), "%s/certs", p.base);
	snprintf(p.cert, sizeof(p.cert), "%s/cert.pem", p.dir);
	snprintf(p.prev, sizeof(p.prev), "%s/cert.pem.prev", p.dir);
	snprintf(p.newfile, sizeof(p.newfile), "%s/new.pem", p.base);
	snprintf(p.log, sizeof(p.log), "%s/driver.log", p.base);
	put(p.newfile, pem_new);

	print_message("%s\n| N | killed before | cert.pem | cert.pem.prev | temporary files left | next install |\n"
		      "|---:|---|---|---|---|---|\n", title);
	for (n = 1; n < 200; n++) {
		char step[512], tmps[512], *cert, *prev, *log;
		int status;

		setup_dir(&p, with_cert, with_prev, stale);
		status = run_driver(&p, n);
		if (WIFEXITED(status)) {
			/* The install finished before step n: every step was covered. */
			assert_int_equal(WEXITSTATUS(status), 0);
			log = get(p.log);
			assert_non_null(log);
			assert_int_equal(sscanf(strstr(log, "steps ") ? strstr(log, "steps ") : "", "steps %ld", &total), 1);
			free(log);
			assert_int_equal(total, n - 1);
			break;
		}
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);
		killed_at(&p, step, sizeof(step));

		cert = get(p.cert);
		prev = get(p.prev);
		/* The certificate: old or new, whole; absent only if there was none. */
		if (with_cert)
			assert_true(same(cert, pem_old) || same(cert, pem_new));
		else
			assert_true(cert == NULL || same(cert, pem_new));
		/* .prev: whole; what it was, or the certificate that was replaced. */
		if (with_prev)
			assert_true(same(prev, pem_older) || same(prev, pem_old));
		else if (with_cert)
			assert_true(prev == NULL || same(prev, pem_old));
		else
			assert_null(prev);
		/* The new certificate is in place only with the old one kept. */
		if (with_cert && same(cert, pem_new))
			assert_true(same(prev, pem_old));
		leftovers(&p, tmps, sizeof(tmps));
		check_user_file(&p);

		/* The next run completes and cleans up after the killed one. */
		{
			char *cert_before = cert, *c2, *p2, after[512];

			status = run_driver(&p, 0);
			assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
			c2 = get(p.cert);
			p2 = get(p.prev);
			assert_true(same(c2, pem_new));
			if (cert_before != NULL)
				assert_true(same(p2, cert_before));
			assert_int_equal(leftovers(&p, after, sizeof(after)), 0);
			check_user_file(&p);
			print_message("| %ld | %s | %s | %s | %s | ok, nothing left |\n", n, step, which(cert_before),
				      which(prev), tmps[0] ? tmps : "none");
			free(c2);
			free(p2);
		}
		free(cert);
		free(prev);
	}
	assert_true(total > 0);
	print_message("(%ld steps, each killed once)\n\n", total);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p.base);
	assert_int_equal(system(cmd), 0);
}

static void test_first_install(void **state)
{
	(void)state;
	crash_every_step(0, 0, 0, "First install (no cert.pem yet)");
}

static void test_replace(void **state)
{
	(void)state;
	crash_every_step(1, 0, 0, "Renewal (cert.pem, no cert.pem.prev)");
}

static void test_replace_with_prev(void **state)
{
	(void)state;
	crash_every_step(1, 1, 0, "Renewal (cert.pem and an older cert.pem.prev)");
}

static void test_replace_after_crash(void **state)
{
	(void)state;
	crash_every_step(1, 1, 1, "Renewal after a killed one (its temporary files left; the cleanup killed too)");
}

/* A temporary file another installer holds locked (it is alive) is left alone. */
static void test_live_installer_untouched(void **state)
{
	struct paths p;
	char f[300], cmd[300], *s;
	int fd, status;

	(void)state;
	snprintf(p.base, sizeof(p.base), "/tmp/ks-crash.XXXXXX");
	assert_non_null(mkdtemp(p.base));
	snprintf(p.dir, sizeof(p.dir), "%s/certs", p.base);
	snprintf(p.cert, sizeof(p.cert), "%s/cert.pem", p.dir);
	snprintf(p.prev, sizeof(p.prev), "%s/cert.pem.prev", p.dir);
	snprintf(p.newfile, sizeof(p.newfile), "%s/new.pem", p.base);
	snprintf(p.log, sizeof(p.log), "%s/driver.log", p.base);
	put(p.newfile, pem_new);
	setup_dir(&p, 1, 0, 0);
	snprintf(f, sizeof(f), "%s/cert.pem.ks-tmp.Live01", p.dir);
	put(f, "being written");
	assert_true((fd = open(f, O_RDONLY)) >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	status = run_driver(&p, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(same((s = get(f)), "being written"));
	free(s);
	close(fd);
	/* Once its owner is gone, the next install removes it. */
	status = run_driver(&p, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_null(get(f));
	check_user_file(&p);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p.base);
	assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_install),
		cmocka_unit_test(test_replace),
		cmocka_unit_test(test_replace_with_prev),
		cmocka_unit_test(test_replace_after_crash),
		cmocka_unit_test(test_live_installer_untouched),
	};
	int r;

	if (argc != 3 || access(argv[1], X_OK) != 0 || access(argv[2], R_OK) != 0) {
		fprintf(stderr, "usage: test_crash_install DRIVER SHIM\n");
		return 2;
	}
	driver = argv[1];
	shim = argv[2];
	pem_older = make_cert("older.example", 10);
	pem_old = make_cert("old.example", 20);
	pem_new = make_cert("new.example", 30);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	free(pem_older);
	free(pem_old);
	free(pem_new);
	return r;
}
