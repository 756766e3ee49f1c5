#include "clients/renew/common/cliopt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/climsg.h"

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

int ks_read_secret_file(const char *option, const char *path, char *buf, size_t len, size_t *n)
{
	struct stat st;
	size_t have = 0;
	ssize_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);

	*n = 0;
	if (fd < 0)
		return ks_die(KS_EXIT_USAGE, "%s %s: %s", option, path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return ks_die(KS_EXIT_USAGE, "%s %s: not a regular file", option, path);
	}
	if ((st.st_mode & 077) != 0) {
		close(fd);
		return ks_die(KS_EXIT_USAGE, "%s %s: mode %04o lets other users read it; a credential must be "
			      "mode 0600 (chmod 0600 it, and get a new one if others may have read it)", option, path,
			      (unsigned)(st.st_mode & 07777));
	}
	while (have < len - 1 && (got = read(fd, buf + have, len - 1 - have)) > 0)
		have += (size_t)got;
	close(fd);
	buf[have] = '\0';
	if (got < 0)
		return ks_die(KS_EXIT_USAGE, "%s %s: %s", option, path, strerror(errno));
	if (have >= len - 1)
		return ks_die(KS_EXIT_USAGE, "%s %s: over %zu bytes", option, path, len - 2);
	*n = have;
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
