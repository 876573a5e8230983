#!/usr/bin/env bash
# Runs Buildroot's part after compiling, scripts/post-build.sh and scripts/post-image.sh, on a
# Buildroot-shaped output directory made from the offline build's pieces (run after
# image/build.sh; .ci/run does), since Buildroot itself cannot download here:
#   TARGET_DIR   Debian's dynamically linked busybox with its C library in /lib (as Buildroot's
#                glibc target has it), the kernel's whole module tree, GRUB's tools as
#                BR2_TARGET_GRUB2_INSTALL_TOOLS leaves them, Buildroot's os-release links;
#   BINARIES_DIR bzImage, rootfs.squashfs, and GRUB's images made the way Buildroot's grub2 package
#                makes them, from the defconfig's BR2_TARGET_GRUB2_* values.
# Checks: post-build finished the target (keyring, first-boot template, data links, os-release, no
# GRUB tools); post-image wrote every format and a bundle that `proxyha update verify` accepts with
# that target's keyring; the initramfs's busybox runs with the libraries it carries (chroot); the
# ESP holds GRUB's EFI image, slot A's kernel and initramfs and the grubenv; and the disk boots
# (image/test-boot.sh, boot 1 and the legacy-BIOS boot) unless NO_BOOT=1.
#
#   buildroot-external/test-post-scripts.sh      # root (chroot); after image/build.sh
set -euo pipefail

ext=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$ext/.." && pwd)
out=$top/image/out
board=x86_64/generic-x86-64
die() { printf 'test-post-scripts: FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '   ok: %s\n' "$*"; }
t0=$(date +%s)
step() { printf '== %s (%ss)\n' "$*" $(($(date +%s) - t0)); }
[ "$(id -u)" -eq 0 ] || die "needs root (chroot into the initramfs)"
if [ ! -f "$out/work/rootfs.squashfs" ] || [ ! -d "$out/work/kernel/lib/modules" ]; then
	die "no offline build in $out/work: run image/build.sh first"
fi
proxyha=${CARGO_TARGET_DIR:-$top/target}/x86_64-unknown-linux-gnu/release/proxyha
[ -x "$proxyha" ] || die "$proxyha missing: run image/build.sh first"

base=$(mktemp -d "$out/brsim.XXXXXX")
trap 'rm -rf "$base"' EXIT
target=$base/target bin=$base/images host=$base/host
mkdir -p "$target"/{bin,lib,usr/bin,usr/lib,etc} "$bin/efi-part/EFI/BOOT" "$host/bin"

step "a Buildroot-shaped output directory"
deb=$(find "$out/cache" -maxdepth 1 -name 'busybox_*.deb' | sort | tail -n 1)
if [ -z "$deb" ]; then
	(cd "$out/cache" && apt-get download busybox >/dev/null) || die "apt-get download busybox failed"
	deb=$(find "$out/cache" -maxdepth 1 -name 'busybox_*.deb' | sort | tail -n 1)
fi
dpkg -x "$deb" "$base/bb"
cp "$base/bb/bin/busybox" "$target/bin/busybox"
file "$target/bin/busybox" | grep -q 'dynamically linked' || die "Debian's busybox is not dynamic: nothing to test"
# Buildroot's glibc target: the loader and libraries in /lib, /lib64 a link to it.
ln -s lib "$target/lib64"
while read -r lib; do
	cp -L "$lib" "$target/lib/$(basename "$lib")"
done < <(ldd "$target/bin/busybox" | awk '/=>/ {print $3} /^\t\/lib64/ {print $1}')
kver=$(ls "$out/work/kernel/lib/modules")
mkdir -p "$target/lib/modules"
cp -al "$out/work/kernel/lib/modules/$kver" "$target/lib/modules/$kver"
mkdir -p "$target/usr/lib/grub/i386-pc" "$target/etc/grub.d"
cp /usr/lib/grub/i386-pc/boot.img "$target/usr/lib/grub/i386-pc/"
cp /usr/bin/grub-editenv "$target/usr/bin/grub-editenv"
echo 'NAME=Buildroot' >"$target/usr/lib/os-release"
ln -s ../usr/lib/os-release "$target/etc/os-release"
cp -a "$top/board/common/rootfs-overlay/." "$target/" # BR2_ROOTFS_OVERLAY

cp "$out/work/kernel/boot/vmlinuz-$kver" "$bin/bzImage"
cp "$out/work/rootfs.squashfs" "$bin/rootfs.squashfs"
# GRUB's images as boot/grub2/grub2.mk makes them, from the defconfig's values.
defcfg() { sed -n "s/^$1=\"\\(.*\\)\"\$/\\1/p" "$ext/configs/proxyha_x86_64_defconfig"; }
early=$(defcfg BR2_TARGET_GRUB2_BUILTIN_CONFIG_PC)
early=${early//\$(BR2_EXTERNAL_PROXYHA_PATH)/$ext}
# shellcheck disable=SC2046 # word lists
grub-mkimage -d /usr/lib/grub/x86_64-efi -O x86_64-efi -o "$bin/efi-part/EFI/BOOT/bootx64.efi" \
	-p /EFI/BOOT $(defcfg BR2_TARGET_GRUB2_BUILTIN_MODULES_EFI)
# shellcheck disable=SC2046
grub-mkimage -d /usr/lib/grub/i386-pc -O i386-pc -o "$bin/grub.img" \
	-p "($(defcfg BR2_TARGET_GRUB2_BOOT_PARTITION))/boot/grub" -c "$early" $(defcfg BR2_TARGET_GRUB2_BUILTIN_MODULES_PC)
ok "TARGET_DIR: dynamic busybox ($(find "$target/lib/" -maxdepth 1 -name '*.so*' | wc -l) libraries), kernel $kver; BINARIES_DIR: bzImage, rootfs.squashfs, GRUB images"

# Buildroot's environment for post scripts (EXTRA_ENV and the exports of its Makefile).
export BR2_EXTERNAL_PROXYHA_PATH=$ext TARGET_DIR=$target BINARIES_DIR=$bin HOST_DIR=$host \
	BASE_DIR=$base BUILD_DIR=$base/build STAGING_DIR=$base/staging CONFIG_DIR=$base
export -n PROXYHA_SIGNING_KEY PROXYHA_SIGNING_PUB 2>/dev/null || true
unset PROXYHA_SIGNING_KEY PROXYHA_SIGNING_PUB

step "post-build.sh"
"$ext/scripts/post-build.sh" "$target" "$board"
[ -f "$bin/boot.img" ] || die "post-build left no boot.img in BINARIES_DIR"
for f in usr/lib/grub usr/bin/grub-editenv etc/grub.d; do
	[ ! -e "$target/$f" ] || die "GRUB's $f is still in the target"
done
keys=("$target"/usr/share/proxyha/keys/*.pub)
[ -f "${keys[0]}" ] || die "no keyring in the target"
cmp -s "$target/usr/share/proxyha/proxyha.toml.example" "$top/src/config/example.toml" || die "first-boot template missing"
for l in /var/log:/data/log /etc/proxyha:/data/etc/proxyha /var/lib:/data/state; do
	[ "$(readlink "$target${l%%:*}")" = "${l#*:}" ] || die "link ${l%%:*} -> $(readlink "$target${l%%:*}"), not ${l#*:}"
done
grep -q '^ID=proxyha$' "$target/etc/os-release" || die "os-release: $(cat "$target/etc/os-release")"
ok "target: keyring ($(basename "${keys[0]}")), template, links, os-release; GRUB tools gone"

step "post-image.sh"
"$ext/scripts/post-image.sh" "$bin" "$board"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
name=proxyha-$version-generic-x86-64
for f in update img img.xz qcow2 vmdk ova vhdx; do
	[ -s "$bin/$name.$f" ] || die "post-image wrote no $name.$f"
done
ok "every format: $(find "$bin" -maxdepth 1 -name "$name.*" -printf '%f ')"
"$proxyha" update verify "$bin/$name.update" --keys "$target/usr/share/proxyha/keys" ||
	die "the bundle does not verify with the target's keyring"
ok "the bundle verifies with the target's keyring"

step "the initramfs"
mkdir -p "$base/initrd"
(cd "$base/initrd" && xz -dc "$bin/initrd.img" | cpio -id --quiet)
if [ ! -e "$base/initrd/lib64/ld-linux-x86-64.so.2" ] || [ ! -e "$base/initrd/lib/libc.so.6" ]; then
	die "the initramfs lacks the loader or libc: $(find "$base/initrd/lib" "$base/initrd/lib64" -maxdepth 1 | tr '\n' ' ')"
fi
got=$(chroot "$base/initrd" /bin/sh -c 'busybox | busybox head -n 1') ||
	die "busybox does not run in the initramfs: $got"
ok "$got ($(find "$base/initrd/lib/modules" -name '*.ko' | wc -l) modules)"
off=$(partx -g -o START,NAME "$bin/$name.img" | awk '$2 == "esp" {print $1}')
esp=$(mdir -i "$bin/$name.img@@$((off * 512))" -/ -b ::/ | tr '\n' ' ')
for f in ::/EFI/BOOT/BOOTX64.EFI ::/EFI/BOOT/grub.cfg ::/EFI/BOOT/grubenv ::/A/vmlinuz ::/A/initrd.img ::/proxyha.toml.example; do
	case " $esp " in *" $f "*) ;; *) die "ESP lacks $f: $esp" ;; esac
done
ok "ESP: GRUB EFI, grub.cfg, grubenv, slot A's kernel and initramfs, the template"

if [ "${NO_BOOT:-0}" != 1 ]; then
	step "boot (image/test-boot.sh on the Buildroot-path disk)"
	BIOS=1 "$top/image/test-boot.sh" "$bin/$name.qcow2"
fi
step "done"
echo "test-post-scripts: PASS"
