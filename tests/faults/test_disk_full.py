#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every writing operation on a real full disk: a tmpfs of 8 MiB, with a filler file leaving
various amounts of room. Each run must end without a crash or a sanitizer report, a failure
must say why on stderr, images that existed must still pass `qemu-img check` (leaks allowed)
with their flushed data intact, and convert must leave the old target or none.

    test_disk_full.py IMGUTIL WRITE_DRIVER
Environment: IMGUTIL_FAULT_ONLY (comma-separated case names to run).
Skips (77) when not root, when the mount fails, or without qemu-img/qemu-io.
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from faultlib import base_env, judge, qemu_check, run  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
FS_SIZE = 8 * MiB
# Room left on the disk when an operation starts.
ROOM = (0, 4 * KiB, 64 * KiB, 1 * MiB)


def run_cli(argv):
    return subprocess.run(argv, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=faultlib.TIMEOUT)


def guest_bytes(path, fmt, scratch):
    out = os.path.join(scratch, 'readback.raw')
    data = faultlib.qemu_read_raw(path, fmt, out)
    os.unlink(out)
    return data


def fill(mnt, room):
    """Leaves about `room` bytes free on the file system at `mnt`."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    size = max(free - room, 0)
    with open(os.path.join(mnt, 'filler'), 'wb') as f:
        chunk = b'\xff' * MiB
        while size > 0:
            n = min(size, len(chunk))
            try:
                f.write(chunk[:n])
                f.flush()
            except OSError:
                break
            size -= n


def empty(mnt):
    for name in os.listdir(mnt):
        os.unlink(os.path.join(mnt, name))


def write_script(chunk, total):
    script = []
    for i, off in enumerate(range(0, total, chunk)):
        script.append('write %d %d %d' % (off, chunk, i + 1))
        if i % 2 == 1:
            script.append('flush')
    return script


class Case:
    def __init__(self, name, setup, argv, verify):
        self.name, self.setup, self.argv, self.verify = name, setup, argv, verify


def cases(mnt, scratch, imgutil, driver):
    img = os.path.join(mnt, 'img')
    out = []

    # create with preallocation: more than the disk holds.
    for fmt, prealloc, size, opts in (('raw', 'falloc', '16M', ''), ('raw', 'full', '16M', ''),
                                      ('qcow2', 'falloc', '16M', ''),
                                      ('qcow2', 'full', '16M', ''),
                                      ('qcow2', 'metadata', '2G', ',cluster_size=512')):
        def verify(proc, fmt=fmt):
            if proc.returncode == 0:
                return qemu_check(img, fmt) if fmt == 'qcow2' else []
            if 'space' not in proc.stderr:
                return ['the message does not say the disk is full']
            return []
        out.append(Case('create-%s-%s' % (fmt, prealloc), lambda: None,
                        [imgutil, 'create', '-q', '-f', fmt, '-o',
                         'preallocation=%s%s' % (prealloc, opts), img, size], verify))

    # writes until the disk is full, through the public API.
    for fmt, cluster in (('qcow2', 65536), ('qcow2', 512), ('raw', 0)):
        script = write_script(256 * KiB, 12 * MiB)
        script_path = os.path.join(scratch, 'script-%s-%d' % (fmt, cluster))
        with open(script_path, 'w') as f:
            f.write('\n'.join(script) + '\n')

        def setup(fmt=fmt, cluster=cluster):
            opts = ['-o', 'cluster_size=%d' % cluster] if fmt == 'qcow2' else []
            run(['qemu-img', 'create', '-q', '-f', fmt] + opts + [img, '16M'])

        def verify(proc, fmt=fmt, cluster=cluster, script=script, script_path=script_path):
            reference = references.get((fmt, cluster))
            if reference is None:
                ref = os.path.join(scratch, 'ref')
                opts = ['-o', 'cluster_size=%d' % cluster] if fmt == 'qcow2' else []
                run(['qemu-img', 'create', '-q', '-f', fmt] + opts + [ref, '16M'])
                run([driver, 'run', ref, '-f', fmt, '--script', script_path])
                reference = references[(fmt, cluster)] = guest_bytes(ref, fmt, scratch)
                os.unlink(ref)
            problems = qemu_check(img, fmt) if fmt == 'qcow2' else []
            if problems:
                return problems
            return faultlib.unflushed_problems(script, proc.stdout, proc.returncode,
                                               guest_bytes(img, fmt, scratch), reference)
        out.append(Case('write-%s-%d' % (fmt, cluster), setup,
                        [driver, 'run', img, '-f', fmt, '--script', script_path], verify))

    # resize, with and without preallocation.
    for fmt, cluster, prealloc, size in (('qcow2', 65536, 'falloc', '+16M'),
                                         ('qcow2', 65536, 'full', '+16M'),
                                         ('qcow2', 512, 'off', '64G'),
                                         ('qcow2', 512, 'metadata', '+1G'),
                                         ('raw', 0, 'falloc', '+16M'),
                                         ('raw', 0, 'full', '+16M')):
        def setup(fmt=fmt, cluster=cluster):
            opts = ['-o', 'cluster_size=%d' % cluster] if fmt == 'qcow2' else []
            run(['qemu-img', 'create', '-q', '-f', fmt] + opts + [img, '1M'])
            run(['qemu-io', '-f', fmt, '-c', 'write -P 90 0 65536', img])

        def verify(proc, fmt=fmt):
            problems = qemu_check(img, fmt) if fmt == 'qcow2' else []
            if problems:
                return problems
            if guest_bytes(img, fmt, scratch)[:65536] != b'\x5a' * 65536:
                problems.append('data before the resize does not read back')
            return problems
        out.append(Case('resize-%s-%d-%s' % (fmt, cluster, prealloc), setup,
                        [imgutil, 'resize', '-q', '-f', fmt, '--preallocation=%s' % prealloc,
                         img, size], verify))

    # snapshot create, then check -r all, on a disk with little room.
    for cluster in (512, 65536):
        def setup(cluster=cluster):
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % cluster,
                 img, '64M'])
            run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 17 0 1M', img])

        def verify(proc):
            problems = qemu_check(img, 'qcow2')
            if not problems and guest_bytes(img, 'qcow2', scratch)[:MiB] != b'\x11' * MiB:
                problems.append('current data changed')
            return problems
        out.append(Case('snapshot-c-%d' % cluster, setup,
                        [imgutil, 'snapshot', '-q', '-c', 's1', img], verify))
        out.append(Case('check-repair-%d' % cluster, setup,
                        [imgutil, 'check', '-q', '-r', 'all', img], verify))

    # convert into the full disk, with and without an old target there.
    src = os.path.join(scratch, 'src.qcow2')
    if not os.path.exists(src):
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', src, '16M'])
        run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 68 0 5M', '-c', 'write -P 85 8M 3M',
             src])
    old = b'the old target\n' * 1000
    for target in ('qcow2', 'raw'):
        for with_old in (False, True):
            def setup(with_old=with_old):
                if with_old:
                    with open(img, 'wb') as f:
                        f.write(old)

            def verify(proc, target=target, with_old=with_old):
                left = sorted(set(os.listdir(mnt)) - {'img', 'filler'})
                problems = ['files left behind: %s' % left] if left else []
                if proc.returncode == 0:
                    cmp = run(['qemu-img', 'compare', '-F', target, src, img], ok=None)
                    if cmp.returncode != 0:
                        problems.append('converted image differs')
                elif os.path.exists(img):
                    with open(img, 'rb') as f:
                        if not with_old or f.read() != old:
                            problems.append('a failed convert left a target that is not the '
                                            'old one')
                return problems
            out.append(Case('convert-%s%s' % (target, '-over-old' if with_old else ''), setup,
                            [imgutil, 'convert', '-q', '-O', target, src, img], verify))
    return out


references = {}

# Known defects outside the I/O layer: case name -> why. A run of such a case may fail its
# checks without failing the test; an entry whose case fails in no run is stale, and fails the
# test ("unexpected pass").
EXPECTED_FAILURES = {}


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    imgutil, driver = sys.argv[1], sys.argv[2]
    if os.geteuid() != 0:
        print('not root: cannot mount a tmpfs, skipped')
        return faultlib.SKIP
    if not faultlib.tools_present():
        print('qemu-img or qemu-io not installed: skipped')
        return faultlib.SKIP
    scratch = tempfile.mkdtemp(prefix='imgutil-diskfull.')
    mnt = os.path.join(scratch, 'mnt')
    os.mkdir(mnt)
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d' % FS_SIZE, 'tmpfs', mnt],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        os.rmdir(mnt)
        shutil.rmtree(scratch)
        print('cannot mount a tmpfs: skipped')
        return faultlib.SKIP

    only = [c for c in os.environ.get('IMGUTIL_FAULT_ONLY', '').split(',') if c]
    tally = faultlib.Tally()
    try:
        for case in cases(mnt, scratch, imgutil, driver):
            if only and case.name not in only:
                continue
            still_failing = False
            for room in ROOM:
                empty(mnt)
                case.setup()
                fill(mnt, room)
                proc = run_cli(case.argv)
                problems = judge(proc) or case.verify(proc)
                tally.runs += 1
                label = '%s with %d bytes free' % (case.name, room)
                if problems and case.name in EXPECTED_FAILURES:
                    still_failing = True
                    tally.xfail += 1
                elif problems:
                    tally.failures.append('%s (exit %d): %s\n  stderr: %s' % (
                        label, proc.returncode, '; '.join(problems),
                        faultlib.clip(proc.stderr.strip(), 400)))
                elif proc.returncode == 0:
                    tally.succeeded += 1
                else:
                    tally.failed_cleanly += 1
            if case.name in EXPECTED_FAILURES and not still_failing:
                tally.failures.append(faultlib.stale_entry(case.name, case.name))
    finally:
        subprocess.run(['umount', mnt])
        shutil.rmtree(scratch, ignore_errors=True)
    print(tally.summary().replace('faulted runs', 'runs on a full disk'))
    for f in tally.failures:
        print('FAIL: ' + f, file=sys.stderr)
    return 1 if tally.failures else 0


if __name__ == '__main__':
    sys.exit(main())
