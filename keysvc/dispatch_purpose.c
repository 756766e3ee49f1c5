/*
 * Key purposes in the dispatcher (issue 21): which purpose a request
 * uses its key under, decided from the request's form, and whether the
 * key's purposes (stored in the token) and the policy allow it. Decided
 * before the token signs anything: the only token call on the way is the
 * lookup of the key's purposes, which a signature makes anyway.
 */
#include "keysvc/dispatch_internal.h"

#include <errno.h>
#include <stdio.h>

#include "proto/sigform.h"

json_t *ks_purposes_json(unsigned set)
{
	json_t *arr = json_array();

	for (unsigned bit = 1; arr != NULL && bit <= KS_PURPOSE_ALL; bit <<= 1)
		if ((set & bit) && json_array_append_new(arr, json_string(ks_purpose_name(bit))) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	return arr;
}

int ks_purposes_set_in(json_t *result, unsigned set, int legacy)
{
	if (result == NULL)
		return -ENOMEM;
	if (json_object_set_new(result, "purposes", ks_purposes_json(set)) != 0 ||
	    (legacy && json_object_set_new(result, "purposes_legacy", json_true()) != 0))
		return -ENOMEM;
	return 0;
}

/* "csr,tls", or "none" for a key whose stored purposes do not parse. */
static const char *set_text(unsigned set, char buf[KS_PURPOSES_TEXT_MAX])
{
	if (ks_purposes_format(set, buf, KS_PURPOSES_TEXT_MAX) < 0)
		snprintf(buf, KS_PURPOSES_TEXT_MAX, "none");
	return buf;
}

/*
 * The purpose a data request has by its form when no allowed purpose
 * takes it: the structured form it has, else sign (raw data).
 */
static unsigned data_form(const uint8_t *data, size_t len)
{
	static const unsigned structured[] = { KS_PURPOSE_TLS, KS_PURPOSE_HTTP_SIGNATURE };
	const char *w = NULL;

	for (size_t i = 0; i < sizeof(structured) / sizeof(structured[0]); i++)
		if (ks_sigform_check(structured[i], data, len, &w) == 0)
			return structured[i];
	return KS_PURPOSE_SIGN;
}

int ks_purpose_authorize(struct ks_ctx *ctx, const struct ks_policy *policy,
			 const struct ks_peer *peer, enum ks_op op, const char *key,
			 const uint8_t *data, size_t data_len, int is_data,
			 const char **purpose, struct ks_reply *rep)
{
	char have[KS_PURPOSES_TEXT_MAX], granted_text[KS_PURPOSES_TEXT_MAX];
	const char *why = NULL;
	unsigned kp = 0, granted, wanted;
	int legacy = 0, r;

	*purpose = NULL;
	if ((r = ks_token_key_purposes(ctx->token, key, &kp, &legacy)) != 0)
		return ks_reply_token_error(rep, r, key);
	granted = ks_policy_purposes(policy, peer, op, key);
	if (op == KS_OP_CSR_CREATE)
		wanted = KS_PURPOSE_CSR;
	else if (!is_data)
		wanted = KS_PURPOSE_SIGN;
	else if (ks_sigform_match(kp & granted, data, data_len, &wanted, &why) != 0)
		wanted = data_form(data, data_len);
	*purpose = ks_purpose_name(wanted);
	if (!(kp & wanted)) {
		if (op == KS_OP_CSR_CREATE)
			return ks_reply_error(rep, -EACCES, "key %s has the purposes %s: csr.create "
					      "needs the purpose csr", key, set_text(kp, have));
		if (!is_data)
			return ks_reply_error(rep, -EACCES, "key %s has the purposes %s: signing a "
					      "digest needs the purpose sign", key, set_text(kp, have));
		if (wanted == KS_PURPOSE_SIGN)
			return ks_reply_error(rep, -EACCES, "key %s has the purposes %s: data of no "
					      "form they allow needs the purpose sign (%s)", key,
					      set_text(kp, have), why != NULL ? why : "no form");
		return ks_reply_error(rep, -EACCES, "key %s has the purposes %s: this data is a "
				      "%s signature input, which needs the purpose %s", key,
				      set_text(kp, have), *purpose, *purpose);
	}
	if (!(granted & wanted))
		return ks_reply_error(rep, -EACCES, "uid %u is granted %s on key %s only for the "
				      "purposes %s, not %s", (unsigned)peer->uid, ks_op_name(op), key,
				      set_text(granted, granted_text), *purpose);
	return 0;
}
