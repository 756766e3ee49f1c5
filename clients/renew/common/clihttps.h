/*
 * The renewal clients' HTTPS options for a CA and the exit code of a
 * failed request (https.h). Needs no connection to keysvcd: keysvc-cce
 * uses it too.
 */
#ifndef KEYSVC_CLIENTS_RENEW_CLIHTTPS_H
#define KEYSVC_CLIENTS_RENEW_CLIHTTPS_H

#include <stddef.h>

#include "clients/renew/https/https.h"

/*
 * The exit code for a negative errno @r from ks_https_request() and its
 * @resp: -ENOKEY by keysvcd's answer (resp->keysvc_reason) as
 * ks_exit_for_keysvc() (clikeysvc.h) would map it, else KS_EXIT_INTERNAL
 * (keysvc.so missing); -EINVAL KS_EXIT_USAGE; anything else KS_EXIT_NETWORK.
 */
int ks_https_exit(int r, const struct ks_https_response *resp);

/*
 * HTTPS options for a CA: pinned @ca_file, total timeout @timeout_s (the
 * connect timeout at most 10 s of it), answers capped at KS_CI_PEM_MAX,
 * and a client certificate with key "keysvc:@key" when both are given.
 * @uri_buf (at least 80 bytes) holds the key URI.
 */
void ks_https_ca_opts(struct ks_https_opts *h, const char *ca_file, long timeout_s, int insecure,
		      const char *cert_file, const char *key, char *uri_buf, size_t uri_len);

#endif
