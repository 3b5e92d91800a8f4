"""The loop's hooks on their own: when validation runs, what the epoch log says, when checkpoints are
saved, which steps get summaries. (tests/test_trainer.py runs them all inside a real fit.)"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from ssd.engine.recipe import TrainConfig
from ssd.engine.checkpointing import BestCheckpoint, Checkpointer
from ssd.engine.distribute import WorkerShard
from ssd.engine.hooks import CheckpointSaver, EpochLog, Summaries, Validation, drawn_examples, epoch_line
from ssd.records import DetectionDataset, Sample
from ssd.visualize import class_colour
from test_checkpointing import tiny_state

SUMMARY = {"epoch": 3, "step": 30, "total_loss": 1.23456, "confidence_loss": 1.0, "localization_loss": 0.2,
           "regularization_loss": 0.03456, "learning_rate": 0.001, "images_per_second": 12.34, "data_wait": 0.256}
LOSSES = {"total_loss": 1.0, "confidence_loss": 0.5, "localization_loss": 0.25, "regularization_loss": 0.25}


class CountingValidation(Validation):
    """The schedule of `Validation` with the evaluation replaced by a counter."""

    def __init__(self, every: int):
        super().__init__(None, None, TrainConfig(eval_every=every), None, None)
        self.calls = 0

    def validate(self) -> float:
        self.calls += 1
        return 0.5


@pytest.mark.parametrize("every, finished, last, runs", [
    (1, True, False, True), (3, True, False, True), (2, True, False, False),  # epoch 3
    (2, False, True, True),  # the run ends mid-epoch: evaluated anyway
    (3, False, False, False),  # an epoch that did not finish, before the end
    (0, True, True, False),  # never
])
def test_validation_runs_every_n_finished_epochs_and_at_the_end(every, finished, last, runs):
    hook = CountingValidation(every)
    summary = dict(SUMMARY)
    hook.after_epoch(summary, finished=finished, last=last)
    assert hook.calls == int(runs)
    assert ("val_map" in summary) == runs


def test_epoch_line_and_train_log_on_the_chief_only(tmp_path):
    expected = ("epoch 3  step 30  loss 1.2346 = conf 1.0000 + loc 0.2000 + L2 0.0346  lr 1.00e-03  12.3 img/s  "
                "data wait 26%  val mAP 50.00%")
    assert epoch_line({**SUMMARY, "val_map": 0.5}) == expected
    EpochLog(tmp_path / "chief.log", is_chief=True).after_epoch({**SUMMARY, "val_map": 0.5}, True, False)
    EpochLog(tmp_path / "other.log", is_chief=False).after_epoch(SUMMARY, True, False)
    assert (tmp_path / "chief.log").read_text() == expected + "\n"
    assert not (tmp_path / "other.log").exists()


@given(st.lists(st.floats(0, 50, allow_nan=False), min_size=3, max_size=3))
def test_the_printed_loss_is_the_sum_of_its_printed_terms(terms):
    conf, loc, l2 = terms
    summary = {**SUMMARY, "confidence_loss": conf, "localization_loss": loc, "regularization_loss": l2,
               "total_loss": conf + loc + l2}
    printed = re.search(r"loss (\S+) = conf (\S+) \+ loc (\S+) \+ L2 (\S+)  ", epoch_line(summary)).groups()
    total, *parts = (round(float(p) * 10_000) for p in printed)  # in units of the last printed digit
    assert total == sum(parts)
    assert abs(float(printed[0]) - summary["total_loss"]) <= 2e-4


class FixedDetector:
    """A detector that finds one box of class 2 on the right half of every image (normalised yxyx)."""

    config = SimpleNamespace(image_size=32)

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(images)
        assert images.shape[1:] == (32, 32, 3)  # fed at the network's input size
        return {"num_detections": np.ones(batch), "detection_boxes": np.tile([[[0.25, 0.5, 0.75, 1.0]]], (batch, 1, 1)),
                "detection_scores": np.full((batch, 1), 0.9), "detection_classes": np.full((batch, 1), 2.0)}


def test_validation_images_keep_their_aspect_ratio_and_show_the_ground_truth(tmp_path):
    image = np.full((20, 40, 3), 200, np.uint8)  # twice as wide as high
    cv2.imwrite(str(tmp_path / "a.png"), image)
    sample = Sample("a", str(tmp_path / "a.png"), 40, 20, np.array([[2, 2, 14, 14]], np.float32), np.array([1]),
                    np.array([False]))
    drawn = drawn_examples(FixedDetector(), DetectionDataset(("one", "two"), (sample,)))
    assert drawn.shape == (1, 32, 64, 3) and drawn.dtype == np.uint8
    truth, detected = drawn[0, :, :32], drawn[0, :, 32:]
    for panel in (truth, detected):  # 40 x 20 fits 32 x 16: grey bars of 8 rows above and below
        assert np.all(panel[-8:] == 128) and np.all(panel[9:23, 4:28] != 128)

    def shows(panel, class_id):
        return bool(np.any(np.all(panel == class_colour(class_id), axis=-1)))

    assert shows(truth, 1) and not shows(truth, 2)
    assert shows(detected, 2) and not shows(detected, 1)


def test_checkpoints_every_n_steps_and_at_each_epoch_end(tmp_path):
    state = tiny_state()
    saver = CheckpointSaver(Checkpointer(state, tmp_path, WorkerShard(0, 1, True)), state, every=2)
    for step in range(1, 6):
        state.optimizer.iterations.assign(step)
        saver.after_step(LOSSES, 1.0)
    saver.after_epoch(dict(SUMMARY), finished=True, last=True)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index"))
    assert names == ["ckpt-2.index", "ckpt-4.index", "ckpt-5.index"]


def test_loss_summaries_at_step_one_and_every_tenth(tmp_path):
    state = tiny_state()
    summaries = Summaries(state, tmp_path / "logs", is_chief=True)
    assert not (tmp_path / "logs").exists()  # nothing written before training starts
    summaries.before_train()
    for step in range(1, 22):
        state.optimizer.iterations.assign(step)
        summaries.after_step(LOSSES, 5.0)
    summaries.after_train()
    steps = {}
    for path in (tmp_path / "logs").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert set(steps) == {"loss/total_loss", "loss/confidence_loss", "loss/localization_loss",
                          "loss/regularization_loss", "learning_rate", "images_per_second"}
    assert all(s == [1, 10, 20] for s in steps.values())


def test_validation_of_a_real_detector_writes_summaries_and_the_best(tmp_path):
    from ssd_datasets.synthetic import generate_synthetic_voc, load_synthetic
    from ssd.config import ModelConfig
    from ssd.modeling.inference import Detector
    from ssd.modeling.model import build_model_from_config

    generate_synthetic_voc(tmp_path / "data", num_train=1, num_test=3, image_size_range=(64, 96))
    dataset = load_synthetic(tmp_path / "data", "test")
    state = tiny_state()
    state.optimizer.iterations.assign(7)
    model_config = ModelConfig("vgg300", dataset.class_names, width=0.125)
    detector = Detector(build_model_from_config(model_config), model_config)
    checkpointer = Checkpointer(state, tmp_path / "run", WorkerShard(0, 1, True))
    summaries = Summaries(state, tmp_path / "run" / "logs", is_chief=True)
    best = BestCheckpoint(checkpointer, tmp_path / "run", is_chief=True)
    hook = Validation(detector, dataset, TrainConfig(eval_every=1), best, summaries)
    summaries.before_train()
    summary = dict(SUMMARY)
    hook.after_epoch(summary, finished=True, last=False)
    summaries.after_train()
    assert 0.0 <= summary["val_map"] <= 1.0 and best.value == summary["val_map"]
    record = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert record["step"] == 7 and record["map_voc07"] == summary["val_map"]
    assert record["metrics"]["map_voc07"][0] == pytest.approx(summary["val_map"])
    tags = {v.tag: e.step for p in (tmp_path / "run" / "logs").iterdir()
            for e in tf.compat.v1.train.summary_iterator(str(p)) for v in e.summary.value}
    assert {"eval/mAP_voc07", "eval/mAP_voc10", "eval/detections"} <= set(tags)
    assert all(step == 7 for step in tags.values())
