#include "proto/auditchain.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>

const char ks_auditchain_zero[KS_AUDIT_HASH_HEX] =
	"0000000000000000000000000000000000000000000000000000000000000000";

/*
 * Letters, digits, '.', '_', '-' and ':': nothing JSON would escape. A
 * bitmap of the ASCII bytes, since every record's hex hashes pass through
 * here (a chain of comparisons per byte was a fifth of a record's CPU).
 */
static const uint64_t plain_bytes[2] = {
	0x07FF600000000000ULL,     /* '-', '.', '0'-'9', ':' */
	0x07FFFFFE87FFFFFEULL,     /* 'A'-'Z', '_', 'a'-'z' */
};

static int plain(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	if (s == NULL)
		return 1;
	for (; *p != '\0'; p++)
		if (*p >= 128 || !((plain_bytes[*p >> 6] >> (*p & 63)) & 1))
			return 0;
	return 1;
}

/*
 * Bytes appended to a buffer of @size, its last byte kept for a NUL;
 * "over" once something did not fit (the line is then refused).
 */
struct linebuf {
	char *p;
	size_t n, size;
	int over;
};

static void put(struct linebuf *b, const char *s, size_t len)
{
	if (b->over || len >= b->size - b->n) {
		b->over = 1;
		return;
	}
	memcpy(b->p + b->n, s, len);
	b->n += len;
	b->p[b->n] = '\0';
}

static void put_str(struct linebuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Decimal without snprintf: records are formatted at every signature. */
static void put_u64(struct linebuf *b, uint64_t v)
{
	char d[20];
	size_t i = sizeof(d);

	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	put(b, d + i, sizeof(d) - i);
}

static void put_i64(struct linebuf *b, int64_t v)
{
	if (v < 0) {
		put(b, "-", 1);
		put_u64(b, -(uint64_t)v);
	} else {
		put_u64(b, (uint64_t)v);
	}
}

/* ,"name":"value" */
static void put_field(struct linebuf *b, const char *name, const char *value)
{
	put(b, ",\"", 2);
	put_str(b, name);
	put(b, "\":\"", 3);
	put_str(b, value);
	put(b, "\"", 1);
}

/*
 * @o as compact JSON without its braces' outer one on the side @strip
 * ('{' or '}'), appended to @b: the general path, for strings that need
 * escaping; jansson writes the same bytes as the direct path for the
 * others (compact, in insertion order).
 */
static int put_json(struct linebuf *b, json_t *o, char strip)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	size_t n;

	if (s == NULL)
		return -ENOMEM;
	n = strlen(s);
	if (n < 2) {
		free(s);
		return -ENOMEM;
	}
	if (strip == '{') {
		/* {"uid":…} as ,"uid":…} */
		put(b, ",", 1);
		put(b, s + 1, n - 1);
	} else {
		put(b, s, n - 1);
	}
	free(s);
	return 0;
}

static int head_json(const struct ks_audit_record *rec, struct linebuf *b)
{
	json_t *o = json_object();
	int r = -ENOMEM;

	if (o == NULL)
		return -ENOMEM;
	/* json_string() refuses invalid UTF-8: such a field is missing and the line is refused. */
	if (json_object_set_new(o, "time", json_string(rec->time)) != 0 ||
	    json_object_set_new(o, "seq", json_integer((json_int_t)rec->seq)) != 0 ||
	    json_object_set_new(o, "prev", json_string(rec->prev)) != 0 ||
	    (rec->chain != NULL && json_object_set_new(o, "chain", json_string(rec->chain)) != 0) ||
	    (rec->lost > 0 && json_object_set_new(o, "lost", json_integer((json_int_t)rec->lost)) != 0))
		goto out;
	r = put_json(b, o, '}');
out:
	json_decref(o);
	return r;
}

static int tail_json(const struct ks_audit_record *rec, struct linebuf *b)
{
	json_t *o = json_object();
	int r = -ENOMEM;

	if (o == NULL)
		return -ENOMEM;
	if (json_object_set_new(o, "uid", json_integer(rec->uid)) != 0 ||
	    json_object_set_new(o, "gid", json_integer(rec->gid)) != 0 ||
	    json_object_set_new(o, "pid", json_integer(rec->pid)) != 0 ||
	    json_object_set_new(o, "op", rec->op ? json_string(rec->op) : json_null()) != 0 ||
	    (rec->key != NULL && json_object_set_new(o, "key", json_string(rec->key)) != 0) ||
	    (rec->is_intent && json_object_set_new(o, "phase", json_string("intent")) != 0) ||
	    (rec->hash_name != NULL &&
	     json_object_set_new(o, rec->hash_name, json_string(rec->hash_hex)) != 0) ||
	    (rec->purpose != NULL && json_object_set_new(o, "purpose", json_string(rec->purpose)) != 0) ||
	    (rec->intent > 0 && json_object_set_new(o, "intent", json_integer((json_int_t)rec->intent)) != 0) ||
	    (rec->outcome != NULL && json_object_set_new(o, "outcome", json_string(rec->outcome)) != 0))
		goto out;
	r = put_json(b, o, '{');
out:
	json_decref(o);
	return r;
}

static int linebuf_end(const struct linebuf *b, size_t *len)
{
	if (b->over || b->n > KS_AUDIT_LINE_MAX)
		return -EMSGSIZE;
	*len = b->n;
	return 0;
}

int ks_auditchain_format_head(const struct ks_audit_record *rec, char *buf, size_t size,
			      size_t *len)
{
	struct linebuf b = { buf, 0, size, size == 0 };
	int r;

	if (size > 0)
		buf[0] = '\0';
	if (!plain(rec->time) || !plain(rec->prev) || !plain(rec->chain)) {
		if ((r = head_json(rec, &b)) != 0)
			return r;
		return linebuf_end(&b, len);
	}
	put(&b, "{\"time\":\"", 9);
	put_str(&b, rec->time);
	put(&b, "\",\"seq\":", 8);
	put_u64(&b, rec->seq);
	put(&b, ",\"prev\":\"", 9);
	put_str(&b, rec->prev);
	put(&b, "\"", 1);
	if (rec->chain != NULL)
		put_field(&b, "chain", rec->chain);
	if (rec->lost > 0) {
		put(&b, ",\"lost\":", 8);
		put_u64(&b, rec->lost);
	}
	return linebuf_end(&b, len);
}

int ks_auditchain_format_tail(const struct ks_audit_record *rec, char *buf, size_t size,
			      size_t *len)
{
	struct linebuf b = { buf, 0, size, size == 0 };
	int r;

	if (size > 0)
		buf[0] = '\0';
	/*
	 * keysvcd passes operation names, validated key names, error names
	 * and hex: formatting them directly keeps jansson's allocations off
	 * the signing path. Anything else takes the general path, so the line
	 * is valid JSON whatever the caller passes.
	 */
	if (!plain(rec->op) || !plain(rec->key) || !plain(rec->hash_name) ||
	    !plain(rec->hash_hex) || !plain(rec->outcome) || !plain(rec->purpose) ||
	    (rec->hash_name != NULL && rec->hash_hex == NULL)) {
		if ((r = tail_json(rec, &b)) != 0)
			return r;
		return linebuf_end(&b, len);
	}
	put(&b, ",\"uid\":", 7);
	put_u64(&b, rec->uid);
	put(&b, ",\"gid\":", 7);
	put_u64(&b, rec->gid);
	put(&b, ",\"pid\":", 7);
	put_i64(&b, rec->pid);
	if (rec->op != NULL) {
		put(&b, ",\"op\":\"", 7);
		put_str(&b, rec->op);
		put(&b, "\"", 1);
	} else {
		put(&b, ",\"op\":null", 10);
	}
	if (rec->key != NULL)
		put_field(&b, "key", rec->key);
	if (rec->is_intent)
		put(&b, ",\"phase\":\"intent\"", 17);
	if (rec->hash_name != NULL)
		put_field(&b, rec->hash_name, rec->hash_hex);
	if (rec->purpose != NULL)
		put_field(&b, "purpose", rec->purpose);
	if (rec->intent > 0) {
		put(&b, ",\"intent\":", 10);
		put_u64(&b, rec->intent);
	}
	if (rec->outcome != NULL)
		put_field(&b, "outcome", rec->outcome);
	put(&b, "}", 1);
	return linebuf_end(&b, len);
}

int ks_auditchain_format(const struct ks_audit_record *rec, char *buf, size_t size, size_t *len)
{
	size_t head = 0, tail = 0;
	int r;

	if ((r = ks_auditchain_format_head(rec, buf, size, &head)) != 0)
		return r;
	if ((r = ks_auditchain_format_tail(rec, buf + head, size - head, &tail)) != 0)
		return r;
	/* Room for the newline the caller may put at buf[*len]. */
	if (head + tail > KS_AUDIT_LINE_MAX || head + tail + 2 > size)
		return -EMSGSIZE;
	*len = head + tail;
	return 0;
}

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *ks_sha256_md(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256_md;
}

void ks_auditchain_hash_ctx(EVP_MD_CTX *ctx, const char *line, size_t len,
			    char hex[KS_AUDIT_HASH_HEX])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned md_len = 0;
	int ok;

	if (ks_sha256_md() == NULL)
		ok = 0;
	else if (ctx == NULL)
		ok = EVP_Digest(line, len, md, &md_len, ks_sha256_md(), NULL) == 1;
	else
		ok = EVP_DigestInit_ex2(ctx, ks_sha256_md(), NULL) == 1 &&
		     EVP_DigestUpdate(ctx, line, len) == 1 &&
		     EVP_DigestFinal_ex(ctx, md, &md_len) == 1;
	if (!ok || md_len != 32) {
		/* Never equal to a real hash, so a chain through it fails the check. */
		memset(hex, 'x', KS_AUDIT_HASH_HEX - 1);
		hex[KS_AUDIT_HASH_HEX - 1] = '\0';
		return;
	}
	for (unsigned i = 0; i < 32; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[64] = '\0';
}

void ks_auditchain_hash(const char *line, size_t len, char hex[KS_AUDIT_HASH_HEX])
{
	ks_auditchain_hash_ctx(NULL, line, len, hex);
}

static int hex64(const char *s)
{
	if (s == NULL || strlen(s) != 64)
		return 0;
	for (; *s != '\0'; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

int ks_auditchain_parse(const char *line, size_t len, struct ks_audit_link *out)
{
	json_t *o, *seq, *chain;
	const char *prev, *when;
	int r = -EBADMSG;

	if (len > KS_AUDIT_LINE_MAX || memchr(line, '\n', len) != NULL)
		return -EBADMSG;
	if ((o = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL)) == NULL)
		return -EBADMSG;
	seq = json_object_get(o, "seq");
	prev = json_string_value(json_object_get(o, "prev"));
	chain = json_object_get(o, "chain");
	if (!json_is_object(o) || !json_is_integer(seq) || json_integer_value(seq) < 1 || !hex64(prev))
		goto out;
	memset(out, 0, sizeof(*out));
	if (chain != NULL) {
		if (json_is_string(chain) && strcmp(json_string_value(chain), "new") == 0)
			out->start = KS_AUDIT_CHAIN_NEW;
		else if (json_is_string(chain) && strcmp(json_string_value(chain), "restart") == 0)
			out->start = KS_AUDIT_CHAIN_RESTART;
		else
			goto out;
		if (strcmp(prev, ks_auditchain_zero) != 0)
			goto out;
	}
	out->seq = (uint64_t)json_integer_value(seq);
	memcpy(out->prev, prev, KS_AUDIT_HASH_HEX);
	when = json_string_value(json_object_get(o, "time"));
	if (when != NULL && strlen(when) < sizeof(out->time))
		memcpy(out->time, when, strlen(when) + 1);
	r = 0;
out:
	json_decref(o);
	return r;
}

enum ks_audit_verdict ks_auditchain_verify(struct ks_auditchain_verifier *v, const char *line,
					   size_t len, int first_in_file, char *why,
					   size_t why_len)
{
	enum ks_audit_verdict verdict = KS_AUDIT_INTACT;
	struct ks_audit_link link;

	if (ks_auditchain_parse(line, len, &link) != 0) {
		snprintf(why, why_len, "not an audit record (edited or cut)");
		return KS_AUDIT_BAD;
	}
	if (link.start != KS_AUDIT_LINKED) {
		/*
		 * keysvcd starts a chain only at the top of a file it created
		 * or after a last line it could not read, which this check
		 * would have refused already: after a good record it is forged.
		 */
		if (v->have_last && !first_in_file) {
			snprintf(why, why_len, "a new chain (\"%s\") after an intact record: records "
				 "before it were replaced",
				 link.start == KS_AUDIT_CHAIN_NEW ? "new" : "restart");
			return KS_AUDIT_BAD;
		}
		/* RFC 3339 UTC with fixed digits: text order is time order. */
		if (v->have_last && strcmp(link.time, v->last_time) < 0) {
			snprintf(why, why_len, "a new chain older than the record before it "
				 "(files out of order?)");
			return KS_AUDIT_BAD;
		}
		if (v->have_last) {
			snprintf(why, why_len, "warning: a new chain (\"%s\"): not linked to the "
				 "previous file", link.start == KS_AUDIT_CHAIN_NEW ? "new" : "restart");
			verdict = KS_AUDIT_WARNING;
		} else if (link.start == KS_AUDIT_CHAIN_RESTART) {
			snprintf(why, why_len, "warning: the chain restarts here: keysvcd could "
				 "not read the record before it");
			verdict = KS_AUDIT_WARNING;
		}
	} else if (v->have_last) {
		if (link.seq <= v->last_seq) {
			snprintf(why, why_len, "out of order: seq %" PRIu64 " after %" PRIu64
				 " (records reordered or repeated)", link.seq, v->last_seq);
			return KS_AUDIT_BAD;
		}
		if (link.seq != v->last_seq + 1) {
			snprintf(why, why_len, "records missing before this one: seq %" PRIu64
				 " after %" PRIu64, link.seq, v->last_seq);
			return KS_AUDIT_BAD;
		}
		if (strcmp(link.prev, v->last_hash) != 0) {
			snprintf(why, why_len, "edited: its hash is not the \"prev\" of the record after it");
			return KS_AUDIT_BAD_BEFORE;
		}
	}
	v->have_last = 1;
	v->last_seq = link.seq;
	memcpy(v->last_time, link.time, sizeof(v->last_time));
	ks_auditchain_hash(line, len, v->last_hash);
	return verdict;
}
