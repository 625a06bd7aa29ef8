# SPDX-License-Identifier: LGPL-2.1-or-later
"""Crafted qcow2 images for the map and JSON tests, written byte by byte (qcow2 spec, v3)."""

import struct


def qcow2_header(cluster_bits, size, l1_size, l1_offset, backing=b'', extensions=b''):
    """Header cluster contents: header, header extensions, then the backing file name."""
    cs = 1 << cluster_bits
    hdr_len = 104
    backing_offset = hdr_len + len(extensions) + 8 if backing else 0
    hdr = struct.pack('>4sIQIIQIIQQIIQQQQII', b'QFI\xfb', 3, backing_offset, len(backing),
                      cluster_bits, size, 0, l1_size, l1_offset, cs, 1, 0, 0, 0, 0, 0, 4,
                      hdr_len)
    return hdr + extensions + b'\0' * 8 + backing


def alternating(path, cluster_bits, size, l1_size=None):
    """An image of `size` bytes in which every other cluster is allocated, all of them at the
    same host cluster, and every L1 entry names the same L2 table: one row per cluster from a
    file of six clusters (plus the L1 table)."""
    cs = 1 << cluster_bits
    l2_entries = cs // 8
    span = cs * l2_entries
    if l1_size is None:
        l1_size = (size + span - 1) // span
    l1_clusters = (l1_size * 8 + cs - 1) // cs
    # Cluster 0 header, 1 refcount table, 2 refcount block, 3.. L1, then L2, then data.
    l1_offset = 3 * cs
    l2_offset = l1_offset + l1_clusters * cs
    data_offset = l2_offset + cs
    with open(path, 'wb') as f:
        f.write(qcow2_header(cluster_bits, size, l1_size, l1_offset))
        f.seek(cs)
        f.write(struct.pack('>Q', 2 * cs))
        f.seek(2 * cs)
        f.write(struct.pack('>H', 1) * (data_offset // cs + 1))
        f.seek(l1_offset)
        f.write(struct.pack('>Q', l2_offset) * l1_size)
        f.seek(l2_offset)
        f.write(b''.join(struct.pack('>Q', data_offset if i % 2 == 0 else 0)
                         for i in range(l2_entries)))
        f.seek(data_offset)
        f.write(b'\x55' * cs)
