#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Damaged and hostile qcow2 images, made from qemu-made ones by cutting them short or by
patching header fields: each must be refused with a negative errno and a message that names
the problem, by the API and by `imgutil info` (exit 1, never a signal). Backing chains that
loop, or that are deeper than the library allows, are refused with -ELOOP.

usage: test_bad_input.py API_DRIVER
"""

import errno
import os
import re
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import (CheckFailed, ImageCase, check_image, clip, create_qcow2,  # noqa: E402
                     describe_rc, info_differences, parse_json, parse_refusal, qemu_img,
                     qemu_info)

KiB = 1024
MiB = 1024 * KiB

# Offsets of the qcow2 header fields (docs/interop/qcow2.txt).
MAGIC, VERSION, BACKING_OFFSET, BACKING_SIZE, CLUSTER_BITS, SIZE, CRYPT = 0, 4, 8, 16, 20, 24, 32
L1_SIZE, L1_OFFSET, REFTABLE_OFFSET, REFTABLE_CLUSTERS = 36, 40, 48, 56
NB_SNAPSHOTS, SNAPSHOTS_OFFSET = 60, 64
INCOMPATIBLE, REFCOUNT_ORDER, HEADER_LENGTH = 72, 96, 100

HEADER_WORDS = ('header', 'truncated', 'too short', 'short read', 'end of file',
                'end of the file')


def header_field(path, fmt, offset):
    with open(path, 'rb') as f:
        data = f.read(offset + 8)
    return struct.unpack_from(fmt, data, offset)[0]


def patched_copy(s, good, name, patches):
    """A copy of `good` with each (struct format, offset, value) written into it."""
    path = s.path('bad', name + '.qcow2')
    shutil.copyfile(good, path)
    with open(path, 'r+b') as f:
        for fmt, offset, value in patches:
            buf = bytearray(struct.calcsize(fmt))
            struct.pack_into(fmt, buf, 0, value)
            f.seek(offset)
            f.write(buf)
    return path


def cut_copy(s, good, name, length):
    path = s.path('bad', name + '.qcow2')
    shutil.copyfile(good, path)
    os.truncate(path, length)
    return path


def qemu_verdict(path, fmt):
    proc = qemu_img('info', '-f', fmt, path, ok_codes=None)
    if proc.returncode == 0:
        return 'qemu-img info accepts it'
    return 'qemu-img: %s' % clip(re.sub(r".*Could not open '[^']*': ", '', proc.stderr), 200)


def mentions(message, words):
    low = message.lower()
    return any(w.lower() in low for w in words)


def expect_refusal(s, label, path, words, fmt='qcow2', code=None):
    """img_open refuses with a negative errno (exactly `code` when given) and a message
    containing one of `words`; `imgutil info` exits 1 with such a message."""
    with s.check('%s: img_open refuses it (%s)' % (label, qemu_verdict(path, fmt))):
        ret, message = parse_refusal(s.api('open', path, fmt=fmt, ok_codes=None))
        if ret >= 0:
            raise CheckFailed('img_open failed with a non-negative code %d' % ret)
        if code is not None and ret != -code:
            raise CheckFailed('img_open gave %d (%s), expected -%s' % (
                ret, message, errno.errorcode[code]))
        if not mentions(message, words):
            raise CheckFailed('img_open gave %d with the message %r, which names none of %s' % (
                ret, message, list(words)))
    with s.check('%s: imgutil info -f %s exits 1 with a clear message' % (label, fmt)):
        proc = s.imgutil('info', '-f', fmt, path, ok_codes=None)
        if proc.returncode != 1:
            raise CheckFailed('imgutil info: %s (expected exit 1)\n  stderr: %s' % (
                describe_rc(proc.returncode), clip(proc.stderr)))
        if not mentions(proc.stderr, words):
            raise CheckFailed('imgutil info stderr %r names none of %s' % (
                clip(proc.stderr), list(words)))


def expect_error_or_qemu_content(s, label, path, words):
    """Damage qemu itself reads through (its block layer reads zeros past the end of the
    file): the library either refuses, naming the problem, or reads what qemu reads."""
    with s.check('%s: refused naming it, or read as qemu reads it (%s)' % (
            label, qemu_verdict(path, 'qcow2'))):
        proc = s.api('open', path, fmt='qcow2', ok_codes=None)
        if proc.returncode == 3:
            ret, message = parse_refusal(proc)
            if ret >= 0 or not mentions(message, words):
                raise CheckFailed('img_open refused it with %d %r, naming none of %s' % (
                    ret, message, list(words)))
            return
        ref = s.path('bad', 'qemu-read.raw')
        qemu_img('convert', '-f', 'qcow2', '-O', 'raw', path, ref)
        proc = s.api('read-compare', path, ref, 4096, fmt='qcow2', ok_codes=None)
        if proc.returncode == 0:
            return
        m = re.search(r'img_pread\([^)]*\) failed: (-\d+) \([^)]*\): (.*)', proc.stderr)
        if not m:
            raise CheckFailed('%s: %s' % (describe_rc(proc.returncode), clip(proc.stderr)))
        if not mentions(m.group(2), words):
            raise CheckFailed('img_pread failed with %s %r, naming none of %s' % (
                m.group(1), m.group(2), list(words)))


def truncation_cases(s, good_v3, good_v2):
    l1_offset = header_field(good_v3, '>Q', L1_OFFSET)
    l1_size = header_field(good_v3, '>I', L1_SIZE)
    reftable_offset = header_field(good_v3, '>Q', REFTABLE_OFFSET)
    for n in (0, 4, 50, 71, 100):
        path = cut_copy(s, good_v3, 'cut%d' % n, n)
        expect_refusal(s, 'qcow2 v3 cut at %d bytes' % n, path,
                       HEADER_WORDS + (('magic', 'not a qcow2', 'not in qcow2') if n < 8 else ()))
        if n >= 8:
            # Probed, the magic still says qcow2: it must not fall back to raw.
            with s.check('qcow2 v3 cut at %d bytes: probing does not open it' % n):
                ret, _ = parse_refusal(s.api('open', path, ok_codes=None))
                if ret >= 0:
                    raise CheckFailed('non-negative code %d' % ret)
        else:
            with s.check('qcow2 v3 cut at %d bytes: probing does not crash' % n):
                proc = s.api('open', path, ok_codes=None)
                if proc.returncode not in (0, 3):
                    raise CheckFailed('%s: %s' % (describe_rc(proc.returncode),
                                                  clip(proc.stderr)))
    for n in (50, 71):
        expect_refusal(s, 'qcow2 v2 cut at %d bytes' % n,
                       cut_copy(s, good_v2, 'v2cut%d' % n, n), HEADER_WORDS)
    expect_refusal(s, 'cut 4 bytes into the L1 table',
                   cut_copy(s, good_v3, 'cut-l1-start', l1_offset + 4), ('L1',))
    expect_refusal(s, 'cut in the middle of the L1 table',
                   cut_copy(s, good_v3, 'cut-l1-middle', l1_offset + l1_size * 8 // 2 + 4),
                   ('L1',))
    expect_refusal(s, 'cut 4 bytes into the refcount table',
                   cut_copy(s, good_v3, 'cut-reftable', reftable_offset + 4), ('refcount',))


def header_cases(s, good):
    cluster = 1 << header_field(good, '>I', CLUSTER_BITS)
    l1_offset = header_field(good, '>Q', L1_OFFSET)
    reftable_offset = header_field(good, '>Q', REFTABLE_OFFSET)
    TiB = 1 << 40
    cases = [
        ('L1 size 0x7fffffff', [('>I', L1_SIZE, 0x7fffffff)], ('L1',)),
        ('L1 size just above 32 MiB', [('>I', L1_SIZE, (32 * MiB) // 8 + 1)], ('L1',)),
        ('L1 table too small for the virtual size', [('>I', L1_SIZE, 1)], ('L1',)),
        ('L1 table offset 1 TiB, past the end of the file', [('>Q', L1_OFFSET, TiB)], ('L1',)),
        ('L1 table offset not cluster-aligned', [('>Q', L1_OFFSET, l1_offset + 1)], ('L1',)),
        ('L1 table offset near 2^64', [('>Q', L1_OFFSET, (1 << 64) - cluster)], ('L1',)),
        ('refcount table offset 1 TiB, past the end of the file',
         [('>Q', REFTABLE_OFFSET, TiB)], ('refcount',)),
        ('refcount table offset not cluster-aligned',
         [('>Q', REFTABLE_OFFSET, reftable_offset + 8)], ('refcount',)),
        ('refcount table of 0xffffffff clusters',
         [('>I', REFTABLE_CLUSTERS, 0xffffffff)], ('refcount',)),
        ('refcount table above 8 MiB',
         [('>I', REFTABLE_CLUSTERS, (8 * MiB) // cluster + 1)], ('refcount',)),
        ('refcount order 7 (128-bit refcounts)', [('>I', REFCOUNT_ORDER, 7)], ('refcount',)),
        ('cluster bits 8', [('>I', CLUSTER_BITS, 8)], ('cluster',)),
        ('cluster bits 22', [('>I', CLUSTER_BITS, 22)], ('cluster',)),
        ('virtual size 2^62', [('>Q', SIZE, 1 << 62)], ('size', 'L1')),
        ('65537 snapshots', [('>I', NB_SNAPSHOTS, 65537)], ('snapshot',)),
        ('snapshot table past the end of the file',
         [('>I', NB_SNAPSHOTS, 1), ('>Q', SNAPSHOTS_OFFSET, TiB)], ('snapshot',)),
        ('backing file name past the end of the file',
         [('>Q', BACKING_OFFSET, TiB), ('>I', BACKING_SIZE, 16)], ('backing',)),
        ('backing file name of 5000 bytes',
         [('>Q', BACKING_OFFSET, 512), ('>I', BACKING_SIZE, 5000)], ('backing',)),
        ('header length 50', [('>I', HEADER_LENGTH, 50)], ('header',)),
        ('unknown incompatible feature bit 10', [('>Q', INCOMPATIBLE, 1 << 10)],
         ('feature', 'incompatible')),
        ('AES encryption', [('>I', CRYPT, 1)], ('encrypt',)),
        ('version 4', [('>I', VERSION, 4)], ('version',)),
    ]
    for i, (label, patches, words) in enumerate(cases):
        expect_refusal(s, label, patched_copy(s, good, 'hdr%d' % i, patches), words)

    # An L1 entry naming an L2 table 1 TiB into a small file.
    path = patched_copy(s, good, 'l2-past-eof', [('>Q', l1_offset, (1 << 63) | TiB)])
    expect_error_or_qemu_content(s, 'L2 table offset past the end of the file', path, ('L2',))


def loop_cases(s):
    d = os.path.join(s.tmp, 'loops')
    os.makedirs(d, exist_ok=True)
    create_qcow2('a.qcow2', 16 * MiB, cwd=d, writes=['write -P 0x61 0 64k'])
    create_qcow2('b.qcow2', 16 * MiB, cwd=d, backing='a.qcow2', writes=['write -P 0x62 1M 64k'])
    qemu_img('rebase', '-u', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 'a.qcow2', cwd=d)
    create_qcow2('self.qcow2', 16 * MiB, cwd=d)
    qemu_img('rebase', '-u', '-f', 'qcow2', '-b', 'self.qcow2', '-F', 'qcow2', 'self.qcow2',
             cwd=d)
    for label, name in (('loop a->b->a', 'a.qcow2'), ('loop b->a->b', 'b.qcow2'),
                        ('loop a->a', 'self.qcow2')):
        path = os.path.join(d, name)
        with s.check('%s: img_open refuses it with -ELOOP naming the loop' % label):
            ret, message = parse_refusal(s.api('open', path, ok_codes=None))
            if ret != -errno.ELOOP or 'loop' not in message.lower():
                raise CheckFailed('img_open gave %d %r; expected %d and "loop"' % (
                    ret, message, -errno.ELOOP))
        for args in (['info', '--backing-chain'], ['convert', '-O', 'raw']):
            with s.check('%s: imgutil %s exits 1 naming the loop' % (label, ' '.join(args))):
                extra = [os.path.join(d, 'out.raw')] if args[0] == 'convert' else []
                proc = s.imgutil(*(args + [path] + extra), ok_codes=None)
                if proc.returncode != 1 or 'loop' not in proc.stderr.lower():
                    raise CheckFailed('%s, stderr %r' % (describe_rc(proc.returncode),
                                                         clip(proc.stderr)))
        # qemu-img info does not open the backing file, so it describes such an image.
        with s.check('%s: imgutil info matches qemu-img info' % label):
            proc = s.imgutil('info', '--output=json', path, ok_codes=None)
            if proc.returncode != 0:
                raise CheckFailed('qemu-img info describes it, imgutil info: %s %s' % (
                    describe_rc(proc.returncode), clip(proc.stderr)))
            diffs = info_differences(qemu_info(path), parse_json(proc.stdout, 'imgutil info'))
            if diffs:
                raise CheckFailed('\n'.join(diffs))


def chain_of(s, folder, count):
    """count qcow2 images, each backed by the previous one; returns the top's path."""
    d = os.path.join(s.tmp, folder)
    os.makedirs(d, exist_ok=True)
    create_qcow2('0.qcow2', 4 * MiB, cwd=d, writes=['write -P 0x30 0 4k'])
    for i in range(1, count):
        create_qcow2('%d.qcow2' % i, 4 * MiB, cwd=d, backing='%d.qcow2' % (i - 1))
    return os.path.join(d, '%d.qcow2' % (count - 1))


def depth_cases(s):
    top = chain_of(s, 'chain32', 32)
    check_image(ImageCase(s, 'chain of 32 images', top, granule=64 * KiB, has_backing=True))
    top = chain_of(s, 'chain40', 40)
    with s.check('chain of 40 images: img_open refuses it with -ELOOP naming the depth'):
        ret, message = parse_refusal(s.api('open', top, ok_codes=None))
        if ret != -errno.ELOOP or not mentions(message, ('deep', 'depth')):
            raise CheckFailed('img_open gave %d %r; expected %d and "deep"/"depth"' % (
                ret, message, -errno.ELOOP))


def main():
    s = interop.Suite('bad-input', sys.argv)
    rnd = s.random_file()
    # 4 KiB clusters over 64 MiB: an L1 table of 32 entries and several L2 tables.
    good_v3 = create_qcow2(s.path('good-v3.qcow2'), 64 * MiB, options='cluster_size=4096',
                           writes=['write -s %s 0 %d' % (rnd, 3 * MiB),
                                   'write -P 0x77 %d %d' % (40 * MiB, MiB)])
    good_v2 = create_qcow2(s.path('good-v2.qcow2'), 64 * MiB,
                           options='compat=0.10,cluster_size=4096',
                           writes=['write -s %s 0 %d' % (rnd, MiB)])
    for label, path in (('good v3 image', good_v3), ('good v2 image', good_v2)):
        with s.check('%s: img_open opens it (the damage below is all there is)' % label):
            s.api('open', path)
    truncation_cases(s, good_v3, good_v2)
    header_cases(s, good_v3)
    loop_cases(s)
    depth_cases(s)
    s.finish()


if __name__ == '__main__':
    main()
