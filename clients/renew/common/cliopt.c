#include "clients/renew/common/cliopt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/climsg.h"
#include "proto/file.h"

int ks_check_long_options(int argc, char *const argv[], const struct option *longopts)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *name;
		const struct option *o;
		size_t n;

		if (strcmp(arg, "--") == 0)
			break;
		if (strncmp(arg, "--", 2) != 0)
			continue;
		name = arg + 2;
		n = strcspn(name, "=");
		for (o = longopts; o->name != NULL; o++)
			if (strlen(o->name) == n && strncmp(o->name, name, n) == 0)
				break;
		if (o->name == NULL)
			return ks_die(KS_EXIT_USAGE, "unrecognized option '--%.*s' (see --help)", (int)n, name);
		/* The next word is this option's value, whatever it looks like. */
		if (o->has_arg == required_argument && name[n] != '=')
			i++;
	}
	return 0;
}

/* Before a byte is read: a credential others could read is refused. */
static int secret_mode(int fd, const struct stat *st, void *arg)
{
	(void)fd;
	*(mode_t *)arg = st->st_mode;
	return (st->st_mode & 077) != 0 ? -EACCES : 0;
}

int ks_read_secret_file(const char *option, const char *path, char *buf, size_t len, size_t *n)
{
	mode_t mode = 0;
	int r;

	*n = 0;
	r = ks_file_read_buf(path, KS_FILE_NOFOLLOW, secret_mode, &mode, buf, len - 2, n);
	if (r == -EISDIR || r == -EBADFD)
		return ks_die(KS_EXIT_USAGE, "%s %s: not a regular file", option, path);
	if (r == -EACCES && (mode & 077) != 0)
		return ks_die(KS_EXIT_USAGE, "%s %s: mode %04o lets other users read it; a credential must be "
			      "mode 0600 (chmod 0600 it, and get a new one if others may have read it)", option, path,
			      (unsigned)(mode & 07777));
	if (r == -EFBIG)
		return ks_die(KS_EXIT_USAGE, "%s %s: over %zu bytes", option, path, len - 2);
	if (r < 0)
		return ks_die(KS_EXIT_USAGE, "%s %s: %s", option, path, strerror(-r));
	return 0;
}

int ks_load_ca_file(const char *path, STACK_OF(X509) **out)
{
	char err[KS_CI_ERR_MAX];

	if (ks_ci_load_bundle(path, out, err) < 0)
		return ks_die(KS_EXIT_USAGE, "--ca-file %s: %s", path, err);
	return 0;
}

int ks_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}
