#!/usr/bin/env bash
# The image assembly both builds share (image/build.sh, offline from Debian packages, and
# buildroot-external/scripts/post-image.sh): from a root slot, a kernel, an initramfs and GRUB's
# images it makes the signed update bundle, the ESP (GRUB EFI, slot A's kernel and initramfs,
# grubenv, the first-boot template), the GPT disk (genimage with the board's genimage.cfg), the
# legacy-BIOS boot code, and every delivery format: .img.xz, .qcow2, .vmdk + .ova, .vhdx.
#
#   image/assemble.sh BOARD OUTDIR VERSION ROOTFS_SQUASHFS KERNEL INITRD GRUB_EFI GRUB_CORE GRUB_BOOT EXAMPLE
#
#   BOARD      <family>/<board> under board/ (meta, genimage.cfg, grub.cfg)
#   GRUB_EFI   GRUB's x86_64-efi image (BOOTX64.EFI); GRUB_CORE its i386-pc core.img and
#              GRUB_BOOT boot.img, both with the prefix of board meta's GRUB_* (see build.sh)
#   EXAMPLE    the first-boot template for the ESP (the slot's /usr/share/proxyha/proxyha.toml.example)
# Environment: PROXYHA_SIGNING_KEY (minisign secret key for the bundle), BUNDLE_ONLY=1 (stop
# after the bundle), NICE (niceness of the heavy steps, default 15).
# Tools: genimage (with mkdosfs, mcopy, mke2fs), grub-editenv, minisign, qemu-img, xz, partx, tar.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
die() { printf 'image/assemble.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
[ $# -eq 10 ] || die "usage: image/assemble.sh BOARD OUTDIR VERSION ROOTFS_SQUASHFS KERNEL INITRD GRUB_EFI GRUB_CORE GRUB_BOOT EXAMPLE"
board_path=$1 out=$2 version=$3 squashfs=$4 kernel=$5 initrd=$6 grub_efi=$7 grub_core=$8 grub_boot=$9 example=${10}
board_dir=$top/board/$board_path
[ -f "$board_dir/meta" ] || die "board $board_path: no $board_dir/meta"
# shellcheck source=/dev/null
. "$board_dir/meta"
for f in "$squashfs" "$kernel" "$initrd" "$grub_efi" "$grub_core" "$grub_boot" "$example"; do
	[ -f "$f" ] || die "input $f: no such file"
done
missing=()
for t in genimage mkdosfs mcopy mke2fs grub-editenv minisign qemu-img xz partx tar sha256sum; do
	command -v "$t" >/dev/null || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (offline build: image/host-deps.sh installs them; Buildroot: the defconfig's host packages, partx from the host's util-linux)"
nice=(nice -n "${NICE:-15}")
mkdir -p "$out"
work=$(mktemp -d "$out/assemble.XXXXXX")
trap 'rm -rf "$work"' EXIT
name=proxyha-$version-$BOARD_ID
size() { du -b "$1" | awk '{printf "%6.1f MiB", $1 / 1048576}'; }

# ---- update bundle -------------------------------------------------------------------------------
log "update bundle $name.update"
"$here/make-bundle.sh" "$out/$name.update" "$version" "$BOARD_ID" "$squashfs" "$kernel" "$initrd"
if [ "${BUNDLE_ONLY:-0}" = 1 ]; then
	printf '  %-28s %s\n' "$name.update" "$(size "$out/$name.update")"
	exit 0
fi

# ---- ESP ---------------------------------------------------------------------------------------
log "ESP (GRUB EFI)"
esp=$work/stage/esp
mkdir -p "$esp/EFI/BOOT" "$esp/A"
cp "$kernel" "$esp/A/vmlinuz"
cp "$initrd" "$esp/A/initrd.img"
cp "$grub_efi" "$esp/EFI/BOOT/BOOTX64.EFI"
sed "s|@KERNEL_CONSOLE@|$KERNEL_CONSOLE|" "$board_dir/grub.cfg" >"$esp/EFI/BOOT/grub.cfg"
grub-editenv "$esp/EFI/BOOT/grubenv" create
grub-editenv "$esp/EFI/BOOT/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0 A_VERSION="$version"
cp "$example" "$esp/proxyha.toml.example"
cat >"$esp/README.txt" <<'EOF'
ProxyHA boot partition.

First boot: copy proxyha.toml.example to proxyha.toml here (mount the image, or this partition)
and edit it. At boot it is checked; if valid it is installed on the data partition and used,
if not the console shows proxyha.toml:LINE:COL and the installed config stays.
EOF

# ---- disk ----------------------------------------------------------------------------------------
log "disk (genimage, $board_path)"
cp "$squashfs" "$work/stage/rootfs.squashfs"
cp "$grub_core" "$work/stage/core.img"
mkdir -p "$work/root" "$work/images"
"${nice[@]}" genimage --config "$board_dir/genimage.cfg" --rootpath "$work/root" --tmppath "$work/tmp" \
	--inputpath "$work/stage" --outputpath "$work/images" >"$work/genimage.log" 2>&1 ||
	{ cat "$work/genimage.log" >&2; die "genimage failed"; }
img=$out/$name.img
mv "$work/images/proxyha.img" "$img"

# Legacy BIOS boot: boot.img's code into the protective MBR (bytes 0..439, the partition table
# stays), with the LBA of core.img at 0x5c; core.img's first sector (diskboot) loads the rest,
# its blocklist (start at 0x1f4) must name the absolute LBA of core.img's second sector. This is
# what grub-bios-setup does, done on the image file.
bios_lba=$(partx -g -o START,NAME "$img" | awk '$2 == "bios" {print $1}')
[ -n "$bios_lba" ] || die "no bios partition in $img"
le64() { local i; for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf %o $((($1 >> (8 * i)) & 255)))"; done; }
dd if="$grub_boot" of="$img" bs=440 count=1 conv=notrunc status=none
le64 "$bios_lba" | dd of="$img" bs=1 seek=$((0x5c)) conv=notrunc status=none
le64 $((bios_lba + 1)) | dd of="$img" bs=1 seek=$((bios_lba * 512 + 0x1f4)) conv=notrunc status=none

# ---- outputs -------------------------------------------------------------------------------------
log "outputs"
"${nice[@]}" xz -T1 -6 -k -f "$img"
"${nice[@]}" qemu-img convert -f raw -O qcow2 -c "$img" "$out/$name.qcow2"
"${nice[@]}" qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$img" "$out/$name.vmdk"
"${nice[@]}" qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$img" "$out/$name.vhdx"
"$here/make-ova.sh" "$out/$name.vmdk" "$out/$name.ova" "$name"
# The caller prints it (build.sh in its sizes.txt, post-image.sh as is).
for f in "$out/$name.update" "$img" "$img.xz" "$out/$name.qcow2" "$out/$name.vmdk" "$out/$name.ova" "$out/$name.vhdx"; do
	printf '  %-28s %s\n' "$(basename "$f")" "$(size "$f")"
done >"$out/formats.txt"
