#!/usr/bin/env bash
# Installs the Debian packages the lab, demo, bench and end-to-end tests
# need, and what the package test (tests/package.rs) needs: systemd for
# systemd-analyze, dpkg-dev and binutils (strip, readelf) for building and
# checking the .deb, adduser for its maintainer scripts, and cargo-deb;
# and what kith builds against: libssl-dev and pkg-config (the openssl
# crate links the system's OpenSSL, one of the AEAD backends).
# Idempotent: runs `apt-get update` (once) only if something is missing.
set -euo pipefail

packages=(iproute2 nftables iperf3 tcpdump iputils-ping procps miniupnpd-nftables coturn miniupnpc
    systemd dpkg-dev binutils adduser passwd libssl-dev pkg-config)
# Pinned like in scripts/package.sh: it builds with our Rust (1.95).
cargo_deb_version=3.8.0

if [[ $EUID -ne 0 ]]; then
    echo "setup.sh: run as root (installing packages; the lab needs root too)" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # iperf3 asks whether to start a daemon; answer no.
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    # miniupnpd and coturn: the lab runs them inside router/internet
    # namespaces only; never start a system-wide service.
    echo "miniupnpd miniupnpd/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    for svc in miniupnpd coturn; do
        if command -v systemctl >/dev/null && systemctl is-enabled --quiet "$svc" 2>/dev/null; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
    done
else
    echo "setup.sh: all packages present (${packages[*]})"
fi

if ! command -v cargo >/dev/null; then
    echo "setup.sh: cargo not found: install Rust 1.95+ (https://rustup.rs)" >&2
    exit 1
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "setup.sh: installing cargo-deb $cargo_deb_version (cargo install)"
    cargo install cargo-deb --locked --version "$cargo_deb_version"
fi
if [[ ! -c /dev/net/tun ]]; then
    echo "setup.sh: /dev/net/tun missing: the kernel needs TUN support (modprobe tun)" >&2
    exit 1
fi
