#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# imgutil rebase next to qemu-img rebase, on identical copies of overlays qemu-img and qemu-io
# make at test time: the same exit status and stderr, the same bytes in the resulting image
# (hence the same backing fields in `qemu-img info` and the same `qemu-img map`), a guest view
# unchanged by a safe rebase (`qemu-img compare` with the untouched overlay), and a clean
# `qemu-img check`.
#
# usage: test_rebase_interop.sh IMGUTIL   (exit 77 without qemu-img)

. "$(dirname "$0")/../cli/lib.sh"
enter_work_with_qemu

M=1048576

# Old chain: A0 (raw) <- A (qcow2); the overlay adds data, a zero cluster and a discard.
qemu-img create -q -f raw A0.raw 4M
qemu-io -f raw -c "write -P 0x10 0 4M" A0.raw >/dev/null
qemu-img create -q -f qcow2 -b A0.raw -F raw A.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" -c "write -P 0x12 2M 512k" -c "write -z 3M 256k" \
    A.qcow2 >/dev/null
# New bases: B differs from A in chosen ranges (equal in others, zeros in some).
qemu-img create -q -f qcow2 B.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x11 0 512k" -c "write -P 0x12 2M 512k" -c "write -P 0x33 1M 512k" \
    -c "write -P 0x10 3584k 512k" B.qcow2 >/dev/null
qemu-img create -q -f qcow2 Bshort.qcow2 2M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" Bshort.qcow2 >/dev/null
qemu-img create -q -f qcow2 Blong.qcow2 8M
qemu-io -f qcow2 -c "write -P 0x10 0 8M" Blong.qcow2 >/dev/null
qemu-img create -q -f raw Braw.raw 4M
qemu-io -f raw -c "write -P 0x10 1M 2M" Braw.raw >/dev/null
# An old base shorter than the overlay, and a new one with data past its end.
qemu-img create -q -f qcow2 Ashort.qcow2 2M
qemu-io -f qcow2 -c "write -P 0x21 0 2M" Ashort.qcow2 >/dev/null

qemu-img create -q -f qcow2 -b A.qcow2 -F qcow2 O.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x44 256k 64k" -c "write -z 1536k 64k" -c "discard 2M 64k" \
    -c "write -P 0x45 3900k 4k" O.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b Ashort.qcow2 -F qcow2 Oshort.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x46 64k 64k" Oshort.qcow2 >/dev/null
qemu-img create -q -f qed -b A.qcow2 -F qcow2 O.qed 4M
qemu-io -f qed -c "write -P 0x47 128k 64k" -c "write -P 0x48 3M 4k" O.qed >/dev/null

# quote ARG: ARG as one shell word, for eval.
quote() {
    printf "'%s' " "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# same_as_qemu START EXT ARGS...: rebases copies of START (q.EXT, i.EXT, beside START) with
# both tools and compares what they did. ARGS name the image as IMG. qcow2 and qed images
# must come out byte for byte the same (others rewrite header GUIDs on every open).
same_as_qemu() {
    start=$1 ext=$2
    shift 2
    dir=$(dirname "$start")
    q="$dir/q.$ext" i="$dir/i.$ext"
    cp "$start" "$q"
    cp "$start" "$i"
    qargs="" iargs=""
    for a in "$@"; do
        if [ "$a" = IMG ]; then
            qargs="$qargs$(quote "$q")"
            iargs="$iargs$(quote "$i")"
        else
            qargs="$qargs$(quote "$a")"
            iargs="$iargs$(quote "$a")"
        fi
    done
    eval "qemu-img rebase $qargs" >"$WORK/qout" 2>"$WORK/qerr"
    QSTATUS=$?
    eval "run rebase $iargs"
    what="rebase $* ($start)"
    [ "$STATUS" -eq "$QSTATUS" ] || fail "$what: exit $STATUS, qemu-img $QSTATUS"
    sed "s/qemu-img/imgutil/g; s#$q#IMG#g" "$WORK/qerr" >"$WORK/want"
    sed "s#$i#IMG#g" "$WORK/err" >"$WORK/got"
    cmp -s "$WORK/want" "$WORK/got" || fail "$what: stderr '$(cat "$WORK/got")', qemu-img '$(cat "$WORK/want")'"
    case "$ext" in
    qcow2 | qed) cmp -s "$q" "$i" || fail "$what: the image differs from qemu-img's" ;;
    *) qemu-img compare -q -f "$ext" -F "$ext" "$q" "$i" || fail "$what: the guest view differs from qemu-img's" ;;
    esac
    qemu-img info -f "$ext" "$q" | grep backing | sed "s#$q#IMG#g" >"$WORK/qinfo"
    qemu-img info -f "$ext" "$i" | grep backing | sed "s#$i#IMG#g" >"$WORK/iinfo"
    expect_same_output "$what: info backing fields" "$WORK/iinfo" "$WORK/qinfo"
    # Where the new chain opens: a clean check and qemu-img's map.
    if [ "$QSTATUS" -eq 0 ] && qemu-img info --backing-chain "$i" >/dev/null 2>&1; then
        qemu-img check -q -f "$ext" "$i" || fail "$what: qemu-img check"
        qemu-img map -f "$ext" --output=json "$q" >"$WORK/qmap" 2>&1
        qemu-img map -f "$ext" --output=json "$i" >"$WORK/imap" 2>&1
        expect_same_output "$what: map" "$WORK/imap" "$WORK/qmap"
    fi
}

# guest_view_kept START EXT: the rebased copy i.EXT reads as START did.
guest_view_kept() {
    qemu-img compare -q -f "$2" -F "$2" "$(dirname "$1")/i.$2" "$1" ||
        fail "$1 ($2): the guest view changed"
}

# Safe mode: onto a base that differs in places, shorter, longer, raw; a relative name.
for new in B.qcow2:qcow2 Bshort.qcow2:qcow2 Blong.qcow2:qcow2 Braw.raw:raw A.qcow2:qcow2; do
    same_as_qemu O.qcow2 qcow2 -b "${new%%:*}" -F "${new##*:}" IMG
    guest_view_kept O.qcow2 qcow2
done
same_as_qemu Oshort.qcow2 qcow2 -b B.qcow2 -F qcow2 IMG
guest_view_kept Oshort.qcow2 qcow2
same_as_qemu Oshort.qcow2 qcow2 -b Blong.qcow2 -F qcow2 IMG
guest_view_kept Oshort.qcow2 qcow2
# An image without a backing file reads zeros where the new one has data: zeros are written.
qemu-img create -q -f qcow2 alone.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x4c 0 64k" alone.qcow2 >/dev/null
same_as_qemu alone.qcow2 qcow2 -b B.qcow2 -F qcow2 IMG
guest_view_kept alone.qcow2 qcow2
# Onto an image deeper in the old chain (its own base's base).
same_as_qemu O.qcow2 qcow2 -b A0.raw -F raw IMG
guest_view_kept O.qcow2 qcow2
# Version 2 headers (no feature table) and 512-byte clusters (copies of partial clusters).
qemu-img create -q -f qcow2 -o compat=0.10 -b A.qcow2 -F qcow2 Ov2.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x4a 1M 4k" Ov2.qcow2 >/dev/null
same_as_qemu Ov2.qcow2 qcow2 -b B.qcow2 -F qcow2 IMG
guest_view_kept Ov2.qcow2 qcow2
same_as_qemu Ov2.qcow2 qcow2 -u -b Blong.qcow2 -F qcow2 IMG
qemu-img create -q -f qcow2 -o cluster_size=512 -b A.qcow2 -F qcow2 O512.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x4b 1000k 3k" O512.qcow2 >/dev/null
same_as_qemu O512.qcow2 qcow2 -b B.qcow2 -F qcow2 IMG
guest_view_kept O512.qcow2 qcow2
# Detaching copies the whole old view the overlay does not hold.
same_as_qemu O.qcow2 qcow2 -b "" IMG
guest_view_kept O.qcow2 qcow2
qemu-img info i.qcow2 | grep -q backing && fail "-b '': still names a backing file"
# -p draws qemu-img's progress line on stdout, as qemu-img does.
cp O.qcow2 i.qcow2
run rebase -p -b B.qcow2 -F qcow2 i.qcow2
[ "$STATUS" -eq 0 ] || fail "-p: exit $STATUS"
expect_out "(100.00/100%)"
same_as_qemu O.qcow2 qcow2 -q -U -t none -T writeback -b B.qcow2 -F qcow2 IMG
# A relative name is recorded as given and resolved from the overlay's folder.
mkdir -p sub
qemu-img create -q -f qcow2 -b ../A.qcow2 -F qcow2 sub/O.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x49 0 64k" sub/O.qcow2 >/dev/null
same_as_qemu sub/O.qcow2 qcow2 -b ../B.qcow2 -F qcow2 IMG
guest_view_kept sub/O.qcow2 qcow2

# Unsafe mode: the reference alone.
same_as_qemu O.qcow2 qcow2 -u -b B.qcow2 -F qcow2 IMG
same_as_qemu O.qcow2 qcow2 -u -b nonexistent.qcow2 -F qcow2 IMG
same_as_qemu O.qcow2 qcow2 -u -b "" IMG
same_as_qemu O.qcow2 qcow2 -u IMG
same_as_qemu O.qcow2 qcow2 -u -b Braw.raw -F raw IMG

# QED: the raw-backing feature follows -F.
same_as_qemu O.qed qed -b B.qcow2 -F qcow2 IMG
guest_view_kept O.qed qed
same_as_qemu O.qed qed -b "" IMG
guest_view_kept O.qed qed
same_as_qemu O.qed qed -u -b Braw.raw -F raw IMG
same_as_qemu O.qed qed -u -b "" IMG

# Refusals, in qemu-img's words and order.
same_as_qemu O.qcow2 qcow2 IMG
same_as_qemu O.qcow2 qcow2 -b B.qcow2 -F qcow2 IMG extra
same_as_qemu O.qcow2 qcow2 -b
same_as_qemu O.qcow2 qcow2 -k IMG
same_as_qemu O.qcow2 qcow2 -t bogus -b B.qcow2 IMG
same_as_qemu O.qcow2 qcow2 -T bogus -b B.qcow2 IMG
same_as_qemu O.qcow2 qcow2 -b B.qcow2 -F nosuchformat IMG
same_as_qemu O.qcow2 qcow2 -u -b B.qcow2 IMG
# The new backing file must open in safe mode (the reason after the colon is the library's).
cp O.qcow2 i.qcow2
run rebase -b missing.qcow2 -F qcow2 i.qcow2
[ "$STATUS" -eq 1 ] || fail "missing new backing file: exit $STATUS"
expect_err "imgutil: Could not open new backing file 'missing.qcow2': "
cmp -s O.qcow2 i.qcow2 || fail "missing new backing file: the image changed"
# Without -F qemu-img copies, then refuses the switch; imgutil refuses before it copies.
cp O.qcow2 i.qcow2
run rebase -b B.qcow2 i.qcow2
[ "$STATUS" -eq 1 ] || fail "no -F: exit $STATUS"
expect_err "imgutil: Could not change the backing file to 'B.qcow2': backing format must be specified"
guest_view_kept O.qcow2 qcow2
# A name that does not fit in a 512-byte header cluster.
qemu-img create -q -f qcow2 -o cluster_size=512 -b A.qcow2 -F qcow2 small.qcow2 4M
same_as_qemu small.qcow2 qcow2 -u -b "$(printf 'd%.0s' $(seq 1 450))" -F qcow2 IMG
same_as_qemu small.qcow2 qcow2 -u -b "$(printf 'd%.0s' $(seq 1 300))" -F qcow2 IMG
# Formats QEMU 7.2 cannot rebase.
for fmt in vmdk vpc vhdx vdi parallels; do
    qemu-img create -q -f "$fmt" "o.$fmt" 4M 2>/dev/null || continue
    same_as_qemu "o.$fmt" "$fmt" -u -b B.qcow2 -F qcow2 IMG
    same_as_qemu "o.$fmt" "$fmt" -u -b "" IMG
    same_as_qemu "o.$fmt" "$fmt" -u IMG
done
qemu-img create -q -f vmdk base.vmdk 4M
qemu-img create -q -f vmdk -b base.vmdk -F vmdk ov.vmdk 4M
cp ov.vmdk i.vmdk
run rebase -b B.qcow2 -F qcow2 i.vmdk
[ "$STATUS" -eq 1 ] || fail "vmdk: exit $STATUS"
expect_err "imgutil: Could not change the backing file to 'B.qcow2': Operation not supported"
cmp -s ov.vmdk i.vmdk || fail "vmdk: a refused rebase changed the image"

finish
