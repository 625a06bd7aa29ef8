# SPDX-License-Identifier: LGPL-2.1-or-later
"""Running the programs the Python tests drive (qemu-img, qemu-io, the library's helpers): a
command that fails, hangs or cannot start becomes an exception carrying its output."""

import os
import signal
import subprocess


def describe_rc(rc):
    """An exit code as words: 'exit 1', or the signal that killed the process."""
    if rc < 0:
        try:
            return 'killed by %s' % signal.Signals(-rc).name
        except ValueError:
            return 'killed by signal %d' % -rc
    return 'exit %d' % rc


def clip(text, limit):
    """Output cut to `limit` characters, for a failure message."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    text = (text or '').strip()
    return text if len(text) <= limit else text[:limit] + ' [...]'


def run(args, error, timeout, clip_limit, cwd=None, ok_codes=(0,), binary=False, input=None):
    """Runs a command; raises `error` (an exception class) with its output when the exit code
    is not in ok_codes (None accepts any), when it runs past `timeout` seconds or cannot
    start. Output is text unless `binary`."""
    args = [str(a) for a in args]
    try:
        proc = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, text=not binary, input=input)
    except subprocess.TimeoutExpired:
        raise error('did not finish within %d s: %s' % (timeout, ' '.join(args)))
    except OSError as e:
        raise error('cannot run %s: %s' % (args[0], e))
    if ok_codes is not None and proc.returncode not in ok_codes:
        raise error('%s: %s (cwd %s)\n  stdout: %s\n  stderr: %s' % (
            ' '.join(args), describe_rc(proc.returncode), cwd or os.getcwd(),
            clip(proc.stdout, clip_limit), clip(proc.stderr, clip_limit)))
    return proc
