/*
 * The state file of keysvc-ucl (ucl_state.c): what pair writes and renew
 * and revoke read, the key names it implies, and the certificate and key
 * the last state read or written names. keysvc-ucl.c holds the commands.
 * Functions returning an exit code print the reason (ks_die()).
 */
#ifndef KEYSVC_UCL_STATE_H
#define KEYSVC_UCL_STATE_H

#include <limits.h>

#include "proto/wire.h"

#define KEY_BASE_MAX 48

/*
 * Key names: BASE.ID.N, ID the pairing's id (below), N the generation, N at
 * most GENERATION_MAX so that the longest name fits keysvcd's 64 bytes.
 */
#define PAIRING_ID_LEN 8
#define GENERATION_MAX 999999L
#define KEY_NAME_MAX (KEY_BASE_MAX + 1 + PAIRING_ID_LEN + 1 + 6)
_Static_assert(KEY_NAME_MAX <= KS_KEY_NAME_MAX, "a key name keysvcd accepts");

/*
 * What pair writes and renew reads (the state file, JSON). Version 2; a
 * version 1 file (earlier keysvc-ucl: no pairing id, keys BASE.N, paths as
 * given on pair's command line) is read too and migrated by renew.
 */
struct ucl_state {
	int version;
	/*
	 * Random, made by pair and written before any key is: the proof that a
	 * key named BASE.ID.N is this pairing's. NULL for a version 1 file.
	 */
	char *pairing_id;
	/*
	 * Set when pair made (or was about to make) this key and did not
	 * finish: the only field besides the id and the base. pair run again
	 * with the same --state reuses it; renew and revoke refuse the file.
	 */
	char *unfinished_key;
	char *connector_url;          /* the token-secured Connector (pairing) */
	char *mtls_url;               /* certificateSecuredConnectorURL (renewal, revocation) */
	char *director_url;
	char *server_ca_file;         /* pinned trust for the connectors' TLS */
	char *cert, *chain, *ca;      /* installed files, absolute paths */
	char *key_base;
	long generation;
	char *key;                    /* current key: BASE.ID.generation (BASE.generation from version 1) */
	char *previous_key;           /* kept for one rollback; NULL if none */
};


/*
 * The certificate and key the last state read or written names: what
 * --json reports, since renew and revoke take them from the state.
 */
extern char ucl_result_cert[PATH_MAX], ucl_result_key[KEY_NAME_MAX + 1];

/* 1 when @s is a usable --key-base: 1..KEY_BASE_MAX of A-Z a-z 0-9 _ -, not starting with . or -. */
int ucl_key_base_ok(const char *s);

/* A fresh random pairing id into @id; 0 or an exit code. */
int ucl_new_pairing_id(char id[PAIRING_ID_LEN + 1]);

/* BASE.ID.N into @name (KEY_NAME_MAX + 1 bytes); base and id are checked when read. */
void ucl_key_name(char *name, const char *base, const char *id, long generation);

/*
 * 1 if @name carries this pairing's id: only such a key may be deleted or
 * reused, since no other state file can name it.
 */
int ucl_key_is_ours(const struct ucl_state *s, const char *name);

/* Free every field of @s and zero it. */
void ucl_state_free(struct ucl_state *s);

/*
 * Read the state file @path: 0, or KS_EXIT_USAGE with the reason printed.
 * Paths of a version 1 file may be relative (see
 * ucl_resolve_old_paths()); a version 2 file's are absolute. The caller
 * checks for an unfinished pairing.
 */
int ucl_state_load(const char *path, struct ucl_state *s);

/* Write @s (version 2) to @path atomically, mode 0600: 0 or an exit code. */
int ucl_state_save(const char *path, const struct ucl_state *s);

/*
 * @path made absolute in @out (malloc'd) from the real path of its
 * directory, which must exist; the file itself need not. 0 or
 * KS_EXIT_USAGE (@what names the option).
 */
int ucl_absolute_path(const char *what, const char *path, char **out);

/*
 * Make the relative paths of a version 1 state @s absolute, looked up
 * from the current directory, then the directory of @state_path and each
 * of its parents. 0 or KS_EXIT_USAGE.
 */
int ucl_resolve_old_paths(const char *state_path, struct ucl_state *s);

#endif
