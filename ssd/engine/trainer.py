"""The training loop: shared-memory batches -> one tf.function step -> checkpoints and summaries.

The run directory's layout is described in `ssd.modeling.run_dir`. Progress is the optimizer's step
(`optimizer.iterations`) plus (epoch, batch_in_epoch) = batches of `epoch` already trained,
all three in every checkpoint and all three updated inside the step's graph, so a run stopped
anywhere (Ctrl-C, SIGKILL, a NaN) resumes at the batch after the last saved one and the
learning-rate schedule, a pure function of the step, continues where it was.

Distribution (`tf.distribute`): the global batch is split over workers (each reads its shard
of the samples through its own pipeline) and then over each worker's local replicas. Every
replica divides its loss by the global number of positives (an all-reduce), so the summed
gradient is the gradient of the single-device loss on the global batch. Every worker saves
checkpoints at the same points (as the TensorFlow docs ask for multi-worker runs), the
non-chief ones into a temporary directory they delete; only the chief writes summaries, logs
and the run directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ssd.core.anchors import default_boxes
from ssd.data.augment import TrainAugmentation
from ssd.config import ModelConfig, TrainConfig
from ssd.evaluation.loop import evaluate_detector, load_resized_batch
from ssd.evaluation.voc import VOCEvaluator
from ssd.detections import select_detections
from ssd.modeling.inference import Detector
from ssd.core.losses import multibox_loss, weight_decay_loss
from ssd.core.matching import training_targets
from ssd.modeling.model import build_model_from_config, kernel_weights
from ssd.data.pipeline import BatchPipeline
from ssd.records import DetectionDataset
from ssd.modeling.run_dir import BEST, CHECKPOINTS, save_run_config
from ssd.engine.schedules import SSDLearningRate
from ssd.visualize import draw_detections

log = logging.getLogger("ssd.engine.trainer")

EVAL_BATCH_SIZE = 16
KEEP_CHECKPOINTS = 3
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN or Inf; the checkpoints on disk are untouched."""


@dataclass
class TrainResult:
    """Where a `Trainer.fit` call ended: step, completed epochs, best validation mAP, epoch summaries."""

    step: int
    epoch: int
    interrupted: bool = False
    best_map: float | None = None
    history: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras dtype policy `name` (float32, bfloat16, float16) for the layers built inside, then the old one."""
    if name not in POLICIES:
        raise ValueError(f"mixed_precision must be one of {tuple(POLICIES)}, got {name!r}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[name])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """'auto': multi-worker when TF_CONFIG is set, mirrored over several GPUs, else one device.

    'mirrored' without GPUs mirrors over the logical CPU devices (how the tests run it).
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    if kind == "auto":
        if os.environ.get("TF_CONFIG"):
            kind = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def worker_shard(strategy: tf.distribute.Strategy) -> tuple[int, int, bool]:
    """(this worker's index, number of workers, is chief) under `strategy`; chief = index 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1, True
    spec = resolver.cluster_spec()
    ordered = [(t, i) for t in ("chief", "worker") if t in spec.jobs for i in range(spec.num_tasks(t))]
    index = ordered.index((resolver.task_type, resolver.task_id))
    return index, len(ordered), index == 0


def make_optimizer(config: TrainConfig, steps_per_epoch: int, constant_rate: bool = False) -> keras.optimizers.Optimizer:
    """SGD with momentum or Adam on the configured schedule (a plain, settable rate if constant_rate)."""
    schedule = config.learning_rate if constant_rate else SSDLearningRate(
        config.schedule, config.learning_rate, config.total_steps(steps_per_epoch),
        steps_per_epoch=steps_per_epoch, boundaries=config.boundaries, decay=config.decay,
        power=config.power, min_rate=config.min_learning_rate, cycle_steps=config.cycle_steps,
        warmup_steps=config.warmup_steps)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    if config.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class Trainer:
    """Owns the model, optimizer, checkpoints and step function of one run directory."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, run_dir: str | Path,
                 strategy: tf.distribute.Strategy | None = None):
        self.model_config, self.config = model_config, train_config
        self.run_dir = Path(run_dir)
        self.strategy = strategy or make_strategy()
        self.worker_index, self.num_workers, self.is_chief = worker_shard(self.strategy)
        if train_config.batch_size % self.strategy.num_replicas_in_sync:
            raise ValueError(
                f"batch_size {train_config.batch_size} must be divisible by the number of replicas "
                f"({self.strategy.num_replicas_in_sync})")
        self.anchors = tf.constant(default_boxes(model_config.default_boxes))
        self._steps_per_epoch: int | None = None
        self._detector: Detector | None = None
        self._best: float | None = None

    # -- setup

    def steps_per_epoch(self, num_samples: int) -> int:
        """Global batches per epoch, the same on every worker (the last partial batch is dropped)."""
        steps = num_samples // self.config.batch_size
        if steps == 0:
            raise ValueError(f"the training split has {num_samples} images, fewer than one batch of "
                             f"{self.config.batch_size} (--batch-size)")
        return steps

    def build(self, steps_per_epoch: int, constant_rate: bool = False, restore: bool = True) -> None:
        """Model, optimizer and checkpoint; restored from the run directory when it has a checkpoint.

        With restore=False (the learning-rate range test) the run directory is not read.
        """
        self._steps_per_epoch = steps_per_epoch
        with self.strategy.scope():
            with precision_policy(self.config.mixed_precision):
                self.model = build_model_from_config(self.model_config)
            self.optimizer = make_optimizer(self.config, steps_per_epoch, constant_rate)
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.kernels = kernel_weights(self.model)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              epoch=self.epoch, batch_in_epoch=self.batch_in_epoch)
        self._make_managers()
        latest = tf.train.latest_checkpoint(str(self.run_dir / CHECKPOINTS)) if restore else None
        if latest:
            self._restore(latest)
        elif self.config.vgg16_weights:
            from ssd.modeling.vgg16_weights import load_vgg16_weights
            load_vgg16_weights(self.model, self.config.vgg16_weights)
            log.info("initialised the VGG-16 base from %s", self.config.vgg16_weights)
        elif not self.config.from_scratch:
            raise ValueError(
                "no VGG-16 weights given: pass --vgg16-weights PATH to the Keras ImageNet file "
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5, or --from-scratch to train without them")
        self._step_fn = self._make_step()

    def _make_managers(self) -> None:
        """Checkpoint managers: the run directory's on the chief, a temporary directory elsewhere."""
        if self.is_chief:
            directory, best = self.run_dir / CHECKPOINTS, self.run_dir / BEST
        else:
            # Every worker must save (TensorFlow's multi-worker rule); only the chief's copy is kept.
            scratch = tempfile.mkdtemp(prefix=f"ssd-worker{self.worker_index}-")
            weakref.finalize(self, shutil.rmtree, scratch, ignore_errors=True)
            self._scratch = scratch
            directory, best = Path(scratch) / CHECKPOINTS, Path(scratch) / BEST
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=KEEP_CHECKPOINTS)
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, str(best), max_to_keep=1)

    def _restore(self, path: str) -> None:
        """Every worker restores the chief's latest checkpoint (run directories are shared)."""
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except AssertionError as error:
            raise ValueError(
                f"checkpoint {path} does not match this model/optimizer (was the run started with a "
                f"different preset, width, classes or --optimizer?); use a new --run-dir: {error}") from None
        log.info("resumed from %s (step %d, epoch %d, batch %d of it)", path, self.step,
                 int(self.epoch.numpy()) + 1, int(self.batch_in_epoch.numpy()))

    @property
    def step(self) -> int:
        """Optimisation steps done (the optimizer's iteration counter)."""
        return int(self.optimizer.iterations.numpy())

    @property
    def learning_rate(self) -> float:
        """The rate the next step will use."""
        return float(self.optimizer.learning_rate)

    @property
    def completed_epochs(self) -> int:
        done = int(self.batch_in_epoch.numpy()) >= (self._steps_per_epoch or 1)
        return int(self.epoch.numpy()) + int(done)

    def set_learning_rate(self, rate: float) -> None:
        """Only for an optimizer built with constant_rate=True (the learning-rate range test)."""
        self.optimizer.learning_rate = rate

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step on this worker's share of a global batch; the losses as floats.

        `batch` is a pipeline `Batch` (images uint8 [B, S, S, 3], boxes float32 [B, M, 4]
        "rel_xyxy", labels int32 [B, M], counts int32 [B], epoch, index). Returns the global
        batch's losses (summed over replicas = the single-device values), "positives" and
        "nonfinite_gradients" (replicas whose gradients were not finite).
        """
        position = (tf.constant(batch.epoch, tf.int64), tf.constant(batch.index, tf.int64))
        return {k: float(v) for k, v in self._step_fn(*self._distribute(batch), *position).items()}

    def _make_step(self) -> Callable:
        strategy, config = self.strategy, self.config
        variances = self.model_config.default_boxes.variances
        replicas = strategy.num_replicas_in_sync

        def replica_step(images, boxes, labels, counts):
            target_deltas, target_labels = training_targets(boxes, labels, counts, self.anchors, variances)
            ctx = tf.distribute.get_replica_context()
            local_pos = tf.reduce_sum(tf.cast(target_labels > 0, tf.float32))
            global_pos = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_pos)
            with tf.GradientTape() as tape:
                outputs = self.model(images, training=True)
                losses = multibox_loss(outputs["box_deltas"], outputs["class_logits"], target_deltas,
                                       target_labels, normalizer=global_pos)
                # The optimizer sums gradients over replicas: each carries its share of the decay.
                losses["regularization_loss"] = weight_decay_loss(self.kernels, config.weight_decay) / replicas
                total = losses["loss"] + losses["regularization_loss"]
                scaled = self.optimizer.scale_loss(total)
            variables = self.model.trainable_variables
            grads = tape.gradient(scaled, variables)
            finite = tf.math.is_finite(tf.linalg.global_norm(grads))
            self.optimizer.apply_gradients(zip(grads, variables))
            losses["total_loss"] = total
            losses["positives"] = local_pos
            losses["nonfinite_gradients"] = 1.0 - tf.cast(finite, tf.float32)
            return losses

        @tf.function(jit_compile=config.xla)
        def step(images, boxes, labels, counts, epoch, index):
            per_replica = strategy.run(replica_step, args=(images, boxes, labels, counts))
            # Position inside the graph: a checkpoint never holds a step without its batch.
            self.epoch.assign(epoch)
            self.batch_in_epoch.assign(index + 1)
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        return step

    def _distribute(self, batch: Any) -> tuple:
        """Split this worker's batch over its local replicas (NumPy views -> tensors, one copy)."""
        arrays = (batch.images, batch.boxes, batch.labels, batch.counts)
        if self.strategy.num_replicas_in_sync == 1:
            return tuple(tf.constant(a) for a in arrays)
        local = len(self.strategy.extended.worker_devices)
        per = len(batch.images) // local

        def value_fn(ctx: tf.distribute.ValueContext):
            k = ctx.replica_id_in_sync_group % local
            return tuple(tf.constant(a[k * per:(k + 1) * per]) for a in arrays)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    # -- the loop

    def fit(self, train_set: DetectionDataset, val_set: DetectionDataset | None = None,
            progress: bool = True) -> TrainResult:
        """Train until the configured number of steps; resumable, interruptible with Ctrl-C.

        Raises NonFiniteLossError (nothing saved after the last good checkpoint) and
        `ssd.data.pipeline.PipelineError` when a data worker fails.
        """
        config = self.config
        steps_per_epoch = self.steps_per_epoch(len(train_set.samples))
        if self._steps_per_epoch is None:
            self.build(steps_per_epoch)
        total = config.total_steps(steps_per_epoch)
        if self.is_chief:
            save_run_config(self.run_dir, self.model_config, config)
        self._best = self._read_best()
        result = TrainResult(step=self.step, epoch=self.completed_epochs, best_map=self._best)
        if self.step >= total:
            log.info("run already complete: step %d of %d", self.step, total)
            return result
        samples = train_set.samples[self.worker_index::self.num_workers]
        transform = TrainAugmentation(self.model_config.image_size, expand_probability=config.expand_probability)
        pipeline = BatchPipeline(samples, transform, config.batch_size // self.num_workers,
                                 self.model_config.image_size, max_boxes=config.max_boxes,
                                 num_workers=config.workers, shuffle=True,
                                 seed=config.seed + 1000 * self.worker_index, drop_remainder=True)
        writer = tf.summary.create_file_writer(str(self.run_dir / "logs")) if self.is_chief \
            else tf.summary.create_noop_writer()
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not (progress and self.is_chief),
                   dynamic_ncols=True)
        try:
            with pipeline, writer.as_default(), logging_redirect_tqdm():
                while self.step < total:
                    result.history.append(self._run_epoch(pipeline, val_set, steps_per_epoch, total, bar))
        except KeyboardInterrupt:
            self._save()
            log.warning("interrupted at step %d; checkpoint saved to %s; run the same command to resume",
                        self.step, self.manager.latest_checkpoint)
            result.interrupted = True
        finally:
            bar.close()
            writer.flush()
            if not self.is_chief:
                shutil.rmtree(self._scratch, ignore_errors=True)
        result.step, result.epoch, result.best_map = self.step, self.completed_epochs, self._best
        return result

    def _run_epoch(self, pipeline: BatchPipeline, val_set: DetectionDataset | None,
                   steps_per_epoch: int, total: int, bar: tqdm) -> dict:
        """Train the rest of the current epoch (or up to `total`), evaluate if due, save; its summary."""
        epoch, done = int(self.epoch.numpy()), int(self.batch_in_epoch.numpy())
        if done >= steps_per_epoch:
            epoch, done = epoch + 1, 0
        stats = self._train_epoch(pipeline, epoch, done, steps_per_epoch, total, bar)
        finished = int(self.batch_in_epoch.numpy()) >= steps_per_epoch
        summary = {"epoch": epoch + 1, "step": self.step, **stats}
        every = self.config.eval_every
        if val_set is not None and every > 0 and ((finished and (epoch + 1) % every == 0) or self.step >= total):
            summary.update(self._evaluate(val_set))
        self._save()
        self._log_epoch(summary)
        return summary

    def _train_epoch(self, pipeline: BatchPipeline, epoch: int, skip: int, steps_per_epoch: int,
                     total: int, bar: tqdm) -> dict:
        """Batches skip.. of `epoch` until the epoch or the run ends; mean losses, images/s, data wait."""
        sums: dict[str, float] = {}
        count, images_seen, waited = 0, 0, 0.0
        started = time.perf_counter()
        batches = pipeline.epoch(epoch, start=skip)  # resuming inside an epoch: the rest of it
        while self.step < total:
            asked = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - asked
            if batch is None or batch.index >= steps_per_epoch:
                break
            losses = self.train_step(batch)
            self._check_finite(losses, epoch, batch.index)
            count += 1
            images_seen += self.config.batch_size
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            rate = images_seen / (time.perf_counter() - started)
            self._write_step_summaries(losses, rate)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total_loss']:.3f}", lr=f"{self.learning_rate:.2e}",
                            img_s=f"{rate:.1f}", refresh=False)
            if self.step % self.config.checkpoint_every == 0:
                self._save()
        batches.close()
        elapsed = max(time.perf_counter() - started, 1e-9)
        stats = {k: v / max(count, 1) for k, v in sums.items() if k not in ("positives", "nonfinite_gradients")}
        stats.update(images_per_second=images_seen / elapsed, data_wait=waited / elapsed,
                     learning_rate=self.learning_rate)
        return stats

    def _check_finite(self, losses: dict[str, float], epoch: int, index: int) -> None:
        """Stop before anything is saved when the loss, or (outside float16 loss scaling) a gradient, is not finite."""
        bad_grads = losses["nonfinite_gradients"] > 0 and self.config.mixed_precision != "float16"
        if math.isfinite(losses["total_loss"]) and not bad_grads:
            return
        what = f"the loss became {losses['total_loss']}" if not math.isfinite(losses["total_loss"]) \
            else f"the gradients became non-finite (loss {losses['total_loss']:.4g})"
        last = self.manager.latest_checkpoint
        last = f"the last good checkpoint is {last}, left intact" if last else \
            "no checkpoint was saved yet (a restart begins from scratch)"
        raise NonFiniteLossError(
            f"{what} at step {self.step} (epoch {epoch + 1}, batch {index}); {last}. Lower the learning "
            "rate (--lr), add --warmup-steps, or check the data.")

    def _write_step_summaries(self, losses: dict, rate: float) -> None:
        step = self.step
        if step % 10 and step != 1:
            return
        for name in ("total_loss", "confidence_loss", "localization_loss", "regularization_loss"):
            tf.summary.scalar(f"loss/{name}", losses[name], step=step)
        tf.summary.scalar("learning_rate", self.learning_rate, step=step)
        tf.summary.scalar("images_per_second", rate, step=step)

    def evaluate(self, val_set: DetectionDataset) -> dict[str, Any]:
        """VOC evaluation of the current weights on `val_set` (see `VOCEvaluator.evaluate`)."""
        if self._detector is None:
            self._detector = Detector(self.model, self.model_config)
        evaluator = VOCEvaluator(val_set.class_names, confidence_levels=self.config.eval_confidences)
        return evaluate_detector(self._detector, val_set, self.model_config.image_size,
                                 EVAL_BATCH_SIZE, evaluator, progress=False)

    def _evaluate(self, val_set: DetectionDataset) -> dict:
        """Validation mAP (VOC07 11-point at the lowest confidence level), summaries, best checkpoint.

        Every worker evaluates (identical weights give identical numbers), so all take the same
        save decisions; only the chief's summaries and files are real.
        """
        results = self.evaluate(val_set)
        value = results["map_voc07"][0] or 0.0
        tf.summary.scalar("eval/mAP_voc07", value, step=self.step)
        tf.summary.scalar("eval/mAP_voc10", results["map_voc10"][0] or 0.0, step=self.step)
        for name, c in results["classes"].items():
            if c["in_map"]:
                tf.summary.scalar(f"eval_ap/{name}", c["ap_voc07"][0], step=self.step)
        if self.is_chief:
            tf.summary.image("eval/detections", _drawn_examples(self._detector, val_set), step=self.step,
                             max_outputs=4)
        if self._best is None or value > self._best:
            self._best = value
            self.best_manager.save(checkpoint_number=self.step)
            if self.is_chief:
                (self.run_dir / BEST / "best.json").write_text(json.dumps(
                    {"step": self.step, "map_voc07": value, "metrics": results}, indent=2) + "\n")
        return {"val_map": value}

    def _read_best(self) -> float | None:
        path = self.run_dir / BEST / "best.json"
        return json.loads(path.read_text())["map_voc07"] if path.is_file() else None

    def _save(self) -> None:
        self.manager.save(checkpoint_number=self.step)

    def _log_epoch(self, summary: dict) -> None:
        parts = [f"epoch {summary['epoch']}", f"step {summary['step']}",
                 f"loss {summary.get('total_loss', float('nan')):.4f}",
                 f"(conf {summary.get('confidence_loss', float('nan')):.4f}, "
                 f"loc {summary.get('localization_loss', float('nan')):.4f})",
                 f"lr {summary['learning_rate']:.2e}", f"{summary['images_per_second']:.1f} img/s",
                 f"data wait {100 * summary['data_wait']:.0f}%"]
        if "val_map" in summary:
            parts.append(f"val mAP {summary['val_map']:.4f}")
        line = "  ".join(parts)
        log.info(line)
        if self.is_chief:
            with open(self.run_dir / "train.log", "a") as f:
                f.write(line + "\n")


def _drawn_examples(detector: Detector, dataset: DetectionDataset, count: int = 4) -> np.ndarray:
    """uint8 [count, S, S, 3]: the first validation images with their detections above 0.3."""
    size = detector.config.image_size
    _, images, _ = load_resized_batch(list(dataset.samples[:count]), (size, size))
    out = detector.detect(images)
    drawn = []
    for b, image in enumerate(images):
        detections = select_detections(out, b, size, size, threshold=0.3)
        drawn.append(draw_detections(image, detections.boxes_xyxy, detections.class_ids, detections.scores,
                                     dataset.class_names))
    return np.stack(drawn)
