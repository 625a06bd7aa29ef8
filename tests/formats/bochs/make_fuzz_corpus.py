#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Regenerates the seed corpora of fuzz_bochs, fuzz_cloop and fuzz_dmg (tests/fuzz/corpus/
fuzz_<format>/): small valid images crafted as the format tests craft them, and damaged
copies (cut short, absurd header fields). The result is committed; run this only to refresh
it."""

import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, '..', '..', '..')
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'dmg'))
import dmgcraft  # noqa: E402
from dmgcraft import UDBZ, UDCO, UDIG, UDRW, UDZE, UDZO, ULFO  # noqa: E402

CLOOP_MAGIC = (b'#!/bin/sh\n#V2.0 Format\n'
               b'modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n')


def save(target, name, data):
    folder = os.path.join(ROOT, 'tests', 'fuzz', 'corpus', target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), 'wb') as f:
        f.write(data)


def patched(data, offset, fmt, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def bochs(disk, extent, catalog, bitmap=1, version=2, entries=(), tail=b''):
    h = bytearray(512)
    h[0:22] = b'Bochs Virtual HD Image'
    h[32:39] = b'Redolog'
    h[48:55] = b'Growing'
    struct.pack_into('<IIIII', h, 64, 0x00020000 if version == 2 else 0x00010000, 512, catalog,
                     bitmap, extent)
    struct.pack_into('<Q', h, 88 if version == 2 else 84, disk)
    cat = list(entries) + [0xffffffff] * (catalog - len(entries))
    return bytes(h) + struct.pack('<%dI' % catalog, *cat) + tail


def bochs_corpus():
    stride = 512 + 4096
    tail = (b'\x0f' + bytes(511) + b'\xab' * 4096) + (b'\xf0' + bytes(511) + b'\xcd' * 4096)
    good = bochs(8 * 4096, 4096, 8, entries=(1, 0xffffffff, 0), tail=tail)
    save('fuzz_bochs', 'v2.bochs', good)
    save('fuzz_bochs', 'v1.bochs', bochs(4 * 512, 512, 4, version=1, entries=(0, 1),
                                         tail=(b'\x01' + bytes(511) + b'\x11' * 512) * 2))
    save('fuzz_bochs', 'cut.bochs', good[:512 + 32 + stride // 2])
    save('fuzz_bochs', 'catalog-big.bochs', patched(good, 72, '<I', 0x100001))
    save('fuzz_bochs', 'extent-odd.bochs', patched(good, 80, '<I', 1000))
    save('fuzz_bochs', 'bitmap-zero.bochs', patched(good, 76, '<I', 0))
    save('fuzz_bochs', 'slot-huge.bochs', patched(good, 512, '<I', 0xfffffffe))
    save('fuzz_bochs', 'disk-huge.bochs', patched(good, 88, '<Q', 1 << 62))


def cloop(block_size, blocks, n=None):
    streams = [zlib.compress(b) for b in blocks]
    offsets = [136 + 8 * (len(streams) + 1)]
    for s in streams:
        offsets.append(offsets[-1] + len(s))
    return (CLOOP_MAGIC.ljust(128, b'\0') +
            struct.pack('>II', block_size, len(streams) if n is None else n) +
            b''.join(struct.pack('>Q', o) for o in offsets) + b''.join(streams))


def cloop_corpus():
    good = cloop(512, [bytes(512), b'cloop' * 102 + b'xx', bytes(range(256)) * 2])
    save('fuzz_cloop', 'simple.cloop', good)
    save('fuzz_cloop', 'big-block.cloop', cloop(65536, [b'\x5a' * 65536]))
    save('fuzz_cloop', 'cut.cloop', good[:200])
    save('fuzz_cloop', 'bs-odd.cloop', patched(good, 128, '>I', 1000))
    save('fuzz_cloop', 'n-huge.cloop', patched(good, 132, '>I', 0x1fffffff))
    save('fuzz_cloop', 'offset-back.cloop', patched(good, 144, '>Q', 1))
    save('fuzz_cloop', 'offset-far.cloop', patched(good, 152, '>Q', 1 << 40))


def dmg_corpus():
    parts = [[(UDZO, b'zlib chunk ' * 93 + b'x'), (UDZE, bytes(1024)), (UDRW, b'r' * 512),
              (UDIG, bytes(512)), (UDBZ, b'bzip2 ' * 170 + b'xxxx'),
              (UDCO, b'\x07' * 600 + b'adc adc adc ' * 35 + b'adc.')]]
    xml, _ = dmgcraft.build(parts)
    save('fuzz_dmg', 'types-xml.dmg', xml)
    rsrc, _ = dmgcraft.build(parts, use_resource_fork=True)
    save('fuzz_dmg', 'types-rsrc.dmg', rsrc)
    lzfse, _ = dmgcraft.build([[(UDRW, b'q' * 512), (ULFO, bytes(512))]])
    save('fuzz_dmg', 'lzfse.dmg', lzfse)
    gap, _ = dmgcraft.build([[(UDRW, b'g' * 512)]], total_sectors=16)
    save('fuzz_dmg', 'gap.dmg', gap)
    t = len(rsrc) - 512
    save('fuzz_dmg', 'no-koly.dmg', rsrc[:t] + b'kolx' + rsrc[t + 4:])
    save('fuzz_dmg', 'sectors-huge.dmg', patched(rsrc, t + 0x1ec, '>Q', 1 << 54))
    save('fuzz_dmg', 'rsrc-far.dmg', patched(rsrc, t + 0x30, '>Q', 1 << 40))
    save('fuzz_dmg', 'cut.dmg', xml[:len(xml) // 2] + xml[-512:])


if __name__ == '__main__':
    bochs_corpus()
    cloop_corpus()
    dmg_corpus()
