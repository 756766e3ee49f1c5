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
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/common/inventory.h"
#include "clients/renew/common/served.h"
#include "keysvc/keysvc.h"
#include "clients/status/status.h"
#include "clients/status/statuscmd_internal.h"
#include "proto/log.h"

#define MAX_NOTES 4
#define NOTE_MAX 320

const char ks_status_usage[] =
	"Usage: keysvc status [--inventory DIR] [--config FILE] [--format text|json|prometheus]\n"
	"                     [--json] [--textfile PATH] [--color auto|always|never]\n"
	"       keysvc status --forget NAME [--inventory DIR] [--config FILE]\n"
	"Shows every certificate in the inventory and the configuration: class, notAfter,\n"
	"client, key, last renewal outcome, subject and issuer.\n"
	"  --inventory DIR   default $" KS_INV_ENV ", then the configuration's, then " KS_INV_DEFAULT_DIR "\n"
	"  --config FILE     default " KS_CONF_DEFAULT " (if it exists)\n"
	"  --format F        text (default), json (= --json) or prometheus (text format)\n"
	"  --textfile PATH   also write the Prometheus metrics to PATH atomically (0644),\n"
	"                    for node_exporter's textfile collector\n"
	"  --color WHEN      colour the classes: auto (a terminal, unless $NO_COLOR), always, never\n"
	"  --forget NAME     delete the inventory record of NAME (the name given to keysvc track,\n"
	"                    else a certificate path, else a key name matching one record only)\n"
	"Classes: removed (purple), revoked (black), push-failed (gray), expired (red),\n"
	"critical (orange, < 10 days), warning (yellow, < 30 days, or the last renewal\n"
	"failed), notice (blue, < 90 days), valid (green); error when a file is not a\n"
	"certificate. A removed certificate known only to the inventory and untouched for\n"
	"30 days is no longer shown or counted.\n"
	"Keys are checked with keysvcd (key.public); when it cannot be reached, that is said,\n"
	"no certificate is marked removed for its key, and the exit code is 1.\n"
	"Exits with 0 when nothing needs attention (valid, notice), 24 when something does\n"
	"(removed, revoked, push-failed, expired, critical, warning), 1 when something could\n"
	"not be checked (a file, a record, a CRL, keys with keysvcd down; wins over 24).\n"
	"--forget: 0 forgotten, 2 no such record or more than one.\n";

/* ---- shared ---- */

void statuscmd_sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

int statuscmd_json_errors;

/* "keysvc: CMD: NAME: message" on stderr (and as JSON); returns @code. */
int statuscmd_fail(const char *cmd, int code, const char *name, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	fprintf(stderr, "%skeysvc: %s: %s: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), cmd, name, msg);
	if (statuscmd_json_errors) {
		json_t *o = json_pack("{s:s, s:s}", "error", name, "message", msg);

		if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0)
			fputs("{\"error\":\"nomem\",\"message\":\"cannot format the error\"}", stdout);
		fputc('\n', stdout);
		json_decref(o);
	}
	return code;
}

/* The first certificate of @path (a certificate or a chain): 0, -ENOENT, or -EBADMSG with @err. */
int statuscmd_read_leaf(const char *path, X509 **out, char *err)
{
	STACK_OF(X509) *certs = NULL;
	int r;

	*out = NULL;
	if (access(path, F_OK) != 0 && errno == ENOENT)
		return -ENOENT;
	if ((r = ks_ci_load_bundle(path, &certs, err)) == 0)
		*out = sk_X509_shift(certs);
	sk_X509_pop_free(certs, X509_free);
	return r;
}

void statuscmd_name_text(const X509_NAME *name, char *buf, size_t len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	int n = 0;

	buf[0] = '\0';
	if (bio == NULL)
		return;
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0)
		n = BIO_read(bio, buf, (int)len - 1);
	buf[n > 0 ? n : 0] = '\0';
	BIO_free(bio);
	statuscmd_sanitize(buf);
}

void statuscmd_iso_time(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		snprintf(buf, len, "?");
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- status ---- */

struct item {
	struct ks_inv_entry e;      /* the record, or made from the configuration */
	X509 *cert;
	struct ks_status_facts facts;
	enum ks_class cls;
	int key_state;              /* 1 present, 0 missing, -1 not checked */
	int revoked_state;          /* 1 revoked, 0 not, -1 not checked */
	long long left;             /* seconds to notAfter (valid when cert != NULL) */
	char subject[512], issuer[512];
	char notes[MAX_NOTES][NOTE_MAX];
	size_t n_notes;
	int configured;             /* listed in the configuration (never aged out) */
};

struct status_run {
	struct item *items;
	size_t n;
	size_t errors;
	const char *inventory;
	int keys_checked;           /* keysvcd answered */
	char keys_note[NOTE_MAX];
	size_t aged_out;            /* removed entries left out (KS_STATUS_REMOVED_AGE_OUT_DAYS) */
	/* keysvcd's own health, for the metrics (ask_health()). */
	int daemon_up;              /* hello answered */
	enum keysvc_health health;
	long long last_token_ok;    /* 0: keysvcd did not say */
};

static void note(struct item *it, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct item *it, const char *fmt, ...)
{
	va_list ap;

	if (it->n_notes == MAX_NOTES)
		return;
	va_start(ap, fmt);
	vsnprintf(it->notes[it->n_notes], NOTE_MAX, fmt, ap);
	va_end(ap);
	statuscmd_sanitize(it->notes[it->n_notes]);
	it->n_notes++;
}

static void bad_record(const char *file, const char *reason, void *ctx)
{
	struct status_run *run = ctx;

	fprintf(stderr, "%skeysvc: status: inventory record %s: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), file, reason);
	run->errors++;
}

static int fill_missing(char **field, const char *value)
{
	if (*field != NULL || value == NULL)
		return 0;
	return (*field = strdup(value)) == NULL ? -ENOMEM : 0;
}

/* The inventory's records, then the configuration's certificates not in it. */
static int collect(struct status_run *run, const struct ks_conf *conf)
{
	struct ks_inv_entry *recs = NULL;
	char err[KS_INV_ERR_MAX];
	size_t n = 0;
	int r;

	if ((r = ks_inv_list(run->inventory, &recs, &n, bad_record, run, err)) < 0) {
		return statuscmd_fail("status", KS_EXIT_INTERNAL, "inventory", "%s", err);
	}
	if ((run->items = calloc(n + conf->n_certs + 1, sizeof(*run->items))) == NULL) {
		ks_inv_list_free(recs, n);
		fprintf(stderr, "%skeysvc: status: out of memory\n", ks_log_journal_prefix(stderr, KS_LOG_ERR));
		return KS_EXIT_INTERNAL;
	}
	for (size_t i = 0; i < n; i++)
		run->items[run->n++].e = recs[i];
	free(recs);   /* the strings moved into the items */
	for (size_t i = 0; i < conf->n_certs; i++) {
		const struct ks_conf_cert *cc = &conf->certs[i];
		struct item *it = NULL;
		struct ks_inv_entry *e;

		for (size_t k = 0; k < run->n && it == NULL; k++)
			if (strcmp(run->items[k].e.cert, cc->cert) == 0)
				it = &run->items[k];
		if (it == NULL) {
			it = &run->items[run->n++];
			if ((it->e.cert = strdup(cc->cert)) == NULL)
				return KS_EXIT_INTERNAL;
		}
		it->configured = 1;
		e = &it->e;
		/* What the client recorded wins (it knows the key it used); the configuration fills gaps. */
		if (fill_missing(&e->key, cc->key) < 0 || fill_missing(&e->client, cc->client) < 0 ||
		    fill_missing(&e->ca_file, cc->ca_file) < 0 || fill_missing(&e->crl, cc->crl) < 0)
			return KS_EXIT_INTERNAL;
	}
	return 0;
}

static void check_key(struct status_run *run, keysvc **ks, const struct ks_cmd_global *g, struct item *it)
{
	int r;

	it->key_state = -1;
	if (it->e.key == NULL || it->cert == NULL)
		return;
	if (*ks == NULL && run->keys_note[0] == '\0') {
		if ((r = keysvc_connect(g->socket, ks)) != KEYSVC_OK) {
			snprintf(run->keys_note, sizeof(run->keys_note), "keysvcd cannot be reached (%s): keys "
				 "not checked, no certificate marked removed for its key", keysvc_strerror(r));
			*ks = NULL;
			/* A view without its key checks is incomplete: said by the exit code too. */
			run->errors++;
			return;
		}
		if (g->timeout_ms >= 0)
			keysvc_set_timeout(*ks, g->timeout_ms);
		run->keys_checked = 1;
	}
	if (*ks == NULL)
		return;
	r = keysvc_key_public(*ks, it->e.key, NULL, NULL);
	if (r == KEYSVC_OK) {
		it->key_state = 1;
	} else if (r == KEYSVC_E_NO_SUCH_KEY) {
		it->key_state = 0;
		note(it, "keysvcd has no key %s", it->e.key);
	} else if (r == KEYSVC_E_CONNECT || r == KEYSVC_E_IO) {
		snprintf(run->keys_note, sizeof(run->keys_note), "the connection to keysvcd broke (%s): "
			 "the remaining keys are not checked", keysvc_strerror(r));
		run->keys_checked = 0;
		run->errors++;
		keysvc_close(*ks);
		*ks = NULL;
	} else {
		note(it, "key %s not checked: %s", it->e.key, keysvc_strerror(r));
	}
}

static void examine(struct status_run *run, keysvc **ks, const struct ks_cmd_global *g,
		    const struct ks_conf *conf, struct item *it, time_t now)
{
	char err[KS_STATUS_ERR_MAX];
	int r, revoked = 0, stale = 0;

	it->revoked_state = -1;
	r = statuscmd_read_leaf(it->e.cert, &it->cert, err);
	if (r == -ENOENT) {
		it->facts.file_missing = 1;
		note(it, "the certificate file is gone");
	} else if (r < 0) {
		note(it, "%s", err);
	}
	if (it->cert != NULL) {
		statuscmd_name_text(X509_get_subject_name(it->cert), it->subject, sizeof(it->subject));
		statuscmd_name_text(X509_get_issuer_name(it->cert), it->issuer, sizeof(it->issuer));
		it->left = ks_ci_seconds_until(X509_get0_notAfter(it->cert), now);
		/* Classed expired, but said apart: it needs a look at the clocks, not a renewal. */
		if (ks_cert_not_yet_valid(it->cert, now)) {
			char from[64];

			ks_ci_format_time(X509_get0_notBefore(it->cert), from, sizeof(from));
			note(it, "not yet valid (from %s)", from);
		}
	}
	check_key(run, ks, g, it);
	if (it->cert != NULL && it->e.crl != NULL) {
		if (it->e.ca_file == NULL) {
			note(it, "revocation not checked: a CRL but no CA file to check its signature with");
			run->errors++;
		} else if (ks_crl_check(it->cert, it->e.crl, it->e.ca_file, now, &revoked, &stale, err) < 0) {
			note(it, "revocation not checked: %s", err);
			run->errors++;
		} else {
			it->revoked_state = revoked;
			if (stale)
				note(it, "the CRL %s is past its nextUpdate: fetch a fresh one", it->e.crl);
		}
	}
	if (it->e.outcome == KS_INV_FAILED || it->e.outcome == KS_INV_PUSH_FAILED)
		note(it, "last renewal %s: %s", ks_inv_outcome_name(it->e.outcome),
		     it->e.reason != NULL ? it->e.reason : "(no reason recorded)");
	it->facts.cert = it->cert;
	it->facts.key_missing = it->key_state == 0;
	it->facts.revoked = it->revoked_state == 1;
	it->facts.outcome = it->e.outcome;
	it->cls = ks_status_classify(&it->facts, &conf->thresholds, now);
}

/*
 * Whether @it is a removed certificate of the inventory alone that nobody
 * has touched for KS_STATUS_REMOVED_AGE_OUT_DAYS: the last renewal attempt,
 * else (a `keysvc track` entry) the record file's time.
 */
static int aged_out(const struct status_run *run, const struct item *it, time_t now)
{
	char name[80], path[4200];
	long long since = it->e.last_renewal;
	struct stat st;

	if (it->cls != KS_CLASS_REMOVED || it->configured)
		return 0;
	if (since == 0) {
		ks_inv_file_name(it->e.cert, name, sizeof(name));
		snprintf(path, sizeof(path), "%s/%s", run->inventory, name);
		if (stat(path, &st) != 0)
			return 0;
		since = (long long)st.st_mtime;
	}
	return (long long)now - since > (long long)KS_STATUS_REMOVED_AGE_OUT_DAYS * 86400;
}

static void drop_aged_out(struct status_run *run, time_t now)
{
	size_t kept = 0;

	for (size_t i = 0; i < run->n; i++) {
		if (aged_out(run, &run->items[i], now)) {
			ks_inv_entry_free(&run->items[i].e);
			X509_free(run->items[i].cert);
			run->aged_out++;
			continue;
		}
		if (kept != i)
			run->items[kept] = run->items[i];
		kept++;
	}
	run->n = kept;
}

static const char *client_of(const struct item *it)
{
	return it->e.client != NULL ? it->e.client : "other";
}

static void print_text(const struct status_run *run, FILE *out, int colour)
{
	size_t count[KS_CLASS_ERROR + 1] = { 0 };

	if (run->aged_out > 0)
		fprintf(out, "%zu removed certificate%s not shown: untouched for over %d days (keysvc status --forget "
			"deletes a record)\n", run->aged_out, run->aged_out == 1 ? "" : "s",
			KS_STATUS_REMOVED_AGE_OUT_DAYS);
	if (run->n == 0) {
		fprintf(out, "no certificates in the inventory (%s) or the configuration\n", run->inventory);
		return;
	}
	fprintf(out, "%-12s %-23s %6s  %-8s %-16s %-12s %s\n", "CLASS", "NOT AFTER", "DAYS", "CLIENT", "KEY",
		"LAST", "CERTIFICATE");
	for (size_t i = 0; i < run->n; i++) {
		const struct item *it = &run->items[i];
		char until[64] = "-", days[24] = "-";

		if (it->cert != NULL) {
			ks_ci_format_time(X509_get0_notAfter(it->cert), until, sizeof(until));
			/* Whole days, rounded down: -1 as soon as it has expired. */
			snprintf(days, sizeof(days), "%lld", it->left >= 0 ? it->left / 86400 : -((-it->left + 86399) / 86400));
		}
		count[it->cls]++;
		fprintf(out, "%s%-12s%s %-23s %6s  %-8s %-16s %-12s %s\n", colour ? ks_class_ansi(it->cls) : "",
			ks_class_name(it->cls), colour && ks_class_ansi(it->cls)[0] != '\0' ? "\033[0m" : "",
			until, days, client_of(it), it->e.key != NULL ? it->e.key : "-",
			ks_inv_outcome_name(it->e.outcome), it->e.cert);
		if (it->e.name != NULL && (it->e.key == NULL || strcmp(it->e.name, it->e.key) != 0))
			fprintf(out, "             name %s\n", it->e.name);
		if (it->cert != NULL)
			fprintf(out, "             subject %s; issuer %s\n", it->subject, it->issuer);
		for (size_t k = 0; k < it->n_notes; k++)
			fprintf(out, "             note: %s\n", it->notes[k]);
	}
	fprintf(out, "%zu certificate%s:", run->n, run->n == 1 ? "" : "s");
	for (int c = KS_CLASS_ERROR; c >= KS_CLASS_VALID; c--)
		if (count[c] > 0)
			fprintf(out, " %zu %s", count[c], ks_class_name((enum ks_class)c));
	fputc('\n', out);
}

static json_t *tri(int v)
{
	return v < 0 ? json_null() : json_boolean(v);
}

static json_t *opt_str(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

static json_t *status_json(const struct status_run *run)
{
	json_t *root = json_object(), *list = json_array();
	size_t attention = 0, errors = run->errors;

	if (root == NULL || list == NULL) {
		json_decref(root);
		json_decref(list);
		return NULL;
	}
	for (size_t i = 0; i < run->n; i++) {
		const struct item *it = &run->items[i];
		json_t *o = json_object(), *notes = json_array();
		char not_after[32], last[32];

		if (o == NULL || notes == NULL) {
			json_decref(o);
			json_decref(notes);
			continue;
		}
		attention += ks_class_needs_attention(it->cls);
		/* Counted as the exit code counts them (ks_status_exit). */
		errors += it->cls == KS_CLASS_ERROR;
		json_object_set_new(o, "cert", json_string(it->e.cert));
		json_object_set_new(o, "name", opt_str(it->e.name));
		json_object_set_new(o, "class", json_string(ks_class_name(it->cls)));
		json_object_set_new(o, "colour", json_string(ks_class_colour(it->cls)));
		json_object_set_new(o, "key", opt_str(it->e.key));
		json_object_set_new(o, "key_present", tri(it->key_state));
		json_object_set_new(o, "client", json_string(client_of(it)));
		if (it->cert != NULL) {
			statuscmd_iso_time(X509_get0_notAfter(it->cert), not_after, sizeof(not_after));
			json_object_set_new(o, "subject", json_string(it->subject));
			json_object_set_new(o, "issuer", json_string(it->issuer));
			json_object_set_new(o, "not_after", json_string(not_after));
			json_object_set_new(o, "seconds_left", json_integer(it->left));
		} else {
			json_object_set_new(o, "subject", json_null());
			json_object_set_new(o, "issuer", json_null());
			json_object_set_new(o, "not_after", json_null());
			json_object_set_new(o, "seconds_left", json_null());
		}
		json_object_set_new(o, "revoked", tri(it->revoked_state));
		json_object_set_new(o, "outcome", json_string(ks_inv_outcome_name(it->e.outcome)));
		json_object_set_new(o, "reason", opt_str(it->e.reason));
		if (it->e.last_renewal != 0) {
			time_t t = (time_t)it->e.last_renewal;
			struct tm tm;

			gmtime_r(&t, &tm);
			strftime(last, sizeof(last), "%Y-%m-%dT%H:%M:%SZ", &tm);
			json_object_set_new(o, "last_renewal", json_string(last));
		} else {
			json_object_set_new(o, "last_renewal", json_null());
		}
		json_object_set_new(o, "successes", json_integer((json_int_t)it->e.successes));
		json_object_set_new(o, "failures", json_integer((json_int_t)it->e.failures));
		json_object_set_new(o, "ca_file", opt_str(it->e.ca_file));
		json_object_set_new(o, "crl", opt_str(it->e.crl));
		for (size_t k = 0; k < it->n_notes; k++)
			json_array_append_new(notes, json_string(it->notes[k]));
		json_object_set_new(o, "notes", notes);
		json_array_append_new(list, o);
	}
	json_object_set_new(root, "inventory", json_string(run->inventory));
	json_object_set_new(root, "keys_checked", json_boolean(run->keys_checked));
	json_object_set_new(root, "keys_note", run->keys_note[0] != '\0' ? json_string(run->keys_note) : json_null());
	json_object_set_new(root, "certificates", list);
	json_object_set_new(root, "total", json_integer((json_int_t)run->n));
	json_object_set_new(root, "attention", json_integer((json_int_t)attention));
	json_object_set_new(root, "errors", json_integer((json_int_t)errors));
	json_object_set_new(root, "aged_out", json_integer((json_int_t)run->aged_out));
	return root;
}

/* One label set, escaped, into @buf. */
static void labels(const struct item *it, char *buf, size_t len)
{
	char cert[3 * 4096 + 1], key[3 * 64 + 1], client[3 * 32 + 1];

	ks_prom_escape(it->e.cert, cert, sizeof(cert));
	ks_prom_escape(it->e.key != NULL ? it->e.key : "", key, sizeof(key));
	ks_prom_escape(client_of(it), client, sizeof(client));
	snprintf(buf, len, "cert=\"%s\",key=\"%s\",client=\"%s\"", cert, key, client);
}

/*
 * keysvcd's hello, for the metrics: on the connection the key checks
 * opened, else a new one. Not reaching keysvcd is a metric (keysvc_up 0),
 * not an error of this run: the key checks already count their own.
 */
static void ask_health(struct status_run *run, keysvc **ks, const struct ks_cmd_global *g)
{
	struct keysvc_hello *h = NULL;

	if (*ks == NULL) {
		if (keysvc_connect(g->socket, ks) != KEYSVC_OK) {
			*ks = NULL;
			return;
		}
		if (g->timeout_ms >= 0)
			keysvc_set_timeout(*ks, g->timeout_ms);
	}
	if (keysvc_hello(*ks, &h) != KEYSVC_OK)
		return;
	run->daemon_up = 1;
	run->health = h->health;
	run->last_token_ok = h->last_token_ok;
	keysvc_hello_free(h);
}

/* keysvcd and its token: up, the health one-hot, the last good token answer. */
static void print_daemon_metrics(const struct status_run *run, FILE *out)
{
	static const struct {
		enum keysvc_health h;
		const char *name;
	} states[] = {
		{ KEYSVC_HEALTH_OK, "ok" },
		{ KEYSVC_HEALTH_DEGRADED, "degraded" },
		{ KEYSVC_HEALTH_TOKEN_UNAVAILABLE, "token-unavailable" },
	};

	fprintf(out, "# HELP keysvc_up 1 when keysvcd answered hello, 0 when it could not be reached.\n"
		"# TYPE keysvc_up gauge\nkeysvc_up %d\n", run->daemon_up);
	if (!run->daemon_up)
		return;
	fputs("# HELP keysvc_health keysvcd's token health (hello): the series with value 1.\n"
	      "# TYPE keysvc_health gauge\n", out);
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		fprintf(out, "keysvc_health{state=\"%s\"} %d\n", states[i].name, run->health == states[i].h);
	if (run->last_token_ok > 0)
		fprintf(out, "# HELP keysvc_token_last_ok_timestamp_seconds When the token last answered an "
			"operation without a fault.\n# TYPE keysvc_token_last_ok_timestamp_seconds gauge\n"
			"keysvc_token_last_ok_timestamp_seconds %lld\n", run->last_token_ok);
}

static void print_prometheus(const struct status_run *run, FILE *out)
{
	static const enum ks_inv_outcome outcomes[] = { KS_INV_OK, KS_INV_FAILED, KS_INV_PUSH_FAILED };
	char *l = malloc(16 * 1024);

	if (l == NULL)
		return;
	print_daemon_metrics(run, out);
	fputs("# HELP keysvc_renewal_last_result The outcome of the last renewal recorded in the "
	      "inventory: the series with value 1.\n# TYPE keysvc_renewal_last_result gauge\n", out);
	for (size_t i = 0; i < run->n; i++) {
		if (run->items[i].e.outcome == KS_INV_NONE)
			continue;
		labels(&run->items[i], l, 16 * 1024);
		for (size_t k = 0; k < sizeof(outcomes) / sizeof(outcomes[0]); k++)
			fprintf(out, "keysvc_renewal_last_result{%s,outcome=\"%s\"} %d\n", l,
				ks_inv_outcome_name(outcomes[k]), run->items[i].e.outcome == outcomes[k]);
	}
	fputs("# HELP keysvc_renewal_last_timestamp_seconds When the last renewal recorded in the "
	      "inventory was tried.\n# TYPE keysvc_renewal_last_timestamp_seconds gauge\n", out);
	for (size_t i = 0; i < run->n; i++)
		if (run->items[i].e.last_renewal > 0) {
			labels(&run->items[i], l, 16 * 1024);
			fprintf(out, "keysvc_renewal_last_timestamp_seconds{%s} %lld\n", l,
				run->items[i].e.last_renewal);
		}
	fputs("# HELP keysvc_certificate_expiry_seconds Seconds until the certificate's notAfter; negative "
	      "once it has expired.\n# TYPE keysvc_certificate_expiry_seconds gauge\n", out);
	for (size_t i = 0; i < run->n; i++)
		if (run->items[i].cert != NULL) {
			labels(&run->items[i], l, 16 * 1024);
			fprintf(out, "keysvc_certificate_expiry_seconds{%s} %lld\n", l, run->items[i].left);
		}
	fputs("# HELP keysvc_certificate_status The certificate's status class: the series with value 1.\n"
	      "# TYPE keysvc_certificate_status gauge\n", out);
	for (size_t i = 0; i < run->n; i++) {
		labels(&run->items[i], l, 16 * 1024);
		fprintf(out, "keysvc_certificate_status{%s,class=\"%s\"} 1\n", l, ks_class_name(run->items[i].cls));
	}
	fputs("# HELP keysvc_renewal_success_total Renewals recorded as ok in the inventory.\n"
	      "# TYPE keysvc_renewal_success_total counter\n", out);
	for (size_t i = 0; i < run->n; i++) {
		labels(&run->items[i], l, 16 * 1024);
		fprintf(out, "keysvc_renewal_success_total{%s} %llu\n", l, run->items[i].e.successes);
	}
	fputs("# HELP keysvc_renewal_failure_total Renewals recorded as failed or push-failed in the inventory.\n"
	      "# TYPE keysvc_renewal_failure_total counter\n", out);
	for (size_t i = 0; i < run->n; i++) {
		labels(&run->items[i], l, 16 * 1024);
		fprintf(out, "keysvc_renewal_failure_total{%s} %llu\n", l, run->items[i].e.failures);
	}
	free(l);
}

static int write_textfile(const struct status_run *run, const char *path)
{
	char err[KS_CI_ERR_MAX], *buf = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);
	int r;

	if (mem == NULL) {
		fprintf(stderr, "%skeysvc: status: out of memory\n", ks_log_journal_prefix(stderr, KS_LOG_ERR));
		return -ENOMEM;
	}
	print_prometheus(run, mem);
	if (fclose(mem) != 0) {
		free(buf);
		fprintf(stderr, "%skeysvc: status: out of memory\n", ks_log_journal_prefix(stderr, KS_LOG_ERR));
		return -ENOMEM;
	}
	if ((r = ks_ci_write_atomic(path, buf, len, 0644, err)) < 0)
		fprintf(stderr, "%skeysvc: status: --textfile: %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), err);
	free(buf);
	return r;
}

/* One record of @recs (@n) for @name: 1 found (*@out), 0 none, -1 several (listed on stderr). */
static int find_record(const struct ks_inv_entry *recs, size_t n, const char *name, const char *name_abs,
		       const struct ks_inv_entry **out)
{
	/* The most specific spelling first: a tracked name, a path, then a key name. */
	for (int level = 0; level < 3; level++) {
		size_t hits = 0;

		for (size_t i = 0; i < n; i++) {
			const char *v = level == 0 ? recs[i].name : level == 1 ? recs[i].cert : recs[i].key;
			const char *want = level == 1 ? name_abs : name;

			if (v != NULL && want != NULL && strcmp(v, want) == 0) {
				*out = &recs[i];
				hits++;
			}
		}
		if (hits > 1) {
			fprintf(stderr, "%skeysvc: status: --forget %s: %zu records match:\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), name, hits);
			for (size_t i = 0; i < n; i++) {
				const char *v = level == 0 ? recs[i].name : level == 1 ? recs[i].cert : recs[i].key;

				if (v != NULL && strcmp(v, level == 1 ? name_abs : name) == 0)
					fprintf(stderr, "%s  %s\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), recs[i].cert);
			}
			return -1;
		}
		if (hits == 1)
			return 1;
	}
	return 0;
}

static int forget(const char *dir, const char *name, const struct ks_conf *conf)
{
	const struct ks_inv_entry *hit = NULL;
	struct ks_inv_entry *recs = NULL;
	char err[KS_INV_ERR_MAX], *name_abs = ks_inv_abs_path(name);
	size_t n = 0;
	int r;

	if ((r = ks_inv_list(dir, &recs, &n, NULL, NULL, err)) < 0) {
		r = statuscmd_fail("status", KS_EXIT_INTERNAL, "inventory", "%s", err);
		goto out;
	}
	r = find_record(recs, n, name, name_abs, &hit);
	if (r < 0) {
		r = statuscmd_fail("status", KS_EXIT_USAGE, "ambiguous", "--forget %s: several records match; "
			     "give the certificate path", name);
		goto out;
	}
	if (r == 0) {
		r = statuscmd_fail("status", KS_EXIT_USAGE, "no-such-record", "--forget %s: no record in %s has "
			     "this name, certificate path or key", name, dir);
		goto out;
	}
	if ((r = ks_inv_forget(dir, hit->cert, err)) < 0) {
		r = statuscmd_fail("status", KS_EXIT_INTERNAL, "inventory", "%s", err);
		goto out;
	}
	if (statuscmd_json_errors) {
		json_t *o = json_pack("{s:s}", "forgot", hit->cert);

		if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0)
			fputs("{\"error\":\"nomem\",\"message\":\"cannot format the result\"}", stdout);
		fputc('\n', stdout);
		json_decref(o);
	} else {
		printf("forgot %s\n", hit->cert);
	}
	for (size_t i = 0; i < conf->n_certs; i++)
		if (strcmp(conf->certs[i].cert, hit->cert) == 0)
			fprintf(stderr, "%skeysvc: status: %s is still listed in the configuration: status keeps "
				"showing it until it is removed there\n", ks_log_journal_prefix(stderr, KS_LOG_WARNING), hit->cert);
	r = KS_EXIT_OK;
out:
	ks_inv_list_free(recs, n);
	free(name_abs);
	return r;
}

int ks_status_main(int argc, char **argv, const struct ks_cmd_global *g)
{
	enum { O_INVENTORY = 256, O_CONFIG, O_FORMAT, O_JSON, O_TEXTFILE, O_COLOR, O_FORGET };
	static const struct option longopts[] = {
		{ "forget", required_argument, NULL, O_FORGET },
		{ "inventory", required_argument, NULL, O_INVENTORY },
		{ "config", required_argument, NULL, O_CONFIG },
		{ "format", required_argument, NULL, O_FORMAT },
		{ "json", no_argument, NULL, O_JSON },
		{ "textfile", required_argument, NULL, O_TEXTFILE },
		{ "color", required_argument, NULL, O_COLOR },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *inventory = NULL, *config = NULL, *format = g->json ? "json" : "text", *textfile = NULL;
	const char *color = "auto", *no_color, *forget_name = NULL;
	struct status_run run;
	struct ks_conf conf;
	enum ks_class *cls = NULL;
	char err[KS_CONF_ERR_MAX];
	keysvc *ks = NULL;
	time_t now = time(NULL);
	int c, r, colour;

	memset(&run, 0, sizeof(run));
	ks_conf_init(&conf);
	signal(SIGPIPE, SIG_IGN);
	statuscmd_json_errors = g->json;
	ks_cli_init("keysvc: status", 1);
	if (ks_check_long_options(argc, argv, longopts) != 0)
		return KS_EXIT_USAGE;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		switch (c) {
		case O_INVENTORY: inventory = optarg; break;
		case O_CONFIG: config = optarg; break;
		case O_FORMAT: format = optarg; statuscmd_json_errors = strcmp(optarg, "json") == 0; break;
		case O_JSON: format = "json"; statuscmd_json_errors = 1; break;
		case O_TEXTFILE: textfile = optarg; break;
		case O_COLOR: color = optarg; break;
		case O_FORGET: forget_name = optarg; break;
		case 'h': fputs(ks_status_usage, stdout); ks_exit_print_table(stdout); return KS_EXIT_OK;
		case ':': return statuscmd_usage_err("status", "option %s needs a value", argv[optind - 1]);
		default: return statuscmd_usage_err("status", "unknown option %s (see keysvc status --help)", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return statuscmd_usage_err("status", "unexpected argument %s", argv[optind]);
	if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0 && strcmp(format, "prometheus") != 0)
		return statuscmd_usage_err("status", "--format %s: text, json or prometheus", format);
	if (strcmp(color, "auto") == 0) {
		no_color = getenv("NO_COLOR");
		colour = isatty(STDOUT_FILENO) && (no_color == NULL || no_color[0] == '\0');
	} else if (strcmp(color, "always") == 0 || strcmp(color, "never") == 0) {
		colour = strcmp(color, "always") == 0;
	} else {
		return statuscmd_usage_err("status", "--color %s: auto, always or never", color);
	}
	if (inventory != NULL && inventory[0] == '\0')
		return statuscmd_usage_err("status", "--inventory: a directory is needed");
	if (ks_conf_load(config != NULL ? config : KS_CONF_DEFAULT, config != NULL, &conf, err) < 0)
		return statuscmd_fail("status", KS_EXIT_CONFIG, "configuration", "%s", err);
	run.inventory = ks_inv_dir(inventory, conf.inventory);
	if (forget_name != NULL) {
		if (forget_name[0] == '\0')
			r = statuscmd_usage_err("status", "--forget: a name is needed");
		else if (textfile != NULL || strcmp(format, "prometheus") == 0)
			r = statuscmd_usage_err("status", "--forget goes with --inventory and --config only");
		else
			r = forget(run.inventory, forget_name, &conf);
		goto out;
	}
	if ((r = collect(&run, &conf)) != 0)
		goto out;
	for (size_t i = 0; i < run.n; i++)
		examine(&run, &ks, g, &conf, &run.items[i], now);
	if (textfile != NULL || strcmp(format, "prometheus") == 0)
		ask_health(&run, &ks, g);
	keysvc_close(ks);
	drop_aged_out(&run, now);
	if (run.keys_note[0] != '\0')
		fprintf(stderr, "%skeysvc: status: %s\n", ks_log_journal_prefix(stderr, KS_LOG_WARNING),
			run.keys_note);
	if (strcmp(format, "json") == 0) {
		json_t *o = status_json(&run);

		if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0)
			run.errors++;
		fputc('\n', stdout);
		json_decref(o);
	} else if (strcmp(format, "prometheus") == 0) {
		print_prometheus(&run, stdout);
	} else {
		print_text(&run, stdout, colour);
	}
	if (textfile != NULL && write_textfile(&run, textfile) < 0)
		run.errors++;
	if ((cls = calloc(run.n + 1, sizeof(*cls))) == NULL) {
		r = KS_EXIT_INTERNAL;
		goto out;
	}
	for (size_t i = 0; i < run.n; i++)
		cls[i] = run.items[i].cls;
	r = ks_status_exit(cls, run.n, run.errors);
out:
	free(cls);
	for (size_t i = 0; i < run.n; i++) {
		ks_inv_entry_free(&run.items[i].e);
		X509_free(run.items[i].cert);
	}
	free(run.items);
	ks_conf_free(&conf);
	return r;
}
