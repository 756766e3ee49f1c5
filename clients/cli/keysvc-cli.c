/*
 * keysvc: command line client of keysvcd, built on libkeysvc. This file
 * parses the options and runs the commands that talk to keysvcd;
 * cli_output.c holds the output, reports, files and connection,
 * cli_audit.c audit-verify (cli_cmd.h).
 *
 * Exit codes are part of the interface: proto/exitcode.h, shared by every
 * keysvc program. With --json every
 * outcome, success or error, is one JSON object on one line of stdout;
 * errors are also reported on stderr as "keysvc: COMMAND: ERROR: MESSAGE".
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "clients/cli/cli_cmd.h"
#include "keysvc/keysvc.h"
#include "clients/status/statuscmd.h"
#include "proto/auditchain.h"
#include "proto/exitcode.h"
#include "proto/sigform.h"
#include "proto/frame.h"
#include "proto/log.h"
#include "proto/wire.h"

#define INPUT_MAX (1024 * 1024)  /* any input file */
#define CERT_MAX KS_FRAME_MAX    /* a PEM certificate: a request must fit in a frame */
#define MAX_LIST 100             /* repeated options */
#define MAX_SPLIT 32             /* comma lists */
#define MAX_ATTRS 16

static const char main_usage[] =
	"Usage: keysvc [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS]\n"
	"\n"
	"Talks to keysvcd, which keeps private keys inside a PKCS#11 token.\n"
	"\n"
	"Commands:\n"
	"  hello                      daemon, protocol and token status\n"
	"  keygen NAME [--type T] [--purpose P]  generate a key in the token (default\n"
	"                             ec-p256, purposes csr,tls)\n"
	"  list                       keys you may list: NAME TYPE CERT PURPOSES\n"
	"  pubkey NAME                the public key (PEM)\n"
	"  csr NAME --subject DN ...  a CSR signed in the token\n"
	"  sign NAME --alg ALG ...    a signature made in the token\n"
	"  delete NAME                destroy a key and its certificate\n"
	"  cert-put NAME FILE         keep a certificate for the key on the token\n"
	"  cert-get NAME              the certificate kept for the key\n"
	"  status                     managed certificates: class, expiry, last renewal\n"
	"  verify                     do the configured endpoints serve the installed certificates?\n"
	"  audit-verify FILE...       check the hash chain of keysvcd's audit log files\n"
	"  track NAME --cert FILE     add a certificate made by hand to the inventory (status)\n"
	"  key-ref NAME [--out FILE]  a key reference file, for programs that read key files\n"
	"  provider-check [--key F]   can OpenSSL programs here use keysvc keys?\n"
	"\n"
	"Options:\n"
	"  --socket PATH   daemon socket (default $" KEYSVC_SOCKET_ENV ", then " KEYSVC_DEFAULT_SOCKET ")\n"
	"  --json          print the result, or the error, as one JSON object on stdout\n"
	"                  (also accepted after COMMAND)\n"
	"  --timeout SECONDS  how long to wait for the daemon (default 30, 0 = forever,\n"
	"                  at most 3600; fractions such as 0.5 allowed); a keygen, delete\n"
	"                  or cert-put without an answer in time may still have been\n"
	"                  done: the error says so\n"
	"  --version       print the version\n"
	"  -h, --help      this text; `keysvc COMMAND --help` for a command\n"
	"\n"
	"Output files (--out) are replaced atomically with mode 0644 and left\n"
	"untouched when the command fails. Input files may be `-` for stdin.\n"
	"\n"
	"A request keysvcd refuses as malformed (bad-request) exits with 2, like a usage error.\n";

/* ---- command options ---- */

enum {
	OPT_TYPE = 256, OPT_OUT, OPT_SUBJECT, OPT_DNS, OPT_IP, OPT_URI, OPT_EMAIL, OPT_KU,
	OPT_EKU, OPT_ATTR, OPT_DIGEST, OPT_ALG, OPT_IN, OPT_DIGEST_HEX, OPT_JSON, OPT_PURPOSE,
};
#define O(opt) (1u << ((opt) - OPT_TYPE))

static const struct option cmd_opts[] = {
	{ "type", required_argument, NULL, OPT_TYPE },
	{ "out", required_argument, NULL, OPT_OUT },
	{ "subject", required_argument, NULL, OPT_SUBJECT },
	{ "dns", required_argument, NULL, OPT_DNS },
	{ "ip", required_argument, NULL, OPT_IP },
	{ "uri", required_argument, NULL, OPT_URI },
	{ "email", required_argument, NULL, OPT_EMAIL },
	{ "key-usage", required_argument, NULL, OPT_KU },
	{ "eku", required_argument, NULL, OPT_EKU },
	{ "attr", required_argument, NULL, OPT_ATTR },
	{ "digest", required_argument, NULL, OPT_DIGEST },
	{ "alg", required_argument, NULL, OPT_ALG },
	{ "in", required_argument, NULL, OPT_IN },
	{ "digest-hex", required_argument, NULL, OPT_DIGEST_HEX },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "purpose", required_argument, NULL, OPT_PURPOSE },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct cmd_args {
	const char *type, *out, *subject, *digest, *alg, *in, *digest_hex, *purpose;
	const char *dns[MAX_LIST], *ip[MAX_LIST], *uri[MAX_LIST], *email[MAX_LIST];
	size_t n_dns, n_ip, n_uri, n_email;
	char *ku_join, *ku_buf, *eku_join, *eku_buf;
	const char *ku[MAX_SPLIT], *eku[MAX_SPLIT];
	size_t n_ku, n_eku;
	char *attr_buf[MAX_ATTRS];
	struct keysvc_csr_attr attrs[MAX_ATTRS];
	size_t n_attrs;
	const char *pos[2];        /* positional arguments */
	size_t n_pos;
};

static void free_args(struct cmd_args *a)
{
	free(a->ku_join);
	free(a->ku_buf);
	free(a->eku_join);
	free(a->eku_buf);
	for (size_t i = 0; i < a->n_attrs; i++)
		free(a->attr_buf[i]);
}

static int push(const struct cli_global *g, const char **list, size_t *n, const char *v,
		const char *what)
{
	if (*n >= MAX_LIST)
		return cli_usage_error(g, "more than %d %s options", MAX_LIST, what);
	list[(*n)++] = v;
	return KS_EXIT_OK;
}

/*
 * Add the comma-separated values of @s to @list. *@join keeps all values
 * given so far and *@buf the split copy @list points into; repeating the
 * option adds to the list.
 */
static int split_commas(const struct cli_global *g, const char *s, char **join, char **buf,
			const char **list, size_t *n, const char *what)
{
	char *save = NULL, *tok, *joined;

	if (*join != NULL ? asprintf(&joined, "%s,%s", *join, s) < 0 :
	    (joined = strdup(s)) == NULL)
		return cli_report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
	free(*join);
	*join = joined;
	free(*buf);
	if ((*buf = strdup(joined)) == NULL)
		return cli_report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
	*n = 0;
	for (tok = strtok_r(*buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (*n >= MAX_SPLIT)
			return cli_usage_error(g, "more than %d values for %s", MAX_SPLIT, what);
		list[(*n)++] = tok;
	}
	if (*n == 0)
		return cli_usage_error(g, "%s needs at least one value", what);
	return KS_EXIT_OK;
}

/* OID=VALUE[:printable|utf8|ia5]; any other ":suffix" is part of VALUE. */
static int parse_attr(const struct cli_global *g, struct cmd_args *a, const char *s)
{
	struct keysvc_csr_attr *at;
	char *copy, *eq, *colon;

	if (a->n_attrs >= MAX_ATTRS)
		return cli_usage_error(g, "more than %d --attr options", MAX_ATTRS);
	if ((copy = strdup(s)) == NULL)
		return cli_report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
	a->attr_buf[a->n_attrs] = copy;
	at = &a->attrs[a->n_attrs++];
	if ((eq = strchr(copy, '=')) == NULL || eq == copy)
		return cli_usage_error(g, "--attr %s: expected OID=VALUE[:printable|utf8|ia5]", s);
	*eq = '\0';
	at->oid = copy;
	at->value = eq + 1;
	colon = strrchr(eq + 1, ':');
	if (colon != NULL && (strcmp(colon + 1, "printable") == 0 ||
			      strcmp(colon + 1, "utf8") == 0 || strcmp(colon + 1, "ia5") == 0)) {
		*colon = '\0';
		at->type = colon + 1;
	}
	return KS_EXIT_OK;
}

/*
 * Parse a command's options (argv[0] is the command name). @allowed is a
 * mask of O(OPT_...); --json is allowed everywhere and sets @g->json, as
 * the global option does, since scripts put it after the command too.
 * Returns KS_EXIT_OK, an exit code, or -1 after --help.
 */
static int parse_cmd(struct cli_global *g, int argc, char **argv, struct cmd_args *a,
		     unsigned allowed, size_t min_pos, size_t max_pos, const char *help)
{
	int c, r;

	memset(a, 0, sizeof(*a));
	/* 0, not 1: glibc re-initialises and forgets the "+" mode of the first parse. */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", cmd_opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(help, stdout);
			ks_exit_print_table(stdout);
			return -1;
		}
		if (c == '?')
			return cli_usage_error(g, "unknown option %s", argv[optind - 1]);
		if (c == ':')
			return cli_usage_error(g, "option %s needs a value", argv[optind - 1]);
		if (c == OPT_JSON) {
			g->json = 1;
			continue;
		}
		if ((O(c) & allowed) == 0)
			return cli_usage_error(g, "option --%s does not apply to %s",
					   cmd_opts[c - OPT_TYPE].name, g->command);
		r = KS_EXIT_OK;
		switch (c) {
		case OPT_TYPE: a->type = optarg; break;
		case OPT_OUT: a->out = optarg; break;
		case OPT_SUBJECT: a->subject = optarg; break;
		case OPT_DNS: r = push(g, a->dns, &a->n_dns, optarg, "--dns"); break;
		case OPT_IP: r = push(g, a->ip, &a->n_ip, optarg, "--ip"); break;
		case OPT_URI: r = push(g, a->uri, &a->n_uri, optarg, "--uri"); break;
		case OPT_EMAIL: r = push(g, a->email, &a->n_email, optarg, "--email"); break;
		case OPT_KU: r = split_commas(g, optarg, &a->ku_join, &a->ku_buf, a->ku, &a->n_ku, "--key-usage"); break;
		case OPT_EKU: r = split_commas(g, optarg, &a->eku_join, &a->eku_buf, a->eku, &a->n_eku, "--eku"); break;
		case OPT_ATTR: r = parse_attr(g, a, optarg); break;
		case OPT_DIGEST: a->digest = optarg; break;
		case OPT_ALG: a->alg = optarg; break;
		case OPT_IN: a->in = optarg; break;
		case OPT_DIGEST_HEX: a->digest_hex = optarg; break;
		case OPT_PURPOSE: a->purpose = optarg; break;
		}
		if (r != KS_EXIT_OK)
			return r;
	}
	for (; optind < argc; optind++) {
		if (a->n_pos >= max_pos)
			return cli_usage_error(g, "unexpected argument %s", argv[optind]);
		a->pos[a->n_pos++] = argv[optind];
	}
	if (a->n_pos < min_pos)
		return cli_usage_error(g, "%s", min_pos == 2 ? "expected a key name and a file" :
				   "expected a key name");
	/* Every command with a positional argument names a key first: refused here, not by keysvcd. */
	if (a->n_pos >= 1 && !ks_key_name_valid(a->pos[0]))
		return cli_usage_error(g, "%s: not a valid key name (1 to %d of A-Z a-z 0-9 . _ -, "
				   "not starting with . or -)", a->pos[0], KS_KEY_NAME_MAX);
	return KS_EXIT_OK;
}

/* ---- commands ---- */

static const char *health_name(enum keysvc_health h)
{
	switch (h) {
	case KEYSVC_HEALTH_OK: return ks_wire_health_name(KS_WIRE_HEALTH_OK);
	case KEYSVC_HEALTH_TOKEN_UNAVAILABLE: return ks_wire_health_name(KS_WIRE_HEALTH_TOKEN_UNAVAILABLE);
	case KEYSVC_HEALTH_DEGRADED: return ks_wire_health_name(KS_WIRE_HEALTH_DEGRADED);
	default: return "unknown";
	}
}

static json_t *strv_json(char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a != NULL && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static int cmd_hello(const struct cli_global *g, struct cmd_args *a)
{
	struct keysvc_hello *h = NULL;
	keysvc *ks;
	int r;

	(void)a;
	if ((r = cli_dial(g, &ks)) != KS_EXIT_OK)
		return r;
	if ((r = keysvc_hello(ks, &h)) != KEYSVC_OK)
		return cli_fail_on(g, ks, r);
	keysvc_close(ks);
	if (g->json) {
		cli_print_json(json_pack("{s:i, s:s, s:{s:s, s:s, s:s, s:s}, s:s, s:s, s:o, s:o, s:o}",
				     "version", h->version, "server", h->server,
				     "token", "label", h->token_label,
				     "manufacturer", h->token_manufacturer,
				     "model", h->token_model, "serial", h->token_serial,
				     "health", health_name(h->health),
				     "health_reason", h->health_reason,
				     "key_types", strv_json(h->key_types, h->n_key_types),
				     "algorithms", strv_json(h->algorithms, h->n_algorithms),
				     "last_token_ok", h->last_token_ok > 0 ?
				     json_integer(h->last_token_ok) : json_null()));
	} else {
		printf("server:     %s (protocol %d)\n", h->server, h->version);
		printf("token:      %s (%s, %s, serial %s)\n", h->token_label,
		       h->token_manufacturer, h->token_model, h->token_serial);
		if (h->health_reason[0] != '\0')
			printf("health:     %s (%s)\n", health_name(h->health), h->health_reason);
		else
			printf("health:     %s\n", health_name(h->health));
		if (h->last_token_ok > 0) {
			char when[32];
			time_t t = (time_t)h->last_token_ok;
			struct tm tm;

			if (gmtime_r(&t, &tm) != NULL && strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) > 0)
				printf("last ok:    %s (the token's last answer without a fault)\n", when);
		}
		printf("key types: ");
		for (size_t i = 0; i < h->n_key_types; i++)
			printf(" %s", h->key_types[i]);
		printf("\nalgorithms:");
		for (size_t i = 0; i < h->n_algorithms; i++)
			printf(" %s", h->algorithms[i]);
		printf("\n");
	}
	keysvc_hello_free(h);
	return KS_EXIT_OK;
}

/*
 * The commands that produce one PEM text: open the output file, connect,
 * ask, write. @op fills *@pem (and *@type for pubkey).
 */
enum pem_op { PEM_KEYGEN, PEM_PUBKEY, PEM_CSR, PEM_CERT };

static int pem_command(const struct cli_global *g, struct cmd_args *a, enum pem_op op,
		       const struct keysvc_csr_params *params)
{
	const char *name = a->pos[0];
	struct cli_outfile o;
	char *pem = NULL, *type = NULL;
	keysvc *ks;
	json_t *res = NULL;
	int r;

	if ((r = cli_out_open(g, &o, a->out)) != KS_EXIT_OK)
		return r;
	if ((r = cli_dial(g, &ks)) != KS_EXIT_OK) {
		cli_out_abort(&o);
		return r;
	}
	switch (op) {
	case PEM_KEYGEN:
		if ((type = strdup(a->type != NULL ? a->type : "ec-p256")) == NULL) {
			r = KEYSVC_E_NOMEM;
			break;
		}
		r = keysvc_key_generate_purposes(ks, name, type, a->purpose, &pem);
		break;
	case PEM_PUBKEY:
		r = keysvc_key_public(ks, name, &pem, &type);
		break;
	case PEM_CSR:
		r = keysvc_csr_create(ks, name, params, &pem);
		break;
	case PEM_CERT:
		r = keysvc_cert_get(ks, name, &pem);
		break;
	}
	if (r != KEYSVC_OK) {
		char change[160];

		cli_out_abort(&o);
		free(type);
		if (op != PEM_KEYGEN)
			return cli_fail_on(g, ks, r);
		snprintf(change, sizeof(change),
			 "the key %s may have been created: check with `keysvc list`", name);
		return cli_fail_change(g, ks, r, change);
	}
	keysvc_close(ks);
	r = cli_emit_text(g, &o, pem);
	if (r == KS_EXIT_OK && g->json) {
		switch (op) {
		case PEM_KEYGEN: {
			/* As keysvc list writes them: checked by cmd_keygen(), in the canonical order. */
			char purposes[KS_PURPOSES_TEXT_MAX] = "";
			const char *why = NULL;
			unsigned set = KS_PURPOSE_DEFAULT;

			if (a->purpose == NULL || ks_purposes_parse(a->purpose, &set, &why) == 0)
				(void)ks_purposes_format(set, purposes, sizeof(purposes));
			res = json_pack("{s:s, s:s?, s:s, s:s}", "key", name, "type", type, "public_key",
					pem, "purposes", purposes);
			break;
		}
		case PEM_PUBKEY:
			res = json_pack("{s:s, s:s?, s:s}", "key", name, "type", type, "public_key", pem);
			break;
		case PEM_CSR:
			res = json_pack("{s:s, s:s}", "key", name, "csr", pem);
			break;
		case PEM_CERT:
			res = json_pack("{s:s, s:s}", "key", name, "cert", pem);
			break;
		}
		cli_print_json(res);
	}
	free(pem);
	free(type);
	return r;
}

static int cmd_keygen(const struct cli_global *g, struct cmd_args *a)
{
	const char *why = NULL;
	unsigned set;

	/* A bad list is the user's mistake: said before keysvcd is asked. */
	if (a->purpose != NULL && ks_purposes_parse(a->purpose, &set, &why) != 0)
		return cli_usage_error(g, "--purpose %s: %s (purposes: csr, tls, http-signature, "
				       "sign)", a->purpose, why);
	return pem_command(g, a, PEM_KEYGEN, NULL);
}

static int cmd_pubkey(const struct cli_global *g, struct cmd_args *a)
{
	return pem_command(g, a, PEM_PUBKEY, NULL);
}

static int cmd_cert_get(const struct cli_global *g, struct cmd_args *a)
{
	return pem_command(g, a, PEM_CERT, NULL);
}

static int cmd_csr(const struct cli_global *g, struct cmd_args *a)
{
	struct keysvc_csr_params p = { 0 };

	if (a->subject == NULL)
		return cli_usage_error(g, "--subject is required");
	p.subject = a->subject;
	p.dns = a->dns;
	p.n_dns = a->n_dns;
	p.ip = a->ip;
	p.n_ip = a->n_ip;
	p.uri = a->uri;
	p.n_uri = a->n_uri;
	p.email = a->email;
	p.n_email = a->n_email;
	p.key_usage = a->ku;
	p.n_key_usage = a->n_ku;
	p.ext_key_usage = a->eku;
	p.n_ext_key_usage = a->n_eku;
	p.attrs = a->attrs;
	p.n_attrs = a->n_attrs;
	p.digest = a->digest;
	return pem_command(g, a, PEM_CSR, &p);
}

static int cmd_list(const struct cli_global *g, struct cmd_args *a)
{
	struct keysvc_key *keys = NULL;
	size_t n = 0;
	keysvc *ks;
	int r, width = 4, truncated, legacy = 0, any_legacy = 0;

	(void)a;
	if ((r = cli_dial(g, &ks)) != KS_EXIT_OK)
		return r;
	if ((r = keysvc_key_list(ks, &keys, &n)) != KEYSVC_OK)
		return cli_fail_on(g, ks, r);
	truncated = keysvc_key_list_truncated(ks);
	if (truncated)
		fprintf(stderr, "%skeysvc: keysvcd listed only the first %zu keys by name; there are more\n", ks_log_journal_prefix(stderr, KS_LOG_WARNING), n);
	if (g->json) {
		json_t *arr = json_array();

		for (size_t i = 0; i < n; i++) {
			const char *p = keysvc_key_list_purposes(ks, i, &legacy);

			json_array_append_new(arr, json_pack("{s:s, s:s?, s:b, s:s?, s:b}", "name",
							     keys[i].name, "type", keys[i].type,
							     "has_cert", keys[i].has_cert,
							     "purposes", p, "purposes_legacy", legacy));
		}
		cli_print_json(json_pack("{s:o, s:b}", "keys", arr, "truncated", truncated));
	} else {
		for (size_t i = 0; i < n; i++)
			if ((int)strlen(keys[i].name) > width)
				width = (int)strlen(keys[i].name);
		printf("%-*s  %-10s  %-4s  %s\n", width, "NAME", "TYPE", "CERT", "PURPOSES");
		for (size_t i = 0; i < n; i++) {
			const char *p = keysvc_key_list_purposes(ks, i, &legacy);

			printf("%-*s  %-10s  %-4s  %s%s\n", width, keys[i].name,
			       keys[i].type != NULL ? keys[i].type : "-",
			       keys[i].has_cert ? "yes" : "no",
			       p == NULL ? "-" : p[0] == '\0' ? "none" : p,
			       legacy ? " (legacy: made before purposes; replace it)" : "");
			any_legacy |= legacy;
		}
		if (any_legacy)
			fprintf(stderr, "keysvc: keys marked legacy may sign anything; replace each with "
				"`keysvc keygen NEW --purpose ...`, a new certificate, then `keysvc "
				"delete OLD` (see docs/clients.md)\n");
	}
	keysvc_key_list_free(keys, n);
	keysvc_close(ks);
	return KS_EXIT_OK;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The digest length in bytes of signature algorithm @alg ("...-sha256"), 0 if unknown. */
static size_t alg_digest_len(const char *alg)
{
	const char *dash = strrchr(alg, '-');

	if (dash == NULL)
		return 0;
	if (strcmp(dash, "-sha256") == 0)
		return 32;
	if (strcmp(dash, "-sha384") == 0)
		return 48;
	if (strcmp(dash, "-sha512") == 0)
		return 64;
	return 0;
}

/*
 * --digest-hex @hex for @alg into @out (room for @max bytes). Checked here
 * and told in hex digits: keysvcd would only see bytes and speak of its
 * base64 field, which the user never typed.
 */
static int parse_digest_hex(const struct cli_global *g, const char *hex, const char *alg,
			    uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(hex), want = alg_digest_len(alg);

	for (size_t i = 0; i < n; i++)
		if (hexval(hex[i]) < 0)
			return cli_usage_error(g, "--digest-hex: non-hex character at position %zu", i + 1);
	if (want != 0 && n != 2 * want)
		return cli_usage_error(g, "--digest-hex: %zu hex digits; %s takes a %zu-byte digest, "
				   "%zu hex digits", n, alg, want, 2 * want);
	if (n == 0 || n % 2 != 0 || n / 2 > max)
		return cli_usage_error(g, "--digest-hex: %zu hex digits; expected an even number, "
				   "2 to %zu", n, 2 * max);
	for (size_t i = 0; i < n / 2; i++)
		out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
	*len = n / 2;
	return KS_EXIT_OK;
}

static int cmd_sign(const struct cli_global *g, struct cmd_args *a)
{
	uint8_t digest[64], *data = NULL, *sig = NULL;
	size_t digest_len = 0, data_len = 0, sig_len = 0;
	struct cli_outfile o;
	char *b64 = NULL;
	keysvc *ks;
	int r;

	if (a->alg == NULL)
		return cli_usage_error(g, "--alg is required");
	if ((a->in == NULL) == (a->digest_hex == NULL))
		return cli_usage_error(g, "give exactly one of --in FILE and --digest-hex HEX");
	if (a->digest_hex != NULL &&
	    (r = parse_digest_hex(g, a->digest_hex, a->alg, digest, sizeof(digest), &digest_len)) != KS_EXIT_OK)
		return r;
	if (a->in != NULL &&
	    (r = cli_read_input(g, a->in, KEYSVC_SIGN_DATA_MAX, &data, &data_len)) != KS_EXIT_OK)
		return r;
	if ((r = cli_out_open(g, &o, a->out)) != KS_EXIT_OK) {
		free(data);
		return r;
	}
	if ((r = cli_dial(g, &ks)) != KS_EXIT_OK) {
		free(data);
		cli_out_abort(&o);
		return r;
	}
	if (a->in != NULL)
		r = keysvc_sign_data(ks, a->pos[0], a->alg, data, data_len, &sig, &sig_len);
	else
		r = keysvc_sign_digest(ks, a->pos[0], a->alg, digest, digest_len, &sig, &sig_len);
	free(data);
	if (r != KEYSVC_OK) {
		cli_out_abort(&o);
		return cli_fail_on(g, ks, r);
	}
	keysvc_close(ks);
	if (o.path != NULL && (r = cli_out_commit(g, &o, sig, sig_len)) != KS_EXIT_OK)
		goto out;
	if (g->json || o.path == NULL) {
		if ((b64 = malloc(4 * ((sig_len + 2) / 3) + 1)) == NULL) {
			r = cli_report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
			goto out;
		}
		EVP_EncodeBlock((unsigned char *)b64, sig, (int)sig_len);
		if (g->json)
			cli_print_json(json_pack("{s:s, s:s, s:s}", "key", a->pos[0], "alg", a->alg,
					     "signature", b64));
		else
			puts(b64);
	}
	r = KS_EXIT_OK;
out:
	free(b64);
	free(sig);
	return r;
}

static int cmd_delete(const struct cli_global *g, struct cmd_args *a)
{
	char change[160];
	keysvc *ks;
	int r;

	if ((r = cli_dial(g, &ks)) != KS_EXIT_OK)
		return r;
	if ((r = keysvc_key_delete(ks, a->pos[0])) != KEYSVC_OK) {
		snprintf(change, sizeof(change),
			 "the key %s may have been deleted: check with `keysvc list`", a->pos[0]);
		return cli_fail_change(g, ks, r, change);
	}
	keysvc_close(ks);
	if (g->json)
		cli_print_json(json_pack("{s:s}", "key", a->pos[0]));
	else
		printf("deleted %s\n", a->pos[0]);
	return KS_EXIT_OK;
}

static int cmd_cert_put(const struct cli_global *g, struct cmd_args *a)
{
	char change[224];
	uint8_t *pem = NULL;
	size_t len = 0;
	keysvc *ks;
	int r;

	if ((r = cli_read_input(g, a->pos[1], CERT_MAX, &pem, &len)) != KS_EXIT_OK)
		return r;
	if (memchr(pem, '\0', len) != NULL) {
		free(pem);
		return cli_usage_error(g, "%s: not a PEM file (NUL bytes)", a->pos[1]);
	}
	if ((r = cli_dial(g, &ks)) != KS_EXIT_OK) {
		free(pem);
		return r;
	}
	r = keysvc_cert_put(ks, a->pos[0], (const char *)pem);
	free(pem);
	if (r != KEYSVC_OK) {
		snprintf(change, sizeof(change), "the certificate of %s may have been stored: "
			 "check with `keysvc cert-get %s`", a->pos[0], a->pos[0]);
		return cli_fail_change(g, ks, r, change);
	}
	keysvc_close(ks);
	if (g->json)
		cli_print_json(json_pack("{s:s}", "key", a->pos[0]));
	else
		printf("stored the certificate of %s\n", a->pos[0]);
	return KS_EXIT_OK;
}

static int cmd_key_ref(const struct cli_global *g, struct cmd_args *a)
{
	return cli_key_ref(g, a->pos[0], a->out);
}

static const struct command {
	const char *name;
	unsigned options;           /* O(OPT_...) mask */
	size_t min_pos, max_pos;    /* positional arguments */
	int (*run)(const struct cli_global *g, struct cmd_args *a);
	const char *help;
	/* Instead of run: a command that parses its own arguments (argv[0] is its name). */
	int (*main)(int argc, char **argv, const struct ks_cmd_global *g);
} commands[] = {
	{ "hello", 0, 0, 0, cmd_hello,
	  "Usage: keysvc hello\n"
	  "Shows the daemon, its protocol version, the token and whether it is usable.\n" },
	{ "keygen", O(OPT_TYPE) | O(OPT_OUT) | O(OPT_PURPOSE), 1, 1, cmd_keygen,
	  "Usage: keysvc keygen NAME [--type rsa-2048|rsa-3072|rsa-4096|ec-p256|ec-p384]\n"
	  "                          [--purpose P[,P...]] [--out FILE]\n"
	  "Generates key pair NAME inside the token (default type ec-p256); the private\n"
	  "key never leaves it. Prints the public key (PEM), or writes it to FILE.\n"
	  "NAME: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -.\n"
	  "P: what the key may sign, fixed for its life (default csr,tls):\n"
	  "  csr             CSRs keysvcd builds (keysvc csr)\n"
	  "  tls             TLS handshake signatures (the OpenSSL provider)\n"
	  "  http-signature  HTTP signature signing strings (keysvc-oci)\n"
	  "  sign            any data or digest: only for keys that must sign anything\n"
	  "                  (a token-held CA); a key with it is a general signing oracle\n" },
	{ "list", 0, 0, 0, cmd_list,
	  "Usage: keysvc list [--json]\n"
	  "Lists the keys you may list: NAME, TYPE (- for a kind protocol v1 does not\n"
	  "name), CERT (whether a certificate is stored for it) and PURPOSES (what it\n"
	  "may sign; \"(legacy)\" for a key made before purposes, which may sign\n"
	  "anything: replace it with a new key of narrow purposes).\n"
	  "--json: {\"keys\": [{\"name\", \"type\" (absent for -), \"has_cert\",\n"
	  "\"purposes\" (\"csr,tls\"), \"purposes_legacy\"}...],\n"
	  "\"truncated\": true when keysvcd left keys out}.\n" },
	{ "pubkey", O(OPT_OUT), 1, 1, cmd_pubkey,
	  "Usage: keysvc pubkey NAME [--out FILE]\n"
	  "Prints the public key of NAME (PEM), or writes it to FILE.\n" },
	{ "csr", O(OPT_OUT) | O(OPT_SUBJECT) | O(OPT_DNS) | O(OPT_IP) | O(OPT_URI) | O(OPT_EMAIL) |
	  O(OPT_KU) | O(OPT_EKU) | O(OPT_ATTR) | O(OPT_DIGEST), 1, 1, cmd_csr,
	  "Usage: keysvc csr NAME --subject DN [--dns NAME]... [--ip ADDR]... [--uri URI]...\n"
	  "                  [--email ADDR]... [--key-usage U[,U...]] [--eku E[,E...]]\n"
	  "                  [--attr OID=VALUE[:printable|utf8|ia5]]...\n"
	  "                  [--digest sha256|sha384|sha512] [--out FILE]\n"
	  "Creates a PKCS#10 CSR for key NAME, signed inside the token. Prints it (PEM),\n"
	  "or writes it to FILE.\n"
	  "  DN   RFC 4514, most specific first, e.g. \"CN=host,O=Example,C=US\"\n"
	  "  U    digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment,\n"
	  "       keyAgreement, keyCertSign, cRLSign\n"
	  "  E    serverAuth, clientAuth, codeSigning, emailProtection, timeStamping,\n"
	  "       OCSPSigning, or a dotted OID\n"
	  "  --attr adds a request attribute (default type utf8).\n"
	  "  --digest sha512 is for RSA keys only.\n" },
	{ "sign", O(OPT_OUT) | O(OPT_ALG) | O(OPT_IN) | O(OPT_DIGEST_HEX), 1, 1, cmd_sign,
	  "Usage: keysvc sign NAME --alg ALG (--in FILE | --digest-hex HEX) [--out FILE]\n"
	  "Signs FILE (at most 48 KiB, hashed by the daemon; - for stdin) or a digest\n"
	  "you computed (HEX: 64, 96 or 128 hex digits for sha256, sha384, sha512)\n"
	  "with key NAME.\n"
	  "ALG: rsa-pkcs1-sha256|sha384|sha512, rsa-pss-sha256|sha384|sha512,\n"
	  "     ecdsa-sha256|sha384.\n"
	  "The binary signature (ECDSA as DER) goes to FILE, or base64 to stdout.\n" },
	{ "delete", 0, 1, 1, cmd_delete,
	  "Usage: keysvc delete NAME\n"
	  "Destroys key pair NAME and its certificate in the token.\n" },
	{ "cert-put", 0, 2, 2, cmd_cert_put,
	  "Usage: keysvc cert-put NAME FILE\n"
	  "Stores the PEM certificate in FILE (- for stdin) beside key NAME, replacing\n"
	  "any earlier one. It must be a certificate for that key.\n" },
	{ "cert-get", O(OPT_OUT), 1, 1, cmd_cert_get,
	  "Usage: keysvc cert-get NAME [--out FILE]\n"
	  "Prints the certificate stored for key NAME (PEM), or writes it to FILE.\n", NULL },
	{ "status", 0, 0, 0, NULL, ks_status_usage, ks_status_main },
	{ "verify", 0, 0, 0, NULL, ks_verify_usage, ks_verify_main },
	{ "audit-verify", 0, 0, 0, NULL, cli_audit_verify_usage, cli_audit_verify_main },
	{ "track", 0, 0, 0, NULL, ks_track_usage, ks_track_main },
	{ "key-ref", O(OPT_OUT), 1, 1, cmd_key_ref,
	  "Usage: keysvc [--socket PATH] key-ref NAME [--out FILE]\n"
	  "Writes a key reference file for key NAME (PEM, \"KEYSVC KEY REFERENCE\"): it\n"
	  "names the key, and the socket when --socket is given, and holds no secret.\n"
	  "A program whose OpenSSL loads the keysvc provider (keysvc provider-check)\n"
	  "takes FILE wherever it takes a PEM private key file (curl --key, Python's\n"
	  "load_cert_chain(keyfile=), nginx's ssl_certificate_key) and signs through\n"
	  "keysvcd. keysvcd is asked first whether NAME exists and may be read.\n" },
	{ "provider-check", 0, 0, 0, NULL, cli_provider_check_usage, cli_provider_check_main },
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_global g = { .timeout_ms = -1 };
	const struct command *cmd = NULL;
	struct cmd_args a;
	char *end;
	double v;
	int c, r;

	opterr = 0;
	/* '+': stop at the command name; its options are parsed by the command. */
	while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			g.socket = optarg;
			break;
		case 'j':
			g.json = 1;
			break;
		case 't':
			/* Seconds, like every keysvc program's --timeout. */
			errno = 0;
			v = strtod(optarg, &end);
			if (errno != 0 || end == optarg || *end != '\0' || !(v >= 0 && v <= 3600))
				return cli_usage_error(&g, "--timeout %s: expected 0..3600 seconds", optarg);
			g.timeout_ms = (int)(v * 1000 + 0.5);
			/* 0 means forever: a tiny fraction is not that. */
			if (v > 0 && g.timeout_ms == 0)
				g.timeout_ms = 1;
			break;
		case 'V':
			ks_print_version("keysvc");
			return KS_EXIT_OK;
		case 'h':
			fputs(main_usage, stdout);
			ks_exit_print_table(stdout);
			return KS_EXIT_OK;
		case ':':
			return cli_usage_error(&g, "option %s needs a value (see keysvc --help)",
					   argv[optind - 1]);
		default:
			return cli_usage_error(&g, "unknown option %s (see keysvc --help)",
					   argv[optind - 1]);
		}
	}
	if (optind >= argc) {
		fputs(main_usage, stderr);
		return cli_usage_error(&g, "no command given");
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, argv[optind]) == 0)
			cmd = &commands[i];
	if (cmd == NULL)
		return cli_unknown_command(&g, argv[optind]);
	g.command = cmd->name;
	if (cmd->main != NULL) {
		struct ks_cmd_global cg = { .socket = g.socket, .json = g.json, .timeout_ms = g.timeout_ms };

		r = cmd->main(argc - optind, argv + optind, &cg);
		if (fflush(stdout) != 0 || ferror(stdout)) {
			fprintf(stderr, "%skeysvc: %s: output: stdout: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), g.command, strerror(errno));
			if (r == KS_EXIT_OK)
				r = KS_EXIT_INTERNAL;
		}
		return r;
	}
	r = parse_cmd(&g, argc - optind, argv + optind, &a, cmd->options, cmd->min_pos,
		      cmd->max_pos, cmd->help);
	if (r != KS_EXIT_OK) {
		free_args(&a);
		return r < 0 ? KS_EXIT_OK : r;
	}
	r = cmd->run(&g, &a);
	free_args(&a);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "%skeysvc: %s: output: stdout: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), g.command, strerror(errno));
		if (r == KS_EXIT_OK)
			r = KS_EXIT_INTERNAL;
	}
	return r;
}
