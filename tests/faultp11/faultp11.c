/*
 * faultp11: a PKCS#11 module for tests that forwards to a real module
 * (SoftHSM) and injects faults on command.
 *
 *   KS_FAULTP11_TARGET   path of the real module
 *   KS_FAULTP11_CONTROL  path of a control file, read before every
 *                        wrapped call; one line:
 *
 *     (empty or missing)              pass everything through
 *     error CKR_NAME always [C_Func]  every wrapped call (or only C_Func) fails
 *     error CKR_NAME N [C_Func]       the next N such calls fail, then the
 *                                     line is rewritten with the count left
 *     hang [C_Func]                   such calls block until the line changes
 *     fail-after N CKR_NAME C_Func    the next N calls of C_Func pass (the
 *                                     line is rewritten with the count
 *                                     left), every later one fails
 *     empty                           C_FindObjects finds nothing, as
 *                                     SoftHSM does while its token
 *                                     directory is gone
 *     empty-until-reinit              the same until the next
 *                                     C_Initialize, which clears the line:
 *                                     SoftHSM sees the directory again
 *                                     only once initialised again
 *
 *   KS_FAULTP11_COUNT    path of a file that gets one line "C_Login" appended
 *                        for every C_Login that reaches this module, before
 *                        any fault is applied: the number of times a PIN was
 *                        presented, however the call then ended; and one
 *                        line "C_Initialize" for every C_Initialize: the
 *                        number of times the module was initialised
 *
 *                        When the application offers its own mutex
 *                        functions in C_Initialize, that call also appends
 *                        "C_Initialize mutexes", the module gets them
 *                        through counting wrappers, and C_Finalize appends
 *                        "LockMutex N": how often the real module locked
 *                        one of the application's mutexes
 *
 *   KS_FAULTP11_LOCKING  "os-only": a module that cannot use the
 *                        application's mutexes; a C_Initialize offering
 *                        them answers CKR_CANT_LOCK without going further
 *
 *   KS_FAULTP11_MECHS    a token with fewer capabilities than the real one,
 *                        words separated by blanks:
 *     hide:0xNN            C_GetMechanismList leaves out mechanism 0xNN and
 *                          C_GetMechanismInfo answers CKR_MECHANISM_INVALID
 *     rsa-max:BITS         CKM_RSA_PKCS_KEY_PAIR_GEN's ulMaxKeySize is BITS
 *     rsa-pkcs-needs-decrypt
 *                          C_SignInit with CKM_RSA_PKCS on a key whose
 *                          CKA_DECRYPT is false answers
 *                          CKR_KEY_FUNCTION_NOT_PERMITTED, as a token that
 *                          makes those signatures with a raw RSA decrypt
 *
 * A slow token with bounded parallelism and sessions (a network HSM), read
 * from the environment at every C_Initialize:
 *
 *   KS_FAULTP11_SIGN_DELAY_US  every C_Sign and C_SignFinal that returns a
 *                        signature (not a length query) takes this many
 *                        microseconds longer, spent before the call is
 *                        forwarded
 *   KS_FAULTP11_PARALLEL at most this many such calls are in progress at
 *                        once (the delay and the real call); the others
 *                        wait, one woken whenever a call ends
 *   KS_FAULTP11_MAX_SESSIONS  "N": at most N sessions open at once in this
 *                        process; C_OpenSession beyond answers
 *                        CKR_SESSION_COUNT, and C_GetTokenInfo reports N as
 *                        ulMaxSessionCount and ulMaxRwSessionCount.
 *                        "N,unreported": the same limit, but C_GetTokenInfo
 *                        reports CK_UNAVAILABLE_INFORMATION, so only
 *                        CKR_SESSION_COUNT tells it
 *   KS_FAULTP11_STATS    path of a file rewritten (atomically) whenever a
 *                        session is opened, refused or closed:
 *                        "open N\npeak N\nopened N\nrefused N\n", the
 *                        sessions open now, the most open at once, and
 *                        C_OpenSession calls that succeeded and that
 *                        answered CKR_SESSION_COUNT, all since the last
 *                        C_Initialize
 *   KS_FAULTP11_TIMES    path of a file rewritten (atomically) at most every
 *                        20 ms while slow signatures are made: how long the
 *                        token's calls took in this process since the last
 *                        C_Initialize, as three lines "signinit", "sign" and
 *                        "turn", each followed by KS_FAULTP11_TIMES_BUCKETS
 *                        counts of calls that took 0-50 µs, 50-100 µs, ...,
 *                        the last one also counting everything longer:
 *                        C_SignInit, the forwarded C_Sign or C_SignFinal
 *                        after the delay (the real token's own part), and
 *                        the wait for a turn before the delay
 *
 * Wrapped: C_Initialize (counted; empty-until-reinit), C_Finalize, C_GetTokenInfo,
 * C_GetMechanismList, C_GetMechanismInfo (only for KS_FAULTP11_MECHS),
 * C_OpenSession, C_CloseSession, C_CloseAllSessions, C_Login,
 * C_FindObjectsInit, C_FindObjects, C_GetAttributeValue,
 * C_GenerateKeyPair, C_SignInit, C_Sign, C_SignFinal, C_CreateObject,
 * C_DestroyObject. Everything else goes straight through, so
 * initialisation and slot listing always work, as with a real reader whose
 * token was pulled.
 *
 * Test code only: it takes its target from the environment, which keysvcd
 * itself never does.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static pthread_mutex_t control_lock = PTHREAD_MUTEX_INITIALIZER;

/* The slow token: its settings (from the environment at C_Initialize) and state. */
static pthread_mutex_t slow_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cond = PTHREAD_COND_INITIALIZER;
static long sign_delay_us;
static long max_parallel;        /* 0: no bound */
static unsigned long in_progress;   /* signatures in their turn */
static long max_sessions;        /* 0: no bound */
static int max_sessions_unreported;
static long sessions_open, sessions_peak, sessions_opened, sessions_refused;
/* KS_FAULTP11_TIMES: durations of the token's calls, 50 µs buckets. */
#define TIMES_BUCKETS 200
#define TIMES_BUCKET_NS 50000
#define TIMES_DUMP_NS 20000000
enum { TIMES_SIGNINIT, TIMES_SIGN, TIMES_TURN, TIMES_KINDS };
static const char *const times_names[TIMES_KINDS] = { "signinit", "sign", "turn" };
static unsigned long times_hist[TIMES_KINDS][TIMES_BUCKETS];
static char times_path[4096];    /* empty: not recorded */
static pthread_mutex_t times_dump_lock = PTHREAD_MUTEX_INITIALIZER;
static long times_dumped_ns;

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST wrapped;
static void *real_handle;

static const struct {
	const char *name;
	CK_RV rv;
} ckr_names[] = {
	{ "CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID },
	{ "CKR_SESSION_CLOSED", CKR_SESSION_CLOSED },
	{ "CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN },
	{ "CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED },
	{ "CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT },
	{ "CKR_DEVICE_ERROR", CKR_DEVICE_ERROR },
	{ "CKR_GENERAL_ERROR", CKR_GENERAL_ERROR },
	{ "CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED },
	{ "CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY },
	{ "CKR_PIN_INCORRECT", CKR_PIN_INCORRECT },
};

static int read_control(char *line, size_t len)
{
	const char *path = getenv("KS_FAULTP11_CONTROL");
	ssize_t n;
	int fd;

	line[0] = '\0';
	if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, line, len - 1);
	close(fd);
	if (n <= 0)
		return 0;
	line[n] = '\0';
	line[strcspn(line, "\n")] = '\0';
	return 1;
}

static void write_control(const char *line)
{
	const char *path = getenv("KS_FAULTP11_CONTROL");
	char tmp[4096];
	int fd;

	if (path == NULL || snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		return;
	if (write(fd, line, strlen(line)) < 0 || write(fd, "\n", 1) < 0) {
		close(fd);
		return;
	}
	close(fd);
	rename(tmp, path);
}

/* CKR_OK to pass the call through, or the error to return instead. */
static CK_RV fault_for(const char *func)
{
	char line[512], verb[32], name[64], count[32], only[64];
	struct timespec pause = { 0, 20 * 1000 * 1000 };
	int n;

	for (;;) {
		pthread_mutex_lock(&control_lock);
		if (!read_control(line, sizeof(line))) {
			pthread_mutex_unlock(&control_lock);
			return CKR_OK;
		}
		only[0] = '\0';
		n = sscanf(line, "%31s %63s %31s %63s", verb, name, count, only);
		if (n >= 1 && strcmp(verb, "hang") == 0) {
			pthread_mutex_unlock(&control_lock);
			if (n >= 2 && strcmp(name, func) != 0)
				return CKR_OK;
			nanosleep(&pause, NULL);
			continue;
		}
		if (n == 4 && strcmp(verb, "fail-after") == 0) {
			long pass = strtol(name, NULL, 10);
			char next[512];

			if (strcmp(only, func) != 0) {
				pthread_mutex_unlock(&control_lock);
				return CKR_OK;
			}
			if (pass > 0) {
				snprintf(next, sizeof(next), "fail-after %ld %s %s", pass - 1, count, only);
				write_control(next);
				pthread_mutex_unlock(&control_lock);
				return CKR_OK;
			}
			/* The error name is in the third field here. */
			snprintf(name, sizeof(name), "%s", count);
			snprintf(count, sizeof(count), "always");
		} else if (n < 3 || strcmp(verb, "error") != 0 || (n == 4 && strcmp(only, func) != 0)) {
			pthread_mutex_unlock(&control_lock);
			return CKR_OK;
		}
		for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++) {
			if (strcmp(ckr_names[i].name, name) != 0)
				continue;
			if (strcmp(count, "always") != 0) {
				long left = strtol(count, NULL, 10) - 1;
				char next[512];

				if (left > 0)
					snprintf(next, sizeof(next), "error %s %ld %s", name, left, only);
				else
					next[0] = '\0';
				write_control(next);
			}
			pthread_mutex_unlock(&control_lock);
			return ckr_names[i].rv;
		}
		pthread_mutex_unlock(&control_lock);
		return CKR_OK;
	}
}

/* 1 while the control line is empty or empty-until-reinit; the latter ends if @reinit. */
static int searches_empty(int reinit)
{
	char line[512];
	int empty = 0;

	pthread_mutex_lock(&control_lock);
	if (read_control(line, sizeof(line))) {
		if (strcmp(line, "empty") == 0) {
			empty = 1;
		} else if (strcmp(line, "empty-until-reinit") == 0) {
			empty = !reinit;
			if (reinit)
				write_control("");
		}
	}
	pthread_mutex_unlock(&control_lock);
	return empty;
}

#define FAULT(name) do { CK_RV f_ = fault_for(#name); if (f_ != CKR_OK) return f_; } while (0)

static long env_long(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? strtol(v, NULL, 10) : 0;
}

static void read_slow_settings(void)
{
	const char *ms = getenv("KS_FAULTP11_MAX_SESSIONS");

	pthread_mutex_lock(&slow_lock);
	sign_delay_us = env_long("KS_FAULTP11_SIGN_DELAY_US");
	max_parallel = env_long("KS_FAULTP11_PARALLEL");
	max_sessions = env_long("KS_FAULTP11_MAX_SESSIONS");
	max_sessions_unreported = ms != NULL && strstr(ms, ",unreported") != NULL;
	snprintf(times_path, sizeof(times_path), "%s",
		 getenv("KS_FAULTP11_TIMES") != NULL ? getenv("KS_FAULTP11_TIMES") : "");
	memset(times_hist, 0, sizeof(times_hist));
	/* The counts are of this initialisation's sessions. */
	sessions_open = sessions_peak = sessions_opened = sessions_refused = 0;
	pthread_mutex_unlock(&slow_lock);
}

/* slow_lock held. */
static void write_stats(void)
{
	const char *path = getenv("KS_FAULTP11_STATS");
	char tmp[4096], text[256];
	int fd, n;

	if (path == NULL || snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return;
	n = snprintf(text, sizeof(text), "open %ld\npeak %ld\nopened %ld\nrefused %ld\n",
		     sessions_open, sessions_peak, sessions_opened, sessions_refused);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return;
	if (write(fd, text, (size_t)n) != n) {
		close(fd);
		return;
	}
	close(fd);
	rename(tmp, path);
}

static long mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void times_note(int kind, long ns)
{
	long b = ns / TIMES_BUCKET_NS;

	if (times_path[0] == '\0')
		return;
	__atomic_add_fetch(&times_hist[kind][b < 0 ? 0 : b >= TIMES_BUCKETS ? TIMES_BUCKETS - 1 : b], 1,
			   __ATOMIC_RELAXED);
}

/* The counts to KS_FAULTP11_TIMES, at most every TIMES_DUMP_NS; one thread at a time. */
static void times_dump(void)
{
	char tmp[4096 + 8], line[TIMES_BUCKETS * 12 + 16];
	long now = mono_ns();
	int fd, ok = 1;

	if (times_path[0] == '\0' || now - __atomic_load_n(&times_dumped_ns, __ATOMIC_RELAXED) <
	    TIMES_DUMP_NS || pthread_mutex_trylock(&times_dump_lock) != 0)
		return;
	times_dumped_ns = now;
	snprintf(tmp, sizeof(tmp), "%s.tmp", times_path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) >= 0) {
		for (int k = 0; k < TIMES_KINDS && ok; k++) {
			size_t n = (size_t)snprintf(line, sizeof(line), "%s", times_names[k]);

			for (int i = 0; i < TIMES_BUCKETS; i++)
				n += (size_t)snprintf(line + n, sizeof(line) - n, " %lu",
						      __atomic_load_n(&times_hist[k][i], __ATOMIC_RELAXED));
			n += (size_t)snprintf(line + n, sizeof(line) - n, "\n");
			ok = write(fd, line, n) == (ssize_t)n;
		}
		close(fd);
		if (ok)
			rename(tmp, times_path);
	}
	pthread_mutex_unlock(&times_dump_lock);
}

/*
 * A signature's turn on the slow token: at most max_parallel at once (the
 * others wait, each woken alone when a turn ends), then the delay.
 * slow_done() ends the turn.
 */
static void slow_begin(void)
{
	struct timespec d;

	long t0 = mono_ns();

	pthread_mutex_lock(&slow_lock);
	while (max_parallel > 0 && in_progress >= (unsigned long)max_parallel)
		pthread_cond_wait(&slow_cond, &slow_lock);
	in_progress++;
	times_note(TIMES_TURN, mono_ns() - t0);
	d.tv_sec = sign_delay_us / 1000000;
	d.tv_nsec = (sign_delay_us % 1000000) * 1000;
	pthread_mutex_unlock(&slow_lock);
	while (nanosleep(&d, &d) != 0 && errno == EINTR)
		;
}

static void slow_done(void)
{
	pthread_mutex_lock(&slow_lock);
	in_progress--;
	pthread_cond_signal(&slow_cond);
	pthread_mutex_unlock(&slow_lock);
}

static int slow_signing(void)
{
	int on;

	pthread_mutex_lock(&slow_lock);
	on = sign_delay_us > 0 || max_parallel > 0;
	pthread_mutex_unlock(&slow_lock);
	return on;
}

static void count_call(const char *func);

/* The application's mutex functions, called through counting ones while KS_FAULTP11_COUNT is set. */
static CK_LOCKMUTEX app_lock_mutex;
static unsigned long app_mutex_locks;

static CK_RV counting_lock_mutex(void *m)
{
	__atomic_add_fetch(&app_mutex_locks, 1, __ATOMIC_RELAXED);
	return app_lock_mutex(m);
}

static CK_RV w_Initialize(void *args)
{
	CK_C_INITIALIZE_ARGS *in = args, counted;
	const char *locking = getenv("KS_FAULTP11_LOCKING");
	int offered = in != NULL && in->CreateMutex != NULL && in->DestroyMutex != NULL &&
		      in->LockMutex != NULL && in->UnlockMutex != NULL;

	count_call("C_Initialize");
	if (offered) {
		count_call("C_Initialize mutexes");
		if (locking != NULL && strcmp(locking, "os-only") == 0)
			return CKR_CANT_LOCK;
	}
	searches_empty(1);
	read_slow_settings();
	if (!offered || getenv("KS_FAULTP11_COUNT") == NULL)
		return real->C_Initialize(args);
	counted = *in;
	app_lock_mutex = in->LockMutex;
	__atomic_store_n(&app_mutex_locks, 0, __ATOMIC_RELAXED);
	counted.LockMutex = counting_lock_mutex;
	return real->C_Initialize(&counted);
}

static CK_RV w_Finalize(void *reserved)
{
	CK_RV rv = real->C_Finalize(reserved);
	char line[64];

	if (rv == CKR_OK && app_lock_mutex != NULL) {
		snprintf(line, sizeof(line), "LockMutex %lu",
			 __atomic_load_n(&app_mutex_locks, __ATOMIC_RELAXED));
		count_call(line);
		app_lock_mutex = NULL;
	}
	return rv;
}

static CK_RV w_FindObjects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *o, CK_ULONG max,
			   CK_ULONG *n)
{
	CK_RV rv = real->C_FindObjects(s, o, max, n);

	if (rv == CKR_OK && searches_empty(0))
		*n = 0;
	return rv;
}

static CK_RV w_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
	CK_RV rv;

	FAULT(C_GetTokenInfo);
	rv = real->C_GetTokenInfo(slot, info);
	pthread_mutex_lock(&slow_lock);
	if (rv == CKR_OK && max_sessions > 0) {
		info->ulMaxSessionCount = max_sessions_unreported ? CK_UNAVAILABLE_INFORMATION :
					  (CK_ULONG)max_sessions;
		info->ulMaxRwSessionCount = info->ulMaxSessionCount;
	}
	pthread_mutex_unlock(&slow_lock);
	return rv;
}

static CK_RV w_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app,
			   CK_NOTIFY notify, CK_SESSION_HANDLE *session)
{
	CK_RV rv;

	FAULT(C_OpenSession);
	/* Counted before the call, so that concurrent opens cannot pass the limit together. */
	pthread_mutex_lock(&slow_lock);
	if (max_sessions > 0 && sessions_open >= max_sessions) {
		sessions_refused++;
		write_stats();
		pthread_mutex_unlock(&slow_lock);
		return CKR_SESSION_COUNT;
	}
	sessions_open++;
	pthread_mutex_unlock(&slow_lock);
	rv = real->C_OpenSession(slot, flags, app, notify, session);
	pthread_mutex_lock(&slow_lock);
	if (rv != CKR_OK) {
		sessions_open--;
	} else {
		sessions_opened++;
		if (sessions_open > sessions_peak)
			sessions_peak = sessions_open;
	}
	write_stats();
	pthread_mutex_unlock(&slow_lock);
	return rv;
}

static CK_RV w_CloseSession(CK_SESSION_HANDLE s)
{
	CK_RV rv = real->C_CloseSession(s);

	pthread_mutex_lock(&slow_lock);
	if (rv == CKR_OK && sessions_open > 0)
		sessions_open--;
	write_stats();
	pthread_mutex_unlock(&slow_lock);
	return rv;
}

/* The tests use one token: every session of this process is on its slot. */
static CK_RV w_CloseAllSessions(CK_SLOT_ID slot)
{
	CK_RV rv = real->C_CloseAllSessions(slot);

	pthread_mutex_lock(&slow_lock);
	if (rv == CKR_OK)
		sessions_open = 0;
	write_stats();
	pthread_mutex_unlock(&slow_lock);
	return rv;
}

/* One line per call; O_APPEND keeps the lines of concurrent processes whole. */
static void count_call(const char *func)
{
	const char *path = getenv("KS_FAULTP11_COUNT");
	char line[64];
	int fd, n;

	if (path == NULL || (fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
		return;
	n = snprintf(line, sizeof(line), "%s\n", func);
	if (n > 0 && write(fd, line, (size_t)n) != n)
		fprintf(stderr, "faultp11: cannot append to %s\n", path);
	close(fd);
}

static CK_RV w_Login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR *pin,
		     CK_ULONG pin_len)
{
	count_call("C_Login");
	FAULT(C_Login);
	return real->C_Login(s, user, pin, pin_len);
}

static CK_RV w_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n)
{
	FAULT(C_FindObjectsInit);
	return real->C_FindObjectsInit(s, t, n);
}

static CK_RV w_GetAttributeValue(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
				 CK_ATTRIBUTE *t, CK_ULONG n)
{
	FAULT(C_GetAttributeValue);
	return real->C_GetAttributeValue(s, o, t, n);
}

static CK_RV w_GenerateKeyPair(CK_SESSION_HANDLE s, CK_MECHANISM *m,
			       CK_ATTRIBUTE *pub, CK_ULONG npub,
			       CK_ATTRIBUTE *priv, CK_ULONG npriv,
			       CK_OBJECT_HANDLE *hpub, CK_OBJECT_HANDLE *hpriv)
{
	FAULT(C_GenerateKeyPair);
	return real->C_GenerateKeyPair(s, m, pub, npub, priv, npriv, hpub, hpriv);
}

/* 1 if KS_FAULTP11_MECHS holds @word; with @value, the number after "@word:" into it. */
static int mechs_has(const char *word, unsigned long *value)
{
	const char *v = getenv("KS_FAULTP11_MECHS"), *p;
	size_t n = strlen(word);

	for (p = v; p != NULL && (p = strstr(p, word)) != NULL; p += n) {
		if (p != v && p[-1] != ' ')
			continue;
		if (value == NULL && (p[n] == ' ' || p[n] == '\0'))
			return 1;
		if (value != NULL && p[n] == ':') {
			*value = strtoul(p + n + 1, NULL, 0);
			return 1;
		}
	}
	return 0;
}

static int mech_hidden(CK_MECHANISM_TYPE m)
{
	const char *v = getenv("KS_FAULTP11_MECHS"), *p;

	for (p = v; p != NULL && (p = strstr(p, "hide:")) != NULL; p += 5)
		if (strtoul(p + 5, NULL, 0) == m)
			return 1;
	return 0;
}

static CK_RV w_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE *list, CK_ULONG *n)
{
	CK_MECHANISM_TYPE all[1024];
	CK_ULONG got = 1024, kept = 0;
	CK_RV rv;

	if (getenv("KS_FAULTP11_MECHS") == NULL)
		return real->C_GetMechanismList(slot, list, n);
	if ((rv = real->C_GetMechanismList(slot, all, &got)) != CKR_OK)
		return rv;
	for (CK_ULONG i = 0; i < got; i++) {
		if (mech_hidden(all[i]))
			continue;
		if (list != NULL && kept < *n)
			list[kept] = all[i];
		kept++;
	}
	rv = list != NULL && kept > *n ? CKR_BUFFER_TOO_SMALL : CKR_OK;
	*n = kept;
	return rv;
}

static CK_RV w_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE m, CK_MECHANISM_INFO *info)
{
	unsigned long max;
	CK_RV rv;

	if (mech_hidden(m))
		return CKR_MECHANISM_INVALID;
	if ((rv = real->C_GetMechanismInfo(slot, m, info)) != CKR_OK)
		return rv;
	if (m == CKM_RSA_PKCS_KEY_PAIR_GEN && mechs_has("rsa-max", &max))
		info->ulMaxKeySize = max;
	return CKR_OK;
}

static CK_RV w_SignInit(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k)
{
	CK_BBOOL decrypt = CK_TRUE;
	CK_ATTRIBUTE a = { CKA_DECRYPT, &decrypt, sizeof(decrypt) };

	long t0 = mono_ns();
	CK_RV rv;

	FAULT(C_SignInit);
	if (m != NULL && m->mechanism == CKM_RSA_PKCS && mechs_has("rsa-pkcs-needs-decrypt", NULL) &&
	    real->C_GetAttributeValue(s, k, &a, 1) == CKR_OK && decrypt == CK_FALSE)
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	rv = real->C_SignInit(s, m, k);
	times_note(TIMES_SIGNINIT, mono_ns() - t0);
	return rv;
}

static CK_RV w_Sign(CK_SESSION_HANDLE s, CK_BYTE *data, CK_ULONG len,
		    CK_BYTE *sig, CK_ULONG *sig_len)
{
	CK_RV rv = fault_for("C_Sign");
	long t0;

	if (rv != CKR_OK) {
		/* A failed C_Sign ends the operation on a real token too. */
		CK_BYTE scratch[1024];
		CK_ULONG n = sizeof(scratch);

		real->C_Sign(s, data, len, scratch, &n);
		return rv;
	}
	if (sig == NULL || !slow_signing())
		return real->C_Sign(s, data, len, sig, sig_len);
	slow_begin();
	t0 = mono_ns();
	rv = real->C_Sign(s, data, len, sig, sig_len);
	times_note(TIMES_SIGN, mono_ns() - t0);
	slow_done();
	times_dump();
	return rv;
}

static CK_RV w_SignFinal(CK_SESSION_HANDLE s, CK_BYTE *sig, CK_ULONG *sig_len)
{
	long t0;
	CK_RV rv;

	if (sig == NULL || !slow_signing())
		return real->C_SignFinal(s, sig, sig_len);
	slow_begin();
	t0 = mono_ns();
	rv = real->C_SignFinal(s, sig, sig_len);
	times_note(TIMES_SIGN, mono_ns() - t0);
	slow_done();
	times_dump();
	return rv;
}

static CK_RV w_CreateObject(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n,
			    CK_OBJECT_HANDLE *o)
{
	FAULT(C_CreateObject);
	return real->C_CreateObject(s, t, n, o);
}

static CK_RV w_DestroyObject(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o)
{
	FAULT(C_DestroyObject);
	return real->C_DestroyObject(s, o);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **list)
{
	CK_RV (*get)(CK_FUNCTION_LIST **);
	const char *target = getenv("KS_FAULTP11_TARGET");
	CK_RV rv;

	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	if (real == NULL) {
		if (target == NULL || (real_handle = dlopen(target, RTLD_NOW | RTLD_LOCAL)) == NULL)
			return CKR_GENERAL_ERROR;
		*(void **)&get = dlsym(real_handle, "C_GetFunctionList");
		if (get == NULL || (rv = get(&real)) != CKR_OK)
			return CKR_GENERAL_ERROR;
		wrapped = *real;
		wrapped.C_GetFunctionList = C_GetFunctionList;
		wrapped.C_Initialize = w_Initialize;
		wrapped.C_Finalize = w_Finalize;
		wrapped.C_FindObjects = w_FindObjects;
		wrapped.C_GetTokenInfo = w_GetTokenInfo;
		wrapped.C_OpenSession = w_OpenSession;
		wrapped.C_CloseSession = w_CloseSession;
		wrapped.C_CloseAllSessions = w_CloseAllSessions;
		wrapped.C_SignFinal = w_SignFinal;
		wrapped.C_Login = w_Login;
		wrapped.C_FindObjectsInit = w_FindObjectsInit;
		wrapped.C_GetAttributeValue = w_GetAttributeValue;
		wrapped.C_GenerateKeyPair = w_GenerateKeyPair;
		wrapped.C_SignInit = w_SignInit;
		wrapped.C_GetMechanismList = w_GetMechanismList;
		wrapped.C_GetMechanismInfo = w_GetMechanismInfo;
		wrapped.C_Sign = w_Sign;
		wrapped.C_CreateObject = w_CreateObject;
		wrapped.C_DestroyObject = w_DestroyObject;
	}
	*list = &wrapped;
	return CKR_OK;
}
