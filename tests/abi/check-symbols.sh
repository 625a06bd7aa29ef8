#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The exported ABI is exactly what the public header declares: every IMG_API function of
# imgutil.h is listed in the version script, and the built library exports those names, each
# at a version node of the script, and nothing else.
#
# usage: check-symbols.sh LIBRARY MAP_FILE HEADER

set -eu

if [ $# -ne 3 ]; then
    echo "usage: $0 LIBRARY MAP_FILE HEADER" >&2
    exit 2
fi
lib=$1
map=$2
header=$3

if ! command -v nm >/dev/null 2>&1; then
    echo "SKIP: nm not found"
    exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Declarations are "IMG_API <type> [*]name(" on the line that starts them.
sed -n 's/^IMG_API .*[ *]\([A-Za-z_][A-Za-z0-9_]*\)(.*/\1/p' "$header" | sort >"$tmp/header"

# Names between "global:" and "local:" in each node; comments dropped first.
sed -e 's:/\*.*\*/::' -e '/\/\*/,/\*\//d' "$map" |
    awk '/global:/ { g = 1; next } /local:/ || /^[[:space:]]*}/ { g = 0; next } g' |
    tr -d ' \t;' | grep -v '^$' | sort >"$tmp/map"

# Node names ("IMGUTIL_1.0") as the library must carry them.
sed -e 's:/\*.*\*/::' -e '/\/\*/,/\*\//d' "$map" |
    sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_.]*\)[[:space:]]*{.*/\1/p' >"$tmp/nodes"

# "name@@NODE" or "name@NODE" for every defined dynamic symbol except the node markers.
nm -D --defined-only --with-symbol-versions "$lib" | awk '$2 != "A" { print $3 }' |
    sort >"$tmp/exported-versioned"
sed 's/@.*//' "$tmp/exported-versioned" | sort >"$tmp/exported"

status=0
report() {
    # report TITLE FILE_A FILE_B: names in A that are missing from B
    missing=$(comm -23 "$2" "$3")
    if [ -n "$missing" ]; then
        echo "$1:"
        echo "$missing" | sed 's/^/    /'
        status=1
    fi
}

if [ ! -s "$tmp/header" ]; then
    echo "no IMG_API declarations found in $header"
    exit 1
fi
report "declared in $(basename "$header") but not listed in $(basename "$map")" \
    "$tmp/header" "$tmp/map"
report "listed in $(basename "$map") but not declared in $(basename "$header")" \
    "$tmp/map" "$tmp/header"
report "listed in $(basename "$map") but not exported by $(basename "$lib")" \
    "$tmp/map" "$tmp/exported"
report "exported by $(basename "$lib") but not listed in $(basename "$map")" \
    "$tmp/exported" "$tmp/map"

while IFS= read -r sym; do
    node=${sym#*@}
    node=${node#@}
    if [ "$node" = "$sym" ] || ! grep -qxF "$node" "$tmp/nodes"; then
        echo "exported without a version node of $(basename "$map"): $sym"
        status=1
    fi
done <"$tmp/exported-versioned"

# Every function added after 1.0 has its IMGUTIL_HAVE_<NAME> macro, so programs can test for it.
grep '@@*IMGUTIL_1\.0$' "$tmp/exported-versioned" | sed 's/@.*//' | sort >"$tmp/first"
comm -23 "$tmp/exported" "$tmp/first" | while IFS= read -r name; do
    macro="IMGUTIL_HAVE_$(echo "$name" | tr 'a-z' 'A-Z')"
    grep -q "^#define $macro 1\$" "$header" || echo "$name: no $macro in $(basename "$header")"
done >"$tmp/no-have"
if [ -s "$tmp/no-have" ]; then
    cat "$tmp/no-have"
    status=1
fi

if [ $status -eq 0 ]; then
    echo "ok: $(wc -l <"$tmp/exported") symbols, header, version script and library agree"
fi
exit $status
