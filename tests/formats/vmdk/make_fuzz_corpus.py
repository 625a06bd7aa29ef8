#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the VMDK seeds of the fuzz corpus (tests/fuzz/corpus/vmdk-*): small hand-made
images with 512-byte grains (a hosted sparse one, with zeroed grains, a streamOptimized one
with compressed grains and markers, one with its header in a footer, a COWD one, a
descriptor), and damaged copies. The result is committed; run this only to refresh it.

usage: make_fuzz_corpus.py [OUTPUT_FOLDER]
"""

import os
import struct
import sys
import zlib

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'fuzz', 'corpus')
DESC = (b'# Disk DescriptorFile\nversion=1\nCID=abcd\nparentCID=ffffffff\n'
        b'createType="monolithicSparse"\n\n# Extent description\nRW 64 SPARSE "x.vmdk"\n')


def header(version=1, flags=3, capacity=64, granularity=1, desc_offset=1, desc_size=2, gtes=16,
           rgd=3, gd=8, grain_offset=16, compress=0):
    h = b'KDMV' + struct.pack('<IIQQQQIQQQ', version, flags, capacity, granularity, desc_offset,
                              desc_size, gtes, rgd, gd, grain_offset)
    h += b'\0' + b'\n \r\n' + struct.pack('<H', compress)
    return h + bytes(512 - len(h))


def sparse(zero_grain=False, **kw):
    """64 sectors, 512-byte grains, 16-entry tables: four tables after each directory."""
    flags = 3 | (4 if zero_grain else 0)
    img = bytearray(16 * 512)
    img[0:512] = header(flags=flags, version=2 if zero_grain else 1, **kw)
    img[512:512 + len(DESC)] = DESC
    for gd in (3, 8):
        for i in range(4):
            struct.pack_into('<I', img, gd * 512 + 4 * i, gd + 1 + i)
    grains = {0: b'\x11', 5: b'\x22', 17: b'\x33', 63: b'\x44'}
    for n, (guest, byte) in enumerate(sorted(grains.items())):
        sector = 16 + n
        for gd in (3, 8):
            struct.pack_into('<I', img, (gd + 1 + guest // 16) * 512 + 4 * (guest % 16), sector)
        img += byte * 512
    if zero_grain:
        struct.pack_into('<I', img, (8 + 1) * 512 + 4 * 2, 1)
    return bytes(img)


def stream(footer=False):
    """streamOptimized: markers, zlib grains; with `footer`, the header says "at end"."""
    img = bytearray(16 * 512)
    flags = 3 | (1 << 16) | (1 << 17)
    img[0:512] = header(version=3, flags=flags, compress=1,
                        gd=(1 << 64) - 1 if footer else 8)
    desc = DESC.replace(b'monolithicSparse', b'streamOptimized')
    img[512:512 + len(desc)] = desc
    for i in range(4):
        struct.pack_into('<I', img, 8 * 512 + 4 * i, 9 + i)
    for guest, byte in ((1, 0x55), (20, 0x66)):
        data = zlib.compress(bytes([byte]) * 512)
        sector = len(img) // 512
        rec = struct.pack('<QI', guest, len(data)) + data
        img += rec + bytes(-len(rec) % 512)
        struct.pack_into('<I', img, (9 + guest // 16) * 512 + 4 * (guest % 16), sector)
    if footer:
        img += struct.pack('<QII', 0, 0, 3) + bytes(496)
        img += header(version=3, flags=flags, compress=1, gd=8)
        img += bytes(512)  # end-of-stream marker
    return bytes(img)


def cowd():
    h = b'COWD' + struct.pack('<IIIIIII', 1, 3, 64, 1, 4, 1, 64)
    img = bytearray(h + bytes(5 * 512 - len(h)))
    img[512:512 + len(DESC)] = DESC
    struct.pack_into('<I', img, 4 * 512, 5)
    img += bytes(4096 * 4)
    struct.pack_into('<I', img, 5 * 512 + 4 * 3, len(img) // 512)
    img += b'\x77' * 512
    return bytes(img)


def sesparse():
    """An seSparse extent of 1 MiB: 4 KiB grains, one 4096-entry table, grains 0 and 5."""
    const = struct.pack('<26Q', 0xcafebabe, 0x0000000200000001, 2048, 8, 64, 0, 0, 0, 0, 0,
                        1, 1, 0, 0, 0, 0, 2, 1, 3, 64, 0, 0, 0, 0, 67, 16)
    img = bytearray(const + bytes(512 - len(const)))
    img += struct.pack('<4Q', 0xcafecafe, 1, 1, 0) + bytes(480)
    img += struct.pack('<Q', 0x1000000000000000) + bytes(504)
    table = bytearray(64 * 512)
    for n, guest in enumerate((0, 5)):
        struct.pack_into('<Q', table, 8 * guest, 0x3000000000000000 | (n << 48))
    struct.pack_into('<Q', table, 8 * 9, 0x2000000000000000)  # a zeroed grain
    img += table
    img += b'\x81' * 4096 + b'\x82' * 4096
    return bytes(img)


SESPARSE_DESC = (b'# Disk DescriptorFile\nversion=1\nCID=abcd\nparentCID=ffffffff\n'
                 b'createType="seSparse"\n\n# Extent description\n'
                 b'RW 2048 SESPARSE "vmdk-sesparse-extent.vmdk"\n')


def save(name, data):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    base = sparse()
    save('vmdk-sparse.vmdk', base)
    save('vmdk-zeroed-grain.vmdk', sparse(zero_grain=True))
    save('vmdk-stream.vmdk', stream())
    save('vmdk-stream-footer.vmdk', stream(footer=True))
    save('vmdk-cowd.vmdk', cowd())
    save('vmdk-sesparse-extent.vmdk', sesparse())
    save('vmdk-sesparse.vmdk', SESPARSE_DESC)
    save('vmdk-descriptor.vmdk', DESC.replace(b'monolithicSparse', b'monolithicFlat').replace(
        b'SPARSE "x.vmdk"', b'FLAT "x-flat.vmdk" 0'))
    for cut in (4, 100, 600, 4200):
        save('vmdk-trunc-%d.vmdk' % cut, base[:cut])
    # Header fields set to absurd values: offsets into the 512-byte header.
    for name, off, fmt, val in (('gtes', 44, '<I', 1 << 20), ('granularity', 20, '<Q', 1 << 40),
                                ('capacity', 12, '<Q', 1 << 62), ('gd', 56, '<Q', 1 << 40),
                                ('version', 4, '<I', 9), ('grain-offset', 64, '<Q', 1 << 50)):
        data = bytearray(base)
        struct.pack_into(fmt, data, off, val)
        save('vmdk-bad-%s.vmdk' % name, bytes(data))
    data = bytearray(base)
    struct.pack_into('<I', data, 9 * 512, 0xfffffff0)  # a grain past the end
    save('vmdk-bad-grain.vmdk', bytes(data))
    data = bytearray(stream())
    struct.pack_into('<I', data, 16 * 512 + 8, 1 << 30)  # an absurd compressed length
    save('vmdk-bad-marker.vmdk', bytes(data))


if __name__ == '__main__':
    main()
