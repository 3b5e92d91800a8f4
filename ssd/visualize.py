"""Drawing detections on images (OpenCV, uint8 RGB)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np


@functools.lru_cache(maxsize=None)
def class_colour(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per class id (golden-angle hue steps)."""
    hue = int((class_id * 137.508) % 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    *,
    bgr: bool = False,
    in_place: bool = False,
) -> np.ndarray:
    """`image` (uint8 [H, W, 3] RGB, or BGR when `bgr`) with boxes, labels and scores drawn on a copy.

    Args:
        boxes: float [N, 4], "xyxy" pixels of this image.
        classes: int [N], ids 1..C.
        scores: float [N].
        in_place: draw on `image` itself (C-contiguous, writable) and return it.
    """
    out = image if in_place else np.ascontiguousarray(image).copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    corners = np.rint(np.asarray(boxes, np.float64).reshape(-1, 4)).astype(int).tolist()
    for (x1, y1, x2, y2), cls, score in zip(corners, np.asarray(classes).tolist(), np.asarray(scores).tolist()):
        cls = int(cls)
        colour = class_colour(cls)[::-1] if bgr else class_colour(cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        name = class_names[cls - 1] if 0 < cls <= len(class_names) else str(cls)
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(y1 - th - base, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), colour, -1)
        cv2.putText(out, text, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out
