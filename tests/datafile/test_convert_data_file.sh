#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# convert -O qcow2 -o data_file=F: the result matches qemu-img's (the same data file bytes, the
# same map, a clean check), and a convert that cannot succeed leaves F as it was: not emptied,
# not created, and never the source it is reading. Unlike qemu-img, an existing F that holds
# data is emptied only when asked for (overwrite_named=on), by convert and create alike.
#
# usage: test_convert_data_file.sh IMGUTIL   (exit 77 without qemu-img)

. "$(dirname "$0")/../cli/lib.sh"
enter_work_with_qemu

qemu-img create -q -f raw src.raw 4M || exit 1
qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 2M 512k" -c "write -P 0x33 4032k 64k" \
    src.raw >/dev/null || exit 1
cp src.raw src.copy

# An existing data file (its old bytes must go) and a new one, against qemu-img's results.
for name in existing new; do
    rm -f "$name.data" "$name.ref.data"
    if [ "$name" = existing ]; then
        printf 'old contents\n' >existing.data
        printf 'old contents\n' >existing.ref.data
    fi
    qemu-img convert -O qcow2 -o "data_file=$name.ref.data" src.raw "$name.ref.qcow2" || exit 1
    if [ "$name" = existing ]; then
        expect_status 1 convert -O qcow2 -o "data_file=$name.data" src.raw "$name.qcow2"
        expect_err "exists and holds data"
        [ "$(cat existing.data)" = "old contents" ] || fail "convert emptied an existing data file"
        [ -e existing.qcow2 ] && fail "a refused convert left existing.qcow2"
        expect_status 0 convert -O qcow2 -o "data_file=$name.data,overwrite_named=on" src.raw \
            "$name.qcow2" || continue
    else
        expect_status 0 convert -O qcow2 -o "data_file=$name.data" src.raw "$name.qcow2" ||
            continue
    fi
    cmp -s "$name.data" "$name.ref.data" || fail "$name: the data file differs from qemu-img's"
    qemu-img check "$name.qcow2" >check.out 2>&1 || fail "$name: qemu-img check: $(cat check.out)"
    qemu-img compare src.raw "$name.qcow2" >/dev/null 2>&1 || fail "$name: content differs"
    qemu-img map --output=json "$name.qcow2" >map.out
    qemu-img map --output=json "$name.ref.qcow2" >map.ref
    expect_same_output "$name: map" map.out map.ref
    qemu-img info "$name.qcow2" | grep -qxF "    data file: $name.data" ||
        fail "$name: the image does not name its data file"
done

# The source as its own data file: refused (it holds data; even when emptying is allowed, it
# is locked for reading), and left intact.
expect_status 1 convert -O qcow2 -o data_file=src.raw src.raw self.qcow2 &&
    expect_err "exists and holds data"
expect_status 1 convert -O qcow2 -o data_file=src.raw,overwrite_named=on src.raw self.qcow2 &&
    expect_err "lock"
cmp -s src.raw src.copy || fail "convert emptied its own source, named as the data file"
[ -e self.qcow2 ] && fail "a failed convert left self.qcow2"

# Options refused before anything is written: an existing data file keeps its bytes, a missing
# one is not created.
printf 'keep me\n' >kept.data
expect_status 1 convert -O qcow2 -o data_file=kept.data,cluster_size=1000 src.raw bad.qcow2
[ "$(cat kept.data)" = "keep me" ] || fail "a refused convert changed the data file"
expect_status 1 convert -O qcow2 -o data_file=missing.data,cluster_size=1000 src.raw bad.qcow2
[ -e missing.data ] && fail "a refused convert created the data file"

# Compression cannot go into an image with a data file: refused before the data file is touched.
expect_status 1 convert -c -O qcow2 -o data_file=kept.data src.raw comp.qcow2
expect_err "external data file"
[ "$(cat kept.data)" = "keep me" ] || fail "a refused compressed convert changed the data file"
[ -e comp.qcow2 ] && fail "a refused compressed convert left comp.qcow2"

# create alike: an existing data file with data is refused unless asked for; an empty one is
# taken as it is.
printf 'keep me too\n' >created.data
expect_status 1 create -f qcow2 -o data_file=created.data created.qcow2 1M
expect_err "exists and holds data"
[ "$(cat created.data)" = "keep me too" ] || fail "create emptied an existing data file"
[ -e created.qcow2 ] && fail "a refused create left created.qcow2"
expect_status 0 create -f qcow2 -o data_file=created.data,overwrite_named=on created.qcow2 1M
grep -q "keep me" created.data && fail "create with overwrite_named=on did not empty the data file"
printf 'keep me too\n' >created.ref.data
qemu-img create -q -f qcow2 -o data_file=created.ref.data created.ref.qcow2 1M || exit 1
cmp -s created.data created.ref.data || fail "create's data file differs from qemu-img's"
: >empty.data
expect_status 0 create -f qcow2 -o data_file=empty.data empty.qcow2 1M
qemu-img check empty.qcow2 >check.out 2>&1 || fail "create on an empty data file: $(cat check.out)"

# The extent files of a VMDK likewise: an existing one with data is kept unless asked for.
printf 'keep this extent\n' >disk-flat.vmdk
expect_status 1 create -f vmdk -o subformat=monolithicFlat disk.vmdk 1M
expect_err "exists and holds data"
[ "$(cat disk-flat.vmdk)" = "keep this extent" ] || fail "create emptied an existing extent file"
expect_status 0 create -f vmdk -o subformat=monolithicFlat,overwrite_named=on disk.vmdk 1M
qemu-img check disk.vmdk >check.out 2>&1 || fail "vmdk over a taken-over extent: $(cat check.out)"

# A FIFO as the data file is refused, not waited on.
mkfifo fifo.data || exit 1
timeout 10 "$IMGUTIL" convert -O qcow2 -o data_file=fifo.data src.raw fifo.qcow2 \
    >"$WORK/out" 2>"$WORK/err"
STATUS=$?
[ "$STATUS" -eq 1 ] || fail "convert to a FIFO data file: exit status $STATUS (124 is a hang)"
expect_err "is not a regular file or a block device"

finish
