#!/bin/bash
# build_debs.sh OUTDIR: the Debian packages of the source tree
# ($KS_SOURCE_ROOT) built with `dpkg-buildpackage -b -uc -us` in a copy of
# it (the build writes debian/ and obj-*/, never into the source tree);
# the .deb files, the .changes and build.log end up in OUTDIR. The copy
# holds the files git knows (or, outside a git checkout, the tree without
# build directories). Exit 0 when built; 77 with the reason on stdout when
# this machine cannot build them (no dpkg-buildpackage or debhelper, or
# missing build dependencies); 1 when the build failed (the log's tail on
# stderr).
set -u
out=$1
mkdir -p "$out"
for c in dpkg-buildpackage dh dpkg-checkbuilddeps; do
	command -v $c >/dev/null 2>&1 || { echo "$c not installed (scripts/deps.sh installs debhelper and dpkg-dev)"; exit 77; }
done
src=$out/src/keysvc
rm -rf "$out/src"
mkdir -p "$src"
if git -C "$KS_SOURCE_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$KS_SOURCE_ROOT" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | tar -C "$src" -xf -
else
	tar -C "$KS_SOURCE_ROOT" --exclude='./build*' --exclude='./obj-*' -cf - . | tar -C "$src" -xf -
fi
[ -f "$src/debian/control" ] || { echo "no debian/control in $KS_SOURCE_ROOT" >&2; exit 1; }
if ! (cd "$src" && dpkg-checkbuilddeps) >"$out/builddeps.log" 2>&1; then
	if grep -q 'Unmet build dependencies' "$out/builddeps.log"; then
		echo "build dependencies missing (scripts/deps.sh installs them): $(tail -n 1 "$out/builddeps.log")"
		exit 77
	fi
	cat "$out/builddeps.log" >&2
	exit 1
fi
# nocheck: the test suite needs SoftHSM, root and namespaces (the rules file says why).
if ! (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -b -uc -us) >"$out/build.log" 2>&1; then
	tail -n 40 "$out/build.log" >&2
	exit 1
fi
mv "$out/src"/*.deb "$out/src"/*.changes "$out/src"/*.buildinfo "$out/"
rm -rf "$out/src"
