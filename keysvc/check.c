#include "keysvc/check.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keysvc/pin.h"
#include "keysvc/pinguard.h"
#include "pkcs11/token.h"
#include "proto/exitcode.h"
#include "proto/log.h"

#define UNIT_NAME "keysvcd.service"
#define UNIT_DIRS_MAX 16
#define UNIT_DROPINS_MAX 64
#define UNIT_LINE_MAX 4096

/* systemd's system unit search path, highest priority first (systemd.unit(5)). */
static const char *const default_unit_dirs[] = {
	"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
	"/usr/lib/systemd/system", "/lib/systemd/system",
};

/* What keysvcd.service says about the PIN and the user, as far as a check needs it. */
struct unit_facts {
	char path[PATH_MAX];       /* the unit file; "" if none was found */
	char credential[PATH_MAX]; /* FILE of LoadCredential=keysvc-pin:FILE; "" if none */
	char user[256];            /* User=; "" if none */
};

struct unit_dirs {
	char *buf;                 /* $SYSTEMD_UNIT_PATH's copy, the entries point into it */
	const char *dir[UNIT_DIRS_MAX];
	size_t n;
};

static void unit_dirs_add_defaults(struct unit_dirs *d)
{
	for (size_t i = 0; i < sizeof(default_unit_dirs) / sizeof(default_unit_dirs[0]) &&
	     d->n < UNIT_DIRS_MAX; i++)
		d->dir[d->n++] = default_unit_dirs[i];
}

/* As systemd reads it: a trailing ':' (an empty last entry) appends the defaults. */
static void unit_dirs_get(struct unit_dirs *d)
{
	const char *env = getenv("SYSTEMD_UNIT_PATH");
	char *p, *save = NULL;

	memset(d, 0, sizeof(*d));
	if (env == NULL || env[0] == '\0' || (d->buf = strdup(env)) == NULL) {
		unit_dirs_add_defaults(d);
		return;
	}
	for (p = strtok_r(d->buf, ":", &save); p != NULL && d->n < UNIT_DIRS_MAX;
	     p = strtok_r(NULL, ":", &save))
		if (p[0] == '/')
			d->dir[d->n++] = p;
	if (env[strlen(env) - 1] == ':')
		unit_dirs_add_defaults(d);
}

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/*
 * Apply one unit file or drop-in to @u: its [Service] section's
 * LoadCredential= for keysvc-pin (an empty assignment resets the list, as
 * in systemd) and User=. Continuation lines are not joined: neither
 * setting needs them.
 */
static void unit_read(const char *path, struct unit_facts *u)
{
	char line[UNIT_LINE_MAX];
	int in_service = 0;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *s = trim(line), *eq, *key, *val;

		if (s[0] == '[') {
			in_service = strcmp(s, "[Service]") == 0;
			continue;
		}
		if (!in_service || s[0] == '#' || s[0] == ';' || (eq = strchr(s, '=')) == NULL)
			continue;
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		if (strcmp(key, "LoadCredential") == 0) {
			if (val[0] == '\0')
				u->credential[0] = '\0';
			else if (strncmp(val, KS_PIN_CREDENTIAL ":", strlen(KS_PIN_CREDENTIAL) + 1) == 0)
				snprintf(u->credential, sizeof(u->credential), "%s",
					 val + strlen(KS_PIN_CREDENTIAL) + 1);
		} else if (strcmp(key, "User") == 0) {
			snprintf(u->user, sizeof(u->user), "%s", val);
		}
	}
	fclose(f);
}

static int conf_entry(const struct dirent *e)
{
	size_t n = strlen(e->d_name);

	return n > 5 && strcmp(e->d_name + n - 5, ".conf") == 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(strrchr(*(char *const *)a, '/'), strrchr(*(char *const *)b, '/'));
}

/*
 * keysvcd.service as systemd would assemble it: the first unit file on
 * the search path, then every keysvcd.service.d/NAME.conf in the order of
 * NAME, a NAME in an earlier directory hiding the same NAME further down.
 */
static void unit_find(struct unit_facts *u)
{
	char path[PATH_MAX], *dropins[UNIT_DROPINS_MAX];
	struct unit_dirs d;
	size_t nd = 0;

	memset(u, 0, sizeof(*u));
	unit_dirs_get(&d);
	for (size_t i = 0; i < d.n && u->path[0] == '\0'; i++) {
		snprintf(path, sizeof(path), "%s/%s", d.dir[i], UNIT_NAME);
		if (access(path, R_OK) == 0)
			snprintf(u->path, sizeof(u->path), "%s", path);
	}
	if (u->path[0] == '\0')
		goto out;
	unit_read(u->path, u);
	for (size_t i = 0; i < d.n; i++) {
		struct dirent **ents = NULL;
		int n;

		snprintf(path, sizeof(path), "%s/%s.d", d.dir[i], UNIT_NAME);
		if ((n = scandir(path, &ents, conf_entry, alphasort)) < 0)
			continue;
		for (int k = 0; k < n; k++) {
			int hidden = 0;

			for (size_t j = 0; j < nd; j++)
				if (strcmp(strrchr(dropins[j], '/') + 1, ents[k]->d_name) == 0)
					hidden = 1;
			if (!hidden && nd < UNIT_DROPINS_MAX &&
			    asprintf(&dropins[nd], "%s/%s", path, ents[k]->d_name) >= 0)
				nd++;
			free(ents[k]);
		}
		free(ents);
	}
	qsort(dropins, nd, sizeof(dropins[0]), name_cmp);
	for (size_t j = 0; j < nd; j++) {
		unit_read(dropins[j], u);
		free(dropins[j]);
	}
out:
	free(d.buf);
}

/*
 * The PIN as keysvcd would get it: the credential or pin_file; by hand,
 * --pin-file or the file keysvcd.service hands over as the credential.
 * Says where it came from on stdout. An exit code.
 */
static int pin_read(const struct ks_config *cfg, const struct ks_check_options *opt,
		    const struct unit_facts *u, char **pin, size_t *pin_len)
{
	char source[PATH_MAX], from[2 * PATH_MAX + 256], err[1024];
	const char *file;
	int credential = 0;

	if (ks_pin_source(cfg->pin_file, source, sizeof(source), &credential) == 0) {
		file = cfg->pin_file;
		snprintf(from, sizeof(from), credential ? "the credential %s" : "pin_file %s",
			 source);
	} else if (opt->pin_file != NULL) {
		file = opt->pin_file;
		snprintf(from, sizeof(from), "%s (--pin-file; keysvcd.service must pass it as the "
			 "credential " KS_PIN_CREDENTIAL ")", file);
	} else if (u->credential[0] == '/') {
		file = u->credential;
		snprintf(from, sizeof(from), "%s, which %s passes as the credential "
			 KS_PIN_CREDENTIAL " (LoadCredential=)", file, u->path);
	} else {
		ks_err("no PIN source: the configuration has no pin_file, $CREDENTIALS_DIRECTORY "
		       "has no " KS_PIN_CREDENTIAL "%s%s%s; name the file keysvcd.service passes "
		       "with LoadCredential=" KS_PIN_CREDENTIAL ":FILE with --pin-file FILE",
		       u->path[0] ? " and " : "", u->path, u->path[0] ?
		       " has no LoadCredential=" KS_PIN_CREDENTIAL ":/absolute/path" : "");
		return KS_EXIT_PIN_FILE;
	}
	if (ks_pin_load(file, pin, pin_len, err, sizeof(err)) != 0) {
		ks_err("%s", err);
		return KS_EXIT_PIN_FILE;
	}
	printf("PIN: read from %s\n", from);
	return KS_EXIT_OK;
}

/* Root checks as keysvcd's user: state_dir, the audit log and a SoftHSM token are that user's. */
static int become_user(const char *user, const char *why)
{
	char buf[4096];
	struct passwd pw, *res = NULL;

	if (getpwnam_r(user, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
		ks_err("user \"%s\" (%s): unknown user", user, why);
		return KS_EXIT_CONFIG;
	}
	if (pw.pw_uid == 0)
		return KS_EXIT_OK;
	if (initgroups(pw.pw_name, pw.pw_gid) != 0 || setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid) != 0 ||
	    setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid) != 0) {
		ks_err("cannot become user \"%s\" (%s): %s", user, why, strerror(errno));
		return KS_EXIT_INTERNAL;
	}
	printf("checking as user %s (%s)\n", user, why);
	return KS_EXIT_OK;
}

/* What ks_audit_open() will need: safe directories, and a file keysvcd owns or may create. */
static int audit_log_check(const char *path)
{
	char err[1024], dir[PATH_MAX], *slash;
	struct stat st;

	if (ks_config_check_dirs(path, "audit log", err, sizeof(err)) != 0) {
		ks_err("%s", err);
		return KS_EXIT_CONFIG;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISREG(st.st_mode)) {
			ks_err("audit log %s: not a regular file (or a symbolic link)", path);
			return KS_EXIT_CONFIG;
		}
		if (st.st_uid != geteuid()) {
			ks_err("audit log %s: owned by uid %u, must be keysvcd's (uid %u)", path,
			       (unsigned)st.st_uid, (unsigned)geteuid());
			return KS_EXIT_CONFIG;
		}
		if (st.st_mode & (S_IWGRP | S_IWOTH)) {
			ks_err("audit log %s: writable by group or others (mode %04o)", path,
			       (unsigned)(st.st_mode & 07777));
			return KS_EXIT_CONFIG;
		}
		printf("audit log: %s\n", path);
		return KS_EXIT_OK;
	}
	if (errno != ENOENT) {
		ks_err("audit log %s: %s", path, strerror(errno));
		return KS_EXIT_CONFIG;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL)
		slash[slash == dir ? 1 : 0] = '\0';
	if (access(dir, W_OK | X_OK) != 0) {
		ks_err("audit log %s: keysvcd (uid %u) cannot create it in %s: %s", path,
		       (unsigned)geteuid(), dir, strerror(errno));
		return KS_EXIT_CONFIG;
	}
	printf("audit log: %s (keysvcd creates it)\n", path);
	return KS_EXIT_OK;
}

static void token_config(const struct ks_config *cfg, struct ks_token_config *t)
{
	memset(t, 0, sizeof(*t));
	t->module_path = cfg->module;
	t->token_uri = cfg->token_uri;
	t->token_label = cfg->token_label;
	t->token_serial = cfg->token_serial;
	t->sessions = 1;
	t->key_recheck_ms = (int)cfg->key_recheck_ms;
	t->rescan = cfg->rescan_reinitialize ? KS_RESCAN_REINITIALIZE : KS_RESCAN_SEARCH;
}

static void record_rejected(void *arg, unsigned long ckr)
{
	(void)ks_pin_guard_record(arg, ckr);
}

/* --check-token: one login, through the guard as a start would do it. */
static int login_once(const struct ks_config *cfg, const char *pin, size_t pin_len)
{
	struct ks_token_config t;
	struct ks_pin_guard guard;
	struct ks_token *tok = NULL;
	char err[1024];
	int r;

	if ((r = ks_pin_guard_open(&guard, cfg->state_dir, pin, pin_len, err, sizeof(err))) != 0) {
		ks_err("%s", err);
		return r == -EKEYREJECTED ? KS_EXIT_PIN_REJECTED : KS_EXIT_CONFIG;
	}
	token_config(cfg, &t);
	t.pin = pin;
	t.pin_len = pin_len;
	t.pin_rejected = record_rejected;
	t.pin_rejected_arg = &guard;
	r = ks_token_open(&t, &tok);
	ks_pin_guard_clear(&guard);
	if (r == -EKEYREJECTED) {
		ks_err("the token rejected the PIN; recorded in %s/%s, so keysvcd will not present "
		       "it again", cfg->state_dir, KS_PIN_GUARD_MARKER);
		return KS_EXIT_PIN_REJECTED;
	}
	if (r != 0) {
		ks_err("cannot log in to the token: %s", strerror(-r));
		return r == -EINVAL ? KS_EXIT_CONFIG : KS_EXIT_TOKEN;
	}
	(void)ks_token_close(tok);
	printf("token: logged in with the PIN\n");
	return KS_EXIT_OK;
}

int ks_check_run(const struct ks_config *cfg, const struct ks_check_options *opt)
{
	struct ks_token_config t;
	struct ks_token_info info;
	struct unit_facts u;
	char err[1024], why[PATH_MAX + 16], source[PATH_MAX];
	char *pin = NULL;
	size_t pin_len = 0;
	int ret, r, credential = 0, pin_as_user;

	printf("config %s: %zu policy rules\n", opt->config_path, ks_policy_size(cfg->policy));
	unit_find(&u);
	if (opt->user != NULL && geteuid() != 0) {
		ks_err("--user %s: only root can check as another user", opt->user);
		ret = KS_EXIT_USAGE;
		goto out;
	}
	/*
	 * systemd reads a credential as root, keysvcd a pin_file as itself:
	 * read each as it will be read.
	 */
	pin_as_user = ks_pin_source(cfg->pin_file, source, sizeof(source), &credential) == 0 &&
		      !credential;
	if (!pin_as_user && (ret = pin_read(cfg, opt, &u, &pin, &pin_len)) != KS_EXIT_OK)
		goto out;
	if (geteuid() == 0 && (opt->user != NULL || u.user[0] != '\0')) {
		if (opt->user != NULL)
			snprintf(why, sizeof(why), "--user");
		else
			snprintf(why, sizeof(why), "User= of %s", u.path);
		if ((ret = become_user(opt->user != NULL ? opt->user : u.user, why)) != KS_EXIT_OK)
			goto out;
	}
	if (pin_as_user && (ret = pin_read(cfg, opt, &u, &pin, &pin_len)) != KS_EXIT_OK)
		goto out;
	if ((r = ks_pin_guard_check(cfg->state_dir, pin, pin_len, err, sizeof(err))) != 0) {
		ks_err("%s", err);
		ret = r == -EKEYREJECTED ? KS_EXIT_PIN_REJECTED : KS_EXIT_CONFIG;
		goto out;
	}
	printf("state_dir: %s\n", cfg->state_dir);
	if (cfg->audit_log != NULL && (ret = audit_log_check(cfg->audit_log)) != KS_EXIT_OK)
		goto out;
	token_config(cfg, &t);
	if ((r = ks_token_probe(&t, &info)) != 0) {
		/* The token layer logged which: no module, no such token, several. */
		ret = r == -EINVAL ? KS_EXIT_CONFIG : KS_EXIT_TOKEN;
		goto out;
	}
	printf("token: \"%s\" (serial %s, %s %s) in %s (%s); not logged in\n", info.label,
	       info.serial, info.manufacturer, info.model, cfg->module, info.library);
	if (opt->login && (ret = login_once(cfg, pin, pin_len)) != KS_EXIT_OK)
		goto out;
	printf("%s: configuration OK\n", opt->config_path);
	ret = KS_EXIT_OK;
out:
	if (pin != NULL)
		ks_pin_free(pin, pin_len);
	return ret;
}
