#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A SIGKILL at any moment of imgutil commit loses no data from the top or the base.

The killpoint preload (tests/write/killpoint.c) counts the writes imgutil makes and kills it
just before write N (or, for writes longer than a sector, after the first sector of it: a torn
write). For a qcow2 top over a raw base and over a qcow2 base, and every N, the chain is copied
afresh from one made by qemu-img and qemu-io, the commit is killed at N, and then:
  - the top reads as before (qemu-img convert -O raw, byte for byte): it is not emptied until
    the base holds everything, flushed, and where emptied it reads the same through the base;
  - the base reads, sector by sector, as it did or as the top does: nothing it held outside
    the top's ranges is lost (a torn write leaves a copied range part old, part new);
  - qemu-img check finds no corruption in either (exit 0, or 3 for leaked clusters: a kill
    between the L2 update that unlinks a cluster and its refcount decrease leaks it, as
    QEMU's own discard ordering would).
Run to completion, the base reads as the top did, the top reads through to it, and both
check clean. Skips (77) without qemu-img or qemu-io.

usage: test_commit_kill.py IMGUTIL KILLPOINT_SO
"""

import os
import shutil
import subprocess
import sys
import tempfile

# The killpoint environment, as the other kill tests use it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'write'))
from test_kill_snapshot import preload_env  # noqa: E402

SKIP = 77
SIZE = 1024 * 1024
SECTOR = 512
TOP_WRITES = ['write -P 0x11 0 64k', 'write -P 0x12 200k 1k', 'write -z 320k 128k',
              'write -c -P 0x13 512k 64k', 'write -P 0x14 900k 100k']


class Failure(Exception):
    pass


def run(args, ok=(0,), env=None, cwd=None):
    proc = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, cwd=cwd, timeout=120)
    if ok is not None and proc.returncode not in ok:
        raise Failure('%s exited %d: %s%s' % (' '.join(map(str, args)), proc.returncode,
                                              proc.stdout.decode(errors='replace')[-2000:],
                                              proc.stderr.decode(errors='replace')[-2000:]))
    return proc


def qemu_io(fmt, image, commands):
    args = ['qemu-io', '-f', fmt]
    for c in commands:
        args += ['-c', c]
    run(args + [image])


def view(image, fmt, out):
    run(['qemu-img', 'convert', '-U', '-f', fmt, '-O', 'raw', image, out])
    with open(out, 'rb') as f:
        return f.read()


def build(folder, base_fmt):
    """The chain (top.qcow2 over base.<fmt>) in `folder`."""
    base = 'base.' + base_fmt
    run(['qemu-img', 'create', '-q', '-f', base_fmt, base, str(SIZE)], cwd=folder)
    qemu_io(base_fmt, os.path.join(folder, base), ['write -P 0xaa 0 384k', 'write -P 0xab 640k 384k'])
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', base_fmt, 'top.qcow2'],
        cwd=folder)
    qemu_io('qcow2', os.path.join(folder, 'top.qcow2'), TOP_WRITES)
    return base


def check(image, fmt, allowed):
    if fmt == 'raw':
        return 0
    rc = run(['qemu-img', 'check', '-f', fmt, image], ok=None).returncode
    if rc not in allowed:
        raise Failure('qemu-img check %s: exit %d' % (image, rc))
    return rc



def try_chain(cli, so, tmp, base_fmt):
    pristine = os.path.join(tmp, 'pristine-' + base_fmt)
    work = os.path.join(tmp, 'work-' + base_fmt)
    os.mkdir(pristine)
    base = build(pristine, base_fmt)
    top_view = view(os.path.join(pristine, 'top.qcow2'), 'qcow2', os.path.join(tmp, 'top.raw'))
    base_view = view(os.path.join(pristine, base), base_fmt, os.path.join(tmp, 'base.raw'))

    def fresh():
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)

    def verify(what, allowed):
        if view(os.path.join(work, 'top.qcow2'), 'qcow2', os.path.join(tmp, 'v.raw')) != top_view:
            raise Failure('%s: the top no longer reads as before' % what)
        now = view(os.path.join(work, base), base_fmt, os.path.join(tmp, 'v.raw'))
        for off in range(0, SIZE, SECTOR):
            sector = now[off:off + SECTOR]
            if sector not in (base_view[off:off + SECTOR], top_view[off:off + SECTOR]):
                raise Failure('%s: the base at %d reads neither as before nor as the top' %
                              (what, off))
        return (check(os.path.join(work, 'top.qcow2'), 'qcow2', allowed),
                check(os.path.join(work, base), base_fmt, allowed))

    fresh()
    count_file = os.path.join(tmp, 'count')
    run([cli, 'commit', os.path.join(work, 'top.qcow2')],
        env=preload_env(so, KILLPOINT_COUNT=count_file))
    verify('completed', (0,))
    if view(os.path.join(work, base), base_fmt, os.path.join(tmp, 'v.raw')) != top_view:
        raise Failure('completed: the base does not read as the top did')
    with open(count_file) as f:
        lengths = [int(line) for line in f if line.strip()]
    if not lengths:
        raise Failure('the commit made no writes')
    leaks = {'top': 0, 'base': 0}
    for n, length in enumerate(lengths, 1):
        for torn in ([False, True] if length > 512 else [False]):
            fresh()
            env = preload_env(so, KILLPOINT_AT=n, KILLPOINT_TORN=1 if torn else 0)
            proc = run([cli, 'commit', os.path.join(work, 'top.qcow2')], ok=None, env=env)
            if proc.returncode != -9:
                raise Failure('kill point %d: exit %d, not killed' % (n, proc.returncode))
            what = 'kill point %d%s' % (n, ' (torn)' if torn else '')
            top_rc, base_rc = verify(what, (0, 3))
            leaks['top'] += top_rc == 3
            leaks['base'] += base_rc == 3
    print('ok   %s base: %d kill points; leaks left in the top at %d, in the base at %d' %
          (base_fmt, len(lengths), leaks['top'], leaks['base']))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    if not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('SKIP: qemu-img or qemu-io not found')
        return SKIP
    cli, so = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    failures = 0
    with tempfile.TemporaryDirectory(prefix='commit-kill-') as tmp:
        for base_fmt in ('raw', 'qcow2'):
            try:
                try_chain(cli, so, tmp, base_fmt)
            except Failure as e:
                failures += 1
                print('FAIL %s base: %s' % (base_fmt, e))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
