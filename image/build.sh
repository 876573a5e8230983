#!/usr/bin/env bash
# Builds the ProxyHA appliance image offline from Debian 12 packages, in one command:
#
#   sudo image/build.sh [BOARD]        # BOARD = <family>/<board> under board/, default x86_64/generic-x86-64
#
# Steps: host tools -> signing key -> static proxyha -> kernel + busybox debs -> trimmed modules ->
# initramfs -> root slot (squashfs, with the keyring) -> update bundle (.update, signed) -> ESP (GRUB
# EFI, per-slot kernel/initramfs, grubenv) -> GPT disk (genimage) -> .img.xz, .qcow2, .vmdk + .ova,
# .vhdx. Everything lands in image/out/; image/out/cache keeps the downloaded .debs between runs.
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
stage=$out/stage
nice=(nice -n "${NICE:-15}")

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'image/build.sh: %s\n' "$*" >&2; exit 1; }

tmpdirs=()
cleanup() {
	local rc=$?
	for d in "${tmpdirs[@]}"; do rm -rf "$d"; done
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
if [ -n "${PROXYHA_SIGNING_KEY:-}" ]; then
	sign_key=$PROXYHA_SIGNING_KEY
	sign_pub=${PROXYHA_SIGNING_PUB:-${sign_key%.key}.pub}
	[ -f "$sign_key" ] || die "PROXYHA_SIGNING_KEY=$sign_key: no such file"
	[ -f "$sign_pub" ] || die "public half of $sign_key not found at $sign_pub; set PROXYHA_SIGNING_PUB"
	log "signing key: $sign_key"
else
	sign_key=$out/keys/dev.key
	sign_pub=$out/keys/dev.pub
	if [ ! -f "$sign_key" ]; then
		mkdir -p "$out/keys"
		minisign -G -W -p "$sign_pub" -s "$sign_key" >/dev/null
		log "signing key: generated a DEVELOPMENT key $sign_key (no PROXYHA_SIGNING_KEY); not for production"
	else
		log "signing key: the DEVELOPMENT key $sign_key (no PROXYHA_SIGNING_KEY); not for production"
	fi
fi
export PROXYHA_SIGNING_KEY=$sign_key

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

# ---- initramfs -----------------------------------------------------------------------------------
log "initramfs"
initrd=$work/initramfs
rm -rf "$initrd"
mkdir -p "$initrd"/{bin,dev,proc,sys,newroot}
cp "$busybox" "$initrd/bin/busybox"
for a in sh mount umount mkdir cat sed grep find sort xargs sleep modprobe switch_root setsid cttyhack reboot; do
	ln -s busybox "$initrd/bin/$a"
done
install -m 0755 "$common/initramfs/init" "$initrd/init"
install_modules "$board_dir/modules-boot.list" "$initrd"
(cd "$initrd" && find . -print0 | sort -z | cpio --null -o -H newc --owner=0:0 --quiet) |
	"${nice[@]}" xz -9 --check=crc32 >"$work/initrd.img"

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
# The keyring this slot trusts for the next update: the signing key's public half, and more.
mkdir -p "$rootfs/usr/share/proxyha/keys"
install -m 0644 "$sign_pub" "$rootfs/usr/share/proxyha/keys/$(basename "$sign_pub")"
if [ -n "${PROXYHA_TRUSTED_KEYS:-}" ]; then
	for k in "$PROXYHA_TRUSTED_KEYS"/*.pub; do
		[ -f "$k" ] && install -m 0644 "$k" "$rootfs/usr/share/proxyha/keys/"
	done
fi
[ -d "$board_dir/rootfs-overlay" ] && cp -a "$board_dir/rootfs-overlay/." "$rootfs/"
# Mutable state lives on the data partition (or tmpfs).
ln -s /data/etc/proxyha "$rootfs/etc/proxyha"
ln -s /data/log "$rootfs/var/log"
ln -s /run "$rootfs/var/run"
ln -s /data/state "$rootfs/var/lib"
ln -s /proc/mounts "$rootfs/etc/mtab"
ln -s /data/etc/resolv.conf "$rootfs/etc/resolv.conf"
cat >"$rootfs/etc/os-release" <<EOF
NAME="ProxyHA"
ID=proxyha
VERSION_ID=$version
PRETTY_NAME="ProxyHA $version"
VARIANT_ID=$BOARD_ID
EOF
rm -f "$work/rootfs.squashfs"
"${nice[@]}" mksquashfs "$rootfs" "$work/rootfs.squashfs" -all-root -comp xz -Xbcj x86 -b 256K \
	-noappend -quiet -no-progress

# ---- update bundle -------------------------------------------------------------------------------
name=proxyha-$version-$BOARD_ID
kernel=$work/kernel/boot/vmlinuz-$kver
log "update bundle $name.update"
"$here/make-bundle.sh" "$out/$name.update" "$version" "$BOARD_ID" "$work/rootfs.squashfs" \
	"$kernel" "$work/initrd.img"
if [ "${BUNDLE_ONLY:-0}" = 1 ]; then
	size() { du -b "$1" | awk '{printf "%6.1f MiB", $1 / 1048576}'; }
	printf '  %-28s %s\n' "$name.update" "$(size "$out/$name.update")"
	exit 0
fi

# ---- ESP ---------------------------------------------------------------------------------------
log "ESP (GRUB EFI)"
esp=$work/esp
rm -rf "$esp"
mkdir -p "$esp/EFI/BOOT" "$esp/A"
cp "$kernel" "$esp/A/vmlinuz"
cp "$work/initrd.img" "$esp/A/initrd.img"
grub-mkimage -O x86_64-efi -p /EFI/BOOT -o "$esp/EFI/BOOT/BOOTX64.EFI" \
	part_gpt fat normal linux echo test configfile loadenv sleep reboot halt serial terminal \
	efi_gop all_video gzio search search_label
sed "s|@KERNEL_CONSOLE@|$KERNEL_CONSOLE|" "$board_dir/grub.cfg" >"$esp/EFI/BOOT/grub.cfg"
# Legacy BIOS: the same grub.cfg and grubenv, read from the ESP (first partition).
grub_bios=/usr/lib/grub/i386-pc
grub-mkimage -O i386-pc -p "(hd0,gpt1)/EFI/BOOT" -o "$work/core.img" \
	biosdisk part_gpt fat normal linux echo test configfile loadenv sleep reboot halt serial terminal \
	gzio search search_label
grub-editenv "$esp/EFI/BOOT/grubenv" create
grub-editenv "$esp/EFI/BOOT/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0 A_VERSION="$version"
"$proxyha_bin" config example >"$esp/proxyha.toml.example"
cat >"$esp/README.txt" <<'EOF'
ProxyHA boot partition.

First boot: copy proxyha.toml.example to proxyha.toml here (mount the image, or this partition)
and edit it. At boot it is checked; if valid it is installed on the data partition and used,
if not the console shows proxyha.toml:LINE:COL and the installed config stays.
EOF

# ---- disk ----------------------------------------------------------------------------------------
log "disk (genimage, $board_path)"
rm -rf "$stage" "$out/images"
mkdir -p "$stage" "$out/images"
cp -a "$esp" "$stage/esp"
cp "$work/rootfs.squashfs" "$work/core.img" "$stage/"
gtmp=$(mktemp -d "$out/genimage.XXXXXX")
tmpdirs+=("$gtmp")
mkdir -p "$gtmp/root"
"${nice[@]}" genimage --config "$board_dir/genimage.cfg" --rootpath "$gtmp/root" --tmppath "$gtmp/tmp" \
	--inputpath "$stage" --outputpath "$out/images" >"$work/genimage.log" 2>&1 ||
	{ cat "$work/genimage.log" >&2; die "genimage failed"; }

# ---- outputs -------------------------------------------------------------------------------------
img=$out/$name.img
mv "$out/images/proxyha.img" "$img"

# Legacy BIOS boot: boot.img's code into the protective MBR (bytes 0..439, the partition table
# stays), with the LBA of core.img at 0x5c; core.img's first sector (diskboot) loads the rest,
# its blocklist (start at 0x1f4) must name the absolute LBA of core.img's second sector. This is
# what grub-bios-setup does, done on the image file.
bios_lba=$(partx -g -o START,NAME "$img" | awk '$2 == "bios" {print $1}')
[ -n "$bios_lba" ] || die "no bios partition in $img"
le64() { local i; for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf %o $((($1 >> (8 * i)) & 255)))"; done; }
dd if="$grub_bios/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
le64 "$bios_lba" | dd of="$img" bs=1 seek=$((0x5c)) conv=notrunc status=none
le64 $((bios_lba + 1)) | dd of="$img" bs=1 seek=$((bios_lba * 512 + 0x1f4)) conv=notrunc status=none
log "outputs"
"${nice[@]}" xz -T1 -6 -k -f "$img"
"${nice[@]}" qemu-img convert -f raw -O qcow2 -c "$img" "$out/$name.qcow2"
"${nice[@]}" qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$img" "$out/$name.vmdk"
"${nice[@]}" qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$img" "$out/$name.vhdx"
"$here/make-ova.sh" "$out/$name.vmdk" "$out/$name.ova" "$name"

size() { du -b "$1" | awk '{printf "%6.1f MiB", $1 / 1048576}'; }
{
	echo "ProxyHA $version image for $BOARD_ID (kernel $kver)"
	printf '  %-28s %s\n' "proxyha (static, stripped)" "$(size "$rootfs/usr/bin/proxyha")"
	printf '  %-28s %s (%s modules)\n' "root slot (squashfs)" "$(size "$work/rootfs.squashfs")" \
		"$(find "$rootfs/lib/modules" -name '*.ko' | wc -l)"
	printf '  %-28s %s (%s modules)\n' "initramfs" "$(size "$work/initrd.img")" \
		"$(find "$initrd/lib/modules" -name '*.ko' | wc -l)"
	printf '  %-28s %s\n' "kernel" "$(size "$esp/A/vmlinuz")"
	for f in "$out/$name.update" "$img" "$img.xz" "$out/$name.qcow2" "$out/$name.vmdk" "$out/$name.ova" "$out/$name.vhdx"; do
		printf '  %-28s %s\n' "$(basename "$f")" "$(size "$f")"
	done
} | tee "$out/sizes.txt"
