#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# A resize that runs out of space must leave the image as it was: the old virtual size, the
# old guest view (no backing data showing through), and an image qemu-img check accepts (new
# clusters may leak). The image lives on a small tmpfs filled up before the resize; the 2 GiB
# backing file, with data at 1 GiB, lives outside it. Needs root (mount) and qemu-img/qemu-io.
# $1: the imgutil executable.

IMGUTIL=${1:-${IMGUTIL_CLI:-}}
case "$IMGUTIL" in
/*) ;;
*) IMGUTIL="$(pwd)/$IMGUTIL" ;;
esac
[ -x "$IMGUTIL" ] || { echo "imgutil executable not found" >&2; exit 1; }
command -v qemu-img >/dev/null 2>&1 || exit 77
command -v qemu-io >/dev/null 2>&1 || exit 77
[ "$(id -u)" = 0 ] || exit 77

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgutil-resize.XXXXXX")
SMALL="$WORK/small"
mkdir "$SMALL"
cleanup() {
    umount "$SMALL" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
mount -t tmpfs -o size=8M tmpfs "$SMALL" 2>/dev/null || exit 77
FAILURES=0

fail() {
    echo "FAIL: $*" >&2
    FAILURES=$((FAILURES + 1))
}

virtual_size() {
    qemu-img info --output=json "$@" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'
}

# Takes the free space of the tmpfs but $SLACK (default 8k: enough to rewrite metadata in place).
fill_small() {
    rm -f "$SMALL/fill"
    dd if=/dev/zero of="$SMALL/fill" bs=4k 2>/dev/null
    truncate -s "-${SLACK:-8k}" "$SMALL/fill"
}

# expect_failed_resize NAME FORMAT IMAGE COPY SIZE MESSAGE [RESIZE OPTIONS...]: IMAGE (on the
# full tmpfs) must survive `imgutil resize` failing for lack of space, with MESSAGE, unchanged
# compared with COPY (taken before, outside the tmpfs).
expect_failed_resize() {
    name=$1 fmt=$2 img=$3 copy=$4 new_size=$5 message=$6
    shift 6
    old_size=$(virtual_size -f "$fmt" "$img")
    fill_small
    "$IMGUTIL" resize "$@" -f "$fmt" "$img" "$new_size" >"$WORK/out" 2>"$WORK/err"
    status=$?
    echo "$name: $(cat "$WORK/err")"
    rm -f "$SMALL/fill"
    [ "$status" -eq 1 ] || fail "$name: resize exited $status, expected 1 ($(cat "$WORK/err"))"
    grep -qF "$message" "$WORK/err" && grep -qF "no space left on device" "$WORK/err" ||
        fail "$name: the message does not name the lack of space: $(cat "$WORK/err")"
    size=$(virtual_size -f "$fmt" "$img")
    [ "$size" = "$old_size" ] || fail "$name: virtual size is $size after the failure, was $old_size"
    if [ "$fmt" = qcow2 ]; then
        qemu-img check -f qcow2 "$img" >"$WORK/check" 2>&1
        check=$?
        [ "$check" -eq 0 ] || [ "$check" -eq 3 ] ||
            fail "$name: qemu-img check exited $check: $(cat "$WORK/check")"
    fi
    qemu-img compare -f "$fmt" -F "$fmt" "$img" "$copy" >"$WORK/cmp" 2>&1 ||
        fail "$name: the guest view changed: $(cat "$WORK/cmp")"
}

cd "$WORK" || exit 1
qemu-img create -q -f raw backing.raw 2G
qemu-io -f raw -c 'write -q -P 0x55 1G 1M' backing.raw >/dev/null

# An overlay growing over its backing's data: the new space must read zeros, so the resize
# writes L2 tables for it, and those do not fit.
qemu-img create -q -f qcow2 -b "$WORK/backing.raw" -F raw "$SMALL/ov.qcow2" 512M
qemu-io -f qcow2 -c 'write -q -P 0x11 0 64k' "$SMALL/ov.qcow2" >/dev/null
cp "$SMALL/ov.qcow2" ov-before.qcow2
expect_failed_resize "qcow2 overlay" qcow2 "$SMALL/ov.qcow2" ov-before.qcow2 2G \
    "cannot write a new L2 table"
rm -f "$SMALL/ov.qcow2"

# preallocation=full on qcow2 and on raw: the zeros do not fit.
qemu-img create -q -f qcow2 "$SMALL/full.qcow2" 1M
qemu-io -f qcow2 -c 'write -q -P 0x22 0 64k' "$SMALL/full.qcow2" >/dev/null
cp "$SMALL/full.qcow2" full-before.qcow2
expect_failed_resize "qcow2 preallocation=full" qcow2 "$SMALL/full.qcow2" full-before.qcow2 64M \
    "qcow2: cannot" --preallocation=full
rm -f "$SMALL/full.qcow2"

# The same with room for the new metadata: the zeros of the data clusters are what fails.
qemu-img create -q -f qcow2 "$SMALL/full.qcow2" 1M
qemu-io -f qcow2 -c 'write -q -P 0x22 0 64k' "$SMALL/full.qcow2" >/dev/null
cp "$SMALL/full.qcow2" full-before.qcow2
SLACK=1M
expect_failed_resize "qcow2 preallocation=full, room for metadata" qcow2 "$SMALL/full.qcow2" \
    full-before.qcow2 64M "qcow2: cannot preallocate" --preallocation=full
SLACK=8k
rm -f "$SMALL/full.qcow2"

# preallocation=metadata with 512-byte clusters: the L2 tables for 1 GiB (16 MiB of them) do
# not fit. The data clusters they would name are never written: the entries and refcounts
# already made for them must still lie within the file.
qemu-img create -q -f qcow2 -o cluster_size=512 "$SMALL/meta.qcow2" 1M
qemu-io -f qcow2 -c 'write -q -P 0x44 0 64k' "$SMALL/meta.qcow2" >/dev/null
cp "$SMALL/meta.qcow2" meta-before.qcow2
SLACK=1M
expect_failed_resize "qcow2 preallocation=metadata, 512-byte clusters" qcow2 \
    "$SMALL/meta.qcow2" meta-before.qcow2 +1G "cannot write a new L2 table" \
    --preallocation=metadata
SLACK=8k
rm -f "$SMALL/meta.qcow2"

qemu-img create -q -f raw "$SMALL/full.raw" 1M
qemu-io -f raw -c 'write -q -P 0x33 0 64k' "$SMALL/full.raw" >/dev/null
cp "$SMALL/full.raw" full-before.raw
expect_failed_resize "raw preallocation=full" raw "$SMALL/full.raw" full-before.raw 64M \
    "raw: cannot preallocate the new space" --preallocation=full
rm -f "$SMALL/full.raw"

[ "$FAILURES" -eq 0 ] || { echo "$FAILURES failure(s)" >&2; exit 1; }
exit 0
