/*
 * keysvc verify: compare the certificate each configured endpoint serves
 * with the installed one.
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
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/common/inventory.h"
#include "clients/renew/common/served.h"
#include "keysvc/keysvc.h"
#include "clients/status/status.h"
#include "clients/status/statuscmd_internal.h"
#include "proto/log.h"

const char ks_verify_usage[] =
	"Usage: keysvc verify [--config FILE] [--cert PATH] [--json]\n"
	"For every certificate with endpoints in the configuration, connects to each endpoint\n"
	"(host, port, SNI name; nothing else is contacted), takes the certificate it serves and\n"
	"compares it with the installed one: In Sync, or Out of Sync (the previous certificate\n"
	"<cert>.prev still served, another certificate, or unreachable). The served certificate\n"
	"is compared, not validated. Ends with the share of endpoints in sync.\n"
	"  --config FILE   default " KS_CONF_DEFAULT "\n"
	"  --cert PATH     only this certificate\n"
	"Exits with 0 when every endpoint is in sync, 24 when some are not, 1 when an\n"
	"installed certificate cannot be read.\n";

static X509 *load_optional(const char *path)
{
	char err[KS_CI_ERR_MAX];
	X509 *x = NULL;

	(void)statuscmd_read_leaf(path, &x, err);
	return x;
}

int ks_verify_main(int argc, char **argv, const struct ks_cmd_global *g)
{
	enum { O_CONFIG = 256, O_CERT, O_JSON };
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, O_CONFIG },
		{ "cert", required_argument, NULL, O_CERT },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *only = NULL;
	struct ks_conf conf;
	json_t *root = NULL, *list = NULL;
	char err[KS_CONF_ERR_MAX], *only_abs = NULL;
	size_t total = 0, in_sync = 0, errors = 0;
	int c, r, json = g->json, matched = 0;

	ks_conf_init(&conf);
	/* A server that closes mid-handshake must not kill us with SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	ks_cli_init("keysvc: verify", 1);
	statuscmd_json_errors = g->json;
	if (ks_check_long_options(argc, argv, longopts) != 0)
		return KS_EXIT_USAGE;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		switch (c) {
		case O_CONFIG: config = optarg; break;
		case O_CERT: only = optarg; break;
		case O_JSON: json = 1; statuscmd_json_errors = 1; break;
		case 'h': fputs(ks_verify_usage, stdout); ks_exit_print_table(stdout); return KS_EXIT_OK;
		case ':': return statuscmd_usage_err("verify", "option %s needs a value", argv[optind - 1]);
		default: return statuscmd_usage_err("verify", "unknown option %s (see keysvc verify --help)", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return statuscmd_usage_err("verify", "unexpected argument %s", argv[optind]);
	if (only != NULL && (only_abs = ks_inv_abs_path(only)) == NULL)
		return statuscmd_usage_err("verify", "--cert %s: cannot make the path absolute", only);
	if (ks_conf_load(config != NULL ? config : KS_CONF_DEFAULT, config != NULL, &conf, err) < 0) {
		free(only_abs);
		return statuscmd_fail("verify", KS_EXIT_CONFIG, "configuration", "%s", err);
	}
	if (json && ((root = json_object()) == NULL || (list = json_array()) == NULL)) {
		r = KS_EXIT_INTERNAL;
		goto out;
	}
	if (!json)
		printf("Push Validation Report\n");
	for (size_t i = 0; i < conf.n_certs; i++) {
		const struct ks_conf_cert *cc = &conf.certs[i];
		char prev_path[4200], rerr[KS_CI_ERR_MAX];
		X509 *expected = NULL, *previous = NULL;

		if (only_abs != NULL && strcmp(only_abs, cc->cert) != 0)
			continue;
		matched = 1;
		if (cc->n_endpoints == 0)
			continue;
		if (!json)
			printf("\n%s%s%s\n", cc->cert, cc->key != NULL ? "  key " : "", cc->key != NULL ? cc->key : "");
		if ((r = statuscmd_read_leaf(cc->cert, &expected, rerr)) < 0) {
			if (r == -ENOENT)
				snprintf(rerr, sizeof(rerr), "%s: no such file", cc->cert);
			fprintf(stderr, "%skeysvc: verify: the installed certificate: %s; its %zu endpoints are not "
				"checked\n", ks_log_journal_prefix(stderr, KS_LOG_ERR), rerr, cc->n_endpoints);
			errors++;
			total += cc->n_endpoints;
			if (!json)
				printf("  not checked: %s\n", rerr);
			continue;
		}
		snprintf(prev_path, sizeof(prev_path), "%s.prev", cc->cert);
		previous = load_optional(prev_path);
		for (size_t k = 0; k < cc->n_endpoints; k++) {
			const struct ks_conf_endpoint *ep = &cc->endpoints[k];
			char detail[KS_SERVED_ERR_MAX], where[KS_CONF_HOST_MAX + 32];
			enum ks_served s = ks_served_check(ep->host, ep->port, ep->sni, conf.connect_timeout_ms,
							   conf.handshake_timeout_ms, expected, previous, detail);

			statuscmd_sanitize(detail);
			total++;
			in_sync += s == KS_SERVED_EXPECTED;
			snprintf(where, sizeof(where), strchr(ep->host, ':') != NULL ? "[%s]:%d" : "%s:%d", ep->host,
				 ep->port);
			if (json) {
				json_t *o = json_pack("{s:s, s:s, s:i, s:o, s:b, s:s, s:o}", "cert", cc->cert,
						      "host", ep->host, "port", ep->port,
						      "sni", ep->sni != NULL ? json_string(ep->sni) : json_null(),
						      "in_sync", s == KS_SERVED_EXPECTED, "served", ks_served_name(s),
						      "detail", detail[0] != '\0' ? json_string(detail) : json_null());

				if (o != NULL)
					json_array_append_new(list, o);
			} else {
				printf("  %-12s %s%s%s%s%s\n", s == KS_SERVED_EXPECTED ? "In Sync" : "Out of Sync", where,
				       ep->sni != NULL ? " (SNI " : "", ep->sni != NULL ? ep->sni : "",
				       ep->sni != NULL ? ")" : "", "");
				if (s == KS_SERVED_PREVIOUS)
					printf("               an older certificate is still served: %s.prev (%s)\n",
					       cc->cert, detail);
				else if (s != KS_SERVED_EXPECTED)
					printf("               %s\n", detail);
			}
		}
		X509_free(expected);
		X509_free(previous);
	}
	if (only_abs != NULL && !matched) {
		json_decref(list);
		json_decref(root);
		list = root = NULL;
		r = statuscmd_fail("verify", KS_EXIT_USAGE, "usage", "%s is not in the configuration", only_abs);
		goto out;
	}
	if (json) {
		json_object_set_new(root, "endpoints", list);
		list = NULL;
		json_object_set_new(root, "total", json_integer((json_int_t)total));
		json_object_set_new(root, "in_sync", json_integer((json_int_t)in_sync));
		json_object_set_new(root, "share", total > 0 ? json_real((double)in_sync / (double)total) : json_null());
		json_object_set_new(root, "errors", json_integer((json_int_t)errors));
		if (json_dumpf(root, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0)
			errors++;
		fputc('\n', stdout);
	} else if (total == 0) {
		printf("\nno endpoints configured\n");
	} else {
		printf("\nIn Sync: %zu of %zu endpoints (%.0f%%); Out of Sync: %zu\n", in_sync, total,
		       100.0 * (double)in_sync / (double)total, total - in_sync);
	}
	r = errors > 0 ? KS_EXIT_INTERNAL : in_sync < total ? KS_EXIT_ATTENTION : KS_EXIT_OK;
out:
	json_decref(list);
	json_decref(root);
	ks_conf_free(&conf);
	free(only_abs);
	return r;
}
