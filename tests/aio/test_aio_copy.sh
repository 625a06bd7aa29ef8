#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# examples/aio_copy against `qemu-img convert -O raw`: images made by qemu-img and qemu-io
# (qcow2 with data, zeros and a backing file; compressed qcow2; an odd-sized raw file) copied
# with 1 and with 16 requests in flight must read back byte for byte as qemu-img's copy.
#
# usage: test_aio_copy.sh AIO_COPY
set -eu
aio_copy=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
for tool in qemu-img qemu-io cmp; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not found"
        exit 77
    fi
done
dir=$(mktemp -d "${TMPDIR:-/tmp}/imgutil-aio-copy-XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"

qemu-img create -q -f raw base.raw 5M
qemu-io -f raw -c 'write -P 0x11 0 3M' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 7M
qemu-io -f qcow2 -c 'write -P 0x22 1M 64k' -c 'write -z 2M 512k' -c 'write -P 0x33 6M 12345' \
    top.qcow2 >/dev/null
qemu-img convert -q -c -f qcow2 -O qcow2 top.qcow2 compressed.qcow2
qemu-img create -q -f raw odd.raw 3000001
qemu-io -f raw -c 'write -P 0x44 2999000 1001' -c 'write -P 0x55 0 1' odd.raw >/dev/null

for image in top.qcow2 compressed.qcow2 odd.raw; do
    qemu-img convert -q -O raw "$image" expected.raw
    for n in 1 16; do
        "$aio_copy" -n "$n" "$image" copy.raw
        if ! cmp expected.raw copy.raw; then
            echo "FAIL: aio_copy -n $n $image differs from qemu-img convert -O raw"
            exit 1
        fi
    done
    echo "ok: $image"
done
# A failure is reported with a non-zero exit status.
if "$aio_copy" missing.qcow2 copy.raw 2>/dev/null; then
    echo "FAIL: aio_copy of a missing image succeeded"
    exit 1
fi
