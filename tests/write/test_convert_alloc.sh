#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# convert writes a chunk's allocating writes together and links each once its data is written.
# Runs of one chunk can meet in a cluster (extended L2: the unit is a 2 KiB subcluster, and data,
# zeros, data lie in one 64 KiB cluster); a target with a backing file gets its zeros written
# between the allocating writes. On every engine the result must match the source
# (qemu-img compare) and be clean (qemu-img check); a write failing part-way fails the convert
# with a message and leaves no target. Skips (77) without qemu-img or qemu-io.
set -u
IMGUTIL=$1
[ -x "$IMGUTIL" ] || { echo "usage: $0 IMGUTIL" >&2; exit 1; }
command -v qemu-img >/dev/null 2>&1 || exit 77
command -v qemu-io >/dev/null 2>&1 || exit 77
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgutil-convert-alloc.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 12 MiB: in each 64 KiB cluster of the first 8 MiB, 4 KiB of data, 4 KiB of zeros, 4 KiB of
# data; then 2 MiB of data at 9 MiB.
SRC="$WORK/src.qcow2"
qemu-img create -q -f qcow2 "$SRC" 12M || exit 1
cmds=()
for ((c = 0; c < 8 * 1024 * 1024; c += 65536)); do
    cmds+=(-c "write -P $((c / 65536 % 200 + 1)) $c 4k" -c "write -P 0xee $((c + 8192)) 4k")
done
qemu-io -f qcow2 "${cmds[@]}" -c 'write -P 0x77 9M 2M' "$SRC" >/dev/null || exit 1
BASE="$WORK/base.qcow2"
qemu-img create -q -f qcow2 "$BASE" 12M || exit 1
qemu-io -f qcow2 -c 'write -P 0x55 0 12M' "$BASE" >/dev/null || exit 1

check_target() { # NAME TARGET
    qemu-img compare -q -f qcow2 -F qcow2 "$SRC" "$2" || fail "$1: target differs from source"
    qemu-img check -q "$2" || fail "$1: qemu-img check found problems"
}

for engine in uring threads fault; do
    out="$WORK/ext-$engine.qcow2"
    # A convert waiting for its own allocation would hang: bounded, and killed if it does.
    IMGUTIL_IO=$engine timeout -s KILL 60 "$IMGUTIL" convert -O qcow2 \
        -o extended_l2=on,cluster_size=64k "$SRC" "$out" || fail "$engine: extended_l2 convert"
    check_target "$engine extended_l2" "$out"
    # Data, zeros, data, in one cluster: two allocations, as qemu-img map shows.
    [ "$(qemu-img map --output=json "$out" | grep -c '"data": true')" -ge 256 ] ||
        fail "$engine: the runs of a cluster were not written separately"

    out="$WORK/backing-$engine.qcow2"
    IMGUTIL_IO=$engine timeout -s KILL 60 "$IMGUTIL" convert -O qcow2 \
        -o backing_file="$BASE",backing_fmt=qcow2 "$SRC" "$out" || fail "$engine: backing convert"
    check_target "$engine backing" "$out"
done

# The 40th write fails: the convert fails, names the problem, and leaves no target.
out="$WORK/fault.qcow2"
err=$(IMGUTIL_IO=fault IMGUTIL_FAULT=write:40:EIO timeout -s KILL 60 "$IMGUTIL" convert \
    -O qcow2 -o extended_l2=on "$SRC" "$out" 2>&1)
rc=$?
[ "$rc" = 1 ] || fail "fault: exit status $rc, expected 1 ($err)"
case "$err" in
*"nput/output error"*) ;;
*) fail "fault: unexpected message: $err" ;;
esac
[ ! -e "$out" ] || fail "fault: a target was left behind"
exit 0
