#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Hostile VHD images, crafted here: each is refused with a clear message naming the file and
the problem, without a crash or a large allocation (the limits QEMU's vpc driver applies, and
QEMU's own words where it has them).

usage: test_vpc_hostile.py WRITE_DRIVER
"""

import os
import resource
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
sys.path.insert(0, HERE)
import vhd  # noqa: E402
import writetest as wt  # noqa: E402

MIB = 1 << 20


def base():
    """A valid 8 MiB dynamic disk with one allocated block."""
    return vhd.sparse(8 * MIB, {1: (None, bytes(range(256)) * 8192)})


def patch_header(img, offset, fmt, value):
    struct.pack_into(fmt, img, 512 + offset, value)
    vhd.refresh(img, 512, 1024, 36)
    return img


def patch_footer(img, offset, fmt, value):
    for at in (0, len(img) - 512):
        struct.pack_into(fmt, img, at + offset, value)
        vhd.refresh(img, at, 512, 64)
    return img


def cases():
    yield 'bad footer checksum', bytearray(base()[:64]) + b'\1\2\3\4' + base()[68:], \
        'Incorrect header checksum'
    yield 'bad header checksum', (lambda b: b.__setitem__(512 + 36, b[512 + 36] ^ 1) or b)(
        base()), 'Incorrect dynamic disk header checksum'
    yield 'bad header magic', (lambda b: b.__setitem__(512, ord('X')) or b)(base()), \
        'Invalid header magic'
    yield 'block size not a power of two', patch_header(base(), 32, '>I', 0x200001), \
        'Invalid block size 2097153'
    yield 'block size below a sector', patch_header(base(), 32, '>I', 256), \
        'Invalid block size 256'
    yield 'huge max table entries', patch_header(base(), 28, '>I', 0x40000001), \
        'Max Table Entries too large (1073741825)'
    yield 'table too small for the size', patch_header(base(), 28, '>I', 1), \
        'Page table too small'
    yield 'BAT past the end of the file', patch_header(base(), 16, '>Q', 1 << 40), \
        'past the end of the file'
    yield 'header past the end of the file', patch_footer(base(), 16, '>Q', 1 << 40), \
        'past the end of the file'
    img = base()
    struct.pack_into('>I', img, 1536, 0x7fffff00)
    yield 'BAT entry past the end of the file', img, 'free_data_block_offset points after'
    img = base()
    struct.pack_into('>I', img, 1536, 1)
    yield 'BAT entry pointing into the header', img, 'overlaps the image\'s header'
    yield 'truncated image', base()[:len(base()) - 512 * 1024], \
        'The image has been truncated'
    yield 'larger than 2040 GiB', patch_footer(base(), 48, '>Q', 2041 << 30), \
        'larger than 2040 GiB'
    yield 'file shorter than a footer', b'conectix', 'File too small for a VHD header'
    yield 'no footer anywhere', bytes(4096), 'invalid VPC image'
    child = vhd.sparse(4 * MIB, {}, disk_type=4, locator_data=[(b'W2ru', b'x\0' * 4)])
    struct.pack_into('>Q', child, 512 + 576 + 16, 1 << 40)
    vhd.refresh(child, 512, 1024, 36)
    yield 'parent locator past the end of the file', child, 'parent locator data'
    child = vhd.sparse(4 * MIB, {}, disk_type=4)
    yield 'differencing disk naming no parent', child, 'names no parent'
    child = vhd.sparse(4 * MIB, {}, disk_type=4, locator_data=[(b'W2ru', b'\0\xdc')])
    yield 'parent locator with malformed UTF-16', child, 'malformed name'


def main():
    s = wt.Suite('vpc-hostile', sys.argv)
    # Nothing here may allocate much: a header asking for a 4 GiB table must be refused first.
    # (Not under AddressSanitizer, whose shadow memory needs terabytes of address space.)
    probe = subprocess.run(['ldd', s.cli], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if b'libasan' not in probe.stdout:
        limit = 1 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for n, (label, data, message) in enumerate(cases()):
        with s.check('refused: %s' % label):
            name = 'hostile-%d.vhd' % n
            wt.write_file(s.path(name), bytes(data))
            proc = s.imgutil('info', '-f', 'vpc', name, ok_codes=None)
            if proc.returncode != 1 or message not in proc.stderr or name not in proc.stderr:
                raise wt.CheckFailed('exit %d, wanted 1 and %r naming the file: %s' % (
                    proc.returncode, message, wt.clip(proc.stderr)))
    with s.check('the valid base image opens (the cases above differ from it by one field)'):
        wt.write_file(s.path('base.vhd'), bytes(base()))
        s.imgutil('info', 'base.vhd')
        wt.qemu_img('info', 'base.vhd', cwd=s.tmp)
    s.finish()


if __name__ == '__main__':
    main()
