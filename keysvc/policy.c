#include "keysvc/policy.h"

#include <errno.h>
#include <fnmatch.h>
#include <grp.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/json.h"
#include "proto/sigform.h"

#define KS_POLICY_MAX_RULES 1024
#define KS_POLICY_MAX_PATTERNS 64
#define KS_POLICY_PATTERN_MAX 128

struct ks_rule {
	int has_uid, has_gid;
	uid_t uid;
	gid_t gid;
	unsigned ops;               /* bit per enum ks_op */
	unsigned purposes;          /* the key uses it grants (KS_PURPOSE_*); KS_PURPOSE_ALL if unnamed */
	size_t npatterns;
	char **patterns;
};

struct ks_policy {
	atomic_int refs;
	size_t nrules;
	struct ks_rule *rules;
};

static void rule_clear(struct ks_rule *r)
{
	for (size_t i = 0; i < r->npatterns; i++)
		free(r->patterns[i]);
	free(r->patterns);
	memset(r, 0, sizeof(*r));
}

static void policy_free(struct ks_policy *p)
{
	for (size_t i = 0; i < p->nrules; i++)
		rule_clear(&p->rules[i]);
	free(p->rules);
	free(p);
}

struct ks_policy *ks_policy_ref(struct ks_policy *p)
{
	if (p != NULL)
		atomic_fetch_add(&p->refs, 1);
	return p;
}

void ks_policy_unref(struct ks_policy *p)
{
	if (p != NULL && atomic_fetch_sub(&p->refs, 1) == 1)
		policy_free(p);
}

size_t ks_policy_size(const struct ks_policy *p)
{
	return p != NULL ? p->nrules : 0;
}

/*
 * A name that is all digits is a number; anything else is looked up
 * (strtoul() alone would also take " 0", "+0" or "-18446744073709551615").
 */
static int parse_id(json_t *v, int is_group, unsigned long *id, const char **why)
{
	char buf[4096];
	const char *s;
	char *end;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0 || json_integer_value(v) >= (json_int_t)UINT32_MAX) {
			*why = "id out of range";
			return -EINVAL;
		}
		*id = (unsigned long)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 256) {
		*why = "must be a number or a name";
		return -EINVAL;
	}
	s = json_string_value(v);
	errno = 0;
	*id = strtoul(s, &end, 10);
	if (*end == '\0' && errno == 0 && s[0] >= '0' && s[0] <= '9' && *id < UINT32_MAX)
		return 0;
	if (is_group) {
		struct group gr, *res = NULL;

		if (getgrnam_r(s, &gr, buf, sizeof(buf), &res) != 0 || res == NULL) {
			*why = "unknown group";
			return -EINVAL;
		}
		*id = res->gr_gid;
	} else {
		struct passwd pw, *res = NULL;

		if (getpwnam_r(s, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
			*why = "unknown user";
			return -EINVAL;
		}
		*id = res->pw_uid;
	}
	return 0;
}

struct rule_json {
	json_t *uid, *gid;
	struct ks_strv keys, ops, purposes;
	const char *comment;
};

static const struct ks_json_field rule_fields[] = {
	{ "uid", KS_JSON_ANY, offsetof(struct rule_json, uid), 0, 0 },
	{ "gid", KS_JSON_ANY, offsetof(struct rule_json, gid), 0, 0 },
	{ "keys", KS_JSON_STRV, offsetof(struct rule_json, keys), KS_JSON_REQUIRED, KS_POLICY_MAX_PATTERNS },
	{ "ops", KS_JSON_STRV, offsetof(struct rule_json, ops), KS_JSON_REQUIRED, KS_OP_COUNT },
	{ "purposes", KS_JSON_STRV, offsetof(struct rule_json, purposes), 0, KS_PURPOSES_MAX },
	{ "comment", KS_JSON_STRING, offsetof(struct rule_json, comment), 0, 1024 },
	{ NULL, 0, 0, 0, 0 },
};

/*
 * On -EINVAL *@field names the field, *@why the problem and *@value, when
 * not NULL, the offending value as the file has it (a user, group,
 * operation or pattern), so the administrator sees which one.
 */
static int rule_from_json(json_t *obj, struct ks_rule *rule, const char **field,
			  const char **why, const char **value)
{
	struct rule_json rj;
	unsigned long id;
	int r, op;

	memset(&rj, 0, sizeof(rj));
	if ((r = ks_json_dispatch(obj, rule_fields, &rj, 0, field, why)) != 0)
		return r;
	if (rj.uid == NULL && rj.gid == NULL) {
		*field = "uid";
		*why = "a rule needs uid or gid";
		return -EINVAL;
	}
	if (rj.uid != NULL) {
		*field = "uid";
		if ((r = parse_id(rj.uid, 0, &id, why)) != 0) {
			*value = json_string_value(rj.uid);
			return r;
		}
		rule->has_uid = 1;
		rule->uid = (uid_t)id;
	}
	if (rj.gid != NULL) {
		*field = "gid";
		if ((r = parse_id(rj.gid, 1, &id, why)) != 0) {
			*value = json_string_value(rj.gid);
			return r;
		}
		rule->has_gid = 1;
		rule->gid = (gid_t)id;
	}
	*field = "ops";
	if (rj.ops.n == 0) {
		*why = "must not be empty";
		return -EINVAL;
	}
	for (size_t i = 0; i < rj.ops.n; i++) {
		if ((op = ks_op_from_name(rj.ops.v[i])) < 0) {
			*why = "unknown operation";
			*value = rj.ops.v[i];
			return -EINVAL;
		}
		rule->ops |= 1u << op;
	}
	rule->ops |= 1u << KS_OP_HELLO;
	rule->purposes = KS_PURPOSE_ALL;
	if (json_object_get(obj, "purposes") != NULL) {
		*field = "purposes";
		if ((r = ks_purposes_from_names((const char *const *)rj.purposes.v, rj.purposes.n,
						&rule->purposes, NULL, why)) != 0)
			return -EINVAL;
		/* A limit on uses of a key means nothing to a rule that grants none. */
		if (!(rule->ops & (1u << KS_OP_SIGN | 1u << KS_OP_CSR_CREATE))) {
			*why = "limits sign and csr.create, which the rule does not grant";
			return -EINVAL;
		}
	}
	*field = "keys";
	if (rj.keys.n == 0) {
		*why = "must not be empty";
		return -EINVAL;
	}
	rule->patterns = calloc(rj.keys.n, sizeof(*rule->patterns));
	if (rule->patterns == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < rj.keys.n; i++) {
		if (strlen(rj.keys.v[i]) == 0 || strlen(rj.keys.v[i]) > KS_POLICY_PATTERN_MAX) {
			*why = "pattern empty or too long";
			*value = rj.keys.v[i];
			return -EINVAL;
		}
		if ((rule->patterns[i] = strdup(rj.keys.v[i])) == NULL)
			return -ENOMEM;
		rule->npatterns++;
	}
	*field = NULL;
	return 0;
}

int ks_policy_from_json(json_t *rules, struct ks_policy **out, char *err,
			size_t err_len)
{
	struct ks_policy *p = NULL;
	const char *field = NULL, *why = NULL, *value = NULL;
	size_t i;
	json_t *v;
	int r;

	*out = NULL;
	if (!json_is_array(rules)) {
		snprintf(err, err_len, "policy: must be an array of rules");
		return -EINVAL;
	}
	if (json_array_size(rules) > KS_POLICY_MAX_RULES) {
		snprintf(err, err_len, "policy: more than %d rules", KS_POLICY_MAX_RULES);
		return -EINVAL;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	atomic_init(&p->refs, 1);
	if (json_array_size(rules) > 0 &&
	    (p->rules = calloc(json_array_size(rules), sizeof(*p->rules))) == NULL) {
		r = -ENOMEM;
		goto out;
	}
	json_array_foreach(rules, i, v) {
		p->nrules = i + 1;
		r = rule_from_json(v, &p->rules[i], &field, &why, &value);
		if (r == -EINVAL && value != NULL) {
			/* Long values are cut: the message is for finding the rule, not for a copy of it. */
			snprintf(err, err_len, "policy rule %zu: %s \"%.80s\": %s", i + 1,
				 field ? field : "value", value, why);
			goto out;
		}
		if (r == -EINVAL) {
			snprintf(err, err_len, "policy rule %zu: %s%s%s", i + 1,
				 field ? field : "", field ? ": " : "", why);
			goto out;
		}
		if (r != 0)
			goto out;
	}
	*out = p;
	p = NULL;
	r = 0;
out:
	if (p != NULL)
		policy_free(p);
	return r;
}

static int rule_matches_peer(const struct ks_rule *rule, const struct ks_peer *peer)
{
	if (rule->has_uid && rule->uid != peer->uid)
		return 0;
	if (rule->has_gid) {
		if (rule->gid == peer->gid)
			return 1;
		for (size_t i = 0; i < peer->ngroups && i < KS_PEER_MAX_GROUPS; i++)
			if (peer->groups[i] == rule->gid)
				return 1;
		return 0;
	}
	return 1;
}

int ks_policy_allows(const struct ks_policy *p, const struct ks_peer *peer,
		     enum ks_op op, const char *key)
{
	if (p == NULL || peer == NULL || (unsigned)op >= KS_OP_COUNT)
		return 0;
	for (size_t i = 0; i < p->nrules; i++) {
		const struct ks_rule *rule = &p->rules[i];

		if (!(rule->ops & (1u << op)) || !rule_matches_peer(rule, peer))
			continue;
		if (op == KS_OP_HELLO || key == NULL)
			return 1;
		for (size_t j = 0; j < rule->npatterns; j++)
			if (fnmatch(rule->patterns[j], key, FNM_PERIOD) == 0)
				return 1;
	}
	return 0;
}

unsigned ks_policy_purposes(const struct ks_policy *p, const struct ks_peer *peer,
			    enum ks_op op, const char *key)
{
	unsigned granted = 0;

	if (p == NULL || peer == NULL || key == NULL || (unsigned)op >= KS_OP_COUNT)
		return 0;
	for (size_t i = 0; i < p->nrules; i++) {
		const struct ks_rule *rule = &p->rules[i];

		if (!(rule->ops & (1u << op)) || !rule_matches_peer(rule, peer))
			continue;
		for (size_t j = 0; j < rule->npatterns; j++)
			if (fnmatch(rule->patterns[j], key, FNM_PERIOD) == 0) {
				granted |= rule->purposes;
				break;
			}
	}
	return granted;
}

int ks_policy_knows_peer(const struct ks_policy *p, const struct ks_peer *peer)
{
	if (p == NULL || peer == NULL)
		return 0;
	for (size_t i = 0; i < p->nrules; i++)
		if (rule_matches_peer(&p->rules[i], peer))
			return 1;
	return 0;
}
