#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil dd against qemu-img dd on the same inputs: the same output images (size, content by
# qemu-img compare, and bytes: qemu-img dd writes every block, so even qcow2 output is
# deterministic), messages and exit status, for raw and qcow2 inputs and outputs, with bs,
# count and skip (a skip past the end included), and for the refusals.
# usage: test_dd_cli.sh IMGUTIL

. "$(dirname "$0")/../cli/lib.sh"
enter_work_with_qemu

# same_dd ARGS...: "qemu-img dd ARGS of=q.img" and "imgutil dd ARGS of=i.img" agree.
same_dd() {
    rm -f q.img i.img
    qemu-img dd "$@" of=q.img >q.out 2>q.err
    q_status=$?
    "$IMGUTIL" dd "$@" of=i.img >i.out 2>i.err
    i_status=$?
    sed -i 's/^imgutil:/qemu-img:/' i.err
    if [ "$q_status" -ne "$i_status" ]; then
        fail "dd $*: exit status $i_status, qemu-img $q_status ($(cat i.err))"
        return
    fi
    if ! cmp -s q.out i.out || ! cmp -s q.err i.err; then
        fail "dd $*: output differs: $(cat i.out i.err) / qemu-img: $(cat q.out q.err)"
    fi
    [ -e q.img ] || return
    if [ "$(stat -c %s q.img)" != "$(stat -c %s i.img 2>/dev/null)" ]; then
        fail "dd $*: output file size $(stat -c %s i.img 2>/dev/null), qemu-img $(stat -c %s q.img)"
    elif ! qemu-img compare -q q.img i.img; then
        fail "dd $*: the output images differ (qemu-img compare)"
    elif ! cmp -s q.img i.img; then
        fail "dd $*: the output files differ byte for byte"
    fi
}

# same_error ARGS...: both refuse (or accept) ARGS with the same words and status.
same_error() {
    qemu-img dd "$@" >q.out 2>q.err
    q_status=$?
    "$IMGUTIL" dd "$@" >i.out 2>i.err
    i_status=$?
    sed -i 's/^imgutil:/qemu-img:/' i.err
    if [ "$q_status" -ne "$i_status" ] || ! cmp -s q.err i.err; then
        fail "dd $*: $(cat i.err) (status $i_status) / qemu-img: $(cat q.err) (status $q_status)"
    fi
}

truncate -s 5M sparse.raw
qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 1M 4k' -c 'write -P 3 3M 1000' \
    sparse.raw >/dev/null
head -c 10003 /dev/urandom >odd.raw
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 5 0 1M' -c 'write -P 6 3M 512k' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2
qemu-io -c 'write -P 7 512k 1M' -c 'write -z 3M 64k' over.qcow2 >/dev/null
qemu-img convert -c -O qcow2 odd.raw compressed.qcow2

for input in sparse.raw odd.raw over.qcow2 compressed.qcow2; do
    for ops in "" "bs=64k" "bs=1000 count=7" "bs=3000 count=5 skip=2" "bs=1M skip=1" \
        "skip=100000000" "count=0"; do
        for out in "" "-O qcow2"; do
            # shellcheck disable=SC2086
            same_dd $out $ops if=$input
        done
    done
done
same_dd -f raw if=over.qcow2 bs=4k
same_dd -U if=sparse.raw bs=1M

# An existing output file is replaced.
head -c 1000000 /dev/urandom >i.img
cp i.img q.img
qemu-img dd if=odd.raw of=q.img 2>/dev/null
"$IMGUTIL" dd if=odd.raw of=i.img
cmp -s q.img i.img || fail "dd onto an existing file: the results differ"

same_error
same_error if=odd.raw
same_error of=x.img
same_error if=odd.raw of=x.img bs=0
same_error if=odd.raw of=x.img bs=3G
same_error if=odd.raw of=x.img bs=abc
same_error if=odd.raw of=x.img count=-1
same_error if=odd.raw of=x.img skip=x
same_error if=odd.raw of=x.img foo=1
same_error if=odd.raw of=x.img junk
same_error -O nosuchformat if=odd.raw of=x.img
[ -e x.img ] && fail "a refused dd created its output"
if expect_status 1 dd if=nonexistent.img of=x.img; then
    expect_err "Could not open 'nonexistent.img'"
fi

[ "$FAILURES" -eq 0 ]
