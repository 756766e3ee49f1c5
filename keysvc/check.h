/*
 * keysvcd --check-config and --check-token: what a start would meet,
 * found before the start.
 *
 * --check-config goes as far as a start goes without presenting the PIN:
 * the configuration and policy (already loaded by the caller), the PIN
 * source (read, never printed), state_dir and the rejected-PIN guard, the
 * audit log's directory and file, and the PKCS#11 module (loaded,
 * initialised, the configured token found; no login). --check-token then
 * logs in once, through the rejected-PIN guard: a PIN the token refused
 * before is not presented, and one it refuses now is recorded.
 *
 * An administrator runs it by hand, where systemd's credential is not
 * there: the PIN source is then looked up in keysvcd.service as systemd
 * would find it ($SYSTEMD_UNIT_PATH, else /etc, /run, /usr/local/lib,
 * /usr/lib, /lib systemd/system, with keysvcd.service.d drop-ins), its
 * LoadCredential=keysvc-pin:FILE read (as root, as systemd reads it), and
 * when run as root the rest is checked as the unit's User= (or --user),
 * pin_file included: keysvcd reads it, state_dir and the token as that
 * user, not as root.
 */
#ifndef KEYSVC_CHECK_H
#define KEYSVC_CHECK_H

#include "keysvc/config.h"

struct ks_check_options {
	const char *config_path;
	const char *pin_file;   /* --pin-file: the PIN for a credential set-up; NULL: look */
	const char *user;       /* --user: check as this user (root only); NULL: the unit's User= */
	int login;              /* --check-token: log in once */
};

/*
 * Run the checks on @cfg; report each on stdout, log what fails.
 * Returns the exit code (proto/exitcode.h): 0, 3 (state_dir, audit log,
 * several tokens match, user), 4 (no PIN source, or unreadable), 5 (the
 * module or the token), 6 (the PIN was rejected, now or before).
 */
int ks_check_run(const struct ks_config *cfg, const struct ks_check_options *opt);

#endif
