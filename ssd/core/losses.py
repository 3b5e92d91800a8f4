"""MultiBox loss: softmax cross-entropy with hard negative mining, smooth-L1 on positives."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def smooth_l1(x: tf.Tensor) -> tf.Tensor:
    """Elementwise smooth-L1 (Huber with delta 1)."""
    ax = tf.abs(x)
    return tf.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def hard_negative_mask(background_loss: tf.Tensor, positive: tf.Tensor, neg_pos_ratio: float) -> tf.Tensor:
    """bool [B, A]: per image, the `neg_pos_ratio * #positives` negatives with the highest loss.

    Args:
        background_loss: float [B, A], the cross-entropy each box would have as background.
        positive: bool [B, A].
    """
    loss = tf.where(positive, -1.0, tf.stop_gradient(background_loss))  # positives rank last
    num_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)
    num_neg = tf.minimum(
        tf.cast(tf.cast(num_pos, tf.float32) * neg_pos_ratio, tf.int32),
        tf.shape(positive)[1] - num_pos,
    )
    order = tf.argsort(loss, axis=1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=1, stable=True)
    return rank < num_neg[:, None]


def multibox_loss(
    box_deltas: tf.Tensor,
    class_logits: tf.Tensor,
    target_deltas: tf.Tensor,
    target_labels: tf.Tensor,
    neg_pos_ratio: float = 3.0,
    alpha: float = 1.0,
    normalizer: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """The SSD objective, both parts divided by the batch's number of positives (at least 1).

    Args:
        box_deltas: float [B, A, 4], predicted offsets.
        class_logits: float [B, A, C + 1], class 0 is background.
        target_deltas: float [B, A, 4], encoded matched ground truth (used on positives only).
        target_labels: int32 [B, A], 0 for background.
        normalizer: the positives to divide by, when the batch is split over replicas (the
            global count); this batch's own count if None.
    Returns:
        {"loss", "confidence_loss", "localization_loss"}, float32 scalars; "loss" is
        confidence + alpha * localisation (weight decay is added by the caller).
    """
    box_deltas = tf.cast(box_deltas, tf.float32)
    class_logits = tf.cast(class_logits, tf.float32)
    target_labels = tf.cast(target_labels, tf.int32)
    positive = target_labels > 0

    log_probs = tf.nn.log_softmax(class_logits, axis=-1)
    cross_entropy = -tf.gather(log_probs, target_labels, batch_dims=2)
    negative = hard_negative_mask(-log_probs[..., 0], positive, neg_pos_ratio)

    if normalizer is None:
        normalizer = tf.reduce_sum(tf.cast(positive, tf.float32))
    num_pos = tf.maximum(tf.cast(normalizer, tf.float32), 1.0)
    selected = tf.cast(positive | negative, tf.float32)
    confidence = tf.reduce_sum(cross_entropy * selected) / num_pos

    # where() on the inputs, not just the sum, so a huge offset on a background box cannot
    # reach the gradient as inf * 0.
    diff = tf.where(positive[..., None], box_deltas - tf.cast(target_deltas, tf.float32), 0.0)
    localization = tf.reduce_sum(smooth_l1(diff)) / num_pos
    return {
        "loss": confidence + alpha * localization,
        "confidence_loss": confidence,
        "localization_loss": localization,
    }


def weight_decay_loss(kernels: Sequence[tf.Variable], weight_decay: float) -> tf.Tensor:
    """0.5 * weight_decay * sum of squared kernels: Caffe's decay (gradient weight_decay * w)."""
    if not kernels:
        return tf.constant(0.0)
    return 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(tf.cast(k, tf.float32))) for k in kernels])
