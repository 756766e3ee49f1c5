/*
 * The renewal clients' skeleton: what every client's main() did alike, in
 * one place. A client is a table (struct ks_rc_client): its program name,
 * usage text, own long options and their handler, a check run once the
 * command is known, and its commands. ks_rc_main() then does the rest:
 *
 *   parse the client's and the common options (no prefix of a long
 *   option accepted), --version and --help (usage + the exit-code table),
 *   one COMMAND word, the client's check, KEYSVC_SOCKET for the provider,
 *   then per command: the configuration and inventory, the per-certificate
 *   lock, the HTTPS library, the command, the inventory record, the
 *   --json result object, and the cleanup in reverse.
 *
 * A fifth client is a protocol file and a short main() that fills the table.
 */
#ifndef KEYSVC_CLIENTS_RENEWCLI_H
#define KEYSVC_CLIENTS_RENEWCLI_H

#include <getopt.h>
#include <stdio.h>

#include "clients/renew/common/push.h"

/* Which common options a client takes (struct ks_rc_client.common). */
enum {
	KS_RC_OPT_SOCKET = 1 << 0,      /* --socket PATH */
	KS_RC_OPT_INVENTORY = 1 << 1,   /* --inventory DIR and --config FILE */
	KS_RC_OPT_LOCK_WAIT = 1 << 2,   /* --lock-wait SECONDS */
	/* --timeout, --insecure, --quiet, --json, --provider-dir, --version and --help: every client. */
};

/* What ks_rc_main() does around a command (struct ks_rc_command.flags). */
enum {
	KS_RC_HTTPS = 1 << 0,     /* ks_https_init() before, ks_https_cleanup() after */
	KS_RC_RENEWAL = 1 << 1,   /* configuration and inventory loaded, run->lock_path locked, the record
				   * written after the command (unless run->recorded) */
	KS_RC_RESULT = 1 << 2,    /* with --json, the result object (ks_json_result()) at the end */
};

/* The common options, parsed into the client's struct (struct ks_rc_client.common_opts). */
struct ks_rc_opts {
	const char *socket, *inventory, *config, *provider_dir;
	long timeout_s;           /* --timeout, 1..3600 (default 60) */
	long lock_wait_s;         /* --lock-wait (default KS_CERT_LOCK_WAIT_DEFAULT_S) */
	int insecure, quiet, json;
};

/*
 * One command's run. The client's check sets lock_path, cert and key; the
 * command may change cert and key (the result object and the record show
 * them after the run) and sets ca_file/crl for the record.
 */
struct ks_rc_run {
	const char *command;          /* the COMMAND word */
	struct ks_renewal *renewal;   /* with KS_RC_RENEWAL, for a command that records itself; else NULL */
	const char *lock_path;        /* with KS_RC_RENEWAL: the file whose lock is held; NULL: none */
	const char *cert, *key;       /* in the record and the result object; NULL: none */
	const char *ca_file, *crl;    /* in the record (NULL: keep what it has) */
	int recorded;                 /* the command wrote the record itself (or must not write one) */
};

struct ks_rc_command {
	const char *name;             /* the COMMAND word */
	const char *done;             /* the result object's "outcome" on success ("renewed") */
	unsigned flags;               /* KS_RC_* */
	/* An exit code (a ks_exit value), the reason printed. */
	int (*run)(void *ctx, struct ks_rc_run *run);
};

struct ks_rc_client {
	const char *program;          /* "keysvc-openvox": messages, --version */
	const char *inventory_client; /* the client's name in inventory records ("openvox") */
	unsigned common;              /* KS_RC_OPT_* taken besides those every client takes */
	/*
	 * --json is the client's own document: it silences progress (instead
	 * of moving it to stderr) and no result object is printed.
	 */
	int own_json;
	void (*usage)(FILE *f);       /* the usage text; the exit-code table is added after it */
	/* The client's own long options, each val in [256, KS_RC_OPT_VAL_MIN), ending with a zero entry. */
	const struct option *options;
	/* One of @options with its argument (NULL if none): 0, or an exit code with the reason printed. */
	int (*option)(void *ctx, int val, const char *arg);
	/*
	 * Once the options and COMMAND are known: the checks across options,
	 * and run->lock_path, cert and key. 0, or an exit code with the reason
	 * printed. May be NULL.
	 */
	int (*check)(void *ctx, struct ks_rc_run *run);
	const struct ks_rc_command *commands;  /* ending with a zero entry */
	struct ks_rc_opts *common_opts;        /* where the common options go (preset defaults are kept) */
	void *ctx;                             /* the client's options, passed to the callbacks */
};

/* Values of the common options in the merged table: the clients' own stay below. */
#define KS_RC_OPT_VAL_MIN 0x10000

/*
 * Parse @argv for @client: *@cmd is the command to run and KS_EXIT_OK
 * returned; or *@cmd NULL and the exit code main() returns: KS_EXIT_OK
 * after --version or --help, KS_EXIT_USAGE (with usage or the reason on
 * stderr) for an unknown or abbreviated option, a bad value, no or more
 * than one COMMAND word, an unknown command, or what the client's option
 * handler returned. Starts getopt afresh (optind 0), so it may be called
 * more than once in a process. Sets ks_cli_init() and ks_cli_set_json().
 */
int ks_rc_parse(const struct ks_rc_client *client, int argc, char **argv, const struct ks_rc_command **cmd);

/*
 * The whole of a client's main(): ks_rc_parse(), the client's check,
 * KEYSVC_SOCKET for --socket, and the command with what its flags ask
 * for. Returns the exit code.
 */
int ks_rc_main(const struct ks_rc_client *client, int argc, char **argv);

#endif
