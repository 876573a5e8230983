#!/usr/bin/env bash
# The test command (README "Run the tests"): host packages, then every test, including the
# network-namespace lab tests, which need root. Run as root: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the lab tests need root (network namespaces); run: sudo $0" >&2
  exit 2
fi
scripts/host-deps.sh
# Lab tests build namespaces with fixed timing bounds; they serialise themselves.
cargo test --release --all-targets "$@"
