#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""VDI against qemu-img 7.2.

  1. qemu -> here: dynamic and static images, odd sizes, made by qemu-img/qemu-io (and an odd
     disk size as VBoxManage convertfromraw leaves it), read byte for byte; info, map and check
     (text, JSON, exit code) identical to qemu-img's.
  2. here -> qemu: imgutil create (dynamic, static), convert raw -> vdi, and the public write
     path; qemu-img check clean, qemu-img compare equal. The "Formatting" line and -o help as
     qemu-img prints them.
  3. random writes, zeros, discards, flushes and reopens against a shadow (write_driver).
  4. a kill before every write of an allocating sequence leaves each write old or new, and an
     image qemu-img check finds clean.
  5. hostile headers refused with the reason.

usage: test_vdi.py WRITE_DRIVER KILLPOINT_SO THREAD_WRITER
"""

import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import formattest  # noqa: E402
from formattest import MIB, Failure, Test, hostile, preload_env, run, same  # noqa: E402


def compare_read(t, image):
    """Content, info, map and check of `image` as qemu-img and imgutil give them."""
    a, b = t.path('qemu.raw'), t.path('ours.raw')
    run(['qemu-img', 'convert', '-f', 'vdi', '-O', 'raw', image, a])
    run([t.cli, 'convert', '-f', 'vdi', '-O', 'raw', image, b])
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        if fa.read() != fb.read():
            raise Failure('convert -O raw differs from qemu-img')
    for cmd in (['info', '--output=json'], ['map', '--output=json'], ['check'],
                ['check', '--output=json']):
        q = run(['qemu-img'] + cmd + ['-f', 'vdi', image], ok=None)
        o = run([t.cli] + cmd + ['-f', 'vdi', image], ok=None)
        same(' '.join(cmd) + ' stdout', q.stdout.decode(), o.stdout.decode())
        same(' '.join(cmd) + ' exit code', q.returncode, o.returncode)
        if cmd[0] == 'check':
            same('check findings', q.stderr.decode(), o.stderr.decode())


def qemu_io(image, cmds):
    formattest.qemu_io(image, cmds, 'vdi')


def qemu_made(t, name, size, static, writes):
    image = t.path(name)
    run(['qemu-img', 'create', '-f', 'vdi', '-o', 'static=' + ('on' if static else 'off'),
         image, str(size)])
    if writes:
        qemu_io(image, writes)
    compare_read(t, image)


def odd_disk_size(t):
    """VBoxManage convertfromraw leaves disk sizes that are not whole sectors: rounded up."""
    image = t.path('odd.vdi')
    run(['qemu-img', 'create', '-f', 'vdi', image, '3M'])
    qemu_io(image, ['write -P 0x5a 1M 4k'])
    with open(image, 'r+b') as f:
        f.seek(0x170)
        f.write(struct.pack('<Q', 3 * MIB - 1000))
    compare_read(t, image)


def discarded_block(t):
    """A discarded block (0xfffffffe, as VirtualBox's compaction leaves it) reads as zeros and
    is not counted as allocated."""
    image = t.path('discarded.vdi')
    run(['qemu-img', 'create', '-f', 'vdi', image, '4M'])
    qemu_io(image, ['write -P 1 0 1M', 'write -P 2 2M 1M'])
    with open(image, 'r+b') as f:
        f.seek(0x200 + 4)
        f.write(struct.pack('<I', 0xfffffffe))
        f.seek(0x200 + 8)
        f.write(struct.pack('<I', 1))
        f.seek(0x200)
        f.write(struct.pack('<I', 0xfffffffe))
        f.seek(0x184)
        f.write(struct.pack('<I', 1))
    compare_read(t, image)


def corrupt_map(t):
    """Duplicate and out-of-range map entries and a wrong count: the same findings and exit."""
    image = t.path('corrupt.vdi')
    run(['qemu-img', 'create', '-f', 'vdi', image, '6M'])
    qemu_io(image, ['write -P 1 0 1k', 'write -P 2 2M 1k'])
    with open(image, 'r+b') as f:
        f.seek(0x200 + 4 * 3)
        f.write(struct.pack('<I', 1))
        f.seek(0x200 + 4 * 5)
        f.write(struct.pack('<I', 77))
    compare_read(t, image)
    q = run(['qemu-img', 'check', '-r', 'all', image], ok=None)
    o = run([t.cli, 'check', '-r', 'all', image], ok=None)
    same('check -r all exit code', q.returncode, o.returncode)
    same('check -r all message', q.stderr.decode().replace('qemu-img', ''),
         o.stderr.decode().replace('imgutil', ''))


def qemu_check_and_compare(image, raw):
    run(['qemu-img', 'check', '-f', 'vdi', image])
    out = run(['qemu-img', 'compare', '-f', 'raw', '-F', 'vdi', raw, image]).stdout
    if b'identical' not in out:
        raise Failure('qemu-img compare: %r' % out)


def created_here(t, size, static):
    """imgutil create, then the Formatting line, the header as qemu-img lays it out (but the
    UUIDs), and a write through the CLI's convert both ways."""
    ours, theirs = t.path('c-ours.vdi'), t.path('c-qemu.vdi')
    opt = 'static=' + ('on' if static else 'off')
    o = run([t.cli, 'create', '-f', 'vdi', '-o', opt, ours, str(size)]).stdout.decode()
    q = run(['qemu-img', 'create', '-f', 'vdi', '-o', opt, theirs, str(size)]).stdout.decode()
    same('Formatting line', q.replace(theirs, 'X'), o.replace(ours, 'X'))
    with open(ours, 'rb') as fo, open(theirs, 'rb') as fq:
        a, b = bytearray(fo.read()), bytearray(fq.read())
    a[0x188:0x1a8] = b[0x188:0x1a8]  # image and last-snapshot UUIDs are random
    same('created file (%d, %s)' % (size, opt), bytes(b), bytes(a))
    raw = t.path('c.raw')
    with open(raw, 'wb') as f:
        f.write(os.urandom(size))
        if size > 2 * MIB:
            f.seek(MIB)
            f.write(bytes(MIB))  # a zero block stays unallocated
    conv = t.path('conv.vdi')
    run([t.cli, 'convert', '-f', 'raw', '-O', 'vdi', '-o', opt, raw, conv])
    qemu_check_and_compare(conv, raw)
    compare_read(t, conv)


def options_help(t):
    q = run(['qemu-img', 'create', '-f', 'vdi', '-o', 'help']).stdout.decode()
    o = run([t.cli, 'create', '-f', 'vdi', '-o', 'help']).stdout.decode()
    same('-o help', q.split('\n\n')[0].strip(), o.split('\n\n')[0].strip())
    # qemu 7.2's largest VDI image: 0x1fffff80 blocks of 1 MiB.
    for size in ('562949819204096', '1025T'):
        args = ['create', '-f', 'vdi', t.path('big.vdi'), size]
        q = run(['qemu-img'] + args, ok=None)
        o = run([t.cli] + args, ok=None)
        same('create %s' % size, (q.returncode, q.stderr.decode().replace('qemu-img', '')),
             (o.returncode, o.stderr.decode().replace('imgutil', '')))
    open(t.path('x'), 'wb').close()
    args = ['create', '-f', 'vdi', '-b', 'x', '-F', 'raw', t.path('b.vdi'), '1M']
    q = run(['qemu-img'] + args, ok=None)
    o = run([t.cli] + args, ok=None)
    same('backing file refused', q.stderr.decode().replace('qemu-img', ''),
         o.stderr.decode().replace('imgutil', ''))


def property_runs(t):
    for seq, (size, opts) in enumerate([(9 * MIB + 512, 'static=off'), (5 * MIB, 'static=on'),
                                         (7 * MIB, ''), (3 * MIB + 4096, 'static=off')]):
        image, shadow = t.path('p%d.vdi' % seq), t.path('p%d.raw' % seq)
        run([t.driver, 'create', image, 'vdi', str(size)] + ([opts] if opts else []))
        run([t.driver, 'run', image, '-f', 'vdi', '--random', str(1000 + seq), '--ops', '40',
             '--cluster', str(MIB), '--no-resize', '--discard', 'hint', '--shadow-out', shadow])
        qemu_check_and_compare(image, shadow)


# Writes into new blocks (each an allocation) and into allocated ones, with flushes between.
KILL_SCRIPT = [
    'write 1048576 4096 11',
    'write 3145728 1048576 12',
    'flush',
    'write 100 700 13',
    'write 5242880 300000 14',
    'write 2097152 1024 15',
    'flush',
    'write 6291456 1048576 16',
]


def kill_runs(t):
    base = t.path('k-base.vdi')
    run(['qemu-img', 'create', '-f', 'vdi', base, '8M'])
    qemu_io(base, ['write -P 0x77 0 8k'])
    start = t.path('k-start.raw')
    run(['qemu-img', 'convert', '-O', 'raw', base, start])
    script = '\n'.join(KILL_SCRIPT) + '\n'
    done = t.path('k-done.vdi')
    shutil.copy(base, done)
    counts = t.path('k-count')
    env = preload_env(t.killpoint, KILLPOINT_COUNT=counts)
    run([t.driver, 'run', done, '-f', 'vdi', '--shadow-in', start, '--script', '-'], env=env,
        input=script.encode())
    final = t.path('k-final.raw')
    run(['qemu-img', 'convert', '-O', 'raw', done, final])
    with open(counts) as f:
        writes = len(f.read().split())
    with open(start, 'rb') as f:
        old = f.read()
    with open(final, 'rb') as f:
        new = f.read()
    regions = [tuple(int(w) for w in line.split()[1:3]) for line in KILL_SCRIPT
               if line.startswith('write')]
    if writes < len(regions):
        raise Failure('only %d writes counted' % writes)
    for n in range(1, writes + 1):
        image = t.path('k.vdi')
        shutil.copy(base, image)
        env = preload_env(t.killpoint, KILLPOINT_AT=n)
        run([t.driver, 'run', image, '-f', 'vdi', '--shadow-in', start, '--script', '-'],
            env=env, input=script.encode(), ok=None)
        proc = run(['qemu-img', 'check', '-f', 'vdi', image], ok=None)
        if proc.returncode != 0:
            raise Failure('killed before write %d: qemu-img check exited %d: %s' % (
                n, proc.returncode, proc.stderr.decode()))
        got_path = t.path('k.raw')
        run(['qemu-img', 'convert', '-O', 'raw', image, got_path])
        with open(got_path, 'rb') as f:
            got = f.read()
        covered = bytearray(len(old))
        for off, length in regions:
            piece = got[off:off + length]
            if piece not in (old[off:off + length], new[off:off + length]):
                raise Failure('killed before write %d: the write at %d is neither old nor new'
                              % (n, off))
            covered[off:off + length] = b'\x01' * length
        for i in range(0, len(old), 4096):
            if not any(covered[i:i + 4096]) and got[i:i + 4096] != old[i:i + 4096]:
                raise Failure('killed before write %d: untouched bytes at %d changed' % (n, i))


def thread_runs(t):
    """Four threads on one handle racing to allocate the same clusters (thread_writer)."""
    for seq, (size, opts, cluster) in enumerate([(64 * MIB, 'static=off', MIB), (24 * MIB, 'static=on', MIB)]):
        image, expected = t.path('t%d.vdi' % seq), t.path('t%d.raw' % seq)
        run([t.driver, 'create', image, 'vdi', str(size), opts])
        run([t.threads, image, str(cluster), str(300 + seq), expected, '-f', 'vdi', '--threads',
             '4'])
        run(['qemu-img', 'check', '-f', 'vdi', image])
        out = run(['qemu-img', 'compare', '-f', 'raw', '-F', 'vdi', expected, image]).stdout
        if b'identical' not in out:
            raise Failure('qemu-img compare: %r' % out)


def header(disk_size=4 * MIB, blocks=4, block_size=MIB, bmap=0x200, data=0x400,
           sector=512, version=0x00010001, parent=False):
    h = bytearray(512)
    h[0:4] = b'<<< '
    struct.pack_into('<IIII', h, 0x40, 0xbeda107f, version, 0x180, 1)
    struct.pack_into('<II', h, 0x154, bmap, data)
    struct.pack_into('<I', h, 0x168, sector)
    struct.pack_into('<QIIII', h, 0x170, disk_size, block_size, 0, blocks, 0)
    if parent:
        h[0x1b8] = 1
    return bytes(h)


HOSTILE = [
    ('truncated header', header()[:300], 'ends inside the header'),
    ('absurd block size', header(block_size=1 << 31) + b'\xff' * 512, 'block size'),
    ('map past the end', header(blocks=0x1fffff80, disk_size=1 << 40) + b'\xff' * 512,
     'past the end of the file'),
    ('too many blocks', header(blocks=0x1fffff81, disk_size=1 << 40) + b'\xff' * 512,
     'too many blocks'),
    ('size past the maximum', header(disk_size=1 << 62) + b'\xff' * 512, 'image size'),
    ('size past the map', header(disk_size=5 * MIB) + b'\xff' * 512, 'has room for'),
    ('unaligned map', header(bmap=0x201) + b'\xff' * 512, 'unaligned block map'),
    ('sector size', header(sector=4096) + b'\xff' * 512, 'sector size'),
    ('version', header(version=0x00020000) + b'\xff' * 512, 'version'),
    ('differencing image', header(parent=True) + b'\xff' * 512, 'parent UUID'),
]


def main():
    t = Test(sys.argv, 'vdi')
    t.check('qemu dynamic', qemu_made, t, 'd.vdi', 5 * MIB,
            False, ['write -P 0xaa 1M 4k', 'write -P 0xbb 3M 1100k', 'write -z 2M 4k'])
    t.check('qemu static odd size', qemu_made, t, 's.vdi', 3000000, True,
            ['write -P 0xcc 0 64k', 'write -P 0xdd 2M 10k'])
    t.check('qemu empty', qemu_made, t, 'e.vdi', 0, False, [])
    t.check('qemu one sector', qemu_made, t, 'o.vdi', 512, False, ['write -P 9 0 512'])
    t.check('qemu sparse large', qemu_made, t, 'l.vdi', 64 * MIB, False,
            ['write -P 1 63M 1M', 'write -P 2 0 1', 'write -P 3 30M 2M'])
    t.check('odd disk size', odd_disk_size, t)
    t.check('discarded block', discarded_block, t)
    t.check('corrupt map', corrupt_map, t)
    for size in (MIB, 3 * MIB + 512, 5 * MIB):
        for static in (False, True):
            t.check('created %d static=%s' % (size, static), created_here, t, size, static)
    t.check('options', options_help, t)
    t.check('property', property_runs, t)
    t.check('threads', thread_runs, t)
    t.check('kill', kill_runs, t)
    for label, data, words in HOSTILE:
        t.check('hostile ' + label, hostile, t, label, data, words,
                label == 'map past the end')
    return t.finish()


if __name__ == '__main__':
    sys.exit(main())
