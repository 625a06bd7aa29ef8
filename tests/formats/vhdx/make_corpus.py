#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Regenerates the seed corpus of fuzz_vhdx (tests/fuzz/corpus/fuzz_vhdx): compact valid VHDX
images (the BAT and metadata placed below 1 MiB, so that a file without a log is under
500 KiB) and damaged copies of them. The result is committed; run this only to refresh it.
qemu-img reads the valid ones as this library does (checked when it is installed)."""

import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdxlib as vx  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'fuzz', 'corpus',
                   'fuzz_vhdx')
KIB = 1024
BAT_AT = 320 * KIB
META_AT = 384 * KIB


def build(virtual_size, block_size=vx.MIB, blocks=(), log_length=0, log_entry=None,
          locator=None):
    """blocks: [(index, state, file offset, fill byte)]; data is written for present ones."""
    meta_length = 64 * KIB + 40 + (len(locator) if locator else 0)
    size = META_AT + meta_length
    for _, state, off, _ in blocks:
        if state in (6, 7):
            size = max(size, off + min(block_size, virtual_size))
    if log_length:
        size = max(size, vx.MIB + log_length)
    d = bytearray(size)
    d[0:8] = b'vhdxfile'
    header = bytearray(4096)
    struct.pack_into('<4sIQ16s16s16sHHIQ', header, 0, b'head', 0, 7, bytes(range(16)),
                     bytes(range(16, 32)), bytes(16), 0, 1, log_length, vx.MIB)
    t = bytearray(64 * KIB)
    struct.pack_into('<4sIII', t, 0, b'regi', 0, 2, 0)
    bat_length = 40 * KIB if locator else 4096  # a differencing BAT ends with a bitmap entry
    struct.pack_into('<16sQII16sQII', t, 16, vx.BAT_GUID, BAT_AT, bat_length, 1, vx.METADATA_GUID,
                     META_AT, meta_length, 1)
    vx.with_checksum(t)
    d[vx.REGION_OFFSETS[0]:vx.REGION_OFFSETS[0] + len(t)] = t
    m = bytearray(meta_length)
    struct.pack_into('<8sHH', m, 0, b'metadata', 0, 6 if locator else 5)
    ids = [vx.FILE_PARAMS_GUID, vx.VIRTUAL_SIZE_GUID,
           bytes.fromhex('ab12cabee6b2234593efc309e000c746'),
           bytes.fromhex('1dbf41816fa90947ba47f233a8faab5f'),
           bytes.fromhex('c748a3cd5d4471449cc9e9885251c556')]
    lens = [8, 8, 16, 4, 4]
    at = 64 * KIB
    for i, (g, n) in enumerate(zip(ids, lens)):
        struct.pack_into('<16sIII', m, 32 + 32 * i, g, at, n, 4 if i == 0 else 6)
        at += n
    struct.pack_into('<IIQ16sII', m, 64 * KIB, block_size, 2 if locator else 0, virtual_size,
                     bytes(range(16)), 512, 512)
    if locator:
        struct.pack_into('<16sIII', m, 32 + 32 * 5, vx.PARENT_LOCATOR_GUID, at, len(locator), 4)
        m[at:at + len(locator)] = locator
    d[META_AT:META_AT + len(m)] = m
    for index, state, off, fill in blocks:
        struct.pack_into('<Q', d, BAT_AT + 8 * index, off | state)
        if state in (6, 7):
            n = min(block_size, virtual_size)
            d[off:off + n] = bytes([fill]) * n
    img = vx.Image.__new__(vx.Image)
    img.data = d
    if log_entry:
        guid = bytes(range(100, 116))
        entry = log_entry(guid, len(d))
        d[vx.MIB:vx.MIB + len(entry)] = entry
        header[48:64] = guid
    for i, h in enumerate(vx.HEADER_OFFSETS):
        struct.pack_into('<Q', header, 8, 7 + i)
        vx.with_checksum(header)
        d[h:h + 4096] = header
    return d


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    images = {}
    images['empty-64k.vhdx'] = build(64 * KIB)
    images['zero-states.vhdx'] = build(3 * vx.MIB, blocks=[(0, 2, 0, 0), (1, 3, 0, 0),
                                                            (2, 1, 0, 0)])
    images['data-8k.vhdx'] = build(8 * KIB, blocks=[(0, 6, vx.MIB, 0x5a)])

    def bat_update(guid, file_size):
        sector = bytearray(4096)
        struct.pack_into('<Q', sector, 0, 2)  # block 0: ZERO
        return vx.log_entry(guid, 5, [(BAT_AT, bytes(sector))], file_size)
    images['dirty-log.vhdx'] = build(8 * KIB, log_length=vx.MIB, log_entry=bat_update)

    # Differencing: a block partially present (sector bitmap), the parent a missing file.
    chunk_ratio = (1 << 23) * 512 // vx.MIB
    images['differencing.vhdx'] = build(
        2 * vx.MIB, blocks=[(0, 7, vx.MIB, 0x6b), (chunk_ratio, 6, 2 * vx.MIB, 0x0f)],
        locator=vx.parent_locator([('parent_linkage', '{0}'), ('relative_path',
                                                                '.\\parent.vhdx')]))
    base = images['data-8k.vhdx']

    def damaged(name, patch):
        d = bytearray(base)
        patch(d)
        images[name] = d
    damaged('bad-header-crc.vhdx', lambda d: d.__setitem__(vx.HEADER_OFFSETS[0] + 4, 0x55))
    damaged('bad-bat-past-end.vhdx',
            lambda d: struct.pack_into('<Q', d, BAT_AT, (1 << 40) | 6))
    damaged('bad-block-size.vhdx',
            lambda d: struct.pack_into('<I', d, META_AT + 64 * KIB, 3 * vx.MIB))
    damaged('bad-virtual-size.vhdx',
            lambda d: struct.pack_into('<Q', d, META_AT + 64 * KIB + 8, 1 << 62))
    damaged('bad-item-offset.vhdx',
            lambda d: struct.pack_into('<I', d, META_AT + 32 + 16, 0xfffffff0))

    def region_count(d):
        t = bytearray(d[vx.REGION_OFFSETS[0]:vx.REGION_OFFSETS[0] + 64 * KIB])
        struct.pack_into('<I', t, 8, 60000)
        vx.with_checksum(t)
        d[vx.REGION_OFFSETS[0]:vx.REGION_OFFSETS[0] + 64 * KIB] = t
    damaged('bad-region-count.vhdx', region_count)
    images['bad-truncated.vhdx'] = base[:200 * KIB]
    log = images['dirty-log.vhdx']
    d = bytearray(log)
    struct.pack_into('<Q', d, vx.MIB + 64 + 16, 64 * KIB)  # the descriptor aims at a header
    entry = vx.with_checksum(bytearray(d[vx.MIB:vx.MIB + 8192]))
    d[vx.MIB:vx.MIB + 8192] = entry
    images['bad-log-target.vhdx'] = d
    for name, data in images.items():
        with open(os.path.join(OUT, name), 'wb') as f:
            f.write(data)
    if shutil.which('qemu-img'):
        for name in ('empty-64k.vhdx', 'zero-states.vhdx', 'data-8k.vhdx'):
            subprocess.run(['qemu-img', 'check', os.path.join(OUT, name)], check=True)
    print('wrote %d inputs to %s' % (len(images), OUT))


if __name__ == '__main__':
    main()
