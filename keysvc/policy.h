/*
 * Access policy: who may do what to which key.
 *
 * A policy is a list of rules; a request runs only if some rule matches
 * the peer (uid and/or gid, from SO_PEERCRED / SO_PEERGROUPS) and names the
 * operation and a key pattern (fnmatch(3)) that matches the key. Anything
 * not granted is denied; there is no implicit grant for root.
 *
 * A policy is immutable once built and reference counted, so a SIGHUP
 * reload swaps it while requests in flight keep the old one.
 */
#ifndef KEYSVC_POLICY_H
#define KEYSVC_POLICY_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "proto/wire.h"

#define KS_PEER_MAX_GROUPS 64

struct ks_peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	size_t ngroups;                       /* supplementary groups known */
	gid_t groups[KS_PEER_MAX_GROUPS];
};

struct ks_policy;

/*
 * Build a policy from the JSON array @rules. Each rule is an object:
 *   "uid":  number or user name      (at least one of uid/gid)
 *   "gid":  number or group name     (matches the primary or a supplementary group)
 *   "keys": array of fnmatch patterns (required, non-empty)
 *   "ops":  array of operation names  (required, non-empty; "hello" is implied)
 *   "purposes": array of key purposes (optional; proto/sigform.h's names):
 *           the rule's sign and csr.create are granted only for uses
 *           under these purposes (csr.create is the purpose csr); a rule
 *           without it grants every purpose the key has. Only in a rule
 *           that grants sign or csr.create.
 *   "comment": string, ignored
 * Names are resolved once, here. Unknown fields, unknown operations,
 * unknown users or groups are errors: a typo must never widen or silently
 * narrow access. Returns 0 or -EINVAL with @err filled, -ENOMEM.
 */
int ks_policy_from_json(json_t *rules, struct ks_policy **out, char *err,
			size_t err_len);

struct ks_policy *ks_policy_ref(struct ks_policy *p);
void ks_policy_unref(struct ks_policy *p);

/* Number of rules. */
size_t ks_policy_size(const struct ks_policy *p);

/*
 * 1 if a rule grants @peer @op on @key. For KS_OP_HELLO @key is ignored
 * and any rule matching the peer grants it. A NULL @key asks whether @op
 * is granted on some key (key.list uses it before filtering each name);
 * never pass NULL for an operation on one key. @p NULL denies everything.
 */
int ks_policy_allows(const struct ks_policy *p, const struct ks_peer *peer,
		     enum ks_op op, const char *key);

/*
 * The purposes (KS_PURPOSE_* bits) under which the rules that grant @peer
 * @op on @key let it use the key: the union of their "purposes", each
 * rule without one counting as all. 0 when no rule grants it. The
 * dispatcher asks it for sign and csr.create once it knows the purpose
 * of the request.
 */
unsigned ks_policy_purposes(const struct ks_policy *p, const struct ks_peer *peer,
			    enum ks_op op, const char *key);

/*
 * 1 if some rule names @peer (its uid, or its primary or a supplementary
 * group), whatever it grants. keysvcd gives a peer no rule names one
 * answered request per connection and a smaller share of the connection
 * slots (keysvc/server.h). @p NULL knows nobody.
 */
int ks_policy_knows_peer(const struct ks_policy *p, const struct ks_peer *peer);

#endif
