#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil prints what qemu-img prints: the same text for info, map, snapshot -l, check,
# compare, create and resize on images qemu-img made. Skips (77) without qemu-img.

. "$(dirname "$0")/lib.sh"

enter_work_with_qemu

# same SUBCOMMAND ARGS...: imgutil and qemu-img print the same stdout and exit status.
same() {
    "$IMGUTIL" "$@" >imgutil.out 2>imgutil.err
    mine=$?
    qemu-img "$@" >qemu.out 2>qemu.err
    theirs=$?
    [ "$mine" -eq "$theirs" ] ||
        fail "$*: exit status $mine, qemu-img $theirs (stderr: $(cat imgutil.err))"
    expect_same_output "$*" imgutil.out qemu.out
}

# --- raw images of sizes that exercise the human size format ---
for size in 0 1000 1023 1048577 1536M 5G; do
    qemu-img create -q -f raw "r$size.raw" "$size"
    same info "r$size.raw"
    same info --output=json "r$size.raw"
done

qemu-img create -q -f raw data.raw 16M
qemu-io -f raw -c 'write -P 1 1M 64k' -c 'write -P 2 4M 1M' -c 'write -P 3 15M 4k' data.raw \
    >/dev/null
same map data.raw
same map --output=json data.raw
same map -f raw --start-offset=1000 --max-length=5M data.raw
same map --output=json --start-offset=1000 --max-length=5M data.raw
same map --output=json --start-offset=1G data.raw

# --- qcow2: backing chain, snapshots, format-specific information ---
qemu-img create -q -f qcow2 -o cluster_size=65536 base.qcow2 1G
qemu-io -c 'write -P 0xaa 0 1M' -c 'write -z 2M 64k' -c 'write -P 5 3M 4k' base.qcow2 >/dev/null
qemu-img snapshot -c first base.qcow2
qemu-img snapshot -c second base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 0xbb 1M 128k' top.qcow2 >/dev/null
mkdir sub
qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 sub/overlay.qcow2
for f in base.qcow2 top.qcow2 sub/overlay.qcow2; do
    same info "$f"
    same info --backing-chain "$f"
    same info --output=json "$f"
    same info --output=json --backing-chain "$f"
    same map "$f"
    same map --output=json "$f"
    same map --start-offset=64k --max-length=3M "$f"
    same snapshot -l "$f"
    same check "$f"
    same check --output=json "$f"
done
same snapshot -l data.raw

# --- check finds leaks (exit 3) and repairs them ---
qemu-img create -q -f qcow2 leaky.qcow2 16M
qemu-io -c 'write 0 128k' leaky.qcow2 >/dev/null
# Forget the mapping of the second cluster: its refcount stays, so it leaks.
# Entries are big-endian; skipping their top byte (flags) keeps the shell's arithmetic signed-safe.
l1=$(od -An -tx1 -j41 -N7 leaky.qcow2 | tr -d ' \n')
l2=$(od -An -tx1 -j$((0x$l1 + 1)) -N7 leaky.qcow2 | tr -d ' \n')
l2=$((0x$l2 & 0xfffffffffffe00))
dd if=/dev/zero of=leaky.qcow2 bs=1 seek=$((l2 + 8)) count=8 conv=notrunc status=none
cp leaky.qcow2 leaky2.qcow2
same check leaky.qcow2
same check --output=json leaky.qcow2
expect_status 0 check -r leaks leaky2.qcow2 &&
    expect_out "The following inconsistencies were found and repaired:"
qemu-img check leaky2.qcow2 >/dev/null 2>&1 || fail "check -r leaks left the image inconsistent"

# --- compare ---
cp data.raw copy.raw
same compare data.raw copy.raw
qemu-io -f raw -c 'write -P 9 5000 1' copy.raw >/dev/null
same compare data.raw copy.raw
qemu-img create -q -f raw longer.raw 20M
dd if=data.raw of=longer.raw conv=notrunc status=none
same compare data.raw longer.raw
same compare -s data.raw longer.raw
qemu-io -f raw -c 'write -P 4 19M 512' longer.raw >/dev/null
same compare data.raw longer.raw
same compare top.qcow2 base.qcow2

# --- create ---
for size in 1.5G 0x1000 1b 5.k +5 010 1T 1.25M 1.0000001k 1.0006k 0.00049k 3.999999999999k; do
    same create -f raw sized.raw "$size"
done
expect_status 0 create -f raw new.raw 1M &&
    expect_out "Formatting 'new.raw', fmt=raw size=1048576"
expect_status 0 create -q -f raw new.raw 2M
[ -s "$WORK/out" ] && fail "create -q printed '$(cat "$WORK/out")'"
[ "$(wc -c <new.raw)" -eq 2097152 ] || fail "create did not replace the existing file"
same create -f qcow2 fresh.qcow2 64M
same create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
same create -f qcow2 -o cluster_size=4k,lazy_refcounts=on fresh.qcow2 1G
qemu-img check fresh.qcow2 >/dev/null || fail "qemu-img check fails on imgutil's qcow2"

# --- resize ---
qemu-img create -q -f raw grow.raw 1M
expect_status 0 resize -f raw grow.raw +1M && expect_out "Image resized."
[ "$(wc -c <grow.raw)" -eq 2097152 ] || fail "resize +1M left $(wc -c <grow.raw) bytes"
expect_status 1 resize -f raw grow.raw 1M &&
    expect_err "Use the --shrink option to perform a shrink operation."
expect_status 0 resize -f raw --shrink grow.raw -- -512k && expect_out "Image resized."
[ "$(wc -c <grow.raw)" -eq 1572864 ] || fail "resize --shrink left $(wc -c <grow.raw) bytes"
expect_status 0 resize -q -f raw grow.raw 2M
[ -s "$WORK/out" ] && fail "resize -q printed '$(cat "$WORK/out")'"
expect_status 1 resize -f raw grow.raw 0 && expect_err "New image size must be positive"

# --- progress (-p) ---
# qemu-img draws its progress line on stdout, leaving stderr for errors.
qemu-img create -q -f raw prog.raw 1M
qemu-img convert -p -O qcow2 prog.raw prog-q.qcow2 >qemu.out 2>qemu.err
expect_status 0 convert -p -O qcow2 prog.raw prog-i.qcow2
grep -qF "(100.00/100%)" qemu.out || fail "qemu-img convert -p drew no progress on stdout"
expect_out "(100.00/100%)"
[ -s "$WORK/err" ] && fail "convert -p wrote to stderr: $(cat "$WORK/err")"
[ -s qemu.err ] && fail "qemu-img convert -p wrote to stderr: $(cat qemu.err)"

finish
