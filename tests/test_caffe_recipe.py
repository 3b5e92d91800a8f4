"""The Caffe recipe in one real training step: biases at 2x the rate without decay, L2 scales decayed.

A slim vgg300 takes one SGD step (constant rate, momentum's first step is -rate * gradient). The
expected move of every variable is worked out from the gradient of the MultiBox loss alone, taken
here with a separate tape on the same weights and batch:
    kernel     -rate * (g + weight_decay * w)
    L2 scale   -rate * (g + weight_decay * s)     (Caffe's Normalize layer: decay_mult 1)
    bias       -2 * rate * g                      (lr_mult 2, decay_mult 0)
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ssd.config import ModelConfig

from ssd.engine.recipe import TrainConfig
from ssd.core.losses import multibox_loss
from ssd.core.matching import training_targets
from ssd.data.pipeline import Batch
from ssd.engine.state import build_state
from ssd.engine.step import TrainStep

# A decay far above the paper's 5e-4, so that a decay term, where there must be none, stands out.
RATE, DECAY = 0.01, 0.1


def batch() -> Batch:
    rng = np.random.default_rng(0)
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[:, :2] = [[0.1, 0.2, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8]]
    labels = np.zeros((2, 3), np.int32)
    labels[:, :2] = [1, 2]
    return Batch(rng.integers(0, 256, (2, 300, 300, 3), dtype=np.uint8), boxes, labels,
                 np.array([2, 2], np.int32), np.arange(2, dtype=np.int32), 0, 0)


def loss_gradients(state, model_config: ModelConfig, data: Batch) -> dict[str, np.ndarray]:
    """d(MultiBox loss)/d(variable) by variable path, without any weight decay."""
    from ssd.core.anchors import Anchors

    deltas, target_labels = training_targets(tf.constant(data.boxes), tf.constant(data.labels),
                                             tf.constant(data.counts), Anchors.from_config(model_config.default_boxes))
    positives = tf.reduce_sum(tf.cast(target_labels > 0, tf.float32))
    variables = state.model.trainable_variables
    with tf.GradientTape() as tape:
        out = state.model(tf.constant(data.images), training=True)
        loss = multibox_loss(out["box_deltas"], out["class_logits"], deltas, target_labels, normalizer=positives)["loss"]
    return {v.path: g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))}


@pytest.mark.parametrize("multiplier, decay_scales", [(2.0, True), (1.0, False)])
def test_one_sgd_step_moves_biases_at_twice_the_rate_without_decay(multiplier, decay_scales):
    tf.keras.utils.set_random_seed(0)
    model_config = ModelConfig("vgg300", ("a", "b"), width=0.125)
    config = TrainConfig(optimizer="sgd", learning_rate=RATE, momentum=0.9, weight_decay=DECAY,
                         bias_lr_multiplier=multiplier, decay_l2_scales=decay_scales, batch_size=2)
    strategy = tf.distribute.get_strategy()
    state = build_state(model_config, config, strategy, steps_per_epoch=10, constant_rate=True)
    for variable in state.model.trainable_variables:  # non-zero biases, so a decay on them would show
        if variable.path.endswith("/bias"):
            variable.assign(np.random.default_rng(1).normal(0, 0.1, variable.shape).astype(np.float32))
    data = batch()
    grads = loss_gradients(state, model_config, data)
    before = {v.path: v.numpy() for v in state.model.trainable_variables}
    TrainStep(state, model_config, config, strategy)(data)
    kinds = set()
    for variable in state.model.trainable_variables:
        w, g = before[variable.path], grads[variable.path]
        kind = variable.path.rsplit("/", 1)[-1]
        kinds.add(kind)
        if kind == "bias":
            want = -multiplier * RATE * g
        elif kind == "scale":
            want = -RATE * (g + DECAY * w) if decay_scales else -RATE * g
        else:
            want = -RATE * (g + DECAY * w)
        # Tolerance: the reference gradient comes from another graph (1e-3 of the move) and the
        # update is rounded to float32 (a few units in the last place of w).
        error = np.abs(variable.numpy().astype(np.float64) - (w + want))
        assert np.all(error <= 1e-3 * np.abs(want) + 4 * np.spacing(np.abs(w))), variable.path
    assert kinds == {"kernel", "bias", "scale"}
