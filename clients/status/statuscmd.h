/*
 * `keysvc status`, `keysvc verify` and `keysvc track` (statuscmd.c, verify.c,
 * track.c), called by the keysvc CLI with the command's own arguments
 * (argv[0] is the command name). They parse their options themselves and
 * return their exit codes (status.h).
 */
#ifndef KEYSVC_CLIENTS_STATUSCMD_H
#define KEYSVC_CLIENTS_STATUSCMD_H

/* The keysvc CLI's options before the command. */
struct ks_cmd_global {
	const char *socket;         /* NULL: libkeysvc's default */
	int json;                   /* keysvc --json COMMAND */
	int timeout_ms;             /* -1: libkeysvc's default */
};

int ks_status_main(int argc, char **argv, const struct ks_cmd_global *g);
int ks_verify_main(int argc, char **argv, const struct ks_cmd_global *g);

/*
 * `keysvc track NAME --cert FILE [--key KEY] ...`: a certificate made by
 * hand added to the inventory once keysvcd confirms FILE is for key KEY
 * (default NAME). A NAME or FILE already recorded is refused, so an entry
 * is never overwritten by mistake. Exit codes in ks_track_usage.
 */
int ks_track_main(int argc, char **argv, const struct ks_cmd_global *g);

extern const char ks_status_usage[];
extern const char ks_verify_usage[];
extern const char ks_track_usage[];

#endif
