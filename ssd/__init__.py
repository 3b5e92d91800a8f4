"""SSD: Single Shot MultiBox Detector on TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
