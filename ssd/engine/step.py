"""One optimisation step as one graph: match and encode ground truth, forward, MultiBox loss, update.

Every replica divides its loss by the global number of positives (an all-reduce), so the summed
gradient is the gradient of the single-device loss on the global batch.
"""

from __future__ import annotations

import tensorflow as tf

from ssd.config import ModelConfig
from ssd.core.anchors import Anchors
from ssd.engine.recipe import TrainConfig
from ssd.core.losses import multibox_loss, weight_decay_loss
from ssd.core.matching import training_targets
from ssd.data.pipeline import Batch
from ssd.engine.distribute import distribute_batch
from ssd.engine.optimizer import decayed_weights
from ssd.engine.state import TrainState

# Keys of a step's losses that are counts, not means over the batch.
COUNTS = ("positives", "nonfinite_gradients")


class TrainStep:
    """`step(batch)`: one optimisation step on this worker's share of a global batch.

    Returns the global batch's losses as floats (summed over replicas = the single-device
    values): "total_loss", "loss", "confidence_loss", "localization_loss",
    "regularization_loss", and the counts "positives" and "nonfinite_gradients" (replicas whose
    gradients were not finite).
    """

    def __init__(self, state: TrainState, model_config: ModelConfig, config: TrainConfig,
                 strategy: tf.distribute.Strategy):
        self.state, self.strategy = state, strategy
        self.anchors = Anchors.from_config(model_config.default_boxes)
        self._weight_decay = config.weight_decay
        self._decayed = decayed_weights(state.model, config.decay_l2_scales)
        self._graph = tf.function(self._global_step, jit_compile=config.xla)

    def __call__(self, batch: Batch) -> dict[str, float]:
        position = (tf.constant(batch.epoch, tf.int64), tf.constant(batch.index, tf.int64))
        losses = self._graph(distribute_batch(self.strategy, batch), *position)
        return {k: float(v) for k, v in losses.items()}

    def _global_step(self, arrays: dict, epoch: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
        """`arrays`: the batch's arrays by name (`Batch.arrays()`), per replica."""
        strategy = self.strategy
        per_replica = strategy.run(self._replica_step, args=(arrays,))
        # Position inside the graph: a checkpoint never holds a step without its batch.
        self.state.epoch.assign(epoch)
        self.state.batch_in_epoch.assign(index + 1)
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _replica_step(self, arrays: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        model, optimizer = self.state.model, self.state.optimizer
        target_deltas, target_labels = training_targets(arrays["boxes"], arrays["labels"], arrays["counts"],
                                                        self.anchors)
        ctx = tf.distribute.get_replica_context()
        local_pos = tf.reduce_sum(tf.cast(target_labels > 0, tf.float32))
        global_pos = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_pos)
        with tf.GradientTape() as tape:
            outputs = model(arrays["images"], training=True)
            losses = multibox_loss(outputs["box_deltas"], outputs["class_logits"], target_deltas,
                                   target_labels, normalizer=global_pos)
            # The optimizer sums gradients over replicas: each carries its share of the decay.
            losses["regularization_loss"] = (weight_decay_loss(self._decayed, self._weight_decay)
                                             / self.strategy.num_replicas_in_sync)
            total = losses["loss"] + losses["regularization_loss"]
            scaled = optimizer.scale_loss(total)
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        finite = tf.math.is_finite(tf.linalg.global_norm(grads))
        optimizer.apply_gradients(zip(grads, variables))
        losses["total_loss"] = total
        losses["positives"] = local_pos
        losses["nonfinite_gradients"] = 1.0 - tf.cast(finite, tf.float32)
        return losses
