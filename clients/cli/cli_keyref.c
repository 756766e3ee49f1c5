/*
 * `keysvc key-ref` (a key reference file for OpenSSL 3 programs,
 * clients/provider/keyref.h) and `keysvc provider-check` (does OpenSSL,
 * configured as every program here is, load the keysvc provider, reach
 * keysvcd and use a key reference?).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "clients/cli/cli_cmd.h"
#include "clients/provider/keyref.h"
#include "clients/provider/provider.h"
#include "clients/renew/common/clikeysvc.h"
#include "keysvc/keysvc.h"
#include "proto/exitcode.h"

#define KEYREF_FILE_MAX (64 * 1024)

int cli_key_ref(const struct cli_global *g, const char *name, const char *out)
{
	char *pub = NULL, *type = NULL, *pem = NULL, sock[PATH_MAX] = "";
	struct cli_outfile o;
	keysvc *ks;
	int r;

	/* The name passed proto/wire's rule in keysvc-cli.c before any command runs. */
	/*
	 * The socket goes into the file only when given here: otherwise the
	 * program's provider uses its own (openssl.cnf, $KEYSVC_SOCKET). An
	 * absolute path, for programs started in another directory.
	 */
	if (g->socket != NULL && realpath(g->socket, sock) == NULL)
		return cli_report_named(g, KS_EXIT_CONNECT, "connect", "%s: %s", g->socket, strerror(errno));
	if ((r = cli_out_open(g, &o, out)) != KS_EXIT_OK)
		return r;
	if ((r = cli_dial(g, &ks)) != KS_EXIT_OK) {
		cli_out_abort(&o);
		return r;
	}
	/* A reference to a key that is not there, or not ours to read, would fail later in some program. */
	if ((r = keysvc_key_public(ks, name, &pub, &type)) != KEYSVC_OK) {
		cli_out_abort(&o);
		return cli_fail_on(g, ks, r);
	}
	keysvc_close(ks);
	if ((r = ksp_keyref_pem(name, sock, &pem)) < 0) {
		cli_out_abort(&o);
		r = r == -EINVAL ? cli_report_named(g, KS_EXIT_USAGE, "socket", "%s: longer than %d bytes",
						    sock, KSP_KEYREF_SOCKET_MAX) :
				   cli_report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
		goto out;
	}
	r = cli_emit_text(g, &o, pem);
	if (r == KS_EXIT_OK && g->json)
		cli_print_json(json_pack("{s:s, s:s?, s:s?, s:s}", "key", name, "type", type,
					 "socket", sock[0] ? sock : NULL, "key_ref", pem));
out:
	free(pem);
	free(pub);
	free(type);
	return r;
}

/* ---- provider-check ---- */

const char cli_provider_check_usage[] =
	"Usage: keysvc provider-check [--key FILE]\n"
	"Checks what an OpenSSL 3 program started with this environment gets: the\n"
	"configuration file ($OPENSSL_CONF, else OpenSSL's default) loads without\n"
	"error and activates the keysvc and default providers; the keysvc provider\n"
	"reaches keysvcd (on the socket of its openssl.cnf section, else\n"
	"$" KEYSVC_SOCKET_ENV ", else " KEYSVC_DEFAULT_SOCKET "); with --key, the key\n"
	"reference FILE (keysvc key-ref) loads as a private key and signs.\n"
	"Says what to change when a check fails. The global --socket is not used:\n"
	"the point is the socket OpenSSL uses.\n"
	"Exit: 0 all good, 3 configuration, 7 keysvcd unreachable, 8 denied,\n"
	"14 no such key, 5 token unavailable, 2 a bad key reference file.\n";

struct check {
	struct cli_global g;
	json_t *report;            /* --json: what was found */
};

/*
 * The OpenSSL error queue, emptied, as one line into @buf; *@reason_out is
 * the reason of the keysvc provider's first error in it, 0 if none.
 */
static void openssl_errors(char *buf, size_t len, int *reason_out)
{
	const char *data, *func;
	unsigned long e;
	size_t used = 0;
	int flags;

	buf[0] = '\0';
	*reason_out = 0;
	while ((e = ERR_get_error_all(NULL, NULL, &func, &data, &flags)) != 0) {
		char one[256];

		ERR_error_string_n(e, one, sizeof(one));
		/* The keysvc provider names itself as the function; its reason is the first cause. */
		if (*reason_out == 0 && func != NULL && strcmp(func, "keysvc") == 0)
			*reason_out = ERR_GET_REASON(e);
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used, "%s%s%s%s", used ? "; " : "", one,
						 (flags & ERR_TXT_STRING) && data[0] ? ": " : "",
						 (flags & ERR_TXT_STRING) ? data : "");
	}
	if (buf[0] == '\0')
		snprintf(buf, len, "no error reported");
}

static int exit_for_reason(int reason)
{
	switch (reason) {
	case KSP_R_DENIED: return KS_EXIT_DENIED;
	case KSP_R_NO_SUCH_KEY: return KS_EXIT_NO_SUCH_KEY;
	case KSP_R_TOKEN_UNAVAILABLE: return KS_EXIT_TOKEN;
	case KSP_R_CANNOT_CONNECT: return KS_EXIT_CONNECT;
	case KSP_R_BAD_CONFIG: return KS_EXIT_CONFIG;
	case KSP_R_BAD_URI: return KS_EXIT_USAGE;
	case KSP_R_UNSUPPORTED: return KS_EXIT_UNSUPPORTED;
	default: return KS_EXIT_INTERNAL;
	}
}

/* The keysvc provider's section of an OpenSSL configuration, as written (not as loaded). */
struct cnf_keysvc {
	int found;                  /* openssl_conf -> providers -> keysvc leads to a section */
	char section[128];
	char module[PATH_MAX];      /* "": not set (OpenSSL looks in its modules directory) */
	char activate[16];
	char socket[PATH_MAX];      /* the socket the provider will use, with the fallbacks applied */
};

static void cnf_copy(char *out, size_t len, const CONF *conf, const char *sect, const char *name)
{
	const char *v = NCONF_get_string(conf, sect, name);

	snprintf(out, len, "%s", v != NULL ? v : "");
}

/* Read @file's keysvc section: its "socket =", else $KEYSVC_SOCKET, else the default. */
static void read_cnf(const char *file, struct cnf_keysvc *k)
{
	const char *init, *provs, *sect, *env = getenv(KEYSVC_SOCKET_ENV);
	CONF *conf = NCONF_new(NULL);

	memset(k, 0, sizeof(*k));
	if (conf != NULL && NCONF_load(conf, file, NULL) > 0 &&
	    (init = NCONF_get_string(conf, NULL, "openssl_conf")) != NULL &&
	    (provs = NCONF_get_string(conf, init, "providers")) != NULL &&
	    (sect = NCONF_get_string(conf, provs, "keysvc")) != NULL) {
		k->found = 1;
		snprintf(k->section, sizeof(k->section), "%s", sect);
		cnf_copy(k->module, sizeof(k->module), conf, sect, "module");
		cnf_copy(k->activate, sizeof(k->activate), conf, sect, "activate");
		cnf_copy(k->socket, sizeof(k->socket), conf, sect, "socket");
	}
	ERR_clear_error();
	if (k->socket[0] == '\0')
		snprintf(k->socket, sizeof(k->socket), "%s",
			 env != NULL && env[0] != '\0' ? env : KEYSVC_DEFAULT_SOCKET);
	NCONF_free(conf);
}

/* One line of the human report; --json prints one object at the end instead. */
static void say(struct check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct check *c, const char *fmt, ...)
{
	va_list ap;

	if (c->g.json)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

static int check_key(struct check *c, OSSL_LIB_CTX *lc, const char *path)
{
	/*
	 * What a TLS 1.3 client signs (RFC 8446, 4.4.3): 64 spaces, the context
	 * string, 0, a transcript hash (random here). A key made for TLS (the
	 * purpose tls, without sign) signs only such inputs, so this is the
	 * signature curl, Python or nginx would ask of it.
	 */
	static const char context[] = "TLS 1.3, client CertificateVerify";
	unsigned char msg[64 + sizeof(context) + 32];
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *sig = NULL;
	uint8_t *data = NULL;
	size_t data_len = 0, sig_len = 0;
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *md = NULL;
	char errs[1024];
	BIO *bio = NULL;
	int r, reason;

	if ((r = cli_read_input(&c->g, path, KEYREF_FILE_MAX, &data, &data_len)) != KS_EXIT_OK)
		return r;
	if (strstr((char *)data, "-----BEGIN " KSP_KEYREF_PEM_LABEL "-----") == NULL) {
		r = cli_report_named(&c->g, KS_EXIT_USAGE, "key-ref", "%s: not a key reference file "
				     "(no " KSP_KEYREF_PEM_LABEL " block): make one with `keysvc key-ref NAME --out %s`",
				     path, path);
		goto out;
	}
	/* As curl, Python and nginx read a key file: PEM through the decoders of the configured providers. */
	if ((bio = BIO_new_mem_buf(data, (int)data_len)) == NULL ||
	    (pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, NULL, NULL, lc, NULL)) == NULL) {
		openssl_errors(errs, sizeof(errs), &reason);
		r = cli_report_named(&c->g, reason ? exit_for_reason(reason) : KS_EXIT_CONFIG, "key-ref",
				     "%s: OpenSSL cannot load it as a private key: %s", path, errs);
		goto out;
	}
	say(c, "key:       %s loads as a %d-bit %s key\n", path, EVP_PKEY_get_bits(pkey),
	    EVP_PKEY_get0_type_name(pkey));
	/* The private half works only if keysvcd signs: sign, then check the signature. */
	memset(msg, 0x20, 64);
	memcpy(msg + 64, context, sizeof(context));   /* with its terminating 0 */
	if (RAND_bytes(msg + 64 + sizeof(context), 32) != 1) {
		r = cli_report_named(&c->g, KS_EXIT_INTERNAL, "sign", "no random bytes for the test signature");
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit_ex(md, &pctx, "SHA256", lc, NULL, pkey, NULL) != 1 ||
	    (EVP_PKEY_is_a(pkey, "RSA") && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
					    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) ||
	    EVP_DigestSign(md, NULL, &sig_len, msg, sizeof(msg)) != 1 ||
	    (sig = OPENSSL_malloc(sig_len)) == NULL ||
	    EVP_DigestSign(md, sig, &sig_len, msg, sizeof(msg)) != 1) {
		openssl_errors(errs, sizeof(errs), &reason);
		r = cli_report_named(&c->g, reason ? exit_for_reason(reason) : KS_EXIT_INTERNAL, "sign",
				     "%s: the key loads but does not sign: %s%s", path, errs,
				     reason == KSP_R_DENIED ? " (keysvcd's policy must grant this uid \"sign\" on the key, "
				     "and the key's purposes must include tls: keysvc list)" : "");
		goto out;
	}
	EVP_MD_CTX_free(md);
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit_ex(md, &pctx, "SHA256", lc, NULL, pkey, NULL) != 1 ||
	    (EVP_PKEY_is_a(pkey, "RSA") && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
					    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) ||
	    EVP_DigestVerify(md, sig, sig_len, msg, sizeof(msg)) != 1) {
		openssl_errors(errs, sizeof(errs), &reason);
		r = cli_report_named(&c->g, KS_EXIT_INTERNAL, "sign",
				     "%s: the signature does not verify with the key's public half: %s", path, errs);
		goto out;
	}
	say(c, "signature: made by keysvcd, verified\n");
	json_object_set_new(c->report, "key_ref", json_pack("{s:s, s:s, s:i, s:b}", "file", path,
				"type", EVP_PKEY_get0_type_name(pkey), "bits", EVP_PKEY_get_bits(pkey), "signs", 1));
	r = KS_EXIT_OK;
out:
	EVP_MD_CTX_free(md);
	OPENSSL_free(sig);
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	free(data);
	return r;
}

int cli_provider_check_main(int argc, char **argv, const struct ks_cmd_global *cg)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct check c = { .g = { .socket = cg->socket, .json = cg->json, .timeout_ms = cg->timeout_ms,
				  .command = "provider-check" } };
	const char *key = NULL, *env = getenv("OPENSSL_CONF");
	char *deflt = NULL, file[PATH_MAX], sock[PATH_MAX], errs[1024], msg[PATH_MAX + 256];
	struct keysvc_hello *h = NULL;
	struct cnf_keysvc k;
	OSSL_LIB_CTX *lc = NULL;
	keysvc *ks = NULL;
	int ch, r, reason;

	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k': key = optarg; break;
		case 'j': c.g.json = 1; break;
		case 'h':
			fputs(cli_provider_check_usage, stdout);
			ks_exit_print_table(stdout);
			return KS_EXIT_OK;
		case ':': return cli_usage_error(&c.g, "option %s needs a value", argv[optind - 1]);
		default: return cli_usage_error(&c.g, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage_error(&c.g, "unexpected argument %s", argv[optind]);
	if ((c.report = json_object()) == NULL)
		return cli_report_named(&c.g, KS_EXIT_INTERNAL, "nomem", "out of memory");

	/* 1. The configuration every OpenSSL program in this environment loads. */
	if (env != NULL && env[0] != '\0')
		snprintf(file, sizeof(file), "%s", env);
	else if ((deflt = CONF_get1_default_config_file()) != NULL)
		snprintf(file, sizeof(file), "%s", deflt);
	else
		snprintf(file, sizeof(file), "%s/openssl.cnf", OPENSSL_info(OPENSSL_INFO_CONFIG_DIR));
	OPENSSL_free(deflt);
	json_object_set_new(c.report, "config", json_string(file));
	say(&c, "config:    %s%s\n", file, env != NULL && env[0] != '\0' ? " (from OPENSSL_CONF)" : "");
	if ((lc = OSSL_LIB_CTX_new()) == NULL) {
		r = cli_report_named(&c.g, KS_EXIT_INTERNAL, "nomem", "out of memory");
		goto out;
	}
	if (OSSL_LIB_CTX_load_config(lc, file) != 1) {
		openssl_errors(errs, sizeof(errs), &reason);
		r = cli_report_named(&c.g, KS_EXIT_CONFIG, "config", "%s: OpenSSL cannot load it: %s", file, errs);
		goto out;
	}
	/* 2. The providers it activates. */
	read_cnf(file, &k);
	if (!OSSL_PROVIDER_available(lc, "keysvc") && k.found) {
		char why[PATH_MAX + 160];

		/* OpenSSL skips a configured provider that fails to load without a word. */
		if (k.activate[0] == '\0')
			snprintf(why, sizeof(why), "add \"activate = 1\" to that section");
		else if (k.module[0] != '\0' && access(k.module, R_OK) != 0)
			snprintf(why, sizeof(why), "its module = path cannot be read (%s: %s); keysvc.so is "
				 "installed in OpenSSL's ossl-modules directory (openssl version -m)",
				 k.module, strerror(errno));
		else
			snprintf(why, sizeof(why), "the module did not load (`openssl list -providers` with "
				 "this OPENSSL_CONF gives OpenSSL's reason)");
		r = cli_report_named(&c.g, KS_EXIT_CONFIG, "provider",
				     "%s names the keysvc provider ([%s]) but OpenSSL did not activate it: %s",
				     file, k.section, why);
		goto out;
	}
	if (!OSSL_PROVIDER_available(lc, "keysvc")) {
		openssl_errors(errs, sizeof(errs), &reason);
		r = cli_report_named(&c.g, KS_EXIT_CONFIG, "provider",
				     "%s does not activate the keysvc provider. For one service, set "
				     "OPENSSL_CONF=%s (it includes the system file and activates default and "
				     "keysvc); for every program on Debian 12, add the line "
				     "\".include %s\" at the end of /etc/ssl/openssl.cnf (docs/clients.md)",
				     file, KSP_SERVICE_CNF, KSP_INCLUDE_CNF);
		goto out;
	}
	say(&c, "provider:  keysvc active\n");
	if (!OSSL_PROVIDER_available(lc, "default")) {
		r = cli_report_named(&c.g, KS_EXIT_CONFIG, "provider",
				     "%s activates keysvc but not default: programs would lose the digests, "
				     "ciphers and public-key algorithms keysvc does not have; add "
				     "\"default = default_sect\" to its providers section and "
				     "\"[default_sect] activate = 1\"", file);
		goto out;
	}
	say(&c, "provider:  default active\n");
	json_object_set_new(c.report, "providers", json_pack("[s, s]", "default", "keysvc"));

	/* 3. keysvcd, on the socket the provider will use. */
	snprintf(sock, sizeof(sock), "%s", k.socket);
	json_object_set_new(c.report, "socket", json_string(sock));
	if ((r = keysvc_connect(sock, &ks)) != KEYSVC_OK) {
		ks_connect_error_text(msg, sizeof(msg), sock, r, errno);
		r = cli_report_named(&c.g, KS_EXIT_CONNECT, "connect",
				     "the keysvc provider cannot reach keysvcd: %s (as uid %u; keysvcd on another "
				     "socket: \"socket = PATH\" in the provider's section, or $" KEYSVC_SOCKET_ENV ")",
				     msg, (unsigned)getuid());
		ks = NULL;
		goto out;
	}
	if (c.g.timeout_ms >= 0)
		keysvc_set_timeout(ks, c.g.timeout_ms);
	if ((r = keysvc_hello(ks, &h)) != KEYSVC_OK) {
		r = cli_report(&c.g, ks, r);
		goto out;
	}
	say(&c, "keysvcd:   %s at %s, token %s\n", h->server, sock, h->token_label);
	json_object_set_new(c.report, "server", json_string(h->server));

	/* 4. A key reference, read as programs read key files. */
	if (key != NULL && (r = check_key(&c, lc, key)) != KS_EXIT_OK)
		goto out;
	say(&c, "ok: OpenSSL programs in this environment can use keysvc keys%s\n",
	    key != NULL ? " (and this key reference)" : "");
	if (c.g.json) {
		json_object_set_new(c.report, "ok", json_true());
		cli_print_json(json_incref(c.report));
	}
	r = KS_EXIT_OK;
out:
	keysvc_hello_free(h);
	keysvc_close(ks);
	OSSL_LIB_CTX_free(lc);
	json_decref(c.report);
	return r;
}
