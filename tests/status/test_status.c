/*
 * Unit tests of the status classes (certificates minted here with chosen
 * dates, judged at chosen instants), Prometheus label escaping, CRL
 * checks, the certificate configuration's refusals, inventory records and
 * the reload hook runner.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "clients/renew/common/certconf.h"
#include "clients/renew/common/inventory.h"
#include "clients/renew/common/push.h"
#include "clients/status/status.h"

#define DAY 86400LL
/* A fixed "now": 2030-01-01 00:00:00 UTC. Nothing depends on the real clock. */
#define NOW ((time_t)1893456000)

static char tmpdir[256];

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

/* A certificate for @key named @cn, valid from @nb to @na (absolute), signed by @ca_key as @ca (NULL: self). */
static X509 *mint(EVP_PKEY *key, const char *cn, time_t nb, time_t na, X509 *ca, EVP_PKEY *ca_key, long serial)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	assert_non_null(X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &nb));
	assert_non_null(X509_time_adj_ex(X509_getm_notAfter(x), 0, 0, &na));
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, ca != NULL ? X509_get_subject_name(ca) : name);
	X509_set_pubkey(x, key);
	assert_true(X509_sign(x, ca_key != NULL ? ca_key : key, EVP_sha256()) > 0);
	X509_NAME_free(name);
	return x;
}

static const struct ks_conf_thresholds defaults = { 10, 30, 90 };

static enum ks_class classify_left(X509 *cert, long long left_s, const struct ks_conf_thresholds *t)
{
	struct ks_status_facts f = { .cert = cert };
	/* notAfter is fixed; move the clock so that @left_s seconds remain. */
	time_t na = NOW + 200 * DAY;

	return ks_status_classify(&f, t, na - (time_t)left_s);
}

static void test_classes_at_each_boundary(void **state)
{
	EVP_PKEY *k = new_key();
	X509 *c = mint(k, "boundary", NOW - 400 * DAY, NOW + 200 * DAY, NULL, NULL, 1);

	(void)state;
	/* valid up to and including notAfter's second; expired one second later */
	assert_int_equal(classify_left(c, 0, &defaults), KS_CLASS_CRITICAL);
	assert_int_equal(classify_left(c, -1, &defaults), KS_CLASS_EXPIRED);
	assert_int_equal(classify_left(c, -400 * DAY, &defaults), KS_CLASS_EXPIRED);
	/* "within N days" is strictly less than N * 86400 seconds */
	assert_int_equal(classify_left(c, 10 * DAY - 1, &defaults), KS_CLASS_CRITICAL);
	assert_int_equal(classify_left(c, 10 * DAY, &defaults), KS_CLASS_WARNING);
	assert_int_equal(classify_left(c, 30 * DAY - 1, &defaults), KS_CLASS_WARNING);
	assert_int_equal(classify_left(c, 30 * DAY, &defaults), KS_CLASS_NOTICE);
	assert_int_equal(classify_left(c, 90 * DAY - 1, &defaults), KS_CLASS_NOTICE);
	assert_int_equal(classify_left(c, 90 * DAY, &defaults), KS_CLASS_VALID);
	assert_int_equal(classify_left(c, 200 * DAY, &defaults), KS_CLASS_VALID);
	X509_free(c);
	EVP_PKEY_free(k);
}

static void test_configured_thresholds(void **state)
{
	struct ks_conf_thresholds t = { 1, 2, 3 }, none = { 0, 0, 0 };
	EVP_PKEY *k = new_key();
	X509 *c = mint(k, "t", NOW - DAY, NOW + 200 * DAY, NULL, NULL, 2);

	(void)state;
	assert_int_equal(classify_left(c, DAY - 1, &t), KS_CLASS_CRITICAL);
	assert_int_equal(classify_left(c, DAY, &t), KS_CLASS_WARNING);
	assert_int_equal(classify_left(c, 2 * DAY, &t), KS_CLASS_NOTICE);
	assert_int_equal(classify_left(c, 3 * DAY, &t), KS_CLASS_VALID);
	assert_int_equal(classify_left(c, 5 * DAY, &t), KS_CLASS_VALID);
	/* Thresholds of 0: valid until the last second, then expired. */
	assert_int_equal(classify_left(c, 0, &none), KS_CLASS_VALID);
	assert_int_equal(classify_left(c, -1, &none), KS_CLASS_EXPIRED);
	X509_free(c);
	EVP_PKEY_free(k);
}

static void test_not_yet_valid_is_expired(void **state)
{
	EVP_PKEY *k = new_key();
	X509 *c = mint(k, "future", NOW + 10, NOW + 200 * DAY, NULL, NULL, 3);
	struct ks_status_facts f = { .cert = c };

	(void)state;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_EXPIRED);
	assert_int_equal(ks_status_classify(&f, &defaults, NOW + 10), KS_CLASS_VALID);
	X509_free(c);
	EVP_PKEY_free(k);
}

static void test_precedence(void **state)
{
	EVP_PKEY *k = new_key();
	X509 *expired = mint(k, "old", NOW - 100 * DAY, NOW - DAY, NULL, NULL, 4);
	X509 *good = mint(k, "good", NOW - DAY, NOW + 200 * DAY, NULL, NULL, 5);
	struct ks_status_facts f;

	(void)state;
	memset(&f, 0, sizeof(f));
	f.file_missing = 1;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_REMOVED);
	/* not there and not readable: error, never a class that hides the problem */
	f.file_missing = 0;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_ERROR);
	f.cert = expired;
	f.key_missing = 1;
	f.revoked = 1;
	f.outcome = KS_INV_PUSH_FAILED;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_REMOVED);
	f.key_missing = 0;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_REVOKED);
	f.revoked = 0;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_PUSH_FAILED);
	f.outcome = KS_INV_FAILED;   /* a failed renewal leaves the old certificate: judged by its dates */
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_EXPIRED);
	/* ... but a certificate nothing will renew needs someone: at least a warning. */
	f.cert = good;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_WARNING);
	assert_int_equal(ks_status_classify(&f, &defaults, NOW + 150 * DAY), KS_CLASS_WARNING);   /* notice by date */
	assert_int_equal(ks_status_classify(&f, &defaults, NOW + 195 * DAY), KS_CLASS_CRITICAL);  /* worse by date */
	assert_true(ks_class_needs_attention(ks_status_classify(&f, &defaults, NOW)));
	f.outcome = KS_INV_OK;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_VALID);
	f.outcome = KS_INV_PUSH_FAILED;
	assert_int_equal(ks_status_classify(&f, &defaults, NOW), KS_CLASS_PUSH_FAILED);
	X509_free(expired);
	X509_free(good);
	EVP_PKEY_free(k);
}

static void test_names_colours_exit(void **state)
{
	enum ks_class ok[] = { KS_CLASS_VALID, KS_CLASS_NOTICE };
	enum ks_class warn[] = { KS_CLASS_VALID, KS_CLASS_WARNING };
	enum ks_class err[] = { KS_CLASS_CRITICAL, KS_CLASS_ERROR };

	(void)state;
	assert_string_equal(ks_class_name(KS_CLASS_REVOKED), "revoked");
	assert_string_equal(ks_class_colour(KS_CLASS_REVOKED), "black");
	assert_string_equal(ks_class_colour(KS_CLASS_PUSH_FAILED), "gray");
	assert_string_equal(ks_class_colour(KS_CLASS_EXPIRED), "red");
	assert_string_equal(ks_class_colour(KS_CLASS_CRITICAL), "orange");
	assert_string_equal(ks_class_colour(KS_CLASS_WARNING), "yellow");
	assert_string_equal(ks_class_colour(KS_CLASS_NOTICE), "blue");
	assert_string_equal(ks_class_colour(KS_CLASS_VALID), "green");
	assert_string_equal(ks_class_colour(KS_CLASS_REMOVED), "purple");
	assert_string_equal(ks_class_ansi(KS_CLASS_EXPIRED), "\033[31m");
	assert_int_equal(ks_status_exit(ok, 2, 0), KS_EXIT_OK);
	assert_int_equal(ks_status_exit(NULL, 0, 0), KS_EXIT_OK);
	assert_int_equal(ks_status_exit(warn, 2, 0), KS_EXIT_ATTENTION);
	assert_int_equal(ks_status_exit(ok, 2, 1), KS_EXIT_INTERNAL);
	assert_int_equal(ks_status_exit(err, 2, 0), KS_EXIT_INTERNAL);
	for (int c = KS_CLASS_VALID; c <= KS_CLASS_ERROR; c++)
		assert_int_equal(ks_class_needs_attention((enum ks_class)c),
				 c != KS_CLASS_VALID && c != KS_CLASS_NOTICE && c != KS_CLASS_ERROR);
}

static void test_prometheus_escaping(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(ks_prom_escape("/etc/a.pem", out, sizeof(out)), 10);
	assert_string_equal(out, "/etc/a.pem");
	assert_int_equal(ks_prom_escape("a\\b\"c\nd", out, sizeof(out)), 10);
	assert_string_equal(out, "a\\\\b\\\"c\\nd");
	/* valid UTF-8 kept; a stray byte, an overlong NUL and a surrogate each become U+FFFD */
	ks_prom_escape("\xc3\xa9", out, sizeof(out));
	assert_string_equal(out, "\xc3\xa9");
	ks_prom_escape("x\xffy", out, sizeof(out));
	assert_string_equal(out, "x\xef\xbf\xbdy");
	ks_prom_escape("\xc0\x80", out, sizeof(out));
	assert_string_equal(out, "\xef\xbf\xbd\xef\xbf\xbd");
	ks_prom_escape("\xed\xa0\x80", out, sizeof(out));
	assert_string_equal(out, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	ks_prom_escape("\xe2\x82", out, sizeof(out));   /* cut short at the end */
	assert_string_equal(out, "\xef\xbf\xbd\xef\xbf\xbd");
	/* truncation never splits an escape, and the needed length is returned */
	assert_int_equal(ks_prom_escape("ab\"cd", out, 4), 6);
	assert_string_equal(out, "ab");
	assert_int_equal(ks_prom_escape("ab\"cd", NULL, 0), 6);
}

/* ---- CRLs ---- */

static void write_pem_cert(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
}

static void write_crl(const char *path, X509 *ca, EVP_PKEY *ca_key, long revoked_serial, time_t next)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();
	time_t last = NOW - DAY;
	FILE *f;

	assert_non_null(crl);
	X509_CRL_set_version(crl, 1);
	X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca));
	X509_time_adj_ex(t, 0, 0, &last);
	X509_CRL_set1_lastUpdate(crl, t);
	X509_time_adj_ex(t, 0, 0, &next);
	X509_CRL_set1_nextUpdate(crl, t);
	if (revoked_serial > 0) {
		X509_REVOKED *r = X509_REVOKED_new();
		ASN1_INTEGER *s = ASN1_INTEGER_new();

		ASN1_INTEGER_set(s, revoked_serial);
		X509_REVOKED_set_serialNumber(r, s);
		X509_time_adj_ex(t, 0, 0, &last);
		X509_REVOKED_set_revocationDate(r, t);
		X509_CRL_add0_revoked(crl, r);
		ASN1_INTEGER_free(s);
	}
	X509_CRL_sort(crl);
	assert_true(X509_CRL_sign(crl, ca_key, EVP_sha256()) > 0);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509_CRL(f, crl), 1);
	fclose(f);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
}

static void test_crl(void **state)
{
	EVP_PKEY *ca_key = new_key(), *fake_key = new_key(), *k = new_key();
	X509 *ca = mint(ca_key, "Test CA", NOW - DAY, NOW + 400 * DAY, NULL, NULL, 100);
	/* a look-alike: same name, another key */
	X509 *fake = mint(fake_key, "Test CA", NOW - DAY, NOW + 400 * DAY, NULL, NULL, 101);
	X509 *leaf = mint(k, "leaf", NOW - DAY, NOW + 200 * DAY, ca, ca_key, 7);
	char ca_path[300], crl_path[300], fake_crl[300], char_err[KS_STATUS_ERR_MAX];
	int revoked = -1, stale = -1;

	(void)state;
	snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", tmpdir);
	snprintf(crl_path, sizeof(crl_path), "%s/crl.pem", tmpdir);
	snprintf(fake_crl, sizeof(fake_crl), "%s/fake-crl.pem", tmpdir);
	write_pem_cert(ca_path, ca);

	write_crl(crl_path, ca, ca_key, 8, NOW + 7 * DAY);
	assert_int_equal(ks_crl_check(leaf, crl_path, ca_path, NOW, &revoked, &stale, char_err), 0);
	assert_int_equal(revoked, 0);
	assert_int_equal(stale, 0);

	write_crl(crl_path, ca, ca_key, 7, NOW + 7 * DAY);
	assert_int_equal(ks_crl_check(leaf, crl_path, ca_path, NOW, &revoked, &stale, char_err), 0);
	assert_int_equal(revoked, 1);
	/* past nextUpdate: still used, and said to be stale */
	assert_int_equal(ks_crl_check(leaf, crl_path, ca_path, NOW + 8 * DAY, &revoked, &stale, char_err), 0);
	assert_int_equal(revoked, 1);
	assert_int_equal(stale, 1);

	/* signed by the look-alike: nothing concluded */
	write_crl(fake_crl, fake, fake_key, 7, NOW + 7 * DAY);
	assert_int_equal(ks_crl_check(leaf, fake_crl, ca_path, NOW, &revoked, &stale, char_err), -EPERM);
	assert_non_null(strstr(char_err, "not signed by a CA certificate"));
	/* not a CRL */
	assert_int_equal(ks_crl_check(leaf, ca_path, ca_path, NOW, &revoked, &stale, char_err), -EBADMSG);
	X509_free(ca);
	X509_free(fake);
	X509_free(leaf);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(fake_key);
	EVP_PKEY_free(k);
}

/* ---- configuration ---- */

static int conf_refused(const char *json, const char *want)
{
	struct ks_conf c;
	char err[KS_CONF_ERR_MAX] = "";
	int r = ks_conf_parse(json, strlen(json), &c, err);

	if (r == 0) {
		ks_conf_free(&c);
		print_error("accepted: %s\n", json);
		return 0;
	}
	if (strstr(err, want) == NULL) {
		print_error("error \"%s\" lacks \"%s\"\n", err, want);
		return 0;
	}
	return r == -EBADMSG;
}

static void test_conf_refusals(void **state)
{
	(void)state;
	assert_true(conf_refused("[]", "object"));
	assert_true(conf_refused("{\"certificates\": [], }", "not valid JSON"));
	assert_true(conf_refused("{\"invetory\": \"/x\"}", "invetory"));
	assert_true(conf_refused("{\"inventory\": \"/a\", \"inventory\": \"/b\"}", "duplicate"));
	assert_true(conf_refused("{\"inventory\": \"relative/dir\"}", "absolute"));
	assert_true(conf_refused("{\"inventory\": 5}", "inventory"));
	assert_true(conf_refused("{\"thresholds\": {\"critical_days\": \"10\"}}", "thresholds"));
	assert_true(conf_refused("{\"thresholds\": {\"warning\": 10}}", "warning"));
	assert_true(conf_refused("{\"thresholds\": {\"critical_days\": 40}}", "critical_days <= warning_days"));
	assert_true(conf_refused("{\"thresholds\": {\"notice_days\": 4000}}", "3650"));
	assert_true(conf_refused("{\"verify\": {\"connect_timeout_ms\": 0}}", "100..60000"));
	assert_true(conf_refused("{\"certificates\": {}}", "array"));
	assert_true(conf_refused("{\"certificates\": [{\"key\": \"k\"}]}", "cert"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"colour\": \"red\"}]}", "colour"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\"}, {\"cert\": \"//a\"}]}", "listed twice"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"cert\": \"/b\"}]}", "duplicate"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"endpoints\": "
				 "[{\"host\": \"h\", \"port\": \"443\"}]}]}", "certificates[0].endpoints[0]"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"endpoints\": "
				 "[{\"host\": \"h\", \"port\": 70000}]}]}", "port"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"endpoints\": "
				 "[{\"host\": \"-oProxy\", \"port\": 1}]}]}", "host"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"endpoints\": "
				 "[{\"host\": \"h\", \"port\": 1, \"ip\": \"x\"}]}]}", "ip"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"reload\": \"systemctl reload x\"}]}",
				 "no shell"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"reload\": []}]}", "reload"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"reload\": [\"x\", 1]}]}", "reload[1]"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"reload\": [\"x\"], "
				 "\"reload_timeout\": 0}]}", "reload_timeout"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"verify_after_reload\": true}]}",
				 "no endpoints"));
	assert_true(conf_refused("{\"certificates\": [{\"cert\": \"/a\", \"verify_after_reload\": 1}]}",
				 "verify_after_reload"));
}

static void test_conf_accepted(void **state)
{
	static const char json[] =
		"{\"inventory\": \"/var/lib/x/\", \"thresholds\": {\"critical_days\": 5},"
		" \"certificates\": [{\"cert\": \"/etc//tls/./web.pem\", \"key\": \"web\","
		"  \"endpoints\": [{\"host\": \"127.0.0.1\", \"port\": 8443, \"sni\": \"web.example.org\"},"
		"                  {\"host\": \"::1\", \"port\": 443}],"
		"  \"reload\": [\"/bin/true\", \"--now\"]},"
		" {\"cert\": \"/etc/other.pem\"}]}";
	struct ks_conf c;
	char err[KS_CONF_ERR_MAX];
	const struct ks_conf_cert *cc;

	(void)state;
	assert_int_equal(ks_conf_parse(json, strlen(json), &c, err), 0);
	assert_string_equal(c.inventory, "/var/lib/x");
	assert_int_equal(c.thresholds.critical_days, 5);
	assert_int_equal(c.thresholds.warning_days, KS_CONF_WARNING_DAYS);
	assert_int_equal(c.thresholds.notice_days, KS_CONF_NOTICE_DAYS);
	assert_int_equal(c.connect_timeout_ms, KS_CONF_CONNECT_TIMEOUT_MS);
	assert_int_equal(c.n_certs, 2);
	cc = ks_conf_find(&c, "/etc/tls/web.pem");
	assert_non_null(cc);
	assert_int_equal(cc->n_endpoints, 2);
	assert_int_equal(cc->endpoints[0].port, 8443);
	assert_string_equal(cc->endpoints[0].sni, "web.example.org");
	assert_null(cc->endpoints[1].sni);
	assert_string_equal(cc->reload[1], "--now");
	assert_null(cc->reload[2]);
	assert_int_equal(cc->reload_timeout_s, KS_CONF_RELOAD_TIMEOUT_S);
	assert_int_equal(cc->verify_after_reload, 1);     /* default with endpoints */
	cc = ks_conf_find(&c, "/etc/other.pem");
	assert_non_null(cc);
	assert_int_equal(cc->verify_after_reload, 0);
	assert_null(cc->reload);
	assert_null(ks_conf_find(&c, "/etc/nothing.pem"));
	ks_conf_free(&c);
	/* the default file is optional, a named one is not */
	assert_int_equal(ks_conf_load("/nonexistent/certs.json", 0, &c, err), 0);
	assert_int_equal(c.n_certs, 0);
	assert_int_equal(ks_conf_load("/nonexistent/certs.json", 1, &c, err), -ENOENT);
	/* it names commands to run: writable by others is refused */
	{
		char path[] = "/tmp/keysvc-conf-XXXXXX";
		int fd = mkstemp(path);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, "{}", 2), 2);
		close(fd);
		assert_int_equal(chmod(path, 0644), 0);
		assert_int_equal(ks_conf_load(path, 1, &c, err), 0);
		ks_conf_free(&c);
		assert_int_equal(chmod(path, 0664), 0);
		assert_int_equal(ks_conf_load(path, 1, &c, err), -EPERM);
		assert_non_null(strstr(err, "writable by no one else"));
		assert_int_equal(chmod(path, 0646), 0);
		assert_int_equal(ks_conf_load(path, 1, &c, err), -EPERM);
		unlink(path);
	}
}

/* ---- inventory ---- */

static void count_bad(const char *file, const char *reason, void *ctx)
{
	(void)reason;
	assert_non_null(strstr(file, "0000.json"));
	(*(int *)ctx)++;
}

static void test_inventory_records(void **state)
{
	char dir[300], cert[300], err[KS_INV_ERR_MAX], name[80], path[400];
	struct ks_inv_entry e, *list = NULL;
	size_t n = 0;
	FILE *f;
	struct stat st;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/inv", tmpdir);
	snprintf(cert, sizeof(cert), "%s//certs/./a.pem", tmpdir);
	assert_int_equal(ks_inv_record(dir, cert, "agent1", "openvox", "/ca.pem", "/crl.pem", KS_INV_OK, NULL, NOW,
				       err), 0);
	assert_int_equal(ks_inv_record(dir, cert, NULL, NULL, NULL, NULL, KS_INV_FAILED,
				       "HTTP 500\nsecond line", NOW + 10, err), 0);
	assert_int_equal(ks_inv_record(dir, cert, "agent2", NULL, NULL, NULL, KS_INV_PUSH_FAILED, "hook", NOW + 20,
				       err), 0);
	snprintf(cert, sizeof(cert), "%s/certs/a.pem", tmpdir);
	assert_int_equal(ks_inv_load(dir, cert, &e, err), 0);
	assert_string_equal(e.cert, cert);
	assert_string_equal(e.key, "agent2");        /* replaced */
	assert_string_equal(e.client, "openvox");    /* kept */
	assert_string_equal(e.crl, "/crl.pem");
	assert_int_equal(e.outcome, KS_INV_PUSH_FAILED);
	assert_string_equal(e.reason, "hook");
	assert_int_equal(e.successes, 1);
	assert_int_equal(e.failures, 2);
	assert_int_equal(e.last_renewal, NOW + 20);
	ks_inv_entry_free(&e);
	ks_inv_file_name(cert, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(ks_inv_load(dir, "/not/recorded.pem", &e, err), -ENOENT);

	/* A broken record is reported and skipped; the others are listed. */
	snprintf(path, sizeof(path), "%s/%064d.json", dir, 0);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"version\": 1, \"cert\": \"/x\", \"colour\": \"red\"}", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/notes.txt", dir);   /* not a record name: ignored */
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	{
		int bad = 0;

		assert_int_equal(ks_inv_list(dir, &list, &n, count_bad, &bad, err), 0);
		assert_int_equal(n, 1);
		assert_int_equal(bad, 1);
		assert_string_equal(list[0].cert, cert);
		ks_inv_list_free(list, n);
	}
	/* a missing directory is an empty inventory */
	assert_int_equal(ks_inv_list("/nonexistent/inventory", &list, &n, NULL, NULL, err), 0);
	assert_int_equal(n, 0);

	/* The name `keysvc track` gives survives a client's later record. */
	assert_int_equal(ks_inv_load(dir, cert, &e, err), 0);
	e.name = strdup("web");
	assert_int_equal(ks_inv_save(dir, &e, err), 0);
	ks_inv_entry_free(&e);
	assert_int_equal(ks_inv_record(dir, cert, NULL, NULL, NULL, NULL, KS_INV_OK, NULL, NOW + 30, err), 0);
	assert_int_equal(ks_inv_load(dir, cert, &e, err), 0);
	assert_string_equal(e.name, "web");
	ks_inv_entry_free(&e);

	/* Forgetting deletes the record, and only that one. */
	assert_int_equal(ks_inv_forget(dir, cert, err), 0);
	assert_int_equal(ks_inv_load(dir, cert, &e, err), -ENOENT);
	assert_int_equal(ks_inv_forget(dir, cert, err), -ENOENT);
	snprintf(path, sizeof(path), "%s/%064d.json", dir, 0);
	assert_int_equal(stat(path, &st), 0);
}

static void test_inventory_parse_refusals(void **state)
{
	static const char *bad[] = {
		"{\"version\": 1, \"cert\": \"/a\", \"cert\": \"/b\"}",
		"{\"version\": 1, \"cert\": \"/a\", \"extra\": 1}",
		"{\"version\": 2, \"cert\": \"/a\"}",
		"{\"version\": 1, \"cert\": \"a\"}",
		"{\"version\": 1, \"cert\": \"/a\", \"outcome\": \"fine\"}",
		"{\"version\": 1, \"cert\": \"/a\", \"successes\": -1}",
		"{\"version\": 1, \"cert\": \"/a\", \"failures\": \"2\"}",
		"{\"version\": 1, \"cert\": \"/a\\nb\"}",
		"{\"cert\": \"/a\"}",
		"{\"version\": 1, \"cert\": \"/a\", \"name\": 7}",
		"{\"version\": 1, \"cert\": \"/a\", \"name\": \"w\\u001beb\"}",
	};
	struct ks_inv_entry e;
	char err[KS_INV_ERR_MAX];
	const char *good = "{\"version\": 1, \"cert\": \"/a\", \"outcome\": \"push-failed\", \"failures\": 3}";

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ks_inv_parse(bad[i], strlen(bad[i]), &e, err) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
	}
	assert_int_equal(ks_inv_parse(good, strlen(good), &e, err), 0);
	assert_int_equal(e.outcome, KS_INV_PUSH_FAILED);
	assert_int_equal(e.failures, 3);
	ks_inv_entry_free(&e);
}

static void test_abs_path(void **state)
{
	char *p;

	(void)state;
	p = ks_inv_abs_path("/a//b/./c/");
	assert_string_equal(p, "/a/b/c");
	free(p);
	p = ks_inv_abs_path("/");
	assert_string_equal(p, "/");
	free(p);
	assert_int_equal(chdir(tmpdir), 0);
	p = ks_inv_abs_path("x.pem");
	assert_int_equal(strncmp(p, tmpdir, strlen(tmpdir)), 0);
	assert_string_equal(p + strlen(tmpdir), "/x.pem");
	free(p);
	assert_null(ks_inv_abs_path(""));
}

/* ---- hooks ---- */

static void test_hook_runner(void **state)
{
	char *ok[] = { "true", NULL }, *fails[] = { "sh", "-c", "exit 3", NULL };
	char *hangs[] = { "sh", "-c", "sleep 30; exit 0", NULL }, *missing[] = { "/nonexistent/reload", NULL };
	char reason[KS_PUSH_REASON_MAX];
	time_t t0;

	(void)state;
	assert_int_equal(ks_hook_run(ok, 5000, reason, sizeof(reason)), 0);
	assert_int_equal(ks_hook_run(fails, 5000, reason, sizeof(reason)), -1);
	assert_string_equal(reason, "sh exited with status 3");
	t0 = time(NULL);
	assert_int_equal(ks_hook_run(hangs, 1000, reason, sizeof(reason)), -1);
	assert_non_null(strstr(reason, "timed out after 1 s"));
	/* the whole group was killed: we did not wait for the sleep */
	assert_true(time(NULL) - t0 < 10);
	assert_int_equal(ks_hook_run(missing, 1000, reason, sizeof(reason)), -1);
	assert_string_equal(reason, "cannot run /nonexistent/reload: No such file or directory");
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether process @pid is gone (or a zombie nobody reaped yet): /proc/PID/stat. */
static int process_gone(long pid)
{
	char path[64], stat[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if ((f = fopen(path, "r")) == NULL)
		return 1;
	n = fread(stat, 1, sizeof(stat) - 1, f);
	fclose(f);
	stat[n] = '\0';
	/* "PID (comm) S ...": the state follows the last ')'. */
	return (p = strrchr(stat, ')')) != NULL && p[1] == ' ' && p[2] == 'Z';
}

/*
 * A hook that outlives its timeout gets SIGTERM and KS_HOOK_GRACE_MS to
 * clean up before SIGKILL: one that traps SIGTERM gets to write its marker
 * and exit; one that ignores it (and its child, which inherits that) is
 * killed with its whole group once the grace is over.
 */
static void test_hook_sigterm_grace(void **state)
{
	char marker[300], pidfile[300], traps_cmd[700], ignores_cmd[700], reason[KS_PUSH_REASON_MAX];
	char *traps[] = { "sh", "-c", traps_cmd, NULL }, *ignores[] = { "sh", "-c", ignores_cmd, NULL };
	long long t0, took;
	long child = 0;
	FILE *f;

	(void)state;
	snprintf(marker, sizeof(marker), "%s/hook-cleaned-up", tmpdir);
	snprintf(pidfile, sizeof(pidfile), "%s/hook-child", tmpdir);
	snprintf(traps_cmd, sizeof(traps_cmd),
		 "trap 'echo cleaned up >%s; exit 0' TERM; sleep 30 & wait", marker);
	t0 = mono_ms();
	assert_int_equal(ks_hook_run(traps, 1000, reason, sizeof(reason)), -1);
	took = mono_ms() - t0;
	assert_int_equal(access(marker, F_OK), 0);
	assert_string_equal(reason, "sh timed out after 1 s and was stopped (SIGTERM)");
	assert_true(took >= 1000 && took < 1000 + KS_HOOK_GRACE_MS);

	snprintf(ignores_cmd, sizeof(ignores_cmd),
		 "trap '' TERM; sleep 30 & echo $! >%s; wait; wait", pidfile);
	/* 2 s: time enough to write the child's pid on a busy machine. */
	t0 = mono_ms();
	assert_int_equal(ks_hook_run(ignores, 2000, reason, sizeof(reason)), -1);
	took = mono_ms() - t0;
	assert_string_equal(reason, "sh timed out after 2 s and was killed (SIGKILL, 5 s after SIGTERM)");
	assert_true(took >= 2000 + KS_HOOK_GRACE_MS - 50 && took < 2000 + KS_HOOK_GRACE_MS + 3000);
	assert_non_null(f = fopen(pidfile, "r"));
	assert_int_equal(fscanf(f, "%ld", &child), 1);
	fclose(f);
	/* The group's SIGKILL reached the hook's child too (reaped by whoever adopted it). */
	t0 = mono_ms();
	while (!process_gone(child) && mono_ms() - t0 < 3000)
		usleep(20 * 1000);
	assert_true(process_gone(child));
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/ks-status-XXXXXX", getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[400];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes_at_each_boundary),
		cmocka_unit_test(test_configured_thresholds),
		cmocka_unit_test(test_not_yet_valid_is_expired),
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_names_colours_exit),
		cmocka_unit_test(test_prometheus_escaping),
		cmocka_unit_test(test_crl),
		cmocka_unit_test(test_conf_refusals),
		cmocka_unit_test(test_conf_accepted),
		cmocka_unit_test(test_inventory_records),
		cmocka_unit_test(test_inventory_parse_refusals),
		cmocka_unit_test(test_abs_path),
		cmocka_unit_test(test_hook_runner),
		cmocka_unit_test(test_hook_sigterm_grace),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
