#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil check on damaged images prints what qemu-img check prints (stdout, the findings on
# stderr, the exit status) and leaves the image as qemu-img leaves it: repaired or not, corrupt
# and dirty bits set or cleared. Images: leaked clusters, a cluster referenced twice, both of
# those marked corrupt, a healthy image marked corrupt, and a lazy-refcounts image whose writer
# died. Skips (77) without qemu-img.

. "$(dirname "$0")/lib.sh"

enter_work_with_qemu

# be64 FILE OFFSET: the big-endian 64-bit number at OFFSET, its top byte left out (the shell's
# arithmetic is signed; table entries keep flags there, offsets never reach it).
be64() {
    echo $((0x$(od -An -tx1 -j $(($2 + 1)) -N7 "$1" | tr -d ' \n')))
}

# put_be FILE OFFSET BYTES HEX: writes the BYTES-byte big-endian number HEX at OFFSET.
put_be() {
    hex=$(printf "%0$(($3 * 2))x" "$4")
    octal=""
    i=0
    while [ $i -lt "$3" ]; do
        octal="$octal\\$(printf '%03o' "0x$(echo "$hex" | cut -c$((i * 2 + 1))-$((i * 2 + 2)))")"
        i=$((i + 1))
    done
    # shellcheck disable=SC2059
    printf "$octal" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

set_corrupt_bit() {
    put_be "$1" 72 8 $(($(be64 "$1" 72) | 2))
}

# 64 KiB clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2, 5 and 6 data.
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-io -c 'write -P 0x11 0 64k' -c 'write -P 0x22 128k 64k' base.qcow2 >/dev/null
refblock=$(be64 base.qcow2 $(be64 base.qcow2 48))
l2=$(($(be64 base.qcow2 $(be64 base.qcow2 40)) & 0xfffffffffffe00))

# Cluster 7: past the data, counted once, used by nothing.
cp base.qcow2 leak.qcow2
dd if=/dev/zero of=leak.qcow2 bs=65536 seek=7 count=1 conv=notrunc status=none
put_be leak.qcow2 $((refblock + 7 * 2)) 2 1

# The third L2 entry names cluster 5 as the first does: 5 is referenced twice, 6 not at all.
cp base.qcow2 double.qcow2
put_be double.qcow2 $((l2 + 2 * 8)) 1 0x80 # COPIED
put_be double.qcow2 $((l2 + 2 * 8 + 1)) 7 $((5 * 65536))

cp leak.qcow2 corrupt.qcow2
set_corrupt_bit corrupt.qcow2
cp double.qcow2 doublecorrupt.qcow2
set_corrupt_bit doublecorrupt.qcow2
cp base.qcow2 corruptclean.qcow2
set_corrupt_bit corruptclean.qcow2

# Lazy refcounts: the writer dies with the refcounts of its new clusters unwritten.
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 1M
qemu-io -c 'write 0 64k' -c 'write 128k 64k' -c abort dirty.qcow2 >/dev/null 2>&1
[ $(($(be64 dirty.qcow2 72) & 1)) -eq 1 ] || fail "qemu-io left dirty.qcow2 clean"

mkdir -p q i
for image in leak double corrupt doublecorrupt corruptclean dirty; do
    for repair in none leaks all; do
        for output in human json; do
            set --
            [ "$repair" = none ] || set -- -r "$repair"
            set -- "$@" --output="$output"
            what="check $* ($image)"
            cp "$image.qcow2" q/t.qcow2
            cp "$image.qcow2" i/t.qcow2
            (cd q && qemu-img check "$@" t.qcow2 >../qemu.out 2>../qemu.err)
            theirs=$?
            (cd i && "$IMGUTIL" check "$@" t.qcow2 >../imgutil.out 2>../imgutil.err)
            mine=$?
            [ "$mine" -eq "$theirs" ] ||
                fail "$what: exit status $mine, qemu-img $theirs (stderr: $(cat imgutil.err))"
            # A repair that changes a refcount together with the COPIED flags depending on it
            # writes new tables past the end and switches to them at once (crash safety),
            # where qemu-img rewrites them in place: the image may end later than qemu-img's.
            if [ "$repair" != none ]; then
                for out in imgutil.out qemu.out; do
                    grep -v 'Image end offset\|image-end-offset' "$out" >"$out.cut"
                    mv "$out.cut" "$out"
                done
            fi
            expect_same_output "$what: stdout" imgutil.out qemu.out
            # The findings; the closing message names the program and words the reason its way.
            grep -v '^qemu-img: ' qemu.err >qemu.findings
            grep -v '^imgutil: ' imgutil.err >imgutil.findings
            expect_same_output "$what: findings" imgutil.findings qemu.findings
            [ "$(grep -c 'Check failed' imgutil.err)" = "$(grep -c 'Check failed' qemu.err)" ] ||
                fail "$what: 'Check failed' in one stderr only: $(cat imgutil.err)"

            # The image afterwards: the same feature bits, and the same verdict from qemu-img.
            # Except one: after a failed repair of a dirty image qemu-img clears the dirty bit
            # on closing, leaving wrong refcounts unmarked; imgutil keeps it, so that the next
            # open repairs them.
            want=$(be64 q/t.qcow2 72)
            grep -q 'Check failed' qemu.err && [ "$image" = dirty ] && want=$((want | 1))
            [ "$(be64 i/t.qcow2 72)" = "$want" ] ||
                fail "$what: incompatible features $(be64 i/t.qcow2 72), expected $want"
            qemu-img check q/t.qcow2 >/dev/null 2>&1
            theirs=$?
            qemu-img check i/t.qcow2 >/dev/null 2>&1
            mine=$?
            [ "$mine" -eq "$theirs" ] ||
                fail "$what: qemu-img check afterwards exits $mine, $theirs on qemu-img's repair"
            qemu-img compare -q q/t.qcow2 i/t.qcow2 ||
                fail "$what: guest content differs from qemu-img's repair"
        done
    done
done

# Repaired, the image is usable again; unrepaired, a read-write open still refuses it.
cp corrupt.qcow2 t.qcow2
expect_status 0 check -r leaks t.qcow2
qemu-io -c 'write -P 0x33 64k 64k' t.qcow2 >/dev/null || fail "qemu-io cannot write the repaired image"
cp doublecorrupt.qcow2 t.qcow2
expect_status 2 check -r leaks t.qcow2
[ $(($(be64 t.qcow2 72) & 2)) -eq 2 ] || fail "corrupt bit cleared although corruptions remain"

finish
