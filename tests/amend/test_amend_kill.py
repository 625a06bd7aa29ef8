#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A SIGKILL at any moment of an amend leaves the old image or the new one, with leaks at most.

The killpoint preload (tests/write/killpoint.c) counts the writes `imgutil amend` makes and
kills it just before write N (and, for writes longer than a sector, during it: the first
sector written, then the kill). For each change and every N, a fresh copy of the image (made
by qemu-img/qemu-io: 4k clusters, data, zero and compressed clusters, a snapshot) is amended
and killed at N, and then:
  - qemu-img check exits 0 or 3 (leaked clusters at most, as QEMU allows);
  - the guest view is unchanged (qemu-img compare with the image before the change);
  - the option reads as before or as asked (qemu-img info: refcount-bits, compat).
Run to completion, every change must leave an image qemu-img check finds clean.

usage: test_amend_kill.py KILLPOINT_SO
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77

# name: (image, -o text, info key, old value, new value)
CHANGES = {
    'refcount-8': ('v3', 'refcount_bits=8', 'refcount-bits', 16, 8),
    'refcount-64': ('v3', 'refcount_bits=64', 'refcount-bits', 16, 64),
    'refcount-4': ('v3', 'refcount_bits=4', 'refcount-bits', 16, 4),
    'downgrade': ('v3', 'compat=0.10', 'compat', '1.1', '0.10'),
    'downgrade-overlay': ('overlay', 'compat=0.10', 'compat', '1.1', '0.10'),
    'upgrade': ('v2', 'compat=1.1', 'compat', '0.10', '1.1'),
}


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'pylib'))
sys.path.insert(0, os.path.join(HERE, '..', 'write'))
import command  # noqa: E402
from test_kill_snapshot import preload_env  # noqa: E402  (the killpoint environment)


class Failure(Exception):
    pass


def run(args, ok=(0,), env=None):
    if env is None:
        return command.run(args, Failure, 120, 2000, ok_codes=ok)
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          timeout=120)


def build(tmp):
    """The images the changes start from, by name."""
    images = {}
    v3 = os.path.join(tmp, 'v3.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', v3, '2M'])
    run(['qemu-io', '-c', 'write -P 0x11 0 300k', '-c', 'write -z 64k 12k',
         '-c', 'write -c -P 0x12 400k 8k', '-c', 'write -z 1M 64k', v3])
    run(['qemu-img', 'snapshot', '-c', 's1', v3])
    run(['qemu-io', '-c', 'write -P 0x13 4k 8k', '-c', 'write -z 200k 8k', v3])
    images['v3'] = v3
    overlay = os.path.join(tmp, 'overlay.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'v3.qcow2',
         '-F', 'qcow2', overlay])
    run(['qemu-io', '-c', 'write -z 0 16k', '-c', 'write -P 0x21 100k 4k',
         '-c', 'write -z 100k 4k', overlay])
    images['overlay'] = overlay
    v2 = os.path.join(tmp, 'v2.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k,compat=0.10', v2,
         '2M'])
    run(['qemu-io', '-c', 'write -P 0x31 0 100k', v2])
    run(['qemu-img', 'snapshot', '-c', 's1', v2])
    images['v2'] = v2
    return images


def option_value(image, key):
    info = json.loads(run(['qemu-img', 'info', '--output=json', image]).stdout)
    return info.get('format-specific', {}).get('data', {}).get(key)


def verify(image, original, key, old, new):
    problems = []
    code = run(['qemu-img', 'check', image], ok=None).returncode
    if code not in (0, 3):
        problems.append('qemu-img check exits %d' % code)
        return problems
    if run(['qemu-img', 'compare', original, image], ok=None).returncode != 0:
        problems.append('the guest view changed')
    value = option_value(image, key)
    if value not in (old, new):
        problems.append('%s is %r' % (key, value))
    return problems


def try_change(name, so, cli, tmp, images):
    source, opts, key, old, new = CHANGES[name]
    start = images[source]
    image = os.path.join(tmp, 'op.qcow2')
    count_file = os.path.join(tmp, 'count')
    shutil.copyfile(start, image)
    cmd = [cli, 'amend', '-o', opts, image]
    done = run(cmd, env=preload_env(so, KILLPOINT_COUNT=count_file))
    if done.returncode != 0:
        raise Failure('%s failed: %s' % (name, done.stderr.decode(errors='replace')))
    with open(count_file) as f:
        lengths = [int(line) for line in f]
    if not lengths:
        raise Failure('%s made no writes' % name)
    if run(['qemu-img', 'check', image], ok=None).returncode != 0:
        raise Failure('%s completed but qemu-img check is not clean' % name)
    if option_value(image, key) != new:
        raise Failure('%s completed but %s is %r' % (name, key, option_value(image, key)))
    bad = []
    tried = 0
    for n in range(1, len(lengths) + 1):
        for torn in (0, 1) if lengths[n - 1] > 512 else (0,):
            tried += 1
            shutil.copyfile(start, image)
            proc = run(cmd, ok=None, env=preload_env(so, KILLPOINT_AT=n, KILLPOINT_TORN=torn))
            if proc.returncode != -9:
                raise Failure('%s was not killed at write %d (%s): %s' % (
                    name, n, command.describe_rc(proc.returncode),
                    proc.stderr.decode(errors='replace')))
            problems = verify(image, start, key, old, new)
            if problems:
                bad.append((n, torn, problems))
    return len(lengths), tried, bad


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    so = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or list(CHANGES)
    cli = os.environ.get('IMGUTIL_CLI')
    if not cli or not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('SKIP: needs IMGUTIL_CLI, qemu-img and qemu-io')
        return SKIP
    failed = False
    with tempfile.TemporaryDirectory(prefix='amend-kill-') as tmp:
        images = build(tmp)
        for name in names:
            try:
                writes, tried, bad = try_change(name, so, cli, tmp, images)
            except Failure as e:
                print('FAIL %s: %s' % (name, e))
                failed = True
                continue
            print('%s: %d writes, %d of %d kill points leave a bad image' % (
                name, writes, len(bad), tried))
            for n, torn, problems in bad[:5]:
                print('  killed %s write %d: %s' % ('during' if torn else 'before', n,
                                                     '; '.join(problems)))
            failed = failed or bool(bad)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
