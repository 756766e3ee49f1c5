/*
 * fakesrv: what the local fake servers of the tests (fake-openvox-ca,
 * fake-ucl-connector, fake-cce, fake-oci) share: logging, small file
 * helpers, certificate minting, the TLS context, a loopback-only listener,
 * and an HTTP/1.1-over-TLS server with one request per connection.
 *
 * Test code only. The protocol of each fake (routes, texts, fault modes,
 * the response header lines) stays in the fake; this library moves bytes,
 * parses requests and keeps connections, nothing more.
 *
 * Conventions: functions that return int give 0 on success and -1 on
 * failure, having logged why; functions that return a pointer give NULL on
 * failure; strings returned as char * are malloc'd and the caller frees
 * them.
 */
#ifndef KS_TESTS_FAKESRV_H
#define KS_TESTS_FAKESRV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define FS_DAY 86400L

/* ------------------------------------------------------------------ */
/* Logging: one line per call on stderr, "PROGNAME: text".             */

/* Sets the prefix of every log line (a static string). Call first. */
void fs_log_init(const char *progname);
/* Lines longer than 2047 bytes are cut. */
void fs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "WHAT: <first OpenSSL error or 'unknown error'>"; clears the queue. */
void fs_log_ssl(const char *what);

/* ------------------------------------------------------------------ */
/* Files and small parsers                                             */

/* snprintf into out; false if it did not fit (out is then unusable). */
bool fs_pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool fs_file_exists(const char *path);
/* The whole file, NUL-terminated, if it has at most max bytes; NULL if it
 * is missing, unreadable or larger. len_out may be NULL. Does not log. */
char *fs_read_file(const char *path, size_t max, size_t *len_out);
/* Temporary file in the same directory + rename, so readers (the tests,
 * other threads) never see a half-written file. Logs failures. */
int fs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* mkdir that accepts an existing directory. Logs failures. */
int fs_make_dir(const char *path, mode_t mode);
/* Skips leading and cuts trailing spaces, tabs and carriage returns, in
 * place: *s moves forward, the end gets a NUL. */
void fs_trim(char **s);
/* A whole decimal number in 1..max (a duration in seconds). */
bool fs_parse_seconds(const char *s, long max, long *out);

/* ------------------------------------------------------------------ */
/* Certificates                                                        */

/* An extension in X509V3_EXT_conf_nid syntax ("critical,CA:TRUE").
 * Lists end with { 0, NULL }. */
struct fs_ext {
	int nid;
	const char *value;
};

/* A new P-256 key; every fake uses those for its own certificates. */
EVP_PKEY *fs_mint_key(void);
/* A name with just CN=cn (UTF-8). */
X509_NAME *fs_cn_name(const char *cn);
/* The first entry of nid in name as UTF-8; NULL if there is none or it
 * holds a NUL byte. */
char *fs_name_entry(const X509_NAME *name, int nid);
/* Adds one extension to subject, with issuer for the key identifiers. */
int fs_add_ext(X509 *issuer, X509 *subject, int nid, const char *value);
/* An unsigned v3 certificate with a random positive 128-bit serial, so
 * certificates from directories of earlier runs never collide. */
X509 *fs_new_cert(const X509_NAME *issuer, const X509_NAME *subject, EVP_PKEY *pub, time_t not_before,
		  time_t not_after);
/* SHA-256 signature by key. */
int fs_sign_cert(X509 *x, EVP_PKEY *key);
/* fs_new_cert + the extensions of exts in their order + fs_sign_cert.
 * issuer NULL: self-signed, issuer_key must then be pub's private key. */
X509 *fs_mint_cert(const X509_NAME *subject, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *issuer_key, time_t not_before,
		   time_t not_after, const struct fs_ext *exts);
/* A TLS server certificate for CN=localhost with a new key, issued by
 * ca/ca_key. With dir, also written to dir/server.pem and dir/server.key. */
int fs_mint_server_cert(const char *dir, X509 *ca, EVP_PKEY *ca_key, time_t not_before, time_t not_after,
			const struct fs_ext *exts, X509 **cert_out, EVP_PKEY **key_out);
/* The contents of a memory BIO, NUL-terminated. len_out may be NULL. */
char *fs_bio_take(BIO *b, size_t *len_out);
char *fs_cert_pem(X509 *x, size_t *len_out);
/* PEM files through fs_write_file_atomic: certificates 0644, keys 0600. */
int fs_write_cert(const char *path, X509 *x);
int fs_write_key(const char *path, EVP_PKEY *key);
/* A self-signed CA named cn with a new key, valid from a day ago for
 * lifetime seconds, with exts. */
int fs_mint_ca(const char *cn, long lifetime, const struct fs_ext *exts, X509 **cert_out, EVP_PKEY **key_out);
/* Reuses dir/base.pem + dir/base.key, or makes them with fs_mint_ca.
 * Half a pair, or a pair that does not match, is an error. */
int fs_load_or_make_ca(const char *dir, const char *base, const char *cn, long lifetime, const struct fs_ext *exts,
		       X509 **cert_out, EVP_PKEY **key_out);

/* ------------------------------------------------------------------ */
/* TLS and the listener                                                */

enum fs_client_auth {
	/* No CertificateRequest. */
	FS_CLIENT_CERT_NONE,
	/* Ask, never insist, and let every certificate through the
	 * handshake: the HTTP layer sees fs_conn.verify_result. */
	FS_CLIENT_CERT_WANT,
	/* Ask, never insist, but a certificate that does not verify against
	 * client_ca fails the handshake. */
	FS_CLIENT_CERT_WANT_VALID,
};

/* TLS 1.2 or later with cert/key. With client certificates (client_ca
 * must then be given) also without session resumption, so every
 * connection shows its certificate. The context holds its own references. */
SSL_CTX *fs_tls_server_ctx(X509 *cert, EVP_PKEY *key, X509 *client_ca, enum fs_client_auth auth);
/* fs_mint_server_cert (valid from a day ago for lifetime seconds) and
 * fs_tls_server_ctx in one: the context, or NULL. */
SSL_CTX *fs_tls_server_minted(const char *dir, X509 *ca, EVP_PKEY *ca_key, long lifetime,
			      const struct fs_ext *exts, X509 *client_ca, enum fs_client_auth auth);

/* The fakes keep CA keys in plain files: they listen on loopback only. */
bool fs_listen_addr_ok(const char *addr);
/* A listening socket on addr ("127.0.0.1" or "::1", nothing else) at a
 * port the kernel picks, written to *port_out. */
int fs_listen(const char *addr, int *port_out);
/* "PORT\n", atomically, for the tests to wait for. */
int fs_write_port_file(const char *path, int port);
/* fs_listen, then fs_write_port_file when port_file is not NULL; the
 * socket, or -1 with nothing left open. */
int fs_listen_announced(const char *addr, const char *port_file, int *port_out);

/* SIGPIPE ignored; SIGTERM and SIGINT make fs_serve return 0. Call early,
 * before anything slow, so a stop during start-up is orderly too. */
int fs_signals_init(void);
/* For threads of a fake's own: leave SIGTERM/SIGINT to the accept loop. */
void fs_block_stop_signals(void);
/* True once a stop signal came or fs_serve is shutting down; long
 * answers (hang, huge bodies) check it. */
bool fs_stopping(void);

/* ------------------------------------------------------------------ */
/* HTTP/1.1 over TLS                                                   */

#define FS_MAX_HEADER_BYTES (32 * 1024)

struct fs_header {
	const char *name;  /* as sent */
	const char *value; /* fs_trim'd */
};

struct fs_request {
	/* 0 if the request was read whole; else the status the fake should
	 * answer in its own words: 400 malformed, 411 a body not sent with
	 * Content-Length, 413 a body over max_body_bytes, 431 the header
	 * over FS_MAX_HEADER_BYTES. What was parsed before stays filled. */
	int error;
	char method[16];
	char target[2048]; /* request target as sent */
	char path[2048];   /* target up to '?' or '#' */
	const char *query; /* in target, after '?'; NULL without one */
	struct fs_header *headers;
	size_t nheaders;
	char *body; /* NUL-terminated */
	size_t body_len;
	char *head; /* private: the header block the pointers point into */
};

struct fs_conn {
	int fd;
	SSL *ssl;
	X509 *peer;         /* client certificate, or NULL */
	long verify_result; /* of peer against client_ca */
	char verdict[160];  /* peer and verify_result in words, for logs */
	bool responded;     /* fs_send_head was called */
	int slot;           /* private */
};

/* The value of the last header called name (case-insensitive), or NULL. */
const char *fs_header(const struct fs_request *rq, const char *name);
size_t fs_header_count(const struct fs_request *rq, const char *name);

/* The standard reason phrase of the status codes the fakes use. */
const char *fs_reason_phrase(int status);
/* "HTTP/1.1 STATUS REASON\r\n" header_lines "Content-Length: N\r\n"
 * "Connection: close\r\n\r\n". header_lines are complete "Name: value\r\n"
 * lines in the fake's order; content_length < 0 leaves that header out
 * (304). reason NULL: fs_reason_phrase. */
int fs_send_head(struct fs_conn *c, int status, const char *reason, const char *header_lines, long content_length);
/* All of data, or -1 (the client went away, a timeout). */
int fs_write(struct fs_conn *c, const void *data, size_t len);
/* The "hang" fault: says nothing until the client closes or the server
 * stops; what the client still sends is dropped. */
void fs_wait_until_client_leaves(struct fs_conn *c);

/* Answers one request: fs_send_head, fs_write, logging. Called for every
 * request read, also the malformed ones (rq->error). Runs on a thread of
 * its own unless the server is serial. */
typedef void fs_handler(struct fs_conn *c, struct fs_request *rq);

struct fs_server {
	SSL_CTX *ctx;
	fs_handler *handle;
	size_t max_body_bytes;
	/* One connection at a time, in the accept loop; the handler may
	 * then use globals without locks. Otherwise one thread each, at
	 * most 128 at once. */
	bool serial;
	/* After an answer, read and drop what the client still sends for a
	 * moment before closing, so a reset cannot destroy the answer. */
	bool linger;
	/* Called in the accept loop at least every tick_ms (default 1000). */
	void (*tick)(void);
	int tick_ms;
};

/* Serves lfd (and closes it) until SIGTERM/SIGINT: 0, or -1 if the
 * accept loop fails. Waits for the connections, which a stop wakes. */
int fs_serve(int lfd, const struct fs_server *srv);

#endif
