#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""check and repair of Parallels images, held against qemu-img 7.2 on copies of the same
crafted images: the findings it prints, its report, its exit code, and the file it leaves.

  - the in-use marker: set while a writer has the image open (a writer killed before its
    first data write leaves it), reported by check, cleared by `check -r all` (and by
    `-r leaks`, whose writer closes cleanly, as qemu-img's does); an image left in use is not
    opened for writing but by check;
  - catalog entries past the end of the file (corruptions, repaired by dropping them);
  - space past the last cluster (leaks, repaired by cutting the file).

usage: test_check.py WRITE_DRIVER KILLPOINT_SO
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prltest as pt  # noqa: E402

MIB = 1 << 20


def make(s, name, size=4 * MIB, cluster=65536):
    img = s.path(name)
    pt.must(s.qemu('create', '-q', '-f', 'parallels', '-o', 'cluster_size=%d' % cluster, img,
                   size), 'qemu-img create')
    s.qemu_io(img, 'write -P 0x11 0 200k', 'write -P 0x22 1M 64k', 'write -P 0x33 3M 100k')
    return img


def both_ways(s, img, *args):
    """Runs `check ARGS` with imgutil on one copy and qemu-img on another: same output, same
    exit code, and the same bytes left in both files unless told otherwise."""
    a, b = s.path('a-' + os.path.basename(img)), s.path('b-' + os.path.basename(img))
    shutil.copyfile(img, a)
    shutil.copyfile(img, b)
    s.same_answer('check', *args, a=a, b=b, stderr=True)
    return a, b


def identical(a, b):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        if fa.read() != fb.read():
            raise pt.Failed('imgutil left %s other than qemu-img left %s' % (a, b))


def main():
    s = pt.Suite('parallels-check')
    if len(sys.argv) < 3:
        print('usage: test_check.py WRITE_DRIVER KILLPOINT_SO')
        sys.exit(2)
    driver, killpoint = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])

    base = make(s, 'base.prl')
    pt.must(s.qemu('convert', '-O', 'raw', base, s.path('base.raw')), 'qemu-img convert')
    run_args = ['run', '-f', 'parallels', '--script', '-', '--no-resize', '--shadow-in',
                s.path('base.raw')]
    with s.check('a clean image checks clean, as qemu-img says'):
        both_ways(s, base)
        both_ways(s, base, '--output=json')

    inuse = s.path('inuse.prl')
    shutil.copyfile(base, inuse)
    pt.patch(inuse, pt.OFF['inuse'], 'I', pt.INUSE)
    for args in ((), ('--output=json',), ('-r', 'leaks'), ('-r', 'all')):
        with s.check('in-use marker: check %s as qemu-img' % ' '.join(args)):
            a, b = both_ways(s, inuse, *args)
            identical(a, b)
            if '-r' in args and pt.read_field(a, pt.OFF['inuse'], 'I') != 0:
                raise pt.Failed('the repair left the marker')
            if '-r' not in args and pt.read_field(a, pt.OFF['inuse'], 'I') != pt.INUSE:
                raise pt.Failed('a plain check changed the marker')

    with s.check('in-use marker: an image left in use is not opened for writing'):
        proc = pt.run([driver, 'run', inuse] + run_args[1:],
                      cwd=s.tmp, input='write 0 4096 1\n')
        if proc.returncode == 0 or 'Image was not closed correctly; cannot be opened read/write' \
                not in proc.stderr:
            raise pt.Failed('exit %d: %s' % (proc.returncode, proc.stderr))
        proc = pt.run(['qemu-io', '-c', 'write 0 4096', inuse], cwd=s.tmp)
        if 'Image was not closed correctly; cannot be opened read/write' not in proc.stderr:
            raise pt.Failed('qemu-io says otherwise: %s' % proc.stderr)

    with s.check('in-use marker: set while a writer has the image open, cleared on close'):
        img = s.path('killed.prl')
        shutil.copyfile(base, img)
        env = pt.preload_env(killpoint, KILLPOINT_AT=2)
        # The first write is the marker; the process dies before the second.
        proc = pt.run([driver, 'run', img] + run_args[1:],
                      cwd=s.tmp, env=env, input='write 0 4096 7\n')
        if proc.returncode >= 0:
            raise pt.Failed('the writer was not killed: exit %d %s' % (proc.returncode,
                                                                       proc.stderr))
        if pt.read_field(img, pt.OFF['inuse'], 'I') != pt.INUSE:
            raise pt.Failed('no in-use marker while the writer had the image open')
        a, b = both_ways(s, img)
        a, b = both_ways(s, img, '-r', 'all')
        identical(a, b)
        pt.must(s.qemu('check', a), 'qemu-img check after the repair')
        shutil.copyfile(base, img)
        pt.must(pt.run([driver, 'run', img] + run_args[1:],
                       cwd=s.tmp, input='write 0 4096 7\n'), 'write_driver run')
        if pt.read_field(img, pt.OFF['inuse'], 'I') != 0:
            raise pt.Failed('a clean close left the marker')
        pt.must(s.qemu('check', img), 'qemu-img check after a clean close')

    outside = s.path('outside.prl')
    shutil.copyfile(base, outside)
    pt.patch(outside, pt.HEADER + 4 * 20, 'I', 5000)  # cluster 20 at 5000 * 64 KiB
    pt.patch(outside, pt.HEADER + 4 * 21, 'I', 6000)
    for args in ((), ('--output=json',), ('-r', 'leaks')):
        with s.check('clusters outside the image: check %s as qemu-img' % ' '.join(args)):
            a, b = both_ways(s, outside, *args)
            identical(a, b)
    with s.check('clusters outside the image: check -r all as qemu-img, and the file is whole'):
        a, b = both_ways(s, outside, '-r', 'all')
        # qemu-img 7.2 grows its copy to the dropped cluster's end when it closes; here the
        # file ends after the last cluster still referenced, so it checks clean.
        pt.must(s.qemu('check', a), 'qemu-img check of the repaired image')
        pt.must(s.qemu('compare', a, base), 'qemu-img compare with the image before damage')

    leaky = s.path('leaky.prl')
    shutil.copyfile(base, leaky)
    with open(leaky, 'ab') as f:
        f.write(os.urandom(100000))  # not a whole sector: qemu counts whole sectors
    for args in ((), ('--output=json',), ('-r', 'leaks'), ('-r', 'all')):
        with s.check('leaked space: check %s as qemu-img' % ' '.join(args)):
            a, b = both_ways(s, leaky, *args)
            identical(a, b)
    with s.check('leaked space and the in-use marker together: check -r all as qemu-img'):
        pt.patch(leaky, pt.OFF['inuse'], 'I', pt.INUSE)
        a, b = both_ways(s, leaky, '-r', 'all')
        identical(a, b)

    with s.check('an empty image with small clusters: the report is qemu-img\'s, the repair '
                 'keeps the catalog'):
        small = s.path('small.prl')
        pt.must(s.qemu('create', '-q', '-f', 'parallels', '-o', 'cluster_size=512', small,
                       '64M'), 'qemu-img create')
        both_ways(s, small)
        a = s.path('small-fixed.prl')
        shutil.copyfile(small, a)
        s.ours('check', '-r', 'all', a)
        identical(a, small)
        pt.must(s.qemu('compare', a, small), 'qemu-img compare')
    s.finish()


if __name__ == '__main__':
    main()
