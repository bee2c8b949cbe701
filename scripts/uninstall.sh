#!/usr/bin/env bash
# Undoes scripts/install.sh: stops and disables the units, removes the
# binary, units, man pages, completions and /var/lib/kith (the peer cache).
# Keeps /etc/kith (keys, configs) and the user kith that owns them, so a
# reinstall finds them readable; --purge removes both as well.
set -euo pipefail

purge=no
case "${1:-}" in
    "") ;;
    --purge) purge=yes ;;
    *)
        echo "usage: uninstall.sh [--purge]  (--purge also removes /etc/kith and the user kith)" >&2
        exit 2
        ;;
esac
if [[ $EUID -ne 0 ]]; then
    echo "uninstall.sh: run as root" >&2
    exit 1
fi

prefix=/usr/local
if [[ -d /run/systemd/system ]]; then
    systemctl stop kith.service 'kith@*.service' || true
fi
# `systemctl enable` links, removed directly: works with or without a
# running systemd, and for every kith@NAME instance.
find /etc/systemd/system -path '*.wants/kith.service' -o -path '*.wants/kith@*.service' \
    2>/dev/null | while read -r link; do rm -f "$link"; done

rm -f "$prefix/bin/kith" /etc/systemd/system/kith.service /etc/systemd/system/kith@.service
rm -f "$prefix"/share/man/man1/kith.1 "$prefix"/share/man/man1/kith-*.1
rm -f "$prefix/share/bash-completion/completions/kith" \
    "$prefix/share/zsh/site-functions/_kith" \
    "$prefix/share/fish/vendor_completions.d/kith.fish"
rm -rf /var/lib/kith /run/kith

if [[ $purge == yes ]]; then
    rm -rf /etc/kith
    if getent passwd kith >/dev/null; then
        userdel kith
    fi
    if getent group kith >/dev/null; then
        groupdel kith
    fi
fi
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
fi
if [[ $purge == yes ]]; then
    echo "kith uninstalled, with /etc/kith and the user kith"
else
    echo "kith uninstalled; kept /etc/kith and the user kith (uninstall.sh --purge removes them)"
fi
