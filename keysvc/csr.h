/*
 * PKCS#10 certificate signing requests whose signature is made elsewhere
 * (in the token): the request info is built and DER-encoded here, hashed,
 * handed to a signing callback, and the returned signature attached.
 */
#ifndef KEYSVC_CSR_H
#define KEYSVC_CSR_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "proto/alg.h"

/* keyUsage bits, as named on the wire. */
enum ks_key_usage {
	KS_KU_DIGITAL_SIGNATURE = 1 << 0,
	KS_KU_NON_REPUDIATION = 1 << 1,   /* "contentCommitment" on the wire too */
	KS_KU_KEY_ENCIPHERMENT = 1 << 2,
	KS_KU_DATA_ENCIPHERMENT = 1 << 3,
	KS_KU_KEY_AGREEMENT = 1 << 4,
	KS_KU_KEY_CERT_SIGN = 1 << 5,
	KS_KU_CRL_SIGN = 1 << 6,
};

/* One extra attribute (e.g. Puppet's 1.3.6.1.4.1.34380.1.3.2 = "true"). */
struct ks_csr_attr {
	const char *oid;        /* dotted decimal, no names */
	const char *value;
	/* "utf8" (default when NULL), "printable" or "ia5". */
	const char *string_type;
};

struct ks_csr_params {
	/* RFC 4514 string; see ks_rfc4514_parse(). Required. */
	const char *subject;
	const char *const *dns; size_t n_dns;
	const char *const *ip; size_t n_ip;         /* IPv4 or IPv6 text */
	const char *const *uri; size_t n_uri;
	const char *const *email; size_t n_email;
	unsigned key_usage;                        /* enum ks_key_usage bits; 0 = no extension */
	/* Names ("serverAuth", "clientAuth", "codeSigning", "emailProtection",
	 * "timeStamping", "OCSPSigning") or dotted OIDs, each usage once (a
	 * name and its OID are the same usage). */
	const char *const *ext_key_usage; size_t n_ext_key_usage;
	const struct ks_csr_attr *attrs; size_t n_attrs;
	/* The signature algorithm; must fit the key (ks_sig_alg_for_digest()). */
	enum ks_sig_alg alg;
};

/*
 * Signs @digest (@tbs, the DER of the CertificationRequestInfo, already
 * hashed with the algorithm's digest) with algorithm @alg; returns 0 and
 * a malloc'd signature, or a negative errno that ks_csr_create() passes
 * back unchanged. @tbs is there for the audit log, which names what the
 * key signs.
 */
typedef int (*ks_csr_sign_fn)(void *arg, enum ks_sig_alg alg,
			      const uint8_t *tbs, size_t tbs_len,
			      const uint8_t *digest, size_t digest_len,
			      uint8_t **sig, size_t *sig_len);

/*
 * Parse an RFC 4514 distinguished name ("CN=x,O=Example,C=US") into an
 * X509_NAME. RFC 4514 writes the most specific RDN first, so the string's
 * last RDN becomes the first in the encoded sequence, and
 * `openssl req -subject -nameopt RFC2253` prints the string back.
 * Supported: the attribute types CN, C, L, ST, O, OU, STREET, DC, UID,
 * SERIALNUMBER, emailAddress (case-insensitive) and dotted OIDs; '+' for
 * multi-valued RDNs; escapes "\," "\+" "\"" "\\" "\<" "\>" "\;" "\=" "\ "
 * "\#" and "\XX" hex pairs (which must form valid UTF-8). "#hex" BER values are
 * rejected. C must be two letters. Empty strings, empty values, and
 * values over 256 bytes are rejected, and so are values with control
 * characters (C0, DEL, C1), bidirectional overrides (U+202A..U+202E,
 * U+2066..U+2069) or zero-width characters (U+200B..U+200D, U+2060,
 * U+FEFF), and a CN of more than 64 characters (X.520 ub-common-name).
 * Returns 0, -EINVAL (with *@err set to a static description), or -ENOMEM.
 */
int ks_rfc4514_parse(const char *s, X509_NAME **out, const char **err);

/* Parse a keyUsage name ("digitalSignature") to its bit; 0 if unknown. */
unsigned ks_key_usage_from_name(const char *name);

/*
 * Build the CSR for public key @pub with @params, sign it through @sign,
 * and return it PEM-encoded in *@pem (NUL-terminated, caller frees).
 * The signature is checked against @pub before returning (a token that
 * signed with another key is an -EIO, not a bad CSR).
 * Returns 0, -EINVAL (*@err describes the bad parameter), -ENOMEM, -EIO,
 * or whatever @sign returned.
 */
int ks_csr_create(EVP_PKEY *pub, const struct ks_csr_params *params,
		  ks_csr_sign_fn sign, void *sign_arg, char **pem,
		  const char **err);

#endif
