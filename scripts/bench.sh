#!/usr/bin/env bash
# Builds kith in release mode and measures it against the raw veth link
# (iperf3 TCP and ping RTT, same namespaces, one run). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --bins
exec target/release/kith-lab bench "$@"
