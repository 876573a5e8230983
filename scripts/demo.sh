#!/usr/bin/env bash
# The demonstration (README "The two commands"): a 3-node Proxy HA lab in network namespaces, the
# status of each node, then a crash of the director and the takeover. The lab needs root: run it as
# root, or as a user with sudo (cargo builds as that user, the demo runs through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/root.sh
. scripts/root.sh
scripts/host-deps.sh
cargo build --release --bin proxyha --example demo
if [ "$(id -u)" -eq 0 ]; then
  exec target/release/examples/demo "$@"
fi
as_root target/release/examples/demo "$@"
