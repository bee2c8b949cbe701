#!/usr/bin/env bash
# Builds kith and runs the narrated lab demo (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --bins
exec target/release/kith-lab demo "$@"
