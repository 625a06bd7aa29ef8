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

# The man pages are installed where man finds them, one per public function (aliases
# included), and the CLI finds the installed library through its run path.
prefix=$(pkg-config --variable=prefix imgutil | sed "s:^$stage/root::")
mandir=$(find "$stage/root" -type d -name man3 -path '*/man/*' | head -n 1)
if [ -z "$mandir" ]; then
    echo "no man3 folder was installed" >&2
    exit 1
fi
for page in libimgutil.3 img_open.3 img_open_fd.3 img_snapshot_get.3; do
    if [ ! -f "$mandir/$page" ]; then
        echo "man page $page was not installed in $mandir" >&2
        exit 1
    fi
done
if [ ! -f "$(dirname "$mandir")/man1/imgutil.1" ]; then
    echo "imgutil.1 was not installed" >&2
    exit 1
fi
if command -v man >/dev/null 2>&1; then
    for name in img_open_fd img_get_flags libimgutil; do
        if ! MANWIDTH=80 man -M "$(dirname "$mandir")" 3 "$name" 2>/dev/null | grep -q "$name"; then
            echo "man -M ... 3 $name does not show its page" >&2
            exit 1
        fi
    done
fi
cli=$(find "$stage/root" -type f -name imgutil -perm -u+x | head -n 1)
runpath=$(readelf -d "$cli" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
want=$(pkg-config --variable=libdir imgutil | sed "s:^$stage/root::")
if [ "$runpath" != "$want" ]; then
    echo "installed imgutil has run path '$runpath', expected $want (prefix $prefix)" >&2
    exit 1
fi
echo "ok: man pages installed, imgutil runs from $want without LD_LIBRARY_PATH"
