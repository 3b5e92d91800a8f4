"""A run's checkpoints: the latest few, the best by validation mAP, and how a run starts.

Every worker saves checkpoints at the same points (as the TensorFlow docs ask for multi-worker
runs), the non-chief ones into a temporary directory they delete; only the chief's copy, in
the run directory (layout in `ssd.modeling.run_dir`), is kept.

A run resumes from its newest intact checkpoint: damaged ones (`ssd.modeling.run_dir.scan_checkpoints`)
are named, and the chief moves them into checkpoints/damaged/ (best/damaged/) before anything is
saved; a damaged best/ checkpoint makes the run forget its best value, so the next validation
keeps a new one. Every worker takes these decisions from the same scan.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import tensorflow as tf

from ssd.config import ModelConfig

from ssd.engine.recipe import TrainConfig
from ssd.engine.distribute import WorkerShard
from ssd.engine.state import TrainState
from ssd.evaluation.metrics import HEADLINE_NAMES
from ssd.modeling.run_dir import (
    BEST,
    CHECKPOINTS,
    CheckpointScan,
    read_json,
    remove_unfinished_writes,
    scan_checkpoints,
    set_aside,
    storage_full,
    write_atomic,
)

log = logging.getLogger("ssd.engine.checkpointing")

KEEP_CHECKPOINTS = 3
BEST_FILE = "best.json"


class Checkpointer:
    """Saves `state` into run_dir/checkpoints (chief) or a scratch directory (other workers)."""

    def __init__(self, state: TrainState, run_dir: Path, shard: WorkerShard):
        self.state, self.run_dir = state, run_dir
        self.checkpoint = state.checkpoint()
        self.scratch: str | None = None
        root = run_dir
        if shard.is_chief:
            for path in remove_unfinished_writes(run_dir):
                log.warning("removed %s, left by a save that did not finish", path)
        # Read before anything is saved; every worker reads the chief's directory.
        self.resume_scan = scan_checkpoints(run_dir / CHECKPOINTS)
        self.best_scan = scan_checkpoints(run_dir / BEST)
        for scan in (self.resume_scan, self.best_scan):
            self._report_damage(scan, shard.is_chief)
        if not shard.is_chief:
            # Every worker must save (TensorFlow's multi-worker rule); only the chief's copy is kept.
            self.scratch = tempfile.mkdtemp(prefix=f"ssd-worker{shard.index}-")
            weakref.finalize(self, shutil.rmtree, self.scratch, ignore_errors=True)
            root = Path(self.scratch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(root / CHECKPOINTS),
                                                  max_to_keep=KEEP_CHECKPOINTS)
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, str(root / BEST), max_to_keep=1)

    @staticmethod
    def _report_damage(scan: CheckpointScan, is_chief: bool) -> None:
        """Name every damaged checkpoint; the chief sets them aside, unless that would leave a
        checkpoints/ without any (restore_run then refuses, and the files stay where they are)."""
        if not scan.damaged:
            return
        for path, why in scan.damaged:
            log.warning("damaged checkpoint %s: %s", path, why)
        if is_chief and (scan.intact or scan.directory.name == BEST):
            log.warning("moved the damaged files to %s", set_aside(scan))

    @property
    def latest(self) -> str | None:
        """This worker's last saved checkpoint."""
        return self.manager.latest_checkpoint

    def save(self) -> None:
        with storage_full(self.manager.directory, self.state.checkpoint_bytes):
            self.manager.save(checkpoint_number=self.state.step)

    def save_best(self) -> None:
        with storage_full(self.best_manager.directory, self.state.checkpoint_bytes):
            self.best_manager.save(checkpoint_number=self.state.step)

    def restore_run(self) -> bool:
        """Restore the run directory's newest intact checkpoint (every worker reads the chief's); False if none."""
        scan = self.resume_scan
        path = scan.intact
        if not path and scan.damaged:
            raise ValueError(f"every checkpoint in {scan.directory} is damaged ({scan.report()}): restore them, or "
                             "move them away to start the run over")
        if not path:
            return False
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:  # objects missing / variables of other shapes
            raise ValueError(
                f"checkpoint {path} does not match this model/optimizer (was the run started with a "
                f"different preset, width, classes or --optimizer?); use a new --run-dir: {error}") from None
        log.info("resumed from %s%s (step %d, epoch %d, batch %d of it)", path,
                 ", the newest intact checkpoint" if scan.damaged else "", self.state.step,
                 int(self.state.epoch.numpy()) + 1, int(self.state.batch_in_epoch.numpy()))
        return True

    def remove_scratch(self) -> None:
        """Delete a non-chief worker's checkpoints (no-op on the chief)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def initialise(state: TrainState, checkpointer: Checkpointer, config: TrainConfig, restore: bool = True,
               model_config: ModelConfig | None = None) -> None:
    """Resume from the run directory's checkpoint, else copy a trained run's weights (--init-from,
    which needs the run's `model_config`), else load the VGG-16 base, else refuse unless from scratch."""
    if restore and checkpointer.restore_run():
        return
    if config.init_from:
        from ssd.modeling.finetune import init_from_run
        if model_config is None:
            raise ValueError("initialise: init_from needs the run's model_config")
        log.info("%s", init_from_run(state.model, model_config, config.init_from, config.init_classes).summary())
    elif config.vgg16_weights:
        from ssd.modeling.convert.convert import load_base_weights
        load_base_weights(state.model, config.vgg16_weights)
        log.info("initialised the VGG-16 base from %s", config.vgg16_weights)
    elif not config.from_scratch:
        raise ValueError(
            "no VGG-16 weights given: pass --base-weights PATH (the Keras ImageNet file "
            "vgg16_weights_tf_dim_ordering_tf_kernels.h5, Caffe's VGG_ILSVRC_16_layers_fc_reduced.caffemodel "
            "or ssd.pytorch's vgg16_reducedfc.pth), or --from-scratch to train without them")


class BestCheckpoint:
    """The best validation number so far (of `metric`, see TrainConfig.eval_metric), kept as
    run_dir/best/ (checkpoint) and best/best.json under the metric's headline name."""

    def __init__(self, checkpointer: Checkpointer, run_dir: Path, is_chief: bool, metric: str = "voc07"):
        self.checkpointer, self.is_chief = checkpointer, is_chief
        self.path = run_dir / BEST / BEST_FILE
        self.key = HEADLINE_NAMES[metric]
        # A run resumed with another metric has no best of it yet: the next validation sets one.
        self.value: float | None = read_json(self.path, "best checkpoint record").get(self.key) \
            if self.path.is_file() else None
        scan = checkpointer.best_scan  # as the run found best/ when it started
        if self.value is not None and scan.damaged and scan.intact is None:
            log.warning("%s records %s %.4f but best/ holds no intact checkpoint: the next validation keeps a "
                        "new best", self.path, self.key, self.value)
            self.value = None

    def update(self, value: float, metrics: dict[str, Any]) -> bool:
        """Save the state if `value` beats the best so far (every worker, same decision); whether it did."""
        if self.value is not None and value <= self.value:
            return False
        self.value = value
        self.checkpointer.save_best()
        if self.is_chief:
            record = {"step": self.checkpointer.state.step, self.key: value, "metrics": metrics}
            write_atomic(self.path, json.dumps(record, indent=2) + "\n")
        return True
