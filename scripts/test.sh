#!/usr/bin/env bash
# Runs every test: unit, simulator, config, the end-to-end tests in
# network namespaces (which need root), and every fuzz target for 10 s
# (KITH_FUZZ_SECONDS to change it). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The release optimisation without LTO (Cargo.toml's test-release profile):
# the same code, a much shorter build.
cargo test --profile test-release --all-targets
cargo test --profile test-release --doc
# Every parser's fuzz target, for a bounded time (longer runs: scripts/fuzz.sh 300).
scripts/fuzz.sh "${KITH_FUZZ_SECONDS:-10}"
