"""The optimizer a TrainConfig asks for."""

import dataclasses

import keras
import pytest

from ssd.config import TrainConfig
from ssd.engine.optimizer import make_optimizer


def test_optimizer_choice_and_loss_scaling():
    config = TrainConfig(optimizer="sgd", momentum=0.8, mixed_precision="float16", learning_rate=0.01,
                         schedule="step", boundaries=(10,), iterations=20)
    optimizer = make_optimizer(config, steps_per_epoch=5)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(make_optimizer(dataclasses.replace(config, optimizer="adam", mixed_precision="float32"), 5),
                      keras.optimizers.Adam)


def test_schedule_follows_the_step_or_the_rate_is_constant_and_settable():
    config = TrainConfig(learning_rate=0.01, schedule="step", boundaries=(10,), decay=0.5, iterations=20)
    scheduled = make_optimizer(config, steps_per_epoch=5)
    assert float(scheduled.learning_rate) == pytest.approx(0.01)
    scheduled.iterations.assign(10)  # the boundary: x0.5
    assert float(scheduled.learning_rate) == pytest.approx(0.005)
    constant = make_optimizer(config, steps_per_epoch=5, constant_rate=True)
    constant.learning_rate = 0.25
    assert float(constant.learning_rate) == 0.25
