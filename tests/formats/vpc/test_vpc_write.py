#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The VHD writer against qemu-img.

Property tests: random sequences of writes, zeroes, discards, flushes and reopens through the
public API (write_driver) on fixed and dynamic disks made by img_create and by qemu-img create
(with and without force_size), checked against a shadow after every operation; at the end
qemu-img must read the image as the shadow (qemu-img compare -F vpc) with the same virtual
size. qemu-img cannot check VHD images, so its reading the whole image is the check.

Kill tests: crash_writer runs a seeded sequence on a dynamic or a differencing disk with the killpoint preload,
which kills it just before its Nth pwrite (or tears that write). For kill points spread over
the whole run, the image must then open here and in qemu-img, and every byte must read as the
acknowledged state left it or as an unacknowledged operation wrote it.

Threads: thread_writer races several threads on one handle (own blocks, shared blocks
allocated at once, readers beside writers) on fixed and dynamic disks; qemu-img then reads the
expected content.

Environment: WRITE_TEST_SEED, WRITE_TEST_SEQUENCES (default 7), WRITE_TEST_OPS (default 30),
VPC_KILL_POINTS (default 8 per disk kind).

usage: test_vpc_write.py WRITE_DRIVER CRASH_WRITER KILLPOINT_SO THREAD_WRITER
"""

import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
sys.path.insert(0, HERE)
import vhd  # noqa: E402
import writetest as wt  # noqa: E402

MIB = 1 << 20

# (subformat, creator, force_size)
CONFIGS = [
    ('dynamic', 'api', False),
    ('dynamic', 'qemu', False),
    ('fixed', 'api', False),
    ('fixed', 'qemu', False),
    ('dynamic', 'api', True),
    ('dynamic', 'qemu', True),
    ('fixed', 'api', True),
]


def virtual_size(s, image):
    info = wt.parse_json(wt.qemu_img('info', '--output=json', '-f', 'vpc', image,
                                     cwd=s.tmp).stdout, 'qemu-img info')
    return info['virtual-size']


def assert_qemu_reads(s, expected, image):
    """qemu-img reads `image` (as vpc) as the raw file `expected`, with its size."""
    size = virtual_size(s, image)
    want = os.path.getsize(s.path(expected))
    if size != want:
        raise wt.CheckFailed('%s: qemu-img says virtual-size %d, expected %d' % (image, size,
                                                                                 want))
    proc = wt.qemu_img('compare', '-f', 'raw', '-F', 'vpc', expected, image, cwd=s.tmp,
                       ok_codes=None)
    if proc.returncode != 0:
        raise wt.CheckFailed('qemu-img compare %s %s: %s %s' % (
            expected, image, wt.clip(proc.stdout), wt.clip(proc.stderr)))


def create(s, name, cfg, size):
    sub, creator, force = cfg
    opts = 'subformat=%s%s' % (sub, ',force_size=on' if force else '')
    if creator == 'api':
        s.api('create', name, 'vpc', size, opts)
    else:
        wt.qemu_img('create', '-q', '-f', 'vpc', '-o', opts, name, size, cwd=s.tmp)


def property_sequence(s, n, cfg, seed, ops):
    rng = random.Random(seed)
    name = 'prop-%d.vhd' % n
    create(s, name, cfg, rng.randrange(2 * MIB, 12 * MIB))
    start = wt.write_file(s.path('prop-%d-start.raw' % n), bytes(virtual_size(s, name)))
    args = ['run', name, '-f', 'vpc', '--random', seed, '--ops', ops,
            '--cluster', rng.choice((4096, 65536, 2 * MIB)), '--shadow-in', start,
            '--shadow-out', 'prop-%d-expected.raw' % n, '--no-resize', '--discard', 'hint']
    proc = s.api(*args, ok_codes=None)
    if proc.returncode != 0:
        raise wt.CheckFailed('write_driver %s: %s\n  operations:\n    %s' % (
            wt.describe_rc(proc.returncode), wt.clip(proc.stderr),
            proc.stdout.strip().replace('\n', '\n    ')))
    assert_qemu_reads(s, 'prop-%d-expected.raw' % n, name)
    for leftover in (name, 'prop-%d-start.raw' % n, 'prop-%d-expected.raw' % n):
        os.unlink(s.path(leftover))


def run_writer(s, image, seed, ops, env):
    proc = subprocess.run([s.helpers['crash_writer'], 'write', image, str(seed), '65536',
                           str(ops), '-f', 'vpc'], cwd=s.tmp, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    acked, started = 0, 0
    for words in (line.split() for line in proc.stdout.decode().splitlines()):
        if len(words) == 2 and words[0] == 'ack':
            acked = max(acked, int(words[1]))
        elif len(words) == 2 and words[0] == 'start':
            started = max(started, int(words[1]) + 1)
    return proc, acked, max(started, acked)


def preload_env(**extra):
    env = dict(os.environ)
    env['LD_PRELOAD'] = ':'.join(p for p in (env.get('LD_PRELOAD'), s_killpoint) if p)
    # The kill points are pwrite calls: the thread-pool engine makes them, io_uring would not.
    env['IMGUTIL_IO'] = 'threads'
    # Under ASan the sanitizer's runtime must come first; the preload only wraps pwrite.
    env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
    env.update({k: str(v) for k, v in extra.items()})
    return env


def verify(s, image, fmt, seed, acked, started, start, how):
    proc = wt.run([s.helpers['crash_writer'], 'verify', image, seed, 65536, acked, started,
                   '-f', fmt, '--shadow-in', start], cwd=s.tmp, ok_codes=None)
    if proc.returncode != 0:
        raise wt.CheckFailed('%s: %s\n  %s' % (how, wt.describe_rc(proc.returncode),
                                              wt.clip(proc.stderr)))


def make_kill_base(s, rng, differencing):
    """The image every kill run starts from, and its content as a raw file."""
    size = 16 * MIB
    if not differencing:
        s.api('create', 'kill-base.vhd', 'vpc', size)
        return 'kill-base.vhd', wt.write_file(s.path('kill-start.raw'),
                                              bytes(virtual_size(s, 'kill-base.vhd')))
    parent = wt.random_content(rng, size)
    wt.write_file(s.path('kill-parent.raw'), parent)
    wt.qemu_img('convert', '-f', 'raw', '-O', 'vpc', '-o', 'force_size=on', 'kill-parent.raw',
                'parent.vhd', cwd=s.tmp)
    child = vhd.sparse(size, {}, disk_type=4, creator=b'vpc ',
                       locator_data=[(b'W2ru', '.\\parent.vhd'.encode('utf-16-le'))])
    wt.write_file(s.path('kill-child.vhd'), child)
    return 'kill-child.vhd', s.path('kill-parent.raw')


def kill_tests(s, rng, differencing):
    kind = 'differencing' if differencing else 'dynamic'
    ops = 60
    seed = rng.randrange(1 << 32)
    base, start = make_kill_base(s, rng, differencing)
    with s.check('kill, %s disk: counting the writes of an uninterrupted run' % kind):
        wt.run(['cp', base, 'kill-count.vhd'], cwd=s.tmp)
        proc, _, _ = run_writer(s, 'kill-count.vhd', seed, ops,
                                preload_env(KILLPOINT_COUNT=s.path('kill-count.txt')))
        if proc.returncode != 0:
            raise wt.CheckFailed('crash_writer: %s' % wt.clip(proc.stderr.decode()))
        with open(s.path('kill-count.txt')) as f:
            total = len(f.read().split())
        if total < 10:
            raise wt.CheckFailed('only %d writes were counted' % total)
    points = wt.env_int('VPC_KILL_POINTS', 8)
    chosen = sorted(set(rng.randrange(1, total + 1) for _ in range(points)) | {1, 2, 3, total})
    for n in chosen:
        torn = n % 3 == 0
        label = 'kill, %s disk: before write %d of %d%s' % (kind, n, total,
                                                           ' (torn)' if torn else '')
        with s.check(label):
            image = 'kill-%d.vhd' % n
            wt.run(['cp', base, image], cwd=s.tmp)
            proc, acked, started = run_writer(s, image, seed, ops,
                                              preload_env(KILLPOINT_AT=n,
                                                          KILLPOINT_TORN=int(torn)))
            if proc.returncode not in (0, -9):
                raise wt.CheckFailed('crash_writer failed on its own: %s' %
                                     wt.clip(proc.stderr.decode()))
            verify(s, image, 'vpc', seed, acked, started, start, 'read here')
            if not differencing:
                # qemu-img reads a differencing disk without its parent: only dynamic ones.
                raw = 'kill-%d.raw' % n
                wt.qemu_img('convert', '-f', 'vpc', '-O', 'raw', image, raw, cwd=s.tmp)
                verify(s, raw, 'raw', seed, acked, started, start, 'read by qemu-img')
                os.unlink(s.path(raw))
            os.unlink(s.path(image))


def thread_tests(s, rng):
    for sub, cluster in (('dynamic', 65536), ('dynamic', 2 * MIB), ('fixed', 65536)):
        with s.check('threads: %s disk, writes aimed at %d-byte units' % (sub, cluster)):
            image = 'threads-%s-%d.vhd' % (sub, cluster)
            s.api('create', image, 'vpc', 24 * MIB, 'subformat=' + sub)
            start = wt.write_file(s.path('threads-start.raw'), bytes(virtual_size(s, image)))
            proc = wt.run([s.helpers['thread_writer'], image, cluster, rng.randrange(1 << 32),
                           'threads-expected.raw', '-f', 'vpc', '--shadow-in', start,
                           '--threads', 4], cwd=s.tmp, ok_codes=None)
            if proc.returncode != 0:
                raise wt.CheckFailed('thread_writer: %s' % wt.clip(proc.stderr))
            assert_qemu_reads(s, 'threads-expected.raw', image)
            os.unlink(s.path(image))


def main():
    global s_killpoint
    s = wt.Suite('vpc-write', sys.argv, helpers=('crash_writer', 'killpoint', 'thread_writer'))
    s_killpoint = s.helpers['killpoint']
    master = s.seed(20261206)
    rng = random.Random(master)
    sequences = wt.env_int('WRITE_TEST_SEQUENCES', 7)
    ops = wt.env_int('WRITE_TEST_OPS', 30)
    for n in range(sequences):
        cfg = CONFIGS[n % len(CONFIGS)]
        seed = rng.randrange(1 << 62)
        with s.check('sequence %d (seed %d, %d ops): %s disk by %s%s' % (
                n, seed, ops, cfg[0], cfg[1], ', force_size' if cfg[2] else '')):
            property_sequence(s, n, cfg, seed, ops)
    thread_tests(s, rng)
    kill_tests(s, rng, False)
    kill_tests(s, rng, True)
    s.finish()


if __name__ == '__main__':
    main()
