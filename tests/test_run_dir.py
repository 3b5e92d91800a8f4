"""ssd/modeling/run_dir.py: whole-or-nothing writes, damaged files named, a full disk said plainly."""

from __future__ import annotations

import contextlib
import json
import resource
import signal

import pytest
import tensorflow as tf

from ssd.config import ModelConfig

from ssd.engine.recipe import TrainConfig
from ssd.engine.run_config import load_run_config
from ssd.modeling.run_dir import (
    BEST,
    CHECKPOINTS,
    StorageFullError,
    read_json,
    remove_unfinished_writes,
    save_run_config,
    storage_full,
    write_atomic,
)


@contextlib.contextmanager
def file_size_limit(limit: int):
    """A full disk without root: this process may not write a file past `limit` bytes (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_write_atomic_replaces_whole_and_a_full_disk_leaves_the_old_file(tmp_path):
    path = tmp_path / "best.json"
    write_atomic(path, '{"map_voc07": 0.5}\n')
    assert json.loads(path.read_text()) == {"map_voc07": 0.5}
    with file_size_limit(1 << 16), pytest.raises(StorageFullError) as info:
        write_atomic(path, json.dumps({"map_voc07": 0.6, "pad": "x" * (1 << 17)}))
    message = str(info.value)
    assert f"cannot write {path}: file too large" in message and "needs about 0.1 MB" in message
    assert "MB free on that disk" in message
    assert json.loads(path.read_text()) == {"map_voc07": 0.5}  # the last good file, intact
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]  # no temporary left behind


def test_write_atomic_writes_bytes_as_they_are(tmp_path):
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    write_atomic(tmp_path / "lr_finder.png", png)
    assert (tmp_path / "lr_finder.png").read_bytes() == png
    assert [p.name for p in tmp_path.iterdir()] == ["lr_finder.png"]


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no" / "such" / "dir.json", "{}")
    with pytest.raises(tf.errors.NotFoundError), storage_full(tmp_path, 10):
        raise tf.errors.NotFoundError(None, None, "no such checkpoint")


def test_tensorflows_disk_full_errors_become_storage_full(tmp_path):
    for error in (tf.errors.ResourceExhaustedError(None, None, "ckpt-3_temp/part-0; No space left on device"),
                  tf.errors.OutOfRangeError(None, None, "ckpt-3_temp/part-0; File too large [Op:SaveV2]")):
        with pytest.raises(StorageFullError, match=r"cannot write \S+checkpoints: .* needs about 2\.0 MB"):
            with storage_full(tmp_path / "checkpoints", 2 << 20):
                raise error


def test_truncated_config_is_refused_naming_it(tmp_path):
    save_run_config(tmp_path, ModelConfig("vgg300", ("cat",), width=0.125), TrainConfig().to_dict())
    text = (tmp_path / "config.json").read_text()
    assert load_run_config(tmp_path)[1] == TrainConfig()
    (tmp_path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"run config {tmp_path / 'config.json'} is damaged \(truncated"):
        load_run_config(tmp_path)
    (tmp_path / "best.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"best\.json is damaged"):
        read_json(tmp_path / "best.json", "best checkpoint record")


def test_unfinished_writes_are_removed_and_nothing_else(tmp_path):
    for sub in (CHECKPOINTS, BEST):
        (tmp_path / sub / "ckpt-7_temp").mkdir(parents=True)
        (tmp_path / sub / "ckpt-7_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
        (tmp_path / sub / "ckpt-6.index").write_bytes(b"kept")
    (tmp_path / "config.json.tmp-123").write_text("{")
    (tmp_path / BEST / "best.json.tmp-9").write_text("{")
    (tmp_path / "config.json").write_text("{}")
    removed = remove_unfinished_writes(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in removed) == [
        "best/best.json.tmp-9", "best/ckpt-7_temp", "checkpoints/ckpt-7_temp", "config.json.tmp-123"]
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["best", "best/ckpt-6.index", "checkpoints", "checkpoints/ckpt-6.index", "config.json"]
