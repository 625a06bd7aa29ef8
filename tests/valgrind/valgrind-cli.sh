#!/usr/bin/env bash
# Runs the CLI under valgrind (memcheck) on images made by qemu-img: info, map, convert, check,
# create, resize and snapshot must report no memory errors and no leaks.
set -euo pipefail
cli=${IMGUTIL_CLI:?IMGUTIL_CLI is not set}
command -v valgrind >/dev/null || { echo "SKIP: valgrind not found"; exit 77; }
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not found"; exit 77; }
# valgrind cannot see the kernel fill buffers through io_uring and would report them as
# uninitialised: the thread-pool engine does the same work with plain pread/pwrite.
export IMGUTIL_IO=threads
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

qemu-img create -q -f raw base.raw 8M
qemu-io -f raw -c 'write -P 0x11 0 1M' base.raw >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.raw -F raw mid.qcow2
qemu-io -f qcow2 -c 'write -P 0x22 512k 1M' -c 'write -z 3M 64k' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -P 0x33 4k 4k' top.qcow2 >/dev/null
qemu-img convert -c -O qcow2 -o compression_type=zstd mid.qcow2 zstd.qcow2
qemu-img convert -c -O qcow2 mid.qcow2 zlib.qcow2

vg() {
    echo "== imgutil $*"
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
        "$cli" "$@" >/dev/null
}
failed=0
for img in base.raw mid.qcow2 top.qcow2 zstd.qcow2 zlib.qcow2; do
    vg info --output=json --backing-chain "$img" || failed=1
    vg map --output=json "$img" || failed=1
    vg convert -O raw "$img" out.raw || failed=1
    qemu-img compare -q "$img" out.raw || { echo "convert of $img differs"; failed=1; }
done
vg check mid.qcow2 || failed=1
vg create -q -f qcow2 -b mid.qcow2 -F qcow2 new.qcow2 || failed=1
vg resize -q new.qcow2 +1M || failed=1
vg snapshot -c s1 new.qcow2 || failed=1
vg snapshot -l new.qcow2 || failed=1
vg convert -O qcow2 top.qcow2 out.qcow2 || failed=1
qemu-img compare -q top.qcow2 out.qcow2 || { echo "convert to qcow2 differs"; failed=1; }
exit $failed
