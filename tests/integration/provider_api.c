/*
 * provider_api: checks of the keysvc provider (clients/provider/) that
 * openssl(1) command lines cannot express, run by test_provider.sh against
 * its keysvcd. One check per run:
 *
 *   provider_api CHECK KEY...
 *
 * exits 0 when the check holds, else 1 with the reason and OpenSSL's error
 * queue on stderr. The providers come from OPENSSL_MODULES ("default",
 * then "keysvc"), the socket from KEYSVC_SOCKET. Signatures made through
 * keysvc are verified with a copy of the public key in the default
 * provider, so a check never trusts the provider under test to judge itself.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/x509.h>

static int failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int failed(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "provider_api: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	ERR_print_errors_fp(stderr);
	return 0;
}

/* keysvc:NAME through OSSL_STORE, as applications load it. */
static EVP_PKEY *load(const char *name)
{
	char uri[128];
	OSSL_STORE_CTX *st;
	OSSL_STORE_INFO *info;
	EVP_PKEY *pkey = NULL;

	snprintf(uri, sizeof(uri), "keysvc:%s", name);
	if ((st = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL)) == NULL)
		return NULL;
	while (pkey == NULL && !OSSL_STORE_eof(st)) {
		if ((info = OSSL_STORE_load(st)) == NULL)
			continue;
		if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
			pkey = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	return pkey;
}

/* The same public key, held by the default provider. */
static EVP_PKEY *plain_public(EVP_PKEY *key)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	EVP_PKEY *pub = NULL;
	int len;

	if ((len = i2d_PUBKEY(key, &der)) <= 0)
		return NULL;
	p = der;
	pub = d2i_PUBKEY_ex(NULL, &p, len, NULL, "provider=default");
	OPENSSL_free(der);
	return pub;
}

/* 1 if @sig is a SHA-256 signature of @msg by @pub (default provider). */
static int verifies(EVP_PKEY *pub, const char *msg, const unsigned char *sig, size_t sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	ok = md != NULL && EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, "provider=default", pub, NULL) == 1 &&
	     EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)msg, strlen(msg)) == 1;
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return ok;
}

/*
 * Re-initialising a digest-sign context with no key (OpenSSL 3.0 passes the
 * provider a NULL key on purpose) starts a new message with the same key;
 * a failed re-initialisation leaves nothing that can be signed.
 */
static int check_reinit(EVP_PKEY *key)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY *pub = plain_public(key);
	unsigned char sig[1024];
	size_t sig_len = sizeof(sig);
	int ok = 0;

	if (md == NULL || pub == NULL) {
		failed("%s", "setup");
		goto out;
	}
	if (EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
	    EVP_DigestSignUpdate(md, "abc", 3) != 1) {
		failed("%s", "first init and update");
		goto out;
	}
	if (EVP_DigestSignInit(md, NULL, NULL, NULL, NULL) != 1) {
		failed("%s", "re-init with no key failed");
		goto out;
	}
	if (EVP_DigestSignUpdate(md, "xyz", 3) != 1 || EVP_DigestSignFinal(md, sig, &sig_len) != 1) {
		failed("%s", "update and final after re-init");
		goto out;
	}
	if (verifies(pub, "abcxyz", sig, sig_len)) {
		failed("%s", "re-init kept the old message: the signature covers \"abcxyz\"");
		goto out;
	}
	if (!verifies(pub, "xyz", sig, sig_len)) {
		failed("%s", "the signature after re-init does not verify over \"xyz\"");
		goto out;
	}
	/* A re-init that fails (MD5 is not offered) must not leave "abc" to be signed. */
	if (EVP_DigestSignInit(md, NULL, NULL, NULL, NULL) != 1 || EVP_DigestSignUpdate(md, "abc", 3) != 1) {
		failed("%s", "second re-init");
		goto out;
	}
	if (EVP_DigestSignInit(md, NULL, EVP_md5(), NULL, NULL) == 1) {
		failed("%s", "re-init with MD5 succeeded");
		goto out;
	}
	ERR_clear_error();
	sig_len = sizeof(sig);
	if (EVP_DigestSignUpdate(md, "xyz", 3) == 1 && EVP_DigestSignFinal(md, sig, &sig_len) == 1) {
		failed("%s", "a failed re-init left a digest that could still be signed");
		goto out;
	}
	ERR_clear_error();
	ok = 1;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pub);
	return ok;
}

/* EVP_PKEY_sign of SHA-256("abc") with @key; 1 if the signature verifies with @pub. */
static int sign_abc(EVP_PKEY *key, EVP_PKEY *pub)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL), *vc = NULL;
	unsigned char md[32], sig[1024];
	size_t sig_len = sizeof(sig);
	int ok;

	ok = pc != NULL && EVP_Digest("abc", 3, md, NULL, EVP_sha256(), NULL) == 1 &&
	     EVP_PKEY_sign_init(pc) == 1 && EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1 &&
	     EVP_PKEY_sign(pc, sig, &sig_len, md, sizeof(md)) == 1 &&
	     (vc = EVP_PKEY_CTX_new_from_pkey(NULL, pub, "provider=default")) != NULL &&
	     EVP_PKEY_verify_init(vc) == 1 && EVP_PKEY_CTX_set_signature_md(vc, EVP_sha256()) == 1 &&
	     EVP_PKEY_verify(vc, sig, sig_len, md, sizeof(md)) == 1;
	EVP_PKEY_CTX_free(pc);
	EVP_PKEY_CTX_free(vc);
	return ok;
}

/*
 * Sign, say so on stdout, wait for a line on stdin (test_provider.sh
 * restarts keysvcd meanwhile), sign again: the connection kept from the
 * first signature is dead, its send fails before the daemon could read
 * anything, and the provider must send the request again on a new one.
 */
static int check_resend(EVP_PKEY *key)
{
	EVP_PKEY *pub = plain_public(key);
	char line[16];
	int ok = 0;

	if (pub == NULL || !sign_abc(key, pub)) {
		failed("%s", "first signature");
		goto out;
	}
	printf("signed once\n");
	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL) {
		failed("%s", "no go-ahead on stdin");
		goto out;
	}
	if (!sign_abc(key, pub)) {
		failed("%s", "the signature after keysvcd restarted");
		goto out;
	}
	ok = 1;
out:
	EVP_PKEY_free(pub);
	return ok;
}

/*
 * Digest-verify with the keysvc key itself (OpenSSL 3.0 uses the key's own
 * provider to verify): a signature it made verifies, a changed message not.
 */
static int check_verify(EVP_PKEY *key)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char sig[1024];
	size_t sig_len = sizeof(sig);
	int ok = 0;

	if (md == NULL || EVP_DigestSignInit_ex(md, NULL, "SHA384", NULL, NULL, key, NULL) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)"abc", 3) != 1) {
		failed("%s", "digest-sign");
		goto out;
	}
	if (EVP_DigestVerifyInit_ex(md, NULL, "SHA384", NULL, NULL, key, NULL) != 1 ||
	    EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)"abc", 3) != 1) {
		failed("%s", "digest-verify of the signature with the keysvc key");
		goto out;
	}
	if (EVP_DigestVerifyInit_ex(md, NULL, "SHA384", NULL, NULL, key, NULL) != 1 ||
	    EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)"abd", 3) == 1) {
		failed("%s", "digest-verify accepted the signature for another message");
		goto out;
	}
	ERR_clear_error();
	ok = 1;
out:
	EVP_MD_CTX_free(md);
	return ok;
}

/*
 * EVP_PKEY_parameters_eq and EVP_PKEY_eq between keysvc keys: KEY and SAME
 * are on one curve (or both RSA), OTHER on another curve. The selection
 * counts: same parameters are not the same key.
 */
static int check_match(EVP_PKEY *key, EVP_PKEY *same, EVP_PKEY *other)
{
	if (EVP_PKEY_eq(key, key) != 1)
		return failed("%s", "EVP_PKEY_eq(key, key) is not 1");
	if (EVP_PKEY_eq(key, same) == 1)
		return failed("%s", "two keys are EVP_PKEY_eq");
	if (EVP_PKEY_parameters_eq(key, same) != 1)
		return failed("%s", "two keys on the same curve have different parameters");
	if (other != NULL && EVP_PKEY_parameters_eq(key, other) == 1)
		return failed("%s", "keys on different curves have the same parameters");
	ERR_clear_error();
	return 1;
}

/* EVP_PKEY_dup of a keysvc key: the same key, still able to sign. */
static int check_dup(EVP_PKEY *key)
{
	EVP_PKEY *dup = EVP_PKEY_dup(key), *pub = plain_public(key);
	int ok = 0;

	if (dup == NULL)
		failed("%s", "EVP_PKEY_dup failed");
	else if (EVP_PKEY_eq(dup, key) != 1)
		failed("%s", "the duplicate is not the same key");
	else if (pub == NULL || !sign_abc(dup, pub))
		failed("%s", "the duplicate does not sign");
	else
		ok = 1;
	EVP_PKEY_free(dup);
	EVP_PKEY_free(pub);
	return ok;
}

/* A signature buffer one byte short is refused before anything is sent. */
static int check_small_buffer(EVP_PKEY *key)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	unsigned char md[32] = { 0 }, sig[1024];
	size_t sig_len = (size_t)EVP_PKEY_get_size(key) - 1;
	unsigned long e;
	char text[256];
	int ok = 0;

	if (pc == NULL || EVP_PKEY_sign_init(pc) != 1 || EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) != 1) {
		failed("%s", "setup");
		goto out;
	}
	if (EVP_PKEY_sign(pc, sig, &sig_len, md, sizeof(md)) == 1) {
		failed("signed into a buffer of %zu bytes", sig_len);
		goto out;
	}
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, text, sizeof(text));
		if (strstr(text, "output buffer too small") != NULL)
			ok = 1;
	}
	if (!ok)
		failed("%s", "no \"output buffer too small\" error");
out:
	EVP_PKEY_CTX_free(pc);
	return ok;
}

struct signer {
	EVP_PKEY *key, *pub;
	int rounds, ok;
};

static void *sign_rounds(void *arg)
{
	struct signer *w = arg;

	w->ok = 1;
	for (int i = 0; i < w->rounds && w->ok; i++)
		w->ok = sign_abc(w->key, w->pub);
	return NULL;
}

/*
 * 8 threads sign with one EVP_PKEY at once, 25 signatures each (the
 * provider's connections shared between them): every signature verifies.
 */
static int check_threads(EVP_PKEY *key)
{
	enum { N = 8 };
	struct signer w[N];
	pthread_t t[N];
	EVP_PKEY *pub = plain_public(key);
	int ok = pub != NULL, started = 0;

	for (int i = 0; ok && i < N; i++) {
		w[i] = (struct signer){ .key = key, .pub = pub, .rounds = 25 };
		if (pthread_create(&t[i], NULL, sign_rounds, &w[i]) != 0)
			ok = failed("%s", "pthread_create");
		else
			started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(t[i], NULL);
		if (!w[i].ok)
			ok = failed("thread %d: a signature failed or did not verify", i);
	}
	EVP_PKEY_free(pub);
	return ok;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int set_fault(const char *line)
{
	const char *path = getenv("KS_FAULTP11_CONTROL");
	FILE *f = path != NULL ? fopen(path, "w") : NULL;

	if (f == NULL)
		return failed("%s", "no KS_FAULTP11_CONTROL file");
	fputs(line, f);
	return fclose(f) == 0;
}

/*
 * One thread's signature stalls in the token (faultp11 "hang C_Sign");
 * meanwhile another thread of the process loads a second key: it gets its
 * answer at once, on a connection of its own, not after the stalled one.
 */
static int check_parallel(EVP_PKEY *key, const char *other_name)
{
	struct signer w = { .key = key, .rounds = 1 };
	EVP_PKEY *other = NULL;
	pthread_t t;
	double t0, took;
	int ok = 0;

	if ((w.pub = plain_public(key)) == NULL || !sign_abc(key, w.pub))
		return failed("%s", "first signature");
	if (!set_fault("hang C_Sign\n"))
		goto out;
	if (pthread_create(&t, NULL, sign_rounds, &w) != 0) {
		failed("%s", "pthread_create");
		goto out;
	}
	usleep(500 * 1000);
	t0 = now();
	other = load(other_name);
	took = now() - t0;
	set_fault("");
	pthread_join(t, NULL);
	if (other == NULL)
		failed("cannot load keysvc:%s while a signature stalls", other_name);
	else if (took > 2.0)
		failed("keysvc:%s took %.1f s to load: it waited for the stalled signature", other_name, took);
	else if (!w.ok)
		failed("%s", "the stalled signature, once let go, failed or did not verify");
	else
		ok = 1;
	printf("loaded keysvc:%s in %.3f s while a signature stalled\n", other_name, took);
out:
	set_fault("");
	EVP_PKEY_free(other);
	EVP_PKEY_free(w.pub);
	return ok;
}

/*
 * fork() with the provider's connections open: the child signs on
 * connections of its own (answers read from the parent's sockets would be
 * mixed up), then the parent signs again on its own.
 */
static int check_fork(EVP_PKEY *key)
{
	EVP_PKEY *pub = plain_public(key);
	int status = 0, ok = 0;
	pid_t pid;

	if (pub == NULL || !sign_abc(key, pub)) {
		failed("%s", "first signature");
		goto out;
	}
	fflush(NULL);
	if ((pid = fork()) < 0) {
		failed("%s", "fork");
		goto out;
	}
	if (pid == 0)
		_exit(sign_abc(key, pub) && sign_abc(key, pub) ? 0 : 1);
	if (!sign_abc(key, pub))
		failed("%s", "the parent's signature while the child signs");
	else if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		failed("%s", "the child's signatures failed or did not verify");
	else if (!sign_abc(key, pub))
		failed("%s", "the parent's signature after the child's");
	else
		ok = 1;
out:
	EVP_PKEY_free(pub);
	return ok;
}

static int run_check(int argc, char **argv)
{
	EVP_PKEY *key = NULL;
	int ok = 0;

	if ((key = load(argv[2])) == NULL) {
		failed("cannot load keysvc:%s", argv[2]);
		return 1;
	}
	if (strcmp(argv[1], "reinit") == 0)
		ok = check_reinit(key);
	else if (strcmp(argv[1], "dup") == 0)
		ok = check_dup(key);
	else if (strcmp(argv[1], "match") == 0 && argc >= 4) {
		EVP_PKEY *same = load(argv[3]), *other = argc >= 5 ? load(argv[4]) : NULL;

		if (same == NULL || (argc >= 5 && other == NULL))
			failed("%s", "cannot load the keys to compare");
		else
			ok = check_match(key, same, other);
		EVP_PKEY_free(same);
		EVP_PKEY_free(other);
	} else if (strcmp(argv[1], "verify") == 0)
		ok = check_verify(key);
	else if (strcmp(argv[1], "small-buffer") == 0)
		ok = check_small_buffer(key);
	else if (strcmp(argv[1], "resend") == 0)
		ok = check_resend(key);
	else if (strcmp(argv[1], "fork") == 0)
		ok = check_fork(key);
	else if (strcmp(argv[1], "threads") == 0)
		ok = check_threads(key);
	else if (strcmp(argv[1], "parallel") == 0 && argc >= 4)
		ok = check_parallel(key, argv[3]);
	else
		fprintf(stderr, "provider_api: unknown check %s\n", argv[1]);
	EVP_PKEY_free(key);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	OSSL_PROVIDER *deflt = NULL, *keysvc = NULL;
	int r = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: provider_api CHECK KEY...\n");
		return 2;
	}
	if ((deflt = OSSL_PROVIDER_load(NULL, "default")) == NULL ||
	    (keysvc = OSSL_PROVIDER_load(NULL, "keysvc")) == NULL)
		failed("%s", "cannot load the default and keysvc providers");
	else
		r = run_check(argc, argv);
	/* Loaded providers stay until unloaded, even past OPENSSL_cleanup(): LeakSanitizer would see them. */
	if (keysvc != NULL)
		OSSL_PROVIDER_unload(keysvc);
	if (deflt != NULL)
		OSSL_PROVIDER_unload(deflt);
	return r;
}
