/*
 * Benchmark hsm-latency: keysvcd in front of a slow token with bounded
 * parallelism, the way a network HSM is (issue 19 item 5).
 *
 * The token is tests/faultp11 in front of SoftHSM in its slow mode: every
 * signature takes 5 ms longer, and at most 64 are in progress at once, the
 * others waiting (KS_FAULTP11_SIGN_DELAY_US, KS_FAULTP11_PARALLEL). With 1,
 * 16, 64 and 256 concurrent clients, each a thread, in one run:
 *
 *   keysvcd     keysvcd loads the shim; each client has its own libkeysvc
 *               connection and calls keysvc_sign_digest() (P-256,
 *               ecdsa-sha256) in a loop;
 *   in-process  the same shim loaded into this process, one session per
 *               thread, the key found once, C_SignInit + C_Sign per
 *               signature: the baseline;
 *   raw signer  the smallest signer in another process: a process of its
 *               own loads the shim and serves each connection with a thread
 *               and a session, digest in, C_SignInit + C_Sign, signature
 *               out, through keysvcd's frame code (no JSON, policy, audit
 *               or pool). raw / in-process is the most any out-of-process
 *               signer reaches on this machine at that client count, so a
 *               keysvcd MISS where raw misses too is a limit of the machine
 *               (its CPUs), not of keysvcd;
 *   raw at keysvcd's CPU  the raw signer again, each request made to spend
 *               as much CPU as keysvcd's takes beyond the raw signer's (a
 *               busy loop in the server and in the client, sized from the
 *               CPU per signature both ways measured so far in the cell):
 *               what a signer as lean as the raw one in structure but as
 *               costly in CPU would reach. keysvcd below it is keysvcd's
 *               structure; the raw signer above it is the CPU keysvcd
 *               spends (on a machine whose CPUs the token's own work keeps
 *               busy, every microsecond of it slows the token's calls).
 *
 * Each process has its own shim, so each way has a token of the same
 * capacity: min(clients, 64) / 5 ms signatures per second at most (the
 * "token bound" column). P-256, whose signature costs the token tens of
 * microseconds of CPU, keeps the machine's CPUs out of the way as long as
 * possible. The ways take turns within each round, the order rotating;
 * each turn a warm-up and a measured window; the rate is the median over
 * rounds. keysvcd runs with its defaults (sessions, max_sessions) apart
 * from the log level (notice) and the connection limits (256 clients of
 * one uid).
 *
 * Also printed: the CPU each way spends per signature (its server process
 * and this one's clients) and keysvcd's rate if the machine's CPUs did
 * nothing else (at 1.00 keysvcd is limited by the CPUs); and the latency
 * of fdatasync next to the audit log, which with audit_sync data runs
 * while the token signs (the signature is answered once it is durable).
 *
 * And where the time went inside the token's calls, from the shim's
 * KS_FAULTP11_TIMES of each way's process over the measured windows:
 * C_SignInit, the forwarded C_Sign after the delay (the real token's own
 * part) and the wait for a turn among the token's parallel slots. A
 * keysvcd whose C_SignInit takes longer than the baselines' has made the
 * token slower (its mutexes contended on CPUs that are busier), not the
 * path outside it.
 *
 * The last lines, one per client count:
 *   target hsm-latency-<clients> <keysvcd / in-process> PASS|MISS   (PASS at >= 0.90)
 * after three lines per client count with the machine's bounds:
 *   bound hsm-latency-<clients> <raw signer / in-process>
 *   bound hsm-latency-<clients>-at-keysvcd-cpu <raw at keysvcd's CPU / in-process>
 *   bound hsm-latency-<clients>-audit-sync <token time / (token time + fdatasync)>
 * the third what a durable audit intent before each answer allows: the
 * sync runs while the token signs, so token time / max(token time,
 * fdatasync) (1.00 while the token is the slower, and beyond the token's
 * parallelism).
 * A MISS never fails the benchmark.
 *
 * Environment (all optional):
 *   KS_BENCH_SECONDS       measured seconds per way, cell and round (2)
 *   KS_BENCH_WARMUP        warm-up seconds before each window (0.5)
 *   KS_BENCH_ROUNDS        rounds per cell (3)
 *   KS_BENCH_CLIENTS       client counts, comma-separated (1,16,64,256)
 *   KS_BENCH_DELAY_US      the token's delay per signature (5000)
 *   KS_BENCH_PARALLEL      the token's parallel signatures (64)
 *   KS_BENCH_MAX_SESSIONS  keysvcd's max_sessions; unset: its default
 *   KS_BENCH_AUDIT_SYNC    keysvcd's audit_sync ("data", "none"); unset: its default (data)
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>

#include "keysvc/keysvc.h"
#include "proto/buf.h"
#include "proto/frame.h"
#include "tests/bench/benchp11.h"
#include "tests/bench/benchutil.h"
#include "tests/common/daemon.h"

#define LABEL "kshsmlat"
#define KEY "bench-hsm-p256"
#define MAX_CLIENTS 512
#define MAX_ROUNDS 15
#define MAX_CELLS 8
#define TARGET 0.90

enum way { W_KEYSVCD, W_INPROC, W_RAW, W_RAWCPU, W_COUNT };
static const char *const way_name[W_COUNT] = { "keysvcd", "in-process", "raw signer",
					       "raw+cpu" };
/* W_RAWCPU: ns of busy CPU per request in the raw signer's server and in its client. */
static uint32_t rawcpu_server_ns, rawcpu_client_ns;

static struct ks_td d;
static uint8_t digest[32];
static EVP_PKEY *pubkey;
static double opt_seconds = 2.0, opt_warmup = 0.5;
static int opt_rounds = 3;
static int opt_clients[MAX_CELLS] = { 1, 16, 64, 256 }, opt_nclients = 4;
static long opt_delay_us = 5000, opt_parallel = 64;
static const char *opt_max_sessions;
static char stats_path[PATH_MAX + 32];
/* The shim's KS_FAULTP11_TIMES of each way's process: "signinit", "sign", "turn", 50 µs buckets. */
#define TIMES_BUCKETS 200
#define TIMES_KINDS 3
enum { T_SIGNINIT, T_SIGN, T_TURN };
typedef unsigned long times_hist[TIMES_KINDS][TIMES_BUCKETS];
static char times_path[W_COUNT][PATH_MAX + 32];  /* W_RAWCPU: the raw signer's */

static CK_FUNCTION_LIST *inproc_f;      /* the shim in this process */
static CK_FUNCTION_LIST *raw_f;         /* the shim in the raw signer's process */
static pid_t raw_pid;
static char raw_sock[PATH_MAX];

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void cleanup(void)
{
	if (raw_pid > 0) {
		kill(raw_pid, SIGTERM);
		waitpid(raw_pid, NULL, 0);
		raw_pid = 0;
	}
	if (d.pid > 0 || d.dir[0] != '\0')
		ks_td_teardown(&d);
}

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bench_hsm_latency: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	cleanup();
	exit(1);
}

/* ---- the shim, loaded into a process -------------------------------------- */

static CK_SLOT_ID find_slot(CK_FUNCTION_LIST *f)
{
	CK_SLOT_ID slot;
	CK_RV rv = bench_p11_find_slot(f, LABEL, &slot);

	if (rv != CKR_OK)
		die("token %s: 0x%lx", LABEL, (unsigned long)rv);
	return slot;
}

static CK_OBJECT_HANDLE find_key(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s)
{
	CK_OBJECT_HANDLE key;
	CK_ULONG n;
	CK_RV rv = bench_p11_find_key(f, s, KEY, &key, &n);

	if (rv != CKR_OK)
		die("private key %s: 0x%lx (%lu found)", KEY, (unsigned long)rv, (unsigned long)n);
	return key;
}

/* The shim (KS_FAULTP11) loaded, initialised and logged in. */
static CK_FUNCTION_LIST *shim_load(void)
{
	CK_FUNCTION_LIST *f;
	CK_SESSION_HANDLE s;
	const char *why = bench_p11_load(getenv("KS_FAULTP11"), &f), *what;
	CK_RV rv;

	if (why != NULL)
		die("cannot load the shim (KS_FAULTP11): %s", why);
	/* The login is the application's: this session keeps it for all the others. */
	if ((rv = bench_p11_open_logged_in(f, LABEL, d.token.pin, d.token.pin_len, &s, &what)) !=
	    CKR_OK)
		die("the shim: %s: 0x%lx", what, (unsigned long)rv);
	return f;
}

/* r || s as the token gives it. */
static int p11_sign(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
		    const uint8_t *dg, uint8_t *sig, CK_ULONG *sig_len)
{
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };

	*sig_len = 512;
	if (f->C_SignInit(s, &mech, key) != CKR_OK)
		return -1;
	return f->C_Sign(s, (CK_BYTE *)(uintptr_t)dg, sizeof(digest), sig, sig_len) == CKR_OK ? 0 : -1;
}

/* ---- the raw signer ------------------------------------------------------------ */

/* Spend @ns of this thread's CPU (W_RAWCPU). */
static void busy_ns(uint32_t ns)
{
	double end = bench_now() + ns / 1e9;

	while (bench_now() < end)
		;
}

static void *raw_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	struct ks_buf b;
	uint8_t sig[512];
	CK_ULONG sig_len;

	if (raw_f->C_OpenSession(find_slot(raw_f), CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK) {
		close(fd);
		return NULL;
	}
	key = find_key(raw_f, s);
	ks_buf_init(&b, KS_FRAME_MAX);
	/* A digest, and for W_RAWCPU 4 bytes more: ns of CPU to spend first. */
	while (ks_frame_read_deadline(fd, &b, 0, 0) == 0 &&
	       (b.len == sizeof(digest) || b.len == sizeof(digest) + 4)) {
		if (b.len > sizeof(digest))
			busy_ns((uint32_t)b.data[32] << 24 | (uint32_t)b.data[33] << 16 |
				(uint32_t)b.data[34] << 8 | b.data[35]);
		if (p11_sign(raw_f, s, key, b.data, sig, &sig_len) != 0 ||
		    ks_frame_write_deadline(fd, sig, sig_len, 0) != 0)
			break;
	}
	ks_buf_free(&b);
	raw_f->C_CloseSession(s);
	close(fd);
	return NULL;
}

/* Before the shim is loaded here: a process that forks must not have it loaded. */
static void raw_start(void)
{
	struct sockaddr_un sa;
	int lfd, ready[2];
	char c;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(d.dir) > 80)
		die("directory name too long for a socket: %s (set TMPDIR shorter)", d.dir);
	snprintf(raw_sock, sizeof(raw_sock), "%.80s/raw.sock", d.dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", raw_sock);
	if ((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1024) != 0)
		die("%s: %s", raw_sock, strerror(errno));
	if (pipe2(ready, O_CLOEXEC) != 0 || (raw_pid = fork()) < 0)
		die("fork: %s", strerror(errno));
	if (raw_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		close(ready[0]);
		/* keysvcd and the directory are the parent's to clean up, also when this dies. */
		d.pid = 0;
		d.dir[0] = '\0';
		raw_f = shim_load();
		if (write(ready[1], "", 1) != 1)
			_exit(1);
		close(ready[1]);
		bench_serve_threads(lfd, raw_conn);
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1)
		die("the raw signer did not start");
	close(ready[0]);
	close(lfd);
}

/* ---- clients ------------------------------------------------------------------- */

struct client {
	enum way way;
	keysvc *ks;
	int fd;                     /* W_RAW */
	struct ks_buf resp;         /* W_RAW */
	CK_SESSION_HANDLE s;        /* W_INPROC */
	CK_OBJECT_HANDLE key;
	pthread_t th;
	long count, errors;
	double *lat;
	size_t nlat, cap;
};

static void check_sig(const uint8_t *sig, size_t sig_len, int raw_rs, const char *who)
{
	uint8_t der[160];
	unsigned char *p = der;
	EVP_PKEY_CTX *c;
	int ok;

	if (raw_rs) {
		ECDSA_SIG *es = ECDSA_SIG_new();
		int n;

		if (es == NULL || sig_len % 2 != 0 || sig_len > 132)
			die("%s: a signature of %zu bytes", who, sig_len);
		ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)sig_len / 2, NULL),
			       BN_bin2bn(sig + sig_len / 2, (int)sig_len / 2, NULL));
		n = i2d_ECDSA_SIG(es, &p);
		ECDSA_SIG_free(es);
		sig = der;
		sig_len = (size_t)n;
	}
	c = EVP_PKEY_CTX_new(pubkey, NULL);
	ok = c != NULL && EVP_PKEY_verify_init(c) == 1 &&
	     EVP_PKEY_verify(c, sig, sig_len, digest, sizeof(digest)) == 1;
	EVP_PKEY_CTX_free(c);
	if (!ok)
		die("%s: a signature does not verify with keysvcd's public key", who);
}

static int sign_once(struct client *c, int check)
{
	uint8_t sig[512];
	CK_ULONG sig_len;

	switch (c->way) {
	case W_KEYSVCD: {
		uint8_t *s = NULL;
		size_t len = 0;
		int r = keysvc_sign_digest(c->ks, KEY, "ecdsa-sha256", digest, sizeof(digest), &s, &len);

		if (r == KEYSVC_OK && check)
			check_sig(s, len, 0, way_name[c->way]);
		free(s);
		return r == KEYSVC_OK ? 0 : -1;
	}
	case W_INPROC:
		if (p11_sign(inproc_f, c->s, c->key, digest, sig, &sig_len) != 0)
			return -1;
		break;
	default: {
		uint8_t req[sizeof(digest) + 4];
		size_t req_len = sizeof(digest);
		uint32_t ns = __atomic_load_n(&rawcpu_server_ns, __ATOMIC_RELAXED);

		memcpy(req, digest, sizeof(digest));
		if (c->way == W_RAWCPU) {
			busy_ns(__atomic_load_n(&rawcpu_client_ns, __ATOMIC_RELAXED));
			req[32] = (uint8_t)(ns >> 24);
			req[33] = (uint8_t)(ns >> 16);
			req[34] = (uint8_t)(ns >> 8);
			req[35] = (uint8_t)ns;
			req_len += 4;
		}
		if (ks_frame_write(c->fd, req, req_len, 0) != 0 ||
		    ks_frame_read(c->fd, &c->resp, 0) != 0 || c->resp.len > sizeof(sig))
			return -1;
		sig_len = c->resp.len;
		memcpy(sig, c->resp.data, sig_len);
		break;
	}
	}
	if (check)
		check_sig(sig, sig_len, 1, way_name[c->way]);
	return 0;
}

static void client_open(struct client *c, enum way way)
{
	memset(c, 0, sizeof(*c));
	c->way = way;
	c->fd = -1;
	switch (way) {
	case W_KEYSVCD:
		if (keysvc_connect(d.socket_path, &c->ks) != KEYSVC_OK)
			die("cannot connect to keysvcd");
		break;
	case W_INPROC:
		if (inproc_f->C_OpenSession(find_slot(inproc_f), CKF_SERIAL_SESSION, NULL, NULL,
					    &c->s) != CKR_OK)
			die("C_OpenSession in-process");
		c->key = find_key(inproc_f, c->s);
		break;
	default:
		if ((c->fd = ks_td_connect_path(raw_sock)) < 0)
			die("cannot connect to the raw signer");
		ks_buf_init(&c->resp, KS_FRAME_MAX);
		break;
	}
}

static void client_close(struct client *c)
{
	keysvc_close(c->ks);
	if (c->way == W_INPROC)
		inproc_f->C_CloseSession(c->s);
	if (c->fd >= 0) {
		close(c->fd);
		ks_buf_free(&c->resp);
	}
	free(c->lat);
	memset(c, 0, sizeof(*c));
}

static pthread_barrier_t barrier;
static double win_start, win_end;

static void *client_main(void *arg)
{
	struct client *c = arg;

	pthread_barrier_wait(&barrier);
	for (;;) {
		double t0 = bench_now(), t1;

		if (t0 >= win_end)
			break;
		if (sign_once(c, 0) != 0) {
			if (++c->errors > 10)
				break;
			continue;
		}
		t1 = bench_now();
		if (t0 >= win_start && t1 <= win_end) {
			if (c->nlat == c->cap) {
				size_t cap = c->cap ? c->cap * 2 : 1024;
				double *v = realloc(c->lat, cap * sizeof(*v));

				if (v == NULL)
					die("out of memory");
				c->lat = v;
				c->cap = cap;
			}
			c->lat[c->nlat++] = t1 - t0;
			c->count++;
		}
	}
	return NULL;
}

/* The way's counts as its shim last wrote them (all zero before the first write). */
static void times_read(enum way w, times_hist h)
{
	static const char *const names[TIMES_KINDS] = { "signinit", "sign", "turn" };
	char name[16];
	FILE *f = fopen(times_path[w], "r");

	memset(h, 0, sizeof(times_hist));
	if (f == NULL)
		return;
	for (int k = 0; k < TIMES_KINDS; k++) {
		if (fscanf(f, "%15s", name) != 1 || strcmp(name, names[k]) != 0)
			die("%s: not the shim's times", times_path[w]);
		for (int i = 0; i < TIMES_BUCKETS; i++)
			if (fscanf(f, "%lu", &h[k][i]) != 1)
				die("%s: not the shim's times", times_path[w]);
	}
	fclose(f);
}

/* The upper end of the bucket holding quantile @q of @b, in ms; NAN when empty, INFINITY beyond. */
static double times_quantile(const unsigned long b[TIMES_BUCKETS], double q)
{
	unsigned long total = 0, seen = 0;

	for (int i = 0; i < TIMES_BUCKETS; i++)
		total += b[i];
	if (total == 0)
		return NAN;
	for (int i = 0; i < TIMES_BUCKETS - 1; i++) {
		seen += b[i];
		if ((double)seen >= q * (double)total)
			return (i + 1) * 0.05;
	}
	return INFINITY;
}

/* A quantile of times_quantile() for a table: "> 10" beyond the last bucket. */
static const char *ms_text(double v, char buf[16])
{
	if (isinf(v))
		snprintf(buf, 16, "> %.0f", (TIMES_BUCKETS - 1) * 0.05);
	else
		snprintf(buf, 16, "%.2f", v);
	return buf;
}

/*
 * One window of @n clients: signatures per second; latencies into @lat
 * (ms), the CPU seconds of the whole window added to cpu[0] (the server
 * process of the way) and cpu[1] (this process: the clients), the
 * signatures to *@sigs.
 */
static double run_window(struct client *cl, int n, double *lat, size_t *nlat, double cpu[2],
			 long *sigs, times_hist times)
{
	long total = 0, errors = 0;
	pid_t server = cl[0].way == W_KEYSVCD ? d.pid :
		       cl[0].way == W_RAW || cl[0].way == W_RAWCPU ? raw_pid : 0;
	double s0, d0, s1, d1;
	times_hist t0, t1;

	if (pthread_barrier_init(&barrier, NULL, (unsigned)n + 1) != 0)
		die("pthread_barrier_init");
	for (int i = 0; i < n; i++) {
		cl[i].count = cl[i].errors = 0;
		cl[i].nlat = 0;
		if (pthread_create(&cl[i].th, NULL, client_main, &cl[i]) != 0)
			die("pthread_create");
	}
	win_start = bench_now() + opt_warmup;
	win_end = win_start + opt_seconds;
	pthread_barrier_wait(&barrier);
	bench_sleep_until(win_start);
	bench_cpu_now(server, &s0, &d0);
	times_read(cl[0].way, t0);
	bench_sleep_until(win_end);
	bench_cpu_now(server, &s1, &d1);
	times_read(cl[0].way, t1);
	cpu[0] += d1 - d0;
	cpu[1] += s1 - s0;
	for (int k = 0; k < TIMES_KINDS; k++)
		for (int i = 0; i < TIMES_BUCKETS; i++)
			times[k][i] += t1[k][i] >= t0[k][i] ? t1[k][i] - t0[k][i] : 0;
	for (int i = 0; i < n; i++) {
		pthread_join(cl[i].th, NULL);
		total += cl[i].count;
		errors += cl[i].errors;
		for (size_t k = 0; k < cl[i].nlat; k++)
			lat[(*nlat)++] = cl[i].lat[k] * 1e3;
	}
	pthread_barrier_destroy(&barrier);
	if (errors != 0)
		die("%s: %ld signatures failed", way_name[cl[0].way], errors);
	*sigs += total;
	return (double)total / opt_seconds;
}

/* keysvcd's sessions now and at most since it started, from the shim's counts. */
static void keysvcd_sessions(long *open, long *peak)
{
	FILE *f = fopen(stats_path, "r");
	long opened, refused;

	*open = *peak = -1;
	if (f == NULL)
		return;
	if (fscanf(f, "open %ld peak %ld opened %ld refused %ld", open, peak, &opened, &refused) != 4)
		*open = *peak = -1;
	fclose(f);
}

struct cell_result {
	double rate[W_COUNT];
	double med[W_COUNT], p99[W_COUNT];
	double cpu_us[W_COUNT][2];  /* CPU per signature: the server's, the clients' */
	double init_ms[W_COUNT][3];  /* C_SignInit: median, p90, p99 */
	double sign_p90_ms[W_COUNT], turn_med_ms[W_COUNT];
	long sessions_open, sessions_peak;
};

/* W_RAWCPU's busy loops: keysvcd's CPU per signature beyond the raw signer's, so far in the cell. */
static void rawcpu_size(double cpu[W_COUNT][2], const long sigs[W_COUNT])
{
	double extra[2] = { 0, 0 };

	for (int k = 0; k < 2 && sigs[W_KEYSVCD] > 0 && sigs[W_RAW] > 0; k++) {
		extra[k] = cpu[W_KEYSVCD][k] / (double)sigs[W_KEYSVCD] -
			   cpu[W_RAW][k] / (double)sigs[W_RAW];
		if (extra[k] < 0)
			extra[k] = 0;
		if (extra[k] > 0.01)
			extra[k] = 0.01;
	}
	__atomic_store_n(&rawcpu_server_ns, (uint32_t)(extra[0] * 1e9), __ATOMIC_RELAXED);
	__atomic_store_n(&rawcpu_client_ns, (uint32_t)(extra[1] * 1e9), __ATOMIC_RELAXED);
}

static void run_cell(int nclients, struct cell_result *res)
{
	static struct client cl[W_COUNT][MAX_CLIENTS];
	double rates[W_COUNT][MAX_ROUNDS];
	double *lat[W_COUNT];
	size_t nlat[W_COUNT] = { 0 };
	double cpu[W_COUNT][2] = { { 0 } };
	long sigs[W_COUNT] = { 0 };
	static times_hist times[W_COUNT];
	/* Bounded by the token: at most min(clients, parallel) per delay. */
	size_t lat_cap = (size_t)((opt_seconds + 1) * 1e6 / (double)opt_delay_us *
				  (nclients < opt_parallel ? nclients : opt_parallel) * opt_rounds) + 1024;

	memset(times, 0, sizeof(times));
	for (int w = 0; w < W_COUNT; w++) {
		if ((lat[w] = malloc(lat_cap * sizeof(double))) == NULL)
			die("out of memory");
		for (int i = 0; i < nclients; i++)
			client_open(&cl[w][i], (enum way)w);
		if (sign_once(&cl[w][0], 1) != 0)
			die("%s: the first signature failed", way_name[w]);
	}
	for (int r = 0; r < opt_rounds; r++) {
		for (int k = 0; k < W_COUNT; k++) {
			int w = (k + r) % W_COUNT;

			if (nlat[w] + lat_cap / (size_t)opt_rounds > lat_cap)
				die("latency buffer too small");
			if (w == W_RAWCPU)
				rawcpu_size(cpu, sigs);
			rates[w][r] = run_window(cl[w], nclients, lat[w], &nlat[w], cpu[w], &sigs[w],
						 times[w]);
			if (w == W_KEYSVCD)
				keysvcd_sessions(&res->sessions_open, &res->sessions_peak);
			fprintf(stderr, "  %d client(s), round %d: %-11s %8.0f/s\n", nclients, r + 1,
				way_name[w], rates[w][r]);
		}
	}
	for (int w = 0; w < W_COUNT; w++) {
		res->rate[w] = bench_median(rates[w], opt_rounds);
		for (int k = 0; k < 2; k++)
			res->cpu_us[w][k] = sigs[w] > 0 ? cpu[w][k] / (double)sigs[w] * 1e6 : NAN;
		qsort(lat[w], nlat[w], sizeof(double), bench_cmp_double);
		res->med[w] = nlat[w] ? lat[w][nlat[w] / 2] : NAN;
		res->p99[w] = nlat[w] ? lat[w][(size_t)ceil(0.99 * (double)nlat[w]) - 1] : NAN;
		res->init_ms[w][0] = times_quantile(times[w][T_SIGNINIT], 0.5);
		res->init_ms[w][1] = times_quantile(times[w][T_SIGNINIT], 0.9);
		res->init_ms[w][2] = times_quantile(times[w][T_SIGNINIT], 0.99);
		res->sign_p90_ms[w] = times_quantile(times[w][T_SIGN], 0.9);
		res->turn_med_ms[w] = times_quantile(times[w][T_TURN], 0.5);
		free(lat[w]);
		for (int i = 0; i < nclients; i++)
			client_close(&cl[w][i]);
	}
}

/*
 * What keysvcd's durable audit intent costs here: fdatasync after appending
 * a record-sized line to a file next to its audit log, one at a time. The
 * median, in ms.
 */
static double fdatasync_ms(void)
{
	char path[PATH_MAX + 32], line[256];
	double v[41];
	int fd;

	snprintf(path, sizeof(path), "%s/fsync-probe", d.dir);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0)
		die("%s: %s", path, strerror(errno));
	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\n';
	for (int i = 0; i < 41; i++) {
		double t0 = bench_now();

		if (write(fd, line, sizeof(line)) != (ssize_t)sizeof(line) || fdatasync(fd) != 0)
			die("%s: %s", path, strerror(errno));
		v[i] = (bench_now() - t0) * 1e3;
	}
	close(fd);
	unlink(path);
	return bench_median(v, 41);
}

/* ---- set-up --------------------------------------------------------------------- */

static void parse_env(void)
{
	const char *s;

	if ((s = getenv("KS_BENCH_SECONDS")) != NULL && *s)
		opt_seconds = atof(s);
	if ((s = getenv("KS_BENCH_WARMUP")) != NULL && *s)
		opt_warmup = atof(s);
	if ((s = getenv("KS_BENCH_ROUNDS")) != NULL && *s)
		opt_rounds = atoi(s);
	if ((s = getenv("KS_BENCH_DELAY_US")) != NULL && *s)
		opt_delay_us = atol(s);
	if ((s = getenv("KS_BENCH_PARALLEL")) != NULL && *s)
		opt_parallel = atol(s);
	if ((s = getenv("KS_BENCH_MAX_SESSIONS")) != NULL && *s)
		opt_max_sessions = s;
	if ((s = getenv("KS_BENCH_CLIENTS")) != NULL && *s &&
	    (opt_nclients = bench_parse_counts(s, opt_clients, MAX_CELLS, MAX_CLIENTS)) < 0)
		die("KS_BENCH_CLIENTS: at most %d counts of 1..%d", MAX_CELLS, MAX_CLIENTS);
	if (opt_seconds <= 0 || opt_seconds > 60 || opt_warmup < 0 || opt_warmup > 60 ||
	    opt_rounds < 1 || opt_rounds > MAX_ROUNDS || opt_nclients < 1 ||
	    opt_delay_us < 100 || opt_delay_us > 1000000 || opt_parallel < 1 || opt_parallel > 4096)
		die("KS_BENCH_SECONDS in (0,60], KS_BENCH_WARMUP in [0,60], KS_BENCH_ROUNDS in [1,%d], "
		    "KS_BENCH_DELAY_US in [100,1000000], KS_BENCH_PARALLEL in [1,4096]", MAX_ROUNDS);
}

/* The harness's configuration with production logging, room for every client, the shim. */
static void tune_config(void)
{
	json_error_t jerr;
	json_t *cfg;
	char *text;

	if (ks_td_write_config(&d) != 0 || (cfg = json_load_file(d.config, 0, &jerr)) == NULL)
		die("cannot write %s", d.config);
	json_object_set_new(cfg, "log_level", json_string("notice"));
	if (opt_max_sessions != NULL)
		json_object_set_new(cfg, "max_sessions", json_integer(atoi(opt_max_sessions)));
	if (getenv("KS_BENCH_AUDIT_SYNC") != NULL && *getenv("KS_BENCH_AUDIT_SYNC") != '\0')
		json_object_set_new(cfg, "audit_sync", json_string(getenv("KS_BENCH_AUDIT_SYNC")));
	if ((text = json_dumps(cfg, JSON_INDENT(2))) == NULL || ks_td_write_config_raw(&d, text) != 0)
		die("cannot write %s", d.config);
	free(text);
	json_decref(cfg);
}

static void set_env_long(const char *name, long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%ld", v);
	setenv(name, buf, 1);
}

int main(void)
{
	struct cell_result res[MAX_CELLS];
	char policy[256];
	const char *shim = getenv("KS_FAULTP11");
	keysvc *ks;
	char *pem = NULL;
	double sync_ms;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	BIO *b;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_env();
	if (shim == NULL || getenv("KS_SOFTHSM_MODULE") == NULL)
		die("KS_FAULTP11 and KS_SOFTHSM_MODULE must be set (meson test --benchmark sets them)");
	snprintf(policy, sizeof(policy),
		 "[{\"uid\": %u, \"keys\": [\"bench-*\"], \"ops\": [\"key.generate\", \"sign\"]}]",
		 (unsigned)getuid());
	if (ks_td_init(&d, LABEL, policy, 0, 0) != 0)
		die("cannot set up the token");
	/* keysvcd, the raw signer and this process each load the shim with these. */
	setenv("KS_FAULTP11_TARGET", getenv("KS_SOFTHSM_MODULE"), 1);
	set_env_long("KS_FAULTP11_SIGN_DELAY_US", opt_delay_us);
	set_env_long("KS_FAULTP11_PARALLEL", opt_parallel);
	unsetenv("KS_FAULTP11_MAX_SESSIONS");
	unsetenv("KS_FAULTP11_CONTROL");
	snprintf(stats_path, sizeof(stats_path), "%s/keysvcd-sessions", d.dir);
	setenv("KS_FAULTP11_STATS", stats_path, 1);
	for (int w = 0; w < W_COUNT; w++)
		snprintf(times_path[w], sizeof(times_path[w]), "%s/times-%d", d.dir,
			 w == W_RAWCPU ? W_RAW : w);
	setenv("KS_FAULTP11_TIMES", times_path[W_KEYSVCD], 1);
	snprintf(d.module, sizeof(d.module), "%s", shim);
	d.max_clients = 2 * MAX_CLIENTS;
	d.max_clients_per_uid = 2 * MAX_CLIENTS;
	/* Connections of the other ways' turns wait idle meanwhile. */
	d.idle_timeout_ms = 3600000;
	tune_config();
	if (ks_td_start(&d) != 0)
		die("cannot start keysvcd");
	/* Only keysvcd's sessions are counted. */
	unsetenv("KS_FAULTP11_STATS");
	if (RAND_bytes(digest, sizeof(digest)) != 1)
		die("RAND_bytes");
	if (keysvc_connect(d.socket_path, &ks) != KEYSVC_OK ||
	    /* Digests are signed: a key for "sign" (the default, csr,tls, refuses them). */
	    keysvc_key_generate_purposes(ks, KEY, "ec-p256", "sign", &pem) != KEYSVC_OK)
		die("key.generate through keysvcd");
	keysvc_close(ks);
	if ((b = BIO_new_mem_buf(pem, -1)) == NULL ||
	    (pubkey = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL)) == NULL)
		die("the public key of %s", KEY);
	BIO_free(b);
	free(pem);
	setenv("KS_FAULTP11_TIMES", times_path[W_RAW], 1);
	raw_start();
	setenv("KS_FAULTP11_TIMES", times_path[W_INPROC], 1);
	inproc_f = shim_load();

	fprintf(stderr, "bench_hsm_latency: token %ld us per signature, %ld in parallel; %.1f s windows "
		"after %.1f s warm-up, %d round(s), ways alternating\n", opt_delay_us, opt_parallel,
		opt_seconds, opt_warmup, opt_rounds);
	sync_ms = fdatasync_ms();
	for (int c = 0; c < opt_nclients; c++)
		run_cell(opt_clients[c], &res[c]);

	printf("Token: SoftHSM behind tests/faultp11, %ld µs per signature, at most %ld in parallel; "
	       "P-256 ecdsa-sha256; keysvcd max_sessions %s; %d round(s) of %.1f s.\n\n",
	       opt_delay_us, opt_parallel,
	       opt_max_sessions != NULL ? opt_max_sessions : "default (from the descriptor limit, at most 256)",
	       opt_rounds, opt_seconds);
	printf("| clients | token bound (sig/s) | in-process (sig/s) | raw signer (sig/s) | keysvcd (sig/s) "
	       "| keysvcd / in-process | target | raw signer / in-process (bound) "
	       "| raw signer at keysvcd's CPU / in-process | keysvcd / raw signer "
	       "| keysvcd sessions after the window / most |\n"
	       "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n");
	for (int c = 0; c < opt_nclients; c++) {
		struct cell_result *r = &res[c];
		double bound = (double)(opt_clients[c] < opt_parallel ? opt_clients[c] : opt_parallel) *
			       1e6 / (double)opt_delay_us;
		double ratio = r->rate[W_KEYSVCD] / r->rate[W_INPROC];

		printf("| %d | %.0f | %.0f | %.0f | %.0f | %.2f | %s (≥ %.2f) | %.2f | %.2f | %.2f "
		       "| %ld / %ld |\n",
		       opt_clients[c], bound, r->rate[W_INPROC], r->rate[W_RAW], r->rate[W_KEYSVCD],
		       ratio, ratio >= TARGET ? "PASS" : "MISS", TARGET,
		       r->rate[W_RAW] / r->rate[W_INPROC], r->rate[W_RAWCPU] / r->rate[W_INPROC],
		       r->rate[W_KEYSVCD] / r->rate[W_RAW],
		       r->sessions_open, r->sessions_peak);
	}
	printf("\n| clients | CPU µs per signature: in-process | raw signer (server + clients) "
	       "| keysvcd (server + clients) | raw signer at keysvcd's CPU (server + clients) "
	       "| keysvcd's CPU bound on %ld CPUs (sig/s) "
	       "| keysvcd / its CPU bound |\n|---:|---:|---:|---:|---:|---:|---:|\n", ncpu);
	for (int c = 0; c < opt_nclients; c++) {
		struct cell_result *r = &res[c];
		double kd = r->cpu_us[W_KEYSVCD][0] + r->cpu_us[W_KEYSVCD][1];
		double cpu_bound = (double)ncpu * 1e6 / kd;

		printf("| %d | %.0f | %.0f (%.0f + %.0f) | %.0f (%.0f + %.0f) | %.0f (%.0f + %.0f) "
		       "| %.0f | %.2f |\n",
		       opt_clients[c], r->cpu_us[W_INPROC][1],
		       r->cpu_us[W_RAW][0] + r->cpu_us[W_RAW][1], r->cpu_us[W_RAW][0],
		       r->cpu_us[W_RAW][1], kd, r->cpu_us[W_KEYSVCD][0], r->cpu_us[W_KEYSVCD][1],
		       r->cpu_us[W_RAWCPU][0] + r->cpu_us[W_RAWCPU][1], r->cpu_us[W_RAWCPU][0],
		       r->cpu_us[W_RAWCPU][1], cpu_bound, r->rate[W_KEYSVCD] / cpu_bound);
	}
	printf("\nfdatasync after an audit-record-sized append, next to keysvcd's audit log: median "
	       "%.2f ms. With audit_sync data (the default) one runs while the token signs and "
	       "the signature is answered once it is done (one sync covers all intents written "
	       "before it), so one client signs at most %.2f of in-process here.\n", sync_ms,
	       (double)opt_delay_us / 1e3 / fmax((double)opt_delay_us / 1e3, sync_ms));
	printf("\n| clients | in-process median / p99 (ms) | raw signer median / p99 (ms) "
	       "| keysvcd median / p99 (ms) |\n|---:|---:|---:|---:|\n");
	for (int c = 0; c < opt_nclients; c++) {
		printf("| %d |", opt_clients[c]);
		for (int w = W_INPROC; w <= W_RAW; w++)
			printf(" %.2f / %.2f |", res[c].med[w], res[c].p99[w]);
		printf(" %.2f / %.2f |\n", res[c].med[W_KEYSVCD], res[c].p99[W_KEYSVCD]);
	}
	printf("\nInside the token's calls (the shim's counts over the measured windows, in 0.05 ms "
	       "steps): C_SignInit, and the forwarded C_Sign after the delay (the real token's own "
	       "part), each way in its own process with its own copy of the token.\n\n"
	       "| clients | C_SignInit median / p90 / p99 (ms): in-process | raw signer "
	       "| raw signer at keysvcd's CPU | keysvcd "
	       "| C_Sign after the delay, p90 (ms): in-process | raw | raw at keysvcd's CPU | keysvcd "
	       "| wait for one of the token's slots, median (ms): in-process | raw | raw at keysvcd's "
	       "CPU | keysvcd |\n"
	       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int c = 0; c < opt_nclients; c++) {
		static const enum way order[] = { W_INPROC, W_RAW, W_RAWCPU, W_KEYSVCD };
		const int nways = (int)(sizeof(order) / sizeof(order[0]));

		char a[16], m[16], e[16];

		printf("| %d |", opt_clients[c]);
		for (int i = 0; i < nways; i++)
			printf(" %s / %s / %s |", ms_text(res[c].init_ms[order[i]][0], a),
			       ms_text(res[c].init_ms[order[i]][1], m),
			       ms_text(res[c].init_ms[order[i]][2], e));
		for (int i = 0; i < nways; i++)
			printf(" %s |", ms_text(res[c].sign_p90_ms[order[i]], a));
		for (int i = 0; i < nways; i++)
			printf(" %s |", ms_text(res[c].turn_med_ms[order[i]], a));
		printf("\n");
	}
	printf("\n");
	for (int c = 0; c < opt_nclients; c++)
		printf("bound hsm-latency-%d %.2f\n", opt_clients[c],
		       res[c].rate[W_RAW] / res[c].rate[W_INPROC]);
	for (int c = 0; c < opt_nclients; c++)
		printf("bound hsm-latency-%d-at-keysvcd-cpu %.2f\n", opt_clients[c],
		       res[c].rate[W_RAWCPU] / res[c].rate[W_INPROC]);
	/*
	 * The intent's fdatasync (audit_sync data) runs while the token
	 * signs: a signature waits for the slower of the two while the token
	 * has room for every client; beyond that the token's queue hides it.
	 */
	for (int c = 0; c < opt_nclients; c++)
		printf("bound hsm-latency-%d-audit-sync %.2f\n", opt_clients[c],
		       opt_clients[c] > opt_parallel ? 1.0 :
		       (double)opt_delay_us / 1e3 / fmax((double)opt_delay_us / 1e3, sync_ms));
	for (int c = 0; c < opt_nclients; c++) {
		double ratio = res[c].rate[W_KEYSVCD] / res[c].rate[W_INPROC];

		printf("target hsm-latency-%d %.2f %s\n", opt_clients[c], ratio,
		       ratio >= TARGET ? "PASS" : "MISS");
	}

	inproc_f->C_Finalize(NULL);
	if (raw_pid > 0) {
		kill(raw_pid, SIGTERM);
		waitpid(raw_pid, NULL, 0);
		raw_pid = 0;
	}
	if (ks_td_stop(&d) != 0)
		fprintf(stderr, "bench_hsm_latency: keysvcd did not stop cleanly\n");
	ks_td_teardown(&d);
	EVP_PKEY_free(pubkey);
	return 0;
}
