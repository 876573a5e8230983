#!/usr/bin/env bash
# Builds the initramfs the same way for both builds (shared by image/build.sh and
# buildroot-external/scripts/post-image.sh): busybox with the applets board/common/initramfs/init
# runs, the shared libraries busybox needs (none for Debian's static busybox; the C library for
# Buildroot's), and the kernel modules of the board's modules-boot.list with their dependencies
# (a module built into the kernel needs nothing; a name the kernel has neither way is an error).
#
#   image/initramfs.sh SYSROOT KVER BOARD OUT
#
#   SYSROOT  a tree with bin/busybox, lib/modules/KVER (modules.dep, modules.builtin) and, for a
#            dynamic busybox, the libraries it links (Buildroot's TARGET_DIR; build.sh's rootfs)
#   BOARD    <family>/<board> under board/ (its modules-boot.list)
#   OUT      the xz-compressed newc cpio to write
# Environment: READELF (default readelf; Buildroot passes its cross readelf).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
die() { printf 'image/initramfs.sh: %s\n' "$*" >&2; exit 1; }
[ $# -eq 4 ] || die "usage: image/initramfs.sh SYSROOT KVER BOARD OUT"
sysroot=$1 kver=$2 board_dir=$top/board/$3 out=$4
list=$board_dir/modules-boot.list
[ -x "$sysroot/bin/busybox" ] || die "$sysroot/bin/busybox: missing"
[ -d "$sysroot/lib/modules/$kver" ] || die "$sysroot/lib/modules/$kver: missing (kernel modules not installed?)"
[ -f "$list" ] || die "board $3: no $list"
readelf=${READELF:-readelf}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
initrd=$work/root
mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,lib}
cp "$sysroot/bin/busybox" "$initrd/bin/busybox"
for a in sh mount umount mkdir cat sed grep find sort xargs sleep modprobe switch_root setsid cttyhack reboot; do
	ln -s busybox "$initrd/bin/$a"
done
install -m 0755 "$top/board/common/initramfs/init" "$initrd/init"

# A dynamic busybox: its interpreter and NEEDED libraries (transitively), found in the sysroot.
copy_needed() { # elf
	local lib path
	while read -r lib; do
		[ -e "$initrd/lib/$lib" ] && continue
		path=""
		for d in lib usr/lib lib64 usr/lib64; do
			[ -e "$sysroot/$d/$lib" ] && { path=$sysroot/$d/$lib; break; }
		done
		[ -n "$path" ] || die "$lib (needed by $(basename "$1")) not found in $sysroot/{lib,usr/lib}"
		cp -L "$path" "$initrd/lib/$lib"
		copy_needed "$initrd/lib/$lib"
	done < <("$readelf" -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
}
interp=$("$readelf" -l "$sysroot/bin/busybox" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
if [ -n "$interp" ]; then
	mkdir -p "$initrd$(dirname "$interp")"
	cp -L "$sysroot$interp" "$initrd$interp"
	copy_needed "$sysroot/bin/busybox"
fi

# The boot modules, with their dependencies, from the sysroot's module tree.
mkdir -p "$initrd/lib/modules/$kver"
while read -r name; do
	case "$name" in '' | '#'*) continue ;; esac
	modprobe -d "$sysroot" -S "$kver" --show-depends "$name" >"$work/deps" 2>&1 ||
		die "module $name (from $list) is not in kernel $kver, neither built in nor a module: $(cat "$work/deps")"
	while read -r kind path _; do
		[ "$kind" = insmod ] || continue
		mkdir -p "$initrd$(dirname "${path#"$sysroot"}")"
		cp -u "$path" "$initrd${path#"$sysroot"}"
	done <"$work/deps"
done < <(sed 's/#.*//' "$list")
for f in modules.order modules.builtin modules.builtin.modinfo; do
	[ -f "$sysroot/lib/modules/$kver/$f" ] && cp "$sysroot/lib/modules/$kver/$f" "$initrd/lib/modules/$kver/"
done
depmod -b "$initrd" "$kver"

mkdir -p "$(dirname "$out")"
(cd "$initrd" && find . -print0 | sort -z | cpio --null -o -H newc --owner=0:0 --quiet) |
	nice -n "${NICE:-15}" xz -9 --check=crc32 >"$out"
printf 'initramfs %s: %s modules, %s\n' "$out" "$(find "$initrd/lib/modules" -name '*.ko*' | wc -l)" \
	"$(du -b "$out" | awk '{printf "%.1f MiB", $1 / 1048576}')" >&2
