#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A SIGKILL at any moment of a snapshot operation or a repair leaves only leaks.

The killpoint preload (killpoint.c) counts the writes `imgutil` makes and kills it just before
write N. For each operation and every N from 1 to the number of writes it makes, the image is
built again (512-byte clusters, snapshots and diverging writes made by qemu-img/qemu-io), the
operation is killed at N, and then:
  - qemu-img check exits 0 or 3 (leaks at most); after a killed repair it may still report
    corruptions the damaged image had (exit 2), never a new one;
  - the guest view reads as the old or the new state (qemu-img convert -O raw, compared byte
    for byte with the views taken before):
      snapshot -c: the active view unchanged, and the new snapshot, if listed, reads as it;
      snapshot -a: the old active view or the snapshot's (s1, s2);
      snapshot -d: the view unchanged, and every snapshot still listed reads as before (s1, s2);
      check -r:    the view unchanged (the repair fixes metadata only);
  - the snapshots listed are the old list or the new one.
Run to completion, every operation must leave an image qemu-img check finds clean.
Every kill point of a write longer than a sector is also tried as a torn write (the first
sector written, then the kill).

usage: test_kill_snapshot.py KILLPOINT_SO [--count] [OPERATION...]
  --count  only reports how many kill points leave corruption (exit 0 regardless)
"""

import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
CLUSTER = 512
SIZE = 192 * 1024

# Writes before the first snapshot, between the two, and after the second: each layer
# diverges from the last one in data, zeroed and discarded clusters.
LAYERS = [
    ['write -P 0x11 0 96k', 'write -P 0x12 120k 40k', 'write -c -P 0x13 176k 4k'],
    ['write -P 0x21 4k 6k', 'write -z 40k 3k', 'discard 150k 4k', 'write -P 0x22 100k 1k'],
    ['write -P 0x31 6k 2k', 'write -P 0x32 64k 8k', 'write -z 130k 1k',
     'write -P 0x33 188k 4k'],
]


class Failure(Exception):
    pass


def run(args, ok=(0,), env=None, cwd=None):
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          cwd=cwd, timeout=120)
    if ok is not None and proc.returncode not in ok:
        raise Failure('%s exited %d: %s%s' % (' '.join(args), proc.returncode,
                                              proc.stdout.decode(errors='replace')[-2000:],
                                              proc.stderr.decode(errors='replace')[-2000:]))
    return proc


def qemu_io(image, commands):
    args = ['qemu-io', '-d', 'unmap', '-f', 'qcow2']
    for c in commands:
        args += ['-c', c]
    out = run(args + [image])
    if b'failed' in out.stdout + out.stderr:
        raise Failure('qemu-io %s: %s' % (commands, out.stdout + out.stderr))


def raw_view(image, out, snapshot=None):
    args = ['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'raw']
    if snapshot:
        args += ['-l', 'snapshot.name=' + snapshot]
    run(args + [image, out])
    with open(out, 'rb') as f:
        return f.read()


def snapshot_names(image):
    out = run(['qemu-img', 'snapshot', '-U', '-l', image]).stdout.decode()
    return [line.split()[1] for line in out.splitlines()[2:] if len(line.split()) >= 2]


def build(tmp, with_leak=False):
    """The starting image and the raw views it holds: active, s1, s2."""
    image = os.path.join(tmp, 'start.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % CLUSTER, image,
         str(SIZE)])
    qemu_io(image, LAYERS[0])
    run(['qemu-img', 'snapshot', '-c', 's1', image])
    qemu_io(image, LAYERS[1])
    run(['qemu-img', 'snapshot', '-c', 's2', image])
    qemu_io(image, LAYERS[2])
    views = {'': raw_view(image, os.path.join(tmp, 'active.raw'))}
    for name in ('s1', 's2'):
        views[name] = raw_view(image, os.path.join(tmp, name + '.raw'), name)
    return image, views


class Qcow2File:
    """Just enough of the format to damage an image (default refcount width: 16 bits)."""

    def __init__(self, f):
        self.f = f
        header = self.read(0, 72)
        self.l1_size = int.from_bytes(header[36:40], 'big')
        self.l1_offset = int.from_bytes(header[40:48], 'big')
        self.reftable = int.from_bytes(header[48:56], 'big')

    def read(self, offset, length):
        self.f.seek(offset)
        return self.f.read(length)

    def write(self, offset, data):
        self.f.seek(offset)
        self.f.write(data)

    def l2_entries(self):
        """(entry offset in the file, entry) of every allocated active L2 entry."""
        for i in range(self.l1_size):
            l2 = int.from_bytes(self.read(self.l1_offset + 8 * i, 8), 'big') & OFFSET_MASK
            for j in range(CLUSTER // 8) if l2 else ():
                entry = int.from_bytes(self.read(l2 + 8 * j, 8), 'big')
                if entry & OFFSET_MASK and not entry & COMPRESSED:
                    yield l2 + 8 * j, entry

    def refcount_at(self, host):
        cluster = host // CLUSTER
        block = int.from_bytes(self.read(self.reftable + 8 * (cluster // (CLUSTER // 2)), 8),
                               'big')
        return block + 2 * (cluster % (CLUSTER // 2))

    def refcount(self, host):
        return int.from_bytes(self.read(self.refcount_at(host), 2), 'big')

    def set_refcount(self, host, value):
        self.write(self.refcount_at(host), value.to_bytes(2, 'big'))


OFFSET_MASK = 0x00fffffffffffe00
COPIED = 1 << 63
COMPRESSED = 1 << 62


def damage(tmp, image, kind):
    """Damage whose repair changes a refcount and the COPIED flag that depends on it:
    leaks: a cluster used once is counted twice and its entry lacks COPIED (consistent with
           the wrong count), so repairing the leak must also set COPIED;
    all:   the same, and a cluster shared with s2 is counted once and its entry has COPIED,
           so repairing the refcount must also clear COPIED;
    rebuild: a cluster used once is counted zero times and its entry lacks COPIED, so the
           rebuilt refcount structure must come with the COPIED flag."""
    work = os.path.join(tmp, 'damage-%s.qcow2' % kind)
    shutil.copyfile(image, work)
    with open(work, 'r+b') as f:
        q = Qcow2File(f)
        entries = list(q.l2_entries())
        private = [(at, e) for at, e in entries if e & COPIED]
        shared = [(at, e) for at, e in entries if not e & COPIED]
        at, entry = private[len(private) // 2]
        q.set_refcount(entry & OFFSET_MASK, 2)
        q.write(at, (entry & ~COPIED).to_bytes(8, 'big'))
        if kind == 'rebuild':
            # Counted zero times: only a new refcount structure repairs that.
            q.set_refcount(entry & OFFSET_MASK, 0)
        if kind == 'all':
            at, entry = shared[len(shared) // 2]
            q.set_refcount(entry & OFFSET_MASK, 1)
            q.write(at, (entry | COPIED).to_bytes(8, 'big'))
    return work


def check_errors(image):
    """qemu-img check's exit code and the corruptions it names."""
    check = run(['qemu-img', 'check', image], ok=None)
    lines = (check.stdout + check.stderr).decode(errors='replace').splitlines()
    return check.returncode, set(line for line in lines if line.startswith('ERROR'))


def verify(op, image, views, tmp, known_errors=frozenset()):
    """Problems with `image` after `op` was killed (empty when it is sound). `known_errors`:
    the corruptions a killed repair may leave unrepaired (never a new one)."""
    problems = []
    code, errors = check_errors(image)
    new_errors = errors - known_errors
    if code not in (0, 3) and (code != 2 or not errors or new_errors):
        problems.append('qemu-img check exit %d: %s' % (code, '; '.join(sorted(new_errors))[:300]))
        return problems
    names = snapshot_names(image)
    active = raw_view(image, os.path.join(tmp, 'got.raw'))
    if op.startswith('apply'):
        target = op.split('-')[1]
        if active not in (views[''], views[target]):
            problems.append('the active view is neither the old one nor %s' % target)
    elif active != views['']:
        problems.append('the active view changed')
    for name in names:
        data = raw_view(image, os.path.join(tmp, 'got.raw'), name)
        want = views[''] if name == 'new' else views.get(name)
        if data != want:
            problems.append('snapshot %s does not read as it should' % name)
    expected = {'create': [['s1', 's2'], ['s1', 's2', 'new']],
                'delete-s1': [['s1', 's2'], ['s2']],
                'delete-s2': [['s1', 's2'], ['s1']]}.get(op, [['s1', 's2']])
    if names not in expected:
        problems.append('snapshots listed: %r' % names)
    return problems


def command(op, cli, image):
    return {'create': [cli, 'snapshot', '-c', 'new', image],
            'apply-s1': [cli, 'snapshot', '-a', 's1', image],
            'apply-s2': [cli, 'snapshot', '-a', 's2', image],
            'delete-s1': [cli, 'snapshot', '-d', 's1', image],
            'delete-s2': [cli, 'snapshot', '-d', 's2', image],
            'repair-leaks': [cli, 'check', '-q', '-r', 'leaks', image],
            'repair-all': [cli, 'check', '-q', '-r', 'all', image],
            'repair-rebuild': [cli, 'check', '-q', '-r', 'all', image]}[op]


def preload_env(so, **values):
    env = dict(os.environ)
    env['LD_PRELOAD'] = so
    # The kill points are the library's pwrite calls: the thread-pool engine makes them on
    # the calling thread, where io_uring would make none.
    env['IMGUTIL_IO'] = 'threads'
    # Under ASan the sanitizer's runtime must come first; the preload only wraps pwrite.
    env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
    for k, v in values.items():
        env[k] = str(v)
    return env


def try_op(op, so, cli, tmp, start, views):
    """Corrupt kill points of `op`: a list of (N, torn, problems)."""
    known = check_errors(start)[1] if op.startswith('repair') else frozenset()
    image = os.path.join(tmp, 'op.qcow2')
    count_file = os.path.join(tmp, 'count')
    shutil.copyfile(start, image)
    run(command(op, cli, image), ok=(0, 2, 3) if op.startswith('repair') else (0,),
        env=preload_env(so, KILLPOINT_COUNT=count_file))
    with open(count_file) as f:
        lengths = [int(line) for line in f]
    writes = len(lengths)
    if writes == 0:
        raise Failure('%s made no writes' % op)
    problems = verify(op, image, views, tmp)
    code = check_errors(image)[0]
    if code != 0:
        problems.append('qemu-img check exits %d' % code)
    if problems:
        raise Failure('%s completed but: %s' % (op, '; '.join(problems)))
    bad = []
    tried = 0
    for n in range(1, writes + 1):
        # A write of one sector cannot tear.
        for torn in (0, 1) if lengths[n - 1] > 512 else (0,):
            tried += 1
            shutil.copyfile(start, image)
            proc = run(command(op, cli, image), ok=None,
                       env=preload_env(so, KILLPOINT_AT=n, KILLPOINT_TORN=torn))
            if proc.returncode != -9:
                raise Failure('%s was not killed at write %d (exit %d): %s' % (
                    op, n, proc.returncode, proc.stderr.decode(errors='replace')))
            problems = verify(op, image, views, tmp, known)
            if problems:
                bad.append((n, torn, problems))
    return writes, tried, bad


def main():
    args = sys.argv[1:]
    counting = '--count' in args
    args = [a for a in args if a != '--count']
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    so = os.path.abspath(args[0])
    ops = args[1:] or ['create', 'apply-s1', 'apply-s2', 'delete-s1', 'delete-s2',
                       'repair-leaks', 'repair-all', 'repair-rebuild']
    cli = os.environ.get('IMGUTIL_CLI')
    if not cli or not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('SKIP: needs IMGUTIL_CLI, qemu-img and qemu-io')
        return SKIP
    failed = False
    with tempfile.TemporaryDirectory(prefix='kill-snapshot-') as tmp:
        start, views = build(tmp)
        for op in ops:
            base = start
            if op.startswith('repair'):
                base = damage(tmp, start, op.split('-')[1])
            try:
                writes, tried, bad = try_op(op, so, cli, tmp, base, views)
            except Failure as e:
                print('FAIL %s: %s' % (op, e))
                failed = True
                continue
            print('%s: %d writes, %d of %d kill points leave corruption' % (
                op, writes, len(bad), tried))
            for n, torn, problems in bad[:5]:
                print('  killed %s write %d: %s' % ('during' if torn else 'before', n,
                                                     '; '.join(problems)))
            failed = failed or bool(bad)
    if counting:
        return 0
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
