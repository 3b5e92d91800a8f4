"""The optimizer of a run: SGD with momentum or Adam on the configured learning-rate schedule.

Caffe's recipe, per variable: biases learn at `bias_lr_multiplier` x the rate (lr_mult 2) and are
never decayed (decay_mult 0); kernels, and the conv4_3_norm scales unless switched off, are
decayed (model_libs.py gives the Normalize layer no `param`, so Caffe's defaults, lr_mult 1 and
decay_mult 1, apply to its scale). The multiplier scales the rate, not the gradient, so it means
the same for Adam, whose step does not depend on the gradient's scale.
"""

from __future__ import annotations

import keras

from ssd.engine.recipe import TrainConfig
from ssd.engine.schedules import SSDLearningRate
from ssd.modeling.model import L2Normalization, kernel_weights


class _BiasRate:
    """Mixin for a Keras optimizer: variables named "bias" update at `bias_lr_multiplier` x the rate."""

    def __init__(self, *args, bias_lr_multiplier: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_lr_multiplier = float(bias_lr_multiplier)
        self._bias_indices: frozenset[int] = frozenset()

    def build(self, variables):
        super().build(variables)
        self._bias_indices = frozenset(self._get_variable_index(v) for v in variables if is_bias(v))

    def update_step(self, gradient, variable, learning_rate):
        # Decided while tracing: the index of a variable is a Python int.
        if self._get_variable_index(variable) in self._bias_indices:
            learning_rate = learning_rate * self.bias_lr_multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "bias_lr_multiplier": self.bias_lr_multiplier}


class SGD(_BiasRate, keras.optimizers.SGD):
    """keras.optimizers.SGD with biases at `bias_lr_multiplier` x the rate."""


class Adam(_BiasRate, keras.optimizers.Adam):
    """keras.optimizers.Adam with biases at `bias_lr_multiplier` x the rate."""


def is_bias(variable) -> bool:
    """A layer's bias (Keras names it "bias": Conv2D and Dense)."""
    return variable.path.rsplit("/", 1)[-1] == "bias"


def decayed_weights(model: keras.Model, l2_scales: bool) -> list:
    """The weights L2 weight decay applies to: every conv kernel, and the L2 scales if `l2_scales`."""
    scales = [layer.scale for layer in model.layers if isinstance(layer, L2Normalization)] if l2_scales else []
    return kernel_weights(model) + scales


def make_optimizer(config: TrainConfig, steps_per_epoch: int, constant_rate: bool = False) -> keras.optimizers.Optimizer:
    """SGD with momentum or Adam on the configured schedule (a plain, settable rate if constant_rate)."""
    schedule = config.learning_rate if constant_rate else SSDLearningRate(
        config.schedule, config.learning_rate, config.total_steps(steps_per_epoch),
        steps_per_epoch=steps_per_epoch, boundaries=config.boundaries, decay=config.decay,
        power=config.power, min_rate=config.min_learning_rate, cycle_steps=config.cycle_steps,
        warmup_steps=config.warmup_steps)
    if config.optimizer == "sgd":
        optimizer = SGD(schedule, momentum=config.momentum, bias_lr_multiplier=config.bias_lr_multiplier)
    else:
        optimizer = Adam(schedule, epsilon=config.adam_epsilon, bias_lr_multiplier=config.bias_lr_multiplier)
    if config.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
