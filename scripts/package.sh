#!/usr/bin/env bash
# Builds the Debian package target/debian/kith_<version>-1_<arch>.deb and
# prints its path (the last line of output): the release binary, stripped;
# both systemd units; the man pages and bash/zsh/fish completions, written by
# `kith generate` from the CLI itself so they cannot drift from it; the
# example config. Installs cargo-deb first if it is missing.
#
# KITH_PROFILE: the Cargo profile to build and package (default release;
# the package test passes the test suite's own, so CI builds kith once).
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-deb 3.8.0 builds with Rust 1.85+; pinned so a newer release that
# needs a newer rustc than ours (1.95) cannot break the build.
cargo_deb_version=3.8.0

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package.sh: installing cargo-deb $cargo_deb_version (cargo install)" >&2
    cargo install cargo-deb --locked --version "$cargo_deb_version"
fi
for tool in dpkg-deb strip; do
    if ! command -v "$tool" >/dev/null; then
        echo "package.sh: $tool missing: run scripts/setup.sh (it installs dpkg-dev and binutils)" >&2
        exit 1
    fi
done

target_dir=${CARGO_TARGET_DIR:-target}
profile=${KITH_PROFILE:-release}
cargo build --profile "$profile" --bin kith

# The paths Cargo.toml's [package.metadata.deb] assets name, relative to
# the checkout whatever CARGO_TARGET_DIR says.
assets=target/deb-assets
rm -rf "$assets"
"$target_dir/$profile/kith" generate man "$assets/man"
"$target_dir/$profile/kith" generate completions "$assets/completions"

# --strip: the release profile keeps line tables (debug = 1) for
# backtraces; the installed binary carries none.
deb=$(cargo deb --no-build --profile "$profile" --strip --no-separate-debug-symbols --output target/debian | tail -n 1)
if [[ ! -f $deb ]]; then
    echo "package.sh: cargo deb did not print a .deb path (got \"$deb\")" >&2
    exit 1
fi
echo "$deb"
