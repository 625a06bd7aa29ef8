#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the ASIF seeds of the fuzz corpus (tests/fuzz/corpus/asif-*.asif): small valid
images in the smallest geometry the layout allows (512-byte blocks, 36-sector chunks: one
chunk group a table), with every known chunk state, and damaged copies. Files end just past
the last chunk they use. The result is committed; run this only to refresh it."""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import asif_ref  # noqa: E402

OUT = os.path.join(HERE, '..', '..', 'fuzz', 'corpus')
CS = 36 * 512  # the smallest chunk holding a chunk group of 512-byte blocks (16392 bytes)


def trimmed(data):
    """Cut after the last non-zero byte, keeping one byte of the last chunk used."""
    end = len(data.rstrip(b'\0'))
    return data[:max(end, len(data) - CS + 1)]


def save(name, data):
    with open(os.path.join(OUT, 'asif-' + name), 'wb') as f:
        f.write(data)


def main():
    w = asif_ref.Writer(8 * CS, chunk_size=CS, max_sectors=2 * 2048 * 36, meta=False)
    w.put(0, 0, b'\x11' * 64)
    w.put(1, 1024, b'\x22' * 700, partial=True)
    w.set_entry(2, 2 << 62)
    small = w.build()
    save('small.asif', small[:len(small) - CS + 64])

    m = asif_ref.Writer(4 * CS, chunk_size=CS, max_sectors=2 * 2048 * 36, meta=True)
    m.put(3, 0, b'\x33' * 512, partial=True)
    meta = m.build()
    save('meta.asif', meta[:len(meta) - CS + 64])

    base = small[:len(small) - CS + 64]
    for cut in (0, 4, 0x48, 0x200, 0x300):
        save('trunc-%d.asif' % cut, base[:cut])

    def patched(fmt, off, val):
        d = bytearray(base[:0x300])
        struct.pack_into(fmt, d, off, val)
        return bytes(d)
    save('bad-chunk-size.asif', patched('>I', 0x40, 1 << 31))
    save('bad-block-size.asif', patched('>H', 0x44, 100))
    save('bad-max-sectors.asif', patched('>Q', 0x38, 1 << 62))
    save('bad-dir.asif', patched('>Q', 0x10, 1 << 40))
    save('bad-version.asif', patched('>I', 0x04, 2))
    d = bytearray(base)
    d0 = struct.unpack_from('>Q', d, 0x10)[0]
    struct.pack_into('>Q', d, d0 + 8, 1 << 40)
    save('bad-table.asif', bytes(d))
    d = bytearray(base)
    table = struct.unpack_from('>Q', d, d0 + 8)[0]
    struct.pack_into('>Q', d, table * CS, (2 << 62) | 5)
    save('bad-state.asif', bytes(d))


if __name__ == '__main__':
    main()
