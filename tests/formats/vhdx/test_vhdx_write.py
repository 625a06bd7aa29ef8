#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""VHDX images written here, read by qemu-img:
  - imgutil create with every option: the same "Formatting" line, file size and info as
    qemu-img create, qemu-img check clean; the option errors worded as qemu-img's;
  - imgutil convert to VHDX (from raw and from a qcow2 made by qemu-img) compares equal in
    qemu-img compare and checks clean; VHDX made by qemu-img converts back here;
  - random writes, zeroes, discards, flushes and reopens (write_driver) on images made here
    and by qemu-img, against a shadow: qemu-img check clean, qemu-img compare equal.

Environment: WRITE_TEST_SEED, VHDX_PROPERTY_RUNS (default 6).

  - several threads writing one handle at once, racing to allocate the same blocks
    (thread_writer): the content as expected, qemu-img check clean.

usage: test_vhdx_write.py WRITE_DRIVER THREAD_WRITER
"""

import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
import writetest as wt  # noqa: E402

sys.path.insert(0, HERE)
import vhdxlib as vx  # noqa: E402

MIB = 1 << 20

CREATE_OPTIONS = [
    '', 'subformat=fixed', 'subformat=dynamic', 'block_state_zero=off',
    'subformat=fixed,block_state_zero=off', 'block_size=1M', 'block_size=256M',
    'block_size=500k', 'block_size=300M', 'log_size=3M', 'log_size=1000k',
    'block_size=2M,log_size=2M,block_state_zero=on',
]
SIZES = [20 * MIB, 1000, 3 * (1 << 30)]

BAD_OPTIONS = [
    ('block_size=3M', 1 * MIB), ('log_size=0', 1 * MIB), ('log_size=5G', 1 * MIB),
    ('', 65 << 40), ('subformat=sparse', 1 * MIB), ('bogus=1', 1 * MIB),
]


def info_without_file(info):
    return {k: v for k, v in info.items() if k not in ('filename', 'actual-size')}


def create_matrix(s):
    for i, opts in enumerate(CREATE_OPTIONS):
        # Every size with the defaults (the block size follows the size), one size after.
        for size in SIZES if i == 0 else SIZES[:1]:
            label = 'create -o %s %d' % (opts or '(defaults)', size)
            with s.check(label + ': as qemu-img create'):
                ours, theirs = 'c-ours.vhdx', 'c-qemu.vhdx'
                for name in (ours, theirs):
                    if os.path.exists(s.path(name)):
                        os.unlink(s.path(name))
                extra = ['-o', opts] if opts else []
                a = s.imgutil('create', '-f', 'vhdx', *extra, ours, str(size))
                b = wt.qemu_img('create', '-f', 'vhdx', *extra, theirs, str(size), cwd=s.tmp)
                if a.stdout.replace(ours, theirs) != b.stdout:
                    raise wt.CheckFailed('Formatting line %r, qemu-img %r' % (a.stdout,
                                                                           b.stdout))
                size_a, size_b = (os.path.getsize(s.path(n)) for n in (ours, theirs))
                if size_a != size_b:
                    raise wt.CheckFailed('file of %d bytes, qemu-img makes %d' % (size_a,
                                                                                size_b))
                ia = info_without_file(wt.qemu_info(ours, cwd=s.tmp))
                ib = info_without_file(wt.qemu_info(theirs, cwd=s.tmp))
                if ia != ib:
                    raise wt.CheckFailed('qemu-img info %s, of qemu-img\'s image %s' % (ia, ib))
                wt.assert_qemu_check(ours, fmt='vhdx', cwd=s.tmp)
    for opts, size in BAD_OPTIONS:
        with s.check('create -o %s %d: refused as qemu-img refuses it' % (opts, size)):
            extra = ['-o', opts] if opts else []
            a = s.imgutil('create', '-f', 'vhdx', *extra, 'bad.vhdx', str(size),
                          ok_codes=None)
            b = wt.qemu_img('create', '-f', 'vhdx', *extra, 'bad.vhdx', str(size),
                            cwd=s.tmp, ok_codes=None)
            reason_a = a.stderr.strip().split(': ', 2)[-1]
            reason_b = b.stderr.strip().split(': ', 2)[-1]
            if a.returncode != 1 or b.returncode != 1 or reason_a != reason_b:
                raise wt.CheckFailed('imgutil: exit %d %r; qemu-img: exit %d %r' % (
                    a.returncode, a.stderr, b.returncode, b.stderr))
    with s.check('create -o help: as qemu-img'):
        a = s.imgutil('create', '-f', 'vhdx', '-o', 'help')
        b = wt.qemu_img('create', '-f', 'vhdx', '-o', 'help', cwd=s.tmp)
        ours = [line for line in a.stdout.splitlines() if line.startswith('  ')]
        theirs = [line for line in b.stdout.splitlines() if line.startswith('  ')]
        if ours != theirs:
            raise wt.CheckFailed('imgutil %r\nqemu-img %r' % (ours, theirs))


def convert_checks(s, rng):
    size = 24 * MIB + 4096
    content = wt.random_content(rng, size)
    wt.write_file(s.path('src.raw'), content)
    for opts in ('', 'subformat=fixed', 'block_state_zero=off,block_size=1M',
                 'block_size=4M,log_size=2M'):
        label = 'convert raw -> vhdx -o %s' % (opts or '(defaults)')
        with s.check(label + ': qemu-img compare equal, check clean'):
            out = 'conv.vhdx'
            if os.path.exists(s.path(out)):
                os.unlink(s.path(out))
            s.imgutil('convert', '-O', 'vhdx', *(['-o', opts] if opts else []), 'src.raw', out)
            wt.assert_qemu_check(out, fmt='vhdx', cwd=s.tmp)
            wt.assert_same_content('src.raw', out, fmt='vhdx', cwd=s.tmp)
    with s.check('convert qcow2 (qemu-img) -> vhdx -> qcow2 here: equal'):
        wt.qemu_img('convert', '-O', 'qcow2', 'src.raw', 'src.qcow2', cwd=s.tmp)
        for name in ('q.vhdx', 'back.qcow2'):
            if os.path.exists(s.path(name)):
                os.unlink(s.path(name))
        s.imgutil('convert', '-O', 'vhdx', 'src.qcow2', 'q.vhdx')
        wt.assert_qemu_check('q.vhdx', fmt='vhdx', cwd=s.tmp)
        s.imgutil('convert', '-O', 'qcow2', 'q.vhdx', 'back.qcow2')
        wt.assert_same_content('src.raw', 'back.qcow2', fmt='qcow2', cwd=s.tmp)
    with s.check('qemu-img convert raw -> vhdx, imgutil convert -> raw: equal'):
        wt.qemu_img('convert', '-O', 'vhdx', 'src.raw', 'qemu.vhdx', cwd=s.tmp)
        s.imgutil('convert', '-O', 'raw', 'qemu.vhdx', 'back.raw')
        with open(s.path('back.raw'), 'rb') as f:
            if f.read() != content:
                raise wt.CheckFailed('the content differs')
    with s.check('imgutil compare of the VHDX and the raw source: identical'):
        proc = s.imgutil('compare', 'src.raw', 'qemu.vhdx', ok_codes=None)
        if proc.returncode != 0:
            raise wt.CheckFailed('exit %d: %s %s' % (proc.returncode, proc.stdout, proc.stderr))


def property_runs(s, rng):
    runs = wt.env_int('VHDX_PROPERTY_RUNS', 6)
    for n in range(runs):
        seed = rng.randrange(1 << 62)
        block = rng.choice((1, 2, 8))
        size = rng.choice((5, 12, 17)) * MIB + rng.choice((0, 512, 65536))
        opts = 'block_size=%dM' % block + rng.choice(('', ',block_state_zero=off',
                                                      ',subformat=fixed'))
        made_by = 'qemu-img' if n % 2 else 'imgutil'
        label = 'property %d (seed %d, %s, %s, %d bytes)' % (n, seed, made_by, opts, size)
        with s.check(label):
            image = 'prop-%d.vhdx' % n
            if made_by == 'qemu-img':
                wt.qemu_img('create', '-q', '-f', 'vhdx', '-o', opts, image, str(size),
                            cwd=s.tmp)
            else:
                s.api('create', image, 'vhdx', size, opts)
            shadow = 'prop-%d.raw' % n
            s.api('run', image, '-f', 'vhdx', '--random', seed, '--ops', 60, '--cluster',
                  rng.choice((4096, 65536, 1 << 20)), '--no-resize', '--discard', 'hint',
                  '--shadow-out', shadow)
            wt.assert_qemu_check(image, fmt='vhdx', cwd=s.tmp)
            wt.assert_same_content(shadow, image, fmt='vhdx', cwd=s.tmp)
            os.unlink(s.path(image))
            os.unlink(s.path(shadow))


def hostile_log_place(s):
    """A header that puts the log past the end of the file: reading works, but the first
    metadata update is refused rather than written a terabyte away."""
    with s.check('a log placed past the end of the file: the first allocation is refused'):
        image = 'far-log.vhdx'
        s.api('create', image, 'vhdx', 4 * MIB, 'block_size=1M')
        img = vx.Image(s.path(image))
        header = img.active_header()
        struct.pack_into('<Q', header, 72, 1 << 40)
        img.put_headers(header)
        img.save()
        wt.write_file(s.path('far.ops'), b'write 0 4096 7\n')
        proc = s.api('run', image, '-f', 'vhdx', '--script', 'far.ops', '--no-resize',
                     ok_codes=None)
        if proc.returncode == 0 or 'past the end of the file' not in proc.stderr:
            raise wt.CheckFailed('exit %d: %s' % (proc.returncode, wt.clip(proc.stderr)))
        if os.path.getsize(s.path(image)) > 64 * MIB:
            raise wt.CheckFailed('the file grew to %d bytes' % os.path.getsize(s.path(image)))


def differencing_refused(s):
    """Writing a differencing image is refused (QEMU 7.2 does not open them at all): the
    write fails with a reason and the file is left as it was."""
    with s.check('a write to a differencing image is refused, the file unchanged'):
        s.api('create', 'parent.vhdx', 'vhdx', 4 * MIB, 'block_size=1M')
        s.api('create', 'diff.vhdx', 'vhdx', 4 * MIB, 'block_size=1M,block_state_zero=off')
        img = vx.Image(s.path('diff.vhdx'))
        vx.make_differencing(img, 'parent.vhdx')
        img.save()
        before = open(s.path('diff.vhdx'), 'rb').read()
        wt.write_file(s.path('one.ops'), b'write 4096 4096 3\n')
        proc = s.api('run', 'diff.vhdx', '-f', 'vhdx', '--script', 'one.ops', '--no-resize',
                     ok_codes=None)
        if proc.returncode == 0 or 'writing differencing images is not supported' not in \
                proc.stderr:
            raise wt.CheckFailed('exit %d: %s' % (proc.returncode, wt.clip(proc.stderr)))
        after = open(s.path('diff.vhdx'), 'rb').read()
        # The headers take this session's GUID on a read-write open; nothing else changes.
        if before[192 * 1024:] != after[192 * 1024:]:
            raise wt.CheckFailed('the file changed past its headers')


def threads(s):
    with s.check('four threads on one handle, racing for the same blocks'):
        image = 'threads.vhdx'
        s.api('create', image, 'vhdx', 24 * MIB, 'block_size=1M')
        wt.run([s.helpers['thread_writer'], image, str(MIB), '11', 'threads.raw', '-f', 'vhdx',
                '--threads', '4'], cwd=s.tmp)
        wt.assert_qemu_check(image, fmt='vhdx', cwd=s.tmp)
        wt.assert_same_content('threads.raw', image, fmt='vhdx', cwd=s.tmp)


def main():
    s = wt.Suite('vhdx-write', sys.argv, helpers=('thread_writer',))
    rng = random.Random(s.seed(20261206))
    create_matrix(s)
    convert_checks(s, rng)
    property_runs(s, rng)
    hostile_log_place(s)
    differencing_refused(s)
    threads(s)
    s.finish()


if __name__ == '__main__':
    main()
