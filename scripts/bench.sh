#!/usr/bin/env bash
# Builds tapgate, then runs every benchmark (bench/main.ts) as root. A full run writes
# bench/results/latest.json and docs/benchmarks.md; --quick runs tiny counts and writes
# bench/results/quick.json only. Other arguments go to bench/main.ts (see --help).
# The guests (scripts/build-guest.sh, scripts/build-bench-guest.sh) are built when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: must run as root: it creates network namespaces, test users and taps; run: sudo npm run bench" >&2
  exit 1
fi
npm run build --silent
exec node dist/bench/main.js "$@"
