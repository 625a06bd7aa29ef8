#!/usr/bin/env bash
# Builds (if needed) and runs the whole test suite: unit, interop (against qemu-img), CLI,
# ABI/header, FFI and installed-library tests.
#   IMGUTIL_BUILD_DIR  build folder (default: build)
#   IMGUTIL_SANITIZE   e.g. address,undefined
#   IMGUTIL_WERROR=1   treat warnings as errors
set -euo pipefail
cd "$(dirname "$0")/.."
build=${IMGUTIL_BUILD_DIR:-build}
args=()
[ "${IMGUTIL_WERROR:-0}" = 1 ] && args+=(-Dwerror=true)
if [ -n "${IMGUTIL_SANITIZE:-}" ]; then
    args+=("-Db_sanitize=${IMGUTIL_SANITIZE}" -Db_lundef=false)
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
if [ -d "$build" ]; then
    meson setup --reconfigure "$build" "${args[@]}" >/dev/null
else
    meson setup "$build" "${args[@]}"
fi
ninja -C "$build"
meson test -C "$build" --print-errorlogs --num-processes 2
