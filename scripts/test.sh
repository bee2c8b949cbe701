#!/usr/bin/env bash
# Runs every test: unit, simulator, config and the end-to-end tests in
# network namespaces (which need root). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo test --release --all-targets
cargo test --release --doc
