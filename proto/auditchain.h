/*
 * The audit log's record format and hash chain, shared by keysvcd (which
 * writes records) and `keysvc audit-verify` (which checks them), so the
 * two cannot disagree. PROTOCOL.md "Audit" is the reference.
 *
 * A record is one line: a JSON object and a newline. "prev" is the
 * lowercase hex SHA-256 of the previous record's bytes, its whole line
 * without the newline; "seq" counts records by one, across files and
 * restarts. The first record of a chain has "chain":"new" (nothing came
 * before) or "chain":"restart" (keysvcd could not read the record before
 * it) and "prev" of 64 zeros.
 */
#ifndef KEYSVC_PROTO_AUDITCHAIN_H
#define KEYSVC_PROTO_AUDITCHAIN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* No record is longer (newline excluded); a longer line is not a record. */
#define KS_AUDIT_LINE_MAX 2048
#define KS_AUDIT_HASH_HEX 65      /* 64 hex digits and a NUL */

struct ks_audit_record {
	const char *time;          /* "2026-11-24T09:21:48.123Z" */
	uint64_t seq;
	const char *prev;          /* 64 hex digits */
	const char *chain;         /* NULL, "new" or "restart" */
	uint64_t lost;             /* records keysvcd could not write just before this one; 0: none */
	uint32_t uid, gid;
	int64_t pid;
	const char *op;            /* NULL: the request named no known operation */
	const char *key;           /* NULL: absent */
	int is_intent;             /* an intent record: "phase":"intent", no outcome */
	const char *hash_name;     /* "sha256" or "digest" with hash_hex; NULL: none */
	const char *hash_hex;
	/*
	 * The key purpose (proto/sigform.h's names) a signature was made, or
	 * refused, under; NULL: none (operations that sign nothing).
	 */
	const char *purpose;
	uint64_t intent;           /* the seq of this outcome's intent record; 0: none */
	const char *outcome;       /* "ok" or a wire error name; NULL for an intent */
};

/*
 * Format @rec as one line into @buf (at least KS_AUDIT_LINE_MAX + 2 bytes:
 * the caller may put a newline at buf[*len]). Any strings are escaped as
 * JSON needs. 0, -EMSGSIZE when the line would exceed KS_AUDIT_LINE_MAX,
 * or -ENOMEM.
 */
int ks_auditchain_format(const struct ks_audit_record *rec, char *buf, size_t size, size_t *len);

/*
 * The two parts of ks_auditchain_format()'s line, which is their
 * concatenation, so that keysvcd formats what does not depend on the
 * chain before it takes the lock that orders records.
 * ks_auditchain_format_head(): from the opening brace to the last field
 * of the chain ("time", "seq", "prev", "chain", "lost").
 * ks_auditchain_format_tail(): the rest, from the comma before "uid" to
 * the closing brace.
 * Each writes a NUL after its @len bytes into @buf (@size bytes); 0,
 * -EMSGSIZE when the part is longer than KS_AUDIT_LINE_MAX or @size
 * leaves no room for it and the NUL, or -ENOMEM. The whole line must
 * still be checked against KS_AUDIT_LINE_MAX.
 */
int ks_auditchain_format_head(const struct ks_audit_record *rec, char *buf, size_t size,
			      size_t *len);
int ks_auditchain_format_tail(const struct ks_audit_record *rec, char *buf, size_t size,
			      size_t *len);

/*
 * SHA-256 of the default library context, fetched once for the process:
 * EVP_sha256() makes every EVP_Digest() fetch it again (a lookup and
 * locks per record). NULL when the provider has none. Thread-safe.
 */
const EVP_MD *ks_sha256_md(void);

/* @hex = lowercase hex SHA-256 of @line (@len bytes, no newline). */
void ks_auditchain_hash(const char *line, size_t len, char hex[KS_AUDIT_HASH_HEX]);

/*
 * ks_auditchain_hash() in @ctx, a digest context the caller owns and
 * reuses for every record (EVP_Digest() allocates and frees one per
 * call); NULL: one made for this call. One thread at a time per @ctx.
 */
void ks_auditchain_hash_ctx(EVP_MD_CTX *ctx, const char *line, size_t len,
			    char hex[KS_AUDIT_HASH_HEX]);

/* The hash a chain's first record names as "prev". */
extern const char ks_auditchain_zero[KS_AUDIT_HASH_HEX];

enum ks_audit_chain_start {
	KS_AUDIT_LINKED = 0,       /* no "chain" field */
	KS_AUDIT_CHAIN_NEW,
	KS_AUDIT_CHAIN_RESTART,
};

/* What the chain needs from a record. */
struct ks_audit_link {
	uint64_t seq;
	char time[32];             /* "" when the record has none that fits */
	char prev[KS_AUDIT_HASH_HEX];
	enum ks_audit_chain_start start;
};

/*
 * Parse @line (@len bytes, no newline) as a record: a JSON object with
 * "seq" (1 or more), "prev" (64 lowercase hex digits) and, optionally,
 * "chain". 0 or -EBADMSG.
 */
int ks_auditchain_parse(const char *line, size_t len, struct ks_audit_link *out);

/* The state of a check over consecutive lines, files in rotation order. Zero it to start. */
struct ks_auditchain_verifier {
	int have_last;
	uint64_t last_seq;
	char last_time[32];
	char last_hash[KS_AUDIT_HASH_HEX];
};

enum ks_audit_verdict {
	KS_AUDIT_INTACT = 0,
	KS_AUDIT_WARNING,          /* intact, but see @why (a chain start not linked) */
	KS_AUDIT_BAD,              /* this line is bad: @why says how */
	KS_AUDIT_BAD_BEFORE,       /* the line before this one was edited */
};

/*
 * Check the next line (@len bytes, without its newline) against the ones
 * before it. @first_in_file: the line opens a file. @why gets a reason
 * for anything but KS_AUDIT_INTACT. A line that is not a record, a "seq"
 * that does not follow by one (records removed or reordered), a chain
 * start in the middle of a file, a chain start at the top of a later file
 * whose "time" is before the last record's (files out of order), or a
 * "prev" that is not the hash of the line before are all failures; the
 * very first line checked is taken as it is (the check may start anywhere
 * in the history).
 */
enum ks_audit_verdict ks_auditchain_verify(struct ks_auditchain_verifier *v, const char *line,
					   size_t len, int first_in_file, char *why,
					   size_t why_len);

#endif
