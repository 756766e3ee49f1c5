#include "clients/renew/common/clihttps.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "clients/provider/provider.h"
#include "clients/renew/common/certinstall.h"
#include "proto/exitcode.h"

int ks_https_exit(int r, const struct ks_https_response *resp)
{
	if (r == -ENOKEY) {
		/* keysvcd's answer when it would not let the key be used; keysvc.so missing is 1. */
		switch (resp != NULL ? resp->keysvc_reason : 0) {
		case KSP_R_DENIED: return KS_EXIT_DENIED;
		case KSP_R_NO_SUCH_KEY: return KS_EXIT_NO_SUCH_KEY;
		case KSP_R_TOKEN_UNAVAILABLE: return KS_EXIT_TOKEN;
		case KSP_R_CANNOT_CONNECT: return KS_EXIT_CONNECT;
		case KSP_R_UNSUPPORTED: return KS_EXIT_UNSUPPORTED;
		default: return KS_EXIT_INTERNAL;
		}
	}
	return r == -EINVAL ? KS_EXIT_USAGE : KS_EXIT_NETWORK;
}

void ks_https_ca_opts(struct ks_https_opts *h, const char *ca_file, long timeout_s, int insecure,
		      const char *cert_file, const char *key, char *uri_buf, size_t uri_len)
{
	memset(h, 0, sizeof(*h));
	h->ca_file = ca_file;
	h->insecure = insecure;
	h->total_timeout_ms = timeout_s * 1000;
	h->connect_timeout_ms = timeout_s * 1000 < 10000 ? timeout_s * 1000 : 10000;
	h->max_response_bytes = KS_CI_PEM_MAX;
	if (cert_file != NULL && key != NULL) {
		snprintf(uri_buf, uri_len, "keysvc:%s", key);
		h->cert_file = cert_file;
		h->key_uri = uri_buf;
	}
}
