"""Pascal VOC detection AP, exactly as the devkit's VOCevaldet.m / VOCap.m compute it.

Boxes enter in the library's "xyxy" pixels (0-based, continuous) and are stored in the
devkit's 1-based inclusive form (xmin + 1, ymin + 1, xmax, ymax), where the devkit's overlap
formula is applied literally (`iw = min(xmax) - max(xmin) + 1`, ...). For integer boxes that is
the same number as the continuous IoU; working in the devkit's form makes evaluating a
results file bit-identical to the devkit.

Per class, as the devkit:
- detections are sorted by score, descending, with a *stable* sort (MATLAB's sort): equal
  scores keep their input order, i.e. the order of `add_detections` calls (images in
  processing order), then the order within a call; for results files, the file's line order;
- each detection takes the ground truth of its class in its image with the highest overlap
  (difficult ones included; on equal overlap the first in annotation order); overlap >=
  `iou_threshold` and not difficult and not yet taken -> true positive; taken -> false
  positive; difficult -> ignored; otherwise false positive;
- recall is over the non-difficult ground truth; VOC2007 AP is the mean over t = 0, 0.1, ..., 1
  of the best precision at recall >= t; VOC2010+ AP is the area under the monotone envelope.

Beyond the devkit: several confidence levels from one pass (a level keeps detections with
score >= level; with scores sorted that is a prefix of the full ranking, and the greedy
assignment of a prefix is the prefix of the assignment, so one assignment serves all levels);
results are always defined: a class without non-difficult ground truth gets AP None and is
left out of the mAP (the devkit divides by zero), and a class whose detections all hit
difficult objects gets AP 0 (the devkit's max over NaN precisions gives NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

# Recall thresholds of the VOC2007 11-point AP: the devkit's `for t=0:0.1:1`, as MATLAB's colon
# operator builds it (first half 0 + k*0.1, second half 1 - k*0.1, midpoint 0.5). That makes the
# fourth threshold 3*0.1 = 0.30000000000000004, so a recall of exactly 0.3 (3/10, 6/20, ...)
# does NOT reach it in the devkit, and does not here; the other ten equal their decimal literals
# (np.arange(0, 1.1, 0.1), used by some Python ports, also misses 0.6 and 0.7).
_ELEVEN_POINTS = np.array([k * 0.1 for k in range(5)] + [0.5] + [1.0 - k * 0.1 for k in range(4, -1, -1)])


class _GroundTruth(NamedTuple):
    """Ground-truth rows (one per object), boxes in the devkit's 1-based form."""

    images: np.ndarray  # int64 [N], index of the image in processing order
    boxes: np.ndarray  # float64 [N, 4]
    labels: np.ndarray  # int64 [N], 1..C
    difficult: np.ndarray  # bool [N]


class _Detections(NamedTuple):
    """Detection rows, boxes in the devkit's 1-based form."""

    images: np.ndarray  # int64 [N]
    boxes: np.ndarray  # float64 [N, 4]
    scores: np.ndarray  # float64 [N]
    labels: np.ndarray  # int64 [N], 1..C


class _Ranked(NamedTuple):
    """One class's detections, score-descending, with the devkit's cumulative TP / FP counts."""

    scores: np.ndarray
    tp_cum: np.ndarray
    fp_cum: np.ndarray
    num_pos: int  # non-difficult ground truth
    num_difficult: int


class VOCEvaluator:
    """Accumulates ground truth and detections image by image; `evaluate()` gives AP per class.

    The detectron2 shape: `reset()`, `process(...)` per image, `evaluate() -> dict`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        confidence_levels: Sequence[float] = (0.01, 0.1, 0.3, 0.5),
        iou_threshold: float = 0.5,
    ) -> None:
        if not class_names:
            raise ValueError("VOCEvaluator: class_names must name at least one class")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"VOCEvaluator: iou_threshold must be in (0, 1], got {iou_threshold}")
        if not confidence_levels:
            raise ValueError("VOCEvaluator: confidence_levels must list at least one score level")
        self.class_names = tuple(class_names)
        self.confidence_levels = tuple(float(c) for c in confidence_levels)
        self.iou_threshold = float(iou_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget every image and detection."""
        self._image_index: dict[str, int] = {}
        self._gt: list[_GroundTruth] = []
        self._det: list[_Detections] = []

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Registered images in processing order."""
        return tuple(self._image_index)

    def process(
        self,
        image_id: str,
        gt_boxes: np.ndarray,
        gt_labels: np.ndarray,
        gt_difficult: np.ndarray,
        det_boxes: np.ndarray,
        det_scores: np.ndarray,
        det_labels: np.ndarray,
    ) -> None:
        """One image: ground truth and detections, boxes float [N, 4] "xyxy" pixels, labels 1..C."""
        self.add_ground_truth(image_id, gt_boxes, gt_labels, gt_difficult)
        self.add_detections(image_id, det_boxes, det_scores, det_labels)

    def add_ground_truth(
        self, image_id: str, gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_difficult: np.ndarray
    ) -> None:
        """Register an image (possibly with no objects): boxes float [N, 4] "xyxy" pixels."""
        if image_id in self._image_index:
            raise ValueError(f"VOCEvaluator: image {image_id!r} was already added")
        boxes = _as_boxes(gt_boxes, "gt_boxes", image_id)
        labels = self._as_labels(gt_labels, len(boxes), "gt_labels", image_id)
        difficult = np.asarray(gt_difficult, bool).reshape(-1)
        if len(difficult) != len(boxes):
            raise ValueError(
                f"VOCEvaluator: image {image_id!r}: gt_difficult needs {len(boxes)} flags, got {len(difficult)}"
            )
        index = len(self._image_index)
        self._image_index[image_id] = index
        self._gt.append(_GroundTruth(np.full(len(boxes), index, np.int64), _to_devkit(boxes), labels, difficult))

    def add_detections(
        self, image_id: str, det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray
    ) -> None:
        """Detections of a registered image: boxes float [N, 4] "xyxy" pixels, scores [N], labels 1..C."""
        boxes = _as_boxes(det_boxes, "det_boxes", image_id)
        self._add_devkit(np.full(len(boxes), self._lookup(image_id), np.int64), _to_devkit(boxes),
                         det_scores, det_labels, image_id)

    def add_devkit_detections(
        self, image_ids: Sequence[str], boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> None:
        """Detections of many registered images at once, boxes float [N, 4] in the devkit's
        1-based inclusive (xmin, ymin, xmax, ymax), as a results file holds them."""
        boxes = _as_boxes(boxes, "boxes", "(devkit detections)")
        if len(image_ids) != len(boxes):
            raise ValueError(f"VOCEvaluator: {len(image_ids)} image ids for {len(boxes)} boxes")
        images = np.fromiter((self._lookup(i) for i in image_ids), np.int64, len(image_ids))
        self._add_devkit(images, boxes, scores, labels, "(devkit detections)")

    def devkit_detections(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """All detections in input order: image ids, boxes float64 [N, 4] devkit 1-based, scores, labels."""
        det = _concat(self._det, _Detections)
        names = list(self._image_index)
        return [names[i] for i in det.images], det.boxes, det.scores, det.labels

    def evaluate(self) -> dict[str, Any]:
        """AP per class and confidence level, mAP per level, as plain JSON-ready values.

        Returns:
            class_names, confidence_levels, iou_threshold, num_images,
            classes: {name: {num_ground_truth (non-difficult), num_difficult, in_map,
                             ap_voc07 [per level], ap_voc10 [per level] (None if not in_map),
                             num_detections [per level], num_true_positives [per level]}},
            map_voc07 / map_voc10: [per level] mean over classes in_map (None if there are none),
            excluded_classes: names without non-difficult ground truth.
        `ssd.evaluation.report.format_table` renders it; `pr_curves()` gives the curves.
        """
        classes = {name: self._class_metrics(ranked) for name, ranked in self._ranked_classes()}
        in_map = [c for c in classes.values() if c["in_map"]]
        levels = range(len(self.confidence_levels))
        return {
            "class_names": list(self.class_names),
            "confidence_levels": list(self.confidence_levels),
            "iou_threshold": self.iou_threshold,
            "num_images": len(self._image_index),
            "classes": classes,
            "map_voc07": [_mean([c["ap_voc07"][k] for c in in_map]) for k in levels],
            "map_voc10": [_mean([c["ap_voc10"][k] for c in in_map]) for k in levels],
            "excluded_classes": [n for n, c in classes.items() if not c["in_map"]],
        }

    def pr_curves(self) -> dict[str, dict[str, np.ndarray]]:
        """{class name: {recall, precision, scores}} over all detections, score-descending (a
        confidence level's curve is the prefix with scores >= level)."""
        curves = {}
        for name, ranked in self._ranked_classes():
            recall, precision = _pr(ranked.tp_cum, ranked.fp_cum, ranked.num_pos)
            curves[name] = {"recall": recall, "precision": precision, "scores": ranked.scores}
        return curves

    def _ranked_classes(self):
        """(name, `_Ranked`) for every class, from everything processed so far."""
        gt, det = _concat(self._gt, _GroundTruth), _concat(self._det, _Detections)
        for label, name in enumerate(self.class_names, start=1):
            yield name, self._rank_class(label, gt, det, len(self._image_index))

    def _rank_class(self, label: int, gt: _GroundTruth, det: _Detections, num_images: int) -> _Ranked:
        """The devkit's assignment of one class's detections to its ground truth."""
        g_mask = gt.labels == label
        g_image, g_boxes, g_difficult = gt.images[g_mask], gt.boxes[g_mask], gt.difficult[g_mask]
        # Group this class's ground truth by image, annotation order kept within an image.
        order = np.argsort(g_image, kind="stable")
        g_image, g_boxes, g_difficult = g_image[order], g_boxes[order], g_difficult[order]
        counts = np.bincount(g_image, minlength=num_images)
        starts = np.cumsum(counts) - counts

        d_mask = det.labels == label
        d_scores = det.scores[d_mask]
        order = np.argsort(-d_scores, kind="stable")  # MATLAB's sort(-confidence): stable
        d_scores, d_image, d_boxes = d_scores[order], det.images[d_mask][order], det.boxes[d_mask][order]

        best_iou, best_gt = _best_overlaps(d_boxes, starts[d_image], counts[d_image], g_boxes)
        matched = best_iou >= self.iou_threshold
        difficult_hit = matched & np.append(g_difficult, False)[best_gt]  # best_gt -1: no match
        candidate = np.flatnonzero(matched & ~difficult_hit)
        # A ground truth is taken by the first (highest-ranked) detection that reaches it; every
        # later detection whose best match is the same object is a duplicate: false positive.
        _, first = np.unique(best_gt[candidate], return_index=True)
        tp = np.zeros(len(d_scores), bool)
        tp[candidate[first]] = True
        fp = ~tp & ~difficult_hit
        return _Ranked(d_scores, np.cumsum(tp), np.cumsum(fp), int((~g_difficult).sum()), int(g_difficult.sum()))

    def _class_metrics(self, ranked: _Ranked) -> dict[str, Any]:
        """AP (both metrics), detections and true positives at every confidence level."""
        num_pos = ranked.num_pos
        result = {
            "num_ground_truth": num_pos,
            "num_difficult": ranked.num_difficult,
            "in_map": num_pos > 0,
            "ap_voc07": [],
            "ap_voc10": [],
            "num_detections": [],
            "num_true_positives": [],
        }
        for level in self.confidence_levels:
            n = int(np.searchsorted(-ranked.scores, -level, side="right"))  # scores >= level
            recall, precision = _pr(ranked.tp_cum[:n], ranked.fp_cum[:n], num_pos)
            result["ap_voc07"].append(ap_voc07(recall, precision) if num_pos else None)
            result["ap_voc10"].append(ap_voc10(recall, precision) if num_pos else None)
            result["num_detections"].append(n)
            result["num_true_positives"].append(int(ranked.tp_cum[n - 1]) if n else 0)
        return result

    def _lookup(self, image_id: str) -> int:
        try:
            return self._image_index[image_id]
        except KeyError:
            raise ValueError(
                f"VOCEvaluator: detections for image {image_id!r}, whose ground truth was never "
                f"added (the devkit refuses unknown images too)"
            ) from None

    def _as_labels(self, labels: np.ndarray, n: int, name: str, image_id: str) -> np.ndarray:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"VOCEvaluator: image {image_id!r}: {name} needs {n} entries, got {len(labels)}")
        as_int = labels.astype(np.int64)  # float class ids from the Object Detection API outputs
        if np.any(as_int != labels) or np.any((as_int < 1) | (as_int > len(self.class_names))):
            raise ValueError(
                f"VOCEvaluator: image {image_id!r}: {name} must be class ids 1..{len(self.class_names)}, "
                f"got {np.unique(labels).tolist()}"
            )
        return as_int

    def _add_devkit(self, images, boxes, scores, labels, image_id) -> None:
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"VOCEvaluator: image {image_id!r}: det_scores needs {len(boxes)} entries, got {len(scores)}")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"VOCEvaluator: image {image_id!r}: det_scores must be finite")
        labels = self._as_labels(labels, len(boxes), "det_labels", image_id)
        self._det.append(_Detections(images, np.asarray(boxes, np.float64).reshape(-1, 4), scores, labels))


def devkit_overlap(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """The devkit's overlap of det_boxes [..., 4] with gt_boxes [..., 4] (broadcast), both 1-based
    inclusive (xmin, ymin, xmax, ymax); -inf where the boxes do not intersect (`iw>0 & ih>0` fails)."""
    iw = np.minimum(det_boxes[..., 2], gt_boxes[..., 2]) - np.maximum(det_boxes[..., 0], gt_boxes[..., 0]) + 1
    ih = np.minimum(det_boxes[..., 3], gt_boxes[..., 3]) - np.maximum(det_boxes[..., 1], gt_boxes[..., 1]) + 1
    ua = (
        (det_boxes[..., 2] - det_boxes[..., 0] + 1) * (det_boxes[..., 3] - det_boxes[..., 1] + 1)
        + (gt_boxes[..., 2] - gt_boxes[..., 0] + 1) * (gt_boxes[..., 3] - gt_boxes[..., 1] + 1)
        - iw * ih
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((iw > 0) & (ih > 0), iw * ih / ua, -np.inf)


def _best_overlaps(
    d_boxes: np.ndarray, d_start: np.ndarray, d_count: np.ndarray, g_boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best devkit overlap of each detection with the ground truth of its image, and that
    ground truth's row in g_boxes (-1 if none intersects); the first of equal overlaps wins."""
    best_iou = np.full(len(d_boxes), -np.inf)
    best_gt = np.full(len(d_boxes), -1, np.int64)
    # Detections are bucketed by how many ground truths their image has, so each bucket is one
    # dense [n, k] overlap computation and nothing is padded to the most crowded image.
    for k in np.unique(d_count[d_count > 0]):
        rows = np.flatnonzero(d_count == k)
        cols = d_start[rows, None] + np.arange(k)  # [n, k] rows of g_boxes
        overlap = devkit_overlap(d_boxes[rows, None, :], g_boxes[cols])
        j = np.argmax(overlap, axis=1)  # first maximum, as the devkit's strict `ov > ovmax`
        best_iou[rows] = overlap[np.arange(len(rows)), j]
        best_gt[rows] = np.where(np.isfinite(best_iou[rows]), cols[np.arange(len(rows)), j], -1)
    return best_iou, best_gt


def _pr(tp_cum: np.ndarray, fp_cum: np.ndarray, num_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each ranked detection. Where nothing has counted yet (only
    ignored difficult hits) the devkit's 0/0 is NaN; 0 gives the same AP and stays defined."""
    recall = tp_cum / max(num_pos, 1)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    return recall.astype(np.float64), precision.astype(np.float64)


def ap_voc07(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP: mean over t in 0, 0.1, ..., 1 of max precision at recall >= t (0 if none)."""
    if len(recall) == 0:
        return 0.0
    # Best precision at or after each rank: a suffix maximum, then look up each threshold.
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(np.maximum.accumulate(recall), _ELEVEN_POINTS, side="left")
    return float(np.sum(np.where(first < len(recall), best_after[np.minimum(first, len(recall) - 1)], 0.0)) / 11)


def ap_voc10(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP (VOCap.m): area under the monotone precision envelope, recall from 0 to 1."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changed = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changed] - mrec[changed - 1]) * mpre[changed]))


def _to_devkit(boxes: np.ndarray) -> np.ndarray:
    """"xyxy" 0-based continuous pixels -> the devkit's 1-based inclusive (xmin+1, ymin+1, xmax, ymax)."""
    return boxes + np.array([1.0, 1.0, 0.0, 0.0])


def _as_boxes(boxes: np.ndarray, name: str, image_id: str) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"VOCEvaluator: image {image_id!r}: {name} must be [N, 4], got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"VOCEvaluator: image {image_id!r}: {name} must be finite")
    return boxes


def _concat(parts: list, record: type) -> Any:
    """Field-wise concatenation of per-call records (empty arrays of the right dtype if none)."""
    if parts:
        return record(*(np.concatenate(column) for column in zip(*parts)))
    empty = {"boxes": np.zeros((0, 4)), "difficult": np.zeros(0, bool), "scores": np.zeros(0)}
    return record(*(empty.get(name, np.zeros(0, np.int64)) for name in record._fields))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
