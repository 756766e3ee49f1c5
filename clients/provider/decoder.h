/*
 * The decoders of key reference files (decoder.c, format in keyref.h),
 * listed by provider.c under OSSL_OP_DECODER:
 *   "DER"  input=pem                                PEM block -> DER
 *   "RSA"  input=der,structure=KeysvcKeyReference   DER -> keysvc RSA key
 *   "EC"   input=der,structure=KeysvcKeyReference   DER -> keysvc EC key
 */
#ifndef KEYSVC_CLIENTS_PROVIDER_DECODER_H
#define KEYSVC_CLIENTS_PROVIDER_DECODER_H

#include <openssl/core_dispatch.h>

#include "clients/provider/keyref.h"

#define KSP_DECODER_DER_PROPS "provider=keysvc,input=der,structure=" KSP_KEYREF_STRUCTURE

extern const OSSL_DISPATCH ksp_pem_decoder_functions[];
extern const OSSL_DISPATCH ksp_der_rsa_decoder_functions[];
extern const OSSL_DISPATCH ksp_der_ec_decoder_functions[];

#endif
