#!/usr/bin/env bash
# Installs the Debian 12 host tools image/build.sh and the QEMU tests (image/test-*.sh) use.
# Idempotent; needs root only when something is missing (re-runs itself with sudo when not root).
# qemu-utils must match qemu-system-x86 (Debian 12's 7.2; a backports qemu-utils breaks
# qemu-system-common), hence the explicit version when a mismatch is found.
# Who uses what (a fresh Debian 12 has only the Essential/required packages: coreutils, dpkg, apt,
# tar, findutils, sed, grep, mawk, util-linux, libc-bin are there, listed when a script needs them):
#   gcc, libc6-dev        cargo links the static proxyha with cc and libc.a (build.sh)
#   file                  build.sh checks that proxyha is statically linked
#   kmod                  depmod, modprobe --show-depends (build.sh: the trimmed module trees)
#   cpio, xz-utils        the initramfs (cpio | xz), .img.xz
#   squashfs-tools        mksquashfs: the root slot
#   grub-common           grub-mkimage, grub-editenv (ESP, grubenv)
#   grub-efi-amd64-bin    GRUB's x86_64-efi modules; grub-pc-bin: i386-pc modules and boot.img
#   genimage              the GPT disk; it runs mkdosfs (dosfstools), mcopy/mmd (mtools), mke2fs (e2fsprogs)
#   qemu-utils            qemu-img: .qcow2/.vmdk/.vhdx (build.sh, make-ova.sh), disk copies in the tests
#   nftables, iproute2    /usr/sbin/nft and /usr/sbin/ip are copied into the root slot; ip: the tests' LANs
#   tar, coreutils        make-ova.sh (tar, sha256sum, stat); timeout, nice, date in the tests
#   util-linux            partx (build.sh, test-boot.sh)
#   qemu-system-x86       the QEMU tests (its dependencies bring SeaBIOS and the iPXE option ROMs)
#   ovmf                  UEFI firmware for the QEMU tests
#   e2fsprogs             debugfs: test-boot.sh reads /var/log/messages off the data partition
#   mtools                mcopy: first-boot proxyha.toml onto a test disk's ESP
#   netcat-openbsd        nc -U (QEMU monitor and serial sockets), the syslog listener of test-failover.sh
#   curl                  the client's fetches through the VIP (test-failover.sh, test-bond.sh)
#   minisign              signed update bundles
set -euo pipefail
pkgs=(gcc libc6-dev file kmod cpio xz-utils squashfs-tools grub-common grub-efi-amd64-bin grub-pc-bin
	genimage dosfstools mtools e2fsprogs qemu-utils nftables iproute2 tar coreutils util-linux
	qemu-system-x86 ovmf curl netcat-openbsd minisign)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	# shellcheck source=scripts/root.sh
	. "$(dirname "$0")/../scripts/root.sh"
	need_root "$0" "$@"
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	sys=$(apt-cache policy qemu-system-x86 | sed -n 's/^  Candidate: //p')
	args=()
	for p in "${missing[@]}"; do
		case "$p" in
		qemu-system-x86) args+=("$p" "qemu-utils=$sys") ;;
		qemu-utils) [[ " ${missing[*]} " == *" qemu-system-x86 "* ]] || args+=("$p") ;;
		*) args+=("$p") ;;
		esac
	done
	apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}"
fi
