"""Box format conversions and IoU."""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ssd.core.boxes import area, center_to_corners, corners_to_center, pairwise_iou, xyxy_to_yxyx

coords = arrays(np.float32, (5, 4), elements=st.floats(0, 1, width=32))


@settings(max_examples=30, deadline=None)
@given(coords)
def test_center_corner_round_trip(boxes):
    np.testing.assert_allclose(center_to_corners(corners_to_center(boxes)).numpy(), boxes, atol=1e-6)


def test_hand_worked_iou():
    a = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    b = tf.constant([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    # overlap 1 / union 7; touching corners; identical; a zero-area box
    np.testing.assert_allclose(pairwise_iou(a, b).numpy(), [[1 / 7, 0.0, 1.0, 0.0]], rtol=1e-6)


def test_iou_of_two_empty_boxes_is_zero_not_nan():
    empty = tf.zeros([2, 4])
    assert np.all(pairwise_iou(empty, empty).numpy() == 0.0)


def test_batched_iou_and_area():
    boxes = tf.constant([[[0.0, 0.0, 1.0, 2.0]], [[1.0, 1.0, 0.0, 0.0]]])  # second inverted
    np.testing.assert_allclose(area(boxes).numpy(), [[2.0], [0.0]])
    assert pairwise_iou(boxes, tf.constant([[0.0, 0.0, 1.0, 1.0]])).shape == (2, 1, 1)


def test_yxyx_swap_is_an_involution():
    boxes = tf.constant([[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_allclose(xyxy_to_yxyx(boxes).numpy(), [[0.2, 0.1, 0.4, 0.3]])
    np.testing.assert_allclose(xyxy_to_yxyx(xyxy_to_yxyx(boxes)).numpy(), boxes.numpy())
