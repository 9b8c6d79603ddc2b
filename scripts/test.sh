#!/usr/bin/env bash
# Builds tapgate and its test guest, then runs every test file with Node's test runner.
# As root the privileged tests run in network namespaces they create; otherwise they skip.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  bash scripts/install-deps.sh
fi
[ -d node_modules/koffi ] || npm ci --no-audit --no-fund
# The tests check the native helper too, so a missing compiler fails here rather than skipping.
TAPGATE_REQUIRE_NATIVE=1 npm run build --silent
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/build-guest.sh
fi
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
exec node --test --test-concurrency=1 "${files[@]}"
