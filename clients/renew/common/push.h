/*
 * After a renewal client installs a certificate: the configured reload
 * hook, then a check that every configured endpoint serves the new
 * certificate; and the inventory record of the attempt. One function for
 * all clients, so the push behaves (and exits) the same everywhere.
 *
 * The hook is an argv array from the configuration, run with fork() and
 * execvp() (no shell, so nothing in a path or name is ever interpreted),
 * stdin from /dev/null, in its own process group, stopped (the whole group:
 * SIGTERM, KS_HOOK_GRACE_MS to clean up, then SIGKILL; procgroup.h) when
 * it outlives its timeout. A failed push never touches the installed
 * files: the new certificate stays and the previous one is <cert>.prev,
 * for the operator to roll back to.
 */
#ifndef KEYSVC_CLIENTS_PUSH_H
#define KEYSVC_CLIENTS_PUSH_H

#include <stddef.h>

#include "clients/renew/common/certconf.h"

#define KS_PUSH_REASON_MAX 300

/* How long a hook stopped at its timeout gets after SIGTERM before SIGKILL. */
#define KS_HOOK_GRACE_MS 5000

/*
 * Run @argv (NULL-terminated, argv[0] looked up in PATH) for at most
 * @timeout_ms. 0 if it exited with status 0; otherwise -1 with a reason in
 * @reason ("exited with status 3", "killed by signal 9", "timed out after
 * 30 s and was stopped (SIGTERM)", "timed out after 30 s and was killed
 * (SIGKILL, 5 s after SIGTERM)", "cannot run X: No such file or directory").
 */
int ks_hook_run(char *const argv[], int timeout_ms, char *reason, size_t len);

/*
 * Check every endpoint of @cc against the installed certificate (and
 * <cert>.prev), again each second for the ones not yet in sync, for up to
 * @wait_s seconds (servers reload gracefully, old workers may answer for a
 * moment). 0 if all serve it; -1 with the first endpoint's problem and the
 * count in @reason; -ENOENT if the installed certificate cannot be read.
 */
int ks_push_verify(const struct ks_conf *conf, const struct ks_conf_cert *cc, int wait_s, char *reason,
		   size_t len);

/* What a renewal client needs for the push and the inventory; set up once in main(). */
struct ks_renewal {
	const char *client;         /* "openvox", "ucl", "oci" */
	const char *inventory;      /* the directory records go to */
	struct ks_conf conf;
};

/*
 * Load the configuration (@config_opt from --config must exist; without it
 * KS_CONF_DEFAULT is read if present) and choose the inventory directory
 * (@inventory_opt, $KEYSVC_INVENTORY, the configuration's, the default).
 * 0, or KS_EXIT_CONFIG with the reason printed.
 */
int ks_renewal_init(struct ks_renewal *rn, const char *client, const char *inventory_opt,
		    const char *config_opt);

/*
 * End of a renewal attempt that exited with @code (a ks_exit value). On
 * success (0): the push for @cert if the configuration has a hook or
 * endpoints for it, then "ok" or "push-failed" recorded. On failure:
 * "failed" with ks_last_error() as the reason. KS_EXIT_USAGE, KS_EXIT_CONFIG and
 * KS_EXIT_NOT_DUE are not renewal attempts and record nothing. @key,
 * @ca_file and @crl (NULL: keep what the record has) go into the record.
 * A record that cannot be written is a warning only. Returns @code, or
 * KS_EXIT_PUSH_FAILED when the push failed.
 */
int ks_renewal_finish(struct ks_renewal *rn, int code, const char *cert, const char *key,
		      const char *ca_file, const char *crl);

void ks_renewal_free(struct ks_renewal *rn);

#endif
