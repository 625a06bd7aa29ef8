#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Real images from ../shared/testdata/qemu-samples (made by Hyper-V, VMware, Disk2VHD,
Parallels, ... and two fuzzer finds), checked according to what the library reads.

For a sample whose format the library reads (img_format_supports(fmt, "read")):
  - img_open probes it as that format;
  - `imgutil info --output=json` equals `qemu-img info --output=json` (every field, the
    whole format-specific object included), and the same for `map --output=json`;
  - `imgutil convert -O raw` yields the content qemu-img reads: the sha256 that the folder's
    README.md gives where the image is small enough to hash, `qemu-img compare` otherwise;
    img_pread (api_driver dump) gives the same bytes where the image is small;
  - `imgutil check` exits as `qemu-img check` does, with the same report.
The fuzzer finds must be refused with a clear message whatever the library reads, and the VHDX
with a dirty log is refused read-only when qemu-img refuses it, and replayed by `check -r all`
to what qemu-img's replay gives. A sample of a format the library does not read yet must be
refused with a clear message, a negative errno, and `imgutil info` exiting 1.

usage: test_qemu_samples.py API_DRIVER
"""

import bz2
import hashlib
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import (CheckFailed, clip, describe_rc, info_differences, map_differences,  # noqa: E402
                     parse_json, parse_refusal, qemu_img)

RAW_SAMPLE = 'grub_mbr.raw'

# Each sample's format and what is expected of it: 'content' (reads as qemu-img reads it),
# 'refused' (damaged: refused whatever the library reads), 'dirty-log' (see the docstring).
SAMPLES = {
    'afl5.img': ('vpc', 'refused'),
    'afl9.vmdk': ('vmdk', 'refused'),
    'd2v-zerofilled.vhd': ('vpc', 'content'),
    'hyperv2012r2-dynamic.vhd': ('vpc', 'content'),
    'virtualpc-dynamic.vhd': ('vpc', 'content'),
    'iotest-dynamic-1G.vhdx': ('vhdx', 'content'),
    'test-disk2vhd.vhdx': ('vhdx', 'content'),
    'iotest-dirtylog-10G-4M.vhdx': ('vhdx', 'dirty-log'),
    'iotest-version3.vmdk': ('vmdk', 'content'),
    'parallels-v1': ('parallels', 'content'),
    'parallels-v2': ('parallels', 'content'),
    'parallels-with-bitmap': ('parallels', 'content'),
    'empty.bochs': ('bochs', 'content'),
    'simple-pattern.cloop': ('cloop', 'content'),
    'simple-dmg.dmg': ('dmg', 'content'),
    RAW_SAMPLE: ('raw', 'content'),
}

# Images up to this virtual size are hashed (and read through img_pread); larger ones, mostly
# empty, are compared with qemu-img compare, which skips what both sides report as zeros.
HASH_LIMIT = 1 << 30
PREAD_LIMIT = 64 << 20

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
            # A row may name several samples: "parallels-v1, parallels-v2".
            if cells and name in [n.strip() for n in cells[0].split(',')]:
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


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def readable_formats(s):
    """The formats the library reads, as img_format_supports() says."""
    proc = s.api('formats', '-')
    return {line.split()[0] for line in proc.stdout.splitlines()
            if 'read' in line.split()[1:]}


def same_report(text, path):
    return text.replace(path, 'IMAGE').strip()


def check_readable_sample(s, folder, name, fmt, path):
    with s.check('%s: img_open probes it as %s' % (name, fmt)):
        proc = s.api('open', path, ok_codes=None)
        if not proc.stdout.startswith('opened %s ' % fmt):
            raise CheckFailed('img_open says %r %r' % (proc.stdout.strip(), clip(proc.stderr)))
    qemu = parse_json(qemu_img('info', '--output=json', path).stdout, 'qemu-img info')
    size = qemu.get('virtual-size', 0)
    with s.check('%s: imgutil info matches qemu-img info' % name):
        ours = parse_json(s.imgutil('info', '--output=json', path).stdout, 'imgutil info')
        diffs = info_differences(qemu, ours)
        if qemu.get('format-specific') != ours.get('format-specific'):
            diffs.append('format-specific: qemu-img %r, imgutil %r' % (
                qemu.get('format-specific'), ours.get('format-specific')))
        if diffs:
            raise CheckFailed('\n'.join(diffs))
    with s.check('%s: imgutil map matches qemu-img map' % name):
        q = parse_json(qemu_img('map', '--output=json', path).stdout, 'qemu-img map')
        o = parse_json(s.imgutil('map', '--output=json', path).stdout, 'imgutil map')
        diff = map_differences(q, o)
        if diff:
            raise CheckFailed(diff)
    out = s.path(name + '.converted')
    with s.check('%s: imgutil convert -O raw reads what qemu-img reads' % name):
        s.imgutil('convert', '-O', 'raw', path, out)
        if size <= HASH_LIMIT:
            want = readme_sha256(folder, name)
            if not want:
                raise CheckFailed('no sha256 for %s in %s/README.md' % (name, folder))
            got = sha256_file(out)
            if got != want:
                raise CheckFailed('sha256 %s, README says %s' % (got, want))
        else:
            proc = qemu_img('compare', '-f', 'raw', out, path, ok_codes=None)
            if proc.returncode != 0:
                raise CheckFailed('qemu-img compare: %s %s' % (clip(proc.stdout),
                                                               clip(proc.stderr)))
    if size <= PREAD_LIMIT:
        with s.check('%s: img_pread reads the same bytes' % name):
            dump = s.path(name + '.read')
            s.api('dump', path, dump)
            if sha256_file(dump) != sha256_file(out):
                raise CheckFailed('img_pread content differs from the converted image')
            os.unlink(dump)
    if os.path.exists(out):
        os.unlink(out)
    with s.check('%s: imgutil check answers as qemu-img check does' % name):
        q = qemu_img('check', path, ok_codes=None)
        o = s.imgutil('check', path, ok_codes=None)
        if o.returncode != q.returncode:
            raise CheckFailed('imgutil check: %s, qemu-img check: %s; imgutil says %r' % (
                describe_rc(o.returncode), describe_rc(q.returncode),
                clip(o.stdout + o.stderr)))
        if same_report(q.stdout, path) != same_report(o.stdout, path):
            raise CheckFailed('report differs:\nqemu-img: %r\nimgutil:  %r' % (
                clip(q.stdout), clip(o.stdout)))


def check_dirty_log_sample(s, name, path):
    """The log must be replayed before the image is read; read-only, qemu-img refuses it."""
    q = qemu_img('info', '--output=json', path, ok_codes=None)
    with s.check('%s: imgutil info %s as qemu-img does' % (
            name, 'refuses it' if q.returncode else 'answers')):
        o = s.imgutil('info', '--output=json', path, ok_codes=None)
        if (o.returncode == 0) != (q.returncode == 0):
            raise CheckFailed('imgutil info: %s %r; qemu-img info: %s %r' % (
                describe_rc(o.returncode), clip(o.stderr), describe_rc(q.returncode),
                clip(q.stderr)))
        if o.returncode and 'log' not in o.stderr.lower():
            raise CheckFailed('the refusal does not mention the log: %r' % clip(o.stderr))
    theirs = s.path(name + '.qemu-replayed')
    ours = s.path(name + '.replayed')
    shutil.copyfile(path, theirs)
    shutil.copyfile(path, ours)
    with s.check('%s: imgutil check -r all replays the log as qemu-img does' % name):
        q = qemu_img('check', '-r', 'all', theirs, ok_codes=None)
        o = s.imgutil('check', '-r', 'all', ours, ok_codes=None)
        if o.returncode != q.returncode:
            raise CheckFailed('imgutil check -r all: %s %r; qemu-img: %s' % (
                describe_rc(o.returncode), clip(o.stdout + o.stderr),
                describe_rc(q.returncode)))
        proc = qemu_img('check', ours, ok_codes=None)
        if proc.returncode != 0:
            raise CheckFailed('qemu-img check after our replay: %s %r' % (
                describe_rc(proc.returncode), clip(proc.stdout + proc.stderr)))
        proc = qemu_img('compare', ours, theirs, ok_codes=None)
        if proc.returncode != 0:
            raise CheckFailed('our replay differs from qemu-img\'s: %r' % clip(proc.stdout))
    for p in (theirs, ours):
        os.unlink(p)


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
    readable = readable_formats(s)
    for name in names:
        path = s.path('samples', name)
        try:
            bunzip2(os.path.join(folder, name + '.bz2'), path)
        except (OSError, EOFError, ValueError) as e:
            with s.check('%s: bunzip2' % name):
                raise CheckFailed(str(e))
            continue
        fmt, expect = SAMPLES.get(name, (None, 'refused'))
        if expect == 'content' and fmt in readable:
            check_readable_sample(s, folder, name, fmt, path)
        elif expect == 'dirty-log' and fmt in readable:
            check_dirty_log_sample(s, name, path)
        else:
            check_refused_sample(s, name, path)
        os.unlink(path)
    with s.check('%s is among the samples' % RAW_SAMPLE):
        if RAW_SAMPLE not in names:
            raise CheckFailed('missing from %s' % folder)
    s.finish()


if __name__ == '__main__':
    main()
