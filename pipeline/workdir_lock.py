"""One run per workdir: an exclusive lock on WORKDIR/.imgpipe.lock while a local run works.

Two runs on one workdir (cron starting while the last run is still training, a second
terminal) would share the SQLite MLMD store, the schema file and `serving/`. The second run
is refused at once with one line naming the running one; it does not wait, so overlapping
scheduled runs do not pile up behind each other.

The lock is `flock(2)` on an open file: the kernel drops it when the holding process ends in
any way, SIGKILL included, so a killed run never leaves the workdir locked. The file itself
stays; it holds the holder's pid, start time and command line, for the refusal message only.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from typing import Iterator, Optional

from trainer_module import features

LOCK_FILE = features.LOCK_FILE


def _path(workdir: str) -> str:
    return os.path.join(workdir, LOCK_FILE)


def _describe(workdir: str) -> str:
    try:
        with open(_path(workdir), encoding="utf-8") as f:
            holder = json.load(f)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"]))
        return f"pid {holder['pid']}, started {started}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock for the `with` block.

    Raises:
      RuntimeError: another process holds it (one line naming that process).
    """
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(_path(workdir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another run is using workdir {workdir} ({_describe(workdir)}); "
                               "wait for it to finish, or use another --workdir.") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": time.time(),
                                 "command": " ".join(sys.argv)}).encode("utf-8"))
        yield
    finally:
        os.close(fd)  # releases the lock


def running(workdir: str) -> Optional[str]:
    """A description of the process holding the workdir's lock, or None when no run is."""
    if not os.path.exists(_path(workdir)):
        return None
    fd = os.open(_path(workdir), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(workdir)
    finally:
        os.close(fd)
    return None
