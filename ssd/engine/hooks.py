"""The parts of the training loop around the step: checkpoint saving, summaries, validation, the log.

A `Hook` is told when training starts, after every step, after every epoch and when training
ends (also on Ctrl-C or an error); each is built once, by `Trainer`, with what it needs. They run
in the trainer's list order, which matters only at the end of an epoch: validation adds
"val_map" to the epoch summary before the checkpoint is saved and the line is logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ssd.engine.recipe import TrainConfig
from ssd.detections import select_detections
from ssd.engine.checkpointing import BestCheckpoint, Checkpointer
from ssd.engine.state import TrainState
from ssd.evaluation.loop import evaluate_detector, load_batch
from ssd.evaluation.metrics import FAMILY, headline, make_evaluator
from ssd.evaluation.report import percent
from ssd.image_io import resize_rgb
from ssd.modeling.inference import Detector
from ssd.modeling.run_dir import storage_full
from ssd.records import DetectionDataset
from ssd.visualize import draw_detections, side_by_side

log = logging.getLogger("ssd.engine.trainer")  # the epoch lines keep the trainer's logger name

EVAL_BATCH_SIZE = 16
SUMMARY_EVERY = 10  # steps between loss summaries (and step 1)
LOSS_SUMMARIES = ("total_loss", "confidence_loss", "localization_loss", "regularization_loss")
# The terms of the optimised loss (total_loss = their sum) as the epoch line names them.
LOSS_TERMS = (("conf", "confidence_loss"), ("loc", "localization_loss"), ("L2", "regularization_loss"))


class Hook:
    """A part of the loop; every method is optional."""

    def before_train(self) -> None:
        """`fit` starts (after the run directory's config.json is written)."""

    def after_step(self, losses: dict[str, float], images_per_second: float) -> None:
        """A step finished with finite losses (the `TrainStep` dict) at this rate so far in the epoch."""

    def after_epoch(self, summary: dict[str, Any], finished: bool, last: bool) -> None:
        """The epoch's summary (a hook may add entries); finished: its last batch was trained; last: the run is done."""

    def after_train(self) -> None:
        """`fit` ends, normally, interrupted or by an error."""


class CheckpointSaver(Hook):
    """Saves every `checkpoint_every` steps and at the end of each epoch; drops a worker's scratch copies."""

    def __init__(self, checkpointer: Checkpointer, state: TrainState, every: int):
        self.checkpointer, self.state, self.every = checkpointer, state, every

    def after_step(self, losses: dict[str, float], images_per_second: float) -> None:
        if self.state.step % self.every == 0:
            self.checkpointer.save()

    def after_epoch(self, summary: dict[str, Any], finished: bool, last: bool) -> None:
        self.checkpointer.save()

    def after_train(self) -> None:
        self.checkpointer.remove_scratch()


class Summaries(Hook):
    """TensorBoard summaries in run_dir/logs (chief only): losses, learning rate, speed; `scalar`/`images` for others."""

    def __init__(self, state: TrainState, log_dir: Path, is_chief: bool):
        self.state, self.log_dir, self.is_chief = state, log_dir, is_chief
        self._writer: Any = None

    def before_train(self) -> None:
        # Opened here, not on construction: a trainer that never trains writes no event file.
        self._writer = tf.summary.create_file_writer(str(self.log_dir)) if self.is_chief \
            else tf.summary.create_noop_writer()

    def scalar(self, name: str, value: float) -> None:
        with self._writer.as_default():
            tf.summary.scalar(name, value, step=self.state.step)

    def images(self, name: str, images: np.ndarray, max_outputs: int) -> None:
        with self._writer.as_default():
            tf.summary.image(name, images, step=self.state.step, max_outputs=max_outputs)

    def after_step(self, losses: dict[str, float], images_per_second: float) -> None:
        step = self.state.step
        if step % SUMMARY_EVERY and step != 1:
            return
        for name in LOSS_SUMMARIES:
            self.scalar(f"loss/{name}", losses[name])
        self.scalar("learning_rate", self.state.learning_rate)
        self.scalar("images_per_second", images_per_second)

    def after_train(self) -> None:
        if self._writer is not None:
            self._writer.flush()


def evaluate(detector: Detector, dataset: DetectionDataset, config: TrainConfig) -> dict[str, Any]:
    """Evaluation of `detector` on `dataset` by `config.eval_metric`: `VOCEvaluator.evaluate`'s dict,
    or `COCOEvaluator.evaluate`'s for "coco"."""
    evaluator = make_evaluator([config.eval_metric], dataset.class_names, config.eval_confidences,
                               dataset.category_ids or detector.config.category_ids)
    results = evaluate_detector(detector.detect, dataset, detector.config.image_size, EVAL_BATCH_SIZE, evaluator,
                                progress=False)
    return results[FAMILY[config.eval_metric]]


class Validation(Hook):
    """Every `eval_every` epochs and at the end: validation mAP, its summaries, the best checkpoint.

    The number is `config.eval_metric`'s (VOC07 / VOC10 mAP, COCO AP@[.5:.95]) at the lowest
    confidence level. Every worker evaluates (identical weights give identical numbers), so all
    take the same save decisions; only the chief's summaries and files are real.
    """

    def __init__(self, detector: Detector, dataset: DetectionDataset, config: TrainConfig,
                 best: BestCheckpoint, summaries: Summaries):
        self.detector, self.dataset, self.config = detector, dataset, config
        self.best, self.summaries = best, summaries

    def after_epoch(self, summary: dict[str, Any], finished: bool, last: bool) -> None:
        every = self.config.eval_every
        if every > 0 and ((finished and summary["epoch"] % every == 0) or last):
            summary["val_map"] = self.validate()

    def validate(self) -> float:
        metric = self.config.eval_metric
        results = evaluate(self.detector, self.dataset, self.config)
        value = headline({FAMILY[metric]: results}, metric)
        if FAMILY[metric] == "coco":
            for name, number in results["stats"][0].items():
                if name != "AP_at_iou":
                    self.summaries.scalar(f"eval/coco_{name}", number or 0.0)
        else:
            self.summaries.scalar("eval/mAP_voc07", results["map_voc07"][0] or 0.0)
            self.summaries.scalar("eval/mAP_voc10", results["map_voc10"][0] or 0.0)
        for name, c in results["classes"].items():
            ap = c["ap"][0] if "ap" in c else c["ap_voc07"][0]  # COCO's, or VOC07's (None: not in mAP)
            if ap is not None:
                self.summaries.scalar(f"eval_ap/{name}", ap)
        if self.summaries.is_chief:
            self.summaries.images("eval/detections", drawn_examples(self.detector, self.dataset), max_outputs=4)
        self.best.update(value, results)
        return value


class EpochLog(Hook):
    """One line per epoch to the log and (chief) to run_dir/train.log."""

    def __init__(self, path: Path, is_chief: bool):
        self.path, self.is_chief = path, is_chief

    def after_epoch(self, summary: dict[str, Any], finished: bool, last: bool) -> None:
        self.write(epoch_line(summary))

    def write(self, line: str) -> None:
        """`line` to the log and (chief) appended to train.log."""
        log.info(line)
        if self.is_chief:
            with storage_full(self.path, len(line) + 1), open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def epoch_line(summary: dict[str, Any]) -> str:
    """The train.log line of an epoch summary."""
    parts = [f"epoch {summary['epoch']}", f"step {summary['step']}", loss_text(summary),
             f"lr {summary['learning_rate']:.2e}", f"{summary['images_per_second']:.1f} img/s",
             f"data wait {100 * summary['data_wait']:.0f}%"]
    if "val_map" in summary:
        parts.append(f"val mAP {percent(summary['val_map'])}")
    if summary.get("skipped_images"):
        parts.append(f"skipped {summary['skipped_images']} undecodable images")
    return "  ".join(parts)


def loss_text(summary: dict[str, Any]) -> str:
    """The optimised loss and every term of it, means over the epoch: "loss 1.2346 = conf 1.0000 +
    loc 0.2000 + L2 0.0346". The total shown is the sum of the terms as shown (each rounded to 4
    decimals), so the line adds up; it is within 2e-4 of the mean of total_loss."""
    terms = [(label, round(summary.get(key, float("nan")), 4)) for label, key in LOSS_TERMS]
    return f"loss {sum(value for _, value in terms):.4f} = " + " + ".join(f"{n} {v:.4f}" for n, v in terms)


def drawn_examples(detector: Detector, dataset: DetectionDataset, count: int = 4) -> np.ndarray:
    """uint8 [count, S, 2 S, 3]: the first validation images, each at its own aspect ratio, the ground
    truth (left) beside the detections scoring 0.3 or more (right)."""
    size = detector.config.image_size
    samples, images, _ = load_batch(list(dataset.samples[:count]), None)
    out = detector.detect(np.stack([resize_rgb(image, size, size) for image in images]))
    drawn = []
    for b, (sample, image) in enumerate(zip(samples, images)):
        height, width = image.shape[:2]
        found = select_detections(out, b, width, height, threshold=0.3)
        truth = draw_detections(image, sample.boxes, sample.labels, None, dataset.class_names)
        detected = draw_detections(image, found.boxes_xyxy, found.class_ids, found.scores, dataset.class_names)
        drawn.append(side_by_side([("ground truth", truth), ("detections >= 0.3", detected)], size))
    return np.stack(drawn)
