"""Training data on the CPU: augmentation and the shared-memory batch pipeline.

Never imports TensorFlow: the worker processes rely on it (tests/test_layout.py checks)."""
