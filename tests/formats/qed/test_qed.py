#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""QED against qemu-img 7.2.

  1. qemu -> here: images made by qemu-img/qemu-io (cluster and table sizes, zero clusters,
     raw/qcow2/qed backing files, odd sizes) read byte for byte; info, map and check (text,
     JSON, exit code) identical. An image left with need-check and bad offsets: check, check -r
     all and the repair a read-write open makes give qemu's counts and qemu's bytes.
  2. here -> qemu: imgutil create gives qemu-img create's file byte for byte (and its
     Formatting line, -o help and refusals); convert raw -> qed and grow pass qemu-img check
     and compare.
  3. random writes, zeros, discards, flushes and reopens against a shadow, with and without a
     backing file (write_driver).
  4. a kill before every write of an allocating sequence (new L2 tables, copy-on-write from a
     backing file) leaves each write old or new, and qemu-img check finds no corruption.
  5. hostile headers refused with the reason.

usage: test_qed.py WRITE_DRIVER KILLPOINT_SO THREAD_WRITER
"""

import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import formattest  # noqa: E402
from formattest import (MIB, Failure, Test, digest, hostile, preload_env, run,  # noqa: E402
                        same)


def compare_read(t, image):
    """Content, info, map and check of `image` as qemu-img and imgutil give them."""
    a, b = t.path('qemu.raw'), t.path('ours.raw')
    run(['qemu-img', 'convert', '-U', '-O', 'raw', image, a])
    run([t.cli, 'convert', '-O', 'raw', image, b])
    if digest(a) != digest(b):
        raise Failure('convert -O raw differs from qemu-img')
    for cmd in (['info', '--output=json'], ['info', '--output=json', '--backing-chain'],
                ['map', '--output=json'], ['check'], ['check', '--output=json']):
        q = run(['qemu-img'] + cmd + [image], ok=None, cwd=t.dir)
        o = run([t.cli] + cmd + [image], ok=None, cwd=t.dir)
        same(' '.join(cmd) + ' stdout', q.stdout.decode(), o.stdout.decode())
        same(' '.join(cmd) + ' exit code', q.returncode, o.returncode)


def qemu_io(image, cmds, fmt='qed'):
    formattest.qemu_io(image, cmds, fmt)


def qemu_made(t, name, size, opts, writes, backing=None):
    image = t.path(name)
    args = ['qemu-img', 'create', '-f', 'qed']
    if opts:
        args += ['-o', opts]
    if backing:
        args += ['-b', backing[0], '-F', backing[1]]
    run(args + [image, str(size)], cwd=t.dir)
    if writes:
        qemu_io(image, writes)
    compare_read(t, image)


def make_backings(t):
    raw = t.path('base.raw')
    with open(raw, 'wb') as f:
        f.write(os.urandom(3 * MIB))
    run(['qemu-img', 'create', '-f', 'qcow2', t.path('base.qcow2'), '4M'])
    qemu_io(t.path('base.qcow2'), ['write -P 0x42 0 2M'], fmt='qcow2')
    run(['qemu-img', 'create', '-f', 'qed', '-o', 'cluster_size=4096,table_size=2',
         t.path('base.qed'), '4M'])
    qemu_io(t.path('base.qed'), ['write -P 0x43 1M 1M', 'write -z 0 64k'])


WRITES = ['write -P 0x11 0 3k', 'write -z 1M 128k', 'write -P 0x22 5M 100k',
          'write -P 0x33 6143k 1k', 'write -z 2M 5k']


def damaged(t):
    """Need-check set, an offset past the end, an unaligned one and a cluster used twice:
    check, check -r all and the repair of a read-write open as qemu does them."""
    base = t.path('dmg.qed')
    run(['qemu-img', 'create', '-f', 'qed', base, '10M'])
    qemu_io(base, ['write -P 1 0 4k', 'write -P 2 5M 100k', 'write -z 1M 64k'])
    with open(base, 'r+b') as f:
        f.seek(0x10000)
        l2 = struct.unpack('<Q', f.read(8))[0]
        for index, value in ((3, 0x7000000), (4, 0x50000), (5, 0x50001)):
            f.seek(l2 + 8 * index)
            f.write(struct.pack('<Q', value))
        f.seek(16)
        f.write(struct.pack('<Q', 2))
    # Reads of the bad clusters fail in both; info and check agree.
    for cmd in (['info', '--output=json'], ['map', '--output=json']):
        q = run(['qemu-img'] + cmd + [base], ok=None)
        o = run([t.cli] + cmd + [base], ok=None)
        if cmd[0] == 'info':
            same(' '.join(cmd), q.stdout.decode(), o.stdout.decode())
        elif q.returncode == 0 or o.returncode == 0:
            raise Failure('map over invalid offsets: qemu %d, ours %d' % (q.returncode,
                                                                          o.returncode))
    compare_read_check_only(t, base)
    results = {}
    for who, cmd in (('qemu', ['qemu-img']), ('ours', [t.cli])):
        image = t.path('dmg-%s.qed' % who)
        shutil.copy(base, image)
        proc = run(cmd + ['check', '-r', 'all', image], ok=None)
        results[who] = (proc.returncode, proc.stdout.decode(), digest(image))
    same('check -r all (exit, output, file)', results['qemu'], results['ours'])
    # A read-write open repairs what it can, as QEMU's open does.
    theirs, ours = t.path('open-qemu.qed'), t.path('open-ours.qed')
    shutil.copy(base, theirs)
    shutil.copy(base, ours)
    qemu_io(theirs, ['read 0 4k'])
    run([t.driver, 'run', ours, '-f', 'qed', '--script', '-'], input=b'flush\n', ok=None)
    same('file after a read-write open', digest(theirs), digest(ours))


def clean_need_check(t):
    """need-check on a sound image: a read-write open clears it, and nothing else changes."""
    image = t.path('nc.qed')
    run(['qemu-img', 'create', '-f', 'qed', image, '4M'])
    qemu_io(image, ['write -P 5 0 64k'])
    with open(image, 'r+b') as f:
        f.seek(16)
        f.write(struct.pack('<Q', 2))
    compare_read(t, image)
    theirs = t.path('nc-qemu.qed')
    shutil.copy(image, theirs)
    qemu_io(theirs, ['read 0 512'])
    run([t.driver, 'run', image, '-f', 'qed', '--shadow-in', t.path('qemu.raw'), '--script',
         '-'], input=b'verify\n')
    same('file after a read-write open', digest(theirs), digest(image))


def created_here(t, size, opts, backing=None):
    ours, theirs = t.path('c-ours.qed'), t.path('c-qemu.qed')
    extra = ['-o', opts] if opts else []
    if backing:
        extra += ['-b', backing[0], '-F', backing[1]]
    o = run([t.cli, 'create', '-f', 'qed'] + extra + [ours, str(size)], cwd=t.dir)
    q = run(['qemu-img', 'create', '-f', 'qed'] + extra + [theirs, str(size)], cwd=t.dir)
    same('Formatting line', q.stdout.decode().replace(theirs, 'X'),
         o.stdout.decode().replace(ours, 'X'))
    same('created file', digest(theirs), digest(ours))
    compare_read(t, ours)


def converted_here(t, opts):
    raw = t.path('cv.raw')
    with open(raw, 'wb') as f:
        f.write(os.urandom(5 * MIB + 4096))
        f.seek(MIB)
        f.write(bytes(MIB))
    image = t.path('cv.qed')
    run([t.cli, 'convert', '-f', 'raw', '-O', 'qed', '-o', opts, raw, image])
    run(['qemu-img', 'check', image])
    out = run(['qemu-img', 'compare', '-f', 'raw', raw, image]).stdout
    if b'identical' not in out:
        raise Failure('qemu-img compare: %r' % out)
    compare_read(t, image)
    # And back: qed -> raw through imgutil equals the source.
    back = t.path('cv-back.raw')
    run([t.cli, 'convert', '-O', 'raw', image, back])
    same('qed -> raw', digest(raw), digest(back))


def options(t):
    q = run(['qemu-img', 'create', '-f', 'qed', '-o', 'help']).stdout.decode()
    o = run([t.cli, 'create', '-f', 'qed', '-o', 'help']).stdout.decode()
    same('-o help', q.split('\n\n')[0].strip(), o.split('\n\n')[0].strip())
    for opts, size in (('cluster_size=1000', '1M'), ('table_size=3', '1M'),
                       ('cluster_size=4096,table_size=1', '1P')):
        q = run(['qemu-img', 'create', '-f', 'qed', '-o', opts, t.path('bad.qed'), size],
                ok=None)
        o = run([t.cli, 'create', '-f', 'qed', '-o', opts, t.path('bad.qed'), size], ok=None)
        same('refusal of %s' % opts, (q.returncode, q.stderr.decode().replace('qemu-img', '')),
             (o.returncode, o.stderr.decode().replace('imgutil', '')))


def resize(t):
    image = t.path('rs.qed')
    run([t.cli, 'create', '-f', 'qed', image, '3M'])
    qemu_io(image, ['write -P 7 2M 1M'])
    run([t.cli, 'resize', image, '7M'])
    run(['qemu-img', 'check', image])
    compare_read(t, image)
    for tool in ('qemu-img', t.cli):
        proc = run([tool, 'resize', '--shrink', image, '1M'], ok=None)
        if proc.returncode == 0:
            raise Failure('%s shrank a QED image' % tool)
    info = run(['qemu-img', 'info', '--output=json', image]).stdout
    if b'"virtual-size": 7340032' not in info:
        raise Failure('size after refused shrink: %r' % info)


def property_runs(t):
    configs = [(9 * MIB + 512, 'cluster_size=4096,table_size=2', None),
               (6 * MIB, '', None),
               (5 * MIB, 'cluster_size=4096,table_size=4', 'raw'),
               (4 * MIB, 'cluster_size=65536,table_size=2', 'qed')]
    for seq, (size, opts, backing) in enumerate(configs):
        image, shadow = t.path('p%d.qed' % seq), t.path('p%d.raw' % seq)
        cluster = 4096 if 'cluster_size=4096' in opts else 65536
        create = ['qemu-img', 'create', '-f', 'qed'] + (['-o', opts] if opts else [])
        extra = []
        if backing:
            base = t.path('base.' + backing)
            create += ['-b', base, '-F', backing]
            view = t.path('p%d-base.raw' % seq)
            run(['qemu-img', 'convert', '-O', 'raw', base, view])
            with open(view, 'r+b') as f:
                f.truncate(size)
            extra = ['--shadow-in', view, '--backing-raw', view]
        if backing:
            run(create + [image, str(size)])
        else:
            run([t.driver, 'create', image, 'qed', str(size)] + ([opts] if opts else []))
        run([t.driver, 'run', image, '-f', 'qed', '--random', str(2000 + seq), '--ops', '40',
             '--cluster', str(cluster), '--no-resize', '--discard', 'hint', '--shadow-out',
             shadow] + extra)
        run(['qemu-img', 'check', image])
        out = run(['qemu-img', 'compare', '-f', 'raw', '-F', 'qed', shadow, image]).stdout
        if b'identical' not in out:
            raise Failure('qemu-img compare: %r' % out)


# New clusters in new and existing L2 tables, partial clusters over a backing file, zeros.
KILL_SCRIPT = [
    'write 4096 8192 11',
    'write 5242880 20000 12',
    'flush',
    'write 9437184 4096 14',
    'zero 12582912 8192',
    'write 2097152 1024 15',
    'flush',
    'write 14680064 65536 16',
]


def kill_runs(t, backing):
    base = t.path('k-base.qed')
    args = ['qemu-img', 'create', '-f', 'qed', '-o', 'cluster_size=4096,table_size=2']
    if backing:
        args += ['-b', t.path('base.raw'), '-F', 'raw']
    run(args + [base, '16M'])
    qemu_io(base, ['write -P 0x77 0 8k'])
    start = t.path('k-start.raw')
    run(['qemu-img', 'convert', '-O', 'raw', base, start])
    script = ('\n'.join(KILL_SCRIPT) + '\n').encode()
    done = t.path('k-done.qed')
    shutil.copy(base, done)
    counts = t.path('k-count')
    env = preload_env(t.killpoint, KILLPOINT_COUNT=counts)
    drive = [t.driver, 'run', None, '-f', 'qed', '--shadow-in', start, '--script', '-']
    if backing:
        drive[-2:-2] = ['--backing-raw', start]
    drive[2] = done
    run(drive, env=env, input=script)
    final = t.path('k-final.raw')
    run(['qemu-img', 'convert', '-O', 'raw', done, final])
    with open(counts) as f:
        writes = len(f.read().split())
    with open(start, 'rb') as f:
        old = f.read()
    with open(final, 'rb') as f:
        new = f.read()
    regions = [tuple(int(w) for w in line.split()[1:3]) for line in KILL_SCRIPT
               if line.split()[0] in ('write', 'zero')]
    if writes < len(regions):
        raise Failure('only %d writes counted' % writes)
    for n in range(1, writes + 1):
        image = t.path('k.qed')
        shutil.copy(base, image)
        drive[2] = image
        run(drive, env=preload_env(t.killpoint, KILLPOINT_AT=n),
            input=script, ok=None)
        proc = run(['qemu-img', 'check', image], ok=None)
        if proc.returncode not in (0, 3):
            raise Failure('killed before write %d: qemu-img check exited %d: %s' % (
                n, proc.returncode, proc.stdout.decode() + proc.stderr.decode()))
        got_path = t.path('k.raw')
        run(['qemu-img', 'convert', '-O', 'raw', image, got_path])
        with open(got_path, 'rb') as f:
            got = f.read()
        covered = bytearray(len(old))
        for off, length in regions:
            # A write spanning clusters is made cluster by cluster: each piece is old or new.
            pos = off
            while pos < off + length:
                end = min(off + length, (pos // 4096 + 1) * 4096)
                if got[pos:end] not in (old[pos:end], new[pos:end]):
                    raise Failure('killed before write %d: bytes %d..%d of the write at %d are '
                                  'neither old nor new' % (n, pos, end, off))
                pos = end
            covered[off:off + length] = b'\x01' * length
        for i in range(0, len(old), 4096):
            if not any(covered[i:i + 4096]) and got[i:i + 4096] != old[i:i + 4096]:
                raise Failure('killed before write %d: untouched bytes at %d changed' % (n, i))
        # Opened for writing here, the image is checked and marked clean again (every third
        # kill point: each costs two more processes).
        if n % 3:
            continue
        run(drive[:2] + [image, '-f', 'qed', '--shadow-in', got_path, '--script', '-'],
            input=b'write 0 512 99\nflush\n')
        proc = run(['qemu-img', 'check', image], ok=(0, 3))


def thread_runs(t):
    """Four threads on one handle racing to allocate the same clusters (thread_writer)."""
    for seq, (size, opts, cluster) in enumerate([(16 * MIB, 'cluster_size=4096,table_size=2', 4096), (8 * MIB, '', 65536)]):
        image, expected = t.path('t%d.qed' % seq), t.path('t%d.raw' % seq)
        run([t.driver, 'create', image, 'qed', str(size), opts])
        run([t.threads, image, str(cluster), str(300 + seq), expected, '-f', 'qed', '--threads',
             '4'])
        run(['qemu-img', 'check', '-f', 'qed', image])
        out = run(['qemu-img', 'compare', '-f', 'raw', '-F', 'qed', expected, image]).stdout
        if b'identical' not in out:
            raise Failure('qemu-img compare: %r' % out)


def header(cluster=65536, table=4, header_size=1, features=0, l1=65536, size=MIB,
           name_off=0, name_len=0):
    h = bytearray(64)
    struct.pack_into('<IIIIQQQQQII', h, 0, 0x00444551, cluster, table, header_size, features,
                     0, 0, l1, size, name_off, name_len)
    return bytes(h)


def body(h, clusters=5, cluster=65536):
    return h + bytes(clusters * cluster - len(h))


HOSTILE = [
    ('truncated header', header()[:40], 'ends inside the header'),
    ('cluster size', body(header(cluster=1 << 30)), 'cluster size is invalid'),
    ('table size', body(header(table=64)), 'table size is invalid'),
    ('image size', body(header(size=1 << 62)), 'image size is invalid'),
    ('odd image size', body(header(size=1000)), 'image size is invalid'),
    ('L1 past the end', body(header(l1=1 << 40)), 'table offset is invalid'),
    ('L1 in the header', body(header(l1=0)), 'table offset is invalid'),
    ('unknown features', body(header(features=0x100)), 'unsupported QED features'),
    ('header size', body(header(header_size=0x7fffffff)), 'header size'),
    ('backing name past the header', body(header(features=1, name_off=65000, name_len=4000)),
     'backing filename offset is invalid'),
]


def bad_tables(t):
    """An L1 entry and an L2 entry pointing past the end: reads fail, as in QEMU."""
    image = t.path('badtab.qed')
    run(['qemu-img', 'create', '-f', 'qed', image, '4M'])
    qemu_io(image, ['write -P 1 0 4k'])
    with open(image, 'r+b') as f:
        f.seek(0x10000)
        l2 = struct.unpack('<Q', f.read(8))[0]
        f.seek(l2 + 8)
        f.write(struct.pack('<Q', 1 << 40))
    q = run(['qemu-img', 'convert', '-O', 'raw', image, t.path('x.raw')], ok=None)
    o = run([t.cli, 'convert', '-O', 'raw', image, t.path('y.raw')], ok=None)
    if q.returncode == 0 or o.returncode == 0 or b'invalid' not in o.stderr:
        raise Failure('a table past the end was read: qemu %d, ours %d %r' % (
            q.returncode, o.returncode, o.stderr))
    compare_read_check_only(t, image)


def compare_read_check_only(t, image):
    for cmd in (['check'], ['check', '--output=json']):
        q = run(['qemu-img'] + cmd + [image], ok=None)
        o = run([t.cli] + cmd + [image], ok=None)
        same(' '.join(cmd), (q.returncode, q.stdout.decode()), (o.returncode, o.stdout.decode()))


def main():
    t = Test(sys.argv, 'qed')
    make_backings(t)
    t.check('qemu default', qemu_made, t, 'd.qed', 10 * MIB, '', WRITES)
    t.check('qemu 4k table 2', qemu_made, t, 'e.qed', 6 * MIB + 512,
            'cluster_size=4096,table_size=2', WRITES)
    t.check('qemu 64k table 16', qemu_made, t, 'f.qed', 7 * MIB, 'table_size=16', WRITES)
    t.check('qemu 1M clusters', qemu_made, t, 'g.qed', 9 * MIB, 'cluster_size=1M,table_size=2',
            WRITES)
    t.check('qemu empty', qemu_made, t, 'h.qed', 0, '', [])
    for fmt in ('raw', 'qcow2', 'qed'):
        t.check('qemu backing ' + fmt, qemu_made, t, 'b-%s.qed' % fmt, 6 * MIB,
                'cluster_size=4096,table_size=4', ['write -P 0x55 4k 1k', 'write -z 1M 64k',
                                                   'write -P 0x56 2M 4k'],
                ('base.' + fmt, fmt))
    t.check('damaged', damaged, t)
    t.check('clean need-check', clean_need_check, t)
    t.check('bad tables', bad_tables, t)
    for size, opts in ((10 * MIB, ''), (1000, ''), (6 * MIB, 'cluster_size=4096,table_size=2'),
                       (3 * MIB, 'cluster_size=1M,table_size=16')):
        t.check('created %d %s' % (size, opts), created_here, t, size, opts)
    t.check('created with backing', created_here, t, 5 * MIB, '', ('base.raw', 'raw'))
    t.check('created with qcow2 backing', created_here, t, 5 * MIB, 'cluster_size=8192',
            ('base.qcow2', 'qcow2'))
    t.check('convert default', converted_here, t, 'cluster_size=65536')
    t.check('convert 4k', converted_here, t, 'cluster_size=4096,table_size=2')
    t.check('options', options, t)
    t.check('resize', resize, t)
    t.check('property', property_runs, t)
    t.check('threads', thread_runs, t)
    t.check('kill', kill_runs, t, False)
    t.check('kill over a backing file', kill_runs, t, True)
    for label, data, words in HOSTILE:
        t.check('hostile ' + label, hostile, t, label, data, words)
    return t.finish()


if __name__ == '__main__':
    sys.exit(main())
