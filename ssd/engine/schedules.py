"""Learning-rate schedules: a pure function of the optimizer step, so a resumed run continues them."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from ssd.engine.recipe import SCHEDULES


@keras.saving.register_keras_serializable(package="ssd")
class SSDLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then one of `SCHEDULES`.

    - step: multiply by `decay` at each of `boundaries` (the paper: x0.1 at 80k and 100k).
    - exponential: multiply by `decay` once per epoch (`steps_per_epoch`).
    - polynomial: (1 - t)^power from the base rate towards `min_rate` over `total_steps`.
    - cosine: half a cosine from the base rate to `min_rate` over `total_steps`.
    - cyclic: triangular between `min_rate` and the base rate, period `cycle_steps`.
    """

    def __init__(
        self,
        kind: str,
        base_rate: float,
        total_steps: int,
        steps_per_epoch: int = 1,
        boundaries: tuple[int, ...] = (),
        decay: float = 0.1,
        power: float = 0.9,
        min_rate: float = 0.0,
        cycle_steps: int = 2000,
        warmup_steps: int = 0,
    ):
        if kind not in SCHEDULES:
            raise ValueError(f"learning-rate schedule must be one of {SCHEDULES}, got {kind!r}")
        if base_rate <= 0 or total_steps <= 0 or steps_per_epoch <= 0 or cycle_steps <= 0:
            raise ValueError(
                "learning-rate schedule needs base_rate, total_steps, steps_per_epoch and cycle_steps > 0, "
                f"got {base_rate}, {total_steps}, {steps_per_epoch}, {cycle_steps}"
            )
        self.kind, self.base_rate, self.total_steps = kind, float(base_rate), int(total_steps)
        self.steps_per_epoch, self.boundaries = int(steps_per_epoch), tuple(int(b) for b in boundaries)
        self.decay, self.power, self.min_rate = float(decay), float(power), float(min_rate)
        self.cycle_steps, self.warmup_steps = int(cycle_steps), int(warmup_steps)

    def _after_warmup(self, step: tf.Tensor) -> tf.Tensor:
        base, low = self.base_rate, self.min_rate
        progress = tf.minimum(step / float(self.total_steps), 1.0)
        if self.kind == "constant":
            return tf.constant(base)
        if self.kind == "step":
            passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.boundaries or (math.inf,), tf.float32), tf.float32))
            return base * tf.pow(self.decay, passed)
        if self.kind == "exponential":
            return base * tf.pow(self.decay, tf.floor(step / float(self.steps_per_epoch)))
        if self.kind == "polynomial":
            return low + (base - low) * tf.pow(1.0 - progress, self.power)
        if self.kind == "cosine":
            return low + (base - low) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        phase = tf.math.floormod(step, float(self.cycle_steps)) / float(self.cycle_steps)
        return low + (base - low) * (1.0 - tf.abs(2.0 * phase - 1.0))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = self._after_warmup(step)
        if self.warmup_steps > 0:
            ramp = tf.minimum((step + 1.0) / float(self.warmup_steps), 1.0)
            rate = rate * ramp
        return rate

    def get_config(self) -> dict:
        return {
            "kind": self.kind, "base_rate": self.base_rate, "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch, "boundaries": self.boundaries,
            "decay": self.decay, "power": self.power, "min_rate": self.min_rate,
            "cycle_steps": self.cycle_steps, "warmup_steps": self.warmup_steps,
        }
