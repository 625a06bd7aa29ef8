#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A 1 TiB qcow2 image holding 3 MiB of data (qemu-img create 1T + qemu-io writes): it must
convert to raw correctly and sparsely, and the map must be a handful of extents, never one
per cluster. The conversion time is printed for a human to see, not asserted.

usage: test_large_sparse.py API_DRIVER
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import (CheckFailed, clip, create_qcow2, describe_rc, info_differences,  # noqa: E402
                     map_differences, parse_json, qemu_img, qemu_info)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# Three 1 MiB writes: at the start, in the middle off cluster alignment, and at the end.
WRITES = [(0, MiB), (512 * GiB + 4 * KiB + 3, MiB), (TiB - MiB, MiB)]

# Generous bounds that an extent-based walk meets and a per-cluster walk (16 million
# clusters) misses by orders of magnitude.
MAX_MAP_ROWS = 8
MAX_BLOCK_STATUS_CALLS = 64
SPARSE_SLACK = 64 * KiB


def expected_bytes(random_bytes, pattern, offset, length):
    """What the writes put at [offset, offset+length): random data repeated from the first
    write's start, pattern bytes for the others, zeros elsewhere."""
    out = bytearray(length)
    for i, (start, size) in enumerate(WRITES):
        lo, hi = max(start, offset), min(start + size, offset + length)
        if lo >= hi:
            continue
        if i == 0:
            first = (lo - start) % len(random_bytes)
            repeats = (first + hi - lo) // len(random_bytes) + 1
            out[lo - offset:hi - offset] = (random_bytes * repeats)[first:first + hi - lo]
        else:
            out[lo - offset:hi - offset] = bytes([pattern[i]]) * (hi - lo)
    return bytes(out)


def main():
    s = interop.Suite('large-sparse', sys.argv)
    rnd = s.random_file()
    with open(rnd, 'rb') as f:
        random_bytes = f.read()
    pattern = {1: 0xa1, 2: 0xa2}
    path = create_qcow2(s.path('big.qcow2'), TiB, writes=[
        'write -s %s %d %d' % (rnd, WRITES[0][0], WRITES[0][1]),
        'write -P 0x%x %d %d' % (pattern[1], WRITES[1][0], WRITES[1][1]),
        'write -P 0x%x %d %d' % (pattern[2], WRITES[2][0], WRITES[2][1]),
    ])
    qemu_rows = parse_json(qemu_img('map', '--output=json', path).stdout, 'qemu-img map')

    with s.check('1 TiB image: imgutil map --output=json agrees with qemu-img, in few rows'):
        rows = parse_json(s.imgutil('map', '--output=json', path).stdout, 'imgutil map')
        print('     imgutil map: %d rows, qemu-img map: %d rows' % (len(rows), len(qemu_rows)))
        diff = map_differences(qemu_rows, rows)
        if diff:
            raise CheckFailed(diff)
        if len(rows) > MAX_MAP_ROWS:
            raise CheckFailed('imgutil map printed %d rows for 3 data extents' % len(rows))

    with s.check('1 TiB image: img_block_status walks it in few calls'):
        proc = s.api('block-status', path, ok_codes=None)
        if proc.returncode != 0:
            raise CheckFailed('%s: %s' % (describe_rc(proc.returncode), clip(proc.stderr)))
        m = re.search(r'block-status calls: (\d+)', proc.stderr)
        calls = int(m.group(1)) if m else -1
        print('     img_block_status calls: %d' % calls)
        diff = map_differences(qemu_rows, parse_json(proc.stdout, 'img_block_status'))
        if diff:
            raise CheckFailed(diff)
        if not 0 < calls <= MAX_BLOCK_STATUS_CALLS:
            raise CheckFailed('%d img_block_status calls to walk 3 data extents' % calls)

    with s.check('1 TiB image: img_pread returns the written bytes around each write'):
        for start, size in WRITES:
            lo = max(0, start - 5 * KiB - 1)
            hi = min(TiB, start + size + 5 * KiB + 1)
            out = s.path('read-at.bin')
            proc = s.api('read-at', path, lo, hi - lo, out, ok_codes=None)
            if proc.returncode != 0:
                raise CheckFailed('%s: %s' % (describe_rc(proc.returncode), clip(proc.stderr)))
            with open(out, 'rb') as f:
                got = f.read()
            want = expected_bytes(random_bytes, pattern, lo, hi - lo)
            if got != want:
                k = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
                raise CheckFailed('bytes differ at guest offset %d (read %d of %d bytes)' % (
                    lo + k, len(got), len(want)))

    with s.check('1 TiB image: imgutil info matches qemu-img info'):
        ours = parse_json(s.imgutil('info', '--output=json', path).stdout, 'imgutil info')
        diffs = info_differences(qemu_info(path), ours)
        if diffs:
            raise CheckFailed('\n'.join(diffs))

    out = s.path('big.raw')
    converted = False
    with s.check('1 TiB image: imgutil convert -O raw is identical (qemu-img compare)'):
        started = time.monotonic()
        s.imgutil('convert', '-O', 'raw', path, out)
        print('     imgutil convert -O raw of 1 TiB with 3 MiB of data took %.2f s' % (
            time.monotonic() - started))
        converted = True
        if os.path.getsize(out) != TiB:
            raise CheckFailed('output has %d bytes, expected %d' % (os.path.getsize(out), TiB))
        started = time.monotonic()
        proc = qemu_img('compare', '-f', 'raw', '-F', 'qcow2', out, path, ok_codes=None)
        print('     (qemu-img compare took %.2f s)' % (time.monotonic() - started))
        if proc.returncode != 0:
            raise CheckFailed('qemu-img compare: %s: %s %s' % (
                describe_rc(proc.returncode), clip(proc.stdout), clip(proc.stderr)))

    if converted:
        with s.check('1 TiB image: the raw output is sparse'):
            allocated = os.stat(out).st_blocks * 512
            data = sum(size for _, size in WRITES) + 2 * 4096
            if allocated > data + SPARSE_SLACK:
                raise CheckFailed('output allocates %d bytes for %d bytes of data' % (
                    allocated, data))
    if os.path.exists(out):
        os.unlink(out)
    s.finish()


if __name__ == '__main__':
    main()
