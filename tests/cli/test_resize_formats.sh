#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# resize for every format both tools create: where qemu-img refuses ("Image format driver does
# not support resize"), imgutil refuses in the same words with the same status and leaves the
# image as it was; where qemu-img grows the image, imgutil does too, to the same size.
#
# usage: test_resize_formats.sh IMGUTIL   (exit 77 without qemu-img)

. "$(dirname "$0")/lib.sh"
enter_work_with_qemu

for fmt in qcow2 raw vmdk vpc vhdx vdi qed parallels; do
    qemu-img create -q -f "$fmt" "q.$fmt" 4M 2>/dev/null || continue
    "$IMGUTIL" create -q -f "$fmt" "i.$fmt" 4M || { fail "$fmt: imgutil create"; continue; }
    qemu-img resize -f "$fmt" "q.$fmt" 8M >"$WORK/qout" 2>"$WORK/qerr"
    qstatus=$?
    cp "i.$fmt" "i.before"
    run resize -f "$fmt" "i.$fmt" 8M
    [ "$STATUS" -eq "$qstatus" ] || fail "$fmt: resize exited $STATUS, qemu-img $qstatus ($(cat "$WORK/err"))"
    want=$(sed 's/^qemu-img: /imgutil: /' "$WORK/qerr")
    [ "$(cat "$WORK/err")" = "$want" ] || fail "$fmt: stderr '$(cat "$WORK/err")', qemu-img '$want'"
    if [ "$qstatus" -ne 0 ]; then
        # Compared as images: a read-write open may rewrite a header (VHDX, as QEMU does).
        qemu-img compare -f "$fmt" -F "$fmt" "i.$fmt" i.before >/dev/null 2>&1 ||
            fail "$fmt: a refused resize changed the image"
    else
        q=$(qemu-img info -f "$fmt" --output=json "q.$fmt" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
        i=$(qemu-img info -f "$fmt" --output=json "i.$fmt" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
        [ "$q" = "$i" ] || fail "$fmt: resized to $i bytes, qemu-img to $q"
    fi
done

finish
