# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bitmap changes and tracked writes with an I/O error injected at each of their requests
(IMGUTIL_IO=fault, tests/faults/faultlib.py). Whatever request fails, the image passes
qemu-img check (leaks allowed) and its bitmaps are those from before the change or those from
after it: never a mix, never a table freed under the header that names it. A write session
that fails leaves the enabled bitmaps either stored with every write or marked in use.

    test_bitmap_faults.py IMGUTIL WRITE_DRIVER
"""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'faults'))
import faultlib  # noqa: E402
import qcow2_bitmaps  # noqa: E402
from faultlib import Scenario, qemu_check  # noqa: E402

IMGUTIL = WRITE_DRIVER = None
WRITES = ['write 0 4096 1', 'write 1048576 8192 2', 'flush', 'zero 2097152 65536',
          'write 3145728 512 3']


def prepare_image(work, data=True):
    """Three bitmaps (two enabled); with `data`, bits set by qemu-io writes."""
    path = os.path.join(work, 'img')
    for argv in (['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=4096', path, '4M'],
                 ['qemu-img', 'bitmap', '--add', path, 'b0'],
                 ['qemu-img', 'bitmap', '--add', '-g', '4k', path, 'fine'],
                 ['qemu-img', 'bitmap', '--add', '--disable', path, 'off'],
                 ['qemu-io', '-f', 'qcow2', '-c', 'write 64k 64k', '-c', 'write 3M 4k', path]):
        if data or argv[0] != 'qemu-io':
            subprocess.run(argv, check=True, capture_output=True)


class Change(Scenario):
    """One `imgutil bitmap` command: the bitmaps after it are the old ones or the new ones."""

    def __init__(self, name, args):
        self.name, self.args = 'bitmap-' + name, args
        self.before = self.after = None

    def prepare(self, work):
        prepare_image(work)
        if self.before is None:
            self.before = qcow2_bitmaps.decode(os.path.join(work, 'img'))
            ref = os.path.join(work, 'ref')
            shutil.copy(os.path.join(work, 'img'), ref)
            subprocess.run([IMGUTIL, 'bitmap'] + self.args[:-1] + [ref, self.args[-1]],
                           check=True)
            self.after = qcow2_bitmaps.decode(ref)
            os.unlink(ref)

    def command(self, work):
        return [IMGUTIL, 'bitmap'] + self.args[:-1] + [os.path.join(work, 'img'), self.args[-1]]

    def verify(self, work, rc):
        path = os.path.join(work, 'img')
        problems = qemu_check(path, 'qcow2')
        if problems:
            return problems
        now = qcow2_bitmaps.decode(path)
        if now not in (self.before, self.after):
            return ['bitmaps are neither the old nor the new ones: %s' % sorted(now)]
        if rc == 0 and now != self.after:
            return ['succeeded without the change']
        return []


class TrackedWrites(Scenario):
    """Writes through the library: the enabled bitmaps end stored with every write, or in use."""

    name = 'bitmap-tracked-writes'

    def prepare(self, work):
        # write_driver expects an image that reads as zeros.
        prepare_image(work, data=False)
        with open(os.path.join(work, 'script'), 'w') as f:
            f.write('\n'.join(WRITES) + '\n')
        self.before = qcow2_bitmaps.decode(os.path.join(work, 'img'))

    def command(self, work):
        return [WRITE_DRIVER, 'run', os.path.join(work, 'img'), '-f', 'qcow2', '--script',
                os.path.join(work, 'script')]

    def verify(self, work, rc):
        path = os.path.join(work, 'img')
        problems = qemu_check(path, 'qcow2')
        if problems:
            return problems
        now = qcow2_bitmaps.decode(path)
        if sorted(now) != ['b0', 'fine', 'off']:
            return ['bitmaps lost: %s' % sorted(now)]
        ops = self.last_stdout.splitlines()
        if rc != 0 and ops:
            ops.pop()  # the operation that failed may have written nothing
        for name in ('b0', 'fine'):
            flags, gran, bits = now[name]
            if flags & qcow2_bitmaps.IN_USE:
                continue
            for line in ops:
                words = line.split()
                if len(words) < 3 or words[0] not in ('write', 'zero'):
                    continue
                off, length = int(words[1]), int(words[2])
                for g in range(off // gran, (off + length - 1) // gran + 1):
                    if not bits[g // 8] >> (g % 8) & 1:
                        return ['%s is consistent but misses the %s at %d' % (name, words[0],
                                                                              off)]
        if now['off'] != self.before['off']:
            return ['the disabled bitmap changed']
        return []


def main():
    global IMGUTIL, WRITE_DRIVER
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    IMGUTIL, WRITE_DRIVER = sys.argv[1], sys.argv[2]
    if not faultlib.tools_present():
        print('qemu-img or qemu-io not installed: skipped')
        return faultlib.SKIP
    scenarios = [
        Change('add', ['--add', '-g', '8k', 'new']),
        Change('merge', ['--merge', 'fine', 'b0']),
        Change('remove', ['--remove', 'fine']),
        Change('clear', ['--clear', 'b0']),
        Change('disable', ['--disable', 'b0']),
        TrackedWrites(),
    ]
    tally = faultlib.Tally()
    limit = int(os.environ.get('IMGUTIL_FAULT_SAMPLES', '4'))
    faultlib.run_scenarios(scenarios, limit, lambda *a: None, tally)
    print(tally.summary())
    for f in tally.failures:
        print('FAIL: ' + f, file=sys.stderr)
    return 1 if tally.failures else 0


if __name__ == '__main__':
    sys.exit(main())
