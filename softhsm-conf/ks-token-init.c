/*
 * ks-token-init: initialise a PKCS#11 token with PINs read from files.
 *
 * softhsm2-util takes PINs on its command line (visible in /proc) or from
 * a terminal; this does the same through the PKCS#11 API so set-up
 * scripts never expose a PIN.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#define PIN_MAX 256

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ks-token-init --module PATH --label LABEL --pin-file FILE --so-pin-file FILE\n"
		"\n"
		"Initialises the first uninitialised token of the module with LABEL,\n"
		"the SO PIN and the user PIN read from the files (regular files owned\n"
		"by you, mode 0600 or 0400), and prints the token's serial number.\n"
		"Exit codes: 0 done, 1 token error, 2 usage or PIN file error.\n");
}

/* Read a PIN file with the same rules keysvcd applies. Returns its length or -1. */
static int read_pin(const char *path, char *pin)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ks-token-init: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077) != 0) {
		fprintf(stderr, "ks-token-init: %s: must be a regular file of yours with mode 0600\n", path);
		close(fd);
		return -1;
	}
	n = read(fd, pin, PIN_MAX + 1);
	close(fd);
	if (n > 0 && pin[n - 1] == '\n')
		n--;
	if (n <= 0 || n > PIN_MAX) {
		fprintf(stderr, "ks-token-init: %s: empty or longer than %d bytes\n", path, PIN_MAX);
		return -1;
	}
	return (int)n;
}

static void pad_label(const char *label, unsigned char out[32])
{
	size_t n = strlen(label);

	memset(out, ' ', 32);
	memcpy(out, label, n > 32 ? 32 : n);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "module", required_argument, NULL, 'm' },
		{ "label", required_argument, NULL, 'l' },
		{ "pin-file", required_argument, NULL, 'p' },
		{ "so-pin-file", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *module = NULL, *label = NULL, *pin_file = NULL, *so_pin_file = NULL;
	char pin[PIN_MAX + 2], so_pin[PIN_MAX + 2];
	int pin_len = -1, so_pin_len = -1, c, ret = 2, initialized = 0;
	CK_FUNCTION_LIST *f = NULL;
	CK_SLOT_ID slots[64], slot = 0;
	CK_ULONG nslots = 64;
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	unsigned char padded[32];
	int found = 0;
	CK_RV rv;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': module = optarg; break;
		case 'l': label = optarg; break;
		case 'p': pin_file = optarg; break;
		case 's': so_pin_file = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || module == NULL || label == NULL || pin_file == NULL ||
	    so_pin_file == NULL || strlen(label) == 0 || strlen(label) > 32) {
		usage(stderr);
		return 2;
	}
	if ((pin_len = read_pin(pin_file, pin)) < 0 || (so_pin_len = read_pin(so_pin_file, so_pin)) < 0)
		goto out;

	ret = 1;
	if ((f = p11_kit_module_load(module, P11_KIT_MODULE_UNMANAGED | P11_KIT_MODULE_CRITICAL)) == NULL) {
		fprintf(stderr, "ks-token-init: cannot load %s: %s\n", module, p11_kit_message());
		goto out;
	}
	if ((rv = p11_kit_module_initialize(f)) != CKR_OK) {
		fprintf(stderr, "ks-token-init: C_Initialize: 0x%lx\n", (unsigned long)rv);
		goto out;
	}
	initialized = 1;
	if ((rv = f->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK) {
		fprintf(stderr, "ks-token-init: C_GetSlotList: 0x%lx\n", (unsigned long)rv);
		goto out;
	}
	for (CK_ULONG i = 0; i < nslots && !found; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && !(ti.flags & CKF_TOKEN_INITIALIZED)) {
			slot = slots[i];
			found = 1;
		}
	}
	if (!found) {
		fprintf(stderr, "ks-token-init: no uninitialised token in %s\n", module);
		goto out;
	}
	pad_label(label, padded);
	if ((rv = f->C_InitToken(slot, (CK_UTF8CHAR *)so_pin, (CK_ULONG)so_pin_len, padded)) != CKR_OK) {
		fprintf(stderr, "ks-token-init: C_InitToken: 0x%lx\n", (unsigned long)rv);
		goto out;
	}
	/* SoftHSM moves a freshly initialised token to a new slot id; find it by label. */
	nslots = 64;
	found = 0;
	if (f->C_GetSlotList(CK_TRUE, slots, &nslots) == CKR_OK) {
		for (CK_ULONG i = 0; i < nslots && !found; i++) {
			if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
			    (ti.flags & CKF_TOKEN_INITIALIZED) && memcmp(ti.label, padded, 32) == 0 &&
			    !(ti.flags & CKF_USER_PIN_INITIALIZED)) {
				slot = slots[i];
				found = 1;
			}
		}
	}
	if (!found) {
		fprintf(stderr, "ks-token-init: the initialised token disappeared\n");
		goto out;
	}
	if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s)) != CKR_OK ||
	    (rv = f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so_pin, (CK_ULONG)so_pin_len)) != CKR_OK ||
	    (rv = f->C_InitPIN(s, (CK_UTF8CHAR *)pin, (CK_ULONG)pin_len)) != CKR_OK) {
		fprintf(stderr, "ks-token-init: setting the user PIN failed: 0x%lx\n", (unsigned long)rv);
		goto out;
	}
	f->C_Logout(s);
	if (f->C_GetTokenInfo(slot, &ti) == CKR_OK)
		printf("token %.32s serial %.16s\n", label, (const char *)ti.serialNumber);
	ret = 0;
out:
	explicit_bzero(pin, sizeof(pin));
	explicit_bzero(so_pin, sizeof(so_pin));
	if (s != CK_INVALID_HANDLE)
		f->C_CloseSession(s);
	if (initialized)
		p11_kit_module_finalize(f);
	if (f != NULL)
		p11_kit_module_release(f);
	return ret;
}
