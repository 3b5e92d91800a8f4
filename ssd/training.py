"""The training loop: shared-memory batches -> one tf.function step -> checkpoints and summaries.

The run directory's layout is described in `ssd.run_dir`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from ssd.anchors import default_boxes
from ssd.augment import TrainAugmentation
from ssd.config import ModelConfig, TrainConfig
from ssd.evaluate_loop import evaluate_detector
from ssd.evaluation import VOCEvaluator, detections_to_pixels, json_ready
from ssd.image_io import read_rgb
from ssd.inference import Detector
from ssd.losses import multibox_loss, weight_decay_loss
from ssd.matching import training_targets
from ssd.model import build_model_from_config, kernel_weights
from ssd.pipeline import BatchPipeline
from ssd.records import DetectionDataset
from ssd.run_dir import BEST, CHECKPOINTS, save_run_config
from ssd.schedules import SSDLearningRate
from ssd.visualize import draw_detections

log = logging.getLogger("ssd.training")

EVAL_BATCH_SIZE = 16


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last checkpoint on disk is the last good one."""


@dataclass
class TrainResult:
    step: int
    epoch: int
    interrupted: bool = False
    best_map: float | None = None
    history: list[dict] = field(default_factory=list)


def set_precision(name: str) -> None:
    """Global Keras dtype policy: float32, or mixed bfloat16 / float16 (outputs stay float32)."""
    keras.mixed_precision.set_global_policy({"float32": "float32", "bfloat16": "mixed_bfloat16",
                                             "float16": "mixed_float16"}[name])


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """'auto': multi-worker when TF_CONFIG is set, mirrored over several GPUs, else one device."""
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
    if kind == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"strategy must be auto, default, mirrored or multi_worker, got {kind!r}")


def worker_shard(strategy: tf.distribute.Strategy) -> tuple[int, int, bool]:
    """(this worker's index, number of workers, is chief) under `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1, True
    spec = resolver.cluster_spec()
    task_types = [t for t in ("chief", "worker") if t in spec.jobs]
    ordered = [(t, i) for t in task_types for i in range(spec.num_tasks(t))]
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
        set_precision(train_config.mixed_precision)
        self.anchors = tf.constant(default_boxes(model_config.default_boxes))
        self._steps_per_epoch: int | None = None

    # -- setup

    def build(self, steps_per_epoch: int, constant_rate: bool = False) -> None:
        """Model, optimizer and checkpoint, restored from the run directory when it has one."""
        self._steps_per_epoch = steps_per_epoch
        with self.strategy.scope():
            self.model = build_model_from_config(self.model_config)
            self.optimizer = make_optimizer(self.config, steps_per_epoch, constant_rate)
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.kernels = kernel_weights(self.model)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              epoch=self.epoch, batch_in_epoch=self.batch_in_epoch)
        directory = self.run_dir / CHECKPOINTS
        if not self.is_chief:  # every worker saves (collectives), only the chief's copy is kept
            directory = self.run_dir / f".worker-{self.worker_index}"
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=3)
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.run_dir / BEST if self.is_chief else directory / "best"), max_to_keep=1)
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
            log.info("resumed from %s (step %d, epoch %d)", self.manager.latest_checkpoint,
                     self.step, int(self.epoch.numpy()))
        elif self.config.vgg16_weights:
            from ssd.vgg16_weights import load_vgg16_weights
            load_vgg16_weights(self.model, self.config.vgg16_weights)
            log.info("initialised the VGG-16 base from %s", self.config.vgg16_weights)
        elif not self.config.from_scratch:
            raise ValueError(
                "no VGG-16 weights given: pass --vgg16-weights PATH to the Keras ImageNet file "
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5, or --from-scratch to train without them")
        self._step_fn = self._make_step()

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate)

    def set_learning_rate(self, rate: float) -> None:
        """Only for an optimizer built with constant_rate=True (the learning-rate range test)."""
        self.optimizer.learning_rate = rate

    def train_step(self, batch) -> dict[str, float]:
        """One optimisation step on a pipeline `Batch`; the losses as Python floats."""
        return {k: float(v) for k, v in self._step_fn(*self._distribute(batch)).items()}

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
                # Gradients are summed over replicas: each carries its share of the decay.
                losses["regularization_loss"] = weight_decay_loss(self.kernels, config.weight_decay) / replicas
                total = losses["loss"] + losses["regularization_loss"]
                scaled = self.optimizer.scale_loss(total)
            variables = self.model.trainable_variables
            grads = tape.gradient(scaled, variables)
            self.optimizer.apply_gradients(zip(grads, variables))
            losses["total_loss"] = total
            losses["positives"] = local_pos
            return losses

        @tf.function(jit_compile=config.xla)
        def step(images, boxes, labels, counts):
            per_replica = strategy.run(replica_step, args=(images, boxes, labels, counts))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        return step

    def _distribute(self, batch) -> tuple:
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
        """Train until the configured number of steps; resumable, interruptible with Ctrl-C."""
        config = self.config
        samples = train_set.samples[self.worker_index::self.num_workers]
        local_batch = config.batch_size // self.num_workers
        steps_per_epoch = len(samples) // local_batch
        if steps_per_epoch == 0:
            raise ValueError(f"the training split has {len(samples)} images for this worker, fewer "
                             f"than one batch of {local_batch}")
        if self._steps_per_epoch is None:
            self.build(steps_per_epoch)
        total = config.total_steps(steps_per_epoch)
        if self.is_chief:
            save_run_config(self.run_dir, self.model_config, config)
        writer = tf.summary.create_file_writer(str(self.run_dir / "logs")) if self.is_chief else tf.summary.create_noop_writer()
        result = TrainResult(step=self.step, epoch=int(self.epoch.numpy()), best_map=self._best_map())
        if self.step >= total:
            log.info("run already complete: step %d of %d", self.step, total)
            return result
        transform = TrainAugmentation(self.model_config.image_size, expand_probability=config.expand_probability)
        pipeline = BatchPipeline(samples, transform, local_batch, self.model_config.image_size,
                                 max_boxes=config.max_boxes, num_workers=config.workers,
                                 shuffle=True, seed=config.seed + 1000 * self.worker_index,
                                 drop_remainder=True)
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not (progress and self.is_chief),
                   dynamic_ncols=True)
        try:
            with pipeline, writer.as_default():
                while self.step < total:
                    epoch = int(self.epoch.numpy())
                    stats = self._train_epoch(pipeline, epoch, total, bar)
                    summary = {"epoch": epoch + 1, "step": self.step, **stats}
                    if val_set is not None and config.eval_every > 0 and \
                            ((epoch + 1) % config.eval_every == 0 or self.step >= total):
                        summary.update(self._evaluate(val_set))
                    self.epoch.assign(epoch + 1)
                    self.batch_in_epoch.assign(0)
                    self._save()
                    self._log_epoch(summary)
                    result.history.append(summary)
        except KeyboardInterrupt:
            self._save()
            bar.close()
            log.warning("interrupted at step %d; checkpoint saved to %s; run the same command to resume",
                        self.step, self.manager.latest_checkpoint)
            result.interrupted = True
        finally:
            bar.close()
            writer.flush()
        result.step, result.epoch, result.best_map = self.step, int(self.epoch.numpy()), self._best_map()
        return result

    def _train_epoch(self, pipeline: BatchPipeline, epoch: int, total: int, bar: tqdm) -> dict:
        skip = int(self.batch_in_epoch.numpy())  # resuming inside an epoch
        sums: dict[str, float] = {}
        count, images_seen, started = 0, 0, time.perf_counter()
        for batch in pipeline.epoch(epoch):
            if batch.index < skip:
                continue
            if self.step >= total:
                break
            losses = self.train_step(batch)
            if not math.isfinite(losses["total_loss"]):
                raise NonFiniteLossError(
                    f"the loss became {losses['total_loss']} at step {self.step} (epoch {epoch + 1}, "
                    f"batch {batch.index}); the last good checkpoint is {self.manager.latest_checkpoint} "
                    "and was left intact. Lower the learning rate, add --warmup-steps, or check the data.")
            self.batch_in_epoch.assign(batch.index + 1)
            count += 1
            images_seen += len(batch.images) * self.num_workers
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            rate = images_seen / (time.perf_counter() - started)
            self._write_step_summaries(losses, rate)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total_loss']:.3f}", lr=f"{self.learning_rate:.2e}",
                            img_s=f"{rate:.1f}", refresh=False)
            if self.step % self.config.checkpoint_every == 0:
                self._save()
        stats = {k: v / max(count, 1) for k, v in sums.items() if k != "positives"}
        stats["images_per_second"] = images_seen / max(time.perf_counter() - started, 1e-9)
        stats["learning_rate"] = self.learning_rate
        return stats

    def _write_step_summaries(self, losses: dict, rate: float) -> None:
        step = self.step
        if step % 10 and step != 1:
            return
        for name in ("total_loss", "confidence_loss", "localization_loss", "regularization_loss"):
            tf.summary.scalar(f"loss/{name}", losses[name], step=step)
        tf.summary.scalar("learning_rate", self.learning_rate, step=step)
        tf.summary.scalar("images_per_second", rate, step=step)

    def _evaluate(self, val_set: DetectionDataset) -> dict:
        """Validation mAP (VOC07 11-point at the lowest confidence level), summaries, best checkpoint."""
        detector = Detector(self.model, self.model_config)
        evaluator = VOCEvaluator(val_set.class_names, confidence_levels=self.config.eval_confidences)
        results = evaluate_detector(detector, val_set, self.model_config.image_size,
                                    EVAL_BATCH_SIZE, evaluator, progress=False)
        value = results["map_voc07"][0] or 0.0
        tf.summary.scalar("eval/mAP_voc07", value, step=self.step)
        tf.summary.scalar("eval/mAP_voc10", results["map_voc10"][0] or 0.0, step=self.step)
        for name, c in results["classes"].items():
            if c["in_map"]:
                tf.summary.scalar(f"eval_ap/{name}", c["ap_voc07"][0], step=self.step)
        tf.summary.image("eval/detections", _drawn_examples(detector, val_set), step=self.step, max_outputs=4)
        best = self._best_map()
        if self.is_chief and (best is None or value > best):
            self.best_manager.save(checkpoint_number=self.step)
            (self.run_dir / BEST / "best.json").write_text(
                json.dumps({"step": self.step, "map_voc07": value, "metrics": json_ready(results)}, indent=2) + "\n")
        return {"val_map": value}

    def _best_map(self) -> float | None:
        path = self.run_dir / BEST / "best.json"
        return json.loads(path.read_text())["map_voc07"] if path.is_file() else None

    def _save(self) -> None:
        self.manager.save(checkpoint_number=self.step)

    def _log_epoch(self, summary: dict) -> None:
        parts = [f"epoch {summary['epoch']}", f"step {summary['step']}",
                 f"loss {summary.get('total_loss', float('nan')):.4f}",
                 f"(conf {summary.get('confidence_loss', float('nan')):.4f}, "
                 f"loc {summary.get('localization_loss', float('nan')):.4f})",
                 f"lr {summary['learning_rate']:.2e}", f"{summary['images_per_second']:.1f} img/s"]
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
    images = np.stack([cv2.resize(read_rgb(s.image_path), (size, size)) for s in dataset.samples[:count]])
    out = detector.detect(images)
    drawn = []
    for b, image in enumerate(images):
        keep = out["detection_scores"][b] >= 0.3
        boxes = detections_to_pixels(out["detection_boxes"][b][keep], size, size)
        drawn.append(draw_detections(image, boxes, out["detection_classes"][b][keep].astype(int),
                                     out["detection_scores"][b][keep], dataset.class_names))
    return np.stack(drawn)
