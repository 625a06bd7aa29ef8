# SPDX-License-Identifier: LGPL-2.1-or-later
"""imgutil bitmap next to qemu-img bitmap on identical copies: the same exit codes and messages,
the same bitmaps in info, the same bits (decoded from the files), and a clean qemu-img check."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qcow2_bitmaps  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'api'))
from apitest import SKIP, check, failures  # noqa: E402


def run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def bitmaps_info(path, cwd):
    rc, out, _ = run(['qemu-img', 'info', '--output=json', path], cwd)
    data = json.loads(out) if rc == 0 else {}
    return data.get('format-specific', {}).get('data', {}).get('bitmaps')


def normalise(text, tool):
    text = text.replace(tool + ':', 'TOOL:')
    # qemu-img names the node ("#block123"), imgutil the file.
    return re.sub(r"#block\d+", 'FILE', text)


def side_by_side(cli, command, args, setup, work, what, file=None):
    """Runs `imgutil COMMAND ARGS` and `qemu-img COMMAND ARGS` in two folders that `setup`
    filled alike; checks that exit codes agree. Returns the folders and both messages, with
    the tool's name (and `file`) replaced."""
    ours, theirs = os.path.join(work, 'ours'), os.path.join(work, 'theirs')
    for d in (ours, theirs):
        shutil.rmtree(d, ignore_errors=True)
        os.mkdir(d)
        setup(d)
    r1 = run([cli, command] + args, ours)
    r2 = run(['qemu-img', command] + args, theirs)
    check(r1[0] == r2[0], '%s: exit code %d (qemu-img %d)' % (what, r1[0], r2[0]))
    e1, e2 = normalise(r1[2], 'imgutil'), normalise(r2[2], 'qemu-img')
    if file:
        e1, e2 = e1.replace(file, 'FILE'), e2.replace(file, 'FILE')
    return ours, theirs, r2[0], e1, e2


def compare(cli, args, setup, work, what, files=('a.qcow2',)):
    ours, theirs, _, e1, e2 = side_by_side(cli, 'bitmap', args, setup, work, what, files[0])
    if len(e2) > 1500:
        # imgutil shortens an over-long name in the message; the reason must be the same.
        e1, e2 = e1.split("persistent in")[-1], e2.split("persistent in")[-1]
    check(e1 == e2, '%s: message %r (qemu-img %r)' % (what, e1, e2))
    for f in files:
        if not f.endswith('.qcow2'):
            continue
        check(bitmaps_info(f, ours) == bitmaps_info(f, theirs),
              '%s: info bitmaps of %s %s' % (what, f, bitmaps_info(f, ours)))
        b1 = qcow2_bitmaps.decode(os.path.join(ours, f))
        b2 = qcow2_bitmaps.decode(os.path.join(theirs, f))
        check(b1 == b2, '%s: bits of %s' % (what, f))
        rc, out, err = run(['qemu-img', 'check', f], ours)
        check(rc == 0 and 'No errors' in out and 'leaked' not in out,
              '%s: qemu-img check %s %s' % (what, f, err.strip()))


def base(d, size='4M', bitmaps=(('b0', []), ('b1', ['-g', '128k']))):
    """a.qcow2 with bitmaps that already hold bits (written through qemu-io)."""
    subprocess.run(['qemu-img', 'create', '-f', 'qcow2', 'a.qcow2', size], cwd=d, check=True,
                   capture_output=True)
    for name, extra in bitmaps:
        subprocess.run(['qemu-img', 'bitmap', '--add'] + extra + ['a.qcow2', name], cwd=d,
                       check=True)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write 0 4k', '-c', 'write 1M 200k',
                    '-c', 'write 3M 512', 'a.qcow2'], cwd=d, check=True, capture_output=True)


def main():
    cli = os.environ.get('IMGUTIL_CLI')
    if not cli or not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('SKIP: needs IMGUTIL_CLI, qemu-img and qemu-io')
        return SKIP
    work = tempfile.mkdtemp(prefix='imgutil-bitmap-')
    try:
        def plain(d):
            base(d)

        def two_images(d):
            base(d)
            base_c = os.path.join(d, 'c')
            os.mkdir(base_c)
            base(base_c, bitmaps=(('s', ['-g', '4k']),))
            os.rename(os.path.join(base_c, 'a.qcow2'), os.path.join(d, 'c.qcow2'))
            subprocess.run(['qemu-img', 'create', '-f', 'qcow2', 'small.qcow2', '1M'], cwd=d,
                           check=True, capture_output=True)
            subprocess.run(['qemu-img', 'bitmap', '--add', 'small.qcow2', 's'], cwd=d, check=True)
            subprocess.run(['qemu-img', 'create', '-f', 'raw', 'r.raw', '4M'], cwd=d, check=True,
                           capture_output=True)

        def in_use(d):
            base(d)
            qcow2_bitmaps_set_in_use(os.path.join(d, 'a.qcow2'), 'b0')

        def v2(d):
            subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=0.10', 'a.qcow2',
                            '1M'], cwd=d, check=True, capture_output=True)

        def huge(d):
            subprocess.run(['qemu-img', 'create', '-f', 'qcow2', 'a.qcow2', '64T'], cwd=d,
                           check=True, capture_output=True)

        cases = [
            (['--add', '-g', '512', 'a.qcow2', 'n'], huge, 'bitmap too large for the image'),
            (['--add', '-g', '8M', 'a.qcow2', 'n'], huge, 'bitmap of a 64 TiB image'),
            (['--add', '-g', '4G', 'a.qcow2', 'n'], plain, 'granularity past 32 bits'),
            (['--add', 'a.qcow2', 'n'], plain, 'add'),
            (['--add', '-g', '512', 'a.qcow2', 'n'], plain, 'add granularity 512'),
            (['--add', '-g', '2G', 'a.qcow2', 'n'], plain, 'add granularity 2G'),
            (['--add', '--disable', 'a.qcow2', 'n'], plain, 'add disabled'),
            (['--add', '--enable', '--clear', 'a.qcow2', 'n'], plain, 'several operations'),
            (['--remove', 'a.qcow2', 'b0'], plain, 'remove'),
            (['--remove', 'a.qcow2', 'b0', '--remove'], plain, 'remove twice'),
            (['--clear', 'a.qcow2', 'b1'], plain, 'clear'),
            (['--disable', 'a.qcow2', 'b0'], plain, 'disable'),
            (['--disable', '--enable', 'a.qcow2', 'b1'], plain, 'disable, enable'),
            (['--add', '--merge', 'b1', 'a.qcow2', 'n'], plain,
             'merge a coarser bitmap into a new one'),
            (['--merge', 'b0', 'a.qcow2', 'b1'], plain, 'merge a finer bitmap'),
            (['--merge', 's', '-b', 'c.qcow2', 'a.qcow2', 'b0'], two_images,
             'merge from another image'),
            (['--merge', 's', '-b', 'c.qcow2', '-F', 'qcow2', 'a.qcow2', 'b1'], two_images,
             'merge from another image with -F'),
            (['--merge', 's', '-b', 'small.qcow2', 'a.qcow2', 'b1'], two_images,
             'merge bitmaps of different sizes'),
            (['--merge', 's', '-b', 'r.raw', '-F', 'raw', 'a.qcow2', 'b1'], two_images,
             'merge from raw'),
            (['--merge', 'nope', 'a.qcow2', 'b1'], plain, 'merge unknown source'),
            (['--merge', 'b0', 'a.qcow2', 'nope'], plain, 'merge into unknown'),
            (['--add', 'a.qcow2', 'b0'], plain, 'duplicate name'),
            (['--add', 'a.qcow2', 'x' * 1024], plain, 'name too long'),
            (['--add', 'a.qcow2', ''], plain, 'empty name'),
            (['--add', '-g', '1000', 'a.qcow2', 'n'], plain, 'granularity not a power of two'),
            (['--add', '-g', '256', 'a.qcow2', 'n'], plain, 'granularity too small'),
            (['--add', '-g', 'abc', 'a.qcow2', 'n'], plain, 'granularity not a number'),
            (['--add', 'a.qcow2', 'n'], v2, 'qcow2 v2'),
            (['--remove', 'a.qcow2', 'nope'], plain, 'remove unknown'),
            (['--clear', 'a.qcow2', 'nope'], plain, 'clear unknown'),
            (['--enable', 'a.qcow2', 'nope'], plain, 'enable unknown'),
            (['--clear', 'a.qcow2', 'b0'], in_use, 'clear in use'),
            (['--enable', 'a.qcow2', 'b0'], in_use, 'enable in use'),
            (['--disable', 'a.qcow2', 'b0'], in_use, 'disable in use'),
            (['--merge', 'b0', 'a.qcow2', 'b1'], in_use, 'merge from in use'),
            (['--merge', 'b1', 'a.qcow2', 'b0'], in_use, 'merge into in use'),
            (['--remove', 'a.qcow2', 'b0'], in_use, 'remove in use'),
            (['--add', 'a.qcow2', 'b0'], in_use, 'add over in use'),
            (['a.qcow2', 'b0'], plain, 'no operation'),
            (['--add', 'a.qcow2'], plain, 'no bitmap name'),
            (['--clear', '-g', '64k', 'a.qcow2', 'b0'], plain, '-g without --add'),
            (['--clear', '-F', 'raw', 'a.qcow2', 'b0'], plain, '-F without -b'),
            (['--clear', '-b', 'x', 'a.qcow2', 'b0'], plain, '-b without --merge'),
        ]
        for args, setup, what in cases:
            compare(cli, args, setup, work, what)
        compare(cli, ['--add', 'r.raw', 'n', '-f', 'raw'], two_images, work, 'raw image',
                files=('r.raw',))
        compare(cli, ['--clear', 'r.raw', 'n', '-f', 'raw'], two_images, work,
                'clear on a raw image', files=('r.raw',))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print('%d failed' % len(failures))
    return 1 if failures else 0


def qcow2_bitmaps_set_in_use(path, name):
    """Marks bitmap `name` in use, as a QEMU that crashed leaves it."""
    import struct
    with open(path, 'r+b') as f:
        data = f.read()
        cs = 1 << struct.unpack('>I', data[20:24])[0]
        pos = struct.unpack('>I', data[100:104])[0]
        while pos + 8 <= cs:
            magic, length = struct.unpack('>II', data[pos:pos + 8])
            if magic == 0:
                break
            if magic == qcow2_bitmaps.BITMAPS_EXT:
                nb, _, _, dir_offset = struct.unpack('>IIQQ', data[pos + 8:pos + 32])
            pos += 8 + ((length + 7) & ~7)
        pos = dir_offset
        for _ in range(nb):
            flags, = struct.unpack('>I', data[pos + 12:pos + 16])
            name_size, = struct.unpack('>H', data[pos + 18:pos + 20])
            if data[pos + 24:pos + 24 + name_size].decode() == name:
                f.seek(pos + 12)
                f.write(struct.pack('>I', flags | qcow2_bitmaps.IN_USE))
            pos += (24 + name_size + 7) & ~7


if __name__ == '__main__':
    sys.exit(main())
