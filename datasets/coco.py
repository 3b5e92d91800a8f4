"""COCO JSON source: an `instances_*.json` file + its image folder -> `DetectionDataset`, and the writer.

Schema read (the official one; other keys are ignored):

    {"images": [{"id": int, "file_name": str, "width": int, "height": int}, ...],
     "annotations": [{"id": int, "image_id": int, "category_id": int,
                      "bbox": [x, y, w, h], "iscrowd": 0 | 1}, ...],
     "categories": [{"id": int, "name": str}, ...]}

Classes: the categories in the file's order get ids 1..C; their own ids (COCO's 1..90, with
gaps) are kept in `DetectionDataset.category_ids` so results can name them again.
Boxes: `bbox` is [x, y, w, h] in continuous pixels, which is the library's "xyxy"
(x, y, x + w, y + h) with no offset. Crowd objects (`iscrowd` 1) become `difficult` (an ignore
region in evaluation); `include_crowd=False` leaves them out, as training does (a crowd box is not
one object and must not be matched as a positive). Image ids are `str(id)`.

Bad data follows `ssd_datasets.report`: an annotation of an unknown image or category, a malformed,
degenerate or outside box skips the object; a duplicate image id, a missing image file or a bad
image entry (a size outside 1..65535, a `file_name` leaving the image folder, an image file failing
`ssd_datasets.image_check`) skips the image; boxes crossing the border are clipped. Categories must be sound
(unique ids and names): they define the model's outputs, so a problem there is an error.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssd_datasets.image_check import image_file_problem, path_inside, size_problem
from ssd_datasets.image_paths import ImageFinder, normalise_name
from ssd_datasets.report import (BAD_ANNOTATION, BAD_IMAGE, BAD_OBJECT, BOX_CLIPPED, BOX_OK, FILE_MISSING, LoadReport,
                                 box_problem, check_boxes)
from ssd.image_header import read_regular
from ssd.records import DetectionDataset, Sample, class_name_problem

logger = logging.getLogger(__name__)


def image_folders(annotation_file: str | os.PathLike, export_root: str | os.PathLike | None = None) -> list[Path]:
    """Where a file's `file_name`s are looked up, in this order: the JSON's folder, the image folders
    (<root>/<split>, <root>/images/<split>, <root>/images, for <root>/annotations/instances_<split>.json),
    then the export root (default: the folder above annotations/, else the JSON's folder)."""
    path = Path(annotation_file)
    root = path.parent.parent if path.parent.name == "annotations" else path.parent
    split = path.stem.removeprefix("instances_")
    return [path.parent, root / split, root / "images" / split, root / "images", Path(export_root or root)]


def default_image_dir(annotation_file: str | os.PathLike) -> Path:
    """The image folder of `<root>/annotations/instances_<split>.json`: <root>/<split>, else <root>/images."""
    path = Path(annotation_file)
    root = path.parent.parent if path.parent.name == "annotations" else path.parent
    split = path.stem.removeprefix("instances_")
    candidates = [root / split, root / "images"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no image folder for {path}: tried {', '.join(str(c) for c in candidates)}; pass the folder explicitly")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: parsing COCO train makes millions of dicts and lists,
    none of them garbage, and every collection pass would walk them all again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_coco_json(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed file, checked to be a COCO detection file (images and categories lists)."""
    path = Path(path)
    try:
        text = read_regular(path, "COCO annotation file")
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {path} does not exist") from None
    try:
        with _gc_paused():
            data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be a COCO annotation file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("categories"), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a COCO object with 'images' and 'categories' lists, found {found}")
    return data


def coco_categories(data: dict[str, Any], path: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(class names, category ids) in the file's order; ValueError on missing, repeated or bad entries."""
    try:
        ids = tuple(int(c["id"]) for c in data["categories"])
        names = tuple(c["name"] for c in data["categories"])
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{path}: every category needs an integer 'id' and a 'name' ({err!r})") from None
    for category_id, name in zip(ids, names):
        problem = class_name_problem(name)
        if problem:
            raise ValueError(f"{path}: category {category_id}: name {problem}")
    if not ids:
        raise ValueError(f"{path}: 'categories' is empty: the file names no classes")
    for what, values in (("ids", ids), ("names", names)):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{path}: category {what} must be unique, {repeated} repeat")
    return names, ids


def load_coco_with_report(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    include_crowd: bool = True,
    include_empty: bool = True,
    strict: bool = False,
    check_images: bool = True,
) -> tuple[DetectionDataset, LoadReport]:
    """Like `load_coco`, also returning the `LoadReport` of skipped and clipped data."""
    path = str(annotation_file)
    data = read_coco_json(path)
    supercategory = _unused_supercategory(data)
    if supercategory is not None:
        data["categories"] = [c for c in data["categories"] if c is not supercategory]
    with _gc_paused():
        dataset, report = _load(data, path, image_dir, include_crowd, include_empty, strict, check_images)
    if supercategory is not None:
        report.not_classes.append(f"category {supercategory.get('name')!r} (id {supercategory.get('id')})")
    return dataset, report


def _unused_supercategory(data: dict[str, Any]) -> dict[str, Any] | None:
    """The category that no annotation uses and that is the `supercategory` of all the others (Roboflow
    writes its project as category 0, "shapes" over "circle", "square", ...), or None."""
    categories = data["categories"]
    if len(categories) < 2 or not all(isinstance(c, dict) for c in categories):
        return None
    used = {a.get("category_id") for a in data.get("annotations") or [] if isinstance(a, dict)}
    for category in categories:
        others = [c for c in categories if c is not category]
        if category.get("id") not in used and all(c.get("supercategory") == category.get("name") for c in others):
            return category
    return None


def _load(data: dict[str, Any], path: str, image_dir: str | os.PathLike | Sequence[str | os.PathLike] | None,
          include_crowd: bool, include_empty: bool, strict: bool,
          check_images: bool) -> tuple[DetectionDataset, LoadReport]:
    names, category_ids = coco_categories(data, path)
    folders = (image_folders(path) if image_dir is None
               else [image_dir] if isinstance(image_dir, (str, os.PathLike)) else list(image_dir))
    finder = ImageFinder([f for f in folders if Path(f).is_dir()] or folders[:1])
    report = LoadReport(strict=strict)
    images = _images(data["images"], finder, path, report, check_images)
    missing = [i for i in report.issues if i.kind == FILE_MISSING]
    if check_images and data["images"] and not images and len(missing) == len(data["images"]):
        example = missing[0].example
        raise FileNotFoundError(f"{path}: none of its {len(data['images'])} images was found (e.g. {example}); "
                                f"looked in {', '.join(str(f) for f in finder.folders)}: name the image folder "
                                "(--images DIR)")
    index = {image_id: k for k, (image_id, *_rest) in enumerate(images)}
    rows = _annotation_rows(data.get("annotations") or [], index, {c: k + 1 for k, c in enumerate(category_ids)},
                            path, report)
    image_rows, labels, crowd = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int32), rows[:, 6] != 0
    sizes = np.array([(w, h) for _, _, w, h in images], np.float64).reshape(-1, 2)[image_rows]
    xywh = rows[:, 2:6]
    boxes, status = check_boxes(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
                                sizes[:, 0], sizes[:, 1])
    for k in np.flatnonzero(status != BOX_OK):
        problem, action, kind = box_problem(int(status[k]), f"xywh={xywh[k].tolist()}", *sizes[k].astype(int))
        report.issue(path, f"annotation {int(rows[k, 7])} (image {images[image_rows[k]][0]}): {problem}", action, kind)
    keep = (status == BOX_OK) | (status == BOX_CLIPPED)
    if not include_crowd:
        report.dropped_crowd = int(np.count_nonzero(keep & crowd))
        keep &= ~crowd
    samples = _samples(images, image_rows[keep], boxes[keep], labels[keep], crowd[keep])
    if not include_empty:
        report.dropped_empty = sum(not len(s.labels) for s in samples)
        samples = [s for s in samples if len(s.labels)]
    report.files = len(samples)
    report.objects = sum(len(s.labels) for s in samples)
    report.empty_images = [s.image_id for s in samples if not len(s.labels)]
    return DetectionDataset(names, tuple(samples), category_ids), report


def load_coco(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    include_crowd: bool = True,
    include_empty: bool = True,
    strict: bool = False,
    verbose: bool = False,
    check_images: bool = True,
) -> DetectionDataset:
    """Read a COCO `instances_*.json` into a `DetectionDataset` (boxes "xyxy", pixels).

    Args:
        annotation_file: the JSON file.
        image_dir: folder the images' `file_name`s are relative to, or folders tried in order
            (default: `image_folders`).
        include_crowd: False leaves out `iscrowd` objects (for training); True keeps them as difficult.
        include_empty: False leaves out images without objects (True keeps them as negatives).
        strict: raise ValueError naming the file and the problem instead of skipping.
        verbose: log every issue (a summary line is logged either way).
        check_images: skip images whose file is missing or fails `ssd_datasets.image_check` (not a
            regular file, empty, not JPEG/PNG/BMP/WebP, another size than the entry's, over 40 MP,
            a JPEG without its end marker).
    """
    dataset, report = load_coco_with_report(annotation_file, image_dir, include_crowd, include_empty, strict,
                                            check_images)
    report.log(logger, str(annotation_file), verbose)
    return dataset


def _images(entries: list[Any], finder: ImageFinder, path: str, report: LoadReport,
            check_images: bool) -> list[tuple[Any, str, int, int]]:
    """(id, image path, width, height) of each sound image entry, first of a repeated id only.

    Sound: a size of 1..65535 per side, a relative file name that stays inside the image folders,
    and (`check_images`) a file that passes `ssd_datasets.image_check` at that size.
    """
    images, seen = [], {}
    for k, entry in enumerate(entries):
        try:
            image_id, name, width, height = entry["id"], str(entry["file_name"]), entry["width"], entry["height"]
            hash(image_id)  # a list or object as id: TypeError, reported below
        except (KeyError, TypeError, ValueError) as err:
            report.issue(path, f"image entry {k} needs id, file_name, width and height ({err!r})", "skipped file",
                         BAD_ANNOTATION)
            continue
        if image_id in seen:
            report.issue(path, f"duplicate image id {image_id} ({name}; first {seen[image_id]})", "skipped file",
                         "duplicate image id")
            continue
        seen[image_id] = name
        problem = size_problem(width, height)
        if problem is None and path_inside(".", normalise_name(name)) is None:
            problem = f"file_name {name!r} leaves the image folder"
        if problem:
            report.issue(path, f"image {image_id} ({name}): {problem}", "skipped file", BAD_ANNOTATION)
            continue
        width, height = int(width), int(height)
        found = finder.find(name) if check_images else finder.first_guess(name)
        if found is None:
            missing = finder.first_guess(name)
            looked = ", ".join(map(str, finder.folders))
            report.issue(path, f"image {image_id}: file {name} is missing (looked in {looked})", "skipped file",
                         FILE_MISSING, missing)
            continue
        problem = image_file_problem(found, width, height) if check_images else None
        if problem:
            report.issue(path, f"image {image_id} ({name}): {problem}", "skipped file", BAD_IMAGE)
            continue
        images.append((image_id, found, width, height))
    return images


def _annotation_rows(annotations: list[Any], image_index: dict[Any, int], class_of: dict[int, int], path: str,
                     report: LoadReport) -> np.ndarray:
    """float64 [N, 8] rows (image row, class 1..C, x, y, w, h, iscrowd, index in the file) of the
    usable annotations."""
    try:  # the fast path: one comprehension per column (COCO train: 860k annotations)
        columns = ([image_index[a["image_id"]] for a in annotations], [class_of[a["category_id"]] for a in annotations],
                   [1.0 if a.get("iscrowd") else 0.0 for a in annotations])
        boxes = np.array([a["bbox"] for a in annotations], np.float64).reshape(len(annotations), 4)
        return np.column_stack([np.array(columns[:2], np.float64).T.reshape(-1, 2), boxes,
                                np.array(columns[2], np.float64), np.arange(len(annotations), dtype=np.float64)])
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # some annotation is bad: the slow path below finds which, and says why
    rows = []
    for k, ann in enumerate(annotations):
        try:
            x, y, w, h = ann["bbox"]
            rows.append((image_index[ann["image_id"]], class_of[ann["category_id"]],
                         float(x), float(y), float(w), float(h), 1.0 if ann.get("iscrowd") else 0.0, k))
        except (KeyError, TypeError, ValueError, AttributeError):
            problem, action = _annotation_problem(ann, image_index, class_of)
            report.issue(path, f"annotation {k} (id {_get(ann, 'id')}): {problem}", action, BAD_OBJECT)
    return np.array(rows, np.float64).reshape(-1, 8)


def _get(ann: Any, key: str) -> Any:
    return ann.get(key) if isinstance(ann, dict) else None


def _annotation_problem(ann: Any, image_index: dict[Any, int], class_of: dict[int, int]) -> tuple[str, str]:
    if not isinstance(ann, dict):
        return f"expected an object, got {type(ann).__name__}", "skipped object"
    if ann.get("image_id") not in image_index:
        return f"refers to image id {ann.get('image_id')!r}, which is missing or was skipped", "skipped object"
    if ann.get("category_id") not in class_of:
        return f"unknown category id {ann.get('category_id')!r}", "skipped object"
    return f"bbox must be 4 numbers [x, y, w, h], got {ann.get('bbox')!r}", "skipped object"


def _samples(images: list[tuple[Any, str, int, int]], image_rows: np.ndarray, boxes: np.ndarray,
             labels: np.ndarray, crowd: np.ndarray) -> list[Sample]:
    """One Sample per image (file order), its objects in annotation order."""
    order = np.argsort(image_rows, kind="stable")
    boxes, labels, crowd = boxes[order], labels[order], crowd[order]  # each image's objects now contiguous
    ends = np.cumsum(np.bincount(image_rows, minlength=len(images))).tolist()
    samples, start = [], 0
    for (image_id, image_path, width, height), end in zip(images, ends):
        samples.append(Sample(str(image_id), image_path, width, height,
                              boxes[start:end], labels[start:end], crowd[start:end]))
        start = end
    return samples


def write_coco_json(
    path: str | os.PathLike,
    class_names: Sequence[str],
    samples: Sequence[Sample],
    category_ids: Sequence[int] | None = None,
) -> None:
    """Write samples as a COCO instances file: image ids must be integers as text, file names
    relative to the image folder (the samples' image file names); difficult objects are written
    as `iscrowd` 1, so they are ignore regions for pycocotools too."""
    ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    images, annotations = [], []
    for sample in samples:
        images.append({"id": int(sample.image_id), "file_name": os.path.basename(sample.image_path),
                       "width": int(sample.width), "height": int(sample.height)})
        for box, label, difficult in zip(sample.boxes.tolist(), sample.labels.tolist(), sample.difficult.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": int(sample.image_id),
                                "category_id": ids[label - 1], "bbox": [box[0], box[1], w, h],
                                "area": w * h, "iscrowd": int(difficult)})
    categories = [{"id": i, "name": n, "supercategory": "none"} for i, n in zip(ids, class_names)]
    Path(path).write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
