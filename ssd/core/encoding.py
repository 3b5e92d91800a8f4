"""Box coding: centre-size offsets of boxes from default boxes, scaled by the variances.

    tx = (cx - acx) / (aw * v0)    ty = (cy - acy) / (ah * v1)
    tw = ln(w / aw) / v2           th = ln(h / ah) / v3
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from ssd.core.boxes import center_to_corners, corners_to_center

# Widths and heights are floored here before the logarithm: a zero-sized box (padding, or a
# degenerate annotation that slipped through) then encodes to a large finite offset, not -inf.
_MIN_SIZE = 1e-6
# An untrained head can emit huge size offsets; exp() of them would overflow to inf. No real
# box is more than e^4.6 ~ 100 times its default box.
_MAX_LOG_SCALE = 4.6


def encode(boxes: tf.Tensor, anchors: tf.Tensor, variances: Sequence[float]) -> tf.Tensor:
    """Offsets of `boxes` from `anchors`.

    Args:
        boxes: float [..., A, 4], "rel_xyxy" (one box per default box, e.g. its matched ground truth).
        anchors: float [A, 4], "rel_center_xywh".
        variances: 4 numbers, (0.1, 0.1, 0.2, 0.2) for SSD.
    Returns:
        box_deltas float [..., A, 4] as (tx, ty, tw, th).
    """
    anchors = tf.cast(anchors, boxes.dtype)
    var = tf.constant(variances, boxes.dtype)
    center = corners_to_center(boxes)
    size = tf.maximum(center[..., 2:], _MIN_SIZE)
    txy = (center[..., :2] - anchors[:, :2]) / (anchors[:, 2:] * var[:2])
    twh = tf.math.log(size / anchors[:, 2:]) / var[2:]
    return tf.concat([txy, twh], axis=-1)


def decode(box_deltas: tf.Tensor, anchors: tf.Tensor, variances: Sequence[float]) -> tf.Tensor:
    """Inverse of `encode`: box_deltas [..., A, 4] -> boxes [..., A, 4], "rel_xyxy"."""
    anchors = tf.cast(anchors, box_deltas.dtype)
    var = tf.constant(variances, box_deltas.dtype)
    cxy = box_deltas[..., :2] * var[:2] * anchors[:, 2:] + anchors[:, :2]
    wh = tf.exp(tf.minimum(box_deltas[..., 2:] * var[2:], _MAX_LOG_SCALE)) * anchors[:, 2:]
    return center_to_corners(tf.concat([cxy, wh], axis=-1))
