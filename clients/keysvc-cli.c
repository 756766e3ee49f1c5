/*
 * keysvc: command line client of keysvcd.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "clients/keysvc.h"

#define INPUT_MAX (1024 * 1024)
#define SIGN_DATA_MAX (48 * 1024)
#define MAX_LIST 100

enum exit_code {
	EXIT_OK = 0,
	EXIT_INTERNAL = 1,
	EXIT_USAGE = 2,
	EXIT_DENIED = 3,
	EXIT_NO_SUCH_KEY = 4,
	EXIT_TOKEN = 5,
	EXIT_EXISTS = 6,
	EXIT_UNSUPPORTED = 7,
	EXIT_CONNECT = 8,
};

struct global {
	const char *socket;
	int json;
	int timeout_ms;
	const char *command;
};

static const char main_usage[] =
	"Usage: keysvc [--socket PATH] [--json] [--timeout MS] COMMAND [ARGS]\n"
	"\n"
	"Talks to keysvcd, which keeps private keys inside a PKCS#11 token.\n"
	"\n"
	"Commands:\n"
	"  hello                      daemon, protocol and token status\n"
	"  keygen NAME [--type T]     generate a key in the token (default ec-p256)\n"
	"  list                       keys you may list\n"
	"  pubkey NAME                the public key (PEM)\n"
	"  csr NAME --subject DN ...  a CSR signed in the token\n"
	"  sign NAME --alg ALG ...    a signature made in the token\n"
	"  delete NAME                destroy a key and its certificate\n"
	"  cert-put NAME FILE         keep a certificate for the key on the token\n"
	"  cert-get NAME              the certificate kept for the key\n"
	"\n"
	"Options:\n"
	"  --socket PATH   daemon socket (default $KEYSVC_SOCKET, then " KEYSVC_DEFAULT_SOCKET ")\n"
	"  --json          print results and errors as one JSON object\n"
	"  --timeout MS    per-request deadline (default 30000)\n"
	"  -h, --help      this text; `keysvc COMMAND --help` for a command\n"
	"\n"
	"Exit codes: 0 ok, 1 internal error, 2 usage or bad request, 3 denied,\n"
	"4 no such key, 5 token unavailable, 6 key exists, 7 unsupported,\n"
	"8 cannot connect or connection broken.\n";

static int exit_for(int err)
{
	switch (err) {
	case KEYSVC_OK: return EXIT_OK;
	case KEYSVC_E_BAD_REQUEST:
	case KEYSVC_E_INVALID: return EXIT_USAGE;
	case KEYSVC_E_DENIED: return EXIT_DENIED;
	case KEYSVC_E_NO_SUCH_KEY: return EXIT_NO_SUCH_KEY;
	case KEYSVC_E_TOKEN_UNAVAILABLE: return EXIT_TOKEN;
	case KEYSVC_E_EXISTS: return EXIT_EXISTS;
	case KEYSVC_E_UNSUPPORTED: return EXIT_UNSUPPORTED;
	case KEYSVC_E_CONNECT:
	case KEYSVC_E_IO: return EXIT_CONNECT;
	default: return EXIT_INTERNAL;
	}
}

static void print_json(json_t *o)
{
	char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);

	if (s != NULL) {
		puts(s);
		free(s);
	}
	json_decref(o);
}

/* Report a library error the way the command line promises; returns the exit code. */
static int report(const struct global *g, keysvc *ks, int err, const char *what)
{
	const char *msg = ks != NULL ? keysvc_error_message(ks) : "";

	if (g->json) {
		print_json(json_pack("{s:s, s:s}", "error", keysvc_strerror(err),
				     "message", msg[0] ? msg : keysvc_strerror(err)));
	}
	if (msg[0] != '\0')
		fprintf(stderr, "keysvc: %s: %s: %s\n", what, keysvc_strerror(err), msg);
	else
		fprintf(stderr, "keysvc: %s: %s\n", what, keysvc_strerror(err));
	return exit_for(err);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("keysvc: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(see keysvc --help)\n", stderr);
	return EXIT_USAGE;
}

/* Read at most @max bytes of @path; a larger file is an error, not a truncation. */
static int read_file(const char *path, size_t max, uint8_t **data, size_t *len)
{
	uint8_t *buf;
	size_t got = 0;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "keysvc: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if ((buf = malloc(max + 2)) == NULL) {
		close(fd);
		return -1;
	}
	for (;;) {
		n = read(fd, buf + got, max + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || got + (size_t)n > max)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (n < 0 || n > 0) {
		fprintf(stderr, "keysvc: %s: %s\n", path, n < 0 ? strerror(errno) : "file too large");
		free(buf);
		return -1;
	}
	buf[got] = '\0';
	*data = buf;
	*len = got;
	return 0;
}

/*
 * Write @data to @path atomically: a temporary file in the same directory,
 * fsync, rename, fsync of the directory. On failure @path is untouched.
 */
static int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[PATH_MAX], dirbuf[PATH_MAX];
	int fd, dfd;

	if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp) ||
	    snprintf(dirbuf, sizeof(dirbuf), "%s", path) >= (int)sizeof(dirbuf)) {
		fprintf(stderr, "keysvc: %s: path too long\n", path);
		return -1;
	}
	if ((fd = mkstemp(tmp)) < 0) {
		fprintf(stderr, "keysvc: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (write(fd, data, len) != (ssize_t)len || fchmod(fd, mode) != 0 || fsync(fd) != 0) {
		fprintf(stderr, "keysvc: %s: %s\n", path, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		fprintf(stderr, "keysvc: %s: %s\n", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	if ((dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

/* Print @text, or write it to @out when given. */
static int emit_text(const char *out, const char *text)
{
	if (out != NULL)
		return write_file_atomic(out, text, strlen(text), 0644) == 0 ? EXIT_OK : EXIT_INTERNAL;
	fputs(text, stdout);
	return EXIT_OK;
}

static int connect_or_report(const struct global *g, keysvc **ks)
{
	int r = keysvc_connect(g->socket, ks);

	if (r != KEYSVC_OK)
		return report(g, NULL, r, g->command);
	if (g->timeout_ms >= 0)
		keysvc_set_timeout(*ks, g->timeout_ms);
	return EXIT_OK;
}

/* Commands share this option table; each accepts only its own. */
enum { OPT_TYPE = 256, OPT_OUT, OPT_SUBJECT, OPT_DNS, OPT_IP, OPT_URI, OPT_EMAIL, OPT_KU,
       OPT_EKU, OPT_ATTR, OPT_DIGEST, OPT_ALG, OPT_IN, OPT_DIGEST_HEX };

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
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct cmd_args {
	const char *name, *type, *out, *subject, *digest, *alg, *in, *digest_hex;
	const char *dns[MAX_LIST], *ip[MAX_LIST], *uri[MAX_LIST], *email[MAX_LIST];
	size_t n_dns, n_ip, n_uri, n_email;
	char *ku_buf, *eku_buf;
	const char *ku[32], *eku[32];
	size_t n_ku, n_eku;
	char *attr_buf[16];
	struct keysvc_csr_attr attrs[16];
	size_t n_attrs;
	const char *positional[2];
	size_t n_positional;
};

static void free_args(struct cmd_args *a)
{
	free(a->ku_buf);
	free(a->eku_buf);
	for (size_t i = 0; i < a->n_attrs; i++)
		free(a->attr_buf[i]);
}

static int push(const char **list, size_t *n, size_t max, const char *v, const char *what)
{
	if (*n >= max)
		return usage_error("too many %s values", what);
	list[(*n)++] = v;
	return EXIT_OK;
}

/* Split "a,b,c" into @list (pointing into a copy kept in *@buf). */
static int split_commas(const char *s, char **buf, const char **list, size_t *n, size_t max)
{
	char *save = NULL, *tok;

	free(*buf);
	if ((*buf = strdup(s)) == NULL)
		return EXIT_INTERNAL;
	*n = 0;
	for (tok = strtok_r(*buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (*n >= max)
			return usage_error("too many values in %s", s);
		list[(*n)++] = tok;
	}
	return EXIT_OK;
}

/* OID=VALUE[:printable|utf8|ia5] */
static int parse_attr(struct cmd_args *a, const char *s)
{
	char *copy, *eq, *colon;

	if (a->n_attrs >= 16)
		return usage_error("too many --attr (%s)", s);
	if ((copy = strdup(s)) == NULL)
		return EXIT_INTERNAL;
	a->attr_buf[a->n_attrs] = copy;
	if ((eq = strchr(copy, '=')) == NULL || eq == copy) {
		a->n_attrs++;
		return usage_error("--attr %s: expected OID=VALUE[:TYPE]", s);
	}
	*eq = '\0';
	a->attrs[a->n_attrs].oid = copy;
	a->attrs[a->n_attrs].value = eq + 1;
	colon = strrchr(eq + 1, ':');
	if (colon != NULL && (strcmp(colon + 1, "printable") == 0 || strcmp(colon + 1, "utf8") == 0 ||
			      strcmp(colon + 1, "ia5") == 0)) {
		*colon = '\0';
		a->attrs[a->n_attrs].type = colon + 1;
	}
	a->n_attrs++;
	return EXIT_OK;
}

static int parse_cmd(int argc, char **argv, struct cmd_args *a, const char *allowed,
		     const char *help)
{
	int c, r;

	memset(a, 0, sizeof(*a));
	/* 0, not 1: glibc then forgets the "+" mode of the first parse and permutes again. */
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", cmd_opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(help, stdout);
			return -1;
		}
		if (c == '?')
			return EXIT_USAGE;
		if (c >= OPT_TYPE && strchr(allowed, 'a' + (c - OPT_TYPE)) == NULL)
			return usage_error("option --%s does not apply here", cmd_opts[c - OPT_TYPE].name);
		r = EXIT_OK;
		switch (c) {
		case OPT_TYPE: a->type = optarg; break;
		case OPT_OUT: a->out = optarg; break;
		case OPT_SUBJECT: a->subject = optarg; break;
		case OPT_DNS: r = push(a->dns, &a->n_dns, MAX_LIST, optarg, "--dns"); break;
		case OPT_IP: r = push(a->ip, &a->n_ip, MAX_LIST, optarg, "--ip"); break;
		case OPT_URI: r = push(a->uri, &a->n_uri, MAX_LIST, optarg, "--uri"); break;
		case OPT_EMAIL: r = push(a->email, &a->n_email, MAX_LIST, optarg, "--email"); break;
		case OPT_KU: r = split_commas(optarg, &a->ku_buf, a->ku, &a->n_ku, 32); break;
		case OPT_EKU: r = split_commas(optarg, &a->eku_buf, a->eku, &a->n_eku, 32); break;
		case OPT_ATTR: r = parse_attr(a, optarg); break;
		case OPT_DIGEST: a->digest = optarg; break;
		case OPT_ALG: a->alg = optarg; break;
		case OPT_IN: a->in = optarg; break;
		case OPT_DIGEST_HEX: a->digest_hex = optarg; break;
		}
		if (r != EXIT_OK)
			return r;
	}
	for (; optind < argc; optind++) {
		if (a->n_positional >= 2)
			return usage_error("unexpected argument %s", argv[optind]);
		a->positional[a->n_positional++] = argv[optind];
	}
	a->name = a->n_positional > 0 ? a->positional[0] : NULL;
	return EXIT_OK;
}

/* ---- commands ---- */

static int cmd_hello(const struct global *g, keysvc *ks)
{
	struct keysvc_hello *h = NULL;
	int r = keysvc_hello(ks, &h);

	if (r != KEYSVC_OK)
		return report(g, ks, r, "hello");
	if (g->json) {
		print_json(json_pack("{s:i, s:s, s:{s:s, s:s, s:s, s:s}, s:s}",
				     "version", h->version, "server", h->server,
				     "token", "label", h->token_label, "manufacturer",
				     h->token_manufacturer, "model", h->token_model,
				     "serial", h->token_serial,
				     "health", h->token_up ? "ok" : "token-unavailable"));
	} else {
		printf("server:   %s (protocol %d)\n", h->server, h->version);
		printf("token:    %s (%s %s, serial %s)\n", h->token_label, h->token_manufacturer,
		       h->token_model, h->token_serial);
		printf("health:   %s\n", h->token_up ? "ok" : "token unavailable");
	}
	keysvc_hello_free(h);
	return EXIT_OK;
}

static int cmd_keygen(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	const char *type = a->type ? a->type : "ec-p256";
	char *pem = NULL;
	int r, ret;

	if (a->name == NULL || a->n_positional != 1)
		return usage_error("keygen: %s", "expected one key name");
	if ((r = keysvc_key_generate(ks, a->name, type, &pem)) != KEYSVC_OK)
		return report(g, ks, r, "keygen");
	if (a->out != NULL && write_file_atomic(a->out, pem, strlen(pem), 0644) != 0) {
		free(pem);
		return EXIT_INTERNAL;
	}
	ret = EXIT_OK;
	if (g->json)
		print_json(json_pack("{s:s, s:s, s:s}", "key", a->name, "type", type,
				     "public_key", pem));
	else if (a->out == NULL)
		fputs(pem, stdout);
	else
		printf("generated %s key %s; public key in %s\n", type, a->name, a->out);
	free(pem);
	return ret;
}

static int cmd_list(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	struct keysvc_key *keys = NULL;
	size_t n = 0;
	int r;

	if (a->n_positional != 0)
		return usage_error("list: %s", "takes no arguments");
	if ((r = keysvc_key_list(ks, &keys, &n)) != KEYSVC_OK)
		return report(g, ks, r, "list");
	if (g->json) {
		json_t *arr = json_array();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, json_pack("{s:s, s:s?, s:b}", "key", keys[i].name,
							     "type", keys[i].type,
							     "has_cert", keys[i].has_cert));
		print_json(json_pack("{s:o}", "keys", arr));
	} else {
		printf("%-40s %-10s %s\n", "NAME", "TYPE", "CERT");
		for (size_t i = 0; i < n; i++)
			printf("%-40s %-10s %s\n", keys[i].name, keys[i].type ? keys[i].type : "other",
			       keys[i].has_cert ? "yes" : "no");
	}
	keysvc_key_list_free(keys, n);
	return EXIT_OK;
}

static int cmd_pubkey(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	char *pem = NULL, *type = NULL;
	int r, ret = EXIT_OK;

	if (a->name == NULL || a->n_positional != 1)
		return usage_error("pubkey: %s", "expected one key name");
	if ((r = keysvc_key_public(ks, a->name, &pem, &type)) != KEYSVC_OK)
		return report(g, ks, r, "pubkey");
	if (g->json) {
		if (a->out != NULL)
			ret = emit_text(a->out, pem);
		print_json(json_pack("{s:s, s:s?, s:s}", "key", a->name, "type", type,
				     "public_key", pem));
	} else {
		ret = emit_text(a->out, pem);
	}
	free(pem);
	free(type);
	return ret;
}

static int cmd_csr(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	struct keysvc_csr_params p;
	char *pem = NULL;
	int r, ret = EXIT_OK;

	if (a->name == NULL || a->n_positional != 1)
		return usage_error("csr: %s", "expected one key name");
	if (a->subject == NULL)
		return usage_error("csr: %s", "--subject is required");
	memset(&p, 0, sizeof(p));
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
	if ((r = keysvc_csr_create(ks, a->name, &p, &pem)) != KEYSVC_OK)
		return report(g, ks, r, "csr");
	if (g->json) {
		if (a->out != NULL)
			ret = emit_text(a->out, pem);
		print_json(json_pack("{s:s, s:s}", "key", a->name, "csr", pem));
	} else {
		ret = emit_text(a->out, pem);
	}
	free(pem);
	return ret;
}

static int parse_hex(const char *hex, uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(hex);

	if (n == 0 || n % 2 != 0 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1 ||
		    strchr("0123456789abcdefABCDEF", hex[2 * i]) == NULL ||
		    strchr("0123456789abcdefABCDEF", hex[2 * i + 1]) == NULL)
			return -1;
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

static int cmd_sign(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	uint8_t digest[64], *data = NULL, *sig = NULL;
	size_t digest_len = 0, data_len = 0, sig_len = 0;
	char *b64 = NULL;
	int r, ret = EXIT_OK;

	if (a->name == NULL || a->n_positional != 1)
		return usage_error("sign: %s", "expected one key name");
	if (a->alg == NULL)
		return usage_error("sign: %s", "--alg is required");
	if ((a->in == NULL) == (a->digest_hex == NULL))
		return usage_error("sign: %s", "give exactly one of --in and --digest-hex");
	if (a->digest_hex != NULL) {
		if (parse_hex(a->digest_hex, digest, sizeof(digest), &digest_len) != 0)
			return usage_error("sign: --digest-hex %s is not hex of at most 64 bytes",
					   a->digest_hex);
		r = keysvc_sign_digest(ks, a->name, a->alg, digest, digest_len, &sig, &sig_len);
	} else {
		if (read_file(a->in, SIGN_DATA_MAX, &data, &data_len) != 0)
			return EXIT_USAGE;
		r = keysvc_sign_data(ks, a->name, a->alg, data, data_len, &sig, &sig_len);
		free(data);
	}
	if (r != KEYSVC_OK)
		return report(g, ks, r, "sign");
	if (a->out != NULL && write_file_atomic(a->out, sig, sig_len, 0644) != 0) {
		ret = EXIT_INTERNAL;
		goto out;
	}
	if (g->json || a->out == NULL) {
		b64 = malloc(4 * ((sig_len + 2) / 3) + 1);
		if (b64 == NULL) {
			ret = EXIT_INTERNAL;
			goto out;
		}
		EVP_EncodeBlock((unsigned char *)b64, sig, (int)sig_len);
		if (g->json)
			print_json(json_pack("{s:s, s:s, s:s}", "key", a->name, "alg", a->alg,
					     "signature", b64));
		else
			puts(b64);
	}
out:
	free(b64);
	free(sig);
	return ret;
}

static int cmd_delete(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	int r;

	if (a->name == NULL || a->n_positional != 1)
		return usage_error("delete: %s", "expected one key name");
	if ((r = keysvc_key_delete(ks, a->name)) != KEYSVC_OK)
		return report(g, ks, r, "delete");
	if (g->json)
		print_json(json_pack("{s:s}", "key", a->name));
	else
		printf("deleted %s\n", a->name);
	return EXIT_OK;
}

static int cmd_cert_put(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	uint8_t *pem = NULL;
	size_t len = 0;
	int r;

	if (a->n_positional != 2)
		return usage_error("cert-put: %s", "expected a key name and a file");
	if (read_file(a->positional[1], 64 * 1024, &pem, &len) != 0)
		return EXIT_USAGE;
	r = keysvc_cert_put(ks, a->name, (const char *)pem);
	free(pem);
	if (r != KEYSVC_OK)
		return report(g, ks, r, "cert-put");
	if (g->json)
		print_json(json_pack("{s:s}", "key", a->name));
	else
		printf("stored the certificate of %s\n", a->name);
	return EXIT_OK;
}

static int cmd_cert_get(const struct global *g, keysvc *ks, struct cmd_args *a)
{
	char *pem = NULL;
	int r, ret = EXIT_OK;

	if (a->name == NULL || a->n_positional != 1)
		return usage_error("cert-get: %s", "expected one key name");
	if ((r = keysvc_cert_get(ks, a->name, &pem)) != KEYSVC_OK)
		return report(g, ks, r, "cert-get");
	if (g->json) {
		if (a->out != NULL)
			ret = emit_text(a->out, pem);
		print_json(json_pack("{s:s, s:s}", "key", a->name, "cert", pem));
	} else {
		ret = emit_text(a->out, pem);
	}
	free(pem);
	return ret;
}

/*
 * Letters of the options a command accepts: a=type b=out c=subject d=dns e=ip
 * f=uri g=email h=key-usage i=eku j=attr k=digest l=alg m=in n=digest-hex.
 */
static const struct command {
	const char *name;
	const char *options;
	const char *help;
	int (*run)(const struct global *g, keysvc *ks, struct cmd_args *a);
} commands[] = {
	{ "hello", "", "Usage: keysvc hello\nShows the daemon, its protocol version and the token's state.\n", NULL },
	{ "keygen", "ab", "Usage: keysvc keygen NAME [--type rsa-2048|rsa-3072|rsa-4096|ec-p256|ec-p384] [--out FILE]\n"
	  "Generates key NAME inside the token (default type ec-p256) and prints its public key.\n", cmd_keygen },
	{ "list", "", "Usage: keysvc list\nLists the keys you may list, with their type and whether a certificate is stored.\n", cmd_list },
	{ "pubkey", "b", "Usage: keysvc pubkey NAME [--out FILE]\nPrints the public key of NAME (PEM).\n", cmd_pubkey },
	{ "csr", "bcdefghijk",
	  "Usage: keysvc csr NAME --subject DN [--dns NAME]... [--ip ADDR]... [--uri URI]... [--email ADDR]...\n"
	  "                  [--key-usage U[,U...]] [--eku serverAuth,clientAuth|OID] [--attr OID=VALUE[:printable|utf8|ia5]]...\n"
	  "                  [--digest sha256|sha384|sha512] [--out FILE]\n"
	  "Creates a CSR for key NAME, signed inside the token. DN is RFC 4514, most specific first,\n"
	  "e.g. \"CN=host,O=Example,C=US\".\n", cmd_csr },
	{ "sign", "blmn", "Usage: keysvc sign NAME --alg ALG (--in FILE | --digest-hex HEX) [--out FILE]\n"
	  "Signs FILE (hashed by the daemon, at most 48 KiB) or a digest you computed.\n"
	  "ALG: rsa-pkcs1-sha256|384|512, rsa-pss-sha256|384|512, ecdsa-sha256|384.\n"
	  "The signature (ECDSA as DER) goes to FILE, or to stdout in base64.\n", cmd_sign },
	{ "delete", "", "Usage: keysvc delete NAME\nDestroys key NAME, its public key and its certificate in the token.\n", cmd_delete },
	{ "cert-put", "", "Usage: keysvc cert-put NAME FILE\nStores the PEM certificate in FILE beside key NAME; it must be for that key.\n", cmd_cert_put },
	{ "cert-get", "b", "Usage: keysvc cert-get NAME [--out FILE]\nPrints the certificate stored for key NAME.\n", cmd_cert_get },
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct global g = { .timeout_ms = -1 };
	const struct command *cmd = NULL;
	struct cmd_args a;
	keysvc *ks = NULL;
	char *end;
	int c, r;

	/* '+': stop at the command name; its options are parsed by the command. */
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			g.socket = optarg;
			break;
		case 'j':
			g.json = 1;
			break;
		case 't':
			errno = 0;
			g.timeout_ms = (int)strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || g.timeout_ms < 0 || g.timeout_ms > 3600000)
				return usage_error("--timeout %s: milliseconds, 0..3600000", optarg);
			break;
		case 'h':
			fputs(main_usage, stdout);
			return EXIT_OK;
		default:
			fputs(main_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fputs(main_usage, stderr);
		return EXIT_USAGE;
	}
	g.command = argv[optind];
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, g.command) == 0)
			cmd = &commands[i];
	if (cmd == NULL)
		return usage_error("unknown command %s", g.command);
	r = parse_cmd(argc - optind, argv + optind, &a, cmd->options, cmd->help);
	if (r != EXIT_OK) {
		free_args(&a);
		return r < 0 ? EXIT_OK : r;
	}
	if ((r = connect_or_report(&g, &ks)) != EXIT_OK) {
		free_args(&a);
		return r;
	}
	if (cmd->run == NULL) {
		r = a.n_positional ? usage_error("hello: %s", "takes no arguments") : cmd_hello(&g, ks);
	} else {
		r = cmd->run(&g, ks, &a);
	}
	keysvc_close(ks);
	free_args(&a);
	return r;
}
