/*
 * Benchmark provider-threads: signatures per second through the keysvc
 * provider by N threads of one process against N single-threaded
 * processes, N = 1, 4, 16, in one run. The threads share one EVP_PKEY and
 * the provider's pool of connections to keysvcd; each process (forked
 * after the key was loaded, as a pre-forking server's workers are) has its
 * own connection. The ratio threads / processes is what the pool keeps of
 * the parallelism separate processes get; target >= 0.9 at every N.
 *
 * The two ways alternate round by round (which goes first too); medians.
 * The last lines are "target provider-threads-<n> <ratio> PASS|MISS".
 *
 *   KS_BENCH_SECONDS (default 2)  measured time per way and round
 *   KS_BENCH_ROUNDS (default 5)   rounds, 1 to 15
 *   KS_BENCH_KEY (default ec-p256) key type: ec-p256, ec-p384, rsa-2048
 *   KS_BENCH_THREADS (default "1 4 16") the counts N
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/store.h>

#include "keysvc/keysvc.h"
#include "tests/bench/benchutil.h"
#include "tests/common/daemon.h"

#define MAX_ROUNDS 15
#define MAX_WORKERS 64
#define TARGET 0.9

static void die(const char *what)
{
	fprintf(stderr, "bench_provider_threads: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
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

static EVP_PKEY *pub_from_pem(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = b != NULL ? PEM_read_bio_PUBKEY_ex(b, NULL, NULL, NULL, NULL, "provider=default") : NULL;

	BIO_free(b);
	if (k == NULL)
		die("public key from keysvcd");
	return k;
}

static EVP_PKEY *key, *pub;
static unsigned char digest[32];

/* One signature of the digest through the provider; 1 if it verifies (when @check). */
static int sign_once(EVP_PKEY_CTX *pc, int check)
{
	unsigned char sig[1024];
	size_t sig_len = sizeof(sig);
	EVP_PKEY_CTX *vc;
	int ok;

	if (EVP_PKEY_sign(pc, sig, &sig_len, digest, sizeof(digest)) != 1)
		return 0;
	if (!check)
		return 1;
	vc = EVP_PKEY_CTX_new_from_pkey(NULL, pub, "provider=default");
	ok = vc != NULL && EVP_PKEY_verify_init(vc) == 1 && EVP_PKEY_CTX_set_signature_md(vc, EVP_sha256()) == 1 &&
	     EVP_PKEY_verify(vc, sig, sig_len, digest, sizeof(digest)) == 1;
	EVP_PKEY_CTX_free(vc);
	return ok;
}

static EVP_PKEY_CTX *sign_ctx(void)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);

	if (pc == NULL || EVP_PKEY_sign_init(pc) != 1 || EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) != 1)
		die("sign context");
	return pc;
}

/* ---- N threads -------------------------------------------------------------- */

struct worker {
	pthread_barrier_t *ready, *go;
	double seconds;
	long count;
	int ok;
};

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	EVP_PKEY_CTX *pc = sign_ctx();
	double end;

	/* Warm-up: the first signature (verified) opens this thread's connection. */
	w->ok = sign_once(pc, 1);
	pthread_barrier_wait(w->ready);
	pthread_barrier_wait(w->go);
	end = bench_now() + w->seconds;
	while (w->ok && bench_now() < end) {
		if (!sign_once(pc, 0))
			w->ok = 0;
		else
			w->count++;
	}
	EVP_PKEY_CTX_free(pc);
	return NULL;
}

static double run_threads(int n, double seconds)
{
	pthread_barrier_t ready, go;
	struct worker w[MAX_WORKERS];
	pthread_t t[MAX_WORKERS];
	long total = 0;

	pthread_barrier_init(&ready, NULL, (unsigned)n + 1);
	pthread_barrier_init(&go, NULL, (unsigned)n + 1);
	for (int i = 0; i < n; i++) {
		w[i] = (struct worker){ .ready = &ready, .go = &go, .seconds = seconds };
		if (pthread_create(&t[i], NULL, thread_main, &w[i]) != 0)
			die("pthread_create");
	}
	pthread_barrier_wait(&ready);
	pthread_barrier_wait(&go);
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		if (!w[i].ok)
			die("a thread's signature failed or did not verify");
		total += w[i].count;
	}
	pthread_barrier_destroy(&ready);
	pthread_barrier_destroy(&go);
	/* Each thread signed for @seconds from the common start, as each process does. */
	return (double)total / seconds;
}

/* ---- N processes ------------------------------------------------------------ */

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A forked worker: warm up, say ready, wait for go, sign for @seconds, report the count. */
static void process_main(int ready_fd, int go_fd, int result_fd, double seconds)
{
	EVP_PKEY_CTX *pc = sign_ctx();
	long count = -1;
	char c = 'r';
	double end;

	if (sign_once(pc, 1)) {
		if (write(ready_fd, &c, 1) != 1 || read_full(go_fd, &c, 1) != 0)
			_exit(1);
		count = 0;
		end = bench_now() + seconds;
		while (bench_now() < end) {
			if (!sign_once(pc, 0)) {
				count = -1;
				break;
			}
			count++;
		}
	} else if (write(ready_fd, &c, 1) != 1) {
		_exit(1);
	}
	if (write(result_fd, &count, sizeof(count)) != (ssize_t)sizeof(count))
		_exit(1);
	_exit(0);
}

static double run_processes(int n, double seconds)
{
	int ready[2], go[2], result[2];
	pid_t pids[MAX_WORKERS];
	long total = 0, count;
	char c;

	if (pipe(ready) != 0 || pipe(go) != 0 || pipe(result) != 0)
		die("pipe");
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		if ((pids[i] = fork()) < 0)
			die("fork");
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			close(result[0]);
			process_main(ready[1], go[0], result[1], seconds);
		}
	}
	close(ready[1]);
	close(go[0]);
	close(result[1]);
	for (int i = 0; i < n; i++)
		if (read_full(ready[0], &c, 1) != 0)
			die("a worker process died before it was ready");
	for (int i = 0; i < n; i++)
		if (write(go[1], "g", 1) != 1)
			die("go");
	for (int i = 0; i < n; i++) {
		if (read_full(result[0], &count, sizeof(count)) != 0 || count < 0)
			die("a worker process's signature failed or did not verify");
		total += count;
	}
	for (int i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	close(ready[0]);
	close(go[1]);
	close(result[0]);
	return (double)total / seconds;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(void)
{
	const char *env_s = getenv("KS_BENCH_SECONDS"), *env_r = getenv("KS_BENCH_ROUNDS");
	const char *env_k = getenv("KS_BENCH_KEY"), *env_n = getenv("KS_BENCH_THREADS");
	const char *prov_dir = getenv("KS_PROVIDER_DIR");
	double seconds = env_s != NULL ? atof(env_s) : 2.0, ratios[16];
	int rounds = env_r != NULL ? atoi(env_r) : 5, counts[16], ncounts = 0;
	const char *type = env_k != NULL ? env_k : "ec-p256";
	char policy[256], list[128], *tok, *save = NULL, *pem = NULL;
	struct ks_td d;
	keysvc *ks = NULL;

	if (seconds <= 0 || seconds > 60 || rounds < 1 || rounds > MAX_ROUNDS || prov_dir == NULL)
		die("KS_PROVIDER_DIR must be set; KS_BENCH_SECONDS in (0,60], KS_BENCH_ROUNDS in [1,15]");
	snprintf(list, sizeof(list), "%s", env_n != NULL ? env_n : "1 4 16");
	for (tok = strtok_r(list, " ,", &save); tok != NULL && ncounts < 16; tok = strtok_r(NULL, " ,", &save)) {
		counts[ncounts] = atoi(tok);
		if (counts[ncounts] < 1 || counts[ncounts] > MAX_WORKERS)
			die("KS_BENCH_THREADS: counts from 1 to 64");
		ncounts++;
	}
	snprintf(policy, sizeof(policy),
		 "[{\"uid\": %u, \"keys\": [\"*\"], \"ops\": [\"key.generate\", \"key.public\", \"sign\"]}]",
		 (unsigned)getuid());
	memset(&d, 0, sizeof(d));
	if (ks_td_setup(&d, "keysvc-bench", policy, 0, 0) != 0)
		die("cannot start keysvcd");
	setenv("KEYSVC_SOCKET", d.socket_path, 1);
	OSSL_PROVIDER_set_default_search_path(NULL, prov_dir);
	if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "keysvc") == NULL)
		die("cannot load the providers");
	if (keysvc_connect(d.socket_path, &ks) != KEYSVC_OK ||
	    /* It signs arbitrary messages, which only the purpose sign allows. */
	    keysvc_key_generate_purposes(ks, "bench-threads", type, "sign", &pem) != KEYSVC_OK)
		die("cannot make the key");
	keysvc_close(ks);
	pub = pub_from_pem(pem);
	free(pem);
	key = load_uri("keysvc:bench-threads");
	if (EVP_Digest("provider-threads", 16, digest, NULL, EVP_sha256(), NULL) != 1)
		die("digest");

	printf("| N | %s: N threads, one process (sig/s) | N processes (sig/s) | threads / processes |\n", type);
	printf("|---:|---:|---:|---:|\n");
	for (int c = 0; c < ncounts; c++) {
		double thr[MAX_ROUNDS], proc[MAX_ROUNDS], t, p;

		for (int r = 0; r < rounds; r++) {
			if (r % 2 == 0) {
				thr[r] = run_threads(counts[c], seconds);
				proc[r] = run_processes(counts[c], seconds);
			} else {
				proc[r] = run_processes(counts[c], seconds);
				thr[r] = run_threads(counts[c], seconds);
			}
		}
		t = median(thr, rounds);
		p = median(proc, rounds);
		ratios[c] = t / p;
		printf("| %d | %.0f | %.0f | %.2f |\n", counts[c], t, p, ratios[c]);
		fflush(stdout);
	}
	printf("\n%d rounds of %.1f s per way, medians; the provider's default pool (up to 16 connections).\n\n",
	       rounds, seconds);
	for (int c = 0; c < ncounts; c++)
		printf("target provider-threads-%d %.2f %s\n", counts[c], ratios[c],
		       ratios[c] >= TARGET ? "PASS" : "MISS");
	EVP_PKEY_free(key);
	EVP_PKEY_free(pub);
	ks_td_teardown(&d);
	return 0;
}
