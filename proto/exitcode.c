#include "proto/exitcode.h"

#ifndef KEYSVC_VERSION
#define KEYSVC_VERSION "0"
#endif

const struct ks_exit_meaning ks_exit_table[] = {
	{ KS_EXIT_OK, "done; nothing needs attention" },
	{ KS_EXIT_INTERNAL, "internal or other error" },
	{ KS_EXIT_USAGE, "usage: bad arguments, or a local file unreadable or not valid" },
	{ KS_EXIT_CONFIG, "configuration refused (keysvcd's configuration, a client's --config file)" },
	{ KS_EXIT_PIN_FILE, "PIN file refused or missing (keysvcd)" },
	{ KS_EXIT_TOKEN, "token unavailable (keysvcd at start, or keysvcd answered token-unavailable)" },
	{ KS_EXIT_PIN_REJECTED, "PIN rejected by the token, now or before (keysvcd)" },
	{ KS_EXIT_CONNECT, "cannot reach keysvcd, or the connection broke" },
	{ KS_EXIT_DENIED, "denied by keysvcd's policy" },
	{ KS_EXIT_AUDIT, "keysvcd's audit log cannot be written (audit-unavailable): nothing was done" },
	{ KS_EXIT_NOT_DUE, "not due (renew --when-due), or backing off" },
	{ KS_EXIT_RENEWAL_DUE, "status: renewal due" },
	{ KS_EXIT_EXPIRED, "expired: re-bootstrap required" },
	{ KS_EXIT_BUSY, "another run holds the lock on this certificate" },
	{ KS_EXIT_NO_SUCH_KEY, "no such key" },
	{ KS_EXIT_EXISTS, "a key with that name exists" },
	{ KS_EXIT_UNSUPPORTED, "unsupported by keysvcd or the token" },
	{ KS_EXIT_CA_REFUSED, "the CA refused (the CA, connector, OCI or CCE said no, or the CCE job failed)" },
	{ KS_EXIT_CA_ANSWER, "the CA's answer failed a check: nothing installed" },
	{ KS_EXIT_NETWORK, "network, TLS or timeout" },
	{ KS_EXIT_REGISTER_FAILED, "keysvc-oci rebootstrap: /register failed twice (support bundle written)" },
	{ KS_EXIT_CHECK_READY_FAILED,
	  "keysvc-oci rebootstrap: /check_ready failed twice (support bundle written)" },
	{ KS_EXIT_NOT_IN_TIME, "not done in time: enroll not signed within --maxwaitforcert, the CCE job not "
	  "ended within --max-wait, rebootstrap not Connected within --connect-limit" },
	{ KS_EXIT_PUSH_FAILED, "installed, but the reload hook or the served-certificate check failed "
	  "(previous files kept as .prev)" },
	{ KS_EXIT_ATTENTION, "status/verify: something needs attention (removed, revoked, push-failed, "
	  "expired, endpoints out of sync)" },
};

const size_t ks_exit_table_len = sizeof(ks_exit_table) / sizeof(ks_exit_table[0]);

const char *ks_exit_meaning(int code)
{
	for (size_t i = 0; i < ks_exit_table_len; i++)
		if ((int)ks_exit_table[i].code == code)
			return ks_exit_table[i].meaning;
	return NULL;
}

void ks_exit_print_table(FILE *f)
{
	fputs("\nExit codes (all keysvc programs):\n", f);
	for (size_t i = 0; i < ks_exit_table_len; i++)
		fprintf(f, "  %2d  %s\n", (int)ks_exit_table[i].code, ks_exit_table[i].meaning);
}

void ks_print_version(const char *program)
{
	printf("%s keysvc %s\n", program, KEYSVC_VERSION);
}
