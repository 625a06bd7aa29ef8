#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Raw preallocation=full writes its zeros with several requests in flight: on every engine the
# file is the right size, allocated and all zeros, and a write that fails part-way (the 3rd of
# them, with ENOSPC or a short transfer) fails the create with a message naming the file.
set -u
IMGUTIL=$1
[ -x "$IMGUTIL" ] || { echo "usage: $0 IMGUTIL" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgutil-fill.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SIZE=$((9 * 1024 * 1024 + 512)) # not a whole number of the 1 MiB writes

fail() { echo "FAIL: $*" >&2; exit 1; }

for engine in uring threads fault; do
    img="$WORK/$engine.raw"
    IMGUTIL_IO=$engine "$IMGUTIL" create -q -f raw -o preallocation=full "$img" "$SIZE" ||
        fail "create with IMGUTIL_IO=$engine failed"
    [ "$(stat -c %s "$img")" = "$SIZE" ] || fail "$engine: size $(stat -c %s "$img")"
    [ $(($(stat -c %b "$img") * 512)) -ge "$SIZE" ] || fail "$engine: not allocated"
    cmp -n "$SIZE" "$img" /dev/zero || fail "$engine: not all zeros"
done

for fault in write:3:ENOSPC write:3:short; do
    img="$WORK/fault.raw"
    err=$(IMGUTIL_IO=fault IMGUTIL_FAULT=$fault "$IMGUTIL" create -q -f raw \
        -o preallocation=full "$img" "$SIZE" 2>&1)
    rc=$?
    [ "$rc" = 1 ] || fail "$fault: exit status $rc, expected 1"
    case "$err" in
    *"$img"*"o space left on device"*) ;;
    *) fail "$fault: unexpected message: $err" ;;
    esac
done
exit 0
