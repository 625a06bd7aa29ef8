#!/usr/bin/env bash
# Regenerates the seed corpus of fuzz_qed (tests/fuzz/corpus/fuzz_qed): small images made with
# qemu-img and qemu-io (4 KiB clusters, two-cluster tables) and damaged copies. The result is
# committed; run this only to refresh it.
set -euo pipefail
out=$(cd "$(dirname "$0")/../../fuzz" && pwd)/corpus/fuzz_qed
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p "$out"
o=cluster_size=4096,table_size=2
qemu-img create -q -f qed -o $o empty.qed 1M
qemu-img create -q -f qed -o $o data.qed 2M
qemu-io -f qed -c 'write -P 0x11 0 3k' -c 'write -z 64k 8k' -c 'write -P 0x22 1M 4k' data.qed >/dev/null
qemu-img create -q -f raw base.raw 1M
qemu-img create -q -f qed -o $o -b base.raw -F raw overlay.qed 2M
qemu-io -f qed -c 'write -P 0x33 512 1k' overlay.qed >/dev/null
python3 - "$out" <<'PY'
import os, struct, sys
out = sys.argv[1]
def save(name, data):
    open(os.path.join(out, name), 'wb').write(data)
data = open('data.qed', 'rb').read()
empty = open('empty.qed', 'rb').read()
for name in ('empty.qed', 'data.qed', 'overlay.qed'):
    save(name, open(name, 'rb').read())
for cut in (0, 40, 64, 5000):
    save('trunc-%d.qed' % cut, data[:cut])
def patched(base, fmt, off, val):
    b = bytearray(base); struct.pack_into(fmt, b, off, val); return bytes(b)
save('bad-cluster-size.qed', patched(empty, '<I', 4, 1 << 30))
save('bad-table-size.qed', patched(empty, '<I', 8, 1 << 20))
save('bad-header-size.qed', patched(empty, '<I', 12, 0xffffffff))
save('bad-features.qed', patched(empty, '<Q', 16, 0xff))
save('need-check.qed', patched(data, '<Q', 16, 2))
save('bad-l1-offset.qed', patched(empty, '<Q', 40, 1 << 62))
save('bad-image-size.qed', patched(empty, '<Q', 48, (1 << 63) - 512))
save('bad-backing-name.qed', patched(patched(empty, '<Q', 16, 1), '<I', 56, 0xfffffff0))
l2 = struct.unpack_from('<Q', data, 4096)[0]
save('bad-l1-entry.qed', patched(data, '<Q', 4096, 1 << 50))
save('bad-l2-entry.qed', patched(data, '<Q', l2 + 8, 0x12345))
save('dup-l2-entry.qed', patched(data, '<Q', l2 + 8 * 300, struct.unpack_from('<Q', data, l2)[0]))
PY
