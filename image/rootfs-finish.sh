#!/usr/bin/env bash
# Finishes a root slot tree the same way for both builds (shared by image/build.sh and
# buildroot-external/scripts/post-build.sh): the board's own overlay, the keyring of trusted update
# keys, the first-boot config template, the links that put mutable state on the data partition,
# and /etc/os-release. board/common/rootfs-overlay itself is copied by the caller (build.sh with
# cp, Buildroot through BR2_ROOTFS_OVERLAY), before this runs.
#
#   image/rootfs-finish.sh ROOTFS VERSION BOARD   # BOARD = <family>/<board> under board/
#
# Environment: PROXYHA_SIGNING_PUB (required: the public half of the key that signs this build's
# bundles), PROXYHA_TRUSTED_KEYS=DIR (more *.pub keys the slot trusts, for key rotation).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
die() { printf 'image/rootfs-finish.sh: %s\n' "$*" >&2; exit 1; }
[ $# -eq 3 ] || die "usage: image/rootfs-finish.sh ROOTFS VERSION BOARD"
rootfs=$1 version=$2 board_dir=$top/board/$3
[ -d "$rootfs" ] || die "root tree $rootfs: no such directory"
[ -f "$board_dir/meta" ] || die "board $3: no $board_dir/meta"
# shellcheck source=/dev/null
. "$board_dir/meta"
pub=${PROXYHA_SIGNING_PUB:-}
[ -n "$pub" ] && [ -f "$pub" ] ||
	die "PROXYHA_SIGNING_PUB=${pub:-(unset)}: the public signing key is needed for the slot's keyring"

[ -d "$board_dir/rootfs-overlay" ] && cp -a "$board_dir/rootfs-overlay/." "$rootfs/"
mkdir -p "$rootfs"/{dev,proc,sys,run,tmp,boot,data,root,mnt,var,etc}

# The keyring this slot trusts for the next update: the signing key's public half, and more.
rm -rf "$rootfs/usr/share/proxyha/keys"
mkdir -p "$rootfs/usr/share/proxyha/keys"
install -m 0644 "$pub" "$rootfs/usr/share/proxyha/keys/$(basename "$pub")"
if [ -n "${PROXYHA_TRUSTED_KEYS:-}" ]; then
	for k in "$PROXYHA_TRUSTED_KEYS"/*.pub; do
		[ -f "$k" ] && install -m 0644 "$k" "$rootfs/usr/share/proxyha/keys/"
	done
fi
# The first-boot template (`proxyha config example`); image/assemble.sh copies it to the ESP.
install -m 0644 "$top/src/config/example.toml" "$rootfs/usr/share/proxyha/proxyha.toml.example"

# Mutable state lives on the data partition (or tmpfs). Buildroot's skeleton has its own links
# here (/var/log -> ../tmp, ...): replaced.
link() { # target name
	rm -rf "${rootfs:?}$2"
	ln -s "$1" "$rootfs$2"
}
link /data/etc/proxyha /etc/proxyha
link /data/log /var/log
link /run /var/run
link /data/state /var/lib
link /proc/mounts /etc/mtab
link /data/etc/resolv.conf /etc/resolv.conf
rm -f "$rootfs/etc/os-release" "$rootfs/usr/lib/os-release"
cat >"$rootfs/etc/os-release" <<EOF
NAME="ProxyHA"
ID=proxyha
VERSION_ID=$version
PRETTY_NAME="ProxyHA $version"
VARIANT_ID=$BOARD_ID
EOF
mkdir -p "$rootfs/usr/lib"
ln -s ../../etc/os-release "$rootfs/usr/lib/os-release"
