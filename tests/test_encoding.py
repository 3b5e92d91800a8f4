"""Box coding with variances."""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd.core.encoding import decode, encode

VARIANCES = (0.1, 0.1, 0.2, 0.2)


def test_hand_worked_offsets():
    anchors = tf.constant([[0.5, 0.5, 0.2, 0.4]])  # cx, cy, w, h
    box = tf.constant([[0.45, 0.4, 0.65, 0.6]])  # centre (0.55, 0.5), size (0.2, 0.2)
    # tx = 0.05 / (0.2 * 0.1) = 2.5; ty = 0; tw = ln(1) / 0.2 = 0; th = ln(0.5) / 0.2
    expected = [[2.5, 0.0, 0.0, np.log(0.5) / 0.2]]
    np.testing.assert_allclose(encode(box, anchors, VARIANCES).numpy(), expected, rtol=1e-5, atol=1e-6)


box_side = st.floats(0.01, 0.9)
box_pos = st.floats(0.0, 0.5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(box_pos, box_pos, box_side, box_side), min_size=1, max_size=6),
       st.lists(st.tuples(st.floats(0.05, 0.95), st.floats(0.05, 0.95), st.floats(0.02, 1.0),
                          st.floats(0.02, 1.0)), min_size=6, max_size=6))
def test_encode_decode_round_trip(boxes, anchors):
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float64)
    anchors = np.array(anchors, np.float64)[: len(boxes)]
    deltas = encode(tf.constant(boxes), tf.constant(anchors), VARIANCES)
    np.testing.assert_allclose(decode(deltas, tf.constant(anchors), VARIANCES).numpy(), boxes, atol=1e-9)


def test_zero_size_box_encodes_finite():
    anchors = tf.constant([[0.5, 0.5, 0.1, 0.1]])
    deltas = encode(tf.constant([[0.3, 0.3, 0.3, 0.3]]), anchors, VARIANCES)
    assert np.all(np.isfinite(deltas.numpy()))


def test_decode_of_huge_offsets_stays_finite():
    anchors = tf.constant([[0.5, 0.5, 0.1, 0.1]])
    assert np.all(np.isfinite(decode(tf.constant([[0.0, 0.0, 1e4, 1e4]]), anchors, VARIANCES).numpy()))
