#!/usr/bin/env bash
# Builds kith in release mode and measures it against the raw veth link
# (iperf3 TCP and ping RTT, same namespaces, one run) and against peer
# VPNs on the same link: VpnCloud and boringtun, built here with
# `cargo install` into a cache directory outside the repo (only when not
# already there). Needs root.
#
# KITH_BENCH_CACHE: where the peers are installed (`<dir>/bin`), default
# /var/cache/kith-bench. A peer that does not build is reported and its
# row skipped; the bench still runs.
set -euo pipefail
cd "$(dirname "$0")/.."

export KITH_BENCH_CACHE="${KITH_BENCH_CACHE:-/var/cache/kith-bench}"
# Pinned, so runs compare the same peers; each list is tried in order
# (the newest that builds with our toolchain first).
vpncloud_versions=(2.3.0 2.2.0)
boringtun_versions=(0.7.1 0.6.0)

# install_peer CRATE BINARY VERSION…: the first VERSION that builds, unless
# one of them is installed already.
install_peer() {
    local crate=$1 bin=$2
    shift 2
    local installed
    installed=$(cargo install --list --root "$KITH_BENCH_CACHE" 2>/dev/null | sed -n "s/^$crate v\([^:]*\):$/\1/p")
    if [[ -n $installed && -x $KITH_BENCH_CACHE/bin/$bin ]] && printf '%s\n' "$@" | grep -qxF "$installed"; then
        echo "bench.sh: $crate $installed already in $KITH_BENCH_CACHE"
        return 0
    fi
    local version log
    for version in "$@"; do
        log="$KITH_BENCH_CACHE/$crate-$version.build.log"
        echo "bench.sh: building $crate $version into $KITH_BENCH_CACHE (log: $log) …"
        if nice -n 10 cargo install "$crate" --locked --version "$version" --root "$KITH_BENCH_CACHE" >"$log" 2>&1; then
            return 0
        fi
        echo "bench.sh: $crate $version did not build; the end of its log:" >&2
        tail -n 15 "$log" >&2
    done
    echo "bench.sh: no version of $crate built: its row will be skipped" >&2
}

scripts/setup.sh
mkdir -p "$KITH_BENCH_CACHE"
install_peer vpncloud vpncloud "${vpncloud_versions[@]}"
install_peer boringtun-cli boringtun-cli "${boringtun_versions[@]}"
cargo build --release --bins
exec target/release/kith-lab bench "$@"
