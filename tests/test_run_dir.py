"""ssd/modeling/run_dir.py: whole-or-nothing writes, damaged files named, a full disk said plainly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ssd.config import ModelConfig

from ssd.engine.recipe import TrainConfig
from ssd.engine.run_config import load_run_config
from ssd.modeling.run_dir import (
    BEST,
    CHECKPOINTS,
    CheckpointScan,
    StorageFullError,
    checkpoint_path,
    read_json,
    remove_unfinished_writes,
    save_run_config,
    scan_checkpoints,
    set_aside,
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


# ---------------------------------------------------------------- damaged checkpoints


def save_checkpoints(directory: Path, steps: list[int]) -> tf.Variable:
    """TensorFlow checkpoints ckpt-<step> of one 64 KB variable (holding the step) in `directory`."""
    variable = tf.Variable(np.zeros(16384, np.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(directory), max_to_keep=None)
    for step in steps:
        variable.assign(np.full(16384, step, np.float32))
        manager.save(checkpoint_number=step)
    return variable


def data_file(prefix: Path) -> Path:
    return Path(f"{prefix}.data-00000-of-00001")


def truncate_to_half(path: Path) -> None:
    """What `truncate -s` does to an interrupted copy: the file is cut short."""
    os.truncate(path, path.stat().st_size // 2)


def test_scan_falls_back_to_the_newest_intact_checkpoint_naming_each_damaged_file(tmp_path):
    directory = tmp_path / CHECKPOINTS
    save_checkpoints(directory, [1, 2, 3, 4])
    truncate_to_half(data_file(directory / "ckpt-4"))
    (directory / "ckpt-3.index").write_bytes(b"\x00" * 10)  # an index cut to nothing useful
    # the `checkpoint` file names ckpt-5, whose files are gone
    state = (directory / "checkpoint").read_text().replace('"ckpt-4"', '"ckpt-5"')
    (directory / "checkpoint").write_text(state)
    scan = scan_checkpoints(directory)
    assert scan.intact == str(directory / "ckpt-2")
    damaged = dict(scan.damaged)
    assert list(damaged) == [str(directory / f"ckpt-{n}") for n in (5, 4, 3)]  # newest first
    assert "ckpt-5.index is missing" in damaged[str(directory / "ckpt-5")]
    assert "ckpt-4.data-00000-of-00001 is missing, truncated or altered" in damaged[str(directory / "ckpt-4")]
    assert "ckpt-3.index is unreadable" in damaged[str(directory / "ckpt-3")]


def test_a_changed_byte_in_the_data_is_found_by_its_checksum(tmp_path):
    save_checkpoints(tmp_path, [1, 2])
    with open(data_file(tmp_path / "ckpt-2"), "r+b") as f:
        f.seek(1000)
        f.write(b"\x01\x02\x03")
    scan = scan_checkpoints(tmp_path)
    assert scan.intact == str(tmp_path / "ckpt-1")
    assert "Checksum" in scan.damaged[0][1] or "checksum" in scan.damaged[0][1]


def test_scan_of_an_intact_missing_or_empty_directory(tmp_path):
    save_checkpoints(tmp_path / "a", [3, 10])  # 10 is newer than 3 although "ckpt-10" < "ckpt-3" as text
    assert scan_checkpoints(tmp_path / "a") == CheckpointScan(tmp_path / "a", str(tmp_path / "a" / "ckpt-10"), ())
    assert scan_checkpoints(tmp_path / "none").intact is None and not scan_checkpoints(tmp_path / "none").damaged
    (tmp_path / "empty").mkdir()
    assert scan_checkpoints(tmp_path / "empty").intact is None


def test_an_unreadable_checkpoint_list_is_named_and_the_files_on_disk_are_used(tmp_path):
    save_checkpoints(tmp_path, [1, 2])
    (tmp_path / "checkpoint").write_text("model_checkpoint_path: \"ckpt-2\"\ngarb")
    scan = scan_checkpoints(tmp_path)
    assert scan.intact == str(tmp_path / "ckpt-2")
    assert scan.damaged[0][0] == str(tmp_path / "checkpoint")


def test_set_aside_moves_the_damaged_files_and_lists_only_the_rest(tmp_path):
    variable = save_checkpoints(tmp_path, [1, 2, 3])
    truncate_to_half(data_file(tmp_path / "ckpt-3"))
    moved_to = set_aside(scan_checkpoints(tmp_path))
    assert moved_to == tmp_path / "damaged"
    assert sorted(p.name for p in moved_to.iterdir()) == ["ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-2")
    assert scan_checkpoints(tmp_path) == CheckpointScan(tmp_path, str(tmp_path / "ckpt-2"), ())
    # a manager opened now continues cleanly: it saves, keeps and deletes only intact checkpoints
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(tmp_path), max_to_keep=2)
    manager.save(checkpoint_number=3)
    assert manager.checkpoints == [str(tmp_path / "ckpt-2"), str(tmp_path / "ckpt-3")]
    assert scan_checkpoints(tmp_path).intact == str(tmp_path / "ckpt-3")


def test_checkpoint_path_falls_back_and_says_so(tmp_path, caplog):
    save_checkpoints(tmp_path / CHECKPOINTS, [1, 2])
    save_checkpoints(tmp_path / BEST, [2])
    truncate_to_half(data_file(tmp_path / CHECKPOINTS / "ckpt-2"))
    truncate_to_half(data_file(tmp_path / BEST / "ckpt-2"))
    with caplog.at_level(logging.WARNING):
        assert checkpoint_path(tmp_path, "latest") == str(tmp_path / CHECKPOINTS / "ckpt-1")
    assert f"damaged checkpoint {tmp_path / CHECKPOINTS / 'ckpt-2'}" in caplog.text
    assert f"using {tmp_path / CHECKPOINTS / 'ckpt-1'}, the newest intact checkpoint" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # best/ is damaged: the newest intact of checkpoints/
        assert checkpoint_path(tmp_path, "best") == str(tmp_path / CHECKPOINTS / "ckpt-1")
    assert f"damaged checkpoint {tmp_path / BEST / 'ckpt-2'}" in caplog.text
    assert (tmp_path / CHECKPOINTS / "ckpt-2.index").is_file()  # nothing moved: a trainer may be running


def test_checkpoint_path_with_every_checkpoint_damaged_is_refused(tmp_path):
    save_checkpoints(tmp_path / CHECKPOINTS, [1])
    truncate_to_half(data_file(tmp_path / CHECKPOINTS / "ckpt-1"))
    with pytest.raises(FileNotFoundError, match="no intact checkpoint.*every one is damaged"):
        checkpoint_path(tmp_path, "latest")


def test_changed_options_lists_each_difference_in_field_order():
    from ssd.engine.run_config import changed_options

    saved = TrainConfig(learning_rate=1e-3, epochs=None, seed=0)
    now = TrainConfig(learning_rate=1e-2, epochs=9, seed=0)
    assert changed_options(saved, now) == [("epochs", None, 9), ("learning_rate", 1e-3, 1e-2)]
    assert changed_options(saved, saved) == []
