#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Random operation sequences (writes at any offset and length, zeroes, discards, grows,
shrinks, flushes, reopens) applied to ASIF images through the public API by write_driver,
which checks every read against a shadow. Then the image must read as the shadow in the
independent reader (asif_ref.py), and its conversion to qcow2 here must equal the shadow in
`qemu-img compare` and pass `qemu-img check`. Sequences aim at chunk and sector edges, so
partly written chunks (status 11 and the bitmap) are exercised, and checked to be.

Environment: WRITE_TEST_SEED (a number or "random"), WRITE_TEST_SEQUENCES (default 6),
WRITE_TEST_OPS (default 40).

Then threads (thread_writer): several threads write, zero and flush their own chunks of one
handle, then race on pieces of the same chunks while others read; the image must read back as
expected here, in the independent reader and in qemu-img compare.

usage: test_asif_property.py WRITE_DRIVER THREAD_WRITER
"""

import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
sys.path.insert(0, HERE)
import writetest as wt  # noqa: E402
import asif_ref  # noqa: E402

MIB = 1 << 20


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def main():
    s = wt.Suite('asif-property', sys.argv, helpers=('thread_writer',))
    rng = random.Random(s.seed(20261207))
    sequences = wt.env_int('WRITE_TEST_SEQUENCES', 6)
    ops = wt.env_int('WRITE_TEST_OPS', 40)
    partial_seen = 0
    for n in range(sequences):
        size = rng.randrange(2, 9) * MIB + rng.choice((0, 512, 4096 + 512))
        seed = rng.randrange(1 << 32)
        name = 'p%d.asif' % n
        with s.check('sequence %d: %d ops from seed %d on %d bytes' % (n, ops, seed, size)):
            if n % 2:
                s.imgutil('create', '-f', 'asif', name, str(size))
            else:
                s.api('create', name, 'asif', size)
            proc = s.api('run', name, '-f', 'asif', '--random', seed, '--ops', ops,
                         '--cluster', MIB, '--discard', 'zeroes', '--min-size', MIB,
                         '--max-size', 10 * MIB, '--shadow-out', 'shadow%d.raw' % n,
                         ok_codes=None)
            if proc.returncode != 0:
                raise wt.CheckFailed('write_driver run: %s\n%s' % (
                    wt.describe_rc(proc.returncode), wt.clip(proc.stderr)))
            shadow = read_file(s.path('shadow%d.raw' % n))
            img = asif_ref.Image(read_file(s.path(name)))
            if img.read_all() != shadow:
                raise wt.CheckFailed('the independent reader reads other bytes than the shadow')
            partial_seen += img.chunk_statuses()[3]
            s.imgutil('convert', '-f', 'asif', '-O', 'qcow2', name, 'p%d.qcow2' % n)
            wt.qemu_img('compare', '-f', 'raw', '-F', 'qcow2', s.path('shadow%d.raw' % n),
                        s.path('p%d.qcow2' % n))
            wt.assert_qemu_check(s.path('p%d.qcow2' % n))
    with s.check('the sequences left partly written chunks (status 11) behind'):
        if sequences >= 4 and partial_seen == 0:
            raise wt.CheckFailed('no chunk with status 11: the bitmap path went untested')
    for n, seed in enumerate((rng.randrange(1 << 32), rng.randrange(1 << 32))):
        with s.check('threads: 4 threads on one handle, seed %d' % seed):
            name = 't%d.asif' % n
            s.imgutil('create', '-f', 'asif', name, str(24 * MIB))
            wt.run([s.helpers['thread_writer'], name, MIB, seed, 't%d.raw' % n, '-f', 'asif',
                    '--threads', 4], cwd=s.tmp)
            img = asif_ref.Image(read_file(s.path(name)))
            if img.read_all() != read_file(s.path('t%d.raw' % n)):
                raise wt.CheckFailed('the independent reader reads other bytes than expected')
            s.imgutil('convert', '-f', 'asif', '-O', 'raw', name, 't%d.back.raw' % n)
            wt.qemu_img('compare', '-f', 'raw', '-F', 'raw', s.path('t%d.raw' % n),
                        s.path('t%d.back.raw' % n))
    s.finish()


if __name__ == '__main__':
    main()
