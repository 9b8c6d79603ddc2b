#!/usr/bin/env bash
# Runs the tapgate demo from a fresh checkout on Debian or Ubuntu, as root: installs what is
# missing, builds tapgate and the test guest, then boots the guest twice as an unprivileged user.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root; it creates a network namespace, a bridge and a demo user, and removes them afterwards" >&2
  exit 1
fi
bash scripts/install-deps.sh
[ -d node_modules/koffi ] || npm ci --no-audit --no-fund
npm run build --silent
bash scripts/build-guest.sh
exec node dist/scripts/demo.js
