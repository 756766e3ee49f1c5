/*
 * keysvcd: holds private keys in a PKCS#11 token and serves CSR and
 * signature requests from local processes that the policy allows.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "keysvc/audit.h"
#include "keysvc/check.h"
#include "keysvc/config.h"
#include "keysvc/dispatch.h"
#include "keysvc/pin.h"
#include "keysvc/pinguard.h"
#include "keysvc/sdnotify.h"
#include "keysvc/server.h"
#include "pkcs11/token.h"
#include "proto/exitcode.h"
#include "proto/log.h"

struct daemon_state {
	const char *config_path;
	struct ks_ctx *ctx;
	struct ks_audit *audit;
	const struct ks_config *running;   /* the configuration read at start */
	int debug;                         /* --debug: outranks log_level, also on reload */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: keysvcd [-c CONFIG] [--debug]\n"
		"       keysvcd [-c CONFIG] --check-config|--check-token [--pin-file FILE] [--user USER]\n"
		"       keysvcd [-c CONFIG] --check-reload\n"
		"\n"
		"Holds private keys in a PKCS#11 token and serves CSR and signing\n"
		"requests on a Unix socket to the peers its policy allows.\n"
		"\n"
		"  -c, --config PATH   configuration file (default %s)\n"
		"  -d, --debug         log at debug level (never logs secrets)\n"
		"      --check-config  check what a start needs without logging in: the configuration\n"
		"                      and policy, the PIN source, state_dir (and that the token did\n"
		"                      not reject this PIN before), the audit log, the PKCS#11 module\n"
		"                      and the token; then exit\n"
		"      --check-token   --check-config, then log in once (never with a PIN the token\n"
		"                      rejected before; a rejection now is recorded in state_dir)\n"
		"      --pin-file FILE with --check-*: the PIN file keysvcd.service passes as the\n"
		"                      credential (default: its LoadCredential=keysvc-pin:FILE)\n"
		"      --user USER     with --check-* run as root: check as USER (default: the\n"
		"                      unit's User=)\n"
		"      --check-reload  check what a reload reads (the file and its policy), then exit;\n"
		"                      keysvcd.service runs it before it sends SIGHUP\n"
		"  -V, --version       print the version\n"
		"  -h, --help          this text\n"
		"\n"
		"Signals: SIGTERM/SIGINT stop, SIGHUP reloads the policy and reopens the audit log.\n"
		"keysvcd exits with 0 (clean stop), 1, 2, 3 (state_dir included), 4, 5 or 6\n"
		"(see state_dir/pin-rejected).\n",
		KS_DEFAULT_CONFIG);
	ks_exit_print_table(f);
}

/* The token layer's pin_rejected callback: the next keysvcd must not present this PIN either. */
static void record_pin_rejected(void *arg, unsigned long ckr)
{
	(void)ks_pin_guard_record(arg, ckr);
}

/* No core files and no ptrace by other users: the process holds the PIN. */
static void harden_process(void)
{
	struct rlimit rl = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		ks_warn("setrlimit(RLIMIT_CORE): %s", strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		ks_warn("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
}

/*
 * Keys made before key purposes existed carry none and may sign anything
 * (pkcs11/purpose.c): said once at start, naming a few, so that an
 * operator replaces them (docs/clients.md). A token that cannot be listed
 * now is not a reason to refuse to start.
 */
static void warn_legacy_keys(struct ks_token *token)
{
	struct ks_key_info *keys = NULL;
	char names[256] = "";
	size_t n = 0, legacy = 0, used = 0;

	if (ks_token_list(token, &keys, &n) != 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!keys[i].purposes_legacy)
			continue;
		if (legacy++ < 4 && used + strlen(keys[i].name) + 3 < sizeof(names))
			used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
						 used > 0 ? ", " : "", keys[i].name);
	}
	if (legacy > 0)
		ks_warn("%zu key%s made before key purposes (%s%s) may sign anything, digests "
			"included; replace %s with keys of narrow purposes (keysvc keygen NAME "
			"--purpose csr,tls; see docs/clients.md)", legacy, legacy == 1 ? "" : "s",
			names, legacy > 4 ? ", ..." : "", legacy == 1 ? "it" : "them");
	free(keys);
}

/* sd_notify(3): a failure is logged, never fatal (systemd then times the start out). */
static void notify(const char *state)
{
	int r = ks_sd_notify(state);

	if (r < 0)
		ks_warn("sd_notify %s: %s", state, strerror(-r));
}

static int str_changed(const char *a, const char *b)
{
	return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

/*
 * A reload applies the policy and the log level and reopens the audit
 * log; everything else is read once at start. Name each such setting
 * the new file changes, so that the log does not say "reloaded" over a
 * change that is not in force. Returns how many.
 */
static int warn_not_reloaded(const struct ks_config *old, const struct ks_config *cfg)
{
	int n = 0;

#define KS_CHANGED_STR(name, field)                                                    \
	do {                                                                           \
		if (str_changed(old->field, cfg->field)) {                             \
			ks_warn("reload: %s changed; not applied until keysvcd is restarted", \
				name);                                                 \
			n++;                                                           \
		}                                                                      \
	} while (0)
#define KS_CHANGED_NUM(name, field)                                                    \
	do {                                                                           \
		if (old->field != cfg->field) {                                        \
			ks_warn("reload: %s changed (%u in force, %u in the file); not "  \
				"applied until keysvcd is restarted", name,             \
				(unsigned)old->field, (unsigned)cfg->field);           \
			n++;                                                           \
		}                                                                      \
	} while (0)
	KS_CHANGED_STR("module", module);
	if (str_changed(old->token_uri, cfg->token_uri) ||
	    str_changed(old->token_label, cfg->token_label) ||
	    str_changed(old->token_serial, cfg->token_serial)) {
		ks_warn("reload: token changed; not applied until keysvcd is restarted");
		n++;
	}
	KS_CHANGED_STR("pin_file", pin_file);
	KS_CHANGED_STR("state_dir", state_dir);
	KS_CHANGED_STR("socket", socket_path);
	if (old->has_socket_gid != cfg->has_socket_gid ||
	    (old->has_socket_gid && old->socket_gid != cfg->socket_gid)) {
		ks_warn("reload: socket_group changed; not applied until keysvcd is restarted");
		n++;
	}
	if (old->socket_mode != cfg->socket_mode) {
		ks_warn("reload: socket_mode changed (%04o in force, %04o in the file); not "
			"applied until keysvcd is restarted", (unsigned)old->socket_mode,
			(unsigned)cfg->socket_mode);
		n++;
	}
	KS_CHANGED_STR("audit_log", audit_log);
	if (old->audit_continue != cfg->audit_continue) {
		ks_warn("reload: audit_failure changed (%s in force, %s in the file); not applied "
			"until keysvcd is restarted", old->audit_continue ? "continue" : "refuse",
			cfg->audit_continue ? "continue" : "refuse");
		n++;
	}
	if (old->audit_sync_none != cfg->audit_sync_none) {
		ks_warn("reload: audit_sync changed (%s in force, %s in the file); not applied "
			"until keysvcd is restarted", old->audit_sync_none ? "none" : "data",
			cfg->audit_sync_none ? "none" : "data");
		n++;
	}
	KS_CHANGED_NUM("sessions", sessions);
	KS_CHANGED_NUM("max_sessions", max_sessions);
	KS_CHANGED_NUM("max_clients", max_clients);
	KS_CHANGED_NUM("max_clients_per_uid", max_clients_per_uid);
	KS_CHANGED_NUM("client_timeout_ms", client_timeout_ms);
	/* The values in force, defaults from client_timeout_ms included. */
	KS_CHANGED_NUM("idle_timeout_ms", idle_timeout_ms);
	KS_CHANGED_NUM("frame_timeout_ms", frame_timeout_ms);
	KS_CHANGED_NUM("key_recheck_ms", key_recheck_ms);
	if (old->rescan_reinitialize != cfg->rescan_reinitialize) {
		ks_warn("reload: rescan changed (%s in force, %s in the file); not applied "
			"until keysvcd is restarted", old->rescan_reinitialize ? "reinitialize" : "search",
			cfg->rescan_reinitialize ? "reinitialize" : "search");
		n++;
	}
#undef KS_CHANGED_STR
#undef KS_CHANGED_NUM
	return n;
}

/* The most sessions max_sessions' default lets the pool grow to. */
#define AUTO_MAX_SESSIONS 256

/*
 * max_sessions: the configured one, or as many as the descriptor limit
 * leaves room for after 16 and max_clients connections (4 for each
 * session: the token opens files or sockets per operation), between
 * sessions and AUTO_MAX_SESSIONS.
 */
static unsigned pool_max_sessions(const struct ks_config *cfg)
{
	struct rlimit rl;
	unsigned long long room;

	if (cfg->max_sessions != 0)
		return cfg->max_sessions;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		room = AUTO_MAX_SESSIONS;
	else if (rl.rlim_cur <= 16ULL + cfg->max_clients)
		room = 0;
	else
		room = ((unsigned long long)rl.rlim_cur - 16 - cfg->max_clients) / 4;
	if (room > AUTO_MAX_SESSIONS)
		room = AUTO_MAX_SESSIONS;
	return room > cfg->sessions ? (unsigned)room : cfg->sessions;
}

static void reload(void *arg)
{
	struct daemon_state *st = arg;
	struct ks_config *cfg = NULL;
	char err[512] = "", state[128];
	int r, unapplied;

	/* systemd (Type=notify-reload, or ExecReload=kill -HUP) waits for READY=1 again. */
	snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu", ks_sd_monotonic_usec());
	notify(state);
	r = ks_config_load(st->config_path, 1, &cfg, err, sizeof(err));
	if (r != 0) {
		ks_err("reload: %s; keeping the current policy", err);
		notify("READY=1\nSTATUS=reload failed; the previous policy is in force");
		return;
	}
	ks_ctx_set_policy(st->ctx, ks_policy_ref(cfg->policy));
	unapplied = warn_not_reloaded(st->running, cfg);
	if (unapplied > 0)
		ks_notice("reload: policy with %zu rules in force; %d other changed settings "
			  "need a restart (see above)", ks_policy_size(cfg->policy), unapplied);
	else
		ks_notice("reload: policy with %zu rules in force", ks_policy_size(cfg->policy));
	if (cfg->log_level != NULL && !st->debug)
		ks_log_set_level((enum ks_log_level)ks_log_level_from_name(cfg->log_level));
	/* ks_audit_reopen() logs why it failed; the old file stays in use. */
	(void)ks_audit_reopen(st->audit);
	ks_config_free(cfg);
	if (unapplied > 0) {
		snprintf(state, sizeof(state), "READY=1\nSTATUS=policy reloaded; %d settings "
			 "need a restart", unapplied);
		notify(state);
	} else {
		notify("READY=1\nSTATUS=policy reloaded");
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "debug", no_argument, NULL, 'd' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "check-token", no_argument, NULL, 'T' },
		{ "check-reload", no_argument, NULL, 'R' },
		{ "pin-file", required_argument, NULL, 'P' },
		{ "user", required_argument, NULL, 'U' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon_state st = { .config_path = KS_DEFAULT_CONFIG };
	struct ks_server_config scfg;
	struct ks_token_config tcfg;
	struct ks_audit_options aopt;
	struct ks_config *cfg = NULL;
	struct ks_token *token = NULL;
	struct ks_pin_guard guard;
	char err[1024] = "", activated_name[128] = "", status[256], pin_path[PATH_MAX] = "";
	char *pin = NULL;
	size_t pin_len = 0;
	struct ks_check_options copt = { .config_path = KS_DEFAULT_CONFIG };
	int check_only = 0, check_reload = 0, listen_fd = -1, signal_fd = -1, activated = 0;
	unsigned max_sessions;
	int c, r, ret = KS_EXIT_INTERNAL, credential = 0;
	sigset_t mask;

	memset(&guard, 0, sizeof(guard));
	ks_log_set_ident("keysvcd");
	while ((c = getopt_long(argc, argv, "c:dVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			st.config_path = optarg;
			break;
		case 'd':
			st.debug = 1;
			break;
		case 'C':
			check_only = 1;
			break;
		case 'T':
			check_only = 1;
			copt.login = 1;
			break;
		case 'R':
			check_reload = 1;
			break;
		case 'P':
			copt.pin_file = optarg;
			break;
		case 'U':
			copt.user = optarg;
			break;
		case 'V':
			ks_print_version("keysvcd");
			return KS_EXIT_OK;
		case 'h':
			usage(stdout);
			return KS_EXIT_OK;
		default:
			usage(stderr);
			return KS_EXIT_USAGE;
		}
	}
	if (optind != argc || (check_only && check_reload) ||
	    ((copt.pin_file != NULL || copt.user != NULL) && !check_only)) {
		usage(stderr);
		return KS_EXIT_USAGE;
	}
	harden_process();
	/*
	 * Take (and verify) an activated socket before anything else can open
	 * descriptors, and clear the LISTEN_* variables in every case.
	 */
	if ((activated = ks_sd_listen_fd(&listen_fd, activated_name, sizeof(activated_name),
					 err, sizeof(err))) < 0) {
		ks_err("%s", err);
		return KS_EXIT_INTERNAL;
	}

	if ((r = ks_config_load(st.config_path, 1, &cfg, err, sizeof(err))) != 0) {
		ks_err("%s", err);
		return KS_EXIT_CONFIG;
	}
	/* Kept until exit: reload() compares new files with it. */
	st.running = cfg;
	if (cfg->log_level != NULL)
		ks_log_set_level((enum ks_log_level)ks_log_level_from_name(cfg->log_level));
	if (st.debug)
		ks_log_set_level(KS_LOG_DEBUG);
	if (check_reload) {
		printf("%s: configuration OK (%zu policy rules); a reload applies the policy and "
		       "log_level\n", st.config_path, ks_policy_size(cfg->policy));
		ret = KS_EXIT_OK;
		goto out;
	}
	if (check_only) {
		copt.config_path = st.config_path;
		ret = ks_check_run(cfg, &copt);
		goto out;
	}

	if ((r = ks_pin_load(cfg->pin_file, &pin, &pin_len, err, sizeof(err))) != 0) {
		ks_err("%s", err);
		ret = KS_EXIT_PIN_FILE;
		goto out;
	}
	(void)ks_pin_source(cfg->pin_file, pin_path, sizeof(pin_path), &credential);

	/* Before any thread exists, so every thread inherits the mask. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((signal_fd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0) {
		ks_err("signalfd: %s", strerror(errno));
		goto out;
	}

	/*
	 * Before the token sees the PIN: one it refused before is not tried
	 * again, whatever restarted keysvcd (systemd, socket activation, an
	 * administrator), until the PIN is replaced.
	 */
	if ((r = ks_pin_guard_open(&guard, cfg->state_dir, pin, pin_len, err, sizeof(err))) != 0) {
		if (r == -EKEYREJECTED) {
			ks_err("PIN %s %s: %s; exiting with code %d", credential ? "credential" : "file",
			       pin_path, err, KS_EXIT_PIN_REJECTED);
			ret = KS_EXIT_PIN_REJECTED;
		} else {
			ks_err("%s; keysvcd records a PIN the token rejects there and does not "
			       "start without it", err);
			ret = KS_EXIT_CONFIG;
		}
		goto out;
	}

	max_sessions = pool_max_sessions(cfg);
	memset(&tcfg, 0, sizeof(tcfg));
	tcfg.module_path = cfg->module;
	tcfg.token_uri = cfg->token_uri;
	tcfg.token_label = cfg->token_label;
	tcfg.token_serial = cfg->token_serial;
	tcfg.pin = pin;
	tcfg.pin_len = pin_len;
	tcfg.sessions = cfg->sessions;
	tcfg.max_sessions = max_sessions;
	tcfg.key_recheck_ms = (int)cfg->key_recheck_ms;
	tcfg.rescan = cfg->rescan_reinitialize ? KS_RESCAN_REINITIALIZE : KS_RESCAN_SEARCH;
	tcfg.pin_rejected = record_pin_rejected;
	tcfg.pin_rejected_arg = &guard;
	r = ks_token_open(&tcfg, &token);
	/* The token layer keeps its own locked copy for re-login; ours goes now. */
	ks_pin_free(pin, pin_len);
	pin = NULL;
	if (r != 0) {
		ret = r == -EKEYREJECTED ? KS_EXIT_PIN_REJECTED : KS_EXIT_TOKEN;
		ks_err("cannot open the token: %s; exiting with code %d", r == -EKEYREJECTED ?
		       "PIN rejected" : r == -ENODEV ? "token not found or not present" :
		       strerror(-r), ret);
		goto out;
	}
	warn_legacy_keys(token);
	aopt.sync = cfg->audit_sync_none ? KS_AUDIT_SYNC_NONE : KS_AUDIT_SYNC_DATA;
	aopt.failure = cfg->audit_continue ? KS_AUDIT_CONTINUE : KS_AUDIT_REFUSE;
	if ((r = ks_audit_open(cfg->audit_log, &aopt, &st.audit, err, sizeof(err))) != 0) {
		ks_err("%s", err);
		/* A file or directory others could tamper with is a configuration error. */
		if (r == -EACCES)
			ret = KS_EXIT_CONFIG;
		goto out;
	}
	if (cfg->audit_continue)
		ks_warn("audit_failure is continue: keys are used even when the audit log "
			"cannot record it");
	if (cfg->audit_sync_none)
		ks_notice("audit_sync is none: audit records survive a crash of keysvcd but "
			  "not of the machine");
	if ((r = ks_ctx_new(token, st.audit, ks_policy_ref(cfg->policy), &st.ctx)) != 0) {
		ks_err("out of memory");
		goto out;
	}

	memset(&scfg, 0, sizeof(scfg));
	scfg.socket_path = cfg->socket_path;
	scfg.socket_mode = cfg->socket_mode;
	scfg.has_socket_gid = cfg->has_socket_gid;
	scfg.socket_gid = cfg->socket_gid;
	scfg.socket_activated = activated;
	scfg.max_clients = cfg->max_clients;
	scfg.max_clients_per_uid = cfg->max_clients_per_uid;
	scfg.idle_timeout_ms = cfg->idle_timeout_ms;
	scfg.frame_timeout_ms = cfg->frame_timeout_ms;
	/*
	 * The token opens files (SoftHSM) or sockets per operation: a few per
	 * session, for as many as the pool may grow to.
	 */
	scfg.fd_reserve = 16 + 4 * max_sessions;
	/* As many workers as the token can keep busy: between the pool's floor and its cap. */
	scfg.workers_min = cfg->sessions;
	scfg.workers_max = max_sessions;
	scfg.token = token;
	if (activated) {
		/* keysvcd.socket made it: its path, mode and group are systemd's to set. */
		if (strcmp(activated_name, cfg->socket_path) != 0)
			ks_notice("socket activation: serving %s; the configured socket %s is "
				  "not used", activated_name, cfg->socket_path);
		ks_notice("listening on %s, passed by systemd (%zu policy rules)",
			  activated_name, ks_policy_size(cfg->policy));
	} else {
		if ((listen_fd = ks_server_listen(&scfg, err, sizeof(err))) < 0) {
			ks_err("%s", err);
			goto out;
		}
		ks_notice("listening on %s (%zu policy rules)", cfg->socket_path,
			  ks_policy_size(cfg->policy));
	}
	snprintf(status, sizeof(status), "READY=1\nSTATUS=serving %s",
		 activated ? activated_name : cfg->socket_path);
	notify(status);
	r = ks_server_run(listen_fd, signal_fd, st.ctx, &scfg, reload, &st);
	listen_fd = -1;
	if (r == -EBUSY) {
		/* A connection thread is stuck in the token; do not free what it uses. */
		ks_warn("exiting with a request still in the token");
		/* Its intent keeps other outcome records held: they go to the file first. */
		(void)ks_audit_flush(st.audit);
		_exit(KS_EXIT_INTERNAL);
	}
	ret = r == 0 ? KS_EXIT_OK : KS_EXIT_INTERNAL;
out:
	ks_pin_free(pin, pin_len);
	ks_ctx_free(st.ctx);
	ks_audit_close(st.audit);
	if (ks_token_close(token) == -EBUSY) {
		ks_warn("exiting with the token reconnect still in the module");
		_exit(KS_EXIT_INTERNAL);
	}
	if (signal_fd >= 0)
		close(signal_fd);
	/* Only an activated socket is still open here (ks_server_run() closes the rest). */
	if (listen_fd >= 0)
		close(listen_fd);
	ks_config_free(cfg);
	ks_pin_guard_clear(&guard);
	return ret;
}
