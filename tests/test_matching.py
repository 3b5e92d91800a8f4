"""Matching ground truth to default boxes, and the training targets built from it."""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd.core.anchors import Anchors, default_boxes
from ssd.config import DefaultBoxConfig
from ssd.core.encoding import decode
from ssd.core.matching import match, training_targets

VARIANCES = (0.1, 0.1, 0.2, 0.2)
# A small anchor set: 4x4 and 2x2 maps on a 64 px image -> 16*4 + 4*6 = 88 boxes.
SMALL = DefaultBoxConfig(64, (4, 2), (16, 32), (12, 30), (30, 50), ((2,), (2, 3)))
ANCHORS = default_boxes(SMALL)


def np_iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)
    union = area(a)[:, None] + area(b)[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def anchors_xyxy():
    return np.concatenate([ANCHORS[:, :2] - ANCHORS[:, 2:] / 2, ANCHORS[:, :2] + ANCHORS[:, 2:] / 2], 1)


def run_match(boxes, labels, count):
    return match(tf.constant(boxes[None], tf.float32), tf.constant(labels[None], tf.int32),
                 tf.constant([count]), tf.constant(ANCHORS)).numpy()[0]


def test_hand_worked_match():
    # Two anchors only: a perfect fit for gt 0 and one that overlaps gt 1 at IoU 1/3 only.
    anchors = tf.constant([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.1, 0.1]])
    gt = tf.constant([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 0.75], [0, 0, 0, 0]]])
    index = match(gt, tf.constant([[3, 7, 0]]), tf.constant([2]), anchors).numpy()[0]
    # anchor 1 vs gt 1: inter 0.5*0.25, union 0.25 -> IoU 0.5; anchor 2 overlaps nothing.
    np.testing.assert_array_equal(index, [0, 1, -1])


def test_best_anchor_is_forced_below_threshold():
    anchors = tf.constant([[0.5, 0.5, 1.0, 1.0]])
    gt = tf.constant([[[0.4, 0.4, 0.5, 0.5]]])  # IoU 0.01 with the only anchor
    assert match(gt, tf.constant([[1]]), tf.constant([1]), anchors).numpy()[0, 0] == 0


def test_identical_ground_truths_each_get_their_own_anchor():
    box = np.array([0.3, 0.3, 0.6, 0.7], np.float32)
    index = run_match(np.stack([box, box]), np.array([1, 2]), 2)
    assert {0, 1} <= set(index.tolist())


def test_padding_and_degenerate_boxes_are_never_matched():
    boxes = np.array([[0.2, 0.2, 0.2, 0.6], [0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9], [0.5, 0.5, 0.9, 0.9]], np.float32)
    labels = np.array([1, 2, 0, 4])  # degenerate (zero width), real, label-0, beyond count
    index = run_match(boxes, labels, 3)
    assert set(index.tolist()) <= {-1, 1}
    assert (index == 1).any()


def test_empty_batch_has_no_positives():
    index = match(tf.zeros([2, 5, 4]), tf.zeros([2, 5], tf.int32), tf.constant([0, 0]), tf.constant(ANCHORS))
    assert np.all(index.numpy() == -1)


side = st.one_of(st.just(0.0), st.floats(1e-3, 0.6))  # exactly degenerate, or a real box
boxes_strategy = st.lists(
    st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), side, side),
    min_size=1, max_size=8)


@settings(max_examples=40, deadline=None)
@given(boxes_strategy, st.integers(0, 2))
def test_match_invariants(raw, padding):
    boxes = np.array([[x, y, min(x + w, 1), min(y + h, 1)] for x, y, w, h in raw], np.float32)
    count = len(boxes)
    boxes = np.concatenate([boxes, np.zeros((padding, 4), np.float32)])
    labels = np.array([1 + i % 3 for i in range(count)] + [0] * padding)
    index = run_match(boxes, labels, count)

    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (np.arange(len(boxes)) < count)
    iou = np_iou(boxes, anchors_xyxy())
    iou[~valid] = -1
    for m in range(len(boxes)):
        assert (index == m).any() == valid[m], f"gt {m} valid={valid[m]}"
    best = iou.max(axis=0)
    # 0.5 rule: a box above threshold is positive; a background box is below it.
    assert np.all(index[best >= 0.5] >= 0)
    assert np.all(best[index < 0] < 0.5)
    # A positive that was not forced belongs to its best ground truth.
    matched = index >= 0
    above = matched & (best >= 0.5)
    forced_elsewhere = np.array([iou[index[a], a] < best[a] for a in range(len(index))])
    assert np.all(iou[index[above], np.nonzero(above)[0]][~forced_elsewhere[above]] == best[above][~forced_elsewhere[above]])


def test_training_targets_decode_back_to_ground_truth():
    gt = np.array([[0.1, 0.2, 0.5, 0.7], [0.55, 0.5, 0.95, 0.9]], np.float32)
    deltas, labels = training_targets(tf.constant(gt[None]), tf.constant([[4, 9]]), tf.constant([2]),
                                      Anchors(ANCHORS, VARIANCES))
    deltas, labels = deltas.numpy()[0], labels.numpy()[0]
    decoded = decode(tf.constant(deltas), tf.constant(ANCHORS), VARIANCES).numpy()
    assert set(labels.tolist()) == {0, 4, 9}
    for label, box in zip([4, 9], gt):
        np.testing.assert_allclose(decoded[labels == label], np.repeat(box[None], (labels == label).sum(), 0), atol=1e-5)
    assert np.all(deltas[labels == 0] == 0)
