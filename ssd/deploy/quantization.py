"""Post-training INT8: the calibration images (drawn from a training split, recorded beside the model)
and the accuracy check that compares an INT8 export's VOC07 mAP with its fp32 twin's.

    out_dir/calibration.json   {"data_root", "splits", "seed", "num_images", "image_ids": [...]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssd.deploy.runtimes import load_detector
from ssd.evaluation.loop import evaluate_detector
from ssd.evaluation.voc import VOCEvaluator
from ssd.image_io import read_rgb, resize_rgb
from ssd.records import DetectionDataset, Sample

CALIBRATION_FILE = "calibration.json"


def draw_calibration(dataset: DetectionDataset, count: int, seed: int = 0) -> list[Sample]:
    """`count` samples drawn without replacement (all when the split is smaller), in dataset order."""
    if count < 1:
        raise ValueError(f"calibration images must be >= 1, got {count}")
    if len(dataset) == 0:
        raise ValueError("the calibration split has no images")
    picked = np.random.default_rng(seed).choice(len(dataset), size=min(count, len(dataset)), replace=False)
    return [dataset.samples[i] for i in sorted(picked)]


def calibration_images(samples: Sequence[Sample], size: int) -> list[np.ndarray]:
    """The samples' images as uint8 RGB [size, size, 3], warped as training and evaluation resize."""
    return [resize_rgb(read_rgb(s.image_path), size, size) for s in samples]


def write_calibration_record(path: str | Path, samples: Sequence[Sample], data_root: str,
                             splits: Sequence[str], seed: int) -> Path:
    """Record which images calibrated the INT8 models (JSON beside them)."""
    path = Path(path)
    record = {"data_root": str(data_root), "splits": list(splits), "seed": seed, "num_images": len(samples),
              "image_ids": [s.image_id for s in samples]}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def compare_map(models: dict[str, Path], dataset: DetectionDataset, image_size: int, batch_size: int = 8,
                progress: bool = False) -> dict[str, float | None]:
    """VOC07 11-point mAP (all detections, IoU 0.5) of each exported model on `dataset`, by label."""
    evaluator = VOCEvaluator(dataset.class_names, (0.0,), 0.5)
    return {label: evaluate_detector(load_detector(path), dataset, image_size, batch_size, evaluator,
                                     progress=progress)["map_voc07"][0]
            for label, path in models.items()}
