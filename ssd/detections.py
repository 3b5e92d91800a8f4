"""The detections contract: what every exported graph outputs, and reading it as records.

Every runtime (frozen graph, SavedModel, and the other export formats) follows the
TensorFlow Object Detection API: input `image_tensor` (uint8 RGB [batch, H, W, 3]), outputs
`detection_boxes` float32 [B, N, 4] "rel_yxyx", `detection_scores` [B, N],
`detection_classes` [B, N] (ids 1..C as floats), `num_detections` [B]. The tensor and file names
are defined here and nowhere else. NumPy only: the HTTP client and the evaluators import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

INPUT_NAME = "image_tensor"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
GRAPH_FILE = "frozen_inference_graph.pb"
SAVED_MODEL_DIR = "saved_model"
LABEL_MAP_FILE = "label_map.pbtxt"
LABELS_FILE = "labels.txt"
# Beside the graph: {"image_size": S, "preset": ..., "postprocess": {PostprocessOptions}}; the size the
# graph resizes every image to, so evaluation can feed original images instead of resizing them a second
# time, and the post-processing every exported format bakes in.
EXPORT_INFO_FILE = "export.json"


class DetectFn(Protocol):
    """A detector as every runtime offers it: uint8 RGB images [B, H, W, 3] -> the OUTPUT_NAMES
    arrays (`ssd.deploy.frozen_graph.FrozenGraph`, `ssd.modeling.inference.Detector.detect`)."""

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class ImageDetections:
    """The detections of one image with score >= a threshold, as arrays (N rows each)."""

    boxes_xyxy: np.ndarray  # float64 [N, 4], pixels of the original image
    boxes_rel_xyxy: np.ndarray  # float64 [N, 4], normalised xmin, ymin, xmax, ymax
    class_ids: np.ndarray  # int [N], 1..C
    scores: np.ndarray  # float64 [N]
    track_ids: np.ndarray | None = None  # int [N], ids >= 1 of a video's tracks; None when not tracked

    def tracked(self, track_ids: np.ndarray) -> ImageDetections:
        """The detections that belong to a track (`track_ids` int [N], 0 for none), with their ids."""
        keep = np.asarray(track_ids) > 0
        return ImageDetections(self.boxes_xyxy[keep], self.boxes_rel_xyxy[keep], self.class_ids[keep],
                               self.scores[keep], np.asarray(track_ids)[keep].astype(int))

    def records(self, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """JSON-ready dicts: class_id, class_name, score, box_xyxy, box_rel_xyxy (rounded), and
        track_id when tracked."""
        # Rounded as arrays, then .tolist(): round() per Python float costs ~1 ms at 100 records,
        # which a video pays per frame. k / 10**d is the double nearest the decimal, so the
        # rounded values print short.
        columns = (self.class_ids.tolist(), np.round(self.scores, 5).tolist(),
                   np.round(self.boxes_xyxy, 2).tolist(), np.round(self.boxes_rel_xyxy, 6).tolist())
        records = [{"class_id": cls, "class_name": class_name(cls, class_names), "score": score,
                    "box_xyxy": box, "box_rel_xyxy": rel} for cls, score, box, rel in zip(*columns)]
        if self.track_ids is not None:
            for record, track_id in zip(records, self.track_ids.tolist()):
                record["track_id"] = track_id
        return records


def class_name(class_id: int, class_names: Sequence[str]) -> str:
    """The name of class `class_id` (1..C), or the id itself when there is no such name."""
    return class_names[class_id - 1] if 0 < class_id <= len(class_names) else str(class_id)


def detections_to_pixels(boxes_rel_yxyx: np.ndarray, width: Any, height: Any) -> np.ndarray:
    """Post-processed boxes float [..., N, 4] "rel_yxyx" -> float64 [..., N, 4] "xyxy" pixels.

    width, height: the original image size, scalars or one per image ([B] for boxes [B, N, 4]).
    """
    boxes = np.asarray(boxes_rel_yxyx, np.float64)
    if boxes.ndim < 2 or boxes.shape[-1] != 4:
        raise ValueError(f"detections_to_pixels: boxes must be [..., N, 4] rel_yxyx, got {boxes.shape}")
    w = np.asarray(width, np.float64)[..., None]
    h = np.asarray(height, np.float64)[..., None]
    return np.stack([boxes[..., 1] * w, boxes[..., 0] * h, boxes[..., 3] * w, boxes[..., 2] * h], axis=-1)


def select_detections(
    outputs: dict[str, np.ndarray], index: int, width: int, height: int, threshold: float
) -> ImageDetections:
    """Detections of image `index` of a graph call with score >= threshold, boxes also in pixels."""
    num = int(outputs["num_detections"][index])
    scores = outputs["detection_scores"][index, :num]
    keep = scores >= threshold
    rel_yxyx = np.asarray(outputs["detection_boxes"][index, :num][keep], np.float64)
    return ImageDetections(
        boxes_xyxy=detections_to_pixels(rel_yxyx, width, height),
        boxes_rel_xyxy=rel_yxyx[:, [1, 0, 3, 2]],
        class_ids=outputs["detection_classes"][index, :num][keep].astype(int),
        scores=scores[keep].astype(np.float64),
    )


def detection_records(
    outputs: dict[str, np.ndarray],
    index: int,
    width: int,
    height: int,
    class_names: Sequence[str],
    threshold: float,
) -> list[dict[str, Any]]:
    """`select_detections(...).records(class_names)`: the JSON-ready detections of one image."""
    return select_detections(outputs, index, width, height, threshold).records(class_names)
