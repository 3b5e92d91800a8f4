"""Pascal VOC source: ImageSets + Annotations XML -> `DetectionDataset`, and the XML writer.

Directory layout (the devkit's), per split `"<subdir>:<set>"` or a bare `"<set>"`:

    <root>/<subdir>/ImageSets/Main/<set>.txt   one image id per line
    <root>/<subdir>/Annotations/<id>.xml
    <root>/<subdir>/JPEGImages/<id>.jpg

`load_voc(root, ["VOC2007:trainval", "VOC2012:trainval"])` reads the devkit union; a bare set
name (`["trainval"]`) reads a plain VOC-format folder without year subfolders (the synthetic set,
users' own data).

Box convention (converted here and nowhere else): VOC pixels are 1-based and inclusive, so a box
covering pixel columns 1..10 is xmin=1, xmax=10. The library's "xyxy" is 0-based continuous, so
it becomes (xmin - 1, ymin - 1, xmax, ymax) = (0, 0, 10, ...): width = xmax - xmin + 1. A VOC box
with xmin == xmax is therefore one pixel wide (valid); xmax < xmin is degenerate.

Image ids: the file stem ("000005") when every split comes from one folder, so results files
match the devkit; "<subdir>/<stem>" ("VOC2007/000005") as soon as the splits span several
folders, so ids stay unique across the union.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lxml import etree

from ssd_datasets.classes import sorted_by_name
from ssd_datasets.image_check import MAX_IMAGE_SIDE, image_file_problem
from ssd_datasets.report import (BAD_ANNOTATION, BAD_IMAGE, BAD_OBJECT, BOX_CROSSES_BORDER, BOX_OUTSIDE_IMAGE,
                             DEGENERATE_BOX, FILE_MISSING, UNKNOWN_CLASS, LoadReport)
from ssd.image_header import read_regular
from ssd.records import DetectionDataset, Sample, read_lines

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# One image's annotation file: real ones are a few KB (a 64 MB one would describe ~300,000 objects).
MAX_XML_BYTES = 64 << 20

# A dataset folder may name its classes, one per line, in this file at its root.
CLASSES_FILE = "classes.txt"


def parse_split(split: str) -> tuple[str, str]:
    """"VOC2007:trainval" -> ("VOC2007", "trainval"); "trainval" -> ("", "trainval")."""
    subdir, sep, name = split.rpartition(":")
    if not name or (sep and not subdir):
        raise ValueError(
            f'split must be "<subdir>:<set>" (e.g. "VOC2007:trainval") or "<set>", got {split!r}'
        )
    return subdir, name


def read_image_set(path: Path) -> list[str]:
    """Image ids listed in an ImageSets file (first token of each non-empty line)."""
    ids = [line.split()[0] for line in read_lines(path, "image set file")]
    if not ids:
        raise ValueError(f"image set file {path} lists no image ids: the split is empty")
    return ids


class _Problem(Exception):
    """A data problem inside one annotation file; turned into a `LoadIssue` or a ValueError."""


def _children(element: etree._Element) -> dict[str, etree._Element]:
    """Direct children by tag. Walking children in C is several times faster than findtext(),
    whose path lookup runs in Python for every call."""
    return {child.tag: child for child in element}


def _number(children: dict[str, etree._Element], tag: str, where: str) -> float:
    child = children.get(tag)
    text = None if child is None else child.text
    if text is None or not text.strip():
        raise _Problem(f"missing {where}<{tag}>")
    try:
        value = float(text)  # VOC2012 has a few fractional coordinates
    except ValueError:
        raise _Problem(f"{where}<{tag}> is not a number: {text.strip()!r}") from None
    if not math.isfinite(value):  # "nan", "inf", "1e400"
        raise _Problem(f"{where}<{tag}> is not a finite number: {text.strip()!r}")
    return value


def _voc_box(bndbox: etree._Element | None) -> tuple[float, float, float, float]:
    """<bndbox> of one <object> as "xyxy" 0-based continuous (the one VOC conversion)."""
    if bndbox is None:
        raise _Problem("object without <bndbox>")
    corners = {child.tag: child.text for child in bndbox}
    try:  # the fast path; the slow one below only finds the words for the error
        xmin, ymin = float(corners["xmin"]), float(corners["ymin"])
        xmax, ymax = float(corners["xmax"]), float(corners["ymax"])
        if not math.isfinite(xmin + ymin + xmax + ymax):  # NaN or inf would pass every comparison
            raise ValueError
    except (KeyError, TypeError, ValueError):
        children = _children(bndbox)
        xmin, ymin, xmax, ymax = (_number(children, t, "<bndbox> ") for t in ("xmin", "ymin", "xmax", "ymax"))
    return xmin - 1.0, ymin - 1.0, xmax, ymax


@dataclass
class _Context:
    class_ids: dict[str, int]
    include_difficult: bool
    report: LoadReport
    # One parser per load: reusing it saves a parser set-up per file; blank text is never needed.
    parser: etree.XMLParser = field(default_factory=lambda: etree.XMLParser(remove_blank_text=True))

    def issue(self, file: str, problem: str, action: str, kind: str = "", example: str = "") -> None:
        self.report.issue(file, problem, action, kind, example)


class _Discovered(dict):
    """Class ids given to names in the order they are first met (classes read from the annotations)."""

    def get(self, name: str, default: int | None = None) -> int | None:
        return self.setdefault(name, len(self) + 1) if name else default


def _parse_annotation(xml_path: str, image_id: str, image_path: str, ctx: _Context) -> Sample:
    """One annotation file -> Sample with valid boxes only; raises _Problem for a bad file."""
    try:
        root = etree.fromstring(read_regular(xml_path, "annotation file", MAX_XML_BYTES), ctx.parser)
    except (OSError, etree.XMLSyntaxError) as err:
        raise _Problem(f"unreadable XML: {err}") from None
    except ValueError as err:  # a FIFO, a device, a file over the limit: refused unread
        raise _Problem(str(err)) from None
    size, objects = None, []
    for child in root:  # one walk over the top level instead of several path lookups
        if child.tag == "object":
            objects.append(child)
        elif child.tag == "size" and size is None:
            size = child
    if size is None:
        raise _Problem("missing <size>")
    dims = _children(size)
    width, height = _number(dims, "width", "<size> "), _number(dims, "height", "<size> ")
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise _Problem(f"<size> must be 1..{MAX_IMAGE_SIDE} pixels per side, got width={width:g} height={height:g}")
    width, height = int(width), int(height)
    boxes, labels, difficult = [], [], []
    for index, obj in enumerate(objects):
        fields = _children(obj)
        name_element = fields.get("name")
        name = (name_element.text or "").strip() if name_element is not None else ""
        where = f"object {index} ({name or 'no name'})"
        label = ctx.class_ids.get(name)
        try:
            if label is None:
                raise _Problem(f"unknown class {name!r}")
            flag = fields.get("difficult")
            is_difficult = flag is not None and (flag.text or "0").strip() not in ("0", "")
            x0, y0, x1, y1 = _voc_box(fields.get("bndbox"))
        except _Problem as problem:
            ctx.issue(xml_path, f"{where}: {problem}", "skipped object", BAD_OBJECT if label else UNKNOWN_CLASS)
            continue
        if x1 <= x0 or y1 <= y0:
            ctx.issue(xml_path, f"{where}: degenerate box xyxy={(x0, y0, x1, y1)}", "skipped object", DEGENERATE_BOX)
            continue
        cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        if cx1 <= cx0 or cy1 <= cy0:
            ctx.issue(
                xml_path, f"{where}: box xyxy={(x0, y0, x1, y1)} outside the "
                f"{width}x{height} image", "skipped object", BOX_OUTSIDE_IMAGE,
            )  # fmt: skip
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            ctx.issue(
                xml_path, f"{where}: box xyxy={(x0, y0, x1, y1)} crosses the border of the "
                f"{width}x{height} image", "clipped box", BOX_CROSSES_BORDER,
            )  # fmt: skip
        if is_difficult and not ctx.include_difficult:
            ctx.report.dropped_difficult += 1
            continue
        boxes.append((cx0, cy0, cx1, cy1))
        labels.append(label)
        difficult.append(is_difficult)
    return Sample(
        image_id=image_id,
        image_path=image_path,
        width=width,
        height=height,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        labels=np.array(labels, np.int32),
        difficult=np.array(difficult, bool),
    )


def load_voc_with_report(
    root: str | os.PathLike,
    splits: Sequence[str],
    class_names: Sequence[str] | None = VOC_CLASSES,
    include_difficult: bool = True,
    strict: bool = False,
    check_images: bool = True,
) -> tuple[DetectionDataset, LoadReport]:
    """Like `load_voc`, also returning the `LoadReport` of skipped and clipped data."""
    if isinstance(splits, str):
        raise TypeError(f'splits must be a sequence of names like ["VOC2007:trainval"], got {splits!r}')
    root = Path(root)
    parsed = [parse_split(s) for s in splits]
    prefix_ids = len({subdir for subdir, _ in parsed}) > 1
    ctx = load_context(class_names, include_difficult, strict)
    samples: list[Sample] = []
    seen: set[str] = set()
    for subdir, set_name in parsed:
        folder = root / subdir if subdir else root
        ids = read_image_set(folder / "ImageSets" / "Main" / f"{set_name}.txt")
        annotations, images = str(folder / "Annotations"), str(folder / "JPEGImages")
        # One directory listing instead of one stat() per image keeps the check cheap.
        jpegs = set(os.listdir(images)) if check_images and os.path.isdir(images) else set()
        for stem in ids:
            image_id = f"{subdir}/{stem}" if prefix_ids else stem
            if image_id in seen:
                continue  # the same image listed by two splits (e.g. train and trainval)
            seen.add(image_id)
            xml_path = os.path.join(annotations, stem + ".xml")
            if check_images and stem + ".jpg" not in jpegs:
                missing = os.path.join(images, stem + ".jpg")
                ctx.issue(xml_path, f"image {missing} is missing", "skipped file", FILE_MISSING, missing)
                continue
            add_annotation(ctx, samples, xml_path, image_id, os.path.join(images, stem + ".jpg"), check_images)
    return finish(ctx, samples, class_names, root)


def load_context(class_names: Sequence[str] | None, include_difficult: bool, strict: bool) -> _Context:
    """The load's state: the class ids (found in the annotations when `class_names` is None), the report."""
    if class_names is not None and (len(set(class_names)) != len(class_names) or not class_names):
        raise ValueError(f"class_names must be unique and non-empty, got {tuple(class_names)!r}")
    class_ids = _Discovered() if class_names is None else {n: i + 1 for i, n in enumerate(class_names)}
    return _Context(class_ids, include_difficult, LoadReport(strict=strict))


def add_annotation(ctx: _Context, samples: list[Sample], xml_path: str, image_id: str, image_path: str,
                   check_images: bool) -> None:
    """Parse one annotation file and append its sample, or report why it is skipped."""
    try:
        sample = _parse_annotation(xml_path, image_id, image_path, ctx)
    except _Problem as problem:
        ctx.issue(xml_path, str(problem), "skipped file", BAD_ANNOTATION)
        return
    problem = image_file_problem(sample.image_path, sample.width, sample.height) if check_images else None
    if problem:
        ctx.issue(xml_path, problem, "skipped file", BAD_IMAGE, sample.image_path)
        return
    samples.append(sample)
    ctx.report.files += 1
    ctx.report.objects += len(sample.labels)
    if not len(sample.labels):
        ctx.report.empty_images.append(xml_path)


def finish(ctx: _Context, samples: list[Sample], class_names: Sequence[str] | None,
           where: str | os.PathLike) -> tuple[DetectionDataset, LoadReport]:
    """The dataset and report of a load; classes found in the annotations are sorted by name."""
    if class_names is not None:
        return DetectionDataset(tuple(class_names), tuple(samples)), ctx.report
    if not ctx.class_ids:
        raise ValueError(f"{where}: no object of any annotation names a class (no <object><name>)")
    return sorted_by_name(DetectionDataset(tuple(ctx.class_ids), tuple(samples))), ctx.report


def load_voc(
    root: str | os.PathLike,
    splits: Sequence[str],
    class_names: Sequence[str] | None = VOC_CLASSES,
    include_difficult: bool = True,
    strict: bool = False,
    verbose: bool = False,
    check_images: bool = True,
) -> DetectionDataset:
    """Read VOC-format splits into one `DetectionDataset` (boxes "xyxy", 0-based pixels).

    Args:
        root: the VOCdevkit folder (with year subfolders) or a plain VOC-format folder.
        splits: e.g. ["VOC2007:trainval", "VOC2012:trainval"], or ["trainval"] for `root` itself.
        class_names: classes 1..C in this order; objects of other classes are skipped. None: the
            names the annotations use, sorted.
        include_difficult: False leaves out objects marked difficult (for training).
        strict: raise ValueError naming the file and the problem instead of skipping.
        verbose: log every issue (a summary line is logged either way).
        check_images: skip annotations whose JPEG is missing, empty, truncated (no end marker),
            unreadable from its header, too large or of another size than <size> (a cheap check
            of a few hundred bytes per file, `ssd_datasets.image_check`; nothing is decoded).

    Broken XML, a missing, non-finite or absurd size (not 1..65535) and a missing JPEG or one
    failing the cheap check skip the file; unknown classes, non-finite coordinates ("nan",
    "1e400"), degenerate boxes and boxes entirely outside the image skip the object; boxes
    crossing the border are clipped to it. Images left without objects are kept (and counted in
    the report).
    """
    dataset, report = load_voc_with_report(
        root, splits, class_names, include_difficult, strict, check_images
    )
    report.log(logger, f"{', '.join(splits)} from {root}", verbose)
    return dataset


def write_voc_annotation(
    path: str | os.PathLike,
    filename: str,
    width: int,
    height: int,
    boxes: np.ndarray,
    names: Sequence[str],
    difficult: Sequence[bool],
    truncated: Sequence[bool],
    folder: str = "",
    depth: int = 3,
) -> None:
    """Write one VOC annotation XML.

    Args:
        boxes: [N, 4] "xyxy" 0-based pixels with integer corners; written 1-based inclusive as
            (xmin + 1, ymin + 1, xmax, ymax), the inverse of the conversion `load_voc` does.
        names, difficult, truncated: one entry per box.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(names) == len(difficult) == len(truncated) == len(boxes):
        raise ValueError(
            f"write_voc_annotation({path}): need one name/difficult/truncated per box, got "
            f"{len(names)}/{len(difficult)}/{len(truncated)} for {len(boxes)} boxes"
        )
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = folder
    etree.SubElement(root, "filename").text = filename
    size = etree.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        etree.SubElement(size, tag).text = str(int(value))
    etree.SubElement(root, "segmented").text = "0"
    for box, name, is_difficult, is_truncated in zip(boxes, names, difficult, truncated):
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = name
        etree.SubElement(obj, "pose").text = "Unspecified"
        etree.SubElement(obj, "truncated").text = str(int(bool(is_truncated)))
        etree.SubElement(obj, "difficult").text = str(int(bool(is_difficult)))
        bndbox = etree.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            etree.SubElement(bndbox, tag).text = str(value)
    etree.ElementTree(root).write(str(path), pretty_print=True, encoding="utf-8")
