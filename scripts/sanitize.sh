#!/bin/sh
# The whole test suite again on a clang build with AddressSanitizer (leak checking on) and
# UndefinedBehaviorSanitizer; any report fails the run. Integration tests run the sanitized
# junction binary, so a leak or a UB report at exit turns its exit code non-zero.
set -eu
cd "$(dirname "$0")/.."
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cmake -S . -B build-asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DJN_WERROR=ON \
    -DJN_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)"
cd build-asan
ctest --output-on-failure -j2 --timeout 600
