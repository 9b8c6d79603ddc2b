#!/bin/sh
# Compiles the native tapgate-helper (native/*.c) into dist/native/. bin/tapgate-helper
# and scripts/install.sh use it when it exists and fall back to the Node build otherwise.
# Set TAPGATE_REQUIRE_NATIVE=1 to fail instead of falling back when no C compiler is found.
set -eu
cd "$(dirname "$0")/.."

compiler=${CC:-cc}
if ! command -v "$compiler" >/dev/null 2>&1; then
  if [ "${TAPGATE_REQUIRE_NATIVE:-0}" = 1 ]; then
    echo "build-native: no C compiler ($compiler) found; install gcc and libc6-dev (apt-get install gcc libc6-dev)" >&2
    exit 1
  fi
  echo "build-native: no C compiler ($compiler) found; tapgate-helper will run on Node (slower start-up)" >&2
  exit 0
fi
mkdir -p dist/native
# Hardened like a distribution package: fortified libc calls, stack protector, PIE, full RELRO.
"$compiler" -std=c11 -O2 -Wall -Wextra -Wshadow -Wformat=2 -Wconversion -Wno-sign-conversion \
  -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE -pie -Wl,-z,relro,-z,now \
  -o dist/native/tapgate-helper.tmp native/tapgate-helper.c native/json.c native/text.c
mv dist/native/tapgate-helper.tmp dist/native/tapgate-helper
