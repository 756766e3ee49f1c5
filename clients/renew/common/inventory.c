#include "clients/renew/common/inventory.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "clients/renew/common/certinstall.h"

#define INV_VERSION 1

static int fail(char *err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vsnprintf(err, KS_INV_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return r;
}

const char *ks_inv_outcome_name(enum ks_inv_outcome o)
{
	switch (o) {
	case KS_INV_OK: return "ok";
	case KS_INV_FAILED: return "failed";
	case KS_INV_PUSH_FAILED: return "push-failed";
	default: return "-";
	}
}

static int outcome_parse(const char *s, enum ks_inv_outcome *o)
{
	if (strcmp(s, "ok") == 0)
		*o = KS_INV_OK;
	else if (strcmp(s, "failed") == 0)
		*o = KS_INV_FAILED;
	else if (strcmp(s, "push-failed") == 0)
		*o = KS_INV_PUSH_FAILED;
	else
		return -1;
	return 0;
}

const char *ks_inv_dir(const char *override, const char *configured)
{
	const char *env;

	if (override != NULL)
		return override;
	env = getenv(KS_INV_ENV);
	if (env != NULL && env[0] != '\0')
		return env;
	return configured != NULL ? configured : KS_INV_DEFAULT_DIR;
}

char *ks_inv_abs_path(const char *path)
{
	char cwd[PATH_MAX], *joined, *w;
	const char *r;

	if (path == NULL || path[0] == '\0')
		return NULL;
	if (path[0] == '/') {
		joined = strdup(path);
	} else {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return NULL;
		if (asprintf(&joined, "%s/%s", cwd, path) < 0)
			joined = NULL;
	}
	if (joined == NULL)
		return NULL;
	/* Collapse "//" and "/./", drop a trailing "/": one spelling per file. */
	for (r = joined, w = joined; *r != '\0';) {
		if (r[0] == '/' && r[1] == '/') {
			r++;
		} else if (r[0] == '/' && r[1] == '.' && (r[2] == '/' || r[2] == '\0')) {
			r += 2;
		} else {
			*w++ = *r++;
		}
	}
	if (w > joined + 1 && w[-1] == '/')
		w--;
	if (w == joined)
		*w++ = '/';
	*w = '\0';
	return joined;
}

void ks_inv_file_name(const char *cert_abs, char *buf, size_t len)
{
	unsigned char md[32];
	unsigned int n = 0;
	size_t o = 0;

	if (EVP_Digest(cert_abs, strlen(cert_abs), md, &n, EVP_sha256(), NULL) != 1)
		n = 0;
	buf[0] = '\0';
	for (unsigned int i = 0; i < n && o + 3 <= len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%02x", md[i]);
	if (o + 6 <= len)
		snprintf(buf + o, len - o, ".json");
}

void ks_inv_entry_free(struct ks_inv_entry *e)
{
	free(e->cert);
	free(e->key);
	free(e->client);
	free(e->ca_file);
	free(e->crl);
	free(e->reason);
	free(e->name);
	memset(e, 0, sizeof(*e));
}

static int has_control(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return 0;
	return (*out = strdup(s)) == NULL ? -ENOMEM : 0;
}

int ks_inv_parse(const char *json, size_t len, struct ks_inv_entry *e, char *err)
{
	const char *cert = NULL, *key = NULL, *client = NULL, *ca = NULL, *crl = NULL, *outcome = NULL,
		   *reason = NULL, *name = NULL;
	json_int_t version = 0, last = 0, succ = 0, failures = 0;
	json_error_t je;
	json_t *root;
	int r;

	memset(e, 0, sizeof(*e));
	if ((root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je)) == NULL)
		return fail(err, -EBADMSG, "not JSON: %s (line %d)", je.text, je.line);
	if (json_unpack_ex(root, &je, JSON_STRICT,
			   "{s:I, s:s, s?s, s?s, s?s, s?s, s?I, s?s, s?s, s?I, s?I, s?s}",
			   "version", &version, "cert", &cert, "key", &key, "client", &client,
			   "ca_file", &ca, "crl", &crl, "last_renewal", &last, "outcome", &outcome,
			   "reason", &reason, "successes", &succ, "failures", &failures, "name", &name) != 0) {
		r = fail(err, -EBADMSG, "%s", je.text);
		goto out;
	}
	if (version != INV_VERSION) {
		r = fail(err, -EBADMSG, "version %lld is not %d", (long long)version, INV_VERSION);
		goto out;
	}
	if (cert[0] != '/' || has_control(cert) || has_control(key) || has_control(client) ||
	    has_control(ca) || has_control(crl) || has_control(reason) || has_control(name)) {
		r = fail(err, -EBADMSG, "a path that is not absolute, or control characters in a field");
		goto out;
	}
	if (last < 0 || succ < 0 || failures < 0) {
		r = fail(err, -EBADMSG, "negative time or counter");
		goto out;
	}
	if (outcome != NULL && outcome_parse(outcome, &e->outcome) != 0) {
		r = fail(err, -EBADMSG, "unknown outcome \"%.40s\"", outcome);
		goto out;
	}
	e->last_renewal = last;
	e->successes = (unsigned long long)succ;
	e->failures = (unsigned long long)failures;
	if (dup_opt(cert, &e->cert) < 0 || dup_opt(key, &e->key) < 0 || dup_opt(client, &e->client) < 0 ||
	    dup_opt(ca, &e->ca_file) < 0 || dup_opt(crl, &e->crl) < 0 || dup_opt(reason, &e->reason) < 0 ||
	    dup_opt(name, &e->name) < 0) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	r = 0;
out:
	if (r < 0)
		ks_inv_entry_free(e);
	json_decref(root);
	return r;
}

static int record_path(const char *dir, const char *cert_abs, char *buf, size_t len, char *err)
{
	char name[80];

	ks_inv_file_name(cert_abs, name, sizeof(name));
	if (snprintf(buf, len, "%s/%s", dir, name) >= (int)len)
		return fail(err, -ENAMETOOLONG, "%s: path too long", dir);
	return 0;
}

int ks_inv_load(const char *dir, const char *cert_abs, struct ks_inv_entry *e, char *err)
{
	char path[PATH_MAX], why[KS_CI_ERR_MAX], *text = NULL;
	size_t len;
	int r;

	memset(e, 0, sizeof(*e));
	if ((r = record_path(dir, cert_abs, path, sizeof(path), err)) < 0)
		return r;
	if (access(path, F_OK) != 0 && errno == ENOENT)
		return fail(err, -ENOENT, "%s: no record", path);
	if ((r = ks_ci_read_file(path, &text, &len, why)) < 0)
		return fail(err, r, "%s", why);
	if (len > KS_INV_RECORD_MAX)
		r = fail(err, -EFBIG, "%s: larger than %zu bytes", path, KS_INV_RECORD_MAX);
	else if ((r = ks_inv_parse(text, len, e, why)) < 0)
		r = fail(err, r, "%s: %s", path, why);
	else if (strcmp(e->cert, cert_abs) != 0) {
		/* Only a hand-made file can get here: its name is not its path's hash. */
		r = fail(err, -EBADMSG, "%s: the record is for %s", path, e->cert);
		ks_inv_entry_free(e);
	}
	free(text);
	return r;
}

static int set_opt(json_t *o, const char *name, const char *value)
{
	if (value == NULL)
		return 0;
	return json_object_set_new(o, name, json_string(value));
}

int ks_inv_save(const char *dir, const struct ks_inv_entry *e, char *err)
{
	char path[PATH_MAX], why[KS_CI_ERR_MAX], *text = NULL;
	json_t *o;
	int r;

	if (e->cert == NULL || e->cert[0] != '/')
		return fail(err, -EINVAL, "the certificate path must be absolute");
	if ((r = record_path(dir, e->cert, path, sizeof(path), err)) < 0)
		return r;
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return fail(err, -errno, "%s: %s", dir, strerror(errno));
	o = json_pack("{s:i, s:s}", "version", INV_VERSION, "cert", e->cert);
	if (o == NULL || set_opt(o, "key", e->key) != 0 || set_opt(o, "client", e->client) != 0 ||
	    set_opt(o, "ca_file", e->ca_file) != 0 || set_opt(o, "crl", e->crl) != 0 ||
	    (e->last_renewal != 0 &&
	     json_object_set_new(o, "last_renewal", json_integer((json_int_t)e->last_renewal)) != 0) ||
	    (e->outcome != KS_INV_NONE &&
	     json_object_set_new(o, "outcome", json_string(ks_inv_outcome_name(e->outcome))) != 0) ||
	    set_opt(o, "reason", e->reason) != 0 || set_opt(o, "name", e->name) != 0 ||
	    json_object_set_new(o, "successes", json_integer((json_int_t)e->successes)) != 0 ||
	    json_object_set_new(o, "failures", json_integer((json_int_t)e->failures)) != 0 ||
	    (text = json_dumps(o, JSON_INDENT(2) | JSON_ENSURE_ASCII)) == NULL) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	if ((r = ks_ci_write_atomic(path, text, strlen(text), 0644, why)) < 0)
		r = fail(err, r, "%s", why);
out:
	free(text);
	json_decref(o);
	return r;
}

/* Replace @*field with a copy of @value, unless @value is NULL. */
static int replace(char **field, const char *value)
{
	char *copy;

	if (value == NULL)
		return 0;
	if ((copy = strdup(value)) == NULL)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

int ks_inv_record(const char *dir, const char *cert, const char *key, const char *client,
		  const char *ca_file, const char *crl, enum ks_inv_outcome outcome, const char *reason,
		  time_t now, char *err)
{
	struct ks_inv_entry e;
	char *abs = NULL, *ca_abs = NULL, *crl_abs = NULL, line[KS_INV_REASON_MAX];
	int r;

	memset(&e, 0, sizeof(e));
	if ((abs = ks_inv_abs_path(cert)) == NULL ||
	    (ca_file != NULL && (ca_abs = ks_inv_abs_path(ca_file)) == NULL) ||
	    (crl != NULL && (crl_abs = ks_inv_abs_path(crl)) == NULL)) {
		r = fail(err, -ENOMEM, "cannot make the paths absolute");
		goto out;
	}
	if (has_control(abs) || has_control(key) || has_control(client) || has_control(ca_abs) ||
	    has_control(crl_abs)) {
		r = fail(err, -EINVAL, "control characters in a path or name");
		goto out;
	}
	r = ks_inv_load(dir, abs, &e, err);
	if (r == -ENOENT) {
		memset(&e, 0, sizeof(e));
		if ((e.cert = strdup(abs)) == NULL) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
	} else if (r < 0) {
		/* A broken record is replaced: the attempt just made is the news. */
		ks_inv_entry_free(&e);
		if ((e.cert = strdup(abs)) == NULL) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	if (replace(&e.key, key) < 0 || replace(&e.client, client) < 0 || replace(&e.ca_file, ca_abs) < 0 ||
	    replace(&e.crl, crl_abs) < 0) {
		r = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	free(e.reason);
	e.reason = NULL;
	if (reason != NULL && reason[0] != '\0') {
		size_t n = strcspn(reason, "\r\n");

		snprintf(line, sizeof(line), "%.*s", (int)n, reason);
		for (char *p = line; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
		if ((e.reason = strdup(line)) == NULL) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	e.outcome = outcome;
	e.last_renewal = (long long)now;
	if (outcome == KS_INV_OK)
		e.successes++;
	else if (outcome != KS_INV_NONE)
		e.failures++;
	r = ks_inv_save(dir, &e, err);
out:
	ks_inv_entry_free(&e);
	free(abs);
	free(ca_abs);
	free(crl_abs);
	return r;
}

static int by_cert(const void *a, const void *b)
{
	return strcmp(((const struct ks_inv_entry *)a)->cert, ((const struct ks_inv_entry *)b)->cert);
}

static int is_record_name(const char *name)
{
	size_t n = strlen(name);

	return n == 64 + 5 && strcmp(name + 64, ".json") == 0 && strspn(name, "0123456789abcdef") == 64;
}

int ks_inv_list(const char *dir, struct ks_inv_entry **entries, size_t *n,
		void (*bad)(const char *file, const char *reason, void *ctx), void *ctx, char *err)
{
	struct ks_inv_entry *list = NULL, *grown;
	struct dirent *de;
	size_t count = 0, cap = 0;
	DIR *d;
	int r;

	*entries = NULL;
	*n = 0;
	if ((d = opendir(dir)) == NULL) {
		if (errno == ENOENT)
			return 0;
		return fail(err, -errno, "%s: %s", dir, strerror(errno));
	}
	while ((de = readdir(d)) != NULL) {
		char path[PATH_MAX], why[KS_CI_ERR_MAX], *text = NULL;
		struct ks_inv_entry e;
		size_t len;

		/* Temporary files of a writer and anything else are not records. */
		if (!is_record_name(de->d_name))
			continue;
		if (count == KS_INV_MAX_RECORDS) {
			r = fail(err, -E2BIG, "%s: more than %d records", dir, KS_INV_MAX_RECORDS);
			goto out;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((r = ks_ci_read_file(path, &text, &len, why)) < 0) {
			if (bad != NULL)
				bad(path, why, ctx);
			continue;
		}
		r = ks_inv_parse(text, len, &e, why);
		free(text);
		if (r < 0) {
			if (bad != NULL)
				bad(path, why, ctx);
			continue;
		}
		if (count == cap) {
			cap = cap == 0 ? 16 : cap * 2;
			if ((grown = realloc(list, cap * sizeof(*list))) == NULL) {
				ks_inv_entry_free(&e);
				r = fail(err, -ENOMEM, "out of memory");
				goto out;
			}
			list = grown;
		}
		list[count++] = e;
	}
	if (count > 0)
		qsort(list, count, sizeof(*list), by_cert);
	*entries = list;
	*n = count;
	list = NULL;
	count = 0;
	r = 0;
out:
	ks_inv_list_free(list, count);
	closedir(d);
	return r;
}

void ks_inv_list_free(struct ks_inv_entry *entries, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ks_inv_entry_free(&entries[i]);
	free(entries);
}

int ks_inv_forget(const char *dir, const char *cert_abs, char *err)
{
	char path[PATH_MAX];
	int r, dfd;

	if ((r = record_path(dir, cert_abs, path, sizeof(path), err)) < 0)
		return r;
	if (unlink(path) != 0) {
		r = -errno;
		return fail(err, r, "%s: %s", path, r == -ENOENT ? "no record" : strerror(-r));
	}
	/* The deletion survives a crash only once the directory is on disk. */
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}
