#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Crash safety: crash_writer writes and flushes a seeded sequence and is killed with SIGKILL
at a random point. Afterwards:
  - every operation acknowledged by a completed img_flush reads back, and every byte reads
    either as the acknowledged state left it or as one of the unacknowledged operations wrote
    it (never garbage), both through img_pread and through qemu-img convert;
  - qemu-img check finds no corruption (leaks are allowed: exit 0 or 3); with lazy refcounts
    the image is dirty, so it must be repaired (by img_check or qemu-img check -r all) first;
  - leaks are repaired by img_check(IMG_CHECK_REPAIR_LEAKS) or qemu-img check -r leaks, and
    the image then takes more writes and checks clean.

Environment: WRITE_TEST_SEED, WRITE_TEST_CRASHES (runs, default 30).

usage: test_crash.py WRITE_DRIVER CRASH_WRITER
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import writetest as wt  # noqa: E402

MIB = 1 << 20
WRITER_OPS = 4000

# (cluster size, options): every cluster size, refcount widths, extended L2, v2, lazy refcounts.
CONFIGS = [
    (65536, 'cluster_size=65536'),
    (512, 'cluster_size=512,refcount_bits=1'),
    (4096, 'cluster_size=4096,refcount_bits=64'),
    (2 * MIB, 'cluster_size=2097152,extended_l2=on'),
    (65536, 'cluster_size=65536,compat=0.10'),
    (32768, 'cluster_size=32768,extended_l2=on,refcount_bits=4'),
    (65536, 'cluster_size=65536,lazy_refcounts=on'),
    (4096, 'cluster_size=4096,refcount_bits=8,backing'),
    (65536, 'cluster_size=65536,compat=0.10,backing'),
    (512, 'cluster_size=512,lazy_refcounts=on,refcount_bits=2'),
    (4096, 'raw'),
]


def read_lines(stream):
    return [line.split() for line in stream.decode('ascii', 'replace').splitlines()]


def crash_once(s, n, seed, cluster, opts):
    rng = random.Random(seed)
    size = rng.choice((8, 16, 24)) * MIB
    fmt = 'raw' if opts == 'raw' else 'qcow2'
    image = 'crash-%d.%s' % (n, fmt)
    backing = 'backing' in opts
    opts = ','.join(o for o in opts.split(',') if o != 'backing')
    start = 'crash-%d-start.raw' % n
    content = bytes(size)
    if backing:
        content = wt.random_content(rng, size)
        wt.write_file(s.path('crash-%d-base.raw' % n), content)
        wt.qemu_img('convert', '-O', 'qcow2', 'crash-%d-base.raw' % n, 'crash-%d-base.qcow2' % n,
                    cwd=s.tmp)
        opts += ',backing_file=crash-%d-base.qcow2,backing_fmt=qcow2' % n
    wt.write_file(s.path(start), content)
    if fmt == 'raw':
        s.api('create', image, 'raw', size)
    elif n % 2:
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', opts, image, size, cwd=s.tmp)
    else:
        s.api('create', image, 'qcow2', size, opts)

    writer = subprocess.Popen([s.helpers['crash_writer'], 'write', image, str(seed),
                               str(cluster), str(WRITER_OPS), '-f', fmt],
                              cwd=s.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              bufsize=0)  # unbuffered: communicate() must see every line
    # Kill after a random number of reported steps, sometimes a moment later.
    wanted = rng.randrange(1, 300)
    lines = []
    while len(lines) < wanted:
        line = writer.stdout.readline()
        if not line:
            break
        lines.append(line)
    if rng.random() < 0.5:
        time.sleep(rng.random() * 0.003)
    writer.send_signal(signal.SIGKILL)
    rest, err = writer.communicate()
    rc = writer.returncode
    if rc not in (0, -signal.SIGKILL):
        raise wt.CheckFailed('crash_writer failed on its own (%s): %s' % (wt.describe_rc(rc),
                                                                         wt.clip(err)))
    story = b''.join(lines) + rest
    with open(s.path('crash-%d.log' % n), 'wb') as f:
        f.write(story)
    acked, started = 0, 0
    for words in read_lines(story):
        if len(words) == 2 and words[0] == 'ack':
            acked = max(acked, int(words[1]))
        elif len(words) == 2 and words[0] == 'start':
            started = max(started, int(words[1]) + 1)
    started = max(started, acked)
    return image, fmt, start, acked, started


def repair(s, n, image, cluster, lazy):
    """No corruption allowed; leaks are, and are then repaired here or by qemu-img."""
    # A cluster allocated just before the kill may have its refcount on disk while the file
    # does not reach it yet; neither qemu-img check nor img_check looks past the end of the
    # file, so such a leak would surface only when a later write grows the file. Growing the
    # file (with zeros, harmless to qcow2) makes it visible now.
    path = s.path(image)
    os.truncate(path, os.path.getsize(path) + max(4 * MIB, 16 * cluster))
    if lazy:
        # A dirty image with lazy refcounts needs its refcounts rebuilt first.
        if n % 4 < 2:
            s.api('check', image, 'all')
        else:
            wt.qemu_img('check', '-q', '-r', 'all', image, cwd=s.tmp, ok_codes=(0, 3))
    report = wt.assert_qemu_check(image, cwd=s.tmp, allow_leaks=True)
    if report.get('leaks'):
        if n % 2:
            s.api('check', image, 'leaks')
        else:
            wt.qemu_img('check', '-q', '-r', 'leaks', image, cwd=s.tmp)
        wt.assert_qemu_check(image, cwd=s.tmp)


def verify(s, image, fmt, seed, cluster, acked, started, start, how):
    proc = wt.run([s.helpers['crash_writer'], 'verify', image, seed, cluster, acked, started,
                   '-f', fmt, '--shadow-in', start], cwd=s.tmp, ok_codes=None)
    if proc.returncode != 0:
        raise wt.CheckFailed('%s: %s\n  %s' % (how, wt.describe_rc(proc.returncode),
                                              wt.clip(proc.stderr)))


def main():
    s = wt.Suite('crash', sys.argv, helpers=('crash_writer',))
    master = s.seed(20240612)
    runs = wt.env_int('WRITE_TEST_CRASHES', 30)
    rng = random.Random(master)
    for n in range(runs):
        cluster, opts = CONFIGS[n % len(CONFIGS)]
        seed = rng.randrange(1 << 62)
        label = 'crash %d (seed %d): %s' % (n, seed, opts)
        with s.check(label):
            image, fmt, start, acked, started = crash_once(s, n, seed, cluster, opts)
            story = ('killed after %d operations were issued, %d acknowledged by img_flush' %
                     (started, acked))
            print('     %s' % story, flush=True)
            step = 'reading back'
            try:
                verify(s, image, fmt, seed, cluster, acked, started, start,
                       'img_pread after the crash')
                raw = 'crash-%d-qemu.raw' % n
                wt.qemu_img('convert', '-f', fmt, '-O', 'raw', image, raw, cwd=s.tmp)
                verify(s, raw, 'raw', seed, cluster, acked, started, start,
                       'qemu-img convert after the crash')
                if fmt == 'qcow2':
                    step = 'checking and repairing after the crash'
                    repair(s, n, image, cluster, 'lazy_refcounts=on' in opts)
                step = 'writing on after the crash (and repair)'
                args = ['run', image, '-f', fmt, '--random', seed + 1, '--ops', 12,
                        '--cluster', cluster, '--shadow-in', raw, '--no-resize',
                        '--shadow-out', 'crash-%d-after.raw' % n]
                if fmt == 'raw':
                    args += ['--discard', 'hint']
                elif 'compat=0.10' in opts and 'backing' in opts:
                    args += ['--discard', 'keep-or-backing', '--backing-raw',
                             'crash-%d-base.raw' % n]
                shutil.copyfile(s.path(image), s.path('crash-%d-before-more.%s' % (n, fmt)))
                s.api(*args)
                if fmt == 'qcow2':
                    wt.assert_qemu_check(image, cwd=s.tmp)
                wt.assert_same_content('crash-%d-after.raw' % n, image, fmt, cwd=s.tmp)
            except wt.CheckFailed as e:
                raise wt.CheckFailed('while %s: %s; %s\n  writer output: crash-%d.log in %s' % (
                    step, e, story, n, s.tmp))
        for name in os.listdir(s.tmp):
            if name.startswith(('crash-%d-' % n, 'crash-%d.' % n)) and s.last_ok:
                os.unlink(s.path(name))
    s.finish()


if __name__ == '__main__':
    main()
