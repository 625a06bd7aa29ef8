#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every operation that touches an image, with an I/O error injected at each of its requests.

For each scenario the requests are counted first (IMGUTIL_FAULT=count), then the command runs
again with a fault at the n-th request of each class (sampled evenly when there are many),
for each error kind. Every run must end without a crash or a sanitizer report, a failure must
say why on stderr, the image must pass `qemu-img check` (leaks allowed), data flushed before
the fault must read back, and convert must leave the old target or none.

    test_faults.py IMGUTIL WRITE_DRIVER
Environment: IMGUTIL_FAULT_SAMPLES (values of n per class, default 3), IMGUTIL_FAULT_ONLY
(comma-separated scenario names to run).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import Scenario, qemu_check, run  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
SIZE = 1 * MiB


def qemu_io(path, fmt, *commands):
    argv = ['qemu-io', '-f', fmt]
    for c in commands:
        argv += ['-c', c]
    proc = run(argv + [path])
    if 'failed' in proc.stdout + proc.stderr:
        raise RuntimeError('qemu-io %s: %s' % (commands, proc.stdout + proc.stderr))


def guest_bytes(path, fmt):
    """The image's guest content as qemu-img reads it."""
    data = faultlib.qemu_read_raw(path, fmt, path + '.raw')
    os.unlink(path + '.raw')
    return data


def pattern_ok(data, offset, length, byte):
    return data[offset:offset + length] == bytes([byte]) * length


def virtual_size(path, fmt):
    import json
    return json.loads(run(['qemu-img', 'info', '-f', fmt, '--output=json', path]).stdout)[
        'virtual-size']


def new_image(path, fmt, cluster, size=SIZE):
    opts = ['-o', 'cluster_size=%d' % cluster] if fmt == 'qcow2' else []
    run(['qemu-img', 'create', '-q', '-f', fmt] + opts + [path, str(size)])


class Create(Scenario):
    def __init__(self, fmt, cluster, prealloc):
        self.fmt, self.cluster, self.prealloc = fmt, cluster, prealloc
        self.name = 'create-%s-%d-%s' % (fmt, cluster, prealloc)

    def command(self, work):
        opts = 'preallocation=%s' % self.prealloc
        if self.fmt == 'qcow2':
            opts += ',cluster_size=%d' % self.cluster
        return [IMGUTIL, 'create', '-q', '-f', self.fmt, '-o', opts,
                os.path.join(work, 'img'), str(SIZE)]

    def verify(self, work, rc):
        path = os.path.join(work, 'img')
        if rc != 0:
            # A failed create leaves no file, or one nothing mistakes for a good image.
            if not os.path.exists(path) or self.fmt == 'raw':
                return []
            proc = run(['qemu-img', 'info', '-f', self.fmt, path], ok=None)
            return [] if proc.returncode != 0 else qemu_check(path, self.fmt)
        problems = qemu_check(path, self.fmt) if self.fmt == 'qcow2' else []
        if virtual_size(path, self.fmt) != SIZE:
            problems.append('created image has the wrong size')
        return problems


WRITE_SCRIPT = [
    'write 0 4096 1',
    'write 65536 8192 2',
    'flush',
    'write 131072 512 3',
    'write 200000 70000 4',
    'flush',
    'write 524288 65536 5',
    'zero 196608 4096',
    'flush',
    'write 720896 4096 6',
]


class Write(Scenario):
    """Writes through the public API (tests/write/write_driver.c)."""

    def __init__(self, fmt, cluster):
        self.fmt, self.cluster = fmt, cluster
        self.name = 'write-%s-%d' % (fmt, cluster)
        self.reference = None

    def prepare(self, work):
        new_image(os.path.join(work, 'img'), self.fmt, self.cluster)
        with open(os.path.join(work, 'script'), 'w') as f:
            f.write('\n'.join(WRITE_SCRIPT) + '\n')
        if self.reference is None:
            # What the whole script writes, made once without faults.
            ref = os.path.join(work, 'ref')
            new_image(ref, self.fmt, self.cluster)
            run([WRITE_DRIVER, 'run', ref, '-f', self.fmt, '--script',
                 os.path.join(work, 'script')])
            self.reference = faultlib.qemu_read_raw(ref, self.fmt, ref + '.raw')
            os.unlink(ref)
            os.unlink(ref + '.raw')

    def command(self, work):
        return [WRITE_DRIVER, 'run', os.path.join(work, 'img'), '-f', self.fmt, '--script',
                os.path.join(work, 'script')]

    def verify(self, work, rc):
        path = os.path.join(work, 'img')
        problems = qemu_check(path, self.fmt) if self.fmt == 'qcow2' else []
        if problems:
            return problems
        data = guest_bytes(path, self.fmt)
        return faultlib.unflushed_problems(WRITE_SCRIPT, self.last_stdout, rc, data,
                                           self.reference)


class Resize(Scenario):
    def __init__(self, fmt, cluster, prealloc):
        self.fmt, self.cluster, self.prealloc = fmt, cluster, prealloc
        self.name = 'resize-%s-%d-%s' % (fmt, cluster, prealloc)

    def prepare(self, work):
        path = os.path.join(work, 'img')
        new_image(path, self.fmt, self.cluster)
        qemu_io(path, self.fmt, 'write -P 90 0 65536')

    def command(self, work):
        return [IMGUTIL, 'resize', '-q', '-f', self.fmt, '--preallocation=%s' % self.prealloc,
                os.path.join(work, 'img'), str(2 * SIZE)]

    def verify(self, work, rc):
        path = os.path.join(work, 'img')
        problems = qemu_check(path, self.fmt) if self.fmt == 'qcow2' else []
        if problems:
            return problems
        size = virtual_size(path, self.fmt)
        if rc == 0 and size != 2 * SIZE:
            problems.append('resize succeeded but the size is %d' % size)
        if self.fmt == 'qcow2' and size not in (SIZE, 2 * SIZE):
            problems.append('size %d is neither the old nor the new one' % size)
        if not pattern_ok(guest_bytes(path, self.fmt), 0, 65536, 90):
            problems.append('data before the resize does not read back')
        return problems


class Snapshot(Scenario):
    def __init__(self, cluster, action):
        self.cluster, self.action = cluster, action
        self.name = 'snapshot-%s-%d' % (action.lstrip('-'), cluster)

    def prepare(self, work):
        path = os.path.join(work, 'img')
        new_image(path, 'qcow2', self.cluster)
        qemu_io(path, 'qcow2', 'write -P 17 0 65536')
        run(['qemu-img', 'snapshot', '-c', 's1', path])
        qemu_io(path, 'qcow2', 'write -P 34 0 65536')

    def command(self, work):
        name = 's2' if self.action == '-c' else 's1'
        return [IMGUTIL, 'snapshot', '-q', self.action, name, os.path.join(work, 'img')]

    def verify(self, work, rc):
        path = os.path.join(work, 'img')
        problems = qemu_check(path, 'qcow2')
        if problems:
            return problems
        data = guest_bytes(path, 'qcow2')
        now_17 = pattern_ok(data, 0, 65536, 17)
        now_34 = pattern_ok(data, 0, 65536, 34)
        if self.action == '-a':
            if rc == 0 and not now_17:
                problems.append('applied snapshot does not read back')
            if rc != 0 and not (now_17 or now_34):
                problems.append('failed apply left data that is neither before nor after')
        elif not now_34:
            problems.append('current data changed')
        return problems


class Check(Scenario):
    def __init__(self, cluster):
        self.cluster = cluster
        self.name = 'check-repair-%d' % cluster

    def prepare(self, work):
        path = os.path.join(work, 'img')
        new_image(path, 'qcow2', self.cluster)
        qemu_io(path, 'qcow2', 'write -P 51 0 131072', 'discard 0 65536')

    def command(self, work):
        return [IMGUTIL, 'check', '-q', '-r', 'all', os.path.join(work, 'img')]

    def verify(self, work, rc):
        path = os.path.join(work, 'img')
        problems = qemu_check(path, 'qcow2')
        if not problems and not pattern_ok(guest_bytes(path, 'qcow2'), 65536, 65536, 51):
            problems.append('data changed')
        return problems


OLD_TARGET = b'the old target, which a failed convert must leave alone\n' * 64


class Convert(Scenario):
    def __init__(self, cluster, target, compressed=False, old_target=True):
        self.cluster, self.target, self.compressed = cluster, target, compressed
        self.old_target = old_target
        self.name = 'convert-%d-%s%s%s' % (cluster, target, '-c' if compressed else '',
                                           '' if old_target else '-new')

    def prepare(self, work):
        src = os.path.join(work, 'src')
        new_image(src, 'qcow2', self.cluster)
        qemu_io(src, 'qcow2', 'write -P 68 0 100000', 'write -P 85 300000 200000')
        if self.old_target:
            with open(os.path.join(work, 'dst'), 'wb') as f:
                f.write(OLD_TARGET)

    def command(self, work):
        extra = ['-c'] if self.compressed else []
        return [IMGUTIL, 'convert', '-q', '-O', self.target] + extra + [
            os.path.join(work, 'src'), os.path.join(work, 'dst')]

    def verify(self, work, rc):
        src, dst = os.path.join(work, 'src'), os.path.join(work, 'dst')
        problems = qemu_check(src, 'qcow2')
        left = sorted(set(os.listdir(work)) - {'src', 'dst'})
        if left:
            problems.append('files left behind: %s' % left)
        if rc == 0:
            proc = run(['qemu-img', 'compare', '-f', 'qcow2', '-F', self.target, src, dst],
                       ok=None)
            if proc.returncode != 0:
                problems.append('converted image differs: %s' % proc.stdout.strip())
        elif os.path.exists(dst):
            with open(dst, 'rb') as f:
                if not self.old_target:
                    problems.append('failed convert left a target behind')
                elif f.read() != OLD_TARGET:
                    problems.append('failed convert changed the old target')
        return problems


def scenarios():
    out = []
    for cluster in (512, 65536):
        out += [Create('qcow2', cluster, 'off'), Create('qcow2', cluster, 'metadata'),
                Write('qcow2', cluster), Resize('qcow2', cluster, 'off'),
                Resize('qcow2', cluster, 'falloc'), Resize('qcow2', cluster, 'metadata'),
                Resize('qcow2', cluster, 'full'), Snapshot(cluster, '-c'),
                Snapshot(cluster, '-a'), Snapshot(cluster, '-d'), Check(cluster),
                Convert(cluster, 'qcow2'), Convert(cluster, 'raw')]
    out += [Create('raw', 0, 'falloc'), Write('raw', 0), Resize('raw', 0, 'off'),
            Resize('raw', 0, 'falloc'), Convert(65536, 'qcow2', compressed=True),
            Convert(65536, 'raw', old_target=False)]
    return out


# Known defects in code outside the I/O layer, found by this test: (scenario, class, kind) ->
# why ('*': every kind). A run matching one may fail its checks without failing the test; an
# entry that no run of its scenario fails is stale, and fails the test ("unexpected pass").
EXPECTED_FAILURES = {}


def expected_failure(name, cls, kind, n):
    """The entry (scenario, class, kind) that covers this run, or None."""
    for key in ((name, cls, kind), (name, cls, '*')):
        if key in EXPECTED_FAILURES:
            return key
    return None


def entries_of(name):
    return [key for key in EXPECTED_FAILURES if key[0] == name]


def main():
    global IMGUTIL, WRITE_DRIVER
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    IMGUTIL, WRITE_DRIVER = sys.argv[1], sys.argv[2]
    if not faultlib.tools_present():
        print('qemu-img or qemu-io not installed: skipped')
        return faultlib.SKIP
    limit = int(os.environ.get('IMGUTIL_FAULT_SAMPLES', '3'))
    only = [s for s in os.environ.get('IMGUTIL_FAULT_ONLY', '').split(',') if s]
    tally = faultlib.Tally()
    faultlib.run_scenarios(scenarios(), limit, expected_failure, tally, only, entries_of)
    print(tally.summary())
    for f in tally.failures:
        print('FAIL: ' + f, file=sys.stderr)
    return 1 if tally.failures else 0


if __name__ == '__main__':
    sys.exit(main())
