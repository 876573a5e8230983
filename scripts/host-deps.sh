#!/usr/bin/env bash
# Installs the Debian 12 packages the tests, the demo and the benchmarks use.
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail
pkgs=(iproute2 nftables keepalived iputils-ping procps kmod tcpdump)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
