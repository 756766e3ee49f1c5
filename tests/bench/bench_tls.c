/*
 * Benchmark: TLS handshakes per second with the client key held by keysvcd
 * (through the keysvc provider) against the same key type in a PEM file.
 *
 * Both runs do the same work but for the client's CertificateVerify
 * signature: full handshakes (no resumption) between an in-process client
 * and server over a BIO pair, the server requiring and verifying the
 * client certificate. The two variants alternate in rounds within one run
 * and the medians are compared, so machine noise hits both alike. The
 * result is a ratio, printed as a Markdown table for BENCHMARKS.md.
 *
 *   meson test -C build --benchmark            (or run bench_tls directly)
 *   KS_BENCH_SECONDS=2 KS_BENCH_ROUNDS=5       (per variant and round)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keysvc/keysvc.h"
#include "tests/bench/benchutil.h"
#include "tests/common/daemon.h"

#define MAX_ROUNDS 15

static void die(const char *what)
{
	fprintf(stderr, "bench_tls: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static EVP_PKEY *keygen(const char *type)
{
	EVP_PKEY *k = strcmp(type, "ec-p256") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")
		    : strcmp(type, "ec-p384") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384")
		    : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);

	if (k == NULL)
		die("keygen");
	return k;
}

/* A certificate for @pub issued by @ca_key (@ca_cert NULL: self-signed CA). */
static X509 *issue(EVP_PKEY *pub, const char *cn, EVP_PKEY *ca_key, X509 *ca_cert, int is_ca)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	if (x == NULL || name == NULL)
		die("X509_new");
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, ca_cert != NULL ? X509_get_subject_name(ca_cert) : name);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pub);
	X509V3_set_ctx(&v3, ca_cert != NULL ? ca_cert : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, is_ca ? "critical,CA:true" : "CA:false");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (X509_sign(x, ca_key, EVP_sha256()) <= 0)
		die("X509_sign");
	X509_NAME_free(name);
	return x;
}

static EVP_PKEY *pub_from_pem(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = b != NULL ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	if (k == NULL)
		die("public key from keysvcd");
	return k;
}

static EVP_PKEY *load_uri(const char *uri)
{
	OSSL_STORE_CTX *st = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL);
	EVP_PKEY *k = NULL;

	while (st != NULL && k == NULL && !OSSL_STORE_eof(st)) {
		OSSL_STORE_INFO *info = OSSL_STORE_load(st);

		if (info != NULL && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
			k = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	if (k == NULL)
		die(uri);
	return k;
}

static SSL_CTX *make_ctx(int server, X509 *cert, EVP_PKEY *key, X509 *ca, int version)
{
	SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (c == NULL || !SSL_CTX_use_certificate(c, cert) || !SSL_CTX_use_PrivateKey(c, key) ||
	    !SSL_CTX_check_private_key(c))
		die("SSL_CTX set-up");
	X509_STORE_add_cert(SSL_CTX_get_cert_store(c), ca);
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
	SSL_CTX_set_min_proto_version(c, version);
	SSL_CTX_set_max_proto_version(c, version);
	/* Full handshakes only: every one needs the client's signature. */
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
	if (server)
		SSL_CTX_set_num_tickets(c, 0);
	return c;
}

static void handshake(SSL_CTX *sctx, SSL_CTX *cctx)
{
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *bs = NULL, *bc = NULL;
	int sdone = 0, cdone = 0, spins = 0;

	if (s == NULL || c == NULL || !BIO_new_bio_pair(&bs, 0, &bc, 0))
		die("SSL_new");
	SSL_set_bio(s, bs, bs);
	SSL_set_bio(c, bc, bc);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	while (!sdone || !cdone) {
		int r;

		if (++spins > 1000)
			die("handshake does not progress");
		if (!cdone) {
			r = SSL_do_handshake(c);
			if (r == 1)
				cdone = 1;
			else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
				die("client handshake");
		}
		if (!sdone) {
			r = SSL_do_handshake(s);
			if (r == 1)
				sdone = 1;
			else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
				die("server handshake");
		}
	}
	SSL_free(s);
	SSL_free(c);
}

static double rate(SSL_CTX *sctx, SSL_CTX *cctx, double seconds)
{
	double t0 = bench_now(), t;
	long n = 0;

	do {
		handshake(sctx, cctx);
		n++;
		t = bench_now() - t0;
	} while (t < seconds);
	return (double)n / t;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(void)
{
	static const char *const types[] = { "ec-p256", "ec-p384", "rsa-2048" };
	static const struct { int v; const char *name; } versions[] = {
		{ TLS1_2_VERSION, "TLS 1.2" }, { TLS1_3_VERSION, "TLS 1.3" },
	};
	const char *env_s = getenv("KS_BENCH_SECONDS"), *env_r = getenv("KS_BENCH_ROUNDS");
	const char *prov_dir = getenv("KS_PROVIDER_DIR");
	double seconds = env_s != NULL ? atof(env_s) : 1.0;
	int rounds = env_r != NULL ? atoi(env_r) : 3;
	char policy[256];
	struct ks_td d;
	keysvc *ks = NULL;
	EVP_PKEY *ca_key, *server_key;
	X509 *ca, *server_cert;

	if (seconds <= 0 || seconds > 60 || rounds < 1 || rounds > MAX_ROUNDS || prov_dir == NULL)
		die("KS_PROVIDER_DIR must be set; KS_BENCH_SECONDS in (0,60], KS_BENCH_ROUNDS in [1,15]");
	snprintf(policy, sizeof(policy),
		 "[{\"uid\": %u, \"keys\": [\"*\"], \"ops\": [\"key.generate\", \"key.public\", \"sign\"]}]",
		 (unsigned)getuid());
	memset(&d, 0, sizeof(d));
	if (ks_td_setup(&d, "keysvc-bench", policy, 0, 0) != 0)
		die("cannot start keysvcd");
	setenv("KEYSVC_SOCKET", d.socket_path, 1);
	/* default before keysvc: libssl must find the default provider's EC and RSA first. */
	OSSL_PROVIDER_set_default_search_path(NULL, prov_dir);
	if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "keysvc") == NULL)
		die("cannot load the providers");
	if (keysvc_connect(d.socket_path, &ks) != KEYSVC_OK)
		die("cannot connect to keysvcd");

	ca_key = keygen("ec-p256");
	ca = issue(ca_key, "bench CA", ca_key, NULL, 1);
	server_key = keygen("ec-p256");
	server_cert = issue(server_key, "localhost", ca_key, ca, 0);

	printf("| key | TLS | PEM file (handshakes/s) | keysvc (handshakes/s) | keysvc / PEM |\n");
	printf("|---|---|---:|---:|---:|\n");
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		char name[32], uri[48], *pem = NULL;
		EVP_PKEY *file_key = keygen(types[t]), *ks_pub, *ks_key;
		X509 *file_cert, *ks_cert;

		snprintf(name, sizeof(name), "bench-%s", types[t]);
		snprintf(uri, sizeof(uri), "keysvc:%s", name);
		if (keysvc_key_generate(ks, name, types[t], &pem) != KEYSVC_OK)
			die("keysvc_key_generate");
		ks_pub = pub_from_pem(pem);
		free(pem);
		ks_key = load_uri(uri);
		file_cert = issue(file_key, "file client", ca_key, ca, 0);
		ks_cert = issue(ks_pub, "keysvc client", ca_key, ca, 0);

		for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
			SSL_CTX *sctx = make_ctx(1, server_cert, server_key, ca, versions[v].v);
			SSL_CTX *file_ctx = make_ctx(0, file_cert, file_key, ca, versions[v].v);
			SSL_CTX *ks_ctx = make_ctx(0, ks_cert, ks_key, ca, versions[v].v);
			double file_r[MAX_ROUNDS], ks_r[MAX_ROUNDS], f, k;

			/* Warm-up: the first handshake fetches algorithms and opens the connection. */
			handshake(sctx, file_ctx);
			handshake(sctx, ks_ctx);
			for (int r = 0; r < rounds; r++) {
				file_r[r] = rate(sctx, file_ctx, seconds);
				ks_r[r] = rate(sctx, ks_ctx, seconds);
			}
			f = median(file_r, rounds);
			k = median(ks_r, rounds);
			printf("| %s | %s | %.0f | %.0f | %.2f |\n", types[t], versions[v].name, f, k, k / f);
			fflush(stdout);
			SSL_CTX_free(sctx);
			SSL_CTX_free(file_ctx);
			SSL_CTX_free(ks_ctx);
		}
		X509_free(file_cert);
		X509_free(ks_cert);
		EVP_PKEY_free(file_key);
		EVP_PKEY_free(ks_pub);
		EVP_PKEY_free(ks_key);
	}
	printf("\n%d rounds of %.1f s per variant, medians; client and server in one process over a BIO pair.\n",
	       rounds, seconds);
	keysvc_close(ks);
	X509_free(ca);
	X509_free(server_cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(server_key);
	ks_td_teardown(&d);
	return 0;
}
