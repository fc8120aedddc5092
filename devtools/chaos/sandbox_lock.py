"""One sandbox at a time on a machine: flock on a shared lock file.

`flock LOCK ./dialog-local sandbox-chaos` (flock(1) keeps the locked descriptor open in the
command it runs) must not deadlock against the command taking the same lock again: a lock
file already open in this process counts as held by the caller.
"""

import contextlib
import fcntl
import os
import sys

LOCK_PATH = "/tmp/dialog-sandbox.lock"


def inherited(path, fd_dir="/proc/self/fd"):
    """True when one of this process's open descriptors is the file at `path`."""
    try:
        wanted = os.stat(path)
    except OSError:
        return False
    for name in os.listdir(fd_dir):
        try:
            found = os.fstat(int(name))
        except (OSError, ValueError):
            continue
        if (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino):
            return True
    return False


@contextlib.contextmanager
def sandbox_lock(path=LOCK_PATH, say=None):
    """Hold the sandbox lock for the block (waiting for another run to finish first)."""
    if inherited(path):
        yield
        return
    with open(path, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            (say or (lambda line: print(line, file=sys.stderr, flush=True)))(
                "waiting for %s: another sandbox runs on this machine" % path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
