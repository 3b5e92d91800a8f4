"""One training step on one device: the losses it reports are those of the weights it started from,
the update moves the weights, and the batch's position is recorded with the step."""

import numpy as np
import pytest
import tensorflow as tf

from ssd.config import ModelConfig
from ssd.core.anchors import Anchors
from ssd.engine.recipe import TrainConfig
from ssd.core.losses import multibox_loss, weight_decay_loss
from ssd.core.matching import training_targets
from ssd.data.pipeline import Batch
from ssd.engine.distribute import make_strategy
from ssd.engine.optimizer import decayed_weights
from ssd.engine.state import build_state
from ssd.engine.step import TrainStep


def test_one_step_reports_the_losses_before_the_update_and_records_the_position():
    model_config = ModelConfig("vgg300", ("a", "b"), width=0.125)
    config = TrainConfig(from_scratch=True, optimizer="sgd", learning_rate=1e-2, schedule="constant",
                         weight_decay=5e-4)
    strategy = make_strategy("default")
    state = build_state(model_config, config, strategy, steps_per_epoch=4)
    step = TrainStep(state, model_config, config, strategy)
    rng = np.random.default_rng(0)
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0, :2] = [[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8]]
    boxes[1, :1] = [[0.2, 0.2, 0.7, 0.9]]
    batch = Batch(images=rng.integers(0, 256, (2, 300, 300, 3), dtype=np.uint8), boxes=boxes,
                  labels=np.array([[1, 2, 0], [2, 0, 0]], np.int32), counts=np.array([2, 1], np.int32),
                  indices=np.array([0, 1], np.int32), epoch=2, index=3)

    # The single-device loss, composed here from the parts, on the weights before the step.
    deltas, labels = training_targets(tf.constant(batch.boxes), tf.constant(batch.labels), tf.constant(batch.counts),
                                      Anchors.from_config(model_config.default_boxes))
    out = state.model(tf.constant(batch.images), training=True)
    expected = multibox_loss(out["box_deltas"], out["class_logits"], deltas, labels)
    decay = float(weight_decay_loss(decayed_weights(state.model, config.decay_l2_scales), config.weight_decay))
    before = [w.copy() for w in state.model.get_weights()]

    losses = step(batch)
    assert losses["loss"] == pytest.approx(float(expected["loss"]), rel=1e-5)
    assert losses["regularization_loss"] == pytest.approx(decay, rel=1e-5)
    assert losses["total_loss"] == pytest.approx(float(expected["loss"]) + decay, rel=1e-5)
    assert losses["positives"] == float(tf.reduce_sum(tf.cast(labels > 0, tf.float32)))
    assert losses["nonfinite_gradients"] == 0.0
    assert (state.step, int(state.epoch.numpy()), int(state.batch_in_epoch.numpy())) == (1, 2, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(before, state.model.get_weights()))
