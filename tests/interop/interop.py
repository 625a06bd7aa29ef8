# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared machinery of the interop tests: qemu-img/qemu-io make the images, and every answer
the library gives (through the public API and through the imgutil CLI) is held against what
qemu-img answers for the same image.

A test script builds a Suite, makes images, calls check_image() (or the single checks) and
ends with suite.finish(). Failures are collected, not raised, so one run reports every
mismatch; each one names the image recipe and shows expected (qemu) against got (imgutil).
"""

import contextlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pylib'))
import command  # noqa: E402
from command import describe_rc  # noqa: E402

SKIP = 77

# A hung command becomes a clear failure instead of a test killed by meson's timeout.
COMMAND_TIMEOUT = 240
# Characters of a command's output a failure message shows.
CLIP_LIMIT = 2000

INFO_FIELDS = ('filename', 'format', 'virtual-size', 'actual-size', 'cluster-size',
               'dirty-flag', 'backing-filename', 'full-backing-filename',
               'backing-filename-format')
SNAPSHOT_FIELDS = ('id', 'name', 'vm-state-size', 'date-sec', 'date-nsec', 'vm-clock-sec',
                   'vm-clock-nsec', 'icount')
FORMAT_DATA_FIELDS = ('compat', 'compression-type', 'lazy-refcounts', 'refcount-bits',
                      'corrupt', 'extended-l2', 'bitmaps', 'data-file')
MAP_FIELDS = ('start', 'length', 'depth', 'present', 'zero', 'data', 'offset')

# Allocated bytes a converted raw file may have beyond its non-zero 4 KiB blocks: room for
# the file system's own extent blocks, not for a single zero-filled cluster written as data.
SPARSE_SLACK = 16 * 1024
SPARSE_BLOCK = 4096

MISSING = '<absent>'


class CheckFailed(Exception):
    pass


class CommandError(CheckFailed):
    pass


def require_qemu():
    missing = [t for t in ('qemu-img', 'qemu-io') if shutil.which(t) is None]
    if missing:
        print('SKIP: %s not installed' % ', '.join(missing))
        sys.exit(SKIP)


def run(args, cwd=None, ok_codes=(0,), timeout=COMMAND_TIMEOUT, binary=False):
    """Runs a command; raises CommandError (with its output) when the exit code is not in
    ok_codes. ok_codes=None accepts any exit code."""
    return command.run(args, CommandError, timeout, CLIP_LIMIT, cwd=cwd, ok_codes=ok_codes,
                       binary=binary)


def clip(text, limit=CLIP_LIMIT):
    return command.clip(text, limit)


class Suite:
    """Collects named checks of one test program and prints the closing tally."""

    def __init__(self, name, argv):
        require_qemu()
        if len(argv) < 2:
            print('usage: %s API_DRIVER [ARGS...]' % argv[0])
            sys.exit(2)
        self.name = name
        self.driver = os.path.abspath(argv[1])
        self.args = argv[2:]
        # Run by hand, the CLI is found beside the driver in the same build tree.
        build_root = os.environ.get('IMGUTIL_BUILD_ROOT') or os.path.join(
            os.path.dirname(self.driver), '..', '..')
        self.cli = os.environ.get('IMGUTIL_CLI') or os.path.abspath(
            os.path.join(build_root, 'tools', 'imgutil'))
        self.source_root = os.environ.get('IMGUTIL_SOURCE_ROOT',
                                          os.path.join(os.path.dirname(__file__), '..', '..'))
        self.passed = 0
        self.failures = []
        self.tmp = tempfile.mkdtemp(prefix='imgutil-interop-%s-' % name)
        self.started = time.monotonic()
        self._random_file = None

    @contextlib.contextmanager
    def check(self, label):
        """A named check: passes when the body ends normally, fails on CheckFailed (or
        AssertionError), with the message recorded under the label."""
        try:
            yield
        except (CheckFailed, AssertionError) as e:
            message = str(e) or e.__class__.__name__
            self.failures.append((label, message))
            print('FAIL %s\n     %s' % (label, message.replace('\n', '\n     ')), flush=True)
        else:
            self.passed += 1
            print('ok   %s' % label, flush=True)

    def finish(self):
        elapsed = time.monotonic() - self.started
        if self.failures:
            print('\n%d failing checks:' % len(self.failures))
            for label, _ in self.failures:
                print('  - %s' % label)
            print('(images kept in %s)' % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print('%s: %d passed, %d failed (%.1f s)' % (self.name, self.passed,
                                                     len(self.failures), elapsed))
        print('%d passed, %d failed' % (self.passed, len(self.failures)))
        sys.exit(1 if self.failures else 0)

    def path(self, *parts):
        p = os.path.join(self.tmp, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def random_file(self):
        """A file of pseudo-random bytes, of an odd size, for `qemu-io write -s`: repeated
        through a write, so that data shifted by any amount inside a cluster is noticed."""
        if not self._random_file:
            self._random_file = self.path('random.bin')
            with open(self._random_file, 'wb') as f:
                f.write(random.Random(20240229).randbytes(1000003))
        return self._random_file

    # ---- the tools ----------------------------------------------------------------------

    def api(self, *args, cwd=None, ok_codes=(0,), fmt=None):
        pre = ['-f', fmt] if fmt else []
        return run([self.driver] + pre + list(args), cwd=cwd, ok_codes=ok_codes)

    def imgutil(self, *args, cwd=None, ok_codes=(0,)):
        if not os.path.exists(self.cli):
            raise CheckFailed('the imgutil CLI was not built (%s)' % self.cli)
        return run([self.cli] + list(args), cwd=cwd, ok_codes=ok_codes)


def parse_refusal(proc):
    """`api_driver open` prints "refused CODE MESSAGE"; returns (code, message)."""
    m = re.match(r'refused (-?\d+) (.*)', proc.stdout.strip(), re.S)
    if proc.returncode != 3 or not m:
        raise CheckFailed('img_open did not refuse it: %s, stdout %r, stderr %r' % (
            describe_rc(proc.returncode), clip(proc.stdout), clip(proc.stderr)))
    return int(m.group(1)), m.group(2)


def qemu_img(*args, cwd=None, ok_codes=(0,)):
    return run(['qemu-img'] + list(args), cwd=cwd, ok_codes=ok_codes)


def qemu_io(path, commands, fmt='qcow2', cwd=None):
    args = ['qemu-io', '-f', fmt]
    for c in commands:
        args += ['-c', c]
    proc = run(args + [path], cwd=cwd)
    if 'failed' in proc.stdout or 'failed' in proc.stderr:
        raise CommandError('qemu-io on %s: %s %s' % (path, proc.stdout, proc.stderr))
    return proc


def create_qcow2(path, size, options=None, writes=(), backing=None, backing_fmt=None, cwd=None):
    """qemu-img create -f qcow2 [-o options] [-b backing -F fmt] path size, then the qemu-io
    commands in `writes`."""
    args = ['create', '-q', '-f', 'qcow2']
    if options:
        args += ['-o', options]
    if backing:
        args += ['-b', backing, '-F', backing_fmt or 'qcow2']
    qemu_img(*(args + [path, str(size)]), cwd=cwd)
    if writes:
        qemu_io(path, writes, cwd=cwd)
    return path


def qemu_info(path, cwd=None, chain=False):
    args = ['info', '--output=json'] + (['--backing-chain'] if chain else []) + [path]
    return json.loads(qemu_img(*args, cwd=cwd).stdout)


# ---- comparisons -------------------------------------------------------------------------

def project(doc, fields):
    return {f: doc.get(f, MISSING) for f in fields}


def info_differences(qemu, ours, where=''):
    """Field-by-field differences between two `info --output=json` objects."""
    diffs = []
    if not isinstance(ours, dict):
        return ['%sexpected a JSON object, got %r' % (where, ours)]
    for f in INFO_FIELDS:
        q, o = qemu.get(f, MISSING), ours.get(f, MISSING)
        if q != o:
            diffs.append('%s%s: qemu-img %r, imgutil %r' % (where, f, q, o))
    qs, os_ = qemu.get('snapshots', MISSING), ours.get('snapshots', MISSING)
    if qs == MISSING or os_ == MISSING or not isinstance(os_, list):
        if qs != os_:
            diffs.append('%ssnapshots: qemu-img %r, imgutil %r' % (where, qs, os_))
    elif len(qs) != len(os_):
        diffs.append('%ssnapshots: qemu-img lists %d, imgutil %d: %r vs %r' % (
            where, len(qs), len(os_), qs, os_))
    else:
        for i, (a, b) in enumerate(zip(qs, os_)):
            pa, pb = project(a, SNAPSHOT_FIELDS), project(b, SNAPSHOT_FIELDS)
            for f in SNAPSHOT_FIELDS:
                if pa[f] != pb[f]:
                    diffs.append('%ssnapshots[%d].%s: qemu-img %r, imgutil %r' % (
                        where, i, f, pa[f], pb[f]))
    qf, of = qemu.get('format-specific', MISSING), ours.get('format-specific', MISSING)
    if qf == MISSING or of == MISSING or not isinstance(of, dict):
        if qf != of:
            diffs.append('%sformat-specific: qemu-img %r, imgutil %r' % (where, qf, of))
    else:
        if qf.get('type', MISSING) != of.get('type', MISSING):
            diffs.append('%sformat-specific.type: qemu-img %r, imgutil %r' % (
                where, qf.get('type', MISSING), of.get('type', MISSING)))
        qd, od = qf.get('data', {}), of.get('data', {})
        if not isinstance(od, dict):
            diffs.append('%sformat-specific.data: imgutil %r is not an object' % (where, od))
        else:
            for f in FORMAT_DATA_FIELDS:
                q, o = qd.get(f, MISSING), od.get(f, MISSING)
                if q != o:
                    diffs.append('%sformat-specific.data.%s: qemu-img %r, imgutil %r' % (
                        where, f, q, o))
    return diffs


def chain_info_differences(qemu, ours):
    if not isinstance(ours, list):
        return ['--backing-chain: expected a JSON array, got %r' % (ours,)]
    diffs = []
    if len(qemu) != len(ours):
        diffs.append('--backing-chain: qemu-img lists %d images (%s), imgutil %d (%s)' % (
            len(qemu), [i.get('filename') for i in qemu], len(ours),
            [i.get('filename') if isinstance(i, dict) else i for i in ours]))
    for i, (q, o) in enumerate(zip(qemu, ours)):
        diffs += info_differences(q, o, where='[%d] ' % i)
    return diffs


def merge_map(rows):
    """Normalises a map as qemu-img merges it: neighbours with the same depth, flags and
    (contiguous) offset become one row."""
    out = []
    for r in rows:
        r = {f: r[f] for f in MAP_FIELDS if f in r}
        if out:
            p = out[-1]
            same = all(p.get(f) == r.get(f) for f in ('depth', 'present', 'zero', 'data'))
            same = same and (('offset' in p) == ('offset' in r))
            if same and 'offset' in p:
                same = p['offset'] + p['length'] == r['offset']
            if same and p['start'] + p['length'] == r['start']:
                p['length'] += r['length']
                continue
        out.append(r)
    return out


def format_row(r):
    if r is None:
        return '(none)'
    s = 'start=%d length=%d depth=%d present=%s zero=%s data=%s' % (
        r['start'], r['length'], r['depth'], r['present'], r['zero'], r['data'])
    return s + (' offset=%d' % r['offset'] if 'offset' in r else ' offset=-')


def map_differences(qemu_rows, our_rows, context=3):
    q, o = merge_map(qemu_rows), merge_map(our_rows)
    if q == o:
        return None
    i = 0
    while i < min(len(q), len(o)) and q[i] == o[i]:
        i += 1
    lines = ['maps differ from row %d (qemu-img %d rows, imgutil %d rows):' % (i, len(q),
                                                                             len(o))]
    for j in range(max(0, i - 1), i + context):
        if j >= len(q) and j >= len(o):
            break
        lines.append('  qemu-img: %s' % format_row(q[j] if j < len(q) else None))
        lines.append('  imgutil:  %s' % format_row(o[j] if j < len(o) else None))
    return '\n'.join(lines)


def parse_json(text, what):
    try:
        return json.loads(text)
    except ValueError as e:
        raise CheckFailed('%s printed invalid JSON (%s): %s' % (what, e, clip(text)))


def nonzero_block_bytes(path, block=SPARSE_BLOCK):
    """Bytes in the aligned `block`-sized pieces of `path` that hold a non-zero byte: what a
    sparse copy has to allocate. Holes are skipped with SEEK_DATA, so huge sparse files are
    cheap."""
    total = 0
    zero = bytes(block)
    with open(path, 'rb') as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        counted_to = 0
        while counted_to < size:
            try:
                data_at = os.lseek(fd, counted_to, os.SEEK_DATA)
            except OSError:
                break
            hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
            pos = max(counted_to, data_at - data_at % block)
            f.seek(pos)
            while pos < hole_at:
                chunk = f.read(min(hole_at - pos + block, block * 256))
                if not chunk:
                    break
                usable = len(chunk) - len(chunk) % block if pos + len(chunk) < size else len(chunk)
                for k in range(0, usable, block):
                    piece = chunk[k:k + block]
                    if piece != zero[:len(piece)]:
                        total += len(piece)
                if usable == 0:
                    break
                pos += usable
                f.seek(pos)
            counted_to = max(pos, hole_at)
    return total


def files_identical(a, b):
    """Byte-for-byte equality; returns None or a description of the first difference."""
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    if sa != sb:
        return 'sizes differ: %s has %d bytes, %s has %d' % (a, sa, b, sb)
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        pos = 0
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                k = next(i for i in range(min(len(x), len(y))) if x[i] != y[i])
                return 'first difference at byte %d: 0x%02x vs 0x%02x' % (pos + k, x[k], y[k])
            if not x:
                return None
            pos += len(x)


# ---- the whole comparison for one image -------------------------------------------------

class ImageCase:
    """One image under test: where it is, how to name it from which folder, and the qemu
    facts about it gathered once."""

    def __init__(self, suite, label, path, cwd=None, fmt='qcow2', granule=None,
                 has_backing=False):
        self.suite = suite
        self.label = label
        self.path = path          # as given to every tool, relative to cwd or absolute
        self.cwd = cwd or suite.tmp
        self.fmt = fmt
        self.granule = granule
        self.has_backing = has_backing
        self.ref = None


def reference_raw(case):
    """qemu-img convert -O raw: the content every reader must reproduce."""
    if case.ref is None:
        ref = os.path.join(case.suite.tmp, 'ref-%s.raw' % re.sub(r'\W+', '_', case.label))
        qemu_img('convert', '-O', 'raw', case.path, ref, cwd=case.cwd)
        case.ref = ref
    return case.ref


def check_reads(case):
    with case.suite.check('%s: img_pread matches qemu-img convert -O raw' % case.label):
        ref = reference_raw(case)
        granule = case.granule or qemu_info(case.path, cwd=case.cwd).get('cluster-size', 4096)
        proc = case.suite.api('read-compare', case.path, ref, granule, cwd=case.cwd,
                              ok_codes=None)
        if proc.returncode != 0:
            raise CheckFailed('%s\n%s' % (describe_rc(proc.returncode), clip(proc.stderr)))


def check_map(case):
    s = case.suite
    qemu_rows = parse_json(qemu_img('map', '--output=json', case.path, cwd=case.cwd).stdout,
                           'qemu-img map')
    with s.check('%s: img_block_status agrees with qemu-img map' % case.label):
        proc = s.api('block-status', case.path, cwd=case.cwd, ok_codes=None)
        if proc.returncode != 0:
            raise CheckFailed('%s\n%s' % (describe_rc(proc.returncode), clip(proc.stderr)))
        rows = parse_json(proc.stdout, 'img_block_status')
        for r in rows:
            if r.get('compressed') and ('offset' in r or not r['data']):
                raise CheckFailed('compressed run without data or with a host offset: %s' %
                                  format_row(r))
        diff = map_differences(qemu_rows, rows)
        if diff:
            raise CheckFailed(diff)
    with s.check('%s: img_map_json agrees with qemu-img map' % case.label):
        rows = parse_json(s.api('map-json', case.path, cwd=case.cwd).stdout, 'img_map_json')
        diff = map_differences(qemu_rows, rows)
        if diff:
            raise CheckFailed(diff)
    with s.check('%s: imgutil map --output=json agrees with qemu-img map' % case.label):
        rows = parse_json(s.imgutil('map', '--output=json', case.path, cwd=case.cwd).stdout,
                          'imgutil map')
        diff = map_differences(qemu_rows, rows)
        if diff:
            raise CheckFailed(diff)
    return qemu_rows


def settle_allocation(paths, cwd):
    """Flushes the files so that their allocation (st_blocks, "actual-size") no longer moves
    when the file system writes back delayed allocations between two tools' reads of it."""
    for p in paths:
        try:
            fd = os.open(os.path.join(cwd, p), os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_info(case):
    s = case.suite
    settle_allocation([case.path], case.cwd)
    if case.has_backing:
        settle_allocation([i.get('filename', '') for i in
                           qemu_info(case.path, cwd=case.cwd, chain=True)], case.cwd)
    qemu = qemu_info(case.path, cwd=case.cwd)
    with s.check('%s: imgutil info --output=json matches qemu-img info' % case.label):
        ours = parse_json(s.imgutil('info', '--output=json', case.path, cwd=case.cwd).stdout,
                          'imgutil info')
        diffs = info_differences(qemu, ours)
        if diffs:
            raise CheckFailed('\n'.join(diffs))
    with s.check('%s: img_info_json matches qemu-img info' % case.label):
        ours = parse_json(s.api('info-json', case.path, cwd=case.cwd).stdout, 'img_info_json')
        diffs = info_differences(qemu, ours)
        if diffs:
            raise CheckFailed('\n'.join(diffs))
    if case.has_backing:
        qchain = qemu_info(case.path, cwd=case.cwd, chain=True)
        with s.check('%s: imgutil info --backing-chain matches qemu-img' % case.label):
            ours = parse_json(s.imgutil('info', '--output=json', '--backing-chain', case.path,
                                        cwd=case.cwd).stdout, 'imgutil info --backing-chain')
            diffs = chain_info_differences(qchain, ours)
            if diffs:
                raise CheckFailed('\n'.join(diffs))
        with s.check('%s: img_info_json(IMG_INFO_BACKING_CHAIN) matches qemu-img' % case.label):
            ours = parse_json(s.api('info-json', case.path, 'chain', cwd=case.cwd).stdout,
                              'img_info_json chain')
            diffs = chain_info_differences(qchain, ours)
            if diffs:
                raise CheckFailed('\n'.join(diffs))
    return qemu


def check_convert(case):
    s = case.suite
    out = os.path.join(s.tmp, 'out-%s.raw' % re.sub(r'\W+', '_', case.label))
    converted = [False]
    with s.check('%s: imgutil convert -O raw is identical (qemu-img compare)' % case.label):
        ref = reference_raw(case)
        if os.path.exists(out):
            os.unlink(out)
        s.imgutil('convert', '-O', 'raw', case.path, out, cwd=case.cwd)
        converted[0] = True
        proc = qemu_img('compare', '-f', 'raw', '-F', case.fmt, out, case.path, cwd=case.cwd,
                        ok_codes=None)
        if proc.returncode != 0:
            raise CheckFailed('qemu-img compare: %s: %s %s' % (
                describe_rc(proc.returncode), clip(proc.stdout), clip(proc.stderr)))
        diff = files_identical(ref, out)
        if diff:
            raise CheckFailed('imgutil convert output vs qemu-img convert output: ' + diff)
    if not converted[0]:
        return
    with s.check('%s: imgutil convert -O raw output is sparse' % case.label):
        ref = reference_raw(case)
        needed = nonzero_block_bytes(ref)
        allocated = os.stat(out).st_blocks * 512
        qemu_allocated = os.stat(ref).st_blocks * 512
        if allocated > needed + SPARSE_SLACK:
            raise CheckFailed(
                'output allocates %d bytes; only %d bytes are in 4 KiB blocks holding non-zero '
                'data (qemu-img convert allocates %d): zero or unallocated ranges were written '
                'as data' % (allocated, needed, qemu_allocated))


def check_image(case):
    """Every comparison for one image. A failing qemu-img step (the reference itself) is
    reported as a failure of the image, and the other comparisons still run."""
    for step in (check_reads, check_map, check_info, check_convert):
        try:
            step(case)
        except CheckFailed as e:
            with case.suite.check('%s: %s (reference from qemu-img)' % (case.label,
                                                                       step.__name__)):
                raise e
