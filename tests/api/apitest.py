# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the ctypes tests of the public API share: the tally of named checks, and loading the
built library with the prototypes a test declares."""

import ctypes
import os
import shutil
import sys

SKIP = 77
failures = []


def check(condition, what):
    print(('ok   ' if condition else 'FAIL ') + what, flush=True)
    if not condition:
        failures.append(what)


def load(protos):
    """The built libimgutil.so.1 with `protos` ({name: (restype, argtypes)}) applied; skips
    the test (77) without the build tree or qemu-img."""
    root = os.environ.get('IMGUTIL_BUILD_ROOT')
    if not root or not shutil.which('qemu-img'):
        print('SKIP: needs IMGUTIL_BUILD_ROOT and qemu-img')
        sys.exit(SKIP)
    lib = ctypes.CDLL(os.path.join(root, 'lib', 'libimgutil.so.1'))
    # The sanitizer runtime preloaded for this process must not reach qemu-img and qemu-io.
    os.environ.pop('LD_PRELOAD', None)
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def finish():
    print('%d failed' % len(failures))
    sys.exit(1 if failures else 0)
