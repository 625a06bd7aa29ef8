#!/usr/bin/env bash
# Regenerates the seed corpus of fuzz_vdi (tests/fuzz/corpus/fuzz_vdi): small images made
# with qemu-img and qemu-io, cut to a few KiB (bytes past the end read as zeros), and damaged
# copies. The result is committed; run this only to refresh it.
set -euo pipefail
out=$(cd "$(dirname "$0")/../../fuzz" && pwd)/corpus/fuzz_vdi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p "$out"
qemu-img create -q -f vdi empty.vdi 4M
qemu-img create -q -f vdi -o static=on static.vdi 3000000
qemu-img create -q -f vdi data.vdi 8M
qemu-io -f vdi -c 'write -P 0x11 0 3k' -c 'write -P 0x22 5M 1k' data.vdi >/dev/null
python3 - "$out" <<'PY'
import os, struct, sys
out = sys.argv[1]
def save(name, data):
    open(os.path.join(out, name), 'wb').write(data)
empty = open('empty.vdi', 'rb').read()
save('empty.vdi', empty)
save('static.vdi', open('static.vdi', 'rb').read()[:4096])
data = open('data.vdi', 'rb').read()
save('data.vdi', data[:0x400 + 4096])
def patched(base, fmt, off, val):
    b = bytearray(base); struct.pack_into(fmt, b, off, val); return bytes(b)
for cut in (0, 100, 511, 600):
    save('trunc-%d.vdi' % cut, data[:cut])
save('bad-block-size.vdi', patched(empty, '<I', 0x178, 1 << 31))
save('bad-blocks.vdi', patched(patched(empty, '<I', 0x180, 0x1fffff80), '<Q', 0x170, 1 << 40))
save('bad-disk-size.vdi', patched(empty, '<Q', 0x170, 1 << 62))
save('bad-bmap-offset.vdi', patched(empty, '<I', 0x154, 0xfffffe00))
save('bad-data-offset.vdi', patched(data[:0x400 + 4096], '<I', 0x158, 0xfffffe00))
save('bad-entries.vdi', patched(patched(data[:0x400 + 4096], '<I', 0x204, 0), '<I', 0x208, 0xfffffff0))
save('bad-allocated.vdi', patched(data[:0x400 + 4096], '<I', 0x184, 0xffffffff))
save('odd-size.vdi', patched(data[:0x400 + 4096], '<Q', 0x170, 8 * 1048576 - 77))
PY
