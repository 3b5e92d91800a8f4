"""Overlap of box sets in NumPy, for the stages that run outside the graph (augmentation, tracking).

Boxes are "xyxy" (xmin, ymin, xmax, ymax) in any one unit, continuous coordinates (no +1 pixel
convention: that belongs to the VOC evaluation alone). A box with xmax <= xmin or ymax <= ymin
has area 0 and overlaps nothing.
"""

from __future__ import annotations

import numpy as np


def iou_matrix(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair: boxes1 float [M, 4], boxes2 float [N, 4] "xyxy" -> [M, N].

    Pairs whose union is empty (two degenerate boxes) get 0.
    """
    lo = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    hi = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area1 = np.prod(np.clip(boxes1[:, 2:] - boxes1[:, :2], 0, None), axis=-1)
    area2 = np.prod(np.clip(boxes2[:, 2:] - boxes2[:, :2], 0, None), axis=-1)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
