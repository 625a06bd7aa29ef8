#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Threads on one handle (thread_writer): writers on their own clusters, writers on adjacent
pieces of the same clusters (racing to allocate and copy-on-write them), and readers of
settled ranges while writers write elsewhere in the same clusters. Each image gets two rounds,
the second over the clusters the first allocated. Afterwards the content must be what the
threads wrote (img_pread and qemu-img compare) and qemu-img check must be clean.

usage: test_threads.py WRITE_DRIVER THREAD_WRITER
"""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import writetest as wt  # noqa: E402

MIB = 1 << 20

# (label, cluster size, creation options or 'raw', size, threads)
CONFIGS = [
    ('64k clusters', 65536, 'cluster_size=65536', 32 * MIB, 4),
    ('512-byte clusters', 512, 'cluster_size=512', 4 * MIB, 4),
    ('4k clusters over a backing file, refcount_bits=1', 4096,
     'cluster_size=4096,refcount_bits=1,backing', 16 * MIB, 6),
    ('64k clusters, extended L2', 65536, 'cluster_size=65536,extended_l2=on', 16 * MIB, 8),
    ('2M clusters, extended L2, over a backing file', 2 * MIB,
     'cluster_size=2097152,extended_l2=on,backing', 32 * MIB, 4),
    ('compat=0.10 over a backing file', 65536, 'compat=0.10,backing', 16 * MIB, 4),
    ('raw', 4096, 'raw', 16 * MIB, 4),
]


def main():
    s = wt.Suite('threads', sys.argv, helpers=('thread_writer',))
    master = s.seed(20240613)
    rng = random.Random(master)
    for n, (label, cluster, opts, size, threads) in enumerate(CONFIGS):
        fmt = 'raw' if opts == 'raw' else 'qcow2'
        image = 'threads-%d.%s' % (n, fmt)
        start = 'threads-%d-start.raw' % n
        content = bytes(size)
        if 'backing' in opts:
            content = wt.random_content(rng, size)
            wt.write_file(s.path('threads-%d-base.raw' % n), content)
            opts = opts.replace('backing', 'backing_file=threads-%d-base.raw,backing_fmt=raw' % n)
        wt.write_file(s.path(start), content)
        for round_ in range(2):
            seed = rng.randrange(1 << 62)
            expected = 'threads-%d-expected-%d.raw' % (n, round_)
            with s.check('%s, round %d (seed %d, %d threads)' % (label, round_ + 1, seed,
                                                                 threads)):
                if round_ == 0 and fmt == 'raw':
                    s.api('create', image, 'raw', size)
                elif round_ == 0:
                    s.api('create', image, 'qcow2', size, opts)
                proc = wt.run([s.helpers['thread_writer'], image, cluster, seed, expected,
                               '-f', fmt, '--shadow-in', start, '--threads', threads],
                              cwd=s.tmp, ok_codes=None)
                if proc.returncode != 0:
                    raise wt.CheckFailed('thread_writer: %s\n  %s' % (
                        wt.describe_rc(proc.returncode), wt.clip(proc.stderr)))
                if fmt == 'qcow2':
                    wt.assert_qemu_check(image, cwd=s.tmp)
                wt.assert_same_content(expected, image, fmt, cwd=s.tmp)
                start = expected
            if not s.last_ok:
                break
    s.finish()


if __name__ == '__main__':
    main()
