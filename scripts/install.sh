#!/usr/bin/env bash
# Installs a built tapgate checkout: files under PREFIX (default /usr), the systemd unit and,
# when absent, an example policy. Wrappers name absolute paths, so the helper keeps working
# when copied or symlinked anywhere (QEMU's helper= option, libvirt's bridge_helper).
#
# Usage: scripts/install.sh [--prefix DIR] [--sysconfdir DIR] [--no-systemd]
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr
etc=/etc
systemd=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --sysconfdir) etc=$2; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    *) echo "install: unknown option $1; usage: scripts/install.sh [--prefix DIR] [--sysconfdir DIR] [--no-systemd]" >&2; exit 1 ;;
  esac
done

[ -f dist/src/cli/main-tapgate.js ] || { echo "install: dist/ is missing; run npm ci && npm run build first" >&2; exit 1; }
node=$(command -v node) || { echo "install: node not found on PATH" >&2; exit 1; }
lib="$prefix/lib/tapgate"

rm -rf "$lib"
install -d -m 0755 "$lib" "$prefix/bin" "$prefix/libexec"
cp -r dist package.json README.md "$lib/"
[ -d docs ] && cp -r docs "$lib/"
mkdir -p "$lib/node_modules"
for module in koffi @koromix smol-toml; do
  cp -r "node_modules/$module" "$lib/node_modules/"
done
chmod -R u=rwX,go=rX "$lib"

write_wrapper() { # path, entry point
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$node" "$lib/dist/src/cli/$2" > "$1"
  chmod 0755 "$1"
}
write_wrapper "$prefix/bin/tapgate" main-tapgate.js
# QEMU waits for the helper on every NIC, so the native build, which starts in about a
# millisecond instead of Node's tens, is installed when scripts/build-native.sh made it.
if [ -x dist/native/tapgate-helper ]; then
  install -m 0755 dist/native/tapgate-helper "$prefix/libexec/tapgate-helper"
  helper_kind=native
else
  write_wrapper "$prefix/libexec/tapgate-helper" main-helper.js
  helper_kind="Node (no C compiler was found at build time)"
fi

if [ ! -e "$etc/tapgate/tapgate.toml" ]; then
  install -d -m 0755 "$etc/tapgate"
  install -m 0644 packaging/tapgate.toml "$etc/tapgate/tapgate.toml"
fi
if [ "$systemd" = 1 ] && [ -d /etc/systemd/system ]; then
  sed "s#/usr/bin/tapgate#$prefix/bin/tapgate#" packaging/tapgate.service > /etc/systemd/system/tapgate.service
  echo "install: enable the daemon with: systemctl daemon-reload && systemctl enable --now tapgate"
fi
echo "install: tapgate in $prefix/bin, helper at $prefix/libexec/tapgate-helper ($helper_kind build)"
