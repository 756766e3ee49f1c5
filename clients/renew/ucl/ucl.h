/*
 * The Kyma / UCL Connector's GraphQL protocol, the parts that need no
 * network: the documents sent, the answers parsed, the key algorithms
 * mapped to keysvc key types, the subject compared, the renewal rule.
 * keysvc-ucl.c and ucl_state.c do the I/O; these are unit-tested alone.
 */
#ifndef KEYSVC_CLIENTS_UCL_H
#define KEYSVC_CLIENTS_UCL_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#define UCL_TOKEN_HEADER "Connector-Token"
#define UCL_ERR_MAX 512
#define UCL_DEFAULT_RENEW_SHARE 30   /* percent of the validity left */

/* The answer to the configuration query. Strings are malloc'd; NULL when absent. */
struct ucl_config {
	char *token;                  /* the next one-time token (pairing only) */
	char *subject;                /* e.g. "OU=Test,O=Test,L=Blacksburg,ST=Virginia,C=US,CN=id" */
	char *key_algorithm;          /* e.g. "rsa2048" */
	char *director_url;
	char *connector_url;          /* certificateSecuredConnectorURL */
};

/* The three base64-decoded PEM results of signCertificateSigningRequest. */
struct ucl_certs {
	char *chain_pem;              /* client certificate followed by the CA certificate(s) */
	size_t chain_len;
	char *ca_pem;
	size_t ca_len;
	char *client_pem;
	size_t client_len;
};

/* JSON request bodies ({"query": ...}). malloc'd, NULL on out of memory. */
char *ucl_config_request(int with_token);
char *ucl_sign_request(const char *csr_pem);   /* base64 of the PEM, in the document */
char *ucl_revoke_request(void);

/*
 * Parse a GraphQL answer (HTTP 200 body). Returns 0, or:
 *   -EREMOTEIO  the server reported errors (its messages, joined and made
 *               printable, in @err) -- also when some data came with them
 *   -EBADMSG    not JSON, or not the shape the query asked for
 * On error nothing is returned, so a partial answer is never used.
 */
int ucl_parse_config(const char *body, size_t len, struct ucl_config *out, char *err);
int ucl_parse_certs(const char *body, size_t len, struct ucl_certs *out, char *err);
int ucl_parse_revoke(const char *body, size_t len, int *revoked, char *err);

/*
 * The GraphQL errors of an answer of any HTTP status (gqlgen answers
 * parse and validation errors with 422): -EREMOTEIO with the server's
 * messages in @err, or -EBADMSG if @body is not a JSON object with a
 * non-empty "errors" array.
 */
int ucl_parse_errors(const char *body, size_t len, char *err);

void ucl_config_free(struct ucl_config *c);
void ucl_certs_free(struct ucl_certs *c);

/* keysvc key type for a connector keyAlgorithm ("rsa2048" -> "rsa-2048"), or NULL if keysvc cannot make it. */
const char *ucl_key_type(const char *key_algorithm);

/*
 * 0 if @cert's subject holds exactly the attributes of @subject (a
 * comma-separated list of TYPE=VALUE, in any order: the connector compares
 * attribute by attribute); else -EBADMSG with the difference in @err.
 */
int ucl_subject_matches(X509 *cert, const char *subject, char *err);

/* 1 if less than @share_percent of [notBefore, notAfter] is left at @now. */
int ucl_is_due(X509 *cert, time_t now, int share_percent);

#endif
