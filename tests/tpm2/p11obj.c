/*
 * p11obj: the token seen by another program, for the token suites.
 *
 *   p11obj MODULE LABEL PIN_FILE attrs NAME
 *       reads the attributes of the private key labelled NAME through
 *       PKCS#11 and exits 0 only if it is sensitive (and always was),
 *       never extractable, private, on the token and sign-only (decrypt,
 *       unwrap, derive, sign-recover false), and its secret part cannot be
 *       read; prints each attribute
 *   p11obj MODULE LABEL PIN_FILE id NAME
 *       reads the CKA_ID of the private and the public key labelled NAME
 *       and the private key's CKA_MODIFIABLE; prints them and the purposes
 *       keysvcd stored in the CKA_ID ("purposes=csr,tls" after 16 random
 *       bytes and "ksp1:", or "purposes=legacy" without the marker); exits
 *       0 only if both are readable and the same
 *   p11obj MODULE LABEL PIN_FILE set-purposes NAME LIST
 *       tries to rewrite the purposes in the private key's CKA_ID to LIST
 *       (C_SetAttributeValue), as anyone holding the PIN could; prints the
 *       token's answer and exits 0 only if the token refused it
 *   p11obj MODULE LABEL PIN_FILE generate NAME [decrypt]
 *       makes an EC P-256 key pair labelled NAME (a random CKA_ID,
 *       sensitive, sign-only, or also decrypt-capable with "decrypt") in
 *       this process: a key made by some other program than keysvcd, such
 *       as an HSM's own provisioning tool
 *
 * The PIN is read from PIN_FILE, never taken from the command line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST *f;
static CK_SESSION_HANDLE session;

static int die(const char *what, CK_RV rv)
{
	fprintf(stderr, "p11obj: %s: CKR 0x%lx\n", what, (unsigned long)rv);
	return 1;
}

static int open_token(const char *module, const char *label, const char *pin_file)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	CK_TOKEN_INFO ti;
	char pin[257], padded[32];
	size_t pin_len, l = strlen(label);
	FILE *fp;
	CK_RV rv;

	if ((fp = fopen(pin_file, "r")) == NULL) {
		perror(pin_file);
		return 1;
	}
	pin_len = fread(pin, 1, sizeof(pin) - 1, fp);
	fclose(fp);
	while (pin_len > 0 && pin[pin_len - 1] == '\n')
		pin_len--;
	memset(padded, ' ', sizeof(padded));
	memcpy(padded, label, l > 32 ? 32 : l);
	if ((f = p11_kit_module_load(module, P11_KIT_MODULE_UNMANAGED)) == NULL) {
		fprintf(stderr, "p11obj: cannot load %s\n", module);
		return 1;
	}
	if ((rv = p11_kit_module_initialize(f)) != CKR_OK)
		return die("C_Initialize", rv);
	if ((rv = f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK)
		return die("C_GetSlotList", rv);
	for (CK_ULONG i = 0; i < n; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK || memcmp(ti.label, padded, 32) != 0)
			continue;
		if ((rv = f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
					   &session)) != CKR_OK)
			return die("C_OpenSession", rv);
		rv = f->C_Login(session, CKU_USER, (CK_UTF8CHAR *)pin, pin_len);
		explicit_bzero(pin, sizeof(pin));
		return rv == CKR_OK ? 0 : die("C_Login", rv);
	}
	explicit_bzero(pin, sizeof(pin));
	fprintf(stderr, "p11obj: no token labelled %s\n", label);
	return 1;
}

static int check_bool(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, const char *name, CK_BBOOL want)
{
	CK_BBOOL v = 0xAA;
	CK_ATTRIBUTE a = { type, &v, sizeof(v) };
	CK_RV rv = f->C_GetAttributeValue(session, h, &a, 1);

	if (rv != CKR_OK) {
		printf("%s: not readable (CKR 0x%lx)  WRONG\n", name, (unsigned long)rv);
		return 1;
	}
	printf("%s=%d%s\n", name, v, v == want ? "" : "  WRONG");
	return v != want;
}

static int attrs(const char *name)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)name, strlen(name) },
	};
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	CK_KEY_TYPE kt = 0;
	CK_ATTRIBUTE ka = { CKA_KEY_TYPE, &kt, sizeof(kt) };
	unsigned char secret[4096];
	CK_ATTRIBUTE sa = { CKA_VALUE, secret, sizeof(secret) };
	int bad = 0;
	CK_RV rv;

	if (f->C_FindObjectsInit(session, tmpl, 2) != CKR_OK ||
	    f->C_FindObjects(session, h, 2, &n) != CKR_OK || f->C_FindObjectsFinal(session) != CKR_OK ||
	    n != 1) {
		fprintf(stderr, "p11obj: %lu private keys labelled %s\n", (unsigned long)n, name);
		return 1;
	}
	bad |= check_bool(h[0], CKA_TOKEN, "CKA_TOKEN", CK_TRUE);
	bad |= check_bool(h[0], CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE);
	bad |= check_bool(h[0], CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE);
	bad |= check_bool(h[0], CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE);
	bad |= check_bool(h[0], CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE);
	bad |= check_bool(h[0], CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", CK_TRUE);
	bad |= check_bool(h[0], CKA_SIGN, "CKA_SIGN", CK_TRUE);
	bad |= check_bool(h[0], CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE);
	bad |= check_bool(h[0], CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE);
	bad |= check_bool(h[0], CKA_DERIVE, "CKA_DERIVE", CK_FALSE);
	bad |= check_bool(h[0], CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER", CK_FALSE);
	if (f->C_GetAttributeValue(session, h[0], &ka, 1) != CKR_OK) {
		printf("CKA_KEY_TYPE: not readable  WRONG\n");
		return 1;
	}
	/* The secret part: refused, and not even its length given. */
	if (kt == CKK_RSA)
		sa.type = CKA_PRIVATE_EXPONENT;
	rv = f->C_GetAttributeValue(session, h[0], &sa, 1);
	printf("secret %s: CKR 0x%lx%s\n", kt == CKK_RSA ? "CKA_PRIVATE_EXPONENT" : "CKA_VALUE",
	       (unsigned long)rv,
	       rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID ? "" : "  WRONG");
	if (rv == CKR_OK || sa.ulValueLen != CK_UNAVAILABLE_INFORMATION)
		bad = 1;
	return bad;
}

/* The one object of @cls labelled @name, else 1 with the count said. */
static int find_one(CK_OBJECT_CLASS cls, const char *name, CK_OBJECT_HANDLE *out)
{
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)name, strlen(name) },
	};
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;

	if (f->C_FindObjectsInit(session, tmpl, 2) != CKR_OK ||
	    f->C_FindObjects(session, h, 2, &n) != CKR_OK || f->C_FindObjectsFinal(session) != CKR_OK ||
	    n != 1) {
		fprintf(stderr, "p11obj: %lu objects of class %lu labelled %s\n", (unsigned long)n,
			(unsigned long)cls, name);
		return 1;
	}
	*out = h[0];
	return 0;
}

#define ID_MAX 256
#define ID_RANDOM_LEN 16
#define ID_MARKER "ksp1:"

/* The CKA_ID of @h into @id (ID_MAX bytes), its length in @len. */
static int read_id(CK_OBJECT_HANDLE h, const char *what, CK_BYTE *id, CK_ULONG *len)
{
	CK_ATTRIBUTE a = { CKA_ID, NULL, 0 };
	CK_RV rv;

	if ((rv = f->C_GetAttributeValue(session, h, &a, 1)) != CKR_OK)
		return die(what, rv);
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > ID_MAX) {
		fprintf(stderr, "p11obj: %s: CKA_ID of length %lu\n", what, (unsigned long)a.ulValueLen);
		return 1;
	}
	a.pValue = id;
	if ((rv = f->C_GetAttributeValue(session, h, &a, 1)) != CKR_OK)
		return die(what, rv);
	*len = a.ulValueLen;
	printf("%s CKA_ID=", what);
	for (CK_ULONG i = 0; i < *len; i++)
		printf("%02x", id[i]);
	printf("\n");
	return 0;
}

static int show_id(const char *name)
{
	CK_OBJECT_HANDLE priv, pub;
	CK_BYTE pid[ID_MAX], uid[ID_MAX];
	CK_ULONG plen = 0, ulen = 0;
	const size_t head = ID_RANDOM_LEN + strlen(ID_MARKER);

	if (find_one(CKO_PRIVATE_KEY, name, &priv) != 0 || find_one(CKO_PUBLIC_KEY, name, &pub) != 0 ||
	    read_id(priv, "private", pid, &plen) != 0 || read_id(pub, "public", uid, &ulen) != 0)
		return 1;
	/* Shown, marked WRONG if true; the caller judges it. */
	check_bool(priv, CKA_MODIFIABLE, "CKA_MODIFIABLE", CK_FALSE);
	if (plen > head && memcmp(pid + ID_RANDOM_LEN, ID_MARKER, strlen(ID_MARKER)) == 0)
		printf("purposes=%.*s\n", (int)(plen - head), (const char *)pid + head);
	else
		printf("purposes=legacy\n");
	if (plen != ulen || memcmp(pid, uid, plen) != 0) {
		printf("the private and the public key's CKA_ID differ  WRONG\n");
		return 1;
	}
	return 0;
}

static int set_purposes(const char *name, const char *list)
{
	CK_OBJECT_HANDLE priv;
	CK_BYTE id[ID_MAX];
	CK_ULONG len = 0;
	const size_t head = ID_RANDOM_LEN + strlen(ID_MARKER);
	CK_ATTRIBUTE a = { CKA_ID, id, 0 };
	CK_RV rv;

	if (find_one(CKO_PRIVATE_KEY, name, &priv) != 0 || read_id(priv, "private", id, &len) != 0)
		return 1;
	if (len < head || strlen(list) > ID_MAX - head) {
		fprintf(stderr, "p11obj: %s has no purposes to rewrite\n", name);
		return 1;
	}
	memcpy(id + head, list, strlen(list));
	a.ulValueLen = head + strlen(list);
	rv = f->C_SetAttributeValue(session, priv, &a, 1);
	printf("C_SetAttributeValue(CKA_ID): CKR 0x%lx%s\n", (unsigned long)rv,
	       rv == CKR_OK ? "  the purposes were rewritten" : "");
	return rv == CKR_OK;
}

static int generate(const char *name, int can_decrypt)
{
	static const CK_BYTE p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BYTE id[8];
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE pub[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_EC_PARAMS, (void *)(uintptr_t)p256, sizeof(p256) },
		{ CKA_LABEL, (void *)(uintptr_t)name, strlen(name) },
		{ CKA_ID, id, sizeof(id) },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_DECRYPT, can_decrypt ? &yes : &no, sizeof(no) },
		{ CKA_LABEL, (void *)(uintptr_t)name, strlen(name) },
		{ CKA_ID, id, sizeof(id) },
	};
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_RV rv;

	if (RAND_bytes(id, sizeof(id)) != 1)
		return 1;
	rv = f->C_GenerateKeyPair(session, &mech, pub, sizeof(pub) / sizeof(pub[0]), priv,
				  sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
	return rv == CKR_OK ? 0 : die("C_GenerateKeyPair", rv);
}

int main(int argc, char **argv)
{
	int r;

	if (argc != 6 && !(argc == 7 && strcmp(argv[4], "generate") == 0 &&
			   strcmp(argv[6], "decrypt") == 0) &&
	    !(argc == 7 && strcmp(argv[4], "set-purposes") == 0)) {
		fprintf(stderr, "usage: p11obj MODULE LABEL PIN_FILE attrs|id NAME | "
			"set-purposes NAME LIST | generate NAME [decrypt]\n");
		return 2;
	}
	if (open_token(argv[1], argv[2], argv[3]) != 0)
		return 1;
	if (strcmp(argv[4], "attrs") == 0)
		r = attrs(argv[5]);
	else if (strcmp(argv[4], "id") == 0)
		r = show_id(argv[5]);
	else if (strcmp(argv[4], "set-purposes") == 0)
		r = set_purposes(argv[5], argv[6]);
	else if (strcmp(argv[4], "generate") == 0)
		r = generate(argv[5], argc == 7);
	else
		r = 2;
	f->C_Logout(session);
	f->C_CloseSession(session);
	p11_kit_module_finalize(f);
	p11_kit_module_release(f);
	return r;
}
