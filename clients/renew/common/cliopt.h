/*
 * What the clients' option parsing shares: exact long option names,
 * numbers, credential files and --ca-file. Each prints its reason with
 * ks_die() (climsg.h).
 */
#ifndef KEYSVC_CLIENTS_RENEW_CLIOPT_H
#define KEYSVC_CLIENTS_RENEW_CLIOPT_H

#include <getopt.h>
#include <stddef.h>

#include <openssl/x509.h>

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

#endif
