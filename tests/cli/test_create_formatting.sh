#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil create prints qemu-img's "Formatting '...', fmt=..." line where qemu-img does: once
# the -o options parse, before the format's own checks, so a create that the format refuses
# (a bad option value, a size too large, a locked file) prints it too, and one refused
# earlier (no size, an unknown option, a malformed number or boolean, no such format) does
# not. Standard output and the exit status are compared with qemu-img create's.
# usage: test_create_formatting.sh IMGUTIL

. "$(dirname "$0")/lib.sh"
enter_work_with_qemu

# same ARGS...: imgutil create and qemu-img create print the same on stdout, same status.
same() {
    rm -f img.*
    qemu-img create "$@" >q.out 2>q.err
    q_status=$?
    rm -f img.*
    "$IMGUTIL" create "$@" >i.out 2>i.err
    i_status=$?
    if [ "$q_status" -ne "$i_status" ]; then
        fail "create $*: exit status $i_status, qemu-img $q_status ($(cat i.err))"
    elif ! cmp -s q.out i.out; then
        fail "create $*: stdout '$(cat i.out)', qemu-img '$(cat q.out)'"
    fi
}

# Refused before the line.
same -f qcow2 img.qcow2
same -f qcow2 -o nosuchoption=1 img.qcow2 1G
same -f vdi -o static=maybe img.vdi 1G
same -f qcow2 -o cluster_size=abc img.qcow2 1G
same -f qcow2 -o refcount_bits=abc img.qcow2 1G
same -f bochs img.bochs 1G
same -f nosuchformat img.x 1G
same -f qcow2 -b missing.qcow2 -F qcow2 img.qcow2
# Refused by the format, after the line.
same -f qcow2 -o cluster_size=1000 img.qcow2 1G
same -f qcow2 -o cluster_size=4M img.qcow2 1G
same -f qcow2 -o preallocation=bogus img.qcow2 1G
same -f qcow2 -o compat=0.10,refcount_bits=8 img.qcow2 1G
same -f raw -o preallocation=bogus img.raw 1G
same -f vpc img.vpc 3T
same -f vpc -o subformat=bogus img.vpc 1G
same -f qed -o cluster_size=3000 img.qed 1G
same -f vmdk -o subformat=bogus img.vmdk 1G
same -f vhdx -o block_size=3M img.vhdx 1G
# Accepted: the line, once.
same -f qcow2 -o lazy_refcounts=yes img.qcow2 1G
same -f vdi -o static=on img.vdi 1M
# Options the format takes but does not list (host file options).
same -f parallels -o cluster_size=64k,preallocation=falloc img.prl 3M
same -f vhdx -o nocow=on img.vhdx 1M

# A file a running VM holds (qemu-io with it open for writing): the line, then the lock error.
# qemu-io says when it holds the image by answering a read; nothing else opens it meanwhile.
qemu-img create -q -f qcow2 held.qcow2 1G
mkfifo hold
qemu-io -f qcow2 held.qcow2 <hold >holder.out 2>&1 &
holder=$!
exec 3>hold
echo 'read 0 512' >&3
tries=0
while ! grep -q 'read 512/512' holder.out && [ "$tries" -lt 600 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
if grep -q 'read 512/512' holder.out; then
    qemu-img create -f qcow2 held.qcow2 1G >q.out 2>q.err
    q_status=$?
    "$IMGUTIL" create -f qcow2 held.qcow2 1G >i.out 2>i.err
    i_status=$?
    if [ "$q_status" -ne 1 ] || [ "$i_status" -ne 1 ]; then
        fail "create over a held image: exit status $i_status, qemu-img $q_status"
    elif ! grep -q "^Formatting 'held.qcow2'" q.out || ! cmp -s q.out i.out; then
        fail "create over a held image: stdout '$(cat i.out)', qemu-img '$(cat q.out)'"
    fi
else
    fail "qemu-io did not open held.qcow2: $(cat holder.out)"
fi
exec 3>&-
wait "$holder"

[ "$FAILURES" -eq 0 ]
