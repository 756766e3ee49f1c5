#include "keysvc/pin.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "keysvc/config.h"
#include "proto/file.h"
#include "proto/secmem.h"

/*
 * The longest file that can still hold a valid PIN is KS_PIN_MAX bytes and
 * "\r\n"; reading one byte more tells it from a longer file, so a PIN is never
 * taken from the start of a file that goes on.
 */
#define PIN_READ_MAX (KS_PIN_MAX + 3)
#define PIN_BUF_SIZE (PIN_READ_MAX + 1)

/* The on-disk form of a POSIX ACL (system.posix_acl_access), little-endian. */
#define ACL_XATTR "system.posix_acl_access"
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER_OBJ 0x01
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP_OBJ 0x04
#define ACL_TAG_GROUP 0x08
#define ACL_TAG_MASK 0x10
#define ACL_TAG_OTHER 0x20
#define ACL_PERM_WRITE 0x02
/* Header plus a handful of entries: more than a credential ever gets. */
#define ACL_XATTR_MAX (4 + 32 * 8)

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * systemd writes a credential root-owned, mode 0400, and gives the
 * service's user read access with a POSIX ACL entry; the ACL mask then
 * shows in the group bits (0440). Accept that one shape: the ACL may grant
 * read to the owner and to our effective uid only, write to nobody but the
 * owner. 0 if so, -EACCES otherwise (also when there is no ACL).
 */
static int credential_acl_ok(int fd)
{
	uint8_t acl[ACL_XATTR_MAX];
	ssize_t n = fgetxattr(fd, ACL_XATTR, acl, sizeof(acl));

	if (n < 4 || (n - 4) % 8 != 0 || le32(acl) != ACL_XATTR_VERSION)
		return -EACCES;
	for (ssize_t off = 4; off < n; off += 8) {
		unsigned tag = (unsigned)acl[off] | (unsigned)acl[off + 1] << 8;
		unsigned perm = (unsigned)acl[off + 2] | (unsigned)acl[off + 3] << 8;
		uint32_t id = le32(acl + off + 4);

		switch (tag) {
		case ACL_TAG_USER_OBJ:
		case ACL_TAG_MASK:
			break;
		case ACL_TAG_USER:
			if (id != (uint32_t)geteuid() || (perm & ACL_PERM_WRITE))
				return -EACCES;
			break;
		case ACL_TAG_GROUP_OBJ:
		case ACL_TAG_GROUP:
		case ACL_TAG_OTHER:
			if (perm != 0)
				return -EACCES;
			break;
		default:
			return -EACCES;
		}
	}
	return 0;
}

/*
 * A credential from systemd's credentials directory: owned by us or by
 * root (systemd writes it as root), never writable by group or others,
 * never readable by others, and readable by the group only as the mask of
 * an ACL that credential_acl_ok() accepts.
 */
static int check_credential_file(int fd, const struct stat *st, const char *path,
				 char *err, size_t err_len)
{
	if (st->st_uid != geteuid() && st->st_uid != 0) {
		snprintf(err, err_len, "PIN credential %s: owned by uid %u, must be root's or "
			 "uid %u's", path, (unsigned)st->st_uid, (unsigned)geteuid());
		return -EACCES;
	}
	if ((st->st_mode & 037) != 0 ||
	    ((st->st_mode & 040) != 0 && credential_acl_ok(fd) != 0)) {
		snprintf(err, err_len, "PIN credential %s: mode %03o, must be 0400 or 0600 "
			 "(or 0440 through systemd's ACL for this user)", path,
			 (unsigned)(st->st_mode & 0777));
		return -EACCES;
	}
	return 0;
}

/* The PIN file's owner and mode, checked on the open file before a byte of it is read. */
struct pin_check {
	const char *path;
	int credential;
	char *err;
	size_t err_len;
	int refused;          /* @err says why */
};

static int check_pin_file(int fd, const struct stat *st, void *arg)
{
	struct pin_check *c = arg;
	int r = 0;

	if (c->credential) {
		r = check_credential_file(fd, st, c->path, c->err, c->err_len);
	} else if (st->st_uid != geteuid()) {
		snprintf(c->err, c->err_len, "PIN file %s: owned by uid %u, must be owned by uid %u",
			 c->path, (unsigned)st->st_uid, (unsigned)geteuid());
		r = -EACCES;
	} else if (st->st_mode & 077) {
		snprintf(c->err, c->err_len, "PIN file %s: mode %03o, must be 0600 or 0400",
			 c->path, (unsigned)(st->st_mode & 0777));
		r = -EACCES;
	}
	c->refused = r != 0;
	return r;
}

static int pin_read_file(const char *path, int credential, char **pin, size_t *pin_len,
			 char *err, size_t err_len)
{
	struct pin_check c = { path, credential, err, err_len, 0 };
	char *buf = NULL;
	size_t got = 0;
	int too_long, r;

	if ((buf = ks_secmem_alloc(PIN_BUF_SIZE)) == NULL)
		return -ENOMEM;
	r = ks_file_read_buf(path, KS_FILE_NOFOLLOW | KS_FILE_NONBLOCK, check_pin_file, &c, buf,
			     PIN_READ_MAX, &got);
	if (r < 0 && c.refused)
		goto out;
	if (r == -ELOOP || r == -EISDIR || r == -EBADFD) {
		snprintf(err, err_len, "PIN file %s: %s", path,
			 r == -ELOOP ? "is a symbolic link" : "not a regular file");
		r = -EACCES;
		goto out;
	}
	if (r < 0 && r != -EFBIG) {
		snprintf(err, err_len, "PIN file %s: %s", path, strerror(-r));
		goto out;
	}
	if (got > 0 && buf[got - 1] == '\n')
		got--;
	if (got > 0 && buf[got - 1] == '\r')
		got--;
	/* Longer than the longest PIN file: too long, whatever the rest says. */
	too_long = r == -EFBIG;
	r = -EINVAL;
	if (got == 0 && !too_long) {
		snprintf(err, err_len, "PIN file %s: empty", path);
		goto out;
	}
	if (too_long || got > KS_PIN_MAX) {
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
	return r;
}

int ks_pin_source(const char *pin_file, char *path, size_t path_len, int *credential)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	int n;

	*credential = 0;
	if (creds != NULL && creds[0] == '/') {
		n = snprintf(path, path_len, "%s/%s", creds, KS_PIN_CREDENTIAL);
		if (n > 0 && (size_t)n < path_len && access(path, F_OK) == 0) {
			*credential = 1;
			return 0;
		}
	}
	if (pin_file == NULL || snprintf(path, path_len, "%s", pin_file) >= (int)path_len)
		return -ENOENT;
	return 0;
}

int ks_pin_load(const char *pin_file, char **pin, size_t *pin_len, char *err,
		size_t err_len)
{
	char path[PATH_MAX];
	int credential, r;

	*pin = NULL;
	*pin_len = 0;
	if (ks_pin_source(pin_file, path, sizeof(path), &credential) != 0) {
		snprintf(err, err_len, "no PIN: set pin_file or provide the %s credential",
			 KS_PIN_CREDENTIAL);
		return -ENOENT;
	}
	/* Whoever could swap a directory on the way could swap the PIN. */
	if ((r = ks_config_check_dirs(path, credential ? "PIN credential" : "PIN file",
				      err, err_len)) != 0)
		return r == -ENOENT ? r : -EACCES;
	return pin_read_file(path, credential, pin, pin_len, err, err_len);
}

void ks_pin_free(char *pin, size_t pin_len)
{
	(void)pin_len;
	ks_secmem_free(pin, PIN_BUF_SIZE);
}
