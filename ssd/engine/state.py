"""What a checkpoint holds: the model, the optimizer, and where in the data the run is.

Progress is the optimizer's step (`optimizer.iterations`) plus (epoch, batch_in_epoch) =
batches of `epoch` already trained, all three saved together and all three updated inside the
step's graph, so a run stopped anywhere resumes at the batch after the last saved one and the
learning-rate schedule, a pure function of the step, continues where it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from ssd.config import ModelConfig

from ssd.engine.recipe import TrainConfig
from ssd.engine.distribute import precision_policy
from ssd.engine.optimizer import make_optimizer
from ssd.modeling.model import build_model_from_config


@dataclass(frozen=True)
class TrainState:
    """The variables of a run; `checkpoint()` names them as every checkpoint on disk does."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    epoch: tf.Variable  # int64, the epoch the last trained batch belongs to (0-based)
    batch_in_epoch: tf.Variable  # int64, batches of `epoch` trained
    steps_per_epoch: int

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
        done = int(self.batch_in_epoch.numpy()) >= self.steps_per_epoch
        return int(self.epoch.numpy()) + int(done)

    def next_position(self) -> tuple[int, int]:
        """(epoch, batch index) of the next batch to train."""
        epoch, done = int(self.epoch.numpy()), int(self.batch_in_epoch.numpy())
        return (epoch + 1, 0) if done >= self.steps_per_epoch else (epoch, done)

    @property
    def checkpoint_bytes(self) -> int:
        """About what one checkpoint takes on disk: the bytes of every variable it saves."""
        variables = [*self.model.variables, *self.optimizer.variables]
        return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch,
                                   batch_in_epoch=self.batch_in_epoch)


def build_state(model_config: ModelConfig, config: TrainConfig, strategy: tf.distribute.Strategy,
                steps_per_epoch: int, constant_rate: bool = False) -> TrainState:
    """A freshly initialised model and optimizer under `strategy` (the optimizer's slots built)."""
    with strategy.scope():
        with precision_policy(config.mixed_precision):
            model = build_model_from_config(model_config)
        optimizer = make_optimizer(config, steps_per_epoch, constant_rate)
        optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
    return TrainState(model, optimizer, epoch, batch_in_epoch, steps_per_epoch)
