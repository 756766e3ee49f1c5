#!/usr/bin/env bash
# Installs the Debian 12 packages keysvc needs to build, test and run its demo.
# Root runs apt-get directly; anyone else through sudo. Never prompts.
set -euo pipefail

packages=(
	build-essential meson ninja-build pkg-config
	libssl-dev openssl          # OpenSSL 3: X.509, CSRs, digests; the openssl CLI verifies in tests
	libp11-kit-dev p11-kit      # pkcs11.h, PKCS#11 module loading, RFC 7512 URIs
	softhsm2                    # the token for tests and the demo
	swtpm swtpm-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon  # the tpm2 suite: tpm2-pkcs11 over a simulated TPM
	libjansson-dev              # JSON of the wire protocol and configuration
	libcmocka-dev               # unit tests
	libcurl4-openssl-dev        # HTTPS of the renewal clients (OpenSSL flavour)
	curl python3                # the test CA smoke test speaks HTTPS with curl; a test picks free ports with python3
	clang libclang-rt-14-dev    # libFuzzer and clang's sanitizer runtimes (tests/fuzz/run.sh)
	llvm                        # llvm-symbolizer: file:line in clang's sanitizer reports
	systemd                     # the units tests: systemd-analyze, and a systemd booted in private namespaces
	strace                      # test_cli.sh holds a request back (inject delay) until its peer has closed
	groff-base                  # test_man.sh formats the manual pages (docs/man/) with groff -ww
	debhelper dpkg-dev lintian  # the Debian packages (debian/): dpkg-buildpackage and lintian in the package tests
	logrotate                   # package-system rotates the audit log with the shipped logrotate snippet
	nginx-light gnutls-bin      # tests/tls-apps: nginx serves HTTPS with a key reference file; gnutls-cli is its other client
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1; then
	as_root=(sudo -n)
else
	echo "deps.sh: missing packages (${missing[*]}) and neither root nor sudo" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
