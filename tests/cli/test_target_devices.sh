#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Targets that need root to set up: a block device is written in place (the node stays, the
# device holds the image, bytes past it are untouched), raw and qcow2 as qemu-img writes them;
# a character device is refused; a read-only file system is named as such; a create whose
# preallocation fills the file system loses nothing (an existing image keeps its content, a
# new name is not left behind). Skips (77) without root, losetup, qemu-img or a tmpfs mount.

. "$(dirname "$0")/lib.sh"

enter_work_with_qemu
[ "$(id -u)" = 0 ] || exit 77
command -v losetup >/dev/null 2>&1 || exit 77

MOUNTS=
LOOP=
cleanup() {
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
    for m in $MOUNTS; do
        umount "$m" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# mount_tmpfs DIR OPTIONS: a small tmpfs at DIR; skips (77) where mounting is not allowed.
mount_tmpfs() {
    mkdir -p "$1"
    mount -t tmpfs -o "$2" imgutil-test "$1" 2>/dev/null || exit 77
    MOUNTS="$MOUNTS $WORK/$1"
}

# 5 MiB: data at both ends and zeros between, which must be written over the device's 0xff.
qemu-img create -q -f raw pat.raw 5M
qemu-io -f raw -c 'write -P 0x61 0 64k' -c 'write -P 0x62 4M 64k' pat.raw >/dev/null

# --- a block device: written in place, the node kept ---
head -c 8M /dev/zero | tr '\0' '\377' >backing.img
LOOP=$(losetup -f --show backing.img 2>/dev/null) || exit 77
[ -b "$LOOP" ] || exit 77
set -- $(stat -c '%t %T' "$LOOP")
mknod blk b $((0x$1)) $((0x$2))

expect_status 0 convert -O raw pat.raw blk
[ -b blk ] || fail "-O raw: the block device node was replaced"
cmp -n 5242880 pat.raw blk || fail "-O raw: the device does not hold the image"
[ "$(dd if=blk bs=1M skip=5 2>/dev/null | tr -d '\377' | wc -c)" -eq 0 ] ||
    fail "-O raw: bytes past the image on the device changed"

expect_status 0 convert -O qcow2 pat.raw blk
[ -b blk ] || fail "-O qcow2: the block device node was replaced"
qemu-img check -q -f qcow2 blk || fail "-O qcow2: qemu-img check fails on the device"
qemu-img compare -q -f raw -F qcow2 pat.raw blk || fail "-O qcow2: content differs"

# A device a VM (qemu-io) holds is refused, raw and qcow2, and left as it is.
if command -v qemu-io >/dev/null 2>&1; then
    dd if=blk of=device.before bs=1M count=8 2>/dev/null
    rm -f ctl held.out
    mkfifo ctl
    exec 9<>ctl
    qemu-io -f raw blk <ctl >held.out 2>&1 9>&- &
    holder=$!
    tries=0
    until grep -q 'qemu-io>' held.out 2>/dev/null || ! kill -0 $holder 2>/dev/null; do
        tries=$((tries + 1))
        [ $tries -gt 300 ] && break
        sleep 0.1
    done
    grep -q 'qemu-io>' held.out || fail "qemu-io did not open the device: $(cat held.out)"
    for fmt in raw qcow2; do
        expect_status 1 convert -O $fmt pat.raw blk && expect_err '"write" lock'
    done
    exec 9>&-
    wait $holder
    dd if=blk bs=1M count=8 2>/dev/null | cmp -s - device.before ||
        fail "a convert onto a held device changed it"
fi

# A device is not converted onto itself (in place, it would be zeroed before it is read).
dd if=blk of=device.before bs=1M count=8 2>/dev/null
expect_status 1 convert -f raw -O raw blk blk && expect_err "onto itself"
dd if=blk bs=1M count=8 2>/dev/null | cmp -s - device.before ||
    fail "a convert of a device onto itself changed it"

# A device smaller than the image is refused before it is written.
qemu-img create -q -f raw big.raw 16M
dd if=/dev/zero of=blk bs=1M count=8 2>/dev/null
expect_status 1 convert -O raw big.raw blk && expect_err "smaller than"
[ -b blk ] || fail "a device too small: the node was replaced"

# --- a character device: refused, left as it is ---
mknod chr c 1 3
expect_status 1 convert -O raw pat.raw chr && expect_err "'chr' is a character device"
[ -c chr ] || fail "a character device target was replaced"

# --- a read-only file system is named as such ---
mount_tmpfs ro size=1M,ro
expect_status 1 convert -O raw pat.raw ro/x.raw && expect_err "file system is read-only"
expect_status 1 create -f qcow2 ro/x.raw 1M && expect_err "file system is read-only"

# --- a create that runs out of room loses nothing ---
mount_tmpfs small size=8M
qemu-img create -q -f raw small/old.raw 1M
qemu-io -f raw -c 'write -P 0x77 0 1M' small/old.raw >/dev/null
cp small/old.raw old.copy
for fmt in raw qcow2; do
    expect_status 1 create -f $fmt -o preallocation=full small/old.raw 64M
    cmp -s small/old.raw old.copy || fail "-f $fmt: a failed create destroyed the existing image"
    expect_status 1 create -f $fmt -o preallocation=full small/new.raw 64M
    [ -e small/new.raw ] && fail "-f $fmt: a failed create left the new file behind"
done
[ "$(ls -A small)" = old.raw ] || fail "a failed create left files: $(ls -A small)"

finish
