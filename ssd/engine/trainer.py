"""The training loop: shared-memory batches -> one tf.function step -> hooks (checkpoints, summaries, validation, log).

Constructing a `Trainer` builds every part of a run once, in one place, and restores the run
directory's checkpoint: the state (`ssd.engine.state`), the step (`ssd.engine.step`), the
checkpoints (`ssd.engine.checkpointing`) and the hooks (`ssd.engine.hooks`); `fit()` is only
the loop. The run directory's layout is described in `ssd.modeling.run_dir`; distribution in
`ssd.engine.distribute`. A trainer's chief holds its run directory (`ssd.engine.run_lock`) from
construction (or, for a directory that does not exist yet, from `fit`) until
`ssd.engine.run_lock.release_run_dir` or the end of the process, so a second trainer is refused.

Where a change goes: how a run starts (resume, ImageNet weights, another run's weights) in
`checkpointing.initialise`; how checkpoints are written in `Checkpointer`; the optimizer and
per-variable rates in `optimizer` and `step`; another validation metric in `hooks.Validation`;
anything else that runs between steps or epochs as a new `Hook` added in `_build_hooks`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ssd.config import ModelConfig

from ssd.engine.recipe import TrainConfig
from ssd.data.augment import TrainAugmentation
from ssd.data.pipeline import Batch, BatchPipeline
from ssd.engine.checkpointing import BestCheckpoint, Checkpointer, initialise
from ssd.engine.distribute import check_batch_size, make_strategy, worker_shard
from ssd.engine.hooks import CheckpointSaver, EpochLog, Hook, Summaries, Validation, evaluate
from ssd.engine.run_config import changed_options, load_run_config
from ssd.engine.run_lock import hold_run_dir
from ssd.engine.state import build_state
from ssd.engine.step import COUNTS, TrainStep
from ssd.modeling.inference import Detector
from ssd.modeling.run_dir import RUN_CONFIG, StorageFullError, save_run_config
from ssd.records import DetectionDataset

log = logging.getLogger("ssd.engine.trainer")


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


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Global batches per epoch, the same on every worker (the last partial batch is dropped)."""
    steps = num_samples // batch_size
    if steps == 0:
        raise ValueError(f"the training split has {num_samples} images, fewer than one batch of "
                         f"{batch_size} (--batch-size)")
    return steps


class Trainer:
    """One run directory: model, optimizer, checkpoints, step and hooks, all built on construction.

    Args:
        train_set: the training split (its size fixes the epoch length and so the schedule).
        val_set: evaluated every `eval_every` epochs and at the end; None = never.
        strategy: a `tf.distribute` strategy (default: `make_strategy("auto")`).
        range_test: for the learning-rate range test: a constant, settable rate and a fresh
            model (the run directory is not restored from).
    """

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, run_dir: str | Path,
                 train_set: DetectionDataset, val_set: DetectionDataset | None = None,
                 strategy: tf.distribute.Strategy | None = None, range_test: bool = False):
        self.model_config, self.config, self.run_dir = model_config, train_config, Path(run_dir)
        self.train_set, self.range_test = train_set, range_test
        self.strategy = strategy or make_strategy()
        self.shard = worker_shard(self.strategy)
        check_batch_size(train_config.batch_size, self.strategy.num_replicas_in_sync)
        self.steps_per_epoch = steps_per_epoch(len(train_set), train_config.batch_size)
        self.state = build_state(model_config, train_config, self.strategy, self.steps_per_epoch,
                                 constant_rate=range_test)
        if self.run_dir.exists():  # before the checkpointer tidies it; a new one is taken in fit()
            self._hold_run_dir()
        self.checkpointer = Checkpointer(self.state, self.run_dir, self.shard)
        initialise(self.state, self.checkpointer, train_config, restore=not range_test, model_config=model_config)
        self.train_step = TrainStep(self.state, model_config, train_config, self.strategy)
        self.detector = Detector(self.state.model, model_config)
        self.best = BestCheckpoint(self.checkpointer, self.run_dir, self.shard.is_chief, train_config.eval_metric)
        self.hooks = self._build_hooks(val_set)

    def _hold_run_dir(self) -> None:
        """One trainer per run directory: the chief takes it (RunDirBusyError if another process has it)."""
        if self.shard.is_chief:
            hold_run_dir(self.run_dir)

    def _build_hooks(self, val_set: DetectionDataset | None) -> list[Hook]:
        """In order: summaries, validation (adds val_map), checkpoint saving, the epoch log."""
        chief = self.shard.is_chief
        summaries = Summaries(self.state, self.run_dir / "logs", chief)
        hooks: list[Hook] = [summaries]
        if val_set is not None:
            hooks.append(Validation(self.detector, val_set, self.config, self.best, summaries))
        self.epoch_log = EpochLog(self.run_dir / "train.log", chief)
        hooks += [CheckpointSaver(self.checkpointer, self.state, self.config.checkpoint_every), self.epoch_log]
        return hooks

    # -- the state, for callers and tests

    @property
    def model(self) -> keras.Model:
        return self.state.model

    @property
    def step(self) -> int:
        """Optimisation steps done."""
        return self.state.step

    @property
    def learning_rate(self) -> float:
        """The rate the next step will use."""
        return self.state.learning_rate

    @property
    def completed_epochs(self) -> int:
        return self.state.completed_epochs

    def set_learning_rate(self, rate: float) -> None:
        """Only for a range_test trainer (constant rate)."""
        if not self.range_test:
            raise ValueError("set_learning_rate needs a Trainer built with range_test=True (a constant rate)")
        self.state.optimizer.learning_rate = rate

    def train_transform(self) -> TrainAugmentation:
        """The augmentation chain; expanded canvases are filled with the mean the network subtracts
        (so they are zero after its preprocessing)."""
        return TrainAugmentation(self.model_config.image_size, mean_rgb=self.model_config.mean_bgr[::-1],
                                 expand_probability=self.config.expand_probability)

    def train_pipeline(self) -> BatchPipeline:
        """This worker's shard of the training set, augmented, in batches of its share of the global batch."""
        config, size, shard = self.config, self.model_config.image_size, self.shard
        return BatchPipeline(self.train_set.samples[shard.index::shard.count], self.train_transform(),
                             config.batch_size // shard.count, size, max_boxes=config.max_boxes,
                             num_workers=config.workers, shuffle=True, seed=config.seed + 1000 * shard.index,
                             drop_remainder=True, skip_unreadable=not config.strict)

    def evaluate(self, dataset: DetectionDataset) -> dict:
        """VOC evaluation of the current weights on `dataset` (see `VOCEvaluator.evaluate`)."""
        return evaluate(self.detector, dataset, self.config)

    # -- the loop

    def fit(self, progress: bool = True) -> TrainResult:
        """Train until the configured number of steps; resumable, interruptible with Ctrl-C.

        Raises NonFiniteLossError (nothing saved after the last good checkpoint),
        `ssd.data.pipeline.PipelineError` when a data worker fails (or, with `strict`, meets an
        image it cannot decode; otherwise such images are skipped and counted in the epoch
        summary's "skipped_images") and `StorageFullError` when the disk fills.
        """
        total = self.config.total_steps(self.steps_per_epoch)
        self._hold_run_dir()
        if self.shard.is_chief:
            self._record_option_changes()
            save_run_config(self.run_dir, self.model_config, self.config.to_dict())
        result = TrainResult(step=self.step, epoch=self.completed_epochs, best_map=self.best.value)
        if self.step >= total:
            log.info("run already complete: step %d of %d", self.step, total)
            return result
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not (progress and self.shard.is_chief),
                   dynamic_ncols=True)
        try:
            for hook in self.hooks:
                hook.before_train()
            with self.train_pipeline() as pipeline, logging_redirect_tqdm():
                while self.step < total:
                    result.history.append(self._run_epoch(pipeline, total, bar))
        except KeyboardInterrupt:
            self.checkpointer.save()
            log.warning("interrupted at step %d; checkpoint saved to %s; run the same command to resume",
                        self.step, self.checkpointer.latest)
            result.interrupted = True
        except StorageFullError as error:
            last = self.checkpointer.latest
            last = f"the last good checkpoint {last} is intact" if last else "no checkpoint was saved yet"
            raise StorageFullError(error.errno, f"{error.strerror}; {last}: free some space and run the same "
                                   "command to resume") from None
        finally:
            bar.close()
            for hook in self.hooks:
                hook.after_train()
        result.step, result.epoch, result.best_map = self.step, self.completed_epochs, self.best.value
        return result

    def _record_option_changes(self) -> None:
        """Say (and append to train.log) each option that differs from the run's config.json."""
        if not (self.run_dir / RUN_CONFIG).is_file():
            return
        changes = changed_options(load_run_config(self.run_dir)[1], self.config)
        if changes:
            listed = "; ".join(f"{name} {old!r} → {new!r}" for name, old, new in changes)
            self.epoch_log.write(f"step {self.step}: options changed from {self.run_dir / RUN_CONFIG}: {listed}")

    def _run_epoch(self, pipeline: BatchPipeline, total: int, bar: tqdm) -> dict:
        """Train the rest of the current epoch (or up to `total`), then the epoch hooks; its summary."""
        epoch, skip = self.state.next_position()
        skipped = pipeline.skipped
        stats = self._train_epoch(pipeline, epoch, skip, total, bar)
        stats["skipped_images"] = pipeline.skipped - skipped
        finished = int(self.state.batch_in_epoch.numpy()) >= self.steps_per_epoch
        summary = {"epoch": epoch + 1, "step": self.step, **stats}
        for hook in self.hooks:
            hook.after_epoch(summary, finished=finished, last=self.step >= total)
        return summary

    def _train_epoch(self, pipeline: BatchPipeline, epoch: int, skip: int, total: int, bar: tqdm) -> dict:
        """Batches skip.. of `epoch` until the epoch or the run ends; mean losses, images/s, data wait."""
        sums: dict[str, float] = {}
        count, images_seen, waited = 0, 0, 0.0
        started = time.perf_counter()
        batches = pipeline.epoch(epoch, start=skip)  # resuming inside an epoch: the rest of it
        while self.step < total:
            asked = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - asked
            if batch is None or batch.index >= self.steps_per_epoch:
                break
            losses = self.train_step(batch)
            self._check_finite(losses, batch)
            count += 1
            images_seen += self.config.batch_size
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            rate = images_seen / (time.perf_counter() - started)
            # The bar first: a run killed after a save has shown at least the saved step.
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total_loss']:.3f}", lr=f"{self.learning_rate:.2e}",
                            img_s=f"{rate:.1f}", refresh=False)
            for hook in self.hooks:
                hook.after_step(losses, rate)
        batches.close()
        elapsed = max(time.perf_counter() - started, 1e-9)
        stats = {k: v / max(count, 1) for k, v in sums.items() if k not in COUNTS}
        stats.update(images_per_second=images_seen / elapsed, data_wait=waited / elapsed,
                     learning_rate=self.learning_rate)
        return stats

    def _check_finite(self, losses: dict[str, float], batch: Batch) -> None:
        """Stop before anything is saved when the loss, or (outside float16 loss scaling) a gradient, is not finite."""
        bad_grads = losses["nonfinite_gradients"] > 0 and self.config.mixed_precision != "float16"
        if math.isfinite(losses["total_loss"]) and not bad_grads:
            return
        what = f"the loss became {losses['total_loss']}" if not math.isfinite(losses["total_loss"]) \
            else f"the gradients became non-finite (loss {losses['total_loss']:.4g})"
        last = self.checkpointer.latest
        last = f"the last good checkpoint is {last}, left intact" if last else \
            "no checkpoint was saved yet (a restart begins from scratch)"
        raise NonFiniteLossError(
            f"{what} at step {self.step} (epoch {batch.epoch + 1}, batch {batch.index}); {last}. Lower the "
            "learning rate (--lr), add --warmup-steps, or check the data.")
