/*
 * The state file of keysvc-ucl: the pairing's id and key names, loading
 * (versions 1 and 2), saving, and making its paths absolute. See
 * ucl_state.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/climsg.h"
#include "clients/renew/ucl/ucl.h"
#include "clients/renew/ucl/ucl_state.h"

int ucl_key_base_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= KEY_BASE_MAX && s[0] != '.' && s[0] != '-' &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static int pairing_id_ok(const char *s)
{
	return strlen(s) == PAIRING_ID_LEN && strspn(s, "0123456789abcdef") == PAIRING_ID_LEN;
}

int ucl_new_pairing_id(char id[PAIRING_ID_LEN + 1])
{
	unsigned char rnd[PAIRING_ID_LEN / 2];

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return ks_die(KS_EXIT_INTERNAL, "no random bytes for a pairing id");
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(id + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

/* BASE.ID.N into @name (KEY_NAME_MAX + 1 bytes); base and id are checked when read. */
void ucl_key_name(char *name, const char *base, const char *id, long generation)
{
	snprintf(name, KEY_NAME_MAX + 1, "%s.%s.%ld", base, id, generation);
}

/*
 * 1 if @name carries this pairing's id: only such a key may be deleted or
 * reused, since no other state file can name it (an id-less key of a
 * version 1 state may be named by another state of the same base).
 */
int ucl_key_is_ours(const struct ucl_state *s, const char *name)
{
	size_t b = strlen(s->key_base);

	return s->pairing_id != NULL && strncmp(name, s->key_base, b) == 0 && name[b] == '.' &&
	       strncmp(name + b + 1, s->pairing_id, PAIRING_ID_LEN) == 0 && name[b + 1 + PAIRING_ID_LEN] == '.';
}

void ucl_state_free(struct ucl_state *s)
{
	free(s->pairing_id);
	free(s->unfinished_key);
	free(s->connector_url);
	free(s->mtls_url);
	free(s->director_url);
	free(s->server_ca_file);
	free(s->cert);
	free(s->chain);
	free(s->ca);
	free(s->key_base);
	free(s->key);
	free(s->previous_key);
	memset(s, 0, sizeof(*s));
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

char ucl_result_cert[PATH_MAX], ucl_result_key[KEY_NAME_MAX + 1];

static void note_result(const struct ucl_state *s)
{
	snprintf(ucl_result_cert, sizeof(ucl_result_cert), "%s", s->cert != NULL ? s->cert : "");
	snprintf(ucl_result_key, sizeof(ucl_result_key), "%s",
		 s->key != NULL ? s->key : s->unfinished_key != NULL ? s->unfinished_key : "");
}

/*
 * Read the state file @path: 0, or KS_EXIT_USAGE with the reason printed.
 * Paths of a version 1 file may be relative (see ucl_resolve_old_paths()); a
 * version 2 file's are absolute. The caller checks for an unfinished pairing.
 */
int ucl_state_load(const char *path, struct ucl_state *s)
{
	char err[KS_CI_ERR_MAX], *text = NULL, name[KEY_NAME_MAX + 1];
	const char *id = NULL, *unfinished = NULL, *cu = NULL, *mu = NULL, *du = NULL, *ca_file = NULL,
		   *cert = NULL, *chain = NULL, *ca = NULL, *base = NULL, *key = NULL, *prev = NULL;
	const char *bad = NULL;
	json_int_t version = 0, gen = 0;
	json_error_t jerr;
	json_t *root = NULL;
	size_t len;
	int r;

	memset(s, 0, sizeof(*s));
	if ((r = ks_ci_read_file(path, &text, &len, err)) < 0)
		return ks_die(KS_EXIT_USAGE, "state: %s (pair first)", err);
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL ||
	    json_unpack_ex(root, &jerr, JSON_STRICT,
			   "{s:I, s?s, s?s, s?s, s?s, s?s, s?s, s?s, s?s, s?s, s:s, s?I, s?s, s?s}",
			   "version", &version, "pairing_id", &id, "unfinished_key", &unfinished,
			   "connector_url", &cu, "mtls_url", &mu, "director_url", &du, "server_ca_file", &ca_file,
			   "cert", &cert, "chain", &chain, "ca", &ca, "key_base", &base, "generation", &gen,
			   "key", &key, "previous_key", &prev) != 0) {
		r = ks_die(KS_EXIT_USAGE, "state %s is not a keysvc-ucl state file: %s", path,
			   root == NULL || jerr.text[0] != '\0' ? jerr.text : "?");
		goto out;
	}
	if (version == 2 && unfinished != NULL) {
		if (id == NULL || cu != NULL || mu != NULL || du != NULL || ca_file != NULL || cert != NULL ||
		    chain != NULL || ca != NULL || gen != 0 || key != NULL || prev != NULL)
			bad = "an unfinished pairing has only pairing_id, key_base and unfinished_key";
		else if (!pairing_id_ok(id) || !ucl_key_base_ok(base))
			bad = "bad pairing_id or key_base";
		else if (ucl_key_name(name, base, id, 1), strcmp(unfinished, name) != 0)
			bad = "unfinished_key is not BASE.ID.1";
	} else if (version == 1 || version == 2) {
		if (cu == NULL || mu == NULL || ca_file == NULL || cert == NULL || chain == NULL || ca == NULL ||
		    gen == 0)
			bad = "a field is missing";
		else if (gen < 1 || gen > GENERATION_MAX)
			bad = "generation out of range";
		else if (version == 1 && (id != NULL || key != NULL || unfinished != NULL))
			bad = "pairing_id, key or unfinished_key in version 1";
		else if (version == 2 && (id == NULL || key == NULL || !pairing_id_ok(id)))
			bad = "bad or missing pairing_id or key";
		else if (version == 2 && (ca_file[0] != '/' || cert[0] != '/' || chain[0] != '/' || ca[0] != '/'))
			bad = "a relative path";
		else if (!ucl_key_base_ok(base))
			bad = "bad key_base";
	} else {
		bad = "unknown version";
	}
	if (bad == NULL && version == 2 && unfinished == NULL) {
		/* The current key: this pairing's, or the id-less one a migrated version 1 file named. */
		char old[KEY_NAME_MAX + 1];

		ucl_key_name(name, base, id, (long)gen);
		snprintf(old, sizeof(old), "%s.%ld", base, (long)gen);
		if (strcmp(key, name) != 0 && strcmp(key, old) != 0)
			bad = "key is not BASE.ID.generation";
	}
	if (bad != NULL) {
		r = ks_die(KS_EXIT_USAGE, "state %s is not a keysvc-ucl state file: %s", path, bad);
		goto out;
	}
	s->version = (int)version;
	s->pairing_id = dup_or_null(id);
	s->unfinished_key = dup_or_null(unfinished);
	s->connector_url = dup_or_null(cu);
	s->mtls_url = dup_or_null(mu);
	s->director_url = dup_or_null(du);
	s->server_ca_file = dup_or_null(ca_file);
	s->cert = dup_or_null(cert);
	s->chain = dup_or_null(chain);
	s->ca = dup_or_null(ca);
	s->key_base = strdup(base);
	s->generation = (long)gen;
	s->previous_key = dup_or_null(prev);
	if (version == 1) {
		snprintf(name, sizeof(name), "%s.%ld", base, (long)gen);
		s->key = strdup(name);
	} else {
		s->key = dup_or_null(key);
	}
	if (s->key_base == NULL || (unfinished == NULL && (s->cert == NULL || s->key == NULL))) {
		ucl_state_free(s);
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	note_result(s);
	r = 0;
out:
	json_decref(root);
	free(text);
	return r;
}

/* Write @s (version 2) to @path atomically, mode 0600: 0 or an exit code, printed. */
int ucl_state_save(const char *path, const struct ucl_state *s)
{
	char err[KS_CI_ERR_MAX], *text;
	json_t *o;
	int r;

	if (s->unfinished_key != NULL)
		o = json_pack("{s:i, s:s, s:s, s:s}", "version", 2, "pairing_id", s->pairing_id, "key_base",
			      s->key_base, "unfinished_key", s->unfinished_key);
	else
		o = json_pack("{s:i, s:s, s:s, s:s, s:s*, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s*}", "version", 2,
			      "pairing_id", s->pairing_id, "connector_url", s->connector_url, "mtls_url",
			      s->mtls_url, "director_url", s->director_url, "server_ca_file", s->server_ca_file,
			      "cert", s->cert, "chain", s->chain, "ca", s->ca, "key_base", s->key_base,
			      "generation", (json_int_t)s->generation, "key", s->key, "previous_key",
			      s->previous_key);
	text = o != NULL ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(o);
	if (text == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	r = ks_ci_install(path, text, strlen(text), 0600, err);
	free(text);
	if (r < 0)
		return ks_die(KS_EXIT_INTERNAL, "%s", err);
	note_result(s);
	return 0;
}

/*
 * @path made absolute in @out (malloc'd) from the real path of its
 * directory, which must exist; the file itself need not. The service runs
 * in /, so a path relative to where pair ran would not be found. 0 or
 * KS_EXIT_USAGE with the reason printed (@what names the option).
 */
int ucl_absolute_path(const char *what, const char *path, char **out)
{
	const char *slash = strrchr(path, '/'), *file = slash != NULL ? slash + 1 : path;
	char *dir, *real;
	int r;

	*out = NULL;
	if (*file == '\0' || strcmp(file, ".") == 0 || strcmp(file, "..") == 0)
		return ks_die(KS_EXIT_USAGE, "%s %s: not a file name", what, path);
	dir = slash == NULL ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
	if (dir == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	if ((real = realpath(dir, NULL)) == NULL) {
		r = ks_die(KS_EXIT_USAGE, "%s %s: %s: %s", what, path, dir, strerror(errno));
		free(dir);
		return r;
	}
	free(dir);
	r = asprintf(out, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", file) < 0 ? -1 : 0;
	free(real);
	if (r < 0) {
		*out = NULL;
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	}
	return 0;
}

/*
 * A version 1 state holds pair's paths as given, perhaps relative to the
 * directory pair ran in, which is not recorded. They are looked up from
 * the current directory (where version 1 looked), then from the state
 * file's directory and each of its parents: the first directory from which
 * every relative path exists is taken, and the paths made absolute with it.
 * 0 or KS_EXIT_USAGE, printed.
 */
/* @base/@rel into *@out (malloc'd); "/" as @base gives "/@rel". 0 or -1 when out of memory. */
static int join_path(const char *base, const char *rel, char **out)
{
	return asprintf(out, "%s/%s", strcmp(base, "/") == 0 ? "" : base, rel) < 0 ? -1 : 0;
}

int ucl_resolve_old_paths(const char *state_path, struct ucl_state *s)
{
	char **paths[] = { &s->server_ca_file, &s->cert, &s->chain, &s->ca };
	const size_t n = sizeof(paths) / sizeof(paths[0]);
	char *state_real = NULL, *base = NULL, *cut;
	int r, relative = 0, found = 0;

	for (size_t i = 0; i < n; i++)
		relative |= (*paths[i])[0] != '/';
	if (!relative)
		return 0;
	if ((base = getcwd(NULL, 0)) == NULL)
		return ks_die(KS_EXIT_USAGE, "the current directory: %s", strerror(errno));
	state_real = realpath(state_path, NULL);
	for (int candidate = 0; !found;) {
		found = 1;
		for (size_t i = 0; i < n && found; i++) {
			char *p;

			if ((*paths[i])[0] == '/')
				continue;
			if (join_path(base, *paths[i], &p) != 0) {
				r = ks_die(KS_EXIT_INTERNAL, "out of memory");
				goto out;
			}
			found = access(p, F_OK) == 0;
			free(p);
		}
		if (found)
			break;
		/* Next: the state file's directory, then up to /. */
		if (candidate++ == 0) {
			free(base);
			base = state_real != NULL ? strdup(state_real) : NULL;
		}
		if (base == NULL || strcmp(base, "/") == 0 || (cut = strrchr(base, '/')) == NULL)
			break;
		if (cut == base)
			cut[1] = '\0';
		else
			*cut = '\0';
	}
	if (!found) {
		r = ks_die(KS_EXIT_USAGE, "state %s (written by an earlier keysvc-ucl) names relative paths that "
			   "exist neither from the current directory nor from the state file's directory or a "
			   "parent: run renew once from the directory pair ran in, or make them absolute in it",
			   state_path);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char *p;

		if ((*paths[i])[0] == '/')
			continue;
		if (join_path(base, *paths[i], &p) != 0) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		free(*paths[i]);
		*paths[i] = p;
	}
	ks_say("state %s: its relative paths found from %s", state_path, base);
	r = 0;
out:
	free(base);
	free(state_real);
	return r;
}
