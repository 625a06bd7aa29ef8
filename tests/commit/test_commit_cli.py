#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""imgutil commit against qemu-img commit, on identical copies of each chain.

Every case builds its chain twice with qemu-img and qemu-io (so both copies hold the same
bytes), runs `qemu-img commit ARGS` in one folder and `imgutil commit ARGS` in the other, and
then compares: the exit code, stdout, and stderr (with the program's name changed); every image
of the chain by virtual size and content (qemu-img compare, and byte for byte for raw files);
`qemu-img check` of every qcow2/qed image (no errors, no leaks); and `qemu-img map
--output=json` of the top (host offsets left out where the base is not raw: the two base
writers place clusters differently). Skips (77) without qemu-img or qemu-io.

usage: test_commit_cli.py IMGUTIL
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
MB = 1024 * 1024

# Writes that leave every kind of range in a top: data, a partial cluster, zero clusters over
# the base's data, a compressed cluster, and untouched (unallocated) ranges.
TOP_WRITES = ['write -P 0x11 0 64k', 'write -P 0x12 200k 1k', 'write -z 1M 128k',
              'write -c -P 0x13 2M 64k', 'write -P 0x14 3M 100k']


class Failure(Exception):
    pass


def run(args, cwd, ok=(0,), env=None):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120, env=env)
    if ok is not None and proc.returncode not in ok:
        raise Failure('%s (in %s): exit %d\n%s%s' % (' '.join(map(str, args)), cwd,
                                                      proc.returncode, proc.stdout, proc.stderr))
    return proc


def qemu_io(cwd, fmt, path, commands):
    args = ['qemu-io', '-f', fmt]
    for c in commands:
        args += ['-c', c]
    run(args + [path], cwd)


def create(cwd, fmt, path, size=None, backing=None, backing_fmt=None, opts=None):
    args = ['qemu-img', 'create', '-q', '-f', fmt]
    if backing:
        args += ['-b', backing, '-F', backing_fmt]
    if opts:
        args += ['-o', opts]
    args.append(path)
    if size:
        args.append(size)
    run(args, cwd)


def raw_base(cwd, name='base.raw', size='4M', pattern=0xaa):
    create(cwd, 'raw', name, size)
    qemu_io(cwd, 'raw', name, ['write -P %d 0 %s' % (pattern, size)])


def qcow2_base(cwd, name='base.qcow2'):
    create(cwd, 'qcow2', name, '4M')
    qemu_io(cwd, 'qcow2', name, ['write -P 0xbb 0 1M', 'write -P 0xbc 2M 1M'])


# name: (build the chain in a folder, commit arguments, images as (file, format) top first)
def case_qcow2_over_raw(cwd):
    raw_base(cwd)
    create(cwd, 'qcow2', 'top.qcow2', backing='base.raw', backing_fmt='raw')
    qemu_io(cwd, 'qcow2', 'top.qcow2', TOP_WRITES)


def case_qcow2_over_qcow2(cwd):
    qcow2_base(cwd)
    create(cwd, 'qcow2', 'top.qcow2', backing='base.qcow2', backing_fmt='qcow2')
    qemu_io(cwd, 'qcow2', 'top.qcow2', TOP_WRITES)


def case_chain_of_three(cwd):
    raw_base(cwd)
    create(cwd, 'qcow2', 'mid.qcow2', backing='base.raw', backing_fmt='raw')
    qemu_io(cwd, 'qcow2', 'mid.qcow2', ['write -P 0x21 0 128k', 'write -z 512k 64k',
                                        'write -P 0x22 3M 64k'])
    create(cwd, 'qcow2', 'top.qcow2', backing='mid.qcow2', backing_fmt='qcow2')
    qemu_io(cwd, 'qcow2', 'top.qcow2', TOP_WRITES)


def case_top_bigger(cwd):
    raw_base(cwd, size='1M')
    create(cwd, 'qcow2', 'top.qcow2', '3M', backing='base.raw', backing_fmt='raw')
    qemu_io(cwd, 'qcow2', 'top.qcow2', ['write -P 0x31 512k 64k', 'write -P 0x32 2M 128k',
                                        'write -z 2560k 64k'])


def case_top_bigger_qcow2_base(cwd):
    create(cwd, 'qcow2', 'base.qcow2', '1M')
    qemu_io(cwd, 'qcow2', 'base.qcow2', ['write -P 0xbb 0 1M'])
    create(cwd, 'qcow2', 'top.qcow2', '3M', backing='base.qcow2', backing_fmt='qcow2')
    qemu_io(cwd, 'qcow2', 'top.qcow2', ['write -P 0x33 960k 128k', 'write -z 2M 64k'])


def case_small_clusters_v2(cwd):
    raw_base(cwd)
    create(cwd, 'qcow2', 'top.qcow2', backing='base.raw', backing_fmt='raw',
           opts='compat=0.10,cluster_size=4096')
    qemu_io(cwd, 'qcow2', 'top.qcow2', TOP_WRITES)


def case_extended_l2(cwd):
    raw_base(cwd)
    create(cwd, 'qcow2', 'top.qcow2', backing='base.raw', backing_fmt='raw',
           opts='extended_l2=on')
    qemu_io(cwd, 'qcow2', 'top.qcow2', ['write -P 0x41 0 2k', 'write -z 64k 4k',
                                        'write -P 0x42 1M 192k'])


def case_top_with_snapshot(cwd):
    raw_base(cwd)
    create(cwd, 'qcow2', 'top.qcow2', backing='base.raw', backing_fmt='raw')
    qemu_io(cwd, 'qcow2', 'top.qcow2', TOP_WRITES[:2])
    run(['qemu-img', 'snapshot', '-c', 'before', 'top.qcow2'], cwd)
    qemu_io(cwd, 'qcow2', 'top.qcow2', TOP_WRITES[2:] + ['write -P 0x15 0 4k'])


def case_qed_over_raw(cwd):
    raw_base(cwd)
    create(cwd, 'qed', 'top.qed', backing='base.raw', backing_fmt='raw')
    qemu_io(cwd, 'qed', 'top.qed', ['write -P 0x51 0 64k', 'write -z 1M 128k',
                                    'write -P 0x52 3M 4k'])


def case_vmdk_over_vmdk(cwd):
    create(cwd, 'vmdk', 'base.vmdk', '4M')
    qemu_io(cwd, 'vmdk', 'base.vmdk', ['write -P 0xaa 0 4M'])
    create(cwd, 'vmdk', 'top.vmdk', backing='base.vmdk', backing_fmt='vmdk')
    qemu_io(cwd, 'vmdk', 'top.vmdk', ['write -P 0x61 0 64k', 'write -z 1M 128k',
                                      'write -P 0x62 3M 4k'])


def case_no_backing(cwd):
    create(cwd, 'qcow2', 'top.qcow2', '1M')


R = ('base.raw', 'raw')
T = ('top.qcow2', 'qcow2')
CASES = [
    ('qcow2 over raw', case_qcow2_over_raw, ['-f', 'qcow2'], [T, R]),
    ('qcow2 over raw, -d', case_qcow2_over_raw, ['-d'], [T, R]),
    ('qcow2 over raw, -p -r', case_qcow2_over_raw, ['-q', '-p', '-r', '1G'], [T, R]),
    ('qcow2 over qcow2', case_qcow2_over_qcow2, [], [T, ('base.qcow2', 'qcow2')]),
    ('chain of 3, -b the deepest', case_chain_of_three, ['-b', 'base.raw'],
     [T, ('mid.qcow2', 'qcow2'), R]),
    ('chain of 3, -b the next', case_chain_of_three, ['-b', 'mid.qcow2'],
     [T, ('mid.qcow2', 'qcow2'), R]),
    ('chain of 3, into the next', case_chain_of_three, [], [T, ('mid.qcow2', 'qcow2'), R]),
    ('top bigger than the base', case_top_bigger, [], [T, R]),
    ('top bigger than a qcow2 base', case_top_bigger_qcow2_base, [],
     [T, ('base.qcow2', 'qcow2')]),
    ('v2, 4k clusters', case_small_clusters_v2, [], [T, R]),
    ('extended L2', case_extended_l2, [], [T, R]),
    ('top with an internal snapshot', case_top_with_snapshot, [], [T, R]),
    ('qed over raw', case_qed_over_raw, [], [('top.qed', 'qed'), R]),
    ('vmdk over vmdk', case_vmdk_over_vmdk, [], [('top.vmdk', 'vmdk'), ('base.vmdk', 'vmdk')]),
    # Refusals, with qemu-img's messages and exit codes.
    ('no backing file', case_no_backing, [], [T]),
    ('-b not in the chain', case_qcow2_over_raw, ['-b', 'nothere.raw'], [T, R]),
    ('-b the top itself', case_qcow2_over_raw, ['-b', 'top.qcow2'], [T, R]),
    ('bad cache mode', case_qcow2_over_raw, ['-t', 'bogus'], [T, R]),
    ('bad rate limit', case_qcow2_over_raw, ['-r', 'abc'], [T, R]),
    ('base held by a VM', case_qcow2_over_raw, ['HOLD'], [T, R]),
    ('read-only base', case_qcow2_over_raw, ['NOBODY'], [T, R]),
]

# A running VM's locks on its disk, as QEMU takes them (lock.h): it holds "consistent read"
# and "write" (bytes 100, 101) and lets nobody else write (byte 201).
HOLDER = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for byte in (100, 101, 201):
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_RDLCK, 0, byte, 1, 0))
print('held', flush=True)
sys.stdin.read()
"""


class Holder:
    def __init__(self, path):
        self.proc = subprocess.Popen([sys.executable, '-c', HOLDER, path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != 'held':
            raise Failure('could not lock %s' % path)

    def release(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def as_nobody(folder, base):
    """The prefix that runs a command unable to write `base` (a user other than its owner),
    or None where that cannot be arranged."""
    os.chmod(base, 0o444)
    if os.geteuid() != 0:
        return []
    if not shutil.which('setpriv'):
        return None
    os.chmod(folder, 0o777)
    for name in os.listdir(folder):
        if os.path.join(folder, name) != base:
            os.chmod(os.path.join(folder, name), 0o666)
    return ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']


def top_map(cwd, image, fmt, keep_offsets):
    rows = json.loads(run(['qemu-img', 'map', '-f', fmt, '--output=json', image], cwd).stdout)
    if keep_offsets:
        return rows
    # Without host offsets, rows qemu-img split only where they were not contiguous merge.
    merged = []
    for r in rows:
        r.pop('offset', None)
        last = merged[-1] if merged else None
        if last and all(last[k] == r[k] for k in r if k not in ('start', 'length')) and \
                last['start'] + last['length'] == r['start']:
            last['length'] += r['length']
        else:
            merged.append(r)
    return merged


def compare_images(ref, mine, images):
    # QEMU's VMDK driver refuses to read an overlay whose parent's CID changed, which its own
    # commit does: there only the base can be compared.
    contents = images[1:] if images[0][1] == 'vmdk' else images
    for name, fmt in contents:
        if fmt == 'raw':
            with open(os.path.join(ref, name), 'rb') as a, open(os.path.join(mine, name),
                                                                'rb') as b:
                if a.read() != b.read():
                    raise Failure('%s differs byte for byte from qemu-img\'s' % name)
        sizes = [json.loads(run(['qemu-img', 'info', '-U', '-f', fmt, '--output=json',
                                 os.path.join(d, name)], d).stdout)['virtual-size']
                 for d in (ref, mine)]
        if sizes[0] != sizes[1]:
            raise Failure('%s: virtual size %d, qemu-img leaves %d' % (name, sizes[1], sizes[0]))
        proc = run(['qemu-img', 'compare', '-f', fmt, '-F', fmt, os.path.join(ref, name),
                    os.path.join(mine, name)], ref, ok=None)
        if proc.returncode != 0:
            raise Failure('qemu-img compare %s: %s%s' % (name, proc.stdout, proc.stderr))
        if fmt in ('qcow2', 'qed'):
            proc = run(['qemu-img', 'check', '-f', fmt, name], mine, ok=None)
            if proc.returncode != 0:
                raise Failure('qemu-img check %s: exit %d\n%s%s' % (
                    name, proc.returncode, proc.stdout, proc.stderr))
    top, fmt = images[0]
    raw_below = all(f == 'raw' for _, f in images[1:])
    a = top_map(ref, top, fmt, raw_below)
    b = top_map(mine, top, fmt, raw_below)
    if a != b:
        raise Failure('qemu-img map of %s differs:\nqemu-img: %s\nimgutil:  %s' % (top, a, b))


def run_case(imgutil, tmp, name, build, args, images):
    ref, mine = os.path.join(tmp, 'ref'), os.path.join(tmp, 'mine')
    for d in (ref, mine):
        shutil.rmtree(d, ignore_errors=True)
        os.mkdir(d)
        build(d)
    top = images[0][0]
    prefix = {}
    if args == ['NOBODY']:
        args = []
        for d in (ref, mine):
            prefix[d] = as_nobody(d, os.path.join(d, images[-1][0]))
            if prefix[d] is None:
                print('skip %s: setpriv not found' % name)
                return
    holders = [Holder(os.path.join(d, images[-1][0])) for d in (ref, mine)] \
        if args == ['HOLD'] else []
    args = [] if holders else args
    try:
        a = run(prefix.get(ref, []) + ['qemu-img', 'commit'] + args + [top], ref, ok=None)
        b = run(prefix.get(mine, []) + [imgutil, 'commit'] + args + [top], mine, ok=None)
    finally:
        for h in holders:
            h.release()
    if a.returncode != b.returncode:
        raise Failure('exit %d, qemu-img exits %d\n%s' % (b.returncode, a.returncode, b.stderr))
    if a.stdout != b.stdout:
        raise Failure('stdout %r, qemu-img prints %r' % (b.stdout, a.stdout))
    expected_err = a.stderr.replace('qemu-img', 'imgutil')
    if expected_err != b.stderr:
        raise Failure('stderr %r, qemu-img prints %r' % (b.stderr, a.stderr))
    compare_images(ref, mine, images)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('SKIP: qemu-img or qemu-io not found')
        return SKIP
    imgutil = os.path.abspath(sys.argv[1])
    failures = 0
    with tempfile.TemporaryDirectory(prefix='commit-cli-') as tmp:
        for name, build, args, images in CASES:
            try:
                run_case(imgutil, tmp, name, build, args, images)
                print('ok   %s' % name)
            except Failure as e:
                failures += 1
                print('FAIL %s: %s' % (name, e))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
