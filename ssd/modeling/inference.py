"""The detector graph: images -> model -> post-processing, as one tf.function."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ssd.core.anchors import default_boxes
from ssd.config import ModelConfig
from ssd.core.postprocess import postprocess


class Detector(tf.Module):
    """Model plus post-processing; the same graph the export freezes.

    Call with uint8 RGB images [B, S, S, 3] already at the model's input size; returns the
    Object Detection API dict (see `ssd.core.postprocess.postprocess`).
    """

    def __init__(self, model: keras.Model, config: ModelConfig, score_threshold: float = 0.01,
                 iou_threshold: float = 0.45, top_k_per_class: int = 400, max_detections: int = 200):
        super().__init__(name="ssd_detector")
        self.model, self.config = model, config
        self.anchors = tf.constant(default_boxes(config.default_boxes))
        self.options = dict(score_threshold=score_threshold, iou_threshold=iou_threshold,
                            top_k_per_class=top_k_per_class, max_detections=max_detections)

    @tf.function(reduce_retracing=True)
    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.model(images, training=False)
        return postprocess(outputs["box_deltas"], outputs["class_logits"], self.anchors,
                           self.config.default_boxes.variances, **self.options)

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """NumPy in, NumPy out: uint8 [B, S, S, 3] -> the post-processed arrays."""
        return {k: v.numpy() for k, v in self(tf.convert_to_tensor(images, tf.uint8)).items()}
