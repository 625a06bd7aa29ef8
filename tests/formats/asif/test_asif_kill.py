#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Kill points for the ASIF writer: crash_writer runs a seeded sequence of writes, zeroes and
flushes on an ASIF image with the killpoint preload, which kills it just before its Nth
pwrite (sometimes after tearing it to its first sector). For kill points spread over the whole
run (allocation of chunks, bitmap chunks, tables, the directory switch), the image must then:
  - open and read here, every byte as the acknowledged operations left it or as one of the
    operations in flight wrote it (crash_writer verify), also through a raw copy;
  - read in the independent reader (asif_ref.py) without any uncharacterised state, and equal
    that raw copy.

Environment: WRITE_TEST_SEED, ASIF_KILL_POINTS (kill points tried, default 24).

usage: test_asif_kill.py WRITE_DRIVER CRASH_WRITER KILLPOINT_SO
"""

import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
sys.path.insert(0, HERE)
import writetest as wt  # noqa: E402
import asif_ref  # noqa: E402

MIB = 1 << 20
OPS = 40


def env_for(so, **values):
    env = dict(os.environ)
    env['LD_PRELOAD'] = ((env['LD_PRELOAD'] + ':') if env.get('LD_PRELOAD') else '') + so
    # The kill points are pwrite calls: the thread-pool engine makes them, io_uring would not.
    env['IMGUTIL_IO'] = 'threads'
    env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
    for k, v in values.items():
        env[k] = str(v)
    return env


def run_writer(s, image, seed, env):
    proc = subprocess.run([s.helpers['crash_writer'], 'write', image, str(seed), str(MIB),
                           str(OPS), '-f', 'asif'], cwd=s.tmp, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    acked, started = 0, 0
    for line in proc.stdout.decode(errors='replace').splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == 'ack':
            acked = max(acked, int(words[1]))
        elif len(words) == 2 and words[0] == 'start':
            started = max(started, int(words[1]) + 1)
    return proc, acked, max(started, acked)


def main():
    s = wt.Suite('asif-kill', sys.argv, helpers=('crash_writer', 'killpoint'))
    so = s.helpers['killpoint']
    rng = random.Random(s.seed(7))
    seed = rng.randrange(1 << 32)
    points = wt.env_int('ASIF_KILL_POINTS', 24)
    total = 0
    with s.check('count the writes of a whole run (seed %d)' % seed):
        s.imgutil('create', '-f', 'asif', 'start.asif', str(6 * MIB + 1024))
        shutil.copy(s.path('start.asif'), s.path('count.asif'))
        proc, _, _ = run_writer(s, 'count.asif', seed,
                                env_for(so, KILLPOINT_COUNT=s.path('count.txt')))
        if proc.returncode != 0:
            raise wt.CheckFailed('crash_writer: %s' % wt.clip(proc.stderr))
        with open(s.path('count.txt')) as f:
            total = len(f.read().split())
        if total < 10:
            raise wt.CheckFailed('only %d writes' % total)
    # The first writes (the first allocations, a table, the directory switch) all, the rest
    # spread over the run.
    chosen = sorted(set(list(range(1, min(total, 12) + 1)) +
                        rng.sample(range(1, total + 1), min(total, max(0, points - 12)))))
    for n in chosen:
        torn = n % 3 == 0
        with s.check('kill before write %d of %d%s' % (n, total, ' (torn)' if torn else '')):
            image = 'k%d.asif' % n
            shutil.copy(s.path('start.asif'), s.path(image))
            proc, acked, started = run_writer(s, image, seed,
                                              env_for(so, KILLPOINT_AT=n, KILLPOINT_TORN=int(torn)))
            if proc.returncode != -9:
                raise wt.CheckFailed('crash_writer: %s %s' % (wt.describe_rc(proc.returncode),
                                                             wt.clip(proc.stderr)))
            verify = [s.helpers['crash_writer'], 'verify', image, seed, MIB, acked, started]
            wt.run(verify + ['-f', 'asif'], cwd=s.tmp)
            s.imgutil('convert', '-f', 'asif', '-O', 'raw', image, image + '.raw')
            wt.run([s.helpers['crash_writer'], 'verify', image + '.raw', seed, MIB, acked,
                    started, '-f', 'raw'], cwd=s.tmp)
            with open(s.path(image), 'rb') as f:
                img = asif_ref.Image(f.read())
            with open(s.path(image + '.raw'), 'rb') as f:
                if img.read_all() != f.read():
                    raise wt.CheckFailed('the independent reader disagrees with the raw copy')
            os.unlink(s.path(image + '.raw'))
    s.finish()


if __name__ == '__main__':
    main()
