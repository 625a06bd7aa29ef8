#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil create/convert -o help: lists the options each format takes, exactly the keys that
# img_create() accepts, and refuses a format it cannot create.

. "$(dirname "$0")/lib.sh"

# library_options FORMAT: the keys img_create() accepts, read from its "unknown option" message.
# The encryption keys are accepted only to be refused, so -o help leaves them out.
library_options() {
    run create -f "$1" -o imgutil_no_such_option=1 "$WORK/unknown.img" 1M
    sed -n 's/.*(known options: \(.*\))$/\1/p' "$WORK/err" | tr -d ' ' | tr ',' '\n' |
        grep -v '^encrypt' | sort
}

# listed_options: the keys the last run's -o help printed, one per line, sorted.
listed_options() {
    sed -n 's/^  \([^= ]*\)=<[^>]*>  *- ..*$/\1/p' "$WORK/out" | sort
}

# expect_lists FORMAT KEY...: the last run printed the option list of FORMAT with each KEY.
expect_lists() {
    format=$1
    shift
    [ "$(head -n 1 "$WORK/out")" = "Supported $format options:" ] ||
        fail "-o help for $format starts with '$(head -n 1 "$WORK/out")'"
    for key in "$@"; do
        grep -q "^  $key=<[^>]*>  *- ." "$WORK/out" || fail "-o help for $format lacks '$key'"
    done
    [ "$(listed_options | wc -l)" -eq "$#" ] ||
        fail "-o help for $format lists $(listed_options | tr '\n' ' ')instead of $*"
}

QCOW2_KEYS="backing_file backing_fmt cluster_size compat compression_type data_file
data_file_raw extended_l2 extent_size_hint lazy_refcounts nocow preallocation refcount_bits size"
RAW_KEYS="preallocation size"

# --- create: the list, for every way of asking, and nothing created ---
# shellcheck disable=SC2086
expect_status 0 create -f qcow2 -o help && expect_lists qcow2 $QCOW2_KEYS
# shellcheck disable=SC2086
expect_status 0 create -f raw -o help && expect_lists raw $RAW_KEYS
# shellcheck disable=SC2086
expect_status 0 create -o help && expect_lists raw $RAW_KEYS
# shellcheck disable=SC2086
expect_status 0 create -f qcow2 -o '?' && expect_lists qcow2 $QCOW2_KEYS
# shellcheck disable=SC2086
expect_status 0 create -f qcow2 -o cluster_size=4k,help "$WORK/never.img" 1M &&
    expect_lists qcow2 $QCOW2_KEYS
[ -e "$WORK/never.img" ] && fail "create -o help created the image"
# The format may follow -o.
# shellcheck disable=SC2086
expect_status 0 create -o help -f qcow2 && expect_lists qcow2 $QCOW2_KEYS
# The allowed values are named where the library restricts them.
expect_status 0 create -f qcow2 -o help &&
    expect_out "preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)"
expect_status 0 create -f raw -o help &&
    expect_out "preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)"

# --- convert: the target format's list (raw by default), no source needed ---
# shellcheck disable=SC2086
expect_status 0 convert -O qcow2 -o help && expect_lists qcow2 $QCOW2_KEYS
# shellcheck disable=SC2086
expect_status 0 convert -O qcow2 -o '?' && expect_lists qcow2 $QCOW2_KEYS
# shellcheck disable=SC2086
expect_status 0 convert -o help "$WORK/nosource" "$WORK/never.img" && expect_lists raw $RAW_KEYS
[ -e "$WORK/never.img" ] && fail "convert -o help created the target"

# --- a format that cannot be created ---
for cmd in "create -f" "convert -O"; do
    # shellcheck disable=SC2086
    if expect_status 1 $cmd bogus -o help; then
        expect_err "imgutil: Unknown file format 'bogus'"
        [ -s "$WORK/out" ] && fail "$cmd bogus -o help printed '$(cat "$WORK/out")'"
    fi
done

# --- the list is exactly what the library accepts ---
for format in qcow2 raw; do
    library_options "$format" >"$WORK/library"
    [ -s "$WORK/library" ] || fail "no list of known $format options in: $(cat "$WORK/err")"
    run create -f "$format" -o help
    listed_options >"$WORK/listed"
    if ! cmp -s "$WORK/library" "$WORK/listed"; then
        fail "-o help for $format differs from the options img_create() accepts:"
        diff "$WORK/library" "$WORK/listed" >&2
    fi
done

# --- the types are named as qemu-img names them, for the options both take ---
if command -v qemu-img >/dev/null 2>&1; then
    for format in qcow2 raw; do
        qemu-img create -f "$format" -o help >"$WORK/qemu" 2>&1
        run create -f "$format" -o help
        sed -n 's/^  \([^ ]*=<[^>]*>\) .*/\1/p' "$WORK/out" | while read -r key; do
            name=${key%%=*}
            theirs=$(sed -n "s/^  \\($name=<[^>]*>\\) .*/\\1/p" "$WORK/qemu")
            if [ -n "$theirs" ] && [ "$theirs" != "$key" ]; then
                echo "FAIL: $format option $key is $theirs in qemu-img" >&2
                echo x >>"$WORK/type_failures"
            fi
        done
    done
    [ -e "$WORK/type_failures" ] && fail "option types differ from qemu-img's"
fi

finish
