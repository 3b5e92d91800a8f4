"""Reduced precision with an accuracy check: the INT8 calibration images (drawn from a training split,
recorded beside the model), the validation split the checks run on, and running the checks.

    out_dir/calibration.json   {"data_root", "splits", "seed", "num_images", "image_ids": [...]}

The checks (`ssd.deploy.accuracy_checks`) measure a reduced-precision model (OpenVINO INT8, or the
IR compiled at bf16) against the fp32 IR on the run's validation split, in points of the run's
metric (100 x VOC07 / VOC10 mAP or COCO AP@[.5:.95], every detection the graph returns).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssd.deploy.accuracy_checks import METRIC_NAMES, AccuracyCheck, record_accuracy_checks
from ssd.deploy.runtimes import IR_FILE, IR_INT8_FILE, cpu_has_bf16, load_detector
from ssd.deploy.timing import interleaved_rates
from ssd.detections import DetectFn
from ssd.evaluation.loop import evaluate_detector, load_resized_batch
from ssd.evaluation.metrics import headline, make_evaluator
from ssd.evaluation.voc import VOCEvaluator
from ssd.image_io import read_rgb, resize_rgb
from ssd.records import DetectionDataset, Sample

CALIBRATION_FILE = "calibration.json"
TIMED_IMAGES, TIMED_BATCH, TIMED_ROUNDS = 16, 8, 3  # the speed an INT8 check reports: medians of rounds


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


class ValidationSet:
    """A validation split scored in points of `metric`; images are read for each pass (a VOC07-test-sized
    split held in memory would take 1.3 GB at 300 x 300), warped to the model's input size."""

    def __init__(self, dataset: DetectionDataset, image_size: int, metric: str = "voc07",
                 splits: Sequence[str] = (), batch_size: int = 8):
        if metric not in METRIC_NAMES:
            raise ValueError(f"metric must be one of {tuple(METRIC_NAMES)}, got {metric!r}")
        if not any(len(sample.labels) for sample in dataset.samples):
            raise ValueError(f"the validation split {','.join(splits)} has no ground truth ({len(dataset)} images): "
                             "an accuracy check needs annotated images")
        self.dataset, self.image_size, self.metric = dataset, image_size, metric
        self.splits, self.batch_size = tuple(splits), batch_size

    def __len__(self) -> int:
        return len(self.dataset)

    def images(self, count: int) -> np.ndarray:
        """The first `count` images, uint8 [count, S, S, 3] RGB (for timing)."""
        return load_resized_batch(list(self.dataset.samples[:count]), (self.image_size, self.image_size))[1]

    def score(self, detect: DetectFn, samples: Iterable[Sample] | None = None) -> float:
        """The metric of `detect` on `samples` (default: the whole split), in points; 0 without ground truth."""
        dataset = self.dataset if samples is None else DetectionDataset(
            self.dataset.class_names, tuple(samples), self.dataset.category_ids)
        evaluator = make_evaluator([self.metric], dataset.class_names, (0.0,), dataset.category_ids)
        results = evaluate_detector(detect, dataset, self.image_size, self.batch_size, evaluator, progress=False)
        return 100 * headline(results, self.metric)


def check_reduced_precisions(export_dir: str | Path, calibration: Sequence[np.ndarray] | None,
                             validation: ValidationSet, max_drop: float) -> list[AccuracyCheck]:
    """Check the export's OpenVINO IR at bf16 (where the CPU has it) and, with `calibration`, make its
    INT8 model with NNCF's accuracy control; record the checks in export.json and return them.

    An INT8 model that misses `max_drop` is removed from the export: the float model stays the
    default. NNCF starts from the same quantization as the plain INT8 model `export_run` wrote
    (model_int8.xml), which is measured beside it for the drop and the speed, then removed.
    """
    if not np.isfinite(max_drop):
        raise ValueError(f"max_drop must be a finite number of points, got {max_drop}")
    export_dir = Path(export_dir)
    ir = export_dir / IR_FILE
    if not ir.is_file():
        raise FileNotFoundError(f"an accuracy check needs the OpenVINO IR {ir}; export with --format openvino")
    fp32 = validation.score(load_detector(ir))
    checks = []
    if cpu_has_bf16():
        value = validation.score(load_detector(ir, "bf16"))
        checks.append(_check(validation, fp32, max_drop, IR_FILE, "bf16", value))
    if calibration is not None:
        checks.append(_checked_int8(ir, export_dir / IR_INT8_FILE, calibration, validation, fp32, max_drop))
    record_accuracy_checks(export_dir, checks)
    return checks


def _check(validation: ValidationSet, fp32: float, max_drop: float, model: str, precision: str, value: float,
           met: bool = True, **details: Any) -> AccuracyCheck:
    return AccuracyCheck(model, precision, validation.metric, validation.splits, len(validation), fp32, value,
                         max_drop, met and fp32 - value <= max_drop, details)


def _checked_int8(ir: Path, path: Path, calibration: Sequence[np.ndarray], validation: ValidationSet,
                  fp32: float, max_drop: float) -> AccuracyCheck:
    """NNCF's accuracy control from the fp32 IR; the plain INT8 model at `path` is measured and replaced."""
    from ssd.deploy.openvino_export import float_operations, write_accuracy_controlled_ir

    plain = path.with_name(path.stem + "_plain.xml")
    for suffix in (".xml", ".bin"):
        path.with_suffix(suffix).replace(plain.with_suffix(suffix))
    write_accuracy_controlled_ir(ir, path, calibration, validation.dataset.samples, validation.score, max_drop)
    models = {"fp32": load_detector(ir), "plain_int8": load_detector(plain), "int8": load_detector(path)}
    rates = interleaved_rates(models, validation.images(TIMED_IMAGES), TIMED_BATCH, TIMED_ROUNDS)
    in_float = float_operations(path)
    quantized = len(float_operations(ir)) - len(in_float)
    result = _check(validation, fp32, max_drop, IR_INT8_FILE, "int8", validation.score(models["int8"]),
                    quantized > 0, plain_int8=validation.score(models["plain_int8"]),
                    kept_float=sorted(in_float - float_operations(plain)), quantized_operations=quantized,
                    images_per_second=rates, timing=f"batch {TIMED_BATCH}, {TIMED_IMAGES} validation images, "
                                                   f"median of {TIMED_ROUNDS} rounds")
    for suffix in (".xml", ".bin"):
        plain.with_suffix(suffix).unlink()
        if not result.met:  # the float model stays the default: no INT8 model outside its bound
            path.with_suffix(suffix).unlink()
    return result
