#include "clients/renew/common/renewcli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "clients/renew/common/certlock.h"
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/https/https.h"
#include "keysvc/keysvc.h"
#include "proto/exitcode.h"

enum {
	C_SOCKET = KS_RC_OPT_VAL_MIN, C_INVENTORY, C_CONFIG, C_LOCK_WAIT, C_TIMEOUT, C_INSECURE, C_QUIET,
	C_JSON, C_PROVIDER_DIR, C_VERSION, C_HELP,
};

/* Each with the KS_RC_OPT_* bit that brings it in; 0: every client takes it. */
static const struct {
	struct option opt;
	unsigned needs;
} common_options[] = {
	{ { "socket", required_argument, NULL, C_SOCKET }, KS_RC_OPT_SOCKET },
	{ { "inventory", required_argument, NULL, C_INVENTORY }, KS_RC_OPT_INVENTORY },
	{ { "config", required_argument, NULL, C_CONFIG }, KS_RC_OPT_INVENTORY },
	{ { "lock-wait", required_argument, NULL, C_LOCK_WAIT }, KS_RC_OPT_LOCK_WAIT },
	{ { "timeout", required_argument, NULL, C_TIMEOUT }, 0 },
	{ { "insecure", no_argument, NULL, C_INSECURE }, 0 },
	{ { "quiet", no_argument, NULL, C_QUIET }, 0 },
	{ { "json", no_argument, NULL, C_JSON }, 0 },
	{ { "provider-dir", required_argument, NULL, C_PROVIDER_DIR }, 0 },
	{ { "version", no_argument, NULL, C_VERSION }, 0 },
	{ { "help", no_argument, NULL, C_HELP }, 0 },
};
#define N_COMMON (sizeof(common_options) / sizeof(common_options[0]))

static void help(const struct ks_rc_client *cl, FILE *f)
{
	cl->usage(f);
	ks_exit_print_table(f);
}

/* The client's options, then the common ones it takes, then the zero entry; NULL if out of memory. */
static struct option *merged_options(const struct ks_rc_client *cl)
{
	struct option *all;
	size_t n = 0, k = 0;

	while (cl->options[n].name != NULL)
		n++;
	if ((all = calloc(n + N_COMMON + 1, sizeof(*all))) == NULL)
		return NULL;
	memcpy(all, cl->options, n * sizeof(*all));
	for (size_t i = 0; i < N_COMMON; i++)
		if ((common_options[i].needs & ~cl->common) == 0)
			all[n + k++] = common_options[i].opt;
	return all;
}

static int common_option(const struct ks_rc_client *cl, int c, const char *arg, int *stop)
{
	struct ks_rc_opts *co = cl->common_opts;

	switch (c) {
	case C_SOCKET: co->socket = arg; break;
	case C_INVENTORY: co->inventory = arg; break;
	case C_CONFIG: co->config = arg; break;
	case C_LOCK_WAIT:
		if (ks_parse_long(arg, 0, KS_CERT_LOCK_WAIT_MAX_S, &co->lock_wait_s) != 0)
			return ks_die(KS_EXIT_USAGE, "--lock-wait: 0..%ld seconds", KS_CERT_LOCK_WAIT_MAX_S);
		break;
	case C_TIMEOUT:
		if (ks_parse_long(arg, 1, 3600, &co->timeout_s) != 0)
			return ks_die(KS_EXIT_USAGE, "--timeout: 1..3600 seconds");
		break;
	case C_INSECURE: co->insecure = 1; break;
	case C_QUIET: co->quiet = 1; break;
	case C_JSON: co->json = 1; break;
	case C_PROVIDER_DIR: co->provider_dir = arg; break;
	case C_VERSION:
		ks_print_version(cl->program);
		*stop = 1;
		return KS_EXIT_OK;
	case C_HELP:
		help(cl, stdout);
		*stop = 1;
		return KS_EXIT_OK;
	default:
		help(cl, stderr);
		return KS_EXIT_USAGE;
	}
	return 0;
}

int ks_rc_parse(const struct ks_rc_client *cl, int argc, char **argv, const struct ks_rc_command **cmd)
{
	struct ks_rc_opts *co = cl->common_opts;
	struct option *longopts;
	int c, r = 0, stop = 0;

	*cmd = NULL;
	ks_cli_init(cl->program, 1);
	if (co->timeout_s == 0)
		co->timeout_s = 60;
	if (co->lock_wait_s == 0 && (cl->common & KS_RC_OPT_LOCK_WAIT))
		co->lock_wait_s = KS_CERT_LOCK_WAIT_DEFAULT_S;
	if ((longopts = merged_options(cl)) == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	if ((r = ks_check_long_options(argc, argv, longopts)) != 0)
		goto out;
	/* 0: glibc's getopt starts afresh, so that a test may parse twice. */
	optind = 0;
	while (r == 0 && !stop && (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h')
			c = C_HELP;
		if (c >= 256 && c < KS_RC_OPT_VAL_MIN)
			r = cl->option(cl->ctx, c, optarg);
		else
			r = common_option(cl, c, optarg, &stop);
	}
	if (r != 0 || stop)
		goto out;
	/* --json keeps stdout to the one JSON document; a client's own may want no progress at all. */
	ks_cli_init(cl->program, !co->quiet && !(co->json && cl->own_json));
	ks_cli_set_json(co->json && !cl->own_json);
	if (optind != argc - 1) {
		help(cl, stderr);
		r = KS_EXIT_USAGE;
		goto out;
	}
	for (const struct ks_rc_command *k = cl->commands; k->name != NULL; k++)
		if (strcmp(k->name, argv[optind]) == 0)
			*cmd = k;
	if (*cmd == NULL)
		r = ks_die(KS_EXIT_USAGE, "unknown command '%s' (see --help)", argv[optind]);
out:
	free(longopts);
	return r;
}

int ks_rc_main(const struct ks_rc_client *cl, int argc, char **argv)
{
	const struct ks_rc_command *cmd;
	struct ks_rc_run run;
	struct ks_renewal rn;
	struct ks_cert_lock lock = { .fd = -1 };
	char err[KS_HTTPS_ERR_MAX];
	int r, have_rn = 0, have_https = 0;

	signal(SIGPIPE, SIG_IGN);
	if ((r = ks_rc_parse(cl, argc, argv, &cmd)) != 0 || cmd == NULL)
		return r;
	memset(&run, 0, sizeof(run));
	run.command = cmd->name;
	if (cl->check != NULL && (r = cl->check(cl->ctx, &run)) != 0)
		return r;
	/*
	 * The HTTPS library reaches keysvcd through the keysvc.so provider,
	 * which knows no --socket: it reads KEYSVC_SOCKET (as libkeysvc does).
	 * Set once here, before any command, so both use the same socket.
	 */
	if (cl->common_opts->socket != NULL && setenv(KEYSVC_SOCKET_ENV, cl->common_opts->socket, 1) != 0)
		return ks_die(KS_EXIT_INTERNAL, "setenv: %s", strerror(errno));
	if (cmd->flags & KS_RC_RENEWAL) {
		if ((r = ks_renewal_init(&rn, cl->inventory_client, cl->common_opts->inventory,
					 cl->common_opts->config)) != 0)
			goto out;
		have_rn = 1;
		run.renewal = &rn;
		/* Held until the inventory record is written: see certlock.h. */
		if (run.lock_path != NULL &&
		    (r = ks_cert_lock(run.lock_path, cl->common_opts->lock_wait_s, &lock)) != 0)
			goto out;
	}
	if (cmd->flags & KS_RC_HTTPS) {
		if (ks_https_init(cl->common_opts->provider_dir, err, sizeof(err)) != 0) {
			r = ks_die(KS_EXIT_INTERNAL, "%s", err);
			goto out;
		}
		have_https = 1;
	}
	r = cmd->run(cl->ctx, &run);
	if (have_rn && !run.recorded)
		r = ks_renewal_finish(&rn, r, run.cert, run.key, run.ca_file, run.crl);
out:
	if (have_https)
		ks_https_cleanup();
	ks_cert_unlock(&lock);
	if (have_rn)
		ks_renewal_free(&rn);
	if (cmd->flags & KS_RC_RESULT)
		r = ks_json_result(cmd->name, cmd->done, r, run.cert, run.key);
	return r;
}
