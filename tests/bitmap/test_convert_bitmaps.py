# SPDX-License-Identifier: LGPL-2.1-or-later
"""imgutil convert --bitmaps next to qemu-img convert --bitmaps: the same exit codes and
messages, and targets whose bitmaps (names, flags, granularity, bits decoded from the files)
are the same and pass qemu-img check."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qcow2_bitmaps  # noqa: E402
from test_bitmap_cli import check, failures, qcow2_bitmaps_set_in_use, run, side_by_side  # noqa: E402,E501


def setup(d):
    def sh(*cmd):
        subprocess.run(cmd, cwd=d, check=True, capture_output=True)
    sh('qemu-img', 'create', '-f', 'qcow2', 's.qcow2', '4M')
    sh('qemu-img', 'bitmap', '--add', 's.qcow2', 'b0')
    sh('qemu-img', 'bitmap', '--add', '-g', '4k', 's.qcow2', 'fine')
    sh('qemu-img', 'bitmap', '--add', '--disable', 's.qcow2', 'off')
    sh('qemu-io', '-f', 'qcow2', '-c', 'write 1M 100k', '-c', 'write 3M 4k', 's.qcow2')
    shutil.copy(os.path.join(d, 's.qcow2'), os.path.join(d, 'broken.qcow2'))
    qcow2_bitmaps_set_in_use(os.path.join(d, 'broken.qcow2'), 'fine')
    sh('qemu-img', 'create', '-f', 'qcow2', 'none.qcow2', '1M')
    sh('qemu-img', 'create', '-f', 'raw', 'r.raw', '1M')


def main():
    cli = os.environ.get('IMGUTIL_CLI')
    if not cli or not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('SKIP: needs IMGUTIL_CLI, qemu-img and qemu-io')
        return 77
    work = tempfile.mkdtemp(prefix='imgutil-convert-bitmaps-')
    cases = [
        (['--bitmaps', '-O', 'qcow2', 's.qcow2', 't.qcow2'], 'bitmaps copied'),
        (['--bitmaps', '-O', 'qcow2', '-o', 'cluster_size=4k', 's.qcow2', 't.qcow2'],
         'bitmaps copied into smaller clusters'),
        (['--bitmaps', '-O', 'qcow2', 'none.qcow2', 't.qcow2'], 'a source without bitmaps'),
        (['--bitmaps', '-O', 'raw', 's.qcow2', 't.raw'], 'a raw target'),
        (['--bitmaps', '-O', 'qcow2', '-f', 'raw', 'r.raw', 't.qcow2'], 'a raw source'),
        (['--bitmaps', '-O', 'qcow2', 'broken.qcow2', 't.qcow2'], 'a bitmap in use'),
        (['--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', 'broken.qcow2', 't.qcow2'],
         'a bitmap in use, skipped'),
        (['--skip-broken-bitmaps', '-O', 'qcow2', 's.qcow2', 't.qcow2'],
         '--skip-broken-bitmaps alone'),
    ]
    try:
        for args, what in cases:
            ours, theirs, rc, e1, e2 = side_by_side(cli, 'convert', args, setup, work, what)
            check(e1 == e2, '%s: message %r (qemu-img %r)' % (what, e1, e2))
            target = os.path.join(ours, 't.qcow2')
            if rc == 0 and os.path.exists(os.path.join(theirs, 't.qcow2')):
                a = qcow2_bitmaps.decode(target)
                b = qcow2_bitmaps.decode(os.path.join(theirs, 't.qcow2'))
                check(a == b, '%s: bitmaps %s' % (what, sorted(a)))
                r = subprocess.run(['qemu-img', 'check', target], capture_output=True, text=True)
                check(r.returncode == 0 and 'leaked' not in r.stdout,
                      '%s: qemu-img check %s' % (what, r.stderr.strip()))
        # measure reports the bitmaps' space as qemu-img does.
        for args in (['-O', 'qcow2', 's.qcow2'], ['--output=json', '-O', 'qcow2', 's.qcow2'],
                     ['-O', 'qcow2', '-o', 'cluster_size=4k', 's.qcow2']):
            side_by_side(cli, 'measure', args, setup, work, 'measure ' + ' '.join(args))
            r1 = run([cli, 'measure'] + args, os.path.join(work, 'ours'))
            r2 = run(['qemu-img', 'measure'] + args, os.path.join(work, 'theirs'))
            check(r1[1] == r2[1] and 'bitmaps' in r2[1],
                  'measure %s: %r (qemu-img %r)' % (' '.join(args), r1[1], r2[1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print('%d failed' % len(failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
