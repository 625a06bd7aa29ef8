#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""convert's "min_size" and "size" options, for every format the library creates: the target
gets the virtual size asked for (never less than the source's), the source's content, zeros
after it, and no allocation for them; a size below the source's, or both options, is refused
with the old target left untouched."""

import ctypes
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


def creatable_formats(root):
    lib = ctypes.CDLL(os.path.join(root, 'lib', 'libimgutil.so.1'))
    # The sanitizer runtime preloaded for this process must not reach qemu-img and qemu-io.
    os.environ.pop('LD_PRELOAD', None)
    lib.img_format_name.restype = ctypes.c_char_p
    lib.img_format_supports.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    names = [lib.img_format_name(i).decode() for i in range(lib.img_format_count())]
    return [n for n in names if lib.img_format_supports(n.encode(), b'create') == 1 and
            lib.img_format_supports(n.encode(), b'read') == 1]


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


def qemu_reads(fmt):
    """Whether qemu-img knows the format (it does not know ASIF, for one)."""
    return 'does not support' not in run('qemu-img', 'create', '-f', fmt, '-o', 'help',
                                         os.devnull).stderr and run(
        'qemu-img', 'create', '-f', fmt, '-o', 'help', os.devnull).returncode == 0


def image_info(path, fmt, cli):
    """qemu-img's info where qemu-img reads the format, imgutil's otherwise."""
    import json
    tool = ['qemu-img'] if qemu_reads(fmt) else [cli]
    return json.loads(run(*tool, 'info', '-f', fmt, '--output=json', path).stdout)


def main():
    root = os.environ.get('IMGUTIL_BUILD_ROOT')
    cli = os.environ.get('IMGUTIL_CLI')
    if not root or not cli or not shutil.which('qemu-img'):
        print('SKIP: needs the build tree and qemu-img')
        sys.exit(SKIP)
    tmp = tempfile.mkdtemp(prefix='imgutil-convert-size-')
    try:
        src = os.path.join(tmp, 'src.raw')
        with open(src, 'wb') as f:
            f.write(bytes((i * 7 + 1) % 251 for i in range(3 * MIB)))
        for fmt in creatable_formats(root):
            dst = os.path.join(tmp, 'dst.' + fmt)
            for option, value, want in (('min_size', 64 * MIB, 64 * MIB),
                                        ('min_size', MIB, 3 * MIB),
                                        ('size', 32 * MIB, 32 * MIB)):
                label = '%s: -o %s=%d' % (fmt, option, value)
                proc = run(cli, 'convert', '-O', fmt, '-o', '%s=%d' % (option, value), src, dst)
                if proc.returncode != 0:
                    check(False, '%s: exit %d %s' % (label, proc.returncode, proc.stderr))
                    continue
                # What the format makes of that size (VHD rounds to its geometry, ...).
                probe = os.path.join(tmp, 'probe.' + fmt)
                run(cli, 'create', '-q', '-f', fmt, probe, str(want))
                want = image_info(probe, fmt, cli)['virtual-size']
                os.unlink(probe)
                info = image_info(dst, fmt, cli)
                check(info['virtual-size'] == want, '%s: virtual size %d (want %d)' % (
                    label, info['virtual-size'], want))
                same = run('qemu-img' if qemu_reads(fmt) else cli, 'compare', '-f', 'raw', '-F',
                           fmt, src, dst)
                check(same.returncode == 0, '%s: the source, then zeros (qemu-img compare: %s)'
                      % (label, (same.stdout + same.stderr).strip()))
                checked = run('qemu-img' if qemu_reads(fmt) else cli, 'check', '-f', fmt, dst)
                check(checked.returncode in (0, 63), '%s: qemu-img check: %s' % (
                    label, checked.stdout.strip()))
                if want > 8 * MIB:
                    check(info['actual-size'] < 8 * MIB,
                          '%s: the grown part is not allocated (%d bytes on disk)' % (
                              label, info['actual-size']))
            with open(dst, 'rb') as f:
                before = f.read()
            for opts, words in (('size=%d' % MIB, 'smaller than the source'),
                                ('size=%d,min_size=%d' % (8 * MIB, 8 * MIB), 'not both')):
                proc = run(cli, 'convert', '-O', fmt, '-o', opts, src, dst)
                with open(dst, 'rb') as f:
                    after = f.read()
                check(proc.returncode == 1 and words in proc.stderr and after == before,
                      '%s: -o %s refused (%r), the target untouched' % (
                          fmt, opts, proc.stderr.strip()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('%d failed' % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
