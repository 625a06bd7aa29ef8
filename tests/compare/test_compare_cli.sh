#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil compare [-s] against qemu-img compare [-s] on identical copies of pairs of images
# made by qemu-img and qemu-io: qcow2 and raw, pairs across formats (vmdk, vdi, vpc, vhdx, qed
# against qcow2), the same content stored differently (zeros written or left unallocated, a
# backing chain), content that differs, sizes that differ with a tail of zeros or of data.
# The same lines on stdout and stderr (the program's name aside) and the same exit status.
# usage: test_compare_cli.sh IMGUTIL

. "$(dirname "$0")/../cli/lib.sh"
enter_work_with_qemu

# same ARGS...: imgutil compare ARGS and qemu-img compare ARGS print and exit the same.
same() {
    same_as_qemu compare "$@"
}

# both A B: every way of comparing the pair, each way round.
both() {
    for strict in "" -s; do
        # shellcheck disable=SC2086
        same $strict "$1" "$2"
        # shellcheck disable=SC2086
        same $strict "$2" "$1"
    done
}

WRITES="-c 'write -P 1 0 64k' -c 'write -P 2 1M 3k' -c 'write -P 3 5M 1M'"

# The reference: qcow2 with data in three places.
qemu-img create -q -f qcow2 a.qcow2 8M
eval qemu-io "$WRITES" a.qcow2 >/dev/null
cp a.qcow2 copy.qcow2
# The same content, with zeros written where a.qcow2 has nothing allocated.
qemu-img create -q -f qcow2 zeros.qcow2 8M
eval qemu-io "$WRITES" -c "'write -z 2M 1M'" zeros.qcow2 >/dev/null
# The same content, with zeros written as data.
qemu-img create -q -f qcow2 zerodata.qcow2 8M
eval qemu-io "$WRITES" -c "'write -P 0 3M 64k'" zerodata.qcow2 >/dev/null
# One byte different, late in the image.
cp a.qcow2 diff.qcow2
qemu-io -c 'write -P 9 5M 1' -c 'write -P 9 7M 1' diff.qcow2 >/dev/null
# An overlay whose base holds the data: the same guest view, allocated elsewhere.
qemu-img create -q -f qcow2 base.qcow2 8M
eval qemu-io "$WRITES" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
# Longer: a tail of zeros, or data in the tail.
qemu-img create -q -f qcow2 longer.qcow2 10M
eval qemu-io "$WRITES" longer.qcow2 >/dev/null
cp longer.qcow2 longer_data.qcow2
qemu-io -c 'write -P 4 9M 512' longer_data.qcow2 >/dev/null
# The same content in other formats.
qemu-img convert -O raw a.qcow2 a.raw
for fmt in vmdk vdi vpc vhdx qed; do
    qemu-img convert -O "$fmt" a.qcow2 "a.$fmt"
done
qemu-img convert -O vmdk diff.qcow2 diff.vmdk

both a.qcow2 copy.qcow2
both a.qcow2 zeros.qcow2
both a.qcow2 zerodata.qcow2
both a.qcow2 diff.qcow2
both a.qcow2 top.qcow2
both a.qcow2 longer.qcow2
both a.qcow2 longer_data.qcow2
both a.qcow2 a.raw
both a.raw zeros.qcow2
for fmt in vdi vpc vhdx qed; do
    both "a.$fmt" a.qcow2
done
# VMDK: qemu-img's driver reports block status one grain at a time, so in strict mode its
# last run reaches the end of the image only within the last grain (README.md, compare).
for pair in "a.vmdk a.qcow2" "a.vmdk a.vhdx" "diff.vmdk a.qcow2" "a.raw diff.vmdk"; do
    # shellcheck disable=SC2086
    set -- $pair
    same "$1" "$2"
    same "$2" "$1"
done
# Formats named.
same -f qcow2 -F raw a.qcow2 a.raw
same -s -f qcow2 -F vdi a.qcow2 a.vdi
same -q a.qcow2 diff.qcow2
same -q -s a.qcow2 longer.qcow2
# Refusals: the exit status (the open's message is the open's, tested with it).
qemu-img compare a.qcow2 missing.qcow2 >/dev/null 2>&1
q_status=$?
"$IMGUTIL" compare a.qcow2 missing.qcow2 >/dev/null 2>&1
i_status=$?
[ "$q_status" -eq "$i_status" ] || fail "compare with a missing file: $i_status, qemu-img $q_status"
same -f raw -F qcow2 a.qcow2 a.qcow2

[ "$FAILURES" -eq 0 ]
