"""ssd/engine/run_lock.py: one trainer per run directory, the holder named, a dead holder's lock taken over.

The other holders are real processes (the lock is the kernel's, per open file), started with a
few lines of Python that take the lock and wait; no TensorFlow is involved.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssd.engine.run_lock import LOCK_FILE, RunDirBusyError, hold_run_dir

HOLDER = """
import sys, time
from ssd.engine.run_lock import hold_run_dir
lock = hold_run_dir(sys.argv[1])
print("held", flush=True)
if sys.argv[2] == "release":
    lock.release()
    print("released", flush=True)
time.sleep(60)
"""


def start_holder(run_dir: Path, then: str = "hold") -> subprocess.Popen:
    """A process that takes `run_dir` (and releases it again if `then` is "release"), then sleeps."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), then], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    if then == "release":
        assert proc.stdout.readline().strip() == "released"
    return proc


@pytest.fixture
def holder(tmp_path):
    proc = start_holder(tmp_path / "run")
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_trainer_is_refused_at_once_naming_the_holder(tmp_path, holder):
    started = time.monotonic()
    with pytest.raises(RunDirBusyError) as refused:
        hold_run_dir(tmp_path / "run")
    assert time.monotonic() - started < 1.0
    message = str(refused.value)
    assert f"--run-dir {tmp_path / 'run'} is being trained by pid {holder.pid} on host " in message
    assert f"it holds {tmp_path / 'run' / LOCK_FILE}" in message and "evaluating or exporting" in message
    assert isinstance(refused.value, ValueError)  # the CLIs' exit status 2


def test_after_kill_9_the_run_is_taken_over_with_a_line_saying_so(tmp_path, holder, caplog):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING):
        lock = hold_run_dir(tmp_path / "run")
    assert f"took over {tmp_path / 'run'} from pid {holder.pid} on host" in caplog.text
    record = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert record["pid"] == os.getpid()
    lock.release()


def test_a_released_run_is_taken_quietly_and_the_record_emptied(tmp_path, caplog):
    proc = start_holder(tmp_path / "run", then="release")
    try:
        assert (tmp_path / "run" / LOCK_FILE).read_text() == ""
        with caplog.at_level(logging.WARNING):
            lock = hold_run_dir(tmp_path / "run")
        assert "took over" not in caplog.text
        lock.release()
        lock.release()  # idempotent
    finally:
        proc.kill()
        proc.wait()


def test_the_same_process_may_take_its_run_again(tmp_path):
    lock = hold_run_dir(tmp_path / "new" / "run")  # created when missing
    assert hold_run_dir(tmp_path / "new" / "run") is lock
    assert json.loads((tmp_path / "new" / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert hold_run_dir(tmp_path / "new" / "run") is not lock  # taken anew after a release
