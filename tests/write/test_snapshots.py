#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Internal snapshots both ways. Snapshots made here (img_snapshot_create, `imgutil snapshot
-c`) must be listed and applied by `qemu-img snapshot -l/-a` with the content they had;
snapshots made by `qemu-img snapshot -c` must be listed, applied and deleted here (API and
CLI). Writes after a snapshot must copy shared clusters, so applying the snapshot later still
gives its content. qemu-img check must be clean after every step: a missed refcount update or
a wrong COPIED flag shows there.

usage: test_snapshots.py WRITE_DRIVER
"""

import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import writetest as wt  # noqa: E402

MIB = 1 << 20

# (label, creation options, size)
GEOMETRIES = [
    ('64k clusters', 'cluster_size=65536', 16 * MIB),
    ('512-byte clusters, refcount_bits=4', 'cluster_size=512,refcount_bits=4', 4 * MIB),
    ('2M clusters, extended L2', 'cluster_size=2097152,extended_l2=on', 16 * MIB),
    ('4k clusters, compat=0.10', 'cluster_size=4096,compat=0.10', 8 * MIB),
]


def writes(seed, size, cluster, count=6):
    """Writes that land on cluster boundaries and inside clusters all over the image."""
    ops = []
    for i in range(count):
        offset = max(0, (size * (i * 2 + 1) // (count * 2 + 1)) // cluster * cluster - 100 * i)
        length = min(cluster + 1000 * i + 1, size - offset)
        ops.append('write %d %d %d' % (offset, length, seed * 100 + i))
    return ops


def qemu_snapshot_names(s, image):
    out = wt.qemu_img('snapshot', '-l', image, cwd=s.tmp).stdout
    names = []
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) >= 2:
            names.append(fields[1])
    info = wt.qemu_info(image, cwd=s.tmp)
    json_names = [sn['name'] for sn in info.get('snapshots', [])]
    if names != json_names:
        raise wt.CheckFailed('qemu-img snapshot -l lists %r, qemu-img info %r' % (names,
                                                                                json_names))
    return names


def assert_names(what, got, want):
    if got != want:
        raise wt.CheckFailed('%s lists snapshots %r, expected %r' % (what, got, want))


def copy(s, src, dst):
    shutil.copyfile(s.path(src), s.path(dst))
    return dst


def qemu_apply(s, image, copy_name, snapshot, raw):
    """qemu-img snapshot -a on a copy of `image`: it must check clean and read as `raw`."""
    c = copy(s, image, copy_name)
    wt.qemu_img('snapshot', '-a', snapshot, c, cwd=s.tmp)
    wt.assert_qemu_check(c, cwd=s.tmp)
    wt.assert_same_content(raw, c, cwd=s.tmp)


def made_here(s, n, label, opts, size):
    cluster = int(re.search(r'cluster_size=(\d+)', opts).group(1))
    image = 'here-%d.qcow2' % n
    tag = '%s (made here)' % label
    with s.check('%s: img_snapshot_create, imgutil snapshot -c, writes between' % tag):
        s.api('create', image, 'qcow2', size, opts)
        s.run_script(image, writes(1, size, cluster) + ['save h%d-s1.raw' % n,
                                                        'snapshot-create s1'] +
                     writes(2, size, cluster) + ['zero-unmap %d %d' % (cluster, 3 * cluster),
                                                 'discard 0 %d' % cluster,
                                                 'save h%d-s2.raw' % n], cluster=cluster)
        s.imgutil('snapshot', '-c', 's2', image)
        s.run_script(image, writes(3, size, cluster, count=9) + ['save h%d-active.raw' % n],
                     cluster=cluster, extra=['--shadow-in', 'h%d-s2.raw' % n])
        wt.assert_qemu_check(image, cwd=s.tmp)
        wt.assert_same_content('h%d-active.raw' % n, image, cwd=s.tmp)
    if not s.last_ok:
        return
    with s.check('%s: qemu-img snapshot -l lists s1 and s2' % tag):
        assert_names('qemu-img', qemu_snapshot_names(s, image), ['s1', 's2'])
    for name in ('s1', 's2'):
        with s.check('%s: qemu-img snapshot -a %s gives its content' % (tag, name)):
            qemu_apply(s, image, 'here-%d-apply-%s.qcow2' % (n, name), name,
                       'h%d-%s.raw' % (n, name))
    with s.check('%s: qemu-img snapshot -d s1, then -a s2' % tag):
        c = copy(s, image, 'here-%d-delete.qcow2' % n)
        wt.qemu_img('snapshot', '-d', 's1', c, cwd=s.tmp)
        wt.assert_qemu_check(c, cwd=s.tmp)
        assert_names('qemu-img', qemu_snapshot_names(s, c), ['s2'])
        wt.assert_same_content('h%d-active.raw' % n, c, cwd=s.tmp)
        wt.qemu_img('snapshot', '-a', 's2', c, cwd=s.tmp)
        wt.assert_qemu_check(c, cwd=s.tmp)
        wt.assert_same_content('h%d-s2.raw' % n, c, cwd=s.tmp)
    with s.check('%s: img_snapshot_apply/delete here, qemu-img agrees' % tag):
        c = copy(s, image, 'here-%d-api.qcow2' % n)
        s.run_script(c, ['snapshot-apply s1', 'verify'] + writes(4, size, cluster) +
                     ['snapshot-delete s2', 'save h%d-api.raw' % n], cluster=cluster,
                     extra=['--shadow-in', 'h%d-active.raw' % n,
                            '--snapshot', 's1=h%d-s1.raw' % n,
                            '--snapshot', 's2=h%d-s2.raw' % n])
        wt.assert_qemu_check(c, cwd=s.tmp)
        assert_names('qemu-img', qemu_snapshot_names(s, c), ['s1'])
        wt.assert_same_content('h%d-api.raw' % n, c, cwd=s.tmp)
        wt.qemu_img('snapshot', '-a', 's1', c, cwd=s.tmp)
        wt.assert_same_content('h%d-s1.raw' % n, c, cwd=s.tmp)


def qemu_stage(s, image, raw):
    wt.qemu_img('convert', '-O', 'raw', image, raw, cwd=s.tmp)


def made_by_qemu(s, n, label, opts, size):
    cluster = int(re.search(r'cluster_size=(\d+)', opts).group(1))
    image = 'qemu-%d.qcow2' % n
    tag = '%s (made by qemu-img)' % label
    q = lambda *cmds: wt.qemu_io(image, cmds, cwd=s.tmp)  # noqa: E731
    with s.check('%s: qemu-img makes snapshots q1 and q2' % tag):
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', opts, image, size, cwd=s.tmp)
        q('write -P 0x11 0 %d' % (size // 4),
          'write -P 0x12 %d %d' % (size // 2 + 77, cluster * 3))
        qemu_stage(s, image, 'q%d-q1.raw' % n)
        wt.qemu_img('snapshot', '-c', 'q1', image, cwd=s.tmp)
        q('write -P 0x21 %d %d' % (cluster // 2, cluster * 2),
          'write -z %d %d' % (size // 8, cluster), 'write -P 0x22 %d 4096' % (size - 4096))
        qemu_stage(s, image, 'q%d-q2.raw' % n)
        wt.qemu_img('snapshot', '-c', 'q2', image, cwd=s.tmp)
        q('write -P 0x31 %d %d' % (size // 3, cluster * 5))
        qemu_stage(s, image, 'q%d-active.raw' % n)
    if not s.last_ok:
        return

    with s.check('%s: imgutil snapshot -l and img_snapshot_list list q1, q2' % tag):
        qemu = wt.qemu_info(image, cwd=s.tmp)['snapshots']
        listed = wt.parse_json(s.api('snapshot-list', image).stdout, 'img_snapshot_list')
        got = [(x.get('id'), x.get('name'), x.get('vm-state-size')) for x in listed]
        want = [(x['id'], x['name'], x['vm-state-size']) for x in qemu]
        if got != want:
            raise wt.CheckFailed('img_snapshot_list: %r, qemu-img info: %r' % (got, want))
        out = s.imgutil('snapshot', '-l', image).stdout
        names = [line.split()[1] for line in out.splitlines()[2:] if len(line.split()) > 1]
        assert_names('imgutil snapshot -l', names, ['q1', 'q2'])
    for name in ('q1', 'q2'):
        with s.check('%s: imgutil snapshot -a %s gives its content' % (tag, name)):
            c = copy(s, image, 'qemu-%d-apply-%s.qcow2' % (n, name))
            s.imgutil('snapshot', '-a', name, c)
            wt.assert_qemu_check(c, cwd=s.tmp)
            wt.assert_same_content('q%d-%s.raw' % (n, name), c, cwd=s.tmp)
    with s.check('%s: writes after imgutil snapshot -a q1 leave both snapshots intact' % tag):
        c = copy(s, image, 'qemu-%d-cow.qcow2' % n)
        s.imgutil('snapshot', '-a', 'q1', c)
        s.run_script(c, writes(5, size, cluster, count=8) + ['discard 0 %d' % (cluster * 2),
                                                             'save q%d-cow.raw' % n],
                     cluster=cluster, extra=['--shadow-in', 'q%d-q1.raw' % n])
        wt.assert_qemu_check(c, cwd=s.tmp)
        wt.assert_same_content('q%d-cow.raw' % n, c, cwd=s.tmp)
        s.imgutil('snapshot', '-c', 'mine', c)
        for name, raw in (('q1', 'q1'), ('q2', 'q2'), ('mine', 'cow')):
            qemu_apply(s, c, 'qemu-%d-cow-%s.qcow2' % (n, name), name, 'q%d-%s.raw' % (n, raw))
    with s.check('%s: imgutil snapshot -d, img_snapshot_delete of all, no leaks' % tag):
        c = copy(s, image, 'qemu-%d-delete.qcow2' % n)
        s.imgutil('snapshot', '-d', 'q1', c)
        wt.assert_qemu_check(c, cwd=s.tmp)
        assert_names('qemu-img', qemu_snapshot_names(s, c), ['q2'])
        s.run_script(c, ['snapshot-apply q2', 'snapshot-delete q2', 'save q%d-last.raw' % n],
                     cluster=cluster, extra=['--shadow-in', 'q%d-active.raw' % n,
                                             '--snapshot', 'q2=q%d-q2.raw' % n])
        wt.assert_qemu_check(c, cwd=s.tmp)
        assert_names('qemu-img', qemu_snapshot_names(s, c), [])
        wt.assert_same_content('q%d-q2.raw' % n, c, cwd=s.tmp)


def refcount_too_narrow(s):
    """With refcount_bits=1 a cluster cannot be shared: a snapshot must be refused (as qemu-img
    refuses it) and leave the image as it was."""
    image = 'narrow.qcow2'
    with s.check('refcount_bits=1: img_snapshot_create is refused, image unchanged'):
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', image, 4 * MIB,
                    cwd=s.tmp)
        wt.qemu_io(image, ['write -P 0x5a 0 1M'], cwd=s.tmp)
        qemu_stage(s, image, 'narrow.raw')
        proc = s.api('run', image, '--shadow-in', 'narrow.raw', '--script', '-', ok_codes=None,
                     input='snapshot-create x\n')
        if proc.returncode == 0:
            raise wt.CheckFailed('img_snapshot_create succeeded with refcount_bits=1')
        if 'img_snapshot_create returned' not in proc.stderr or \
                'does not support internal snapshots' in proc.stderr:
            raise wt.CheckFailed('not the refusal expected: %s' % wt.clip(proc.stderr))
        wt.assert_qemu_check(image, cwd=s.tmp)
        wt.assert_same_content('narrow.raw', image, cwd=s.tmp)
        if wt.qemu_info(image, cwd=s.tmp).get('snapshots'):
            raise wt.CheckFailed('a snapshot was recorded anyway')
    # refcount_bits=2 counts to 3: two snapshots and the active layer share every cluster,
    # so applying one would need a fourth reference. qemu-img refuses too.
    image = 'narrow2.qcow2'
    with s.check('refcount_bits=2: imgutil snapshot -a needing refcount 4 is refused, '
                 'image unchanged'):
        wt.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=2,cluster_size=512',
                    image, 4 * MIB, cwd=s.tmp)
        wt.qemu_io(image, ['write -P 0x5b 0 1M'], cwd=s.tmp)
        wt.qemu_img('snapshot', '-c', 'a', image, cwd=s.tmp)
        wt.qemu_img('snapshot', '-c', 'b', image, cwd=s.tmp)
        before = open(s.path(image), 'rb').read()
        proc = s.imgutil('snapshot', '-a', 'a', image, ok_codes=None)
        if proc.returncode == 0:
            raise wt.CheckFailed('imgutil snapshot -a succeeded with refcounts that overflow')
        wt.assert_qemu_check(image, cwd=s.tmp)
        if open(s.path(image), 'rb').read() != before:
            raise wt.CheckFailed('the refused apply changed the image file')


def main():
    s = wt.Suite('snapshots', sys.argv)
    refcount_too_narrow(s)
    for n, (label, opts, size) in enumerate(GEOMETRIES):
        made_here(s, n, label, opts, size)
        made_by_qemu(s, n, label, opts, size)
    s.finish()


if __name__ == '__main__':
    main()
