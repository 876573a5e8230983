#!/usr/bin/env bash
# The test command (README "The two commands"): host packages, then every test, including the
# network-namespace lab tests, which need root. Run it as root, or as a user with sudo: cargo then
# builds as that user and only the test binaries run through sudo (cargo's target runner).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/root.sh
. scripts/root.sh
scripts/host-deps.sh
if [ "$(id -u)" -ne 0 ]; then
  runner=$(root_runner) || exit 2
  host=$(rustc -vV | sed -n 's/^host: //p')
  var=CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUNNER
  export "$var=$runner"
  echo "scripts/test.sh: not root; the test binaries run through sudo ($var)" >&2
fi
# Lab tests build namespaces with fixed timing bounds; they serialise themselves.
cargo test --release --all-targets "$@"
