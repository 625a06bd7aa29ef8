#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""DMG images crafted here (dmgcraft.py): zero, ignore, raw, zlib, bzip2 and ADC chunks in
XML property lists and in resource forks; read, info and map identical to qemu-img (which
reads bzip2 only with its dmg-bz2 module and ADC not at all: those are compared with the
content written); an lzfse chunk refused with a message; hostile trailers and tables refused
with a message."""

import os
import random
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'bochs'))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..'))
from readonly_check import (CLI, Failure, compare, main, qemu_refuses,  # noqa: E402
                            check_sample, probed_as_qemu_probes, refusals_of_creation, refused,
                            run)
from dmgcraft import (UDBZ, UDCM, UDCO, UDIG, UDRW, UDZE, UDZO, ULFO, adc_encode,  # noqa: E402
                      build, koly, mish, plist)
from formattest import write_file  # noqa: E402

TMP = tempfile.mkdtemp(prefix='dmg-test-')
KiB, MiB = 1024, 1024 * 1024


def content(size, seed):
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.randrange(4)
        n = rng.randrange(1, 3000)
        if kind == 0:
            out += bytes(rng.getrandbits(8) for _ in range(n))
        elif kind == 1:
            out += bytes(n)
        elif kind == 2:
            out += bytes([rng.getrandbits(8)]) * n
        else:
            out += (b'dmg chunk %d; ' % rng.randrange(1000)) * (n // 14 + 1)
    return bytes(out[:size])


def write(name, data):
    return write_file(TMP, name, data)


def qemu_reads_bzip2():
    """Debian ships qemu's dmg-bz2 module in qemu-block-extra, which may be absent."""
    image, _ = build([[(UDBZ, bytes(512))]])
    path = write('probe-bz2.dmg', image)
    proc = subprocess.run(['qemu-img', 'convert', '-O', 'raw', path, path + '.raw'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    return proc.returncode == 0


def case_qemu_types_xml():
    # The chunk types qemu-img reads without modules, two partitions, a lead before the data.
    parts = [[(UDZO, content(64 * KiB, 1)), (UDZE, bytes(32 * KiB)), (UDRW, content(5 * 512, 2))],
             [(UDIG, bytes(4 * KiB)), (UDZO, content(1 * MiB, 3)), (UDRW, content(512, 4))]]
    image, guest = build(parts, lead=3000, extra_entries=[(UDCM, 0, 0, 0, 0)])
    path = write('types-xml.dmg', image)
    compare(path, 'dmg', guest)
    # Probed by the ".dmg" suffix, as qemu-img probes it; without it, as raw.
    for p in (path, write('types-xml.img', image)):
        probed_as_qemu_probes(p)


def case_qemu_types_resource_fork():
    parts = [[(UDRW, content(8 * KiB, 5)), (UDZO, content(40 * KiB, 6))],
             [(UDZE, bytes(1 * MiB)), (UDZO, content(3 * 512, 7))]]
    image, guest = build(parts, use_resource_fork=True)
    compare(write('types-rsrc.dmg', image), 'dmg', guest)


def case_large_chunk():
    # A zlib chunk of 4 MiB: larger than any qcow2 cluster, inside qemu's 64 MiB bound.
    parts = [[(UDZO, content(4 * MiB, 8)), (UDRW, content(4 * KiB, 9))]]
    image, guest = build(parts)
    compare(write('large.dmg', image), 'dmg', guest)


def case_pieces_of_large_chunks():
    # Reads of random sizes and places, from two threads, in chunks of up to 4 MiB of every
    # compressed type (the core keeps the last unit decompressed between reads).
    reader = os.environ.get('READ_PIECES')
    if not reader:
        print('note: READ_PIECES is not set: case skipped')
        return
    parts = [[(UDZO, content(4 * MiB, 20)), (UDRW, content(3 * KiB, 21)),
              (UDBZ, content(1 * MiB + 512, 22)), (UDZE, bytes(3 * MiB)),
              (UDCO, content(1 * MiB, 23)), (UDZO, content(512, 24))]]
    image, guest = build(parts)
    path = write('pieces.dmg', image)
    raw = write('pieces.raw', guest)
    run([reader, path, 'dmg', raw])


def case_bzip2_and_adc():
    parts = [[(UDBZ, content(96 * KiB, 10)), (UDZE, bytes(8 * KiB)), (UDCO, content(72 * KiB, 11)),
              (UDZO, content(16 * KiB, 12))],
             [(UDCO, bytes([7]) * 4096 + content(20 * KiB, 13)), (UDBZ, content(512, 14))]]
    for rsrc in (False, True):
        image, guest = build(parts, use_resource_fork=rsrc)
        path = write('bz2-adc-%d.dmg' % rsrc, image)
        compare(path, 'dmg', guest, qemu_reads=False)
    image, guest = build([[(UDBZ, content(200 * KiB, 15)), (UDZE, bytes(512))]])
    compare(write('bz2.dmg', image), 'dmg', guest, qemu_reads=qemu_reads_bzip2())


def case_adc_encoder_codes():
    # The encoder must have produced every kind of code for the case above to mean anything.
    stream = adc_encode(bytes([7]) * 300 + b'abcabcabcabcabc' + bytes(range(256)))
    kinds = {'literal': 0, 'short': 0, 'long': 0}
    i = 0
    while i < len(stream):
        b = stream[i]
        if b & 0x80:
            kinds['literal'] += 1
            i += (b & 0x7f) + 2
        elif b & 0x40:
            kinds['long'] += 1
            i += 3
        else:
            kinds['short'] += 1
            i += 2
    if not all(kinds.values()):
        raise Failure('ADC encoder codes: %s' % kinds)


def case_lzfse_refused():
    parts = [[(UDZO, content(8 * KiB, 16)), (ULFO, content(8 * KiB, 17)), (UDRW, content(512, 18))]]
    image, _ = build(parts)
    path = write('lzfse.dmg', image)
    # info and map open it (qemu-img too: it warns that reads of the chunk will fail).
    for cmd in ('info', 'map'):
        ours = run([CLI, cmd, '--output=json', path]).stdout
        theirs = run(['qemu-img', cmd, '--output=json', path]).stdout
        if ours != theirs:
            raise Failure('%s of %s differs: %s vs %s' % (cmd, path, ours, theirs))
    refused(path, 'dmg', ['lzfse.dmg', 'not supported',
                          'accessing lzfse compressed blocks will result in I/O errors'],
            command='convert')
    qemu_refuses(path, 'dmg', command='convert')


def case_gap_fails_reads():
    # Sectors past the last chunk are in no chunk: reads of them fail, in qemu-img too.
    image, _ = build([[(UDRW, content(1024, 19))]], total_sectors=8)
    path = write('gap.dmg', image)
    refused(path, 'dmg', ['sector 2', 'no chunk'], command='convert')
    qemu_refuses(path, 'dmg', command='convert')


def hostile_tables(entries, rsrc=False):
    block = mish(0, 8, 0, entries)
    table = plist([block])
    return table + koly(0, 0, (0, 0), (0, len(table)), 8)


def case_hostile():
    good, _ = build([[(UDRW, bytes(512))]])
    t = len(good) - 512  # the trailer's offset

    def patched(offset, fmt, value):
        b = bytearray(good)
        struct.pack_into(fmt, b, t + offset, value)
        return bytes(b)

    cases = [
        ('short.dmg', good[-300:], ['at least 512 bytes']),
        ('no-koly.dmg', good[:t] + b'xxxx' + good[t + 4:], ['UDIF trailer']),
        ('data-fork.dmg', patched(0x18, '>Q', t + 1), ['data fork offset']),
        ('rsrc-past.dmg', patched(0x28, '>Q', t + 100), ['resource fork']),
        ('xml-past.dmg', patched(0xe8 - 0x10, '>Q', t), ['property list']),
        ('no-tables.dmg', patched(0xe0, '>Q', 0), ['neither']),
        ('sectors-huge.dmg', patched(0x1ec, '>Q', 1 << 60), ['sector count', 'too large']),
        ('count-max.dmg', hostile_tables([(UDZO, 0, 0x20001, 0, 10)]), ['larger than max']),
        ('length-max.dmg', hostile_tables([(UDRW, 0, 8, 0, (64 << 20) + 1)]), ['larger than max']),
        ('xml-open.dmg', (lambda x: x + koly(0, 0, (0, 0), (0, len(x)), 8))(
            b'<plist><data>bWlzaA=='), ['not closed']),
        ('rsrc-count.dmg', (lambda r: r + koly(0, 0, (0, len(r)), (0, 0), 8))(
            struct.pack('>IIII', 16, 0, 0, 0)), ['resource data']),
        ('rsrc-size.dmg', (lambda r: r + koly(0, 0, (0, len(r)), (0, 0), 8))(
            struct.pack('>IIII', 16, 0, 8, 0) + struct.pack('>II', 1000, 0)),
         ['resource', 'runs past']),
    ]
    for name, data, words in cases:
        path = write(name, data)
        refused(path, 'dmg', [name] + words)
        if name not in ('sectors-huge.dmg',):
            qemu_refuses(path, 'dmg')
    # The property list's 16 MiB cap, in a sparse file.
    path = os.path.join(TMP, 'xml-huge.dmg')
    with open(path, 'wb') as f:
        f.seek(17 * MiB)
        f.write(koly(0, 0, (0, 0), (0, 17 * MiB), 8))
    refused(path, 'dmg', ['property list', 'length'])
    qemu_refuses(path, 'dmg')
    # A chunk stream that is not what it says: reads fail with a message.
    for kind in (UDZO, UDBZ, UDCO):
        block = mish(0, 2, 0, [(kind, 0, 2, 0, 16)])
        table = plist([block])
        data = b'\x7f' * 16
        path = write('corrupt-%x.dmg' % kind, data + table +
                     koly(0, 16, (0, 0), (16, len(table)), 2))
        refused(path, 'dmg', ['corrupt'], command='convert')


def case_refusals():
    image, _ = build([[(UDRW, bytes(512))]])
    path = write('plain.dmg', image)
    refusals_of_creation('dmg', path, TMP)
    proc = run([CLI, 'check', path], ok_codes=(63,))
    if b'This image format does not support checks' not in proc.stderr:
        raise Failure('check: %s' % proc.stderr)


def case_probe_empty_file():
    # An empty file named .dmg is raw: qemu-img never probes an empty file.
    empty = os.path.join(TMP, 'empty.dmg')
    open(empty, 'wb').close()
    probed_as_qemu_probes(empty)


def case_sample():
    check_sample('simple-dmg.dmg', 'dmg', TMP)


if __name__ == '__main__':
    main([(n, f) for n, f in sorted(globals().items()) if n.startswith('case_')], TMP)
