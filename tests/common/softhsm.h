/*
 * A private SoftHSM token per test program.
 *
 * ks_test_token_setup() runs softhsm-conf/setup-token.sh (path in
 * $KS_SETUP_TOKEN) on a fresh directory under $TMPDIR, which creates a
 * softhsm2.conf whose token directory is inside it, a random user PIN and SO
 * PIN in 0600 files, and an initialised token with the given label. It then
 * sets SOFTHSM2_CONF for this process so the module opens that token.
 * Nothing is written to the system token directory or ~/.config/softhsm2.
 */
#ifndef KEYSVC_TESTS_SOFTHSM_H
#define KEYSVC_TESTS_SOFTHSM_H

#include <limits.h>
#include <stddef.h>

#include "pkcs11/token.h"

struct ks_test_token {
	char dir[PATH_MAX];          /* the private directory */
	char conf[PATH_MAX];         /* dir/softhsm2.conf */
	char pin_file[PATH_MAX];     /* dir/pin, mode 0600 */
	char module[PATH_MAX];       /* $KS_SOFTHSM_MODULE */
	char label[33];
	char pin[64];                /* the user PIN, read back from pin_file */
	size_t pin_len;
};

/* 0 on success; on failure prints why to stderr and returns -1. */
int ks_test_token_setup(struct ks_test_token *t, const char *label);

/*
 * A token-layer configuration for @t: zeroed, then the module, the label
 * and the PIN (borrowed from @t); the caller sets the rest.
 */
void ks_test_token_config(const struct ks_test_token *t, struct ks_token_config *cfg);

/* Removes the directory tree and wipes the PIN. */
void ks_test_token_teardown(struct ks_test_token *t);

/*
 * ks_test_token_setup(), then faultp11 (tests/faultp11, $KS_FAULTP11, set
 * by meson test) in front of @t's module for this process and its children:
 * KS_FAULTP11_TARGET is @t's module and KS_FAULTP11_COUNT is @count, set
 * to dir/calls (@count_len bytes at most). 0, or -1 with why on stderr.
 */
int ks_test_faultp11_token_setup(struct ks_test_token *t, const char *label, char *count,
				 size_t count_len);

/* Unsets KS_FAULTP11_COUNT, then ks_test_token_teardown(). */
void ks_test_faultp11_token_teardown(struct ks_test_token *t);

/* How many lines of the file @path are exactly @line (0 when it cannot be read). */
int ks_test_count_lines(const char *path, const char *line);

#endif
