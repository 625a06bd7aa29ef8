# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared by the bochs, cloop and dmg tests: runs `imgutil` and `qemu-img` on one image and
compares what they answer (info and map JSON, the bytes of convert -O raw), and checks that
hostile images are refused with a message. Exits 77 (skip) when qemu-img is absent."""

import bz2
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
CLI = os.environ.get('IMGUTIL_CLI') or os.path.join(
    os.environ.get('IMGUTIL_BUILD_ROOT', 'build'), 'tools', 'imgutil')


class Failure(Exception):
    pass


def require_qemu():
    if not shutil.which('qemu-img'):
        print('qemu-img is not installed: skipping')
        sys.exit(SKIP)


def run(args, ok_codes=(0,)):
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if proc.returncode not in ok_codes:
        raise Failure('%s exited %d: %s' % (' '.join(args), proc.returncode,
                                            proc.stderr.decode(errors='replace')[:2000]))
    return proc


def qemu_stderr_clean(text):
    """Drops qemu's notes about modules Debian ships in qemu-block-extra."""
    return '\n'.join(line for line in text.splitlines() if 'module block-block-' not in line)


def compare(path, fmt, expected=None, qemu_reads=True):
    """Info and map JSON identical to qemu-img's; convert -O raw identical to qemu-img's
    (when qemu_reads) and to `expected` (when given)."""
    for cmd in (['info', '--output=json'], ['map', '--output=json']):
        ours = run([CLI, cmd[0], '-f', fmt] + cmd[1:] + [path]).stdout
        theirs = run(['qemu-img', cmd[0], '-f', fmt] + cmd[1:] + [path]).stdout
        if ours != theirs:
            raise Failure('%s %s differs from qemu-img:\nours:   %s\nqemu-img: %s' %
                          (cmd[0], path, ours.decode(), theirs.decode()))
    with tempfile.TemporaryDirectory() as tmp:
        ours_raw, qemu_raw = os.path.join(tmp, 'ours.raw'), os.path.join(tmp, 'qemu.raw')
        run([CLI, 'convert', '-f', fmt, '-O', 'raw', path, ours_raw])
        with open(ours_raw, 'rb') as f:
            ours = f.read()
        if qemu_reads:
            run(['qemu-img', 'convert', '-f', fmt, '-O', 'raw', path, qemu_raw])
            with open(qemu_raw, 'rb') as f:
                if f.read() != ours:
                    raise Failure('convert -O raw of %s differs from qemu-img\'s' % path)
        if expected is not None and ours != expected:
            first = next((i for i in range(min(len(ours), len(expected)))
                          if ours[i] != expected[i]), min(len(ours), len(expected)))
            raise Failure('convert -O raw of %s differs from the expected content at byte %d '
                          '(%d vs %d bytes)' % (path, first, len(ours), len(expected)))


def refused(path, fmt, words, command='info'):
    """`imgutil COMMAND` fails with exit 1 (never a signal) and a message holding every word
    of `words`. Returns the message."""
    args = [CLI, command, '-f', fmt, path]
    if command == 'resize':
        args = [CLI, 'resize', '-f', fmt, path, '1M']
    if command == 'convert':
        args = [CLI, 'convert', '-f', fmt, '-O', 'raw', path, path + '.out']
    proc = run(args, ok_codes=(1,))
    message = proc.stderr.decode(errors='replace')
    for word in words:
        if word not in message:
            raise Failure('%s of %s: the message %r does not say %r' %
                          (command, path, message.strip(), word))
    return message


def qemu_refuses(path, fmt, command='info'):
    """qemu-img also fails on it (exit 1)."""
    args = ['qemu-img', command, '-f', fmt, path]
    if command == 'convert':
        args = ['qemu-img', 'convert', '-f', fmt, '-O', 'raw', path, path + '.qemu']
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if proc.returncode != 1:
        raise Failure('qemu-img %s %s exited %d, expected a refusal' %
                      (command, path, proc.returncode))
    return qemu_stderr_clean(proc.stderr.decode(errors='replace'))


def same_refusal(args):
    """`imgutil ARGS` and `qemu-img ARGS` both exit 1 with the same message (program names
    aside)."""
    ours = run([CLI] + args, ok_codes=(1,)).stderr.decode(errors='replace')
    theirs = subprocess.run(['qemu-img'] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=120)
    if theirs.returncode != 1:
        raise Failure('qemu-img %s exited %d' % (' '.join(args), theirs.returncode))
    theirs = qemu_stderr_clean(theirs.stderr.decode(errors='replace')).strip()
    if ours.strip().replace('imgutil:', 'qemu-img:') != theirs:
        raise Failure('%s: %r, qemu-img says %r' % (' '.join(args), ours.strip(), theirs))


def refusals_of_creation(fmt, source, tmp):
    """create, create -o help and convert -O to a read-only format: qemu-img's messages."""
    same_refusal(['create', '-f', fmt, os.path.join(tmp, 'new.' + fmt), '1M'])
    same_refusal(['create', '-f', fmt, '-o', 'help'])
    same_refusal(['convert', '-O', fmt, source, os.path.join(tmp, 'never.' + fmt)])
    if os.path.exists(os.path.join(tmp, 'never.' + fmt)):
        raise Failure('convert -O %s left a target' % fmt)


def samples_dir():
    """../shared/testdata/qemu-samples beside the source tree (or beside its worktree folder)."""
    root = os.environ.get('IMGUTIL_SOURCE_ROOT',
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                       '..'))
    for up in (('..',), ('..', '..')):
        folder = os.path.normpath(os.path.join(root, *up, 'shared', 'testdata', 'qemu-samples'))
        if os.path.isdir(folder):
            return folder
    return None


def check_sample(name, fmt, tmp):
    """A real image from the samples folder: info, map and convert as qemu-img's, and the
    sha256 of convert -O raw that the folder's README gives."""
    folder = samples_dir()
    if not folder or not os.path.exists(os.path.join(folder, name + '.bz2')):
        print('note: the sample %s is absent: case skipped' % name)
        return
    path = os.path.join(tmp, name)
    with bz2.open(os.path.join(folder, name + '.bz2'), 'rb') as src, open(path, 'wb') as dst:
        shutil.copyfileobj(src, dst)
    want = None
    with open(os.path.join(folder, 'README.md'), encoding='utf-8') as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if cells and cells[0] == name:
                want = cells[-1]
    compare(path, fmt)
    out = path + '.raw'
    run([CLI, 'convert', '-O', 'raw', path, out])
    with open(out, 'rb') as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if want and got != want:
        raise Failure('sha256 of %s as raw is %s, the README says %s' % (name, got, want))


def probed_as_qemu_probes(path):
    """`info --output=json` without -f: the same format (and fields) as qemu-img's."""
    ours = run([CLI, 'info', '--output=json', path]).stdout
    theirs = run(['qemu-img', 'info', '--output=json', path]).stdout
    if ours != theirs:
        raise Failure('probed info of %s differs:\nours:     %s\nqemu-img: %s' %
                      (path, ours.decode(), theirs.decode()))


def main(cases, tmp=None):
    """Runs each (name, function) case; prints a line per case; removes `tmp` (the cases'
    scratch folder) unless something failed; exits 1 on any failure."""
    require_qemu()
    failed = 0
    for name, fn in cases:
        try:
            fn()
            print('ok   %s' % name)
        except Failure as e:
            failed += 1
            print('FAIL %s: %s' % (name, e))
    if tmp and not failed:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)
