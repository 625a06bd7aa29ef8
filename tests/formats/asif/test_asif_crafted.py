#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""ASIF images laid out in the test by the independent writer (asif_ref.py), from the
published description: every known state read here byte for byte (imgutil convert -O raw,
map), other geometries, the directory with the higher sequence number in force; and hostile
images (states not characterised, directories and chunk numbers pointing anywhere, absurd
sizes, truncation) refused with exit 1 and a message naming the problem, within bounded memory.

Writes into crafted images go through write_driver (checked against a shadow after every
operation): a sector not yet written in a partly written chunk whose bytes in the file are
not zeros (a write never linked) must read as zeros around the new bytes.

usage: test_asif_crafted.py WRITE_DRIVER (the CLI from IMGUTIL_CLI or IMGUTIL_BUILD_ROOT)
"""

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import asif_ref  # noqa: E402

KIB, MIB = 1024, 1 << 20
FULL, UNMAPPED, PARTIAL = 1 << 62, 2 << 62, 3 << 62
# Address space the CLI may use on a hostile image (not under the sanitizers).
MEMORY_LIMIT = 512 * MIB

BUILD = os.environ.get('IMGUTIL_BUILD_ROOT', os.path.join(HERE, '..', '..', '..', 'build'))
CLI = os.environ.get('IMGUTIL_CLI') or os.path.join(BUILD, 'tools', 'imgutil')


def sanitized():
    try:
        with open(os.path.join(BUILD, 'meson-info', 'intro-buildoptions.json')) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        return True
    return any(o['name'] == 'b_sanitize' and o['value'] not in ('none', '', [])
               for o in opts) or 'LD_PRELOAD' in os.environ


LIMIT_MEMORY = not sanitized()


def limit_memory():
    if LIMIT_MEMORY:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def cli(*args):
    return subprocess.run([CLI] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=limit_memory)


class Suite:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix='imgutil-asif-crafted-')
        self.failed = []
        self.passed = 0

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write(self, name, data):
        # Sparse: the images are mostly zeros.
        block = 64 * KIB
        zeros = bytes(block)
        with open(self.path(name), 'wb') as f:
            for at in range(0, len(data), block):
                piece = data[at:at + block]
                if piece != zeros[:len(piece)]:
                    f.seek(at)
                    f.write(piece)
            f.truncate(len(data))
        return self.path(name)

    def ok(self, label, cond, detail=''):
        if cond:
            self.passed += 1
            print('ok   %s' % label, flush=True)
        else:
            self.failed.append(label)
            print('FAIL %s\n     %s' % (label, detail), flush=True)

    def read_here(self, path):
        out = path + '.raw'
        proc = cli('convert', '-f', 'asif', '-O', 'raw', path, out)
        if proc.returncode != 0:
            return None, proc.stderr
        with open(out, 'rb') as f:
            return f.read(), ''

    def expect_read(self, label, data, want):
        path = self.write(label.replace(' ', '_') + '.asif', data)
        got, err = self.read_here(path)
        ref = asif_ref.Image(data).read_all()
        self.ok(label, got == want and ref == want,
                'imgutil: %s; independent reader agrees with the expectation: %s' %
                (err or ('%d bytes, equal: %s' % (len(got), got == want)), ref == want))
        return path

    def expect_refused(self, label, data, words, command='convert'):
        path = self.write('bad_' + label.replace(' ', '_') + '.asif', data)
        args = ['info', '-f', 'asif', path] if command == 'info' else \
            ['convert', '-f', 'asif', '-O', 'raw', path, path + '.raw']
        proc = cli(*args)
        self.ok('refused: ' + label,
                proc.returncode == 1 and words in proc.stderr and 'asif' in proc.stderr,
                'exit %d, stderr %r (wanted %r)' % (proc.returncode, proc.stderr.strip(), words))

    def finish(self):
        if self.failed:
            print('%d failing: %s\n(files kept in %s)' % (len(self.failed), self.failed, self.tmp))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print('%d passed, %d failed' % (self.passed, len(self.failed)))
        sys.exit(1 if self.failed else 0)


def pattern(byte, n):
    return bytes([byte]) * n


def known_states(s):
    """00 never written, 01 whole, 11 with bitmap sectors 00 and 01, 10 unmapped."""
    w = asif_ref.Writer(8 * MIB)
    w.put(0, 0, pattern(0xA1, MIB))
    w.put(2, 4096, pattern(0xB2, 1000), partial=True)
    w.put(2, 64 * KIB, pattern(0xB3, 512), partial=True)
    w.put(3, 0, pattern(0xC3, MIB))
    w.set_entry(3, UNMAPPED)  # discarded: its old chunk stays in the file, unreferenced
    w.put(7, MIB - 512, pattern(0xD4, 512), partial=True)
    want = bytearray(8 * MIB)
    want[0:MIB] = pattern(0xA1, MIB)
    want[2 * MIB + 4096:2 * MIB + 5096] = pattern(0xB2, 1000)
    want[2 * MIB + 64 * KIB:2 * MIB + 64 * KIB + 512] = pattern(0xB3, 512)
    want[8 * MIB - 512:] = pattern(0xD4, 512)
    path = s.expect_read('known states 00 01 10 11', w.build(), bytes(want))
    extents = json.loads(cli('map', '--output=json', '-f', 'asif', path).stdout or '[]')
    kinds = [(e['start'], e['length'], e['data'], e['zero']) for e in extents]
    s.ok('map of the known states', kinds[:5] == [
        (0, MIB, True, False), (MIB, MIB + 4096, False, True),
        (2 * MIB + 4096, 1024, True, False), (2 * MIB + 5120, 64 * KIB - 5120, False, True),
        (2 * MIB + 64 * KIB, 512, True, False)], repr(kinds))
    info = json.loads(cli('info', '--output=json', path).stdout or '{}')
    stable = asif_ref.Image(w.build()).metadata()['internal metadata']['stable uuid']
    s.ok('info of a crafted image', info.get('format') == 'asif' and
         info['format-specific']['data'].get('stable-uuid') == stable and
         info['virtual-size'] == 8 * MIB, repr(info))

    # Writes into a crafted image: the partly written chunk gains sectors, a whole chunk.
    proc = cli('convert', '-f', 'raw', '-O', 'asif', path + '.raw', path + '.copy.asif')
    s.ok('a crafted image converts back to asif', proc.returncode == 0, proc.stderr)


def other_geometries(s):
    # 48 KiB chunks: 2 groups of 2048 chunks a table; data at group and table edges.
    cs = 48 * KIB
    size = 4200 * cs
    w = asif_ref.Writer(size, chunk_size=cs, max_sectors=3 * 4096 * 96)
    want = bytearray(size)
    for chunk, byte in ((0, 1), (2047, 2), (2048, 3), (4095, 4), (4096, 5), (4199, 6)):
        w.put(chunk, 0, pattern(byte, cs))
        want[chunk * cs:(chunk + 1) * cs] = pattern(byte, cs)
    w.put(4097, 512, pattern(7, 700), partial=True)
    want[4097 * cs + 512:4097 * cs + 1212] = pattern(7, 700)
    s.expect_read('48 KiB chunks across groups and tables', w.build(), bytes(want))

    # 4096-byte blocks, 2 MiB chunks, no metadata.
    w = asif_ref.Writer(16 * MIB, block_size=4096, chunk_size=2 * MIB, max_sectors=1 << 20,
                        meta=False)
    w.put(1, 8192, pattern(9, 5000), partial=True)
    want = bytearray(16 * MIB)
    want[2 * MIB + 8192:2 * MIB + 13192] = pattern(9, 5000)
    path = s.expect_read('4 KiB blocks, 2 MiB chunks, no metadata', w.build(), bytes(want))
    info = json.loads(cli('info', '--output=json', path).stdout or '{}')
    data = info.get('format-specific', {}).get('data', {})
    s.ok('info without metadata', 'stable-uuid' not in data and data.get('block-size') == 4096,
         repr(info))


def sequence_numbers(s):
    """Two directories naming different tables: the higher sequence number wins."""
    for newer in (0, 1):
        w = asif_ref.Writer(4 * MIB)
        w.put(0, 0, pattern(0xAA, MIB))
        table_a = w.directory[0]
        # A second table for directory `newer`, naming other data.
        table_b = w.take()
        host_b = w.take()
        w.chunks[host_b][:] = pattern(0xBB, MIB)
        struct.pack_into('>Q', w.chunks[table_b], 0, FULL | host_b)
        data = bytearray(w.build())
        w_dirs = w.dir_offsets
        struct.pack_into('>Q', data, w_dirs[newer], 7)
        struct.pack_into('>Q', data, w_dirs[1 - newer], 6)
        struct.pack_into('>Q', data, w_dirs[newer] + 8, table_b)
        struct.pack_into('>Q', data, w_dirs[1 - newer] + 8, table_a)
        want = pattern(0xBB, MIB) + bytes(3 * MIB)
        s.expect_read('directory %d has the higher sequence number' % newer, bytes(data), want)


def header_patch(data, fmt, off, value):
    data = bytearray(data)
    struct.pack_into(fmt, data, off, value)
    return bytes(data)


def hostile(s):
    w = asif_ref.Writer(4 * MIB)
    w.put(0, 0, pattern(1, MIB))
    good = w.build()
    n_chunks = len(good) // MIB
    s.expect_read('the unpatched image', good, pattern(1, MIB) + bytes(3 * MIB))

    def with_entry(value=None, bitmap=None, chunk=1, partial_first=False):
        w = asif_ref.Writer(4 * MIB)
        w.put(0, 0, pattern(1, MIB))
        if partial_first:
            w.put(chunk, 0, pattern(2, 512), partial=True)
        w.set_entry(chunk, value, bitmap)
        return w.build()

    s.expect_refused('status 10 with a chunk number', with_entry(UNMAPPED | 3),
                     'status 10 with chunk number 3')
    s.expect_refused('status 00 with a chunk number', with_entry(3), 'status 00 with chunk')
    for state in (2, 3):
        w = asif_ref.Writer(4 * MIB)
        w.put(1, 0, pattern(2, 1024), partial=True, state=state)
        s.expect_refused('bitmap state %d%d' % (state >> 1, state & 1), w.build(),
                         'bitmap state %d%d' % (state >> 1, state & 1))
    s.expect_refused('status 11 without a bitmap chunk', with_entry(PARTIAL | 2, 0),
                     'no bitmap chunk')
    s.expect_refused('data chunk past the end', with_entry(FULL | 10 ** 6),
                     'past the end of the file')
    s.expect_refused('data chunk 55-bit maximum', with_entry(FULL | asif_ref.INDEX_MASK),
                     'past the end of the file')
    s.expect_refused('data chunk 0 (the header)', with_entry(FULL | 0), 'chunk 0')
    s.expect_refused('bitmap chunk past the end',
                     with_entry(PARTIAL | 2, 1 << 40), 'past the end of the file')
    s.expect_refused('bitmap entry with flag bits',
                     with_entry(PARTIAL | 2, FULL | 3), 'flag bits')

    d0 = struct.unpack_from('>Q', good, 0x10)[0]
    bad = header_patch(good, '>Q', d0 + 8, 1 << 50)
    s.expect_refused('directory entry past the end', bad, 'past the end of the file')
    bad = header_patch(good, '>Q', d0 + 8, FULL | 1)
    s.expect_refused('directory entry with flag bits', bad, 'flag bits')
    bad = header_patch(good, '>Q', d0 + 8, 0)  # table chunk 0 is "no table": reads zeros
    s.expect_read('directory entry 0 reads as zeros', bad, bytes(4 * MIB))

    for label, off, fmt, value, words in (
            ('directory 0 past the end', 0x10, '>Q', len(good), 'directory 0'),
            ('directory 1 far away', 0x18, '>Q', 1 << 62, 'directory 1'),
            ('directory inside the header', 0x10, '>Q', 8, 'directory 0'),
            ('directories overlap', 0x18, '>Q', 0x208, 'overlap'),
            ('chunk size 0', 0x40, '>I', 0, 'chunk size'),
            ('chunk size not a multiple of the block size', 0x40, '>I', MIB + 100, 'chunk size'),
            ('chunk size 2 GiB', 0x40, '>I', 1 << 31, 'chunk size'),
            ('chunk size too small for a group', 0x40, '>I', 8192, 'too small'),
            ('block size 0', 0x44, '>H', 0, 'block size'),
            ('block size 100', 0x44, '>H', 100, 'block size'),
            ('version 2', 0x04, '>I', 2, 'header version 2'),
            ('segment count 1', 0x46, '>H', 1, 'segment count'),
            ('header size 16', 0x08, '>I', 16, 'header size'),
            ('sector count above the maximum', 0x30, '>Q', (1 << 43) + 1, 'more than its maximum'),
            ('maximum size 2^62 sectors', 0x38, '>Q', 1 << 62, 'too large'),
            ('maximum size needing a huge directory', 0x38, '>Q', (1 << 62) // 512,
             'directory entries'),
            ('metadata chunk past the maximum', 0x48, '>Q', 1 << 40, 'metadata')):
        s.expect_refused(label, header_patch(good, fmt, off, value), words, command='info')
    s.expect_refused('truncated to 64 bytes', good[:64], 'too short', command='info')
    s.expect_refused('truncated inside the directories', good[:0x1000], 'directory 0',
                     command='info')
    # A table chunk the file was cut inside of: the chunk is there in part, the rest zeros.
    s.expect_refused('truncated before the data', good[:(n_chunks - 1) * MIB],
                     'past the end of the file')

    # Unknown header flags: readable, never written.
    flagged = header_patch(good, '>I', 0x0c, 0x80)
    path = s.expect_read('unknown header flags read', flagged, pattern(1, MIB) + bytes(3 * MIB))
    proc = cli('resize', '-f', 'asif', path, '8M')
    s.ok('unknown header flags: writing refused',
         proc.returncode == 1 and 'header flags 0x00000080' in proc.stderr, proc.stderr)


def stale_sectors(s, driver):
    w = asif_ref.Writer(4 * MIB)
    host = w.put(1, 0, pattern(0x10, 512), partial=True)
    # Sectors 1..3 of the chunk hold bytes no bitmap bit vouches for.
    w.chunks[host][512:2048] = pattern(0xEE, 1536)
    data = w.build()
    path = s.write('stale.asif', data)
    shadow = asif_ref.Image(data).read_all()
    s.write('stale.shadow', shadow)
    script = 'write %d 100 5\nwrite %d 512 6\nwrite %d 3000 7\n' % (
        MIB + 700, MIB + 1024, 2 * MIB - 1000)
    proc = subprocess.run([driver, 'run', path, '-f', 'asif', '--script', '-', '--cluster',
                           str(MIB), '--shadow-in', s.path('stale.shadow'), '--shadow-out',
                           s.path('stale.out')], input=script, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    with open(path, 'rb') as f:
        img = asif_ref.Image(f.read())
    with open(s.path('stale.out'), 'rb') if proc.returncode == 0 else open(path, 'rb') as f:
        want = f.read()
    s.ok('writes into a partly written chunk clear the stale bytes of their sectors',
         proc.returncode == 0 and img.read_all() == want, proc.stderr.strip())


def main():
    if len(sys.argv) < 2:
        print('usage: test_asif_crafted.py WRITE_DRIVER')
        sys.exit(2)
    if not os.path.exists(CLI):
        print('SKIP: imgutil not built (%s)' % CLI)
        sys.exit(77)
    s = Suite()
    known_states(s)
    other_geometries(s)
    sequence_numbers(s)
    hostile(s)
    stale_sectors(s, os.path.abspath(sys.argv[1]))
    s.finish()


if __name__ == '__main__':
    main()
