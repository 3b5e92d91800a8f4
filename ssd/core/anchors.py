"""Default boxes ("anchors") from a `DefaultBoxConfig`, and `Anchors`: the boxes with their variances.

`Anchors.from_config` is the one place a model's default boxes and variances are built; the train
step, the detector, every exporter and the benchmarks take the value whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd.config import DefaultBoxConfig


@dataclass(frozen=True, eq=False)
class Anchors:
    """A model's default boxes and the variances their offsets are scaled by (`ssd.core.encoding`).

    boxes: float32 [A, 4], "rel_center_xywh", location-major (`default_boxes`).
    variances: 4 positive numbers (cx, cy, w, h), (0.1, 0.1, 0.2, 0.2) for SSD.
    """

    boxes: np.ndarray
    variances: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        boxes = np.array(self.boxes, np.float32)  # a copy: the caller's array stays writeable
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes):
            raise ValueError(f"Anchors.boxes must be [A, 4] \"rel_center_xywh\" with A >= 1, got {boxes.shape}")
        variances = tuple(float(v) for v in self.variances)
        if len(variances) != 4 or any(not v > 0 for v in variances):
            raise ValueError(f"Anchors.variances must be 4 positive numbers, got {self.variances!r}")
        boxes.flags.writeable = False  # shared by every graph built from it
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "variances", variances)

    @classmethod
    def from_config(cls, config: DefaultBoxConfig) -> Anchors:
        """The default boxes of `config` (a `ModelConfig.default_boxes`) with its variances."""
        return cls(default_boxes(config), config.variances)

    def __len__(self) -> int:
        return len(self.boxes)


def box_shapes(config: DefaultBoxConfig, level: int) -> np.ndarray:
    """(w, h) of the boxes at one location of map `level`, normalised, in head-channel order.

    Order: square of side min, square of side sqrt(min * max), then (r, 1/r) per extra ratio r,
    where a ratio r = width / height gives w = min * sqrt(r), h = min / sqrt(r).
    """
    size = config.image_size
    min_size, max_size = config.min_sizes[level], config.max_sizes[level]
    shapes = [(min_size, min_size), (np.sqrt(min_size * max_size),) * 2]
    for ratio in config.aspect_ratios[level]:
        for r in (ratio, 1.0 / ratio):
            shapes.append((min_size * np.sqrt(r), min_size / np.sqrt(r)))
    return np.asarray(shapes, np.float64) / size


def default_boxes(config: DefaultBoxConfig) -> np.ndarray:
    """All default boxes, float32 [A, 4], "rel_center_xywh", location-major.

    For each map, each row i, each column j, each box shape: the order in which a head's
    (H, W, k * 4) output reshapes to (H * W * k, 4).
    """
    per_level = []
    for level, (fmap, step) in enumerate(zip(config.feature_map_sizes, config.steps)):
        centres = (np.arange(fmap, dtype=np.float64) + 0.5) * step / config.image_size
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        shapes = box_shapes(config, level)
        k = len(shapes)
        boxes = np.empty((fmap, fmap, k, 4), np.float64)
        boxes[..., 0] = cx[..., None]
        boxes[..., 1] = cy[..., None]
        boxes[..., 2:] = shapes
        per_level.append(boxes.reshape(-1, 4))
    boxes = np.concatenate(per_level)
    if config.clip:
        corners = np.clip(np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1), 0, 1)
        boxes = np.concatenate([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], 1)
    return boxes.astype(np.float32)
