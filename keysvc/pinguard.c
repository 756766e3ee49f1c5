#include "keysvc/pinguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "keysvc/config.h"
#include "pkcs11/token.h"
#include "proto/file.h"
#include "proto/log.h"

#define GUARD_KEY_LEN 32
#define MARKER_MAX 256
#define MAC_PREFIX "hmac-sha256="

static int path_in(char *out, size_t out_len, const char *dir, const char *name)
{
	int n = snprintf(out, out_len, "%s/%s", dir, name);

	return n > 0 && (size_t)n < out_len ? 0 : -ENAMETOOLONG;
}

static int own_file(int fd, const struct stat *st, void *arg)
{
	(void)fd;
	(void)arg;
	return st->st_uid != geteuid() || (st->st_mode & 077) != 0 ? -EACCES : 0;
}

/*
 * A file of ours in the state directory: regular, ours, 0600 or stricter,
 * at most @max bytes, into @buf of @max + 1 (NUL-terminated). -EACCES if it
 * is not such a file, -EINVAL if it is longer.
 */
static int read_own_file(const char *path, void *buf, size_t max, size_t *len)
{
	int r = ks_file_read_buf(path, KS_FILE_NOFOLLOW | KS_FILE_NONBLOCK, own_file, NULL, buf, max, len);

	if (r == -ELOOP || r == -EISDIR || r == -EBADFD)
		return -EACCES;
	return r == -EFBIG ? -EINVAL : r;
}

/*
 * The key, made on first use. Written to a temporary name and linked into
 * place, so the key file is complete whenever it exists, and of two
 * keysvcd starting at once both end up with the one that won.
 */
static int load_key(const char *dir, uint8_t key[GUARD_KEY_LEN], int create, char *err,
		    size_t err_len)
{
	uint8_t raw[GUARD_KEY_LEN + 1];   /* and the NUL the reader adds */
	struct ks_file_tmp tmp;
	char path[PATH_MAX];
	size_t len = 0;
	int r;

	if (path_in(path, sizeof(path), dir, KS_PIN_GUARD_KEY) != 0) {
		snprintf(err, err_len, "state_dir %s: path too long", dir);
		return -ENAMETOOLONG;
	}
	r = read_own_file(path, raw, GUARD_KEY_LEN, &len);
	if (r == 0 && len == GUARD_KEY_LEN)
		memcpy(key, raw, GUARD_KEY_LEN);
	explicit_bzero(raw, sizeof(raw));
	if (r == 0 && len == GUARD_KEY_LEN)
		return 0;
	if (r != -ENOENT) {
		snprintf(err, err_len, "%s: %s", path, r == 0 || r == -EINVAL ?
			 "not a key of 32 bytes (remove it to make a new one)" :
			 r == -EACCES ? "not a regular file of keysvcd's user with mode 0600" :
			 strerror(-r));
		return r == 0 ? -EINVAL : r;
	}
	if (!create)
		return -ENOENT;
	if (getrandom(key, GUARD_KEY_LEN, 0) != GUARD_KEY_LEN) {
		r = -errno;
		snprintf(err, err_len, "getrandom: %s", strerror(errno));
		return r;
	}
	if ((r = ks_file_tmp_open(&tmp, path)) != 0) {
		snprintf(err, err_len, "%s: cannot create a temporary file: %s", path, strerror(-r));
		return r;
	}
	if ((r = ks_file_tmp_write(&tmp, key, GUARD_KEY_LEN)) != 0 || (r = ks_file_tmp_sync(&tmp, 0600)) != 0) {
		snprintf(err, err_len, "%s: %s", tmp.tmp, strerror(-r));
		ks_file_tmp_discard(&tmp);
		return r;
	}
	/* Linked, not renamed: of two keysvcd starting at once the second finds the first's key. */
	r = ks_file_tmp_commit(&tmp, KS_FILE_NOREPLACE);
	ks_file_tmp_discard(&tmp);
	if (r == -EEXIST)   /* another keysvcd made it first: use that one */
		return load_key(dir, key, create, err, err_len);
	if (r != 0) {
		snprintf(err, err_len, "%s: %s", path, strerror(-r));
		return r;
	}
	if ((r = ks_file_sync_dir(path)) != 0) {
		snprintf(err, err_len, "state_dir %s: fsync: %s", dir, strerror(-r));
		return r;
	}
	ks_info("made the PIN guard key %s", path);
	return 0;
}

static int check_state_dir(const char *dir, char *err, size_t err_len)
{
	char probe[PATH_MAX];
	struct stat st;
	int r;

	if (lstat(dir, &st) != 0) {
		r = -errno;
		snprintf(err, err_len, "state_dir %s: %s", dir, strerror(errno));
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, err_len, "state_dir %s: not a directory (or a symlink)", dir);
		return -EACCES;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		snprintf(err, err_len, "state_dir %s: owned by uid %u, must be root's or uid %u's",
			 dir, (unsigned)st.st_uid, (unsigned)geteuid());
		return -EACCES;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, err_len, "state_dir %s: writable by group or others", dir);
		return -EACCES;
	}
	/* The directory's own name is checked above; ks_config_check_dirs() checks its parents. */
	if (path_in(probe, sizeof(probe), dir, "x") != 0) {
		snprintf(err, err_len, "state_dir %s: path too long", dir);
		return -ENAMETOOLONG;
	}
	return ks_config_check_dirs(probe, "state_dir", err, err_len);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The MAC of a marker's text; -EINVAL if it has none. */
static int marker_mac(const char *text, uint8_t mac[32])
{
	if (strncmp(text, MAC_PREFIX, strlen(MAC_PREFIX)) != 0)
		return -EINVAL;
	text += strlen(MAC_PREFIX);
	for (size_t i = 0; i < 32; i++) {
		int hi = hexval(text[2 * i]), lo = hi < 0 ? -1 : hexval(text[2 * i + 1]);

		if (lo < 0)
			return -EINVAL;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return text[64] == ' ' || text[64] == '\n' || text[64] == '\0' ? 0 : -EINVAL;
}

/* ks_pin_guard_open(), or with @dry_run ks_pin_guard_check(): nothing written or removed. */
static int guard_open(struct ks_pin_guard *g, const char *state_dir, const char *pin,
		      size_t pin_len, int dry_run, char *err, size_t err_len)
{
	uint8_t key[GUARD_KEY_LEN], old[32];
	char text[MARKER_MAX + 1];
	unsigned mac_len = 0;
	size_t len = 0;
	struct stat st;
	int have_marker = 0, r;

	memset(g, 0, sizeof(*g));
	if (snprintf(g->dir, sizeof(g->dir), "%s", state_dir) >= (int)sizeof(g->dir) ||
	    path_in(g->marker, sizeof(g->marker), state_dir, KS_PIN_GUARD_MARKER) != 0) {
		snprintf(err, err_len, "state_dir %s: path too long", state_dir);
		return -ENAMETOOLONG;
	}
	if ((r = check_state_dir(state_dir, err, err_len)) != 0)
		return r;
	if (dry_run && access(state_dir, W_OK) != 0) {
		r = -errno;
		snprintf(err, err_len, "state_dir %s: not writable: %s", state_dir, strerror(errno));
		return r;
	}
	/*
	 * A marker without the key that made it cannot say which PIN it
	 * stands for: a new key would make it look like another PIN's, and
	 * the refused PIN would be presented again. Fail closed instead.
	 */
	if (lstat(g->marker, &st) == 0 || errno != ENOENT)
		have_marker = 1;
	r = load_key(state_dir, key, !dry_run && !have_marker, err, err_len);
	if (r == -ENOENT && have_marker) {
		snprintf(err, err_len, "%s exists but the key %s/%s that made it is gone, so it "
			 "cannot tell whether this PIN is the one the token rejected; not "
			 "presenting the PIN. Check the PIN, then remove %s", g->marker,
			 state_dir, KS_PIN_GUARD_KEY, g->marker);
		r = -EKEYREJECTED;
		goto out;
	}
	if (r == -ENOENT && dry_run) {
		/* No key yet: the start makes one, and no marker can name this PIN. */
		r = 0;
		goto out;
	}
	if (r != 0)
		goto out;
	if (HMAC(EVP_sha256(), key, GUARD_KEY_LEN, (const unsigned char *)pin, pin_len,
		 g->mac, &mac_len) == NULL || mac_len != sizeof(g->mac)) {
		snprintf(err, err_len, "HMAC-SHA256 failed");
		r = -EIO;
		goto out;
	}
	g->armed = 1;

	r = read_own_file(g->marker, text, MARKER_MAX, &len);
	if (r == -ENOENT) {
		r = 0;
		goto out;
	}
	if (r == 0) {
		text[len] = '\0';
		if (marker_mac(text, old) != 0)
			r = -EINVAL;
	}
	if (r != 0) {
		/* Fail closed: whatever it says, it may stand for a PIN the token refused. */
		snprintf(err, err_len, "%s: unreadable (%s); not presenting the PIN to the token. "
			 "Check the PIN, then remove the file", g->marker,
			 r == -EINVAL ? "not a marker keysvcd wrote" :
			 r == -EACCES ? "not a regular file of keysvcd's user with mode 0600" :
			 strerror(-r));
		r = -EKEYREJECTED;
		goto out;
	}
	if (CRYPTO_memcmp(old, g->mac, sizeof(old)) == 0) {
		/* What follows the MAC: "ckr=... time=...", or nothing. */
		const char *rest = text + strlen(MAC_PREFIX) + 64;

		rest += *rest == ' ';
		text[strcspn(text, "\n")] = '\0';
		snprintf(err, err_len, "the token rejected this PIN before (%s: %s); not "
			 "presenting it again. Replace the PIN (file or credential) to try again",
			 g->marker, rest);
		r = -EKEYREJECTED;
		goto out;
	}
	/* Another PIN than the one refused: it gets its try. */
	if (dry_run) {
		r = 0;
		goto out;
	}
	if (unlink(g->marker) != 0 && errno != ENOENT) {
		r = -errno;
		snprintf(err, err_len, "%s: %s", g->marker, strerror(errno));
		goto out;
	}
	if ((r = ks_file_sync_dir(g->marker)) != 0) {
		snprintf(err, err_len, "state_dir %s: fsync: %s", state_dir, strerror(-r));
		goto out;
	}
	ks_notice("the PIN was replaced since the token rejected one; removed %s", g->marker);
	r = 0;
out:
	explicit_bzero(key, sizeof(key));
	explicit_bzero(old, sizeof(old));
	if ((r != 0 && r != -EKEYREJECTED) || dry_run)
		ks_pin_guard_clear(g);
	return r;
}

int ks_pin_guard_open(struct ks_pin_guard *g, const char *state_dir,
		      const char *pin, size_t pin_len, char *err, size_t err_len)
{
	return guard_open(g, state_dir, pin, pin_len, 0, err, err_len);
}

int ks_pin_guard_check(const char *state_dir, const char *pin, size_t pin_len,
		       char *err, size_t err_len)
{
	struct ks_pin_guard g;
	int r = guard_open(&g, state_dir, pin, pin_len, 1, err, err_len);

	ks_pin_guard_clear(&g);
	return r;
}

int ks_pin_guard_record(const struct ks_pin_guard *g, unsigned long ckr)
{
	char text[MARKER_MAX], when[32];
	struct tm tm;
	time_t now;
	int n, r;

	if (!g->armed)
		return -EINVAL;
	n = snprintf(text, sizeof(text), MAC_PREFIX);
	for (size_t i = 0; i < sizeof(g->mac); i++)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "%02x", g->mac[i]);
	now = time(NULL);
	if (gmtime_r(&now, &tm) == NULL || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(when, sizeof(when), "%lld", (long long)now);
	n += snprintf(text + n, sizeof(text) - (size_t)n, " ckr=%s time=%s\n",
		      ks_ckr_name(ckr), when);
	if (n <= 0 || (size_t)n >= sizeof(text))
		return -ENAMETOOLONG;
	if ((r = ks_file_write_atomic(g->marker, text, (size_t)n, 0600, 0)) != 0)
		goto fail;
	ks_err("recorded the rejected PIN in %s: keysvcd will not present it again; replace "
	       "the PIN (file or credential) to try again", g->marker);
	return 0;
fail:
	ks_err("cannot record the rejected PIN in %s: %s; a restart may present it again",
	       g->marker, strerror(-r));
	return r;
}

void ks_pin_guard_clear(struct ks_pin_guard *g)
{
	explicit_bzero(g->mac, sizeof(g->mac));
	g->armed = 0;
}
