/*
 * keysvcd configuration: one JSON file, owned by root (or by the user the
 * daemon runs as, for unprivileged test runs) and writable by nobody else.
 * The PKCS#11 module path is taken from here and nowhere else.
 * The format is documented in docs/deployment.md ("Configuration").
 */
#ifndef KEYSVC_CONFIG_H
#define KEYSVC_CONFIG_H

#include <stddef.h>
#include <sys/types.h>

#include "keysvc/policy.h"

#define KS_DEFAULT_SOCKET "/run/keysvc/keysvc.sock"
#define KS_DEFAULT_CONFIG "/etc/keysvc/keysvcd.json"
#define KS_PIN_CREDENTIAL "keysvc-pin"

struct ks_config {
	char *module;             /* absolute path, checked by ks_config_check_file() */
	char *token_uri;          /* "pkcs11:..." or NULL */
	char *token_label;
	char *token_serial;
	char *pin_file;           /* NULL: only $CREDENTIALS_DIRECTORY/keysvc-pin */
	char *state_dir;          /* the rejected-PIN guard's files (keysvc/pinguard.h); default /var/lib/keysvc */
	char *socket_path;
	int has_socket_gid;
	gid_t socket_gid;
	mode_t socket_mode;       /* default 0660 */
	char *audit_log;          /* NULL: audit lines go to stderr */
	int audit_continue;       /* "audit_failure": "continue"; default refuse */
	int audit_sync_none;      /* "audit_sync": "none"; default data (fdatasync) */
	char *log_level;          /* NULL: notice */
	unsigned sessions;        /* PKCS#11 sessions kept open while idle, default 16 */
	unsigned max_sessions;    /* the most the pool grows to; 0: from the descriptor limit */
	unsigned max_clients;     /* concurrent connections, default 512 */
	unsigned client_timeout_ms; /* default 30000; the default of the next two */
	unsigned max_clients_per_uid; /* concurrent connections of one uid, default 64 */
	unsigned idle_timeout_ms;   /* wait for the next request, default client_timeout_ms */
	unsigned frame_timeout_ms;  /* whole request in, whole response out, default client_timeout_ms */
	unsigned key_recheck_ms;    /* cached key handles used unchecked this long; 0: every use */
	int rescan_reinitialize;    /* "rescan": "reinitialize": an unknown key name re-initialises the module; default search */
	struct ks_policy *policy; /* one reference owned by the config */
};

/*
 * Read and validate @path. With @check_owner the file must be a regular
 * file (not a symlink) owned by root or by the effective uid and not
 * writable by group or others; the module file gets the same check, and
 * each directory above it ks_config_check_dirs().
 * Returns 0 and *@out, or -EINVAL/-EACCES/-ENOENT/-ENOMEM with @err
 * describing the problem (naming the field).
 */
int ks_config_load(const char *path, int check_owner, struct ks_config **out,
		   char *err, size_t err_len);

void ks_config_free(struct ks_config *cfg);

/*
 * Check that @path (opened without following symlinks) is a regular
 * file owned by root or the effective uid and not writable by group or
 * others. 0 or a negative errno with @err filled.
 */
int ks_config_check_file(const char *path, const char *what, char *err,
			 size_t err_len);

/*
 * Check every directory above @path, which must be absolute and free of
 * symlinks (a realpath()): each must be a directory owned by root or the
 * effective uid, and not writable by group or others unless it is a
 * root-owned sticky directory. 0 or a negative errno with @err filled.
 */
int ks_config_check_dirs(const char *path, const char *what, char *err,
			 size_t err_len);

#endif
