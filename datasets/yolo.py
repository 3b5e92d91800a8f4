"""YOLO txt source: `images/` + `labels/` (one `class cx cy w h` line per object) -> `DetectionDataset`.

Layout (Ultralytics / darknet):

    <root>/images/[<split>/]<name>.jpg       any of .jpg .jpeg .png .bmp .webp
    <root>/labels/[<split>/]<name>.txt       `class cx cy w h` per line, class 0-based,
                                             centre and size normalised to [0, 1]
    <root>/data.yaml (`names:`) or <root>/classes.txt (one name per line)

A split is a list file (`train.txt`, or `train` for it; one image path per line, relative to the
root or absolute) or a folder under `images/` (`"train"` for images/train); `""` is images/ itself. An image's
label file is its path with the last `images` folder replaced by `labels` and the suffix by .txt.
Image sizes are read from the image headers (no decoding). Class k becomes label k + 1. Image ids
are the image path relative to images/ without its suffix ("train/000001").

Bad data follows `ssd_datasets.report`: a line with the wrong number of fields, a non-number, a class
out of range or coordinates outside [0, 1] skips the object; boxes crossing the border are
clipped; an image failing `ssd_datasets.image_check` (not a regular file, empty, unreadable header,
over 40 MP, a JPEG without its end marker) or a label file that cannot be read as UTF-8 text (not
a regular file, other bytes) skips the image. An empty or missing label file is an image without
objects (a negative), as in Ultralytics. Class names must pass `ssd.records.class_name_problem`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssd_datasets.image_check import checked_image_size
from ssd_datasets.report import BAD_IMAGE, BAD_OBJECT, BOX_OK, FILE_MISSING, LoadReport, box_problem, check_boxes
from ssd.image_header import names_a_file
from ssd.records import DetectionDataset, Sample, class_name_problem, read_lines, read_text

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DATA_YAML, CLASSES_TXT = "data.yaml", "classes.txt"


def yolo_class_names(root: str | os.PathLike) -> tuple[str, ...]:
    """The names list of <root>/data.yaml, else the lines of <root>/classes.txt."""
    root = Path(root)
    if names_a_file(root / DATA_YAML):
        return parse_yaml_names(root / DATA_YAML)
    if names_a_file(root / CLASSES_TXT):
        names = read_lines(root / CLASSES_TXT, "YOLO class names file")
        if names:
            return _names_or_error(names, root / CLASSES_TXT)
        raise ValueError(f"{root / CLASSES_TXT} names no classes")
    raise FileNotFoundError(f"{root} has neither {DATA_YAML} nor {CLASSES_TXT}: the YOLO classes are unnamed")


def parse_yaml_names(path: str | os.PathLike) -> tuple[str, ...]:
    """`names:` of a data.yaml, in the three forms Ultralytics writes: a flow list
    `names: ['a', 'b']`, a block list (`- a`) or a block mapping (`0: a`, ids 0..C-1 in any order).

    Only this key is read, so no YAML library is needed; other keys are ignored.
    """
    lines = read_text(path, "dataset YAML file").splitlines()
    for k, line in enumerate(lines):
        match = re.match(r"names\s*:\s*(.*)$", line)
        if not match:
            continue
        inline = _strip_comment(match.group(1))
        if inline.startswith("["):
            if not inline.endswith("]"):
                raise ValueError(f"{path}: expected the names list on one line: {line.strip()!r}")
            return _names_or_error([_unquote(v) for v in _split_flow(inline[1:-1])], path)
        if inline:
            raise ValueError(f"{path}: expected a list after 'names:', got {inline!r}")
        return _block_names(lines[k + 1:], path)
    raise ValueError(f"{path} has no 'names:' key")


def _block_names(lines: list[str], path: str | os.PathLike) -> tuple[str, ...]:
    listed, mapped = [], {}
    for line in lines:
        text = _strip_comment(line)
        if not text:
            continue
        if not line[:1].isspace() and not text.startswith("-"):
            break  # the next top-level key
        if text.startswith("-"):
            listed.append(_unquote(text[1:].strip()))
            continue
        key, sep, value = text.partition(":")
        if not sep or not key.strip().isdigit():
            raise ValueError(f"{path}: expected '- name' or 'id: name' under 'names:', got {text!r}")
        mapped[int(key)] = _unquote(value.strip())
    if mapped:
        if sorted(mapped) != list(range(len(mapped))):
            raise ValueError(f"{path}: names ids must be 0..{len(mapped) - 1}, got {sorted(mapped)}")
        listed = [mapped[i] for i in range(len(mapped))]
    return _names_or_error(listed, path)


def _names_or_error(names: list[str], path: str | os.PathLike) -> tuple[str, ...]:
    if not names:
        raise ValueError(f"{path}: 'names' must list the class names, got {names!r}")
    for k, name in enumerate(names):
        problem = class_name_problem(name)
        if problem:
            raise ValueError(f"{path}: class {k}: name {problem}")
    return tuple(names)


def _strip_comment(text: str) -> str:
    return re.sub(r"\s+#.*$|^#.*$", "", text).strip()


def _split_flow(text: str) -> list[str]:
    """Items of a flow list body, commas inside quotes kept."""
    return [m.group(0).strip() for m in re.finditer(r"""'[^']*'|"[^"]*"|[^,]+""", text) if m.group(0).strip()]


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def split_images(root: Path, split: str) -> list[Path]:
    """The images of a split: the lines of a list file, or the image files of images/<split>, sorted."""
    for list_file in (root / split, root / f"{split}.txt") if split else ():
        if names_a_file(list_file):
            return [Path(e) if os.path.isabs(e) else root / e for e in read_lines(list_file, "image list file")]
    folder = root / "images" / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"YOLO split {split!r}: neither a list file {root / split}[.txt] nor a folder {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def label_path(image: Path) -> Path:
    """images/…/x.jpg -> labels/…/x.txt (the last `images` folder of the path)."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts).with_suffix(".txt")
    raise ValueError(f"image {image} is not inside an 'images' folder, so it has no YOLO label file")


def _image_id(root: Path, image: Path) -> str:
    try:
        relative = image.relative_to(root / "images")
    except ValueError:
        relative = Path(os.path.relpath(image, root))
    return relative.with_suffix("").as_posix()


def _label_text(path: Path) -> str:
    """The label file's text ("" if it does not exist); ValueError naming it if it cannot be read as UTF-8."""
    try:
        return read_text(path, "label file")
    except FileNotFoundError:
        return ""


def _read_labels(text: str, path: Path, num_classes: int, report: LoadReport
                 ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Classes int [N] (0-based), float64 [N, 4] normalised (cx, cy, w, h) and line numbers of the
    sound lines of the label file `path`."""
    classes, boxes, numbers = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        problem = None
        if len(fields) != 5:
            problem = f"expected 'class cx cy w h', got {len(fields)} fields"
        else:
            try:
                cls, values = int(fields[0]), [float(v) for v in fields[1:]]
            except ValueError:
                problem = "class must be an integer and cx cy w h numbers"
            else:
                if not 0 <= cls < num_classes:
                    problem = f"class {cls} is not in 0..{num_classes - 1}"
                elif not all(0.0 <= v <= 1.0 for v in values):
                    problem = f"cx cy w h must be normalised to [0, 1], got {values}"
        if problem:
            report.issue(str(path), f"line {number} {line.strip()!r}: {problem}", "skipped object", BAD_OBJECT)
            continue
        classes.append(cls)
        boxes.append(values)
        numbers.append(number)
    return np.array(classes, np.int64), np.array(boxes, np.float64).reshape(-1, 4), numbers


def _sample(root: Path, image: Path, num_classes: int, report: LoadReport) -> Sample | None:
    if not os.path.exists(image):
        report.issue(str(image), f"image {image} is missing", "skipped file", FILE_MISSING)
        return None
    labels_file = label_path(image)
    try:
        width, height = checked_image_size(image)
        text = _label_text(labels_file)
    except ValueError as err:
        report.issue(str(image), str(err), "skipped file", BAD_IMAGE)
        return None
    classes, cxcywh, line_numbers = _read_labels(text, labels_file, num_classes, report)
    scale = np.array([width, height, width, height], np.float64)
    corners = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
    boxes, status = check_boxes(corners * scale, np.full(len(corners), width), np.full(len(corners), height))
    for k in np.flatnonzero(status != BOX_OK):
        problem, action, kind = box_problem(int(status[k]), f"cxcywh={cxcywh[k].tolist()}", width, height)
        report.issue(str(labels_file), f"line {line_numbers[k]}: {problem}", action, kind)
    keep = status <= 1  # ok or clipped
    return Sample(_image_id(root, image), str(image), width, height, boxes[keep],
                  (classes[keep] + 1).astype(np.int32), np.zeros(int(keep.sum()), bool))


def load_yolo_with_report(root: str | os.PathLike, splits: Sequence[str], class_names: Sequence[str] | None = None,
                          strict: bool = False) -> tuple[DetectionDataset, LoadReport]:
    """Like `load_yolo`, also returning the `LoadReport` of skipped and clipped data."""
    if isinstance(splits, str):
        raise TypeError(f'splits must be a sequence of names like ["train"], got {splits!r}')
    root = Path(root)
    names = tuple(class_names) if class_names else yolo_class_names(root)
    return load_yolo_images_with_report(root, [i for split in splits for i in split_images(root, split)], names,
                                        strict)


def load_yolo_images_with_report(root: str | os.PathLike, images: Sequence[Path], class_names: Sequence[str],
                                 strict: bool = False) -> tuple[DetectionDataset, LoadReport]:
    """The samples of the given image files (labels by `label_path`), classes 1..C = `class_names`;
    image ids relative to <root>/images, else to `root`."""
    root, names = Path(root), tuple(class_names)
    report = LoadReport(strict=strict)
    samples, seen = [], set()
    for image in images:
        sample = _sample(root, image, len(names), report)
        if sample is None or sample.image_id in seen:
            continue  # the same image listed by two splits
        seen.add(sample.image_id)
        samples.append(sample)
        if not len(sample.labels):
            report.empty_images.append(sample.image_id)
    report.files, report.objects = len(samples), sum(len(s.labels) for s in samples)
    return DetectionDataset(names, tuple(samples)), report


def load_yolo(root: str | os.PathLike, splits: Sequence[str], class_names: Sequence[str] | None = None,
              strict: bool = False, verbose: bool = False) -> DetectionDataset:
    """Read YOLO-format splits into one `DetectionDataset` (boxes "xyxy", pixels).

    Args:
        root: the dataset folder (images/, labels/, data.yaml or classes.txt).
        splits: list files or folders under images/ (see the module docstring).
        class_names: classes 1..C (default: data.yaml's names, else classes.txt).
        strict: raise ValueError naming the file and the problem instead of skipping.
        verbose: log every issue (a summary line is logged either way).
    """
    dataset, report = load_yolo_with_report(root, splits, class_names, strict)
    report.log(logger, f"{', '.join(splits)} from {root}", verbose)
    return dataset


def write_yolo_labels(path: str | os.PathLike, boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> None:
    """One label file: boxes float [N, 4] "xyxy" pixels, labels 1..C -> `class cx cy w h` lines
    (class 0-based, normalised, shortest round-trip repr so reading back gives the same pixels)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scale = np.array([width, height], np.float64)
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2 / scale, (boxes[:, 2:] - boxes[:, :2]) / scale
    lines = [f"{int(c) - 1} {cx!r} {cy!r} {w!r} {h!r}\n"
             for c, (cx, cy), (w, h) in zip(np.asarray(labels).tolist(), centres.tolist(), sizes.tolist())]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(lines))
