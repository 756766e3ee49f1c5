#!/bin/bash
# keysvc-cce never talks to keysvcd (docs/clients.md): it must not need
# libkeysvc.so.1, so the shared client code it links (clients/renew/common/)
# keeps the keysvcd connection apart (clikeysvc.h, ks_cli_keysvc).
# Usage: test_cce_links.sh KEYSVC-CCE
set -eu
needed=$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
if [ -z "$needed" ]; then
	echo "not ok - readelf found no NEEDED entries in $1"
	exit 1
fi
if printf '%s\n' "$needed" | grep -q '^libkeysvc\.'; then
	echo "not ok - keysvc-cce needs libkeysvc:" $needed
	exit 1
fi
echo "ok - keysvc-cce needs only:" $needed
