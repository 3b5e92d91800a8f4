"""The metrics one can ask for by name ("voc07", "voc10", "coco"), several from one detector pass.

`make_evaluator(metrics, ...)` builds one `EvaluatorGroup` that feeds each image to the VOC
evaluator (which computes VOC07 and VOC10 AP together) and/or the COCO evaluator, and whose
`evaluate()` returns {"voc": ..., "coco": ...} for the families asked for; `headline` reads the
one number a metric is ranked by (training keeps `best/` by it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ssd.config import EVAL_METRICS
from ssd.evaluation.coco import COCOEvaluator
from ssd.evaluation.evaluator import Evaluator
from ssd.evaluation.voc import VOCEvaluator

# Metric -> the evaluator family that computes it.
FAMILY = {"voc07": "voc", "voc10": "voc", "coco": "coco"}


class EvaluatorGroup:
    """Several evaluators with the same shape fed from one pass; `evaluate()` -> {family: results}."""

    def __init__(self, evaluators: dict[str, Evaluator]) -> None:
        names = {tuple(e.class_names) for e in evaluators.values()}
        if not evaluators or len(names) != 1:
            raise ValueError(f"EvaluatorGroup needs evaluators of the same classes, got {names}")
        self.evaluators = evaluators
        self.class_names = next(iter(names))

    def reset(self) -> None:
        for evaluator in self.evaluators.values():
            evaluator.reset()

    def process(self, image_id: str, gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_difficult: np.ndarray,
                det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray) -> None:
        for evaluator in self.evaluators.values():
            evaluator.process(image_id, gt_boxes, gt_labels, gt_difficult, det_boxes, det_scores, det_labels)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        return {family: evaluator.evaluate() for family, evaluator in self.evaluators.items()}


def make_evaluator(metrics: Sequence[str], class_names: Sequence[str], confidence_levels: Sequence[float],
                   category_ids: Sequence[int] | None = None, iou_threshold: float = 0.5) -> EvaluatorGroup:
    """One group computing every metric in `metrics` (names from EVAL_METRICS)."""
    unknown = [m for m in metrics if m not in EVAL_METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be some of {EVAL_METRICS}, got {list(metrics)}")
    families = {FAMILY[m] for m in metrics}
    evaluators: dict[str, Evaluator] = {}
    if "voc" in families:
        evaluators["voc"] = VOCEvaluator(class_names, confidence_levels, iou_threshold)
    if "coco" in families:
        evaluators["coco"] = COCOEvaluator(class_names, confidence_levels, category_ids)
    return EvaluatorGroup(evaluators)


# The name a metric's headline number is recorded under (best/best.json, summaries).
HEADLINE_NAMES = {"voc07": "map_voc07", "voc10": "map_voc10", "coco": "coco_ap"}


def headline(results: dict[str, dict[str, Any]], metric: str) -> float:
    """The number `metric` ranks by, at the lowest confidence level: VOC07 / VOC10 mAP or COCO
    AP@[.5:.95]; 0.0 when it is undefined (no ground truth)."""
    if metric == "coco":
        value = results["coco"]["stats"][0]["AP"]
    else:
        value = results["voc"][f"map_{metric}"][0]
    return value or 0.0
