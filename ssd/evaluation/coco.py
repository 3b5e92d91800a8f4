"""COCO detection metrics through pycocotools, with the `VOCEvaluator`'s shape.

Ground truth and detections enter as the VOC evaluator takes them (boxes float [N, 4] "xyxy"
pixels, labels 1..C); they are handed to pycocotools as a COCO dataset and a COCO results list
(`bbox` [x, y, w, h] pixels, the dataset's original category ids), and pycocotools computes every
number: AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@1/10/100, AR by size (its 12
`stats`), and AP per class from its precision table. Nothing here re-implements the metric.

Conventions:
- difficult ground truth (VOC difficult, COCO crowd) is given to pycocotools as `iscrowd` 1:
  an ignore region that detections may fall in without counting as false positives.
- the ground-truth `area` (which sorts objects into small / medium / large) is the box area,
  w * h. Official COCO files give the segmentation area instead; for their exact S/M/L numbers,
  run pycocotools on the official file with the results JSON this module writes.
- image ids: ints when every id is a decimal integer (COCO's own), else the id strings.
- a confidence level keeps the detections with score >= level and reruns pycocotools; pycocotools
  then keeps the 100 best per image (its maxDets). A value pycocotools leaves at -1 (no ground
  truth in that range) is reported as None.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

# pycocotools' `stats`, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


class COCOEvaluator:
    """Accumulates ground truth and detections image by image; `evaluate()` runs pycocotools.

    The detectron2 shape: `reset()`, `process(...)` per image, `evaluate() -> dict`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        confidence_levels: Sequence[float] = (0.01, 0.1, 0.3, 0.5),
        category_ids: Sequence[int] | None = None,
    ) -> None:
        if not class_names:
            raise ValueError("COCOEvaluator: class_names must name at least one class")
        if not confidence_levels:
            raise ValueError("COCOEvaluator: confidence_levels must list at least one score level")
        ids = tuple(int(c) for c in category_ids) if category_ids is not None else tuple(
            range(1, len(class_names) + 1))
        if len(ids) != len(class_names) or len(set(ids)) != len(ids):
            raise ValueError(f"COCOEvaluator: category_ids needs one unique id per class ({len(class_names)}), "
                             f"got {category_ids!r}")
        self.class_names = tuple(class_names)
        self.category_ids = ids
        self.confidence_levels = tuple(float(c) for c in confidence_levels)
        self.reset()

    def reset(self) -> None:
        """Forget every image and detection."""
        self._images: dict[str, int] = {}
        self._gt: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        self._det: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []

    def process(self, image_id: str, gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_difficult: np.ndarray,
                det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray) -> None:
        """One image: ground truth and detections, boxes float [N, 4] "xyxy" pixels, labels 1..C."""
        self.add_ground_truth(image_id, gt_boxes, gt_labels, gt_difficult)
        self.add_detections(image_id, det_boxes, det_scores, det_labels)

    def add_ground_truth(self, image_id: str, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                         gt_difficult: np.ndarray) -> None:
        """Register an image (possibly with no objects): boxes float [N, 4] "xyxy" pixels."""
        if image_id in self._images:
            raise ValueError(f"COCOEvaluator: image {image_id!r} was already added")
        boxes = self._boxes(gt_boxes, image_id, "gt_boxes")
        labels = self._labels(gt_labels, len(boxes), image_id, "gt_labels")
        difficult = np.asarray(gt_difficult, bool).reshape(-1)
        if len(difficult) != len(boxes):
            raise ValueError(f"COCOEvaluator: image {image_id!r}: gt_difficult needs {len(boxes)} flags, "
                             f"got {len(difficult)}")
        self._images[image_id] = len(self._images)
        self._gt.append((image_id, boxes, labels, difficult))

    def add_detections(self, image_id: str, det_boxes: np.ndarray, det_scores: np.ndarray,
                       det_labels: np.ndarray) -> None:
        """Detections of a registered image: boxes float [N, 4] "xyxy" pixels, scores [N], labels 1..C."""
        if image_id not in self._images:
            raise ValueError(f"COCOEvaluator: detections for image {image_id!r}, whose ground truth was never added")
        boxes = self._boxes(det_boxes, image_id, "det_boxes")
        scores = np.asarray(det_scores, np.float64).reshape(-1)
        if len(scores) != len(boxes) or not np.all(np.isfinite(scores)):
            raise ValueError(f"COCOEvaluator: image {image_id!r}: det_scores needs {len(boxes)} finite scores, "
                             f"got {scores.tolist()[:5]}")
        self._det.append((image_id, boxes, scores, self._labels(det_labels, len(boxes), image_id, "det_labels")))

    def results_json(self) -> list[dict[str, Any]]:
        """Every detection as COCO results: image_id, category_id (original), bbox [x, y, w, h], score."""
        image_ids = self._coco_image_ids()
        return [
            {"image_id": image_ids[image_id], "category_id": self.category_ids[label - 1],
             "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
            for image_id, boxes, scores, labels in self._det
            for (x0, y0, x1, y1), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist())
        ]

    def ground_truth_json(self) -> dict[str, Any]:
        """The ground truth as a COCO dataset (images, annotations with iscrowd = difficult, categories)."""
        image_ids = self._coco_image_ids()
        annotations = []
        for image_id, boxes, labels, difficult in self._gt:
            for (x0, y0, x1, y1), label, crowd in zip(boxes.tolist(), labels.tolist(), difficult.tolist()):
                w, h = x1 - x0, y1 - y0
                annotations.append({"id": len(annotations) + 1, "image_id": image_ids[image_id],
                                    "category_id": self.category_ids[label - 1], "bbox": [x0, y0, w, h],
                                    "area": w * h, "iscrowd": int(crowd)})
        return {"images": [{"id": image_ids[i]} for i in self._images], "annotations": annotations,
                "categories": [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)]}

    def evaluate(self) -> dict[str, Any]:
        """pycocotools' numbers per confidence level, JSON-ready.

        Returns:
            metric "coco", class_names, category_ids, confidence_levels, num_images,
            stats: [per level] {name: value} for STAT_NAMES (None where pycocotools gives -1), and
                AP_at_iou: AP at each IoU threshold 0.5, 0.55, ..., 0.95,
            classes: {name: {category_id, num_ground_truth (not crowd), ap [per level], ap50 [per level]}}.
        """
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            gt = COCO()
            gt.dataset = self.ground_truth_json()
            gt.createIndex()
        results = self.results_json()
        per_level = [_run_cocoeval(gt, [r for r in results if r["score"] >= level]) for level in self.confidence_levels]
        counts = {c: 0 for c in self.category_ids}
        for ann in gt.dataset["annotations"]:
            counts[ann["category_id"]] += not ann["iscrowd"]
        return {
            "metric": "coco",
            "class_names": list(self.class_names),
            "category_ids": list(self.category_ids),
            "confidence_levels": list(self.confidence_levels),
            "num_images": len(self._images),
            "stats": [stats for stats, _ in per_level],
            "classes": {
                name: {"category_id": cat, "num_ground_truth": counts[cat],
                       "ap": [per_class[cat][0] for _, per_class in per_level],
                       "ap50": [per_class[cat][1] for _, per_class in per_level]}
                for name, cat in zip(self.class_names, self.category_ids)
            },
        }

    def _coco_image_ids(self) -> dict[str, int | str]:
        canonical = all(i.isdigit() and str(int(i)) == i for i in self._images)
        return {i: int(i) if canonical else i for i in self._images}

    def _boxes(self, boxes: np.ndarray, image_id: str, name: str) -> np.ndarray:
        boxes = np.asarray(boxes, np.float64)
        if boxes.size == 0:
            return boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"COCOEvaluator: image {image_id!r}: {name} must be [N, 4] xyxy, got {boxes.shape}")
        return boxes

    def _labels(self, labels: np.ndarray, n: int, image_id: str, name: str) -> np.ndarray:
        labels = np.asarray(labels).reshape(-1)
        as_int = labels.astype(np.int64)  # float class ids from the Object Detection API outputs
        if len(labels) != n or np.any(as_int != labels) or np.any((as_int < 1) | (as_int > len(self.class_names))):
            raise ValueError(f"COCOEvaluator: image {image_id!r}: {name} must be {n} class ids "
                             f"1..{len(self.class_names)}, got {labels.tolist()[:10]}")
        return as_int


def _run_cocoeval(gt: Any, results: list[dict[str, Any]]) -> tuple[dict[str, float | None],
                                                                     dict[int, tuple[float | None, float | None]]]:
    """pycocotools' bbox evaluation: its 12 stats, and (AP, AP50) per category id."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            detections = gt.loadRes(results)
        else:  # loadRes refuses an empty list; no detections is still a valid (all-miss) result
            detections = COCO()
            detections.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                                  "annotations": []}
            detections.createIndex()
        evaluation = COCOeval(gt, detections, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats: dict[str, Any] = {name: _defined(value) for name, value in zip(STAT_NAMES, evaluation.stats)}
    # precision [T iou thresholds, R recall points, K categories (sorted ids), A areas (all first), M maxDets]
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    stats["AP_at_iou"] = [_mean_defined(precision[t]) for t in range(len(precision))]
    per_class = {cat: (_mean_defined(precision[:, :, k]), _mean_defined(precision[0, :, k]))
                 for k, cat in enumerate(evaluation.params.catIds)}
    return stats, per_class


def _defined(value: float) -> float | None:
    return None if value < 0 else float(value)


def _mean_defined(values: np.ndarray) -> float | None:
    """pycocotools' summarize(): the mean of the entries > -1, or None when there are none."""
    values = values[values > -1]
    return float(np.mean(values)) if values.size else None
