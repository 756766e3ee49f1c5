/*
 * Driver of the crash-safety test: installs the certificate in NEWFILE at
 * PATH with ks_ci_install(), the way the renewal clients do. Under the
 * ks_crash_preload.c shim the install is the only armed part, so the
 * shim's step N is the Nth file-system call of ks_ci_install().
 *
 *   ks_crash_install PATH NEWFILE
 *
 * Prints "steps N" (the calls the install made) and exits 0 when it
 * completed, 1 when it failed.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "clients/renew/common/certinstall.h"

int main(int argc, char **argv)
{
	void (*arm)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "ks_crash_arm");
	long (*disarm)(void) = (long (*)(void))dlsym(RTLD_DEFAULT, "ks_crash_disarm");
	char err[KS_CI_ERR_MAX], *pem;
	size_t len;
	long steps = -1;
	int r;

	if (argc != 3) {
		fprintf(stderr, "usage: ks_crash_install PATH NEWFILE\n");
		return 2;
	}
	if (ks_ci_read_file(argv[2], &pem, &len, err) != 0) {
		fprintf(stderr, "ks_crash_install: %s\n", err);
		return 2;
	}
	if (arm != NULL)
		arm();
	r = ks_ci_install(argv[1], pem, len, 0644, err);
	if (disarm != NULL)
		steps = disarm();
	free(pem);
	printf("steps %ld\n", steps);
	if (r != 0) {
		fprintf(stderr, "ks_crash_install: %s\n", err);
		return 1;
	}
	return 0;
}
