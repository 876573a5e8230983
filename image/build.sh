#!/usr/bin/env bash
# Builds the ProxyHA appliance image offline from Debian 12 packages, in one command:
#
#   sudo image/build.sh [BOARD]        # BOARD = <family>/<board> under board/, default x86_64/generic-x86-64
#
# Steps: host tools -> signing key -> static proxyha -> kernel + busybox debs -> initramfs
# (image/initramfs.sh) -> root slot (trimmed modules, overlay, image/rootfs-finish.sh, squashfs) ->
# GRUB images -> image/assemble.sh: update bundle (.update, signed), ESP, GPT disk (genimage),
# .img.xz, .qcow2, .vmdk + .ova, .vhdx. The three image/*.sh steps are the ones the Buildroot build
# (buildroot-external/) runs too. Everything lands in image/out/; image/out/cache keeps the
# downloaded .debs between runs.
# Needs root (apt-get for missing host tools; genimage and mksquashfs run unprivileged-safe, no
# loop mounts).
#
# Environment:
#   PROXYHA_SIGNING_KEY=FILE   minisign secret key that signs the bundle; its public half is
#                              PROXYHA_SIGNING_PUB (default: FILE with .key replaced by .pub).
#                              Unset: a development key in image/out/keys/ (generated once; never
#                              committed, never for production) signs, and the build says so.
#   PROXYHA_TRUSTED_KEYS=DIR   more *.pub keys the root slot trusts (key rotation: tomorrow's key).
#   PROXYHA_VERSION=X.Y.Z      build this version instead of Cargo.toml's (release and test builds).
#   BUNDLE_ONLY=1              stop after the update bundle (no disk images).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
board_path=${1:-x86_64/generic-x86-64}
board_dir=$top/board/$board_path
common=$top/board/common
out=$here/out
work=$out/work
cache=$out/cache
nice=(nice -n "${NICE:-15}")

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'image/build.sh: %s\n' "$*" >&2; exit 1; }

cleanup() {
	local rc=$?
	[ $rc -eq 0 ] || printf 'image/build.sh: failed (exit %d); partial output left in %s\n' $rc "$out" >&2
}
trap cleanup EXIT

[ -f "$board_dir/meta" ] || die "board $board_path: no $board_dir/meta; boards: $(cd "$top/board" && ls -d */*/ | tr '\n' ' ')"
# shellcheck source=/dev/null
. "$board_dir/meta"
[ "$(id -u)" -eq 0 ] || die "run as root (installs missing host tools with apt-get)"

# ---- host tools -------------------------------------------------------------------------------
log "host tools"
"$here/host-deps.sh"

# ---- signing key -----------------------------------------------------------------------------
# shellcheck source=image/signing-key.sh
. "$here/signing-key.sh"
signing_key "$out"

# ---- proxyha, statically linked ------------------------------------------------------------------
log "proxyha (static, $RUST_TARGET${PROXYHA_VERSION:+, version $PROXYHA_VERSION})"
[ -z "${PROXYHA_VERSION:-}" ] || export PROXYHA_VERSION
(cd "$top" && RUSTFLAGS="-C target-feature=+crt-static" "${nice[@]}" \
	cargo build --release --locked --target "$RUST_TARGET" --bin proxyha)
proxyha_bin=${CARGO_TARGET_DIR:-$top/target}/$RUST_TARGET/release/proxyha
file "$proxyha_bin" | grep -q 'static' || die "$proxyha_bin is not statically linked"
version=$("$proxyha_bin" version | awk '{print $2}')

# ---- Debian packages: kernel, busybox ---------------------------------------------------------
mkdir -p "$cache" "$work"
kpkg=$(apt-cache show linux-image-amd64 | sed -n 's/^Depends: \(linux-image-6\.1\.[^ ,]*-amd64\).*/\1/p' | head -n1)
[ -n "$kpkg" ] || die "no linux-image-6.1 package known to apt; run apt-get update"
fetch_deb() { # name -> path of the .deb in the cache
	local f
	f=$(find "$cache" -maxdepth 1 -name "${1}_*.deb" | sort | tail -n1)
	if [ -z "$f" ]; then
		(cd "$cache" && apt-get download "$1" >&2) || die "apt-get download $1 failed"
		f=$(find "$cache" -maxdepth 1 -name "${1}_*.deb" | sort | tail -n1)
	fi
	printf '%s\n' "$f"
}
log "debs: $kpkg busybox-static tinyproxy-bin"
kdeb=$(fetch_deb "$kpkg")
bbdeb=$(fetch_deb busybox-static)
tpdeb=$(fetch_deb tinyproxy-bin)

rm -rf "$work/kernel" "$work/busybox" "$work/tinyproxy"
dpkg -x "$kdeb" "$work/kernel"
dpkg -x "$bbdeb" "$work/busybox"
dpkg -x "$tpdeb" "$work/tinyproxy"
kver=$(ls "$work/kernel/lib/modules")
busybox=$work/busybox/bin/busybox
[ -x "$busybox" ] || die "busybox-static has no bin/busybox"
depmod -b "$work/kernel" "$kver"

# Copies the modules named in LIST, with their dependencies, into DEST/lib/modules/KVER.
install_modules() { # list dest
	local list=$1 dest=$2 name line
	mkdir -p "$dest/lib/modules/$kver"
	while read -r name; do
		case "$name" in '' | '#'*) continue ;; esac
		modprobe -d "$work/kernel" -S "$kver" --show-depends "$name" >"$work/deps" 2>&1 ||
			die "module $name (from $list) is not in kernel $kver: $(cat "$work/deps")"
		while read -r line; do
			case "$line" in
			insmod\ *)
				line=${line#insmod }
				line=${line%% *}
				mkdir -p "$dest$(dirname "${line#"$work"/kernel}")"
				cp -u "$line" "$dest${line#"$work"/kernel}"
				;;
			esac
		done <"$work/deps"
	done < <(sed 's/#.*//' "$list")
	cp "$work/kernel/lib/modules/$kver/"modules.{order,builtin,builtin.modinfo} "$dest/lib/modules/$kver/"
	depmod -b "$dest" "$kver"
}

# ---- initramfs (image/initramfs.sh, shared with the Buildroot build) ---------------------------
log "initramfs"
mkdir -p "$work/kernel/bin"
cp "$busybox" "$work/kernel/bin/busybox"
"$here/initramfs.sh" "$work/kernel" "$kver" "$board_path" "$work/initrd.img"

# ---- root slot -----------------------------------------------------------------------------------
log "root slot"
rootfs=$work/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,lib,dev,proc,sys,run,tmp,boot,data,root,var,etc,mnt}
cp "$busybox" "$rootfs/bin/busybox"
while read -r p; do
	[ -e "$rootfs/$p" ] || ln -s /bin/busybox "$rootfs/$p"
done < <("$busybox" --list-full)
install -m 0755 -s "$proxyha_bin" "$rootfs/usr/bin/proxyha"
# The data path runs nft and ip (src/dataplane): Debian's, with the shared libraries they use.
for b in /usr/sbin/nft /usr/sbin/ip; do
	[ -x "$b" ] || die "$b missing on the build host (apt-get install nftables iproute2)"
	rm -f "$rootfs$b" "$rootfs/sbin/$(basename "$b")" "$rootfs/bin/$(basename "$b")"
	install -m 0755 -D "$b" "$rootfs$b"
	ldd "$b" | awk '/=>/ {print $3} /^\t\/lib64/ {print $1}' | while read -r lib; do
		[ -e "$rootfs$lib" ] || install -m 0755 -D "$(readlink -f "$lib")" "$rootfs$lib"
	done
done
# The built-in forward proxy (issue 5 item 8); needs only libc, already there for nft and ip.
install -m 0755 -D "$work/tinyproxy/usr/bin/tinyproxy" "$rootfs/usr/bin/tinyproxy"
install -m 0644 -D "$work/tinyproxy/usr/share/tinyproxy/default.html" "$rootfs/usr/share/tinyproxy/default.html"
install_modules "$board_dir/modules.list" "$rootfs"
cp -a "$common/rootfs-overlay/." "$rootfs/"
"$here/rootfs-finish.sh" "$rootfs" "$version" "$board_path"
rm -f "$work/rootfs.squashfs"
"${nice[@]}" mksquashfs "$rootfs" "$work/rootfs.squashfs" -all-root -comp xz -Xbcj x86 -b 256K \
	-noappend -quiet -no-progress

# ---- GRUB images: EFI, and legacy BIOS with the board's early config (Buildroot's grub2 package
# makes the same two from BR2_TARGET_GRUB2_BUILTIN_*; buildroot-external/check.sh compares) -----
log "GRUB (x86_64-efi, i386-pc)"
grub_bios=/usr/lib/grub/i386-pc
# shellcheck disable=SC2086 # the module lists are word lists
grub-mkimage -O x86_64-efi -p /EFI/BOOT -o "$work/BOOTX64.EFI" $GRUB_MODULES_EFI
# shellcheck disable=SC2086
grub-mkimage -O i386-pc -p "($GRUB_BOOT_PARTITION)/boot/grub" -c "$board_dir/grub-early.cfg" -o "$work/core.img" $GRUB_MODULES_PC

# ---- bundle, ESP, disk, formats (image/assemble.sh, shared with the Buildroot build) -------------
"$here/assemble.sh" "$board_path" "$out" "$version" "$work/rootfs.squashfs" "$work/kernel/boot/vmlinuz-$kver" \
	"$work/initrd.img" "$work/BOOTX64.EFI" "$work/core.img" "$grub_bios/boot.img" \
	"$rootfs/usr/share/proxyha/proxyha.toml.example"
[ "${BUNDLE_ONLY:-0}" = 1 ] && exit 0

size() { du -b "$1" | awk '{printf "%6.1f MiB", $1 / 1048576}'; }
{
	echo "ProxyHA $version image for $BOARD_ID (kernel $kver)"
	printf '  %-28s %s\n' "proxyha (static, stripped)" "$(size "$rootfs/usr/bin/proxyha")"
	printf '  %-28s %s (%s modules)\n' "root slot (squashfs)" "$(size "$work/rootfs.squashfs")" \
		"$(find "$rootfs/lib/modules" -name '*.ko' | wc -l)"
	printf '  %-28s %s\n' "initramfs" "$(size "$work/initrd.img")"
	printf '  %-28s %s\n' "kernel" "$(size "$work/kernel/boot/vmlinuz-$kver")"
	cat "$out/formats.txt"
} | tee "$out/sizes.txt"
