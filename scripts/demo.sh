#!/usr/bin/env bash
# The demonstration (README "Try it"): a 3-node Proxy HA lab in network namespaces, the
# status of each node, then a crash of the director and the takeover. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: the lab needs root (network namespaces); run: sudo $0" >&2
  exit 2
fi
scripts/host-deps.sh
cargo build --release --bin proxyha --example demo
exec target/release/examples/demo "$@"
