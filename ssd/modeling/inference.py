"""The detector graph: uint8 RGB images of any size -> resize -> model -> post-processing, one tf.function.

This is the input contract of every export (`ssd.deploy.graph` freezes this very graph): images
uint8 RGB [B, H, W, 3] of any size, warped to the model's S x S input inside the graph, and
boxes normalised, so they apply unchanged to the original image.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ssd.config import ModelConfig
from ssd.core.anchors import Anchors
from ssd.core.postprocess import PostprocessOptions, postprocess


def resize_in_graph(images: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [B, H, W, 3] -> uint8 [B, size, size, 3], as `ssd.image_io.resize_rgb` does on the CPU.

    half_pixel_centers bilinear without antialias is cv2's INTER_LINEAR; rounding back to uint8
    gives the model the same integer pixels evaluation feeds it (within 1 grey level). A float
    input keeps the resize a TFLite builtin (a uint8 ResizeBilinear is a Flex op).
    """
    resized = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear", antialias=False)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def check_images(images: tf.Tensor) -> None:
    """Refuse anything but uint8 [B, H, W, 3] (static checks: also at tracing time)."""
    if images.dtype != tf.uint8 or images.shape.rank != 4 or images.shape[-1] != 3:
        raise ValueError(f"Detector: images must be uint8 [B, H, W, 3] RGB, got {images.dtype.name} {images.shape}")


class Detector(tf.Module):
    """Model plus post-processing; the graph every export freezes.

    Call with uint8 RGB images [B, H, W, 3] of any size; returns the Object Detection API dict
    of `ssd.core.postprocess.postprocess` with boxes relative to the images as given.
    """

    def __init__(self, model: keras.Model, config: ModelConfig, options: PostprocessOptions | None = None):
        super().__init__(name="ssd_detector")
        self.model, self.config = model, config
        self.anchors = Anchors.from_config(config.default_boxes)
        self.options = options or PostprocessOptions()

    def head_outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 [B, H, W, 3] -> the model's raw outputs (box_deltas, class_logits) on the images warped
        to its input size."""
        check_images(images)
        return self.model(resize_in_graph(images, self.config.image_size), training=False)

    @tf.function(reduce_retracing=True)
    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.head_outputs(images)
        return postprocess(outputs["box_deltas"], outputs["class_logits"], self.anchors, self.options)

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """NumPy in, NumPy out: uint8 [B, H, W, 3] RGB, any size -> the post-processed arrays."""
        return {k: v.numpy() for k, v in self(tf.convert_to_tensor(images)).items()}
