# SPDX-License-Identifier: LGPL-2.1-or-later
"""imgutil convert's options against qemu-img convert's on identical inputs made by
qemu-img/qemu-io at test time: exit codes and messages, the resulting images (bytes where
qemu-img is deterministic, `qemu-img map --output=json`, `qemu-img compare`, `qemu-img check`).

usage: test_convert_options.py [GROUP...]   (groups: backing, existing, snapshot, many, limits,
refusals, salvage, vmdk, inflight; all by default)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
CLI = os.environ.get('IMGUTIL_CLI', 'imgutil')
failures = []


def run(args, cwd):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def must(args, cwd):
    rc, out, err = run(args, cwd)
    if rc != 0:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(map(str, args)), rc, err))
    return out


def fail(what, expected, got):
    failures.append('%s\n    expected: %r\n    got:      %r' % (what, expected, got))


def same_words(qemu_err, our_err):
    """Messages compared with the program names taken out."""
    return (qemu_err.replace('qemu-img: ', '').replace("'qemu-img --help'", 'HELP'),
            our_err.replace('imgutil: ', '').replace("'imgutil --help'", 'HELP'))


def convert_both(d, args, qemu_out, our_out, compare_bytes=False, source=None, check=True,
                 check_map=True):
    """Runs `qemu-img convert ARGS qemu_out` and `imgutil convert ARGS our_out`: the same exit
    code and message; when both succeed, the same map and compare equal (and the same bytes)."""
    rc_q, _, err_q = run(['qemu-img', 'convert'] + args + [qemu_out], d)
    rc_i, _, err_i = run([CLI, 'convert'] + args + [our_out], d)
    what = 'convert %s' % ' '.join(args)
    if rc_q != rc_i:
        fail(what + ': exit code', rc_q, rc_i)
    q, i = same_words(err_q, err_i)
    if q != i:
        fail(what + ': message', q, i)
    if rc_q != 0 or rc_i != 0:
        return
    map_q = must(['qemu-img', 'map', '--output=json', qemu_out], d)
    map_i = must(['qemu-img', 'map', '--output=json', our_out], d)
    if check_map and map_q != map_i:
        fail(what + ': qemu-img map', map_q, map_i)
    rc, out, _ = run(['qemu-img', 'compare', qemu_out, our_out], d)
    if rc != 0:
        fail(what + ': qemu-img compare with qemu-img\'s result', 0, out)
    if source:
        rc, out, _ = run(['qemu-img', 'compare', source, our_out], d)
        if rc != 0:
            fail(what + ': qemu-img compare with the source', 0, out)
    if check and not our_out.endswith('.raw'):
        rc, out, _ = run(['qemu-img', 'check', our_out], d)
        if rc != 0:
            fail(what + ': qemu-img check', 0, out)
    if compare_bytes:
        with open(os.path.join(d, qemu_out), 'rb') as f1, open(os.path.join(d, our_out),
                                                               'rb') as f2:
            if f1.read() != f2.read():
                fail(what + ': bytes of the result', 'identical', 'different')


def qemu_io(d, image, *cmds, fmt='qcow2'):
    args = ['qemu-io', '-f', fmt]
    for c in cmds:
        args += ['-c', c]
    must(args + [image], d)


def make_chain(d):
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '4M'], d)
    qemu_io(d, 'base.qcow2', 'write -P 1 0 1M', 'write -P 5 3M 64k')
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2',
          'top.qcow2'], d)
    qemu_io(d, 'top.qcow2', 'write -P 2 1M 64k', 'write -z 2M 64k', 'write -P 3 3M 4k')
    # A longer backing file for the target than the source's: zeros past its end differ.
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', 'short.qcow2', '2M'], d)


def group_backing(d):
    make_chain(d)
    for fmt in ('qcow2', 'qed'):
        for base in ('base.qcow2', 'short.qcow2'):
            convert_both(d, ['-O', fmt, '-B', base, '-F', 'qcow2', 'top.qcow2'],
                         'q-%s.%s' % (base, fmt), 'i-%s.%s' % (base, fmt),
                         source='top.qcow2' if base == 'base.qcow2' else None, check=False)
    convert_both(d, ['-O', 'qcow2', '-S', '0', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'],
                 'q-s0.qcow2', 'i-s0.qcow2', source='top.qcow2')
    convert_both(d, ['-O', 'qcow2', '-c', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'],
                 'q-c.qcow2', 'i-c.qcow2', source='top.qcow2')
    # -o backing_file is -B.
    convert_both(d, ['-O', 'qcow2', '-o', 'backing_file=base.qcow2,backing_fmt=qcow2',
                     'top.qcow2'], 'q-o.qcow2', 'i-o.qcow2', source='top.qcow2')
    # Refused, in qemu-img's words.
    convert_both(d, ['-O', 'qcow2', '-B', 'base.qcow2', 'top.qcow2'], 'q-x', 'i-x')
    for fmt in ('raw', 'vpc', 'vdi', 'vhdx', 'parallels'):
        convert_both(d, ['-O', fmt, '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], 'q-x',
                     'i-x')
    for name in ('q-x', 'i-x'):
        if os.path.exists(os.path.join(d, name)):
            fail('a refused convert leaves no target', 'absent', name)


def group_existing(d):
    make_chain(d)
    for zero in ([], ['--target-is-zero']):
        for fmt in ('raw', 'qcow2'):
            # Identical old targets, with content where the source has zeros.
            for name in ('q-old.' + fmt, 'i-old.' + fmt):
                must(['qemu-img', 'create', '-q', '-f', fmt, name, '4M'], d)
                qemu_io(d, name, 'write -P 9 0 4M', fmt=fmt)
            convert_both(d, ['-n', '-O', fmt] + zero + ['top.qcow2'], 'q-old.' + fmt,
                         'i-old.' + fmt, compare_bytes=(fmt == 'raw'),
                         source=None if zero else 'top.qcow2')
    # Too small, absent, -o, --target-is-zero without -n, with a backing file.
    must(['qemu-img', 'create', '-q', '-f', 'raw', 'small.raw', '1M'], d)
    convert_both(d, ['-n', '-O', 'raw', 'top.qcow2'], 'small.raw', 'small.raw')
    convert_both(d, ['-n', '-O', 'raw', 'top.qcow2'], 'absent.raw', 'absent.raw')
    if os.path.exists(os.path.join(d, 'absent.raw')):
        fail('-n creates nothing', 'absent', 'absent.raw exists')
    convert_both(d, ['-n', '-o', 'cluster_size=4k', 'top.qcow2'], 'small.raw', 'small.raw')
    convert_both(d, ['--target-is-zero', 'top.qcow2'], 'q-x', 'i-x')
    # -n into a target with a backing file of its own (-B): only the top layer is written.
    for name in ('q-ov.qcow2', 'i-ov.qcow2'):
        must(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2',
              name], d)
    convert_both(d, ['-n', '-O', 'qcow2', '-B', 'base.qcow2', 'top.qcow2'], 'q-ov.qcow2',
                 'i-ov.qcow2', source='top.qcow2')


def group_snapshot(d):
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', 's.qcow2', '4M'], d)
    qemu_io(d, 's.qcow2', 'write -P 1 0 1M')
    must(['qemu-img', 'snapshot', '-c', 'snap1', 's.qcow2'], d)
    qemu_io(d, 's.qcow2', 'write -P 2 0 64k', 'write -P 3 2M 64k')
    must(['qemu-img', 'snapshot', '-c', 'snap2', 's.qcow2'], d)
    qemu_io(d, 's.qcow2', 'write -P 4 3M 64k')
    must(['qemu-img', 'resize', '-q', 's.qcow2', '8M'], d)
    must(['qemu-img', 'create', '-q', '-f', 'raw', 'r.raw', '1M'], d)
    params = ['snap1', 'snap2', '1', 'snapshot.name=snap1', 'snapshot.id=2',
              'snapshot.id=1,snapshot.name=snap1', 'snapshot.id=1,snapshot.name=snap2',
              'nope', 'snapshot.name=nope', 'snapshot.foo=1']
    for i, p in enumerate(params):
        for fmt in ('qcow2', 'raw'):
            convert_both(d, ['-O', fmt, '-l', p, 's.qcow2'], 'q%d.%s' % (i, fmt),
                         'i%d.%s' % (i, fmt), compare_bytes=True)
    convert_both(d, ['-l', 'snap1', 'r.raw'], 'q-x', 'i-x')
    convert_both(d, ['-l', 'snap1', 's.qcow2', 'r.raw'], 'q-x', 'i-x')
    convert_both(d, ['-l', 'snapshot.name=snap1', 's.qcow2', 'r.raw'], 'q-m.raw', 'i-m.raw',
                 compare_bytes=True)
    # -s is not an option of qemu-img 7.2's convert.
    convert_both(d, ['-s', 'snap1', 's.qcow2'], 'q-x', 'i-x')
    # measure -l measures the snapshot's view.
    for p in ('snap1', 'snapshot.id=2', 'nope'):
        args = ['measure', '-O', 'qcow2', '-l', p, 's.qcow2']
        q = run(['qemu-img'] + args, d)
        i = run([CLI] + args, d)
        if q[0] != i[0] or q[1] != i[1] or same_words(q[2], '')[0] != same_words('', i[2])[1]:
            fail('measure -l %s' % p, q, i)


def group_many(d):
    must(['qemu-img', 'create', '-q', '-f', 'raw', 'm1.raw', '1M'], d)
    qemu_io(d, 'm1.raw', 'write -P 7 0 512k', fmt='raw')
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', 'm2.qcow2', '3M'], d)
    qemu_io(d, 'm2.qcow2', 'write -P 8 1M 64k', 'write -z 2M 64k')
    must(['qemu-img', 'create', '-q', '-f', 'raw', 'm3.raw', '1536k'], d)
    qemu_io(d, 'm3.raw', 'write -P 9 1M 4k', fmt='raw')
    srcs = ['m1.raw', 'm2.qcow2', 'm3.raw']
    convert_both(d, ['-O', 'qcow2'] + srcs, 'q.qcow2', 'i.qcow2', compare_bytes=True)
    convert_both(d, ['-O', 'raw'] + srcs, 'q.raw', 'i.raw', compare_bytes=True)
    convert_both(d, ['-O', 'vpc'] + srcs, 'q.vpc', 'i.vpc', check=False)
    convert_both(d, ['-O', 'qcow2', '-B', 'm2.qcow2', '-F', 'qcow2'] + srcs, 'q-x', 'i-x')
    # The concatenation reads back as the sources one after another.
    with open(os.path.join(d, 'i.raw'), 'rb') as f:
        got = f.read()
    expected = b''
    for s in srcs:
        must(['qemu-img', 'convert', '-O', 'raw', s, s + '.flat'], d)
        with open(os.path.join(d, s + '.flat'), 'rb') as f:
            expected += f.read()
    if got != expected:
        fail('convert of several sources: content', 'the sources concatenated', 'other bytes')


def group_limits(d):
    must(['qemu-img', 'create', '-q', '-f', 'raw', 'data.raw', '2M'], d)
    qemu_io(d, 'data.raw', 'write -P 6 0 2M', fmt='raw')
    for bad in ('abc', '-5', '1Q', '0x'):
        convert_both(d, ['-r', bad, 'data.raw'], 'q-x', 'i-x')
    for bad in ('0', '17', 'x'):
        convert_both(d, ['-m', bad, 'data.raw'], 'q-x', 'i-x')
    convert_both(d, ['-r', '0', '-m', '16', '-W', '-O', 'qcow2', 'data.raw'], 'q0.qcow2',
                 'i0.qcow2', compare_bytes=True)
    # 2 MiB at 1 MiB/s: at least about two seconds; a generous bound of one.
    start = time.monotonic()
    rc, _, err = run([CLI, 'convert', '-r', '1M', '-O', 'raw', 'data.raw', 'slow.raw'], d)
    took = time.monotonic() - start
    if rc != 0:
        fail('convert -r 1M', 0, err)
    if took < 1.0:
        fail('convert -r 1M of 2 MiB takes at least 1 s', '>= 1.0 s', '%.2f s' % took)
    rc, _, _ = run(['qemu-img', 'compare', 'data.raw', 'slow.raw'], d)
    if rc != 0:
        fail('convert -r 1M: content', 0, rc)


def highest_concurrent_reads(d, args):
    """The most chunk reads imgutil convert ARGS had in progress at once (thread engine)."""
    preload = os.environ.get('CONCURRENT_READS_SO')
    out = os.path.join(d, 'concurrent-reads')
    env = dict(os.environ, IMGUTIL_IO='threads', CONCURRENT_READS_OUT=out,
               LD_PRELOAD=' '.join(filter(None, [os.environ.get('LD_PRELOAD'), preload])),
               # Under ASan the sanitizer's runtime must come first; the preload only wraps
               # pread.
               ASAN_OPTIONS=os.environ.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0')
    proc = subprocess.run([CLI, 'convert'] + args, cwd=d, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    if proc.returncode != 0:
        fail('convert %s' % ' '.join(args), 0, proc.stderr)
        return None
    if not os.path.exists(out):
        fail('convert %s: the preloaded counter reported' % ' '.join(args), out, None)
        return None
    with open(out) as f:
        return int(f.read())


def group_inflight(d):
    """-m N: at most N chunks are copied at once; without it, more than one."""
    if not os.environ.get('CONCURRENT_READS_SO'):
        fail('group inflight', 'CONCURRENT_READS_SO set to the preload module', None)
        return
    with open(os.path.join(d, 'src.raw'), 'wb') as f:
        f.write(os.urandom(16 << 20))
    for limit in (1, 2):
        got = highest_concurrent_reads(d, ['-m', str(limit), '-O', 'raw', 'src.raw', 'o.raw'])
        if got is not None and not 1 <= got <= limit:
            fail('convert -m %d: chunk reads at once' % limit, '1..%d' % limit, got)
    got = highest_concurrent_reads(d, ['-O', 'raw', 'src.raw', 'o.raw'])
    if got is not None and got < 2:
        fail('convert without -m: chunk reads at once', '>= 2', got)
    rc, _, _ = run(['cmp', 'src.raw', 'o.raw'], d)
    if rc != 0:
        fail('convert -m: content', 0, rc)


def group_refusals(d):
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', 'src.qcow2', '1M'], d)
    qemu_io(d, 'src.qcow2', 'write -P 1 0 64k')
    for args in (['-C', '-c', '-O', 'qcow2'], ['-C', '-S', '4k'], ['-C', '--salvage'],
                 ['-n', '-o', 'cluster_size=4k'], ['--target-is-zero']):
        convert_both(d, args + ['src.qcow2'], 'q-x', 'i-x')
    # -C: copy_file_range where the kernel can (sharing blocks on a file system with
    # reflinks, copying them elsewhere); the same bytes and holes as qemu-img -C. Sources with
    # data, holes, zero clusters, compressed clusters and a backing file.
    must(['qemu-img', 'create', '-q', '-f', 'raw', 'holes.raw', '6M'], d)
    qemu_io(d, 'holes.raw', 'write -P 1 0 1M', 'write -P 2 3M 64k', 'write -P 0 4M 64k',
            fmt='raw')
    qemu_io(d, 'src.qcow2', 'write -c -P 4 512k 64k', 'write -z 256k 64k')
    make_chain(d)
    for src, fmt in (('holes.raw', 'raw'), ('holes.raw', 'qcow2'), ('src.qcow2', 'raw'),
                     ('src.qcow2', 'qcow2'), ('top.qcow2', 'qcow2'), ('top.qcow2', 'vmdk')):
        convert_both(d, ['-C', '-O', fmt, src], 'q-c-%s.%s' % (src, fmt),
                     'i-c-%s.%s' % (src, fmt), compare_bytes=(fmt != 'vmdk'), source=src)
    convert_both(d, ['-C', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'],
                 'q-cb.qcow2', 'i-cb.qcow2', compare_bytes=True, source='top.qcow2')
    # Accepted where qemu-img accepts them.
    convert_both(d, ['--salvage', '-O', 'raw', 'src.qcow2'], 'q-s.raw', 'i-s.raw',
                 compare_bytes=True)


def damage_compressed_cluster(path):
    """Overwrites the start of the stream of guest cluster 0 (compressed) with garbage."""
    import struct
    with open(path, 'r+b') as f:
        header = f.read(104)
        cluster_bits = struct.unpack('>I', header[20:24])[0]
        l1_offset = struct.unpack('>Q', header[40:48])[0]
        f.seek(l1_offset)
        l2_offset = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
        f.seek(l2_offset)
        entry = struct.unpack('>Q', f.read(8))[0]
        assert entry & (1 << 62), 'cluster 0 is not compressed'
        host = entry & ((1 << (62 - (cluster_bits - 8))) - 1)
        f.seek(host)
        f.write(b'\xff' * 64)


def group_salvage(d):
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', 'c.qcow2', '3M'], d)
    qemu_io(d, 'c.qcow2', 'write -c -P 3 0 64k', 'write -c -P 4 64k 64k', 'write -P 5 2M 64k')
    damage_compressed_cluster(os.path.join(d, 'c.qcow2'))
    # Without --salvage both fail; with it, zeros where reads fail and a warning per sector.
    rc_q, _, _ = run(['qemu-img', 'convert', '-O', 'raw', 'c.qcow2', 'q-x'], d)
    rc_i, _, _ = run([CLI, 'convert', '-O', 'raw', 'c.qcow2', 'i-x'], d)
    if rc_q != rc_i:
        fail('convert of a damaged image without --salvage: exit code', rc_q, rc_i)
    if os.path.exists(os.path.join(d, 'i-x')):
        fail('a failed convert leaves no target', 'absent', 'i-x')
    # qemu-img allocates the first 4 KiB of the zeros it salvaged in a raw file: a file system
    # layout detail; the bytes are compared.
    convert_both(d, ['--salvage', '-O', 'raw', 'c.qcow2'], 'q.raw', 'i.raw', compare_bytes=True,
                 check_map=False)
    convert_both(d, ['--salvage', '-O', 'qcow2', 'c.qcow2'], 'q.qcow2', 'i.qcow2',
                 compare_bytes=True)


def group_vmdk(d):
    """Extents are named after the target (the final name), not the temporary it is built in."""
    make_chain(d)
    for sub in ('monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'):
        convert_both(d, ['-O', 'vmdk', '-o', 'subformat=' + sub, 'top.qcow2'],
                     'q-%s.vmdk' % sub, 'i-%s.vmdk' % sub, source='top.qcow2', check=False)
    q = sorted(f[1:] for f in os.listdir(d) if f.startswith('q-'))
    i = sorted(f[1:] for f in os.listdir(d) if f.startswith('i-'))
    if q != i:
        fail('vmdk extents named after the target', q, i)
    if any(f.endswith('.tmp') for f in os.listdir(d)):
        fail('no temporary left', [], [f for f in os.listdir(d) if f.endswith('.tmp')])


GROUPS = {'vmdk': group_vmdk, 'salvage': group_salvage, 'backing': group_backing,
          'existing': group_existing, 'snapshot': group_snapshot, 'many': group_many,
          'limits': group_limits, 'refusals': group_refusals, 'inflight': group_inflight}


def main():
    if shutil.which('qemu-img') is None or shutil.which('qemu-io') is None:
        print('SKIP: qemu-img or qemu-io not installed')
        return SKIP
    # A shared object among the arguments is the preload module of the inflight group.
    for arg in sys.argv[1:]:
        if arg.endswith('.so'):
            os.environ['CONCURRENT_READS_SO'] = os.path.abspath(arg)
    names = [a for a in sys.argv[1:] if not a.endswith('.so')] or list(GROUPS)
    for name in names:
        with tempfile.TemporaryDirectory(prefix='convert-%s-' % name) as d:
            GROUPS[name](d)
    for f in failures:
        print('FAIL: ' + f)
    print('%d failure(s)' % len(failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
