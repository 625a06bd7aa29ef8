#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Hostile VMDK images, crafted here: each is refused by `imgutil info` with exit 1 and a
message naming the problem (the cases QEMU's own tests cover: absurd grain table sizes and
granularity, truncated files, grain directories past the end, bad footers, extent lines that
are malformed or point outside the image's folder), and none makes it crash or allocate
without bound (the CLI runs under a 256 MiB address-space limit).

usage: test_vmdk_hostile.py WRITE_DRIVER KILLPOINT_SO THREAD_WRITER
"""

import os
import resource
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
import writetest as wt  # noqa: E402


def header(version=1, flags=3, capacity=2048, granularity=128, desc_offset=1, desc_size=20,
           gtes=512, rgd=21, gd=0, grain_offset=128, compress=0):
    h = b'KDMV' + struct.pack('<IIQQQQIQQQ', version, flags, capacity, granularity, desc_offset,
                              desc_size, gtes, rgd, gd, grain_offset)
    h += b'\0' + b'\n \r\n' + struct.pack('<H', compress)
    return h + bytes(512 - len(h))


DESC = (b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
        b'createType="monolithicSparse"\n')


def sparse(**kw):
    """A complete small sparse image (1 MiB): header, descriptor, directories, tables."""
    kw.setdefault('gd', 30)
    data = bytearray(header(**kw) + DESC.ljust(20 * 512, b'\0'))
    data += bytes(128 * 512 - len(data))
    struct.pack_into('<I', data, 21 * 512, 22)
    struct.pack_into('<I', data, 30 * 512, 31)
    return bytes(data)


def descriptor(lines, kind='monolithicFlat'):
    return (b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="%s"\n\n'
            % kind.encode()) + lines.encode() + b'\n'


CASES = [
    ('absurd grain table size', sparse(gtes=1 << 20), 'L2 table size too big'),
    ('zero grain table size', sparse(gtes=0), 'L1 entry size is invalid'),
    ('zero granularity', sparse(granularity=0), 'L1 entry size is invalid'),
    ('huge granularity', sparse(granularity=1 << 40, capacity=1 << 41),
     'invalid granularity'),
    ('huge capacity: L1 size too big', sparse(capacity=1 << 60), 'L1 size too big'),
    ('unknown version', sparse(version=4), 'unsupported VMDK version 4'),
    ('truncated file', sparse()[:40 * 512], 'file truncated'),
    ('grain directory past the end', sparse(gd=1 << 30), 'beyond the end of the file'),
    ('redundant directory past the end', sparse(rgd=1 << 30), 'beyond the end of the file'),
    ('footer missing', sparse(gd=(1 << 64) - 1), 'invalid footer'),
    ('tiny file', b'KDMV', 'file truncated'),
    ('unsupported create type', descriptor('RW 8 FLAT "x" 0', 'custom'),
     "unsupported image type 'custom'"),
    ('flat line without offset', descriptor('RW 8 FLAT "x.raw"'), 'invalid extent line'),
    ('extent outside the folder', descriptor('RW 8 FLAT "../x.raw" 0'),
     "outside the image's folder"),
    ('absolute extent', descriptor('RW 8 FLAT "/etc/passwd" 0'), "outside the image's folder"),
    ('extent that is missing', descriptor('RW 8 FLAT "missing.raw" 0'), 'cannot open extent'),
    ('extent that is a FIFO', descriptor('RW 8 FLAT "fifo" 0'), 'not a regular file'),
    ('sparse extent that is not VMDK', descriptor('RW 8 SPARSE "plain.raw"',
                                                  'twoGbMaxExtentSparse'),
     'not in VMDK format'),
    ('no CID', b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n',
     'no valid CID'),
]


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))


def main():
    suite = wt.Suite('vmdk-hostile', sys.argv, helpers=('killpoint', 'thread_writer'))
    os.mkfifo(suite.path('fifo'))
    wt.write_file(suite.path('plain.raw'), bytes(4096))
    for label, data, message in CASES:
        with suite.check(label):
            wt.write_file(suite.path('bad.vmdk'), data)
            proc = wt.run([suite.cli, 'info', '-f', 'vmdk', 'bad.vmdk'], cwd=suite.tmp,
                          ok_codes=None)
            if proc.returncode != 1 or message not in proc.stderr:
                raise wt.CheckFailed('exit %d, message %r (expected %r)' % (
                    proc.returncode, proc.stderr, message))
    with suite.check('no unbounded allocation on a crafted header'):
        wt.write_file(suite.path('big.vmdk'), sparse(capacity=(1 << 25) * 512 * 128, gd=30))
        # A sanitized build reserves terabytes of shadow memory: no address-space limit then.
        linked = subprocess.run(['ldd', suite.cli], capture_output=True, text=True).stdout
        limit = None if 'libasan' in linked else limit_memory
        proc = subprocess.run([suite.cli, 'info', 'big.vmdk'], cwd=suite.tmp, preexec_fn=limit,
                              capture_output=True, text=True)
        if proc.returncode != 1 or 'beyond the end of the file' not in proc.stderr:
            raise wt.CheckFailed('exit %d: %r' % (proc.returncode, proc.stderr))
    with suite.check('check of a grain past the end: as qemu-img check'):
        data = bytearray(sparse())
        struct.pack_into('<I', data, 31 * 512 + 8, 0x7ffffff0)
        wt.write_file(suite.path('past.vmdk'), bytes(data))
        ours = wt.run([suite.cli, 'check', 'past.vmdk'], cwd=suite.tmp, ok_codes=None)
        theirs = wt.qemu_img('check', 'past.vmdk', cwd=suite.tmp, ok_codes=None)
        strip = lambda t: t.replace('imgutil: ', '').replace('qemu-img: ', '')  # noqa: E731
        if (ours.returncode, ours.stdout, strip(ours.stderr)) != \
                (theirs.returncode, theirs.stdout, strip(theirs.stderr)):
            raise wt.CheckFailed('imgutil %d %r %r\nqemu-img %d %r %r' % (
                ours.returncode, ours.stdout, ours.stderr, theirs.returncode, theirs.stdout,
                theirs.stderr))
        if 'points after EOF' not in ours.stderr:
            raise wt.CheckFailed('no finding: %r' % ours.stderr)
    with suite.check('a write through a table entry aimed at the metadata is refused'):
        data = bytearray(sparse())
        struct.pack_into('<I', data, 31 * 512, 21)  # guest grain 0 -> the redundant directory
        wt.write_file(suite.path('aim.vmdk'), bytes(data))
        wt.run([suite.cli, 'convert', '-O', 'raw', 'aim.vmdk', 'aim.raw'], cwd=suite.tmp)
        proc = suite.api('run', 'aim.vmdk', '-f', 'vmdk', '--script', '-', '--shadow-in',
                         'aim.raw', input='write 0 512 3\n', ok_codes=(1,))
        if 'points into the metadata' not in proc.stderr:
            raise wt.CheckFailed('%r' % proc.stderr)
        with open(suite.path('aim.vmdk'), 'rb') as f:
            if f.read()[:32 * 512] != bytes(data[:32 * 512]):
                raise wt.CheckFailed('the metadata changed')
    suite.finish()


if __name__ == '__main__':
    main()
