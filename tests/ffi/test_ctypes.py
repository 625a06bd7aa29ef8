#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Loads the built libimgutil.so.1 through ctypes, as a foreign-language binding would, and
drives the public API: open, info JSON, read, and an error path."""

import ctypes
import errno
import json
import os
import sys
import tempfile

SKIP = 77


def load_library():
    root = os.environ.get("IMGUTIL_BUILD_ROOT")
    if not root:
        print("SKIP: IMGUTIL_BUILD_ROOT is not set")
        sys.exit(SKIP)
    path = os.path.join(root, "lib", "libimgutil.so.1")
    lib = ctypes.CDLL(path)

    lib.img_version.restype = ctypes.c_char_p
    lib.img_version.argtypes = []
    lib.img_last_error.restype = ctypes.c_char_p
    lib.img_last_error.argtypes = []
    lib.img_free.restype = None
    lib.img_free.argtypes = [ctypes.c_void_p]
    lib.img_open.restype = ctypes.c_int
    lib.img_open.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                             ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p]
    lib.img_close.restype = None
    lib.img_close.argtypes = [ctypes.c_void_p]
    lib.img_get_size.restype = ctypes.c_int64
    lib.img_get_size.argtypes = [ctypes.c_void_p]
    lib.img_get_format.restype = ctypes.c_char_p
    lib.img_get_format.argtypes = [ctypes.c_void_p]
    lib.img_info_json.restype = ctypes.c_int
    lib.img_info_json.argtypes = [ctypes.c_void_p, ctypes.c_uint,
                                  ctypes.POINTER(ctypes.c_void_p)]
    lib.img_pread.restype = ctypes.c_int64
    lib.img_pread.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.c_uint64]
    return lib


IMG_OPEN_READ_ONLY = 1 << 0

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAIL: " + what)


def pattern(size):
    """Bytes that differ at every offset within a 251-byte period, so a misplaced read shows."""
    return bytes((i * 7 + 3) % 251 for i in range(size))


def test_version(lib):
    version = lib.img_version().decode()
    check(version.count(".") == 2 and all(p.isdigit() for p in version.split(".")),
          "img_version() is MAJOR.MINOR.MICRO, got %r" % version)


def test_open_info_read(lib, folder):
    size = 1024 * 1024
    path = os.path.join(folder, "disk.raw")
    content = pattern(size)
    with open(path, "wb") as f:
        f.write(content)

    handle = ctypes.c_void_p()
    ret = lib.img_open(ctypes.byref(handle), path.encode(), b"raw", IMG_OPEN_READ_ONLY, None)
    check(ret == 0, "img_open(%s) returned %d: %s" % (path, ret, lib.img_last_error()))
    if ret != 0:
        return
    try:
        check(lib.img_get_size(handle) == size,
              "img_get_size is %d, expected %d" % (lib.img_get_size(handle), size))
        check(lib.img_get_format(handle) == b"raw",
              "img_get_format is %r" % lib.img_get_format(handle))

        text = ctypes.c_void_p()
        ret = lib.img_info_json(handle, 0, ctypes.byref(text))
        check(ret == 0, "img_info_json returned %d: %s" % (ret, lib.img_last_error()))
        if ret == 0:
            try:
                info = json.loads(ctypes.string_at(text).decode())
            finally:
                lib.img_free(text)
            check(info.get("virtual-size") == size, "virtual-size is %r" % info.get("virtual-size"))
            check(info.get("format") == "raw", "format is %r" % info.get("format"))
            check(info.get("filename") == path, "filename is %r" % info.get("filename"))

        for offset, length in ((0, 512), (4093, 7), (size - 100, 100), (65536 + 1, 4096)):
            buf = ctypes.create_string_buffer(length)
            got = lib.img_pread(handle, buf, length, offset)
            check(got == length, "img_pread(%d, %d) returned %d" % (offset, length, got))
            check(buf.raw == content[offset:offset + length],
                  "img_pread(%d, %d) returned the wrong bytes" % (offset, length))

        buf = ctypes.create_string_buffer(64)
        got = lib.img_pread(handle, buf, 64, size - 16)
        check(got == 16, "a read crossing the end returned %d, expected 16" % got)
        check(buf.raw[:16] == content[-16:], "a read crossing the end returned the wrong bytes")
        got = lib.img_pread(handle, buf, 64, size)
        check(got == 0, "a read at the end returned %d, expected 0" % got)
    finally:
        lib.img_close(handle)


def test_missing_file(lib, folder):
    path = os.path.join(folder, "does-not-exist.qcow2")
    handle = ctypes.c_void_p(1234)
    ret = lib.img_open(ctypes.byref(handle), path.encode(), None, IMG_OPEN_READ_ONLY, None)
    check(ret == -errno.ENOENT, "img_open of a missing file returned %d, expected %d"
          % (ret, -errno.ENOENT))
    check(handle.value is None, "img_open left a handle behind on failure")
    message = lib.img_last_error().decode()
    check(path in message, "img_last_error() does not name the file: %r" % message)


def main():
    lib = load_library()
    with tempfile.TemporaryDirectory(prefix="imgutil-ffi-") as folder:
        test_version(lib)
        test_open_info_read(lib, folder)
        test_missing_file(lib, folder)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
