/*
 * keysvc: command line client of keysvcd, built on libkeysvc.
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
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "clients/common/cliutil.h"
#include "clients/keysvc.h"
#include "clients/status/statuscmd.h"
#include "proto/auditchain.h"
#include "proto/exitcode.h"

#define INPUT_MAX (1024 * 1024)  /* any input file */
#define CERT_MAX (64 * 1024)     /* a PEM certificate: a request must fit in a frame */
#define MAX_LIST 100             /* repeated options */
#define MAX_SPLIT 32             /* comma lists */
#define MAX_ATTRS 16

/* Options before the command; set once in main(). */
struct global {
	const char *socket;
	int json;
	int timeout_ms;            /* -1: library default */
	const char *command;       /* for messages: "keysvc: COMMAND: ..."; NULL before one is known */
};

static const char main_usage[] =
	"Usage: keysvc [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS]\n"
	"\n"
	"Talks to keysvcd, which keeps private keys inside a PKCS#11 token.\n"
	"\n"
	"Commands:\n"
	"  hello                      daemon, protocol and token status\n"
	"  keygen NAME [--type T]     generate a key in the token (default ec-p256)\n"
	"  list                       keys you may list: NAME TYPE CERT\n"
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

/* Print @o (reference taken) as one line of JSON on stdout. */
static void print_json(json_t *o)
{
	if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0)
		fputs("{\"error\":\"nomem\",\"message\":\"cannot format the result\"}", stdout);
	fputc('\n', stdout);
	json_decref(o);
}

/* Replace control characters of @s (for messages quoting user or daemon text). */
static void sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

/*
 * Report an error named @name with exit code @code: on stderr always, and
 * as {"error", "message"} on stdout with --json. Returns @code.
 */
static int report_named(const struct global *g, int code, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int report_named(const struct global *g, int code, const char *name, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sanitize(msg);
	if (g->json)
		print_json(json_pack("{s:s, s:s}", "error", name, "message", msg));
	fprintf(stderr, "keysvc: %s%s%s%s%s\n", g->command != NULL ? g->command : "",
		g->command != NULL ? ": " : "", name, msg[0] != '\0' ? ": " : "", msg);
	return code;
}

/* Report a library error; the message is the daemon's, or the library's reason. */
static int report(const struct global *g, const keysvc *ks, int err)
{
	const char *msg = keysvc_error_message(ks);

	return report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err), "%s",
			    msg[0] != '\0' ? msg : keysvc_strerror(err));
}

#define usage_error(g, ...) report_named((g), KS_EXIT_USAGE, "usage", __VA_ARGS__)

/*
 * "keysvc: unknown command 'NAME' (see keysvc --help)": the word the user
 * typed comes first, since "usage:" before it hid which word was wrong.
 */
static int unknown_command(const struct global *g, const char *name)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "unknown command '%.100s' (see keysvc --help)", name);
	sanitize(msg);
	if (g->json)
		print_json(json_pack("{s:s, s:s}", "error", "usage", "message", msg));
	fprintf(stderr, "keysvc: %s\n", msg);
	return KS_EXIT_USAGE;
}

/* ---- files ---- */

/*
 * Read all of @path ("-": stdin), at most @max bytes, NUL-terminated. The
 * size of a regular file is checked before reading; anything else is read
 * with the same bound, so a larger input is an error, never a truncation.
 */
static int read_input(const struct global *g, const char *path, size_t max, uint8_t **data,
		      size_t *len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	ssize_t n = 0;
	int fd, e;

	*data = NULL;
	*len = 0;
	if (strcmp(path, "-") == 0)
		fd = STDIN_FILENO;
	else if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0)
		return report_named(g, KS_EXIT_USAGE, "input", "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		e = errno;
		goto err;
	}
	if (S_ISDIR(st.st_mode)) {
		e = EISDIR;
		goto err;
	}
	if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > max) {
		e = EFBIG;
		goto err;
	}
	if ((buf = malloc(max + 2)) == NULL) {
		e = ENOMEM;
		goto err;
	}
	while (got <= max) {
		n = read(fd, buf + got, max + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (n < 0) {
		e = errno;
		goto err;
	}
	if (got > max) {
		e = EFBIG;
		goto err;
	}
	if (fd != STDIN_FILENO)
		close(fd);
	buf[got] = '\0';
	*data = buf;
	*len = got;
	return KS_EXIT_OK;
err:
	free(buf);
	if (fd != STDIN_FILENO)
		close(fd);
	if (e == EFBIG)
		return report_named(g, KS_EXIT_USAGE, "input", "%s: larger than %zu bytes", path, max);
	return report_named(g, KS_EXIT_USAGE, "input", "%s: %s", path, strerror(e));
}

/*
 * An output file written atomically: out_open() creates a temporary file
 * beside @path before the daemon is asked anything (so a bad --out costs
 * no key generation), out_commit() writes, fsyncs and renames it over
 * @path, out_abort() removes it. @path is never touched on failure.
 */
struct outfile {
	const char *path;
	char tmp[PATH_MAX];
	int fd;
};

static int out_open(const struct global *g, struct outfile *o, const char *path)
{
	o->path = path;
	o->fd = -1;
	o->tmp[0] = '\0';
	if (path == NULL)
		return KS_EXIT_OK;
	if (snprintf(o->tmp, sizeof(o->tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(o->tmp))
		return report_named(g, KS_EXIT_USAGE, "output", "%s: path too long", path);
	if ((o->fd = mkostemp(o->tmp, O_CLOEXEC)) < 0) {
		o->tmp[0] = '\0';
		return report_named(g, KS_EXIT_INTERNAL, "output", "%s: %s", path, strerror(errno));
	}
	return KS_EXIT_OK;
}

static void out_abort(struct outfile *o)
{
	if (o->fd >= 0)
		close(o->fd);
	if (o->tmp[0] != '\0')
		unlink(o->tmp);
	o->fd = -1;
	o->tmp[0] = '\0';
}

static int out_commit(const struct global *g, struct outfile *o, const void *data, size_t len)
{
	const uint8_t *p = data;
	char dir[PATH_MAX], *slash;
	size_t done = 0;
	ssize_t n;
	int dfd, e;

	while (done < len) {
		n = write(o->fd, p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto err;
		done += (size_t)n;
	}
	if (fchmod(o->fd, 0644) != 0 || fsync(o->fd) != 0)
		goto err;
	n = close(o->fd);
	o->fd = -1;
	if (n != 0 || rename(o->tmp, o->path) != 0)
		goto err;
	o->tmp[0] = '\0';
	/* Make the rename durable too. */
	snprintf(dir, sizeof(dir), "%s", o->path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return KS_EXIT_OK;
err:
	e = errno != 0 ? errno : EIO;
	out_abort(o);
	return report_named(g, KS_EXIT_INTERNAL, "output", "%s: %s", o->path, strerror(e));
}

/* Write @text to the output file if there is one, else to stdout (unless --json). */
static int emit_text(const struct global *g, struct outfile *o, const char *text)
{
	if (o->path != NULL)
		return out_commit(g, o, text, strlen(text));
	if (!g->json)
		fputs(text, stdout);
	return KS_EXIT_OK;
}

/* ---- the daemon ---- */

/* Connect after the command checked its arguments and files. */
static int dial(const struct global *g, keysvc **ks)
{
	char msg[PATH_MAX + 256];
	int r;

	if ((r = keysvc_connect(g->socket, ks)) != KEYSVC_OK) {
		ks_connect_error_text(msg, sizeof(msg), g->socket, r, errno);
		return report_named(g, ks_exit_for_keysvc(r), keysvc_error_name(r), "%s", msg);
	}
	if (g->timeout_ms >= 0)
		keysvc_set_timeout(*ks, g->timeout_ms);
	return KS_EXIT_OK;
}

/* Report a library error on @ks and close it. */
static int fail_on(const struct global *g, keysvc *ks, int err)
{
	int r = report(g, ks, err);

	keysvc_close(ks);
	return r;
}

/*
 * Report @err of a request that changes the token and close @ks. @change
 * says what may have happened and how to find out ("the key k may have
 * been created: check with `keysvc list`"). A request that went out but
 * got no answer may have been carried out, since keysvcd goes on after the
 * client gave up: a plain "timed out" made users believe nothing happened.
 */
static int fail_change(const struct global *g, keysvc *ks, int err, const char *change)
{
	int ms = g->timeout_ms >= 0 ? g->timeout_ms : KEYSVC_DEFAULT_TIMEOUT_MS;
	const char *why = keysvc_error_message(ks);
	int r;

	if (err != KEYSVC_E_IO)
		return fail_on(g, ks, err);
	if (keysvc_request_unsent(ks))
		r = report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err),
				 "the request never reached keysvcd (%s); nothing was changed", why);
	/* libkeysvc's words for a timeout on receiving or on sending. */
	else if (strncmp(why, "no answer within", 16) == 0 || strstr(why, "timed out") != NULL)
		r = report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err),
				 "no answer from keysvcd within %g s; %s", ms / 1000.0, change);
	else
		r = report_named(g, ks_exit_for_keysvc(err), keysvc_error_name(err),
				 "no answer from keysvcd (%s); %s", why, change);
	keysvc_close(ks);
	return r;
}

/* ---- command options ---- */

enum {
	OPT_TYPE = 256, OPT_OUT, OPT_SUBJECT, OPT_DNS, OPT_IP, OPT_URI, OPT_EMAIL, OPT_KU,
	OPT_EKU, OPT_ATTR, OPT_DIGEST, OPT_ALG, OPT_IN, OPT_DIGEST_HEX, OPT_JSON,
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
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct cmd_args {
	const char *type, *out, *subject, *digest, *alg, *in, *digest_hex;
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

static int push(const struct global *g, const char **list, size_t *n, const char *v,
		const char *what)
{
	if (*n >= MAX_LIST)
		return usage_error(g, "more than %d %s options", MAX_LIST, what);
	list[(*n)++] = v;
	return KS_EXIT_OK;
}

/*
 * Add the comma-separated values of @s to @list. *@join keeps all values
 * given so far and *@buf the split copy @list points into; repeating the
 * option adds to the list.
 */
static int split_commas(const struct global *g, const char *s, char **join, char **buf,
			const char **list, size_t *n, const char *what)
{
	char *save = NULL, *tok, *joined;

	if (*join != NULL ? asprintf(&joined, "%s,%s", *join, s) < 0 :
	    (joined = strdup(s)) == NULL)
		return report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
	free(*join);
	*join = joined;
	free(*buf);
	if ((*buf = strdup(joined)) == NULL)
		return report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
	*n = 0;
	for (tok = strtok_r(*buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (*n >= MAX_SPLIT)
			return usage_error(g, "more than %d values for %s", MAX_SPLIT, what);
		list[(*n)++] = tok;
	}
	if (*n == 0)
		return usage_error(g, "%s needs at least one value", what);
	return KS_EXIT_OK;
}

/* OID=VALUE[:printable|utf8|ia5]; any other ":suffix" is part of VALUE. */
static int parse_attr(const struct global *g, struct cmd_args *a, const char *s)
{
	struct keysvc_csr_attr *at;
	char *copy, *eq, *colon;

	if (a->n_attrs >= MAX_ATTRS)
		return usage_error(g, "more than %d --attr options", MAX_ATTRS);
	if ((copy = strdup(s)) == NULL)
		return report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
	a->attr_buf[a->n_attrs] = copy;
	at = &a->attrs[a->n_attrs++];
	if ((eq = strchr(copy, '=')) == NULL || eq == copy)
		return usage_error(g, "--attr %s: expected OID=VALUE[:printable|utf8|ia5]", s);
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
static int parse_cmd(struct global *g, int argc, char **argv, struct cmd_args *a,
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
			return usage_error(g, "unknown option %s", argv[optind - 1]);
		if (c == ':')
			return usage_error(g, "option %s needs a value", argv[optind - 1]);
		if (c == OPT_JSON) {
			g->json = 1;
			continue;
		}
		if ((O(c) & allowed) == 0)
			return usage_error(g, "option --%s does not apply to %s",
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
		}
		if (r != KS_EXIT_OK)
			return r;
	}
	for (; optind < argc; optind++) {
		if (a->n_pos >= max_pos)
			return usage_error(g, "unexpected argument %s", argv[optind]);
		a->pos[a->n_pos++] = argv[optind];
	}
	if (a->n_pos < min_pos)
		return usage_error(g, "%s", min_pos == 2 ? "expected a key name and a file" :
				   "expected a key name");
	return KS_EXIT_OK;
}

/* ---- commands ---- */

static const char *health_name(enum keysvc_health h)
{
	switch (h) {
	case KEYSVC_HEALTH_OK: return "ok";
	case KEYSVC_HEALTH_TOKEN_UNAVAILABLE: return "token-unavailable";
	case KEYSVC_HEALTH_DEGRADED: return "degraded";
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

static int cmd_hello(const struct global *g, struct cmd_args *a)
{
	struct keysvc_hello *h = NULL;
	keysvc *ks;
	int r;

	(void)a;
	if ((r = dial(g, &ks)) != KS_EXIT_OK)
		return r;
	if ((r = keysvc_hello(ks, &h)) != KEYSVC_OK)
		return fail_on(g, ks, r);
	keysvc_close(ks);
	if (g->json) {
		print_json(json_pack("{s:i, s:s, s:{s:s, s:s, s:s, s:s}, s:s, s:s, s:o, s:o}",
				     "version", h->version, "server", h->server,
				     "token", "label", h->token_label,
				     "manufacturer", h->token_manufacturer,
				     "model", h->token_model, "serial", h->token_serial,
				     "health", health_name(h->health),
				     "health_reason", h->health_reason,
				     "key_types", strv_json(h->key_types, h->n_key_types),
				     "algorithms", strv_json(h->algorithms, h->n_algorithms)));
	} else {
		printf("server:     %s (protocol %d)\n", h->server, h->version);
		printf("token:      %s (%s, %s, serial %s)\n", h->token_label,
		       h->token_manufacturer, h->token_model, h->token_serial);
		if (h->health_reason[0] != '\0')
			printf("health:     %s (%s)\n", health_name(h->health), h->health_reason);
		else
			printf("health:     %s\n", health_name(h->health));
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

static int pem_command(const struct global *g, struct cmd_args *a, enum pem_op op,
		       const struct keysvc_csr_params *params)
{
	const char *name = a->pos[0];
	struct outfile o;
	char *pem = NULL, *type = NULL;
	keysvc *ks;
	json_t *res = NULL;
	int r;

	if ((r = out_open(g, &o, a->out)) != KS_EXIT_OK)
		return r;
	if ((r = dial(g, &ks)) != KS_EXIT_OK) {
		out_abort(&o);
		return r;
	}
	switch (op) {
	case PEM_KEYGEN:
		if ((type = strdup(a->type != NULL ? a->type : "ec-p256")) == NULL) {
			r = KEYSVC_E_NOMEM;
			break;
		}
		r = keysvc_key_generate(ks, name, type, &pem);
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

		out_abort(&o);
		free(type);
		if (op != PEM_KEYGEN)
			return fail_on(g, ks, r);
		snprintf(change, sizeof(change),
			 "the key %s may have been created: check with `keysvc list`", name);
		return fail_change(g, ks, r, change);
	}
	keysvc_close(ks);
	r = emit_text(g, &o, pem);
	if (r == KS_EXIT_OK && g->json) {
		switch (op) {
		case PEM_KEYGEN:
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
		print_json(res);
	}
	free(pem);
	free(type);
	return r;
}

static int cmd_keygen(const struct global *g, struct cmd_args *a)
{
	return pem_command(g, a, PEM_KEYGEN, NULL);
}

static int cmd_pubkey(const struct global *g, struct cmd_args *a)
{
	return pem_command(g, a, PEM_PUBKEY, NULL);
}

static int cmd_cert_get(const struct global *g, struct cmd_args *a)
{
	return pem_command(g, a, PEM_CERT, NULL);
}

static int cmd_csr(const struct global *g, struct cmd_args *a)
{
	struct keysvc_csr_params p = { 0 };

	if (a->subject == NULL)
		return usage_error(g, "--subject is required");
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

static int cmd_list(const struct global *g, struct cmd_args *a)
{
	struct keysvc_key *keys = NULL;
	size_t n = 0;
	keysvc *ks;
	int r, width = 4, truncated;

	(void)a;
	if ((r = dial(g, &ks)) != KS_EXIT_OK)
		return r;
	if ((r = keysvc_key_list(ks, &keys, &n)) != KEYSVC_OK)
		return fail_on(g, ks, r);
	truncated = keysvc_key_list_truncated(ks);
	keysvc_close(ks);
	if (truncated)
		fprintf(stderr, "keysvc: keysvcd listed only the first %zu keys by name; there are more\n", n);
	if (g->json) {
		json_t *arr = json_array();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, json_pack("{s:s, s:s?, s:b}", "name", keys[i].name,
							     "type", keys[i].type,
							     "has_cert", keys[i].has_cert));
		print_json(json_pack("{s:o, s:b}", "keys", arr, "truncated", truncated));
	} else {
		for (size_t i = 0; i < n; i++)
			if ((int)strlen(keys[i].name) > width)
				width = (int)strlen(keys[i].name);
		printf("%-*s  %-10s  %s\n", width, "NAME", "TYPE", "CERT");
		for (size_t i = 0; i < n; i++)
			printf("%-*s  %-10s  %s\n", width, keys[i].name,
			       keys[i].type != NULL ? keys[i].type : "-",
			       keys[i].has_cert ? "yes" : "no");
	}
	keysvc_key_list_free(keys, n);
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
static int parse_digest_hex(const struct global *g, const char *hex, const char *alg,
			    uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(hex), want = alg_digest_len(alg);

	for (size_t i = 0; i < n; i++)
		if (hexval(hex[i]) < 0)
			return usage_error(g, "--digest-hex: non-hex character at position %zu", i + 1);
	if (want != 0 && n != 2 * want)
		return usage_error(g, "--digest-hex: %zu hex digits; %s takes a %zu-byte digest, "
				   "%zu hex digits", n, alg, want, 2 * want);
	if (n == 0 || n % 2 != 0 || n / 2 > max)
		return usage_error(g, "--digest-hex: %zu hex digits; expected an even number, "
				   "2 to %zu", n, 2 * max);
	for (size_t i = 0; i < n / 2; i++)
		out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
	*len = n / 2;
	return KS_EXIT_OK;
}

static int cmd_sign(const struct global *g, struct cmd_args *a)
{
	uint8_t digest[64], *data = NULL, *sig = NULL;
	size_t digest_len = 0, data_len = 0, sig_len = 0;
	struct outfile o;
	char *b64 = NULL;
	keysvc *ks;
	int r;

	if (a->alg == NULL)
		return usage_error(g, "--alg is required");
	if ((a->in == NULL) == (a->digest_hex == NULL))
		return usage_error(g, "give exactly one of --in FILE and --digest-hex HEX");
	if (a->digest_hex != NULL &&
	    (r = parse_digest_hex(g, a->digest_hex, a->alg, digest, sizeof(digest), &digest_len)) != KS_EXIT_OK)
		return r;
	if (a->in != NULL &&
	    (r = read_input(g, a->in, KEYSVC_SIGN_DATA_MAX, &data, &data_len)) != KS_EXIT_OK)
		return r;
	if ((r = out_open(g, &o, a->out)) != KS_EXIT_OK) {
		free(data);
		return r;
	}
	if ((r = dial(g, &ks)) != KS_EXIT_OK) {
		free(data);
		out_abort(&o);
		return r;
	}
	if (a->in != NULL)
		r = keysvc_sign_data(ks, a->pos[0], a->alg, data, data_len, &sig, &sig_len);
	else
		r = keysvc_sign_digest(ks, a->pos[0], a->alg, digest, digest_len, &sig, &sig_len);
	free(data);
	if (r != KEYSVC_OK) {
		out_abort(&o);
		return fail_on(g, ks, r);
	}
	keysvc_close(ks);
	if (o.path != NULL && (r = out_commit(g, &o, sig, sig_len)) != KS_EXIT_OK)
		goto out;
	if (g->json || o.path == NULL) {
		if ((b64 = malloc(4 * ((sig_len + 2) / 3) + 1)) == NULL) {
			r = report_named(g, KS_EXIT_INTERNAL, "nomem", "out of memory");
			goto out;
		}
		EVP_EncodeBlock((unsigned char *)b64, sig, (int)sig_len);
		if (g->json)
			print_json(json_pack("{s:s, s:s, s:s}", "key", a->pos[0], "alg", a->alg,
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

static int cmd_delete(const struct global *g, struct cmd_args *a)
{
	char change[160];
	keysvc *ks;
	int r;

	if ((r = dial(g, &ks)) != KS_EXIT_OK)
		return r;
	if ((r = keysvc_key_delete(ks, a->pos[0])) != KEYSVC_OK) {
		snprintf(change, sizeof(change),
			 "the key %s may have been deleted: check with `keysvc list`", a->pos[0]);
		return fail_change(g, ks, r, change);
	}
	keysvc_close(ks);
	if (g->json)
		print_json(json_pack("{s:s}", "key", a->pos[0]));
	else
		printf("deleted %s\n", a->pos[0]);
	return KS_EXIT_OK;
}

static int cmd_cert_put(const struct global *g, struct cmd_args *a)
{
	char change[224];
	uint8_t *pem = NULL;
	size_t len = 0;
	keysvc *ks;
	int r;

	if ((r = read_input(g, a->pos[1], CERT_MAX, &pem, &len)) != KS_EXIT_OK)
		return r;
	if (memchr(pem, '\0', len) != NULL) {
		free(pem);
		return usage_error(g, "%s: not a PEM file (NUL bytes)", a->pos[1]);
	}
	if ((r = dial(g, &ks)) != KS_EXIT_OK) {
		free(pem);
		return r;
	}
	r = keysvc_cert_put(ks, a->pos[0], (const char *)pem);
	free(pem);
	if (r != KEYSVC_OK) {
		snprintf(change, sizeof(change), "the certificate of %s may have been stored: "
			 "check with `keysvc cert-get %s`", a->pos[0], a->pos[0]);
		return fail_change(g, ks, r, change);
	}
	keysvc_close(ks);
	if (g->json)
		print_json(json_pack("{s:s}", "key", a->pos[0]));
	else
		printf("stored the certificate of %s\n", a->pos[0]);
	return KS_EXIT_OK;
}

/* ---- audit-verify: no daemon involved ---- */

static const char audit_verify_usage[] =
	"Usage: keysvc audit-verify [--json] [--] FILE...\n"
	"Checks the hash chain of keysvcd's audit log: FILEs in rotation order, oldest\n"
	"first (audit.log.2 audit.log.1 audit.log). Each record must name the hash of\n"
	"the one before, across files, with seq counting up by one.\n"
	"Prints FILE:LINE: REASON for the first bad record (edited, removed, reordered,\n"
	"cut) and warnings for chains that start anew (keysvcd started on an empty\n"
	"file, or could not read the last record).\n"
	"With --json (here or before the command): one object, {\"intact\", \"records\", \"files\"} or {\"intact\": false,\n"
	"\"records\", \"file\", \"line\", \"reason\"}.\n"
	"Exits with 0 when intact, 1 when a record was edited, removed, reordered or cut,\n"
	"2 for usage or a file that cannot be read.\n";

struct audit_line_pos {
	const char *file;
	unsigned long line;
};

/*
 * The next line of @f into @line (at most KS_AUDIT_LINE_MAX bytes and the
 * newline; NUL bytes kept, counted in *@len). 1 a line, 0 end of file, -1
 * a line too long for a record, -2 a last line without its newline.
 */
static int read_record_line(FILE *f, char *line, size_t *len)
{
	size_t n = 0;
	int c;

	while ((c = getc(f)) != EOF) {
		if (c == '\n') {
			line[n] = '\0';
			*len = n;
			return 1;
		}
		if (n == KS_AUDIT_LINE_MAX)
			return -1;
		line[n++] = (char)c;
	}
	return n == 0 ? 0 : -2;
}

/* The first bad record (or unreadable file): printed as text, or as JSON with keysvc --json. */
struct audit_finding {
	const char *file;
	unsigned long line;          /* 0: the file could not be read */
	char why[256];
};

/* Check one file's lines; 0 intact so far, 1 a bad record, 2 an I/O error (both in @bad). */
static int audit_verify_file(const char *path, struct ks_auditchain_verifier *v,
			     struct audit_line_pos *last, unsigned long *records, struct audit_finding *bad)
{
	char line[KS_AUDIT_LINE_MAX + 1];
	size_t n = 0;
	unsigned long lineno = 0;
	int r = 0, got;
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");

	bad->file = path;
	bad->line = 0;
	if (f == NULL) {
		snprintf(bad->why, sizeof(bad->why), "%s", strerror(errno));
		return 2;
	}
	while ((got = read_record_line(f, line, &n)) != 0) {
		enum ks_audit_verdict verdict;

		lineno++;
		bad->line = lineno;
		if (got == -2 && !ferror(f)) {
			snprintf(bad->why, sizeof(bad->why), "cut: the last record has no newline");
			r = 1;
			break;
		}
		if (got == -1) {
			snprintf(bad->why, sizeof(bad->why), "not an audit record (longer than %d bytes)",
				 KS_AUDIT_LINE_MAX);
			r = 1;
			break;
		}
		if (got < 0)
			break;
		verdict = ks_auditchain_verify(v, line, (size_t)n, lineno == 1, bad->why, sizeof(bad->why));
		if (verdict == KS_AUDIT_BAD) {
			r = 1;
			break;
		}
		if (verdict == KS_AUDIT_BAD_BEFORE) {
			bad->file = last->file;
			bad->line = last->line;
			r = 1;
			break;
		}
		if (verdict == KS_AUDIT_WARNING)
			fprintf(stderr, "%s:%lu: %s\n", path, lineno, bad->why);
		last->file = path;
		last->line = lineno;
		(*records)++;
	}
	if (r == 0 && ferror(f)) {
		bad->line = 0;
		snprintf(bad->why, sizeof(bad->why), "%s", strerror(errno));
		r = 2;
	}
	if (f != stdin)
		fclose(f);
	return r;
}

static int audit_verify_main(int argc, char **argv, const struct ks_cmd_global *g)
{
	struct ks_auditchain_verifier v;
	struct audit_line_pos last = { NULL, 0 };
	struct audit_finding bad;
	unsigned long records = 0;
	int i, first = 1, json = g->json, r = KS_EXIT_OK;

	/* Options before the files: --json as after keysvc; "--" before a file named like one. */
	for (; first < argc && argv[first][0] == '-' && argv[first][1] != '\0'; first++) {
		if (strcmp(argv[first], "--help") == 0 || strcmp(argv[first], "-h") == 0) {
			fputs(audit_verify_usage, stdout);
			ks_exit_print_table(stdout);
			return KS_EXIT_OK;
		}
		if (strcmp(argv[first], "--json") == 0) {
			json = 1;
			continue;
		}
		if (strcmp(argv[first], "--") == 0) {
			first++;
			break;
		}
		fprintf(stderr, "keysvc: audit-verify: usage: unknown option %s\n", argv[first]);
		return KS_EXIT_USAGE;
	}
	if (first >= argc) {
		fputs(audit_verify_usage, stderr);
		return KS_EXIT_USAGE;
	}
	memset(&v, 0, sizeof(v));
	for (i = first; i < argc && r == KS_EXIT_OK; i++)
		r = audit_verify_file(argv[i], &v, &last, &records, &bad);
	if (r == 2) {
		fprintf(stderr, "keysvc: audit-verify: %s: %s\n", bad.file, bad.why);
		if (json)
			print_json(json_pack("{s:s, s:s, s:s}", "error", "input", "file", bad.file,
					     "message", bad.why));
		return KS_EXIT_USAGE;
	}
	if (json) {
		if (r == 0)
			print_json(json_pack("{s:b, s:I, s:i}", "intact", 1, "records", (json_int_t)records,
					     "files", argc - first));
		else
			print_json(json_pack("{s:b, s:I, s:s, s:I, s:s}", "intact", 0, "records",
					     (json_int_t)records, "file", bad.file, "line", (json_int_t)bad.line,
					     "reason", bad.why));
	} else if (r == 0) {
		printf("%lu records in %d file%s: intact\n", records, argc - first, argc - first == 1 ? "" : "s");
	} else {
		printf("%s:%lu: %s\n", bad.file, bad.line, bad.why);
	}
	return r == 0 ? KS_EXIT_OK : KS_EXIT_INTERNAL;
}

static const struct command {
	const char *name;
	unsigned options;           /* O(OPT_...) mask */
	size_t min_pos, max_pos;    /* positional arguments */
	int (*run)(const struct global *g, struct cmd_args *a);
	const char *help;
	/* Instead of run: a command that parses its own arguments (argv[0] is its name). */
	int (*main)(int argc, char **argv, const struct ks_cmd_global *g);
} commands[] = {
	{ "hello", 0, 0, 0, cmd_hello,
	  "Usage: keysvc hello\n"
	  "Shows the daemon, its protocol version, the token and whether it is usable.\n" },
	{ "keygen", O(OPT_TYPE) | O(OPT_OUT), 1, 1, cmd_keygen,
	  "Usage: keysvc keygen NAME [--type rsa-2048|rsa-3072|rsa-4096|ec-p256|ec-p384] [--out FILE]\n"
	  "Generates key pair NAME inside the token (default type ec-p256); the private\n"
	  "key never leaves it. Prints the public key (PEM), or writes it to FILE.\n"
	  "NAME: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -.\n" },
	{ "list", 0, 0, 0, cmd_list,
	  "Usage: keysvc list [--json]\n"
	  "Lists the keys you may list: NAME, TYPE (- for a kind protocol v1 does not\n"
	  "name) and CERT (whether a certificate is stored for it).\n"
	  "--json: {\"keys\": [{\"name\", \"type\" (absent for -), \"has_cert\"}...],\n"
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
	{ "audit-verify", 0, 0, 0, NULL, audit_verify_usage, audit_verify_main },
	{ "track", 0, 0, 0, NULL, ks_track_usage, ks_track_main },
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
	struct global g = { .timeout_ms = -1 };
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
				return usage_error(&g, "--timeout %s: expected 0..3600 seconds", optarg);
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
			return usage_error(&g, "option %s needs a value (see keysvc --help)",
					   argv[optind - 1]);
		default:
			return usage_error(&g, "unknown option %s (see keysvc --help)",
					   argv[optind - 1]);
		}
	}
	if (optind >= argc) {
		fputs(main_usage, stderr);
		return usage_error(&g, "no command given");
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, argv[optind]) == 0)
			cmd = &commands[i];
	if (cmd == NULL)
		return unknown_command(&g, argv[optind]);
	g.command = cmd->name;
	if (cmd->main != NULL) {
		struct ks_cmd_global cg = { .socket = g.socket, .json = g.json, .timeout_ms = g.timeout_ms };

		r = cmd->main(argc - optind, argv + optind, &cg);
		if (fflush(stdout) != 0 || ferror(stdout)) {
			fprintf(stderr, "keysvc: %s: output: stdout: %s\n", g.command, strerror(errno));
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
		fprintf(stderr, "keysvc: %s: output: stdout: %s\n", g.command, strerror(errno));
		if (r == KS_EXIT_OK)
			r = KS_EXIT_INTERNAL;
	}
	return r;
}
