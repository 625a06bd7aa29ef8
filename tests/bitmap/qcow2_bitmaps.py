# SPDX-License-Identifier: LGPL-2.1-or-later
"""Decodes the persistent bitmaps of a qcow2 file straight from its bytes (docs/interop/qcow2.txt),
so that tests compare bitmap contents bit for bit without trusting either implementation."""

import struct

BITMAPS_EXT = 0x23852875
IN_USE, AUTO = 1, 2


def decode(path):
    """{name: (flags, granularity, bits as bytes)}; bits cover the virtual size, LSB first."""
    with open(path, 'rb') as f:
        data = f.read()
    cluster_bits, = struct.unpack('>I', data[20:24])
    cs = 1 << cluster_bits
    size, = struct.unpack('>Q', data[24:32])
    size -= size % 512
    header_length, = struct.unpack('>I', data[100:104])
    autoclear, = struct.unpack('>Q', data[88:96])
    pos = header_length
    ext = None
    while pos + 8 <= cs:
        magic, length = struct.unpack('>II', data[pos:pos + 8])
        if magic == 0:
            break
        if magic == BITMAPS_EXT:
            ext = struct.unpack('>IIQQ', data[pos + 8:pos + 32])
        pos += 8 + ((length + 7) & ~7)
    if ext is None or not autoclear & 1:
        return {}
    nb, _, dir_size, dir_offset = ext
    out = {}
    pos = dir_offset
    for _ in range(nb):
        table_offset, table_size, flags, _type, gbits, name_size, extra = struct.unpack(
            '>QIIBBHI', data[pos:pos + 24])
        name = data[pos + 24 + extra:pos + 24 + extra + name_size].decode()
        pos += (24 + extra + name_size + 7) & ~7
        nbits = (size + (1 << gbits) - 1) >> gbits
        nbytes = (nbits + 7) // 8
        raw = bytearray()
        for i in range(table_size):
            e, = struct.unpack('>Q', data[table_offset + 8 * i:table_offset + 8 * i + 8])
            off = e & 0x00fffffffffffe00
            if off:
                raw += data[off:off + cs]
            else:
                raw += (b'\xff' if e & 1 else b'\x00') * cs
        bits = bytearray(raw[:nbytes])
        if nbits % 8:
            bits[-1] &= (1 << (nbits % 8)) - 1
        out[name] = (flags, 1 << gbits, bytes(bits))
    return out


def set_granules(bits):
    """The indexes of the set bits, for readable failure messages."""
    return [i for i in range(len(bits) * 8) if bits[i // 8] >> (i % 8) & 1]
