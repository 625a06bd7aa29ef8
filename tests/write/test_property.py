#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Random operation sequences (write, zero with and without unmap, discard, grow, shrink,
flush, reopen) applied through the public API to images of every qcow2 geometry, with and
without a backing file, and to raw images. After each sequence the image must read back as the
shadow the driver kept (img_pread, checked after every operation), qemu-img check must find no
errors and no leaks, qemu-img compare must find it equal to the shadow, and img_check must
agree.

What a discard must leave (runner.h has the models): qcow2 v3, or v2 without a backing file,
reads zeros in every cluster the range covers whole and either zeros or the old bytes in the
partial clusters at its edges; qcow2 v2 over a backing file keeps the old bytes or shows the
backing file's; raw reads zeros or the old bytes. Growing a qcow2 v2 image over a backing file
may be refused with -ENOTSUP, as QEMU refuses it, but must then leave the size unchanged.
Grown space reads as zeros, never as the backing file's data; only between the old end and the
end of its cluster may it show what an earlier shrink cut off there, as QEMU shows it.

The configurations cover every cluster size, refcount width, extended L2 setting, compat level,
backing kind and creator (img_create or qemu-img create), each value with each other value
where the sequences suffice.

Environment: WRITE_TEST_SEED (a number or "random"), WRITE_TEST_SEQUENCES (default 40),
WRITE_TEST_OPS (operations per sequence, default 30).

usage: test_property.py WRITE_DRIVER
"""

import itertools
import os
import random
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import writetest as wt  # noqa: E402

MIB = 1 << 20
MAX_SIZE = 32 * MIB
MIN_SIZE = 4 * MIB

DIMENSIONS = {
    'cluster': (512, 4096, 65536, 2 * MIB),
    'refcount': (1, 2, 4, 8, 16, 32, 64),
    'extended_l2': (False, True),
    'compat': ('0.10', '1.1'),
    'backing': (None, 'qcow2', 'raw'),
    'creator': ('api', 'qemu'),
}
# Every tenth sequence runs on a raw image instead.
RAW_EVERY = 10


def valid(cfg):
    if cfg['compat'] == '0.10' and (cfg['refcount'] != 16 or cfg['extended_l2']):
        return False
    return not (cfg['extended_l2'] and cfg['cluster'] < 16384)


def covering_configs(count, rng):
    """`count` valid configurations chosen greedily so that as many pairs of values of two
    dimensions as possible appear together (pairwise coverage), every value early on."""
    names = list(DIMENSIONS)
    candidates = [dict(zip(names, values)) for values in itertools.product(*DIMENSIONS.values())]
    candidates = [c for c in candidates if valid(c)]
    rng.shuffle(candidates)
    covered = set()

    def pairs(c):
        return {(a, c[a], b, c[b]) for a, b in itertools.combinations(names, 2)}

    chosen = []
    for _ in range(count):
        best = max(candidates, key=lambda c: len(pairs(c) - covered))
        if not pairs(best) - covered:
            best = rng.choice(candidates)
        covered |= pairs(best)
        chosen.append(best)
    return chosen


def describe(cfg):
    if cfg.get('format') == 'raw':
        return 'raw'
    return 'qcow2 cluster=%d refcount=%d%s compat=%s backing=%s by %s' % (
        cfg['cluster'], cfg['refcount'], ' extended_l2' if cfg['extended_l2'] else '',
        cfg['compat'], cfg['backing'] or 'none', cfg['creator'])


def make_backing(s, n, cfg, rng, size):
    """A backing file with random content, made by qemu-img; returns (name, fmt, content)."""
    backing_size = rng.randrange(size // 2, size * 3 // 2) // 512 * 512
    content = wt.random_content(rng, backing_size)
    raw = wt.write_file(s.path('backing-%d.raw' % n), content)
    if cfg['backing'] == 'raw':
        return os.path.basename(raw), 'raw', content
    name = 'backing-%d.qcow2' % n
    cluster = rng.choice((512, 4096, 65536))
    wt.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=%d' % cluster,
                raw, name, cwd=s.tmp)
    return name, 'qcow2', content


def create_image(s, n, cfg, rng):
    """The image under test and its starting content. Returns (name, fmt, content, backing
    raw path or None)."""
    size = rng.randrange(MIN_SIZE, MAX_SIZE + 1)
    size = size // 512 * 512 if rng.random() < 0.5 else size // cfg.get('cluster', 512) * \
        cfg.get('cluster', 512) or MIN_SIZE
    if cfg.get('format') == 'raw':
        name = 'image-%d.raw' % n
        s.api('create', name, 'raw', size)
        return name, 'raw', bytes(size), None
    opts = ['cluster_size=%d' % cfg['cluster'], 'refcount_bits=%d' % cfg['refcount'],
            'compat=%s' % cfg['compat']]
    if cfg['extended_l2']:
        opts.append('extended_l2=on')
    content, backing_raw = bytes(size), None
    name = 'image-%d.qcow2' % n
    if cfg['backing']:
        backing, backing_fmt, data = make_backing(s, n, cfg, rng, size)
        content, backing_raw = wt.fit(data, size), 'backing-%d.raw' % n
        opts += ['backing_file=%s' % backing, 'backing_fmt=%s' % backing_fmt]
    if cfg['creator'] == 'api':
        s.api('create', name, 'qcow2', size, ','.join(opts))
    else:
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', ','.join(opts), name, size, cwd=s.tmp)
    return name, 'qcow2', content, backing_raw


def run_sequence(s, n, cfg, seed, ops):
    rng = random.Random(seed)
    name, fmt, content, backing_raw = create_image(s, n, cfg, rng)
    start = wt.write_file(s.path('start-%d.raw' % n), content)
    pristine = s.path('pristine-%d.%s' % (n, fmt))
    shutil.copyfile(s.path(name), pristine)
    cluster = 4096 if fmt == 'raw' else cfg['cluster']
    args = ['run', name, '-f', fmt, '--random', seed, '--ops', ops, '--cluster', cluster,
            '--shadow-in', start, '--shadow-out', 'expected-%d.raw' % n,
            '--check-report', 'check-%d.json' % n, '--min-size', MIB, '--max-size', MAX_SIZE,
            '--resize-prealloc']
    if fmt == 'raw':
        args += ['--discard', 'hint']
    elif cfg['backing'] and cfg['compat'] == '0.10':
        args += ['--discard', 'keep-or-backing', '--backing-raw', backing_raw,
                 '--resize-may-refuse']
    if fmt == 'qcow2' and cfg['extended_l2']:
        args += ['--subcluster', cluster // 32]
    proc = s.api(*args, ok_codes=None)
    replay = 'cp %s %s && %s %s --script ops-%d.txt' % (
        os.path.basename(pristine), name, s.driver,
        ' '.join(str(a) for a in args).replace('--random %d --ops %d' % (seed, ops), ''), n)
    with open(s.path('ops-%d.txt' % n), 'w') as f:
        f.write(proc.stdout)
    if proc.returncode != 0:
        raise wt.CheckFailed('write_driver %s\n  %s\n  operations (ops-%d.txt):\n    %s\n'
                             '  replay in %s:\n    %s' % (
                                 wt.describe_rc(proc.returncode), wt.clip(proc.stderr), n,
                                 proc.stdout.strip().replace('\n', '\n    '), s.tmp, replay))
    try:
        expected = 'expected-%d.raw' % n
        wt.assert_same_content(expected, name, fmt, cwd=s.tmp)
        if fmt == 'qcow2':
            wt.assert_qemu_check(name, cwd=s.tmp)
            with open(s.path('check-%d.json' % n)) as f:
                report = wt.parse_json(f.read(), 'img_check')
            problems = wt.check_report_problems(report or {}, 'img_check')
            if report is None or problems:
                raise wt.CheckFailed('img_check: %s' % ('; '.join(problems) or 'no report'))
    except wt.CheckFailed as e:
        raise wt.CheckFailed('%s\n  operations (ops-%d.txt):\n    %s\n  replay in %s:\n    %s' % (
            e, n, proc.stdout.strip().replace('\n', '\n    '), s.tmp, replay))
    for leftover in (start, pristine, s.path(name), s.path('expected-%d.raw' % n)):
        os.unlink(leftover)


def oracle_self_test(s):
    """The verdicts this test relies on must be able to say no: the driver notices one wrong
    byte, and the qemu-img check assertion notices one leaked cluster."""
    with s.check('oracle: the shadow comparison notices a single wrong byte'):
        s.api('create', 'oracle.raw', 'raw', MIB)
        wt.write_file(s.path('oracle-start.raw'), bytes(MIB // 2 + 1) + b'\x01')
        proc = s.api('run', 'oracle.raw', '-f', 'raw', '--shadow-in', 'oracle-start.raw',
                     '--script', '-', ok_codes=None, input='flush\n')
        if proc.returncode != 1 or 'guest offset 524289' not in proc.stderr:
            raise wt.CheckFailed('the driver did not report the wrong byte: %s %s' % (
                wt.describe_rc(proc.returncode), wt.clip(proc.stderr)))
    with s.check('oracle: the qemu-img check assertion notices a leaked cluster'):
        image = s.path('oracle.qcow2')
        wt.qemu_img('create', '-q', '-f', 'qcow2', image, MIB)
        wt.assert_qemu_check(image)
        with open(image, 'r+b') as f:
            header = f.read(72)
            reftable = struct.unpack('>Q', header[48:56])[0]
            f.seek(reftable)
            block = struct.unpack('>Q', f.read(8))[0]
            # A cluster past everything in use, inside the file: referenced by nothing.
            f.truncate(8 * 65536)
            f.seek(block + 2 * 6)
            f.write(struct.pack('>H', 1))
        try:
            wt.assert_qemu_check(image)
        except wt.CheckFailed as e:
            if 'leaks' not in str(e):
                raise
        else:
            raise wt.CheckFailed('a leaked cluster went unnoticed')


def main():
    s = wt.Suite('property', sys.argv)
    oracle_self_test(s)
    master = s.seed(20240611)
    sequences = wt.env_int('WRITE_TEST_SEQUENCES', 40)
    ops = wt.env_int('WRITE_TEST_OPS', 30)
    rng = random.Random(master)
    configs = covering_configs(sequences, rng)
    for n in range(sequences):
        cfg = {'format': 'raw'} if n % RAW_EVERY == RAW_EVERY - 1 else configs[n]
        seed = rng.randrange(1 << 62)
        with s.check('sequence %d (seed %d, %d ops): %s' % (n, seed, ops, describe(cfg))):
            run_sequence(s, n, cfg, seed, ops)
    s.finish()


if __name__ == '__main__':
    main()
