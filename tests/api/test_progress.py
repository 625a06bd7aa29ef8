#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Progress and cancellation of the long calls on a handle (img_set_progress, img_cancel,
img_create_progress), through ctypes: reports in bytes of virtual size that rise to the
total; a cancellation (by the callback, by img_cancel from the callback's thread or from
another thread) fails the call with -ECANCELED and leaves the image as qemu-img check accepts
it, with the old size, snapshots and content; a cancel before a call does not touch it."""

import ctypes
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from apitest import check, failures  # noqa: E402
import apitest  # noqa: E402

SKIP = 77
MIB = 1 << 20
READ_ONLY, READ_WRITE = 1 << 0, 1 << 1
REPAIR_LEAKS = 1 << 0
P, I, U64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
PROGRESS = ctypes.CFUNCTYPE(I, P, U64, U64)
def load():
    protos = {
        'img_open': (I, [ctypes.POINTER(P), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint, P]),
        'img_close': (None, [P]), 'img_last_error': (ctypes.c_char_p, []),
        'img_set_progress': (I, [P, PROGRESS, P]), 'img_cancel': (I, [P]),
        'img_check': (I, [P, ctypes.c_uint, ctypes.POINTER(P)]),
        'img_resize': (I, [P, U64, ctypes.c_uint, P]),
        'img_snapshot_apply': (I, [P, ctypes.c_char_p]),
        'img_snapshot_delete': (I, [P, ctypes.c_char_p]),
        'img_create_progress': (I, [ctypes.c_char_p, ctypes.c_char_p, U64, P, PROGRESS, P]),
        'img_opts_new': (I, [ctypes.POINTER(P)]), 'img_opts_free': (None, [P]),
        'img_opts_parse': (I, [P, ctypes.c_char_p]), 'img_get_size': (ctypes.c_int64, [P]),
    }
    return apitest.load(protos)


def qemu_img(*args):
    return subprocess.run(['qemu-img'] + [str(a) for a in args], capture_output=True, text=True)


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def opts(lib, text):
    o = P()
    lib.img_opts_new(ctypes.byref(o))
    lib.img_opts_parse(o, text.encode())
    return o


class Recorder:
    """A progress callback that records each report and can stop the call at report N: by
    returning non-zero, by img_cancel() itself, or by having another thread cancel."""

    def __init__(self, lib, handle=None, stop_at=None, how='return'):
        self.lib, self.handle, self.stop_at, self.how = lib, handle, stop_at, how
        self.reports = []
        self.fn = PROGRESS(self.report)

    def report(self, user, done, total):
        self.reports.append((done, total))
        if self.stop_at is None or len(self.reports) != self.stop_at:
            return 0
        if self.how == 'return':
            return 1
        if self.how == 'cancel':
            self.lib.img_cancel(self.handle)
        elif self.how == 'thread':
            t = threading.Thread(target=self.lib.img_cancel, args=(self.handle,))
            t.start()
            t.join()
        return 0

    def rising_to_total(self):
        r = self.reports
        return (len(r) >= 2 and all(a[0] <= b[0] for a, b in zip(r, r[1:])) and
                all(t == r[0][1] and d <= t for d, t in r) and r[-1][0] == r[-1][1])


def open_image(lib, path, flags):
    h = P()
    ret = lib.img_open(ctypes.byref(h), path.encode(), None, flags, None)
    if ret:
        raise RuntimeError('img_open %s: %s' % (path, lib.img_last_error()))
    return h


def make_tables(tmp, name='many.qcow2', size=64):
    """A qcow2 image with many L2 tables (4 KiB clusters: one table per 2 MiB)."""
    path = os.path.join(tmp, name)
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', path, '%dM' % size)
    cmds = []
    for i in range(0, size, 2):
        cmds += ['-c', 'write -P %d %dM 4k' % (i % 250 + 1, i)]
    subprocess.run(['qemu-io', '-f', 'qcow2'] + cmds + [path], check=True, capture_output=True)
    return path


def test_check(lib, tmp):
    path = make_tables(tmp)
    h = open_image(lib, path, READ_ONLY)
    rec = Recorder(lib)
    lib.img_set_progress(h, rec.fn, None)
    ret = lib.img_check(h, 0, None)
    check(ret == 0 and rec.rising_to_total() and rec.reports[-1][1] == 64 * MIB,
          'check: %d reports rising to the virtual size (%r ... %r)' % (
              len(rec.reports), rec.reports[:1], rec.reports[-1:]))
    for how in ('return', 'cancel', 'thread'):
        rec = Recorder(lib, h, stop_at=3, how=how)
        lib.img_set_progress(h, rec.fn, None)
        ret = lib.img_check(h, 0, None)
        check(ret == -errno.ECANCELED and b'cancel' in lib.img_last_error(),
              'check cancelled (%s): %d %r' % (how, ret, lib.img_last_error()))
    # A cancel before the call belongs to no call: the next check runs to its end.
    lib.img_set_progress(h, PROGRESS(0), None)
    lib.img_cancel(h)
    check(lib.img_check(h, 0, None) == 0, 'an img_cancel before a check does not cancel it')
    lib.img_close(h)

    # A repair cancelled while it looks leaves the image as it was (leaks and all).
    leaky = make_tables(tmp, 'leaky.qcow2')
    add_leak(leaky)
    leak = qemu_img('check', leaky)
    before = digest(leaky)
    h = open_image(lib, leaky, READ_WRITE)
    rec = Recorder(lib, h, stop_at=2, how='cancel')
    lib.img_set_progress(h, rec.fn, None)
    ret = lib.img_check(h, REPAIR_LEAKS, None)
    lib.img_close(h)
    after = qemu_img('check', leaky)
    check(leak.returncode in (2, 3) and ret == -errno.ECANCELED and
          after.returncode == leak.returncode and digest(leaky) == before,
          'repair cancelled while looking: the image as it was, its damage too (%d, check %d -> %d)'
          % (ret, leak.returncode, after.returncode))
    h = open_image(lib, leaky, READ_WRITE)
    ret = lib.img_check(h, REPAIR_LEAKS, None)
    lib.img_close(h)
    check(ret == 0 and qemu_img('check', leaky).returncode == 0,
          'the same repair, not cancelled, repairs it')


def add_leak(path):
    """Counts one reference too many for the file's last cluster (a data cluster)."""
    import struct
    with open(path, 'r+b') as f:
        f.seek(0, 2)
        cluster = f.tell() // 4096 - 1
        f.seek(48)
        table = struct.unpack('>Q', f.read(8))[0]
        f.seek(table)
        block = struct.unpack('>Q', f.read(8))[0]
        assert cluster < 2048, 'the leak must fall in the first refcount block'
        f.seek(block + 2 * cluster)
        count = struct.unpack('>H', f.read(2))[0]
        f.seek(block + 2 * cluster)
        f.write(struct.pack('>H', count + 1))


def test_resize(lib, tmp):
    for fmt in ('raw', 'qcow2'):
        path = os.path.join(tmp, 'grow.' + fmt)
        qemu_img('create', '-q', '-f', fmt, path, '8M')
        subprocess.run(['qemu-io', '-f', fmt, '-c', 'write -P 7 0 1M', path], check=True,
                       capture_output=True)
        reference = os.path.join(tmp, 'grow-ref.' + fmt)
        shutil.copyfile(path, reference)
        h = open_image(lib, path, READ_WRITE)
        o = opts(lib, 'preallocation=full')
        rec = Recorder(lib, h, stop_at=3, how='thread')
        lib.img_set_progress(h, rec.fn, None)
        ret = lib.img_resize(h, 72 * MIB, 0, o)
        size = lib.img_get_size(h)
        lib.img_close(h)
        checked = qemu_img('check', '-f', fmt, path)
        same = qemu_img('compare', '-f', fmt, '-F', fmt, path, reference)
        info = json.loads(qemu_img('info', '--output=json', '-f', fmt, path).stdout)
        check(ret == -errno.ECANCELED and size == 8 * MIB and info['virtual-size'] == 8 * MIB
              and same.returncode == 0 and checked.returncode in (0, 3, 63) and
              'ERROR' not in checked.stdout,
              '%s resize preallocation=full cancelled: old size, old content, no errors '
              '(%d, size %d, check %d)' % (fmt, ret, info['virtual-size'], checked.returncode))
        if fmt == 'raw':
            check(os.path.getsize(path) == 8 * MIB, 'raw: the file is cut back to its old size')
        h = open_image(lib, path, READ_WRITE)
        rec = Recorder(lib)
        lib.img_set_progress(h, rec.fn, None)
        ret = lib.img_resize(h, 72 * MIB, 0, o)
        lib.img_close(h)
        lib.img_opts_free(o)
        check(ret == 0 and rec.rising_to_total(),
              '%s resize preallocation=full: %d reports rising to the total (%r)' % (
                  fmt, len(rec.reports), rec.reports[-1:]))


def test_create(lib, tmp):
    for fmt in ('raw', 'qcow2'):
        path = os.path.join(tmp, 'new.' + fmt)
        o = opts(lib, 'preallocation=full')
        rec = Recorder(lib, stop_at=2)
        ret = lib.img_create_progress(path.encode(), fmt.encode(), 48 * MIB, o, rec.fn, None)
        check(ret == -errno.ECANCELED and not os.path.exists(path),
              '%s create cancelled: -ECANCELED, no file left (%d)' % (fmt, ret))
        old = os.path.join(tmp, 'old.' + fmt)
        with open(old, 'wb') as f:
            f.write(b'precious' * 1000)
        lib.img_opts_parse(o, b'overwrite=on')
        rec = Recorder(lib, stop_at=2)
        ret = lib.img_create_progress(old.encode(), fmt.encode(), 48 * MIB, o, rec.fn, None)
        with open(old, 'rb') as f:
            kept = f.read() == b'precious' * 1000
        check(ret == -errno.ECANCELED and kept,
              '%s create over an existing file cancelled: the old file kept (%d)' % (fmt, ret))
        rec = Recorder(lib)
        ret = lib.img_create_progress(path.encode(), fmt.encode(), 48 * MIB, o, rec.fn, None)
        lib.img_opts_free(o)
        check(ret == 0 and rec.rising_to_total() and
              qemu_img('check', '-f', fmt, path).returncode in (0, 63),
              '%s create preallocation=full: %d reports rising to the total' % (
                  fmt, len(rec.reports)))


def test_snapshots(lib, tmp):
    path = make_tables(tmp, 'snap.qcow2')
    qemu_img('snapshot', '-c', 'one', path)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 99 0 8M', path], check=True,
                   capture_output=True)
    before = digest(path)
    listing = qemu_img('snapshot', '-l', path).stdout
    for call, arg in (('img_snapshot_apply', b'one'), ('img_snapshot_delete', b'one')):
        h = open_image(lib, path, READ_WRITE)
        rec = Recorder(lib, h, stop_at=2, how='cancel')
        lib.img_set_progress(h, rec.fn, None)
        ret = getattr(lib, call)(h, arg)
        lib.img_close(h)
        checked = qemu_img('check', path)
        check(ret == -errno.ECANCELED and qemu_img('snapshot', '-l', path).stdout == listing
              and checked.returncode in (0, 3) and 'ERROR' not in checked.stdout,
              '%s cancelled: snapshots as they were, no errors (%d, check %d)' % (
                  call, ret, checked.returncode))
    h = open_image(lib, path, READ_WRITE)
    rec = Recorder(lib)
    lib.img_set_progress(h, rec.fn, None)
    ret = lib.img_snapshot_apply(h, b'one')
    lib.img_close(h)
    check(ret == 0 and len(rec.reports) >= 2 and digest(path) != before,
          'snapshot apply reports progress (%d reports) and applies' % len(rec.reports))


def main():
    lib = load()
    tmp = tempfile.mkdtemp(prefix='imgutil-progress-')
    try:
        test_check(lib, tmp)
        test_resize(lib, tmp)
        test_create(lib, tmp)
        test_snapshots(lib, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('%d failed' % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
