#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Crash safety of the VHDX writer and its log: crash_writer applies a seeded sequence of
writes, zeroes and flushes to a VHDX image, and the killpoint preload kills it just before
its Nth pwrite (or tears that write after its first sector). For kill points spread over the
whole run (every metadata step of the log protocol: data, header updates, log entry, BAT
sector, log reset):
  - qemu-img opens the image after `qemu-img check -r all` (which replays a log left
    behind), then finds no errors; its content (qemu-img convert -O raw) reads, byte for
    byte, as the acknowledged operations left it, or as one of the unacknowledged ones wrote;
  - the same holds for the image replayed here (imgutil check -r all, read through the API),
    and both replays give the same content (qemu-img compare).

Environment: VHDX_KILL_POINTS (how many kill points per configuration, default 8).

usage: test_vhdx_kill.py WRITE_DRIVER CRASH_WRITER KILLPOINT_SO
"""

import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
import writetest as wt  # noqa: E402

MIB = 1 << 20
OPS = 10
CLUSTER = 65536
# (size, creation options)
CONFIGS = [
    (6 * MIB, 'block_size=1M'),
    (5 * MIB + 512, 'block_size=2M,block_state_zero=off'),
]


def writer_run(s, image, seed, env):
    proc = subprocess.run([s.helpers['crash_writer'], 'write', image, str(seed), str(CLUSTER),
                           str(OPS), '-f', 'vhdx'], cwd=s.tmp, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    acked, started = 0, 0
    for line in proc.stdout.decode('ascii', 'replace').splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == 'ack':
            acked = max(acked, int(words[1]))
        elif len(words) == 2 and words[0] == 'start':
            started = max(started, int(words[1]) + 1)
    return proc, acked, max(acked, started)


def verify(s, image, fmt, seed, acked, started, how):
    proc = wt.run([s.helpers['crash_writer'], 'verify', image, seed, CLUSTER, acked, started,
                   '-f', fmt, '--shadow-in', 'zero.raw'], cwd=s.tmp, ok_codes=None)
    if proc.returncode != 0:
        raise wt.CheckFailed('%s: %s\n  %s' % (how, wt.describe_rc(proc.returncode),
                                              wt.clip(proc.stderr)))


def main():
    s = wt.Suite('vhdx-kill', sys.argv, helpers=('crash_writer', 'killpoint'))
    rng = random.Random(s.seed(20261207))
    per_config = wt.env_int('VHDX_KILL_POINTS', 8)
    for c, (size, opts) in enumerate(CONFIGS):
        seed = rng.randrange(1 << 62)
        wt.write_file(s.path('zero.raw'), bytes(size))
        wt.qemu_img('create', '-q', '-f', 'vhdx', '-o', opts, 'fresh.vhdx', str(size),
                    cwd=s.tmp)
        # A run without a kill counts the writes.
        shutil.copyfile(s.path('fresh.vhdx'), s.path('count.vhdx'))
        # Under ASan the sanitizer's runtime must come first; the preload only wraps pwrite.
        asan = os.environ.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
        env = dict(os.environ, LD_PRELOAD=s.helpers['killpoint'], ASAN_OPTIONS=asan,
                   KILLPOINT_COUNT=s.path('count.txt'))
        proc, _, _ = writer_run(s, 'count.vhdx', seed, env)
        with open(s.path('count.txt')) as f:
            lengths = [int(x) for x in f.read().split()]
        if proc.returncode != 0 or not lengths:
            with s.check('config %d: the writer runs to the end' % c):
                raise wt.CheckFailed('exit %d, %d writes: %s' % (
                    proc.returncode, len(lengths), wt.clip(proc.stderr.decode())))
            continue
        total = len(lengths)
        # Always the window replay exists for: each log entry written (a write of two or
        # more 4 KiB sectors, the only such writes but data) and the BAT not yet in place.
        # Log entries are told from data writes by their position: right after a header.
        after_log = [i + 2 for i in range(1, total) if lengths[i] >= 8192 and
                     lengths[i] % 4096 == 0 and lengths[i - 1] == 4096 and i + 2 <= total]
        points = sorted(set([1, 2, total] + after_log + rng.sample(
            range(1, total + 1), min(per_config, total))))
        print('     config %d (%s): %d writes, killing at %d of them' % (c, opts, total,
                                                                         len(points)),
              flush=True)
        for n in points:
            torn = lengths[n - 1] > 512 and n % 3 == 0
            label = 'config %d (%s, seed %d): killed at write %d of %d%s' % (
                c, opts, seed, n, total, ' (torn)' if torn else '')
            with s.check(label):
                image, copy = 'k.vhdx', 'k-qemu.vhdx'
                shutil.copyfile(s.path('fresh.vhdx'), s.path(image))
                env = dict(os.environ, LD_PRELOAD=s.helpers['killpoint'], ASAN_OPTIONS=asan,
                           KILLPOINT_AT=str(n), KILLPOINT_TORN='1' if torn else '0')
                proc, acked, started = writer_run(s, image, seed, env)
                if proc.returncode not in (-9, 0):
                    raise wt.CheckFailed('writer: %s %s' % (wt.describe_rc(proc.returncode),
                                                           wt.clip(proc.stderr.decode())))
                shutil.copyfile(s.path(image), s.path(copy))
                # qemu-img: replay (if a log was left), then a clean check and the content.
                wt.qemu_img('check', '-q', '-r', 'all', copy, cwd=s.tmp)
                wt.assert_qemu_check(copy, fmt='vhdx', cwd=s.tmp)
                wt.qemu_img('convert', '-O', 'raw', copy, 'k-qemu.raw', cwd=s.tmp)
                verify(s, 'k-qemu.raw', 'raw', seed, acked, started,
                       'content after qemu-img\'s replay')
                # Here: replay by check -r all, read through the API, the same as qemu's.
                s.imgutil('check', '-q', '-r', 'all', image)
                verify(s, image, 'vhdx', seed, acked, started, 'content after the replay here')
                wt.qemu_img('check', image, cwd=s.tmp)
                wt.qemu_img('compare', image, copy, cwd=s.tmp)
    s.finish()


if __name__ == '__main__':
    main()
