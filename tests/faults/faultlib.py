# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared machinery of the fault tests: running a command under the fault-injecting I/O
engine (IMGUTIL_IO=fault, see lib/io/io.h), counting the requests a command makes, and the
verdicts every faulted run must get.

A scenario is a small class: prepare(dir) makes the files the command works on (with the normal
engine), command(dir) is the argv run under the fault, and verify(dir, rc) returns the
problems with what the command left behind (an empty list when all is well).
"""

import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
TIMEOUT = 60
CLASSES = ('read', 'write', 'flush', 'fallocate', 'truncate')
# short on a flush or truncate is the same as ENOSPC: not run twice.
KINDS = {'read': ('EIO', 'short'), 'write': ('EIO', 'ENOSPC', 'short'),
         'flush': ('EIO', 'ENOSPC'), 'fallocate': ('EIO', 'ENOSPC', 'short'),
         'truncate': ('EIO', 'ENOSPC')}
SANITIZER_MARKS = ('AddressSanitizer', 'LeakSanitizer', 'UndefinedBehaviorSanitizer',
                   'runtime error:')


def clip(text, limit=1500):
    return text if len(text) <= limit else text[:limit] + '...[clipped]'


def base_env():
    env = dict(os.environ)
    for name in ('IMGUTIL_IO', 'IMGUTIL_FAULT', 'IMGUTIL_FAULT_REPORT'):
        env.pop(name, None)
    return env


def run(argv, env=None, ok=(0,)):
    """Runs a helper command that must succeed (preparing files, qemu-img)."""
    proc = subprocess.run(argv, env=env or base_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT)
    if ok is not None and proc.returncode not in ok:
        raise RuntimeError('%s exited %d: %s %s' % (' '.join(argv), proc.returncode,
                                                   clip(proc.stdout), clip(proc.stderr)))
    return proc


def run_faulted(argv, spec, report=None):
    env = base_env()
    env['IMGUTIL_IO'] = 'fault'
    env['IMGUTIL_FAULT'] = spec
    if report:
        env['IMGUTIL_FAULT_REPORT'] = report
    return subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=TIMEOUT)


def count_requests(argv, workdir):
    """The number of requests of each class `argv` makes (it must succeed doing so)."""
    report = os.path.join(workdir, 'fault-report')
    proc = run_faulted(argv, 'count', report)
    if proc.returncode != 0:
        raise RuntimeError('%s failed without a fault: %s' % (' '.join(argv),
                                                             clip(proc.stderr)))
    counts = {}
    with open(report) as f:
        for line in f:
            name, n = line.split()
            counts[name] = int(n)
    os.unlink(report)
    return counts


def sample(count, limit):
    """1..count, or `limit` values spread evenly over it (first and last included)."""
    if count <= limit:
        return list(range(1, count + 1))
    if limit == 1:
        return [1]
    return sorted({1 + round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def qemu_check(path, fmt):
    """Problems qemu-img check finds (leaks are allowed: exit 3)."""
    proc = run(['qemu-img', 'check', '-f', fmt, path], ok=None)
    if proc.returncode in (0, 3):
        return []
    return ['qemu-img check %s exited %d: %s' % (os.path.basename(path), proc.returncode,
                                                  clip(proc.stdout + proc.stderr, 600))]


def qemu_read_raw(path, fmt, out):
    run(['qemu-img', 'convert', '-f', fmt, '-O', 'raw', path, out])
    with open(out, 'rb') as f:
        return f.read()


def judge(proc):
    """Problems with how the faulted process ended, whatever it left behind."""
    problems = []
    if proc.returncode < 0:
        problems.append('killed by signal %d' % -proc.returncode)
    if any(mark in proc.stderr for mark in SANITIZER_MARKS):
        problems.append('sanitizer report: %s' % clip(proc.stderr))
    if proc.returncode != 0 and not proc.stderr.strip():
        problems.append('exit %d without a message on stderr' % proc.returncode)
    return problems


class Tally:
    def __init__(self):
        self.runs = 0
        self.failed_cleanly = 0
        self.succeeded = 0
        self.xfail = 0
        self.failures = []

    def summary(self):
        return ('%d faulted runs: %d failed cleanly, %d succeeded, %d expected failures, '
                '%d problems' % (self.runs, self.failed_cleanly, self.succeeded, self.xfail,
                                 len(self.failures)))


def run_scenarios(scenarios, limit, expected_failures, tally, only=None, entries_of=None):
    """Counts each scenario's requests, then runs it with a fault at sampled N of each class
    and error kind, judging each run. expected_failures(scenario_name, cls, kind, n) returns the
    expected-failure entry (any hashable value naming it) when the case is a known defect
    elsewhere, else None. entries_of(scenario_name) lists every entry of that scenario: one that
    no run of the scenario fails is stale, and an error."""
    # tmpfs when there is one: hundreds of runs, each flushing several times.
    shm = '/dev/shm'
    where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    top = tempfile.mkdtemp(prefix='imgutil-faults.', dir=where)
    keep = False
    try:
        for sc in scenarios:
            if only and sc.name not in only:
                continue
            # Made once with the normal engine, copied before every run.
            pristine = os.path.join(top, sc.name + '.pristine')
            work = os.path.join(top, sc.name)
            os.mkdir(pristine)
            os.mkdir(work)
            sc.prepare(pristine)
            restore(pristine, work)
            counts = count_requests(sc.command(work), work)
            print('%s: requests %s' % (sc.name, ' '.join('%s=%d' % (c, counts.get(c, 0))
                                                          for c in CLASSES)))
            still_failing = set()
            for cls in CLASSES:
                for n in sample(counts.get(cls, 0), limit):
                    for kind in KINDS[cls]:
                        spec = '%s:%d:%s' % (cls, n, kind)
                        restore(pristine, work)
                        proc = run_faulted(sc.command(work), spec)
                        problems = judge(proc)
                        sc.last_stdout = proc.stdout
                        if not problems:
                            problems = sc.verify(work, proc.returncode)
                        tally.runs += 1
                        entry = expected_failures(sc.name, cls, kind, n)
                        if problems and entry is not None:
                            still_failing.add(entry)
                            tally.xfail += 1
                        elif problems:
                            keep = True
                            tally.failures.append('%s with IMGUTIL_FAULT=%s (exit %d): %s\n'
                                                  '  stderr: %s' % (
                                                      sc.name, spec, proc.returncode,
                                                      '; '.join(problems),
                                                      clip(proc.stderr.strip(), 400)))
                        elif proc.returncode == 0:
                            tally.succeeded += 1
                        else:
                            tally.failed_cleanly += 1
            for entry in entries_of(sc.name) if entries_of else ():
                if entry not in still_failing:
                    keep = True
                    tally.failures.append(stale_entry(sc.name, entry))
    finally:
        if keep:
            print('kept %s for inspection' % top, file=sys.stderr)
        else:
            shutil.rmtree(top, ignore_errors=True)


def stale_entry(scenario, entry):
    """The failure reported for an expected-failure entry that no run of its scenario failed."""
    return ('%s: expected failure %r: unexpected pass: remove the entry (no run of the '
            'scenario failed)' % (scenario, entry))


def restore(pristine, work):
    """Makes `work` hold exactly the files of `pristine`."""
    for name in os.listdir(work):
        path = os.path.join(work, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for name in os.listdir(pristine):
        shutil.copy2(os.path.join(pristine, name), os.path.join(work, name))


class Scenario:
    name = ''

    def prepare(self, work):
        pass

    def command(self, work):
        raise NotImplementedError

    def verify(self, work, rc):
        return []


def unflushed_problems(script, stdout, rc, data, reference):
    """For a write_driver script that ran with exit status `rc` and printed `stdout` (each
    operation as it starts it): the writes that a completed flush covered must read back in
    `data` as in `reference` (the content after the whole script), except where a later
    operation of the script overwrote them."""
    done = len(stdout.splitlines()) - (1 if rc != 0 else 0)
    flushed = 0
    for i, line in enumerate(script[:max(done, 0)]):
        if line == 'flush':
            flushed = i

    def ranges(lines):
        for line in lines:
            words = line.split()
            if words[0] in ('write', 'zero'):
                yield line, int(words[1]), int(words[1]) + int(words[2])

    later = list(ranges(script[flushed:]))
    problems = []
    for line, off, end in ranges(script[:flushed]):
        if data[off:end] == reference[off:end]:
            continue
        if any(o < end and off < e for _, o, e in later):
            continue
        problems.append('flushed "%s" does not read back' % line)
    return problems


def tools_present():
    return shutil.which('qemu-img') is not None and shutil.which('qemu-io') is not None
