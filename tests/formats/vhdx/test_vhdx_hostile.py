#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Hostile VHDX images, crafted here from one the library creates: each is refused with a
clear message naming the problem (and without a crash: the suite also runs under ASan), or,
where QEMU accepts the image, read as QEMU reads it. Also a crafted differencing image (no
tool here makes one), read through its parent. Needs no qemu-img; where it is
installed, the BAT past the end of the file is also checked against qemu-img check.

usage: test_vhdx_hostile.py  (IMGUTIL_CLI names the imgutil binary)
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdxlib as vx  # noqa: E402

CLI = os.environ.get('IMGUTIL_CLI', 'imgutil')
SIZE = 20 * vx.MIB
failures = []


def run(*args):
    return subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60)


def expect(label, proc, rc, needle):
    out = proc.stdout + proc.stderr
    if proc.returncode != rc or needle not in out:
        failures.append(label)
        print('FAIL %s: exit %d (wanted %d), output %r (wanted %r)' % (
            label, proc.returncode, rc, out[-800:], needle))
    else:
        print('ok   %s' % label)


def differencing(tmp):
    """A differencing image crafted here (qemu-img cannot make one): its blocks fully
    present, partially present (a sector bitmap), not present (the parent's) and zero read
    as the specification says, the parent named by its locator's relative path."""
    mib = vx.MIB
    parent_raw = os.path.join(tmp, 'parent.raw')
    parent_content = bytes([0x11]) * mib + bytes([0x22]) * mib + bytes([0x33]) * mib + \
        bytes([0x44]) * mib
    with open(parent_raw, 'wb') as f:
        f.write(parent_content)
    parent = os.path.join(tmp, 'parent.vhdx')
    child = os.path.join(tmp, 'child.vhdx')
    for args in (['convert', '-O', 'vhdx', '-o', 'block_size=1M', parent_raw, parent],
                 ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,block_state_zero=off',
                  child, str(4 * mib)]):
        p = run(CLI, *args)
        if p.returncode != 0:
            failures.append('differencing: setup')
            print('FAIL differencing setup: %s' % p.stderr)
            return
    img = vx.Image(child)
    vx.make_differencing(img, '.\\parent.vhdx')
    b0 = vx.append_block(img, bytes([0xc1]) * mib)
    b1 = vx.append_block(img, bytes([0xc2]) * mib)
    bitmap = bytearray(mib)
    present = list(range(2048, 2148)) + list(range(3000, 4000))
    for sector in present:
        bitmap[sector // 8] |= 1 << (sector % 8)
    bm = vx.append_block(img, bytes(bitmap))
    chunk_ratio = (1 << 23) * 512 // mib
    img.set_bat(0, b0 | 6)
    img.set_bat(1, b1 | 7)
    img.set_bat(3, 2)
    img.set_bat(chunk_ratio, bm | 6)
    img.save()
    expected = bytearray(bytes([0xc1]) * mib + parent_content[mib:3 * mib] + bytes(mib))
    for sector in present:
        at = sector * 512  # block 1 starts at sector 2048 of the chunk, at byte 1 MiB
        expected[at:at + 512] = bytes([0xc2]) * 512
    out = child + '.raw'
    p = run(CLI, 'convert', '-O', 'raw', child, out)
    got = open(out, 'rb').read() if p.returncode == 0 else b''
    if got != bytes(expected):
        failures.append('differencing: content')
        first = next((i for i in range(min(len(got), len(expected))) if got[i] != expected[i]),
                     None)
        print('FAIL differencing image content (exit %d, %s; first difference at %s)' % (
            p.returncode, p.stderr.strip(), first))
    else:
        print('ok   differencing image reads through its parent')
    expect('differencing image: info names the parent', run(CLI, 'info', child), 0,
           'backing file: parent.vhdx')
    nopath = os.path.join(tmp, 'nopath.vhdx')
    run(CLI, 'create', '-q', '-f', 'vhdx', nopath, str(4 * mib))
    img = vx.Image(nopath)
    vx.make_differencing(img, 'x', locator=vx.parent_locator([('parent_linkage', 'x')]))
    img.save()
    expect('differencing image without a parent path', run(CLI, 'info', nopath), 1,
           'names no parent path')


def main():
    tmp = tempfile.mkdtemp(prefix='imgutil-vhdx-hostile-')
    base = os.path.join(tmp, 'base.vhdx')
    p = run(CLI, 'create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,block_state_zero=off',
            base, str(SIZE))
    if p.returncode != 0:
        print('cannot create the base image: %s' % p.stderr)
        return 1
    p = run(CLI, 'io', '-f', 'vhdx', '-c', 'write -P 0x5a 0 3M', base)
    if p.returncode != 0:
        # Without an io command the blocks are written by converting a patterned raw file.
        raw = os.path.join(tmp, 'src.raw')
        with open(raw, 'wb') as f:
            f.write(b'\x5a' * (3 * vx.MIB))
            f.truncate(SIZE)
        os.unlink(base)
        p = run(CLI, 'convert', '-O', 'vhdx', '-o', 'block_size=1M,block_state_zero=off', raw,
                base)
        if p.returncode != 0:
            print('cannot write the base image: %s' % p.stderr)
            return 1
    n = [0]

    def variant(patch):
        n[0] += 1
        path = os.path.join(tmp, 'v%d.vhdx' % n[0])
        shutil.copyfile(base, path)
        img = vx.Image(path)
        patch(img)
        img.save()
        return path

    def refused(label, patch, needle, rw=False):
        path = variant(patch)
        if rw:
            proc = run(CLI, 'check', '-r', 'all', path)
        else:
            proc = run(CLI, 'info', path)
        expect(label, proc, 1, needle)

    # The file and headers.
    def truncate(img):
        del img.data[100:]
    refused('truncated to 100 bytes', truncate, 'no valid VHDX header found')

    def break_headers(img):
        for h in vx.HEADER_OFFSETS:
            img.data[h + 100] ^= 0xff
    refused('both header checksums wrong', break_headers, 'no valid VHDX header found')

    def log_version(img):
        h = img.active_header()
        struct.pack_into('<H', h, 64, 7)
        img.put_headers(h)
    refused('unknown log version', log_version, 'log version 7 is not supported')

    # The region table.
    def too_many_regions(img):
        t = img.region_table()
        struct.pack_into('<I', t, 8, 5000)
        img.put_region_tables(t)
    refused('region table with 5000 entries', too_many_regions, 'has 5000 entries')

    def region_on_log(img):
        t = img.region_table()
        for i in range(2):
            if t[16 + 32 * i:32 + 32 * i] == vx.BAT_GUID:
                struct.pack_into('<Q', t, 32 + 32 * i, img.log_offset)
        img.put_region_tables(t)
    refused('BAT region on the log', region_on_log, 'overlaps another region')

    def bad_region_crc(img):
        for r in vx.REGION_OFFSETS:
            img.data[r + 1000] ^= 1
    refused('region table checksum wrong', bad_region_crc, 'region table is corrupt')

    def huge_bat_region(img):
        t = img.region_table()
        for i in range(2):
            if t[16 + 32 * i:32 + 32 * i] == vx.BAT_GUID:
                struct.pack_into('<QI', t, 32 + 32 * i, 64 * vx.MIB, 0xfff00000)
        img.put_region_tables(t)
        at = img.item_offset(vx.VIRTUAL_SIZE_GUID)
        struct.pack_into('<Q', img.data, at, 64 << 40)
    refused('a 64 TiB disk whose BAT would be past the end of the file', huge_bat_region,
            'past the end of the file')

    # Metadata.
    def block_size(value):
        def patch(img):
            struct.pack_into('<I', img.data, img.item_offset(vx.FILE_PARAMS_GUID), value)
        return patch
    refused('block size 3 MiB', block_size(3 * vx.MIB), 'invalid block size 3145728')
    refused('block size 2 GiB', block_size(1 << 31), 'invalid block size 2147483648')
    refused('block size 0', block_size(0), 'invalid block size 0')

    def virtual_size(value):
        def patch(img):
            struct.pack_into('<Q', img.data, img.item_offset(vx.VIRTUAL_SIZE_GUID), value)
        return patch
    refused('virtual size 2^63', virtual_size(1 << 63), 'invalid virtual disk size')
    refused('virtual size not a sector multiple', virtual_size(SIZE + 3),
            'invalid virtual disk size')
    refused('virtual size larger than the BAT', virtual_size(1 << 40), 'is too small for')

    def item_out_of_bounds(img):
        e = img.item_entry(vx.VIRTUAL_SIZE_GUID)
        struct.pack_into('<I', img.data, e + 16, 0xfffffff0)
    refused('metadata item past its region', item_out_of_bounds, 'out of bounds')

    def no_signature(img):
        img.data[img.metadata_offset:img.metadata_offset + 8] = b'notmeta!'
    refused('metadata table without signature', no_signature, 'has no signature')

    # The BAT.
    def bat_past_end(img):
        img.set_bat(1, (1 << 40) | 6)
    refused('BAT entry past the end of the file', bat_past_end,
            'VHDX BAT entry 1 start offset 1099511627776 points after end of file')

    def bat_on_metadata(img):
        img.set_bat(0, img.metadata_offset | 6)
    refused('BAT entry on the metadata region', bat_on_metadata, 'overlaps with region')

    def bat_bad_state(img):
        img.set_bat(0, img.bat(0) & ~7 | 4)
    path = variant(bat_bad_state)
    expect('BAT entry in an invalid state fails the read', run(CLI, 'convert', '-O', 'raw',
                                                               path, path + '.raw'),
           1, 'invalid state 4')

    # The log.
    def log_into_header(img):
        guid = vx.new_guid()
        sector = bytes(4096)
        entry = vx.log_entry(guid, 1, [(vx.HEADER_OFFSETS[0], sector)], len(img.data))
        vx.plant_log(img, entry, guid)
    refused('log entry writing over a header (read-only open)', log_into_header,
            'contains a log that needs to be replayed')
    refused('log entry writing over a header (replay)', log_into_header,
            'outside the image\'s metadata', rw=True)

    def log_past_end(img):
        guid = vx.new_guid()
        entry = vx.log_entry(guid, 1, [(len(img.data) + 4096 * 10, bytes(4096))], len(img.data))
        vx.plant_log(img, entry, guid)
    refused('log entry writing past the end of the file', log_past_end,
            'outside the image\'s metadata', rw=True)

    def log_zero_everything(img):
        guid = vx.new_guid()
        entry = vx.log_entry(guid, 1, [], len(img.data), zeros=[(img.bat_offset, 1 << 50)])
        vx.plant_log(img, entry, guid)
    refused('log entry zeroing 1 PiB', log_zero_everything, 'outside the image\'s metadata',
            rw=True)

    def log_truncated_file(img):
        guid = vx.new_guid()
        sector = bytes(img.data[img.bat_offset:img.bat_offset + 4096])
        entry = vx.log_entry(guid, 1, [(img.bat_offset, sector)], len(img.data) * 4)
        vx.plant_log(img, entry, guid)
    refused('log entry expecting a larger file', log_truncated_file,
            'has probably been truncated', rw=True)

    # Logs QEMU ignores are ignored: a bad checksum, an absurd length, another GUID.
    def ignored(label, patch):
        path = variant(patch)
        proc = run(CLI, 'check', '-r', 'all', path)
        expect(label + ': open succeeds, nothing replayed', proc, 0,
               'No errors were found on the image.')
        proc = run(CLI, 'info', path)
        expect(label + ': the log is empty afterwards', proc, 0, 'file format: vhdx')

    def bad_crc(img):
        guid = vx.new_guid()
        entry = vx.log_entry(guid, 1, [(img.bat_offset, bytes(4096))], len(img.data))
        entry[100] ^= 1
        vx.plant_log(img, entry, guid)
    ignored('log entry with a bad checksum', bad_crc)

    def absurd_length(img):
        guid = vx.new_guid()
        entry = vx.log_entry(guid, 1, [(img.bat_offset, bytes(4096))], len(img.data),
                             length=0xfffff000)
        vx.plant_log(img, entry, guid)
    ignored('log entry longer than the log', absurd_length)

    def other_guid(img):
        entry = vx.log_entry(vx.new_guid(), 1, [(img.bat_offset, bytes(4096))], len(img.data))
        vx.plant_log(img, entry, vx.new_guid())
    ignored('log entry of another log GUID', other_guid)

    # A valid log is replayed: the BAT sector it carries zeroes the first block's entry.
    def valid_log(img):
        guid = vx.new_guid()
        sector = bytearray(img.data[img.bat_offset:img.bat_offset + 4096])
        struct.pack_into('<Q', sector, 0, 2)  # block 0: ZERO
        entry = vx.log_entry(guid, 1, [(img.bat_offset, bytes(sector))], len(img.data))
        vx.plant_log(img, entry, guid)
    path = variant(valid_log)
    expect('valid log: read-only open refused', run(CLI, 'info', path), 1,
           'opened read-only, but contains a log that needs to be replayed')
    proc = run(CLI, 'check', '-r', 'all', path)
    expect('valid log: check -r all replays it', proc, 0, '1 corruptions')
    raw = path + '.raw'
    proc = run(CLI, 'convert', '-O', 'raw', path, raw)
    with open(raw, 'rb') as f:
        head = f.read(2 * vx.MIB)
    if proc.returncode != 0 or head != bytes(vx.MIB) + b'\x5a' * vx.MIB:
        failures.append('valid log: replayed content')
        print('FAIL valid log: the replayed image does not read zeros then the pattern (%s)' %
              proc.stderr)
    else:
        print('ok   valid log: the replayed image reads as the log said')

    differencing(tmp)

    if shutil.which('qemu-img'):
        path = variant(bat_past_end)
        ours = run(CLI, 'check', path)
        theirs = run('qemu-img', 'check', path)
        # qemu-img prefixes the finding with its name; the rest is the same.
        if (ours.returncode, ours.stdout, ours.stderr) != (
                theirs.returncode, theirs.stdout, theirs.stderr.replace('qemu-img: ', '')):
            failures.append('check of a BAT past the end matches qemu-img')
            print('FAIL check of a BAT past the end: ours %d %r %r, qemu-img %d %r %r' % (
                ours.returncode, ours.stdout, ours.stderr, theirs.returncode, theirs.stdout,
                theirs.stderr))
        else:
            print('ok   check of a BAT past the end matches qemu-img (exit %d)' %
                  ours.returncode)

    if failures:
        print('%d failed (images kept in %s)' % (len(failures), tmp))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print('all passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
