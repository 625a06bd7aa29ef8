#!/usr/bin/env bash
# Side-by-side benchmark of imgutil and qemu-img on the same images in the same run.
# Prints, per case, the median wall time of each over N runs and the ratio qemu-img/imgutil
# (above 1 means imgutil is faster).
#   bench/bench.sh [BUILD_DIR] [RUNS]     (default: build, 7 runs)
# imgutil's I/O engine is taken from the environment: IMGUTIL_IO=uring|threads (default: uring
# where the kernel allows it). BENCH_FORMATS lists the other formats to time, each converted
# from raw and (made by qemu-img) to raw; default: every format both tools can create, or
# BENCH_FORMATS=none to skip them. BENCH_ONLY=formats times the format cases alone.
# BENCH_BEFORE=OTHER_BUILD_DIR also times another build's imgutil (an earlier commit, say) in
# the same runs, interleaved, and prints its median and ratio beside this build's, so that a
# change is judged against qemu-img and against what came before under the same load.
set -euo pipefail
export LC_ALL=C # a decimal point in $EPOCHREALTIME
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
runs=${2:-7}
imgutil="$build/tools/imgutil"
before=""
if [ -n "${BENCH_BEFORE:-}" ]; then
    before="$(cd "$BENCH_BEFORE" && pwd)/tools/imgutil"
    [ -x "$before" ] || { echo "BENCH_BEFORE: no $before"; exit 1; }
fi
command -v qemu-img >/dev/null || { echo "qemu-img is needed for the comparison"; exit 1; }
work=$(mktemp -d /tmp/imgutil-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "preparing images in $work (imgutil I/O engine: ${IMGUTIL_IO:-default})"
python3 - <<'PY'
import os, random
random.seed(1)
with open("mixed.raw", "wb") as f:
    f.truncate(1 << 30)
    for i in range(0, 1 << 30, 4 << 20):
        if random.random() < 0.5:
            f.seek(i)
            f.write(os.urandom(1 << 20) + bytes(64 << 10) + b"imgutil" * 40000)
PY
qemu-img convert -O qcow2 mixed.raw mixed.qcow2
qemu-img convert -c -O qcow2 mixed.raw mixed-zlib.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd mixed.raw mixed-zstd.qcow2
qemu-img create -q -f qcow2 sparse-1T.qcow2 1T
qemu-io -f qcow2 -c 'write -P 7 0 1M' -c 'write -P 8 512G 1M' -c 'write -P 9 1023G 1M' \
    sparse-1T.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mixed.qcow2 -F qcow2 overlay.qcow2
qemu-io -f qcow2 -c 'write -P 3 100M 50M' overlay.qcow2 >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The shell's own clock: reading it with date(1) would count that program's start in the time.
time_cmd() {
    local t0 t1
    t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1
    t1=$EPOCHREALTIME
    python3 -c "print($t1 - $t0)"
}

if [ -n "$before" ]; then
    printf '%-34s %12s %12s %12s %8s %8s\n' "case" "imgutil s" "before s" "qemu-img s" "ratio" \
        "before"
else
    printf '%-34s %12s %12s %8s\n' "case" "imgutil s" "qemu-img s" "ratio"
fi
bench_case() {
    local name=$1; shift
    local ours=() theirs=() earlier=()
    local a b c
    for ((i = 0; i < runs; i++)); do
        # The two builds take turns at going first.
        if [ -n "$before" ] && ((i % 2)); then
            rm -f out.*
            c=$(time_cmd "$before" "$@")
        fi
        rm -f out.*
        a=$(time_cmd "$imgutil" "$@")
        if [ -n "$before" ] && ! ((i % 2)); then
            rm -f out.*
            c=$(time_cmd "$before" "$@")
        fi
        [ -z "$before" ] || earlier+=("$c")
        rm -f out.*
        b=$(time_cmd qemu-img "$@")
        ours+=("$a"); theirs+=("$b")
    done
    a=$(printf '%s\n' "${ours[@]}" | median)
    b=$(printf '%s\n' "${theirs[@]}" | median)
    if [ -n "$before" ]; then
        c=$(printf '%s\n' "${earlier[@]}" | median)
        printf '%-34s %12.4f %12.4f %12.4f %8.2f %8.2f\n' "$name" "$a" "$c" "$b" \
            "$(python3 -c "print($b / $a)")" "$(python3 -c "print($b / $c)")"
    else
        printf '%-34s %12.4f %12.4f %8.2f\n' "$name" "$a" "$b" "$(python3 -c "print($b / $a)")"
    fi
}
# The formats besides raw and qcow2 that imgutil and qemu-img both create.
bench_formats() {
    local f
    if [ -n "${BENCH_FORMATS:-}" ]; then
        [ "$BENCH_FORMATS" = none ] || printf '%s\n' $BENCH_FORMATS
        return
    fi
    for f in vmdk vpc vhdx vdi qed parallels; do
        "$imgutil" create -f "$f" -o help >/dev/null 2>&1 && qemu-img create -f "$f" -o help \
            >/dev/null 2>&1 && echo "$f"
    done
}
format_cases() {
    local f
    for f in $(bench_formats); do
        qemu-img convert -O "$f" mixed.raw "mixed.$f"
        bench_case "convert raw -> $f" convert -O "$f" mixed.raw "out.$f"
        bench_case "convert $f -> raw" convert -f "$f" -O raw "mixed.$f" out.raw
    done
}
if [ "${BENCH_ONLY:-}" = formats ]; then
    format_cases
    exit 0
fi

bench_case "convert qcow2 -> raw (1G, 50%)" convert -O raw mixed.qcow2 out.raw
bench_case "convert zlib qcow2 -> raw" convert -O raw mixed-zlib.qcow2 out.raw
bench_case "convert zstd qcow2 -> raw" convert -O raw mixed-zstd.qcow2 out.raw
bench_case "convert overlay chain -> raw" convert -O raw overlay.qcow2 out.raw
bench_case "convert 1T sparse -> raw" convert -O raw sparse-1T.qcow2 out.raw
bench_case "convert qcow2 -> raw prealloc=falloc" convert -O raw -o preallocation=falloc mixed.qcow2 out.raw
bench_case "convert qcow2 -> raw prealloc=full" convert -O raw -o preallocation=full mixed.qcow2 out.raw
bench_case "convert raw -> qcow2" convert -O qcow2 mixed.raw out.qcow2
bench_case "convert raw -> compressed qcow2" convert -c -O qcow2 mixed.raw out.qcow2
bench_case "info --output=json" info --output=json mixed.qcow2
bench_case "map --output=json (1T)" map --output=json sparse-1T.qcow2
bench_case "check" check mixed.qcow2
format_cases
