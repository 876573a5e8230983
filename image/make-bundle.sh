#!/usr/bin/env bash
# Makes a signed update bundle (src/update/bundle.rs reads it):
#
#   image/make-bundle.sh OUT.update VERSION BOARD_ID ROOTFS KERNEL INITRAMFS
#
# A plain tar: manifest.toml first (format, compatible = BOARD_ID, version, each image's name,
# target, size and SHA-256), its minisign signature manifest.toml.minisig second, then the
# images in manifest order. The secret key is $PROXYHA_SIGNING_KEY (a minisign secret key file;
# minisign asks for its password if it has one); without it, the development key
# image/out/keys/dev.key that image/build.sh generates signs.
# image/build.sh and the update tests call this; nothing else writes bundles.
set -euo pipefail

[ $# -eq 6 ] || { echo "usage: $0 OUT.update VERSION BOARD_ID ROOTFS KERNEL INITRAMFS" >&2; exit 2; }
out=$1 version=$2 board=$3
here=$(cd "$(dirname "$0")" && pwd)
key=${PROXYHA_SIGNING_KEY:-$here/out/keys/dev.key}
[ -f "$key" ] || { echo "$0: signing key $key missing (set PROXYHA_SIGNING_KEY or run image/build.sh once)" >&2; exit 2; }
command -v minisign >/dev/null || { echo "$0: minisign missing (apt-get install minisign)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/proxyha-bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
{
	echo "format = 1"
	echo "compatible = \"$board\""
	echo "version = \"$version\""
	set -- "$4" root rootfs.squashfs "$5" kernel vmlinuz "$6" initramfs initrd.img
	while [ $# -gt 0 ]; do
		[ -f "$1" ] || { echo "$0: image $1 missing" >&2; exit 2; }
		ln -s "$(readlink -f "$1")" "$work/$3"
		printf '\n[[image]]\nname = "%s"\ntarget = "%s"\nsize = %s\nsha256 = "%s"\n' \
			"$3" "$2" "$(stat -c %s "$1")" "$(sha256sum "$1" | cut -d' ' -f1)"
		shift 3
	done
} >"$work/manifest.toml"
# -S sign, prehashed (minisign ≥ 0.8's default); the trusted comment names what was signed.
minisign -S -s "$key" -m "$work/manifest.toml" -x "$work/manifest.toml.minisig" \
	-t "proxyha $version for $board" </dev/null >/dev/null
# ustar, members in this order, symlinks followed (-h), no owner names.
tar --format=ustar -h --owner=0 --group=0 --numeric-owner --mode=0644 -C "$work" -cf "$out.tmp" \
	manifest.toml manifest.toml.minisig rootfs.squashfs vmlinuz initrd.img
mv "$out.tmp" "$out"
