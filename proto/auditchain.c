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

/* Letters, digits, '.', '_', '-' and ':': nothing JSON would escape. */
static int plain(const char *s)
{
	if (s == NULL)
		return 1;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-' ||
		      *s == ':'))
			return 0;
	return 1;
}

/* The general path, for strings that need escaping; same fields, same order. */
static int format_json(const struct ks_audit_record *rec, char *buf, size_t size, size_t *len)
{
	json_t *o = json_object();
	char *s = NULL;
	size_t n;
	int r = -ENOMEM;

	if (o == NULL)
		return -ENOMEM;
	if (json_object_set_new(o, "time", json_string(rec->time)) != 0 ||
	    json_object_set_new(o, "seq", json_integer((json_int_t)rec->seq)) != 0 ||
	    json_object_set_new(o, "prev", json_string(rec->prev)) != 0 ||
	    (rec->chain != NULL && json_object_set_new(o, "chain", json_string(rec->chain)) != 0) ||
	    (rec->lost > 0 && json_object_set_new(o, "lost", json_integer((json_int_t)rec->lost)) != 0) ||
	    json_object_set_new(o, "uid", json_integer(rec->uid)) != 0 ||
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
	/* json_string() refuses invalid UTF-8: such a field is missing and the line is refused. */
	if ((s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
		goto out;
	n = strlen(s);
	r = -EMSGSIZE;
	if (n > KS_AUDIT_LINE_MAX || n + 2 > size)
		goto out;
	memcpy(buf, s, n + 1);
	*len = n;
	r = 0;
out:
	free(s);
	json_decref(o);
	return r;
}

int ks_auditchain_format(const struct ks_audit_record *rec, char *buf, size_t size, size_t *len)
{
	char lost[40] = "", hash[192] = "", purpose[64] = "", intent[40] = "", outcome[96] = "";
	int n;

	/*
	 * keysvcd passes operation names, validated key names, error names
	 * and hex: formatting them directly keeps jansson's allocations off
	 * the signing path. Anything else takes the general path, so the line
	 * is valid JSON whatever the caller passes.
	 */
	if (!plain(rec->time) || !plain(rec->prev) || !plain(rec->chain) || !plain(rec->op) ||
	    !plain(rec->key) || !plain(rec->hash_name) || !plain(rec->hash_hex) ||
	    !plain(rec->outcome) || !plain(rec->purpose) ||
	    (rec->purpose != NULL && strlen(rec->purpose) > 32) ||
	    (rec->hash_name != NULL && rec->hash_hex == NULL) ||
	    (rec->outcome != NULL && strlen(rec->outcome) > 64) ||
	    (rec->hash_name != NULL && strlen(rec->hash_name) + strlen(rec->hash_hex) > 160))
		return format_json(rec, buf, size, len);
	if (rec->lost > 0)
		snprintf(lost, sizeof(lost), ",\"lost\":%" PRIu64, rec->lost);
	if (rec->hash_name != NULL)
		snprintf(hash, sizeof(hash), ",\"%s\":\"%s\"", rec->hash_name, rec->hash_hex);
	if (rec->purpose != NULL)
		snprintf(purpose, sizeof(purpose), ",\"purpose\":\"%s\"", rec->purpose);
	if (rec->intent > 0)
		snprintf(intent, sizeof(intent), ",\"intent\":%" PRIu64, rec->intent);
	if (rec->outcome != NULL)
		snprintf(outcome, sizeof(outcome), ",\"outcome\":\"%s\"", rec->outcome);
	n = snprintf(buf, size,
		     "{\"time\":\"%s\",\"seq\":%" PRIu64 ",\"prev\":\"%s\"%s%s%s%s,\"uid\":%" PRIu32
		     ",\"gid\":%" PRIu32 ",\"pid\":%" PRId64 ",\"op\":%s%s%s%s%s%s%s%s%s%s%s}",
		     rec->time, rec->seq, rec->prev,
		     rec->chain ? ",\"chain\":\"" : "", rec->chain ? rec->chain : "",
		     rec->chain ? "\"" : "", lost, rec->uid, rec->gid, rec->pid,
		     rec->op ? "\"" : "null", rec->op ? rec->op : "", rec->op ? "\"" : "",
		     rec->key ? ",\"key\":\"" : "", rec->key ? rec->key : "", rec->key ? "\"" : "",
		     rec->is_intent ? ",\"phase\":\"intent\"" : "", hash, purpose, intent, outcome);
	if (n < 0 || (size_t)n > KS_AUDIT_LINE_MAX || (size_t)n + 2 > size)
		return -EMSGSIZE;
	*len = (size_t)n;
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

void ks_auditchain_hash(const char *line, size_t len, char hex[KS_AUDIT_HASH_HEX])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned md_len = 0;

	if (ks_sha256_md() == NULL ||
	    EVP_Digest(line, len, md, &md_len, ks_sha256_md(), NULL) != 1 || md_len != 32) {
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
