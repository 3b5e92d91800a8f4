"""The optimizer a TrainConfig asks for."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
import pytest

from ssd.engine.recipe import TrainConfig
from ssd.engine.optimizer import make_optimizer


def test_optimizer_choice_and_loss_scaling():
    config = TrainConfig(optimizer="sgd", momentum=0.8, mixed_precision="float16", learning_rate=0.01,
                         schedule="step", boundaries=(10,), iterations=20)
    optimizer = make_optimizer(config, steps_per_epoch=5)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    inner = optimizer.inner_optimizer
    assert isinstance(inner, keras.optimizers.SGD) and inner.momentum == pytest.approx(0.8)
    assert optimizer.initial_scale > 1  # float16 gradients are scaled up, not left to underflow
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


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_biases_step_at_twice_the_rate_by_hand(name):
    """Gradients of ones, rate 0.1: SGD (momentum 0.9) moves a kernel by -0.1 then -0.19 and a bias by
    -0.2 then -0.38. Adam's first step (Keras: eps added to sqrt(v) before bias correction, v = 0.001
    after one gradient of 1) is -rate * sqrt(0.001) / (sqrt(0.001) + eps) for a kernel, twice that for a bias."""
    config = TrainConfig(optimizer=name, learning_rate=0.1, momentum=0.9, bias_lr_multiplier=2.0, adam_epsilon=0.1)
    layer = keras.layers.Dense(2, name="dense")
    layer.build((None, 3))
    optimizer = make_optimizer(config, steps_per_epoch=5, constant_rate=True)
    optimizer.build(layer.trainable_variables)
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    ones = [tf.ones_like(v) for v in layer.trainable_variables]
    optimizer.apply_gradients(zip(ones, layer.trainable_variables))
    first = 0.1 if name == "sgd" else 0.1 * np.sqrt(1e-3) / (np.sqrt(1e-3) + 0.1)  # 0.024 with eps 0.1
    np.testing.assert_allclose(layer.kernel.numpy() - kernel, np.full((3, 2), -first), rtol=1e-5)
    np.testing.assert_allclose(layer.bias.numpy() - bias, np.full(2, -2 * first), rtol=1e-5)
    if name == "sgd":
        optimizer.apply_gradients(zip(ones, layer.trainable_variables))
        np.testing.assert_allclose(layer.kernel.numpy() - kernel, np.full((3, 2), -0.1 - 0.19), rtol=1e-5)
        np.testing.assert_allclose(layer.bias.numpy() - bias, np.full(2, -0.2 - 0.38), rtol=1e-5)


def test_adam_epsilon_reaches_the_optimizer():
    assert make_optimizer(TrainConfig(optimizer="adam", adam_epsilon=0.1), 5).epsilon == 0.1
