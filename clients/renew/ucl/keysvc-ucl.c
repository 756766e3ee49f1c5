/*
 * keysvc-ucl: pairing with the Kyma / UCL Connector and renewal of the
 * client certificate, every key made and kept in the token by keysvcd.
 *
 *   pair     one-time token -> configuration (subject, key algorithm, the
 *            Certificate-Secured Connector URL, a fresh token) -> key and
 *            CSR in the token -> signCertificateSigningRequest -> check
 *            (against --issuer-ca, else the answer's CA on first use),
 *            install certificate, chain and CA; remember it all in a state
 *            file.
 *   renew    the same two calls over mutual TLS with the current
 *            certificate, a NEW key (as the connector asks), and the key
 *            before the previous one deleted only once the new certificate
 *            is installed: the previous key stays for one rollback. The
 *            new certificate and CA must chain to the installed CA.
 *   revoke   revokeCertificate over mutual TLS.
 *
 * Keys are named BASE.ID.N: ID is the pairing's random id, written to the
 * state file before its first key is made, N the generation. A key is
 * reused or deleted only if it carries this state's id, so pairings that
 * share a base never touch each other's keys. The state file says which
 * key is current and holds absolute paths (the service runs in /).
 * Nothing is installed before it is checked, and a failure leaves the
 * installed files and the state as they were (a pairing that made its key
 * leaves a state naming it, which pair run again reuses).
 *
 * This file holds the connector calls and the commands; the state file
 * and the key names are ucl_state.c (ucl_state.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "clients/renew/common/certinstall.h"
#include "clients/renew/common/certlock.h"
#include "clients/renew/common/climsg.h"
#include "clients/renew/common/cliopt.h"
#include "clients/renew/common/clihttps.h"
#include "clients/renew/common/clikeysvc.h"
#include "clients/renew/common/push.h"
#include "clients/renew/common/renewcli.h"
#include "clients/renew/https/https.h"
#include "keysvc/keysvc.h"
#include "clients/renew/ucl/ucl.h"
#include "clients/renew/ucl/ucl_state.h"

#define TOKEN_MAX 4096

struct opts {
	struct ks_rc_opts c;
	const char *connector_url, *token_file, *ca_file, *issuer_ca, *key_base, *cert, *chain, *ca_out, *state;
	long share;
	int when_due;
};

static void usage(FILE *f)
{
	fputs("Usage: keysvc-ucl COMMAND [options]\n"
	      "\n"
	      "Pairs with a Kyma / UCL Connector and renews the client certificate; every key\n"
	      "is made and kept in the token by keysvcd.\n"
	      "\n"
	      "  pair   --connector-url URL --token-file FILE --ca-file CA --state FILE\n"
	      "         --cert FILE --chain FILE --ca-out FILE [--issuer-ca FILE] [--key-base NAME]\n"
	      "  renew  --state FILE [--when-due] [--renew-share PERCENT]\n"
	      "  revoke --state FILE\n"
	      "\n"
	      "Options:\n"
	      "  --connector-url URL   the Connector's GraphQL URL (token-secured; pair only)\n"
	      "  --token-file FILE     the one-time token from UCL, in a file of mode 0600\n"
	      "  --ca-file CA          pinned CA bundle for the connectors' TLS (kept in the state)\n"
	      "  --issuer-ca FILE      pair: the CA that must issue the client certificate; the answer's\n"
	      "                        caCertificate must be it or chain to it (without it, that\n"
	      "                        caCertificate is trusted on first use). renew always checks\n"
	      "                        against the installed CA (--ca-out)\n"
	      "  --state FILE          where the connector URLs, files (as absolute paths) and key\n"
	      "                        names are kept; pair resumes an unfinished pairing in it\n"
	      "  --cert/--chain/--ca-out FILE  installed client certificate, chain, CA certificate\n"
	      "  --key-base NAME       keysvc keys are NAME.ID.1, NAME.ID.2, ..., ID the pairing's\n"
	      "                        random id kept in the state (default NAME: ucl)\n"
	      "  --when-due            renew only when less than --renew-share of the validity is left\n"
	      "  --renew-share PERCENT default 30\n"
	      "  --socket PATH         keysvcd socket (default $KEYSVC_SOCKET, then /run/keysvc/keysvc.sock)\n"
	      "  --timeout SECONDS     per HTTPS request (default 60)\n"
	      "  --insecure            do not verify the connector's TLS certificate (prints a warning)\n"
	      "  --quiet               errors only\n"
	      "  --inventory DIR       where pair and renew record their outcome (default\n"
	      "                        $KEYSVC_INVENTORY, the configuration's, /var/lib/keysvc-inventory)\n"
	      "  --config FILE         reload hook and endpoints to verify after installing\n"
	      "                        (default /etc/keysvc/certs.json if it exists)\n"
	      "  --lock-wait SECONDS   wait this long for another run on the same --state (default 60)\n"
	      "  --json                print the outcome as one JSON object on stdout (progress on stderr)\n"
	      "  --version             print the version\n", f);
}

/* ---- the connector ---- */

/*
 * POST a GraphQL body; 0 with an HTTP 200 answer in @resp, or an exit code.
 * Another status with GraphQL errors in the body (gqlgen's 422 for a
 * document it cannot parse or validate) is reported with their messages.
 */
static int graphql(const struct ks_https_opts *h, const char *url, const char *token, const char *body,
		   struct ks_https_response *resp)
{
	char *token_hdr = NULL;
	const char *headers[4] = { "Content-Type: application/json", "Accept: application/json", NULL, NULL };
	int r;

	if (token != NULL) {
		if (asprintf(&token_hdr, UCL_TOKEN_HEADER ": %s", token) < 0)
			return ks_die(KS_EXIT_INTERNAL, "out of memory");
		headers[2] = token_hdr;
	}
	r = ks_https_request(h, "POST", url, headers, body, strlen(body), resp);
	if (token_hdr != NULL)
		OPENSSL_clear_free(token_hdr, strlen(token_hdr));
	if (r < 0)
		return ks_die(ks_https_exit(r, resp), "POST %s: %s", url, resp->err);
	if (resp->status != 200) {
		char err[UCL_ERR_MAX];

		if (ucl_parse_errors(resp->body, resp->body_len, err) == -EREMOTEIO)
			return ks_die(KS_EXIT_CA_REFUSED, "POST %s: HTTP %ld: %s", url, resp->status, err);
		return ks_die(KS_EXIT_CA_REFUSED, "POST %s: HTTP %ld", url, resp->status);
	}
	return 0;
}

static int answer_exit(int r)
{
	return r == -EREMOTEIO ? KS_EXIT_CA_REFUSED : r == -ENOMEM ? KS_EXIT_INTERNAL : KS_EXIT_CA_ANSWER;
}

static int read_token(const char *path, char *token, size_t len)
{
	size_t n;
	int r;

	if ((r = ks_read_secret_file("--token-file", path, token, len, &n)) != 0)
		return r;
	while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' '))
		token[--n] = '\0';
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)token[i] < 0x21 || token[i] == 0x7f)
			return ks_die(KS_EXIT_USAGE, "--token-file %s: the token has a control character or space",
				      path);
	return n > 0 ? 0 : ks_die(KS_EXIT_USAGE, "--token-file %s: empty", path);
}

/*
 * Key @name (this pairing's: the caller proved it) of keysvc type @type,
 * its public key in @pub: made if missing; an existing one was made by an
 * attempt of this pairing that did not finish, and is reused if of @type,
 * else replaced. 0 or an exit code, printed.
 */
static int make_key(keysvc *ks, const char *name, const char *type, EVP_PKEY **pub)
{
	char *pem = NULL, *have = NULL;
	int r;

	r = keysvc_key_public(ks, name, NULL, &have);
	if (r == KEYSVC_OK) {
		int same = have != NULL && strcmp(have, type) == 0;

		if (same) {
			ks_say("reusing key %s (%s), made by an unfinished attempt of this pairing", name, type);
		} else if ((r = keysvc_key_delete(ks, name)) != KEYSVC_OK) {
			r = ks_die(ks_exit_for_keysvc(r), "key %s of an unfinished attempt is %s, not %s, and cannot be "
				   "deleted: %s: %s", name, have != NULL ? have : "?", type, keysvc_strerror(r),
				   keysvc_error_message(ks));
			free(have);
			return r;
		} else {
			ks_say("deleted key %s of an unfinished attempt: it is %s, the connector now asks for %s",
			       name, have != NULL ? have : "?", type);
			r = KEYSVC_E_NO_SUCH_KEY;
		}
		free(have);
	}
	if (r == KEYSVC_E_NO_SUCH_KEY) {
		/* A CSR for the connector and the mutual TLS handshakes with it: nothing else. */
		if ((r = keysvc_key_generate_purposes(ks, name, type, "csr,tls", &pem)) != KEYSVC_OK)
			return ks_die(ks_exit_for_keysvc(r), "generating key %s (%s): %s: %s", name, type,
				      keysvc_strerror(r), keysvc_error_message(ks));
		free(pem);
		ks_say("generated key %s (%s) in the token", name, type);
	} else if (r != KEYSVC_OK) {
		return ks_die(ks_exit_for_keysvc(r), "key %s: %s: %s", name, keysvc_strerror(r), keysvc_error_message(ks));
	}
	return ks_cli_public_key(ks, name, pub, 0);
}

/* keysvc's key type for the connector's @alg, or NULL with the reason printed. */
static const char *key_type_of(const char *alg)
{
	const char *type = ucl_key_type(alg);

	if (type == NULL)
		ks_die(KS_EXIT_CA_ANSWER, "the connector asks for key algorithm \"%.40s\", which keysvc "
		       "cannot make (it makes rsa2048, rsa3072, rsa4096)", alg);
	return type;
}

/*
 * CSR for @key with exactly @subject, signed by the connector at @url
 * (@token for the token-secured Connector, NULL over mutual TLS), its
 * answer checked, then installed: CA, chain, certificate, all or none.
 *
 * Trust: @anchors are the CA certificates the answer must chain to (on
 * renewal the CA installed at pairing, at pairing an --issuer-ca the
 * operator pinned). Every certificate of the answer's caCertificate and of
 * its chain must be one of them or a CA verifying up to one: a connector
 * (or whoever answers in its name) cannot bring a CA of its own. @anchors
 * NULL (pairing without --issuer-ca): the answer's caCertificate is trusted
 * on first use, having come over the verified TLS connection. @what names
 * the anchors in messages.
 */
static int sign_and_install(keysvc *ks, const struct ks_https_opts *h, const char *url, const char *token,
			    const char *key, EVP_PKEY *pub, const char *subject, const struct ucl_state *st,
			    STACK_OF(X509) *anchors, const char *what)
{
	struct keysvc_csr_params params;
	struct ks_https_response resp;
	struct ucl_certs certs;
	STACK_OF(X509) *ca = NULL, *chain = NULL, *vouched = NULL, *above = NULL;
	X509 *client = NULL;
	char err[KS_CI_ERR_MAX], *csr = NULL, *body = NULL, until[64];
	int r, left_out;

	memset(&resp, 0, sizeof(resp));
	memset(&certs, 0, sizeof(certs));
	memset(&params, 0, sizeof(params));
	params.subject = subject;
	if ((r = keysvc_csr_create(ks, key, &params, &csr)) != KEYSVC_OK) {
		r = ks_die(r == KEYSVC_E_BAD_REQUEST ? KS_EXIT_CA_ANSWER : ks_exit_for_keysvc(r),
			   "CSR with subject \"%.200s\": %s: %s", subject, keysvc_strerror(r),
			   keysvc_error_message(ks));
		goto out;
	}
	if ((body = ucl_sign_request(csr)) == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	if ((r = graphql(h, url, token, body, &resp)) != 0)
		goto out;
	if ((r = ucl_parse_certs(resp.body, resp.body_len, &certs, err)) < 0) {
		r = ks_die(answer_exit(r), "signCertificateSigningRequest: %s", err);
		goto out;
	}
	if ((r = ks_ci_parse_one(certs.client_pem, certs.client_len, &client, err)) < 0 ||
	    (r = ks_ci_parse_bundle(certs.ca_pem, certs.ca_len, &ca, err)) < 0 ||
	    (r = ks_ci_parse_bundle(certs.chain_pem, certs.chain_len, &chain, err)) < 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the connector's certificates: %s", err);
		goto out;
	}
	if (X509_cmp(sk_X509_value(chain, 0), client) != 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the certificate chain does not start with the client certificate");
		goto out;
	}
	/* The chain's CA certificates, after the client certificate. */
	if ((above = sk_X509_dup(chain)) == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	(void)sk_X509_shift(above);
	if (anchors != NULL) {
		if ((left_out = ks_ci_vouched(ca, anchors, above, 0, &vouched, err)) < 0) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		if (left_out > 0) {
			r = ks_die(KS_EXIT_CA_ANSWER, "the connector's caCertificate (%s) does not chain to %s: "
				   "nothing installed; if the connector's CA was replaced, pair again", err, what);
			goto out;
		}
	}
	{
		struct ks_ci_expect exp = { .public_key = pub, .trusted = anchors != NULL ? anchors : ca };
		STACK_OF(X509) *pool = NULL;

		/* The client certificate, through the chain's and caCertificate's CAs as intermediates. */
		if ((pool = sk_X509_dup(above)) == NULL) {
			r = ks_die(KS_EXIT_INTERNAL, "out of memory");
			goto out;
		}
		for (int i = 0; i < sk_X509_num(ca); i++)
			if (!sk_X509_push(pool, sk_X509_value(ca, i))) {
				sk_X509_free(pool);
				r = ks_die(KS_EXIT_INTERNAL, "out of memory");
				goto out;
			}
		r = ks_ci_check(client, pool, &exp, err);
		sk_X509_free(pool);
		if (r < 0 || (r = ucl_subject_matches(client, subject, err)) < 0) {
			r = ks_die(KS_EXIT_CA_ANSWER, "the connector's certificate is not installed: %s", err);
			goto out;
		}
		/* Nothing in the chain file that the trusted CA does not vouch for. */
		sk_X509_pop_free(vouched, X509_free);
		vouched = NULL;
		if ((left_out = ks_ci_vouched(above, exp.trusted, ca, 0, &vouched, err)) != 0) {
			r = left_out < 0 ? ks_die(KS_EXIT_INTERNAL, "out of memory") :
			    ks_die(KS_EXIT_CA_ANSWER, "the certificate chain holds a certificate (%s) that does "
				   "not chain to %s: nothing installed", err, anchors != NULL ? what :
				   "the connector's caCertificate");
			goto out;
		}
	}
	{
		/* The certificate last: should its rename fail, the other two are put back. */
		struct ks_ci_file files[] = {
			{ st->ca, certs.ca_pem, certs.ca_len, 0644 },
			{ st->chain, certs.chain_pem, certs.chain_len, 0644 },
			{ st->cert, certs.client_pem, certs.client_len, 0644 },
		};

		if ((r = ks_ci_install_all(files, sizeof(files) / sizeof(files[0]), err)) < 0) {
			r = ks_die(KS_EXIT_INTERNAL, "%s (nothing installed)", err);
			goto out;
		}
	}
	ks_ci_format_time(X509_get0_notAfter(client), until, sizeof(until));
	ks_say("installed %s (key %s, valid until %s), %s and %s", st->cert, key, until, st->chain, st->ca);
	r = 0;
out:
	X509_free(client);
	sk_X509_pop_free(ca, X509_free);
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(vouched, X509_free);
	sk_X509_free(above);
	ucl_certs_free(&certs);
	ks_https_response_free(&resp);
	free(csr);
	free(body);
	return r;
}

/*
 * The pairing's id and first key: those of the unfinished attempt @path
 * holds, else a new id, written to @path (as an unfinished pairing) before
 * the key is made, so that the key is reused only by a pair run with this
 * state file. A new id whose key already exists (another pairing's id of
 * the same base) is not taken. 0 or an exit code, printed.
 */
static int pairing_start(const struct opts *o, keysvc *ks, const struct ucl_state *prior, struct ucl_state *st)
{
	char id[PAIRING_ID_LEN + 1], name[KEY_NAME_MAX + 1], *have = NULL;
	int r, tries;

	if (prior->unfinished_key != NULL) {
		if ((st->pairing_id = strdup(prior->pairing_id)) == NULL ||
		    (st->key = strdup(prior->unfinished_key)) == NULL)
			return ks_die(KS_EXIT_INTERNAL, "out of memory");
		return 0;
	}
	for (tries = 0;; tries++) {
		if ((r = ucl_new_pairing_id(id)) != 0)
			return r;
		ucl_key_name(name, o->key_base, id, 1);
		r = keysvc_key_public(ks, name, NULL, &have);
		free(have);
		have = NULL;
		if (r == KEYSVC_E_NO_SUCH_KEY)
			break;
		if (r != KEYSVC_OK)
			return ks_die(ks_exit_for_keysvc(r), "key %s: %s: %s", name, keysvc_strerror(r),
				      keysvc_error_message(ks));
		if (tries == 8)
			return ks_die(KS_EXIT_INTERNAL, "no unused pairing id for --key-base %s", o->key_base);
	}
	if ((st->pairing_id = strdup(id)) == NULL || (st->key = strdup(name)) == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	{
		struct ucl_state unfinished = { .version = 2, .pairing_id = st->pairing_id, .key_base = st->key_base,
					    .unfinished_key = st->key };

		return ucl_state_save(o->state, &unfinished);
	}
}

static int cmd_pair(const struct opts *o, struct ks_renewal *rn)
{
	struct ks_https_opts h;
	struct ks_https_response resp;
	struct ucl_config conf;
	struct ucl_state st, prior;
	char token[TOKEN_MAX], err[KS_CI_ERR_MAX], *body = NULL;
	const char *type;
	STACK_OF(X509) *issuer = NULL;
	EVP_PKEY *pub = NULL;
	keysvc *ks = NULL;
	int r;

	memset(&resp, 0, sizeof(resp));
	memset(&conf, 0, sizeof(conf));
	memset(&st, 0, sizeof(st));
	memset(&prior, 0, sizeof(prior));
	if (access(o->state, F_OK) == 0) {
		if ((r = ucl_state_load(o->state, &prior)) != 0)
			goto out;
		if (prior.unfinished_key == NULL) {
			r = ks_die(KS_EXIT_USAGE, "%s exists: already paired; use renew, or move the state away "
				   "to pair anew", o->state);
			goto out;
		}
		if (strcmp(prior.key_base, o->key_base) != 0) {
			r = ks_die(KS_EXIT_USAGE, "%s holds an unfinished pairing with --key-base %s (key %s): "
				   "pair with that base, or delete the key and the state", o->state,
				   prior.key_base, prior.unfinished_key);
			goto out;
		}
	}
	if ((r = ucl_absolute_path("--cert", o->cert, &st.cert)) != 0 ||
	    (r = ucl_absolute_path("--chain", o->chain, &st.chain)) != 0 ||
	    (r = ucl_absolute_path("--ca-out", o->ca_out, &st.ca)) != 0 ||
	    (r = ucl_absolute_path("--ca-file", o->ca_file, &st.server_ca_file)) != 0)
		goto out;
	if ((r = read_token(o->token_file, token, sizeof(token))) != 0)
		goto out;
	if ((r = ks_open_keysvc(o->c.socket, &ks)) != 0)
		goto out;
	ks_https_ca_opts(&h, o->ca_file, o->c.timeout_s, o->c.insecure, NULL, NULL, NULL, 0);
	if ((body = ucl_config_request(1)) == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	if ((r = graphql(&h, o->connector_url, token, body, &resp)) != 0)
		goto out;
	OPENSSL_cleanse(token, sizeof(token));
	if ((r = ucl_parse_config(resp.body, resp.body_len, &conf, err)) < 0) {
		r = ks_die(answer_exit(r), "configuration: %s", err);
		goto out;
	}
	if (conf.token == NULL || conf.connector_url == NULL || strncmp(conf.connector_url, "https://", 8) != 0) {
		r = ks_die(KS_EXIT_CA_ANSWER, "the configuration has no new token or no https "
			   "certificateSecuredConnectorURL");
		goto out;
	}
	ks_say("paired as \"%s\"; the connector asks for %s", conf.subject, conf.key_algorithm);
	st.version = 2;
	st.connector_url = strdup(o->connector_url);
	st.mtls_url = strdup(conf.connector_url);
	st.director_url = conf.director_url != NULL ? strdup(conf.director_url) : NULL;
	st.key_base = strdup(o->key_base);
	st.generation = 1;
	if (st.connector_url == NULL || st.mtls_url == NULL || st.key_base == NULL ||
	    (conf.director_url != NULL && st.director_url == NULL)) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	if (o->issuer_ca != NULL && (r = ks_ci_load_bundle(o->issuer_ca, &issuer, err)) < 0) {
		r = ks_die(KS_EXIT_USAGE, "--issuer-ca %s: %s", o->issuer_ca, err);
		goto out;
	}
	if ((type = key_type_of(conf.key_algorithm)) == NULL) {
		r = KS_EXIT_CA_ANSWER;
		goto out;
	}
	if ((r = pairing_start(o, ks, &prior, &st)) != 0 || (r = make_key(ks, st.key, type, &pub)) != 0)
		goto out;
	if (issuer == NULL)
		ks_say("no --issuer-ca: trusting the connector's caCertificate on first use");
	if ((r = sign_and_install(ks, &h, o->connector_url, conf.token, st.key, pub, conf.subject, &st, issuer,
				  o->issuer_ca)) != 0)
		goto out;
	r = ucl_state_save(o->state, &st);
	if (r == 0)
		ks_say("state kept in %s (pairing id %s)", o->state, st.pairing_id);
out:
	r = ks_renewal_finish(rn, r, st.cert != NULL ? st.cert : o->cert, st.key, st.ca != NULL ? st.ca : o->ca_out,
			      NULL);
	sk_X509_pop_free(issuer, X509_free);
	OPENSSL_cleanse(token, sizeof(token));
	if (conf.token != NULL)
		OPENSSL_cleanse(conf.token, strlen(conf.token));
	EVP_PKEY_free(pub);
	keysvc_close(ks);
	ucl_config_free(&conf);
	ucl_state_free(&st);
	ucl_state_free(&prior);
	ks_https_response_free(&resp);
	free(body);
	return r;
}

/*
 * The state, the current certificate and its key, checked to belong
 * together (the key only when @ks is given); a version 1 state's relative
 * paths made absolute. 0 or an exit code, printed.
 */
static int load_current(const struct opts *o, keysvc *ks, struct ucl_state *st, X509 **cert)
{
	char err[KS_CI_ERR_MAX], *text = NULL;
	EVP_PKEY *pub = NULL;
	size_t len;
	int r;

	if ((r = ucl_state_load(o->state, st)) != 0)
		return r;
	if (st->unfinished_key != NULL)
		return ks_die(KS_EXIT_USAGE, "state %s: the pairing did not finish (its key %s has no certificate): "
			      "run pair again with a new token and this --state", o->state, st->unfinished_key);
	if (st->version == 1 && (r = ucl_resolve_old_paths(o->state, st)) != 0)
		return r;
	if ((r = ks_ci_read_file(st->cert, &text, &len, err)) < 0 ||
	    (r = ks_ci_parse_one(text, len, cert, err)) < 0) {
		free(text);
		return ks_die(KS_EXIT_USAGE, "the current certificate: %s", err);
	}
	free(text);
	if (ks == NULL)
		return 0;
	if ((r = ks_cli_public_key(ks, st->key, &pub, 0)) != 0)
		return r;
	r = EVP_PKEY_eq(X509_get0_pubkey(*cert), pub) == 1 ? 0 :
	    ks_die(KS_EXIT_USAGE, "%s is not a certificate for the current key %s", st->cert, st->key);
	EVP_PKEY_free(pub);
	return r;
}

/*
 * A version 1 state (no pairing id, keys BASE.N) given an id and written
 * with absolute paths before renewal makes a key named with that id, so
 * that a failed renewal's key is this state's to reuse. Its id-less keys
 * stay as they are and are never deleted (another version 1 state of the
 * same base may name them). 0 or an exit code, printed.
 */
static int migrate_old_state(const struct opts *o, struct ucl_state *st)
{
	char id[PAIRING_ID_LEN + 1];
	int r;

	if ((r = ucl_new_pairing_id(id)) != 0)
		return r;
	if ((st->pairing_id = strdup(id)) == NULL)
		return ks_die(KS_EXIT_INTERNAL, "out of memory");
	st->version = 2;
	if ((r = ucl_state_save(o->state, st)) != 0)
		return r;
	ks_say("state %s: written by an earlier keysvc-ucl; now with pairing id %s and absolute paths (its "
	       "keys without the id are never deleted by keysvc-ucl)", o->state, id);
	return 0;
}

static int cmd_renew(const struct opts *o, struct ks_renewal *rn)
{
	struct ks_https_opts h;
	struct ks_https_response resp;
	struct ucl_config conf;
	struct ucl_state st;
	char err[KS_CI_ERR_MAX], key[KEY_NAME_MAX + 1], new_key[KEY_NAME_MAX + 1], uri[96], *body = NULL;
	char *retire = NULL, installed_ca_what[256];
	const char *type;
	STACK_OF(X509) *installed_ca = NULL;
	EVP_PKEY *pub = NULL;
	X509 *current = NULL;
	keysvc *ks = NULL;
	int r;

	memset(&resp, 0, sizeof(resp));
	memset(&conf, 0, sizeof(conf));
	memset(&st, 0, sizeof(st));
	key[0] = new_key[0] = '\0';
	if (o->when_due) {
		if ((r = load_current(o, NULL, &st, &current)) != 0)
			goto out;
		snprintf(key, sizeof(key), "%s", st.key);
		if (!ucl_is_due(current, time(NULL), (int)o->share)) {
			char until[64];

			ks_ci_format_time(X509_get0_notAfter(current), until, sizeof(until));
			ks_say("not due: %s is valid until %s, more than %ld%% of its validity left", st.cert,
			       until, o->share);
			r = KS_EXIT_NOT_DUE;
			goto out;
		}
		ucl_state_free(&st);
		X509_free(current);
		current = NULL;
	}
	if ((r = ks_open_keysvc(o->c.socket, &ks)) != 0 || (r = load_current(o, ks, &st, &current)) != 0)
		goto out;
	snprintf(key, sizeof(key), "%s", st.key);
	if (st.generation >= GENERATION_MAX) {
		r = ks_die(KS_EXIT_USAGE, "state %s: generation %ld is the last: pair again", o->state, st.generation);
		goto out;
	}
	/* What the new certificate must chain to: the CA installed at pairing (or last renewal). */
	if ((r = ks_ci_load_bundle(st.ca, &installed_ca, err)) < 0) {
		r = ks_die(KS_EXIT_USAGE, "the installed CA: %s", err);
		goto out;
	}
	snprintf(installed_ca_what, sizeof(installed_ca_what), "the installed CA %.200s", st.ca);
	ks_https_ca_opts(&h, o->ca_file != NULL ? o->ca_file : st.server_ca_file, o->c.timeout_s, o->c.insecure,
			 st.cert, key, uri, sizeof(uri));
	if ((body = ucl_config_request(0)) == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	if ((r = graphql(&h, st.mtls_url, NULL, body, &resp)) != 0)
		goto out;
	if ((r = ucl_parse_config(resp.body, resp.body_len, &conf, err)) < 0) {
		r = ks_die(answer_exit(r), "configuration: %s", err);
		goto out;
	}
	if ((type = key_type_of(conf.key_algorithm)) == NULL) {
		r = KS_EXIT_CA_ANSWER;
		goto out;
	}
	if (st.pairing_id == NULL && (r = migrate_old_state(o, &st)) != 0)
		goto out;
	/* Carries this pairing's id: if it exists, a failed renewal of this pairing made it. */
	ucl_key_name(new_key, st.key_base, st.pairing_id, st.generation + 1);
	if ((r = make_key(ks, new_key, type, &pub)) != 0)
		goto out;
	if ((r = sign_and_install(ks, &h, st.mtls_url, NULL, new_key, pub, conf.subject, &st, installed_ca,
				  installed_ca_what)) != 0)
		goto out;
	retire = st.previous_key;
	st.previous_key = strdup(key);
	free(st.key);
	st.key = strdup(new_key);
	st.generation++;
	if (st.previous_key == NULL || st.key == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory: the new certificate is installed but the state is "
			   "not: key %s is the certificate's key", new_key);
		goto out;
	}
	if ((r = ucl_state_save(o->state, &st)) != 0) {
		ks_die(r, "the new certificate is installed but the state is not: key %s is the "
		       "certificate's key", new_key);
		goto out;
	}
	/*
	 * Two generations back: no certificate on disk uses it any more. Only
	 * a key with this pairing's id is surely named by no other state file.
	 */
	if (retire != NULL && !ucl_key_is_ours(&st, retire)) {
		ks_say("kept the retired key %s: it has no pairing id (made by an earlier keysvc-ucl), so another "
		       "state file may name it; delete it (keysvc delete %s) once none does", retire, retire);
	} else if (retire != NULL) {
		int kr = keysvc_key_delete(ks, retire);

		if (kr != KEYSVC_OK && kr != KEYSVC_E_NO_SUCH_KEY)
			ks_say("warning: could not delete the retired key %s: %s", retire, keysvc_strerror(kr));
		else
			ks_say("deleted the retired key %s", retire);
	}
	ks_say("renewed: key %s, previous key %s kept for a rollback (with %s.prev)", new_key, key, st.cert);
	r = 0;
out:
	/* st.cert is NULL until the state is read: before that there is nothing to record against. */
	r = ks_renewal_finish(rn, r, st.cert, r == 0 ? new_key : key[0] != '\0' ? key : NULL, st.ca, NULL);
	free(retire);
	sk_X509_pop_free(installed_ca, X509_free);
	EVP_PKEY_free(pub);
	X509_free(current);
	keysvc_close(ks);
	ucl_config_free(&conf);
	ucl_state_free(&st);
	ks_https_response_free(&resp);
	free(body);
	return r;
}

static int cmd_revoke(const struct opts *o)
{
	struct ks_https_opts h;
	struct ks_https_response resp;
	struct ucl_state st;
	char err[KS_CI_ERR_MAX], uri[96], *body = NULL;
	X509 *current = NULL;
	keysvc *ks = NULL;
	int r, revoked = 0;

	memset(&resp, 0, sizeof(resp));
	memset(&st, 0, sizeof(st));
	if ((r = ks_open_keysvc(o->c.socket, &ks)) != 0 || (r = load_current(o, ks, &st, &current)) != 0)
		goto out;
	ks_https_ca_opts(&h, o->ca_file != NULL ? o->ca_file : st.server_ca_file, o->c.timeout_s, o->c.insecure,
			 st.cert, st.key, uri, sizeof(uri));
	if ((body = ucl_revoke_request()) == NULL) {
		r = ks_die(KS_EXIT_INTERNAL, "out of memory");
		goto out;
	}
	if ((r = graphql(&h, st.mtls_url, NULL, body, &resp)) != 0)
		goto out;
	if ((r = ucl_parse_revoke(resp.body, resp.body_len, &revoked, err)) < 0) {
		r = ks_die(answer_exit(r), "revokeCertificate: %s", err);
		goto out;
	}
	if (!revoked) {
		r = ks_die(KS_EXIT_CA_REFUSED, "the connector did not revoke the certificate");
		goto out;
	}
	ks_say("revoked the certificate in %s", st.cert);
	r = 0;
out:
	X509_free(current);
	keysvc_close(ks);
	ucl_state_free(&st);
	ks_https_response_free(&resp);
	free(body);
	return r;
}

/* What --json reports: the certificate and key of the state last read or written. */
static int ran(struct ks_rc_run *run, int r)
{
	run->cert = ucl_result_cert[0] != '\0' ? ucl_result_cert : NULL;
	run->key = ucl_result_key[0] != '\0' ? ucl_result_key : NULL;
	return r;
}

/* pair and renew record their outcome themselves, with what the state names. */
static int run_pair(void *ctx, struct ks_rc_run *run)
{
	run->recorded = 1;
	return ran(run, cmd_pair(ctx, run->renewal));
}

static int run_renew(void *ctx, struct ks_rc_run *run)
{
	run->recorded = 1;
	return ran(run, cmd_renew(ctx, run->renewal));
}

/* A revocation is not a renewal attempt: nothing recorded. */
static int run_revoke(void *ctx, struct ks_rc_run *run)
{
	run->recorded = 1;
	return ran(run, cmd_revoke(ctx));
}

/* ---- main ---- */

enum { O_URL = 256, O_TOKEN, O_CA_FILE, O_ISSUER_CA, O_KEY_BASE, O_CERT, O_CHAIN, O_CA_OUT, O_STATE, O_WHEN_DUE,
       O_SHARE };

static int option(void *ctx, int c, const char *arg)
{
	struct opts *o = ctx;

	switch (c) {
	case O_URL: o->connector_url = arg; break;
	case O_TOKEN: o->token_file = arg; break;
	case O_CA_FILE: o->ca_file = arg; break;
	case O_ISSUER_CA: o->issuer_ca = arg; break;
	case O_KEY_BASE: o->key_base = arg; break;
	case O_CERT: o->cert = arg; break;
	case O_CHAIN: o->chain = arg; break;
	case O_CA_OUT: o->ca_out = arg; break;
	case O_STATE: o->state = arg; break;
	case O_WHEN_DUE: o->when_due = 1; break;
	case O_SHARE:
		if (ks_parse_long(arg, 1, 99, &o->share) != 0)
			return ks_die(KS_EXIT_USAGE, "--renew-share: 1..99 (percent)");
		break;
	}
	return 0;
}

static int check(void *ctx, struct ks_rc_run *run)
{
	const struct opts *o = ctx;
	const char *cmd = run->command;

	if (o->state == NULL)
		return ks_die(KS_EXIT_USAGE, "--state FILE is required");
	if (strcmp(cmd, "pair") == 0) {
		if (o->connector_url == NULL || strncmp(o->connector_url, "https://", 8) != 0)
			return ks_die(KS_EXIT_USAGE, "pair needs --connector-url https://...");
		if (o->token_file == NULL || o->ca_file == NULL || o->cert == NULL || o->chain == NULL ||
		    o->ca_out == NULL)
			return ks_die(KS_EXIT_USAGE, "pair needs --token-file, --ca-file, --cert, --chain and --ca-out");
		if (!ucl_key_base_ok(o->key_base))
			return ks_die(KS_EXIT_USAGE, "--key-base: 1..%d of A-Z a-z 0-9 _ -", KEY_BASE_MAX);
		if (o->when_due)
			return ks_die(KS_EXIT_USAGE, "--when-due is a renew option");
	} else {
		if (o->connector_url != NULL || o->token_file != NULL || o->cert != NULL || o->chain != NULL ||
		    o->ca_out != NULL || o->issuer_ca != NULL)
			return ks_die(KS_EXIT_USAGE, "%s takes its URLs and files from --state (the CA it trusts is "
				      "the installed one)", cmd);
		if (o->when_due && strcmp(cmd, "revoke") == 0)
			return ks_die(KS_EXIT_USAGE, "--when-due is a renew option");
	}
	snprintf(ucl_result_cert, sizeof(ucl_result_cert), "%s", o->cert != NULL ? o->cert : "");
	/* The state names the certificate (renew reads it from there): its lock stands for the certificate's. */
	run->lock_path = o->state;
	return ran(run, 0);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "connector-url", required_argument, NULL, O_URL },
		{ "token-file", required_argument, NULL, O_TOKEN },
		{ "ca-file", required_argument, NULL, O_CA_FILE },
		{ "issuer-ca", required_argument, NULL, O_ISSUER_CA },
		{ "key-base", required_argument, NULL, O_KEY_BASE },
		{ "cert", required_argument, NULL, O_CERT },
		{ "chain", required_argument, NULL, O_CHAIN },
		{ "ca-out", required_argument, NULL, O_CA_OUT },
		{ "state", required_argument, NULL, O_STATE },
		{ "when-due", no_argument, NULL, O_WHEN_DUE },
		{ "renew-share", required_argument, NULL, O_SHARE },
		{ NULL, 0, NULL, 0 },
	};
	static const struct ks_rc_command commands[] = {
		{ "pair", "paired", KS_RC_RENEWAL | KS_RC_HTTPS | KS_RC_RESULT, run_pair },
		{ "renew", "renewed", KS_RC_RENEWAL | KS_RC_HTTPS | KS_RC_RESULT, run_renew },
		{ "revoke", "revoked", KS_RC_RENEWAL | KS_RC_HTTPS | KS_RC_RESULT, run_revoke },
		{ NULL, NULL, 0, NULL },
	};
	struct opts o = { .key_base = "ucl", .share = UCL_DEFAULT_RENEW_SHARE };
	const struct ks_rc_client client = {
		.program = "keysvc-ucl", .inventory_client = "ucl",
		.common = KS_RC_OPT_SOCKET | KS_RC_OPT_INVENTORY | KS_RC_OPT_LOCK_WAIT,
		.usage = usage, .options = options, .option = option, .check = check, .commands = commands,
		.common_opts = &o.c, .ctx = &o,
	};

	return ks_rc_main(&client, argc, argv);
}
