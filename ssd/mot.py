"""The MOTChallenge text format for tracks: results written by the video tracker, ground truth by the
synthetic video, both read by the tracking evaluation. NumPy only.

One box per line, comma-separated (motchallenge.net/instructions):
    results       frame, id, bb_left, bb_top, bb_width, bb_height, score, -1, -1, -1
    ground truth  frame, id, bb_left, bb_top, bb_width, bb_height, consider, class, visibility
Frames, ids and boxes are 1-based: the top-left corner of the top-left pixel is (1, 1), so
bb_left = xmin + 1 for the library's 0-based "xyxy" pixels. A ground-truth `consider` of 0 marks
a box the evaluation ignores (neither a miss nor, where a result box matches it, a false positive).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssd.records import read_text

GT_FILE = "gt.txt"  # MOTChallenge's name, in <sequence>/gt/


@dataclass(frozen=True)
class MotRows:
    """The lines of one MOT file as arrays (N rows each)."""

    frames: np.ndarray  # int [N], 1-based
    ids: np.ndarray  # int [N]
    boxes_xyxy: np.ndarray  # float64 [N, 4], 0-based pixels
    confidences: np.ndarray  # float64 [N]: the score (results) or the consider flag (ground truth)
    classes: np.ndarray  # int [N]; -1 where the file has none (results)
    visibilities: np.ndarray  # float64 [N]; -1 where the file has none (results)


def _box_columns(boxes_xyxy: np.ndarray) -> np.ndarray:
    """0-based "xyxy" pixels [N, 4] -> MOT's 1-based (bb_left, bb_top, bb_width, bb_height)."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2] + 1.0, boxes[:, 2:] - boxes[:, :2]], axis=1)


def result_lines(frame: int, ids: np.ndarray, boxes_xyxy: np.ndarray, scores: np.ndarray) -> str:
    """The result lines of one frame (1-based `frame`), one per tracked box, each ending in a newline."""
    rows = zip(ids, _box_columns(boxes_xyxy).tolist(), np.asarray(scores).tolist())
    return "".join(f"{frame},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.5f},-1,-1,-1\n" for i, (x, y, w, h), s in rows)


def gt_lines(frame: int, ids: np.ndarray, boxes_xyxy: np.ndarray, consider: np.ndarray, classes: np.ndarray,
             visibilities: np.ndarray) -> str:
    """The ground-truth lines of one frame (1-based `frame`), each ending in a newline."""
    rows = zip(ids, _box_columns(boxes_xyxy).tolist(), consider, classes, np.asarray(visibilities).tolist())
    return "".join(f"{frame},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{int(c)},{int(k)},{v:.4f}\n"
                   for i, (x, y, w, h), c, k, v in rows)


def read_mot(path: str | Path) -> MotRows:
    """Read a MOT results or ground-truth file; ValueError naming the file and line when malformed."""
    path = Path(path)
    values = []
    for number, line in enumerate(read_text(path, "MOT file").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.replace(" ", "").split(",")
        try:
            row = [float(v) for v in fields]
        except ValueError:
            raise ValueError(f"{path}:{number}: expected comma-separated numbers, got {line!r}") from None
        if len(row) < 7 or not all(np.isfinite(row[:7])):
            raise ValueError(f"{path}:{number}: expected frame, id, bb_left, bb_top, bb_width, bb_height, "
                             f"confidence[, ...] (at least 7 finite numbers), got {line!r}")
        if row[0] < 1 or row[0] != int(row[0]) or row[1] != int(row[1]) or row[4] < 0 or row[5] < 0:
            raise ValueError(f"{path}:{number}: frame must be an integer >= 1, id an integer, width and height "
                             f">= 0; got {line!r}")
        values.append(row[:9] + [-1.0] * (9 - len(row[:9])))
    table = np.array(values, np.float64).reshape(-1, 9)
    pairs, counts = np.unique(table[:, :2], axis=0, return_counts=True)
    if np.any(counts > 1):
        frame, track = pairs[np.argmax(counts > 1)].astype(int)
        raise ValueError(f"{path}: id {track} appears more than once in frame {frame}; "
                         "an id is one object per frame")
    left_top = table[:, 2:4] - 1.0
    return MotRows(
        frames=table[:, 0].astype(int), ids=table[:, 1].astype(int),
        boxes_xyxy=np.concatenate([left_top, left_top + table[:, 4:6]], axis=1),
        confidences=table[:, 6], classes=table[:, 7].astype(int), visibilities=table[:, 8],
    )  # fmt: skip
