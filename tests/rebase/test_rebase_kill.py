#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A SIGKILL at any moment of a safe rebase leaves the guest view as it was.

The killpoint preload (tests/write/killpoint.c) counts the writes `imgutil rebase` makes and
kills it just before write N. For every N from 1 to the number of writes a whole rebase makes,
an overlay (made by qemu-img and qemu-io on base A) is rebased onto base B, which differs from A
in some ranges, and killed at N; then:
  - the image names A (the switch was not made) or B (it was), with format qcow2;
  - its guest view (qemu-img convert -O raw) is byte for byte the view before the rebase;
  - qemu-img check finds no corruption (clusters taken by a killed allocation may leak, as
    after any killed qcow2 write; the complete rebase must leave none).
The same for detaching (-b ""), where the whole old view is copied before the switch.

usage: test_rebase_kill.py KILLPOINT_SO IMGUTIL
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


def run(cmd, ok=(0,), env=None, cwd=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    if p.returncode not in ok:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(cmd), p.returncode,
                                                p.stderr.decode(errors='replace')))
    return p


def qemu_io(image, *cmds, fmt='qcow2', cwd=None):
    args = ['qemu-io', '-f', fmt]
    for c in cmds:
        args += ['-c', c]
    run(args + [image], cwd=cwd)


def build(tmp):
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'A.qcow2', '1M'], cwd=tmp)
    qemu_io('A.qcow2', 'write -P 0x11 0 512k', 'write -P 0x12 768k 128k', cwd=tmp)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'B.qcow2', '1M'], cwd=tmp)
    qemu_io('B.qcow2', 'write -P 0x11 0 128k', 'write -P 0x33 256k 256k', cwd=tmp)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'A.qcow2', '-F', 'qcow2',
         'O.qcow2', '1M'], cwd=tmp)
    qemu_io('O.qcow2', 'write -P 0x44 64k 64k', 'write -P 0x45 300k 4k', cwd=tmp)
    run(['qemu-img', 'convert', '-O', 'raw', 'O.qcow2', 'view.raw'], cwd=tmp)



def backing_of(tmp, image):
    out = run(['qemu-img', 'info', '-U', image], cwd=tmp).stdout.decode()
    name = fmt = None
    for line in out.splitlines():
        if line.startswith('backing file: '):
            name = line[len('backing file: '):].split(' (actual path')[0]
        elif line.startswith('backing file format: '):
            fmt = line[len('backing file format: '):]
    return name, fmt


def problems_after(tmp, image, new_name, complete):
    problems = []
    name, fmt = backing_of(tmp, image)
    allowed = [('A.qcow2', 'qcow2'), (new_name, 'qcow2' if new_name else None)]
    if complete:
        allowed = allowed[1:]
    if (name, fmt) not in allowed:
        problems.append('backing file %r (%r)' % (name, fmt))
    check = run(['qemu-img', 'check', image], ok=(0, 2, 3), cwd=tmp)
    if check.returncode == 2 or (complete and check.returncode != 0):
        problems.append('qemu-img check exit %d: %s' % (check.returncode,
                                                        check.stdout.decode().strip()))
    run(['qemu-img', 'convert', '-O', 'raw', image, 'after.raw'], cwd=tmp)
    with open(os.path.join(tmp, 'view.raw'), 'rb') as a, \
            open(os.path.join(tmp, 'after.raw'), 'rb') as b:
        if a.read() != b.read():
            problems.append('the guest view changed')
    return problems


def rebase_cmd(cli, new_name):
    return [cli, 'rebase', '-b', new_name or ''] + (['-F', 'qcow2'] if new_name else []) + \
        ['op.qcow2']


def try_rebase(so, cli, tmp, new_name):
    count_file = os.path.join(tmp, 'count')
    shutil.copyfile(os.path.join(tmp, 'O.qcow2'), os.path.join(tmp, 'op.qcow2'))
    run(rebase_cmd(cli, new_name), env=preload_env(so, KILLPOINT_COUNT=count_file), cwd=tmp)
    failures = ['complete: %s' % p for p in problems_after(tmp, 'op.qcow2', new_name, True)]
    with open(count_file) as f:
        writes = len(f.read().split())
    if writes < 2:
        failures.append('only %d writes counted' % writes)
    for n in range(1, writes + 1):
        shutil.copyfile(os.path.join(tmp, 'O.qcow2'), os.path.join(tmp, 'op.qcow2'))
        p = subprocess.run(rebase_cmd(cli, new_name), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=preload_env(so, KILLPOINT_AT=n),
                           cwd=tmp)
        if p.returncode != -9:
            failures.append('kill at %d: exit %d, not killed' % (n, p.returncode))
            continue
        failures += ['kill at %d: %s' % (n, x)
                     for x in problems_after(tmp, 'op.qcow2', new_name, False)]
    return writes, failures


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    so, cli = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        return SKIP
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        build(tmp)
        for new_name in ('B.qcow2', None):
            writes, found = try_rebase(so, cli, tmp, new_name)
            print('rebase onto %r: %d kill points' % (new_name, writes))
            failures += ['%r: %s' % (new_name, f) for f in found]
    for f in failures:
        print('FAIL:', f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
