#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every JSON text imgutil prints is valid UTF-8, byte-identical to qemu-img's, when an image
names files (backing file, data file, snapshots) with bytes that are not UTF-8: invalid,
truncated and overlong sequences, surrogates and noncharacters become U+FFFD, other
characters beyond ASCII \\uXXXX escapes, as QEMU writes them.

usage: test_json_utf8.py IMGUTIL   (exit 77 without qemu-img)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

# Each piece is one case of the decoder: a lone 0xff, a lead byte whose sequence breaks off,
# an overlong '/', an encoded surrogate, a character beyond the BMP (a surrogate pair), two
# control characters, a two-byte character, a noncharacter, a stray continuation byte, and a
# five-byte form.
ODD_NAME = (b'x\xff\xc3(\xc0\xaf\xed\xa0\x80\xf0\x9f\x98\x80\x01\x7f\xc3\xa9\xef\xbf\xbf\x80'
            b'\xf8\x88\x80\x80\x80y')

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print('FAIL: ' + what, file=sys.stderr)


def run(args, cwd):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                          check=False, timeout=60)


def compare(imgutil, args, cwd):
    shown = ' '.join(a.decode('utf-8', 'replace') if isinstance(a, bytes) else a for a in args)
    ours = run([imgutil] + args, cwd)
    ref = run(['qemu-img'] + args, cwd)
    if ref.returncode != 0:
        check(False, 'qemu-img %s failed: %s' % (shown, ref.stderr))
        return
    check(ours.returncode == 0, 'imgutil %s failed: %s' % (shown, ours.stderr))
    try:
        text = ours.stdout.decode('utf-8', 'strict')
        json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        check(False, 'imgutil %s: not valid UTF-8 JSON (%s)' % (shown, e))
    check(ours.stdout == ref.stdout,
          'imgutil %s differs from qemu-img:\n%s\n---\n%s' % (shown, ours.stdout, ref.stdout))


def qemu_img(args, cwd):
    subprocess.run(['qemu-img'] + args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   timeout=60)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    imgutil = os.path.abspath(sys.argv[1])
    if not shutil.which('qemu-img'):
        return 77
    with tempfile.TemporaryDirectory() as work:
        base = ODD_NAME + b'.base'
        top = b'top-' + ODD_NAME + b'.qcow2'
        qemu_img(['create', '-f', 'qcow2', base, '1M'], work)
        qemu_img(['create', '-f', 'qcow2', '-F', 'qcow2', '-b', base, top], work)
        qemu_img(['snapshot', '-c', ODD_NAME, top], work)
        # A data file's name appears in the format-specific part of info.
        with_data = b'data-' + ODD_NAME + b'.qcow2'
        qemu_img(['create', '-f', 'qcow2', '-o', b'data_file=' + ODD_NAME + b'.data',
                  with_data, '1M'], work)
        for args in (['info', '--output=json', top],
                     ['info', '--output=json', '--backing-chain', top],
                     ['info', '--output=json', with_data],
                     ['check', '--output=json', top],
                     ['map', '--output=json', top]):
            compare(imgutil, args, work)
    if failures:
        print('%d check(s) failed' % len(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
