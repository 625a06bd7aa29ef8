#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""VHDX images made by qemu-img and qemu-io at test time, for every subformat and creation
option, read here: img_pread and imgutil convert byte for byte against qemu-img convert, map
and info JSON against qemu-img's, check output and exit code against qemu-img check. Then the
real images in ../shared/testdata/qemu-samples (when present): the Hyper-V and Disk2VHD images
by their sha256, and the image with a dirty log, refused read-only and replayed by
check -r all exactly as qemu-img does.

usage: test_vhdx_interop.py API_DRIVER [made|samples]  (default: both)
"""

import bz2
import hashlib
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'interop'))
import interop  # noqa: E402
from interop import CheckFailed, qemu_img  # noqa: E402

MIB = 1 << 20

# (label, size, -o options, qemu-io commands)
CASES = [
    ('dynamic default', 40 * MIB, '',
     ['write -P 0x11 0 64k', 'write -P 0x22 8191k 2M', 'write -P 0x33 39M 1M']),
    ('dynamic 1M blocks, 2M log', 12 * MIB + 512, 'block_size=1M,log_size=2M',
     ['write -P 0x44 512 4095', 'write -P 0x55 3M 1536k', 'write -z 3584k 4k',
      'write -P 0x66 12M 512']),
    ('dynamic, no zero state', 9 * MIB, 'block_state_zero=off,block_size=2M',
     ['write -P 0x77 1M 3M', 'write -P 0x78 8M 1M']),
    ('fixed', 10 * MIB, 'subformat=fixed', ['write -P 0x88 5M 1M']),
    ('fixed, no zero state', 6 * MIB, 'subformat=fixed,block_state_zero=off,block_size=1M',
     ['write -P 0x99 0 1M', 'write -P 0x9a 4M 100k']),
    ('empty', 3 * MIB, '', []),
    ('32M blocks', 70 * MIB, 'block_size=32M', ['write -P 0xaa 33M 64k']),
]

SAMPLES = [
    ('iotest-dynamic-1G.vhdx',
     'd3d112d8dab7fd360609f7d5a7b769904b7a2a7d7b6b8c535f65a23293c05478'),
    ('test-disk2vhd.vhdx', '96d964042be9b58dda1725567abfb0cf9fd8380e2118754afa979c2ad445938a'),
]
DIRTY = 'iotest-dirtylog-10G-4M.vhdx'


def compare_check(s, label, path, *extra):
    """imgutil check and qemu-img check: the same stdout and exit code."""
    with s.check('%s: imgutil check %s matches qemu-img check' % (label, ' '.join(extra))):
        ours = s.imgutil('check', *extra, path, ok_codes=None)
        theirs = qemu_img('check', *extra, path, ok_codes=None)
        if (ours.returncode, ours.stdout) != (theirs.returncode, theirs.stdout):
            raise CheckFailed('imgutil: exit %d %r\nqemu-img: exit %d %r' % (
                ours.returncode, ours.stdout, theirs.returncode, theirs.stdout))


def sample_path(s, name):
    # Beside the project, or beside the folder of its worktrees.
    roots = [os.path.join(s.source_root, *up, 'shared', 'testdata', 'qemu-samples')
             for up in (('..',), ('..', '..'))]
    found = [os.path.join(r, name + '.bz2') for r in roots
             if os.path.exists(os.path.join(r, name + '.bz2'))]
    if not found:
        return None
    src = found[0]
    dst = s.path(name)
    with bz2.open(src, 'rb') as f, open(dst, 'wb') as out:
        shutil.copyfileobj(f, out)
    return dst


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def dirty_log(s):
    path = sample_path(s, DIRTY)
    if not path:
        print('skip %s: not found' % DIRTY)
        return
    label = 'dirty log sample'
    with s.check('%s: a read-only open is refused with qemu-img\'s reason' % label):
        ours = s.imgutil('info', path, ok_codes=(1,))
        theirs = qemu_img('info', path, ok_codes=(1,))
        want = theirs.stderr.split(': ', 1)[1]
        got = ours.stderr.split(': ', 1)[1]
        if got != want:
            raise CheckFailed('imgutil: %r\nqemu-img: %r' % (ours.stderr, theirs.stderr))
    with s.check('%s: imgutil check (read-only) fails as qemu-img check does' % label):
        ours = s.imgutil('check', path, ok_codes=None)
        theirs = qemu_img('check', path, ok_codes=None)
        if ours.returncode != theirs.returncode:
            raise CheckFailed('exit %d, qemu-img %d' % (ours.returncode, theirs.returncode))
    qcopy = s.path('dirty-qemu.vhdx')
    shutil.copyfile(path, qcopy)
    with s.check('%s: check -r all replays the log as qemu-img does' % label):
        ours = s.imgutil('check', '-r', 'all', path, ok_codes=None)
        theirs = qemu_img('check', '-r', 'all', qcopy, ok_codes=None)
        if (ours.returncode, ours.stdout) != (theirs.returncode, theirs.stdout):
            raise CheckFailed('imgutil: exit %d %r\nqemu-img: exit %d %r' % (
                ours.returncode, ours.stdout, theirs.returncode, theirs.stdout))
        # Past the headers (GUIDs and sequence numbers differ), the files are identical.
        with open(path, 'rb') as a, open(qcopy, 'rb') as b:
            da, db = a.read(), b.read()
        if da[192 * 1024:] != db[192 * 1024:]:
            raise CheckFailed('the replayed file differs from qemu-img\'s replay')
    with s.check('%s: the replayed image passes qemu-img check and compares equal' % label):
        qemu_img('check', path)
        qemu_img('compare', path, qcopy)
    case = interop.ImageCase(s, label + ' (replayed)', path, fmt='vhdx')
    interop.check_info(case)
    interop.check_map(case)


def main():
    s = interop.Suite('vhdx-interop', sys.argv)
    groups = s.args or ['made', 'samples']
    for label, size, opts, writes in CASES if 'made' in groups else []:
        path = s.path('%s.vhdx' % label.replace(' ', '_').replace(',', ''))
        args = ['create', '-q', '-f', 'vhdx'] + (['-o', opts] if opts else []) + [path, size]
        qemu_img(*[str(a) for a in args])
        if writes:
            interop.qemu_io(path, writes, fmt='vhdx')
        case = interop.ImageCase(s, label, path, fmt='vhdx')
        interop.check_image(case)
        compare_check(s, label, path)
        compare_check(s, label, path, '--output=json')
    for name, digest in SAMPLES if 'samples' in groups else []:
        path = sample_path(s, name)
        if not path:
            print('skip %s: not found' % name)
            continue
        with s.check('%s: imgutil convert -O raw has the sha256 of the README' % name):
            out = s.path(name + '.raw')
            s.imgutil('convert', '-O', 'raw', path, out)
            got = sha256(out)
            os.unlink(out)
            if got != digest:
                raise CheckFailed('sha256 %s, want %s' % (got, digest))
        case = interop.ImageCase(s, name, path, fmt='vhdx')
        interop.check_info(case)
        interop.check_map(case)
        compare_check(s, name, path)
    if 'samples' in groups:
        dirty_log(s)
    s.finish()


if __name__ == '__main__':
    main()
