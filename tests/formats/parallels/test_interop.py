#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Parallels images both ways against qemu-img 7.2 and qemu-io, made at test time:

  qemu -> here: images qemu-img creates (every cluster size, odd sizes) and qemu-io writes,
    and version 1 images derived from them, read byte for byte as qemu-img reads them, with
    the same info JSON, map JSON and check output and exit code;
  here -> qemu: images imgutil creates are byte-identical to qemu-img's, the option text is
    qemu-img's, and images imgutil converts to Parallels pass qemu-img check and compare;
  the real images of ../shared/testdata/qemu-samples (skipped when absent);
  DiskDescriptor.xml bundles, named by the folder or the descriptor, read here (qemu-img 7.2
    takes the descriptor for a raw file and cannot open the folder).

usage: test_interop.py
"""

import bz2
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prltest as pt  # noqa: E402

KIB, MIB = 1024, 1 << 20
# ../shared from the project root (a worktree sits one level deeper).
SAMPLES = next((p for p in (os.path.join(os.environ.get('IMGUTIL_SOURCE_ROOT', '.'), *up, 'shared',
                                         'testdata', 'qemu-samples')
                            for up in (('..',), ('..', '..')))
                if os.path.isdir(p)), '')
SAMPLE_SHA = '15faf41ebc93b5f734341cb7a2d909001e3f7306960f9d8bc63894f2a8e5bc45'


def qemu_made(s, name, size, cluster, writes):
    img = s.path(name)
    opts = ['-o', 'cluster_size=%d' % cluster] if cluster else []
    pt.must(s.qemu('create', '-q', '-f', 'parallels', *opts, img, size), 'qemu-img create')
    if writes:
        s.qemu_io(img, *writes)
    return img


def random_writes(rng, size, count):
    cmds = []
    for _ in range(count):
        length = min(size, rng.choice((512, 4096, 65536 + 512, 300 * KIB)))
        offset = rng.randrange(0, max(1, size - length)) // 512 * 512
        cmds.append('write -P 0x%02x %d %d' % (rng.randrange(1, 256), offset, length))
    return cmds


def to_version1(s, src, dst):
    """The same image as a version 1 file: the old magic, catalog entries in sectors."""
    shutil.copyfile(src, dst)
    tracks = pt.read_field(dst, pt.OFF['tracks'], 'I')
    entries = pt.read_field(dst, pt.OFF['bat_entries'], 'I')
    with open(dst, 'r+b') as f:
        f.seek(0)
        f.write(b'WithoutFreeSpace')
        f.seek(pt.HEADER)
        bat = list(pt.struct.unpack('<%dI' % entries, f.read(4 * entries)))
        f.seek(pt.HEADER)
        f.write(pt.struct.pack('<%dI' % entries, *[e * tracks for e in bat]))
        f.seek(pt.OFF['nb_sectors'] + 4)
        f.write(bytes(4))


def qemu_to_here(s, rng):
    cases = [
        ('c512.prl', 256 * KIB, 512, 12),
        ('c4k.prl', 3 * MIB + 512, 4096, 12),
        ('c64k.prl', 5 * MIB, 65536, 10),
        ('default.prl', 9 * MIB, None, 6),
        ('c2m.prl', 7 * MIB - 512, 2 * MIB, 4),
        ('empty.prl', 33 * MIB, 65536, 0),
    ]
    for name, size, cluster, count in cases:
        with s.check('qemu -> here: %s (%d bytes, cluster %s, %d writes)' % (
                name, size, cluster, count)):
            img = qemu_made(s, name, size, cluster, random_writes(rng, size, count))
            s.compare_all(img)
        with s.check('qemu -> here: %s as a version 1 image' % name):
            v1 = s.path('v1-' + name)
            to_version1(s, img, v1)
            s.compare_all(v1)
    with s.check('qemu -> here: a catalog shorter than the virtual size reads as qemu reads it'):
        img = qemu_made(s, 'short-bat.prl', 2 * MIB, 65536, ['write -P 0x5a 0 2M'])
        pt.patch(img, pt.OFF['nb_sectors'], 'Q', 8 * MIB // 512)
        s.compare_all(img)
    with s.check('qemu -> here: a cluster past the end of the file reads as zeros'):
        img = qemu_made(s, 'past-end.prl', MIB, 65536, ['write -P 0x6b 0 256k'])
        pt.patch(img, pt.HEADER + 4, 'I', 4096)
        s.same_content(img)
        s.same_answer('map', '--output=json', img)
        s.same_answer('check', img, stderr=True)


def here_to_qemu(s, rng):
    for opts, size in (('', '10M'), ('cluster_size=4k', '10M'), ('cluster_size=512', '1000'),
                       ('cluster_size=64k,preallocation=falloc', '3M'),
                       ('cluster_size=1000', '1M'), ('cluster_size=2M', '1G')):
        with s.check('here -> qemu: create %s %s is byte-identical to qemu-img\'s' % (opts, size)):
            extra = ['-o', opts] if opts else []
            a, b = s.path('mine.prl'), s.path('theirs.prl')
            ours = pt.must(s.ours('create', '-f', 'parallels', *extra, a, size), 'imgutil create')
            theirs = pt.must(s.qemu('create', '-f', 'parallels', *extra, b, size),
                             'qemu-img create')
            if ours.stdout.replace(a, 'X') != theirs.stdout.replace(b, 'X'):
                raise pt.Failed('Formatting lines differ:\n%s%s' % (ours.stdout, theirs.stdout))
            with open(a, 'rb') as fa, open(b, 'rb') as fb:
                if fa.read() != fb.read():
                    raise pt.Failed('imgutil create wrote other bytes than qemu-img create')
            s.same_answer('info', '--output=json', a=a, b=b)
    with s.check('here -> qemu: -o help lists qemu-img\'s options'):
        ours, theirs = s.ours('create', '-f', 'parallels', '-o', 'help'), s.qemu(
            'create', '-f', 'parallels', '-o', 'help')
        head = theirs.stdout.split('\n\n')[0]
        if not ours.stdout.startswith(head) or ours.returncode != 0:
            raise pt.Failed('imgutil:\n%s\nqemu-img:\n%s' % (ours.stdout, theirs.stdout))
    for cluster in (512, 4096, 65536, MIB):
        with s.check('here -> qemu: convert -O parallels (cluster %d) passes qemu-img check and '
                     'compare' % cluster):
            raw = s.path('src.raw')
            size = 6 * MIB + 512 * rng.randrange(1, 100)
            data = bytearray(size)
            for _ in range(20):
                at = rng.randrange(size)
                chunk = rng.randbytes(rng.choice((512, 4096, 100000)))
                data[at:at + len(chunk)] = chunk[:size - at]
            with open(raw, 'wb') as f:
                f.write(data)
            img = s.path('conv.prl')
            pt.must(s.ours('convert', '-O', 'parallels', '-o', 'cluster_size=%d' % cluster,
                           raw, img), 'imgutil convert')
            pt.must(s.qemu('check', img), 'qemu-img check')
            pt.must(s.qemu('compare', '-f', 'raw', '-F', 'parallels', raw, img),
                    'qemu-img compare')
            if pt.read_field(img, pt.OFF['inuse'], 'I') != 0:
                raise pt.Failed('the converted image is left marked in use')
            s.compare_all(img)
            # qemu-io writes more, imgutil reads it; then qemu reads what imgutil wrote on top.
            s.qemu_io(img, 'write -P 0x77 %d 70000' % (size // 2))
            s.compare_all(img)
            back = s.path('back.prl')
            pt.must(s.ours('convert', '-f', 'parallels', '-O', 'parallels', img, back),
                    'imgutil convert parallels -> parallels')
            pt.must(s.qemu('compare', img, back), 'qemu-img compare')
            pt.must(s.qemu('check', back), 'qemu-img check')


def samples(s):
    if not os.path.isdir(SAMPLES):
        print('(no qemu-samples folder: the real images are skipped)')
        return
    for name in ('parallels-v1', 'parallels-v2', 'parallels-with-bitmap'):
        with s.check('sample %s reads as qemu-img reads it' % name):
            img = s.path(name)
            with bz2.open(os.path.join(SAMPLES, name + '.bz2')) as f, open(img, 'wb') as out:
                shutil.copyfileobj(f, out)
            if name != 'parallels-with-bitmap':
                raw = s.path(name + '.raw')
                pt.must(s.ours('convert', '-O', 'raw', img, raw), 'imgutil convert')
                if pt.sha256(raw) != SAMPLE_SHA:
                    raise pt.Failed('sha256 %s, README says %s' % (pt.sha256(raw), SAMPLE_SHA))
            else:
                pt.must(s.ours('compare', img, img), 'imgutil compare')
                pt.must(s.qemu('compare', img, img), 'qemu-img compare')
            s.same_answer('info', '--output=json', img)
            s.same_answer('map', '--output=json', img)
            s.same_answer('check', img, stderr=True)
            s.same_answer('check', '--output=json', img)


DESCRIPTOR = '''<?xml version='1.0' encoding='UTF-8'?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters>
    <Disk_size>%(sectors)d</Disk_size>
    <Heads>16</Heads>
    <Sectors>32</Sectors>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>%(sectors)d</End>
      <Blocksize>128</Blocksize>
      <Image>
        <GUID>%(guid)s</GUID>
        <Type>Compressed</Type>
        <File>%(file)s</File>
      </Image>
    </Storage>
  </StorageData>
  <Snapshots>
    <TopGUID>%(guid)s</TopGUID>
    <Shot>
      <GUID>%(guid)s</GUID>
      <ParentGUID>%(parent)s</ParentGUID>
    </Shot>
  </Snapshots>
</Parallels_disk_image>
'''
NULL_GUID = '{00000000-0000-0000-0000-000000000000}'


def bundle(s, rng):
    guid = '{5fbaabe3-6958-40ff-92a7-860e329aab41}'
    folder = s.path('disk.hdd')
    os.mkdir(folder)
    hds = 'harddisk.hdd.0.%s.hds' % guid
    img = qemu_made(s, os.path.join('disk.hdd', hds), 4 * MIB, 65536,
                    random_writes(rng, 4 * MIB, 6))
    xml = os.path.join(folder, 'DiskDescriptor.xml')

    def descriptor(file, parent=NULL_GUID):
        with open(xml, 'w') as f:
            f.write(DESCRIPTOR % {'sectors': 8192, 'guid': guid, 'file': file,
                                  'parent': parent})

    descriptor(hds)
    with s.check('bundle: DiskDescriptor.xml, and its folder, read as the image it names'):
        a, b = s.path('xml.raw'), s.path('hds.raw')
        pt.must(s.ours('convert', '-O', 'raw', xml, a), 'imgutil convert of the descriptor')
        pt.must(s.qemu('convert', '-f', 'parallels', '-O', 'raw', img, b), 'qemu-img convert')
        if pt.sha256(a) != pt.sha256(b):
            raise pt.Failed('the descriptor reads other bytes than its image file')
        info = s.ours('info', '--output=json', xml)
        if '"format": "parallels"' not in info.stdout or '"virtual-size": 4194304' not in \
                info.stdout:
            raise pt.Failed('info of the descriptor: %s %s' % (info.stdout, info.stderr))
        ours = s.ours('map', '--output=json', xml).stdout
        theirs = s.qemu('map', '--output=json', img).stdout
        if ours != theirs:
            raise pt.Failed('map of the descriptor differs from qemu-img map of its image')
        # The folder itself names the bundle.
        c = s.path('folder.raw')
        pt.must(s.ours('convert', '-O', 'raw', folder, c), 'imgutil convert of the folder')
        if pt.sha256(c) != pt.sha256(b):
            raise pt.Failed('the folder reads other bytes than its image file')
        # What qemu-img 7.2 does with the descriptor: a raw file, or "not in Parallels format".
        proc = s.qemu('info', '-f', 'parallels', xml)
        if proc.returncode == 0 or 'Image not in Parallels format' not in proc.stderr:
            raise pt.Failed('qemu-img now opens descriptors: %s' % proc.stderr)
    with s.check('bundle: a descriptor naming a file outside its folder is refused'):
        outside = s.path('outside.hds')
        shutil.copyfile(img, outside)
        descriptor('../outside.hds')
        proc = s.ours('info', xml)
        if proc.returncode != 1 or 'outside the image\'s folder' not in proc.stderr:
            raise pt.Failed('exit %d: %s' % (proc.returncode, proc.stderr))
    with s.check('bundle: a snapshot chain is refused with a clear message'):
        descriptor(hds, parent='{11111111-0000-0000-0000-000000000000}')
        proc = s.ours('info', xml)
        if proc.returncode != 1 or 'chains of Parallels snapshots are not supported' not in \
                proc.stderr:
            raise pt.Failed('exit %d: %s' % (proc.returncode, proc.stderr))
    with s.check('bundle: entities in the file name are decoded'):
        amp = 'a&b.hds'
        shutil.copyfile(img, os.path.join(folder, amp))
        descriptor('a&amp;b.hds')
        pt.must(s.ours('info', xml), 'imgutil info')


def main():
    s = pt.Suite('parallels-interop')
    rng = random.Random(int(os.environ.get('PARALLELS_TEST_SEED', '20261206'), 0))
    qemu_to_here(s, rng)
    here_to_qemu(s, rng)
    samples(s)
    bundle(s, rng)
    s.finish()


if __name__ == '__main__':
    main()
