#!/usr/bin/env bash
# BR2_ROOTFS_POST_IMAGE_SCRIPT: the same initramfs and image assembly as the offline build
# (image/initramfs.sh, image/assemble.sh), from Buildroot's kernel, root squashfs, busybox,
# modules and GRUB images. Outputs in BINARIES_DIR: proxyha-VERSION-BOARD.{update,img,img.xz,
# qcow2,vmdk,ova,vhdx}.
#
#   post-image.sh BINARIES_DIR BOARD   # BOARD from BR2_ROOTFS_POST_SCRIPT_ARGS
set -euo pipefail

bin=$1 board=$2
top=$(cd "$BR2_EXTERNAL_PROXYHA_PATH/.." && pwd)
# shellcheck source=/dev/null
. "$top/image/signing-key.sh"
signing_key "$BASE_DIR"
version=${PROXYHA_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)}

kvers=$(ls "$TARGET_DIR/lib/modules")
[ "$(echo "$kvers" | wc -w)" -eq 1 ] || { echo "post-image.sh: expected one kernel in $TARGET_DIR/lib/modules, found: $kvers" >&2; exit 1; }
READELF=${READELF:-$(find "$HOST_DIR/bin" -name '*-linux-*readelf' | head -n 1)}
export READELF
"$top/image/initramfs.sh" "$TARGET_DIR" "$kvers" "$board" "$bin/initrd.img"
"$top/image/assemble.sh" "$board" "$bin" "$version" "$bin/rootfs.squashfs" "$bin/bzImage" \
	"$bin/initrd.img" "$bin/efi-part/EFI/BOOT/bootx64.efi" "$bin/grub.img" "$bin/boot.img" \
	"$TARGET_DIR/usr/share/proxyha/proxyha.toml.example"
cat "$bin/formats.txt"
