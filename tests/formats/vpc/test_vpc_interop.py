#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""VHD interop with qemu-img, both ways.

qemu -> here: fixed and dynamic disks, with and without force_size, written by qemu-io, read
here byte for byte as qemu-img reads them, with the same info and map JSON; a fixed disk
probes as raw (as in qemu-img) and is read as VHD with -f vpc.
here -> qemu: disks made by imgutil create and convert -O vpc (every subformat and option) are
laid out as qemu-img lays them out, and read by qemu-img as the source.
Size rules: each creator application's images get qemu-img's virtual size.
Differencing disks: the parent locator names the parent, absent sectors read from it.
Real images (../shared/testdata/qemu-samples, skipped when absent): the sha256 and JSON the
README there gives, and afl5.img refused as qemu-img refuses it.

usage: test_vpc_interop.py WRITE_DRIVER
"""

import bz2
import hashlib
import json
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
sys.path.insert(0, HERE)
import vhd  # noqa: E402
import writetest as wt  # noqa: E402

MIB = 1 << 20


def same_json(s, what, *args):
    """imgutil and qemu-img print the same JSON for `args` (filename fields included)."""
    ours = wt.parse_json(s.imgutil(*args).stdout, 'imgutil ' + what)
    theirs = wt.parse_json(wt.qemu_img(*args, cwd=s.tmp).stdout, 'qemu-img ' + what)
    if ours != theirs:
        raise wt.CheckFailed('%s differs:\n  imgutil:  %s\n  qemu-img: %s' % (
            what, json.dumps(ours), json.dumps(theirs)))
    return ours


def same_content(s, image, fmt=None):
    """imgutil convert -O raw gives the bytes qemu-img convert -O raw gives."""
    f = ['-f', fmt] if fmt else []
    s.imgutil('convert', *f, '-O', 'raw', image, 'ours.raw')
    wt.qemu_img('convert', *f, '-O', 'raw', image, 'theirs.raw', cwd=s.tmp)
    with open(s.path('ours.raw'), 'rb') as a, open(s.path('theirs.raw'), 'rb') as b:
        if a.read() != b.read():
            raise wt.CheckFailed('%s: the content read here differs from qemu-img\'s' % image)


def qemu_writes(s, image, fmt, rng, size):
    cmds = []
    for _ in range(8):
        length = min(rng.choice((512, 4096, 65536, 3 * MIB)), size // 2 // 512 * 512)
        offset = rng.randrange(0, max(1, size - length)) // 512 * 512
        cmds.append('write -P %d %d %d' % (rng.randrange(1, 256), offset, length))
    cmds.append('write -P 0x5a %d 512' % (size - 512))  # the last sector
    cmds.append('write -z %d 65536' % (size // 2 // 512 * 512))
    wt.qemu_io(image, cmds, fmt=fmt, cwd=s.tmp)


def qemu_to_here(s, rng):
    for sub in ('dynamic', 'fixed'):
        for force in (False, True):
            for size in (1 * MIB + 512 * 7, 5 * MIB, 9 * MIB):
                label = 'qemu -> here: %s, %d bytes%s' % (sub, size, ', force_size' if force
                                                          else '')
                with s.check(label):
                    image = 'q-%s-%d-%d.vhd' % (sub, size, force)
                    opts = 'subformat=%s%s' % (sub, ',force_size=on' if force else '')
                    wt.qemu_img('create', '-q', '-f', 'vpc', '-o', opts, image, size,
                                cwd=s.tmp)
                    real = json.loads(wt.qemu_img('info', '--output=json', '-f', 'vpc', image,
                                                  cwd=s.tmp).stdout)['virtual-size']
                    qemu_writes(s, image, 'vpc', rng, real)
                    fmt = 'vpc' if sub == 'fixed' else None
                    f = ['-f', fmt] if fmt else []
                    same_json(s, 'info', 'info', '--output=json', *f, image)
                    same_json(s, 'map', 'map', '--output=json', *f, image)
                    same_content(s, image, fmt)
                    if sub == 'fixed':
                        probed = same_json(s, 'probed info', 'info', '--output=json', image)
                        if probed['format'] != 'raw':
                            raise wt.CheckFailed('a fixed disk probed as %s' % probed['format'])
                    os.unlink(s.path(image))


def layout_without_identity(data):
    """The file with the footers' timestamp, UUID and checksum blanked."""
    out = bytearray(data)
    for at in {0, len(out) - 512}:
        if out[at:at + 8] == b'conectix':
            out[at + 24:at + 28] = bytes(4)
            out[at + 64:at + 84] = bytes(20)
    return bytes(out)


def here_to_qemu(s, rng):
    for sub in ('dynamic', 'fixed'):
        for force in (False, True):
            for size in (0, 1000000, 5 * MIB, 100 * MIB + 3):
                opts = 'subformat=%s%s' % (sub, ',force_size=on' if force else '')
                with s.check('here -> qemu: create -o %s, %d bytes' % (opts, size)):
                    s.imgutil('create', '-q', '-f', 'vpc', '-o', opts, 'h.vhd', str(size))
                    wt.qemu_img('create', '-q', '-f', 'vpc', '-o', opts, 'q.vhd', size,
                                cwd=s.tmp)
                    with open(s.path('h.vhd'), 'rb') as a, open(s.path('q.vhd'), 'rb') as b:
                        if layout_without_identity(a.read()) != layout_without_identity(b.read()):
                            raise wt.CheckFailed('the file differs from qemu-img create\'s '
                                                 '(beyond timestamp and UUID)')
                    if size == 0 and sub == 'fixed':
                        # A lone footer at offset 0 reads as a sparse disk missing its header:
                        # qemu-img refuses it too.
                        ours = s.imgutil('info', '-f', 'vpc', 'h.vhd', ok_codes=(1,))
                        wt.qemu_img('info', '-f', 'vpc', 'h.vhd', cwd=s.tmp, ok_codes=(1,))
                        if 'dynamic disk header' not in ours.stderr:
                            raise wt.CheckFailed('imgutil: %s' % ours.stderr)
                        continue
                    same_json(s, 'info', 'info', '--output=json', '-f', 'vpc', 'h.vhd')
    raw = wt.write_file(s.path('src.raw'), wt.random_content(rng, 9 * MIB + 4096))
    for opts in ('subformat=dynamic', 'subformat=fixed', 'force_size=on',
                 'subformat=fixed,force_size=on'):
        with s.check('here -> qemu: convert -O vpc -o %s' % opts):
            s.imgutil('convert', '-O', 'vpc', '-o', opts, raw, 'c.vhd')
            proc = wt.qemu_img('compare', '-f', 'raw', '-F', 'vpc', raw, 'c.vhd', cwd=s.tmp,
                               ok_codes=None)
            if proc.returncode != 0:
                raise wt.CheckFailed('qemu-img compare: %s %s' % (proc.stdout, proc.stderr))
            same_json(s, 'map', 'map', '--output=json', '-f', 'vpc', 'c.vhd')
    with s.check('here -> here: convert vpc -> qcow2 -> vpc keeps the content'):
        s.imgutil('convert', '-O', 'vpc', raw, 'c.vhd')
        s.imgutil('convert', '-O', 'qcow2', 'c.vhd', 'c.qcow2')
        s.imgutil('convert', '-O', 'vpc', 'c.qcow2', 'd.vhd')
        s.imgutil('compare', '-f', 'raw', '-F', 'vpc', raw, 'd.vhd')
        wt.qemu_img('compare', '-f', 'raw', '-F', 'vpc', raw, 'd.vhd', cwd=s.tmp)


CREATORS = [b'vpc ', b'qemu', b'qem2', b'win ', b'd2v ', b'tap\0', b'CTXS']


def size_rules(s):
    """current_size is 8 MiB; the CHS geometry says less: who believes which is qemu-img's."""
    for creator in CREATORS:
        for chs in ((200, 4, 17), (65535, 16, 255)):
            name = 'rule-%s-%d.vhd' % (creator.strip(b'\0 ').decode(), chs[0])
            with s.check('size rule: creator %r, geometry %s' % (creator, chs)):
                wt.write_file(s.path(name), vhd.sparse(8 * MIB, {}, creator=creator, chs=chs))
                same_json(s, 'info', 'info', '--output=json', name)
    with s.check('size rule: Azure ("wa\\0\\0") uses the current size'):
        wt.write_file(s.path('azure.vhd'), vhd.sparse(8 * MIB, {}, creator=b'wa\0\0',
                                                       chs=(200, 4, 17)))
        info = wt.parse_json(s.imgutil('info', '--output=json', 'azure.vhd').stdout, 'info')
        if info['virtual-size'] != 8 * MIB:
            raise wt.CheckFailed('virtual-size %d' % info['virtual-size'])


def differencing(s, rng):
    block = 0x200000
    size = 3 * block
    parent = wt.random_content(rng, size, zero_runs=False)
    wt.write_file(s.path('parent.raw'), parent)
    wt.qemu_img('convert', '-f', 'raw', '-O', 'vpc', '-o', 'force_size=on', 'parent.raw',
                'parent.vhd', cwd=s.tmp)
    # Block 0: sectors 0-7 and 100 the child's; block 2 whole; block 1 absent.
    bitmap = bytearray(512)
    bitmap[0] = 0xff
    bitmap[100 // 8] |= 0x80 >> (100 % 8)
    child0 = rng.randbytes(block)
    child2 = rng.randbytes(block)
    expected = bytearray(parent)
    expected[0:8 * 512] = child0[0:8 * 512]
    expected[100 * 512:101 * 512] = child0[100 * 512:101 * 512]
    expected[2 * block:] = child2
    cases = [
        ('W2ru', [(b'W2ru', '.\\parent.vhd'.encode('utf-16-le'))], ''),
        ('W2ku', [(b'W2ku', 'C:\\vms\\parent.vhd'.encode('utf-16-le'))], ''),
        ('MacX', [(b'MacX', b'file://localhost/' + s.path('parent.vhd').lstrip('/').encode())],
         ''),
        ('parent name', [], 'parent.vhd'),
    ]
    for label, locators, pname in cases:
        with s.check('differencing disk, parent named by %s' % label):
            child = vhd.sparse(size, {0: (bytes(bitmap), child0), 2: (None, child2)},
                               disk_type=4, creator=b'vpc ', chs=(65535, 16, 255),
                               parent_name=pname, locator_data=locators)
            wt.write_file(s.path('child.vhd'), child)
            info = wt.parse_json(s.imgutil('info', '--output=json', 'child.vhd').stdout, 'info')
            if info.get('backing-filename') != 'parent.vhd' and label != 'MacX':
                raise wt.CheckFailed('backing-filename %r' % info.get('backing-filename'))
            s.imgutil('convert', '-O', 'raw', 'child.vhd', 'child.raw')
            with open(s.path('child.raw'), 'rb') as f:
                if f.read() != bytes(expected):
                    raise wt.CheckFailed('the content is not the child over its parent')
            mapped = wt.parse_json(s.imgutil('map', '--output=json', 'child.vhd').stdout, 'map')
            depths = [(m['start'], m['depth']) for m in mapped]
            if (0, 0) not in depths or (8 * 512, 1) not in depths or (block, 1) not in depths:
                raise wt.CheckFailed('map does not show the parent where the bitmap says: %s'
                                     % depths)
    with s.check('differencing disk with 1 KiB blocks (a sector of bitmap each)'):
        small = 8 * 1024
        data = rng.randbytes(1024)
        child = vhd.sparse(small, {0: (b'\x80', data), 5: (b'\x40', data)}, block_size=1024,
                           disk_type=4, creator=b'vpc ', chs=(65535, 16, 255),
                           locator_data=[(b'W2ru', 'parent.vhd'.encode('utf-16-le'))])
        wt.write_file(s.path('small.vhd'), child)
        want = bytearray(parent[:small])
        want[0:512] = data[0:512]
        want[5 * 1024 + 512:6 * 1024] = data[512:]
        s.imgutil('convert', '-O', 'raw', 'small.vhd', 'small.raw')
        with open(s.path('small.raw'), 'rb') as f:
            if f.read() != bytes(want):
                raise wt.CheckFailed('the content is not the child over its parent')
        wt.write_file(s.path('small-expected.raw'), bytes(want))
        s.run_script('small.vhd', ['write 700 2000 4', 'write 7000 100 5', 'flush'], fmt='vpc',
                     extra=['--shadow-in', 'small-expected.raw', '--no-resize'])
    with s.check('differencing disk: writes keep the parent visible elsewhere'):
        wt.write_file(s.path('expected.raw'), bytes(expected))
        s.run_script('child.vhd', ['write 1000 3000 7', 'write 2097000 1000 9',
                                   'write 4194304 512 3', 'flush'], fmt='vpc',
                     extra=['--shadow-in', 'expected.raw', '--no-resize'])


def samples(s):
    root = os.environ.get('IMGUTIL_SOURCE_ROOT') or os.path.join(HERE, '..', '..', '..')
    folder = os.path.join(root, '..', '..', 'shared', 'testdata', 'qemu-samples')
    if not os.path.isdir(folder):
        folder = os.path.join(root, '..', 'shared', 'testdata', 'qemu-samples')
    if not os.path.isdir(folder):
        print('(the qemu samples are absent: skipped)')
        return

    def unpack(name):
        with bz2.open(os.path.join(folder, name + '.bz2')) as src:
            wt.write_file(s.path(name), src.read())

    with s.check('sample d2v-zerofilled.vhd: sha256, info and map as qemu-img'):
        unpack('d2v-zerofilled.vhd')
        s.imgutil('convert', '-O', 'raw', 'd2v-zerofilled.vhd', 'd2v.raw')
        h = hashlib.sha256()
        with open(s.path('d2v.raw'), 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        if h.hexdigest() != '1ba076be94a8a64541c25aae8d5a5f8b0da758c3797af597e03acb431ff8d143':
            raise wt.CheckFailed('sha256 %s' % h.hexdigest())
        same_json(s, 'info', 'info', '--output=json', 'd2v-zerofilled.vhd')
        same_json(s, 'map', 'map', '--output=json', 'd2v-zerofilled.vhd')
        for leftover in ('d2v.raw', 'd2v-zerofilled.vhd'):
            os.unlink(s.path(leftover))
    for name in ('hyperv2012r2-dynamic.vhd', 'virtualpc-dynamic.vhd'):
        with s.check('sample %s: info, map and content as qemu-img' % name):
            unpack(name)
            same_json(s, 'info', 'info', '--output=json', name)
            same_json(s, 'map', 'map', '--output=json', name)
            s.imgutil('convert', '-O', 'qcow2', name, 'sample.qcow2')
            wt.qemu_img('compare', name, 'sample.qcow2', cwd=s.tmp)
    with s.check('sample afl5.img: refused as qemu-img refuses it'):
        unpack('afl5.img')
        proc = s.imgutil('info', 'afl5.img', ok_codes=None)
        if proc.returncode == 0 or 'Max Table Entries too large' not in proc.stderr:
            raise wt.CheckFailed('exit %d: %s' % (proc.returncode, proc.stderr))


def cli_behaviour(s):
    wt.qemu_img('create', '-q', '-f', 'vpc', 'cli.vhd', '4M', cwd=s.tmp)
    with s.check('check: "This image format does not support checks", exit 63, as qemu-img'):
        ours = s.imgutil('check', 'cli.vhd', ok_codes=None)
        theirs = wt.qemu_img('check', 'cli.vhd', cwd=s.tmp, ok_codes=None)
        if ours.returncode != theirs.returncode or \
                'This image format does not support checks' not in ours.stderr:
            raise wt.CheckFailed('exit %d (qemu-img %d): %s' % (ours.returncode,
                                                                theirs.returncode, ours.stderr))
    with s.check('resize is refused, as qemu-img refuses it'):
        ours = s.imgutil('resize', 'cli.vhd', '8M', ok_codes=None)
        theirs = wt.qemu_img('resize', 'cli.vhd', '8M', cwd=s.tmp, ok_codes=None)
        if ours.returncode == 0 or theirs.returncode == 0:
            raise wt.CheckFailed('resize succeeded')
    with s.check('create -o help and the Formatting line match qemu-img'):
        ours = s.imgutil('create', '-f', 'vpc', '-o', 'help').stdout
        theirs = wt.qemu_img('create', '-f', 'vpc', '-o', 'help', cwd=s.tmp).stdout
        if ours.splitlines()[:4] != theirs.splitlines()[:4]:
            raise wt.CheckFailed('imgutil:\n%s\nqemu-img:\n%s' % (ours, theirs))
        ours = s.imgutil('create', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on',
                         'fl.vhd', '1M').stdout
        theirs = wt.qemu_img('create', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on',
                             'fl.vhd', '1M', cwd=s.tmp).stdout
        if ours != theirs:
            raise wt.CheckFailed('imgutil: %r\nqemu-img: %r' % (ours, theirs))
    with s.check('create refuses a backing file and sizes past 2040 GiB'):
        proc = s.imgutil('create', '-f', 'vpc', '-b', 'cli.vhd', '-F', 'vpc', 'b.vhd',
                         ok_codes=None)
        if proc.returncode == 0 or 'Backing file not supported' not in proc.stderr:
            raise wt.CheckFailed('backing: %s' % proc.stderr)
        proc = s.imgutil('create', '-f', 'vpc', 'big.vhd', '2041G', ok_codes=None)
        if proc.returncode == 0 or 'too large' not in proc.stderr:
            raise wt.CheckFailed('2041G: %s' % proc.stderr)
        s.imgutil('create', '-q', '-f', 'vpc', '-o', 'force_size=on', 'max.vhd', '2040G')
        same_json(s, 'info', 'info', '--output=json', 'max.vhd')


def main():
    s = wt.Suite('vpc-interop', sys.argv)
    rng = random.Random(s.seed(7202))
    qemu_to_here(s, rng)
    here_to_qemu(s, rng)
    size_rules(s)
    differencing(s, rng)
    samples(s)
    cli_behaviour(s)
    s.finish()


if __name__ == '__main__':
    main()
