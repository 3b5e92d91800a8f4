"""A run's checkpoints: the latest few, the best by validation mAP, and how a run starts.

Every worker saves checkpoints at the same points (as the TensorFlow docs ask for multi-worker
runs), the non-chief ones into a temporary directory they delete; only the chief's copy, in
the run directory (layout in `ssd.modeling.run_dir`), is kept.
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
from ssd.modeling.run_dir import BEST, CHECKPOINTS, read_json, remove_unfinished_writes, storage_full, write_atomic

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
        else:
            # Every worker must save (TensorFlow's multi-worker rule); only the chief's copy is kept.
            self.scratch = tempfile.mkdtemp(prefix=f"ssd-worker{shard.index}-")
            weakref.finalize(self, shutil.rmtree, self.scratch, ignore_errors=True)
            root = Path(self.scratch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(root / CHECKPOINTS),
                                                  max_to_keep=KEEP_CHECKPOINTS)
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, str(root / BEST), max_to_keep=1)

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
        """Restore the run directory's latest checkpoint (every worker reads the chief's); False if none."""
        path = tf.train.latest_checkpoint(str(self.run_dir / CHECKPOINTS))
        if not path:
            return False
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:  # objects missing / variables of other shapes
            raise ValueError(
                f"checkpoint {path} does not match this model/optimizer (was the run started with a "
                f"different preset, width, classes or --optimizer?); use a new --run-dir: {error}") from None
        log.info("resumed from %s (step %d, epoch %d, batch %d of it)", path, self.state.step,
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
