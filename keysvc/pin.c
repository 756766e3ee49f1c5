#include "keysvc/pin.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keysvc/config.h"
#include "proto/secmem.h"

/*
 * The longest file that can still hold a valid PIN is KS_PIN_MAX bytes and
 * "\r\n"; reading one byte more tells it from a longer file, so a PIN is never
 * taken from the start of a file that goes on.
 */
#define PIN_READ_MAX (KS_PIN_MAX + 3)
#define PIN_BUF_SIZE (PIN_READ_MAX + 1)

static int pin_read_file(const char *path, char **pin, size_t *pin_len,
			 char *err, size_t err_len)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, r;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		snprintf(err, err_len, "PIN file %s: %s", path,
			 errno == ELOOP ? "is a symbolic link" : strerror(errno));
		if (r == -ELOOP)
			r = -EACCES;
		return r;
	}
	r = -EACCES;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, err_len, "PIN file %s: not a regular file", path);
		goto out;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, err_len, "PIN file %s: owned by uid %u, must be owned by uid %u",
			 path, (unsigned)st.st_uid, (unsigned)geteuid());
		goto out;
	}
	if (st.st_mode & 077) {
		snprintf(err, err_len, "PIN file %s: mode %03o, must be 0600 or 0400",
			 path, (unsigned)(st.st_mode & 0777));
		goto out;
	}
	if ((buf = ks_secmem_alloc(PIN_BUF_SIZE)) == NULL) {
		r = -ENOMEM;
		goto out;
	}
	while (got < PIN_READ_MAX) {
		n = read(fd, buf + got, PIN_READ_MAX - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(err, err_len, "PIN file %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > 0 && buf[got - 1] == '\n')
		got--;
	if (got > 0 && buf[got - 1] == '\r')
		got--;
	r = -EINVAL;
	if (got == 0) {
		snprintf(err, err_len, "PIN file %s: empty", path);
		goto out;
	}
	if (got > KS_PIN_MAX) {
		snprintf(err, err_len, "PIN file %s: longer than %d bytes", path, KS_PIN_MAX);
		goto out;
	}
	if (memchr(buf, '\0', got) != NULL || memchr(buf, '\n', got) != NULL) {
		snprintf(err, err_len, "PIN file %s: contains a NUL or more than one line", path);
		goto out;
	}
	buf[got] = '\0';
	*pin = buf;
	*pin_len = got;
	buf = NULL;
	r = 0;
out:
	ks_secmem_free(buf, PIN_BUF_SIZE);
	close(fd);
	return r;
}

int ks_pin_load(const char *pin_file, char **pin, size_t *pin_len, char *err,
		size_t err_len)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	char path[PATH_MAX];
	int n;

	*pin = NULL;
	*pin_len = 0;
	if (creds != NULL && creds[0] == '/') {
		n = snprintf(path, sizeof(path), "%s/%s", creds, KS_PIN_CREDENTIAL);
		if (n > 0 && (size_t)n < sizeof(path) && access(path, F_OK) == 0)
			return pin_read_file(path, pin, pin_len, err, err_len);
	}
	if (pin_file == NULL) {
		snprintf(err, err_len, "no PIN: set pin_file or provide the %s credential",
			 KS_PIN_CREDENTIAL);
		return -ENOENT;
	}
	return pin_read_file(pin_file, pin, pin_len, err, err_len);
}

void ks_pin_free(char *pin, size_t pin_len)
{
	(void)pin_len;
	ks_secmem_free(pin, PIN_BUF_SIZE);
}
