#!/bin/sh
# Installs what junction needs, builds it with warnings as errors, and runs every test (ctest).
# The README's second quick-start command and .ci/run both run exactly this.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
cmake -S . -B build -DJN_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure -j2 --timeout 300
