/*
 * Key reference files: a PEM file that names a key held by keysvcd (and,
 * optionally, the socket of the keysvcd it was made for) and holds no
 * secret. `keysvc key-ref` writes them; the provider's decoder (decoder.c)
 * reads them wherever an OpenSSL 3 program reads a PEM private key, so
 * curl --key, Python's load_cert_chain(keyfile=) and nginx's
 * ssl_certificate_key use the token's key through keysvcd.
 *
 *   -----BEGIN KEYSVC KEY REFERENCE-----
 *   base64 of the DER of
 *     KeysvcKeyReference ::= SEQUENCE {
 *       description  VisibleString ("keysvc key reference"),
 *       key          UTF8String (the key name, keysvc's name rule),
 *       socket   [0] IMPLICIT UTF8String OPTIONAL (keysvcd's socket path)
 *     }
 *   -----END KEYSVC KEY REFERENCE-----
 *
 * Only libcrypto: the CLI and the provider both build this file.
 */
#ifndef KEYSVC_CLIENTS_PROVIDER_KEYREF_H
#define KEYSVC_CLIENTS_PROVIDER_KEYREF_H

#include <stddef.h>

#include "proto/wire.h"

#define KSP_KEYREF_PEM_LABEL "KEYSVC KEY REFERENCE"
#define KSP_KEYREF_DESCRIPTION "keysvc key reference"
/* The OSSL_OBJECT_PARAM_DATA_STRUCTURE between the PEM and the DER decoder. */
#define KSP_KEYREF_STRUCTURE "KeysvcKeyReference"
#define KSP_KEYREF_NAME_MAX KS_KEY_NAME_MAX
/* sizeof(sun_path) - 1: a longer path would name another socket. */
#define KSP_KEYREF_SOCKET_MAX 107
/* A reference is a few hundred bytes; anything larger is not one. */
#define KSP_KEYREF_DER_MAX 1024

struct ksp_keyref {
	char name[KSP_KEYREF_NAME_MAX + 1];
	char socket[KSP_KEYREF_SOCKET_MAX + 1];   /* "": the reader's own socket */
};

/*
 * Decode the DER body of a key reference into @ref. 0 on success;
 * -ENOMSG when @der is not a keysvc key reference at all (other DER: let
 * other decoders try it); -EINVAL when it is one but a field is bad, with
 * @why (room for @why_len bytes) saying which.
 */
int ksp_keyref_decode(const unsigned char *der, size_t len, struct ksp_keyref *ref,
		      char *why, size_t why_len);

/*
 * The PEM text of a reference to key @name, with @socket unless NULL or
 * empty, into *@pem (malloc'd, NUL-terminated). 0, -EINVAL for a bad name
 * or socket, -ENOMEM.
 */
int ksp_keyref_pem(const char *name, const char *socket, char **pem);

#endif
