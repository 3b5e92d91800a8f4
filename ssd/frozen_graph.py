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


def detection_records(
    outputs: dict[str, np.ndarray],
    index: int,
    width: int,
    height: int,
    class_names: Sequence[str],
    threshold: float,
) -> list[dict[str, Any]]:
    """Detections of image `index` of a graph call with score >= threshold, as JSON-ready dicts.

    Each: class_id (1..C), class_name, score, box_xyxy (pixels of the original image),
    box_rel_xyxy (normalised xmin, ymin, xmax, ymax).
    """
    num = int(outputs["num_detections"][index])
    scores = outputs["detection_scores"][index, :num]
    keep = scores >= threshold
    rel_yxyx = outputs["detection_boxes"][index, :num][keep]
    pixels = detections_to_pixels(rel_yxyx, width, height)
    classes = outputs["detection_classes"][index, :num][keep].astype(int)
    records = []
    # .tolist() first: round() on Python floats is several times faster than on NumPy scalars,
    # which matters at up to 100 records per video frame.
    for box, rel, cls, score in zip(pixels.tolist(), rel_yxyx[:, [1, 0, 3, 2]].tolist(), classes.tolist(),
                                    scores[keep].tolist()):
        name = class_names[cls - 1] if 0 < cls <= len(class_names) else str(cls)
        records.append({
            "class_id": cls, "class_name": name, "score": round(score, 5),
            "box_xyxy": [round(v, 2) for v in box],
            "box_rel_xyxy": [round(v, 6) for v in rel],
        })  # fmt: skip
    return records
