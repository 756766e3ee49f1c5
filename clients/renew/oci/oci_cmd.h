/*
 * What the keysvc-oci command files share: the parsed options and one
 * entry point per command. keysvc-oci.c parses the options (on the
 * renewal skeleton clients/renew/common/renewcli.h) and runs sign-request and
 * status; oci_renew.c holds renew, oci_rebootstrap.c rebootstrap.
 */
#ifndef KEYSVC_OCI_CMD_H
#define KEYSVC_OCI_CMD_H

#include <time.h>

#include <openssl/x509.h>

#include "clients/renew/common/renewcli.h"
#include "keysvc/keysvc.h"
#include "clients/renew/oci/oci.h"
#include "clients/renew/oci/ocisign.h"

struct oci_opts {
	struct ks_rc_opts c;
	const char *key, *new_key, *key_id, *method, *url, *body_file, *content_type, *date;
	const char *cert, *ca_file, *tls_ca_file, *endpoint, *bundle_endpoint, *node_id;
	const char *renew_path, *bundle_path, *state;
	const char *rps_fqdn, *rps_url, *infra_id, *token_zip, *region, *support_dir, *state_command;
	long register_retry_s, ready_wait_s, check_retry_s, connect_limit_s, poll_s, session_max_age_s;
	long long renew_after_s, lifetime_s, backoff_base_s, backoff_max_s;
	time_t now;
	int when_due;
};

/* Sign @rq with @key (keyId @key_id) through keysvcd into @out; 0, or an exit code (message printed). */
int oci_keysvc_sign(keysvc *ks, const char *key, const char *key_id, const struct oci_request *rq,
		    struct oci_signed *out);

/*
 * Read the one certificate in @path into *@cert (and its PEM text into
 * *@text unless NULL, both the caller's); 0, or an exit code (message printed).
 */
int oci_load_cert(const char *path, X509 **cert, char **text);

/*
 * The lifecycle of @x at o->now with o's renew-after and lifetime, not yet
 * valid by keysvc status's rule; 0, or an exit code (message printed).
 */
int oci_cert_lifecycle(const struct oci_opts *o, X509 *x, struct oci_status *st);

/* The subject of @x as RFC 4514 text keysvcd parses back (malloc'd), or NULL. */
char *oci_subject_text(X509 *x);

/* 1 when @s is an OCID or certificate id safe in a URL path without encoding. */
int oci_ocid_ok(const char *s);

/* A uniform random number in [0, 1] for backoff jitter (0.5 without randomness). */
double oci_jitter(void);

/* renew: exit code (KS_EXIT_*), messages on stderr; --json results go through the skeleton. */
int oci_cmd_renew(const struct oci_opts *o);

/*
 * Register the node again with RPS from --token-zip and wait until it is
 * ready, logging every exchange to a support bundle. A process exit code
 * (ks_exit_code()-style), printed errors on stderr.
 */
int oci_cmd_rebootstrap(const struct oci_opts *o);

#endif
