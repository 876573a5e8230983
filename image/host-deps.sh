#!/usr/bin/env bash
# Installs the Debian 12 host tools image/build.sh and image/test-boot.sh use. Idempotent.
# qemu-utils must match qemu-system-x86 (Debian 12's 7.2; a backports qemu-utils breaks
# qemu-system-common), hence the explicit version when a mismatch is found.
set -euo pipefail
pkgs=(genimage mtools dosfstools e2fsprogs squashfs-tools grub-efi-amd64-bin grub-common ovmf
	qemu-system-x86 qemu-utils kmod xz-utils cpio file nftables iproute2 util-linux curl netcat-openbsd)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	sys=$(apt-cache policy qemu-system-x86 | sed -n 's/^  Candidate: //p')
	args=()
	for p in "${missing[@]}"; do
		if [ "$p" = qemu-system-x86 ]; then args+=("$p" "qemu-utils=$sys"); else args+=("$p"); fi
	done
	apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}"
fi
