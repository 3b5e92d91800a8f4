"""What the evaluation loop drives: any object with these methods (detectron2's DatasetEvaluator).

`VOCEvaluator`, `COCOEvaluator` and `EvaluatorGroup` (several fed from one pass) all are one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Evaluator(Protocol):
    """Fed one image at a time, then asked for its results once."""

    class_names: Sequence[str]

    def reset(self) -> None:
        """Forget every image processed so far."""

    def process(self, image_id: str, gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_difficult: np.ndarray,
                det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray) -> None:
        """One image: ground truth and detections, boxes float [N, 4] "xyxy" pixels of the original
        image, labels 1..C, difficult bool [N]."""

    def evaluate(self) -> dict[str, Any]:
        """JSON-ready results of everything processed."""
