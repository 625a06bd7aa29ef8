#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Backing chains made by qemu-img, three deep, of qcow2 and raw: the backing format comes
from the header extension, relative names are resolved from the naming image's folder (the
images sit in sibling folders and the tools run from elsewhere), and reads past the end of a
shorter backing file return zeros. Every answer is compared with qemu-img's.

usage: test_backing_chains.py API_DRIVER
"""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import ImageCase, check_image, create_qcow2  # noqa: E402

KiB = 1024
MiB = 1024 * KiB


def write_raw(path, size, seed):
    """A raw file with random data, a hole, and a non-zero last byte."""
    r = random.Random(seed)
    with open(path, 'wb') as f:
        f.write(r.randbytes(min(size, MiB + 777)))
        f.truncate(size)
        if size > 2 * MiB:
            f.seek(2 * MiB + 100)
            f.write(r.randbytes(300 * KiB))
        f.seek(size - 1)
        f.write(b'\xee')


def build(s, label, make):
    try:
        return make()
    except interop.CheckFailed as e:
        with s.check('%s: build the chain with qemu' % label):
            raise e
        return None


def qcow2_chain(s):
    """base (16 MiB) <- mid (24 MiB) <- top (32 MiB), in folders base/, mid/, top/."""
    root = os.path.join(s.tmp, 'q')
    for d in ('base', 'mid', 'top', 'elsewhere'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    rnd = s.random_file()
    create_qcow2('base/base.qcow2', 16 * MiB, cwd=root, writes=[
        'write -s %s 0 %d' % (rnd, 12 * MiB),
        'write -P 0x0b %d %d' % (15 * MiB, MiB),
    ])
    create_qcow2('mid/mid.qcow2', 24 * MiB, cwd=root, backing='../base/base.qcow2',
                 backing_fmt='qcow2', writes=[
                     'write -P 0x1a %d %d' % (MiB, 64 * KiB),
                     'write -z %d %d' % (2 * MiB, 512 * KiB),
                     'write -P 0x1b %d %d' % (3 * MiB, 256 * KiB),
                     'discard %d %d' % (3 * MiB + 64 * KiB, 128 * KiB),
                     'write -P 0x1c %d %d' % (15 * MiB + 512 * KiB, MiB),
                     'write -P 0x1d %d %d' % (20 * MiB, 100 * KiB),
                 ])
    create_qcow2('top/top.qcow2', 32 * MiB, cwd=root, backing='../mid/mid.qcow2',
                 backing_fmt='qcow2', writes=[
                     'write -s %s %d %d' % (rnd, MiB + 32 * KiB, 64 * KiB),
                     'write -z %d %d' % (5 * MiB, 64 * KiB),
                     'write -P 0x2a %d %d' % (23 * MiB, 2 * MiB),
                     'write -P 0x2b %d %d' % (31 * MiB, MiB),
                 ])
    return root


def raw_chain(s, base_size, tag):
    """base.raw <- mid.qcow2 (8 MiB, backing format raw) <- top.qcow2 (8 MiB)."""
    root = os.path.join(s.tmp, tag)
    for d in ('raw', 'mid', 'top', 'elsewhere'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    write_raw(os.path.join(root, 'raw', 'base.raw'), base_size, seed=base_size)
    create_qcow2('mid/mid.qcow2', 8 * MiB, cwd=root, backing='../raw/base.raw',
                 backing_fmt='raw', writes=[
                     'write -P 0x3a %d %d' % (512 * KiB, 64 * KiB),
                     'write -z %d %d' % (2 * MiB, 128 * KiB),
                     'write -P 0x3b %d %d' % (base_size - 1000, 5000),
                 ])
    create_qcow2('top/top.qcow2', 8 * MiB, cwd=root, backing='../mid/mid.qcow2',
                 backing_fmt='qcow2', writes=[
                     'write -P 0x4a %d %d' % (100 * KiB, 4 * KiB),
                     'write -z %d %d' % (2 * MiB + 300 * KiB, 64 * KiB),
                     'write -P 0x4b %d %d' % (7 * MiB, 64 * KiB),
                 ])
    return root


def main():
    s = interop.Suite('backing-chains', sys.argv)

    root = build(s, 'qcow2-chain', lambda: qcow2_chain(s))
    if root:
        check_image(ImageCase(s, 'qcow2-chain top from its parent folder', 'top/top.qcow2',
                              cwd=root, granule=64 * KiB, has_backing=True))
        check_image(ImageCase(s, 'qcow2-chain top from a sibling folder', '../top/top.qcow2',
                              cwd=os.path.join(root, 'elsewhere'), granule=64 * KiB,
                              has_backing=True))
        check_image(ImageCase(s, 'qcow2-chain top by absolute path',
                              os.path.join(root, 'top', 'top.qcow2'), cwd='/',
                              granule=64 * KiB, has_backing=True))
        check_image(ImageCase(s, 'qcow2-chain mid', 'mid/mid.qcow2', cwd=root,
                              granule=64 * KiB, has_backing=True))

    root = build(s, 'raw-chain', lambda: raw_chain(s, 3 * MiB + 512, 'r'))
    if root:
        check_image(ImageCase(s, 'raw-chain top', 'top/top.qcow2', cwd=root,
                              granule=64 * KiB, has_backing=True))
        check_image(ImageCase(s, 'raw-chain mid from a sibling folder', '../mid/mid.qcow2',
                              cwd=os.path.join(root, 'elsewhere'), granule=64 * KiB,
                              has_backing=True))

    # A raw file whose size is not a multiple of 512, alone and as the bottom of a chain.
    odd = s.path('odd', 'odd.raw')
    write_raw(odd, 1000001, seed=1)
    check_image(ImageCase(s, 'raw image of 1000001 bytes', 'odd/odd.raw', fmt='raw',
                          granule=4096))
    root = build(s, 'odd-raw-chain', lambda: raw_chain(s, 1000001, 'o'))
    if root:
        check_image(ImageCase(s, 'chain over a raw file of 1000001 bytes', 'top/top.qcow2',
                              cwd=root, granule=64 * KiB, has_backing=True))

    # A backing file named by its absolute path, and a version 2 top that cannot hold zero
    # clusters, so `write -z` stores zeros over the backing data.
    label = 'absolute backing name, v2 top'

    def make_absolute():
        base = create_qcow2(s.path('abs', 'base.qcow2'), 8 * MiB, writes=[
            'write -s %s 0 %d' % (s.random_file(), 8 * MiB)])
        top = s.path('abs', 'v2top', 'top.qcow2')
        create_qcow2(top, 8 * MiB, options='compat=0.10', backing=base, backing_fmt='qcow2',
                     writes=['write -z %d %d' % (MiB, 256 * KiB),
                             'write -P 0x5a %d 4097' % (3 * MiB - 1)])
        return top
    top = build(s, label, make_absolute)
    if top:
        check_image(ImageCase(s, label, os.path.relpath(top, s.tmp), granule=64 * KiB,
                              has_backing=True))

    s.finish()


if __name__ == '__main__':
    main()
