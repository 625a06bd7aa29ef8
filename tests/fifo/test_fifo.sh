#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# A FIFO named as a backing file or an external data file is refused before anything reads
# it, instead of blocking forever (qemu-img blocks). Each command runs under `timeout` so that
# a hang fails the test rather than stalling the suite.
#
# usage: test_fifo.sh IMGUTIL OPEN_IMAGE   (exit 77 without qemu-img)

OPEN_IMAGE=$2
. "$(dirname "$0")/../cli/lib.sh"
case "$OPEN_IMAGE" in
/*) ;;
*) OPEN_IMAGE="$(pwd)/$OPEN_IMAGE" ;;
esac
enter_work_with_qemu

REFUSAL="is not a regular file or a block device"

# expect_refused CODE ARGS...: imgutil fails with CODE (not timeout's 124) naming the FIFO.
expect_refused() {
    want=$1
    shift
    timeout 10 "$IMGUTIL" "$@" >"$WORK/out" 2>"$WORK/err" </dev/null
    STATUS=$?
    if [ "$STATUS" -ne "$want" ]; then
        fail "imgutil $*: exit status $STATUS, expected $want (124 is a hang)"
        return
    fi
    expect_err "$REFUSAL"
}

mkfifo fifo || exit 1
qemu-img create -q -f raw plain.raw 1M || exit 1
qemu-img create -q -f qcow2 -F raw -b fifo -u over-fifo.qcow2 1M || exit 1
qemu-img create -q -f qcow2 -F qcow2 -b over-fifo.qcow2 -u two-up.qcow2 1M || exit 1

expect_refused 1 info --backing-chain over-fifo.qcow2
expect_refused 1 info --backing-chain two-up.qcow2
expect_refused 1 map over-fifo.qcow2
expect_refused 1 map --output=json two-up.qcow2
# compare reports errors with 2, as qemu-img compare does.
expect_refused 2 compare over-fifo.qcow2 plain.raw
expect_refused 1 convert -O raw over-fifo.qcow2 out.raw
[ -e out.raw ] && fail "convert left out.raw behind"
# Without the chain, the image itself is still readable.
expect_status 0 info over-fifo.qcow2 && expect_out "backing file: fifo"

# An external data file that is a FIFO, opened through the API with the data file allowed.
qemu-img create -q -f qcow2 -o data_file=data.raw with-data.qcow2 1M || exit 1
rm -f data.raw && mkfifo data.raw || exit 1
for mode in ro rw; do
    timeout 10 "$OPEN_IMAGE" with-data.qcow2 $mode >"$WORK/out" 2>"$WORK/err"
    STATUS=$?
    if [ "$STATUS" -ne 3 ]; then
        fail "open_image with-data.qcow2 $mode: exit status $STATUS, expected 3 (124 is a hang)"
    else
        expect_out "refused -22"
        expect_out "data file 'data.raw' $REFUSAL"
    fi
done
# A character device is refused as well (reading one may never end).
qemu-img create -q -f qcow2 -F raw -b /dev/zero -u over-zero.qcow2 1M || exit 1
expect_refused 1 map over-zero.qcow2
grep -qF "/dev/zero" "$WORK/err" || fail "the refusal does not name /dev/zero: $(cat "$WORK/err")"

finish
