# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes through the library mark enabled persistent bitmaps dirty as QEMU does: the same
writes, zeroes and discards made with qemu-io on an identical copy leave the same bits (decoded
from the files); disabled bitmaps stay as they were; while the image is open the tracked
bitmaps are marked in use in the file, so a crash cannot leave bits that miss a write."""

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'api'))
import apitest  # noqa: E402
import qcow2_bitmaps  # noqa: E402
from apitest import check  # noqa: E402

P = ctypes.c_void_p
lib = apitest.load({
    'img_open': (ctypes.c_int, [ctypes.POINTER(P), ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_uint, P]),
    'img_close': (None, [P]),
    'img_pwrite': (ctypes.c_int64, [P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]),
    'img_zero': (ctypes.c_int, [P, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint]),
    'img_discard': (ctypes.c_int, [P, ctypes.c_uint64, ctypes.c_uint64]),
    'img_bitmap_count': (ctypes.c_int, [P]),
    'img_bitmap_get': (ctypes.c_int, [P, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                      ctypes.POINTER(ctypes.c_uint64),
                                      ctypes.POINTER(ctypes.c_uint)]),
    'img_bitmap_add': (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint]),
})
READ_WRITE = 1 << 1
ZERO_MAY_UNMAP = 1

# (qemu-io command, library call)
OPS = [
    ('write 0 4k', ('write', 0, 4096)),
    ('write 65000 1000', ('write', 65000, 1000)),
    ('write 1M 300k', ('write', 1 << 20, 300 << 10)),
    ('write -z 2M 64k', ('zero', 2 << 20, 64 << 10, 0)),
    ('write -z -u 3M 128k', ('zero', 3 << 20, 128 << 10, ZERO_MAY_UNMAP)),
    ('discard 5M 192k', ('discard', 5 << 20, 192 << 10)),
    ('write 8388096 512', ('write', (8 << 20) - 512, 512)),
]


def make(path):
    subprocess.run(['qemu-img', 'create', '-f', 'qcow2', path, '8M'], check=True,
                   capture_output=True)
    for args in (['b0'], ['-g', '512', 'fine'], ['-g', '1M', 'coarse'], ['--disable', 'off']):
        subprocess.run(['qemu-img', 'bitmap', '--add'] + args[:-1] + [path, args[-1]], check=True)
    # Some bits before: the disabled bitmap must keep them, the others add to them.
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write 7M 4k', path], check=True,
                   capture_output=True)


def lib_writes(path, ops, inspect=None):
    h = P()
    ret = lib.img_open(ctypes.byref(h), path.encode(), b'qcow2', READ_WRITE, None)
    check(ret == 0, 'img_open %s' % path)
    for op in ops:
        if op[0] == 'write':
            r = lib.img_pwrite(h, b'\x5a' * op[2], op[2], op[1])
            check(r == op[2], 'img_pwrite %d+%d' % op[1:])
        elif op[0] == 'zero':
            check(lib.img_zero(h, op[1], op[2], op[3]) == 0, 'img_zero %d+%d' % op[1:3])
        else:
            check(lib.img_discard(h, op[1], op[2]) == 0, 'img_discard %d+%d' % op[1:])
    if inspect:
        inspect(h)
    lib.img_close(h)


def show(d):
    return {k: (v[0], v[1], qcow2_bitmaps.set_granules(v[2])[:12]) for k, v in d.items()}


def main():
    if not shutil.which('qemu-io'):
        print('SKIP: needs qemu-io')
        return apitest.SKIP
    work = tempfile.mkdtemp(prefix='imgutil-bitmap-writes-')
    try:
        ours, theirs = os.path.join(work, 'ours.qcow2'), os.path.join(work, 'theirs.qcow2')
        make(ours)
        shutil.copy(ours, theirs)
        before = qcow2_bitmaps.decode(ours)

        def while_open(h):
            d = qcow2_bitmaps.decode(ours)
            check(all(d[n][0] & qcow2_bitmaps.IN_USE for n in ('b0', 'fine', 'coarse')),
                  'enabled bitmaps marked in use in the file while open: %s' % show(d))
            check(not d['off'][0] & qcow2_bitmaps.IN_USE, 'the disabled bitmap is not in use')
            check(lib.img_bitmap_count(h) == 4, 'img_bitmap_count')
            name, gran, flags = ctypes.c_char_p(), ctypes.c_uint64(), ctypes.c_uint()
            check(lib.img_bitmap_get(h, 1, ctypes.byref(name), ctypes.byref(gran),
                                     ctypes.byref(flags)) == 0 and name.value == b'fine' and
                  gran.value == 512 and flags.value == 1,
                  'img_bitmap_get: %s %d %d (this session\'s in-use mark is not reported)' %
                  (name.value, gran.value, flags.value))

        lib_writes(ours, [op for _, op in OPS], while_open)
        cmd = ['qemu-io', '-f', 'qcow2']
        for text, _ in OPS:
            cmd += ['-c', text]
        subprocess.run(cmd + [theirs], check=True, capture_output=True)
        a, b = qcow2_bitmaps.decode(ours), qcow2_bitmaps.decode(theirs)
        for name in b:
            check(a.get(name) == b[name], 'bitmap %s after the writes: %s (qemu-io: %s)' %
                  (name, show({name: a[name]}) if name in a else None, show({name: b[name]})))
        check(a['off'] == before['off'], 'the disabled bitmap kept its bits')
        r = subprocess.run(['qemu-img', 'check', ours], capture_output=True, text=True)
        check(r.returncode == 0 and 'leaked' not in r.stdout, 'qemu-img check: %s' % r.stderr)

        # A read-only handle changes no bitmap.
        h = P()
        check(lib.img_open(ctypes.byref(h), ours.encode(), b'qcow2', 0, None) == 0,
              'img_open read-only')
        check(lib.img_bitmap_add(h, b'ro', 0, 0) == -30, 'img_bitmap_add on a read-only handle: '
              '-EROFS')
        lib.img_close(h)

        # A second session adds to the stored bits; a bitmap added while writing tracks too.
        shutil.copy(ours, theirs)

        def add_during(h):
            check(lib.img_bitmap_add(h, b'late', 0, 0) == 0, 'img_bitmap_add while writing')
            r = lib.img_pwrite(h, b'\x01' * 512, 512, 6 << 20)
            check(r == 512, 'img_pwrite after the add')

        lib_writes(ours, [('write', 4 << 20, 4096)], add_during)
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write 4M 4k', theirs], check=True,
                       capture_output=True)
        subprocess.run(['qemu-img', 'bitmap', '--add', theirs, 'late'], check=True)
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write 6M 512', theirs], check=True,
                       capture_output=True)
        a, b = qcow2_bitmaps.decode(ours), qcow2_bitmaps.decode(theirs)
        check(a == b, 'second session: %s (qemu: %s)' % (show(a), show(b)))
        r = subprocess.run(['qemu-img', 'check', ours], capture_output=True, text=True)
        check(r.returncode == 0 and 'leaked' not in r.stdout, 'qemu-img check: %s' % r.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    apitest.finish()


if __name__ == '__main__':
    sys.exit(main())
