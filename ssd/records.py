"""The small record types a dataset source returns; the only thing `datasets/` imports from `ssd`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ssd.image_header import read_regular

# The annotation formats `datasets/` reads (one source module each).
DATA_FORMATS = ("voc", "coco", "yolo")


@dataclass(frozen=True, eq=False)
class Sample:
    """One annotated image.

    Attributes:
        image_id: unique within the dataset (VOC: the file stem, e.g. "000005").
        image_path: path of the JPEG.
        width, height: image size in pixels, as the annotation declares it.
        boxes: float32 [N, 4], "xyxy" pixels, 0-based continuous (VOC's 1-based inclusive
            (xmin, ymin, xmax, ymax) becomes (xmin - 1, ymin - 1, xmax, ymax)).
        labels: int32 [N], class ids 1..C (0 is background and never appears here).
        difficult: bool [N], an object to ignore in evaluation (neither a hit nor a miss): VOC's
            `difficult` flag, or COCO's `iscrowd` (sources drop crowd objects from training sets).
    """

    image_id: str
    image_path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if np.shape(self.boxes) != (n, 4) or len(self.labels) != n or len(self.difficult) != n:
            raise ValueError(
                f"Sample {self.image_id}: boxes must be [N, 4] with N labels and N difficult "
                f"flags, got {np.shape(self.boxes)}, {np.shape(self.labels)}, {np.shape(self.difficult)}"
            )


@dataclass(frozen=True)
class DetectionDataset:
    """A dataset split: class names (ids 1..C in this order) and its samples.

    `category_ids` are the source's own id of each class (COCO's category ids, which have gaps:
    1..90 for 80 classes), or None when the classes are simply 1..C; COCO results use them.
    """

    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]
    category_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.category_ids is not None and len(self.category_ids) != len(self.class_names):
            raise ValueError(f"DetectionDataset: {len(self.class_names)} class names but "
                             f"{len(self.category_ids)} category ids {self.category_ids!r}")

    def __len__(self) -> int:
        return len(self.samples)


def class_name_problem(name: object) -> str | None:
    """Why `name` cannot be a class name, or None: names are written one per line (labels.txt), so a
    name must be text with something visible, no line break or control character, and no
    surrounding whitespace (reading the lines back strips it)."""
    if not isinstance(name, str):
        return f"{name!r} is of type {type(name).__name__}, not text"
    if not name.strip():
        return f"{name!r} is empty or only whitespace"
    if len(f"x{name}x".splitlines()) > 1 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} contains a line break or control character"
    if name != name.strip():
        return f"{name!r} has leading or trailing whitespace"
    return None


def read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file whole; FileNotFoundError or ValueError naming the file and `what` it is, also for a
    FIFO, a device or a file over `MAX_TEXT_BYTES` (refused before a read that could block or not end)."""
    try:
        data = read_regular(path, what)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise ValueError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped; errors as `read_text`."""
    return [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
