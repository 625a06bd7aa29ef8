# SPDX-License-Identifier: LGPL-2.1-or-later
"""Adds a Parallels format extension (one dirty bitmap) to an image, as Parallels writes it:
usage: craft_ext.py IMAGE [L1_SIZE_DELTA]. Used by the tests and the fuzz corpus script."""

import hashlib
import struct
import sys

EXT_MAGIC = 0xAB234CEF23DCEA87
BITMAP_MAGIC = 0x20385FAE252CB34A


def add_extension(path, l1_delta=0, granularity_sectors=8):
    with open(path, 'r+b') as f:
        header = f.read(64)
        tracks = struct.unpack_from('<I', header, 0x1c)[0]
        nb_sectors = struct.unpack_from('<Q', header, 0x24)[0]
        cluster = tracks * 512
        f.seek(0, 2)
        end = f.tell()
        ext_off = (end + cluster - 1) // cluster * cluster
        bits = (nb_sectors * 512 + granularity_sectors * 512 - 1) // (granularity_sectors * 512)
        l1_size = ((bits + 63) // 64 * 8 + cluster - 1) // cluster + l1_delta
        feature = struct.pack('<Q16sII', nb_sectors, b'0123456789abcdef', granularity_sectors,
                              l1_size) + struct.pack('<%dQ' % l1_size, *([1] * l1_size))
        body = struct.pack('<QQII', BITMAP_MAGIC, 0, len(feature), 0) + feature
        body += bytes(-len(body) % 8) + struct.pack('<QQII', 0, 0, 0, 0)
        body += bytes(cluster - 24 - len(body))
        digest = hashlib.md5(body).digest()
        f.seek(ext_off)
        f.write(struct.pack('<Q', EXT_MAGIC) + digest + body)
        f.seek(0x38)
        f.write(struct.pack('<Q', ext_off // 512))


if __name__ == '__main__':
    add_extension(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
