#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""cloop images made by create_compressed_fs (cloop-utils, when installed) and crafted here
from QEMU's layout (block/cloop.c): read, info and map identical to qemu-img; hostile headers
refused with a message."""

import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'bochs'))
from readonly_check import (CLI, Failure, compare, main, qemu_refuses,  # noqa: E402
                            check_sample, probed_as_qemu_probes, refusals_of_creation, refused,
                            run)

MAGIC = (b'#!/bin/sh\n#V2.0 Format\n'
         b'modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n')
TMP = tempfile.mkdtemp(prefix='cloop-test-')


def content(size, seed):
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.randrange(3)
        n = rng.randrange(1, 5000)
        if kind == 0:
            out += bytes(rng.getrandbits(8) for _ in range(n))
        elif kind == 1:
            out += bytes(n)
        else:
            out += (b'pattern-%d ' % rng.randrange(100)) * (n // 12 + 1)
    return bytes(out[:size])


def craft(name, block_size, data=None, streams=None, n_blocks=None, offsets=None, level=6):
    """A cloop image of `data` (whole blocks), or of the given raw streams and offsets."""
    if streams is None:
        streams = [zlib.compress(data[i:i + block_size], level)
                   for i in range(0, len(data), block_size)]
    n = len(streams) if n_blocks is None else n_blocks
    if offsets is None:
        offsets = [136 + 8 * (len(streams) + 1)]
        for s in streams:
            offsets.append(offsets[-1] + len(s))
    body = MAGIC.ljust(128, b'\0') + struct.pack('>II', block_size, n)
    body += b''.join(struct.pack('>Q', o) for o in offsets) + b''.join(streams)
    path = os.path.join(TMP, name)
    with open(path, 'wb') as f:
        f.write(body)
    return path


def case_crafted_block_sizes():
    for block_size, level in ((512, 9), (4096, 6), (65536, 1), (16384, 0)):
        data = content(block_size * 7, block_size)
        path = craft('crafted-%d.cloop' % block_size, block_size, data, level=level)
        compare(path, 'cloop', data)
    # Probed by its preamble, as qemu-img probes it.
    probed_as_qemu_probes(path)


def case_create_compressed_fs():
    tool = shutil.which('create_compressed_fs')
    if not tool:
        print('note: create_compressed_fs (cloop-utils) is not installed: case skipped')
        return
    for block_size in (4096, 65536):
        data = content(300000, block_size)
        src = os.path.join(TMP, 'input-%d' % block_size)
        with open(src, 'wb') as f:
            f.write(data)
        path = os.path.join(TMP, 'made-%d.cloop' % block_size)
        subprocess.run([tool, '-q', '-B', str(block_size), src, path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        padded = data + bytes(-len(data) % block_size)
        compare(path, 'cloop', padded)


def case_corrupt_stream():
    data = content(4096 * 3, 7)
    streams = [zlib.compress(data[i:i + 4096]) for i in range(0, len(data), 4096)]
    streams[1] = streams[1][:10] + b'\xff' * (len(streams[1]) - 10)
    path = craft('corrupt.cloop', 4096, streams=streams)
    refused(path, 'cloop', ['corrupt'], command='convert')
    qemu_refuses(path, 'cloop', command='convert')


def case_hostile():
    ok = [zlib.compress(bytes(512))]
    cases = [
        ('bs-odd.cloop', craft('bs-odd.cloop', 1000, streams=ok), ['multiple of 512']),
        ('bs-zero.cloop', craft('bs-zero.cloop', 0, streams=ok), ['cannot be zero']),
        ('bs-huge.cloop', craft('bs-huge.cloop', 128 << 20, streams=ok), ['64 MB or less']),
        ('n-huge.cloop', craft('n-huge.cloop', 512, streams=ok, n_blocks=0x20000000),
         ['n_blocks', 'or less']),
        ('n-many.cloop', craft('n-many.cloop', 512, streams=ok, n_blocks=0x10000000),
         ['too many offsets']),
        ('n-past-end.cloop', craft('n-past-end.cloop', 512, streams=ok, n_blocks=100000),
         ['past the end of the file']),
        ('decreasing.cloop', craft('decreasing.cloop', 512, streams=ok, offsets=[200, 100]),
         ['not monotonically increasing']),
        ('stream-huge.cloop', craft('stream-huge.cloop', 512, streams=ok,
                                    offsets=[200, 200 + (129 << 20)]),
         ['invalid compressed block size']),
    ]
    for name, path, words in cases:
        refused(path, 'cloop', [name] + words)
    # qemu-img refuses the same headers (it reads an offset table past the end as zeros).
    for name, path, _ in cases[:5] + cases[6:]:
        qemu_refuses(path, 'cloop')
    short = os.path.join(TMP, 'short.cloop')
    with open(short, 'wb') as f:
        f.write(MAGIC[:60])
    refused(short, 'cloop', ['too short'])


def case_refusals():
    path = craft('plain.cloop', 512, bytes(1024))
    refusals_of_creation('cloop', path, TMP)
    proc = run([CLI, 'check', '-f', 'cloop', path], ok_codes=(63,))
    if b'This image format does not support checks' not in proc.stderr:
        raise Failure('check: %s' % proc.stderr)


def case_probe_short_files():
    # An empty file is raw (qemu-img never probes it); a file that is a prefix of the preamble
    # is cloop, as qemu-img's probe says (and then refused as too short).
    empty = os.path.join(TMP, 'empty.cloop')
    open(empty, 'wb').close()
    probed_as_qemu_probes(empty)
    prefix = os.path.join(TMP, 'prefix.img')
    with open(prefix, 'wb') as f:
        f.write(MAGIC[:20])
    refused(prefix, 'cloop', ['too short'])
    qemu_refuses(prefix, 'cloop')


def case_sample():
    check_sample('simple-pattern.cloop', 'cloop', TMP)


if __name__ == '__main__':
    main([(n, f) for n, f in sorted(globals().items()) if n.startswith('case_')], TMP)
