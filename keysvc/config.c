#include "keysvc/config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keysvc/pinguard.h"
#include "pkcs11/token.h"
#include "proto/file.h"
#include "proto/json.h"
#include "proto/log.h"

#define KS_CONFIG_MAX (1024 * 1024)

int ks_config_check_dirs(const char *path, const char *what, char *err,
			 size_t err_len)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;

	if (path[0] != '/' || strlen(path) >= sizeof(dir)) {
		snprintf(err, err_len, "%s %s: not an absolute path", what, path);
		return -EINVAL;
	}
	memcpy(dir, path, strlen(path) + 1);
	/* From the file's own directory up to the root. */
	while ((slash = strrchr(dir, '/')) != NULL) {
		if (slash == dir)
			slash[1] = '\0';
		else
			*slash = '\0';
		if (lstat(dir, &st) != 0) {
			int r = -errno;

			snprintf(err, err_len, "%s %s: directory %s: %s", what, path, dir, strerror(errno));
			return r;
		}
		if (!S_ISDIR(st.st_mode)) {
			snprintf(err, err_len, "%s %s: %s is not a directory", what, path, dir);
			return -EACCES;
		}
		if (st.st_uid != 0 && st.st_uid != geteuid()) {
			snprintf(err, err_len, "%s %s: directory %s is owned by uid %u, must be root's",
				 what, path, dir, (unsigned)st.st_uid);
			return -EACCES;
		}
		/*
		 * In a root-owned sticky directory (/tmp) others may add
		 * entries but not rename or remove ours: the path below it
		 * stays as checked.
		 */
		if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !((st.st_mode & S_ISVTX) && st.st_uid == 0)) {
			snprintf(err, err_len, "%s %s: directory %s is writable by group or others",
				 what, path, dir);
			return -EACCES;
		}
		if (dir[1] == '\0')
			break;
	}
	return 0;
}

int ks_config_check_file(const char *path, const char *what, char *err,
			 size_t err_len)
{
	struct stat st;
	int fd, r;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		snprintf(err, err_len, "%s %s: %s", what, path,
			 errno == ELOOP ? "is a symbolic link" : strerror(errno));
		/* A symlink is a refusal like a bad owner or mode, not an I/O error. */
		if (r == -ELOOP)
			r = -EACCES;
		return r;
	}
	if (fstat(fd, &st) != 0) {
		r = -errno;
		snprintf(err, err_len, "%s %s: %s", what, path, strerror(errno));
		goto out;
	}
	r = -EACCES;
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, err_len, "%s %s: not a regular file", what, path);
		goto out;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		snprintf(err, err_len, "%s %s: owned by uid %u, must be root's",
			 what, path, (unsigned)st.st_uid);
		goto out;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, err_len, "%s %s: writable by group or others", what, path);
		goto out;
	}
	r = 0;
out:
	close(fd);
	return r;
}

struct config_json {
	const char *module;
	json_t *token;
	const char *pin_file;
	const char *state_dir;
	const char *socket;
	json_t *socket_group;
	const char *socket_mode;
	const char *audit_log;
	const char *audit_failure;
	const char *audit_sync;
	const char *log_level;
	uint64_t sessions;
	uint64_t max_sessions;
	uint64_t max_clients;
	uint64_t client_timeout_ms;
	uint64_t max_clients_per_uid;
	uint64_t idle_timeout_ms;
	uint64_t frame_timeout_ms;
	uint64_t key_recheck_ms;
	const char *rescan;
	json_t *policy;
};

/* Absent from the file: explicit 0 means "read back on every use". */
#define KEY_RECHECK_UNSET UINT64_MAX

static const struct ks_json_field config_fields[] = {
	{ "module", KS_JSON_STRING, offsetof(struct config_json, module), KS_JSON_REQUIRED, 4096 },
	{ "token", KS_JSON_ANY, offsetof(struct config_json, token), KS_JSON_REQUIRED, 0 },
	{ "pin_file", KS_JSON_STRING, offsetof(struct config_json, pin_file), 0, 4096 },
	{ "state_dir", KS_JSON_STRING, offsetof(struct config_json, state_dir), 0, 4000 },
	{ "socket", KS_JSON_STRING, offsetof(struct config_json, socket), 0, 107 },
	{ "socket_group", KS_JSON_ANY, offsetof(struct config_json, socket_group), 0, 0 },
	{ "socket_mode", KS_JSON_STRING, offsetof(struct config_json, socket_mode), 0, 4 },
	{ "audit_log", KS_JSON_STRING, offsetof(struct config_json, audit_log), 0, 4096 },
	{ "audit_failure", KS_JSON_STRING, offsetof(struct config_json, audit_failure), 0, 16 },
	{ "audit_sync", KS_JSON_STRING, offsetof(struct config_json, audit_sync), 0, 16 },
	{ "log_level", KS_JSON_STRING, offsetof(struct config_json, log_level), 0, 16 },
	{ "sessions", KS_JSON_UINT, offsetof(struct config_json, sessions), 0, 0 },
	{ "max_sessions", KS_JSON_UINT, offsetof(struct config_json, max_sessions), 0, 0 },
	{ "max_clients", KS_JSON_UINT, offsetof(struct config_json, max_clients), 0, 0 },
	{ "client_timeout_ms", KS_JSON_UINT, offsetof(struct config_json, client_timeout_ms), 0, 0 },
	{ "max_clients_per_uid", KS_JSON_UINT, offsetof(struct config_json, max_clients_per_uid), 0, 0 },
	{ "idle_timeout_ms", KS_JSON_UINT, offsetof(struct config_json, idle_timeout_ms), 0, 0 },
	{ "frame_timeout_ms", KS_JSON_UINT, offsetof(struct config_json, frame_timeout_ms), 0, 0 },
	{ "key_recheck_ms", KS_JSON_UINT, offsetof(struct config_json, key_recheck_ms), 0, 0 },
	{ "rescan", KS_JSON_STRING, offsetof(struct config_json, rescan), 0, 16 },
	{ "policy", KS_JSON_ARRAY, offsetof(struct config_json, policy), KS_JSON_REQUIRED, 1024 },
	{ NULL, 0, 0, 0, 0 },
};

struct token_json {
	const char *uri, *label, *serial;
};

static const struct ks_json_field token_fields[] = {
	{ "uri", KS_JSON_STRING, offsetof(struct token_json, uri), 0, 1024 },
	{ "label", KS_JSON_STRING, offsetof(struct token_json, label), 0, 32 },
	{ "serial", KS_JSON_STRING, offsetof(struct token_json, serial), 0, 16 },
	{ NULL, 0, 0, 0, 0 },
};

static int dup_opt(const char *s, char **out)
{
	if (s == NULL)
		return 0;
	*out = strdup(s);
	return *out == NULL ? -ENOMEM : 0;
}

static int read_file_bounded(const char *path, char **data, size_t *len,
			     char *err, size_t err_len)
{
	uint8_t *buf;
	int r;

	r = ks_file_read(path, KS_CONFIG_MAX, KS_FILE_NOFOLLOW | KS_FILE_NONBLOCK, NULL, NULL, &buf, len);
	switch (r) {
	case 0:
		*data = (char *)buf;
		return 0;
	case -ELOOP:
		snprintf(err, err_len, "config %s: is a symbolic link", path);
		return -EACCES;
	case -EISDIR:
	case -EBADFD:
		snprintf(err, err_len, "config %s: not a regular file", path);
		return -EINVAL;
	case -EFBIG:
		snprintf(err, err_len, "config %s: larger than %d bytes", path, KS_CONFIG_MAX);
		return -EINVAL;
	case -ENOMEM:
		return r;
	default:
		snprintf(err, err_len, "config %s: %s", path, strerror(-r));
		return r;
	}
}

static int parse_mode(const char *s, mode_t *mode)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 8);
	if (errno != 0 || *end != '\0' || end == s || v > 0777)
		return -EINVAL;
	/* Never world access, never execute bits: the socket is for the owner and a group. */
	if (v & 0117)
		return -EINVAL;
	*mode = (mode_t)v;
	return 0;
}

static int parse_group(json_t *v, gid_t *gid)
{
	char buf[4096];
	struct group gr, *res = NULL;
	const char *s;
	char *end;
	unsigned long id;

	if (json_is_integer(v) && json_integer_value(v) >= 0 &&
	    json_integer_value(v) < (json_int_t)UINT32_MAX) {
		*gid = (gid_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) == 0)
		return -EINVAL;
	s = json_string_value(v);
	errno = 0;
	id = strtoul(s, &end, 10);
	if (*end == '\0' && errno == 0 && s[0] >= '0' && s[0] <= '9' && id < UINT32_MAX) {
		*gid = (gid_t)id;
		return 0;
	}
	if (getgrnam_r(s, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
		return -EINVAL;
	*gid = res->gr_gid;
	return 0;
}

int ks_config_load(const char *path, int check_owner, struct ks_config **out,
		   char *err, size_t err_len)
{
	struct config_json cj;
	struct token_json tj;
	struct ks_config *cfg = NULL;
	const char *field = NULL, *why = NULL;
	struct ks_json_where where;
	json_t *root = NULL;
	char *data = NULL;
	size_t len = 0;
	int r;

	*out = NULL;
	memset(&cj, 0, sizeof(cj));
	cj.key_recheck_ms = KEY_RECHECK_UNSET;   /* 0 is a value of its own */
	memset(&tj, 0, sizeof(tj));
	if (check_owner && (r = ks_config_check_file(path, "config", err, err_len)) != 0)
		return r;
	if ((r = read_file_bounded(path, &data, &len, err, err_len)) != 0)
		return r;
	if ((root = ks_json_parse_at((const uint8_t *)data, len, &why, &where)) == NULL) {
		/* file:line:column, as compilers say it, so editors jump there. */
		if (where.line > 0)
			snprintf(err, err_len, "config %s:%d:%d: %s: %s", path, where.line,
				 where.column, why, where.detail);
		else
			snprintf(err, err_len, "config %s: %s", path, why);
		r = -EINVAL;
		goto out;
	}
	if ((r = ks_json_dispatch(root, config_fields, &cj, 0, &field, &why)) != 0) {
		snprintf(err, err_len, "config %s: %s: %s", path, field ? field : "", why);
		goto out;
	}
	r = -EINVAL;
	if (cj.module[0] != '/') {
		snprintf(err, err_len, "config: module \"%.256s\": must be an absolute path", cj.module);
		goto out;
	}
	if (json_is_string(cj.token)) {
		const char *t = json_string_value(cj.token);

		if (strncmp(t, "pkcs11:", 7) == 0)
			tj.uri = t;
		else
			tj.label = t;
	} else if (json_is_object(cj.token)) {
		if (ks_json_dispatch(cj.token, token_fields, &tj, 0, &field, &why) != 0) {
			snprintf(err, err_len, "config: token: %s: %s", field ? field : "", why);
			goto out;
		}
		if (!!tj.uri + !!tj.label + !!tj.serial == 0) {
			snprintf(err, err_len, "config: token: needs uri, label or serial");
			goto out;
		}
		if (tj.uri != NULL && strncmp(tj.uri, "pkcs11:", 7) != 0) {
			snprintf(err, err_len, "config: token: uri \"%.256s\": must start with pkcs11:",
				 tj.uri);
			goto out;
		}
	} else {
		snprintf(err, err_len, "config: token: must be a label, a pkcs11: URI or an object");
		goto out;
	}
	if (cj.pin_file != NULL && cj.pin_file[0] != '/') {
		snprintf(err, err_len, "config: pin_file \"%.256s\": must be an absolute path",
			 cj.pin_file);
		goto out;
	}
	if (cj.state_dir != NULL && cj.state_dir[0] != '/') {
		snprintf(err, err_len, "config: state_dir \"%.256s\": must be an absolute path",
			 cj.state_dir);
		goto out;
	}
	if (cj.socket != NULL && cj.socket[0] != '/') {
		snprintf(err, err_len, "config: socket \"%.256s\": must be an absolute path",
			 cj.socket);
		goto out;
	}
	if (cj.audit_log != NULL && cj.audit_log[0] != '/') {
		snprintf(err, err_len, "config: audit_log \"%.256s\": must be an absolute path",
			 cj.audit_log);
		goto out;
	}
	if (cj.audit_failure != NULL && strcmp(cj.audit_failure, "refuse") != 0 &&
	    strcmp(cj.audit_failure, "continue") != 0) {
		snprintf(err, err_len, "config: audit_failure \"%s\": refuse or continue",
			 cj.audit_failure);
		goto out;
	}
	if (cj.audit_sync != NULL && strcmp(cj.audit_sync, "data") != 0 &&
	    strcmp(cj.audit_sync, "none") != 0) {
		snprintf(err, err_len, "config: audit_sync \"%s\": data or none", cj.audit_sync);
		goto out;
	}
	if (cj.rescan != NULL && strcmp(cj.rescan, "search") != 0 &&
	    strcmp(cj.rescan, "reinitialize") != 0) {
		snprintf(err, err_len, "config: rescan \"%s\": search or reinitialize", cj.rescan);
		goto out;
	}
	if (cj.log_level != NULL && ks_log_level_from_name(cj.log_level) < 0) {
		snprintf(err, err_len, "config: log_level \"%s\": one of err, warning, notice, "
			 "info, debug", cj.log_level);
		goto out;
	}
	if (cj.sessions > 1024 || cj.max_clients > 65536 || cj.client_timeout_ms > 3600000 ||
	    (cj.client_timeout_ms > 0 && cj.client_timeout_ms < 100)) {
		snprintf(err, err_len, "config: sessions (1..1024), max_clients (1..65536) or "
			 "client_timeout_ms (100..3600000) out of range");
		goto out;
	}
	if (cj.max_sessions > 1024 || (cj.max_sessions > 0 && cj.sessions > cj.max_sessions)) {
		snprintf(err, err_len, "config: max_sessions: out of range (1..1024, at least sessions)");
		goto out;
	}
	if (cj.max_clients_per_uid > 65536) {
		snprintf(err, err_len, "config: max_clients_per_uid: out of range (1..65536)");
		goto out;
	}
	if (cj.idle_timeout_ms > 3600000 || (cj.idle_timeout_ms > 0 && cj.idle_timeout_ms < 100)) {
		snprintf(err, err_len, "config: idle_timeout_ms: out of range (100..3600000)");
		goto out;
	}
	if (cj.frame_timeout_ms > 3600000 || (cj.frame_timeout_ms > 0 && cj.frame_timeout_ms < 100)) {
		snprintf(err, err_len, "config: frame_timeout_ms: out of range (100..3600000)");
		goto out;
	}
	if (cj.key_recheck_ms != KEY_RECHECK_UNSET && cj.key_recheck_ms > 3600000) {
		snprintf(err, err_len, "config: key_recheck_ms: out of range (0..3600000)");
		goto out;
	}

	if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
		r = -ENOMEM;
		goto out;
	}
	cfg->socket_mode = 0660;
	if (cj.socket_mode != NULL && parse_mode(cj.socket_mode, &cfg->socket_mode) != 0) {
		snprintf(err, err_len, "config: socket_mode \"%s\": octal, at most 0660 (no world "
			 "access)", cj.socket_mode);
		goto out;
	}
	if (cj.socket_group != NULL) {
		if (parse_group(cj.socket_group, &cfg->socket_gid) != 0) {
			if (json_is_string(cj.socket_group))
				snprintf(err, err_len, "config: socket_group \"%.256s\": unknown group",
					 json_string_value(cj.socket_group));
			else
				snprintf(err, err_len, "config: socket_group: a group name or a "
					 "number below 4294967295");
			goto out;
		}
		cfg->has_socket_gid = 1;
	}
	if ((r = ks_policy_from_json(cj.policy, &cfg->policy, err, err_len)) != 0)
		goto out;
	cfg->audit_continue = cj.audit_failure != NULL && strcmp(cj.audit_failure, "continue") == 0;
	cfg->audit_sync_none = cj.audit_sync != NULL && strcmp(cj.audit_sync, "none") == 0;
	cfg->rescan_reinitialize = cj.rescan != NULL && strcmp(cj.rescan, "reinitialize") == 0;
	cfg->sessions = cj.sessions ? (unsigned)cj.sessions : 16;
	/* 0: from the descriptor limit at start (keysvc/main.c). */
	cfg->max_sessions = (unsigned)cj.max_sessions;
	cfg->max_clients = cj.max_clients ? (unsigned)cj.max_clients : 512;
	cfg->client_timeout_ms = cj.client_timeout_ms ? (unsigned)cj.client_timeout_ms : 30000;
	cfg->max_clients_per_uid = cj.max_clients_per_uid ? (unsigned)cj.max_clients_per_uid : 64;
	cfg->idle_timeout_ms = cj.idle_timeout_ms ? (unsigned)cj.idle_timeout_ms :
			       cfg->client_timeout_ms;
	cfg->frame_timeout_ms = cj.frame_timeout_ms ? (unsigned)cj.frame_timeout_ms :
				cfg->client_timeout_ms;
	cfg->key_recheck_ms = cj.key_recheck_ms == KEY_RECHECK_UNSET ? KS_DEFAULT_KEY_RECHECK_MS :
			      (unsigned)cj.key_recheck_ms;
	if ((r = dup_opt(cj.module, &cfg->module)) != 0 ||
	    (r = dup_opt(tj.uri, &cfg->token_uri)) != 0 ||
	    (r = dup_opt(tj.label, &cfg->token_label)) != 0 ||
	    (r = dup_opt(tj.serial, &cfg->token_serial)) != 0 ||
	    (r = dup_opt(cj.pin_file, &cfg->pin_file)) != 0 ||
	    (r = dup_opt(cj.state_dir ? cj.state_dir : KS_DEFAULT_STATE_DIR, &cfg->state_dir)) != 0 ||
	    (r = dup_opt(cj.socket ? cj.socket : KS_DEFAULT_SOCKET, &cfg->socket_path)) != 0 ||
	    (r = dup_opt(cj.audit_log, &cfg->audit_log)) != 0 ||
	    (r = dup_opt(cj.log_level, &cfg->log_level)) != 0)
		goto out;
	if (check_owner) {
		/* Distributions install modules behind symlinks; check and load the file they name. */
		char *real = realpath(cfg->module, NULL);

		if (real == NULL) {
			r = -errno;
			snprintf(err, err_len, "module %s: %s", cfg->module, strerror(errno));
			goto out;
		}
		free(cfg->module);
		cfg->module = real;
		/* Whoever could swap a directory on the way could swap the module. */
		if ((r = ks_config_check_file(cfg->module, "module", err, err_len)) != 0 ||
		    (r = ks_config_check_dirs(cfg->module, "module", err, err_len)) != 0)
			goto out;
	}
	*out = cfg;
	cfg = NULL;
	r = 0;
out:
	ks_config_free(cfg);
	json_decref(root);
	free(data);
	return r;
}

void ks_config_free(struct ks_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->module);
	free(cfg->token_uri);
	free(cfg->token_label);
	free(cfg->token_serial);
	free(cfg->pin_file);
	free(cfg->state_dir);
	free(cfg->socket_path);
	free(cfg->audit_log);
	free(cfg->log_level);
	ks_policy_unref(cfg->policy);
	free(cfg);
}
