#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Runs the example programs (examples/) as a user would, and checks what they did with
qemu-img: inspect prints what qemu-img info says; overlay makes an overlay qemu-img reads as
its base; convert_progress converts with a progress bar to a target equal to the source;
disk_manager's disks (overlay, snapshots, resize, raw with min_size, sparse) read as the
steps it took say they must.

usage: test_examples.py BUILD_EXAMPLES_DIR"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
MIB = 1 << 20
failures = []


def check(condition, what):
    print(('ok   ' if condition else 'FAIL ') + what, flush=True)
    if not condition:
        failures.append(what)


def run(*args, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)


def qemu_info(path):
    return json.loads(run('qemu-img', 'info', '--output=json', '-U', path).stdout)


def raw_content(path):
    out = path + '.content'
    run('qemu-img', 'convert', '-O', 'raw', path, out)
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def test_inspect(ex, tmp, base):
    proc = run(os.path.join(ex, 'inspect'), base)
    lines = dict(l.split(': ', 1) for l in proc.stdout.splitlines() if ': ' in l)
    info = qemu_info(base)
    want = {'format': info['format'], 'virtual-size': str(info['virtual-size']),
            'actual-size': str(info['actual-size']),
            'cluster-size': str(info.get('cluster-size', 0))}
    got = {k: lines.get(k) for k in want}
    check(proc.returncode == 0 and got == want, 'inspect %s: %r, qemu-img info %r' % (
        os.path.basename(base), got, want))


def test_overlay(ex, tmp, base):
    proc = run(os.path.join(ex, 'overlay'), 'base.qcow2', 'top.qcow2', 96 * MIB, cwd=tmp)
    top = os.path.join(tmp, 'top.qcow2')
    info = qemu_info(top) if proc.returncode == 0 else {}
    check(proc.returncode == 0 and info.get('backing-filename') == 'base.qcow2' and
          info.get('backing-filename-format') == 'qcow2' and
          info.get('virtual-size') == 96 * MIB,
          'overlay: qcow2 on base.qcow2 (qcow2), 96 MiB (%r %r)' % (proc.stderr, info))
    same = run('qemu-img', 'compare', top, base)
    check(same.returncode == 0, 'overlay: reads as its base (%s)' % same.stdout.strip())
    proc = run(os.path.join(ex, 'inspect'), top)
    check('names: backing file %s' % base in proc.stdout and
          'backing-filename-format: qcow2' in proc.stdout,
          'inspect names the overlay\'s backing file: %r' % proc.stdout)


def test_convert_progress(ex, tmp, base):
    dst = os.path.join(tmp, 'converted.qcow2')
    proc = run(os.path.join(ex, 'convert_progress'), base, dst, 'qcow2', 'cluster_size=128k')
    check(proc.returncode == 0 and '100%' in proc.stderr and '[#' in proc.stderr,
          'convert_progress: a progress bar up to 100%% (%r)' % proc.stderr[-120:])
    same = run('qemu-img', 'compare', base, dst)
    checked = run('qemu-img', 'check', dst)
    check(same.returncode == 0 and checked.returncode == 0 and
          qemu_info(dst).get('cluster-size') == 128 * 1024,
          'convert_progress: target equal to the source, clean, with its options')


def test_disk_manager(ex, tmp, base):
    work = os.path.join(tmp, 'vm')
    os.mkdir(work)
    size = 64 * MIB
    proc = run(os.path.join(ex, 'disk_manager'), base, work, size)
    check(proc.returncode == 0, 'disk_manager runs (%s)' % (proc.stdout + proc.stderr).strip())
    if proc.returncode:
        return
    diffdisk = os.path.join(work, 'diffdisk')
    raw = os.path.join(work, 'disk.raw')
    info = qemu_info(diffdisk)
    check(info.get('backing-filename') == os.path.realpath(base) and
          info.get('virtual-size') == size + MIB and not info.get('snapshots'),
          'diffdisk: overlay on the base, grown by 1 MiB, snapshot deleted (%r)' % info)
    check(run('qemu-img', 'check', diffdisk).returncode == 0, 'diffdisk passes qemu-img check')
    expect = bytearray(raw_content(base))
    expect += bytes(size + 4 * MIB - len(expect))
    for off in range(0, 8 * MIB, 2 * MIB):
        expect[off:off + 4096] = b'G' * 4096
    check(raw_content(diffdisk) == bytes(expect[:size + MIB]),
          'diffdisk reads as the base with the guest\'s writes (the snapshot undid the rest)')
    expect[2 * MIB:2 * MIB + 4096] = bytes(4096)
    rinfo = qemu_info(raw)
    check(rinfo.get('format') == 'raw' and rinfo.get('virtual-size') == size + 4 * MIB,
          'disk.raw: raw, grown to min_size in the convert (%r)' % rinfo.get('virtual-size'))
    with open(raw, 'rb') as f:
        check(f.read() == bytes(expect), 'disk.raw holds the diffdisk content, then zeros')
    check('sparse:' in proc.stdout and rinfo.get('actual-size', size) < 16 * MIB,
          'disk.raw is sparse (%r bytes on disk)' % rinfo.get('actual-size'))


def main():
    if len(sys.argv) != 2 or not shutil.which('qemu-img'):
        print('SKIP: needs the examples folder and qemu-img')
        sys.exit(SKIP)
    ex = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix='imgutil-examples-')
    try:
        base = os.path.join(tmp, 'base.qcow2')
        run('qemu-img', 'create', '-q', '-f', 'qcow2', base, '48M')
        run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0x33 40M 64k',
            base)
        test_inspect(ex, tmp, base)
        test_overlay(ex, tmp, base)
        test_convert_progress(ex, tmp, base)
        test_disk_manager(ex, tmp, base)
    finally:
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
    print('%d failed' % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
