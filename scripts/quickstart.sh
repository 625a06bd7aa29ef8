#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install the packages, build, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build=${IMGUTIL_BUILD_DIR:-build}
[ -d "$build" ] || meson setup "$build"
ninja -C "$build"
scripts/demo.sh "$build"
