/*
 * The clients' connection to keysvcd through libkeysvc: the exit code for
 * a libkeysvc error, the "cannot reach keysvcd" text, connecting, and a
 * key's public key. The only part of the shared client code that links
 * libkeysvc (ks_cli_keysvc_dep), so keysvc-cce goes without it.
 */
#ifndef KEYSVC_CLIENTS_RENEW_CLIKEYSVC_H
#define KEYSVC_CLIENTS_RENEW_CLIKEYSVC_H

#include <stddef.h>

#include <openssl/evp.h>

#include "keysvc/keysvc.h"

/*
 * The exit code for a libkeysvc error (KEYSVC_OK and KEYSVC_E_*), for the
 * keysvc CLI and the renewal clients alike: cannot connect or a broken
 * connection KS_EXIT_CONNECT, denied KS_EXIT_DENIED, audit-unavailable
 * KS_EXIT_AUDIT, token-unavailable KS_EXIT_TOKEN, no-such-key
 * KS_EXIT_NO_SUCH_KEY, exists KS_EXIT_EXISTS, unsupported
 * KS_EXIT_UNSUPPORTED, a request the daemon or library refused as malformed
 * (bad-request, KEYSVC_E_INVALID) KS_EXIT_USAGE, anything else
 * KS_EXIT_INTERNAL.
 */
int ks_exit_for_keysvc(int err);

/*
 * "cannot reach keysvcd at PATH: REASON; is it running? (systemctl status
 * keysvcd.socket)" into @buf, for keysvc_connect()'s error @r on @socket
 * (NULL: the path keysvc_connect() chose) with @e the errno it left. Users
 * who got only "cannot connect" did not know which socket was tried.
 */
void ks_connect_error_text(char *buf, size_t len, const char *socket, int r, int e);

/* Connect to keysvcd (@socket NULL: the default). 0 or KS_EXIT_CONNECT, with the reason printed. */
int ks_open_keysvc(const char *socket, keysvc **ks);

/*
 * Key @name's public key from keysvcd (named apart from pkcs11/token.h's
 * ks_token_public_key(), which reads the token itself). 0; -1 (nothing
 * printed) if there is no such key and @missing_ok; else an exit code with
 * the reason printed.
 */
int ks_cli_public_key(keysvc *ks, const char *name, EVP_PKEY **pub, int missing_ok);

#endif
