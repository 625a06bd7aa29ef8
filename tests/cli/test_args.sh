#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil's command line: help, version, and refusal of bad arguments with exit status 1.
# Nothing here needs an image to be opened.

. "$(dirname "$0")/lib.sh"

# --- help and version ---
for flag in --help -h; do
    expect_status 0 "$flag" && expect_out "usage: imgutil [standard options] command"
done
for cmd in check compare convert create info map resize snapshot; do
    grep -q "^  $cmd " "$WORK/out" || fail "--help does not describe '$cmd'"
done
expect_status 0 info -h && expect_out "usage: imgutil"

for flag in --version -V; do
    expect_status 0 "$flag"
    grep -Eq '^imgutil version [0-9]+\.[0-9]+\.[0-9]+ \(libimgutil [0-9]+\.[0-9]+\.[0-9]+\)$' \
        "$WORK/out" || fail "$flag printed '$(cat "$WORK/out")'"
done

# --- dispatch ---
expect_status 1 && expect_err "imgutil: Not enough arguments"
expect_err "Try 'imgutil --help' for more information"
expect_status 1 frobnicate && expect_err "imgutil: Command not found: frobnicate"
expect_status 1 --bogus && expect_err "unrecognized option '--bogus'"

# --- option errors, worded as qemu-img words them ---
expect_status 1 info && expect_err "Expecting one image file name"
expect_status 1 info a b && expect_err "Expecting one image file name"
expect_status 1 info -z x && expect_err "unrecognized option '-z'"
expect_status 1 info -Uz x && expect_err "unrecognized option '-z'"
expect_status 1 info --bogus x && expect_err "unrecognized option '--bogus'"
expect_status 1 info x -f && expect_err "missing argument for option '-f'"
expect_status 1 info x --output && expect_err "missing argument for option '--output'"
expect_status 1 info --output=xml x &&
    expect_err "--output must be used with human or json as argument."
expect_status 1 map --output=yaml x
expect_status 1 map --start-offset=-1 x && expect_err "Invalid start offset specified."
expect_status 1 map --max-length=1Q x && expect_err "Invalid max length specified."
expect_status 1 check -r sometimes x &&
    expect_err "Unknown option value for -r (expecting 'leaks' or 'all'): sometimes"
expect_status 1 check --output=xml x
expect_status 1 snapshot -l -c tag x && expect_err "Cannot mix '-l', '-a', '-c', '-d'"
expect_status 1 snapshot -a one -d two x && expect_err "Cannot mix"
expect_status 1 snapshot -c && expect_err "missing argument for option '-c'"
expect_status 1 compare onlyone && expect_err "Expecting two image file names"
expect_status 1 convert onlyone && expect_err "Must specify image file name"
expect_status 1 convert a b c && expect_err "Could not open 'a'"
expect_status 1 convert -S 1000 a b && expect_err "Invalid buffer size for sparse output"
expect_status 1 convert -S 32M a b && expect_err "Invalid buffer size for sparse output"
expect_status 1 convert -S nonsense a b && expect_err "Invalid buffer size for sparse output"
expect_status 1 convert -m 17 a b && expect_err "Invalid number of coroutines"
expect_status 1 convert -t sometimes a b && expect_err "Invalid cache option: sometimes"
expect_status 1 resize && expect_err "Not enough arguments"
expect_status 1 resize x && expect_err "Not enough arguments"
expect_status 1 resize --preallocation=lots x 1G &&
    expect_err "Invalid preallocation mode 'lots'"

# --- sizes: qemu-img's suffixes and limits, refused before any file is touched ---
img="$WORK/never.img"
for size in 1Q 1kB 1KiB 1.5 1.5b 0x10.5k .5k "5 " "" 1e3; do
    expect_status 1 create -f raw "$img" "$size" &&
        expect_err "Invalid image size specified. You may use k, M, G, T, P or E suffixes for"
done
for size in 8E 16E 9223372036854775808 99999999999999999999; do
    expect_status 1 create -f raw "$img" "$size" &&
        expect_err "Invalid image size specified. Must be between 0 and 9223372036854775807."
done
expect_status 1 create -f raw "$img" && expect_err "Image creation needs a size parameter"
expect_status 1 create -f raw "$img" 1M extra && expect_err "Unexpected argument: extra"
expect_status 1 create && expect_err "Expecting image file name"
expect_status 1 create -f qcow2 -F qcow2 "$img" 1M &&
    expect_err "Backing format cannot be used without backing file"
expect_status 1 create -f qcow2 -u -b base.qcow2 "$img" 1M &&
    expect_err "Backing file specified without backing format"
[ -e "$img" ] && fail "a refused create left $img behind"

finish
