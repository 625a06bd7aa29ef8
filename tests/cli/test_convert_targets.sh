#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil convert against qemu-img convert on what the target becomes: never more allocated
# than qemu-img's (the source's holes stay holes whatever -S is, zeros inside data follow -S),
# the same content over a backing file the target names, a short last cluster still compressed,
# and target names qemu-img handles: long ones, symbolic links, files with their own mode.
# Skips (77) without qemu-img.

. "$(dirname "$0")/lib.sh"
DATA_BYTES="$(cd "$(dirname "$0")/../common" && pwd)/data_bytes.py"

enter_work_with_qemu

# What a file holds as data, in bytes (not st_blocks: see data_bytes.py).
blocks() {
    python3 "$DATA_BYTES" "$1"
}

# 5 MiB: small pieces of data with holes between them, and a run of written zeros.
qemu-img create -q -f raw pat.raw 5M
qemu-io -f raw -c 'write -P 0x61 0 4k' -c 'write -P 0x62 1M 8k' -c 'write -P 0 2M 1M' \
    -c 'write -P 0x63 3M 512' -c 'write -P 0x64 5116k 4k' pat.raw >/dev/null
fallocate --punch-hole --offset 2M --length 1M pat.raw 2>/dev/null || true

for S in 4k 3k 64k 96k 1M 2M 16M; do
    for fmt in raw qcow2; do
        rm -f ours qemus
        expect_status 0 convert -S $S -O $fmt pat.raw ours || continue
        qemu-img convert -S $S -O $fmt pat.raw qemus
        qemu-img compare -q ours qemus || fail "-S $S -O $fmt: content differs from qemu-img's"
        [ "$(blocks ours)" -le "$(blocks qemus)" ] ||
            fail "-S $S -O $fmt: $(blocks ours) bytes allocated, qemu-img $(blocks qemus)"
    done
done

rm -f ours qemus
expect_status 0 convert -O qcow2 -o extended_l2=on pat.raw ours
qemu-img convert -O qcow2 -o extended_l2=on pat.raw qemus
qemu-img compare -q ours qemus || fail "extended_l2: content differs"
qemu-img check -q ours || fail "extended_l2: qemu-img check fails"
[ "$(blocks ours)" -le "$(blocks qemus)" ] ||
    fail "extended_l2: $(blocks ours) bytes allocated, qemu-img $(blocks qemus)"

# A target over a backing file: what the source has as zeros must not show the backing file.
qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -c 'write -P 0x55 0 8M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 8M
qemu-io -c 'write -P 0x66 1M 64k' -c 'write -z 3M 128k' -c 'discard 5M 64k' top.qcow2 >/dev/null
for extra in "" ",compat=0.10"; do
    rm -f ours.qcow2
    expect_status 0 convert -O qcow2 -o "backing_file=base.qcow2,backing_fmt=qcow2$extra" \
        top.qcow2 ours.qcow2 || continue
    qemu-img compare -q top.qcow2 ours.qcow2 || fail "backing target$extra: content differs"
    qemu-img check -q ours.qcow2 || fail "backing target$extra: qemu-img check fails"
done

# The last, short cluster of a compressed image is compressed too.
head -c 70000 /dev/zero | tr '\0' 'A' >short.raw
rm -f ours.qcow2
expect_status 0 convert -c -O qcow2 short.raw ours.qcow2
qemu-img compare -q short.raw ours.qcow2 || fail "compressed: content differs"
qemu-img check ours.qcow2 | grep -q '100.00% compressed clusters' ||
    fail "compressed: not every cluster is compressed: $(qemu-img check ours.qcow2)"

# Target names: 250 characters; a symbolic link (written through); an existing file's mode.
long=$(printf 'n%.0s' $(seq 1 250))
expect_status 0 convert -O raw pat.raw "$long"
cmp -s pat.raw "$long" || fail "long target name: content differs"
mkdir real
printf old >real/disk.raw
ln -s real/disk.raw link.raw
expect_status 0 convert -O raw pat.raw link.raw
[ -L link.raw ] || fail "symbolic link target: the link was replaced"
cmp -s pat.raw real/disk.raw || fail "symbolic link target: the file it names was not written"
ln -s real/new.raw dangling.raw
expect_status 0 convert -O raw pat.raw dangling.raw
[ -L dangling.raw ] && cmp -s pat.raw real/new.raw ||
    fail "dangling symbolic link target: the file it names was not created"
printf old >private.raw
chmod 600 private.raw
expect_status 0 convert -O raw pat.raw private.raw
[ "$(stat -c %a private.raw)" = 600 ] ||
    fail "existing target: mode $(stat -c %a private.raw), expected 600"
[ -z "$(find . -name '.*.tmp')" ] || fail "temporary files left: $(find . -name '.*.tmp')"

finish
