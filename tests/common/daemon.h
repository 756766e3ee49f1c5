/*
 * A keysvcd under test: a private SoftHSM token (tests/common/softhsm.h),
 * a configuration for it in the token's private directory, the daemon
 * started from $KS_KEYSVCD, and a small wire client.
 *
 * Layout (DIR is the token fixture's base directory, mode 0711 so that a
 * test dropped to nobody can reach the socket):
 *   DIR/token/          the SoftHSM token, its PIN file (0600)
 *   DIR/keysvcd.json    the configuration (0600, written atomically)
 *   DIR/run/            socket directory, 0755
 *   DIR/run/keysvc.sock the socket
 *   DIR/state/          state_dir (the rejected-PIN guard's files), 0700
 *   DIR/audit.log       the audit log
 *   DIR/daemon.log      the daemon's stdout and stderr (truncated at each start)
 *
 * Every function that can fail prints why to stderr.
 */
#ifndef KEYSVC_TESTS_DAEMON_H
#define KEYSVC_TESTS_DAEMON_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "tests/common/softhsm.h"

struct ks_td {
	struct ks_test_token token;
	char dir[PATH_MAX];         /* base directory, 0711 */
	char run_dir[PATH_MAX];     /* DIR/run, 0755 */
	char socket_path[PATH_MAX]; /* DIR/run/keysvc.sock */
	char config[PATH_MAX];      /* DIR/keysvcd.json */
	char audit_log[PATH_MAX];   /* DIR/audit.log */
	char daemon_log[PATH_MAX];  /* DIR/daemon.log */
	char pin_file[PATH_MAX];    /* the PIN file named in the config */
	char state_dir[PATH_MAX];   /* DIR/state, the config's state_dir */
	char *policy;               /* JSON array text of the current policy */
	unsigned client_timeout_ms; /* 0: not in the config (daemon default) */
	unsigned max_clients;       /* 0: not in the config (daemon default) */
	unsigned max_clients_per_uid; /* 0: not in the config (daemon default) */
	unsigned idle_timeout_ms;   /* 0: not in the config (daemon default) */
	unsigned frame_timeout_ms;  /* 0: not in the config (daemon default) */
	char module[PATH_MAX];      /* "": the token's module; else this one (e.g. faultp11) */
	int no_pin_file;            /* 1: no pin_file in the config (PIN from a credential) */
	const char *audit_failure;  /* NULL: not in the config; else "refuse" or "continue" */
	pid_t pid;                  /* 0 when not running */
	int status;                 /* wait status of the last daemon that ended */
};

/*
 * Make the token (label @label) and the directories, and write the
 * configuration with @policy (a JSON array as text), @client_timeout_ms and
 * @max_clients (0 = leave out). Does not start the daemon. 0 or -1.
 */
int ks_td_init(struct ks_td *d, const char *label, const char *policy,
	       unsigned client_timeout_ms, unsigned max_clients);

/* ks_td_init() then ks_td_start(). */
int ks_td_setup(struct ks_td *d, const char *label, const char *policy,
		unsigned client_timeout_ms, unsigned max_clients);

/* Rewrite the configuration from the fields of @d (policy, timeouts, pin_file). */
int ks_td_write_config(struct ks_td *d);

/* Replace the configuration file with @text verbatim (mode 0600). */
int ks_td_write_config_raw(struct ks_td *d, const char *text);

/* Set d->policy to @policy and rewrite the configuration. */
int ks_td_set_policy(struct ks_td *d, const char *policy);

/* fork/exec $KS_KEYSVCD -c CONFIG, stdout and stderr to the daemon log. */
int ks_td_spawn(struct ks_td *d);

/* How to start keysvcd the way systemd or a constrained system would. */
struct ks_td_spawn_opts {
	/*
	 * >= 0: passed to keysvcd as fd 3 with LISTEN_FDS (listen_fds, or "1"
	 * when NULL) and LISTEN_PID set to keysvcd's pid, as systemd's socket
	 * activation does. Not closed by the harness.
	 */
	int listen_fd;
	const char *listen_fds;
	const char *notify_socket;   /* NULL: NOTIFY_SOCKET is unset for keysvcd */
	const char *credentials_dir; /* NULL: CREDENTIALS_DIRECTORY is unset */
	unsigned long nofile;        /* > 0: RLIMIT_NOFILE (soft and hard), set with prlimit() at spawn */
	/*
	 * 1: CAP_SYS_PTRACE leaves the bounding set before exec, so a root
	 * keysvcd does not have it (a same-uid peer without it is then not
	 * refused /proc/PID/ access merely for holding fewer capabilities).
	 */
	int drop_cap_sys_ptrace;
};

/*
 * ks_td_spawn() with @opts (NULL: as ks_td_spawn()). The environment is
 * changed in the child only; call it while the test has one thread.
 */
int ks_td_spawn_with(struct ks_td *d, const struct ks_td_spawn_opts *opts);

/*
 * Wait (at most @timeout_ms) until the socket accepts a connection. On
 * failure (timeout or the daemon exited) prints the daemon log's tail.
 */
int ks_td_wait_ready(struct ks_td *d, int timeout_ms);

/* ks_td_spawn() and ks_td_wait_ready(d, 10000). */
int ks_td_start(struct ks_td *d);

/* 1 if the daemon is running (reaps it and records its status if not). */
int ks_td_alive(struct ks_td *d);

/*
 * Wait at most @timeout_ms for the daemon to exit. 0 with d->status set,
 * or -1 on timeout (the daemon is left running).
 */
int ks_td_wait_exit(struct ks_td *d, int timeout_ms);

/*
 * Send @sig and wait at most @timeout_ms. Returns the wait status, or -1
 * if it did not end in time (then it is SIGKILLed and reaped).
 */
int ks_td_kill(struct ks_td *d, int sig, int timeout_ms);

/* SIGTERM, and 0 only if it exits with status 0 within 5 s. */
int ks_td_stop(struct ks_td *d);

/* SIGHUP. */
int ks_td_reload(struct ks_td *d);

/* Stop the daemon if alive, remove the directory tree, wipe the PIN. */
void ks_td_teardown(struct ks_td *d);

/*
 * cmocka fixtures for tests that each start their own daemon: *@state gets
 * a zeroed struct ks_td (for ks_td_init()), and is torn down and freed
 * after the test, whatever state it reached.
 */
int ks_td_fixture_alloc(void **state);
int ks_td_fixture_free(void **state);

/* ---- wire -------------------------------------------------------------- */

/* A connected socket (blocking, close-on-exec), or -errno. */
int ks_td_connect_path(const char *path);
int ks_td_connect(const struct ks_td *d);

/* All @len bytes, or -errno (never raises SIGPIPE). */
int ks_td_send_raw(int fd, const void *buf, size_t len);

/* A 4-byte big-endian length (@len, unchecked) and the body. */
int ks_td_send_frame(int fd, const void *body, size_t len);

/*
 * Read one frame within @timeout_ms. 0 with *@body (NUL-terminated,
 * caller frees) and *@len; -ECONNRESET if the peer closed before any byte
 * of it; -EPIPE if it closed inside the frame; -ETIMEDOUT; -EMSGSIZE for a
 * length of 0 or over 65536; or -errno.
 */
int ks_td_read_frame(int fd, int timeout_ms, char **body, size_t *len);

/*
 * Wait at most @timeout_ms for the peer to close with no more data.
 * 0 if closed (EOF or reset), -ETIMEDOUT if still open, -EPROTO if data came.
 */
int ks_td_wait_closed(int fd, int timeout_ms);

/*
 * Send @json as a frame and parse the answer (10 s timeout). NULL (and a
 * message on stderr) on any failure.
 */
json_t *ks_td_request(int fd, const char *json);

/* One request on a new connection, closed afterwards. */
json_t *ks_td_request_once(const struct ks_td *d, const char *json);

/* The "error" string of a response, "ok" for a success, NULL if malformed. */
const char *ks_td_outcome(json_t *resp);

/* ---- files ------------------------------------------------------------- */

/* A whole file, NUL-terminated (binary-safe with *@len), or NULL. */
char *ks_td_read_file(const char *path, size_t *len);
char *ks_td_daemon_log(const struct ks_td *d, size_t *len);
char *ks_td_audit_log(const struct ks_td *d, size_t *len);

/* Number of times @needle occurs in the daemon log. */
int ks_td_log_count(const struct ks_td *d, const char *needle);

/*
 * Wait at most @timeout_ms until the daemon log holds @needle at least
 * @count times. 0 or -1.
 */
int ks_td_wait_log(const struct ks_td *d, const char *needle, int count, int timeout_ms);

/*
 * Send @json on @fd without reading the answer. 0 or -errno. Used by tests
 * that pipeline requests or check that a pending one is answered later.
 */
int ks_td_send_json(int fd, const char *json);

/*
 * Read one frame within @timeout_ms and parse it as a JSON object. NULL on
 * any failure (*@err, if given, gets the negative errno of the read, or
 * -EPROTO for a body that is not a JSON object).
 */
json_t *ks_td_read_json(int fd, int timeout_ms, int *err);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t ks_td_now_ms(void);

#endif
