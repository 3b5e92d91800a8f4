"""The training recipe: every training option as one frozen `TrainConfig`, and the paper's recipes.

TensorFlow-free, so a command can build its parser from these choices without loading TensorFlow.
The defaults are the paper's recipe for SSD300 on VOC07+12 (the Caffe release's solver).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ssd.config import EVAL_METRICS, json_tuples
from ssd.records import DATA_FORMATS

OPTIMIZERS = ("sgd", "adam")
# Training recipes: the TrainConfig values each one sets (flags given on the command line win).
# COCO: the Caffe release's (400k iterations, x0.1 at 280k and 360k), on COCO 2017 train/val.
RECIPES: dict[str, dict[str, Any]] = {
    "voc": {"iterations": 120_000, "boundaries": (80_000, 100_000)},
    "coco": {"iterations": 400_000, "boundaries": (280_000, 360_000), "data_format": "coco",
             "train_splits": ("train2017",), "val_splits": ("val2017",), "eval_metric": "coco"},
}
PRECISIONS = ("float32", "bfloat16", "float16")
SCHEDULES = ("constant", "step", "exponential", "polynomial", "cosine", "cyclic")
# auto: multi_worker when TF_CONFIG is set, mirrored over several GPUs, else one device.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; the defaults are the paper's recipe for SSD300 on VOC07+12."""

    data_root: str = "VOCdevkit"  # a folder or file: any export `ssd_datasets.exports` recognises
    # Empty: the export's own (a VOCdevkit: VOC2007+2012 trainval, VOC2007 test); filled in with
    # the splits chosen when a run starts, so config.json says what it trained on.
    train_splits: tuple[str, ...] = ()
    val_splits: tuple[str, ...] = ()
    val_fraction: float | None = None  # of a one-split export, held out for validation (seeded by `seed`)
    image_dir: str | None = None  # COCO: the folder every file_name is relative to (default: looked up)
    include_difficult: bool = True
    strict: bool = False  # refuse bad annotations and undecodable images instead of skipping them
    expand_probability: float = 0.5
    vgg16_weights: str | None = None
    from_scratch: bool = False
    batch_size: int = 32
    iterations: int = 120_000
    epochs: int | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    learning_rate: float = 1e-3
    schedule: str = "step"
    boundaries: tuple[int, ...] = (80_000, 100_000)
    decay: float = 0.1
    power: float = 0.9
    min_learning_rate: float = 0.0
    cycle_steps: int = 2000
    warmup_steps: int = 0
    weight_decay: float = 5e-4
    # Caffe's recipe: biases at 2x the rate and never decayed (lr_mult 2, decay_mult 0); the
    # conv4_3_norm scales at 1x and decayed like kernels (model_libs.py gives Normalize no param).
    bias_lr_multiplier: float = 2.0
    decay_l2_scales: bool = True
    adam_epsilon: float = 1e-7
    init_from: str | None = None
    init_classes: tuple[str, ...] | None = None
    workers: int = 2
    seed: int = 0
    mixed_precision: str = "float32"
    xla: bool = False
    eval_every: int = 1
    eval_confidences: tuple[float, ...] = (0.01, 0.1, 0.3, 0.5)
    checkpoint_every: int = 1000
    max_boxes: int = 100
    data_format: str | None = None  # None: recognised from the data root's layout
    eval_metric: str = "voc07"  # the validation number best/ is kept by

    def __post_init__(self) -> None:
        if self.eval_metric not in EVAL_METRICS:
            raise ValueError(f"TrainConfig.eval_metric must be one of {EVAL_METRICS}, got {self.eval_metric!r}")
        if self.data_format is not None and self.data_format not in DATA_FORMATS:
            raise ValueError(f"TrainConfig.data_format must be one of {DATA_FORMATS} or None, got {self.data_format!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        for name in ("batch_size", "iterations", "checkpoint_every", "max_boxes", "workers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"TrainConfig.epochs must be positive or None, got {self.epochs}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ValueError(f"TrainConfig.val_fraction must be between 0 and 1, got {self.val_fraction}")
        for name in ("bias_lr_multiplier", "adam_epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.init_classes is not None and not self.init_from:
            raise ValueError("TrainConfig.init_classes needs init_from (the run whose classes they name)")

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.epochs * steps_per_epoch if self.epochs else self.iterations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not data:  # a run directory made by a converter, not by training: the defaults
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown options {sorted(unknown)}")
        return cls(**{**_TRAINED_BEFORE_RECIPE, **{k: json_tuples(v) for k, v in data.items()}})


# What a config.json written before these options existed was trained with: it resumes unchanged.
_TRAINED_BEFORE_RECIPE: dict[str, Any] = {"bias_lr_multiplier": 1.0, "decay_l2_scales": False}
