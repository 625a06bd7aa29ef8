#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The Parallels writer against qemu-img 7.2:

  property: random writes, zeroes, discards (a hint: Parallels frees nothing, as in QEMU),
    flushes and reopens through the public API, checked against a shadow after every
    operation, on images of every cluster size made by img_create or qemu-img create; then
    qemu-img check finds no errors and no leaks and qemu-img compare finds the shadow;
  kill at every write: write_driver is killed before its Nth write (the killpoint preload),
    for every N of a fixed script; each sector then reads as before or after the operation in
    progress, qemu-img check finds nothing but the in-use marker and leaks, and after
    `check -r all` (imgutil's or qemu-img's, in turn) the image checks clean and keeps its
    content;
  random kills: crash_writer is killed at a random moment; what img_flush acknowledged
    survives and nothing reads as garbage;
  threads: thread_writer's threads write, zero and read one handle at once, racing to
    allocate the same clusters; qemu-img check and compare then agree with its expectation.

Environment: PARALLELS_TEST_SEED, PARALLELS_TEST_SEQUENCES (default 8), PARALLELS_TEST_CRASHES
(default 4).

usage: test_write.py WRITE_DRIVER CRASH_WRITER KILLPOINT_SO THREAD_WRITER
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prltest as pt  # noqa: E402

KIB, MIB = 1024, 1 << 20
CLUSTERS = (512, 4096, 65536, MIB)


def create(s, name, size, cluster, creator):
    img = s.path(name)
    if creator == 'qemu':
        pt.must(s.qemu('create', '-q', '-f', 'parallels', '-o', 'cluster_size=%d' % cluster, img,
                       size), 'qemu-img create')
    else:
        pt.must(pt.run([s.driver, 'create', img, 'parallels', size,
                        'cluster_size=%d' % cluster], cwd=s.tmp), 'write_driver create')
    return img


def clean(s, img, expected):
    pt.must(s.qemu('check', img), 'qemu-img check')
    pt.must(s.qemu('compare', '-f', 'raw', '-F', 'parallels', expected, img),
            'qemu-img compare with the shadow')
    if pt.read_field(img, pt.OFF['inuse'], 'I') != 0:
        raise pt.Failed('%s is left marked in use' % img)


def property_tests(s, rng):
    sequences = int(os.environ.get('PARALLELS_TEST_SEQUENCES', '8'))
    for n in range(sequences):
        cluster = CLUSTERS[n % len(CLUSTERS)]
        creator = ('api', 'qemu')[(n // len(CLUSTERS)) % 2]
        size = rng.choice((1, 3, 8)) * MIB + rng.choice((0, 512, 7 * 512))
        seed = rng.randrange(1 << 31)
        with s.check('property %d: cluster %d, %d bytes, made by %s, seed %d' % (
                n, cluster, size, creator, seed)):
            img = create(s, 'prop-%d.prl' % n, size, cluster, creator)
            expected = s.path('prop-%d.raw' % n)
            pt.must(pt.run([s.driver, 'run', img, '-f', 'parallels', '--random', seed, '--ops',
                            40, '--cluster', cluster, '--no-resize', '--discard', 'hint',
                            '--shadow-out', expected], cwd=s.tmp), 'write_driver run')
            clean(s, img, expected)
            s.compare_all(img)


SCRIPT = [
    'write 1000 5000 1',         # partial clusters at both ends
    'write 300000 70000 2',
    'write 0 4096 3',            # over allocated clusters
    'zero 2000 3000',
    'flush',
    'write 1048576 200000 4',
    'reopen',
    'write 600000 1000 5',
]


def states(s, base, cluster):
    """The content after each operation of SCRIPT, from an uninterrupted run."""
    img = s.path('states.prl')
    shutil.copyfile(base, img)
    ops = ['save state-0.raw']
    for i, op in enumerate(SCRIPT):
        ops += [op, 'save state-%d.raw' % (i + 1)]
    pt.must(pt.run([s.driver, 'run', img, '-f', 'parallels', '--script', '-', '--no-resize',
                    '--cluster', cluster], cwd=s.tmp, input='\n'.join(ops) + '\n'),
            'write_driver run (uninterrupted)')
    result = []
    for i in range(len(SCRIPT) + 1):
        with open(s.path('state-%d.raw' % i), 'rb') as f:
            result.append(f.read())
    return result


def sectors_between(data, before, after):
    """Every sector of `data` reads as in `before` or as in `after`."""
    for at in range(0, len(data), 512):
        piece = data[at:at + 512]
        if piece != before[at:at + 512] and piece != after[at:at + 512]:
            return False
    return True


def kill_tests(s):
    for cluster in (4096, 65536):
        base = create(s, 'kill-base-%d.prl' % cluster, 2 * MIB, cluster, 'qemu')
        expected = states(s, base, cluster)
        count_file = s.path('writes.txt')
        img = s.path('kill.prl')
        shutil.copyfile(base, img)
        env = pt.preload_env(s.killpoint, KILLPOINT_COUNT=count_file)
        pt.must(pt.run([s.driver, 'run', img, '-f', 'parallels', '--script', '-', '--no-resize'],
                       cwd=s.tmp, env=env, input='\n'.join(SCRIPT) + '\n'), 'counting writes')
        with open(count_file) as f:
            writes = len(f.read().split())
        with s.check('kill at each of the %d writes (cluster %d): old or new content, only the '
                     'marker and leaks to repair' % (writes, cluster)):
            for n in range(1, writes + 1):
                shutil.copyfile(base, img)
                env = pt.preload_env(s.killpoint, KILLPOINT_AT=n)
                proc = pt.run([s.driver, 'run', img, '-f', 'parallels', '--script', '-',
                               '--no-resize'], cwd=s.tmp, env=env,
                              input='\n'.join(SCRIPT) + '\n')
                if proc.returncode != -signal.SIGKILL:
                    raise pt.Failed('write %d: the writer was not killed (exit %d) %s' % (
                        n, proc.returncode, proc.stderr))
                raw = s.path('killed.raw')
                pt.must(s.qemu('convert', '-O', 'raw', img, raw), 'qemu-img convert')
                with open(raw, 'rb') as f:
                    data = f.read()
                if not any(sectors_between(data, expected[j], expected[j + 1])
                           for j in range(len(SCRIPT))):
                    raise pt.Failed('killed before write %d: content is neither old nor new' % n)
                proc = s.qemu('check', '--output=json', img)
                report = pt.json.loads(proc.stdout) if proc.stdout.strip() else {}
                if report.get('corruptions', 0) > 1 or proc.returncode not in (0, 2, 3):
                    raise pt.Failed('killed before write %d: qemu-img check exit %d: %s %s' % (
                        n, proc.returncode, proc.stdout, proc.stderr))
                if n % 2:
                    pt.must(s.ours('check', '-r', 'all', img), 'imgutil check -r all')
                else:
                    proc = s.qemu('check', '-r', 'all', img)
                    if proc.returncode != 0:
                        raise pt.Failed('qemu-img check -r all: %s' % proc.stderr)
                pt.must(s.qemu('check', img), 'qemu-img check after the repair')
                pt.must(s.qemu('compare', '-f', 'raw', raw, img), 'content kept by the repair')


def crash_tests(s, rng):
    crashes = int(os.environ.get('PARALLELS_TEST_CRASHES', '4'))
    for n in range(crashes):
        cluster = CLUSTERS[n % len(CLUSTERS)]
        seed = rng.randrange(1 << 62)
        with s.check('random kill %d: cluster %d, seed %d' % (n, cluster, seed)):
            size = 8 * MIB
            img = create(s, 'crash-%d.prl' % n, size, cluster, ('api', 'qemu')[n % 2])
            start = s.path('crash-%d-start.raw' % n)
            with open(start, 'wb') as f:
                f.truncate(size)
            writer = subprocess.Popen([s.crash_writer, 'write', img, str(seed), str(cluster),
                                       '4000', '-f', 'parallels'], cwd=s.tmp,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
            lines = []
            wanted = rng.randrange(1, 200)
            while len(lines) < wanted:
                line = writer.stdout.readline()
                if not line:
                    break
                lines.append(line)
            if rng.random() < 0.5:
                time.sleep(rng.random() * 0.003)
            writer.send_signal(signal.SIGKILL)
            rest, err = writer.communicate()
            acked = started = 0
            for words in (l.split() for l in (b''.join(lines) + rest).decode().splitlines()):
                if len(words) == 2 and words[0] == 'ack':
                    acked = max(acked, int(words[1]))
                elif len(words) == 2 and words[0] == 'start':
                    started = max(started, int(words[1]) + 1)
            started = max(started, acked)
            proc = pt.run([s.crash_writer, 'verify', img, seed, cluster, acked, started, '-f',
                           'parallels', '--shadow-in', start], cwd=s.tmp)
            if proc.returncode != 0:
                raise pt.Failed('after the kill (%d acknowledged, %d issued): %s' % (
                    acked, started, proc.stderr))
            pt.must(s.ours('check', '-r', 'all', img), 'imgutil check -r all')
            pt.must(s.qemu('check', img), 'qemu-img check after the repair')


def thread_tests(s, rng):
    for cluster in (4096, 65536):
        seed = rng.randrange(1 << 31)
        with s.check('threads on one handle: cluster %d, seed %d' % (cluster, seed)):
            img = create(s, 'threads-%d.prl' % cluster, 16 * MIB, cluster, 'qemu')
            start, expected = s.path('threads-start.raw'), s.path('threads-%d.raw' % cluster)
            with open(start, 'wb') as f:
                f.truncate(16 * MIB)
            pt.must(pt.run([s.thread_writer, img, cluster, seed, expected, '-f', 'parallels',
                            '--shadow-in', start, '--threads', 4], cwd=s.tmp), 'thread_writer')
            clean(s, img, expected)


def main():
    s = pt.Suite('parallels-write')
    if len(sys.argv) < 5:
        print('usage: test_write.py WRITE_DRIVER CRASH_WRITER KILLPOINT_SO THREAD_WRITER')
        sys.exit(2)
    s.driver, s.crash_writer, s.killpoint, s.thread_writer = (
        os.path.abspath(p) for p in sys.argv[1:5])
    rng = random.Random(int(os.environ.get('PARALLELS_TEST_SEED', '20261207'), 0))
    property_tests(s, rng)
    kill_tests(s)
    crash_tests(s, rng)
    thread_tests(s, rng)
    s.finish()


if __name__ == '__main__':
    main()
