"""Drawing detections and tracks on images (OpenCV, uint8 RGB or BGR)."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence

import cv2
import numpy as np

from ssd.detections import class_name

_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


@functools.lru_cache(maxsize=None)
def class_colour(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per class id (golden-angle hue steps)."""
    hue = int((class_id * 137.508) % 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


@functools.lru_cache(maxsize=8192)
def label_patch(text: str, colour: tuple[int, int, int]) -> np.ndarray:
    """uint8 [h, w, 3]: `text` in black on a `colour` background, baseline included (read-only)."""
    # Rendered once per (label, colour) and pasted: a video shows the same few hundred labels
    # again and again, and rendering them each time was most of the drawing cost.
    (width, height), baseline = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
    patch = np.empty((height + baseline + 1, width + 1, 3), np.uint8)
    patch[:] = colour
    cv2.putText(patch, text, (0, height), _FONT, _FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    patch.flags.writeable = False
    return patch


def paste(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Copy `patch` into `image` with its top-left corner at (x, y), clipped to the image."""
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + patch.shape[1], image.shape[1]), min(y + patch.shape[0], image.shape[0])
    if x0 < x1 and y0 < y1:
        image[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray | None,
    class_names: Sequence[str],
    *,
    bgr: bool = False,
    in_place: bool = False,
    track_ids: np.ndarray | None = None,
) -> np.ndarray:
    """`image` (uint8 [H, W, 3] RGB, or BGR when `bgr`) with boxes, labels and scores drawn on a copy.

    Each label sits on a filled box of the class colour just above its box (inside the image).

    Args:
        boxes: float [N, 4], "xyxy" pixels of this image.
        classes: int [N], ids 1..C.
        scores: float [N], or None for ground truth (labels without a score).
        in_place: draw on `image` itself (C-contiguous, writable) and return it.
        track_ids: int [N]: labels start with "#<id>".
    """
    out = image if in_place else np.ascontiguousarray(image).copy()
    thickness = _thickness(out)
    corners = np.rint(np.asarray(boxes, np.float64).reshape(-1, 4)).astype(int).tolist()
    prefixes = [""] * len(corners) if track_ids is None else [f"#{t} " for t in np.asarray(track_ids).tolist()]
    scores_or_none = [None] * len(corners) if scores is None else np.asarray(scores).tolist()
    for (x1, y1, x2, y2), cls, score, prefix in zip(corners, np.asarray(classes).tolist(), scores_or_none, prefixes):
        cls = int(cls)
        colour = class_colour(cls)[::-1] if bgr else class_colour(cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        text = f"{prefix}{class_name(cls, class_names)}" + ("" if score is None else f" {score:.2f}")
        label = label_patch(text, colour)
        paste(out, label, x1, max(y1 - label.shape[0] + 1, 0))
    return out


def _thickness(image: np.ndarray) -> int:
    return max(1, round(min(image.shape[:2]) / 300))


class Trails:
    """The last `length` box centres of each track, drawn as a polyline in a colour per track id."""

    def __init__(self, length: int = 20):
        self.length = length
        self.frame = 0
        self._points: dict[int, deque] = {}
        self._last_seen: dict[int, int] = {}

    def update(self, track_ids: np.ndarray, boxes: np.ndarray) -> None:
        """Add one frame: track ids int [N] and their boxes float [N, 4] "xyxy" pixels."""
        self.frame += 1
        centres = np.rint((boxes[:, :2] + boxes[:, 2:]) / 2).astype(int).tolist() if len(boxes) else []
        for track_id, centre in zip(np.asarray(track_ids).tolist(), centres):
            self._points.setdefault(track_id, deque(maxlen=self.length)).append(centre)
            self._last_seen[track_id] = self.frame
        for track_id in [t for t, seen in self._last_seen.items() if self.frame - seen >= self.length]:
            del self._points[track_id], self._last_seen[track_id]  # a trail fades with the track

    def draw(self, image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
        """Draw every trail on `image` (uint8 RGB, or BGR) in place; returns it."""
        for track_id, points in self._points.items():
            if len(points) > 1:
                colour = class_colour(track_id)[::-1] if bgr else class_colour(track_id)
                cv2.polylines(image, [np.array(points, np.int32)], False, colour, _thickness(image), cv2.LINE_AA)
        return image


def letterbox(image: np.ndarray, size: int, fill: int = 128) -> np.ndarray:
    """uint8 [size, size, 3]: `image` scaled to fit (its aspect ratio kept), centred on grey `fill`."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    out = np.full((size, size, 3), fill, np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return out


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], size: int) -> np.ndarray:
    """uint8 [size, len(panels) * size, 3]: each (title, image) letterboxed to size x size, titled, in a row."""
    row = []
    for title, image in panels:
        panel = letterbox(image, size)
        paste(panel, label_patch(title, (255, 255, 255)), 0, 0)
        row.append(panel)
    return np.concatenate(row, axis=1)
