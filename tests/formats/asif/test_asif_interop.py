#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""ASIF against qemu-img and the independent reader (asif_ref.py). qemu-img does not know
ASIF, so the references are round trips: images made by qemu-img/qemu-io (raw, qcow2 with and
without compressed clusters) are converted to ASIF here, then back to raw and qcow2 here, and
compared with the source by `qemu-img compare`; every ASIF file written here is also read by
the independent reader and must hold the source's bytes, laid out as diskutil's images are.

usage: test_asif_interop.py WRITE_DRIVER
"""

import json
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'write'))
sys.path.insert(0, HERE)
import writetest as wt  # noqa: E402
import asif_ref  # noqa: E402

MIB = 1 << 20


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def expect(cond, message):
    if not cond:
        raise wt.CheckFailed(message)


def source_images(s):
    """(name, format) of images qemu-img and qemu-io make, with data in whole chunks, parts
    of chunks, at chunk-group and table edges and at the end."""
    raw = s.path('src.raw')
    wt.qemu_img('create', '-f', 'raw', raw, '40M')
    wt.qemu_io(raw, ['write -P 0x11 0 1M', 'write -P 0x22 5M 3M', 'write -P 0x33 130000 777',
                     'write -P 0x44 39M 512k', 'write -P 0x66 20M 4k'], fmt='raw')
    wt.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw, s.path('src.qcow2'))
    wt.qemu_img('convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, s.path('srcc.qcow2'))
    # An odd size: the last chunk is short.
    odd = s.path('odd.qcow2')
    wt.qemu_img('create', '-f', 'qcow2', odd, str(3 * MIB + 1536))
    wt.qemu_io(odd, ['write -P 0x77 0 3M', 'write -P 0x78 3M 1536'])
    return [('src.raw', 'raw'), ('src.qcow2', 'qcow2'), ('srcc.qcow2', 'qcow2'),
            ('odd.qcow2', 'qcow2')]


def check_layout(img, size):
    """What the description says diskutil writes: chunk 1 MiB, block 512, the maximum size,
    both directories, the metadata chunk at the top with a stable uuid."""
    expect(img.chunk_size == MIB and img.block_size == 512,
           'chunk/block size %d/%d' % (img.chunk_size, img.block_size))
    expect(img.max_sectors == (1 << 52) // 512, 'max sectors %d' % img.max_sectors)
    expect(img.size == size, 'size %d, expected %d' % (img.size, size))
    expect(img.header_size == 0x200 and img.flags == 0, 'header size/flags')
    expect(img.meta_chunk == (1 << 32) - 1, 'metadata chunk %d' % img.meta_chunk)
    expect(len(set(img.dir_offsets)) == 2, 'two directories: %r' % (img.dir_offsets,))
    meta = img.metadata()
    stable = meta['internal metadata']['stable uuid']
    uuid.UUID(stable)
    expect(meta['user metadata'] == {}, 'user metadata %r' % meta['user metadata'])
    return stable


def main():
    s = wt.Suite('asif-interop', sys.argv)
    sources = []
    with s.check('qemu-img and qemu-io make the sources'):
        sources = source_images(s)

    for name, fmt in sources:
        base = name.replace('.', '-')
        asif = base + '.asif'
        with s.check('%s -> asif (imgutil convert) reads back in the independent reader' % name):
            s.imgutil('convert', '-f', fmt, '-O', 'asif', name, asif)
            wt.qemu_img('convert', '-f', fmt, '-O', 'raw', s.path(name), s.path(base + '.ref'))
            img = asif_ref.Image(read_file(s.path(asif)))
            check_layout(img, os.path.getsize(s.path(base + '.ref')))
            expect(img.read_all() == read_file(s.path(base + '.ref')),
                   'the independent reader reads other bytes than qemu-img convert -O raw')
        for out_fmt in ('raw', 'qcow2'):
            with s.check('%s -> asif -> %s (imgutil) equals the source (qemu-img compare)' %
                         (name, out_fmt)):
                out = base + '.back.' + out_fmt
                s.imgutil('convert', '-f', 'asif', '-O', out_fmt, asif, out)
                wt.qemu_img('compare', '-f', fmt, '-F', out_fmt, s.path(name), s.path(out))
                if out_fmt == 'qcow2':
                    wt.assert_qemu_check(s.path(out))
        with s.check('%s as asif: info and map' % name):
            info = json.loads(s.imgutil('info', '--output=json', asif).stdout)
            img = asif_ref.Image(read_file(s.path(asif)))
            expect(info['format'] == 'asif' and info['virtual-size'] == img.size and
                   info['cluster-size'] == MIB, 'info: %r' % info)
            data = info['format-specific']['data']
            expect(info['format-specific']['type'] == 'asif', 'type')
            expect(data['uuid'] == str(img.uuid), 'uuid %s, header %s' % (data['uuid'], img.uuid))
            expect(data['stable-uuid'] == img.metadata()['internal metadata']['stable uuid'],
                   'stable uuid')
            expect(data['chunk-size'] == MIB and data['block-size'] == 512, 'sizes')
            extents = json.loads(s.imgutil('map', '--output=json', asif).stdout)
            # The map covers the image, and its data extents hold what the reader reads.
            pos = 0
            raw = read_file(s.path(asif))
            for e in extents:
                expect(e['start'] == pos, 'map gap at %d' % pos)
                pos += e['length']
                if e['data']:
                    expect(raw[e['offset']:e['offset'] + e['length']] ==
                           img.read(e['start'], e['length']), 'map offset of %r' % e)
                else:
                    expect(img.read(e['start'], e['length']) == bytes(e['length']),
                           'a hole in the map holds data: %r' % e)
            expect(pos == img.size, 'map ends at %d' % pos)

    with s.check('new tables are linked through the inactive directory, then its sequence'):
        # Tables cover 126 GiB: data in two tables switches the directory twice.
        big = s.path('big.qcow2')
        wt.qemu_img('create', '-f', 'qcow2', big, '300G')
        wt.qemu_io(big, ['write -P 0x5a 1M 64k', 'write -P 0xa5 200G 1M'])
        s.imgutil('convert', '-f', 'qcow2', '-O', 'asif', 'big.qcow2', 'big.asif')
        data = read_file(s.path('big.asif'))
        img = asif_ref.Image(data)
        expect(img.seqs == [3, 2] and img.active == 0, 'sequence numbers %r' % (img.seqs,))
        # The older directory is the state before the last table (convert writes in parallel,
        # so either may come last): it lacks that table only.
        t = img.g.t
        older = asif_ref.struct.unpack_from('>%dQ' % t, data, img.dir_offsets[1] + 8)
        table1 = (200 << 30) // img.g.d
        missing = [i for i in range(t) if older[i] != img.directory[i]]
        expect(len(missing) == 1 and missing[0] in (0, table1) and older[missing[0]] == 0 and
               img.directory[0] and img.directory[table1] and
               older[t - 1] == img.directory[t - 1] == 1, 'directories %r / %r' % (
                   [i for i, e in enumerate(older) if e], [i for i, e in enumerate(img.directory)
                                                           if e]))
        expect(img.read(MIB, 64 << 10) == bytes([0x5a]) * (64 << 10) and
               img.read(200 << 30, MIB) == bytes([0xa5]) * MIB, 'data in the two tables')
        s.imgutil('convert', '-f', 'asif', '-O', 'qcow2', 'big.asif', 'big.back.qcow2')
        wt.qemu_img('compare', big, s.path('big.back.qcow2'))
        s.imgutil('convert', '-f', 'asif', '-O', 'asif', 'big.asif', 'big2.asif')
        expect(asif_ref.Image(read_file(s.path('big2.asif'))).read(200 << 30, MIB) ==
               bytes([0xa5]) * MIB, 'asif -> asif')

    with s.check('create -f asif: layout of diskutil images, empty, fresh stable uuid'):
        s.imgutil('create', '-f', 'asif', 'new1.asif', '10G')
        s.imgutil('create', '-f', 'asif', 'new2.asif', '1G')
        a = asif_ref.Image(read_file(s.path('new1.asif')))
        b = asif_ref.Image(read_file(s.path('new2.asif')))
        sa, sb = check_layout(a, 10 << 30), check_layout(b, 1 << 30)
        expect(sa != sb and a.uuid != b.uuid, 'uuids are not fresh')
        expect(a.chunk_statuses()[0] == 10240, 'a new image has written chunks')
        expect(os.path.getsize(s.path('new1.asif')) == 4 * MIB, 'file size %d' %
               os.path.getsize(s.path('new1.asif')))
        out = s.imgutil('create', '-f', 'asif', 'new3.asif', '1M').stdout
        expect("Formatting 'new3.asif', fmt=asif size=1048576" in out, out)

    with s.check('create -f asif: sizes round up to the block size; past the maximum refused'):
        s.imgutil('create', '-f', 'asif', 'odd.asif', '1000')
        expect(asif_ref.Image(read_file(s.path('odd.asif'))).size == 1024, 'size')
        proc = s.imgutil('create', '-f', 'asif', 'huge.asif', '4P', ok_codes=(1,))
        expect('larger than the largest ASIF image' in proc.stderr, proc.stderr)

    with s.check('resize: grow and shrink within the maximum, read by the independent reader'):
        s.imgutil('convert', '-f', 'raw', '-O', 'asif', 'src.raw', 'rs.asif')
        s.imgutil('resize', 'rs.asif', '50M')
        img = asif_ref.Image(read_file(s.path('rs.asif')))
        ref = read_file(s.path('src-raw.ref'))
        expect(img.size == 50 * MIB and img.read_all() == ref + bytes(10 * MIB), 'grown')
        s.imgutil('resize', '--shrink', 'rs.asif', str(5 * MIB + 4096))
        s.imgutil('resize', 'rs.asif', '40M')
        img = asif_ref.Image(read_file(s.path('rs.asif')))
        want = ref[:5 * MIB + 4096] + bytes(40 * MIB - 5 * MIB - 4096)
        expect(img.read_all() == want, 'shrunk then grown: the cut-off data came back')
        proc = s.imgutil('resize', '--preallocation=full', 'rs.asif', '60M', ok_codes=(1,))
        expect("preallocation mode 'full' is not supported" in proc.stderr, proc.stderr)
        expect(asif_ref.Image(read_file(s.path('rs.asif'))).size == 40 * MIB, 'size changed')
        proc = s.imgutil('resize', 'rs.asif', '4P', ok_codes=(1,))
        expect("past the image's maximum size" in proc.stderr, proc.stderr)
        proc = s.imgutil('resize', 'rs.asif', '1000', ok_codes=(1,))
        expect('not a multiple of the block size' in proc.stderr or 'shrink' in proc.stderr,
               proc.stderr)

    with s.check('check: "This image format does not support checks", as qemu-img says'):
        proc = s.imgutil('check', 'new2.asif', ok_codes=(63,))
        expect('does not support checks' in proc.stdout + proc.stderr, proc.stdout)

    s.finish()


if __name__ == '__main__':
    main()
