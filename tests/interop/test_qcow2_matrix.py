#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qcow2 images made by qemu-img/qemu-io, read back through libimgutil and compared with
what qemu-img reads, maps and reports.

usage: test_qcow2_matrix.py API_DRIVER GROUP
GROUP is one of: clusters, refcounts, compressed, extended-l2, odd-sizes, preallocation,
snapshots-bitmaps. Each group is its own meson test, so that they run in parallel.
"""

import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import ImageCase, check_image, create_qcow2, qemu_img, qemu_io  # noqa: E402

KiB = 1024
MiB = 1024 * KiB

CLUSTER_SIZES = [512 << i for i in range(13)]  # 512 B .. 2 MiB


def image_size_for(cluster):
    """Small images, but with room for twenty clusters."""
    return max(16 * MiB, 20 * cluster)


def standard_writes(suite, cluster, size):
    """A mix touching every kind of cluster: data across boundaries, random bytes, zero
    clusters over data and over nothing, a discarded cluster, a data cluster of zeros, a
    small write inside one cluster, and the last cluster of the image."""
    rnd = suite.random_file()
    c = cluster
    return [
        'write -s %s 0 %d' % (rnd, c + c // 2 + 7),
        'write -P 0x22 %d %d' % (3 * c - 100, c + 200),
        'write -s %s %d %d' % (rnd, 5 * c, 2 * c),
        'write -z %d %d' % (5 * c, c),
        'write -z -u %d %d' % (6 * c, c),
        'write -P 0x33 %d %d' % (8 * c, 2 * c),
        'discard %d %d' % (9 * c, c),
        'write -P 0 %d %d' % (11 * c, c),
        'write -s %s %d 1025' % (rnd, 13 * c + 511),
        'write -z %d %d' % (14 * c, 3 * c),
        'write -P 0x55 %d %d' % (size - c - 1000, c + 1000),
    ]


def qcow2_case(suite, label, options, cluster, size=None, writes=None, granule=None):
    size = size or image_size_for(cluster)
    path = suite.path(label + '.qcow2')
    if writes is None:
        writes = standard_writes(suite, cluster, size)
    create_qcow2(path, size, options=options, writes=writes)
    return ImageCase(suite, label, path, granule=granule or cluster)


def build_and_check(suite, label, make):
    """Makes an image with `make()` (an ImageCase), then runs every comparison. A recipe qemu
    itself cannot build is reported, not hidden."""
    try:
        case = make()
    except interop.CheckFailed as e:
        with suite.check('%s: build the image with qemu' % label):
            raise e
        return
    check_image(case)


# ---- groups -----------------------------------------------------------------------------

def group_clusters(s):
    for cluster in CLUSTER_SIZES:
        label = 'v3-cluster%d' % cluster
        build_and_check(s, label, lambda: qcow2_case(
            s, label, 'compat=1.1,cluster_size=%d' % cluster, cluster))
    for cluster in (512, 4 * KiB, 64 * KiB, 2 * MiB):
        label = 'v2-cluster%d' % cluster
        build_and_check(s, label, lambda: qcow2_case(
            s, label, 'compat=0.10,cluster_size=%d' % cluster, cluster))


def group_refcounts(s):
    for bits in (1, 2, 4, 8, 16, 32, 64):
        label = 'refcount%d-cluster64k' % bits
        build_and_check(s, label, lambda: qcow2_case(
            s, label, 'refcount_bits=%d' % bits, 64 * KiB))
    # Small clusters with wide refcounts need many refcount blocks; narrow ones few.
    for bits in (1, 64):
        label = 'refcount%d-cluster512' % bits
        build_and_check(s, label, lambda: qcow2_case(
            s, label, 'refcount_bits=%d,cluster_size=512' % bits, 512))


def compressible_source(s):
    """An 8 MiB raw file: incompressible bytes, text-like runs, zeros and mixtures, so that
    `qemu-img convert -c` writes compressed, uncompressed and no clusters."""
    path = s.path('compress-source.raw')
    if os.path.exists(path):
        return path
    r = random.Random(7)
    words = [b'imgutil', b'qcow2', b'cluster', b'refcount', b'snapshot', b'zstd', b'zlib',
             b'\n', b' ', b'0123456789']
    text = b''.join(r.choice(words) for _ in range(400000))
    with open(path, 'wb') as f:
        f.write(r.randbytes(MiB))                      # [0, 1M): stored as is
        f.write(text[:MiB])                            # [1M, 2M): compresses well
        f.write(bytes(MiB))                            # [2M, 3M): zero
        for k in range(64):                            # [3M, 4M): alternating
            f.write(r.randbytes(8 * KiB) if k % 2 else text[k * 8 * KiB:(k + 1) * 8 * KiB])
        f.write(bytes(3 * MiB))                        # [4M, 7M): zero
        f.write(text[MiB:2 * MiB - 12345])             # [7M, 8M): text, then zeros
        f.write(bytes(12345))
    return path


def compressed_case(s, label, options, cluster, after=()):
    def make():
        path = s.path(label + '.qcow2')
        qemu_img('convert', '-c', '-O', 'qcow2', '-o', options, compressible_source(s), path)
        if after:
            qemu_io(path, after)
        return ImageCase(s, label, path, granule=cluster)
    build_and_check(s, label, make)


def group_compressed(s):
    for ctype in ('zlib', 'zstd'):
        for cluster in (4 * KiB, 64 * KiB, 2 * MiB):
            label = 'compressed-%s-cluster%d' % (ctype, cluster)
            compressed_case(s, label, 'compression_type=%s,cluster_size=%d' % (ctype, cluster),
                            cluster)
        # Rewrites of compressed clusters: partial overwrite, zeroing, discard, and
        # compressed writes through qemu-io.
        c = 64 * KiB
        label = 'compressed-%s-rewritten' % ctype
        compressed_case(s, label, 'compression_type=%s' % ctype, c, after=[
            'write -P 0x77 %d 300' % (MiB + 100),
            'write -z %d %d' % (MiB + 2 * c, c),
            'discard %d %d' % (MiB + 4 * c, c),
            'write -c -s %s %d %d' % (s.random_file(), 5 * MiB, c),
            'write -c -P 0x66 %d %d' % (6 * MiB, 2 * c),
        ])
    compressed_case(s, 'compressed-v2-zlib', 'compat=0.10', 64 * KiB)
    label = 'zero-clusters-v3'
    build_and_check(s, label, lambda: qcow2_case(s, label, None, 64 * KiB, writes=[
        'write -s %s 0 %d' % (s.random_file(), 4 * MiB),
        'write -z %d %d' % (64 * KiB, 128 * KiB),
        'write -z -u %d %d' % (MiB, 192 * KiB),
        'write -z %d %d' % (8 * MiB, 4 * MiB),
        'write -z %d 1000' % (3 * MiB + 77),
    ]))
    label = 'zero-clusters-v2'
    build_and_check(s, label, lambda: qcow2_case(s, label, 'compat=0.10', 64 * KiB, writes=[
        'write -s %s 0 %d' % (s.random_file(), 4 * MiB),
        'write -z %d %d' % (64 * KiB, 128 * KiB),
        'write -z -u %d %d' % (MiB, 192 * KiB),
    ]))


def subcluster_writes(s, cluster):
    """4 KiB pieces inside clusters, so that subclusters are allocated, zero and unallocated
    side by side."""
    rnd = s.random_file()
    c = cluster
    return [
        'write -s %s 4k 4k' % rnd,
        'write -P 0x21 12k 4k',
        'write -z 32k 4k',
        'write -P 0x31 %d 8k' % (c - 4 * KiB),
        'write -P 0x41 %d %d' % (2 * c, c),
        'write -z -u %d 4k' % (2 * c + 8 * KiB),
        'discard %d 4k' % (2 * c + 16 * KiB),
        'write -s %s %d 1000' % (rnd, 4 * c + 3 * KiB),
        'write -c -P 0x51 %d %d' % (6 * c, c),
        'write -z %d %d' % (8 * c, 3 * c),
        'write -P 0x61 %d 4k' % (9 * c + 20 * KiB),
    ]


def group_extended_l2(s):
    for cluster in (64 * KiB, 32 * KiB, 2 * MiB):
        label = 'extended-l2-cluster%d' % cluster
        build_and_check(s, label, lambda: qcow2_case(
            s, label, 'extended_l2=on,cluster_size=%d' % cluster, cluster,
            writes=subcluster_writes(s, cluster), granule=cluster // 32))
    # Over a backing file, unallocated subclusters of allocated clusters read from below.
    label = 'extended-l2-over-backing'

    def make():
        base = create_qcow2(s.path('xl2-base.qcow2'), 16 * MiB, writes=[
            'write -s %s 0 %d' % (s.random_file(), 16 * MiB)])
        top = s.path('xl2-top.qcow2')
        create_qcow2(top, 16 * MiB, options='extended_l2=on', backing=os.path.basename(base),
                     writes=subcluster_writes(s, 64 * KiB))
        return ImageCase(s, label, top, granule=2 * KiB, has_backing=True)
    build_and_check(s, label, make)


def group_odd_sizes(s):
    for cluster, size in ((64 * KiB, 5 * MiB + 1536), (2 * MiB, 3 * MiB + 512),
                          (4 * KiB, 4 * MiB + 2560), (512, MiB + 512 * 3)):
        label = 'odd-size%d-cluster%d' % (size, cluster)
        rnd = s.random_file()
        build_and_check(s, label, lambda: qcow2_case(
            s, label, 'cluster_size=%d' % cluster, cluster, size=size, writes=[
                'write -s %s 0 %d' % (rnd, min(size, 3 * cluster + 99)),
                'write -s %s %d 3000' % (rnd, size - 3000),
                'write -z %d 512' % (size - 512),
                'write -P 0x71 %d 1' % (size - 1),
            ]))


def group_preallocation(s):
    for mode in ('metadata', 'falloc', 'full'):
        for size in (8 * MiB, 8 * MiB + 1536):
            label = 'prealloc-%s-size%d' % (mode, size)
            rnd = s.random_file()
            build_and_check(s, label, lambda: qcow2_case(
                s, label, 'preallocation=%s' % mode, 64 * KiB, size=size, writes=[
                    'write -s %s %d %d' % (rnd, 100 * KiB, 300 * KiB),
                    'write -z %d %d' % (MiB, 128 * KiB),
                    'write -P 0 %d %d' % (2 * MiB, 64 * KiB),
                    'discard %d %d' % (3 * MiB, 64 * KiB),
                    'write -P 0x19 %d 777' % (size - 777),
                ]))
        label = 'prealloc-%s-untouched' % mode
        build_and_check(s, label, lambda: qcow2_case(
            s, label, 'preallocation=%s,cluster_size=4096' % mode, 4 * KiB, size=4 * MiB,
            writes=[]))


def set_dirty_bit(path):
    """Marks a lazy-refcounts image dirty, as a VM that died with it open leaves it."""
    with open(path, 'r+b') as f:
        header = bytearray(f.read(104))
        incompatible = struct.unpack_from('>Q', header, 72)[0]
        struct.pack_into('>Q', header, 72, incompatible | 1)
        f.seek(0)
        f.write(header)


def group_snapshots_bitmaps(s):
    rnd = s.random_file()

    def snapshots(label, options):
        def make():
            path = s.path(label + '.qcow2')
            create_qcow2(path, 16 * MiB, options=options, writes=[
                'write -s %s 0 %d' % (rnd, 3 * MiB)])
            qemu_img('snapshot', '-c', 'first', path)
            qemu_io(path, ['write -P 0x42 %d %d' % (MiB - 100, MiB), 'discard %d %d' % (
                2 * MiB, 512 * KiB)])
            qemu_img('snapshot', '-c', 'second snapshot', path)
            qemu_io(path, ['write -z 0 %d' % (256 * KiB), 'write -s %s %d %d' % (
                rnd, 10 * MiB + 3, 70000)])
            qemu_img('snapshot', '-c', 'third', path)
            qemu_img('snapshot', '-d', 'first', path)
            qemu_io(path, ['write -P 0x43 %d 4096' % (5 * MiB)])
            return ImageCase(s, label, path, granule=64 * KiB)
        build_and_check(s, label, make)

    snapshots('snapshots-v3', None)
    snapshots('snapshots-v2', 'compat=0.10')
    snapshots('snapshots-extended-l2', 'extended_l2=on')

    label = 'bitmaps'

    def make_bitmaps():
        path = s.path(label + '.qcow2')
        create_qcow2(path, 16 * MiB, writes=['write -s %s 0 %d' % (rnd, MiB)])
        qemu_img('bitmap', '--add', path, 'bm-default')
        qemu_img('bitmap', '--add', '-g', '128k', path, 'bm-128k')
        qemu_img('bitmap', '--add', '--disable', path, 'bm-disabled')
        qemu_io(path, ['write -P 0x44 %d %d' % (4 * MiB, 256 * KiB)])
        return ImageCase(s, label, path, granule=64 * KiB)
    build_and_check(s, label, make_bitmaps)

    label = 'snapshots-and-bitmaps'

    def make_both():
        path = s.path(label + '.qcow2')
        create_qcow2(path, 16 * MiB, writes=['write -s %s 0 %d' % (rnd, 2 * MiB)])
        qemu_img('bitmap', '--add', path, 'tracking')
        qemu_img('snapshot', '-c', 'before-update', path)
        qemu_io(path, ['write -P 0x45 %d %d' % (MiB, MiB)])
        return ImageCase(s, label, path, granule=64 * KiB)
    build_and_check(s, label, make_both)

    label = 'dirty-lazy-refcounts'

    def make_dirty():
        path = s.path(label + '.qcow2')
        create_qcow2(path, 16 * MiB, options='lazy_refcounts=on', writes=[
            'write -s %s 0 %d' % (rnd, MiB), 'write -z %d %d' % (2 * MiB, MiB)])
        set_dirty_bit(path)
        return ImageCase(s, label, path, granule=64 * KiB)
    build_and_check(s, label, make_dirty)


GROUPS = {
    'clusters': group_clusters,
    'refcounts': group_refcounts,
    'compressed': group_compressed,
    'extended-l2': group_extended_l2,
    'odd-sizes': group_odd_sizes,
    'preallocation': group_preallocation,
    'snapshots-bitmaps': group_snapshots_bitmaps,
}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in GROUPS:
        print('usage: %s API_DRIVER {%s}' % (sys.argv[0], ','.join(GROUPS)))
        return 2
    suite = interop.Suite('qcow2-' + sys.argv[2], sys.argv[:2])
    GROUPS[sys.argv[2]](suite)
    suite.finish()


if __name__ == '__main__':
    sys.exit(main())
