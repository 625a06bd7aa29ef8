#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""VMDK against qemu-img and qemu-io, both ways, for every subformat and creation option:

  - qemu -> here: images made by qemu-img convert/create and written by qemu-io read here byte
    for byte as qemu-img reads them, and `info`, `map` and `check` print what qemu-img prints;
  - here -> qemu: images made by imgutil create/convert pass qemu-img check and compare equal
    to their source, and qemu-img's info and map agree with ours;
  - random writes, zeros and reopens through the public API against a shadow (write_driver),
    on sparse, split, zeroed-grain, flat and backed images, then qemu-img check and compare;
  - threads writing, zeroing and reading one handle at once (thread_writer);
  - kill points in the sparse writer: killed before any of its writes, the image passes
    qemu-img check and every range written reads either as before or as written;
  - the real VMware sample (version 3) reads as qemu-img reads it (the README's sha256 over its
    16 GiB is checked by the qemu-samples test), and the fuzzed one is refused as QEMU refuses
    it.

usage: test_vmdk_interop.py WRITE_DRIVER KILLPOINT_SO THREAD_WRITER
"""

import bz2
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
import writetest as wt  # noqa: E402

sys.path.insert(0, HERE)
import make_fuzz_corpus as handmade  # noqa: E402

MIB = 1 << 20
GRAIN = 65536
SAMPLES = os.path.join(os.environ.get('IMGUTIL_SOURCE_ROOT', os.path.join(HERE, '..', '..', '..')),
                       '..', 'shared', 'testdata', 'qemu-samples')

CONFIGS = [
    ('monolithicSparse', ''),
    ('monolithicSparse', 'zeroed_grain=on'),
    ('monolithicSparse', 'adapter_type=lsilogic,hwversion=7,toolsversion=9'),
    ('monolithicSparse', 'compat6=on,adapter_type=buslogic'),
    ('monolithicFlat', 'adapter_type=legacyESX'),
    ('twoGbMaxExtentSparse', ''),
    ('twoGbMaxExtentFlat', ''),
    ('streamOptimized', ''),
]


def opts(sub, extra):
    return 'subformat=%s%s' % (sub, ',' + extra if extra else '')


def read_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


def same_json(suite, args, cwd):
    """imgutil and qemu-img print the same JSON (and exit the same) for `args`."""
    ours = suite.imgutil(*args, ok_codes=None)
    theirs = wt.qemu_img(*args, cwd=cwd, ok_codes=None)
    if ours.returncode != theirs.returncode:
        raise wt.CheckFailed('%s: imgutil exits %d, qemu-img %d\n%s\n%s' % (
            ' '.join(args), ours.returncode, theirs.returncode, wt.clip(ours.stderr),
            wt.clip(theirs.stderr)))
    a = wt.parse_json(ours.stdout, 'imgutil ' + args[0])
    b = wt.parse_json(theirs.stdout, 'qemu-img ' + args[0])
    if a != b:
        raise wt.CheckFailed('%s differs:\nimgutil  %s\nqemu-img %s' % (
            ' '.join(args), wt.clip(ours.stdout), wt.clip(theirs.stdout)))


def same_check(suite, image, cwd):
    ours = suite.imgutil('check', image, ok_codes=None)
    theirs = wt.qemu_img('check', image, cwd=cwd, ok_codes=None)
    if (ours.returncode, ours.stdout) != (theirs.returncode, theirs.stdout):
        raise wt.CheckFailed('check %s: imgutil %d %r, qemu-img %d %r' % (
            image, ours.returncode, ours.stdout, theirs.returncode, theirs.stdout))


def reads_as_qemu(suite, image):
    """Every byte, info, map and check as qemu-img has them."""
    suite.imgutil('convert', '-O', 'raw', image, 'ours.raw')
    wt.qemu_img('convert', '-O', 'raw', image, 'theirs.raw', cwd=suite.tmp)
    if read_bytes(suite.path('ours.raw')) != read_bytes(suite.path('theirs.raw')):
        raise wt.CheckFailed('%s: imgutil convert -O raw differs from qemu-img\'s' % image)
    same_json(suite, ['info', '--output=json', image], suite.tmp)
    same_json(suite, ['map', '--output=json', image], suite.tmp)
    same_check(suite, image, suite.tmp)


def qemu_to_here(suite, rng, src):
    for sub, extra in CONFIGS:
        with suite.check('qemu -> here: %s %s' % (sub, extra)):
            image = 'q-%s.vmdk' % sub
            wt.qemu_img('convert', '-f', 'raw', '-O', 'vmdk', '-o', opts(sub, extra), src, image,
                        cwd=suite.tmp)
            if sub != 'streamOptimized':
                cmds = ['write -P 0x5a 70000 200000', 'write -z 1048576 131072',
                        'write -P 0x33 %d 512' % (5 * MIB + 100)]
                wt.qemu_io(image, cmds, fmt='vmdk', cwd=suite.tmp)
            reads_as_qemu(suite, image)
    with suite.check('qemu -> here: twoGbMaxExtentSparse across the 2 GiB split'):
        image = 'q-split.vmdk'
        wt.qemu_img('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', image,
                    str((2 << 30) + 3 * MIB), cwd=suite.tmp)
        wt.qemu_io(image, ['write -P 0x71 %d %d' % ((2 << 30) - 100000, 300000)], fmt='vmdk',
                   cwd=suite.tmp)
        same_json(suite, ['info', '--output=json', image], suite.tmp)
        same_json(suite, ['map', '--output=json', image], suite.tmp)
        proc = suite.imgutil('compare', '-f', 'vmdk', '-F', 'vmdk', image, image, ok_codes=None)
        if proc.returncode != 0:
            raise wt.CheckFailed('compare of the split image with itself: %s' % proc.stdout)
        suite.imgutil('convert', '-O', 'qcow2', image, 'split.qcow2')
        proc = wt.qemu_img('compare', image, 'split.qcow2', cwd=suite.tmp, ok_codes=None)
        if proc.returncode != 0:
            raise wt.CheckFailed('split image read here differs: %s' % proc.stdout)
    with suite.check('qemu -> here: vmfs descriptor (VMFS extent; RDONLY lines skipped)'):
        wt.write_file(suite.path('vmfs-flat.raw'), rng.randbytes(MIB))
        wt.write_file(suite.path('vmfs.vmdk'), (
            b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
            b'createType="vmfs"\n\n# Extent description\nRW 2048 VMFS "vmfs-flat.raw"\n'
            b'RDONLY 100 FLAT "missing" 0\n'))
        reads_as_qemu(suite, 'vmfs.vmdk')
    handmade_images = {
        'seSparse extent': [('se.vmdk', handmade.SESPARSE_DESC),
                            ('vmdk-sesparse-extent.vmdk', handmade.sesparse())],
        'COWD (VMFS sparse) file': [('cowd.vmdk', handmade.cowd())],
        'streamOptimized with its header in the footer': [('foot.vmdk',
                                                           handmade.stream(footer=True))],
        'zeroed grains': [('zg.vmdk', handmade.sparse(zero_grain=True))],
    }
    for label, files in handmade_images.items():
        with suite.check('qemu -> here: %s' % label):
            for name, data in files:
                wt.write_file(suite.path(name), data)
            reads_as_qemu(suite, files[0][0])
    with suite.check('vmfsThin descriptor reads its VMFS extent (QEMU 7.2 refuses the type)'):
        wt.write_file(suite.path('thin.vmdk'), read_bytes(suite.path('vmfs.vmdk')).replace(
            b'"vmfs"', b'"vmfsThin"'))
        proc = suite.imgutil('compare', '-f', 'vmdk', '-F', 'raw', 'thin.vmdk', 'vmfs-flat.raw',
                             ok_codes=None)
        if proc.returncode != 0:
            raise wt.CheckFailed('compare: %s %s' % (proc.stdout, proc.stderr))
    with suite.check('qemu -> here: backing chain (parentFileNameHint)'):
        wt.qemu_img('convert', '-f', 'raw', '-O', 'vmdk', src, 'qbase.vmdk', cwd=suite.tmp)
        wt.qemu_img('create', '-f', 'vmdk', '-b', 'qbase.vmdk', '-F', 'vmdk', 'qchild.vmdk',
                    cwd=suite.tmp)
        wt.qemu_io('qchild.vmdk', ['write -P 0x44 100000 70000'], fmt='vmdk', cwd=suite.tmp)
        reads_as_qemu(suite, 'qchild.vmdk')


def here_to_qemu(suite, src, size):
    for sub, extra in CONFIGS:
        with suite.check('here -> qemu: convert %s %s' % (sub, extra)):
            image = 'h-%s.vmdk' % sub
            suite.imgutil('convert', '-f', 'raw', '-O', 'vmdk', '-o', opts(sub, extra), src,
                          image)
            wt.assert_qemu_check(image, 'vmdk', cwd=suite.tmp)
            wt.assert_same_content(src, image, 'vmdk', cwd=suite.tmp)
            same_json(suite, ['info', '--output=json', image], suite.tmp)
            same_json(suite, ['map', '--output=json', image], suite.tmp)
        with suite.check('here -> qemu: create %s %s' % (sub, extra)):
            image = 'c-%s.vmdk' % sub
            suite.imgutil('create', '-f', 'vmdk', '-o', opts(sub, extra), image, str(size))
            wt.qemu_img('create', '-f', 'vmdk', '-o', opts(sub, extra), 'qc.vmdk', str(size),
                        cwd=suite.tmp)
            wt.assert_qemu_check(image, 'vmdk', cwd=suite.tmp)
            ours = wt.qemu_info(image, cwd=suite.tmp)
            theirs = wt.qemu_info('qc.vmdk', cwd=suite.tmp)
            for info in (ours, theirs):
                info.pop('filename')
                info.pop('actual-size')
                data = info['format-specific']['data']
                data.pop('cid')
                for e in data['extents']:
                    e['filename'] = os.path.basename(e['filename']).replace('qc', 'X').replace(
                        'c-%s' % sub, 'X')
            if ours != theirs:
                raise wt.CheckFailed('qemu-img info of ours %r\n and of qemu-img\'s %r' %
                                     (ours, theirs))
            desc_ours = read_bytes(suite.path(image))
            desc_theirs = read_bytes(suite.path('qc.vmdk'))
            if sub in ('monolithicSparse', 'streamOptimized'):
                # Same header and tables; the descriptor differs only in the CID.
                if desc_ours[:512] != desc_theirs[:512] or len(desc_ours) != len(desc_theirs):
                    raise wt.CheckFailed('%s: header or length differs from qemu-img\'s' % sub)
    with suite.check('here -> qemu: images with extents made in a subfolder named relatively'):
        os.makedirs(suite.path('sub'), exist_ok=True)
        for sub in ('monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'):
            image = os.path.join('sub', 'r-%s.vmdk' % sub)
            suite.imgutil('create', '-f', 'vmdk', '-o', 'subformat=' + sub, image, str(size))
            suite.imgutil('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=' + sub, src,
                          os.path.join('sub', 'rc-%s.vmdk' % sub))
            wt.assert_qemu_check(image, 'vmdk', cwd=suite.tmp)
            wt.assert_same_content(src, os.path.join('sub', 'rc-%s.vmdk' % sub), 'vmdk',
                                   cwd=suite.tmp)
            extents = wt.qemu_info(image, cwd=suite.tmp)['format-specific']['data']['extents']
            for e in extents:
                if not os.path.exists(suite.path(e['filename'])):
                    raise wt.CheckFailed('%s: extent %r missing' % (sub, e['filename']))
                if os.path.dirname(e['filename']) != 'sub':
                    raise wt.CheckFailed('%s: extent %r not beside its descriptor' %
                                         (sub, e['filename']))
    with suite.check('here -> qemu: convert -c into a flat image is refused cleanly'):
        proc = suite.imgutil('convert', '-c', '-f', 'raw', '-O', 'vmdk', '-o',
                             'subformat=monolithicFlat', src, 'cflat.vmdk', ok_codes=None)
        if proc.returncode != 1 or 'cannot write compressed data' not in proc.stderr:
            raise wt.CheckFailed('exit %d: %r' % (proc.returncode, proc.stderr))
        if os.path.exists(suite.path('cflat-flat.vmdk')):
            raise wt.CheckFailed('the refused convert left an extent file behind')
    with suite.check('here -> qemu: convert -c into monolithicSparse writes plain grains'):
        suite.imgutil('convert', '-c', '-f', 'raw', '-O', 'vmdk', src, 'csparse.vmdk')
        wt.assert_qemu_check('csparse.vmdk', 'vmdk', cwd=suite.tmp)
        wt.assert_same_content(src, 'csparse.vmdk', 'vmdk', cwd=suite.tmp)
    with suite.check('here -> qemu: streamOptimized written through the API'):
        suite.api('create', 'sapi.vmdk', 'vmdk', str(MIB), 'subformat=streamOptimized')
        suite.api('run', 'sapi.vmdk', '-f', 'vmdk', '--script', '-', '--shadow-out', 'sapi.raw',
                  input='write 0 65536 3\nwrite 131072 131072 4\nwrite 983040 65536 5\n'
                        'reopen\nverify\n')
        wt.assert_qemu_check('sapi.vmdk', 'vmdk', cwd=suite.tmp)
        wt.assert_same_content('sapi.raw', 'sapi.vmdk', 'vmdk', cwd=suite.tmp)
        # As qemu-io: a grain is written once, and only whole.
        for op, message in (('write 0 65536 3', 'allocated cluster for streamOptimized'),
                            ('write 65536 512 3', 'only whole clusters')):
            proc = suite.api('run', 'sapi.vmdk', '-f', 'vmdk', '--script', '-', '--shadow-in',
                             'sapi.raw', input=op + '\n', ok_codes=(1,))
            if message not in proc.stderr:
                raise wt.CheckFailed('%s: %r' % (op, proc.stderr))
    with suite.check('qemu -> here: streamOptimized written by qemu-io'):
        wt.qemu_img('create', '-f', 'vmdk', '-o', 'subformat=streamOptimized', 'sio.vmdk',
                    str(MIB), cwd=suite.tmp)
        wt.qemu_io('sio.vmdk', ['write -P 0x21 0 64k', 'write -P 0x22 512k 128k'], fmt='vmdk',
                   cwd=suite.tmp)
        reads_as_qemu(suite, 'sio.vmdk')
    with suite.check('here -> qemu: backing chain'):
        suite.imgutil('create', '-f', 'vmdk', '-b', 'h-monolithicSparse.vmdk', '-F', 'vmdk',
                      'hchild.vmdk')
        suite.api('run', 'hchild.vmdk', '-f', 'vmdk', '--script', '-', '--shadow-in', 'src.raw',
                  input='write 100000 70000 5\nwrite 0 512 6\n')
        info = wt.qemu_info('hchild.vmdk', cwd=suite.tmp)
        parent = wt.qemu_info('h-monolithicSparse.vmdk', cwd=suite.tmp)
        if info['format-specific']['data']['parent-cid'] != \
                parent['format-specific']['data']['cid']:
            raise wt.CheckFailed('parent-cid %r is not the parent\'s cid' % info)
        wt.assert_qemu_check('hchild.vmdk', 'vmdk', cwd=suite.tmp)
        reads_as_qemu(suite, 'hchild.vmdk')


def property_runs(suite, rng):
    kinds = [('monolithicSparse', ''), ('monolithicSparse', 'zeroed_grain=on'),
             ('twoGbMaxExtentSparse', 'zeroed_grain=on'), ('monolithicFlat', ''), ('backed', '')]
    for i in range(len(kinds)):
        sub, extra = kinds[i]
        seed = rng.randrange(1 << 31)
        with suite.check('random writes %s %s seed %d' % (sub, extra, seed)):
            image = 'p%d.vmdk' % i
            args = ['run', image, '-f', 'vmdk', '--random', str(seed), '--ops', '40',
                    '--no-resize', '--discard', 'hint', '--shadow-out', 'p.raw']
            if sub == 'backed':
                wt.qemu_img('convert', '-f', 'raw', '-O', 'vmdk', 'src.raw', 'pbase.vmdk',
                            cwd=suite.tmp)
                suite.imgutil('create', '-f', 'vmdk', '-b', 'pbase.vmdk', '-F', 'vmdk', image)
                args += ['--shadow-in', 'src.raw', '--backing-raw', 'src.raw']
            else:
                suite.api('create', image, 'vmdk', str(8 * MIB), opts(sub, extra))
            suite.api(*args)
            wt.assert_qemu_check(image, 'vmdk', cwd=suite.tmp)
            wt.assert_same_content('p.raw', image, 'vmdk', cwd=suite.tmp)


def thread_runs(suite):
    for sub, extra in (('monolithicSparse', 'zeroed_grain=on'), ('twoGbMaxExtentSparse', ''),
                       ('monolithicFlat', '')):
        with suite.check('threads racing on one handle: %s %s' % (sub, extra)):
            image = 't-%s.vmdk' % sub
            suite.api('create', image, 'vmdk', str(8 * MIB), opts(sub, extra))
            wt.run([suite.helpers['thread_writer'], image, str(GRAIN), '5', 't.raw', '-f', 'vmdk',
                    '--threads', '4'], cwd=suite.tmp)
            wt.assert_qemu_check(image, 'vmdk', cwd=suite.tmp)
            wt.assert_same_content('t.raw', image, 'vmdk', cwd=suite.tmp)


def preload_env(so, **values):
    env = dict(os.environ, LD_PRELOAD=so)
    # The kill points are pwrite calls: the thread-pool engine makes them, io_uring would not.
    env['IMGUTIL_IO'] = 'threads'
    # Under ASan the sanitizer's runtime must come first; the preload only wraps pwrite.
    env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
    env.update({k: str(v) for k, v in values.items()})
    return env


def kill_runs(suite, killpoint, rng):
    # Writes into distinct grains, partly (copy-on-write) and whole, some sharing a table.
    ops = []
    regions = []
    for k in range(6):
        off = (k * 3 + 1) * GRAIN + rng.choice((0, 512, 4096))
        length = rng.choice((512, 4096, GRAIN - 4096))
        ops.append('write %d %d %d' % (off, length, 100 + k))
        regions.append((off, length))
    script = '\n'.join(ops) + '\n'
    with suite.check('kill: expected content'):
        suite.api('create', 'full.vmdk', 'vmdk', str(2 * MIB))
        suite.api('run', 'full.vmdk', '-f', 'vmdk', '--script', '-', '--shadow-out', 'full.raw',
                  input=script)
        count_file = suite.path('count.txt')
        suite.api('create', 'count.vmdk', 'vmdk', str(2 * MIB))
        env = preload_env(killpoint, KILLPOINT_COUNT=count_file)
        subprocess.run([suite.driver, 'run', 'count.vmdk', '-f', 'vmdk', '--script', '-'],
                       cwd=suite.tmp, input=script.encode(), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        writes = len(read_bytes(count_file).splitlines())
    if not suite.last_ok:
        return
    full = read_bytes(suite.path('full.raw'))
    # Every write of the first operation (the descriptor's CID, a copy-on-write allocation and
    # its table entries), then a sample of the others, so the test stays quick.
    points = sorted(set(list(range(1, min(writes, 6) + 1)) + list(range(6, writes + 1, 6)) +
                        [writes]))
    for n in points:
        with suite.check('kill before write %d of %d' % (n, writes)):
            if os.path.exists(suite.path('k.vmdk')):
                os.unlink(suite.path('k.vmdk'))
            suite.api('create', 'k.vmdk', 'vmdk', str(2 * MIB))
            env = preload_env(killpoint, KILLPOINT_AT=n)
            proc = subprocess.run([suite.driver, 'run', 'k.vmdk', '-f', 'vmdk', '--script', '-'],
                                  cwd=suite.tmp, input=script.encode(), env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if proc.returncode != -9:
                raise wt.CheckFailed('the writer was not killed (exit %d)' % proc.returncode)
            wt.assert_qemu_check('k.vmdk', 'vmdk', cwd=suite.tmp)
            wt.qemu_img('convert', '-O', 'raw', 'k.vmdk', 'k.raw', cwd=suite.tmp)
            got = read_bytes(suite.path('k.raw'))
            covered = bytearray(len(full))
            for off, length in regions:
                part = got[off:off + length]
                if part != full[off:off + length] and part != bytes(length):
                    raise wt.CheckFailed('range %d+%d is neither old nor new' % (off, length))
                covered[off:off + length] = b'\1' * length
            for i in range(0, len(full), 512):
                if not covered[i] and got[i:i + 512] != bytes(512):
                    raise wt.CheckFailed('bytes at %d outside every write are not zero' % i)


def samples(suite):
    v3 = os.path.join(SAMPLES, 'iotest-version3.vmdk.bz2')
    afl9 = os.path.join(SAMPLES, 'afl9.vmdk.bz2')
    if not os.path.exists(v3) or not os.path.exists(afl9):
        print('(samples folder absent: samples not checked)')
        return
    with suite.check('sample iotest-version3.vmdk reads as qemu-img reads it'):
        # The README's sha256 over all 16 GiB is the qemu-samples test's (slow) business; here
        # the raw copy made here must compare equal to the sample as qemu-img reads it.
        wt.write_file(suite.path('v3.vmdk'), bz2.decompress(read_bytes(v3)))
        suite.imgutil('convert', '-O', 'raw', 'v3.vmdk', 'v3.raw')
        proc = wt.qemu_img('compare', '-f', 'vmdk', '-F', 'raw', 'v3.vmdk', 'v3.raw',
                           cwd=suite.tmp, ok_codes=None)
        if proc.returncode != 0:
            raise wt.CheckFailed('qemu-img compare: %s %s' % (proc.stdout, proc.stderr))
        os.unlink(suite.path('v3.raw'))
        same_json(suite, ['info', '--output=json', 'v3.vmdk'], suite.tmp)
        same_json(suite, ['map', '--output=json', 'v3.vmdk'], suite.tmp)
        same_check(suite, 'v3.vmdk', suite.tmp)
    with suite.check('sample afl9.vmdk is refused: L1 size too big'):
        wt.write_file(suite.path('afl9.vmdk'), bz2.decompress(read_bytes(afl9)))
        proc = suite.imgutil('info', 'afl9.vmdk', ok_codes=(1,))
        if 'L1 size too big' not in proc.stderr:
            raise wt.CheckFailed('message: %r' % proc.stderr)


def main():
    suite = wt.Suite('vmdk-interop', sys.argv, helpers=('killpoint', 'thread_writer'))
    rng = random.Random(suite.seed(0x766d646b))
    size = 6 * MIB + 4096
    src = wt.write_file(suite.path('src.raw'), wt.random_content(rng, size))
    qemu_to_here(suite, rng, 'src.raw')
    here_to_qemu(suite, 'src.raw', size)
    property_runs(suite, rng)
    thread_runs(suite)
    kill_runs(suite, suite.helpers['killpoint'], rng)
    samples(suite)
    del src
    suite.finish()


if __name__ == '__main__':
    main()
