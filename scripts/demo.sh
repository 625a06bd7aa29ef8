#!/usr/bin/env bash
# The demo: create, fill, convert, check and inspect real images with imgutil, and cross-check
# every result with qemu-img where it is installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
imgutil="$build/tools/imgutil"
work=$(mktemp -d /tmp/imgutil-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a 64 MiB raw disk with data in a few places"
python3 - <<'PY'
import os
with open("data.raw", "wb") as f:
    f.truncate(64 << 20)
    for off in (0, 5 << 20, 33 << 20 | 4096, (64 << 20) - (256 << 10)):
        f.seek(off)
        f.write(os.urandom(65536) + b"libimgutil demo " * 4096)
PY
run "$imgutil" info data.raw

step "create a qcow2 image and fill it by converting the raw disk"
run "$imgutil" create -f qcow2 empty.qcow2 1G
run "$imgutil" convert -p -O qcow2 data.raw disk.qcow2
run "$imgutil" convert -c -O qcow2 -o compression_type=zstd data.raw compressed.qcow2
run "$imgutil" info disk.qcow2
run "$imgutil" check disk.qcow2

step "an overlay on top, a snapshot, a resize"
run "$imgutil" create -f qcow2 -b disk.qcow2 -F qcow2 overlay.qcow2
run "$imgutil" snapshot -c before-resize overlay.qcow2
run "$imgutil" resize overlay.qcow2 +64M
run "$imgutil" snapshot -l overlay.qcow2
run "$imgutil" info --backing-chain --output=json overlay.qcow2 | head -30
run "$imgutil" map disk.qcow2
run "$imgutil" map --output=json compressed.qcow2 | head -3

step "the disk in the formats other hypervisors take: VMDK (an OVA's), VHDX, VHD, VDI, Apple's ASIF"
run "$imgutil" convert -O vmdk -o subformat=streamOptimized disk.qcow2 disk.vmdk
run "$imgutil" convert -O vhdx disk.qcow2 disk.vhdx
run "$imgutil" convert -O vpc -o subformat=fixed disk.qcow2 disk.vhd
run "$imgutil" convert -O vdi disk.qcow2 disk.vdi
run "$imgutil" convert -O asif disk.qcow2 disk.asif
run "$imgutil" info disk.vhdx
for f in disk.vmdk disk.vhdx disk.vdi disk.asif; do
    "$imgutil" convert -O raw "$f" back.raw && cmp back.raw data.raw && echo "$f reads back byte-identical"
done
# VHD rounds the size up to a disk geometry: the disk's bytes, then zeros.
"$imgutil" convert -f vpc -O raw disk.vhd back.raw && cmp -n "$(stat -c %s data.raw)" back.raw data.raw &&
    echo "disk.vhd reads back byte-identical ($(stat -c %s back.raw) bytes: the geometry's)"

step "convert everything back to raw and compare"
run "$imgutil" convert -O raw disk.qcow2 disk.raw
run "$imgutil" convert -O raw compressed.qcow2 compressed.raw
cmp disk.raw data.raw && cmp compressed.raw data.raw && echo "round trips are byte-identical"
du -h --apparent-size data.raw; du -h disk.raw

if command -v qemu-img >/dev/null; then
    step "cross-check with qemu-img"
    for f in empty.qcow2 disk.qcow2 compressed.qcow2 overlay.qcow2; do
        run qemu-img check -q "$f" && echo "$f: qemu-img check: no errors"
    done
    run qemu-img compare -f raw -F qcow2 data.raw disk.qcow2
    run qemu-img compare -f raw -F qcow2 data.raw compressed.qcow2
    run qemu-img snapshot -l overlay.qcow2
    for f in disk.vmdk disk.vhdx disk.vdi; do
        run qemu-img compare -f raw data.raw "$f"
    done
    run qemu-img compare -f raw -F vpc data.raw disk.vhd
else
    echo "(qemu-img not installed: skipping the cross-check)"
fi
step "demo finished"
