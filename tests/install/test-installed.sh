#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs the build into a staging folder, builds consumer.c against the installed header and
# library using only what pkg-config reports, and runs it against the installed library.
#
# usage: test-installed.sh BUILD_DIR
# environment: CC (default cc), MESON (default meson)

set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
meson=${MESON:-meson}

if ! command -v pkg-config >/dev/null 2>&1; then
    echo "SKIP: pkg-config not found"
    exit 77
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/imgutil-install.XXXXXX")
trap 'rm -rf "$stage"' EXIT

$meson install -C "$build" --no-rebuild --destdir "$stage/root" --quiet >"$stage/install.log" 2>&1 || {
    cat "$stage/install.log" >&2
    echo "meson install failed" >&2
    exit 1
}

pc=$(find "$stage/root" -name imgutil.pc | head -n 1)
if [ -z "$pc" ]; then
    echo "imgutil.pc was not installed" >&2
    exit 1
fi
# The .pc file names the configured prefix; the sysroot maps it into the staging folder.
PKG_CONFIG_PATH=$(dirname "$pc")
PKG_CONFIG_SYSROOT_DIR="$stage/root"
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

cflags=$(pkg-config --cflags imgutil)
libs=$(pkg-config --libs imgutil)
libdir=$(pkg-config --variable=libdir imgutil)
case "$libdir" in
"$stage/root"/*) ;; # pkgconf applies the sysroot to variables too
*) libdir="$stage/root$libdir" ;;
esac
echo "pkg-config: $cflags $libs"

case "$cflags $libs" in
*"$stage/root"*) ;;
*)
    echo "pkg-config flags do not point into the installed tree" >&2
    exit 1
    ;;
esac
if [ ! -e "$libdir/libimgutil.so.1" ]; then
    echo "libimgutil.so.1 is not installed in $libdir" >&2
    exit 1
fi

# shellcheck disable=SC2086 # the flags are word lists
$cc -std=c11 -Wall -Wextra -Werror $cflags -o "$stage/consumer" "$here/consumer.c" $libs

# The consumer must resolve the installed copy, not the one in the build tree.
resolved=$(LD_LIBRARY_PATH="$libdir" ldd "$stage/consumer" | awk '/libimgutil/ { print $3 }')
if [ "$resolved" != "$libdir/libimgutil.so.1" ]; then
    echo "consumer resolves libimgutil to '$resolved', expected $libdir/libimgutil.so.1" >&2
    exit 1
fi

# A sanitized build of the library needs its runtime loaded first.
LD_PRELOAD="${IMGUTIL_ASAN_PRELOAD:-}" ASAN_OPTIONS=detect_leaks=0 LD_LIBRARY_PATH="$libdir" "$stage/consumer" "$stage/disk.raw"
