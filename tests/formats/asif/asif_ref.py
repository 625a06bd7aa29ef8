# SPDX-License-Identifier: LGPL-2.1-or-later
"""An independent ASIF reader and a crafting writer, written from the published description
of the layout (github.com/huven/asif-format, README.md: header 'shdw', two directories with
sequence numbers, tables of chunk groups of 4 x block-size data entries and one bitmap entry,
two status bits and a 55-bit chunk number per entry, two bitmap bits per sector, the metadata
chunk with its 'meta' header and property list), not from the library's code. The tests use
it to judge the images the library writes, and to lay out images for the library to read.
"""

import plistlib
import struct
import uuid as uuidlib

INDEX_MASK = (1 << 55) - 1
RESERVED_MASK = 0x3F80000000000000


class Refused(Exception):
    """A state the description does not characterise, or a bound broken."""


class Geometry:
    def __init__(self, block_size, chunk_size, max_sectors):
        self.block_size = block_size
        self.chunk_size = chunk_size
        self.max_sectors = max_sectors
        self.n = 4 * block_size                       # data entries per chunk group
        self.s = 8 * (self.n + 1)                     # bytes per chunk group
        self.c = chunk_size // self.s                 # groups per table
        self.d = self.c * self.n * chunk_size         # data bytes per table
        max_bytes = max_sectors * block_size
        self.t = -(-max_bytes // self.d)              # directory entries
        self.sectors_per_chunk = chunk_size // block_size

    def place(self, logical):
        """(table, byte offset of the data entry in the table chunk, byte offset of the
        group's bitmap entry, data entry index in its group, offset in the chunk)."""
        table, rel = divmod(logical, self.d)
        group, rel = divmod(rel, self.n * self.chunk_size)
        slot, within = divmod(rel, self.chunk_size)
        return table, group * self.s + 8 * slot, group * self.s + 8 * self.n, slot, within


class Image:
    """Reads an ASIF file (bytes) by the description."""

    def __init__(self, data):
        self.data = data
        if len(data) < 0x50 or data[:4] != b'shdw':
            raise Refused('no shdw header')
        (self.version, self.header_size, self.flags, d0, d1) = struct.unpack_from('>IIIQQ', data, 4)
        self.uuid = uuidlib.UUID(bytes=data[0x20:0x30])
        (self.sectors, self.max_sectors, self.chunk_size, self.block_size, self.segments,
         self.meta_chunk) = struct.unpack_from('>QQIHHQ', data, 0x30)
        if self.version != 1 or self.segments != 0:
            raise Refused('version %d, segments %d' % (self.version, self.segments))
        self.g = Geometry(self.block_size, self.chunk_size, self.max_sectors)
        self.dir_offsets = (d0, d1)
        self.seqs = [self.u64(d) for d in self.dir_offsets]
        # The highest sequence number is in force.
        self.active = 0 if self.seqs[0] >= self.seqs[1] else 1
        base = self.dir_offsets[self.active] + 8
        if base + 8 * self.g.t > len(self.data):
            raise Refused('directory past the end')
        self.directory = list(struct.unpack_from('>%dQ' % self.g.t, self.data, base))
        self.size = self.sectors * self.block_size

    def u64(self, off):
        if off + 8 > len(self.data):
            raise Refused('read of 8 bytes at 0x%x past the end' % off)
        return struct.unpack_from('>Q', self.data, off)[0]

    def chunk_bytes(self, index, within, length):
        if index == 0 or index * self.chunk_size >= len(self.data):
            raise Refused('chunk %d outside the file' % index)
        start = index * self.chunk_size + within
        piece = self.data[start:start + length]
        return piece + bytes(length - len(piece))

    def entries(self, logical):
        """(data entry, bitmap entry) for a logical offset, or (0, 0) without a table."""
        table, data_off, bitmap_off, _, _ = self.g.place(logical)
        tchunk = self.directory[table]
        if tchunk == 0:
            return 0, 0
        base = tchunk * self.chunk_size
        return self.u64(base + data_off), self.u64(base + bitmap_off)

    def sector_state(self, logical):
        data, bitmap = self.entries(logical)
        status, index = data >> 62, data & INDEX_MASK
        _, _, _, slot, within = self.g.place(logical)
        if status in (0, 2):
            if index:
                raise Refused('status %d%d with chunk number %d' % (status >> 1, status & 1, index))
            return 'zero', None
        if status == 1:
            return 'data', (index, within)
        if bitmap == 0:
            raise Refused('partly written chunk without a bitmap chunk')
        sector = (slot * self.chunk_size + within) // self.block_size
        byte = self.chunk_bytes(bitmap & INDEX_MASK, sector // 4, 1)[0]
        state = (byte >> ((sector % 4) * 2)) & 3
        if state == 0:
            return 'zero', None
        if state == 1:
            return 'data', (index, within)
        raise Refused('bitmap state %d%d' % (state >> 1, state & 1))

    def read(self, offset, length, limit=None):
        """Guest bytes (limit: the logical end allowed, default the size). Whole chunks of
        status 00, 10 and 01 at once; partly written chunks sector by sector."""
        limit = self.size if limit is None else limit
        assert offset + length <= limit
        out = bytearray()
        bs, cs = self.block_size, self.chunk_size
        while length:
            n = min(length, cs - offset % cs)
            data, _ = self.entries(offset)
            status = data >> 62
            if status == 1:
                out += self.chunk_bytes(data & INDEX_MASK, offset % cs, n)
            elif status != 3:
                self.sector_state(offset)  # refuses a chunk number with 00 and 10
                out += bytes(n)
            else:
                end = offset + n
                while offset < end:
                    m = min(end - offset, bs - offset % bs)
                    kind, where = self.sector_state(offset)
                    out += bytes(m) if kind == 'zero' else self.chunk_bytes(where[0], where[1], m)
                    offset += m
                length -= n
                continue
            offset += n
            length -= n
        return bytes(out)

    def read_all(self):
        return self.read(0, self.size)

    def metadata(self):
        """The property list of the metadata chunk, as a dict."""
        at = self.meta_chunk * self.chunk_size
        limit = self.max_sectors * self.block_size
        head = self.read(at, 0x18, limit)
        if head[:4] != b'meta':
            raise Refused('no meta header')
        header_size = struct.unpack_from('>I', head, 8)[0]
        body = self.read(at + header_size, self.chunk_size - header_size, limit)
        return plistlib.loads(body.rstrip(b'\0'))

    def chunk_statuses(self):
        """Counts of the data-entry statuses over the guest chunks."""
        counts = {0: 0, 1: 0, 2: 0, 3: 0}
        for chunk in range(-(-self.size // self.chunk_size)):
            data, _ = self.entries(chunk * self.chunk_size)
            counts[data >> 62] += 1
        return counts


class Writer:
    """Lays out an ASIF file by the description, with every field open to the test."""

    def __init__(self, size, block_size=512, chunk_size=1 << 20, max_sectors=None,
                 meta=True):
        self.g = Geometry(block_size, chunk_size,
                          max_sectors if max_sectors is not None else (1 << 52) // block_size)
        self.size = size
        self.header = {'version': 1, 'header_size': 0x200, 'flags': 0, 'segments': 0,
                       'sectors': size // block_size, 'uuid': uuidlib.uuid4().bytes}
        self.dir_bytes = 8 * (self.g.t + 1)
        self.dir_offsets = [0x200, 0x200 + -(-self.dir_bytes // 512) * 512]
        self.seqs = [1, 0]
        self.directory = [0] * self.g.t
        self.chunks = {}  # chunk number -> bytearray
        self.next_chunk = max(1, -(-(self.dir_offsets[1] + self.dir_bytes) // chunk_size))
        self.meta_chunk = 0
        if meta:
            self.meta_chunk = self.g.max_sectors * block_size // chunk_size - 1
            plist = plistlib.dumps({'internal metadata': {'stable uuid': str(uuidlib.uuid4())},
                                    'user metadata': {}})
            body = b'meta' + struct.pack('>IIQ', 1, 0x200, 0x200)
            body = body.ljust(0x200, b'\0') + plist
            self.put(self.meta_chunk, 0, body, partial=True)

    def take(self):
        n = self.next_chunk
        self.next_chunk += 1
        self.chunks[n] = bytearray(self.g.chunk_size)
        return n

    def table(self, logical):
        table = self.g.place(logical)[0]
        if self.directory[table] == 0:
            self.directory[table] = self.take()
        return self.chunks[self.directory[table]]

    def set_entry(self, chunk, value=None, bitmap=None):
        """Sets raw entries of a guest chunk (value: data entry; bitmap: its bitmap entry)."""
        logical = chunk * self.g.chunk_size
        t = self.table(logical)
        _, data_off, bitmap_off, _, _ = self.g.place(logical)
        if value is not None:
            struct.pack_into('>Q', t, data_off, value)
        if bitmap is not None:
            struct.pack_into('>Q', t, bitmap_off, bitmap)

    def get_entry(self, chunk):
        logical = chunk * self.g.chunk_size
        t = self.table(logical)
        _, data_off, bitmap_off, _, _ = self.g.place(logical)
        return struct.unpack_from('>Q', t, data_off)[0], struct.unpack_from('>Q', t, bitmap_off)[0]

    def put(self, chunk, within, data, partial=False, state=1):
        """Writes data into guest chunk `chunk` at `within`; partial: a status-11 chunk whose
        written sectors get bitmap `state`."""
        entry, bitmap = self.get_entry(chunk)
        host = entry & INDEX_MASK or self.take()
        self.chunks[host][within:within + len(data)] = data
        if not partial:
            self.set_entry(chunk, (1 << 62) | host)
            return host
        if bitmap == 0:
            bitmap = self.take()
            self.set_entry(chunk, bitmap=bitmap)
        _, _, _, slot, _ = self.g.place(chunk * self.g.chunk_size)
        bs = self.g.block_size
        for sector in range(within // bs, -(-(within + len(data)) // bs)):
            s = slot * self.g.sectors_per_chunk + sector
            b = self.chunks[bitmap]
            b[s // 4] = (b[s // 4] & ~(3 << (s % 4 * 2))) | (state << (s % 4 * 2))
        self.set_entry(chunk, (3 << 62) | host)
        return host

    def build(self):
        h = self.header
        size = max([self.next_chunk * self.g.chunk_size, self.dir_offsets[1] + self.dir_bytes,
                    max(self.dir_offsets) + self.dir_bytes])
        out = bytearray(size)
        struct.pack_into('>4sIIIQQ16sQQIHHQ', out, 0, b'shdw', h['version'], h['header_size'],
                         h['flags'], self.dir_offsets[0], self.dir_offsets[1], h['uuid'],
                         h['sectors'], self.g.max_sectors, self.g.chunk_size, self.g.block_size,
                         h['segments'], self.meta_chunk)
        for i in range(2):
            struct.pack_into('>Q', out, self.dir_offsets[i], self.seqs[i])
            struct.pack_into('>%dQ' % self.g.t, out, self.dir_offsets[i] + 8, *self.directory)
        for n, c in self.chunks.items():
            out[n * self.g.chunk_size:(n + 1) * self.g.chunk_size] = c
        return bytes(out)
