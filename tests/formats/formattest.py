# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the Python tests of the writable formats against qemu-img share (test_vdi.py,
test_qed.py; test_cloop.py and test_dmg.py for writing crafted files): running qemu-img,
qemu-io and imgutil, the tally of named checks, comparing their outputs, and refusals of
hostile images by both."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
MIB = 1 << 20


class Failure(Exception):
    pass


def run(args, ok=(0,), env=None, cwd=None, input=None):
    """Runs a command; a Failure with its output when its exit code is not in `ok` (None
    accepts any)."""
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          cwd=cwd, timeout=120, input=input)
    if ok is not None and proc.returncode not in ok:
        raise Failure('%s exited %d:\n%s%s' % (' '.join(args), proc.returncode,
                                              proc.stdout.decode(errors='replace')[-2000:],
                                              proc.stderr.decode(errors='replace')[-2000:]))
    return proc


class Test:
    """A test's scratch folder, its helper programs (argv: WRITE_DRIVER KILLPOINT_SO
    THREAD_WRITER) and the tally of its checks; skips (77) without qemu-img and qemu-io."""

    def __init__(self, argv, fmt):
        for tool in ('qemu-img', 'qemu-io'):
            if shutil.which(tool) is None:
                print('SKIP: %s not installed' % tool)
                sys.exit(SKIP)
        self.driver, self.killpoint, self.threads = argv[1], argv[2], argv[3]
        self.fmt = fmt
        self.cli = os.environ.get('IMGUTIL_CLI') or 'imgutil'
        self.dir = tempfile.mkdtemp(prefix='test-%s-' % fmt)
        self.failures = []
        self.checks = 0

    def path(self, name):
        return os.path.join(self.dir, name)

    def check(self, label, fn, *args):
        self.checks += 1
        try:
            fn(*args)
        except Failure as e:
            self.failures.append('%s: %s' % (label, e))
            print('FAIL %s: %s' % (label, e))

    def finish(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        print('%d checks, %d failed' % (self.checks, len(self.failures)))
        return 1 if self.failures else 0


def same(label, qemu, ours):
    if qemu != ours:
        raise Failure('%s differs\n  qemu-img: %r\n  imgutil:  %r' % (label, qemu[:3000],
                                                                       ours[:3000]))


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_file(folder, name, data):
    """Writes `data` to `name` in `folder`; returns the path."""
    path = os.path.join(folder, name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def qemu_io(image, cmds, fmt):
    args = ['qemu-io', '-f', fmt]
    for c in cmds:
        args += ['-c', c]
    run(args + [image])


def preload_env(so, **values):
    """The kill points are the library's pwrite calls: the thread-pool engine makes them where
    io_uring would make none. Under ASan the sanitizer's runtime must come first."""
    env = dict(os.environ, LD_PRELOAD=so, IMGUTIL_IO='threads')
    env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
    env.update({k: str(v) for k, v in values.items()})
    return env


def hostile(t, label, data, words, qemu_accepts=False):
    """imgutil info refuses the image `data` with `words` and the file's name in its message;
    qemu-img refuses it too unless `qemu_accepts`."""
    image = write_file(t.dir, 'hostile.' + t.fmt, data)
    proc = run([t.cli, 'info', '-f', t.fmt, image], ok=None)
    err = proc.stderr.decode()
    if proc.returncode == 0 or words not in err or os.path.basename(image) not in err:
        raise Failure('%s: exit %d, message %r (wanted %r)' % (label, proc.returncode, err,
                                                               words))
    q = run(['qemu-img', 'info', '-f', t.fmt, image], ok=None)
    if q.returncode == 0 and not qemu_accepts:
        raise Failure('%s: qemu-img accepts it' % label)
