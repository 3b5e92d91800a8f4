"""Reading images: JPEG (or anything OpenCV decodes), from files or bytes -> uint8 RGB."""

from __future__ import annotations

import os

import cv2
import numpy as np

# Decode straight to RGB, and ignore EXIF orientation: annotations refer to the stored pixel grid.
DECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as uint8 [H, W, 3] RGB; ValueError naming the file if unreadable."""
    image = cv2.imread(os.fspath(path), DECODE_FLAGS)
    if image is None:
        reason = "does not exist" if not os.path.exists(path) else "is not a readable image"
        raise ValueError(f"image file {os.fspath(path)} {reason}")
    return image


def resize_rgb(image: np.ndarray, height: int, width: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp uint8 [H, W, 3] to [height, width, 3]; bilinear (cv2 INTER_LINEAR) is the resize between
    an image and the network input everywhere but training's random augmentation."""
    return cv2.resize(image, (width, height), interpolation=interpolation)


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Encoded image bytes -> uint8 [H, W, 3] RGB, or None if OpenCV cannot decode them."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), DECODE_FLAGS)
