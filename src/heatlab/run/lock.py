"""One writer per run folder: an exclusive ``flock`` on a lock file inside the folder.

A stage that writes into a run folder (and ``report``, which reads a consistent set of tables)
holds the folder's lock for its whole run (:meth:`heatlab.run.rundir.RunDir.writing`). A second
process waits, printing once who holds the lock, and goes on when it is released, so two
``evaluate`` runs with different methods both land (each merges the other's methods under the
lock). The kernel releases a ``flock`` when its holder dies, so a killed stage never blocks the
next one; the file records the holder (pid, host, command, start time) for the waiting message, and
a lock still held although its recorded holder is dead on this host (a child that inherited the
descriptor) is broken. The holder removes the file when it is done; a waiter that locked a file
removed meanwhile opens the new one instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from heatlab.errors import HeatlabError
from heatlab.files import _pid_alive

HOST = socket.gethostname() or "localhost"
#: Seconds between two tries while another process holds the lock.
POLL = 0.1

# Locks this process holds: path -> [descriptor, depth]. A stage inside a stage (mixer's two
# runner stages, a stage entry point around run_stage) takes the lock again without blocking on
# itself; process-wide because flock is.
_HELD: dict[Path, list[int]] = {}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def holder(path: str | os.PathLike) -> dict:
    """The record of the lock file ``path`` ({} when missing, empty or being written)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict) -> str:
    if not record:
        return "held by another process"
    return (f"held by pid {record.get('pid', '?')} on {record.get('host', '?')} ({record.get('command', '?')}) "
            f"since {record.get('since', '?')}")


def _stale(record: dict) -> bool:
    """True when the recorded holder ran on this host and is no longer running."""
    pid = record.get("pid")
    return (record.get("host") == HOST and isinstance(pid, int) and not isinstance(pid, bool) and pid > 0
            and pid != os.getpid() and not _pid_alive(pid))


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _acquire(path: Path, command: str, notify: Callable[[str], None]) -> int:
    told = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise HeatlabError(f"Cannot create the lock file '{path}' ({exc.strerror}); make the run folder "
                               "writable or copy the run somewhere writable.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise HeatlabError(f"Cannot lock '{path}' ({exc.strerror}); run on a file system that supports "
                                   "file locks.") from None
            record = holder(path)
            if _stale(record) and _same_file(fd, path):
                path.unlink(missing_ok=True)  # held only by what its dead holder left running
            elif not told:
                notify(f"waiting for {path.parent}: {_describe(record)}")
                told = True
            os.close(fd)
            time.sleep(POLL)
            continue
        if not _same_file(fd, path):  # released and removed (or broken) after we opened it
            os.close(fd)
            continue
        since = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        record = {"pid": os.getpid(), "host": HOST, "command": command, "argv": sys.argv, "since": since}
        text = (json.dumps(record) + "\n").encode("utf-8")
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))  # after the write: ext4 flushes on close a file truncated to 0
        return fd


def _release(path: Path, fd: int) -> None:
    try:
        if _same_file(fd, path):
            path.unlink(missing_ok=True)  # while still locked, so no one can lock this file after us
    finally:
        os.close(fd)


@contextlib.contextmanager
def holding(path: str | os.PathLike, command: str, *, notify: Callable[[str], None] = _stderr) -> Iterator[None]:
    """Hold the exclusive lock file ``path`` for the block, waiting while another process holds it.

    ``command`` names the holder in the waiting message of others (e.g. ``"heatlab evaluate"``);
    ``notify`` gets that one line once (default: stderr). Re-entrant within a process. A missing
    folder is not created (there is nothing to guard; the stage says what is missing).
    """
    path = Path(path)
    key = path.parent.resolve() / path.name if path.parent.is_dir() else None
    if key is None:
        yield
        return
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(path, command, notify)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        _release(path, fd)
