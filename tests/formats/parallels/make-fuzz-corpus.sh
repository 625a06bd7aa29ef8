#!/usr/bin/env bash
# Regenerates the seed corpus of fuzz_parallels (tests/fuzz/corpus/fuzz_parallels): small
# valid images of each variant (qemu-img and qemu-io make them) and damaged copies. The
# result is committed; run this only to refresh it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/../../fuzz/corpus/fuzz_parallels
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p "$out"

q() { qemu-img "$@" >/dev/null; }
io() { local f=$1; shift; qemu-io -f parallels "$@" "$f" >/dev/null; }
# field OFFSET FORMAT VALUE FILE: overwrites one little-endian header field.
field() { python3 -c 'import struct,sys; f=open(sys.argv[4],"r+b"); f.seek(int(sys.argv[1],0)); f.write(struct.pack("<"+sys.argv[2], int(sys.argv[3],0)))' "$@"; }

q create -f parallels -o cluster_size=512 c512.prl 32k
io c512.prl -c 'write -P 0x11 0 3k' -c 'write -P 0x22 20k 1k'
q create -f parallels -o cluster_size=4096 c4k.prl 64k
io c4k.prl -c 'write -P 0x33 4k 8k'
cp c4k.prl v1.prl
printf 'WithoutFreeSpace' | dd of=v1.prl conv=notrunc status=none
python3 - v1.prl <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(0x20); n = struct.unpack('<I', f.read(4))[0]
    f.seek(64); bat = struct.unpack('<%dI' % n, f.read(4 * n))
    f.seek(64); f.write(struct.pack('<%dI' % n, *[e * 8 for e in bat]))
PY
cp c4k.prl inuse.prl && field 0x2c I 0x746f6e59 inuse.prl
cp c4k.prl ext.prl && python3 "$here/craft_ext.py" ext.prl
cp c4k.prl bad-tracks.prl && field 0x1c I 0 bad-tracks.prl
cp c4k.prl big-tracks.prl && field 0x1c I 0x7fffffff big-tracks.prl
cp c4k.prl bat-overflow.prl && field 0x20 I 0x7fffffff bat-overflow.prl
cp c4k.prl bat-past-end.prl && field 0x20 I 100000 bat-past-end.prl
cp c4k.prl bad-size.prl && field 0x24 Q 0xffffffffffffff00 bad-size.prl
cp c4k.prl far-cluster.prl && field 0x44 I 0xffffffff far-cluster.prl
cp c4k.prl bad-ext-off.prl && field 0x38 Q 1 bad-ext-off.prl
head -c 40 c4k.prl > trunc-40.prl
printf '<?xml version="1.0"?>\n<Parallels_disk_image><StorageData><Storage><Image><GUID>{1}</GUID><File>c4k.prl</File></Image></Storage></StorageData></Parallels_disk_image>\n' > DiskDescriptor.xml

for f in *.prl DiskDescriptor.xml; do cp "$f" "$out/$f"; done
