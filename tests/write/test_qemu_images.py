#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes onto images that qemu-img and qemu-io made: compressed clusters (zlib and zstd),
backing chains three deep, extended L2 entries with mixed subcluster states, compat=0.10,
zero clusters of every kind (plain, allocated, over a backing file), preallocated images,
internal snapshots and many small L2 tables. Each image takes random operation sequences
(write_driver, checked against a shadow after every operation) starting from qemu's view of
its content; then qemu-img compare must find it equal to the shadow and qemu-img check clean.

Environment: WRITE_TEST_SEED, WRITE_TEST_OPS (default 40).

usage: test_qemu_images.py WRITE_DRIVER
"""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import writetest as wt  # noqa: E402

MIB = 1 << 20
SEQUENCES_PER_IMAGE = 2


class Recipe:
    """How qemu makes one image: name, cluster size, and the steps."""

    def __init__(self, label, cluster, make, compat='1.1', backing=False, snapshots=False,
                 subcluster=None):
        self.label, self.cluster, self.make = label, cluster, make
        self.compat, self.backing, self.snapshots = compat, backing, snapshots
        self.subcluster = subcluster


def random_raw(s, name, size, seed):
    return wt.write_file(s.path(name), wt.random_content(random.Random(seed), size))


def compressed(compression, cluster):
    def make(s, image):
        raw = random_raw(s, image + '.src', 12 * MIB, cluster)
        # Half the clusters compress well (repeated text), so sizes vary from cluster to cluster.
        with open(raw, 'r+b') as f:
            for k in range(0, 12 * MIB // cluster, 2):
                f.seek(k * cluster)
                f.write((b'compressible %d ' % k) * (cluster // 16))
        wt.qemu_img('convert', '-c', '-O', 'qcow2', '-o',
                    'cluster_size=%d,compression_type=%s' % (cluster, compression), raw, image,
                    cwd=s.tmp)
        os.unlink(raw)
    return make


def chain(top_opts, base_size, mid_size, top_size):
    def make(s, image):
        random_raw(s, image + '.base.raw', base_size, 11)
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b',
                    os.path.basename(image) + '.base.raw', '-F', 'raw', image + '.mid',
                    mid_size, cwd=s.tmp)
        wt.qemu_io(image + '.mid', ['write -P 0x4d 0 1M', 'write -P 0x4e 3000000 70000',
                                    'write -z 5M 100k', 'discard 1M 64k'], cwd=s.tmp)
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', top_opts, '-b',
                    os.path.basename(image) + '.mid', '-F', 'qcow2', image, top_size, cwd=s.tmp)
        wt.qemu_io(image, ['write -P 0x70 512k 1M', 'write -z 2M 70000',
                           'write -P 0x71 %d 4096' % (top_size - 4096)], cwd=s.tmp)
    return make


def extended_l2(cluster):
    sub = cluster // 32

    size = max(8 * MIB, 8 * cluster)

    def make(s, image):
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o',
                    'cluster_size=%d,extended_l2=on' % cluster, image, size, cwd=s.tmp)
        cmds = []
        for k in range(0, size // cluster, 3):
            base = k * cluster
            cmds += ['write -P %d %d %d' % (k % 250 + 1, base + sub * (k % 7), sub * 3),
                     'write -z %d %d' % (base + sub * 12, sub * 2),
                     'write -P 0x66 %d 100' % (base + sub * 20 + 7)]
        cmds += ['discard %d %d' % (cluster * 3, cluster * 2)]
        wt.qemu_io(image, cmds, cwd=s.tmp)
    return make


def with_backing_base(s, image, size):
    random_raw(s, image + '.base.raw', size, 5)
    return ['-b', os.path.basename(image) + '.base.raw', '-F', 'raw']


def zero_clusters(backing):
    def make(s, image):
        extra = with_backing_base(s, image, 8 * MIB) if backing else []
        wt.qemu_img('create', '-q', '-f', 'qcow2', *extra, image, 8 * MIB, cwd=s.tmp)
        wt.qemu_io(image, ['write -P 0x31 0 4M', 'write -z 0 64k', 'write -z -u 128k 128k',
                           'write -z 1M 200k', 'write -z 6M 1M', 'write -z -u 7M 512k'],
                   cwd=s.tmp)
    return make


def v2(backing):
    def make(s, image):
        extra = with_backing_base(s, image, 6 * MIB) if backing else []
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10,cluster_size=4096',
                    *extra, image, 8 * MIB, cwd=s.tmp)
        wt.qemu_io(image, ['write -P 0x20 0 2M', 'write -z 100k 100k',
                           'write -P 0x21 7000000 300000', 'discard 1M 64k'], cwd=s.tmp)
    return make


def preallocated(mode):
    def make(s, image):
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'preallocation=%s' % mode, image,
                    6 * MIB, cwd=s.tmp)
        wt.qemu_io(image, ['write -P 0x50 1M 1M', 'write -z 3M 64k'], cwd=s.tmp)
    return make


def snapshotted(s, image):
    wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', image, 8 * MIB,
                cwd=s.tmp)
    wt.qemu_io(image, ['write -P 0x61 0 3M'], cwd=s.tmp)
    wt.qemu_img('snapshot', '-c', 'one', image, cwd=s.tmp)
    wt.qemu_io(image, ['write -P 0x62 1M 3M', 'write -z 5M 1M'], cwd=s.tmp)
    wt.qemu_img('snapshot', '-c', 'two', image, cwd=s.tmp)


def many_l2_tables(s, image):
    wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=1',
                image, 6 * MIB, cwd=s.tmp)
    wt.qemu_io(image, ['write -P %d %d 70000' % (k + 1, k * 300000) for k in range(20)],
               cwd=s.tmp)


RECIPES = [
    Recipe('compressed, zlib, 64k clusters', 65536, compressed('zlib', 65536)),
    Recipe('compressed, zstd, 4k clusters', 4096, compressed('zstd', 4096)),
    Recipe('compressed, zlib, 2M clusters', 2 * MIB, compressed('zlib', 2 * MIB)),
    Recipe('backing chain raw <- qcow2 <- qcow2', 65536,
           chain('cluster_size=65536', 8 * MIB, 8 * MIB, 8 * MIB), backing=True),
    Recipe('backing chain, overlays larger than their backing files, extended L2', 65536,
           chain('cluster_size=65536,extended_l2=on', 4 * MIB, 6 * MIB, 10 * MIB),
           backing=True, subcluster=2048),
    Recipe('extended L2, 64k clusters, mixed subclusters', 65536, extended_l2(65536),
           subcluster=2048),
    Recipe('extended L2, 2M clusters, mixed subclusters', 2 * MIB, extended_l2(2 * MIB),
           subcluster=65536),
    Recipe('zero clusters', 65536, zero_clusters(False)),
    Recipe('zero clusters over a backing file', 65536, zero_clusters(True), backing=True),
    Recipe('compat=0.10', 4096, v2(False), compat='0.10'),
    Recipe('compat=0.10 over a backing file', 4096, v2(True), compat='0.10', backing=True),
    Recipe('preallocation=metadata', 65536, preallocated('metadata')),
    Recipe('preallocation=falloc', 65536, preallocated('falloc')),
    Recipe('internal snapshots', 4096, snapshotted, snapshots=True),
    Recipe('512-byte clusters, refcount_bits=1, many L2 tables', 512, many_l2_tables),
]


def run_case(s, n, r, seed, ops):
    image = 'qemu-%d.qcow2' % n
    if not os.path.exists(s.path(image)):
        r.make(s, image)
    start = 'qemu-%d-start.raw' % n
    wt.qemu_img('convert', '-O', 'raw', image, start, cwd=s.tmp)
    args = ['run', image, '-f', 'qcow2', '--random', seed, '--ops', ops, '--cluster', r.cluster,
            '--shadow-in', start, '--shadow-out', 'qemu-%d-expected.raw' % n,
            '--max-size', 16 * MIB, '--min-size', MIB]
    if r.subcluster:
        args += ['--subcluster', r.subcluster]
    if r.snapshots:
        args += ['--no-resize']  # qcow2 cannot resize an image with snapshots
    if r.backing and r.compat == '0.10':
        backing_raw = 'qemu-%d-backing.raw' % n
        backing = wt.qemu_info(image, cwd=s.tmp)['backing-filename']
        wt.qemu_img('convert', '-O', 'raw', backing, backing_raw, cwd=s.tmp)
        args += ['--discard', 'keep-or-backing', '--backing-raw', backing_raw,
                 '--resize-may-refuse']
    proc = s.api(*args, ok_codes=None)
    if proc.returncode != 0:
        raise wt.CheckFailed('write_driver %s\n  %s\n  operations:\n    %s' % (
            wt.describe_rc(proc.returncode), wt.clip(proc.stderr),
            proc.stdout.strip().replace('\n', '\n    ')))
    try:
        wt.assert_qemu_check(image, cwd=s.tmp)
        wt.assert_same_content('qemu-%d-expected.raw' % n, image, cwd=s.tmp)
    except wt.CheckFailed as e:
        raise wt.CheckFailed('%s\n  operations:\n    %s' % (
            e, proc.stdout.strip().replace('\n', '\n    ')))


def main():
    s = wt.Suite('qemu-images', sys.argv)
    master = s.seed(20240614)
    ops = wt.env_int('WRITE_TEST_OPS', 40)
    rng = random.Random(master)
    for n, r in enumerate(RECIPES):
        for k in range(SEQUENCES_PER_IMAGE):
            seed = rng.randrange(1 << 62)
            with s.check('%s: sequence %d (seed %d, %d ops)' % (r.label, k + 1, seed, ops)):
                run_case(s, n, r, seed, ops)
            if not s.last_ok:
                break
    s.finish()


if __name__ == '__main__':
    main()
