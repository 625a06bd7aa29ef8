# SPDX-License-Identifier: LGPL-2.1-or-later
"""Reading and patching VHDX structures in the tests, written from the specification (not
from the library): CRC-32C, the headers, the region table, the metadata items, the BAT and
log entries."""

import os
import struct
import uuid

MIB = 1 << 20
HEADER_OFFSETS = (64 * 1024, 128 * 1024)
REGION_OFFSETS = (192 * 1024, 256 * 1024)
BAT_GUID = bytes.fromhex('6677c22d23f600429d64115e9bfd4a08')
METADATA_GUID = bytes.fromhex('06a27c8b90479a4bb8fe575f050f886e')
FILE_PARAMS_GUID = bytes.fromhex('3767a1ca36fa434db3b633f0aa44e76b')
VIRTUAL_SIZE_GUID = bytes.fromhex('2442a52f1bcd7648b2115dbed83bf4b8')

_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def with_checksum(buf, at=4):
    """`buf` (bytearray) with the CRC-32C at `at` computed over the whole of it."""
    struct.pack_into('<I', buf, at, 0)
    struct.pack_into('<I', buf, at, crc32c(bytes(buf)))
    return buf


class Image:
    """A VHDX file's layout, as the active header and the region table name it."""

    def __init__(self, path):
        self.path = path
        with open(path, 'rb') as f:
            self.data = bytearray(f.read())
        seqs = [struct.unpack_from('<Q', self.data, h + 8)[0] for h in HEADER_OFFSETS]
        self.header = HEADER_OFFSETS[0] if seqs[0] >= seqs[1] else HEADER_OFFSETS[1]
        self.log_length, self.log_offset = struct.unpack_from('<IQ', self.data,
                                                              self.header + 68)
        count = struct.unpack_from('<I', self.data, REGION_OFFSETS[0] + 8)[0]
        for i in range(count):
            e = REGION_OFFSETS[0] + 16 + 32 * i
            off, length = struct.unpack_from('<QI', self.data, e + 16)
            if self.data[e:e + 16] == BAT_GUID:
                self.bat_offset, self.bat_length = off, length
            elif self.data[e:e + 16] == METADATA_GUID:
                self.metadata_offset = off
        self.items = {}
        mcount = struct.unpack_from('<H', self.data, self.metadata_offset + 10)[0]
        for i in range(mcount):
            e = self.metadata_offset + 32 + 32 * i
            self.items[bytes(self.data[e:e + 16])] = e
        params = self.item_offset(FILE_PARAMS_GUID)
        self.block_size = struct.unpack_from('<I', self.data, params)[0]

    def item_offset(self, guid):
        """File offset of a metadata item's data."""
        e = self.items[guid]
        return self.metadata_offset + struct.unpack_from('<I', self.data, e + 16)[0]

    def item_entry(self, guid):
        return self.items[guid]

    def bat(self, index):
        return struct.unpack_from('<Q', self.data, self.bat_offset + 8 * index)[0]

    def set_bat(self, index, entry):
        struct.pack_into('<Q', self.data, self.bat_offset + 8 * index, entry)

    def region_table(self):
        return bytearray(self.data[REGION_OFFSETS[0]:REGION_OFFSETS[0] + 64 * 1024])

    def put_region_tables(self, table):
        with_checksum(table)
        for r in REGION_OFFSETS:
            self.data[r:r + len(table)] = table

    def active_header(self):
        return bytearray(self.data[self.header:self.header + 4096])

    def put_headers(self, header):
        """Writes `header` (checksummed here) as both headers, the second one a sequence
        number higher."""
        seq = struct.unpack_from('<Q', header, 8)[0]
        for i, h in enumerate(HEADER_OFFSETS):
            struct.pack_into('<Q', header, 8, seq + i)
            with_checksum(header)
            self.data[h:h + 4096] = header
        self.header = HEADER_OFFSETS[1]

    def save(self, path=None):
        with open(path or self.path, 'wb') as f:
            f.write(self.data)


def log_entry(log_guid, sequence, sectors, file_size, zeros=(), length=None):
    """One log entry writing `sectors` ([(file offset, 4096 bytes)]) and zeroing `zeros`
    ([(file offset, length)]), checksummed. `length` overrides the entry length field."""
    count = len(sectors) + len(zeros)
    desc_sectors = (count + 2 + 127) // 128
    total = (desc_sectors + len(sectors)) * 4096
    buf = bytearray(total)
    struct.pack_into('<4sIIIQII16sQQ', buf, 0, b'loge', 0, length or total, 0, sequence,
                     count, 0, log_guid, file_size, file_size)
    for i, (off, data) in enumerate(sectors):
        d = 64 + 32 * i
        struct.pack_into('<4s4s8sQQ', buf, d, b'desc', data[4092:4096], data[0:8], off,
                         sequence)
        s = (desc_sectors + i) * 4096
        struct.pack_into('<4sI', buf, s, b'data', sequence >> 32)
        buf[s + 8:s + 4092] = data[8:4092]
        struct.pack_into('<I', buf, s + 4092, sequence & 0xFFFFFFFF)
    for j, (off, zlen) in enumerate(zeros):
        d = 64 + 32 * (len(sectors) + j)
        struct.pack_into('<4sIQQQ', buf, d, b'zero', 0, zlen, off, sequence)
    return with_checksum(buf)


def plant_log(img, entry, guid=None):
    """Puts `entry` at the start of the log and makes both headers name its GUID."""
    guid = guid or bytes(entry[32:48])
    img.data[img.log_offset:img.log_offset + len(entry)] = entry
    header = img.active_header()
    header[48:64] = guid
    img.put_headers(header)


def new_guid():
    return uuid.uuid4().bytes_le


def file_size(path):
    return os.path.getsize(path)


PARENT_LOCATOR_GUID = bytes.fromhex('2d5fd3a80bb34d45abf7d3d84834ab0c')
PARENT_VHDX_TYPE = bytes.fromhex('b7ef4ab09ed1814ab78925b8e9445913')


def parent_locator(entries):
    """A VHDX parent locator item holding the (key, value) string pairs."""
    head = bytearray(PARENT_VHDX_TYPE + struct.pack('<HH', 0, len(entries)))
    table = bytearray()
    strings = bytearray()
    base = 20 + 12 * len(entries)
    for key, value in entries:
        k, v = key.encode('utf-16-le'), value.encode('utf-16-le')
        koff = base + len(strings)
        strings += k
        voff = base + len(strings)
        strings += v
        table += struct.pack('<IIHH', koff, voff, len(k), len(v))
    return bytes(head + table + strings)


def make_differencing(img, parent_path, locator=None):
    """Turns a dynamic image (made with block_state_zero=off) into a differencing one naming
    `parent_path`: the has-parent flag, a parent locator item after the other items."""
    params = img.item_offset(FILE_PARAMS_GUID)
    flags = struct.unpack_from('<I', img.data, params + 4)[0]
    struct.pack_into('<I', img.data, params + 4, flags | 2)
    count = struct.unpack_from('<H', img.data, img.metadata_offset + 10)[0]
    last = max(struct.unpack_from('<II', img.data, e + 16) for e in img.items.values())
    at = last[0] + last[1]
    item = locator or parent_locator([('parent_linkage', '{%s}' % uuid.uuid4()),
                                      ('relative_path', parent_path)])
    e = img.metadata_offset + 32 + 32 * count
    struct.pack_into('<16sIII', img.data, e, PARENT_LOCATOR_GUID, at, len(item), 4)
    struct.pack_into('<H', img.data, img.metadata_offset + 10, count + 1)
    img.data[img.metadata_offset + at:img.metadata_offset + at + len(item)] = item
    img.items[PARENT_LOCATOR_GUID] = e


def append_block(img, content):
    """Appends `content` at the next 1 MiB boundary; returns its offset."""
    off = (len(img.data) + MIB - 1) // MIB * MIB
    img.data += bytes(off - len(img.data))
    img.data += content
    return off
