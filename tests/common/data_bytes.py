#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Prints the bytes the given files hold as data (their SEEK_DATA/SEEK_HOLE runs), summed.

What an image occupies, without the file system's own blocks: st_blocks also counts an ext4
file's extent-tree blocks, which a file whose blocks were allocated at once shows right away
and one filled through delayed allocation only once written back."""
import os
import sys

total = 0
for name in sys.argv[1:]:
    fd = os.open(name, os.O_RDONLY)
    try:
        at = 0
        while True:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: no data past `at`
            end = os.lseek(fd, start, os.SEEK_HOLE)
            total += end - start
            at = end
    finally:
        os.close(fd)
print(total)
