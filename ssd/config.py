"""Frozen configuration objects: default boxes and the model preset, JSON in and out.

The training recipe (`TrainConfig`) is the trainer's: `ssd.engine.recipe`.

Sizes in a `DefaultBoxConfig` are in input pixels (as in the Caffe prototxt); the boxes built
from it are normalised to [0, 1]. Aspect ratio is width / height everywhere in the library.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Input means in uint8 pixel units, BGR (the order the VGG weights were trained on); the network
# subtracts its ModelConfig.mean_bgr in its graph.
# The SSD references' (Caffe ssd_pascal.py, ssd.pytorch): the default of a new model.
SSD_MEAN_BGR = (104.0, 117.0, 123.0)
# The Caffe VGG-16 ImageNet mean (the Keras VGG-16 file's): the augmentation fills expanded
# canvases with it, and run directories written before the mean was part of ModelConfig were
# trained with it, so a config.json without "mean_bgr" loads with it.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def json_tuples(value: Any) -> Any:
    """Lists from JSON become tuples, recursively, so configs stay hashable and comparable."""
    if isinstance(value, (list, tuple)):
        return tuple(json_tuples(v) for v in value)
    return value


@dataclass(frozen=True)
class DefaultBoxConfig:
    """Default boxes of one SSD input size, one entry per source feature map.

    Each location of map k gets a box of side `min_sizes[k]`, one of side
    `sqrt(min_sizes[k] * max_sizes[k])`, then a (r, 1/r) pair for each ratio r in
    `aspect_ratios[k]` (width / height), all centred at ((j + 0.5) * step, (i + 0.5) * step).
    """

    image_size: int
    feature_map_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    clip: bool = False

    def __post_init__(self) -> None:
        n = len(self.feature_map_sizes)
        for name in ("steps", "min_sizes", "max_sizes", "aspect_ratios"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"DefaultBoxConfig.{name} needs one entry per feature map ({n}), "
                    f"got {len(getattr(self, name))}: {getattr(self, name)!r}"
                )
        if self.image_size <= 0:
            raise ValueError(f"DefaultBoxConfig.image_size must be positive, got {self.image_size}")
        for k, (lo, hi) in enumerate(zip(self.min_sizes, self.max_sizes)):
            if not 0 < lo <= hi:
                raise ValueError(
                    f"DefaultBoxConfig.min_sizes/max_sizes[{k}]: need 0 < min <= max, got {lo}, {hi}"
                )
        for k, ratios in enumerate(self.aspect_ratios):
            if any(r <= 0 or r == 1 for r in ratios):
                raise ValueError(
                    f"DefaultBoxConfig.aspect_ratios[{k}] lists extra ratios (not 1, all > 0), "
                    f"got {ratios!r}"
                )
        if len(self.variances) != 4 or any(v <= 0 for v in self.variances):
            raise ValueError(f"DefaultBoxConfig.variances must be 4 positive numbers, got {self.variances!r}")

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    @property
    def num_boxes(self) -> int:
        return sum(s * s * k for s, k in zip(self.feature_map_sizes, self.boxes_per_location))

    @classmethod
    def linear_scale(
        cls,
        image_size: int,
        feature_map_sizes: tuple[int, ...],
        steps: tuple[float, ...],
        aspect_ratios: tuple[tuple[float, ...], ...],
        s_min: float = 0.2,
        s_max: float = 0.9,
    ) -> "DefaultBoxConfig":
        """The paper's linear scales s_k = s_min + (s_max - s_min)(k - 1)/(m - 1), k = 1..m.

        The extra square box of map k uses sqrt(s_k * s_{k+1}); s_{m+1} continues the line.
        """
        m = len(feature_map_sizes)
        if m < 2:
            raise ValueError(f"linear_scale needs at least 2 feature maps, got {m}")
        gap = (s_max - s_min) / (m - 1)
        scales = [s_min + gap * k for k in range(m + 1)]
        return cls(
            image_size=image_size,
            feature_map_sizes=tuple(feature_map_sizes),
            steps=tuple(steps),
            min_sizes=tuple(s * image_size for s in scales[:-1]),
            max_sizes=tuple(s * image_size for s in scales[1:]),
            aspect_ratios=json_tuples(aspect_ratios),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DefaultBoxConfig":
        return cls(**{k: json_tuples(v) for k, v in data.items()})


# The Caffe release's configurations (ssd_pascal.py / ssd_pascal_512.py).
DEFAULT_BOXES: dict[str, DefaultBoxConfig] = {
    "vgg300": DefaultBoxConfig(
        image_size=300,
        feature_map_sizes=(38, 19, 10, 5, 3, 1),
        steps=(8, 16, 32, 64, 100, 300),
        min_sizes=(30, 60, 111, 162, 213, 264),
        max_sizes=(60, 111, 162, 213, 264, 315),
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    ),
    "vgg512": DefaultBoxConfig(
        image_size=512,
        feature_map_sizes=(64, 32, 16, 8, 4, 2, 1),
        steps=(8, 16, 32, 64, 128, 256, 512),
        min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
        max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    ),
}

PRESETS = tuple(DEFAULT_BOXES)

# The Caffe release's COCO default boxes (ssd_coco.py: min_ratio 15 at 300, 10 at 512, max 90,
# smaller first level), same maps, steps and ratios as the VOC ones.
COCO_DEFAULT_BOXES: dict[str, DefaultBoxConfig] = {
    "vgg300": dataclasses.replace(DEFAULT_BOXES["vgg300"], min_sizes=(21, 45, 99, 153, 207, 261),
                                  max_sizes=(45, 99, 153, 207, 261, 315)),
    "vgg512": dataclasses.replace(DEFAULT_BOXES["vgg512"],
                                  min_sizes=(20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8),
                                  max_sizes=(51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72)),
}
BOX_SETS: dict[str, dict[str, DefaultBoxConfig]] = {"voc": DEFAULT_BOXES, "coco": COCO_DEFAULT_BOXES}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: preset, classes, width, default boxes, input mean.

    `class_names` are the dataset's classes in order; they get ids 1..C, id 0 is background.
    `boxes` names the default-box set ("voc" or "coco", `BOX_SETS`) `default_boxes` starts from.
    `category_ids` are the dataset's own id of each class (COCO's, with gaps), for COCO results.
    `mean_bgr` is subtracted from the BGR input pixels (see `ssd.modeling.model.CaffePreprocess`).
    """

    preset: str
    class_names: tuple[str, ...]
    width: float = 1.0
    default_boxes: DefaultBoxConfig | None = None
    boxes: str = "voc"
    category_ids: tuple[int, ...] | None = None
    mean_bgr: tuple[float, float, float] = SSD_MEAN_BGR

    def __post_init__(self) -> None:
        if self.preset not in DEFAULT_BOXES:
            raise ValueError(f"ModelConfig.preset must be one of {PRESETS}, got {self.preset!r}")
        if not self.class_names:
            raise ValueError("ModelConfig.class_names must name at least one class")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"ModelConfig.class_names has duplicates: {self.class_names!r}")
        if not (0 < self.width and math.isfinite(self.width)):
            raise ValueError(f"ModelConfig.width must be a positive number, got {self.width!r}")
        if self.boxes not in BOX_SETS:
            raise ValueError(f"ModelConfig.boxes must be one of {tuple(BOX_SETS)}, got {self.boxes!r}")
        if self.category_ids is not None and (len(self.category_ids) != len(self.class_names)
                                              or len(set(self.category_ids)) != len(self.category_ids)):
            raise ValueError(f"ModelConfig.category_ids needs one unique id per class ({len(self.class_names)}), "
                             f"got {self.category_ids!r}")
        mean = tuple(float(m) for m in self.mean_bgr)
        if len(mean) != 3 or not all(math.isfinite(m) for m in mean):
            raise ValueError(f"ModelConfig.mean_bgr must be 3 finite numbers (B, G, R), got {self.mean_bgr!r}")
        object.__setattr__(self, "mean_bgr", mean)
        if self.default_boxes is None:
            object.__setattr__(self, "default_boxes", BOX_SETS[self.boxes][self.preset])
        expected = DEFAULT_BOXES[self.preset].feature_map_sizes
        if self.default_boxes.feature_map_sizes != expected:
            raise ValueError(
                f"ModelConfig: preset {self.preset!r} has source maps {expected}, "
                f"default boxes are for {self.default_boxes.feature_map_sizes}"
            )

    @property
    def num_classes(self) -> int:
        """Number of model outputs per box: the dataset's classes plus background."""
        return len(self.class_names) + 1

    @property
    def image_size(self) -> int:
        return self.default_boxes.image_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "class_names": list(self.class_names),
            "width": self.width,
            "default_boxes": self.default_boxes.to_dict(),
            "boxes": self.boxes,
            "category_ids": None if self.category_ids is None else list(self.category_ids),
            "mean_bgr": list(self.mean_bgr),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return cls(
            preset=data["preset"],
            class_names=tuple(data["class_names"]),
            width=float(data.get("width", 1.0)),
            default_boxes=DefaultBoxConfig.from_dict(data["default_boxes"]),
            boxes=data.get("boxes", "voc"),  # configs written before COCO support
            category_ids=json_tuples(data.get("category_ids")),
            mean_bgr=tuple(data.get("mean_bgr", CAFFE_BGR_MEAN)),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist")
        return cls.from_dict(json.loads(path.read_text()))


EVAL_METRICS = ("voc07", "voc10", "coco")
# Files a base-weights path may name, by suffix: the Keras VGG-16 file, the fc-reduced Caffe and
# ssd.pytorch bases (read by ssd.modeling.convert.convert.load_base_weights).
KERAS_SUFFIXES, CAFFE_SUFFIXES, TORCH_SUFFIXES = (".h5", ".hdf5"), (".caffemodel",), (".pth", ".pt")
BASE_WEIGHT_SUFFIXES = KERAS_SUFFIXES + CAFFE_SUFFIXES + TORCH_SUFFIXES
