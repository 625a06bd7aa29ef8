#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every creation option, through img_create and through `imgutil create -o`: the image must
look to `qemu-img info --output=json` exactly like its twin made by `qemu-img create` with the
same options (size, cluster size, compat, refcount width, lazy refcounts, compression type,
extended L2, backing file and format), map the same way (preallocation), read as zeros (or the
backing file), pass qemu-img check, and take a few writes. Options qemu-img refuses must be
refused too, leaving no file behind.

usage: test_create.py WRITE_DRIVER
"""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import writetest as wt  # noqa: E402

MIB = 1 << 20

QCOW2_VARIANTS = [
    ('', 16 * MIB),
    ('compat=0.10', 16 * MIB),
    ('compat=1.1', 16 * MIB),
    ('cluster_size=512', 8 * MIB),
    ('cluster_size=4096', 16 * MIB),
    ('cluster_size=65536', 16 * MIB),
    ('cluster_size=2097152', 16 * MIB),
    ('cluster_size=4k', 16 * MIB),
    ('cluster_size=2M,compat=0.10', 16 * MIB),
    ('refcount_bits=1', 16 * MIB),
    ('refcount_bits=2', 16 * MIB),
    ('refcount_bits=4', 16 * MIB),
    ('refcount_bits=8', 16 * MIB),
    ('refcount_bits=16', 16 * MIB),
    ('refcount_bits=32', 16 * MIB),
    ('refcount_bits=64', 16 * MIB),
    ('refcount_bits=1,cluster_size=512', 4 * MIB),
    ('compat=0.10,refcount_bits=16', 16 * MIB),
    ('lazy_refcounts=on', 16 * MIB),
    ('lazy_refcounts=off,compat=1.1', 16 * MIB),
    ('compression_type=zlib', 16 * MIB),
    ('compression_type=zstd', 16 * MIB),
    ('extended_l2=on', 16 * MIB),
    ('extended_l2=on,cluster_size=16384', 16 * MIB),
    ('extended_l2=on,cluster_size=2097152', 16 * MIB),
    ('extended_l2=off', 16 * MIB),
    ('lazy_refcounts=on,compression_type=zstd,refcount_bits=64,extended_l2=on', 16 * MIB),
    ('preallocation=off', 3 * MIB),
    ('preallocation=metadata', 3 * MIB),
    ('preallocation=falloc', 3 * MIB),
    ('preallocation=full', 3 * MIB),
    ('preallocation=metadata,cluster_size=512', 8 * MIB),
    ('preallocation=metadata,compat=0.10,cluster_size=4096', 16 * MIB),
    ('preallocation=full,extended_l2=on', 5 * MIB),
    ('preallocation=falloc,refcount_bits=1,cluster_size=4096', 6 * MIB),
    ('preallocation=metadata,refcount_bits=64,cluster_size=2097152', 9 * MIB),
    ('', 1000),
    ('cluster_size=512', 1),
    ('', 0),
    ('', 1 << 40),
    ('cluster_size=2097152,extended_l2=on', 1 << 42),
]

# (options, size): qemu-img refuses these; so must img_create and imgutil create.
QCOW2_REFUSED = [
    ('compat=0.10,lazy_refcounts=on', MIB),
    ('compat=0.10,refcount_bits=8', MIB),
    ('compat=0.10,extended_l2=on', MIB),
    ('compat=0.10,compression_type=zstd', MIB),
    ('compat=0.9', MIB),
    ('extended_l2=on,cluster_size=4096', MIB),
    ('cluster_size=1000', MIB),
    ('cluster_size=256', MIB),
    ('cluster_size=4194304', MIB),
    ('refcount_bits=3', MIB),
    ('refcount_bits=128', MIB),
    ('compression_type=lz4', MIB),
    ('preallocation=everything', MIB),
    ('lazy_refcounts=maybe', MIB),
    ('no_such_option=1', MIB),
]

RAW_VARIANTS = [
    ('', 8 * MIB),
    ('preallocation=off', 8 * MIB),
    ('preallocation=falloc', 8 * MIB),
    ('preallocation=full', 8 * MIB),
    ('', 1000),
    ('', 0),
]

RAW_REFUSED = [('preallocation=metadata', MIB), ('cluster_size=65536', MIB)]

# Fields of `qemu-img info --output=json` that creation options decide.
INFO_FIELDS = ('format', 'virtual-size', 'cluster-size', 'dirty-flag', 'backing-filename',
               'backing-filename-format', 'full-backing-filename', 'format-specific')
MAP_FIELDS = ('start', 'length', 'depth', 'present', 'zero', 'data')


def merged_map(path, cwd):
    """qemu-img map rows without host offsets, neighbours merged. Layouts may differ, and for
    data clusters "zero" only says whether the host file has a hole there (metadata
    preallocation leaves holes between the tables, wherever they are), so it is dropped."""
    rows = wt.parse_json(wt.qemu_img('map', '--output=json', path, cwd=cwd).stdout, 'map')
    out = []
    for r in rows:
        r = {f: r.get(f) for f in MAP_FIELDS} | {'offset': 'offset' in r}
        if r['data']:
            r['zero'] = None
        if out and all(out[-1][f] == r[f] for f in MAP_FIELDS[2:] + ('offset',)) and \
                out[-1]['start'] + out[-1]['length'] == r['start']:
            out[-1]['length'] += r['length']
        else:
            out.append(r)
    return out


def allocated_bytes(path):
    return os.stat(path).st_blocks * 512


class Twin:
    """The image qemu-img create made with the same options, described once."""

    def __init__(self, s, name):
        self.name = name
        self.info = wt.qemu_info(name, cwd=s.tmp)
        self.map = merged_map(name, s.tmp)
        self.allocated = allocated_bytes(s.path(name))


def compare_with_twin(s, fmt, opts, ours, twin):
    qi, oi = twin.info, wt.qemu_info(ours, cwd=s.tmp)
    diffs = ['%s: qemu-img create made %r, this made %r' % (f, qi.get(f), oi.get(f))
             for f in INFO_FIELDS if qi.get(f) != oi.get(f)]
    if diffs:
        raise wt.CheckFailed('qemu-img info differs from the twin made by qemu-img create:\n  ' +
                             '\n  '.join(diffs))
    # For raw, QEMU writes the first block to probe the alignment; the map says nothing more.
    qm, om = twin.map, merged_map(ours, s.tmp)
    if fmt == 'qcow2' and qm != om:
        i = next((i for i, (a, b) in enumerate(zip(qm, om)) if a != b), min(len(qm), len(om)))
        raise wt.CheckFailed('qemu-img map differs from the twin\'s from row %d (%d rows, %d '
                             'rows):\n  twin: %s\n  ours: %s' % (i, len(qm), len(om),
                                                                 qm[i:i + 3], om[i:i + 3]))
    prealloc = dict(kv.split('=', 1) for kv in opts.split(',') if '=' in kv).get(
        'preallocation', 'off')
    size = qi['virtual-size']
    have, twin_have = allocated_bytes(s.path(ours)), twin.allocated
    if prealloc in ('falloc', 'full') and have < size:
        raise wt.CheckFailed('preallocation=%s: only %d bytes allocated for a %d-byte image '
                             '(the twin has %d)' % (prealloc, have, size, twin_have))
    if prealloc in ('off', 'metadata') and have > 2 * twin_have + MIB:
        raise wt.CheckFailed('preallocation=%s: %d bytes allocated; the twin needs only %d' % (
            prealloc, have, twin_have))
    if fmt == 'qcow2':
        wt.assert_qemu_check(ours, cwd=s.tmp)
    proc = wt.qemu_img('compare', '-f', fmt, '-F', fmt, twin.name, ours, cwd=s.tmp,
                       ok_codes=None)
    if proc.returncode != 0:
        raise wt.CheckFailed('qemu-img compare with the twin: %s %s' % (
            wt.describe_rc(proc.returncode), wt.clip(proc.stdout)))


def write_some(s, fmt, path, size, seed):
    """A few writes at both ends and across a cluster boundary; checked against a shadow
    (held in memory, so only for images of modest size)."""
    if size < 4096 or size > 256 * MIB:
        return
    start = wt.write_file(s.path('start.raw'), b'')
    wt.run(['qemu-img', 'convert', '-O', 'raw', path, start], cwd=s.tmp)
    ops = ['write 0 4096 %d' % seed, 'write %d 100 %d' % (size - 100, seed + 1),
           'write %d 70000 %d' % (size // 2 - 35000, seed + 2), 'flush',
           'zero %d 5000' % (size // 2 - 2500), 'reopen', 'save expected.raw']
    s.run_script(path, ops, fmt=fmt, extra=['--shadow-in', 'start.raw'])
    if fmt == 'qcow2':
        wt.assert_qemu_check(path, cwd=s.tmp)
    wt.assert_same_content('expected.raw', path, fmt, cwd=s.tmp)


def make_backings(s):
    rng = random.Random(7)
    wt.write_file(s.path('base.raw'), wt.random_content(rng, 6 * MIB))
    wt.qemu_img('convert', '-O', 'qcow2', 'base.raw', 'base.qcow2', cwd=s.tmp)


def backing_variants(s):
    """(label, options, size) for overlays, the backing named relatively and absolutely."""
    return [
        ('backing qcow2', 'backing_file=base.qcow2,backing_fmt=qcow2', 6 * MIB),
        ('backing qcow2, size from the backing file', 'backing_file=base.qcow2,'
         'backing_fmt=qcow2', 0),
        ('backing raw, larger overlay', 'backing_file=base.raw,backing_fmt=raw', 10 * MIB),
        ('backing qcow2, smaller overlay, compat=0.10', 'backing_file=base.qcow2,'
         'backing_fmt=qcow2,compat=0.10', 3 * MIB),
        ('backing by absolute name, extended L2', 'backing_file=%s,backing_fmt=qcow2,'
         'extended_l2=on' % s.path('base.qcow2'), 6 * MIB),
        ('backing raw, 4k clusters, refcount_bits=1', 'backing_file=base.raw,backing_fmt=raw,'
         'cluster_size=4096,refcount_bits=1', 6 * MIB),
    ]


def creators(s, fmt, opts, size):
    """(label, function making the image at a name) for img_create and imgutil create."""
    def api(name):
        s.api('create', name, fmt, size, *([opts] if opts else []))

    def cli(name):
        s.imgutil('create', '-q', '-f', fmt, *(['-o', opts] if opts else []), name,
                  *([str(size)] if size or 'backing_file' not in opts else []))
    return [('img_create', api), ('imgutil create', cli)]


def twin_create(s, fmt, opts, size, name, ok_codes=(0,)):
    return wt.qemu_img('create', '-q', '-f', fmt, *(['-o', opts] if opts else []), name,
                       *([str(size)] if size or 'backing_file' not in opts else []),
                       cwd=s.tmp, ok_codes=ok_codes)


def check_variant(s, n, fmt, label, opts, size):
    name = 'twin-%d.%s' % (n, fmt)
    twin_create(s, fmt, opts, size, name)
    twin = Twin(s, name)
    for i, (who, create) in enumerate(creators(s, fmt, opts, size)):
        ours = 'ours-%d-%d.%s' % (n, i, fmt)
        with s.check('%s: %s %s' % (who, fmt, label)):
            create(ours)
            compare_with_twin(s, fmt, opts, ours, twin)
            # The CLI creates through img_create too: writing once is enough.
            if i == 0:
                write_some(s, fmt, ours, twin.info['virtual-size'], n)
        if os.path.exists(s.path(ours)):
            os.unlink(s.path(ours))
    os.unlink(s.path(name))


def check_refused(s, n, fmt, opts, size):
    twin = 'refused-twin-%d.%s' % (n, fmt)
    proc = twin_create(s, fmt, opts, size, twin, ok_codes=None)
    if proc.returncode == 0:
        print('note: qemu-img accepts %s %s; not a refusal case' % (fmt, opts))
        return
    for i, (who, create) in enumerate(creators(s, fmt, opts, size)):
        ours = 'refused-%d-%d.%s' % (n, i, fmt)
        with s.check('%s refuses %s -o %s' % (who, fmt, opts)):
            try:
                create(ours)
            except wt.CheckFailed:
                pass
            else:
                raise wt.CheckFailed('created an image that qemu-img refuses (%s)' %
                                     wt.clip(proc.stderr))
            if os.path.exists(s.path(ours)):
                raise wt.CheckFailed('the refused creation left %s behind' % ours)


def main():
    s = wt.Suite('create', sys.argv)
    make_backings(s)
    n = 0
    variants = [('qcow2', opts or '(defaults)', opts, size) for opts, size in QCOW2_VARIANTS]
    variants += [('qcow2', label, opts, size) for label, opts, size in backing_variants(s)]
    variants += [('raw', opts or '(defaults)', opts, size) for opts, size in RAW_VARIANTS]
    for fmt, label, opts, size in variants:
        check_variant(s, n, fmt, '%s, size %d' % (label, size), opts, size)
        n += 1
    for opts, size in QCOW2_REFUSED:
        check_refused(s, n, 'qcow2', opts, size)
        n += 1
    for opts, size in RAW_REFUSED:
        check_refused(s, n, 'raw', opts, size)
        n += 1
    s.finish()


if __name__ == '__main__':
    main()
