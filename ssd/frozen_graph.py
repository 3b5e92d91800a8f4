"""Running an exported frozen graph with plain TensorFlow, and reading its outputs as records.

No model code is needed: the GraphDef is imported into a `tf.compat.v1.wrap_function` and
pruned to `image_tensor:0` -> the four Object Detection API outputs. (On the slim model here a
pruned wrapped function took 44 ms per call where `Session.run` with feeds took 62 ms.)

TensorFlow is imported on first use, so the record helpers (and the HTTP client in
`ssd.server`) stay light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ssd.evaluation import detections_to_pixels

if TYPE_CHECKING:
    import tensorflow as tf

INPUT_NAME = "image_tensor"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
LABELS_FILE = "labels.txt"


def read_graph_def(path: str | os.PathLike) -> tf.compat.v1.GraphDef:
    """Parse a frozen_inference_graph.pb; FileNotFoundError / ValueError naming the file."""
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frozen graph {path} does not exist (expected frozen_inference_graph.pb)")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError is not importable from a stable place
        raise ValueError(f"frozen graph {path} is not a serialized GraphDef: {err}") from err
    names = {node.name for node in graph_def.node}
    missing = [n for n in (INPUT_NAME, *OUTPUT_NAMES) if n not in names]
    if missing:
        raise ValueError(f"frozen graph {path} lacks the Object Detection API tensors {missing}; "
                         f"expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}")
    return graph_def


class FrozenGraph:
    """A frozen detection graph as a callable: uint8 RGB [B, H, W, 3] -> dict of NumPy outputs.

    Outputs: detection_boxes float32 [B, N, 4] "rel_yxyx", detection_scores [B, N],
    detection_classes [B, N] (ids 1..C as floats), num_detections [B]. Thread-safe to call.
    """

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        self.path = Path(path)
        graph_def = read_graph_def(self.path)
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        graph = wrapped.graph
        self._tf = tf
        self._function = wrapped.prune(
            graph.get_tensor_by_name(f"{INPUT_NAME}:0"),
            {name: graph.get_tensor_by_name(f"{name}:0") for name in OUTPUT_NAMES},
        )

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"FrozenGraph: images must be uint8 [B, H, W, 3] RGB, "
                             f"got {images.dtype} {images.shape}")
        outputs = self._function(self._tf.constant(images))
        return {name: value.numpy() for name, value in outputs.items()}


def load_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from labels.txt (line k is class id k)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist (expected one class name per line)")
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def labels_for(graph_path: str | os.PathLike, labels: str | os.PathLike | None = None) -> tuple[str, ...]:
    """`labels` if given, else labels.txt beside the graph, else no names (ids are shown)."""
    if labels is not None:
        return load_labels(labels)
    beside = Path(graph_path).parent / LABELS_FILE
    return load_labels(beside) if beside.is_file() else ()


def resolve_graph_path(path: str | os.PathLike) -> Path:
    """An export directory or the .pb itself -> the .pb path."""
    path = Path(path)
    return path / "frozen_inference_graph.pb" if path.is_dir() else path


@dataclass(frozen=True)
class ImageDetections:
    """The detections of one image with score >= a threshold, as arrays (N rows each)."""

    boxes_xyxy: np.ndarray  # float64 [N, 4], pixels of the original image
    boxes_rel_xyxy: np.ndarray  # float64 [N, 4], normalised xmin, ymin, xmax, ymax
    class_ids: np.ndarray  # int [N], 1..C
    scores: np.ndarray  # float64 [N]

    def records(self, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """JSON-ready dicts: class_id, class_name, score, box_xyxy, box_rel_xyxy (rounded)."""
        # Rounded as arrays, then .tolist(): round() per Python float costs ~1 ms at 100 records,
        # which a video pays per frame. k / 10**d is the double nearest the decimal, so the
        # rounded values print short.
        columns = (self.class_ids.tolist(), np.round(self.scores, 5).tolist(),
                   np.round(self.boxes_xyxy, 2).tolist(), np.round(self.boxes_rel_xyxy, 6).tolist())
        return [{"class_id": cls, "class_name": class_name(cls, class_names), "score": score,
                 "box_xyxy": box, "box_rel_xyxy": rel} for cls, score, box, rel in zip(*columns)]


def class_name(class_id: int, class_names: Sequence[str]) -> str:
    """The name of class `class_id` (1..C), or the id itself when there is no such name."""
    return class_names[class_id - 1] if 0 < class_id <= len(class_names) else str(class_id)


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
