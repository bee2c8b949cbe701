#!/usr/bin/env bash
# Source install: builds kith and installs it under /usr/local, the systemd
# units into /etc/systemd/system, and creates the system user kith and
# /etc/kith, /var/lib/kith. Enables and starts nothing: a node needs its key
# and config first (README, "Install"). scripts/uninstall.sh undoes it.
# For a Debian package instead: scripts/package.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: run as root (it writes /usr/local, /etc and creates the user kith)" >&2
    exit 1
fi
if dpkg-query -W -f='${Status}' kith 2>/dev/null | grep -q "install ok installed"; then
    echo "install.sh: the kith package is installed; remove it first (dpkg --purge kith) so two copies do not share one set of units" >&2
    exit 1
fi

prefix=/usr/local
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --bin kith
kith="$target_dir/release/kith"

install -D -m 0755 "$kith" "$prefix/bin/kith"

# The units name the package's /usr/bin/kith; point them at this copy.
for unit in kith.service kith@.service; do
    sed "s|/usr/bin/kith|$prefix/bin/kith|g" "systemd/$unit" >"/etc/systemd/system/$unit.tmp"
    if ! grep -q "ExecStart=$prefix/bin/kith " "/etc/systemd/system/$unit.tmp"; then
        rm -f "/etc/systemd/system/$unit.tmp"
        echo "install.sh: systemd/$unit has no ExecStart=/usr/bin/kith to rewrite" >&2
        exit 1
    fi
    chmod 0644 "/etc/systemd/system/$unit.tmp"
    mv "/etc/systemd/system/$unit.tmp" "/etc/systemd/system/$unit"
done

generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
"$kith" generate man "$generated/man"
"$kith" generate completions "$generated/completions"
install -d -m 0755 "$prefix/share/man/man1"
install -m 0644 "$generated"/man/*.1 "$prefix/share/man/man1/"
install -D -m 0644 "$generated/completions/kith" "$prefix/share/bash-completion/completions/kith"
install -D -m 0644 "$generated/completions/_kith" "$prefix/share/zsh/site-functions/_kith"
install -D -m 0644 "$generated/completions/kith.fish" "$prefix/share/fish/vendor_completions.d/kith.fish"

# The units run as this user; it owns the key file and the state.
if ! getent passwd kith >/dev/null; then
    if command -v adduser >/dev/null; then
        adduser --system --group --no-create-home --home /var/lib/kith --quiet kith
    else
        useradd --system --user-group --no-create-home --home-dir /var/lib/kith \
            --shell /usr/sbin/nologin kith
    fi
fi
install -d -m 0750 -o root -g kith /etc/kith
chown root:kith /etc/kith
chmod 0750 /etc/kith
install -d -m 0750 -o kith -g kith /var/lib/kith

if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
fi
cat <<MSG
kith installed to $prefix/bin/kith; units kith.service, kith@.service (not enabled).
Next: kith genkey > /etc/kith/private.key && chown kith: /etc/kith/private.key && chmod 600 /etc/kith/private.key
      write /etc/kith/kith.toml (example: configs/kith.toml), then systemctl enable --now kith
MSG
