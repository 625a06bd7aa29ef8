#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""imgutil map and img_map() on images with very many rows: the same bytes as qemu-img map,
rows printed as they are found, and memory that does not grow with the number of rows.

usage: test_map_stream.py IMGUTIL MAP_ROWS   (exit 77 without qemu-img)
"""

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crafted  # noqa: E402

GiB = 1 << 30
# Peak resident memory allowed to imgutil map. Printing 256 Ki rows held in memory took more
# than 200 MiB; streamed they need a few MiB (sanitizer builds add their own overhead).
RSS_LIMIT_KIB = 64 * 1024
# A guard against a map that prints nothing until the end, not a timing measurement.
FIRST_ROWS_GUARD_SECONDS = 60

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print('FAIL: ' + what, file=sys.stderr)


def output_of(args):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                          timeout=300)


def compare_with_qemu(imgutil, map_rows, image):
    for fmt in ('json', 'human'):
        for extra in ([], ['--start-offset=65536', '--max-length=200000'],
                      ['--start-offset=100', '--max-length=0'], ['--start-offset=2G'],
                      ['--start-offset=1000', '--max-length=1000']):
            args = ['map', '--output=' + fmt] + extra + [image]
            ours = output_of([imgutil] + args)
            ref = output_of(['qemu-img'] + args)
            check(ref.returncode == 0, 'qemu-img %s: %s' % (args, ref.stderr))
            check(ours.returncode == 0 and ours.stdout == ref.stdout,
                  'imgutil %s differs from qemu-img (rc %d, %s)' % (args, ours.returncode,
                                                                    ours.stderr))
    # The API delivers the same rows (and img_map_json() the same text).
    ref = output_of(['qemu-img', 'map', '--output=json', image]).stdout
    ours = output_of([map_rows, image, '0', str(1 << 62)])
    check(ours.returncode == 0 and ours.stdout == ref,
          'img_map rows differ from qemu-img map: %s' % ours.stderr)
    ref = output_of(['qemu-img', 'map', '--output=json', '--start-offset=98304',
                     '--max-length=300000', image]).stdout
    ours = output_of([map_rows, image, '98304', '300000'])
    check(ours.returncode == 0 and ours.stdout == ref,
          'img_map rows of a range differ from qemu-img map: %s' % ours.stderr)
    # A non-zero callback return stops the walk and is returned.
    ours = output_of([map_rows, image, '0', str(1 << 62), '5'])
    check(ours.returncode == 0, 'img_map did not stop on the callback: %s' % ours.stderr)


def peak_rss_kib(args):
    """Runs args with stdout to /dev/null; returns (exit code, peak RSS in KiB)."""
    with open(os.devnull, 'wb') as null:
        proc = subprocess.Popen(args, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stderr.close()
    return proc.returncode, usage.ru_maxrss


def first_lines(args, count):
    """The first `count` lines args prints; then it is killed. None if it printed fewer before
    the guard ran out."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    data = b''
    try:
        while data.count(b'\n') < count:
            ready, _, _ = select.select([proc.stdout], [], [], FIRST_ROWS_GUARD_SECONDS)
            if not ready:
                return None
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return b''.join(data.splitlines(keepends=True)[:count])


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    imgutil, map_rows = (os.path.abspath(a) for a in sys.argv[1:])
    if not shutil.which('qemu-img'):
        return 77
    with tempfile.TemporaryDirectory() as work:
        # 16 Ki rows: every output compared with qemu-img's.
        small = os.path.join(work, 'small.qcow2')
        crafted.alternating(small, 16, 1 * GiB)
        compare_with_qemu(imgutil, map_rows, small)

        # An empty image: qemu-img still prints one (empty) entry.
        empty = os.path.join(work, 'empty.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', empty, '0'], check=True)
        for fmt in ('json', 'human'):
            args = ['map', '--output=' + fmt, empty]
            ours, ref = output_of([imgutil] + args), output_of(['qemu-img'] + args)
            check(ours.returncode == 0 and ours.stdout == ref.stdout,
                  'imgutil %s differs from qemu-img: %s' % (args, ours.stdout))

        # 256 Ki rows from a 384 KiB file: bounded memory in both layouts.
        many = os.path.join(work, 'many.qcow2')
        crafted.alternating(many, 16, 16 * GiB)
        for fmt in ('json', 'human'):
            rc, rss = peak_rss_kib([imgutil, 'map', '--output=' + fmt, many])
            check(rc == 0, 'imgutil map --output=%s failed (%d)' % (fmt, rc))
            check(rss < RSS_LIMIT_KIB, 'imgutil map --output=%s of 256 Ki rows peaked at %d KiB '
                  '(limit %d KiB)' % (fmt, rss, RSS_LIMIT_KIB))

        # 2 MiB clusters and a 32 MiB L1 table: 2^40 rows, which no one can wait for. The first
        # rows come out at once and match qemu-img's.
        huge = os.path.join(work, 'huge.qcow2')
        crafted.alternating(huge, 21, (1 << 22) * (1 << 39), l1_size=1 << 22)
        for fmt in ('json', 'human'):
            ref = first_lines(['qemu-img', 'map', '--output=' + fmt, huge], 2000)
            ours = first_lines([imgutil, 'map', '--output=' + fmt, huge], 2000)
            check(ref is not None and ours == ref,
                  'the first rows of imgutil map --output=%s differ from qemu-img\'s '
                  '(or never came)' % fmt)
    if failures:
        print('%d check(s) failed' % len(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
