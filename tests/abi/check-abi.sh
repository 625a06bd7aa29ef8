#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Compares the built libimgutil.so.1 with the released ABI recorded in libimgutil.abi.
# Additions pass; a removed symbol or a changed function or type fails.
#
# usage: check-abi.sh BUILD_DIR            check the build against the baseline
#        check-abi.sh --update BUILD_DIR   record the build as the new baseline (at a release)

set -eu

update=no
if [ "${1:-}" = "--update" ]; then
    update=yes
    shift
fi
if [ $# -ne 1 ]; then
    echo "usage: $0 [--update] BUILD_DIR" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
baseline="$here/libimgutil.abi"
headers="$src/include"
lib="$1/lib/libimgutil.so.1"

for tool in abidw abidiff readelf; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not found (install abigail-tools and binutils)"
        exit 77
    fi
done
if [ ! -e "$lib" ]; then
    echo "$lib does not exist: build first" >&2
    exit 1
fi
# Without DWARF only symbol names could be compared, which check-symbols.sh already does.
if ! readelf -S "$lib" | grep -q '\.debug_info'; then
    echo "SKIP: $lib has no debug info (build with -g, e.g. buildtype=debugoptimized)"
    exit 77
fi

if [ "$update" = yes ]; then
    # Only what the public header shows: internal structs stay opaque, undefined symbols out.
    abidw --no-corpus-path --headers-dir "$headers" --drop-private-types --drop-undefined-syms \
        "$lib" >"$baseline.tmp"
    mv "$baseline.tmp" "$baseline"
    echo "recorded $baseline"
    exit 0
fi

# abidiff's status is a bit set: 1 error, 2 usage error, 4 some ABI change, 8 an incompatible
# change (a symbol removed). With added symbols hidden, any remaining change is a failure.
set +e
abidiff --no-added-syms --drop-private-types --hd2 "$headers" "$baseline" "$lib"
status=$?
set -e
if [ $status -eq 0 ]; then
    abidiff --drop-private-types --hd2 "$headers" "$baseline" "$lib" >/dev/null &&
        added=no || added=yes
    if [ "$added" = yes ]; then
        echo "ok: only additions to the ABI of $baseline"
    else
        echo "ok: ABI identical to $baseline"
    fi
    exit 0
fi
if [ $((status & 3)) -ne 0 ]; then
    echo "abidiff could not compare (status $status)" >&2
    exit 1
fi
echo "ABI break against $baseline (abidiff status $status): a released symbol was removed or" \
    "changed; add a new symbol in a new version node instead" >&2
exit 1
