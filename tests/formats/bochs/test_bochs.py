#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bochs growing images crafted here from QEMU's layout (block/bochs.c): read, info and map
identical to qemu-img; hostile headers refused with a message; creation and check refused as
qemu-img refuses them."""

import os
import random
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from readonly_check import (CLI, Failure, compare, main, qemu_refuses,  # noqa: E402
                            check_sample, refusals_of_creation, refused, run)

UNALLOCATED = 0xffffffff
TMP = tempfile.mkdtemp(prefix='bochs-test-')


def header(disk, extent, catalog, bitmap, version=2, header_size=512, magic=b'Bochs Virtual HD Image'):
    h = bytearray(512)
    h[0:len(magic)] = magic
    h[32:39] = b'Redolog'
    h[48:55] = b'Growing'
    struct.pack_into('<IIIII', h, 64, 0x00020000 if version == 2 else 0x00010000, header_size,
                     catalog, bitmap, extent)
    struct.pack_into('<Q', h, 88 if version == 2 else 84, disk)
    return bytes(h)


def build(name, disk, extent, layout, version=2, bitmap=None, catalog_size=None, cut=0,
          seed=1):
    """layout: {guest extent: (stored slot, set of allocated sectors)}. Returns the path and
    the guest content QEMU's layout implies."""
    rng = random.Random(seed)
    sectors_per_extent = extent // 512
    bitmap = bitmap if bitmap is not None else (sectors_per_extent + 7) // 8
    bitmap_blocks = 1 + (bitmap - 1) // 512
    n = catalog_size if catalog_size is not None else -(-(disk // 512) // sectors_per_extent)
    catalog = [UNALLOCATED] * n
    slots = {}
    guest = bytearray(disk // 512 * 512)
    for index, (slot, allocated) in layout.items():
        catalog[index] = slot
        bits = bytearray(bitmap_blocks * 512)
        data = bytearray(extent)
        for s in allocated:
            bits[s // 8] |= 1 << (s % 8)
            sector = bytes(rng.getrandbits(8) for _ in range(512))
            data[s * 512:(s + 1) * 512] = sector
            at = index * extent + s * 512
            if at < len(guest):
                guest[at:at + 512] = sector[:len(guest) - at]
        slots[slot] = bytes(bits) + bytes(data)
    body = header(disk, extent, n, bitmap, version) + struct.pack('<%dI' % n, *catalog)
    stride = (bitmap_blocks * 512) + extent
    for slot in sorted(slots):
        body = body.ljust(512 + 4 * n + slot * stride, b'\0') + slots[slot]
    if cut:
        body = body[:-cut]
        # What the cut took reads as zeros (both readers zero-fill past the end of the file).
        guest = None
    path = os.path.join(TMP, name)
    with open(path, 'wb') as f:
        f.write(body)
    return path, (bytes(guest) if guest is not None else None)


def case_v2_mixed():
    path, guest = build('mixed.bochs', 64 * 1024, 4096, {
        0: (2, set(range(8))),
        3: (0, {0, 1, 5, 7}),
        5: (1, set()),
        15: (3, {7}),
    })
    compare(path, 'bochs', guest)
    # Probed by its header, as qemu-img probes it.
    ours = run([CLI, 'info', '--output=json', path]).stdout
    theirs = run(['qemu-img', 'info', '--output=json', path]).stdout
    if ours != theirs:
        raise Failure('probed info differs: %s vs %s' % (ours, theirs))


def case_v1_header():
    path, guest = build('v1.bochs', 32 * 1024, 8192, {1: (0, {0, 2, 15}), 2: (1, {3})},
                        version=1)
    compare(path, 'bochs', guest)


def case_small_extents_odd_size():
    # 512-byte extents, a disk that is not a whole number of extents, a wide bitmap.
    path, guest = build('small.bochs', 10000, 512, {i: (i // 2, {0}) for i in range(0, 19, 2)},
                        bitmap=1024, seed=2)
    compare(path, 'bochs', guest)


def case_large_extent():
    path, guest = build('large.bochs', 2 * 1024 * 1024, 1024 * 1024,
                        {1: (0, set(range(100, 300)) | {2047})}, seed=3)
    compare(path, 'bochs', guest)


def case_data_cut_short():
    path, _ = build('cut.bochs', 16 * 1024, 4096, {0: (0, set(range(8)))}, cut=1000)
    compare(path, 'bochs')


def write(name, data):
    path = os.path.join(TMP, name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def case_hostile():
    cases = [
        ('magic.bochs', header(4096, 4096, 1, 1, magic=b'Bochs Virtual HD Imagf') + bytes(4),
         ['not in Bochs format']),
        ('catalog-big.bochs', header(4096, 4096, 0x100001, 1) + bytes(4096),
         ['Catalog size is too large']),
        ('extent-small.bochs', header(4096, 256, 16, 1) + bytes(64), ['at least 512']),
        ('extent-odd.bochs', header(4096, 1000, 16, 1) + bytes(64), ['not a power of two']),
        ('extent-big.bochs', header(4096, 16 << 20, 1, 1) + bytes(4), ['too large']),
        ('catalog-small.bochs', header(1 << 20, 4096, 2, 1) + bytes(8), ['too small']),
        ('catalog-past-end.bochs', header(1 << 30, 4096, 0x40000, 1) + bytes(64),
         ['catalog', 'end of the file']),
        ('short.bochs', header(4096, 4096, 1, 1)[:300], ['not in Bochs format']),
    ]
    for name, data, words in cases:
        path = write(name, data)
        refused(path, 'bochs', [name] + words)
    # qemu-img refuses the same headers (it reads a catalog past the end as zeros).
    for name, _, _ in cases[:6]:
        qemu_refuses(os.path.join(TMP, name), 'bochs')
    # A catalog entry so large that its extent lies past any file: reads fail cleanly.
    path = write('slot-huge.bochs', header(4096, 4096, 1, 0) + struct.pack('<I', 0xfffffffe))
    refused(path, 'bochs', ['largest file size'], command='convert')


def case_refusals():
    path, _ = build('plain.bochs', 4096, 4096, {})
    refusals_of_creation('bochs', path, TMP)
    proc = run([CLI, 'check', '-f', 'bochs', path], ok_codes=(63,))
    if b'This image format does not support checks' not in proc.stderr:
        raise Failure('check: %s' % proc.stderr)
    run(['qemu-img', 'check', '-f', 'bochs', path], ok_codes=(63,))
    refused(path, 'bochs', ['read-only'], command='resize')


def case_sample():
    check_sample('empty.bochs', 'bochs', TMP)


if __name__ == '__main__':
    main([(n, f) for n, f in sorted(globals().items()) if n.startswith('case_')], TMP)
