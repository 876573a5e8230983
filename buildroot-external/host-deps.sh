#!/usr/bin/env bash
# Installs the Debian 12 packages buildroot-external/check.sh needs (run by .ci/run). Idempotent:
# installs only what is missing; needs root only then (re-runs itself with sudo, scripts/root.sh).
#   make, gcc, libc6-dev  Buildroot's and the kernel's Kconfig tools are built from source
#   flex, bison           the kernel's Kconfig parser (linux-source-6.1 ships no generated one)
#   python3-magic, python3-flake8, shellcheck
#                         utils/check-package (with Debian's /usr/bin/python3)
#   rsync                 make proxyha-rsync
#   linux-source-6.1      the kernel fragment is checked against Debian's 6.1 sources
#   xz-utils, tar, file   unpacking Buildroot and the kernel; Buildroot's own checks
#   g++, perl, wget, cpio, unzip, bc, patch, bzip2, gzip, diffutils, findutils, debianutils, git
#                         the programs support/dependencies/dependencies.sh insists on before any
#                         make target (a fresh machine without cpio failed `make proxyha-rsync`)
# (A full Buildroot build needs more; README.md, "Buildroot build", lists them.)
set -euo pipefail
pkgs=(make gcc libc6-dev flex bison python3 python3-magic python3-flake8 shellcheck rsync
	linux-source-6.1 xz-utils tar file g++ perl wget cpio unzip bc patch bzip2 gzip diffutils
	findutils debianutils git)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	# shellcheck source=/dev/null
	. "$(dirname "$0")/../scripts/root.sh"
	need_root "$0" "$@"
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
