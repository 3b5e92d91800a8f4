"""The whole chain learns: a slim SSD300 overfits two synthetic images."""

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_datasets.synthetic import SYNTHETIC_CLASSES, render_image
from ssd.core.anchors import Anchors
from ssd.config import ModelConfig
from ssd.core.losses import multibox_loss, weight_decay_loss
from ssd.core.matching import training_targets
from ssd.modeling.model import build_model_from_config, kernel_weights


def two_images(size: int = 300):
    """uint8 [2, S, S, 3] and padded "rel_xyxy" boxes, labels, counts of two rendered scenes."""
    images, boxes, labels = [], np.zeros((2, 8, 4), np.float32), np.zeros((2, 8), np.int32)
    counts = []
    for i in range(2):
        image, pixel_boxes, names, _, _ = render_image(np.random.default_rng([7, i]), 400, 320)
        h, w = image.shape[:2]
        n = min(len(names), 8)
        boxes[i, :n] = pixel_boxes[:n] / np.array([w, h, w, h], np.float32)
        labels[i, :n] = [SYNTHETIC_CLASSES.index(name) + 1 for name in names[:n]]
        counts.append(n)
        images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR))
    return np.stack(images), boxes, labels, np.array(counts, np.int32)


@pytest.mark.slow
def test_slim_model_overfits_two_images():
    keras.utils.set_random_seed(0)
    config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=0.125)
    model = build_model_from_config(config)
    images, boxes, labels, counts = (tf.constant(a) for a in two_images())
    assert int(tf.reduce_sum(counts)) > 0
    target_deltas, target_labels = training_targets(boxes, labels, counts, Anchors.from_config(config.default_boxes))
    optimizer = keras.optimizers.Adam(1e-3)
    kernels = kernel_weights(model)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = multibox_loss(out["box_deltas"], out["class_logits"], target_deltas, target_labels)["loss"]
            total = loss + weight_decay_loss(kernels, 5e-4)
        optimizer.apply_gradients(zip(tape.gradient(total, model.trainable_variables), model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(200)]
    assert np.all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first / 10, (first, last)
