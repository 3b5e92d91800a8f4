"""Box formats and IoU, as pure TensorFlow functions.

The library's one internal format is "rel_xyxy": float32 [..., 4] as (xmin, ymin, xmax, ymax)
normalised by the image width and height. Other formats appear only at the borders:

- "xyxy": the same in pixels, 0-based and continuous (a box covering pixel columns 0..9 is
  xmin=0, xmax=10). `ssd_datasets.voc` converts VOC's 1-based inclusive pixels to it.
- "center_xywh" / "rel_center_xywh": (cx, cy, w, h), used by the box coding.
- "rel_yxyx": (ymin, xmin, ymax, xmax) normalised, the TensorFlow Object Detection API's outputs.
"""

from __future__ import annotations

import tensorflow as tf


def corners_to_center(boxes: tf.Tensor) -> tf.Tensor:
    """(xmin, ymin, xmax, ymax) -> (cx, cy, w, h), any leading shape."""
    xy_min, xy_max = boxes[..., :2], boxes[..., 2:]
    return tf.concat([(xy_min + xy_max) / 2.0, xy_max - xy_min], axis=-1)


def center_to_corners(boxes: tf.Tensor) -> tf.Tensor:
    """(cx, cy, w, h) -> (xmin, ymin, xmax, ymax), any leading shape."""
    center, size = boxes[..., :2], boxes[..., 2:]
    return tf.concat([center - size / 2.0, center + size / 2.0], axis=-1)


def xyxy_to_yxyx(boxes: tf.Tensor) -> tf.Tensor:
    """(xmin, ymin, xmax, ymax) <-> (ymin, xmin, ymax, xmax); the swap is its own inverse."""
    return tf.gather(boxes, [1, 0, 3, 2], axis=-1)


def area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of "xyxy"-ordered boxes [..., 4] -> [...]; inverted boxes count as 0."""
    size = tf.maximum(boxes[..., 2:] - boxes[..., :2], 0.0)
    return size[..., 0] * size[..., 1]


def pairwise_iou(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """IoU of every box in boxes1 [..., N, 4] with every box in boxes2 [..., M, 4] -> [..., N, M].

    Both in an "xyxy"-ordered format (pixels or normalised). A pair whose union is empty (two
    zero-area boxes) has IoU 0, never NaN.
    """
    b1 = boxes1[..., :, None, :]
    b2 = boxes2[..., None, :, :]
    inter_min = tf.maximum(b1[..., :2], b2[..., :2])
    inter_max = tf.minimum(b1[..., 2:], b2[..., 2:])
    inter_size = tf.maximum(inter_max - inter_min, 0.0)
    inter = inter_size[..., 0] * inter_size[..., 1]
    union = area(boxes1)[..., :, None] + area(boxes2)[..., None, :] - inter
    return tf.math.divide_no_nan(inter, union)

