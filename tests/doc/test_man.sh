#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The man pages document exactly the exported functions: one page (or alias page) per symbol
# of the version script and nothing else; every page renders without a groff warning; a page
# made for a family names every function of it; imgutil.1 lists every command of `imgutil
# --help`.
#
# usage: test_man.sh DOC_BUILD_DIR MAP_FILE IMGUTIL

set -eu
doc=$1
map=$2
cli=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

sed -e 's:/\*.*\*/::' -e '/\/\*/,/\*\//d' "$map" |
    awk '/global:/ { g = 1; next } /local:/ || /^[[:space:]]*}/ { g = 0; next } g' |
    tr -d ' \t;' | grep -v '^$' | sort >"$tmp/exported"
(cd "$doc" && ls -- *.3) | sed 's/\.3$//' | grep -vx libimgutil | sort >"$tmp/pages"
if ! cmp -s "$tmp/exported" "$tmp/pages"; then
    echo "exported functions without a man page:"
    comm -23 "$tmp/exported" "$tmp/pages" | sed 's/^/    /'
    echo "man pages of no exported function:"
    comm -13 "$tmp/exported" "$tmp/pages" | sed 's/^/    /'
    status=1
fi

for page in "$doc"/*.3 "$doc"/imgutil.1; do
    name=$(basename "$page" | sed 's/\.[0-9]$//')
    if head -n 1 "$page" | grep -q '^\.so man3/'; then
        target=$(sed 's:^\.so man3/::' "$page")
        if [ ! -f "$doc/$target" ]; then
            echo "$name: alias of a missing page $target"
            status=1
        elif ! grep -q "^[a-z_, ]*\b$name\b.* \\\\- " "$doc/$target"; then
            echo "$name: its family page $target does not name it"
            status=1
        fi
        continue
    fi
    for section in NAME SYNOPSIS DESCRIPTION; do
        grep -q "^\.SH $section" "$page" || { echo "$name: no $section section"; status=1; }
    done
    if command -v groff >/dev/null 2>&1; then
        warnings=$(groff -man -ww -z "$page" 2>&1 || true)
        if [ -n "$warnings" ]; then
            echo "$name: groff warns: $warnings"
            status=1
        fi
    fi
done

# Every command of the CLI has its entry in imgutil.1.
"$cli" --help | sed -n '/^Command syntax:/,/^Command parameters:/p' | awk '/^  [a-z]/ { print $1 }' |
    while IFS= read -r command; do
        grep -q "^\.B $command\$" "$doc/imgutil.1" || echo "imgutil.1 does not describe '$command'"
    done >"$tmp/commands"
if [ -s "$tmp/commands" ]; then
    cat "$tmp/commands"
    status=1
fi

[ $status -eq 0 ] && echo "ok: $(wc -l <"$tmp/pages") function pages, libimgutil.3 and imgutil.1"
exit $status
