"""Detection over image files with any detection callable (`ssd.detections.DetectFn`).

Inputs are files, directories, globs (`expand_inputs` also sorts out the videos for
`ssd.deploy.video`). Consecutive images of the same size share one call; each image gets a JSON
line {"image", "width", "height", "detections"} with the records of
`ssd.detections.ImageDetections.records`, and optionally an annotated copy.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
from tqdm import tqdm

from ssd.detections import DetectFn, ImageDetections, select_detections
from ssd.image_io import read_rgb
from ssd.visualize import draw_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[Path], list[str]]:
    """Image files, directories (their images, sorted), globs and video files -> (images, videos, errors)."""
    images: list[Path] = []
    videos: list[Path] = []
    errors: list[str] = []
    for item in inputs:
        if glob.has_magic(item):
            paths = sorted(Path(p) for p in glob.glob(item))
            if not paths:
                errors.append(f"input {item}: the pattern matches no file")
        elif Path(item).is_dir():
            paths = sorted(p for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not paths:
                errors.append(f"input {item}: the directory holds no image or video file")
        elif Path(item).exists():
            paths = [Path(item)]
        else:
            errors.append(f"input {item} does not exist")
            paths = []
        for path in paths:
            (videos if path.suffix.lower() in VIDEO_SUFFIXES else images).append(path)
    return images, videos, errors


@dataclass
class ImageReport:
    """What `detect_images` did: images done, their detections, per-file errors."""

    done: int = 0
    detections: int = 0
    errors: list[str] = field(default_factory=list)


def detect_images(
    paths: Sequence[Path],
    detect: DetectFn,
    out_dir: Path | None,
    jsonl: TextIO,
    class_names: Sequence[str],
    threshold: float,
    batch_size: int = 1,
    progress: bool = True,
) -> ImageReport:
    """Detect on each image; write `out_dir/<name>` annotated (if out_dir) and a JSON line per image.

    Consecutive images of the same size share a graph call (up to `batch_size`); an unreadable
    image gets an error line (JSON {"image", "error"}) and the others go on.
    """
    report = ImageReport()
    for batch in tqdm(list(_same_size_batches(paths, batch_size, report, jsonl)),
                      desc="images", unit="batch", disable=not progress):
        outputs = detect(np.stack([image for _, image in batch]))
        for i, (path, image) in enumerate(batch):
            height, width = image.shape[:2]
            detections = select_detections(outputs, i, width, height, threshold)
            jsonl.write(json.dumps({"image": str(path), "width": width, "height": height,
                                    "detections": detections.records(class_names)}) + "\n")
            report.done += 1
            report.detections += len(detections.scores)
            if out_dir is not None:
                _write_image(out_dir / path.name, draw(image, detections, class_names), report, path)
    return report


def _same_size_batches(
    paths: Sequence[Path], batch_size: int, report: ImageReport, jsonl: TextIO
) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images grouped into runs of equal shape, at most `batch_size` each."""
    batch: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            image = read_rgb(path)
        except ValueError as err:
            report.errors.append(str(err))
            jsonl.write(json.dumps({"image": str(path), "error": str(err)}) + "\n")
            continue
        if batch and (len(batch) == batch_size or batch[0][1].shape != image.shape):
            yield batch
            batch = []
        batch.append((path, image))
    if batch:
        yield batch


def _write_image(path: Path, image_rgb: np.ndarray, report: ImageReport, source: Path) -> None:
    if path.resolve() == source.resolve():
        report.errors.append(f"not overwriting input image {source} with its annotated copy: choose another --out")
    elif not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        report.errors.append(f"could not write annotated image {path}")


def draw(image: np.ndarray, detections: ImageDetections, class_names: Sequence[str],
         *, bgr: bool = False, in_place: bool = False) -> np.ndarray:
    """`image` (uint8 RGB, or BGR) with the detections' boxes, class colours, labels and scores drawn."""
    return draw_detections(image, detections.boxes_xyxy, detections.class_ids, detections.scores, class_names,
                           bgr=bgr, in_place=in_place)
