# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared by the Parallels tests: running imgutil and qemu-img side by side, and crafting
Parallels images byte by byte (header fields, catalog entries, the in-use marker)."""

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77
TIMEOUT = 120
HEADER = 64
INUSE = 0x746F6E59
# Header field offsets (block/parallels.h, docs/interop/parallels.txt).
OFF = {'version': 0x10, 'tracks': 0x1c, 'bat_entries': 0x20, 'nb_sectors': 0x24,
       'inuse': 0x2c, 'data_off': 0x30, 'flags': 0x34, 'ext_off': 0x38}


class Failed(Exception):
    pass


def run(args, cwd=None, env=None, input=None):
    args = [str(a) for a in args]
    try:
        return subprocess.run(args, cwd=cwd, env=env, input=input, capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failed('did not finish within %d s: %s' % (TIMEOUT, ' '.join(args)))


def must(proc, what):
    if proc.returncode != 0:
        raise Failed('%s: exit %d\n  %s\n  %s' % (what, proc.returncode, proc.stdout.strip(),
                                                 proc.stderr.strip()))
    return proc


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def patch(path, offset, fmt, *values):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(struct.pack('<' + fmt, *values))


def read_field(path, offset, fmt):
    with open(path, 'rb') as f:
        f.seek(offset)
        return struct.unpack('<' + fmt, f.read(struct.calcsize('<' + fmt)))[0]


class Suite:
    """Named checks with a tally; skips (77) without qemu-img/qemu-io."""

    def __init__(self, name):
        missing = [t for t in ('qemu-img', 'qemu-io') if shutil.which(t) is None]
        if missing:
            print('SKIP: %s not installed' % ', '.join(missing))
            sys.exit(SKIP)
        build = os.environ.get('IMGUTIL_BUILD_ROOT') or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'build')
        self.cli = os.environ.get('IMGUTIL_CLI') or os.path.join(build, 'tools', 'imgutil')
        self.build = build
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix='imgutil-%s-' % name)
        self.passed, self.failures = 0, []
        self.started = time.monotonic()

    @contextlib.contextmanager
    def check(self, label):
        try:
            yield
        except (Failed, AssertionError, OSError) as e:
            self.failures.append(label)
            print('FAIL %s\n     %s' % (label, str(e).replace('\n', '\n     ')), flush=True)
        else:
            self.passed += 1
            print('ok   %s' % label, flush=True)

    def finish(self):
        if self.failures:
            print('(files kept in %s)' % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print('%s: %.1f s, %d passed, %d failed' % (self.name, time.monotonic() - self.started,
                                                    self.passed, len(self.failures)))
        sys.exit(1 if self.failures else 0)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def ours(self, *args, **kw):
        return run([self.cli] + list(args), cwd=self.tmp, **kw)

    def qemu(self, *args, **kw):
        return run(['qemu-img'] + list(args), cwd=self.tmp, **kw)

    def qemu_io(self, image, *cmds):
        args = ['qemu-io', '-f', 'parallels']
        for c in cmds:
            args += ['-c', c]
        return must(run(args + [image], cwd=self.tmp), 'qemu-io %s' % ' '.join(cmds))

    def same_answer(self, *args, a=None, b=None, stderr=False):
        """imgutil and qemu-img give the same stdout and exit code (and, with a/b, each works
        on its own copy of an image: the file argument is the last)."""
        ours = self.ours(*(list(args) + ([a] if a else [])))
        theirs = self.qemu(*(list(args) + ([b] if b else [])))
        out_ours, out_theirs = ours.stdout, theirs.stdout
        if stderr:
            out_ours += ours.stderr
            out_theirs += theirs.stderr
        if a and b:
            out_ours = out_ours.replace(a, '<image>')
            out_theirs = out_theirs.replace(b, '<image>')
        if (out_ours, ours.returncode) != (out_theirs, theirs.returncode):
            raise Failed('%s differs:\n  qemu-img (exit %d):\n%s\n  stderr: %s\n'
                         '  imgutil (exit %d):\n%s\n  stderr: %s' % (
                             ' '.join(args), theirs.returncode, out_theirs, theirs.stderr,
                             ours.returncode, out_ours, ours.stderr))
        return ours, theirs

    def same_content(self, image, fmt='parallels'):
        """imgutil convert -O raw gives the bytes qemu-img convert -O raw gives."""
        mine, ref = self.path('ours.raw'), self.path('ref.raw')
        must(self.ours('convert', '-f', fmt, '-O', 'raw', image, mine), 'imgutil convert')
        must(self.qemu('convert', '-f', fmt, '-O', 'raw', image, ref), 'qemu-img convert')
        if sha256(mine) != sha256(ref) or os.path.getsize(mine) != os.path.getsize(ref):
            raise Failed('%s: imgutil reads other bytes than qemu-img' % image)

    def compare_all(self, image):
        """Content, info JSON, map JSON and check, as qemu-img gives them."""
        self.same_content(image)
        self.same_answer('info', '--output=json', image)
        self.same_answer('map', '--output=json', image)
        self.same_answer('check', image, stderr=True)
        self.same_answer('check', '--output=json', image)


def preload_env(so, **values):
    """The environment for a program run under the killpoint preload: the thread-pool engine
    makes the library's writes as pwrite calls on the calling thread (io_uring would make
    none), and ASan accepts a preload ahead of its runtime."""
    env = dict(os.environ)
    env['LD_PRELOAD'] = so
    env['IMGUTIL_IO'] = 'threads'
    env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
    for key, value in values.items():
        env[key] = str(value)
    return env
