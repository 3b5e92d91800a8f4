"""A synthetic dataset of coloured shapes on textured backgrounds, in VOC, COCO or YOLO format.

`generate_synthetic_voc(root, ...)` writes a complete VOC-format folder (JPEGImages/,
Annotations/ in the real VOC schema, ImageSets/Main/{train,val,trainval,test}.txt) that
`load_voc(root, ["trainval"], SYNTHETIC_CLASSES)` (or `load_synthetic`) reads back;
`generate_synthetic(root, "coco" | "yolo", ...)` writes the same images and boxes in the other
formats, which `ssd_datasets.load_dataset` reads.

Each class is one shape with its own hue (60 degrees apart, so even the +-18 degree hue jitter of
the augmentation keeps them apart) on a low-saturation background (noise blobs, gradients,
stripes, checkers). Objects come in many sizes, overlap, get cut by the border (truncated=1,
box clipped to the image) and the genuinely hard ones are marked difficult: tiny objects and
objects less than half visible. Boxes are the bounding boxes of the visible pixels, as VOC
annotates. The output is a pure function of the arguments: one seed gives the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ssd_datasets.coco import write_coco_json
from ssd_datasets.voc import CLASSES_FILE, load_voc, write_voc_annotation
from ssd_datasets.yolo import write_yolo_labels
from ssd.records import DATA_FORMATS, DetectionDataset, Sample

# Class -> hue in degrees; hues 60 degrees apart keep colour a reliable cue.
SYNTHETIC_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
_HUES = {"circle": 0, "star": 60, "square": 120, "ring": 180, "triangle": 240, "cross": 300}

SMALL_SIDE = 20  # objects whose shape is smaller than this (pixels) are difficult
MIN_VISIBLE = 0.5  # objects with less of their area visible are difficult
_MAX_OBJECTS = 6


def _unit_polygon(shape: str, rng: np.random.Generator) -> np.ndarray | None:
    """Outline of `shape` in [-1, 1]^2 (float [K, 2]), or None for the ellipse-based shapes."""
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    if shape == "triangle":
        angles = np.deg2rad(-90 + 120 * np.arange(3))
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radius = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.5))
        return np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
    if shape == "cross":
        t = rng.uniform(0.3, 0.4)
        return np.array(
            [[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t],
             [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]], np.float64,
        )  # fmt: skip
    return None


def shape_mask(shape: str, width: float, height: float, rng: np.random.Generator) -> np.ndarray:
    """Filled shape of about width x height pixels, rotated at random: uint8 mask [h, w]."""
    max_rotation = {"square": 15, "cross": 15}.get(shape, 180)
    angle = rng.uniform(-max_rotation, max_rotation)
    side = int(np.ceil(np.hypot(width, height))) + 2
    mask = np.zeros((side, side), np.uint8)
    centre = np.array([side / 2.0, side / 2.0])
    polygon = _unit_polygon(shape, rng)
    if polygon is None:  # circle, ring: ellipses
        axes = (max(1, int(round(width / 2))), max(1, int(round(height / 2))))
        c = (int(round(centre[0])), int(round(centre[1])))
        cv2.ellipse(mask, c, axes, angle, 0, 360, 1, -1)
        if shape == "ring":
            inner = rng.uniform(0.45, 0.6)
            cv2.ellipse(mask, c, (int(axes[0] * inner), int(axes[1] * inner)), angle, 0, 360, 0, -1)
    else:
        theta = np.deg2rad(angle)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        points = (polygon * [width / 2, height / 2]) @ rotation.T + centre
        cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    x, y, w, h = cv2.boundingRect(mask)
    return mask[y : y + h, x : x + w]


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour (float [3]) for backgrounds: HSV saturation below 0.3."""
    return rng.uniform(50, 210) * (1.0 + rng.uniform(-0.13, 0.13, 3))


def background_texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A textured low-saturation background: float32 [3, H, W] RGB planes in 0..255.

    Channel-first keeps every NumPy loop long and contiguous (an innermost axis of 3 is slow).
    """
    kind = rng.integers(4)
    c1, c2 = _muted_colour(rng).astype(np.float32), _muted_colour(rng).astype(np.float32)
    if kind == 0:  # smooth noise blobs
        grid = rng.uniform(0, 1, (rng.integers(3, 10), rng.integers(3, 10))).astype(np.float32)
        t = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        x = np.arange(width, dtype=np.float32)[None, :]
        y = np.arange(height, dtype=np.float32)[:, None]
        theta = rng.uniform(0, np.pi)
        along = x * np.float32(np.cos(theta)) + y * np.float32(np.sin(theta))
        if kind == 1:  # linear gradient
            t = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
        elif kind == 2:  # stripes
            frequency, phase = 2 * np.pi / rng.uniform(6, 40), rng.uniform(0, 6.3)
            t = 0.5 + 0.5 * np.sin(along * np.float32(frequency) + np.float32(phase))
        else:  # checkerboard
            cell = rng.integers(8, 48)
            t = ((x // cell + y // cell) % 2).astype(np.float32)
        t = np.broadcast_to(t, (height, width))
    return c1[:, None, None] + t[None] * (c2 - c1)[:, None, None]


def object_colour(shape: str, rng: np.random.Generator) -> np.ndarray:
    """The class hue, jittered a little, saturated and fairly bright: float [3] RGB."""
    hue = (_HUES[shape] + rng.uniform(-8, 8)) % 360
    hsv = np.array([[[hue, rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)]]], np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] * 255.0


def render_image(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, list[str], list[bool], list[bool]]:
    """One synthetic image and its annotation.

    Returns:
        image uint8 [H, W, 3] RGB; boxes float [N, 4] "xyxy" 0-based integer pixels (bounding
        box of the visible pixels); class names, difficult and truncated flags per box.
    """
    image = background_texture(width, height, rng)
    owner = np.full((height, width), -1, np.int8)  # which object each pixel shows
    full_areas: list[int] = []
    visible_counts: list[int] = []
    shapes: list[str] = []
    truncated: list[bool] = []
    small: list[bool] = []
    for _ in range(rng.integers(1, _MAX_OBJECTS + 1)):
        shape = SYNTHETIC_CLASSES[rng.integers(len(SYNTHETIC_CLASSES))]
        is_small = rng.random() < 0.1
        limit = 0.6 * min(width, height)
        side = rng.uniform(8, 18) if is_small else np.exp(rng.uniform(np.log(36), np.log(limit)))
        aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
        mask = shape_mask(shape, side * np.sqrt(aspect), side / np.sqrt(aspect), rng)
        colour = object_colour(shape, rng).astype(np.float32)
        for _attempt in range(10):
            placed = _try_place(mask, owner, full_areas, visible_counts, rng)
            if placed is not None:
                break
        else:
            continue
        window, visible_mask, visible_fraction, covered_counts = placed
        for k, hidden in enumerate(covered_counts):
            visible_counts[k] -= int(hidden)
        owner[window][visible_mask] = len(full_areas)
        visible_counts.append(int(np.count_nonzero(visible_mask)))
        image[:, window[0], window[1]][:, visible_mask] = colour[:, None]
        full_areas.append(int(np.count_nonzero(mask)))
        shapes.append(shape)
        truncated.append(visible_fraction < 1.0)
        small.append(min(mask.shape) < SMALL_SIDE)
    boxes, names, difficult, truncated_kept = [], [], [], []
    for k, shape in enumerate(shapes):
        visible = (owner == k).astype(np.uint8)
        count = int(np.count_nonzero(visible))
        if count == 0:
            continue  # covered completely by later objects: nothing to annotate
        x, y, w, h = cv2.boundingRect(visible)
        boxes.append((x, y, x + w, y + h))
        names.append(shape)
        difficult.append(small[k] or count < MIN_VISIBLE * full_areas[k])
        truncated_kept.append(truncated[k])
    image += rng.standard_normal((height, width), dtype=np.float32) * np.float32(4.0)  # grain
    image = cv2.merge(list(np.clip(image, 0, 255, out=image).astype(np.uint8)))
    return image, np.array(boxes, np.float64).reshape(-1, 4), names, difficult, truncated_kept


def _try_place(
    mask: np.ndarray,
    owner: np.ndarray,
    full_areas: list[int],
    visible_counts: list[int],
    rng: np.random.Generator,
) -> tuple[tuple[slice, slice], np.ndarray, float, np.ndarray] | None:
    """A random position for `mask` that leaves every earlier object at least 30% visible.

    Returns (image window, visible part of the mask inside it, fraction of the mask inside the
    image, pixels it hides of each earlier object) or None when this position is rejected.
    """
    height, width = owner.shape
    h, w = mask.shape
    left = int(rng.integers(-w // 2, width - w // 2))
    top = int(rng.integers(-h // 2, height - h // 2))
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + w, width), min(top + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    visible_mask = mask[y0 - top : y1 - top, x0 - left : x1 - left].astype(bool)
    inside_fraction = np.count_nonzero(visible_mask) / np.count_nonzero(mask)
    if inside_fraction < 0.35:
        return None
    window = (slice(y0, y1), slice(x0, x1))
    covered = owner[window][visible_mask]
    covered_counts = np.bincount(covered[covered >= 0], minlength=len(full_areas))
    for k, hidden in enumerate(covered_counts):
        if hidden and visible_counts[k] - hidden < 0.3 * full_areas[k]:
            return None
    return window, visible_mask, inside_fraction, covered_counts


# COCO category ids of the classes: with gaps, as COCO's own, so every reader and writer of
# COCO results has to map them.
SYNTHETIC_CATEGORY_IDS: tuple[int, ...] = (1, 3, 5, 7, 9, 11)


def _write_image(
    root: Path, fmt: str, image_id: str, rng: np.random.Generator, size_range: tuple[int, int]
) -> Sample:
    """Render one image, write its JPEG and (VOC, YOLO) its annotation file; its Sample."""
    width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    image, boxes, names, difficult, truncated = render_image(rng, width, height)
    ok, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"JPEG encoding of synthetic image {image_id} failed")
    image_path = root / ("JPEGImages" if fmt == "voc" else "images") / f"{image_id}.jpg"
    image_path.write_bytes(jpeg.tobytes())
    labels = np.array([SYNTHETIC_CLASSES.index(n) + 1 for n in names], np.int32)
    if fmt == "voc":
        write_voc_annotation(
            root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", width, height,
            boxes, names, difficult, truncated, folder="synthetic",
        )  # fmt: skip
    elif fmt == "yolo":
        write_yolo_labels(root / "labels" / f"{image_id}.txt", boxes, labels, width, height)
    return Sample(image_id, str(image_path), width, height, boxes.astype(np.float32), labels, np.array(difficult, bool))


def generate_synthetic(
    root: str | os.PathLike,
    fmt: str = "voc",
    num_train: int = 800,
    num_test: int = 200,
    seed: int = 0,
    image_size_range: tuple[int, int] = (300, 500),
    progress: bool = False,
) -> None:
    """Write the synthetic dataset under `root` in one of DATA_FORMATS; the same seed gives the same
    images and boxes in every format.

    Layouts, with splits train (first 90% of trainval), val, trainval and test:
        voc:  JPEGImages/, Annotations/, ImageSets/Main/<split>.txt, classes.txt
        coco: images/, annotations/instances_<split>.json (category ids SYNTHETIC_CATEGORY_IDS;
              difficult objects are written as iscrowd 1: ignore regions, left out of training)
        yolo: images/, labels/, <split>.txt (image paths), classes.txt, data.yaml
              (YOLO has no difficult flag: those objects are ordinary ones there)

    Args:
        num_train: images in trainval; the first 90% form `train`, the rest `val`.
        num_test: images in `test`, numbered after the trainval ones.
        seed: the images depend only on (seed, image number), so a seed gives the same bytes.
        image_size_range: (min, max) of the width and of the height, drawn independently.
        progress: show a tqdm progress bar.
    """
    if fmt not in DATA_FORMATS:
        raise ValueError(f"synthetic dataset format must be one of {DATA_FORMATS}, got {fmt!r}")
    if num_train < 1 or num_test < 0:
        raise ValueError(f"need num_train >= 1 and num_test >= 0, got {num_train}, {num_test}")
    lo, hi = image_size_range
    if not 64 <= lo <= hi:
        raise ValueError(f"image_size_range must be (min, max) with 64 <= min <= max, got {image_size_range}")
    root = Path(root)
    folders = {"voc": ("JPEGImages", "Annotations", "ImageSets/Main"), "coco": ("images", "annotations"),
               "yolo": ("images", "labels")}[fmt]
    for sub in folders:
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(1, num_train + num_test + 1)]
    samples = [
        _write_image(root, fmt, ids[index], np.random.default_rng([seed, index]), (lo, hi))
        for index in tqdm(range(len(ids)), desc="synthetic images", unit="img", disable=not progress)
    ]
    num_val = num_train // 10
    sets = {"train": slice(0, num_train - num_val), "val": slice(num_train - num_val, num_train),
            "trainval": slice(0, num_train), "test": slice(num_train, None)}
    for name, members in sets.items():
        _write_split(root, fmt, name, samples[members])
    (root / CLASSES_FILE).write_text("".join(name + "\n" for name in SYNTHETIC_CLASSES))
    if fmt == "yolo":
        (root / "data.yaml").write_text(
            "path: .\ntrain: train.txt\nval: val.txt\ntest: test.txt\nnames:\n"
            + "".join(f"  {k}: {name}\n" for k, name in enumerate(SYNTHETIC_CLASSES)))


def _write_split(root: Path, fmt: str, name: str, samples: list[Sample]) -> None:
    if fmt == "voc":
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(s.image_id + "\n" for s in samples))
    elif fmt == "yolo":
        (root / f"{name}.txt").write_text("".join(f"images/{s.image_id}.jpg\n" for s in samples))
    else:
        write_coco_json(root / "annotations" / f"instances_{name}.json", SYNTHETIC_CLASSES, samples,
                        SYNTHETIC_CATEGORY_IDS)


def generate_synthetic_voc(root: str | os.PathLike, num_train: int = 800, num_test: int = 200, seed: int = 0,
                           image_size_range: tuple[int, int] = (300, 500), progress: bool = False) -> None:
    """`generate_synthetic` in VOC format."""
    generate_synthetic(root, "voc", num_train, num_test, seed, image_size_range, progress)


def load_synthetic(
    root: str | os.PathLike, split: str | Sequence[str] = "trainval", include_difficult: bool = True
) -> DetectionDataset:
    """The synthetic set written by `generate_synthetic_voc` (boxes "xyxy", 0-based pixels)."""
    splits = [split] if isinstance(split, str) else list(split)
    return load_voc(root, splits, SYNTHETIC_CLASSES, include_difficult=include_difficult)
