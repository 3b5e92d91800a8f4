"""Detection over image files with any detection callable (`ssd.detections.DetectFn`).

Inputs are files, directories, globs (`expand_inputs` also sorts out the videos for
`ssd.deploy.video`). Consecutive images of the same size share one call; each image gets a JSON
line {"image", "width", "height", "detections"} with the records of
`ssd.detections.ImageDetections.records`, and optionally an annotated copy.
"""

from __future__ import annotations

import glob
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
from tqdm import tqdm

from ssd.detections import DetectFn, ImageDetections, select_detections
from ssd.image_header import DEFAULT_MAX_PIXELS, check_pixels, image_size, regular_file_problem
from ssd.image_io import read_rgb
from ssd.visualize import draw_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # the formats whose size is checked before decoding
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[Path], list[str]]:
    """Image files, directories (their images, sorted), globs and video files -> (images, videos, errors).

    Anything that is not a regular file (a FIFO, a link to a device) is an error naming it: reading
    it would block or never end.
    """
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
            problem = regular_file_problem(path)
            if problem:
                errors.append(f"input {path} {problem}")
            else:
                (videos if path.suffix.lower() in VIDEO_SUFFIXES else images).append(path)
    return images, videos, errors


@dataclass
class ImageReport:
    """What `detect_images` did: images done, their detections, per-file errors."""

    done: int = 0
    detections: int = 0
    errors: list[str] = field(default_factory=list)
    unnamed_classes: set[int] = field(default_factory=set)  # class ids detected that have no name


def detect_images(
    paths: Sequence[Path],
    detect: DetectFn,
    out_dir: Path | None,
    jsonl: TextIO,
    class_names: Sequence[str],
    threshold: float,
    batch_size: int = 1,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageReport:
    """Detect on each image; write `out_dir/<name>` annotated (if out_dir) and a JSON line per image.

    Images are decoded as they are needed (at most one batch is held), consecutive images of the
    same size sharing a graph call (up to `batch_size`). An unreadable image, or one whose header
    declares more than `max_pixels` (refused before decoding), gets an error line (JSON
    {"image", "error"}) and the others go on.
    """
    report = ImageReport()
    bar = tqdm(total=len(paths), desc="images", unit="image", disable=not progress)
    for batch in _same_size_batches(paths, batch_size, max_pixels, report, jsonl, bar):
        outputs = detect(np.stack([image for _, image in batch]))
        for i, (path, image) in enumerate(batch):
            height, width = image.shape[:2]
            detections = select_detections(outputs, i, width, height, threshold)
            jsonl.write(json.dumps({"image": str(path), "width": width, "height": height,
                                    "detections": detections.records(class_names)}) + "\n")
            report.done += 1
            report.detections += len(detections.scores)
            note_unnamed(report.unnamed_classes, detections, class_names)
            if out_dir is not None:
                _write_image(out_dir / path.name, draw(image, detections, class_names), report, path)
        bar.update(len(batch))
    bar.close()
    return report


def read_checked(path: Path, max_pixels: int) -> np.ndarray:
    """uint8 RGB of the image at `path`, its declared size checked against `max_pixels` first."""
    width, height = image_size(path)
    check_pixels(width, height, max_pixels, f"image file {path}")
    try:
        return read_rgb(path)
    except cv2.error as err:  # OpenCV's own limits and assertions: name the file, not the C++ line
        raise ValueError(f"image file {path} cannot be decoded: {err.err or err}") from None


def _same_size_batches(
    paths: Sequence[Path], batch_size: int, max_pixels: int, report: ImageReport, jsonl: TextIO, bar: tqdm
) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Images decoded one at a time, grouped into runs of equal shape, at most `batch_size` each."""
    batch: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            image = read_checked(path, max_pixels)
        except ValueError as err:
            report.errors.append(str(err))
            jsonl.write(json.dumps({"image": str(path), "error": str(err)}) + "\n")
            bar.update(1)
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
        return
    try:
        written = cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    except cv2.error:
        written = False
    if not written:  # a full disk leaves a partial file behind: remove it
        path.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        report.errors.append(f"could not write annotated image {path} ({free / 2**20:.0f} MB free on that disk; "
                             f"the partial file was removed)")


def note_unnamed(unnamed: set[int], detections: ImageDetections, class_names: Sequence[str]) -> None:
    """Add to `unnamed` the detected class ids that `class_names` (labels.txt) has no name for."""
    if len(detections.class_ids) and detections.class_ids.max() > len(class_names):
        unnamed.update(int(c) for c in detections.class_ids if c > len(class_names))


def draw(image: np.ndarray, detections: ImageDetections, class_names: Sequence[str],
         *, bgr: bool = False, in_place: bool = False) -> np.ndarray:
    """`image` (uint8 RGB, or BGR) with the detections' boxes, class colours, labels, scores (and track ids) drawn."""
    return draw_detections(image, detections.boxes_xyxy, detections.class_ids, detections.scores, class_names,
                           bgr=bgr, in_place=in_place, track_ids=detections.track_ids)
