"""The optimizer of a run: SGD with momentum or Adam on the configured learning-rate schedule."""

from __future__ import annotations

import keras

from ssd.config import TrainConfig
from ssd.engine.schedules import SSDLearningRate


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
