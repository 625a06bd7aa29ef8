#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Hostile Parallels images, crafted from a small valid one: each is refused by info, map,
convert and check with exit 1 and a message naming the problem (never a crash), or, where
qemu-img 7.2 reads it, read as qemu-img reads it. The memory they may take is bounded by the
file's size, not by a header field (the catalog must lie in the file).

usage: test_hostile.py
"""

import bz2
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prltest as pt  # noqa: E402
from test_interop import SAMPLES  # noqa: E402
from craft_ext import add_extension  # noqa: E402

MIB = 1 << 20

# name: (changes as (field or byte offset, struct format, value), words of the message)
REFUSED = {
    'version 3': ([(pt.OFF['version'], 'I', 3)], 'Image not in Parallels format'),
    'zero sectors per cluster': ([(pt.OFF['tracks'], 'I', 0)], 'Zero sectors per track'),
    'absurd cluster size': ([(pt.OFF['tracks'], 'I', 0x7fffffff)], 'Too big cluster'),
    'catalog overflow': ([(pt.OFF['bat_entries'], 'I', 0x7fffffff)], 'Catalog too large'),
    'catalog past the end of the file': ([(pt.OFF['bat_entries'], 'I', 10000000)],
                                         'extends past the end of the file'),
    'negative size': ([(pt.OFF['nb_sectors'], 'Q', 0xffffffffffffff00)], 'is too large'),
    'extension offset overflow': ([(pt.OFF['ext_off'], 'Q', 1 << 62)], 'out of range'),
    'extension past the end': ([(pt.OFF['ext_off'], 'Q', 1 << 40)], 'past the end of the file'),
    'extension without its magic': ([(pt.OFF['ext_off'], 'Q', 1)],
                                    'Wrong parallels Format Extension magic'),
}


def craft(s, base, name, changes):
    img = s.path(name.replace(' ', '-') + '.prl')
    shutil.copyfile(base, img)
    for offset, fmt, value in changes:
        pt.patch(img, offset, fmt, value)
    return img


def refused(s, img, words, fmt='parallels'):
    for args in (('info', '--output=json'), ('map', '--output=json'), ('check',),
                 ('convert', '-O', 'raw')):
        extra = [s.path('out.raw')] if args[0] == 'convert' else []
        proc = s.ours(args[0], '-f', fmt, *args[1:], img, *extra)
        if proc.returncode < 0:
            raise pt.Failed('imgutil %s crashed (signal %d)' % (args[0], -proc.returncode))
        if proc.returncode != 1 or words not in proc.stderr or img not in proc.stderr:
            raise pt.Failed('imgutil %s: exit %d, expected 1 and a message naming %s and '
                            'saying "%s": %s' % (args[0], proc.returncode, img, words,
                                                 proc.stderr.strip()))


def main():
    s = pt.Suite('parallels-hostile')
    base = s.path('base.prl')
    pt.must(s.qemu('create', '-q', '-f', 'parallels', '-o', 'cluster_size=4096', base, MIB),
            'qemu-img create')
    s.qemu_io(base, 'write -P 0x42 0 64k')

    for name, (changes, words) in REFUSED.items():
        with s.check('refused: %s' % name):
            refused(s, craft(s, base, name, changes), words)

    with s.check('refused: a file shorter than the header'):
        img = s.path('short.prl')
        with open(base, 'rb') as f, open(img, 'wb') as out:
            out.write(f.read(40))
        refused(s, img, 'too short')

    with s.check('read as qemu-img: catalog entries far past the end of the file'):
        img = craft(s, base, 'far', [(pt.HEADER, 'I', 0xffffffff), (pt.HEADER + 4, 'I', 1 << 31)])
        s.same_content(img)
        s.same_answer('map', '--output=json', img)
        s.same_answer('check', img, stderr=True)

    with s.check('read as qemu-img: data_off inside the catalog, and no data_off'):
        for value in (1, 0):
            img = craft(s, base, 'data-off-%d' % value, [(pt.OFF['data_off'], 'I', value)])
            s.same_content(img)
            s.same_answer('map', '--output=json', img)

    with s.check('writes never land on the catalog when data_off points into it'):
        img = craft(s, base, 'data-off-write', [(pt.OFF['data_off'], 'I', 1)])
        pt.must(s.ours('convert', '-O', 'parallels', '-o', 'cluster_size=4096', img,
                       s.path('copy.prl')), 'imgutil convert')
        pt.must(s.qemu('compare', img, s.path('copy.prl')), 'qemu-img compare')

    with s.check('a format extension with a dirty bitmap: read as qemu-img reads it'):
        img = craft(s, base, 'with-ext', [])
        add_extension(img)
        s.compare_all(img)
    with s.check('a format extension: writers refused, where qemu-img 7.2 destroys it'):
        img = craft(s, base, 'ext-write', [])
        add_extension(img)
        theirs = craft(s, base, 'ext-write-qemu', [])
        add_extension(theirs)
        proc = s.ours('check', '-r', 'all', img)
        if proc.returncode != 1 or 'format extension (dirty bitmaps)' not in proc.stderr:
            raise pt.Failed('imgutil check -r all: exit %d %s' % (proc.returncode, proc.stderr))
        s.compare_all(img)  # untouched, still read as qemu-img reads it
        s.qemu('check', '-r', 'all', theirs)
        if s.qemu('info', theirs).returncode == 0:
            print('     (qemu-img now keeps the extension: writers could be allowed)')
    for delta, words in ((1, 'Bitmap table size 2 does not correspond'),
                         (-1, 'Bitmap table size 0 does not correspond')):
        with s.check('refused as qemu-img refuses: a bitmap table of the wrong size (%+d)' %
                     delta):
            img = craft(s, base, 'bad-l1-%d' % delta, [])
            add_extension(img, delta, granularity_sectors=1)
            refused(s, img, words)
            proc = s.qemu('info', img)
            if proc.returncode != 1 or words not in proc.stderr:
                raise pt.Failed('qemu-img says: %s' % proc.stderr)

    bitmap = os.path.join(SAMPLES, 'parallels-with-bitmap.bz2') if SAMPLES else ''
    if os.path.exists(bitmap):
        sample = s.path('bitmap.prl')
        with bz2.open(bitmap) as f, open(sample, 'wb') as out:
            shutil.copyfileobj(f, out)
        ext = pt.read_field(sample, pt.OFF['ext_off'], 'Q') * 512
        for name, offset, words in (('checksum', ext + 100, 'Wrong checksum'),
                                    ('magic', ext, 'Wrong parallels Format Extension magic')):
            with s.check('refused as qemu-img refuses: a format extension with a bad %s' % name):
                img = s.path('bad-%s.prl' % name)
                shutil.copyfile(sample, img)
                with open(img, 'r+b') as f:
                    f.seek(offset)
                    byte = f.read(1)
                    f.seek(offset)
                    f.write(bytes([byte[0] ^ 0xff]))
                refused(s, img, words)
                proc = s.qemu('info', img)
                if proc.returncode != 1 or words not in proc.stderr:
                    raise pt.Failed('qemu-img says: %s' % proc.stderr)

    with s.check('refused: a DiskDescriptor.xml too large, or naming no file'):
        folder = s.path('bundle')
        os.mkdir(folder)
        xml = os.path.join(folder, 'DiskDescriptor.xml')
        head = "<?xml version='1.0'?>\n<Parallels_disk_image>\n"
        with open(xml, 'w') as f:
            f.write(head + '<!--' + 'x' * (2 * MIB) + '-->\n</Parallels_disk_image>\n')
        refused(s, xml, 'too large')
        with open(xml, 'w') as f:
            f.write(head + '<StorageData><Storage><Image><GUID>{1}</GUID></Image></Storage>'
                    '</StorageData></Parallels_disk_image>\n')
        refused(s, xml, 'names no image file')
    s.finish()


if __name__ == '__main__':
    main()
