#!/bin/sh
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for a bounded time
# (FUZZ_SECONDS, default 60) on its seed corpus. A crash, leak or timeout fails the run; the
# input is left in build-fuzz/crashes/ to become a regression test.
set -eu
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-60}"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DJN_WERROR=ON \
    -DJN_SANITIZE=ON -DJN_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)"
mkdir -p build-fuzz/crashes
status=0
for f in build-fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f" | sed 's/^fuzz_//')
    corpus="tests/fuzz/corpus/$name"
    work="build-fuzz/corpus-$name"
    mkdir -p "$work"
    dict=""
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    echo "== fuzz $name for ${secs}s"
    if ! "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="build-fuzz/crashes/$name-" $dict "$work" "$corpus" \
        >"build-fuzz/$name.log" 2>&1; then
        echo "FAIL: fuzz_$name found a problem:"
        tail -n 60 "build-fuzz/$name.log"
        status=1
    else
        grep -E "^stat::number_of_executed_units|^stat::new_units_added" "build-fuzz/$name.log" \
            | sed "s/^/  $name /"
    fi
done
exit $status
