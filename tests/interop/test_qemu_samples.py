#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Real images from ../shared/testdata/qemu-samples (made by Hyper-V, VMware, Disk2VHD,
Parallels, ... and two fuzzer finds). grub_mbr.raw must read back with the sha256 that the
folder's README.md gives; every other one is a format the library does not read yet (or a
damaged one), and must be refused with a clear message, a negative errno, and `imgutil info`
exiting 1 rather than crashing.

usage: test_qemu_samples.py API_DRIVER
"""

import bz2
import hashlib
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import (CheckFailed, clip, describe_rc, info_differences, parse_json,  # noqa: E402
                     parse_refusal, qemu_img)

RAW_SAMPLE = 'grub_mbr.raw'

# A refusal names the format as not supported, or says what is wrong with the file.
REFUSAL_WORDS = ('not supported', 'unsupported', 'invalid', 'corrupt', 'too large', 'too big',
                 'truncated', 'malformed', 'exceeds', 'bad ')


def samples_dir(source_root):
    return os.path.normpath(os.path.join(source_root, '..', 'shared', 'testdata',
                                         'qemu-samples'))


def readme_sha256(folder, name):
    """The sha256 the README's table gives for `name`."""
    with open(os.path.join(folder, 'README.md'), encoding='utf-8') as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if cells and cells[0] == name:
                for c in cells[1:]:
                    if re.fullmatch(r'[0-9a-f]{64}', c):
                        return c
    return None


def bunzip2(src, dst):
    """Decompresses keeping runs of zeros as holes: several samples are mostly empty."""
    block = 1 << 20
    zero = bytes(block)
    with bz2.open(src, 'rb') as fin, open(dst, 'wb') as fout:
        size = 0
        while True:
            chunk = fin.read(block)
            if not chunk:
                break
            if chunk == zero[:len(chunk)]:
                fout.seek(len(chunk), os.SEEK_CUR)
            else:
                fout.write(chunk)
            size += len(chunk)
        fout.truncate(size)


def check_raw_sample(s, folder, path):
    want = readme_sha256(folder, RAW_SAMPLE)
    with s.check('%s: the README gives its sha256' % RAW_SAMPLE):
        if not want:
            raise CheckFailed('no sha256 for %s in %s/README.md' % (RAW_SAMPLE, folder))
    with s.check('%s: img_open probes it as raw' % RAW_SAMPLE):
        proc = s.api('open', path)
        if not proc.stdout.startswith('opened raw 512'):
            raise CheckFailed('img_open says %r' % proc.stdout.strip())
    with s.check('%s: img_pread content has the README sha256' % RAW_SAMPLE):
        out = s.path('grub_mbr.read')
        s.api('dump', path, out)
        with open(out, 'rb') as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != want:
            raise CheckFailed('sha256 %s, README says %s' % (got, want))
    with s.check('%s: imgutil info matches qemu-img info' % RAW_SAMPLE):
        qemu = parse_json(qemu_img('info', '--output=json', path).stdout, 'qemu-img info')
        ours = parse_json(s.imgutil('info', '--output=json', path).stdout, 'imgutil info')
        diffs = info_differences(qemu, ours)
        if diffs:
            raise CheckFailed('\n'.join(diffs))


def check_refused_sample(s, name, path):
    proc = qemu_img('info', '--output=json', path, ok_codes=None)
    qemu_says = (parse_json(proc.stdout, 'qemu-img info').get('format')
                 if proc.returncode == 0 else 'refused: ' + clip(
                     re.sub(r".*Could not open '[^']*': ", '', proc.stderr), 120))
    with s.check('%s (qemu-img: %s): img_open refuses it clearly' % (name, qemu_says)):
        ret, message = parse_refusal(s.api('open', path, ok_codes=None))
        if ret >= 0:
            raise CheckFailed('non-negative code %d' % ret)
        low = message.lower()
        if not any(w in low for w in REFUSAL_WORDS):
            raise CheckFailed('message %r says neither "not supported" nor what is wrong' %
                              message)
    with s.check('%s: imgutil info exits 1 with a message' % name):
        proc = s.imgutil('info', path, ok_codes=None)
        if proc.returncode != 1:
            raise CheckFailed('imgutil info: %s (expected exit 1); stderr %r' % (
                describe_rc(proc.returncode), clip(proc.stderr)))
        if not any(w in proc.stderr.lower() for w in REFUSAL_WORDS):
            raise CheckFailed('imgutil info stderr %r says neither "not supported" nor what '
                              'is wrong' % clip(proc.stderr))


def main():
    s = interop.Suite('qemu-samples', sys.argv)
    folder = samples_dir(s.source_root)
    if not os.path.isdir(folder):
        print('SKIP: %s is absent' % folder)
        sys.exit(interop.SKIP)
    names = sorted(n[:-4] for n in os.listdir(folder) if n.endswith('.bz2'))
    for name in names:
        path = s.path('samples', name)
        try:
            bunzip2(os.path.join(folder, name + '.bz2'), path)
        except (OSError, EOFError, ValueError) as e:
            with s.check('%s: bunzip2' % name):
                raise CheckFailed(str(e))
            continue
        if name == RAW_SAMPLE:
            check_raw_sample(s, folder, path)
        else:
            check_refused_sample(s, name, path)
        os.unlink(path)
    with s.check('%s is among the samples' % RAW_SAMPLE):
        if RAW_SAMPLE not in names:
            raise CheckFailed('missing from %s' % folder)
    s.finish()


if __name__ == '__main__':
    main()
