#include "clients/renew/common/clikeysvc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/climsg.h"

int ks_exit_for_keysvc(int err)
{
	switch (err) {
	case KEYSVC_OK: return KS_EXIT_OK;
	case KEYSVC_E_BAD_REQUEST:
	case KEYSVC_E_INVALID: return KS_EXIT_USAGE;
	case KEYSVC_E_DENIED: return KS_EXIT_DENIED;
	case KEYSVC_E_NO_SUCH_KEY: return KS_EXIT_NO_SUCH_KEY;
	case KEYSVC_E_TOKEN_UNAVAILABLE: return KS_EXIT_TOKEN;
	case KEYSVC_E_EXISTS: return KS_EXIT_EXISTS;
	case KEYSVC_E_UNSUPPORTED: return KS_EXIT_UNSUPPORTED;
	case KEYSVC_E_CONNECT:
	case KEYSVC_E_IO: return KS_EXIT_CONNECT;
	case KEYSVC_E_AUDIT_UNAVAILABLE: return KS_EXIT_AUDIT;
	default: return KS_EXIT_INTERNAL;
	}
}

void ks_connect_error_text(char *buf, size_t len, const char *socket, int r, int e)
{
	if (socket == NULL && ((socket = getenv(KEYSVC_SOCKET_ENV)) == NULL || socket[0] == '\0'))
		socket = KEYSVC_DEFAULT_SOCKET;
	snprintf(buf, len, "cannot reach keysvcd at %s: %s; is it running? (systemctl status keysvcd.socket)",
		 socket, r == KEYSVC_E_CONNECT ? strerror(e) : keysvc_strerror(r));
}

int ks_open_keysvc(const char *socket, keysvc **ks)
{
	char msg[PATH_MAX + 256];
	int r = keysvc_connect(socket, ks);

	if (r != KEYSVC_OK) {
		ks_connect_error_text(msg, sizeof(msg), socket, r, errno);
		return ks_die(ks_exit_for_keysvc(r), "%s", msg);
	}
	return 0;
}

int ks_cli_public_key(keysvc *ks, const char *name, EVP_PKEY **pub, int missing_ok)
{
	char *pem = NULL, err[KS_CI_ERR_MAX];
	int r = keysvc_key_public(ks, name, &pem, NULL);

	*pub = NULL;
	if (r == KEYSVC_E_NO_SUCH_KEY && missing_ok)
		return -1;
	if (r != KEYSVC_OK)
		return ks_die(ks_exit_for_keysvc(r), "key %s: %s: %s", name, keysvc_strerror(r),
			      keysvc_error_message(ks));
	r = ks_ci_parse_pubkey(pem, pub, err);
	free(pem);
	if (r < 0)
		return ks_die(KS_EXIT_INTERNAL, "key %s: %s", name, err);
	return 0;
}
