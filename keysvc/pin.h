/*
 * Reading the token PIN.
 *
 * Sources, first found wins: the systemd credential
 * $CREDENTIALS_DIRECTORY/keysvc-pin (LoadCredential=), then the configured
 * pin_file. The file must be a regular file (not a symlink) owned by the
 * effective uid and not accessible to group or others (mode 0600 or
 * 0400). The credential may also be root's (systemd writes it as root)
 * and show group read (0440) when that is the mask of the POSIX ACL
 * systemd adds for the service's user: the ACL may grant read to the owner
 * and the effective uid only. Every directory above the file or credential
 * must pass ks_config_check_dirs() (owned by root or the effective uid, not
 * writable by group or others unless root-owned and sticky, no symlinks),
 * as the module's do. One trailing newline is dropped. The PIN is returned
 * in locked memory and must be released with ks_pin_free(), which wipes it.
 */
#ifndef KEYSVC_PIN_H
#define KEYSVC_PIN_H

#include <stddef.h>

#include "pkcs11/token.h"   /* KS_PIN_MAX */

/*
 * The path ks_pin_load() would read (the credential if it exists, else
 * @pin_file) into @path, *@credential 1 for the credential. 0, or -ENOENT
 * if there is no source.
 */
int ks_pin_source(const char *pin_file, char *path, size_t path_len, int *credential);

/*
 * Returns 0 with *@pin (NUL-terminated) and *@pin_len, or a negative errno
 * with @err filled (never containing the PIN): -ENOENT no source,
 * -EACCES wrong owner/mode/type (of the file or a directory above it), -EINVAL empty or too long, -ENOMEM.
 */
int ks_pin_load(const char *pin_file, char **pin, size_t *pin_len, char *err,
		size_t err_len);

void ks_pin_free(char *pin, size_t pin_len);

#endif
