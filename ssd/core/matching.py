"""Ground truth <-> default box matching, batched, inside the training graph.

Two stages, as in the Caffe release:
1. bipartite: repeatedly take the globally best (ground truth, default box) pair still free and
   tie them together, so every ground truth gets its own best default box even below threshold;
2. per prediction: every other default box takes the ground truth it overlaps most if IoU >= 0.5.
Ground truth is padded to a fixed number per image; padding, non-positive labels and zero-area
boxes are invalid and never matched.
"""

from __future__ import annotations

import tensorflow as tf

from ssd.core.anchors import Anchors
from ssd.core.boxes import area, center_to_corners, pairwise_iou
from ssd.core.encoding import encode


def valid_ground_truth(gt_boxes: tf.Tensor, gt_labels: tf.Tensor, gt_counts: tf.Tensor) -> tf.Tensor:
    """bool [B, M]: the box is within the image's count, labelled 1..C and has positive area."""
    num_slots = tf.shape(gt_labels)[1]
    in_count = tf.range(num_slots)[None, :] < tf.cast(gt_counts, tf.int32)[:, None]
    return in_count & (gt_labels > 0) & (area(gt_boxes) > 0.0)


def _bipartite(iou: tf.Tensor) -> tf.Tensor:
    """Greedy global matching on iou [B, M, A] (invalid entries < 0) -> int32 [B, A], -1 = none."""
    batch, num_gt, num_anchors = tf.shape(iou)[0], tf.shape(iou)[1], tf.shape(iou)[2]
    forced = -tf.ones([batch, num_anchors], tf.int32)
    batch_index = tf.range(batch)

    def step(i, iou, forced):
        flat = tf.reshape(iou, [batch, -1])
        best = tf.argmax(flat, axis=1, output_type=tf.int32)
        found = tf.reduce_max(flat, axis=1) >= 0.0
        gt, anchor = best // num_anchors, best % num_anchors
        update = tf.where(found, gt, tf.gather_nd(forced, tf.stack([batch_index, anchor], 1)))
        forced = tf.tensor_scatter_nd_update(forced, tf.stack([batch_index, anchor], 1), update)
        taken_row = tf.one_hot(gt, num_gt, on_value=True, off_value=False)[:, :, None]
        taken_col = tf.one_hot(anchor, num_anchors, on_value=True, off_value=False)[:, None, :]
        taken = (taken_row | taken_col) & found[:, None, None]
        return i + 1, tf.where(taken, -1.0, iou), forced

    _, _, forced = tf.while_loop(lambda i, *_: i < num_gt, step, (0, iou, forced))
    return forced


def match(
    gt_boxes: tf.Tensor,
    gt_labels: tf.Tensor,
    gt_counts: tf.Tensor,
    anchors: tf.Tensor,
    iou_threshold: float = 0.5,
) -> tf.Tensor:
    """Index of the ground truth each default box is matched to.

    Args:
        gt_boxes: float32 [B, M, 4], "rel_xyxy", zero-padded.
        gt_labels: int32 [B, M], class ids 1..C, 0 for padding.
        gt_counts: int32 [B], number of real boxes per image.
        anchors: float32 [A, 4], "rel_center_xywh".
    Returns:
        int32 [B, A]: index into M of the matched ground truth, -1 for background.
    """
    gt_labels = tf.cast(gt_labels, tf.int32)
    # Only the slots some image uses take part; the while loop then runs max(count) times.
    used = tf.maximum(tf.reduce_max(tf.cast(gt_counts, tf.int32)), 1)
    gt_boxes, gt_labels = gt_boxes[:, :used], gt_labels[:, :used]
    valid = valid_ground_truth(gt_boxes, gt_labels, gt_counts)
    iou = pairwise_iou(gt_boxes, center_to_corners(tf.cast(anchors, gt_boxes.dtype)))
    iou = tf.where(valid[:, :, None], iou, -1.0)

    best_iou = tf.reduce_max(iou, axis=1)
    best_gt = tf.argmax(iou, axis=1, output_type=tf.int32)
    forced = _bipartite(iou)
    gt_index = tf.where(best_iou >= iou_threshold, best_gt, -1)
    return tf.where(forced >= 0, forced, gt_index)


def training_targets(
    gt_boxes: tf.Tensor,
    gt_labels: tf.Tensor,
    gt_counts: tf.Tensor,
    anchors: Anchors,
    iou_threshold: float = 0.5,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Match, then encode: (target_deltas float32 [B, A, 4], target_labels int32 [B, A]).

    Arguments as for `match`; the offsets are from `anchors.boxes`, scaled by `anchors.variances`.
    Background boxes get label 0 and zero deltas.
    """
    gt_index = match(gt_boxes, gt_labels, gt_counts, anchors.boxes, iou_threshold)
    positive = gt_index >= 0
    safe_index = tf.maximum(gt_index, 0)
    labels = tf.gather(tf.cast(gt_labels, tf.int32), safe_index, batch_dims=1)
    target_labels = tf.where(positive, labels, 0)
    matched = tf.gather(gt_boxes, safe_index, batch_dims=1)
    deltas = encode(matched, anchors.boxes, anchors.variances)
    target_deltas = tf.where(positive[..., None], deltas, 0.0)
    return target_deltas, target_labels
