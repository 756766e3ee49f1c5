/*
 * keysvc track: add a certificate made by hand to the inventory, after
 * keysvcd confirmed it holds the certificate's key.
 */
#include "clients/status/statuscmd.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "clients/renew/common/certconf.h"
#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/common/clikeysvc.h"
#include "clients/renew/common/inventory.h"
#include "clients/renew/common/served.h"
#include "keysvc/keysvc.h"
#include "clients/status/status.h"
#include "clients/status/statuscmd_internal.h"
#include "proto/wire.h"

const char ks_track_usage[] =
	"Usage: keysvc track NAME --cert FILE [--key KEY] [--client NAME] [--ca-file FILE]\n"
	"                    [--crl FILE] [--inventory DIR] [--config FILE] [--json]\n"
	"Adds a certificate made by hand (keysvc csr, a CA, keysvc cert-put) to the inventory,\n"
	"so that keysvc status shows it, like getcert start-tracking. keysvcd must have the\n"
	"key (KEY, default NAME) and FILE must be a certificate for it. NAME names the entry\n"
	"(for keysvc status --forget NAME); a NAME or FILE already in the inventory is refused.\n"
	"  --client NAME   the client that renews it (default other)\n"
	"  --ca-file FILE  the issuing CA's certificates, with --crl for revocation checks\n"
	"Exits with 0 when tracked, 1 when the record could not be written, 2 for usage, FILE\n"
	"not a certificate or not for the key, or NAME or FILE already tracked; keysvcd's\n"
	"refusals as in the table below.\n";

/* keysvcd's key-name rule (proto/wire.h), so that NAME prints and matches safely. */
static int entry_name_ok(const char *s)
{
	return ks_key_name_valid(s);
}

/* 0 if the certificate @cert is for keysvcd's key @key, else an exit code with the reason printed. */
static int track_check_key(const struct ks_cmd_global *g, const char *key, X509 *cert, const char *cert_path)
{
	char *pem = NULL, why[KS_CI_ERR_MAX];
	EVP_PKEY *pub = NULL;
	keysvc *ks = NULL;
	int r;

	if ((r = keysvc_connect(g->socket, &ks)) != KEYSVC_OK) {
		ks_connect_error_text(why, sizeof(why), g->socket, r, errno);
		return statuscmd_fail("track", ks_exit_for_keysvc(r), "connect", "%s", why);
	}
	if (g->timeout_ms >= 0)
		keysvc_set_timeout(ks, g->timeout_ms);
	if ((r = keysvc_key_public(ks, key, &pem, NULL)) != KEYSVC_OK) {
		r = statuscmd_fail("track", ks_exit_for_keysvc(r), r == KEYSVC_E_NO_SUCH_KEY ? "no-such-key" : "keysvc",
			     "key %s: %s: %s", key, keysvc_strerror(r), keysvc_error_message(ks));
		goto out;
	}
	if (ks_ci_parse_pubkey(pem, &pub, why) < 0) {
		r = statuscmd_fail("track", KS_EXIT_INTERNAL, "keysvc", "key %s: %s", key, why);
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(cert), pub) != 1) {
		r = statuscmd_fail("track", KS_EXIT_USAGE, "mismatch", "%s is not a certificate for key %s",
			     cert_path, key);
		goto out;
	}
	r = 0;
out:
	ERR_clear_error();
	EVP_PKEY_free(pub);
	free(pem);
	keysvc_close(ks);
	return r;
}

int ks_track_main(int argc, char **argv, const struct ks_cmd_global *g)
{
	enum { O_CERT = 256, O_KEY, O_CLIENT, O_CA_FILE, O_CRL, O_INVENTORY, O_CONFIG, O_JSON };
	static const struct option longopts[] = {
		{ "cert", required_argument, NULL, O_CERT },
		{ "key", required_argument, NULL, O_KEY },
		{ "client", required_argument, NULL, O_CLIENT },
		{ "ca-file", required_argument, NULL, O_CA_FILE },
		{ "crl", required_argument, NULL, O_CRL },
		{ "inventory", required_argument, NULL, O_INVENTORY },
		{ "config", required_argument, NULL, O_CONFIG },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *name, *cert = NULL, *key = NULL, *client = "other", *ca_file = NULL, *crl = NULL;
	const char *inventory = NULL, *config = NULL, *dir;
	const struct ks_inv_entry *dup = NULL;
	struct ks_inv_entry *recs = NULL, e;
	struct ks_conf conf;
	char err[KS_CONF_ERR_MAX];
	X509 *x = NULL;
	size_t n = 0;
	int c, r;

	memset(&e, 0, sizeof(e));
	ks_conf_init(&conf);
	statuscmd_json_errors = g->json;
	if (ks_check_long_options(argc, argv, longopts) != 0)
		return KS_EXIT_USAGE;
	/* 0, not 1: GNU getopt then also resets its permutation state, which the
	 * CLI's own parse (with '+') left behind. No '+' here: NAME may come
	 * before the options, as in `keysvc track web --cert web.pem`. */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case O_CERT: cert = optarg; break;
		case O_KEY: key = optarg; break;
		case O_CLIENT: client = optarg; break;
		case O_CA_FILE: ca_file = optarg; break;
		case O_CRL: crl = optarg; break;
		case O_INVENTORY: inventory = optarg; break;
		case O_CONFIG: config = optarg; break;
		case O_JSON: statuscmd_json_errors = 1; break;
		case 'h': fputs(ks_track_usage, stdout); ks_exit_print_table(stdout); return KS_EXIT_OK;
		case ':': return statuscmd_usage_err("track", "option %s needs a value", argv[optind - 1]);
		default: return statuscmd_usage_err("track", "unknown option %s (see keysvc track --help)", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return statuscmd_usage_err("track", optind >= argc ? "a NAME is needed (see keysvc track --help)" :
				 "one NAME only (see keysvc track --help)");
	name = argv[optind];
	if (key == NULL)
		key = name;
	if (!entry_name_ok(name) || !entry_name_ok(key))
		return statuscmd_usage_err("track", "NAME and --key: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -");
	if (!entry_name_ok(client))
		return statuscmd_usage_err("track", "--client: 1 to 64 of A-Z a-z 0-9 . _ -");
	if (cert == NULL || cert[0] == '\0')
		return statuscmd_usage_err("track", "--cert FILE is required");
	if ((crl != NULL) && ca_file == NULL)
		return statuscmd_usage_err("track", "--crl needs --ca-file: the CRL's signature is checked against it");
	if (inventory != NULL && inventory[0] == '\0')
		return statuscmd_usage_err("track", "--inventory: a directory is needed");
	if (ks_conf_load(config != NULL ? config : KS_CONF_DEFAULT, config != NULL, &conf, err) < 0)
		return statuscmd_fail("track", KS_EXIT_CONFIG, "configuration", "%s", err);
	dir = ks_inv_dir(inventory, conf.inventory);
	if ((e.cert = ks_inv_abs_path(cert)) == NULL || (e.name = strdup(name)) == NULL ||
	    (e.key = strdup(key)) == NULL || (e.client = strdup(client)) == NULL ||
	    (ca_file != NULL && (e.ca_file = ks_inv_abs_path(ca_file)) == NULL) ||
	    (crl != NULL && (e.crl = ks_inv_abs_path(crl)) == NULL)) {
		r = statuscmd_fail("track", KS_EXIT_INTERNAL, "nomem", "out of memory");
		goto out;
	}
	if ((r = statuscmd_read_leaf(e.cert, &x, err)) < 0) {
		r = statuscmd_fail("track", KS_EXIT_USAGE, "usage", "--cert %s: %s", cert,
			     r == -ENOENT ? "no such file" : err);
		goto out;
	}
	if ((r = ks_inv_list(dir, &recs, &n, NULL, NULL, err)) < 0) {
		r = statuscmd_fail("track", KS_EXIT_INTERNAL, "inventory", "%s", err);
		goto out;
	}
	for (size_t i = 0; i < n && dup == NULL; i++)
		if (strcmp(recs[i].cert, e.cert) == 0 || (recs[i].name != NULL && strcmp(recs[i].name, name) == 0))
			dup = &recs[i];
	if (dup != NULL) {
		r = statuscmd_fail("track", KS_EXIT_USAGE, "exists", "%s is already in the inventory%s%s (as %s); "
			     "keysvc status --forget it first to track it anew", dup->cert,
			     dup->name != NULL ? " as " : "", dup->name != NULL ? dup->name : "",
			     dup->key != NULL ? dup->key : "a record without a key");
		goto out;
	}
	if ((r = track_check_key(g, key, x, cert)) != 0)
		goto out;
	if ((r = ks_inv_save(dir, &e, err)) < 0) {
		r = statuscmd_fail("track", KS_EXIT_INTERNAL, "inventory", "%s", err);
		goto out;
	}
	if (statuscmd_json_errors) {
		json_t *o = json_pack("{s:s, s:s, s:s}", "tracked", name, "cert", e.cert, "key", key);

		if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0)
			fputs("{\"error\":\"nomem\",\"message\":\"cannot format the result\"}", stdout);
		fputc('\n', stdout);
		json_decref(o);
	} else {
		printf("tracking %s as %s (key %s) in %s\n", e.cert, name, key, dir);
	}
	r = KS_EXIT_OK;
out:
	X509_free(x);
	ks_inv_list_free(recs, n);
	ks_inv_entry_free(&e);
	ks_conf_free(&conf);
	return r;
}
