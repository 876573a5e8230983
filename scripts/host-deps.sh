#!/usr/bin/env bash
# Installs the Debian 12 packages the tests, the demo and the benchmarks use (the image build and
# its QEMU tests: image/host-deps.sh). Idempotent: installs only what is missing; needs root only
# then (re-runs itself with sudo when not root, scripts/root.sh).
# Who uses what (a fresh Debian 12 has only the Essential/required packages):
#   gcc, libc6-dev   cargo links with cc (rustup brings no linker)
#   iproute2         ip, ss, bridge: the namespace labs (lab/src, tests/*_lab.rs)
#   nftables         nft: the data path (src/dataplane) and its lab tests
#   keepalived       the interoperability labs (lab/src/daemons.rs)
#   procps           sysctl (lab/src, src/dataplane)
#   python3          the TCP servers and clients of tests/dataplane_lab.rs
#   grub-common      grub-editenv: a unit test cross-checks the grubenv format with it
#   minisign         update bundle signatures (src/update): tests check against the reference tool
#   util-linux       nsenter (lab/src), coreutils: timeout (lab/src/lib.rs); both Essential
#   iputils-ping, tcpdump, kmod   ping/tcpdump/modprobe for looking into a lab by hand
set -euo pipefail
pkgs=(gcc libc6-dev iproute2 nftables keepalived procps python3 grub-common minisign util-linux
  coreutils iputils-ping tcpdump kmod)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck source=scripts/root.sh
  . "$(dirname "$0")/root.sh"
  need_root "$0" "$@"
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
