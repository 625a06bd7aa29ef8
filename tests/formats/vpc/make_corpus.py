#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Regenerates the seed corpus of fuzz_vpc (tests/fuzz/corpus/fuzz_vpc): small valid VHD
images of each kind (small blocks keep them a few KiB) and damaged copies. The result is
committed; run this only to refresh it."""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vhd  # noqa: E402

OUT = os.path.join(HERE, '..', '..', 'fuzz', 'corpus', 'fuzz_vpc')
KIB = 1024


def save(name, data):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(bytes(data))


def main():
    os.makedirs(OUT, exist_ok=True)
    block = 4096
    data = bytes(range(256)) * 16
    bitmap = b'\xa0' + bytes(511)
    dyn = vhd.sparse(64 * KIB, {0: (None, data), 3: (bitmap, data[::-1])}, block_size=block,
                     chs=(2, 4, 16))
    save('dynamic.vhd', dyn)
    save('dynamic-win.vhd', vhd.sparse(16 * KIB, {1: (None, data)}, block_size=block,
                                       creator=b'win '))
    save('differencing.vhd', vhd.sparse(
        64 * KIB, {2: (bitmap, data)}, block_size=block, disk_type=4,
        locator_data=[(b'W2ru', '.\\parent.vhd'.encode('utf-16-le')),
                      (b'MacX', b'file://localhost/tmp/parent.vhd')]))
    fixed = bytearray(data * 2) + vhd.footer(8 * KIB, 2, chs=(1, 4, 4), data_offset=2**64 - 1)
    save('fixed.vhd', fixed)
    save('trunc-dynamic.vhd', dyn[:len(dyn) - 1536])
    save('trunc-header.vhd', dyn[:700])

    def patched(name, at, fmt, value, refresh):
        img = bytearray(dyn)
        struct.pack_into(fmt, img, at, value)
        if refresh == 'header':
            vhd.refresh(img, 512, 1024, 36)
        elif refresh == 'footer':
            vhd.refresh(img, 0, 512, 64)
        save(name, img)

    patched('huge-entries.vhd', 512 + 28, '>I', 0x40000001, 'header')
    patched('bad-block-size.vhd', 512 + 32, '>I', 3000, 'header')
    patched('bat-far.vhd', 512 + 16, '>Q', 1 << 40, 'header')
    patched('bat-entry-far.vhd', 1536, '>I', 0x7fffffff, None)
    patched('bat-entry-header.vhd', 1536, '>I', 1, None)
    patched('too-large.vhd', 48, '>Q', 4 << 40, 'footer')
    patched('bad-checksum.vhd', 64, '>I', 0, None)


if __name__ == '__main__':
    main()
