/*
 * The renewal clients' pure parts: certificate checks, atomic
 * installation, and the OpenVox rules (status codes, due dates, certnames,
 * X-Client-Cert encoding).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/openvox/openvox.h"

static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	assert_non_null(k);
	return k;
}

/*
 * A certificate for @pub, CN @cn, issued by @ca_key/@ca (self-signed if
 * @ca is NULL), valid [from, to] from now; a CA (CA:true) when @is_ca is
 * 1, CA:false when 0; when -1 no basicConstraints but keyUsage keyCertSign
 * (what OpenSSL's X509_check_ca() also counts as a CA).
 */
static X509 *make_x509(EVP_PKEY *pub, const char *cn, EVP_PKEY *ca_key, X509 *ca, long from, long to,
		       int is_ca)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	assert_non_null(x);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)random());
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, ca != NULL ? X509_get_subject_name(ca) : name);
	X509_gmtime_adj(X509_getm_notBefore(x), from);
	X509_gmtime_adj(X509_getm_notAfter(x), to);
	X509_set_pubkey(x, pub);
	X509V3_set_ctx(&v3, ca != NULL ? ca : x, x, NULL, NULL, 0);
	if (is_ca < 0)
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, "critical,keyCertSign");
	else
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
					  is_ca ? "critical,CA:true" : "CA:false");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
	X509_NAME_free(name);
	return x;
}

/* A self-signed CA when @ca is NULL, else a leaf issued by @ca_key/@ca. */
static X509 *make_cert(EVP_PKEY *pub, const char *cn, EVP_PKEY *ca_key, X509 *ca, long from, long to)
{
	return make_x509(pub, cn, ca_key, ca, from, to, ca == NULL);
}

/* An intermediate: a CA issued by @ca_key/@ca. */
static X509 *make_sub_ca(EVP_PKEY *pub, const char *cn, EVP_PKEY *ca_key, X509 *ca, long from, long to)
{
	return make_x509(pub, cn, ca_key, ca, from, to, 1);
}

static STACK_OF(X509) *stack_of(X509 *a, X509 *b)
{
	STACK_OF(X509) *s = sk_X509_new_null();

	assert_non_null(s);
	X509_up_ref(a);
	sk_X509_push(s, a);
	if (b != NULL) {
		X509_up_ref(b);
		sk_X509_push(s, b);
	}
	return s;
}

static char *to_pem(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_true(PEM_write_bio_X509(b, x));
	n = BIO_get_mem_data(b, &data);
	out = strndup(data, (size_t)n);
	BIO_free(b);
	return out;
}

struct pki {
	EVP_PKEY *ca_key, *key, *other_key;
	X509 *ca, *foreign_ca;
	EVP_PKEY *foreign_key;
	STACK_OF(X509) *trusted;
};

static int pki_setup(void **state)
{
	struct pki *p = calloc(1, sizeof(*p));

	p->ca_key = ec_key();
	p->key = ec_key();
	p->other_key = ec_key();
	p->foreign_key = ec_key();
	p->ca = make_cert(p->ca_key, "test CA", p->ca_key, NULL, -60, 86400 * 10);
	p->foreign_ca = make_cert(p->foreign_key, "test CA", p->foreign_key, NULL, -60, 86400 * 10);
	p->trusted = sk_X509_new_null();
	X509_up_ref(p->ca);
	sk_X509_push(p->trusted, p->ca);
	*state = p;
	return 0;
}

static int pki_teardown(void **state)
{
	struct pki *p = *state;

	EVP_PKEY_free(p->ca_key);
	EVP_PKEY_free(p->key);
	EVP_PKEY_free(p->other_key);
	EVP_PKEY_free(p->foreign_key);
	X509_free(p->ca);
	X509_free(p->foreign_ca);
	sk_X509_pop_free(p->trusted, X509_free);
	free(p);
	return 0;
}

static void test_parse(void **state)
{
	struct pki *p = *state;
	char err[KS_CI_ERR_MAX], *pem = to_pem(p->ca), *two, *junk;
	STACK_OF(X509) *bundle = NULL;
	X509 *x = NULL;

	assert_int_equal(ks_ci_parse_one(pem, strlen(pem), &x, err), 0);
	assert_int_equal(X509_cmp(x, p->ca), 0);
	X509_free(x);
	assert_int_equal(asprintf(&two, "%s\n%s", pem, pem), (int)(2 * strlen(pem) + 1));
	assert_int_equal(ks_ci_parse_one(two, strlen(two), &x, err), -EBADMSG);
	assert_null(x);
	assert_int_equal(ks_ci_parse_bundle(two, strlen(two), &bundle, err), 0);
	assert_int_equal(sk_X509_num(bundle), 2);
	sk_X509_pop_free(bundle, X509_free);
	/* Anything around or between certificates is refused, not skipped. */
	assert_int_equal(asprintf(&junk, "<html>%s", pem), (int)strlen(pem) + 6);
	assert_int_equal(ks_ci_parse_one(junk, strlen(junk), &x, err), -EBADMSG);
	free(junk);
	assert_int_equal(asprintf(&junk, "%s-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", pem),
			 (int)strlen(pem) + 59);
	assert_int_equal(ks_ci_parse_one(junk, strlen(junk), &x, err), -EBADMSG);
	free(junk);
	assert_int_equal(ks_ci_parse_one("garbage", 7, &x, err), -EBADMSG);
	assert_int_equal(ks_ci_parse_one("", 0, &x, err), -EBADMSG);
	/* Cut short, and a body of the right shape that does not parse. */
	assert_int_equal(ks_ci_parse_one(pem, strlen(pem) - 30, &x, err), -EBADMSG);
	assert_int_equal(ks_ci_parse_one("-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n", 59,
					 &x, err), -EBADMSG);
	assert_int_equal(ks_ci_parse_one(pem, KS_CI_PEM_MAX + 1, &x, err), -EMSGSIZE);
	free(two);
	free(pem);
}

static void test_check(void **state)
{
	struct pki *p = *state;
	X509 *good = make_cert(p->key, "agent1", p->ca_key, p->ca, -60, 86400 * 5);
	X509 *later = make_cert(p->key, "agent1", p->ca_key, p->ca, -60, 86400 * 8);
	X509 *expired = make_cert(p->key, "agent1", p->ca_key, p->ca, -86400 * 3, -86400);
	X509 *future = make_cert(p->key, "agent1", p->ca_key, p->ca, 86400, 86400 * 3);
	X509 *foreign = make_cert(p->key, "agent1", p->foreign_key, p->foreign_ca, -60, 86400 * 5);
	X509 *other = make_cert(p->other_key, "agent1", p->ca_key, p->ca, -60, 86400 * 5);
	X509 *wrong_cn = make_cert(p->key, "agent2", p->ca_key, p->ca, -60, 86400 * 5);
	struct ks_ci_expect exp = { .public_key = p->key, .trusted = p->trusted, .common_name = "agent1" };
	char err[KS_CI_ERR_MAX];

	assert_int_equal(ks_ci_check(good, NULL, &exp, err), 0);
	assert_int_equal(ks_ci_check(other, NULL, &exp, err), -EKEYREJECTED);
	/* Same subject and issuer name as the real CA, other key: it must not pass. */
	assert_int_equal(ks_ci_check(foreign, NULL, &exp, err), -EPERM);
	assert_non_null(strstr(err, "does not chain"));
	assert_int_equal(ks_ci_check(expired, NULL, &exp, err), -ETIME);
	assert_non_null(strstr(err, "expired"));
	assert_int_equal(ks_ci_check(future, NULL, &exp, err), -ETIME);
	assert_int_equal(ks_ci_check(wrong_cn, NULL, &exp, err), -EBADMSG);
	assert_non_null(strstr(err, "CN=agent2"));
	exp.later_than = X509_get0_notAfter(good);
	assert_int_equal(ks_ci_check(later, NULL, &exp, err), 0);
	assert_int_equal(ks_ci_check(good, NULL, &exp, err), -ESTALE);
	X509_free(good);
	X509_free(later);
	X509_free(expired);
	X509_free(future);
	X509_free(foreign);
	X509_free(other);
	X509_free(wrong_cn);
}

/*
 * OpenSSL reports the first error from the top of the chain down: an
 * expired CA comes before the leaf's signature is looked at. A forged leaf
 * (right names, signed by another key) under an expired CA must still be
 * refused, and refused as not chaining, not as merely expired.
 */
static void test_check_expired_ca(void **state)
{
	struct pki *p = *state;
	EVP_PKEY *old_key = ec_key(), *mid_key = ec_key(), *forger = ec_key();
	X509 *old_root = make_cert(old_key, "old CA", old_key, NULL, -86400 * 30, -86400);
	X509 *forged_under_old = make_cert(p->key, "agent1", forger, old_root, -60, 86400 * 5);
	X509 *genuine_under_old = make_cert(p->key, "agent1", old_key, old_root, -60, 86400 * 5);
	X509 *old_mid = make_sub_ca(mid_key, "signing CA", p->ca_key, p->ca, -86400 * 30, -86400);
	X509 *forged_under_mid = make_cert(p->key, "agent1", forger, old_mid, -60, 86400 * 5);
	X509 *genuine_under_mid = make_cert(p->key, "agent1", mid_key, old_mid, -60, 86400 * 5);
	X509 *expired_leaf = make_cert(p->key, "agent1", p->ca_key, p->ca, -86400 * 3, -86400);
	STACK_OF(X509) *old_trusted = stack_of(old_root, NULL), *mid_chain = stack_of(old_mid, NULL);
	struct ks_ci_expect exp = { .public_key = p->key, .trusted = old_trusted, .common_name = "agent1" };
	char err[KS_CI_ERR_MAX];

	/* The pinned root itself has expired. */
	assert_int_equal(ks_ci_check(forged_under_old, NULL, &exp, err), -EPERM);
	assert_non_null(strstr(err, "does not chain"));
	assert_int_equal(ks_ci_check(genuine_under_old, NULL, &exp, err), -EPERM);
	assert_non_null(strstr(err, "expired"));
	/* An expired intermediate from the server, under a valid pinned root. */
	exp.trusted = p->trusted;
	assert_int_equal(ks_ci_check(forged_under_mid, mid_chain, &exp, err), -EPERM);
	assert_int_equal(ks_ci_check(genuine_under_mid, mid_chain, &exp, err), -EPERM);
	assert_non_null(strstr(err, "signing CA"));
	/* Only a leaf whose one fault is its dates is called expired. */
	assert_int_equal(ks_ci_check(expired_leaf, NULL, &exp, err), -ETIME);
	assert_non_null(strstr(err, "the certificate expired at"));
	X509_free(old_root);
	X509_free(forged_under_old);
	X509_free(genuine_under_old);
	X509_free(old_mid);
	X509_free(forged_under_mid);
	X509_free(genuine_under_mid);
	X509_free(expired_leaf);
	sk_X509_pop_free(old_trusted, X509_free);
	sk_X509_pop_free(mid_chain, X509_free);
	EVP_PKEY_free(old_key);
	EVP_PKEY_free(mid_key);
	EVP_PKEY_free(forger);
}

/*
 * A root and an intermediate signing CA, the leaf issued by the
 * intermediate (puppetserver's default CA, a UCL connector without a root
 * secret): pinning the root with the intermediate given as untrusted works,
 * and so does pinning the intermediate alone.
 */
static void test_check_intermediate(void **state)
{
	struct pki *p = *state;
	EVP_PKEY *mid_key = ec_key();
	X509 *mid = make_sub_ca(mid_key, "signing CA", p->ca_key, p->ca, -60, 86400 * 10);
	X509 *leaf = make_cert(p->key, "agent1", mid_key, mid, -60, 86400 * 5);
	X509 *foreign_mid = make_sub_ca(mid_key, "signing CA", p->foreign_key, p->foreign_ca, -60, 86400 * 10);
	STACK_OF(X509) *mid_only = stack_of(mid, NULL), *foreign_chain = stack_of(foreign_mid, NULL);
	struct ks_ci_expect exp = { .public_key = p->key, .trusted = p->trusted, .common_name = "agent1" };
	char err[KS_CI_ERR_MAX];

	/* Root pinned: the intermediate must come with the answer. */
	assert_int_equal(ks_ci_check(leaf, mid_only, &exp, err), 0);
	assert_int_equal(ks_ci_check(leaf, NULL, &exp, err), -EPERM);
	/* The same key and names under another root do not chain to the pinned one. */
	assert_int_equal(ks_ci_check(leaf, foreign_chain, &exp, err), -EPERM);
	/* Only the intermediate pinned: an anchor, although not self-signed. */
	exp.trusted = mid_only;
	assert_int_equal(ks_ci_check(leaf, NULL, &exp, err), 0);
	assert_int_equal(ks_ci_check(leaf, mid_only, &exp, err), 0);
	X509_free(mid);
	X509_free(leaf);
	X509_free(foreign_mid);
	sk_X509_pop_free(mid_only, X509_free);
	sk_X509_pop_free(foreign_chain, X509_free);
	EVP_PKEY_free(mid_key);
}

static char *slurp(const char *path)
{
	char *buf, err[KS_CI_ERR_MAX];
	size_t len;

	if (ks_ci_read_file(path, &buf, &len, err) != 0)
		return NULL;
	return buf;
}

static void test_install(void **state)
{
	char dir[] = "/tmp/ks-install.XXXXXX", path[256], prev[256], err[KS_CI_ERR_MAX], *s;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/cert.pem", dir);
	snprintf(prev, sizeof(prev), "%s/cert.pem.prev", dir);
	assert_int_equal(ks_ci_install(path, "one\n", 4, 0644, err), 0);
	assert_int_equal(stat(prev, &st), -1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(ks_ci_install(path, "two\n", 4, 0600, err), 0);
	assert_string_equal((s = slurp(path)), "two\n");
	free(s);
	assert_string_equal((s = slurp(prev)), "one\n");
	free(s);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(ks_ci_install(path, "three\n", 6, 0644, err), 0);
	assert_string_equal((s = slurp(prev)), "two\n");
	free(s);
	/* A directory that cannot be written: the installed file stays as it was. */
	if (geteuid() != 0) {
		assert_int_equal(chmod(dir, 0500), 0);
		assert_true(ks_ci_install(path, "four\n", 5, 0644, err) < 0);
		assert_int_equal(chmod(dir, 0700), 0);
		assert_string_equal((s = slurp(path)), "three\n");
		free(s);
	}
	snprintf(path, sizeof(path), "%s/missing-dir/cert.pem", dir);
	assert_true(ks_ci_install(path, "x", 1, 0644, err) < 0);
	/* Nothing but the two files is left behind. */
	snprintf(path, sizeof(path), "test $(ls -A '%s' | wc -l) -eq 2", dir);
	assert_int_equal(system(path), 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[512], err[KS_CI_ERR_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(ks_ci_write_atomic(path, text, strlen(text), 0644, err), 0);
}

static void has(const char *dir, const char *name, const char *text)
{
	char path[512], *s;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	s = slurp(path);
	assert_non_null(s);
	assert_string_equal(s, text);
	free(s);
}

static void absent(const char *dir, const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &st), -1);
}

/*
 * Three files that belong together: all replaced, or none. A failure in
 * the last rename (its .prev cannot be made: a directory is in the way,
 * which stops root too) puts the first two back; a failure while writing
 * (a directory that does not exist) touches nothing.
 */
static void test_install_all(void **state)
{
	char dir[] = "/tmp/ks-install-all.XXXXXX", a[256], b[256], c[256], cmd[600], err[KS_CI_ERR_MAX];
	struct ks_ci_file files[3];

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/ca.pem", dir);
	snprintf(b, sizeof(b), "%s/chain.pem", dir);
	snprintf(c, sizeof(c), "%s/cert.pem", dir);
	files[0] = (struct ks_ci_file){ a, "ca2\n", 4, 0644 };
	files[1] = (struct ks_ci_file){ b, "chain2\n", 7, 0644 };
	files[2] = (struct ks_ci_file){ c, "cert2\n", 6, 0644 };

	put(dir, "ca.pem", "ca1\n");
	put(dir, "chain.pem", "chain1\n");
	put(dir, "cert.pem", "cert1\n");
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s/cert.pem.prev/x'", dir);
	assert_int_equal(system(cmd), 0);

	/* The last .prev cannot be made: the first two are put back. */
	assert_true(ks_ci_install_all(files, 3, err) < 0);
	assert_non_null(strstr(err, "cert.pem.prev"));
	has(dir, "ca.pem", "ca1\n");
	has(dir, "chain.pem", "chain1\n");
	has(dir, "cert.pem", "cert1\n");
	absent(dir, "ca.pem.prev");
	absent(dir, "chain.pem.prev");

	/* Files that did not exist before are removed again. */
	snprintf(cmd, sizeof(cmd), "cd '%s' && rm -f ca.pem chain.pem", dir);
	assert_int_equal(system(cmd), 0);
	assert_true(ks_ci_install_all(files, 3, err) < 0);
	absent(dir, "ca.pem");
	absent(dir, "chain.pem");
	has(dir, "cert.pem", "cert1\n");
	put(dir, "ca.pem", "ca1\n");
	put(dir, "chain.pem", "chain1\n");

	/* Writing fails (no such directory): nothing is replaced. */
	snprintf(c, sizeof(c), "%s/missing-dir/cert.pem", dir);
	assert_true(ks_ci_install_all(files, 3, err) < 0);
	has(dir, "ca.pem", "ca1\n");
	has(dir, "chain.pem", "chain1\n");
	absent(dir, "ca.pem.prev");

	/* And once nothing is in the way, all three go in with their .prev. */
	snprintf(c, sizeof(c), "%s/cert.pem", dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/cert.pem.prev'", dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(ks_ci_install_all(files, 3, err), 0);
	has(dir, "ca.pem", "ca2\n");
	has(dir, "chain.pem", "chain2\n");
	has(dir, "cert.pem", "cert2\n");
	has(dir, "ca.pem.prev", "ca1\n");
	has(dir, "cert.pem.prev", "cert1\n");
	/* No temporary file is left behind. */
	snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | grep -c ks-tmp) -eq 0", dir);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* Which certificates of a bundle the pinned ones vouch for. */
static void test_vouched(void **state)
{
	struct pki *p = *state;
	EVP_PKEY *mid_key = ec_key();
	X509 *mid = make_sub_ca(mid_key, "signing CA", p->ca_key, p->ca, -60, 86400 * 10);
	X509 *old_mid = make_sub_ca(mid_key, "old signing CA", p->ca_key, p->ca, -86400 * 30, -86400);
	X509 *leaf = make_cert(p->key, "agent1", p->ca_key, p->ca, -60, 86400 * 5);
	STACK_OF(X509) *bundle = sk_X509_new_null(), *kept = NULL, *mid_only = stack_of(mid, NULL);
	char err[KS_CI_ERR_MAX];

	/* [genuine root, attacker root, intermediate, expired intermediate, a leaf] */
	sk_X509_push(bundle, p->ca);
	sk_X509_push(bundle, p->foreign_ca);
	sk_X509_push(bundle, mid);
	sk_X509_push(bundle, old_mid);
	sk_X509_push(bundle, leaf);
	assert_int_equal(ks_ci_vouched(bundle, p->trusted, NULL, 0, &kept, err), 3);
	assert_int_equal(sk_X509_num(kept), 2);
	assert_int_equal(X509_cmp(sk_X509_value(kept, 0), p->ca), 0);
	assert_int_equal(X509_cmp(sk_X509_value(kept, 1), mid), 0);
	assert_non_null(strstr(err, "test CA"));
	sk_X509_pop_free(kept, X509_free);
	/* Only the intermediate pinned: the root above it is not vouched for. */
	assert_int_equal(ks_ci_vouched(bundle, mid_only, NULL, 0, &kept, err), 4);
	assert_int_equal(sk_X509_num(kept), 1);
	assert_int_equal(X509_cmp(sk_X509_value(kept, 0), mid), 0);
	sk_X509_pop_free(kept, X509_free);
	/* Nothing in common: nothing kept. */
	sk_X509_delete(bundle, 0);
	sk_X509_delete(bundle, 1);
	assert_int_equal(sk_X509_num(bundle), 3);   /* [attacker root, expired intermediate, leaf] */
	assert_int_equal(ks_ci_vouched(bundle, p->trusted, NULL, 0, &kept, err), 3);
	assert_int_equal(sk_X509_num(kept), 0);
	sk_X509_pop_free(kept, X509_free);
	sk_X509_free(bundle);
	/* A "CA" by keyUsage alone, signed by the pinned CA: not basicConstraints CA:TRUE, not kept. */
	{
		X509 *ku_only = make_x509(mid_key, "keyCertSign only", p->ca_key, p->ca, -60, 86400, -1);

		bundle = stack_of(p->ca, ku_only);
		assert_int_equal(X509_check_ca(ku_only), 4);
		assert_int_equal(ks_ci_vouched(bundle, p->trusted, NULL, 0, &kept, err), 1);
		assert_int_equal(sk_X509_num(kept), 1);
		assert_int_equal(X509_cmp(sk_X509_value(kept, 0), p->ca), 0);
		sk_X509_pop_free(kept, X509_free);
		sk_X509_pop_free(bundle, X509_free);
		X509_free(ku_only);
	}
	sk_X509_pop_free(mid_only, X509_free);
	X509_free(mid);
	X509_free(old_mid);
	X509_free(leaf);
	EVP_PKEY_free(mid_key);
}

static void test_read_file(void **state)
{
	char err[KS_CI_ERR_MAX], *buf;
	size_t len;

	(void)state;
	assert_int_equal(ks_ci_read_file("/nonexistent/x.pem", &buf, &len, err), -ENOENT);
	assert_null(buf);
	assert_int_equal(ks_ci_read_file("/tmp", &buf, &len, err), -EINVAL);
}

static void test_openvox_status(void **state)
{
	static const char forbidden[] = "Forbidden request: /puppet-ca/v1/certificate_renewal (method :post). "
					"Please see the server logs for details.";
	char msg[OVX_MSG_MAX];

	(void)state;
	assert_int_equal(ovx_renewal_result(200, "x", 1, msg, sizeof(msg)), OVX_RENEWED);
	assert_int_equal(ovx_renewal_result(404, "Not Found", 9, msg, sizeof(msg)), OVX_RENEWAL_DISABLED);
	assert_non_null(strstr(msg, "auto-renewal is disabled"));
	assert_non_null(strstr(msg, "certificate-authority.allow-auto-renewal"));
	assert_int_equal(ovx_renewal_result(403, "Certificate present, but does not match signature", 49, msg,
					    sizeof(msg)), OVX_NOT_THIS_CA);
	assert_non_null(strstr(msg, "not signed by this CA"));
	/* tk-authorization's 403 is the server's auth.conf: the rule to add, never "not this CA". */
	assert_int_equal(ovx_renewal_result(403, forbidden, strlen(forbidden), msg, sizeof(msg)), OVX_AUTH_DENIED);
	assert_null(strstr(msg, "not signed by this CA"));
	assert_non_null(strstr(msg, "auth.conf"));
	assert_non_null(strstr(msg, "path: \"^/puppet-ca/v1/certificate_renewal$\", type: regex, method: post"));
	assert_non_null(strstr(msg, "before 8 have no renewal endpoint"));
	assert_non_null(strstr(msg, "sort-order: 500"));
	assert_true(strlen(msg) < sizeof(msg) - 1);
	/* Any other 403 is neither. */
	assert_int_equal(ovx_renewal_result(403, "Forbidden", 9, msg, sizeof(msg)), OVX_UNEXPECTED);
	assert_null(strstr(msg, "not signed by this CA"));
	assert_non_null(strstr(msg, "HTTP 403"));
	assert_int_equal(ovx_renewal_result(400, "No valid certificate found in renewal request", 45, msg,
					    sizeof(msg)), OVX_NO_CLIENT_CERT);
	assert_non_null(strstr(msg, "no client certificate"));
	/* Other statuses quote the CA, one line, no control characters. */
	assert_int_equal(ovx_renewal_result(500, "boom\x1b[31m\nsecond line", 21, msg, sizeof(msg)),
			 OVX_UNEXPECTED);
	assert_non_null(strstr(msg, "HTTP 500"));
	assert_non_null(strstr(msg, "boom?[31m"));
	assert_null(strstr(msg, "second"));
	assert_int_equal(ovx_renewal_result(302, NULL, 0, msg, sizeof(msg)), OVX_UNEXPECTED);
}

static void test_openvox_csr_answer(void **state)
{
	static const char *const refused[] = {
		"CSR 'a.example.org' contains extra subject alternative names (DNS:x), which are disallowed.",
		"Found extensions that are not permitted: 2.5.29.15",
		"a.example.org already has a revoked certificate; ignoring certificate request",
		/* A policy text that quotes a duplicate text is still a refusal. */
		"a.example.org already has a signed certificate; ignoring certificate request (and more)",
		"b.example.org already has a signed certificate; ignoring certificate request",
		"",
	};
	const char *already = "a.example.org already has a requested certificate; ignoring certificate request\n";

	(void)state;
	assert_int_equal(ovx_csr_answer(200, "", 0, "a.example.org"), OVX_CSR_SUBMITTED);
	assert_int_equal(ovx_csr_answer(400, already, strlen(already), "a.example.org"), OVX_CSR_ALREADY);
	already = "a.example.org already has a signed certificate; ignoring certificate request";
	assert_int_equal(ovx_csr_answer(400, already, strlen(already), "a.example.org"), OVX_CSR_ALREADY);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		assert_int_equal(ovx_csr_answer(400, refused[i], strlen(refused[i]), "a.example.org"), OVX_CSR_REFUSED);
	assert_int_equal(ovx_csr_answer(400, NULL, 0, "a.example.org"), OVX_CSR_REFUSED);
	assert_int_equal(ovx_csr_answer(500, "boom", 4, "a.example.org"), OVX_CSR_UNEXPECTED);
}

static void test_openvox_escape(void **state)
{
	char out[OVX_ESCAPED_MAX], small[8], *body;

	(void)state;
	/* Whole, not the first line; control and non-ASCII bytes and '\\' as \xNN; trailing line end dropped. */
	ovx_escape("line one\nline\x1b[31m two\\ \xc3\xa9\r\n", 26, out, sizeof(out));
	assert_string_equal(out, "line one\\x0aline\\x1b[31m two\\x5c \\xc3\\xa9");
	ovx_escape(NULL, 5, out, sizeof(out));
	assert_string_equal(out, "");
	/* Bounded: 1 KiB of the text, then a note; the worst case fits OVX_ESCAPED_MAX. */
	body = malloc(3000);
	assert_non_null(body);
	memset(body, 'a', 3000);
	ovx_escape(body, 3000, out, sizeof(out));
	assert_int_equal(strspn(out, "a"), OVX_REASON_MAX);
	assert_string_equal(out + OVX_REASON_MAX, " [cut at 1024 bytes]");
	memset(body, '\x01', 3000);
	ovx_escape(body, 3000, out, sizeof(out));
	assert_int_equal(strlen(out), 4 * OVX_REASON_MAX + strlen(" [cut at 1024 bytes]"));
	/* A small buffer cuts whole escapes only. */
	ovx_escape(body, 3000, small, sizeof(small));
	assert_string_equal(small, "\\x01");
	free(body);
}

static void test_openvox_due(void **state)
{
	ASN1_TIME *t = ASN1_TIME_set(NULL, 1000000000 + 40L * 86400);
	time_t opens;

	(void)state;
	assert_int_equal(ovx_is_due(t, 1000000000, 30L * 86400, &opens), 0);
	assert_int_equal((long)opens, 1000000000 + 10L * 86400);
	assert_int_equal(ovx_is_due(t, 1000000000 + 10L * 86400, 30L * 86400, NULL), 1);
	assert_int_equal(ovx_is_due(t, 1000000000 + 10L * 86400 - 1, 30L * 86400, NULL), 0);
	assert_int_equal(ovx_is_due(t, 1000000000 + 50L * 86400, 30L * 86400, NULL), 1);
	assert_int_equal(ovx_is_due(t, 1000000000, 0, NULL), 0);
	ASN1_TIME_free(t);
}

static void test_openvox_names(void **state)
{
	char *s, *url;

	(void)state;
	assert_true(ovx_certname_ok("agent1.example.org"));
	assert_true(ovx_certname_ok("a_b-c"));
	assert_false(ovx_certname_ok("Agent1"));
	assert_false(ovx_certname_ok(""));
	assert_false(ovx_certname_ok(NULL));
	assert_false(ovx_certname_ok("-x"));
	assert_false(ovx_certname_ok("a/b"));
	assert_false(ovx_certname_ok("a b"));
	s = ovx_urlencode("-----BEGIN CERTIFICATE-----\nAB+/=\n");
	assert_string_equal(s, "-----BEGIN%20CERTIFICATE-----%0AAB%2B%2F%3D%0A");
	free(s);
	url = ovx_url("https://ca:8140/", "/certificate/ca");
	assert_string_equal(url, "https://ca:8140/puppet-ca/v1/certificate/ca");
	free(url);
	assert_null(ovx_url("http://ca:8140", "/x"));
	assert_null(ovx_url("https://", "/x"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_parse, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_check, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_check_expired_ca, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_check_intermediate, pki_setup, pki_teardown),
		cmocka_unit_test(test_install),
		cmocka_unit_test(test_install_all),
		cmocka_unit_test_setup_teardown(test_vouched, pki_setup, pki_teardown),
		cmocka_unit_test(test_read_file),
		cmocka_unit_test(test_openvox_status),
		cmocka_unit_test(test_openvox_csr_answer),
		cmocka_unit_test(test_openvox_escape),
		cmocka_unit_test(test_openvox_due),
		cmocka_unit_test(test_openvox_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
