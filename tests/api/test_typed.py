#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The typed getters, img_probe, img_open_fd, img_last_errno and the version calls, driven
through ctypes as a binding would, and checked against what `qemu-img info --output=json`
says of the same images (made by qemu-img at test time)."""

import ctypes
import errno
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from apitest import check, failures  # noqa: E402
import apitest  # noqa: E402

SKIP = 77
READ_ONLY, READ_WRITE, NO_BACKING = 1 << 0, 1 << 1, 1 << 3
FLAG = {'dirty': 1 << 0, 'corrupt': 1 << 1, 'encrypted': 1 << 2, 'data-file': 1 << 3,
        'snapshots': 1 << 4, 'bitmaps': 1 << 5, 'backing': 1 << 6}
NAMED_BACKING, NAMED_DATA_FILE, NAMED_EXTENT = 1, 2, 3

P, I, I64, U64, S = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint64,
                     ctypes.c_char_p)
PROTOS = {
    'img_version': (S, []), 'img_version_number': (I, []), 'img_last_error': (S, []),
    'img_last_errno': (I, []), 'img_free': (None, [P]),
    'img_open': (I, [ctypes.POINTER(P), S, S, ctypes.c_uint, P]),
    'img_open_fd': (I, [ctypes.POINTER(P), I, S, ctypes.c_uint, P]),
    'img_close': (None, [P]), 'img_get_backing': (P, [P]), 'img_probe': (I, [S, ctypes.POINTER(S)]),
    'img_get_size': (I64, [P]), 'img_get_filename': (S, [P]),
    'img_get_backing_filename': (I, [P, ctypes.POINTER(S), ctypes.POINTER(S)]),
    'img_get_allocated_size': (I64, [P]), 'img_get_cluster_size': (I64, [P]),
    'img_get_flags': (I, [P]), 'img_get_named_file_count': (I, [P]),
    'img_get_named_file': (S, [P, I, ctypes.POINTER(I)]),
    'img_snapshot_count': (I, [P]),
    'img_snapshot_get': (I, [P, I, ctypes.POINTER(P), ctypes.POINTER(P),
                             ctypes.POINTER(I64), ctypes.POINTER(ctypes.c_int32),
                             ctypes.POINTER(U64), ctypes.POINTER(U64)]),
    'img_pread': (I64, [P, P, ctypes.c_size_t, U64]),
    'img_resize': (I, [P, U64, ctypes.c_uint, P]),
    'img_format_supported': (I, [S, S]), 'img_format_supports': (I, [S, S]),
}

def load():
    return apitest.load(PROTOS)


def qemu_img(*args):
    return subprocess.run(['qemu-img'] + list(args), check=True, capture_output=True,
                          text=True).stdout


def qemu_info(path):
    return json.loads(qemu_img('info', '--output=json', '-U', path))


def b(text):
    return text.encode() if isinstance(text, str) else text


def s(raw):
    return raw.decode() if raw is not None else None


class Image:
    def __init__(self, lib, path, flags=READ_ONLY, fmt=None, fd=None):
        self.lib = lib
        self.h = P()
        if fd is None:
            self.ret = lib.img_open(ctypes.byref(self.h), b(path), b(fmt) if fmt else None,
                                    flags, None)
        else:
            self.ret = lib.img_open_fd(ctypes.byref(self.h), fd, b(fmt) if fmt else None,
                                       flags, None)
        self.error = s(lib.img_last_error())

    def __enter__(self):
        if self.ret != 0:
            raise RuntimeError('open failed: %d %s' % (self.ret, self.error))
        return self

    def __exit__(self, *exc):
        self.lib.img_close(self.h)


def getters_match_info(lib, im, info, label):
    """Every typed answer against the same image's qemu-img info."""
    g = lib
    check(s(g.img_get_filename(im.h)) == info['filename'], '%s: img_get_filename' % label)
    name, fmt = S(), S()
    ret = g.img_get_backing_filename(im.h, ctypes.byref(name), ctypes.byref(fmt))
    check(ret == 0 and s(name.value) == info.get('backing-filename') and
          s(fmt.value) == info.get('backing-filename-format'),
          '%s: img_get_backing_filename %r %r, qemu-img %r %r' % (
              label, name.value, fmt.value, info.get('backing-filename'),
              info.get('backing-filename-format')))
    check(g.img_get_cluster_size(im.h) == info.get('cluster-size', 0),
          '%s: img_get_cluster_size %d, qemu-img %r' % (
              label, g.img_get_cluster_size(im.h), info.get('cluster-size')))
    allocated = g.img_get_allocated_size(im.h)
    check(allocated == info['actual-size'], '%s: img_get_allocated_size %d, qemu-img %d' % (
        label, allocated, info['actual-size']))
    flags = g.img_get_flags(im.h)
    data = info.get('format-specific', {}).get('data', {})
    want = 0
    if info.get('dirty-flag'):
        want |= FLAG['dirty']
    if data.get('corrupt'):
        want |= FLAG['corrupt']
    if info.get('encrypted'):
        want |= FLAG['encrypted']
    if data.get('data-file'):
        want |= FLAG['data-file']
    if info.get('snapshots'):
        want |= FLAG['snapshots']
    if data.get('bitmaps'):
        want |= FLAG['bitmaps']
    if info.get('backing-filename'):
        want |= FLAG['backing']
    check(flags == want, '%s: img_get_flags %#x, qemu-img info says %#x' % (label, flags, want))
    snaps = info.get('snapshots', [])
    check(g.img_snapshot_count(im.h) == len(snaps), '%s: img_snapshot_count %d, qemu-img %d' % (
        label, g.img_snapshot_count(im.h), len(snaps)))
    for i, want_snap in enumerate(snaps):
        sid, sname = P(), P()
        date_sec, date_nsec = I64(), ctypes.c_int32()
        clock, state = U64(), U64()
        ret = g.img_snapshot_get(im.h, i, ctypes.byref(sid), ctypes.byref(sname),
                                 ctypes.byref(date_sec), ctypes.byref(date_nsec),
                                 ctypes.byref(clock), ctypes.byref(state))
        got = {}
        if ret == 0:
            got = {'id': ctypes.string_at(sid.value).decode(),
                   'name': ctypes.string_at(sname.value).decode(),
                   'date-sec': date_sec.value, 'date-nsec': date_nsec.value,
                   'vm-clock-sec': clock.value // 10**9, 'vm-clock-nsec': clock.value % 10**9,
                   'vm-state-size': state.value}
            g.img_free(sid)
            g.img_free(sname)
        want_fields = {k: want_snap[k] for k in got}
        check(ret == 0 and got == want_fields, '%s: img_snapshot_get(%d) %r, qemu-img %r' % (
            label, i, got, want_snap))
    ret = g.img_snapshot_get(im.h, len(snaps), None, None, None, None, None, None)
    check(ret == -errno.ENOENT and g.img_last_errno() == -errno.ENOENT,
          '%s: img_snapshot_get past the end is -ENOENT (%d)' % (label, ret))


def named_files(lib, im):
    out = []
    for i in range(lib.img_get_named_file_count(im.h)):
        kind = I()
        out.append((s(lib.img_get_named_file(im.h, i, ctypes.byref(kind))), kind.value))
    return out


def test_version(lib):
    number = lib.img_version_number()
    text = s(lib.img_version())
    major, minor, micro = (int(x) for x in text.split('.'))
    check(number == major * 10000 + minor * 100 + micro,
          'img_version_number %d matches img_version %s' % (number, text))
    check(number >= 10100, 'img_version_number says 1.1 or later (%d)' % number)
    check(lib.img_format_supported(b'qcow2', b'create') == 1 and
          lib.img_format_supported(b'raw', b'snapshots') == 0 and
          lib.img_format_supported(b'nosuch', b'read') == -errno.ENOENT,
          'img_format_supported answers as img_format_supports')


def test_getters(lib, tmp):
    base = os.path.join(tmp, 'base.raw')
    with open(base, 'wb') as f:
        f.write(bytes(range(256)) * 4096)
    top = os.path.join(tmp, 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16384', '-b', 'base.raw',
             '-F', 'raw', top)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 9 0 64k', top], check=True,
                   capture_output=True)
    qemu_img('snapshot', '-c', 'first', top)
    qemu_img('snapshot', '-c', 'second', top)
    qemu_img('bitmap', '--add', top, 'b0')
    info = qemu_info(top)
    with Image(lib, top) as im:
        getters_match_info(lib, im, info, 'qcow2 with backing, snapshots, bitmap')
        check(named_files(lib, im) == [(base, NAMED_BACKING)],
              'named files of the overlay: %r' % named_files(lib, im))
    with Image(lib, top, READ_ONLY | NO_BACKING) as im:
        name, fmt = S(), S()
        lib.img_get_backing_filename(im.h, ctypes.byref(name), ctypes.byref(fmt))
        check((name.value, fmt.value) == (b'base.raw', b'raw'),
              'IMG_OPEN_NO_BACKING: the backing file is still named (%r %r)' % (
                  name.value, fmt.value))
    with Image(lib, base) as im:
        getters_match_info(lib, im, qemu_info(base), 'raw')
        check(named_files(lib, im) == [], 'a raw image names no files')
        check(lib.img_get_named_file(im.h, 0, None) is None and
              lib.img_last_errno() == -errno.ENOENT,
              'img_get_named_file out of range: NULL and img_last_errno -ENOENT')

    dfile = os.path.join(tmp, 'df.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'data_file=df.data', dfile, '1M')
    with Image(lib, dfile) as im:
        getters_match_info(lib, im, qemu_info(dfile), 'qcow2 with a data file')
        check(named_files(lib, im) == [(os.path.join(tmp, 'df.data'), NAMED_DATA_FILE)],
              'named files of a data-file image: %r' % named_files(lib, im))

    if lib.img_format_supports(b'vmdk', b'read') == 1:
        flat = os.path.join(tmp, 'flat.vmdk')
        qemu_img('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentFlat', flat, '3G')
        with Image(lib, flat) as im:
            want = [(os.path.join(tmp, 'flat-f%03d.vmdk' % i), NAMED_EXTENT) for i in (1, 2)]
            check(named_files(lib, im) == want,
                  'named files of a split flat VMDK: its extents %r' % named_files(lib, im))
            getters_match_info(lib, im, qemu_info(flat), 'vmdk with extents')

    # The header's incompatible feature bits (offset 72): dirty (bit 0) and corrupt (bit 1).
    for bit, what in ((0, 'dirty'), (1, 'corrupt')):
        marked = os.path.join(tmp, what + '.qcow2')
        qemu_img('create', '-q', '-f', 'qcow2', marked, '1M')
        with open(marked, 'r+b') as f:
            f.seek(72)
            f.write(struct.pack('>Q', 1 << bit))
        with Image(lib, marked) as im:
            getters_match_info(lib, im, qemu_info(marked), 'qcow2 marked ' + what)
            check(lib.img_get_flags(im.h) & FLAG[what], 'img_get_flags says ' + what)


def test_probe(lib, tmp):
    fmt = S()
    for name, create in (('p.qcow2', 'qcow2'), ('p.raw', 'raw'), ('p.vmdk', 'vmdk'),
                         ('p.vdi', 'vdi')):
        path = os.path.join(tmp, name)
        qemu_img('create', '-q', '-f', create, path, '1M')
        want = qemu_info(path)['format']
        ret = lib.img_probe(b(path), ctypes.byref(fmt))
        message = s(lib.img_last_error())
        if lib.img_format_supports(b(want), b'read') == 1:
            check(ret == 0 and s(fmt.value) == want,
                  'img_probe %s: %d %r (qemu-img: %s)' % (name, ret, fmt.value, want))
        else:
            check(ret == -errno.ENOTSUP and want in message and fmt.value is None,
                  'img_probe %s: -ENOTSUP naming %s (%d %r)' % (name, want, ret, message))
    for path, code in ((os.path.join(tmp, 'absent'), -errno.ENOENT), (tmp, -errno.EISDIR)):
        ret = lib.img_probe(b(path), ctypes.byref(fmt))
        check(ret == code and lib.img_last_errno() == code and path in s(lib.img_last_error()),
              'img_probe %s: %d (%s)' % (path, ret, s(lib.img_last_error())))


def read_all(lib, im, size):
    buf = ctypes.create_string_buffer(size)
    n = lib.img_pread(im.h, buf, size, 0)
    return buf.raw[:n] if n >= 0 else None


def test_open_fd(lib, tmp):
    top = os.path.join(tmp, 'top.qcow2')
    fd = os.open(top, os.O_RDONLY)
    try:
        with Image(lib, top) as im:
            want = read_all(lib, im, 1 << 20)
        with Image(lib, None, fd=fd) as im:
            check(read_all(lib, im, 1 << 20) == want, 'img_open_fd reads what img_open reads')
            check(s(lib.img_get_filename(im.h)) == top, 'img_open_fd: the filename is the path')
            check(lib.img_get_backing(im.h) is not None,
                  'img_open_fd: the backing file opened from the image folder')
        os.lseek(fd, 0, os.SEEK_SET)
        check(len(os.read(fd, 4)) == 4, 'the caller\'s descriptor still works after img_close')
        im = Image(lib, None, flags=READ_WRITE, fd=fd)
        check(im.ret == -errno.EBADF and 'IMG_OPEN_READ_WRITE' in im.error,
              'img_open_fd read-write on a read-only descriptor: -EBADF (%d %s)' % (
                  im.ret, im.error))
    finally:
        os.close(fd)
    im = Image(lib, None, fd=fd)
    check(im.ret == -errno.EBADF, 'img_open_fd on a closed descriptor: -EBADF (%d)' % im.ret)

    # Locks: held while open, released by img_close although the caller keeps its descriptor.
    rw = os.path.join(tmp, 'rw.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', rw, '1M')
    fd = os.open(rw, os.O_RDWR)
    try:
        with Image(lib, None, flags=READ_WRITE, fd=fd):
            held = subprocess.run(['qemu-img', 'info', rw], capture_output=True, text=True)
            check(held.returncode != 0 and 'lock' in held.stderr,
                  'img_open_fd read-write holds the write lock (%r)' % held.stderr.strip())
        after = subprocess.run(['qemu-io', '-c', 'write 0 4k', rw], capture_output=True,
                               text=True)
        check(after.returncode == 0 and 'lock' not in after.stderr,
              'img_close released the locks, the caller\'s descriptor still open (%r)' %
              after.stderr.strip())
        fcntl.fcntl(fd, fcntl.F_GETFD)
    finally:
        os.close(fd)


def test_messages(lib, tmp):
    top = os.path.join(tmp, 'shrink.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', top, '2M')
    with Image(lib, top, READ_WRITE) as im:
        ret = lib.img_resize(im.h, 1 << 20, 0, None)
        message = s(lib.img_last_error())
        check(ret == -errno.EINVAL and 'IMG_RESIZE_SHRINK' in message and '--' not in message
              and top in message, 'a shrink without the flag names IMG_RESIZE_SHRINK: %r' %
              message)
        check(lib.img_last_errno() == -errno.EINVAL, 'img_last_errno is the code returned')


def corrupt_l1(path):
    """Points the first L1 entry at an unaligned offset, which a read must refuse."""
    with open(path, 'r+b') as f:
        f.seek(40)
        l1_offset = struct.unpack('>Q', f.read(8))[0]
        f.seek(l1_offset)
        f.write(struct.pack('>Q', (1 << 63) | (1 << 40) | 0x200))


def test_messages_name_files(lib, tmp):
    base = os.path.join(tmp, 'bad-base.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, '1M')
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 64k', base], check=True,
                   capture_output=True)
    corrupt_l1(base)
    top = os.path.join(tmp, 'on-bad-base.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', '-u', top, '1M')
    buf = ctypes.create_string_buffer(4096)
    for path, culprit in ((base, base), (top, base)):
        with Image(lib, path) as im:
            ret = lib.img_pread(im.h, buf, 4096, 0)
            message = s(lib.img_last_error())
            check(ret < 0 and message.startswith(culprit + ': '),
                  'a damaged table read through %s: the message names %s (%d %r)' % (
                      os.path.basename(path), os.path.basename(culprit), ret, message))


def main():
    lib = load()
    tmp = tempfile.mkdtemp(prefix='imgutil-typed-')
    try:
        test_version(lib)
        test_getters(lib, tmp)
        test_probe(lib, tmp)
        test_open_fd(lib, tmp)
        test_messages(lib, tmp)
        test_messages_name_files(lib, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('%d failed' % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
