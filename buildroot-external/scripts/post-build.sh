#!/usr/bin/env bash
# BR2_ROOTFS_POST_BUILD_SCRIPT: finishes Buildroot's target tree the way image/build.sh finishes
# the offline one (image/rootfs-finish.sh: keyring, first-boot template, data-partition links,
# os-release), and takes GRUB's legacy-BIOS boot.img out of it for post-image.sh; the GRUB tools
# themselves do not go onto the appliance.
#
#   post-build.sh TARGET_DIR BOARD     # BOARD from BR2_ROOTFS_POST_SCRIPT_ARGS
set -euo pipefail

target=$1 board=$2
top=$(cd "$BR2_EXTERNAL_PROXYHA_PATH/.." && pwd)
# shellcheck source=/dev/null
. "$top/image/signing-key.sh"
signing_key "$BASE_DIR"
version=${PROXYHA_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)}

boot_img=""
for d in usr/lib lib; do
	[ -f "$target/$d/grub/i386-pc/boot.img" ] && boot_img=$target/$d/grub/i386-pc/boot.img && break
done
[ -n "$boot_img" ] || { echo "post-build.sh: GRUB's i386-pc boot.img not in $target (BR2_TARGET_GRUB2_INSTALL_TOOLS=y?)" >&2; exit 1; }
mkdir -p "$BINARIES_DIR"
cp "$boot_img" "$BINARIES_DIR/boot.img"
rm -rf "$target/usr/lib/grub" "$target/lib/grub" "$target/usr/share/grub" "$target/etc/grub.d" \
	"$target/boot/grub" "$target/etc/default/grub"
rm -f "$target"/usr/bin/grub-* "$target"/usr/sbin/grub-*

"$top/image/rootfs-finish.sh" "$target" "$version" "$board"
