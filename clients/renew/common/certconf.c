#include "clients/renew/common/certconf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/inventory.h"

static int fail(char *err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vsnprintf(err, KS_CONF_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return r;
}

void ks_conf_init(struct ks_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->thresholds.critical_days = KS_CONF_CRITICAL_DAYS;
	c->thresholds.warning_days = KS_CONF_WARNING_DAYS;
	c->thresholds.notice_days = KS_CONF_NOTICE_DAYS;
	c->connect_timeout_ms = KS_CONF_CONNECT_TIMEOUT_MS;
	c->handshake_timeout_ms = KS_CONF_HANDSHAKE_TIMEOUT_MS;
}

static void cert_free(struct ks_conf_cert *cc)
{
	free(cc->cert);
	free(cc->key);
	free(cc->client);
	free(cc->ca_file);
	free(cc->crl);
	for (size_t i = 0; i < cc->n_endpoints; i++) {
		free(cc->endpoints[i].host);
		free(cc->endpoints[i].sni);
	}
	free(cc->endpoints);
	for (size_t i = 0; cc->reload != NULL && cc->reload[i] != NULL; i++)
		free(cc->reload[i]);
	free(cc->reload);
}

void ks_conf_free(struct ks_conf *c)
{
	for (size_t i = 0; i < c->n_certs; i++)
		cert_free(&c->certs[i]);
	free(c->certs);
	free(c->inventory);
	ks_conf_init(c);
}

/* A field an object may have, and its JSON type (JSON_TRUE stands for either boolean). */
struct field {
	const char *name;
	json_type type;
	const char *hint;           /* said after a wrong type; NULL: nothing */
};

static const char *type_name(json_type t)
{
	switch (t) {
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_TRUE: return "true or false";
	case JSON_ARRAY: return "an array";
	default: return "an object";
	}
}

/*
 * Unknown fields and wrong types, named with their place: jansson's own
 * unpack errors do not say which field they are about. The unpack that
 * follows still runs with JSON_STRICT.
 */
static int check_object(json_t *j, const char *where, const struct field *fields, size_t n, char *err)
{
	const char *key;
	json_t *v;

	if (!json_is_object(j))
		return fail(err, -EBADMSG, "%s: expected an object", where);
	json_object_foreach(j, key, v) {
		size_t i;
		int ok;

		for (i = 0; i < n && strcmp(fields[i].name, key) != 0; i++)
			;
		if (i == n)
			return fail(err, -EBADMSG, "%s: unknown field \"%.64s\"", where, key);
		ok = fields[i].type == JSON_TRUE ? json_is_boolean(v) : json_typeof(v) == fields[i].type;
		if (!ok)
			return fail(err, -EBADMSG, "%s.%s: expected %s%s", where, key, type_name(fields[i].type),
				    fields[i].hint != NULL ? fields[i].hint : "");
	}
	return 0;
}

#define CHECK(j, where, fields, err) check_object((j), (where), (fields), sizeof(fields) / sizeof((fields)[0]), (err))

static const struct field top_fields[] = {
	{ "inventory", JSON_STRING }, { "thresholds", JSON_OBJECT }, { "verify", JSON_OBJECT },
	{ "certificates", JSON_ARRAY },
};
static const struct field threshold_fields[] = {
	{ "critical_days", JSON_INTEGER }, { "warning_days", JSON_INTEGER }, { "notice_days", JSON_INTEGER },
};
static const struct field verify_fields[] = {
	{ "connect_timeout_ms", JSON_INTEGER }, { "handshake_timeout_ms", JSON_INTEGER },
};
static const struct field cert_fields[] = {
	{ "cert", JSON_STRING }, { "key", JSON_STRING }, { "client", JSON_STRING }, { "ca_file", JSON_STRING },
	{ "crl", JSON_STRING }, { "endpoints", JSON_ARRAY }, { "reload", JSON_ARRAY, " of strings, the command and its arguments (no shell)" },
	{ "reload_timeout", JSON_INTEGER }, { "verify_after_reload", JSON_TRUE }, { "verify_wait", JSON_INTEGER },
};
static const struct field endpoint_fields[] = {
	{ "host", JSON_STRING }, { "port", JSON_INTEGER }, { "sni", JSON_STRING },
};

static int has_control(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/* A copy of @s if it is an absolute path without control characters (NULL stays NULL). */
static int path_dup(const char *s, const char *where, const char *name, char **out, char *err)
{
	*out = NULL;
	if (s == NULL)
		return 0;
	if (s[0] != '/' || has_control(s) || strlen(s) >= 4096)
		return fail(err, -EBADMSG, "%s.%s: an absolute path is needed (got \"%.80s\")", where, name, s);
	/* The spelling the inventory uses, so that both name a file the same way. */
	return (*out = ks_inv_abs_path(s)) == NULL ? fail(err, -ENOMEM, "out of memory") : 0;
}

static int name_dup(const char *s, size_t max, const char *where, const char *name, char **out, char *err)
{
	*out = NULL;
	if (s == NULL)
		return 0;
	if (s[0] == '\0' || strlen(s) > max || has_control(s))
		return fail(err, -EBADMSG, "%s.%s: 1 to %zu characters without control characters", where, name, max);
	return (*out = strdup(s)) == NULL ? fail(err, -ENOMEM, "out of memory") : 0;
}

static int host_ok(const char *s)
{
	size_t n = strlen(s);

	/* Names, IPv4 and IPv6 literals (without brackets); nothing a resolver would read as options. */
	return n > 0 && n <= KS_CONF_HOST_MAX && s[0] != '-' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:_%") == n;
}

static int parse_endpoint(json_t *j, const char *where, struct ks_conf_endpoint *ep, char *err)
{
	const char *host = NULL, *sni = NULL;
	json_int_t port = 0;
	json_error_t je;
	int r;

	if ((r = CHECK(j, where, endpoint_fields, err)) < 0)
		return r;
	if (json_unpack_ex(j, &je, JSON_STRICT, "{s:s, s:I, s?s}", "host", &host, "port", &port, "sni", &sni) != 0)
		return fail(err, -EBADMSG, "%s: %s", where, je.text);
	if (!host_ok(host))
		return fail(err, -EBADMSG, "%s.host: a host name or IP address (got \"%.80s\")", where, host);
	if (port < 1 || port > 65535)
		return fail(err, -EBADMSG, "%s.port: 1..65535", where);
	if (sni != NULL && (!host_ok(sni) || strchr(sni, ':') != NULL))
		return fail(err, -EBADMSG, "%s.sni: a DNS name (got \"%.80s\")", where, sni);
	ep->port = (int)port;
	if ((ep->host = strdup(host)) == NULL || (sni != NULL && (ep->sni = strdup(sni)) == NULL))
		return fail(err, -ENOMEM, "out of memory");
	r = 0;
	return r;
}

static int parse_cert(json_t *j, const char *where, struct ks_conf_cert *cc, char *err)
{
	const char *cert = NULL, *key = NULL, *client = NULL, *ca = NULL, *crl = NULL;
	json_t *endpoints = NULL, *reload = NULL, *verify = NULL;
	json_int_t reload_timeout = KS_CONF_RELOAD_TIMEOUT_S, wait = KS_CONF_VERIFY_WAIT_S;
	char at[96];
	json_error_t je;
	size_t i;
	int r;

	if ((r = CHECK(j, where, cert_fields, err)) < 0)
		return r;
	if (json_unpack_ex(j, &je, JSON_STRICT, "{s:s, s?s, s?s, s?s, s?s, s?o, s?o, s?I, s?o, s?I}",
			   "cert", &cert, "key", &key, "client", &client, "ca_file", &ca, "crl", &crl,
			   "endpoints", &endpoints, "reload", &reload, "reload_timeout", &reload_timeout,
			   "verify_after_reload", &verify, "verify_wait", &wait) != 0)
		return fail(err, -EBADMSG, "%s: %s", where, je.text);
	if ((r = path_dup(cert, where, "cert", &cc->cert, err)) < 0 ||
	    (r = name_dup(key, 64, where, "key", &cc->key, err)) < 0 ||
	    (r = name_dup(client, 32, where, "client", &cc->client, err)) < 0 ||
	    (r = path_dup(ca, where, "ca_file", &cc->ca_file, err)) < 0 ||
	    (r = path_dup(crl, where, "crl", &cc->crl, err)) < 0)
		return r;
	if (endpoints != NULL) {
		if (!json_is_array(endpoints) || json_array_size(endpoints) > KS_CONF_MAX_ENDPOINTS)
			return fail(err, -EBADMSG, "%s.endpoints: an array of at most %d endpoints", where,
				    KS_CONF_MAX_ENDPOINTS);
		if (json_array_size(endpoints) > 0 &&
		    (cc->endpoints = calloc(json_array_size(endpoints), sizeof(*cc->endpoints))) == NULL)
			return fail(err, -ENOMEM, "out of memory");
		for (i = 0; i < json_array_size(endpoints); i++) {
			snprintf(at, sizeof(at), "%s.endpoints[%zu]", where, i);
			cc->n_endpoints = i + 1;
			if ((r = parse_endpoint(json_array_get(endpoints, i), at, &cc->endpoints[i], err)) < 0)
				return r;
		}
	}
	if (reload != NULL) {
		size_t n = json_is_array(reload) ? json_array_size(reload) : 0;

		if (n == 0 || n > KS_CONF_MAX_ARGV)
			return fail(err, -EBADMSG, "%s.reload: an array of 1 to %d strings (the command and its "
				    "arguments; no shell)", where, KS_CONF_MAX_ARGV);
		if ((cc->reload = calloc(n + 1, sizeof(*cc->reload))) == NULL)
			return fail(err, -ENOMEM, "out of memory");
		for (i = 0; i < n; i++) {
			const char *word = json_string_value(json_array_get(reload, i));

			if (word == NULL || (i == 0 && word[0] == '\0') || strlen(word) > 4096)
				return fail(err, -EBADMSG, "%s.reload[%zu]: a string (the first not empty)", where, i);
			if ((cc->reload[i] = strdup(word)) == NULL)
				return fail(err, -ENOMEM, "out of memory");
		}
	}
	if (reload_timeout < 1 || reload_timeout > 3600)
		return fail(err, -EBADMSG, "%s.reload_timeout: 1..3600 seconds", where);
	if (wait < 0 || wait > 600)
		return fail(err, -EBADMSG, "%s.verify_wait: 0..600 seconds", where);
	if (verify != NULL && !json_is_boolean(verify))
		return fail(err, -EBADMSG, "%s.verify_after_reload: true or false", where);
	cc->reload_timeout_s = (int)reload_timeout;
	cc->verify_wait_s = (int)wait;
	cc->verify_after_reload = verify != NULL ? json_is_true(verify) : cc->n_endpoints > 0;
	if (cc->verify_after_reload && cc->n_endpoints == 0)
		return fail(err, -EBADMSG, "%s.verify_after_reload: there are no endpoints to verify", where);
	return 0;
}

int ks_conf_parse(const char *json, size_t len, struct ks_conf *c, char *err)
{
	json_t *root, *thresholds = NULL, *verify = NULL, *certs = NULL;
	const char *inventory = NULL;
	json_int_t crit = KS_CONF_CRITICAL_DAYS, warn = KS_CONF_WARNING_DAYS, notice = KS_CONF_NOTICE_DAYS;
	json_int_t conn = KS_CONF_CONNECT_TIMEOUT_MS, hs = KS_CONF_HANDSHAKE_TIMEOUT_MS;
	json_error_t je;
	char at[64];
	int r;

	ks_conf_init(c);
	if ((root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je)) == NULL)
		return fail(err, -EBADMSG, "not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
	if ((r = CHECK(root, "configuration", top_fields, err)) < 0 ||
	    (thresholds = json_object_get(root, "thresholds"), thresholds != NULL &&
	     (r = CHECK(thresholds, "thresholds", threshold_fields, err)) < 0) ||
	    (verify = json_object_get(root, "verify"), verify != NULL &&
	     (r = CHECK(verify, "verify", verify_fields, err)) < 0))
		goto out;
	thresholds = verify = NULL;
	if (json_unpack_ex(root, &je, JSON_STRICT, "{s?s, s?o, s?o, s?o}", "inventory", &inventory,
			   "thresholds", &thresholds, "verify", &verify, "certificates", &certs) != 0) {
		r = fail(err, -EBADMSG, "%s", je.text);
		goto out;
	}
	if ((r = path_dup(inventory, "configuration", "inventory", &c->inventory, err)) < 0)
		goto out;
	if (thresholds != NULL &&
	    json_unpack_ex(thresholds, &je, JSON_STRICT, "{s?I, s?I, s?I}", "critical_days", &crit,
			   "warning_days", &warn, "notice_days", &notice) != 0) {
		r = fail(err, -EBADMSG, "thresholds: %s", je.text);
		goto out;
	}
	if (crit < 0 || notice > KS_CONF_DAYS_MAX || crit > warn || warn > notice) {
		r = fail(err, -EBADMSG, "thresholds: 0 <= critical_days <= warning_days <= notice_days <= %d",
			 KS_CONF_DAYS_MAX);
		goto out;
	}
	c->thresholds.critical_days = (int)crit;
	c->thresholds.warning_days = (int)warn;
	c->thresholds.notice_days = (int)notice;
	if (verify != NULL &&
	    json_unpack_ex(verify, &je, JSON_STRICT, "{s?I, s?I}", "connect_timeout_ms", &conn,
			   "handshake_timeout_ms", &hs) != 0) {
		r = fail(err, -EBADMSG, "verify: %s", je.text);
		goto out;
	}
	if (conn < 100 || conn > 60000 || hs < 100 || hs > 60000) {
		r = fail(err, -EBADMSG, "verify: connect_timeout_ms and handshake_timeout_ms: 100..60000");
		goto out;
	}
	c->connect_timeout_ms = (int)conn;
	c->handshake_timeout_ms = (int)hs;
	if (certs != NULL) {
		size_t n = json_is_array(certs) ? json_array_size(certs) : 0;

		if (!json_is_array(certs) || n > KS_CONF_MAX_CERTS) {
			r = fail(err, -EBADMSG, "certificates: an array of at most %d entries", KS_CONF_MAX_CERTS);
			goto out;
		}
		if (n > 0 && (c->certs = calloc(n, sizeof(*c->certs))) == NULL) {
			r = fail(err, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			snprintf(at, sizeof(at), "certificates[%zu]", i);
			c->n_certs = i + 1;
			if ((r = parse_cert(json_array_get(certs, i), at, &c->certs[i], err)) < 0)
				goto out;
			for (size_t k = 0; k < i; k++)
				if (strcmp(c->certs[k].cert, c->certs[i].cert) == 0) {
					r = fail(err, -EBADMSG, "%s.cert: %s is listed twice", at, c->certs[i].cert);
					goto out;
				}
		}
	}
	r = 0;
out:
	if (r < 0)
		ks_conf_free(c);
	json_decref(root);
	return r;
}

int ks_conf_load(const char *path, int must_exist, struct ks_conf *c, char *err)
{
	char why[KS_CI_ERR_MAX], *text = NULL;
	struct stat st;
	size_t len;
	int r;

	ks_conf_init(c);
	if (!must_exist && access(path, F_OK) != 0 && errno == ENOENT)
		return 0;
	if ((r = ks_ci_read_file(path, &text, &len, why)) < 0)
		return fail(err, r, "%s", why);
	/*
	 * Its reload commands run as whoever reads it: the file (after any
	 * symlink) must be root's or ours and writable by nobody else.
	 */
	if (stat(path, &st) != 0) {
		r = fail(err, -errno, "%s: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid()) ||
		   (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		r = fail(err, -EPERM, "%s: must be a regular file owned by root or by uid %u and writable by "
			 "no one else (it names commands to run)", path, (unsigned)geteuid());
	} else if ((r = ks_conf_parse(text, len, c, why)) < 0)
		r = fail(err, r, "%s: %s", path, why);
	free(text);
	return r;
}

const struct ks_conf_cert *ks_conf_find(const struct ks_conf *c, const char *cert_abs)
{
	for (size_t i = 0; i < c->n_certs; i++)
		if (strcmp(c->certs[i].cert, cert_abs) == 0)
			return &c->certs[i];
	return NULL;
}
