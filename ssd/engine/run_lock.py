"""One trainer per run directory: an exclusive OS lock on run_dir/train.lock that names its holder.

A trainer holds `fcntl.flock(LOCK_EX)` on run_dir/train.lock from before it touches the directory
until it ends, and writes its pid, host, start time and command into the file for the message a
second trainer gets (`RunDirBusyError`, at once: no waiting). The kernel drops the lock when the
holder's process dies, however it dies (kill -9 too), so the lock itself is never stale; a record
left in the file without a lock is a holder that died, and the next trainer takes the run over
and says so. A holder that ends normally empties the file. Evaluation and export never lock: they
read a run that is training. Linux emulates flock with fcntl locks on NFS, so the lock also holds
across machines sharing the directory.

No TensorFlow here: the training CLI takes the lock before it imports TensorFlow, so a refusal
comes in well under a second.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_FILE = "train.lock"


class RunDirBusyError(ValueError):
    """Another process is training this run directory; the message names it."""


class RunLock:
    """This process's hold on a run directory (see `hold_run_dir`)."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self._fd = run_dir, fd

    def release(self) -> None:
        """Empty the record and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _held.pop(self.run_dir.resolve(), None)
        try:
            os.ftruncate(fd, 0)  # before unlocking: an emptied file means "ended normally"
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


_held: dict[Path, RunLock] = {}


def hold_run_dir(run_dir: str | Path) -> RunLock:
    """Take `run_dir` (created if needed) for this process's trainer; the same lock again if it already has it.

    Raises RunDirBusyError naming the holder when another process trains it. Held until
    `release()` or the end of the process.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_dir.resolve() in _held:
        return _held[run_dir.resolve()]
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncated here: the holder's record
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_record(fd)
        os.close(fd)
        gone = holder and holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0)))
        note = " (that process is gone; a child of it still holds the lock: try again in a moment)" if gone else ""
        raise RunDirBusyError(
            f"--run-dir {run_dir} is being trained by {_describe(holder)}{note} (it holds {path}): one trainer "
            "per run directory; wait for it to end or stop it (evaluating or exporting the run works meanwhile)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    previous = _read_record(fd)
    if previous:
        log.warning("took over %s from %s, which ended without releasing it", run_dir, _describe(previous))
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)
    lock = _held[run_dir.resolve()] = RunLock(run_dir, fd)
    atexit.register(lock.release)
    return lock


def release_run_dir(run_dir: str | Path) -> None:
    """Release `run_dir` if this process holds it (no-op otherwise)."""
    lock = _held.get(Path(run_dir).resolve())
    if lock is not None:
        lock.release()


def _read_record(fd: int) -> dict[str, Any] | None:
    """The holder record in the lock file; None if empty, {} if unreadable."""
    text = os.pread(fd, 65536, 0).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict[str, Any] | None) -> str:
    """'pid 1234 on host h, started ...: command' (what is known of a lock holder)."""
    if not record or "pid" not in record:
        return "another process (it has not named itself)"
    text = f"pid {record['pid']} on host {record.get('host', '?')}"
    if record.get("started"):
        text += f", started {record['started']}"
    if record.get("command"):
        text += f": {record['command']}"
    return text


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
