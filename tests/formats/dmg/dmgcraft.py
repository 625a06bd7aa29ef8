# SPDX-License-Identifier: LGPL-2.1-or-later
"""Builds UDIF (.dmg) images from QEMU's reading of the layout (block/dmg.c): a data fork of
chunks, "mish" block tables in an XML property list or a resource fork, and a 512-byte "koly"
trailer. Also a small ADC (Apple Data Compression) encoder for UDCO chunks."""

import base64
import bz2
import struct
import zlib

UDZE, UDRW, UDIG = 0, 1, 2
UDCO, UDZO, UDBZ, ULFO = 0x80000004, 0x80000005, 0x80000006, 0x80000007
UDCM, UDLE = 0x7ffffffe, 0xffffffff


def adc_encode(data):
    """Greedy ADC: literal runs, 2-byte codes (3..18 bytes, distance up to 1024) and 3-byte
    codes (4..67 bytes, distance up to 65536), overlapping copies included."""
    out, lit, i = bytearray(), bytearray(), 0

    def flush():
        while lit:
            n = min(128, len(lit))
            out.append(0x80 | (n - 1))
            out.extend(lit[:n])
            del lit[:n]

    while i < len(data):
        best_len, best_d = 0, 0
        for d in (1, 2, 3, 4, 8, 16, 64, 512, 1000, 4000, 60000):
            if d > i:
                break
            n = 0
            while i + n < len(data) and n < 67 and data[i + n] == data[i + n - d]:
                n += 1
            if n > best_len:
                best_len, best_d = n, d
        if best_len >= 3 and best_d <= 1024 and best_len <= 18:
            flush()
            out += bytes([((best_len - 3) << 2) | ((best_d - 1) >> 8), (best_d - 1) & 0xff])
            i += best_len
        elif best_len >= 4:
            flush()
            out += bytes([0x40 | (best_len - 4), (best_d - 1) >> 8, (best_d - 1) & 0xff])
            i += best_len
        else:
            lit.append(data[i])
            i += 1
    flush()
    return bytes(out)


def encode(kind, data):
    if kind == UDZO:
        return zlib.compress(data)
    if kind == UDBZ:
        return bz2.compress(data)
    if kind == UDCO:
        return adc_encode(data)
    if kind == UDRW:
        return data
    if kind == ULFO:
        return b'bvx2' + bytes(32)  # never decoded: refused
    return b''


def mish(first_sector, sectors, data_offset, entries):
    """entries: (type, sector, count, offset, length) relative to the block."""
    h = bytearray(204)
    struct.pack_into('>4sIQQQII', h, 0, b'mish', 1, first_sector, sectors, data_offset, 0,
                     len(entries))
    struct.pack_into('>I', h, 200, len(entries))
    body = bytes(h)
    for t, s, c, o, n in entries:
        body += struct.pack('>IIQQQQ', t, 0, s, c, o, n)
    return body


def plist(blocks):
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">\n<dict>\n'
             '\t<key>resource-fork</key>\n\t<dict>\n\t\t<key>blkx</key>\n\t\t<array>\n']
    for i, b in enumerate(blocks):
        text = base64.b64encode(b).decode()
        lines = '\n'.join('\t\t\t\t' + text[j:j + 52] for j in range(0, len(text), 52))
        parts.append('\t\t\t<dict>\n\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n%s\n\t\t\t\t</data>'
                     '\n\t\t\t\t<key>Name</key>\n\t\t\t\t<string>part %d</string>\n'
                     '\t\t\t</dict>\n' % (lines, i))
    parts.append('\t\t</array>\n\t</dict>\n</dict>\n</plist>\n')
    return ''.join(parts).encode()


def resource_fork(blocks):
    data = b''.join(struct.pack('>I', len(b)) + b for b in blocks)
    return struct.pack('>IIII', 256, 256 + len(data), len(data), 0).ljust(256, b'\0') + data


def koly(data_fork_offset, data_fork_length, rsrc, xml, sectors):
    t = bytearray(512)
    struct.pack_into('>4sIII', t, 0, b'koly', 4, 512, 1)
    struct.pack_into('>QQQQQ', t, 0x10, 0, data_fork_offset, data_fork_length, rsrc[0], rsrc[1])
    struct.pack_into('>QQ', t, 0xd8, xml[0], xml[1])
    struct.pack_into('>Q', t, 0x1ec, sectors)
    return bytes(t)


def build(partitions, use_resource_fork=False, lead=0, total_sectors=None, extra_entries=()):
    """partitions: lists of (type, guest bytes) chunks, laid one after another; each partition
    is one mish block whose chunk offsets are relative to its own data. Returns the image bytes
    and the guest content."""
    data_fork = bytearray(lead)  # `lead` bytes of something else before the data fork
    blocks, guest, sector = [], bytearray(), 0
    for chunks in partitions:
        first, base, entries, rel = sector, len(data_fork) - lead, [], 0
        for kind, payload in chunks:
            count = len(payload) // 512
            stored = encode(kind, payload)
            entries.append((kind, sector - first, count, rel, len(stored)))
            data_fork += stored
            rel += len(stored)
            sector += count
            guest += bytes(len(payload)) if kind in (UDZE, UDIG) else payload
        entries += [e for e in extra_entries]
        entries.append((UDLE, sector - first, 0, rel, 0))
        blocks.append(mish(first, sector - first, base, entries))
    table_offset = len(data_fork)
    if use_resource_fork:
        table = resource_fork(blocks)
        rsrc, xml = (table_offset, len(table)), (0, 0)
    else:
        table = plist(blocks)
        rsrc, xml = (0, 0), (table_offset, len(table))
    image = bytes(data_fork) + table
    image += koly(lead, table_offset - lead, rsrc, xml,
                  sector if total_sectors is None else total_sectors)
    return image, bytes(guest)
