#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a while.
#   run-fuzzers.sh [SECONDS_PER_TARGET] [TARGET...]   (default 600 s, every target)
#   run-fuzzers.sh --replay-and-brief                  (CI: corpus replay plus 10 s each)
# New inputs are kept in build-fuzz/corpus-<target>; crashes in build-fuzz/crashes-<target>.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build-fuzz"
seconds=600
if [ "${1:-}" = "--replay-and-brief" ]; then
    seconds=10
    shift
elif [ -n "${1:-}" ]; then
    seconds=$1
    shift
fi
targets=("$@")
# Every target tests/fuzz/meson.build declares (one per format, and the writers').
[ ${#targets[@]} -gt 0 ] ||
    mapfile -t targets < <(sed -n "s/^  '\(fuzz_[a-z0-9_]*\)' : .*/\1/p" "$root/tests/fuzz/meson.build")

if ! command -v clang >/dev/null; then
    echo "clang not found: cannot build the fuzzers" >&2
    exit 77
fi
if [ ! -d "$build" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzzing=true -Dtests=true -Db_lundef=false >/dev/null
fi
ninja -C "$build" "${targets[@]/#/tests/fuzz/}" >/dev/null

status=0
for t in "${targets[@]}"; do
    corpus="$build/corpus-$t"
    crashes="$build/crashes-$t"
    mkdir -p "$corpus" "$crashes"
    echo "== $t: ${seconds}s"
    if ! "$build/tests/fuzz/$t" "$corpus" "$root/tests/fuzz/corpus" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=1048576 \
        -artifact_prefix="$crashes/" -print_final_stats=1 2>"$build/$t.log"; then
        status=1
        echo "$t: FAILED (see $build/$t.log and $crashes)"
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)|cov: " "$build/$t.log" | tail -3
done
exit $status
