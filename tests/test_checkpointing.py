"""Checkpoints of a run: save / restore round trip, the best checkpoint and best.json, worker scratch
copies, and how a run starts (resume, VGG-16 weights or refused). A two-weight Keras model stands in for
the detector: the checkpointing does not depend on the network."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd.engine.recipe import TrainConfig
from ssd.engine.checkpointing import BestCheckpoint, Checkpointer, initialise
from ssd.engine.distribute import WorkerShard
from ssd.engine.state import TrainState

CHIEF, OTHER = WorkerShard(0, 2, True), WorkerShard(1, 2, False)


def tiny_state(units: int = 2, steps_per_epoch: int = 4, adam: bool = False) -> TrainState:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units)])
    optimizer = keras.optimizers.Adam(0.1) if adam else keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    return TrainState(model, optimizer, tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64),
                      steps_per_epoch)


def advance(state: TrainState, steps: int, epoch: int, done: int) -> None:
    state.optimizer.iterations.assign(steps)
    state.epoch.assign(epoch)
    state.batch_in_epoch.assign(done)


def test_save_then_restore_in_a_new_state(tmp_path):
    state = tiny_state()
    advance(state, 7, 1, 3)
    Checkpointer(state, tmp_path, CHIEF).save()
    assert (tmp_path / "checkpoints" / "ckpt-7.index").is_file()
    again = tiny_state()
    assert Checkpointer(again, tmp_path, CHIEF).restore_run()
    assert (again.step, int(again.epoch.numpy()), int(again.batch_in_epoch.numpy())) == (7, 1, 3)
    for a, b in zip(again.model.get_weights(), state.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert again.next_position() == (1, 3) and again.completed_epochs == 1
    advance(again, 8, 1, 4)  # the epoch's last batch done: the next one starts epoch 2
    assert again.next_position() == (2, 0) and again.completed_epochs == 2


def test_nothing_to_restore_and_a_mismatched_model_is_refused(tmp_path):
    assert not Checkpointer(tiny_state(), tmp_path, CHIEF).restore_run()
    Checkpointer(tiny_state(units=2), tmp_path, CHIEF).save()
    for other in (tiny_state(units=5), tiny_state(adam=True)):  # other classes; --optimizer adam
        with pytest.raises(ValueError, match="does not match this model.*new --run-dir"):
            Checkpointer(other, tmp_path, CHIEF).restore_run()


def test_other_workers_save_to_a_scratch_directory_they_remove(tmp_path):
    state = tiny_state()
    checkpointer = Checkpointer(state, tmp_path, OTHER)
    checkpointer.save()
    checkpointer.save_best()
    scratch = Path(checkpointer.scratch)
    assert (scratch / "checkpoints" / "ckpt-0.index").is_file() and (scratch / "best").is_dir()
    assert list(tmp_path.iterdir()) == []
    checkpointer.remove_scratch()
    assert not scratch.exists()
    assert Checkpointer(state, tmp_path, CHIEF).scratch is None


def test_best_checkpoint_keeps_the_highest_map_and_is_read_back(tmp_path):
    state = tiny_state()
    checkpointer = Checkpointer(state, tmp_path, CHIEF)
    best = BestCheckpoint(checkpointer, tmp_path, is_chief=True)
    assert best.value is None
    advance(state, 10, 0, 0)
    assert best.update(0.3, {"map_voc07": [0.3]})
    advance(state, 20, 0, 0)
    assert not best.update(0.3, {}) and not best.update(0.2, {})
    advance(state, 30, 0, 0)
    assert best.update(0.5, {"map_voc07": [0.5]})
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record == {"step": 30, "map_voc07": 0.5, "metrics": {"map_voc07": [0.5]}}
    assert tf.train.latest_checkpoint(str(tmp_path / "best")).endswith("ckpt-30")
    assert BestCheckpoint(checkpointer, tmp_path, is_chief=True).value == 0.5


def test_a_run_starts_from_its_checkpoint_else_weights_else_only_from_scratch(tmp_path):
    with pytest.raises(ValueError, match="--base-weights"):
        initialise(tiny_state(), Checkpointer(tiny_state(), tmp_path, CHIEF), TrainConfig())
    initialise(tiny_state(), Checkpointer(tiny_state(), tmp_path, CHIEF), TrainConfig(from_scratch=True))
    saved = tiny_state()
    advance(saved, 5, 0, 2)
    Checkpointer(saved, tmp_path, CHIEF).save()
    state = tiny_state()
    initialise(state, Checkpointer(state, tmp_path, CHIEF), TrainConfig())  # resumes: no weights needed
    assert state.step == 5
    fresh = tiny_state()
    initialise(fresh, Checkpointer(fresh, tmp_path, CHIEF), TrainConfig(from_scratch=True), restore=False)
    assert fresh.step == 0


# ---------------------------------------------------------------- damaged checkpoints


def truncate_data(prefix: Path) -> Path:
    """Cut the checkpoint's data file to half, as an interrupted copy leaves it; its path."""
    data = Path(f"{prefix}.data-00000-of-00001")
    os.truncate(data, data.stat().st_size // 2)
    return data


def save_steps(run_dir: Path, steps: list[int]) -> None:
    state = tiny_state()
    checkpointer = Checkpointer(state, run_dir, CHIEF)
    for step in steps:
        advance(state, step, 0, step)
        checkpointer.save()


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_sets_the_damaged_aside(tmp_path, caplog):
    save_steps(tmp_path, [1, 2, 3])
    data = truncate_data(tmp_path / "checkpoints" / "ckpt-3")
    state = tiny_state()
    with caplog.at_level(logging.INFO):
        checkpointer = Checkpointer(state, tmp_path, CHIEF)
        assert checkpointer.restore_run()
    assert state.step == 2
    assert f"damaged checkpoint {tmp_path / 'checkpoints' / 'ckpt-3'}: {data} is missing, truncated" in caplog.text
    assert f"moved the damaged files to {tmp_path / 'checkpoints' / 'damaged'}" in caplog.text
    assert f"resumed from {tmp_path / 'checkpoints' / 'ckpt-2'}, the newest intact checkpoint" in caplog.text
    assert (tmp_path / "checkpoints" / "damaged" / data.name).is_file()
    advance(state, 3, 0, 3)
    checkpointer.save()  # the run goes on: ckpt-3 again, whole this time
    assert checkpointer.latest == str(tmp_path / "checkpoints" / "ckpt-3")
    again = tiny_state()
    assert Checkpointer(again, tmp_path, CHIEF).restore_run() and again.step == 3


def test_other_workers_name_damage_but_leave_the_files(tmp_path, caplog):
    save_steps(tmp_path, [1, 2])
    truncate_data(tmp_path / "checkpoints" / "ckpt-2")
    state = tiny_state()
    with caplog.at_level(logging.WARNING):
        assert Checkpointer(state, tmp_path, OTHER).restore_run() and state.step == 1
    assert "damaged checkpoint" in caplog.text and "moved" not in caplog.text
    assert (tmp_path / "checkpoints" / "ckpt-2.index").is_file()


def test_every_checkpoint_damaged_is_refused_and_nothing_moved(tmp_path):
    save_steps(tmp_path, [1])
    truncate_data(tmp_path / "checkpoints" / "ckpt-1")
    with pytest.raises(ValueError, match=r"every checkpoint in .*checkpoints is damaged .*ckpt-1.*start the run over"):
        Checkpointer(tiny_state(), tmp_path, CHIEF).restore_run()
    assert (tmp_path / "checkpoints" / "ckpt-1.index").is_file()


def test_a_damaged_best_checkpoint_is_set_aside_and_its_value_forgotten(tmp_path, caplog):
    state = tiny_state()
    checkpointer = Checkpointer(state, tmp_path, CHIEF)
    advance(state, 10, 0, 0)
    BestCheckpoint(checkpointer, tmp_path, is_chief=True).update(0.5, {})
    truncate_data(tmp_path / "best" / "ckpt-10")
    with caplog.at_level(logging.WARNING):
        again = Checkpointer(tiny_state(), tmp_path, CHIEF)
        best = BestCheckpoint(again, tmp_path, is_chief=True)
    assert best.value is None
    assert "records map_voc07 0.5000 but best/ holds no intact checkpoint" in caplog.text
    assert tf.train.latest_checkpoint(str(tmp_path / "best")) is None
    assert best.update(0.1, {})  # any validation now keeps a best again
