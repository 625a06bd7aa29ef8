#!/usr/bin/env bash
# Regenerates the seed corpus: small valid images of each variant (made with qemu-img and
# qemu-io) and damaged copies of them. The result is committed; run this only to refresh it.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p "$out"

q() { qemu-img "$@" >/dev/null; }
io() { local f=$1; shift; qemu-io -f qcow2 "$@" "$f" >/dev/null; }

q create -f qcow2 -o cluster_size=512 v3-512.qcow2 64k
io v3-512.qcow2 -c 'write -P 0x11 0 3k' -c 'write -z 8k 1k' -c 'write -P 0x22 60k 4k'
q create -f qcow2 -o cluster_size=512,compat=0.10 v2-512.qcow2 32k
io v2-512.qcow2 -c 'write -P 0x33 512 2k'
q create -f qcow2 -o cluster_size=4096,refcount_bits=1 rc1.qcow2 64k
io rc1.qcow2 -c 'write -P 0x44 0 8k'
q create -f qcow2 -o cluster_size=4096,refcount_bits=64 rc64.qcow2 64k
io rc64.qcow2 -c 'write -P 0x45 4k 8k'
q create -f qcow2 -o cluster_size=16384,extended_l2=on ext.qcow2 128k
io ext.qcow2 -c 'write -P 0x55 512 1k' -c 'write -z 4k 1k'
dd if=/dev/urandom of=src.raw bs=4k count=8 status=none
printf 'hello hello hello hello' | dd of=src.raw conv=notrunc status=none
q convert -c -O qcow2 -o cluster_size=4096 src.raw zlib.qcow2
q convert -c -O qcow2 -o cluster_size=4096,compression_type=zstd src.raw zstd.qcow2
q create -f qcow2 -o cluster_size=4096 snap.qcow2 32k
io snap.qcow2 -c 'write -P 0x66 0 4k'
q snapshot -c first snap.qcow2
io snap.qcow2 -c 'write -P 0x67 0 4k'
q create -f qcow2 -o cluster_size=4096 -b v3-512.qcow2 -F qcow2 overlay.qcow2
q create -f qcow2 -o cluster_size=4096,preallocation=metadata prealloc.qcow2 32k
q create -f qcow2 -o cluster_size=4096 bitmap.qcow2 32k
q bitmap --add bitmap.qcow2 b0
# Bitmaps holding bits (tables naming data clusters), enabled and disabled, for the writers.
q create -f qcow2 -o cluster_size=4096 bitmap-bits.qcow2 32k
q bitmap --add -g 512 bitmap-bits.qcow2 fine
q bitmap --add --disable bitmap-bits.qcow2 off
io bitmap-bits.qcow2 -c 'write -P 0x77 1k 2k' -c 'write -P 0x78 20k 4k'
q create -f qcow2 -o cluster_size=4096,data_file=data.bin datafile.qcow2 32k
q create -f qcow2 -o cluster_size=4096,lazy_refcounts=on lazy.qcow2 32k
printf '\xeb\x63\x90 a boot sector' > mbr.raw

for f in *.qcow2 mbr.raw; do cp "$f" "$out/$f"; done
# Damaged copies: truncated, and header fields set to absurd values.
python3 - "$out" <<'PY'
import struct, sys, os
out = sys.argv[1]
base = open(os.path.join(out, "v3-512.qcow2"), "rb").read()
def save(name, data):
    open(os.path.join(out, name), "wb").write(data)
for cut in (0, 4, 50, 71, 104, 700):
    save(f"trunc-{cut}.qcow2", base[:cut])
def patched(fmt, off, val):
    b = bytearray(base); struct.pack_into(fmt, b, off, val); return bytes(b)
save("bad-cluster-bits.qcow2", patched(">I", 20, 40))
save("bad-l1-size.qcow2", patched(">I", 36, 0x7fffffff))
save("bad-l1-offset.qcow2", patched(">Q", 40, 1 << 60))
save("bad-refcount-offset.qcow2", patched(">Q", 48, 1 << 61))
save("bad-refcount-clusters.qcow2", patched(">I", 56, 0xffffffff))
save("bad-size.qcow2", patched(">Q", 24, 1 << 62))
save("bad-snapshots.qcow2", patched(">I", 60, 100000))
save("bad-incompat.qcow2", patched(">Q", 72, 1 << 40))
save("bad-header-length.qcow2", patched(">I", 100, 0xffff))
save("bad-backing.qcow2", patched(">Q", 8, 100) [:16] + struct.pack(">I", 5000) + base[20:])
PY
ls "$out" | wc -l
