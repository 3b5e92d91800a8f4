"""Pascal VOC results files: one `comp4_det_test_<class>.txt` per class, read and written.

Each line is `image_id score xmin ymin xmax ymax` with the box in the devkit's 1-based inclusive
pixels, i.e. (xmin + 1, ymin + 1, xmax, ymax) of the library's 0-based continuous "xyxy".
Numbers are written with Python's shortest round-trip repr (e.g. `0.87`, `48.51171875`), so
reading a file back yields bit-identical values and the same AP as evaluating in memory. (The
Caffe release truncated coordinates to integers and printed scores with 6 significant digits,
which can merge close scores into ties and move boxes by up to a pixel.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

COMP4_PREFIX = "comp4_det_test_"


def results_path(directory: str | Path, class_name: str, prefix: str = COMP4_PREFIX) -> Path:
    """The file of one class: DIR/<prefix><class>.txt."""
    return Path(directory) / f"{prefix}{class_name}.txt"


def write_results_files(
    directory: str | Path,
    class_names: Sequence[str],
    image_ids: Sequence[str],
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    prefix: str = COMP4_PREFIX,
) -> list[Path]:
    """Write one file per class (empty if it has no detections), lines in input order.

    Args:
        image_ids: one per detection, without whitespace.
        boxes: float [N, 4], devkit 1-based inclusive (xmin, ymin, xmax, ymax) pixels
            (`VOCEvaluator.devkit_detections()` gives them in this form).
        scores: float [N]. labels: int [N], class ids 1..C indexing class_names.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if not len(image_ids) == len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"write_results_files: need as many image_ids, boxes, scores, labels, got "
            f"{len(image_ids)}, {len(boxes)}, {len(scores)}, {len(labels)}"
        )
    bad = [i for i in set(image_ids) if not i or any(ch.isspace() for ch in i)]
    if bad:
        raise ValueError(f"write_results_files: image ids must be non-empty without whitespace, got {bad[:3]}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(image_ids, dtype=object)
    paths = []
    for label, name in enumerate(class_names, start=1):
        rows = np.flatnonzero(labels == label)
        lines = [
            f"{i} {s!r} {x1!r} {y1!r} {x2!r} {y2!r}\n"
            for i, s, (x1, y1, x2, y2) in zip(ids[rows], scores[rows].tolist(), boxes[rows].tolist())
        ]
        path = results_path(directory, name, prefix)
        path.write_text("".join(lines))
        paths.append(path)
    return paths


def read_results_files(
    directory: str | Path, class_names: Sequence[str], prefix: str = COMP4_PREFIX
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Read every class's file: image ids, boxes float64 [N, 4] (devkit 1-based, as written),
    scores float64 [N], labels int64 [N] (1..C); classes in order, lines in file order."""
    image_ids: list[str] = []
    numbers: list[list[float]] = []
    labels: list[int] = []
    for label, name in enumerate(class_names, start=1):
        path = results_path(directory, name, prefix)
        if not path.is_file():
            raise FileNotFoundError(f"read_results_files: no results file {path} for class {name!r}")
        with path.open() as f:
            for line_number, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    if len(fields) != 6:
                        raise ValueError
                    numbers.append([float(v) for v in fields[1:]])
                except ValueError:
                    raise ValueError(
                        f"{path}:{line_number}: expected 'image_id score xmin ymin xmax ymax', got {line.strip()!r}"
                    ) from None
                image_ids.append(fields[0])
                labels.append(label)
    table = np.asarray(numbers, np.float64).reshape(-1, 5)
    return image_ids, table[:, 1:], table[:, 0], np.asarray(labels, np.int64)
