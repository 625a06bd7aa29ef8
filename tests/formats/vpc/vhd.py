# SPDX-License-Identifier: LGPL-2.1-or-later
"""Builds and patches VHD images byte by byte, for tests that need images qemu-img cannot
make (differencing disks, other creators, hostile fields). Layout: the VHD specification."""

import struct

SECTOR = 512
UNUSED = 0xffffffff


def checksum(buf, at):
    total = sum(buf[:at]) + sum(buf[at + 4:])
    return (~total) & 0xffffffff


def footer(size, disk_type, creator=b'qemu', chs=None, data_offset=512):
    """A footer with a valid checksum; chs=(c, h, s), default the maximum geometry."""
    c, h, s = chs or (65535, 16, 255)
    f = bytearray(512)
    f[0:8] = b'conectix'
    struct.pack_into('>IIQI', f, 8, 2, 0x10000, data_offset, 0)
    f[28:32] = creator
    struct.pack_into('>HH4sQQHBBI', f, 32, 5, 3, b'Wi2k', size, size, c, h, s, disk_type)
    f[68:84] = bytes(range(16))
    struct.pack_into('>I', f, 64, checksum(f, 64))
    return f


def header(table_offset, entries, block_size, parent_name='', locators=()):
    """A dynamic disk header; locators: (platform code, data length, data offset)."""
    h = bytearray(1024)
    h[0:8] = b'cxsparse'
    struct.pack_into('>QQIII', h, 8, 0xffffffffffffffff, table_offset, 0x10000, entries,
                     block_size)
    name = parent_name.encode('utf-16-be')[:512]
    h[64:64 + len(name)] = name
    for i, (code, length, offset) in enumerate(locators):
        struct.pack_into('>4sIIIQ', h, 576 + 24 * i, code, (length + 511) // 512 * 512, length,
                         0, offset)
    struct.pack_into('>I', h, 36, checksum(h, 36))
    return h


def refresh(buf, at, length, checksum_at):
    """Recomputes the checksum of the structure at `at` in place."""
    part = bytearray(buf[at:at + length])
    struct.pack_into('>I', part, checksum_at, checksum(part, checksum_at))
    buf[at:at + length] = part


def sparse(size, blocks, block_size=0x200000, disk_type=3, creator=b'qemu', chs=None,
           parent_name='', locator_data=()):
    """A dynamic (3) or differencing (4) disk. blocks: {index: (bitmap bytes or None for all
    ones, data bytes of block_size)}; locator_data: (platform code, bytes)."""
    entries = (size + block_size - 1) // block_size
    bat_off = 1536
    bat_len = (entries * 4 + 511) // 512 * 512
    pos = bat_off + bat_len
    locators = []
    loc_bytes = bytearray()
    for code, data in locator_data:
        locators.append((code, len(data), pos + len(loc_bytes)))
        loc_bytes += data + bytes(-len(data) % 512)
    pos += len(loc_bytes)
    # QEMU's rounding for dynamic disks (none under 4 KiB blocks); the specification's for
    # differencing disks (at least a sector).
    bits = block_size // 512
    bitmap_size = ((bits + 7) // 8 + 511 if disk_type == 4 else bits // 8 + 511) // 512 * 512
    bat = [UNUSED] * entries
    body = bytearray()
    for index in sorted(blocks):
        bitmap, data = blocks[index]
        bat[index] = (pos + len(body)) // 512
        bm = bitmap if bitmap is not None else b'\xff' * bitmap_size
        body += bm + bytes(bitmap_size - len(bm)) + data
    f = footer(size, disk_type, creator, chs)
    out = bytearray(f)
    out += header(bat_off, entries, block_size, parent_name, locators)
    out += b''.join(struct.pack('>I', e) for e in bat) + b'\xff' * (bat_len - 4 * entries)
    out += loc_bytes + body + f
    return out
