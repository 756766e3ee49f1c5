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

#include "proto/exitcode.h"

#define PIN_MAX 256

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ks-token-init --module PATH --label LABEL --pin-file FILE --so-pin-file FILE\n"
		"\n"
		"Initialises the first uninitialised token of the PKCS#11 module PATH with\n"
		"LABEL (1..32 characters), the SO PIN and the user PIN read from the files,\n"
		"and prints the token's serial number. A PIN file must be a regular file\n"
		"owned by you that nobody else can access (mode 0600 or 0400); one trailing\n"
		"newline is ignored. PINs are never printed.\n"
		"\n"
		"  --version   print the version\n"
		"\n"
		"Exits with 0 when done, 1 for a module or token error, 2 for usage or a PIN\n"
		"file error.\n");
	ks_exit_print_table(f);
}

/* Every C_* call: the failure is reported with its name, never with arguments. */
static CK_RV check(const char *fn, CK_RV rv)
{
	if (rv != CKR_OK)
		fprintf(stderr, "ks-token-init: %s: %s (0x%lx)\n", fn, p11_kit_strerror(rv),
			(unsigned long)rv);
	return rv;
}

#define P11(f, fn, ...) check(#fn, (f)->fn(__VA_ARGS__))

/* Read a PIN file with the rules keysvcd applies to its own. Returns its length or -1. */
static int read_pin(const char *path, char *pin, size_t pin_size)
{
	struct stat st;
	size_t n = 0;
	ssize_t got;
	int fd, r = -1;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "ks-token-init: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "ks-token-init: %s: not a regular file\n", path);
		goto out;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		fprintf(stderr, "ks-token-init: %s: must be owned by you with mode 0600 or 0400\n",
			path);
		goto out;
	}
	/* One byte more than allowed (plus a newline), so an over-long PIN is noticed. */
	while (n < pin_size) {
		got = read(fd, pin + n, pin_size - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			fprintf(stderr, "ks-token-init: %s: %s\n", path, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > 0 && pin[n - 1] == '\n')
		n--;
	if (n == 0 || n > PIN_MAX) {
		fprintf(stderr, "ks-token-init: %s: the PIN is empty or longer than %d bytes\n",
			path, PIN_MAX);
		goto out;
	}
	r = (int)n;
out:
	close(fd);
	return r;
}

static void pad_label(const char *label, unsigned char out[32])
{
	size_t n = strlen(label);

	memset(out, ' ', 32);
	memcpy(out, label, n > 32 ? 32 : n);
}

/* A slot whose token is (or is not) initialised and, if @label, carries it. */
static int find_slot(CK_FUNCTION_LIST *f, int want_initialised, const unsigned char *label,
		     CK_SLOT_ID *slot)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	CK_TOKEN_INFO ti;
	int found = 0;

	if (P11(f, C_GetSlotList, CK_TRUE, NULL, &n) != CKR_OK)
		return -1;
	if (n == 0 || (slots = calloc(n, sizeof(*slots))) == NULL ||
	    P11(f, C_GetSlotList, CK_TRUE, slots, &n) != CKR_OK) {
		free(slots);
		return 0;
	}
	for (CK_ULONG i = 0; i < n && !found; i++) {
		if (P11(f, C_GetTokenInfo, slots[i], &ti) != CKR_OK)
			continue;
		if (!!(ti.flags & CKF_TOKEN_INITIALIZED) != want_initialised)
			continue;
		if (label != NULL && (memcmp(ti.label, label, 32) != 0 ||
				      (ti.flags & CKF_USER_PIN_INITIALIZED)))
			continue;
		*slot = slots[i];
		found = 1;
	}
	free(slots);
	return found;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "module", required_argument, NULL, 'm' },
		{ "label", required_argument, NULL, 'l' },
		{ "pin-file", required_argument, NULL, 'p' },
		{ "so-pin-file", required_argument, NULL, 's' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *module = NULL, *label = NULL, *pin_file = NULL, *so_pin_file = NULL;
	char pin[PIN_MAX + 2], so_pin[PIN_MAX + 2], serial[17];
	int pin_len, so_pin_len, c, ret = KS_EXIT_USAGE, initialized = 0;
	CK_FUNCTION_LIST *f = NULL;
	CK_SLOT_ID slot = 0;
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	unsigned char padded[32];
	size_t n;
	CK_RV rv;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': module = optarg; break;
		case 'l': label = optarg; break;
		case 'p': pin_file = optarg; break;
		case 's': so_pin_file = optarg; break;
		case 'V': ks_print_version("ks-token-init"); return KS_EXIT_OK;
		case 'h': usage(stdout); return KS_EXIT_OK;
		default: usage(stderr); return KS_EXIT_USAGE;
		}
	}
	if (optind != argc || module == NULL || label == NULL || pin_file == NULL ||
	    so_pin_file == NULL) {
		fprintf(stderr, "ks-token-init: --module, --label, --pin-file and --so-pin-file are all required\n");
		usage(stderr);
		return KS_EXIT_USAGE;
	}
	if (strlen(label) == 0 || strlen(label) > 32) {
		fprintf(stderr, "ks-token-init: a token label has 1 to 32 characters\n");
		return KS_EXIT_USAGE;
	}
	if ((pin_len = read_pin(pin_file, pin, sizeof(pin))) < 0 ||
	    (so_pin_len = read_pin(so_pin_file, so_pin, sizeof(so_pin))) < 0)
		goto out;

	ret = KS_EXIT_INTERNAL;
	if ((f = p11_kit_module_load(module, P11_KIT_MODULE_UNMANAGED | P11_KIT_MODULE_CRITICAL)) == NULL) {
		fprintf(stderr, "ks-token-init: cannot load %s: %s\n", module, p11_kit_message());
		goto out;
	}
	rv = check("C_Initialize", p11_kit_module_initialize(f));
	if (rv != CKR_OK)
		goto out;
	initialized = 1;
	if (find_slot(f, 0, NULL, &slot) != 1) {
		fprintf(stderr, "ks-token-init: %s offers no uninitialised token\n", module);
		goto out;
	}
	pad_label(label, padded);
	if (P11(f, C_InitToken, slot, (CK_UTF8CHAR *)so_pin, (CK_ULONG)so_pin_len, padded) != CKR_OK)
		goto out;
	/*
	 * SoftHSM moves a freshly initialised token to a new slot id; find it
	 * again by label. tpm2-pkcs11 keeps the slot and already reports a
	 * user PIN there, which the search by label would pass over.
	 */
	if (!(P11(f, C_GetTokenInfo, slot, &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED) &&
	      memcmp(ti.label, padded, 32) == 0) &&
	    find_slot(f, 1, padded, &slot) != 1) {
		fprintf(stderr, "ks-token-init: the token just initialised is not to be found\n");
		goto out;
	}
	if (P11(f, C_OpenSession, slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
		goto out;
	if (P11(f, C_Login, s, CKU_SO, (CK_UTF8CHAR *)so_pin, (CK_ULONG)so_pin_len) != CKR_OK)
		goto out;
	if (P11(f, C_InitPIN, s, (CK_UTF8CHAR *)pin, (CK_ULONG)pin_len) != CKR_OK)
		goto out;
	P11(f, C_Logout, s);
	if (P11(f, C_GetTokenInfo, slot, &ti) != CKR_OK)
		goto out;
	n = sizeof(ti.serialNumber);
	while (n > 0 && (ti.serialNumber[n - 1] == ' ' || ti.serialNumber[n - 1] == '\0'))
		n--;
	memcpy(serial, ti.serialNumber, n);
	serial[n] = '\0';
	printf("token \"%s\" initialised, serial %s\n", label, serial);
	ret = 0;
out:
	explicit_bzero(pin, sizeof(pin));
	explicit_bzero(so_pin, sizeof(so_pin));
	if (s != CK_INVALID_HANDLE)
		P11(f, C_CloseSession, s);
	if (initialized)
		check("C_Finalize", p11_kit_module_finalize(f));
	if (f != NULL)
		p11_kit_module_release(f);
	return ret;
}
