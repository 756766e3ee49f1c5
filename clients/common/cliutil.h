/*
 * What every renewal client's command line shares: messages, the exit
 * codes, number parsing, keysvcd's public keys and the HTTPS options.
 * One definition here keeps the clients' behaviour (and their exit codes)
 * the same, which scripts and systemd units rely on.
 */
#ifndef KEYSVC_CLIENTS_CLIUTIL_H
#define KEYSVC_CLIENTS_CLIUTIL_H

#include <getopt.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "clients/https/https.h"
#include "clients/keysvc.h"

/* Exit codes of the renewal clients (documented in the README). */
enum ks_exit {
	KS_EXIT_DONE = 0,          /* enrolled, paired, renewed, revoked */
	KS_EXIT_INTERNAL = 1,
	KS_EXIT_USAGE = 2,         /* bad arguments or local files */
	KS_EXIT_CA_REFUSED = 3,    /* the CA said no */
	KS_EXIT_CA_ANSWER = 4,     /* the CA's answer failed a check: nothing installed */
	KS_EXIT_NETWORK = 5,       /* connection, TLS, timeout, oversized answer */
	KS_EXIT_KEYSVC = 6,        /* keysvcd unreachable, denied, no key, token down */
	KS_EXIT_NOT_SIGNED = 7,    /* not signed in time (enrollment) */
	KS_EXIT_PUSH_FAILED = 8,   /* installed, but the reload hook or the served-certificate
				    * check failed: the previous files are kept (.prev) */
	KS_EXIT_NOT_DUE = 10,      /* renew --when-due: nothing to do yet */
	KS_EXIT_BUSY = 13,         /* another run holds the certificate's lock (certlock.h) */
};

/* Set once by main: the program name in messages, and whether say() prints. */
void ks_cli_init(const char *program, int verbose);

/* A progress line on stdout (unless quiet). */
void ks_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * "PROGRAM: message" on stderr (up to 8 KiB of message, so a CA's reason
 * is shown whole); returns @code, so `return ks_die(...)` reads well.
 */
int ks_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The first message ks_die() printed since ks_cli_init() (with the
 * program name left out, at most 511 bytes of it, a longer one cut after a
 * whole word with "…"), "" if none: the
 * one-line reason a renewal client records in the inventory when it fails.
 */
const char *ks_last_error(void);

/*
 * A credential (a one-time or IAM token) from @path, named @option in
 * messages: a regular file, not a symlink, of mode 0600 or stricter, and
 * shorter than @len - 1 bytes. 0 with @buf NUL-terminated and *@n its
 * length; else KS_EXIT_USAGE with the reason printed. The caller checks
 * the contents and wipes @buf.
 */
int ks_read_secret_file(const char *option, const char *path, char *buf, size_t len, size_t *n);

/* A decimal in [@min, @max] with nothing after it. 0 or -1. */
int ks_parse_long(const char *s, long min, long max, long *out);

/*
 * Every "--name" in @argv (before "--") must be the whole name of an entry
 * of @longopts. getopt_long() takes unambiguous prefixes, so without this
 * "--token SECRET" would be read as "--token-file SECRET" and a secret
 * would sit on a command line that seemed to work. 0, or KS_EXIT_USAGE
 * with "unrecognized option" printed.
 */
int ks_check_long_options(int argc, char *const argv[], const struct option *longopts);

/* The CA certificates of @path (--ca-file). 0, or KS_EXIT_USAGE with the reason printed. */
int ks_load_ca_file(const char *path, STACK_OF(X509) **out);

/* The exit code for a negative errno from ks_https_request(). */
int ks_https_exit(int r);

/*
 * "cannot reach keysvcd at PATH: REASON; is it running? (systemctl status
 * keysvcd.socket)" into @buf, for keysvc_connect()'s error @r on @socket
 * (NULL: the path keysvc_connect() chose) with @e the errno it left. Users
 * who got only "cannot connect" did not know which socket was tried.
 */
void ks_connect_error_text(char *buf, size_t len, const char *socket, int r, int e);

/* Connect to keysvcd (@socket NULL: the default). 0 or KS_EXIT_KEYSVC, with the reason printed. */
int ks_open_keysvc(const char *socket, keysvc **ks);

/*
 * Key @name's public key from keysvcd. 0; -1 (nothing printed) if there is
 * no such key and @missing_ok; else an exit code with the reason printed.
 */
int ks_token_public_key(keysvc *ks, const char *name, EVP_PKEY **pub, int missing_ok);

/*
 * HTTPS options for a CA: pinned @ca_file, total timeout @timeout_s (the
 * connect timeout at most 10 s of it), answers capped at KS_CI_PEM_MAX,
 * and a client certificate with key "keysvc:@key" when both are given.
 * @uri_buf (at least 80 bytes) holds the key URI.
 */
void ks_https_ca_opts(struct ks_https_opts *h, const char *ca_file, long timeout_s, int insecure,
		      const char *cert_file, const char *key, char *uri_buf, size_t uri_len);

#endif
