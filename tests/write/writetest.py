# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared machinery of the write tests: running the tools, the qemu-img verdicts every image
written here must get (check clean, compare equal to the expected content), and the tally.

A test script builds a Suite from its argv (the write_driver first, then any other helper
programs), runs named checks and ends with suite.finish(). Failures are collected, so one run
reports every mismatch; the temporary folder is kept when something failed.
"""

import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pylib'))
import command  # noqa: E402
from command import describe_rc  # noqa: E402

SKIP = 77
COMMAND_TIMEOUT = 240
# Characters of a command's output a failure message shows.
CLIP_LIMIT = 4000


class CheckFailed(Exception):
    pass


def clip(text, limit=CLIP_LIMIT):
    return command.clip(text, limit)


def run(args, cwd=None, ok_codes=(0,), timeout=COMMAND_TIMEOUT, input=None):
    """Runs a command; raises CheckFailed with its output when the exit code is not in
    ok_codes (None accepts any)."""
    return command.run(args, CheckFailed, timeout, CLIP_LIMIT, cwd=cwd, ok_codes=ok_codes,
                       input=input)


def qemu_img(*args, cwd=None, ok_codes=(0,)):
    return run(['qemu-img'] + list(args), cwd=cwd, ok_codes=ok_codes)


def qemu_io(path, commands, fmt='qcow2', cwd=None):
    """Runs qemu-io commands on an image; discards really deallocate (-d unmap)."""
    args = ['qemu-io', '-d', 'unmap', '-f', fmt]
    for c in commands:
        args += ['-c', c]
    proc = run(args + [path], cwd=cwd)
    if 'failed' in proc.stdout or 'failed' in proc.stderr:
        raise CheckFailed('qemu-io %s on %s: %s %s' % (commands, path, clip(proc.stdout),
                                                       clip(proc.stderr)))
    return proc


def qemu_info(path, cwd=None):
    return parse_json(qemu_img('info', '--output=json', path, cwd=cwd).stdout, 'qemu-img info')


def parse_json(text, what):
    try:
        return json.loads(text)
    except ValueError as e:
        raise CheckFailed('%s printed invalid JSON (%s): %s' % (what, e, clip(text)))


def check_report_problems(report, who):
    """The complaints in a `check --output=json` report: errors, corruptions, leaks."""
    problems = []
    for field in ('check-errors', 'corruptions', 'leaks'):
        value = report.get(field, 0)
        if value:
            problems.append('%s reports %s=%r' % (who, field, value))
    return problems


def assert_qemu_check(path, fmt='qcow2', cwd=None, allow_leaks=False):
    """qemu-img check must exit 0 (or 3, leaks only, when allowed) and its JSON report must
    agree. Returns the report."""
    proc = qemu_img('check', '--output=json', '-f', fmt, path, cwd=cwd, ok_codes=None)
    allowed = (0, 3) if allow_leaks else (0,)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    if proc.returncode not in allowed or report is None:
        raise CheckFailed('qemu-img check %s: %s (%s)\n  %s\n  %s' % (
            path, describe_rc(proc.returncode),
            {2: 'corruptions', 3: 'leaks', 1: 'check not completed', 63: 'no checks'}.get(
                proc.returncode, '?'), clip(proc.stdout), clip(proc.stderr)))
    problems = check_report_problems(report, 'qemu-img check')
    if allow_leaks:
        problems = [p for p in problems if 'leaks=' not in p]
    if problems:
        raise CheckFailed('%s: %s\n  %s' % (path, '; '.join(problems), clip(proc.stdout)))
    return report


def assert_same_content(raw, image, fmt='qcow2', cwd=None):
    """qemu-img compare -f raw -F fmt raw image must say they are identical, and the virtual
    size must be the expected content's size (compare alone accepts a zero tail)."""
    info = qemu_info(image, cwd=cwd)
    raw_size = os.path.getsize(os.path.join(cwd or '', raw))
    if info.get('virtual-size') != raw_size:
        raise CheckFailed('%s: qemu-img info says virtual-size %r, the expected content has %d '
                          'bytes' % (image, info.get('virtual-size'), raw_size))
    proc = qemu_img('compare', '-f', 'raw', '-F', fmt, raw, image, cwd=cwd, ok_codes=None)
    if proc.returncode != 0:
        raise CheckFailed('qemu-img compare %s %s: %s: %s %s' % (
            raw, image, describe_rc(proc.returncode), clip(proc.stdout), clip(proc.stderr)))


def random_content(rng, size, zero_runs=True):
    """`size` random bytes, with runs of zeros (whole and partial clusters) when asked."""
    data = bytearray(rng.randbytes(size))
    if zero_runs and size:
        for _ in range(rng.randint(1, 12)):
            start = rng.randrange(size)
            length = rng.choice((1, 511, 4096, 65536, 100000, 1 << 20))
            data[start:start + length] = bytes(min(length, size - start))
    return bytes(data)


def write_file(path, data):
    with open(path, 'wb') as f:
        f.write(data)
    return path


def fit(data, size):
    """`data` cut or zero-padded to `size` bytes: a backing file seen through a larger or
    smaller overlay."""
    return data[:size] + bytes(max(0, size - len(data)))


class Suite:
    """Collects named checks of one test program and prints the closing tally."""

    def __init__(self, name, argv, helpers=()):
        missing = [t for t in ('qemu-img', 'qemu-io') if shutil.which(t) is None]
        if missing:
            print('SKIP: %s not installed' % ', '.join(missing))
            sys.exit(SKIP)
        if len(argv) < 2 + len(helpers):
            print('usage: %s WRITE_DRIVER %s' % (argv[0], ' '.join(h.upper() for h in helpers)))
            sys.exit(2)
        self.name = name
        self.driver = os.path.abspath(argv[1])
        self.helpers = {h: os.path.abspath(p) for h, p in zip(helpers, argv[2:])}
        build_root = os.environ.get('IMGUTIL_BUILD_ROOT') or os.path.join(
            os.path.dirname(self.driver), '..', '..')
        self.cli = os.environ.get('IMGUTIL_CLI') or os.path.join(build_root, 'tools', 'imgutil')
        self.passed = 0
        self.failures = []
        self.last_ok = True  # whether the latest check passed: later steps may need its files
        self.tmp = tempfile.mkdtemp(prefix='imgutil-write-%s-' % name)
        self.started = time.monotonic()

    @contextlib.contextmanager
    def check(self, label):
        started = time.monotonic()
        try:
            yield
        except (CheckFailed, AssertionError, OSError) as e:
            message = str(e) or e.__class__.__name__
            self.failures.append(label)
            self.last_ok = False
            print('FAIL %s\n     %s' % (label, message.replace('\n', '\n     ')), flush=True)
        else:
            self.passed += 1
            self.last_ok = True
            print('ok   %s (%.1f s)' % (label, time.monotonic() - started), flush=True)

    def finish(self):
        elapsed = time.monotonic() - self.started
        if self.failures:
            print('\n%d failing checks:' % len(self.failures))
            for label in self.failures:
                print('  - %s' % label)
            print('(files kept in %s)' % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print('%s: %.1f s' % (self.name, elapsed))
        print('%d passed, %d failed' % (self.passed, len(self.failures)))
        sys.exit(1 if self.failures else 0)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def api(self, *args, ok_codes=(0,), input=None):
        return run([self.driver] + list(args), cwd=self.tmp, ok_codes=ok_codes, input=input)

    def imgutil(self, *args, ok_codes=(0,)):
        if not os.path.exists(self.cli):
            raise CheckFailed('the imgutil CLI was not built (%s)' % self.cli)
        return run([self.cli] + list(args), cwd=self.tmp, ok_codes=ok_codes)

    def run_script(self, image, ops, fmt=None, cluster=65536, extra=()):
        """Applies the operations (a list of ops.h lines) through write_driver run; raises
        CheckFailed with the driver's explanation when it fails."""
        args = ['run', image, '--script', '-', '--cluster', cluster] + list(extra)
        if fmt:
            args += ['-f', fmt]
        proc = self.api(*args, ok_codes=None, input='\n'.join(ops) + '\n')
        if proc.returncode != 0:
            raise CheckFailed('write_driver %s: %s\n  %s\n  operations:\n    %s' % (
                ' '.join(str(a) for a in args), describe_rc(proc.returncode), clip(proc.stderr),
                '\n    '.join(ops)))
        return proc

    def seed(self, default):
        """The run's master seed: WRITE_TEST_SEED (a number, or "random"), else `default`."""
        text = os.environ.get('WRITE_TEST_SEED', '')
        if text == 'random':
            value = random.SystemRandom().randrange(1 << 32)
        elif text:
            value = int(text, 0)
        else:
            value = default
        print('seed %d (repeat with WRITE_TEST_SEED=%d)' % (value, value), flush=True)
        return value


def env_int(name, default):
    text = os.environ.get(name, '')
    return int(text, 0) if text else default
