/*
 * Purpose-bound keys (issue 21) through a running keysvcd: the purposes a
 * key is generated with are kept in the token (its CKA_ID, read back here
 * with a PKCS#11 session of our own) and survive a restart; sign and
 * csr.create outside them are denied, naming the key's purposes, and
 * audited with the purpose refused, before the token signs anything
 * (keysvcd runs over tests/faultp11, whose next C_SignInit fails: a
 * refused request leaves that fault unused); a policy rule may limit sign
 * and csr.create to purposes; keys without stored purposes (made before
 * them) have every purpose, are marked legacy in key.list and named in a
 * warning at start, and a key whose stored purposes do not parse may sign
 * nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "tests/common/daemon.h"

/*
 * uid 0 (the test) may do everything to k-*, legacy and broken; on web-*
 * keys its sign and csr.create are limited to the purpose tls.
 */
#define POLICY "[{\"uid\":0,\"keys\":[\"*\"],\"ops\":[\"key.generate\",\"key.list\"," \
	"\"key.public\",\"key.delete\",\"cert.put\",\"cert.get\"]}," \
	"{\"uid\":0,\"keys\":[\"k-*\",\"legacy\",\"broken\"],\"ops\":[\"sign\",\"csr.create\"]}," \
	"{\"uid\":0,\"keys\":[\"web-*\"],\"ops\":[\"sign\",\"csr.create\"],\"purposes\":[\"tls\"]}]"

static struct ks_td td;
static char control[PATH_MAX + 32];

/* faultp11's control line, replaced atomically. */
static void set_fault(const char *line)
{
	char tmp[PATH_MAX + 64];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.new", control);
	assert_non_null(f = fopen(tmp, "w"));
	fprintf(f, "%s\n", line);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, control), 0);
}

static char *read_control(void)
{
	size_t len = 0;
	char *s = ks_td_read_file(control, &len);

	assert_non_null(s);
	return s;
}

/* ---- a PKCS#11 session of our own on the daemon's token ---- */

static CK_FUNCTION_LIST *raw;
static CK_SLOT_ID raw_slot;

static CK_SESSION_HANDLE raw_session(void)
{
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	CK_SESSION_HANDLE s;
	CK_RV rv;

	if (raw == NULL) {
		assert_non_null(raw = p11_kit_module_load(td.token.module, P11_KIT_MODULE_UNMANAGED));
		rv = p11_kit_module_initialize(raw);
		assert_true(rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
		assert_int_equal(raw->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
		assert_true(n >= 1);
		raw_slot = slots[0];
	}
	assert_int_equal(raw->C_OpenSession(raw_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
					    NULL, &s), CKR_OK);
	rv = raw->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)td.token.pin, td.token.pin_len);
	assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
	return s;
}

static void raw_done(CK_SESSION_HANDLE s)
{
	raw->C_CloseSession(s);
	/* A new module instance sees what keysvcd wrote meanwhile. */
	p11_kit_module_finalize(raw);
	p11_kit_module_release(raw);
	raw = NULL;
}

/* A P-256 key pair made as another program (or keysvcd before purposes) would: CKA_ID @id. */
static void raw_generate(const char *label, const uint8_t *id, size_t id_len)
{
	static const uint8_t p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE pub[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_EC_PARAMS, (void *)(uintptr_t)p256, sizeof(p256) },
		{ CKA_LABEL, (void *)(uintptr_t)label, strlen(label) },
		{ CKA_ID, (void *)(uintptr_t)id, id_len },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)(uintptr_t)label, strlen(label) },
		{ CKA_ID, (void *)(uintptr_t)id, id_len },
	};
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_SESSION_HANDLE s = raw_session();

	assert_int_equal(raw->C_GenerateKeyPair(s, &mech, pub, 5, priv, 7, &hpub, &hpriv), CKR_OK);
	raw_done(s);
}

/* The CKA_ID of the private key labelled @label, as text from byte 16 on (the purposes). */
static void raw_id_tail(const char *label, char *out, size_t out_len)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)label, strlen(label) },
	};
	uint8_t id[256];
	CK_ATTRIBUTE a = { CKA_ID, id, sizeof(id) };
	CK_OBJECT_HANDLE h;
	CK_ULONG n = 0;
	CK_SESSION_HANDLE s = raw_session();

	assert_int_equal(raw->C_FindObjectsInit(s, tmpl, 2), CKR_OK);
	assert_int_equal(raw->C_FindObjects(s, &h, 1, &n), CKR_OK);
	assert_int_equal(raw->C_FindObjectsFinal(s), CKR_OK);
	assert_int_equal(n, 1);
	assert_int_equal(raw->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
	assert_true(a.ulValueLen > 16 && a.ulValueLen - 16 < out_len);
	memcpy(out, id + 16, a.ulValueLen - 16);
	out[a.ulValueLen - 16] = '\0';
	raw_done(s);
}

/* ---- requests ---- */

static json_t *request(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *request(const char *fmt, ...)
{
	char req[16384];
	va_list ap;
	json_t *resp;

	va_start(ap, fmt);
	vsnprintf(req, sizeof(req), fmt, ap);
	va_end(ap);
	assert_non_null(resp = ks_td_request_once(&td, req));
	return resp;
}

static void expect(json_t *resp, const char *outcome, const char *message_part, const char *what)
{
	const char *got = ks_td_outcome(resp);
	const char *msg = json_string_value(json_object_get(resp, "message"));

	if (strcmp(got, outcome) != 0)
		fail_msg("%s: expected %s, got %s (%s)", what, outcome, got, msg ? msg : "");
	if (message_part != NULL && (msg == NULL || strstr(msg, message_part) == NULL))
		fail_msg("%s: message \"%s\" does not say \"%s\"", what, msg ? msg : "",
			 message_part);
	json_decref(resp);
}

static char *b64(const uint8_t *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	assert_non_null(out);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* sign of @data (as data) with key @key. */
static json_t *sign_data(const char *key, const uint8_t *data, size_t len)
{
	char *d = b64(data, len);
	json_t *resp = request("{\"id\":1,\"op\":\"sign\",\"key\":\"%s\",\"alg\":\"ecdsa-sha256\","
			       "\"data\":\"%s\"}", key, d);

	free(d);
	return resp;
}

static json_t *sign_digest(const char *key)
{
	return request("{\"id\":1,\"op\":\"sign\",\"key\":\"%s\",\"alg\":\"ecdsa-sha256\","
		       "\"digest\":\"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\"}", key);
}

static void generate(const char *key, const char *purposes)
{
	json_t *resp = purposes != NULL ?
		request("{\"id\":1,\"op\":\"key.generate\",\"key\":\"%s\",\"type\":\"ec-p256\","
			"\"purposes\":%s}", key, purposes) :
		request("{\"id\":1,\"op\":\"key.generate\",\"key\":\"%s\",\"type\":\"ec-p256\"}", key);

	expect(resp, "ok", NULL, key);
}

/* "csr,tls" from a result's "purposes" array. */
static void purposes_of(json_t *obj, char *out, size_t len)
{
	json_t *arr = json_object_get(obj, "purposes"), *v;
	size_t i, used = 0;

	assert_true(json_is_array(arr));
	out[0] = '\0';
	json_array_foreach(arr, i, v)
		used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "," : "",
					 json_string_value(v));
}

static void expect_public_purposes(const char *key, const char *want, int legacy)
{
	json_t *resp = request("{\"id\":1,\"op\":\"key.public\",\"key\":\"%s\"}", key);
	char got[128];

	assert_string_equal(ks_td_outcome(resp), "ok");
	purposes_of(resp, got, sizeof(got));
	assert_string_equal(got, want);
	assert_int_equal(json_is_true(json_object_get(resp, 
						      "purposes_legacy")), legacy);
	json_decref(resp);
}

/* The last audit record naming @key: its "purpose" and "outcome" (or "phase"). */
static void expect_audit(const char *key, const char *purpose, const char *outcome)
{
	size_t len = 0;
	char *log = ks_td_audit_log(&td, &len), *line, *save = NULL, *last = NULL, needle[96];
	json_t *o;

	assert_non_null(log);
	snprintf(needle, sizeof(needle), "\"key\":\"%s\"", key);
	for (line = strtok_r(log, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
		if (strstr(line, needle) != NULL)
			last = line;
	assert_non_null(last);
	assert_non_null(o = json_loads(last, 0, NULL));
	if (json_string_value(json_object_get(o, "purpose")) == NULL ||
	    strcmp(json_string_value(json_object_get(o, "purpose")), purpose) != 0 ||
	    json_string_value(json_object_get(o, "outcome")) == NULL ||
	    strcmp(json_string_value(json_object_get(o, "outcome")), outcome) != 0)
		fail_msg("audit record %s: expected purpose %s, outcome %s", last, purpose, outcome);
	json_decref(o);
	free(log);
}

/* TLS 1.3 CertificateVerify content (RFC 8446 4.4.3) with @context and a SHA-256 transcript hash. */
static size_t tls13_content(const char *context, uint8_t *out)
{
	size_t n = 0;

	memset(out, 0x20, 64);
	n = 64;
	memcpy(out + n, context, strlen(context));
	n += strlen(context);
	out[n++] = 0x00;
	memset(out + n, 0xab, 32);
	return n + 32;
}

/* The DER of a CertificationRequestInfo and of a self-signed CA's TBSCertificate for @pub. */
static int forged_tbs(EVP_PKEY *pub, uint8_t **csr_info, int *csr_len, uint8_t **ca_tbs,
		      int *ca_len)
{
	X509_REQ *req = X509_REQ_new();
	X509 *ca = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509_EXTENSION *bc;
	X509V3_CTX v3;

	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"bank.example",
				   -1, -1, 0);
	X509_REQ_set_subject_name(req, name);
	X509_REQ_set_pubkey(req, pub);
	*csr_len = i2d_re_X509_REQ_tbs(req, csr_info);
	X509_set_version(ca, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
	X509_set_subject_name(ca, name);
	X509_set_issuer_name(ca, name);
	X509_gmtime_adj(X509_getm_notBefore(ca), 0);
	X509_gmtime_adj(X509_getm_notAfter(ca), 86400);
	X509_set_pubkey(ca, pub);
	X509V3_set_ctx(&v3, ca, ca, NULL, NULL, 0);
	bc = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(ca, bc, -1);
	X509_EXTENSION_free(bc);
	/* The signature algorithm the forger wants: set by signing with a throwaway key. */
	{
		EVP_PKEY *tmp = EVP_EC_gen("P-256");

		X509_sign(ca, tmp, EVP_sha256());
		EVP_PKEY_free(tmp);
	}
	*ca_len = i2d_re_X509_tbs(ca, ca_tbs);
	X509_NAME_free(name);
	X509_REQ_free(req);
	X509_free(ca);
	return *csr_len > 0 && *ca_len > 0 ? 0 : -1;
}

static EVP_PKEY *public_key(const char *key)
{
	json_t *resp = request("{\"id\":1,\"op\":\"key.public\",\"key\":\"%s\"}", key);
	const char *pem = json_string_value(json_object_get(resp, 
							   "public_key"));
	BIO *bio;
	EVP_PKEY *pub;

	assert_non_null(pem);
	bio = BIO_new_mem_buf(pem, -1);
	pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	json_decref(resp);
	assert_non_null(pub);
	return pub;
}

/* ---- fixture ---- */

static int setup(void **state)
{
	static const uint8_t legacy_id[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
	uint8_t broken_id[32];
	const char *shim = getenv("KS_FAULTP11");

	(void)state;
	if (shim == NULL) {
		fprintf(stderr, "KS_FAULTP11 is not set\n");
		return -1;
	}
	if (ks_td_init(&td, "keysvc-purposes", POLICY, 0, 0) != 0)
		return -1;
	snprintf(control, sizeof(control), "%s/fault-control", td.dir);
	setenv("KS_FAULTP11_TARGET", td.token.module, 1);
	setenv("KS_FAULTP11_CONTROL", control, 1);
	snprintf(td.module, sizeof(td.module), "%s", shim);
	set_fault("");
	/* Made before keysvcd starts: one from before purposes, one whose purposes do not parse. */
	raw_generate("legacy", legacy_id, sizeof(legacy_id));
	memcpy(broken_id, legacy_id, 16);
	memcpy(broken_id + 16, "ksp1:csr,frob", 13);
	raw_generate("broken", broken_id, 29);
	return ks_td_write_config(&td) == 0 && ks_td_start(&td) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	ks_td_teardown(&td);
	return 0;
}

/* ---- tests ---- */

/*
 * The default (csr,tls) key: every forgery of the issue is denied before
 * the token signs, naming the key's purposes, audited with the purpose
 * refused; the allowed uses (a CSR, a TLS 1.3 CertificateVerify content)
 * work and verify.
 */
static void test_csr_tls_key(void **state)
{
	static const char msg[] = "I, the holder of this key, owe the bearer 1000 EUR";
	uint8_t content[160], *csr_info = NULL, *ca_tbs = NULL;
	int csr_len = 0, ca_len = 0;
	size_t len;
	EVP_PKEY *pub;
	EVP_MD_CTX *m;
	X509_REQ *req;
	BIO *bio;
	json_t *resp;
	char *fault, *sig64;
	uint8_t sig[256];
	int sig_len;

	(void)state;
	generate("k-web", NULL);
	expect_public_purposes("k-web", "csr,tls", 0);
	pub = public_key("k-web");
	assert_int_equal(forged_tbs(pub, &csr_info, &csr_len, &ca_tbs, &ca_len), 0);

	/* The next C_SignInit fails: a request that reached the token would say internal. */
	set_fault("error CKR_FUNCTION_FAILED 1 C_SignInit");
	expect(sign_data("k-web", csr_info, (size_t)csr_len), "denied",
	       "key k-web has the purposes csr,tls", "a CertificationRequestInfo as data");
	expect_audit("k-web", "sign", "denied");
	expect(sign_data("k-web", ca_tbs, (size_t)ca_len), "denied",
	       "has the purposes csr,tls", "a self-signed CA's TBSCertificate as data");
	expect_audit("k-web", "sign", "denied");
	expect(sign_data("k-web", (const uint8_t *)msg, strlen(msg)), "denied",
	       "needs the purpose sign", "an arbitrary message");
	expect_audit("k-web", "sign", "denied");
	expect(sign_digest("k-web"), "denied", "signing a digest needs the purpose sign",
	       "a digest");
	expect_audit("k-web", "sign", "denied");
	len = tls13_content("TLS 1.3, server CertificateVerifx", content);
	expect(sign_data("k-web", content, len), "denied", "has the purposes csr,tls",
	       "TLS 1.3 content with a wrong context string");
	expect_audit("k-web", "sign", "denied");
	/* None of them reached C_SignInit: the fault is still armed. */
	fault = read_control();
	assert_non_null(strstr(fault, "C_SignInit"));
	free(fault);
	len = tls13_content("TLS 1.3, server CertificateVerify", content);
	expect(sign_data("k-web", content, len), "internal", NULL, "the armed fault");
	set_fault("");

	/* Allowed: a TLS 1.3 CertificateVerify content, audited as tls with its SHA-256. */
	resp = sign_data("k-web", content, len);
	assert_string_equal(ks_td_outcome(resp), "ok");
	sig64 = strdup(json_string_value(json_object_get(resp, "signature")));
	json_decref(resp);
	expect_audit("k-web", "tls", "ok");
	sig_len = EVP_DecodeBlock(sig, (const unsigned char *)sig64, (int)strlen(sig64));
	/* EVP_DecodeBlock() counts the padding as zero bytes. */
	for (size_t i = strlen(sig64); i > 0 && sig64[i - 1] == '='; i--)
		sig_len--;
	free(sig64);
	assert_non_null(m = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pub), 1);
	assert_int_equal(EVP_DigestVerify(m, sig, (size_t)sig_len, content, len), 1);
	EVP_MD_CTX_free(m);
	{
		size_t alen = 0;
		char *log = ks_td_audit_log(&td, &alen), hex[65];
		uint8_t md[32];

		assert_int_equal(EVP_Digest(content, len, md, NULL, EVP_sha256(), NULL), 1);
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		assert_non_null(strstr(log, hex));
		free(log);
	}

	/* Allowed: csr.create, which keysvcd builds itself. */
	resp = request("{\"id\":1,\"op\":\"csr.create\",\"key\":\"k-web\",\"subject\":\"CN=web\"}");
	assert_string_equal(ks_td_outcome(resp), "ok");
	bio = BIO_new_mem_buf(json_string_value(json_object_get(resp, 
								"csr")), -1);
	assert_non_null(req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL));
	assert_int_equal(X509_REQ_verify(req, pub), 1);
	X509_REQ_free(req);
	BIO_free(bio);
	json_decref(resp);
	expect_audit("k-web", "csr", "ok");
	OPENSSL_free(csr_info);
	OPENSSL_free(ca_tbs);
	EVP_PKEY_free(pub);
}

/* http-signature only: a signing string works, nothing else; sign: anything. */
static void test_other_purposes(void **state)
{
	static const char str[] = "date: Thu, 05 Jan 2014 21:31:40 GMT\n"
		"(request-target): get /20160918/instances?compartmentId=x\n"
		"host: iaas.us-phoenix-1.oraclecloud.com";
	uint8_t content[160];
	size_t len = tls13_content("TLS 1.3, client CertificateVerify", content);

	(void)state;
	generate("k-oci", "[\"http-signature\"]");
	expect_public_purposes("k-oci", "http-signature", 0);
	expect(sign_data("k-oci", (const uint8_t *)str, strlen(str)), "ok", NULL, "a signing string");
	expect_audit("k-oci", "http-signature", "ok");
	expect(sign_data("k-oci", content, len), "denied",
	       "is a tls signature input, which needs the purpose tls", "TLS content, http key");
	expect_audit("k-oci", "tls", "denied");
	expect(sign_digest("k-oci"), "denied", "has the purposes http-signature", "a digest");
	expect(request("{\"id\":1,\"op\":\"csr.create\",\"key\":\"k-oci\",\"subject\":\"CN=x\"}"),
	       "denied", "csr.create needs the purpose csr", "csr.create on an http key");
	expect_audit("k-oci", "csr", "denied");

	generate("k-ca", "[\"sign\"]");
	expect(sign_digest("k-ca"), "ok", NULL, "a digest with a sign key");
	expect_audit("k-ca", "sign", "ok");
	expect(sign_data("k-ca", (const uint8_t *)"anything", 8), "ok", NULL, "data, sign key");
	expect_audit("k-ca", "sign", "ok");

	/* The request's purposes: known names, each once, at least one. */
	expect(request("{\"id\":1,\"op\":\"key.generate\",\"key\":\"k-x\",\"type\":\"ec-p256\","
		       "\"purposes\":[\"frob\"]}"), "unsupported", "unknown purpose", "an unknown purpose");
	expect(request("{\"id\":1,\"op\":\"key.generate\",\"key\":\"k-x\",\"type\":\"ec-p256\","
		       "\"purposes\":[\"tls\",\"tls\"]}"), "bad-request", "duplicate", "a duplicate");
	expect(request("{\"id\":1,\"op\":\"key.generate\",\"key\":\"k-x\",\"type\":\"ec-p256\","
		       "\"purposes\":[]}"), "bad-request", "empty", "no purpose");
	expect(request("{\"id\":1,\"op\":\"key.public\",\"key\":\"k-x\"}"), "no-such-key", NULL,
	       "no key made by a refused generate");
}

/* A rule limited to tls: the key's other purposes are not this peer's. */
static void test_policy_purposes(void **state)
{
	uint8_t content[160];
	size_t len = tls13_content("TLS 1.3, server CertificateVerify", content);

	(void)state;
	generate("web-all", "[\"csr\",\"tls\",\"sign\"]");
	expect(sign_digest("web-all"), "denied", "only for the purposes tls, not sign",
	       "a digest under a tls-only rule");
	expect_audit("web-all", "sign", "denied");
	expect(request("{\"id\":1,\"op\":\"csr.create\",\"key\":\"web-all\",\"subject\":\"CN=x\"}"),
	       "denied", "only for the purposes tls, not csr", "csr.create under a tls-only rule");
	expect_audit("web-all", "csr", "denied");
	expect(sign_data("web-all", content, len), "ok", NULL, "TLS content under a tls-only rule");
	expect_audit("web-all", "tls", "ok");
}

/* `keysvc list` has a line matching the extended regular expression @re. */
static void cli_list_has(const char *re)
{
	const char *cli = getenv("KS_KEYSVC_CLI");
	char cmd[PATH_MAX * 2 + 256];

	assert_non_null(cli);
	snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' list 2>/dev/null | grep -Eq '^%s'", cli,
		 td.socket_path, re);
	if (system(cmd) != 0)
		fail_msg("keysvc list has no line matching %s", re);
}

/* Keys without stored purposes, and stored purposes that do not parse. */
static void test_legacy_and_broken(void **state)
{
	json_t *resp, *keys, *k;
	size_t i;
	int seen = 0;

	(void)state;
	assert_true(ks_td_log_count(&td, "1 key made before key purposes (legacy) may sign "
				    "anything") >= 1);
	expect_public_purposes("legacy", "csr,tls,http-signature,sign", 1);
	resp = request("{\"id\":1,\"op\":\"key.list\"}");
	keys = json_object_get(resp, "keys");
	json_array_foreach(keys, i, k) {
		if (strcmp(json_string_value(json_object_get(k, "key")), "legacy") == 0) {
			assert_true(json_is_true(json_object_get(k, "purposes_legacy")));
			seen++;
		} else {
			assert_null(json_object_get(k, "purposes_legacy"));
			assert_true(json_is_array(json_object_get(k, "purposes")));
		}
	}
	assert_int_equal(seen, 1);
	json_decref(resp);
	expect(sign_digest("legacy"), "ok", NULL, "a digest with a legacy key");
	expect_audit("legacy", "sign", "ok");

	/* A marker that does not parse: no purpose at all, not all of them. */
	expect_public_purposes("broken", "", 0);
	cli_list_has("broken +ec-p256 +no +none$");
	cli_list_has("legacy +ec-p256 +no +csr,tls,http-signature,sign \\(legacy");
	expect(sign_digest("broken"), "denied", "has the purposes none", "broken: digest");
	expect(request("{\"id\":1,\"op\":\"csr.create\",\"key\":\"broken\",\"subject\":\"CN=x\"}"),
	       "denied", "has the purposes none", "broken: csr.create");
}

/* The purposes are the token's: a restart reads them back from the key's CKA_ID. */
static void test_survive_restart(void **state)
{
	char tail[128];

	(void)state;
	generate("k-keep", "[\"csr\",\"http-signature\"]");
	assert_int_equal(ks_td_stop(&td), 0);
	raw_id_tail("k-keep", tail, sizeof(tail));
	assert_string_equal(tail, "ksp1:csr,http-signature");
	assert_int_equal(ks_td_start(&td), 0);
	expect_public_purposes("k-keep", "csr,http-signature", 0);
	expect(sign_digest("k-keep"), "denied", "has the purposes csr,http-signature",
	       "a digest after the restart");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_legacy_and_broken),
		cmocka_unit_test(test_csr_tls_key),
		cmocka_unit_test(test_other_purposes),
		cmocka_unit_test(test_policy_purposes),
		cmocka_unit_test(test_survive_restart),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
