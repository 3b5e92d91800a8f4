"""MultiBox loss against a straightforward NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from ssd.core.anchors import Anchors
from ssd.config import DefaultBoxConfig
from ssd.core.losses import hard_negative_mask, multibox_loss, smooth_l1, weight_decay_loss
from ssd.core.matching import training_targets


def reference_loss(deltas, logits, target_deltas, target_labels, ratio=3):
    """Per image: CE on positives + the ratio*#pos hardest negatives; smooth-L1 on positives."""
    conf = loc = 0.0
    total_pos = 0
    for b in range(len(logits)):
        z = logits[b] - logits[b].max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        pos = np.nonzero(target_labels[b] > 0)[0]
        neg = np.nonzero(target_labels[b] == 0)[0]
        k = min(int(ratio * len(pos)), len(neg))
        hardest = neg[np.argsort(log_p[neg, 0])[:k]]  # lowest log p(background) = highest loss
        conf -= log_p[pos, target_labels[b, pos]].sum() + log_p[hardest, 0].sum()
        d = np.abs(deltas[b, pos] - target_deltas[b, pos])
        loc += np.where(d < 1, 0.5 * d ** 2, d - 0.5).sum()
        total_pos += len(pos)
    n = max(total_pos, 1)
    return conf / n, loc / n, total_pos


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    batch, anchors, classes = 3, 200, 6
    logits = rng.normal(0, 2, (batch, anchors, classes)).astype(np.float64)
    deltas = rng.normal(0, 1.5, (batch, anchors, 4))
    target_deltas = rng.normal(0, 1.5, (batch, anchors, 4))
    labels = np.where(rng.random((batch, anchors)) < 0.07, rng.integers(1, classes, (batch, anchors)), 0)
    labels[2] = 0  # an image without positives contributes no negatives either
    labels[1, :190] = rng.integers(1, classes, 190)  # more positives than 3x negatives exist
    out = multibox_loss(tf.constant(deltas), tf.constant(logits), tf.constant(target_deltas), tf.constant(labels))
    conf, loc, _ = reference_loss(deltas, logits, target_deltas, labels)
    np.testing.assert_allclose(out["confidence_loss"].numpy(), conf, rtol=1e-5)
    np.testing.assert_allclose(out["localization_loss"].numpy(), loc, rtol=1e-5)
    np.testing.assert_allclose(out["loss"].numpy(), conf + loc, rtol=1e-5)


def test_hard_negative_count_and_choice():
    background_loss = tf.constant([[0.1, 5.0, 0.2, 3.0, 9.0, 0.3, 0.0, 1.0]])
    positive = tf.constant([[False, False, False, False, True, False, False, False]])
    mask = hard_negative_mask(background_loss, positive, 3.0).numpy()[0]
    # one positive -> the 3 negatives with the highest loss: indices 1, 3, 7 (never 4, the positive)
    np.testing.assert_array_equal(np.nonzero(mask)[0], [1, 3, 7])


def test_batch_without_positives_gives_finite_zero_loss():
    out = multibox_loss(tf.random.normal([2, 50, 4]), tf.random.normal([2, 50, 3]),
                        tf.zeros([2, 50, 4]), tf.zeros([2, 50], tf.int32))
    assert out["loss"].numpy() == 0.0


def test_smooth_l1_hand_values():
    np.testing.assert_allclose(smooth_l1(tf.constant([-2.0, -0.5, 0.0, 0.5, 3.0])).numpy(),
                               [1.5, 0.125, 0.0, 0.125, 2.5])


def test_weight_decay_is_caffe_style():
    w = tf.Variable([[1.0, 2.0], [3.0, 0.0]])
    with tf.GradientTape() as tape:
        decay = weight_decay_loss([w], 5e-4)
    np.testing.assert_allclose(decay.numpy(), 0.5 * 5e-4 * 14.0, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(decay, w).numpy(), 5e-4 * w.numpy(), rtol=1e-6)


def test_gradient_finite_with_degenerate_boxes():
    config = DefaultBoxConfig(64, (4, 2), (16, 32), (12, 30), (30, 50), ((2,), (2, 3)))
    anchors = Anchors.from_config(config)
    gt = tf.constant([[[0.2, 0.2, 0.2, 0.6], [0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3], [0, 0, 0, 0]]])
    target_deltas, target_labels = training_targets(gt, tf.constant([[1, 2, 3, 0]]), tf.constant([3]),
                                                    anchors)
    deltas = tf.Variable(tf.random.normal([1, len(anchors), 4]) * 100.0)  # huge, as early in training
    logits = tf.Variable(tf.random.normal([1, len(anchors), 4]))
    with tf.GradientTape() as tape:
        loss = multibox_loss(deltas, logits, target_deltas, target_labels)["loss"]
    grads = tape.gradient(loss, [deltas, logits])
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert set(np.unique(target_labels.numpy())) == {0, 2}
