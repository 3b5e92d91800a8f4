"""One loop that drives any `Evaluator` from a model (any detector callable), and a `VOCEvaluator` from results files."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ssd.detections import DetectFn, detections_to_pixels
from ssd.evaluation.evaluator import Evaluator
from ssd.evaluation.voc import VOCEvaluator
from ssd.image_io import read_rgb, resize_rgb
from ssd.records import DetectionDataset, Sample
from ssd.evaluation.results_files import COMP4_PREFIX, read_results_files


def add_ground_truth(evaluator: VOCEvaluator, dataset: DetectionDataset) -> None:
    """Register every sample's ground truth ("xyxy" pixels) with the evaluator, in dataset order."""
    for sample in dataset.samples:
        evaluator.add_ground_truth(sample.image_id, sample.boxes, sample.labels, sample.difficult)


def evaluate_results_files(
    results_dir: str | Path, dataset: DetectionDataset, evaluator: VOCEvaluator, prefix: str = COMP4_PREFIX
) -> dict[str, Any]:
    """Evaluate comp4 results files (one per class of the dataset) against the dataset's ground truth."""
    _check_classes(evaluator, dataset)
    evaluator.reset()
    add_ground_truth(evaluator, dataset)
    evaluator.add_devkit_detections(*read_results_files(results_dir, dataset.class_names, prefix))
    return evaluator.evaluate()


def evaluate_detector(
    detector: DetectFn,
    dataset: DetectionDataset,
    image_size: int | tuple[int, int] | None,
    batch_size: int,
    evaluator: Evaluator,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `detector` (images at `image_size` -> the detections contract) over the dataset and evaluate.

    Each image is read as RGB and warped to `image_size` (height, width; an int means square), as
    training resizes, or with `image_size=None` fed at its original size (for a detector that
    resizes itself, such as an exported graph: one resize, the graph's own). The detector's
    normalised boxes are scaled back to the decoded image's size. A batch holds up to
    `batch_size` consecutive images of one size. The next batch is read on a thread while
    the detector runs.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"evaluate_detector: batch_size must be >= 1, got {batch_size}")
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    _check_classes(evaluator, dataset)
    evaluator.reset()
    bar = tqdm(total=len(dataset), unit="img", disable=not progress, desc="evaluate")
    for samples, images, sizes in _prefetched_batches(dataset, batch_size, size):
        for run in _same_shape_runs(images):
            _process(evaluator, samples[run], detector(np.stack(images[run])), sizes[run])
        bar.update(len(samples))
    bar.close()
    return evaluator.evaluate()


def _process(evaluator: Evaluator, samples: list[Sample], outputs: dict[str, Any], sizes: np.ndarray) -> None:
    """Hand one detector call's detections, in pixels of each original image, to the evaluator."""
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    boxes = detections_to_pixels(outputs["detection_boxes"], sizes[:, 1], sizes[:, 0])
    for b, sample in enumerate(samples):
        n = int(outputs["num_detections"][b])
        evaluator.process(
            sample.image_id, sample.boxes, sample.labels, sample.difficult,
            boxes[b, :n], outputs["detection_scores"][b, :n], outputs["detection_classes"][b, :n],
        )


def _same_shape_runs(images: Sequence[np.ndarray]) -> list[slice]:
    """Slices of consecutive images of one shape: a detector call takes a [B, H, W, 3] array."""
    starts = [0] + [i for i in range(1, len(images)) if images[i].shape != images[i - 1].shape]
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [len(images)])]


def load_resized_batch(samples: list[Sample], size: tuple[int, int]) -> tuple[list[Sample], np.ndarray, np.ndarray]:
    """The samples, their images warped to `size` (height, width) as uint8 [B, H, W, 3] RGB, and
    each original (height, width) [B, 2]; the one place evaluation and previews read images."""
    samples, images, sizes = load_batch(samples, size)
    return samples, np.stack(images), sizes


def load_batch(
    samples: list[Sample], size: tuple[int, int] | None
) -> tuple[list[Sample], list[np.ndarray], np.ndarray]:
    """The samples, their uint8 RGB images (warped to `size` (height, width), or as decoded with
    None) and each original (height, width) float64 [B, 2]."""
    images, sizes = [], []
    for sample in samples:
        image = read_rgb(sample.image_path)
        sizes.append(image.shape[:2])
        images.append(image if size is None else resize_rgb(image, *size))
    return samples, images, np.asarray(sizes, np.float64)


def _prefetched_batches(
    dataset: DetectionDataset, batch_size: int, size: tuple[int, int] | None
) -> Iterator[tuple[list[Sample], list[np.ndarray], np.ndarray]]:
    """Batches in dataset order, the next one decoded on a worker thread (OpenCV releases the GIL)."""
    batches = [list(dataset.samples[i:i + batch_size]) for i in range(0, len(dataset), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load_batch, batches[0], size) if batches else None
        for k in range(len(batches)):
            current = pending.result()
            pending = pool.submit(load_batch, batches[k + 1], size) if k + 1 < len(batches) else None
            yield current


def _check_classes(evaluator: Evaluator, dataset: DetectionDataset) -> None:
    if tuple(evaluator.class_names) != tuple(dataset.class_names):
        raise ValueError(
            f"evaluator classes {evaluator.class_names} differ from the dataset's {dataset.class_names}"
        )
