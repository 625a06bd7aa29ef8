#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil create/convert -o help: lists the options each format takes, exactly the keys that
# img_create() accepts, and refuses a format it cannot create.

. "$(dirname "$0")/lib.sh"

# options_json FORMAT: img_format_options_json(FORMAT) through ctypes, parsed by python's json
# module and printed as "name<TAB>-o help type<TAB>help" lines, sorted by name.
options_json() {
    lib="${IMGUTIL_BUILD_ROOT:-$(dirname "$IMGUTIL")/..}/lib/libimgutil.so.1"
    # A sanitized library loads into python only after its runtime.
    asan=$(ldd "$lib" 2>/dev/null | awk '/libasan/ { print $3 }')
    LD_PRELOAD="${asan:-${LD_PRELOAD:-}}" ASAN_OPTIONS=detect_leaks=0 python3 - "$lib" "$1" <<'PY'
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
lib.img_format_options_json.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
lib.img_free.argtypes = [ctypes.c_void_p]
out = ctypes.c_void_p()
ret = lib.img_format_options_json(sys.argv[2].encode(), ctypes.byref(out))
if ret != 0:
    sys.exit("img_format_options_json failed: %d" % ret)
doc = json.loads(ctypes.string_at(out).decode())
lib.img_free(out)
assert doc["format"] == sys.argv[2], doc
names = {"bool": "bool (on/off)", "size": "size", "int": "num",
         "enum": "str", "string": "str", "path": "str"}
for o in sorted(doc["options"], key=lambda o: o["name"]):
    assert set(o) <= {"name", "type", "default", "values", "min", "max", "help"}, o
    if o["type"] == "enum":
        assert o["values"] and all(isinstance(v, str) for v in o["values"]), o
    print("%s\t%s\t%s" % (o["name"], names[o["type"]], o["help"]))
PY
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
RAW_KEYS="extent_size_hint nocow preallocation size"

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

# --- the list is the format's own table: img_format_options_json, read by python's json ---
for format in qcow2 raw; do
    command -v python3 >/dev/null 2>&1 || break
    options_json "$format" >"$WORK/table" || fail "no option table for $format"
    [ -s "$WORK/table" ] || fail "empty option table for $format"
    run create -f "$format" -o help
    sed -n 's/^  \([^= ]*\)=<\([^>]*\)>  *- \(.*\)$/\1\t\2\t\3/p' "$WORK/out" >"$WORK/listed"
    if ! cmp -s "$WORK/table" "$WORK/listed"; then
        fail "-o help for $format differs from its option table:"
        diff "$WORK/table" "$WORK/listed" >&2
    fi
done
# The JSON itself: qcow2's cluster_size, with its default.
command -v python3 >/dev/null 2>&1 && (
    lib="${IMGUTIL_BUILD_ROOT:-$(dirname "$IMGUTIL")/..}/lib/libimgutil.so.1"
    asan=$(ldd "$lib" 2>/dev/null | awk '/libasan/ { print $3 }')
    LD_PRELOAD="${asan:-${LD_PRELOAD:-}}" ASAN_OPTIONS=detect_leaks=0 python3 - "$lib" <<'PY'
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
lib.img_format_options_json.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
lib.img_format_name.restype = ctypes.c_char_p
out = ctypes.c_void_p()
assert lib.img_format_options_json(b"qcow2", ctypes.byref(out)) == 0
options = {o["name"]: o for o in json.loads(ctypes.string_at(out).decode())["options"]}
lib.img_free(out)
c = options["cluster_size"]
assert (c["type"], c["default"], c["min"], c["max"]) == ("size", "65536", 512, 2097152), c
assert options["preallocation"]["values"] == ["off", "metadata", "falloc", "full"]
assert options["refcount_bits"]["default"] == "16"
names = [lib.img_format_name(i).decode() for i in range(lib.img_format_count())]
assert "qcow2" in names and "raw" in names, names
PY
) || fail "img_format_options_json(qcow2) lacks cluster_size with default 65536"

# --- a bad option fails the same way for every format, with qemu-img's words ---
for format in raw qcow2; do
    for cmd in create convert; do
        rm -f "$WORK/bad.img"
        if [ $cmd = create ]; then
            set -- create -f "$format"
        else
            run create -f raw "$WORK/src.raw" 1M
            set -- convert -O "$format"
        fi
        if [ $cmd = create ]; then last="$WORK/bad.img 1M"; else last="$WORK/src.raw $WORK/bad.img"; fi
        # shellcheck disable=SC2086
        expect_status 1 "$@" -o bogus=1 $last && expect_err "Invalid parameter 'bogus'"
        # shellcheck disable=SC2086
        expect_status 1 "$@" -o preallocation=bogus $last &&
            expect_err "Parameter 'preallocation' does not accept value 'bogus'"
        # shellcheck disable=SC2086
        expect_status 1 "$@" -o nocow=maybe $last &&
            expect_err "Parameter 'nocow' expects 'on' or 'off'"
        [ -e "$WORK/bad.img" ] && fail "$cmd -O/-f $format with a bad option left $WORK/bad.img"
    done
done
expect_status 1 create -f raw -o bogus=1 "$WORK/bad.img" 1M &&
    expect_err "imgutil: $WORK/bad.img: Invalid parameter 'bogus'"
expect_status 1 create -f qcow2 -o cluster_size=lots "$WORK/bad.img" 1M &&
    expect_err "Parameter 'cluster_size' expects a non-negative number below 2^64"
expect_status 1 create -f qcow2 -o refcount_bits=many "$WORK/bad.img" 1M &&
    expect_err "Parameter 'refcount_bits' expects a number"
expect_status 1 create -f qcow2 -o compat=v9 "$WORK/bad.img" 1M &&
    expect_err "Parameter 'compat' does not accept value 'v9'"
# qemu-img says the same, where it is installed.
if command -v qemu-img >/dev/null 2>&1; then
    for args in "-f raw -o bogus=1" "-f qcow2 -o bogus=1" "-f qcow2 -o preallocation=bogus" \
        "-f qcow2 -o lazy_refcounts=maybe"; do
        # shellcheck disable=SC2086
        qemu-img create $args "$WORK/q.img" 1M >/dev/null 2>"$WORK/qemu_err"
        # shellcheck disable=SC2086
        run create $args "$WORK/q.img" 1M
        theirs=$(sed -n 's/^qemu-img: //p' "$WORK/qemu_err")
        ours=$(sed -n 's/^imgutil: //p' "$WORK/err")
        [ "$STATUS" -eq 1 ] && [ -n "$theirs" ] && [ "$ours" = "$theirs" ] ||
            fail "create $args: '$ours', qemu-img: '$theirs'"
    done
fi

# --- the option list itself: a trailing comma, and the size given twice, as qemu-img ---
expect_status 1 create -f qcow2 -o cluster_size=4k, "$WORK/bad.img" 1M &&
    expect_err "imgutil: Invalid option list: cluster_size=4k,"
expect_status 1 create -f raw -o ,size=1M "$WORK/bad.img" &&
    expect_err "imgutil: Invalid option list: ,size=1M"
expect_status 1 create -f qcow2 -o size=1M "$WORK/bad.img" 2M &&
    expect_err "imgutil: $WORK/bad.img: The image size must be specified only once"
[ -e "$WORK/bad.img" ] && fail "a refused option list created $WORK/bad.img"
expect_status 0 create -f qcow2 -o size=1M,size=2M "$WORK/twice.img" &&
    expect_out "size=2097152"
expect_status 0 create -f qcow2 -o size=1M -o size=2M "$WORK/twice.img" &&
    expect_out "size=2097152"

# --- raw preallocation: every block of the file allocated, as qemu-img does ---
if expect_status 0 create -f raw -o preallocation=full "$WORK/full.raw" 3M; then
    expect_out "Formatting '$WORK/full.raw', fmt=raw size=3145728 preallocation=full"
    [ "$(stat -c %s "$WORK/full.raw")" -eq 3145728 ] || fail "full.raw has the wrong size"
    [ "$(stat -c %b "$WORK/full.raw")" -ge 6144 ] ||
        fail "preallocation=full left holes: $(stat -c %b "$WORK/full.raw") blocks of 512"
fi
if expect_status 0 create -f raw "$WORK/sparse.raw" 3M; then
    [ "$(stat -c %b "$WORK/sparse.raw")" -lt 6144 ] || fail "preallocation=off allocated blocks"
fi

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
